// Programs for the eBPF core's NMR tests (tests/ntsim/tests/core.rs): a
// program that calls program-type helpers published by a host-side
// provider, one that faults, and the checksum / random general helpers.
#include "ntsim_test.h"

/* A program-type helper with five arguments (the host provider's 0x10003). */
static uint64_t (*core_ext_args)(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e) = (void*)0x10003;

SEC("sample")
int
core_invoke(test_ctx_t* ctx)
{
    uint64_t r = core_ext_args(ctx->id, ctx->value, 0x1122334455667788ULL, ctx->index, 5);
    ctx->value = r;
    ctx->out = (uint32_t)test_ext_ctx_id(2);
    uint8_t* data = ctx->data;
    if (data + 1 <= ctx->data_end) {
        data[0] = (uint8_t)(data[0] + 1);
    }
    return (int)(r + 1);
}

SEC("sample")
int
core_pid(test_ctx_t* ctx)
{
    ctx->value = bpf_get_current_pid_tgid();
    return 7;
}

SEC("sample")
int
core_fault(test_ctx_t* ctx)
{
    return *(volatile uint32_t*)((uint8_t*)ctx + 40); // the context is 40 bytes
}

struct csum_result
{
    int64_t full, removed, updated, odd_size, overflow;
    uint64_t random;
};

struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, struct csum_result);
    __uint(max_entries, 1);
} csum_out SEC(".maps");

SEC("sample")
int
csum_test(test_ctx_t* ctx)
{
    uint32_t zero = 0;
    struct csum_result* r = bpf_map_lookup_elem(&csum_out, &zero);
    if (!r) {
        return 1;
    }
    /* An IPv4 header as 16-bit words, checksum field zero. */
    uint16_t hdr[10] = {0x4500, 0x0073, 0x0000, 0x4000, 0x4011, 0x0000, 0xc0a8, 0x0001, 0xc0a8, 0x00c7};
    uint16_t old_dst[2] = {0xc0a8, 0x00c7};
    uint16_t new_dst[2] = {0xc0a8, 0x0002};
    r->full = bpf_csum_diff(NULL, 0, hdr, sizeof(hdr), 0);
    r->removed = bpf_csum_diff(hdr, sizeof(hdr), NULL, 0, 0);
    r->updated = bpf_csum_diff(old_dst, sizeof(old_dst), new_dst, sizeof(new_dst), (int)r->full);
    r->odd_size = bpf_csum_diff(hdr, 6, NULL, 0, 0);
    r->overflow = bpf_csum_diff(NULL, 0, hdr, sizeof(hdr), 0x7fffffff);
    r->random = bpf_get_prandom_u32();
    return 0;
}
