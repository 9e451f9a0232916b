//! Synchronization: rundown protection, spin locks, reader/writer spin locks,
//! push locks, critical regions and events, all really excluding: the
//! driver's threads (host threads here) run in parallel.
//!
//! Every lock lives in the driver's memory, as on Windows, and is operated
//! on with atomics on that memory:
//!
//! - `KSPIN_LOCK` (pointer-sized): 0 when free, otherwise an odd word naming
//!   the owning thread (which is how recursive acquisition is detected).
//! - `EX_SPIN_LOCK` (32-bit): bit 31 exclusive owner, bit 30 a writer
//!   waiting (new readers hold back), bits 0-29 the number of readers.
//! - `EX_PUSH_LOCK` (pointer-sized): bit 0 exclusive, bit 1 a writer waiting,
//!   bits 4 and up the number of shared owners.
//! - `EX_RUNDOWN_REF` (pointer-sized): bit 0 "rundown active", the number of
//!   references times 2 above it (Windows' own encoding without the wait
//!   block pointer it stores while waiting).
//! - `KEVENT` (24 bytes): its DISPATCHER_HEADER, with the state in
//!   `SignalState`.
//!
//! Waiting threads (push locks, rundown waits, events) sleep on a condition
//! variable keyed by the object's address; whoever changes the object wakes
//! the waiters of that address. Spin locks spin (yielding now and then).
//!
//! IRQL: spin locks raise to DISPATCH_LEVEL and restore; each API checks the
//! IRQL the WDK documents for it, and a wait at DISPATCH_LEVEL or above
//! (`KeWaitForSingleObject` with a non-zero or no timeout,
//! `ExWaitForRundownProtectionRelease`, push locks) is a violation. Where
//! Windows would bug-check rather than block, the simulation records the
//! violation and does not block (an event wait returns at once with its
//! current state; a rundown wait returns without waiting), so a broken test
//! fails instead of hanging. A push lock is still acquired (the caller goes
//! on to touch what it protects).
//!
//! Per-thread bookkeeping (locks held, critical-region depth) is what makes
//! recursive acquisition, releasing a lock one does not hold, unbalanced
//! critical regions and push locks outside one detectable;
//! [`outstanding`] reports threads still holding locks or inside critical
//! regions.

#![allow(non_camel_case_types)]

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::status::{NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, STATUS_TIMEOUT};
use crate::kernel::types::{APC_LEVEL, DISPATCH_LEVEL, HIGH_LEVEL, KIRQL};
use crate::kernel::{irql, violation};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `KSPIN_LOCK`.
pub type KSPIN_LOCK = usize;
/// `EX_SPIN_LOCK`.
pub type EX_SPIN_LOCK = i32;
/// `EX_PUSH_LOCK`.
pub type EX_PUSH_LOCK = usize;
/// `EX_RUNDOWN_REF`.
pub type EX_RUNDOWN_REF = usize;
/// `BOOLEAN`.
pub type BOOLEAN = u8;

/// `EVENT_TYPE` NotificationEvent (stays signaled until reset).
pub const NOTIFICATION_EVENT: i32 = 0;
/// `EVENT_TYPE` SynchronizationEvent (a satisfied wait resets it).
pub const SYNCHRONIZATION_EVENT: i32 = 1;

/// `KEVENT` (x64): a DISPATCHER_HEADER.
#[repr(C)]
#[derive(Debug)]
pub struct KEVENT {
    /// EventNotificationObject (0) or EventSynchronizationObject (1).
    pub Type: u8,
    pub Signalling: u8,
    /// Size in 32-bit units (6).
    pub Size: u8,
    pub Reserved1: u8,
    pub SignalState: i32,
    /// LIST_ENTRY WaitListHead (Flink, Blink).
    pub WaitListHead: [usize; 2],
}

const _: () = {
    assert!(std::mem::size_of::<KEVENT>() == 24);
    assert!(std::mem::offset_of!(KEVENT, SignalState) == 4);
    assert!(std::mem::offset_of!(KEVENT, WaitListHead) == 8);
};

// ---------------------------------------------------------------------------
// Parking: waiting for a change of an object in driver memory.

struct Parking {
    /// Number of waiters per object address.
    waiters: Mutex<BTreeMap<usize, usize>>,
    cv: Condvar,
}

static PARKING: Parking = Parking {
    waiters: Mutex::new(BTreeMap::new()),
    cv: Condvar::new(),
};

fn parking() -> MutexGuard<'static, BTreeMap<usize, usize>> {
    PARKING.waiters.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `ready()` (evaluated under the parking lock, so a change made
/// before [`wake`] is never missed) or the deadline. Returns whether it got
/// ready.
fn wait_until(addr: usize, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
    let mut g = parking();
    if ready() {
        return true;
    }
    *g.entry(addr).or_insert(0) += 1;
    let ok = loop {
        g = match deadline {
            None => PARKING.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    break false;
                }
                PARKING
                    .cv
                    .wait_timeout(g, d - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        if ready() {
            break true;
        }
    };
    let n = g.get_mut(&addr).expect("registered above");
    *n -= 1;
    if *n == 0 {
        g.remove(&addr);
    }
    ok
}

/// Wakes the waiters of `addr` (call after changing the object).
fn wake(addr: usize) {
    let g = parking();
    if g.contains_key(&addr) {
        PARKING.cv.notify_all();
    }
}

// ---------------------------------------------------------------------------
// Per-thread bookkeeping.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockKind {
    Spin,
    SpinShared,
    SpinExclusive,
    PushShared,
    PushExclusive,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Spin => "spin lock",
            LockKind::SpinShared => "reader/writer spin lock (shared)",
            LockKind::SpinExclusive => "reader/writer spin lock (exclusive)",
            LockKind::PushShared => "push lock (shared)",
            LockKind::PushExclusive => "push lock (exclusive)",
        }
    }

    fn is_push(self) -> bool {
        matches!(self, LockKind::PushShared | LockKind::PushExclusive)
    }
}

struct Held {
    addr: usize,
    kind: LockKind,
    /// A recursive acquisition (a violation): releasing it releases nothing.
    recursive: bool,
}

#[derive(Default)]
struct ThreadState {
    name: String,
    held: Vec<Held>,
    critical: u32,
}

static THREADS: Mutex<BTreeMap<usize, ThreadState>> = Mutex::new(BTreeMap::new());
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static TOKEN: usize = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's non-zero id.
fn token() -> usize {
    TOKEN.with(|t| *t)
}

/// What a KSPIN_LOCK holds while the calling thread owns it (odd, non-zero).
fn spin_owner_word() -> usize {
    (token() << 1) | 1
}

fn with_thread<R>(f: impl FnOnce(&mut ThreadState) -> R) -> R {
    let t = token();
    let mut m = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let st = m.entry(t).or_insert_with(|| ThreadState {
        name: thread_name(),
        ..ThreadState::default()
    });
    let r = f(st);
    if st.held.is_empty() && st.critical == 0 {
        m.remove(&t);
    }
    r
}

fn thread_name() -> String {
    let t = std::thread::current();
    match t.name() {
        Some(n) => n.to_string(),
        None => format!("{:?}", t.id()),
    }
}

fn held_kind(addr: usize) -> Option<LockKind> {
    with_thread(|s| s.held.iter().rev().find(|h| h.addr == addr).map(|h| h.kind))
}

fn push_held(addr: usize, kind: LockKind, recursive: bool) {
    with_thread(|s| {
        s.held.push(Held {
            addr,
            kind,
            recursive,
        })
    });
}

fn pop_held(addr: usize) -> Option<Held> {
    with_thread(|s| {
        let i = s.held.iter().rposition(|h| h.addr == addr)?;
        Some(s.held.remove(i))
    })
}

/// Takes the calling thread's record of holding the lock at `addr` for a
/// release as `wanted`. Records a violation when the thread does not hold
/// it, or holds it in another mode. Returns the mode it was held in, or
/// None when nothing must be released (not held, or a recursive
/// acquisition already reported).
fn pop_held_for_release(api: &str, addr: usize, wanted: LockKind) -> Option<LockKind> {
    let Some(h) = pop_held(addr) else {
        violation::record(
            "sync",
            format!(
                "{api}: {} {addr:#x} is not held by this thread",
                wanted.name()
            ),
        );
        return None;
    };
    if h.recursive {
        return None;
    }
    if h.kind != wanted {
        violation::record(
            "sync",
            format!(
                "{api}: {addr:#x} is held as {}, not {}",
                h.kind.name(),
                wanted.name()
            ),
        );
    }
    Some(h.kind)
}

fn in_critical_region() -> bool {
    with_thread(|s| s.critical > 0)
}

// ---------------------------------------------------------------------------
// IRQL helpers.

fn raise_to_dispatch() -> KIRQL {
    let old = irql::current();
    if old < DISPATCH_LEVEL {
        irql::set(DISPATCH_LEVEL);
    }
    old
}

fn require_at_least_dispatch(api: &str) -> bool {
    let cur = irql::current();
    if cur < DISPATCH_LEVEL {
        violation::record(
            "irql",
            format!("{api} called at IRQL {cur}; it requires IRQL >= {DISPATCH_LEVEL}"),
        );
        false
    } else {
        true
    }
}

/// Restores the IRQL a release routine is given (which must not be above
/// the current one).
fn restore_irql(api: &str, new: KIRQL) {
    let cur = irql::current();
    if new > cur || new > HIGH_LEVEL {
        violation::record(
            "irql",
            format!("{api}: cannot lower IRQL {cur} to the higher (or invalid) IRQL {new}"),
        );
        return;
    }
    irql::set(new);
}

fn spin_wait(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(64) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Checks a pointer to a lock or object of `align` bytes in driver memory.
fn check_ptr(api: &str, p: *const c_void, align: usize) -> bool {
    if p.is_null() || !(p as usize).is_multiple_of(align) {
        violation::record(
            "sync",
            format!("{api}: pointer {p:p} is null or not {align}-byte aligned"),
        );
        false
    } else {
        true
    }
}

/// # Safety
/// `p` is valid, aligned (checked by the caller) and only accessed
/// atomically while the returned reference is used.
unsafe fn atomic_usize<'a>(p: *mut usize) -> &'a AtomicUsize {
    // SAFETY: forwarded to the caller.
    unsafe { AtomicUsize::from_ptr(p) }
}

// ---------------------------------------------------------------------------
// Spin locks.

/// # Safety
/// `lock` points to a KSPIN_LOCK in memory valid for the duration.
unsafe fn acquire_spin(api: &str, lock: *mut KSPIN_LOCK) {
    if !check_ptr(api, lock.cast(), 8) {
        return;
    }
    // SAFETY: checked non-null and aligned; the caller vouches validity.
    let w = unsafe { atomic_usize(lock) };
    let me = spin_owner_word();
    if w.load(Ordering::Relaxed) == me {
        violation::record(
            "sync",
            format!(
                "{api}: recursive acquisition of spin lock {lock:p}, already held by this \
                 thread (a deadlock on Windows)"
            ),
        );
        push_held(lock as usize, LockKind::Spin, true);
        return;
    }
    let mut spins = 0;
    while w
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while w.load(Ordering::Relaxed) != 0 {
            spin_wait(&mut spins);
        }
    }
    push_held(lock as usize, LockKind::Spin, false);
}

/// # Safety
/// As [`acquire_spin`].
unsafe fn release_spin(api: &str, lock: *mut KSPIN_LOCK) {
    if !check_ptr(api, lock.cast(), 8) {
        return;
    }
    // SAFETY: checked non-null and aligned; the caller vouches validity.
    let w = unsafe { atomic_usize(lock) };
    if w.load(Ordering::Relaxed) != spin_owner_word() {
        violation::record(
            "sync",
            format!("{api}: spin lock {lock:p} is not held by this thread"),
        );
        return;
    }
    match pop_held(lock as usize) {
        Some(h) if h.recursive => {}
        _ => w.store(0, Ordering::Release),
    }
}

/// `KeAcquireSpinLockRaiseToDpc` (what the WDK's KeAcquireSpinLock macro
/// calls on x64).
///
/// # Safety
/// `lock` points to a KSPIN_LOCK.
pub unsafe extern "win64" fn KeAcquireSpinLockRaiseToDpc(lock: *mut KSPIN_LOCK) -> KIRQL {
    const API: &str = "KeAcquireSpinLockRaiseToDpc";
    irql::require_at_most(API, DISPATCH_LEVEL);
    let old = raise_to_dispatch();
    // SAFETY: forwarded to the caller.
    unsafe { acquire_spin(API, lock) };
    old
}

/// `KeReleaseSpinLock`.
///
/// # Safety
/// `lock` points to a KSPIN_LOCK.
pub unsafe extern "win64" fn KeReleaseSpinLock(lock: *mut KSPIN_LOCK, new_irql: KIRQL) {
    const API: &str = "KeReleaseSpinLock";
    irql::require_exactly(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    unsafe { release_spin(API, lock) };
    restore_irql(API, new_irql);
}

/// `KeAcquireSpinLockAtDpcLevel`.
///
/// # Safety
/// `lock` points to a KSPIN_LOCK.
pub unsafe extern "win64" fn KeAcquireSpinLockAtDpcLevel(lock: *mut KSPIN_LOCK) {
    const API: &str = "KeAcquireSpinLockAtDpcLevel";
    require_at_least_dispatch(API);
    // SAFETY: forwarded to the caller.
    unsafe { acquire_spin(API, lock) };
}

/// `KeReleaseSpinLockFromDpcLevel`.
///
/// # Safety
/// `lock` points to a KSPIN_LOCK.
pub unsafe extern "win64" fn KeReleaseSpinLockFromDpcLevel(lock: *mut KSPIN_LOCK) {
    const API: &str = "KeReleaseSpinLockFromDpcLevel";
    require_at_least_dispatch(API);
    // SAFETY: forwarded to the caller.
    unsafe { release_spin(API, lock) };
}

// ---------------------------------------------------------------------------
// Reader/writer spin locks.

const RW_EXCLUSIVE: u32 = 0x8000_0000;
const RW_WRITER_WAITING: u32 = 0x4000_0000;
const RW_READERS: u32 = 0x3FFF_FFFF;

/// # Safety
/// `lock` points to an EX_SPIN_LOCK in memory valid for the duration.
unsafe fn rw_word<'a>(api: &str, lock: *mut EX_SPIN_LOCK) -> Option<&'a AtomicU32> {
    if !check_ptr(api, lock.cast(), 4) {
        return None;
    }
    // SAFETY: checked non-null and aligned; the caller vouches validity;
    // the lock is only accessed atomically.
    Some(unsafe { AtomicU32::from_ptr(lock.cast()) })
}

fn recursive_rw(api: &str, lock: *mut EX_SPIN_LOCK, kind: LockKind) -> bool {
    if let Some(held) = held_kind(lock as usize) {
        violation::record(
            "sync",
            format!(
                "{api}: recursive acquisition of {} {lock:p}, already held by this thread as \
                 {} (a deadlock on Windows)",
                kind.name(),
                held.name()
            ),
        );
        push_held(lock as usize, kind, true);
        true
    } else {
        false
    }
}

/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
unsafe fn acquire_rw(api: &str, lock: *mut EX_SPIN_LOCK, exclusive: bool) {
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rw_word(api, lock) }) else {
        return;
    };
    let kind = if exclusive {
        LockKind::SpinExclusive
    } else {
        LockKind::SpinShared
    };
    if recursive_rw(api, lock, kind) {
        return;
    }
    let mut spins = 0;
    loop {
        let v = w.load(Ordering::Relaxed);
        if exclusive {
            if v & (RW_EXCLUSIVE | RW_READERS) == 0 {
                if w.compare_exchange_weak(v, RW_EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            if v & RW_WRITER_WAITING == 0 {
                w.fetch_or(RW_WRITER_WAITING, Ordering::Relaxed);
            }
        } else if v & (RW_EXCLUSIVE | RW_WRITER_WAITING) == 0 {
            if w.compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
            continue;
        }
        spin_wait(&mut spins);
    }
    push_held(lock as usize, kind, false);
}

/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
unsafe fn release_rw(api: &str, lock: *mut EX_SPIN_LOCK, exclusive: bool) {
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rw_word(api, lock) }) else {
        return;
    };
    let wanted = if exclusive {
        LockKind::SpinExclusive
    } else {
        LockKind::SpinShared
    };
    let Some(kind) = pop_held_for_release(api, lock as usize, wanted) else {
        return;
    };
    if kind == LockKind::SpinExclusive {
        w.fetch_and(!RW_EXCLUSIVE, Ordering::Release);
    } else {
        w.fetch_sub(1, Ordering::Release);
    }
}

/// `ExAcquireSpinLockShared`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExAcquireSpinLockShared(lock: *mut EX_SPIN_LOCK) -> KIRQL {
    const API: &str = "ExAcquireSpinLockShared";
    irql::require_at_most(API, DISPATCH_LEVEL);
    let old = raise_to_dispatch();
    // SAFETY: forwarded to the caller.
    unsafe { acquire_rw(API, lock, false) };
    old
}

/// `ExReleaseSpinLockShared`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExReleaseSpinLockShared(lock: *mut EX_SPIN_LOCK, old: KIRQL) {
    const API: &str = "ExReleaseSpinLockShared";
    irql::require_exactly(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    unsafe { release_rw(API, lock, false) };
    restore_irql(API, old);
}

/// `ExAcquireSpinLockExclusive`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExAcquireSpinLockExclusive(lock: *mut EX_SPIN_LOCK) -> KIRQL {
    const API: &str = "ExAcquireSpinLockExclusive";
    irql::require_at_most(API, DISPATCH_LEVEL);
    let old = raise_to_dispatch();
    // SAFETY: forwarded to the caller.
    unsafe { acquire_rw(API, lock, true) };
    old
}

/// `ExReleaseSpinLockExclusive`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExReleaseSpinLockExclusive(lock: *mut EX_SPIN_LOCK, old: KIRQL) {
    const API: &str = "ExReleaseSpinLockExclusive";
    irql::require_exactly(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    unsafe { release_rw(API, lock, true) };
    restore_irql(API, old);
}

/// `ExAcquireSpinLockSharedAtDpcLevel`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExAcquireSpinLockSharedAtDpcLevel(lock: *mut EX_SPIN_LOCK) {
    const API: &str = "ExAcquireSpinLockSharedAtDpcLevel";
    require_at_least_dispatch(API);
    // SAFETY: forwarded to the caller.
    unsafe { acquire_rw(API, lock, false) };
}

/// `ExReleaseSpinLockSharedFromDpcLevel`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExReleaseSpinLockSharedFromDpcLevel(lock: *mut EX_SPIN_LOCK) {
    const API: &str = "ExReleaseSpinLockSharedFromDpcLevel";
    require_at_least_dispatch(API);
    // SAFETY: forwarded to the caller.
    unsafe { release_rw(API, lock, false) };
}

/// `ExAcquireSpinLockExclusiveAtDpcLevel`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExAcquireSpinLockExclusiveAtDpcLevel(lock: *mut EX_SPIN_LOCK) {
    const API: &str = "ExAcquireSpinLockExclusiveAtDpcLevel";
    require_at_least_dispatch(API);
    // SAFETY: forwarded to the caller.
    unsafe { acquire_rw(API, lock, true) };
}

/// `ExReleaseSpinLockExclusiveFromDpcLevel`.
///
/// # Safety
/// `lock` points to an EX_SPIN_LOCK.
pub unsafe extern "win64" fn ExReleaseSpinLockExclusiveFromDpcLevel(lock: *mut EX_SPIN_LOCK) {
    const API: &str = "ExReleaseSpinLockExclusiveFromDpcLevel";
    require_at_least_dispatch(API);
    // SAFETY: forwarded to the caller.
    unsafe { release_rw(API, lock, true) };
}

// ---------------------------------------------------------------------------
// Critical regions and push locks.

/// `KeEnterCriticalRegion`: disables normal kernel APCs for the thread
/// (nesting).
pub extern "win64" fn KeEnterCriticalRegion() {
    irql::require_at_most("KeEnterCriticalRegion", APC_LEVEL);
    with_thread(|s| s.critical += 1);
}

/// `KeLeaveCriticalRegion`.
pub extern "win64" fn KeLeaveCriticalRegion() {
    const API: &str = "KeLeaveCriticalRegion";
    irql::require_at_most(API, APC_LEVEL);
    let problem = with_thread(|s| {
        if s.critical == 0 {
            return Some("without a matching KeEnterCriticalRegion".to_string());
        }
        s.critical -= 1;
        if s.critical == 0 {
            if let Some(h) = s.held.iter().find(|h| h.kind.is_push()) {
                return Some(format!(
                    "while still holding {} {:#x} (acquired inside the region)",
                    h.kind.name(),
                    h.addr
                ));
            }
        }
        None
    });
    if let Some(p) = problem {
        violation::record("sync", format!("{API} {p}"));
    }
}

const PUSH_EXCLUSIVE: usize = 0x1;
const PUSH_WRITER_WAITING: usize = 0x2;
const PUSH_SHARE_INC: usize = 0x10;

/// `ExInitializePushLock`.
///
/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
pub unsafe extern "win64" fn ExInitializePushLock(lock: *mut EX_PUSH_LOCK) {
    if check_ptr("ExInitializePushLock", lock.cast(), 8) {
        // SAFETY: checked; the caller vouches for the memory.
        unsafe { atomic_usize(lock) }.store(0, Ordering::Release);
    }
}

fn try_push_exclusive(w: &AtomicUsize) -> bool {
    let v = w.load(Ordering::Relaxed);
    if v & PUSH_EXCLUSIVE == 0 && v < PUSH_SHARE_INC {
        let new = (v & !PUSH_WRITER_WAITING) | PUSH_EXCLUSIVE;
        w.compare_exchange(v, new, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    } else {
        w.fetch_or(PUSH_WRITER_WAITING, Ordering::Relaxed);
        false
    }
}

fn try_push_shared(w: &AtomicUsize) -> bool {
    let v = w.load(Ordering::Relaxed);
    v & (PUSH_EXCLUSIVE | PUSH_WRITER_WAITING) == 0
        && w.compare_exchange(v, v + PUSH_SHARE_INC, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
}

/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
unsafe fn acquire_push(api: &str, lock: *mut EX_PUSH_LOCK, flags: u32, exclusive: bool) {
    irql::require_at_most(api, APC_LEVEL);
    if !in_critical_region() && irql::current() < APC_LEVEL {
        violation::record(
            "sync",
            format!(
                "{api} called outside a critical region (call KeEnterCriticalRegion first, \
                 or be at APC_LEVEL)"
            ),
        );
    }
    if flags != 0 {
        violation::record(
            "sync",
            format!("{api}: flags {flags:#x} (only EX_DEFAULT_PUSH_LOCK_FLAGS, 0, is defined)"),
        );
    }
    if !check_ptr(api, lock.cast(), 8) {
        return;
    }
    let kind = if exclusive {
        LockKind::PushExclusive
    } else {
        LockKind::PushShared
    };
    if let Some(held) = held_kind(lock as usize) {
        violation::record(
            "sync",
            format!(
                "{api}: recursive acquisition of push lock {lock:p}, already held by this \
                 thread as {} (the thread hangs on Windows)",
                held.name()
            ),
        );
        push_held(lock as usize, kind, true);
        return;
    }
    // SAFETY: checked; the caller vouches for the memory.
    let w = unsafe { atomic_usize(lock) };
    wait_until(lock as usize, None, || {
        if exclusive {
            try_push_exclusive(w)
        } else {
            try_push_shared(w)
        }
    });
    push_held(lock as usize, kind, false);
}

/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
unsafe fn release_push(api: &str, lock: *mut EX_PUSH_LOCK, flags: u32, exclusive: bool) {
    irql::require_at_most(api, APC_LEVEL);
    if flags != 0 {
        violation::record(
            "sync",
            format!("{api}: flags {flags:#x} (only 0 is defined)"),
        );
    }
    if !check_ptr(api, lock.cast(), 8) {
        return;
    }
    let wanted = if exclusive {
        LockKind::PushExclusive
    } else {
        LockKind::PushShared
    };
    let Some(kind) = pop_held_for_release(api, lock as usize, wanted) else {
        return;
    };
    // SAFETY: checked; the caller vouches for the memory.
    let w = unsafe { atomic_usize(lock) };
    if kind == LockKind::PushExclusive {
        w.fetch_and(!PUSH_EXCLUSIVE, Ordering::Release);
    } else {
        w.fetch_sub(PUSH_SHARE_INC, Ordering::Release);
    }
    wake(lock as usize);
}

/// `ExAcquirePushLockExclusiveEx`.
///
/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
pub unsafe extern "win64" fn ExAcquirePushLockExclusiveEx(lock: *mut EX_PUSH_LOCK, flags: u32) {
    // SAFETY: forwarded to the caller.
    unsafe { acquire_push("ExAcquirePushLockExclusiveEx", lock, flags, true) }
}

/// `ExAcquirePushLockSharedEx`.
///
/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
pub unsafe extern "win64" fn ExAcquirePushLockSharedEx(lock: *mut EX_PUSH_LOCK, flags: u32) {
    // SAFETY: forwarded to the caller.
    unsafe { acquire_push("ExAcquirePushLockSharedEx", lock, flags, false) }
}

/// `ExReleasePushLockExclusiveEx`.
///
/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
pub unsafe extern "win64" fn ExReleasePushLockExclusiveEx(lock: *mut EX_PUSH_LOCK, flags: u32) {
    // SAFETY: forwarded to the caller.
    unsafe { release_push("ExReleasePushLockExclusiveEx", lock, flags, true) }
}

/// `ExReleasePushLockSharedEx`.
///
/// # Safety
/// `lock` points to an EX_PUSH_LOCK.
pub unsafe extern "win64" fn ExReleasePushLockSharedEx(lock: *mut EX_PUSH_LOCK, flags: u32) {
    // SAFETY: forwarded to the caller.
    unsafe { release_push("ExReleasePushLockSharedEx", lock, flags, false) }
}

// ---------------------------------------------------------------------------
// Rundown protection.

const RUNDOWN_ACTIVE: usize = 0x1;
const RUNDOWN_COUNT_INC: usize = 0x2;

/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
unsafe fn rundown<'a>(api: &str, r: *mut EX_RUNDOWN_REF) -> Option<&'a AtomicUsize> {
    if !check_ptr(api, r.cast(), 8) {
        return None;
    }
    // SAFETY: checked; the caller vouches for the memory.
    Some(unsafe { atomic_usize(r) })
}

/// `ExInitializeRundownProtection`.
///
/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
pub unsafe extern "win64" fn ExInitializeRundownProtection(r: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExInitializeRundownProtection";
    irql::require_at_most(API, APC_LEVEL);
    // SAFETY: forwarded to the caller.
    if let Some(w) = unsafe { rundown(API, r) } {
        w.store(0, Ordering::Release);
    }
}

/// `ExReInitializeRundownProtection`: only after the old object was run
/// down.
///
/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
pub unsafe extern "win64" fn ExReInitializeRundownProtection(r: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExReInitializeRundownProtection";
    irql::require_at_most(API, APC_LEVEL);
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rundown(API, r) }) else {
        return;
    };
    let v = w.load(Ordering::Acquire);
    if v != RUNDOWN_ACTIVE {
        violation::record(
            "sync",
            format!(
                "{API}({r:p}): the previous object was not run down ({} reference(s), \
                 rundown {}started)",
                v / RUNDOWN_COUNT_INC,
                if v & RUNDOWN_ACTIVE != 0 { "" } else { "not " }
            ),
        );
    }
    w.store(0, Ordering::Release);
}

/// `ExRundownCompleted`.
///
/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
pub unsafe extern "win64" fn ExRundownCompleted(r: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExRundownCompleted";
    irql::require_at_most(API, APC_LEVEL);
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rundown(API, r) }) else {
        return;
    };
    let v = w.load(Ordering::Acquire);
    if v != RUNDOWN_ACTIVE {
        violation::record(
            "sync",
            format!(
                "{API}({r:p}): not preceded by a completed ExWaitForRundownProtectionRelease \
                 ({} reference(s) outstanding)",
                v / RUNDOWN_COUNT_INC
            ),
        );
    }
    w.store(RUNDOWN_ACTIVE, Ordering::Release);
}

/// `ExAcquireRundownProtection`: FALSE once rundown has started.
///
/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
pub unsafe extern "win64" fn ExAcquireRundownProtection(r: *mut EX_RUNDOWN_REF) -> BOOLEAN {
    const API: &str = "ExAcquireRundownProtection";
    irql::require_at_most(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rundown(API, r) }) else {
        return 0;
    };
    let mut v = w.load(Ordering::Relaxed);
    loop {
        if v & RUNDOWN_ACTIVE != 0 {
            return 0;
        }
        match w.compare_exchange_weak(
            v,
            v + RUNDOWN_COUNT_INC,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return 1,
            Err(now) => v = now,
        }
    }
}

/// `ExReleaseRundownProtection`.
///
/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
pub unsafe extern "win64" fn ExReleaseRundownProtection(r: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExReleaseRundownProtection";
    irql::require_at_most(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rundown(API, r) }) else {
        return;
    };
    let mut v = w.load(Ordering::Relaxed);
    loop {
        if v < RUNDOWN_COUNT_INC {
            violation::record(
                "sync",
                format!("{API}({r:p}): no run-down protection is held (release without acquire)"),
            );
            return;
        }
        match w.compare_exchange_weak(
            v,
            v - RUNDOWN_COUNT_INC,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(now) => v = now,
        }
    }
    if v - RUNDOWN_COUNT_INC == RUNDOWN_ACTIVE {
        wake(r as usize);
    }
}

/// `ExWaitForRundownProtectionRelease`: refuses new acquisitions, then
/// waits until every reference is released.
///
/// # Safety
/// `r` points to an EX_RUNDOWN_REF.
pub unsafe extern "win64" fn ExWaitForRundownProtectionRelease(r: *mut EX_RUNDOWN_REF) {
    const API: &str = "ExWaitForRundownProtectionRelease";
    let may_wait = irql::require_can_wait(API);
    // SAFETY: forwarded to the caller.
    let Some(w) = (unsafe { rundown(API, r) }) else {
        return;
    };
    w.fetch_or(RUNDOWN_ACTIVE, Ordering::AcqRel);
    if may_wait {
        wait_until(r as usize, None, || {
            w.load(Ordering::Acquire) == RUNDOWN_ACTIVE
        });
    }
}

// ---------------------------------------------------------------------------
// Events.

static EVENTS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn events() -> MutexGuard<'static, BTreeSet<usize>> {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The event's SignalState, if `ev` is an event KeInitializeEvent set up.
///
/// # Safety
/// `ev` points to a KEVENT.
unsafe fn event_state<'a>(api: &str, ev: *mut KEVENT) -> Option<&'a AtomicI32> {
    if !check_ptr(api, ev.cast(), 8) {
        return None;
    }
    if !events().contains(&(ev as usize)) {
        violation::record(
            "sync",
            format!("{api}({ev:p}): not an event initialized with KeInitializeEvent"),
        );
        return None;
    }
    // SAFETY: checked; the caller vouches for the memory; SignalState is
    // only accessed atomically.
    Some(unsafe { AtomicI32::from_ptr(std::ptr::addr_of_mut!((*ev).SignalState)) })
}

/// `KeInitializeEvent(Event, Type, State)`.
///
/// # Safety
/// `ev` points to 24 writable bytes.
pub unsafe extern "win64" fn KeInitializeEvent(ev: *mut KEVENT, event_type: i32, state: BOOLEAN) {
    const API: &str = "KeInitializeEvent";
    if !check_ptr(API, ev.cast(), 8) {
        return;
    }
    if event_type != NOTIFICATION_EVENT && event_type != SYNCHRONIZATION_EVENT {
        violation::record(
            "sync",
            format!("{API}({ev:p}): invalid EVENT_TYPE {event_type}"),
        );
        return;
    }
    if parking().contains_key(&(ev as usize)) {
        violation::record(
            "sync",
            format!("{API}({ev:p}): re-initializing an event threads are waiting on"),
        );
    }
    let list = ev as usize + std::mem::offset_of!(KEVENT, WaitListHead);
    // SAFETY: the caller provides 24 writable, aligned (checked) bytes.
    unsafe {
        ev.write(KEVENT {
            Type: event_type as u8,
            Signalling: 0,
            Size: (std::mem::size_of::<KEVENT>() / 4) as u8,
            Reserved1: 0,
            SignalState: i32::from(state != 0),
            WaitListHead: [list, list],
        })
    };
    events().insert(ev as usize);
}

/// `KeSetEvent(Event, Increment, Wait)`: returns the previous state.
/// (`Wait` = TRUE, which on Windows returns with the dispatcher lock held
/// for an immediate wait, behaves like FALSE.)
///
/// # Safety
/// `ev` points to a KEVENT.
pub unsafe extern "win64" fn KeSetEvent(ev: *mut KEVENT, _increment: i32, _wait: BOOLEAN) -> i32 {
    const API: &str = "KeSetEvent";
    irql::require_at_most(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    let Some(s) = (unsafe { event_state(API, ev) }) else {
        return 0;
    };
    let prev = s.swap(1, Ordering::AcqRel);
    wake(ev as usize);
    prev
}

/// `KeResetEvent`: returns the previous state.
///
/// # Safety
/// `ev` points to a KEVENT.
pub unsafe extern "win64" fn KeResetEvent(ev: *mut KEVENT) -> i32 {
    const API: &str = "KeResetEvent";
    irql::require_at_most(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    unsafe { event_state(API, ev) }.map_or(0, |s| s.swap(0, Ordering::AcqRel))
}

/// `KeClearEvent`.
///
/// # Safety
/// `ev` points to a KEVENT.
pub unsafe extern "win64" fn KeClearEvent(ev: *mut KEVENT) {
    const API: &str = "KeClearEvent";
    irql::require_at_most(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    if let Some(s) = unsafe { event_state(API, ev) } {
        s.store(0, Ordering::Release);
    }
}

/// `KeReadStateEvent`.
///
/// # Safety
/// `ev` points to a KEVENT.
pub unsafe extern "win64" fn KeReadStateEvent(ev: *mut KEVENT) -> i32 {
    const API: &str = "KeReadStateEvent";
    irql::require_at_most(API, DISPATCH_LEVEL);
    // SAFETY: forwarded to the caller.
    unsafe { event_state(API, ev) }.map_or(0, |s| s.load(Ordering::Acquire))
}

/// Converts a KeWaitForSingleObject timeout (100 ns units; negative:
/// relative; positive: absolute system time since 1601, taken from the
/// host clock) to a deadline.
fn deadline(timeout: i64) -> Instant {
    let now = Instant::now();
    let ticks: u64 = if timeout < 0 {
        timeout.unsigned_abs()
    } else {
        const EPOCH_1601_TO_1970: u64 = 116_444_736_000_000_000;
        let now_ticks = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| (d.as_nanos() / 100) as u64)
            + EPOCH_1601_TO_1970;
        (timeout as u64).saturating_sub(now_ticks)
    };
    now.checked_add(Duration::from_nanos(ticks.saturating_mul(100)))
        .unwrap_or(now + Duration::from_secs(86_400 * 365))
}

/// `KeWaitForSingleObject(Object, WaitReason, WaitMode, Alertable, Timeout)`
/// on an event: STATUS_SUCCESS when signaled (a synchronization event is
/// reset by the satisfied wait), STATUS_TIMEOUT when the timeout expires.
/// Only events are dispatcher objects here; anything else is a violation
/// (STATUS_INVALID_PARAMETER). No APC is ever delivered, so an alertable
/// wait never returns STATUS_ALERTED or STATUS_USER_APC.
///
/// # Safety
/// `object` points to a KEVENT; `timeout` is null or points to an i64.
pub unsafe extern "win64" fn KeWaitForSingleObject(
    object: *mut c_void,
    _wait_reason: i32,
    _wait_mode: i8,
    _alertable: BOOLEAN,
    timeout: *const i64,
) -> NTSTATUS {
    const API: &str = "KeWaitForSingleObject";
    // SAFETY: the caller passes null or a valid LARGE_INTEGER.
    let timeout = (!timeout.is_null()).then(|| unsafe { timeout.read_unaligned() });
    let may_block = if timeout == Some(0) {
        irql::require_at_most(API, DISPATCH_LEVEL);
        false
    } else {
        irql::require_can_wait(API)
    };
    let ev = object.cast::<KEVENT>();
    // SAFETY: forwarded to the caller.
    let Some(state) = (unsafe { event_state(API, ev) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: an initialized event (checked above); Type is set once by
    // KeInitializeEvent and only read here.
    let synchronization = unsafe { std::ptr::addr_of!((*ev).Type).read() } == 1;
    let try_satisfy = || {
        if synchronization {
            let mut v = state.load(Ordering::Acquire);
            while v > 0 {
                match state.compare_exchange_weak(v, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return true,
                    Err(now) => v = now,
                }
            }
            false
        } else {
            state.load(Ordering::Acquire) > 0
        }
    };
    let satisfied = if may_block {
        wait_until(ev as usize, timeout.map(deadline), try_satisfy)
    } else {
        try_satisfy()
    };
    if satisfied {
        STATUS_SUCCESS
    } else {
        STATUS_TIMEOUT
    }
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", KeAcquireSpinLockRaiseToDpc),
        export!("ntoskrnl.exe", KeReleaseSpinLock),
        export!("ntoskrnl.exe", KeAcquireSpinLockAtDpcLevel),
        export!("ntoskrnl.exe", KeReleaseSpinLockFromDpcLevel),
        export!("ntoskrnl.exe", ExAcquireSpinLockShared),
        export!("ntoskrnl.exe", ExReleaseSpinLockShared),
        export!("ntoskrnl.exe", ExAcquireSpinLockExclusive),
        export!("ntoskrnl.exe", ExReleaseSpinLockExclusive),
        export!("ntoskrnl.exe", ExAcquireSpinLockSharedAtDpcLevel),
        export!("ntoskrnl.exe", ExReleaseSpinLockSharedFromDpcLevel),
        export!("ntoskrnl.exe", ExAcquireSpinLockExclusiveAtDpcLevel),
        export!("ntoskrnl.exe", ExReleaseSpinLockExclusiveFromDpcLevel),
        export!("ntoskrnl.exe", KeEnterCriticalRegion),
        export!("ntoskrnl.exe", KeLeaveCriticalRegion),
        export!("ntoskrnl.exe", ExInitializePushLock),
        export!("ntoskrnl.exe", ExAcquirePushLockExclusiveEx),
        export!("ntoskrnl.exe", ExAcquirePushLockSharedEx),
        export!("ntoskrnl.exe", ExReleasePushLockExclusiveEx),
        export!("ntoskrnl.exe", ExReleasePushLockSharedEx),
        export!("ntoskrnl.exe", ExInitializeRundownProtection),
        export!("ntoskrnl.exe", ExReInitializeRundownProtection),
        export!("ntoskrnl.exe", ExRundownCompleted),
        export!("ntoskrnl.exe", ExAcquireRundownProtection),
        export!("ntoskrnl.exe", ExReleaseRundownProtection),
        export!("ntoskrnl.exe", ExWaitForRundownProtectionRelease),
        export!("ntoskrnl.exe", KeInitializeEvent),
        export!("ntoskrnl.exe", KeSetEvent),
        export!("ntoskrnl.exe", KeResetEvent),
        export!("ntoskrnl.exe", KeClearEvent),
        export!("ntoskrnl.exe", KeReadStateEvent),
        export!("ntoskrnl.exe", KeWaitForSingleObject),
    ]
}

/// Forgets all state (a new [`crate::Sim`]): per-thread bookkeeping and the
/// set of initialized events. Locks live in driver memory and need nothing.
pub(crate) fn reset() {
    THREADS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    events().clear();
}

/// Threads still holding a lock or inside a critical region, one line each.
pub(crate) fn outstanding() -> Vec<String> {
    let m = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for st in m.values() {
        for h in &st.held {
            out.push(format!(
                "thread '{}' still holds {} {:#x}",
                st.name,
                h.kind.name(),
                h.addr
            ));
        }
        if st.critical > 0 {
            out.push(format!(
                "thread '{}' is still inside {} critical region(s)",
                st.name, st.critical
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
        while r.load(Ordering::SeqCst) & RUNDOWN_ACTIVE == 0 {
            std::thread::yield_now();
        }
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
        while woken.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
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
}
