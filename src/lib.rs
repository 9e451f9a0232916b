//! ntosebpfext: an eBPF for Windows extension driver.
//!
//! Built for `x86_64-pc-windows-msvc` this crate is a `no_std` kernel driver
//! image. Built for any other target (unit tests, host clippy) only the
//! target-independent logic is compiled; everything that calls the kernel
//! lives behind `cfg(windows)`.
#![cfg_attr(windows, no_std)]

#[cfg(windows)]
extern crate alloc;

#[cfg(windows)]
pub mod driver;
#[cfg(windows)]
mod fmt;
#[cfg(windows)]
pub mod nt;
#[cfg(all(windows, not(feature = "wdk")))]
mod rt;
