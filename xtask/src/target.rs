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
    let rustc = toolchain_rustc();
    let libdir = target_libdir(&rustc, workspace, target)?;
    if has_core(&libdir) {
        return Ok(());
    }
    eprintln!(
        "xtask: the Rust standard library for {target} is not installed for this toolchain \
         ({} has no libcore); adding it: rustup target add {target}",
        libdir.display()
    );
    let status = Command::new("rustup")
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
    let libdir = target_libdir(&rustc, workspace, target)?;
    if !has_core(&libdir) {
        return Err(format!(
            "rustup added {target}, but {} still has no libcore: is rustup managing this toolchain?",
            libdir.display()
        ));
    }
    eprintln!("xtask: added {target}");
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

    #[test]
    fn an_unknown_target_is_a_clear_error() {
        let workspace = ntsim::build::workspace_root();
        let e = target_libdir(&toolchain_rustc(), &workspace, "no-such-target").unwrap_err();
        assert!(e.contains("no-such-target"), "{e}");
    }
}
