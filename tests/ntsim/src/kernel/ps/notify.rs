//! Process, thread and image-load notify routine registration, and calling
//! the registered routines.
//!
//! Like Windows, each kind has a table of 64 slots; a new registration
//! takes the first free slot and events call the routines in slot order
//! (registration order as long as nothing was removed in between).
//!
//! Registration and removal may race with events on other threads. Each
//! registration carries its own gate (a small rundown): an event takes a
//! snapshot of the table, enters each routine's gate (skipping routines
//! whose removal has begun), calls the routine with no lock held, and
//! leaves the gate. Removal takes the routine out of the table, closes its
//! gate and waits until no call is in flight, so once a removal API returns
//! the routine is never called again and no call of it is running (as
//! Windows documents for PsSetCreateProcessNotifyRoutineEx(Remove=TRUE),
//! PsRemoveCreateThreadNotifyRoutine and PsRemoveLoadImageNotifyRoutine).

use super::{PEPROCESS, STATUS_PROCEDURE_NOT_FOUND};
use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::fault;
use crate::kernel::images::{self, ImageFlags};
use crate::kernel::irql;
use crate::kernel::status::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
    STATUS_INVALID_PARAMETER_2, STATUS_SUCCESS,
};
use crate::kernel::sync;
use crate::kernel::types::{APC_LEVEL, HANDLE, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockWriteGuard};

use super::events::{IMAGE_INFO, PS_CREATE_NOTIFY_INFO};

/// `PCREATE_PROCESS_NOTIFY_ROUTINE_EX`.
pub type CreateProcessNotifyRoutineEx = unsafe extern "win64" fn(
    process: PEPROCESS,
    process_id: HANDLE,
    create_info: *mut PS_CREATE_NOTIFY_INFO,
);
/// `PCREATE_THREAD_NOTIFY_ROUTINE`.
pub type CreateThreadNotifyRoutine =
    unsafe extern "win64" fn(process_id: HANDLE, thread_id: HANDLE, create: u8);
/// `PLOAD_IMAGE_NOTIFY_ROUTINE`.
pub type LoadImageNotifyRoutine = unsafe extern "win64" fn(
    full_image_name: *mut UNICODE_STRING,
    process_id: HANDLE,
    image_info: *mut IMAGE_INFO,
);

/// `PSCREATETHREADNOTIFYTYPE` values.
pub const PS_CREATE_THREAD_NOTIFY_NON_SYSTEM: u32 = 0;
pub const PS_CREATE_THREAD_NOTIFY_SUBSYSTEMS: u32 = 1;
/// `PsSetLoadImageNotifyRoutineEx` flag.
pub const PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE: usize = 1;

/// Routines of each kind Windows accepts at once.
pub const MAX_ROUTINES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Process,
    Thread,
    Image,
}

/// How a thread routine was registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadVariant {
    /// PsSetCreateThreadNotifyRoutine: runs in the creating thread.
    Classic,
    /// Ex with PsCreateThreadNotifyNonSystem: runs on the new thread, not
    /// called for threads of the System process.
    NonSystem,
    /// Ex with PsCreateThreadNotifySubsystems: runs in the creating thread.
    Subsystems,
}

/// One registration.
pub(crate) struct Callout {
    pub(crate) routine: usize,
    pub(crate) thread_variant: ThreadVariant,
    pub(crate) image_flags: usize,
    /// `2 * calls in flight | CLOSED`: entering and leaving are one atomic
    /// operation each (two threads raising events do not serialise on a
    /// lock); only removal, and the last call leaving after it, take
    /// `idle_lock`.
    gate: AtomicU32,
    idle_lock: Mutex<()>,
    idle: Condvar,
}

/// Removal has begun: no call may enter.
const CLOSED: u32 = 1;
/// One call in flight.
const CALL: u32 = 2;

impl Callout {
    fn new(routine: usize, thread_variant: ThreadVariant, image_flags: usize) -> Arc<Callout> {
        Arc::new(Callout {
            routine,
            thread_variant,
            image_flags,
            gate: AtomicU32::new(0),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
        })
    }

    fn idle_lock(&self) -> MutexGuard<'_, ()> {
        self.idle_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enters the gate unless removal has begun.
    fn enter(&self) -> bool {
        let mut cur = self.gate.load(Ordering::Relaxed);
        loop {
            if cur & CLOSED != 0 {
                return false;
            }
            match self.gate.compare_exchange_weak(
                cur,
                cur + CALL,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn leave(&self) {
        let before = self.gate.fetch_sub(CALL, Ordering::AcqRel);
        if before == CALL | CLOSED {
            // The last call out after removal began: wake the remover,
            // under its lock (it checks the count under the same lock
            // before waiting, so the wake-up is not lost).
            let _g = self.idle_lock();
            self.idle.notify_all();
        }
    }

    /// Closes the gate and waits for the calls in flight to return (at most
    /// `sync::wait_limit()`: a call that never returns is a hang, reported
    /// with the API and the routine).
    fn close_and_wait(self: &Arc<Callout>, api: &str) {
        let g = self.idle_lock();
        self.gate.fetch_or(CLOSED, Ordering::AcqRel);
        let me = Arc::as_ptr(self) as usize;
        if IN_CALLOUT.with(|c| c.borrow().contains(&me)) {
            violation::record(
                "ps",
                format!(
                    "{api} called from inside the routine it removes ({}): it waits for that \
                     very call to return, which deadlocks on Windows",
                    describe(self.routine)
                ),
            );
            return;
        }
        let what = format!(
            "{api} to see the calls in flight of {} return",
            describe(self.routine)
        );
        drop(sync::wait_while(&what, &self.idle, g, |_| {
            self.gate.load(Ordering::Acquire) >= CALL
        }));
    }
}

struct Tables {
    process: [Option<Arc<Callout>>; MAX_ROUTINES],
    thread: [Option<Arc<Callout>>; MAX_ROUTINES],
    image: [Option<Arc<Callout>>; MAX_ROUTINES],
}

impl Tables {
    fn of(&mut self, kind: Kind) -> &mut [Option<Arc<Callout>>; MAX_ROUTINES] {
        match kind {
            Kind::Process => &mut self.process,
            Kind::Thread => &mut self.thread,
            Kind::Image => &mut self.image,
        }
    }
}

/// Read (shared) by every event, written by registration and removal.
static TABLES: RwLock<Tables> = RwLock::new(Tables {
    process: [const { None }; MAX_ROUTINES],
    thread: [const { None }; MAX_ROUTINES],
    image: [const { None }; MAX_ROUTINES],
});

fn tables() -> RwLockWriteGuard<'static, Tables> {
    TABLES.write().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Registrations whose routine the calling host thread is running.
    static IN_CALLOUT: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

fn describe(addr: usize) -> String {
    images::describe_address(addr).unwrap_or_else(|| format!("{addr:#x}"))
}

#[cfg(test)]
pub(crate) static TEST_IMAGE_FLAGS: Mutex<Vec<(usize, ImageFlags)>> = Mutex::new(Vec::new());

/// The image flags of the image containing `addr` (the loader's answer;
/// unit tests can stand in for loaded images).
fn image_flags(addr: usize) -> Option<ImageFlags> {
    #[cfg(test)]
    {
        let fake = TEST_IMAGE_FLAGS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = fake.iter().find(|(a, _)| *a == addr) {
            return Some(*f);
        }
    }
    images::image_flags_for_address(addr)
}

enum InsertError {
    Duplicate,
    Full,
}

/// Takes the first free slot; with `unique`, refuses a routine already
/// registered (checked under the same lock).
fn insert(kind: Kind, callout: Arc<Callout>, unique: bool) -> Result<(), InsertError> {
    let mut t = tables();
    let table = t.of(kind);
    if unique && table.iter().flatten().any(|c| c.routine == callout.routine) {
        return Err(InsertError::Duplicate);
    }
    let slot = table
        .iter_mut()
        .find(|s| s.is_none())
        .ok_or(InsertError::Full)?;
    *slot = Some(callout);
    Ok(())
}

/// Removes a registration of `routine` (the first in slot order) and waits
/// for its calls in flight.
fn remove(api: &str, kind: Kind, routine: usize) -> NTSTATUS {
    let callout = {
        let mut t = tables();
        let slot = t
            .of(kind)
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|c| c.routine == routine));
        match slot {
            Some(s) => s.take().expect("slot is occupied"),
            None => return STATUS_PROCEDURE_NOT_FOUND,
        }
    };
    callout.close_and_wait(api);
    STATUS_SUCCESS
}

fn snapshot(kind: Kind) -> Vec<Arc<Callout>> {
    let t = TABLES.read().unwrap_or_else(|e| e.into_inner());
    let table = match kind {
        Kind::Process => &t.process,
        Kind::Thread => &t.thread,
        Kind::Image => &t.image,
    };
    table.iter().flatten().cloned().collect()
}

/// Leaves the gate and the in-callout record even if the routine panics
/// (a host Rust routine in a test).
struct InFlight<'a>(&'a Arc<Callout>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        IN_CALLOUT.with(|c| {
            c.borrow_mut().pop();
        });
        self.0.leave();
    }
}

/// Calls `call` for each registered routine of `kind` that `filter`
/// accepts, in slot order, at PASSIVE_LEVEL; a routine that returns at
/// another IRQL is a violation. Process notify routines run inside a
/// critical region (normal kernel APCs disabled), as Windows documents for
/// them; one that returns with the region depth changed (a
/// KeLeaveCriticalRegion without its KeEnterCriticalRegion, or the other
/// way round) is a violation.
pub(crate) fn call_each(
    kind: Kind,
    event: &str,
    filter: impl Fn(&Callout) -> bool,
    mut call: impl FnMut(&Callout),
) {
    for callout in snapshot(kind) {
        if !filter(&callout) || !callout.enter() {
            continue;
        }
        IN_CALLOUT.with(|c| c.borrow_mut().push(Arc::as_ptr(&callout) as usize));
        let _in_flight = InFlight(&callout);
        irql::set(PASSIVE_LEVEL);
        let depth = sync::critical_region_depth();
        let inside = depth + u32::from(kind == Kind::Process);
        sync::set_critical_region_depth(inside);
        call(&callout);
        let depth_after = sync::critical_region_depth();
        if depth_after != inside {
            violation::record(
                "sync",
                format!(
                    "{event} notify routine {} returned at critical-region depth {depth_after}; \
                     it was called at depth {inside} and must leave every region it enters and \
                     no other",
                    describe(callout.routine)
                ),
            );
        }
        sync::set_critical_region_depth(depth);
        let after = irql::current();
        if after != PASSIVE_LEVEL {
            violation::record(
                "irql",
                format!(
                    "{event} notify routine {} returned at IRQL {after}; it was called at \
                     PASSIVE_LEVEL and must return at the IRQL it was called at",
                    describe(callout.routine)
                ),
            );
            irql::set(PASSIVE_LEVEL);
        }
    }
}

// ---------------------------------------------------------------------------
// Exports

/// `PsSetCreateProcessNotifyRoutineEx`.
///
/// Add: STATUS_ACCESS_DENIED when the image containing the routine was not
/// linked with /INTEGRITYCHECK (routines outside any image, host Rust code,
/// are accepted); STATUS_INSUFFICIENT_RESOURCES when the callback block
/// cannot be allocated (fault injection: "PsSetCreateProcessNotifyRoutineEx");
/// STATUS_INVALID_PARAMETER when the routine is already registered or 64
/// routines are. Remove: STATUS_PROCEDURE_NOT_FOUND for a routine not
/// registered; otherwise waits for the calls in flight.
///
/// # Safety
/// `routine` must be callable as a `PCREATE_PROCESS_NOTIFY_ROUTINE_EX` for as
/// long as it stays registered.
pub unsafe extern "win64" fn PsSetCreateProcessNotifyRoutineEx(
    routine: Option<CreateProcessNotifyRoutineEx>,
    remove_it: u8,
) -> NTSTATUS {
    const API: &str = "PsSetCreateProcessNotifyRoutineEx";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let Some(routine) = routine else {
        violation::record("ps", format!("{API}: NULL NotifyRoutine"));
        return STATUS_INVALID_PARAMETER;
    };
    let addr = routine as usize;
    if remove_it != 0 {
        return remove(API, Kind::Process, addr);
    }
    if image_flags(addr).is_some_and(|f| !f.force_integrity) {
        return STATUS_ACCESS_DENIED;
    }
    if fault::check(API) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let callout = Callout::new(addr, ThreadVariant::Classic, 0);
    match insert(Kind::Process, callout, true) {
        Ok(()) => STATUS_SUCCESS,
        Err(InsertError::Duplicate | InsertError::Full) => STATUS_INVALID_PARAMETER,
    }
}

fn add_thread_routine(api: &str, routine: usize, variant: ThreadVariant) -> NTSTATUS {
    if fault::check(api) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    match insert(Kind::Thread, Callout::new(routine, variant, 0), false) {
        Ok(()) => STATUS_SUCCESS,
        Err(_) => STATUS_INSUFFICIENT_RESOURCES,
    }
}

/// `PsSetCreateThreadNotifyRoutine`: STATUS_INSUFFICIENT_RESOURCES when 64
/// thread routines are registered or the block cannot be allocated (fault
/// injection: "PsSetCreateThreadNotifyRoutine"). Registering a routine twice
/// makes two registrations.
///
/// # Safety
/// `routine` must be callable as a `PCREATE_THREAD_NOTIFY_ROUTINE` for as
/// long as it stays registered.
pub unsafe extern "win64" fn PsSetCreateThreadNotifyRoutine(
    routine: Option<CreateThreadNotifyRoutine>,
) -> NTSTATUS {
    const API: &str = "PsSetCreateThreadNotifyRoutine";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let Some(routine) = routine else {
        violation::record("ps", format!("{API}: NULL NotifyRoutine"));
        return STATUS_INVALID_PARAMETER;
    };
    add_thread_routine(API, routine as usize, ThreadVariant::Classic)
}

/// `PsSetCreateThreadNotifyRoutineEx(NotifyType, NotifyInformation)`:
/// NotifyInformation is the `PCREATE_THREAD_NOTIFY_ROUTINE`. An unknown
/// NotifyType is refused with STATUS_INVALID_PARAMETER (and recorded).
///
/// # Safety
/// As [`PsSetCreateThreadNotifyRoutine`].
pub unsafe extern "win64" fn PsSetCreateThreadNotifyRoutineEx(
    notify_type: u32,
    notify_information: *const std::ffi::c_void,
) -> NTSTATUS {
    const API: &str = "PsSetCreateThreadNotifyRoutineEx";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let variant = match notify_type {
        PS_CREATE_THREAD_NOTIFY_NON_SYSTEM => ThreadVariant::NonSystem,
        PS_CREATE_THREAD_NOTIFY_SUBSYSTEMS => ThreadVariant::Subsystems,
        other => {
            violation::record("ps", format!("{API}: unknown NotifyType {other}"));
            return STATUS_INVALID_PARAMETER;
        }
    };
    if notify_information.is_null() {
        violation::record("ps", format!("{API}: NULL NotifyInformation"));
        return STATUS_INVALID_PARAMETER;
    }
    add_thread_routine(API, notify_information as usize, variant)
}

/// `PsRemoveCreateThreadNotifyRoutine`: STATUS_PROCEDURE_NOT_FOUND for a
/// routine not registered; otherwise waits for the calls in flight.
///
/// # Safety
/// `routine` is only compared with the registered routines.
pub unsafe extern "win64" fn PsRemoveCreateThreadNotifyRoutine(
    routine: Option<CreateThreadNotifyRoutine>,
) -> NTSTATUS {
    const API: &str = "PsRemoveCreateThreadNotifyRoutine";
    irql::require_at_most(API, APC_LEVEL);
    let addr = routine.map_or(0, |r| r as usize);
    remove(API, Kind::Thread, addr)
}

fn add_image_routine(api: &str, routine: usize, flags: usize) -> NTSTATUS {
    if flags & !PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE != 0 {
        return STATUS_INVALID_PARAMETER_2;
    }
    if fault::check(api) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let callout = Callout::new(routine, ThreadVariant::Classic, flags);
    match insert(Kind::Image, callout, false) {
        Ok(()) => STATUS_SUCCESS,
        Err(_) => STATUS_INSUFFICIENT_RESOURCES,
    }
}

/// `PsSetLoadImageNotifyRoutine` (same as the Ex form with Flags 0).
///
/// # Safety
/// `routine` must be callable as a `PLOAD_IMAGE_NOTIFY_ROUTINE` for as long
/// as it stays registered.
pub unsafe extern "win64" fn PsSetLoadImageNotifyRoutine(
    routine: Option<LoadImageNotifyRoutine>,
) -> NTSTATUS {
    const API: &str = "PsSetLoadImageNotifyRoutine";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let Some(routine) = routine else {
        violation::record("ps", format!("{API}: NULL NotifyRoutine"));
        return STATUS_INVALID_PARAMETER;
    };
    add_image_routine(API, routine as usize, 0)
}

/// `PsSetLoadImageNotifyRoutineEx`: STATUS_INVALID_PARAMETER_2 for unknown
/// flags; STATUS_INSUFFICIENT_RESOURCES when 64 image routines are
/// registered or the block cannot be allocated (fault injection:
/// "PsSetLoadImageNotifyRoutineEx").
///
/// # Safety
/// As [`PsSetLoadImageNotifyRoutine`].
pub unsafe extern "win64" fn PsSetLoadImageNotifyRoutineEx(
    routine: Option<LoadImageNotifyRoutine>,
    flags: usize,
) -> NTSTATUS {
    const API: &str = "PsSetLoadImageNotifyRoutineEx";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let Some(routine) = routine else {
        violation::record("ps", format!("{API}: NULL NotifyRoutine"));
        return STATUS_INVALID_PARAMETER;
    };
    add_image_routine(API, routine as usize, flags)
}

/// `PsRemoveLoadImageNotifyRoutine`: STATUS_PROCEDURE_NOT_FOUND for a
/// routine not registered; otherwise waits for the calls in flight.
///
/// # Safety
/// `routine` is only compared with the registered routines.
pub unsafe extern "win64" fn PsRemoveLoadImageNotifyRoutine(
    routine: Option<LoadImageNotifyRoutine>,
) -> NTSTATUS {
    const API: &str = "PsRemoveLoadImageNotifyRoutine";
    irql::require_at_most(API, APC_LEVEL);
    let addr = routine.map_or(0, |r| r as usize);
    remove(API, Kind::Image, addr)
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", PsSetCreateProcessNotifyRoutineEx),
        export!("ntoskrnl.exe", PsSetCreateThreadNotifyRoutine),
        export!("ntoskrnl.exe", PsSetCreateThreadNotifyRoutineEx),
        export!("ntoskrnl.exe", PsRemoveCreateThreadNotifyRoutine),
        export!("ntoskrnl.exe", PsSetLoadImageNotifyRoutine),
        export!("ntoskrnl.exe", PsSetLoadImageNotifyRoutineEx),
        export!("ntoskrnl.exe", PsRemoveLoadImageNotifyRoutine),
    ]
}

/// How many routines of each kind are registered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyCounts {
    pub process: usize,
    pub thread: usize,
    pub image: usize,
}

/// How many process, thread and image notify routines are registered.
pub fn notify_routine_counts() -> NotifyCounts {
    let mut t = tables();
    let mut count = |k| t.of(k).iter().flatten().count();
    NotifyCounts {
        process: count(Kind::Process),
        thread: count(Kind::Thread),
        image: count(Kind::Image),
    }
}

pub(crate) fn reset() {
    let mut t = tables();
    for kind in [Kind::Process, Kind::Thread, Kind::Image] {
        for slot in t.of(kind).iter_mut() {
            *slot = None;
        }
    }
    #[cfg(test)]
    TEST_IMAGE_FLAGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

pub(crate) fn outstanding() -> Vec<String> {
    let mut t = tables();
    let mut out = Vec::new();
    for (kind, what) in [
        (
            Kind::Process,
            "process notify routine (PsSetCreateProcessNotifyRoutineEx)",
        ),
        (
            Kind::Thread,
            "thread notify routine (PsSetCreateThreadNotifyRoutine[Ex])",
        ),
        (
            Kind::Image,
            "image-load notify routine (PsSetLoadImageNotifyRoutine[Ex])",
        ),
    ] {
        for c in t.of(kind).iter().flatten() {
            out.push(format!(
                "ps: {what} {} still registered",
                describe(c.routine)
            ));
        }
    }
    out
}
