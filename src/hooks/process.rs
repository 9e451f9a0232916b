//! The `process` program type and attach type, ABI-compatible with
//! ntosebpfext 0.7.0.
//!
//! Programs see a `process_md_t` for every process creation and exit; on
//! creation a negative result denies it. The command line is the context's
//! "packet" (`command_start`..`command_end`). Three program-type helpers
//! copy the image path and the account name and domain of the creating
//! token's user.
//!
//! The layout of the context, the test-run data format, and the string-copy
//! rule of the helpers are target-independent and unit-tested on the host;
//! the process notify routine, the helpers and the test-run contexts are in
//! [`notify`] (Windows only).

use crate::nt::GUID;
use core::mem::{offset_of, size_of};

/// `EBPF_PROGRAM_TYPE_PROCESS`.
pub const EBPF_PROGRAM_TYPE_PROCESS: GUID = GUID::new(
    0x22ea7b37,
    0x1043,
    0x4d0d,
    [0xb6, 0x0d, 0xca, 0xfa, 0x1c, 0x7b, 0x63, 0x8e],
);
/// `EBPF_ATTACH_TYPE_PROCESS`.
pub const EBPF_ATTACH_TYPE_PROCESS: GUID = GUID::new(
    0x66e20687,
    0x9805,
    0x4458,
    [0xa0, 0xdb, 0x38, 0xe2, 0x20, 0xd3, 0x16, 0x85],
);
/// `BPF_PROG_TYPE_PROCESS`.
pub const BPF_PROG_TYPE_PROCESS: u32 = 6;
/// `BPF_ATTACH_TYPE_PROCESS`.
pub const BPF_ATTACH_TYPE_PROCESS: u32 = 11;

/// `BPF_FUNC_process_get_image_path` (helper ids are `0xFFFF + n`).
pub const BPF_FUNC_PROCESS_GET_IMAGE_PATH: u32 = 0x10000;
/// `BPF_FUNC_process_get_account_name`.
pub const BPF_FUNC_PROCESS_GET_ACCOUNT_NAME: u32 = 0x10001;
/// `BPF_FUNC_process_get_account_domain`.
pub const BPF_FUNC_PROCESS_GET_ACCOUNT_DOMAIN: u32 = 0x10002;

/// `PROCESS_OPERATION_CREATE` (`process_operation_t`).
pub const PROCESS_OPERATION_CREATE: u8 = 0;
/// `PROCESS_OPERATION_DELETE`.
pub const PROCESS_OPERATION_DELETE: u8 = 1;

/// Size of `token_sid` (`SECURITY_MAX_SID_SIZE`).
pub const TOKEN_SID_CAPACITY: usize = 68;

/// `process_md_t`: what programs see (144 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct process_md_t {
    /// The command line (UTF-16LE, no NUL): the context's "packet" start.
    pub command_start: *mut u8,
    /// One past the command line's last byte.
    pub command_end: *mut u8,
    /// The process id.
    pub process_id: u64,
    /// The parent's process id (CREATE).
    pub parent_process_id: u64,
    /// The creating thread's process id (CREATE).
    pub creating_process_id: u64,
    /// The creating thread's id (CREATE).
    pub creating_thread_id: u64,
    /// Creation time (100 ns units since 1601).
    pub creation_time: u64,
    /// Exit time (DELETE).
    pub exit_time: u64,
    /// Exit status (DELETE).
    pub process_exit_code: u32,
    /// C bit field `process_operation_t operation : 8` in a 4-byte unit.
    pub operation: u8,
    /// The rest of the bit field's unit.
    pub _operation_unit: [u8; 3],
    /// Bytes of `token_sid` in use (0: no SID).
    pub token_sid_size: u32,
    /// The user SID of the process's primary token (CREATE).
    pub token_sid: [u8; TOKEN_SID_CAPACITY],
}

impl process_md_t {
    /// All zero, null packet.
    pub const fn zeroed() -> process_md_t {
        process_md_t {
            command_start: core::ptr::null_mut(),
            command_end: core::ptr::null_mut(),
            process_id: 0,
            parent_process_id: 0,
            creating_process_id: 0,
            creating_thread_id: 0,
            creation_time: 0,
            exit_time: 0,
            process_exit_code: 0,
            operation: 0,
            _operation_unit: [0; 3],
            token_sid_size: 0,
            token_sid: [0; TOKEN_SID_CAPACITY],
        }
    }
}

const _: () = {
    assert!(size_of::<process_md_t>() == 144);
    assert!(offset_of!(process_md_t, command_end) == 8);
    assert!(offset_of!(process_md_t, process_id) == 16);
    assert!(offset_of!(process_md_t, parent_process_id) == 24);
    assert!(offset_of!(process_md_t, creating_process_id) == 32);
    assert!(offset_of!(process_md_t, creating_thread_id) == 40);
    assert!(offset_of!(process_md_t, creation_time) == 48);
    assert!(offset_of!(process_md_t, exit_time) == 56);
    assert!(offset_of!(process_md_t, process_exit_code) == 64);
    assert!(offset_of!(process_md_t, operation) == 68);
    assert!(offset_of!(process_md_t, token_sid_size) == 72);
    assert!(offset_of!(process_md_t, token_sid) == 76);
};

/// Longest account name or domain the driver resolves, in UTF-16 units
/// (Windows names are at most 256 characters).
pub const ACCOUNT_CAPACITY: usize = 256;

/// The `data_in` / `data_out` layout of `bpf_prog_test_run` for this
/// program type (documented in `include/ebpf_ntos_hooks.h`): a 16-byte
/// header of four little-endian `u32` byte lengths (command line, image
/// path, account name, account domain), then the four UTF-16LE strings in
/// that order, without terminators. `data_size_in` must equal 16 plus the
/// sum of the lengths; each length must be even. No data at all (size 0)
/// means four empty strings.
pub const TEST_DATA_HEADER_SIZE: usize = 16;

/// The strings of a test run, as slices of `data_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TestStrings<'a> {
    /// The command line (the packet).
    pub command_line: &'a [u8],
    /// What `bpf_process_get_image_path` returns.
    pub image_path: &'a [u8],
    /// What `bpf_process_get_account_name` returns.
    pub account_name: &'a [u8],
    /// What `bpf_process_get_account_domain` returns.
    pub account_domain: &'a [u8],
}

/// Why test-run input was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestDataError {
    /// Shorter than the 16-byte header.
    TooSmall,
    /// A length is odd (not UTF-16).
    OddLength,
    /// Header lengths do not add up to the data size.
    SizeMismatch,
    /// An account string is longer than the driver resolves.
    AccountTooLong,
}

/// Splits test-run data; never reads past `data`.
pub fn parse_test_data(data: &[u8]) -> Result<TestStrings<'_>, TestDataError> {
    if data.is_empty() {
        return Ok(TestStrings::default());
    }
    if data.len() < TEST_DATA_HEADER_SIZE {
        return Err(TestDataError::TooSmall);
    }
    let mut lens = [0usize; 4];
    for (i, len) in lens.iter_mut().enumerate() {
        let b = [
            data[i * 4],
            data[i * 4 + 1],
            data[i * 4 + 2],
            data[i * 4 + 3],
        ];
        *len = u32::from_le_bytes(b) as usize;
        if *len % 2 != 0 {
            return Err(TestDataError::OddLength);
        }
    }
    let total = lens
        .iter()
        .try_fold(TEST_DATA_HEADER_SIZE, |acc, l| acc.checked_add(*l))
        .ok_or(TestDataError::SizeMismatch)?;
    if total != data.len() {
        return Err(TestDataError::SizeMismatch);
    }
    if lens[2] > ACCOUNT_CAPACITY * 2 || lens[3] > ACCOUNT_CAPACITY * 2 {
        return Err(TestDataError::AccountTooLong);
    }
    let mut at = TEST_DATA_HEADER_SIZE;
    let mut take = |n: usize| {
        let s = &data[at..at + n];
        at += n;
        s
    };
    Ok(TestStrings {
        command_line: take(lens[0]),
        image_path: take(lens[1]),
        account_name: take(lens[2]),
        account_domain: take(lens[3]),
    })
}

/// Size of the test-run data that carries `s`.
pub fn test_data_size(s: &TestStrings<'_>) -> usize {
    TEST_DATA_HEADER_SIZE
        + s.command_line.len()
        + s.image_path.len()
        + s.account_name.len()
        + s.account_domain.len()
}

/// Writes `s` in the test-run layout into `out` (which must be at least
/// [`test_data_size`] bytes).
pub fn write_test_data(s: &TestStrings<'_>, out: &mut [u8]) {
    let parts = [
        s.command_line,
        s.image_path,
        s.account_name,
        s.account_domain,
    ];
    let mut at = TEST_DATA_HEADER_SIZE;
    for (i, p) in parts.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&(p.len() as u32).to_le_bytes());
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
}

#[cfg(windows)]
pub mod notify;

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn test_data_round_trip() {
        let (cmd, img, name, dom) = (
            utf16("a b"),
            utf16("C:\\a.exe"),
            utf16("alice"),
            utf16("CORP"),
        );
        let s = TestStrings {
            command_line: &cmd,
            image_path: &img,
            account_name: &name,
            account_domain: &dom,
        };
        let mut buf = vec![0u8; test_data_size(&s)];
        write_test_data(&s, &mut buf);
        assert_eq!(&buf[..4], &(cmd.len() as u32).to_le_bytes());
        assert_eq!(parse_test_data(&buf).unwrap(), s);
        assert_eq!(parse_test_data(&[]).unwrap(), TestStrings::default());
    }

    #[test]
    fn test_data_is_validated_without_reading_past_it() {
        assert_eq!(parse_test_data(&[0; 15]), Err(TestDataError::TooSmall));
        let mut h = [0u8; 16];
        h[0] = 3;
        assert_eq!(parse_test_data(&h), Err(TestDataError::OddLength));
        let mut h = vec![0u8; 16];
        h[0] = 4;
        assert_eq!(
            parse_test_data(&h),
            Err(TestDataError::SizeMismatch),
            "claims 4 bytes it lacks"
        );
        h.extend_from_slice(&[1, 0, 2, 0, 3, 0]);
        assert_eq!(
            parse_test_data(&h),
            Err(TestDataError::SizeMismatch),
            "carries 2 bytes too many"
        );
        let mut huge = vec![0u8; 16];
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes()[..]);
        huge[0] = 0xFE;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes()[..]);
        huge[4] = 0xFE;
        assert_eq!(parse_test_data(&huge), Err(TestDataError::SizeMismatch));
        let mut long = vec![0u8; 16];
        long[8..12].copy_from_slice(&(600u32).to_le_bytes());
        long.resize(16 + 600, 0);
        assert_eq!(parse_test_data(&long), Err(TestDataError::AccountTooLong));
    }
}
