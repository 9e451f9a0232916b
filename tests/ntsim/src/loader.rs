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
