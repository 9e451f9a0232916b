//! `cargo xtask <command>`: the project's commands.
//!
//! - `build`: builds the portable image of every driver
//!   ([`ntsim::build::DRIVERS`]),
//!   `target/x86_64-pc-windows-msvc/release/<name>.sys` (and its PDB), e.g.
//!   `ntosebpfext.sys`, and prints their paths, first adding the `x86_64-pc-windows-msvc` target to the toolchain with
//!   rustup if it is missing ([`target::ensure_installed`]).
//! - `demo`: builds the demo's drivers ([`ntsim::demo::demo_drivers`]:
//!   ntosebpfext and the driver of each further demo part), then runs the sample process monitor and
//!   policy (`tests/bpf/process_test.o`) and the Sysmon-style thread and
//!   image-load monitors (`tests/bpf/sysmon.o`) against it in ntsim,
//!   printing the events the monitors report, the verdicts, and the leak
//!   report ([`ntsim::demo::run`]).
//! - `package`: builds the image of every driver and writes a test-signed
//!   package of them all, `target/package/` ([`package`]).
//! - `fuzz [--seconds N] [TARGET]`: runs ntsim's fuzz targets for a bounded
//!   time ([`fuzz`]).
//! - `bench [--quick]`: the hot-path benchmark: driver instructions,
//!   kernel calls and allocations per event under callgrind, wall-clock
//!   ns per event on one and two threads; writes
//!   `target/bench/hotpath.json` ([`bench`], docs/performance.md).
//! - `mutants [--file GLOB] [--shard K/N] ...`: mutation testing of the
//!   driver's logic with cargo-mutants, with a summary ([`mutants`]).
//!
//! They work in the checkout they are run in: the workspace is found at run
//! time ([`ntsim::build::find_workspace_root`]: cargo's `CARGO_MANIFEST_DIR`
//! when run through cargo, else the current directory), not where this
//! binary was compiled.

mod package;

use std::process::ExitCode;

mod bench;
mod fuzz;
mod mutants;
mod target;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => match build_all() {
            Ok(paths) => {
                for path in paths {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask build: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fuzz") => fuzz::main(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("mutants") => mutants::main(&args[1..]),
        Some("demo") => match demo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask demo: {e}");
                ExitCode::FAILURE
            }
        },
        Some("package") => package::main(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask build | cargo xtask demo | cargo xtask package [--help] | cargo xtask fuzz [--seconds N] [TARGET] | cargo xtask bench [--quick] | cargo xtask mutants [--help]");
            ExitCode::from(2)
        }
    }
}

/// Builds every driver's image ([`ntsim::build::DRIVERS`], in its order)
/// in the workspace found at run time (a moved or copied checkout builds in
/// its own tree), after adding the Windows target to the toolchain if it is
/// missing.
fn build_all() -> Result<Vec<std::path::PathBuf>, String> {
    let root = ntsim::build::find_workspace_root()?;
    target::ensure_installed(&root, ntsim::build::DRIVER_TARGET)?;
    ntsim::build::build_drivers(&root.join("target"), ntsim::build::DRIVERS)
}

/// Builds the ntosebpfext image as [`build_all`] does.
fn build() -> Result<std::path::PathBuf, String> {
    let root = ntsim::build::find_workspace_root()?;
    target::ensure_installed(&root, ntsim::build::DRIVER_TARGET)?;
    ntsim::build::build_driver(&root.join("target"), ntsim::build::NTOSEBPFEXT)
}

/// Builds the drivers the demo loads ([`ntsim::demo::demo_drivers`]) and
/// runs it.
fn demo() -> Result<(), String> {
    let root = ntsim::build::find_workspace_root()?;
    target::ensure_installed(&root, ntsim::build::DRIVER_TARGET)?;
    let images = ntsim::build::build_drivers(&root.join("target"), &ntsim::demo::demo_drivers())?;
    let stdout = std::io::stdout();
    ntsim::demo::run(&images, &mut stdout.lock())
}
