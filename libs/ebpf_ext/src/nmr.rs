//! A safe NMR provider, and ([`client`]) a safe NMR client.
//!
//! A [`ProviderRegistration`] is a `static`: NMR keeps pointers to the
//! characteristics, the NPI id and the module id for as long as the
//! registration lasts, and a static outlives any registration. The callbacks
//! become methods of the [`Provider`] trait; the only `unsafe` code is in the
//! `extern "system"` trampolines below, which turn NMR's raw pointers back
//! into the references the trait methods take.

pub mod client;

use crate::nt::{self, NtResult, HANDLE, NTSTATUS};
use crate::pool::PoolBox;
use crate::sync::Detach;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// What NMR tells a provider about a client that wants to attach.
pub struct ClientAttach<'a> {
    /// The client's registration instance (NpiId, ModuleId, its NPI-specific
    /// characteristics).
    pub registration: &'a nt::NPI_REGISTRATION_INSTANCE,
    /// The client's binding context, passed back to its dispatch functions.
    pub binding_context: *const c_void,
    /// The client's dispatch table (NPI-specific layout).
    pub dispatch: *const c_void,
    /// The client's module id (a GUID for eBPF clients), for tracing.
    pub client_module: nt::GUID,
    /// This provider's module id GUID, for tracing.
    pub provider_module: nt::GUID,
}

/// The callbacks of an NMR provider.
pub trait Provider: Sync + 'static {
    /// The provider's per-client state, owned by NMR's binding from attach
    /// to cleanup (stored in pool by this module).
    type Binding: Sync;

    /// A client asks to attach (PASSIVE_LEVEL). On success returns the
    /// per-client state and the provider dispatch table (null when the NPI
    /// defines none).
    ///
    /// # Errors
    /// The status NMR reports for the refused attach.
    fn attach(
        &'static self,
        binding_handle: HANDLE,
        client: &ClientAttach<'_>,
    ) -> NtResult<(Self::Binding, *const c_void)>;

    /// The binding is at its final address, where it stays until it is
    /// dropped after [`cleanup`](Self::cleanup), and is about to be handed
    /// to NMR (still inside the attach callback): the place to publish it.
    fn attached(&'static self, _binding: &Self::Binding) {}

    /// The binding could not be stored (out of memory): undo what `attach`
    /// did; the attach fails.
    fn abandon(&'static self, binding: Self::Binding);

    /// Detach (IRQL <= DISPATCH_LEVEL, must not block): [`Detach::Complete`]
    /// when the client may be cleaned up now (STATUS_SUCCESS to NMR), or
    /// [`Detach::Pending`] (STATUS_PENDING) and later a call of
    /// [`detach_complete`] with the binding handle given to `attach`.
    fn detach(&'static self, binding: &Self::Binding) -> Detach;

    /// Both sides have detached (IRQL <= DISPATCH_LEVEL). The binding is
    /// dropped and its memory freed when this returns.
    fn cleanup(&'static self, binding: &Self::Binding);
}

/// Reports a pending detach as complete (IRQL <= DISPATCH_LEVEL).
///
/// # Safety
/// `binding_handle` is the handle NMR gave [`Provider::attach`] for a
/// binding whose detach returned [`Detach::Pending`]; called once per such
/// detach.
pub unsafe fn detach_complete(binding_handle: HANDLE) {
    // The event first: once NMR hears of it, the binding may be gone.
    crate::trace::client_detach_complete(binding_handle);
    // SAFETY: the caller's contract; callable at <= DISPATCH_LEVEL.
    unsafe { nt::NmrProviderDetachClientComplete(binding_handle) }
}

/// The provider's binding context as NMR stores it: the provider and its
/// per-client state, and what the trace events of the binding name.
struct BindingContext<P: Provider> {
    provider: &'static P,
    binding: P::Binding,
    provider_module: nt::GUID,
    client_module: nt::GUID,
    binding_handle: HANDLE,
}

/// A provider registration that lives in a `static`.
///
/// # Invariants
/// `handle` is 0 exactly when the provider is not registered with NMR, else
/// the handle `NmrRegisterProvider` returned; the raw pointers in
/// `characteristics` point to statics.
pub struct ProviderRegistration<P: Provider> {
    characteristics: nt::NPI_PROVIDER_CHARACTERISTICS,
    handle: AtomicUsize,
    provider: P,
}

// SAFETY: the characteristics are written only by `new` (const) and read by
// NMR; their raw pointers point to statics. The handle is atomic and P is
// Sync by the trait bound.
unsafe impl<P: Provider> Sync for ProviderRegistration<P> {}

impl<P: Provider> ProviderRegistration<P> {
    /// Describes a provider of `npi_id` with module id `module_id` and
    /// NPI-specific characteristics `specific` (all statics).
    pub const fn new(
        npi_id: &'static nt::GUID,
        module_id: &'static nt::NPI_MODULEID,
        specific: *const c_void,
        provider: P,
    ) -> Self {
        ProviderRegistration {
            characteristics: nt::NPI_PROVIDER_CHARACTERISTICS {
                Version: 0,
                Length: core::mem::size_of::<nt::NPI_PROVIDER_CHARACTERISTICS>() as u16,
                ProviderAttachClient: Some(attach_trampoline::<P>),
                ProviderDetachClient: Some(detach_trampoline::<P>),
                ProviderCleanupBindingContext: Some(cleanup_trampoline::<P>),
                ProviderRegistrationInstance: nt::NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: core::mem::size_of::<nt::NPI_REGISTRATION_INSTANCE>() as u16,
                    NpiId: npi_id,
                    ModuleId: module_id,
                    Number: 0,
                    NpiSpecificCharacteristics: specific,
                },
            },
            handle: AtomicUsize::new(0),
            provider,
        }
    }

    /// The provider's callbacks.
    pub fn provider(&'static self) -> &'static P {
        &self.provider
    }

    /// The NPI id and this provider's module id GUID.
    fn ids(&self) -> (nt::GUID, nt::GUID) {
        let instance = &self.characteristics.ProviderRegistrationInstance;
        // SAFETY: points to a static (type invariant).
        let npi = unsafe { *instance.NpiId };
        // SAFETY: as above.
        let module = unsafe { (*instance.ModuleId).Guid };
        (npi, module)
    }

    /// Registers with NMR (PASSIVE_LEVEL). Clients already registered attach
    /// during this call.
    ///
    /// # Errors
    /// The status of `NmrRegisterProvider`.
    pub fn register(&'static self) -> NtResult {
        debug_assert_eq!(self.handle.load(Ordering::Relaxed), 0);
        let mut handle: HANDLE = 0;
        // SAFETY: the characteristics and everything they point to are
        // statics, valid for as long as NMR may use them; the context is
        // `self`, also a static.
        let status = unsafe {
            nt::NmrRegisterProvider(
                &self.characteristics,
                (self as *const Self).cast(),
                &mut handle,
            )
        };
        let (npi, module) = self.ids();
        let registered = nt::check(status);
        crate::trace::provider_register(&npi, &module, registered);
        registered?;
        // INVARIANT: registered, with this handle.
        self.handle.store(handle, Ordering::Release);
        Ok(())
    }

    /// Deregisters and waits until every client has detached and been
    /// cleaned up (PASSIVE_LEVEL). Does nothing if not registered.
    pub fn deregister(&'static self) {
        // INVARIANT: from here on the provider counts as not registered;
        // this function finishes the deregistration before returning.
        let handle = self.handle.swap(0, Ordering::AcqRel);
        if handle == 0 {
            return;
        }
        // SAFETY: a handle NmrRegisterProvider returned, deregistered once
        // (the swap above guarantees it).
        let status = unsafe { nt::NmrDeregisterProvider(handle) };
        let (api, waited) = match status {
            nt::STATUS_PENDING => (
                c"NmrWaitForProviderDeregisterComplete",
                // SAFETY: same handle; the wait is legal at PASSIVE_LEVEL,
                // where unload and DriverEntry's unwinding run.
                nt::check(unsafe { nt::NmrWaitForProviderDeregisterComplete(handle) }),
            ),
            other => (c"NmrDeregisterProvider", nt::check(other)),
        };
        if let Err(e) = waited {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "deregistering an NMR provider failed: {e:#x}"
            );
            crate::trace::api_failure(crate::trace::keyword::EXTENSION, api, e.status());
        }
        let (npi, module) = self.ids();
        crate::trace::provider_deregister(&npi, &module, waited);
    }
}

unsafe extern "system" fn attach_trampoline<P: Provider>(
    binding_handle: HANDLE,
    provider_context: *mut c_void,
    client_registration: *const nt::NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    if client_registration.is_null() || provider_binding_context.is_null() {
        return nt::Error::INVALID_PARAMETER.status();
    }
    // SAFETY: the provider context is the ProviderRegistration<P> static
    // that `register` passed to NMR.
    let registration = unsafe { &*(provider_context as *const ProviderRegistration<P>) };
    // SAFETY: NMR passes the client's registration instance, valid for the
    // duration of the call (checked non-null above).
    let client_registration = unsafe { &*client_registration };
    let client_module = if client_registration.ModuleId.is_null() {
        nt::GUID::new(0, 0, 0, [0; 8])
    } else {
        // SAFETY: a non-null module id of the registration instance, valid
        // for the call.
        unsafe { (*client_registration.ModuleId).Guid }
    };
    let (npi, provider_module) = registration.ids();
    let client = ClientAttach {
        registration: client_registration,
        binding_context: client_binding_context,
        dispatch: client_dispatch,
        client_module,
        provider_module,
    };
    let attached = attach(registration, binding_handle, &client).map(|(context, dispatch)| {
        // SAFETY: NMR's out-pointer, checked non-null above.
        unsafe { *provider_binding_context = PoolBox::into_raw(context).cast() };
        if !provider_dispatch.is_null() {
            // SAFETY: NMR's out-pointer, non-null.
            unsafe { *provider_dispatch = dispatch };
        }
    });
    crate::trace::client_attach(
        &npi,
        &provider_module,
        &client_module,
        binding_handle,
        attached,
    );
    nt::into_status(attached)
}

/// The attach callback in safe Rust: the binding is stored in pool and
/// published, or everything `P::attach` did is undone.
fn attach<P: Provider>(
    registration: &'static ProviderRegistration<P>,
    binding_handle: HANDLE,
    client: &ClientAttach<'_>,
) -> NtResult<(PoolBox<BindingContext<P>>, *const c_void)> {
    let provider = &registration.provider;
    let (binding, dispatch) = provider.attach(binding_handle, client)?;
    let context = BindingContext {
        provider,
        binding,
        provider_module: client.provider_module,
        client_module: client.client_module,
        binding_handle,
    };
    match PoolBox::try_new(context) {
        Ok(context) => {
            provider.attached(&context.binding);
            Ok((context, dispatch))
        }
        Err(context) => {
            provider.abandon(context.binding);
            let e = nt::Error::INSUFFICIENT_RESOURCES;
            crate::trace::api_failure(
                crate::trace::keyword::EXTENSION,
                c"ExAllocatePool2",
                e.status(),
            );
            Err(e)
        }
    }
}

unsafe extern "system" fn detach_trampoline<P: Provider>(binding_context: *mut c_void) -> NTSTATUS {
    // SAFETY: NMR passes back the pointer attach stored: a live
    // BindingContext<P> (freed only in cleanup, which comes after detach).
    let context = unsafe { &*(binding_context as *const BindingContext<P>) };
    let status = match context.provider.detach(&context.binding) {
        Detach::Complete => nt::STATUS_SUCCESS,
        Detach::Pending => nt::STATUS_PENDING,
    };
    crate::trace::client_detach(
        &context.provider_module,
        &context.client_module,
        context.binding_handle,
        status,
    );
    status
}

unsafe extern "system" fn cleanup_trampoline<P: Provider>(binding_context: *mut c_void) {
    // SAFETY: NMR calls cleanup exactly once per binding, after both sides
    // detached: ownership of the BindingContext<P> comes back here.
    let context = unsafe { PoolBox::from_raw(binding_context as *mut BindingContext<P>) };
    context.provider.cleanup(&context.binding);
    crate::trace::client_cleanup(
        &context.provider_module,
        &context.client_module,
        context.binding_handle,
    );
    drop(context);
}

/// A provider for NPIs that exchange no per-client state and no dispatch
/// table (the program-information NPI): attach always succeeds, detach
/// completes at once.
pub struct StatelessProvider;

impl Provider for StatelessProvider {
    type Binding = ();

    fn attach(
        &'static self,
        _binding_handle: HANDLE,
        _client: &ClientAttach<'_>,
    ) -> NtResult<((), *const c_void)> {
        Ok(((), ptr::null()))
    }

    fn abandon(&'static self, _binding: ()) {}

    fn detach(&'static self, _binding: &()) -> Detach {
        Detach::Complete
    }

    fn cleanup(&'static self, _binding: &()) {}
}
