// Memory, string, clock and current-process helpers, and extension helpers.
#include "ntsim_test.h"

struct result
{
    int64_t memcpy_ok, memcpy_small, memcmp_lt, memcmp_eq, memcmp_len, memset_ok, memmove_ok;
    int64_t strncpy_ok, strncpy_trunc, strncat_ok, strncat_over, strnlen, strnlen_nonul;
    uint64_t boot_ns, ns, boot_ms, ms;
    uint64_t pid_tgid, logon_id, start_key;
    int64_t is_admin, thread_time;
    uint64_t ext_add, ext_ctx, cpu;
    char copied[8], joined[8], moved[8];
    uint8_t filled[4];
};

struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, struct result);
    __uint(max_entries, 1);
} out SEC(".maps");

SEC("sample")
int
helpers_test(test_ctx_t* ctx)
{
    uint32_t zero = 0;
    struct result* r = bpf_map_lookup_elem(&out, &zero);
    if (!r) {
        return 1;
    }
    char a[8] = "abc";
    char b[8] = "abd";
    r->memcpy_ok = bpf_memcpy_s(r->copied, 8, a, 4);
    r->memcpy_small = bpf_memcpy_s(r->copied, 2, a, 4);
    r->memcmp_lt = bpf_memcmp_s(a, 3, b, 3);
    r->memcmp_eq = bpf_memcmp_s(a, 3, a, 3);
    r->memcmp_len = bpf_memcmp_s(a, 2, a, 3);
    r->memset_ok = bpf_memset(r->filled, 4, 0x5a) != 0;
    char m[8] = "12345";
    r->memmove_ok = bpf_memmove_s(m + 1, 7, m, 4);
    __builtin_memcpy(r->moved, m, 8);

    char dst[8];
    char xy[3] = "xy";
    r->strncpy_ok = bpf_strncpy_s(dst, 8, xy, 3);
    char abcdef[7] = "abcdef";
    r->strncpy_trunc = bpf_strncpy_s(r->joined, 4, abcdef, 7);
    char xyz[4] = "XYZ";
    r->strncat_ok = bpf_strncat_s(r->joined, 8, xyz, 2);
    char small[4] = "ab";
    char cdef[4] = {'c', 'd', 'e', 'f'};
    r->strncat_over = bpf_strncat_s(small, 4, cdef, 4);
    r->strnlen = bpf_strnlen_s(dst, 8);
    char nonul[4] = {'a', 'b', 'c', 'd'};
    r->strnlen_nonul = bpf_strnlen_s(nonul, 4);

    r->boot_ns = bpf_ktime_get_boot_ns();
    r->ns = bpf_ktime_get_ns();
    r->boot_ms = bpf_ktime_get_boot_ms();
    r->ms = bpf_ktime_get_ms();
    r->pid_tgid = bpf_get_current_pid_tgid();
    r->logon_id = bpf_get_current_logon_id(ctx);
    r->is_admin = bpf_is_current_admin(ctx);
    r->start_key = bpf_get_current_process_start_key();
    r->thread_time = bpf_get_current_thread_create_time();
    r->cpu = bpf_get_smp_processor_id();
    r->ext_add = test_ext_add(ctx->id, 1000);
    r->ext_ctx = test_ext_ctx_id(3);
    return 0;
}
