//! What every program-type helper shares: the errno results, the output
//! buffer a program passes, and the whole-or-nothing copy rule.

/// The errors helpers return, as negative errno values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Errno {
    /// `ENOENT`: the value does not exist for this event.
    NoEntry = 2,
    /// `EINVAL`: the program's buffer is too small.
    InvalidArgument = 22,
    /// `EOPNOTSUPP`: the helper does nothing for this program type.
    NotSupported = 95,
}

/// A helper's outcome: a count of bytes, or an errno.
pub type HelperResult = Result<usize, Errno>;

/// The 64-bit value the core returns to the program: the count, or the
/// negated errno.
#[inline]
pub fn helper_return(result: HelperResult) -> i64 {
    match result {
        Ok(n) => n as i64,
        Err(e) => -(e as i64),
    }
}

/// The helpers' copy rule: the whole string or nothing. Returns the bytes
/// copied, or `InvalidArgument` (nothing written) when `dst` is too small.
pub fn copy_whole(src: &[u8], dst: &mut [u8]) -> HelperResult {
    let Some(dst) = dst.get_mut(..src.len()) else {
        return Err(Errno::InvalidArgument);
    };
    dst.copy_from_slice(src);
    Ok(src.len())
}

/// The writable buffer a program passed (`PTR_TO_WRITABLE_MEM` followed by
/// `CONST_SIZE`).
///
/// # Safety
/// `buf` is null or writable for `len` bytes, and not otherwise borrowed
/// for `'a` (the verifier's guarantee for these argument types).
pub unsafe fn out_buffer<'a>(buf: *mut u8, len: u64) -> &'a mut [u8] {
    if buf.is_null() || len == 0 {
        &mut []
    } else {
        // SAFETY: see the function's contract.
        unsafe { core::slice::from_raw_parts_mut(buf, len as usize) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_is_whole_or_nothing() {
        let src: Vec<u8> = "C:\\notepad.exe"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut exact = vec![0xAAu8; src.len()];
        assert_eq!(copy_whole(&src, &mut exact), Ok(src.len()));
        assert_eq!(exact, src);
        let mut short = vec![0xAAu8; src.len() - 1];
        assert_eq!(copy_whole(&src, &mut short), Err(Errno::InvalidArgument));
        assert!(
            short.iter().all(|&b| b == 0xAA),
            "nothing written on a short buffer"
        );
        let mut empty: [u8; 0] = [];
        assert_eq!(copy_whole(&[], &mut empty), Ok(0));
        assert_eq!(helper_return(Err(Errno::InvalidArgument)), -22);
        assert_eq!(helper_return(Err(Errno::NoEntry)), -2);
        assert_eq!(helper_return(Ok(6)), 6);
    }
}
