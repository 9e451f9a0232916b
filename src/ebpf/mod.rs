//! The eBPF for Windows extension side: the ABI ([`abi`]), client
//! validation ([`client`]), and the generic hook provider every program
//! type uses ([`hook`]).

pub mod abi;
pub mod client;
#[cfg(windows)]
pub mod hook;
