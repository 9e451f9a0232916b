//! The `thread` program type and attach type (this driver's own; not in
//! ntosebpfext 0.7.0).
//!
//! Programs see a `thread_md_t` for every thread creation and exit in the
//! system, from the kernel's thread notify routine registered with
//! `PsSetCreateThreadNotifyRoutine`: its create callout runs in the
//! context of the creating thread, so the creating process and thread are
//! the current ones, and a thread created by another process (a "remote"
//! thread, Sysmon event 8) is told apart. (`PsSetCreateThreadNotifyRoutineEx`
//! with `PsCreateThreadNotifyNonSystem` runs it on the new thread instead,
//! and skips System threads.) The start address is read the documented way:
//! `ZwQueryInformationThread(ThreadQuerySetWin32StartAddress)` on a kernel
//! handle from `ObOpenObjectByPointer`. Results are ignored: a thread
//! creation cannot be denied from this callback. No packet, no helpers.
//!
//! The layout, the flag rule and the test-run validation are unit-tested on
//! the host; the notify routine is in `kernel` (Windows only). See
//! docs/thread-hook.md.

use core::mem::{offset_of, size_of};
use ebpf_ext::nt::GUID;

/// `EBPF_PROGRAM_TYPE_THREAD`.
pub const EBPF_PROGRAM_TYPE_THREAD: GUID = GUID::new(
    0x2878b65e,
    0x750b,
    0x48f4,
    [0x9a, 0xb4, 0xb5, 0xea, 0xdc, 0x37, 0x7d, 0x67],
);
/// `EBPF_ATTACH_TYPE_THREAD`.
pub const EBPF_ATTACH_TYPE_THREAD: GUID = GUID::new(
    0x2138225a,
    0x7ce0,
    0x434d,
    [0x8e, 0xf1, 0x6b, 0x44, 0xc6, 0x8a, 0xfa, 0x9e],
);

/// `THREAD_OPERATION_CREATE` (`thread_operation_t`).
pub const THREAD_OPERATION_CREATE: u32 = 0;
/// `THREAD_OPERATION_EXIT`.
pub const THREAD_OPERATION_EXIT: u32 = 1;

/// `THREAD_FLAG_REMOTE`: created by a thread of another process (CREATE).
pub const THREAD_FLAG_REMOTE: u32 = 0x1;
/// `THREAD_FLAG_SYSTEM`: a thread of the System process.
pub const THREAD_FLAG_SYSTEM: u32 = 0x2;
/// Every flag this version sets.
pub const THREAD_FLAGS_KNOWN: u32 = THREAD_FLAG_REMOTE | THREAD_FLAG_SYSTEM;

/// The System process's id (4 on every Windows NT since 2000).
pub const SYSTEM_PROCESS_ID: u64 = 4;

/// `thread_md_t`: what programs see (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct thread_md_t {
    /// The process that owns the thread.
    pub process_id: u64,
    /// The thread.
    pub thread_id: u64,
    /// The creating thread's process (CREATE; 0 on EXIT).
    pub creating_process_id: u64,
    /// The creating thread (CREATE; 0 on EXIT).
    pub creating_thread_id: u64,
    /// `ThreadQuerySetWin32StartAddress`, or 0 when the query fails.
    pub start_address: u64,
    /// The thread's exit status (EXIT; 0 on CREATE).
    pub exit_status: u32,
    /// `thread_operation_t`.
    pub operation: u32,
    /// `THREAD_FLAG_*`.
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
}

impl thread_md_t {
    /// All zero: a CREATE event of nothing.
    pub const fn zeroed() -> thread_md_t {
        thread_md_t {
            process_id: 0,
            thread_id: 0,
            creating_process_id: 0,
            creating_thread_id: 0,
            start_address: 0,
            exit_status: 0,
            operation: 0,
            flags: 0,
            reserved: 0,
        }
    }
}

const _: () = {
    assert!(size_of::<thread_md_t>() == 56);
    assert!(offset_of!(thread_md_t, thread_id) == 8);
    assert!(offset_of!(thread_md_t, creating_process_id) == 16);
    assert!(offset_of!(thread_md_t, creating_thread_id) == 24);
    assert!(offset_of!(thread_md_t, start_address) == 32);
    assert!(offset_of!(thread_md_t, exit_status) == 40);
    assert!(offset_of!(thread_md_t, operation) == 44);
    assert!(offset_of!(thread_md_t, flags) == 48);
};

/// The flags of an event: SYSTEM for threads of the System process, REMOTE
/// for a creation by a thread of another process.
pub fn thread_flags(process_id: u64, creating_process_id: u64, create: bool) -> u32 {
    let mut flags = 0;
    if process_id == SYSTEM_PROCESS_ID {
        flags |= THREAD_FLAG_SYSTEM;
    }
    if create && creating_process_id != process_id {
        flags |= THREAD_FLAG_REMOTE;
    }
    flags
}

/// Whether a test run's context is one the driver could have produced:
/// a known operation, known flags, `reserved` zero.
pub fn valid_test_context(md: &thread_md_t) -> bool {
    (md.operation == THREAD_OPERATION_CREATE || md.operation == THREAD_OPERATION_EXIT)
        && md.flags & !THREAD_FLAGS_KNOWN == 0
        && md.reserved == 0
}

#[cfg(windows)]
mod kernel {
    use super::*;
    use core::ffi::CStr;
    use core::ptr;
    use ebpf_ext::ebpf::abi::*;
    use ebpf_ext::ebpf::context::{
        test_run_context_create, test_run_context_destroy, ProgramContext, TestRunContext,
        TestRunHook, TestRunOf, TestRunOutput,
    };
    use ebpf_ext::ebpf::hook::{EventSource, Hook};
    use ebpf_ext::ebpf::program::{AttachType, ProgramType, ProgramTypeSpec};
    use ebpf_ext::nt::{self, NtResult, HANDLE};
    use ebpf_ext::pool::PoolBox;
    use ebpf_ext::store;
    use ebpf_ext::trace;

    /// The `thread` program type: no helpers, no packet.
    const PROGRAM_SPEC: ProgramTypeSpec = ProgramTypeSpec {
        name: c"thread",
        program_type: EBPF_PROGRAM_TYPE_THREAD,
        bpf_prog_type: 0,
        context: ebpf_context_descriptor_t {
            size: size_of::<thread_md_t>() as i32,
            data: -1,
            end: -1,
            meta: -1,
        },
        helpers: &[],
        context_create: test_run_context_create::<TestRun>,
        context_destroy: test_run_context_destroy::<TestRun>,
        // Windows calls thread notify routines at PASSIVE_LEVEL or
        // APC_LEVEL (PCREATE_THREAD_NOTIFY_ROUTINE): programs must
        // be able to run at either.
        required_irql: nt::APC_LEVEL,
    };
    static PROGRAM: ProgramType<{ PROGRAM_SPEC.helpers.len() }> =
        ProgramType::new(&PROGRAM, PROGRAM_SPEC);

    /// The `thread` attach type.
    static ATTACH: AttachType =
        AttachType::new(EBPF_ATTACH_TYPE_THREAD, EBPF_PROGRAM_TYPE_THREAD, 0);

    /// The section programs of this type use: `SEC("thread")`.
    static SECTIONS: &[store::Section] = &[store::Section::new("thread", &ATTACH)];

    /// The thread hook: both providers and the store entries, fed by the
    /// thread notify routine.
    pub static HOOK: Hook = Hook::new(&PROGRAM, &ATTACH, SECTIONS, &ThreadNotify);

    /// The thread notify routine as an [`EventSource`].
    struct ThreadNotify;

    impl EventSource for ThreadNotify {
        fn register(&self) -> NtResult {
            // SAFETY: registers a routine of this image, at PASSIVE_LEVEL
            // (attach); it stays callable until removed (unload waits).
            let result = nt::check(unsafe { nt::PsSetCreateThreadNotifyRoutine(thread_notify) });
            trace::callback_register(c"thread", c"PsSetCreateThreadNotifyRoutine", result);
            result
        }

        fn unregister(&self) {
            // SAFETY: removes the routine registered above; returns after any
            // call in flight has finished.
            let status = unsafe { nt::PsRemoveCreateThreadNotifyRoutine(thread_notify) };
            trace::callback_remove(
                c"thread",
                c"PsRemoveCreateThreadNotifyRoutine",
                nt::check(status),
            );
        }
    }

    /// `nt::check` for a per-event kernel call: a failure is traced with
    /// the API's name (an `ApiFailure` event, nothing when no session
    /// wants it).
    fn checked(api: &'static core::ffi::CStr, status: nt::NTSTATUS) -> NtResult {
        nt::check(status)
            .inspect_err(|e| trace::api_failure(trace::keyword::PROCESS, api, e.status()))
    }

    /// A kernel handle to a thread, closed on drop.
    ///
    /// # Invariants
    /// `0` is a handle this driver opened with OBJ_KERNEL_HANDLE and has not
    /// closed.
    struct ThreadHandle(HANDLE);

    impl ThreadHandle {
        /// Opens thread `thread_id` for queries (PASSIVE_LEVEL).
        fn open(thread_id: HANDLE) -> NtResult<ThreadHandle> {
            let mut thread: nt::PETHREAD = ptr::null_mut();
            // SAFETY: `thread` is a live local; on success it holds a
            // referenced ETHREAD, dereferenced below.
            checked(c"PsLookupThreadByThreadId", unsafe {
                nt::PsLookupThreadByThreadId(thread_id, &mut thread)
            })?;
            let mut handle: HANDLE = 0;
            // SAFETY: a referenced ETHREAD; a kernel handle (no user process
            // can use it) with KernelMode access, so the object type may be
            // NULL.
            let opened = unsafe {
                nt::ObOpenObjectByPointer(
                    thread,
                    nt::OBJ_KERNEL_HANDLE,
                    ptr::null_mut(),
                    nt::THREAD_QUERY_INFORMATION,
                    ptr::null_mut(),
                    nt::KernelMode,
                    &mut handle,
                )
            };
            // SAFETY: the reference PsLookupThreadByThreadId took; the handle,
            // if any, holds its own.
            unsafe { nt::ObfDereferenceObject(thread) };
            checked(c"ObOpenObjectByPointer", opened)?;
            // INVARIANT: opened above with OBJ_KERNEL_HANDLE.
            Ok(ThreadHandle(handle))
        }
    }

    impl Drop for ThreadHandle {
        fn drop(&mut self) {
            // SAFETY: open and ours (invariant); closed once.
            let status = unsafe { nt::ZwClose(self.0) };
            let _ = checked(c"ZwClose", status);
        }
    }

    /// One fixed-size query of `thread`; None when it fails.
    ///
    /// # Safety
    /// `thread` is an open thread handle of this driver or
    /// `ZwCurrentThread()`, for the whole call; PASSIVE_LEVEL.
    unsafe fn query<T>(thread: HANDLE, class: u32, value: &mut T) -> Option<()> {
        // SAFETY: a thread handle (the caller's contract); `value` is
        // writable for size_of::<T>() bytes.
        let status = unsafe {
            nt::ZwQueryInformationThread(
                thread,
                class,
                (value as *mut T).cast(),
                size_of::<T>() as u32,
                ptr::null_mut(),
            )
        };
        checked(c"ZwQueryInformationThread", status).ok()
    }

    /// The start address and, on exit, the exit status of `thread`.
    ///
    /// # Safety
    /// As [`query`].
    #[inline(always)]
    unsafe fn query_fields(thread: HANDLE, md: &mut thread_md_t) {
        let mut start: usize = 0;
        // SAFETY: the caller's contract.
        if unsafe { query(thread, nt::ThreadQuerySetWin32StartAddress, &mut start) }.is_some() {
            md.start_address = start as u64;
        }
        if md.operation == THREAD_OPERATION_EXIT {
            let mut basic = nt::THREAD_BASIC_INFORMATION {
                ExitStatus: 0,
                TebBaseAddress: ptr::null_mut(),
                ClientId: nt::CLIENT_ID {
                    UniqueProcess: 0,
                    UniqueThread: 0,
                },
                AffinityMask: 0,
                Priority: 0,
                BasePriority: 0,
            };
            // SAFETY: the caller's contract.
            if unsafe { query(thread, nt::ThreadBasicInformation, &mut basic) }.is_some() {
                md.exit_status = basic.ExitStatus as u32;
            }
        }
    }

    /// The thread's start address and, on exit, its exit status; zeros for
    /// what cannot be read. The queries need PASSIVE_LEVEL; Windows may call
    /// the routine at APC_LEVEL, and then both stay 0.
    fn read_thread(md: &mut thread_md_t) {
        // SAFETY: reads the current IRQL; no precondition.
        if unsafe { nt::KeGetCurrentIrql() } != nt::PASSIVE_LEVEL {
            return;
        }
        // The exit callout runs on the exiting thread: its pseudo handle
        // (full access, nothing to open or close) saves the lookup, the
        // open and the close. Checked, not assumed.
        if md.operation == THREAD_OPERATION_EXIT
            // SAFETY: a plain query of the current thread, any IRQL.
            && unsafe { nt::PsGetCurrentThreadId() } as u64 == md.thread_id
        {
            // SAFETY: the current thread's pseudo handle, at PASSIVE_LEVEL.
            unsafe { query_fields(nt::ZW_CURRENT_THREAD, md) };
            return;
        }
        let Ok(handle) = ThreadHandle::open(md.thread_id as HANDLE) else {
            return;
        };
        // SAFETY: open until `handle` drops after the call; PASSIVE_LEVEL.
        unsafe { query_fields(handle.0, md) };
    }

    /// A thread event as the core receives it (no private state).
    type ThreadContext = ProgramContext<thread_md_t, ()>;

    unsafe extern "system" fn thread_notify(process_id: HANDLE, thread_id: HANDLE, create: u8) {
        let hook = HOOK.provider();
        if !hook.has_clients() {
            return;
        }
        let create = create != 0;
        let mut md = thread_md_t::zeroed();
        md.process_id = process_id as u64;
        md.thread_id = thread_id as u64;
        if create {
            md.operation = THREAD_OPERATION_CREATE;
            // The create callout runs in the creating thread's context
            // (PsSetCreateThreadNotifyRoutine).
            // SAFETY: plain queries of the current thread, any IRQL.
            md.creating_process_id = unsafe { nt::PsGetCurrentProcessId() } as u64;
            // SAFETY: as above.
            md.creating_thread_id = unsafe { nt::PsGetCurrentThreadId() } as u64;
        } else {
            md.operation = THREAD_OPERATION_EXIT;
        }
        md.flags = thread_flags(md.process_id, md.creating_process_id, create);
        read_thread(&mut md);
        let (operation, id) = (md.operation as u8, md.thread_id);
        let mut event = ThreadContext::new(md, ());
        // Thread creation cannot be denied here: every result is ignored.
        if let Some(run) = hook.invoke_ignoring_results(&mut event) {
            trace::hook_event(c"thread", operation, id, run, 0);
        }
    }

    // -----------------------------------------------------------------------
    // bpf_prog_test_run: no data; the context in and out.

    /// The thread hook's test run: no data, nothing owned.
    enum TestRun {}

    // SAFETY: thread_md_t has no implicit padding: five u64 then four u32
    // (`reserved` included), 56 bytes at 8-byte alignment.
    unsafe impl TestRunOutput for TestRun {
        type Context = thread_md_t;
        type Private = ();
        type Owned = ();
        type ContextOut = thread_md_t;

        fn output(run: &mut TestRunOf<Self>) -> (thread_md_t, impl AsRef<[&[u8]]>) {
            (run.event.context, [])
        }
    }

    // SAFETY: thread_md_t is integers only: any bytes are valid.
    unsafe impl TestRunHook for TestRun {
        const NAME: &'static CStr = c"thread";
        const ZEROED: thread_md_t = thread_md_t::zeroed();

        fn refusal(md: &thread_md_t, data: &[u8]) -> Option<&'static CStr> {
            if !data.is_empty() {
                Some(c"DataNotEmpty")
            } else if !valid_test_context(md) {
                Some(c"InvalidContext")
            } else {
                None
            }
        }

        fn create(md: thread_md_t, _: &[u8]) -> EbpfResult<PoolBox<TestRunOf<Self>>> {
            let run = TestRunContext {
                event: ProgramContext::new(md, ()),
                owned: (),
            };
            PoolBox::try_new(run).map_err(|_| EbpfError::NO_MEMORY)
        }
    }
}

#[cfg(windows)]
pub use kernel::HOOK;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_owner_and_the_creator() {
        assert_eq!(thread_flags(100, 100, true), 0, "local");
        assert_eq!(thread_flags(100, 200, true), THREAD_FLAG_REMOTE);
        assert_eq!(thread_flags(100, 0, false), 0, "EXIT is never remote");
        assert_eq!(thread_flags(4, 4, true), THREAD_FLAG_SYSTEM);
        assert_eq!(
            thread_flags(4, 200, true),
            THREAD_FLAG_SYSTEM | THREAD_FLAG_REMOTE
        );
        assert_eq!(thread_flags(4, 0, false), THREAD_FLAG_SYSTEM);
    }

    #[test]
    fn test_contexts_are_validated() {
        let mut md = thread_md_t::zeroed();
        assert!(valid_test_context(&md));
        md.operation = THREAD_OPERATION_EXIT;
        md.flags = THREAD_FLAGS_KNOWN;
        assert!(valid_test_context(&md));
        md.operation = 2;
        assert!(!valid_test_context(&md));
        md.operation = 0;
        md.flags = 4;
        assert!(!valid_test_context(&md));
        md.flags = 0;
        md.reserved = 1;
        assert!(!valid_test_context(&md));
    }
}
