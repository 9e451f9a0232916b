//! The `process` program type and attach type, ABI-compatible with
//! ntosebpfext 0.7.0.
//!
//! Programs see a `process_md_t` for every process creation and exit; on
//! creation a negative result denies it. The command line is the context's
//! "packet" (`command_start`..`command_end`). Three program-type helpers
//! copy the image path and the account name and domain of the creating
//! token's user.
//!
//! The layout of the context, the `bpf_prog_test_run` input format
//! ([`process_test_run_context_t`] and the strings in `data_in`) and its
//! checks are target-independent and unit-tested on the host;
//! the process notify routine, the helpers and the test-run contexts are in
//! [`notify`] (Windows only).

use core::mem::{offset_of, size_of};
use ebpf_ext::nt::GUID;

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

/// UTF-16 units of each account string a real event resolves into without
/// allocating (on the notifying thread's stack). A longer name or domain
/// is resolved again into pool buffers of the size `SecLookupAccountSid`
/// reports.
pub const ACCOUNT_INLINE_UNITS: usize = 256;

/// A `UNICODE_STRING` as it sits in [`process_test_run_context_t`] (the x64
/// layout: `Length`, `MaximumLength`, padding, `Buffer`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestRunString {
    /// `Length`: bytes of the string (in `data_in`, in order).
    pub length: u16,
    /// `MaximumLength`: bytes of the buffer the driver gives the string
    /// (at least `length`).
    pub maximum_length: u16,
    /// Padding before the pointer.
    pub reserved: u32,
    /// `Buffer`: ignored on input, 0 on output.
    pub buffer: u64,
}

/// The `ctx_in` / `ctx_out` of `bpf_prog_test_run` for process programs
/// (296 bytes, documented in `include/ebpf_ntos_hooks.h`): the layout of
/// ntosebpfext 0.7.0's process notify context, which its test tools pass.
/// The strings' contents come in `data_in`, packed back to back in field
/// order, `length` bytes each.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct process_test_run_context_t {
    /// `EBPF_CONTEXT_HEADER`: ignored on input, zero on output.
    pub context_header: [u64; 8],
    /// The context the program sees (`command_start`/`command_end`
    /// ignored on input, zero on output).
    pub process_md: process_md_t,
    /// The `PEPROCESS` of a real event: ignored, zero on output.
    pub process: u64,
    /// The `PPS_CREATE_NOTIFY_INFO` of a real event: ignored, zero on output.
    pub create_info: u64,
    /// The command line (the packet).
    pub command_line: TestRunString,
    /// What `bpf_process_get_image_path` returns.
    pub image_file_name: TestRunString,
    /// The account name (see `account_lookup_done`).
    pub account_name: TestRunString,
    /// The account domain.
    pub account_domain: TestRunString,
    /// `BOOLEAN`: non-zero means the account strings are final (the
    /// helpers return them, or `-ENOENT` if either is empty); zero means
    /// the first account helper resolves `token_sid`, into the given
    /// buffers if they are large enough.
    pub account_lookup_done: u8,
    /// Padding to the 8-byte alignment.
    pub reserved: [u8; 7],
}

/// `sizeof(process_test_run_context_t)`: the least `ctx_in` and `ctx_out`
/// the driver accepts.
pub const TEST_RUN_CONTEXT_SIZE: usize = 296;

const _: () = {
    type C = process_test_run_context_t;
    assert!(size_of::<TestRunString>() == 16);
    assert!(size_of::<C>() == TEST_RUN_CONTEXT_SIZE);
    assert!(offset_of!(C, process_md) == 64);
    assert!(offset_of!(C, process) == 208);
    assert!(offset_of!(C, create_info) == 216);
    assert!(offset_of!(C, command_line) == 224);
    assert!(offset_of!(C, image_file_name) == 240);
    assert!(offset_of!(C, account_name) == 256);
    assert!(offset_of!(C, account_domain) == 272);
    assert!(offset_of!(C, account_lookup_done) == 288);
};

/// Why a test run's input was refused (`EBPF_INVALID_ARGUMENT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestRunInputError {
    /// No `ctx_in`, or shorter than [`TEST_RUN_CONTEXT_SIZE`].
    ContextTooSmall,
    /// No `data_in`, or shorter than the four lengths together.
    DataTooSmall,
    /// A `length` above its `maximum_length`.
    LengthAboveMaximum,
    /// An odd `length` (not UTF-16).
    OddLength,
    /// `operation` neither CREATE nor DELETE.
    BadOperation,
    /// `token_sid_size` above 68.
    SidTooLarge,
}

impl TestRunInputError {
    /// The variant's name, as the `TestRunRefused` event's `Reason`.
    pub fn reason(self) -> &'static core::ffi::CStr {
        match self {
            TestRunInputError::ContextTooSmall => c"ContextTooSmall",
            TestRunInputError::DataTooSmall => c"DataTooSmall",
            TestRunInputError::LengthAboveMaximum => c"LengthAboveMaximum",
            TestRunInputError::OddLength => c"OddLength",
            TestRunInputError::BadOperation => c"BadOperation",
            TestRunInputError::SidTooLarge => c"SidTooLarge",
        }
    }
}

/// A checked test-run input: the context and the four strings (command
/// line, image path, account name, account domain) as slices of `data_in`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunInput<'a> {
    /// `ctx_in`'s first [`TEST_RUN_CONTEXT_SIZE`] bytes.
    pub context: process_test_run_context_t,
    /// The strings, in field order.
    pub strings: [&'a [u8]; 4],
}

impl process_test_run_context_t {
    /// The four string descriptors, in `data_in` order.
    pub fn strings(&self) -> [TestRunString; 4] {
        [
            self.command_line,
            self.image_file_name,
            self.account_name,
            self.account_domain,
        ]
    }

    /// Reads the context from the start of `bytes` (no alignment needed).
    pub fn read(bytes: &[u8]) -> Option<process_test_run_context_t> {
        if bytes.len() < TEST_RUN_CONTEXT_SIZE {
            return None;
        }
        // SAFETY: at least size_of::<Self>() readable bytes; every field is
        // an integer, raw pointer or array of them, for which any bit
        // pattern is valid; read unaligned.
        Some(unsafe { bytes.as_ptr().cast::<Self>().read_unaligned() })
    }

    /// The context's bytes (to write into `ctx_out`).
    pub fn to_bytes(&self) -> [u8; TEST_RUN_CONTEXT_SIZE] {
        let mut out = [0u8; TEST_RUN_CONTEXT_SIZE];
        // SAFETY: `out` holds size_of::<Self>() bytes; written unaligned.
        // The padding bytes of `self` are explicit fields, so every byte
        // written is initialized.
        unsafe { out.as_mut_ptr().cast::<Self>().write_unaligned(*self) };
        out
    }
}

/// Checks a test run's input, in 0.7.0's order (context, then data, then
/// each `Length` against its `MaximumLength`), then this driver's own
/// checks (even lengths, a real operation, a SID that fits). Nothing
/// beyond the given slices is read; bytes of `data_in` past the four
/// strings are ignored.
pub fn parse_test_run<'a>(
    context_in: Option<&[u8]>,
    data_in: Option<&'a [u8]>,
) -> Result<TestRunInput<'a>, TestRunInputError> {
    let context = context_in
        .and_then(process_test_run_context_t::read)
        .ok_or(TestRunInputError::ContextTooSmall)?;
    let descriptors = context.strings();
    let data = data_in.ok_or(TestRunInputError::DataTooSmall)?;
    let total: usize = descriptors.iter().map(|s| s.length as usize).sum();
    if data.len() < total {
        return Err(TestRunInputError::DataTooSmall);
    }
    if descriptors.iter().any(|s| s.length > s.maximum_length) {
        return Err(TestRunInputError::LengthAboveMaximum);
    }
    if descriptors.iter().any(|s| s.length % 2 != 0) {
        return Err(TestRunInputError::OddLength);
    }
    let md = &context.process_md;
    if md.operation != PROCESS_OPERATION_CREATE && md.operation != PROCESS_OPERATION_DELETE {
        return Err(TestRunInputError::BadOperation);
    }
    if md.token_sid_size as usize > TOKEN_SID_CAPACITY {
        return Err(TestRunInputError::SidTooLarge);
    }
    let mut strings: [&[u8]; 4] = [&[]; 4];
    let mut at = 0;
    for (s, d) in strings.iter_mut().zip(descriptors) {
        *s = &data[at..at + d.length as usize];
        at += d.length as usize;
    }
    Ok(TestRunInput { context, strings })
}

/// Packs `strings` back to back into `out` (the `data_out` layout, which
/// is `data_in`'s). Returns the bytes written, or `None` (nothing written)
/// when `out` is too small for all of them.
pub fn pack_test_run_strings(strings: [&[u8]; 4], out: &mut [u8]) -> Option<usize> {
    let total: usize = strings.iter().map(|s| s.len()).sum();
    let out = out.get_mut(..total)?;
    let mut at = 0;
    for s in strings {
        out[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    Some(total)
}

#[cfg(windows)]
pub mod notify;

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    fn context(lengths: [u16; 4]) -> Vec<u8> {
        let mut c = vec![0u8; TEST_RUN_CONTEXT_SIZE];
        for (i, l) in lengths.iter().enumerate() {
            let at = 224 + 16 * i;
            c[at..at + 2].copy_from_slice(&l.to_le_bytes());
            c[at + 2..at + 4].copy_from_slice(&l.to_le_bytes());
        }
        c
    }

    #[test]
    fn the_strings_are_cut_from_data_in_in_field_order() {
        let parts = [
            utf16("a b"),
            utf16("C:\\a.exe"),
            utf16("alice"),
            utf16("CORP"),
        ];
        let lengths = parts.clone().map(|p| p.len() as u16);
        let data: Vec<u8> = parts.concat();
        let c = context(lengths);
        let input = parse_test_run(Some(&c), Some(&data)).unwrap();
        assert_eq!(
            input.strings,
            [&parts[0][..], &parts[1], &parts[2], &parts[3]]
        );
        assert_eq!(input.context.account_name.length, lengths[2]);
        let mut out = vec![0u8; data.len()];
        assert_eq!(
            pack_test_run_strings(input.strings, &mut out),
            Some(data.len())
        );
        assert_eq!(out, data, "data_out has data_in's layout");
        assert_eq!(
            pack_test_run_strings(input.strings, &mut out[..data.len() - 1]),
            None
        );
        assert_eq!(
            process_test_run_context_t::read(&input.context.to_bytes()),
            Some(input.context)
        );
        let mut longer = data.clone();
        longer.push(7);
        assert!(
            parse_test_run(Some(&c), Some(&longer)).is_ok(),
            "bytes after the strings are ignored"
        );
    }

    #[test]
    fn bad_input_is_refused_without_reading_past_it() {
        use TestRunInputError::*;
        let c = context([2, 0, 0, 0]);
        let data = [1u8, 0];
        assert_eq!(parse_test_run(None, Some(&data)), Err(ContextTooSmall));
        assert_eq!(
            parse_test_run(Some(&c[..TEST_RUN_CONTEXT_SIZE - 1]), Some(&data)),
            Err(ContextTooSmall)
        );
        assert_eq!(parse_test_run(Some(&c), None), Err(DataTooSmall));
        assert_eq!(
            parse_test_run(Some(&c), Some(&data[..1])),
            Err(DataTooSmall)
        );
        let mut above = c.clone();
        above[226] = 1; // command_line.MaximumLength 1 < Length 2
        assert_eq!(
            parse_test_run(Some(&above), Some(&data)),
            Err(LengthAboveMaximum)
        );
        let odd = context([1, 0, 0, 0]);
        assert_eq!(parse_test_run(Some(&odd), Some(&data)), Err(OddLength));
        let mut op = c.clone();
        op[64 + 68] = 2;
        assert_eq!(parse_test_run(Some(&op), Some(&data)), Err(BadOperation));
        let mut sid = c.clone();
        sid[64 + 72] = 69;
        assert_eq!(parse_test_run(Some(&sid), Some(&data)), Err(SidTooLarge));
        sid[64 + 72] = 68;
        assert!(parse_test_run(Some(&sid), Some(&data)).is_ok());
        let huge = context([0xFFFE; 4]);
        assert_eq!(parse_test_run(Some(&huge), Some(&data)), Err(DataTooSmall));
    }
}
