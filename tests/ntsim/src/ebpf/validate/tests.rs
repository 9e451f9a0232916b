//! Tests of the validation, the strict report and the builders.

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
    let implicit = ebpf_helper_function_implicit_context_t::from(sample_context_id) as usize as u64;
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
        unsafe { ptr::copy_nonoverlapping(p as *const _ as *const u8, base.add(i * stride), n) };
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

fn attach_check(d: &ebpf_attach_provider_data_t) -> Result<AttachProviderInfo, ValidationError> {
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
