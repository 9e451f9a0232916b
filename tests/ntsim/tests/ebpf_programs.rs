//! Runs the programs of tests/bpf through ntsim's eBPF core against a
//! host-side test program type (a Rust context struct and two extension
//! helpers written as `extern "win64"` functions), asserting exact results,
//! records and map contents.

use ntsim::ebpf::*;
use ntsim::types::GUID;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `test_ctx_t` of tests/bpf/include/ntsim_test.h.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct TestCtx {
    id: u64,
    value: u64,
    data: usize,
    data_end: usize,
    index: u32,
    out: u32,
}

const DESC: ContextDescriptor = ContextDescriptor {
    size: 40,
    data: 16,
    end: 24,
    meta: -1,
};

const _: () = assert!(std::mem::size_of::<TestCtx>() == 40);

fn program_type() -> GUID {
    GUID::parse("6f2f2f7e-0d0e-4d3a-9b1c-1a2b3c4d5e6f").unwrap()
}

fn attach_type() -> GUID {
    GUID::parse("7e3e3e8f-1e1f-4e4b-8c2d-2b3c4d5e6f70").unwrap()
}

fn sections() -> SectionMap {
    let mut s = SectionMap::new();
    s.add("sample", program_type(), attach_type());
    s
}

fn object_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/../bpf/{name}.o", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(name: &str) -> Object {
    Object::load(&object_bytes(name), &sections()).unwrap_or_else(|e| panic!("{name}.o: {e}"))
}

extern "win64" fn ext_add(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    a + b
}

extern "win64" fn ext_ctx_id(mul: u64, _: u64, _: u64, _: u64, _: u64, ctx: u64) -> u64 {
    // SAFETY: the core passes the program context (a TestCtx) as the sixth
    // argument of an implicit_context helper.
    let ctx = unsafe { &*(ctx as *const TestCtx) };
    ctx.id * mul
}

struct TestKernel;

impl KernelInfo for TestKernel {
    fn current_pid_tgid(&self) -> u64 {
        (1234 << 32) | 5678
    }
    fn current_logon_id(&self) -> u64 {
        0x1122_3344
    }
    fn is_current_admin(&self) -> i32 {
        1
    }
    fn current_process_start_key(&self) -> u64 {
        0xabc_def0
    }
    fn current_thread_create_time(&self) -> i64 {
        133_000_000_000_000_000
    }
    fn current_cpu(&self) -> u32 {
        1
    }
    fn time_since_boot_100ns(&self, include_suspend: bool) -> u64 {
        if include_suspend {
            123_456_789
        } else {
            123_000_000
        }
    }
}

struct Harness {
    helpers: HashMap<u32, ExtensionHelper>,
    trace: Mutex<Vec<String>>,
}

impl Harness {
    fn new() -> Harness {
        let mut helpers = HashMap::new();
        helpers.insert(
            0x10001,
            ExtensionHelper {
                address: ext_add as *const () as usize,
                implicit_context: false,
                arguments: [0; 5],
            },
        );
        helpers.insert(
            0x10002,
            ExtensionHelper {
                address: ext_ctx_id as *const () as usize,
                implicit_context: true,
                arguments: [0; 5],
            },
        );
        Harness {
            helpers,
            trace: Mutex::new(Vec::new()),
        }
    }

    fn run(&self, program: &Arc<Program>, ctx: &mut TestCtx) -> Result<u64, ProgramError> {
        let env = ExecEnv {
            helpers: &self.helpers,
            kernel: &TestKernel,
            trace: &self.trace,
            extra_regions: &[],
        };
        // SAFETY: ctx is a live TestCtx of DESC.size bytes; its packet
        // pointers are null or set by the test to a live buffer.
        unsafe { program.run(ctx as *mut TestCtx as *mut u8, &DESC, &env) }
    }
}

fn u32k(k: u32) -> Vec<u8> {
    k.to_le_bytes().to_vec()
}

fn results(object: &Object, n: u32) -> Vec<i64> {
    let m = object.map("results").unwrap();
    (0..n)
        .map(|i| i64::from_le_bytes(m.lookup(&u32k(i)).unwrap().try_into().unwrap()))
        .collect()
}

#[test]
fn every_source_has_its_committed_object() {
    let dir = format!("{}/../bpf", env!("CARGO_MANIFEST_DIR"));
    let mut sources = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "c") {
            sources += 1;
            let obj = path.with_extension("o");
            assert!(
                obj.exists(),
                "{} has no committed object (run tests/bpf/build.sh)",
                path.display()
            );
        }
    }
    assert!(sources >= 8, "expected the test programs in {dir}");
}

#[test]
fn keyed_maps_of_every_type() {
    let object = load("maps");
    let h = Harness::new();
    let mut ctx = TestCtx {
        value: 7,
        ..Default::default()
    };
    let r = h
        .run(object.program("maps_test").unwrap(), &mut ctx)
        .unwrap();
    assert_eq!(r, 42);
    assert_eq!(
        results(&object, 13),
        [
            0,   // hash: insert k1 NOEXIST
            0,   // insert k2
            -29, // k3: the map is full (EBPF_OUT_OF_SPACE)
            -26, // k1 NOEXIST again: EBPF_KEY_ALREADY_EXISTS
            -19, // k3 EXIST: EBPF_KEY_NOT_FOUND
            0,   // delete k2
            -19, // delete k2 again
            105, // lookup_and_delete k1: the value written through the pointer
            1,   // k1 is gone
            0,   // array update with an 8-byte key
            -6,  // array index 4 of 4: EBPF_INVALID_ARGUMENT
            77,  // key 0x1_0000_0002 read element 2
            0,   // LRU insert into a full map evicts
        ]
    );
    let hash = object.map("hash").unwrap();
    assert!(hash.keys().is_empty());
    let array = object.map("array").unwrap();
    assert_eq!(array.lookup(&u32k(2)).unwrap(), 77u32.to_le_bytes());
    // Array delete zeroes the element (eBPF for Windows).
    array.delete(&u32k(2)).unwrap();
    assert_eq!(array.lookup(&u32k(2)).unwrap(), [0; 4]);
    // Per-CPU: the program ran on CPU 1; lookup returns every CPU's value.
    let percpu = object.map("percpu_hash").unwrap().lookup(&u32k(1)).unwrap();
    assert_eq!(percpu, [[0u8; 8], 7u64.to_le_bytes()].concat());
    let percpu_array = object
        .map("percpu_array")
        .unwrap()
        .lookup(&u32k(0))
        .unwrap();
    assert_eq!(percpu_array, [[0u8; 8], 8u64.to_le_bytes()].concat());
    // LRU: k1 was used after k2, so k2 was evicted.
    assert_eq!(object.map("lru").unwrap().keys(), [u32k(1), u32k(3)]);
    assert_eq!(object.map("lru_percpu").unwrap().keys(), [u32k(2), u32k(3)]);
}

#[test]
fn legacy_map_section_and_atomic_add() {
    let object = load("legacy_maps");
    let counters = object.map("counters").unwrap();
    assert_eq!(counters.def().map_type, 2);
    assert_eq!(
        (
            counters.def().key_size,
            counters.def().value_size,
            counters.def().max_entries
        ),
        (4, 8, 3)
    );
    let h = Harness::new();
    let p = object.program("count").unwrap();
    let mut ctx = TestCtx {
        index: 1,
        value: 5,
        ..Default::default()
    };
    assert_eq!(h.run(p, &mut ctx).unwrap(), 5);
    assert_eq!(h.run(p, &mut ctx).unwrap(), 10);
    assert_eq!(counters.lookup(&u32k(1)).unwrap(), 10u64.to_le_bytes());
    ctx.index = 3;
    assert_eq!(h.run(p, &mut ctx).unwrap() as i32, -1);
}

#[test]
fn queue_and_stack() {
    let object = load("queue_stack");
    let h = Harness::new();
    let mut ctx = TestCtx::default();
    h.run(object.program("queue_stack_test").unwrap(), &mut ctx)
        .unwrap();
    assert_eq!(
        results(&object, 12),
        [0, 0, -29, 0, 0, -29, 0, 2, 2, 2, 1, -7]
    );
    let queue = object.map("queue").unwrap();
    assert_eq!(queue.pop(true).unwrap(), 9u32.to_le_bytes());
    assert_eq!(queue.pop(true), Err(EbpfResult::ObjectNotFound));
}

#[test]
fn ring_buffer_perf_and_trace_output() {
    let object = load("output");
    let h = Harness::new();
    let mut packet = [0x11u8, 0x22, 0x33];
    let mut ctx = TestCtx {
        id: 9,
        value: 0x55,
        data: packet.as_mut_ptr() as usize,
        data_end: packet.as_mut_ptr() as usize + packet.len(),
        ..Default::default()
    };
    let r = h
        .run(object.program("output_test").unwrap(), &mut ctx)
        .unwrap();
    assert_eq!(r as i32, -29, "the third ring record does not fit");
    assert_eq!(ctx.out, 0x7ff, "every output step as expected");
    let record = [9u64.to_le_bytes(), 0x55u64.to_le_bytes()].concat();
    let ring = object.map("ring").unwrap();
    assert_eq!(ring.drain_ring(), [record.clone(), record]);
    assert!(ring.drain_ring().is_empty());
    let perf = object.map("perf").unwrap().drain_perf();
    assert_eq!(
        perf,
        [
            PerfRecord {
                cpu: 1,
                data: vec![0xcd, 0xab, 0, 0]
            },
            PerfRecord {
                cpu: 1,
                data: vec![0xcd, 0xab, 0, 0, 0x11, 0x22]
            },
        ]
    );
    assert_eq!(
        *h.trace.lock().unwrap(),
        ["hello", "id=9", "7-ff", "-3 4 beef"]
    );
}

#[test]
fn tail_calls_chain_unwind_and_limit() {
    let object = load("tail_call");
    let progs = object.map("progs").unwrap();
    for (i, name) in [(1, "second"), (2, "third"), (3, "loop")] {
        progs
            .set_program(i, Some(Arc::clone(object.program(name).unwrap())))
            .unwrap();
    }
    let h = Harness::new();
    let first = object.program("first").unwrap();
    let mut ctx = TestCtx {
        index: 1,
        ..Default::default()
    };
    assert_eq!(h.run(first, &mut ctx).unwrap(), 3);
    assert_eq!(
        ctx.out, 123,
        "first -> second -> third, and first stopped at its tail call"
    );
    ctx = TestCtx::default();
    assert_eq!(h.run(first, &mut ctx).unwrap() as i32, -1, "empty slot 0");
    assert_eq!(ctx.out, 1);
    ctx = TestCtx::default();
    let r = h.run(object.program("loop").unwrap(), &mut ctx).unwrap();
    assert_eq!(r as i32, -27, "EBPF_NO_MORE_TAIL_CALLS");
    assert_eq!(ctx.out, 33, "33 programs in one chain");
    for i in 1..=3 {
        progs.set_program(i, None).unwrap();
    }
}

fn field_i64(v: &[u8], index: usize) -> i64 {
    i64::from_le_bytes(v[index * 8..index * 8 + 8].try_into().unwrap())
}

#[test]
fn memory_string_clock_process_and_extension_helpers() {
    let object = load("helpers");
    let h = Harness::new();
    let mut ctx = TestCtx {
        id: 21,
        ..Default::default()
    };
    assert_eq!(
        h.run(object.program("helpers_test").unwrap(), &mut ctx)
            .unwrap(),
        0
    );
    let v = object.map("out").unwrap().lookup(&u32k(0)).unwrap();
    let f: Vec<i64> = (0..25).map(|i| field_i64(&v, i)).collect();
    let status_buffer_overflow = 0x8000_0005u32 as i32 as i64;
    assert_eq!(
        f[0..7],
        [0, -22, -1, 0, -1, 1, 0],
        "memcpy, memcmp, memset, memmove"
    );
    assert_eq!(
        f[7..13],
        [0, status_buffer_overflow, 0, -34, 2, 4],
        "string helpers"
    );
    assert_eq!(
        f[13..17],
        [12_345_678_900, 12_300_000_000, 12_345, 12_300],
        "clocks"
    );
    assert_eq!(f[17..20], [(1234 << 32) | 5678, 0x1122_3344, 0xabc_def0]);
    assert_eq!(f[20..22], [1, 133_000_000_000_000_000]);
    assert_eq!(f[22..25], [1021, 63, 1], "extension helpers and CPU");
    assert_eq!(&v[200..208], b"abc\0\0\0\0\0", "memcpy_s copied 4 bytes");
    assert_eq!(
        &v[208..216],
        b"abcXY\0\0\0",
        "strncpy_s truncated, strncat_s appended 2"
    );
    assert_eq!(&v[216..224], b"11234\0\0\0", "memmove_s with overlap");
    assert_eq!(&v[224..228], [0x5a; 4]);

    // At DISPATCH_LEVEL the logon id is 0 (not preemptible).
    ntsim::irql::at(2, || {
        h.run(object.program("helpers_test").unwrap(), &mut ctx)
    })
    .unwrap();
    let v = object.map("out").unwrap().lookup(&u32k(0)).unwrap();
    assert_eq!(field_i64(&v, 18), 0);
}

#[test]
fn bpf_to_bpf_calls_and_global_data() {
    let object = load("calls");
    let h = Harness::new();
    let p = object.program("calls_test").unwrap();
    let mut ctx = TestCtx {
        id: 3,
        value: 4,
        index: 2,
        ..Default::default()
    };
    assert_eq!(h.run(p, &mut ctx).unwrap(), 125);
    assert_eq!(h.run(p, &mut ctx).unwrap(), 125);
    assert_eq!(
        object.map(".data").unwrap().lookup(&u32k(0)).unwrap(),
        7u64.to_le_bytes()
    );
    let bss = object.map(".bss").unwrap().lookup(&u32k(0)).unwrap();
    assert_eq!(bss, [0u64.to_le_bytes(), 125u64.to_le_bytes()].concat());
    let rodata = object.map(".rodata").unwrap().lookup(&u32k(0)).unwrap();
    assert_eq!(&rodata[16..24], 100u64.to_le_bytes());
}

#[test]
fn out_of_bounds_accesses_fail_cleanly() {
    let object = load("oob");
    let h = Harness::new();
    let mut ctx = TestCtx::default();
    let e = h
        .run(object.program("read_ctx").unwrap(), &mut ctx)
        .unwrap_err();
    assert_eq!(e.insn_offset, Some(0), "{e}");
    assert!(e.message.contains("out-of-bounds read of 4 bytes"), "{e}");

    let mut packet = [1u8, 2, 3, 4];
    ctx.data = packet.as_mut_ptr() as usize;
    ctx.data_end = ctx.data + packet.len();
    let read_packet = object.program("read_packet").unwrap();
    ctx.index = 3;
    assert_eq!(h.run(read_packet, &mut ctx).unwrap(), 4);
    ctx.index = 4;
    let e = h.run(read_packet, &mut ctx).unwrap_err();
    assert_eq!(e.insn_offset, Some(3), "{e}");

    let read_map = object.program("read_map").unwrap();
    ctx.index = 0;
    assert_eq!(h.run(read_map, &mut ctx).unwrap(), 0);
    for index in [1, 4] {
        // 1: a 4-byte read straddling the value's end; 4: just past it.
        ctx.index = index;
        let e = h.run(read_map, &mut ctx).unwrap_err();
        assert_eq!(e.insn_offset, Some(11), "{e}");
    }

    let helper_arg = object.program("helper_arg").unwrap();
    ctx.index = 4;
    assert!(h.run(helper_arg, &mut ctx).is_ok());
    ctx.index = 5;
    let e = h.run(helper_arg, &mut ctx).unwrap_err();
    assert_eq!(e.insn_offset, Some(4), "{e}");
    assert!(e.message.contains("bpf_memset (24)"), "{e}");
}

#[test]
fn unsupported_objects_are_refused_clearly() {
    let e = Object::load(&object_bytes("unsupported"), &sections()).unwrap_err();
    assert_eq!(
        e,
        ObjectError::Unsupported("map trie: map type 9 is not supported by ntsim".into())
    );
    let mut bytes = object_bytes("calls");
    bytes[18] = 62; // e_machine = EM_X86_64
    assert!(
        matches!(Object::load(&bytes, &sections()), Err(ObjectError::NotBpf(m)) if m.contains("EM_BPF"))
    );
    assert!(matches!(
        Object::load(b"not an object", &sections()),
        Err(ObjectError::NotBpf(_))
    ));
}

#[test]
fn sections_resolve_by_longest_prefix() {
    let other = GUID::parse("00000000-0000-0000-0000-000000000001").unwrap();
    let mut s = sections();
    s.add("sample/sec", other, other);
    assert_eq!(s.resolve("sample/second"), Some((other, other)));
    assert_eq!(
        s.resolve("sample/first"),
        Some((program_type(), attach_type()))
    );
    assert_eq!(s.resolve("bind"), None);
    let object = Object::load(&object_bytes("tail_call"), &s).unwrap();
    assert_eq!(object.program("second").unwrap().program_type, Some(other));
    assert_eq!(
        object.program("third").unwrap().program_type,
        Some(program_type())
    );
    assert_eq!(object.program("third").unwrap().section, "sample/third");
}

// ---- bpf_prog_test_run ----

static OBSERVED_IRQL: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[repr(C)]
struct Owned {
    ctx: TestCtx,
    data: Vec<u8>,
}

unsafe extern "win64" fn context_create(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut u8,
) -> u32 {
    OBSERVED_IRQL.lock().unwrap().push(ntsim::irql::current());
    if context_size_in != 0 && context_size_in != 40 {
        return 6;
    }
    // SAFETY: the core passes buffers valid for the given sizes.
    let data = unsafe { std::slice::from_raw_parts(data_in, data_size_in) }.to_vec();
    let mut ctx = TestCtx::default();
    if context_size_in == 40 {
        // SAFETY: context_in holds a TestCtx image of 40 bytes.
        ctx = unsafe { (context_in as *const TestCtx).read_unaligned() };
    }
    let mut owned = Box::new(Owned { ctx, data });
    owned.ctx.data = owned.data.as_mut_ptr() as usize;
    owned.ctx.data_end = owned.ctx.data + owned.data.len();
    let raw = Box::into_raw(owned);
    // SAFETY: `context` is the core's out pointer; ctx is the first field.
    unsafe { *context = raw as *mut u8 };
    0
}

unsafe extern "win64" fn context_destroy(
    context: *mut u8,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    OBSERVED_IRQL.lock().unwrap().push(ntsim::irql::current());
    // SAFETY: `context` came from context_create (a Box<Owned>).
    let owned = unsafe { Box::from_raw(context as *mut Owned) };
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

#[test]
fn prog_test_run_through_context_create_and_destroy() {
    let sim = ntsim::Sim::new();
    let object = load("oob");
    let h = Harness::new();
    let env = ExecEnv {
        helpers: &h.helpers,
        kernel: &TestKernel,
        trace: &h.trace,
        extra_regions: &[],
    };
    let hooks = TestRunHooks {
        context_create,
        context_destroy,
        required_irql: 2,
    };
    let ctx_in = TestCtx {
        index: 1,
        id: 77,
        ..Default::default()
    };
    // SAFETY: a TestCtx is plain data.
    let ctx_bytes =
        unsafe { std::slice::from_raw_parts(&ctx_in as *const TestCtx as *const u8, 40) };
    let p = object.program("read_packet").unwrap();
    // SAFETY: the hooks above are context_create/destroy of the test type.
    let out = unsafe { p.test_run(&env, &DESC, &hooks, &[10, 20, 30], ctx_bytes, 16, 40) }.unwrap();
    assert_eq!(out.result, 20);
    assert_eq!(out.data_out, [10, 20, 30]);
    assert_eq!(out.context_out.len(), 40);
    assert_eq!(
        u64::from_le_bytes(out.context_out[0..8].try_into().unwrap()),
        77
    );
    assert_eq!(
        *OBSERVED_IRQL.lock().unwrap(),
        [2, 2],
        "both hooks ran at required_irql"
    );
    assert_eq!(ntsim::irql::current(), 0);

    // A program error still destroys the context, then reports the error.
    // SAFETY (this call and the next): the hooks are the test type's.
    let e = unsafe { p.test_run(&env, &DESC, &hooks, &[10], ctx_bytes, 16, 40) }.unwrap_err();
    assert!(
        matches!(e, TestRunError::Program(ref pe) if pe.insn_offset == Some(3)),
        "{e}"
    );
    // A context of the wrong size is refused by context_create.
    let e = unsafe { p.test_run(&env, &DESC, &hooks, &[10], &ctx_bytes[..8], 16, 40) }.unwrap_err();
    assert!(matches!(e, TestRunError::ContextCreate(6)), "{e}");
    sim.finish().unwrap();
}

/// Bytes the fill helper writes past the size it was given.
static FILL_EXTRA: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "win64" fn ext_fill(buf: u64, size: u64, _: u64, _: u64, _: u64) -> u64 {
    let n = size as usize + FILL_EXTRA.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..n {
        // SAFETY: deliberately trusts `size` plus the test's overrun; the
        // guarded copy has room for the canary bytes the test reaches.
        unsafe { *((buf as usize + i) as *mut u8) = (i + 1) as u8 };
    }
    0
}

extern "win64" fn ext_read_and_scribble(buf: u64, size: u64, _: u64, _: u64, _: u64) -> u64 {
    // SAFETY: the buffer has `size` bytes; writing it breaks the read-only
    // contract on purpose.
    let b = unsafe { std::slice::from_raw_parts_mut(buf as usize as *mut u8, size as usize) };
    let sum = b.iter().map(|x| *x as u64).sum();
    b[0] = 0xFF;
    sum
}

fn guard_harness() -> Harness {
    use ntsim::ebpf::abi::{
        EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
        EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
    };
    let mut h = Harness::new();
    h.helpers.insert(
        0x10004,
        ExtensionHelper {
            address: ext_fill as *const () as usize,
            implicit_context: false,
            arguments: [
                EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
                EBPF_ARGUMENT_TYPE_CONST_SIZE,
                0,
                0,
                0,
            ],
        },
    );
    h.helpers.insert(
        0x10005,
        ExtensionHelper {
            address: ext_read_and_scribble as *const () as usize,
            implicit_context: false,
            arguments: [
                EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM,
                EBPF_ARGUMENT_TYPE_CONST_SIZE,
                0,
                0,
                0,
            ],
        },
    );
    h
}

#[test]
fn extension_helpers_get_guarded_copies_of_the_programs_buffers() {
    let sim = ntsim::Sim::new();
    let object = load("guard");
    let h = guard_harness();
    let mut ctx = TestCtx::default();

    // Within the buffer: the copy comes back, the sentinel after it is
    // untouched.
    FILL_EXTRA.store(0, std::sync::atomic::Ordering::SeqCst);
    let fill = object.program("fill").unwrap();
    assert_eq!(h.run(fill, &mut ctx).unwrap(), (1..=16).sum::<u64>());
    assert_eq!(ntsim::violation::take(), vec![]);

    // One byte past the buffer: caught (the program's sentinel would not
    // have been reached: the helper writes into the copy's canary).
    for extra in [1usize, 7, 64] {
        FILL_EXTRA.store(extra, std::sync::atomic::Ordering::SeqCst);
        let err = h
            .run(fill, &mut ctx)
            .expect_err("the overrun stops the program");
        assert!(
            err.message.contains(&format!(
                "extension helper 0x10004 wrote {extra} byte(s) past the end of its 16-byte \
                 buffer (argument 1)"
            )),
            "{err:?}"
        );
        let call_at = err.insn_offset.expect("the call instruction");
        let v = ntsim::violation::take();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message
                .contains(&format!("called at instruction {call_at} of program fill")),
            "{}",
            v[0].message
        );
    }
    FILL_EXTRA.store(0, std::sync::atomic::Ordering::SeqCst);

    // A write into a read-only buffer.
    let err = h
        .run(object.program("read").unwrap(), &mut ctx)
        .expect_err("writing a PTR_TO_READABLE_MEM buffer stops the program");
    assert!(
        err.message.contains(
            "extension helper 0x10005 wrote into its read-only buffer (argument 1, 8 bytes)"
        ),
        "{err:?}"
    );
    assert_eq!(ntsim::violation::take().len(), 1);

    // A buffer the program does not own is refused before the call.
    let err = h
        .run(object.program("outside").unwrap(), &mut ctx)
        .expect_err("a buffer past the stack is refused");
    assert!(
        err.message.contains("argument 1") && err.message.contains("+600) is not writable memory"),
        "{err:?}"
    );
    assert_eq!(ntsim::violation::take(), vec![], "refused, not overrun");
    drop(object);
    sim.finish().unwrap();
}
