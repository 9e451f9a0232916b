//! Running programs: invocation through the core's dispatch table, the
//! program-information provider detaching, `bpf_prog_test_run`, and the
//! general helpers the other tests do not cover.

use super::*;

// ---------------------------------------------------------------------------
// 3. Invocation through the dispatch table
// ---------------------------------------------------------------------------

/// A program bound to a test provider and attached. The fields drop in
/// declaration order, the link first, so a test that panics still detaches
/// before its providers go away.
pub(super) struct Bound {
    /// None once a test detached it.
    pub(super) link: Option<Link>,
    pub(super) hook: Box<HookProvider>,
    pub(super) program: LoadedProgram,
    pub(super) pi: Box<PiProvider>,
    _object: Object,
}

pub(super) fn bind(name: &str, data: OwnedProgramData) -> Bound {
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
        link: Some(link),
    }
}

impl Bound {
    pub(super) fn client(&self) -> Arc<HookClient> {
        self.hook.client(0)
    }

    /// Detaches and unloads everything, in order.
    pub(super) fn drop_all(self) {
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
    }

    pub(super) fn end(self, sim: Sim) {
        self.drop_all();
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
    let (r, result) = b.client().invoke(&mut f.ctx);
    // As eBPF for Windows' core does for an interpreted program: the invoke
    // succeeds and the result is the interpreter's -1.
    assert_eq!((r, result), (EBPF_SUCCESS, INTERPRETER_ERROR_RESULT));
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
    // The store the object's sections resolve through is the machine's.
    let _sim = Sim::new();
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

#[test]
fn test_run_of_a_program_stopped_by_an_error_gives_the_interpreters_minus_one() {
    let sim = Sim::new();
    let data = builder(program_type())
        .context_functions(context_create, context_destroy, 0)
        .build();
    let object = load_object();
    let pi = PiProvider::register(program_type(), data);
    let program = load(&object, "core_fault");
    let out = program
        .test_run(&[7], &bytes_of(&TestCtx::default()), 8, 40)
        .expect("the test run itself succeeds, as in eBPF for Windows");
    assert_eq!(out.result, u64::from(INTERPRETER_ERROR_RESULT));
    assert_eq!(out.data_out, [7], "context_destroy's outputs are kept");
    let errors = program.take_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    drop(program);
    drop(pi);
    finish(sim);
}

/// What the misbehaving context functions below do.
static EDGE_MODE: AtomicUsize = AtomicUsize::new(0);
const READ_PAST_DATA_IN: usize = 1;
const WRITE_PAST_DATA_OUT: usize = 2;

unsafe extern "win64" fn edge_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> ebpf_result_t {
    if EDGE_MODE.load(Ordering::SeqCst) == READ_PAST_DATA_IN {
        // SAFETY: deliberately not: one byte past data_in, which must fault.
        let past = unsafe { std::ptr::read_volatile(data_in.add(data_size_in)) };
        eprintln!("read {past} past data_in without a fault");
    }
    // SAFETY: forwarded.
    unsafe { context_create(data_in, data_size_in, context_in, context_size_in, context) }
}

unsafe extern "win64" fn edge_destroy(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    if EDGE_MODE.load(Ordering::SeqCst) == WRITE_PAST_DATA_OUT {
        // SAFETY: deliberately not: one byte past data_out, which must fault.
        unsafe { std::ptr::write_volatile(data_out.add(*data_size_out), 0xEE) };
        eprintln!("wrote past data_out without a fault");
    }
    // SAFETY: forwarded.
    unsafe {
        context_destroy(
            context,
            data_out,
            data_size_out,
            context_out,
            context_size_out,
        )
    }
}

/// Runs one test run with the edge context functions in `mode`.
fn edge_test_run(mode: usize) {
    let sim = Sim::new();
    let data = builder(program_type())
        .context_functions(edge_create, edge_destroy, 0)
        .build();
    let object = load_object();
    let pi = PiProvider::register(program_type(), data);
    let program = load(&object, "core_invoke");
    EDGE_MODE.store(mode, Ordering::SeqCst);
    let out = program.test_run(&[1, 2, 3], &bytes_of(&TestCtx::default()), 5, 40);
    EDGE_MODE.store(0, Ordering::SeqCst);
    assert!(out.is_ok(), "{out:?}");
    drop(program);
    drop(pi);
    finish(sim);
}

#[test]
fn test_run_buffers_end_against_a_guard_page() {
    const NAME: &str = "running::test_run_buffers_end_against_a_guard_page";
    if let Ok(mode) = std::env::var("NTSIM_EDGE_MODE") {
        if ntsim::child::is_child(NAME) {
            edge_test_run(mode.parse().unwrap());
            return;
        }
    }
    // Within bounds: fine.
    edge_test_run(0);
    for (mode, what) in [
        (READ_PAST_DATA_IN, "invalid read access"),
        (WRITE_PAST_DATA_OUT, "invalid write access"),
    ] {
        std::env::set_var("NTSIM_EDGE_MODE", mode.to_string());
        let out = ntsim::child::run_test_in_child(NAME);
        std::env::remove_var("NTSIM_EDGE_MODE");
        assert_eq!(
            out.status.code(),
            Some(ntsim::crash::FATAL_EXIT_STATUS),
            "mode {mode}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(what)
                && out.stderr.contains("past the end of a")
                && out.stderr.contains("tagged 'TRun'"),
            "mode {mode}: {}",
            out.stderr
        );
    }
}
