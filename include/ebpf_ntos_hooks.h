/*
 * ebpf_ntos_hooks.h - eBPF program interface of the ntosebpfext driver.
 * SPDX-License-Identifier: MIT
 *
 * Include this header in eBPF programs (clang -target bpf) that attach to the
 * driver's hooks, and in applications that load them. It is source-compatible
 * with the header of Microsoft's ntosebpfext 0.7.0: the same type, field,
 * enumerator and helper names, with the same values, and the same split:
 * the GUID objects applications need are in
 * ebpf_ntos_program_attach_type_guids.h, not here.
 *
 * It may be included before or after eBPF for Windows' headers
 * (bpf_helpers.h in programs, ebpf_structs.h / ebpf_api.h / libbpf headers in
 * applications).
 */
#ifndef EBPF_NTOS_HOOKS_H
#define EBPF_NTOS_HOOKS_H

#include <stdint.h>

/*
 * Identity of the process hook.
 *
 *   program type  EBPF_PROGRAM_TYPE_PROCESS  22ea7b37-1043-4d0d-b60d-cafa1c7b638e
 *                 ELF section "process"
 *   attach type   EBPF_ATTACH_TYPE_PROCESS   66e20687-9805-4458-a0db-38e220d31685
 *
 * The GUID objects are in ebpf_ntos_program_attach_type_guids.h. The numeric
 * types BPF_PROG_TYPE_PROCESS (6) and BPF_ATTACH_TYPE_PROCESS (11) are
 * enumerators of eBPF for Windows' ebpf_structs.h (0.21 and later): this header
 * does not declare them, so that it can sit beside that header in any order.
 */

/* Bytes of the largest SID (SECURITY_MAX_SID_SIZE): the size of token_sid. */
#define TOKEN_SID_MAX_SIZE 68

/* What happened to the process. */
typedef enum _process_operation
{
    PROCESS_OPERATION_CREATE, /* The process is being created; the program may deny it. */
    PROCESS_OPERATION_DELETE, /* The process has exited; the program's result is ignored. */
} process_operation_t;

/*
 * The context of a process program (144 bytes on x64).
 *
 * command_start..command_end is the program's "packet": the command line of the
 * new process, UTF-16LE, without a terminator. Programs may read it directly
 * after checking bounds against command_end. It is empty on DELETE and when
 * the process has no command line.
 */
typedef struct _process_md
{
    uint8_t* command_start;          /* Start of the command line (UTF-16LE bytes). */
    uint8_t* command_end;            /* One past its last byte. */
    uint64_t process_id;             /* The process; set on CREATE and DELETE. */
    uint64_t parent_process_id;      /* CREATE only. */
    uint64_t creating_process_id;    /* CREATE only: process of the creating thread. */
    uint64_t creating_thread_id;     /* CREATE only: the creating thread. */
    uint64_t creation_time;          /* FILETIME: 100 ns units since 1601-01-01 UTC. */
    uint64_t exit_time;              /* FILETIME; DELETE only. */
    uint32_t process_exit_code;      /* NTSTATUS exit code; DELETE only. */
    process_operation_t operation : 8;
    uint32_t token_sid_size;         /* CREATE only: bytes of token_sid in use (0: none). */
    uint8_t token_sid[TOKEN_SID_MAX_SIZE]; /* CREATE only: user SID of the primary token. */
} process_md_t;

/*
 * A process program. On CREATE, return 0 (STATUS_SUCCESS) or any non-negative
 * value to permit, or a negative NTSTATUS (for example STATUS_ACCESS_DENIED,
 * (int)0xC0000022) to deny: the creation fails with that status and the
 * programs attached after this one do not run. On DELETE the result is
 * ignored and every program runs.
 */
typedef int
process_hook_t(process_md_t* context);

/* Program-type helpers. Their ids are above every general helper id. */
#define PROCESS_EXT_HELPER_FN_BASE 0xFFFF

typedef enum
{
    BPF_FUNC_process_get_image_path = PROCESS_EXT_HELPER_FN_BASE + 1,     /* 0x10000 */
    BPF_FUNC_process_get_account_name = PROCESS_EXT_HELPER_FN_BASE + 2,   /* 0x10001 */
    BPF_FUNC_process_get_account_domain = PROCESS_EXT_HELPER_FN_BASE + 3, /* 0x10002 */
} ebpf_process_helper_id_t;

/*
 * EBPF_HELPER declares a helper's function-pointer type. eBPF for Windows'
 * bpf_helpers.h defines it unconditionally; when this header comes first it
 * defines its own for the three declarations below and removes it again, so
 * that bpf_helpers.h can still define it afterwards.
 */
#ifndef EBPF_HELPER
#define EBPF_HELPER(return_type, name, args) typedef return_type(*name##_t) args
#define EBPF_NTOS_HOOKS_OWN_EBPF_HELPER
#endif

/*
 * All three helpers copy a whole UTF-16LE string (no terminator) into buffer
 * and return the number of bytes copied. If length is smaller than the
 * string, nothing is written and -EINVAL (-22) is returned.
 */

/* The image file name of the process (PS_CREATE_NOTIFY_INFO.ImageFileName).
 * On DELETE there is none: returns 0. */
EBPF_HELPER(int, bpf_process_get_image_path, (process_md_t * context, uint8_t* buffer, uint32_t length));

/* The account name of token_sid. Returns -ENOENT (-2) when there is no SID or
 * it does not resolve. Resolved once per event, shared with the next helper. */
EBPF_HELPER(int, bpf_process_get_account_name, (process_md_t * context, uint8_t* buffer, uint32_t length));

/* The domain of token_sid; same rules as bpf_process_get_account_name. */
EBPF_HELPER(int, bpf_process_get_account_domain, (process_md_t * context, uint8_t* buffer, uint32_t length));

#ifdef EBPF_NTOS_HOOKS_OWN_EBPF_HELPER
#undef EBPF_HELPER
#undef EBPF_NTOS_HOOKS_OWN_EBPF_HELPER
#endif

#ifndef __doxygen
#define bpf_process_get_image_path ((bpf_process_get_image_path_t)BPF_FUNC_process_get_image_path)
#define bpf_process_get_account_name ((bpf_process_get_account_name_t)BPF_FUNC_process_get_account_name)
#define bpf_process_get_account_domain ((bpf_process_get_account_domain_t)BPF_FUNC_process_get_account_domain)
#endif

/*
 * bpf_prog_test_run for process programs: the format of ntosebpfext 0.7.0,
 * whose tools pass the driver's process notify context as ctx_in.
 *
 * ctx_in:  a process_test_run_context_t (at least its 296 bytes; more is
 *          ignored). Its four strings describe data_in: Length is the
 *          string's size in bytes, MaximumLength the size of the buffer the
 *          driver gives it (>= Length); Buffer, the header, process,
 *          create_info, command_start and command_end are ignored.
 * data_in: the four strings, UTF-16LE without terminators, packed back to
 *          back in field order: command line, image path, account name,
 *          account domain. Required (even when every Length is 0); at least
 *          the sum of the four Lengths (more is ignored).
 *          The run is refused (EBPF_INVALID_ARGUMENT) when ctx_in or
 *          data_in is missing or too short, a Length exceeds its
 *          MaximumLength, and, beyond 0.7.0, when a Length is odd,
 *          operation is neither CREATE nor DELETE, or token_sid_size > 68.
 *          Account strings: if account_lookup_done is non-zero they are
 *          final (the helpers return them, or -ENOENT when either is
 *          empty); if it is 0, the first account helper resolves
 *          token_sid, into the given buffers when MaximumLength suffices,
 *          else into buffers of the size the lookup reports; a failed
 *          lookup (no SID, unknown SID) drops both strings.
 * ctx_out: the same layout after the run (0 bytes if ctx_out is smaller
 *          than 296): process_md as the program left it, each string's
 *          Length and MaximumLength (0 and 0 for an empty or dropped one),
 *          account_lookup_done 1 after a lookup; the header, every pointer
 *          and the padding zero.
 * data_out: the four strings after the run, packed as in data_in (0 bytes
 *          if data_out is too small for all of them).
 */

/* A UNICODE_STRING as it sits in process_test_run_context_t (x64). */
typedef struct _process_test_run_string
{
    uint16_t length;         /* offset 0: Length, bytes */
    uint16_t maximum_length; /* offset 2: MaximumLength, bytes */
    uint32_t reserved;       /* offset 4: padding */
    uint64_t buffer;         /* offset 8: Buffer; ignored in, 0 out */
} process_test_run_string_t;

/* ctx_in / ctx_out of a process test run (296 bytes). */
typedef struct _process_test_run_context
{
    uint64_t context_header[8];               /* offset 0: EBPF_CONTEXT_HEADER */
    process_md_t process_md;                  /* offset 64 */
    uint64_t process;                         /* offset 208: PEPROCESS, 0 */
    uint64_t create_info;                     /* offset 216: PPS_CREATE_NOTIFY_INFO, 0 */
    process_test_run_string_t command_line;   /* offset 224 */
    process_test_run_string_t image_file_name; /* offset 240 */
    process_test_run_string_t account_name;   /* offset 256 */
    process_test_run_string_t account_domain; /* offset 272 */
    uint8_t account_lookup_done;              /* offset 288: BOOLEAN */
    uint8_t reserved[7];                      /* offset 289: padding */
} process_test_run_context_t;

#define PROCESS_TEST_RUN_CONTEXT_SIZE 296

/*
 * Identity of the thread and image-load hooks (this driver's own program
 * types; not in ntosebpfext 0.7.0). As eBpfExtensions.md asks of new program
 * types, they have no BPF_PROG_TYPE_* / BPF_ATTACH_TYPE_* number (both are 0)
 * and are named by GUID; the driver registers them in the eBPF store.
 *
 *   program type  EBPF_PROGRAM_TYPE_THREAD      2878b65e-750b-48f4-9ab4-b5eadc377d67
 *                 ELF section "thread"
 *   attach type   EBPF_ATTACH_TYPE_THREAD       2138225a-7ce0-434d-8ef1-6b44c68afa9e
 *   program type  EBPF_PROGRAM_TYPE_IMAGE_LOAD  e7e70e3a-ba71-489f-9e22-b31f6f61a623
 *                 ELF section "image_load"
 *   attach type   EBPF_ATTACH_TYPE_IMAGE_LOAD   5a0c97f6-dfbb-48fc-b5f2-170da0357c31
 */

/* What happened to the thread. */
typedef enum _thread_operation
{
    THREAD_OPERATION_CREATE, /* The thread was created (it has not run yet). */
    THREAD_OPERATION_EXIT,   /* The thread is exiting. */
} thread_operation_t;

/* thread_md_t.flags */
#define THREAD_FLAG_REMOTE 0x1 /* CREATE: the creating thread belongs to another process. */
#define THREAD_FLAG_SYSTEM 0x2 /* A thread of the System process (process id 4). */

/*
 * The context of a thread program (56 bytes). It has no packet. See
 * docs/thread-hook.md for when each field is set.
 */
typedef struct _thread_md
{
    uint64_t process_id;          /* The process that owns the thread. */
    uint64_t thread_id;           /* The thread. */
    uint64_t creating_process_id; /* CREATE: process of the creating thread; 0 on EXIT. */
    uint64_t creating_thread_id;  /* CREATE: the creating thread; 0 on EXIT. */
    uint64_t start_address;       /* The thread's Win32 start address; 0 if it cannot be read. */
    uint32_t exit_status;         /* EXIT: the thread's exit status (NTSTATUS); 0 on CREATE. */
    thread_operation_t operation; /* CREATE or EXIT. */
    uint32_t flags;               /* THREAD_FLAG_*. */
    uint32_t reserved;            /* 0. */
} thread_md_t;

/* A thread program. The result is ignored: thread creation cannot be denied. */
typedef int
thread_hook_t(thread_md_t* context);

/* image_load_md_t.flags (from IMAGE_INFO) */
#define IMAGE_LOAD_FLAG_SYSTEM_MODE 0x1           /* SystemModeImage: a driver. */
#define IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS 0x2    /* ImageMappedToAllPids. */
#define IMAGE_LOAD_FLAG_PARTIAL_MAP 0x4           /* ImagePartialMap. */
#define IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH 0x8 /* MachineTypeMismatch. */

/*
 * The context of an image_load program (56 bytes). image_path_start..
 * image_path_end is the packet: the full image name, UTF-16LE, without a
 * terminator (empty when Windows gives no name). See docs/image-load-hook.md.
 */
typedef struct _image_load_md
{
    uint8_t* image_path_start; /* Start of the image name (UTF-16LE bytes). */
    uint8_t* image_path_end;   /* One past its last byte. */
    uint64_t process_id;       /* The process the image is mapped into; 0 for a driver. */
    uint64_t thread_id;        /* The thread that maps it. */
    uint64_t image_base;       /* IMAGE_INFO.ImageBase. */
    uint64_t image_size;       /* IMAGE_INFO.ImageSize in bytes. */
    uint32_t flags;            /* IMAGE_LOAD_FLAG_*. */
    uint8_t signature_level;   /* IMAGE_INFO.ImageSignatureLevel (SE_SIGNING_LEVEL_*). */
    uint8_t signature_type;    /* IMAGE_INFO.ImageSignatureType (SE_IMAGE_SIGNATURE_TYPE). */
    uint16_t reserved;         /* 0. */
} image_load_md_t;

/* An image_load program. The result is ignored: a load cannot be denied. */
typedef int
image_load_hook_t(image_load_md_t* context);

/*
 * bpf_prog_test_run for thread programs.
 *
 * ctx_in:  a thread_md_t (at least sizeof(thread_md_t) bytes). Optional: no
 *          ctx_in means an all-zero CREATE event. operation must be CREATE or
 *          EXIT, flags only THREAD_FLAG_* bits, reserved 0; otherwise the run
 *          is refused (EBPF_INVALID_ARGUMENT).
 * data_in: none (data_size_in must be 0).
 * ctx_out: the thread_md_t after the run; 0 bytes if ctx_out is smaller.
 * data_out: 0 bytes.
 *
 * bpf_prog_test_run for image_load programs.
 *
 * ctx_in:  an image_load_md_t (at least sizeof(image_load_md_t) bytes;
 *          image_path_start/end are ignored and replaced). Optional: no ctx_in
 *          means all zero. flags only IMAGE_LOAD_FLAG_* bits, signature_level
 *          <= 15, signature_type <= 7, reserved 0; otherwise refused.
 * data_in: the image name, UTF-16LE, no terminator (an even number of bytes,
 *          at most 65534); it becomes the packet. Empty means an empty name.
 * ctx_out: the image_load_md_t after the run with image_path_start/end zeroed;
 *          0 bytes if ctx_out is smaller.
 * data_out: the image name; 0 bytes if data_out is too small.
 */

#endif /* EBPF_NTOS_HOOKS_H */
