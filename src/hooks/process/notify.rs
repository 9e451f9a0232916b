//! The process hook on Windows: the program type's declaration, the
//! process notify routine that raises events, the account lookup, the
//! helpers, and the `bpf_prog_test_run` contexts. Everything generic (the
//! providers, the client list, invoking, program information, contexts)
//! is in [`crate::ebpf`].

use super::*;
use crate::ebpf::abi::*;
use crate::ebpf::context::{unicode_bytes, Packet, ProgramContext, TestRunContext};
use crate::ebpf::helpers::{copy_whole, helper_return, out_buffer, Errno, HelperResult};
use crate::ebpf::hook::{EventSource, Flow, Hook};
use crate::ebpf::program::{AttachType, HelperFn, HelperSpec, ProgramType, ProgramTypeSpec};
use crate::nt::{self, NtResult, HANDLE, PEPROCESS, UNICODE_STRING};
use crate::pool::PoolBox;
use crate::trace;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;

/// The arguments of the three string helpers: context, buffer, its size.
const STRING_HELPER_ARGUMENTS: [u32; 5] = [
    EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    EBPF_ARGUMENT_TYPE_CONST_SIZE,
    EBPF_ARGUMENT_TYPE_DONTCARE,
    EBPF_ARGUMENT_TYPE_DONTCARE,
];

const fn string_helper(id: u32, name: &'static core::ffi::CStr, address: HelperFn) -> HelperSpec {
    HelperSpec {
        id,
        name,
        return_type: EBPF_RETURN_TYPE_INTEGER,
        arguments: STRING_HELPER_ARGUMENTS,
        address,
    }
}

/// The `process` program type.
static PROGRAM: ProgramType<3> = ProgramType::new(
    &PROGRAM,
    ProgramTypeSpec {
        name: c"process",
        program_type: EBPF_PROGRAM_TYPE_PROCESS,
        bpf_prog_type: BPF_PROG_TYPE_PROCESS,
        context: ebpf_context_descriptor_t {
            size: size_of::<process_md_t>() as i32,
            data: offset_of!(process_md_t, command_start) as i32,
            end: offset_of!(process_md_t, command_end) as i32,
            meta: -1,
        },
        helpers: [
            string_helper(
                BPF_FUNC_PROCESS_GET_IMAGE_PATH,
                c"bpf_process_get_image_path",
                get_image_path,
            ),
            string_helper(
                BPF_FUNC_PROCESS_GET_ACCOUNT_NAME,
                c"bpf_process_get_account_name",
                get_account_name,
            ),
            string_helper(
                BPF_FUNC_PROCESS_GET_ACCOUNT_DOMAIN,
                c"bpf_process_get_account_domain",
                get_account_domain,
            ),
        ],
        context_create,
        context_destroy,
        required_irql: nt::PASSIVE_LEVEL,
    },
);

/// The `process` attach type.
static ATTACH: AttachType = AttachType::new(
    EBPF_ATTACH_TYPE_PROCESS,
    EBPF_PROGRAM_TYPE_PROCESS,
    BPF_ATTACH_TYPE_PROCESS,
);

/// The process hook: both providers, fed by the process notify routine.
pub static HOOK: Hook = Hook::new(&PROGRAM, &ATTACH, &ProcessNotify);

/// The kernel function behind the process hook's callback.
const NOTIFY_API: &core::ffi::CStr = c"PsSetCreateProcessNotifyRoutineEx";

/// The process notify routine as an [`EventSource`].
struct ProcessNotify;

impl EventSource for ProcessNotify {
    fn register(&self) -> NtResult {
        // SAFETY: registers a routine of this image (linked with
        // /INTEGRITYCHECK), at PASSIVE_LEVEL (attach).
        let result = nt::check(unsafe { nt::PsSetCreateProcessNotifyRoutineEx(process_notify, 0) });
        trace::callback_register(c"process", NOTIFY_API, result);
        result
    }

    fn unregister(&self) {
        // SAFETY: removes the routine registered above; returns after any
        // call in flight has finished.
        let status = unsafe { nt::PsSetCreateProcessNotifyRoutineEx(process_notify, 1) };
        trace::callback_remove(c"process", NOTIFY_API, nt::check(status));
    }
}

/// Where an event's account name and domain stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AccountState {
    /// Not looked up yet (looked up on first use).
    Unresolved,
    /// `name`/`domain` hold the strings.
    Resolved,
    /// No SID, or the lookup failed: the helpers return ENOENT.
    Missing,
}

/// Account name and domain, resolved at most once per event.
///
/// # Invariants
/// When `state` is `Resolved`, `name_len`/`domain_len` are byte lengths of
/// at most `ACCOUNT_CAPACITY * 2`.
struct AccountCache {
    state: AccountState,
    name_len: usize,
    domain_len: usize,
    name: [u16; ACCOUNT_CAPACITY],
    domain: [u16; ACCOUNT_CAPACITY],
}

impl AccountCache {
    fn name(&self) -> &[u8] {
        &utf16_bytes(&self.name)[..self.name_len]
    }

    fn domain(&self) -> &[u8] {
        &utf16_bytes(&self.domain)[..self.domain_len]
    }
}

/// The driver's private state of one process event (after the context).
///
/// # Invariants
/// `image_path` points to `image_path_len` bytes valid while the event is
/// (the kernel's string during the notify call, or a test run's
/// buffer), or is null
/// with length 0.
struct EventState {
    image_path: *const u8,
    image_path_len: usize,
    account: UnsafeCell<AccountCache>,
}

/// A process event as the core receives it.
type ProcessContext = ProgramContext<process_md_t, EventState>;

/// A test run: the event, then its strings (command line, then image
/// path), which the packet and `image_path` point into.
type TestRun = TestRunContext<process_md_t, EventState, Vec<u8>>;

fn new_event(md: process_md_t) -> ProcessContext {
    ProgramContext::new(
        md,
        EventState {
            image_path: ptr::null(),
            image_path_len: 0,
            account: UnsafeCell::new(AccountCache {
                state: AccountState::Unresolved,
                name_len: 0,
                domain_len: 0,
                name: [0; ACCOUNT_CAPACITY],
                domain: [0; ACCOUNT_CAPACITY],
            }),
        },
    )
}

impl EventState {
    fn image_path(&self) -> &[u8] {
        if self.image_path.is_null() {
            &[]
        } else {
            // SAFETY: valid for the event's life (type invariant).
            unsafe { core::slice::from_raw_parts(self.image_path, self.image_path_len) }
        }
    }

    /// The account cache, resolved on first use. Helpers of one event run
    /// on the thread that raised it, one at a time, so the cell is never
    /// shared between threads.
    fn account(&self, md: &process_md_t) -> &AccountCache {
        // SAFETY: see above: single-threaded per event; the mutable borrow
        // ends before the shared one is returned.
        let cache = unsafe { &mut *self.account.get() };
        if cache.state == AccountState::Unresolved {
            // INVARIANT: resolve_account bounds the lengths it stores.
            cache.state = resolve_account(md, cache);
        }
        cache
    }
}

fn utf16_bytes(units: &[u16]) -> &[u8] {
    // SAFETY: any u16 slice is a valid byte slice of twice the length.
    unsafe { core::slice::from_raw_parts(units.as_ptr().cast(), units.len() * 2) }
}

fn resolve_account(md: &process_md_t, cache: &mut AccountCache) -> AccountState {
    let sid_len = md.token_sid_size as usize;
    if sid_len == 0 || sid_len > TOKEN_SID_CAPACITY {
        return AccountState::Missing;
    }
    let mut sid = md.token_sid;
    let sid_ptr = sid.as_mut_ptr().cast::<c_void>();
    // SAFETY: sid_ptr points to sid_len bytes we own.
    if unsafe { nt::RtlValidSid(sid_ptr) } == 0 {
        return AccountState::Missing;
    }
    let capacity = (ACCOUNT_CAPACITY * 2) as u16;
    let mut name = UNICODE_STRING {
        Length: 0,
        MaximumLength: capacity,
        Buffer: cache.name.as_mut_ptr(),
    };
    let mut domain = UNICODE_STRING {
        Length: 0,
        MaximumLength: capacity,
        Buffer: cache.domain.as_mut_ptr(),
    };
    let mut name_size = capacity as u32;
    let mut domain_size = capacity as u32;
    let mut name_use = 0u32;
    // SAFETY: every pointer is to a live local or to the cache's buffers,
    // whose sizes are given; called at PASSIVE_LEVEL (notify routine or
    // test run at required_irql PASSIVE).
    let status = unsafe {
        nt::SecLookupAccountSid(
            sid_ptr,
            &mut name_size,
            &mut name,
            &mut domain_size,
            &mut domain,
            &mut name_use,
        )
    };
    if let Err(e) = nt::check(status) {
        trace::api_failure(trace::keyword::PROCESS, c"SecLookupAccountSid", e.status());
        return AccountState::Missing;
    }
    cache.name_len = (name.Length as usize).min(ACCOUNT_CAPACITY * 2);
    cache.domain_len = (domain.Length as usize).min(ACCOUNT_CAPACITY * 2);
    AccountState::Resolved
}

/// Copies the user SID of `process`'s primary token into `md`; leaves
/// token_sid_size 0 when anything fails.
fn read_token_sid(process: PEPROCESS, md: &mut process_md_t) {
    // SAFETY: `process` is the EPROCESS the kernel passed to the notify
    // routine, referenced for the duration of the call.
    let token = unsafe { nt::PsReferencePrimaryToken(process) };
    if token.is_null() {
        return;
    }
    let mut info: *mut c_void = ptr::null_mut();
    // SAFETY: a referenced token; on success `info` is a pool block holding
    // a TOKEN_USER, which we free below.
    let status = unsafe { nt::SeQueryInformationToken(token, nt::TokenUser, &mut info) };
    if let Err(e) = nt::check(status) {
        trace::api_failure(
            trace::keyword::PROCESS,
            c"SeQueryInformationToken",
            e.status(),
        );
    }
    if nt::check(status).is_ok() && !info.is_null() {
        // SAFETY: TOKEN_USER starts with SID_AND_ATTRIBUTES.
        let sid = unsafe { (*(info as *const nt::SID_AND_ATTRIBUTES)).Sid };
        // SAFETY: the SID lives in the TOKEN_USER block.
        if !sid.is_null() && unsafe { nt::RtlValidSid(sid) } != 0 {
            // SAFETY: as above.
            let len = unsafe { nt::RtlLengthSid(sid) } as usize;
            // SAFETY: destination is our 68-byte array, its size passed.
            let copied = unsafe {
                nt::RtlCopySid(
                    TOKEN_SID_CAPACITY as u32,
                    md.token_sid.as_mut_ptr().cast(),
                    sid,
                )
            };
            if len <= TOKEN_SID_CAPACITY && nt::check(copied).is_ok() {
                md.token_sid_size = len as u32;
            }
        }
        // SAFETY: the block SeQueryInformationToken allocated.
        unsafe { nt::ExFreePool(info) };
    }
    // SAFETY: releases the reference taken above.
    unsafe { nt::PsDereferencePrimaryToken(token) };
}

unsafe extern "system" fn process_notify(
    process: PEPROCESS,
    process_id: HANDLE,
    info: *mut nt::PS_CREATE_NOTIFY_INFO,
) {
    let hook = HOOK.provider();
    if !hook.has_clients() {
        return;
    }
    let mut event = new_event(process_md_t::zeroed());
    let md = &mut event.context;
    md.process_id = process_id as u64;
    // SAFETY: `process` is valid for the call.
    md.creation_time = unsafe { nt::PsGetProcessCreateTimeQuadPart(process) } as u64;
    if info.is_null() {
        md.operation = PROCESS_OPERATION_DELETE;
        // SAFETY: on exit the routine runs in the exiting process, whose
        // exit time PsGetProcessExitTime reads.
        md.exit_time = unsafe { nt::PsGetProcessExitTime() } as u64;
        // SAFETY: `process` is valid for the call.
        md.process_exit_code = unsafe { nt::PsGetProcessExitStatus(process) } as u32;
        let mut run = 0u32;
        hook.invoke(&mut event, |_| {
            run += 1;
            Flow::Continue
        });
        trace::hook_event(
            c"process",
            PROCESS_OPERATION_DELETE,
            process_id as u64,
            run,
            0,
        );
        return;
    }
    // SAFETY: non-null CreateInfo is valid for the call.
    let info = unsafe { &mut *info };
    md.operation = PROCESS_OPERATION_CREATE;
    md.parent_process_id = info.ParentProcessId as u64;
    md.creating_process_id = info.CreatingThreadId.UniqueProcess as u64;
    md.creating_thread_id = info.CreatingThreadId.UniqueThread as u64;
    // SAFETY: the kernel's strings are valid for the notify call, which
    // outlives the event.
    let command = Packet::of_optional(unsafe { unicode_bytes(info.CommandLine) });
    md.command_start = command.start;
    md.command_end = command.end;
    read_token_sid(process, md);
    // SAFETY: as above.
    if let Some(image) = unsafe { unicode_bytes(info.ImageFileName) } {
        // INVARIANT: the kernel's string outlives the event.
        event.private.image_path = image.as_ptr();
        event.private.image_path_len = image.len();
    }
    let status = &mut info.CreationStatus;
    let (mut run, mut denied) = (0u32, 0i32);
    hook.invoke(&mut event, |result| {
        run += 1;
        let verdict = result as i32;
        if verdict < 0 {
            *status = verdict;
            denied = verdict;
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    trace::hook_event(
        c"process",
        PROCESS_OPERATION_CREATE,
        process_id as u64,
        run,
        denied,
    );
}

// ---------------------------------------------------------------------------
// Helpers (called by programs with the context the driver passed).

/// The event a helper's context belongs to.
///
/// # Safety
/// `ctx` is a context this driver handed to the core (helper contract).
unsafe fn event<'a>(ctx: u64) -> &'a ProcessContext {
    // SAFETY: every process context the core passes back is the `context`
    // field of a live ProcessContext (caller's contract).
    unsafe { ProcessContext::from_context(ctx as *mut process_md_t) }
}

/// `bpf_process_get_image_path`: the image file name, UTF-16LE, no NUL.
/// Returns the bytes copied; 0 on DELETE (no image name); -EINVAL with
/// nothing written when `len` is too small.
unsafe extern "system" fn get_image_path(ctx: u64, buf: u64, len: u64, _: u64, _: u64) -> i64 {
    // SAFETY: ctx is a context this driver created (helper contract).
    let event = unsafe { event(ctx) };
    // SAFETY: the verifier guarantees `buf` writable for `len` bytes.
    let out = unsafe { out_buffer(buf as *mut u8, len) };
    helper_return(copy_whole(event.private.image_path(), out))
}

/// The account helpers: resolve the event's account once, copy one of its
/// strings, or -ENOENT when there is no SID or it does not resolve.
///
/// # Safety
/// As for every helper: `ctx` is a context this driver created and `buf`
/// is writable for `len` bytes.
unsafe fn copy_account_string(
    ctx: u64,
    buf: u64,
    len: u64,
    pick: fn(&AccountCache) -> &[u8],
) -> HelperResult {
    // SAFETY: see the function's contract.
    let event = unsafe { event(ctx) };
    let account = event.private.account(&event.context);
    if account.state != AccountState::Resolved {
        return Err(Errno::NoEntry);
    }
    // SAFETY: see the function's contract.
    copy_whole(pick(account), unsafe { out_buffer(buf as *mut u8, len) })
}

/// `bpf_process_get_account_name`.
unsafe extern "system" fn get_account_name(ctx: u64, buf: u64, len: u64, _: u64, _: u64) -> i64 {
    // SAFETY: the helper contract, forwarded.
    helper_return(unsafe { copy_account_string(ctx, buf, len, AccountCache::name) })
}

/// `bpf_process_get_account_domain`.
unsafe extern "system" fn get_account_domain(ctx: u64, buf: u64, len: u64, _: u64, _: u64) -> i64 {
    // SAFETY: the helper contract, forwarded.
    helper_return(unsafe { copy_account_string(ctx, buf, len, AccountCache::domain) })
}

// ---------------------------------------------------------------------------
// bpf_prog_test_run.

/// # Safety
/// Called by the core with each pointer valid for its size (or null with
/// size 0) and `context` writable.
unsafe extern "system" fn context_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    if context.is_null() {
        return EbpfError::INVALID_ARGUMENT.code();
    }
    // SAFETY: the caller guarantees context is writable.
    unsafe { *context = ptr::null_mut() };
    if (data_in.is_null() && data_size_in != 0) || (context_in.is_null() && context_size_in != 0) {
        return EbpfError::INVALID_ARGUMENT.code();
    }
    let data: &[u8] = if data_size_in == 0 {
        &[]
    } else {
        // SAFETY: non-null, valid for data_size_in bytes (caller's contract).
        unsafe { core::slice::from_raw_parts(data_in, data_size_in) }
    };
    let md = if context_in.is_null() {
        process_md_t::zeroed()
    } else if context_size_in < size_of::<process_md_t>() {
        return EbpfError::INVALID_ARGUMENT.code();
    } else {
        // SAFETY: at least size_of::<process_md_t>() readable bytes; read
        // unaligned since the caller's buffer has no alignment guarantee.
        unsafe { (context_in as *const process_md_t).read_unaligned() }
    };
    into_ebpf_result(create_test_run(data, md).map(|run| {
        // SAFETY: the caller guarantees context is writable.
        unsafe { *context = TestRun::into_raw(run) };
    }))
}

/// A test-run context from its input, in pool.
fn create_test_run(data: &[u8], md: process_md_t) -> EbpfResult<PoolBox<TestRun>> {
    let strings = parse_test_data(data).map_err(|_| EbpfError::INVALID_ARGUMENT)?;
    if md.token_sid_size as usize > TOKEN_SID_CAPACITY
        || (md.operation != PROCESS_OPERATION_CREATE && md.operation != PROCESS_OPERATION_DELETE)
    {
        return Err(EbpfError::INVALID_ARGUMENT);
    }
    let mut owned = Vec::new();
    owned
        .try_reserve_exact(strings.command_line.len() + strings.image_path.len())
        .map_err(|_| EbpfError::NO_MEMORY)?;
    owned.extend_from_slice(strings.command_line);
    owned.extend_from_slice(strings.image_path);
    let run = TestRun {
        event: new_event(md),
        owned,
    };
    let mut run = PoolBox::try_new(run).map_err(|_| EbpfError::NO_MEMORY)?;
    let TestRun { event, owned } = &mut *run;
    let ProgramContext {
        context, private, ..
    } = event;
    let (command, image) = owned.split_at(strings.command_line.len());
    let command = Packet::of(command);
    context.command_start = command.start;
    context.command_end = command.end;
    // INVARIANT: points into `owned`, which lives as long as the context
    // and is not changed again.
    private.image_path = image.as_ptr();
    private.image_path_len = image.len();
    if !strings.account_name.is_empty() || !strings.account_domain.is_empty() {
        let cache = private.account.get_mut();
        for (src, dst, len) in [
            (strings.account_name, &mut cache.name, &mut cache.name_len),
            (
                strings.account_domain,
                &mut cache.domain,
                &mut cache.domain_len,
            ),
        ] {
            for (unit, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *unit = u16::from_le_bytes([pair[0], pair[1]]);
            }
            // INVARIANT: parse_test_data bounds account strings by
            // ACCOUNT_CAPACITY * 2.
            *len = src.len();
        }
        cache.state = AccountState::Resolved;
    }
    Ok(run)
}

/// # Safety
/// `context` must come from `context_create`; out pointers valid for the
/// sizes they hold.
unsafe extern "system" fn context_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    if context.is_null() {
        return;
    }
    // SAFETY: a context context_create gave away; ownership comes back.
    let run = unsafe { TestRun::from_raw(context) };
    if !context_size_out.is_null() {
        // SAFETY: caller's contract.
        let room = unsafe { *context_size_out };
        let mut md = run.event.context;
        // Kernel addresses mean nothing to the caller.
        md.command_start = ptr::null_mut();
        md.command_end = ptr::null_mut();
        let written = if !context_out.is_null() && room >= size_of::<process_md_t>() {
            // SAFETY: room for a whole process_md_t.
            unsafe { (context_out as *mut process_md_t).write_unaligned(md) };
            size_of::<process_md_t>()
        } else {
            0
        };
        // SAFETY: caller's contract.
        unsafe { *context_size_out = written };
    }
    if !data_size_out.is_null() {
        let private = &run.event.private;
        // SAFETY: the run is over: nothing else borrows the cache.
        let account = unsafe { &*private.account.get() };
        let resolved = account.state == AccountState::Resolved;
        let command_len = run.owned.len() - private.image_path_len;
        let strings = TestStrings {
            command_line: &run.owned[..command_len],
            image_path: private.image_path(),
            account_name: if resolved { account.name() } else { &[] },
            account_domain: if resolved { account.domain() } else { &[] },
        };
        let need = test_data_size(&strings);
        // SAFETY: caller's contract.
        let room = unsafe { *data_size_out };
        let written = if !data_out.is_null() && room >= need {
            // SAFETY: room >= need bytes writable.
            let out = unsafe { core::slice::from_raw_parts_mut(data_out, need) };
            write_test_data(&strings, out);
            need
        } else {
            0
        };
        // SAFETY: caller's contract.
        unsafe { *data_size_out = written };
    }
    drop(run);
}
