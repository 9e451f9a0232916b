//! The generic hook: the two NMR providers of one program type and its
//! attach type ([`Hook`]), and the hook provider every attach type uses
//! ([`HookProvider`]).
//!
//! A hook file of a driver crate (`extensions/<driver>/src/hooks/<type>.rs`)
//! declares its [`ProgramType`], its [`AttachType`], the ELF sections that
//! select them (its eBPF store entries), its [`EventSource`] (the Windows
//! callback that produces events) and one `static` [`Hook`]; the driver's
//! `src/hooks/mod.rs` lists the hooks it loads (its
//! [`Extension`](crate::driver::Extension)'s `hooks`), and the store entries
//! it writes are taken from that list.
//! Everything else is here.
//!
//! Clients (eBPF links) are published in attach order in an array read
//! under an epoch ([`super::clients`]). The invoke path
//! ([`HookProvider::invoke`]) enters the epoch once per event, runs the
//! programs of every client whose detach has not begun, ends the batch, and
//! leaves: no lock (so the IRQL does not change between a batch's begin and
//! end), no atomic per client, no kernel call. It allocates nothing and
//! never waits. Detach never blocks and never fails: under the provider's
//! spin lock it marks the client and publishes an array without it (or,
//! when the pool is exhausted, makes its slot a hole events skip); when no
//! event is inside the epoch it answers STATUS_SUCCESS, otherwise
//! STATUS_PENDING, and whoever ends the grace period (the last event that
//! was inside when the detach began, as it leaves, at its own IRQL)
//! reports the detach complete, once. So a detach waits for every event in
//! flight, not only for those that could reach the client. Arrays are
//! allocated by attach (which fails without one) and detach, never by an
//! event, and freed after a grace period.
//!
//! The event source is registered when the first client attaches and
//! removed after the last one detaches. Removal waits for the callback's
//! calls in flight, so it can happen neither in detach (which must not
//! block, and may run at DISPATCH_LEVEL) nor in cleanup (which NMR may run
//! inside the completion an event reports as it leaves the epoch, that is
//! inside the callback itself: a deadlock). It runs on a system worker thread ([`PassiveWork`]),
//! requested whenever the count of active clients drops to zero. The work
//! routine removes the source only if, under the push lock that also
//! serialises registration, no client is active: a client that attached
//! in between keeps it. No request is lost: one made while the routine
//! runs makes it run again. The callback does nothing while no client is
//! attached.

use super::abi::*;
use super::client::{
    attach_parameters, validate_client, BatchFunctions, ClientDispatch, ClientError,
};
use super::clients::{Done, Entry, Published, Writer, DETACHED};
use super::context::ProgramContext;
use super::program::{AttachType, LinkClasses, ProgramType, ALL_CLASSES};
use crate::nmr::{self, ClientAttach, Provider, ProviderRegistration, StatelessProvider};
use crate::nt::{self, NtResult, HANDLE};
use crate::store;
use crate::sync::{Detach, PassiveOwner, PassiveWork, PushLock, SpinRwLock};
use core::ffi::c_void;
use core::mem::{size_of, MaybeUninit};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The Windows callback behind a hook (a notify routine).
pub trait EventSource: Sync + 'static {
    /// Registers the callback (PASSIVE_LEVEL). A failure fails the attach.
    /// Reports the outcome with `crate::trace::callback_register`.
    ///
    /// # Errors
    /// The status of the registration.
    fn register(&self) -> NtResult;
    /// Removes the callback (PASSIVE_LEVEL). When this returns, no call of
    /// the callback is in flight. Reports the outcome with
    /// `crate::trace::callback_remove`.
    fn unregister(&self);
    /// A link that receives the event classes `classes` attached
    /// (PASSIVE_LEVEL, after [`register`](Self::register) succeeded): for a
    /// source that asks its producer only for the events some link wants.
    fn link_attached(&self, _classes: u32) {}
    /// A link counted by [`link_attached`](Self::link_attached) began its
    /// detach, or its attach was undone (IRQL <= DISPATCH_LEVEL; must not
    /// block).
    fn link_detached(&self, _classes: u32) {}
}

/// `EBPF_PROGRAM_INFO_EXTENSION_IID`, as NMR reads it.
static PROGRAM_INFO_NPI: nt::GUID = EBPF_PROGRAM_INFO_EXTENSION_IID;
/// `EBPF_HOOK_EXTENSION_IID`, as NMR reads it.
static HOOK_NPI: nt::GUID = EBPF_HOOK_EXTENSION_IID;

/// One program type and its attach type: the program-information provider
/// and the hook provider, registered and deregistered together, and the
/// program type's eBPF store entries.
pub struct Hook {
    program_info: ProviderRegistration<StatelessProvider>,
    hook: ProviderRegistration<HookProvider>,
    store: store::Provider,
}

impl Hook {
    /// The hook of `program` attached through `attach`, selected by the ELF
    /// `sections` (each must attach programs of this type: checked at
    /// compile time in a `static`), with events from `source`.
    pub const fn new<const HELPERS: usize>(
        program: &'static ProgramType<HELPERS>,
        attach: &'static AttachType,
        sections: &'static [store::Section],
        source: &'static dyn EventSource,
    ) -> Hook {
        Hook {
            store: store::Provider::new(program, sections),
            program_info: ProviderRegistration::new(
                &PROGRAM_INFO_NPI,
                program.module_id(),
                (program.data() as *const ebpf_program_data_t).cast(),
                StatelessProvider,
            ),
            hook: ProviderRegistration::new(
                &HOOK_NPI,
                attach.module_id(),
                (attach.data() as *const ebpf_attach_provider_data_t).cast(),
                // `load` initializes the work item before this provider is
                // registered, `unload` shuts it down after deregistering.
                HookProvider::new(source, attach.link_classes()),
            ),
        }
    }

    /// The hook provider (the event source's callback invokes through it).
    pub fn provider(&'static self) -> &'static HookProvider {
        self.hook.provider()
    }

    /// What the driver writes to the eBPF store for this program type.
    pub fn store(&'static self) -> &'static store::Provider {
        &self.store
    }

    /// Registers the program type, then the attach type (DriverEntry,
    /// PASSIVE_LEVEL). On failure the caller runs [`unload`](Self::unload).
    ///
    /// # Errors
    /// The first failing step's status.
    ///
    /// # Safety
    /// `driver` must be this driver's DRIVER_OBJECT; called once.
    pub unsafe fn load(&'static self, driver: *mut c_void) -> NtResult {
        // SAFETY: forwarded contract.
        unsafe { self.provider().idle_work.init(driver) }.inspect_err(|e| {
            crate::trace::api_failure(
                crate::trace::keyword::EXTENSION,
                c"ExAllocatePool2",
                e.status(),
            )
        })?;
        self.program_info.register().inspect_err(|e| {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "registering a program type failed: {e:#x}"
            )
        })?;
        self.hook.register().inspect_err(|e| {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "registering an attach type failed: {e:#x}"
            )
        })
    }

    /// Deregisters both providers, waiting for every client to detach, then
    /// removes the event source if it is still registered and releases the
    /// work item (unload, PASSIVE_LEVEL). Undoes whatever part of
    /// [`load`](Self::load) succeeded; does nothing the second time.
    pub fn unload(&'static self) {
        self.hook.deregister();
        self.provider().shutdown();
        self.program_info.deregister();
    }
}

/// What the hook provider keeps of one attached client.
///
/// # Invariants
/// `binding_handle` is NMR's handle of this client's binding; the
/// functions in `dispatch` were validated at attach and stay callable with
/// `binding_context` until the client's detach completes.
pub struct Client {
    binding_handle: HANDLE,
    /// The client's opaque binding context, only passed back to it.
    binding_context: *const c_void,
    dispatch: ClientDispatch,
    /// The event classes the link receives (its attach parameters, read by
    /// the attach type's [`LinkClasses`]; [`ALL_CLASSES`] without).
    classes: u32,
}

// SAFETY: `binding_context` is never dereferenced by the driver; it is
// passed back to the client's own functions, which accept it on any thread.
unsafe impl Send for Client {}

/// The tag of a client with only a plain invoke ([`Entry::tag`]); as a
/// [`Batch`]'s `open`, no batch is open.
const PLAIN: u8 = 0;
/// Tags of clients with batch functions: one per distinct set of
/// functions (a group), interned at attach, so an event compares one byte
/// to know whether a client shares the open batch.
const FIRST_GROUP: u8 = 1;
/// Groups a hook interns; later sets of functions are [`UNSHARED`].
const GROUPS: usize = 15;
/// The tag of a batch client whose functions found no group: it gets a
/// batch of its own.
const UNSHARED: u8 = FIRST_GROUP + GROUPS as u8;
/// A [`Batch`]'s `open` while an [`UNSHARED`] client's batch is open: no
/// tag equals it.
const OPEN_UNSHARED: u8 = UNSHARED + 1;
const _: () = assert!(OPEN_UNSHARED & DETACHED == 0);

/// Never called: the client detached clients' slots point to is tagged
/// [`DETACHED`], which the invoke path skips.
unsafe extern "system" fn hole_invoke(_: *const c_void, _: *mut c_void, _: *mut u32) -> u32 {
    EbpfError::INVALID_ARGUMENT.code()
}

/// The value of the entry detached clients' slots point to.
const HOLE: Client = Client {
    binding_handle: 0,
    binding_context: ptr::null(),
    dispatch: ClientDispatch {
        invoke: hole_invoke,
        batch: None,
    },
    classes: 0,
};
// SAFETY: as above.
unsafe impl Sync for Client {}

/// A hook's eBPF store entries (for [`store::update`]).
impl AsRef<store::Provider> for Hook {
    fn as_ref(&self) -> &store::Provider {
        &self.store
    }
}

/// A hook provider for one attach type.
///
/// # Invariants
/// `published` is changed only through `writer`'s guard. `active` counts
/// the clients attached (from `attach` until their detach begins); the event source is registered (`*registered`) whenever
/// `active > 0`, and a removal request is outstanding whenever `active == 0`
/// and it is registered. `idle_work` is initialized from before the NMR
/// provider is registered until after it is deregistered.
pub struct HookProvider {
    published: Published<Client>,
    writer: SpinRwLock<Writer<Client>>,
    active: AtomicUsize,
    /// Whether the event source is registered (changed at PASSIVE_LEVEL).
    registered: PushLock<bool>,
    /// The batch function sets interned so far (tag `FIRST_GROUP + i`):
    /// only compared, never called; never removed.
    groups: PushLock<[Option<BatchFunctions>; GROUPS]>,
    source: &'static dyn EventSource,
    /// How links' attach parameters select their events (`None`: every
    /// link receives every event).
    link_classes: Option<LinkClasses>,
    /// Removes the event source once no client is active.
    idle_work: PassiveWork,
}

/// What the caller of [`HookProvider::invoke`] decides after each program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Run the next program.
    Continue,
    /// Skip the remaining programs of this event.
    Stop,
}

impl HookProvider {
    /// A provider with no client.
    ///
    /// The work item is not yet initialized: only [`Hook`], which
    /// initializes it before registering and shuts it down after
    /// deregistering, constructs one.
    const fn new(
        source: &'static dyn EventSource,
        link_classes: Option<LinkClasses>,
    ) -> HookProvider {
        HookProvider {
            published: Published::new(HOLE),
            writer: SpinRwLock::new(Writer::new()),
            active: AtomicUsize::new(0),
            registered: PushLock::new(false),
            groups: PushLock::new([None; GROUPS]),
            source,
            link_classes,
            // SAFETY: see `Hook::new` and the type's invariants: init
            // before the first request, shutdown after the last.
            idle_work: unsafe { PassiveWork::new() },
        }
    }

    /// Whether any client is attached (a cheap check for the event path).
    #[inline]
    pub fn has_clients(&self) -> bool {
        self.active.load(Ordering::Acquire) != 0
    }

    /// Runs every attached client's program on `context`, in attach order.
    /// `on_result` sees each program's 32-bit result and decides whether to
    /// go on; a client whose invoke fails is skipped (fail-open). A client
    /// whose detach began before the event reached it is skipped too.
    ///
    /// The result is passed by reference so that a caller that ignores it
    /// reads nothing (and the invoke's status is then not even tested); a
    /// client that succeeded without writing it shows 0 or the result of an
    /// earlier client of the event.
    #[inline]
    pub fn invoke<C, P>(
        &self,
        context: &mut ProgramContext<C, P>,
        on_result: impl FnMut(&u32) -> Flow,
    ) {
        self.invoke_where(context, |_| true, |_| true, on_result);
    }

    /// [`invoke`](Self::invoke) until a program succeeds with a result
    /// that `stops` (a cheap test: it is made before the invoke's status
    /// is, and on every result) accepts: returns that result, or `None`
    /// when every client ran. For a hook whose programs can deny an
    /// event: per client, the result is tested once and the status only
    /// when the result would stop the walk.
    #[inline]
    pub fn invoke_until<C, P>(
        &self,
        context: &mut ProgramContext<C, P>,
        stops: impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let mut stopped = None;
        // Stopping is the rare case: the compiler must test the result
        // alone on the path to the next client, and the status only after
        // (else it tests both and combines them without a branch). The
        // fence (a compiler barrier, no instruction) keeps it from
        // merging the two tests.
        let stops = |result| {
            if stops(result) {
                core::hint::cold_path();
                core::sync::atomic::compiler_fence(Ordering::SeqCst);
                true
            } else {
                false
            }
        };
        self.invoke_where(
            context,
            |_| true,
            stops,
            |result| {
                stopped = Some(*result);
                Flow::Stop
            },
        );
        stopped
    }

    /// For a hook whose events cannot be refused (results ignored): runs
    /// every client's program and returns how many ran when a trace
    /// session wants `HookEvent` records, `None` otherwise (then nothing is
    /// counted: no work per client).
    #[inline]
    pub fn invoke_ignoring_results<C, P>(&self, context: &mut ProgramContext<C, P>) -> Option<u32> {
        self.ignore_results_where(context, |_| true)
    }

    /// [`invoke_ignoring_results`](Self::invoke_ignoring_results) for an
    /// event of class `class` (one bit), on an attach type whose links
    /// choose their events ([`AttachType::with_link_classes`]): only the
    /// clients whose link receives that class run.
    #[inline]
    pub fn invoke_class_ignoring_results<C, P>(
        &self,
        context: &mut ProgramContext<C, P>,
        class: u32,
    ) -> Option<u32> {
        self.ignore_results_where(context, |client| client.classes & class != 0)
    }

    #[inline(always)]
    fn ignore_results_where<C, P>(
        &self,
        context: &mut ProgramContext<C, P>,
        receives: impl Fn(&Client) -> bool,
    ) -> Option<u32> {
        if crate::trace::hook_events_enabled() {
            // Every successful run reaches `on_result` (`stops` is true).
            let mut run = 0u32;
            self.invoke_where(
                context,
                receives,
                |_| true,
                |_| {
                    run += 1;
                    Flow::Continue
                },
            );
            Some(run)
        } else {
            // No result is looked at.
            self.invoke_where(context, receives, |_| false, |_| Flow::Continue);
            None
        }
    }

    /// The walk: clients are taken in two states, no batch open (a plain
    /// client is one tag comparison with [`PLAIN`]) and a batch open (a
    /// client of its group is one comparison with its tag); anything else
    /// (a detached client, a switch between a batch and a plain client or
    /// another group) leaves the state's tight loop.
    #[inline(always)]
    fn invoke_where<C, P>(
        &self,
        context: &mut ProgramContext<C, P>,
        receives: impl Fn(&Client) -> bool,
        stops: impl Fn(u32) -> bool,
        mut on_result: impl FnMut(&u32) -> Flow,
    ) {
        let program_context = context.as_program_context();
        let reader = self.published.enter(|| self.grace_period_over());
        let mut state = MaybeUninit::uninit();
        let mut batch = Batch::new(&mut state);
        // One result for the walk: each client's invoke writes it when it
        // succeeds. It is read after every invoke (`stops` first) but
        // counts only when the invoke succeeded; a client that succeeded
        // without writing it shows 0 or an earlier client's result, never
        // undefined bytes.
        let mut result = 0u32;
        let mut clients = self.published.clients(&reader).iter();
        'walk: loop {
            // No batch open.
            let (tag, entry) = loop {
                let Some(entry) = clients.next() else {
                    break 'walk;
                };
                if !receives(entry.value()) {
                    continue;
                }
                // The tag is loaded again off the fast path (a relaxed
                // load: the compiler then compares the plain client's tag
                // in memory instead of keeping it in a register). Either
                // value is one the tag had during the event.
                if entry.tag() == PLAIN {
                    let status = plain_invoke(entry.value(), program_context, &mut result);
                    if stops(result)
                        && ebpf_check(status).is_ok()
                        && on_result(&result) == Flow::Stop
                    {
                        break 'walk;
                    }
                    continue;
                }
                let tag = entry.tag();
                if tag & DETACHED == 0 {
                    break (tag, entry);
                }
                // Detached (or the hole a detached client left): skipped.
            };
            // A client with batch functions: begin its batch.
            let status = batch.switch(tag, entry.value(), program_context, &mut result);
            if stops(result) && ebpf_check(status).is_ok() && on_result(&result) == Flow::Stop {
                break 'walk;
            }
            // A batch open (unless its begin failed).
            if batch.open == PLAIN {
                continue 'walk;
            }
            loop {
                let Some(entry) = clients.next() else {
                    break 'walk;
                };
                if !receives(entry.value()) {
                    continue;
                }
                if entry.tag() == batch.open {
                    // A client of the open batch's group.
                    let status = batch.invoke(entry.value(), program_context, &mut result);
                    if stops(result)
                        && ebpf_check(status).is_ok()
                        && on_result(&result) == Flow::Stop
                    {
                        break 'walk;
                    }
                    continue;
                }
                // Loaded again, as above.
                let tag = entry.tag();
                if tag & DETACHED == 0 {
                    // A plain client or another group: ends this batch.
                    let status = batch.switch(tag, entry.value(), program_context, &mut result);
                    if stops(result)
                        && ebpf_check(status).is_ok()
                        && on_result(&result) == Flow::Stop
                    {
                        break 'walk;
                    }
                    if batch.open == PLAIN {
                        continue 'walk;
                    }
                }
            }
        }
        // The array is not read after this.
        drop(clients);
        // The batch ends at the IRQL it began at (no lock is held while it
        // is open) and before this event leaves the epoch: a detaching
        // client's link (and its core) stays loaded until then.
        batch.end();
        if self.published.leave(reader) {
            self.grace_period_over();
        }
    }

    /// The grace period in progress is over (rare): free what it was for,
    /// report its detaches, and begin the next one.
    #[cold]
    #[inline(never)]
    fn grace_period_over(&self) {
        let done = self.writer.write().grace_period_over(&self.published);
        complete(done, None);
    }

    fn attach_client(
        &'static self,
        binding_handle: HANDLE,
        client: &ClientAttach<'_>,
    ) -> NtResult<Entry<Client>> {
        // SAFETY: NMR passes the client's registration instance; an eBPF
        // link's NPI-specific characteristics are an ebpf_extension_data_t
        // and its dispatch table an eBPF program dispatch table.
        let dispatch = unsafe {
            validate_client(
                client.registration.NpiSpecificCharacteristics as *const ebpf_extension_data_t,
                client.dispatch,
            )
        }
        .and_then(|dispatch| {
            let classes = match self.link_classes {
                None => ALL_CLASSES,
                // SAFETY: the characteristics passed validate_client; the
                // core keeps the parameters for the attach call.
                Some(classes) => classes(unsafe {
                    attach_parameters(
                        client.registration.NpiSpecificCharacteristics
                            as *const ebpf_extension_data_t,
                    )
                })?,
            };
            Ok::<_, ClientError>((dispatch, classes))
        })
        .map_err(|e| {
            crate::trace::client_refused(
                &client.provider_module,
                &client.client_module,
                crate::trace::refusal_reason(e),
                e.status().status(),
            );
            e.status()
        })?;
        let (dispatch, classes) = dispatch;
        // Room in the published array (the only allocation a client
        // needs: its detach then cannot fail).
        let reserved = self.writer.write().reserve(&self.published);
        let Some(done) = reserved else {
            let e = nt::Error::INSUFFICIENT_RESOURCES;
            crate::trace::api_failure(
                crate::trace::keyword::EXTENSION,
                c"ExAllocatePool2",
                e.status(),
            );
            return Err(e);
        };
        complete(done, None);
        {
            let mut registered = self.registered.lock();
            if !*registered {
                // The source reports the outcome (crate::trace).
                if let Err(e) = self.source.register() {
                    self.writer.write().unreserve();
                    return Err(e);
                }
                // INVARIANT: registered before the client counts as active.
                *registered = true;
            }
            // INVARIANT: counted under the push lock, so the removal work
            // (which checks the count under it) cannot remove the source
            // from under this client.
            self.active.fetch_add(1, Ordering::AcqRel);
            self.source.link_attached(classes);
        }
        let kind = match &dispatch.batch {
            Some(fns) => self.batch_tag(fns),
            None => PLAIN,
        };
        Ok(Entry::new(
            Client {
                binding_handle,
                binding_context: client.binding_context,
                dispatch,
                classes,
            },
            kind,
        ))
    }

    /// The tag of a client with batch functions `fns`: its group's, a new
    /// group's, or [`UNSHARED`] when every group is taken (PASSIVE_LEVEL).
    fn batch_tag(&self, fns: &BatchFunctions) -> u8 {
        let mut groups = self.groups.lock();
        for (i, group) in groups.iter_mut().enumerate() {
            let tag = FIRST_GROUP + i as u8;
            match group {
                Some(known) if known.same_as(fns) => return tag,
                Some(_) => {}
                None => {
                    *group = Some(*fns);
                    return tag;
                }
            }
        }
        UNSHARED
    }

    /// One client fewer is active: at zero, request the removal of the
    /// event source.
    fn deactivate(&'static self) {
        // INVARIANT: the request follows the count reaching zero.
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_work.request(self);
        }
    }

    /// Removes the event source if no client is active (PASSIVE_LEVEL,
    /// outside any call of the callback).
    fn unregister_if_idle(&self) {
        let mut registered = self.registered.lock();
        if *registered && self.active.load(Ordering::Acquire) == 0 {
            self.source.unregister();
            // INVARIANT: removed while no client is active, under the lock
            // attach registers under.
            *registered = false;
        }
    }

    /// At unload, after the NMR provider has been deregistered (so no client
    /// remains): removes the event source if still registered, frees the
    /// client array, waits for the worker and releases the work item.
    fn shutdown(&'static self) {
        self.unregister_if_idle();
        // The source is removed (no event can enter the epoch) and every
        // detach completed (NMR deregistered the provider after them).
        self.writer.write().shutdown(&self.published);
        self.idle_work.shutdown();
    }
}

impl PassiveOwner for HookProvider {
    fn passive_work(&self) -> &PassiveWork {
        &self.idle_work
    }

    fn run_passive(&'static self) {
        self.unregister_if_idle();
    }
}

/// Finishes what grace periods handed back: frees the arrays and reports
/// each detach complete to NMR, except `synchronous`'s (its detach answers
/// STATUS_SUCCESS instead). Called with no lock held: NMR may clean the
/// binding up inside the report.
fn complete(done: Done<Client>, synchronous: Option<&Entry<Client>>) {
    done.finish(|entry| {
        if synchronous.is_some_and(|s| ptr::eq(s, entry)) {
            return;
        }
        // SAFETY: `finish` reports each detached entry once, after its
        // detach answered STATUS_PENDING (it was not the synchronous one)
        // and no event can call it any more; the handle is the one NMR
        // gave its attach.
        unsafe { nmr::detach_complete(entry.value().binding_handle) }
    });
}

/// The batch in progress during one event.
///
/// # Invariants
/// When `open` is not [`PLAIN`], `fns.begin` succeeded with `state` (which
/// it initialized), `fns.end` has not been called for it yet, and `open`
/// is the tag of the group whose functions `fns` are (or
/// [`OPEN_UNSHARED`]); every client tagged `open` has these functions.
/// `fns` is initialized from the first begin on (it is read only while a
/// batch is open).
struct Batch<'s> {
    open: u8,
    fns: MaybeUninit<BatchFunctions>,
    /// Written by `batch_begin` (an `_Out_` parameter): not zeroed here.
    /// Borrowed from the caller, so that only it is in memory (`open` and
    /// `fns` stay in registers).
    state: &'s mut MaybeUninit<ebpf_execution_context_state_t>,
}

impl<'s> Batch<'s> {
    fn new(state: &'s mut MaybeUninit<ebpf_execution_context_state_t>) -> Batch<'s> {
        Batch {
            open: PLAIN,
            fns: MaybeUninit::uninit(),
            state,
        }
    }

    /// The core writes the state in begin, invoke and end: always hand it
    /// a pointer made from a mutable borrow.
    fn state_ptr(&mut self) -> *mut c_void {
        self.state.as_mut_ptr().cast()
    }

    /// Invokes `client`, a client of the open batch's group.
    #[inline(always)]
    fn invoke(&mut self, client: &Client, context: *mut c_void, result: &mut u32) -> ebpf_result_t {
        debug_assert!(self.open != PLAIN, "no batch open");
        let state = self.state_ptr();
        // SAFETY: a batch is open, so `fns` is initialized (invariant).
        let invoke = unsafe { self.fns.assume_init_ref() }.invoke;
        // SAFETY: these functions are the client's (its tag is the open
        // group's: invariant), begun with our state; the client stays live
        // while the event is in the epoch; context is the caller's.
        unsafe { invoke(client.binding_context, context, result, state) }
    }

    /// Invokes `client`, tagged `tag` (not detached), which is not of the
    /// open batch's group: ends that batch, and begins one for the client
    /// when it has batch functions.
    #[inline]
    fn switch(
        &mut self,
        tag: u8,
        client: &Client,
        context: *mut c_void,
        result: &mut u32,
    ) -> ebpf_result_t {
        self.end();
        let Some(fns) = client.dispatch.batch else {
            return plain_invoke(client, context, result);
        };
        let state = self.state_ptr();
        // SAFETY: the client's batch begin, with our 64-byte state; the
        // client stays live while the caller's event is in the epoch.
        let begun = unsafe { (fns.begin)(size_of::<ebpf_execution_context_state_t>(), state) };
        if ebpf_check(begun).is_err() {
            return plain_invoke(client, context, result);
        }
        // INVARIANT: begun with `state`; a client's tag is its group's
        // (attach), except UNSHARED, whose batch no other client joins.
        self.fns.write(fns);
        self.open = if tag == UNSHARED { OPEN_UNSHARED } else { tag };
        self.invoke(client, context, result)
    }

    /// Ends the open batch, if any.
    #[inline(always)]
    fn end(&mut self) {
        if self.open != PLAIN {
            self.end_open();
        }
    }

    #[inline]
    fn end_open(&mut self) {
        let state = self.state_ptr();
        // SAFETY: `open` is not PLAIN, so `fns` is initialized (invariant).
        let end = unsafe { self.fns.assume_init_ref() }.end;
        // SAFETY: ends the batch begun with this state (invariant); the
        // client that began it stays live until the event leaves the
        // epoch, after this.
        let _ = unsafe { end(state) };
        // INVARIANT: no batch open.
        self.open = PLAIN;
    }
}

fn plain_invoke(client: &Client, context: *mut c_void, result: &mut u32) -> ebpf_result_t {
    // SAFETY: the client's invoke with its own binding context; the client
    // stays live while the event is in the epoch.
    unsafe { (client.dispatch.invoke)(client.binding_context, context, result) }
}

impl Provider for HookProvider {
    type Binding = Entry<Client>;

    fn attach(
        &'static self,
        binding_handle: HANDLE,
        client: &ClientAttach<'_>,
    ) -> NtResult<(Entry<Client>, *const c_void)> {
        self.attach_client(binding_handle, client)
            .map(|c| (c, ptr::null()))
    }

    fn attached(&'static self, binding: &Entry<Client>) {
        // SAFETY: the binding stays at this address until it is dropped
        // after `cleanup` (the `Provider::attached` contract), which comes
        // after its detach was reported complete (from a `Done`); attach
        // reserved its room.
        unsafe { self.writer.write().publish(&self.published, binding) };
    }

    fn abandon(&'static self, binding: Entry<Client>) {
        self.writer.write().unreserve();
        self.source.link_detached(binding.value().classes);
        self.deactivate();
    }

    fn detach(&'static self, binding: &Entry<Client>) -> Detach {
        let done = self.writer.write().detach(&self.published, binding);
        self.source.link_detached(binding.value().classes);
        self.deactivate();
        let outcome = if done.holds(binding) {
            Detach::Complete
        } else {
            Detach::Pending
        };
        complete(done, Some(binding));
        outcome
    }

    fn cleanup(&'static self, binding: &Entry<Client>) {
        // Nothing to unlink: detach cleared the client's slot, and its
        // report came after every event that could reach it had left.
        debug_assert!(binding.is_detaching(), "a cleaned-up client was detached");
    }
}
