//! Calls into the extension's helpers with guarded copies of the program's
//! buffers.
//!
//! eBPF for Windows hands an extension helper the program's memory itself:
//! the verifier proved that a `PTR_TO_*_MEM` argument followed by a
//! `CONST_SIZE[_OR_ZERO]` argument is that many bytes the program owns, and
//! the helper must stay inside them. A helper that writes one byte too many
//! corrupts the program's neighbouring memory (the next field of a map
//! value, say), which nothing would notice. So ntsim does not hand over the
//! program's buffer: each such argument gets a copy of exactly the declared
//! size, in its own special-pool block followed by [`CANARY`] bytes of
//! [`CANARY_FILL`] and then the guard page. After the helper returns, a
//! changed canary (a write past the buffer) or a changed read-only copy
//! (a write into `PTR_TO_READABLE_MEM`) stops the program with an error
//! naming the helper, and is recorded as a violation naming the helper id
//! and the instruction offset of the call; otherwise a writable copy goes
//! back into the program's buffer. A write further past the end than the
//! canary reaches the guard page and faults at once (the crash report names
//! the 'Hlpr' block). A buffer argument outside the program's memory stops
//! the program before the helper is called, as the verifier would have
//! refused it.

use super::abi::{
    EBPF_ARGUMENT_TYPE_CONST_SIZE, EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO,
    EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL,
    EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM, EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL,
};
use super::program::{ExtensionHelper, Run};
use super::vm::HelperOutcome;
use super::ProgramError;
use crate::kernel::{pool, violation};
use std::cell::RefCell;

/// Bytes checked behind each guarded copy before the guard page.
pub const CANARY: usize = 64;
/// What the canary bytes hold.
pub const CANARY_FILL: u8 = 0xCB;
/// Pool tag of the guarded copies ('Hlpr').
const TAG: u32 = u32::from_le_bytes(*b"Hlpr");

thread_local! {
    /// A helper's overrun found by the last call on this thread, waiting
    /// for the interpreter to name the instruction ([`report`]).
    static PENDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// One buffer argument: where it is in the program and its copy.
struct Guarded {
    /// Argument number (1-based, as in the prototype).
    arg: usize,
    program_addr: u64,
    len: usize,
    writable: bool,
    copy: *mut u8,
    original: Vec<u8>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: `copy` is the pool block allocated for this argument,
        // freed once, here.
        unsafe { pool::kernel_free(self.copy.cast()) };
    }
}

/// The buffer arguments of a prototype: (pointer index, writable, size
/// index, size may be zero).
fn buffer_arguments(arguments: &[u32; 5]) -> Vec<(usize, bool, bool)> {
    (0..4)
        .filter_map(|i| {
            let (writable, nullable) = match arguments[i] {
                EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM => (true, false),
                EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL => (true, true),
                EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM => (false, false),
                EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL => (false, true),
                _ => return None,
            };
            matches!(
                arguments[i + 1],
                EBPF_ARGUMENT_TYPE_CONST_SIZE | EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO
            )
            .then_some((i, writable, nullable))
        })
        .collect()
}

/// Calls extension helper `id` with `args`, each buffer argument replaced
/// by a guarded copy. `on_stack` tells whether a range lies in one of the
/// program's live stack frames.
pub(crate) fn call_extension(
    run: &Run,
    id: u32,
    helper: &ExtensionHelper,
    mut args: [u64; 5],
    on_stack: impl Fn(u64, u64) -> bool,
) -> Result<HelperOutcome, String> {
    let mut guarded = Vec::new();
    for (i, writable, nullable) in buffer_arguments(&helper.arguments) {
        let (addr, len) = (args[i], args[i + 1]);
        if len == 0 || (addr == 0 && nullable) {
            continue;
        }
        let owned = run.region_ok(addr, len, writable) || on_stack(addr, len);
        if !owned || len > u32::MAX as u64 {
            return Err(format!(
                "helper {id:#x}: argument {} [{addr:#x}, +{len}) is not {} memory of the \
                 program (the verifier would refuse the call)",
                i + 1,
                if writable { "writable" } else { "readable" }
            ));
        }
        let len = len as usize;
        let copy = pool::kernel_alloc_exact(len + CANARY, 1, TAG).cast::<u8>();
        if copy.is_null() {
            return Err(format!(
                "helper {id:#x}: no host memory for a {len}-byte copy"
            ));
        }
        // SAFETY: the program owns [addr, addr + len) (checked above) and
        // `copy` is a fresh block of len + CANARY bytes.
        let original = unsafe {
            let original = std::slice::from_raw_parts(addr as usize as *const u8, len).to_vec();
            std::ptr::copy_nonoverlapping(original.as_ptr(), copy, len);
            std::ptr::write_bytes(copy.add(len), CANARY_FILL, CANARY);
            original
        };
        args[i] = copy as u64;
        guarded.push(Guarded {
            arg: i + 1,
            program_addr: addr,
            len,
            writable,
            copy,
            original,
        });
    }
    // SAFETY: the extension published this address for helper `id` in its
    // program data, with the prototype of a win64 function taking five
    // integer arguments (six with implicit_context); every buffer argument
    // points to a live copy of its declared size.
    let r = unsafe {
        if helper.implicit_context {
            let f: extern "win64" fn(u64, u64, u64, u64, u64, u64) -> u64 =
                std::mem::transmute(helper.address);
            f(args[0], args[1], args[2], args[3], args[4], run.ctx)
        } else {
            let f: extern "win64" fn(u64, u64, u64, u64, u64) -> u64 =
                std::mem::transmute(helper.address);
            f(args[0], args[1], args[2], args[3], args[4])
        }
    };
    let mut problems = Vec::new();
    for g in &guarded {
        // SAFETY: the copy and its canary are the live block allocated above.
        let (copy, canary) = unsafe {
            (
                std::slice::from_raw_parts(g.copy, g.len),
                std::slice::from_raw_parts(g.copy.add(g.len), CANARY),
            )
        };
        if let Some(last) = canary.iter().rposition(|b| *b != CANARY_FILL) {
            problems.push(format!(
                "wrote {} byte(s) past the end of its {}-byte buffer (argument {})",
                last + 1,
                g.len,
                g.arg
            ));
        } else if !g.writable && copy != g.original.as_slice() {
            problems.push(format!(
                "wrote into its read-only buffer (argument {}, {} bytes)",
                g.arg, g.len
            ));
        }
    }
    if !problems.is_empty() {
        let message = format!("extension helper {id:#x} {}", problems.join("; "));
        PENDING.with(|p| *p.borrow_mut() = Some(message.clone()));
        return Err(message);
    }
    for g in guarded.iter().filter(|g| g.writable) {
        // SAFETY: the program owns [program_addr, +len) writable (checked
        // before the call); the copy is live.
        unsafe { std::ptr::copy(g.copy, g.program_addr as usize as *mut u8, g.len) };
    }
    Ok(HelperOutcome::Return(r))
}

/// Called with every error that stops a program: if it is a helper overrun
/// found by [`call_extension`] on this thread, records it as a violation
/// with the instruction offset of the call.
pub(crate) fn report(error: &ProgramError, program: &str) {
    let Some(message) = PENDING.with(|p| p.borrow_mut().take()) else {
        return;
    };
    let at = error.insn_offset.map_or_else(
        || "an unknown instruction".to_string(),
        |o| format!("instruction {o}"),
    );
    violation::record(
        "ebpf",
        format!("{message}, called at {at} of program {program}"),
    );
}

#[cfg(test)]
mod tests {
    use super::super::abi::{EBPF_ARGUMENT_TYPE_DONTCARE, EBPF_ARGUMENT_TYPE_PTR_TO_CTX};
    use super::*;

    #[test]
    fn buffer_arguments_pair_a_memory_pointer_with_the_size_after_it() {
        let process = [
            EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
            EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
            EBPF_ARGUMENT_TYPE_CONST_SIZE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
        ];
        assert_eq!(buffer_arguments(&process), [(1, true, false)]);
        let two = [
            EBPF_ARGUMENT_TYPE_PTR_TO_READABLE_MEM_OR_NULL,
            EBPF_ARGUMENT_TYPE_CONST_SIZE_OR_ZERO,
            EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM_OR_NULL,
            EBPF_ARGUMENT_TYPE_CONST_SIZE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
        ];
        assert_eq!(buffer_arguments(&two), [(0, false, true), (2, true, true)]);
        let unsized_pointer = [
            EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
            EBPF_ARGUMENT_TYPE_DONTCARE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
            EBPF_ARGUMENT_TYPE_DONTCARE,
        ];
        assert_eq!(buffer_arguments(&unsized_pointer), []);
    }
}
