/*
 * ebpf_netevent_program_attach_type_guids.h - the GUIDs of the
 * neteventebpfext driver's program and attach types, for applications.
 * SPDX-License-Identifier: MIT
 *
 * Applications (loaders, tools) include this header to name the network
 * event hook when they attach programs, for example
 *
 *     netevent_attach_opts_t opts = {NeteventCapture_Drop};
 *     ebpf_program_attach(program, &EBPF_ATTACH_TYPE_NETEVENT, &opts, sizeof(opts), &link);
 *
 * eBPF programs do not need it (their ELF section, "netevent_monitor", names
 * the types). Source-compatible with the header of the same name in
 * Microsoft's ntosebpfext 0.7.0: it includes eBPF for Windows' ebpf_windows.h
 * for the ebpf_program_type_t / ebpf_attach_type_t types, and defines one
 * object of each GUID per image (selectany), so every translation unit may
 * include it.
 */
#ifndef EBPF_NETEVENT_PROGRAM_ATTACH_TYPE_GUIDS_H
#define EBPF_NETEVENT_PROGRAM_ATTACH_TYPE_GUIDS_H

#include "ebpf_windows.h"

/*
 * One definition per image however many translation units include this:
 * __declspec(selectany) with Microsoft-compatible compilers, a weak symbol
 * with other ELF/Mach-O toolchains.
 */
#if defined(_MSC_VER) || (defined(_WIN32) && !defined(__BPF__) && !defined(__bpf__))
#define EBPF_NETEVENT_SELECTANY __declspec(selectany)
#else
#define EBPF_NETEVENT_SELECTANY __attribute__((weak))
#endif

#ifdef __cplusplus
extern "C"
{
#endif

/* Attach type of the network event hook. */
#define EBPF_ATTACH_TYPE_NETEVENT_GUID                                                 \
    {                                                                                  \
        0x68011b08, 0xab6b, 0x4b46, { 0x85, 0xe4, 0x67, 0xba, 0xe1, 0xaf, 0xe7, 0x41 } \
    }
EBPF_NETEVENT_SELECTANY ebpf_attach_type_t EBPF_ATTACH_TYPE_NETEVENT = EBPF_ATTACH_TYPE_NETEVENT_GUID;

/* Program type of netevent programs (context netevent_event_md_t,
 * ebpf_netevent_hooks.h). */
#define EBPF_PROGRAM_TYPE_NETEVENT_GUID                                                \
    {                                                                                  \
        0xfc4adc85, 0x49c3, 0x4f0a, { 0x83, 0x93, 0xfa, 0xcc, 0xe8, 0x9c, 0xde, 0x91 } \
    }
EBPF_NETEVENT_SELECTANY ebpf_program_type_t EBPF_PROGRAM_TYPE_NETEVENT = EBPF_PROGRAM_TYPE_NETEVENT_GUID;

#ifdef __cplusplus
}
#endif

#endif /* EBPF_NETEVENT_PROGRAM_ATTACH_TYPE_GUIDS_H */
