//! The driver: what one extension driver is ([`Extension`], declared by its
//! crate as one `static`), its entry ([`entry`], called by the crate's
//! `DriverEntry`), load and unload. The flavor-specific entry points (WDM in
//! the portable flavor, KMDF in the `wdk` flavor) call [`load`] and
//! [`unload`], which hold everything the two flavors share.

#[cfg(feature = "wdk")]
mod kmdf;
#[cfg(not(feature = "wdk"))]
mod wdm;

use core::ffi::CStr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::ebpf::hook::Hook;
use crate::nt;
use crate::trace::TraceProvider;

/// One extension driver: everything in which two drivers built on this
/// library differ. Each driver crate declares one as a `static` and passes
/// it to [`entry`].
pub struct Extension {
    /// The driver's name: the prefix of its `DbgPrintEx` lines
    /// (`"<name>: ..."`) and of its panic message.
    pub name: &'static str,
    /// The driver's version, reported by the `DriverLoad` and
    /// `DriverUnload` events and the `loaded` line.
    pub version: &'static CStr,
    /// Every hook, in load order (unloaded in reverse). Their NMR providers
    /// and their eBPF store entries (each hook's program type with its
    /// sections, in this order) follow from the list.
    pub hooks: &'static [&'static Hook],
    /// The driver's ETW provider.
    pub trace: &'static TraceProvider,
    /// The tag of every pool block the driver allocates (four ASCII
    /// characters, little-endian: `u32::from_le_bytes(*b"Ntos")`).
    pub pool_tag: u32,
    /// The KMDF flavor's control device name (`\Device\...`), UTF-16
    /// without a terminating NUL (see [`ascii_to_utf16`]); unused by the
    /// portable flavor, which creates no device.
    pub device_name: &'static [u16],
}

/// The driver's [`Extension`], set once by [`entry`] before anything else
/// runs (the log prefix and the panic handler read it).
static ACTIVE: AtomicPtr<Extension> = AtomicPtr::new(core::ptr::null_mut());

/// The extension [`entry`] was given; `None` before `DriverEntry`.
pub fn active() -> Option<&'static Extension> {
    // SAFETY: ACTIVE is null or a `&'static Extension` (stored by `entry`).
    unsafe { ACTIVE.load(Ordering::Acquire).as_ref() }
}

/// A string of ASCII `bytes` as UTF-16, at compile time (for
/// [`Extension::device_name`]).
pub const fn ascii_to_utf16<const N: usize>(ascii: &[u8; N]) -> [u16; N] {
    let mut wide = [0u16; N];
    let mut i = 0;
    while i < N {
        wide[i] = ascii[i] as u16;
        i += 1;
    }
    wide
}

/// The driver's entry: the driver crate's `DriverEntry` (exported under that
/// name; the image entry point in the portable flavor, called by the WDK's
/// `FxDriverEntry` in the KMDF flavor) forwards its arguments here.
///
/// # Safety
/// Called once by the I/O manager (directly or through `FxDriverEntry`) at
/// PASSIVE_LEVEL with the driver object and registry path it owns.
pub unsafe fn entry(
    extension: &'static Extension,
    driver: *mut nt::DRIVER_OBJECT,
    registry_path: *const nt::UNICODE_STRING,
) -> nt::NTSTATUS {
    ACTIVE.store(core::ptr::from_ref(extension).cast_mut(), Ordering::Release);
    #[cfg(not(feature = "wdk"))]
    // SAFETY: forwarded contract.
    let status = unsafe { wdm::driver_entry(extension, driver, registry_path) };
    #[cfg(feature = "wdk")]
    // SAFETY: forwarded contract.
    let status = unsafe { kmdf::driver_entry(extension, driver.cast(), registry_path.cast()) };
    status
}

/// The `DriverEntry` of a driver crate: the image entry point
/// (`/ENTRY:DriverEntry`) in the portable flavor, called by the WDK's
/// `FxDriverEntry` in the KMDF flavor. It hands the driver's
/// [`Extension`] (a `static`) to [`entry`]:
///
/// ```text
/// static EXTENSION: Extension = Extension { .. };
/// ebpf_ext::driver_entry!(EXTENSION);
/// ```
#[macro_export]
macro_rules! driver_entry {
    ($extension:path) => {
        /// The driver's entry point: see [`ebpf_ext::driver::entry`].
        ///
        /// # Safety
        /// Called once by the I/O manager at PASSIVE_LEVEL with a valid
        /// driver object and registry path.
        #[no_mangle]
        pub unsafe extern "system" fn DriverEntry(
            driver: *mut $crate::nt::DRIVER_OBJECT,
            registry_path: *const $crate::nt::UNICODE_STRING,
        ) -> $crate::nt::NTSTATUS {
            // SAFETY: forwarded contract.
            unsafe { $crate::driver::entry(&$extension, driver, registry_path) }
        }
    };
}

/// The calling crate's version (`CARGO_PKG_VERSION`) as a `&'static CStr`,
/// for [`Extension::version`].
#[macro_export]
macro_rules! package_version {
    () => {{
        const VERSION: &::core::ffi::CStr = {
            let v = concat!(env!("CARGO_PKG_VERSION"), "\0");
            match ::core::ffi::CStr::from_bytes_with_nul(v.as_bytes()) {
                Ok(c) => c,
                Err(_) => panic!("the version holds no NUL"),
            }
        };
        VERSION
    }};
}

/// Log through `DbgPrintEx` (component `DPFLTR_IHVDRIVER_ID`), formatted with
/// `core::fmt` into a stack buffer (no allocation; safe at any IRQL the
/// caller may be at, since only `%s` is passed to the kernel). Each line
/// starts with the driver's name ([`Extension::name`]).
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
    if let Some(extension) = active() {
        let _ = buf.write_str(extension.name);
        let _ = buf.write_str(": ");
    }
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
pub unsafe fn load(extension: &'static Extension, driver: *mut core::ffi::c_void) -> nt::NtResult {
    // The provider first, so every later step can trace; without it the
    // driver does not load (as the C driver).
    crate::trace::register(extension.trace)?;
    // Never fails the load (logged): see crate::store.
    crate::store::update(extension.hooks);
    // SAFETY: forwarded contract.
    let loaded = unsafe { load_hooks(extension.hooks, driver) };
    crate::trace::driver_load(extension.version, loaded);
    if loaded.is_err() {
        unload_hooks(extension.hooks);
        crate::trace::unregister();
    }
    loaded
}

/// Everything the unload routine does before the flavor-specific teardown.
/// The ETW provider goes last, once nothing that logs can run.
pub fn unload(extension: &'static Extension) {
    unload_hooks(extension.hooks);
    crate::trace::driver_unload(extension.version);
    crate::trace::unregister();
}

/// Loads every hook, in order. On failure the caller runs [`unload_hooks`].
///
/// # Safety
/// As for [`load`].
unsafe fn load_hooks(
    hooks: &'static [&'static Hook],
    driver: *mut core::ffi::c_void,
) -> nt::NtResult {
    for hook in hooks {
        // SAFETY: forwarded contract.
        unsafe { hook.load(driver) }?;
    }
    Ok(())
}

/// Unloads every hook in reverse order: undoes whatever [`load_hooks`] did,
/// even partly; idempotent.
fn unload_hooks(hooks: &'static [&'static Hook]) {
    for hook in hooks.iter().rev() {
        hook.unload();
    }
}
