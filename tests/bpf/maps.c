// Every keyed map type: lookup, update (flags), delete, lookup-and-delete.
#include "ntsim_test.h"

struct
{
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} hash SEC(".maps");

// 8-byte key: eBPF for Windows arrays index with its first four bytes.
struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint64_t);
    __type(value, uint32_t);
    __uint(max_entries, 4);
} array SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(key_size, 4);
    __uint(value_size, 8);
    __uint(max_entries, 4);
} percpu_hash SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, uint64_t);
    __uint(max_entries, 2);
} percpu_array SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 2);
} lru SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
    __type(key, uint32_t);
    __type(value, uint32_t);
    __uint(max_entries, 2);
} lru_percpu SEC(".maps");

// Records each step's result: results[i] for step i.
struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, int64_t);
    __uint(max_entries, 16);
} results SEC(".maps");

static __noinline void
record(uint32_t step, int64_t value)
{
    bpf_map_update_elem(&results, &step, &value, BPF_ANY);
}

SEC("sample")
int
maps_test(test_ctx_t* ctx)
{
    uint32_t k1 = 1, k2 = 2, k3 = 3;
    uint64_t v = 100;

    // HASH: insert two, a third does not fit, NOEXIST on an existing key fails,
    // EXIST on a missing key fails, delete frees a slot.
    record(0, bpf_map_update_elem(&hash, &k1, &v, BPF_NOEXIST));
    v = 200;
    record(1, bpf_map_update_elem(&hash, &k2, &v, BPF_ANY));
    record(2, bpf_map_update_elem(&hash, &k3, &v, BPF_ANY));
    record(3, bpf_map_update_elem(&hash, &k1, &v, BPF_NOEXIST));
    record(4, bpf_map_update_elem(&hash, &k3, &v, BPF_EXIST));
    uint64_t* pv = bpf_map_lookup_elem(&hash, &k1);
    if (pv) {
        *pv += 5; // writes through the pointer are visible in the map
    }
    record(5, bpf_map_delete_elem(&hash, &k2));
    record(6, bpf_map_delete_elem(&hash, &k2));
    uint64_t* taken = bpf_map_lookup_and_delete_elem(&hash, &k1);
    record(7, taken ? (int64_t)*taken : -1);
    record(8, bpf_map_lookup_elem(&hash, &k1) == 0);

    // ARRAY with an 8-byte key: 0x1_0000_0002 reads element 2.
    uint64_t big = 0x100000002ULL;
    uint32_t av = 77;
    record(9, bpf_map_update_elem(&array, &big, &av, BPF_ANY));
    uint64_t four = 4;
    record(10, bpf_map_update_elem(&array, &four, &av, BPF_ANY));
    uint32_t* ap = bpf_map_lookup_elem(&array, &big);
    record(11, ap ? (int64_t)*ap : -1);

    // Per-CPU maps: the program sees the current CPU's copy.
    uint64_t pc = ctx->value;
    bpf_map_update_elem(&percpu_hash, &k1, &pc, BPF_ANY);
    uint32_t zero = 0;
    uint64_t* pa = bpf_map_lookup_elem(&percpu_array, &zero);
    if (pa) {
        *pa = pc + 1;
    }

    // LRU: a third key evicts the least recently used one (k1 was used last).
    uint32_t lv = 10;
    bpf_map_update_elem(&lru, &k1, &lv, BPF_ANY);
    lv = 20;
    bpf_map_update_elem(&lru, &k2, &lv, BPF_ANY);
    bpf_map_lookup_elem(&lru, &k1);
    lv = 30;
    record(12, bpf_map_update_elem(&lru, &k3, &lv, BPF_ANY));
    bpf_map_update_elem(&lru_percpu, &k1, &lv, BPF_ANY);
    bpf_map_update_elem(&lru_percpu, &k2, &lv, BPF_ANY);
    bpf_map_update_elem(&lru_percpu, &k3, &lv, BPF_ANY);
    return 42;
}
