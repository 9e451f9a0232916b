// monitor_netevents (section "netevent_monitor"), a network event monitor
// for the neteventebpfext driver: every event it is given goes to the
// "netevent_events" ring buffer as one record holding the event's bytes from
// data_meta on (the 4-byte netevent_data_header_t, the PktMon header, then the
// payload), with at most NETEVENT_MONITOR_PAYLOAD_MAX payload bytes. Events
// whose payload does not start right after the two headers are not recorded
// (an unknown header layout); the program then returns -1, which the driver
// ignores.
#include "ebpf_ntsim.h"
#include "ebpf_netevent_hooks.h"

// Payload bytes kept per event.
#define NETEVENT_MONITOR_PAYLOAD_MAX 128
// Bytes before the payload: netevent_data_header_t, then the PktMon header.
#define NETEVENT_MONITOR_HEADERS (sizeof(netevent_data_header_t) + PKTMON_EVENT_HEADER_LENGTH)

struct
{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} netevent_events SEC(".maps");

netevent_event_hook_t monitor_netevents;

SEC("netevent_monitor")
int
monitor_netevents(netevent_event_md_t* ctx)
{
    uint8_t* start = ctx->data_meta;
    uint8_t* payload = ctx->data;
    uint8_t* end = ctx->data_end;

    if (start + NETEVENT_MONITOR_HEADERS != payload || payload > end) {
        return -1;
    }
    uint64_t kept = (uint64_t)(end - payload);
    if (kept > NETEVENT_MONITOR_PAYLOAD_MAX) {
        kept = NETEVENT_MONITOR_PAYLOAD_MAX;
    }
    uint64_t size = NETEVENT_MONITOR_HEADERS + kept;
    if (start + size > end) {
        return -1;
    }
    return bpf_ringbuf_output(&netevent_events, start, size, 0);
}
