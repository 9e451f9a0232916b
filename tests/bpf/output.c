// Ring buffer, perf event array and trace_printk output.
#include "ntsim_test.h"

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64);
} ring SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
} perf SEC(".maps");

SEC("sample")
int
output_test(test_ctx_t* ctx)
{
    uint64_t rec[2] = {ctx->id, ctx->value};
    int r1 = bpf_ringbuf_output(&ring, rec, sizeof(rec), 0);
    // 64 bytes of ring: the second 24-byte record fits, the third does not.
    int r2 = bpf_ringbuf_output(&ring, rec, sizeof(rec), 0);
    int r3 = bpf_ringbuf_output(&ring, rec, sizeof(rec), 0);

    uint32_t small = 0xabcd;
    int p1 = bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &small, sizeof(small));
    // Append the first 2 bytes of the packet (ctx data) to the record.
    int p2 = bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU | (2ULL << 32), &small, sizeof(small));
    // Only the current CPU may be named.
    int p3 = bpf_perf_event_output(ctx, &perf, 7, &small, sizeof(small));

    const char f2[] = "hello\n";
    const char f3[] = "id=%d";
    const char f4[] = "%u-%x";
    const char f5[] = "%lld %llu %lx";
    const char bad[] = "%s";
    long t2 = bpf_trace_printk2(f2, sizeof(f2));
    long t3 = bpf_trace_printk3(f3, sizeof(f3), ctx->id);
    long t4 = bpf_trace_printk4(f4, sizeof(f4), 7, 255);
    long t5 = bpf_trace_printk5(f5, sizeof(f5), -3, 4, 0xbeef);
    long tb = bpf_trace_printk3(bad, sizeof(bad), 1);

    ctx->out = (r1 == 0) | ((r2 == 0) << 1) | ((r3 != 0) << 2) | ((p1 == 0) << 3) | ((p2 == 0) << 4) |
               ((p3 != 0) << 5) | ((t2 > 0) << 6) | ((t3 > 0) << 7) | ((t4 > 0) << 8) | ((t5 > 0) << 9) |
               ((tb < 0) << 10);
    return r3;
}
