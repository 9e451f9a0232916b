//! Making sure the toolchain can build for the driver's target.
//!
//! rustup installs the targets listed in `rust-toolchain.toml` only when it
//! installs the toolchain itself; a toolchain installed earlier without the
//! Windows target makes the driver build fail with "can't find crate for
//! `core`". [`ensure_installed`] finds that out before building and adds the
//! target with rustup, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Adds `target` to the toolchain that builds in `workspace` (the one
/// `rust-toolchain.toml` pins) if its standard library is missing, and says
/// so on stderr.
///
/// # Errors
///
/// A message naming the command to run by hand when rustc cannot be asked or
/// rustup cannot add the target.
pub fn ensure_installed(workspace: &Path, target: &str) -> Result<(), String> {
    ensure_installed_with(
        &toolchain_rustc(),
        Path::new("rustup"),
        workspace,
        target,
        &mut std::io::stderr(),
    )
}

/// [`ensure_installed`] with the `rustc` and `rustup` to run and where to
/// say what it does (tests give fakes).
fn ensure_installed_with(
    rustc: &Path,
    rustup: &Path,
    workspace: &Path,
    target: &str,
    log: &mut dyn std::io::Write,
) -> Result<(), String> {
    let libdir = target_libdir(rustc, workspace, target)?;
    if has_core(&libdir) {
        return Ok(());
    }
    // What is said is only information: a failed write is no reason to stop.
    let _ = writeln!(
        log,
        "xtask: the Rust standard library for {target} is not installed for this toolchain \
         ({} has no libcore); adding it: rustup target add {target}",
        libdir.display()
    );
    let status = Command::new(rustup)
        .current_dir(workspace)
        .args(["target", "add", target])
        .status()
        .map_err(|e| {
            format!(
                "cannot run rustup ({e}): install the target by hand: rustup target add {target}"
            )
        })?;
    if !status.success() {
        return Err(format!("`rustup target add {target}` failed ({status})"));
    }
    let libdir = target_libdir(rustc, workspace, target)?;
    if !has_core(&libdir) {
        return Err(format!(
            "rustup added {target}, but {} still has no libcore: is rustup managing this toolchain?",
            libdir.display()
        ));
    }
    let _ = writeln!(log, "xtask: added {target}");
    Ok(())
}

/// The rustc of the toolchain cargo runs with: beside `$CARGO` when run
/// through cargo, else `rustc` from the PATH (rustup's proxy, which honours
/// `rust-toolchain.toml`).
fn toolchain_rustc() -> PathBuf {
    std::env::var_os("CARGO")
        .map(|cargo| {
            Path::new(&cargo).with_file_name(format!("rustc{}", std::env::consts::EXE_SUFFIX))
        })
        .filter(|rustc| rustc.is_file())
        .unwrap_or_else(|| PathBuf::from("rustc"))
}

/// Where `rustc` looks for `target`'s standard library
/// (`<sysroot>/lib/rustlib/<target>/lib`).
fn target_libdir(rustc: &Path, workspace: &Path, target: &str) -> Result<PathBuf, String> {
    let out = Command::new(rustc)
        .current_dir(workspace)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}): is Rust installed (rustup)?",
                rustc.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "`{} --print target-libdir --target {target}` failed: {}",
            rustc.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dir =
        String::from_utf8(out.stdout).map_err(|_| "rustc printed a non-UTF-8 path".to_string())?;
    Ok(PathBuf::from(dir.trim()))
}

/// Whether `libdir` holds a compiled `core` (`libcore-<hash>.rlib`), the crate
/// a missing target fails on first.
pub fn has_core(libdir: &Path) -> bool {
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask_target_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_libdir_without_core_is_a_missing_target() {
        let dir = scratch("empty");
        assert!(!has_core(&dir), "an empty libdir");
        std::fs::write(dir.join("liballoc-0123.rlib"), b"").unwrap();
        std::fs::write(dir.join("libcore-0123.rmeta"), b"").unwrap();
        assert!(!has_core(&dir), "alloc and core metadata only");
        assert!(
            !has_core(&dir.join("absent")),
            "a libdir that does not exist"
        );
        std::fs::write(dir.join("libcore-0123.rlib"), b"").unwrap();
        assert!(has_core(&dir), "core present");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_host_target_of_this_toolchain_is_installed() {
        let workspace = ntsim::build::workspace_root();
        let version = Command::new(toolchain_rustc()).arg("-vV").output().unwrap();
        let version = String::from_utf8(version.stdout).unwrap();
        let host = version
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .expect("rustc -vV names the host");
        let libdir = target_libdir(&toolchain_rustc(), &workspace, host).unwrap();
        assert!(has_core(&libdir), "{} has no libcore", libdir.display());
        ensure_installed(&workspace, host).expect("nothing to add for the host");
    }

    /// A fake toolchain in `dir`: a `rustc` that prints `dir/libdir` as
    /// the target libdir, and a `rustup` that records its arguments in
    /// `dir/rustup-args`, then (when `adds`) puts a libcore into that
    /// libdir and exits with `exit`.
    #[cfg(unix)]
    fn fake_toolchain(dir: &Path, adds: bool, exit: i32) -> (PathBuf, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let libdir = dir.join("libdir");
        let script = |name: &str, body: String| {
            let path = dir.join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\n[ \"$1\" = probe ] && exit 0\n{body}"),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            // A process forked by another test thread while the file was
            // open for writing holds it until that child execs: running it
            // then fails with ETXTBSY. Once one run succeeds, no such copy
            // is left.
            let mut tries = 0;
            loop {
                match Command::new(&path).arg("probe").status() {
                    Ok(status) => {
                        assert!(status.success(), "{name} probe: {status}");
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(26) && tries < 200 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(e) => panic!("cannot run the fake {name}: {e}"),
                }
            }
            path
        };
        let rustc = script("rustc", format!("echo '{}'\n", libdir.display()));
        let create = if adds {
            format!(
                "mkdir -p '{0}' && : > '{0}/libcore-fake.rlib'\n",
                libdir.display()
            )
        } else {
            String::new()
        };
        let rustup = script(
            "rustup",
            format!(
                "echo \"$@\" > '{}'\n{create}exit {exit}\n",
                dir.join("rustup-args").display()
            ),
        );
        (rustc, rustup, libdir)
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_target_is_added_with_rustup_and_said_so() {
        let dir = scratch("adds");
        let (rustc, rustup, libdir) = fake_toolchain(&dir, true, 0);
        let mut said = Vec::new();
        ensure_installed_with(&rustc, &rustup, &dir, "fake-target", &mut said)
            .expect("rustup added the target");
        assert!(has_core(&libdir));
        let args = std::fs::read_to_string(dir.join("rustup-args")).unwrap();
        assert_eq!(args.trim(), "target add fake-target");
        let said = String::from_utf8(said).unwrap();
        assert!(
            said.contains("adding it: rustup target add fake-target"),
            "{said}"
        );
        assert!(said.contains("xtask: added fake-target"), "{said}");

        // Installed now: rustup is not run again, nothing is said.
        std::fs::remove_file(dir.join("rustup-args")).unwrap();
        let mut said = Vec::new();
        ensure_installed_with(&rustc, &rustup, &dir, "fake-target", &mut said).unwrap();
        assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
        assert!(!dir.join("rustup-args").exists(), "rustup ran again");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_rustup_is_a_clear_error() {
        let dir = scratch("fails");
        let (rustc, rustup, _) = fake_toolchain(&dir, false, 1);
        let e = ensure_installed_with(&rustc, &rustup, &dir, "fake-target", &mut Vec::new())
            .unwrap_err();
        assert!(e.contains("`rustup target add fake-target` failed"), "{e}");

        // rustup says yes but the libdir still has no core.
        let (rustc, rustup, _) = fake_toolchain(&dir, false, 0);
        let e = ensure_installed_with(&rustc, &rustup, &dir, "fake-target", &mut Vec::new())
            .unwrap_err();
        assert!(e.contains("still has no libcore"), "{e}");

        // No rustup at all.
        let e = ensure_installed_with(
            &rustc,
            &dir.join("no-rustup"),
            &dir,
            "fake-target",
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            e.contains("cannot run rustup") && e.contains("rustup target add fake-target"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_target_is_a_clear_error() {
        let workspace = ntsim::build::workspace_root();
        let e = target_libdir(&toolchain_rustc(), &workspace, "no-such-target").unwrap_err();
        assert!(e.contains("no-such-target"), "{e}");
    }
}
