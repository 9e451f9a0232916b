//! ntsim's eBPF core as an NMR client, against host-side providers written
//! in Rust: a program-information provider and hook providers registered
//! with ntsim's NMR exactly as an extension driver registers them, with
//! `extern "win64"` callbacks and helpers. The programs are those of
//! tests/bpf/core_test.c, of the host-side test program type of
//! tests/bpf/include/ntsim_test.h.

use ntsim::ebpf::abi::*;
use ntsim::ebpf::core::{CoreError, Link, LoadedProgram};
use ntsim::ebpf::validate::{
    self, AttachProviderInfo, AttachRefusal, Finding, HelperFunction, HelperPrototype, HelperSet,
    HelperSpec, Issue, OwnedProgramData, ProgramDataBuilder, ProgramInfo, ProgramTypeDescriptor,
    Rule, ValidationError,
};
use ntsim::ebpf::{ExecEnv, KernelInfo, Object, SectionMap};
use ntsim::nmr::{
    self, NmrDeregisterProvider, NmrProviderDetachClientComplete, NmrRegisterProvider,
    NmrWaitForProviderDeregisterComplete, MIT_GUID, NPI_MODULEID, NPI_PROVIDER_CHARACTERISTICS,
    NPI_REGISTRATION_INSTANCE,
};
use ntsim::status::{NTSTATUS, STATUS_PENDING, STATUS_SUCCESS};
use ntsim::types::{GUID, HANDLE};
use ntsim::{irql, pool, violation, Sim};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------
// The test program type
// ---------------------------------------------------------------------------

fn program_type() -> GUID {
    GUID::parse("6f2f2f7e-0d0e-4d3a-9b1c-1a2b3c4d5e6f").unwrap()
}

fn attach_type() -> GUID {
    GUID::parse("7e3e3e8f-1e1f-4e4b-8c2d-2b3c4d5e6f70").unwrap()
}

fn other_program_type() -> GUID {
    GUID::parse("0badc0de-0000-4000-8000-000000000001").unwrap()
}

fn other_attach_type() -> GUID {
    GUID::parse("0badc0de-0000-4000-8000-000000000002").unwrap()
}

const DESC: ebpf_context_descriptor_t = ebpf_context_descriptor_t {
    size: 40,
    data: 16,
    end: 24,
    meta: -1,
};

/// `test_ctx_t` of tests/bpf/include/ntsim_test.h.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TestCtx {
    id: u64,
    value: u64,
    data: usize,
    data_end: usize,
    index: u32,
    out: u32,
}

/// A program context as an extension lays it out: the 64-byte header the
/// core owns, then the context the program sees.
#[repr(C)]
#[derive(Default)]
struct Framed {
    header: [u64; 8],
    ctx: TestCtx,
}

const _: () = assert!(std::mem::size_of::<TestCtx>() == 40);
const _: () = assert!(std::mem::offset_of!(Framed, ctx) == EBPF_CONTEXT_HEADER_SIZE);

fn sections() -> SectionMap {
    let mut s = SectionMap::new();
    s.add("sample", program_type(), attach_type());
    s
}

fn load_object() -> Object {
    let path = format!("{}/../bpf/core_test.o", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Object::load(&bytes, &sections()).unwrap_or_else(|e| panic!("core_test.o: {e}"))
}

fn load(object: &Object, name: &str) -> LoadedProgram {
    let program = object.program(name).unwrap_or_else(|| panic!("no {name}"));
    match LoadedProgram::load(program.clone()) {
        Ok(p) => p,
        Err(e) => panic!("loading {name}: {e}"),
    }
}

fn load_error(object: &Object, name: &str) -> CoreError {
    match LoadedProgram::load(object.program(name).unwrap().clone()) {
        Ok(_) => panic!("{name} loaded, but no valid provider of its type is registered"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// Host-side helpers (the extension's program-type helpers)
// ---------------------------------------------------------------------------

/// A call into one of the host helpers, with the arguments it received.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Add(u64, u64),
    CtxId { mul: u64, ctx: usize },
    Args([u64; 5]),
    Pid,
}

static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

fn take_calls() -> Vec<Call> {
    std::mem::take(&mut *CALLS.lock().unwrap())
}

fn record(call: Call) {
    CALLS.lock().unwrap().push(call);
}

extern "win64" fn ext_add(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    record(Call::Add(a, b));
    a.wrapping_add(b)
}

extern "win64" fn ext_ctx_id(mul: u64, _: u64, _: u64, _: u64, _: u64, ctx: u64) -> u64 {
    record(Call::CtxId {
        mul,
        ctx: ctx as usize,
    });
    // SAFETY: the core passes the program context (a TestCtx) as the sixth
    // argument of an implicit_context helper.
    let ctx = unsafe { &*(ctx as *const TestCtx) };
    ctx.id * mul
}

/// A provider handle the next `ext_args` call deregisters (0: none), and
/// what that deregistration returned.
static DEREGISTER_IN_HELPER: AtomicUsize = AtomicUsize::new(0);
static DEREGISTER_IN_HELPER_STATUS: Mutex<Option<(NTSTATUS, Vec<nmr::BindingState>)>> =
    Mutex::new(None);

extern "win64" fn ext_args(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    record(Call::Args([a, b, c, d, e]));
    let handle = DEREGISTER_IN_HELPER.swap(0, Ordering::SeqCst);
    if handle != 0 {
        // SAFETY: a provider registered by the test, deregistered once here;
        // the test waits for it afterwards.
        let status = unsafe { NmrDeregisterProvider(handle) };
        let states = nmr::bindings()
            .iter()
            .filter(|b| b.provider == handle)
            .map(|b| b.state)
            .collect();
        *DEREGISTER_IN_HELPER_STATUS.lock().unwrap() = Some((status, states));
    }
    ext_args_value(a, b, c, e)
}

fn ext_args_value(a: u64, b: u64, c: u64, e: u64) -> u64 {
    (c & 0xFFFF_0000_0000_0000) + a * 1_000_000 + b * 1000 + e
}

/// Overrides the general helper bpf_get_current_pid_tgid (19).
extern "win64" fn ext_pid(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    record(Call::Pid);
    0xFEED_0000_0000_0019
}

fn addr(f: usize) -> u64 {
    f as u64
}

const ANY: ebpf_argument_type_t = EBPF_ARGUMENT_TYPE_ANYTHING;

/// The program type's data as a correct extension publishes it: three
/// type-specific helpers (0x10002 with implicit context).
fn builder(program_type: GUID) -> ProgramDataBuilder {
    let mut ctx_id = HelperSpec::new(
        0x10002,
        "test_ext_ctx_id",
        EBPF_RETURN_TYPE_INTEGER,
        [ANY, 0, 0, 0, 0],
        addr(ext_ctx_id as *const () as usize),
    );
    ctx_id.implicit_context = true;
    ProgramDataBuilder::new("core_test", program_type, DESC)
        .bpf_prog_type(999)
        .helper(HelperSpec::new(
            0x10001,
            "test_ext_add",
            EBPF_RETURN_TYPE_INTEGER,
            [ANY, ANY, 0, 0, 0],
            addr(ext_add as *const () as usize),
        ))
        .helper(ctx_id)
        .helper(HelperSpec::new(
            0x10003,
            "core_ext_args",
            EBPF_RETURN_TYPE_INTEGER,
            [ANY; 5],
            addr(ext_args as *const () as usize),
        ))
}

/// What the core must keep of `builder(program_type()).build()`, written
/// out independently of the builder.
fn expected_info(context_create: u64, context_destroy: u64, required_irql: u8) -> ProgramInfo {
    let helper = |id, name: &str, arguments, implicit_context, address| HelperFunction {
        prototype: HelperPrototype {
            helper_id: id,
            name: name.to_string(),
            return_type: EBPF_RETURN_TYPE_INTEGER,
            arguments,
            reallocate_packet: false,
            implicit_context,
        },
        address: Some(address),
    };
    ProgramInfo {
        type_descriptor: ProgramTypeDescriptor {
            name: "core_test".into(),
            context_descriptor: DESC,
            program_type: program_type(),
            bpf_prog_type: 999,
            is_privileged: false,
        },
        type_specific_helpers: vec![
            helper(
                0x10001,
                "test_ext_add",
                [ANY, ANY, 0, 0, 0],
                false,
                addr(ext_add as *const () as usize),
            ),
            helper(
                0x10002,
                "test_ext_ctx_id",
                [ANY, 0, 0, 0, 0],
                true,
                addr(ext_ctx_id as *const () as usize),
            ),
            helper(
                0x10003,
                "core_ext_args",
                [ANY; 5],
                false,
                addr(ext_args as *const () as usize),
            ),
        ],
        global_helpers: vec![],
        context_create,
        context_destroy,
        required_irql,
        capabilities: 0,
        program_data_size: 72,
    }
}

// ---------------------------------------------------------------------------
// Host-side NMR providers
// ---------------------------------------------------------------------------

fn module_id(guid: GUID) -> NPI_MODULEID {
    NPI_MODULEID {
        Length: std::mem::size_of::<NPI_MODULEID>() as u16,
        Type: MIT_GUID,
        Guid: guid,
    }
}

fn provider_characteristics(
    npi_id: *const GUID,
    module_id: *const NPI_MODULEID,
    specific: *const c_void,
    attach: nmr::ProviderAttachClientFn,
    detach: nmr::ProviderDetachClientFn,
    cleanup: Option<nmr::ProviderCleanupBindingContextFn>,
) -> NPI_PROVIDER_CHARACTERISTICS {
    NPI_PROVIDER_CHARACTERISTICS {
        Version: 0,
        Length: std::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>() as u16,
        ProviderAttachClient: Some(attach),
        ProviderDetachClient: Some(detach),
        ProviderCleanupBindingContext: cleanup,
        ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: std::mem::size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: npi_id,
            ModuleId: module_id,
            Number: 0,
            NpiSpecificCharacteristics: specific,
        },
    }
}

/// Deregisters a provider and waits, as an unloading extension does.
/// Not while a failed test unwinds: a detach it left pending would never
/// complete (the next `Sim` resets the NMR).
fn deregister_provider(handle: &AtomicUsize) {
    if std::thread::panicking() {
        return;
    }
    let h = handle.swap(0, Ordering::SeqCst);
    if h != 0 {
        // SAFETY: the test's own registration, deregistered once and waited for.
        unsafe {
            if NmrDeregisterProvider(h) == STATUS_PENDING {
                NmrWaitForProviderDeregisterComplete(h);
            }
        }
    }
}

/// A program-information provider: ModuleId = a program type,
/// NpiSpecificCharacteristics = its program data.
struct PiProvider {
    npi_id: GUID,
    module_id: NPI_MODULEID,
    data: OwnedProgramData,
    chars: NPI_PROVIDER_CHARACTERISTICS,
    handle: AtomicUsize,
    attaches: AtomicUsize,
    client_npi: Mutex<Option<GUID>>,
}

impl PiProvider {
    fn register(module: GUID, data: OwnedProgramData) -> Box<PiProvider> {
        let mut p = Box::new(PiProvider {
            npi_id: EBPF_PROGRAM_INFO_EXTENSION_IID,
            module_id: module_id(module),
            data,
            chars: provider_characteristics(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                pi_attach_client,
                pi_detach_client,
                None,
            ),
            handle: AtomicUsize::new(0),
            attaches: AtomicUsize::new(0),
            client_npi: Mutex::new(None),
        });
        p.chars = provider_characteristics(
            &p.npi_id,
            &p.module_id,
            p.data.as_ptr().cast(),
            pi_attach_client,
            pi_detach_client,
            None,
        );
        let mut handle: HANDLE = 0;
        let context = &*p as *const PiProvider as *mut c_void;
        // SAFETY: the characteristics and the context live in the box until
        // Drop, which deregisters and waits first.
        let status = unsafe { NmrRegisterProvider(&p.chars, context, &mut handle) };
        assert_eq!(status, STATUS_SUCCESS);
        p.handle.store(handle, Ordering::SeqCst);
        p
    }

    fn handle(&self) -> HANDLE {
        self.handle.load(Ordering::SeqCst)
    }

    fn attaches(&self) -> usize {
        self.attaches.load(Ordering::SeqCst)
    }
}

impl Drop for PiProvider {
    fn drop(&mut self) {
        deregister_provider(&self.handle);
    }
}

unsafe extern "win64" fn pi_attach_client(
    _binding: HANDLE,
    provider_context: *mut c_void,
    client: *const NPI_REGISTRATION_INSTANCE,
    _client_binding_context: *mut c_void,
    _client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    // SAFETY: the context registered with these characteristics.
    let p = unsafe { &*(provider_context as *const PiProvider) };
    p.attaches.fetch_add(1, Ordering::SeqCst);
    // SAFETY: NMR passes the client's live registration instance and
    // writable out pointers.
    unsafe {
        *p.client_npi.lock().unwrap() = Some(*(*client).NpiId);
        *provider_binding_context = provider_context;
        *provider_dispatch = std::ptr::null();
    }
    STATUS_SUCCESS
}

unsafe extern "win64" fn pi_detach_client(_provider_binding_context: *mut c_void) -> NTSTATUS {
    STATUS_SUCCESS
}

/// What a hook provider learned about one client (one link).
struct HookClient {
    provider: usize,
    binding: HANDLE,
    binding_context: usize,
    dispatch: *const ebpf_extension_program_dispatch_table_t,
    npi_id: GUID,
    module: NPI_MODULEID,
    header: ebpf_extension_header_t,
    params_null: bool,
    params: Vec<u8>,
    flags: u64,
    detached: AtomicBool,
    cleaned: AtomicBool,
}

// SAFETY: `dispatch` points to the core's static dispatch table.
unsafe impl Send for HookClient {}
// SAFETY: as above; the flags are atomic.
unsafe impl Sync for HookClient {}

impl HookClient {
    fn table(&self) -> ebpf_extension_program_dispatch_table_t {
        // SAFETY: the core's dispatch table, valid for the life of the link.
        unsafe { *self.dispatch }
    }

    /// Invokes the link's program as a hook provider does.
    fn invoke(&self, ctx: *mut TestCtx) -> (ebpf_result_t, u32) {
        let mut result = 0xdead_beef_u32;
        let f = self.table().ebpf_program_invoke_function.unwrap();
        // SAFETY: the core's invoke with the binding context it gave NMR, a
        // context behind a 64-byte header (or one the test wants refused)
        // and a writable result.
        let r = unsafe {
            f(
                self.binding_context as *const c_void,
                ctx.cast(),
                &mut result,
            )
        };
        (r, result)
    }

    fn batch_begin(&self, state: &mut [u64], size: usize) -> ebpf_result_t {
        let f = self
            .table()
            .ebpf_program_batch_begin_invoke_function
            .unwrap();
        assert!(size <= std::mem::size_of_val(state));
        // SAFETY: `state` has at least `size` writable bytes.
        unsafe { f(size, state.as_mut_ptr().cast()) }
    }

    fn batch_invoke(&self, ctx: *mut TestCtx, state: &[u64]) -> (ebpf_result_t, u32) {
        let mut result = 0xdead_beef_u32;
        let f = self.table().ebpf_program_batch_invoke_function.unwrap();
        // SAFETY: as in invoke, with a 64-byte state.
        let r = unsafe {
            f(
                self.binding_context as *const c_void,
                ctx.cast(),
                &mut result,
                state.as_ptr().cast(),
            )
        };
        (r, result)
    }

    fn batch_end(&self, state: &mut [u64]) -> ebpf_result_t {
        let f = self.table().ebpf_program_batch_end_invoke_function.unwrap();
        // SAFETY: a 64-byte state.
        unsafe { f(state.as_mut_ptr().cast()) }
    }
}

/// A hook provider: ModuleId = an attach type, NpiSpecificCharacteristics
/// = its attach provider data.
struct HookProvider {
    npi_id: GUID,
    module_id: NPI_MODULEID,
    data: ebpf_attach_provider_data_t,
    chars: NPI_PROVIDER_CHARACTERISTICS,
    handle: AtomicUsize,
    clients: Mutex<Vec<Arc<HookClient>>>,
    /// ProviderDetachClient answers STATUS_PENDING and reports the binding.
    pend_detach: Mutex<Option<mpsc::Sender<HANDLE>>>,
}

impl HookProvider {
    fn register(module: GUID, data: ebpf_attach_provider_data_t) -> Box<HookProvider> {
        let mut p = Box::new(HookProvider {
            npi_id: EBPF_HOOK_EXTENSION_IID,
            module_id: module_id(module),
            data,
            chars: provider_characteristics(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                hook_attach_client,
                hook_detach_client,
                Some(hook_cleanup),
            ),
            handle: AtomicUsize::new(0),
            clients: Mutex::new(Vec::new()),
            pend_detach: Mutex::new(None),
        });
        p.chars = provider_characteristics(
            &p.npi_id,
            &p.module_id,
            (&p.data as *const ebpf_attach_provider_data_t).cast(),
            hook_attach_client,
            hook_detach_client,
            Some(hook_cleanup),
        );
        let mut handle: HANDLE = 0;
        let context = &*p as *const HookProvider as *mut c_void;
        // SAFETY: as for PiProvider::register.
        let status = unsafe { NmrRegisterProvider(&p.chars, context, &mut handle) };
        assert_eq!(status, STATUS_SUCCESS);
        p.handle.store(handle, Ordering::SeqCst);
        p
    }

    fn valid(module: GUID, supported: GUID) -> Box<HookProvider> {
        HookProvider::register(
            module,
            validate::attach_provider_data(supported, 42, BPF_LINK_TYPE_PLAIN),
        )
    }

    fn clients(&self) -> Vec<Arc<HookClient>> {
        self.clients.lock().unwrap().clone()
    }

    fn client(&self, i: usize) -> Arc<HookClient> {
        self.clients()[i].clone()
    }
}

impl Drop for HookProvider {
    fn drop(&mut self) {
        deregister_provider(&self.handle);
    }
}

unsafe extern "win64" fn hook_attach_client(
    binding: HANDLE,
    provider_context: *mut c_void,
    client: *const NPI_REGISTRATION_INSTANCE,
    client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> NTSTATUS {
    // SAFETY: the context registered with these characteristics.
    let p = unsafe { &*(provider_context as *const HookProvider) };
    // SAFETY: NMR passes the client's live registration instance; the
    // core's NpiSpecificCharacteristics is an ebpf_extension_data_t whose
    // `data` holds `data_size` bytes when non-null.
    let record = unsafe {
        let reg = &*client;
        let ext = &*(reg.NpiSpecificCharacteristics as *const ebpf_extension_data_t);
        let params = if ext.data.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(ext.data as *const u8, ext.data_size).to_vec()
        };
        Arc::new(HookClient {
            provider: provider_context as usize,
            binding,
            binding_context: client_binding_context as usize,
            dispatch: client_dispatch.cast(),
            npi_id: *reg.NpiId,
            module: *reg.ModuleId,
            header: ext.header,
            params_null: ext.data.is_null(),
            params,
            flags: ext.prog_attach_flags,
            detached: AtomicBool::new(false),
            cleaned: AtomicBool::new(false),
        })
    };
    // SAFETY: writable out pointers; the record stays alive in `clients`.
    unsafe {
        *provider_binding_context = Arc::as_ptr(&record) as *mut c_void;
        *provider_dispatch = std::ptr::null();
    }
    p.clients.lock().unwrap().push(record);
    STATUS_SUCCESS
}

unsafe extern "win64" fn hook_detach_client(provider_binding_context: *mut c_void) -> NTSTATUS {
    // SAFETY: the HookClient given at attach, kept alive by its provider.
    let c = unsafe { &*(provider_binding_context as *const HookClient) };
    c.detached.store(true, Ordering::SeqCst);
    // SAFETY: the provider outlives its bindings.
    let p = unsafe { &*(c.provider as *const HookProvider) };
    match &*p.pend_detach.lock().unwrap() {
        Some(tx) => {
            tx.send(c.binding).unwrap();
            STATUS_PENDING
        }
        None => STATUS_SUCCESS,
    }
}

unsafe extern "win64" fn hook_cleanup(provider_binding_context: *mut c_void) {
    // SAFETY: as in hook_detach_client.
    let c = unsafe { &*(provider_binding_context as *const HookClient) };
    c.cleaned.store(true, Ordering::SeqCst);
}

fn finish(sim: Sim) {
    if let Err(findings) = sim.finish() {
        panic!("{findings}");
    }
}

fn take_violations() -> Vec<String> {
    violation::take().into_iter().map(|v| v.message).collect()
}

// ---------------------------------------------------------------------------
// 1. Program information
// ---------------------------------------------------------------------------

#[test]
fn loading_needs_a_program_information_provider_of_the_program_type() {
    let sim = Sim::new();
    let object = load_object();
    let e = load_error(&object, "core_invoke");
    assert!(
        matches!(e, CoreError::NoProgramInfoProvider(t) if t == program_type()),
        "{e}"
    );

    // A provider of another program type is not this program's: the core
    // answers STATUS_NOINTERFACE before NmrClientAttachProvider and does not
    // count it as a refusal.
    let other = PiProvider::register(other_program_type(), builder(other_program_type()).build());
    let e = load_error(&object, "core_invoke");
    assert!(matches!(e, CoreError::NoProgramInfoProvider(_)), "{e}");
    assert_eq!(other.attaches(), 0);
    assert!(nmr::bindings().is_empty());

    let valid = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");
    assert_eq!(valid.attaches(), 1);
    assert_eq!(other.attaches(), 0);
    assert_eq!(
        *valid.client_npi.lock().unwrap(),
        Some(EBPF_PROGRAM_INFO_EXTENSION_IID)
    );
    assert_eq!(program.program_info(), Some(expected_info(0, 0, 0)));
    assert_eq!(program.strict_findings(), vec![]);
    assert_eq!(program.refusals(), vec![]);
    drop(program);
    drop(valid);
    drop(other);
    finish(sim);
}

/// The malformations of the brief, each with the refusal the core gives.
fn malformed_providers() -> Vec<(OwnedProgramData, ValidationError)> {
    let mut out = Vec::new();

    let mut d = builder(program_type()).build();
    d.program_data_mut().header.version = 2;
    out.push((
        d,
        ValidationError {
            object: validate::Object::ProgramData,
            field: "header.version",
            rule: Rule::Version {
                found: 2,
                expected: 1,
            },
        },
    ));

    let mut d = builder(program_type()).build();
    d.addresses_mut(HelperSet::TypeSpecific)
        .helper_function_count = 4;
    out.push((
        d,
        ValidationError {
            object: validate::Object::HelperAddresses(HelperSet::TypeSpecific),
            field: "helper_function_count",
            rule: Rule::CountMismatch {
                addresses: 4,
                prototypes: 3,
            },
        },
    ));

    let mut d = builder(program_type()).build();
    d.program_data_mut().capabilities.value = 1;
    out.push((
        d,
        ValidationError {
            object: validate::Object::ProgramData,
            field: "capabilities",
            rule: Rule::CapabilitiesNonZero { found: 1 },
        },
    ));

    let mut d = builder(program_type()).build();
    d.program_data_mut().required_irql = 16;
    out.push((
        d,
        ValidationError {
            object: validate::Object::ProgramData,
            field: "required_irql",
            rule: Rule::IrqlAboveHigh { found: 16 },
        },
    ));
    out
}

#[test]
fn malformed_providers_are_refused_and_recorded() {
    let sim = Sim::new();
    let object = load_object();

    // Alone, each malformed provider leaves the program without one: the
    // core refuses it before NmrClientAttachProvider.
    for (data, why) in malformed_providers() {
        let p = PiProvider::register(program_type(), data);
        let e = load_error(&object, "core_invoke");
        assert!(matches!(e, CoreError::NoProgramInfoProvider(_)), "{why}");
        assert_eq!(p.attaches(), 0, "{why}");
    }

    // Registered before a valid provider (the NMR offers providers in
    // registration order), each is refused with its exact reason, then
    // the valid one binds.
    let (malformed, reasons): (Vec<_>, Vec<_>) = malformed_providers().into_iter().unzip();
    let malformed: Vec<_> = malformed
        .into_iter()
        .map(|d| PiProvider::register(program_type(), d))
        .collect();
    let other = PiProvider::register(other_program_type(), builder(other_program_type()).build());
    let valid = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");
    assert_eq!(
        program.refusals(),
        reasons
            .iter()
            .map(|r| AttachRefusal::Invalid(*r))
            .collect::<Vec<_>>()
    );
    assert!(malformed.iter().all(|p| p.attaches() == 0));
    assert_eq!(other.attaches(), 0);
    assert_eq!(valid.attaches(), 1);
    assert_eq!(program.program_info(), Some(expected_info(0, 0, 0)));
    drop(program);
    drop(malformed);
    drop(other);
    drop(valid);
    finish(sim);
}

#[test]
fn the_core_keeps_a_copy_of_the_program_data() {
    let sim = Sim::new();
    let object = load_object();
    let mut provider = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");
    // The extension changes its data after the core attached: the core
    // must not have kept pointers into it.
    provider.data.context_descriptor_mut().size = 8;
    provider.data.type_descriptor_mut().bpf_prog_type = 1;
    provider.data.prototypes_mut(HelperSet::TypeSpecific)[0].helper_id = 0x20000;
    provider.data.address_values_mut(HelperSet::TypeSpecific)[2] = 0;
    assert_eq!(program.program_info(), Some(expected_info(0, 0, 0)));
    drop(program);
    drop(provider);
    finish(sim);
}

#[test]
fn a_sloppy_provider_binds_and_the_strict_report_lists_what_is_wrong() {
    let sim = Sim::new();
    let object = load_object();
    // A fourth helper reuses id 0x10002 (with ext_add's address), and every
    // prototype has total_size 0.
    let mut data = builder(program_type())
        .helper(HelperSpec::new(
            0x10002,
            "duplicate",
            EBPF_RETURN_TYPE_INTEGER,
            [ANY, ANY, 0, 0, 0],
            addr(ext_add as *const () as usize),
        ))
        .build();
    for p in data.prototypes_mut(HelperSet::TypeSpecific) {
        p.header.total_size = 0;
    }
    let provider = PiProvider::register(program_type(), data);
    let program = load(&object, "core_invoke");
    assert_eq!(provider.attaches(), 1);
    assert_eq!(program.refusals(), vec![]);
    assert_eq!(
        program.strict_findings(),
        vec![
            Finding {
                object: validate::Object::HelperPrototype(HelperSet::TypeSpecific, 0),
                field: "header.total_size",
                issue: Issue::TotalSizeZero,
            },
            Finding {
                object: validate::Object::HelperPrototypes(HelperSet::TypeSpecific),
                field: "header.total_size",
                issue: Issue::StrideMismatch {
                    validated: 0,
                    copied: 72,
                },
            },
            Finding {
                object: validate::Object::HelperPrototype(HelperSet::TypeSpecific, 3),
                field: "helper_id",
                issue: Issue::DuplicateHelperId {
                    id: 0x10002,
                    first_index: 1,
                },
            },
        ]
    );
    let info = program.program_info().unwrap();
    assert_eq!(info.type_specific_helpers.len(), 4);

    // eBPF for Windows resolves a helper id to the first prototype with
    // that id: the program's call of 0x10002 reaches test_ext_ctx_id.
    let hook = HookProvider::valid(attach_type(), program_type());
    let link = program.attach(attach_type(), &[], 0).unwrap();
    let mut f = Framed {
        ctx: TestCtx {
            id: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    take_calls();
    let (r, _) = hook.client(0).invoke(&mut f.ctx);
    assert_eq!(r, EBPF_SUCCESS);
    assert_eq!(f.ctx.out, 8, "test_ext_ctx_id(2) on id 4");
    assert!(matches!(take_calls()[1], Call::CtxId { mul: 2, .. }));
    drop(link);
    drop(hook);
    drop(program);
    drop(provider);
    finish(sim);
}

// ---------------------------------------------------------------------------
// 2. Hook clients (links)
// ---------------------------------------------------------------------------

#[test]
fn a_link_attaches_only_to_a_provider_of_its_attach_type_and_program_type() {
    let sim = Sim::new();
    let object = load_object();
    let pi = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");

    let wrong_attach = HookProvider::valid(other_attach_type(), program_type());
    let wrong_program = HookProvider::valid(attach_type(), other_program_type());
    let mut bad = validate::attach_provider_data(program_type(), 42, BPF_LINK_TYPE_PLAIN);
    bad.header.version = 2;
    let malformed = HookProvider::register(attach_type(), bad);
    let null_type = HookProvider::register(
        attach_type(),
        validate::attach_provider_data(GUID_NULL, 42, BPF_LINK_TYPE_PLAIN),
    );
    let e = match program.attach(attach_type(), &[], 0) {
        Ok(_) => panic!("attached with no matching provider"),
        Err(e) => e,
    };
    let expected = [
        AttachRefusal::NoInterface {
            field: "ModuleId.Guid",
            expected: attach_type(),
            found: other_attach_type(),
        },
        AttachRefusal::NoInterface {
            field: "supported_program_type",
            expected: program_type(),
            found: other_program_type(),
        },
        AttachRefusal::Invalid(ValidationError {
            object: validate::Object::AttachProviderData,
            field: "header.version",
            rule: Rule::Version {
                found: 2,
                expected: 1,
            },
        }),
        AttachRefusal::Invalid(ValidationError {
            object: validate::Object::AttachProviderData,
            field: "supported_program_type",
            rule: Rule::NullGuid,
        }),
    ]
    .iter()
    .map(|r| format!("{r:?}"))
    .collect::<Vec<_>>()
    .join("; ");
    match e {
        CoreError::NoHookProvider {
            attach_type: t,
            detail,
        } => {
            assert_eq!(t, attach_type());
            assert_eq!(detail, expected);
        }
        e => panic!("{e}"),
    }
    for p in [&wrong_attach, &wrong_program, &malformed, &null_type] {
        assert!(p.clients().is_empty(), "the provider was never attached");
    }
    drop((wrong_attach, wrong_program, malformed, null_type));

    // No hook provider at all.
    assert!(matches!(
        program.attach(attach_type(), &[], 0),
        Err(CoreError::NoHookProvider { .. })
    ));

    drop(program);
    drop(pi);
    finish(sim);
}

#[test]
fn each_link_is_a_client_with_its_attach_data_and_the_core_dispatch_table() {
    let sim = Sim::new();
    let object = load_object();
    let pi = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");
    let hook = HookProvider::valid(attach_type(), program_type());

    let link1 = program.attach(attach_type(), &[1, 2, 3], 0x55).unwrap();
    let link2 = program.attach(attach_type(), &[], 7).unwrap();
    assert!(link1.is_attached() && link2.is_attached());
    assert_eq!(
        link1.provider(),
        Some(AttachProviderInfo {
            supported_program_type: program_type(),
            bpf_attach_type: 42,
            link_type: BPF_LINK_TYPE_PLAIN,
        })
    );
    assert_eq!(link1.strict_findings(), vec![]);

    let clients = hook.clients();
    assert_eq!(clients.len(), 2);
    let (c1, c2) = (&clients[0], &clients[1]);
    for c in [c1, c2] {
        assert_eq!(c.npi_id, EBPF_HOOK_EXTENSION_IID);
        assert_eq!((c.module.Length, c.module.Type), (24, MIT_GUID));
        assert_eq!(
            c.header,
            ebpf_extension_header_t {
                version: 1,
                size: 48,
                total_size: 48
            }
        );
        let t = c.table();
        assert_eq!((t.version, t.count), (1, 4));
        assert!(t.ebpf_program_invoke_function.is_some());
        assert!(t.ebpf_program_batch_begin_invoke_function.is_some());
        assert!(t.ebpf_program_batch_invoke_function.is_some());
        assert!(t.ebpf_program_batch_end_invoke_function.is_some());
    }
    assert_eq!(
        (c1.params_null, c1.params.as_slice(), c1.flags),
        (false, &[1u8, 2, 3][..], 0x55)
    );
    assert_eq!((c2.params_null, c2.params.len(), c2.flags), (true, 0, 7));
    assert_ne!(c1.module.Guid, c2.module.Guid, "a fresh ModuleId per link");
    assert_ne!(c1.binding_context, c2.binding_context);

    // Detaching a link deregisters its client: the provider is detached
    // and cleaned up before detach returns.
    link1.detach();
    assert!(c1.detached.load(Ordering::SeqCst) && c1.cleaned.load(Ordering::SeqCst));
    assert!(!c2.detached.load(Ordering::SeqCst));
    assert!(nmr::bindings()
        .iter()
        .all(|bd| bd.client_module != c1.module.Guid));
    assert!(nmr::registrations()
        .iter()
        .filter(|r| r.module_id == c1.module.Guid)
        .all(|r| r.deregistering && r.bindings == 0));
    drop(link2);
    assert!(c2.cleaned.load(Ordering::SeqCst));
    drop(hook);
    drop(program);
    drop(pi);
    finish(sim);
}

#[test]
fn dropping_a_link_waits_for_a_pending_provider_detach() {
    let sim = Sim::new();
    let object = load_object();
    let pi = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");
    let hook = HookProvider::valid(attach_type(), program_type());
    let link = program.attach(attach_type(), &[], 0).unwrap();
    let client = hook.client(0);
    let (detach_tx, detach_rx) = mpsc::channel();
    *hook.pend_detach.lock().unwrap() = Some(detach_tx);

    let completed = Arc::new(AtomicBool::new(false));
    let (returned_tx, returned_rx) = mpsc::channel();
    let dropper = {
        let completed = completed.clone();
        std::thread::spawn(move || {
            link.detach();
            let seen = completed.load(Ordering::SeqCst);
            returned_tx.send(()).unwrap();
            seen
        })
    };
    // (A bound on a hang only: nothing here depends on how long it takes.)
    let binding = detach_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("ProviderDetachClient was called");
    assert_eq!(binding, client.binding);
    // The provider has not completed: the dropping thread must end up
    // blocked in NmrWaitForClientDeregisterComplete, never returned.
    loop {
        match returned_rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => {}
            Ok(()) => panic!("Link::detach returned while the provider's detach was pending"),
            Err(mpsc::TryRecvError::Disconnected) => panic!("the dropping thread panicked"),
        }
        let waiting = nmr::registrations()
            .iter()
            .any(|r| r.module_id == client.module.Guid && r.waiting);
        if waiting {
            break;
        }
        std::thread::yield_now();
    }
    assert!(!client.cleaned.load(Ordering::SeqCst));
    completed.store(true, Ordering::SeqCst);
    // SAFETY: the binding whose detach the provider left pending; completed
    // from this thread at DISPATCH_LEVEL, as a DPC would.
    irql::at(2, || unsafe { NmrProviderDetachClientComplete(binding) });
    assert!(
        dropper.join().unwrap(),
        "Link::detach returned only after the completion"
    );
    assert!(client.cleaned.load(Ordering::SeqCst));
    *hook.pend_detach.lock().unwrap() = None;
    drop(hook);
    drop(program);
    drop(pi);
    finish(sim);
}

// ---------------------------------------------------------------------------
// 3. Invocation through the dispatch table
// ---------------------------------------------------------------------------

struct Bound {
    _object: Object,
    pi: Box<PiProvider>,
    program: LoadedProgram,
    hook: Box<HookProvider>,
    link: Link,
}

fn bind(name: &str, data: OwnedProgramData) -> Bound {
    let object = load_object();
    let pi = PiProvider::register(program_type(), data);
    let program = load(&object, name);
    let hook = HookProvider::valid(attach_type(), program_type());
    let link = program.attach(attach_type(), &[], 0).unwrap();
    Bound {
        _object: object,
        pi,
        program,
        hook,
        link,
    }
}

impl Bound {
    fn client(&self) -> Arc<HookClient> {
        self.hook.client(0)
    }

    fn end(self, sim: Sim) {
        let Bound {
            _object,
            pi,
            program,
            hook,
            link,
        } = self;
        drop(link);
        drop(hook);
        drop(program);
        drop(pi);
        finish(sim);
    }
}

#[test]
fn invoke_runs_the_program_with_the_extension_helpers_and_fills_the_header() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    take_calls();
    let mut packet = [41u8, 0];
    let mut f = Framed {
        header: [0xAAAA_AAAA_AAAA_AAAA; 8],
        ctx: TestCtx {
            id: 7,
            value: 11,
            data: packet.as_mut_ptr() as usize,
            data_end: packet.as_mut_ptr() as usize + 2,
            index: 0x1234,
            out: 0,
        },
    };
    let ctx_ptr: *mut TestCtx = &mut f.ctx;
    let (r, result) = client.invoke(ctx_ptr);
    assert_eq!(r, EBPF_SUCCESS);
    let returned = ext_args_value(7, 11, 0x1122_3344_5566_7788, 5);
    assert_eq!(returned, 0x1122_0000_006a_fabd);
    assert_eq!(result, (returned + 1) as u32, "the 32-bit result");
    assert_eq!(
        f.ctx.value, returned,
        "the helper's 64-bit value reached the program"
    );
    assert_eq!(f.ctx.out, 14, "test_ext_ctx_id(2) with id 7");
    assert_eq!(packet[0], 42);
    assert_eq!(
        take_calls(),
        [
            Call::Args([7, 11, 0x1122_3344_5566_7788, 0x1234, 5]),
            Call::CtxId {
                mul: 2,
                ctx: ctx_ptr as usize
            },
        ],
        "the helpers got the program's arguments (win64) and the context after the header"
    );
    // Slot 1: the core's copy of the context descriptor, not the extension's.
    let descriptor = f.header[1] as *const ebpf_context_descriptor_t;
    // SAFETY: the core's copy lives while the program is bound.
    assert_eq!(unsafe { *descriptor }, DESC);
    // SAFETY: the builder's pointers are valid while the provider lives.
    let published = unsafe {
        (*(*b.pi.data.program_data().program_info).program_type_descriptor).context_descriptor
    };
    assert_ne!(descriptor, published);
    // Slot 0: the execution state of the core's own one-program batch.
    assert_ne!(f.header[0], 0xAAAA_AAAA_AAAA_AAAA);
    assert_ne!(f.header[0], 0);
    assert_eq!(b.program.invocations(), 1);
    assert!(take_violations().is_empty());
    b.end(sim);
}

#[test]
fn a_batch_writes_its_state_into_the_header_and_misuse_is_detected() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let mut f = Framed::default();
    let mut state = [0u64; 8];

    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    for i in 0..3u64 {
        f.ctx.id = i;
        let (r, result) = client.batch_invoke(&mut f.ctx, &state);
        assert_eq!(r, EBPF_SUCCESS);
        assert_eq!(
            result,
            (ext_args_value(i, 0, 0x1122_3344_5566_7788, 5) + 1) as u32
        );
        assert_eq!(
            f.header[0],
            state.as_ptr() as u64,
            "slot 0: the batch state"
        );
        f.ctx.value = 0;
    }
    assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
    assert!(take_violations().is_empty());

    // batch_invoke after batch_end: outside a batch.
    let (r, _) = client.batch_invoke(&mut f.ctx, &state);
    assert_eq!(r, EBPF_INVALID_ARGUMENT);
    let v = take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("batch_invoke outside a batch"), "{v:?}");

    // batch_invoke without batch_begin.
    let fresh = [0u64; 8];
    let (r, _) = client.batch_invoke(&mut f.ctx, &fresh);
    assert_eq!(r, EBPF_INVALID_ARGUMENT);
    let v = take_violations();
    assert!(v.len() == 1 && v[0].contains("outside a batch"), "{v:?}");

    // A state smaller than ebpf_execution_context_state_t.
    let mut small = [0u64; 8];
    assert_eq!(client.batch_begin(&mut small, 32), EBPF_INVALID_ARGUMENT);
    let v = take_violations();
    assert!(v.len() == 1 && v[0].contains("state of 32 bytes"), "{v:?}");

    // The IRQL changed between batch_begin and batch_invoke.
    let invocations = b.program.invocations();
    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    let (r, _) = irql::at(2, || client.batch_invoke(&mut f.ctx, &state));
    assert_eq!(r, EBPF_INVALID_ARGUMENT);
    let v = take_violations();
    assert!(
        v.len() == 1 && v[0].contains("at IRQL 2, but the batch began at IRQL 0"),
        "{v:?}"
    );
    assert_eq!(
        b.program.invocations(),
        invocations,
        "the program did not run"
    );
    assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);

    // A batch begun at DISPATCH_LEVEL runs there.
    irql::at(2, || {
        assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
        assert_eq!(client.batch_invoke(&mut f.ctx, &state).0, EBPF_SUCCESS);
        assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
    });
    assert!(take_violations().is_empty());
    b.end(sim);
}

#[test]
fn a_pool_context_without_room_for_the_header_is_refused() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let tag = u32::from_le_bytes(*b"Ctxt");
    take_calls();

    // The extension allocated just the context: no header in front of it.
    let bare = pool::ExAllocatePool2(pool::POOL_FLAG_NON_PAGED, 40, tag) as *mut TestCtx;
    assert!(!bare.is_null());
    let (r, _) = client.invoke(bare);
    assert_eq!(r, EBPF_INVALID_ARGUMENT);
    let v = take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("0 bytes into a pool block tagged 'Ctxt'")
            && v[0].contains("did not reserve the 64-byte context header"),
        "{v:?}"
    );
    assert!(take_calls().is_empty(), "the program did not run");
    assert_eq!(b.program.invocations(), 0);

    // With the header reserved in the same block, the same context runs.
    let framed = pool::ExAllocatePool2(pool::POOL_FLAG_NON_PAGED, 64 + 40, tag) as *mut u8;
    assert!(!framed.is_null());
    // SAFETY: 104 bytes: the context starts at byte 64.
    let ctx = unsafe { framed.add(64) } as *mut TestCtx;
    let (r, _) = client.invoke(ctx);
    assert_eq!(r, EBPF_SUCCESS);
    // SAFETY: the block is live; slot 1 of the header is at byte 8.
    let slot1 = unsafe { (framed as *const u64).add(1).read() };
    assert_ne!(slot1, 0);
    assert!(take_violations().is_empty());
    // SAFETY: both blocks came from ExAllocatePool2 with this tag.
    unsafe {
        pool::ExFreePoolWithTag(bare.cast(), tag);
        pool::ExFreePoolWithTag(framed.cast(), tag);
    }
    b.end(sim);
}

#[test]
fn a_faulting_program_returns_an_error_and_is_reported() {
    let sim = Sim::new();
    let b = bind("core_fault", builder(program_type()).build());
    let mut f = Framed::default();
    let (r, _) = b.client().invoke(&mut f.ctx);
    assert_eq!(r, EBPF_FAILED);
    let errors = b.program.take_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].insn_offset, Some(0), "{}", errors[0]);
    assert!(
        errors[0].message.contains("out-of-bounds read of 4 bytes"),
        "{}",
        errors[0]
    );
    assert!(b.program.take_errors().is_empty(), "taken");
    b.end(sim);
}

#[test]
fn a_global_helper_of_the_program_type_overrides_the_general_helper() {
    let sim = Sim::new();
    let data = builder(program_type())
        .global_helper(HelperSpec::new(
            19,
            "bpf_get_current_pid_tgid",
            EBPF_RETURN_TYPE_INTEGER,
            [0; 5],
            addr(ext_pid as *const () as usize),
        ))
        .build();
    let b = bind("core_pid", data);
    take_calls();
    let mut f = Framed::default();
    let (r, result) = b.client().invoke(&mut f.ctx);
    assert_eq!((r, result), (EBPF_SUCCESS, 7));
    assert_eq!(take_calls(), [Call::Pid]);
    assert_eq!(f.ctx.value, 0xFEED_0000_0000_0019);
    b.end(sim);
}

// ---------------------------------------------------------------------------
// 4. The program-information provider detaches
// ---------------------------------------------------------------------------

#[test]
fn after_the_provider_detaches_the_core_stops_using_it() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let mut f = Framed::default();
    assert_eq!(client.invoke(&mut f.ctx).0, EBPF_SUCCESS);
    take_calls();

    deregister_provider(&b.pi.handle);
    assert_eq!(b.program.program_info(), None);
    let (r, _) = client.invoke(&mut f.ctx);
    assert_eq!(r, EBPF_EXTENSION_FAILED_TO_LOAD);
    assert!(
        take_calls().is_empty(),
        "no helper of the gone extension ran"
    );
    assert!(matches!(
        b.program.test_run(&[], &[], 0, 0),
        Err(CoreError::ExtensionGone(t)) if t == program_type()
    ));
    assert!(take_violations().is_empty());
    b.end(sim);
}

#[test]
fn a_provider_detach_during_a_run_is_pending_until_the_program_returns() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let handle = b.pi.handle();
    // ext_args deregisters the provider while the program is inside it.
    DEREGISTER_IN_HELPER.store(handle, Ordering::SeqCst);
    let mut f = Framed::default();
    f.ctx.id = 1;
    let (r, result) = client.invoke(&mut f.ctx);
    assert_eq!(r, EBPF_SUCCESS, "the run in flight completed");
    assert_eq!(
        result,
        (ext_args_value(1, 0, 0x1122_3344_5566_7788, 5) + 1) as u32
    );
    let (status, states) = DEREGISTER_IN_HELPER_STATUS.lock().unwrap().take().unwrap();
    assert_eq!(status, STATUS_PENDING);
    assert_eq!(
        states,
        [nmr::BindingState::Detaching {
            provider: nmr::DetachState::Done,
            client: nmr::DetachState::Pending,
        }],
        "the core's detach was pending while the program ran"
    );
    assert!(
        nmr::bindings().iter().all(|bd| bd.provider != handle),
        "completed when the program returned"
    );
    assert_eq!(b.program.program_info(), None);
    // SAFETY: the registration deregistered by the helper.
    unsafe { NmrWaitForProviderDeregisterComplete(handle) };
    b.pi.handle.store(0, Ordering::SeqCst);
    assert_eq!(client.invoke(&mut f.ctx).0, EBPF_EXTENSION_FAILED_TO_LOAD);
    b.end(sim);
}

// ---------------------------------------------------------------------------
// 5. bpf_prog_test_run
// ---------------------------------------------------------------------------

static HOOK_IRQL: Mutex<Vec<(&'static str, u8)>> = Mutex::new(Vec::new());

#[repr(C)]
struct Owned {
    header: [u64; 8],
    ctx: TestCtx,
    data: Vec<u8>,
}

unsafe extern "win64" fn context_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    HOOK_IRQL.lock().unwrap().push(("create", irql::current()));
    if context_size_in != 0 && context_size_in != 40 {
        return EBPF_INVALID_ARGUMENT;
    }
    // SAFETY: the core passes buffers valid for the given sizes.
    let data = unsafe { std::slice::from_raw_parts(data_in, data_size_in) }.to_vec();
    let mut ctx = TestCtx::default();
    if context_size_in == 40 {
        // SAFETY: 40 bytes of a TestCtx image.
        ctx = unsafe { (context_in as *const TestCtx).read_unaligned() };
    }
    let mut owned = Box::new(Owned {
        header: [0; 8],
        ctx,
        data,
    });
    owned.ctx.data = owned.data.as_mut_ptr() as usize;
    owned.ctx.data_end = owned.ctx.data + owned.data.len();
    let raw = Box::into_raw(owned);
    // SAFETY: the core's out pointer; the context is just after the header.
    unsafe { *context = std::ptr::addr_of_mut!((*raw).ctx).cast() };
    EBPF_SUCCESS
}

unsafe extern "win64" fn context_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    HOOK_IRQL.lock().unwrap().push(("destroy", irql::current()));
    // SAFETY: `context` is the ctx field of an Owned made by context_create.
    let owned = unsafe { Box::from_raw((context as *mut u8).sub(64) as *mut Owned) };
    // SAFETY: the core gives buffers of the capacities in the size arguments.
    unsafe {
        let n = owned.data.len().min(*data_size_out);
        std::ptr::copy_nonoverlapping(owned.data.as_ptr(), data_out, n);
        *data_size_out = n;
        let c = 40.min(*context_size_out);
        std::ptr::copy_nonoverlapping(&owned.ctx as *const TestCtx as *const u8, context_out, c);
        *context_size_out = c;
    }
}

fn bytes_of(ctx: &TestCtx) -> Vec<u8> {
    // SAFETY: a TestCtx is 40 bytes of plain data without padding.
    unsafe { std::slice::from_raw_parts(ctx as *const TestCtx as *const u8, 40) }.to_vec()
}

#[test]
fn test_run_uses_the_provider_context_functions_at_its_irql() {
    let sim = Sim::new();
    let data = builder(program_type())
        .context_functions(context_create, context_destroy, 2)
        .build();
    let object = load_object();
    let pi = PiProvider::register(program_type(), data);
    let program = load(&object, "core_invoke");
    assert_eq!(
        program.program_info(),
        Some(expected_info(
            addr(context_create as *const () as usize),
            addr(context_destroy as *const () as usize),
            2
        ))
    );
    HOOK_IRQL.lock().unwrap().clear();
    take_calls();
    let ctx_in = TestCtx {
        id: 3,
        value: 2,
        index: 9,
        ..Default::default()
    };
    let out = program
        .test_run(&[100, 200], &bytes_of(&ctx_in), 8, 40)
        .unwrap();
    let returned = ext_args_value(3, 2, 0x1122_3344_5566_7788, 5);
    assert_eq!(out.result, (returned + 1) as u32 as u64);
    assert_eq!(out.data_out, [101, 200], "the program incremented data[0]");
    assert_eq!(out.context_out.len(), 40);
    let ctx_out: TestCtx =
        // SAFETY: 40 bytes of a TestCtx image.
        unsafe { (out.context_out.as_ptr() as *const TestCtx).read_unaligned() };
    assert_eq!((ctx_out.id, ctx_out.value, ctx_out.out), (3, returned, 6));
    assert_eq!(
        *HOOK_IRQL.lock().unwrap(),
        [("create", 2), ("destroy", 2)],
        "both at required_irql"
    );
    assert_eq!(irql::current(), 0);
    assert_eq!(
        take_calls()[0],
        Call::Args([3, 2, 0x1122_3344_5566_7788, 9, 5])
    );

    // A context of the wrong size is refused by context_create.
    assert!(matches!(
        program.test_run(&[1], &[0; 8], 8, 40),
        Err(CoreError::TestRun(
            ntsim::ebpf::TestRunError::ContextCreate(6)
        ))
    ));
    drop(program);
    drop(pi);
    finish(sim);
}

#[test]
fn test_run_needs_context_functions() {
    let sim = Sim::new();
    let object = load_object();
    let pi = PiProvider::register(program_type(), builder(program_type()).build());
    let program = load(&object, "core_invoke");
    assert!(matches!(
        program.test_run(&[], &[], 0, 0),
        Err(CoreError::TestRunUnsupported)
    ));
    drop(program);
    drop(pi);
    finish(sim);
}

// ---------------------------------------------------------------------------
// General helpers the other tests do not cover
// ---------------------------------------------------------------------------

struct FixedRandom;

impl KernelInfo for FixedRandom {
    fn random_u32(&self) -> u32 {
        0xC0FF_EE42
    }
}

/// RFC 1071: the one's complement sum of 16-bit words, folded.
fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn csum_diff_and_prandom() {
    let object = load_object();
    let helpers = HashMap::new();
    let trace = Mutex::new(Vec::new());
    let env = ExecEnv {
        helpers: &helpers,
        kernel: &FixedRandom,
        trace: &trace,
        extra_regions: &[],
    };
    let mut ctx = TestCtx::default();
    let desc = ntsim::ebpf::ContextDescriptor {
        size: 40,
        data: 16,
        end: 24,
        meta: -1,
    };
    let p = object.program("csum_test").unwrap();
    // SAFETY: a live 40-byte TestCtx with null packet pointers.
    let r = unsafe { p.run(&mut ctx as *mut TestCtx as *mut u8, &desc, &env) }.unwrap();
    assert_eq!(r, 0);
    let v = object
        .map("csum_out")
        .unwrap()
        .lookup(&0u32.to_le_bytes())
        .unwrap();
    let field = |i: usize| i64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap());

    let words: [u64; 10] = [
        0x4500, 0x0073, 0x0000, 0x4000, 0x4011, 0x0000, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
    ];
    let sum: u64 = words.iter().sum();
    assert_eq!(field(0), sum as i64, "csum_diff(NULL, 0, hdr, 20, 0)");
    // The IPv4 header checksum of this header is 0xb861.
    assert_eq!(!fold(field(0) as u64), 0xb861);
    let complement: u64 = words.iter().map(|w| 0xFFFF - w).sum();
    assert_eq!(
        field(1),
        complement as i64,
        "csum_diff(hdr, 20, NULL, 0, 0)"
    );
    // Replacing the last word 0x00c7 by 0x0002 gives the new header's sum.
    let updated = sum + (0xc0a8 + 0x0002) + ((0xFFFF - 0xc0a8) + (0xFFFF - 0x00c7));
    assert_eq!(field(2), updated as i64);
    let new_sum: u64 = words[..9].iter().sum::<u64>() + 0x0002;
    assert_eq!(fold(field(2) as u64), fold(new_sum));
    assert_eq!(field(3), -22, "a size not a multiple of 4: -EINVAL");
    assert_eq!(field(4), -22, "a sum that overflows int: -EINVAL");
    assert_eq!(field(5) as u64, 0xC0FF_EE42, "bpf_get_prandom_u32");
}
