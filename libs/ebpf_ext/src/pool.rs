//! Fallible heap allocation.
//!
//! A kernel driver must survive allocation failure, so the driver never uses
//! `Box::new` (which aborts, here a bug check, when the pool is exhausted).
//! [`PoolBox`] is a `Box` whose constructor reports failure: in the driver
//! image its memory comes from non-paged pool with the driver's tag (the
//! global allocator in `rt.rs`); on the host, from the host allocator.

use alloc::alloc::{alloc, dealloc, Layout};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

/// ntosebpfext's pool tag: `'sotN'`, shown as `Ntos` by `!pool`,
/// `!poolused` and poolmon (each driver names its own in its
/// [`Extension`](crate::driver::Extension)).
pub const POOL_TAG: u32 = u32::from_le_bytes(*b"Ntos");

/// The tag of every allocation the running driver makes: its
/// [`Extension`](crate::driver::Extension)'s `pool_tag` (set by
/// `DriverEntry` before the first allocation, never changed), or
/// [`POOL_TAG`] before that.
#[cfg(windows)]
#[inline]
pub fn tag() -> u32 {
    crate::driver::active().map_or(POOL_TAG, |e| e.pool_tag)
}

/// An owned, pool-allocated `T`.
///
/// # Invariants
/// `ptr` points to an initialized `T` allocated with `T`'s layout (or is
/// dangling for a zero-sized `T`), owned by this box alone.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
}

// SAFETY: PoolBox owns its T exactly like Box<T>.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

impl<T> PoolBox<T> {
    /// Moves `value` to the pool.
    ///
    /// # Errors
    /// When the pool is exhausted, gives `value` back (the caller reports
    /// `Error::INSUFFICIENT_RESOURCES` or the ABI's equivalent).
    pub fn try_new(value: T) -> Result<PoolBox<T>, T> {
        let layout = Layout::new::<T>();
        let ptr = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            // SAFETY: the layout has a non-zero size.
            match NonNull::new(unsafe { alloc(layout) }.cast::<T>()) {
                Some(p) => p,
                None => return Err(value),
            }
        };
        // SAFETY: ptr is valid for a write of T (fresh allocation of T's
        // layout, or dangling for a zero-sized T).
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: just allocated and initialized.
        Ok(PoolBox { ptr })
    }

    /// Gives up ownership; [`from_raw`](Self::from_raw) takes it back.
    pub fn into_raw(b: PoolBox<T>) -> *mut T {
        let p = b.ptr.as_ptr();
        core::mem::forget(b);
        p
    }

    /// Takes back ownership of a pointer from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `p` must come from `into_raw` and not have been taken back before.
    pub unsafe fn from_raw(p: *mut T) -> PoolBox<T> {
        // INVARIANT: ownership of the allocation comes back (caller's contract).
        PoolBox {
            // SAFETY: into_raw never returns null.
            ptr: unsafe { NonNull::new_unchecked(p) },
        }
    }

    /// Moves the value out and frees the memory.
    pub fn into_inner(b: PoolBox<T>) -> T {
        let p = PoolBox::into_raw(b);
        // SAFETY: p holds an initialized T that we own; it is read once.
        let value = unsafe { p.read() };
        // SAFETY: the value was moved out above; the memory is freed without
        // dropping it again.
        unsafe { free::<T>(p) };
        value
    }
}

/// # Safety
/// `p` must be a PoolBox allocation of T whose value was moved out or dropped.
unsafe fn free<T>(p: *mut T) {
    let layout = Layout::new::<T>();
    if layout.size() != 0 {
        // SAFETY: allocated by `alloc` with this layout in try_new.
        unsafe { dealloc(p.cast(), layout) }
    }
}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: ptr is valid and initialized while the box lives.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and we own it exclusively.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: we own an initialized T (invariant): drop it once.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: its value was dropped just above; freed once.
        unsafe { free::<T>(self.ptr.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Counted(#[allow(dead_code)] u64);
    impl Drop for Counted {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn owns_drops_and_round_trips() {
        let before = DROPS.load(Ordering::SeqCst);
        let b = PoolBox::try_new(Counted(7)).ok().unwrap();
        let raw = PoolBox::into_raw(b);
        // SAFETY: raw came from into_raw just above.
        let b = unsafe { PoolBox::from_raw(raw) };
        assert_eq!(b.0, 7);
        drop(b);
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1);
        let inner = PoolBox::into_inner(PoolBox::try_new(Counted(9)).ok().unwrap());
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            before + 1,
            "into_inner must not drop"
        );
        assert_eq!(inner.0, 9);
        let unit = PoolBox::try_new(()).ok().unwrap();
        drop(unit);
    }
}
