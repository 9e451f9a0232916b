//! The process hook as a test bed sees it: its identity (GUIDs; its
//! section resolves through the eBPF store the driver writes, see
//! `ebpf::store`), the record that the sample programs in
//! `tests/bpf/process_test.c` write to their `events` ring buffer, and
//! `bpf_prog_test_run` in ntosebpfext 0.7.0's format: [`test_run_input`]
//! builds `ctx_in` (`process_test_run_context_t`) and `data_in` from a
//! [`TestRunInput`], [`TestRunContextOut::parse`] decodes `ctx_out`.

use crate::kernel::types::GUID;

/// `EBPF_PROGRAM_TYPE_PROCESS`.
pub const PROGRAM_TYPE: GUID = GUID {
    data1: 0x22ea7b37,
    data2: 0x1043,
    data3: 0x4d0d,
    data4: [0xb6, 0x0d, 0xca, 0xfa, 0x1c, 0x7b, 0x63, 0x8e],
};

/// `EBPF_ATTACH_TYPE_PROCESS`.
pub const ATTACH_TYPE: GUID = GUID {
    data1: 0x66e20687,
    data2: 0x9805,
    data3: 0x4458,
    data4: [0xa0, 0xdb, 0x38, 0xe2, 0x20, 0xd3, 0x16, 0x85],
};

/// The process hook's helpers (`ebpf_process_helper_id_t`): each copies a
/// UTF-16LE string into the program's buffer (argument 2, its length
/// argument 3) and returns the bytes copied or a negative error.
pub const HELPER_GET_IMAGE_PATH: u32 = 0x10000;
pub const HELPER_GET_ACCOUNT_NAME: u32 = 0x10001;
pub const HELPER_GET_ACCOUNT_DOMAIN: u32 = 0x10002;

/// The C name of a process hook helper.
pub fn helper_name(id: u32) -> Option<&'static str> {
    match id {
        HELPER_GET_IMAGE_PATH => Some("bpf_process_get_image_path"),
        HELPER_GET_ACCOUNT_NAME => Some("bpf_process_get_account_name"),
        HELPER_GET_ACCOUNT_DOMAIN => Some("bpf_process_get_account_domain"),
        _ => None,
    }
}

/// `STATUS_ACCESS_DENIED` as a program returns it.
pub const STATUS_ACCESS_DENIED: i32 = 0xC000_0022u32 as i32;

/// Path of the compiled sample programs.
pub fn sample_object_path() -> std::path::PathBuf {
    crate::build::workspace_root().join("tests/bpf/process_test.o")
}

/// One record of `process_test.c`'s `monitor` program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRecord {
    pub process_id: u64,
    pub parent_process_id: u64,
    pub creating_process_id: u64,
    pub creating_thread_id: u64,
    pub creation_time: u64,
    pub exit_time: u64,
    pub process_exit_code: u32,
    pub operation: u32,
    pub token_sid_size: u32,
    pub command_length: i32,
    pub image_result: i32,
    pub name_result: i32,
    pub domain_result: i32,
    pub short_image_result: i32,
    pub token_sid: Vec<u8>,
    pub short_image: [u8; 4],
    pub command: Vec<u8>,
    pub image: Vec<u8>,
    pub name: Vec<u8>,
    pub domain: Vec<u8>,
}

/// Size of `process_record_t`.
pub const RECORD_SIZE: usize = 792;

impl ProcessRecord {
    /// Decodes a record (the C layout of `process_record_t`).
    pub fn parse(b: &[u8]) -> Option<ProcessRecord> {
        if b.len() != RECORD_SIZE {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let i32_at = |o: usize| u32_at(o) as i32;
        // A helper's result is how many bytes of its buffer hold the string.
        let used = |result: i32, o: usize, cap: usize| {
            b[o..o + (result.max(0) as usize).min(cap)].to_vec()
        };
        let command_length = i32_at(60);
        let image_result = i32_at(64);
        let name_result = i32_at(68);
        let domain_result = i32_at(72);
        let token_sid_size = u32_at(56);
        Some(ProcessRecord {
            process_id: u64_at(0),
            parent_process_id: u64_at(8),
            creating_process_id: u64_at(16),
            creating_thread_id: u64_at(24),
            creation_time: u64_at(32),
            exit_time: u64_at(40),
            process_exit_code: u32_at(48),
            operation: u32_at(52),
            token_sid_size,
            command_length,
            image_result,
            name_result,
            domain_result,
            short_image_result: i32_at(76),
            token_sid: b[80..80 + (token_sid_size as usize).min(68)].to_vec(),
            short_image: b[148..152].try_into().unwrap(),
            command: used(command_length, 152, 256),
            image: used(image_result, 408, 256),
            name: used(name_result, 664, 64),
            domain: used(domain_result, 728, 64),
        })
    }
}

/// UTF-16LE bytes of `s`.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// `s` decoded from UTF-16LE bytes (lossy).
pub fn from_utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Size of `process_md_t`.
pub const PROCESS_MD_SIZE: usize = 144;
/// Size of `token_sid` (`TOKEN_SID_MAX_SIZE`).
pub const TOKEN_SID_MAX_SIZE: usize = 68;

/// The fields of a `process_md_t` (the packet pointers are the driver's
/// business and not listed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMd {
    pub process_id: u64,
    pub parent_process_id: u64,
    pub creating_process_id: u64,
    pub creating_thread_id: u64,
    pub creation_time: u64,
    pub exit_time: u64,
    pub process_exit_code: u32,
    /// `PROCESS_OPERATION_CREATE` (0) or `_DELETE` (1); any byte can be
    /// written, to test refusals.
    pub operation: u8,
    /// Written as given (it need not match `token_sid`).
    pub token_sid_size: u32,
    pub token_sid: [u8; TOKEN_SID_MAX_SIZE],
}

impl Default for ProcessMd {
    fn default() -> Self {
        ProcessMd {
            process_id: 0,
            parent_process_id: 0,
            creating_process_id: 0,
            creating_thread_id: 0,
            creation_time: 0,
            exit_time: 0,
            process_exit_code: 0,
            operation: 0,
            token_sid_size: 0,
            token_sid: [0; TOKEN_SID_MAX_SIZE],
        }
    }
}

impl ProcessMd {
    /// `sid` in `token_sid`, its length in `token_sid_size`.
    ///
    /// # Panics
    /// If `sid` is longer than 68 bytes.
    pub fn set_sid(&mut self, sid: &[u8]) {
        assert!(
            sid.len() <= TOKEN_SID_MAX_SIZE,
            "a SID has at most 68 bytes"
        );
        self.token_sid = [0; TOKEN_SID_MAX_SIZE];
        self.token_sid[..sid.len()].copy_from_slice(sid);
        self.token_sid_size = sid.len() as u32;
    }

    /// The 144 bytes of the C struct (packet pointers zero).
    pub fn to_bytes(&self) -> [u8; PROCESS_MD_SIZE] {
        let mut b = [0u8; PROCESS_MD_SIZE];
        for (at, v) in [
            (16, self.process_id),
            (24, self.parent_process_id),
            (32, self.creating_process_id),
            (40, self.creating_thread_id),
            (48, self.creation_time),
            (56, self.exit_time),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[64..68].copy_from_slice(&self.process_exit_code.to_le_bytes());
        b[68] = self.operation;
        b[72..76].copy_from_slice(&self.token_sid_size.to_le_bytes());
        b[76..144].copy_from_slice(&self.token_sid);
        b
    }

    /// Decodes the C struct; also returns the two packet pointers.
    pub fn parse(b: &[u8]) -> Option<(ProcessMd, [u64; 2])> {
        if b.len() < PROCESS_MD_SIZE {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        Some((
            ProcessMd {
                process_id: u64_at(16),
                parent_process_id: u64_at(24),
                creating_process_id: u64_at(32),
                creating_thread_id: u64_at(40),
                creation_time: u64_at(48),
                exit_time: u64_at(56),
                process_exit_code: u32_at(64),
                operation: b[68],
                token_sid_size: u32_at(72),
                token_sid: b[76..144].try_into().unwrap(),
            },
            [u64_at(0), u64_at(8)],
        ))
    }
}

/// `sizeof(process_test_run_context_t)`: the `ctx_in` / `ctx_out` of a
/// process test run (0.7.0's notify context: header, `process_md_t`, two
/// pointers, four `UNICODE_STRING`s, `BOOLEAN account_lookup_done`).
pub const TEST_RUN_CONTEXT_SIZE: usize = 296;
/// Offset of `process_md` in it.
pub const TEST_RUN_MD_OFFSET: usize = 64;
/// Offset of the first of the four `UNICODE_STRING`s (16 bytes each:
/// command line, image file name, account name, account domain).
pub const TEST_RUN_STRINGS_OFFSET: usize = 224;
/// Offset of `account_lookup_done`.
pub const TEST_RUN_LOOKUP_DONE_OFFSET: usize = 288;

/// The input of a process test run, field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestRunInput {
    pub md: ProcessMd,
    /// UTF-16LE bytes of the four strings (see [`utf16`]).
    pub command_line: Vec<u8>,
    pub image_path: Vec<u8>,
    pub account_name: Vec<u8>,
    pub account_domain: Vec<u8>,
    /// `MaximumLength` of each string in the order above; `None`: its
    /// `Length` (as upstream's tests set it).
    pub maximum_lengths: [Option<u16>; 4],
    /// The `BOOLEAN` byte: non-zero makes the given account strings final.
    pub account_lookup_done: u8,
}

impl TestRunInput {
    /// The four strings in `data_in` order.
    pub fn strings(&self) -> [&[u8]; 4] {
        [
            &self.command_line,
            &self.image_path,
            &self.account_name,
            &self.account_domain,
        ]
    }

    /// `ctx_in`: the 296-byte context with the strings' `Length`s (the
    /// low 16 bits of each byte count) and `MaximumLength`s, null
    /// pointers.
    pub fn context_in(&self) -> Vec<u8> {
        let mut c = vec![0u8; TEST_RUN_CONTEXT_SIZE];
        c[TEST_RUN_MD_OFFSET..TEST_RUN_MD_OFFSET + PROCESS_MD_SIZE]
            .copy_from_slice(&self.md.to_bytes());
        for (i, (s, max)) in self.strings().iter().zip(self.maximum_lengths).enumerate() {
            let at = TEST_RUN_STRINGS_OFFSET + 16 * i;
            let length = s.len() as u16;
            c[at..at + 2].copy_from_slice(&length.to_le_bytes());
            c[at + 2..at + 4].copy_from_slice(&max.unwrap_or(length).to_le_bytes());
        }
        c[TEST_RUN_LOOKUP_DONE_OFFSET] = self.account_lookup_done;
        c
    }

    /// `data_in`: the four strings back to back.
    pub fn data_in(&self) -> Vec<u8> {
        self.strings().concat()
    }
}

/// Builds upstream's `ctx_in` and `data_in` of a process test run from
/// fields and strings: `(ctx_in, data_in)`.
pub fn test_run_input(input: &TestRunInput) -> (Vec<u8>, Vec<u8>) {
    (input.context_in(), input.data_in())
}

/// A `UNICODE_STRING` of a test run's `ctx_out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestRunString {
    pub length: u16,
    pub maximum_length: u16,
    pub buffer: u64,
}

/// A decoded `ctx_out` of a process test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunContextOut {
    pub header: [u64; 8],
    pub md: ProcessMd,
    /// `command_start`, `command_end`.
    pub packet: [u64; 2],
    pub process: u64,
    pub create_info: u64,
    /// Command line, image file name, account name, account domain.
    pub strings: [TestRunString; 4],
    pub account_lookup_done: u8,
}

impl TestRunContextOut {
    /// Decodes `ctx_out` (`None` unless exactly 296 bytes).
    pub fn parse(b: &[u8]) -> Option<TestRunContextOut> {
        if b.len() != TEST_RUN_CONTEXT_SIZE {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
        let (md, packet) = ProcessMd::parse(&b[TEST_RUN_MD_OFFSET..])?;
        let string = |i: usize| {
            let at = TEST_RUN_STRINGS_OFFSET + 16 * i;
            TestRunString {
                length: u16_at(at),
                maximum_length: u16_at(at + 2),
                buffer: u64_at(at + 8),
            }
        };
        Some(TestRunContextOut {
            header: std::array::from_fn(|i| u64_at(8 * i)),
            md,
            packet,
            process: u64_at(208),
            create_info: u64_at(216),
            strings: std::array::from_fn(string),
            account_lookup_done: b[TEST_RUN_LOOKUP_DONE_OFFSET],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_run_input_round_trips_through_the_output_decoder() {
        let mut input = TestRunInput {
            command_line: utf16("a b"),
            image_path: utf16("C:\\a.exe"),
            account_name: utf16("x"),
            maximum_lengths: [None, Some(100), None, None],
            account_lookup_done: 1,
            ..Default::default()
        };
        input.md.process_id = 7;
        input.md.set_sid(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        let (ctx, data) = test_run_input(&input);
        assert_eq!(ctx.len(), TEST_RUN_CONTEXT_SIZE);
        assert_eq!(
            data,
            [utf16("a b"), utf16("C:\\a.exe"), utf16("x")].concat()
        );
        let out = TestRunContextOut::parse(&ctx).unwrap();
        assert_eq!(out.md, input.md);
        assert_eq!(out.strings[0].length, 6);
        assert_eq!(out.strings[1].maximum_length, 100);
        assert_eq!(out.strings[3], TestRunString::default());
        assert_eq!(out.account_lookup_done, 1);
    }
}
