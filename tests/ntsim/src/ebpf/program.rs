//! Programs and their execution: [`Program::run`], tail calls, the general
//! helpers and calls into the extension's helpers, and
//! [`Program::test_run`] (`bpf_prog_test_run`).

use super::maps::{EbpfResult, Map};
use super::vm::{self, HelperOutcome, Insn, Machine};
use super::ProgramError;
use super::{guard, helpers};
use crate::kernel::types::{GUID, KIRQL};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// `ebpf_context_descriptor_t`: where the packet pointers sit in the
/// context (`-1`: absent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextDescriptor {
    pub size: i32,
    pub data: i32,
    pub end: i32,
    pub meta: i32,
}

/// One extension (program-type) helper: its address, whether the core
/// passes the context as a sixth argument, and its prototype's argument
/// types (buffer arguments are passed as guarded copies, see
/// [`super::guard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionHelper {
    /// Address of an `extern "win64" fn(u64, u64, u64, u64, u64[, u64]) -> u64`.
    pub address: usize,
    pub implicit_context: bool,
    /// `ebpf_argument_type_t` of each argument.
    pub arguments: [u32; 5],
}

/// Facts about the current thread the simulated kernel supplies to the
/// general helpers. Every method has a default for tests; the NMR core
/// wires them to ntsim's process service.
pub trait KernelInfo: Send + Sync {
    /// `bpf_get_current_pid_tgid`: (process id << 32) | thread id.
    fn current_pid_tgid(&self) -> u64 {
        (4u64 << 32) | 8
    }
    /// `bpf_get_current_logon_id` (0 when unknown or not preemptible).
    fn current_logon_id(&self) -> u64 {
        0x3e7
    }
    /// `bpf_is_current_admin`. eBPF for Windows 1.x returns -1 (not implemented).
    fn is_current_admin(&self) -> i32 {
        -1
    }
    /// `bpf_get_current_process_start_key` (PsGetProcessStartKey).
    fn current_process_start_key(&self) -> u64 {
        0
    }
    /// `bpf_get_current_thread_create_time` (100 ns units since 1601).
    fn current_thread_create_time(&self) -> i64 {
        0
    }
    /// The processor the program runs on (`bpf_get_smp_processor_id`,
    /// per-CPU maps, perf buffers).
    fn current_cpu(&self) -> u32 {
        0
    }
    /// Time since boot in 100 ns units, counting time suspended or not.
    fn time_since_boot_100ns(&self, include_suspend: bool) -> u64 {
        let _ = include_suspend;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        (START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos()
            / 100) as u64
    }
    /// `bpf_get_prandom_u32`.
    fn random_u32(&self) -> u32 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.time_since_boot_100ns(true));
        h.finish() as u32
    }
}

/// [`KernelInfo`] with every default.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultKernelInfo;
impl KernelInfo for DefaultKernelInfo {}

/// What one invocation runs with.
pub struct ExecEnv<'a> {
    /// The extension's helpers by id, from its program data: program-type
    /// helpers (> 0xFFFF) and overrides of general helpers (<= 0xFFFF).
    pub helpers: &'a HashMap<u32, ExtensionHelper>,
    pub kernel: &'a dyn KernelInfo,
    /// Where `bpf_trace_printk` output goes (formatted lines).
    pub trace: &'a Mutex<Vec<String>>,
    /// Memory helpers handed to the program (start, length, writable),
    /// besides the context, the packet, the stack and map values.
    pub extra_regions: &'a [(usize, usize, bool)],
}

/// Limit of programs in one tail-call chain (`MAX_TAIL_CALL_CNT`).
pub const MAX_TAIL_CALL_COUNT: u32 = 33;

/// A loaded program, ready to run.
pub struct Program {
    pub name: String,
    pub section: String,
    /// Program type and attach type, resolved from the section table.
    pub program_type: Option<GUID>,
    pub attach_type: Option<GUID>,
    pub(crate) insns: Vec<Insn>,
    pub(crate) maps: Vec<Arc<Map>>,
}

static RUNS_IN_PROGRESS: AtomicUsize = AtomicUsize::new(0);

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name)
            .field("section", &self.section)
            .field("insns", &self.insns.len())
            .finish()
    }
}

/// The state of one invocation, seen by the interpreter and the helpers.
pub(crate) struct Run<'a> {
    pub env: &'a ExecEnv<'a>,
    pub program: &'a Program,
    pub ctx: u64,
    pub desc: ContextDescriptor,
    pub packet: Option<(u64, u64)>,
    pub tail_call: Option<Arc<Program>>,
    pub tail_calls: u32,
    /// Live stack frames during a general helper call.
    pub stack: Vec<(u64, u64)>,
}

impl Run<'_> {
    /// Whether `[addr, addr+len)` is inside one region of the run (stack
    /// frames are checked by the interpreter itself).
    pub fn region_ok(&self, addr: u64, len: u64, write: bool) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let inside = |start: u64, size: u64| addr >= start && end <= start + size;
        if inside(self.ctx, self.desc.size as u64) {
            return true;
        }
        if let Some((start, pend)) = self.packet {
            if pend >= start && inside(start, pend - start) {
                return true;
            }
        }
        if self
            .env
            .extra_regions
            .iter()
            .any(|&(s, l, w)| (w || !write) && inside(s as u64, l as u64))
        {
            return true;
        }
        self.program
            .maps
            .iter()
            .any(|m| m.contains(addr, len, write))
    }

    /// The map a helper argument names.
    pub fn map(&self, addr: u64) -> Result<&Arc<Map>, String> {
        self.program
            .maps
            .iter()
            .find(|m| Arc::as_ptr(m) as u64 == addr)
            .ok_or_else(|| format!("helper argument {addr:#x} is not a map of this program"))
    }
}

struct Vm<'r, 'a> {
    run: &'r mut Run<'a>,
}

impl Machine for Vm<'_, '_> {
    fn check(&mut self, addr: u64, len: u64, write: bool) -> bool {
        self.run.region_ok(addr, len, write)
    }

    fn call_helper(
        &mut self,
        id: u32,
        args: [u64; 5],
        stack: &[(u64, u64)],
    ) -> Result<HelperOutcome, String> {
        // The extension's helpers: its program-type helpers (ids above
        // 0xFFFF) and its overrides of general helpers, which eBPF for
        // Windows looks up before its own.
        let extension = self.run.env.helpers.get(&id);
        if id > 0xFFFF && extension.is_none() {
            return Err(format!("helper {id:#x} is not provided by the extension"));
        }
        if let Some(h) = extension {
            let on_stack = |addr: u64, len: u64| {
                stack
                    .iter()
                    .any(|&(s, l)| addr >= s && addr.checked_add(len).is_some_and(|e| e <= s + l))
            };
            let outcome = guard::call_extension(self.run, id, h, args, on_stack)?;
            if let HelperOutcome::Return(r) = outcome {
                // After the guarded copies went back into the program's
                // buffers: the observer sees what the program will read.
                observe_call(self.run, id, &args, r, &on_stack);
            }
            return Ok(outcome);
        }
        self.run.stack = stack.to_vec();
        let r = helpers::call(self.run, id, args);
        self.run.stack.clear();
        r
    }
}

/// Reads `len` bytes at `addr` of a running program's memory, if the
/// program may read them (`None` otherwise).
pub type MemoryReader<'a> = &'a dyn Fn(u64, u64) -> Option<Vec<u8>>;

/// Watches the extension helper calls of programs run on this thread:
/// program name, helper id, arguments, result, and a reader of the
/// program's memory valid during the call (to see what the helper wrote).
pub type ExtensionCallObserver = Box<dyn Fn(&str, u32, &[u64; 5], u64, MemoryReader<'_>)>;

thread_local! {
    static OBSERVER: std::cell::RefCell<Option<ExtensionCallObserver>> =
        const { std::cell::RefCell::new(None) };
}

/// Sets (or clears, with None) this thread's [`ExtensionCallObserver`].
/// The `ntsim` command uses it to show what the extension's helpers
/// returned to the programs (the account a program could read).
pub fn observe_extension_calls(observer: Option<ExtensionCallObserver>) {
    OBSERVER.with(|o| *o.borrow_mut() = observer);
}

fn observe_call(
    run: &Run<'_>,
    id: u32,
    args: &[u64; 5],
    result: u64,
    on_stack: &dyn Fn(u64, u64) -> bool,
) {
    OBSERVER.with(|o| {
        let Ok(observer) = o.try_borrow() else {
            return;
        };
        let Some(observer) = observer.as_ref() else {
            return;
        };
        // The same ownership rule as the guarded copies (guard.rs): a live
        // stack frame of the program, or a region it may read.
        let read = |addr: u64, len: u64| -> Option<Vec<u8>> {
            if len > 1 << 20 || !(on_stack(addr, len) || run.region_ok(addr, len, false)) {
                return None;
            }
            // SAFETY: [addr, addr + len) lies inside one region the running
            // program may read (a live stack frame, its context or packet,
            // a live map value or global data: checked above), which stays
            // alive for the duration of this helper call.
            Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec())
        };
        observer(&run.program.name, id, args, result, &read);
    });
}

impl Program {
    /// Instructions after relocation (8 bytes each, lddw takes two).
    pub fn instructions(&self) -> Vec<[u8; 8]> {
        self.insns.iter().map(|i| i.encode()).collect()
    }

    /// Maps this program references.
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.maps
    }

    /// Runs the program (and the programs it tail-calls) on `ctx`, a context
    /// `desc.size` bytes long whose packet pointers `desc` locates. Returns
    /// r0 of the last program in the chain.
    ///
    /// # Safety
    /// `ctx` must point to `desc.size` readable and writable bytes, and the
    /// packet pointers in it (when `desc` has them) must delimit readable
    /// and writable memory; all of it must stay valid during the call.
    pub unsafe fn run(
        self: &Arc<Self>,
        ctx: *mut u8,
        desc: &ContextDescriptor,
        env: &ExecEnv,
    ) -> Result<u64, ProgramError> {
        if desc.size < 0 || ctx.is_null() {
            return Err(ProgramError::new(
                None,
                "invalid context or context descriptor",
            ));
        }
        let read_ptr = |off: i32| -> Option<u64> {
            if off < 0 || off as i64 + 8 > desc.size as i64 {
                return None;
            }
            // SAFETY: the caller guarantees ctx has desc.size bytes; the
            // offset and its 8 bytes lie inside.
            Some(unsafe { (ctx.add(off as usize) as *const u64).read_unaligned() })
        };
        RUNS_IN_PROGRESS.fetch_add(1, Ordering::SeqCst);
        let mut current = Arc::clone(self);
        let mut tail_calls = 0u32;
        let result = loop {
            // The packet is [data, data_end), or [data_meta, data_end) for a
            // context with metadata in front of its data (the verifier lets
            // programs read from data_meta on).
            let packet = match (read_ptr(desc.data), read_ptr(desc.end)) {
                (Some(d), Some(e)) => match read_ptr(desc.meta) {
                    Some(m) if m <= d => Some((m, e)),
                    _ => Some((d, e)),
                },
                _ => None,
            };
            let mut run = Run {
                env,
                program: &current,
                ctx: ctx as u64,
                desc: *desc,
                packet,
                tail_call: None,
                tail_calls,
                stack: Vec::new(),
            };
            let r = vm::execute(&current.insns, &mut Vm { run: &mut run }, ctx as u64);
            let next = run.tail_call.take();
            tail_calls = run.tail_calls;
            match (r, next) {
                (Err(e), _) => {
                    guard::report(&e, &current.name);
                    break Err(ProgramError {
                        message: format!("{} (program {})", e.message, current.name),
                        ..e
                    });
                }
                (Ok(_), Some(next)) => current = next,
                (Ok(v), None) => break Ok(v),
            }
        };
        if RUNS_IN_PROGRESS.fetch_sub(1, Ordering::SeqCst) == 1 {
            for m in &self.maps {
                m.reclaim();
            }
        }
        result
    }

    /// `bpf_prog_test_run`: builds a context with the extension's
    /// `context_create` at `required_irql`, runs the program, and takes the
    /// outputs back with `context_destroy`. `data_out_capacity` and
    /// `context_out_capacity` size the output buffers. As in eBPF for
    /// Windows' core, an empty input or a zero-sized output is passed as a
    /// null pointer.
    ///
    /// # Safety
    /// `context_create` / `context_destroy` must be the extension's
    /// functions with the prototypes of `ebpf_program_data_t`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn test_run(
        self: &Arc<Self>,
        env: &ExecEnv,
        desc: &ContextDescriptor,
        hooks: &TestRunHooks,
        data_in: &[u8],
        context_in: &[u8],
        data_out_capacity: usize,
        context_out_capacity: usize,
    ) -> Result<TestRunOutput, TestRunError> {
        // SAFETY: forwarded contract.
        let (output, error) = unsafe {
            self.test_run_keeping_outputs(
                env,
                desc,
                hooks,
                data_in,
                context_in,
                data_out_capacity,
                context_out_capacity,
            )
        }?;
        match error {
            Some(e) => Err(TestRunError::Program(e)),
            None => Ok(output),
        }
    }

    /// [`Program::test_run`], but a program that stopped on an error still
    /// yields the outputs `context_destroy` wrote (with result 0) and the
    /// error beside them: what the core needs to answer as eBPF for
    /// Windows does (EBPF_SUCCESS with the interpreter's -1).
    ///
    /// # Safety
    /// As [`Program::test_run`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn test_run_keeping_outputs(
        self: &Arc<Self>,
        env: &ExecEnv,
        desc: &ContextDescriptor,
        hooks: &TestRunHooks,
        data_in: &[u8],
        context_in: &[u8],
        data_out_capacity: usize,
        context_out_capacity: usize,
    ) -> Result<(TestRunOutput, Option<ProgramError>), TestRunError> {
        // The buffers the extension sees end against a guard page (special
        // pool), so reading or writing one byte past them faults.
        let data_in = EdgeBuffer::copy_of(data_in);
        let context_in = EdgeBuffer::copy_of(context_in);
        crate::kernel::irql::at(hooks.required_irql, || {
            let mut ctx: *mut u8 = std::ptr::null_mut();
            // SAFETY: the extension's context_create reads the two input
            // buffers (valid for their lengths) and writes one pointer.
            let status = unsafe {
                (hooks.context_create)(
                    // As the real core: an empty buffer is a null pointer.
                    if data_in.len() == 0 {
                        std::ptr::null()
                    } else {
                        data_in.ptr()
                    },
                    data_in.len(),
                    if context_in.len() == 0 {
                        std::ptr::null()
                    } else {
                        context_in.ptr()
                    },
                    context_in.len(),
                    &mut ctx,
                )
            };
            if status != EbpfResult::Success as u32 {
                return Err(TestRunError::ContextCreate(status));
            }
            if ctx.is_null() {
                return Err(TestRunError::Invalid(
                    "context_create succeeded but returned no context".into(),
                ));
            }
            // SAFETY: the extension created a context of its descriptor's
            // size, with its packet pointers (if any) into its own copy of data_in.
            let result = unsafe { self.run(ctx, desc, env) };
            let data_out = EdgeBuffer::zeroed(data_out_capacity);
            let context_out = EdgeBuffer::zeroed(context_out_capacity);
            let mut data_size = data_out_capacity;
            let mut context_size = context_out_capacity;
            // SAFETY: context_destroy frees the context it created and
            // writes at most the given sizes into the output buffers.
            unsafe {
                (hooks.context_destroy)(
                    ctx,
                    if data_out_capacity == 0 {
                        std::ptr::null_mut()
                    } else {
                        data_out.ptr()
                    },
                    &mut data_size,
                    if context_out_capacity == 0 {
                        std::ptr::null_mut()
                    } else {
                        context_out.ptr()
                    },
                    &mut context_size,
                )
            };
            if data_size > data_out_capacity || context_size > context_out_capacity {
                return Err(TestRunError::Invalid(format!(
                    "context_destroy reported {data_size} data bytes / {context_size} context bytes, \
                     more than the buffers ({data_out_capacity} / {context_out_capacity})"
                )));
            }
            let mut data_out = data_out.to_vec();
            let mut context_out = context_out.to_vec();
            data_out.truncate(data_size);
            context_out.truncate(context_size);
            let (result, error) = match result {
                Ok(r) => (r, None),
                Err(e) => (0, Some(e)),
            };
            Ok((
                TestRunOutput {
                    result,
                    data_out,
                    context_out,
                },
                error,
            ))
        })
    }
}

/// A buffer handed to extension code during a test run: a pool block
/// (special pool unless the machine turned it off) in which the buffer's
/// last byte is the block's last byte, against the guard page, so an
/// over-read or over-write by even one byte faults at once (and the crash
/// report names the block, tagged `TRun`).
struct EdgeBuffer {
    block: *mut std::ffi::c_void,
    ptr: *mut u8,
    len: usize,
}

impl EdgeBuffer {
    const TAG: u32 = u32::from_le_bytes(*b"TRun");

    fn zeroed(len: usize) -> EdgeBuffer {
        // Blocks of a page or more are page aligned; smaller ones 16-byte
        // aligned; either way a block of a multiple of its alignment ends
        // at the end of its last page.
        let align = if len >= 4096 { 4096 } else { 16 };
        let span = len.max(1).div_ceil(align) * align;
        let block = crate::kernel::pool::kernel_alloc(span, Self::TAG);
        assert!(
            !block.is_null(),
            "ntsim: no memory for a {len}-byte test-run buffer"
        );
        let ptr = (block as *mut u8).wrapping_add(span - len);
        EdgeBuffer { block, ptr, len }
    }

    fn copy_of(bytes: &[u8]) -> EdgeBuffer {
        let b = EdgeBuffer::zeroed(bytes.len());
        // SAFETY: `ptr` has `len` writable bytes inside the fresh block.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.ptr, bytes.len()) };
        b
    }

    fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn to_vec(&self) -> Vec<u8> {
        // SAFETY: `ptr` has `len` initialized bytes inside the live block.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }
}

impl Drop for EdgeBuffer {
    fn drop(&mut self) {
        // SAFETY: the block came from kernel_alloc and is freed once.
        unsafe { crate::kernel::pool::kernel_free(self.block) };
    }
}

/// `context_create` of `ebpf_program_data_t`.
pub type ContextCreateFn = unsafe extern "win64" fn(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut u8,
) -> u32;
/// `context_destroy` of `ebpf_program_data_t`.
pub type ContextDestroyFn = unsafe extern "win64" fn(
    context: *mut u8,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
);

/// The extension's test-run support from its program data.
#[derive(Clone, Copy, Debug)]
pub struct TestRunHooks {
    pub context_create: ContextCreateFn,
    pub context_destroy: ContextDestroyFn,
    pub required_irql: KIRQL,
}

/// Outputs of [`Program::test_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    pub result: u64,
    pub data_out: Vec<u8>,
    pub context_out: Vec<u8>,
}

/// Why [`Program::test_run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error("context_create failed with ebpf_result_t {0}")]
    ContextCreate(u32),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Program(ProgramError),
}
