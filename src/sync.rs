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
pub use kernel::*;

#[cfg(windows)]
mod kernel {
    use crate::nt;
    use core::cell::UnsafeCell;
    use core::ffi::c_void;
    use core::ops::{Deref, DerefMut};
    use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

    /// Data behind a kernel reader/writer spin lock (`EX_SPIN_LOCK`).
    /// Holding either guard raises the IRQL to DISPATCH_LEVEL: keep critical
    /// sections short and call nothing that may wait.
    pub struct SpinRwLock<T> {
        lock: UnsafeCell<nt::EX_SPIN_LOCK>,
        data: UnsafeCell<T>,
    }

    // SAFETY: access to `data` is serialised by the kernel lock: shared
    // guards give `&T` (so T: Sync is needed), the exclusive guard `&mut T`
    // (so T: Send).
    unsafe impl<T: Send + Sync> Sync for SpinRwLock<T> {}

    impl<T> SpinRwLock<T> {
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
            ReadGuard { lock: self, old }
        }

        /// Exclusive access (`ExAcquireSpinLockExclusive`).
        pub fn write(&self) -> WriteGuard<'_, T> {
            // SAFETY: as in `read`.
            let old = unsafe { nt::ExAcquireSpinLockExclusive(self.lock.get()) };
            WriteGuard { lock: self, old }
        }
    }

    pub struct ReadGuard<'a, T> {
        lock: &'a SpinRwLock<T>,
        old: nt::KIRQL,
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
            // it returned.
            unsafe { nt::ExReleaseSpinLockShared(self.lock.lock.get(), self.old) }
        }
    }

    pub struct WriteGuard<'a, T> {
        lock: &'a SpinRwLock<T>,
        old: nt::KIRQL,
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
            // SAFETY: releases the exclusive hold this guard took.
            unsafe { nt::ExReleaseSpinLockExclusive(self.lock.lock.get(), self.old) }
        }
    }

    /// Data behind a push lock, for state changed only at PASSIVE_LEVEL
    /// (it may be held across calls that wait, such as registering a
    /// kernel callback).
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
            // SAFETY: plain kernel calls on a lock word that lives as long
            // as self; the critical region is left by the guard.
            unsafe {
                nt::KeEnterCriticalRegion();
                nt::ExAcquirePushLockExclusiveEx(self.lock.get(), 0);
            }
            PushLockGuard { lock: self }
        }
    }

    pub struct PushLockGuard<'a, T> {
        lock: &'a PushLock<T>,
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
            // SAFETY: releases what `lock` acquired, in reverse order.
            unsafe {
                nt::ExReleasePushLockExclusiveEx(self.lock.lock.get(), 0);
                nt::KeLeaveCriticalRegion();
            }
        }
    }

    /// Work run at PASSIVE_LEVEL on a system worker thread, requested from
    /// any IRQL up to DISPATCH_LEVEL: an I/O work item (initialized on the
    /// driver object, so a queued routine keeps the image loaded until it
    /// returns). Requests while one run is queued share that run.
    pub struct PassiveWork {
        item: AtomicPtr<c_void>,
        queued: AtomicBool,
        outstanding: AtomicU32,
        idle: UnsafeCell<nt::KEVENT>,
        routine: fn(),
    }

    // SAFETY: the event is a kernel dispatcher object the kernel serialises;
    // everything else is atomic.
    unsafe impl Sync for PassiveWork {}

    impl PassiveWork {
        pub const fn new(routine: fn()) -> PassiveWork {
            PassiveWork {
                item: AtomicPtr::new(core::ptr::null_mut()),
                queued: AtomicBool::new(false),
                outstanding: AtomicU32::new(0),
                idle: UnsafeCell::new(nt::KEVENT { opaque: [0; 24] }),
                routine,
            }
        }

        /// Allocates and initializes the work item (DriverEntry, PASSIVE_LEVEL).
        ///
        /// # Safety
        /// `driver` must be this driver's DRIVER_OBJECT.
        pub unsafe fn init(&'static self, driver: *mut c_void) -> nt::NTSTATUS {
            // SAFETY: plain kernel calls; the pool block is sized as the
            // kernel asks and owned by `self` until `shutdown`.
            unsafe {
                let size = nt::IoSizeofWorkItem() as usize;
                let item =
                    nt::ExAllocatePool2(nt::POOL_FLAG_NON_PAGED, size, crate::pool::POOL_TAG);
                if item.is_null() {
                    return nt::STATUS_INSUFFICIENT_RESOURCES;
                }
                nt::IoInitializeWorkItem(driver, item);
                nt::KeInitializeEvent(self.idle.get(), nt::NotificationEvent, 1);
                self.item.store(item, Ordering::Release);
            }
            nt::STATUS_SUCCESS
        }

        /// Asks for one run of the routine (IRQL <= DISPATCH_LEVEL).
        pub fn request(&'static self) {
            let item = self.item.load(Ordering::Acquire);
            if item.is_null() || self.queued.swap(true, Ordering::AcqRel) {
                return;
            }
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            // SAFETY: an initialized work item not currently queued (the
            // `queued` flag); `self` is a static, valid for the routine.
            unsafe {
                nt::IoQueueWorkItem(
                    item,
                    passive_work_routine,
                    nt::DelayedWorkQueue,
                    (self as *const PassiveWork).cast_mut().cast(),
                )
            };
        }

        /// Waits for any queued or running routine, then releases the work
        /// item (unload, PASSIVE_LEVEL, after the last request).
        pub fn shutdown(&'static self) {
            let item = self.item.swap(core::ptr::null_mut(), Ordering::AcqRel);
            if item.is_null() {
                return;
            }
            loop {
                // SAFETY: the event initialized in `init`; waiting is legal
                // at PASSIVE_LEVEL, where unload runs.
                unsafe {
                    nt::KeClearEvent(self.idle.get());
                    if self.outstanding.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    nt::KeWaitForSingleObject(
                        self.idle.get().cast(),
                        nt::Executive,
                        nt::KernelMode,
                        0,
                        core::ptr::null(),
                    );
                }
            }
            // SAFETY: the item is no longer queued (nothing outstanding) and
            // is freed once, here.
            unsafe {
                nt::IoUninitializeWorkItem(item);
                nt::ExFreePoolWithTag(item, crate::pool::POOL_TAG);
            }
        }
    }

    unsafe extern "system" fn passive_work_routine(_io_object: *mut c_void, context: *mut c_void) {
        // SAFETY: the context is the static PassiveWork that queued us.
        let work = unsafe { &*(context as *const PassiveWork) };
        // From here on a new request queues a new run.
        work.queued.store(false, Ordering::Release);
        (work.routine)();
        if work.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the event initialized in `init`.
            unsafe { nt::KeSetEvent(work.idle.get(), 0, 0) };
        }
    }

    /// The current IRQL.
    pub fn current_irql() -> nt::KIRQL {
        // SAFETY: no preconditions.
        unsafe { nt::KeGetCurrentIrql() }
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
