// An application's view of the driver's headers, compiled and run on the
// host by tests/program_headers.rs. It includes eBPF for Windows' structs
// header (the stand-in in ../include) and both of the driver's headers, in
// the order chosen by NTOS_HEADERS_FIRST, in two translation units (this one
// and second_unit.c), and prints what it sees for the test to compare with
// the driver's own values.
#ifdef NTOS_HEADERS_FIRST
#include "ebpf_ntos_hooks.h"
#include "ebpf_ntos_program_attach_type_guids.h"
#include "ebpf_structs.h"
#else
#include "ebpf_structs.h"
#include "ebpf_ntos_hooks.h"
#include "ebpf_ntos_program_attach_type_guids.h"
#endif

#include <stddef.h>
#include <stdio.h>

// Defined in second_unit.c, which includes the headers too.
const ebpf_program_type_t* second_unit_program_type(void);
const ebpf_attach_type_t* second_unit_attach_type(void);

static void
print_guid(const char* name, const GUID* guid)
{
    printf("%s %08x-%04x-%04x-", name, (unsigned)guid->Data1, guid->Data2, guid->Data3);
    for (int i = 0; i < 8; i++) {
        printf(i == 2 ? "-%02x" : "%02x", guid->Data4[i]);
    }
    printf("\n");
}

int
main(void)
{
    print_guid("program_type", &EBPF_PROGRAM_TYPE_PROCESS);
    print_guid("attach_type", &EBPF_ATTACH_TYPE_PROCESS);
    printf(
        "one_definition %d\n",
        second_unit_program_type() == &EBPF_PROGRAM_TYPE_PROCESS &&
            second_unit_attach_type() == &EBPF_ATTACH_TYPE_PROCESS);
    printf("bpf_prog_type %d\n", (int)BPF_PROG_TYPE_PROCESS);
    printf("bpf_attach_type %d\n", (int)BPF_ATTACH_TYPE_PROCESS);
    printf("token_sid_max_size %d\n", TOKEN_SID_MAX_SIZE);
    printf("sizeof_process_md %zu\n", sizeof(process_md_t));
    printf("offset_process_id %zu\n", offsetof(process_md_t, process_id));
    printf("offset_creation_time %zu\n", offsetof(process_md_t, creation_time));
    printf("offset_process_exit_code %zu\n", offsetof(process_md_t, process_exit_code));
    printf("offset_token_sid_size %zu\n", offsetof(process_md_t, token_sid_size));
    printf("offset_token_sid %zu\n", offsetof(process_md_t, token_sid));
    printf("sizeof_token_sid %zu\n", sizeof(((process_md_t*)0)->token_sid));
    printf("operation_delete %d\n", (int)PROCESS_OPERATION_DELETE);
    printf(
        "test_run_context %zu %d %zu %zu %zu %zu %zu %zu %zu\n",
        sizeof(process_test_run_context_t),
        PROCESS_TEST_RUN_CONTEXT_SIZE,
        offsetof(process_test_run_context_t, process_md),
        offsetof(process_test_run_context_t, process),
        offsetof(process_test_run_context_t, command_line),
        offsetof(process_test_run_context_t, image_file_name),
        offsetof(process_test_run_context_t, account_name),
        offsetof(process_test_run_context_t, account_domain),
        offsetof(process_test_run_context_t, account_lookup_done));
    printf(
        "test_run_string %zu %zu %zu\n",
        sizeof(process_test_run_string_t),
        offsetof(process_test_run_string_t, maximum_length),
        offsetof(process_test_run_string_t, buffer));
    printf(
        "helper_ids %#x %#x %#x\n",
        (unsigned)BPF_FUNC_process_get_image_path,
        (unsigned)BPF_FUNC_process_get_account_name,
        (unsigned)BPF_FUNC_process_get_account_domain);
    print_guid("thread_program_type", &EBPF_PROGRAM_TYPE_THREAD);
    print_guid("thread_attach_type", &EBPF_ATTACH_TYPE_THREAD);
    print_guid("image_load_program_type", &EBPF_PROGRAM_TYPE_IMAGE_LOAD);
    print_guid("image_load_attach_type", &EBPF_ATTACH_TYPE_IMAGE_LOAD);
    printf(
        "sizeof_thread_md %zu start_address %zu exit_status %zu operation %zu flags %zu\n",
        sizeof(thread_md_t),
        offsetof(thread_md_t, start_address),
        offsetof(thread_md_t, exit_status),
        offsetof(thread_md_t, operation),
        offsetof(thread_md_t, flags));
    printf(
        "thread_values %d %d %d %d\n",
        (int)THREAD_OPERATION_CREATE,
        (int)THREAD_OPERATION_EXIT,
        THREAD_FLAG_REMOTE,
        THREAD_FLAG_SYSTEM);
    printf(
        "sizeof_image_load_md %zu process_id %zu image_base %zu image_size %zu flags %zu "
        "signature_level %zu signature_type %zu\n",
        sizeof(image_load_md_t),
        offsetof(image_load_md_t, process_id),
        offsetof(image_load_md_t, image_base),
        offsetof(image_load_md_t, image_size),
        offsetof(image_load_md_t, flags),
        offsetof(image_load_md_t, signature_level),
        offsetof(image_load_md_t, signature_type));
    printf(
        "image_load_flags %d %d %d %d\n",
        IMAGE_LOAD_FLAG_SYSTEM_MODE,
        IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS,
        IMAGE_LOAD_FLAG_PARTIAL_MAP,
        IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH);
    return 0;
}
