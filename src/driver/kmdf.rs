//! KMDF flavor entry points (cargo feature `wdk`; built on Windows with the
//! WDK by `cargo make`, see docs/building.md).
//!
//! A non-PnP KMDF driver, like the C ntosebpfext: the framework driver object
//! is created with `WdfDriverInitNonPnpDriver` and an `EvtDriverUnload`
//! callback (no `EvtDriverDeviceAdd`: the driver is a demand-start service,
//! not bound to hardware), and it owns one control device,
//! `\Device\NtosEbpfExt`, whose security descriptor grants access to SYSTEM
//! and the Administrators group only.
//!
//! Written against wdk-sys 0.5.2 (bindings generated for KMDF 1.15 from
//! `[package.metadata.wdk.driver-model]`), wdk-alloc 0.4.2 and wdk-panic
//! 0.5.0. The image entry point is the WDK's `FxDriverEntry` (set by
//! wdk-build), which binds to the framework and then calls `DriverEntry`
//! below. This file cannot be compiled on Linux: CI never builds it.

// The panic handler: a Rust panic bug checks (code 'RPNC').
extern crate wdk_panic;

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use wdk_alloc::WdkAllocator;
use wdk_sys::{
    call_unsafe_wdf_function_binding, _WDF_DRIVER_INIT_FLAGS, NTSTATUS, PCUNICODE_STRING,
    PDRIVER_OBJECT, PWDFDEVICE_INIT, ULONG, UNICODE_STRING, USHORT, WDFDEVICE, WDFDRIVER,
    WDF_DRIVER_CONFIG, WDF_NO_OBJECT_ATTRIBUTES,
};

use crate::nt;

/// Pool allocations through `ExAllocatePool2` (non-paged, tag `'rust'`).
#[global_allocator]
static GLOBAL_ALLOCATOR: WdkAllocator = WdkAllocator;

/// `SDDL_DEVOBJ_SYS_ALL_ADM_ALL` (wdmsec.h): protected DACL, GENERIC_ALL for
/// LocalSystem (SY) and BUILTIN\Administrators (BA), nothing for anyone else.
static SDDL: [u16; 27] = ascii_to_utf16(b"D:P(A;;GA;;;SY)(A;;GA;;;BA)");

/// The control device's name, the same as the C driver's.
static DEVICE_NAME: [u16; 19] = ascii_to_utf16(b"\\Device\\NtosEbpfExt");

/// The control device, created in `DriverEntry`, deleted in `evt_driver_unload`.
static CONTROL_DEVICE: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());

const fn ascii_to_utf16<const N: usize>(ascii: &[u8; N]) -> [u16; N] {
    let mut wide = [0u16; N];
    let mut i = 0;
    while i < N {
        wide[i] = ascii[i] as u16;
        i += 1;
    }
    wide
}

/// A counted string over a static UTF-16 buffer (no terminating NUL needed).
fn unicode_string(text: &'static [u16]) -> UNICODE_STRING {
    let bytes = (text.len() * 2) as USHORT;
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        // The callee only reads through this pointer (the parameters are
        // `PCUNICODE_STRING`); the framework copies the text.
        Buffer: text.as_ptr().cast_mut(),
    }
}

/// The driver's entry, called by the framework's `FxDriverEntry`.
///
/// # Safety
/// Called once by the I/O manager (through `FxDriverEntry`) at PASSIVE_LEVEL
/// with the driver object and registry path it owns.
#[export_name = "DriverEntry"]
pub unsafe extern "system" fn driver_entry(
    driver: PDRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: core::mem::size_of::<WDF_DRIVER_CONFIG>() as ULONG,
        EvtDriverDeviceAdd: None,
        EvtDriverUnload: Some(evt_driver_unload),
        DriverInitFlags: _WDF_DRIVER_INIT_FLAGS::WdfDriverInitNonPnpDriver as ULONG,
        ..WDF_DRIVER_CONFIG::default()
    };
    let mut wdf_driver: WDFDRIVER = ptr::null_mut();
    // SAFETY: `driver` and `registry_path` come from the I/O manager; `config`
    // is a fully initialized WDF_DRIVER_CONFIG of the size it declares, and
    // `wdf_driver` is a valid location for the handle.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &mut config,
            &mut wdf_driver,
        )
    };
    if !nt::nt_success(status) {
        // Nothing of ours exists yet; the framework undoes its own state.
        return status;
    }

    let device = match create_control_device(wdf_driver) {
        Ok(device) => device,
        Err(status) => return status,
    };

    // SAFETY: the I/O manager's driver object, at PASSIVE_LEVEL.
    let status = nt::into_status(unsafe { super::load(driver.cast()) });
    if !nt::nt_success(status) {
        // load() left nothing behind; delete the device. The framework does
        // not call EvtDriverUnload when DriverEntry fails.
        // SAFETY: `device` is the live control device created above.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device.cast()) };
        return status;
    }

    CONTROL_DEVICE.store(device.cast(), Ordering::Release);
    // The device accepts requests (clears DO_DEVICE_INITIALIZING) only once
    // the driver is fully loaded.
    // SAFETY: `device` is the live control device created above.
    unsafe { call_unsafe_wdf_function_binding!(WdfControlFinishInitializing, device) };
    status
}

/// Create the named control device with the SYSTEM/Administrators-only SDDL.
/// On failure nothing is left allocated.
fn create_control_device(wdf_driver: WDFDRIVER) -> Result<WDFDEVICE, NTSTATUS> {
    let sddl = unicode_string(&SDDL);
    // SAFETY: `wdf_driver` is the driver object just created; `sddl` is a
    // valid counted string that the framework parses and copies.
    let mut init: PWDFDEVICE_INIT = unsafe {
        call_unsafe_wdf_function_binding!(WdfControlDeviceInitAllocate, wdf_driver, &sddl)
    };
    if init.is_null() {
        return Err(nt::Error::INSUFFICIENT_RESOURCES.status());
    }

    let name = unicode_string(&DEVICE_NAME);
    // SAFETY: `init` is the live WDFDEVICE_INIT allocated above; the
    // framework copies the name.
    let status = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitAssignName, init, &name) };
    if !nt::nt_success(status) {
        // SAFETY: `init` was not consumed by WdfDeviceCreate; freed once.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }

    let mut device: WDFDEVICE = ptr::null_mut();
    // SAFETY: `init` is live; WdfDeviceCreate takes it on success (and sets
    // it to NULL) and leaves it to the caller on failure.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &mut init,
            WDF_NO_OBJECT_ATTRIBUTES,
            &mut device,
        )
    };
    if !nt::nt_success(status) {
        // SAFETY: on failure the WDFDEVICE_INIT is still the driver's to free.
        unsafe { call_unsafe_wdf_function_binding!(WdfDeviceInitFree, init) };
        return Err(status);
    }
    Ok(device)
}

/// `EvtDriverUnload`: called at PASSIVE_LEVEL when the service stops, only if
/// `DriverEntry` succeeded.
extern "C" fn evt_driver_unload(_driver: WDFDRIVER) {
    super::unload();
    let device = CONTROL_DEVICE.swap(ptr::null_mut(), Ordering::AcqRel);
    if !device.is_null() {
        // SAFETY: the handle is the control device DriverEntry created and
        // nothing else deletes it.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, device) };
    }
}
