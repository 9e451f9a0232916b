//! `cargo xtask mutants`: mutation testing of the driver's logic with
//! [cargo-mutants](https://mutants.rs/) (see `docs/testing.md`, "Mutation
//! testing").
//!
//! - Scope: [`SCOPE`] (the eBPF extension, the hooks, the store, the trace
//!   provider, and the NMR, pool and synchronization wrappers), or the files
//!   given with `--file`.
//! - Tests: the unit tests of the library and the driver crates
//!   ([`MUTATED_PACKAGES`]) and every integration test of `tests/` (package
//!   `driver-tests`) except [`UNRELATED_TESTS`] (they read committed files,
//!   never the driver's code), or only those given with `--test`. The
//!   integration tests build the release image for
//!   `x86_64-pc-windows-msvc` in the mutant's copy of the tree
//!   (`ntsim::build::driver_image` finds the workspace from the
//!   `CARGO_MANIFEST_DIR` of the test process) and run it in ntsim, so
//!   mutants in `cfg(windows)` code, which the host build never compiles,
//!   are tested too.
//! - A mutant that the host build accepts but the image build refuses is
//!   unviable, though cargo-mutants counts it as caught (every image test
//!   fails): the summary reads each caught mutant's log and counts it as
//!   unviable when the image build failed.
//! - ntsim's wait limit is lowered to 30 s (`NTSIM_WAIT_LIMIT_SECS`), so
//!   a mutant that makes the driver wait forever fails with ntsim's hang
//!   report instead of running into the per-mutant timeout.
//! - cargo-mutants is installed (`cargo install --locked cargo-mutants`) if
//!   missing. Output: `target/mutants/mutants.out/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// The files mutated by default: the drivers' logic, in the library
/// (`libs/ebpf_ext`) and the driver crates (`extensions/`). Left out: the
/// library's `src/driver/` (the entry points), `src/nt/` (kernel
/// declarations), `src/rt.rs` and `src/fmt.rs` (runtime glue), and each
/// driver's `src/lib.rs` (its declarations).
pub const SCOPE: &[&str] = &[
    "libs/ebpf_ext/src/ebpf/**/*.rs",
    "extensions/ntosebpfext/src/hooks/**/*.rs",
    "extensions/neteventebpfext/src/hooks/**/*.rs",
    "libs/ebpf_ext/src/sync.rs",
    "libs/ebpf_ext/src/nmr.rs",
    "libs/ebpf_ext/src/nmr/**/*.rs",
    "libs/ebpf_ext/src/pool.rs",
    "libs/ebpf_ext/src/store.rs",
    "libs/ebpf_ext/src/trace.rs",
];

/// The packages whose files are mutated: the library and every driver.
pub const MUTATED_PACKAGES: &[&str] = &["ebpf_ext", "ntosebpfext", "neteventebpfext"];

/// The package of the drivers' integration tests (`tests/Cargo.toml`).
pub const TEST_PACKAGE: &str = "driver-tests";

/// Integration tests (`tests/NAME.rs`) not run against mutants: they check
/// committed files (the INF, the WPR profile) or only report the host.
pub const UNRELATED_TESTS: &[&str] = &["inf", "wprp", "ntsim_host"];

/// What `ntsim::build::build_driver` prints when the image does not build.
const IMAGE_BUILD_FAILED: &str = "building the driver failed";

/// Default seconds a mutant's tests may run (they build the image first).
const DEFAULT_TIMEOUT: u64 = 120;
/// ntsim's wait limit for mutants (`NTSIM_WAIT_LIMIT_SECS`, unless set):
/// well below [`DEFAULT_TIMEOUT`], far above any wait of a correct driver.
const MUTANT_WAIT_LIMIT_SECS: u64 = 30;
/// Default seconds a mutant's host build may take (the first build in a
/// fresh copy of the tree builds every dependency).
const DEFAULT_BUILD_TIMEOUT: u64 = 1200;

/// `cargo xtask mutants ARGS`: the exit code of the command.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("xtask mutants: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    format!(
        "usage: cargo xtask mutants [--file GLOB]... [--test NAME]... [--shard K/N] [--jobs N] [--timeout SECS] \
         [--no-baseline] [--list] [--summary] [-- CARGO-MUTANTS-ARGS]\n\
         \x20 --file GLOB    mutate only these files (repeatable; default: {})\n\
         \x20 --test NAME    run only these integration tests (repeatable; default: every\n\
         \x20                `[[test]]` of tests/Cargo.toml but {})\n\
         \x20 --shard K/N    run the K-th of N shards of the mutants (0-based)\n\
         \x20 --jobs N       mutants built and tested at once (default 1)\n\
         \x20 --timeout SECS per-mutant test timeout (default {DEFAULT_TIMEOUT})\n\
         \x20 --no-baseline  skip the unmutated baseline run (only after a good one)\n\
         \x20 --list         list the mutants, run nothing\n\
         \x20 --summary      only summarize the last run (target/mutants/mutants.out)",
        SCOPE.join(" "),
        UNRELATED_TESTS.join(" ")
    )
}

struct Args {
    files: Vec<String>,
    tests: Vec<String>,
    shard: Option<String>,
    jobs: u32,
    timeout: u64,
    baseline: bool,
    list: bool,
    summary_only: bool,
    extra: Vec<String>,
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        files: Vec::new(),
        tests: Vec::new(),
        shard: None,
        jobs: 1,
        timeout: DEFAULT_TIMEOUT,
        baseline: true,
        list: false,
        summary_only: false,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--file" | "-f" => a.files.push(value("--file")?),
            "--test" => a.tests.push(value("--test")?),
            "--shard" => {
                let s = value("--shard")?;
                let ok = s.split_once('/').is_some_and(|(k, n)| {
                    matches!((k.parse::<u32>(), n.parse::<u32>()), (Ok(k), Ok(n)) if k < n)
                });
                if !ok {
                    return Err(format!("--shard needs K/N with K < N, got {s:?}"));
                }
                a.shard = Some(s);
            }
            "--jobs" | "-j" => {
                a.jobs = value("--jobs")?
                    .parse()
                    .ok()
                    .filter(|&j| j > 0)
                    .ok_or("--jobs needs a positive number")?;
            }
            "--timeout" => {
                a.timeout = value("--timeout")?
                    .parse()
                    .ok()
                    .filter(|&t| t > 0)
                    .ok_or("--timeout needs a positive number of seconds")?;
            }
            "--no-baseline" => a.baseline = false,
            "--list" => a.list = true,
            "--summary" => a.summary_only = true,
            "--" => {
                a.extra = it.cloned().collect();
                break;
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(Some(a))
}

/// Runs cargo-mutants; `Ok(false)` when a viable mutant survived or timed
/// out.
fn run(args: &[String]) -> Result<bool, String> {
    let Some(args) = parse(args)? else {
        return Ok(true);
    };
    let root = ntsim::build::find_workspace_root()?;
    let out_parent = root.join("target").join("mutants");
    if args.summary_only {
        return summarize(&out_parent.join("mutants.out"), None);
    }
    crate::target::ensure_installed(&root, ntsim::build::DRIVER_TARGET)?;
    ensure_cargo_mutants()?;

    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&root).arg("mutants");
    for package in MUTATED_PACKAGES {
        cmd.args(["--package", package]);
    }
    // Every mutant runs the unit tests of the mutated packages and the
    // integration tests.
    let test_packages = [MUTATED_PACKAGES, &[TEST_PACKAGE]].concat().join(",");
    cmd.arg(format!("--test-package={test_packages}"));
    cmd.arg("--dir").arg(&root);
    let files: Vec<String> = if args.files.is_empty() {
        SCOPE.iter().map(|s| s.to_string()).collect()
    } else {
        args.files.clone()
    };
    for f in &files {
        cmd.arg("--file").arg(f);
    }
    if args.list {
        let status = cmd
            .arg("--list")
            .status()
            .map_err(|e| format!("cannot run cargo mutants: {e}"))?;
        return Ok(status.success());
    }
    let tests = chosen_tests(&related_tests(&root)?, &args.tests)?;
    cmd.arg("--cargo-arg=--lib");
    for t in &tests {
        cmd.arg(format!("--cargo-arg=--test={t}"));
    }
    cmd.arg(format!("--jobs={}", args.jobs))
        .arg(format!("--timeout={}", args.timeout))
        .arg(format!("--build-timeout={DEFAULT_BUILD_TIMEOUT}"))
        .arg("--output")
        .arg(&out_parent);
    // cargo-mutants (27.1.0) runs its baseline on the mutated packages
    // only, not on `--test-package`, so the `--test` arguments name targets
    // it cannot find and the baseline fails to build. This runs the
    // baseline itself, with the same packages and targets as each mutant.
    cmd.arg("--baseline=skip");
    if args.baseline {
        baseline(&root, &tests)?;
    }
    if let Some(s) = &args.shard {
        cmd.arg(format!("--shard={s}"));
    }
    cmd.args(&args.extra);
    mutant_env(&mut cmd);
    eprintln!("xtask mutants: {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo mutants: {e}"))?;
    // cargo-mutants: 0 all caught, 2 some missed, 3 some timed out, 4 the
    // baseline failed; anything else is an error of its own.
    match status.code() {
        Some(0 | 2 | 3) => {}
        Some(4) => {
            return Err(
                "the unmutated tree fails its tests (baseline): fix that first; \
                 logs in target/mutants/mutants.out/log/baseline.log"
                    .into(),
            )
        }
        _ => return Err(format!("cargo mutants failed ({status})")),
    }
    summarize(
        &out_parent.join("mutants.out"),
        Some(start.elapsed().as_secs()),
    )
}

/// Sets the environment of a mutant's tests on `cmd`.
fn mutant_env(cmd: &mut Command) {
    // The image build inside the tests must not inherit host flags.
    cmd.env_remove("RUSTFLAGS");
    // A mutant that makes the driver wait forever fails through ntsim's
    // wait limit (a violation naming the wait) well before the per-mutant
    // timeout, instead of counting as a timeout.
    if std::env::var_os("NTSIM_WAIT_LIMIT_SECS").is_none() {
        cmd.env("NTSIM_WAIT_LIMIT_SECS", MUTANT_WAIT_LIMIT_SECS.to_string());
    }
}

/// The unmutated tree's run of the tests every mutant runs (the unit tests
/// of [`MUTATED_PACKAGES`] and the integration tests `tests`): an error when
/// it fails, since a mutant's failure would then prove nothing.
fn baseline(root: &Path, tests: &[String]) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).arg("test");
    for package in MUTATED_PACKAGES.iter().chain([&TEST_PACKAGE]) {
        cmd.args(["--package", package]);
    }
    cmd.arg("--lib");
    for t in tests {
        cmd.arg(format!("--test={t}"));
    }
    mutant_env(&mut cmd);
    eprintln!("xtask mutants: baseline: {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the unmutated tree fails its tests (baseline, {status}): fix that first"
        ));
    }
    eprintln!(
        "xtask mutants: baseline passed in {} s",
        start.elapsed().as_secs()
    );
    Ok(())
}

/// The integration tests run against each mutant: the `[[test]]` targets
/// of `tests/Cargo.toml` (package [`TEST_PACKAGE`]) except
/// [`UNRELATED_TESTS`].
fn related_tests(root: &Path) -> Result<Vec<String>, String> {
    let manifest = root.join("tests").join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let mut tests: Vec<String> = test_targets(&text)
        .into_iter()
        .filter(|name| !UNRELATED_TESTS.contains(&name.as_str()))
        .collect();
    if tests.is_empty() {
        return Err(format!("{} lists no [[test]] target", manifest.display()));
    }
    tests.sort();
    Ok(tests)
}

/// The integration tests to run: `chosen` (each one of `related`), or all
/// of `related` when none is chosen.
fn chosen_tests(related: &[String], chosen: &[String]) -> Result<Vec<String>, String> {
    if chosen.is_empty() {
        return Ok(related.to_vec());
    }
    match chosen.iter().find(|t| !related.contains(t)) {
        Some(t) => Err(format!(
            "--test {t}: not an integration test run against mutants (one of: {})",
            related.join(" ")
        )),
        None => Ok(chosen.to_vec()),
    }
}

/// The names of the `[[test]]` targets of a manifest (each table's
/// `name = "..."` line).
fn test_targets(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_test = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_test = line == "[[test]]";
        } else if in_test {
            let name = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|value| value.trim().trim_matches('"'));
            if let Some(name) = name {
                names.push(name.to_string());
            }
        }
    }
    names
}

fn ensure_cargo_mutants() -> Result<(), String> {
    let present = || {
        Command::new("cargo")
            .args(["mutants", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    eprintln!("xtask mutants: installing cargo-mutants (cargo install --locked cargo-mutants)");
    let ok = Command::new("cargo")
        .args(["install", "--locked", "cargo-mutants"])
        .status()
        .is_ok_and(|s| s.success());
    if ok && present() {
        Ok(())
    } else {
        Err(
            "cargo-mutants is missing and `cargo install --locked cargo-mutants` failed \
             (is crates.io reachable?); install it by hand and run this again"
                .into(),
        )
    }
}

/// One mutant's outcome as the summary counts it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Outcome {
    Caught,
    Missed,
    Timeout,
    /// The host build refused it (cargo-mutants' own verdict).
    Unviable,
    /// The host build accepted it, the image build (`cfg(windows)` code)
    /// refused it.
    UnviableImage,
}

/// Prints the counts and the surviving mutants of the run in `out`;
/// `Ok(false)` when a viable mutant was missed or timed out.
fn summarize(out: &Path, seconds: Option<u64>) -> Result<bool, String> {
    let read = |name: &str| -> Result<Vec<String>, String> {
        let p = out.join(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(s
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        }
    };
    if !out.join("outcomes.json").is_file() {
        return Err(format!("no cargo-mutants results in {}", out.display()));
    }
    let image_unviable = image_build_failures(&out.join("log"))?;
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    for (file, outcome) in [
        ("caught.txt", Outcome::Caught),
        ("missed.txt", Outcome::Missed),
        ("timeout.txt", Outcome::Timeout),
        ("unviable.txt", Outcome::Unviable),
    ] {
        for m in read(file)? {
            let o = if outcome == Outcome::Caught && image_unviable.contains(&m) {
                Outcome::UnviableImage
            } else {
                outcome
            };
            outcomes.insert(m, o);
        }
    }
    let count = |o: Outcome| outcomes.values().filter(|&&x| x == o).count();
    let (caught, missed, timeout) = (
        count(Outcome::Caught),
        count(Outcome::Missed),
        count(Outcome::Timeout),
    );
    let (unviable, unviable_image) = (count(Outcome::Unviable), count(Outcome::UnviableImage));
    let viable = caught + missed + timeout;
    println!("\nmutants summary ({}):", out.display());
    if let Some(s) = seconds {
        println!("  time:            {}m{:02}s", s / 60, s % 60);
    }
    println!("  mutants tested:  {}", outcomes.len());
    println!("  caught:          {caught}");
    println!("  missed:          {missed}");
    println!("  timeout:         {timeout}");
    println!("  unviable:        {unviable} (host build) + {unviable_image} (image build only)");
    if viable > 0 {
        println!(
            "  caught/viable:   {caught}/{viable} = {:.1}%",
            100.0 * caught as f64 / viable as f64
        );
    }
    for (name, o) in &outcomes {
        match o {
            Outcome::Missed => println!("  MISSED   {name}"),
            Outcome::Timeout => println!("  TIMEOUT  {name}"),
            _ => {}
        }
    }
    Ok(missed == 0 && timeout == 0)
}

/// The mutants whose log shows the image build failing: each log starts
/// with `*** NAME`.
fn image_build_failures(log_dir: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(format!("cannot read {}: {e}", log_dir.display())),
    };
    for e in entries {
        let path: PathBuf = e
            .map_err(|e| format!("cannot read {}: {e}", log_dir.display()))?
            .path();
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        if !text.contains(IMAGE_BUILD_FAILED) {
            continue;
        }
        if let Some(name) = text
            .lines()
            .find_map(|l| l.strip_prefix("*** "))
            .filter(|n| *n != "baseline")
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_targets_are_the_test_tables_names() {
        let manifest = "[package]\nname = \"driver-tests\"\n\n[lib]\npath = \"lib.rs\"\n\n\
                        [[test]]\nname = \"a\"\npath = \"a.rs\"\n\n[[test]]\npath = \"b.rs\"\nname = \"b\"\n";
        assert_eq!(super::test_targets(manifest), ["a", "b"]);
    }

    #[test]
    fn chosen_tests_are_checked_against_the_related_ones() {
        let related: Vec<String> = ["etw", "netevent", "store"].map(String::from).into();
        assert_eq!(super::chosen_tests(&related, &[]).unwrap(), related);
        let chosen: Vec<String> = ["netevent", "etw"].map(String::from).into();
        assert_eq!(super::chosen_tests(&related, &chosen).unwrap(), chosen);
        let err = super::chosen_tests(&related, &["inf".to_string()]).unwrap_err();
        assert!(err.contains("--test inf"), "{err}");
    }

    #[test]
    fn every_test_file_is_a_listed_target_and_the_scope_exists() {
        let root = ntsim::build::find_workspace_root().unwrap();
        let listed = super::related_tests(&root).unwrap();
        for unrelated in super::UNRELATED_TESTS {
            assert!(!listed.iter().any(|t| t == unrelated), "{unrelated}");
        }
        for entry in std::fs::read_dir(root.join("tests")).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.extension().is_some_and(|x| x == "rs")
                && stem != "lib"
                && !super::UNRELATED_TESTS.contains(&stem.as_str())
            {
                assert!(
                    listed.contains(&stem),
                    "tests/{stem}.rs is not a [[test]] of tests/Cargo.toml"
                );
            }
        }
        for glob in super::SCOPE {
            let dir = glob.split("/**").next().unwrap();
            assert!(root.join(dir).exists(), "{glob}: {dir} does not exist");
        }
    }
}
