//! The eBPF for Windows extension ABI as the core (ebpfcore.sys) sees it.
//!
//! Layouts are x64 and follow the upstream headers of microsoft/ebpf-for-windows
//! (`include/ebpf_windows.h`, `include/ebpf_extension.h`,
//! `include/ebpf_program_types.h`, `include/ebpf_result.h`,
//! `include/ebpf_extension_uuids.h`, and the verifier's `ebpf_base.h` for the
//! context descriptor and the helper argument/return enumerations). Every
//! struct carries compile-time size and offset assertions below.
//!
//! C enumerations are `int`-sized; they are modelled as `u32` aliases with
//! constants, because an extension may hand the core any value and the core
//! must be able to read it without undefined behaviour.
//!
//! # Why the driver's declarations are not used here
//!
//! The driver crate declares the same structures (its `ebpf::abi`, `nt`
//! and hook modules), and ntsim deliberately does not depend on it: ntsim
//! is the judge of the driver, and a judge that read the layouts from the
//! driver would accept any mistake the driver makes (a wrong offset there
//! would be right here too). This module, `kernel::types`, the kernel
//! services' structures and `hook` are written independently from the
//! upstream headers, so the two copies can agree only by both being right.
//! The repository's `tests/abi_pairs.rs`, which depends on both crates,
//! compares them pairwise: sizes, alignments, field offsets, GUIDs and
//! constants.
#![allow(non_camel_case_types, non_snake_case, clippy::upper_case_acronyms)]

use crate::kernel::types::GUID;
use std::ffi::{c_char, c_void};
use std::mem::{offset_of, size_of};

// ---------------------------------------------------------------------------
// NPI identifiers and well-known module ids
// ---------------------------------------------------------------------------

/// NpiId of the program-information NPI (`EBPF_PROGRAM_INFO_EXTENSION_IID`).
pub const EBPF_PROGRAM_INFO_EXTENSION_IID: GUID = GUID {
    data1: 0x2934ad50,
    data2: 0x2154,
    data3: 0x44b6,
    data4: [0x96, 0x22, 0x6c, 0x52, 0x8c, 0x06, 0x84, 0x11],
};

/// NpiId of the hook NPI (`EBPF_HOOK_EXTENSION_IID`).
pub const EBPF_HOOK_EXTENSION_IID: GUID = GUID {
    data1: 0x5d564054,
    data2: 0x2736,
    data3: 0x406d,
    data4: [0x8b, 0x22, 0x12, 0xbc, 0xff, 0xaf, 0x0a, 0x9f],
};

/// ModuleId GUID under which the core provides the general helpers
/// (`ebpf_general_helper_function_module_id`).
pub const EBPF_GENERAL_HELPER_FUNCTION_MODULE_ID: GUID = GUID {
    data1: 0x8d2a1d3f,
    data2: 0x9ce6,
    data3: 0x473d,
    data4: [0xb4, 0x8e, 0x17, 0xaa, 0x5c, 0x55, 0x81, 0xfe],
};

/// `GUID_NULL`.
pub const GUID_NULL: GUID = GUID {
    data1: 0,
    data2: 0,
    data3: 0,
    data4: [0; 8],
};

// ---------------------------------------------------------------------------
// Enumerations
// ---------------------------------------------------------------------------

/// `ebpf_result_t` (a C enum).
pub type ebpf_result_t = u32;
pub const EBPF_SUCCESS: ebpf_result_t = 0;
pub const EBPF_VERIFICATION_FAILED: ebpf_result_t = 1;
pub const EBPF_JIT_COMPILATION_FAILED: ebpf_result_t = 2;
pub const EBPF_PROGRAM_LOAD_FAILED: ebpf_result_t = 3;
pub const EBPF_INVALID_FD: ebpf_result_t = 4;
pub const EBPF_INVALID_OBJECT: ebpf_result_t = 5;
pub const EBPF_INVALID_ARGUMENT: ebpf_result_t = 6;
pub const EBPF_OBJECT_NOT_FOUND: ebpf_result_t = 7;
pub const EBPF_OBJECT_ALREADY_EXISTS: ebpf_result_t = 8;
pub const EBPF_FILE_NOT_FOUND: ebpf_result_t = 9;
pub const EBPF_ALREADY_PINNED: ebpf_result_t = 10;
pub const EBPF_NOT_PINNED: ebpf_result_t = 11;
pub const EBPF_NO_MEMORY: ebpf_result_t = 12;
pub const EBPF_PROGRAM_TOO_LARGE: ebpf_result_t = 13;
pub const EBPF_RPC_EXCEPTION: ebpf_result_t = 14;
pub const EBPF_ALREADY_INITIALIZED: ebpf_result_t = 15;
pub const EBPF_ELF_PARSING_FAILED: ebpf_result_t = 16;
pub const EBPF_FAILED: ebpf_result_t = 17;
pub const EBPF_OPERATION_NOT_SUPPORTED: ebpf_result_t = 18;
pub const EBPF_KEY_NOT_FOUND: ebpf_result_t = 19;
pub const EBPF_ACCESS_DENIED: ebpf_result_t = 20;
pub const EBPF_BLOCKED_BY_POLICY: ebpf_result_t = 21;
pub const EBPF_ARITHMETIC_OVERFLOW: ebpf_result_t = 22;
pub const EBPF_EXTENSION_FAILED_TO_LOAD: ebpf_result_t = 23;
pub const EBPF_INSUFFICIENT_BUFFER: ebpf_result_t = 24;
pub const EBPF_NO_MORE_KEYS: ebpf_result_t = 25;
pub const EBPF_KEY_ALREADY_EXISTS: ebpf_result_t = 26;
pub const EBPF_NO_MORE_TAIL_CALLS: ebpf_result_t = 27;
pub const EBPF_PENDING: ebpf_result_t = 28;
pub const EBPF_OUT_OF_SPACE: ebpf_result_t = 29;
pub const EBPF_CANCELED: ebpf_result_t = 30;
pub const EBPF_INVALID_POINTER: ebpf_result_t = 31;
pub const EBPF_TIMEOUT: ebpf_result_t = 32;
pub const EBPF_STALE_ID: ebpf_result_t = 33;
/// The last value in every release of eBPF for Windows up to 1.5.
pub const EBPF_INVALID_STATE: ebpf_result_t = 34;

/// `ebpf_return_type_t` (a C enum, from the verifier's `ebpf_base.h`).
pub type ebpf_return_type_t = u32;
pub const EBPF_RETURN_TYPE_INTEGER: ebpf_return_type_t = 0;
pub const EBPF_RETURN_TYPE_PTR_TO_MAP_VALUE_OR_NULL: ebpf_return_type_t = 1;
pub const EBPF_RETURN_TYPE_INTEGER_OR_NO_RETURN_IF_SUCCEED: ebpf_return_type_t = 2;
pub const EBPF_RETURN_TYPE_UNSUPPORTED: ebpf_return_type_t = 3;
pub const EBPF_RETURN_TYPE_PTR_TO_SOCK_COMMON_OR_NULL: ebpf_return_type_t = 4;
pub const EBPF_RETURN_TYPE_PTR_TO_SOCKET_OR_NULL: ebpf_return_type_t = 5;
pub const EBPF_RETURN_TYPE_PTR_TO_TCP_SOCKET_OR_NULL: ebpf_return_type_t = 6;
pub const EBPF_RETURN_TYPE_PTR_TO_ALLOC_MEM_OR_NULL: ebpf_return_type_t = 7;
pub const EBPF_RETURN_TYPE_PTR_TO_BTF_ID_OR_NULL: ebpf_return_type_t = 8;
pub const EBPF_RETURN_TYPE_PTR_TO_MEM_OR_BTF_ID_OR_NULL: ebpf_return_type_t = 9;
pub const EBPF_RETURN_TYPE_PTR_TO_BTF_ID: ebpf_return_type_t = 10;
pub const EBPF_RETURN_TYPE_PTR_TO_MEM_OR_BTF_ID: ebpf_return_type_t = 11;

/// `ebpf_argument_type_t` (a C enum, from the verifier's `ebpf_base.h`).
pub type ebpf_argument_type_t = u32;
pub const EBPF_ARGUMENT_TYPE_DONTCARE: ebpf_argument_type_t = 0;
pub const EBPF_ARGUMENT_TYPE_ANYTHING: ebpf_argument_type_t = 1;
pub const EBPF_ARGUMENT_TYPE_CONST_SIZE: ebpf_argument_type_t = 2;
pub const EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO: ebpf_argument_type_t = 3;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_CTX: ebpf_argument_type_t = 4;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP: ebpf_argument_type_t = 5;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP_OF_PROGRAMS: ebpf_argument_type_t = 6;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP_KEY: ebpf_argument_type_t = 7;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_MAP_VALUE: ebpf_argument_type_t = 8;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM: ebpf_argument_type_t = 9;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL: ebpf_argument_type_t = 10;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM: ebpf_argument_type_t = 11;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_STACK: ebpf_argument_type_t = 12;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_STACK_OR_NULL: ebpf_argument_type_t = 13;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_CTX_OR_NULL: ebpf_argument_type_t = 14;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL: ebpf_argument_type_t = 15;
// 16 is unused in the verifier that eBPF for Windows 1.4 and 1.5 pin.
pub const EBPF_ARGUMENT_TYPE_PTR_TO_BTF_ID_SOCK_COMMON: ebpf_argument_type_t = 17;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_SPIN_LOCK: ebpf_argument_type_t = 18;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_SOCK_COMMON: ebpf_argument_type_t = 19;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_BTF_ID: ebpf_argument_type_t = 20;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_LONG: ebpf_argument_type_t = 21;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_INT: ebpf_argument_type_t = 22;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_CONST_STR: ebpf_argument_type_t = 23;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_FUNC: ebpf_argument_type_t = 24;
pub const EBPF_ARGUMENT_TYPE_CONST_ALLOC_SIZE_OR_ZERO: ebpf_argument_type_t = 25;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_ALLOC_MEM: ebpf_argument_type_t = 26;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_TIMER: ebpf_argument_type_t = 27;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_PERCPU_BTF_ID: ebpf_argument_type_t = 28;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_READONLY_MEM: ebpf_argument_type_t = 29;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_READONLY_MEM_OR_NULL: ebpf_argument_type_t = 30;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_UNINIT_MAP_VALUE: ebpf_argument_type_t = 31;
pub const EBPF_ARGUMENT_TYPE_CONST_PTR_TO_MAP: ebpf_argument_type_t = 32;
/// 33 in the verifier that eBPF for Windows 1.4 and 1.5 pin.
pub const EBPF_ARGUMENT_TYPE_UNSUPPORTED: ebpf_argument_type_t = 33;

/// `enum bpf_link_type` (ebpf_structs.h).
pub type bpf_link_type = u32;
pub const BPF_LINK_TYPE_UNSPEC: bpf_link_type = 0;
pub const BPF_LINK_TYPE_PLAIN: bpf_link_type = 1;
pub const BPF_LINK_TYPE_CGROUP: bpf_link_type = 2;
pub const BPF_LINK_TYPE_XDP: bpf_link_type = 3;

/// Helper ids up to and including this value are general helpers owned by
/// the core; a program type's own helpers use larger ids.
pub const EBPF_MAX_GENERAL_HELPER_FUNCTION: u32 = 0xFFFF;

/// `EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH`.
pub const EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH: usize = 256;
/// `EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH`.
pub const EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH: usize = 256;

/// `HIGH_LEVEL`: the largest `required_irql` the core accepts.
pub const HIGH_LEVEL: u8 = crate::kernel::types::HIGH_LEVEL;

// ---------------------------------------------------------------------------
// Function pointer types (all Windows x64 calling convention)
// ---------------------------------------------------------------------------

/// `ebpf_program_invoke_function_t`.
pub type ebpf_program_invoke_function_t = unsafe extern "win64" fn(
    extension_client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t;

/// `ebpf_program_batch_begin_invoke_function_t`.
pub type ebpf_program_batch_begin_invoke_function_t =
    unsafe extern "win64" fn(state_size: usize, state: *mut c_void) -> ebpf_result_t;

/// `ebpf_program_batch_invoke_function_t`.
pub type ebpf_program_batch_invoke_function_t = unsafe extern "win64" fn(
    extension_client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t;

/// `ebpf_program_batch_end_invoke_function_t`.
pub type ebpf_program_batch_end_invoke_function_t =
    unsafe extern "win64" fn(state: *mut c_void) -> ebpf_result_t;

/// `ebpf_program_context_create_t`.
pub type ebpf_program_context_create_t = unsafe extern "win64" fn(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t;

/// `ebpf_program_context_destroy_t`.
pub type ebpf_program_context_destroy_t = unsafe extern "win64" fn(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
);

/// A helper function as the core calls it: five 64-bit arguments (r1..r5),
/// 64-bit result (r0).
pub type ebpf_helper_function_t = unsafe extern "win64" fn(u64, u64, u64, u64, u64) -> u64;

/// A helper whose prototype sets `implicit_context`: the core passes the
/// program context (the pointer after the context header) as a sixth argument.
pub type ebpf_helper_function_implicit_context_t =
    unsafe extern "win64" fn(u64, u64, u64, u64, u64, *mut c_void) -> u64;

/// `_ebpf_extension_dispatch_function` (a generic dispatch slot).
pub type ebpf_extension_dispatch_function_t = unsafe extern "win64" fn() -> ebpf_result_t;

// ---------------------------------------------------------------------------
// Structures
// ---------------------------------------------------------------------------

/// `ebpf_extension_header_t` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ebpf_extension_header_t {
    pub version: u16,
    /// Bytes up to and including the last field of this version (no padding).
    pub size: usize,
    /// `sizeof` the structure (with padding).
    pub total_size: usize,
}

/// `ebpf_context_descriptor_t` (16 bytes, no header). An offset of -1 means
/// the field is absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ebpf_context_descriptor_t {
    pub size: i32,
    pub data: i32,
    pub end: i32,
    pub meta: i32,
}

/// `ebpf_program_type_descriptor_t` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_program_type_descriptor_t {
    pub header: ebpf_extension_header_t,
    pub name: *const c_char,
    pub context_descriptor: *const ebpf_context_descriptor_t,
    pub program_type: GUID,
    pub bpf_prog_type: u32,
    pub is_privileged: c_char,
}

/// `ebpf_helper_function_prototype_flags_t`: an MSVC `bool` bitfield, one
/// byte; bit 0 is `reallocate_packet`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ebpf_helper_function_prototype_flags_t {
    pub bits: u8,
}

impl ebpf_helper_function_prototype_flags_t {
    pub const REALLOCATE_PACKET: u8 = 0x01;

    pub const fn new(reallocate_packet: bool) -> Self {
        Self {
            bits: if reallocate_packet {
                Self::REALLOCATE_PACKET
            } else {
                0
            },
        }
    }

    pub const fn reallocate_packet(self) -> bool {
        self.bits & Self::REALLOCATE_PACKET != 0
    }
}

/// `ebpf_helper_function_prototype_t` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_helper_function_prototype_t {
    pub header: ebpf_extension_header_t,
    pub helper_id: u32,
    pub name: *const c_char,
    pub return_type: ebpf_return_type_t,
    pub arguments: [ebpf_argument_type_t; 5],
    pub flags: ebpf_helper_function_prototype_flags_t,
    pub implicit_context: bool,
}

/// `ebpf_program_info_t` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_program_info_t {
    pub header: ebpf_extension_header_t,
    pub program_type_descriptor: *const ebpf_program_type_descriptor_t,
    pub count_of_program_type_specific_helpers: u32,
    pub program_type_specific_helper_prototype: *const ebpf_helper_function_prototype_t,
    pub count_of_global_helpers: u32,
    pub global_helper_prototype: *const ebpf_helper_function_prototype_t,
}

/// `ebpf_helper_function_addresses_t` (40 bytes). Upstream declares the array
/// as `uint64_t*`; the core only reads it, and the ABI is identical.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_helper_function_addresses_t {
    pub header: ebpf_extension_header_t,
    pub helper_function_count: u32,
    pub helper_function_address: *const u64,
}

/// The capabilities word of `ebpf_program_data_t` (a union of a `uint32_t
/// value` and a bitfield struct; 4 bytes). No capability is defined; the core
/// requires 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct program_data_capabilities_t {
    pub value: u32,
}

/// `ebpf_program_data_t` (72 bytes): the program-information provider's
/// `NpiSpecificCharacteristics`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_program_data_t {
    pub header: ebpf_extension_header_t,
    pub program_info: *const ebpf_program_info_t,
    pub program_type_specific_helper_function_addresses: *const ebpf_helper_function_addresses_t,
    pub global_helper_function_addresses: *const ebpf_helper_function_addresses_t,
    pub context_create: Option<ebpf_program_context_create_t>,
    pub context_destroy: Option<ebpf_program_context_destroy_t>,
    pub required_irql: u8,
    pub capabilities: program_data_capabilities_t,
}

/// `ebpf_program_section_info_t` (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_program_section_info_t {
    pub header: ebpf_extension_header_t,
    pub section_name: *const u16,
    pub program_type: *const GUID,
    pub attach_type: *const GUID,
    pub bpf_program_type: u32,
    pub bpf_attach_type: u32,
}

/// `ebpf_attach_provider_data_t` (48 bytes): the hook provider's
/// `NpiSpecificCharacteristics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ebpf_attach_provider_data_t {
    pub header: ebpf_extension_header_t,
    pub supported_program_type: GUID,
    pub bpf_attach_type: u32,
    pub link_type: bpf_link_type,
}

impl ebpf_attach_provider_data_t {
    /// Current-version attach provider data with a correct header.
    pub const fn new(
        supported_program_type: GUID,
        bpf_attach_type: u32,
        link_type: bpf_link_type,
    ) -> Self {
        Self {
            header: EBPF_ATTACH_PROVIDER_DATA_HEADER,
            supported_program_type,
            bpf_attach_type,
            link_type,
        }
    }
}

/// `ebpf_extension_data_t` (48 bytes): the link (hook client)'s
/// `NpiSpecificCharacteristics`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_extension_data_t {
    pub header: ebpf_extension_header_t,
    /// Attach parameters (copied by the core from the user's request), or
    /// NULL when there are none.
    pub data: *const c_void,
    pub data_size: usize,
    pub prog_attach_flags: u64,
}

/// `ebpf_extension_dispatch_table_t`: the generic view of a dispatch table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_extension_dispatch_table_t {
    pub version: u16,
    pub count: u16,
    pub function: [Option<ebpf_extension_dispatch_function_t>; 1],
}

/// `ebpf_extension_program_dispatch_table_t` (40 bytes): the link's client
/// dispatch table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_extension_program_dispatch_table_t {
    pub version: u16,
    pub count: u16,
    pub ebpf_program_invoke_function: Option<ebpf_program_invoke_function_t>,
    pub ebpf_program_batch_begin_invoke_function:
        Option<ebpf_program_batch_begin_invoke_function_t>,
    pub ebpf_program_batch_invoke_function: Option<ebpf_program_batch_invoke_function_t>,
    pub ebpf_program_batch_end_invoke_function: Option<ebpf_program_batch_end_invoke_function_t>,
}

/// `ebpf_execution_context_state_t::id`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union ebpf_execution_context_state_id_t {
    pub thread: u64,
    pub cpu: u32,
}

/// `ebpf_execution_context_state_t::tail_call_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ebpf_execution_context_tail_call_state_t {
    pub next_program: *const c_void,
    pub count: u32,
}

/// `ebpf_execution_context_state_t` (64 bytes): the batch state the core
/// fills in `batch_begin`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ebpf_execution_context_state_t {
    pub epoch_state: [u64; 4],
    pub id: ebpf_execution_context_state_id_t,
    pub current_irql: u8,
    pub tail_call_state: ebpf_execution_context_tail_call_state_t,
}

/// `EBPF_CONTEXT_HEADER`: eight `u64` reserved for the core at the start of
/// every program context. The program (and `invoke`) get a pointer just after it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ebpf_context_header_t {
    pub context_header: [u64; 8],
}

// ---------------------------------------------------------------------------
// Versions and sizes
// ---------------------------------------------------------------------------

/// `EBPF_SIZE_INCLUDING_FIELD` for a field at `offset` of `len` bytes.
const fn end_of(offset: usize, len: usize) -> usize {
    offset + len
}

pub const EBPF_CONTEXT_HEADER_SIZE: usize = size_of::<ebpf_context_header_t>();

pub const EBPF_LINK_DISPATCH_TABLE_VERSION_1: u16 = 1;
pub const EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT: u16 = EBPF_LINK_DISPATCH_TABLE_VERSION_1;
pub const EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_1: u16 = 4;
pub const EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_CURRENT: u16 =
    EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_1;

pub const EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION: u16 = 1;
pub const EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE: usize = end_of(
    offset_of!(ebpf_extension_data_t, prog_attach_flags),
    size_of::<u64>(),
);
pub const EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE: usize = size_of::<ebpf_extension_data_t>();
pub const EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION: ebpf_extension_header_t =
    ebpf_extension_header_t {
        version: EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION,
        size: EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE,
        total_size: EBPF_ATTACH_CLIENT_DATA_VERSION_TOTAL_SIZE,
    };

pub const EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION: u16 = 1;
pub const EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE: usize = end_of(
    offset_of!(ebpf_attach_provider_data_t, link_type),
    size_of::<u32>(),
);
pub const EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_TOTAL_SIZE: usize =
    size_of::<ebpf_attach_provider_data_t>();
pub const EBPF_ATTACH_PROVIDER_DATA_HEADER: ebpf_extension_header_t = ebpf_extension_header_t {
    version: EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION,
    size: EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE,
    total_size: EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_TOTAL_SIZE,
};

pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION: u16 = 1;
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE: usize = end_of(
    offset_of!(ebpf_program_type_descriptor_t, is_privileged),
    size_of::<c_char>(),
);
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_TOTAL_SIZE: usize =
    size_of::<ebpf_program_type_descriptor_t>();
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER: ebpf_extension_header_t = ebpf_extension_header_t {
    version: EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION,
    size: EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE,
    total_size: EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_TOTAL_SIZE,
};

pub const EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION: u16 = 1;
/// Size of a prototype without `flags` (the first accepted size).
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_0: usize = end_of(
    offset_of!(ebpf_helper_function_prototype_t, arguments),
    size_of::<[u32; 5]>(),
);
/// Size of a prototype with `flags` but without `implicit_context`.
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_1: usize = end_of(
    offset_of!(ebpf_helper_function_prototype_t, flags),
    size_of::<ebpf_helper_function_prototype_flags_t>(),
);
/// Size of a current-version prototype (through `implicit_context`).
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_2: usize = end_of(
    offset_of!(ebpf_helper_function_prototype_t, implicit_context),
    size_of::<bool>(),
);
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_SIZE: usize =
    EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_2;
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_TOTAL_SIZE: usize =
    size_of::<ebpf_helper_function_prototype_t>();
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t {
        version: EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION,
        size: EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_SIZE,
        total_size: EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_TOTAL_SIZE,
    };

pub const EBPF_PROGRAM_INFORMATION_CURRENT_VERSION: u16 = 1;
pub const EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE: usize = end_of(
    offset_of!(ebpf_program_info_t, global_helper_prototype),
    size_of::<*const ebpf_helper_function_prototype_t>(),
);
pub const EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_TOTAL_SIZE: usize =
    size_of::<ebpf_program_info_t>();
pub const EBPF_PROGRAM_INFORMATION_HEADER: ebpf_extension_header_t = ebpf_extension_header_t {
    version: EBPF_PROGRAM_INFORMATION_CURRENT_VERSION,
    size: EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE,
    total_size: EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_TOTAL_SIZE,
};

pub const EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION: u16 = 1;
pub const EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE: usize = end_of(
    offset_of!(ebpf_helper_function_addresses_t, helper_function_address),
    size_of::<*const u64>(),
);
pub const EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_TOTAL_SIZE: usize =
    size_of::<ebpf_helper_function_addresses_t>();
pub const EBPF_HELPER_FUNCTION_ADDRESSES_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t {
        version: EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION,
        size: EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE,
        total_size: EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_TOTAL_SIZE,
    };

pub const EBPF_PROGRAM_DATA_CURRENT_VERSION: u16 = 1;
/// Size of program data without `capabilities` (the first accepted size).
pub const EBPF_PROGRAM_DATA_SIZE_0: usize = end_of(
    offset_of!(ebpf_program_data_t, required_irql),
    size_of::<u8>(),
);
/// Size of current-version program data (through `capabilities`).
pub const EBPF_PROGRAM_DATA_SIZE_1: usize = end_of(
    offset_of!(ebpf_program_data_t, capabilities),
    size_of::<program_data_capabilities_t>(),
);
pub const EBPF_PROGRAM_DATA_CURRENT_VERSION_SIZE: usize = EBPF_PROGRAM_DATA_SIZE_1;
pub const EBPF_PROGRAM_DATA_CURRENT_VERSION_TOTAL_SIZE: usize = size_of::<ebpf_program_data_t>();
pub const EBPF_PROGRAM_DATA_HEADER: ebpf_extension_header_t = ebpf_extension_header_t {
    version: EBPF_PROGRAM_DATA_CURRENT_VERSION,
    size: EBPF_PROGRAM_DATA_CURRENT_VERSION_SIZE,
    total_size: EBPF_PROGRAM_DATA_CURRENT_VERSION_TOTAL_SIZE,
};

pub const EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION: u16 = 1;
pub const EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE: usize = end_of(
    offset_of!(ebpf_program_section_info_t, bpf_attach_type),
    size_of::<u32>(),
);
pub const EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_TOTAL_SIZE: usize =
    size_of::<ebpf_program_section_info_t>();
pub const EBPF_PROGRAM_SECTION_INFORMATION_HEADER: ebpf_extension_header_t =
    ebpf_extension_header_t {
        version: EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION,
        size: EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE,
        total_size: EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_TOTAL_SIZE,
    };

/// Header sizes the core accepts, per structure (libs/shared/shared_common.c's
/// `_ebpf_*_supported_size` tables).
pub const ACCEPTED_ATTACH_PROVIDER_DATA_SIZES: &[usize] =
    &[EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE];
pub const ACCEPTED_PROGRAM_TYPE_DESCRIPTOR_SIZES: &[usize] =
    &[EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE];
pub const ACCEPTED_HELPER_FUNCTION_PROTOTYPE_SIZES: &[usize] = &[
    EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_0,
    EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_1,
    EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_2,
];
pub const ACCEPTED_PROGRAM_INFO_SIZES: &[usize] = &[EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE];
pub const ACCEPTED_HELPER_FUNCTION_ADDRESSES_SIZES: &[usize] =
    &[EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE];
pub const ACCEPTED_PROGRAM_DATA_SIZES: &[usize] =
    &[EBPF_PROGRAM_DATA_SIZE_0, EBPF_PROGRAM_DATA_SIZE_1];
pub const ACCEPTED_PROGRAM_SECTION_SIZES: &[usize] =
    &[EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE];

/// The link's client dispatch table as the core builds it: version 1, four
/// functions (invoke, batch begin, batch invoke, batch end).
pub const fn core_dispatch_table(
    invoke: ebpf_program_invoke_function_t,
    batch_begin: ebpf_program_batch_begin_invoke_function_t,
    batch_invoke: ebpf_program_batch_invoke_function_t,
    batch_end: ebpf_program_batch_end_invoke_function_t,
) -> ebpf_extension_program_dispatch_table_t {
    ebpf_extension_program_dispatch_table_t {
        version: EBPF_LINK_DISPATCH_TABLE_VERSION_CURRENT,
        count: EBPF_LINK_DISPATCH_TABLE_FUNCTION_COUNT_CURRENT,
        ebpf_program_invoke_function: Some(invoke),
        ebpf_program_batch_begin_invoke_function: Some(batch_begin),
        ebpf_program_batch_invoke_function: Some(batch_invoke),
        ebpf_program_batch_end_invoke_function: Some(batch_end),
    }
}

// ---------------------------------------------------------------------------
// Layout assertions (x64)
// ---------------------------------------------------------------------------

const _: () = {
    assert!(size_of::<GUID>() == 16);

    assert!(size_of::<ebpf_extension_header_t>() == 24);
    assert!(offset_of!(ebpf_extension_header_t, version) == 0);
    assert!(offset_of!(ebpf_extension_header_t, size) == 8);
    assert!(offset_of!(ebpf_extension_header_t, total_size) == 16);

    assert!(size_of::<ebpf_context_descriptor_t>() == 16);
    assert!(offset_of!(ebpf_context_descriptor_t, data) == 4);
    assert!(offset_of!(ebpf_context_descriptor_t, end) == 8);
    assert!(offset_of!(ebpf_context_descriptor_t, meta) == 12);

    assert!(size_of::<ebpf_program_type_descriptor_t>() == 64);
    assert!(offset_of!(ebpf_program_type_descriptor_t, name) == 24);
    assert!(offset_of!(ebpf_program_type_descriptor_t, context_descriptor) == 32);
    assert!(offset_of!(ebpf_program_type_descriptor_t, program_type) == 40);
    assert!(offset_of!(ebpf_program_type_descriptor_t, bpf_prog_type) == 56);
    assert!(offset_of!(ebpf_program_type_descriptor_t, is_privileged) == 60);
    assert!(EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE == 61);

    assert!(size_of::<ebpf_helper_function_prototype_flags_t>() == 1);
    assert!(size_of::<ebpf_helper_function_prototype_t>() == 72);
    assert!(offset_of!(ebpf_helper_function_prototype_t, helper_id) == 24);
    assert!(offset_of!(ebpf_helper_function_prototype_t, name) == 32);
    assert!(offset_of!(ebpf_helper_function_prototype_t, return_type) == 40);
    assert!(offset_of!(ebpf_helper_function_prototype_t, arguments) == 44);
    assert!(offset_of!(ebpf_helper_function_prototype_t, flags) == 64);
    assert!(offset_of!(ebpf_helper_function_prototype_t, implicit_context) == 65);
    assert!(EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_0 == 64);
    assert!(EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_1 == 65);
    assert!(EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_2 == 66);

    assert!(size_of::<ebpf_program_info_t>() == 64);
    assert!(offset_of!(ebpf_program_info_t, program_type_descriptor) == 24);
    assert!(offset_of!(ebpf_program_info_t, count_of_program_type_specific_helpers) == 32);
    assert!(offset_of!(ebpf_program_info_t, program_type_specific_helper_prototype) == 40);
    assert!(offset_of!(ebpf_program_info_t, count_of_global_helpers) == 48);
    assert!(offset_of!(ebpf_program_info_t, global_helper_prototype) == 56);
    assert!(EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE == 64);

    assert!(size_of::<ebpf_helper_function_addresses_t>() == 40);
    assert!(offset_of!(ebpf_helper_function_addresses_t, helper_function_count) == 24);
    assert!(offset_of!(ebpf_helper_function_addresses_t, helper_function_address) == 32);
    assert!(EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE == 40);

    assert!(size_of::<program_data_capabilities_t>() == 4);
    assert!(size_of::<ebpf_program_data_t>() == 72);
    assert!(offset_of!(ebpf_program_data_t, program_info) == 24);
    assert!(
        offset_of!(
            ebpf_program_data_t,
            program_type_specific_helper_function_addresses
        ) == 32
    );
    assert!(offset_of!(ebpf_program_data_t, global_helper_function_addresses) == 40);
    assert!(offset_of!(ebpf_program_data_t, context_create) == 48);
    assert!(offset_of!(ebpf_program_data_t, context_destroy) == 56);
    assert!(offset_of!(ebpf_program_data_t, required_irql) == 64);
    assert!(offset_of!(ebpf_program_data_t, capabilities) == 68);
    assert!(EBPF_PROGRAM_DATA_SIZE_0 == 65);
    assert!(EBPF_PROGRAM_DATA_SIZE_1 == 72);

    assert!(size_of::<ebpf_program_section_info_t>() == 56);
    assert!(offset_of!(ebpf_program_section_info_t, section_name) == 24);
    assert!(offset_of!(ebpf_program_section_info_t, program_type) == 32);
    assert!(offset_of!(ebpf_program_section_info_t, attach_type) == 40);
    assert!(offset_of!(ebpf_program_section_info_t, bpf_program_type) == 48);
    assert!(offset_of!(ebpf_program_section_info_t, bpf_attach_type) == 52);
    assert!(EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE == 56);

    assert!(size_of::<ebpf_attach_provider_data_t>() == 48);
    assert!(offset_of!(ebpf_attach_provider_data_t, supported_program_type) == 24);
    assert!(offset_of!(ebpf_attach_provider_data_t, bpf_attach_type) == 40);
    assert!(offset_of!(ebpf_attach_provider_data_t, link_type) == 44);
    assert!(EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE == 48);

    assert!(size_of::<ebpf_extension_data_t>() == 48);
    assert!(offset_of!(ebpf_extension_data_t, data) == 24);
    assert!(offset_of!(ebpf_extension_data_t, data_size) == 32);
    assert!(offset_of!(ebpf_extension_data_t, prog_attach_flags) == 40);
    assert!(EBPF_ATTACH_CLIENT_DATA_VERSION_SIZE == 48);

    assert!(size_of::<ebpf_extension_dispatch_table_t>() == 16);
    assert!(offset_of!(ebpf_extension_dispatch_table_t, function) == 8);
    assert!(size_of::<ebpf_extension_program_dispatch_table_t>() == 40);
    assert!(offset_of!(ebpf_extension_program_dispatch_table_t, count) == 2);
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_invoke_function
        ) == 8
    );
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_batch_begin_invoke_function
        ) == 16
    );
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_batch_invoke_function
        ) == 24
    );
    assert!(
        offset_of!(
            ebpf_extension_program_dispatch_table_t,
            ebpf_program_batch_end_invoke_function
        ) == 32
    );
    // function[0] of the generic view is invoke.
    assert!(
        offset_of!(ebpf_extension_dispatch_table_t, function)
            == offset_of!(
                ebpf_extension_program_dispatch_table_t,
                ebpf_program_invoke_function
            )
    );

    assert!(size_of::<ebpf_execution_context_state_t>() == 64);
    assert!(offset_of!(ebpf_execution_context_state_t, id) == 32);
    assert!(offset_of!(ebpf_execution_context_state_t, current_irql) == 40);
    assert!(offset_of!(ebpf_execution_context_state_t, tail_call_state) == 48);
    assert!(size_of::<ebpf_execution_context_tail_call_state_t>() == 16);

    assert!(EBPF_CONTEXT_HEADER_SIZE == 64);
    assert!(size_of::<Option<ebpf_program_context_create_t>>() == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_ids_match_their_registry_spelling() {
        assert_eq!(
            EBPF_PROGRAM_INFO_EXTENSION_IID.to_string(),
            "2934ad50-2154-44b6-9622-6c528c068411"
        );
        assert_eq!(
            EBPF_HOOK_EXTENSION_IID.to_string(),
            "5d564054-2736-406d-8b22-12bcffaf0a9f"
        );
        assert_eq!(
            EBPF_GENERAL_HELPER_FUNCTION_MODULE_ID.to_string(),
            "8d2a1d3f-9ce6-473d-b48e-17aa5c5581fe"
        );
    }

    #[test]
    fn current_headers_carry_version_one_and_sizes() {
        for (h, size, total) in [
            (EBPF_PROGRAM_DATA_HEADER, 72, 72),
            (EBPF_PROGRAM_INFORMATION_HEADER, 64, 64),
            (EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER, 61, 64),
            (EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER, 66, 72),
            (EBPF_HELPER_FUNCTION_ADDRESSES_HEADER, 40, 40),
            (EBPF_PROGRAM_SECTION_INFORMATION_HEADER, 56, 56),
            (EBPF_ATTACH_PROVIDER_DATA_HEADER, 48, 48),
            (EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION, 48, 48),
        ] {
            assert_eq!(h.version, 1);
            assert_eq!((h.size, h.total_size), (size, total));
        }
    }

    #[test]
    fn prototype_flags_bit_zero_is_reallocate_packet() {
        assert!(ebpf_helper_function_prototype_flags_t::new(true).reallocate_packet());
        assert!(!ebpf_helper_function_prototype_flags_t::new(false).reallocate_packet());
        assert!(!ebpf_helper_function_prototype_flags_t { bits: 0x02 }.reallocate_packet());
    }

    unsafe extern "win64" fn invoke(
        _: *const c_void,
        _: *mut c_void,
        r: *mut u32,
    ) -> ebpf_result_t {
        // SAFETY: the test below passes a valid pointer.
        unsafe { *r = 7 };
        EBPF_SUCCESS
    }
    unsafe extern "win64" fn begin(_: usize, _: *mut c_void) -> ebpf_result_t {
        EBPF_SUCCESS
    }
    unsafe extern "win64" fn batch(
        _: *const c_void,
        _: *mut c_void,
        _: *mut u32,
        _: *const c_void,
    ) -> ebpf_result_t {
        EBPF_SUCCESS
    }
    unsafe extern "win64" fn end(_: *mut c_void) -> ebpf_result_t {
        EBPF_SUCCESS
    }

    #[test]
    fn core_dispatch_table_is_version_1_count_4_and_invoke_is_function_0() {
        let table = core_dispatch_table(invoke, begin, batch, end);
        assert_eq!((table.version, table.count), (1, 4));
        // Read it through the generic view, as an extension may.
        let generic = &table as *const _ as *const ebpf_extension_dispatch_table_t;
        // SAFETY: both views are repr(C) with `function[0]` at the offset of
        // invoke (asserted at compile time); `table` lives for this block.
        let f0 = unsafe { (*generic).function[0] }.expect("function[0]");
        // SAFETY: function[0] is `invoke`, whose real signature is
        // ebpf_program_invoke_function_t.
        let f0: ebpf_program_invoke_function_t = unsafe { std::mem::transmute(f0) };
        let mut r = 0u32;
        // SAFETY: `invoke` only writes `r`.
        assert_eq!(
            unsafe { f0(std::ptr::null(), std::ptr::null_mut(), &mut r) },
            EBPF_SUCCESS
        );
        assert_eq!(r, 7);
    }
}
