//! (being written) PE loader.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

pub struct Driver {}

impl Driver {
    pub(crate) fn load_and_start(_bytes: &[u8], _path: &Path) -> Result<(Option<Driver>, i32), LoadError> {
        todo!()
    }
    pub(crate) fn unload(self) -> Result<(), String> {
        todo!()
    }
}

/// Describes `addr` if it falls in a loaded (or formerly loaded) driver
/// image: "ntosebpfext.sys+0x1234 (.text)", for crash reports.
pub fn describe_address(_addr: usize) -> Option<String> {
    None
}

/// Header flags of a loaded driver image that kernel services check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageFlags {
    /// `IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY` (linked with /INTEGRITYCHECK).
    pub force_integrity: bool,
}

/// The flags of the loaded driver image that contains `addr`, or `None`
/// when no loaded image contains it (host Rust code, for example).
/// (stub until the loader lands)
pub fn image_flags_for_address(_addr: usize) -> Option<ImageFlags> {
    None
}
