//! A checkout copied together with its `target/` works in its own tree: the
//! copy's `xtask` binary, run from inside the copy (or through cargo's
//! `CARGO_MANIFEST_DIR` pointing into it), builds the driver into the copy
//! and leaves the original checkout alone.
//!
//! To stay fast the copy holds only what building the driver needs (the
//! workspace manifests and sources), the driver's build directory from the
//! original (so cargo finds the build up to date) and the `xtask` binary.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Generous: if cargo does rebuild the driver in the copy, it is one release
/// build of one crate.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The copy, removed when the test ends (pass or fail).
struct Copy(PathBuf);

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cp(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    // `cp -a` keeps modification times, which cargo's freshness check reads.
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Runs the copy's xtask with `args` in `cwd`, with or without a
/// `CARGO_MANIFEST_DIR`, within [`RUN_LIMIT`].
fn run_xtask(xtask: &Path, args: &[&str], cwd: &Path, manifest_dir: Option<&Path>) -> Output {
    let mut command = Command::new(xtask);
    command
        .args(args)
        .current_dir(cwd)
        .env_remove("CARGO_MANIFEST_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = manifest_dir {
        command.env("CARGO_MANIFEST_DIR", dir);
    }
    let mut child = command.spawn().expect("the copied xtask starts");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!(
                "xtask {args:?} in {} did not finish within {RUN_LIMIT:?}",
                cwd.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().unwrap()))
}

#[test]
fn a_copied_checkout_builds_into_itself() {
    let original = ntsim::build::workspace_root();
    // The driver's build directory, up to date for these sources.
    let built = ntsim::build::driver_image();
    let driver_target_dir = built.ancestors().nth(3).unwrap().to_path_buf();
    assert!(
        driver_target_dir.join("CACHEDIR.TAG").is_file(),
        "{}",
        driver_target_dir.display()
    );

    let copy =
        Copy(std::env::temp_dir().join(format!("ntosebpfext-relocated-{}", std::process::id())));
    let root = &copy.0;
    let _ = std::fs::remove_dir_all(root);
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        ".cargo",
        "libs",
        "extensions",
        "include",
        "tests/Cargo.toml",
        "tests/lib.rs",
        "xtask/Cargo.toml",
        "xtask/src",
        "tests/ntsim/Cargo.toml",
        "tests/ntsim/src",
    ] {
        cp(&original.join(path), &root.join(path));
    }
    cp(&driver_target_dir, &root.join("target"));
    let xtask = root.join("target/debug/xtask");
    cp(Path::new(env!("CARGO_BIN_EXE_xtask")), &xtask);
    let root = root.canonicalize().unwrap();

    let image_in_copy = root.join("target/x86_64-pc-windows-msvc/release/ntosebpfext.sys");
    let image_in_original = original.join("target/x86_64-pc-windows-msvc/release/ntosebpfext.sys");
    let original_before = stamp(&image_in_original);
    let outside = std::env::temp_dir().canonicalize().unwrap();

    // Run directly from a subdirectory of the copy, then "through cargo" from
    // a directory outside any workspace.
    for (cwd, manifest_dir) in [
        (root.join("extensions/ntosebpfext/src"), None),
        (outside.clone(), Some(root.join("xtask"))),
    ] {
        std::fs::remove_file(&image_in_copy).expect("the copied image");
        let out = run_xtask(&xtask, &["build"], &cwd, manifest_dir.as_deref());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "xtask build in the copy failed: {stderr}"
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        // One line per driver; the first is ntosebpfext's.
        assert_eq!(
            printed.lines().count(),
            ntsim::build::DRIVERS.len(),
            "one image per driver: {printed}"
        );
        assert!(
            printed
                .lines()
                .all(|line| Path::new(line).starts_with(root.join("target"))),
            "every image in the copy: {printed}"
        );
        assert_eq!(
            Path::new(printed.lines().next().unwrap_or_default()),
            image_in_copy,
            "xtask build (cwd {}, CARGO_MANIFEST_DIR {manifest_dir:?}) built elsewhere; stderr: {stderr}",
            cwd.display()
        );
        assert!(image_in_copy.is_file(), "the copy's image was written");
        assert_eq!(
            stamp(&image_in_original),
            original_before,
            "the original checkout was not touched"
        );
    }

    // Outside any workspace and not run through cargo: a clear error.
    let out = run_xtask(&xtask, &["build"], &outside, None);
    assert!(
        !out.status.success(),
        "xtask build outside a checkout succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not inside a cargo workspace"),
        "{stderr}"
    );
}
