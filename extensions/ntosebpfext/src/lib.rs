//! ntosebpfext: an eBPF for Windows extension driver with the process,
//! thread and image-load hooks of the C ntosebpfext 0.7.0.
//!
//! A thin driver on the `ebpf_ext` library (libs/ebpf_ext): this crate has
//! its hooks ([`hooks`]), its ETW provider ([`TRACE`]), its
//! [`Extension`](ebpf_ext::driver::Extension) (`EXTENSION`) and its
//! `DriverEntry`; its link settings are in build.rs. Built for
//! `x86_64-pc-windows-msvc` this crate is a `no_std` kernel driver image.
//! Built for any other target (unit tests, host clippy) only the
//! target-independent logic is compiled; everything that calls the kernel
//! lives behind `cfg(windows)`.
#![cfg_attr(windows, no_std)]

extern crate alloc;

pub mod hooks;

use ebpf_ext::nt::GUID;
use ebpf_ext::trace::{keyword, TraceProvider};

/// The driver's version (its crate's), which the `DriverLoad` and
/// `DriverUnload` events and the `loaded` line report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The driver's ETW provider: the C ntosebpfext's name and GUID; the hooks'
/// kernel callbacks trace under `EBPF_EXT_TRACELOG_KEYWORD_PROCESS`, as
/// upstream's do for every hook of ntosebpfext.
pub static TRACE: TraceProvider = ebpf_ext::trace_provider!(
    "NtosEbpfExtProvider",
    GUID::new(
        0xd15cc421,
        0xe9e4,
        0x459b,
        [0x87, 0xa6, 0xb4, 0x5b, 0x7d, 0x84, 0xe9, 0xa8],
    ),
    keyword::PROCESS,
);

#[cfg(windows)]
mod driver {
    use ebpf_ext::driver::{ascii_to_utf16, Extension};

    /// Everything in which this driver differs from another built on
    /// `ebpf_ext`.
    static EXTENSION: Extension = Extension {
        name: "ntosebpfext",
        version: ebpf_ext::package_version!(),
        hooks: crate::hooks::HOOKS,
        trace: &crate::TRACE,
        pool_tag: ebpf_ext::pool::POOL_TAG,
        // The C driver's control device name (`\device\ebpf_ext_` + its
        // provider name `ntos`; object names are case-insensitive).
        device_name: &ascii_to_utf16(b"\\Device\\ebpf_ext_ntos"),
    };

    ebpf_ext::driver_entry!(EXTENSION);
}
