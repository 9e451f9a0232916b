//! What a run reports, one [`Event`] at a time, and the two ways the
//! `ntsim` command prints it: text for people ([`TextSink`]) and one JSON
//! object a line for programs ([`JsonSink`], `ntsim run --json`).
//!
//! Every event a step caused (its records, trace lines, program errors)
//! comes right after the step's own event and carries the step's number,
//! so a record is tied to the event that produced it; the step's verdict
//! comes last. The JSON schema is
//! documented in docs/ntsim.md ("JSON output"); its field names are
//! stable: new fields may be added, none is renamed or removed.
//!
//! Extension point: a new kind of scenario step (threads, image loads, a
//! test run) adds its [`crate::cli::scenario::Outcome`] variant, which
//! [`StepReport`] carries, and one arm in [`step_text`] and
//! [`step_json`]; records, trace lines and maps need nothing new.

use super::decode::{self, hex, is_percpu, map_type_key, map_type_name, split_percpu, Decoder};
use crate::cli::scenario::{Outcome, TestRunKind};
use crate::ebpf::btf_types::{PathPart, Value};
use crate::ebpf::maps::map_type;
use crate::ebpf::TestRunOutput;
use crate::ebpf::{Map, MapDef};
use crate::hook::image_load::{self, ImageRecord};
use crate::hook::netevent;
use crate::hook::process::{
    self as hook, from_utf16, ProcessRecord, TestRunContextOut, RECORD_SIZE, TOKEN_SID_MAX_SIZE,
};
use crate::hook::thread::{self, ThreadRecord};
use crate::kernel::log::etw::Value as EtwValue;
use crate::kernel::log::EtwEvent;
use crate::kernel::status::{self, nt_success, NTSTATUS};
use crate::kernel::{ps, time};
use serde_json::{json, Value as J};
use std::io::Write;
use std::sync::{Arc, Mutex};

mod json;
pub use json::{event_json, step_json, verdict_json};

/// Version of the JSON output's schema (in the `start` object).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// One call of one of the extension's helpers, as a program made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperCall {
    pub program: String,
    pub id: u32,
    /// The helper's result, sign-extended from 32 bits.
    pub result: i64,
    /// For the process helpers: the bytes they wrote (the string), when
    /// the result is a byte count.
    pub bytes: Option<Vec<u8>>,
}

/// Collects the extension helper calls of programs run on this thread,
/// until [`HelperWatch::stop`] or drop.
pub struct HelperWatch {
    calls: Arc<Mutex<Vec<HelperCall>>>,
}

impl HelperWatch {
    /// Starts watching (replacing any other watch on this thread).
    pub fn start() -> HelperWatch {
        let calls: Arc<Mutex<Vec<HelperCall>>> = Arc::default();
        let sink = calls.clone();
        crate::ebpf::program::observe_extension_calls(Some(Box::new(
            move |program, id, args, result, read| {
                let result = result as u32 as i32 as i64;
                let bytes =
                    (hook::helper_name(id).is_some() && result > 0 && result as u64 <= args[2])
                        .then(|| read(args[1], result as u64))
                        .flatten();
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(HelperCall {
                        program: program.to_string(),
                        id,
                        result,
                        bytes,
                    });
            },
        )));
        HelperWatch { calls }
    }

    /// The calls since the last take.
    pub fn take(&self) -> Vec<HelperCall> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for HelperWatch {
    fn drop(&mut self) {
        crate::ebpf::program::observe_extension_calls(None);
    }
}

/// The account of a new process as the programs could read it through
/// the driver's helpers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountSeen {
    /// `bpf_process_get_account_domain` / `_name` returned these (either
    /// may be absent when only the other was called).
    Read {
        domain: Option<String>,
        name: Option<String>,
    },
    /// A helper returned this error.
    Error(i64),
    /// No program asked.
    NotRead,
}

/// A step and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// 1-based position in the run.
    pub index: usize,
    /// The scenario line (None for host events).
    pub line: Option<usize>,
    pub keyword: &'static str,
    pub name: String,
    pub outcome: Outcome,
    /// The extension helper calls of the programs during the step.
    pub helpers: Vec<HelperCall>,
}

impl StepReport {
    /// The creation status (None for steps that have no verdict).
    pub fn verdict(&self) -> Option<NTSTATUS> {
        match &self.outcome {
            Outcome::Created { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What the programs read of the account through the helpers.
    pub fn account_seen(&self) -> AccountSeen {
        let last = |id: u32| self.helpers.iter().rev().find(|c| c.id == id);
        let (domain, name) = (
            last(hook::HELPER_GET_ACCOUNT_DOMAIN),
            last(hook::HELPER_GET_ACCOUNT_NAME),
        );
        if domain.is_none() && name.is_none() {
            return AccountSeen::NotRead;
        }
        if let Some(e) = [domain, name].into_iter().flatten().find(|c| c.result < 0) {
            return AccountSeen::Error(e.result);
        }
        let text = |c: Option<&HelperCall>| {
            c.map(|c| c.bytes.as_deref().map(from_utf16).unwrap_or_default())
        };
        AccountSeen::Read {
            domain: text(domain),
            name: text(name),
        }
    }
}

/// A ring-buffer or perf event array record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordReport {
    /// The step that produced it (None: produced outside any step).
    pub step: Option<usize>,
    pub map: String,
    pub map_type: u32,
    /// 0-based position among the map's records of the run.
    pub index: usize,
    /// The CPU of a perf record.
    pub cpu: Option<u32>,
    pub data: Vec<u8>,
}

/// A map's contents at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapReport {
    pub name: String,
    pub def: MapDef,
    /// (key, value) of a hash or array map; per-CPU values are every
    /// CPU's, as [`Map::lookup`] returns them. Array entries whose value
    /// is all zero are left out (counted in `zero_omitted`).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub zero_omitted: usize,
    /// Records left in a ring buffer or perf array, elements of a queue or
    /// stack (taken: the map is empty afterwards).
    pub elements: Vec<Vec<u8>>,
}

impl MapReport {
    /// Reads (and for ring buffers, perf arrays, queues and stacks,
    /// takes) a map's contents.
    pub fn take(map: &Map) -> MapReport {
        let def = map.def().clone();
        let mut report = MapReport {
            name: map.name().to_string(),
            def: def.clone(),
            entries: Vec::new(),
            zero_omitted: 0,
            elements: Vec::new(),
        };
        match def.map_type {
            map_type::RINGBUF => report.elements = map.drain_ring(),
            map_type::PERF_EVENT_ARRAY => {
                report.elements = map.drain_perf().into_iter().map(|r| r.data).collect()
            }
            map_type::QUEUE | map_type::STACK => {
                while let Ok(v) = map.pop(true) {
                    report.elements.push(v);
                }
            }
            map_type::PROG_ARRAY => {}
            _ => {
                let is_array = matches!(def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
                for k in map.keys() {
                    let Some(v) = map.lookup(&k) else { continue };
                    if is_array && v.iter().all(|&x| x == 0) {
                        report.zero_omitted += 1;
                        continue;
                    }
                    report.entries.push((k, v));
                }
            }
        }
        report
    }
}

/// One driver's `DriverEntry`, in a [`StartReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverStart {
    /// The image's file name (`ntosebpfext.sys`).
    pub name: String,
    pub driver_entry: NTSTATUS,
    /// The `DbgPrintEx` lines it printed during its DriverEntry.
    pub dbgprint: Vec<String>,
}

/// One driver's unload and what is attributed to it, in an
/// [`EndReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverEnd {
    /// The image's file name (`ntosebpfext.sys`).
    pub name: String,
    /// `DriverUnload` failed with this.
    pub unload_error: Option<String>,
    /// The `DbgPrintEx` lines it printed after its DriverEntry, each with
    /// the step that was running (None: the detach and unload).
    pub dbgprint: Vec<(Option<usize>, String)>,
    /// The findings ntsim can attribute to it (see
    /// [`crate::sim::Sim::finish_report`]); every one is in
    /// [`EndReport::findings`] too.
    pub findings: Vec<String>,
}

/// What the start of a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartReport {
    /// The first driver's file name (of [`StartReport::drivers`]).
    pub driver: String,
    /// The first driver's DriverEntry status.
    pub driver_entry: NTSTATUS,
    /// Every driver, in load order.
    pub drivers: Vec<DriverStart>,
    pub object: String,
    /// Attached, in this order.
    pub programs: Vec<String>,
    /// (API, call number) of planned failures.
    pub faults: Vec<(String, u64)>,
    /// Steps of the scenario (None for host events).
    pub steps: Option<usize>,
}

/// What the end of a run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndReport {
    pub programs: Vec<String>,
    /// The first `DriverUnload` failure (in unload order).
    pub unload_error: Option<String>,
    /// Every driver, in unload order (the reverse of the load order).
    pub drivers: Vec<DriverEnd>,
    /// Planned failures that never happened.
    pub unfired: Vec<(String, u64)>,
    /// Leaks and violations (and an unload failure).
    pub findings: Vec<String>,
}

/// One thing a run reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start(StartReport),
    /// A step: the event and its inputs (first of the step's events).
    Step(StepReport),
    /// The same step's verdict and what the programs obtained (last of
    /// the step's events).
    Verdict(StepReport),
    Record(RecordReport),
    /// A `bpf_trace_printk` line.
    Trace {
        step: Option<usize>,
        program: String,
        text: String,
    },
    /// A program run that stopped on an error.
    ProgramError {
        step: Option<usize>,
        program: String,
        text: String,
    },
    Map(MapReport),
    /// An ETW event of the driver's provider (`--etw`): during a step, or
    /// at the load (before the first step) or the unload (before the end).
    Etw {
        step: Option<usize>,
        event: Box<EtwEvent>,
    },
    End(EndReport),
}

/// Where events go.
pub trait Sink {
    fn emit(&mut self, event: &Event, decoder: &Decoder) -> Result<(), String>;

    /// A line for people only (text output prints it, JSON does not).
    fn note(&mut self, text: &str) -> Result<(), String> {
        let _ = text;
        Ok(())
    }
}

/// Keeps every event (for `ntsim test` and tests).
#[derive(Debug, Default)]
pub struct Collect(pub Vec<Event>);

impl Sink for Collect {
    fn emit(&mut self, event: &Event, _: &Decoder) -> Result<(), String> {
        self.0.push(event.clone());
        Ok(())
    }
}

/// Text for people: one line per step, indented lines under it for what
/// it caused, then the maps and the report.
pub struct TextSink<'a>(pub &'a mut dyn Write);

/// One JSON object per line.
pub struct JsonSink<'a>(pub &'a mut dyn Write);

fn w(out: &mut dyn Write, line: std::fmt::Arguments<'_>) -> Result<(), String> {
    writeln!(out, "{line}").map_err(|e| format!("cannot write the output: {e}"))
}

macro_rules! say {
    ($out:expr, $($arg:tt)*) => { w($out, format_args!($($arg)*)) };
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

/// The account column of a creation: what the programs could read.
pub fn account_text(seen: &AccountSeen, user_sid: Option<&[u8]>) -> String {
    match seen {
        AccountSeen::Read { domain, name } => match (domain, name) {
            (Some(d), Some(n)) => format!("account {d}\\{n}"),
            (Some(d), None) => format!("account domain {d}"),
            (None, n) => format!("account {}", n.as_deref().unwrap_or("")),
        },
        AccountSeen::Error(e) => format!("account <helper error {e}>"),
        AccountSeen::NotRead => match user_sid {
            Some(sid) => format!(
                "account not read (sid {})",
                ps::sid_to_string(sid).unwrap_or_else(|| hex(sid))
            ),
            None => "account not read (no user)".into(),
        },
    }
}

/// Command lines longer than this many characters are shortened in event
/// lines (host command lines can run to pages).
pub const MAX_COMMAND_LINE_SHOWN: usize = 200;

/// `s`, shortened past [`MAX_COMMAND_LINE_SHOWN`] characters.
pub fn shorten(s: &str) -> String {
    let n = s.chars().count();
    if n <= MAX_COMMAND_LINE_SHOWN {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_COMMAND_LINE_SHOWN).collect();
        format!("{head}... ({n} characters)")
    }
}

/// A FILETIME as `2024-01-01 00:00:02.000 UTC`.
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

/// One line for a step.
pub fn step_text(step: &StepReport) -> String {
    match &step.outcome {
        Outcome::Created {
            name,
            pid,
            parent_pid,
            status,
            spec,
            ..
        } => {
            let mut parts = vec![
                format!("[{name}] CREATE pid {pid}"),
                format!("parent {parent_pid}"),
            ];
            if let Some((p, t)) = spec.creating_thread {
                parts.push(format!("creator {p}:{t}"));
            }
            parts.push(format!("image {}", spec.image_file_name));
            if let Some(cmd) = &spec.command_line {
                parts.push(format!("command line {}", shorten(cmd)));
            }
            parts.push(account_text(&step.account_seen(), spec.user_sid.as_deref()));
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
        Outcome::NotRunning { name, line } => format!(
            "[{name}] exit skipped (line {line}): the process is not running (its creation was denied)"
        ),
        Outcome::ThreadCreated {
            name,
            pid,
            tid,
            creator_pid,
            creator_tid,
            start,
        } => format!(
            "[{name}] THREAD CREATE tid {tid} in pid {pid} | creator {creator_pid}:{creator_tid} | \
             start {start:#x} | no verdict"
        ),
        Outcome::ThreadExited { name, tid, code } => format!(
            "[{name}] THREAD EXIT tid {tid} | exit status {:#010x} | no verdict",
            *code as u32
        ),
        Outcome::ImageLoaded {
            process,
            pid,
            path,
            base,
            size,
        } => format!(
            "[{}] IMAGE pid {pid} | {path} | base {base:#x} | size {size:#x} | no verdict",
            process.as_deref().unwrap_or("driver")
        ),
        Outcome::Skipped { what, line } => {
            format!("[{what}] skipped (line {line}): the process or thread is not running")
        }
        Outcome::TestRun {
            program,
            input,
            output,
        } => test_run_text(program, input, output),
        Outcome::Netevent(d) => {
            let clients: Vec<String> = d
                .clients
                .iter()
                .map(|c| {
                    format!(
                        "{} (capture {}): {:?}",
                        c.module,
                        crate::kernel::netevent::capture_name(c.capture_type),
                        c.result
                    )
                })
                .collect();
            format!(
                "[netevent] EVENT type {} from provider {} at IRQL {} | {} | no verdict",
                d.event_type.map_or("none".into(), |t| t.to_string()),
                d.provider,
                d.irql,
                if clients.is_empty() {
                    "no client".to_string()
                } else {
                    clients.join("; ")
                }
            )
        }
        Outcome::NeteventProvider {
            id,
            registered,
            clients,
        } => format!(
            "[netevent-provider] provider {id} {} | clients: {} | no verdict",
            if *registered { "registered" } else { "deregistered" },
            if clients.is_empty() {
                "none".to_string()
            } else {
                clients.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
            }
        ),
    }
}

/// The four strings of a process test run, in `data_in` order, as
/// [`test_run_value`] names them.
const TEST_RUN_STRINGS: [&str; 4] = [
    "command_line",
    "image_path",
    "account_name",
    "account_domain",
];

/// What a test run returned, as a value expectations and the JSON output
/// read: `result` (r0 as the program left it, 64 bits), `data_out` (bytes), `context` (the decoded
/// `ctx_out`: the `process_md_t` fields, `token_sid` as text, each
/// string's `length` and `maximum_length`, `account_lookup_done`) and
/// `strings` (the four strings of `data_out`, split by the lengths in
/// `ctx_out`); or `error` when the run failed. For a netevent program,
/// `context` is the three pointers of `ctx_out` as numbers (`data_meta`,
/// `data`, `data_end`), and there are no `strings`.
pub fn test_run_value(input: &TestRunKind, output: &Result<TestRunOutput, String>) -> Value {
    let out = match output {
        Ok(out) => out,
        Err(e) => return Value::Struct(vec![("error".into(), Value::Str(e.clone()))]),
    };
    let int = |v: u64| Value::Int(v as i128);
    let mut fields = vec![
        ("result".into(), int(out.result)),
        ("data_out".into(), Value::Bytes(out.data_out.clone())),
    ];
    if let TestRunKind::Netevent(_) = input {
        let context = match netevent::TestRunContextOut::parse(&out.context_out) {
            Some(c) => Value::Struct(vec![
                ("data_meta".into(), int(c.data_meta)),
                ("data".into(), int(c.data)),
                ("data_end".into(), int(c.data_end)),
            ]),
            None => Value::Bytes(out.context_out.clone()),
        };
        fields.push(("context".into(), context));
        return Value::Struct(fields);
    }
    match TestRunContextOut::parse(&out.context_out) {
        Some(c) => {
            let md = &c.md;
            let sid = &md.token_sid[..(md.token_sid_size as usize).min(TOKEN_SID_MAX_SIZE)];
            let mut context = vec![
                ("process_id".into(), int(md.process_id)),
                ("parent_process_id".into(), int(md.parent_process_id)),
                ("creating_process_id".into(), int(md.creating_process_id)),
                ("creating_thread_id".into(), int(md.creating_thread_id)),
                ("creation_time".into(), int(md.creation_time)),
                ("exit_time".into(), int(md.exit_time)),
                ("process_exit_code".into(), int(md.process_exit_code as u64)),
                ("operation".into(), int(md.operation as u64)),
                ("token_sid_size".into(), int(md.token_sid_size as u64)),
                (
                    "token_sid".into(),
                    ps::sid_to_string(sid).map_or_else(|| Value::Bytes(sid.to_vec()), Value::Str),
                ),
            ];
            for (name, st) in TEST_RUN_STRINGS.iter().zip(&c.strings) {
                context.push((
                    (*name).into(),
                    Value::Struct(vec![
                        ("length".into(), int(st.length as u64)),
                        ("maximum_length".into(), int(st.maximum_length as u64)),
                    ]),
                ));
            }
            context.push((
                "account_lookup_done".into(),
                int(c.account_lookup_done as u64),
            ));
            fields.push(("context".into(), Value::Struct(context)));
            let mut at = 0usize;
            let mut strings = Vec::new();
            for (name, st) in TEST_RUN_STRINGS.iter().zip(&c.strings) {
                let end = at + st.length as usize;
                let text = out
                    .data_out
                    .get(at..end)
                    .map_or(Value::Missing, |b| Value::Str(from_utf16(b)));
                strings.push(((*name).into(), text));
                at = end;
            }
            fields.push(("strings".into(), Value::Struct(strings)));
        }
        None => fields.push(("context".into(), Value::Bytes(out.context_out.clone()))),
    }
    Value::Struct(fields)
}

/// One line for a test-run step.
fn test_run_text(
    program: &str,
    input: &TestRunKind,
    output: &Result<TestRunOutput, String>,
) -> String {
    let out = match output {
        Ok(out) => out,
        Err(e) => return format!("[test-run {program}] FAILED: {e}"),
    };
    let mut parts = vec![format!(
        "[test-run {program}] result {} ({:#x})",
        out.result as u32 as i32, out.result
    )];
    let value = test_run_value(input, output);
    if let TestRunKind::Netevent(_) = input {
        match value.at(&[PathPart::Field("context".into())]) {
            Some(Value::Struct(c)) => {
                let text: Vec<String> = c.iter().map(|(n, v)| format!("{n} {v}")).collect();
                parts.push(format!("ctx_out {}", text.join(", ")));
            }
            _ => parts.push(format!(
                "ctx_out {} bytes (not a netevent_event_md_t)",
                out.context_out.len()
            )),
        }
        parts.push(if out.data_out.is_empty() {
            "data_out 0 bytes".into()
        } else {
            format!(
                "data_out {} bytes {}",
                out.data_out.len(),
                hex(&out.data_out)
            )
        });
        return parts.join(" | ");
    }
    match value.at(&[PathPart::Field("context".into())]) {
        Some(Value::Struct(c)) => {
            let text: Vec<String> = c
                .iter()
                .filter(|(n, _)| !TEST_RUN_STRINGS.contains(&n.as_str()))
                .map(|(n, v)| format!("{n} {v}"))
                .collect();
            parts.push(format!("ctx_out {}", text.join(", ")));
        }
        _ => parts.push(format!(
            "ctx_out {} bytes (not a process_test_run_context_t)",
            out.context_out.len()
        )),
    }
    if let Some(Value::Struct(strings)) = value.at(&[PathPart::Field("strings".into())]) {
        let text: Vec<String> = strings.iter().map(|(n, v)| format!("{n} {v}")).collect();
        parts.push(format!("data_out {}", text.join(", ")));
    } else {
        parts.push(format!("data_out {} bytes", out.data_out.len()));
    }
    parts.join(" | ")
}

/// A hex dump, 16 bytes a row with the offset; runs of all-zero rows after
/// the first are shown as one `*` (as hexdump does).
pub fn hex_dump(out: &mut dyn Write, indent: &str, b: &[u8]) -> Result<(), String> {
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

/// One line describing a `monitor` record (`tests/bpf/process_test.c`):
/// what the program saw of the event.
pub fn describe_record(r: &ProcessRecord) -> String {
    let helper_text = |result: i32, bytes: &[u8]| {
        if result < 0 {
            format!("<error {result}>")
        } else {
            from_utf16(bytes)
        }
    };
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

/// One line describing a `thread_monitor` record (`tests/bpf/sysmon.c`).
pub fn describe_thread_record(r: &ThreadRecord) -> String {
    let mut parts = Vec::new();
    match r.operation {
        thread::OPERATION_CREATE => {
            parts.push(format!(
                "THREAD CREATE tid {} in pid {}",
                r.thread_id, r.process_id
            ));
            parts.push(format!(
                "creator {}:{}",
                r.creating_process_id, r.creating_thread_id
            ));
        }
        thread::OPERATION_EXIT => {
            parts.push(format!(
                "THREAD EXIT tid {} in pid {}",
                r.thread_id, r.process_id
            ));
            parts.push(format!("exit status {:#010x}", r.exit_status));
        }
        n => parts.push(format!("THREAD operation {n} tid {}", r.thread_id)),
    }
    parts.push(format!("start {:#x}", r.start_address));
    let mut flags = Vec::new();
    if r.flags & thread::FLAG_REMOTE != 0 {
        flags.push("REMOTE");
    }
    if r.flags & thread::FLAG_SYSTEM != 0 {
        flags.push("SYSTEM");
    }
    if !flags.is_empty() {
        parts.push(flags.join(","));
    }
    if r.initial != 0 {
        parts.push("first thread".into());
    }
    if r.alert != 0 {
        parts.push("ALERT: remote thread into a watched process (Sysmon event 8)".into());
    }
    parts.join(" | ")
}

/// One line describing an `image_monitor` record (`tests/bpf/sysmon.c`).
pub fn describe_image_record(r: &ImageRecord) -> String {
    let mut parts = vec![if r.flags & image_load::FLAG_SYSTEM_MODE != 0 {
        "DRIVER LOAD (Sysmon event 6)".to_string()
    } else {
        format!("IMAGE LOAD pid {} (Sysmon event 7)", r.process_id)
    }];
    parts.push(format!("thread {}", r.thread_id));
    parts.push(if r.path_length > 0 {
        from_utf16(&r.path)
    } else {
        "<no name>".into()
    });
    parts.push(format!("base {:#x} size {:#x}", r.image_base, r.image_size));
    parts.push(format!(
        "signature level {} type {}",
        r.signature_level, r.signature_type
    ));
    parts.join(" | ")
}

/// A record as text: decoded with its type, or a `monitor`,
/// `thread_monitor` or `image_monitor` record, or hex
/// (the first line; hex rows follow in `rows`).
fn record_text(decoder: &Decoder, map: &str, data: &[u8]) -> (String, bool) {
    if let Some(v) = decoder.record(map, data) {
        return (v.to_string(), false);
    }
    let described = match data.len() {
        RECORD_SIZE => ProcessRecord::parse(data).map(|p| describe_record(&p)),
        thread::RECORD_SIZE => ThreadRecord::parse(data).map(|t| describe_thread_record(&t)),
        image_load::RECORD_SIZE => ImageRecord::parse(data).map(|i| describe_image_record(&i)),
        _ => None,
    };
    if let Some(text) = described {
        return (text, false);
    }
    (format!("{} bytes", data.len()), true)
}

fn map_text(out: &mut dyn Write, m: &MapReport, decoder: &Decoder) -> Result<(), String> {
    let def = &m.def;
    let (key_type, value_type) = decoder.map_types(&m.name);
    let typed = |id: Option<u32>, size: u32| {
        decoder
            .type_name(id)
            .map_or_else(|| format!("{size} B"), |n| format!("{n}, {size} B"))
    };
    say!(
        out,
        "map {} ({}, key {}, value {}, max {}):",
        m.name,
        map_type_name(def.map_type),
        typed(key_type, def.key_size),
        typed(value_type, def.value_size),
        def.max_entries
    )?;
    match def.map_type {
        map_type::RINGBUF | map_type::PERF_EVENT_ARRAY => {
            say!(
                out,
                "  {} record(s) left (records are shown under the step that produced them)",
                m.elements.len()
            )?;
            for (i, r) in m.elements.iter().enumerate() {
                let (line, rows) = record_text(decoder, &m.name, r);
                say!(out, "  #{i}: {line}")?;
                if rows {
                    hex_dump(out, "    ", r)?;
                }
            }
        }
        map_type::QUEUE | map_type::STACK => {
            for (i, v) in m.elements.iter().enumerate() {
                match decoder.value(&m.name, v) {
                    Some(d) => say!(out, "  #{i}: {d}")?,
                    None => {
                        say!(out, "  #{i}:")?;
                        hex_dump(out, "    ", v)?;
                    }
                }
            }
            say!(out, "  {} element(s)", m.elements.len())?;
        }
        map_type::PROG_ARRAY => say!(out, "  (program slots are not listed)")?,
        _ => {
            for (k, v) in &m.entries {
                let key = decoder
                    .key(&m.name, k)
                    .map_or_else(|| hex(k), |d| d.to_string());
                let values: Vec<&[u8]> = if is_percpu(def.map_type) {
                    split_percpu(def.value_size, v)
                } else {
                    vec![v.as_slice()]
                };
                let decoded: Option<Vec<String>> = values
                    .iter()
                    .map(|v| decoder.value(&m.name, v).map(|d| d.to_string()))
                    .collect();
                match decoded {
                    Some(d) if d.len() == 1 => say!(out, "  key {key}: {}", d[0])?,
                    Some(d) => {
                        say!(out, "  key {key}:")?;
                        for (cpu, d) in d.iter().enumerate() {
                            say!(out, "    cpu {cpu}: {d}")?;
                        }
                    }
                    None => {
                        say!(out, "  key {key}:")?;
                        hex_dump(out, "    ", v)?;
                    }
                }
            }
            say!(
                out,
                "  {} key(s), {} all-zero value(s) not shown",
                m.entries.len() + m.zero_omitted,
                m.zero_omitted
            )?;
        }
    }
    Ok(())
}

/// A driver's DbgPrintEx lines and attributed findings, under its line.
fn driver_lines(
    out: &mut dyn Write,
    dbgprint: &[(Option<usize>, String)],
    findings: &[String],
) -> Result<(), String> {
    for (step, text) in dbgprint {
        let at = step.map_or_else(|| "unload".to_string(), |s| format!("step {s}"));
        say!(out, "    dbgprint ({at}): {}", text.trim_end())?;
    }
    for f in findings {
        say!(out, "    finding: {f}")?;
    }
    Ok(())
}

/// Prints what [`EndReport`] says (the end of every run's text).
pub fn end_text(out: &mut dyn Write, end: &EndReport) -> Result<(), String> {
    say!(out, "detached and unloaded {}", end.programs.join(", "))?;
    if end.drivers.len() > 1 {
        for d in &end.drivers {
            match &d.unload_error {
                None => say!(out, "driver {} unloaded", d.name)?,
                Some(e) => say!(out, "driver {} unload failed: {e}", d.name)?,
            }
            driver_lines(out, &d.dbgprint, &d.findings)?;
        }
    } else {
        match &end.unload_error {
            None => say!(out, "driver unloaded")?,
            Some(e) => say!(out, "driver unload failed: {e}")?,
        }
        if let Some(d) = end.drivers.first() {
            driver_lines(out, &d.dbgprint, &[])?;
        }
    }
    for (api, n) in &end.unfired {
        say!(
            out,
            "fault injection: {api} was never called {n} time(s); nothing failed"
        )?;
    }
    if end.findings.is_empty() {
        say!(out, "no leaks, no violations")
    } else {
        say!(out, "{} finding(s):", end.findings.len())?;
        for f in &end.findings {
            say!(out, "  {f}")?;
        }
        Ok(())
    }
}

impl Sink for TextSink<'_> {
    fn note(&mut self, text: &str) -> Result<(), String> {
        say!(&mut *self.0, "{text}")?;
        self.0.flush().map_err(|e| e.to_string())
    }

    fn emit(&mut self, event: &Event, decoder: &Decoder) -> Result<(), String> {
        let out = &mut *self.0;
        match event {
            Event::Start(s) => {
                for (api, n) in &s.faults {
                    say!(out, "fault injection: call #{n} of {api} will fail")?;
                }
                for d in &s.drivers {
                    say!(
                        out,
                        "driver {}: DriverEntry returned {}",
                        d.name,
                        status::describe(d.driver_entry)
                    )?;
                    for text in &d.dbgprint {
                        say!(out, "    dbgprint: {}", text.trim_end())?;
                    }
                }
                say!(
                    out,
                    "object {}: attached {} (in this order)",
                    s.object,
                    s.programs.join(", ")
                )?;
                if let Some(n) = s.steps {
                    say!(out, "events ({n} steps):")?;
                }
                Ok(())
            }
            Event::Step(s) => say!(out, "{}", step_text(s)),
            // The step's line already ends with the verdict.
            Event::Verdict(_) => Ok(()),
            Event::Record(r) => {
                let (line, rows) = record_text(decoder, &r.map, &r.data);
                let cpu = r.cpu.map_or_else(String::new, |c| format!(" (cpu {c})"));
                say!(out, "    record {} #{}{cpu}: {line}", r.map, r.index)?;
                if rows {
                    hex_dump(out, "      ", &r.data)?;
                }
                Ok(())
            }
            Event::Trace { program, text, .. } => {
                say!(out, "    trace {program}: {}", text.trim_end())
            }
            Event::ProgramError { program, text, .. } => {
                say!(out, "    error {program}: {text}")
            }
            Event::Map(m) => map_text(out, m, decoder),
            // Printed on stderr as the driver writes them (`--etw`).
            Event::Etw { .. } => Ok(()),
            Event::End(e) => end_text(out, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netevent test run's step, with `output`.
    fn netevent_run(output: Result<TestRunOutput, String>) -> StepReport {
        StepReport {
            index: 3,
            line: Some(7),
            keyword: "test-run",
            name: "mon".into(),
            outcome: Outcome::TestRun {
                program: "mon".into(),
                input: TestRunKind::Netevent(
                    netevent::TestRunInput::new(101, &[0xab], &[0x0a, 0x0b]).unwrap(),
                ),
                output,
            },
            helpers: Vec::new(),
        }
    }

    #[test]
    fn a_netevent_test_run_reports_its_pointers_and_data_out() {
        let mut context_out = Vec::new();
        for v in [0u64, 0x39, 0x3b] {
            context_out.extend_from_slice(&v.to_le_bytes());
        }
        let step = netevent_run(Ok(TestRunOutput {
            result: 0,
            data_out: vec![0x65, 0, 1, 0],
            context_out,
        }));
        assert_eq!(
            step_text(&step),
            "[test-run mon] result 0 (0x0) | ctx_out data_meta 0, data 57, data_end 59 | \
             data_out 4 bytes 65000100"
        );
        let verdict = verdict_json(&step);
        assert_eq!(
            verdict["test_run"],
            json!({
                "result": 0,
                "data_out": "65000100",
                "context": {"data_meta": 0, "data": 0x39, "data_end": 0x3b},
            })
        );
        let input = &step_json(&step)["input"];
        assert_eq!(
            (&input["type"], &input["header"], &input["data"]),
            (&json!(101), &json!("ab"), &json!("0a0b"))
        );
        let data_in = input["data_in"].as_str().unwrap();
        assert!(data_in.starts_with("6500010065000000ab00"), "{data_in}");
        assert!(data_in.ends_with("000a0b"), "{data_in}");
        assert_eq!(data_in.len(), 2 * (0x39 + 2));

        // A ctx_out that is not three pointers is shown as bytes; an empty
        // data_out as no bytes.
        let short = netevent_run(Ok(TestRunOutput {
            result: u32::MAX as u64,
            data_out: Vec::new(),
            context_out: vec![0; 8],
        }));
        assert_eq!(
            step_text(&short),
            "[test-run mon] result -1 (0xffffffff) | ctx_out 8 bytes (not a \
             netevent_event_md_t) | data_out 0 bytes"
        );
        let failed = netevent_run(Err("refused".into()));
        assert_eq!(step_text(&failed), "[test-run mon] FAILED: refused");
        assert_eq!(
            verdict_json(&failed)["test_run"],
            json!({"error": "refused"})
        );
    }
}
