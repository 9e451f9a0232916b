/*
 * ebpf_ntsim.h: helper declarations and map macros for the eBPF programs the
 * ntsim tests build. Ids and constants are those of eBPF for Windows (they
 * differ from Linux); the map declaration macros follow the libbpf BTF
 * convention that eBPF for Windows also reads.
 *
 * It stands in for eBPF for Windows' bpf_helpers.h (which tests/bpf/include
 * also provides under that name).
 *
 * Build with: clang -O2 -g -target bpf -I tests/bpf/include -c prog.c
 */
#ifndef EBPF_NTSIM_H
#define EBPF_NTSIM_H

#include <stddef.h>
#include <stdint.h>

/* The program and attach type enumerations, as bpf_helpers.h brings them. */
#include "ebpf_structs.h"

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val)* name
#define __noinline __attribute__((noinline))

/* Map types (eBPF for Windows numbering). */
#define BPF_MAP_TYPE_UNSPEC 0
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PROG_ARRAY 3
#define BPF_MAP_TYPE_PERCPU_HASH 4
#define BPF_MAP_TYPE_PERCPU_ARRAY 5
#define BPF_MAP_TYPE_HASH_OF_MAPS 6
#define BPF_MAP_TYPE_ARRAY_OF_MAPS 7
#define BPF_MAP_TYPE_LRU_HASH 8
#define BPF_MAP_TYPE_LPM_TRIE 9
#define BPF_MAP_TYPE_QUEUE 10
#define BPF_MAP_TYPE_LRU_PERCPU_HASH 11
#define BPF_MAP_TYPE_STACK 12
#define BPF_MAP_TYPE_RINGBUF 13
#define BPF_MAP_TYPE_PERF_EVENT_ARRAY 14

/* Update flags. */
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2

/* Pinning. */
#define LIBBPF_PIN_NONE 0
#define LIBBPF_PIN_BY_NAME 1

/* bpf_perf_event_output flags. */
#define BPF_F_INDEX_MASK 0xffffffffULL
#define BPF_F_CURRENT_CPU BPF_F_INDEX_MASK
#define BPF_F_CTXLEN_MASK (0xfffffULL << 32)

/* Legacy map definition (SEC("maps")): eight 32-bit fields. */
struct bpf_map_def
{
    uint32_t type;
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t inner_map_idx;
    uint32_t pinning;
    uint32_t id;
    uint32_t inner_id;
};

/* General helpers, eBPF for Windows ids. */
static void* (*bpf_map_lookup_elem)(void* map, const void* key) = (void*)1;
static int64_t (*bpf_map_update_elem)(void* map, const void* key, const void* value, uint64_t flags) = (void*)2;
static int64_t (*bpf_map_delete_elem)(void* map, const void* key) = (void*)3;
static void* (*bpf_map_lookup_and_delete_elem)(void* map, const void* key) = (void*)4;
static int64_t (*bpf_tail_call)(const void* ctx, const void* prog_array_map, uint32_t index) = (void*)5;
static uint32_t (*bpf_get_prandom_u32)(void) = (void*)6;
static uint64_t (*bpf_ktime_get_boot_ns)(void) = (void*)7;
static uint64_t (*bpf_get_smp_processor_id)(void) = (void*)8;
static uint64_t (*bpf_ktime_get_ns)(void) = (void*)9;
static int (*bpf_csum_diff)(const void* from, int from_size, const void* to, int to_size, int seed) = (void*)10;
static int (*bpf_ringbuf_output)(void* ring_buffer, const void* data, uint64_t size, uint64_t flags) = (void*)11;
static long (*bpf_trace_printk2)(const char* fmt, uint32_t fmt_size) = (void*)12;
static long (*bpf_trace_printk3)(const char* fmt, uint32_t fmt_size, uint64_t arg3) = (void*)13;
static long (*bpf_trace_printk4)(const char* fmt, uint32_t fmt_size, uint64_t arg3, uint64_t arg4) = (void*)14;
static long (*bpf_trace_printk5)(const char* fmt, uint32_t fmt_size, uint64_t arg3, uint64_t arg4, uint64_t arg5) =
    (void*)15;
static int64_t (*bpf_map_push_elem)(void* map, const void* value, uint64_t flags) = (void*)16;
static int64_t (*bpf_map_pop_elem)(void* map, void* value) = (void*)17;
static int64_t (*bpf_map_peek_elem)(void* map, void* value) = (void*)18;
static uint64_t (*bpf_get_current_pid_tgid)(void) = (void*)19;
static uint64_t (*bpf_get_current_logon_id)(const void* ctx) = (void*)20;
static int32_t (*bpf_is_current_admin)(const void* ctx) = (void*)21;
static long (*bpf_memcpy_s)(void* dst, size_t dst_size, const void* src, size_t src_size) = (void*)22;
static int (*bpf_memcmp_s)(const void* m1, size_t m1_size, const void* m2, size_t m2_size) = (void*)23;
static long (*bpf_memset)(void* memory, size_t size, int value) = (void*)24;
static long (*bpf_memmove_s)(void* dst, size_t dst_size, const void* src, size_t src_size) = (void*)25;
static int (*bpf_strncpy_s)(char* dest, size_t dest_size, const char* src, size_t count) = (void*)27;
static int (*bpf_strncat_s)(char* dest, size_t dest_size, const char* src, size_t count) = (void*)28;
static size_t (*bpf_strnlen_s)(const char* str, size_t str_size) = (void*)29;
static uint64_t (*bpf_ktime_get_boot_ms)(void) = (void*)30;
static uint64_t (*bpf_ktime_get_ms)(void) = (void*)31;
static int (*bpf_perf_event_output)(const void* ctx, void* map, uint64_t flags, const void* data, uint64_t size) =
    (void*)32;
static uint64_t (*bpf_get_current_process_start_key)(void) = (void*)33;
static int64_t (*bpf_get_current_thread_create_time)(void) = (void*)34;

/* How eBPF for Windows' bpf_helpers.h declares helper types (unconditionally:
 * a header included before it must not leave its own definition behind). */
#define EBPF_HELPER(return_type, name, args) typedef return_type(*const name##_t) args

/* Under clang, these C library names become the helpers (as upstream does). */
#define memcpy(dst, src, n) bpf_memcpy_s((dst), (n), (src), (n))
#define memmove(dst, src, n) bpf_memmove_s((dst), (n), (src), (n))
#define memcmp(a, b, n) bpf_memcmp_s((a), (n), (b), (n))
#define memset(p, v, n) bpf_memset((p), (n), (v))
#define memcpy_s bpf_memcpy_s

#endif
