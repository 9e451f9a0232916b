/*
 * ebpf_ntos_program_attach_type_guids.h - the GUIDs of the ntosebpfext
 * driver's program and attach types, for applications.
 * SPDX-License-Identifier: MIT
 *
 * Applications (loaders, tools) include this header to name the process,
 * thread and image-load hooks when they attach programs, for example
 *
 *     ebpf_program_attach(program, &EBPF_ATTACH_TYPE_PROCESS, NULL, 0, &link);
 *
 * eBPF programs do not need it (their ELF section, "process", "thread" or
 * "image_load", names the types). Source-compatible with the header of the same name in Microsoft's
 * ntosebpfext 0.7.0: it includes eBPF for Windows' ebpf_windows.h for the
 * ebpf_program_type_t / ebpf_attach_type_t types, and defines one object of
 * each GUID per image (selectany), so every translation unit may include it.
 *
 * The numeric types BPF_PROG_TYPE_PROCESS (6) and BPF_ATTACH_TYPE_PROCESS (11)
 * are enumerators of eBPF for Windows' ebpf_structs.h, not declared here.
 */
#ifndef EBPF_NTOS_PROGRAM_ATTACH_TYPE_GUIDS_H
#define EBPF_NTOS_PROGRAM_ATTACH_TYPE_GUIDS_H

#include "ebpf_windows.h"

/*
 * One definition per image however many translation units include this:
 * __declspec(selectany) with Microsoft-compatible compilers, a weak symbol
 * with other ELF/Mach-O toolchains.
 */
#if defined(_MSC_VER) || (defined(_WIN32) && !defined(__BPF__) && !defined(__bpf__))
#define EBPF_NTOS_SELECTANY __declspec(selectany)
#else
#define EBPF_NTOS_SELECTANY __attribute__((weak))
#endif

#ifdef __cplusplus
extern "C"
{
#endif

/* Attach type of the process hook: process creation and exit. */
EBPF_NTOS_SELECTANY ebpf_attach_type_t EBPF_ATTACH_TYPE_PROCESS = {
    0x66e20687, 0x9805, 0x4458, {0xa0, 0xdb, 0x38, 0xe2, 0x20, 0xd3, 0x16, 0x85}};

/* Program type of process programs (context process_md_t, ebpf_ntos_hooks.h). */
#define EBPF_PROGRAM_TYPE_PROCESS_GUID                                                 \
    {                                                                                  \
        0x22ea7b37, 0x1043, 0x4d0d, { 0xb6, 0x0d, 0xca, 0xfa, 0x1c, 0x7b, 0x63, 0x8e } \
    }
EBPF_NTOS_SELECTANY ebpf_program_type_t EBPF_PROGRAM_TYPE_PROCESS = EBPF_PROGRAM_TYPE_PROCESS_GUID;

/* Attach type of the thread hook: thread creation and exit. */
EBPF_NTOS_SELECTANY ebpf_attach_type_t EBPF_ATTACH_TYPE_THREAD = {
    0x2138225a, 0x7ce0, 0x434d, {0x8e, 0xf1, 0x6b, 0x44, 0xc6, 0x8a, 0xfa, 0x9e}};

/* Program type of thread programs (context thread_md_t, ebpf_ntos_hooks.h). */
#define EBPF_PROGRAM_TYPE_THREAD_GUID                                                  \
    {                                                                                  \
        0x2878b65e, 0x750b, 0x48f4, { 0x9a, 0xb4, 0xb5, 0xea, 0xdc, 0x37, 0x7d, 0x67 } \
    }
EBPF_NTOS_SELECTANY ebpf_program_type_t EBPF_PROGRAM_TYPE_THREAD = EBPF_PROGRAM_TYPE_THREAD_GUID;

/* Attach type of the image-load hook: images mapped into processes, drivers. */
EBPF_NTOS_SELECTANY ebpf_attach_type_t EBPF_ATTACH_TYPE_IMAGE_LOAD = {
    0x5a0c97f6, 0xdfbb, 0x48fc, {0xb5, 0xf2, 0x17, 0x0d, 0xa0, 0x35, 0x7c, 0x31}};

/* Program type of image_load programs (context image_load_md_t). */
#define EBPF_PROGRAM_TYPE_IMAGE_LOAD_GUID                                              \
    {                                                                                  \
        0xe7e70e3a, 0xba71, 0x489f, { 0x9e, 0x22, 0xb3, 0x1f, 0x6f, 0x61, 0xa6, 0x23 } \
    }
EBPF_NTOS_SELECTANY ebpf_program_type_t EBPF_PROGRAM_TYPE_IMAGE_LOAD = EBPF_PROGRAM_TYPE_IMAGE_LOAD_GUID;

#ifdef __cplusplus
}
#endif

#endif /* EBPF_NTOS_PROGRAM_ATTACH_TYPE_GUIDS_H */
