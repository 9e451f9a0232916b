// An object with a map type ntsim does not implement (LPM_TRIE).
#include "ntsim_test.h"

struct
{
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __type(key, uint64_t);
    __type(value, uint32_t);
    __uint(max_entries, 4);
} trie SEC(".maps");

SEC("sample")
int
uses_trie(test_ctx_t* ctx)
{
    uint64_t key = ctx->id;
    return bpf_map_lookup_elem(&trie, &key) != 0;
}
