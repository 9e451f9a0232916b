//! The Windows kernel ABI this driver uses, as Rust declarations.
//!
//! Every import is declared here with `raw-dylib`, so the image needs no WDK
//! import library in either flavor, and the list of kernel functions the
//! driver depends on is in one place (ntsim must simulate each of them).
// An ABI mirror: every item is a Windows declaration under its Windows name,
// documented by the WDK; repeating that documentation here would only drift.
#![allow(
    missing_docs,
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    clippy::upper_case_acronyms
)]

pub mod status;
mod types;

pub use status::*;
pub use types::*;

#[cfg(windows)]
mod imports;
#[cfg(windows)]
pub use imports::*;
