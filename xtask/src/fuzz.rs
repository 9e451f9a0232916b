//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs ntsim's fuzz targets
//! (`tests/ntsim/fuzz`, cargo-fuzz / libFuzzer) for a bounded time each and
//! prints, per target, the executions and whether it crashed.
//!
//! - Toolchain: cargo-fuzz needs nightly (`-Zsanitizer=address`). `nightly`
//!   is used when rustup has it or can install it; otherwise the pinned
//!   toolchain runs with `RUSTC_BOOTSTRAP=1` and `--sanitizer none`
//!   (overflow checks and panics are still caught; out-of-bounds reads in
//!   `unsafe` code are not).
//! - cargo-fuzz is installed (`cargo install cargo-fuzz --locked`) if missing.
//! - The corpus (`fuzz/corpus/TARGET`, not committed) is seeded on first use
//!   from the committed BPF objects, their `.BTF` sections, the driver image
//!   and the built-in scenario. `fuzz/regressions/TARGET` (committed: every
//!   input that once crashed) is replayed by every run.
//! - A crash leaves its input in `fuzz/artifacts/TARGET/` and makes the
//!   command fail.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Every fuzz target (`tests/ntsim/fuzz/fuzz_targets/NAME.rs`).
pub const TARGETS: &[&str] = &["object_load", "btf", "image_map", "scenario"];

/// Default time per target.
const DEFAULT_SECONDS: u64 = 60;

/// `cargo xtask fuzz ARGS`: the exit code of the command.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask fuzz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    format!(
        "usage: cargo xtask fuzz [--seconds N] [TARGET...]  (targets: {}; default: all, {DEFAULT_SECONDS} s each)",
        TARGETS.join(", ")
    )
}

fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--seconds needs a positive number\n{}", usage()))?;
            }
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }

    let root = ntsim::build::workspace_root();
    let crate_dir = root.join("tests/ntsim");
    let fuzz_dir = crate_dir.join("fuzz");
    let toolchain = toolchain()?;
    ensure_cargo_fuzz()?;

    let mut results = Vec::new();
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        seed(&root, t, &corpus)?;
        let regressions = fuzz_dir.join("regressions").join(t);
        results.push(run_target(
            &crate_dir,
            &toolchain,
            t,
            seconds,
            &corpus,
            &regressions,
        )?);
    }

    println!(
        "\nfuzz summary ({seconds} s per target, {}):",
        toolchain.describe()
    );
    println!(
        "{:<12} {:>8} {:>14}  result",
        "target", "seconds", "executions"
    );
    let mut failed = Vec::new();
    for r in &results {
        println!(
            "{:<12} {:>8} {:>14}  {}",
            r.target,
            r.seconds.map_or("?".into(), |s| s.to_string()),
            r.executions.map_or("?".into(), |n| n.to_string()),
            r.outcome
        );
        if r.outcome != "ok" {
            failed.push(r.target.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} target(s) failed: {} (crashing inputs are in tests/ntsim/fuzz/artifacts/)",
            failed.len(),
            failed.join(", ")
        ))
    }
}

/// How cargo-fuzz is run.
enum Toolchain {
    /// `cargo +nightly fuzz ...` with AddressSanitizer.
    Nightly,
    /// The pinned toolchain with `RUSTC_BOOTSTRAP=1`, no sanitizer.
    Bootstrap,
}

impl Toolchain {
    fn describe(&self) -> &'static str {
        match self {
            Toolchain::Nightly => "nightly, AddressSanitizer",
            Toolchain::Bootstrap => "pinned toolchain with RUSTC_BOOTSTRAP=1, no sanitizer",
        }
    }

    fn cargo(&self) -> Command {
        let mut c = Command::new("cargo");
        match self {
            Toolchain::Nightly => {
                c.arg("+nightly");
            }
            Toolchain::Bootstrap => {
                c.env("RUSTC_BOOTSTRAP", "1");
            }
        }
        // The outer cargo's settings are for the workspace, not this crate.
        c.env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR");
        c
    }

    fn sanitizer_args(&self) -> &'static [&'static str] {
        match self {
            Toolchain::Nightly => &[],
            Toolchain::Bootstrap => &["--sanitizer", "none"],
        }
    }
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn toolchain() -> Result<Toolchain, String> {
    let has_nightly =
        || quiet(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]));
    if has_nightly() {
        return Ok(Toolchain::Nightly);
    }
    eprintln!("xtask fuzz: no nightly toolchain; trying `rustup toolchain install nightly`");
    let installed = Command::new("rustup")
        .args(["toolchain", "install", "nightly", "--profile", "minimal"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && has_nightly() {
        return Ok(Toolchain::Nightly);
    }
    eprintln!(
        "xtask fuzz: nightly is not available; using the pinned toolchain with \
         RUSTC_BOOTSTRAP=1 and no sanitizer"
    );
    Ok(Toolchain::Bootstrap)
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    if quiet(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let ok = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .is_ok_and(|s| s.success());
    if ok && quiet(Command::new("cargo").args(["fuzz", "--version"])) {
        Ok(())
    } else {
        Err("cargo-fuzz is missing and `cargo install cargo-fuzz --locked` failed".into())
    }
}

/// Fills an empty corpus directory with valid inputs to mutate.
fn seed(root: &Path, target: &str, corpus: &Path) -> Result<(), String> {
    std::fs::create_dir_all(corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let empty = std::fs::read_dir(corpus)
        .map_err(|e| format!("cannot read {}: {e}", corpus.display()))?
        .next()
        .is_none();
    if !empty {
        return Ok(());
    }
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    match target {
        "object_load" | "btf" => {
            for (name, bytes) in bpf_objects(&root.join("tests/bpf"))? {
                if target == "object_load" {
                    seeds.push((name, bytes));
                } else if let Some(btf) = elf_section(&bytes, ".BTF") {
                    seeds.push((name, btf.to_vec()));
                }
            }
        }
        "image_map" => {
            let target = root.join("target");
            let images = ntsim::build::build_drivers(&target, ntsim::build::DRIVERS)?;
            for (name, sys) in ntsim::build::DRIVERS.iter().zip(images) {
                let bytes = std::fs::read(&sys)
                    .map_err(|e| format!("cannot read {}: {e}", sys.display()))?;
                seeds.push((format!("{name}.sys"), bytes));
            }
        }
        "scenario" => {
            seeds.push((
                "builtin".into(),
                ntsim::scenario::BUILTIN.as_bytes().to_vec(),
            ));
            seeds.push((
                "accounts".into(),
                b"account alice domain=CORP sid=S-1-5-21-10-20-30-1002\n\
                  create a image=C:\\a.exe cmd=\"a \\\"x\\\"\" user=CORP\\alice at=1.5\n\
                  create b image=\\Device\\b.exe parent=a user=none\n\
                  exit b code=0xC0000005\nexit a code=-1\n"
                    .to_vec(),
            ));
        }
        other => return Err(format!("no seeds for {other}")),
    }
    for (name, bytes) in seeds {
        let path = corpus.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn bpf_objects(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "o") {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            out.push((e.file_name().to_string_lossy().into_owned(), bytes));
        }
    }
    Ok(out)
}

/// The contents of section `name` of a little-endian ELF64 file (enough to
/// cut `.BTF` out of the committed objects; None for anything unexpected).
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    // (sh_name, sh_offset, sh_size) of section i.
    let header = |i: usize| {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            usize::try_from(u32_at(h)?).ok()?,
            usize::try_from(u64_at(h + 0x18)?).ok()?,
            usize::try_from(u64_at(h + 0x20)?).ok()?,
        ))
    };
    let data = |off: usize, size: usize| elf.get(off..off.checked_add(size)?);
    let (_, str_off, str_size) = header(shstrndx)?;
    let strings = data(str_off, str_size)?;
    (0..shnum).find_map(|i| {
        let (n, off, size) = header(i)?;
        let rest = strings.get(n..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        (&rest[..end] == name.as_bytes())
            .then(|| data(off, size))
            .flatten()
    })
}

struct TargetResult {
    target: String,
    seconds: Option<u64>,
    executions: Option<u64>,
    outcome: String,
}

fn run_target(
    crate_dir: &Path,
    toolchain: &Toolchain,
    target: &str,
    seconds: u64,
    corpus: &Path,
    regressions: &Path,
) -> Result<TargetResult, String> {
    println!("== fuzzing {target} for {seconds} s");
    let mut cmd = toolchain.cargo();
    cmd.current_dir(crate_dir)
        .args(["fuzz", "run"])
        .args(toolchain.sanitizer_args())
        .arg(target)
        .arg(corpus);
    if regressions.is_dir() {
        cmd.arg(regressions);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-rss_limit_mb=2048")
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut executions = None;
    let mut elapsed = None;
    let mut artifact: Option<PathBuf> = None;
    // libFuzzer reports on stderr: echo it, and keep the final statistics.
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        eprintln!("{line}");
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            executions = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Done ") {
            // "Done 12345 runs in 61 second(s)"
            let w: Vec<&str> = v.split_whitespace().collect();
            executions = executions.or_else(|| w.first()?.parse().ok());
            elapsed = w.get(3).and_then(|s| s.parse().ok());
        } else if let Some(i) = line.find("Test unit written to ") {
            artifact = Some(crate_dir.join(line[i + "Test unit written to ".len()..].trim()));
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo fuzz: {e}"))?;
    let outcome = match (&artifact, status.success()) {
        (None, true) => "ok".to_string(),
        (Some(a), _) => format!("CRASH: {}", a.display()),
        (None, false) => format!("FAILED ({status})"),
    };
    Ok(TargetResult {
        target: target.to_string(),
        seconds: elapsed.or(Some(seconds).filter(|_| status.success())),
        executions,
        outcome,
    })
}
