//! System time and the performance counter (ntoskrnl.exe):
//! `KeQuerySystemTimePrecise` and `KeQueryPerformanceCounter`.
//!
//! By default the clock is the host's: system time is the host's UTC time
//! as a FILETIME (100 ns units since 1601-01-01), and the performance
//! counter ticks at [`PERFORMANCE_FREQUENCY`] from the host's monotonic
//! clock. [`set_deterministic`] replaces both with one synthetic clock that
//! advances by a fixed step on every read, so that a test (or the `ntsim`
//! tool) sees the same times on every run.
//!
//! `KeQuerySystemTime`, `KeQueryInterruptTime` and `KeQueryTickCount` are
//! not exported: in the x64 WDK they are macros or inlines that read
//! KUSER_SHARED_DATA, so a driver built against it never imports them.

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::violation;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Ticks per second of `KeQueryPerformanceCounter` (what current Windows
/// versions report on x64: 10 MHz, the same unit as FILETIME).
pub const PERFORMANCE_FREQUENCY: i64 = 10_000_000;

/// 100 ns intervals between 1601-01-01 and 1970-01-01.
pub const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;

#[derive(Clone, Copy, Debug)]
enum Clock {
    Real,
    /// The next read returns `now`, then the clock advances by `step`.
    Deterministic {
        start: i64,
        now: i64,
        step: i64,
    },
}

static CLOCK: Mutex<Clock> = Mutex::new(Clock::Real);

fn clock() -> std::sync::MutexGuard<'static, Clock> {
    CLOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host's time as a FILETIME.
fn host_filetime() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH_AS_FILETIME + (since_epoch.as_nanos() / 100) as i64
}

/// The host's monotonic clock in performance-counter ticks, counted from
/// the first use (so values start small, as after a boot).
fn host_counter() -> i64 {
    static BOOT: Mutex<Option<Instant>> = Mutex::new(None);
    let boot = *BOOT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Instant::now);
    (boot.elapsed().as_nanos() / 100) as i64
}

/// Makes the clock deterministic: the first read of the system time
/// returns `start_filetime`, and every read (of the system time or the
/// performance counter) advances the clock by `step` (100 ns units). The
/// performance counter then reads the ticks elapsed since `start_filetime`.
/// Lasts until [`set_real`] or the next [`crate::Sim`].
pub fn set_deterministic(start_filetime: i64, step: i64) {
    assert!(step >= 0, "time cannot run backwards");
    *clock() = Clock::Deterministic {
        start: start_filetime,
        now: start_filetime,
        step,
    };
}

/// Goes back to the host's clock (the default).
pub fn set_real() {
    *clock() = Clock::Real;
}

/// Whether the clock is deterministic.
pub fn is_deterministic() -> bool {
    matches!(*clock(), Clock::Deterministic { .. })
}

/// Reads the system time as the driver would (advances a deterministic
/// clock).
pub fn system_time() -> i64 {
    let mut c = clock();
    match &mut *c {
        Clock::Real => host_filetime(),
        Clock::Deterministic { now, step, .. } => {
            let t = *now;
            *now += *step;
            t
        }
    }
}

/// Reads the performance counter as the driver would (advances a
/// deterministic clock).
pub fn performance_counter() -> i64 {
    let mut c = clock();
    match &mut *c {
        Clock::Real => host_counter(),
        Clock::Deterministic { start, now, step } => {
            let t = *now - *start;
            *now += *step;
            t
        }
    }
}

/// The current system time without advancing a deterministic clock: for
/// the kernel's own time stamps (registry write times, event times), which
/// must not disturb what the driver reads.
pub fn peek_system_time() -> i64 {
    match *clock() {
        Clock::Real => host_filetime(),
        Clock::Deterministic { now, .. } => now,
    }
}

/// `KeQuerySystemTimePrecise` (any IRQL).
///
/// # Safety
/// `CurrentTime` must be valid for writing an `i64` (a null pointer is
/// recorded as a violation: Windows would fault).
pub unsafe extern "win64" fn KeQuerySystemTimePrecise(CurrentTime: *mut i64) {
    if CurrentTime.is_null() {
        violation::record("time", "KeQuerySystemTimePrecise(NULL)");
        return;
    }
    let t = system_time();
    // SAFETY: non-null, and the caller passes a writable LARGE_INTEGER;
    // unaligned writes are accepted as x64 accepts them.
    unsafe { CurrentTime.write_unaligned(t) };
}

/// `KeQueryPerformanceCounter` (any IRQL): returns the counter, and the
/// frequency through the optional `PerformanceFrequency`.
///
/// # Safety
/// `PerformanceFrequency` must be null or valid for writing an `i64`.
pub unsafe extern "win64" fn KeQueryPerformanceCounter(PerformanceFrequency: *mut i64) -> i64 {
    if !PerformanceFrequency.is_null() {
        // SAFETY: non-null optional out parameter the caller owns.
        unsafe { PerformanceFrequency.write_unaligned(PERFORMANCE_FREQUENCY) };
    }
    performance_counter()
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", KeQuerySystemTimePrecise),
        export!("ntoskrnl.exe", KeQueryPerformanceCounter),
    ]
}

/// Forgets all state (a new [`crate::Sim`]): back to the host's clock.
pub(crate) fn reset() {
    set_real();
}

/// What a driver left behind, one line each (time holds no resources).
pub(crate) fn outstanding() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        let mut t = 0i64;
        // SAFETY: `t` is a live local.
        unsafe { KeQuerySystemTimePrecise(&mut t) };
        t
    }

    #[test]
    fn real_clock_is_host_utc_as_filetime() {
        let _sim = crate::Sim::new();
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let t = now();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let lo = UNIX_EPOCH_AS_FILETIME + (before.as_nanos() / 100) as i64;
        let hi = UNIX_EPOCH_AS_FILETIME + (after.as_nanos() / 100) as i64;
        assert!(lo <= t && t <= hi, "{lo} <= {t} <= {hi}");
        let mut freq = 0i64;
        // SAFETY: `freq` is a live local.
        let c1 = unsafe { KeQueryPerformanceCounter(&mut freq) };
        // SAFETY: null is allowed for the frequency.
        let c2 = unsafe { KeQueryPerformanceCounter(std::ptr::null_mut()) };
        assert_eq!(freq, PERFORMANCE_FREQUENCY);
        assert!(c1 >= 0 && c2 >= c1);
    }

    #[test]
    fn deterministic_clock_steps_on_every_read() {
        let _sim = crate::Sim::new();
        // 2024-01-01T00:00:00Z
        let start = 133_485_408_000_000_000;
        set_deterministic(start, 10);
        assert!(is_deterministic());
        assert_eq!(now(), start);
        assert_eq!(now(), start + 10);
        // SAFETY: null frequency is allowed.
        let c = unsafe { KeQueryPerformanceCounter(std::ptr::null_mut()) };
        assert_eq!(c, 20, "the counter reads ticks since the start");
        assert_eq!(peek_system_time(), start + 30, "peeking does not advance");
        assert_eq!(now(), start + 30);
        // A new machine is back on the real clock.
        drop(_sim);
        let _sim = crate::Sim::new();
        assert!(!is_deterministic());
        assert!(now() > start);
    }

    #[test]
    fn null_time_pointer_is_a_violation() {
        let _sim = crate::Sim::new();
        // SAFETY: null is rejected before any write.
        unsafe { KeQuerySystemTimePrecise(std::ptr::null_mut()) };
        let v = violation::take();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "time");
    }
}
