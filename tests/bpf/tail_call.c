// Tail calls through a PROG_ARRAY: a chain 0 -> 1 -> 2, and a miss.
#include "ntsim_test.h"

struct
{
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 4);
} progs SEC(".maps");

SEC("sample/first")
int
first(test_ctx_t* ctx)
{
    ctx->out = 1;
    if (bpf_tail_call(ctx, &progs, ctx->index) != 0) {
        return -1; // missing slot
    }
    ctx->out = 99; // never reached when the tail call succeeds
    return 1;
}

SEC("sample/second")
int
second(test_ctx_t* ctx)
{
    ctx->out = ctx->out * 10 + 2;
    bpf_tail_call(ctx, &progs, 2);
    return 2;
}

SEC("sample/third")
int
third(test_ctx_t* ctx)
{
    ctx->out = ctx->out * 10 + 3;
    return 3;
}

// Tail-calls itself until the core refuses (the limit of 33 programs).
SEC("sample/loop")
int
loop(test_ctx_t* ctx)
{
    ctx->out++;
    long r = bpf_tail_call(ctx, &progs, 3);
    return (int)r;
}
