//! Raising process, thread and image-load events (the Rust API tests and
//! the ntsim tool use), with the structures Windows hands to the notify
//! routines.

use super::notify::{self, CreateProcessNotifyRoutineEx, CreateThreadNotifyRoutine, Kind};
use super::notify::{
    LoadImageNotifyRoutine, ThreadVariant, PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE,
};
use super::{current_ids, enter_context, filetime_now, sid, state, IDLE_PID, SYSTEM_PID};
use crate::kernel::status::{nt_success, NTSTATUS, STATUS_SUCCESS};
use crate::kernel::types::{HANDLE, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use crate::kernel::{irql, pool};
use std::ffi::c_void;

/// `CLIENT_ID` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CLIENT_ID {
    pub UniqueProcess: HANDLE,
    pub UniqueThread: HANDLE,
}

/// `PS_CREATE_NOTIFY_INFO` (72 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct PS_CREATE_NOTIFY_INFO {
    pub Size: usize,
    /// bit 0 FileOpenNameAvailable, bit 1 IsSubsystemProcess.
    pub Flags: u32,
    pub ParentProcessId: HANDLE,
    pub CreatingThreadId: CLIENT_ID,
    pub FileObject: *mut c_void,
    pub ImageFileName: *const UNICODE_STRING,
    pub CommandLine: *const UNICODE_STRING,
    pub CreationStatus: NTSTATUS,
}

/// `IMAGE_INFO` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IMAGE_INFO {
    /// bits 0-7 ImageAddressingMode, 8 SystemModeImage, 9
    /// ImageMappedToAllPids, 10 ExtendedInfoPresent, 11 MachineTypeMismatch,
    /// 12-15 ImageSignatureLevel, 16-18 ImageSignatureType, 19
    /// ImagePartialMap.
    pub Properties: u32,
    pub ImageBase: *mut c_void,
    pub ImageSelector: u32,
    pub ImageSize: usize,
    pub ImageSectionNumber: u32,
}

/// `IMAGE_INFO_EX` (56 bytes): what an IMAGE_INFO with ExtendedInfoPresent
/// is the `ImageInfo` member of.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IMAGE_INFO_EX {
    pub Size: usize,
    pub ImageInfo: IMAGE_INFO,
    pub FileObject: *mut c_void,
}

const _: () = {
    assert!(std::mem::size_of::<CLIENT_ID>() == 16);
    assert!(std::mem::size_of::<PS_CREATE_NOTIFY_INFO>() == 72);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, Flags) == 8);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, ParentProcessId) == 16);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CreatingThreadId) == 24);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, FileObject) == 40);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, ImageFileName) == 48);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CommandLine) == 56);
    assert!(std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CreationStatus) == 64);
    assert!(std::mem::size_of::<IMAGE_INFO>() == 40);
    assert!(std::mem::offset_of!(IMAGE_INFO, ImageBase) == 8);
    assert!(std::mem::offset_of!(IMAGE_INFO, ImageSelector) == 16);
    assert!(std::mem::offset_of!(IMAGE_INFO, ImageSize) == 24);
    assert!(std::mem::offset_of!(IMAGE_INFO, ImageSectionNumber) == 32);
    assert!(std::mem::size_of::<IMAGE_INFO_EX>() == 56);
    assert!(std::mem::offset_of!(IMAGE_INFO_EX, ImageInfo) == 8);
    assert!(std::mem::offset_of!(IMAGE_INFO_EX, FileObject) == 48);
};

/// Longest string a `UNICODE_STRING` holds, in UTF-16 units: `Length` is a
/// byte count in a `u16` and always even, so at most 65534 bytes. Windows
/// limits a command line to 32767 characters for the same reason.
pub const MAX_UNICODE_STRING_UNITS: usize = 32767;

/// Pool tag of the structures the kernel hands to notify routines ('PsNt').
const NOTIFY_TAG: u32 = u32::from_le_bytes(*b"PsNt");

/// A `UNICODE_STRING` the kernel hands to a notify routine, as exact as the
/// contract allows: `MaximumLength == Length` (even), no terminator, and
/// the header and the characters each in an exact-size kernel pool block,
/// so in special pool a read one byte past either faults at once. The
/// routine gets a `PCUNICODE_STRING`: a change to either block is recorded
/// as a violation when the string is freed after the routines returned.
struct NotifyString {
    header: *mut UNICODE_STRING,
    /// The characters' block (null for an empty string).
    buffer: *mut u16,
    /// What the routines must still see when they return.
    units: Vec<u16>,
    what: &'static str,
}

impl NotifyString {
    /// Panics if `text` is longer than [`MAX_UNICODE_STRING_UNITS`].
    fn new(text: &str, what: &'static str) -> NotifyString {
        // One allocation: a UTF-8 string has at least as many bytes as
        // UTF-16 units (collecting the iterator grew the vector step by step).
        let mut units: Vec<u16> = Vec::with_capacity(text.len());
        units.extend(text.encode_utf16());
        assert!(
            units.len() <= MAX_UNICODE_STRING_UNITS,
            "the {what} is {} UTF-16 units long; a UNICODE_STRING holds at most \
             {MAX_UNICODE_STRING_UNITS}",
            units.len()
        );
        let bytes = units.len() * 2;
        let buffer = if bytes == 0 {
            std::ptr::null_mut()
        } else {
            let b = pool::kernel_alloc_exact(bytes, 2, NOTIFY_TAG).cast::<u16>();
            assert!(!b.is_null(), "out of host memory for the {what}");
            // SAFETY: `b` is a fresh pool block of `bytes` bytes, 2-aligned.
            unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), b, units.len()) };
            b
        };
        let header = pool::kernel_alloc_exact(size_of::<UNICODE_STRING>(), 8, NOTIFY_TAG)
            .cast::<UNICODE_STRING>();
        assert!(!header.is_null(), "out of host memory for the {what}");
        // SAFETY: a fresh pool block the size of a UNICODE_STRING, 8-aligned.
        unsafe {
            header.write(UNICODE_STRING {
                Length: bytes as u16,
                MaximumLength: bytes as u16,
                Buffer: buffer,
            })
        };
        NotifyString {
            header,
            buffer,
            units,
            what,
        }
    }

    fn as_ptr(&self) -> *mut UNICODE_STRING {
        self.header
    }
}

impl Drop for NotifyString {
    fn drop(&mut self) {
        // SAFETY: `header` is the live pool block written in `new`; the
        // routines have returned, nothing else uses it.
        let us = unsafe { self.header.read() };
        let bytes = self.units.len() * 2;
        let unchanged = us.Length as usize == bytes
            && us.MaximumLength as usize == bytes
            && us.Buffer == self.buffer
            && (self.buffer.is_null()
                // SAFETY: the live block of `units.len()` units from `new`.
                || unsafe { std::slice::from_raw_parts(self.buffer, self.units.len()) }
                    == self.units.as_slice());
        if !unchanged {
            violation::record(
                "ps",
                format!(
                    "a notify routine modified the {} it was handed (a PCUNICODE_STRING: read only)",
                    self.what
                ),
            );
        }
        // SAFETY: both blocks came from kernel_alloc_exact in `new` and are
        // freed once, here.
        unsafe {
            pool::kernel_free(self.header.cast());
            if !self.buffer.is_null() {
                pool::kernel_free(self.buffer.cast());
            }
        }
    }
}

/// A process to create with [`create_process`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    /// `ImageFileName` (for example `\??\C:\Windows\System32\notepad.exe`).
    pub image_file_name: String,
    /// `CommandLine`; None passes a NULL pointer.
    pub command_line: Option<String>,
    /// `ParentProcessId` (0 when None). Need not be a live process.
    pub parent: Option<usize>,
    /// `CreatingThreadId` (pid, tid); the routines run with it as the
    /// current process/thread. Its process must be live; a tid that process
    /// does not have yet is added to it (without a thread notification).
    /// None: the calling host thread's current thread.
    pub creating_thread: Option<(usize, usize)>,
    /// User SID (binary) of the new process's primary token. None: a token
    /// without a user, on which `SeQueryInformationToken(TokenUser)` fails
    /// with STATUS_NO_TOKEN (Windows tokens always have one; this lets tests
    /// take the "no SID" paths).
    pub user_sid: Option<Vec<u8>>,
    /// `AuthenticationId` (logon session LUID) of the new process's primary
    /// token, what `bpf_get_current_logon_id` returns for code running in
    /// it. None: [`super::SYSTEM_LUID`] (0x3e7).
    pub logon_id: Option<u64>,
    /// The process id: a non-zero multiple of 4 that no live process or
    /// thread has (see [`super::id_in_use`]). None: the next free id.
    pub pid: Option<usize>,
    /// FILETIME; None: now.
    pub creation_time: Option<i64>,
    /// `IsSubsystemProcess` flag.
    pub subsystem: bool,
    /// `FileOpenNameAvailable` flag.
    pub file_open_name_available: bool,
}

/// The outcome of [`create_process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatedProcess {
    /// The pid the process had (it is gone again when creation was denied).
    pub pid: usize,
    /// `CreationStatus` after every routine ran: a failure status means a
    /// routine denied the creation and the process does not exist.
    pub creation_status: NTSTATUS,
}

/// The `IMAGE_INFO` of an image load ([`load_image`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageInfoSpec {
    pub image_base: usize,
    pub image_size: usize,
    /// ImageAddressingMode (IMAGE_ADDRESSING_MODE_32BIT = 3).
    pub addressing_mode: u8,
    /// A kernel-mode image (driver).
    pub system_mode_image: bool,
    pub mapped_to_all_pids: bool,
    /// MachineTypeMismatch: routines registered without
    /// PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE are not called.
    pub machine_type_mismatch: bool,
    /// 4 bits.
    pub signature_level: u8,
    /// 3 bits.
    pub signature_type: u8,
    pub partial_map: bool,
    pub image_selector: u32,
    pub image_section_number: u32,
    /// Pass the IMAGE_INFO inside an IMAGE_INFO_EX (ExtendedInfoPresent;
    /// FileObject NULL).
    pub extended_info: bool,
}

impl ImageInfoSpec {
    /// The `Properties` bit field.
    pub fn properties(&self) -> u32 {
        self.addressing_mode as u32
            | (self.system_mode_image as u32) << 8
            | (self.mapped_to_all_pids as u32) << 9
            | (self.extended_info as u32) << 10
            | (self.machine_type_mismatch as u32) << 11
            | ((self.signature_level & 0xF) as u32) << 12
            | ((self.signature_type & 0x7) as u32) << 16
            | (self.partial_map as u32) << 19
    }
}

/// Events are raised by host code at PASSIVE_LEVEL; the routines run at
/// PASSIVE_LEVEL and the caller's IRQL is restored afterwards.
struct PassiveScope(u8);

impl PassiveScope {
    fn enter(what: &str) -> PassiveScope {
        let old = irql::current();
        if old != PASSIVE_LEVEL {
            violation::record(
                "irql",
                format!("{what} raised at IRQL {old}: Windows raises it at PASSIVE_LEVEL"),
            );
        }
        PassiveScope(old)
    }
}

impl Drop for PassiveScope {
    fn drop(&mut self) {
        irql::set(self.0);
    }
}

/// Creates a process and calls every process notify routine with its
/// `PS_CREATE_NOTIFY_INFO`, in the creating thread's context. If a routine
/// left a failure status in CreationStatus, the process is taken out again
/// (no exit notification follows). Every registered routine is called even
/// after one denied (a later routine sees the failure status).
///
/// Panics if `creating_thread` names a process that is not live, a tid of
/// another process, `user_sid` is not a valid SID, or `pid` is not a
/// non-zero multiple of 4 or is in use.
pub fn create_process(spec: &ProcessSpec) -> CreatedProcess {
    let _irql = PassiveScope::enter("process creation");
    if let Some(sid) = &spec.user_sid {
        assert!(
            sid::valid_sid_bytes(sid),
            "ProcessSpec::user_sid is not a valid SID: {sid:?}"
        );
    }
    let (creator_pid, creator_tid) = match spec.creating_thread {
        None => current_ids(),
        Some((pid, tid)) => {
            adopt_thread(pid, tid);
            (pid, tid)
        }
    };
    let new = super::NewProcess::new(spec, spec.creation_time.unwrap_or_else(filetime_now));
    let (pid, eprocess) = {
        let mut s = state();
        let pid = match spec.pid {
            None => s.alloc_cid(),
            Some(pid) => {
                assert!(
                    pid != 0 && pid.is_multiple_of(4),
                    "process ids are non-zero multiples of 4, not {pid}"
                );
                assert!(!s.id_in_use(pid), "id {pid} is in use");
                s.next_cid = s.next_cid.max(pid + 4);
                pid
            }
        };
        let addr = s.insert_new_process(pid, new);
        (pid, addr)
    };
    let image = NotifyString::new(&spec.image_file_name, "ImageFileName");
    let command_line = spec
        .command_line
        .as_deref()
        .map(|c| NotifyString::new(c, "CommandLine"));
    let info = NotifyInfo::new(PS_CREATE_NOTIFY_INFO {
        Size: size_of::<PS_CREATE_NOTIFY_INFO>(),
        Flags: spec.file_open_name_available as u32 | (spec.subsystem as u32) << 1,
        ParentProcessId: spec.parent.unwrap_or(0),
        CreatingThreadId: CLIENT_ID {
            UniqueProcess: creator_pid,
            UniqueThread: creator_tid,
        },
        FileObject: std::ptr::null_mut(),
        ImageFileName: image.as_ptr(),
        CommandLine: command_line
            .as_ref()
            .map_or(std::ptr::null(), |c| c.as_ptr()),
        CreationStatus: STATUS_SUCCESS,
    });
    let info_ptr = info.0;
    {
        let _ctx = enter_context(creator_pid, creator_tid);
        notify::call_each(
            Kind::Process,
            "process creation",
            |_| true,
            |c| {
                // SAFETY: registered process routines have the
                // PCREATE_PROCESS_NOTIFY_ROUTINE_EX type; the EPROCESS is live
                // (the table holds it) and `info_ptr` points at a live,
                // exclusively owned PS_CREATE_NOTIFY_INFO whose strings outlive
                // the call.
                unsafe {
                    let routine: CreateProcessNotifyRoutineEx = std::mem::transmute(c.routine);
                    routine(eprocess as *mut c_void, pid, info_ptr);
                }
            },
        );
    }
    let creation_status = info.finish();
    drop((image, command_line));
    if !nt_success(creation_status) {
        state().remove_process(pid);
    }
    CreatedProcess {
        pid,
        creation_status,
    }
}

/// The PS_CREATE_NOTIFY_INFO of one creation, in its own exact-size kernel
/// pool block (72 bytes, nothing after it in special pool), and the bytes
/// it started with.
struct NotifyInfo(*mut PS_CREATE_NOTIFY_INFO, Vec<u8>);

impl NotifyInfo {
    fn new(info: PS_CREATE_NOTIFY_INFO) -> NotifyInfo {
        let size = size_of::<PS_CREATE_NOTIFY_INFO>();
        let p = pool::kernel_alloc_exact(size, 8, NOTIFY_TAG).cast::<PS_CREATE_NOTIFY_INFO>();
        assert!(
            !p.is_null(),
            "out of host memory for a PS_CREATE_NOTIFY_INFO"
        );
        // SAFETY: a fresh zeroed block the size of the structure, 8-aligned;
        // its padding stays zero, so all its bytes are initialized.
        let original = unsafe {
            p.write(info);
            std::slice::from_raw_parts(p.cast::<u8>(), size).to_vec()
        };
        NotifyInfo(p, original)
    }

    /// After the routines: the CreationStatus they left, the only member a
    /// routine may write; a change to any other byte is a violation.
    fn finish(&self) -> NTSTATUS {
        const STATUS_AT: usize = std::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CreationStatus);
        // SAFETY: the live block from `new`; the routines have returned.
        let now = unsafe { std::slice::from_raw_parts(self.0.cast::<u8>(), self.1.len()) };
        let changed = (0..now.len())
            .filter(|i| !(STATUS_AT..STATUS_AT + 4).contains(i))
            .find(|&i| now[i] != self.1[i]);
        if let Some(at) = changed {
            violation::record(
                "ps",
                format!(
                    "a process notify routine wrote PS_CREATE_NOTIFY_INFO at offset {at}: only \
                     CreationStatus (offset {STATUS_AT}) is the routine's to write"
                ),
            );
        }
        // SAFETY: as above.
        unsafe { (*self.0).CreationStatus }
    }
}

impl Drop for NotifyInfo {
    fn drop(&mut self) {
        // SAFETY: the block from `new`, freed once.
        unsafe { pool::kernel_free(self.0.cast()) };
    }
}

/// Makes sure thread `tid` exists in live process `pid`.
fn adopt_thread(pid: usize, tid: usize) {
    let mut s = state();
    assert!(
        s.process_by_pid(pid).is_some(),
        "creating thread ({pid}, {tid}): process {pid} is not live"
    );
    match s.threads.get(&tid) {
        Some(addr) => {
            let owner = match s.objects[addr].data {
                super::ObjData::Thread { pid, .. } => pid,
                _ => unreachable!(),
            };
            assert_eq!(
                owner, pid,
                "thread {tid} belongs to process {owner}, not {pid}"
            );
        }
        None => {
            assert!(
                tid.is_multiple_of(4) && tid != 0,
                "thread ids are non-zero multiples of 4"
            );
            s.insert_thread(pid, tid);
            s.next_cid = s.next_cid.max(tid + 4);
        }
    }
}

/// Ends a process: sets its exit status and time (FILETIME; None: now),
/// calls every process notify routine with CreateInfo NULL in the context of
/// the exiting process (so `PsGetProcessExitTime` reads its exit time), then
/// removes it and its threads. Returns false (and does nothing) when `pid`
/// is not a live process (or is System or Idle).
pub fn exit_process(pid: usize, exit_status: NTSTATUS, exit_time: Option<i64>) -> bool {
    let _irql = PassiveScope::enter("process exit");
    if pid == SYSTEM_PID || pid == IDLE_PID {
        return false;
    }
    let (eprocess, tid) = {
        let mut s = state();
        let Some(addr) = s.process_by_pid(pid) else {
            return false;
        };
        let p = s.proc_data_mut(addr);
        p.exit_status = exit_status;
        p.exit_time = exit_time.unwrap_or_else(filetime_now);
        let tid = s.some_thread_of(pid);
        (addr, tid)
    };
    {
        let _ctx = enter_context(pid, tid);
        notify::call_each(
            Kind::Process,
            "process exit",
            |_| true,
            |c| {
                // SAFETY: registered process routines have the
                // PCREATE_PROCESS_NOTIFY_ROUTINE_EX type; the EPROCESS is live.
                unsafe {
                    let routine: CreateProcessNotifyRoutineEx = std::mem::transmute(c.routine);
                    routine(eprocess as *mut c_void, pid, std::ptr::null_mut());
                }
            },
        );
    }
    state().remove_process(pid);
    true
}

pub(super) fn call_thread_routines(pid: usize, tid: usize, create: bool, creator: (usize, usize)) {
    notify::call_each(
        Kind::Thread,
        if create {
            "thread creation"
        } else {
            "thread exit"
        },
        |c| !(c.thread_variant == ThreadVariant::NonSystem && pid == SYSTEM_PID),
        |c| {
            let (cp, ct) = if c.thread_variant == ThreadVariant::NonSystem || !create {
                (pid, tid)
            } else {
                creator
            };
            let _ctx = enter_context(cp, ct);
            // SAFETY: registered thread routines have the
            // PCREATE_THREAD_NOTIFY_ROUTINE type; arguments are plain values.
            unsafe {
                let routine: CreateThreadNotifyRoutine = std::mem::transmute(c.routine);
                routine(pid, tid, create as u8);
            }
        },
    );
}

/// Creates a thread in live process `pid` and calls the thread notify
/// routines (Create TRUE): routines registered with
/// PsSetCreateThreadNotifyRoutine or the Subsystems type run in the
/// calling (creating) thread's context, NonSystem ones on the new thread
/// and not for System threads. Panics if `pid` is not live.
pub fn create_thread(pid: usize) -> usize {
    create_thread_with_id(pid, None)
}

/// [`create_thread`] with an exact thread id (None: the next free id).
/// Panics as [`create_thread`] does, and if `tid` is not a non-zero
/// multiple of 4 or is in use.
pub fn create_thread_with_id(pid: usize, tid: Option<usize>) -> usize {
    let _irql = PassiveScope::enter("thread creation");
    let creator = current_ids();
    let tid = {
        let mut s = state();
        assert!(
            s.process_by_pid(pid).is_some(),
            "create_thread: process {pid} is not live"
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
        s.insert_thread(pid, tid);
        tid
    };
    call_thread_routines(pid, tid, true, creator);
    tid
}

/// Ends a live thread: calls the thread notify routines (Create FALSE) in
/// the exiting thread's context, then removes it. Returns false when `tid`
/// is not a live thread.
pub fn exit_thread(tid: usize) -> bool {
    let _irql = PassiveScope::enter("thread exit");
    let Some(pid) = super::thread_process(tid) else {
        return false;
    };
    call_thread_routines(pid, tid, false, (pid, tid));
    state().remove_thread(tid);
    true
}

/// Raises an image load: calls the image-load notify routines with
/// `full_name` (NULL when None), `pid` (0 for a driver) and the IMAGE_INFO
/// built from `info`, in the context of process `pid` (a thread of it) or,
/// for pid 0, of the calling thread. Panics if `pid` is neither 0 nor live.
pub fn load_image(pid: usize, full_name: Option<&str>, info: &ImageInfoSpec) {
    let _irql = PassiveScope::enter("image load");
    let (cp, ct) = if pid == 0 {
        current_ids()
    } else {
        assert!(
            super::state_read().process_by_pid(pid).is_some(),
            "load_image: process {pid} is not live"
        );
        (pid, super::some_thread_of(pid))
    };
    let name = full_name.map(|n| NotifyString::new(n, "FullImageName"));
    let mut ex = Box::new(IMAGE_INFO_EX {
        Size: std::mem::size_of::<IMAGE_INFO_EX>(),
        ImageInfo: IMAGE_INFO {
            Properties: info.properties(),
            ImageBase: info.image_base as *mut c_void,
            ImageSelector: info.image_selector,
            ImageSize: info.image_size,
            ImageSectionNumber: info.image_section_number,
        },
        FileObject: std::ptr::null_mut(),
    });
    // Without ExtendedInfoPresent the routine gets a bare IMAGE_INFO.
    let mut bare = Box::new(ex.ImageInfo);
    let info_ptr: *mut IMAGE_INFO = if info.extended_info {
        &mut ex.ImageInfo
    } else {
        &mut *bare
    };
    let name_ptr = name.as_ref().map_or(std::ptr::null_mut(), |n| n.as_ptr());
    let mismatch = info.machine_type_mismatch;
    let _ctx = enter_context(cp, ct);
    notify::call_each(
        Kind::Image,
        "image load",
        |c| !mismatch || c.image_flags & PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE != 0,
        |c| {
            // SAFETY: registered image routines have the
            // PLOAD_IMAGE_NOTIFY_ROUTINE type; the name and info blocks are
            // owned here and outlive the call.
            unsafe {
                let routine: LoadImageNotifyRoutine = std::mem::transmute(c.routine);
                routine(name_ptr, pid, info_ptr);
            }
        },
    );
}
