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
}
