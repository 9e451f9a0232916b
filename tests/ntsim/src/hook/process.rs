//! The process hook as a test bed sees it: its identity (GUIDs, the ELF
//! section), and the record that the sample programs in
//! `tests/bpf/process_test.c` write to their `events` ring buffer.

use crate::ebpf::SectionMap;
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

/// The section map of the eBPF store for this driver: "process".
pub fn section_map() -> SectionMap {
    let mut m = SectionMap::new();
    m.add("process", PROGRAM_TYPE, ATTACH_TYPE);
    m
}

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
