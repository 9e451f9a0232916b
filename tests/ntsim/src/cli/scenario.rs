//! Scenarios: a small line format describing process creations and exits,
//! threads, image and driver loads, its parser, and a [`Runner`] that raises the events in the
//! simulated kernel ([`crate::kernel::ps`]).
//!
//! # The format
//!
//! One step per line; blank lines and lines starting with `#` are ignored.
//! A line is a keyword, a name, and `key=value` fields separated by spaces.
//!
//! ```text
//! # a shell starts a console, which is denied an editor
//! account alice domain=CORP sid=S-1-5-21-10-20-30-1002
//! create shell image=C:\Windows\explorer.exe cmd="explorer.exe" parent=4 user=alice
//! create con image=C:\Windows\System32\cmd.exe cmd="cmd.exe /c \"dir\"" parent=shell at=5
//! exit con code=0x1
//! ```
//!
//! - `account NAME domain=DOMAIN sid=S-1-... [logon=LUID]`: adds an account
//!   to the table `SecLookupAccountSid` resolves against (the defaults stay:
//!   `NT AUTHORITY\SYSTEM` for S-1-5-18 and `NTSIM\tester` for
//!   [`crate::kernel::ps::test_user_sid`]). Accounts are set up before any
//!   event. `logon` (decimal or `0x` hex) is the logon session of the
//!   account's processes: their tokens' `AuthenticationId`, which
//!   `bpf_get_current_logon_id` returns in code they run (in a creation
//!   callback that is the *creator's* token). Default: 0x3e7, the SYSTEM
//!   session, as for every process of an account without it.
//! - `create NAME image=PATH [cmd=TEXT] [parent=NAME|PID] [creator=NAME|PID:TID]
//!   [user=USER] [pid=PID] [tid=TID] [at=SECONDS]`: creates a process,
//!   called NAME in later lines.
//!   - `image` is the `ImageFileName`; a drive path (`C:\...`) gets the
//!     `\??\` prefix Windows passes to notify routines.
//!   - `cmd` is the `CommandLine`; without it the routines see NULL.
//!   - `parent`: a process created earlier in the scenario (by name), which
//!     is then also the creating process (its initial thread creates the
//!     new one), or a process id (the creating thread is then a System
//!     thread). Default: 4 (System).
//!   - `creator`: the thread that creates the process, when it is not the
//!     parent's: a running process of the scenario (its initial thread), or
//!     `PID:TID` (a live process; TID is added to it if it has no such
//!     thread). A creator distinct from the parent is what a broker process
//!     creating on behalf of another looks like.
//!   - `pid`, `tid`: the process id and its initial thread's id (decimal or
//!     `0x` hex, non-zero multiples of 4, not in use); default: the next
//!     free ids.
//!   - `user`: an account name (`tester`, `SYSTEM`, an `account` line's
//!     NAME, optionally as `DOMAIN\NAME`), a SID (`S-1-5-...`), or `none`
//!     for a token without a user. Default: the parent's user and logon
//!     session (a copy of its token, as on Windows) when the parent is a
//!     process of the scenario; otherwise `tester`.
//! - `exit NAME [code=STATUS] [at=SECONDS]`: ends a process created
//!   earlier; `code` is its exit status (decimal or `0x` hex, default 0).
//! - `thread NAME in=PROCESS [by=PROCESS] [start=ADDRESS] [tid=TID] [at=SECONDS]`:
//!   creates a thread, called NAME in later lines, in a running process
//!   (a scenario name, or `4` for System), created by a thread of `by`
//!   (default: the same process; another process makes it a remote
//!   thread); `start` is its Win32 start address (default 0); `tid` its
//!   exact thread id (a non-zero multiple of 4 not in use; default: the
//!   next free id).
//! - `thread-exit NAME [code=STATUS] [at=SECONDS]`: ends a thread created
//!   by a `thread` line with that exit status (default 0).
//! - `image PROCESS path=PATH base=ADDRESS size=BYTES [at=SECONDS]`: maps an
//!   image (a DLL) into a running process.
//! - `driver path=PATH base=ADDRESS size=BYTES [at=SECONDS]`: loads a driver
//!   into system space (process id 0, on a System thread).
//! - `load-driver NAME`, before the first step: the scenario needs the
//!   repository's driver NAME (one of [`crate::build::DRIVERS`], e.g.
//!   `neteventebpfext`); `ntsim run` and `ntsim test` load the drivers of
//!   these lines, in order, when the command names none
//!   ([`crate::cli::drivers::resolve`]). Not a step: no event.
//!
//! As on Windows, a created process also gets its first thread (created by
//! the creating thread, so it is a remote thread of the creator, start
//! address [`FIRST_THREAD_START`]) and its main image (the process's image
//! name, mapped at [`MAIN_IMAGE_BASE`], [`MAIN_IMAGE_SIZE`] bytes), raised in
//! that order after the process notification (the order Process Monitor
//! shows). An `exit` ends the process's threads first (each with an exit
//! notification carrying the process's exit status), then the process.
//! Addresses and sizes are decimal or `0x` hex.
//! - `test-run PROGRAM [operation=create|delete] [pid=N] [parent=N]
//!   [creator=PID:TID] [code=STATUS] [sid=S-1-...|user=USER] [cmd=TEXT]
//!   [image=PATH] [account=NAME] [domain=DOMAIN] [lookup_done=0|1]
//!   [data_out=N] [at=SECONDS]`: runs the attached program PROGRAM once
//!   through `bpf_prog_test_run` with a process test-run input
//!   ([`crate::hook::process::test_run_input`]): the `process_md_t` fields
//!   (operation default `create`; the step's time is the creation time of a
//!   create, the exit time of a delete; `code` the exit code), the SID
//!   (`user` resolves as for `create`; default: none), and the four strings
//!   packed in `data_in` (command line, image path, account name, account
//!   domain; `image` is passed as written). `lookup_done=1` makes the given
//!   account strings final. `data_out` is the capacity of `data_out`
//!   (default: the size of `data_in`). Only the session that attached the
//!   programs can run it (`ntsim run`, `ntsim test`), not [`Runner`].
//!   The program's type picks the input ([`TestRun::input_for`]): those
//!   fields are a process program's; a netevent program takes
//!   `[type=drop|flow|N] [header=HEX] [data=HEX] [data_out=N]` (`type` a
//!   byte, default drop; `header` the PktMon header after the event id;
//!   `data` the payload), framed by [`crate::hook::netevent::test_run_input`].
//!   A line with fields of both types is an error.
//!
//! Every step happens at a point of the scenario's clock, which starts at
//! [`SCENARIO_EPOCH`] (2024-01-01 00:00:00 UTC): `at=SECONDS` (decimal, may
//! have a fraction) places a step that many seconds after the start;
//! without it a step comes one second after the previous one. Creation and
//! exit times are therefore the same on every run.
//!
//! Values are single words, or double-quoted text; inside quotes `\"` stands
//! for a quote and `\\` for a backslash, any other backslash is kept as is
//! (so `"C:\Users\x"` needs no doubling). Errors name the line:
//! `line 3: exit: no process named "foo" was created`.

use crate::ebpf::TestRunOutput;
use crate::hook::netevent;
use crate::hook::process::{utf16, TestRunInput, TOKEN_SID_MAX_SIZE};
use crate::kernel::ps::{self, Account, ProcessSpec, SID_NAME_USE_USER, SYSTEM_PID};
use crate::kernel::types::GUID;

mod steps;
use crate::kernel::status::{nt_success, NTSTATUS};
use std::collections::HashMap;
use std::fmt;
pub use steps::parse_hex;
use steps::parse_hook_step;
pub use steps::{
    first_thread_and_main_image, ImageStep, NeteventProviderStep, NeteventStep, ProcessRef,
    ThreadExitStep, ThreadStep, FIRST_THREAD_START, MAIN_IMAGE_BASE, MAIN_IMAGE_SIZE,
};

/// FILETIME of 2024-01-01 00:00:00 UTC, where a scenario's clock starts.
pub const SCENARIO_EPOCH: i64 = 133_485_408_000_000_000;

/// FILETIME units per second.
const TICKS_PER_SECOND: i64 = 10_000_000;

/// The built-in scenario (what `ntsim demo` and `ntsim run --builtin`
/// raise): a user's shell starts a console, the console starts an editor
/// that the sample policy (`deny_notepad`) forbids, the shell starts a
/// calculator, a service host runs as SYSTEM, then the calculator and the
/// console exit.
pub const BUILTIN: &str = r#"# ntsim's built-in scenario
create explorer image=C:\Windows\explorer.exe cmd="C:\Windows\explorer.exe" parent=4
create cmd image=C:\Windows\System32\cmd.exe cmd="cmd.exe /c \"echo hello\"" parent=explorer
create notepad image=C:\Windows\System32\notepad.exe cmd="notepad.exe C:\Users\tester\notes.txt" parent=cmd
create calc image=C:\Windows\System32\calc.exe cmd="calc.exe" parent=explorer
create svchost image=C:\Windows\System32\svchost.exe cmd="svchost.exe -k netsvcs" parent=4 user=SYSTEM
exit calc code=0
exit cmd code=0x1 at=10.5
"#;

/// A parse error, with the 1-based line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The parent of a created process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// A process created earlier in the scenario.
    Named(String),
    /// A process id (need not be live).
    Pid(usize),
}

/// The creating thread of a `create` line (`creator=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creator {
    /// The initial thread of a process created earlier in the scenario.
    Named(String),
    /// A thread id in a process id.
    Ids(usize, usize),
}

/// One `create` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    pub line: usize,
    pub name: String,
    /// As passed to the routines (`\??\` added to drive paths).
    pub image: String,
    pub command_line: Option<String>,
    pub parent: Parent,
    /// None: the parent's initial thread for a named parent, else a
    /// System thread.
    pub creator: Option<Creator>,
    /// Binary SID; None: a token without a user.
    pub user_sid: Option<Vec<u8>>,
    /// The user's `logon=` (None: the SYSTEM session).
    pub logon_id: Option<u64>,
    /// Exact process id and initial thread id.
    pub pid: Option<usize>,
    pub tid: Option<usize>,
    /// FILETIME.
    pub time: i64,
}

/// One `exit` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub line: usize,
    pub name: String,
    pub code: NTSTATUS,
    /// FILETIME.
    pub time: i64,
}

/// A step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Create(Create),
    Exit(Exit),
    Thread(ThreadStep),
    ThreadExit(ThreadExitStep),
    Image(ImageStep),
    TestRun(TestRun),
    Netevent(NeteventStep),
    NeteventProvider(NeteventProviderStep),
}

impl Step {
    /// The keyword of the step's line (`create`, `exit`): with
    /// [`Step::name`], how expectations name a step.
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::Create(_) => "create",
            Step::Exit(_) => "exit",
            Step::Thread(_) => "thread",
            Step::ThreadExit(_) => "thread-exit",
            Step::Image(i) if i.process.is_none() => "driver",
            Step::Image(_) => "image",
            Step::TestRun(_) => "test-run",
            Step::Netevent(_) => "netevent",
            Step::NeteventProvider(_) => "netevent-provider",
        }
    }

    /// The name the step's line gives (a process name).
    pub fn name(&self) -> &str {
        match self {
            Step::Create(c) => &c.name,
            Step::Exit(e) => &e.name,
            Step::Thread(t) => &t.name,
            Step::ThreadExit(t) => &t.name,
            Step::Image(i) => i.process.as_deref().unwrap_or(&i.path),
            Step::TestRun(t) => &t.program,
            Step::Netevent(n) => &n.name,
            Step::NeteventProvider(p) => p.action(),
        }
    }

    /// The 1-based line of the step.
    pub fn line(&self) -> usize {
        match self {
            Step::Create(c) => c.line,
            Step::Exit(e) => e.line,
            Step::Thread(t) => t.line,
            Step::ThreadExit(t) => t.line,
            Step::Image(i) => i.line,
            Step::TestRun(t) => t.line,
            Step::Netevent(n) => n.line,
            Step::NeteventProvider(p) => p.line,
        }
    }
}

/// One `test-run` line. The program's type picks the input when the step
/// runs ([`TestRun::input_for`]); a line with only common fields
/// (`data_out`, `at`) has both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    pub line: usize,
    /// The attached program to run.
    pub program: String,
    /// The input for a process program; None when the line has netevent
    /// fields.
    pub process: Option<Box<TestRunInput>>,
    /// The input for a netevent program; None when the line has process
    /// fields.
    pub netevent: Option<netevent::TestRunInput>,
    /// Capacity of `data_out` (None: the size of `data_in`).
    pub data_out: Option<usize>,
}

/// The input of a test run, in the format of the program's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestRunKind {
    Process(Box<TestRunInput>),
    Netevent(netevent::TestRunInput),
}

impl TestRunKind {
    /// `(ctx_in, data_in)` as the driver of the program type expects them.
    pub fn buffers(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            TestRunKind::Process(p) => crate::hook::process::test_run_input(p),
            TestRunKind::Netevent(n) => netevent::test_run_input(n),
        }
    }
}

impl TestRun {
    /// The input for a program of `program_type`: Err (naming the line)
    /// for a type without a test-run format, or when the line's fields
    /// belong to the other type.
    pub fn input_for(&self, program_type: GUID) -> Result<TestRunKind, String> {
        let at = format!("scenario line {}: test-run {}", self.line, self.program);
        if program_type == crate::hook::process::PROGRAM_TYPE {
            self.process
                .clone()
                .map(TestRunKind::Process)
                .ok_or_else(|| {
                    format!(
                        "{at}: a process program; the line has netevent fields ({})",
                        NETEVENT_TEST_RUN_FIELDS.join(", ")
                    )
                })
        } else if program_type == netevent::PROGRAM_TYPE {
            self.netevent
                .clone()
                .map(TestRunKind::Netevent)
                .ok_or_else(|| format!("{at}: a netevent program; the line has process fields"))
        } else {
            Err(format!(
                "{at}: program type {program_type} has no test-run input format (test-run \
                 knows process and netevent programs)"
            ))
        }
    }
}

/// A parsed scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Accounts to add to the default table.
    pub accounts: Vec<Account>,
    /// The repository drivers the scenario needs (`load-driver NAME`
    /// lines, each one of [`crate::build::DRIVERS`]), in load order; empty:
    /// the default (ntosebpfext).
    pub drivers: Vec<String>,
    pub steps: Vec<Step>,
}

/// The built-in scenario, parsed.
pub fn builtin() -> Scenario {
    parse(BUILTIN).expect("the built-in scenario parses")
}

/// Splits a line into words; a word may contain double-quoted parts.
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c != '"' {
                word.push(c);
                continue;
            }
            loop {
                match chars.next() {
                    None => return Err("unterminated quote".into()),
                    Some('"') => break,
                    Some('\\') if matches!(chars.peek(), Some('"') | Some('\\')) => {
                        word.push(chars.next().unwrap());
                    }
                    Some(c) => word.push(c),
                }
            }
        }
        out.push(word);
    }
}

/// A `logon=` value: decimal or `0x` hex, 64 bits.
fn parse_logon(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A SID in text form, or an account of `accounts` by name (optionally
/// `DOMAIN\name`, case-insensitive), or `none`.
fn resolve_user(value: &str, accounts: &[Account]) -> Result<Option<Vec<u8>>, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if value.starts_with("S-") {
        return ps::parse_sid(value)
            .map(Some)
            .ok_or_else(|| format!("user={value}: not a valid SID"));
    }
    let found = accounts.iter().find(|a| {
        value.eq_ignore_ascii_case(&a.name)
            || value.eq_ignore_ascii_case(&format!("{}\\{}", a.domain, a.name))
    });
    match found {
        Some(a) => Ok(Some(a.sid.clone())),
        None => Err(format!(
            "user={value}: no such account (known: {}; or give a SID or `none`)",
            accounts
                .iter()
                .map(|a| format!("{}\\{}", a.domain, a.name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `0x` hex or decimal (negative allowed) as a 32-bit status.
fn parse_status(value: &str) -> Result<NTSTATUS, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16).ok().map(|v| v as i32),
        None => value
            .parse::<i64>()
            .ok()
            .filter(|v| (i32::MIN as i64..=u32::MAX as i64).contains(v))
            .map(|v| v as u32 as i32),
    };
    parsed.ok_or_else(|| format!("code={value}: not a 32-bit number (decimal or 0x hex)"))
}

/// `pid=` / `tid=`: decimal or `0x` hex, a non-zero multiple of 4 (process
/// and thread ids are, on Windows), below 2^32.
fn parse_id(key: &str, value: &str) -> Result<usize, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse::<u64>().ok(),
    };
    match parsed {
        Some(id) if id != 0 && id % 4 == 0 && id < 1 << 32 => Ok(id as usize),
        _ => Err(format!(
            "{key}={value}: not an id (a non-zero multiple of 4 below 2^32, decimal or 0x hex)"
        )),
    }
}

/// `creator=NAME` (a running scenario process) or `creator=PID:TID`.
fn parse_creator(value: &str, names: &HashMap<String, bool>) -> Result<Creator, String> {
    if let Some((p, t)) = value.split_once(':') {
        let pid = parse_id("creator", p).map_err(|_| {
            format!("creator={value}: PID is not a process id (a non-zero multiple of 4)")
        })?;
        let tid = parse_id("creator", t).map_err(|_| {
            format!("creator={value}: TID is not a thread id (a non-zero multiple of 4)")
        })?;
        return Ok(Creator::Ids(pid, tid));
    }
    if names.get(value) == Some(&true) {
        Ok(Creator::Named(value.to_string()))
    } else {
        Err(format!(
            "creator={value}: no running process of that name (or give PID:TID)"
        ))
    }
}

/// The largest `data_out=` of a `test-run` line (the four strings at most
/// fill 4 * 65535 bytes).
pub const MAX_TEST_RUN_DATA_OUT: usize = 1 << 20;

/// The fields of a `test-run` line for a process program.
const PROCESS_TEST_RUN_FIELDS: &[&str] = &[
    "operation",
    "pid",
    "parent",
    "creator",
    "code",
    "sid",
    "user",
    "cmd",
    "image",
    "account",
    "domain",
    "lookup_done",
];

/// The fields of a `test-run` line for a netevent program.
const NETEVENT_TEST_RUN_FIELDS: &[&str] = &["type", "header", "data"];

/// Every field of a `test-run` line: either type's, `data_out` and `at`.
const TEST_RUN_FIELDS: &[&str] = &[
    "operation",
    "pid",
    "parent",
    "creator",
    "code",
    "sid",
    "user",
    "cmd",
    "image",
    "account",
    "domain",
    "lookup_done",
    "type",
    "header",
    "data",
    "data_out",
    "at",
];

/// The netevent test-run input of a `test-run` line's fields: `type=drop|
/// flow|N` (a byte; default drop), `header=HEX` (the PktMon header after
/// the event id), `data=HEX` (the payload).
fn parse_netevent_test_run(fields: &HashMap<&str, &str>) -> Result<netevent::TestRunInput, String> {
    let event_type = match fields.get("type").copied() {
        None | Some("drop") => netevent::EVENT_TYPE_DROP as u8,
        Some("flow") => netevent::EVENT_TYPE_FLOW as u8,
        Some(n) => parse_u64("type", n)?
            .try_into()
            .map_err(|_| format!("test-run: type={n}: write drop, flow or a number below 256 (the data header's type is a byte)"))?,
    };
    let hex = |key: &str| -> Result<Vec<u8>, String> {
        fields
            .get(key)
            .map_or(Ok(Vec::new()), |v| parse_hex(key, v))
            .map_err(|e| format!("test-run: {e}"))
    };
    netevent::TestRunInput::new(event_type, &hex("header")?, &hex("data")?)
        .map_err(|e| format!("test-run: header=: {e}"))
}

/// A number of a `test-run` field: decimal or `0x` hex, 64 bits.
fn parse_u64(key: &str, value: &str) -> Result<u64, String> {
    match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
    .ok_or_else(|| format!("test-run: {key}={value}: not a 64-bit number (decimal or 0x hex)"))
}

/// The test-run input of a `test-run` line's fields, at `time`.
fn parse_test_run(
    fields: &HashMap<&str, &str>,
    time: i64,
    accounts: &[Account],
) -> Result<TestRunInput, String> {
    let mut input = TestRunInput::default();
    let md = &mut input.md;
    let delete = match fields.get("operation").copied() {
        None | Some("create") => false,
        Some("delete") => true,
        Some(other) => {
            return Err(format!(
                "test-run: operation={other}: write create or delete"
            ))
        }
    };
    md.operation = u8::from(delete);
    if delete {
        md.exit_time = time as u64;
    } else {
        md.creation_time = time as u64;
    }
    md.process_id = fields.get("pid").map_or(Ok(0), |v| parse_u64("pid", v))?;
    md.parent_process_id = fields
        .get("parent")
        .map_or(Ok(0), |v| parse_u64("parent", v))?;
    if let Some(c) = fields.get("creator") {
        let (p, t) = c
            .split_once(':')
            .ok_or_else(|| format!("test-run: creator={c}: write PID:TID"))?;
        md.creating_process_id = parse_u64("creator", p)?;
        md.creating_thread_id = parse_u64("creator", t)?;
    }
    if let Some(c) = fields.get("code") {
        md.process_exit_code = parse_status(c)? as u32;
    }
    let sid = match (fields.get("sid"), fields.get("user")) {
        (Some(_), Some(_)) => return Err("test-run: give sid= or user=, not both".into()),
        (Some(s), None) => {
            Some(ps::parse_sid(s).ok_or_else(|| format!("test-run: sid={s}: not a valid SID"))?)
        }
        (None, Some(u)) => resolve_user(u, accounts)?,
        (None, None) => None,
    };
    if let Some(sid) = sid {
        if sid.len() > TOKEN_SID_MAX_SIZE {
            return Err(format!(
                "test-run: the SID is {} bytes; process_md_t holds {TOKEN_SID_MAX_SIZE}",
                sid.len()
            ));
        }
        md.set_sid(&sid);
    }
    for (key, slot) in [
        ("cmd", &mut input.command_line),
        ("image", &mut input.image_path),
        ("account", &mut input.account_name),
        ("domain", &mut input.account_domain),
    ] {
        if let Some(text) = fields.get(key) {
            let bytes = utf16(text);
            if bytes.len() > u16::MAX as usize {
                return Err(format!(
                    "test-run: {key}= is {} bytes in UTF-16; a UNICODE_STRING holds at most {}",
                    bytes.len(),
                    u16::MAX - 1
                ));
            }
            *slot = bytes;
        }
    }
    input.account_lookup_done = match fields.get("lookup_done").copied() {
        None | Some("0") | Some("false") => 0,
        Some("1") | Some("true") => 1,
        Some(other) => return Err(format!("test-run: lookup_done={other}: write 0 or 1")),
    };
    Ok(input)
}

fn parse_at(value: &str) -> Result<i64, String> {
    let seconds: f64 = value
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .ok_or_else(|| format!("at={value}: not a number of seconds (0 or more)"))?;
    Ok(SCENARIO_EPOCH + (seconds * TICKS_PER_SECOND as f64).round() as i64)
}

/// Parses a scenario (the format is in the module documentation).
pub fn parse(text: &str) -> Result<Scenario, ParseError> {
    let mut scenario = Scenario::default();
    let mut accounts = ps::default_accounts();
    // SID -> the logon= of its account line.
    let mut logons: HashMap<Vec<u8>, u64> = HashMap::new();
    // Names created so far, and whether each is still running.
    let mut names: HashMap<String, bool> = HashMap::new();
    // The token (user SID, logon id) of each process created so far, by
    // name and by its `pid=`: what a child created without `user=` inherits.
    let mut tokens: HashMap<String, (Option<Vec<u8>>, Option<u64>)> = HashMap::new();
    let mut tokens_by_pid: HashMap<usize, (Option<Vec<u8>>, Option<u64>)> = HashMap::new();
    let mut clock = SCENARIO_EPOCH;
    // Threads created so far, and whether each is still running.
    let mut thread_names: HashMap<String, bool> = HashMap::new();
    // The netevent providers registered at this point of the scenario.
    let mut providers = std::collections::BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ParseError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words = words(trimmed).map_err(err)?;
        let keyword = words[0].as_str();
        if keyword == "load-driver" {
            let [_, name] = words.as_slice() else {
                return Err(err(
                    "load-driver: write `load-driver NAME` (one driver a line)".into(),
                ));
            };
            if !crate::build::DRIVERS.contains(&name.as_str()) {
                return Err(err(format!(
                    "load-driver: {name:?} is not one of the repository's drivers ({})",
                    crate::build::DRIVERS.join(", ")
                )));
            }
            if scenario.drivers.contains(name) {
                return Err(err(format!("load-driver: {name} given twice")));
            }
            if !scenario.steps.is_empty() {
                return Err(err(
                    "load-driver: name the drivers before the first step (they load before it)"
                        .into(),
                ));
            }
            scenario.drivers.push(name.clone());
            continue;
        }
        // `driver` is the one step without a name.
        let unnamed = keyword == "driver" || keyword == "netevent";
        let no_name = String::new();
        let name = if unnamed {
            &no_name
        } else {
            let Some(name) = words.get(1).filter(|n| !n.contains('=')) else {
                return Err(err(format!("{keyword}: a name must follow the keyword")));
            };
            name
        };
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for w in &words[if unnamed { 1 } else { 2 }..] {
            let Some((k, v)) = w.split_once('=') else {
                return Err(err(format!("{keyword}: `{w}` is not key=value")));
            };
            if fields.insert(k, v).is_some() {
                return Err(err(format!("{keyword}: {k}= given twice")));
            }
        }
        let allowed: &[&str] = match keyword {
            "account" => &["domain", "sid", "logon"],
            "create" => &[
                "image", "cmd", "parent", "creator", "user", "pid", "tid", "at",
            ],
            "exit" => &["code", "at"],
            "thread" => &["in", "by", "start", "tid", "at"],
            "thread-exit" => &["code", "at"],
            "image" | "driver" => &["path", "base", "size", "at"],
            "netevent" => &["type", "data", "header", "raw", "provider", "irql", "at"],
            "netevent-provider" => &["id", "at"],
            "test-run" => TEST_RUN_FIELDS,
            other => {
                return Err(err(format!(
                    "unknown step `{other}` (expected create, exit, thread, thread-exit, \
                     image, driver, test-run, netevent, netevent-provider or account)"
                )))
            }
        };
        if let Some(k) = fields.keys().find(|k| !allowed.contains(k)) {
            return Err(err(format!(
                "{keyword}: unknown field {k}= (allowed: {})",
                allowed.join(", ")
            )));
        }
        if keyword == "account" {
            let sid_text = fields
                .get("sid")
                .ok_or_else(|| err("account: sid= is required".into()))?;
            let sid = ps::parse_sid(sid_text)
                .ok_or_else(|| err(format!("account: sid={sid_text}: not a valid SID")))?;
            let domain = fields.get("domain").copied().unwrap_or("NTSIM").to_string();
            let account = Account {
                sid,
                name: name.clone(),
                domain,
                use_: SID_NAME_USE_USER,
            };
            if let Some(v) = fields.get("logon") {
                let logon = parse_logon(v).ok_or_else(|| {
                    err(format!(
                        "account: logon={v}: not a logon session id (decimal or 0x hex, 64 bits)"
                    ))
                })?;
                logons.insert(account.sid.clone(), logon);
            }
            accounts.push(account.clone());
            scenario.accounts.push(account);
            continue;
        }
        clock = match fields.get("at") {
            Some(v) => parse_at(v).map_err(err)?,
            None => clock + TICKS_PER_SECOND,
        };
        if let Some(step) =
            steps::parse_netevent_step(keyword, name, &fields, line, &mut providers).map_err(err)?
        {
            scenario.steps.push(step);
            continue;
        }
        if let Some(step) =
            parse_hook_step(keyword, name, &fields, line, &names, &mut thread_names).map_err(err)?
        {
            scenario.steps.push(step);
            continue;
        }
        if keyword == "test-run" {
            let field = |set: &[&str]| fields.keys().find(|k| set.contains(k)).copied();
            let (process, netevent) = match (
                field(PROCESS_TEST_RUN_FIELDS),
                field(NETEVENT_TEST_RUN_FIELDS),
            ) {
                (Some(p), Some(n)) => {
                    return Err(err(format!(
                        "test-run: {p}= is a field of process programs, {n}= of netevent \
                         programs; one run has one program type"
                    )))
                }
                (p, n) => (
                    n.is_none()
                        .then(|| parse_test_run(&fields, clock, &accounts).map(Box::new))
                        .transpose()
                        .map_err(err)?,
                    p.is_none()
                        .then(|| parse_netevent_test_run(&fields))
                        .transpose()
                        .map_err(err)?,
                ),
            };
            let data_out = fields
                .get("data_out")
                .map(|v| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n <= MAX_TEST_RUN_DATA_OUT)
                        .ok_or_else(|| {
                            format!(
                                "test-run: data_out={v}: not a byte count (at most \
                                 {MAX_TEST_RUN_DATA_OUT})"
                            )
                        })
                })
                .transpose()
                .map_err(err)?;
            scenario.steps.push(Step::TestRun(TestRun {
                line,
                program: name.clone(),
                process,
                netevent,
                data_out,
            }));
            continue;
        }
        if keyword == "create" {
            if names.get(name.as_str()) == Some(&true) {
                return Err(err(format!("create: a process named {name:?} is running")));
            }
            let image = fields
                .get("image")
                .ok_or_else(|| err("create: image= is required".into()))?;
            let image = if image.as_bytes().get(1) == Some(&b':') {
                format!("\\??\\{image}")
            } else {
                image.to_string()
            };
            let command_line = fields.get("cmd").map(|c| c.to_string());
            for (key, text) in [("image", Some(&image)), ("cmd", command_line.as_ref())] {
                let units = text.map_or(0, |t| t.encode_utf16().count());
                if units > ps::MAX_UNICODE_STRING_UNITS {
                    return Err(err(format!(
                        "create: {key}= is {units} UTF-16 units long; a UNICODE_STRING holds at \
                         most {}",
                        ps::MAX_UNICODE_STRING_UNITS
                    )));
                }
            }
            let parent = match fields.get("parent") {
                None => Parent::Pid(SYSTEM_PID),
                Some(p) => match p.parse::<usize>() {
                    Ok(pid) => Parent::Pid(pid),
                    Err(_) if names.get(*p) == Some(&true) => Parent::Named(p.to_string()),
                    Err(_) => {
                        return Err(err(format!(
                            "create: parent={p}: no running process of that name (or give a pid)"
                        )))
                    }
                },
            };
            // Without `user=`, the new process gets a copy of its parent's
            // primary token, as on Windows, when the parent is a process of
            // the scenario; otherwise the test user's.
            let inherited = match &parent {
                Parent::Named(p) => tokens.get(p).cloned(),
                Parent::Pid(pid) => tokens_by_pid.get(pid).cloned(),
            };
            let (user_sid, logon_id) = match (fields.get("user"), inherited) {
                (Some(u), _) => {
                    let sid = resolve_user(u, &accounts).map_err(err)?;
                    let logon = sid.as_ref().and_then(|sid| logons.get(sid).copied());
                    (sid, logon)
                }
                (None, Some(token)) => token,
                (None, None) => {
                    let sid = ps::test_user_sid();
                    let logon = logons.get(&sid).copied();
                    (Some(sid), logon)
                }
            };
            let creator = match fields.get("creator") {
                None => None,
                Some(c) => Some(parse_creator(c, &names).map_err(err)?),
            };
            let pid = fields
                .get("pid")
                .map(|v| parse_id("pid", v))
                .transpose()
                .map_err(err)?;
            let tid = fields
                .get("tid")
                .map(|v| parse_id("tid", v))
                .transpose()
                .map_err(err)?;
            if pid.is_some() && pid == tid {
                return Err(err(
                    "create: pid= and tid= must differ (one id space)".into()
                ));
            }
            names.insert(name.clone(), true);
            tokens.insert(name.clone(), (user_sid.clone(), logon_id));
            if let Some(pid) = pid {
                tokens_by_pid.insert(pid, (user_sid.clone(), logon_id));
            }
            scenario.steps.push(Step::Create(Create {
                line,
                name: name.clone(),
                image,
                command_line,
                parent,
                creator,
                user_sid,
                logon_id,
                pid,
                tid,
                time: clock,
            }));
        } else {
            match names.get(name.as_str()) {
                Some(true) => {}
                Some(false) => return Err(err(format!("exit: {name:?} already exited"))),
                None => return Err(err(format!("exit: no process named {name:?} was created"))),
            }
            let code = match fields.get("code") {
                Some(c) => parse_status(c).map_err(err)?,
                None => 0,
            };
            names.insert(name.clone(), false);
            scenario.steps.push(Step::Exit(Exit {
                line,
                name: name.clone(),
                code,
                time: clock,
            }));
        }
    }
    Ok(scenario)
}

/// `DOMAIN\name` of `sid` in `accounts`, else the SID's text.
pub fn account_name(accounts: &[Account], sid: Option<&[u8]>) -> String {
    let Some(sid) = sid else {
        return "<no user>".into();
    };
    accounts
        .iter()
        .find(|a| a.sid == sid)
        .map(|a| format!("{}\\{}", a.domain, a.name))
        .or_else(|| ps::sid_to_string(sid))
        .unwrap_or_else(|| "<invalid SID>".into())
}

/// What raising one step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created {
        name: String,
        pid: usize,
        /// The initial thread (None when the creation was denied).
        tid: Option<usize>,
        parent_pid: usize,
        /// `CreationStatus` after every routine ran.
        status: NTSTATUS,
        /// `creating_thread` is always set: the (pid, tid) that created it.
        spec: Box<ProcessSpec>,
        /// The logon id of the new process's token.
        logon_id: u64,
        /// `DOMAIN\name` of the user, as the account table resolves it
        /// (the SID's text when it has no entry, `<no user>` without one).
        account: String,
    },
    Exited {
        name: String,
        pid: usize,
        code: NTSTATUS,
        time: i64,
    },
    /// An exit of a process that is not running (its creation was denied).
    NotRunning { name: String, line: usize },
    ThreadCreated {
        name: String,
        pid: usize,
        tid: usize,
        creator_pid: usize,
        /// The creating thread.
        creator_tid: usize,
        start: usize,
    },
    ThreadExited {
        name: String,
        tid: usize,
        code: NTSTATUS,
    },
    /// An image mapped into `pid` (0: a driver).
    ImageLoaded {
        process: Option<String>,
        pid: usize,
        path: String,
        base: usize,
        size: usize,
    },
    /// A thread or image step naming a process or thread that is not
    /// running (a creation was denied).
    Skipped { what: String, line: usize },
    /// A `netevent` step: what the provider did with the event.
    Netevent(crate::kernel::netevent::Delivery),
    /// A `netevent-provider` step.
    NeteventProvider {
        id: u32,
        /// true: registered; false: deregistered.
        registered: bool,
        /// The module ids of the clients attached to it after the step
        /// (none after a deregistration).
        clients: Vec<crate::kernel::types::GUID>,
    },
    /// A `bpf_prog_test_run` of an attached program.
    TestRun {
        program: String,
        /// The input, in the format of the program's type.
        input: TestRunKind,
        /// What the run returned, or why it failed.
        output: Result<TestRunOutput, String>,
    },
}

impl Outcome {
    /// Whether the programs let the step happen (exits always do).
    pub fn permitted(&self) -> bool {
        match self {
            Outcome::Created { status, .. } => nt_success(*status),
            _ => true,
        }
    }
}

/// Raises a scenario's steps in the simulated kernel. Needs a live
/// [`crate::Sim`]; call [`Runner::new`] after it (it installs the
/// scenario's accounts).
#[derive(Debug)]
pub struct Runner {
    /// Scenario name -> (pid, its initial thread) of running processes.
    running: HashMap<String, (usize, usize)>,
    /// Scenario thread name -> tid of running threads.
    threads: HashMap<String, usize>,
    accounts: Vec<Account>,
}

impl Runner {
    /// Installs `scenario`'s accounts beside the default ones.
    pub fn new(scenario: &Scenario) -> Runner {
        let mut accounts = ps::default_accounts();
        if !scenario.accounts.is_empty() {
            accounts.extend(scenario.accounts.iter().cloned());
            ps::set_accounts(accounts.clone());
        }
        Runner {
            running: HashMap::new(),
            threads: HashMap::new(),
            accounts,
        }
    }

    /// Raises one step. A created process gets its initial thread
    /// (`ps::create_thread`), which creates the processes it is the
    /// parent of. Panics where [`Runner::try_step`] returns an error.
    pub fn step(&mut self, step: &Step) -> Outcome {
        self.try_step(step)
            .unwrap_or_else(|e| panic!("scenario {e}"))
    }

    /// Raises one step; an error (naming the step's line) when the ids it
    /// asks for cannot be had: a `pid=`/`tid=` in use, a creator that is
    /// not running or a `creator=PID:TID` whose thread belongs to another
    /// process.
    pub fn try_step(&mut self, step: &Step) -> Result<Outcome, ParseError> {
        let err = |message: String| ParseError {
            line: step.line(),
            message,
        };
        Ok(match step {
            Step::Create(c) => {
                let parent_pid = match &c.parent {
                    Parent::Pid(pid) => *pid,
                    // The parent's creation was denied: it has no pid;
                    // the new process has no parent (0), as Windows
                    // reports an unknown parent.
                    Parent::Named(n) => self.running.get(n).map_or(0, |p| p.0),
                };
                let creating_thread = match (&c.creator, &c.parent) {
                    (Some(Creator::Named(n)), _) => *self.running.get(n).ok_or_else(|| {
                        err(format!(
                            "create: creator={n} is not running (its creation was denied)"
                        ))
                    })?,
                    (Some(Creator::Ids(pid, tid)), _) => {
                        if ps::process(*pid).is_none() {
                            return Err(err(format!(
                                "create: creator={pid}:{tid}: no live process has id {pid}"
                            )));
                        }
                        match ps::thread_process(*tid) {
                            Some(owner) if owner != *pid => {
                                return Err(err(format!(
                                    "create: creator={pid}:{tid}: thread {tid} belongs to process {owner}"
                                )))
                            }
                            None if ps::id_in_use(*tid) => {
                                return Err(err(format!(
                                    "create: creator={pid}:{tid}: {tid} is a process id"
                                )))
                            }
                            _ => (*pid, *tid),
                        }
                    }
                    (None, Parent::Named(n)) => match self.running.get(n) {
                        Some(&ids) => ids,
                        None => ps::current_ids(),
                    },
                    (None, Parent::Pid(_)) => ps::current_ids(),
                };
                for (key, id) in [("pid", c.pid), ("tid", c.tid)] {
                    if let Some(id) = id.filter(|id| ps::id_in_use(*id)) {
                        return Err(err(format!(
                            "create: {key}={id}: a live process or thread has that id"
                        )));
                    }
                }
                let spec = ProcessSpec {
                    image_file_name: c.image.clone(),
                    command_line: c.command_line.clone(),
                    parent: Some(parent_pid),
                    creating_thread: Some(creating_thread),
                    user_sid: c.user_sid.clone(),
                    logon_id: c.logon_id,
                    pid: c.pid,
                    creation_time: Some(c.time),
                    ..Default::default()
                };
                let created = ps::create_process(&spec);
                let tid = if nt_success(created.creation_status) {
                    let tid = first_thread_and_main_image(created.pid, &spec, c.tid);
                    self.running.insert(c.name.clone(), (created.pid, tid));
                    Some(tid)
                } else {
                    None
                };
                Outcome::Created {
                    name: c.name.clone(),
                    pid: created.pid,
                    tid,
                    parent_pid,
                    status: created.creation_status,
                    logon_id: c.logon_id.unwrap_or(ps::SYSTEM_LUID),
                    account: account_name(&self.accounts, spec.user_sid.as_deref()),
                    spec: Box::new(spec),
                }
            }
            Step::Exit(e) => match self.running.remove(&e.name) {
                Some((pid, _)) => {
                    let exited = ps::thread::exit_process(pid, e.code, Some(e.time));
                    debug_assert!(exited, "a running scenario process is live");
                    Outcome::Exited {
                        name: e.name.clone(),
                        pid,
                        code: e.code,
                        time: e.time,
                    }
                }
                None => Outcome::NotRunning {
                    name: e.name.clone(),
                    line: e.line,
                },
            },
            Step::Thread(t) => self.thread(t),
            Step::ThreadExit(t) => match self.threads.remove(&t.name) {
                Some(tid) => {
                    let exited = ps::thread::exit_thread(tid, t.code);
                    debug_assert!(exited, "a running scenario thread is live");
                    Outcome::ThreadExited {
                        name: t.name.clone(),
                        tid,
                        code: t.code,
                    }
                }
                None => Outcome::Skipped {
                    what: format!("thread-exit {}", t.name),
                    line: t.line,
                },
            },
            Step::Image(i) => self.image(i),
            Step::Netevent(n) => steps::raise_netevent(n).map_err(err)?,
            Step::NeteventProvider(p) => steps::raise_netevent_provider(p).map_err(err)?,
            Step::TestRun(t) => {
                return Err(err(format!(
                    "test-run {}: a test run needs the attached programs (ntsim run, ntsim \
                     test), not the kernel alone",
                    t.program
                )))
            }
        })
    }
}

/// The host's process activity as events (Linux, `/proc`): what `ntsim run
/// --live SECONDS` raises.
///
/// [`Host::mirror`] creates every running host process in the simulated
/// process table (call it before programs attach, so no routine sees
/// them); [`Host::poll`] then creates the processes that started since
/// and exits those that ended. A host process is known by its pid and
/// start time (so a reused pid is a new process); the simulated kernel
/// gives it a pid of its own and an initial thread, and its parent is the
/// simulated process of its host parent. Its image is the target of
/// `/proc/PID/exe` (`[comm]` when unreadable), its command line
/// `/proc/PID/cmdline` (arguments joined by spaces; NULL when empty), its
/// creation time the host's, its user `S-1-22-1-UID` (the "Unix User" SIDs
/// Samba maps uids to), named after `/etc/passwd`.
///
/// Each mirrored process also gets its first thread and main image as a
/// scenario `create` does, and, best effort, its host threads
/// (`/proc/PID/task`: a new task is a local thread of its process, start
/// address 0; a task that ends exits with status 0) and its executable file
/// mappings (`/proc/PID/maps` lines with `x` permission and a path: one
/// image load per file, based at the file's lowest mapping and as large as
/// its mappings span), at most [`live::MAX_THREADS`] threads and [`live::MAX_IMAGES`]
/// images per process; mappings are rescanned every [`live::MAPS_EVERY`] polls.
///
/// Limits: a process, thread or mapping that starts and ends between two
/// polls is not seen; Linux tells only a parent how a process ended, so
/// exits carry code 0; the creator of a host thread is taken to be its own
/// process (Linux does not record it).
#[cfg(target_os = "linux")]
pub mod live;

#[cfg(test)]
mod tests;
