//! Portable flavor entry points: a WDM-style driver with no device objects.

use super::Extension;
use crate::nt;

/// What the driver crate's `DriverEntry` (the image entry point,
/// `/ENTRY:DriverEntry`) does in the portable flavor.
///
/// # Safety
/// Called once by the I/O manager at PASSIVE_LEVEL with a valid driver object.
pub(super) unsafe fn driver_entry(
    extension: &'static Extension,
    driver: *mut nt::DRIVER_OBJECT,
    _registry_path: *const nt::UNICODE_STRING,
) -> nt::NTSTATUS {
    // SAFETY: the I/O manager's driver object, at PASSIVE_LEVEL.
    let loaded = unsafe { super::load(extension, driver.cast()) };
    if loaded.is_ok() {
        // SAFETY: the I/O manager passes a valid, writable driver object that
        // it owns for the driver's lifetime.
        unsafe { (*driver).DriverUnload = Some(driver_unload) };
    }
    nt::into_status(loaded)
}

unsafe extern "system" fn driver_unload(_driver: *mut nt::DRIVER_OBJECT) {
    // The unload routine is set only after `entry` stored the extension.
    if let Some(extension) = super::active() {
        super::unload(extension);
    }
}
