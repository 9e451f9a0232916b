//! Crash reporter: when driver code (or ntsim itself) faults, say where and
//! on what before the process dies.
//!
//! [`install`] (called by every [`crate::Sim::new`]) installs handlers for
//! SIGSEGV, SIGBUS (invalid memory access: special-pool overruns, use after
//! free, calls into an unloaded image) and SIGILL (`ud2`, which is how Rust
//! code built with `panic = "abort"` traps). The handler prints, to stderr
//! with `write(2)`:
//!
//! - the signal, the faulting address and the kind of access, RIP and RSP;
//! - what the faulting address is: a pool block ([`crate::kernel::pool::describe_address`]
//!   without blocking: "special pool: the first byte past the end of a
//!   64-byte block tagged 'Test' (allocation #1), in its guard page") or a
//!   driver image ([`crate::kernel::images::describe_address`]);
//! - where RIP is ([`crate::kernel::images::describe_address`]);
//! - a hint when the address is just below the stack pointer (stack overflow);
//!
//! then exits with [`FATAL_EXIT_STATUS`] (`_exit`, so nothing else runs).
//! SIGABRT keeps its default action.
//!
//! The report is formatted into a fixed buffer on the signal stack and the
//! pool is consulted with `try_lock` only, so the handler does not allocate
//! or deadlock in ntsim's own code; the loader's description returns a
//! `String`, the one allocation left (a fault inside the host allocator
//! itself could make that one hang, which a driver fault cannot cause).
//!
//! Signal stacks: a stack overflow can only be reported on an alternate
//! signal stack, and those are per thread. [`install`] gives the calling
//! thread one (64 KiB); other threads get one when they create a `Sim` or
//! call [`install_thread`]. Threads spawned by Rust's std already have the
//! small alternate stack std sets up for its own overflow message, on which
//! the report still fits.

use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Exit status of a process the crash reporter ended. Not 101, which is
/// what a failing Rust test binary returns.
pub const FATAL_EXIT_STATUS: i32 = 86;

const ALT_STACK_SIZE: usize = 64 * 1024;
const PAGE: usize = 4096;
/// `si_code` of a fault the kernel raised without an address (a general
/// protection fault, such as a non-canonical address).
const SI_KERNEL: i32 = 0x80;

static INSTALL: Once = Once::new();
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Installs the fatal-signal handlers (once per process) and an alternate
/// signal stack for the calling thread (once per thread).
pub fn install() {
    INSTALL.call_once(|| {
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL] {
            // SAFETY: a zeroed sigaction is a valid value to fill in; the
            // handler has the SA_SIGINFO signature and is async-signal-safe
            // as far as documented above.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fatal_signal as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                let rc = libc::sigaction(sig, &sa, std::ptr::null_mut());
                assert_eq!(rc, 0, "sigaction({sig}) failed");
            }
        }
    });
    install_thread();
}

/// Gives the calling thread its own alternate signal stack, so that a stack
/// overflow on it is reported too. Idempotent.
pub fn install_thread() {
    ALT_STACK.with(|a| {
        let mut a = a.borrow_mut();
        if a.is_none() {
            *a = AltStack::new();
        }
    });
}

thread_local! {
    static ALT_STACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

/// An alternate signal stack with a guard page below it, unmapped when its
/// thread exits.
struct AltStack {
    base: usize,
    len: usize,
}

impl AltStack {
    fn new() -> Option<AltStack> {
        let len = ALT_STACK_SIZE + PAGE;
        // SAFETY: a fresh anonymous mapping; the first page becomes a guard.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: the first page of the mapping just created.
        unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) };
        let st = libc::stack_t {
            ss_sp: (base as usize + PAGE) as *mut c_void,
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        // SAFETY: `st` describes memory owned by this AltStack, which lives
        // until the thread exits (its Drop disables the stack first).
        if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
            // SAFETY: the mapping created above, unused.
            unsafe { libc::munmap(base, len) };
            return None;
        }
        Some(AltStack {
            base: base as usize,
            len,
        })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: queries the thread's current alternate stack, disables it
        // if it is this one, then unmaps this one's memory (no handler can
        // run on it once disabled).
        unsafe {
            let mut cur: libc::stack_t = std::mem::zeroed();
            libc::sigaltstack(std::ptr::null(), &mut cur);
            if cur.ss_sp as usize == self.base + PAGE {
                let off = libc::stack_t {
                    ss_sp: std::ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
                libc::sigaltstack(&off, std::ptr::null_mut());
            }
            libc::munmap(self.base as *mut c_void, self.len);
        }
    }
}

/// A fixed-size text buffer (no allocation); text past its end is dropped.
struct Buf {
    bytes: [u8; 2048],
    len: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            bytes: [0; 2048],
            len: 0,
        }
    }

    /// Writes the buffer to stderr and empties it.
    fn flush(&mut self) {
        let mut off = 0;
        while off < self.len {
            // SAFETY: writes initialized bytes of the buffer to fd 2.
            let n = unsafe { libc::write(2, self.bytes[off..].as_ptr().cast(), self.len - off) };
            if n <= 0 {
                break;
            }
            off += n as usize;
        }
        self.len = 0;
    }
}

impl fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    if REPORTING.swap(true, Ordering::SeqCst) {
        // Another thread is reporting and will end the process.
        loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: the kernel passes a valid siginfo and ucontext to an
    // SA_SIGINFO handler; on x86_64 Linux gregs holds the interrupted
    // registers.
    let (addr, code, rip, rsp, err) = unsafe {
        let uc = &*(ctx as *const libc::ucontext_t);
        let g = &uc.uc_mcontext.gregs;
        (
            (*info).si_addr() as usize,
            (*info).si_code,
            g[libc::REG_RIP as usize] as usize,
            g[libc::REG_RSP as usize] as usize,
            g[libc::REG_ERR as usize] as u64,
        )
    };
    let mut b = Buf::new();
    report(&mut b, sig, addr, code, rip, rsp, err);
    let _ = writeln!(b, "ntsim: exiting with status {FATAL_EXIT_STATUS}");
    b.flush();
    // SAFETY: ends the process at once, running nothing else.
    unsafe { libc::_exit(FATAL_EXIT_STATUS) }
}

fn report(b: &mut Buf, sig: i32, addr: usize, code: i32, rip: usize, rsp: usize, err: u64) {
    let memory_fault = sig == libc::SIGSEGV || sig == libc::SIGBUS;
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let _ = write!(b, "\nntsim: FATAL: {name} in thread {tid}: ");
    if memory_fault && code == SI_KERNEL {
        let _ = writeln!(
            b,
            "general-protection fault (a non-canonical address, such as a pointer read \
             from uninitialized pool filled with 0x{:02x}); rip {rip:#x}, rsp {rsp:#x}",
            crate::kernel::pool::UNINITIALIZED_FILL
        );
    } else if memory_fault {
        let access = if err & 0x10 != 0 {
            "execute"
        } else if err & 0x2 != 0 {
            "write"
        } else {
            "read"
        };
        let _ = writeln!(
            b,
            "invalid {access} access at address {addr:#x}; rip {rip:#x}, rsp {rsp:#x}"
        );
    } else {
        let _ = writeln!(
            b,
            "illegal instruction at rip {rip:#x}, rsp {rsp:#x} (ud2 is how Rust code \
             aborts: a panic in a panic=abort driver?)"
        );
    }
    b.flush();
    if memory_fault && code != SI_KERNEL {
        let _ = write!(b, "ntsim:   address {addr:#x}: ");
        match crate::kernel::pool::describe_address_nonblocking(addr, b) {
            Some(true) => {}
            Some(false) => match crate::kernel::images::describe_address(addr) {
                Some(d) => {
                    let _ = b.write_str(&d);
                }
                None => {
                    let _ = b.write_str("not in a pool block or a driver image");
                }
            },
            None => {
                let _ = b.write_str("(pool state busy: cannot describe)");
            }
        }
        let _ = b.write_char('\n');
        if addr <= rsp.saturating_add(256) && rsp.saturating_sub(addr) <= 1 << 20 {
            let _ = writeln!(
                b,
                "ntsim:   the address is just below the stack pointer: probably a stack overflow"
            );
        }
        b.flush();
    }
    let _ = write!(b, "ntsim:   rip {rip:#x}: ");
    match crate::kernel::images::describe_address(rip) {
        Some(d) => {
            let _ = writeln!(b, "{d}");
        }
        None => {
            let _ = writeln!(b, "not in a driver image (host code)");
        }
    }
    b.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child;

    #[test]
    fn buffer_truncates_instead_of_overflowing() {
        let mut b = Buf::new();
        for _ in 0..100 {
            let _ = b.write_str("0123456789012345678901234567890123456789");
        }
        assert_eq!(b.len, b.bytes.len());
    }

    #[test]
    fn install_is_idempotent_and_per_thread() {
        install();
        install();
        let ours = ALT_STACK.with(|a| a.borrow().as_ref().map(|s| s.base));
        assert!(ours.is_some());
        // SAFETY: queries the current alternate stack.
        let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) };
        assert_eq!(cur.ss_sp as usize, ours.unwrap() + PAGE);
        let other = std::thread::spawn(|| {
            install_thread();
            ALT_STACK.with(|a| a.borrow().as_ref().map(|s| s.base))
        })
        .join()
        .unwrap();
        assert!(other.is_some() && other != ours);
    }

    #[test]
    fn stack_overflow_is_reported() {
        const NAME: &str = "kernel::crash::tests::stack_overflow_is_reported";
        if child::is_child(NAME) {
            let _sim = crate::Sim::new();
            #[inline(never)]
            fn recurse(n: u64) -> u64 {
                let buf = std::hint::black_box([n; 64]);
                if std::hint::black_box(n) == u64::MAX {
                    return 0;
                }
                recurse(n + 1) + buf[7]
            }
            recurse(0);
            unreachable!("infinite recursion returned");
        }
        let out = child::run_test_in_child(NAME);
        assert_eq!(out.status.code(), Some(FATAL_EXIT_STATUS), "{out:?}");
        assert!(
            out.stderr.contains("probably a stack overflow"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("rip 0x"), "{}", out.stderr);
    }

    #[test]
    fn illegal_instruction_is_reported() {
        const NAME: &str = "kernel::crash::tests::illegal_instruction_is_reported";
        if child::is_child(NAME) {
            let _sim = crate::Sim::new();
            // SAFETY: none: ud2 raises SIGILL deliberately.
            unsafe { std::arch::asm!("ud2") };
            unreachable!("ud2 returned");
        }
        let out = child::run_test_in_child(NAME);
        assert_eq!(out.status.code(), Some(FATAL_EXIT_STATUS), "{out:?}");
        assert!(
            out.stderr.contains("ntsim: FATAL: SIGILL"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("not in a driver image (host code)"),
            "{}",
            out.stderr
        );
    }
}
