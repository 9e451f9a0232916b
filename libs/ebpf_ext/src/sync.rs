//! Synchronisation for the driver.
//!
//! - [`Epoch`]: the read-side protection of the invoke path: an event
//!   enters once and leaves once, writing only a counter of its own slot
//!   (no shared cache line, no lock), and a writer learns, without
//!   waiting, when every event that could have seen what it replaced has
//!   left. Pure atomics: it is unit-tested on the host.
//! - [`SpinRwLock`] and [`PushLock`] (Windows only): guards over the kernel's
//!   reader/writer spin lock and push lock that restore IRQL / leave the
//!   critical region when dropped.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// What a provider's detach found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// Nothing can still call the client: the detach is complete now.
    Complete,
    /// Calls may be in flight: the detach is reported complete later.
    Pending,
}

/// Counter slots of an [`Epoch`] (a power of two).
pub const EPOCH_SLOTS: usize = 32;

/// Set in a slot's counter of the draining parity while readers counted in
/// it are still inside.
const DRAINING: usize = 1 << (usize::BITS - 1);

/// One slot: the counters of readers of each parity, on a cache line of
/// its own.
#[repr(align(64))]
struct Slot {
    count: [AtomicUsize; 2],
}

/// Read-side protection with grace periods that nobody waits for: what an
/// event reads stays valid until it leaves, and a writer that replaced
/// something learns, from whoever sees it first, when every reader that
/// could still see the old version has left.
///
/// A reader enters by incrementing a counter of the current parity
/// (`generation & 1`) in one of [`EPOCH_SLOTS`] slots, chosen by the
/// address of its stack (threads that run at the same time have distinct
/// stacks, so they write distinct cache lines unless two of them hash to
/// the same slot: that costs speed, never correctness), and leaves by
/// decrementing the same counter, on whatever processor it then runs.
/// [`start`](Self::start) begins a grace period: it flips the parity (new
/// readers count in the other one) and marks every slot whose counter of
/// the old parity is not zero. The reader whose leave empties the last
/// marked counter is told so, exactly once; if no counter was marked,
/// `start` itself reports the grace period over.
///
/// # Invariants
/// - Counters of the current parity carry no `DRAINING` mark.
/// - While a grace period is in progress, `remaining` is the number of
///   marked counters not yet emptied (plus one while `start` runs); the
///   caller starts no other grace period until this one is reported over.
/// - A reader is counted in the parity it read `generation` as, and only
///   after reading it again unchanged: so a grace period either counts it
///   or it entered after the period began (and reads what the writer
///   published before starting it).
pub struct Epoch {
    generation: AtomicUsize,
    remaining: AtomicUsize,
    slots: [Slot; EPOCH_SLOTS],
}

/// A reader inside an [`Epoch`]: the counter it incremented. Give it back
/// to [`Epoch::leave`].
#[must_use = "a reader that never leaves holds every grace period back"]
pub struct EpochReader<'a> {
    counter: &'a AtomicUsize,
}

impl Default for Epoch {
    fn default() -> Self {
        Self::new()
    }
}

impl Epoch {
    /// No reader, no grace period.
    pub const fn new() -> Epoch {
        Epoch {
            generation: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            slots: [const {
                Slot {
                    count: [AtomicUsize::new(0), AtomicUsize::new(0)],
                }
            }; EPOCH_SLOTS],
        }
    }

    /// The slot of the calling thread: a hash of its stack address.
    #[inline(always)]
    fn slot(&self) -> &Slot {
        let marker = 0u8;
        let address = ptr::from_ref(&marker) as usize;
        // Kernel stacks are larger than 16 KB: drop the bits that vary
        // within one stack and take the next five, the stack's 16 KB unit
        // modulo the slots. Stacks that are neighbours in memory get
        // distinct slots; two stacks share one when their addresses are a
        // multiple of 512 KB apart (a mixing multiply would spread such
        // strides, at three instructions more per event; sharing a slot
        // costs speed, never correctness).
        &self.slots[(address >> 14) % EPOCH_SLOTS]
    }

    /// Enters: until the returned reader is given to
    /// [`leave`](Self::leave), no grace period that begins later ends.
    /// Never waits (it retries only when a grace period began while it
    /// entered). `drained` is called when undoing such a retry ended a
    /// grace period (as for [`leave`](Self::leave) returning true).
    #[inline]
    pub fn enter(&self, mut drained: impl FnMut()) -> EpochReader<'_> {
        let slot = self.slot();
        loop {
            let generation = self.generation.load(Ordering::SeqCst);
            let counter = &slot.count[generation & 1];
            counter.fetch_add(1, Ordering::SeqCst);
            if self.generation.load(Ordering::SeqCst) == generation {
                return EpochReader { counter };
            }
            // A grace period began in between and may not have counted
            // this increment: take it back and count in the new parity.
            if self.release(counter) {
                drained();
            }
        }
    }

    /// Leaves. True when this emptied the last counter the grace period in
    /// progress waited for: it is over, and the caller must act on it.
    #[inline]
    #[must_use]
    pub fn leave(&self, reader: EpochReader<'_>) -> bool {
        self.release(reader.counter)
    }

    #[inline(always)]
    fn release(&self, counter: &AtomicUsize) -> bool {
        let before = counter.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(
            before & !DRAINING != 0,
            "an epoch left more often than entered"
        );
        before == DRAINING | 1 && self.emptied(counter)
    }

    /// A marked counter reached zero: clear the mark and count it, unless
    /// a reader re-entered in between (it takes the count back and comes
    /// here again), so each marked counter is counted once.
    #[cold]
    fn emptied(&self, counter: &AtomicUsize) -> bool {
        counter
            .compare_exchange(DRAINING, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && self.remaining.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Begins a grace period; true when no reader of the old parity was
    /// inside, so it is already over. Otherwise the [`leave`](Self::leave)
    /// (or `enter`'s `drained`) that empties the last of them reports it.
    ///
    /// Never waits; O([`EPOCH_SLOTS`]).
    ///
    /// # Safety
    /// Calls are serialised, and none is made while a grace period is in
    /// progress (begun, and not yet reported over).
    #[must_use]
    pub unsafe fn start(&self) -> bool {
        // One per counter (each is counted once: marked, or found empty)
        // and one for this call, so no reader reaches zero before the
        // scan is done.
        self.remaining.store(EPOCH_SLOTS + 1, Ordering::SeqCst);
        let old = self.generation.fetch_add(1, Ordering::SeqCst) & 1;
        let mut unmarked = 1;
        for slot in &self.slots {
            let counter = &slot.count[old];
            let mut current = counter.load(Ordering::SeqCst);
            loop {
                debug_assert!(
                    current & DRAINING == 0,
                    "a mark left from an earlier period"
                );
                if current == 0 {
                    unmarked += 1;
                    break;
                }
                match counter.compare_exchange(
                    current,
                    current | DRAINING,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => break,
                    Err(now) => current = now,
                }
            }
        }
        self.remaining.fetch_sub(unmarked, Ordering::SeqCst) == unmarked
    }

    /// Readers inside, of both parities (a snapshot, for checks).
    pub fn readers(&self) -> usize {
        self.slots
            .iter()
            .flat_map(|s| &s.count)
            .map(|c| c.load(Ordering::SeqCst) & !DRAINING)
            .sum()
    }
}

#[cfg(windows)]
pub use nt_sync::*;

/// The state word of a [`PassiveWork`].
///
/// # Invariants
/// The word holds only the `BUSY` and `REQUESTED` bits, and `REQUESTED`
/// implies `BUSY`.
///
/// `BUSY` is set from the request that queues the work item until the
/// routine finds no request left, so the item is queued at most once at a
/// time; `REQUESTED` is set by every request and cleared by the routine
/// just before each run, so a request made while a run is in progress
/// causes one more run instead of being lost. Every transition is a
/// read-modify-write of this one word, which totally orders requests and
/// runs: a run that starts after a request (clears its `REQUESTED`) sees
/// everything the requester did before requesting.
#[derive(Debug, Default)]
pub struct WorkState {
    word: AtomicUsize,
}

const BUSY: usize = 1;
const REQUESTED: usize = 2;

/// What a request must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// The item was idle: the caller queues it now.
    Queue,
    /// A run is queued or in progress and will see this request.
    Coalesced,
}

impl WorkState {
    /// Idle, nothing requested.
    pub const fn new() -> WorkState {
        WorkState {
            word: AtomicUsize::new(0),
        }
    }

    /// Records a request.
    #[inline]
    pub fn request(&self) -> Requested {
        let before = self.word.fetch_or(BUSY | REQUESTED, Ordering::AcqRel);
        if before & BUSY == 0 {
            Requested::Queue
        } else {
            Requested::Coalesced
        }
    }

    /// Called by the routine before each run: consumes the pending request.
    pub fn begin_run(&self) {
        let before = self.word.fetch_and(!REQUESTED, Ordering::AcqRel);
        debug_assert!(before & BUSY != 0, "a run without a queued item");
    }

    /// Called by the routine after each run: `true` when no request came
    /// during the run (the item is idle again), `false` when the routine
    /// must run once more.
    pub fn end_run(&self) -> bool {
        self.word
            .compare_exchange(BUSY, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the item is queued or its routine runs.
    pub fn is_busy(&self) -> bool {
        self.word.load(Ordering::Acquire) & BUSY != 0
    }
}

#[cfg(windows)]
mod nt_sync {
    use super::{Requested, WorkState};
    use crate::nt::{self, NtResult};
    use core::cell::UnsafeCell;
    use core::ffi::c_void;
    use core::marker::PhantomData;
    use core::ops::{Deref, DerefMut};
    use core::sync::atomic::{AtomicPtr, Ordering};

    /// Makes a guard `!Send`: it must be dropped on the thread that took
    /// the lock (the kernel ties the raised IRQL, or the critical region,
    /// to that thread).
    type NotSend = PhantomData<*const ()>;

    // The guards are `!Send` (checked at compile time: if one were `Send`,
    // `some_item` would be ambiguous and this would not compile).
    const _: () = {
        trait AmbiguousIfSend<A> {
            fn some_item() {}
        }
        impl<T: ?Sized> AmbiguousIfSend<()> for T {}
        impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
        let _ = <ReadGuard<'static, ()> as AmbiguousIfSend<_>>::some_item;
        let _ = <WriteGuard<'static, ()> as AmbiguousIfSend<_>>::some_item;
        let _ = <PushLockGuard<'static, ()> as AmbiguousIfSend<_>>::some_item;
    };

    /// Data behind a kernel reader/writer spin lock (`EX_SPIN_LOCK`).
    /// Holding either guard raises the IRQL to DISPATCH_LEVEL: keep critical
    /// sections short and call nothing that may wait.
    ///
    /// # Invariants
    /// `data` is only reached through a guard of `lock`.
    pub struct SpinRwLock<T> {
        lock: UnsafeCell<nt::EX_SPIN_LOCK>,
        data: UnsafeCell<T>,
    }

    // SAFETY: access to `data` is serialised by the kernel lock: shared
    // guards give `&T` (so T: Sync is needed), the exclusive guard `&mut T`
    // (so T: Send).
    unsafe impl<T: Send + Sync> Sync for SpinRwLock<T> {}

    impl<T> SpinRwLock<T> {
        /// A lock around `data`; an all-zero `EX_SPIN_LOCK` is initialized.
        pub const fn new(data: T) -> Self {
            SpinRwLock {
                lock: UnsafeCell::new(0),
                data: UnsafeCell::new(data),
            }
        }

        /// Shared access (`ExAcquireSpinLockShared`).
        pub fn read(&self) -> ReadGuard<'_, T> {
            // SAFETY: the lock word lives as long as self; the kernel
            // manipulates it atomically.
            let old = unsafe { nt::ExAcquireSpinLockShared(self.lock.get()) };
            ReadGuard {
                lock: self,
                old,
                _not_send: PhantomData,
            }
        }

        /// Exclusive access (`ExAcquireSpinLockExclusive`).
        pub fn write(&self) -> WriteGuard<'_, T> {
            // SAFETY: as in `read`.
            let old = unsafe { nt::ExAcquireSpinLockExclusive(self.lock.get()) };
            WriteGuard {
                lock: self,
                old,
                _not_send: PhantomData,
            }
        }
    }

    /// Shared hold of a [`SpinRwLock`]; released (IRQL restored) on drop.
    ///
    /// # Invariants
    /// The current thread holds `lock` shared, acquired at IRQL `old`.
    #[must_use = "the lock is released as soon as the guard is dropped"]
    pub struct ReadGuard<'a, T> {
        lock: &'a SpinRwLock<T>,
        old: nt::KIRQL,
        _not_send: NotSend,
    }

    impl<T> Deref for ReadGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the shared lock is held: no exclusive guard exists.
            unsafe { &*self.lock.data.get() }
        }
    }

    impl<T> Drop for ReadGuard<'_, T> {
        fn drop(&mut self) {
            // SAFETY: releases the shared hold this guard took, with the IRQL
            // it returned, on the thread that took it (the guard is !Send).
            unsafe { nt::ExReleaseSpinLockShared(self.lock.lock.get(), self.old) }
        }
    }

    /// Exclusive hold of a [`SpinRwLock`]; released (IRQL restored) on drop.
    ///
    /// # Invariants
    /// The current thread holds `lock` exclusively, acquired at IRQL `old`.
    #[must_use = "the lock is released as soon as the guard is dropped"]
    pub struct WriteGuard<'a, T> {
        lock: &'a SpinRwLock<T>,
        old: nt::KIRQL,
        _not_send: NotSend,
    }

    impl<T> Deref for WriteGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the exclusive lock is held.
            unsafe { &*self.lock.data.get() }
        }
    }

    impl<T> DerefMut for WriteGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: the exclusive lock is held: this is the only access.
            unsafe { &mut *self.lock.data.get() }
        }
    }

    impl<T> Drop for WriteGuard<'_, T> {
        fn drop(&mut self) {
            // SAFETY: releases the exclusive hold this guard took, on the
            // thread that took it.
            unsafe { nt::ExReleaseSpinLockExclusive(self.lock.lock.get(), self.old) }
        }
    }

    /// Data behind a push lock, for state changed only at PASSIVE_LEVEL
    /// (it may be held across calls that wait, such as registering a
    /// kernel callback).
    ///
    /// # Invariants
    /// `data` is only reached through a guard of `lock`.
    pub struct PushLock<T> {
        lock: UnsafeCell<nt::EX_PUSH_LOCK>,
        data: UnsafeCell<T>,
    }

    // SAFETY: `data` is only reached through the exclusive guard.
    unsafe impl<T: Send> Sync for PushLock<T> {}

    impl<T> PushLock<T> {
        /// A zeroed EX_PUSH_LOCK is an initialized one (ExInitializePushLock
        /// stores zero).
        pub const fn new(data: T) -> Self {
            PushLock {
                lock: UnsafeCell::new(0),
                data: UnsafeCell::new(data),
            }
        }

        /// Exclusive access; enters a critical region for the duration, as
        /// push locks require. PASSIVE or APC level only.
        pub fn lock(&self) -> PushLockGuard<'_, T> {
            // SAFETY: a plain kernel call; the region is left by the guard.
            unsafe { nt::KeEnterCriticalRegion() };
            // SAFETY: a lock word that lives as long as self, inside the
            // critical region entered above.
            unsafe { nt::ExAcquirePushLockExclusiveEx(self.lock.get(), 0) };
            PushLockGuard {
                lock: self,
                _not_send: PhantomData,
            }
        }
    }

    /// Exclusive hold of a [`PushLock`]; released on drop.
    ///
    /// # Invariants
    /// The current thread holds `lock` exclusively inside a critical region
    /// it entered for this guard.
    #[must_use = "the lock is released as soon as the guard is dropped"]
    pub struct PushLockGuard<'a, T> {
        lock: &'a PushLock<T>,
        _not_send: NotSend,
    }

    impl<T> Deref for PushLockGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the lock is held exclusively.
            unsafe { &*self.lock.data.get() }
        }
    }

    impl<T> DerefMut for PushLockGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: the lock is held exclusively.
            unsafe { &mut *self.lock.data.get() }
        }
    }

    impl<T> Drop for PushLockGuard<'_, T> {
        fn drop(&mut self) {
            // SAFETY: releases what `lock` acquired, on the same thread.
            unsafe { nt::ExReleasePushLockExclusiveEx(self.lock.lock.get(), 0) };
            // SAFETY: leaves the region `lock` entered, after the release.
            unsafe { nt::KeLeaveCriticalRegion() };
        }
    }

    /// The owner of a [`PassiveWork`]: the work routine receives it by type.
    pub trait PassiveOwner: Sync + 'static {
        /// The owner's work item.
        fn passive_work(&self) -> &PassiveWork;
        /// The work, run at PASSIVE_LEVEL on a system worker thread, once
        /// per batch of requests (never concurrently with itself).
        fn run_passive(&'static self);
    }

    /// Work run at PASSIVE_LEVEL on a system worker thread, requested from
    /// any IRQL up to DISPATCH_LEVEL: an I/O work item (initialized on the
    /// driver object, so a queued routine keeps the image loaded until it
    /// returns). Requests made while a run is queued share that run; a
    /// request made while a run is in progress causes one more run (see
    /// [`WorkState`]): none is lost.
    ///
    /// # Invariants
    /// `item` is null, or a work item initialized by `init` and owned by
    /// this value until `shutdown` frees it; `idle` is an initialized
    /// notification event whenever `item` is non-null.
    pub struct PassiveWork {
        item: AtomicPtr<c_void>,
        state: WorkState,
        idle: UnsafeCell<nt::KEVENT>,
    }

    // SAFETY: the event is a kernel dispatcher object the kernel serialises;
    // everything else is atomic.
    unsafe impl Sync for PassiveWork {}

    impl PassiveWork {
        /// A work item not yet allocated.
        ///
        /// # Safety
        /// [`init`](Self::init) must succeed before the first
        /// [`request`](Self::request), and [`shutdown`](Self::shutdown) run
        /// after the last one: a request on an item that is not initialized
        /// would be lost.
        pub const unsafe fn new() -> PassiveWork {
            PassiveWork {
                item: AtomicPtr::new(core::ptr::null_mut()),
                state: WorkState::new(),
                idle: UnsafeCell::new(nt::KEVENT { opaque: [0; 24] }),
            }
        }

        /// Allocates and initializes the work item (DriverEntry, PASSIVE_LEVEL).
        ///
        /// # Errors
        /// `INSUFFICIENT_RESOURCES` when the pool is exhausted.
        ///
        /// # Safety
        /// `driver` must be this driver's DRIVER_OBJECT; called once, before
        /// any request.
        pub unsafe fn init(&self, driver: *mut c_void) -> NtResult {
            // SAFETY: a plain kernel call.
            let size = unsafe { nt::IoSizeofWorkItem() } as usize;
            // SAFETY: a plain allocation, owned by `self` until `shutdown`.
            let item =
                unsafe { nt::ExAllocatePool2(nt::POOL_FLAG_NON_PAGED, size, crate::pool::tag()) };
            if item.is_null() {
                return Err(nt::Error::INSUFFICIENT_RESOURCES);
            }
            // SAFETY: `item` is IoSizeofWorkItem() bytes we own; `driver`
            // is the driver object (caller's contract).
            unsafe { nt::IoInitializeWorkItem(driver, item) };
            // SAFETY: the event lives in `self`, not yet waited on.
            unsafe { nt::KeInitializeEvent(self.idle.get(), nt::NotificationEvent, 1) };
            // INVARIANT: an initialized item and event.
            self.item.store(item, Ordering::Release);
            Ok(())
        }

        /// Asks for one run of `owner.run_passive()` (IRQL <= DISPATCH_LEVEL).
        /// `owner` is the value whose [`PassiveOwner::passive_work`] is `self`.
        pub fn request<O: PassiveOwner>(&self, owner: &'static O) {
            debug_assert!(core::ptr::eq(owner.passive_work(), self));
            let item = self.item.load(Ordering::Acquire);
            debug_assert!(!item.is_null(), "PassiveWork requested before init");
            if item.is_null() || self.state.request() == Requested::Coalesced {
                return;
            }
            // SAFETY: an initialized work item not queued now (this request
            // moved the state from idle to busy); `owner` is a static, valid
            // for the routine, which takes it back with the same type.
            unsafe {
                nt::IoQueueWorkItem(
                    item,
                    passive_work_routine::<O>,
                    nt::DelayedWorkQueue,
                    (owner as *const O).cast_mut().cast(),
                )
            };
        }

        /// Waits for any queued or running routine, then releases the work
        /// item (unload, PASSIVE_LEVEL, after the last request). Does
        /// nothing when the item was never initialized or is already freed.
        pub fn shutdown(&self) {
            let item = self.item.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if item.is_null() {
                return;
            }
            loop {
                // SAFETY: the event initialized in `init` (item was non-null).
                unsafe { nt::KeClearEvent(self.idle.get()) };
                if !self.state.is_busy() {
                    break;
                }
                // SAFETY: the same event; waiting is legal at PASSIVE_LEVEL,
                // where unload runs. The routine sets it when it goes idle.
                unsafe {
                    nt::KeWaitForSingleObject(
                        self.idle.get().cast(),
                        nt::Executive,
                        nt::KernelMode,
                        0,
                        core::ptr::null(),
                    )
                };
            }
            // SAFETY: the item is no longer queued (idle) and is released
            // once, here (the swap above).
            unsafe { nt::IoUninitializeWorkItem(item) };
            // SAFETY: the block `init` allocated with this tag, freed once.
            unsafe { nt::ExFreePoolWithTag(item, crate::pool::tag()) };
        }
    }

    unsafe extern "system" fn passive_work_routine<O: PassiveOwner>(
        _io_object: *mut c_void,
        context: *mut c_void,
    ) {
        // SAFETY: the context is the `&'static O` that `request::<O>` passed.
        let owner: &'static O = unsafe { &*(context as *const O) };
        let work = owner.passive_work();
        loop {
            work.state.begin_run();
            owner.run_passive();
            if work.state.end_run() {
                break;
            }
        }
        // SAFETY: the event initialized in `init`; shutdown frees nothing
        // before it sees the item idle, which `end_run` just made it.
        unsafe { nt::KeSetEvent(work.idle.get(), 0, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn work_requests_coalesce_while_queued_and_rerun_when_made_during_a_run() {
        let w = WorkState::new();
        assert!(!w.is_busy());
        assert_eq!(w.request(), Requested::Queue, "idle: queue the item");
        assert_eq!(w.request(), Requested::Coalesced, "queued: share the run");
        w.begin_run();
        assert!(w.is_busy());
        assert_eq!(
            w.request(),
            Requested::Coalesced,
            "running: the routine itself runs again"
        );
        assert!(!w.end_run(), "a request came during the run: run again");
        w.begin_run();
        assert!(w.end_run(), "no request during the second run");
        assert!(!w.is_busy());
        assert_eq!(w.request(), Requested::Queue, "idle again");
    }

    #[test]
    fn no_request_is_lost_to_a_racing_run() {
        // A requester increments a counter, then requests; the routine
        // records the counter it saw. After everything settles, the last
        // run must have seen the last increment.
        for _ in 0..200 {
            let w = Arc::new(WorkState::new());
            let value = Arc::new(AtomicU64::new(0));
            let seen = Arc::new(AtomicU64::new(0));
            let queued = Arc::new(AtomicU64::new(0));
            let requester = {
                let (w, value, queued) = (w.clone(), value.clone(), queued.clone());
                std::thread::spawn(move || {
                    for i in 1..=200 {
                        value.store(i, Ordering::Relaxed);
                        if w.request() == Requested::Queue {
                            queued.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                })
            };
            let mut runs_done = 0;
            // Each request causes at most one more run: a routine that
            // keeps running (requests never consumed, or never idle) fails
            // instead of hanging the test.
            let run_all = |runs_done: &mut u64| {
                while *runs_done < queued.load(Ordering::Acquire) {
                    let mut runs = 0;
                    loop {
                        runs += 1;
                        assert!(runs <= 1000, "the routine never went idle");
                        w.begin_run();
                        seen.store(value.load(Ordering::Relaxed), Ordering::Relaxed);
                        if w.end_run() {
                            break;
                        }
                    }
                    *runs_done += 1;
                }
            };
            while !requester.is_finished() {
                run_all(&mut runs_done);
            }
            requester.join().unwrap();
            run_all(&mut runs_done);
            assert!(!w.is_busy());
            assert_eq!(
                seen.load(Ordering::Relaxed),
                200,
                "the last request was served"
            );
        }
    }

    #[test]
    fn a_grace_period_with_no_reader_is_over_at_once() {
        let e = Epoch::new();
        // SAFETY: no other grace period is in progress (nor any thread).
        assert!(unsafe { e.start() });
        let r = e.enter(|| panic!("nothing to drain"));
        assert_eq!(e.readers(), 1);
        assert!(!e.leave(r), "no grace period in progress");
        // SAFETY: the previous one is over.
        assert!(unsafe { e.start() });
        assert_eq!(e.readers(), 0);
    }

    #[test]
    fn the_last_reader_of_the_old_parity_ends_the_grace_period_once() {
        let e = Epoch::new();
        let a = e.enter(|| panic!());
        let b = e.enter(|| panic!());
        // SAFETY: none in progress.
        assert!(!unsafe { e.start() }, "two readers inside");
        let late = e.enter(|| panic!());
        assert!(
            !e.leave(late),
            "a reader of the new parity is not waited for"
        );
        assert!(!e.leave(a), "one reader of the old parity is still inside");
        assert!(e.leave(b), "the last one ends it");
        // A reader still inside when the next period begins is waited for.
        let c = e.enter(|| panic!());
        // SAFETY: the previous period was reported over.
        assert!(!unsafe { e.start() });
        assert!(e.leave(c));
        assert_eq!(e.readers(), 0);
    }

    #[test]
    fn readers_in_different_slots_are_all_waited_for() {
        let e = Epoch::new();
        // Threads have distinct stacks: with eight, several slots.
        let (enter_tx, enter_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
        let e = Arc::new(e);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (e, enter_tx, go_rx) = (e.clone(), enter_tx.clone(), go_rx.clone());
                std::thread::spawn(move || {
                    let r = e.enter(|| panic!());
                    enter_tx.send(()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                    e.leave(r)
                })
            })
            .collect();
        for _ in 0..8 {
            enter_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("a reader did not enter within 30 s");
        }
        // SAFETY: the only grace period of this test.
        assert!(!unsafe { e.start() });
        for _ in 0..8 {
            go_tx.send(()).unwrap();
        }
        let ends: usize = threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(ends, 1, "exactly one reader ends the grace period");
        assert_eq!(e.readers(), 0);
    }

    /// Writers publish a new value and retire the old one through grace
    /// periods while readers keep reading: a retired value is never read
    /// after its grace period was reported over, and every grace period is
    /// reported over exactly once.
    #[test]
    fn racing_readers_never_see_a_value_after_its_grace_period() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Mutex;
        struct Shared {
            epoch: Epoch,
            current: AtomicUsize,
            /// Per value: freed (its grace period reported over).
            freed: Vec<AtomicBool>,
            /// The grace period in progress: the value it retires.
            in_progress: Mutex<Option<usize>>,
            ended: AtomicUsize,
            bad: AtomicUsize,
        }
        const VALUES: usize = 400;
        let s = Arc::new(Shared {
            epoch: Epoch::new(),
            current: AtomicUsize::new(0),
            freed: (0..VALUES).map(|_| AtomicBool::new(false)).collect(),
            in_progress: Mutex::new(None),
            ended: AtomicUsize::new(0),
            bad: AtomicUsize::new(0),
        });
        let end = |s: &Shared| {
            let retired = s
                .in_progress
                .lock()
                .unwrap()
                .take()
                .expect("a period ended twice");
            s.freed[retired].store(true, Ordering::SeqCst);
            s.ended.fetch_add(1, Ordering::SeqCst);
        };
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (s, stop) = (s.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let r = s.epoch.enter(|| end(&s));
                        let v = s.current.load(Ordering::SeqCst);
                        for _ in 0..3 {
                            if s.freed[v].load(Ordering::SeqCst) {
                                s.bad.fetch_add(1, Ordering::SeqCst);
                            }
                            std::hint::spin_loop();
                        }
                        if s.epoch.leave(r) {
                            end(&s);
                        }
                    }
                })
            })
            .collect();
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for next in 1..VALUES {
            // Wait until the previous period is over (the test's writer
            // serialises its periods, as the provider's lock does).
            while s.in_progress.lock().unwrap().is_some() {
                assert!(
                    std::time::Instant::now() < limit,
                    "a grace period never ended"
                );
                std::thread::yield_now();
            }
            let old = s.current.swap(next, Ordering::SeqCst);
            *s.in_progress.lock().unwrap() = Some(old);
            // SAFETY: periods are serialised (the wait above).
            if unsafe { s.epoch.start() } {
                end(&s);
            }
        }
        while s.in_progress.lock().unwrap().is_some() {
            assert!(
                std::time::Instant::now() < limit,
                "the last grace period never ended"
            );
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        for t in readers {
            t.join().unwrap();
        }
        assert_eq!(
            s.bad.load(Ordering::SeqCst),
            0,
            "a reader saw a freed value"
        );
        assert_eq!(s.ended.load(Ordering::SeqCst), VALUES - 1);
        assert_eq!(s.epoch.readers(), 0);
    }
}
