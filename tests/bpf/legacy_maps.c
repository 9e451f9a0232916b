// A map declared in the legacy SEC("maps") format.
#include "ntsim_test.h"

SEC("maps")
struct bpf_map_def counters = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = sizeof(uint32_t), .value_size = sizeof(uint64_t), .max_entries = 3};

SEC("sample")
int
count(test_ctx_t* ctx)
{
    uint32_t key = ctx->index;
    uint64_t* value = bpf_map_lookup_elem(&counters, &key);
    if (!value) {
        return -1;
    }
    __sync_fetch_and_add(value, ctx->value);
    return (int)*value;
}
