// A process monitor written the way a program author writes one: typed
// records (nested structs, an enum, signed fields, bit fields, char and
// UTF-16 strings) in a ring buffer, and a hash map of per-parent counts.
// ntsim decodes both from the object's BTF (tests/ntsim/tests/programs/).
#include "ebpf_ntsim.h"
#include "ebpf_ntos_hooks.h"

typedef uint16_t WCHAR;

enum event_kind
{
    EVENT_CREATE = 1,
    EVENT_EXIT = 2,
};

struct ids
{
    uint32_t pid;
    uint32_t tid;
};

struct process_event
{
    enum event_kind kind;
    int32_t exit_code;
    uint64_t process_id;
    uint64_t parent_process_id;
    struct ids creator;   // from the context (CREATE only)
    struct ids current;   // bpf_get_current_pid_tgid: the thread the program runs on
    uint64_t logon_id;    // bpf_get_current_logon_id: of the current thread's token
    uint32_t has_sid : 1;
    uint32_t sid_bytes : 7;
    int32_t image_result; // bpf_process_get_image_path's result
    char tag[8];
    WCHAR image[100];
    WCHAR account[32];
};

struct children
{
    uint32_t created;
    uint32_t exited;
};

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} process_events SEC(".maps");

// Exits also go to a perf event array, on the current CPU.
struct
{
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(uint32_t));
    __uint(value_size, sizeof(uint32_t));
} exits SEC(".maps");

// Records are built here (a ring buffer's record type is not in the
// object's BTF unless some declaration uses it: this map's value does).
struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, struct process_event);
    __uint(max_entries, 1);
} scratch SEC(".maps");

// Per parent process id: how many children it created and how many of
// them exited.
struct
{
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, struct children);
    __uint(max_entries, 64);
} children_by_parent SEC(".maps");

// The parent of every created process, to count its exit.
struct
{
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, uint64_t);
    __uint(max_entries, 256);
} parent_of SEC(".maps");

SEC("process")
int
record(process_md_t* ctx)
{
    uint32_t zero = 0;
    struct process_event* slot = bpf_map_lookup_elem(&scratch, &zero);
    if (slot == 0) {
        return 0;
    }
    struct process_event e = {};
    uint64_t pid_tgid = bpf_get_current_pid_tgid();
    e.kind = ctx->operation == PROCESS_OPERATION_CREATE ? EVENT_CREATE : EVENT_EXIT;
    e.exit_code = (int32_t)ctx->process_exit_code;
    e.process_id = ctx->process_id;
    e.parent_process_id = ctx->parent_process_id;
    e.creator.pid = (uint32_t)ctx->creating_process_id;
    e.creator.tid = (uint32_t)ctx->creating_thread_id;
    e.current.pid = (uint32_t)(pid_tgid >> 32);
    e.current.tid = (uint32_t)pid_tgid;
    e.logon_id = bpf_get_current_logon_id(ctx);
    e.has_sid = ctx->token_sid_size > 0;
    e.sid_bytes = ctx->token_sid_size;
    if (e.kind == EVENT_CREATE) {
        __builtin_memcpy(e.tag, "create", 7);
        e.image_result = bpf_process_get_image_path(ctx, (uint8_t*)e.image, sizeof(e.image));
        bpf_process_get_account_name(ctx, (uint8_t*)e.account, sizeof(e.account));
    } else {
        __builtin_memcpy(e.tag, "exit", 5);
    }
    *slot = e;
    bpf_ringbuf_output(&process_events, slot, sizeof(*slot), 0);
    if (e.kind == EVENT_EXIT) {
        bpf_perf_event_output(ctx, &exits, BPF_F_CURRENT_CPU, slot, sizeof(*slot));
    }

    uint64_t process_id = ctx->process_id;
    if (e.kind == EVENT_CREATE) {
        uint64_t parent = ctx->parent_process_id;
        bpf_map_update_elem(&parent_of, &process_id, &parent, BPF_ANY);
        struct children* c = bpf_map_lookup_elem(&children_by_parent, &parent);
        if (c) {
            c->created++;
        } else {
            struct children first = {1, 0};
            bpf_map_update_elem(&children_by_parent, &parent, &first, BPF_ANY);
        }
    } else {
        uint64_t* parent = bpf_map_lookup_elem(&parent_of, &process_id);
        if (parent) {
            struct children* c = bpf_map_lookup_elem(&children_by_parent, parent);
            if (c) {
                c->exited++;
            }
            bpf_map_delete_elem(&parent_of, &process_id);
        }
    }
    return 0;
}

// Denies processes created by a thread of another process than their
// parent (a creator distinct from the parent, as when a broker process
// creates a process on behalf of another): returns STATUS_ACCESS_DENIED.
SEC("process")
int
deny_foreign_creator(process_md_t* ctx)
{
    if (ctx->operation == PROCESS_OPERATION_CREATE && ctx->creating_process_id != ctx->parent_process_id) {
        return (int)0xC0000022;
    }
    return 0;
}
