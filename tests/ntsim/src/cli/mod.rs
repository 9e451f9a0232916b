//! What the `ntsim` command runs, as a library: [`demo`] (load the driver,
//! attach programs, raise events, report) and [`scenario`] (the scenario
//! line format and its runner). `src/main.rs` parses the command line and
//! calls into these.

pub mod demo;
pub mod scenario;
