//! Hook (attach) provider data and the NMR clients' attach decisions:
//! `ebpf_validate_attach_provider_data`, the ModuleId checks, and the
//! ClientAttachProvider decisions of the link (hook client) and of the
//! program-information client.

use super::*;

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
pub(super) unsafe fn module_guid(module_id: *const NPI_MODULEID) -> Result<GUID, ValidationError> {
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
