//! ntsim's eBPF core as an NMR client, against host-side providers written
//! in Rust: a program-information provider and hook providers registered
//! with ntsim's NMR exactly as an extension driver registers them, with
//! `extern "win64"` callbacks and helpers. The programs are those of
//! tests/bpf/core_test.c, of the host-side test program type of
//! tests/bpf/include/ntsim_test.h.

use ntsim::ebpf::abi::*;
use ntsim::ebpf::core::{CoreError, Link, LoadedProgram, INTERPRETER_ERROR_RESULT};
use ntsim::ebpf::validate::{
    self, AttachProviderInfo, AttachRefusal, Finding, HelperFunction, HelperPrototype, HelperSet,
    HelperSpec, Issue, OwnedProgramData, ProgramDataBuilder, ProgramInfo, ProgramTypeDescriptor,
    Rule, ValidationError,
};
use ntsim::ebpf::{store, ExecEnv, KernelInfo, Object};
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

#[path = "core/running.rs"]
mod running;

#[path = "core/batches.rs"]
mod batches;

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

/// Registers the host-side program type in the eBPF store (as its
/// installer would), so that `core_test.o`'s `sample` sections resolve.
/// The caller holds the `Sim` (the store is in its registry).
fn register_store() {
    store::register(&builder(program_type()).store_entry(&[("sample", attach_type(), 0)]));
}

fn load_object() -> Object {
    let path = format!("{}/../bpf/core_test.o", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    register_store();
    Object::load(&bytes, &store::section_map()).unwrap_or_else(|e| panic!("core_test.o: {e}"))
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
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < ntsim::sync::wait_limit(),
            "the dropping thread never blocked in NmrWaitForClientDeregisterComplete"
        );
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
