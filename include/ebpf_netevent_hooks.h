/*
 * ebpf_netevent_hooks.h - eBPF program interface of the neteventebpfext driver.
 * SPDX-License-Identifier: MIT
 *
 * Include this header in eBPF programs (clang -target bpf) that attach to the
 * driver's network event hook, and in applications that load them or read
 * what they emit. It is source-compatible with the header of Microsoft's
 * ntosebpfext 0.7.0: the same type, field, enumerator, macro and helper names,
 * with the same values and layouts, and the same split: the GUID objects
 * applications need are in ebpf_netevent_program_attach_type_guids.h.
 *
 * It may be included before or after eBPF for Windows' headers
 * (bpf_helpers.h in programs, ebpf_structs.h / ebpf_api.h in applications),
 * and beside ebpf_ntos_hooks.h.
 */
#ifndef EBPF_NETEVENT_HOOKS_H
#define EBPF_NETEVENT_HOOKS_H

#include <stddef.h>
#include <stdint.h>

/*
 * Identity of the network event hook.
 *
 *   program type  EBPF_PROGRAM_TYPE_NETEVENT  fc4adc85-49c3-4f0a-8393-facce89cde91
 *                 ELF section "netevent_monitor"
 *   attach type   EBPF_ATTACH_TYPE_NETEVENT   68011b08-ab6b-4b46-85e4-67bae1afe741
 *
 * The numeric types BPF_PROG_TYPE_NETEVENT (5) and BPF_ATTACH_TYPE_NETEVENT
 * (10) are enumerators of eBPF for Windows' ebpf_structs.h, not declared here.
 */

/* The events a PktMon provider delivers: the event id (the first 32 bits of
 * the PktMon header) and the type byte of netevent_data_header_t. */
#define NETEVENT_EVENT_TYPE_PKTMON_DROP 100 /* A packet was dropped. */
#define NETEVENT_EVENT_TYPE_PKTMON_FLOW 101 /* A flow was seen. */

/* The version of netevent_data_header_t the driver writes today. */
#define NETEVENT_PKTMON_EVENT_CURRENT_VERSION 1

/* Bytes of the PktMon event header (PKTMON_EVT_STREAM_PACKET_HEADER) between
 * the driver's netevent_data_header_t and the event's payload. */
#define PKTMON_EVENT_HEADER_LENGTH 0x35

/* What data_meta points to (4 bytes): the driver's description of the event. */
typedef struct _netevent_data_header
{
    uint8_t type;     /* NETEVENT_EVENT_TYPE_PKTMON_DROP or _FLOW. */
    uint16_t version; /* NETEVENT_PKTMON_EVENT_CURRENT_VERSION. */
} netevent_data_header_t;

/*
 * The context of a netevent program (24 bytes on x64).
 *
 *   data_meta  netevent_data_header_t, then the PktMon header
 *              (PKTMON_EVENT_HEADER_LENGTH bytes)
 *   data       the event's payload: data_meta + sizeof(netevent_data_header_t)
 *              + PKTMON_EVENT_HEADER_LENGTH
 *   data_end   one past the payload's last byte
 *
 * Programs read the bytes directly after checking bounds against data_end.
 */
typedef struct _netevent_event_md
{
    uint8_t* data_meta;
    uint8_t* data;
    uint8_t* data_end;
} netevent_event_md_t;

/* Which events a link receives (netevent_attach_opts_t.capture_type). */
typedef enum _netevent_capture_type
{
    NeteventCapture_All = 1, /* Drop and flow events. */
    NeteventCapture_Flow,    /* Flow events only (2). */
    NeteventCapture_Drop,    /* Drop events only (3). */
    NeteventCapture_None     /* No events (4). */
} netevent_capture_type_t;

/* The attach parameters of a netevent link (4 bytes). */
typedef struct _netevent_attach_opts
{
    netevent_capture_type_t capture_type;
} netevent_attach_opts_t;

/* The prototype of a netevent program. Its return value is ignored. */
typedef int
netevent_event_hook_t(netevent_event_md_t* context);

/* Program-type helpers. Their ids are above every general helper id. */
#define NETEVENT_EXT_HELPER_FN_BASE 0xFFFF

typedef enum
{
    BPF_FUNC_netevent_push_event = NETEVENT_EXT_HELPER_FN_BASE + 1,
} ebpf_netevent_event_helper_id_t;

/*
 * EBPF_HELPER declares a helper's function-pointer type. eBPF for Windows'
 * bpf_helpers.h defines it unconditionally; when this header comes first it
 * defines its own for the declaration below and removes it again, so that
 * bpf_helpers.h can still define it afterwards.
 */
#ifndef EBPF_HELPER
#define EBPF_HELPER(return_type, name, args) typedef return_type(*name##_t) args
#define EBPF_NETEVENT_HOOKS_OWN_EBPF_HELPER
#endif

/* bpf_netevent_push_event: hands the event in context to the driver's event
 * queue. Returns 0 on success, a negative value on failure. */
EBPF_HELPER(int, bpf_netevent_push_event, (netevent_event_md_t * ctx));

#ifdef EBPF_NETEVENT_HOOKS_OWN_EBPF_HELPER
#undef EBPF_HELPER
#undef EBPF_NETEVENT_HOOKS_OWN_EBPF_HELPER
#endif

#ifndef __doxygen
#define bpf_netevent_push_event ((bpf_netevent_push_event_t)BPF_FUNC_netevent_push_event)
#endif

#endif /* EBPF_NETEVENT_HOOKS_H */
