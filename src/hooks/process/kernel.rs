//! The process hook in the kernel: program information, hook provider,
//! process notify routine, helpers, test-run contexts.

use super::*;
use crate::ebpf::abi::*;
use crate::ebpf::hook::{Flow, HookProvider, KernelHook};
use crate::nmr::{ProviderRegistration, StatelessProvider};
use crate::nt::{self, HANDLE, NTSTATUS, PEPROCESS, UNICODE_STRING};
use crate::pool::PoolBox;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;

// ---------------------------------------------------------------------------
// Program information (what the verifier and the core learn about the type).

static CONTEXT_DESCRIPTOR: ebpf_context_descriptor_t = ebpf_context_descriptor_t {
    size: size_of::<process_md_t>() as i32,
    data: offset_of!(process_md_t, command_start) as i32,
    end: offset_of!(process_md_t, command_end) as i32,
    meta: -1,
};

static TYPE_DESCRIPTOR: Static<ebpf_program_type_descriptor_t> =
    Static(ebpf_program_type_descriptor_t {
        header: ebpf_extension_header_t::v1(
            EBPF_PROGRAM_TYPE_DESCRIPTOR_SIZE,
            size_of::<ebpf_program_type_descriptor_t>(),
        ),
        name: c_str(c"process"),
        context_descriptor: &CONTEXT_DESCRIPTOR,
        program_type: EBPF_PROGRAM_TYPE_PROCESS,
        bpf_prog_type: BPF_PROG_TYPE_PROCESS,
        is_privileged: 0,
    });

const fn helper_prototype(
    helper_id: u32,
    name: &'static core::ffi::CStr,
) -> ebpf_helper_function_prototype_t {
    ebpf_helper_function_prototype_t {
        header: ebpf_extension_header_t::v1(
            EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE,
            size_of::<ebpf_helper_function_prototype_t>(),
        ),
        helper_id,
        name: c_str(name),
        return_type: EBPF_RETURN_TYPE_INTEGER,
        arguments: [
            EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
            EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
            EBPF_ARGUMENT_TYPE_CONST_SIZE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
        ],
        flags: 0,
        implicit_context: false,
    }
}

static HELPER_PROTOTYPES: Static<[ebpf_helper_function_prototype_t; 3]> = Static([
    helper_prototype(
        BPF_FUNC_PROCESS_GET_IMAGE_PATH,
        c"bpf_process_get_image_path",
    ),
    helper_prototype(
        BPF_FUNC_PROCESS_GET_ACCOUNT_NAME,
        c"bpf_process_get_account_name",
    ),
    helper_prototype(
        BPF_FUNC_PROCESS_GET_ACCOUNT_DOMAIN,
        c"bpf_process_get_account_domain",
    ),
]);

static PROGRAM_INFO: Static<ebpf_program_info_t> = Static(ebpf_program_info_t {
    header: ebpf_extension_header_t::v1(
        EBPF_PROGRAM_INFORMATION_SIZE,
        size_of::<ebpf_program_info_t>(),
    ),
    program_type_descriptor: &TYPE_DESCRIPTOR.0,
    count_of_program_type_specific_helpers: 3,
    program_type_specific_helper_prototype: &HELPER_PROTOTYPES.0 as *const _ as *const _,
    count_of_global_helpers: 0,
    global_helper_prototype: ptr::null(),
});

type Helper = unsafe extern "system" fn(*mut process_md_t, *mut u8, u32, u64, u64) -> i64;

/// Helper addresses, in the order of the prototypes.
static HELPER_ADDRESSES: Static<[Helper; 3]> =
    Static([get_image_path, get_account_name, get_account_domain]);

static HELPER_FUNCTION_ADDRESSES: Static<ebpf_helper_function_addresses_t> =
    Static(ebpf_helper_function_addresses_t {
        header: ebpf_extension_header_t::v1(
            EBPF_HELPER_FUNCTION_ADDRESSES_SIZE,
            size_of::<ebpf_helper_function_addresses_t>(),
        ),
        helper_function_count: 3,
        helper_function_address: &HELPER_ADDRESSES.0 as *const _ as *const u64,
    });

static PROGRAM_DATA: Static<ebpf_program_data_t> = Static(ebpf_program_data_t {
    header: ebpf_extension_header_t::v1(EBPF_PROGRAM_DATA_SIZE, size_of::<ebpf_program_data_t>()),
    program_info: &PROGRAM_INFO.0,
    program_type_specific_helper_function_addresses: &HELPER_FUNCTION_ADDRESSES.0,
    global_helper_function_addresses: ptr::null(),
    context_create: Some(context_create),
    context_destroy: Some(context_destroy),
    required_irql: nt::PASSIVE_LEVEL,
    capabilities: 0,
});

static ATTACH_PROVIDER_DATA: Static<ebpf_attach_provider_data_t> =
    Static(ebpf_attach_provider_data_t {
        header: ebpf_extension_header_t::v1(
            EBPF_ATTACH_PROVIDER_DATA_SIZE,
            size_of::<ebpf_attach_provider_data_t>(),
        ),
        supported_program_type: EBPF_PROGRAM_TYPE_PROCESS,
        bpf_attach_type: BPF_ATTACH_TYPE_PROCESS,
        link_type: 0,
    });

static PROGRAM_INFO_NPI: nt::GUID = EBPF_PROGRAM_INFO_EXTENSION_IID;
static HOOK_NPI: nt::GUID = EBPF_HOOK_EXTENSION_IID;
static PROGRAM_TYPE_MODULE: nt::NPI_MODULEID = nt::NPI_MODULEID::guid(EBPF_PROGRAM_TYPE_PROCESS);
static ATTACH_TYPE_MODULE: nt::NPI_MODULEID = nt::NPI_MODULEID::guid(EBPF_ATTACH_TYPE_PROCESS);

static PROGRAM_INFO_PROVIDER: ProviderRegistration<StatelessProvider> = ProviderRegistration::new(
    &PROGRAM_INFO_NPI,
    &PROGRAM_TYPE_MODULE,
    &PROGRAM_DATA.0 as *const ebpf_program_data_t as *const c_void,
    StatelessProvider,
);

static HOOK_PROVIDER: ProviderRegistration<HookProvider> = ProviderRegistration::new(
    &HOOK_NPI,
    &ATTACH_TYPE_MODULE,
    &ATTACH_PROVIDER_DATA.0 as *const ebpf_attach_provider_data_t as *const c_void,
    HookProvider::new(&NOTIFY, || HOOK_PROVIDER.provider().unregister_if_idle()),
);

/// The process notify routine as a [`KernelHook`].
struct ProcessNotify;
static NOTIFY: ProcessNotify = ProcessNotify;

impl KernelHook for ProcessNotify {
    fn register(&self) -> NTSTATUS {
        // SAFETY: registers a routine of this image (linked with
        // /INTEGRITYCHECK), at PASSIVE_LEVEL (attach).
        unsafe { nt::PsSetCreateProcessNotifyRoutineEx(process_notify, 0) }
    }

    fn unregister(&self) {
        // SAFETY: removes the routine registered above; returns after any
        // call in flight has finished.
        let status = unsafe { nt::PsSetCreateProcessNotifyRoutineEx(process_notify, 1) };
        if !nt::nt_success(status) {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "removing the process notify routine failed: {status:#x}"
            );
        }
    }
}

/// Registers the program-information provider, then the hook provider
/// (DriverEntry). On failure nothing stays registered or allocated.
///
/// # Safety
/// `driver` must be this driver's DRIVER_OBJECT.
pub unsafe fn load(driver: *mut c_void) -> NTSTATUS {
    let hook = HOOK_PROVIDER.provider();
    // SAFETY: forwarded contract.
    let status = unsafe { hook.init(driver) };
    if !nt::nt_success(status) {
        return status;
    }
    let status = PROGRAM_INFO_PROVIDER.register();
    if !nt::nt_success(status) {
        crate::dbg_log!(
            nt::DPFLTR_ERROR_LEVEL,
            "registering the process program type failed: {status:#x}"
        );
        hook.shutdown();
        return status;
    }
    let status = HOOK_PROVIDER.register();
    if !nt::nt_success(status) {
        crate::dbg_log!(
            nt::DPFLTR_ERROR_LEVEL,
            "registering the process hook failed: {status:#x}"
        );
        PROGRAM_INFO_PROVIDER.deregister();
        hook.shutdown();
        return status;
    }
    nt::STATUS_SUCCESS
}

/// Deregisters both providers, waiting for every client to detach, then
/// removes the notify routine if it is still registered (unload).
pub fn unload() {
    HOOK_PROVIDER.deregister();
    HOOK_PROVIDER.provider().shutdown();
    PROGRAM_INFO_PROVIDER.deregister();
}

// ---------------------------------------------------------------------------
// Events.

/// Account name and domain, resolved at most once per event.
struct AccountCache {
    /// 0: not resolved yet; 1: resolved; 2: no SID or lookup failed.
    state: u8,
    name_len: usize,
    domain_len: usize,
    name: [u16; ACCOUNT_CAPACITY],
    domain: [u16; ACCOUNT_CAPACITY],
}

const ACCOUNT_UNRESOLVED: u8 = 0;
const ACCOUNT_RESOLVED: u8 = 1;
const ACCOUNT_MISSING: u8 = 2;

/// A process event: the context the programs see, its core-owned header in
/// front of it, and the driver's private per-event state after it.
#[repr(C)]
struct ProcessEvent {
    header: ebpf_context_header_t,
    md: process_md_t,
    image_path: *const u8,
    image_path_len: usize,
    account: UnsafeCell<AccountCache>,
}

const _: () = assert!(offset_of!(ProcessEvent, md) == size_of::<ebpf_context_header_t>());

impl ProcessEvent {
    const fn new() -> ProcessEvent {
        ProcessEvent {
            header: ebpf_context_header_t {
                context_header: [0; 8],
            },
            md: process_md_t::zeroed(),
            image_path: ptr::null(),
            image_path_len: 0,
            account: UnsafeCell::new(AccountCache {
                state: ACCOUNT_UNRESOLVED,
                name_len: 0,
                domain_len: 0,
                name: [0; ACCOUNT_CAPACITY],
                domain: [0; ACCOUNT_CAPACITY],
            }),
        }
    }

    /// The event a program context belongs to.
    ///
    /// # Safety
    /// `md` must be the `md` field of a live ProcessEvent (every context
    /// this driver hands to the core is).
    unsafe fn from_context<'a>(md: *mut process_md_t) -> &'a ProcessEvent {
        // SAFETY: md is at a fixed offset inside its ProcessEvent.
        unsafe { &*((md as *mut u8).sub(offset_of!(ProcessEvent, md)) as *const ProcessEvent) }
    }

    fn image_path(&self) -> &[u8] {
        if self.image_path.is_null() {
            &[]
        } else {
            // SAFETY: points to the event's image name (kernel string valid
            // during the notify call, or test-run data owned by the
            // context), image_path_len bytes.
            unsafe { core::slice::from_raw_parts(self.image_path, self.image_path_len) }
        }
    }

    /// The account cache, resolved on first use. Helpers of one event run
    /// on the thread that raised it, one at a time, so the cell is never
    /// shared between threads.
    fn account(&self) -> &AccountCache {
        // SAFETY: see above: single-threaded per event; the mutable borrow
        // ends before the shared one is returned.
        unsafe {
            let cache = &mut *self.account.get();
            if cache.state == ACCOUNT_UNRESOLVED {
                cache.state = resolve_account(&self.md, cache);
            }
            &*self.account.get()
        }
    }
}

fn utf16_bytes(units: &[u16]) -> &[u8] {
    // SAFETY: any u16 slice is a valid byte slice of twice the length.
    unsafe { core::slice::from_raw_parts(units.as_ptr().cast(), units.len() * 2) }
}

fn resolve_account(md: &process_md_t, cache: &mut AccountCache) -> u8 {
    let sid_len = md.token_sid_size as usize;
    if sid_len == 0 || sid_len > TOKEN_SID_CAPACITY {
        return ACCOUNT_MISSING;
    }
    let mut sid = md.token_sid;
    let sid_ptr = sid.as_mut_ptr().cast::<c_void>();
    // SAFETY: sid_ptr points to sid_len bytes we own.
    if unsafe { nt::RtlValidSid(sid_ptr) } == 0 {
        return ACCOUNT_MISSING;
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
    if !nt::nt_success(status) {
        return ACCOUNT_MISSING;
    }
    cache.name_len = (name.Length as usize).min(ACCOUNT_CAPACITY * 2);
    cache.domain_len = (domain.Length as usize).min(ACCOUNT_CAPACITY * 2);
    ACCOUNT_RESOLVED
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
    if nt::nt_success(status) && !info.is_null() {
        // SAFETY: TOKEN_USER starts with SID_AND_ATTRIBUTES.
        let sid = unsafe { (*(info as *const nt::SID_AND_ATTRIBUTES)).Sid };
        // SAFETY: the SID lives in the TOKEN_USER block.
        if !sid.is_null() && unsafe { nt::RtlValidSid(sid) } != 0 {
            // SAFETY: as above.
            let len = unsafe { nt::RtlLengthSid(sid) } as usize;
            // SAFETY: destination is our 68-byte array, its size passed.
            if len <= TOKEN_SID_CAPACITY
                && nt::nt_success(unsafe {
                    nt::RtlCopySid(
                        TOKEN_SID_CAPACITY as u32,
                        md.token_sid.as_mut_ptr().cast(),
                        sid,
                    )
                })
            {
                md.token_sid_size = len as u32;
            }
        }
        // SAFETY: the block SeQueryInformationToken allocated.
        unsafe { nt::ExFreePool(info) };
    }
    // SAFETY: releases the reference taken above.
    unsafe { nt::PsDereferencePrimaryToken(token) };
}

fn unicode_bytes(s: *const UNICODE_STRING) -> (*const u8, usize) {
    if s.is_null() {
        return (ptr::null(), 0);
    }
    // SAFETY: the kernel's UNICODE_STRINGs in PS_CREATE_NOTIFY_INFO are
    // valid for the duration of the notify call.
    let s = unsafe { &*s };
    if s.Buffer.is_null() {
        (ptr::null(), 0)
    } else {
        (s.Buffer as *const u8, s.Length as usize)
    }
}

unsafe extern "system" fn process_notify(
    process: PEPROCESS,
    process_id: HANDLE,
    info: *mut nt::PS_CREATE_NOTIFY_INFO,
) {
    let hook = HOOK_PROVIDER.provider();
    if !hook.has_clients() {
        return;
    }
    let mut event = ProcessEvent::new();
    let md = &mut event.md;
    md.process_id = process_id as u64;
    // SAFETY: `process` is valid for the call.
    md.creation_time = unsafe { nt::PsGetProcessCreateTimeQuadPart(process) } as u64;
    if info.is_null() {
        md.operation = PROCESS_OPERATION_DELETE;
        // SAFETY: on exit the routine runs in the exiting process, whose
        // exit time PsGetProcessExitTime reads; `process` is valid.
        unsafe {
            md.exit_time = nt::PsGetProcessExitTime() as u64;
            md.process_exit_code = nt::PsGetProcessExitStatus(process) as u32;
        }
        hook.invoke(ptr::addr_of_mut!(event.md).cast(), |_| Flow::Continue);
        return;
    }
    // SAFETY: non-null CreateInfo is valid for the call.
    let info = unsafe { &mut *info };
    md.operation = PROCESS_OPERATION_CREATE;
    md.parent_process_id = info.ParentProcessId as u64;
    md.creating_process_id = info.CreatingThreadId.UniqueProcess as u64;
    md.creating_thread_id = info.CreatingThreadId.UniqueThread as u64;
    let (cmd, cmd_len) = unicode_bytes(info.CommandLine);
    md.command_start = cmd as *mut u8;
    md.command_end = cmd.wrapping_add(cmd_len) as *mut u8;
    read_token_sid(process, md);
    let (image, image_len) = unicode_bytes(info.ImageFileName);
    event.image_path = image;
    event.image_path_len = image_len;
    let status = &mut info.CreationStatus;
    hook.invoke(ptr::addr_of_mut!(event.md).cast(), |result| {
        let verdict = result as i32;
        if verdict < 0 {
            *status = verdict;
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
}

// ---------------------------------------------------------------------------
// Helpers (called by programs with the context the driver passed).

/// # Safety
/// Called by the eBPF core with `buf` writable for `len` bytes (the
/// verifier's PTR_TO_WRITABLE_MEM / CONST_SIZE guarantee).
unsafe fn out_buffer<'a>(buf: *mut u8, len: u32) -> &'a mut [u8] {
    if buf.is_null() || len == 0 {
        &mut []
    } else {
        // SAFETY: see the function's contract.
        unsafe { core::slice::from_raw_parts_mut(buf, len as usize) }
    }
}

/// `bpf_process_get_image_path`: the image file name, UTF-16LE, no NUL.
/// Returns the bytes copied; 0 on DELETE (no image name); -EINVAL with
/// nothing written when `len` is too small.
unsafe extern "system" fn get_image_path(
    ctx: *mut process_md_t,
    buf: *mut u8,
    len: u32,
    _: u64,
    _: u64,
) -> i64 {
    // SAFETY: ctx is a context this driver created (helper contract).
    let event = unsafe { ProcessEvent::from_context(ctx) };
    // SAFETY: helper contract on buf/len.
    copy_whole(event.image_path(), unsafe { out_buffer(buf, len) })
}

/// The account helpers: resolve the event's account once, copy one of its
/// strings, or -ENOENT when there is no SID or it does not resolve.
///
/// # Safety
/// As for every helper: `ctx` is a context this driver created and `buf`
/// is writable for `len` bytes.
unsafe fn copy_account_string(
    ctx: *mut process_md_t,
    buf: *mut u8,
    len: u32,
    pick: fn(&AccountCache) -> &[u8],
) -> i64 {
    // SAFETY: see the function's contract.
    let account = unsafe { ProcessEvent::from_context(ctx) }.account();
    if account.state != ACCOUNT_RESOLVED {
        return -ENOENT;
    }
    // SAFETY: see the function's contract.
    copy_whole(pick(account), unsafe { out_buffer(buf, len) })
}

/// `bpf_process_get_account_name`.
unsafe extern "system" fn get_account_name(
    ctx: *mut process_md_t,
    buf: *mut u8,
    len: u32,
    _: u64,
    _: u64,
) -> i64 {
    // SAFETY: the helper contract, forwarded.
    unsafe { copy_account_string(ctx, buf, len, |a| &utf16_bytes(&a.name)[..a.name_len]) }
}

/// `bpf_process_get_account_domain`.
unsafe extern "system" fn get_account_domain(
    ctx: *mut process_md_t,
    buf: *mut u8,
    len: u32,
    _: u64,
    _: u64,
) -> i64 {
    // SAFETY: the helper contract, forwarded.
    unsafe { copy_account_string(ctx, buf, len, |a| &utf16_bytes(&a.domain)[..a.domain_len]) }
}

// ---------------------------------------------------------------------------
// bpf_prog_test_run.

/// A test-run context: the event and the strings it points into.
#[repr(C)]
struct TestRunContext {
    event: ProcessEvent,
    strings: Vec<u8>,
    command_len: usize,
}

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
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: the caller guarantees context is writable.
    unsafe { *context = ptr::null_mut() };
    if (data_in.is_null() && data_size_in != 0) || (context_in.is_null() && context_size_in != 0) {
        return EBPF_INVALID_ARGUMENT;
    }
    let data: &[u8] = if data_size_in == 0 {
        &[]
    } else {
        // SAFETY: non-null, valid for data_size_in bytes (caller's contract).
        unsafe { core::slice::from_raw_parts(data_in, data_size_in) }
    };
    let strings = match parse_test_data(data) {
        Ok(s) => s,
        Err(_) => return EBPF_INVALID_ARGUMENT,
    };
    let mut md = process_md_t::zeroed();
    if !context_in.is_null() {
        if context_size_in < size_of::<process_md_t>() {
            return EBPF_INVALID_ARGUMENT;
        }
        // SAFETY: at least size_of::<process_md_t>() readable bytes; read
        // unaligned since the caller's buffer has no alignment guarantee.
        md = unsafe { (context_in as *const process_md_t).read_unaligned() };
    }
    if md.token_sid_size as usize > TOKEN_SID_CAPACITY
        || (md.operation != PROCESS_OPERATION_CREATE && md.operation != PROCESS_OPERATION_DELETE)
    {
        return EBPF_INVALID_ARGUMENT;
    }
    let mut owned = Vec::new();
    let payload = strings.command_line.len() + strings.image_path.len();
    if owned.try_reserve_exact(payload).is_err() {
        return EBPF_NO_MEMORY;
    }
    owned.extend_from_slice(strings.command_line);
    owned.extend_from_slice(strings.image_path);
    let run = TestRunContext {
        event: ProcessEvent::new(),
        strings: owned,
        command_len: strings.command_line.len(),
    };
    let mut run = match PoolBox::try_new(run) {
        Ok(r) => r,
        Err(_) => return EBPF_NO_MEMORY,
    };
    let base = run.strings.as_mut_ptr();
    let command_len = run.command_len;
    let ev = &mut run.event;
    ev.md = md;
    ev.md.command_start = base;
    ev.md.command_end = base.wrapping_add(command_len);
    ev.image_path = base.wrapping_add(command_len);
    ev.image_path_len = strings.image_path.len();
    if !strings.account_name.is_empty() || !strings.account_domain.is_empty() {
        let cache = ev.account.get_mut();
        for (src, dst, len) in [
            (strings.account_name, &mut cache.name, &mut cache.name_len),
            (
                strings.account_domain,
                &mut cache.domain,
                &mut cache.domain_len,
            ),
        ] {
            for (i, pair) in src.chunks_exact(2).enumerate() {
                dst[i] = u16::from_le_bytes([pair[0], pair[1]]);
            }
            *len = src.len();
        }
        cache.state = ACCOUNT_RESOLVED;
    }
    let raw = PoolBox::into_raw(run);
    // SAFETY: raw is live; the core gets a pointer just after the header.
    unsafe { *context = ptr::addr_of_mut!((*raw).event.md).cast() };
    EBPF_SUCCESS
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
    let offset = offset_of!(TestRunContext, event) + offset_of!(ProcessEvent, md);
    // SAFETY: context is the md field of a TestRunContext we leaked in
    // context_create; ownership comes back here.
    let run = unsafe { PoolBox::from_raw((context as *mut u8).sub(offset) as *mut TestRunContext) };
    let ev = &run.event;
    if !context_size_out.is_null() {
        // SAFETY: caller's contract.
        let room = unsafe { *context_size_out };
        let mut md = ev.md;
        // Kernel addresses mean nothing to the caller.
        md.command_start = ptr::null_mut();
        md.command_end = ptr::null_mut();
        if !context_out.is_null() && room >= size_of::<process_md_t>() {
            // SAFETY: room for a whole process_md_t.
            unsafe {
                (context_out as *mut process_md_t).write_unaligned(md);
                *context_size_out = size_of::<process_md_t>();
            }
        } else {
            // SAFETY: caller's contract.
            unsafe { *context_size_out = 0 };
        }
    }
    if !data_size_out.is_null() {
        // SAFETY: ev.account is not borrowed elsewhere (the run is over).
        let account = unsafe { &*ev.account.get() };
        let resolved = account.state == ACCOUNT_RESOLVED;
        let strings = TestStrings {
            command_line: &run.strings[..run.command_len],
            image_path: ev.image_path(),
            account_name: if resolved {
                &utf16_bytes(&account.name)[..account.name_len]
            } else {
                &[]
            },
            account_domain: if resolved {
                &utf16_bytes(&account.domain)[..account.domain_len]
            } else {
                &[]
            },
        };
        let need = test_data_size(&strings);
        // SAFETY: caller's contract.
        let room = unsafe { *data_size_out };
        if !data_out.is_null() && room >= need {
            // SAFETY: room >= need bytes writable.
            let out = unsafe { core::slice::from_raw_parts_mut(data_out, need) };
            write_test_data(&strings, out);
            // SAFETY: caller's contract.
            unsafe { *data_size_out = need };
        } else {
            // SAFETY: caller's contract.
            unsafe { *data_size_out = 0 };
        }
    }
    drop(run);
}
