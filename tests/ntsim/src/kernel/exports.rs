//! The export table of the simulated kernel: (module, name) -> address of an
//! `extern "win64"` Rust function. The loader resolves every import of the
//! driver image through it and refuses images that import anything else.
//!
//! This is the one place that knows every service: each service module
//! lists its own functions (`exports()`, built from [`Export`]), and only the
//! loader and `MmGetSystemRoutineAddress` (below) look functions up here.

use super::export::export;
pub use super::export::Export;
use super::irql;
use super::types::{PASSIVE_LEVEL, UNICODE_STRING};
use super::violation;
use std::ffi::c_void;

/// Every export of every service module.
pub fn table() -> Vec<Export> {
    let mut all = Vec::new();
    all.extend(crate::kernel::pool::exports());
    all.extend(crate::kernel::irql::exports());
    all.extend(crate::kernel::processor::exports());
    all.extend(crate::kernel::sync::exports());
    all.extend(crate::kernel::io::exports());
    all.extend(crate::kernel::nmr::exports());
    all.extend(crate::kernel::ps::exports());
    all.extend(crate::kernel::registry::exports());
    all.extend(crate::kernel::log::exports());
    all.extend(crate::kernel::time::exports());
    all.extend(crate::kernel::rtl::exports());
    all.push(export!("ntoskrnl.exe", MmGetSystemRoutineAddress));
    all
}

/// Looks up one export (module case-insensitive, name exact).
pub fn find(module: &str, name: &str) -> Option<Export> {
    table()
        .into_iter()
        .find(|e| e.module.eq_ignore_ascii_case(module) && e.name == name)
}

/// `MmGetSystemRoutineAddress` (PASSIVE_LEVEL): the address of an export of
/// ntoskrnl.exe or hal.dll, or null.
///
/// # Safety
/// `SystemRoutineName` must point to a valid `UNICODE_STRING`.
pub unsafe extern "win64" fn MmGetSystemRoutineAddress(
    SystemRoutineName: *const UNICODE_STRING,
) -> *mut c_void {
    irql::require_at_most("MmGetSystemRoutineAddress", PASSIVE_LEVEL);
    if SystemRoutineName.is_null() {
        violation::record("rtl", "MmGetSystemRoutineAddress(NULL)");
        return std::ptr::null_mut();
    }
    // SAFETY: the caller passes a valid UNICODE_STRING.
    let name = unsafe { (*SystemRoutineName).to_string_lossy() };
    table()
        .into_iter()
        .find(|e| {
            e.name == name
                && (e.module.eq_ignore_ascii_case("ntoskrnl.exe")
                    || e.module.eq_ignore_ascii_case("hal.dll"))
        })
        .map_or(std::ptr::null_mut(), |e| e.addr as *mut c_void)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_export_is_defined_twice() {
        let mut seen = HashSet::new();
        for e in table() {
            let key = (e.module.to_ascii_lowercase(), e.name);
            assert!(seen.insert(key), "{}!{} exported twice", e.module, e.name);
        }
    }
}
