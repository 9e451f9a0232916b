//! ebpf_ext: the machinery every eBPF for Windows extension driver of this
//! repository shares. A driver crate (extensions/) declares its hooks and
//! one [`driver::Extension`] and calls [`driver::entry`] from its
//! `DriverEntry`; this library does the rest: kernel declarations
//! ([`nt`]), sync primitives, pool, NMR, the eBPF extension ABI and the
//! generic hook and program-information providers ([`ebpf`]), eBPF store
//! registration ([`store`]), ETW ([`trace`]), and the runtime (allocator,
//! panic handler) the kernel image needs.
//!
//! Built for `x86_64-pc-windows-msvc` this crate is `no_std`. Built for any
//! other target (unit tests, host clippy) only the target-independent logic
//! is compiled; everything that calls the kernel lives behind
//! `cfg(windows)`.
#![cfg_attr(windows, no_std)]

extern crate alloc;

pub mod ebpf;
pub mod nt;
pub mod pool;
pub mod store;
pub mod sync;
pub mod trace;

#[cfg(windows)]
pub mod driver;
#[cfg(windows)]
mod fmt;
#[cfg(windows)]
pub mod nmr;
#[cfg(all(windows, not(feature = "wdk")))]
mod rt;
