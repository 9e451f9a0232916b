/*
 * ebpf_windows.h: test stand-in for eBPF for Windows' header of the same name,
 * as much of it as the project's headers and tests use: the GUID type and the
 * program/attach type GUID typedefs.
 *
 * The real header takes GUID from <guiddef.h> under MSVC; applications are
 * built that way. Here GUID is declared with guiddef.h's layout, for clang
 * -target bpf and for the host C compiler the header tests use.
 */
#ifndef EBPF_NTSIM_STANDIN_EBPF_WINDOWS_H
#define EBPF_NTSIM_STANDIN_EBPF_WINDOWS_H

#include <stdint.h>

#ifdef _MSC_VER
#include <guiddef.h>
#else
typedef struct _GUID
{
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID;
#endif

typedef GUID ebpf_program_type_t;
typedef GUID ebpf_attach_type_t;

/* Helper ids above this one belong to the program type. */
#define EBPF_MAX_GENERAL_HELPER_FUNCTION 0xFFFF

#endif
