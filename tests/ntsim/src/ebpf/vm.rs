//! The eBPF interpreter.
//!
//! Every load and store is checked against the memory the run may touch
//! (the live stack frames here, everything else through [`Machine::check`])
//! before it happens, so a program that strays is stopped with a
//! [`ProgramError`] naming the instruction, and never touches memory it
//! does not own. Helpers are called through [`Machine::call_helper`], which
//! may also stop the program (a helper fault) or unwind it (a successful
//! tail call).

use super::ProgramError;

/// Bytes of stack each call frame gets (eBPF for Windows: 512).
pub const STACK_SIZE: usize = 512;
/// Nested bpf-to-bpf calls allowed below the program's own frame.
pub const MAX_CALL_DEPTH: usize = 8;
/// Instructions one run may execute before it is stopped (a stand-in for
/// the verifier's termination proof).
pub const MAX_INSTRUCTIONS: u64 = 1 << 22;

/// One decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub op: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn decode(b: &[u8]) -> Insn {
        Insn {
            op: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.op;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

// Instruction classes and fields.
pub const CLS_LD: u8 = 0x00;
pub const CLS_LDX: u8 = 0x01;
pub const CLS_ST: u8 = 0x02;
pub const CLS_STX: u8 = 0x03;
pub const CLS_ALU: u8 = 0x04;
pub const CLS_JMP: u8 = 0x05;
pub const CLS_JMP32: u8 = 0x06;
pub const CLS_ALU64: u8 = 0x07;
pub const MODE_IMM: u8 = 0x00;
pub const MODE_MEM: u8 = 0x60;
pub const MODE_ATOMIC: u8 = 0xc0;
pub const OP_LDDW: u8 = 0x18;
pub const OP_CALL: u8 = 0x85;
pub const OP_EXIT: u8 = 0x95;
/// `src` of a call instruction: a bpf-to-bpf (pseudo) call.
pub const PSEUDO_CALL: u8 = 1;

const ATOMIC_FETCH: i32 = 0x01;
const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

/// What a helper call did.
pub enum HelperOutcome {
    /// The helper returned this value in r0; the program goes on.
    Return(u64),
    /// The program ends now with this value (a tail call that succeeded).
    Unwind(u64),
}

/// The environment of one run: memory outside the stack, and helpers.
pub trait Machine {
    /// Whether `[addr, addr + len)` lies inside one region the program may
    /// read (or write, when `write`).
    fn check(&mut self, addr: u64, len: u64, write: bool) -> bool;
    /// Calls helper `id`. `Err` stops the program with that message.
    /// `stack` lists the live stack frames (start, length), which helpers
    /// may read and write.
    fn call_helper(
        &mut self,
        id: u32,
        args: [u64; 5],
        stack: &[(u64, u64)],
    ) -> Result<HelperOutcome, String>;
}

/// Whether the interpreter knows the instruction (the loader refuses
/// programs with anything else, before they run).
pub fn supported(insn: &Insn) -> bool {
    let cls = insn.op & 0x07;
    match cls {
        CLS_LD => insn.op == OP_LDDW,
        CLS_LDX => insn.op & 0xe0 == MODE_MEM,
        CLS_ST => insn.op & 0xe0 == MODE_MEM,
        CLS_STX => match insn.op & 0xe0 {
            MODE_MEM => true,
            MODE_ATOMIC => {
                let size = insn.op & 0x18;
                (size == 0x00 || size == 0x18)
                    && matches!(insn.imm & !ATOMIC_FETCH, 0x00 | 0x40 | 0x50 | 0xa0)
                    || insn.imm == ATOMIC_XCHG
                    || insn.imm == ATOMIC_CMPXCHG
            }
            _ => false,
        },
        CLS_ALU | CLS_ALU64 => {
            let code = insn.op & 0xf0;
            code <= 0xd0 && !(cls == CLS_ALU64 && code == 0xd0)
        }
        CLS_JMP => {
            let code = insn.op & 0xf0;
            code <= 0xd0
                && (code != 0x80 || insn.op == OP_CALL)
                && (code != 0x90 || insn.op == OP_EXIT)
        }
        CLS_JMP32 => {
            let code = insn.op & 0xf0;
            code != 0x00 && code != 0x80 && code != 0x90 && code <= 0xd0
        }
        _ => false,
    }
}

struct Frame {
    return_pc: usize,
    saved: [u64; 4],
}

/// Runs `prog` from instruction 0 with r1 = `r1`.
pub fn execute(prog: &[Insn], machine: &mut dyn Machine, r1: u64) -> Result<u64, ProgramError> {
    let mut stacks: Vec<Box<[u8; STACK_SIZE]>> = vec![Box::new([0u8; STACK_SIZE])];
    let mut frames: Vec<Frame> = Vec::new();
    let mut reg = [0u64; 11];
    reg[1] = r1;
    reg[10] = stacks[0].as_ptr() as u64 + STACK_SIZE as u64;
    let mut pc = 0usize;
    let mut budget = MAX_INSTRUCTIONS;

    let fail = |pc: usize, message: String| ProgramError {
        insn_offset: Some(pc),
        message,
    };

    loop {
        let Some(&insn) = prog.get(pc) else {
            return Err(fail(pc, "execution ran past the end of the program".into()));
        };
        if budget == 0 {
            return Err(fail(
                pc,
                format!("the program executed more than {MAX_INSTRUCTIONS} instructions"),
            ));
        }
        budget -= 1;
        let dst = insn.dst as usize;
        let src = insn.src as usize;
        if dst > 10 || src > 10 {
            return Err(fail(pc, format!("invalid register in {insn:?}")));
        }
        let cls = insn.op & 0x07;
        let mut next = pc + 1;

        // A memory access: checks the range against the live stack frames,
        // then the machine's regions.
        let access =
            |addr: u64, len: u64, write: bool, m: &mut dyn Machine| -> Result<(), ProgramError> {
                let on_stack = stacks.iter().any(|s| {
                    let base = s.as_ptr() as u64;
                    addr >= base
                        && addr
                            .checked_add(len)
                            .is_some_and(|e| e <= base + STACK_SIZE as u64)
                });
                if on_stack || m.check(addr, len, write) {
                    Ok(())
                } else {
                    Err(fail(
                        pc,
                        format!(
                            "out-of-bounds {} of {len} bytes at {addr:#x}",
                            if write { "write" } else { "read" }
                        ),
                    ))
                }
            };
        let size_of = |op: u8| -> u64 {
            match op & 0x18 {
                0x00 => 4,
                0x08 => 2,
                0x10 => 1,
                _ => 8,
            }
        };

        match cls {
            CLS_LD => {
                if insn.op != OP_LDDW {
                    return Err(fail(
                        pc,
                        format!("unsupported instruction {:#04x}", insn.op),
                    ));
                }
                let Some(hi) = prog.get(pc + 1) else {
                    return Err(fail(pc, "lddw without its second half".into()));
                };
                reg[dst] = (insn.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32);
                next = pc + 2;
            }
            CLS_LDX => {
                let size = size_of(insn.op);
                let addr = reg[src].wrapping_add(insn.off as i64 as u64);
                access(addr, size, false, machine)?;
                // SAFETY: `access` proved [addr, addr+size) lies in a region
                // this run may read (a live stack frame, the context, the
                // packet, a live map value or helper-provided memory).
                reg[dst] = unsafe { load(addr, size) };
            }
            CLS_ST | CLS_STX => {
                let size = size_of(insn.op);
                let addr = reg[dst].wrapping_add(insn.off as i64 as u64);
                if insn.op & 0xe0 == MODE_ATOMIC {
                    access(addr, size, true, machine)?;
                    // SAFETY: checked readable and writable just above.
                    let old = unsafe { load(addr, size) };
                    let operand = reg[src];
                    let new = match insn.imm & !ATOMIC_FETCH {
                        0x00 => old.wrapping_add(operand),
                        0x40 => old | operand,
                        0x50 => old & operand,
                        0xa0 => old ^ operand,
                        0xe0 => operand,
                        0xf0 => {
                            let mask = if size == 4 { u32::MAX as u64 } else { u64::MAX };
                            if (reg[0] & mask) == old {
                                operand
                            } else {
                                old
                            }
                        }
                        _ => {
                            return Err(fail(
                                pc,
                                format!("unsupported atomic operation {:#x}", insn.imm),
                            ))
                        }
                    };
                    // SAFETY: as above.
                    unsafe { store(addr, size, new) };
                    if insn.imm == ATOMIC_CMPXCHG {
                        reg[0] = old;
                    } else if insn.imm & ATOMIC_FETCH != 0 {
                        reg[src] = old;
                    }
                } else {
                    let value = if cls == CLS_ST {
                        insn.imm as i64 as u64
                    } else {
                        reg[src]
                    };
                    access(addr, size, true, machine)?;
                    // SAFETY: `access` proved the range writable for this run.
                    unsafe { store(addr, size, value) };
                }
            }
            CLS_ALU | CLS_ALU64 => {
                let is64 = cls == CLS_ALU64;
                let operand = if insn.op & 0x08 != 0 {
                    reg[src]
                } else {
                    insn.imm as i64 as u64
                };
                let d = reg[dst];
                let code = insn.op & 0xf0;
                let r = if is64 {
                    match code {
                        0x00 => d.wrapping_add(operand),
                        0x10 => d.wrapping_sub(operand),
                        0x20 => d.wrapping_mul(operand),
                        0x30 => d.checked_div(operand).unwrap_or(0),
                        0x40 => d | operand,
                        0x50 => d & operand,
                        0x60 => d.wrapping_shl(operand as u32 & 63),
                        0x70 => d.wrapping_shr(operand as u32 & 63),
                        0x80 => d.wrapping_neg(),
                        0x90 => d.checked_rem(operand).unwrap_or(d),
                        0xa0 => d ^ operand,
                        0xb0 => operand,
                        0xc0 => ((d as i64) >> (operand as u32 & 63)) as u64,
                        _ => {
                            return Err(fail(
                                pc,
                                format!("unsupported instruction {:#04x}", insn.op),
                            ))
                        }
                    }
                } else {
                    let (d32, o32) = (d as u32, operand as u32);
                    match code {
                        0x00 => d32.wrapping_add(o32) as u64,
                        0x10 => d32.wrapping_sub(o32) as u64,
                        0x20 => d32.wrapping_mul(o32) as u64,
                        0x30 => d32.checked_div(o32).unwrap_or(0) as u64,
                        0x40 => (d32 | o32) as u64,
                        0x50 => (d32 & o32) as u64,
                        0x60 => d32.wrapping_shl(o32 & 31) as u64,
                        0x70 => d32.wrapping_shr(o32 & 31) as u64,
                        0x80 => d32.wrapping_neg() as u64,
                        0x90 => d32.checked_rem(o32).unwrap_or(d32) as u64,
                        0xa0 => (d32 ^ o32) as u64,
                        0xb0 => o32 as u64,
                        0xc0 => ((d32 as i32) >> (o32 & 31)) as u32 as u64,
                        0xd0 => {
                            // Byte swap: 0xd4 to little endian, 0xdc to big endian.
                            let be = insn.op & 0x08 != 0;
                            match (insn.imm, be) {
                                (16, false) => d as u16 as u64,
                                (32, false) => d as u32 as u64,
                                (64, false) => d,
                                (16, true) => (d as u16).swap_bytes() as u64,
                                (32, true) => (d as u32).swap_bytes() as u64,
                                (64, true) => d.swap_bytes(),
                                _ => {
                                    return Err(fail(
                                        pc,
                                        format!("invalid byte swap width {}", insn.imm),
                                    ))
                                }
                            }
                        }
                        _ => {
                            return Err(fail(
                                pc,
                                format!("unsupported instruction {:#04x}", insn.op),
                            ))
                        }
                    }
                };
                reg[dst] = r;
            }
            CLS_JMP | CLS_JMP32 => {
                let code = insn.op & 0xf0;
                if cls == CLS_JMP && insn.op == OP_CALL {
                    if insn.src == PSEUDO_CALL {
                        if frames.len() >= MAX_CALL_DEPTH {
                            return Err(fail(
                                pc,
                                format!("more than {MAX_CALL_DEPTH} nested calls"),
                            ));
                        }
                        let target = pc as i64 + 1 + insn.imm as i64;
                        if target < 0 || target as usize >= prog.len() {
                            return Err(fail(
                                pc,
                                format!("call to instruction {target}, outside the program"),
                            ));
                        }
                        frames.push(Frame {
                            return_pc: pc + 1,
                            saved: [reg[6], reg[7], reg[8], reg[9]],
                        });
                        stacks.push(Box::new([0u8; STACK_SIZE]));
                        reg[10] = stacks[stacks.len() - 1].as_ptr() as u64 + STACK_SIZE as u64;
                        next = target as usize;
                    } else if insn.src == 0 {
                        let args = [reg[1], reg[2], reg[3], reg[4], reg[5]];
                        let frames_now: Vec<(u64, u64)> = stacks
                            .iter()
                            .map(|s| (s.as_ptr() as u64, STACK_SIZE as u64))
                            .collect();
                        match machine.call_helper(insn.imm as u32, args, &frames_now) {
                            Ok(HelperOutcome::Return(v)) => reg[0] = v,
                            Ok(HelperOutcome::Unwind(v)) => return Ok(v),
                            Err(message) => return Err(fail(pc, message)),
                        }
                        // r1-r5 are clobbered by a call.
                        reg[1..=5].fill(0);
                    } else {
                        return Err(fail(
                            pc,
                            format!("unsupported call kind (src {})", insn.src),
                        ));
                    }
                } else if cls == CLS_JMP && insn.op == OP_EXIT {
                    match frames.pop() {
                        None => return Ok(reg[0]),
                        Some(f) => {
                            stacks.pop();
                            reg[6..=9].copy_from_slice(&f.saved);
                            reg[10] = stacks[stacks.len() - 1].as_ptr() as u64 + STACK_SIZE as u64;
                            next = f.return_pc;
                        }
                    }
                } else {
                    let operand = if insn.op & 0x08 != 0 {
                        reg[src]
                    } else {
                        insn.imm as i64 as u64
                    };
                    let (a, b) = if cls == CLS_JMP32 {
                        (reg[dst] as u32 as u64, operand as u32 as u64)
                    } else {
                        (reg[dst], operand)
                    };
                    let (sa, sb) = if cls == CLS_JMP32 {
                        (a as u32 as i32 as i64, b as u32 as i32 as i64)
                    } else {
                        (a as i64, b as i64)
                    };
                    let taken = match code {
                        0x00 => true,
                        0x10 => a == b,
                        0x20 => a > b,
                        0x30 => a >= b,
                        0x40 => a & b != 0,
                        0x50 => a != b,
                        0x60 => sa > sb,
                        0x70 => sa >= sb,
                        0xa0 => a < b,
                        0xb0 => a <= b,
                        0xc0 => sa < sb,
                        0xd0 => sa <= sb,
                        _ => {
                            return Err(fail(
                                pc,
                                format!("unsupported instruction {:#04x}", insn.op),
                            ))
                        }
                    };
                    if taken {
                        let target = pc as i64 + 1 + insn.off as i64;
                        if target < 0 || target as usize >= prog.len() {
                            return Err(fail(
                                pc,
                                format!("jump to instruction {target}, outside the program"),
                            ));
                        }
                        next = target as usize;
                    }
                }
            }
            _ => {
                return Err(fail(
                    pc,
                    format!("unsupported instruction {:#04x}", insn.op),
                ))
            }
        }
        pc = next;
    }
}

/// # Safety
/// `[addr, addr + size)` must be readable.
unsafe fn load(addr: u64, size: u64) -> u64 {
    let p = addr as usize as *const u8;
    // SAFETY: the caller guarantees the range is readable; reads are unaligned.
    unsafe {
        match size {
            1 => p.read() as u64,
            2 => (p as *const u16).read_unaligned() as u64,
            4 => (p as *const u32).read_unaligned() as u64,
            _ => (p as *const u64).read_unaligned(),
        }
    }
}

/// # Safety
/// `[addr, addr + size)` must be writable.
unsafe fn store(addr: u64, size: u64, value: u64) {
    let p = addr as usize as *mut u8;
    // SAFETY: the caller guarantees the range is writable; writes are unaligned.
    unsafe {
        match size {
            1 => p.write(value as u8),
            2 => (p as *mut u16).write_unaligned(value as u16),
            4 => (p as *mut u32).write_unaligned(value as u32),
            _ => (p as *mut u64).write_unaligned(value),
        }
    }
}
