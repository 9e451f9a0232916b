//! Building the driver image for tests and tools.
//!
//! [`driver_image`] builds the portable `ntosebpfext.sys` once per process
//! with cargo (release profile, `x86_64-pc-windows-msvc`) and returns its
//! path. Set `NTOSEBPFEXT_SYS` to an existing image to test that instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Windows target the driver is built for.
pub const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the ntsim crate lives in <workspace>/tests/ntsim")
}

/// Where a release build puts the driver: the cargo output
/// (`ntosebpfext.dll`) and the installable copy (`ntosebpfext.sys`) with its
/// PDB beside them.
pub fn output_dir(target_dir: &Path) -> PathBuf {
    target_dir.join(DRIVER_TARGET).join("release")
}

/// Builds the portable driver image into `target_dir` and returns the path
/// of `ntosebpfext.sys`. Cargo's own output is `ntosebpfext.dll`; the image
/// is copied to the `.sys` name drivers are installed under.
pub fn build_driver(target_dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "ntosebpfext",
            "--target",
            DRIVER_TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // The outer cargo (running the tests) may have set these for the host.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!(
            "building the driver failed ({status}); is the {DRIVER_TARGET} target installed? \
             (rustup target add {DRIVER_TARGET})"
        ));
    }
    let out = output_dir(target_dir);
    let dll = out.join("ntosebpfext.dll");
    let sys = out.join("ntosebpfext.sys");
    install_copy(&dll, &sys)?;
    Ok(sys)
}

/// Puts a copy of `from` at `to` atomically: other processes (test
/// binaries, their crash-test children) may be reading `to` at the same
/// moment, and must see the old image or the new one, never a partial file.
fn install_copy(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = std::fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let tmp = to.with_extension(format!("sys.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}: {e}", tmp.display(), to.display())
    })
}

/// The driver image for tests: `NTOSEBPFEXT_SYS` if set, otherwise built
/// once per process into `<workspace>/target/driver` (a target directory of
/// its own, so it does not wait on the cargo that runs the tests).
pub fn driver_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("NTOSEBPFEXT_SYS") {
                let p = PathBuf::from(p);
                assert!(p.is_file(), "NTOSEBPFEXT_SYS={} is not a file", p.display());
                return p;
            }
            let target_dir = workspace_root().join("target").join("driver");
            build_driver(&target_dir).unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}
