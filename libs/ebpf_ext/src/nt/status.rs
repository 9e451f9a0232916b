//! NTSTATUS: the raw code the kernel ABI passes, and the typed [`Error`]
//! the rest of the driver uses.
//!
//! A raw [`NTSTATUS`] appears only at the edges: the value a kernel call
//! returns is checked at once with [`check`] (or matched when a success
//! code carries meaning, such as `STATUS_PENDING`), and an [`NtResult`] is
//! turned back into a raw status only where the kernel or NMR calls the
//! driver ([`into_status`]: `DriverEntry`, the NMR trampolines). In between,
//! `?` propagates failures and `Err(success)` cannot be written.

use core::fmt;

/// An NT status code as the ABI passes it; success is `>= 0`.
pub type NTSTATUS = i32;

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: NTSTATUS = 0;
/// `STATUS_PENDING`: a success code (the operation completes later).
pub const STATUS_PENDING: NTSTATUS = 0x0000_0103;

/// A failure status.
///
/// # Invariants
/// The code is negative (`!NT_SUCCESS`): an error or warning severity.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Error(NTSTATUS);

/// The result of a fallible operation of the driver.
pub type NtResult<T = ()> = Result<T, Error>;

macro_rules! errors {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl Error {
            $($(#[$doc])* pub const $name: Error = Error::from_const($value as u32 as i32);)*
        }
    };
}

errors! {
    /// `STATUS_UNSUCCESSFUL`.
    UNSUCCESSFUL = 0xC000_0001u32;
    /// `STATUS_INVALID_PARAMETER`.
    INVALID_PARAMETER = 0xC000_000Du32;
    /// `STATUS_BUFFER_TOO_SMALL`: a caller's buffer cannot hold the result
    /// (the required size was reported).
    BUFFER_TOO_SMALL = 0xC000_0023u32;
    /// `STATUS_INSUFFICIENT_RESOURCES`: the status of every failed allocation.
    INSUFFICIENT_RESOURCES = 0xC000_009Au32;
    /// `STATUS_NOT_SUPPORTED`.
    NOT_SUPPORTED = 0xC000_00BBu32;
    /// `STATUS_NOINTERFACE`: an NMR binding refused because the other
    /// side's NPI characteristics are missing or of an unknown version.
    NOINTERFACE = 0xC000_02B9u32;
}

impl Error {
    /// A failure code known at compile time; a success code does not compile.
    const fn from_const(status: NTSTATUS) -> Error {
        assert!(status < 0, "an Error holds a failure status");
        // INVARIANT: checked just above.
        Error(status)
    }

    /// The error a status stands for, or `None` for a success status.
    #[inline]
    pub const fn from_status(status: NTSTATUS) -> Option<Error> {
        if status < 0 {
            // INVARIANT: a negative status is a failure.
            Some(Error(status))
        } else {
            None
        }
    }

    /// The raw code, for the FFI edge.
    #[inline]
    pub const fn status(self) -> NTSTATUS {
        self.0
    }
}

/// Checks a status a kernel call returned: any success code is `Ok`.
#[inline]
pub const fn check(status: NTSTATUS) -> NtResult {
    match Error::from_status(status) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// The raw status of a result, for the FFI edge (callbacks the kernel or
/// NMR makes into the driver).
#[inline]
pub const fn into_status(result: NtResult) -> NTSTATUS {
    match result {
        Ok(()) => STATUS_SUCCESS,
        Err(e) => e.status(),
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NTSTATUS({:#010x})", self.0 as u32)
    }
}

impl fmt::LowerHex for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&(self.0 as u32), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failure_codes_are_errors() {
        assert_eq!(check(STATUS_SUCCESS), Ok(()));
        assert_eq!(check(STATUS_PENDING), Ok(()), "informational codes succeed");
        assert_eq!(check(0x4000_0000), Ok(()));
        let e = check(0xC000_009Au32 as i32).unwrap_err();
        assert_eq!(e, Error::INSUFFICIENT_RESOURCES);
        assert_eq!(into_status(Err(e)), 0xC000_009Au32 as i32);
        assert_eq!(into_status(Ok(())), STATUS_SUCCESS);
        assert_eq!(
            Error::from_status(0x8000_0005u32 as i32).map(Error::status),
            Some(0x8000_0005u32 as i32),
            "warnings are failures for NT_SUCCESS"
        );
        assert_eq!(format!("{:#x}", Error::INVALID_PARAMETER), "0xc000000d");
    }
}
