//! The portable flavor's runtime: what `core` and `alloc` expect from the
//! environment, provided by the kernel. (The KMDF flavor gets the same from
//! `wdk-alloc` and `wdk-panic`.)

use crate::fmt::FixedBuf;
use crate::nt;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;

use crate::pool;

/// Bug check code of a Rust panic in the driver ("NTOS" in ASCII; the same
/// for every driver built on this library).
///
/// Parameters: 1 = address of a NUL-terminated ASCII message
/// `"<driver> panic at <file>:<line>:<column>: <message>"` (`<driver>` is the
/// extension's name, e.g. `ntosebpfext`; on the
/// panicking thread's stack, readable with `da` in the dump), 2 = line,
/// 3 = column, 4 = 0.
pub const BUGCHECK_RUST_PANIC: u32 = 0x4E54_4F53;

/// Pool allocations are 16-byte aligned on x64; larger alignments are not
/// supported (no type in the driver needs one) and fail the allocation.
const POOL_ALIGNMENT: usize = 16;

struct PoolAllocator;

// SAFETY: ExAllocatePool2 returns either null or a block of at least `size`
// bytes, 16-byte aligned, that stays valid until ExFreePoolWithTag; layouts
// needing more alignment are refused with null, as GlobalAlloc allows.
unsafe impl GlobalAlloc for PoolAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > POOL_ALIGNMENT {
            return core::ptr::null_mut();
        }
        // SAFETY: plain kernel call; the flags ask for non-paged, uninitialized memory.
        unsafe {
            nt::ExAllocatePool2(
                nt::POOL_FLAG_NON_PAGED | nt::POOL_FLAG_UNINITIALIZED,
                layout.size(),
                pool::tag(),
            )
            .cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() > POOL_ALIGNMENT {
            return core::ptr::null_mut();
        }
        // SAFETY: without POOL_FLAG_UNINITIALIZED the pool zeroes the block.
        unsafe { nt::ExAllocatePool2(nt::POOL_FLAG_NON_PAGED, layout.size(), pool::tag()).cast() }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned, which
        // carries our tag.
        unsafe { nt::ExFreePoolWithTag(ptr.cast(), pool::tag()) }
    }
}

#[global_allocator]
static ALLOCATOR: PoolAllocator = PoolAllocator;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut msg = FixedBuf::<512>::new();
    let driver = crate::driver::active().map_or("ebpf_ext", |extension| extension.name);
    let (line, column) = match info.location() {
        Some(loc) => {
            let _ = write!(
                msg,
                "{driver} panic at {}:{}:{}: {}",
                loc.file(),
                loc.line(),
                loc.column(),
                info.message()
            );
            (loc.line() as usize, loc.column() as usize)
        }
        None => {
            let _ = write!(msg, "{driver} panic: {}", info.message());
            (0, 0)
        }
    };
    let text = msg.as_cstr_ptr();
    // SAFETY: both strings are NUL-terminated and outlive the call.
    unsafe {
        nt::DbgPrintEx(
            nt::DPFLTR_IHVDRIVER_ID,
            nt::DPFLTR_ERROR_LEVEL,
            c"%s\n".as_ptr().cast(),
            text,
        )
    };
    // SAFETY: KeBugCheckEx does not return, so `msg` stays on the stack for
    // the dump.
    unsafe { nt::KeBugCheckEx(BUGCHECK_RUST_PANIC, text as usize, line, column, 0) }
}

// Two symbols the precompiled `core` references and the MSVC CRT would
// normally define. They are defined in assembly rather than as
// `#[no_mangle]` Rust items so that they stay out of the image's export table.
//
// `_fltused`: marks that floating point is in use (`core` has float code).
//
// `__CxxFrameHandler3`: the personality routine named in `core`'s unwind
// tables. The driver never unwinds (panic=abort), so the routine handles
// nothing: it returns `ExceptionContinueSearch` (1), letting the kernel go on
// to its own handling (a bug check that names the original exception) rather
// than masking that exception with a second failure.
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0",
    ".text",
    ".globl __CxxFrameHandler3",
    ".p2align 4",
    "__CxxFrameHandler3:",
    "mov eax, 1",
    "ret",
);
