// A second translation unit of the application in app.c: including the GUID
// header here as well must not define the GUIDs twice.
#ifdef NTOS_HEADERS_FIRST
#include "ebpf_ntos_program_attach_type_guids.h"
#include "ebpf_ntos_hooks.h"
#include "ebpf_structs.h"
#else
#include "ebpf_structs.h"
#include "ebpf_ntos_hooks.h"
#include "ebpf_ntos_program_attach_type_guids.h"
#endif

const ebpf_program_type_t*
second_unit_program_type(void)
{
    return &EBPF_PROGRAM_TYPE_PROCESS;
}

const ebpf_attach_type_t*
second_unit_attach_type(void)
{
    return &EBPF_ATTACH_TYPE_PROCESS;
}
