//! The eBPF core as an NMR client of an extension, the way ebpfcore.sys is.
//!
//! - [`LoadedProgram::load`] registers a program-information client for the
//!   program's type. Its ClientAttachProvider accepts only the provider whose
//!   ModuleId is that type, validates the provider's `ebpf_program_data_t`
//!   exactly as eBPF for Windows does ([`super::validate`]) and keeps a deep
//!   copy. Loading fails when no provider attached during registration, as
//!   in eBPF for Windows (the extension must be loaded first). On detach the
//!   core stops using the provider: later invocations fail with
//!   `EBPF_EXTENSION_FAILED_TO_LOAD`; a detach while a program runs is
//!   pending until it returns.
//! - [`LoadedProgram::attach`] creates a link: a hook client with a fresh
//!   ModuleId whose NPI-specific characteristics are an
//!   `ebpf_extension_data_t` (attach parameters, `prog_attach_flags`), and
//!   whose dispatch table is version 1 with invoke, batch begin, batch
//!   invoke and batch end. It attaches only to a provider whose attach type
//!   and `supported_program_type` match. [`Link::detach`] deregisters and
//!   waits.
//! - Invocation writes the core's slots of the 64-byte context header (the
//!   execution state and the context descriptor), checks that an extension
//!   that allocated the context in pool reserved the header, runs the program
//!   and stores its 32-bit result (0xFFFFFFFF, with EBPF_SUCCESS, when the
//!   program stopped on an error, as the real core does for interpreted
//!   programs). Batch misuse (invoke outside a batch, IRQL changed inside
//!   one, a batch never ended or still open when the provider releases the
//!   link) and a new invocation after the provider's detach began are
//!   recorded as violations.

use super::abi::*;
use super::program::{
    ContextDescriptor, ExecEnv, ExtensionHelper, KernelInfo, TestRunHooks, TestRunOutput,
};
use super::validate::{self, AttachRefusal, Finding, ProgramInfo};
use super::Program;
use crate::kernel::irql;
use crate::kernel::nmr::{
    self, MIT_GUID, NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE,
};
use crate::kernel::status::{
    self, NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS,
};
use crate::kernel::types::{GUID, HANDLE};
use crate::kernel::violation;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The 32-bit result of an invocation whose program stopped on an error:
/// eBPF for Windows' core returns EBPF_SUCCESS with the interpreter's -1
/// (`ubpf_exec` failing) for an interpreted program; the error itself is in
/// [`LoadedProgram::take_errors`].
pub const INTERPRETER_ERROR_RESULT: u32 = 0xFFFF_FFFF;

/// Why the core refused to load or attach.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("no program information provider for program type {0} is attached (is the extension loaded?)")]
    NoProgramInfoProvider(GUID),
    #[error("program {0} has no program type (its section is not in the section map)")]
    NoProgramType(String),
    #[error("no hook provider for attach type {attach_type} accepted the link ({detail})")]
    NoHookProvider { attach_type: GUID, detail: String },
    #[error("NMR refused the client: {0}")]
    Nmr(String),
    #[error("the extension of program type {0} detached")]
    ExtensionGone(GUID),
    #[error("the program type has no context_create/context_destroy: bpf_prog_test_run is not supported")]
    TestRunUnsupported,
    #[error("test run: {0}")]
    TestRun(#[from] super::TestRunError),
}

static NEXT_MODULE: AtomicU64 = AtomicU64::new(1);

/// A fresh module id, as the core makes one per client.
fn fresh_module_id() -> NPI_MODULEID {
    let n = NEXT_MODULE.fetch_add(1, Ordering::Relaxed);
    NPI_MODULEID {
        Length: std::mem::size_of::<NPI_MODULEID>() as u16,
        Type: MIT_GUID,
        Guid: GUID {
            data1: 0x6e74_7369, // "ntsi"
            data2: 0x6d00,
            data3: 0x4000,
            data4: n.to_be_bytes(),
        },
    }
}

/// A counter of calls into a provider's code with a detach that does not
/// wait: the last call out completes a pending detach.
#[derive(Default)]
struct Rundown {
    state: AtomicUsize,
}

impl Rundown {
    fn acquire(&self) -> bool {
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            if cur & 1 != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                cur,
                cur + 2,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// True when this release completes a pending detach.
    fn release(&self) -> bool {
        self.state.fetch_sub(2, Ordering::AcqRel) == 3
    }

    /// True when nothing is in flight (detach complete now).
    fn begin_detach(&self) -> bool {
        self.state.fetch_or(1, Ordering::AcqRel) & !1 == 0
    }

    fn reset(&self) {
        self.state.store(0, Ordering::Release);
    }
}

/// The program-information side of a loaded program.
struct ProgramState {
    program: Arc<Program>,
    program_type: GUID,
    npi_id: GUID,
    module_id: NPI_MODULEID,
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    handle: AtomicUsize,
    binding: AtomicUsize,
    info: RwLock<Option<Arc<ProviderCopy>>>,
    rundown: Rundown,
    refusals: Mutex<Vec<AttachRefusal>>,
    findings: Mutex<Vec<Finding>>,
    trace: Mutex<Vec<String>>,
    errors: Mutex<Vec<super::ProgramError>>,
    invocations: AtomicU64,
}

// SAFETY: the raw pointers in `characteristics` point into this same
// allocation (npi_id, module_id) and are only read, by NMR; every field that
// changes after construction is atomic or behind a lock.
unsafe impl Send for ProgramState {}
// SAFETY: as above.
unsafe impl Sync for ProgramState {}

/// What the core keeps of an attached program-information provider.
struct ProviderCopy {
    info: ProgramInfo,
    helpers: HashMap<u32, ExtensionHelper>,
    /// The context descriptor the core points header slot 1 at.
    descriptor: Box<ebpf_context_descriptor_t>,
}

/// A program loaded into the core, bound to its program-information
/// provider.
pub struct LoadedProgram {
    state: Arc<ProgramState>,
}

/// The core's view of the calling environment (pid/tid from the simulated
/// process table).
struct SimKernelInfo;

impl KernelInfo for SimKernelInfo {
    fn current_pid_tgid(&self) -> u64 {
        let (pid, tid) = crate::kernel::ps::current_ids();
        ((pid as u64) << 32) | (tid as u64 & 0xFFFF_FFFF)
    }

    fn current_logon_id(&self) -> u64 {
        crate::kernel::ps::current_logon_id()
    }
}

impl LoadedProgram {
    /// Loads `program` into the core: binds it to the program-information
    /// provider of its type. Fails when no such provider attaches.
    pub fn load(program: Arc<Program>) -> Result<LoadedProgram, CoreError> {
        let program_type = program
            .program_type
            .ok_or_else(|| CoreError::NoProgramType(program.name.clone()))?;
        let state = Arc::new(ProgramState {
            program,
            program_type,
            npi_id: EBPF_PROGRAM_INFO_EXTENSION_IID,
            module_id: fresh_module_id(),
            // Filled below, once the Arc gives the fields stable addresses.
            characteristics: empty_client_characteristics(),
            handle: AtomicUsize::new(0),
            binding: AtomicUsize::new(0),
            info: RwLock::new(None),
            rundown: Rundown::default(),
            refusals: Mutex::new(Vec::new()),
            findings: Mutex::new(Vec::new()),
            trace: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            invocations: AtomicU64::new(0),
        });
        let st = Arc::as_ptr(&state) as *mut ProgramState;
        // SAFETY: no other reference to the state is in use yet; the
        // characteristics point into the same Arc allocation, which lives
        // until after deregistration (LoadedProgram::drop).
        unsafe {
            (*st).characteristics = client_characteristics(
                &(*st).npi_id,
                &(*st).module_id,
                std::ptr::null(),
                pi_attach,
                pi_detach,
                None,
            );
        }
        // SAFETY: characteristics and context live in the Arc until drop,
        // which deregisters and waits first.
        let handle = unsafe { register_client(&state.characteristics, st.cast())? };
        state.handle.store(handle, Ordering::Release);
        let loaded = LoadedProgram { state };
        if loaded.state.info.read().unwrap().is_none() {
            return Err(CoreError::NoProgramInfoProvider(program_type));
        }
        Ok(loaded)
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.state.program
    }

    /// The copy of the provider's program information (None once detached).
    pub fn program_info(&self) -> Option<ProgramInfo> {
        self.state
            .info
            .read()
            .unwrap()
            .as_ref()
            .map(|c| c.info.clone())
    }

    /// What the strict report found in the provider's program data.
    pub fn strict_findings(&self) -> Vec<Finding> {
        self.state.findings.lock().unwrap().clone()
    }

    /// Providers of this program's type the core refused, with why.
    pub fn refusals(&self) -> Vec<AttachRefusal> {
        self.state.refusals.lock().unwrap().clone()
    }

    /// Lines the program printed with bpf_trace_printk (taken).
    pub fn take_trace(&self) -> Vec<String> {
        std::mem::take(&mut *self.state.trace.lock().unwrap())
    }

    /// Errors that stopped the program during invocations and test runs
    /// (taken): each such run returned [`INTERPRETER_ERROR_RESULT`].
    pub fn take_errors(&self) -> Vec<super::ProgramError> {
        std::mem::take(&mut *self.state.errors.lock().unwrap())
    }

    /// How many times the program ran through a link.
    pub fn invocations(&self) -> u64 {
        self.state.invocations.load(Ordering::Relaxed)
    }

    /// Attaches the program to `attach_type` with `attach_params`.
    pub fn attach(
        &self,
        attach_type: GUID,
        attach_params: &[u8],
        flags: u64,
    ) -> Result<Link, CoreError> {
        Link::create(self.state.clone(), attach_type, attach_params, flags)
    }

    /// `bpf_prog_test_run`: the extension's context_create and
    /// context_destroy at its required IRQL around one run of the program.
    pub fn test_run(
        &self,
        data_in: &[u8],
        context_in: &[u8],
        data_out_capacity: usize,
        context_out_capacity: usize,
    ) -> Result<TestRunOutput, CoreError> {
        let st = &self.state;
        if !st.rundown.acquire() {
            return Err(CoreError::ExtensionGone(st.program_type));
        }
        let result = (|| {
            let copy = st
                .info
                .read()
                .unwrap()
                .clone()
                .ok_or(CoreError::ExtensionGone(st.program_type))?;
            // SAFETY: the provider is attached (rundown held), so its
            // functions are loaded; the addresses have these types.
            let (create, destroy) = unsafe {
                (
                    copy.info.context_create_fn(),
                    copy.info.context_destroy_fn(),
                )
            };
            let (Some(context_create), Some(context_destroy)) = (create, destroy) else {
                return Err(CoreError::TestRunUnsupported);
            };
            // SAFETY: the same functions; the ABI's `void**` / `void*`
            // parameters are the test runner's `uint8_t**` / `uint8_t*`.
            let hooks = TestRunHooks {
                context_create: unsafe {
                    std::mem::transmute::<
                        ebpf_program_context_create_t,
                        super::program::ContextCreateFn,
                    >(context_create)
                },
                context_destroy: unsafe {
                    std::mem::transmute::<
                        ebpf_program_context_destroy_t,
                        super::program::ContextDestroyFn,
                    >(context_destroy)
                },
                required_irql: copy.info.required_irql,
            };
            let env = ExecEnv {
                helpers: &copy.helpers,
                kernel: &SimKernelInfo,
                trace: &st.trace,
                extra_regions: &[],
            };
            let desc = descriptor(&copy.descriptor);
            // SAFETY: the extension's functions, called per their contracts
            // by Program::test_run.
            let (mut out, error) = unsafe {
                st.program.test_run_keeping_outputs(
                    &env,
                    &desc,
                    &hooks,
                    data_in,
                    context_in,
                    data_out_capacity,
                    context_out_capacity,
                )
            }?;
            // The core's result is 32 bits, as for invoke; a program that
            // stopped on an error gives the interpreter's -1, as eBPF for
            // Windows' core does, and the error goes to the error log.
            out.result = match error {
                None => out.result as u32 as u64,
                Some(e) => {
                    eprintln!("ntsim: program {} stopped: {e}", st.program.name);
                    st.errors.lock().unwrap().push(e);
                    u64::from(INTERPRETER_ERROR_RESULT)
                }
            };
            Ok(out)
        })();
        if st.rundown.release() {
            complete_pi_detach(st);
        }
        result
    }
}

impl Drop for LoadedProgram {
    fn drop(&mut self) {
        deregister_client(&self.state.handle);
    }
}

/// Registers an NMR client of the core.
///
/// # Safety
/// `characteristics` and everything it points to, and `context`, must stay
/// valid until [`deregister_client`] has returned for the handle.
unsafe fn register_client(
    characteristics: *const NPI_CLIENT_CHARACTERISTICS,
    context: *mut c_void,
) -> Result<HANDLE, CoreError> {
    let mut handle: HANDLE = 0;
    // SAFETY: forwarded contract.
    let status = unsafe { nmr::NmrRegisterClient(characteristics, context, &mut handle) };
    if !status::nt_success(status) {
        return Err(CoreError::Nmr(status::describe(status)));
    }
    Ok(handle)
}

/// Deregisters the client whose handle `slot` holds (once) and waits until
/// NMR no longer uses its characteristics or context.
fn deregister_client(slot: &AtomicUsize) {
    let handle = slot.swap(0, Ordering::AcqRel);
    if handle != 0 {
        // SAFETY: a handle from register_client, deregistered once (the swap)
        // and waited for.
        unsafe {
            if nmr::NmrDeregisterClient(handle) == STATUS_PENDING {
                nmr::NmrWaitForClientDeregisterComplete(handle);
            }
        }
    }
}

fn descriptor(d: &ebpf_context_descriptor_t) -> ContextDescriptor {
    ContextDescriptor {
        size: d.size,
        data: d.data,
        end: d.end,
        meta: d.meta,
    }
}

pub(crate) const fn empty_client_characteristics() -> NPI_CLIENT_CHARACTERISTICS {
    NPI_CLIENT_CHARACTERISTICS {
        Version: 0,
        Length: 0,
        ClientAttachProvider: None,
        ClientDetachProvider: None,
        ClientCleanupBindingContext: None,
        ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: 0,
            NpiId: std::ptr::null(),
            ModuleId: std::ptr::null(),
            Number: 0,
            NpiSpecificCharacteristics: std::ptr::null(),
        },
    }
}

pub(crate) fn client_characteristics(
    npi_id: *const GUID,
    module_id: *const NPI_MODULEID,
    specific: *const c_void,
    attach: nmr::ClientAttachProviderFn,
    detach: nmr::ClientDetachProviderFn,
    cleanup: Option<nmr::ClientCleanupBindingContextFn>,
) -> NPI_CLIENT_CHARACTERISTICS {
    NPI_CLIENT_CHARACTERISTICS {
        Version: 0,
        Length: std::mem::size_of::<NPI_CLIENT_CHARACTERISTICS>() as u16,
        ClientAttachProvider: Some(attach),
        ClientDetachProvider: Some(detach),
        ClientCleanupBindingContext: cleanup,
        ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: std::mem::size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: npi_id,
            ModuleId: module_id,
            Number: 0,
            NpiSpecificCharacteristics: specific,
        },
    }
}

/// The program-information client's (empty) dispatch table.
static PI_DISPATCH: [u64; 1] = [0];

unsafe extern "win64" fn pi_attach(
    binding: HANDLE,
    client_context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the context is the ProgramState registered with this client.
    let st = unsafe { &*(client_context as *const ProgramState) };
    if st.info.read().unwrap().is_some() {
        // One provider per program type.
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: NMR passes the provider's live registration instance.
    let decision =
        unsafe { validate::program_info_client_attach_decision(provider, &st.program_type) };
    let info = match decision {
        Ok(info) => info,
        Err(refusal) => {
            let status = refusal.status();
            if !matches!(refusal, AttachRefusal::NoInterface { .. }) {
                st.refusals.lock().unwrap().push(refusal);
            }
            return status;
        }
    };
    // SAFETY: as above.
    let findings = unsafe {
        validate::strict_report_for_provider(
            (*provider).NpiSpecificCharacteristics as *const _,
            &st.program_type,
        )
    };
    let mut provider_binding: *mut c_void = std::ptr::null_mut();
    let mut provider_dispatch: *const c_void = std::ptr::null();
    // SAFETY: inside ClientAttachProvider with NMR's binding handle.
    let status = unsafe {
        nmr::NmrClientAttachProvider(
            binding,
            client_context,
            PI_DISPATCH.as_ptr().cast(),
            &mut provider_binding,
            &mut provider_dispatch,
        )
    };
    if !status::nt_success(status) {
        return status;
    }
    // As eBPF for Windows resolves a helper id: a general id (<= 0xFFFF) in
    // the global overrides, any other in the program-type helpers; the
    // first prototype with the id wins.
    let mut helpers: HashMap<u32, ExtensionHelper> = HashMap::new();
    let general = |id: u32| id <= EBPF_MAX_GENERAL_HELPER_FUNCTION;
    for (set, want_general) in [
        (&info.type_specific_helpers, false),
        (&info.global_helpers, true),
    ] {
        for h in set
            .iter()
            .filter(|h| general(h.prototype.helper_id) == want_general)
        {
            if let Some(a) = h.address {
                helpers
                    .entry(h.prototype.helper_id)
                    .or_insert(ExtensionHelper {
                        address: a as usize,
                        implicit_context: h.prototype.implicit_context,
                        arguments: h.prototype.arguments,
                    });
            }
        }
    }
    let descriptor = Box::new(info.type_descriptor.context_descriptor);
    *st.findings.lock().unwrap() = findings;
    st.binding.store(binding, Ordering::Release);
    st.rundown.reset();
    *st.info.write().unwrap() = Some(Arc::new(ProviderCopy {
        info,
        helpers,
        descriptor,
    }));
    STATUS_SUCCESS
}

unsafe extern "win64" fn pi_detach(client_binding_context: *mut c_void) -> NTSTATUS {
    // SAFETY: the binding context is the ProgramState given at attach.
    let st = unsafe { &*(client_binding_context as *const ProgramState) };
    if st.rundown.begin_detach() {
        *st.info.write().unwrap() = None;
        STATUS_SUCCESS
    } else {
        STATUS_PENDING
    }
}

fn complete_pi_detach(st: &ProgramState) {
    *st.info.write().unwrap() = None;
    let binding = st.binding.load(Ordering::Acquire);
    // SAFETY: the binding whose detach we answered STATUS_PENDING.
    unsafe { nmr::NmrClientDetachProviderComplete(binding) };
}

/// One attachment of a program.
pub struct Link {
    state: Arc<LinkState>,
}

struct LinkState {
    program: Arc<ProgramState>,
    attach_type: GUID,
    npi_id: GUID,
    module_id: NPI_MODULEID,
    extension_data: validate::OwnedExtensionData,
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    handle: AtomicUsize,
    binding: AtomicUsize,
    attached: AtomicBool,
    provider: Mutex<Option<validate::AttachProviderInfo>>,
    refusals: Mutex<Vec<AttachRefusal>>,
    /// Statuses with which matching hook providers refused the link in
    /// their ProviderAttachClient.
    provider_failures: Mutex<Vec<NTSTATUS>>,
    findings: Mutex<Vec<Finding>>,
    /// Threads that made their one in-flight invocation after the
    /// provider's detach began ([`check_may_invoke`]).
    late_invokers: Mutex<HashSet<std::thread::ThreadId>>,
}

// SAFETY: as for ProgramState: the characteristics point into this same
// allocation and into `extension_data`, which is owned and never changed;
// mutable fields are atomic or locked.
unsafe impl Send for LinkState {}
// SAFETY: as above.
unsafe impl Sync for LinkState {}

/// The core's dispatch table for links.
static LINK_DISPATCH: ebpf_extension_program_dispatch_table_t = core_dispatch_table(
    link_invoke,
    link_batch_begin,
    link_batch_invoke,
    link_batch_end,
);

impl Link {
    fn create(
        program: Arc<ProgramState>,
        attach_type: GUID,
        params: &[u8],
        flags: u64,
    ) -> Result<Link, CoreError> {
        let state = Arc::new(LinkState {
            program,
            attach_type,
            npi_id: EBPF_HOOK_EXTENSION_IID,
            module_id: fresh_module_id(),
            extension_data: validate::ExtensionDataBuilder::new()
                .attach_params(params)
                .prog_attach_flags(flags)
                .build(),
            characteristics: empty_client_characteristics(),
            handle: AtomicUsize::new(0),
            binding: AtomicUsize::new(0),
            attached: AtomicBool::new(false),
            provider: Mutex::new(None),
            refusals: Mutex::new(Vec::new()),
            provider_failures: Mutex::new(Vec::new()),
            findings: Mutex::new(Vec::new()),
            late_invokers: Mutex::new(HashSet::new()),
        });
        let st = Arc::as_ptr(&state) as *mut LinkState;
        // SAFETY: no other reference is in use yet; everything pointed to
        // lives in the Arc until Link::detach has waited for NMR.
        unsafe {
            (*st).characteristics = client_characteristics(
                &(*st).npi_id,
                &(*st).module_id,
                (*st).extension_data.as_ptr().cast(),
                link_attach,
                link_detach,
                Some(link_cleanup),
            );
        }
        // SAFETY: as above.
        let handle = unsafe { register_client(&state.characteristics, st.cast())? };
        state.handle.store(handle, Ordering::Release);
        let link = Link { state };
        if !link.state.attached.load(Ordering::Acquire) {
            let mut reasons: Vec<String> = link
                .state
                .refusals
                .lock()
                .unwrap()
                .iter()
                .map(|r| format!("{r:?}"))
                .collect();
            reasons.extend(
                link.state
                    .provider_failures
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        format!(
                            "the hook provider refused the link: {}",
                            status::describe(*s)
                        )
                    }),
            );
            let detail = reasons.join("; ");
            return Err(CoreError::NoHookProvider {
                attach_type,
                detail: if detail.is_empty() {
                    "no provider of that attach type".into()
                } else {
                    detail
                },
            });
        }
        Ok(link)
    }

    /// Whether the link is bound to a hook provider.
    pub fn is_attached(&self) -> bool {
        self.state.attached.load(Ordering::Acquire)
    }

    /// The hook provider's attach data as the core read it.
    pub fn provider(&self) -> Option<validate::AttachProviderInfo> {
        *self.state.provider.lock().unwrap()
    }

    /// Strict findings on the hook provider's attach data.
    pub fn strict_findings(&self) -> Vec<Finding> {
        self.state.findings.lock().unwrap().clone()
    }

    /// Detaches: deregisters the link's NMR client and waits until the
    /// provider has let go of it.
    pub fn detach(self) {
        drop(self)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        deregister_client(&self.state.handle);
    }
}

unsafe extern "win64" fn link_attach(
    binding: HANDLE,
    client_context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the context is the LinkState registered with this client.
    let st = unsafe { &*(client_context as *const LinkState) };
    if st.attached.load(Ordering::Acquire) {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: NMR passes the provider's live registration instance.
    let decision = unsafe {
        validate::hook_client_attach_decision(provider, &st.attach_type, &st.program.program_type)
    };
    let info = match decision {
        Ok(info) => info,
        Err(refusal) => {
            let status = refusal.status();
            st.refusals.lock().unwrap().push(refusal);
            return status;
        }
    };
    // SAFETY: as above.
    let findings = unsafe {
        validate::strict_attach_report((*provider).NpiSpecificCharacteristics as *const _)
    };
    let mut provider_binding: *mut c_void = std::ptr::null_mut();
    let mut provider_dispatch: *const c_void = std::ptr::null();
    // The provider may publish the link, and invoke it, inside
    // NmrClientAttachProvider: the binding must be known by then.
    st.binding.store(binding, Ordering::Release);
    // SAFETY: inside ClientAttachProvider with NMR's binding handle; the
    // client binding context is the LinkState, which outlives the binding.
    let status = unsafe {
        nmr::NmrClientAttachProvider(
            binding,
            client_context,
            (&LINK_DISPATCH as *const ebpf_extension_program_dispatch_table_t).cast(),
            &mut provider_binding,
            &mut provider_dispatch,
        )
    };
    if !status::nt_success(status) {
        st.provider_failures.lock().unwrap().push(status);
        return status;
    }
    *st.findings.lock().unwrap() = findings;
    *st.provider.lock().unwrap() = Some(info);
    st.attached.store(true, Ordering::Release);
    STATUS_SUCCESS
}

unsafe extern "win64" fn link_detach(client_binding_context: *mut c_void) -> NTSTATUS {
    // SAFETY: the binding context is the LinkState given at attach.
    let st = unsafe { &*(client_binding_context as *const LinkState) };
    st.attached.store(false, Ordering::Release);
    STATUS_SUCCESS
}

/// Batches begun through the core's dispatch table since the process
/// started (a test compares before and after).
static BATCHES_BEGUN: AtomicU64 = AtomicU64::new(0);

/// How many batches extensions have begun (`batch_begin` calls that
/// succeeded), process-wide.
pub fn batches_begun() -> u64 {
    BATCHES_BEGUN.load(Ordering::Relaxed)
}

/// Marks an execution state as begun by [`link_batch_begin`].
const BATCH_MAGIC: u64 = 0x6e74_7369_6d42_6174; // "ntsimBat"
const BATCH_IRQL_OFFSET: usize = 40;

/// A batch between `batch_begin` and `batch_end`, keyed by the address of
/// its execution state.
struct OpenBatch {
    thread: String,
    irql: u8,
    /// [`nmr::clock`] at begin: invocations in it are in flight for a detach
    /// that began later.
    begun_at: u64,
    pin: irql::PinId,
    /// Links invoked in the batch: (binding handle, already reported as
    /// released while the batch was open).
    links: Vec<(HANDLE, bool)>,
}

static OPEN_BATCHES: Mutex<BTreeMap<usize, OpenBatch>> = Mutex::new(BTreeMap::new());

fn open_batches() -> std::sync::MutexGuard<'static, BTreeMap<usize, OpenBatch>> {
    OPEN_BATCHES.lock().unwrap_or_else(|e| e.into_inner())
}

fn thread_name() -> String {
    let t = std::thread::current();
    t.name()
        .map_or_else(|| format!("{:?}", t.id()), str::to_string)
}

/// The open batch of `state`, if it belongs to the current machine (a
/// reset closes every batch's IRQL pin; such entries are forgotten here).
fn live_batch(open: &mut BTreeMap<usize, OpenBatch>, state: usize) -> Option<&mut OpenBatch> {
    if open.get(&state).is_some_and(|b| !irql::pin_open(b.pin)) {
        open.remove(&state);
    }
    open.get_mut(&state)
}

/// Whether the provider has completed its detach of `binding` (released its
/// last reference to the link): the binding is gone, cleaning up, or the
/// provider's side is done.
fn provider_released(binding: HANDLE) -> bool {
    use crate::kernel::nmr::{BindingState, DetachState};
    match nmr::binding(binding) {
        None => true,
        Some(b) => match b.state {
            BindingState::CleaningUp => true,
            BindingState::Detaching { provider, .. } => matches!(
                provider,
                DetachState::Done | DetachState::CompletedInCallback
            ),
            BindingState::Attaching | BindingState::Bound => false,
        },
    }
}

fn released_message(api: &str, binding: HANDLE) -> String {
    format!(
        "{api}: the hook provider completed its detach of link binding {binding:#x} (released \
         its last reference to the link) while a batch that invoked the link was still open; \
         batch_end calls into the eBPF core, which may be unloaded by then: end the batch \
         before releasing the last reference"
    )
}

unsafe extern "win64" fn link_batch_begin(state_size: usize, state: *mut c_void) -> ebpf_result_t {
    if state.is_null() || state_size < std::mem::size_of::<ebpf_execution_context_state_t>() {
        violation::record(
            "ebpf",
            format!("batch_begin with a state of {state_size} bytes (at least 64 are required)"),
        );
        return EBPF_INVALID_ARGUMENT;
    }
    let words = state as *mut u64;
    // SAFETY: at least 64 writable bytes (checked above).
    unsafe {
        std::ptr::write_bytes(state as *mut u8, 0, 64);
        *words = BATCH_MAGIC;
        *words.add(4) = crate::kernel::ps::current_ids().1 as u64;
        *(state as *mut u8).add(BATCH_IRQL_OFFSET) = irql::current();
    }
    let level = irql::current();
    let pin = irql::pin(format!("an eBPF batch (state {state:p})"));
    let stale = open_batches().insert(
        state as usize,
        OpenBatch {
            thread: thread_name(),
            irql: level,
            begun_at: nmr::clock(),
            pin,
            links: Vec::new(),
        },
    );
    if let Some(old) = stale.filter(|old| irql::unpin(old.pin)) {
        violation::record(
            "ebpf",
            format!(
                "batch_begin on state {state:p}, whose batch begun on thread '{}' was never \
                 ended (every batch_begin must be followed by batch_end)",
                old.thread
            ),
        );
    }
    BATCHES_BEGUN.fetch_add(1, Ordering::Relaxed);
    EBPF_SUCCESS
}

/// Checks a batch state; records a violation and returns false if it is
/// not a begun batch at the current IRQL.
unsafe fn check_batch(api: &str, state: *const c_void) -> bool {
    if state.is_null() {
        violation::record("ebpf", format!("{api} without a batch state"));
        return false;
    }
    // SAFETY: the extension passes the 64-byte state it gave batch_begin.
    let magic = unsafe { *(state as *const u64) };
    let begun_irql = live_batch(&mut open_batches(), state as usize).map(|b| b.irql);
    let Some(begun_irql) = begun_irql.filter(|_| magic == BATCH_MAGIC) else {
        violation::record(
            "ebpf",
            format!("{api} outside a batch (batch_begin was not called, or batch_end was)"),
        );
        return false;
    };
    let now = irql::current();
    if now != begun_irql {
        violation::record(
            "ebpf",
            format!("{api} at IRQL {now}, but the batch began at IRQL {begun_irql}: IRQL must not change within a batch"),
        );
        return false;
    }
    true
}

unsafe extern "win64" fn link_batch_end(state: *mut c_void) -> ebpf_result_t {
    // SAFETY: see check_batch.
    if !unsafe { check_batch("batch_end", state) } {
        return EBPF_INVALID_ARGUMENT;
    }
    let Some(batch) = open_batches().remove(&(state as usize)) else {
        return EBPF_INVALID_ARGUMENT;
    };
    irql::unpin(batch.pin);
    for (binding, reported) in batch.links {
        if !reported && provider_released(binding) {
            violation::record("ebpf", released_message("batch_end", binding));
        }
    }
    // SAFETY: a begun state: 64 writable bytes.
    unsafe { *(state as *mut u64) = 0 };
    EBPF_SUCCESS
}

unsafe extern "win64" fn link_batch_invoke(
    client_binding_context: *const c_void,
    context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
) -> ebpf_result_t {
    // SAFETY: see check_batch.
    if !unsafe { check_batch("batch_invoke", state) } {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: the binding context is the LinkState this link gave NMR.
    let link = unsafe { &*(client_binding_context as *const LinkState) };
    let binding = link.binding.load(Ordering::Acquire);
    let begun_at = {
        let mut open = open_batches();
        let Some(b) = live_batch(&mut open, state as usize) else {
            return EBPF_INVALID_ARGUMENT;
        };
        if !b.links.iter().any(|&(h, _)| h == binding) {
            b.links.push((binding, false));
        }
        b.begun_at
    };
    // SAFETY: forwarded per invoke's contract.
    unsafe { run(link, context, result, state, begun_at) }
}

unsafe extern "win64" fn link_invoke(
    client_binding_context: *const c_void,
    context: *mut c_void,
    result: *mut u32,
) -> ebpf_result_t {
    // The core's own invoke is a one-program batch on its stack.
    let mut state = [0u64; 8];
    let sp = state.as_mut_ptr().cast::<c_void>();
    // SAFETY: our own functions with our own 64-byte state.
    unsafe {
        let begun = link_batch_begin(std::mem::size_of_val(&state), sp);
        if begun != EBPF_SUCCESS {
            return begun;
        }
        let r = link_batch_invoke(client_binding_context, context, result, sp);
        link_batch_end(sp);
        r
    }
}

/// The link's cleanup callback: the provider and the core have both
/// detached. A batch still open that invoked the link means the provider
/// released its last reference before ending the batch.
unsafe extern "win64" fn link_cleanup(client_binding_context: *mut c_void) {
    // SAFETY: the binding context is the LinkState given at attach, alive
    // until the deregistration wait (which this cleanup precedes) returns.
    let link = unsafe { &*(client_binding_context as *const LinkState) };
    let binding = link.binding.load(Ordering::Acquire);
    let mut found = false;
    // The violation is recorded under the batches' lock: `batch_end`, which
    // skips a link marked reported, must find it recorded once it returns.
    let mut open = open_batches();
    for b in open.values_mut().filter(|b| irql::pin_open(b.pin)) {
        for (h, reported) in &mut b.links {
            if *h == binding && !*reported {
                *reported = true;
                found = true;
            }
        }
    }
    if found {
        violation::record(
            "ebpf",
            released_message("NmrProviderDetachClientComplete", binding),
        );
    }
    drop(open);
}

/// Whether an invocation of `link` that is entering now is one the provider
/// may still make: until its ProviderDetachClient has returned, any (the
/// provider cannot act on a detach before its callback runs); after it
/// (while the detach is pending), only invocations in flight, that is in a
/// batch begun before the callback returned, or, since ntsim cannot see
/// when the provider took its reference, the first invocation of the link
/// by a thread after that. Records a violation otherwise.
fn check_may_invoke(link: &LinkState, batch_begun_at: u64) -> bool {
    use crate::kernel::nmr::{BindingState, DetachState};
    let binding = link.binding.load(Ordering::Acquire);
    let Some(b) = nmr::binding(binding) else {
        violation::record(
            "ebpf",
            format!(
                "invoke of link binding {binding:#x} after the hook provider completed its detach \
                 and the binding was cleaned up"
            ),
        );
        return false;
    };
    let detach_at = match b.state {
        BindingState::Attaching | BindingState::Bound => return true,
        BindingState::CleaningUp
        | BindingState::Detaching {
            provider: DetachState::Done | DetachState::CompletedInCallback,
            ..
        } => {
            violation::record(
                "ebpf",
                "invoke of a link after the hook provider completed its detach (ProviderDetachClient \
                 returned STATUS_SUCCESS or it called NmrProviderDetachClientComplete)",
            );
            return false;
        }
        // Until its detach callback has returned the provider may not yet
        // have seen the detach: its calls are in flight.
        BindingState::Detaching {
            provider: DetachState::NotCalled | DetachState::InCallback,
            ..
        } => return true,
        BindingState::Detaching { .. } => b.provider_detach_at.unwrap_or(0),
    };
    if batch_begun_at < detach_at {
        return true;
    }
    let me = std::thread::current().id();
    let mut late = link.late_invokers.lock().unwrap();
    if late.insert(me) {
        return true;
    }
    violation::record(
        "ebpf",
        format!(
            "a new invocation of link binding {binding:#x} after its ProviderDetachClient was \
             called (and returned; this thread already made its in-flight invocation since \
             then): after the detach callback a provider must not start calls into the client"
        ),
    );
    false
}

/// Runs the link's program on `context`.
///
/// # Safety
/// `context` points just after a 64-byte header the extension reserved,
/// and `result` is writable.
unsafe fn run(
    link: &LinkState,
    context: *mut c_void,
    result: *mut u32,
    state: *const c_void,
    batch_begun_at: u64,
) -> ebpf_result_t {
    if result.is_null() || context.is_null() {
        violation::record("ebpf", "invoke with a null context or result pointer");
        return EBPF_INVALID_ARGUMENT;
    }
    if !check_may_invoke(link, batch_begun_at) {
        return EBPF_EXTENSION_FAILED_TO_LOAD;
    }
    let prog = &link.program;
    if !prog.rundown.acquire() {
        return EBPF_EXTENSION_FAILED_TO_LOAD;
    }
    let outcome = (|| {
        let Some(copy) = prog.info.read().unwrap().clone() else {
            return EBPF_EXTENSION_FAILED_TO_LOAD;
        };
        let header = (context as *mut u8).wrapping_sub(EBPF_CONTEXT_HEADER_SIZE) as *mut u64;
        if let Some((start, _len, tag)) = crate::kernel::pool::live_block(context as usize) {
            if (header as usize) < start {
                violation::record(
                    "ebpf",
                    format!(
                        "the program context at {context:p} is {} bytes into a pool block tagged {}: \
                         the extension did not reserve the 64-byte context header in front of it",
                        context as usize - start,
                        crate::kernel::pool::tag_string(tag)
                    ),
                );
                return EBPF_INVALID_ARGUMENT;
            }
        }
        // SAFETY: the extension reserved the header (checked above for pool
        // contexts; stack contexts are the extension's contract).
        unsafe {
            *header = state as u64;
            *header.add(1) = (&*copy.descriptor as *const ebpf_context_descriptor_t) as u64;
        }
        let env = ExecEnv {
            helpers: &copy.helpers,
            kernel: &SimKernelInfo,
            trace: &prog.trace,
            extra_regions: &[],
        };
        prog.invocations.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the context is the extension's, valid for the call and at
        // least descriptor.size bytes (its contract with the core).
        match unsafe {
            prog.program
                .run(context.cast(), &descriptor(&copy.descriptor), &env)
        } {
            Ok(r0) => {
                // SAFETY: checked non-null above; the extension's pointer.
                unsafe { *result = r0 as u32 };
                EBPF_SUCCESS
            }
            Err(e) => {
                // As the real core does for an interpreted program
                // (ebpf_program_invoke): the run "succeeds" with the
                // interpreter's -1 as the 32-bit result. The error stays
                // observable in the program's error log.
                eprintln!("ntsim: program {} stopped: {e}", prog.program.name);
                prog.errors.lock().unwrap().push(e);
                // SAFETY: checked non-null above; the extension's pointer.
                unsafe { *result = INTERPRETER_ERROR_RESULT };
                EBPF_SUCCESS
            }
        }
    })();
    if prog.rundown.release() {
        complete_pi_detach(prog);
    }
    outcome
}
