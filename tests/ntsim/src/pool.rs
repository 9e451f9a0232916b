//! Pool allocator (ExAllocatePool2 and friends). (being written: this stub
//! only fixes the Rust-side API other services use)

use crate::exports::Export;
use std::ffi::c_void;

pub(crate) fn exports() -> Vec<Export> {
    Vec::new()
}

/// Forgets all state (a new [`crate::Sim`]).
pub(crate) fn reset() {}

/// What a driver left behind, one line each.
pub(crate) fn outstanding() -> Vec<String> {
    Vec::new()
}

/// Turns special pool on or off for the next allocations.
pub(crate) fn configure(_special: bool) {}

/// Allocates a zeroed pool block on the kernel's own behalf (for example the
/// TOKEN_USER that SeQueryInformationToken returns, which the driver frees
/// with ExFreePool). No fault injection: the calling API does its own.
/// Returns null only if the host is out of memory.
pub fn kernel_alloc(size: usize, _tag: u32) -> *mut c_void {
    // SAFETY: plain libc allocation (stub until the pool service lands).
    unsafe { libc::calloc(1, size.max(1)) }
}

/// Frees a block from [`kernel_alloc`] (or ExAllocatePool2) on the kernel's
/// own behalf.
///
/// # Safety
/// `ptr` must be a live pool block.
pub unsafe fn kernel_free(ptr: *mut c_void) {
    // SAFETY: the caller passes a live block from kernel_alloc.
    unsafe { libc::free(ptr) }
}

/// Describes `addr` if it falls in or near a pool block (live, freed or a
/// guard page), for crash reports.
pub fn describe_address(_addr: usize) -> Option<String> {
    None
}
