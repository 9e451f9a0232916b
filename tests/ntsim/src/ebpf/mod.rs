//! ntsim's eBPF core, program side: loads BPF ELF objects built by clang and
//! runs their programs with eBPF for Windows helper and map semantics.
//!
//! # Using it
//!
//! ```text
//! let sections = store::section_map();                 // what the store holds
//! let object = Object::load(&bytes, &sections)?;       // ObjectError
//! let program = object.program("my_prog").unwrap();     // Arc<Program>
//! let env = ExecEnv { helpers: &ext_helpers, kernel: &DefaultKernelInfo,
//!                     trace: &trace_lines, extra_regions: &[] };
//! let r0 = unsafe { program.run(ctx_ptr, &descriptor, &env) }?; // ProgramError
//! object.map("events").unwrap().drain_ring();           // Vec<Vec<u8>>
//! ```
//!
//! * [`object`]: ELF parsing and linking ([`Object::load`], [`SectionMap`]
//!   for the section-prefix -> (program type, attach type) table).
//! * [`store`]: the eBPF store as `ebpfapi.dll` reads it from the registry
//!   (the section table, program information), a writer for host-side
//!   providers, and `reg query`-style output.
//! * [`maps`]: [`Map`] with the host-side API (`lookup`, `update`, `delete`,
//!   `keys`, `push`/`pop`, `drain_ring`, `drain_perf`, `set_program`).
//! * [`program`]: [`Program::run`] (tail calls included),
//!   [`Program::test_run`] (`bpf_prog_test_run` through the extension's
//!   `context_create` / `context_destroy` at its `required_irql`),
//!   [`ExecEnv`] (extension helpers by id, [`KernelInfo`] hooks, the
//!   `bpf_trace_printk` sink).
//! * [`helpers`]: the general helpers; [`vm`]: the interpreter.
//!
//! # Memory
//!
//! A program may touch only: its context (`descriptor.size` bytes), the
//! packet between the pointers at `descriptor.data` and `descriptor.end`
//! (read at each program start), its live stack frames (512 bytes each),
//! live map values (each value is its own allocation and accesses must fall
//! inside one), global data (`.rodata` read-only) and `ExecEnv::extra_regions`.
//! Anything else stops the program with a [`ProgramError`] carrying the
//! instruction offset; nothing is read or written first.
//!
//! # Why our own interpreter and not rbpf 0.4.1
//!
//! rbpf's interpreter was evaluated first and cannot do this job:
//! its registered-memory check tests only the *start* address of an access
//! (`allowed_memory.iter().any(|r| r.contains(&addr))`), so an 8-byte read
//! starting in the last byte of a map value passes; helpers are plain
//! `fn(u64, u64, u64, u64, u64) -> u64` with no state and no way to stop the
//! program, so neither a faulting helper argument nor eBPF for Windows'
//! tail-call unwind can be expressed; it rejects atomic instructions
//! (`lock xadd`, which clang emits for `__sync_fetch_and_add`); a
//! bpf-to-bpf call with a negative offset overflows `insn_ptr += imm as
//! usize` (a panic in debug builds); errors are strings whose "insn #" is the
//! *next* instruction.

pub mod abi;
pub mod btf;
pub mod btf_types;
pub mod core;
pub mod guard;
pub mod helpers;
pub mod maps;
pub mod object;
pub mod program;
pub mod store;
pub mod validate;
pub mod vm;

pub use maps::{EbpfResult, Map, MapDef, PerfRecord};
pub use object::{Object, ObjectError, SectionMap};
pub use program::{
    ContextDescriptor, DefaultKernelInfo, ExecEnv, ExtensionHelper, KernelInfo, Program,
    TestRunError, TestRunHooks, TestRunOutput,
};

/// A program stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("eBPF program error at instruction {}: {message}", insn_offset.map_or("?".to_string(), |o| o.to_string()))]
pub struct ProgramError {
    /// Offset (in 8-byte instructions) of the faulting instruction in the
    /// linked program, when known.
    pub insn_offset: Option<usize>,
    pub message: String,
}

impl ProgramError {
    pub fn new(insn_offset: Option<usize>, message: impl Into<String>) -> ProgramError {
        ProgramError {
            insn_offset,
            message: message.into(),
        }
    }
}
