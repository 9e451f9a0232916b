//! Kernel structures the driver reads or fills, with their x64 layouts.

use core::ffi::c_void;

pub type HANDLE = usize;
pub type KIRQL = u8;

pub const PASSIVE_LEVEL: KIRQL = 0;
pub const APC_LEVEL: KIRQL = 1;
pub const DISPATCH_LEVEL: KIRQL = 2;

pub const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
pub const POOL_FLAG_NON_PAGED: u64 = 0x40;

/// `DPFLTR_IHVDRIVER_ID`: the DbgPrintEx component for third-party drivers.
pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
pub const DPFLTR_TRACE_LEVEL: u32 = 2;
pub const DPFLTR_INFO_LEVEL: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UNICODE_STRING {
    /// Length in bytes, without a terminating NUL.
    pub Length: u16,
    pub MaximumLength: u16,
    pub Buffer: *mut u16,
}

/// Type of `DRIVER_OBJECT::DriverUnload`.
pub type PDRIVER_UNLOAD = Option<unsafe extern "system" fn(driver: *mut DRIVER_OBJECT)>;

/// `DRIVER_OBJECT` (x64, 0x150 bytes). Only `DriverUnload` is written by a
/// driver with no devices; the rest is declared for the layout.
#[repr(C)]
pub struct DRIVER_OBJECT {
    pub Type: i16,
    pub Size: i16,
    pub DeviceObject: *mut c_void,
    pub Flags: u32,
    pub DriverStart: *mut c_void,
    pub DriverSize: u32,
    pub DriverSection: *mut c_void,
    pub DriverExtension: *mut c_void,
    pub DriverName: UNICODE_STRING,
    pub HardwareDatabase: *mut UNICODE_STRING,
    pub FastIoDispatch: *mut c_void,
    pub DriverInit: *mut c_void,
    pub DriverStartIo: *mut c_void,
    pub DriverUnload: PDRIVER_UNLOAD,
    pub MajorFunction: [*mut c_void; 28],
}

const _: () = {
    assert!(core::mem::size_of::<UNICODE_STRING>() == 16);
    assert!(core::mem::size_of::<DRIVER_OBJECT>() == 0x150);
    assert!(core::mem::offset_of!(DRIVER_OBJECT, DriverUnload) == 104);
};
