//! The simulated Windows kernel: one module per subsystem of ntoskrnl.exe,
//! NETIO.SYS and ksecdd.sys that the driver imports from, named after it.
//!
//! - Ground rules every service uses: [`status`] (NTSTATUS codes), [`types`]
//!   (shared Windows types and IRQLs), [`violation`] (recording broken
//!   contracts), [`fault`] (fault injection), [`export`] (the [`Export`]
//!   record a service lists its functions with).
//! - Services: [`irql`], [`pool`] (with special pool), [`sync`] (spin, push
//!   and fast mutex locks, rundown protection, events), [`io`] (work items),
//!   [`ps`] (processes, threads, images, tokens, SIDs), [`registry`],
//!   [`log`] (DbgPrintEx, ETW), [`time`], [`rtl`] (C runtime, strings, bug
//!   checks), [`nmr`] (the Network Module Registrar of NETIO.SYS),
//!   [`netevent`] (PktMon's side of the netevent NPI: simulated providers
//!   that hand network events to NMR clients).
//! - [`exports`]: the export table, `module!name` -> function, assembled
//!   from every service's `exports()`; nothing in a service depends on it.
//! - [`loader`]: the kernel's driver loader (maps and relocates a PE image,
//!   binds its imports to the table, runs `DriverEntry` and unload);
//!   [`images`]: the list of loaded images it keeps, which the services and
//!   the crash reporter ask about an address without depending on the
//!   loader; [`crash`]: the trap handler that reports a fault in driver code
//!   (a bug check in Windows terms).
//!
//! A new kernel API goes into the module of its subsystem (a new subsystem
//! gets its own module here) and into that module's `exports()`; a new
//! module's `exports()` is added to [`exports::table`].
//!
//! Nothing here imports from the eBPF core, the hooks or the command.

pub mod crash;
pub mod export;
pub mod exports;
pub mod fault;
pub mod images;
pub mod io;
pub mod irql;
pub mod loader;
pub mod log;
pub mod netevent;
pub mod nmr;
pub mod pool;
pub mod processor;
pub mod ps;
pub mod registry;
pub mod rtl;
pub mod status;
pub mod sync;
pub mod time;
pub mod types;
pub mod violation;

pub use export::Export;
