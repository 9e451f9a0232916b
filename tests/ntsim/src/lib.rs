//! ntsim: a Windows kernel in a Linux process, for running the real
//! `ntosebpfext.sys` image in tests and from the command line.
//!
//! The image is mapped and relocated by [`kernel::loader`]; every import
//! resolves to an `extern "win64"` function of one of the kernel's service
//! modules, which keep their state in process-wide statics (a driver calls
//! the kernel without a context pointer, so the kernel is global). [`Sim`]
//! owns that state for a test: it serializes tests that use the kernel,
//! resets every service, and checks at the end that the driver left nothing
//! behind and broke no rule.
//!
//! The layout follows the system it imitates, lowest layer first; a folder
//! imports only from the folders listed before it (checked by a unit test,
//! `layout.rs`):
//!
//! - [`kernel`]: ntoskrnl.exe, NETIO.SYS and ksecdd.sys, one module per
//!   subsystem ([`kernel::pool`], [`kernel::sync`], [`kernel::ps`],
//!   [`kernel::nmr`], ...), the export table, the driver loader and the
//!   crash reporter.
//! - [`ebpf`]: the eBPF for Windows core (objects, interpreter, maps,
//!   helpers, the NMR clients of an extension, what it validates).
//! - [`build`]: building the driver image; [`hook`]: the driver's hooks as
//!   tests see them ([`hook::process`]).
//! - [`sim`] ([`Sim`]): one test's kernel; [`child`]: running a test that
//!   must crash in a child process.
//! - [`cli`]: what the `ntsim` command runs ([`cli::demo`],
//!   [`cli::scenario`]).
//!
//! The kernel's modules are also re-exported at the top (`ntsim::pool`,
//! `ntsim::ps`, ...), as are [`hook::process`], [`cli::demo`] and
//! [`cli::scenario`], so callers name them by subsystem. See docs/ntsim.md.

#![allow(non_snake_case)]

pub mod build;
pub mod child;
pub mod cli;
pub mod ebpf;
pub mod hook;
pub mod kernel;
pub mod sim;

#[cfg(test)]
mod layout;

pub use cli::{demo, scenario};
pub use hook::{image_load, process, thread};
pub use kernel::{
    crash, exports, fault, io, irql, loader, log, netevent, nmr, pool, ps, registry, rtl, status,
    sync, time, types, violation,
};
pub use sim::Sim;
