//! Formatting without allocation, shared by both flavors: the log macro
//! (src/driver/mod.rs) and the portable panic handler (src/rt.rs) format into
//! a stack buffer with `core::fmt`.

use core::fmt::Write;

/// A fixed buffer that `core::fmt` writes into, truncating; keeps one byte
/// for the terminating NUL.
///
/// # Invariants
/// `len < N`: there is always room for the NUL.
pub(crate) struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    pub(crate) const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// The text written so far, NUL-terminated.
    pub(crate) fn as_cstr_ptr(&mut self) -> *const u8 {
        self.buf[self.len] = 0;
        self.buf.as_ptr()
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
