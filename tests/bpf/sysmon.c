// Sysmon-style programs for the thread and image-load hooks, used by the
// end-to-end tests (tests/thread_image_hooks.rs) and by `cargo xtask demo`:
//
// - watch_lsass (process): remembers which process created each new process
//   (its first thread is created by that process, so it is "remote" without
//   being an injection), and the ids of processes whose image path ends in
//   "\lsass.exe"; forgets both when the process exits;
// - thread_monitor (thread): reports every thread event with every context
//   field, marks a process's first thread, and raises an alert for any other
//   remote thread created in a watched process (Sysmon event 8,
//   CreateRemoteThread, into lsass.exe);
// - image_monitor (image_load): reports every image load with every context
//   field and the image name read from the packet (Sysmon events 6 and 7);
// - thread_echo / image_echo: return a value computed from the context, for
//   bpf_prog_test_run round trips.
#include "ebpf_ntsim.h"
#include "ebpf_ntos_hooks.h"

#define PATH_CAPACITY 512
#define IMAGE_PATH_CAPACITY 256

// One record per thread event, in the "threads" ring buffer (64 bytes).
typedef struct
{
    uint64_t process_id;
    uint64_t thread_id;
    uint64_t creating_process_id;
    uint64_t creating_thread_id;
    uint64_t start_address;
    uint32_t exit_status;
    uint32_t operation;
    uint32_t flags;
    uint32_t reserved;
    uint32_t alert;   // 1: a remote thread into a watched process
    uint32_t initial; // 1: the process's first thread, created by its creator
} thread_record_t;

// One record per image load, in the "images" ring buffer (560 bytes).
typedef struct
{
    uint64_t process_id;
    uint64_t thread_id;
    uint64_t image_base;
    uint64_t image_size;
    uint32_t flags;
    uint8_t signature_level;
    uint8_t signature_type;
    uint16_t reserved;
    int32_t path_length; // bytes of the packet, which may exceed the capacity
    uint32_t padding;
    uint8_t path[PATH_CAPACITY];
} image_record_t;

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} threads SEC(".maps");

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} images SEC(".maps");

// Processes to protect: process id -> 1.
struct
{
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, uint32_t);
    __uint(max_entries, 64);
} watched SEC(".maps");

// The creator of each process whose first thread has not been seen yet:
// process id -> creating process id.
struct
{
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, uint64_t);
    __type(value, uint64_t);
    __uint(max_entries, 1024);
} first_thread_creator SEC(".maps");

// Never used by the programs: declares thread_record_t in the object's BTF
// (a type is there only if a declaration uses it), so that `ntsim test` and
// `ntsim run --ringbuf threads=thread_record_t` can decode the records.
struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, thread_record_t);
    __uint(max_entries, 1);
} thread_record_type SEC(".maps");

// Image records are larger than the 512-byte stack.
struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, image_record_t);
    __uint(max_entries, 1);
} image_scratch SEC(".maps");

// The image path of a new process, for watch_lsass.
struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, uint8_t[IMAGE_PATH_CAPACITY]);
    __uint(max_entries, 1);
} path_scratch SEC(".maps");

SEC("process")
int
watch_lsass(process_md_t* ctx)
{
    static const char suffix[] = "\\lsass.exe";
    uint64_t pid = ctx->process_id;
    if (ctx->operation == PROCESS_OPERATION_DELETE) {
        bpf_map_delete_elem(&watched, &pid);
        bpf_map_delete_elem(&first_thread_creator, &pid);
        return 0;
    }
    uint64_t creator = ctx->creating_process_id;
    bpf_map_update_elem(&first_thread_creator, &pid, &creator, 0);
    uint32_t zero = 0;
    uint8_t* path = bpf_map_lookup_elem(&path_scratch, &zero);
    if (path == 0) {
        return 0;
    }
    int length = bpf_process_get_image_path(ctx, path, IMAGE_PATH_CAPACITY);
    int suffix_bytes = 2 * (sizeof(suffix) - 1);
    if (length < suffix_bytes || length > IMAGE_PATH_CAPACITY) {
        return 0;
    }
    for (int i = 0; i < (int)sizeof(suffix) - 1; i++) {
        int at = length - suffix_bytes + 2 * i;
        if (at < 0 || at + 1 >= IMAGE_PATH_CAPACITY) {
            return 0;
        }
        uint8_t c = path[at];
        if (c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
        }
        if (c != (uint8_t)suffix[i] || path[at + 1] != 0) {
            return 0;
        }
    }
    uint32_t one = 1;
    bpf_map_update_elem(&watched, &pid, &one, 0);
    return 0;
}

SEC("thread")
int
thread_monitor(thread_md_t* ctx)
{
    thread_record_t r = {0};
    r.process_id = ctx->process_id;
    r.thread_id = ctx->thread_id;
    r.creating_process_id = ctx->creating_process_id;
    r.creating_thread_id = ctx->creating_thread_id;
    r.start_address = ctx->start_address;
    r.exit_status = ctx->exit_status;
    r.operation = ctx->operation;
    r.flags = ctx->flags;
    r.reserved = ctx->reserved;
    uint64_t pid = ctx->process_id;
    if (ctx->operation == THREAD_OPERATION_CREATE) {
        uint64_t* creator = bpf_map_lookup_elem(&first_thread_creator, &pid);
        if (creator != 0) {
            // The first thread of a process: created by its creator.
            r.initial = *creator == ctx->creating_process_id;
            bpf_map_delete_elem(&first_thread_creator, &pid);
        }
        if ((ctx->flags & THREAD_FLAG_REMOTE) != 0 && !r.initial &&
            bpf_map_lookup_elem(&watched, &pid) != 0) {
            r.alert = 1;
        }
    }
    bpf_ringbuf_output(&threads, &r, sizeof(r), 0);
    // Ignored by the driver: thread creation cannot be denied.
    return -1;
}

SEC("image_load")
int
image_monitor(image_load_md_t* ctx)
{
    uint32_t zero = 0;
    image_record_t* r = bpf_map_lookup_elem(&image_scratch, &zero);
    if (r == 0) {
        return 0;
    }
    r->process_id = ctx->process_id;
    r->thread_id = ctx->thread_id;
    r->image_base = ctx->image_base;
    r->image_size = ctx->image_size;
    r->flags = ctx->flags;
    r->signature_level = ctx->signature_level;
    r->signature_type = ctx->signature_type;
    r->reserved = ctx->reserved;
    uint8_t* start = ctx->image_path_start;
    uint8_t* end = ctx->image_path_end;
    r->path_length = (int32_t)(end - start);
    for (int i = 0; i < PATH_CAPACITY; i++) {
        if (start + i + 1 > end) {
            break;
        }
        r->path[i] = start[i];
    }
    bpf_ringbuf_output(&images, r, sizeof(*r), 0);
    return -1;
}

SEC("thread")
int
thread_echo(thread_md_t* ctx)
{
    return (int)(ctx->thread_id + ctx->start_address + ctx->exit_status + (ctx->operation << 8) +
                 (ctx->flags << 12));
}

SEC("image_load")
int
image_echo(image_load_md_t* ctx)
{
    int first = 0;
    if (ctx->image_path_start + 1 <= ctx->image_path_end) {
        first = ctx->image_path_start[0];
    }
    return (int)(ctx->image_size + ctx->flags + (ctx->signature_level << 8) +
                 (ctx->signature_type << 12) + (first << 16) +
                 ((ctx->image_path_end - ctx->image_path_start) << 24));
}
