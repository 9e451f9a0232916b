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
//! No wait lasts for ever: after [`wait_limit`] one that Windows would let
//! hang fails through [`hung`] with a message (a deadlock in a test fails
//! instead of hanging the suite); [`wait_for`] and [`wait_while`] give host
//! code the same bound.
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
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod event;
mod rundown;
#[cfg(test)]
mod tests;

pub use event::*;
pub use rundown::*;

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
/// ready. Without a deadline (a wait Windows lets last for ever) it fails
/// through [`hung`] after [`wait_limit`]: a test that deadlocks fails with
/// a message instead of hanging.
fn wait_until(
    what: &str,
    addr: usize,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let mut g = parking();
    if ready() {
        return true;
    }
    *g.entry(addr).or_insert(0) += 1;
    let started = Instant::now();
    let ok = loop {
        let (limit, bounded) = match deadline {
            Some(d) => (d, true),
            None => (started + wait_limit(), false),
        };
        let now = Instant::now();
        if now >= limit {
            if bounded {
                break false;
            }
            drop(g);
            hung(&format!("{what} ({addr:#x})"), started);
        }
        g = PARKING
            .cv
            .wait_timeout(g, limit - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
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

/// One host thread's bookkeeping. The thread reaches its own slot through
/// a thread-local (an uncontended lock: no shared cache line, and the
/// `held` vector keeps its capacity, so a lock call allocates nothing);
/// [`outstanding`] and [`reset`] reach every slot through [`SLOTS`].
struct ThreadSlot {
    state: Mutex<ThreadState>,
}

impl ThreadSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, ThreadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_idle(&self) -> bool {
        let st = self.lock();
        st.held.is_empty() && st.critical == 0
    }
}

/// Every live thread's slot, and the slots of threads that ended while
/// holding a lock or inside a critical region (kept for [`outstanding`]).
static SLOTS: Mutex<Vec<Arc<ThreadSlot>>> = Mutex::new(Vec::new());

fn slots() -> std::sync::MutexGuard<'static, Vec<Arc<ThreadSlot>>> {
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling thread's slot, registered on first use; when the thread
/// ends, an idle slot is forgotten.
struct SlotHandle(Arc<ThreadSlot>);

impl SlotHandle {
    fn new() -> SlotHandle {
        let slot = Arc::new(ThreadSlot {
            state: Mutex::new(ThreadState {
                name: thread_name(),
                ..ThreadState::default()
            }),
        });
        slots().push(slot.clone());
        SlotHandle(slot)
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        if self.0.is_idle() {
            slots().retain(|s| !Arc::ptr_eq(s, &self.0));
        }
    }
}

static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static TOKEN: usize = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    static SLOT: SlotHandle = SlotHandle::new();
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
    let mut f = Some(f);
    if let Ok(r) = SLOT.try_with(|slot| (f.take().expect("called once"))(&mut slot.0.lock())) {
        return r;
    }
    // The thread is ending and its slot is gone (a thread-local destructor
    // called the kernel): a slot for this call, kept if it stays busy.
    let slot = SlotHandle::new();
    let r = (f.take().expect("called once"))(&mut slot.0.lock());
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

/// The calling thread's critical-region depth (the kernel's own regions,
/// such as the one around process notify routines, included).
pub(crate) fn critical_region_depth() -> u32 {
    with_thread(|s| s.critical)
}

/// Sets the calling thread's critical-region depth: the kernel entering a
/// region on a driver's behalf, or restoring the depth after a routine
/// that left it unbalanced (which the caller reports).
pub(crate) fn set_critical_region_depth(depth: u32) {
    with_thread(|s| s.critical = depth);
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

/// A spinning acquisition: yields now and then and fails through [`hung`]
/// once it has spun for [`wait_limit`] (a deadlock).
struct Spinner {
    spins: u32,
    started: Instant,
}

impl Spinner {
    fn new() -> Spinner {
        Spinner {
            spins: 0,
            started: Instant::now(),
        }
    }

    fn spin(&mut self, what: &str, addr: usize) {
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(64) {
            if self.started.elapsed() >= wait_limit() {
                hung(&format!("{what} ({addr:#x})"), self.started);
            }
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

// ---------------------------------------------------------------------------
// The bound on every wait.

/// The default bound on a wait that Windows would let last for ever.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The limit in milliseconds (0: the default, or `NTSIM_WAIT_LIMIT_SECS`).
static WAIT_LIMIT_MS: AtomicU64 = AtomicU64::new(0);

/// How long any wait in ntsim (a lock, an event or rundown wait without a
/// timeout, an NMR deregistration wait, a test helper's wait) may last before
/// it fails with a message: [`DEFAULT_WAIT_LIMIT`], or
/// `NTSIM_WAIT_LIMIT_SECS` from the environment, or what [`set_wait_limit`]
/// set (until the next [`crate::Sim`]).
pub fn wait_limit() -> Duration {
    match WAIT_LIMIT_MS.load(Ordering::Relaxed) {
        0 => std::env::var("NTSIM_WAIT_LIMIT_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map_or(DEFAULT_WAIT_LIMIT, Duration::from_secs),
        ms => Duration::from_millis(ms),
    }
}

/// Sets the bound of [`wait_limit`] (a test of a hang sets a short one).
pub fn set_wait_limit(limit: Duration) {
    WAIT_LIMIT_MS.store(limit.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// Host code's bounded wait: polls `done` (yielding) until it is true, and
/// fails through [`hung`] with `what` after [`wait_limit`]. For tests that
/// wait for another thread to reach a point.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        if started.elapsed() >= wait_limit() {
            hung(what, started);
        }
        std::thread::yield_now();
    }
}

/// Host code's bounded wait on a condition variable: waits while
/// `blocked(&guard)`, failing through [`hung`] after [`wait_limit`].
pub fn wait_while<'a, T>(
    what: &str,
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    mut blocked: impl FnMut(&mut T) -> bool,
) -> MutexGuard<'a, T> {
    let started = Instant::now();
    while blocked(&mut guard) {
        let limit = wait_limit();
        let elapsed = started.elapsed();
        if elapsed >= limit {
            drop(guard);
            hung(what, started);
        }
        guard = cv
            .wait_timeout(guard, limit - elapsed)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    guard
}

/// Ends a wait that exceeded [`wait_limit`]: records the violation and
/// panics with a message naming what was awaited (a panic that reaches an
/// `extern "win64"` frame aborts the process, after printing it). Windows
/// would hang for ever here.
pub fn hung(what: &str, started: Instant) -> ! {
    let message = format!(
        "waited {:.1} s for {what} without an end (limit {:?}, NTSIM_WAIT_LIMIT_SECS): \
         a deadlock or a completion that never comes; Windows would hang here",
        started.elapsed().as_secs_f64(),
        wait_limit()
    );
    violation::record("hang", message.clone());
    panic!("ntsim: {message}");
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
    let mut spinner = Spinner::new();
    while w
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while w.load(Ordering::Relaxed) != 0 {
            spinner.spin(api, lock as usize);
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
    let mut spinner = Spinner::new();
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
        spinner.spin(api, lock as usize);
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
    wait_until(api, lock as usize, None, || {
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
    WAIT_LIMIT_MS.store(0, Ordering::Relaxed);
    let mut all = slots();
    for slot in all.iter() {
        let mut st = slot.lock();
        st.held.clear();
        st.critical = 0;
    }
    // Slots of threads that have ended are not needed any more; live
    // threads keep theirs (through the thread-local).
    all.retain(|s| Arc::strong_count(s) > 1);
    events().clear();
}

/// Threads still holding a lock or inside a critical region, one line each.
pub(crate) fn outstanding() -> Vec<String> {
    let all = slots();
    let mut out = Vec::new();
    for slot in all.iter() {
        let st = slot.lock();
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
