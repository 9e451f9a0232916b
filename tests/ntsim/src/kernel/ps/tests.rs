//! Unit tests: the exports are called as a driver would, with Rust
//! `extern "win64"` notify routines.

use super::notify::TEST_IMAGE_FLAGS;
use super::*;
use crate::kernel::loader::ImageFlags;
use crate::kernel::status::*;
use crate::kernel::types::{DISPATCH_LEVEL, UNICODE_STRING};
use crate::kernel::{fault, pool};
use crate::Sim;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod strings;
mod tokens;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a process notify routine observed.
#[derive(Clone, Debug, Default)]
struct Seen {
    who: &'static str,
    process: usize,
    pid: usize,
    create: bool,
    size: usize,
    flags: u32,
    parent: usize,
    creating: CLIENT_ID,
    file_object_null: bool,
    image: String,
    command_line: Option<String>,
    status_in: NTSTATUS,
    get_pid: usize,
    create_time: i64,
    exit_time: i64,
    exit_status: NTSTATUS,
    current: (usize, usize),
    current_process: usize,
    irql: u8,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
static DENY_WITH: AtomicI32 = AtomicI32::new(0);

fn clear_seen() {
    lock(&SEEN).clear();
    DENY_WITH.store(0, Ordering::SeqCst);
}

fn seen() -> Vec<Seen> {
    lock(&SEEN).clone()
}

unsafe fn observe(
    who: &'static str,
    process: PEPROCESS,
    pid: HANDLE,
    info: *mut PS_CREATE_NOTIFY_INFO,
) {
    let mut s = Seen {
        who,
        process: process as usize,
        pid,
        create: !info.is_null(),
        exit_time: PsGetProcessExitTime(),
        current: (PsGetCurrentProcessId(), PsGetCurrentThreadId()),
        current_process: PsGetCurrentProcess() as usize,
        irql: irql::current(),
        ..Seen::default()
    };
    // SAFETY: the kernel passes a live EPROCESS and, on creation, a valid
    // PS_CREATE_NOTIFY_INFO with valid strings.
    unsafe {
        s.get_pid = PsGetProcessId(process);
        s.create_time = PsGetProcessCreateTimeQuadPart(process);
        s.exit_status = PsGetProcessExitStatus(process);
        if let Some(i) = info.as_mut() {
            s.size = i.Size;
            s.flags = i.Flags;
            s.parent = i.ParentProcessId;
            s.creating = i.CreatingThreadId;
            s.file_object_null = i.FileObject.is_null();
            s.image = (*i.ImageFileName).to_string_lossy();
            s.command_line = i.CommandLine.as_ref().map(|c| c.to_string_lossy());
            s.status_in = i.CreationStatus;
            let deny = DENY_WITH.load(Ordering::SeqCst);
            if who == "a" && deny != 0 {
                i.CreationStatus = deny;
            }
        }
    }
    lock(&SEEN).push(s);
}

unsafe extern "win64" fn routine_a(
    process: PEPROCESS,
    pid: HANDLE,
    info: *mut PS_CREATE_NOTIFY_INFO,
) {
    // SAFETY: forwarded kernel arguments.
    unsafe { observe("a", process, pid, info) }
}

unsafe extern "win64" fn routine_b(
    process: PEPROCESS,
    pid: HANDLE,
    info: *mut PS_CREATE_NOTIFY_INFO,
) {
    // SAFETY: forwarded kernel arguments.
    unsafe { observe("b", process, pid, info) }
}

fn register(r: CreateProcessNotifyRoutineEx) -> NTSTATUS {
    // SAFETY: `r` is a static function of the right type.
    unsafe { PsSetCreateProcessNotifyRoutineEx(Some(r), 0) }
}

fn unregister(r: CreateProcessNotifyRoutineEx) -> NTSTATUS {
    // SAFETY: as above.
    unsafe { PsSetCreateProcessNotifyRoutineEx(Some(r), 1) }
}

fn spec(image: &str) -> ProcessSpec {
    ProcessSpec {
        image_file_name: image.to_string(),
        ..ProcessSpec::default()
    }
}

#[test]
fn create_and_exit_deliver_every_field() {
    let sim = Sim::new();
    clear_seen();
    assert_eq!(register(routine_a), STATUS_SUCCESS);
    assert_eq!(notify_routine_counts().process, 1);

    let parent = create_process(&spec("parent.exe")).pid;
    let creator_tid = create_thread(parent);
    clear_seen();

    let created_at = 133_000_000_000_000_000;
    let r = create_process(&ProcessSpec {
        image_file_name: r"\??\C:\Windows\System32\notepad.exe".into(),
        command_line: Some("notepad.exe a.txt".into()),
        parent: Some(parent),
        creating_thread: Some((parent, creator_tid)),
        user_sid: Some(test_user_sid()),
        creation_time: Some(created_at),
        subsystem: true,
        file_open_name_available: true,
        logon_id: Some(0x5555),
        pid: None,
    });
    assert_eq!(r.creation_status, STATUS_SUCCESS);
    assert_eq!(process(r.pid).unwrap().logon_id, 0x5555);
    assert!(r.pid.is_multiple_of(4) && r.pid > parent, "pid {}", r.pid);
    let snap = process(r.pid).expect("the process is live");
    let parent_snap = process(parent).unwrap();

    let s = seen();
    assert_eq!(s.len(), 1, "{s:?}");
    let c = &s[0];
    assert!(c.create);
    assert_eq!(c.pid, r.pid);
    assert_eq!(c.process, snap.eprocess);
    assert_eq!(c.get_pid, r.pid);
    assert_eq!(c.size, 72);
    assert_eq!(c.flags, 3);
    assert_eq!(c.parent, parent);
    assert_eq!(
        c.creating,
        CLIENT_ID {
            UniqueProcess: parent,
            UniqueThread: creator_tid
        }
    );
    assert!(c.file_object_null);
    assert_eq!(c.image, r"\??\C:\Windows\System32\notepad.exe");
    assert_eq!(c.command_line.as_deref(), Some("notepad.exe a.txt"));
    assert_eq!(c.status_in, STATUS_SUCCESS);
    assert_eq!(c.create_time, created_at);
    assert_eq!(c.exit_status, STATUS_PENDING);
    assert_eq!(c.exit_time, 0, "the creating process is not exiting");
    assert_eq!(
        c.current,
        (parent, creator_tid),
        "runs in the creating thread"
    );
    assert_eq!(c.current_process, parent_snap.eprocess);
    assert_eq!(c.irql, PASSIVE_LEVEL);
    assert_eq!(snap.user_sid, Some(test_user_sid()));
    assert_eq!(snap.parent_pid, parent);
    assert_eq!(snap.exit_status, None);

    let exited_at = created_at + 50_000_000;
    assert!(exit_process(r.pid, 0x1234, Some(exited_at)));
    let s = seen();
    assert_eq!(s.len(), 2, "{s:?}");
    let e = &s[1];
    assert!(!e.create, "CreateInfo is NULL on exit");
    assert_eq!((e.pid, e.get_pid, e.process), (r.pid, r.pid, snap.eprocess));
    assert_eq!(e.exit_status, 0x1234);
    assert_eq!(
        e.exit_time, exited_at,
        "PsGetProcessExitTime reads the exiting process"
    );
    assert_eq!(e.current.0, r.pid, "exit runs in the exiting process");
    assert_eq!(e.current_process, snap.eprocess);
    assert!(process(r.pid).is_none());
    assert!(!exit_process(r.pid, 0, None), "already gone");
    assert_eq!(
        PsGetProcessExitTime(),
        0,
        "the caller's process is not exiting"
    );

    assert!(exit_process(parent, 0, None));
    assert_eq!(unregister(routine_a), STATUS_SUCCESS);
    assert_eq!(notify_routine_counts().process, 0);
    sim.finish().unwrap();
}

#[test]
fn denied_creation_is_reported_and_the_process_never_exists() {
    let sim = Sim::new();
    clear_seen();
    assert_eq!(register(routine_a), STATUS_SUCCESS);
    assert_eq!(register(routine_b), STATUS_SUCCESS);
    DENY_WITH.store(STATUS_ACCESS_DENIED, Ordering::SeqCst);
    let r = create_process(&spec("evil.exe"));
    assert_eq!(r.creation_status, STATUS_ACCESS_DENIED);
    assert!(process(r.pid).is_none());
    assert!(!pids().contains(&r.pid));
    let s = seen();
    assert_eq!(
        s.iter().map(|s| s.who).collect::<Vec<_>>(),
        ["a", "b"],
        "slot order"
    );
    assert_eq!(s[1].status_in, STATUS_ACCESS_DENIED, "b sees a's verdict");
    assert_eq!(s[0].command_line, None, "no command line: NULL");
    assert_eq!(s[0].flags, 0);
    assert_eq!(s[0].parent, 0);
    // Created by the caller's own (System) thread.
    assert_eq!(s[0].current, current_ids());
    assert_eq!(s[0].creating.UniqueThread, current_ids().1);
    assert!(
        !exit_process(r.pid, 0, None),
        "no exit for a denied process"
    );
    assert_eq!(seen().len(), 2);

    DENY_WITH.store(0, Ordering::SeqCst);
    let ok = create_process(&spec("good.exe"));
    assert_eq!(ok.creation_status, STATUS_SUCCESS);
    assert!(process(ok.pid).is_some());
    assert!(exit_process(ok.pid, 0, None));
    assert_eq!(unregister(routine_a), STATUS_SUCCESS);
    assert_eq!(unregister(routine_b), STATUS_SUCCESS);
    sim.finish().unwrap();
}

unsafe extern "win64" fn pnop<const N: usize>(
    _: PEPROCESS,
    _: HANDLE,
    _: *mut PS_CREATE_NOTIFY_INFO,
) {
    black_box(N);
}
unsafe extern "win64" fn tnop<const N: usize>(_: HANDLE, _: HANDLE, _: u8) {
    black_box(N);
}
unsafe extern "win64" fn inop<const N: usize>(
    _: *mut UNICODE_STRING,
    _: HANDLE,
    _: *mut IMAGE_INFO,
) {
    black_box(N);
}

macro_rules! table {
    ($f:ident: $t:ty; $($n:literal)*) => { vec![$($f::<$n> as $t),*] };
}

fn process_nops() -> Vec<CreateProcessNotifyRoutineEx> {
    table!(pnop: CreateProcessNotifyRoutineEx; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
        21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50
        51 52 53 54 55 56 57 58 59 60 61 62 63 64)
}

fn thread_nops() -> Vec<CreateThreadNotifyRoutine> {
    table!(tnop: CreateThreadNotifyRoutine; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
        21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50
        51 52 53 54 55 56 57 58 59 60 61 62 63 64)
}

#[test]
fn process_registration_errors() {
    let sim = Sim::new();
    assert_eq!(register(routine_a), STATUS_SUCCESS);
    assert_eq!(register(routine_a), STATUS_INVALID_PARAMETER, "duplicate");
    assert_eq!(unregister(routine_b), STATUS_PROCEDURE_NOT_FOUND);

    // 64 at most.
    let nops = process_nops();
    for (i, r) in nops.iter().take(63).enumerate() {
        assert_eq!(register(*r), STATUS_SUCCESS, "routine {i}");
    }
    assert_eq!(notify_routine_counts().process, 64);
    assert_eq!(register(nops[63]), STATUS_INVALID_PARAMETER, "table full");
    // A freed slot is reused.
    assert_eq!(unregister(nops[10]), STATUS_SUCCESS);
    assert_eq!(register(nops[63]), STATUS_SUCCESS);
    for r in nops
        .iter()
        .take(64)
        .filter(|r| **r as usize != nops[10] as usize)
    {
        assert_eq!(unregister(*r), STATUS_SUCCESS);
    }
    assert_eq!(notify_routine_counts().process, 1);

    // Allocation failure of the callback block.
    let next = fault::counts()
        .get("PsSetCreateProcessNotifyRoutineEx")
        .copied()
        .unwrap_or(0)
        + 1;
    fault::fail_nth("PsSetCreateProcessNotifyRoutineEx", next);
    assert_eq!(register(routine_b), STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(notify_routine_counts().process, 1);

    // An image not linked with /INTEGRITYCHECK is refused.
    lock(&TEST_IMAGE_FLAGS).push((
        routine_b as CreateProcessNotifyRoutineEx as usize,
        ImageFlags {
            force_integrity: false,
        },
    ));
    assert_eq!(register(routine_b), STATUS_ACCESS_DENIED);
    assert_eq!(notify_routine_counts().process, 1);
    lock(&TEST_IMAGE_FLAGS)[0].1.force_integrity = true;
    assert_eq!(register(routine_b), STATUS_SUCCESS);

    // NULL routine and DISPATCH_LEVEL are misuse.
    // SAFETY: NULL is handled (and recorded).
    assert_eq!(
        unsafe { PsSetCreateProcessNotifyRoutineEx(None, 0) },
        STATUS_INVALID_PARAMETER
    );
    assert!(violation::take()[0].message.contains("NULL NotifyRoutine"));
    irql::at(DISPATCH_LEVEL, || unregister(routine_b));
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, "irql");

    assert_eq!(unregister(routine_a), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn thread_and_image_registration_errors() {
    let sim = Sim::new();
    // SAFETY: static routines of the right types, or NULL (handled).
    unsafe {
        let nops = thread_nops();
        assert_eq!(
            PsSetCreateThreadNotifyRoutineEx(7, nops[0] as *const c_void),
            STATUS_INVALID_PARAMETER
        );
        assert!(violation::take()[0].message.contains("unknown NotifyType"));
        assert_eq!(
            PsRemoveCreateThreadNotifyRoutine(Some(nops[0])),
            STATUS_PROCEDURE_NOT_FOUND
        );
        for r in nops.iter().take(32) {
            assert_eq!(PsSetCreateThreadNotifyRoutine(Some(*r)), STATUS_SUCCESS);
        }
        for r in nops.iter().skip(32).take(32) {
            assert_eq!(
                PsSetCreateThreadNotifyRoutineEx(
                    PS_CREATE_THREAD_NOTIFY_NON_SYSTEM,
                    *r as *const c_void
                ),
                STATUS_SUCCESS
            );
        }
        assert_eq!(
            PsSetCreateThreadNotifyRoutine(Some(nops[64])),
            STATUS_INSUFFICIENT_RESOURCES
        );
        assert_eq!(notify_routine_counts().thread, 64);
        for r in nops.iter().take(64) {
            assert_eq!(PsRemoveCreateThreadNotifyRoutine(Some(*r)), STATUS_SUCCESS);
        }
        assert_eq!(notify_routine_counts().thread, 0);

        let next = fault::counts()
            .get("PsSetCreateThreadNotifyRoutine")
            .copied()
            .unwrap_or(0)
            + 1;
        fault::fail_nth("PsSetCreateThreadNotifyRoutine", next);
        assert_eq!(
            PsSetCreateThreadNotifyRoutine(Some(nops[0])),
            STATUS_INSUFFICIENT_RESOURCES
        );

        let img = inop::<0> as LoadImageNotifyRoutine;
        assert_eq!(
            PsSetLoadImageNotifyRoutineEx(Some(img), 2),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            PsRemoveLoadImageNotifyRoutine(Some(img)),
            STATUS_PROCEDURE_NOT_FOUND
        );
        fault::fail_nth("PsSetLoadImageNotifyRoutineEx", 2);
        assert_eq!(PsSetLoadImageNotifyRoutineEx(Some(img), 1), STATUS_SUCCESS);
        assert_eq!(
            PsSetLoadImageNotifyRoutineEx(Some(img), 0),
            STATUS_INSUFFICIENT_RESOURCES
        );
        assert_eq!(notify_routine_counts().image, 1);
        assert_eq!(PsRemoveLoadImageNotifyRoutine(Some(img)), STATUS_SUCCESS);
        assert_eq!(notify_routine_counts().image, 0);
    }
    sim.finish().unwrap();
}

#[test]
fn routines_left_registered_are_reported() {
    let sim = Sim::new();
    assert_eq!(register(routine_a), STATUS_SUCCESS);
    // SAFETY: static routines of the right types.
    unsafe {
        assert_eq!(
            PsSetCreateThreadNotifyRoutine(Some(tnop::<1>)),
            STATUS_SUCCESS
        );
        assert_eq!(PsSetLoadImageNotifyRoutine(Some(inop::<1>)), STATUS_SUCCESS);
    }
    let left = sim.outstanding();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left[0].contains("process notify routine"), "{left:?}");
    assert!(left[1].contains("thread notify routine"), "{left:?}");
    assert!(left[2].contains("image-load notify routine"), "{left:?}");
    let err = sim.finish().unwrap_err();
    assert!(err.contains("still registered"), "{err}");
    // The next machine starts clean.
    let sim = Sim::new();
    assert_eq!(notify_routine_counts(), NotifyCounts::default());
    sim.finish().unwrap();
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static LATE_CALLS: AtomicUsize = AtomicUsize::new(0);
static REMOVED: AtomicBool = AtomicBool::new(false);

unsafe extern "win64" fn slow_routine(_: PEPROCESS, _: HANDLE, _: *mut PS_CREATE_NOTIFY_INFO) {
    if REMOVED.load(Ordering::SeqCst) {
        LATE_CALLS.fetch_add(1, Ordering::SeqCst);
    }
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(3));
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn removal_waits_for_calls_in_flight_and_no_call_follows() {
    let sim = Sim::new();
    LATE_CALLS.store(0, Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicUsize::new(0));
    let raiser = {
        let (stop, events) = (stop.clone(), events.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = create_process(&spec("busy.exe"));
                assert_eq!(r.creation_status, STATUS_SUCCESS);
                assert!(exit_process(r.pid, 0, None));
                events.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    for _ in 0..5 {
        REMOVED.store(false, Ordering::SeqCst);
        CALLS.store(0, Ordering::SeqCst);
        assert_eq!(register(slow_routine), STATUS_SUCCESS);
        // Remove while a call is running on the other thread.
        wait_until("a call in flight", || IN_FLIGHT.load(Ordering::SeqCst) > 0);
        assert_eq!(unregister(slow_routine), STATUS_SUCCESS);
        assert_eq!(
            IN_FLIGHT.load(Ordering::SeqCst),
            0,
            "a call still runs after removal"
        );
        REMOVED.store(true, Ordering::SeqCst);
        let seen_events = events.load(Ordering::SeqCst);
        wait_until("more events", || {
            events.load(Ordering::SeqCst) >= seen_events + 3
        });
    }
    stop.store(true, Ordering::SeqCst);
    raiser.join().unwrap();
    assert_eq!(
        LATE_CALLS.load(Ordering::SeqCst),
        0,
        "called after its removal returned"
    );
    sim.finish().unwrap();
}

static HOLDING: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);
static VICTIM_CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "win64" fn holding_routine(_: PEPROCESS, _: HANDLE, _: *mut PS_CREATE_NOTIFY_INFO) {
    HOLDING.store(true, Ordering::SeqCst);
    wait_until("release", || RELEASE.load(Ordering::SeqCst));
}

unsafe extern "win64" fn victim_routine(_: PEPROCESS, _: HANDLE, _: *mut PS_CREATE_NOTIFY_INFO) {
    VICTIM_CALLS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_routine_removed_during_an_event_is_not_called_by_that_event() {
    let sim = Sim::new();
    HOLDING.store(false, Ordering::SeqCst);
    RELEASE.store(false, Ordering::SeqCst);
    VICTIM_CALLS.store(0, Ordering::SeqCst);
    assert_eq!(register(holding_routine), STATUS_SUCCESS);
    assert_eq!(register(victim_routine), STATUS_SUCCESS);
    // The event has started (its first routine runs) when the second
    // routine is removed; the removal does not wait (the second routine is
    // not running) and the event must then skip it.
    let raiser = std::thread::spawn(|| create_process(&spec("held.exe")));
    wait_until("the first routine to run", || {
        HOLDING.load(Ordering::SeqCst)
    });
    assert_eq!(unregister(victim_routine), STATUS_SUCCESS);
    RELEASE.store(true, Ordering::SeqCst);
    let r = raiser.join().unwrap();
    assert_eq!(r.creation_status, STATUS_SUCCESS);
    assert_eq!(
        VICTIM_CALLS.load(Ordering::SeqCst),
        0,
        "called after its removal returned"
    );
    assert_eq!(unregister(holding_routine), STATUS_SUCCESS);
    assert!(exit_process(r.pid, 0, None));
    sim.finish().unwrap();
}

unsafe extern "win64" fn self_removing(_: PEPROCESS, _: HANDLE, _: *mut PS_CREATE_NOTIFY_INFO) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: removing a static routine.
    let status = unsafe { PsSetCreateProcessNotifyRoutineEx(Some(self_removing), 1) };
    assert_eq!(status, STATUS_SUCCESS);
}

#[test]
fn removing_a_routine_from_inside_itself_is_a_violation_not_a_hang() {
    let sim = Sim::new();
    CALLS.store(0, Ordering::SeqCst);
    assert_eq!(register(self_removing), STATUS_SUCCESS);
    let r = create_process(&spec("a.exe"));
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].message.contains("inside the routine it removes"),
        "{v:?}"
    );
    assert!(exit_process(r.pid, 0, None));
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        1,
        "removed: not called for the exit"
    );
    sim.finish().unwrap();
}

unsafe extern "win64" fn raises_irql(_: PEPROCESS, _: HANDLE, _: *mut PS_CREATE_NOTIFY_INFO) {
    irql::set(DISPATCH_LEVEL);
}

#[test]
fn a_routine_returning_at_another_irql_is_a_violation() {
    let sim = Sim::new();
    assert_eq!(register(raises_irql), STATUS_SUCCESS);
    let r = create_process(&spec("a.exe"));
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].message.contains("returned at IRQL 2"), "{v:?}");
    assert_eq!(irql::current(), PASSIVE_LEVEL);
    assert_eq!(unregister(raises_irql), STATUS_SUCCESS);
    assert!(exit_process(r.pid, 0, None));
    // Raising an event from DISPATCH_LEVEL is itself wrong.
    irql::at(DISPATCH_LEVEL, || {
        let r = create_process(&spec("b.exe"));
        assert_eq!(irql::current(), DISPATCH_LEVEL, "caller's IRQL restored");
        exit_process(r.pid, 0, None);
    });
    assert_eq!(violation::take().len(), 2);
    sim.finish().unwrap();
}

/// (routine, pid, tid, create, current pid, current tid)
type ThreadSeen = (&'static str, usize, usize, bool, usize, usize);
static THREAD_SEEN: Mutex<Vec<ThreadSeen>> = Mutex::new(Vec::new());

unsafe extern "win64" fn thread_classic(pid: HANDLE, tid: HANDLE, create: u8) {
    let cur = (PsGetCurrentProcessId(), PsGetCurrentThreadId());
    lock(&THREAD_SEEN).push(("classic", pid, tid, create != 0, cur.0, cur.1));
}

unsafe extern "win64" fn thread_non_system(pid: HANDLE, tid: HANDLE, create: u8) {
    let cur = (PsGetCurrentProcessId(), PsGetCurrentThreadId());
    lock(&THREAD_SEEN).push(("nonsystem", pid, tid, create != 0, cur.0, cur.1));
}

#[test]
fn thread_notifications_run_in_the_documented_context() {
    let sim = Sim::new();
    lock(&THREAD_SEEN).clear();
    // SAFETY: static routines of the right type.
    unsafe {
        assert_eq!(
            PsSetCreateThreadNotifyRoutine(Some(thread_classic)),
            STATUS_SUCCESS
        );
        assert_eq!(
            PsSetCreateThreadNotifyRoutineEx(
                PS_CREATE_THREAD_NOTIFY_NON_SYSTEM,
                thread_non_system as *const c_void
            ),
            STATUS_SUCCESS
        );
    }
    let me = current_ids();
    let p = create_process(&spec("t.exe")).pid;
    let t = create_thread(p);
    assert_eq!(thread_process(t), Some(p));
    assert!(exit_thread(t));
    assert!(thread_process(t).is_none());
    let sys = create_thread(SYSTEM_PID);
    assert!(exit_thread(sys));
    let seen = lock(&THREAD_SEEN).clone();
    assert_eq!(
        seen,
        [
            ("classic", p, t, true, me.0, me.1),
            ("nonsystem", p, t, true, p, t),
            ("classic", p, t, false, p, t),
            ("nonsystem", p, t, false, p, t),
            ("classic", SYSTEM_PID, sys, true, me.0, me.1),
            ("classic", SYSTEM_PID, sys, false, SYSTEM_PID, sys),
        ]
    );
    // SAFETY: static routines.
    unsafe {
        assert_eq!(
            PsRemoveCreateThreadNotifyRoutine(Some(thread_classic)),
            STATUS_SUCCESS
        );
        assert_eq!(
            PsRemoveCreateThreadNotifyRoutine(Some(thread_non_system)),
            STATUS_SUCCESS
        );
    }
    assert!(exit_process(p, 0, None));
    sim.finish().unwrap();
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ImageSeen {
    who: &'static str,
    name: Option<String>,
    pid: usize,
    properties: u32,
    base: usize,
    size: usize,
    selector: u32,
    sections: u32,
    ex_size: Option<usize>,
    ex_file_object_null: Option<bool>,
    current_pid: usize,
}

static IMAGE_SEEN: Mutex<Vec<ImageSeen>> = Mutex::new(Vec::new());

unsafe fn observe_image(
    who: &'static str,
    name: *mut UNICODE_STRING,
    pid: HANDLE,
    info: *mut IMAGE_INFO,
) {
    // SAFETY: the kernel passes a valid IMAGE_INFO (inside an IMAGE_INFO_EX
    // when bit 10 is set) and a valid or NULL name.
    unsafe {
        let i = &*info;
        let ex = (i.Properties & (1 << 10) != 0)
            .then(|| &*((info as *const u8).sub(8) as *const IMAGE_INFO_EX));
        lock(&IMAGE_SEEN).push(ImageSeen {
            who,
            name: name.as_ref().map(|n| n.to_string_lossy()),
            pid,
            properties: i.Properties,
            base: i.ImageBase as usize,
            size: i.ImageSize,
            selector: i.ImageSelector,
            sections: i.ImageSectionNumber,
            ex_size: ex.map(|e| e.Size),
            ex_file_object_null: ex.map(|e| e.FileObject.is_null()),
            current_pid: PsGetCurrentProcessId(),
        });
    }
}

unsafe extern "win64" fn image_plain(
    name: *mut UNICODE_STRING,
    pid: HANDLE,
    info: *mut IMAGE_INFO,
) {
    // SAFETY: forwarded kernel arguments.
    unsafe { observe_image("plain", name, pid, info) }
}

unsafe extern "win64" fn image_any_arch(
    name: *mut UNICODE_STRING,
    pid: HANDLE,
    info: *mut IMAGE_INFO,
) {
    // SAFETY: forwarded kernel arguments.
    unsafe { observe_image("any", name, pid, info) }
}

#[test]
fn image_load_notifications_carry_image_info() {
    let sim = Sim::new();
    lock(&IMAGE_SEEN).clear();
    // SAFETY: static routines of the right type.
    unsafe {
        assert_eq!(
            PsSetLoadImageNotifyRoutine(Some(image_plain)),
            STATUS_SUCCESS
        );
        assert_eq!(
            PsSetLoadImageNotifyRoutineEx(
                Some(image_any_arch),
                PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE
            ),
            STATUS_SUCCESS
        );
    }
    let p = create_process(&spec("host.exe")).pid;
    let dll = ImageInfoSpec {
        image_base: 0x7ff6_0000_0000,
        image_size: 0x3000,
        addressing_mode: 3,
        signature_level: 6,
        signature_type: 1,
        image_selector: 0,
        image_section_number: 5,
        extended_info: true,
        ..ImageInfoSpec::default()
    };
    load_image(p, Some(r"\Device\HarddiskVolume1\a.dll"), &dll);
    let driver = ImageInfoSpec {
        image_base: 0xffff_f800_0000_0000,
        image_size: 0x10000,
        system_mode_image: true,
        ..ImageInfoSpec::default()
    };
    load_image(0, None, &driver);
    let wow = ImageInfoSpec {
        machine_type_mismatch: true,
        ..ImageInfoSpec::default()
    };
    load_image(p, Some("x86.dll"), &wow);

    let seen = lock(&IMAGE_SEEN).clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    let expect_dll = |who| ImageSeen {
        who,
        name: Some(r"\Device\HarddiskVolume1\a.dll".into()),
        pid: p,
        properties: 3 | 1 << 10 | 6 << 12 | 1 << 16,
        base: 0x7ff6_0000_0000,
        size: 0x3000,
        selector: 0,
        sections: 5,
        ex_size: Some(56),
        ex_file_object_null: Some(true),
        current_pid: p,
    };
    assert_eq!(seen[0], expect_dll("plain"));
    assert_eq!(seen[1], expect_dll("any"));
    assert_eq!(seen[2].name, None);
    assert_eq!(seen[2].pid, 0);
    assert_eq!(seen[2].properties, 1 << 8);
    assert_eq!(seen[2].ex_size, None);
    assert_eq!(seen[2].base, 0xffff_f800_0000_0000);
    assert_eq!(seen[2].current_pid, SYSTEM_PID);
    // Only the routine registered for conflicting architectures sees it.
    assert_eq!(seen[4].who, "any");
    assert_eq!(seen[4].properties, 1 << 11);
    // SAFETY: static routines.
    unsafe {
        assert_eq!(
            PsRemoveLoadImageNotifyRoutine(Some(image_plain)),
            STATUS_SUCCESS
        );
        assert_eq!(
            PsRemoveLoadImageNotifyRoutine(Some(image_any_arch)),
            STATUS_SUCCESS
        );
    }
    assert!(exit_process(p, 0, None));
    sim.finish().unwrap();
}

#[test]
fn references_outlive_exit_and_leaks_and_misuse_are_reported() {
    let sim = Sim::new();
    let pid = create_process(&spec("leaky.exe")).pid;
    // SAFETY: valid pointers to locals; object pointers are validated by
    // the kernel (bad ones are the point of this test).
    unsafe {
        let mut p: PEPROCESS = std::ptr::null_mut();
        assert_eq!(PsLookupProcessByProcessId(pid, &mut p), STATUS_SUCCESS);
        assert_eq!(ObReferenceObject(p), 3, "table + lookup + this one");
        let token = PsReferencePrimaryToken(p);
        assert!(exit_process(pid, 7, None));
        // The EPROCESS lives on while referenced.
        assert_eq!(PsGetProcessId(p), pid);
        assert_eq!(PsGetProcessExitStatus(p), 7);
        let left = sim.outstanding();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.iter()
                .any(|l| l.contains("2 reference(s) to the EPROCESS of pid")),
            "{left:?}"
        );
        assert!(
            left.iter()
                .any(|l| l.contains("reference(s) to the primary token of pid")),
            "{left:?}"
        );
        assert_eq!(ObfDereferenceObject(p), 1);
        assert_eq!(ObDereferenceObject(p), 0);
        PsDereferencePrimaryToken(token);
        assert!(sim.outstanding().is_empty(), "{:?}", sim.outstanding());
        assert!(violation::peek().is_empty());

        // Use after free.
        ObDereferenceObject(p);
        let v = violation::take();
        assert!(v[0].message.contains("use after free"), "{v:?}");
        // Dereferencing what the driver never referenced.
        let system = PsGetCurrentProcess();
        ObDereferenceObject(system);
        assert!(violation::take()[0]
            .message
            .contains("more times than the driver referenced"));
        // Not an object at all.
        let mut junk = [0u64; 4];
        ObReferenceObject(junk.as_mut_ptr().cast());
        assert!(violation::take()[0]
            .message
            .contains("is not a process, thread or token"));
        // Wrong kind.
        PsDereferencePrimaryToken(system);
        assert!(violation::take()[0].message.contains("not an access token"));
        // A driver writing into the opaque object.
        let header = system as *mut u64;
        let saved = *header;
        *header = 0;
        assert_eq!(PsGetProcessId(system), 0);
        assert!(violation::take()[0].message.contains("overwritten"));
        *header = saved;
        assert_eq!(PsGetProcessId(system), SYSTEM_PID);

        let mut q: PEPROCESS = std::ptr::null_mut();
        assert_eq!(
            PsLookupProcessByProcessId(pid, &mut q),
            STATUS_INVALID_CID,
            "exited"
        );
        assert_eq!(
            PsLookupProcessByProcessId(0x7777_0000, &mut q),
            STATUS_INVALID_CID
        );
        assert!(q.is_null());
        // A reference kept to the end fails the test.
        assert_eq!(
            PsLookupProcessByProcessId(SYSTEM_PID, &mut q),
            STATUS_SUCCESS
        );
    }
    let err = sim.finish().unwrap_err();
    assert!(
        err.contains("1 reference(s) to the EPROCESS of pid 4 (System)"),
        "{err}"
    );
}

#[test]
fn system_idle_and_current_threads() {
    let sim = Sim::new();
    assert_eq!(pids(), [IDLE_PID, SYSTEM_PID]);
    assert_eq!(process(SYSTEM_PID).unwrap().image_file_name, "System");
    assert_eq!(
        process(SYSTEM_PID).unwrap().user_sid,
        Some(SYSTEM_SID.to_vec())
    );
    let (pid, tid) = current_ids();
    assert_eq!(pid, SYSTEM_PID);
    assert!(tid.is_multiple_of(4) && tid >= FIRST_CID);
    assert_eq!(current_ids(), (pid, tid), "stable");
    assert_eq!(
        PsGetCurrentProcess() as usize,
        process(SYSTEM_PID).unwrap().eprocess
    );
    assert_eq!(IoGetCurrentProcess(), PsGetCurrentProcess());
    // SAFETY: a live ETHREAD.
    unsafe {
        assert_eq!(PsGetThreadId(PsGetCurrentThread()), tid);
        assert_eq!(PsGetThreadProcessId(PsGetCurrentThread()), SYSTEM_PID);
    }
    let other = std::thread::spawn(current_ids).join().unwrap();
    assert_eq!(other.0, SYSTEM_PID);
    assert_ne!(
        other.1, tid,
        "each host thread has its own simulated thread"
    );
    assert!(process(SYSTEM_PID).unwrap().threads.contains(&other.1));
    let p = create_process(&spec("a.exe")).pid;
    assert!(p.is_multiple_of(4) && p > other.1);
    assert!(exit_process(p, 0, None));
    assert!(!exit_process(SYSTEM_PID, 0, None), "System does not exit");
    drop(sim);
    // After a reset only System and Idle are left and the thread is new.
    let sim = Sim::new();
    assert_eq!(pids(), [IDLE_PID, SYSTEM_PID]);
    let (_, tid2) = current_ids();
    assert_eq!(process(SYSTEM_PID).unwrap().threads, [tid2]);
    sim.finish().unwrap();
}

static STUCK_ENTERED: AtomicBool = AtomicBool::new(false);

/// A thread notify routine that does not return for a minute (far beyond
/// the wait limit the test sets).
unsafe extern "win64" fn stuck_thread_routine(_: HANDLE, _: HANDLE, _: u8) {
    STUCK_ENTERED.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_removal_whose_routine_never_returns_fails_with_a_message() {
    const NAME: &str =
        "kernel::ps::tests::a_removal_whose_routine_never_returns_fails_with_a_message";
    if crate::child::is_child(NAME) {
        let _sim = Sim::new();
        crate::kernel::sync::set_wait_limit(Duration::from_millis(300));
        // SAFETY: a static routine of the right type.
        let status = unsafe { PsSetCreateThreadNotifyRoutine(Some(stuck_thread_routine)) };
        assert_eq!(status, STATUS_SUCCESS);
        let p = create_process(&spec("stuck.exe")).pid;
        std::thread::spawn(move || create_thread(p));
        wait_until("the routine to run", || {
            STUCK_ENTERED.load(Ordering::SeqCst)
        });
        // SAFETY: the routine registered above.
        unsafe { PsRemoveCreateThreadNotifyRoutine(Some(stuck_thread_routine)) };
        unreachable!("the removal returned while its routine still runs");
    }
    let out = crate::child::run_test_in_child(NAME);
    assert!(!out.status.success(), "the child must fail: {out:?}");
    assert!(
        out.stderr.contains("waited")
            && out
                .stderr
                .contains("PsRemoveCreateThreadNotifyRoutine to see the calls in flight")
            && out.stderr.contains("Windows would hang here"),
        "{}",
        out.stderr
    );
}
