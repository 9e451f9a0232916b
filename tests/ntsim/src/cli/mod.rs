//! What the `ntsim` command runs, as a library: [`demo`] (load the driver,
//! attach programs, raise events), [`scenario`] (the scenario line format
//! and its runner), [`report`] (what a run reports, as text or JSON),
//! [`decode`] (records and map entries decoded with the object's BTF),
//! [`testfile`] and [`expect`] (`ntsim test`: test files and their
//! expectations) and [`store`] (print the eBPF store the driver writes).
//! [`drivers`] decides which drivers a run loads.
//! `src/main.rs` parses the command line and calls into these.
//! [`bench`] is the hot-path benchmark's workload (`src/bin/ntsim-hotpath.rs`,
//! run by `cargo xtask bench`).

pub mod bench;
pub mod decode;
pub mod demo;
pub mod drivers;
pub mod expect;
pub mod report;
pub mod scenario;
pub mod store;
pub mod testfile;
