//! Portable flavor entry points: a WDM-style driver with no device objects.

use crate::nt;

/// The image entry point (`/ENTRY:DriverEntry`).
///
/// # Safety
/// Called once by the I/O manager at PASSIVE_LEVEL with a valid driver object.
#[no_mangle]
pub unsafe extern "system" fn DriverEntry(
    driver: *mut nt::DRIVER_OBJECT,
    _registry_path: *const nt::UNICODE_STRING,
) -> nt::NTSTATUS {
    // SAFETY: the I/O manager's driver object, at PASSIVE_LEVEL.
    let loaded = unsafe { super::load(driver.cast()) };
    if loaded.is_ok() {
        // SAFETY: the I/O manager passes a valid, writable driver object that
        // it owns for the driver's lifetime.
        unsafe { (*driver).DriverUnload = Some(driver_unload) };
    }
    nt::into_status(loaded)
}

unsafe extern "system" fn driver_unload(_driver: *mut nt::DRIVER_OBJECT) {
    super::unload();
}
