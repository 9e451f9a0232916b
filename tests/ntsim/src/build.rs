//! Building the driver image for tests and tools.
//!
//! [`driver_image`] builds the portable `ntosebpfext.sys` once per process
//! with cargo (release profile, `x86_64-pc-windows-msvc`) and returns its
//! path. Set `NTOSEBPFEXT_SYS` to an existing image to test that instead.
//! The workspace is found at run time ([`find_workspace_root`]), never from
//! where this crate was compiled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Windows target the driver is built for.
pub const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";

/// The workspace root of the checkout being worked in, found at run time
/// (see [`find_workspace_root`]). Panics with the reason if there is none.
pub fn workspace_root() -> PathBuf {
    find_workspace_root().unwrap_or_else(|e| panic!("{e}"))
}

/// The workspace root of the checkout being worked in, found at run time so
/// that a moved or copied checkout (with its `target/`) works in its own tree
/// rather than in the one the binary was compiled in:
///
/// - run through cargo (`cargo run`, `cargo test`, `cargo xtask`): from the
///   `CARGO_MANIFEST_DIR` cargo sets for the process, the package's directory;
/// - otherwise (a binary run directly): from the current directory.
///
/// From there, the nearest directory upwards whose `Cargo.toml` declares a
/// `[workspace]`.
///
/// # Errors
///
/// A message saying where it looked when no workspace contains that
/// directory.
pub fn find_workspace_root() -> Result<PathBuf, String> {
    let (start, how) = match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => (PathBuf::from(dir), "CARGO_MANIFEST_DIR"),
        None => (
            std::env::current_dir()
                .map_err(|e| format!("cannot read the current directory: {e}"))?,
            "the current directory",
        ),
    };
    workspace_root_above(&start).ok_or_else(|| {
        format!(
            "{} ({how}) is not inside a cargo workspace: run this from inside the ntosebpfext checkout",
            start.display()
        )
    })
}

/// The nearest of `start` and its ancestors whose `Cargo.toml` has a
/// `[workspace]` table, made absolute.
pub fn workspace_root_above(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
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
    let root = find_workspace_root()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "ntsim_ws_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    #[test]
    fn the_nearest_workspace_manifest_above_wins() {
        let root = tree(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n"),
            ("a/Cargo.toml", "[package]\nname = \"a\"\n"),
            ("a/src/lib.rs", ""),
        ]);
        let canonical = root.canonicalize().unwrap();
        assert_eq!(
            workspace_root_above(&root.join("a/src")),
            Some(canonical.clone())
        );
        assert_eq!(
            workspace_root_above(&root.join("a")),
            Some(canonical.clone())
        );
        assert_eq!(workspace_root_above(&root), Some(canonical));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_package_manifest_alone_or_a_mention_in_a_comment_is_not_a_workspace() {
        let root = tree(&[
            ("p/Cargo.toml", "[package]\n# not a [workspace]\n"),
            ("p/src/x", ""),
        ]);
        let found = workspace_root_above(&root.join("p/src"));
        assert!(
            found
                .as_deref()
                .is_none_or(|f| !f.starts_with(root.canonicalize().unwrap())),
            "found {found:?} inside a tree without a workspace"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_directory_has_no_workspace() {
        assert_eq!(
            workspace_root_above(Path::new("/nonexistent/ntsim/dir")),
            None
        );
    }

    #[test]
    fn run_through_cargo_it_finds_this_workspace() {
        // cargo test sets CARGO_MANIFEST_DIR to tests/ntsim for this process.
        let root = find_workspace_root().unwrap();
        assert!(
            root.join("tests/ntsim/Cargo.toml").is_file(),
            "{}",
            root.display()
        );
    }
}
