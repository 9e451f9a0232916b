//! One module per program type, and the list of hooks the driver loads.
//!
//! A new hook is one file (its program type, attach type, sections, event
//! source and `static` [`Hook`](crate::ebpf::hook::Hook)) plus one line in
//! `HOOKS`; its NMR providers and its eBPF store entries follow from that
//! line.

pub mod image_load;
pub mod process;
pub mod thread;

#[cfg(windows)]
use crate::{ebpf::hook::Hook, nt::NtResult};

/// Every hook, in load order (unloaded in reverse).
#[cfg(windows)]
const HOOKS: &[&Hook] = &[&process::notify::HOOK, &thread::HOOK, &image_load::HOOK];

/// What the driver writes to the eBPF store: every hook's program type with
/// its sections, in [`HOOKS`] order.
#[cfg(windows)]
pub fn store() -> [&'static crate::store::Provider; HOOKS.len()] {
    core::array::from_fn(|i| HOOKS[i].store())
}

/// Loads every hook (DriverEntry). On failure the caller runs [`unload`].
///
/// # Errors
/// The first failing step's status.
///
/// # Safety
/// `driver` must be this driver's DRIVER_OBJECT; called once.
#[cfg(windows)]
pub unsafe fn load(driver: *mut core::ffi::c_void) -> NtResult {
    for hook in HOOKS.iter() {
        // SAFETY: forwarded contract.
        unsafe { hook.load(driver) }?;
    }
    Ok(())
}

/// Unloads every hook: undoes whatever [`load`] did, even partly;
/// idempotent.
#[cfg(windows)]
pub fn unload() {
    for hook in HOOKS.iter().rev() {
        hook.unload();
    }
}
