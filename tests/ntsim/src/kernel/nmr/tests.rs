//! Host-side providers and clients (Rust `extern "win64"` callbacks driven
//! by a [`Module`] passed as their context) exercising the NMR.

use super::*;
use crate::kernel::status::STATUS_UNSUCCESSFUL;
use crate::Sim;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{mpsc, Arc};

mod refusals;

type Log = Arc<Mutex<Vec<String>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn guid(n: u32) -> GUID {
    GUID {
        data1: n,
        data2: 0x4e4d,
        data3: 0x5221,
        data4: [0xa0, 1, 2, 3, 4, 5, 6, 7],
    }
}

/// What a host module's detach callback does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Detach {
    /// Returns STATUS_SUCCESS.
    Sync,
    /// Returns STATUS_PENDING, remembers the binding (and sends it on the
    /// module's channel if it has one) for a later *DetachComplete.
    Pending,
    /// Calls *DetachComplete itself, then returns STATUS_PENDING.
    CompleteInside,
    /// Blocks (as KeWaitForSingleObject would), then returns STATUS_SUCCESS.
    Blocking,
}

/// What a host client's attach callback does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attach {
    /// Calls NmrClientAttachProvider and returns its status.
    Normal,
    /// Returns STATUS_NOINTERFACE without calling NmrClientAttachProvider.
    Decline,
    /// Returns STATUS_SUCCESS without calling NmrClientAttachProvider.
    ClaimOnly,
    /// Calls NmrClientAttachProvider twice.
    Twice,
    /// Attaches, then returns STATUS_UNSUCCESSFUL.
    FailLate,
}

static PROVIDER_DISPATCH: u64 = 0x5050;
static CLIENT_DISPATCH: u64 = 0xC1C1;

/// A binding context of a host module.
struct Ctx {
    module: *const Module,
    binding: HANDLE,
    peer: String,
    detaches: AtomicU32,
    cleanups: AtomicU32,
}

/// A host-side provider or client. Its characteristics, NpiId and module id
/// live in boxes, so their addresses stay put while the NMR holds them.
struct Module {
    name: String,
    side: Side,
    log: Log,
    npi: Box<GUID>,
    module_id: Box<NPI_MODULEID>,
    pchars: Box<NPI_PROVIDER_CHARACTERISTICS>,
    cchars: Box<NPI_CLIENT_CHARACTERISTICS>,
    handle: AtomicUsize,
    detach: Mutex<Detach>,
    attach: Mutex<Attach>,
    /// Provider: accepts clients in ProviderAttachClient.
    accept: AtomicBool,
    /// Boxed: the NMR holds their addresses while the Vec grows.
    #[allow(clippy::vec_box)]
    contexts: Mutex<Vec<Box<Ctx>>>,
    pending: Mutex<Vec<HANDLE>>,
    pending_tx: Mutex<Option<mpsc::Sender<(Side, HANDLE)>>>,
    detach_irqls: Mutex<Vec<KIRQL>>,
    cleanup_irqls: Mutex<Vec<KIRQL>>,
    /// Client: what NmrClientAttachProvider returned, each call.
    attach_statuses: Mutex<Vec<NTSTATUS>>,
}

// SAFETY: the raw pointers inside a Module point into its own boxes (the
// characteristics, NpiId and module id, only changed by the owning test
// while no other thread uses the module) or to Modules and contexts that
// outlive their use; all state shared across threads is behind Mutexes and
// atomics.
unsafe impl Sync for Module {}
// SAFETY: as above; nothing in a Module is tied to the creating thread.
unsafe impl Send for Module {}

fn peer_name(side: Side, id: &NPI_MODULEID) -> String {
    match side {
        Side::Provider => format!("P{}", id.Guid.data1),
        Side::Client => format!("C{}", id.Guid.data1),
    }
}

impl Module {
    /// Provider "P<id>" or client "C<id>" of NPI `npi`.
    fn new(side: Side, id: u32, npi: u32, log: &Log) -> Box<Module> {
        let npi = Box::new(guid(npi));
        let module_id = Box::new(NPI_MODULEID {
            Length: std::mem::size_of::<NPI_MODULEID>() as u16,
            Type: MIT_GUID,
            Guid: guid(id),
        });
        let instance = NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: std::mem::size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: &*npi,
            ModuleId: &*module_id,
            Number: 0,
            NpiSpecificCharacteristics: std::ptr::null(),
        };
        let pchars = Box::new(NPI_PROVIDER_CHARACTERISTICS {
            Version: 0,
            Length: std::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>() as u16,
            ProviderAttachClient: Some(provider_attach),
            ProviderDetachClient: Some(provider_detach),
            ProviderCleanupBindingContext: Some(provider_cleanup),
            ProviderRegistrationInstance: instance,
        });
        let cchars = Box::new(NPI_CLIENT_CHARACTERISTICS {
            Version: 0,
            Length: std::mem::size_of::<NPI_CLIENT_CHARACTERISTICS>() as u16,
            ClientAttachProvider: Some(client_attach),
            ClientDetachProvider: Some(client_detach),
            ClientCleanupBindingContext: Some(client_cleanup),
            ClientRegistrationInstance: instance,
        });
        Box::new(Module {
            name: peer_name(side, &module_id),
            side,
            log: log.clone(),
            npi,
            module_id,
            pchars,
            cchars,
            handle: AtomicUsize::new(0),
            detach: Mutex::new(Detach::Sync),
            attach: Mutex::new(Attach::Normal),
            accept: AtomicBool::new(true),
            contexts: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            pending_tx: Mutex::new(None),
            detach_irqls: Mutex::new(Vec::new()),
            cleanup_irqls: Mutex::new(Vec::new()),
            attach_statuses: Mutex::new(Vec::new()),
        })
    }

    fn provider(id: u32, npi: u32, log: &Log) -> Box<Module> {
        Module::new(Side::Provider, id, npi, log)
    }

    fn client(id: u32, npi: u32, log: &Log) -> Box<Module> {
        Module::new(Side::Client, id, npi, log)
    }

    fn with_detach(self: Box<Self>, d: Detach) -> Box<Self> {
        *lock(&self.detach) = d;
        self
    }

    fn with_attach(self: Box<Self>, a: Attach) -> Box<Self> {
        *lock(&self.attach) = a;
        self
    }

    fn note(&self, what: String) {
        lock(&self.log).push(format!("{} {what}", self.name));
    }

    fn handle(&self) -> HANDLE {
        self.handle.load(Ordering::SeqCst)
    }

    fn register(&self) -> NTSTATUS {
        let ctx = self as *const Module as *mut c_void;
        let mut h: HANDLE = 0;
        // SAFETY: the characteristics live in boxes owned by `self`, which
        // every test keeps alive until its deregistration completed; the
        // context is `self`; `h` is writable.
        let status = unsafe {
            match self.side {
                Side::Provider => NmrRegisterProvider(&*self.pchars, ctx, &mut h),
                Side::Client => NmrRegisterClient(&*self.cchars, ctx, &mut h),
            }
        };
        self.handle.store(h, Ordering::SeqCst);
        status
    }

    fn deregister(&self) -> NTSTATUS {
        // SAFETY: the callbacks reached are this file's, on live contexts.
        unsafe {
            match self.side {
                Side::Provider => NmrDeregisterProvider(self.handle()),
                Side::Client => NmrDeregisterClient(self.handle()),
            }
        }
    }

    fn wait(&self) -> NTSTATUS {
        // SAFETY: as in deregister.
        unsafe {
            match self.side {
                Side::Provider => NmrWaitForProviderDeregisterComplete(self.handle()),
                Side::Client => NmrWaitForClientDeregisterComplete(self.handle()),
            }
        }
    }

    /// Deregisters (always STATUS_PENDING, as Windows documents) and waits;
    /// returns the wait's status.
    fn unregister(&self) -> NTSTATUS {
        assert_eq!(self.deregister(), STATUS_PENDING);
        self.wait()
    }

    /// (detach calls, cleanup calls) of each binding context, in creation order.
    fn counts(&self) -> Vec<(u32, u32)> {
        lock(&self.contexts)
            .iter()
            .map(|c| {
                (
                    c.detaches.load(Ordering::SeqCst),
                    c.cleanups.load(Ordering::SeqCst),
                )
            })
            .collect()
    }

    /// Completes every detach this module left pending.
    fn complete_pending(&self) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for b in pending {
            complete(self.side, b);
        }
    }
}

fn complete(side: Side, binding: HANDLE) {
    // SAFETY: completions only reach this file's cleanup callbacks.
    unsafe {
        match side {
            Side::Provider => NmrProviderDetachClientComplete(binding),
            Side::Client => NmrClientDetachProviderComplete(binding),
        }
    }
}

/// # Safety
/// `p` is a `Module` context this file registered, still alive.
unsafe fn module<'a>(p: *mut c_void) -> &'a Module {
    // SAFETY: per the caller.
    unsafe { &*(p as *const Module) }
}

/// # Safety
/// `p` is a `Ctx` a module of this file created, still alive.
unsafe fn ctx<'a>(p: *mut c_void) -> &'a Ctx {
    // SAFETY: per the caller; contexts live as long as their module.
    unsafe { &*(p as *const Ctx) }
}

/// Keeps a new binding context in `m` and returns its address.
fn new_ctx(m: &Module, binding: HANDLE, peer: String) -> *mut c_void {
    let c = Box::new(Ctx {
        module: m,
        binding,
        peer,
        detaches: AtomicU32::new(0),
        cleanups: AtomicU32::new(0),
    });
    let p = &*c as *const Ctx as *mut c_void;
    lock(&m.contexts).push(c);
    p
}

unsafe extern "win64" fn provider_attach(
    binding: HANDLE,
    provider_context: *mut c_void,
    client: *const NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    // SAFETY: the NMR passes our registration context and the client's live
    // registration instance (whose ModuleId is a host module's box).
    let (m, peer) = unsafe {
        (
            module(provider_context),
            peer_name(Side::Client, &*(*client).ModuleId),
        )
    };
    m.note(format!("attach {peer}"));
    if client_dispatch != &CLIENT_DISPATCH as *const u64 as *const c_void
        || client_binding_context.is_null()
    {
        m.note("got a wrong client dispatch or context".into());
    }
    if !m.accept.load(Ordering::SeqCst) {
        return STATUS_NOINTERFACE;
    }
    let c = new_ctx(m, binding, peer);
    // SAFETY: the NMR passes writable output slots.
    unsafe {
        *provider_binding_context = c;
        *provider_dispatch = &PROVIDER_DISPATCH as *const u64 as *const c_void;
    }
    STATUS_SUCCESS
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    client_context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: as in provider_attach, for the client.
    let (m, peer) = unsafe {
        (
            module(client_context),
            peer_name(Side::Provider, &*(*provider).ModuleId),
        )
    };
    m.note(format!("attach {peer}"));
    let mode = *lock(&m.attach);
    match mode {
        Attach::Decline => return STATUS_NOINTERFACE,
        Attach::ClaimOnly => return STATUS_SUCCESS,
        _ => {}
    }
    let c = new_ctx(m, binding, peer.clone());
    let calls = if mode == Attach::Twice { 2 } else { 1 };
    let mut status = STATUS_SUCCESS;
    for _ in 0..calls {
        let mut pbc: *mut c_void = std::ptr::null_mut();
        let mut pd: *const c_void = std::ptr::null();
        // SAFETY: inside our ClientAttachProvider with its binding handle;
        // the outputs are locals.
        let s = unsafe {
            NmrClientAttachProvider(
                binding,
                c,
                &CLIENT_DISPATCH as *const u64 as *const c_void,
                &mut pbc,
                &mut pd,
            )
        };
        lock(&m.attach_statuses).push(s);
        if nt_success(s) {
            // SAFETY: on success the provider's binding context is a Ctx
            // made by provider_attach.
            let provider_ctx = unsafe { ctx(pbc) };
            if pd != &PROVIDER_DISPATCH as *const u64 as *const c_void
                || provider_ctx.binding != binding
            {
                m.note("got a wrong provider dispatch or context".into());
            }
            m.note(format!("bound {peer}"));
        }
        if calls == 1 {
            status = s;
        }
    }
    if mode == Attach::FailLate {
        return STATUS_UNSUCCESSFUL;
    }
    status
}

fn on_detach(side: Side, p: *mut c_void) -> NTSTATUS {
    // SAFETY: the NMR passes back the binding context we gave at attach.
    let c = unsafe { ctx(p) };
    // SAFETY: a context's module outlives it.
    let m = unsafe { &*c.module };
    debug_assert_eq!(m.side, side);
    c.detaches.fetch_add(1, Ordering::SeqCst);
    lock(&m.detach_irqls).push(irql::current());
    m.note(format!("detach {}", c.peer));
    match *lock(&m.detach) {
        Detach::Sync => STATUS_SUCCESS,
        Detach::Pending => {
            lock(&m.pending).push(c.binding);
            if let Some(tx) = &*lock(&m.pending_tx) {
                let _ = tx.send((side, c.binding));
            }
            STATUS_PENDING
        }
        Detach::CompleteInside => {
            complete(side, c.binding);
            STATUS_PENDING
        }
        Detach::Blocking => {
            irql::require_can_wait("KeWaitForSingleObject");
            STATUS_SUCCESS
        }
    }
}

fn on_cleanup(p: *mut c_void) {
    // SAFETY: as in on_detach.
    let c = unsafe { ctx(p) };
    // SAFETY: as in on_detach.
    let m = unsafe { &*c.module };
    c.cleanups.fetch_add(1, Ordering::SeqCst);
    lock(&m.cleanup_irqls).push(irql::current());
    m.note(format!("cleanup {}", c.peer));
}

unsafe extern "win64" fn provider_detach(p: *mut c_void) -> NTSTATUS {
    on_detach(Side::Provider, p)
}

unsafe extern "win64" fn client_detach(p: *mut c_void) -> NTSTATUS {
    on_detach(Side::Client, p)
}

unsafe extern "win64" fn provider_cleanup(p: *mut c_void) {
    on_cleanup(p)
}

unsafe extern "win64" fn client_cleanup(p: *mut c_void) {
    on_cleanup(p)
}

fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn take_log(log: &Log) -> Vec<String> {
    std::mem::take(&mut *lock(log))
}

/// Takes the violations, asserting there are `n` and each contains `needle`.
fn expect_violations(n: usize, needle: &str) {
    let v = violation::take();
    assert_eq!(v.len(), n, "{v:#?}");
    for x in &v {
        assert!(
            x.message.contains(needle),
            "{x} does not mention {needle:?}"
        );
    }
}

fn states() -> Vec<BindingState> {
    bindings().into_iter().map(|b| b.state).collect()
}

fn detaching(provider: DetachState, client: DetachState) -> BindingState {
    BindingState::Detaching { provider, client }
}

// ---------------------------------------------------------------------------

#[test]
fn exports_are_the_netio_functions() {
    let mut names: Vec<_> = exports().iter().map(|e| (e.module, e.name)).collect();
    names.sort();
    let expected = [
        "NmrClientAttachProvider",
        "NmrClientDetachProviderComplete",
        "NmrDeregisterClient",
        "NmrDeregisterProvider",
        "NmrProviderDetachClientComplete",
        "NmrRegisterClient",
        "NmrRegisterProvider",
        "NmrWaitForClientDeregisterComplete",
        "NmrWaitForProviderDeregisterComplete",
    ];
    assert_eq!(
        names,
        expected
            .iter()
            .map(|n| ("NETIO.SYS", *n))
            .collect::<Vec<_>>()
    );
    assert!(crate::kernel::exports::find("netio.sys", "NmrRegisterProvider").is_some());
}

#[test]
fn provider_first_then_client_then_provider_deregisters() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert!(take_log(&log).is_empty());
    assert_eq!((provider_count(), client_count()), (1, 0));
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert_ne!(p.handle(), 0);
    assert_ne!(c.handle(), 0);
    assert_ne!(p.handle(), c.handle());
    assert_eq!(
        take_log(&log),
        ["C2 attach P1", "P1 attach C2", "C2 bound P1"]
    );
    assert_eq!(*lock(&c.attach_statuses), [STATUS_SUCCESS]);
    let b = bindings();
    assert_eq!(b.len(), 1);
    assert_eq!(
        (
            b[0].provider,
            b[0].client,
            b[0].provider_module,
            b[0].client_module,
            b[0].npi_id,
            b[0].state
        ),
        (
            p.handle(),
            c.handle(),
            guid(1),
            guid(2),
            guid(7),
            BindingState::Bound
        )
    );
    assert_eq!((provider_count(), client_count()), (1, 1));

    // Both detach synchronously: everything is done when Deregister returns.
    assert_eq!(p.deregister(), STATUS_PENDING);
    assert_eq!(
        take_log(&log),
        [
            "P1 detach C2",
            "C2 detach P1",
            "P1 cleanup C2",
            "C2 cleanup P1"
        ]
    );
    assert!(bindings().is_empty());
    assert_eq!(p.counts(), [(1, 1)]);
    assert_eq!(c.counts(), [(1, 1)]);
    // Cleanup callbacks run at DISPATCH_LEVEL by default (Windows documents
    // IRQL <= DISPATCH_LEVEL).
    assert_eq!(*lock(&p.cleanup_irqls), [DISPATCH_LEVEL]);
    assert_eq!((provider_count(), client_count()), (0, 1));
    // Nothing is left to wait for, yet the wait is owed: it returns at once.
    assert!(!sim.outstanding().is_empty(), "the wait is owed");
    assert_eq!(p.wait(), STATUS_SUCCESS);
    // The client has no binding left: STATUS_PENDING all the same, and the
    // wait is still owed.
    assert_eq!(c.deregister(), STATUS_PENDING);
    assert!(take_log(&log).is_empty());
    assert_eq!(c.wait(), STATUS_SUCCESS);
    assert!(sim.outstanding().is_empty(), "{:?}", sim.outstanding());
    sim.finish().unwrap();
}

#[test]
fn client_first_then_provider_then_client_deregisters() {
    let sim = Sim::new();
    let log = new_log();
    let c = Module::client(1, 7, &log);
    let p = Module::provider(2, 7, &log);
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert!(take_log(&log).is_empty());
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        ["C1 attach P2", "P2 attach C1", "C1 bound P2"]
    );
    assert_eq!(states(), [BindingState::Bound]);
    // The deregistering side detaches first.
    assert_eq!(c.deregister(), STATUS_PENDING);
    assert_eq!(
        take_log(&log),
        [
            "C1 detach P2",
            "P2 detach C1",
            "P2 cleanup C1",
            "C1 cleanup P2"
        ]
    );
    assert_eq!(c.wait(), STATUS_SUCCESS);
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    assert!(take_log(&log).is_empty());
    sim.finish().unwrap();
}

#[test]
fn only_equal_npi_ids_attach_and_each_pair_once() {
    let sim = Sim::new();
    let log = new_log();
    let p1 = Module::provider(1, 7, &log);
    let c2 = Module::client(2, 8, &log);
    let c3 = Module::client(3, 7, &log);
    let p4 = Module::provider(4, 7, &log);
    assert_eq!(p1.register(), STATUS_SUCCESS);
    assert_eq!(c2.register(), STATUS_SUCCESS);
    assert!(
        take_log(&log).is_empty(),
        "an NpiId mismatch must not attach"
    );
    assert_eq!(c3.register(), STATUS_SUCCESS);
    assert_eq!(p4.register(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        [
            "C3 attach P1",
            "P1 attach C3",
            "C3 bound P1",
            "C3 attach P4",
            "P4 attach C3",
            "C3 bound P4"
        ]
    );
    let pairs: Vec<_> = bindings()
        .iter()
        .map(|b| (b.provider_module.data1, b.client_module.data1))
        .collect();
    assert_eq!(pairs, [(1, 3), (4, 3)]);
    // Deregistering P1 detaches only its own binding.
    assert_eq!(p1.unregister(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        [
            "P1 detach C3",
            "C3 detach P1",
            "P1 cleanup C3",
            "C3 cleanup P1"
        ]
    );
    assert_eq!(states(), [BindingState::Bound]);
    assert_eq!(c3.unregister(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        [
            "C3 detach P4",
            "P4 detach C3",
            "P4 cleanup C3",
            "C3 cleanup P4"
        ]
    );
    assert_eq!(c2.unregister(), STATUS_SUCCESS);
    assert_eq!(p4.unregister(), STATUS_SUCCESS);
    assert!(take_log(&log).is_empty());
    sim.finish().unwrap();
}

#[test]
fn the_npi_id_is_read_through_the_registered_pointer() {
    let sim = Sim::new();
    let log = new_log();
    let mut p = Module::provider(1, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    // The NMR keeps the pointer (as Windows does), not a copy: a change
    // the provider makes in place is what later matching sees.
    *p.npi = guid(9);
    let c = Module::client(2, 9, &log);
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        ["C2 attach P1", "P1 attach C2", "C2 bound P1"]
    );
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn a_declining_client_or_provider_makes_no_binding() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log);
    let c2 = Module::client(2, 7, &log).with_attach(Attach::Decline);
    let c3 = Module::client(3, 7, &log).with_attach(Attach::ClaimOnly);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c2.register(), STATUS_SUCCESS);
    assert_eq!(c3.register(), STATUS_SUCCESS);
    assert_eq!(take_log(&log), ["C2 attach P1", "C3 attach P1"]);
    assert!(bindings().is_empty());
    // A provider that refuses: NmrClientAttachProvider returns its status.
    p.accept.store(false, Ordering::SeqCst);
    let c4 = Module::client(4, 7, &log);
    assert_eq!(c4.register(), STATUS_SUCCESS);
    assert_eq!(take_log(&log), ["C4 attach P1", "P1 attach C4"]);
    assert_eq!(*lock(&c4.attach_statuses), [STATUS_NOINTERFACE]);
    assert!(bindings().is_empty());
    // Nothing to detach or clean up anywhere.
    for m in [&p, &c2, &c3, &c4] {
        assert_eq!(m.unregister(), STATUS_SUCCESS);
    }
    assert!(take_log(&log).is_empty());
    sim.finish().unwrap();
}

#[test]
fn pending_detach_completed_from_another_thread_releases_the_waiter() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    take_log(&log);

    assert_eq!(p.deregister(), STATUS_PENDING);
    assert_eq!(take_log(&log), ["P1 detach C2", "C2 detach P1"]);
    assert_eq!(
        states(),
        [detaching(DetachState::Pending, DetachState::Done)]
    );
    assert_eq!((p.counts(), c.counts()), (vec![(1, 0)], vec![(1, 0)]));
    let binding = lock(&p.pending)[0];
    let ph = p.handle();

    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let status = p.wait();
            lock(&log).push("wait returned".into());
            status
        });
        // Until the waiter is blocked inside the NMR (no timing involved:
        // the NMR reports the waiting registration).
        crate::kernel::sync::wait_for("the deregistration waiter to block", || {
            assert!(
                !waiter.is_finished(),
                "the wait returned before the detach completed"
            );
            registrations().iter().any(|r| r.handle == ph && r.waiting)
        });
        assert!(lock(&log).is_empty());
        s.spawn(|| {
            lock(&log).push("complete".into());
            // Completion at DISPATCH_LEVEL from another thread, as a DPC would.
            irql::at(DISPATCH_LEVEL, || complete(Side::Provider, binding));
        })
        .join()
        .unwrap();
        assert_eq!(waiter.join().unwrap(), STATUS_SUCCESS);
    });
    assert_eq!(
        take_log(&log),
        [
            "complete",
            "P1 cleanup C2",
            "C2 cleanup P1",
            "wait returned"
        ]
    );
    // Cleanup ran at DISPATCH_LEVEL, on the completing thread.
    assert_eq!(*lock(&p.cleanup_irqls), [DISPATCH_LEVEL]);
    assert_eq!(*lock(&c.cleanup_irqls), [DISPATCH_LEVEL]);
    assert_eq!((p.counts(), c.counts()), (vec![(1, 1)], vec![(1, 1)]));
    assert!(
        registrations().iter().all(|r| r.handle != ph),
        "the wait frees the registration"
    );
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn cleanup_runs_once_only_after_both_sides_completed() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
    let c = Module::client(2, 7, &log).with_detach(Detach::Pending);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    take_log(&log);
    assert_eq!(c.deregister(), STATUS_PENDING);
    assert_eq!(take_log(&log), ["C2 detach P1", "P1 detach C2"]);
    assert_eq!(
        states(),
        [detaching(DetachState::Pending, DetachState::Pending)]
    );
    p.complete_pending();
    assert_eq!(
        states(),
        [detaching(DetachState::Done, DetachState::Pending)]
    );
    assert!(
        take_log(&log).is_empty(),
        "no cleanup before the client completed"
    );
    c.complete_pending();
    assert_eq!(take_log(&log), ["P1 cleanup C2", "C2 cleanup P1"]);
    assert!(bindings().is_empty());
    assert_eq!(c.wait(), STATUS_SUCCESS);
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    assert_eq!((p.counts(), c.counts()), (vec![(1, 1)], vec![(1, 1)]));
    sim.finish().unwrap();
}

#[test]
fn completing_inside_the_detach_callback_then_pending_is_fine() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::CompleteInside);
    let c = Module::client(2, 7, &log).with_detach(Detach::CompleteInside);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    take_log(&log);
    assert_eq!(p.deregister(), STATUS_PENDING);
    assert_eq!(
        take_log(&log),
        [
            "P1 detach C2",
            "C2 detach P1",
            "P1 cleanup C2",
            "C2 cleanup P1"
        ]
    );
    assert_eq!(p.wait(), STATUS_SUCCESS);
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn detach_callbacks_run_at_dispatch_and_a_blocking_one_is_caught() {
    let _sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Blocking);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert_eq!(detach_irql(), DISPATCH_LEVEL);
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    assert_eq!(*lock(&p.detach_irqls), [DISPATCH_LEVEL]);
    assert_eq!(*lock(&c.detach_irqls), [DISPATCH_LEVEL]);
    expect_violations(1, "KeWaitForSingleObject waits");
    assert_eq!(irql::current(), PASSIVE_LEVEL);

    // At PASSIVE_LEVEL the same blocking detach is legal.
    set_detach_irql(PASSIVE_LEVEL);
    let p3 = Module::provider(3, 7, &log).with_detach(Detach::Blocking);
    assert_eq!(p3.register(), STATUS_SUCCESS);
    assert_eq!(p3.unregister(), STATUS_SUCCESS);
    assert_eq!(*lock(&p3.detach_irqls), [PASSIVE_LEVEL]);
    assert!(violation::take().is_empty());
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    drop(_sim);
    assert_eq!(
        detach_irql(),
        DISPATCH_LEVEL,
        "a reset restores the default"
    );
}

#[test]
fn fault_injection_on_register_registers_nothing() {
    let sim = Sim::new();
    let log = new_log();
    crate::kernel::fault::fail_nth("NmrRegisterProvider", 1);
    crate::kernel::fault::fail_nth("NmrRegisterClient", 1);
    let c = Module::client(2, 7, &log);
    assert_eq!(c.register(), STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(c.handle(), 0, "no handle written on failure");
    let p = Module::provider(1, 7, &log);
    assert_eq!(p.register(), STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(p.handle(), 0);
    assert!(registrations().is_empty());
    // A failed registration is invisible to counterparts.
    let c3 = Module::client(3, 7, &log);
    assert_eq!(c3.register(), STATUS_SUCCESS);
    assert!(take_log(&log).is_empty());
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        ["C3 attach P1", "P1 attach C3", "C3 bound P1"]
    );
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    assert_eq!(c3.unregister(), STATUS_SUCCESS);
    assert_eq!(crate::kernel::fault::counts()["NmrRegisterProvider"], 2);
    sim.finish().unwrap();
}

#[test]
fn unfinished_registrations_are_outstanding() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    let o = sim.outstanding();
    assert_eq!(o.len(), 2, "{o:?}");
    assert!(
        o[0].contains("provider")
            && o[0].contains(&guid(7).to_string())
            && o[0].contains(&guid(1).to_string())
    );
    assert!(
        o[0].contains("never deregistered (1 binding(s))"),
        "{}",
        o[0]
    );
    assert!(o[1].contains("client") && o[1].contains(&guid(2).to_string()));
    // A pending deregistration completed but never waited for stays outstanding.
    assert_eq!(p.deregister(), STATUS_PENDING);
    p.complete_pending();
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    let o = sim.outstanding();
    assert_eq!(o.len(), 1, "{o:?}");
    assert!(
        o[0].contains("NmrWaitForProviderDeregisterComplete never returned (0 binding(s) remain)"),
        "{}",
        o[0]
    );
    let err = sim.finish().unwrap_err();
    assert!(
        err.contains("left behind: NMR provider registration"),
        "{err}"
    );
    // The next machine starts empty.
    let sim = Sim::new();
    assert!(registrations().is_empty() && bindings().is_empty());
    sim.finish().unwrap();
}

#[test]
fn concurrent_deregistration_and_completion() {
    let sim = Sim::new();
    for round in 0..20u32 {
        let log = new_log();
        let (tx, rx) = mpsc::channel::<(Side, HANDLE)>();
        let p = Module::provider(100, round, &log).with_detach(Detach::Pending);
        *lock(&p.pending_tx) = Some(tx.clone());
        let clients: Vec<_> = (0..6)
            .map(|i| {
                let d = if i % 2 == 0 {
                    Detach::Pending
                } else {
                    Detach::Sync
                };
                let c = Module::client(i, round, &log).with_detach(d);
                *lock(&c.pending_tx) = Some(tx.clone());
                c
            })
            .collect();
        drop(tx);
        assert_eq!(p.register(), STATUS_SUCCESS);
        for c in &clients[..3] {
            assert_eq!(c.register(), STATUS_SUCCESS);
        }
        // Half the clients register while the provider may already be leaving.
        std::thread::scope(|s| {
            // Completes each pending detach as soon as it is reported, possibly
            // before its detach callback has even returned.
            let completer = s.spawn(move || {
                for (side, b) in rx {
                    complete(side, b);
                }
            });
            let late = s.spawn(|| {
                for c in &clients[3..] {
                    assert_eq!(c.register(), STATUS_SUCCESS);
                }
            });
            let odd = s.spawn(|| {
                // One client leaves on its own thread at the same time.
                clients[1].unregister();
            });
            p.unregister();
            late.join().unwrap();
            odd.join().unwrap();
            for (i, c) in clients.iter().enumerate() {
                if i != 1 {
                    c.unregister();
                }
            }
            // Every module's channel sender is dropped with the modules'
            // pending_tx below; drop them now so the completer ends.
            *lock(&p.pending_tx) = None;
            for c in &clients {
                *lock(&c.pending_tx) = None;
            }
            completer.join().unwrap();
        });
        assert_eq!((provider_count(), client_count()), (0, 0), "round {round}");
        assert!(
            outstanding().is_empty(),
            "round {round}: {:?}",
            outstanding()
        );
        assert!(bindings().is_empty());
        // Every binding made was detached and cleaned up exactly once on both sides.
        let pc = p.counts();
        assert!(!pc.is_empty());
        assert!(
            pc.iter().all(|&x| x == (1, 1)),
            "round {round}: provider {pc:?}"
        );
        let mut client_bindings = 0;
        for c in &clients {
            let cc = c.counts();
            // A client ends up with at most one binding (attach may have raced
            // the provider's deregistration).
            assert!(
                cc.len() <= 1 && cc.iter().all(|&x| x == (1, 1)),
                "round {round}: {} {cc:?}",
                c.name
            );
            client_bindings += cc.len();
        }
        assert_eq!(client_bindings, pc.len());
        assert!(
            violation::peek().is_empty(),
            "round {round}: {:?}",
            violation::peek()
        );
    }
    sim.finish().unwrap();
}

#[test]
fn cleanup_runs_at_passive_level_when_a_test_asks_for_it() {
    let sim = Sim::new();
    set_cleanup_irql(PASSIVE_LEVEL);
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert_eq!(c.deregister(), STATUS_PENDING);
    let binding = lock(&p.pending)[0];
    // Completed at DISPATCH_LEVEL: the cleanup goes to a worker thread at
    // PASSIVE_LEVEL, and the client's wait returns after it.
    irql::at(DISPATCH_LEVEL, || complete(Side::Provider, binding));
    lock(&p.pending).clear();
    assert_eq!(c.wait(), STATUS_SUCCESS);
    assert_eq!(*lock(&p.cleanup_irqls), [PASSIVE_LEVEL]);
    assert_eq!(*lock(&c.cleanup_irqls), [PASSIVE_LEVEL]);
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn a_module_unloaded_without_the_deregistration_wait_is_a_violation() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    // The provider deregisters (STATUS_PENDING, even with every detach
    // synchronous) and its image goes away without the wait.
    assert_eq!(p.deregister(), STATUS_PENDING);
    let chars = &*p.pchars as *const NPI_PROVIDER_CHARACTERISTICS as usize;
    image_unloaded(
        "host.sys",
        chars,
        std::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>(),
    );
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].message
            .contains("host.sys unloaded with NMR provider registration")
            && v[0].message.contains(
                "NmrDeregisterProvider returned STATUS_PENDING but \
                 NmrWaitForProviderDeregisterComplete was never called"
            ),
        "{}",
        v[0]
    );
    // The registration is forgotten: nothing calls into the unloaded image.
    assert!(registrations().iter().all(|r| r.side != Side::Provider));
    // A module that never deregistered at all is reported too.
    let chars = &*c.cchars as *const NPI_CLIENT_CHARACTERISTICS as usize;
    image_unloaded("host.sys", chars, 1);
    let v = violation::take();
    assert!(
        v.len() == 1
            && v[0]
                .message
                .contains("NmrDeregisterClient was never called"),
        "{v:?}"
    );
    assert!(registrations().is_empty());
    sim.finish().unwrap();
}

#[test]
fn a_deregistration_wait_that_never_completes_fails_with_a_message() {
    const NAME: &str =
        "kernel::nmr::tests::a_deregistration_wait_that_never_completes_fails_with_a_message";
    if crate::child::is_child(NAME) {
        let _sim = Sim::new();
        crate::kernel::sync::set_wait_limit(std::time::Duration::from_millis(300));
        let log = new_log();
        let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
        let c = Module::client(2, 7, &log);
        assert_eq!(p.register(), STATUS_SUCCESS);
        assert_eq!(c.register(), STATUS_SUCCESS);
        // The provider never completes its pending detach.
        c.unregister();
        unreachable!("the wait returned");
    }
    let out = crate::child::run_test_in_child(NAME);
    assert!(!out.status.success(), "the child must fail: {out:?}");
    assert!(
        out.stderr.contains("waited")
            && out.stderr.contains("NmrWaitForClientDeregisterComplete(")
            && out.stderr.contains("the deregistration never completed")
            && out.stderr.contains("Windows would hang here"),
        "{}",
        out.stderr
    );
}
