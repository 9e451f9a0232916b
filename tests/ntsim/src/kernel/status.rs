//! NTSTATUS values returned by the simulated kernel.

pub type NTSTATUS = i32;

macro_rules! statuses {
    ($($name:ident = $value:expr;)*) => {
        $(pub const $name: NTSTATUS = $value as u32 as i32;)*
        /// The symbolic name of a status this module knows, for messages.
        pub fn name(status: NTSTATUS) -> Option<&'static str> {
            match status {
                $(x if x == $name => Some(stringify!($name)),)*
                _ => None,
            }
        }
    };
}

statuses! {
    STATUS_SUCCESS = 0x0000_0000u32;
    STATUS_PENDING = 0x0000_0103u32;
    STATUS_TIMEOUT = 0x0000_0102u32;
    STATUS_NO_MORE_ENTRIES = 0x8000_001Au32;
    STATUS_UNSUCCESSFUL = 0xC000_0001u32;
    STATUS_NOT_IMPLEMENTED = 0xC000_0002u32;
    STATUS_INVALID_HANDLE = 0xC000_0008u32;
    STATUS_INVALID_PARAMETER = 0xC000_000Du32;
    STATUS_NO_MEMORY = 0xC000_0017u32;
    STATUS_ACCESS_DENIED = 0xC000_0022u32;
    STATUS_BUFFER_TOO_SMALL = 0xC000_0023u32;
    STATUS_OBJECT_NAME_NOT_FOUND = 0xC000_0034u32;
    STATUS_OBJECT_NAME_COLLISION = 0xC000_0035u32;
    STATUS_INSUFFICIENT_RESOURCES = 0xC000_009Au32;
    STATUS_NOT_SUPPORTED = 0xC000_00BBu32;
    STATUS_INVALID_PARAMETER_1 = 0xC000_00EFu32;
    STATUS_INVALID_PARAMETER_2 = 0xC000_00F0u32;
    STATUS_NOT_FOUND = 0xC000_0225u32;
    STATUS_NOINTERFACE = 0xC000_02B9u32;
    STATUS_BUFFER_OVERFLOW = 0x8000_0005u32;
}

/// `NT_SUCCESS`.
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

/// `0xC0000022 (STATUS_ACCESS_DENIED)`-style text for messages.
pub fn describe(status: NTSTATUS) -> String {
    match name(status) {
        Some(n) => format!("{:#010x} ({n})", status as u32),
        None => format!("{:#010x}", status as u32),
    }
}
