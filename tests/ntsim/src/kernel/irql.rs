//! Per-thread IRQL. Spin locks raise it, APIs check it: calling an API above
//! the IRQL Windows documents for it, or waiting at DISPATCH_LEVEL or above,
//! is recorded as a [`crate::kernel::violation`]. A [`pin`] marks a span in
//! which the thread's IRQL must not change at all (an eBPF batch).

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::types::{DISPATCH_LEVEL, HIGH_LEVEL, KIRQL, PASSIVE_LEVEL};
use crate::kernel::violation;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

thread_local! {
    static CURRENT: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
}

/// The calling thread's IRQL.
pub fn current() -> KIRQL {
    CURRENT.with(|c| c.get())
}

/// Sets the calling thread's IRQL (for the kernel's own use). A change
/// while the thread has an IRQL [`pin`] is a violation (reported once per
/// pin).
pub fn set(level: KIRQL) {
    let old = CURRENT.with(|c| c.replace(level));
    if old != level && MY_PINS.try_with(|n| n.load(Ordering::Relaxed)).unwrap_or(0) != 0 {
        check_pins(old, level);
    }
}

// ---------------------------------------------------------------------------
// Pins: spans during which a thread's IRQL must not change (an eBPF batch).

/// Threads with at least one pin (a fast path for `set`).
static PINS: Mutex<BTreeMap<u64, Pin>> = Mutex::new(BTreeMap::new());
static NEXT_PIN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Pins open on this thread. Only this thread opens them (so it reads
    /// its own count exactly); any thread may close one. Per thread, so an
    /// eBPF batch open on one host thread does not send every IRQL change
    /// of another through the pins' lock.
    static MY_PINS: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
}

struct Pin {
    /// The opening thread's [`MY_PINS`].
    count: Arc<AtomicUsize>,
    thread: ThreadId,
    name: String,
    level: KIRQL,
    what: String,
    reported: bool,
}

fn pins() -> MutexGuard<'static, BTreeMap<u64, Pin>> {
    PINS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A span opened by [`pin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PinId(u64);

/// From now until [`unpin`], the calling thread's IRQL must stay what it is:
/// any change (a spin lock, `KfRaiseIrql`, ...) records a violation naming
/// `what`, once. Used for eBPF batches, between whose begin and end eBPF
/// for Windows forbids changing IRQL.
pub fn pin(what: impl Into<String>) -> PinId {
    let id = NEXT_PIN.fetch_add(1, Ordering::Relaxed);
    let count = MY_PINS
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::new(AtomicUsize::new(0)));
    count.fetch_add(1, Ordering::Relaxed);
    pins().insert(
        id,
        Pin {
            count,
            thread: std::thread::current().id(),
            name: {
                let t = std::thread::current();
                t.name()
                    .map_or_else(|| format!("{:?}", t.id()), str::to_string)
            },
            level: current(),
            what: what.into(),
            reported: false,
        },
    );
    PinId(id)
}

/// Ends a span opened by [`pin`] (from any thread); true if it was open.
pub fn unpin(id: PinId) -> bool {
    match pins().remove(&id.0) {
        Some(p) => {
            p.count.fetch_sub(1, Ordering::Relaxed);
            true
        }
        None => false,
    }
}

fn check_pins(old: KIRQL, new: KIRQL) {
    let me = std::thread::current().id();
    let mut found = Vec::new();
    for p in pins().values_mut() {
        if p.thread == me && !p.reported {
            p.reported = true;
            found.push(format!(
                "IRQL changed from {old} to {new} while {} was open (it began at IRQL {}): \
                 the IRQL must not change until it ends",
                p.what, p.level
            ));
        }
    }
    for f in found {
        violation::record("irql", f);
    }
}

/// Whether a pin is still open (a reset closes every pin).
pub fn pin_open(id: PinId) -> bool {
    pins().contains_key(&id.0)
}

/// Pins never closed, one line each (an eBPF batch never ended).
pub(crate) fn outstanding() -> Vec<String> {
    pins()
        .values()
        .map(|p| {
            format!(
                "{} begun on thread '{}' at IRQL {} was never ended",
                p.what, p.name, p.level
            )
        })
        .collect()
}

/// Forgets every pin (a new [`crate::Sim`]).
pub(crate) fn reset() {
    let mut p = pins();
    for pin in p.values() {
        pin.count.fetch_sub(1, Ordering::Relaxed);
    }
    p.clear();
}

/// Records a violation if the calling thread's IRQL is above `max`.
/// Returns whether the call was legal.
pub fn require_at_most(api: &str, max: KIRQL) -> bool {
    let cur = current();
    if cur > max {
        violation::record(
            "irql",
            format!("{api} called at IRQL {cur}; it requires IRQL <= {max}"),
        );
        false
    } else {
        true
    }
}

/// Records a violation unless the calling thread's IRQL is exactly `level`.
pub fn require_exactly(api: &str, level: KIRQL) -> bool {
    let cur = current();
    if cur != level {
        violation::record(
            "irql",
            format!("{api} called at IRQL {cur}; it requires IRQL == {level}"),
        );
        false
    } else {
        true
    }
}

/// A wait (blocking call): legal only below DISPATCH_LEVEL.
pub fn require_can_wait(api: &str) -> bool {
    let cur = current();
    if cur >= DISPATCH_LEVEL {
        violation::record(
            "irql",
            format!("{api} waits, but was called at IRQL {cur} (waiting requires IRQL < 2)"),
        );
        false
    } else {
        true
    }
}

/// Runs `f` with the calling thread raised to `level`, then restores the
/// previous IRQL. For host code that must act as if at DISPATCH_LEVEL (the
/// NMR detach path, a DPC...).
///
/// This is the simulation's own doing, not the driver's, so it does not
/// count as a change against a [`pin`].
pub fn at<R>(level: KIRQL, f: impl FnOnce() -> R) -> R {
    let old = CURRENT.with(|c| c.replace(level));
    let r = f();
    CURRENT.with(|c| c.set(old));
    r
}

/// `KeGetCurrentIrql` (exported; the WDK's inline reads CR8, which a driver
/// meant to run here must not do).
extern "win64" fn KeGetCurrentIrql() -> KIRQL {
    current()
}

/// `KfRaiseIrql`: the new level must not be below the current one.
extern "win64" fn KfRaiseIrql(new: KIRQL) -> KIRQL {
    let old = current();
    if new < old || new > HIGH_LEVEL {
        violation::record(
            "irql",
            format!("KfRaiseIrql({new}) at IRQL {old}: cannot raise to a lower level"),
        );
    }
    set(new);
    old
}

/// `KeLowerIrql`: the new level must not be above the current one.
extern "win64" fn KeLowerIrql(new: KIRQL) {
    let cur = current();
    if new > cur {
        violation::record(
            "irql",
            format!("KeLowerIrql({new}) at IRQL {cur}: cannot lower to a higher level"),
        );
    }
    set(new);
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", KeGetCurrentIrql),
        export!("ntoskrnl.exe", KfRaiseIrql),
        export!("ntoskrnl.exe", KeLowerIrql),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_lower_and_checks() {
        let _sim = crate::Sim::new();
        assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
        let old = KfRaiseIrql(DISPATCH_LEVEL);
        assert_eq!(old, PASSIVE_LEVEL);
        assert!(!require_can_wait("KeWaitForSingleObject"));
        assert!(!require_at_most("ZwOpenKey", PASSIVE_LEVEL));
        KeLowerIrql(old);
        assert!(require_can_wait("KeWaitForSingleObject"));
        let v = violation::take();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].message.contains("KeWaitForSingleObject waits"));
        // Raising below the current level is itself a violation.
        at(DISPATCH_LEVEL, || KfRaiseIrql(PASSIVE_LEVEL));
        assert_eq!(violation::take().len(), 1);
        assert_eq!(current(), PASSIVE_LEVEL);
    }
}
