//! Network Module Registrar (netioddk.h, exported by NETIO.SYS). (being written)
//!
//! The ABI types below are final; the implementation is being written.

use crate::exports::Export;
use crate::status::NTSTATUS;
use crate::types::{GUID, HANDLE};
use std::ffi::c_void;

pub const MIT_GUID: u32 = 1;
pub const MIT_IF_LUID: u32 = 2;

/// `NPI_MODULEID` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NPI_MODULEID {
    pub Length: u16,
    pub Type: u32,
    /// `union { GUID Guid; LUID IfLuid; }`
    pub Guid: GUID,
}

/// `NPI_REGISTRATION_INSTANCE` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NPI_REGISTRATION_INSTANCE {
    pub Version: u16,
    pub Size: u16,
    pub NpiId: *const GUID,
    pub ModuleId: *const NPI_MODULEID,
    pub Number: u32,
    pub NpiSpecificCharacteristics: *const c_void,
}

pub type ProviderAttachClientFn = unsafe extern "win64" fn(
    nmr_binding_handle: HANDLE,
    provider_context: *mut c_void,
    client_registration_instance: *const NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS;
pub type ProviderDetachClientFn =
    unsafe extern "win64" fn(provider_binding_context: *mut c_void) -> NTSTATUS;
pub type ProviderCleanupBindingContextFn =
    unsafe extern "win64" fn(provider_binding_context: *mut c_void);
pub type ClientAttachProviderFn = unsafe extern "win64" fn(
    nmr_binding_handle: HANDLE,
    client_context: *mut c_void,
    provider_registration_instance: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS;
pub type ClientDetachProviderFn =
    unsafe extern "win64" fn(client_binding_context: *mut c_void) -> NTSTATUS;
pub type ClientCleanupBindingContextFn =
    unsafe extern "win64" fn(client_binding_context: *mut c_void);

/// `NPI_PROVIDER_CHARACTERISTICS` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_PROVIDER_CHARACTERISTICS {
    pub Version: u16,
    pub Length: u16,
    pub ProviderAttachClient: Option<ProviderAttachClientFn>,
    pub ProviderDetachClient: Option<ProviderDetachClientFn>,
    pub ProviderCleanupBindingContext: Option<ProviderCleanupBindingContextFn>,
    pub ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

/// `NPI_CLIENT_CHARACTERISTICS` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_CLIENT_CHARACTERISTICS {
    pub Version: u16,
    pub Length: u16,
    pub ClientAttachProvider: Option<ClientAttachProviderFn>,
    pub ClientDetachProvider: Option<ClientDetachProviderFn>,
    pub ClientCleanupBindingContext: Option<ClientCleanupBindingContextFn>,
    pub ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

const _: () = {
    assert!(std::mem::size_of::<NPI_MODULEID>() == 24);
    assert!(std::mem::offset_of!(NPI_MODULEID, Guid) == 8);
    assert!(std::mem::size_of::<NPI_REGISTRATION_INSTANCE>() == 40);
    assert!(std::mem::offset_of!(NPI_REGISTRATION_INSTANCE, NpiSpecificCharacteristics) == 32);
    assert!(std::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>() == 72);
    assert!(std::mem::offset_of!(NPI_PROVIDER_CHARACTERISTICS, ProviderRegistrationInstance) == 32);
    assert!(std::mem::size_of::<NPI_CLIENT_CHARACTERISTICS>() == 72);
};

pub(crate) fn exports() -> Vec<Export> {
    Vec::new()
}

/// Forgets all state (a new [`crate::Sim`]).
pub(crate) fn reset() {}

/// What a driver left behind, one line each.
pub(crate) fn outstanding() -> Vec<String> {
    Vec::new()
}
