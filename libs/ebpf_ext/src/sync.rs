//! Synchronisation for the driver.
//!
//! - [`InvokeRef`]: the per-client reference that lets the invoke path run
//!   without locks and lets detach finish without blocking. Pure atomics: it
//!   is unit-tested on the host.
//! - [`SpinRwLock`] and [`PushLock`] (Windows only): guards over the kernel's
//!   reader/writer spin lock and push lock that restore IRQL / leave the
//!   critical region when dropped.

use core::sync::atomic::{AtomicUsize, Ordering};

/// A rundown-style counter of in-flight invocations of one client, with a
/// detach that never waits.
///
/// # Invariants
/// The state word holds `2 * in_flight | detaching`. Once detaching is set,
/// no new reference can be taken; the reference whose release brings the
/// count to zero afterwards is told so, exactly once, and is the one that
/// must report the detach complete.
#[derive(Debug, Default)]
pub struct InvokeRef {
    state: AtomicUsize,
}

const DETACHING: usize = 1;
const ONE: usize = 2;

/// What [`InvokeRef::begin_detach`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detach {
    /// Nothing was in flight: the detach is complete now.
    Complete,
    /// Invocations are in flight: the last [`InvokeRef::release`] completes it.
    Pending,
}

impl InvokeRef {
    /// No reference taken, not detaching.
    pub const fn new() -> InvokeRef {
        InvokeRef {
            state: AtomicUsize::new(0),
        }
    }

    /// Takes a reference unless detach has begun.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            if cur & DETACHING != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                cur,
                cur + ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Drops a reference taken by [`try_acquire`](Self::try_acquire).
    /// Returns true when this was the last reference of a client whose
    /// detach is pending: the caller must now complete the detach.
    #[inline]
    #[must_use]
    pub fn release(&self) -> bool {
        let before = self.state.fetch_sub(ONE, Ordering::AcqRel);
        debug_assert!(before >= ONE, "InvokeRef released more often than acquired");
        before == ONE | DETACHING
    }

    /// Starts the detach: no reference can be taken from now on.
    pub fn begin_detach(&self) -> Detach {
        let before = self.state.fetch_or(DETACHING, Ordering::AcqRel);
        debug_assert!(before & DETACHING == 0, "detach begun twice");
        if before & !DETACHING == 0 {
            Detach::Complete
        } else {
            Detach::Pending
        }
    }

    /// Whether detach has begun.
    pub fn is_detaching(&self) -> bool {
        self.state.load(Ordering::Acquire) & DETACHING != 0
    }

    /// Invocations in flight.
    pub fn in_flight(&self) -> usize {
        self.state.load(Ordering::Acquire) / ONE
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
            let item = unsafe {
                nt::ExAllocatePool2(nt::POOL_FLAG_NON_PAGED, size, crate::pool::POOL_TAG)
            };
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
            unsafe { nt::ExFreePoolWithTag(item, crate::pool::POOL_TAG) };
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
    fn detach_with_nothing_in_flight_completes_at_once() {
        let r = InvokeRef::new();
        assert!(r.try_acquire());
        assert!(!r.release());
        assert_eq!(r.begin_detach(), Detach::Complete);
        assert!(!r.try_acquire(), "no reference after detach began");
    }

    #[test]
    fn last_release_after_detach_completes_exactly_once() {
        let r = InvokeRef::new();
        assert!(r.try_acquire());
        assert!(r.try_acquire());
        assert_eq!(r.begin_detach(), Detach::Pending);
        assert!(!r.try_acquire());
        assert!(!r.release(), "one reference is still in flight");
        assert!(r.release(), "the last release completes the detach");
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn in_flight_counts_references_and_is_detaching_reports_the_detach() {
        let r = InvokeRef::new();
        assert!(!r.is_detaching());
        assert_eq!(r.in_flight(), 0);
        assert!(r.try_acquire());
        assert!(r.try_acquire());
        assert!(r.try_acquire());
        assert_eq!(r.in_flight(), 3);
        assert!(!r.is_detaching(), "references alone are not a detach");
        assert_eq!(r.begin_detach(), Detach::Pending);
        assert!(r.is_detaching());
        assert_eq!(r.in_flight(), 3, "the detach flag is not a reference");
        assert!(!r.release());
        assert_eq!(r.in_flight(), 2);
        assert!(!r.release());
        assert!(r.release());
        assert_eq!(r.in_flight(), 0);
        assert!(r.is_detaching(), "a completed detach stays detached");
    }

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
    fn racing_invocations_and_detach_complete_exactly_once() {
        for _ in 0..200 {
            let r = Arc::new(InvokeRef::new());
            let completions = Arc::new(AtomicU64::new(0));
            let invoked_after_detach = Arc::new(AtomicU64::new(0));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let r = r.clone();
                    let c = completions.clone();
                    let bad = invoked_after_detach.clone();
                    std::thread::spawn(move || {
                        for _ in 0..1000 {
                            if r.try_acquire() {
                                if r.is_detaching() && r.in_flight() == 0 {
                                    bad.fetch_add(1, Ordering::Relaxed);
                                }
                                if r.release() {
                                    c.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
                .collect();
            std::thread::yield_now();
            if r.begin_detach() == Detach::Complete {
                completions.fetch_add(1, Ordering::Relaxed);
            }
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(completions.load(Ordering::Relaxed), 1);
            assert_eq!(invoked_after_detach.load(Ordering::Relaxed), 0);
            assert!(!r.try_acquire());
        }
    }
}
