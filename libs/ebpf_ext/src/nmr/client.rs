//! A safe NMR client: the mirror image of the provider in [`super`].
//!
//! A [`ClientRegistration`] is a `static` (NMR keeps pointers into it for
//! as long as the registration lasts). The callbacks become methods of the
//! [`Client`] trait; the `extern "system"` trampolines below hold the only
//! `unsafe` code, turning NMR's raw pointers back into references.
//!
//! Binding to a provider happens inside NMR's attach callback: the client
//! decides ([`Client::attach`]) and hands its dispatch table, then this
//! module stores the per-binding state in pool and calls
//! `NmrClientAttachProvider`, which runs the provider's own attach. The
//! provider may call the client's dispatch functions before that call
//! returns, so a client's functions must not depend on the binding being
//! recorded.

use crate::nt::{self, NtResult, HANDLE, NTSTATUS};
use crate::pool::PoolBox;
use crate::sync::Detach;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// What NMR tells a client about a provider it may bind to.
pub struct ProviderAttach<'a> {
    /// The provider's registration instance (NpiId, ModuleId, its
    /// NPI-specific characteristics).
    pub registration: &'a nt::NPI_REGISTRATION_INSTANCE,
    /// The provider's module id GUID (zero when it has none), for tracing.
    pub provider_module: nt::GUID,
}

/// The callbacks of an NMR client.
pub trait Client: Sync + 'static {
    /// The client's per-provider state, owned by NMR's binding from attach
    /// to cleanup (stored in pool by this module).
    type Binding: Sync;

    /// A provider of the NPI is available (PASSIVE_LEVEL). Returns the
    /// per-binding state and the client dispatch table to bind with, or the
    /// status that declines the binding.
    ///
    /// # Errors
    /// The status returned to NMR; the provider is not bound.
    fn attach(
        &'static self,
        provider: &ProviderAttach<'_>,
    ) -> NtResult<(Self::Binding, *const c_void)>;

    /// The provider accepted: the binding is at its final address, where it
    /// stays until it is dropped after [`cleanup`](Self::cleanup).
    fn attached(&'static self, _binding: &Self::Binding) {}

    /// The binding could not be made: `why` is the failure (out of memory,
    /// or the status of the provider's refusal). Undo what `attach` did.
    fn abandon(&'static self, binding: Self::Binding, why: nt::Error);

    /// Detach (IRQL <= DISPATCH_LEVEL, must not block): [`Detach::Complete`]
    /// when the binding may be cleaned up now, or [`Detach::Pending`] and
    /// later a call of [`detach_complete`] with the binding's handle.
    fn detach(&'static self, binding: &Self::Binding) -> Detach;

    /// Both sides have detached (IRQL <= DISPATCH_LEVEL); the binding is
    /// dropped and its memory freed when this returns.
    fn cleanup(&'static self, _binding: &Self::Binding) {}
}

/// Reports a pending detach as complete (IRQL <= DISPATCH_LEVEL).
///
/// # Safety
/// `binding_handle` is the handle NMR gave the attach of a binding whose
/// [`Client::detach`] returned [`Detach::Pending`]; called once per such
/// detach.
pub unsafe fn detach_complete(binding_handle: HANDLE) {
    // SAFETY: the caller's contract; callable at <= DISPATCH_LEVEL.
    unsafe { nt::NmrClientDetachProviderComplete(binding_handle) }
}

/// The client's binding context as NMR stores it.
struct BindingContext<C: Client> {
    client: &'static C,
    binding: C::Binding,
    /// Written by `NmrClientAttachProvider`; never dereferenced here.
    provider_binding_context: *mut c_void,
    /// Written by `NmrClientAttachProvider`; never dereferenced here.
    provider_dispatch: *const c_void,
}

/// A client registration that lives in a `static`.
///
/// # Invariants
/// `handle` is 0 exactly when the client is not registered with NMR, else
/// the handle `NmrRegisterClient` returned; the raw pointers in
/// `characteristics` point to statics.
pub struct ClientRegistration<C: Client> {
    characteristics: nt::NPI_CLIENT_CHARACTERISTICS,
    handle: AtomicUsize,
    client: C,
}

// SAFETY: the characteristics are written only by `new` (const) and read by
// NMR; their raw pointers point to statics. The handle is atomic and C is
// Sync by the trait bound.
unsafe impl<C: Client> Sync for ClientRegistration<C> {}

impl<C: Client> ClientRegistration<C> {
    /// Describes a client of `npi_id` with module id `module_id` (statics)
    /// and no NPI-specific characteristics.
    pub const fn new(
        npi_id: &'static nt::GUID,
        module_id: &'static nt::NPI_MODULEID,
        client: C,
    ) -> Self {
        ClientRegistration {
            characteristics: nt::NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: core::mem::size_of::<nt::NPI_CLIENT_CHARACTERISTICS>() as u16,
                ClientAttachProvider: Some(attach_trampoline::<C>),
                ClientDetachProvider: Some(detach_trampoline::<C>),
                ClientCleanupBindingContext: Some(cleanup_trampoline::<C>),
                ClientRegistrationInstance: nt::NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: core::mem::size_of::<nt::NPI_REGISTRATION_INSTANCE>() as u16,
                    NpiId: npi_id,
                    ModuleId: module_id,
                    Number: 0,
                    NpiSpecificCharacteristics: ptr::null(),
                },
            },
            handle: AtomicUsize::new(0),
            client,
        }
    }

    /// The client's callbacks.
    pub fn client(&'static self) -> &'static C {
        &self.client
    }

    /// Registers with NMR (PASSIVE_LEVEL). Providers already registered may
    /// attach during this call.
    ///
    /// # Errors
    /// The status of `NmrRegisterClient`.
    pub fn register(&'static self) -> NtResult {
        debug_assert_eq!(self.handle.load(Ordering::Relaxed), 0);
        let mut handle: HANDLE = 0;
        // SAFETY: the characteristics and everything they point to are
        // statics; the context is `self`, also a static.
        let status = unsafe {
            nt::NmrRegisterClient(
                &self.characteristics,
                (self as *const Self).cast(),
                &mut handle,
            )
        };
        nt::check(status)?;
        // INVARIANT: registered, with this handle.
        self.handle.store(handle, Ordering::Release);
        Ok(())
    }

    /// Deregisters and waits until every provider binding has been detached
    /// and cleaned up (PASSIVE_LEVEL). Does nothing if not registered.
    ///
    /// # Errors
    /// The status of the deregistration or of its wait (logged by the
    /// caller); the client counts as deregistered either way.
    pub fn deregister(&'static self) -> NtResult {
        // INVARIANT: from here on the client counts as not registered.
        let handle = self.handle.swap(0, Ordering::AcqRel);
        if handle == 0 {
            return Ok(());
        }
        // SAFETY: a handle NmrRegisterClient returned, deregistered once
        // (the swap above guarantees it).
        match unsafe { nt::NmrDeregisterClient(handle) } {
            nt::STATUS_PENDING => {
                // SAFETY: same handle; PASSIVE_LEVEL (caller's contract).
                nt::check(unsafe { nt::NmrWaitForClientDeregisterComplete(handle) })
            }
            other => nt::check(other),
        }
    }
}

unsafe extern "system" fn attach_trampoline<C: Client>(
    binding_handle: HANDLE,
    client_context: *mut c_void,
    provider_registration: *const nt::NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    if provider_registration.is_null() {
        return nt::Error::INVALID_PARAMETER.status();
    }
    // SAFETY: the client context is the ClientRegistration<C> static that
    // `register` passed to NMR.
    let registration = unsafe { &*(client_context as *const ClientRegistration<C>) };
    // SAFETY: NMR passes the provider's registration instance, valid for
    // the duration of the call (checked non-null above).
    let provider_registration = unsafe { &*provider_registration };
    let provider_module = if provider_registration.ModuleId.is_null() {
        nt::GUID::new(0, 0, 0, [0; 8])
    } else {
        // SAFETY: a non-null module id of the registration instance.
        unsafe { (*provider_registration.ModuleId).Guid }
    };
    let provider = ProviderAttach {
        registration: provider_registration,
        provider_module,
    };
    nt::into_status(attach(registration, binding_handle, &provider))
}

/// The attach callback in safe Rust: the binding is stored in pool and
/// offered to the provider, or everything `C::attach` did is undone.
fn attach<C: Client>(
    registration: &'static ClientRegistration<C>,
    binding_handle: HANDLE,
    provider: &ProviderAttach<'_>,
) -> NtResult {
    let client = &registration.client;
    let (binding, dispatch) = client.attach(provider)?;
    let context = BindingContext {
        client,
        binding,
        provider_binding_context: ptr::null_mut(),
        provider_dispatch: ptr::null(),
    };
    let context = match PoolBox::try_new(context) {
        Ok(context) => context,
        Err(context) => {
            let e = nt::Error::INSUFFICIENT_RESOURCES;
            client.abandon(context.binding, e);
            return Err(e);
        }
    };
    // From here the block is reached through this one pointer, which NMR
    // keeps until cleanup.
    let raw = PoolBox::into_raw(context);
    // SAFETY: `raw` is the live block; only a field's address is taken.
    let provider_context = unsafe { ptr::addr_of_mut!((*raw).provider_binding_context) };
    // SAFETY: as above.
    let provider_dispatch = unsafe { ptr::addr_of_mut!((*raw).provider_dispatch) };
    // SAFETY: the binding handle of this attach; the binding context is
    // the pool block, which stays put until cleanup; the dispatch table is
    // the client's (a static); the out-pointers are fields of that block.
    let status = unsafe {
        nt::NmrClientAttachProvider(
            binding_handle,
            raw.cast(),
            dispatch,
            provider_context,
            provider_dispatch,
        )
    };
    if let Err(e) = nt::check(status) {
        // SAFETY: the block given away above; NMR keeps nothing of a
        // binding whose attach failed.
        let context = PoolBox::into_inner(unsafe { PoolBox::from_raw(raw) });
        client.abandon(context.binding, e);
        return Err(e);
    }
    // SAFETY: the live block; NMR owns it from here until cleanup, which
    // comes after this callback returns.
    client.attached(unsafe { &(*raw).binding });
    Ok(())
}

unsafe extern "system" fn detach_trampoline<C: Client>(binding_context: *mut c_void) -> NTSTATUS {
    // SAFETY: NMR passes back the block attach handed to
    // NmrClientAttachProvider: live until cleanup, which comes later.
    let context = unsafe { &*(binding_context as *const BindingContext<C>) };
    match context.client.detach(&context.binding) {
        Detach::Complete => nt::STATUS_SUCCESS,
        Detach::Pending => nt::STATUS_PENDING,
    }
}

unsafe extern "system" fn cleanup_trampoline<C: Client>(binding_context: *mut c_void) {
    // SAFETY: NMR calls cleanup once per binding after both sides detached:
    // ownership of the block comes back here.
    let context = unsafe { PoolBox::from_raw(binding_context as *mut BindingContext<C>) };
    context.client.cleanup(&context.binding);
    drop(context);
}
