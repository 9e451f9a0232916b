//! The driver's hooks as tests see them: one module per hook, with its
//! identity (program and attach type GUIDs, ELF section), the layout of what
//! its sample programs emit, and the sample objects. The kernel side of a
//! hook (the notify routines it registers, the events that fire it) lives in
//! [`crate::kernel`]; the eBPF side (program types, contexts) in
//! [`crate::ebpf`].

pub mod image_load;
pub mod process;
pub mod thread;
