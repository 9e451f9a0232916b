//! `cargo xtask bench [--quick]`: the hot-path benchmark (docs/performance.md).
//!
//! 1. Builds the release driver image and the workload binary,
//!    `ntsim-hotpath` ([`ntsim::cli::bench`]), in release mode.
//! 2. Runs the workload under callgrind (installing valgrind with apt-get
//!    when it is missing), collecting only inside `ntsim_bench_measured`
//!    (`--toggle-collect`) and dumping after each call of it
//!    (`--dump-after`): one dump per measured segment, with per-instruction
//!    costs (`--dump-instr=yes`).
//! 3. Attributes each dump's instructions to the driver by address: ntsim
//!    maps the image itself, so valgrind knows no symbol in it; a cost line
//!    whose instruction address lies in the image's range (the workload
//!    reports it) is driver code. A call from an address in the image to a
//!    function named like a kernel export is a kernel call of that API;
//!    one to `ExAllocatePool*` is a driver pool allocation.
//! 4. Runs the workload natively for wall-clock timings (one thread, then
//!    two), and writes `target/bench/hotpath.json` and a table.

use ntsim::cli::bench::Report;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// What one callgrind dump says about the driver image.
#[derive(Debug, Default, PartialEq)]
pub struct ImageCost {
    /// Instructions executed at addresses inside the image.
    pub instructions: u64,
    /// Calls from the image to each kernel export.
    pub kernel_calls: BTreeMap<String, u64>,
}

/// Reads one callgrind dump written with `--dump-instr=yes
/// --dump-line=no --compress-strings=no --compress-pos=no`.
///
/// A call's count is the number of times its call instruction ran (its
/// own cost line: one Ir per execution), split between the callees of an
/// indirect call site in the proportion of callgrind's `calls=` counts.
/// The `calls=` counts alone are not usable: with `--toggle-collect`,
/// callgrind keeps counting calls while collection is off.
///
/// # Errors
/// A cost or call line that does not parse.
pub fn parse_dump(
    text: &str,
    image: std::ops::Range<u64>,
    exports: &[String],
) -> Result<ImageCost, String> {
    let mut cost = ImageCost::default();
    // Per call site in the image: its executions, and calls per callee.
    let mut executed: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sites: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut callee = "";
    let mut pending_calls: Option<u64> = None;
    for (i, line) in text.lines().enumerate() {
        let bad = || format!("callgrind dump line {}: {line:?}", i + 1);
        if let Some(name) = line.strip_prefix("cfn=") {
            callee = name;
            continue;
        }
        if let Some(c) = line.strip_prefix("calls=") {
            let n = c
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?;
            pending_calls = Some(n);
            continue;
        }
        let Some(rest) = line.strip_prefix("0x") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let addr = fields
            .next()
            .and_then(|a| u64::from_str_radix(a, 16).ok())
            .ok_or_else(bad)?;
        let ir: u64 = fields.next().map_or(Ok(0), str::parse).map_err(|_| bad())?;
        if !image.contains(&addr) {
            pending_calls = None;
            continue;
        }
        match pending_calls.take() {
            // The call's site and inclusive cost (not the site's own).
            Some(calls) => {
                let short = callee.rsplit("::").next().unwrap_or(callee);
                *sites
                    .entry(addr)
                    .or_default()
                    .entry(short.to_string())
                    .or_default() += calls;
            }
            None => {
                cost.instructions += ir;
                *executed.entry(addr).or_default() += ir;
            }
        }
    }
    for (addr, callees) in sites {
        let total: u64 = callees.values().sum();
        let runs = executed.get(&addr).copied().unwrap_or(0);
        for (name, calls) in callees {
            if total > 0 && exports.contains(&name) {
                let share = (runs * calls + total / 2) / total;
                if share > 0 {
                    *cost.kernel_calls.entry(name).or_default() += share;
                }
            }
        }
    }
    Ok(cost)
}

/// One row of `hotpath.json`.
struct Row {
    event: String,
    client_kind: String,
    clients: usize,
    events: usize,
    driver_instructions: f64,
    kernel_calls: f64,
    kernel_calls_by_api: BTreeMap<String, f64>,
    driver_allocations: f64,
    ns_1: Option<f64>,
    ns_2: Option<f64>,
    /// The control workload's 2/1 throughput, measured in the same runs.
    machine: Option<f64>,
    /// CPU ns per event, 1 and 2 threads; lock waits per 1000 events, 1
    /// and 2 threads.
    cpu: Option<(f64, f64)>,
    waits: Option<(f64, f64)>,
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn have_valgrind() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs valgrind with the distribution's package manager when missing.
fn ensure_valgrind() -> Result<(), String> {
    if have_valgrind() {
        return Ok(());
    }
    eprintln!("xtask bench: valgrind is missing; installing it with apt-get");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let apt = |args: &[&str]| {
        let mut c = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let installed = run(&mut apt(&["update"]), "apt-get update").and_then(|()| {
        run(
            &mut apt(&["install", "-y", "--no-install-recommends", "valgrind"]),
            "apt-get install valgrind",
        )
    });
    match installed {
        Ok(()) if have_valgrind() => Ok(()),
        other => Err(format!(
            "valgrind is needed to count instructions and could not be installed ({}); \
             install it (Debian/Ubuntu: `apt-get install valgrind`, as root) and run again",
            other.err().unwrap_or_else(|| "still not found".into())
        )),
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn main(args: &[String]) -> ExitCode {
    let mut quick = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            _ => {
                eprintln!("usage: cargo xtask bench [--quick]");
                return ExitCode::from(2);
            }
        }
    }
    match bench(quick) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(quick: bool) -> Result<(), String> {
    let root = ntsim::build::find_workspace_root()?;
    let driver = crate::build()?;
    run(
        Command::new(cargo()).current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "ntsim",
            "--bin",
            "ntsim-hotpath",
        ]),
        "building ntsim-hotpath",
    )?;
    let workload = root.join("target/release/ntsim-hotpath");
    ensure_valgrind()?;
    let out = root.join("target/bench");
    let dumps = out.join("callgrind");
    let _ = std::fs::remove_dir_all(&dumps);
    std::fs::create_dir_all(&dumps).map_err(|e| format!("{}: {e}", dumps.display()))?;
    let manifest = dumps.join("segments.txt");
    let mut workload_args = vec![
        "--driver".to_string(),
        driver.display().to_string(),
        "--no-timing".into(),
        "--out".into(),
        manifest.display().to_string(),
    ];
    if quick {
        workload_args.push("--quick".into());
    }
    eprintln!("xtask bench: running the workload under callgrind");
    run(
        Command::new("valgrind")
            .args([
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=ntsim_bench_measured",
                "--dump-after=ntsim_bench_measured",
                "--dump-instr=yes",
                "--dump-line=no",
                "--compress-strings=no",
                "--compress-pos=no",
                "--quiet",
            ])
            .arg(format!(
                "--callgrind-out-file={}",
                dumps.join("cg.out").display()
            ))
            .arg(&workload)
            .args(&workload_args),
        "the workload under callgrind",
    )?;
    let counted = read_report(&manifest)?;
    eprintln!("xtask bench: running the workload natively for wall-clock timings");
    let timed_path = out.join("timing.txt");
    let mut timing_args = vec![
        "--driver".to_string(),
        driver.display().to_string(),
        "--out".into(),
        timed_path.display().to_string(),
    ];
    if quick {
        timing_args.push("--quick".into());
    }
    run(
        Command::new(&workload).args(&timing_args),
        "the workload (timings)",
    )?;
    let timed = read_report(&timed_path)?;
    let rows = rows(&counted, &timed, &dumps)?;
    let json = out.join("hotpath.json");
    std::fs::write(&json, to_json(&rows)).map_err(|e| format!("{}: {e}", json.display()))?;
    print_table(&rows, &counted.unhooked);
    println!("\n{}", json.display());
    Ok(())
}

fn read_report(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Report::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn rows(counted: &Report, timed: &Report, dumps: &Path) -> Result<Vec<Row>, String> {
    let image = counted.image_base as u64..(counted.image_base + counted.image_size) as u64;
    let mut rows = Vec::new();
    for (i, s) in counted.segments.iter().enumerate() {
        let path: PathBuf = dumps.join(format!("cg.out.{}", i + 1));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cost = parse_dump(&text, image.clone(), &counted.exports)?;
        let per = |n: u64| n as f64 / s.events as f64;
        let timing = timed.timings.iter().find(|t| {
            t.event == s.event && t.client_kind == s.client_kind && t.clients == s.clients
        });
        rows.push(Row {
            event: s.event.clone(),
            client_kind: s.client_kind.clone(),
            clients: s.clients,
            events: s.events,
            driver_instructions: per(cost.instructions),
            kernel_calls: per(cost.kernel_calls.values().sum()),
            driver_allocations: per(cost
                .kernel_calls
                .iter()
                .filter(|(api, _)| api.starts_with("ExAllocatePool"))
                .map(|(_, n)| n)
                .sum()),
            kernel_calls_by_api: cost
                .kernel_calls
                .iter()
                .map(|(api, n)| (api.clone(), per(*n)))
                .collect(),
            ns_1: timing.map(|t| t.ns_1),
            ns_2: timing.map(|t| t.ns_2),
            machine: timing
                .filter(|t| t.control_2 > 0.0)
                .map(|t| t.control_1 / t.control_2),
            cpu: timing.map(|t| (t.cpu_1, t.cpu_2)),
            waits: timing.map(|t| (t.waits_1, t.waits_2)),
        });
    }
    Ok(rows)
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.1}"))
}

fn to_json(rows: &[Row]) -> String {
    let objects: Vec<String> = rows
        .iter()
        .map(|r| {
            let apis: Vec<String> = r
                .kernel_calls_by_api
                .iter()
                .map(|(api, n)| format!("\"{api}\": {}", num(*n)))
                .collect();
            let ratio = match (r.ns_1, r.ns_2) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "null".into(),
            };
            format!(
                "  {{\"event\": \"{}\", \"client_kind\": \"{}\", \"clients\": {}, \"events\": {}, \
                 \"driver_instructions\": {}, \"kernel_calls\": {}, \"kernel_calls_by_api\": {{{}}}, \
                 \"driver_allocations\": {}, \"ns_per_event_1_thread\": {}, \
                 \"ns_per_event_2_threads\": {}, \"throughput_2_over_1\": {}, \
                 \"machine_2_over_1\": {}, \"cpu_ns_per_event_1_thread\": {}, \
                 \"cpu_ns_per_event_2_threads\": {}, \"lock_waits_per_1000_events_1_thread\": {}, \
                 \"lock_waits_per_1000_events_2_threads\": {}}}",
                r.event,
                r.client_kind,
                r.clients,
                r.events,
                num(r.driver_instructions),
                num(r.kernel_calls),
                apis.join(", "),
                num(r.driver_allocations),
                opt(r.ns_1),
                opt(r.ns_2),
                ratio,
                r.machine.map_or("null".into(), |m| format!("{m:.2}")),
                opt(r.cpu.map(|c| c.0)),
                opt(r.cpu.map(|c| c.1)),
                r.waits.map_or("null".into(), |w| format!("{:.2}", w.0)),
                r.waits.map_or("null".into(), |w| format!("{:.2}", w.1)),
            )
        })
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

fn print_table(rows: &[Row], unhooked: &[String]) {
    println!(
        "{:<16} {:<11} {:>3} {:>9} {:>7} {:>6}  {:>9} {:>9} {:>5} {:>5} {:>7} {:>6}  kernel calls by API",
        "event",
        "client",
        "N",
        "instr/ev",
        "calls",
        "alloc",
        "ns 1 thr",
        "ns 2 thr",
        "2/1",
        "mach",
        "cpu 2/1",
        "waits"
    );
    for r in rows {
        let apis: Vec<String> = r
            .kernel_calls_by_api
            .iter()
            .map(|(api, n)| format!("{api}={}", num(*n)))
            .collect();
        let ratio = match (r.ns_1, r.ns_2) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let ns = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "{:<16} {:<11} {:>3} {:>9} {:>7} {:>6}  {:>9} {:>9} {:>5} {:>5} {:>7} {:>6}  {}",
            r.event,
            r.client_kind,
            r.clients,
            num(r.driver_instructions),
            num(r.kernel_calls),
            num(r.driver_allocations),
            ns(r.ns_1),
            ns(r.ns_2),
            ratio,
            r.machine.map_or("-".into(), |m| format!("{m:.2}")),
            r.cpu
                .filter(|c| c.0 > 0.0)
                .map_or("-".into(), |c| format!("{:.2}", c.1 / c.0)),
            r.waits.map_or("-".into(), |w| format!("{:.1}", w.1)),
            apis.join(" ")
        );
    }
    if !unhooked.is_empty() {
        println!("not hooked by this driver: {}", unhooked.join(", "));
    }
    println!(
        "(wall-clock times are noisy: the median of several runs on a shared machine; \
         \"mach\" is the 2/1 throughput of a loop that shares nothing, measured in the \
         same runs: what the machine gave two threads at the time; \"cpu 2/1\" is CPU time \
         per event with two threads over one thread (1.0: no contention that costs work); \
         \"waits\" is waits for a lock per 1000 events with two threads)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
events: Ir
ob=???
fn=0x0000000000001000
0x1000 3
0x1004 2
0x1008 2
cob=/bin/ntsim-hotpath
cfn=ntsim::kernel::sync::ExAcquireSpinLockShared
calls=5 0x5000
0x1008 40
0x100c 1
cfn=host_invoke
calls=1 0x6000
0x100c 7
0x1010 1
ob=/bin/ntsim-hotpath
fn=ntsim::kernel::sync::ExAcquireSpinLockShared
0x5000 20
cfn=ntsim::kernel::pool::ExAllocatePool2
calls=4 0x7000
0x5004 100
";

    #[test]
    fn instructions_and_kernel_calls_are_those_of_the_image_range() {
        let exports = vec![
            "ExAcquireSpinLockShared".to_string(),
            "ExAllocatePool2".to_string(),
        ];
        let cost = parse_dump(DUMP, 0x1000..0x2000, &exports).unwrap();
        // 3 + 2 + 2 + 1 + 1: the call sites' inclusive costs (40, 7) are
        // not the image's own, nor is the kernel's code at 0x5000.
        assert_eq!(cost.instructions, 9);
        assert_eq!(
            cost.kernel_calls,
            BTreeMap::from([("ExAcquireSpinLockShared".to_string(), 2)]),
            "the site ran twice (calls=5 counts calls made while not collecting); a call from \
             the kernel (ExAllocatePool2) is not the image's; host_invoke is no export"
        );
        assert!(parse_dump("0xzz 1\n", 0..1, &exports).is_err());
    }
}
