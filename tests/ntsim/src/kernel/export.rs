//! What a service module hands the export table: [`Export`], one function
//! under its Windows name, built with the `export!` macro. This sits below
//! the services so that they never depend on the table that collects them
//! (`kernel/exports.rs`).

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
macro_rules! export {
    ($module:literal, $f:ident) => {
        $crate::kernel::export::Export {
            module: $module,
            name: stringify!($f),
            addr: $f as *const () as usize,
        }
    };
}
pub(crate) use export;
