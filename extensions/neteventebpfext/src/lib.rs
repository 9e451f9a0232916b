//! neteventebpfext: an eBPF for Windows extension driver that runs programs
//! on network events (PktMon's drop and flow events) from the NMR providers
//! of the netevent NPI, a drop-in replacement for the C neteventebpfext of
//! microsoft/ntosebpfext.
//!
//! A thin driver on the `ebpf_ext` library (libs/ebpf_ext): this crate has
//! its hook ([`hooks`]), its ETW provider ([`TRACE`]), its
//! [`Extension`](ebpf_ext::driver::Extension) and its `DriverEntry`; its
//! link settings are in build.rs. Built for `x86_64-pc-windows-msvc` this
//! crate is a `no_std` kernel driver image; built for any other target only
//! the target-independent logic is compiled.
#![cfg_attr(windows, no_std)]

extern crate alloc;

pub mod hooks;

use ebpf_ext::nt::GUID;
use ebpf_ext::trace::{keyword, TraceProvider};

/// The driver's version (`CARGO_PKG_VERSION`), as its `DriverLoad` event
/// reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The driver's ETW provider: upstream's `NeteventEbpfExtProvider` name and
/// GUID (ntosebpfext 0.7.0 still shared one provider between its two
/// drivers; later versions give neteventebpfext its own). The hook's
/// callbacks (the NMR client, its bindings) trace under
/// `EBPF_EXT_TRACELOG_KEYWORD_NETEVENT`.
pub static TRACE: TraceProvider = ebpf_ext::trace_provider!(
    "NeteventEbpfExtProvider",
    GUID::new(
        0xbdd03353,
        0x2c68,
        0x4e7d,
        [0xae, 0x3a, 0xc0, 0x07, 0x90, 0x93, 0x01, 0x88],
    ),
    keyword::NETEVENT,
);

#[cfg(windows)]
mod driver {
    use ebpf_ext::driver::{ascii_to_utf16, Extension};

    /// Everything in which this driver differs from another built on
    /// `ebpf_ext`.
    static EXTENSION: Extension = Extension {
        name: "neteventebpfext",
        version: ebpf_ext::package_version!(),
        hooks: crate::hooks::HOOKS,
        trace: &crate::TRACE,
        // Upstream's EBPF_NETEVENT_EXTENSION_POOL_TAG 'tvEN'.
        pool_tag: u32::from_le_bytes(*b"NEvt"),
        // The C driver's control device name (`\device\ebpf_ext_` + its
        // provider name `netevent`).
        device_name: &ascii_to_utf16(b"\\Device\\ebpf_ext_netevent"),
    };

    ebpf_ext::driver_entry!(EXTENSION);
}
