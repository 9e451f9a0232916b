//! Run-time library exports of ntoskrnl.exe: the C runtime symbols that
//! compiled Rust code references (`memcpy`, `memmove`, `memset`, `memcmp`,
//! `strlen`, `__chkstk`), counted-string helpers (`RtlInitUnicodeString`,
//! `RtlCompareUnicodeString`, `RtlEqualUnicodeString`,
//! `RtlCompareMemory`), and `KeBugCheckEx` (`MmGetSystemRoutineAddress` is in `exports.rs`,
//! next to the table it searches).
//!
//! The Rust functions keep the Windows names but are not `#[no_mangle]`:
//! the symbols stay private to this crate, so they never shadow the host
//! libc's `memcpy` and friends. The driver reaches them through its import
//! address table.

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::irql;
use crate::kernel::types::{DISPATCH_LEVEL, HIGH_LEVEL, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use std::ffi::c_void;

/// The bug check code the driver's panic handler raises ('NTOS'): P1 is
/// the address of a NUL-terminated ASCII message, P2 the line, P3 the
/// column.
pub const BUGCHECK_RUST_PANIC: u32 = 0x4E54_4F53;

/// Exit status of the process after a bug check (a "blue screen"), chosen
/// to differ from a Rust panic (101) and an abort (134).
pub const BUGCHECK_EXIT_STATUS: i32 = 0xBC;

/// `memcpy`. Copies with `memmove` semantics, as the x64 kernel's
/// implementation does, so an overlapping copy gives the memmove result.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes.
pub unsafe extern "win64" fn memcpy(
    dest: *mut c_void,
    src: *const c_void,
    n: usize,
) -> *mut c_void {
    // SAFETY: the caller guarantees both ranges are valid for n bytes;
    // ptr::copy allows overlap.
    unsafe { std::ptr::copy(src.cast::<u8>(), dest.cast::<u8>(), n) };
    dest
}

/// `memmove`: overlapping ranges are copied as if through a temporary.
///
/// # Safety
/// `dest` and `src` must be valid for `n` bytes.
pub unsafe extern "win64" fn memmove(
    dest: *mut c_void,
    src: *const c_void,
    n: usize,
) -> *mut c_void {
    // SAFETY: as in memcpy; ptr::copy handles overlap.
    unsafe { std::ptr::copy(src.cast::<u8>(), dest.cast::<u8>(), n) };
    dest
}

/// `memset`: fills with `(unsigned char)c`.
///
/// # Safety
/// `dest` must be valid for writing `n` bytes.
pub unsafe extern "win64" fn memset(dest: *mut c_void, c: i32, n: usize) -> *mut c_void {
    // SAFETY: the caller guarantees dest is writable for n bytes.
    unsafe { std::ptr::write_bytes(dest.cast::<u8>(), c as u8, n) };
    dest
}

/// `memcmp`: compares as unsigned bytes; negative, zero or positive (the
/// difference of the first differing bytes).
///
/// # Safety
/// `a` and `b` must be valid for reading `n` bytes.
pub unsafe extern "win64" fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller guarantees both are readable for n bytes.
    let (x, y) = unsafe {
        (
            std::slice::from_raw_parts(a.cast::<u8>(), n),
            std::slice::from_raw_parts(b.cast::<u8>(), n),
        )
    };
    x.iter()
        .zip(y)
        .find(|(p, q)| p != q)
        .map_or(0, |(p, q)| *p as i32 - *q as i32)
}

/// `strlen`.
///
/// # Safety
/// `s` must point to a NUL-terminated string.
pub unsafe extern "win64" fn strlen(s: *const u8) -> usize {
    // SAFETY: the caller guarantees NUL termination.
    unsafe { std::ffi::CStr::from_ptr(s.cast()) }
        .to_bytes()
        .len()
}

// `__chkstk` under the x64 MSVC convention: RAX holds the size of the frame
// the caller is about to allocate; the routine touches every page between
// the caller's stack pointer and RSP - RAX, from the top down, so that the
// pages are committed in order (Windows grows the stack one guard page at a
// time). It returns with every register intact except R10, R11 and the
// flags, which a Rust function cannot promise, hence assembly.
//
// On Linux thread stacks are committed already; touching each page still
// turns an overflow into an immediate fault on the guard page, at the
// allocation that overflowed, rather than a corrupted neighbour. Pages are
// touched by a read (`test`), which never changes memory.
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl ntsim_rtl_chkstk",
    ".hidden ntsim_rtl_chkstk",
    ".type ntsim_rtl_chkstk,@function",
    "ntsim_rtl_chkstk:",
    // r10 = the caller's RSP (above our return address).
    "lea r10, [rsp + 8]",
    // r11 = the lowest address of the new frame (saturating at 0).
    "mov r11, r10",
    "sub r11, rax",
    "jae 2f",
    "xor r11, r11",
    "2:",
    // Step down one page at a time while still above the target.
    "sub r10, 0x1000",
    "jb 3f",
    "cmp r10, r11",
    "jb 3f",
    "test byte ptr [r10], 0",
    "jmp 2b",
    "3:",
    // And the lowest byte of the frame itself.
    "test byte ptr [r11], 0",
    "ret",
    ".size ntsim_rtl_chkstk, . - ntsim_rtl_chkstk",
);

extern "C" {
    /// The `__chkstk` routine above. Not callable from Rust (it takes its
    /// argument in RAX); only its address is used.
    fn ntsim_rtl_chkstk();
}

/// The address of the simulated `__chkstk`.
pub fn chkstk_address() -> usize {
    ntsim_rtl_chkstk as *const () as usize
}

/// `KeBugCheckEx`: the machine stops. Prints the bug check (and, for the
/// driver's panic bug check, its message) to stderr and ends the process
/// with [`BUGCHECK_EXIT_STATUS`].
///
/// # Safety
/// For [`BUGCHECK_RUST_PANIC`], `P1` must be null or point to a
/// NUL-terminated string.
pub unsafe extern "win64" fn KeBugCheckEx(
    BugCheckCode: u32,
    P1: usize,
    P2: usize,
    P3: usize,
    P4: usize,
) -> ! {
    eprintln!("ntsim: BUGCHECK {BugCheckCode:#010x} ({P1:#x}, {P2:#x}, {P3:#x}, {P4:#x})");
    if BugCheckCode == BUGCHECK_RUST_PANIC && P1 != 0 {
        // SAFETY: for this code the driver passes a NUL-terminated message.
        let msg = unsafe { std::ffi::CStr::from_ptr(P1 as *const std::ffi::c_char) };
        eprintln!(
            "ntsim: driver panic at line {P2}, column {P3}: {}",
            msg.to_string_lossy()
        );
    } else {
        for (i, p) in [P1, P2, P3, P4].into_iter().enumerate() {
            let place = crate::kernel::images::describe_address(p)
                .or_else(|| crate::kernel::pool::describe_address(p));
            if let Some(place) = place {
                eprintln!("ntsim:   P{}: {place}", i + 1);
            }
        }
    }
    for v in violation::peek() {
        eprintln!("ntsim:   earlier violation: {v}");
    }
    // SAFETY: _exit ends the process at once, without running atexit
    // handlers or destructors over kernel state the bug check interrupted.
    unsafe { libc::_exit(BUGCHECK_EXIT_STATUS) }
}

/// `RtlInitUnicodeString` (<= DISPATCH_LEVEL): points `DestinationString`
/// at the NUL-terminated `SourceString` (lengths in bytes, the length
/// capped at 0xFFFC as Windows does).
///
/// # Safety
/// `DestinationString` must be writable; `SourceString` null or
/// NUL-terminated.
pub unsafe extern "win64" fn RtlInitUnicodeString(
    DestinationString: *mut UNICODE_STRING,
    SourceString: *const u16,
) {
    irql::require_at_most("RtlInitUnicodeString", DISPATCH_LEVEL);
    let (length, maximum) = if SourceString.is_null() {
        (0, 0)
    } else {
        let mut n = 0usize;
        // SAFETY: the caller guarantees NUL termination.
        while unsafe { *SourceString.add(n) } != 0 {
            n += 1;
        }
        let bytes = (n * 2).min(0xFFFC);
        (bytes as u16, bytes as u16 + 2)
    };
    // SAFETY: the caller passes a writable UNICODE_STRING.
    unsafe {
        DestinationString.write(UNICODE_STRING {
            Length: length,
            MaximumLength: maximum,
            Buffer: SourceString as *mut u16,
        })
    };
}

/// Upper-cases one UTF-16 unit the way `RtlUpcaseUnicodeChar` does: a
/// simple one-to-one mapping, units without one stay as they are.
pub fn upcase_unit(u: u16) -> u16 {
    let Some(c) = char::from_u32(u as u32) else {
        return u; // a surrogate half
    };
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(x), None) if (x as u32) <= 0xFFFF => x as u32 as u16,
        _ => u,
    }
}

/// Compares two UTF-16 strings as `RtlCompareUnicodeString` does: the
/// difference of the first differing units (upper-cased when
/// `case_insensitive`), else the difference of the lengths in bytes.
pub fn compare_units(a: &[u16], b: &[u16], case_insensitive: bool) -> i32 {
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = if case_insensitive {
            (upcase_unit(x), upcase_unit(y))
        } else {
            (x, y)
        };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    (a.len() as i32 - b.len() as i32) * 2
}

/// The units of a counted string.
///
/// # Safety
/// `s` must point to a valid `UNICODE_STRING` whose buffer holds `Length`
/// bytes, and the result must not outlive that buffer.
unsafe fn units<'a>(s: *const UNICODE_STRING) -> &'a [u16] {
    // SAFETY: guaranteed by the caller.
    let s = unsafe { &*s };
    if s.Buffer.is_null() || s.Length == 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(s.Buffer, s.Length as usize / 2) }
}

/// `RtlCompareUnicodeString` (PASSIVE_LEVEL).
///
/// # Safety
/// Both arguments must point to valid `UNICODE_STRING`s.
pub unsafe extern "win64" fn RtlCompareUnicodeString(
    String1: *const UNICODE_STRING,
    String2: *const UNICODE_STRING,
    CaseInSensitive: u8,
) -> i32 {
    irql::require_at_most("RtlCompareUnicodeString", PASSIVE_LEVEL);
    // SAFETY: the caller passes valid strings.
    let (a, b) = unsafe { (units(String1), units(String2)) };
    compare_units(a, b, CaseInSensitive != 0)
}

/// `RtlEqualUnicodeString` (PASSIVE_LEVEL): TRUE (1) or FALSE (0).
///
/// # Safety
/// Both arguments must point to valid `UNICODE_STRING`s.
pub unsafe extern "win64" fn RtlEqualUnicodeString(
    String1: *const UNICODE_STRING,
    String2: *const UNICODE_STRING,
    CaseInSensitive: u8,
) -> u8 {
    irql::require_at_most("RtlEqualUnicodeString", PASSIVE_LEVEL);
    // SAFETY: the caller passes valid strings.
    let (a, b) = unsafe { (units(String1), units(String2)) };
    (a.len() == b.len() && compare_units(a, b, CaseInSensitive != 0) == 0) as u8
}

/// `RtlCompareMemory` (any IRQL for resident memory): the number of
/// leading bytes that match.
///
/// # Safety
/// Both blocks must be readable for `Length` bytes.
pub unsafe extern "win64" fn RtlCompareMemory(
    Source1: *const c_void,
    Source2: *const c_void,
    Length: usize,
) -> usize {
    irql::require_at_most("RtlCompareMemory", HIGH_LEVEL);
    if Length == 0 {
        return 0;
    }
    // SAFETY: the caller guarantees both are readable for Length bytes.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(Source1.cast::<u8>(), Length),
            std::slice::from_raw_parts(Source2.cast::<u8>(), Length),
        )
    };
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", memcpy),
        export!("ntoskrnl.exe", memmove),
        export!("ntoskrnl.exe", memset),
        export!("ntoskrnl.exe", memcmp),
        export!("ntoskrnl.exe", strlen),
        Export {
            module: "ntoskrnl.exe",
            name: "__chkstk",
            addr: chkstk_address(),
        },
        export!("ntoskrnl.exe", KeBugCheckEx),
        export!("ntoskrnl.exe", RtlInitUnicodeString),
        export!("ntoskrnl.exe", RtlCompareUnicodeString),
        export!("ntoskrnl.exe", RtlEqualUnicodeString),
        export!("ntoskrnl.exe", RtlCompareMemory),
    ]
}

/// Forgets all state (a new [`crate::Sim`]; the run-time library has none).
pub(crate) fn reset() {}

/// What a driver left behind, one line each (the run-time library holds
/// no resources).
pub(crate) fn outstanding() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::exports::MmGetSystemRoutineAddress;
    use crate::kernel::types::OwnedUnicodeString;

    #[test]
    fn memory_functions_match_the_crt() {
        let _sim = crate::Sim::new();
        let mut buf = *b"0123456789";
        // SAFETY: all ranges lie inside `buf`.
        unsafe {
            // Overlapping forward move.
            let r = memmove(buf.as_mut_ptr().add(2).cast(), buf.as_ptr().cast(), 6);
            assert_eq!(r, buf.as_mut_ptr().add(2).cast());
        }
        assert_eq!(&buf, b"0101234589");
        let mut buf = *b"0123456789";
        // SAFETY: as above (backward overlap, through memcpy).
        unsafe { memcpy(buf.as_mut_ptr().cast(), buf.as_ptr().add(3).cast(), 6) };
        assert_eq!(&buf, b"3456786789");
        // SAFETY: in bounds.
        unsafe { memset(buf.as_mut_ptr().add(1).cast(), 0x141, 3) };
        assert_eq!(&buf, b"3AAA786789");
        let (a, b) = ([1u8, 2, 0x80], [1u8, 2, 0x7f]);
        // SAFETY: 3-byte arrays.
        unsafe {
            assert!(
                memcmp(a.as_ptr().cast(), b.as_ptr().cast(), 3) > 0,
                "bytes are unsigned"
            );
            assert!(memcmp(b.as_ptr().cast(), a.as_ptr().cast(), 3) < 0);
            assert_eq!(memcmp(a.as_ptr().cast(), b.as_ptr().cast(), 2), 0);
            assert_eq!(memcmp(a.as_ptr().cast(), b.as_ptr().cast(), 0), 0);
            assert_eq!(strlen(c"hello".as_ptr().cast()), 5);
            assert_eq!(strlen(c"".as_ptr().cast()), 0);
            assert_eq!(RtlCompareMemory(a.as_ptr().cast(), b.as_ptr().cast(), 3), 2);
            assert_eq!(RtlCompareMemory(a.as_ptr().cast(), a.as_ptr().cast(), 3), 3);
        }
    }

    /// Calls `__chkstk` the way compiled code does, with every register it
    /// must preserve holding a known value.
    fn call_chkstk(size: u64) -> [u64; 11] {
        let f = chkstk_address();
        let mut r = [
            size,
            0x1111_1111_1111_1111u64,
            0x2222_2222_2222_2222,
            0x3333_3333_3333_3333,
            0x4444_4444_4444_4444,
            0x5555_5555_5555_5555,
            0x6666_6666_6666_6666,
            0x7777_7777_7777_7777,
            0x8888_8888_8888_8888,
            0x9999_9999_9999_9999,
            0,
        ];
        let sp_before: u64;
        let sp_after: u64;
        // SAFETY: the routine only reads stack pages below RSP (committed
        // thread stack) and clobbers r10/r11/flags, declared below. The
        // asm block is not `nostack`, so RSP is call-aligned and the red
        // zone is free.
        unsafe {
            std::arch::asm!(
                "mov {sp0}, rsp",
                "call {f}",
                "mov {sp1}, rsp",
                f = in(reg) f,
                sp0 = out(reg) sp_before,
                sp1 = out(reg) sp_after,
                inout("rax") r[0],
                inout("rcx") r[1],
                inout("rdx") r[2],
                inout("rsi") r[3],
                inout("rdi") r[4],
                inout("r8") r[5],
                inout("r9") r[6],
                inout("r12") r[7],
                inout("r13") r[8],
                inout("r14") r[9],
                out("r10") _,
                out("r11") _,
            );
        }
        r[10] = (sp_before == sp_after) as u64;
        r
    }

    #[test]
    fn chkstk_probes_and_preserves_registers() {
        let _sim = crate::Sim::new();
        for size in [0u64, 8, 0x1000, 0x1234, 0x10000] {
            let r = call_chkstk(size);
            assert_eq!(r[0], size, "rax (the frame size) must be preserved");
            let expected = [
                0x1111_1111_1111_1111u64,
                0x2222_2222_2222_2222,
                0x3333_3333_3333_3333,
                0x4444_4444_4444_4444,
                0x5555_5555_5555_5555,
                0x6666_6666_6666_6666,
                0x7777_7777_7777_7777,
                0x8888_8888_8888_8888,
                0x9999_9999_9999_9999,
            ];
            assert_eq!(r[1..10], expected, "size {size:#x}");
            assert_eq!(r[10], 1, "rsp must be restored");
        }
        let e = crate::kernel::exports::find("ntoskrnl.exe", "__chkstk").unwrap();
        assert_eq!(e.addr, chkstk_address());
    }

    /// A frame larger than the stack faults on the guard page inside
    /// `__chkstk` (Rust's runtime reports it as a stack overflow), in a
    /// child process.
    #[test]
    fn chkstk_probe_hits_the_guard_page() {
        const CHILD: &str = "NTSIM_TEST_CHKSTK_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // 64 MiB: far beyond the test thread's stack.
            call_chkstk(64 << 20);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kernel::rtl::tests::chkstk_probe_hits_the_guard_page",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    }

    #[test]
    fn system_routine_lookup() {
        let _sim = crate::Sim::new();
        let name = OwnedUnicodeString::new("RtlCompareMemory");
        // SAFETY: a valid UNICODE_STRING.
        let p = unsafe { MmGetSystemRoutineAddress(name.as_ptr()) };
        assert_eq!(p as usize, RtlCompareMemory as *const () as usize);
        let name = OwnedUnicodeString::new("NoSuchRoutine");
        // SAFETY: as above.
        assert!(unsafe { MmGetSystemRoutineAddress(name.as_ptr()) }.is_null());
        // Names are case-sensitive, as export names are.
        let name = OwnedUnicodeString::new("rtlcomparememory");
        // SAFETY: as above.
        assert!(unsafe { MmGetSystemRoutineAddress(name.as_ptr()) }.is_null());
        assert!(violation::take().is_empty());
        // Above PASSIVE_LEVEL it is a violation.
        let name = OwnedUnicodeString::new("memcpy");
        // SAFETY: as above.
        irql::at(DISPATCH_LEVEL, || unsafe {
            MmGetSystemRoutineAddress(name.as_ptr())
        });
        assert_eq!(violation::take().len(), 1);
    }

    #[test]
    fn unicode_strings() {
        let _sim = crate::Sim::new();
        let wide: Vec<u16> = "Hello\0".encode_utf16().collect();
        let mut us = UNICODE_STRING {
            Length: 7,
            MaximumLength: 7,
            Buffer: std::ptr::null_mut(),
        };
        // SAFETY: `us` is writable, `wide` NUL-terminated.
        unsafe { RtlInitUnicodeString(&mut us, wide.as_ptr()) };
        assert_eq!((us.Length, us.MaximumLength), (10, 12));
        assert_eq!(us.Buffer as *const u16, wide.as_ptr());
        // SAFETY: null source is allowed.
        unsafe { RtlInitUnicodeString(&mut us, std::ptr::null()) };
        assert_eq!((us.Length, us.MaximumLength), (0, 0));
        assert!(us.Buffer.is_null());

        let a = OwnedUnicodeString::new("Process");
        let b = OwnedUnicodeString::new("PROCESS");
        let c = OwnedUnicodeString::new("Proc");
        // SAFETY: valid strings.
        unsafe {
            assert_eq!(RtlEqualUnicodeString(a.as_ptr(), b.as_ptr(), 1), 1);
            assert_eq!(RtlEqualUnicodeString(a.as_ptr(), b.as_ptr(), 0), 0);
            assert_eq!(RtlCompareUnicodeString(a.as_ptr(), b.as_ptr(), 1), 0);
            // 'r' (0x72) vs 'R' (0x52)
            assert_eq!(RtlCompareUnicodeString(a.as_ptr(), b.as_ptr(), 0), 0x20);
            // A prefix sorts first; the difference is in bytes.
            assert_eq!(RtlCompareUnicodeString(c.as_ptr(), a.as_ptr(), 0), -6);
            assert_eq!(RtlEqualUnicodeString(a.as_ptr(), c.as_ptr(), 1), 0);
        }
        assert_eq!(upcase_unit('é' as u16), 'É' as u16);
        assert_eq!(upcase_unit('ß' as u16), 'ß' as u16, "no one-to-one mapping");
        assert!(violation::take().is_empty());
    }

    /// KeBugCheckEx ends the process, so the test runs itself in a child
    /// process that bug checks, and checks the child's exit and output.
    #[test]
    fn bugcheck_prints_and_stops_the_machine() {
        const CHILD: &str = "NTSIM_TEST_BUGCHECK_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let msg = c"ntosebpfext panic at src/x.rs:1:2: boom";
            // SAFETY: the message is NUL-terminated and outlives the call.
            unsafe { KeBugCheckEx(BUGCHECK_RUST_PANIC, msg.as_ptr() as usize, 1, 2, 0) };
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kernel::rtl::tests::bugcheck_prints_and_stops_the_machine",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(BUGCHECK_EXIT_STATUS), "{stderr}");
        assert!(stderr.contains("ntsim: BUGCHECK 0x4e544f53 ("), "{stderr}");
        assert!(stderr.contains("boom"), "{stderr}");
    }
}
