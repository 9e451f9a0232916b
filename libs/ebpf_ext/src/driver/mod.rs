//! Driver load and unload. The flavor-specific entry points (WDM `DriverEntry`
//! in the portable flavor, KMDF in the `wdk` flavor) call [`load`] and
//! [`unload`], which hold everything the two flavors share.

#[cfg(feature = "wdk")]
mod kmdf;
#[cfg(not(feature = "wdk"))]
mod wdm;

use crate::nt;

/// Log through `DbgPrintEx` (component `DPFLTR_IHVDRIVER_ID`), formatted with
/// `core::fmt` into a stack buffer (no allocation; safe at any IRQL the
/// caller may be at, since only `%s` is passed to the kernel).
#[macro_export]
macro_rules! dbg_log {
    ($level:expr, $($arg:tt)*) => {
        $crate::driver::log($level, format_args!($($arg)*))
    };
}

/// The function behind [`dbg_log!`].
#[doc(hidden)]
pub fn log(level: u32, args: core::fmt::Arguments<'_>) {
    use core::fmt::Write;
    let mut buf = crate::fmt::FixedBuf::<256>::new();
    let _ = buf.write_str("ntosebpfext: ");
    let _ = buf.write_fmt(args);
    let text = buf.as_cstr_ptr();
    // SAFETY: the format and its one argument are NUL-terminated strings that
    // live across the call.
    unsafe {
        nt::DbgPrintEx(
            nt::DPFLTR_IHVDRIVER_ID,
            level,
            c"%s\n".as_ptr().cast(),
            text,
        );
    }
}

/// Everything DriverEntry does after the flavor-specific setup. `driver` is
/// the DRIVER_OBJECT (it owns the driver's I/O work items). On failure
/// everything is undone (by [`unload`], which tolerates partial setup).
///
/// # Errors
/// The status of the first step that failed.
///
/// # Safety
/// `driver` must be this driver's DRIVER_OBJECT; PASSIVE_LEVEL; once.
pub unsafe fn load(driver: *mut core::ffi::c_void) -> nt::NtResult {
    // The provider first, so every later step can trace; without it the
    // driver does not load (as the C driver).
    crate::trace::register()?;
    // Never fails the load (logged): see crate::store.
    crate::store::update(&crate::hooks::store());
    // SAFETY: forwarded contract.
    let loaded = unsafe { crate::hooks::load(driver) };
    crate::trace::driver_load(loaded);
    if loaded.is_err() {
        crate::hooks::unload();
        crate::trace::unregister();
    }
    loaded
}

/// Everything the unload routine does before the flavor-specific teardown.
/// The ETW provider goes last, once nothing that logs can run.
pub fn unload() {
    crate::hooks::unload();
    crate::trace::driver_unload();
    crate::trace::unregister();
}
