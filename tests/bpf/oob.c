// Programs that read out of bounds: each must fail cleanly.
#include "ntsim_test.h"

struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 1);
} small SEC(".maps");

SEC("sample/ctx")
int
read_ctx(test_ctx_t* ctx)
{
    return *(volatile uint32_t*)((uint8_t*)ctx + 40); // context is 40 bytes
}

SEC("sample/packet")
int
read_packet(test_ctx_t* ctx)
{
    uint8_t* p = ctx->data;
    return *(volatile uint8_t*)(p + ctx->index); // no bound check against data_end
}

SEC("sample/map")
int
read_map(test_ctx_t* ctx)
{
    uint32_t zero = 0;
    uint32_t* v = bpf_map_lookup_elem(&small, &zero);
    if (!v) {
        return 0;
    }
    return *(volatile uint32_t*)((uint8_t*)v + ctx->index);
}

SEC("sample/helper")
int
helper_arg(test_ctx_t* ctx)
{
    char buf[4];
    return bpf_memset(buf, ctx->index, 0); // size beyond the stack buffer's frame
}
