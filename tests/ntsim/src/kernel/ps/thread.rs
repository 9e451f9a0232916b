//! Threads with a creator, a start address and an exit status, and the
//! routines a driver uses to read them: `PsLookupThreadByThreadId`,
//! `ObOpenObjectByPointer` (thread objects), `ZwQueryInformationThread`
//! (`ThreadQuerySetWin32StartAddress`, `ThreadBasicInformation`) and the
//! thread handles `ZwClose` closes.
//!
//! # Raising events
//! [`create_thread`] creates a thread in a live process on behalf of a
//! creating process (a "remote" thread when they differ) and calls the
//! thread notify routines as [`super::create_thread`] does: routines
//! registered with `PsSetCreateThreadNotifyRoutine` (or the Subsystems type)
//! run in the creating thread's context. [`exit_thread`] sets the exit status
//! before the exit notification, as Windows does.
//!
//! # Checks
//! - `PsLookupThreadByThreadId` (IRQL <= APC_LEVEL) returns a referenced
//!   ETHREAD the driver must dereference (reported by `outstanding`
//!   otherwise); an unknown id is STATUS_INVALID_CID. Fault injection:
//!   "PsLookupThreadByThreadId" (STATUS_INVALID_CID).
//! - `ObOpenObjectByPointer` (PASSIVE_LEVEL) accepts live ETHREADs only;
//!   ntsim exports no object type, so `ObjectType` must be NULL, which
//!   Windows allows only with `AccessMode` KernelMode (anything else is a
//!   violation); a handle without OBJ_KERNEL_HANDLE is a user handle (a
//!   violation); the handle holds a reference until `ZwClose`; handles left
//!   open are reported. Fault injection: "ObOpenObjectByPointer"
//!   (STATUS_INSUFFICIENT_RESOURCES).
//! - `ZwQueryInformationThread` (PASSIVE_LEVEL) needs an open thread handle
//!   (STATUS_INVALID_HANDLE and a violation otherwise), the exact length of
//!   the class's structure (STATUS_INFO_LENGTH_MISMATCH), and
//!   THREAD_QUERY_INFORMATION (start address) or
//!   THREAD_QUERY_LIMITED_INFORMATION (basic information) in the handle's
//!   granted access (STATUS_ACCESS_DENIED); other classes are
//!   STATUS_INVALID_INFO_CLASS. `ZwCurrentThread()` (the pseudo handle -2)
//!   names the calling thread with THREAD_ALL_ACCESS, as on Windows. Fault
//!   injection: "ZwQueryInformationThread" (STATUS_INSUFFICIENT_RESOURCES).

use super::STATUS_INVALID_INFO_CLASS;
use super::{current_ids, events, state, ObjData, ObjectKind, PETHREAD, STATUS_INVALID_CID};
use crate::kernel::export::{export, Export};
use crate::kernel::fault;
use crate::kernel::irql;
use crate::kernel::status::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use crate::kernel::types::{APC_LEVEL, HANDLE, PASSIVE_LEVEL};
use crate::kernel::violation;
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::sync::RwLock;

/// `STATUS_INFO_LENGTH_MISMATCH`.
pub const STATUS_INFO_LENGTH_MISMATCH: NTSTATUS = 0xC000_0004u32 as i32;
/// `THREADINFOCLASS::ThreadBasicInformation`.
pub const THREAD_BASIC_INFORMATION_CLASS: u32 = 0;
/// `THREADINFOCLASS::ThreadQuerySetWin32StartAddress`.
pub const THREAD_QUERY_SET_WIN32_START_ADDRESS: u32 = 9;
/// `THREAD_QUERY_INFORMATION`.
pub const THREAD_QUERY_INFORMATION: u32 = 0x0040;
/// `THREAD_QUERY_LIMITED_INFORMATION`.
pub const THREAD_QUERY_LIMITED_INFORMATION: u32 = 0x0800;
/// `THREAD_ALL_ACCESS` (Windows Vista and later).
pub const THREAD_ALL_ACCESS: u32 = 0x001F_FFFF;
/// `GENERIC_ALL`, mapped to THREAD_ALL_ACCESS.
pub const GENERIC_ALL: u32 = 0x1000_0000;
/// `OBJ_KERNEL_HANDLE`.
pub const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// `KPROCESSOR_MODE::KernelMode`.
pub const KERNEL_MODE: i8 = 0;

/// `ZwCurrentThread()` / `NtCurrentThread()`: `(HANDLE)(LONG_PTR)-2`.
pub const CURRENT_THREAD_HANDLE: HANDLE = -2isize as HANDLE;

/// `THREAD_BASIC_INFORMATION` (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct THREAD_BASIC_INFORMATION {
    pub ExitStatus: NTSTATUS,
    pub TebBaseAddress: usize,
    pub ClientId: super::CLIENT_ID,
    pub AffinityMask: usize,
    pub Priority: i32,
    pub BasePriority: i32,
}
const _: () = assert!(std::mem::size_of::<THREAD_BASIC_INFORMATION>() == 48);

/// `STATUS_PENDING`-like "still active" exit status of a running thread.
pub const STATUS_STILL_ACTIVE: NTSTATUS = 0x0000_0103;

#[derive(Clone, Copy, Debug)]
struct ThreadInfo {
    start_address: usize,
    exit_status: NTSTATUS,
}

struct OpenHandle {
    /// The ETHREAD the handle references.
    object: usize,
    tid: usize,
    access: u32,
}

#[derive(Default)]
struct Table {
    info: HashMap<usize, ThreadInfo, super::AddrHash>,
    handles: BTreeMap<HANDLE, OpenHandle>,
    next_handle: usize,
}

/// Read (shared) by the queries a driver makes on every thread event,
/// written when threads and handles come and go.
static TABLE: RwLock<Option<Table>> = RwLock::new(None);

fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut guard = TABLE.write().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Table::default))
}

/// Shared access (an empty table until the first write).
fn read<R>(f: impl FnOnce(&Table) -> R) -> R {
    let guard = TABLE.read().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(t) => f(t),
        None => f(&Table::default()),
    }
}

fn info_of(tid: usize) -> ThreadInfo {
    read(|t| t.info.get(&tid).copied()).unwrap_or(ThreadInfo {
        start_address: 0,
        exit_status: STATUS_STILL_ACTIVE,
    })
}

/// A thread to create with [`create_thread`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSpec {
    /// The live process that owns the new thread.
    pub process: usize,
    /// The process whose thread creates it (its most recent thread, or a new
    /// one without notification if it has none); None: the calling host
    /// thread's current thread.
    pub creator: Option<usize>,
    /// The creating thread, a live thread of `creator` (None: its most
    /// recent thread).
    pub creating_thread: Option<usize>,
    /// What `ThreadQuerySetWin32StartAddress` returns.
    pub start_address: usize,
}

/// Creates a thread as `spec` says and calls the thread notify routines
/// (Create TRUE) in the creating thread's context (routines registered with
/// PsCreateThreadNotifyNonSystem: on the new thread). Returns its id. Panics
/// if the process or the creator is not live.
pub fn create_thread(spec: &ThreadSpec) -> usize {
    create_thread_with_id(spec, None)
}

/// [`create_thread`] with an exact thread id (None: the next free id).
/// Panics as [`create_thread`] does, and if `tid` is not a non-zero
/// multiple of 4 or is in use.
pub fn create_thread_with_id(spec: &ThreadSpec, tid: Option<usize>) -> usize {
    let old = irql::current();
    if old != PASSIVE_LEVEL {
        violation::record(
            "irql",
            format!("thread creation raised at IRQL {old}: Windows raises it at PASSIVE_LEVEL"),
        );
    }
    let creator = match spec.creator {
        None => current_ids(),
        Some(pid) => {
            let mut s = state();
            assert!(
                s.process_by_pid(pid).is_some(),
                "create_thread: creator process {pid} is not live"
            );
            let tid = match spec.creating_thread {
                Some(tid) => {
                    drop(s);
                    assert_eq!(
                        super::thread_process(tid),
                        Some(pid),
                        "create_thread: creating thread {tid} is not a live thread of {pid}"
                    );
                    tid
                }
                None => s.some_thread_of(pid),
            };
            (pid, tid)
        }
    };
    let tid = {
        let mut s = state();
        assert!(
            s.process_by_pid(spec.process).is_some(),
            "create_thread: process {} is not live",
            spec.process
        );
        let tid = match tid {
            None => s.alloc_cid(),
            Some(tid) => {
                assert!(
                    tid != 0 && tid.is_multiple_of(4),
                    "thread ids are non-zero multiples of 4, not {tid}"
                );
                assert!(!s.id_in_use(tid), "id {tid} is in use");
                s.next_cid = s.next_cid.max(tid + 4);
                tid
            }
        };
        s.insert_thread(spec.process, tid);
        tid
    };
    with(|t| {
        t.info.insert(
            tid,
            ThreadInfo {
                start_address: spec.start_address,
                exit_status: STATUS_STILL_ACTIVE,
            },
        )
    });
    events::call_thread_routines(spec.process, tid, true, creator);
    irql::set(old);
    tid
}

/// Ends live thread `tid` with `exit_status`: the status is set first, then
/// the thread notify routines run (Create FALSE) in the exiting thread's
/// context. Returns false when `tid` is not a live thread.
pub fn exit_thread(tid: usize, exit_status: NTSTATUS) -> bool {
    if super::thread_process(tid).is_none() {
        return false;
    }
    with(|t| {
        t.info
            .entry(tid)
            .or_insert(ThreadInfo {
                start_address: 0,
                exit_status,
            })
            .exit_status = exit_status
    });
    events::exit_thread(tid)
}

/// Ends live process `pid` as Windows does when its threads end: each
/// thread but the last gets its exit notification (in its own context,
/// exit status `exit_status`) and is removed; the last thread's exit
/// notification comes next, then the process exit notification
/// ([`super::exit_process`]). Returns false (and does nothing) when `pid`
/// is not a live process (or is System or Idle).
pub fn exit_process(pid: usize, exit_status: NTSTATUS, exit_time: Option<i64>) -> bool {
    if pid == super::SYSTEM_PID || pid == super::IDLE_PID {
        return false;
    }
    let threads = {
        let s = state();
        let Some(addr) = s.process_by_pid(pid) else {
            return false;
        };
        s.proc_data(addr).threads.clone()
    };
    with(|t| {
        for tid in &threads {
            if let Some(info) = t.info.get_mut(tid) {
                info.exit_status = exit_status;
            }
        }
    });
    if let Some((last, others)) = threads.split_last() {
        for &tid in others {
            events::exit_thread(tid);
        }
        events::call_thread_routines(pid, *last, false, (pid, *last));
    }
    events::exit_process(pid, exit_status, exit_time)
}

/// The start address recorded for `tid` (0 when none was given).
pub fn start_address(tid: usize) -> usize {
    info_of(tid).start_address
}

/// The thread handles open, with the thread each names.
pub fn open_thread_handles() -> Vec<(HANDLE, usize)> {
    read(|t| t.handles.iter().map(|(h, e)| (*h, e.tid)).collect())
}

// ---------------------------------------------------------------------------
// Exports

/// `PsLookupThreadByThreadId`: a referenced ETHREAD, or STATUS_INVALID_CID.
///
/// # Safety
/// `thread` must be writable (NULL is a violation).
pub unsafe extern "win64" fn PsLookupThreadByThreadId(
    thread_id: HANDLE,
    thread: *mut PETHREAD,
) -> NTSTATUS {
    const API: &str = "PsLookupThreadByThreadId";
    irql::require_at_most(API, APC_LEVEL);
    if thread.is_null() {
        violation::record("ps", format!("{API}: NULL Thread"));
        return STATUS_INVALID_PARAMETER;
    }
    if fault::check(API) {
        return STATUS_INVALID_CID;
    }
    let s = super::state_read();
    let Some(&addr) = s.threads.get(&thread_id) else {
        return STATUS_INVALID_CID;
    };
    s.add_driver_ref(addr);
    // SAFETY: writable per the caller (checked non-null).
    unsafe { thread.write_unaligned(addr as PETHREAD) };
    STATUS_SUCCESS
}

/// `ObOpenObjectByPointer` for thread objects (see the module doc).
///
/// # Safety
/// `handle` must be writable; `object` is only dereferenced when it is a
/// live object.
pub unsafe extern "win64" fn ObOpenObjectByPointer(
    object: *mut c_void,
    handle_attributes: u32,
    passed_access_state: *mut c_void,
    desired_access: u32,
    object_type: *mut c_void,
    access_mode: i8,
    handle: *mut HANDLE,
) -> NTSTATUS {
    const API: &str = "ObOpenObjectByPointer";
    irql::require_at_most(API, PASSIVE_LEVEL);
    if handle.is_null() {
        violation::record("ps", format!("{API}: NULL Handle"));
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: writable per the caller (checked non-null).
    unsafe { handle.write_unaligned(0) };
    if !passed_access_state.is_null() {
        violation::record(
            "ps",
            format!("{API}: ntsim supports no PassedAccessState (pass NULL)"),
        );
        return STATUS_INVALID_PARAMETER;
    }
    if !object_type.is_null() || access_mode != KERNEL_MODE {
        violation::record(
            "ps",
            format!(
                "{API}: ObjectType may be NULL only with AccessMode KernelMode, and ntsim exports \
                 no object type (ObjectType {object_type:p}, AccessMode {access_mode})"
            ),
        );
        return STATUS_INVALID_PARAMETER;
    }
    if handle_attributes & OBJ_KERNEL_HANDLE == 0 {
        violation::record(
            "ps",
            format!(
                "{API} without OBJ_KERNEL_HANDLE: the handle is a user handle of the current \
                 process, usable (and closable) by user-mode code"
            ),
        );
    }
    let (addr, tid) = {
        let s = super::state_read();
        let Some(addr) = s.check_object(API, object, Some(ObjectKind::Thread)) else {
            return STATUS_INVALID_PARAMETER;
        };
        let tid = match s.objects[&addr].data {
            ObjData::Thread { tid, .. } => tid,
            _ => unreachable!("checked to be a thread"),
        };
        if fault::check(API) {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        s.add_driver_ref(addr);
        (addr, tid)
    };
    let access = if desired_access & GENERIC_ALL != 0 {
        THREAD_ALL_ACCESS
    } else {
        desired_access
    };
    let h = with(|t| {
        t.next_handle += 1;
        let h = 0xFFFF_FFFF_4000_0000usize | (t.next_handle * 4);
        t.handles.insert(
            h,
            OpenHandle {
                object: addr,
                tid,
                access,
            },
        );
        h
    });
    // SAFETY: as above.
    unsafe { handle.write_unaligned(h) };
    STATUS_SUCCESS
}

/// `ZwQueryInformationThread` for ThreadBasicInformation and
/// ThreadQuerySetWin32StartAddress (see the module doc).
///
/// # Safety
/// `information` must be writable for `length` bytes; `return_length` NULL
/// or writable.
pub unsafe extern "win64" fn ZwQueryInformationThread(
    thread_handle: HANDLE,
    class: u32,
    information: *mut c_void,
    length: u32,
    return_length: *mut u32,
) -> NTSTATUS {
    const API: &str = "ZwQueryInformationThread";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let handle = if thread_handle == CURRENT_THREAD_HANDLE {
        Some((current_ids().1, THREAD_ALL_ACCESS))
    } else {
        read(|t| t.handles.get(&thread_handle).map(|e| (e.tid, e.access)))
    };
    let Some((tid, access)) = handle else {
        violation::record(
            "ps",
            format!("{API} with a handle that is not an open thread handle: {thread_handle:#x}"),
        );
        return STATUS_INVALID_HANDLE;
    };
    let (size, needed) = match class {
        THREAD_QUERY_SET_WIN32_START_ADDRESS => (8usize, THREAD_QUERY_INFORMATION),
        THREAD_BASIC_INFORMATION_CLASS => (
            std::mem::size_of::<THREAD_BASIC_INFORMATION>(),
            THREAD_QUERY_LIMITED_INFORMATION,
        ),
        _ => return STATUS_INVALID_INFO_CLASS,
    };
    if length as usize != size {
        return STATUS_INFO_LENGTH_MISMATCH;
    }
    if information.is_null() {
        violation::record("ps", format!("{API}: NULL ThreadInformation"));
        return STATUS_INVALID_PARAMETER;
    }
    // THREAD_QUERY_INFORMATION implies the limited right.
    let granted = if access & THREAD_QUERY_INFORMATION != 0 {
        access | THREAD_QUERY_LIMITED_INFORMATION
    } else {
        access
    };
    if granted & needed == 0 {
        return STATUS_ACCESS_DENIED;
    }
    if fault::check(API) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let info = info_of(tid);
    if class == THREAD_QUERY_SET_WIN32_START_ADDRESS {
        // SAFETY: writable for 8 bytes per the caller.
        unsafe {
            information
                .cast::<usize>()
                .write_unaligned(info.start_address)
        };
    } else {
        let pid = super::thread_process(tid).unwrap_or(0);
        let basic = THREAD_BASIC_INFORMATION {
            ExitStatus: info.exit_status,
            ClientId: super::CLIENT_ID {
                UniqueProcess: pid,
                UniqueThread: tid,
            },
            AffinityMask: 1,
            Priority: 8,
            BasePriority: 8,
            ..Default::default()
        };
        // SAFETY: writable for 48 bytes per the caller.
        unsafe {
            information
                .cast::<THREAD_BASIC_INFORMATION>()
                .write_unaligned(basic)
        };
    }
    if !return_length.is_null() {
        // SAFETY: writable per the caller.
        unsafe { return_length.write_unaligned(size as u32) };
    }
    STATUS_SUCCESS
}

/// Closes a thread handle (what `ZwClose` calls for handles it does not
/// know); false when `h` is not an open thread handle.
pub(crate) fn close_handle(h: HANDLE) -> bool {
    let Some(entry) = with(|t| t.handles.remove(&h)) else {
        return false;
    };
    let s = super::state_read();
    if s.objects.contains_key(&entry.object) {
        let (_, last) = s.drop_driver_ref("ZwClose", entry.object);
        drop(s);
        if last {
            state().bury_if_unreferenced(entry.object);
        }
    }
    true
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", PsLookupThreadByThreadId),
        export!("ntoskrnl.exe", ObOpenObjectByPointer),
        export!("ntoskrnl.exe", ZwQueryInformationThread),
    ]
}

pub(crate) fn reset() {
    *TABLE.write().unwrap_or_else(|e| e.into_inner()) = None;
}

pub(crate) fn outstanding() -> Vec<String> {
    with(|t| {
        t.handles
            .iter()
            .map(|(h, e)| {
                format!(
                    "ps: thread handle {h:#x} (ObOpenObjectByPointer) to tid {} never closed \
                     (ZwClose)",
                    e.tid
                )
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ps::{create_process, ProcessSpec};

    fn process() -> usize {
        create_process(&ProcessSpec {
            image_file_name: "\\??\\C:\\t.exe".into(),
            ..Default::default()
        })
        .pid
    }

    fn open(thread: PETHREAD, attributes: u32, access: u32) -> (NTSTATUS, HANDLE) {
        let mut h: HANDLE = 0;
        // SAFETY: a writable handle; the object pointer is checked.
        let st = unsafe {
            ObOpenObjectByPointer(
                thread,
                attributes,
                std::ptr::null_mut(),
                access,
                std::ptr::null_mut(),
                KERNEL_MODE,
                &mut h,
            )
        };
        (st, h)
    }

    fn lookup(tid: usize) -> (NTSTATUS, PETHREAD) {
        let mut t: PETHREAD = std::ptr::null_mut();
        // SAFETY: a writable out pointer.
        let st = unsafe { PsLookupThreadByThreadId(tid, &mut t) };
        (st, t)
    }

    #[test]
    fn start_address_and_exit_status_are_read_through_a_kernel_handle() {
        let sim = crate::Sim::new();
        let pid = process();
        let tid = create_thread(&ThreadSpec {
            process: pid,
            start_address: 0x7ff6_0000_1234,
            ..Default::default()
        });
        assert_eq!(lookup(0x7777_0000).0, STATUS_INVALID_CID);
        let (st, thread) = lookup(tid);
        assert_eq!(st, STATUS_SUCCESS);
        let (st, h) = open(thread, OBJ_KERNEL_HANDLE, THREAD_QUERY_INFORMATION);
        assert_eq!(st, STATUS_SUCCESS);
        // SAFETY: the reference the lookup took.
        unsafe { crate::kernel::ps::ObfDereferenceObject(thread) };
        let mut start = 0usize;
        let mut len = 0u32;
        // SAFETY: an 8-byte buffer.
        let st = unsafe {
            ZwQueryInformationThread(
                h,
                THREAD_QUERY_SET_WIN32_START_ADDRESS,
                (&mut start as *mut usize).cast(),
                8,
                &mut len,
            )
        };
        assert_eq!((st, start, len), (STATUS_SUCCESS, 0x7ff6_0000_1234, 8));
        // SAFETY: a 4-byte buffer of the wrong length.
        let st = unsafe {
            ZwQueryInformationThread(
                h,
                THREAD_QUERY_SET_WIN32_START_ADDRESS,
                (&mut len as *mut u32).cast(),
                4,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, STATUS_INFO_LENGTH_MISMATCH);
        // SAFETY: as above; an unknown class.
        let st = unsafe {
            ZwQueryInformationThread(
                h,
                77,
                (&mut start as *mut usize).cast(),
                8,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, STATUS_INVALID_INFO_CLASS);
        assert!(exit_thread(tid, 0x1234));
        let mut basic = THREAD_BASIC_INFORMATION::default();
        // SAFETY: a whole THREAD_BASIC_INFORMATION; the handle outlives the
        // thread, as on Windows.
        let st = unsafe {
            ZwQueryInformationThread(
                h,
                THREAD_BASIC_INFORMATION_CLASS,
                (&mut basic as *mut THREAD_BASIC_INFORMATION).cast(),
                48,
                std::ptr::null_mut(),
            )
        };
        assert_eq!((st, basic.ExitStatus), (STATUS_SUCCESS, 0x1234));
        assert_eq!(open_thread_handles().len(), 1);
        assert_eq!(crate::kernel::registry::ZwClose(h), STATUS_SUCCESS);
        assert!(open_thread_handles().is_empty());
        sim.finish().unwrap();
    }

    #[test]
    fn misuse_is_refused_and_recorded() {
        let sim = crate::Sim::new();
        let pid = process();
        let tid = create_thread(&ThreadSpec {
            process: pid,
            ..Default::default()
        });
        let (_, thread) = lookup(tid);
        // A handle without the query right cannot query the start address.
        let (st, h) = open(thread, OBJ_KERNEL_HANDLE, THREAD_QUERY_LIMITED_INFORMATION);
        assert_eq!(st, STATUS_SUCCESS);
        let mut start = 0usize;
        // SAFETY: an 8-byte buffer.
        let st = unsafe {
            ZwQueryInformationThread(
                h,
                THREAD_QUERY_SET_WIN32_START_ADDRESS,
                (&mut start as *mut usize).cast(),
                8,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, STATUS_ACCESS_DENIED);
        assert_eq!(crate::kernel::registry::ZwClose(h), STATUS_SUCCESS);
        assert!(crate::kernel::violation::take().is_empty());
        // A user handle works but is a violation.
        let (st, h) = open(thread, 0, THREAD_QUERY_INFORMATION);
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(crate::kernel::registry::ZwClose(h), STATUS_SUCCESS);
        let v = crate::kernel::violation::take();
        assert!(
            v.iter().any(|v| v.message.contains("OBJ_KERNEL_HANDLE")),
            "{v:?}"
        );
        // A non-thread object, a stale handle.
        let (st, _) = open(
            0x1000 as PETHREAD,
            OBJ_KERNEL_HANDLE,
            THREAD_QUERY_INFORMATION,
        );
        assert_eq!(st, STATUS_INVALID_PARAMETER);
        // SAFETY: an 8-byte buffer; the handle is closed.
        let st = unsafe {
            ZwQueryInformationThread(
                h,
                THREAD_QUERY_SET_WIN32_START_ADDRESS,
                (&mut start as *mut usize).cast(),
                8,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, STATUS_INVALID_HANDLE);
        assert_eq!(crate::kernel::violation::take().len(), 2);
        // A handle left open and the lookup's reference are reported.
        let (_, leaked) = open(thread, OBJ_KERNEL_HANDLE, THREAD_QUERY_INFORMATION);
        assert_ne!(leaked, 0);
        let findings = sim.finish().expect_err("a leaked handle is a finding");
        assert!(findings.contains("never closed (ZwClose)"), "{findings}");
    }
}
