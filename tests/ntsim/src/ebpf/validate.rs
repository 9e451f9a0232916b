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
//! The builders at the end ([`ProgramDataBuilder`], [`ExtensionDataBuilder`],
//! [`attach_provider_data`]) produce correctly filled structures for host-side
//! tests and for the core's hook client.

use super::abi::*;
use crate::kernel::nmr::{MIT_GUID, NPI_MODULEID, NPI_REGISTRATION_INSTANCE};
use crate::kernel::status::{NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE};
use crate::kernel::types::GUID;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::mem::offset_of;
use std::ptr;

// ---------------------------------------------------------------------------
// Errors and findings
// ---------------------------------------------------------------------------

/// Which of a program's two helper sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HelperSet {
    /// The program type's own helpers (`program_type_specific_*`).
    TypeSpecific,
    /// Overrides of general helpers (`global_*`).
    Global,
}

/// The structure a rule or finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// The `NPI_REGISTRATION_INSTANCE` of the provider.
    ProviderRegistration,
    ProgramData,
    ProgramInfo,
    ProgramTypeDescriptor,
    ContextDescriptor,
    /// An `ebpf_helper_function_addresses_t`.
    HelperAddresses(HelperSet),
    /// A helper prototype array as a whole.
    HelperPrototypes(HelperSet),
    /// Element `index` of a prototype array, as the core's validation walks
    /// it (stride: element 0's `total_size`).
    HelperPrototype(HelperSet, u32),
    /// Element `index` of a prototype array as the core's copy walks it
    /// (stride: element 0's `size` rounded up to 8), where the validation
    /// did not cover it.
    CopiedHelperPrototype(HelperSet, u32),
    AttachProviderData,
}

/// The rule the core enforces that the data breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A pointer the core requires is NULL.
    Null,
    /// `header.version` is not the one the core supports.
    Version { found: u16, expected: u16 },
    /// `header.size` is not one of the sizes the core accepts.
    Size {
        found: usize,
        accepted: &'static [usize],
    },
    /// `helper_function_count` is 0.
    ZeroCount,
    /// `context_descriptor->size < sizeof(ebpf_context_descriptor_t)`.
    ContextTooSmall { found: i32 },
    /// `required_irql > HIGH_LEVEL`.
    IrqlAboveHigh { found: u8 },
    /// `capabilities != 0`.
    CapabilitiesNonZero { found: u32 },
    /// Helper address count differs from the prototype count.
    CountMismatch { addresses: u32, prototypes: u32 },
    /// `supported_program_type` is `GUID_NULL`.
    NullGuid,
    /// `ModuleId->Type` is not `MIT_GUID`.
    ModuleIdNotGuid { found: u32 },
}

/// Why the core refuses an extension's data: the structure, the field and
/// the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub object: Object,
    pub field: &'static str,
    pub rule: Rule,
}

impl ValidationError {
    fn new(object: Object, field: &'static str, rule: Rule) -> Self {
        Self {
            object,
            field,
            rule,
        }
    }

    /// What the core's ClientAttachProvider returns for this refusal.
    pub fn status(&self) -> NTSTATUS {
        STATUS_INVALID_PARAMETER
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}.{}: {:?}", self.object, self.field, self.rule)
    }
}

impl std::error::Error for ValidationError {}

/// Why a NMR client of the core does not attach to a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachRefusal {
    /// The provider's data is malformed (STATUS_INVALID_PARAMETER).
    Invalid(ValidationError),
    /// The provider serves something else (STATUS_NOINTERFACE): `field` of
    /// the provider holds `found`, the client wants `expected`.
    NoInterface {
        field: &'static str,
        expected: GUID,
        found: GUID,
    },
}

impl AttachRefusal {
    /// The status the core's ClientAttachProvider returns.
    pub fn status(&self) -> NTSTATUS {
        match self {
            AttachRefusal::Invalid(e) => e.status(),
            AttachRefusal::NoInterface { .. } => STATUS_NOINTERFACE,
        }
    }
}

impl fmt::Display for AttachRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachRefusal::Invalid(e) => write!(f, "invalid provider data: {e}"),
            AttachRefusal::NoInterface {
                field,
                expected,
                found,
            } => {
                write!(
                    f,
                    "not this client's provider: {field} is {found}, expected {expected}"
                )
            }
        }
    }
}

impl std::error::Error for AttachRefusal {}

/// Something the core accepts but that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issue {
    /// The core refuses the data; nothing else is reported.
    Refused(ValidationError),
    /// `header.total_size` is 0.
    TotalSizeZero,
    /// `header.total_size` is not `sizeof` the structure of the version that
    /// `header.size` describes.
    TotalSizeNotSizeof {
        found: usize,
        expected: usize,
    },
    /// `header.size` is an older accepted size, not the current version's.
    SizeNotCurrent {
        found: usize,
        current: usize,
    },
    /// The core validates the array with one stride and copies it with another.
    StrideMismatch {
        validated: usize,
        copied: usize,
    },
    /// This element's header differs from element 0's (the core uses element
    /// 0's for the whole array).
    HeaderDiffersFromFirst,
    /// The id appears earlier in the same set.
    DuplicateHelperId {
        id: u32,
        first_index: u32,
    },
    /// A program-type-specific helper uses a general helper id (<= 0xFFFF).
    GeneralIdInTypeSpecific {
        id: u32,
    },
    /// A global override uses an id that is not a general helper id.
    NonGeneralIdInGlobal {
        id: u32,
    },
    /// The context size is negative; the core compares it as unsigned and
    /// accepts it.
    NegativeContextSize {
        found: i32,
    },
    /// A data/end/meta offset is neither -1 nor a pointer inside the context.
    ContextOffsetOutOfRange {
        offset: i32,
        context_size: i32,
    },
    EmptyName,
    NameTooLong {
        len: usize,
        max: usize,
    },
    /// A helper address is 0.
    HelperAddressZero {
        index: u32,
    },
    /// Type-specific prototypes without an address table.
    PrototypesWithoutAddresses {
        count: u32,
    },
    /// Only one of context_create/context_destroy is set.
    ContextFunctionsIncomplete,
    /// A byte past `header.size` that the core's copy reads anyway is non-zero.
    ReadBeyondSize {
        offset: usize,
        value: u8,
    },
    /// The type descriptor's program type differs from the provider's ModuleId.
    ProgramTypeMismatch {
        descriptor: GUID,
        module_id: GUID,
    },
    /// `link_type` is not a known `bpf_link_type`.
    UnknownLinkType {
        found: u32,
    },
}

/// One finding of a strict report: the structure, the field and the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub object: Object,
    pub field: &'static str,
    pub issue: Issue,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}.{}: {:?}", self.object, self.field, self.issue)
    }
}

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

/// `_ebpf_validate_helper_function_addresses` (when the pointer is non-NULL).
///
/// # Safety
/// `p` must be readable for 40 bytes.
unsafe fn check_addresses(set: HelperSet, p: *const u8) -> Result<AddressTable, ValidationError> {
    let object = Object::HelperAddresses(set);
    // SAFETY: the caller guarantees 40 readable bytes.
    let (header, count, array) = unsafe {
        (
            rd_header(p),
            rd::<u32>(p, HA_COUNT),
            rd::<*const u64>(p, HA_ARRAY),
        )
    };
    check_header(
        object,
        &header,
        EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION,
        ACCEPTED_HELPER_FUNCTION_ADDRESSES_SIZES,
    )?;
    if count == 0 {
        return Err(ValidationError::new(
            object,
            "helper_function_count",
            Rule::ZeroCount,
        ));
    }
    if array.is_null() {
        return Err(ValidationError::new(
            object,
            "helper_function_address",
            Rule::Null,
        ));
    }
    Ok(AddressTable {
        header,
        count,
        array,
    })
}

/// The element checks of `_ebpf_validate_helper_function_prototype`.
///
/// # Safety
/// `elem` must be readable for 40 bytes (header and name).
unsafe fn check_prototype(object: Object, elem: *const u8) -> Result<(), ValidationError> {
    // SAFETY: the caller guarantees the header and name are readable.
    let (header, name) = unsafe { (rd_header(elem), rd::<*const c_char>(elem, HP_NAME)) };
    check_header(
        object,
        &header,
        EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION,
        ACCEPTED_HELPER_FUNCTION_PROTOTYPE_SIZES,
    )?;
    if name.is_null() {
        return Err(ValidationError::new(object, "name", Rule::Null));
    }
    Ok(())
}

/// `ebpf_validate_helper_function_prototype_array`: walks `count` elements
/// with element 0's `total_size` as the stride.
///
/// # Safety
/// See [`validate_program_data`].
unsafe fn check_prototype_array(
    set: HelperSet,
    parent_field: &'static str,
    base: *const u8,
    count: u32,
) -> Result<PrototypeArray, ValidationError> {
    let mut array = PrototypeArray {
        set,
        base,
        count,
        first: ebpf_extension_header_t {
            version: 0,
            size: 0,
            total_size: 0,
        },
    };
    if count == 0 {
        return Ok(array);
    }
    if base.is_null() {
        return Err(ValidationError::new(
            Object::ProgramInfo,
            parent_field,
            Rule::Null,
        ));
    }
    // SAFETY: element 0 is readable per the safety contract.
    array.first = unsafe { rd_header(base) };
    for i in 0..count {
        let elem = array.element(array.validated_stride(), i);
        // SAFETY: the contract covers `count` elements at this stride.
        unsafe { check_prototype(Object::HelperPrototype(set, i), elem) }?;
    }
    Ok(array)
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

/// Copies a prototype array the way `_duplicate_helper_function_prototype_array`
/// walks it, refusing elements the validation did not cover and that would
/// not pass it.
///
/// # Safety
/// See [`validate_program_data`].
unsafe fn copy_prototypes(
    array: &PrototypeArray,
    addresses: Option<&AddressTable>,
) -> Result<Vec<HelperFunction>, ValidationError> {
    let stride = array.copied_stride();
    let mut out = Vec::with_capacity(array.count as usize);
    for i in 0..array.count {
        let elem = array.element(stride, i);
        if !array.validated_at(stride.wrapping_mul(i as usize)) {
            // SAFETY: the contract covers `count` elements at the copy stride.
            unsafe { check_prototype(Object::CopiedHelperPrototype(array.set, i), elem) }?;
        }
        // SAFETY: the element is readable for `stride` bytes (>= 64) per the
        // contract, and its name was checked non-NULL above or by validation.
        let prototype = unsafe {
            HelperPrototype {
                helper_id: rd::<u32>(elem, HP_ID),
                name: rd_cstr(rd::<*const c_char>(elem, HP_NAME)),
                return_type: rd::<u32>(elem, HP_RETURN),
                arguments: rd::<[u32; 5]>(elem, HP_ARGS),
                // memcpy of `stride` bytes: flags and implicit_context are
                // copied only when the stride covers them.
                reallocate_packet: stride > HP_FLAGS
                    && rd::<u8>(elem, HP_FLAGS)
                        & ebpf_helper_function_prototype_flags_t::REALLOCATE_PACKET
                        != 0,
                implicit_context: stride > HP_IMPLICIT && rd::<u8>(elem, HP_IMPLICIT) != 0,
            }
        };
        let address = addresses.map(|t| {
            // SAFETY: t.count == array.count (checked) and the contract makes
            // the address array readable for t.count entries.
            unsafe { ptr::read_unaligned(t.array.wrapping_add(i as usize)) }
        });
        out.push(HelperFunction { prototype, address });
    }
    Ok(out)
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

/// `ebpf_validate_attach_provider_data`, returning what the link keeps.
///
/// # Safety
/// `ptr` is NULL or readable for 48 bytes.
pub unsafe fn validate_attach_provider_data(
    ptr: *const ebpf_attach_provider_data_t,
) -> Result<AttachProviderInfo, ValidationError> {
    if ptr.is_null() {
        return Err(ValidationError::new(
            Object::ProviderRegistration,
            "NpiSpecificCharacteristics",
            Rule::Null,
        ));
    }
    // SAFETY: readable per the contract.
    let data = unsafe { ptr::read_unaligned(ptr) };
    check_header(
        Object::AttachProviderData,
        &data.header,
        EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION,
        ACCEPTED_ATTACH_PROVIDER_DATA_SIZES,
    )?;
    if data.supported_program_type == GUID_NULL {
        return Err(ValidationError::new(
            Object::AttachProviderData,
            "supported_program_type",
            Rule::NullGuid,
        ));
    }
    Ok(AttachProviderInfo {
        supported_program_type: data.supported_program_type,
        bpf_attach_type: data.bpf_attach_type,
        link_type: data.link_type,
    })
}

/// The ModuleId checks both NMR clients make: `Type` must be MIT_GUID
/// (otherwise STATUS_INVALID_PARAMETER).
///
/// # Safety
/// `module_id` is NULL or readable for 24 bytes.
unsafe fn module_guid(module_id: *const NPI_MODULEID) -> Result<GUID, ValidationError> {
    if module_id.is_null() {
        return Err(ValidationError::new(
            Object::ProviderRegistration,
            "ModuleId",
            Rule::Null,
        ));
    }
    // SAFETY: readable per the contract.
    let m = unsafe { ptr::read_unaligned(module_id) };
    if m.Type != MIT_GUID {
        return Err(ValidationError::new(
            Object::ProviderRegistration,
            "ModuleId.Type",
            Rule::ModuleIdNotGuid { found: m.Type },
        ));
    }
    Ok(m.Guid)
}

/// The link's attach decision once the provider data is valid: the
/// provider's ModuleId must be the link's attach type and its
/// `supported_program_type` the program's type (STATUS_NOINTERFACE otherwise).
pub fn hook_provider_matches(
    provider_module_guid: &GUID,
    provider: &AttachProviderInfo,
    attach_type: &GUID,
    program_type: &GUID,
) -> Result<(), AttachRefusal> {
    if provider_module_guid != attach_type {
        return Err(AttachRefusal::NoInterface {
            field: "ModuleId.Guid",
            expected: *attach_type,
            found: *provider_module_guid,
        });
    }
    if &provider.supported_program_type != program_type {
        return Err(AttachRefusal::NoInterface {
            field: "supported_program_type",
            expected: *program_type,
            found: provider.supported_program_type,
        });
    }
    Ok(())
}

/// The link (hook client)'s ClientAttachProvider decision, in the order of
/// `_ebpf_link_client_attach_provider`: validate the attach provider data
/// (STATUS_INVALID_PARAMETER), ModuleId type (STATUS_INVALID_PARAMETER),
/// ModuleId GUID == attach type, then `supported_program_type` == program
/// type (STATUS_NOINTERFACE for either).
///
/// # Safety
/// `provider` points to a registration instance whose `ModuleId` and
/// `NpiSpecificCharacteristics` are NULL or readable as their types.
pub unsafe fn hook_client_attach_decision(
    provider: *const NPI_REGISTRATION_INSTANCE,
    attach_type: &GUID,
    program_type: &GUID,
) -> Result<AttachProviderInfo, AttachRefusal> {
    // SAFETY: readable per the contract.
    let reg = unsafe { ptr::read_unaligned(provider) };
    // SAFETY: per the contract.
    let info = unsafe { validate_attach_provider_data(reg.NpiSpecificCharacteristics as *const _) }
        .map_err(AttachRefusal::Invalid)?;
    // SAFETY: per the contract.
    let guid = unsafe { module_guid(reg.ModuleId) }.map_err(AttachRefusal::Invalid)?;
    hook_provider_matches(&guid, &info, attach_type, program_type)?;
    Ok(info)
}

/// The program-information client's ClientAttachProvider decision: ModuleId
/// type (STATUS_INVALID_PARAMETER), ModuleId GUID == the program's type
/// (STATUS_NOINTERFACE), then [`validate_program_data`]
/// (STATUS_INVALID_PARAMETER). Returns the copy the client keeps.
///
/// # Safety
/// `provider` points to a registration instance whose `ModuleId` is NULL or
/// readable, and whose `NpiSpecificCharacteristics` meets the contract of
/// [`validate_program_data`].
pub unsafe fn program_info_client_attach_decision(
    provider: *const NPI_REGISTRATION_INSTANCE,
    program_type: &GUID,
) -> Result<ProgramInfo, AttachRefusal> {
    // SAFETY: readable per the contract.
    let reg = unsafe { ptr::read_unaligned(provider) };
    // SAFETY: per the contract.
    let guid = unsafe { module_guid(reg.ModuleId) }.map_err(AttachRefusal::Invalid)?;
    if &guid != program_type {
        return Err(AttachRefusal::NoInterface {
            field: "ModuleId.Guid",
            expected: *program_type,
            found: guid,
        });
    }
    // SAFETY: per the contract.
    unsafe { validate_program_data(reg.NpiSpecificCharacteristics as *const _) }
        .map_err(AttachRefusal::Invalid)
}

// ---------------------------------------------------------------------------
// Strict report
// ---------------------------------------------------------------------------

/// `sizeof` the structure of the version whose `size` is `size`.
fn prototype_sizeof_for(size: usize) -> usize {
    pad8(size)
}

fn finding(object: Object, field: &'static str, issue: Issue) -> Finding {
    Finding {
        object,
        field,
        issue,
    }
}

fn header_findings(
    out: &mut Vec<Finding>,
    object: Object,
    header: &ebpf_extension_header_t,
    current_size: usize,
    sizeof_for_size: usize,
) {
    if header.total_size == 0 {
        out.push(finding(object, "header.total_size", Issue::TotalSizeZero));
    } else if header.total_size != sizeof_for_size {
        out.push(finding(
            object,
            "header.total_size",
            Issue::TotalSizeNotSizeof {
                found: header.total_size,
                expected: sizeof_for_size,
            },
        ));
    }
    if header.size != current_size {
        out.push(finding(
            object,
            "header.size",
            Issue::SizeNotCurrent {
                found: header.size,
                current: current_size,
            },
        ));
    }
}

fn name_findings(out: &mut Vec<Finding>, object: Object, name: &str, max: usize) {
    if name.is_empty() {
        out.push(finding(object, "name", Issue::EmptyName));
    } else if name.len() >= max {
        out.push(finding(
            object,
            "name",
            Issue::NameTooLong {
                len: name.len(),
                max: max - 1,
            },
        ));
    }
}

/// What the core accepts in this program data but is wrong. When the core
/// refuses the data, the report is that one refusal.
///
/// # Safety
/// As for [`validate_program_data`].
pub unsafe fn strict_report(ptr: *const ebpf_program_data_t) -> Vec<Finding> {
    // SAFETY: forwarded contract.
    let view = match unsafe { core_view(ptr) } {
        Ok(v) => v,
        Err(e) => return vec![finding(e.object, e.field, Issue::Refused(e))],
    };
    // SAFETY: forwarded contract.
    let info = match unsafe { validate_program_data(ptr) } {
        Ok(i) => i,
        Err(e) => return vec![finding(e.object, e.field, Issue::Refused(e))],
    };
    let mut out = Vec::new();

    header_findings(
        &mut out,
        Object::ProgramData,
        &view.data_header,
        EBPF_PROGRAM_DATA_CURRENT_VERSION_SIZE,
        EBPF_PROGRAM_DATA_CURRENT_VERSION_TOTAL_SIZE,
    );
    header_findings(
        &mut out,
        Object::ProgramInfo,
        &view.info_header,
        EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE,
        EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_TOTAL_SIZE,
    );
    header_findings(
        &mut out,
        Object::ProgramTypeDescriptor,
        &view.descriptor_header,
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE,
        EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_TOTAL_SIZE,
    );
    name_findings(
        &mut out,
        Object::ProgramTypeDescriptor,
        &info.type_descriptor.name,
        EBPF_MAX_PROGRAM_DESCRIPTOR_NAME_LENGTH,
    );

    let ctx = view.context;
    if ctx.size < 0 {
        out.push(finding(
            Object::ContextDescriptor,
            "size",
            Issue::NegativeContextSize { found: ctx.size },
        ));
    } else {
        for (field, offset) in [("data", ctx.data), ("end", ctx.end), ("meta", ctx.meta)] {
            let fits = offset >= 0 && (offset as i64) + 8 <= ctx.size as i64;
            if offset != -1 && !fits {
                out.push(finding(
                    Object::ContextDescriptor,
                    field,
                    Issue::ContextOffsetOutOfRange {
                        offset,
                        context_size: ctx.size,
                    },
                ));
            }
        }
    }

    for (table, set) in [
        (view.specific_addresses, HelperSet::TypeSpecific),
        (view.global_addresses, HelperSet::Global),
    ] {
        if let Some(t) = table {
            header_findings(
                &mut out,
                Object::HelperAddresses(set),
                &t.header,
                EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE,
                EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_TOTAL_SIZE,
            );
        }
    }

    for (array, helpers) in [
        (&view.specific, &info.type_specific_helpers),
        (&view.global, &info.global_helpers),
    ] {
        if array.count == 0 {
            continue;
        }
        let set = array.set;
        header_findings(
            &mut out,
            Object::HelperPrototype(set, 0),
            &array.first,
            EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_SIZE,
            prototype_sizeof_for(array.first.size),
        );
        if array.count > 1 && array.validated_stride() != array.copied_stride() {
            out.push(finding(
                Object::HelperPrototypes(set),
                "header.total_size",
                Issue::StrideMismatch {
                    validated: array.validated_stride(),
                    copied: array.copied_stride(),
                },
            ));
        }
        let stride = array.copied_stride();
        let mut seen: HashMap<u32, u32> = HashMap::new();
        for (i, helper) in helpers.iter().enumerate() {
            let i = i as u32;
            let object = Object::HelperPrototype(set, i);
            let elem = array.element(stride, i);
            // SAFETY: the copy above read this element's header under the
            // same contract.
            let header = unsafe { rd_header(elem) };
            if i > 0 && header != array.first {
                out.push(finding(object, "header", Issue::HeaderDiffersFromFirst));
            }
            // A size-65 prototype is copied with 72 bytes: implicit_context
            // (byte 65) is taken although the declared size excludes it.
            if array.first.size <= HP_IMPLICIT && stride > HP_IMPLICIT {
                // SAFETY: the element is readable for `stride` bytes.
                let value = unsafe { rd::<u8>(elem, HP_IMPLICIT) };
                if value != 0 {
                    out.push(finding(
                        object,
                        "implicit_context",
                        Issue::ReadBeyondSize {
                            offset: HP_IMPLICIT,
                            value,
                        },
                    ));
                }
            }
            let p = &helper.prototype;
            name_findings(
                &mut out,
                object,
                &p.name,
                EBPF_MAX_HELPER_FUNCTION_NAME_LENGTH,
            );
            if let Some(&first_index) = seen.get(&p.helper_id) {
                out.push(finding(
                    object,
                    "helper_id",
                    Issue::DuplicateHelperId {
                        id: p.helper_id,
                        first_index,
                    },
                ));
            } else {
                seen.insert(p.helper_id, i);
            }
            match set {
                HelperSet::TypeSpecific if p.helper_id <= EBPF_MAX_GENERAL_HELPER_FUNCTION => out
                    .push(finding(
                        object,
                        "helper_id",
                        Issue::GeneralIdInTypeSpecific { id: p.helper_id },
                    )),
                HelperSet::Global if p.helper_id > EBPF_MAX_GENERAL_HELPER_FUNCTION => {
                    out.push(finding(
                        object,
                        "helper_id",
                        Issue::NonGeneralIdInGlobal { id: p.helper_id },
                    ))
                }
                _ => {}
            }
            if helper.address == Some(0) {
                out.push(finding(
                    Object::HelperAddresses(set),
                    "helper_function_address",
                    Issue::HelperAddressZero { index: i },
                ));
            }
        }
    }
    if view.specific.count > 0 && view.specific_addresses.is_none() {
        out.push(finding(
            Object::ProgramData,
            "program_type_specific_helper_function_addresses",
            Issue::PrototypesWithoutAddresses {
                count: view.specific.count,
            },
        ));
    }
    if (view.context_create == 0) != (view.context_destroy == 0) {
        let field = if view.context_create == 0 {
            "context_create"
        } else {
            "context_destroy"
        };
        out.push(finding(
            Object::ProgramData,
            field,
            Issue::ContextFunctionsIncomplete,
        ));
    }
    out
}

/// [`strict_report`] plus a check that the type descriptor's program type is
/// the provider's ModuleId GUID.
///
/// # Safety
/// As for [`validate_program_data`].
pub unsafe fn strict_report_for_provider(
    ptr: *const ebpf_program_data_t,
    module_guid: &GUID,
) -> Vec<Finding> {
    // SAFETY: forwarded contract.
    let mut out = unsafe { strict_report(ptr) };
    if out.iter().any(|f| matches!(f.issue, Issue::Refused(_))) {
        return out;
    }
    // SAFETY: forwarded contract; the data was just accepted.
    if let Ok(info) = unsafe { validate_program_data(ptr) } {
        if &info.program_type() != module_guid {
            out.push(finding(
                Object::ProgramTypeDescriptor,
                "program_type",
                Issue::ProgramTypeMismatch {
                    descriptor: info.program_type(),
                    module_id: *module_guid,
                },
            ));
        }
    }
    out
}

/// What the core accepts in attach provider data but is wrong.
///
/// # Safety
/// As for [`validate_attach_provider_data`].
pub unsafe fn strict_attach_report(ptr: *const ebpf_attach_provider_data_t) -> Vec<Finding> {
    // SAFETY: forwarded contract.
    let info = match unsafe { validate_attach_provider_data(ptr) } {
        Ok(i) => i,
        Err(e) => return vec![finding(e.object, e.field, Issue::Refused(e))],
    };
    let mut out = Vec::new();
    // SAFETY: validated readable above.
    let header = unsafe { (*ptr).header };
    header_findings(
        &mut out,
        Object::AttachProviderData,
        &header,
        EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE,
        EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_TOTAL_SIZE,
    );
    if info.link_type > BPF_LINK_TYPE_XDP {
        out.push(finding(
            Object::AttachProviderData,
            "link_type",
            Issue::UnknownLinkType {
                found: info.link_type,
            },
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// A heap allocation owned through a raw pointer, so that raw pointers handed
/// to C-shaped structures stay valid while the owner mutates the value.
struct RawBox<T: ?Sized> {
    ptr: *mut T,
}

impl<T: ?Sized> RawBox<T> {
    fn new(b: Box<T>) -> Self {
        Self {
            ptr: Box::into_raw(b),
        }
    }

    fn get(&self) -> &T {
        // SAFETY: `ptr` came from Box::into_raw and is freed only in Drop;
        // `&self` rules out a live `&mut` from get_mut.
        unsafe { &*self.ptr }
    }

    fn get_mut(&mut self) -> &mut T {
        // SAFETY: as in get; `&mut self` makes this the only reference.
        unsafe { &mut *self.ptr }
    }
}

impl<T: ?Sized> Drop for RawBox<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from Box::into_raw and is dropped once.
        drop(unsafe { Box::from_raw(self.ptr) });
    }
}

/// A helper for [`ProgramDataBuilder`].
#[derive(Clone, Debug)]
pub struct HelperSpec {
    pub helper_id: u32,
    pub name: String,
    pub return_type: ebpf_return_type_t,
    pub arguments: [ebpf_argument_type_t; 5],
    pub reallocate_packet: bool,
    pub implicit_context: bool,
    pub address: u64,
}

impl HelperSpec {
    pub fn new(
        helper_id: u32,
        name: &str,
        return_type: ebpf_return_type_t,
        arguments: [ebpf_argument_type_t; 5],
        address: u64,
    ) -> Self {
        Self {
            helper_id,
            name: name.to_string(),
            return_type,
            arguments,
            reallocate_packet: false,
            implicit_context: false,
            address,
        }
    }
}

/// Builds correctly filled program data (every header current) for
/// host-side tests and host-side providers.
#[derive(Clone, Debug)]
pub struct ProgramDataBuilder {
    name: String,
    program_type: GUID,
    bpf_prog_type: u32,
    is_privileged: bool,
    context_descriptor: ebpf_context_descriptor_t,
    type_specific: Vec<HelperSpec>,
    global: Vec<HelperSpec>,
    context_create: Option<ebpf_program_context_create_t>,
    context_destroy: Option<ebpf_program_context_destroy_t>,
    required_irql: u8,
}

impl ProgramDataBuilder {
    pub fn new(
        name: &str,
        program_type: GUID,
        context_descriptor: ebpf_context_descriptor_t,
    ) -> Self {
        Self {
            name: name.to_string(),
            program_type,
            bpf_prog_type: 0,
            is_privileged: false,
            context_descriptor,
            type_specific: Vec::new(),
            global: Vec::new(),
            context_create: None,
            context_destroy: None,
            required_irql: 0,
        }
    }

    pub fn bpf_prog_type(mut self, value: u32) -> Self {
        self.bpf_prog_type = value;
        self
    }

    pub fn privileged(mut self, value: bool) -> Self {
        self.is_privileged = value;
        self
    }

    /// Adds a program-type-specific helper (its prototype and address).
    pub fn helper(mut self, spec: HelperSpec) -> Self {
        self.type_specific.push(spec);
        self
    }

    /// Adds a global helper override.
    pub fn global_helper(mut self, spec: HelperSpec) -> Self {
        self.global.push(spec);
        self
    }

    /// Sets context_create, context_destroy and required_irql together.
    pub fn context_functions(
        mut self,
        create: ebpf_program_context_create_t,
        destroy: ebpf_program_context_destroy_t,
        required_irql: u8,
    ) -> Self {
        self.context_create = Some(create);
        self.context_destroy = Some(destroy);
        self.required_irql = required_irql;
        self
    }

    pub fn build(self) -> OwnedProgramData {
        fn prototypes(
            specs: &[HelperSpec],
            names: &[CString],
        ) -> Box<[ebpf_helper_function_prototype_t]> {
            specs
                .iter()
                .zip(names)
                .map(|(s, n)| ebpf_helper_function_prototype_t {
                    header: EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER,
                    helper_id: s.helper_id,
                    name: n.as_ptr(),
                    return_type: s.return_type,
                    arguments: s.arguments,
                    flags: ebpf_helper_function_prototype_flags_t::new(s.reallocate_packet),
                    implicit_context: s.implicit_context,
                })
                .collect()
        }
        let cstring = |s: &str| CString::new(s).expect("names must not contain NUL");
        let name = cstring(&self.name);
        let specific_names: Vec<CString> = self
            .type_specific
            .iter()
            .map(|s| cstring(&s.name))
            .collect();
        let global_names: Vec<CString> = self.global.iter().map(|s| cstring(&s.name)).collect();

        let context_descriptor = RawBox::new(Box::new(self.context_descriptor));
        let type_descriptor = RawBox::new(Box::new(ebpf_program_type_descriptor_t {
            header: EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER,
            name: name.as_ptr(),
            context_descriptor: context_descriptor.ptr,
            program_type: self.program_type,
            bpf_prog_type: self.bpf_prog_type,
            is_privileged: self.is_privileged as c_char,
        }));
        let specific_prototypes = RawBox::new(prototypes(&self.type_specific, &specific_names));
        let global_prototypes = RawBox::new(prototypes(&self.global, &global_names));
        let specific_values: RawBox<[u64]> =
            RawBox::new(self.type_specific.iter().map(|s| s.address).collect());
        let global_values: RawBox<[u64]> =
            RawBox::new(self.global.iter().map(|s| s.address).collect());
        let table = |values: &RawBox<[u64]>| ebpf_helper_function_addresses_t {
            header: EBPF_HELPER_FUNCTION_ADDRESSES_HEADER,
            helper_function_count: values.get().len() as u32,
            helper_function_address: values.ptr.cast::<u64>(),
        };
        let specific_addresses = RawBox::new(Box::new(table(&specific_values)));
        let global_addresses = RawBox::new(Box::new(table(&global_values)));
        let array_ptr = |b: &RawBox<[ebpf_helper_function_prototype_t]>| {
            if b.get().is_empty() {
                ptr::null()
            } else {
                b.ptr.cast::<ebpf_helper_function_prototype_t>() as *const _
            }
        };
        let program_info = RawBox::new(Box::new(ebpf_program_info_t {
            header: EBPF_PROGRAM_INFORMATION_HEADER,
            program_type_descriptor: type_descriptor.ptr,
            count_of_program_type_specific_helpers: self.type_specific.len() as u32,
            program_type_specific_helper_prototype: array_ptr(&specific_prototypes),
            count_of_global_helpers: self.global.len() as u32,
            global_helper_prototype: array_ptr(&global_prototypes),
        }));
        let program_data = RawBox::new(Box::new(ebpf_program_data_t {
            header: EBPF_PROGRAM_DATA_HEADER,
            program_info: program_info.ptr,
            program_type_specific_helper_function_addresses: if self.type_specific.is_empty() {
                ptr::null()
            } else {
                specific_addresses.ptr
            },
            global_helper_function_addresses: if self.global.is_empty() {
                ptr::null()
            } else {
                global_addresses.ptr
            },
            context_create: self.context_create,
            context_destroy: self.context_destroy,
            required_irql: self.required_irql,
            capabilities: program_data_capabilities_t::default(),
        }));
        OwnedProgramData {
            program_data,
            program_info,
            type_descriptor,
            context_descriptor,
            specific_prototypes,
            global_prototypes,
            specific_addresses,
            global_addresses,
            specific_values,
            global_values,
            _names: (name, specific_names, global_names),
        }
    }
}

/// Program data and everything it points to, owned. Every part can be
/// mutated in place (for negative tests); the pointers between the parts
/// stay valid for the life of the value.
pub struct OwnedProgramData {
    program_data: RawBox<ebpf_program_data_t>,
    program_info: RawBox<ebpf_program_info_t>,
    type_descriptor: RawBox<ebpf_program_type_descriptor_t>,
    context_descriptor: RawBox<ebpf_context_descriptor_t>,
    specific_prototypes: RawBox<[ebpf_helper_function_prototype_t]>,
    global_prototypes: RawBox<[ebpf_helper_function_prototype_t]>,
    specific_addresses: RawBox<ebpf_helper_function_addresses_t>,
    global_addresses: RawBox<ebpf_helper_function_addresses_t>,
    specific_values: RawBox<[u64]>,
    global_values: RawBox<[u64]>,
    _names: (CString, Vec<CString>, Vec<CString>),
}

// SAFETY: every pointer inside points into allocations this value owns (or
// to static functions); nothing is shared with another owner, and mutation
// requires `&mut self`.
unsafe impl Send for OwnedProgramData {}
// SAFETY: `&self` only allows reads.
unsafe impl Sync for OwnedProgramData {}

impl OwnedProgramData {
    /// The value for `NpiSpecificCharacteristics`.
    pub fn as_ptr(&self) -> *const ebpf_program_data_t {
        self.program_data.ptr
    }

    pub fn program_data(&self) -> &ebpf_program_data_t {
        self.program_data.get()
    }
    pub fn program_data_mut(&mut self) -> &mut ebpf_program_data_t {
        self.program_data.get_mut()
    }
    pub fn program_info_mut(&mut self) -> &mut ebpf_program_info_t {
        self.program_info.get_mut()
    }
    pub fn type_descriptor_mut(&mut self) -> &mut ebpf_program_type_descriptor_t {
        self.type_descriptor.get_mut()
    }
    pub fn context_descriptor_mut(&mut self) -> &mut ebpf_context_descriptor_t {
        self.context_descriptor.get_mut()
    }
    /// The prototype array of a set (empty when the set has no helpers).
    pub fn prototypes_mut(&mut self, set: HelperSet) -> &mut [ebpf_helper_function_prototype_t] {
        match set {
            HelperSet::TypeSpecific => self.specific_prototypes.get_mut(),
            HelperSet::Global => self.global_prototypes.get_mut(),
        }
    }
    /// The address table of a set. It is referenced by the program data only
    /// when the set has helpers.
    pub fn addresses_mut(&mut self, set: HelperSet) -> &mut ebpf_helper_function_addresses_t {
        match set {
            HelperSet::TypeSpecific => self.specific_addresses.get_mut(),
            HelperSet::Global => self.global_addresses.get_mut(),
        }
    }
    /// Pointer to a set's address table, whether or not the program data
    /// references it.
    pub fn addresses_ptr(&self, set: HelperSet) -> *const ebpf_helper_function_addresses_t {
        match set {
            HelperSet::TypeSpecific => self.specific_addresses.ptr,
            HelperSet::Global => self.global_addresses.ptr,
        }
    }
    /// The address values of a set.
    pub fn address_values_mut(&mut self, set: HelperSet) -> &mut [u64] {
        match set {
            HelperSet::TypeSpecific => self.specific_values.get_mut(),
            HelperSet::Global => self.global_values.get_mut(),
        }
    }
}

/// Attach provider data with a current header.
pub const fn attach_provider_data(
    supported_program_type: GUID,
    bpf_attach_type: u32,
    link_type: bpf_link_type,
) -> ebpf_attach_provider_data_t {
    ebpf_attach_provider_data_t::new(supported_program_type, bpf_attach_type, link_type)
}

/// Builds the link's client data (`ebpf_extension_data_t`) as the core fills
/// it: header {1, 48, 48}, the attach parameters (a copy; NULL and size 0
/// when there are none), and `prog_attach_flags`.
#[derive(Clone, Debug)]
pub struct ExtensionDataBuilder {
    header: ebpf_extension_header_t,
    params: Vec<u8>,
    prog_attach_flags: u64,
}

impl Default for ExtensionDataBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtensionDataBuilder {
    pub fn new() -> Self {
        Self {
            header: EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION,
            params: Vec::new(),
            prog_attach_flags: 0,
        }
    }

    pub fn attach_params(mut self, params: &[u8]) -> Self {
        self.params = params.to_vec();
        self
    }

    pub fn prog_attach_flags(mut self, flags: u64) -> Self {
        self.prog_attach_flags = flags;
        self
    }

    /// Replaces the header (to test how an extension handles a client that
    /// is not the current core).
    pub fn header(mut self, header: ebpf_extension_header_t) -> Self {
        self.header = header;
        self
    }

    pub fn build(self) -> OwnedExtensionData {
        let params: RawBox<[u8]> = RawBox::new(self.params.into_boxed_slice());
        let len = params.get().len();
        let data = RawBox::new(Box::new(ebpf_extension_data_t {
            header: self.header,
            data: if len == 0 {
                ptr::null()
            } else {
                params.ptr.cast::<c_void>() as *const c_void
            },
            data_size: len,
            prog_attach_flags: self.prog_attach_flags,
        }));
        OwnedExtensionData { data, params }
    }
}

/// A link's client data and the attach parameters it points to, owned.
pub struct OwnedExtensionData {
    data: RawBox<ebpf_extension_data_t>,
    params: RawBox<[u8]>,
}

// SAFETY: the only pointer inside points into `params`, owned by this value.
unsafe impl Send for OwnedExtensionData {}
// SAFETY: `&self` only allows reads.
unsafe impl Sync for OwnedExtensionData {}

impl OwnedExtensionData {
    /// The value for the client's `NpiSpecificCharacteristics`.
    pub fn as_ptr(&self) -> *const ebpf_extension_data_t {
        self.data.ptr
    }
    pub fn data(&self) -> &ebpf_extension_data_t {
        self.data.get()
    }
    pub fn params(&self) -> &[u8] {
        self.params.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::nmr::MIT_IF_LUID;
    use crate::kernel::types::PASSIVE_LEVEL;
    use std::mem::size_of;

    const SAMPLE_TYPE: GUID = GUID {
        data1: 0x6a3b_0e91,
        data2: 0x5c1d,
        data3: 0x4f2e,
        data4: [0x9a, 0x10, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70],
    };
    const SAMPLE_ATTACH: GUID = GUID {
        data1: 0x6a3b_0e92,
        data2: 0x5c1d,
        data3: 0x4f2e,
        data4: [0x9a, 0x10, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x71],
    };
    const OTHER: GUID = GUID {
        data1: 0x1111_2222,
        data2: 0x3333,
        data3: 0x4444,
        data4: [5; 8],
    };
    const SAMPLE_CONTEXT: ebpf_context_descriptor_t = ebpf_context_descriptor_t {
        size: 32,
        data: 0,
        end: 8,
        meta: -1,
    };

    unsafe extern "win64" fn sample_get_value(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        a + 42
    }
    unsafe extern "win64" fn sample_context_id(
        _: u64,
        _: u64,
        _: u64,
        _: u64,
        _: u64,
        ctx: *mut c_void,
    ) -> u64 {
        ctx as u64
    }
    unsafe extern "win64" fn pid_tgid(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
        (7 << 32) | 9
    }
    unsafe extern "win64" fn ctx_create(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *mut *mut c_void,
    ) -> ebpf_result_t {
        EBPF_OPERATION_NOT_SUPPORTED
    }
    unsafe extern "win64" fn ctx_destroy(
        _: *mut c_void,
        _: *mut u8,
        _: *mut usize,
        _: *mut u8,
        _: *mut usize,
    ) {
    }

    fn addr_of_helper(f: ebpf_helper_function_t) -> u64 {
        f as usize as u64
    }

    /// The host-side "sample" program type: two helpers of its own and one
    /// general helper override.
    fn sample() -> OwnedProgramData {
        let implicit =
            ebpf_helper_function_implicit_context_t::from(sample_context_id) as usize as u64;
        ProgramDataBuilder::new("sample", SAMPLE_TYPE, SAMPLE_CONTEXT)
            .bpf_prog_type(999)
            .helper(HelperSpec::new(
                0x10000,
                "sample_get_value",
                EBPF_RETURN_TYPE_INTEGER,
                [EBPF_ARGUMENT_TYPE_ANYTHING, 0, 0, 0, 0],
                addr_of_helper(sample_get_value),
            ))
            .helper(HelperSpec {
                reallocate_packet: true,
                implicit_context: true,
                ..HelperSpec::new(
                    0x10001,
                    "sample_context_id",
                    EBPF_RETURN_TYPE_INTEGER,
                    [EBPF_ARGUMENT_TYPE_DONTCARE; 5],
                    implicit,
                )
            })
            .global_helper(HelperSpec::new(
                19,
                "bpf_get_current_pid_tgid",
                EBPF_RETURN_TYPE_INTEGER,
                [0; 5],
                addr_of_helper(pid_tgid),
            ))
            .context_functions(ctx_create, ctx_destroy, PASSIVE_LEVEL)
            .build()
    }

    fn accept(fx: &OwnedProgramData) -> ProgramInfo {
        // SAFETY: the fixture owns every object it points to, at the layouts
        // (and strides) the contract requires.
        unsafe { validate_program_data(fx.as_ptr()) }.expect("accepted")
    }

    fn refuse(fx: &OwnedProgramData) -> ValidationError {
        // SAFETY: as in accept.
        let e = unsafe { validate_program_data(fx.as_ptr()) }.expect_err("refused");
        // The check alone agrees unless the copy is what refuses.
        if !matches!(e.object, Object::CopiedHelperPrototype(..)) {
            // SAFETY: as above.
            assert_eq!(unsafe { check_program_data(fx.as_ptr()) }, Err(e));
        }
        e
    }

    fn report(fx: &OwnedProgramData) -> Vec<Finding> {
        // SAFETY: as in accept.
        unsafe { strict_report(fx.as_ptr()) }
    }

    fn err(object: Object, field: &'static str, rule: Rule) -> ValidationError {
        ValidationError {
            object,
            field,
            rule,
        }
    }

    /// Lays prototypes out `stride` bytes apart (copying `min(stride, 72)`
    /// bytes of each) in a zeroed, 8-aligned buffer with room for any read
    /// the core makes at either stride.
    fn strided(protos: &[ebpf_helper_function_prototype_t], stride: usize) -> Vec<u64> {
        let bytes = stride * protos.len() + 2 * size_of::<ebpf_helper_function_prototype_t>();
        let mut buf = vec![0u64; bytes.div_ceil(8)];
        let base = buf.as_mut_ptr() as *mut u8;
        for (i, p) in protos.iter().enumerate() {
            let n = stride.min(size_of::<ebpf_helper_function_prototype_t>());
            // SAFETY: the buffer holds stride * len + 144 bytes; `p` is a
            // live prototype of 72 bytes and n <= 72.
            unsafe {
                ptr::copy_nonoverlapping(p as *const _ as *const u8, base.add(i * stride), n)
            };
        }
        buf
    }

    // ----- acceptance and copy ------------------------------------------

    #[test]
    fn sample_program_data_validates_and_is_copied() {
        let fx = sample();
        let info = accept(&fx);
        assert_eq!(info.type_descriptor.name, "sample");
        assert_eq!(info.type_descriptor.context_descriptor, SAMPLE_CONTEXT);
        assert_eq!(info.program_type(), SAMPLE_TYPE);
        assert_eq!(info.type_descriptor.bpf_prog_type, 999);
        assert!(!info.type_descriptor.is_privileged);
        assert_eq!(info.required_irql, PASSIVE_LEVEL);
        assert_eq!(info.capabilities, 0);
        assert_eq!(info.program_data_size, 72);
        assert_eq!(
            info.context_create,
            ctx_create as ebpf_program_context_create_t as usize as u64
        );
        assert_eq!(
            info.context_destroy,
            ctx_destroy as ebpf_program_context_destroy_t as usize as u64
        );

        assert_eq!(info.type_specific_helpers.len(), 2);
        let h0 = &info.type_specific_helpers[0];
        assert_eq!(
            h0.prototype,
            HelperPrototype {
                helper_id: 0x10000,
                name: "sample_get_value".into(),
                return_type: EBPF_RETURN_TYPE_INTEGER,
                arguments: [EBPF_ARGUMENT_TYPE_ANYTHING, 0, 0, 0, 0],
                reallocate_packet: false,
                implicit_context: false,
            }
        );
        let h1 = &info.type_specific_helpers[1].prototype;
        assert_eq!(
            (h1.helper_id, h1.name.as_str()),
            (0x10001, "sample_context_id")
        );
        assert!(h1.reallocate_packet && h1.implicit_context);
        assert_eq!(info.global_helpers.len(), 1);
        assert_eq!(info.global_helpers[0].prototype.helper_id, 19);
        assert_eq!(
            info.helper(19).map(|h| h.address),
            Some(Some(addr_of_helper(pid_tgid)))
        );

        // Addresses are paired with prototypes: call through the copy.
        let f: ebpf_helper_function_t =
            // SAFETY: the address is sample_get_value's, of this type.
            unsafe { std::mem::transmute::<u64, ebpf_helper_function_t>(h0.address.unwrap()) };
        // SAFETY: sample_get_value has no preconditions.
        assert_eq!(unsafe { f(5, 0, 0, 0, 0) }, 47);
        let g: ebpf_helper_function_implicit_context_t =
            // SAFETY: the address is sample_context_id's, of this type.
            unsafe { std::mem::transmute(info.type_specific_helpers[1].address.unwrap()) };
        // SAFETY: sample_context_id only returns its sixth argument.
        assert_eq!(unsafe { g(0, 0, 0, 0, 0, 0x1234 as *mut c_void) }, 0x1234);
        // SAFETY: the fixture's context functions are still alive.
        let create = unsafe { info.context_create_fn() }.expect("context_create");
        let mut out = ptr::null_mut();
        // SAFETY: ctx_create ignores its arguments.
        assert_eq!(
            unsafe { create(ptr::null(), 0, ptr::null(), 0, &mut out) },
            EBPF_OPERATION_NOT_SUPPORTED
        );
        assert!(report(&fx).is_empty(), "{:?}", report(&fx));
    }

    #[test]
    fn the_copy_does_not_depend_on_the_source_after_validation() {
        let mut fx = sample();
        let before = accept(&fx);
        let other_name = CString::new("changed").unwrap();
        fx.type_descriptor_mut().name = other_name.as_ptr();
        fx.type_descriptor_mut().program_type = OTHER;
        *fx.context_descriptor_mut() = ebpf_context_descriptor_t {
            size: 64,
            data: -1,
            end: -1,
            meta: -1,
        };
        let protos = fx.prototypes_mut(HelperSet::TypeSpecific);
        protos[0].helper_id = 0x20000;
        protos[1].name = other_name.as_ptr();
        protos[1].implicit_context = false;
        fx.address_values_mut(HelperSet::TypeSpecific)[0] = 0xdead;
        fx.program_data_mut().required_irql = 2;
        let after = accept(&fx);
        assert_ne!(
            before, after,
            "the mutations are visible to a new validation"
        );
        assert_eq!(after.type_descriptor.name, "changed");
        assert_eq!(after.type_specific_helpers[0].address, Some(0xdead));

        // The first copy is unaffected.
        assert_eq!(before.type_descriptor.name, "sample");
        assert_eq!(before.program_type(), SAMPLE_TYPE);
        assert_eq!(before.type_descriptor.context_descriptor, SAMPLE_CONTEXT);
        assert_eq!(before.type_specific_helpers[0].prototype.helper_id, 0x10000);
        assert_eq!(
            before.type_specific_helpers[1].prototype.name,
            "sample_context_id"
        );
        assert!(before.type_specific_helpers[1].prototype.implicit_context);
        assert_eq!(
            before.type_specific_helpers[0].address,
            Some(addr_of_helper(sample_get_value))
        );
        assert_eq!(before.required_irql, PASSIVE_LEVEL);
        drop(fx);
        // Still readable after the source is gone.
        assert_eq!(
            before.type_specific_helpers[1].prototype.name,
            "sample_context_id"
        );
    }

    #[test]
    fn both_program_data_sizes_are_accepted_and_size_65_has_no_capabilities() {
        let mut fx = sample();
        fx.program_data_mut().header.size = EBPF_PROGRAM_DATA_SIZE_0;
        // Past the declared size: the core does not read it.
        fx.program_data_mut().capabilities.value = 1;
        let info = accept(&fx);
        assert_eq!((info.program_data_size, info.capabilities), (65, 0));
        assert_eq!(
            report(&fx),
            vec![finding(
                Object::ProgramData,
                "header.size",
                Issue::SizeNotCurrent {
                    found: 65,
                    current: 72
                }
            )]
        );
    }

    #[test]
    fn program_data_without_helpers_is_accepted() {
        let fx = ProgramDataBuilder::new("bare", SAMPLE_TYPE, SAMPLE_CONTEXT).build();
        assert!(fx
            .program_data()
            .program_type_specific_helper_function_addresses
            .is_null());
        let info = accept(&fx);
        assert!(info.type_specific_helpers.is_empty() && info.global_helpers.is_empty());
        assert_eq!((info.context_create, info.context_destroy), (0, 0));
    }

    #[test]
    fn oldest_prototype_layout_is_accepted_without_flags() {
        let mut fx = sample();
        let mut protos: Vec<_> = fx.prototypes_mut(HelperSet::TypeSpecific).to_vec();
        for p in &mut protos {
            p.header.size = EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_0;
            p.header.total_size = 64;
        }
        let buf = strided(&protos, 64);
        fx.program_info_mut().program_type_specific_helper_prototype = buf.as_ptr() as *const _;
        let info = accept(&fx);
        let names: Vec<_> = info
            .type_specific_helpers
            .iter()
            .map(|h| h.prototype.name.as_str())
            .collect();
        assert_eq!(names, ["sample_get_value", "sample_context_id"]);
        // Byte 64 and 65 are not part of a 64-byte prototype.
        let h1 = &info.type_specific_helpers[1].prototype;
        assert!(!h1.reallocate_packet && !h1.implicit_context);
        assert_eq!(
            report(&fx),
            vec![finding(
                Object::HelperPrototype(HelperSet::TypeSpecific, 0),
                "header.size",
                Issue::SizeNotCurrent {
                    found: 64,
                    current: 66
                }
            )]
        );
    }

    #[test]
    fn size_65_prototypes_get_implicit_context_from_the_byte_past_their_size() {
        let mut fx = sample();
        for p in fx.prototypes_mut(HelperSet::TypeSpecific) {
            p.header.size = EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE_1;
        }
        let info = accept(&fx);
        assert!(info.type_specific_helpers[1].prototype.implicit_context);
        assert!(info.type_specific_helpers[1].prototype.reallocate_packet);
        let findings = report(&fx);
        assert!(findings.contains(&finding(
            Object::HelperPrototype(HelperSet::TypeSpecific, 1),
            "implicit_context",
            Issue::ReadBeyondSize {
                offset: 65,
                value: 1
            }
        )));
        assert!(findings.contains(&finding(
            Object::HelperPrototype(HelperSet::TypeSpecific, 0),
            "header.size",
            Issue::SizeNotCurrent {
                found: 65,
                current: 66
            }
        )));
    }

    // ----- one negative test per rule ----------------------------------

    #[test]
    fn null_program_data_is_refused() {
        // SAFETY: NULL is allowed by the contract.
        let e = unsafe { validate_program_data(ptr::null()) }.unwrap_err();
        assert_eq!(
            e,
            err(
                Object::ProviderRegistration,
                "NpiSpecificCharacteristics",
                Rule::Null
            )
        );
        assert_eq!(e.status(), STATUS_INVALID_PARAMETER);
    }

    #[test]
    fn program_data_header_version_and_size_are_enforced() {
        let mut fx = sample();
        fx.program_data_mut().header.version = 2;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramData,
                "header.version",
                Rule::Version {
                    found: 2,
                    expected: 1
                }
            )
        );
        for bad in [0, 64, 66, 71, 80] {
            let mut fx = sample();
            fx.program_data_mut().header.size = bad;
            assert_eq!(
                refuse(&fx),
                err(
                    Object::ProgramData,
                    "header.size",
                    Rule::Size {
                        found: bad,
                        accepted: &[65, 72]
                    }
                ),
                "size {bad}"
            );
        }
    }

    #[test]
    fn each_required_pointer_must_be_non_null() {
        let mut fx = sample();
        fx.program_data_mut().program_info = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(Object::ProgramData, "program_info", Rule::Null)
        );

        let mut fx = sample();
        fx.program_info_mut().program_type_descriptor = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(Object::ProgramInfo, "program_type_descriptor", Rule::Null)
        );

        let mut fx = sample();
        fx.type_descriptor_mut().name = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(Object::ProgramTypeDescriptor, "name", Rule::Null)
        );

        let mut fx = sample();
        fx.type_descriptor_mut().context_descriptor = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramTypeDescriptor,
                "context_descriptor",
                Rule::Null
            )
        );

        let mut fx = sample();
        fx.program_info_mut().program_type_specific_helper_prototype = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramInfo,
                "program_type_specific_helper_prototype",
                Rule::Null
            )
        );

        let mut fx = sample();
        fx.program_info_mut().global_helper_prototype = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(Object::ProgramInfo, "global_helper_prototype", Rule::Null)
        );

        let mut fx = sample();
        fx.prototypes_mut(HelperSet::TypeSpecific)[1].name = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperPrototype(HelperSet::TypeSpecific, 1),
                "name",
                Rule::Null
            )
        );

        let mut fx = sample();
        fx.prototypes_mut(HelperSet::Global)[0].name = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperPrototype(HelperSet::Global, 0),
                "name",
                Rule::Null
            )
        );

        let mut fx = sample();
        fx.addresses_mut(HelperSet::TypeSpecific)
            .helper_function_address = ptr::null();
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperAddresses(HelperSet::TypeSpecific),
                "helper_function_address",
                Rule::Null
            )
        );
    }

    #[test]
    fn program_info_and_descriptor_headers_are_enforced() {
        let mut fx = sample();
        fx.program_info_mut().header.version = 0;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramInfo,
                "header.version",
                Rule::Version {
                    found: 0,
                    expected: 1
                }
            )
        );
        let mut fx = sample();
        fx.program_info_mut().header.size = 56;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramInfo,
                "header.size",
                Rule::Size {
                    found: 56,
                    accepted: &[64]
                }
            )
        );
        let mut fx = sample();
        fx.type_descriptor_mut().header.version = 2;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramTypeDescriptor,
                "header.version",
                Rule::Version {
                    found: 2,
                    expected: 1
                }
            )
        );
        // size = sizeof (64) instead of the size through is_privileged (61).
        let mut fx = sample();
        fx.type_descriptor_mut().header.size = 64;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramTypeDescriptor,
                "header.size",
                Rule::Size {
                    found: 64,
                    accepted: &[61]
                }
            )
        );
    }

    #[test]
    fn context_descriptor_size_must_be_at_least_16() {
        let mut fx = sample();
        fx.context_descriptor_mut().size = 15;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ContextDescriptor,
                "size",
                Rule::ContextTooSmall { found: 15 }
            )
        );
        fx.context_descriptor_mut().size = 16;
        fx.context_descriptor_mut().end = -1;
        accept(&fx);
        // The core compares the int with a size_t: a negative size passes.
        fx.context_descriptor_mut().size = -1;
        assert_eq!(accept(&fx).type_descriptor.context_descriptor.size, -1);
        assert!(report(&fx).contains(&finding(
            Object::ContextDescriptor,
            "size",
            Issue::NegativeContextSize { found: -1 }
        )));
    }

    #[test]
    fn prototype_headers_are_enforced_for_every_element() {
        let mut fx = sample();
        fx.prototypes_mut(HelperSet::TypeSpecific)[1].header.version = 0;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperPrototype(HelperSet::TypeSpecific, 1),
                "header.version",
                Rule::Version {
                    found: 0,
                    expected: 1
                }
            )
        );
        let mut fx = sample();
        fx.prototypes_mut(HelperSet::Global)[0].header.size = 72;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperPrototype(HelperSet::Global, 0),
                "header.size",
                Rule::Size {
                    found: 72,
                    accepted: &[64, 65, 66]
                }
            )
        );
    }

    #[test]
    fn prototype_array_is_validated_with_element_0_total_size_as_stride() {
        let mut fx = sample();
        let mut protos: Vec<_> = fx.prototypes_mut(HelperSet::TypeSpecific).to_vec();
        protos[0].header.total_size = 80;
        let buf = strided(&protos, 80);
        fx.program_info_mut().program_type_specific_helper_prototype = buf.as_ptr() as *const _;
        // Valid at stride 80 (what the core validates)...
        // SAFETY: the buffer covers both strides (see `strided`).
        assert_eq!(unsafe { check_program_data(fx.as_ptr()) }, Ok(()));
        // ...but the copy walks PAD_8(size) = 72 and reaches bytes the
        // validation never looked at (zero padding: version 0).
        assert_eq!(
            refuse(&fx),
            err(
                Object::CopiedHelperPrototype(HelperSet::TypeSpecific, 1),
                "header.version",
                Rule::Version {
                    found: 0,
                    expected: 1
                }
            )
        );

        // An invalid element 80 bytes in is what validation reports.
        protos[1].name = ptr::null();
        let buf2 = strided(&protos, 80);
        fx.program_info_mut().program_type_specific_helper_prototype = buf2.as_ptr() as *const _;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperPrototype(HelperSet::TypeSpecific, 1),
                "name",
                Rule::Null
            )
        );
        drop((buf, buf2));
    }

    #[test]
    fn zero_total_size_validates_element_0_only_and_the_copy_walks_further() {
        let mut fx = sample();
        fx.prototypes_mut(HelperSet::TypeSpecific)[0]
            .header
            .total_size = 0;
        // Tolerated: element 0 validated twice, the copy uses PAD_8(size).
        let info = accept(&fx);
        assert_eq!(
            info.type_specific_helpers[1].prototype.name,
            "sample_context_id"
        );
        let findings = report(&fx);
        let first = Object::HelperPrototype(HelperSet::TypeSpecific, 0);
        assert!(findings.contains(&finding(first, "header.total_size", Issue::TotalSizeZero)));
        assert!(findings.contains(&finding(
            Object::HelperPrototypes(HelperSet::TypeSpecific),
            "header.total_size",
            Issue::StrideMismatch {
                validated: 0,
                copied: 72
            }
        )));
        assert!(findings.contains(&finding(
            Object::HelperPrototype(HelperSet::TypeSpecific, 1),
            "header",
            Issue::HeaderDiffersFromFirst
        )));

        // Element 1 is never validated: the core accepts a NULL name there
        // and its copy would duplicate it; ntsim refuses at the copy.
        fx.prototypes_mut(HelperSet::TypeSpecific)[1].name = ptr::null();
        // SAFETY: as in accept.
        assert_eq!(unsafe { check_program_data(fx.as_ptr()) }, Ok(()));
        assert_eq!(
            refuse(&fx),
            err(
                Object::CopiedHelperPrototype(HelperSet::TypeSpecific, 1),
                "name",
                Rule::Null
            )
        );
    }

    #[test]
    fn helper_address_tables_are_enforced() {
        let mut fx = sample();
        fx.addresses_mut(HelperSet::TypeSpecific).header.version = 3;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperAddresses(HelperSet::TypeSpecific),
                "header.version",
                Rule::Version {
                    found: 3,
                    expected: 1
                }
            )
        );
        let mut fx = sample();
        fx.addresses_mut(HelperSet::Global).header.size = 36;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperAddresses(HelperSet::Global),
                "header.size",
                Rule::Size {
                    found: 36,
                    accepted: &[40]
                }
            )
        );
        let mut fx = sample();
        fx.addresses_mut(HelperSet::TypeSpecific)
            .helper_function_count = 0;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperAddresses(HelperSet::TypeSpecific),
                "helper_function_count",
                Rule::ZeroCount
            )
        );
        // Global addresses are checked before type-specific ones.
        let mut fx = sample();
        fx.addresses_mut(HelperSet::TypeSpecific)
            .helper_function_count = 0;
        fx.addresses_mut(HelperSet::Global).helper_function_count = 0;
        assert_eq!(
            refuse(&fx).object,
            Object::HelperAddresses(HelperSet::Global)
        );
    }

    #[test]
    fn address_counts_must_equal_prototype_counts() {
        let mut fx = sample();
        fx.addresses_mut(HelperSet::TypeSpecific)
            .helper_function_count = 1;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperAddresses(HelperSet::TypeSpecific),
                "helper_function_count",
                Rule::CountMismatch {
                    addresses: 1,
                    prototypes: 2
                }
            )
        );
        let mut fx = sample();
        fx.program_info_mut().count_of_global_helpers = 0;
        assert_eq!(
            refuse(&fx),
            err(
                Object::HelperAddresses(HelperSet::Global),
                "helper_function_count",
                Rule::CountMismatch {
                    addresses: 1,
                    prototypes: 0
                }
            )
        );
        // Prototypes without any address table: tolerated, but reported.
        let mut fx = sample();
        fx.program_data_mut()
            .program_type_specific_helper_function_addresses = ptr::null();
        let info = accept(&fx);
        assert_eq!(info.type_specific_helpers[0].address, None);
        assert!(report(&fx).contains(&finding(
            Object::ProgramData,
            "program_type_specific_helper_function_addresses",
            Issue::PrototypesWithoutAddresses { count: 2 }
        )));
    }

    #[test]
    fn capabilities_must_be_zero() {
        let mut fx = sample();
        fx.program_data_mut().capabilities.value = 1;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramData,
                "capabilities",
                Rule::CapabilitiesNonZero { found: 1 }
            )
        );
    }

    #[test]
    fn required_irql_must_not_exceed_high_level() {
        let mut fx = sample();
        fx.program_data_mut().required_irql = 16;
        assert_eq!(
            refuse(&fx),
            err(
                Object::ProgramData,
                "required_irql",
                Rule::IrqlAboveHigh { found: 16 }
            )
        );
        fx.program_data_mut().required_irql = 15;
        assert_eq!(accept(&fx).required_irql, 15);
    }

    // ----- strict findings ----------------------------------------------

    #[test]
    fn strict_report_flags_what_the_core_tolerates() {
        let mut fx = sample();
        fx.program_data_mut().header.total_size = 0;
        fx.type_descriptor_mut().header.total_size = 61;
        fx.context_descriptor_mut().meta = 30;
        let empty = CString::new("").unwrap();
        fx.type_descriptor_mut().name = empty.as_ptr();
        {
            let protos = fx.prototypes_mut(HelperSet::TypeSpecific);
            protos[0].helper_id = 7;
            protos[1].helper_id = 7;
        }
        fx.prototypes_mut(HelperSet::Global)[0].helper_id = 0x10005;
        fx.address_values_mut(HelperSet::Global)[0] = 0;
        fx.program_data_mut().context_destroy = None;
        let findings = report(&fx);
        let ts = |i| Object::HelperPrototype(HelperSet::TypeSpecific, i);
        let expected = [
            finding(
                Object::ProgramData,
                "header.total_size",
                Issue::TotalSizeZero,
            ),
            finding(
                Object::ProgramTypeDescriptor,
                "header.total_size",
                Issue::TotalSizeNotSizeof {
                    found: 61,
                    expected: 64,
                },
            ),
            finding(Object::ProgramTypeDescriptor, "name", Issue::EmptyName),
            finding(
                Object::ContextDescriptor,
                "meta",
                Issue::ContextOffsetOutOfRange {
                    offset: 30,
                    context_size: 32,
                },
            ),
            finding(ts(0), "helper_id", Issue::GeneralIdInTypeSpecific { id: 7 }),
            finding(
                ts(1),
                "helper_id",
                Issue::DuplicateHelperId {
                    id: 7,
                    first_index: 0,
                },
            ),
            finding(ts(1), "helper_id", Issue::GeneralIdInTypeSpecific { id: 7 }),
            finding(
                Object::HelperPrototype(HelperSet::Global, 0),
                "helper_id",
                Issue::NonGeneralIdInGlobal { id: 0x10005 },
            ),
            finding(
                Object::HelperAddresses(HelperSet::Global),
                "helper_function_address",
                Issue::HelperAddressZero { index: 0 },
            ),
            finding(
                Object::ProgramData,
                "context_destroy",
                Issue::ContextFunctionsIncomplete,
            ),
        ];
        assert_eq!(findings, expected);
        // All of it is accepted by the core.
        accept(&fx);
    }

    #[test]
    fn strict_report_flags_total_size_other_than_sizeof_and_long_names() {
        let mut fx = sample();
        fx.prototypes_mut(HelperSet::Global)[0].header.total_size = 80;
        let long = CString::new("h".repeat(300)).unwrap();
        fx.prototypes_mut(HelperSet::Global)[0].name = long.as_ptr();
        let findings = report(&fx);
        let g0 = Object::HelperPrototype(HelperSet::Global, 0);
        assert_eq!(
            findings,
            vec![
                finding(
                    g0,
                    "header.total_size",
                    Issue::TotalSizeNotSizeof {
                        found: 80,
                        expected: 72
                    }
                ),
                finding(g0, "name", Issue::NameTooLong { len: 300, max: 255 }),
            ]
        );
    }

    #[test]
    fn strict_report_of_refused_data_is_the_refusal() {
        let mut fx = sample();
        fx.program_data_mut().required_irql = 31;
        let e = err(
            Object::ProgramData,
            "required_irql",
            Rule::IrqlAboveHigh { found: 31 },
        );
        assert_eq!(
            report(&fx),
            vec![finding(e.object, e.field, Issue::Refused(e))]
        );
    }

    #[test]
    fn strict_report_for_provider_checks_the_module_id() {
        let fx = sample();
        // SAFETY: as in accept.
        assert!(unsafe { strict_report_for_provider(fx.as_ptr(), &SAMPLE_TYPE) }.is_empty());
        // SAFETY: as in accept.
        let findings = unsafe { strict_report_for_provider(fx.as_ptr(), &OTHER) };
        assert_eq!(
            findings,
            vec![finding(
                Object::ProgramTypeDescriptor,
                "program_type",
                Issue::ProgramTypeMismatch {
                    descriptor: SAMPLE_TYPE,
                    module_id: OTHER
                }
            )]
        );
    }

    // ----- attach provider data and the two attach decisions -------------

    fn attach_check(
        d: &ebpf_attach_provider_data_t,
    ) -> Result<AttachProviderInfo, ValidationError> {
        // SAFETY: `d` is a live 48-byte structure.
        unsafe { validate_attach_provider_data(d) }
    }

    #[test]
    fn attach_provider_data_is_accepted_and_refused_per_rule() {
        let good = attach_provider_data(SAMPLE_TYPE, 77, BPF_LINK_TYPE_PLAIN);
        assert_eq!(
            attach_check(&good),
            Ok(AttachProviderInfo {
                supported_program_type: SAMPLE_TYPE,
                bpf_attach_type: 77,
                link_type: BPF_LINK_TYPE_PLAIN
            })
        );
        // SAFETY: NULL is allowed.
        assert_eq!(
            unsafe { validate_attach_provider_data(ptr::null()) },
            Err(err(
                Object::ProviderRegistration,
                "NpiSpecificCharacteristics",
                Rule::Null
            ))
        );
        let mut d = good;
        d.header.version = 2;
        assert_eq!(
            attach_check(&d),
            Err(err(
                Object::AttachProviderData,
                "header.version",
                Rule::Version {
                    found: 2,
                    expected: 1
                }
            ))
        );
        for bad in [40, 44, 56] {
            let mut d = good;
            d.header.size = bad;
            assert_eq!(
                attach_check(&d),
                Err(err(
                    Object::AttachProviderData,
                    "header.size",
                    Rule::Size {
                        found: bad,
                        accepted: &[48]
                    }
                ))
            );
        }
        let d = attach_provider_data(GUID_NULL, 77, BPF_LINK_TYPE_PLAIN);
        assert_eq!(
            attach_check(&d),
            Err(err(
                Object::AttachProviderData,
                "supported_program_type",
                Rule::NullGuid
            ))
        );
        // Tolerated but wrong.
        let mut d = good;
        d.header.total_size = 0;
        d.link_type = 9;
        // SAFETY: `d` is live.
        let findings = unsafe { strict_attach_report(&d) };
        assert_eq!(
            findings,
            vec![
                finding(
                    Object::AttachProviderData,
                    "header.total_size",
                    Issue::TotalSizeZero
                ),
                finding(
                    Object::AttachProviderData,
                    "link_type",
                    Issue::UnknownLinkType { found: 9 }
                ),
            ]
        );
        // SAFETY: `good` is live.
        assert!(unsafe { strict_attach_report(&good) }.is_empty());
    }

    fn registration(
        module: &NPI_MODULEID,
        data: *const c_void,
        npi: &GUID,
    ) -> NPI_REGISTRATION_INSTANCE {
        NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: npi,
            ModuleId: module,
            Number: 0,
            NpiSpecificCharacteristics: data,
        }
    }

    fn module(guid: GUID) -> NPI_MODULEID {
        NPI_MODULEID {
            Length: size_of::<NPI_MODULEID>() as u16,
            Type: MIT_GUID,
            Guid: guid,
        }
    }

    fn hook_decision(
        m: &NPI_MODULEID,
        d: &ebpf_attach_provider_data_t,
    ) -> Result<AttachProviderInfo, AttachRefusal> {
        let reg = registration(m, d as *const _ as *const c_void, &EBPF_HOOK_EXTENSION_IID);
        // SAFETY: `reg` points to live module id and attach data.
        unsafe { hook_client_attach_decision(&reg, &SAMPLE_ATTACH, &SAMPLE_TYPE) }
    }

    #[test]
    fn hook_client_attaches_only_to_its_attach_type_and_program_type() {
        let data = attach_provider_data(SAMPLE_TYPE, 77, BPF_LINK_TYPE_PLAIN);
        assert_eq!(
            hook_decision(&module(SAMPLE_ATTACH), &data).map(|i| i.bpf_attach_type),
            Ok(77)
        );

        let r = hook_decision(&module(OTHER), &data).unwrap_err();
        assert_eq!(
            r,
            AttachRefusal::NoInterface {
                field: "ModuleId.Guid",
                expected: SAMPLE_ATTACH,
                found: OTHER
            }
        );
        assert_eq!(r.status(), STATUS_NOINTERFACE);

        let other_type = attach_provider_data(OTHER, 77, BPF_LINK_TYPE_PLAIN);
        assert_eq!(
            hook_decision(&module(SAMPLE_ATTACH), &other_type),
            Err(AttachRefusal::NoInterface {
                field: "supported_program_type",
                expected: SAMPLE_TYPE,
                found: OTHER
            })
        );

        let mut luid = module(SAMPLE_ATTACH);
        luid.Type = MIT_IF_LUID;
        let r = hook_decision(&luid, &data).unwrap_err();
        assert_eq!(
            r,
            AttachRefusal::Invalid(err(
                Object::ProviderRegistration,
                "ModuleId.Type",
                Rule::ModuleIdNotGuid { found: MIT_IF_LUID }
            ))
        );
        assert_eq!(r.status(), STATUS_INVALID_PARAMETER);

        // The link validates the data before it looks at the ModuleId.
        let mut bad = data;
        bad.header.version = 0;
        assert!(matches!(
            hook_decision(&module(OTHER), &bad),
            Err(AttachRefusal::Invalid(ValidationError {
                object: Object::AttachProviderData,
                ..
            }))
        ));
    }

    #[test]
    fn program_info_client_attaches_only_to_its_program_type() {
        let fx = sample();
        let decide = |m: &NPI_MODULEID| {
            let reg = registration(
                m,
                fx.as_ptr() as *const c_void,
                &EBPF_PROGRAM_INFO_EXTENSION_IID,
            );
            // SAFETY: `reg` points to a live module id and the fixture.
            unsafe { program_info_client_attach_decision(&reg, &SAMPLE_TYPE) }
        };
        assert_eq!(
            decide(&module(SAMPLE_TYPE)).map(|i| i.program_type()),
            Ok(SAMPLE_TYPE)
        );
        let r = decide(&module(OTHER)).unwrap_err();
        assert_eq!(r.status(), STATUS_NOINTERFACE);
        let mut luid = module(SAMPLE_TYPE);
        luid.Type = MIT_IF_LUID;
        assert_eq!(
            decide(&luid).unwrap_err().status(),
            STATUS_INVALID_PARAMETER
        );

        let mut fx = sample();
        fx.program_data_mut().capabilities.value = 4;
        let reg = registration(
            &module(SAMPLE_TYPE),
            fx.as_ptr() as *const c_void,
            &EBPF_PROGRAM_INFO_EXTENSION_IID,
        );
        // SAFETY: as above.
        let r = unsafe { program_info_client_attach_decision(&reg, &SAMPLE_TYPE) }.unwrap_err();
        assert_eq!(
            r,
            AttachRefusal::Invalid(err(
                Object::ProgramData,
                "capabilities",
                Rule::CapabilitiesNonZero { found: 4 }
            ))
        );
    }

    // ----- the hook client's data -----------------------------------------

    #[test]
    fn extension_data_builder_fills_the_client_data_as_the_core_does() {
        let params = [1u8, 2, 3, 4, 5];
        let ed = ExtensionDataBuilder::new()
            .attach_params(&params)
            .prog_attach_flags(0x8000_0001)
            .build();
        let d = ed.data();
        assert_eq!(d.header, EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION);
        assert_eq!(
            (d.header.version, d.header.size, d.header.total_size),
            (1, 48, 48)
        );
        assert_eq!(d.data_size, 5);
        assert_eq!(d.prog_attach_flags, 0x8000_0001);
        // SAFETY: data points to `data_size` owned bytes.
        let seen = unsafe { std::slice::from_raw_parts(d.data as *const u8, d.data_size) };
        assert_eq!(seen, params);
        assert_eq!(ed.params(), params);
        // Read through the raw pointer an extension receives.
        // SAFETY: as_ptr points to the owned structure.
        assert_eq!(unsafe { (*ed.as_ptr()).prog_attach_flags }, 0x8000_0001);

        let empty = ExtensionDataBuilder::new().build();
        assert!(empty.data().data.is_null());
        assert_eq!(empty.data().data_size, 0);

        let old = ExtensionDataBuilder::new()
            .header(ebpf_extension_header_t {
                version: 1,
                size: 40,
                total_size: 40,
            })
            .build();
        assert_eq!(old.data().header.size, 40);
    }
}
