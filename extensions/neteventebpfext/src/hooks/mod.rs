//! One module per program type, and the list of hooks the driver loads.
//!
//! A new hook is one file (its program type, attach type, sections, event
//! source and `static` [`Hook`](ebpf_ext::ebpf::hook::Hook)) plus one line
//! in `HOOKS`.

pub mod netevent;

/// Every hook, in load order (unloaded in reverse): the driver's
/// [`Extension`](ebpf_ext::driver::Extension)'s `hooks`.
#[cfg(windows)]
pub const HOOKS: &[&ebpf_ext::ebpf::hook::Hook] = &[&netevent::HOOK];
