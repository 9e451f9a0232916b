//! ntosebpfext: an eBPF for Windows extension driver.
//!
//! Built for `x86_64-pc-windows-msvc` this crate is a `no_std` kernel driver
//! image. Built for any other target (unit tests, host clippy) only the
//! target-independent logic is compiled; everything that calls the kernel
//! lives behind `cfg(windows)`.
#![cfg_attr(windows, no_std)]

extern crate alloc;

pub mod ebpf;
pub mod hooks;
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
