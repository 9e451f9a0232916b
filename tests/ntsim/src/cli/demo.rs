//! The `ntsim` command's work, as a library: load the driver, attach eBPF
//! programs, raise process events, report what the programs emitted and
//! decided, then check that the driver left nothing behind.
//!
//! - [`run`]: the demo (`cargo xtask demo`, `ntsim demo`): the sample
//!   process monitor and policy of `tests/bpf/process_test.c` and the
//!   Sysmon-style programs of `tests/bpf/sysmon.c` against the demo
//!   scenario ([`crate::cli::scenario::BUILTIN`] and [`DEMO_SCENARIO_EXTRA`]),
//!   one line per event from the monitors' records. The output is the same
//!   on every run.
//! - [`run_object`]: any object, programs and events (`ntsim run`): a
//!   scenario, or the host's live process activity ([`Events::Live`]).
//!
//! Both end with the report of [`Sim::finish`]: `no leaks, no violations`,
//! or an error listing what the driver left behind and which rules it
//! broke.

use crate::cli::decode::Decoder;
use crate::cli::report::{
    self, DriverEnd, DriverStart, EndReport, Event, HelperWatch, JsonSink, MapReport, RecordReport,
    Sink, StartReport, StepReport, TextSink,
};
use crate::cli::scenario::{self, Outcome, Runner, Scenario, Step, TestRun};
use crate::ebpf::core::{Link, LoadedProgram};
use crate::ebpf::maps::map_type;
use crate::ebpf::{store, Object};
use crate::hook::image_load::ImageRecord;
use crate::hook::process::{self as hook, ProcessRecord, RECORD_SIZE};
use crate::hook::thread::{self, ThreadRecord};
use crate::kernel::status::{self, nt_success};
use crate::kernel::{io, log, time};
use crate::Sim;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The programs the demo attaches, in order: the policy first, so that a
/// creation it denies never reaches the monitor.
pub const DEMO_PROGRAMS: [&str; 2] = ["deny_notepad", "monitor"];

/// Where the events of [`run_object`] come from.
#[derive(Clone, Debug)]
pub enum Events {
    Scenario(Scenario),
    /// The host's process activity for this long (Linux: `/proc`). Every
    /// process running at the start is mirrored into the simulated process
    /// table before the programs attach; processes that start afterwards
    /// are created, those that end are exited.
    Live(Duration),
}

/// What [`run_object`] loads and feeds.
#[derive(Clone, Debug)]
pub struct RunOptions<'a> {
    /// The driver images, loaded in this order (each its own service,
    /// named by its file name) and unloaded in the reverse order.
    pub drivers: &'a [PathBuf],
    pub object: &'a Path,
    /// Programs of the object to attach, in this order.
    pub programs: Vec<String>,
    /// (program, bytes): attach parameters (`--params NAME=HEX`).
    pub attach_params: Vec<(String, Vec<u8>)>,
    pub events: Events,
    /// Fault injection: fail call number N (1-based) of each API
    /// ([`crate::kernel::fault::fail_nth`]; allocations are `ExAllocatePool2`),
    /// planned before the driver loads.
    pub faults: Vec<(String, u64)>,
    /// `--ringbuf MAP=TYPE`: decode MAP's records as the BTF type TYPE.
    pub ringbuf: Vec<(String, String)>,
    /// One JSON object a line instead of text.
    pub json: bool,
    /// A trace session of the drivers' ETW providers
    /// ([`DRIVER_ETW_PROVIDERS`], every level and keyword) from before the
    /// first driver loads; their events are reported ([`Event::Etw`]) with
    /// the step that caused them.
    pub etw: bool,
}

/// `NtosEbpfExtProvider`, ntosebpfext's ETW provider.
pub const DRIVER_ETW_PROVIDER: crate::kernel::types::GUID = crate::hook::ETW_PROVIDER;

/// The ETW providers of the repository's drivers, which `--etw` traces:
/// ntosebpfext's `NtosEbpfExtProvider` and neteventebpfext's
/// `NeteventEbpfExtProvider`. Enabling a provider no loaded driver
/// registers is harmless (as a `wpr` profile naming it).
pub const DRIVER_ETW_PROVIDERS: [crate::kernel::types::GUID; 2] = [
    crate::hook::ETW_PROVIDER,
    crate::hook::netevent::ETW_PROVIDER,
];

/// `TRACE_LEVEL_VERBOSE`: the session's level (every event).
const ETW_LEVEL_VERBOSE: u8 = 5;

pub use crate::cli::report::{
    describe_image_record, describe_record, describe_thread_record, format_filetime, shorten,
    verdict, MAX_COMMAND_LINE_SHOWN,
};

fn w(out: &mut dyn Write, line: std::fmt::Arguments<'_>) -> Result<(), String> {
    writeln!(out, "{line}").map_err(|e| format!("cannot write the output: {e}"))
}

macro_rules! say {
    ($out:expr, $($arg:tt)*) => { w($out, format_args!($($arg)*)) };
}

/// The loaded drivers, object and attached programs. Field order is drop
/// order: links, programs, object, then the machine.
pub(crate) struct Session {
    links: Vec<Link>,
    programs: Vec<(String, LoadedProgram)>,
    object: Object,
    pub(crate) decoder: Decoder,
    pub(crate) start: StartReport,
    faults: Vec<(String, u64)>,
    /// Whether the drivers' ETW events are reported.
    etw: bool,
    /// The drivers' DbgPrintEx lines since their DriverEntry, by image name
    /// ([`crate::sim::DriverResult::image_name`]), with the step.
    dbgprint: std::cell::RefCell<Vec<(String, Option<usize>, String)>>,
    sim: Sim,
}

fn check_file(what: &str, path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else if path.exists() {
        Err(format!("{what} {} is not a file", path.display()))
    } else {
        Err(format!("{what} {} does not exist", path.display()))
    }
}

/// What [`Session::start`] loads.
pub(crate) struct Setup<'a> {
    /// Loaded in this order, unloaded in the reverse order.
    pub drivers: &'a [PathBuf],
    pub object: &'a Path,
    pub programs: &'a [String],
    /// (program, bytes): the attach parameters of a program (none: empty).
    pub attach_params: &'a [(String, Vec<u8>)],
    pub faults: &'a [(String, u64)],
    /// (map, BTF type name) of ring buffers whose records to decode.
    pub ringbuf: &'a [(String, String)],
    /// Trace the driver's ETW provider and report its events.
    pub etw: bool,
}

impl Session {
    /// Loads the drivers in order and the object, loads every program,
    /// runs `before_attach`, then attaches the programs in order. When a
    /// driver fails to load, the drivers loaded before it are unloaded
    /// (last first) and the error names the one that failed, the ones
    /// unloaded and anything they left behind.
    pub(crate) fn start(
        setup: &Setup<'_>,
        before_attach: &mut dyn FnMut(),
    ) -> Result<Session, String> {
        let (object_path, names) = (setup.object, setup.programs);
        if setup.drivers.is_empty() {
            return Err("no driver to load (give --driver PATH or --driver-name NAME)".into());
        }
        for driver in setup.drivers {
            check_file("driver image", driver)?;
        }
        check_file("eBPF object", object_path)?;
        if names.is_empty() {
            return Err("no program to attach (give --program NAME)".into());
        }
        let bytes = std::fs::read(object_path)
            .map_err(|e| format!("cannot read {}: {e}", object_path.display()))?;
        let mut sim = Sim::new();
        // Times the driver reads are the same on every run.
        time::set_deterministic(scenario::SCENARIO_EPOCH, 1);
        for (api, n) in setup.faults {
            crate::kernel::fault::fail_nth(api, *n);
        }
        if setup.etw {
            // A session running before the drivers load, as `wpr -start`
            // before `sc start`: the loads are traced too.
            // This machine only: later machines in the process are not
            // traced.
            for provider in &DRIVER_ETW_PROVIDERS {
                log::etw_enable(provider, ETW_LEVEL_VERBOSE, u64::MAX, 0);
            }
        }
        for driver in setup.drivers {
            let failure = match sim.load_driver(driver) {
                Ok(status) if nt_success(status) => continue,
                Ok(status) => format!(
                    "the driver {} failed to load: DriverEntry returned {}",
                    driver.display(),
                    status::describe(status)
                ),
                Err(e) => format!("cannot load the driver {}: {e}", driver.display()),
            };
            return Err(abandon(sim, failure));
        }
        let dbg = log::take_dbg_messages();
        let drivers = sim
            .driver_results()
            .iter()
            .map(|d| DriverStart {
                name: file_name(&d.path),
                driver_entry: d.driver_entry,
                dbgprint: dbg
                    .iter()
                    .filter(|m| m.image.as_deref() == Some(d.image_name().as_str()))
                    .map(|m| m.text.trim_end().to_string())
                    .collect(),
            })
            .collect::<Vec<_>>();
        // Section names resolve through the store the driver just wrote,
        // as ebpfapi.dll resolves them.
        let object = Object::load(&bytes, &store::section_map())
            .map_err(|e| format!("cannot load {}: {e}", object_path.display()))?;
        for name in names {
            if object.program(name).is_none() {
                let have: Vec<&str> = object.programs.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "{} has no program named {name:?} (it has: {})",
                    object_path.display(),
                    have.join(", ")
                ));
            }
        }
        let decoder = Decoder::new(&bytes, &object, setup.ringbuf)
            .map_err(|e| format!("{}: {e}", object_path.display()))?;
        let mut session = Session {
            links: Vec::new(),
            programs: Vec::new(),
            object,
            decoder,
            start: StartReport {
                driver: drivers[0].name.clone(),
                driver_entry: drivers[0].driver_entry,
                drivers,
                object: file_name(object_path),
                programs: names.to_vec(),
                faults: setup.faults.to_vec(),
                steps: None,
            },
            faults: setup.faults.to_vec(),
            etw: setup.etw,
            dbgprint: Default::default(),
            sim,
        };
        for name in names {
            let program = session.object.program(name).expect("checked above").clone();
            let loaded = LoadedProgram::load(program)
                .map_err(|e| format!("loading program {name:?} into the eBPF core failed: {e}"))?;
            session.programs.push((name.clone(), loaded));
        }
        before_attach();
        for (name, loaded) in &session.programs {
            let attach_type = loaded.program().attach_type.unwrap_or(hook::ATTACH_TYPE);
            let link = loaded
                .attach(attach_type, attach_params(setup.attach_params, name), 0)
                .map_err(|e| format!("attaching program {name:?} failed: {e}"))?;
            session.links.push(link);
        }
        Ok(session)
    }

    /// A `test-run` step of the session's programs ([`run_test_run`]).
    fn test_run(&self, t: &TestRun) -> Result<Outcome, String> {
        let programs: Vec<(&str, &LoadedProgram)> =
            self.programs.iter().map(|(n, p)| (n.as_str(), p)).collect();
        run_test_run(t, &programs)
    }

    /// The driver's ETW events the session recorded since the last call
    /// (none unless the session traces).
    fn etw_events(&self, step: Option<usize>) -> Vec<Event> {
        if !self.etw {
            return Vec::new();
        }
        take_driver_etw(step)
    }

    /// The programs' trace_printk lines and errors since the last call.
    fn program_output(&self, step: Option<usize>) -> Vec<Event> {
        let mut events = Vec::new();
        for (name, p) in &self.programs {
            for line in p.take_trace() {
                events.push(Event::Trace {
                    step,
                    program: name.clone(),
                    text: line.trim_end().to_string(),
                });
            }
            for e in p.take_errors() {
                events.push(Event::ProgramError {
                    step,
                    program: name.clone(),
                    text: e.to_string(),
                });
            }
        }
        events
    }

    /// The ring-buffer and perf records written since the last call
    /// (taken from the maps), numbered per map.
    fn records(&self, step: Option<usize>, counts: &mut HashMap<String, usize>) -> Vec<Event> {
        let mut events = Vec::new();
        for map in &self.object.maps {
            let t = map.def().map_type;
            let records: Vec<(Option<u32>, Vec<u8>)> = match t {
                map_type::RINGBUF => map.drain_ring().into_iter().map(|r| (None, r)).collect(),
                map_type::PERF_EVENT_ARRAY => map
                    .drain_perf()
                    .into_iter()
                    .map(|r| (Some(r.cpu), r.data))
                    .collect(),
                _ => continue,
            };
            for (cpu, data) in records {
                let n = counts.entry(map.name().to_string()).or_default();
                events.push(Event::Record(RecordReport {
                    step,
                    map: map.name().to_string(),
                    map_type: t,
                    index: *n,
                    cpu,
                    data,
                }));
                *n += 1;
            }
        }
        events
    }

    /// Everything one step caused, after the step's own event.
    fn after_step(
        &self,
        report: StepReport,
        counts: &mut HashMap<String, usize>,
        sink: &mut dyn Sink,
    ) -> Result<(), String> {
        let index = Some(report.index);
        sink.emit(&Event::Step(report.clone()), &self.decoder)?;
        for e in self.records(index, counts) {
            sink.emit(&e, &self.decoder)?;
        }
        for e in self.program_output(index) {
            sink.emit(&e, &self.decoder)?;
        }
        for e in self.etw_events(index) {
            sink.emit(&e, &self.decoder)?;
        }
        self.take_dbgprint(index);
        sink.emit(&Event::Verdict(report), &self.decoder)
    }

    /// Keeps the drivers' DbgPrintEx lines since the last call, with the
    /// step (None: outside any step).
    fn take_dbgprint(&self, step: Option<usize>) {
        let mut kept = self.dbgprint.borrow_mut();
        for m in log::take_dbg_messages() {
            if let Some(image) = m.image {
                kept.push((image, step, m.text.trim_end().to_string()));
            }
        }
    }

    /// Detaches, unloads the programs and the drivers (last loaded first),
    /// and reports what [`Sim::finish_report`] found, per driver where it
    /// can tell, with the drivers' ETW events from the detach and unload
    /// (when the session traces).
    fn end_report(self) -> (EndReport, Vec<Event>) {
        self.take_dbgprint(None);
        let Session {
            links,
            programs,
            object,
            faults,
            etw,
            dbgprint,
            mut sim,
            ..
        } = self;
        let names: Vec<String> = programs.iter().map(|(n, _)| n.clone()).collect();
        drop(links);
        // The driver removes its notify routine on a system worker thread.
        io::wait_idle();
        drop(programs);
        let unloaded = sim.unload_drivers();
        drop(object);
        let etw_events = if etw {
            take_driver_etw(None)
        } else {
            Vec::new()
        };
        let fired = crate::kernel::fault::fired();
        let unfired = faults
            .iter()
            .filter(|(api, n)| !fired.iter().any(|(a, k)| a == api && k == n))
            .cloned()
            .collect();
        // Lines printed during the unloads.
        let mut dbgprint = dbgprint.into_inner();
        for m in log::take_dbg_messages() {
            if let Some(image) = m.image {
                dbgprint.push((image, None, m.text.trim_end().to_string()));
            }
        }
        let unload_error = unloaded.iter().find_map(|(_, r)| r.clone().err());
        let finish = sim.finish_report();
        let mut unloaded: Vec<&crate::sim::DriverResult> = finish
            .drivers
            .iter()
            .filter(|d| d.unload_position.is_some())
            .collect();
        unloaded.sort_by_key(|d| d.unload_position);
        let drivers = unloaded
            .into_iter()
            .map(|d| {
                let image = d.image_name();
                DriverEnd {
                    name: file_name(&d.path),
                    unload_error: d.unload.clone().and_then(Result::err),
                    dbgprint: dbgprint
                        .iter()
                        .filter(|(i, _, _)| *i == image)
                        .map(|(_, step, text)| (*step, text.clone()))
                        .collect(),
                    findings: d.findings(),
                }
            })
            .collect();
        let report = EndReport {
            programs: names,
            unload_error,
            drivers,
            unfired,
            findings: finish.findings,
        };
        (report, etw_events)
    }

    /// [`Session::end_report`] printed as text; Err lists the findings.
    fn end(self, out: &mut dyn Write) -> Result<(), String> {
        let (report, _) = self.end_report();
        report::end_text(out, &report)?;
        findings_result(&report)
    }

    /// The maps, then the end report, through `sink`. Returns the report
    /// and the object's decoder (which outlives the machine: expectations
    /// decode with it after the driver is gone).
    pub(crate) fn finish(mut self, sink: &mut dyn Sink) -> Result<(EndReport, Decoder), String> {
        for map in &self.object.maps {
            sink.emit(&Event::Map(MapReport::take(map)), &self.decoder)?;
        }
        let decoder = std::mem::take(&mut self.decoder);
        let (report, etw) = self.end_report();
        for e in etw {
            sink.emit(&e, &decoder)?;
        }
        sink.emit(&Event::End(report.clone()), &Decoder::default())?;
        Ok((report, decoder))
    }
}

/// Takes the ETW events the driver's provider wrote to an enabled session
/// since the last take, as [`Event::Etw`]s of `step`.
fn take_driver_etw(step: Option<usize>) -> Vec<Event> {
    log::take_etw_events()
        .into_iter()
        .filter(|e| e.enabled && DRIVER_ETW_PROVIDERS.contains(&e.provider))
        .map(|event| Event::Etw {
            step,
            event: Box::new(event),
        })
        .collect()
}

/// The error of a run whose driver failed to load: `failure`, then the
/// drivers loaded before it, unloaded last first, and what
/// [`Sim::finish_report`] found.
fn abandon(sim: Sim, failure: String) -> String {
    let finish = sim.finish_report();
    let mut message = failure;
    let mut drivers: Vec<&crate::sim::DriverResult> = finish
        .drivers
        .iter()
        .filter(|d| d.unload_position.is_some())
        .collect();
    drivers.sort_by_key(|d| d.unload_position);
    let unloaded: Vec<String> = drivers
        .into_iter()
        .filter_map(|d| {
            let result = d.unload.as_ref()?;
            Some(match result {
                Ok(()) => file_name(&d.path),
                Err(e) => format!("{} (unload failed: {e})", file_name(&d.path)),
            })
        })
        .collect();
    if !unloaded.is_empty() {
        message.push_str(&format!(
            "; unloaded the driver(s) loaded before it, last first: {}",
            unloaded.join(", ")
        ));
    }
    if !finish.findings.is_empty() {
        message.push_str(&format!(
            "\n{} finding(s) (leaks or violations):\n{}",
            finish.findings.len(),
            finish.findings.join("\n")
        ));
    }
    message
}

/// Err listing the findings of a run, if any.
pub(crate) fn findings_result(report: &EndReport) -> Result<(), String> {
    if report.findings.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} finding(s) (leaks or violations):\n{}",
            report.findings.len(),
            report.findings.join("\n")
        ))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// The Sysmon-style programs of `tests/bpf/sysmon.c` the demo attaches
/// beside the process monitor, in order.
pub const SYSMON_PROGRAMS: [&str; 3] = ["watch_lsass", "thread_monitor", "image_monitor"];

/// The demo's scenario: the built-in one, then an injector opening a remote
/// thread in lsass.exe, a local thread, a DLL and a driver load.
pub const DEMO_SCENARIO_EXTRA: &str = r#"
create wininit image=C:\Windows\System32\wininit.exe cmd="wininit.exe" parent=4 user=SYSTEM
create lsass image=C:\Windows\System32\lsass.exe cmd="C:\Windows\system32\lsass.exe" parent=wininit user=SYSTEM
create mimikatz image=C:\Users\tester\Downloads\mimikatz.exe cmd="mimikatz.exe sekurlsa::logonpasswords" parent=explorer
thread worker in=explorer start=0x7ff6abcd1000
thread inject in=lsass by=mimikatz start=0x7ffb12340000
image mimikatz path=\Device\HarddiskVolume3\Windows\System32\vaultcli.dll base=0x7ffb20000000 size=0x5a000
driver path=\SystemRoot\System32\drivers\mimidrv.sys base=0xfffff80612340000 size=0x9000
thread-exit inject code=0
"#;

/// The demo's scenario, parsed.
pub fn demo_scenario() -> Scenario {
    scenario::parse(&format!("{}{}", scenario::BUILTIN, DEMO_SCENARIO_EXTRA))
        .expect("the demo scenario parses")
}

/// A further part of the demo, after ntosebpfext's: a repository driver
/// and a test file (the `ntsim test` format: object, programs, scenario,
/// expectations) that exercises it. Adding a driver to the demo is one
/// [`DEMO_PARTS`] entry and its test file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoPart {
    /// The driver the part needs (one of [`crate::build::DRIVERS`]); the
    /// demo loads it after ntosebpfext.
    pub driver: &'static str,
    /// The test file, relative to the workspace root (or absolute).
    pub test_file: &'static str,
    /// What the part shows, for its heading.
    pub title: &'static str,
}

/// The demo's parts after ntosebpfext's, in order.
pub const DEMO_PARTS: &[DemoPart] = &[DemoPart {
    driver: "neteventebpfext",
    test_file: "tests/bpf/netevent_monitor.ntsim",
    title:
        "neteventebpfext: every network event of two simulated PktMon providers to a ring buffer",
}];

/// The drivers the demo loads, in load order: ntosebpfext, then each
/// [`DEMO_PARTS`] driver (once).
pub fn demo_drivers() -> Vec<&'static str> {
    let mut names = vec![crate::build::NTOSEBPFEXT];
    for part in DEMO_PARTS {
        if !names.contains(&part.driver) {
            names.push(part.driver);
        }
    }
    names
}

/// The demo: the driver images `drivers` loaded in this order in a fresh
/// simulated machine (ntosebpfext first; [`demo_drivers`] are the ones it
/// needs), the sample programs `deny_notepad` then `monitor` attached to
/// the process hook, and the Sysmon-style programs of `tests/bpf/sysmon.c`
/// to the process, thread and image-load hooks; the demo scenario raised,
/// one line per event each program reported; then each [`DEMO_PARTS`] part
/// whose driver is loaded ([`run_part`]); then detach, unload (last driver
/// first) and the leak and violation report. Err: setup failures, a part's
/// expectation that failed, or the findings.
pub fn run(drivers: &[PathBuf], out: &mut dyn Write) -> Result<(), String> {
    let object_path = hook::sample_object_path();
    let names: Vec<String> = DEMO_PROGRAMS.iter().map(|s| s.to_string()).collect();
    let scenario = demo_scenario();
    say!(
        out,
        "ntsim demo: the ntosebpfext driver with a sample process monitor and policy, \
         and Sysmon-style thread and image-load monitors"
    )?;
    let session = Session::start(
        &Setup {
            drivers,
            object: &object_path,
            programs: &names,
            attach_params: &[],
            faults: &[],
            ringbuf: &[],
            etw: false,
        },
        &mut || {},
    )?;
    let decoder = Decoder::default();
    TextSink(out).emit(&Event::Start(session.start.clone()), &decoder)?;
    let sysmon_path = thread::sample_object_path();
    let bytes = std::fs::read(&sysmon_path)
        .map_err(|e| format!("cannot read {}: {e}", sysmon_path.display()))?;
    // Through the store the driver wrote, as ebpfapi.dll resolves them.
    let sysmon = Object::load(&bytes, &store::section_map())
        .map_err(|e| format!("cannot load {}: {e}", sysmon_path.display()))?;
    let mut sysmon_programs = Vec::new();
    let mut sysmon_links = Vec::new();
    for name in SYSMON_PROGRAMS {
        let program = sysmon
            .program(name)
            .ok_or_else(|| format!("sysmon.o has no program {name}"))?
            .clone();
        let attach_type = program
            .attach_type
            .ok_or_else(|| format!("{name} has no attach type"))?;
        let loaded = LoadedProgram::load(program)
            .map_err(|e| format!("loading program {name:?} failed: {e}"))?;
        let link = loaded
            .attach(attach_type, &[], 0)
            .map_err(|e| format!("attaching program {name:?} failed: {e}"))?;
        sysmon_programs.push(loaded);
        sysmon_links.push(link);
    }
    say!(
        out,
        "object {}: attached {} (in this order)",
        file_name(&sysmon_path),
        SYSMON_PROGRAMS.join(", ")
    )?;
    say!(
        out,
        "events ({} steps of the demo scenario):",
        scenario.steps.len()
    )?;
    let mut runner = Runner::new(&scenario);
    let map = |object: &Object, name: &str| {
        object
            .map(name)
            .cloned()
            .ok_or_else(|| format!("no `{name}` map"))
    };
    let events = map(&session.object, "events")?;
    let thread_events = map(&sysmon, "threads")?;
    let image_events = map(&sysmon, "images")?;
    let watch = HelperWatch::start();
    for (i, step) in scenario.steps.iter().enumerate() {
        let outcome = runner.try_step(step).map_err(|e| format!("scenario {e}"))?;
        let records = events.drain_ring();
        let threads = thread_events.drain_ring();
        let images = image_events.drain_ring();
        // A driver step's name is its path; its lines say `[driver]`.
        let name = match step {
            Step::Image(i) if i.process.is_none() => "driver",
            _ => step.name(),
        };
        let report = StepReport {
            index: i + 1,
            line: Some(step.line()),
            keyword: step.keyword(),
            name: name.to_string(),
            helpers: watch.take(),
            outcome,
        };
        if records.is_empty() && threads.is_empty() && images.is_empty() {
            // The monitor did not run: the policy, attached before it,
            // denied the creation.
            let note = if report.verdict().is_none_or(nt_success) {
                " (the monitors reported nothing)"
            } else {
                " (the monitor did not run: the policy before it denied the creation)"
            };
            say!(out, "{}{note}", report::step_text(&report))?;
        }
        let mut process_lines = Vec::new();
        for r in &records {
            let record = ProcessRecord::parse(r).ok_or_else(|| {
                format!("a monitor record of {} bytes, not {RECORD_SIZE}", r.len())
            })?;
            let decision = match report.verdict() {
                Some(status) => verdict(status),
                None => "exit (no verdict)".into(),
            };
            process_lines.push(format!(
                "[{name}] {} | {decision}",
                describe_record(&record)
            ));
        }
        let mut thread_lines = Vec::new();
        for r in &threads {
            let record = ThreadRecord::parse(r)
                .ok_or_else(|| format!("a thread record of {} bytes", r.len()))?;
            thread_lines.push(format!("[{name}] {}", describe_thread_record(&record)));
        }
        // In the order the kernel raised them: a process's threads end
        // before it does; a creation comes before its first thread.
        if matches!(step, Step::Exit(_)) {
            std::mem::swap(&mut process_lines, &mut thread_lines);
        }
        for line in process_lines.iter().chain(&thread_lines) {
            say!(out, "{line}")?;
        }
        for r in &images {
            let record = ImageRecord::parse(r)
                .ok_or_else(|| format!("an image record of {} bytes", r.len()))?;
            say!(out, "[{name}] {}", describe_image_record(&record))?;
        }
        for e in session.program_output(Some(i + 1)) {
            TextSink(out).emit(&e, &decoder)?;
        }
    }
    drop(watch);
    drop(sysmon_links);
    io::wait_idle();
    drop(sysmon_programs);
    drop(sysmon);
    let loaded: Vec<String> = drivers
        .iter()
        .map(|d| crate::kernel::loader::service_name(d))
        .collect();
    for part in DEMO_PARTS {
        if loaded.iter().any(|s| s.eq_ignore_ascii_case(part.driver)) {
            run_part(part, out)?;
        } else {
            say!(
                out,
                "part {:?} not run: its driver {} is not loaded",
                part.title,
                part.driver
            )?;
        }
    }
    session.end(out)
}

/// A `test-run` step: `bpf_prog_test_run` of the attached program of that
/// name among `programs`, with the step's input in the format of the
/// program's type. A run the core or the driver refuses is reported (its
/// error is the outcome); Err only when no attached program has that name
/// or the step's input does not fit its program type.
fn run_test_run(t: &TestRun, programs: &[(&str, &LoadedProgram)]) -> Result<Outcome, String> {
    let Some((_, program)) = programs.iter().find(|(n, _)| *n == t.program) else {
        let have: Vec<&str> = programs.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "scenario line {}: test-run {}: not an attached program (attached: {})",
            t.line,
            t.program,
            have.join(", ")
        ));
    };
    let program_type = program
        .program()
        .program_type
        .expect("a loaded program has a program type");
    let input = t.input_for(program_type)?;
    let (ctx_in, data_in) = input.buffers();
    let output = program
        .test_run(
            &data_in,
            &ctx_in,
            t.data_out.unwrap_or(data_in.len()),
            ctx_in.len(),
        )
        .map_err(|e| e.to_string());
    Ok(Outcome::TestRun {
        program: t.program.clone(),
        input,
        output,
    })
}

/// One [`DemoPart`] in the running demo's machine: its test file's object
/// loaded (through the store the drivers wrote), its programs attached in
/// order, its scenario raised with every step, record and trace line
/// printed, its maps printed, then its expectations checked. Err: the part
/// could not run, or an expectation failed.
pub fn run_part(part: &DemoPart, out: &mut dyn Write) -> Result<(), String> {
    let root = crate::build::find_workspace_root()?;
    let file = crate::cli::testfile::TestFile::load(&root.join(part.test_file))?;
    let bytes = std::fs::read(&file.object)
        .map_err(|e| format!("cannot read {}: {e}", file.object.display()))?;
    let object = Object::load(&bytes, &store::section_map())
        .map_err(|e| format!("cannot load {}: {e}", file.object.display()))?;
    let decoder = Decoder::new(&bytes, &object, &file.ringbuf)
        .map_err(|e| format!("{}: {e}", file.object.display()))?;
    say!(
        out,
        "{} (driver {}, {}):",
        part.title,
        part.driver,
        part.test_file
    )?;
    let mut programs = Vec::new();
    for name in &file.programs {
        let program = object
            .program(name)
            .ok_or_else(|| format!("{} has no program {name}", file.object.display()))?
            .clone();
        let attach_type = program
            .attach_type
            .ok_or_else(|| format!("{name} has no attach type"))?;
        let loaded = LoadedProgram::load(program)
            .map_err(|e| format!("loading program {name:?} failed: {e}"))?;
        programs.push((name.clone(), loaded, attach_type));
    }
    let mut links = Vec::new();
    for (name, loaded, attach_type) in &programs {
        links.push(
            loaded
                .attach(*attach_type, attach_params(&file.attach_params, name), 0)
                .map_err(|e| format!("attaching program {name:?} failed: {e}"))?,
        );
    }
    say!(
        out,
        "object {}: attached {} (in this order)",
        file_name(&file.object),
        file.programs.join(", ")
    )?;
    let mut events = report::Collect::default();
    let mut runner = Runner::new(&file.scenario);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let watch = HelperWatch::start();
    let attached: Vec<(&str, &LoadedProgram)> =
        programs.iter().map(|(n, p, _)| (n.as_str(), p)).collect();
    for (i, step) in file.scenario.steps.iter().enumerate() {
        let outcome = match step {
            Step::TestRun(t) => run_test_run(t, &attached)?,
            _ => runner.try_step(step).map_err(|e| format!("scenario {e}"))?,
        };
        let index = Some(i + 1);
        let mut caused = vec![Event::Step(StepReport {
            index: i + 1,
            line: Some(step.line()),
            keyword: step.keyword(),
            name: step.name().to_string(),
            helpers: watch.take(),
            outcome,
        })];
        for map in &object.maps {
            if map.def().map_type != map_type::RINGBUF {
                continue;
            }
            for data in map.drain_ring() {
                let n = counts.entry(map.name().to_string()).or_default();
                caused.push(Event::Record(RecordReport {
                    step: index,
                    map: map.name().to_string(),
                    map_type: map_type::RINGBUF,
                    index: *n,
                    cpu: None,
                    data,
                }));
                *n += 1;
            }
        }
        for (name, p, _) in &programs {
            for line in p.take_trace() {
                caused.push(Event::Trace {
                    step: index,
                    program: name.clone(),
                    text: line.trim_end().to_string(),
                });
            }
        }
        for e in caused {
            TextSink(out).emit(&e, &decoder)?;
            events.emit(&e, &decoder)?;
        }
    }
    drop(watch);
    drop(links);
    io::wait_idle();
    for map in &object.maps {
        let e = Event::Map(MapReport::take(map));
        TextSink(out).emit(&e, &decoder)?;
        events.emit(&e, &decoder)?;
    }
    let facts = crate::cli::expect::RunFacts::new(&events.0);
    let failed: Vec<String> = file
        .expectations
        .iter()
        .filter_map(|e| {
            e.check(&facts, &decoder).err().map(|f| {
                format!(
                    "{}:{}: expect {}\n    expected: {}\n    actual:   {}",
                    part.test_file, e.line, e.text, f.expected, f.actual
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "{} expectation(s) of {} failed:\n{}",
            failed.len(),
            part.test_file,
            failed.join("\n")
        ));
    }
    say!(
        out,
        "{}: {} expectation(s) held",
        part.test_file,
        file.expectations.len()
    )
}

/// `ntsim run`: `options.driver` in a fresh machine, the named programs of
/// `options.object` attached in order, the events raised, each step
/// followed by the records, trace lines and errors it caused, then every
/// map of the object and the leak and violation report; as text, or one
/// JSON object a line with `options.json`.
pub fn run_object(options: &RunOptions<'_>, out: &mut dyn Write) -> Result<(), String> {
    if options.json {
        run_with(options, &mut JsonSink(out))
    } else {
        run_with(options, &mut TextSink(out))
    }
}

/// The attach parameters given for program `name` (the last given wins),
/// or none.
pub fn attach_params<'a>(params: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    params
        .iter()
        .rev()
        .find(|(program, _)| program == name)
        .map_or(&[], |(_, bytes)| bytes.as_slice())
}

/// [`run_object`] into any [`Sink`].
pub fn run_with(options: &RunOptions<'_>, sink: &mut dyn Sink) -> Result<(), String> {
    let setup = Setup {
        drivers: options.drivers,
        object: options.object,
        programs: &options.programs,
        attach_params: &options.attach_params,
        faults: &options.faults,
        ringbuf: &options.ringbuf,
        etw: options.etw,
    };
    match &options.events {
        Events::Scenario(scenario) => {
            let (report, _) = run_scenario(&setup, scenario, sink)?;
            findings_result(&report)
        }
        Events::Live(duration) => run_live(&setup, *duration, sink),
    }
}

/// Runs a scenario in a fresh session, every event into `sink`. Err: a
/// setup failure or a step the scenario asked for that cannot happen;
/// findings are in the returned report, returned with the object's decoder.
///
/// A step that needs the session rather than the kernel (a `test-run
/// PROGRAM` step calls [`LoadedProgram::test_run`] of one of the session's
/// programs) is matched here before the [`Runner`], and reported as a
/// [`StepReport`] like the others.
pub(crate) fn run_scenario(
    setup: &Setup<'_>,
    scenario: &Scenario,
    sink: &mut dyn Sink,
) -> Result<(EndReport, Decoder), String> {
    let mut session = Session::start(setup, &mut || {})?;
    session.start.steps = Some(scenario.steps.len());
    sink.emit(&Event::Start(session.start.clone()), &session.decoder)?;
    for e in session.etw_events(None) {
        sink.emit(&e, &session.decoder)?;
    }
    let mut runner = Runner::new(scenario);
    let mut counts = HashMap::new();
    let watch = HelperWatch::start();
    for (i, step) in scenario.steps.iter().enumerate() {
        let outcome = match step {
            Step::TestRun(t) => session.test_run(t)?,
            _ => runner.try_step(step).map_err(|e| format!("scenario {e}"))?,
        };
        let report = StepReport {
            index: i + 1,
            line: Some(step.line()),
            keyword: step.keyword(),
            name: step.name().to_string(),
            helpers: watch.take(),
            outcome,
        };
        session.after_step(report, &mut counts, sink)?;
    }
    drop(watch);
    session.finish(sink)
}

#[cfg(target_os = "linux")]
fn run_live(setup: &Setup<'_>, duration: Duration, sink: &mut dyn Sink) -> Result<(), String> {
    let mut host = None;
    let mut mirror_error = None;
    let session = Session::start(setup, &mut || match scenario::live::Host::mirror() {
        Ok(h) => host = Some(h),
        Err(e) => mirror_error = Some(e),
    })?;
    let mut host = match (host, mirror_error) {
        (Some(h), _) => h,
        (None, e) => return Err(e.unwrap_or_else(|| "mirroring /proc failed".into())),
    };
    sink.emit(&Event::Start(session.start.clone()), &session.decoder)?;
    for e in session.etw_events(None) {
        sink.emit(&e, &session.decoder)?;
    }
    // The host's processes start and end at host times.
    time::set_real();
    sink.note(&format!(
        "watching the host's processes for {:.1} s ({} running now, mirrored before the programs attached)",
        duration.as_secs_f64(),
        host.len()
    ))?;
    let deadline = std::time::Instant::now() + duration;
    let mut count = 0usize;
    let mut counts = HashMap::new();
    let watch = HelperWatch::start();
    while std::time::Instant::now() < deadline {
        for outcome in host.poll() {
            count += 1;
            let (keyword, name) = match &outcome {
                Outcome::Created { name, .. } => ("create", name.clone()),
                Outcome::Exited { name, .. } | Outcome::NotRunning { name, .. } => {
                    ("exit", name.clone())
                }
                Outcome::TestRun { program, .. } => ("test-run", program.clone()),
                Outcome::ThreadCreated { name, .. } => ("thread", name.clone()),
                Outcome::ThreadExited { name, .. } => ("thread-exit", name.clone()),
                Outcome::ImageLoaded {
                    process: Some(p), ..
                } => ("image", p.clone()),
                Outcome::ImageLoaded { path, .. } => ("driver", path.clone()),
                Outcome::Skipped { what, .. } => ("skipped", what.clone()),
                Outcome::Netevent(_) => ("netevent", String::new()),
                Outcome::NeteventProvider { .. } => ("netevent-provider", String::new()),
            };
            let report = StepReport {
                index: count,
                line: None,
                keyword,
                name,
                helpers: watch.take(),
                outcome,
            };
            session.after_step(report, &mut counts, sink)?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(watch);
    sink.note(&format!("{count} event(s) from the host"))?;
    let (report, _) = session.finish(sink)?;
    findings_result(&report)
}

#[cfg(not(target_os = "linux"))]
fn run_live(_: &Setup<'_>, _: Duration, _: &mut dyn Sink) -> Result<(), String> {
    Err("--live reads /proc and works on Linux only".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::report::hex_dump;

    #[test]
    fn filetimes_format_as_utc_dates() {
        assert_eq!(format_filetime(0), "1601-01-01 00:00:00.000 UTC");
        assert_eq!(
            format_filetime(scenario::SCENARIO_EPOCH),
            "2024-01-01 00:00:00.000 UTC"
        );
        assert_eq!(
            format_filetime(133_536_836_967_890_000),
            "2024-02-29 12:34:56.789 UTC",
            "a leap day"
        );
        assert_eq!(
            format_filetime(157_520_160_000_000_000),
            "2100-03-01 00:00:00.000 UTC",
            "2100 is not a leap year"
        );
    }

    #[test]
    fn hex_dumps_collapse_zero_rows() {
        let mut b = vec![0u8; 64];
        b[0] = 0xab;
        b[63] = 0x01;
        let mut out = Vec::new();
        hex_dump(&mut out, "", &b).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("0000: ab 00"));
        assert!(
            lines[1].starts_with("0010: 00"),
            "the first zero row is shown"
        );
        assert_eq!(lines[2], "*");
        assert!(lines[3].starts_with("0030: 00") && lines[3].ends_with(" 01"));
    }

    #[test]
    fn findings_end_the_run_with_an_error_that_lists_them() {
        let mut out = Vec::new();
        let names = ["monitor".to_string()];
        let session = Session::start(
            &Setup {
                drivers: &[crate::build::driver_image()],
                object: &hook::sample_object_path(),
                programs: &names,
                attach_params: &[],
                faults: &[],
                ringbuf: &[],
                etw: false,
            },
            &mut || {},
        )
        .expect("the driver and the monitor load");
        crate::kernel::violation::record("test", "a rule broken on purpose");
        let e = session.end(&mut out).expect_err("a violation is a finding");
        assert!(e.contains("a rule broken on purpose"), "{e}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("1 finding(s):"), "{text}");
        assert!(!text.contains("no leaks, no violations"), "{text}");
    }

    #[test]
    fn long_command_lines_are_shortened() {
        let long = "x".repeat(MAX_COMMAND_LINE_SHOWN + 5);
        let s = shorten(&long);
        assert!(s.ends_with(&format!("... ({} characters)", long.len())));
        assert_eq!(shorten("short"), "short");
    }
}
