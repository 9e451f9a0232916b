//! The eBPF for Windows core as ntsim sees it.

pub mod abi;
pub mod validate;
