// Process programs for the end-to-end tests of the driver's process hook.
// They include the driver's own header, include/ebpf_ntos_hooks.h, exactly as
// programs written for ntosebpfext 0.7.0 include its header.
#include "ebpf_ntsim.h"
#include "ebpf_ntos_hooks.h"

#define STATUS_ACCESS_DENIED ((int)0xC0000022)
#define COMMAND_CAPACITY 256
#define IMAGE_CAPACITY 256
#define ACCOUNT_CAPACITY 64

// One record per event, in the "events" ring buffer. Rust reads it back
// (tests/process_hook.rs, ntsim::demo) with the same layout.
typedef struct
{
    uint64_t process_id;
    uint64_t parent_process_id;
    uint64_t creating_process_id;
    uint64_t creating_thread_id;
    uint64_t creation_time;
    uint64_t exit_time;
    uint32_t process_exit_code;
    uint32_t operation;
    uint32_t token_sid_size;
    int32_t command_length;     // bytes read from the packet
    int32_t image_result;       // bpf_process_get_image_path
    int32_t name_result;        // bpf_process_get_account_name
    int32_t domain_result;      // bpf_process_get_account_domain
    int32_t short_image_result; // bpf_process_get_image_path with a 2-byte buffer
    uint8_t token_sid[68];
    uint8_t short_image[4];     // must stay untouched by the short call
    uint8_t command[COMMAND_CAPACITY];
    uint8_t image[IMAGE_CAPACITY];
    uint8_t name[ACCOUNT_CAPACITY];
    uint8_t domain[ACCOUNT_CAPACITY];
} process_record_t;

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} events SEC(".maps");

// Records are larger than the 512-byte stack: build them in a per-CPU slot.
struct
{
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, uint32_t);
    __type(value, process_record_t);
    __uint(max_entries, 1);
} scratch SEC(".maps");

// One byte per run of mark_a / mark_b, in run order.
struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} marks SEC(".maps");

// Reports every event: every context field, the command line read from the
// packet, and the three helpers' results.
SEC("process")
int
monitor(process_md_t* ctx)
{
    uint32_t zero = 0;
    process_record_t* r = bpf_map_lookup_elem(&scratch, &zero);
    if (r == 0) {
        return 0;
    }
    r->process_id = ctx->process_id;
    r->parent_process_id = ctx->parent_process_id;
    r->creating_process_id = ctx->creating_process_id;
    r->creating_thread_id = ctx->creating_thread_id;
    r->creation_time = ctx->creation_time;
    r->exit_time = ctx->exit_time;
    r->process_exit_code = ctx->process_exit_code;
    r->operation = ctx->operation;
    r->token_sid_size = ctx->token_sid_size;
    memcpy(r->token_sid, ctx->token_sid, sizeof(r->token_sid));

    // The command line is the packet: read it directly, within its bounds.
    uint8_t* start = ctx->command_start;
    uint8_t* end = ctx->command_end;
    int32_t n = 0;
    for (int i = 0; i < COMMAND_CAPACITY; i++) {
        if (start + i + 1 > end) {
            break;
        }
        r->command[i] = start[i];
        n++;
    }
    r->command_length = n;

    r->image_result = bpf_process_get_image_path(ctx, r->image, sizeof(r->image));
    r->name_result = bpf_process_get_account_name(ctx, r->name, sizeof(r->name));
    r->domain_result = bpf_process_get_account_domain(ctx, r->domain, sizeof(r->domain));
    r->short_image[0] = 0xAA;
    r->short_image[1] = 0xAA;
    r->short_image[2] = 0xAA;
    r->short_image[3] = 0xAA;
    r->short_image_result = bpf_process_get_image_path(ctx, r->short_image, 2);

    bpf_ringbuf_output(&events, r, sizeof(*r), 0);
    return 0;
}

// Denies the creation of any process whose image path ends in
// "\notepad.exe" (UTF-16LE, lower case).
SEC("process")
int
deny_notepad(process_md_t* ctx)
{
    static const char suffix[] = "\\notepad.exe";
    uint32_t zero = 0;
    process_record_t* r = bpf_map_lookup_elem(&scratch, &zero);
    if (r == 0) {
        return 0;
    }
    int length = bpf_process_get_image_path(ctx, r->image, sizeof(r->image));
    int suffix_bytes = 2 * (sizeof(suffix) - 1);
    if (length < suffix_bytes || length > (int)sizeof(r->image)) {
        return 0;
    }
    for (int i = 0; i < (int)sizeof(suffix) - 1; i++) {
        int at = length - suffix_bytes + 2 * i;
        if (at < 0 || at + 1 >= (int)sizeof(r->image)) {
            return 0;
        }
        if (r->image[at] != (uint8_t)suffix[i] || r->image[at + 1] != 0) {
            return 0;
        }
    }
    return STATUS_ACCESS_DENIED;
}

// Denies everything: on DELETE the driver must ignore it.
SEC("process")
int
deny_all(process_md_t* ctx)
{
    return STATUS_ACCESS_DENIED;
}

static __noinline void
mark(uint8_t which)
{
    bpf_ringbuf_output(&marks, &which, 1, 0);
}

SEC("process")
int
mark_a(process_md_t* ctx)
{
    mark('A');
    return 0;
}

SEC("process")
int
mark_b(process_md_t* ctx)
{
    mark('B');
    return 0;
}

// Reads one byte past the end of the packet: a program error, which the
// driver must treat as "permit" (fail-open).
SEC("process")
int
read_past_packet(process_md_t* ctx)
{
    volatile uint8_t* end = ctx->command_end;
    return end[0] == 0x5a ? 0 : STATUS_ACCESS_DENIED;
}

// A verdict chosen by the test: returns the value in "verdict" (slot 0).
struct
{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, uint32_t);
    __type(value, int32_t);
    __uint(max_entries, 1);
} verdict SEC(".maps");

SEC("process")
int
verdict_from_map(process_md_t* ctx)
{
    uint32_t zero = 0;
    int32_t* v = bpf_map_lookup_elem(&verdict, &zero);
    return v == 0 ? 0 : *v;
}

// bpf_process_get_image_path into a buffer of exactly 16 bytes and one of
// 15, each followed by a sentinel: for the exact-fit and one-short tests.
typedef struct
{
    int32_t exact_result;
    int32_t short_result;
    uint8_t exact[16];
    uint8_t exact_sentinel[4];
    uint8_t short_buf[15];
    uint8_t short_sentinel[5];
} fit_record_t;

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4096);
} fits SEC(".maps");

SEC("process")
int
image_fit(process_md_t* ctx)
{
    fit_record_t r;
    for (int i = 0; i < 16; i++) {
        r.exact[i] = 0xAA;
    }
    for (int i = 0; i < 15; i++) {
        r.short_buf[i] = 0xAA;
    }
    for (int i = 0; i < 4; i++) {
        r.exact_sentinel[i] = 0x5A;
    }
    for (int i = 0; i < 5; i++) {
        r.short_sentinel[i] = 0x5A;
    }
    r.exact_result = bpf_process_get_image_path(ctx, r.exact, 16);
    r.short_result = bpf_process_get_image_path(ctx, r.short_buf, 15);
    bpf_ringbuf_output(&fits, &r, sizeof(r), 0);
    return 0;
}

// The account strings into buffers of the longest the driver resolves
// (256 UTF-16 units, 512 bytes).
typedef struct
{
    int32_t name_result;
    int32_t domain_result;
    uint8_t name[512];
    uint8_t domain[512];
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
    __uint(max_entries, 16 * 1024);
} accounts SEC(".maps");

SEC("process")
int
long_account(process_md_t* ctx)
{
    uint32_t zero = 0;
    account_record_t* r = bpf_map_lookup_elem(&account_scratch, &zero);
    if (r == 0) {
        return 0;
    }
    r->name_result = bpf_process_get_account_name(ctx, r->name, sizeof(r->name));
    r->domain_result = bpf_process_get_account_domain(ctx, r->domain, sizeof(r->domain));
    bpf_ringbuf_output(&accounts, r, sizeof(*r), 0);
    return 0;
}

// A record small enough for the stack, so that events running at once on
// several threads never share it (the monitor's per-CPU slot is one slot
// in ntsim): for the stress test, and the logon session.
typedef struct
{
    uint64_t process_id;
    uint64_t parent_process_id;
    uint64_t creating_process_id;
    uint64_t creating_thread_id;
    uint64_t logon_id;
    uint64_t pid_tgid;
    uint32_t operation;
    int32_t image_result;
    int32_t command_length;
    uint32_t process_exit_code;
    uint8_t image[64];
    uint8_t command[64];
} small_record_t;

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} small_events SEC(".maps");

SEC("process")
int
monitor_small(process_md_t* ctx)
{
    small_record_t r;
    r.process_id = ctx->process_id;
    r.parent_process_id = ctx->parent_process_id;
    r.creating_process_id = ctx->creating_process_id;
    r.creating_thread_id = ctx->creating_thread_id;
    r.logon_id = bpf_get_current_logon_id(ctx);
    r.pid_tgid = bpf_get_current_pid_tgid();
    r.operation = ctx->operation;
    r.process_exit_code = ctx->process_exit_code;
    for (int i = 0; i < 64; i++) {
        r.image[i] = 0;
        r.command[i] = 0;
    }
    uint8_t* start = ctx->command_start;
    uint8_t* end = ctx->command_end;
    int32_t n = 0;
    for (int i = 0; i < 64; i++) {
        if (start + i + 1 > end) {
            break;
        }
        r.command[i] = start[i];
        n++;
    }
    r.command_length = n;
    r.image_result = bpf_process_get_image_path(ctx, r.image, sizeof(r.image));
    bpf_ringbuf_output(&small_events, &r, sizeof(r), 0);
    return 0;
}
