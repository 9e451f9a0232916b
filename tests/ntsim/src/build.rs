//! Building the driver images for tests and tools.
//!
//! [`DRIVERS`] lists the repository's drivers (each a package under
//! `extensions/`). [`driver_image_named`] builds one portable `<name>.sys`
//! once per process with cargo (release profile, `x86_64-pc-windows-msvc`)
//! and returns its path; [`driver_image`] is ntosebpfext's. Set
//! `<NAME>_SYS` (e.g. `NTOSEBPFEXT_SYS`) to an existing image to test that
//! instead. The workspace is found at run time ([`find_workspace_root`]),
//! never from where this crate was compiled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The Windows target the drivers are built for.
pub const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";

/// Every driver the repository builds, by package name: the package
/// `extensions/<name>` builds `<name>.dll`, installed as `<name>.sys`.
/// `cargo xtask build` builds them all; adding a driver is one entry here.
pub const DRIVERS: &[&str] = &["ntosebpfext", "neteventebpfext"];

/// The driver [`driver_image`] returns.
pub const NTOSEBPFEXT: &str = "ntosebpfext";

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

/// Where a release build puts the drivers: the cargo output
/// (`<name>.dll`) and the installable copy (`<name>.sys`) with its PDB
/// beside them.
pub fn output_dir(target_dir: &Path) -> PathBuf {
    target_dir.join(DRIVER_TARGET).join("release")
}

/// Builds the portable image of the driver `name` (one of [`DRIVERS`]) into
/// `target_dir` and returns the path of `<name>.sys`.
pub fn build_driver(target_dir: &Path, name: &str) -> Result<PathBuf, String> {
    Ok(build_drivers(target_dir, &[name])?.remove(0))
}

/// Builds the portable images of the drivers `names` (each one of
/// [`DRIVERS`]) into `target_dir` and returns the paths of their `.sys`
/// files, in the order of `names`.
///
/// Each image is built by [`image_build_args`]: the crate as a cdylib
/// alone, with fat LTO. A driver crate is also an rlib (for the tests), and
/// cargo does not apply LTO to a crate with an rlib output, so a plain
/// `cargo build` would optimize the driver and the `ebpf_ext` library
/// separately: nothing of the library's would be inlined into the driver's
/// hooks, which costs the hot path about half again as many instructions per
/// client (docs/performance.md). Cargo's own output is `<name>.dll`; each
/// image is copied to the `.sys` name drivers are installed under.
pub fn build_drivers(target_dir: &Path, names: &[&str]) -> Result<Vec<PathBuf>, String> {
    if let Some(unknown) = names.iter().find(|n| !DRIVERS.contains(n)) {
        return Err(format!(
            "{unknown:?} is not one of the repository's drivers ({})",
            DRIVERS.join(", ")
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = find_workspace_root()?;
    let out = output_dir(target_dir);
    let mut images = Vec::new();
    for name in names {
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(image_build_args(name))
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
                "building the driver failed ({name}: {status}); is the {DRIVER_TARGET} target \
                 installed? (rustup target add {DRIVER_TARGET})"
            ));
        }
        let sys = out.join(format!("{name}.sys"));
        install_copy(&out.join(format!("{name}.dll")), &sys)?;
        images.push(sys);
    }
    Ok(images)
}

/// The cargo arguments that build the portable image of the driver `name`
/// (without `--target-dir`): the release profile with fat LTO, for
/// `x86_64-pc-windows-msvc`, the crate as a cdylib only.
pub fn image_build_args(name: &str) -> Vec<String> {
    [
        "rustc",
        "--release",
        "--package",
        name,
        "--target",
        DRIVER_TARGET,
        "--crate-type",
        "cdylib",
        "--config",
        "profile.release.lto=\"fat\"",
    ]
    .map(String::from)
    .to_vec()
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

/// The ntosebpfext image for tests: [`driver_image_named`]`("ntosebpfext")`.
pub fn driver_image() -> PathBuf {
    driver_image_named(NTOSEBPFEXT)
}

/// The environment variable that names an existing image of the driver
/// `name` to test instead of building it: `<NAME>_SYS`.
pub fn image_variable(name: &str) -> String {
    format!("{}_SYS", name.to_ascii_uppercase())
}

/// The image of the driver `name` (one of [`DRIVERS`]) for tests:
/// [`try_driver_image_named`], panicking with the reason if it cannot.
pub fn driver_image_named(name: &str) -> PathBuf {
    try_driver_image_named(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The image of the driver `name` (one of [`DRIVERS`]):
/// `<NAME>_SYS` ([`image_variable`]) if set, otherwise built once per
/// process into `<workspace>/target/driver` (a target directory of its own,
/// so it does not wait on the cargo that runs the tests).
///
/// # Errors
///
/// `name` is not one of [`DRIVERS`], `<NAME>_SYS` is not a file, there is
/// no workspace, or the build failed.
pub fn try_driver_image_named(name: &str) -> Result<PathBuf, String> {
    static IMAGES: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    if !DRIVERS.contains(&name) {
        return Err(format!(
            "{name:?} is not one of the repository's drivers ({})",
            DRIVERS.join(", ")
        ));
    }
    // Held while building, so concurrent callers wait for the one build.
    let mut images = IMAGES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = images.get(name) {
        return Ok(path.clone());
    }
    let variable = image_variable(name);
    let path = if let Some(p) = std::env::var_os(&variable) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("{variable}={} is not a file", p.display()));
        }
        p
    } else {
        let target_dir = find_workspace_root()?.join("target").join("driver");
        build_driver(&target_dir, name)?
    };
    images.insert(name.to_string(), path.clone());
    Ok(path)
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
    fn an_unknown_driver_is_refused_before_cargo_runs() {
        let err = build_drivers(Path::new("/nonexistent/target"), &["nosuchdriver"]).unwrap_err();
        assert!(err.contains("\"nosuchdriver\" is not one of"), "{err}");
        assert!(err.contains("ntosebpfext"), "{err}");
    }

    #[test]
    fn an_image_is_the_cdylib_alone_with_fat_lto() {
        let args = image_build_args("ntosebpfext").join(" ");
        assert!(
            args.starts_with("rustc --release --package ntosebpfext"),
            "{args}"
        );
        assert!(args.contains("--crate-type cdylib"), "{args}");
        assert!(
            args.contains("--config profile.release.lto=\"fat\""),
            "{args}"
        );
        assert!(
            args.contains(&format!("--target {DRIVER_TARGET}")),
            "{args}"
        );
    }

    #[test]
    fn every_listed_driver_is_a_package_under_extensions() {
        let root = find_workspace_root().unwrap();
        for name in DRIVERS {
            let manifest = root.join("extensions").join(name).join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest)
                .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
            assert!(
                text.contains(&format!("name = \"{name}\"")),
                "{} does not declare package {name}",
                manifest.display()
            );
        }
        assert_eq!(image_variable("ntosebpfext"), "NTOSEBPFEXT_SYS");
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
