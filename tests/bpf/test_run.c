// Programs for the bpf_prog_test_run tests of the process hook
// (tests/test_run.rs).
//
// ProcessMonitor keeps what upstream ntosebpfext's sample process monitor
// keeps, under the same map names and with the same ring-buffer record, so
// that the checks of upstream's driver tests (process_bpf_prog_run_test,
// process_resolve_account) can be made unchanged: per created process, the
// image path, command line, account name and domain in LRU hash maps keyed
// by the 32-bit process id, each stored only when its helper succeeds (the
// image path always), and one process_info_t per event in process_ringbuf.
//
// account_echo reports both account helpers' results and strings with
// buffers large enough for 1000-character names.
#include "bpf_helpers.h"
#include "ebpf_ntos_hooks.h"

#define IMAGE_PATH_BYTES 1024
#define COMMAND_BYTES 1024
#define ACCOUNT_NAME_BYTES 64
#define ACCOUNT_DOMAIN_BYTES 512
#define LONG_ACCOUNT_BYTES 2048

// The event record (112 bytes), the layout upstream's tests decode.
typedef struct
{
    uint32_t process_id;
    uint32_t parent_process_id;
    uint32_t creating_process_id;
    uint32_t creating_thread_id;
    uint64_t creation_time;
    uint64_t exit_time;
    uint32_t process_exit_code;
    uint8_t operation;
    uint32_t token_sid_size;
    uint8_t token_sid[TOKEN_SID_MAX_SIZE];
} process_info_t;

struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __uint(value_size, COMMAND_BYTES);
    __uint(max_entries, 1);
} text_scratch SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __uint(value_size, IMAGE_PATH_BYTES);
    __uint(max_entries, 64);
} process_map SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __uint(value_size, COMMAND_BYTES);
    __uint(max_entries, 64);
} command_map SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __uint(value_size, ACCOUNT_NAME_BYTES);
    __uint(max_entries, 64);
} account_name_map SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __uint(value_size, ACCOUNT_DOMAIN_BYTES);
    __uint(max_entries, 64);
} account_domain_map SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} process_ringbuf SEC(".maps");

process_hook_t ProcessMonitor;

SEC("process")
int
ProcessMonitor(process_md_t* ctx)
{
    process_info_t info;
    memset(&info, 0, sizeof(info));
    info.process_id = (uint32_t)ctx->process_id;
    info.parent_process_id = (uint32_t)ctx->parent_process_id;
    info.creating_process_id = (uint32_t)ctx->creating_process_id;
    info.creating_thread_id = (uint32_t)ctx->creating_thread_id;
    info.creation_time = ctx->creation_time;
    info.exit_time = ctx->exit_time;
    info.process_exit_code = ctx->process_exit_code;
    info.operation = ctx->operation;
    if (ctx->token_sid_size > 0 && ctx->token_sid_size <= TOKEN_SID_MAX_SIZE) {
        info.token_sid_size = ctx->token_sid_size;
        __builtin_memcpy(info.token_sid, ctx->token_sid, TOKEN_SID_MAX_SIZE);
    }

    if (info.operation == PROCESS_OPERATION_CREATE) {
        uint32_t zero = 0;
        uint8_t* text = bpf_map_lookup_elem(&text_scratch, &zero);
        if (text == NULL) {
            return 0;
        }
        // Each text keeps a UTF-16 terminator: 2 bytes left zero.
        int length = ctx->command_end - ctx->command_start;
        if (length > COMMAND_BYTES - 2) {
            length = COMMAND_BYTES - 2;
        }
        memset(text, 0, COMMAND_BYTES);
        memcpy_s(text, COMMAND_BYTES - 2, ctx->command_start, length);
        bpf_map_update_elem(&command_map, &info.process_id, text, BPF_ANY);

        memset(text, 0, IMAGE_PATH_BYTES);
        bpf_process_get_image_path(ctx, text, IMAGE_PATH_BYTES - 2);
        bpf_map_update_elem(&process_map, &info.process_id, text, BPF_ANY);

        memset(text, 0, ACCOUNT_NAME_BYTES);
        if (bpf_process_get_account_name(ctx, text, ACCOUNT_NAME_BYTES - 2) >= 0) {
            bpf_map_update_elem(&account_name_map, &info.process_id, text, BPF_ANY);
        }

        memset(text, 0, ACCOUNT_DOMAIN_BYTES);
        if (bpf_process_get_account_domain(ctx, text, ACCOUNT_DOMAIN_BYTES - 2) >= 0) {
            bpf_map_update_elem(&account_domain_map, &info.process_id, text, BPF_ANY);
        }
    }
    bpf_ringbuf_output(&process_ringbuf, &info, sizeof(info), 0);
    return 0;
}

// account_echo's record: both results, then the bytes each helper wrote.
typedef struct
{
    int32_t name_result;
    int32_t domain_result;
    uint8_t name[LONG_ACCOUNT_BYTES];
    uint8_t domain[LONG_ACCOUNT_BYTES];
} account_record_t;

struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, account_record_t);
    __uint(max_entries, 1);
} account_scratch SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} accounts SEC(".maps");

SEC("process")
int
account_echo(process_md_t* ctx)
{
    uint32_t zero = 0;
    account_record_t* r = bpf_map_lookup_elem(&account_scratch, &zero);
    if (r == NULL) {
        return 0;
    }
    memset(r, 0, sizeof(*r));
    r->name_result = bpf_process_get_account_name(ctx, r->name, sizeof(r->name));
    r->domain_result = bpf_process_get_account_domain(ctx, r->domain, sizeof(r->domain));
    bpf_ringbuf_output(&accounts, r, sizeof(*r), 0);
    return 0;
}
