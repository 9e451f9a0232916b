//! Debug output and event tracing (ntoskrnl.exe): `DbgPrintEx` /
//! `DbgPrint` with the kernel's printf rules, and the kernel-mode ETW
//! provider API (`EtwRegister`, `EtwSetInformation`, `EtwWriteTransfer`,
//! `EtwUnregister`: what the `tracelogging` crate's `kernel_mode` feature
//! imports).
//!
//! Every debug message is captured ([`dbg_messages`]) whatever its level:
//! the component/level filter of a real machine decides only what reaches a
//! debugger, and tests want everything. Messages are echoed to stderr when
//! `NTSIM_DBGPRINT=1` is set or [`set_echo`] is on.
//!
//! Every ETW event written is captured ([`etw_events`]) with its provider,
//! descriptor and user data; a TraceLogging event is also decoded into its
//! name and typed fields ([`etw::TlEvent`], [`tl_events`]), and a malformed
//! one is a violation. Tests play the trace session: [`etw_enable`] and
//! [`etw_disable`] call the providers' enable callbacks as a session
//! starting or stopping would; [`etw_enable_standing`] keeps a session
//! across machines (the command's `--etw`). Events a session wants are
//! echoed to stderr, one line each, when `NTSIM_ETW=1` is set or
//! [`set_etw_echo`] is on.

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::irql;
use crate::kernel::status::{
    NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
};
use crate::kernel::types::{GUID, HIGH_LEVEL, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

/// `DPFLTR_IHVDRIVER_ID`: the component for third-party drivers.
pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_DEFAULT_ID`: the component `DbgPrint` uses.
pub const DPFLTR_DEFAULT_ID: u32 = 101;
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
pub const DPFLTR_TRACE_LEVEL: u32 = 2;
pub const DPFLTR_INFO_LEVEL: u32 = 3;

/// Bytes one `DbgPrint` call transmits at most; longer output is cut.
pub const DBGPRINT_MAX_BYTES: usize = 512;

/// Variadic argument slots `DbgPrintEx` reads (`DbgPrint` reads two more).
pub const DBGPRINTEX_ARG_SLOTS: usize = 12;

/// Highest device IRQL on x64: DbgPrint above it can deadlock.
const DIRQL_MAX: u8 = 12;

/// One captured `DbgPrint`/`DbgPrintEx` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbgMessage {
    pub component: u32,
    /// The level as passed (0..=31 is a bit number, larger values a mask;
    /// see [`level_mask`]).
    pub level: u32,
    pub text: String,
    /// The loaded image holding the format string ("ntosebpfext.sys"):
    /// the driver that printed, as far as ntsim can tell (None when the
    /// format is not in a loaded image, e.g. host code).
    pub image: Option<String>,
}

/// The filter mask a DbgPrintEx level stands for: levels 0 to 31 select
/// bit `level`, larger values are the mask itself.
pub fn level_mask(level: u32) -> u32 {
    if level < 32 {
        1 << level
    } else {
        level
    }
}

/// `EVENT_DESCRIPTOR` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EVENT_DESCRIPTOR {
    pub Id: u16,
    pub Version: u8,
    pub Channel: u8,
    pub Level: u8,
    pub Opcode: u8,
    pub Task: u16,
    pub Keyword: u64,
}

/// `EVENT_DATA_DESCRIPTOR` (16 bytes). `Type` is 0 for event data, 1 for
/// TraceLogging event metadata, 2 for provider metadata.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EVENT_DATA_DESCRIPTOR {
    pub Ptr: u64,
    pub Size: u32,
    pub Type: u8,
    pub Reserved1: u8,
    pub Reserved2: u16,
}

/// `EVENT_FILTER_DESCRIPTOR` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EVENT_FILTER_DESCRIPTOR {
    pub Ptr: u64,
    pub Size: u32,
    pub Type: u32,
}

const _: () = {
    assert!(std::mem::size_of::<EVENT_DESCRIPTOR>() == 16);
    assert!(std::mem::offset_of!(EVENT_DESCRIPTOR, Task) == 6);
    assert!(std::mem::offset_of!(EVENT_DESCRIPTOR, Keyword) == 8);
    assert!(std::mem::size_of::<EVENT_DATA_DESCRIPTOR>() == 16);
    assert!(std::mem::offset_of!(EVENT_DATA_DESCRIPTOR, Type) == 12);
    assert!(std::mem::size_of::<EVENT_FILTER_DESCRIPTOR>() == 16);
};

/// `ETWENABLECALLBACK`.
pub type EtwEnableCallback = unsafe extern "win64" fn(
    SourceId: *const GUID,
    ControlCode: u32,
    Level: u8,
    MatchAnyKeyword: u64,
    MatchAllKeyword: u64,
    FilterData: *const EVENT_FILTER_DESCRIPTOR,
    CallbackContext: *mut c_void,
);

/// `EVENT_CONTROL_CODE_DISABLE_PROVIDER` / `..._ENABLE_PROVIDER`.
pub const EVENT_CONTROL_CODE_DISABLE_PROVIDER: u32 = 0;
pub const EVENT_CONTROL_CODE_ENABLE_PROVIDER: u32 = 1;
/// `EVENT_INFO_CLASS` values.
pub const EVENT_PROVIDER_BINARY_TRACK_INFO: u32 = 0;
pub const EVENT_PROVIDER_SET_TRAITS: u32 = 2;
pub const EVENT_PROVIDER_USE_DESCRIPTOR_TYPE: u32 = 3;
/// Most `EVENT_DATA_DESCRIPTOR`s one event may carry.
pub const MAX_EVENT_DATA_DESCRIPTORS: u32 = 128;

/// The session id passed as `SourceId` to enable callbacks
/// (`6e7a6973-0000-0000-0000-73657373696f`, "ntsim session").
pub const SESSION_ID: GUID = GUID {
    data1: 0x6e7a_6973,
    data2: 0,
    data3: 0,
    data4: [0, 0, 0x73, 0x65, 0x73, 0x73, 0x69, 0x6f],
};

/// One captured ETW event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwEvent {
    pub provider: GUID,
    pub reg_handle: u64,
    pub descriptor: EVENT_DESCRIPTOR,
    pub activity_id: Option<GUID>,
    pub related_activity_id: Option<GUID>,
    /// Each data descriptor's `Type` and bytes, in order.
    pub chunks: Vec<(u8, Vec<u8>)>,
    /// All descriptors' bytes concatenated (the event as ETW stores it).
    pub data: Vec<u8>,
    /// Whether an enabled session would have recorded it (level and
    /// keywords match what [`etw_enable`] set).
    pub enabled: bool,
    /// The event decoded, when it is a well-formed TraceLogging event.
    pub decoded: Option<etw::TlEvent>,
}

impl EtwEvent {
    /// The bytes of the chunks of one `Type` (0: event data), concatenated.
    pub fn data_of_type(&self, ty: u8) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|(t, _)| *t == ty)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }
}

/// A registered ETW provider, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtwProvider {
    pub reg_handle: u64,
    pub guid: GUID,
    /// The traits blob set with `EventProviderSetTraits`.
    pub traits: Option<Vec<u8>>,
    /// The provider name from the traits (TraceLogging: a u16 size, then
    /// the NUL-terminated UTF-8 name).
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    level: u8,
    any: u64,
    all: u64,
}

impl Session {
    /// ETW's rule: level 0 in a session means every level; an event with
    /// keyword 0 matches any session keywords.
    fn wants(&self, d: &EVENT_DESCRIPTOR) -> bool {
        let level_ok = self.level == 0 || d.Level <= self.level;
        let kw_ok = d.Keyword == 0
            || ((self.any == 0 || d.Keyword & self.any != 0) && d.Keyword & self.all == self.all);
        level_ok && kw_ok
    }
}

struct Provider {
    guid: GUID,
    callback: Option<EtwEnableCallback>,
    context: usize,
    traits: Option<Vec<u8>>,
}

struct State {
    messages: Vec<DbgMessage>,
    providers: BTreeMap<u64, Provider>,
    sessions: HashMap<GUID, Session>,
    events: Vec<EtwEvent>,
    next_handle: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn fresh() -> State {
    State {
        messages: Vec::new(),
        providers: BTreeMap::new(),
        sessions: HashMap::new(),
        events: Vec::new(),
        next_handle: 1,
    }
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g: MutexGuard<'_, Option<State>> = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(fresh))
}

/// 0: from the environment, 1: on, 2: off.
static ECHO: AtomicU8 = AtomicU8::new(0);

/// As [`ECHO`], for ETW events (`NTSIM_ETW`).
static ETW_ECHO: AtomicU8 = AtomicU8::new(0);

/// Sessions that outlive a machine ([`etw_enable_standing`]).
static STANDING: Mutex<Vec<(GUID, Session)>> = Mutex::new(Vec::new());

/// Echoes the ETW events a session wants to stderr, one line each (on) or
/// not (off), overriding `NTSIM_ETW`.
pub fn set_etw_echo(on: bool) {
    ETW_ECHO.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

fn etw_echo() -> bool {
    match ETW_ECHO.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => std::env::var("NTSIM_ETW").is_ok_and(|v| v == "1"),
    }
}

/// Enables `provider` like [`etw_enable`] on this machine and on every
/// machine started after it (a session that was running before the driver
/// loaded, as `wpr -start` before `sc start`).
pub fn etw_enable_standing(
    provider: &GUID,
    level: u8,
    match_any_keyword: u64,
    match_all_keyword: u64,
) {
    let session = Session {
        level,
        any: match_any_keyword,
        all: match_all_keyword,
    };
    {
        let mut standing = STANDING.lock().unwrap_or_else(|e| e.into_inner());
        standing.retain(|(g, _)| g != provider);
        standing.push((*provider, session));
    }
    etw_enable(provider, level, match_any_keyword, match_all_keyword);
}

/// Echoes debug messages to stderr (on) or not (off), overriding
/// `NTSIM_DBGPRINT`.
pub fn set_echo(on: bool) {
    ECHO.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

fn echo() -> bool {
    match ECHO.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => std::env::var("NTSIM_DBGPRINT").is_ok_and(|v| v == "1"),
    }
}

/// The debug messages captured since the machine started.
pub fn dbg_messages() -> Vec<DbgMessage> {
    with(|s| s.messages.clone())
}

/// Takes (and clears) the captured debug messages.
pub fn take_dbg_messages() -> Vec<DbgMessage> {
    with(|s| std::mem::take(&mut s.messages))
}

/// The ETW events captured since the machine started.
pub fn etw_events() -> Vec<EtwEvent> {
    with(|s| s.events.clone())
}

/// Takes (and clears) the captured ETW events.
pub fn take_etw_events() -> Vec<EtwEvent> {
    with(|s| std::mem::take(&mut s.events))
}

/// The TraceLogging events captured since the machine started, decoded,
/// whether or not a session wanted them.
pub fn tl_events() -> Vec<etw::TlEvent> {
    with(|s| s.events.iter().filter_map(|e| e.decoded.clone()).collect())
}

/// The decoded TraceLogging events named `name`.
pub fn tl_events_named(name: &str) -> Vec<etw::TlEvent> {
    tl_events().into_iter().filter(|e| e.name == name).collect()
}

/// The registered ETW providers.
pub fn etw_providers() -> Vec<EtwProvider> {
    with(|s| {
        s.providers
            .iter()
            .map(|(h, p)| EtwProvider {
                reg_handle: *h,
                guid: p.guid,
                traits: p.traits.clone(),
                name: p.traits.as_deref().and_then(traits_name),
            })
            .collect()
    })
}

/// The provider name in a TraceLogging traits blob.
fn traits_name(t: &[u8]) -> Option<String> {
    let rest = t.get(2..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Calls the enable callbacks of every registration of `guid`, with the
/// state lock released (a callback may write events).
fn notify(guid: &GUID, code: u32, session: Session) {
    let targets: Vec<(EtwEnableCallback, usize)> = with(|s| {
        s.providers
            .values()
            .filter(|p| p.guid == *guid)
            .filter_map(|p| p.callback.map(|cb| (cb, p.context)))
            .collect()
    });
    for (cb, ctx) in targets {
        // SAFETY: the driver registered this callback (with its context)
        // and keeps it valid until EtwUnregister; callbacks run at
        // PASSIVE_LEVEL, which is where sessions are controlled.
        unsafe {
            cb(
                &SESSION_ID,
                code,
                session.level,
                session.any,
                session.all,
                std::ptr::null(),
                ctx as *mut c_void,
            )
        };
    }
}

/// Plays a trace session enabling `provider` at `level` with the keyword
/// masks: the providers registered with that GUID get their enable
/// callback now, and providers registering later get it during
/// `EtwRegister`.
pub fn etw_enable(provider: &GUID, level: u8, match_any_keyword: u64, match_all_keyword: u64) {
    let session = Session {
        level,
        any: match_any_keyword,
        all: match_all_keyword,
    };
    with(|s| s.sessions.insert(*provider, session));
    irql::at(PASSIVE_LEVEL, || {
        notify(provider, EVENT_CONTROL_CODE_ENABLE_PROVIDER, session)
    });
}

/// Plays the session stopping: the providers' callbacks get a disable.
pub fn etw_disable(provider: &GUID) {
    with(|s| s.sessions.remove(provider));
    let off = Session {
        level: 0,
        any: 0,
        all: 0,
    };
    irql::at(PASSIVE_LEVEL, || {
        notify(provider, EVENT_CONTROL_CODE_DISABLE_PROVIDER, off)
    });
}

// ---------------------------------------------------------------- printf

/// The argument slots of a variadic call, consumed in order.
struct Args<'a> {
    slots: &'a [u64],
    next: usize,
    exhausted: bool,
}

impl Args<'_> {
    fn next(&mut self) -> u64 {
        match self.slots.get(self.next) {
            Some(v) => {
                self.next += 1;
                *v
            }
            None => {
                self.exhausted = true;
                0
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Size {
    Default,
    Char,  // hh
    Short, // h
    Long,  // l (32 bits on Windows)
    Wide,  // w
    Bits32,
    Bits64,
}

#[derive(Default)]
struct Spec {
    left: bool,
    plus: bool,
    space: bool,
    alt: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

/// Appends `body` (already with any zero padding) after `prefix`, padded
/// to the width.
fn pad(out: &mut Vec<u8>, spec: &Spec, prefix: &[u8], body: &[u8], zero_pad: bool) {
    let len = prefix.len() + body.len();
    let fill = spec.width.saturating_sub(len);
    if spec.left {
        out.extend_from_slice(prefix);
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(b' ', fill));
    } else if zero_pad {
        out.extend_from_slice(prefix);
        out.extend(std::iter::repeat_n(b'0', fill));
        out.extend_from_slice(body);
    } else {
        out.extend(std::iter::repeat_n(b' ', fill));
        out.extend_from_slice(prefix);
        out.extend_from_slice(body);
    }
}

fn digits(mut v: u64, radix: u64, upper: bool) -> Vec<u8> {
    let set: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut d = Vec::new();
    loop {
        d.push(set[(v % radix) as usize]);
        v /= radix;
        if v == 0 {
            break;
        }
    }
    d.reverse();
    d
}

fn wide_to_utf8(units: &[u16]) -> Vec<u8> {
    String::from_utf16_lossy(units).into_bytes()
}

/// Reads a NUL-terminated wide string of at most `max` units.
///
/// # Safety
/// `p` must point to a NUL-terminated UTF-16 string, or to at least `max`
/// readable units.
unsafe fn read_wide(p: *const u16, max: Option<usize>) -> Vec<u16> {
    let mut v = Vec::new();
    while max.is_none_or(|m| v.len() < m) {
        // SAFETY: guaranteed by the caller.
        let u = unsafe { *p.add(v.len()) };
        if u == 0 {
            break;
        }
        v.push(u);
    }
    v
}

/// Reads a NUL-terminated narrow string of at most `max` bytes.
///
/// # Safety
/// As [`read_wide`], for bytes.
unsafe fn read_narrow(p: *const u8, max: Option<usize>) -> Vec<u8> {
    let mut v = Vec::new();
    while max.is_none_or(|m| v.len() < m) {
        // SAFETY: guaranteed by the caller.
        let b = unsafe { *p.add(v.len()) };
        if b == 0 {
            break;
        }
        v.push(b);
    }
    v
}

/// Formats like the kernel's `_vsnprintf` for the conversions drivers use.
/// Returns the text and whether a Unicode conversion was used.
///
/// # Safety
/// `fmt` must be NUL-terminated, and every pointer argument the format
/// consumes must be valid for its conversion.
unsafe fn format(fmt: *const u8, args: &mut Args<'_>) -> (Vec<u8>, bool) {
    // SAFETY: the caller guarantees NUL termination.
    let f = unsafe { std::ffi::CStr::from_ptr(fmt.cast()) }.to_bytes();
    let mut out = Vec::new();
    let mut unicode = false;
    let mut i = 0;
    while i < f.len() {
        if f[i] != b'%' {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        let mut spec = Spec::default();
        while let Some(&c) = f.get(i) {
            match c {
                b'-' => spec.left = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                b'#' => spec.alt = true,
                b'0' => spec.zero = true,
                _ => break,
            }
            i += 1;
        }
        if f.get(i) == Some(&b'*') {
            let w = args.next() as u32 as i32;
            if w < 0 {
                spec.left = true;
            }
            spec.width = w.unsigned_abs() as usize;
            i += 1;
        } else {
            while let Some(d) = f.get(i).filter(|c| c.is_ascii_digit()) {
                spec.width = spec.width * 10 + (d - b'0') as usize;
                i += 1;
            }
        }
        if f.get(i) == Some(&b'.') {
            i += 1;
            if f.get(i) == Some(&b'*') {
                let p = args.next() as u32 as i32;
                spec.precision = (p >= 0).then_some(p as usize);
                i += 1;
            } else {
                let mut p = 0usize;
                while let Some(d) = f.get(i).filter(|c| c.is_ascii_digit()) {
                    p = p * 10 + (d - b'0') as usize;
                    i += 1;
                }
                spec.precision = Some(p);
            }
        }
        let rest = &f[i..];
        let (size, n) = if rest.starts_with(b"I64") {
            (Size::Bits64, 3)
        } else if rest.starts_with(b"I32") {
            (Size::Bits32, 3)
        } else if rest.starts_with(b"hh") {
            (Size::Char, 2)
        } else if rest.starts_with(b"ll") {
            (Size::Bits64, 2)
        } else {
            match rest.first() {
                Some(b'I' | b'z' | b'j' | b't') => (Size::Bits64, 1),
                Some(b'h') => (Size::Short, 1),
                Some(b'l') => (Size::Long, 1),
                Some(b'w') => (Size::Wide, 1),
                _ => (Size::Default, 0),
            }
        };
        i += n;
        let Some(&conv) = f.get(i) else {
            violation::record("dbgprint", "format string ends inside a conversion");
            out.extend_from_slice(&f[start..]);
            break;
        };
        i += 1;
        let wide_flag = matches!(size, Size::Long | Size::Wide);
        match conv {
            b'%' => out.push(b'%'),
            b'd' | b'i' | b'u' | b'x' | b'X' | b'o' => {
                let raw = args.next();
                let signed = matches!(conv, b'd' | b'i');
                let (neg, mag) = match (signed, size) {
                    (true, Size::Char) => split_signed(raw as i8 as i64),
                    (true, Size::Short) => split_signed(raw as i16 as i64),
                    (true, Size::Bits64) => split_signed(raw as i64),
                    (true, _) => split_signed(raw as i32 as i64),
                    (false, Size::Char) => (false, raw as u8 as u64),
                    (false, Size::Short) => (false, raw as u16 as u64),
                    (false, Size::Bits64) => (false, raw),
                    (false, _) => (false, raw as u32 as u64),
                };
                let radix = match conv {
                    b'x' | b'X' => 16,
                    b'o' => 8,
                    _ => 10,
                };
                let mut body = if spec.precision == Some(0) && mag == 0 {
                    Vec::new()
                } else {
                    digits(mag, radix, conv == b'X')
                };
                if let Some(p) = spec.precision {
                    if body.len() < p {
                        let mut z = vec![b'0'; p - body.len()];
                        z.extend_from_slice(&body);
                        body = z;
                    }
                }
                let prefix: &[u8] = if signed {
                    if neg {
                        b"-"
                    } else if spec.plus {
                        b"+"
                    } else if spec.space {
                        b" "
                    } else {
                        b""
                    }
                } else if spec.alt && mag != 0 && conv == b'x' {
                    b"0x"
                } else if spec.alt && mag != 0 && conv == b'X' {
                    b"0X"
                } else {
                    b""
                };
                if conv == b'o' && spec.alt && body.first() != Some(&b'0') {
                    body.insert(0, b'0');
                }
                let zero_pad = spec.zero && spec.precision.is_none();
                pad(&mut out, &spec, prefix, &body, zero_pad);
            }
            b'p' => {
                let v = args.next();
                let body = format!("{v:016X}").into_bytes();
                pad(&mut out, &spec, b"", &body, false);
            }
            b'c' | b'C' => {
                let v = args.next();
                let wide = if conv == b'c' {
                    wide_flag
                } else {
                    size != Size::Short
                };
                let body = if wide {
                    unicode = true;
                    wide_to_utf8(&[v as u16])
                } else {
                    vec![v as u8]
                };
                pad(&mut out, &spec, b"", &body, false);
            }
            b's' | b'S' => {
                let p = args.next();
                let wide = if conv == b's' {
                    wide_flag
                } else {
                    size != Size::Short
                };
                unicode |= wide;
                let body = if p == 0 {
                    null_text(spec.precision)
                } else if wide {
                    // SAFETY: the caller passed a wide string for %ws/%S.
                    wide_to_utf8(&unsafe { read_wide(p as *const u16, spec.precision) })
                } else {
                    // SAFETY: the caller passed a narrow string for %s.
                    unsafe { read_narrow(p as *const u8, spec.precision) }
                };
                pad(&mut out, &spec, b"", &body, false);
            }
            b'Z' => {
                let p = args.next();
                unicode |= wide_flag;
                let body = if p == 0 {
                    null_text(spec.precision)
                } else if wide_flag {
                    // SAFETY: %wZ takes a PUNICODE_STRING.
                    let us = unsafe { &*(p as *const UNICODE_STRING) };
                    if us.Buffer.is_null() {
                        null_text(spec.precision)
                    } else {
                        let mut n = us.Length as usize / 2;
                        if let Some(m) = spec.precision {
                            n = n.min(m);
                        }
                        // SAFETY: Buffer holds Length bytes.
                        wide_to_utf8(unsafe { std::slice::from_raw_parts(us.Buffer, n) })
                    }
                } else {
                    // %Z takes a PANSI_STRING: the same layout with a
                    // char buffer.
                    // SAFETY: as above.
                    let s = unsafe { &*(p as *const UNICODE_STRING) };
                    if s.Buffer.is_null() {
                        null_text(spec.precision)
                    } else {
                        let mut n = s.Length as usize;
                        if let Some(m) = spec.precision {
                            n = n.min(m);
                        }
                        // SAFETY: Buffer holds Length bytes.
                        unsafe { std::slice::from_raw_parts(s.Buffer as *const u8, n) }.to_vec()
                    }
                };
                pad(&mut out, &spec, b"", &body, false);
            }
            b'n' => {
                args.next();
                violation::record("dbgprint", "%n is not supported in kernel format strings");
            }
            b'e' | b'E' | b'f' | b'F' | b'g' | b'G' | b'a' | b'A' => {
                args.next();
                violation::record(
                    "dbgprint",
                    format!(
                        "floating point conversion %{} is not supported by DbgPrint",
                        conv as char
                    ),
                );
                out.extend_from_slice(&f[start..i]);
            }
            other => {
                violation::record(
                    "dbgprint",
                    format!("unknown conversion %{} in a DbgPrint format", other as char),
                );
                out.extend_from_slice(&f[start..i]);
            }
        }
    }
    (out, unicode)
}

fn split_signed(v: i64) -> (bool, u64) {
    (v < 0, v.unsigned_abs())
}

fn null_text(precision: Option<usize>) -> Vec<u8> {
    let t = b"(null)";
    t[..precision.unwrap_or(t.len()).min(t.len())].to_vec()
}

/// Formats and captures one message.
///
/// # Safety
/// As [`format`].
unsafe fn print(api: &str, component: u32, level: u32, fmt: *const u8, slots: &[u64]) -> u32 {
    irql::require_at_most(api, DIRQL_MAX);
    if fmt.is_null() {
        violation::record("dbgprint", format!("{api} with a NULL format"));
        return STATUS_INVALID_PARAMETER as u32;
    }
    let mut args = Args {
        slots,
        next: 0,
        exhausted: false,
    };
    // SAFETY: forwarded from the caller.
    let (mut bytes, unicode) = unsafe { format(fmt, &mut args) };
    if unicode && irql::current() > PASSIVE_LEVEL {
        violation::record(
            "dbgprint",
            format!(
                "{api} with a Unicode format code (%C %S %lc %ls %wc %ws %wZ) at IRQL {}; \
                 they are legal only at PASSIVE_LEVEL",
                irql::current()
            ),
        );
    }
    if args.exhausted {
        violation::record(
            "dbgprint",
            format!(
                "{api}: the format consumes more than the {} argument slots ntsim reads",
                slots.len()
            ),
        );
    }
    bytes.truncate(DBGPRINT_MAX_BYTES);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if echo() {
        eprint!("ntsim: dbg[{component}:{level}] {text}");
        if !text.ends_with('\n') {
            eprintln!();
        }
    }
    let image = crate::kernel::images::image_name_at(fmt as usize);
    with(|s| {
        s.messages.push(DbgMessage {
            component,
            level,
            text,
            image,
        })
    });
    STATUS_SUCCESS as u32
}

/// `ULONG DbgPrintEx(ULONG ComponentId, ULONG Level, PCSTR Format, ...)`.
///
/// Variadic in C. Under the Windows x64 convention variadic arguments are
/// passed exactly like fixed ones (the first four parameters in RCX, RDX,
/// R8, R9, the rest in the stack slots above the 32-byte shadow area), so
/// this fixed-arity function receives a variadic call's arguments in
/// `a0..a11`. Only as many as the format consumes are used; the others are
/// whatever the caller's frame holds in those slots (mapped stack memory,
/// read as plain integers and ignored). Returns STATUS_SUCCESS.
///
/// # Safety
/// `Format` must be NUL-terminated and the arguments must match it.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "win64" fn DbgPrintEx(
    ComponentId: u32,
    Level: u32,
    Format: *const u8,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    a6: u64,
    a7: u64,
    a8: u64,
    a9: u64,
    a10: u64,
    a11: u64,
) -> u32 {
    let slots = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11];
    // SAFETY: forwarded from the caller.
    unsafe { print("DbgPrintEx", ComponentId, Level, Format, &slots) }
}

/// `ULONG DbgPrint(PCSTR Format, ...)`: `DbgPrintEx(DPFLTR_DEFAULT_ID,
/// DPFLTR_INFO_LEVEL, ...)`. Variadic like [`DbgPrintEx`], with 14 slots.
///
/// # Safety
/// As [`DbgPrintEx`].
#[allow(clippy::too_many_arguments)]
pub unsafe extern "win64" fn DbgPrint(
    Format: *const u8,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
    a5: u64,
    a6: u64,
    a7: u64,
    a8: u64,
    a9: u64,
    a10: u64,
    a11: u64,
    a12: u64,
    a13: u64,
) -> u32 {
    let slots = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13];
    // SAFETY: forwarded from the caller.
    unsafe {
        print(
            "DbgPrint",
            DPFLTR_DEFAULT_ID,
            DPFLTR_INFO_LEVEL,
            Format,
            &slots,
        )
    }
}

// ------------------------------------------------------------------- ETW

/// `EtwRegister` (PASSIVE_LEVEL). Fault injection: "EtwRegister" fails
/// with STATUS_INSUFFICIENT_RESOURCES. If a session has enabled the
/// provider, its enable callback runs before this returns.
///
/// # Safety
/// `ProviderId` and `RegHandle` must be valid; the callback and context
/// must stay valid until `EtwUnregister`.
pub unsafe extern "win64" fn EtwRegister(
    ProviderId: *const GUID,
    EnableCallback: Option<EtwEnableCallback>,
    CallbackContext: *mut c_void,
    RegHandle: *mut u64,
) -> NTSTATUS {
    irql::require_at_most("EtwRegister", PASSIVE_LEVEL);
    if ProviderId.is_null() || RegHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: RegHandle is a valid out pointer (checked non-null).
    unsafe { RegHandle.write_unaligned(0) };
    if crate::kernel::fault::check("EtwRegister") {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: ProviderId points to a GUID.
    let guid = unsafe { ProviderId.read_unaligned() };
    let (handle, session) = with(|s| {
        let h = 0xFFFF_B000_0000_0000u64 + s.next_handle * 0x100;
        s.next_handle += 1;
        s.providers.insert(
            h,
            Provider {
                guid,
                callback: EnableCallback,
                context: CallbackContext as usize,
                traits: None,
            },
        );
        (h, s.sessions.get(&guid).copied())
    });
    // SAFETY: as above.
    unsafe { RegHandle.write_unaligned(handle) };
    if let (Some(cb), Some(sess)) = (EnableCallback, session) {
        // SAFETY: the callback the driver just registered, with its context.
        unsafe {
            cb(
                &SESSION_ID,
                EVENT_CONTROL_CODE_ENABLE_PROVIDER,
                sess.level,
                sess.any,
                sess.all,
                std::ptr::null(),
                CallbackContext,
            )
        };
    }
    STATUS_SUCCESS
}

/// `EtwUnregister` (PASSIVE_LEVEL). An unknown handle is a violation.
pub extern "win64" fn EtwUnregister(RegHandle: u64) -> NTSTATUS {
    irql::require_at_most("EtwUnregister", PASSIVE_LEVEL);
    if with(|s| s.providers.remove(&RegHandle)).is_some() {
        STATUS_SUCCESS
    } else {
        violation::record(
            "etw",
            format!("EtwUnregister of unknown registration handle {RegHandle:#x}"),
        );
        STATUS_INVALID_HANDLE
    }
}

/// `EtwSetInformation`. `EventProviderSetTraits` (2) stores the traits
/// blob (its leading u16 must be its size); `EventProviderUseDescriptorType`
/// (3) takes a BOOLEAN; other classes are not supported. The WDK does not
/// document its IRQL; it is checked as PASSIVE_LEVEL like `EtwRegister`.
///
/// # Safety
/// `EventInformation` must be readable for `InformationLength` bytes.
pub unsafe extern "win64" fn EtwSetInformation(
    RegHandle: u64,
    InformationClass: u32,
    EventInformation: *const c_void,
    InformationLength: u32,
) -> NTSTATUS {
    irql::require_at_most("EtwSetInformation", PASSIVE_LEVEL);
    if EventInformation.is_null() && InformationLength != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    let blob = if InformationLength == 0 {
        Vec::new()
    } else {
        // SAFETY: readable for InformationLength bytes per the contract.
        unsafe {
            std::slice::from_raw_parts(EventInformation.cast::<u8>(), InformationLength as usize)
        }
        .to_vec()
    };
    let known = with(|s| s.providers.contains_key(&RegHandle));
    if !known {
        if RegHandle != 0 {
            violation::record(
                "etw",
                format!("EtwSetInformation on unknown registration handle {RegHandle:#x}"),
            );
        }
        return STATUS_INVALID_PARAMETER;
    }
    match InformationClass {
        EVENT_PROVIDER_SET_TRAITS => {
            let declared = blob
                .get(..2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
            if declared != Some(blob.len()) {
                violation::record(
                    "etw",
                    format!(
                        "EtwSetInformation(EventProviderSetTraits): the traits declare \
                         {declared:?} bytes but {} were passed",
                        blob.len()
                    ),
                );
                return STATUS_INVALID_PARAMETER;
            }
            with(|s| {
                if let Some(p) = s.providers.get_mut(&RegHandle) {
                    p.traits = Some(blob);
                }
            });
            STATUS_SUCCESS
        }
        EVENT_PROVIDER_USE_DESCRIPTOR_TYPE => {
            if blob.len() != 1 {
                return STATUS_INVALID_PARAMETER;
            }
            STATUS_SUCCESS
        }
        _ => STATUS_NOT_SUPPORTED,
    }
}

/// `EtwWriteTransfer` (any IRQL): captures the event. Handle 0 (a failed
/// registration) returns STATUS_INVALID_HANDLE; any other unknown handle
/// is also a violation.
///
/// # Safety
/// `EventDescriptor` must be valid; the activity ids null or valid;
/// `UserData` must hold `UserDataCount` descriptors whose buffers are
/// readable.
pub unsafe extern "win64" fn EtwWriteTransfer(
    RegHandle: u64,
    EventDescriptor: *const EVENT_DESCRIPTOR,
    ActivityId: *const GUID,
    RelatedActivityId: *const GUID,
    UserDataCount: u32,
    UserData: *const EVENT_DATA_DESCRIPTOR,
) -> NTSTATUS {
    irql::require_at_most("EtwWriteTransfer", HIGH_LEVEL);
    let Some(provider) = with(|s| s.providers.get(&RegHandle).map(|p| p.guid)) else {
        if RegHandle != 0 {
            violation::record(
                "etw",
                format!("EtwWriteTransfer on unknown registration handle {RegHandle:#x}"),
            );
        }
        return STATUS_INVALID_HANDLE;
    };
    if EventDescriptor.is_null() {
        violation::record("etw", "EtwWriteTransfer with a NULL event descriptor");
        return STATUS_INVALID_PARAMETER;
    }
    if UserDataCount > MAX_EVENT_DATA_DESCRIPTORS || (UserDataCount > 0 && UserData.is_null()) {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: non-null, valid per the contract.
    let descriptor = unsafe { EventDescriptor.read_unaligned() };
    // SAFETY: optional GUID pointers, valid when non-null.
    let activity_id = (!ActivityId.is_null()).then(|| unsafe { ActivityId.read_unaligned() });
    // SAFETY: as above.
    let related_activity_id =
        (!RelatedActivityId.is_null()).then(|| unsafe { RelatedActivityId.read_unaligned() });
    let mut chunks = Vec::with_capacity(UserDataCount as usize);
    let mut data = Vec::new();
    for i in 0..UserDataCount as usize {
        // SAFETY: UserData holds UserDataCount descriptors.
        let d = unsafe { UserData.add(i).read_unaligned() };
        let bytes = if d.Size == 0 {
            Vec::new()
        } else if d.Ptr == 0 {
            violation::record(
                "etw",
                format!("EtwWriteTransfer: data descriptor {i} has a NULL pointer"),
            );
            return STATUS_INVALID_PARAMETER;
        } else {
            // SAFETY: each descriptor's buffer is readable for Size bytes.
            unsafe { std::slice::from_raw_parts(d.Ptr as *const u8, d.Size as usize) }.to_vec()
        };
        data.extend_from_slice(&bytes);
        chunks.push((d.Type, bytes));
    }
    let enabled = with(|s| {
        s.sessions
            .get(&provider)
            .is_some_and(|sess| sess.wants(&descriptor))
    });
    let of_type = |ty: u8| -> Vec<u8> {
        chunks
            .iter()
            .filter(|(t, _)| *t == ty)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    };
    let decoded = if chunks.iter().any(|(t, _)| *t == 1) {
        match etw::decode(
            etw::Header {
                provider,
                level: descriptor.Level,
                keyword: descriptor.Keyword,
                opcode: descriptor.Opcode,
                enabled,
            },
            &of_type(2),
            &of_type(1),
            &of_type(0),
        ) {
            Ok(ev) => Some(ev),
            Err(e) => {
                violation::record(
                    "etw",
                    format!("EtwWriteTransfer: a malformed TraceLogging event: {e}"),
                );
                None
            }
        }
    } else {
        None
    };
    if enabled && etw_echo() {
        match &decoded {
            Some(ev) => eprintln!("ntsim: etw {ev}"),
            None => eprintln!(
                "ntsim: etw {provider} level={} keyword={:#x} id={} ({} bytes)",
                descriptor.Level,
                descriptor.Keyword,
                descriptor.Id,
                data.len()
            ),
        }
    }
    with(|s| {
        s.events.push(EtwEvent {
            provider,
            reg_handle: RegHandle,
            descriptor,
            activity_id,
            related_activity_id,
            chunks,
            data,
            enabled,
            decoded,
        });
    });
    STATUS_SUCCESS
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", DbgPrintEx),
        export!("ntoskrnl.exe", DbgPrint),
        export!("ntoskrnl.exe", EtwRegister),
        export!("ntoskrnl.exe", EtwUnregister),
        export!("ntoskrnl.exe", EtwSetInformation),
        export!("ntoskrnl.exe", EtwWriteTransfer),
    ]
}

/// Forgets all state (a new [`crate::Sim`]): messages, events, providers
/// and sessions, but for the standing sessions. The echo settings stay.
pub(crate) fn reset() {
    let standing = STANDING.lock().unwrap_or_else(|e| e.into_inner()).clone();
    with(|s| {
        *s = fresh();
        s.sessions.extend(standing);
    });
}

/// What a driver left behind, one line each: ETW registrations.
pub(crate) fn outstanding() -> Vec<String> {
    with(|s| {
        s.providers
            .iter()
            .map(|(h, p)| {
                let name = p
                    .traits
                    .as_deref()
                    .and_then(traits_name)
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default();
                format!(
                    "ETW provider {}{name} still registered (handle {h:#x}): EtwUnregister was not called",
                    p.guid
                )
            })
            .collect()
    })
}

pub mod etw;

#[cfg(test)]
mod tests;
