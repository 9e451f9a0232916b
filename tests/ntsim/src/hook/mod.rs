//! The driver's hooks as tests see them: one module per hook, with its
//! identity (program and attach type GUIDs, ELF section), the layout of what
//! its sample programs emit, and the sample objects. The kernel side of a
//! hook (the notify routines it registers, the events that fire it) lives in
//! [`crate::kernel`]; the eBPF side (program types, contexts) in
//! [`crate::ebpf`].

pub mod host_client;
pub mod image_load;
pub mod netevent;
pub mod process;
pub mod thread;

use crate::kernel::types::GUID;

/// `NtosEbpfExtProvider`, the driver's ETW provider (the C driver's GUID;
/// the command's `--etw` enables it).
pub const ETW_PROVIDER: GUID = GUID {
    data1: 0xd15cc421,
    data2: 0xe9e4,
    data3: 0x459b,
    data4: [0x87, 0xa6, 0xb4, 0x5b, 0x7d, 0x84, 0xe9, 0xa8],
};
