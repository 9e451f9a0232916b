//! Processes, threads, images, access tokens and SIDs (ntoskrnl.exe's Ps,
//! Ob, Se and SID routines, and KSECDD.SYS's `SecLookupAccountSid`).
//!
//! # Objects
//! EPROCESS, ETHREAD and token objects are opaque to drivers. Each is a heap
//! block whose address is the `PEPROCESS` / `PETHREAD` / `PACCESS_TOKEN`
//! value; the block starts with a magic word. Every pointer a driver passes
//! back is looked up in the table of live objects before anything is read
//! through it, so a bad pointer, a pointer of the wrong kind, a freed object
//! or an object whose header the driver overwrote is a [`violation`].
//! Objects whose last reference goes away are kept (marked dead) until the
//! next reset, so a late use is reported as a use after free and the
//! address is never reused within one test.
//!
//! References are counted in two parts: the kernel's own (a live process
//! holds its EPROCESS and token, a live thread its ETHREAD) and the
//! driver's (taken with `ObReferenceObject`, `PsLookupProcessByProcessId`,
//! `PsReferencePrimaryToken`). Dropping more driver references than were
//! taken is a violation; driver references still held at the end are
//! reported by [`outstanding`].
//!
//! # Current process and thread
//! Per host thread. A host thread that has no simulated thread gets one
//! lazily in the System process (pid 4). While the kernel calls notify
//! routines it sets the current process/thread as Windows does (the
//! creating thread for a process creation, the exiting process for its
//! exit, ...).
//!
//! # Raising events
//! [`create_process`], [`exit_process`], [`create_thread`], [`exit_thread`],
//! [`load_image`] call the registered notify routines on the calling thread
//! at PASSIVE_LEVEL (see [`notify`] for the registration rules).

#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

mod events;
pub mod image;
mod notify;
mod sid;
#[cfg(test)]
mod tests;
pub mod thread;

pub use events::{
    create_process, create_thread, create_thread_with_id, exit_process, exit_thread, load_image,
    CreatedProcess, ImageInfoSpec, ProcessSpec, CLIENT_ID, IMAGE_INFO, IMAGE_INFO_EX,
    MAX_UNICODE_STRING_UNITS, PS_CREATE_NOTIFY_INFO,
};
pub use notify::{
    notify_routine_counts, CreateProcessNotifyRoutineEx, CreateThreadNotifyRoutine,
    LoadImageNotifyRoutine, NotifyCounts, PsRemoveCreateThreadNotifyRoutine,
    PsRemoveLoadImageNotifyRoutine, PsSetCreateProcessNotifyRoutineEx,
    PsSetCreateThreadNotifyRoutine, PsSetCreateThreadNotifyRoutineEx, PsSetLoadImageNotifyRoutine,
    PsSetLoadImageNotifyRoutineEx, PS_CREATE_THREAD_NOTIFY_NON_SYSTEM,
    PS_CREATE_THREAD_NOTIFY_SUBSYSTEMS, PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE,
};
pub use sid::{
    account_lookups, default_accounts, parse_sid, set_accounts, sid_to_string, test_user_sid,
    Account, RtlCopySid, RtlEqualSid, RtlLengthSid, RtlValidSid, SeQueryInformationToken,
    SecLookupAccountSid, SECURITY_MAX_SID_SIZE, SID_MAX_SUB_AUTHORITIES, SID_NAME_USE_USER,
    SID_NAME_USE_WELL_KNOWN_GROUP, SYSTEM_SID, TOKEN_USER_CLASS,
};

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::irql;
use crate::kernel::status::{NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS};
use crate::kernel::types::{APC_LEVEL, DISPATCH_LEVEL, HANDLE, PASSIVE_LEVEL};
use crate::kernel::violation;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `PEPROCESS`, `PETHREAD`, `PACCESS_TOKEN`: opaque object pointers.
pub type PEPROCESS = *mut c_void;
pub type PETHREAD = *mut c_void;
pub type PACCESS_TOKEN = *mut c_void;

// Statuses this service returns that `crate::kernel::status` does not define
// (values from ntstatus.h).
pub const STATUS_INVALID_INFO_CLASS: NTSTATUS = 0xC000_0003u32 as i32;
pub const STATUS_INVALID_CID: NTSTATUS = 0xC000_000Bu32 as i32;
pub const STATUS_NONE_MAPPED: NTSTATUS = 0xC000_0073u32 as i32;
pub const STATUS_INVALID_SID: NTSTATUS = 0xC000_0078u32 as i32;
pub const STATUS_PROCEDURE_NOT_FOUND: NTSTATUS = 0xC000_007Au32 as i32;
pub const STATUS_NO_TOKEN: NTSTATUS = 0xC000_007Cu32 as i32;

/// `SYSTEM_LUID`: the logon session of the System account (and of every
/// process whose [`ProcessSpec::logon_id`] is None).
pub const SYSTEM_LUID: u64 = 0x3e7;

/// Process id of the System process.
pub const SYSTEM_PID: usize = 4;
/// Process id of the Idle process.
pub const IDLE_PID: usize = 0;
/// First id handed out to processes and threads (ids share one space and
/// are multiples of 4, as on Windows).
const FIRST_CID: usize = 0x100;

/// What kind of object a pointer designates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Process,
    Thread,
    Token,
}

impl ObjectKind {
    fn magic(self) -> u64 {
        u64::from_le_bytes(match self {
            ObjectKind::Process => *b"NtsmProc",
            ObjectKind::Thread => *b"NtsmThrd",
            ObjectKind::Token => *b"NtsmTokn",
        })
    }

    fn name(self) -> &'static str {
        match self {
            ObjectKind::Process => "EPROCESS",
            ObjectKind::Thread => "ETHREAD",
            ObjectKind::Token => "access token",
        }
    }
}

const DEAD_MAGIC: u64 = u64::from_le_bytes(*b"NtsmDEAD");

/// The memory an object pointer points at. Drivers must treat it as opaque.
#[repr(C)]
struct ObjectBody {
    magic: u64,
    /// Never read by the kernel; gives the block an object-like size.
    _opaque: [u64; 15],
}

/// Per-process data.
#[derive(Clone, Debug)]
struct ProcData {
    pid: usize,
    parent: usize,
    image_file_name: String,
    command_line: Option<String>,
    creation_time: i64,
    exit_time: i64,
    exit_status: NTSTATUS,
    token: usize,
    threads: Vec<usize>,
    /// In the process table (not yet exited or denied).
    live: bool,
}

#[derive(Clone, Debug)]
enum ObjData {
    Process(ProcData),
    Thread {
        tid: usize,
        pid: usize,
    },
    Token {
        pid: usize,
        user_sid: Option<Vec<u8>>,
        /// `AuthenticationId`: the LUID of the logon session.
        logon_id: u64,
    },
}

#[derive(Debug)]
struct Obj {
    kind: ObjectKind,
    kernel_refs: u32,
    /// Atomic: a driver's reference and dereference share the table's
    /// lock (only a dereference that may free the object takes it
    /// exclusively, see [`State::drop_driver_ref`]).
    driver_refs: AtomicU32,
    data: ObjData,
}

impl Obj {
    fn describe(&self) -> String {
        match &self.data {
            ObjData::Process(p) => format!("EPROCESS of pid {} ({})", p.pid, p.image_file_name),
            ObjData::Thread { tid, pid } => format!("ETHREAD of tid {tid} (pid {pid})"),
            ObjData::Token { pid, .. } => format!("primary token of pid {pid}"),
        }
    }
}

/// Hashes the addresses and ids the tables are keyed by (one multiply:
/// the keys are not attacker-chosen, and SipHash was a visible share of an
/// event's time under the table's lock).
#[derive(Clone, Copy, Default)]
pub(crate) struct AddrHash;

impl std::hash::BuildHasher for AddrHash {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(0)
    }
}

/// The hasher of [`AddrHash`].
pub(crate) struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits of the product mix every bit of
        // the key (block addresses differ mostly in their middle bits).
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        // hashbrown takes its bucket from the low bits and its tag from the
        // top 7: fold the well-mixed high half down.
        self.0 ^ (self.0 >> 32)
    }
}

struct State {
    generation: u64,
    next_cid: usize,
    /// Live objects by address.
    objects: HashMap<usize, Obj, AddrHash>,
    /// Objects whose last reference went away, with their address, in the
    /// order they died (described when a driver uses one again: burying
    /// formats nothing). A list, not a map: it is only searched when a
    /// pointer is not a live object (a violation), and appending to it
    /// under the table's lock touches one cache line where a growing hash
    /// map touched a random one.
    dead: Vec<(usize, Obj)>,
    /// pid -> EPROCESS address.
    processes: BTreeMap<usize, usize>,
    /// tid -> ETHREAD address.
    threads: BTreeMap<usize, usize>,
    accounts: Vec<Account>,
    account_lookups: u64,
}

// SAFETY: the state holds addresses (usize) of heap blocks it owns, no
// borrowed pointers; all access goes through the STATE mutex.
unsafe impl Send for State {}

/// Read (shared) by the queries drivers make on every event, written when
/// processes, threads and references change.
static STATE: LazyLock<RwLock<State>> = LazyLock::new(|| RwLock::new(State::fresh(1)));
/// Mirrors `State::generation` so thread-local current ids can be checked
/// for staleness without the lock.
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn state() -> RwLockWriteGuard<'static, State> {
    STATE.write().unwrap_or_else(|e| e.into_inner())
}

/// Shared access, for queries.
fn state_read() -> RwLockReadGuard<'static, State> {
    STATE.read().unwrap_or_else(|e| e.into_inner())
}

/// FILETIME (100 ns units since 1601-01-01 UTC) of the host clock.
pub fn filetime_now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64 + 11_644_473_600) * 10_000_000 + (d.subsec_nanos() / 100) as i64
}

impl State {
    fn fresh(generation: u64) -> State {
        let mut s = State {
            generation,
            next_cid: FIRST_CID,
            objects: HashMap::default(),
            dead: Vec::new(),
            processes: BTreeMap::new(),
            threads: BTreeMap::new(),
            accounts: sid::default_accounts(),
            account_lookups: 0,
        };
        let boot = filetime_now();
        let system_sid = Some(SYSTEM_SID.to_vec());
        let (idle, system) = (
            ProcessSpec {
                image_file_name: "Idle".into(),
                user_sid: system_sid.clone(),
                ..ProcessSpec::default()
            },
            ProcessSpec {
                image_file_name: "System".into(),
                user_sid: system_sid,
                ..ProcessSpec::default()
            },
        );
        s.insert_process(IDLE_PID, &idle, boot);
        s.insert_process(SYSTEM_PID, &system, boot);
        s
    }

    fn alloc_cid(&mut self) -> usize {
        let id = self.next_cid;
        self.next_cid += 4;
        id
    }

    fn new_object(&mut self, kind: ObjectKind, data: ObjData) -> usize {
        self.insert_object(ObjectBody::new(kind), kind, data)
    }

    /// [`State::new_object`] with a body made beforehand (without the
    /// table's lock).
    fn insert_object(&mut self, body: Box<ObjectBody>, kind: ObjectKind, data: ObjData) -> usize {
        let addr = Box::into_raw(body) as usize;
        self.objects.insert(
            addr,
            Obj {
                kind,
                kernel_refs: 1,
                driver_refs: AtomicU32::new(0),
                data,
            },
        );
        addr
    }

    /// Adds a process (with its primary token) to the process table: its
    /// image, command line, parent, user SID and logon session from `spec`.
    fn insert_process(&mut self, pid: usize, spec: &ProcessSpec, creation_time: i64) -> usize {
        self.insert_new_process(pid, NewProcess::new(spec, creation_time))
    }

    /// [`State::insert_process`] of a process made beforehand.
    fn insert_new_process(&mut self, pid: usize, new: NewProcess) -> usize {
        let NewProcess {
            token_body,
            mut token_data,
            body,
            mut data,
        } = new;
        if let ObjData::Token { pid: p, .. } = &mut token_data {
            *p = pid;
        }
        let token = self.insert_object(token_body, ObjectKind::Token, token_data);
        data.pid = pid;
        data.token = token;
        let addr = self.insert_object(body, ObjectKind::Process, ObjData::Process(data));
        self.processes.insert(pid, addr);
        addr
    }

    /// Whether a live process or thread has this id (they share one space).
    fn id_in_use(&self, id: usize) -> bool {
        self.processes.contains_key(&id) || self.threads.contains_key(&id)
    }

    fn proc_data(&self, addr: usize) -> &ProcData {
        match &self.objects[&addr].data {
            ObjData::Process(p) => p,
            _ => unreachable!("not a process object"),
        }
    }

    fn proc_data_mut(&mut self, addr: usize) -> &mut ProcData {
        match &mut self.objects.get_mut(&addr).expect("live object").data {
            ObjData::Process(p) => p,
            _ => unreachable!("not a process object"),
        }
    }

    fn process_by_pid(&self, pid: usize) -> Option<usize> {
        self.processes.get(&pid).copied()
    }

    /// Creates a thread in a live process (no notification).
    fn insert_thread(&mut self, pid: usize, tid: usize) -> usize {
        let paddr = self.process_by_pid(pid).expect("live process");
        let addr = self.new_object(ObjectKind::Thread, ObjData::Thread { tid, pid });
        self.threads.insert(tid, addr);
        self.proc_data_mut(paddr).threads.push(tid);
        addr
    }

    /// The most recent thread of live process `pid`, if it has one.
    fn last_thread_of(&self, pid: usize) -> Option<usize> {
        let paddr = self.process_by_pid(pid).expect("live process");
        self.proc_data(paddr).threads.last().copied()
    }

    /// A thread of `pid` to run code "in" that process: its most recent
    /// thread, or a new one (no notification) if it has none.
    fn some_thread_of(&mut self, pid: usize) -> usize {
        let paddr = self.process_by_pid(pid).expect("live process");
        if let Some(&tid) = self.proc_data(paddr).threads.last() {
            return tid;
        }
        let tid = self.alloc_cid();
        self.insert_thread(pid, tid);
        tid
    }

    fn remove_thread(&mut self, tid: usize) {
        if let Some(addr) = self.threads.remove(&tid) {
            let pid = match self.objects[&addr].data {
                ObjData::Thread { pid, .. } => pid,
                _ => unreachable!(),
            };
            if let Some(paddr) = self.process_by_pid(pid) {
                // From the back: the most recent threads end first (and a
                // process may have thousands).
                let threads = &mut self.proc_data_mut(paddr).threads;
                if let Some(i) = threads.iter().rposition(|t| *t == tid) {
                    threads.remove(i);
                }
            }
            self.drop_kernel_ref(addr);
        }
    }

    /// Takes a process out of the table with its threads; its EPROCESS and
    /// token live on while the driver holds references.
    fn remove_process(&mut self, pid: usize) {
        let Some(addr) = self.processes.remove(&pid) else {
            return;
        };
        // Taken, not copied (no allocation under the exclusive lock): every
        // thread leaves the list below anyway.
        let threads = std::mem::take(&mut self.proc_data_mut(addr).threads);
        for tid in threads {
            self.remove_thread(tid);
        }
        let p = self.proc_data_mut(addr);
        p.live = false;
        let token = p.token;
        self.drop_kernel_ref(token);
        self.drop_kernel_ref(addr);
    }

    fn drop_kernel_ref(&mut self, addr: usize) {
        let obj = self.objects.get_mut(&addr).expect("live object");
        obj.kernel_refs -= 1;
        self.bury_if_unreferenced(addr);
    }

    /// Moves the object to the dead list if nothing references it (nothing
    /// when it is already there: two dereferences under the shared lock may
    /// both have seen the count reach zero).
    fn bury_if_unreferenced(&mut self, addr: usize) {
        let Some(obj) = self.objects.get(&addr) else {
            return;
        };
        if obj.kernel_refs == 0 && obj.driver_refs.load(Ordering::Acquire) == 0 {
            let obj = self.objects.remove(&addr).expect("live object");
            // SAFETY: `addr` is a live ObjectBody this state allocated with
            // Box::into_raw and has not freed (it moves to `dead` now and is
            // freed only by `free_all`).
            unsafe { (*(addr as *mut ObjectBody)).magic = DEAD_MAGIC };
            self.dead.push((addr, obj));
        }
    }

    /// Validates an object pointer a driver passed; records a violation
    /// and returns None if it is not a live object of the expected kind.
    fn check_object(
        &self,
        api: &str,
        ptr: *const c_void,
        kind: Option<ObjectKind>,
    ) -> Option<usize> {
        let addr = ptr as usize;
        let Some(obj) = self.objects.get(&addr) else {
            let msg = match self.dead.iter().rev().find(|(a, _)| *a == addr) {
                Some((_, what)) => {
                    format!(
                        "{api}: {addr:#x} is a freed object ({}): use after free",
                        what.describe()
                    )
                }
                None if addr == 0 => format!("{api}: NULL object pointer"),
                None => format!("{api}: {addr:#x} is not a process, thread or token object"),
            };
            violation::record("ps", msg);
            return None;
        };
        // SAFETY: `addr` is a live ObjectBody owned by this state.
        let magic = unsafe { (*(addr as *const ObjectBody)).magic };
        if magic != obj.kind.magic() {
            violation::record(
                "ps",
                format!(
                    "{api}: the header of {} at {addr:#x} was overwritten (objects are opaque)",
                    obj.describe()
                ),
            );
            return None;
        }
        if let Some(k) = kind {
            if obj.kind != k {
                violation::record(
                    "ps",
                    format!(
                        "{api}: {addr:#x} is {}, not {} {}",
                        obj.describe(),
                        if k == ObjectKind::Token { "an" } else { "a" },
                        k.name()
                    ),
                );
                return None;
            }
        }
        Some(addr)
    }

    /// Under the shared lock or the exclusive one.
    fn add_driver_ref(&self, addr: usize) -> isize {
        let obj = &self.objects[&addr];
        let driver = obj.driver_refs.fetch_add(1, Ordering::AcqRel) + 1;
        (obj.kernel_refs + driver) as isize
    }

    /// Under the shared lock or the exclusive one: the new total and
    /// whether it is zero, in which case the caller buries the object
    /// under the exclusive lock ([`State::bury_if_unreferenced`] checks
    /// again).
    fn drop_driver_ref(&self, api: &str, addr: usize) -> (isize, bool) {
        let obj = &self.objects[&addr];
        let dropped = obj
            .driver_refs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match dropped {
            Ok(before) => {
                let total = (obj.kernel_refs + before - 1) as isize;
                (total, total == 0)
            }
            Err(_) => {
                violation::record(
                    "ps",
                    format!(
                        "{api}: {} dereferenced more times than the driver referenced it",
                        obj.describe()
                    ),
                );
                (obj.kernel_refs as isize, false)
            }
        }
    }

    /// Frees every object block (live or dead).
    fn free_all(&mut self) {
        for addr in self.objects.keys().chain(self.dead.iter().map(|(a, _)| a)) {
            // SAFETY: each address is an ObjectBody this state allocated with
            // Box::into_raw and has not freed; the maps are cleared below so
            // none is freed twice.
            drop(unsafe { Box::from_raw(*addr as *mut ObjectBody) });
        }
        self.objects.clear();
        self.dead.clear();
    }
}

/// [`State::some_thread_of`], with shared access when the process has a
/// thread (it nearly always has). Panics if `pid` is not live.
fn some_thread_of(pid: usize) -> usize {
    let found = state_read().last_thread_of(pid);
    // A thread that ends in between is no loss: the caller may get one
    // that is gone by the time it runs either way.
    found.unwrap_or_else(|| state().some_thread_of(pid))
}

impl ObjectBody {
    fn new(kind: ObjectKind) -> Box<ObjectBody> {
        Box::new(ObjectBody {
            magic: kind.magic(),
            _opaque: [0; 15],
        })
    }
}

/// A process (and its primary token) ready to enter the table: everything
/// that allocates (the object bodies, copies of the strings and the SID)
/// is made before the table's lock is taken; the pid and the token's
/// address are filled in under it ([`State::insert_new_process`]).
pub(super) struct NewProcess {
    token_body: Box<ObjectBody>,
    token_data: ObjData,
    body: Box<ObjectBody>,
    data: ProcData,
}

impl NewProcess {
    pub(super) fn new(spec: &ProcessSpec, creation_time: i64) -> NewProcess {
        NewProcess {
            token_body: ObjectBody::new(ObjectKind::Token),
            token_data: ObjData::Token {
                pid: 0,
                user_sid: spec.user_sid.clone(),
                logon_id: spec.logon_id.unwrap_or(SYSTEM_LUID),
            },
            body: ObjectBody::new(ObjectKind::Process),
            data: ProcData {
                pid: 0,
                parent: spec.parent.unwrap_or(0),
                image_file_name: spec.image_file_name.clone(),
                command_line: spec.command_line.clone(),
                creation_time,
                exit_time: 0,
                exit_status: STATUS_PENDING,
                token: 0,
                threads: Vec::new(),
                live: true,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Current process / thread (per host thread)

#[derive(Clone, Copy)]
struct Current {
    generation: u64,
    pid: usize,
    tid: usize,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// The calling host thread's current (pid, tid). A host thread without a
/// simulated thread gets a new thread of the System process.
pub fn current_ids() -> (usize, usize) {
    let generation = GENERATION.load(Ordering::Acquire);
    let cur = CURRENT.with(|c| c.get());
    if let Some(c) = cur {
        // Shared: every event and most queries come here.
        if c.generation == generation && state_read().threads.contains_key(&c.tid) {
            return (c.pid, c.tid);
        }
    }
    let mut s = state();
    let tid = s.alloc_cid();
    s.insert_thread(SYSTEM_PID, tid);
    let generation = s.generation;
    drop(s);
    CURRENT.with(|c| {
        c.set(Some(Current {
            generation,
            pid: SYSTEM_PID,
            tid,
        }))
    });
    (SYSTEM_PID, tid)
}

/// Makes (pid, tid) the calling host thread's current process/thread until
/// the guard is dropped.
pub(crate) struct ContextGuard {
    previous: Option<Current>,
}

pub(crate) fn enter_context(pid: usize, tid: usize) -> ContextGuard {
    let generation = GENERATION.load(Ordering::Acquire);
    let previous = CURRENT.with(|c| {
        c.replace(Some(Current {
            generation,
            pid,
            tid,
        }))
    });
    ContextGuard { previous }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

fn current_process_addr() -> usize {
    let (pid, _) = current_ids();
    state_read().process_by_pid(pid).unwrap_or(0)
}

fn current_thread_addr() -> usize {
    let (_, tid) = current_ids();
    state_read().threads.get(&tid).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Rust-side API for tests and tools

/// What [`process`] reports about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub pid: usize,
    pub parent_pid: usize,
    pub image_file_name: String,
    pub command_line: Option<String>,
    /// FILETIME.
    pub creation_time: i64,
    /// FILETIME; 0 while running.
    pub exit_time: i64,
    /// None while running.
    pub exit_status: Option<NTSTATUS>,
    pub user_sid: Option<Vec<u8>>,
    /// The primary token's `AuthenticationId` (logon session LUID).
    pub logon_id: u64,
    pub threads: Vec<usize>,
    /// The EPROCESS pointer value.
    pub eprocess: usize,
    /// The primary token pointer value.
    pub token: usize,
    /// References the driver holds on the EPROCESS.
    pub driver_references: u32,
}

/// A live process (in the process table), if any.
pub fn process(pid: usize) -> Option<ProcessSnapshot> {
    let s = state_read();
    let addr = s.process_by_pid(pid)?;
    let p = s.proc_data(addr);
    let (user_sid, logon_id) = match &s.objects[&p.token].data {
        ObjData::Token {
            user_sid, logon_id, ..
        } => (user_sid.clone(), *logon_id),
        _ => (None, 0),
    };
    Some(ProcessSnapshot {
        pid: p.pid,
        parent_pid: p.parent,
        image_file_name: p.image_file_name.clone(),
        command_line: p.command_line.clone(),
        creation_time: p.creation_time,
        exit_time: p.exit_time,
        exit_status: (p.exit_status != STATUS_PENDING).then_some(p.exit_status),
        user_sid,
        logon_id,
        threads: p.threads.clone(),
        eprocess: addr,
        token: p.token,
        driver_references: s.objects[&addr].driver_refs.load(Ordering::Acquire),
    })
}

/// Whether a live process or thread has this id (process and thread ids
/// share one space, as on Windows).
pub fn id_in_use(id: usize) -> bool {
    state_read().id_in_use(id)
}

/// The `AuthenticationId` (logon session LUID) of the calling thread's
/// token, which is its process's primary token (ntsim models no
/// impersonation): what `bpf_get_current_logon_id` returns. During a
/// process creation the current thread is the creating thread, so this is
/// the creator's logon session, not the new process's.
pub fn current_logon_id() -> u64 {
    let (pid, _) = current_ids();
    let s = state_read();
    s.process_by_pid(pid)
        .and_then(|addr| match &s.objects[&s.proc_data(addr).token].data {
            ObjData::Token { logon_id, .. } => Some(*logon_id),
            _ => None,
        })
        .unwrap_or(SYSTEM_LUID)
}

/// Pids of the live processes, ascending.
pub fn pids() -> Vec<usize> {
    state_read().processes.keys().copied().collect()
}

/// The process a live thread belongs to.
pub fn thread_process(tid: usize) -> Option<usize> {
    let s = state_read();
    let addr = s.threads.get(&tid)?;
    match s.objects[addr].data {
        ObjData::Thread { pid, .. } => Some(pid),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Exports: object references

fn reference(api: &str, object: *mut c_void) -> isize {
    irql::require_at_most(api, DISPATCH_LEVEL);
    let s = state_read();
    match s.check_object(api, object, None) {
        Some(addr) => s.add_driver_ref(addr),
        None => 0,
    }
}

fn dereference(api: &str, object: *mut c_void, kind: Option<ObjectKind>) -> isize {
    let s = state_read();
    let Some(addr) = s.check_object(api, object, kind) else {
        return 0;
    };
    let (total, last) = s.drop_driver_ref(api, addr);
    drop(s);
    if last {
        state().bury_if_unreferenced(addr);
    }
    total
}

/// `ObfReferenceObject` (what the WDK's `ObReferenceObject` macro calls):
/// returns the new reference count.
///
/// # Safety
/// `object` is only compared against the object table, never dereferenced
/// unless it is a live object.
pub unsafe extern "win64" fn ObfReferenceObject(object: *mut c_void) -> isize {
    reference("ObfReferenceObject", object)
}

/// `ObReferenceObject` (exported under this name too).
///
/// # Safety
/// As [`ObfReferenceObject`].
pub unsafe extern "win64" fn ObReferenceObject(object: *mut c_void) -> isize {
    reference("ObReferenceObject", object)
}

/// `ObfDereferenceObject`: drops a reference the driver took.
///
/// # Safety
/// As [`ObfReferenceObject`].
pub unsafe extern "win64" fn ObfDereferenceObject(object: *mut c_void) -> isize {
    irql::require_at_most("ObfDereferenceObject", DISPATCH_LEVEL);
    dereference("ObfDereferenceObject", object, None)
}

/// `ObDereferenceObject` (exported under this name too).
///
/// # Safety
/// As [`ObfReferenceObject`].
pub unsafe extern "win64" fn ObDereferenceObject(object: *mut c_void) -> isize {
    irql::require_at_most("ObDereferenceObject", DISPATCH_LEVEL);
    dereference("ObDereferenceObject", object, None)
}

/// `PsLookupProcessByProcessId`: a referenced EPROCESS, or
/// STATUS_INVALID_CID for an id that names no live process.
///
/// # Safety
/// `process` must be writable.
pub unsafe extern "win64" fn PsLookupProcessByProcessId(
    process_id: HANDLE,
    process: *mut PEPROCESS,
) -> NTSTATUS {
    irql::require_at_most("PsLookupProcessByProcessId", APC_LEVEL);
    if process.is_null() {
        violation::record("ps", "PsLookupProcessByProcessId: NULL Process pointer");
        return STATUS_INVALID_PARAMETER;
    }
    let s = state_read();
    match s.process_by_pid(process_id) {
        Some(addr) if process_id != IDLE_PID => {
            s.add_driver_ref(addr);
            // SAFETY: the caller passes a writable PEPROCESS slot (checked
            // non-null above).
            unsafe { *process = addr as PEPROCESS };
            STATUS_SUCCESS
        }
        _ => STATUS_INVALID_CID,
    }
}

/// `PsGetProcessId`.
///
/// # Safety
/// `process` is validated against the object table.
pub unsafe extern "win64" fn PsGetProcessId(process: PEPROCESS) -> HANDLE {
    let s = state_read();
    match s.check_object("PsGetProcessId", process, Some(ObjectKind::Process)) {
        Some(addr) => s.proc_data(addr).pid,
        None => 0,
    }
}

/// `PsGetProcessCreateTimeQuadPart` (FILETIME).
///
/// # Safety
/// `process` is validated against the object table.
pub unsafe extern "win64" fn PsGetProcessCreateTimeQuadPart(process: PEPROCESS) -> i64 {
    let s = state_read();
    match s.check_object(
        "PsGetProcessCreateTimeQuadPart",
        process,
        Some(ObjectKind::Process),
    ) {
        Some(addr) => s.proc_data(addr).creation_time,
        None => 0,
    }
}

/// `PsGetProcessExitStatus`: STATUS_PENDING while the process runs.
///
/// # Safety
/// `process` is validated against the object table.
pub unsafe extern "win64" fn PsGetProcessExitStatus(process: PEPROCESS) -> NTSTATUS {
    let s = state_read();
    match s.check_object("PsGetProcessExitStatus", process, Some(ObjectKind::Process)) {
        Some(addr) => s.proc_data(addr).exit_status,
        None => STATUS_PENDING,
    }
}

/// `PsGetProcessExitTime`: the exit time of the *current* process (0 while
/// it has not begun exiting). LARGE_INTEGER returned by value (in RAX).
pub extern "win64" fn PsGetProcessExitTime() -> i64 {
    irql::require_at_most("PsGetProcessExitTime", DISPATCH_LEVEL);
    let addr = current_process_addr();
    let s = state_read();
    if addr == 0 {
        return 0;
    }
    s.proc_data(addr).exit_time
}

/// `PsGetCurrentProcessId`.
pub extern "win64" fn PsGetCurrentProcessId() -> HANDLE {
    current_ids().0
}

/// `PsGetCurrentThreadId`.
pub extern "win64" fn PsGetCurrentThreadId() -> HANDLE {
    current_ids().1
}

/// `PsGetCurrentProcess` (not referenced).
pub extern "win64" fn PsGetCurrentProcess() -> PEPROCESS {
    current_process_addr() as PEPROCESS
}

/// `IoGetCurrentProcess` (what wdm.h's `PsGetCurrentProcess` macro calls).
pub extern "win64" fn IoGetCurrentProcess() -> PEPROCESS {
    current_process_addr() as PEPROCESS
}

/// `PsGetCurrentThread` (not referenced).
pub extern "win64" fn PsGetCurrentThread() -> PETHREAD {
    current_thread_addr() as PETHREAD
}

/// `PsGetThreadId`.
///
/// # Safety
/// `thread` is validated against the object table.
pub unsafe extern "win64" fn PsGetThreadId(thread: PETHREAD) -> HANDLE {
    let s = state_read();
    match s.check_object("PsGetThreadId", thread, Some(ObjectKind::Thread)) {
        Some(addr) => match s.objects[&addr].data {
            ObjData::Thread { tid, .. } => tid,
            _ => 0,
        },
        None => 0,
    }
}

/// `PsGetThreadProcessId`.
///
/// # Safety
/// `thread` is validated against the object table.
pub unsafe extern "win64" fn PsGetThreadProcessId(thread: PETHREAD) -> HANDLE {
    let s = state_read();
    match s.check_object("PsGetThreadProcessId", thread, Some(ObjectKind::Thread)) {
        Some(addr) => match s.objects[&addr].data {
            ObjData::Thread { pid, .. } => pid,
            _ => 0,
        },
        None => 0,
    }
}

/// `PsReferencePrimaryToken`: the process's primary token, referenced.
///
/// # Safety
/// `process` is validated against the object table.
pub unsafe extern "win64" fn PsReferencePrimaryToken(process: PEPROCESS) -> PACCESS_TOKEN {
    irql::require_at_most("PsReferencePrimaryToken", PASSIVE_LEVEL);
    let s = state_read();
    let Some(addr) = s.check_object(
        "PsReferencePrimaryToken",
        process,
        Some(ObjectKind::Process),
    ) else {
        return std::ptr::null_mut();
    };
    let token = s.proc_data(addr).token;
    s.add_driver_ref(token);
    token as PACCESS_TOKEN
}

/// `PsDereferencePrimaryToken`.
///
/// # Safety
/// `token` is validated against the object table.
pub unsafe extern "win64" fn PsDereferencePrimaryToken(token: PACCESS_TOKEN) {
    irql::require_at_most("PsDereferencePrimaryToken", APC_LEVEL);
    dereference("PsDereferencePrimaryToken", token, Some(ObjectKind::Token));
}

/// The user SID of a live token (for `SeQueryInformationToken`).
/// `Err(())` after a violation was recorded for a bad token pointer.
fn token_user_sid(api: &str, token: PACCESS_TOKEN) -> Result<Option<Vec<u8>>, ()> {
    let s = state_read();
    let addr = s
        .check_object(api, token, Some(ObjectKind::Token))
        .ok_or(())?;
    match &s.objects[&addr].data {
        ObjData::Token { user_sid, .. } => Ok(user_sid.clone()),
        _ => Err(()),
    }
}

pub(crate) fn exports() -> Vec<Export> {
    let mut v = vec![
        export!("ntoskrnl.exe", ObfReferenceObject),
        export!("ntoskrnl.exe", ObReferenceObject),
        export!("ntoskrnl.exe", ObfDereferenceObject),
        export!("ntoskrnl.exe", ObDereferenceObject),
        export!("ntoskrnl.exe", PsLookupProcessByProcessId),
        export!("ntoskrnl.exe", PsGetProcessId),
        export!("ntoskrnl.exe", PsGetProcessCreateTimeQuadPart),
        export!("ntoskrnl.exe", PsGetProcessExitStatus),
        export!("ntoskrnl.exe", PsGetProcessExitTime),
        export!("ntoskrnl.exe", PsGetCurrentProcessId),
        export!("ntoskrnl.exe", PsGetCurrentThreadId),
        export!("ntoskrnl.exe", PsGetCurrentProcess),
        export!("ntoskrnl.exe", IoGetCurrentProcess),
        export!("ntoskrnl.exe", PsGetCurrentThread),
        export!("ntoskrnl.exe", PsGetThreadId),
        export!("ntoskrnl.exe", PsGetThreadProcessId),
        export!("ntoskrnl.exe", PsReferencePrimaryToken),
        export!("ntoskrnl.exe", PsDereferencePrimaryToken),
    ];
    v.extend(notify::exports());
    v.extend(sid::exports());
    v.extend(thread::exports());
    v
}

/// Forgets all state (a new [`crate::Sim`]): only System and Idle remain,
/// no notify routine is registered, the account table is the default one.
pub(crate) fn reset() {
    notify::reset();
    thread::reset();
    let mut s = state();
    s.free_all();
    let generation = s.generation + 1;
    *s = State::fresh(generation);
    GENERATION.store(generation, Ordering::Release);
}

/// What a driver left behind, one line each: notify routines still
/// registered, references to processes, threads and tokens not released.
pub(crate) fn outstanding() -> Vec<String> {
    let mut out = notify::outstanding();
    out.extend(thread::outstanding());
    let s = state();
    let mut refs: Vec<_> = s
        .objects
        .values()
        .filter(|o| o.driver_refs.load(Ordering::Acquire) > 0)
        .map(|o| {
            let how = match o.kind {
                ObjectKind::Token => "PsReferencePrimaryToken without PsDereferencePrimaryToken",
                _ => "ObReferenceObject/PsLookup* without ObDereferenceObject",
            };
            format!(
                "ps: {} reference(s) to the {} ({how})",
                o.driver_refs.load(Ordering::Acquire),
                o.describe()
            )
        })
        .collect();
    refs.sort();
    out.extend(refs);
    out
}
