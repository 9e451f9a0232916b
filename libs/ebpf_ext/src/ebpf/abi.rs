//! The eBPF for Windows extension ABI (eBPF for Windows 1.4 - 1.5):
//! `ebpf_extension.h`, `ebpf_program_types.h`, `ebpf_windows.h`. Every
//! struct is `repr(C)` with its x64 size and field offsets asserted at
//! compile time; headers are built by `const fn`s that fill version, size
//! (bytes up to the end of the last field) and total_size (`sizeof`).
//!
//! # Why ntsim has its own copy of these types
//!
//! ntsim (the simulated Windows kernel and eBPF core the tests run the
//! driver image in) declares the same structures independently, from the
//! upstream headers, and neither crate depends on the other. That is on
//! purpose: ntsim is the judge of this driver, and a judge that read the
//! driver's own declarations would accept any layout mistake the driver
//! makes (a wrong offset here would be "right" there too). Two copies
//! written from the source of truth can only agree by both being right; the
//! test that compares them pairwise (sizes, alignments, field offsets,
//! GUIDs, constants) is outside both crates: `tests/abi_pairs.rs`.
//!
//! Items mirror C declarations under their C names; the C name each one
//! carries is its documentation (hence `missing_docs` is allowed here).
#![allow(non_camel_case_types, missing_docs)]

use crate::nt::GUID;
use core::ffi::{c_char, c_void};
use core::mem::{offset_of, size_of};

/// `EBPF_PROGRAM_INFO_EXTENSION_IID`: the program-information NPI.
pub const EBPF_PROGRAM_INFO_EXTENSION_IID: GUID = GUID::new(
    0x2934ad50,
    0x2154,
    0x44b6,
    [0x96, 0x22, 0x6c, 0x52, 0x8c, 0x06, 0x84, 0x11],
);

/// `EBPF_HOOK_EXTENSION_IID`: the hook (attach) NPI.
pub const EBPF_HOOK_EXTENSION_IID: GUID = GUID::new(
    0x5d564054,
    0x2736,
    0x406d,
    [0x8b, 0x22, 0x12, 0xbc, 0xff, 0xaf, 0x0a, 0x9f],
);

/// Helper ids above this belong to a program type.
pub const EBPF_MAX_GENERAL_HELPER_FUNCTION: u32 = 0xFFFF;

/// `ebpf_result_t` as the ABI passes it.
pub type ebpf_result_t = u32;
/// `EBPF_SUCCESS`.
pub const EBPF_SUCCESS: ebpf_result_t = 0;

/// A failed `ebpf_result_t`.
///
/// # Invariants
/// The code is not `EBPF_SUCCESS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EbpfError(core::num::NonZeroU32);

/// The result of an operation the eBPF core asked for.
pub type EbpfResult<T = ()> = Result<T, EbpfError>;

impl EbpfError {
    /// `EBPF_INVALID_ARGUMENT`.
    // INVARIANT: non-zero.
    pub const INVALID_ARGUMENT: EbpfError = EbpfError(core::num::NonZeroU32::new(6).unwrap());
    /// `EBPF_NO_MEMORY`.
    // INVARIANT: non-zero.
    pub const NO_MEMORY: EbpfError = EbpfError(core::num::NonZeroU32::new(12).unwrap());
    /// `EBPF_OPERATION_NOT_SUPPORTED`.
    // INVARIANT: non-zero.
    pub const OPERATION_NOT_SUPPORTED: EbpfError =
        EbpfError(core::num::NonZeroU32::new(18).unwrap());

    /// The raw code, for the FFI edge.
    pub const fn code(self) -> ebpf_result_t {
        self.0.get()
    }
}

/// Checks a result a client's function returned.
#[inline]
pub const fn ebpf_check(result: ebpf_result_t) -> EbpfResult {
    match core::num::NonZeroU32::new(result) {
        None => Ok(()),
        // INVARIANT: non-zero.
        Some(code) => Err(EbpfError(code)),
    }
}

/// The raw result, for the FFI edge (`context_create`).
#[inline]
pub const fn into_ebpf_result(result: EbpfResult) -> ebpf_result_t {
    match result {
        Ok(()) => EBPF_SUCCESS,
        Err(e) => e.code(),
    }
}

/// `ebpf_return_type_t::EBPF_RETURN_TYPE_INTEGER`.
pub const EBPF_RETURN_TYPE_INTEGER: u32 = 0;
/// `ebpf_argument_type_t` values.
pub const EBPF_ARGUMENT_TYPE_DONTCARE: u32 = 0;
pub const EBPF_ARGUMENT_TYPE_CONST_SIZE: u32 = 2;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_CTX: u32 = 4;
pub const EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM: u32 = 11;

/// `ebpf_extension_header_t` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ebpf_extension_header_t {
    pub version: u16,
    /// Bytes up to and including the last field of `version`.
    pub size: usize,
    /// `sizeof` the struct: the stride of arrays of it.
    pub total_size: usize,
}

impl ebpf_extension_header_t {
    /// Every `*_CURRENT_VERSION` of the 1.4/1.5 ABI is 1.
    pub const fn v1(size: usize, total_size: usize) -> Self {
        ebpf_extension_header_t {
            version: 1,
            size,
            total_size,
        }
    }
}

/// `ebpf_context_descriptor_t` (16 bytes; offsets into the context, -1 when
/// absent).
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
pub struct ebpf_program_type_descriptor_t {
    pub header: ebpf_extension_header_t,
    pub name: *const c_char,
    pub context_descriptor: *const ebpf_context_descriptor_t,
    pub program_type: GUID,
    pub bpf_prog_type: u32,
    pub is_privileged: c_char,
}
pub const EBPF_PROGRAM_TYPE_DESCRIPTOR_SIZE: usize =
    offset_of!(ebpf_program_type_descriptor_t, is_privileged) + 1;

/// `ebpf_helper_function_prototype_t` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ebpf_helper_function_prototype_t {
    pub header: ebpf_extension_header_t,
    pub helper_id: u32,
    pub name: *const c_char,
    pub return_type: u32,
    pub arguments: [u32; 5],
    /// Bit field: bit 0 `reallocate_packet`.
    pub flags: u8,
    pub implicit_context: bool,
}
pub const EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE: usize =
    offset_of!(ebpf_helper_function_prototype_t, implicit_context) + 1;

/// `ebpf_program_info_t` (64 bytes).
#[repr(C)]
pub struct ebpf_program_info_t {
    pub header: ebpf_extension_header_t,
    pub program_type_descriptor: *const ebpf_program_type_descriptor_t,
    pub count_of_program_type_specific_helpers: u32,
    pub program_type_specific_helper_prototype: *const ebpf_helper_function_prototype_t,
    pub count_of_global_helpers: u32,
    pub global_helper_prototype: *const ebpf_helper_function_prototype_t,
}
pub const EBPF_PROGRAM_INFORMATION_SIZE: usize =
    offset_of!(ebpf_program_info_t, global_helper_prototype) + size_of::<usize>();

/// `ebpf_helper_function_addresses_t` (40 bytes).
#[repr(C)]
pub struct ebpf_helper_function_addresses_t {
    pub header: ebpf_extension_header_t,
    pub helper_function_count: u32,
    pub helper_function_address: *const u64,
}
pub const EBPF_HELPER_FUNCTION_ADDRESSES_SIZE: usize =
    offset_of!(ebpf_helper_function_addresses_t, helper_function_address) + size_of::<usize>();

/// `ebpf_program_context_create_t`.
pub type ebpf_program_context_create_t = unsafe extern "system" fn(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t;

/// `ebpf_program_context_destroy_t`.
pub type ebpf_program_context_destroy_t = unsafe extern "system" fn(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
);

/// `ebpf_program_data_t` (72 bytes).
#[repr(C)]
pub struct ebpf_program_data_t {
    pub header: ebpf_extension_header_t,
    pub program_info: *const ebpf_program_info_t,
    pub program_type_specific_helper_function_addresses: *const ebpf_helper_function_addresses_t,
    pub global_helper_function_addresses: *const ebpf_helper_function_addresses_t,
    pub context_create: Option<ebpf_program_context_create_t>,
    pub context_destroy: Option<ebpf_program_context_destroy_t>,
    pub required_irql: u8,
    pub capabilities: u32,
}
pub const EBPF_PROGRAM_DATA_SIZE: usize = offset_of!(ebpf_program_data_t, capabilities) + 4;

/// `ebpf_attach_provider_data_t` (48 bytes).
#[repr(C)]
pub struct ebpf_attach_provider_data_t {
    pub header: ebpf_extension_header_t,
    pub supported_program_type: GUID,
    pub bpf_attach_type: u32,
    /// `enum bpf_link_type`: UNSPEC 0, PLAIN 1, CGROUP 2, XDP 3.
    pub link_type: u32,
}
pub const EBPF_ATTACH_PROVIDER_DATA_SIZE: usize =
    offset_of!(ebpf_attach_provider_data_t, link_type) + 4;

/// `ebpf_extension_data_t` (48 bytes): the hook client's (a link's)
/// NPI-specific characteristics.
#[repr(C)]
pub struct ebpf_extension_data_t {
    pub header: ebpf_extension_header_t,
    pub data: *const c_void,
    pub data_size: usize,
    pub prog_attach_flags: u64,
}
pub const EBPF_EXTENSION_DATA_MIN_SIZE: usize = offset_of!(ebpf_extension_data_t, data_size) + 8;
/// `EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION` (ebpf_windows.h): the version
/// of a hook client's `ebpf_extension_data_t` header, the only one this
/// driver reads.
pub const EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION: u16 = 1;

/// `ebpf_program_invoke_function_t`.
pub type ebpf_program_invoke_function_t = unsafe extern "system" fn(
    client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t;
/// `ebpf_program_batch_begin_invoke_function_t`.
pub type ebpf_program_batch_begin_invoke_function_t =
    unsafe extern "system" fn(state_size: usize, state: *mut c_void) -> ebpf_result_t;
/// `ebpf_program_batch_invoke_function_t`.
pub type ebpf_program_batch_invoke_function_t = unsafe extern "system" fn(
    client_binding_context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t;
/// `ebpf_program_batch_end_invoke_function_t`.
pub type ebpf_program_batch_end_invoke_function_t =
    unsafe extern "system" fn(state: *mut c_void) -> ebpf_result_t;

/// The head of the client dispatch table: `{u16 version; u16 count;
/// fn function[count]}`; `function[0]` is invoke, then batch begin, batch
/// invoke, batch end (`ebpf_extension_program_dispatch_table_t`, 40 bytes
/// with all four).
#[repr(C)]
pub struct ebpf_extension_dispatch_table_header_t {
    pub version: u16,
    pub count: u16,
}
pub const EBPF_DISPATCH_FUNCTIONS_OFFSET: usize = 8;
/// `EBPF_LINK_DISPATCH_TABLE_VERSION_1` (ebpf_extension.h): the first
/// version of the client dispatch table; later versions only append
/// functions, so any version from this one on is read.
pub const EBPF_LINK_DISPATCH_TABLE_VERSION_1: u16 = 1;

/// `ebpf_execution_context_state_t`: 64 bytes the core keeps per batch.
#[repr(C, align(8))]
pub struct ebpf_execution_context_state_t {
    pub bytes: [u64; 8],
}

/// `EBPF_CONTEXT_HEADER`: eight `u64` the core owns, placed immediately
/// before every program context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ebpf_context_header_t {
    pub context_header: [u64; 8],
}

const _: () = {
    assert!(size_of::<ebpf_extension_header_t>() == 24);
    assert!(size_of::<ebpf_context_descriptor_t>() == 16);
    assert!(size_of::<ebpf_program_type_descriptor_t>() == 64);
    assert!(offset_of!(ebpf_program_type_descriptor_t, name) == 24);
    assert!(offset_of!(ebpf_program_type_descriptor_t, context_descriptor) == 32);
    assert!(offset_of!(ebpf_program_type_descriptor_t, program_type) == 40);
    assert!(offset_of!(ebpf_program_type_descriptor_t, bpf_prog_type) == 56);
    assert!(EBPF_PROGRAM_TYPE_DESCRIPTOR_SIZE == 61);
    assert!(size_of::<ebpf_helper_function_prototype_t>() == 72);
    assert!(offset_of!(ebpf_helper_function_prototype_t, helper_id) == 24);
    assert!(offset_of!(ebpf_helper_function_prototype_t, name) == 32);
    assert!(offset_of!(ebpf_helper_function_prototype_t, return_type) == 40);
    assert!(offset_of!(ebpf_helper_function_prototype_t, arguments) == 44);
    assert!(offset_of!(ebpf_helper_function_prototype_t, flags) == 64);
    assert!(EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE == 66);
    assert!(size_of::<ebpf_program_info_t>() == 64);
    assert!(offset_of!(ebpf_program_info_t, count_of_program_type_specific_helpers) == 32);
    assert!(offset_of!(ebpf_program_info_t, program_type_specific_helper_prototype) == 40);
    assert!(offset_of!(ebpf_program_info_t, count_of_global_helpers) == 48);
    assert!(EBPF_PROGRAM_INFORMATION_SIZE == 64);
    assert!(size_of::<ebpf_helper_function_addresses_t>() == 40);
    assert!(EBPF_HELPER_FUNCTION_ADDRESSES_SIZE == 40);
    assert!(size_of::<ebpf_program_data_t>() == 72);
    assert!(offset_of!(ebpf_program_data_t, program_info) == 24);
    assert!(offset_of!(ebpf_program_data_t, context_create) == 48);
    assert!(offset_of!(ebpf_program_data_t, context_destroy) == 56);
    assert!(offset_of!(ebpf_program_data_t, required_irql) == 64);
    assert!(offset_of!(ebpf_program_data_t, capabilities) == 68);
    assert!(EBPF_PROGRAM_DATA_SIZE == 72);
    assert!(size_of::<ebpf_attach_provider_data_t>() == 48);
    assert!(offset_of!(ebpf_attach_provider_data_t, supported_program_type) == 24);
    assert!(offset_of!(ebpf_attach_provider_data_t, bpf_attach_type) == 40);
    assert!(EBPF_ATTACH_PROVIDER_DATA_SIZE == 48);
    assert!(size_of::<ebpf_extension_data_t>() == 48);
    assert!(offset_of!(ebpf_extension_data_t, prog_attach_flags) == 40);
    assert!(size_of::<ebpf_execution_context_state_t>() == 64);
    assert!(size_of::<ebpf_context_header_t>() == 64);
};
