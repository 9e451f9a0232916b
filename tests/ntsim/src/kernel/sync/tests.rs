//! Tests of the locks, rundown protection and events.

use super::*;
use crate::kernel::types::PASSIVE_LEVEL;
use crate::Sim;
use std::cell::UnsafeCell;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A lock word and a non-atomic counter it protects, shared by threads
/// that call the exported functions.
struct Guarded<L> {
    lock: UnsafeCell<L>,
    a: UnsafeCell<u64>,
    b: UnsafeCell<u64>,
}

// SAFETY: the fields are only accessed through the simulated kernel's
// locks (what the tests check) or atomically by those functions.
unsafe impl<L> Sync for Guarded<L> {}

impl<L: Default> Guarded<L> {
    fn new() -> Arc<Self> {
        Arc::new(Guarded {
            lock: UnsafeCell::new(L::default()),
            a: UnsafeCell::new(0),
            b: UnsafeCell::new(0),
        })
    }
}

impl<L> Guarded<L> {
    /// A non-atomic read-modify-write of both counters (the race a lock
    /// must prevent).
    ///
    /// # Safety
    /// The caller holds the lock exclusively.
    unsafe fn bump(&self) {
        // SAFETY: exclusive access per the caller.
        unsafe {
            let a = std::ptr::read_volatile(self.a.get());
            dawdle();
            std::ptr::write_volatile(self.a.get(), a + 1);
            dawdle();
            let b = std::ptr::read_volatile(self.b.get());
            std::ptr::write_volatile(self.b.get(), b + 1);
        }
    }

    /// Reads both counters.
    ///
    /// # Safety
    /// The caller holds the lock (shared at least).
    unsafe fn read(&self) -> (u64, u64) {
        // SAFETY: no writer per the caller.
        unsafe {
            let a = std::ptr::read_volatile(self.a.get());
            dawdle();
            (a, std::ptr::read_volatile(self.b.get()))
        }
    }
}

/// Widens the window in which an unprotected update would race.
fn dawdle() {
    for _ in 0..16 {
        std::hint::spin_loop();
    }
}

const THREADS_N: usize = 4;
const ITERATIONS: u64 = 100_000;

#[test]
fn spin_lock_excludes_and_raises_irql() {
    let sim = Sim::new();
    let g = Guarded::<KSPIN_LOCK>::new();
    let workers: Vec<_> = (0..THREADS_N)
        .map(|_| {
            let g = g.clone();
            std::thread::spawn(move || {
                for _ in 0..ITERATIONS {
                    // SAFETY: the lock word lives as long as `g`.
                    let old = unsafe { KeAcquireSpinLockRaiseToDpc(g.lock.get()) };
                    assert_eq!(old, PASSIVE_LEVEL);
                    assert_eq!(irql::current(), DISPATCH_LEVEL);
                    // SAFETY: the spin lock is held.
                    unsafe { g.bump() };
                    // SAFETY: as above.
                    unsafe { KeReleaseSpinLock(g.lock.get(), old) };
                    assert_eq!(irql::current(), PASSIVE_LEVEL);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // SAFETY: all workers have finished.
    assert_eq!(
        unsafe { g.read() },
        (THREADS_N as u64 * ITERATIONS, THREADS_N as u64 * ITERATIONS)
    );
    // SAFETY: as above.
    assert_eq!(unsafe { *g.lock.get() }, 0);
    sim.finish().unwrap();
}

#[test]
fn dpc_level_spin_lock_variants_check_irql() {
    let sim = Sim::new();
    let mut lock: KSPIN_LOCK = 0;
    irql::at(DISPATCH_LEVEL, || {
        // SAFETY: a local lock word.
        unsafe { KeAcquireSpinLockAtDpcLevel(&mut lock) };
        // SAFETY: as above.
        unsafe { KeReleaseSpinLockFromDpcLevel(&mut lock) };
    });
    assert!(violation::take().is_empty());
    // SAFETY: as above.
    unsafe { KeAcquireSpinLockAtDpcLevel(&mut lock) };
    // SAFETY: as above.
    unsafe { KeReleaseSpinLockFromDpcLevel(&mut lock) };
    let v = violation::take();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].message.contains("requires IRQL >= 2"));
    // Acquiring above DISPATCH_LEVEL is a violation, and so is releasing
    // there (KeReleaseSpinLock runs at DISPATCH_LEVEL); the acquire
    // never lowers the IRQL.
    irql::at(HIGH_LEVEL, || {
        // SAFETY: as above.
        let old = unsafe { KeAcquireSpinLockRaiseToDpc(&mut lock) };
        assert_eq!((old, irql::current()), (HIGH_LEVEL, HIGH_LEVEL));
        // SAFETY: as above.
        unsafe { KeReleaseSpinLock(&mut lock, old) };
    });
    let v = violation::take();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[1].message.contains("KeReleaseSpinLock called at IRQL 15"));
    assert_eq!(lock, 0);
    sim.finish().unwrap();
}

#[test]
fn recursive_spin_lock_is_a_violation_not_a_hang() {
    let sim = Sim::new();
    let mut lock: KSPIN_LOCK = 0;
    // SAFETY: a local lock word.
    let old = unsafe { KeAcquireSpinLockRaiseToDpc(&mut lock) };
    // SAFETY: as above.
    let inner = unsafe { KeAcquireSpinLockRaiseToDpc(&mut lock) };
    let v = violation::take();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].message.contains("recursive acquisition of spin lock"),
        "{}",
        v[0]
    );
    // Releasing the inner acquisition leaves the lock held.
    // SAFETY: as above.
    unsafe { KeReleaseSpinLock(&mut lock, inner) };
    assert_ne!(lock, 0);
    assert_eq!(outstanding().len(), 1, "{:?}", outstanding());
    // SAFETY: as above.
    unsafe { KeReleaseSpinLock(&mut lock, old) };
    assert_eq!(lock, 0);
    // Releasing a free lock is a violation.
    irql::at(DISPATCH_LEVEL, || {
        // SAFETY: as above.
        unsafe { KeReleaseSpinLock(&mut lock, DISPATCH_LEVEL) }
    });
    assert!(violation::take()[0]
        .message
        .contains("not held by this thread"));
    sim.finish().unwrap();
}

#[test]
fn reader_writer_spin_lock_excludes_writers_and_admits_readers() {
    let sim = Sim::new();
    let g = Guarded::<EX_SPIN_LOCK>::new();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (g, stop) = (g.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads == 0 {
                    // SAFETY: the lock word lives as long as `g`.
                    let old = unsafe { ExAcquireSpinLockShared(g.lock.get()) };
                    // SAFETY: held shared: writers are excluded.
                    let (a, b) = unsafe { g.read() };
                    assert_eq!(a, b, "a reader saw a half-done write");
                    // SAFETY: as above.
                    unsafe { ExReleaseSpinLockShared(g.lock.get(), old) };
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let g = g.clone();
            std::thread::spawn(move || {
                for _ in 0..ITERATIONS / 2 {
                    // SAFETY: the lock word lives as long as `g`.
                    let old = unsafe { ExAcquireSpinLockExclusive(g.lock.get()) };
                    // SAFETY: held exclusive.
                    unsafe { g.bump() };
                    // SAFETY: as above.
                    unsafe { ExReleaseSpinLockExclusive(g.lock.get(), old) };
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    // SAFETY: all threads have finished.
    assert_eq!(unsafe { g.read() }, (ITERATIONS, ITERATIONS));
    // SAFETY: as above.
    assert_eq!(unsafe { *g.lock.get() }, 0);
    // Two readers at once are admitted (shared really is shared).
    let mut lock: EX_SPIN_LOCK = 0;
    irql::at(DISPATCH_LEVEL, || {
        // SAFETY: a local lock word.
        unsafe { ExAcquireSpinLockSharedAtDpcLevel(&mut lock) };
        let other = &mut lock as *mut EX_SPIN_LOCK as usize;
        std::thread::spawn(move || {
            let p = other as *mut EX_SPIN_LOCK;
            // SAFETY: the lock outlives this joined thread.
            let old = unsafe { ExAcquireSpinLockShared(p) };
            // SAFETY: as above.
            unsafe { ExReleaseSpinLockShared(p, old) };
        })
        .join()
        .unwrap();
        // Recursive shared acquisition is a violation (a writer waiting
        // would deadlock it on Windows).
        // SAFETY: as above.
        unsafe { ExAcquireSpinLockSharedAtDpcLevel(&mut lock) };
        assert_eq!(violation::take().len(), 1);
        // SAFETY: as above.
        unsafe { ExReleaseSpinLockSharedFromDpcLevel(&mut lock) };
        // SAFETY: as above.
        unsafe { ExReleaseSpinLockSharedFromDpcLevel(&mut lock) };
    });
    assert_eq!(lock, 0);
    sim.finish().unwrap();
}

#[test]
fn push_locks_exclude_and_require_a_critical_region() {
    let sim = Sim::new();
    let g = Guarded::<EX_PUSH_LOCK>::new();
    // SAFETY: the lock word lives as long as `g`.
    unsafe { ExInitializePushLock(g.lock.get()) };
    let workers: Vec<_> = (0..THREADS_N)
        .map(|i| {
            let g = g.clone();
            std::thread::spawn(move || {
                for n in 0..ITERATIONS / 10 {
                    KeEnterCriticalRegion();
                    if (n + i as u64).is_multiple_of(3) {
                        // SAFETY: as above.
                        unsafe { ExAcquirePushLockSharedEx(g.lock.get(), 0) };
                        // SAFETY: held shared.
                        let (a, b) = unsafe { g.read() };
                        assert_eq!(a, b);
                        // SAFETY: as above.
                        unsafe { ExReleasePushLockSharedEx(g.lock.get(), 0) };
                    } else {
                        // SAFETY: as above.
                        unsafe { ExAcquirePushLockExclusiveEx(g.lock.get(), 0) };
                        // SAFETY: held exclusive.
                        unsafe { g.bump() };
                        // SAFETY: as above.
                        unsafe { ExReleasePushLockExclusiveEx(g.lock.get(), 0) };
                    }
                    KeLeaveCriticalRegion();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let expected: u64 = (0..THREADS_N as u64)
        .map(|i| {
            (0..ITERATIONS / 10)
                .filter(|n| !(n + i).is_multiple_of(3))
                .count() as u64
        })
        .sum();
    // SAFETY: all workers have finished.
    assert_eq!(unsafe { g.read() }, (expected, expected));
    // SAFETY: as above.
    assert_eq!(unsafe { *g.lock.get() }, 0);
    assert!(violation::peek().is_empty(), "{:?}", violation::peek());

    let mut lock: EX_PUSH_LOCK = 0;
    // Outside a critical region: a violation.
    // SAFETY: a local lock word.
    unsafe { ExAcquirePushLockExclusiveEx(&mut lock, 0) };
    // SAFETY: as above.
    unsafe { ExReleasePushLockExclusiveEx(&mut lock, 0) };
    let v = violation::take();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].message.contains("outside a critical region"),
        "{}",
        v[0]
    );
    // At DISPATCH_LEVEL: a violation.
    irql::at(DISPATCH_LEVEL, || {
        // SAFETY: as above.
        unsafe { ExAcquirePushLockSharedEx(&mut lock, 0) };
        // SAFETY: as above.
        unsafe { ExReleasePushLockSharedEx(&mut lock, 0) };
    });
    assert!(violation::take().iter().any(|v| v.kind == "irql"));
    // Recursive: a violation, not a hang.
    KeEnterCriticalRegion();
    // SAFETY: as above.
    unsafe { ExAcquirePushLockSharedEx(&mut lock, 0) };
    // SAFETY: as above.
    unsafe { ExAcquirePushLockExclusiveEx(&mut lock, 0) };
    assert!(violation::take()[0]
        .message
        .contains("recursive acquisition of push lock"));
    // SAFETY: as above.
    unsafe { ExReleasePushLockExclusiveEx(&mut lock, 0) };
    // Leaving the region while still holding the lock: a violation.
    KeLeaveCriticalRegion();
    assert!(violation::take()[0]
        .message
        .contains("while still holding push lock (shared)"));
    let out = outstanding();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("still holds push lock (shared)"));
    KeEnterCriticalRegion();
    // SAFETY: as above.
    unsafe { ExReleasePushLockSharedEx(&mut lock, 0) };
    KeLeaveCriticalRegion();
    assert_eq!(lock, 0);
    sim.finish().unwrap();
}

#[test]
fn critical_regions_nest_and_must_balance() {
    let sim = Sim::new();
    KeEnterCriticalRegion();
    KeEnterCriticalRegion();
    KeLeaveCriticalRegion();
    let out = outstanding();
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains("still inside 1 critical region(s)"),
        "{}",
        out[0]
    );
    KeLeaveCriticalRegion();
    assert!(outstanding().is_empty());
    KeLeaveCriticalRegion();
    let v = violation::take();
    assert_eq!(v.len(), 1);
    assert!(v[0]
        .message
        .contains("without a matching KeEnterCriticalRegion"));
    KeEnterCriticalRegion();
    let err = sim.finish().unwrap_err();
    assert!(err.contains("left behind: thread"), "{err}");
}

#[test]
fn rundown_wait_returns_only_after_the_last_release() {
    let sim = Sim::new();
    let r = Arc::new(AtomicUsize::new(usize::MAX));
    let rp = r.as_ptr();
    // SAFETY: `r` outlives every use below (threads are joined).
    unsafe { ExInitializeRundownProtection(rp) };
    // SAFETY: as above.
    assert_eq!(unsafe { ExAcquireRundownProtection(rp) }, 1);
    // SAFETY: as above.
    assert_eq!(unsafe { ExAcquireRundownProtection(rp) }, 1);
    let released = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (r, released) = (r.clone(), released.clone());
        std::thread::spawn(move || {
            // SAFETY: as above.
            unsafe { ExWaitForRundownProtectionRelease(r.as_ptr()) };
            released.load(Ordering::SeqCst)
        })
    };
    // Once the wait has started, new acquisitions fail.
    wait_for("the rundown wait to start", || {
        r.load(Ordering::SeqCst) & RUNDOWN_ACTIVE != 0
    });
    // SAFETY: as above.
    assert_eq!(unsafe { ExAcquireRundownProtection(rp) }, 0);
    released.store(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { ExReleaseRundownProtection(rp) };
    released.store(2, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { ExReleaseRundownProtection(rp) };
    assert_eq!(
        waiter.join().unwrap(),
        2,
        "the wait returned before the last release"
    );
    // After completion a second wait returns at once; re-initialization
    // makes the reference usable again.
    // SAFETY: as above.
    unsafe {
        ExRundownCompleted(rp);
        ExWaitForRundownProtectionRelease(rp);
        ExReInitializeRundownProtection(rp);
        assert_eq!(ExAcquireRundownProtection(rp), 1);
        ExReleaseRundownProtection(rp);
    }
    assert!(violation::peek().is_empty(), "{:?}", violation::peek());
    // Misuse: release without acquire; re-initialize while not run down.
    // SAFETY: as above.
    unsafe {
        ExReleaseRundownProtection(rp);
        ExAcquireRundownProtection(rp);
        ExReInitializeRundownProtection(rp);
    }
    let v = violation::take();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].message.contains("release without acquire"));
    assert!(v[1].message.contains("1 reference(s)"));
    sim.finish().unwrap();
}

#[test]
fn rundown_wait_at_dispatch_is_a_violation() {
    let sim = Sim::new();
    let mut r: EX_RUNDOWN_REF = 0;
    // SAFETY: a local rundown reference.
    unsafe {
        ExInitializeRundownProtection(&mut r);
        ExAcquireRundownProtection(&mut r);
    }
    // Would deadlock (and bug-check on Windows): recorded, not waited.
    irql::at(DISPATCH_LEVEL, || {
        // SAFETY: as above.
        unsafe { ExWaitForRundownProtectionRelease(&mut r) }
    });
    let v = violation::take();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].message
            .contains("ExWaitForRundownProtectionRelease waits"),
        "{}",
        v[0]
    );
    // SAFETY: as above.
    unsafe { ExReleaseRundownProtection(&mut r) };
    assert_eq!(r, RUNDOWN_ACTIVE);
    sim.finish().unwrap();
}

fn new_event(kind: i32, state: bool) -> Box<KEVENT> {
    // SAFETY: an all-zero KEVENT is a valid value to initialize.
    let mut ev: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: 24 writable bytes.
    unsafe { KeInitializeEvent(&mut *ev, kind, u8::from(state)) };
    ev
}

fn wait(ev: *mut KEVENT, timeout: Option<i64>) -> NTSTATUS {
    let t = timeout.unwrap_or(0);
    let tp = if timeout.is_some() {
        &t as *const i64
    } else {
        std::ptr::null()
    };
    // SAFETY: an initialized event and a valid or null timeout.
    unsafe { KeWaitForSingleObject(ev.cast(), 0, 0, 0, tp) }
}

#[test]
fn event_layout_and_state_transitions() {
    let sim = Sim::new();
    let mut n = new_event(NOTIFICATION_EVENT, false);
    let np: *mut KEVENT = &mut *n;
    assert_eq!((n.Type, n.Size, n.SignalState), (0, 6, 0));
    let list = np as usize + 8;
    assert_eq!(n.WaitListHead, [list, list], "empty list points to itself");
    assert_eq!(wait(np, Some(0)), STATUS_TIMEOUT);
    // SAFETY: an initialized event.
    unsafe {
        assert_eq!(KeSetEvent(np, 0, 0), 0);
        assert_eq!(KeSetEvent(np, 0, 0), 1);
        assert_eq!(KeReadStateEvent(np), 1);
    }
    // A notification event stays signaled.
    assert_eq!(wait(np, Some(0)), STATUS_SUCCESS);
    assert_eq!(wait(np, None), STATUS_SUCCESS);
    // SAFETY: as above.
    unsafe {
        assert_eq!(KeResetEvent(np), 1);
        assert_eq!(KeReadStateEvent(np), 0);
    }
    // A relative timeout expires.
    assert_eq!(wait(np, Some(-10_000)), STATUS_TIMEOUT);
    // A synchronization event is consumed by one wait.
    let mut s = new_event(SYNCHRONIZATION_EVENT, true);
    let sp: *mut KEVENT = &mut *s;
    assert_eq!(s.Type, 1);
    assert_eq!(wait(sp, Some(0)), STATUS_SUCCESS);
    assert_eq!(wait(sp, Some(0)), STATUS_TIMEOUT);
    // SAFETY: as above.
    unsafe {
        KeSetEvent(sp, 0, 0);
        KeClearEvent(sp);
        assert_eq!(KeReadStateEvent(sp), 0);
    }
    // An absolute timeout in the past is a poll.
    assert_eq!(wait(sp, Some(1)), STATUS_TIMEOUT);
    assert!(violation::peek().is_empty(), "{:?}", violation::peek());
    // Waiting on something that is not an initialized event.
    let mut junk = [0u64; 3];
    assert_eq!(
        wait(junk.as_mut_ptr().cast(), Some(0)),
        STATUS_INVALID_PARAMETER
    );
    assert!(violation::take()[0].message.contains("not an event"));
    sim.finish().unwrap();
}

#[test]
fn event_wait_wakes_on_set_and_synchronization_releases_one() {
    let sim = Sim::new();
    let ev = Arc::new(Box::into_raw(new_event(NOTIFICATION_EVENT, false)) as usize);
    let set_done = Arc::new(AtomicBool::new(false));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (ev, set_done) = (ev.clone(), set_done.clone());
            std::thread::spawn(move || {
                let st = wait(*ev as *mut KEVENT, None);
                (st, set_done.load(Ordering::SeqCst))
            })
        })
        .collect();
    set_done.store(true, Ordering::SeqCst);
    // SAFETY: an initialized event, freed below after the joins.
    unsafe { KeSetEvent(*ev as *mut KEVENT, 0, 0) };
    for w in waiters {
        assert_eq!(w.join().unwrap(), (STATUS_SUCCESS, true));
    }

    let sev = Arc::new(Box::into_raw(new_event(SYNCHRONIZATION_EVENT, false)) as usize);
    let woken = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (sev, woken) = (sev.clone(), woken.clone());
            std::thread::spawn(move || {
                let st = wait(*sev as *mut KEVENT, None);
                woken.fetch_add(1, Ordering::SeqCst);
                st
            })
        })
        .collect();
    let sp = *sev as *mut KEVENT;
    // SAFETY: as above.
    unsafe { KeSetEvent(sp, 0, 0) };
    wait_for("a waiter to wake", || woken.load(Ordering::SeqCst) != 0);
    // The satisfied wait consumed the signal: the other waiter stays.
    // SAFETY: as above.
    assert_eq!(unsafe { KeReadStateEvent(sp) }, 0);
    // SAFETY: as above.
    unsafe { KeSetEvent(sp, 0, 0) };
    for w in waiters {
        assert_eq!(w.join().unwrap(), STATUS_SUCCESS);
    }
    assert_eq!(woken.load(Ordering::SeqCst), 2);
    // SAFETY: as above.
    assert_eq!(unsafe { KeReadStateEvent(sp) }, 0);
    // SAFETY: both events came from Box::into_raw; no thread uses them.
    unsafe {
        drop(Box::from_raw(*ev as *mut KEVENT));
        drop(Box::from_raw(sp));
    }
    sim.finish().unwrap();
}

#[test]
fn waits_at_dispatch_level_are_violations() {
    let sim = Sim::new();
    let mut ev = new_event(NOTIFICATION_EVENT, false);
    let ep: *mut KEVENT = &mut *ev;
    irql::at(DISPATCH_LEVEL, || {
        // A zero timeout (a poll) is fine at DISPATCH_LEVEL.
        assert_eq!(wait(ep, Some(0)), STATUS_TIMEOUT);
        assert!(violation::peek().is_empty());
        // An infinite or non-zero wait is not; it does not block.
        assert_eq!(wait(ep, None), STATUS_TIMEOUT);
        assert_eq!(wait(ep, Some(-1)), STATUS_TIMEOUT);
    });
    let v = violation::take();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v
        .iter()
        .all(|v| v.kind == "irql" && v.message.contains("KeWaitForSingleObject waits")));
    // Above DISPATCH_LEVEL even a poll is a violation.
    irql::at(HIGH_LEVEL, || wait(ep, Some(0)));
    assert_eq!(violation::take().len(), 1);
    sim.finish().unwrap();
}
