//! Kernel structures shared by several services, with their x64 layouts.
#![allow(non_snake_case, non_camel_case_types, clippy::upper_case_acronyms)]

use std::ffi::c_void;

pub type HANDLE = usize;
pub type KIRQL = u8;

pub const PASSIVE_LEVEL: KIRQL = 0;
pub const APC_LEVEL: KIRQL = 1;
pub const DISPATCH_LEVEL: KIRQL = 2;
pub const HIGH_LEVEL: KIRQL = 15;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GUID {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl GUID {
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (braces optional).
    pub fn parse(s: &str) -> Option<GUID> {
        let s = s.trim_start_matches('{').trim_end_matches('}');
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return None;
        }
        let b = |i: usize| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok();
        let mut data4 = [0u8; 8];
        for (i, d) in data4.iter_mut().enumerate() {
            *d = b(8 + i)?;
        }
        Some(GUID {
            data1: u32::from_str_radix(&hex[0..8], 16).ok()?,
            data2: u16::from_str_radix(&hex[8..12], 16).ok()?,
            data3: u16::from_str_radix(&hex[12..16], 16).ok()?,
            data4,
        })
    }
}

impl std::fmt::Display for GUID {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UNICODE_STRING {
    pub Length: u16,
    pub MaximumLength: u16,
    pub Buffer: *mut u16,
}

impl UNICODE_STRING {
    /// Reads the string.
    ///
    /// # Safety
    /// `Buffer` must be valid for `Length` bytes (or null with Length 0).
    pub unsafe fn to_string_lossy(&self) -> String {
        if self.Buffer.is_null() || self.Length == 0 {
            return String::new();
        }
        // SAFETY: the caller guarantees Buffer is valid for Length bytes.
        let s = unsafe { std::slice::from_raw_parts(self.Buffer, self.Length as usize / 2) };
        String::from_utf16_lossy(s)
    }
}

/// An owned UTF-16 buffer with a `UNICODE_STRING` pointing into it, for
/// strings the simulated kernel hands to the driver.
pub struct OwnedUnicodeString {
    buf: Box<[u16]>,
    us: Box<UNICODE_STRING>,
}

// SAFETY: the UNICODE_STRING points into `buf`, which is owned and never
// mutated after construction; both move together.
unsafe impl Send for OwnedUnicodeString {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for OwnedUnicodeString {}

impl OwnedUnicodeString {
    pub fn new(s: &str) -> Self {
        let mut v: Vec<u16> = s.encode_utf16().collect();
        let len_bytes = (v.len() * 2).min(u16::MAX as usize - 2);
        v.push(0);
        let mut buf = v.into_boxed_slice();
        let us = Box::new(UNICODE_STRING {
            Length: len_bytes as u16,
            MaximumLength: (len_bytes + 2) as u16,
            Buffer: buf.as_mut_ptr(),
        });
        OwnedUnicodeString { buf, us }
    }

    pub fn as_ptr(&self) -> *const UNICODE_STRING {
        &*self.us
    }

    pub fn units(&self) -> &[u16] {
        &self.buf[..self.us.Length as usize / 2]
    }
}

/// `DRIVER_OBJECT` (x64, 0x150 bytes).
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
    pub DriverUnload: Option<unsafe extern "win64" fn(*mut DRIVER_OBJECT)>,
    pub MajorFunction: [*mut c_void; 28],
}

const _: () = {
    assert!(std::mem::size_of::<GUID>() == 16);
    assert!(std::mem::size_of::<UNICODE_STRING>() == 16);
    assert!(std::mem::size_of::<DRIVER_OBJECT>() == 0x150);
    assert!(std::mem::offset_of!(DRIVER_OBJECT, DriverUnload) == 104);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip() {
        let g = GUID::parse("{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}").unwrap();
        assert_eq!(g.data1, 0x22ea7b37);
        assert_eq!(g.data4, [0xb6, 0x0d, 0xca, 0xfa, 0x1c, 0x7b, 0x63, 0x8e]);
        assert_eq!(g.to_string(), "22ea7b37-1043-4d0d-b60d-cafa1c7b638e");
        assert!(GUID::parse("22ea7b37-1043-4d0d-b60d-cafa1c7b638").is_none());
    }
}
