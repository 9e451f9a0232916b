//! Rundown protection (`EX_RUNDOWN_REF`): acquire, release, wait for
//! release, re-initialize, with the state in the driver's word.

use super::*;

pub(super) const RUNDOWN_ACTIVE: usize = 0x1;
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
        wait_until(API, r as usize, None, || {
            w.load(Ordering::Acquire) == RUNDOWN_ACTIVE
        });
    }
}
