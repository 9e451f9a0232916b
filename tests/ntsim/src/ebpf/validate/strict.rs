//! The strict report: what the core tolerates in an extension's data but
//! is wrong ([`strict_report`], [`strict_report_for_provider`],
//! [`strict_attach_report`]).

use super::*;

/// `sizeof` the structure of the version whose `size` is `size`.
pub(super) fn prototype_sizeof_for(size: usize) -> usize {
    pad8(size)
}

pub(super) fn finding(object: Object, field: &'static str, issue: Issue) -> Finding {
    Finding {
        object,
        field,
        issue,
    }
}

pub(super) fn header_findings(
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

pub(super) fn name_findings(out: &mut Vec<Finding>, object: Object, name: &str, max: usize) {
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
