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
//!     for a token without a user. Default: `tester`.
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
use crate::hook::process::{utf16, TestRunInput, TOKEN_SID_MAX_SIZE};
use crate::kernel::ps::{self, Account, ProcessSpec, SID_NAME_USE_USER, SYSTEM_PID};

mod steps;
use crate::kernel::status::{nt_success, NTSTATUS};
use std::collections::HashMap;
use std::fmt;
use steps::parse_hook_step;
pub use steps::{
    first_thread_and_main_image, ImageStep, ProcessRef, ThreadExitStep, ThreadStep,
    FIRST_THREAD_START, MAIN_IMAGE_BASE, MAIN_IMAGE_SIZE,
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
        }
    }
}

/// One `test-run` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    pub line: usize,
    /// The attached program to run.
    pub program: String,
    pub input: Box<TestRunInput>,
    /// Capacity of `data_out` (None: the size of `data_in`).
    pub data_out: Option<usize>,
}

/// A parsed scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Accounts to add to the default table.
    pub accounts: Vec<Account>,
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
    let mut clock = SCENARIO_EPOCH;
    // Threads created so far, and whether each is still running.
    let mut thread_names: HashMap<String, bool> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ParseError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words = words(trimmed).map_err(err)?;
        let keyword = words[0].as_str();
        // `driver` is the one step without a name.
        let unnamed = keyword == "driver";
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
            "test-run" => &[
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
                "data_out",
                "at",
            ],
            other => {
                return Err(err(format!(
                    "unknown step `{other}` (expected create, exit, thread, thread-exit, \
                     image, driver, test-run or account)"
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
            parse_hook_step(keyword, name, &fields, line, &names, &mut thread_names).map_err(err)?
        {
            scenario.steps.push(step);
            continue;
        }
        if keyword == "test-run" {
            let input = parse_test_run(&fields, clock, &accounts).map_err(err)?;
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
                input: Box::new(input),
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
            let user_sid = match fields.get("user") {
                None => Some(ps::test_user_sid()),
                Some(u) => resolve_user(u, &accounts).map_err(err)?,
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
            let logon_id = user_sid.as_ref().and_then(|sid| logons.get(sid).copied());
            names.insert(name.clone(), true);
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
    /// A `bpf_prog_test_run` of an attached program.
    TestRun {
        program: String,
        input: Box<TestRunInput>,
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
pub mod live {
    use super::{account_name, Outcome};
    use crate::kernel::ps::{self, Account, ProcessSpec, SID_NAME_USE_USER};
    use crate::kernel::status::nt_success;
    use std::collections::{HashMap, HashSet};

    /// A host process as `/proc` shows it.
    #[derive(Clone, Debug)]
    struct Seen {
        pid: u32,
        /// Clock ticks after boot.
        start: u64,
        ppid: u32,
        uid: u32,
        comm: String,
        exe: Option<String>,
        cmdline: Option<String>,
    }

    #[derive(Clone, Debug)]
    struct Mirrored {
        pid: usize,
        tid: usize,
        label: String,
        /// Host task id -> simulated thread id (the main task is `tid`).
        threads: HashMap<u32, usize>,
        /// Paths of the images raised for this process.
        images: HashSet<String>,
    }

    /// Threads mirrored per process at most.
    pub const MAX_THREADS: usize = 64;
    /// Images mirrored per process at most.
    pub const MAX_IMAGES: usize = 256;
    /// Polls between two scans of the processes' mappings.
    pub const MAPS_EVERY: u64 = 5;

    /// The host tasks of process `pid`, sorted.
    fn tasks(pid: u32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        let mut t: Vec<u32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        t.sort_unstable();
        t
    }

    /// The executable files mapped by process `pid`: (path, lowest start,
    /// span), in order of address.
    fn executable_mappings(pid: u32) -> Vec<(String, usize, usize)> {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return Vec::new();
        };
        // path -> (lowest start, highest end, any executable mapping)
        let mut files: HashMap<String, (usize, usize, bool)> = HashMap::new();
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                continue;
            };
            let Some(path) = f.nth(3).filter(|p| p.starts_with('/')) else {
                continue;
            };
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            let e = files.entry(path.to_string()).or_insert((a, b, false));
            e.0 = e.0.min(a);
            e.1 = e.1.max(b);
            e.2 |= perms.as_bytes().get(2) == Some(&b'x');
        }
        let mut out: Vec<(String, usize, usize)> = files
            .into_iter()
            .filter(|(_, (_, _, x))| *x)
            .map(|(p, (a, b, _))| (p, a, b - a))
            .collect();
        out.sort_by_key(|(_, a, _)| *a);
        out
    }

    /// Host processes mirrored into the simulated kernel.
    #[derive(Debug)]
    pub struct Host {
        known: HashMap<(u32, u64), Mirrored>,
        polls: u64,
        /// Processes whose creation a program denied (not raised again).
        denied: HashSet<(u32, u64)>,
        uids: HashSet<u32>,
        accounts: Vec<Account>,
        passwd: HashMap<u32, String>,
        boot_filetime: i64,
        ticks_per_second: u64,
    }

    fn read(pid: u32) -> Option<Seen> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_string();
        let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        // Field 4 is the ppid and field 22 the start time (1-based, as in
        // proc(5)); `fields` starts at field 3.
        let ppid = fields.get(1)?.parse().ok()?;
        let start = fields.get(19)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok())?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| fit_unicode_string(p.display().to_string()));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|c| !c.is_empty())
            .map(fit_unicode_string);
        Some(Seen {
            pid,
            start,
            ppid,
            uid,
            comm,
            exe,
            cmdline,
        })
    }

    /// Shortens a host string to what a UNICODE_STRING holds (32767 UTF-16
    /// units; Linux command lines can be longer).
    fn fit_unicode_string(mut s: String) -> String {
        let mut units = 0;
        if let Some((cut, _)) = s.char_indices().find(|(_, c)| {
            units += c.len_utf16();
            units > ps::MAX_UNICODE_STRING_UNITS
        }) {
            s.truncate(cut);
        }
        s
    }

    /// Every process in `/proc`, oldest first (parents before children).
    fn scan() -> Result<Vec<Seen>, String> {
        let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
        let mut seen: Vec<Seen> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(read)
            .collect();
        seen.sort_by_key(|s| (s.start, s.pid));
        Ok(seen)
    }

    fn boot_filetime() -> Result<i64, String> {
        let stat = std::fs::read_to_string("/proc/stat")
            .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
        let btime: i64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("/proc/stat has no btime line")?;
        Ok(crate::kernel::time::UNIX_EPOCH_AS_FILETIME + btime * 10_000_000)
    }

    fn passwd() -> HashMap<u32, String> {
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let uid = f.nth(1)?.parse().ok()?;
                Some((uid, name.to_string()))
            })
            .collect()
    }

    /// The "Unix User" SID of a uid (S-1-22-1-UID).
    pub fn uid_sid(uid: u32) -> Vec<u8> {
        ps::parse_sid(&format!("S-1-22-1-{uid}")).expect("a valid SID")
    }

    impl Host {
        /// Creates every running host process in the simulated kernel.
        /// Call it before attaching programs (no routine is registered
        /// yet, so nothing reports these creations).
        pub fn mirror() -> Result<Host, String> {
            // SAFETY: sysconf reads a configuration value; no pointers.
            let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            let mut host = Host {
                known: HashMap::new(),
                polls: 0,
                denied: HashSet::new(),
                uids: HashSet::new(),
                accounts: ps::default_accounts(),
                passwd: passwd(),
                boot_filetime: boot_filetime()?,
                ticks_per_second: if tick > 0 { tick as u64 } else { 100 },
            };
            for seen in scan()? {
                host.create(&seen);
            }
            let mut keys: Vec<(u32, u64)> = host.known.keys().copied().collect();
            keys.sort();
            for key in keys {
                host.threads_of(key);
                host.images_of(key);
            }
            Ok(host)
        }

        /// How many host processes are mirrored.
        pub fn len(&self) -> usize {
            self.known.len()
        }

        /// Whether no host process is mirrored.
        pub fn is_empty(&self) -> bool {
            self.known.is_empty()
        }

        fn user(&mut self, uid: u32) -> Vec<u8> {
            let sid = uid_sid(uid);
            if self.uids.insert(uid) {
                let name = self
                    .passwd
                    .get(&uid)
                    .cloned()
                    .unwrap_or_else(|| format!("uid{uid}"));
                self.accounts.push(Account {
                    sid: sid.clone(),
                    name,
                    domain: "Unix User".into(),
                    use_: SID_NAME_USE_USER,
                });
                ps::set_accounts(self.accounts.clone());
            }
            sid
        }

        fn create(&mut self, seen: &Seen) -> Outcome {
            let parent = self
                .known
                .iter()
                .find(|((pid, _), _)| *pid == seen.ppid)
                .map(|(_, m)| (m.pid, m.tid));
            let spec = ProcessSpec {
                image_file_name: seen
                    .exe
                    .clone()
                    .unwrap_or_else(|| format!("[{}]", seen.comm)),
                command_line: seen.cmdline.clone(),
                parent: Some(parent.map_or(0, |p| p.0)),
                creating_thread: Some(parent.unwrap_or_else(ps::current_ids)),
                user_sid: Some(self.user(seen.uid)),
                creation_time: Some(
                    self.boot_filetime + (seen.start * 10_000_000 / self.ticks_per_second) as i64,
                ),
                ..Default::default()
            };
            let created = ps::create_process(&spec);
            let label = format!("{}/{}", seen.comm, seen.pid);
            let key = (seen.pid, seen.start);
            let mut initial = None;
            if nt_success(created.creation_status) {
                let tid = super::first_thread_and_main_image(created.pid, &spec, None);
                initial = Some(tid);
                self.known.insert(
                    key,
                    Mirrored {
                        pid: created.pid,
                        tid,
                        label: label.clone(),
                        threads: HashMap::from([(seen.pid, tid)]),
                        images: HashSet::from([spec.image_file_name.clone()]),
                    },
                );
            } else {
                self.denied.insert(key);
            }
            Outcome::Created {
                name: label,
                pid: created.pid,
                tid: initial,
                logon_id: ps::SYSTEM_LUID,
                parent_pid: spec.parent.unwrap_or(0),
                status: created.creation_status,
                account: account_name(&self.accounts, spec.user_sid.as_deref()),
                spec: Box::new(spec),
            }
        }

        /// Creates the host tasks of `key` that are new, exits those that
        /// ended (at most [`live::MAX_THREADS`] mirrored).
        fn threads_of(&mut self, key: (u32, u64)) -> Vec<Outcome> {
            let Some(m) = self.known.get_mut(&key) else {
                return Vec::new();
            };
            let now = tasks(key.0);
            let mut out = Vec::new();
            let mut ended: Vec<u32> = m
                .threads
                .keys()
                .filter(|t| **t != key.0 && now.binary_search(t).is_err())
                .copied()
                .collect();
            ended.sort_unstable();
            for host_tid in ended {
                let tid = m.threads.remove(&host_tid).expect("a known task");
                if ps::thread::exit_thread(tid, 0) {
                    out.push(Outcome::ThreadExited {
                        name: format!("{}/task {host_tid}", m.label),
                        tid,
                        code: 0,
                    });
                }
            }
            for host_tid in now {
                if m.threads.len() >= MAX_THREADS {
                    break;
                }
                if m.threads.contains_key(&host_tid) {
                    continue;
                }
                let tid = ps::thread::create_thread(&ps::thread::ThreadSpec {
                    process: m.pid,
                    creator: Some(m.pid),
                    creating_thread: Some(m.tid),
                    start_address: 0,
                });
                m.threads.insert(host_tid, tid);
                out.push(Outcome::ThreadCreated {
                    name: format!("{}/task {host_tid}", m.label),
                    pid: m.pid,
                    tid,
                    creator_pid: m.pid,
                    creator_tid: m.tid,
                    start: 0,
                });
            }
            out
        }

        /// Loads the executable files `key` mapped since the last scan (at
        /// most [`MAX_IMAGES`] per process).
        fn images_of(&mut self, key: (u32, u64)) -> Vec<Outcome> {
            let Some(m) = self.known.get_mut(&key) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (path, base, size) in executable_mappings(key.0) {
                if m.images.len() >= MAX_IMAGES {
                    break;
                }
                if !m.images.insert(path.clone()) {
                    continue;
                }
                ps::image::load_user_image(
                    m.pid,
                    &ps::image::ImageSpec {
                        path: path.clone(),
                        base,
                        size,
                        ..Default::default()
                    },
                );
                out.push(Outcome::ImageLoaded {
                    process: Some(m.label.clone()),
                    pid: m.pid,
                    path,
                    base,
                    size,
                });
            }
            out
        }

        /// Raises what changed on the host since the last call: creations
        /// (oldest first), then threads and images of every mirrored
        /// process, then exits.
        pub fn poll(&mut self) -> Vec<Outcome> {
            let Ok(now) = scan() else {
                return Vec::new();
            };
            self.polls += 1;
            let mut outcomes = Vec::new();
            let current: HashSet<(u32, u64)> = now.iter().map(|s| (s.pid, s.start)).collect();
            for seen in &now {
                let key = (seen.pid, seen.start);
                if !self.known.contains_key(&key) && !self.denied.contains(&key) {
                    outcomes.push(self.create(seen));
                }
            }
            let mut keys: Vec<(u32, u64)> = self
                .known
                .keys()
                .filter(|k| current.contains(k))
                .copied()
                .collect();
            keys.sort();
            for key in keys {
                outcomes.extend(self.threads_of(key));
                if self.polls.is_multiple_of(MAPS_EVERY) {
                    outcomes.extend(self.images_of(key));
                }
            }
            let mut gone: Vec<(u32, u64)> = self
                .known
                .keys()
                .filter(|k| !current.contains(k))
                .copied()
                .collect();
            gone.sort();
            for key in gone {
                let m = self.known.remove(&key).expect("a known process");
                let time = ps::filetime_now();
                if ps::thread::exit_process(m.pid, 0, Some(time)) {
                    outcomes.push(Outcome::Exited {
                        name: m.label,
                        pid: m.pid,
                        code: 0,
                        time,
                    });
                }
            }
            self.denied.retain(|k| current.contains(k));
            outcomes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_with_quotes_escapes_and_prefixes() {
        let s = builtin();
        assert_eq!(s.steps.len(), 7);
        let Step::Create(cmd) = &s.steps[1] else {
            panic!("step 2 creates cmd")
        };
        assert_eq!(cmd.image, "\\??\\C:\\Windows\\System32\\cmd.exe");
        assert_eq!(
            cmd.command_line.as_deref(),
            Some("cmd.exe /c \"echo hello\"")
        );
        assert_eq!(cmd.parent, Parent::Named("explorer".into()));
        assert_eq!(cmd.user_sid, Some(ps::test_user_sid()));
        assert_eq!(cmd.time, SCENARIO_EPOCH + 2 * TICKS_PER_SECOND);
        let Step::Create(notepad) = &s.steps[2] else {
            panic!("step 3 creates notepad")
        };
        assert_eq!(
            notepad.command_line.as_deref(),
            Some("notepad.exe C:\\Users\\tester\\notes.txt"),
            "backslashes other than \\\" and \\\\ are kept"
        );
        let Step::Create(svc) = &s.steps[4] else {
            panic!("step 5 creates svchost")
        };
        assert_eq!(svc.user_sid, Some(ps::SYSTEM_SID.to_vec()));
        let Step::Exit(exit) = &s.steps[6] else {
            panic!("step 7 is an exit")
        };
        assert_eq!((exit.code, exit.time), (1, SCENARIO_EPOCH + 105_000_000));
    }

    #[test]
    fn accounts_users_and_codes() {
        let s = parse(
            "account alice domain=CORP sid=S-1-5-21-10-20-30-1002\n\
             create a image=\\Device\\x.exe user=CORP\\alice\n\
             create b image=x.exe user=none parent=a\n\
             create c image=y.exe user=S-1-5-18 parent=1234\n\
             exit a code=-1073741819\n\
             exit b code=0xC0000005\n",
        )
        .unwrap();
        assert_eq!(s.accounts.len(), 1);
        let sid = ps::parse_sid("S-1-5-21-10-20-30-1002").unwrap();
        let Step::Create(a) = &s.steps[0] else {
            panic!()
        };
        assert_eq!(a.image, "\\Device\\x.exe", "no prefix on a non-drive path");
        assert_eq!(a.user_sid, Some(sid));
        let Step::Create(b) = &s.steps[1] else {
            panic!()
        };
        assert_eq!(b.user_sid, None);
        let Step::Create(c) = &s.steps[2] else {
            panic!()
        };
        assert_eq!(c.parent, Parent::Pid(1234));
        let codes: Vec<_> = s.steps[3..]
            .iter()
            .map(|s| match s {
                Step::Exit(e) => e.code as u32,
                _ => panic!(),
            })
            .collect();
        assert_eq!(codes, [0xC000_0005, 0xC000_0005]);
    }

    #[test]
    fn an_accounts_logon_session_goes_to_its_processes_tokens() {
        let _sim = crate::Sim::new();
        let s = parse(
            "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1234\n\
             account bob sid=S-1-5-21-10-20-30-1003 logon=77\n\
             create a image=C:\\a.exe user=alice\n\
             create b image=C:\\b.exe user=bob\n\
             create t image=C:\\t.exe\n",
        )
        .unwrap();
        let logons: Vec<_> = s
            .steps
            .iter()
            .map(|st| match st {
                Step::Create(c) => c.logon_id,
                other => panic!("only creations: {other:?}"),
            })
            .collect();
        assert_eq!(logons, [Some(0x1234), Some(77), None]);
        let mut runner = Runner::new(&s);
        let mut tokens = Vec::new();
        for st in &s.steps {
            let Outcome::Created { pid, .. } = runner.step(st) else {
                panic!("created");
            };
            tokens.push(ps::process(pid).unwrap().logon_id);
        }
        assert_eq!(tokens, [0x1234, 77, ps::SYSTEM_LUID]);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("create a\n", 1, "image= is required"),
            ("\n# c\nfork a image=x\n", 3, "unknown step `fork`"),
            ("create a image=x\nexit b\n", 2, "no process named \"b\""),
            ("create a image=x\nexit a\nexit a\n", 3, "already exited"),
            ("create a image=x parent=zz\n", 1, "parent=zz"),
            (
                "create a image=x user=bob\n",
                1,
                "user=bob: no such account",
            ),
            ("create a image=x user=S-1-x\n", 1, "not a valid SID"),
            ("create a image=x color=red\n", 1, "unknown field color="),
            ("create a image=x cmd=\"open\n", 1, "unterminated quote"),
            ("create a image=x\nexit a code=0xZZ\n", 2, "code=0xZZ"),
            ("create a image=x at=-3\n", 1, "at=-3"),
            ("create image=x\n", 1, "a name must follow"),
            ("create a image=x image=y\n", 1, "image= given twice"),
            ("create a image=x\ncreate a image=y\n", 2, "is running"),
            (
                "account a sid=S-1-5-18 logon=zz\n",
                1,
                "logon=zz: not a logon",
            ),
        ];
        let long_cmd = format!("create a image=x cmd={}\n", "y".repeat(32768));
        let long_image = format!("create a image={}\n", "y".repeat(32768));
        let long = [
            (long_cmd.as_str(), 1, "cmd= is 32768 UTF-16 units long"),
            (long_image.as_str(), 1, "image= is 32768 UTF-16 units long"),
        ];
        for (text, line, needle) in cases.into_iter().chain(long) {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn runner_raises_events_in_the_kernel() {
        let _sim = crate::Sim::new();
        let s = parse(
            "create p image=C:\\p.exe\n\
             create c image=C:\\c.exe parent=p cmd=\"c -x\"\n\
             exit c code=7\n\
             exit p\n",
        )
        .unwrap();
        let mut runner = Runner::new(&s);
        let mut outcomes: Vec<_> = s.steps[..2].iter().map(|st| runner.step(st)).collect();
        let Outcome::Created { pid: p, .. } = outcomes[0] else {
            panic!()
        };
        let Outcome::Created {
            pid: c,
            parent_pid,
            ref spec,
            status,
            ..
        } = outcomes[1]
        else {
            panic!()
        };
        assert_eq!((parent_pid, status), (p, 0));
        let creator = spec
            .creating_thread
            .expect("created by the parent's thread");
        assert_eq!(creator.0, p);
        assert_eq!(
            ps::thread_process(creator.1),
            Some(p),
            "the parent's initial thread"
        );
        let child = ps::process(c).expect("the child is running");
        assert_eq!(child.command_line.as_deref(), Some("c -x"));
        assert_eq!(child.creation_time, SCENARIO_EPOCH + 2 * TICKS_PER_SECOND);
        outcomes.extend(s.steps[2..].iter().map(|st| runner.step(st)));
        assert_eq!(
            outcomes[2],
            Outcome::Exited {
                name: "c".into(),
                pid: c,
                code: 7,
                time: SCENARIO_EPOCH + 3 * TICKS_PER_SECOND
            }
        );
        assert!(ps::process(p).is_none() && ps::process(c).is_none());
    }

    #[test]
    fn exact_ids_creators_and_logon_ids_parse() {
        let s = parse(
            "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1a2b3c\n\
             create broker image=b.exe pid=0x1000 tid=4100 user=alice\n\
             create app image=a.exe parent=4 creator=broker\n\
             create other image=o.exe parent=broker creator=4:0x2000 user=tester\n",
        )
        .unwrap();
        let Step::Create(b) = &s.steps[0] else {
            panic!()
        };
        assert_eq!(
            (b.pid, b.tid, b.logon_id),
            (Some(0x1000), Some(4100), Some(0x1a2b3c))
        );
        let Step::Create(a) = &s.steps[1] else {
            panic!()
        };
        assert_eq!(a.creator, Some(Creator::Named("broker".into())));
        assert_eq!(a.parent, Parent::Pid(4));
        let Step::Create(o) = &s.steps[2] else {
            panic!()
        };
        assert_eq!(o.creator, Some(Creator::Ids(4, 0x2000)));
        assert_eq!(o.logon_id, None, "tester has no logon= line");
        assert_eq!(
            (s.steps[2].keyword(), s.steps[2].name(), s.steps[2].line()),
            ("create", "other", 4)
        );

        let cases = [
            ("create a image=x pid=6\n", "pid=6: not an id"),
            ("create a image=x tid=0\n", "tid=0: not an id"),
            ("create a image=x pid=0x100000000\n", "not an id"),
            ("create a image=x pid=8 tid=8\n", "must differ"),
            (
                "create a image=x creator=zz\n",
                "creator=zz: no running process",
            ),
            ("create a image=x creator=4:7\n", "TID is not a thread id"),
            (
                "account a sid=S-1-5-18 logon=0x1g\n",
                "logon=0x1g: not a logon session id",
            ),
        ];
        for (text, needle) in cases {
            let e = parse(text).expect_err(text);
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn runner_gives_exact_ids_distinct_creators_and_logon_ids() {
        let _sim = crate::Sim::new();
        let s = parse(
            "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1a2b3c\n\
             create broker image=b.exe pid=0x1000 tid=0x1004 user=alice\n\
             create app image=a.exe parent=4 creator=broker pid=0x2000\n\
             create dup image=d.exe pid=0x1000\n",
        )
        .unwrap();
        let mut runner = Runner::new(&s);
        let broker = runner.try_step(&s.steps[0]).unwrap();
        let Outcome::Created {
            pid, tid, logon_id, ..
        } = broker
        else {
            panic!()
        };
        assert_eq!((pid, tid, logon_id), (0x1000, Some(0x1004), 0x1a2b3c));
        assert_eq!(ps::thread_process(0x1004), Some(0x1000));
        assert_eq!(ps::process(0x1000).unwrap().logon_id, 0x1a2b3c);
        let app = runner.try_step(&s.steps[1]).unwrap();
        let Outcome::Created {
            pid,
            parent_pid,
            ref spec,
            logon_id,
            ..
        } = app
        else {
            panic!()
        };
        assert_eq!((pid, parent_pid), (0x2000, 4));
        assert_eq!(
            spec.creating_thread,
            Some((0x1000, 0x1004)),
            "created by the broker"
        );
        assert_eq!(logon_id, ps::SYSTEM_LUID);
        let e = runner.try_step(&s.steps[2]).expect_err("pid in use");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("pid=4096: a live process"), "{e}");
    }

    #[test]
    fn test_run_lines_build_the_process_test_run_input() {
        let s = parse(
            "account alice domain=CORP sid=S-1-5-21-10-20-30-1002\n\
             test-run mon pid=0x10 parent=4 creator=8:12 user=alice cmd=\"a b\" image=C:\\a.exe \
             account=x domain=D lookup_done=1 data_out=64 at=2\n\
             test-run mon operation=delete code=0x103 sid=S-1-5-18\n",
        )
        .unwrap();
        let Step::TestRun(t) = &s.steps[0] else {
            panic!("{:?}", s.steps[0])
        };
        assert_eq!(
            (t.program.as_str(), t.line, t.data_out),
            ("mon", 2, Some(64))
        );
        assert_eq!(
            (s.steps[0].keyword(), s.steps[0].name()),
            ("test-run", "mon")
        );
        let md = &t.input.md;
        assert_eq!(
            (
                md.process_id,
                md.parent_process_id,
                md.creating_process_id,
                md.creating_thread_id,
                md.operation
            ),
            (0x10, 4, 8, 12, 0)
        );
        assert_eq!(
            md.creation_time,
            (SCENARIO_EPOCH + 2 * TICKS_PER_SECOND) as u64
        );
        assert_eq!(md.exit_time, 0);
        let alice = ps::parse_sid("S-1-5-21-10-20-30-1002").unwrap();
        assert_eq!(&md.token_sid[..alice.len()], alice.as_slice());
        assert_eq!(md.token_sid_size as usize, alice.len());
        assert_eq!(t.input.command_line, utf16("a b"));
        assert_eq!(t.input.image_path, utf16("C:\\a.exe"), "passed as written");
        assert_eq!(t.input.account_name, utf16("x"));
        assert_eq!(t.input.account_domain, utf16("D"));
        assert_eq!(t.input.account_lookup_done, 1);
        let Step::TestRun(d) = &s.steps[1] else {
            panic!()
        };
        assert_eq!(
            (
                d.input.md.operation,
                d.input.md.process_exit_code,
                d.data_out
            ),
            (1, 0x103, None)
        );
        assert_eq!(
            d.input.md.exit_time,
            (SCENARIO_EPOCH + 3 * TICKS_PER_SECOND) as u64
        );
        assert_eq!(d.input.md.creation_time, 0);
        assert_eq!(d.input.md.token_sid_size, 12);

        for (text, needle) in [
            (
                "test-run m operation=start\n",
                "operation=start: write create or delete",
            ),
            ("test-run m pid=x\n", "pid=x: not a 64-bit number"),
            ("test-run m creator=8\n", "creator=8: write PID:TID"),
            (
                "test-run m sid=S-1-5-18 user=SYSTEM\n",
                "sid= or user=, not both",
            ),
            ("test-run m sid=S-9\n", "sid=S-9: not a valid SID"),
            ("test-run m lookup_done=2\n", "lookup_done=2: write 0 or 1"),
            ("test-run m data_out=-1\n", "data_out=-1: not a byte count"),
            ("test-run m tid=4\n", "unknown field tid="),
            ("test-run pid=4\n", "a name must follow"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
        let long = format!("test-run m cmd={}\n", "y".repeat(32768));
        let e = parse(&long).expect_err("too long");
        assert!(
            e.to_string().contains("cmd= is 65536 bytes in UTF-16"),
            "{e}"
        );
    }

    #[test]
    fn the_runner_alone_cannot_run_a_test_run() {
        let _sim = crate::Sim::new();
        let s = parse("test-run mon pid=4\n").unwrap();
        let e = Runner::new(&s)
            .try_step(&s.steps[0])
            .expect_err("needs a session");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("needs the attached programs"), "{e}");
    }
}
