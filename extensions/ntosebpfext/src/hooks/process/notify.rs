//! The process hook on Windows: the program type's declaration, the
//! process notify routine that raises events, the account lookup, the
//! helpers, and the `bpf_prog_test_run` contexts. Everything generic (the
//! providers, the client array, invoking, program information, contexts)
//! is in [`ebpf_ext::ebpf`].

use super::*;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;
use ebpf_ext::ebpf::abi::*;
use ebpf_ext::ebpf::context::{
    test_run_buffers, test_run_context_destroy, unicode_bytes, Packet, ProgramContext,
    TestRunContext, TestRunOutput,
};
use ebpf_ext::ebpf::helpers::{copy_whole, helper_return, out_buffer, Errno, HelperResult};
use ebpf_ext::ebpf::hook::{EventSource, Flow, Hook};
use ebpf_ext::ebpf::program::{AttachType, HelperFn, HelperSpec, ProgramType, ProgramTypeSpec};
use ebpf_ext::nt::{self, NtResult, HANDLE, PEPROCESS, UNICODE_STRING};
use ebpf_ext::pool::PoolBox;
use ebpf_ext::store;
use ebpf_ext::trace;

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
const PROGRAM_SPEC: ProgramTypeSpec = ProgramTypeSpec {
    name: c"process",
    program_type: EBPF_PROGRAM_TYPE_PROCESS,
    bpf_prog_type: BPF_PROG_TYPE_PROCESS,
    context: ebpf_context_descriptor_t {
        size: size_of::<process_md_t>() as i32,
        data: offset_of!(process_md_t, command_start) as i32,
        end: offset_of!(process_md_t, command_end) as i32,
        meta: -1,
    },
    helpers: &[
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
    context_destroy: test_run_context_destroy::<ProcessTestRun>,
    required_irql: nt::PASSIVE_LEVEL,
};
static PROGRAM: ProgramType<{ PROGRAM_SPEC.helpers.len() }> =
    ProgramType::new(&PROGRAM, PROGRAM_SPEC);

/// The `process` attach type.
static ATTACH: AttachType = AttachType::new(
    EBPF_ATTACH_TYPE_PROCESS,
    EBPF_PROGRAM_TYPE_PROCESS,
    BPF_ATTACH_TYPE_PROCESS,
);

/// The section programs of this type use: `SEC("process")`.
static SECTIONS: &[store::Section] = &[store::Section::new("process", &ATTACH)];

/// The process hook: both providers and the store entries, fed by the
/// process notify routine.
pub static HOOK: Hook = Hook::new(&PROGRAM, &ATTACH, SECTIONS, &ProcessNotify);

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

/// One account string: `len` bytes in a buffer of `max` bytes (the
/// `UNICODE_STRING`'s `Length` and `MaximumLength`). The buffer is `pool`
/// when that is set, else the cache's inline array for this string; with
/// `max == 0` there is none (a null `Buffer`).
///
/// # Invariants
/// `len <= max`, and `max` bytes fit in the buffer (`pool`'s length, or
/// the inline array's).
struct AccountString {
    len: u16,
    max: u16,
    pool: Option<Vec<u16>>,
}

impl AccountString {
    /// No string and no buffer.
    const NONE: AccountString = AccountString {
        len: 0,
        max: 0,
        pool: None,
    };

    /// The whole inline array, empty.
    const INLINE: AccountString = AccountString {
        len: 0,
        max: (ACCOUNT_INLINE_UNITS * 2) as u16,
        pool: None,
    };

    fn storage<'a>(&'a self, inline: &'a [u16; ACCOUNT_INLINE_UNITS]) -> &'a [u16] {
        self.pool.as_deref().unwrap_or(inline)
    }

    fn bytes<'a>(&'a self, inline: &'a [u16; ACCOUNT_INLINE_UNITS]) -> &'a [u8] {
        // Within the buffer: len <= max <= its size (type invariant).
        &utf16_bytes(self.storage(inline))[..self.len as usize]
    }

    /// A `UNICODE_STRING` over the buffer, for `SecLookupAccountSid`.
    fn unicode(&mut self, inline: &mut [u16; ACCOUNT_INLINE_UNITS]) -> UNICODE_STRING {
        let buffer = if self.max == 0 {
            ptr::null_mut()
        } else {
            match &mut self.pool {
                Some(p) => p.as_mut_ptr(),
                None => inline.as_mut_ptr(),
            }
        };
        UNICODE_STRING {
            Length: self.len,
            MaximumLength: self.max,
            Buffer: buffer,
        }
    }

    /// A pool buffer of `bytes` bytes replaces the current one (which the
    /// lookup reported too small).
    fn grow(&mut self, bytes: u16) -> NtResult {
        let mut pool = Vec::new();
        let units = (bytes as usize).div_ceil(2);
        pool.try_reserve_exact(units)
            .map_err(|_| nt::Error::INSUFFICIENT_RESOURCES)?;
        pool.resize(units, 0);
        // INVARIANT: the new buffer holds `bytes` bytes; the string is
        // empty until the lookup fills it.
        self.pool = Some(pool);
        self.max = bytes;
        self.len = 0;
        Ok(())
    }

    /// Takes the `Length` the lookup set, within the buffer.
    fn set_len(&mut self, length: u16) {
        // INVARIANT: bounded by max.
        self.len = length.min(self.max);
    }
}

/// Account name and domain, resolved at most once per event.
struct AccountCache {
    state: AccountState,
    name: AccountString,
    domain: AccountString,
    name_inline: [u16; ACCOUNT_INLINE_UNITS],
    domain_inline: [u16; ACCOUNT_INLINE_UNITS],
}

impl AccountCache {
    /// A real event's cache: unresolved, both strings in the inline arrays.
    const fn new() -> AccountCache {
        AccountCache {
            state: AccountState::Unresolved,
            name: AccountString::INLINE,
            domain: AccountString::INLINE,
            name_inline: [0; ACCOUNT_INLINE_UNITS],
            domain_inline: [0; ACCOUNT_INLINE_UNITS],
        }
    }

    fn name(&self) -> &[u8] {
        self.name.bytes(&self.name_inline)
    }

    fn domain(&self) -> &[u8] {
        self.domain.bytes(&self.domain_inline)
    }

    /// Resolves `md.token_sid` into the two strings, once. The first
    /// `SecLookupAccountSid` uses the current buffers; when it reports
    /// them too small, the ones that are get pool buffers of the size it
    /// reported and the lookup is tried once more. On any failure both
    /// strings are dropped.
    fn resolve(&mut self, md: &process_md_t) -> AccountState {
        match self.lookup(md) {
            Ok(()) => AccountState::Resolved,
            Err(_) => {
                self.name = AccountString::NONE;
                self.domain = AccountString::NONE;
                AccountState::Missing
            }
        }
    }

    fn lookup(&mut self, md: &process_md_t) -> NtResult {
        let sid_len = md.token_sid_size as usize;
        if sid_len == 0 || sid_len > TOKEN_SID_CAPACITY {
            return Err(nt::Error::UNSUCCESSFUL);
        }
        let mut sid = md.token_sid;
        let sid_ptr = sid.as_mut_ptr().cast::<c_void>();
        // SAFETY: sid_ptr points to the 68 bytes of our copy; RtlValidSid
        // reads no further than the SID's own sub-authority count allows
        // (at most 68 bytes).
        if unsafe { nt::RtlValidSid(sid_ptr) } == 0 {
            return Err(nt::Error::UNSUCCESSFUL);
        }
        let mut name_size = u32::from(self.name.max);
        let mut domain_size = u32::from(self.domain.max);
        let first = self.call_lookup(sid_ptr, &mut name_size, &mut domain_size);
        if first != Err(nt::Error::BUFFER_TOO_SMALL) {
            return first;
        }
        let (Ok(name_size16), Ok(domain_size16)) =
            (u16::try_from(name_size), u16::try_from(domain_size))
        else {
            // A UNICODE_STRING cannot describe such a buffer.
            return Err(nt::Error::BUFFER_TOO_SMALL);
        };
        if name_size16 > self.name.max {
            self.name.grow(name_size16)?;
        }
        if domain_size16 > self.domain.max {
            self.domain.grow(domain_size16)?;
        }
        self.call_lookup(sid_ptr, &mut name_size, &mut domain_size)
    }

    /// One `SecLookupAccountSid` into the current buffers; takes the
    /// lengths it set on success.
    fn call_lookup(
        &mut self,
        sid: *mut c_void,
        name_size: &mut u32,
        domain_size: &mut u32,
    ) -> NtResult {
        let mut name = self.name.unicode(&mut self.name_inline);
        let mut domain = self.domain.unicode(&mut self.domain_inline);
        let mut name_use = 0u32;
        // SAFETY: the SID is valid (checked by the caller); each
        // UNICODE_STRING describes a live buffer of MaximumLength bytes
        // (or none), and the sizes passed are those MaximumLengths (or
        // what the previous call reported, which the buffers were grown
        // to); every other pointer is to a live local. PASSIVE_LEVEL
        // (notify routine, or a test run at required_irql PASSIVE).
        let status = unsafe {
            nt::SecLookupAccountSid(
                sid,
                name_size,
                &mut name,
                domain_size,
                &mut domain,
                &mut name_use,
            )
        };
        nt::check(status).inspect_err(|e| {
            // Too small is the expected first answer for a long account.
            if *e != nt::Error::BUFFER_TOO_SMALL {
                trace::api_failure(trace::keyword::PROCESS, c"SecLookupAccountSid", e.status());
            }
        })?;
        self.name.set_len(name.Length);
        self.domain.set_len(domain.Length);
        Ok(())
    }
}

/// The driver's private state of one process event (after the context).
///
/// # Invariants
/// `image_path` points to `image_path_len` bytes valid while the event is
/// (the kernel's string during the notify call, or a test run's
/// buffer), or is null
/// with length 0. `account` is null or points to storage that outlives
/// the event and that only the event's helpers use.
struct EventState {
    image_path: *const u8,
    image_path_len: usize,
    /// Where the account cache is made on first use (only the account
    /// helpers need it, and making it zeroes its inline buffers, over
    /// 1 KB); null for an event without an account (a DELETE: the helpers
    /// answer ENOENT).
    account: *const AccountStorage,
}

/// Where an event's account cache is made: owned by whoever made the
/// event (the notify routine's frame for a CREATE, a test run's pool
/// block), outside the event, so that an event without an account (a
/// DELETE) neither initializes nor drops one.
type AccountStorage = UnsafeCell<Option<AccountCache>>;

/// The account of an event that has none (every helper: ENOENT).
static MISSING: AccountCache = AccountCache {
    state: AccountState::Missing,
    name: AccountString::NONE,
    domain: AccountString::NONE,
    name_inline: [0; ACCOUNT_INLINE_UNITS],
    domain_inline: [0; ACCOUNT_INLINE_UNITS],
};

/// A process event as the core receives it.
type ProcessContext = ProgramContext<process_md_t, EventState>;

/// A test run: the event, then what it owns.
type TestRun = TestRunContext<process_md_t, EventState, TestRunOwned>;

/// What a test run owns besides the event: the strings its packet and
/// `image_path` point into, and what `ctx_out` reports about its input.
struct TestRunOwned {
    command_line: Vec<u8>,
    image_path: Vec<u8>,
    /// `MaximumLength` of the command line and the image path as given
    /// (0 for an empty string, as 0.7.0 reports it).
    command_line_max: u16,
    image_path_max: u16,
    /// `account_lookup_done` as given.
    lookup_done_in: u8,
    /// The event's account cache.
    account: AccountStorage,
}

fn new_event(md: process_md_t, account: *const AccountStorage) -> ProcessContext {
    ProgramContext::new(
        md,
        EventState {
            image_path: ptr::null(),
            image_path_len: 0,
            account,
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

    /// The account cache, resolved on first use ([`MISSING`] for an event
    /// without an account). Helpers of one event run on the thread that
    /// raised it, one at a time, so the slot is never shared between
    /// threads.
    fn account(&self, md: &process_md_t) -> &AccountCache {
        if self.account.is_null() {
            return &MISSING;
        }
        // SAFETY: live storage only this event's helpers use (type
        // invariant).
        let storage = unsafe { &*self.account };
        // SAFETY: single-threaded (see above), and no other reference to
        // the cache is live; the mutable borrow ends before the shared one
        // is returned.
        let cache = unsafe { &mut *storage.get() }.get_or_insert_with(AccountCache::new);
        if cache.state == AccountState::Unresolved {
            cache.state = cache.resolve(md);
        }
        cache
    }
}

fn utf16_bytes(units: &[u16]) -> &[u8] {
    // SAFETY: any u16 slice is a valid byte slice of twice the length.
    unsafe { core::slice::from_raw_parts(units.as_ptr().cast(), units.len() * 2) }
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
        // A token's user SID is one the kernel made, valid (not checked
        // with RtlValidSid as 0.7.0 does: one kernel call per event that
        // cannot fail). What matters is checked anyway: RtlCopySid copies
        // only a SID whose length (from its sub-authority count) fits the
        // 68 bytes, and the account helpers validate the copy before
        // looking it up.
        if !sid.is_null() {
            // SAFETY: the SID lives in the TOKEN_USER block; destination
            // is our 68-byte array, its size passed; RtlCopySid fails
            // (copying nothing) when the SID is longer.
            let copied = unsafe {
                nt::RtlCopySid(
                    TOKEN_SID_CAPACITY as u32,
                    md.token_sid.as_mut_ptr().cast(),
                    sid,
                )
            };
            if nt::check(copied).is_ok() {
                // What RtlLengthSid computes, read from our copy (one
                // kernel call fewer per event): the 8-byte header
                // (revision, count, authority) and 4 bytes per
                // sub-authority, the count being byte 1.
                let len = 8 + 4 * usize::from(md.token_sid[1]);
                if len <= TOKEN_SID_CAPACITY {
                    md.token_sid_size = len as u32;
                }
            }
        }
        // SAFETY: the block SeQueryInformationToken allocated.
        unsafe { nt::ExFreePool(info) };
    }
    // SAFETY: releases the reference taken above.
    unsafe { nt::PsDereferencePrimaryToken(token) };
}

/// A process exit (the notify routine with no CreateInfo).
///
/// # Safety
/// `process` is the exiting process the kernel passed, valid for the call.
#[inline(always)]
unsafe fn process_exit(process: PEPROCESS, process_id: HANDLE, creation_time: u64) {
    let hook = HOOK.provider();
    // Made zeroed in place, then the fields set: the compiler zeroes the
    // header, the context and the private state together with aligned
    // 16-byte stores (fewer instructions than writing each field once,
    // whose sizes and offsets do not match such stores). No account:
    // nothing to make, nothing to drop.
    let mut event = new_event(process_md_t::zeroed(), ptr::null());
    let md = &mut event.context;
    md.process_id = process_id as u64;
    md.creation_time = creation_time;
    md.operation = PROCESS_OPERATION_DELETE;
    // SAFETY: on exit the routine runs in the exiting process, whose exit
    // time PsGetProcessExitTime reads.
    md.exit_time = unsafe { nt::PsGetProcessExitTime() } as u64;
    // SAFETY: `process` is valid for the call.
    md.process_exit_code = unsafe { nt::PsGetProcessExitStatus(process) } as u32;
    // An exit cannot be refused: results are ignored, and the programs
    // run are counted only for a session that wants them.
    if let Some(run) = hook.invoke_ignoring_results(&mut event) {
        trace::hook_event(
            c"process",
            PROCESS_OPERATION_DELETE,
            process_id as u64,
            run,
            0,
        );
    }
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
    // SAFETY: `process` is valid for the call.
    let creation_time = unsafe { nt::PsGetProcessCreateTimeQuadPart(process) } as u64;
    if info.is_null() {
        // SAFETY: as for this function.
        unsafe { process_exit(process, process_id, creation_time) };
        return;
    }
    // SAFETY: non-null CreateInfo is valid for the call.
    let info = unsafe { &mut *info };
    // SAFETY: the kernel's strings are valid for the notify call, which
    // outlives the event.
    let command = unsafe { Packet::of_unicode(info.CommandLine) };
    // Made zeroed in place, then the fields set (as for DELETE).
    let account = AccountStorage::new(None);
    let mut event = new_event(process_md_t::zeroed(), &account);
    let md = &mut event.context;
    md.command_start = command.start;
    md.command_end = command.end;
    md.process_id = process_id as u64;
    md.parent_process_id = info.ParentProcessId as u64;
    md.creating_process_id = info.CreatingThreadId.UniqueProcess as u64;
    md.creating_thread_id = info.CreatingThreadId.UniqueThread as u64;
    md.creation_time = creation_time;
    md.operation = PROCESS_OPERATION_CREATE;
    read_token_sid(process, &mut event.context);
    // SAFETY: as above.
    if let Some(image) = unsafe { unicode_bytes(info.ImageFileName) } {
        // INVARIANT: the kernel's string outlives the event.
        event.private.image_path = image.as_ptr();
        event.private.image_path_len = image.len();
    }
    // A negative result denies the creation: the status is the verdict.
    let denies = |result: u32| (result as i32) < 0;
    // As for DELETE: counted only for a session that wants the count.
    if trace::hook_events_enabled() {
        let (mut run, mut denied) = (0u32, 0i32);
        hook.invoke(&mut event, |result| {
            run += 1;
            if denies(*result) {
                denied = *result as i32;
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        if denied < 0 {
            info.CreationStatus = denied;
        }
        trace::hook_event(
            c"process",
            PROCESS_OPERATION_CREATE,
            process_id as u64,
            run,
            denied,
        );
    } else if let Some(verdict) = hook.invoke_until(&mut event, denies) {
        info.CreationStatus = verdict as i32;
    }
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

/// `context_create`: `ctx_in` is a [`process_test_run_context_t`],
/// `data_in` its four strings (see [`parse_test_run`]).
///
/// # Safety
/// Called by the core with each pointer null or valid for its size, and
/// `context` writable.
unsafe extern "system" fn context_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    // SAFETY: forwarded contract.
    let buffers = match unsafe {
        test_run_buffers(data_in, data_size_in, context_in, context_size_in, context)
    } {
        Ok(buffers) => buffers,
        Err(e) => return e.code(),
    };
    let parsed = match parse_test_run(buffers.context, buffers.data) {
        Ok(parsed) => parsed,
        Err(e) => {
            let result = EbpfError::INVALID_ARGUMENT.code();
            ebpf_ext::trace::test_run_refused(c"process", e.reason(), result);
            return result;
        }
    };
    into_ebpf_result(create_test_run(&parsed).map(|run| {
        // SAFETY: checked writable by test_run_buffers.
        unsafe { *context = TestRun::into_raw(run) };
    }))
}

/// A copy of `bytes` in pool.
fn pool_copy(bytes: &[u8]) -> EbpfResult<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.len())
        .map_err(|_| EbpfError::NO_MEMORY)?;
    v.extend_from_slice(bytes);
    Ok(v)
}

/// A given account string in the cache: in its inline array when its
/// `MaximumLength` fits there, else in a pool buffer of that size; an
/// empty one has no buffer (`MaximumLength` 0), as in 0.7.0.
fn given_account(
    s: &[u8],
    d: TestRunString,
    inline: &mut [u16; ACCOUNT_INLINE_UNITS],
) -> EbpfResult<AccountString> {
    if s.is_empty() {
        return Ok(AccountString::NONE);
    }
    let mut string = AccountString::NONE;
    if usize::from(d.maximum_length) > ACCOUNT_INLINE_UNITS * 2 {
        string
            .grow(d.maximum_length)
            .map_err(|_| EbpfError::NO_MEMORY)?;
    } else {
        // INVARIANT: max fits the inline array.
        string.max = d.maximum_length;
    }
    let units = s.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]]));
    let storage: &mut [u16] = match &mut string.pool {
        Some(p) => p,
        None => inline,
    };
    for (dst, unit) in storage.iter_mut().zip(units) {
        *dst = unit;
    }
    // INVARIANT: s.len() == d.length <= d.maximum_length (parse_test_run).
    string.len = d.length;
    Ok(string)
}

/// A test-run context from checked input, in pool.
fn create_test_run(input: &TestRunInput<'_>) -> EbpfResult<PoolBox<TestRun>> {
    let c = &input.context;
    let [command, image, name, domain] = input.strings;
    let owned = TestRunOwned {
        command_line: pool_copy(command)?,
        image_path: pool_copy(image)?,
        command_line_max: if command.is_empty() {
            0
        } else {
            c.command_line.maximum_length
        },
        image_path_max: if image.is_empty() {
            0
        } else {
            c.image_file_name.maximum_length
        },
        lookup_done_in: c.account_lookup_done,
        account: AccountStorage::new(None),
    };
    let run = TestRun {
        event: new_event(c.process_md, ptr::null()),
        owned,
    };
    let mut run = PoolBox::try_new(run).map_err(|_| EbpfError::NO_MEMORY)?;
    let TestRun { event, owned } = &mut *run;
    let ProgramContext {
        context, private, ..
    } = event;
    let packet = Packet::of(&owned.command_line);
    context.command_start = packet.start;
    context.command_end = packet.end;
    // INVARIANT: points into `owned.image_path`, whose heap buffer lives as
    // long as the context and is not changed again.
    private.image_path = owned.image_path.as_ptr();
    private.image_path_len = owned.image_path.len();
    let cache = owned.account.get_mut().insert(AccountCache::new());
    cache.name = given_account(name, c.account_name, &mut cache.name_inline)?;
    cache.domain = given_account(domain, c.account_domain, &mut cache.domain_inline)?;
    if c.account_lookup_done != 0 {
        // Final as given: both strings, or none (0.7.0 needs both buffers).
        cache.state = if cache.name.max != 0 && cache.domain.max != 0 {
            AccountState::Resolved
        } else {
            AccountState::Missing
        };
    }
    // INVARIANT: the run's own storage, in the same pool block: it lives
    // as long as the event (taken last: no `&mut` to it is made while the
    // event uses it, until the run is taken back).
    private.account = &owned.account;
    Ok(run)
}

/// The cache of a test run that has none (`context_create` always makes
/// one, so this is never reported).
static UNRESOLVED: AccountCache = AccountCache::new();

/// The process hook's test run as [`test_run_context_destroy`] takes it
/// back: `ctx_out` is a whole [`process_test_run_context_t`] (or nothing),
/// `data_out` all four strings (or nothing).
enum ProcessTestRun {}

// SAFETY: every byte of process_test_run_context_t is a field (its padding
// is explicit: `reserved`).
unsafe impl TestRunOutput for ProcessTestRun {
    type Context = process_md_t;
    type Private = EventState;
    type Owned = TestRunOwned;
    type ContextOut = process_test_run_context_t;

    fn output(run: &mut TestRun) -> (process_test_run_context_t, impl AsRef<[&[u8]]>) {
        let account = run.owned.account.get_mut().as_ref().unwrap_or(&UNRESOLVED);
        let strings = [
            &run.owned.command_line[..],
            &run.owned.image_path[..],
            account.name(),
            account.domain(),
        ];
        let string = |s: &[u8], max: u16| TestRunString {
            length: s.len() as u16,
            maximum_length: max,
            reserved: 0,
            buffer: 0,
        };
        let mut md = run.event.context;
        // Kernel addresses mean nothing to the caller.
        md.command_start = ptr::null_mut();
        md.command_end = ptr::null_mut();
        let looked_up = run.owned.lookup_done_in == 0 && account.state != AccountState::Unresolved;
        let out = process_test_run_context_t {
            context_header: [0; 8],
            process_md: md,
            process: 0,
            create_info: 0,
            command_line: string(strings[0], run.owned.command_line_max),
            image_file_name: string(strings[1], run.owned.image_path_max),
            account_name: string(strings[2], account.name.max),
            account_domain: string(strings[3], account.domain.max),
            account_lookup_done: if looked_up {
                1
            } else {
                run.owned.lookup_done_in
            },
            reserved: [0; 7],
        };
        (out, strings)
    }
}
