// A process monitor written the way programs for ntosebpfext 0.7.0 are: it
// includes eBPF for Windows' "bpf_helpers.h" first and then
// "ebpf_ntos_hooks.h", and uses that header's names (TOKEN_SID_MAX_SIZE,
// process_hook_t, process_md_t, the three helpers) and memcpy_s.
// tests/program_headers.rs runs it against the driver in ntsim.
#include "bpf_helpers.h"
#include "ebpf_ntos_hooks.h"

#define TEXT_CAPACITY 512
#define NAME_CAPACITY 64

// One summary per event, in the "summaries" ring buffer (92 bytes).
typedef struct
{
    uint32_t process_id;
    uint32_t parent_process_id;
    uint8_t operation;
    uint8_t reserved[3];
    uint32_t token_sid_size;
    uint8_t token_sid[TOKEN_SID_MAX_SIZE];
    int32_t image_result;
    int32_t name_result;
} summary_t;

// Per-CPU scratch space for strings larger than the stack allows.
struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __uint(value_size, TEXT_CAPACITY);
    __uint(max_entries, 1);
} scratch SEC(".maps");

// Command line and image path of each created process, by process id.
struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __uint(value_size, TEXT_CAPACITY);
    __uint(max_entries, 64);
} command_lines SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __type(key, uint32_t);
    __uint(value_size, TEXT_CAPACITY);
    __uint(max_entries, 64);
} image_paths SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} summaries SEC(".maps");

// The prototype check the header's process_hook_t allows.
process_hook_t ProcessMonitor;

SEC("process")
int
ProcessMonitor(process_md_t* ctx)
{
    summary_t summary;
    memset(&summary, 0, sizeof(summary));
    summary.process_id = (uint32_t)ctx->process_id;
    summary.parent_process_id = (uint32_t)ctx->parent_process_id;
    summary.operation = ctx->operation;
    if (ctx->token_sid_size > 0 && ctx->token_sid_size <= TOKEN_SID_MAX_SIZE) {
        summary.token_sid_size = ctx->token_sid_size;
        __builtin_memcpy(summary.token_sid, ctx->token_sid, TOKEN_SID_MAX_SIZE);
    }

    if (ctx->operation == PROCESS_OPERATION_CREATE) {
        uint32_t zero = 0;
        uint8_t* text = bpf_map_lookup_elem(&scratch, &zero);
        if (text == NULL) {
            return 0;
        }
        int length = ctx->command_end - ctx->command_start;
        if (length > TEXT_CAPACITY) {
            length = TEXT_CAPACITY;
        }
        memset(text, 0, TEXT_CAPACITY);
        memcpy_s(text, TEXT_CAPACITY, ctx->command_start, length);
        bpf_map_update_elem(&command_lines, &summary.process_id, text, BPF_ANY);

        memset(text, 0, TEXT_CAPACITY);
        summary.image_result = bpf_process_get_image_path(ctx, text, TEXT_CAPACITY);
        bpf_map_update_elem(&image_paths, &summary.process_id, text, BPF_ANY);

        memset(text, 0, NAME_CAPACITY);
        summary.name_result = bpf_process_get_account_name(ctx, text, NAME_CAPACITY);
    }
    bpf_ringbuf_output(&summaries, &summary, sizeof(summary), 0);
    return 0;
}
