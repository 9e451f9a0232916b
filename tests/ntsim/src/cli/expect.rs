//! `expect` lines of test files: what should have happened in a run, and
//! how each is checked against the run's [`Event`]s.
//!
//! ```text
//! expect verdict STEP permitted
//! expect verdict STEP denied [STATUS]
//! expect records MAP[@STEP] OP N
//! expect record MAP[N][.PATH] OP VALUE
//! expect record MAP@STEP[N][.PATH] OP VALUE
//! expect map MAP[KEY] present|absent
//! expect map MAP[KEY][.PATH] OP VALUE
//! expect test-run STEP PATH OP VALUE
//! ```
//!
//! - STEP names a scenario step as `KEYWORD:NAME` (`create:editor`,
//!   `exit:editor`): the last such step *above* the expect line.
//! - `records` counts the ring-buffer or perf records of MAP over the run,
//!   or those produced by STEP.
//! - `record` takes the Nth record (from 0) of MAP over the run, or the
//!   Nth that STEP produced, decoded as the test file's `ringbuf MAP TYPE`;
//!   PATH selects a member (`.creator.pid`, `.image`, `.sid[0]`). Without
//!   a `ringbuf` line for MAP the record is its bytes (no PATH).
//! - `map` finds the entry of MAP whose key (decoded with the map's BTF key
//!   type; raw bytes compare as a little-endian number or `hex:`) equals
//!   KEY, in the maps as they are at the end of the run. A per-CPU map's
//!   value is the list of every CPU's value (`[0].field`).
//! - `test-run` checks what a `test-run PROGRAM` step (STEP is
//!   `test-run:PROGRAM`) returned, as [`test_run_value`] shows it: PATH is
//!   `result`, `error` (the run failed), `context.FIELD` (the decoded
//!   `ctx_out`: `context.process_id`, `context.account_name.length`, ...),
//!   `strings.NAME` (the strings of `data_out`) or `data_out`.
//! - OP is `=`, `!=`, `<`, `<=`, `>`, `>=` or `~` (contains: a substring
//!   of a string, a byte sequence of bytes, an element of a list).
//! - VALUE is a number (decimal, negative, or `0x` hex), `true`/`false`, a
//!   quoted string (`"cmd.exe"`), an enumerator name (`EVENT_CREATE`),
//!   `hex:0a0b` (bytes), or `utf16:"text"` (the UTF-16LE bytes of text;
//!   equal to a byte array whose bytes up to the first 0 unit are those).
//!
//! Extension point: a new expectation is one [`Subject`] variant, its arm
//! in [`parse`] and in [`Expectation::check`].

use super::decode::{is_percpu, split_percpu, Decoder};
use super::report::{test_run_value, Event, MapReport, RecordReport, StepReport};
use super::scenario::Outcome;
use crate::ebpf::btf_types::{PathPart, Value};
use crate::ebpf::maps::map_type;
use crate::kernel::status::{self, NTSTATUS};

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "~" | "contains" => Op::Contains,
            _ => return None,
        })
    }

    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "~",
        }
    }
}

/// A literal of an expect line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    Int(i128),
    Bool(bool),
    Str(String),
    /// An enumerator name (or any bare word).
    Name(String),
    Bytes(Vec<u8>),
    /// `utf16:"..."`.
    Utf16(String),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Name(n) => write!(f, "{n}"),
            Literal::Bytes(b) => write!(f, "hex:{}", super::decode::hex(b)),
            Literal::Utf16(s) => write!(f, "utf16:{s:?}"),
        }
    }
}

/// A step reference: `KEYWORD:NAME`, resolved to the step's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRef {
    pub text: String,
    pub line: usize,
}

/// What an expectation looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The verdict of a step: permitted, or denied with (optionally) this
    /// status.
    Verdict {
        step: StepRef,
        permitted: bool,
        status: Option<NTSTATUS>,
    },
    /// How many records MAP got (by one step).
    Records {
        map: String,
        step: Option<StepRef>,
        op: Op,
        count: i128,
    },
    /// A record's value.
    Record {
        map: String,
        step: Option<StepRef>,
        index: usize,
        path: Vec<PathPart>,
        op: Op,
        value: Literal,
    },
    /// A map entry present or absent.
    Entry {
        map: String,
        key: Literal,
        present: bool,
    },
    /// A map entry's value.
    EntryValue {
        map: String,
        key: Literal,
        path: Vec<PathPart>,
        op: Op,
        value: Literal,
    },
    /// A part of what a test-run step returned.
    TestRun {
        step: StepRef,
        path: Vec<PathPart>,
        op: Op,
        value: Literal,
    },
}

/// One `expect` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// 1-based line in the test file.
    pub line: usize,
    /// The line as written (without `expect `).
    pub text: String,
    pub subject: Subject,
}

/// A failed expectation: what was expected and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub expected: String,
    pub actual: String,
}

/// Splits `text` into words; double-quoted parts may hold spaces (`\"`
/// and `\\` escape).
fn words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                cur.push('"');
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some('"') => break,
                        Some('\\') if matches!(chars.peek(), Some('"') | Some('\\')) => {
                            cur.push(chars.next().expect("peeked"))
                        }
                        Some(c) => cur.push(c),
                    }
                }
                cur.push('"');
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn parse_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(h) => i128::from_str_radix(h, 16).ok()?,
        None => body.parse::<i128>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Parses a literal word.
pub fn parse_literal(w: &str) -> Result<Literal, String> {
    let quoted =
        |s: &str| -> Option<String> { s.strip_prefix('"')?.strip_suffix('"').map(str::to_string) };
    if let Some(s) = quoted(w) {
        return Ok(Literal::Str(s));
    }
    if let Some(rest) = w.strip_prefix("utf16:") {
        return quoted(rest)
            .map(Literal::Utf16)
            .ok_or_else(|| format!("{w}: write utf16:\"text\""));
    }
    if let Some(h) = w.strip_prefix("hex:") {
        if h.len() % 2 != 0 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{w}: hex: takes pairs of hex digits"));
        }
        let bytes = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex digits"))
            .collect();
        return Ok(Literal::Bytes(bytes));
    }
    if let Some(i) = parse_int(w) {
        return Ok(Literal::Int(i));
    }
    match w {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        _ => {}
    }
    if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !w.is_empty() {
        return Ok(Literal::Name(w.to_string()));
    }
    Err(format!(
        "{w}: not a value (a number, \"text\", true/false, a name, hex:.., utf16:\"..\")"
    ))
}

/// `.a.b[2].c` after a selector.
fn parse_path(s: &str) -> Result<Vec<PathPart>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{s}: a member name is expected after `.`"));
            }
            parts.push(PathPart::Field(name.to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| format!("{s}: `[` without `]`"))?;
            let i = r[..end]
                .parse::<usize>()
                .map_err(|_| format!("{s}: `[{}]` is not an index", &r[..end]))?;
            parts.push(PathPart::Index(i));
            rest = &r[end + 1..];
        } else {
            return Err(format!("{s}: expected `.member` or `[index]`"));
        }
    }
    Ok(parts)
}

/// `MAP`, `MAP@STEP`, with what follows (`[...]...`).
fn split_map(s: &str) -> (&str, Option<&str>, &str) {
    let end = s.find('[').unwrap_or(s.len());
    let (head, tail) = s.split_at(end);
    match head.split_once('@') {
        Some((m, step)) => (m, Some(step), tail),
        None => (head, None, tail),
    }
}

/// The bracketed part at the start of `s` (`[...]`), and the rest.
fn bracket(s: &str) -> Result<(&str, &str), String> {
    let r = s
        .strip_prefix('[')
        .ok_or_else(|| format!("{s:?}: expected `[`"))?;
    // A quoted key may hold `]`.
    let mut in_quote = false;
    for (i, c) in r.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ']' if !in_quote => return Ok((&r[..i], &r[i + 1..])),
            _ => {}
        }
    }
    Err(format!("{s:?}: `[` without `]`"))
}

fn parse_status(s: &str) -> Result<NTSTATUS, String> {
    if let Some(i) = parse_int(s) {
        if (i32::MIN as i128..=u32::MAX as i128).contains(&i) {
            return Ok(i as u32 as i32);
        }
    }
    known_status(s).ok_or_else(|| {
        format!("{s}: not a status (0x hex, or a name ntsim knows such as STATUS_ACCESS_DENIED)")
    })
}

/// A status by its name, among those [`status::name`] knows.
fn known_status(wanted: &str) -> Option<NTSTATUS> {
    use status::*;
    [
        STATUS_SUCCESS,
        STATUS_UNSUCCESSFUL,
        STATUS_NOT_IMPLEMENTED,
        STATUS_INVALID_HANDLE,
        STATUS_INVALID_PARAMETER,
        STATUS_NO_MEMORY,
        STATUS_ACCESS_DENIED,
        STATUS_BUFFER_TOO_SMALL,
        STATUS_OBJECT_NAME_NOT_FOUND,
        STATUS_OBJECT_NAME_COLLISION,
        STATUS_INSUFFICIENT_RESOURCES,
        STATUS_NOT_SUPPORTED,
        STATUS_NOT_FOUND,
    ]
    .into_iter()
    .find(|s| status::name(*s) == Some(wanted))
}

/// Parses the words after `expect`. `step_line` resolves `KEYWORD:NAME` to
/// the line of the last such step above (None: there is none).
pub fn parse(
    line: usize,
    text: &str,
    step_line: &dyn Fn(&str, &str) -> Option<usize>,
) -> Result<Expectation, String> {
    let w = words(text)?;
    let step = |s: &str| -> Result<StepRef, String> {
        let (k, n) = s
            .split_once(':')
            .ok_or_else(|| format!("{s}: a step is KEYWORD:NAME (for example create:editor)"))?;
        let l = step_line(k, n).ok_or_else(|| format!("{s}: no `{k} {n}` step above this line"))?;
        Ok(StepRef {
            text: s.to_string(),
            line: l,
        })
    };
    let op = |s: Option<&String>| -> Result<Op, String> {
        let s = s.ok_or("an operator (=, !=, <, <=, >, >=, ~) is missing")?;
        Op::parse(s).ok_or_else(|| format!("{s}: not an operator (=, !=, <, <=, >, >=, ~)"))
    };
    let value = |s: Option<&String>| -> Result<Literal, String> {
        parse_literal(s.ok_or("a value is missing")?)
    };
    let arity = |n: usize| -> Result<(), String> {
        if w.len() > n {
            Err(format!("unexpected {:?} at the end", w[n..].join(" ")))
        } else {
            Ok(())
        }
    };
    let subject = match w.first().map(String::as_str) {
        Some("verdict") => {
            let s = step(w.get(1).ok_or("verdict: a step is missing")?)?;
            match w.get(2).map(String::as_str) {
                Some("permitted") => {
                    arity(3)?;
                    Subject::Verdict {
                        step: s,
                        permitted: true,
                        status: None,
                    }
                }
                Some("denied") => {
                    arity(4)?;
                    Subject::Verdict {
                        step: s,
                        permitted: false,
                        status: w.get(3).map(|v| parse_status(v)).transpose()?,
                    }
                }
                _ => return Err("verdict: say `permitted` or `denied [STATUS]`".into()),
            }
        }
        Some("records") => {
            let sel = w.get(1).ok_or("records: a map is missing")?;
            let (map, at, tail) = split_map(sel);
            if !tail.is_empty() {
                return Err(format!("records {sel}: write MAP or MAP@STEP"));
            }
            let o = op(w.get(2))?;
            let count = match value(w.get(3))? {
                Literal::Int(i) => i,
                other => return Err(format!("records: {other} is not a count")),
            };
            arity(4)?;
            Subject::Records {
                map: map.to_string(),
                step: at.map(step).transpose()?,
                op: o,
                count,
            }
        }
        Some("record") => {
            let sel = w.get(1).ok_or("record: MAP[N] is missing")?;
            let (map, at, tail) = split_map(sel);
            let (index, rest) =
                bracket(tail).map_err(|_| format!("record {sel}: write MAP[N] or MAP@STEP[N]"))?;
            let index = index
                .parse::<usize>()
                .map_err(|_| format!("record {sel}: [{index}] is not a record number"))?;
            let path = parse_path(rest)?;
            let o = op(w.get(2))?;
            let v = value(w.get(3))?;
            arity(4)?;
            Subject::Record {
                map: map.to_string(),
                step: at.map(step).transpose()?,
                index,
                path,
                op: o,
                value: v,
            }
        }
        Some("map") => {
            let sel = w.get(1).ok_or("map: MAP[KEY] is missing")?;
            let (map, at, tail) = split_map(sel);
            if at.is_some() {
                return Err(format!(
                    "map {sel}: maps are checked at the end of the run, not per step"
                ));
            }
            let (key, rest) = bracket(tail).map_err(|_| format!("map {sel}: write MAP[KEY]"))?;
            let key = parse_literal(key)?;
            match w.get(2).map(String::as_str) {
                Some(p @ ("present" | "absent")) => {
                    arity(3)?;
                    if !rest.is_empty() {
                        return Err(format!(
                            "map {sel}: `{p}` applies to the entry, not a member"
                        ));
                    }
                    Subject::Entry {
                        map: map.to_string(),
                        key,
                        present: p == "present",
                    }
                }
                _ => {
                    let path = parse_path(rest)?;
                    let o = op(w.get(2))?;
                    let v = value(w.get(3))?;
                    arity(4)?;
                    Subject::EntryValue {
                        map: map.to_string(),
                        key,
                        path,
                        op: o,
                        value: v,
                    }
                }
            }
        }
        Some("test-run") => {
            let s = step(
                w.get(1)
                    .ok_or("test-run: a step (test-run:PROGRAM) is missing")?,
            )?;
            if !s.text.starts_with("test-run:") {
                return Err(format!(
                    "test-run {}: name a test-run step (test-run:PROGRAM)",
                    s.text
                ));
            }
            let p = w.get(2).ok_or(
                "test-run: what to check is missing (result, context.FIELD, strings.NAME, error)",
            )?;
            let path = parse_path(&format!(".{p}"))?;
            let o = op(w.get(3))?;
            let v = value(w.get(4))?;
            arity(5)?;
            Subject::TestRun {
                step: s,
                path,
                op: o,
                value: v,
            }
        }
        Some(other) => {
            return Err(format!(
                "expect {other}: unknown (expected verdict, records, record, map or test-run)"
            ))
        }
        None => return Err("expect: what? (verdict, records, record, map or test-run)".into()),
    };
    Ok(Expectation {
        line,
        text: text.trim().to_string(),
        subject,
    })
}

/// Integer view of a value for comparisons: numbers, booleans, enums, and
/// byte strings of up to 8 bytes as little-endian numbers.
fn int_of(v: &Value) -> Option<i128> {
    match v {
        Value::Bytes(b) if b.len() <= 8 => {
            Some(b.iter().rev().fold(0i128, |acc, &x| acc << 8 | x as i128))
        }
        v => v.as_int(),
    }
}

fn utf16_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Bytes up to the first 0 UTF-16 unit.
fn utf16_prefix(b: &[u8]) -> &[u8] {
    let end = b
        .chunks_exact(2)
        .position(|c| c == [0, 0])
        .map_or(b.len() - b.len() % 2, |i| i * 2);
    &b[..end]
}

/// Whether `actual OP literal` holds; Err when they cannot be compared.
pub fn compare(actual: &Value, op: Op, lit: &Literal) -> Result<bool, String> {
    use std::cmp::Ordering;
    let ordered = |o: Ordering| -> Result<bool, String> {
        Ok(match op {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Contains => unreachable!("handled first"),
        })
    };
    let eq_only = |eq: bool| -> Result<bool, String> {
        match op {
            Op::Eq => Ok(eq),
            Op::Ne => Ok(!eq),
            _ => Err(format!("{} compares numbers only", op.text())),
        }
    };
    if op == Op::Contains {
        return match (actual, lit) {
            (Value::Str(s), Literal::Str(x)) => Ok(s.contains(x.as_str())),
            (Value::Bytes(b), Literal::Bytes(x)) => {
                Ok(x.is_empty() || b.windows(x.len()).any(|w| w == x.as_slice()))
            }
            (Value::Bytes(b), Literal::Utf16(x)) => {
                let x = utf16_bytes(x);
                Ok(x.is_empty() || b.windows(x.len()).any(|w| w == x.as_slice()))
            }
            (Value::Bytes(b), Literal::Str(x)) => {
                let x = x.as_bytes();
                Ok(x.is_empty() || b.windows(x.len()).any(|w| w == x))
            }
            (Value::List(items), lit) => Ok(items
                .iter()
                .any(|i| compare(i, Op::Eq, lit).unwrap_or(false))),
            _ => Err("~ needs a string, bytes or a list".into()),
        };
    }
    match (actual, lit) {
        (Value::Missing, _) => Err("the record ends before this member".into()),
        (Value::Enum { name, .. }, Literal::Name(n)) => eq_only(name == n),
        (Value::Str(s), Literal::Str(x)) => ordered(s.as_str().cmp(x.as_str())),
        (Value::Bytes(b), Literal::Bytes(x)) => eq_only(b == x),
        (Value::Bytes(b), Literal::Utf16(x)) => eq_only(utf16_prefix(b) == utf16_bytes(x)),
        (Value::Bytes(b), Literal::Str(x)) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            eq_only(&b[..end] == x.as_bytes())
        }
        (Value::Bool(b), Literal::Bool(x)) => eq_only(b == x),
        (v, Literal::Int(x)) => match int_of(v) {
            Some(i) => ordered(i.cmp(x)),
            None => Err(format!("{v} is not a number")),
        },
        (v, Literal::Bool(x)) => match int_of(v) {
            Some(i) => eq_only((i != 0) == *x),
            None => Err(format!("{v} is not a boolean")),
        },
        (v, lit) => Err(format!("{v} cannot be compared with {lit}")),
    }
}

fn path_text(path: &[PathPart]) -> String {
    let text: String = path
        .iter()
        .map(|p| match p {
            PathPart::Field(f) => format!(".{f}"),
            PathPart::Index(i) => format!("[{i}]"),
        })
        .collect();
    text.strip_prefix('.').map_or(text.clone(), str::to_string)
}

/// What a run produced, for checking.
pub struct RunFacts<'a> {
    pub steps: Vec<&'a StepReport>,
    pub records: Vec<&'a RecordReport>,
    pub maps: Vec<&'a MapReport>,
}

impl<'a> RunFacts<'a> {
    pub fn new(events: &'a [Event]) -> RunFacts<'a> {
        let mut facts = RunFacts {
            steps: Vec::new(),
            records: Vec::new(),
            maps: Vec::new(),
        };
        for e in events {
            match e {
                Event::Step(s) => facts.steps.push(s),
                Event::Record(r) => facts.records.push(r),
                Event::Map(m) => facts.maps.push(m),
                _ => {}
            }
        }
        facts
    }

    fn step(&self, r: &StepRef) -> Option<&'a StepReport> {
        self.steps.iter().copied().find(|s| s.line == Some(r.line))
    }

    fn records_of(
        &self,
        map: &str,
        step: Option<&StepRef>,
    ) -> Result<Vec<&'a RecordReport>, String> {
        let index = match step {
            Some(r) => Some(
                self.step(r)
                    .ok_or_else(|| format!("step {} did not run", r.text))?
                    .index,
            ),
            None => None,
        };
        Ok(self
            .records
            .iter()
            .copied()
            .filter(|rec| rec.map == map && (index.is_none() || rec.step == index))
            .collect())
    }
}

fn failure(expected: impl Into<String>, actual: impl Into<String>) -> Failure {
    Failure {
        expected: expected.into(),
        actual: actual.into(),
    }
}

/// A map entry: key and value bytes.
type Entry = (Vec<u8>, Vec<u8>);

fn lookup_entry<'m>(
    map: &'m MapReport,
    key: &Literal,
    decoder: &Decoder,
) -> Result<Option<&'m Entry>, String> {
    for e in &map.entries {
        let k = decoder
            .key(&map.name, &e.0)
            .unwrap_or_else(|| Value::Bytes(e.0.clone()));
        if compare(&k, Op::Eq, key)? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

impl Expectation {
    /// Checks the expectation against a run; `decoder` decodes its
    /// records and maps.
    pub fn check(&self, facts: &RunFacts<'_>, decoder: &Decoder) -> Result<(), Failure> {
        let known_map = |map: &str| -> Result<(), Failure> {
            let in_maps = facts.maps.iter().any(|m| m.name == map);
            if in_maps {
                Ok(())
            } else {
                let have: Vec<&str> = facts.maps.iter().map(|m| m.name.as_str()).collect();
                Err(failure(
                    format!("a map named {map}"),
                    format!("the object's maps are: {}", have.join(", ")),
                ))
            }
        };
        match &self.subject {
            Subject::Verdict {
                step,
                permitted,
                status,
            } => {
                let expected = match (permitted, status) {
                    (true, _) => "permitted".to_string(),
                    (false, None) => "denied".to_string(),
                    (false, Some(s)) => format!("denied {}", status::describe(*s)),
                };
                let s = facts
                    .step(step)
                    .ok_or_else(|| failure(&expected, format!("step {} did not run", step.text)))?;
                let Some(got) = s.verdict() else {
                    return Err(failure(expected, format!("{} has no verdict", step.text)));
                };
                let actual = if status::nt_success(got) {
                    "permitted".to_string()
                } else {
                    format!("denied {}", status::describe(got))
                };
                let ok = if *permitted {
                    status::nt_success(got)
                } else {
                    !status::nt_success(got) && status.is_none_or(|s| s == got)
                };
                if ok {
                    Ok(())
                } else {
                    Err(failure(expected, actual))
                }
            }
            Subject::Records {
                map,
                step,
                op,
                count,
            } => {
                known_map(map)?;
                let t = facts
                    .maps
                    .iter()
                    .find(|m| m.name == *map)
                    .map_or(0, |m| m.def.map_type);
                if t != map_type::RINGBUF && t != map_type::PERF_EVENT_ARRAY {
                    return Err(failure(
                        format!("{} {count} record(s) of {map}", op.text()),
                        format!(
                            "{map} is a {} map: records are counted for ring buffers and perf event arrays",
                            super::decode::map_type_name(t)
                        ),
                    ));
                }
                let n = facts
                    .records_of(map, step.as_ref())
                    .map_err(|e| failure(format!("{} {count} record(s)", op.text()), e))?
                    .len();
                let ok = compare(&Value::Int(n as i128), *op, &Literal::Int(*count))
                    .map_err(|e| failure(format!("{} {count}", op.text()), e))?;
                if ok {
                    Ok(())
                } else {
                    Err(failure(
                        format!("{} {count} record(s)", op.text()),
                        format!("{n} record(s)"),
                    ))
                }
            }
            Subject::Record {
                map,
                step,
                index,
                path,
                op,
                value,
            } => {
                known_map(map)?;
                let expected = format!("{} {} {value}", path_text(path), op.text())
                    .trim_start()
                    .to_string();
                let records = facts
                    .records_of(map, step.as_ref())
                    .map_err(|e| failure(&expected, e))?;
                let rec = records.get(*index).ok_or_else(|| {
                    failure(
                        &expected,
                        format!(
                            "{map} has {} record(s){}",
                            records.len(),
                            match step {
                                Some(s) => format!(" from {}", s.text),
                                None => String::new(),
                            }
                        ),
                    )
                })?;
                // A map without a `ringbuf MAP TYPE` line: its records
                // are their bytes (a PATH then has nothing to select).
                let decoded = match decoder.record(map, &rec.data) {
                    Some(decoded) => decoded,
                    None if path.is_empty() => Value::Bytes(rec.data.clone()),
                    None => {
                        return Err(failure(
                            &expected,
                            format!(
                            "no record type for {map} (add `ringbuf {map} TYPE` to the test file)"
                        ),
                        ))
                    }
                };
                self.check_value(&decoded, path, *op, value, &expected)
            }
            Subject::Entry { map, key, present } => {
                known_map(map)?;
                let m = facts.maps.iter().find(|m| m.name == *map).expect("known");
                let found =
                    lookup_entry(m, key, decoder).map_err(|e| failure(format!("key {key}"), e))?;
                match (found, present) {
                    (Some(_), true) | (None, false) => Ok(()),
                    (Some((_, v)), false) => Err(failure(
                        format!("no entry for key {key}"),
                        format!("an entry: {}", entry_value(m, v, decoder)),
                    )),
                    (None, true) => Err(failure(
                        format!("an entry for key {key}"),
                        format!("none ({} entries)", m.entries.len()),
                    )),
                }
            }
            Subject::EntryValue {
                map,
                key,
                path,
                op,
                value,
            } => {
                known_map(map)?;
                let m = facts.maps.iter().find(|m| m.name == *map).expect("known");
                let expected = format!("{} {} {value}", path_text(path), op.text())
                    .trim_start()
                    .to_string();
                let (_, v) = lookup_entry(m, key, decoder)
                    .map_err(|e| failure(&expected, e))?
                    .ok_or_else(|| failure(&expected, format!("no entry for key {key}")))?;
                self.check_value(&entry_value(m, v, decoder), path, *op, value, &expected)
            }
            Subject::TestRun {
                step,
                path,
                op,
                value,
            } => {
                let expected = format!("{} {} {value}", path_text(path), op.text());
                let s = facts
                    .step(step)
                    .ok_or_else(|| failure(&expected, format!("step {} did not run", step.text)))?;
                let Outcome::TestRun { input, output, .. } = &s.outcome else {
                    return Err(failure(
                        expected,
                        format!("{} is not a test run", step.text),
                    ));
                };
                self.check_value(&test_run_value(input, output), path, *op, value, &expected)
            }
        }
    }

    fn check_value(
        &self,
        whole: &Value,
        path: &[PathPart],
        op: Op,
        lit: &Literal,
        expected: &str,
    ) -> Result<(), Failure> {
        let part = whole.at(path).ok_or_else(|| {
            failure(
                expected,
                format!(
                    "no member {} in {} (members: {})",
                    path_text(path),
                    short(whole),
                    whole.field_names().join(", ")
                ),
            )
        })?;
        match compare(&part, op, lit) {
            Ok(true) => Ok(()),
            Ok(false) => Err(failure(expected, short(&part))),
            Err(e) => Err(failure(expected, format!("{} ({e})", short(&part)))),
        }
    }
}

/// A value of a map entry: decoded with the map's value type (a list of
/// per-CPU values for per-CPU maps), else bytes.
fn entry_value(m: &MapReport, v: &[u8], decoder: &Decoder) -> Value {
    let one = |b: &[u8]| {
        decoder
            .value(&m.name, b)
            .unwrap_or_else(|| Value::Bytes(b.to_vec()))
    };
    if is_percpu(m.def.map_type) {
        Value::List(
            split_percpu(m.def.value_size, v)
                .into_iter()
                .map(one)
                .collect(),
        )
    } else {
        one(v)
    }
}

/// A value's text, cut at 300 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 300 {
        let head: String = s.chars().take(300).collect();
        format!("{head}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_steps(_: &str, _: &str) -> Option<usize> {
        None
    }

    #[test]
    fn literals_and_comparisons() {
        assert_eq!(parse_literal("0x10"), Ok(Literal::Int(16)));
        assert_eq!(parse_literal("-5"), Ok(Literal::Int(-5)));
        assert_eq!(parse_literal("\"a b\""), Ok(Literal::Str("a b".into())));
        assert_eq!(parse_literal("hex:0aff"), Ok(Literal::Bytes(vec![10, 255])));
        assert!(parse_literal("hex:0").is_err());
        assert_eq!(
            parse_literal("EVENT_X"),
            Ok(Literal::Name("EVENT_X".into()))
        );
        assert!(compare(&Value::Int(5), Op::Ge, &Literal::Int(5)).unwrap());
        assert!(!compare(&Value::Int(5), Op::Lt, &Literal::Int(5)).unwrap());
        let utf = Value::Bytes(vec![b'a', 0, b'b', 0, 0, 0, 9, 9]);
        assert!(compare(&utf, Op::Eq, &Literal::Utf16("ab".into())).unwrap());
        assert!(compare(&utf, Op::Contains, &Literal::Utf16("b".into())).unwrap());
        assert!(!compare(&utf, Op::Eq, &Literal::Utf16("a".into())).unwrap());
        assert!(compare(&Value::Bytes(vec![4, 1]), Op::Eq, &Literal::Int(0x104)).unwrap());
        let e = Value::Enum {
            name: "A".into(),
            value: 1,
        };
        assert!(compare(&e, Op::Eq, &Literal::Name("A".into())).unwrap());
        assert!(compare(&e, Op::Eq, &Literal::Int(1)).unwrap());
        assert!(compare(&Value::Str("x".into()), Op::Lt, &Literal::Int(1)).is_err());
    }

    #[test]
    fn lines_parse_and_errors_say_why() {
        let steps = |k: &str, n: &str| {
            ((k == "create" && n == "a") || (k == "test-run" && n == "m")).then_some(3)
        };
        let e = parse(9, "record ev@create:a[1].x.y[2] >= 0x10", &steps).unwrap();
        assert_eq!(
            e.subject,
            Subject::Record {
                map: "ev".into(),
                step: Some(StepRef {
                    text: "create:a".into(),
                    line: 3
                }),
                index: 1,
                path: vec![
                    PathPart::Field("x".into()),
                    PathPart::Field("y".into()),
                    PathPart::Index(2)
                ],
                op: Op::Ge,
                value: Literal::Int(16)
            }
        );
        let t = parse(
            4,
            "test-run test-run:m context.account_name.length >= 2",
            &steps,
        )
        .unwrap();
        assert_eq!(
            t.subject,
            Subject::TestRun {
                step: StepRef {
                    text: "test-run:m".into(),
                    line: 3
                },
                path: vec![
                    PathPart::Field("context".into()),
                    PathPart::Field("account_name".into()),
                    PathPart::Field("length".into())
                ],
                op: Op::Ge,
                value: Literal::Int(2)
            }
        );
        let m = parse(1, "map m[\"k]\"] absent", &no_steps).unwrap();
        assert_eq!(
            m.subject,
            Subject::Entry {
                map: "m".into(),
                key: Literal::Str("k]".into()),
                present: false
            }
        );
        let v = parse(1, "verdict create:a denied 0xc0000022", &steps).unwrap();
        assert!(
            matches!(v.subject, Subject::Verdict { status: Some(s), .. } if s == status::STATUS_ACCESS_DENIED)
        );
        let v = parse(1, "verdict create:a denied STATUS_ACCESS_DENIED", &steps).unwrap();
        assert!(
            matches!(v.subject, Subject::Verdict { status: Some(s), .. } if s == status::STATUS_ACCESS_DENIED)
        );
        for (text, needle) in [
            ("verdict create:b permitted", "no `create b` step above"),
            ("verdict create:a maybe", "permitted` or `denied"),
            ("records ev", "operator"),
            ("records ev = x", "not a count"),
            ("record ev.x = 1", "MAP[N]"),
            ("record ev[0].x =", "value is missing"),
            ("record ev[0]x = 1", "expected `.member`"),
            ("map m[1] present extra", "unexpected"),
            ("map m[1].f present", "applies to the entry"),
            ("frobnicate", "unknown"),
            ("verdict create:a denied NOPE", "not a status"),
            ("test-run create:a result = 0", "name a test-run step"),
            (
                "test-run test-run:b result = 0",
                "no `test-run b` step above",
            ),
            ("test-run test-run:m", "what to check is missing"),
            ("test-run test-run:m result", "operator"),
            ("test-run test-run:m result = 0 x", "unexpected"),
            ("test-run test-run:m context.[x] = 0", "member name"),
        ] {
            let e = parse(1, text, &steps).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
