//! What host code and tests can see of the NMR: registrations, bindings
//! and their states, and the IRQL detach callbacks run at.

use super::*;

/// Which side of an NPI a registration is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Provider,
    Client,
}

impl Side {
    pub(super) fn other(self) -> Side {
        match self {
            Side::Provider => Side::Client,
            Side::Client => Side::Provider,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Side::Provider => "provider",
            Side::Client => "client",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Side::Provider => "Provider",
            Side::Client => "Client",
        }
    }

    pub(super) fn complete_api(self) -> &'static str {
        match self {
            Side::Provider => "NmrProviderDetachClientComplete",
            Side::Client => "NmrClientDetachProviderComplete",
        }
    }
}

/// How far one side of a binding has got with detaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachState {
    /// Its detach callback has not been called yet.
    NotCalled,
    /// Its detach callback is running.
    InCallback,
    /// Its detach callback is running and already called its
    /// `*DetachComplete` (so it must return STATUS_PENDING).
    CompletedInCallback,
    /// Its detach callback returned STATUS_PENDING; the `*DetachComplete`
    /// call is awaited.
    Pending,
    /// Detached.
    Done,
}

/// The life cycle of a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingState {
    /// The client's ClientAttachProvider is running.
    Attaching,
    /// Both sides attached.
    Bound,
    /// Detach callbacks called; waiting for both sides to complete.
    Detaching {
        provider: DetachState,
        client: DetachState,
    },
    /// Both sides detached; the cleanup callbacks are being called.
    CleaningUp,
}

/// One binding between a provider and a client registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingInfo {
    /// The NMR binding handle the modules see.
    pub handle: HANDLE,
    pub npi_id: GUID,
    /// Registration handles.
    pub provider: HANDLE,
    pub client: HANDLE,
    /// `ModuleId->Guid` of each side (as copied at registration).
    pub provider_module: GUID,
    pub client_module: GUID,
    pub state: BindingState,
    /// When the provider's detach callback returned ([`clock`] tick), if it
    /// has.
    pub provider_detach_at: Option<u64>,
}

/// One registration the NMR still holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationInfo {
    pub handle: HANDLE,
    pub side: Side,
    pub npi_id: GUID,
    pub module_id: GUID,
    /// `NmrDeregister*` has been called.
    pub deregistering: bool,
    /// A thread is blocked in `NmrWaitFor*DeregisterComplete` for it.
    pub waiting: bool,
    /// Bindings of this registration not yet cleaned up.
    pub bindings: usize,
}

/// Sets the IRQL at which the NMR calls detach callbacks from now on
/// (DISPATCH_LEVEL after every reset: Windows may call them there, so a
/// detach callback that blocks is caught).
pub fn set_detach_irql(level: KIRQL) {
    DETACH_IRQL.store(level, Ordering::SeqCst);
}

/// Sets the IRQL at which the NMR calls cleanup callbacks from now on:
/// DISPATCH_LEVEL after every reset (the highest Windows documents), or
/// PASSIVE_LEVEL for a test that needs it.
pub fn set_cleanup_irql(level: KIRQL) {
    CLEANUP_IRQL.store(level, Ordering::SeqCst);
}

/// The IRQL at which cleanup callbacks run.
pub fn cleanup_irql() -> KIRQL {
    CLEANUP_IRQL.load(Ordering::SeqCst)
}

/// The IRQL at which detach callbacks run.
pub fn detach_irql() -> KIRQL {
    DETACH_IRQL.load(Ordering::SeqCst)
}

fn info(st: &State, handle: HANDLE, b: &Binding) -> BindingInfo {
    let p = st.regs.get(&b.provider);
    let c = st.regs.get(&b.client);
    BindingInfo {
        handle,
        npi_id: p.map(|r| r.npi_id).unwrap_or_default(),
        provider: b.provider,
        client: b.client,
        provider_module: p.map(|r| r.module_id).unwrap_or_default(),
        client_module: c.map(|r| r.module_id).unwrap_or_default(),
        state: b.phase.public(),
        provider_detach_at: (b.provider_detach_at != 0).then_some(b.provider_detach_at),
    }
}

/// Every binding, in creation order.
pub fn bindings() -> Vec<BindingInfo> {
    let st = state();
    st.bindings
        .iter()
        .map(|(&handle, b)| info(&st, handle, b))
        .collect()
}

/// One binding, if it still exists (not yet cleaned up).
pub fn binding(handle: HANDLE) -> Option<BindingInfo> {
    let st = state();
    st.bindings.get(&handle).map(|b| info(&st, handle, b))
}

/// Every registration the NMR holds (until its deregistration has been
/// waited for), in registration order.
pub fn registrations() -> Vec<RegistrationInfo> {
    state()
        .regs
        .iter()
        .map(|(&handle, r)| RegistrationInfo {
            handle,
            side: r.side,
            npi_id: r.npi_id,
            module_id: r.module_id,
            deregistering: r.deregistered,
            waiting: r.waiting,
            bindings: r.bindings,
        })
        .collect()
}

/// Provider registrations not yet fully deregistered (registered, or
/// deregistering with bindings left).
pub fn provider_count() -> usize {
    live_count(Side::Provider)
}

/// Client registrations not yet fully deregistered.
pub fn client_count() -> usize {
    live_count(Side::Client)
}

pub(super) fn live_count(side: Side) -> usize {
    state()
        .regs
        .values()
        .filter(|r| r.side == side && !(r.deregistered && r.bindings == 0))
        .count()
}
