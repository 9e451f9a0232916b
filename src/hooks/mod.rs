//! One module per program type.

pub mod process;
