//! What the `ntsim` command runs, as a library: [`demo`] (load the driver,
//! attach programs, raise events, report), [`scenario`] (the scenario
//! line format and its runner) and [`store`] (print the eBPF store the
//! driver writes). `src/main.rs` parses the command line and
//! calls into these.

pub mod bench;
pub mod demo;
pub mod scenario;
pub mod store;
