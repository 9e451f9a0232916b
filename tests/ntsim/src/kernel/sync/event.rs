//! Events (`KEVENT`): initialization, set, reset, read, and
//! `KeWaitForSingleObject` on an event, with the state in the event's
//! `SignalState` in driver memory.

use super::*;

pub(super) static EVENTS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

pub(super) fn events() -> MutexGuard<'static, BTreeSet<usize>> {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The event's SignalState, if `ev` is an event KeInitializeEvent set up.
///
/// # Safety
/// `ev` points to a KEVENT.
pub(super) unsafe fn event_state<'a>(api: &str, ev: *mut KEVENT) -> Option<&'a AtomicI32> {
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
pub(super) fn deadline(timeout: i64) -> Instant {
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
/// wait never returns STATUS_ALERTED or STATUS_USER_APC. Inside a critical
/// region (normal kernel APCs disabled, as in a process notify routine) a
/// UserMode or alertable wait is a violation: Windows then delivers neither
/// user APCs nor thread termination, so the wait the caller asked to be
/// interruptible cannot be interrupted.
///
/// # Safety
/// `object` points to a KEVENT; `timeout` is null or points to an i64.
pub unsafe extern "win64" fn KeWaitForSingleObject(
    object: *mut c_void,
    _wait_reason: i32,
    wait_mode: i8,
    alertable: BOOLEAN,
    timeout: *const i64,
) -> NTSTATUS {
    const API: &str = "KeWaitForSingleObject";
    if (wait_mode != 0 || alertable != 0) && in_critical_region() {
        violation::record(
            "sync",
            format!(
                "{API}: {} wait inside a critical region (normal kernel APCs disabled, as in a \
                 process notify routine): neither user APCs nor thread termination can interrupt it",
                if alertable != 0 { "an alertable" } else { "a UserMode" }
            ),
        );
    }
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
        wait_until(
            "KeWaitForSingleObject",
            ev as usize,
            timeout.map(deadline),
            try_satisfy,
        )
    } else {
        try_satisfy()
    };
    if satisfied {
        STATUS_SUCCESS
    } else {
        STATUS_TIMEOUT
    }
}
