//! Program information, built at compile time from one declaration.
//!
//! A program type declares its name, GUIDs, context layout and helpers once
//! ([`ProgramTypeSpec`], [`HelperSpec`]); [`ProgramType::new`] derives every
//! ABI structure the eBPF core reads from it: the type descriptor, the
//! helper prototypes and the parallel array of helper addresses (counts
//! taken from the helper slice), `ebpf_program_info_t` and
//! `ebpf_program_data_t`, with every header's size and total size. The
//! result is one `static` whose internal pointers point into itself (a
//! static may take its own address in its initializer), so nothing is
//! counted or cast by hand at the declaration.

use super::abi::*;
use crate::nt::{GUID, KIRQL, NPI_MODULEID};
use core::ffi::{c_char, CStr};
use core::mem::size_of;
use core::ptr;

/// A helper's address as the core calls it. Every helper of this driver
/// has the eBPF helper signature (five 64-bit arguments, a 64-bit result);
/// the first argument's pointee type is erased here.
pub type HelperFn = unsafe extern "system" fn(u64, u64, u64, u64, u64) -> i64;

/// One program-type-specific helper.
#[derive(Clone, Copy)]
pub struct HelperSpec {
    /// The helper id (`> EBPF_MAX_GENERAL_HELPER_FUNCTION`).
    pub id: u32,
    /// Its name, as programs and the verifier know it.
    pub name: &'static CStr,
    /// `ebpf_return_type_t`.
    pub return_type: u32,
    /// `ebpf_argument_type_t` of each of the five arguments.
    pub arguments: [u32; 5],
    /// The function the core calls.
    pub address: HelperFn,
}

/// Everything that differs between program types. Declared as a `const`,
/// so that the [`ProgramType`] built from it takes its helper count from
/// the slice:
///
/// ```text
/// const SPEC: ProgramTypeSpec = ProgramTypeSpec { helpers: &[..], .. };
/// static PROGRAM: ProgramType<{ SPEC.helpers.len() }> = ProgramType::new(&PROGRAM, SPEC);
/// ```
pub struct ProgramTypeSpec {
    /// The type's name (`ebpf_program_type_descriptor_t::name`).
    pub name: &'static CStr,
    /// `EBPF_PROGRAM_TYPE_*`, also the program-information provider's
    /// module id.
    pub program_type: GUID,
    /// `BPF_PROG_TYPE_*`.
    pub bpf_prog_type: u32,
    /// Where the context's size and "packet" pointers are.
    pub context: ebpf_context_descriptor_t,
    /// The program-type-specific helpers.
    pub helpers: &'static [HelperSpec],
    /// `bpf_prog_test_run` context construction.
    pub context_create: ebpf_program_context_create_t,
    /// `bpf_prog_test_run` context teardown.
    pub context_destroy: ebpf_program_context_destroy_t,
    /// The IRQL programs of this type run at.
    pub required_irql: KIRQL,
}

/// The program information NMR publishes for one program type.
///
/// # Invariants
/// Every raw pointer in the ABI structures points into this same value (a
/// `static`, see [`ProgramType::new`]), to a string literal, or to a
/// function; nothing in it is written after construction.
pub struct ProgramType<const HELPERS: usize> {
    context: ebpf_context_descriptor_t,
    descriptor: ebpf_program_type_descriptor_t,
    prototypes: [ebpf_helper_function_prototype_t; HELPERS],
    addresses: [HelperFn; HELPERS],
    helper_addresses: ebpf_helper_function_addresses_t,
    info: ebpf_program_info_t,
    data: ebpf_program_data_t,
    module_id: NPI_MODULEID,
}

// SAFETY: immutable after construction; its pointers refer to itself (a
// static), to literals or to functions (invariant).
unsafe impl<const HELPERS: usize> Sync for ProgramType<HELPERS> {}

const fn prototype(helper: &HelperSpec) -> ebpf_helper_function_prototype_t {
    ebpf_helper_function_prototype_t {
        header: ebpf_extension_header_t::v1(
            EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE,
            size_of::<ebpf_helper_function_prototype_t>(),
        ),
        helper_id: helper.id,
        name: helper.name.as_ptr(),
        return_type: helper.return_type,
        arguments: helper.arguments,
        flags: 0,
        implicit_context: false,
    }
}

/// Fills the arrays before each element is set from the declaration (a
/// program type may declare no helper at all).
const PLACEHOLDER: HelperSpec = HelperSpec {
    id: 0,
    name: c"",
    return_type: 0,
    arguments: [0; 5],
    address: placeholder,
};

/// Never published: every array slot is overwritten in `ProgramType::new`.
unsafe extern "system" fn placeholder(_: u64, _: u64, _: u64, _: u64, _: u64) -> i64 {
    0
}

impl<const HELPERS: usize> ProgramType<HELPERS> {
    /// Builds the program information of `spec`. `this` must be the static
    /// being initialized, and `HELPERS` the length of `spec.helpers`
    /// (checked at compile time): `static P: ProgramType<{ SPEC.helpers.len() }>
    /// = ProgramType::new(&P, SPEC)`.
    pub const fn new(this: &'static Self, spec: ProgramTypeSpec) -> Self {
        assert!(spec.helpers.len() == HELPERS);
        assert!(HELPERS <= u32::MAX as usize);
        let mut prototypes = [prototype(&PLACEHOLDER); HELPERS];
        let mut addresses = [PLACEHOLDER.address; HELPERS];
        let mut i = 0;
        while i < HELPERS {
            assert!(spec.helpers[i].id > EBPF_MAX_GENERAL_HELPER_FUNCTION);
            prototypes[i] = prototype(&spec.helpers[i]);
            addresses[i] = spec.helpers[i].address;
            i += 1;
        }
        // INVARIANT: every pointer below is into `this`, a literal or a
        // function.
        ProgramType {
            context: spec.context,
            descriptor: ebpf_program_type_descriptor_t {
                header: ebpf_extension_header_t::v1(
                    EBPF_PROGRAM_TYPE_DESCRIPTOR_SIZE,
                    size_of::<ebpf_program_type_descriptor_t>(),
                ),
                name: spec.name.as_ptr() as *const c_char,
                context_descriptor: &this.context,
                program_type: spec.program_type,
                bpf_prog_type: spec.bpf_prog_type,
                is_privileged: 0,
            },
            prototypes,
            addresses,
            helper_addresses: ebpf_helper_function_addresses_t {
                header: ebpf_extension_header_t::v1(
                    EBPF_HELPER_FUNCTION_ADDRESSES_SIZE,
                    size_of::<ebpf_helper_function_addresses_t>(),
                ),
                helper_function_count: HELPERS as u32,
                helper_function_address: this.addresses.as_ptr().cast(),
            },
            info: ebpf_program_info_t {
                header: ebpf_extension_header_t::v1(
                    EBPF_PROGRAM_INFORMATION_SIZE,
                    size_of::<ebpf_program_info_t>(),
                ),
                program_type_descriptor: &this.descriptor,
                count_of_program_type_specific_helpers: HELPERS as u32,
                // The core refuses a prototype array or an address table
                // that holds no helper: a type without helpers has neither.
                program_type_specific_helper_prototype: if HELPERS == 0 {
                    ptr::null()
                } else {
                    this.prototypes.as_ptr()
                },
                count_of_global_helpers: 0,
                global_helper_prototype: ptr::null(),
            },
            data: ebpf_program_data_t {
                header: ebpf_extension_header_t::v1(
                    EBPF_PROGRAM_DATA_SIZE,
                    size_of::<ebpf_program_data_t>(),
                ),
                program_info: &this.info,
                program_type_specific_helper_function_addresses: if HELPERS == 0 {
                    ptr::null()
                } else {
                    &this.helper_addresses
                },
                global_helper_function_addresses: ptr::null(),
                context_create: Some(spec.context_create),
                context_destroy: Some(spec.context_destroy),
                required_irql: spec.required_irql,
                capabilities: 0,
            },
            module_id: NPI_MODULEID::guid(spec.program_type),
        }
    }

    /// The program-information provider's NPI-specific characteristics.
    pub const fn data(&'static self) -> &'static ebpf_program_data_t {
        &self.data
    }

    /// The program-information provider's module id (the program type).
    pub const fn module_id(&'static self) -> &'static NPI_MODULEID {
        &self.module_id
    }
}

/// A link's event classes from its attach parameters (the bytes of its
/// `ebpf_extension_data_t`, empty when it has none): a bit mask an event's
/// class is tested against (see `HookProvider::invoke_class_ignoring_results`).
pub type LinkClasses = fn(&[u8]) -> Result<u32, super::client::ClientError>;

/// Every event class: what a link of an attach type without attach
/// parameters receives.
pub const ALL_CLASSES: u32 = u32::MAX;

/// The attach provider data NMR publishes for one attach type.
///
/// # Invariants
/// Holds no data pointer; immutable.
pub struct AttachType {
    data: ebpf_attach_provider_data_t,
    module_id: NPI_MODULEID,
    link_classes: Option<LinkClasses>,
}

impl AttachType {
    /// Attach type `attach_type` (`EBPF_ATTACH_TYPE_*`, also the hook
    /// provider's module id, with number `bpf_attach_type`) for programs of
    /// `program_type`; links are plain (`BPF_LINK_TYPE_UNSPEC`, as upstream).
    pub const fn new(attach_type: GUID, program_type: GUID, bpf_attach_type: u32) -> AttachType {
        AttachType {
            data: ebpf_attach_provider_data_t {
                header: ebpf_extension_header_t::v1(
                    EBPF_ATTACH_PROVIDER_DATA_SIZE,
                    size_of::<ebpf_attach_provider_data_t>(),
                ),
                supported_program_type: program_type,
                bpf_attach_type,
                link_type: 0,
            },
            module_id: NPI_MODULEID::guid(attach_type),
            link_classes: None,
        }
    }

    /// The same attach type with links of `link_type` (`bpf_link_type`,
    /// e.g. `BPF_LINK_TYPE_PLAIN`).
    pub const fn with_link_type(mut self, link_type: u32) -> AttachType {
        self.data.link_type = link_type;
        self
    }

    /// The same attach type whose links carry attach parameters: `classes`
    /// reads them at attach (a refusal refuses the link) and gives the
    /// classes of events the link receives. Without it every link receives
    /// every event, whatever its parameters.
    pub const fn with_link_classes(mut self, classes: LinkClasses) -> AttachType {
        self.link_classes = Some(classes);
        self
    }

    /// How a link's attach parameters select its events.
    pub const fn link_classes(&self) -> Option<LinkClasses> {
        self.link_classes
    }

    /// The hook provider's NPI-specific characteristics.
    pub const fn data(&'static self) -> &'static ebpf_attach_provider_data_t {
        &self.data
    }

    /// The hook provider's module id (the attach type).
    pub const fn module_id(&'static self) -> &'static NPI_MODULEID {
        &self.module_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "system" fn h0(_: u64, _: u64, _: u64, _: u64, _: u64) -> i64 {
        0
    }
    unsafe extern "system" fn h1(_: u64, _: u64, _: u64, _: u64, _: u64) -> i64 {
        1
    }
    unsafe extern "system" fn create(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *mut *mut core::ffi::c_void,
    ) -> ebpf_result_t {
        0
    }
    unsafe extern "system" fn destroy(
        _: *mut core::ffi::c_void,
        _: *mut u8,
        _: *mut usize,
        _: *mut u8,
        _: *mut usize,
    ) {
    }

    const GUID_T: GUID = GUID::new(1, 2, 3, [4; 8]);

    const TWO_SPEC: ProgramTypeSpec = ProgramTypeSpec {
        name: c"two",
        program_type: GUID_T,
        bpf_prog_type: 99,
        context: ebpf_context_descriptor_t {
            size: 32,
            data: 0,
            end: 8,
            meta: -1,
        },
        helpers: &[
            HelperSpec {
                id: 0x10000,
                name: c"h0",
                return_type: EBPF_RETURN_TYPE_INTEGER,
                arguments: [EBPF_ARGUMENT_TYPE_PTR_TO_CTX, 0, 0, 0, 0],
                address: h0,
            },
            HelperSpec {
                id: 0x10001,
                name: c"h1",
                return_type: EBPF_RETURN_TYPE_INTEGER,
                arguments: [0; 5],
                address: h1,
            },
        ],
        context_create: create,
        context_destroy: destroy,
        required_irql: 0,
    };
    static TWO: ProgramType<{ TWO_SPEC.helpers.len() }> = ProgramType::new(&TWO, TWO_SPEC);

    const NONE_SPEC: ProgramTypeSpec = ProgramTypeSpec {
        name: c"none",
        program_type: GUID_T,
        bpf_prog_type: 0,
        context: ebpf_context_descriptor_t {
            size: 8,
            data: -1,
            end: -1,
            meta: -1,
        },
        helpers: &[],
        context_create: create,
        context_destroy: destroy,
        required_irql: 0,
    };
    static NONE: ProgramType<{ NONE_SPEC.helpers.len() }> = ProgramType::new(&NONE, NONE_SPEC);

    #[test]
    fn a_type_without_helpers_publishes_no_helper_tables() {
        let data = NONE.data();
        assert!(data
            .program_type_specific_helper_function_addresses
            .is_null());
        // SAFETY: the pointers are into the static (its invariant).
        let info = unsafe { &*data.program_info };
        assert_eq!(info.count_of_program_type_specific_helpers, 0);
        assert!(info.program_type_specific_helper_prototype.is_null());
    }

    #[test]
    fn counts_sizes_and_pointers_are_derived_from_the_declaration() {
        let data = TWO.data();
        assert_eq!(data.header, ebpf_extension_header_t::v1(72, 72));
        // SAFETY: the pointers are into the static (its invariant).
        let info = unsafe { &*data.program_info };
        assert_eq!(info.count_of_program_type_specific_helpers, 2);
        // SAFETY: as above; two prototypes.
        let protos =
            unsafe { core::slice::from_raw_parts(info.program_type_specific_helper_prototype, 2) };
        assert_eq!(protos[1].helper_id, 0x10001);
        assert_eq!(protos[0].header, ebpf_extension_header_t::v1(66, 72));
        // SAFETY: as above.
        let addrs = unsafe { &*data.program_type_specific_helper_function_addresses };
        assert_eq!(addrs.helper_function_count, 2);
        // SAFETY: the array holds two addresses.
        let raw = unsafe { core::slice::from_raw_parts(addrs.helper_function_address, 2) };
        // SAFETY: each address is a HelperFn of this test.
        let second = unsafe { core::mem::transmute::<u64, HelperFn>(raw[1]) };
        // SAFETY: h1 ignores its arguments.
        assert_eq!(unsafe { second(0, 0, 0, 0, 0) }, 1);
        // SAFETY: as above.
        let descriptor = unsafe { &*info.program_type_descriptor };
        assert_eq!(descriptor.bpf_prog_type, 99);
        // SAFETY: as above.
        assert_eq!(unsafe { &*descriptor.context_descriptor }.end, 8);
        assert_eq!(TWO.module_id().Guid, GUID_T);
    }
}
