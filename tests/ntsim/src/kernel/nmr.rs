//! Network Module Registrar (netioddk.h, exported by NETIO.SYS).
//!
//! Providers and clients of a Network Programming Interface (NPI) register
//! with the NMR, which binds every client to every provider of the same
//! NpiId and unbinds them when either side deregisters. The exports below
//! are `pub unsafe extern "win64"` functions under their Windows names, so
//! the driver image (through its import table) and host Rust code (tests,
//! the eBPF core) use the very same registrar.
//!
//! Semantics (Windows', with the checks Driver Verifier would make):
//!
//! - Attach: when a provider and a client of equal NpiId are both
//!   registered (and neither is deregistering), the NMR calls the client's
//!   `ClientAttachProvider` at PASSIVE_LEVEL; a client that wants the
//!   provider calls [`NmrClientAttachProvider`] from inside it, which calls
//!   the provider's `ProviderAttachClient`. The binding exists once both
//!   succeeded and the client's callback returned success.
//! - Detach: deregistering either side calls `ProviderDetachClient` and
//!   `ClientDetachProvider` of each of its bindings (the deregistering
//!   side's first), at the IRQL set by [`set_detach_irql`] (DISPATCH_LEVEL
//!   by default, as Windows may). Each returns STATUS_SUCCESS, or
//!   STATUS_PENDING and later calls its `Nmr*DetachComplete`, from any
//!   thread at <= DISPATCH_LEVEL. When both sides have completed, the NMR
//!   calls both cleanup callbacks at the IRQL set by [`set_cleanup_irql`]:
//!   DISPATCH_LEVEL by default, on the thread that completed the detach
//!   (Windows documents IRQL <= DISPATCH_LEVEL); at PASSIVE_LEVEL on a
//!   worker thread when the last completion came above PASSIVE_LEVEL.
//! - Deregistration returns STATUS_PENDING, the only success Windows
//!   documents, even when no binding is left: the module must then call
//!   `NmrWaitFor*DeregisterComplete`, which blocks until every binding has
//!   been cleaned up (and fails with a message after
//!   [`crate::kernel::sync::wait_limit`] instead of hanging). A pending
//!   deregistration never waited for stays in the outstanding list
//!   ([`crate::Sim::finish`] reports it), and a driver whose unload routine
//!   returns before the wait is reported as a violation.
//! - The NMR keeps the *pointers* to the characteristics (and reads the
//!   callbacks, NpiId and registration instance through them whenever it
//!   needs them), as Windows does: they must stay valid until
//!   deregistration has completed.
//! - Handles are opaque non-zero numbers looked up in a table and never
//!   reused, so stale or wrong-kind handles are detected.
//!
//! No Rust lock is held while foreign code runs: callbacks may call back
//! into the NMR (and do).

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::status::{
    self, nt_success, NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
    STATUS_NOINTERFACE, STATUS_PENDING, STATUS_SUCCESS,
};
use crate::kernel::types::{DISPATCH_LEVEL, GUID, HANDLE, KIRQL, PASSIVE_LEVEL};
use crate::kernel::{fault, irql, sync, violation};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

mod deregister;
mod inspect;
#[cfg(test)]
mod tests;

use deregister::{deregister, wait_for_deregister};
pub use inspect::*;

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
    assert!(std::mem::offset_of!(NPI_CLIENT_CHARACTERISTICS, ClientRegistrationInstance) == 32);
};

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NmrAttach {
    NotCalled,
    InProgress,
    Attached,
    Failed,
}

enum Phase {
    /// ClientAttachProvider is running on `thread`.
    Attaching {
        thread: ThreadId,
        nmr: NmrAttach,
    },
    Bound,
    Detaching {
        provider: DetachState,
        client: DetachState,
    },
    CleaningUp,
}

impl Phase {
    fn public(&self) -> BindingState {
        match *self {
            Phase::Attaching { .. } => BindingState::Attaching,
            Phase::Bound => BindingState::Bound,
            Phase::Detaching { provider, client } => BindingState::Detaching { provider, client },
            Phase::CleaningUp => BindingState::CleaningUp,
        }
    }
}

struct Registration {
    side: Side,
    /// The module's `NPI_*_CHARACTERISTICS` (kept as a pointer, read when needed).
    chars: usize,
    context: usize,
    /// Copies for diagnostics only (the image may be gone when they are
    /// printed); matching reads the NpiId through `chars`.
    npi_id: GUID,
    module_id: GUID,
    deregistered: bool,
    /// `NmrDeregister*` returned STATUS_PENDING: a wait is owed.
    wait_required: bool,
    waiting: bool,
    bindings: usize,
}

struct Binding {
    provider: HANDLE,
    client: HANDLE,
    phase: Phase,
    provider_ctx: usize,
    client_ctx: usize,
    /// [`clock`] when ProviderDetachClient returned (0: not yet).
    provider_detach_at: u64,
}

struct State {
    regs: BTreeMap<HANDLE, Registration>,
    bindings: BTreeMap<HANDLE, Binding>,
    /// Bumped by every reset: work started before it is dropped.
    generation: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    regs: BTreeMap::new(),
    bindings: BTreeMap::new(),
    generation: 0,
});
/// Signalled whenever a binding goes away (and at reset).
static CHANGED: Condvar = Condvar::new();
/// Handles are never reused (not even across resets).
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);
static DETACH_IRQL: AtomicU8 = AtomicU8::new(DISPATCH_LEVEL);
static CLEANUP_IRQL: AtomicU8 = AtomicU8::new(DISPATCH_LEVEL);

/// A process-wide logical clock: ordering NMR events against other events
/// (an eBPF batch's begin, for one).
static CLOCK: AtomicU64 = AtomicU64::new(1);

/// The next tick of the logical clock that stamps when a provider's detach
/// callback returned ([`BindingInfo::provider_detach_at`]).
pub fn clock() -> u64 {
    CLOCK.fetch_add(1, Ordering::AcqRel)
}

/// Handles look like `0x4e4d52..` ("NMR") followed by a serial number.
const HANDLE_BASE: usize = 0x4e4d_5200_0000_0000;

fn state() -> MutexGuard<'static, State> {
    // A panic while holding the lock leaves the maps consistent (every
    // mutation is a single insert/remove/assignment), so poison is ignored.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_handle() -> HANDLE {
    HANDLE_BASE + NEXT_HANDLE.fetch_add(1, Ordering::Relaxed)
}

fn nmr_violation(message: String) {
    violation::record("nmr", message);
}

impl State {
    /// The registration behind `handle` if it is a live registration of
    /// `side`; records a violation otherwise.
    fn registration(&mut self, api: &str, handle: HANDLE, side: Side) -> Option<&mut Registration> {
        match self.regs.get_mut(&handle) {
            Some(r) if r.side == side => Some(r),
            Some(r) => {
                nmr_violation(format!(
                    "{api}({handle:#x}): that is a {} registration handle, not a {} one",
                    r.side.name(),
                    side.name()
                ));
                None
            }
            None => {
                let what = if self.bindings.contains_key(&handle) {
                    "a binding handle, not a registration handle"
                } else {
                    "not a live registration handle (never issued, or its deregistration was already waited for)"
                };
                nmr_violation(format!("{api}({handle:#x}): {what}"));
                None
            }
        }
    }

    /// Forgets a binding and releases its hold on both registrations.
    fn remove_binding(&mut self, b: HANDLE) {
        if let Some(bd) = self.bindings.remove(&b) {
            for r in [bd.provider, bd.client] {
                if let Some(reg) = self.regs.get_mut(&r) {
                    reg.bindings -= 1;
                }
            }
            CHANGED.notify_all();
        }
    }
}

// ---------------------------------------------------------------------------
// Reading the modules' characteristics (through the pointers they gave)
// ---------------------------------------------------------------------------

/// Offset of `*RegistrationInstance` in both characteristics structures.
const INSTANCE_OFFSET: usize =
    std::mem::offset_of!(NPI_PROVIDER_CHARACTERISTICS, ProviderRegistrationInstance);

/// # Safety
/// `chars` must point to a readable `NPI_PROVIDER_CHARACTERISTICS`.
unsafe fn provider_chars(chars: usize) -> NPI_PROVIDER_CHARACTERISTICS {
    // SAFETY: per the caller; every bit pattern is a valid value of the
    // struct (integers, raw pointers, optional fn pointers).
    unsafe { std::ptr::read_unaligned(chars as *const NPI_PROVIDER_CHARACTERISTICS) }
}

/// # Safety
/// `chars` must point to a readable `NPI_CLIENT_CHARACTERISTICS`.
unsafe fn client_chars(chars: usize) -> NPI_CLIENT_CHARACTERISTICS {
    // SAFETY: as in provider_chars.
    unsafe { std::ptr::read_unaligned(chars as *const NPI_CLIENT_CHARACTERISTICS) }
}

/// The registration instance inside a characteristics structure (the
/// pointer the NMR hands to the counterpart's attach callback).
fn instance_ptr(chars: usize) -> *const NPI_REGISTRATION_INSTANCE {
    (chars + INSTANCE_OFFSET) as *const NPI_REGISTRATION_INSTANCE
}

/// The NpiId of a registration, read through its characteristics.
///
/// # Safety
/// `chars` must be the live characteristics of a validated registration.
unsafe fn npi_id_of(chars: usize) -> GUID {
    // SAFETY: per the caller the structure is readable and its NpiId was
    // non-null at registration (the module must keep both valid).
    unsafe {
        let inst = std::ptr::read_unaligned(instance_ptr(chars));
        std::ptr::read_unaligned(inst.NpiId)
    }
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

/// What registration validates, read from either characteristics type.
struct Shape {
    version: u16,
    length: u16,
    attach: bool,
    detach: bool,
    instance: NPI_REGISTRATION_INSTANCE,
}

/// # Safety
/// `chars` is non-null and points to the module's characteristics of `side`.
unsafe fn register(
    side: Side,
    api: &'static str,
    chars: usize,
    context: usize,
    out: *mut HANDLE,
) -> NTSTATUS {
    irql::require_at_most(api, PASSIVE_LEVEL);
    if chars == 0 || out.is_null() {
        nmr_violation(format!(
            "{api}: null {}",
            if chars == 0 {
                "characteristics"
            } else {
                "handle pointer"
            }
        ));
        return STATUS_INVALID_PARAMETER;
    }
    let shape = match side {
        Side::Provider => {
            // SAFETY: non-null characteristics of this side, per the caller.
            let c = unsafe { provider_chars(chars) };
            Shape {
                version: c.Version,
                length: c.Length,
                attach: c.ProviderAttachClient.is_some(),
                detach: c.ProviderDetachClient.is_some(),
                instance: c.ProviderRegistrationInstance,
            }
        }
        Side::Client => {
            // SAFETY: as above.
            let c = unsafe { client_chars(chars) };
            Shape {
                version: c.Version,
                length: c.Length,
                attach: c.ClientAttachProvider.is_some(),
                detach: c.ClientDetachProvider.is_some(),
                instance: c.ClientRegistrationInstance,
            }
        }
    };
    let expected_len = std::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>();
    let problem = if shape.version != 0 {
        Some(format!("Version is {} (must be 0)", shape.version))
    } else if (shape.length as usize) < expected_len {
        Some(format!(
            "Length is {} (must be at least sizeof(NPI_{}_CHARACTERISTICS) = {expected_len})",
            shape.length,
            side.name().to_ascii_uppercase()
        ))
    } else if !shape.attach || !shape.detach {
        Some(format!(
            "{} callback is null",
            if shape.attach {
                "the detach"
            } else {
                "the attach"
            }
        ))
    } else if shape.instance.NpiId.is_null() {
        Some("RegistrationInstance.NpiId is null".to_string())
    } else if shape.instance.ModuleId.is_null() {
        Some("RegistrationInstance.ModuleId is null".to_string())
    } else {
        None
    };
    if let Some(p) = problem {
        nmr_violation(format!("{api}: invalid characteristics: {p}"));
        return STATUS_INVALID_PARAMETER;
    }
    if fault::check(api) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: both pointers were checked non-null just above; the module
    // guarantees they point to its NpiId and NPI_MODULEID.
    let (npi_id, module_id) = unsafe {
        (
            std::ptr::read_unaligned(shape.instance.NpiId),
            std::ptr::read_unaligned(shape.instance.ModuleId).Guid,
        )
    };

    let handle = new_handle();
    let thread = std::thread::current().id();
    let mut new_bindings = Vec::new();
    {
        // Insertion and matching happen in one critical section, so of two
        // modules registering concurrently exactly one sees the other.
        let mut st = state();
        let mut matches = Vec::new();
        for (&h, r) in &st.regs {
            // SAFETY: `r.chars` belongs to a registration whose
            // deregistration has not completed, so the module keeps it valid.
            if r.side == side.other() && !r.deregistered && unsafe { npi_id_of(r.chars) } == npi_id
            {
                matches.push(h);
            }
        }
        st.regs.insert(
            handle,
            Registration {
                side,
                chars,
                context,
                npi_id,
                module_id,
                deregistered: false,
                wait_required: false,
                waiting: false,
                bindings: matches.len(),
            },
        );
        for other in matches {
            if let Some(r) = st.regs.get_mut(&other) {
                r.bindings += 1;
            }
            let (provider, client) = match side {
                Side::Provider => (handle, other),
                Side::Client => (other, handle),
            };
            let b = new_handle();
            st.bindings.insert(
                b,
                Binding {
                    provider,
                    client,
                    phase: Phase::Attaching {
                        thread,
                        nmr: NmrAttach::NotCalled,
                    },
                    provider_ctx: 0,
                    client_ctx: 0,
                    provider_detach_at: 0,
                },
            );
            new_bindings.push(b);
        }
    }
    // SAFETY: `out` was checked non-null; the caller passes a writable HANDLE.
    unsafe { out.write_unaligned(handle) };
    for b in new_bindings {
        attach(b);
    }
    STATUS_SUCCESS
}

/// Runs the client's ClientAttachProvider for a new binding (created in the
/// Attaching phase by the calling thread) and settles the binding.
fn attach(b: HANDLE) {
    let found = {
        let st = state();
        st.bindings.get(&b).and_then(|bd| {
            let c = st.regs.get(&bd.client)?;
            let p = st.regs.get(&bd.provider)?;
            Some((c.chars, c.context, p.chars, st.generation))
        })
    };
    let Some((cchars, cctx, pchars, generation)) = found else {
        return;
    };
    // SAFETY: the client's characteristics stay valid while it is
    // registered (it cannot finish deregistering while this binding exists).
    let callback = unsafe { client_chars(cchars) }.ClientAttachProvider;
    let status = match callback {
        // SAFETY: calling the client's attach callback with the arguments
        // Windows passes: this binding, its registration context and the
        // provider's registration instance (inside the provider's live
        // characteristics). No lock is held.
        Some(f) => unsafe { f(b, cctx as *mut c_void, instance_ptr(pchars)) },
        None => {
            nmr_violation(format!(
                "ClientAttachProvider of client characteristics {cchars:#x} became null after registration"
            ));
            STATUS_NOINTERFACE
        }
    };

    let mut st = state();
    if st.generation != generation {
        return;
    }
    let Some(bd) = st.bindings.get_mut(&b) else {
        return;
    };
    let nmr = match bd.phase {
        Phase::Attaching { nmr, .. } => nmr,
        _ => return,
    };
    if nmr != NmrAttach::Attached {
        // The client declined (or the provider did): there is no binding
        // and nothing to clean up.
        st.remove_binding(b);
        return;
    }
    if !nt_success(status) {
        nmr_violation(format!(
            "ClientAttachProvider returned {} for binding {b:#x} after NmrClientAttachProvider had attached it; \
             the NMR detaches the binding",
            status::describe(status)
        ));
    }
    bd.phase = Phase::Bound;
    let (provider, client) = (bd.provider, bd.client);
    let dereg = |h: HANDLE| st.regs.get(&h).is_some_and(|r| r.deregistered);
    let initiator = if !nt_success(status) {
        Some(Side::Client)
    } else if dereg(provider) {
        Some(Side::Provider)
    } else if dereg(client) {
        Some(Side::Client)
    } else {
        None
    };
    drop(st);
    // A side that began deregistering while the attach ran did not see this
    // binding: detach it now.
    if let Some(side) = initiator {
        detach_binding(b, side);
    }
}

// ---------------------------------------------------------------------------
// Detach and cleanup
// ---------------------------------------------------------------------------

fn side_state(phase: &mut Phase, side: Side) -> Option<&mut DetachState> {
    match phase {
        Phase::Detaching { provider, client } => Some(match side {
            Side::Provider => provider,
            Side::Client => client,
        }),
        _ => None,
    }
}

/// Detaches a bound binding: calls the detach callbacks (`first`'s side
/// first) at the detach IRQL, then cleans up if both sides are done.
fn detach_binding(b: HANDLE, first: Side) {
    let generation = {
        let mut st = state();
        let generation = st.generation;
        match st.bindings.get_mut(&b) {
            Some(bd) if matches!(bd.phase, Phase::Bound) => {
                bd.phase = Phase::Detaching {
                    provider: DetachState::NotCalled,
                    client: DetachState::NotCalled,
                };
                generation
            }
            _ => return,
        }
    };
    for side in [first, first.other()] {
        let (chars, ctx) = {
            let mut st = state();
            if st.generation != generation {
                return;
            }
            let Some(bd) = st.bindings.get_mut(&b) else {
                return;
            };
            let ctx = match side {
                Side::Provider => bd.provider_ctx,
                Side::Client => bd.client_ctx,
            };
            let reg = match side {
                Side::Provider => bd.provider,
                Side::Client => bd.client,
            };
            if let Some(s) = side_state(&mut bd.phase, side) {
                *s = DetachState::InCallback;
            }

            let Some(r) = st.regs.get(&reg) else { return };
            (r.chars, ctx)
        };
        // SAFETY: the registration is live (it holds this binding), so the
        // module keeps its characteristics valid.
        let callback = unsafe {
            match side {
                Side::Provider => provider_chars(chars).ProviderDetachClient,
                Side::Client => client_chars(chars).ClientDetachProvider,
            }
        };
        let status = irql::at(detach_irql(), || match callback {
            // SAFETY: the module's detach callback with the binding context
            // it gave at attach; no lock is held (it may call
            // *DetachComplete right away).
            Some(f) => unsafe { f(ctx as *mut c_void) },
            None => {
                nmr_violation(format!(
                    "the {} detach callback in characteristics {chars:#x} became null after registration",
                    side.name()
                ));
                STATUS_SUCCESS
            }
        });
        let mut st = state();
        if st.generation != generation {
            return;
        }
        let callback_name = match side {
            Side::Provider => "ProviderDetachClient",
            Side::Client => "ClientDetachProvider",
        };
        if side == Side::Provider {
            // The provider knows of the detach once its callback has run.
            if let Some(bd) = st.bindings.get_mut(&b) {
                bd.provider_detach_at = clock();
            }
        }
        let Some(s) = st
            .bindings
            .get_mut(&b)
            .and_then(|bd| side_state(&mut bd.phase, side))
        else {
            return;
        };
        *s = match (*s, status) {
            (DetachState::InCallback, STATUS_SUCCESS) => DetachState::Done,
            (DetachState::InCallback, STATUS_PENDING) => DetachState::Pending,
            (DetachState::CompletedInCallback, STATUS_PENDING) => DetachState::Done,
            (DetachState::CompletedInCallback, other) => {
                nmr_violation(format!(
                    "{callback_name} called {}({b:#x}) and then returned {} (a module completes \
                     a detach only after returning STATUS_PENDING)",
                    side.complete_api(),
                    status::describe(other)
                ));
                DetachState::Done
            }
            (_, other) => {
                nmr_violation(format!(
                    "{callback_name} for binding {b:#x} returned {} (must be STATUS_SUCCESS or STATUS_PENDING)",
                    status::describe(other)
                ));
                DetachState::Done
            }
        };
    }
    let mut st = state();
    if st.generation == generation && finish_detach(&mut st, b) {
        drop(st);
        schedule_cleanup(b, generation);
    }
}

/// Moves a binding whose sides are both done to CleaningUp; true if it did
/// (the caller then schedules the cleanup, exactly once).
fn finish_detach(st: &mut State, b: HANDLE) -> bool {
    match st.bindings.get_mut(&b) {
        Some(bd)
            if matches!(
                bd.phase,
                Phase::Detaching {
                    provider: DetachState::Done,
                    client: DetachState::Done
                }
            ) =>
        {
            bd.phase = Phase::CleaningUp;
            true
        }
        _ => false,
    }
}

/// Cleanup callbacks run at the cleanup IRQL ([`set_cleanup_irql`]):
/// DISPATCH_LEVEL by default, on the thread whose completion ended the
/// detach (Windows documents IRQL <= DISPATCH_LEVEL for both callbacks, so
/// the strict choice is the highest); at PASSIVE_LEVEL here if the caller is
/// there, else on a worker thread (as Windows may queue a work item).
fn schedule_cleanup(b: HANDLE, generation: u64) {
    let level = cleanup_irql();
    if level >= DISPATCH_LEVEL || irql::current() == PASSIVE_LEVEL {
        let level = level.max(irql::current());
        irql::at(level, || cleanup(b, generation));
    } else {
        std::thread::Builder::new()
            .name("nmr-cleanup".into())
            .spawn(move || {
                irql::set(PASSIVE_LEVEL);
                cleanup(b, generation)
            })
            .expect("spawning the NMR cleanup worker");
    }
}

fn cleanup(b: HANDLE, generation: u64) {
    let found = {
        let st = state();
        if st.generation != generation {
            return;
        }
        st.bindings.get(&b).and_then(|bd| {
            let p = st.regs.get(&bd.provider)?;
            let c = st.regs.get(&bd.client)?;
            Some((p.chars, bd.provider_ctx, c.chars, bd.client_ctx))
        })
    };
    let Some((pchars, pctx, cchars, cctx)) = found else {
        return;
    };
    // SAFETY: both registrations still hold this binding, so their modules
    // keep the characteristics valid.
    let (pc, cc) = unsafe {
        (
            provider_chars(pchars).ProviderCleanupBindingContext,
            client_chars(cchars).ClientCleanupBindingContext,
        )
    };
    if let Some(f) = pc {
        // SAFETY: the provider's cleanup callback with its own binding
        // context, at the cleanup IRQL, no lock held.
        unsafe { f(pctx as *mut c_void) };
    }
    if let Some(f) = cc {
        // SAFETY: as above, for the client.
        unsafe { f(cctx as *mut c_void) };
    }
    let mut st = state();
    if st.generation == generation {
        st.remove_binding(b);
    }
}

fn detach_complete(side: Side, b: HANDLE) {
    let api = side.complete_api();
    irql::require_at_most(api, DISPATCH_LEVEL);
    let mut st = state();
    let generation = st.generation;
    let Some(bd) = st.bindings.get_mut(&b) else {
        let what = if st.regs.contains_key(&b) {
            "a registration handle, not a binding handle"
        } else {
            "not a live binding handle (never issued, or the binding was already cleaned up)"
        };
        nmr_violation(format!("{api}({b:#x}): {what}"));
        return;
    };
    let public = bd.phase.public();
    let Some(s) = side_state(&mut bd.phase, side) else {
        nmr_violation(format!(
            "{api}({b:#x}): the binding is not detaching (it is {public:?})"
        ));
        return;
    };
    *s = match *s {
        DetachState::InCallback => DetachState::CompletedInCallback,
        DetachState::Pending => DetachState::Done,
        DetachState::NotCalled => {
            nmr_violation(format!(
                "{api}({b:#x}): the {} detach callback of this binding has not been called",
                side.name()
            ));
            return;
        }
        DetachState::CompletedInCallback | DetachState::Done => {
            nmr_violation(format!(
                "{api}({b:#x}): the {} side of this binding has already completed its detach \
                 (called twice, or after its detach callback returned STATUS_SUCCESS)",
                side.name()
            ));
            return;
        }
    };
    if finish_detach(&mut st, b) {
        drop(st);
        schedule_cleanup(b, generation);
    }
}

// ---------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------

/// `NmrRegisterProvider` (PASSIVE_LEVEL). Attaches to every registered
/// client of the same NpiId before returning.
///
/// # Safety
/// `characteristics` must be null or valid until deregistration completes;
/// `handle` must be null or writable.
pub unsafe extern "win64" fn NmrRegisterProvider(
    characteristics: *const NPI_PROVIDER_CHARACTERISTICS,
    provider_context: *mut c_void,
    handle: *mut HANDLE,
) -> NTSTATUS {
    // SAFETY: forwarded caller contract (register checks for null).
    unsafe {
        register(
            Side::Provider,
            "NmrRegisterProvider",
            characteristics as usize,
            provider_context as usize,
            handle,
        )
    }
}

/// `NmrRegisterClient` (PASSIVE_LEVEL). Attaches to every registered
/// provider of the same NpiId before returning.
///
/// # Safety
/// As [`NmrRegisterProvider`].
pub unsafe extern "win64" fn NmrRegisterClient(
    characteristics: *const NPI_CLIENT_CHARACTERISTICS,
    client_context: *mut c_void,
    handle: *mut HANDLE,
) -> NTSTATUS {
    // SAFETY: forwarded caller contract (register checks for null).
    unsafe {
        register(
            Side::Client,
            "NmrRegisterClient",
            characteristics as usize,
            client_context as usize,
            handle,
        )
    }
}

/// `NmrDeregisterProvider` (PASSIVE_LEVEL): STATUS_PENDING (the provider
/// must then call [`NmrWaitForProviderDeregisterComplete`] before it
/// unloads), or STATUS_INVALID_PARAMETER for a bad handle.
///
/// # Safety
/// Calls the modules' detach (and maybe cleanup) callbacks, which must be valid.
pub unsafe extern "win64" fn NmrDeregisterProvider(handle: HANDLE) -> NTSTATUS {
    deregister(Side::Provider, "NmrDeregisterProvider", handle)
}

/// `NmrDeregisterClient` (PASSIVE_LEVEL), as [`NmrDeregisterProvider`].
///
/// # Safety
/// As [`NmrDeregisterProvider`].
pub unsafe extern "win64" fn NmrDeregisterClient(handle: HANDLE) -> NTSTATUS {
    deregister(Side::Client, "NmrDeregisterClient", handle)
}

/// `NmrWaitForProviderDeregisterComplete` (PASSIVE_LEVEL): blocks until
/// every binding of the provider has been cleaned up, then frees the
/// registration (the handle is dead afterwards).
///
/// # Safety
/// Cleanup callbacks may run on this thread.
pub unsafe extern "win64" fn NmrWaitForProviderDeregisterComplete(handle: HANDLE) -> NTSTATUS {
    wait_for_deregister(
        Side::Provider,
        "NmrWaitForProviderDeregisterComplete",
        handle,
    )
}

/// `NmrWaitForClientDeregisterComplete`, as the provider one.
///
/// # Safety
/// As [`NmrWaitForProviderDeregisterComplete`].
pub unsafe extern "win64" fn NmrWaitForClientDeregisterComplete(handle: HANDLE) -> NTSTATUS {
    wait_for_deregister(Side::Client, "NmrWaitForClientDeregisterComplete", handle)
}

/// `NmrProviderDetachClientComplete` (<= DISPATCH_LEVEL, any thread): the
/// provider finished a detach for which it returned STATUS_PENDING.
///
/// # Safety
/// May run cleanup callbacks (on this thread at PASSIVE_LEVEL).
pub unsafe extern "win64" fn NmrProviderDetachClientComplete(binding: HANDLE) {
    detach_complete(Side::Provider, binding)
}

/// `NmrClientDetachProviderComplete`, as the provider one.
///
/// # Safety
/// As [`NmrProviderDetachClientComplete`].
pub unsafe extern "win64" fn NmrClientDetachProviderComplete(binding: HANDLE) {
    detach_complete(Side::Client, binding)
}

/// `NmrClientAttachProvider` (PASSIVE_LEVEL; only from inside the client's
/// ClientAttachProvider for this binding, once): calls the provider's
/// ProviderAttachClient and returns its status; on success writes the
/// provider's binding context and dispatch table.
///
/// # Safety
/// The out pointers must be null or writable; the contexts are the
/// client's, passed through to the provider.
pub unsafe extern "win64" fn NmrClientAttachProvider(
    binding: HANDLE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    const API: &str = "NmrClientAttachProvider";
    irql::require_at_most(API, PASSIVE_LEVEL);
    if provider_binding_context.is_null() || provider_dispatch.is_null() {
        nmr_violation(format!("{API}({binding:#x}): null output pointer"));
        return STATUS_INVALID_PARAMETER;
    }
    let found = {
        let mut st = state();
        let me = std::thread::current().id();
        let Some(bd) = st.bindings.get_mut(&binding) else {
            nmr_violation(format!(
                "{API}({binding:#x}): not a live binding handle (NmrClientAttachProvider is only valid \
                 inside ClientAttachProvider)"
            ));
            return STATUS_INVALID_PARAMETER;
        };
        match &mut bd.phase {
            Phase::Attaching { thread, nmr } if *thread == me && *nmr == NmrAttach::NotCalled => {
                *nmr = NmrAttach::InProgress;
            }
            Phase::Attaching { thread, .. } if *thread == me => {
                nmr_violation(format!(
                    "{API}({binding:#x}) called twice for the same binding"
                ));
                return STATUS_INVALID_PARAMETER;
            }
            _ => {
                nmr_violation(format!(
                    "{API}({binding:#x}) called outside the ClientAttachProvider callback of this binding"
                ));
                return STATUS_INVALID_PARAMETER;
            }
        }
        bd.client_ctx = client_binding_context as usize;
        let (p, c) = (bd.provider, bd.client);
        match (st.regs.get(&p), st.regs.get(&c)) {
            (Some(p), Some(c)) => Some((p.chars, p.context, c.chars)),
            _ => None,
        }
    };
    let Some((pchars, pctx, cchars)) = found else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the provider is registered (it holds this binding), so its
    // characteristics are valid.
    let callback = unsafe { provider_chars(pchars) }.ProviderAttachClient;
    let mut pbc: *mut c_void = std::ptr::null_mut();
    let mut pd: *const c_void = std::ptr::null();
    let status = match callback {
        // SAFETY: the provider's attach callback with the arguments Windows
        // passes (the client's registration instance lives in the client's
        // valid characteristics); the outputs point to our locals. No lock
        // is held.
        Some(f) => unsafe {
            f(
                binding,
                pctx as *mut c_void,
                instance_ptr(cchars),
                client_binding_context,
                client_dispatch,
                &mut pbc,
                &mut pd,
            )
        },
        None => {
            nmr_violation(format!(
                "ProviderAttachClient of provider characteristics {pchars:#x} became null after registration"
            ));
            STATUS_NOINTERFACE
        }
    };
    {
        let mut st = state();
        if let Some(bd) = st.bindings.get_mut(&binding) {
            if let Phase::Attaching { nmr, .. } = &mut bd.phase {
                *nmr = if nt_success(status) {
                    NmrAttach::Attached
                } else {
                    NmrAttach::Failed
                };
            }
            if nt_success(status) {
                bd.provider_ctx = pbc as usize;
            }
        }
    }
    if nt_success(status) {
        // SAFETY: both checked non-null above; the caller passes writable slots.
        unsafe {
            provider_binding_context.write_unaligned(pbc);
            provider_dispatch.write_unaligned(pd);
        }
    }
    status
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("NETIO.SYS", NmrRegisterProvider),
        export!("NETIO.SYS", NmrDeregisterProvider),
        export!("NETIO.SYS", NmrWaitForProviderDeregisterComplete),
        export!("NETIO.SYS", NmrProviderDetachClientComplete),
        export!("NETIO.SYS", NmrRegisterClient),
        export!("NETIO.SYS", NmrDeregisterClient),
        export!("NETIO.SYS", NmrWaitForClientDeregisterComplete),
        export!("NETIO.SYS", NmrClientAttachProvider),
        export!("NETIO.SYS", NmrClientDetachProviderComplete),
    ]
}

/// Forgets all state (a new [`crate::Sim`]) without calling any callback
/// (the image may be gone). Waiters still blocked return.
pub(crate) fn reset() {
    let mut st = state();
    st.regs.clear();
    st.bindings.clear();
    st.generation += 1;
    DETACH_IRQL.store(DISPATCH_LEVEL, Ordering::SeqCst);
    CLEANUP_IRQL.store(DISPATCH_LEVEL, Ordering::SeqCst);
    CHANGED.notify_all();
}

/// Called by the loader once a driver's DriverUnload has returned: every
/// registration whose characteristics lie in the image (`base`, `size`)
/// and whose deregistration was not waited for is a violation (Windows
/// documents that a module must not return from its unload routine before
/// `NmrWaitFor*DeregisterComplete` has returned; the NMR would call into
/// the unloaded image). Those registrations and their bindings are
/// forgotten without calling any callback, since the image is going away.
pub(crate) fn image_unloaded(service: &str, base: usize, size: usize) {
    let mut st = state();
    let orphans: Vec<HANDLE> = st
        .regs
        .iter()
        .filter(|(_, r)| r.chars >= base && r.chars < base + size)
        .map(|(&h, _)| h)
        .collect();
    for h in orphans {
        let Some(r) = st.regs.get(&h) else { continue };
        let what = if r.deregistered {
            format!(
                "NmrDeregister{} returned STATUS_PENDING but NmrWaitFor{}DeregisterComplete was \
                 never called",
                r.side.title(),
                r.side.title()
            )
        } else {
            format!("NmrDeregister{} was never called", r.side.title())
        };
        nmr_violation(format!(
            "{service} unloaded with NMR {} registration {h:#x} (NpiId {}, ModuleId {}, {} \
             binding(s)) still live: {what}; the NMR keeps using its characteristics and \
             callbacks in the unloaded image",
            r.side.name(),
            r.npi_id,
            r.module_id,
            r.bindings
        ));
        let doomed: Vec<HANDLE> = st
            .bindings
            .iter()
            .filter(|(_, b)| b.provider == h || b.client == h)
            .map(|(&b, _)| b)
            .collect();
        for b in doomed {
            st.remove_binding(b);
        }
        st.regs.remove(&h);
    }
    CHANGED.notify_all();
}

/// What a driver left behind: every registration not fully deregistered.
pub(crate) fn outstanding() -> Vec<String> {
    let st = state();
    st.regs
        .iter()
        .filter_map(|(&h, r)| {
            let what = if !r.deregistered {
                format!("never deregistered ({} binding(s))", r.bindings)
            } else if r.wait_required {
                format!(
                    "NmrDeregister{} returned STATUS_PENDING but NmrWaitFor{}DeregisterComplete never \
                     returned ({} binding(s) remain)",
                    r.side.title(),
                    r.side.title(),
                    r.bindings
                )
            } else if r.bindings > 0 {
                format!("deregistering, {} binding(s) remain", r.bindings)
            } else {
                return None;
            };
            Some(format!(
                "NMR {} registration {h:#x} (NpiId {}, ModuleId {}): {what}",
                r.side.name(),
                r.npi_id,
                r.module_id
            ))
        })
        .collect()
}
