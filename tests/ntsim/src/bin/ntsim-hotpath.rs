//! `ntsim-hotpath`: the hot-path benchmark's workload
//! ([`ntsim::cli::bench`]), run by `cargo xtask bench` (natively for the
//! wall-clock timings, under callgrind for instruction and call counts).
//!
//! ```text
//! ntsim-hotpath --driver PATH [--quick] [--no-timing] [--out FILE]
//! ```
//!
//! Writes the report in the line format of
//! [`ntsim::cli::bench::Report::parse`] to FILE (default: stdout). Exit status 0 on
//! success, 1 on a failure, 2 on a usage error.

use ntsim::cli::bench::{self, Plan};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ntsim-hotpath --driver PATH [--quick] [--no-timing] [--out FILE]";

fn main() -> ExitCode {
    let mut driver = None;
    let mut out = None;
    let mut plan = Plan::full();
    let mut timing = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--driver" => driver = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            "--quick" => plan = Plan::quick(),
            "--no-timing" => timing = false,
            _ => {
                eprintln!("ntsim-hotpath: unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(driver) = driver else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if !timing {
        plan.timed_events = 0;
    }
    let report = match bench::run(&driver, &plan) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ntsim-hotpath: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = report.to_lines();
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, json) {
                eprintln!("ntsim-hotpath: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{json}"),
    }
    ExitCode::SUCCESS
}
