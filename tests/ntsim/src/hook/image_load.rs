//! The image-load hook as a test bed sees it: its identity (GUIDs; its ELF
//! section "image_load" resolves through the store the driver writes), and
//! the record that `tests/bpf/sysmon.c`'s `image_monitor` writes to its
//! `images` ring buffer. The sample object is [`crate::hook::thread`]'s
//! (one object holds both).

use crate::kernel::types::GUID;

/// `EBPF_PROGRAM_TYPE_IMAGE_LOAD`.
pub const PROGRAM_TYPE: GUID = GUID {
    data1: 0xe7e70e3a,
    data2: 0xba71,
    data3: 0x489f,
    data4: [0x9e, 0x22, 0xb3, 0x1f, 0x6f, 0x61, 0xa6, 0x23],
};

/// `EBPF_ATTACH_TYPE_IMAGE_LOAD`.
pub const ATTACH_TYPE: GUID = GUID {
    data1: 0x5a0c97f6,
    data2: 0xdfbb,
    data3: 0x48fc,
    data4: [0xb5, 0xf2, 0x17, 0x0d, 0xa0, 0x35, 0x7c, 0x31],
};

/// `IMAGE_LOAD_FLAG_SYSTEM_MODE`.
pub const FLAG_SYSTEM_MODE: u32 = 1;
/// `IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS`.
pub const FLAG_MAPPED_TO_ALL_PIDS: u32 = 2;
/// `IMAGE_LOAD_FLAG_PARTIAL_MAP`.
pub const FLAG_PARTIAL_MAP: u32 = 4;
/// `IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH`.
pub const FLAG_MACHINE_TYPE_MISMATCH: u32 = 8;

/// Size of `image_load_md_t`.
pub const CONTEXT_SIZE: usize = 56;

/// `image_load_md_t` without its packet pointers, plus what
/// `image_monitor` read from the packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageRecord {
    pub process_id: u64,
    pub thread_id: u64,
    pub image_base: u64,
    pub image_size: u64,
    pub flags: u32,
    pub signature_level: u8,
    pub signature_type: u8,
    pub reserved: u16,
    /// Bytes of the packet.
    pub path_length: i32,
    /// The packet's bytes (at most 512).
    pub path: Vec<u8>,
}

/// Size of `image_record_t`.
pub const RECORD_SIZE: usize = 560;

impl ImageRecord {
    /// Decodes one record of `image_monitor`.
    pub fn parse(b: &[u8]) -> Option<ImageRecord> {
        if b.len() != RECORD_SIZE {
            return None;
        }
        let mut r = ImageRecord::from_fields(&b[..40]);
        r.path_length = i32::from_le_bytes(b[40..44].try_into().unwrap());
        r.path = b[48..48 + (r.path_length.max(0) as usize).min(512)].to_vec();
        Some(r)
    }

    /// Decodes the 40 bytes from `process_id` to `reserved` (a record's
    /// start, or an `image_load_md_t` from offset 16).
    pub fn from_fields(b: &[u8]) -> ImageRecord {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        ImageRecord {
            process_id: u64_at(0),
            thread_id: u64_at(8),
            image_base: u64_at(16),
            image_size: u64_at(24),
            flags: u32::from_le_bytes(b[32..36].try_into().unwrap()),
            signature_level: b[36],
            signature_type: b[37],
            reserved: u16::from_le_bytes(b[38..40].try_into().unwrap()),
            path_length: 0,
            path: Vec::new(),
        }
    }

    /// An `image_load_md_t` with these fields and null packet pointers.
    pub fn context_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        for v in [
            self.process_id,
            self.thread_id,
            self.image_base,
            self.image_size,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.push(self.signature_level);
        b.push(self.signature_type);
        b.extend_from_slice(&self.reserved.to_le_bytes());
        b
    }
}
