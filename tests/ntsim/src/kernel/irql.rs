//! Per-thread IRQL. Spin locks raise it, APIs check it: calling an API above
//! the IRQL Windows documents for it, or waiting at DISPATCH_LEVEL or above,
//! is recorded as a [`crate::kernel::violation`].

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::types::{DISPATCH_LEVEL, HIGH_LEVEL, KIRQL, PASSIVE_LEVEL};
use crate::kernel::violation;
use std::cell::Cell;

thread_local! {
    static CURRENT: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
}

/// The calling thread's IRQL.
pub fn current() -> KIRQL {
    CURRENT.with(|c| c.get())
}

/// Sets the calling thread's IRQL (no checks: for the kernel's own use).
pub fn set(level: KIRQL) {
    CURRENT.with(|c| c.set(level));
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
pub fn at<R>(level: KIRQL, f: impl FnOnce() -> R) -> R {
    let old = current();
    set(level);
    let r = f();
    set(old);
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
