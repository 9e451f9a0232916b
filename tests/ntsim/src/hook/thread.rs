//! The thread hook as a test bed sees it: its identity (GUIDs; its ELF
//! section "thread" resolves through the store the driver writes), and the
//! record that `tests/bpf/sysmon.c`'s `thread_monitor` writes to its
//! `threads` ring buffer.

use crate::kernel::types::GUID;

/// `EBPF_PROGRAM_TYPE_THREAD`.
pub const PROGRAM_TYPE: GUID = GUID {
    data1: 0x2878b65e,
    data2: 0x750b,
    data3: 0x48f4,
    data4: [0x9a, 0xb4, 0xb5, 0xea, 0xdc, 0x37, 0x7d, 0x67],
};

/// `EBPF_ATTACH_TYPE_THREAD`.
pub const ATTACH_TYPE: GUID = GUID {
    data1: 0x2138225a,
    data2: 0x7ce0,
    data3: 0x434d,
    data4: [0x8e, 0xf1, 0x6b, 0x44, 0xc6, 0x8a, 0xfa, 0x9e],
};

/// `THREAD_OPERATION_CREATE`.
pub const OPERATION_CREATE: u32 = 0;
/// `THREAD_OPERATION_EXIT`.
pub const OPERATION_EXIT: u32 = 1;
/// `THREAD_FLAG_REMOTE`.
pub const FLAG_REMOTE: u32 = 1;
/// `THREAD_FLAG_SYSTEM`.
pub const FLAG_SYSTEM: u32 = 2;

/// Size of `thread_md_t`.
pub const CONTEXT_SIZE: usize = 56;

/// Path of the compiled Sysmon-style sample (`tests/bpf/sysmon.c`).
pub fn sample_object_path() -> std::path::PathBuf {
    crate::build::workspace_root().join("tests/bpf/sysmon.o")
}

/// `thread_md_t`, field by field (also one record of `thread_monitor`,
/// which adds `alert`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadRecord {
    pub process_id: u64,
    pub thread_id: u64,
    pub creating_process_id: u64,
    pub creating_thread_id: u64,
    pub start_address: u64,
    pub exit_status: u32,
    pub operation: u32,
    pub flags: u32,
    pub reserved: u32,
    /// `thread_monitor` only: a remote thread into a watched process.
    pub alert: u32,
    /// `thread_monitor` only: the process's first thread, created by the
    /// process that created the process.
    pub initial: u32,
}

/// Size of `thread_record_t`.
pub const RECORD_SIZE: usize = 64;

impl ThreadRecord {
    /// Decodes a record, or a `thread_md_t` (the first 56 bytes).
    pub fn parse(b: &[u8]) -> Option<ThreadRecord> {
        if b.len() != RECORD_SIZE && b.len() != CONTEXT_SIZE {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        Some(ThreadRecord {
            process_id: u64_at(0),
            thread_id: u64_at(8),
            creating_process_id: u64_at(16),
            creating_thread_id: u64_at(24),
            start_address: u64_at(32),
            exit_status: u32_at(40),
            operation: u32_at(44),
            flags: u32_at(48),
            reserved: u32_at(52),
            alert: if b.len() == RECORD_SIZE {
                u32_at(56)
            } else {
                0
            },
            initial: if b.len() == RECORD_SIZE {
                u32_at(60)
            } else {
                0
            },
        })
    }

    /// The `thread_md_t` bytes of this record (for test runs).
    pub fn context_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CONTEXT_SIZE);
        for v in [
            self.process_id,
            self.thread_id,
            self.creating_process_id,
            self.creating_thread_id,
            self.start_address,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.exit_status, self.operation, self.flags, self.reserved] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }
}
