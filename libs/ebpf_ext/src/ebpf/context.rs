//! Program contexts: what every hook hands to the eBPF core.
//!
//! The core owns a 64-byte header placed immediately before every program
//! context (`EBPF_CONTEXT_HEADER`). [`ProgramContext`] lays out that header,
//! the context the programs see (`C`, an ABI struct such as `process_md_t`)
//! and the driver's private per-event state (`P`), and recovers the whole
//! from the context pointer a helper receives. [`Packet`] fills a context's
//! "packet" pointers (the bytes `ebpf_context_descriptor_t::data`/`end`
//! point to) from a kernel string.

use super::abi::ebpf_context_header_t;
use crate::pool::PoolBox;
use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr;

/// A program context with its core-owned header in front and the driver's
/// private state after it.
#[repr(C)]
pub struct ProgramContext<C, P> {
    header: ebpf_context_header_t,
    /// What the programs see.
    pub context: C,
    /// The driver's own per-event state (helpers reach it through
    /// [`from_context`](Self::from_context)).
    pub private: P,
}

impl<C, P> ProgramContext<C, P> {
    /// A context with a zeroed header.
    pub const fn new(context: C, private: P) -> Self {
        ProgramContext {
            header: ebpf_context_header_t {
                context_header: [0; 8],
            },
            context,
            private,
        }
    }

    /// The pointer the core receives: just after the header.
    #[inline]
    pub fn as_program_context(&mut self) -> *mut c_void {
        ptr::addr_of_mut!(self.context).cast()
    }

    /// The whole from the pointer a helper or `context_destroy` receives.
    ///
    /// # Safety
    /// `context` must be the `context` field of a live `ProgramContext<C,
    /// P>` (every context this driver passes to the core is), not mutably
    /// borrowed elsewhere for `'a`.
    #[inline]
    pub unsafe fn from_context<'a>(context: *mut C) -> &'a Self {
        let whole = context
            .cast::<u8>()
            .wrapping_sub(offset_of!(Self, context))
            .cast::<Self>();
        // SAFETY: `context` is at a fixed offset inside its live
        // ProgramContext (caller's contract), so `whole` points to it.
        unsafe { &*whole }
    }
}

/// A `bpf_prog_test_run` context: a [`ProgramContext`] in pool, followed by
/// what the run owns (the buffers its packet and private state point into).
/// Helpers see it as the plain `ProgramContext` it starts with, so real
/// events carry none of it.
#[repr(C)]
pub struct TestRunContext<C, P, O> {
    /// The context as helpers see it.
    pub event: ProgramContext<C, P>,
    /// The run's own buffers.
    pub owned: O,
}

impl<C, P, O> TestRunContext<C, P, O> {
    /// Hands the run to the core (`context_create`): the pointer is the
    /// program context, as for real events.
    pub fn into_raw(this: PoolBox<Self>) -> *mut c_void {
        let raw = PoolBox::into_raw(this);
        // SAFETY: `raw` is live; only the address of the field is taken.
        unsafe { ptr::addr_of_mut!((*raw).event.context) }.cast()
    }

    /// Takes back a run from [`into_raw`](Self::into_raw)
    /// (`context_destroy`).
    ///
    /// # Safety
    /// `context` comes from `into_raw` of this type and is taken back once.
    pub unsafe fn from_raw(context: *mut c_void) -> PoolBox<Self> {
        let offset = offset_of!(Self, event) + offset_of!(ProgramContext<C, P>, context);
        let whole = context.cast::<u8>().wrapping_sub(offset).cast::<Self>();
        // SAFETY: the PoolBox allocation `into_raw` gave away.
        unsafe { PoolBox::from_raw(whole) }
    }
}

/// The "packet" of a context: `[start, end)` over bytes valid while the
/// context is in use.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    /// First byte (null when empty).
    pub start: *mut u8,
    /// One past the last byte.
    pub end: *mut u8,
}

impl Packet {
    /// The bytes of `bytes`.
    pub fn of(bytes: &[u8]) -> Packet {
        let start = bytes.as_ptr().cast_mut();
        Packet {
            start,
            end: start.wrapping_add(bytes.len()),
        }
    }
}

/// The bytes of a kernel `UNICODE_STRING` (`Length` bytes at `Buffer`;
/// `None` for a null string or buffer).
///
/// # Safety
/// `s` is null or points to a `UNICODE_STRING` whose buffer holds `Length`
/// bytes, both valid for `'a` (a notify routine's arguments are, for the
/// duration of the call).
#[cfg(windows)]
pub unsafe fn unicode_bytes<'a>(s: *const crate::nt::UNICODE_STRING) -> Option<&'a [u8]> {
    // SAFETY: null or valid (caller's contract).
    let s = unsafe { s.as_ref() }?;
    if s.Buffer.is_null() {
        return None;
    }
    // SAFETY: `Length` bytes at the non-null `Buffer` (caller's contract).
    Some(unsafe { core::slice::from_raw_parts(s.Buffer.cast::<u8>(), s.Length as usize) })
}

impl Packet {
    /// The packet over a kernel `UNICODE_STRING`'s bytes (`Length` bytes
    /// at `Buffer`); both pointers null for a null string or buffer. What
    /// `Packet::of_optional(unicode_bytes(s))` gives, in fewer
    /// instructions (for the event path).
    ///
    /// # Safety
    /// As for [`unicode_bytes`]: the bytes stay valid while the packet is
    /// used.
    #[cfg(windows)]
    #[inline(always)]
    pub unsafe fn of_unicode(s: *const crate::nt::UNICODE_STRING) -> Packet {
        // SAFETY: null or valid (caller's contract).
        let start = match unsafe { s.as_ref() } {
            Some(s) => s.Buffer.cast::<u8>(),
            None => ptr::null_mut(),
        };
        if start.is_null() {
            return Packet { start, end: start };
        }
        // SAFETY: as above (`s` is not null: `start` came from it).
        let len = usize::from(unsafe { (*s).Length });
        Packet {
            start,
            end: start.wrapping_add(len),
        }
    }

    /// The packet over a kernel string's bytes; both pointers null when
    /// there is no string.
    pub fn of_optional(bytes: Option<&[u8]>) -> Packet {
        match bytes {
            Some(bytes) => Packet::of(bytes),
            None => Packet {
                start: ptr::null_mut(),
                end: ptr::null_mut(),
            },
        }
    }
}

/// What `context_create` received: the caller's `data_in` and `context_in`
/// as slices (`None` for a null pointer, which the core passes for an empty
/// buffer). Each program type parses its own format from them.
pub struct TestRunBuffers<'a> {
    /// `data_in`.
    pub data: Option<&'a [u8]>,
    /// `context_in`.
    pub context: Option<&'a [u8]>,
}

/// Checks `context_create`'s arguments, as every program type's test run
/// does: `*context` is set to null first; a null `context`, or a null
/// buffer with a non-zero size, is `EBPF_INVALID_ARGUMENT`.
///
/// # Errors
/// `INVALID_ARGUMENT` as above.
///
/// # Safety
/// Each buffer pointer is null or valid for its size for `'a`; `context`
/// is null or writable (`context_create`'s contract).
pub unsafe fn test_run_buffers<'a>(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> super::abi::EbpfResult<TestRunBuffers<'a>> {
    use super::abi::EbpfError;
    if context.is_null() {
        return Err(EbpfError::INVALID_ARGUMENT);
    }
    // SAFETY: non-null and writable (caller's contract).
    unsafe { *context = ptr::null_mut() };
    /// # Safety
    /// `p` is null or readable for `len` bytes for `'b`.
    unsafe fn slice<'b>(p: *const u8, len: usize) -> super::abi::EbpfResult<Option<&'b [u8]>> {
        if p.is_null() {
            return if len == 0 {
                Ok(None)
            } else {
                Err(EbpfError::INVALID_ARGUMENT)
            };
        }
        if len == 0 {
            return Ok(Some(&[]));
        }
        // SAFETY: non-null and readable for len bytes (caller's contract).
        Ok(Some(unsafe { core::slice::from_raw_parts(p, len) }))
    }
    Ok(TestRunBuffers {
        // SAFETY: forwarded contract.
        data: unsafe { slice(data_in, data_size_in) }?,
        // SAFETY: forwarded contract.
        context: unsafe { slice(context_in, context_size_in) }?,
    })
}

/// A test-run input whose `context_in` is the program context itself:
/// the data bytes and the caller's context, if any.
pub struct TestRunInput<'a, C> {
    /// `data_in` (empty when the caller passed none).
    pub data: &'a [u8],
    /// A copy of `context_in` (None when the caller passed none).
    pub context: Option<C>,
}

/// [`test_run_buffers`] for a program type whose `context_in` is a `C`:
/// a `context_in` smaller than `C` is also `EBPF_INVALID_ARGUMENT`.
/// `context_in` is read unaligned (the caller's buffer has no alignment
/// guarantee).
///
/// # Errors
/// `INVALID_ARGUMENT` as above.
///
/// # Safety
/// As [`test_run_buffers`]; `C` is plain data (any bytes are a valid `C`).
pub unsafe fn test_run_input<'a, C: Copy>(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> super::abi::EbpfResult<TestRunInput<'a, C>> {
    // SAFETY: forwarded contract.
    let buffers =
        unsafe { test_run_buffers(data_in, data_size_in, context_in, context_size_in, context) }?;
    let context = match buffers.context {
        None => None,
        Some(bytes) if bytes.len() < core::mem::size_of::<C>() => {
            return Err(super::abi::EbpfError::INVALID_ARGUMENT)
        }
        // SAFETY: at least size_of::<C>() readable bytes; C is plain data.
        Some(bytes) => Some(unsafe { bytes.as_ptr().cast::<C>().read_unaligned() }),
    };
    Ok(TestRunInput {
        data: buffers.data.unwrap_or(&[]),
        context,
    })
}

/// `context_destroy`'s context output: writes `context` when the caller's
/// buffer holds a whole `C`, and stores the bytes written (0 otherwise).
/// Nothing happens when `size_out` is null.
///
/// # Safety
/// `size_out` is null or readable and writable; `out` is null or writable
/// for `*size_out` bytes (`context_destroy`'s contract); `C` has no
/// implicit padding (every byte written is a field's, so nothing of the
/// driver's stack reaches the caller).
pub unsafe fn write_test_run_context<C: Copy>(context: C, out: *mut u8, size_out: *mut usize) {
    if size_out.is_null() {
        return;
    }
    // SAFETY: caller's contract.
    let room = unsafe { *size_out };
    let size = core::mem::size_of::<C>();
    let written = if !out.is_null() && room >= size {
        // SAFETY: room for a whole C.
        unsafe { out.cast::<C>().write_unaligned(context) };
        size
    } else {
        0
    };
    // SAFETY: caller's contract.
    unsafe { *size_out = written };
}

/// `context_destroy`'s data output: when the caller's buffer holds `need`
/// bytes, `write` fills exactly those; stores the bytes written (0 when it
/// is too small). Nothing happens when `size_out` is null.
///
/// # Safety
/// As [`write_test_run_context`].
pub unsafe fn write_test_run_data(
    need: usize,
    out: *mut u8,
    size_out: *mut usize,
    write: impl FnOnce(&mut [u8]),
) {
    if size_out.is_null() {
        return;
    }
    // SAFETY: caller's contract.
    let room = unsafe { *size_out };
    let written = if !out.is_null() && room >= need {
        if need != 0 {
            // SAFETY: room >= need bytes writable.
            write(unsafe { core::slice::from_raw_parts_mut(out, need) });
        }
        need
    } else {
        0
    };
    // SAFETY: caller's contract.
    unsafe { *size_out = written };
}

/// What one hook's `bpf_prog_test_run` gives back: its run's types and
/// the context and data the caller receives. [`test_run_context_destroy`],
/// instantiated for the hook, takes the run back, writes them
/// (`context_out`, `data_out`) and frees the run.
///
/// # Safety
/// [`ContextOut`](Self::ContextOut) has no implicit padding (it is written
/// to `context_out` byte for byte, so nothing of the driver's stack reaches
/// the caller).
#[cfg(windows)]
pub unsafe trait TestRunOutput {
    /// The program context.
    type Context;
    /// The driver's private per-event state.
    type Private;
    /// What the run owns.
    type Owned;
    /// What `context_out` receives.
    type ContextOut: Copy;

    /// What goes back to the caller when the run is over: the context
    /// (`context_out`) and the pieces of the data, back to back
    /// (`data_out`). The run is the caller's alone by then (no program or
    /// helper reaches it).
    fn output(run: &mut TestRunOf<Self>) -> (Self::ContextOut, impl AsRef<[&[u8]]>);
}

/// The run of a [`TestRunOutput`].
#[cfg(windows)]
pub type TestRunOf<H> = TestRunContext<
    <H as TestRunOutput>::Context,
    <H as TestRunOutput>::Private,
    <H as TestRunOutput>::Owned,
>;

/// One hook's `bpf_prog_test_run`, for a program type whose `context_in`
/// and `context_out` are its program context: only what is specific to
/// the hook. The core's side (checking the buffers, the zeroed context
/// when none is given, `TestRunRefused` events, handing the run over and
/// taking it back, writing `context_out` and `data_out`) is
/// [`test_run_context_create`] and [`test_run_context_destroy`],
/// instantiated for the hook.
///
/// # Safety
/// [`Context`](TestRunOutput::Context) is plain data (any bytes are a
/// valid value: `context_in` is copied into one).
#[cfg(windows)]
pub unsafe trait TestRunHook: TestRunOutput<Context: Copy> {
    /// The hook's name in `TestRunRefused` events.
    const NAME: &'static core::ffi::CStr;
    /// The context of a run whose caller passed none.
    const ZEROED: Self::Context;

    /// Why the input is refused (the `Reason` of the `TestRunRefused`
    /// event; the run fails with `EBPF_INVALID_ARGUMENT`), or `None`.
    fn refusal(context: &Self::Context, data: &[u8]) -> Option<&'static core::ffi::CStr>;

    /// The run, in pool, from accepted input.
    ///
    /// # Errors
    /// As the hook decides (`NO_MEMORY` when the pool is exhausted).
    fn create(
        context: Self::Context,
        data: &[u8],
    ) -> super::abi::EbpfResult<PoolBox<TestRunOf<Self>>>;
}

/// `context_create` of a [`TestRunHook`]: checks the buffers
/// ([`test_run_input`]; refused as `InvalidBuffers`), takes the caller's
/// context or a zeroed one, asks the hook whether it refuses the input,
/// and hands the run it creates to the core.
///
/// # Safety
/// `context_create`'s contract: each pointer valid for its size (or null
/// with size 0), `context` writable.
#[cfg(windows)]
pub unsafe extern "system" fn test_run_context_create<H: TestRunHook>(
    data_in: *const u8,
    data_size_in: usize,
    context_in: *const u8,
    context_size_in: usize,
    context: *mut *mut c_void,
) -> super::abi::ebpf_result_t {
    use super::abi::{EbpfError, EBPF_SUCCESS};
    // SAFETY: forwarded contract; H::Context is plain data (TestRunHook's
    // contract).
    let input = match unsafe {
        test_run_input::<H::Context>(data_in, data_size_in, context_in, context_size_in, context)
    } {
        Ok(input) => input,
        Err(e) => {
            crate::trace::test_run_refused(H::NAME, c"InvalidBuffers", e.code());
            return e.code();
        }
    };
    let md = input.context.unwrap_or(H::ZEROED);
    if let Some(reason) = H::refusal(&md, input.data) {
        let result = EbpfError::INVALID_ARGUMENT.code();
        crate::trace::test_run_refused(H::NAME, reason, result);
        return result;
    }
    match H::create(md, input.data) {
        Ok(run) => {
            // SAFETY: checked non-null and writable by test_run_input.
            unsafe { *context = TestRunContext::into_raw(run) };
            EBPF_SUCCESS
        }
        Err(e) => e.code(),
    }
}

/// `context_destroy` of a [`TestRunOutput`]: takes the run back, writes
/// what the hook gives back ([`write_test_run_context`]: a whole context
/// or nothing; [`write_test_run_data`]: all the data or nothing) and frees
/// the run. A null `context` is ignored.
///
/// # Safety
/// `context` is null or a run of `H` handed to the core with
/// [`TestRunContext::into_raw`] (by [`test_run_context_create`] or the
/// hook's own `context_create`), taken back once; out pointers as
/// [`write_test_run_context`] requires.
#[cfg(windows)]
pub unsafe extern "system" fn test_run_context_destroy<H: TestRunOutput>(
    context: *mut c_void,
    data_out: *mut u8,
    data_size_out: *mut usize,
    context_out: *mut u8,
    context_size_out: *mut usize,
) {
    if context.is_null() {
        return;
    }
    // SAFETY: a run of H the core was given; ownership comes back.
    let mut run = unsafe { TestRunOf::<H>::from_raw(context) };
    let (md, data) = H::output(&mut run);
    // SAFETY: forwarded contract; H::ContextOut has no implicit padding
    // (TestRunOutput's contract).
    unsafe { write_test_run_context(md, context_out, context_size_out) };
    let pieces = data.as_ref();
    let need = pieces.iter().map(|piece| piece.len()).sum();
    // SAFETY: forwarded contract.
    unsafe {
        write_test_run_data(need, data_out, data_size_out, |mut out| {
            for piece in pieces {
                let (head, rest) = out.split_at_mut(piece.len());
                head.copy_from_slice(piece);
                out = rest;
            }
        })
    };
    drop(data);
    drop(run);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_is_recovered_from_the_program_context() {
        let run = TestRunContext {
            event: ProgramContext::new(7u64, [1u8, 2, 3]),
            owned: 9u32,
        };
        let raw = TestRunContext::into_raw(PoolBox::try_new(run).ok().unwrap());
        assert_eq!(raw as usize % 8, 0);
        // SAFETY: `raw` is the context field of the live box above.
        let whole = unsafe { ProgramContext::<u64, [u8; 3]>::from_context(raw.cast()) };
        assert_eq!((whole.context, whole.private), (7, [1, 2, 3]));
        // SAFETY: taken back once.
        let back = unsafe { TestRunContext::<u64, [u8; 3], u32>::from_raw(raw) };
        assert_eq!((back.event.private, back.owned), ([1, 2, 3], 9));
        let p = Packet::of(b"abc");
        assert_eq!(p.end as usize - p.start as usize, 3);
    }

    #[test]
    fn test_run_input_and_output_follow_the_core_contract() {
        let mut out: *mut c_void = ptr::dangling_mut();
        let ctx = 0x1122_3344_5566_7788u64.to_le_bytes();
        // SAFETY: every pointer is valid for its size.
        let input = unsafe { test_run_input::<u64>(b"xy".as_ptr(), 2, ctx.as_ptr(), 8, &mut out) }
            .ok()
            .unwrap();
        assert!(out.is_null(), "*context is nulled first");
        assert_eq!(
            (input.data, input.context),
            (&b"xy"[..], Some(0x1122_3344_5566_7788))
        );
        // SAFETY: as above.
        let short = unsafe { test_run_input::<u64>(ptr::null(), 0, ctx.as_ptr(), 7, &mut out) };
        assert!(short.is_err(), "a context smaller than C is refused");
        // SAFETY: as above.
        let null_data = unsafe { test_run_input::<u64>(ptr::null(), 1, ptr::null(), 0, &mut out) };
        assert!(null_data.is_err(), "null data with a size is refused");
        // SAFETY: as above.
        let buffers = unsafe { test_run_buffers(ptr::null(), 0, ctx.as_ptr(), 0, &mut out) }
            .ok()
            .unwrap();
        assert_eq!(
            (buffers.data, buffers.context),
            (None, Some(&[][..])),
            "null stays None, an empty non-null buffer is an empty slice"
        );
        // SAFETY: a null `context`.
        let no_out = unsafe { test_run_buffers(ptr::null(), 0, ptr::null(), 0, ptr::null_mut()) };
        assert!(no_out.is_err(), "a null context pointer is refused");
        out = ptr::dangling_mut();
        // SAFETY: as above.
        let null_ctx = unsafe { test_run_buffers(b"x".as_ptr(), 1, ptr::null(), 8, &mut out) };
        assert!(
            null_ctx.is_err() && out.is_null(),
            "null context_in with a size"
        );
        let mut buf = [0xAAu8; 9];
        let mut size = 7usize;
        // SAFETY: buf holds 9 bytes, size says 7.
        unsafe { write_test_run_context(5u64, buf.as_mut_ptr(), &mut size) };
        assert_eq!((size, buf[0]), (0, 0xAA), "too small: nothing written");
        size = 9;
        // SAFETY: as above.
        unsafe { write_test_run_context(5u64, buf.as_mut_ptr(), &mut size) };
        assert_eq!((size, buf[0]), (8, 5));
        size = 2;
        // SAFETY: as above.
        unsafe { write_test_run_data(3, buf.as_mut_ptr(), &mut size, |o| o.fill(1)) };
        assert_eq!(size, 0);
        size = 3;
        // SAFETY: as above.
        unsafe { write_test_run_data(3, buf.as_mut_ptr(), &mut size, |o| o.fill(1)) };
        assert_eq!((size, &buf[..4]), (3, &[1, 1, 1, 0][..]));
    }
}
