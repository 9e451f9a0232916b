// QUEUE and STACK: push (with and without BPF_EXIST), pop, peek.
#include "ntsim_test.h"

struct
{
    __uint(type, BPF_MAP_TYPE_QUEUE);
    __type(value, uint32_t);
    __uint(max_entries, 2);
} queue SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_STACK);
    __type(value, uint32_t);
    __uint(max_entries, 2);
} stack SEC(".maps");

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
queue_stack_test(test_ctx_t* ctx)
{
    uint32_t v;
    int64_t r;
    for (uint32_t i = 1; i <= 3; i++) {
        v = i;
        record(i - 1, bpf_map_push_elem(&queue, &v, 0)); // third push: full
        record(i + 2, bpf_map_push_elem(&stack, &v, 0));
    }
    v = 9;
    record(6, bpf_map_push_elem(&queue, &v, BPF_EXIST)); // evicts the oldest (1)
    v = 0;
    r = bpf_map_peek_elem(&queue, &v);
    record(7, r == 0 ? v : r);
    r = bpf_map_pop_elem(&queue, &v);
    record(8, r == 0 ? v : r);
    r = bpf_map_pop_elem(&stack, &v);
    record(9, r == 0 ? v : r);
    r = bpf_map_pop_elem(&stack, &v);
    record(10, r == 0 ? v : r);
    r = bpf_map_pop_elem(&stack, &v);
    record(11, r); // empty
    return 0;
}
