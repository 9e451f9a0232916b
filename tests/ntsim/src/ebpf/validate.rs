//! What the eBPF for Windows core checks in an extension's data, and what it
//! copies out of it.
//!
//! Sources (microsoft/ebpf-for-windows): the acceptance rules are those of
//! `libs/shared/shared_common.c` (`ebpf_validate_program_data`,
//! `ebpf_validate_program_info`, `ebpf_validate_helper_function_prototype_array`,
//! `ebpf_validate_attach_provider_data`, `_ebpf_validate_extension_object_header`)
//! plus the extra checks of the program-information NMR client in
//! `libs/execution_context/ebpf_program.c` (`required_irql <= HIGH_LEVEL`,
//! `capabilities == 0`, helper address counts equal to prototype counts) and of
//! the link's NMR client in `libs/execution_context/ebpf_link.c`
//! (`_ebpf_link_client_attach_provider`). What is copied follows
//! `ebpf_duplicate_program_data` in the shared framework.
//!
//! Two deliberate choices, both where the core itself is memory-unsafe:
//! - The core validates a helper prototype array with element 0's
//!   `total_size` as the stride but copies it with element 0's `size` rounded
//!   up to 8 (`EBPF_PAD_8`). When the two differ, the copy reads elements the
//!   validation never looked at. ntsim checks every element it copies with the
//!   same element rules before following its `name`, and refuses with
//!   [`Object::CopiedHelperPrototype`] where the core would copy unvalidated
//!   (possibly garbage) memory.
//! - A NULL `ModuleId` in a registration instance is refused; the core would
//!   dereference it.
//!
//! [`strict_report`] lists what the core tolerates but is wrong.
//!
//! The builders ([`ProgramDataBuilder`], [`ExtensionDataBuilder`],
//! [`attach_provider_data`]) produce correctly filled structures for host-side
//! tests and for the core's hook client.
//!
//! This file holds the program-information checks and the copy the core
//! keeps of it; by what they validate, the rest is in `validate/`:
//! `prototypes.rs` (helper prototypes and address tables), `attach.rs`
//! (hook provider data, the NMR clients' attach decisions), `strict.rs` (the
//! strict report), `findings.rs` (errors and findings), `builders.rs`.

use super::abi::*;
use crate::kernel::nmr::{MIT_GUID, NPI_MODULEID, NPI_REGISTRATION_INSTANCE};
use crate::kernel::status::{NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE};
use crate::kernel::types::GUID;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::mem::offset_of;
use std::ptr;

mod attach;
mod builders;
mod findings;
mod prototypes;
mod strict;
#[cfg(test)]
mod tests;

pub use attach::*;
pub use builders::*;
pub use findings::*;
use prototypes::*;
pub use strict::*;

// ---------------------------------------------------------------------------
// The owned copy
// ---------------------------------------------------------------------------

/// A helper prototype as the core copied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperPrototype {
    pub helper_id: u32,
    pub name: String,
    pub return_type: ebpf_return_type_t,
    pub arguments: [ebpf_argument_type_t; 5],
    pub reallocate_packet: bool,
    pub implicit_context: bool,
}

/// A helper: its prototype and, when the extension published an address
/// table for its set, its address (same index as the prototype).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperFunction {
    pub prototype: HelperPrototype,
    pub address: Option<u64>,
}

/// The program type descriptor as the core copied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramTypeDescriptor {
    pub name: String,
    pub context_descriptor: ebpf_context_descriptor_t,
    pub program_type: GUID,
    pub bpf_prog_type: u32,
    pub is_privileged: bool,
}

/// An owned deep copy of what the core keeps of a provider's
/// `ebpf_program_data_t`. Nothing in it points into the extension's memory
/// except the function addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInfo {
    pub type_descriptor: ProgramTypeDescriptor,
    pub type_specific_helpers: Vec<HelperFunction>,
    pub global_helpers: Vec<HelperFunction>,
    /// Address of `context_create` (0 when absent).
    pub context_create: u64,
    /// Address of `context_destroy` (0 when absent).
    pub context_destroy: u64,
    pub required_irql: u8,
    /// 0 for size-65 program data (the field is not part of it).
    pub capabilities: u32,
    /// `header.size` of the provider's program data.
    pub program_data_size: usize,
}

impl ProgramInfo {
    pub fn program_type(&self) -> GUID {
        self.type_descriptor.program_type
    }

    /// The extension's helper with this id: a type-specific helper, or a
    /// global override.
    pub fn helper(&self, helper_id: u32) -> Option<&HelperFunction> {
        self.type_specific_helpers
            .iter()
            .chain(self.global_helpers.iter())
            .find(|h| h.prototype.helper_id == helper_id)
    }

    /// `context_create` as a function pointer.
    ///
    /// # Safety
    /// The extension that published the address must still be loaded (its
    /// provider attached), and the address must be a function of type
    /// `ebpf_program_context_create_t`.
    pub unsafe fn context_create_fn(&self) -> Option<ebpf_program_context_create_t> {
        if self.context_create == 0 {
            return None;
        }
        // SAFETY: non-zero, and the caller guarantees it is a live function
        // of this type; function pointers and u64 have the same size on x64.
        Some(unsafe {
            std::mem::transmute::<u64, ebpf_program_context_create_t>(self.context_create)
        })
    }

    /// `context_destroy` as a function pointer.
    ///
    /// # Safety
    /// As for [`ProgramInfo::context_create_fn`], for
    /// `ebpf_program_context_destroy_t`.
    pub unsafe fn context_destroy_fn(&self) -> Option<ebpf_program_context_destroy_t> {
        if self.context_destroy == 0 {
            return None;
        }
        // SAFETY: as in context_create_fn.
        Some(unsafe {
            std::mem::transmute::<u64, ebpf_program_context_destroy_t>(self.context_destroy)
        })
    }
}

/// What the core keeps of a hook provider's `ebpf_attach_provider_data_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachProviderInfo {
    pub supported_program_type: GUID,
    pub bpf_attach_type: u32,
    pub link_type: bpf_link_type,
}

// ---------------------------------------------------------------------------
// Raw reads
// ---------------------------------------------------------------------------

/// `EBPF_PAD_8`.
const fn pad8(x: usize) -> usize {
    (x.wrapping_add(7)) & !7
}

/// Reads a `T` at `base + offset` without alignment requirements.
///
/// # Safety
/// `base + offset .. + size_of::<T>()` must be readable and hold a valid `T`
/// (all types read here are plain integers or raw pointers).
unsafe fn rd<T: Copy>(base: *const u8, offset: usize) -> T {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::read_unaligned(base.wrapping_add(offset) as *const T) }
}

/// # Safety
/// `base` must be readable for 24 bytes.
unsafe fn rd_header(base: *const u8) -> ebpf_extension_header_t {
    // SAFETY: guaranteed by the caller; the header is plain integers.
    unsafe { rd::<ebpf_extension_header_t>(base, 0) }
}

/// # Safety
/// `p` must point to a NUL-terminated string.
unsafe fn rd_cstr(p: *const c_char) -> String {
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `_ebpf_validate_extension_object_header`: version must equal the
/// supported version, size must be one of the accepted sizes.
fn check_header(
    object: Object,
    header: &ebpf_extension_header_t,
    expected_version: u16,
    accepted: &'static [usize],
) -> Result<(), ValidationError> {
    if header.version != expected_version {
        return Err(ValidationError::new(
            object,
            "header.version",
            Rule::Version {
                found: header.version,
                expected: expected_version,
            },
        ));
    }
    if !accepted.contains(&header.size) {
        return Err(ValidationError::new(
            object,
            "header.size",
            Rule::Size {
                found: header.size,
                accepted,
            },
        ));
    }
    Ok(())
}

// Field offsets used for raw reads.
const PD_PROGRAM_INFO: usize = offset_of!(ebpf_program_data_t, program_info);
const PD_SPECIFIC_ADDRESSES: usize = offset_of!(
    ebpf_program_data_t,
    program_type_specific_helper_function_addresses
);
const PD_GLOBAL_ADDRESSES: usize =
    offset_of!(ebpf_program_data_t, global_helper_function_addresses);
const PD_CONTEXT_CREATE: usize = offset_of!(ebpf_program_data_t, context_create);
const PD_CONTEXT_DESTROY: usize = offset_of!(ebpf_program_data_t, context_destroy);
const PD_REQUIRED_IRQL: usize = offset_of!(ebpf_program_data_t, required_irql);
const PD_CAPABILITIES: usize = offset_of!(ebpf_program_data_t, capabilities);
const PI_DESCRIPTOR: usize = offset_of!(ebpf_program_info_t, program_type_descriptor);
const PI_SPECIFIC_COUNT: usize =
    offset_of!(ebpf_program_info_t, count_of_program_type_specific_helpers);
const PI_SPECIFIC: usize = offset_of!(ebpf_program_info_t, program_type_specific_helper_prototype);
const PI_GLOBAL_COUNT: usize = offset_of!(ebpf_program_info_t, count_of_global_helpers);
const PI_GLOBAL: usize = offset_of!(ebpf_program_info_t, global_helper_prototype);
const TD_NAME: usize = offset_of!(ebpf_program_type_descriptor_t, name);
const TD_CONTEXT: usize = offset_of!(ebpf_program_type_descriptor_t, context_descriptor);
const TD_PROGRAM_TYPE: usize = offset_of!(ebpf_program_type_descriptor_t, program_type);
const TD_BPF_PROG_TYPE: usize = offset_of!(ebpf_program_type_descriptor_t, bpf_prog_type);
const TD_IS_PRIVILEGED: usize = offset_of!(ebpf_program_type_descriptor_t, is_privileged);
const HP_ID: usize = offset_of!(ebpf_helper_function_prototype_t, helper_id);
const HP_NAME: usize = offset_of!(ebpf_helper_function_prototype_t, name);
const HP_RETURN: usize = offset_of!(ebpf_helper_function_prototype_t, return_type);
const HP_ARGS: usize = offset_of!(ebpf_helper_function_prototype_t, arguments);
const HP_FLAGS: usize = offset_of!(ebpf_helper_function_prototype_t, flags);
const HP_IMPLICIT: usize = offset_of!(ebpf_helper_function_prototype_t, implicit_context);
const HA_COUNT: usize = offset_of!(ebpf_helper_function_addresses_t, helper_function_count);
const HA_ARRAY: usize = offset_of!(ebpf_helper_function_addresses_t, helper_function_address);

/// A prototype array as the core sees it after validation.
#[derive(Clone, Copy)]
struct PrototypeArray {
    set: HelperSet,
    base: *const u8,
    count: u32,
    /// Element 0's header (only meaningful when count > 0).
    first: ebpf_extension_header_t,
}

impl PrototypeArray {
    fn validated_stride(&self) -> usize {
        self.first.total_size
    }

    fn copied_stride(&self) -> usize {
        pad8(self.first.size)
    }

    /// Whether the core's validation walk visited byte offset `offset`.
    fn validated_at(&self, offset: usize) -> bool {
        let stride = self.validated_stride();
        if stride == 0 {
            return offset == 0;
        }
        offset.is_multiple_of(stride) && offset / stride < self.count as usize
    }

    fn element(&self, stride: usize, index: u32) -> *const u8 {
        self.base.wrapping_add(stride.wrapping_mul(index as usize))
    }
}

#[derive(Clone, Copy)]
struct AddressTable {
    header: ebpf_extension_header_t,
    count: u32,
    array: *const u64,
}

/// Everything the core's checks read, kept for the copy and the report.
#[derive(Clone, Copy)]
struct CoreView {
    data_header: ebpf_extension_header_t,
    info_header: ebpf_extension_header_t,
    descriptor: *const u8,
    descriptor_header: ebpf_extension_header_t,
    name: *const c_char,
    context: ebpf_context_descriptor_t,
    specific: PrototypeArray,
    global: PrototypeArray,
    specific_addresses: Option<AddressTable>,
    global_addresses: Option<AddressTable>,
    context_create: u64,
    context_destroy: u64,
    required_irql: u8,
    capabilities: u32,
}

/// `ebpf_validate_program_data` followed by the program-information client's
/// own checks, in the core's order.
///
/// # Safety
/// See [`validate_program_data`].
unsafe fn core_view(ptr: *const ebpf_program_data_t) -> Result<CoreView, ValidationError> {
    if ptr.is_null() {
        return Err(ValidationError::new(
            Object::ProviderRegistration,
            "NpiSpecificCharacteristics",
            Rule::Null,
        ));
    }
    let data = ptr as *const u8;
    // SAFETY: program data is readable per the contract (header first).
    let data_header = unsafe { rd_header(data) };
    check_header(
        Object::ProgramData,
        &data_header,
        EBPF_PROGRAM_DATA_CURRENT_VERSION,
        ACCEPTED_PROGRAM_DATA_SIZES,
    )?;
    // SAFETY: header.size >= 65 covers every field read here but capabilities.
    let (
        info,
        specific_addresses,
        global_addresses,
        context_create,
        context_destroy,
        required_irql,
    ) = unsafe {
        (
            rd::<*const u8>(data, PD_PROGRAM_INFO),
            rd::<*const u8>(data, PD_SPECIFIC_ADDRESSES),
            rd::<*const u8>(data, PD_GLOBAL_ADDRESSES),
            rd::<u64>(data, PD_CONTEXT_CREATE),
            rd::<u64>(data, PD_CONTEXT_DESTROY),
            rd::<u8>(data, PD_REQUIRED_IRQL),
        )
    };
    let capabilities = if data_header.size >= EBPF_PROGRAM_DATA_SIZE_1 {
        // SAFETY: header.size says the field is present.
        unsafe { rd::<u32>(data, PD_CAPABILITIES) }
    } else {
        0
    };

    let global_addresses = if global_addresses.is_null() {
        None
    } else {
        // SAFETY: non-null and readable per the contract.
        Some(unsafe { check_addresses(HelperSet::Global, global_addresses) }?)
    };
    let specific_addresses = if specific_addresses.is_null() {
        None
    } else {
        // SAFETY: non-null and readable per the contract.
        Some(unsafe { check_addresses(HelperSet::TypeSpecific, specific_addresses) }?)
    };

    // ebpf_validate_program_info
    if info.is_null() {
        return Err(ValidationError::new(
            Object::ProgramData,
            "program_info",
            Rule::Null,
        ));
    }
    // SAFETY: non-null program info is readable for 64 bytes per the contract.
    let (info_header, descriptor, specific_count, specific, global_count, global) = unsafe {
        (
            rd_header(info),
            rd::<*const u8>(info, PI_DESCRIPTOR),
            rd::<u32>(info, PI_SPECIFIC_COUNT),
            rd::<*const u8>(info, PI_SPECIFIC),
            rd::<u32>(info, PI_GLOBAL_COUNT),
            rd::<*const u8>(info, PI_GLOBAL),
        )
    };
    check_header(
        Object::ProgramInfo,
        &info_header,
        EBPF_PROGRAM_INFORMATION_CURRENT_VERSION,
        ACCEPTED_PROGRAM_INFO_SIZES,
    )?;

    // _ebpf_validate_program_type_descriptor
    if descriptor.is_null() {
        return Err(ValidationError::new(
            Object::ProgramInfo,
            "program_type_descriptor",
            Rule::Null,
        ));
    }
    // SAFETY: non-null descriptor is readable for 61 bytes per the contract.
    let (descriptor_header, name, context) = unsafe {
        (
            rd_header(descriptor),
            rd::<*const c_char>(descriptor, TD_NAME),
            rd::<*const u8>(descriptor, TD_CONTEXT),
        )
    };
    check_header(
        Object::ProgramTypeDescriptor,
        &descriptor_header,
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION,
        ACCEPTED_PROGRAM_TYPE_DESCRIPTOR_SIZES,
    )?;
    if name.is_null() {
        return Err(ValidationError::new(
            Object::ProgramTypeDescriptor,
            "name",
            Rule::Null,
        ));
    }
    if context.is_null() {
        return Err(ValidationError::new(
            Object::ProgramTypeDescriptor,
            "context_descriptor",
            Rule::Null,
        ));
    }
    // SAFETY: non-null context descriptor is readable for 16 bytes.
    let context = unsafe { rd::<ebpf_context_descriptor_t>(context, 0) };
    // The core compares `int size` with `sizeof(...)` (size_t): the int is
    // converted to unsigned, so a negative size passes.
    if ((context.size as i64) as u64) < std::mem::size_of::<ebpf_context_descriptor_t>() as u64 {
        return Err(ValidationError::new(
            Object::ContextDescriptor,
            "size",
            Rule::ContextTooSmall {
                found: context.size,
            },
        ));
    }

    // SAFETY: per the contract.
    let specific = unsafe {
        check_prototype_array(
            HelperSet::TypeSpecific,
            "program_type_specific_helper_prototype",
            specific,
            specific_count,
        )
    }?;
    // SAFETY: per the contract.
    let global = unsafe {
        check_prototype_array(
            HelperSet::Global,
            "global_helper_prototype",
            global,
            global_count,
        )
    }?;

    // The program-information client's checks (ebpf_program.c).
    if required_irql > HIGH_LEVEL {
        return Err(ValidationError::new(
            Object::ProgramData,
            "required_irql",
            Rule::IrqlAboveHigh {
                found: required_irql,
            },
        ));
    }
    if capabilities != 0 {
        return Err(ValidationError::new(
            Object::ProgramData,
            "capabilities",
            Rule::CapabilitiesNonZero {
                found: capabilities,
            },
        ));
    }
    for (set, table, prototypes) in [
        (HelperSet::TypeSpecific, specific_addresses, specific_count),
        (HelperSet::Global, global_addresses, global_count),
    ] {
        if let Some(t) = table {
            if t.count != prototypes {
                return Err(ValidationError::new(
                    Object::HelperAddresses(set),
                    "helper_function_count",
                    Rule::CountMismatch {
                        addresses: t.count,
                        prototypes,
                    },
                ));
            }
        }
    }

    Ok(CoreView {
        data_header,
        info_header,
        descriptor,
        descriptor_header,
        name,
        context,
        specific,
        global,
        specific_addresses,
        global_addresses,
        context_create,
        context_destroy,
        required_irql,
        capabilities,
    })
}

/// Checks an extension's program data exactly as the eBPF for Windows core
/// does when a program-information provider attaches, without copying it.
///
/// # Safety
/// As for [`validate_program_data`].
pub unsafe fn check_program_data(ptr: *const ebpf_program_data_t) -> Result<(), ValidationError> {
    // SAFETY: forwarded contract.
    unsafe { core_view(ptr) }.map(|_| ())
}

/// Validates a program-information provider's `NpiSpecificCharacteristics`
/// as the eBPF for Windows core does, and returns an owned deep copy of what
/// the core keeps.
///
/// Reads exactly what the core reads, in its order, and refuses with the
/// first rule broken (the core answers STATUS_INVALID_PARAMETER for each, see
/// [`ValidationError::status`]).
///
/// # Safety
/// `ptr` is NULL or points to program data that, with everything the core
/// follows from it, is readable and not written concurrently during the call:
/// - the program data for `header.size` bytes (at least 24 for the header);
/// - non-NULL address tables (40 bytes) and their `helper_function_count`
///   addresses; program info (64 bytes); the type descriptor (61 bytes) and
///   its context descriptor (16 bytes); the descriptor's `name` a
///   NUL-terminated string;
/// - each prototype array: `count` elements at a stride of element 0's
///   `total_size` (40 bytes each: header and name), and `count` elements at
///   a stride of element 0's `size` rounded up to 8 (that many bytes each);
///   every `name` there that is non-NULL in an element with a valid header is
///   a NUL-terminated string.
///
/// These are the reads the core makes; where Windows would bugcheck on a bad
/// pointer, a violation here is undefined behaviour.
pub unsafe fn validate_program_data(
    ptr: *const ebpf_program_data_t,
) -> Result<ProgramInfo, ValidationError> {
    // SAFETY: forwarded contract.
    let view = unsafe { core_view(ptr) }?;
    let d = view.descriptor;
    // SAFETY: the descriptor (61 bytes) and its name were validated above and
    // are readable per the contract.
    let type_descriptor = unsafe {
        ProgramTypeDescriptor {
            name: rd_cstr(view.name),
            context_descriptor: view.context,
            program_type: rd::<GUID>(d, TD_PROGRAM_TYPE),
            bpf_prog_type: rd::<u32>(d, TD_BPF_PROG_TYPE),
            is_privileged: rd::<c_char>(d, TD_IS_PRIVILEGED) != 0,
        }
    };
    // SAFETY: per the contract.
    let type_specific_helpers =
        unsafe { copy_prototypes(&view.specific, view.specific_addresses.as_ref()) }?;
    // SAFETY: per the contract.
    let global_helpers = unsafe { copy_prototypes(&view.global, view.global_addresses.as_ref()) }?;
    Ok(ProgramInfo {
        type_descriptor,
        type_specific_helpers,
        global_helpers,
        context_create: view.context_create,
        context_destroy: view.context_destroy,
        required_irql: view.required_irql,
        capabilities: view.capabilities,
        program_data_size: view.data_header.size,
    })
}
