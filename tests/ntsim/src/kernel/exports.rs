//! The export table of the simulated kernel: (module, name) -> address of an
//! `extern "win64"` Rust function. The loader resolves every import of the
//! driver image through it and refuses images that import anything else.

/// One function the simulated kernel exports.
#[derive(Clone, Copy, Debug)]
pub struct Export {
    /// Module file name as images name it (compared case-insensitively).
    pub module: &'static str,
    pub name: &'static str,
    pub addr: usize,
}

/// `export!("ntoskrnl.exe", ExAllocatePool2)` builds the [`Export`] of a
/// function defined in the current scope under its Windows name.
#[macro_export]
macro_rules! export {
    ($module:literal, $f:ident) => {
        $crate::exports::Export {
            module: $module,
            name: stringify!($f),
            addr: $f as *const () as usize,
        }
    };
}

/// Every export of every service module.
pub fn table() -> Vec<Export> {
    let mut all = Vec::new();
    all.extend(crate::pool::exports());
    all.extend(crate::irql::exports());
    all.extend(crate::sync::exports());
    all.extend(crate::io::exports());
    all.extend(crate::nmr::exports());
    all.extend(crate::ps::exports());
    all.extend(crate::registry::exports());
    all.extend(crate::log::exports());
    all.extend(crate::time::exports());
    all.extend(crate::rtl::exports());
    all
}

/// Looks up one export (module case-insensitive, name exact).
pub fn find(module: &str, name: &str) -> Option<Export> {
    table()
        .into_iter()
        .find(|e| e.module.eq_ignore_ascii_case(module) && e.name == name)
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
