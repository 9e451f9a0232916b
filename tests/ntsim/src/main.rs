//! `ntsim`: the simulated Windows kernel as a command.
//!
//! ```text
//! ntsim demo [--driver PATH | --driver-name NAME ...]
//! ntsim run [--driver PATH | --driver-name NAME ...] --object PATH --program NAME [--program NAME ...] [--params NAME=HEX ...]
//!           (--scenario FILE | --builtin | --live SECONDS) [--fail API[:N] ...]
//!           [--ringbuf MAP=TYPE ...] [--json] [--etw]
//! ntsim test [--driver PATH | --driver-name NAME ...] [--junit FILE] FILE...
//! ntsim store --driver PATH
//! ```
//!
//! `demo` runs the sample process monitor and policy, and the Sysmon-style
//! thread and image-load monitors, against the driver (built with cargo
//! when `--driver` is not given) on the demo scenario. `run` loads the
//! drivers (`--driver PATH` and `--driver-name NAME`, each may repeat, in
//! order; without them the scenario's `load-driver NAME` lines, else
//! ntosebpfext, built with cargo: `ntsim::cli::drivers`), attaches the named programs of an eBPF
//! object in order, raises the events (a scenario file in the format of
//! `ntsim::scenario`, the built-in scenario, or the host's process activity
//! for SECONDS), prints each event's verdict and the programs' trace
//! lines, dumps the object's maps, and reports leaks and violations
//! (`--json`: one JSON object a line). `--etw` plays a trace session of the
//! driver's ETW provider (every level and keyword) and prints each event it
//! writes, decoded, one line each on stderr
//! (`ntsim: etw NtosEbpfExtProvider/<Event> level=.. Field=value ..`); with
//! `--json` the events are also JSON objects of type `etw` on stdout.
//! `test` runs test files (`ntsim::cli::testfile`) and reports each
//! expectation that failed. `store` loads the driver and prints the eBPF
//! store it wrote in the form of `reg query HKLM\Software\eBPF\Providers /s`.
//!
//! Exit status: 0 when everything ran and the driver left nothing behind
//! and broke no rule; 1 on a failure or a finding; 2 on a usage error.

use ntsim::cli::drivers::{self, DriverSpec};
use ntsim::demo::{self, Events, RunOptions};
use ntsim::scenario;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage:
  ntsim demo [--driver PATH | --driver-name NAME ...]
      the sample process monitor (tests/bpf/process_test.o: deny_notepad, monitor)
      and Sysmon-style monitors (tests/bpf/sysmon.o: watch_lsass, thread_monitor,
      image_monitor) on the demo scenario; without --driver/--driver-name the
      demo's drivers are built with cargo
  ntsim run [--driver PATH | --driver-name NAME ...] --object PATH
            --program NAME [--program NAME ...] [--params NAME=HEX ...]
            (--scenario FILE | --builtin | --live SECONDS) [--fail API[:N] ...]
            [--ringbuf MAP=TYPE ...] [--json] [--etw]
      attach the named programs in order (--params: a program's attach
      parameters, hex bytes), raise the events, print verdicts,
      trace lines and every map, then the leak and violation report;
      --fail makes call N (default 1) of a fallible kernel API fail
      (allocations: ExAllocatePool2); --ringbuf decodes MAP's records as the
      BTF type TYPE of the object (\"struct event\", a typedef name); --json
      prints one JSON object a line (schema: docs/ntsim.md, JSON output);
      --etw prints the drivers' ETW events (NtosEbpfExtProvider,
      NeteventEbpfExtProvider, every level and keyword) one line each on stderr;
      --driver PATH and --driver-name NAME (a driver of the repository, built
      with cargo) may repeat: the drivers load in that order and unload in
      reverse; without them, the scenario's `load-driver NAME` lines, else
      ntosebpfext
  ntsim test [--driver PATH | --driver-name NAME ...] [--junit FILE] FILE...
      run test files (scenario + object + programs + expect lines), print
      every failed expectation with FILE:LINE, expected and actual; exit 1
      if any failed; --junit writes a JUnit XML report
  ntsim store --driver PATH
      load the driver and print the eBPF store it wrote, as
      `reg query HKLM\\Software\\eBPF\\Providers /s` prints it
  ntsim help
scenario files: see the documentation of ntsim::scenario (one step a line:
  `create NAME image=PATH [cmd=\"TEXT\"] [parent=NAME|PID] [creator=NAME|PID:TID]
     [user=USER] [pid=PID] [tid=TID] [at=SECONDS]`,
  `exit NAME [code=STATUS] [at=SECONDS]`,
  `account NAME domain=DOMAIN sid=S-1-... [logon=LUID]`,
  `thread NAME in=PROCESS [by=PROCESS] [start=ADDRESS] [tid=TID] [at=SECONDS]`,
  `thread-exit NAME [code=STATUS] [at=SECONDS]`,
  `image PROCESS path=PATH base=ADDRESS size=BYTES [at=SECONDS]`,
  `driver path=PATH base=ADDRESS size=BYTES [at=SECONDS]`,
  `load-driver NAME` (before the first step: a driver the scenario needs),
  `test-run PROGRAM [pid=N] [parent=N] [creator=PID:TID] [operation=create|delete]
     [code=STATUS] [sid=S-1-...|user=USER] [cmd=TEXT] [image=PATH] [account=NAME]
     [domain=DOMAIN] [lookup_done=0|1] [data_out=N] [at=SECONDS]`,
  `netevent-provider register|deregister [id=N] [at=SECONDS]`,
  `netevent type=drop|flow|NUMBER [data=HEX] [header=HEX] [provider=N]
     [irql=passive|dispatch] [at=SECONDS]` or `netevent raw=HEX ...`)";

/// The longest `--live` run.
const MAX_LIVE_SECONDS: f64 = 3600.0;

enum Source {
    File(PathBuf),
    Builtin,
    Live(Duration),
}

enum Command {
    Demo {
        drivers: Vec<DriverSpec>,
    },
    Run {
        drivers: Vec<DriverSpec>,
        object: PathBuf,
        programs: Vec<String>,
        attach_params: Vec<(String, Vec<u8>)>,
        source: Source,
        faults: Vec<(String, u64)>,
        ringbuf: Vec<(String, String)>,
        json: bool,
        etw: bool,
    },
    Test {
        drivers: Vec<DriverSpec>,
        junit: Option<PathBuf>,
        files: Vec<PathBuf>,
    },
    Store {
        driver: PathBuf,
    },
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some(command) = args.first() else {
        return Err("no command given".into());
    };
    let mut drivers = Vec::new();
    let mut object = None;
    let mut programs = Vec::new();
    let mut attach_params = Vec::new();
    let mut sources = Vec::new();
    let mut faults = Vec::new();
    let mut ringbuf = Vec::new();
    let mut json = false;
    let mut etw = false;
    let mut junit = None;
    let mut files = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let mut value = |what: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs {what}"))
        };
        match arg.as_str() {
            "--driver" => drivers.push(DriverSpec::Path(PathBuf::from(value("a path")?))),
            "--driver-name" if command != "store" => {
                let name = value("a driver name")?;
                drivers::check_name(&name).map_err(|e| format!("--driver-name {e}"))?;
                drivers.push(DriverSpec::Name(name));
            }
            "--object" if command == "run" => object = Some(PathBuf::from(value("a path")?)),
            "--program" if command == "run" => programs.push(value("a program name")?),
            "--params" if command == "run" => {
                let v = value("NAME=HEX")?;
                let (name, hex) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--params {v}: write NAME=HEX"))?;
                let bytes = ntsim::cli::scenario::parse_hex("--params", hex)?;
                attach_params.push((name.to_string(), bytes));
            }
            "--scenario" if command == "run" => {
                sources.push(Source::File(PathBuf::from(value("a file")?)))
            }
            "--builtin" if command == "run" => sources.push(Source::Builtin),
            "--etw" if command == "run" => etw = true,
            "--fail" if command == "run" => {
                let v = value("API or API:N")?;
                let (api, n) = match v.split_once(':') {
                    Some((api, n)) => (api, n.parse::<u64>().ok().filter(|n| *n >= 1)),
                    None => (v.as_str(), Some(1)),
                };
                let n =
                    n.ok_or_else(|| format!("--fail {v}: N must be a call number (1 or more)"))?;
                faults.push((api.to_string(), n));
            }
            "--live" if command == "run" => {
                let v = value("a number of seconds")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && *s <= MAX_LIVE_SECONDS)
                    .ok_or_else(|| {
                        format!("--live {v}: give a number of seconds, more than 0 and at most {MAX_LIVE_SECONDS}")
                    })?;
                sources.push(Source::Live(Duration::from_secs_f64(secs)));
            }
            "--ringbuf" if command == "run" => {
                let v = value("MAP=TYPE")?;
                let (map, ty) = v
                    .split_once('=')
                    .filter(|(m, t)| !m.is_empty() && !t.trim().is_empty())
                    .ok_or_else(|| format!("--ringbuf {v}: write MAP=TYPE"))?;
                ringbuf.push((map.to_string(), ty.trim().to_string()));
            }
            "--json" if command == "run" => json = true,
            "--junit" if command == "test" => junit = Some(PathBuf::from(value("a file")?)),
            f if command == "test" && !f.starts_with("--") => files.push(PathBuf::from(f)),
            other => return Err(format!("{command}: unexpected argument {other:?}")),
        }
    }
    match command.as_str() {
        "demo" => Ok(Command::Demo { drivers }),
        "run" => {
            let object = object.ok_or("run: --object PATH is required")?;
            if programs.is_empty() {
                return Err("run: at least one --program NAME is required".into());
            }
            if sources.len() != 1 {
                return Err(
                    "run: give exactly one of --scenario FILE, --builtin, --live SECONDS".into(),
                );
            }
            Ok(Command::Run {
                drivers,
                object,
                programs,
                attach_params,
                source: sources.pop().expect("one source"),
                faults,
                ringbuf,
                json,
                etw,
            })
        }
        "test" => {
            if files.is_empty() {
                return Err("test: give at least one test FILE".into());
            }
            Ok(Command::Test {
                drivers,
                junit,
                files,
            })
        }
        "store" => match drivers.as_slice() {
            [DriverSpec::Path(driver)] => Ok(Command::Store {
                driver: driver.clone(),
            }),
            [] => Err("store: --driver PATH is required".into()),
            _ => Err("store: give one --driver PATH".into()),
        },
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn execute(command: Command) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Store { driver } => ntsim::cli::store::run(&driver, &mut out),
        Command::Demo { drivers } => {
            let names: Vec<String> = demo::demo_drivers().into_iter().map(String::from).collect();
            let drivers = ntsim::cli::drivers::resolve(&drivers, &[], &names)?;
            demo::run(&drivers, &mut out)
        }
        Command::Run {
            drivers,
            object,
            programs,
            attach_params,
            source,
            faults,
            ringbuf,
            json,
            etw,
        } => {
            if etw {
                // Each event on stderr as the driver writes it; the run
                // starts the session (and reports the events with --json).
                ntsim::log::set_etw_echo(true);
            }
            let events = match source {
                Source::Builtin => Events::Scenario(scenario::builtin()),
                Source::Live(d) => Events::Live(d),
                Source::File(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read the scenario {}: {e}", path.display()))?;
                    let parsed = scenario::parse(&text)
                        .map_err(|e| format!("scenario {}: {e}", path.display()))?;
                    Events::Scenario(parsed)
                }
            };
            let scenario_drivers = match &events {
                Events::Scenario(s) => s.drivers.clone(),
                Events::Live(_) => Vec::new(),
            };
            let drivers = ntsim::cli::drivers::resolve(&drivers, &[], &scenario_drivers)?;
            demo::run_object(
                &RunOptions {
                    drivers: &drivers,
                    object: &object,
                    programs,
                    attach_params,
                    events,
                    faults,
                    ringbuf,
                    json,
                    etw,
                },
                &mut out,
            )
        }
        Command::Test {
            drivers,
            junit,
            files,
        } => {
            let all_passed =
                ntsim::cli::testfile::run_files(&files, &drivers, junit.as_deref(), &mut out)?;
            if all_passed {
                Ok(())
            } else {
                Err("some test files failed".into())
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ntsim: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ntsim: {e}");
            ExitCode::FAILURE
        }
    }
}
