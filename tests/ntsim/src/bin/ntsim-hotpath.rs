//! `ntsim-hotpath`: the hot-path benchmark's workload
//! ([`ntsim::cli::bench`]), run by `cargo xtask bench` (natively for the
//! wall-clock timings, under callgrind for instruction and call counts).
//!
//! ```text
//! ntsim-hotpath --driver PATH [--quick] [--no-timing] [--out FILE]
//!               [--kinds K,..] [--counts N,..] [--timed-counts N,..]
//!               [--runs R] [--timed-events E]
//! ```
//!
//! The options after `--out` narrow or change the plan (after `--quick`,
//! which picks the quick one): client kinds (`host_plain`, `host_batch`,
//! `ebpf_link`), client counts, the counts that get wall-clock timings,
//! timed runs, and events per thread per timed run. They are for looking
//! at one configuration by hand; `cargo xtask bench` does not pass them.
//!
//! Writes the report in the line format of
//! [`ntsim::cli::bench::Report::parse`] to FILE (default: stdout). Exit status 0 on
//! success, 1 on a failure, 2 on a usage error.

use ntsim::cli::bench::{self, ClientKind, Plan};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ntsim-hotpath --driver PATH [--quick] [--no-timing] [--out FILE] \
                     [--kinds K,..] [--counts N,..] [--timed-counts N,..] [--runs R] \
                     [--timed-events E]";

/// A change to the plan from the command line.
type Narrow = Box<dyn FnOnce(&mut Plan)>;

/// A comma-separated list of numbers.
fn numbers(arg: Option<String>) -> Option<Vec<usize>> {
    arg?.split(',').map(|n| n.parse().ok()).collect()
}

/// A comma-separated list of client kind names.
fn kinds(arg: Option<String>) -> Option<Vec<ClientKind>> {
    arg?.split(',')
        .map(|k| ClientKind::ALL.into_iter().find(|c| c.name() == k))
        .collect()
}

fn main() -> ExitCode {
    let mut driver = None;
    let mut out = None;
    let mut plan = Plan::full();
    let mut timing = true;
    // Applied after the whole command line is read (--quick replaces the plan).
    let mut narrow: Vec<Narrow> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let bad = |what: &str| {
            eprintln!("ntsim-hotpath: {arg} needs {what}\n{USAGE}");
            ExitCode::from(2)
        };
        match arg.as_str() {
            "--driver" => driver = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            "--quick" => plan = Plan::quick(),
            "--no-timing" => timing = false,
            "--kinds" => match kinds(args.next()) {
                Some(k) if !k.is_empty() => narrow.push(Box::new(move |p| p.kinds = k)),
                _ => return bad("a list of client kinds"),
            },
            "--counts" => match numbers(args.next()) {
                Some(n) => narrow.push(Box::new(move |p| p.counts = n)),
                None => return bad("a list of numbers"),
            },
            "--timed-counts" => match numbers(args.next()) {
                Some(n) => narrow.push(Box::new(move |p| p.timed_counts = n)),
                None => return bad("a list of numbers"),
            },
            "--runs" => match numbers(args.next()).as_deref() {
                Some(&[r]) if r > 0 => narrow.push(Box::new(move |p| p.runs = r)),
                _ => return bad("a number above 0"),
            },
            "--timed-events" => match numbers(args.next()).as_deref() {
                Some(&[e]) if e > 0 => narrow.push(Box::new(move |p| p.timed_events = e)),
                _ => return bad("a number above 0"),
            },
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
    for f in narrow {
        f(&mut plan);
    }
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
