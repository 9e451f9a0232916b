//! ntsim: a Windows kernel in a Linux process, for running the real
//! `ntosebpfext.sys` image in tests and from the command line.
//!
//! The image is mapped and relocated by [`loader`]; every import resolves to
//! an `extern "win64"` function of one of the service modules, which keep
//! their state in process-wide statics (a driver calls the kernel without a
//! context pointer, so the kernel is global). [`Sim`] owns that state for a
//! test: it serializes tests that use the kernel, resets every service, and
//! checks at the end that the driver left nothing behind and broke no rule.
//!
//! Services: [`nmr`], [`pool`] (with special pool), [`irql`], [`sync`],
//! [`io`] (work items), [`ps`] (processes, threads, images, tokens, SIDs),
//! [`registry`], [`log`] (DbgPrintEx, ETW), [`time`], [`fault`] (fault
//! injection), [`rtl`] (C runtime, strings, bug checks); [`crash`] reports
//! faults, [`child`] runs tests that must crash.
//!
//! On top: [`ebpf`] (the eBPF for Windows core: objects, interpreter, maps,
//! helpers, the NMR client of an extension), [`process`] (the process hook
//! as tests see it), [`scenario`] and [`demo`] (what the `ntsim` command
//! runs), [`build`] (building the driver image). See docs/ntsim.md.

#![allow(non_snake_case)]

pub mod build;
pub mod child;
pub mod crash;
pub mod demo;
pub mod ebpf;
pub mod exports;
pub mod fault;
pub mod io;
pub mod irql;
pub mod loader;
pub mod log;
pub mod nmr;
pub mod pool;
pub mod process;
pub mod ps;
pub mod registry;
pub mod rtl;
pub mod scenario;
pub mod sim;
pub mod status;
pub mod sync;
pub mod time;
pub mod types;
pub mod violation;

pub use sim::Sim;
