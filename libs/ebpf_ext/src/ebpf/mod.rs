//! The eBPF for Windows extension side, shared by every program type: the
//! ABI ([`abi`]), client validation ([`client`]), the client array
//! ([`clients`]), program contexts ([`context`]), what helpers share
//! ([`helpers`]), program information built from one declaration
//! ([`program`]), and the generic hook provider ([`hook`]).

pub mod abi;
pub mod client;
pub mod clients;
pub mod context;
pub mod helpers;
#[cfg(windows)]
pub mod hook;
pub mod program;
