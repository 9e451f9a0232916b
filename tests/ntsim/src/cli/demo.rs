//! The `ntsim` command's work, as a library: load the driver, attach eBPF
//! programs, raise process events, report what the programs emitted and
//! decided, then check that the driver left nothing behind.
//!
//! - [`run`]: the demo (`cargo xtask demo`, `ntsim demo`): the sample
//!   process monitor and policy of `tests/bpf/process_test.c` against the
//!   built-in scenario ([`crate::cli::scenario::BUILTIN`]), one line per event
//!   from the monitor's records. The output is the same on every run.
//! - [`run_object`]: any object, programs and events (`ntsim run`): a
//!   scenario, or the host's live process activity ([`Events::Live`]).
//!
//! Both end with the report of [`Sim::finish`]: `no leaks, no violations`,
//! or an error listing what the driver left behind and which rules it
//! broke.

use crate::cli::scenario::{self, Outcome, Runner, Scenario, Step};
use crate::ebpf::core::{Link, LoadedProgram};
use crate::ebpf::maps::map_type;
use crate::ebpf::{Map, Object};
use crate::hook::process::{self as hook, from_utf16, ProcessRecord, RECORD_SIZE};
use crate::kernel::status::{self, nt_success, NTSTATUS};
use crate::kernel::{io, ps, time};
use crate::Sim;
use std::io::Write;
use std::path::Path;
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
    pub driver: &'a Path,
    pub object: &'a Path,
    /// Programs of the object to attach, in this order.
    pub programs: Vec<String>,
    pub events: Events,
    /// Fault injection: fail call number N (1-based) of each API
    /// ([`crate::kernel::fault::fail_nth`]; allocations are `ExAllocatePool2`),
    /// planned before the driver loads.
    pub faults: Vec<(String, u64)>,
}

fn w(out: &mut dyn Write, line: std::fmt::Arguments<'_>) -> Result<(), String> {
    writeln!(out, "{line}").map_err(|e| format!("cannot write the output: {e}"))
}

macro_rules! say {
    ($out:expr, $($arg:tt)*) => { w($out, format_args!($($arg)*)) };
}

/// A FILETIME (100 ns units since 1601-01-01 UTC) as
/// `2024-01-01 00:00:02.000 UTC`.
pub fn format_filetime(filetime: i64) -> String {
    let unix = filetime - time::UNIX_EPOCH_AS_FILETIME;
    let (secs, ticks) = (unix.div_euclid(10_000_000), unix.rem_euclid(10_000_000));
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in
    // 400-year eras that start on March 1st (so the leap day ends a year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60,
        ticks / 10_000
    )
}

/// A helper result of the monitor: the UTF-16 string, or the error.
fn helper_text(result: i32, bytes: &[u8]) -> String {
    if result < 0 {
        format!("<error {result}>")
    } else {
        from_utf16(bytes)
    }
}

/// One line describing a `monitor` record (`tests/bpf/process_test.c`):
/// what the program saw of the event.
pub fn describe_record(r: &ProcessRecord) -> String {
    let mut parts = Vec::new();
    let create = r.operation == 0;
    parts.push(format!(
        "{} pid {}",
        match r.operation {
            0 => "CREATE".to_string(),
            1 => "DELETE".to_string(),
            n => format!("operation {n}"),
        },
        r.process_id
    ));
    // The context of a DELETE has no parent (0).
    if create || r.parent_process_id != 0 {
        parts.push(format!("parent {}", r.parent_process_id));
    }
    if create {
        parts.push(format!(
            "creator {}:{}",
            r.creating_process_id, r.creating_thread_id
        ));
    }
    if r.image_result != 0 {
        parts.push(format!("image {}", helper_text(r.image_result, &r.image)));
    }
    if r.command_length > 0 {
        parts.push(format!("command line {}", from_utf16(&r.command)));
    }
    if create {
        let account = if r.name_result < 0 || r.domain_result < 0 {
            format!("<error {}/{}>", r.domain_result, r.name_result)
        } else {
            format!("{}\\{}", from_utf16(&r.domain), from_utf16(&r.name))
        };
        parts.push(format!("account {account}"));
        if r.token_sid_size > 0 {
            parts.push(format!(
                "sid {}",
                ps::sid_to_string(&r.token_sid).unwrap_or_else(|| hex(&r.token_sid))
            ));
        }
    }
    if r.creation_time != 0 {
        parts.push(format!(
            "created {}",
            format_filetime(r.creation_time as i64)
        ));
    }
    if !create {
        if r.exit_time != 0 {
            parts.push(format!("exited {}", format_filetime(r.exit_time as i64)));
        }
        parts.push(format!("exit code {:#010x}", r.process_exit_code));
    }
    parts.join(" | ")
}

/// What the programs decided: `permitted` or `DENIED 0xc0000022
/// (STATUS_ACCESS_DENIED)`.
pub fn verdict(status: NTSTATUS) -> String {
    if nt_success(status) {
        "permitted".into()
    } else {
        format!("DENIED {}", status::describe(status))
    }
}

/// One line for a step from what the kernel knows (used when no monitor
/// record describes it).
pub fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Created {
            name,
            pid,
            parent_pid,
            status,
            spec,
            account,
            ..
        } => {
            let mut parts = vec![
                format!("[{name}] CREATE pid {pid}"),
                format!("parent {parent_pid}"),
                format!("image {}", spec.image_file_name),
            ];
            if let Some(cmd) = &spec.command_line {
                parts.push(format!("command line {}", shorten(cmd)));
            }
            parts.push(format!("account {account}"));
            if let Some(t) = spec.creation_time {
                parts.push(format!("created {}", format_filetime(t)));
            }
            parts.push(verdict(*status));
            parts.join(" | ")
        }
        Outcome::Exited {
            name,
            pid,
            code,
            time,
        } => format!(
            "[{name}] DELETE pid {pid} | exited {} | exit code {:#010x} | exit (no verdict)",
            format_filetime(*time),
            *code as u32
        ),
        Outcome::NotRunning { name, line } => {
            format!("[{name}] exit skipped (line {line}): the process is not running (its creation was denied)")
        }
    }
}

/// Command lines longer than this many characters are shortened in event
/// lines (host command lines can run to pages).
pub const MAX_COMMAND_LINE_SHOWN: usize = 200;

fn shorten(s: &str) -> String {
    let n = s.chars().count();
    if n <= MAX_COMMAND_LINE_SHOWN {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_COMMAND_LINE_SHOWN).collect();
        format!("{head}... ({n} characters)")
    }
}

/// Lower-case hex, bytes separated by nothing.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A hex dump, 16 bytes a row with the offset; runs of all-zero rows after
/// the first are shown as one `*` (as hexdump does).
fn hex_dump(out: &mut dyn Write, indent: &str, b: &[u8]) -> Result<(), String> {
    let mut starred = false;
    for (i, row) in b.chunks(16).enumerate() {
        let zero = row.iter().all(|&x| x == 0);
        if zero && i > 0 && b[(i - 1) * 16..i * 16].iter().all(|&x| x == 0) {
            if !starred {
                say!(out, "{indent}*")?;
                starred = true;
            }
            continue;
        }
        starred = false;
        let bytes: Vec<String> = row.iter().map(|x| format!("{x:02x}")).collect();
        say!(out, "{indent}{:04x}: {}", i * 16, bytes.join(" "))?;
    }
    if starred || b.is_empty() {
        say!(out, "{indent}({} bytes)", b.len())?;
    }
    Ok(())
}

fn map_type_name(t: u32) -> &'static str {
    match t {
        map_type::HASH => "hash",
        map_type::ARRAY => "array",
        map_type::PROG_ARRAY => "program array",
        map_type::PERCPU_HASH => "per-CPU hash",
        map_type::PERCPU_ARRAY => "per-CPU array",
        map_type::HASH_OF_MAPS => "hash of maps",
        map_type::ARRAY_OF_MAPS => "array of maps",
        map_type::LRU_HASH => "LRU hash",
        map_type::LPM_TRIE => "LPM trie",
        map_type::QUEUE => "queue",
        map_type::LRU_PERCPU_HASH => "LRU per-CPU hash",
        map_type::STACK => "stack",
        map_type::RINGBUF => "ring buffer",
        map_type::PERF_EVENT_ARRAY => "perf event array",
        _ => "map",
    }
}

/// Prints (and, for ring buffers, perf arrays, queues and stacks, takes)
/// the contents of a map. Ring-buffer records of the size of a monitor
/// record are decoded.
pub fn dump_map(out: &mut dyn Write, map: &Map) -> Result<(), String> {
    let def = map.def();
    say!(
        out,
        "map {} ({}, key {} B, value {} B, max {}):",
        map.name(),
        map_type_name(def.map_type),
        def.key_size,
        def.value_size,
        def.max_entries
    )?;
    match def.map_type {
        map_type::RINGBUF => {
            let records = map.drain_ring();
            say!(out, "  {} record(s)", records.len())?;
            for (i, r) in records.iter().enumerate() {
                match (r.len() == RECORD_SIZE)
                    .then(|| ProcessRecord::parse(r))
                    .flatten()
                {
                    Some(p) => say!(out, "  #{i}: {}", describe_record(&p))?,
                    None => {
                        say!(out, "  #{i}: {} bytes", r.len())?;
                        hex_dump(out, "    ", r)?;
                    }
                }
            }
        }
        map_type::PERF_EVENT_ARRAY => {
            let records = map.drain_perf();
            say!(out, "  {} record(s)", records.len())?;
            for (i, r) in records.iter().enumerate() {
                say!(out, "  #{i}: cpu {}, {} bytes", r.cpu, r.data.len())?;
                hex_dump(out, "    ", &r.data)?;
            }
        }
        map_type::QUEUE | map_type::STACK => {
            let mut n = 0;
            while let Ok(v) = map.pop(true) {
                say!(out, "  #{n}:")?;
                hex_dump(out, "    ", &v)?;
                n += 1;
            }
            say!(out, "  {n} element(s)")?;
        }
        map_type::PROG_ARRAY => say!(out, "  (program slots are not listed)")?,
        _ => {
            let keys = map.keys();
            let mut zero = 0;
            for k in &keys {
                let Some(v) = map.lookup(k) else { continue };
                let is_array = matches!(def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
                if is_array && v.iter().all(|&x| x == 0) {
                    zero += 1;
                    continue;
                }
                say!(out, "  key {}:", hex(k))?;
                hex_dump(out, "    ", &v)?;
            }
            say!(
                out,
                "  {} key(s), {zero} all-zero value(s) not shown",
                keys.len()
            )?;
        }
    }
    Ok(())
}

/// A loaded driver, object and attached programs. Field order is drop
/// order: links, programs, object, then the machine.
struct Session {
    links: Vec<Link>,
    programs: Vec<(String, LoadedProgram)>,
    object: Object,
    faults: Vec<(String, u64)>,
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

impl Session {
    /// Loads the driver and the object, loads every program, runs
    /// `before_attach`, then attaches the programs in order.
    fn start(
        driver: &Path,
        object_path: &Path,
        names: &[String],
        faults: &[(String, u64)],
        out: &mut dyn Write,
        before_attach: &mut dyn FnMut(),
    ) -> Result<Session, String> {
        check_file("driver image", driver)?;
        check_file("eBPF object", object_path)?;
        if names.is_empty() {
            return Err("no program to attach (give --program NAME)".into());
        }
        let bytes = std::fs::read(object_path)
            .map_err(|e| format!("cannot read {}: {e}", object_path.display()))?;
        let object = Object::load(&bytes, &hook::section_map())
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

        let mut sim = Sim::new();
        // Times the driver reads are the same on every run.
        time::set_deterministic(scenario::SCENARIO_EPOCH, 1);
        for (api, n) in faults {
            crate::kernel::fault::fail_nth(api, *n);
            say!(out, "fault injection: call #{n} of {api} will fail")?;
        }
        let status = sim
            .load_driver(driver)
            .map_err(|e| format!("cannot load the driver {}: {e}", driver.display()))?;
        if !nt_success(status) {
            return Err(format!(
                "the driver {} failed to load: DriverEntry returned {}",
                driver.display(),
                status::describe(status)
            ));
        }
        say!(
            out,
            "driver {}: DriverEntry returned {}",
            file_name(driver),
            status::describe(status)
        )?;
        let mut session = Session {
            links: Vec::new(),
            programs: Vec::new(),
            object,
            faults: faults.to_vec(),
            sim,
        };
        for name in names {
            let program = session.object.program(name).expect("checked above").clone();
            let loaded = LoadedProgram::load(program).map_err(|e| {
                format!(
                    "loading program {name:?} into the eBPF core failed: {e} \
                         (this driver provides the program type of section \"process\")"
                )
            })?;
            session.programs.push((name.clone(), loaded));
        }
        before_attach();
        for (name, loaded) in &session.programs {
            let attach_type = loaded.program().attach_type.unwrap_or(hook::ATTACH_TYPE);
            let link = loaded
                .attach(attach_type, &[], 0)
                .map_err(|e| format!("attaching program {name:?} failed: {e}"))?;
            session.links.push(link);
        }
        say!(
            out,
            "object {}: attached {} (in this order)",
            file_name(object_path),
            names.join(", ")
        )?;
        Ok(session)
    }

    /// Prints the programs' trace_printk lines and errors since the last
    /// call.
    fn program_output(&self, out: &mut dyn Write) -> Result<(), String> {
        for (name, p) in &self.programs {
            for line in p.take_trace() {
                say!(out, "    trace {name}: {}", line.trim_end())?;
            }
            for e in p.take_errors() {
                say!(out, "    error {name}: {e}")?;
            }
        }
        Ok(())
    }

    /// Detaches, unloads the programs and the driver, and reports what
    /// [`Sim::finish`] found.
    fn end(self, out: &mut dyn Write) -> Result<(), String> {
        let Session {
            links,
            programs,
            object,
            faults,
            mut sim,
        } = self;
        let names: Vec<String> = programs.iter().map(|(n, _)| n.clone()).collect();
        drop(links);
        // The driver removes its notify routine on a system worker thread.
        io::wait_idle();
        drop(programs);
        say!(out, "detached and unloaded {}", names.join(", "))?;
        let unloaded = sim.unload_driver();
        match &unloaded {
            Ok(()) => say!(out, "driver unloaded")?,
            Err(e) => say!(out, "driver unload failed: {e}")?,
        }
        drop(object);
        let fired = crate::kernel::fault::fired();
        for (api, n) in &faults {
            let happened = fired.iter().any(|(a, k)| a == api && k == n);
            if !happened {
                say!(
                    out,
                    "fault injection: {api} was never called {n} time(s); nothing failed"
                )?;
            }
        }
        let mut findings: Vec<String> = unloaded.err().into_iter().collect();
        if let Err(f) = sim.finish() {
            findings.extend(f.lines().map(str::to_string));
        }
        if findings.is_empty() {
            say!(out, "no leaks, no violations")?;
            Ok(())
        } else {
            say!(out, "{} finding(s):", findings.len())?;
            for f in &findings {
                say!(out, "  {f}")?;
            }
            Err(format!(
                "{} finding(s) (leaks or violations):\n{}",
                findings.len(),
                findings.join("\n")
            ))
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// The demo: the driver image at `driver` in a fresh simulated machine, the
/// sample programs `deny_notepad` then `monitor` attached, the built-in
/// scenario raised, one line per event; then detach, unload and the leak
/// and violation report. Err: setup failures, or the findings.
pub fn run(driver: &Path, out: &mut dyn Write) -> Result<(), String> {
    let object_path = hook::sample_object_path();
    let names: Vec<String> = DEMO_PROGRAMS.iter().map(|s| s.to_string()).collect();
    let scenario = scenario::builtin();
    say!(
        out,
        "ntsim demo: the ntosebpfext driver with a sample process monitor and policy"
    )?;
    let session = Session::start(driver, &object_path, &names, &[], out, &mut || {})?;
    say!(
        out,
        "events ({} steps of the built-in scenario):",
        scenario.steps.len()
    )?;
    let mut runner = Runner::new(&scenario);
    let events = session
        .object
        .map("events")
        .ok_or("process_test.o has no `events` map")?
        .clone();
    for step in &scenario.steps {
        let outcome = runner.step(step);
        let records = events.drain_ring();
        let name = match step {
            Step::Create(c) => &c.name,
            Step::Exit(e) => &e.name,
        };
        if records.is_empty() {
            // The monitor did not run: the policy, attached before it,
            // denied the creation.
            let note = if outcome.permitted() {
                " (the monitor reported nothing)"
            } else {
                " (the monitor did not run: the policy before it denied the creation)"
            };
            say!(out, "{}{note}", describe_outcome(&outcome))?;
        }
        for r in &records {
            let record = ProcessRecord::parse(r).ok_or_else(|| {
                format!("a monitor record of {} bytes, not {RECORD_SIZE}", r.len())
            })?;
            let decision = match &outcome {
                Outcome::Created { status, .. } => verdict(*status),
                _ => "exit (no verdict)".into(),
            };
            say!(out, "[{name}] {} | {decision}", describe_record(&record))?;
        }
        session.program_output(out)?;
    }
    session.end(out)
}

/// `ntsim run`: `options.driver` in a fresh machine, the named programs of
/// `options.object` attached in order, the events raised with one verdict
/// line each (and the programs' trace_printk lines and errors), then every
/// map of the object dumped, and the leak and violation report.
pub fn run_object(options: &RunOptions<'_>, out: &mut dyn Write) -> Result<(), String> {
    match &options.events {
        Events::Scenario(scenario) => {
            let session = Session::start(
                options.driver,
                options.object,
                &options.programs,
                &options.faults,
                out,
                &mut || {},
            )?;
            say!(out, "events ({} steps):", scenario.steps.len())?;
            let mut runner = Runner::new(scenario);
            for step in &scenario.steps {
                let outcome = runner.step(step);
                say!(out, "{}", describe_outcome(&outcome))?;
                session.program_output(out)?;
            }
            finish_run(session, out)
        }
        Events::Live(duration) => run_live(options, *duration, out),
    }
}

fn finish_run(session: Session, out: &mut dyn Write) -> Result<(), String> {
    say!(out, "maps after the run:")?;
    for map in &session.object.maps {
        dump_map(out, map)?;
    }
    session.end(out)
}

#[cfg(target_os = "linux")]
fn run_live(
    options: &RunOptions<'_>,
    duration: Duration,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut host = None;
    let mut mirror_error = None;
    let session = Session::start(
        options.driver,
        options.object,
        &options.programs,
        &options.faults,
        out,
        &mut || match scenario::live::Host::mirror() {
            Ok(h) => host = Some(h),
            Err(e) => mirror_error = Some(e),
        },
    )?;
    let mut host = match (host, mirror_error) {
        (Some(h), _) => h,
        (None, e) => return Err(e.unwrap_or_else(|| "mirroring /proc failed".into())),
    };
    // The host's processes start and end at host times.
    time::set_real();
    say!(
        out,
        "watching the host's processes for {:.1} s ({} running now, mirrored before the programs attached)",
        duration.as_secs_f64(),
        host.len()
    )?;
    out.flush().map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + duration;
    let mut count = 0usize;
    while std::time::Instant::now() < deadline {
        for outcome in host.poll() {
            count += 1;
            say!(out, "{}", describe_outcome(&outcome))?;
            session.program_output(out)?;
        }
        out.flush().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(20));
    }
    say!(out, "{count} event(s) from the host")?;
    finish_run(session, out)
}

#[cfg(not(target_os = "linux"))]
fn run_live(_: &RunOptions<'_>, _: Duration, _: &mut dyn Write) -> Result<(), String> {
    Err("--live reads /proc and works on Linux only".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &crate::build::driver_image(),
            &hook::sample_object_path(),
            &names,
            &[],
            &mut out,
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
