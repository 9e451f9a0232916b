// bpf-to-bpf calls (non-inlined functions in .text) and global data.
#include "ntsim_test.h"

uint64_t counter = 5;              // .data
const uint64_t table[4] = {1, 10, 100, 1000}; // .rodata
uint64_t scratch[2];               // .bss

static __noinline uint64_t
square(uint64_t x)
{
    return x * x;
}

__noinline uint64_t
sum_of_squares(uint64_t a, uint64_t b)
{
    uint64_t local[4] = {a, b, 0, 0}; // uses the callee's own stack frame
    return square(local[0]) + square(local[1]);
}

SEC("sample")
int
calls_test(test_ctx_t* ctx)
{
    uint64_t s = sum_of_squares(ctx->id, ctx->value);
    counter += 1;
    scratch[1] = s + table[ctx->index & 3];
    return (int)scratch[1];
}
