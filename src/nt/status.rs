//! NTSTATUS values used by the driver.

/// An NT status code; success is `>= 0`.
pub type NTSTATUS = i32;

macro_rules! statuses {
    ($($name:ident = $value:expr;)*) => {
        $(pub const $name: NTSTATUS = $value as u32 as i32;)*
    };
}

statuses! {
    STATUS_SUCCESS = 0x0000_0000u32;
    STATUS_PENDING = 0x0000_0103u32;
    STATUS_UNSUCCESSFUL = 0xC000_0001u32;
    STATUS_NOT_IMPLEMENTED = 0xC000_0002u32;
    STATUS_INVALID_PARAMETER = 0xC000_000Du32;
    STATUS_NO_MEMORY = 0xC000_0017u32;
    STATUS_ACCESS_DENIED = 0xC000_0022u32;
    STATUS_BUFFER_TOO_SMALL = 0xC000_0023u32;
    STATUS_INSUFFICIENT_RESOURCES = 0xC000_009Au32;
    STATUS_NOT_SUPPORTED = 0xC000_00BBu32;
    STATUS_NOINTERFACE = 0xC000_02B9u32;
}

/// `NT_SUCCESS`.
#[inline]
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}
