//! `cargo xtask <command>`: the project's commands.
//!
//! - `build`: builds the portable driver image,
//!   `target/x86_64-pc-windows-msvc/release/ntosebpfext.sys` (and its PDB).
//! - `demo`: builds the image, then runs the sample process monitor and
//!   policy (`tests/bpf/process_test.o`) against it in ntsim, printing the
//!   events the monitor reports, the verdicts, and the leak report
//!   ([`ntsim::demo::run`]).

use std::process::ExitCode;

mod fuzz;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build") => match build() {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask build: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fuzz") => fuzz::main(&args[1..]),
        Some("demo") => match demo() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask demo: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo xtask build | cargo xtask demo");
            ExitCode::from(2)
        }
    }
}

fn build() -> Result<std::path::PathBuf, String> {
    let target_dir = ntsim::build::workspace_root().join("target");
    ntsim::build::build_driver(&target_dir)
}

fn demo() -> Result<(), String> {
    let sys_path = build()?;
    let stdout = std::io::stdout();
    ntsim::demo::run(&sys_path, &mut stdout.lock())
}
