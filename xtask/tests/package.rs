//! `cargo xtask package`: the package it writes holds every driver of
//! [`ntsim::build::DRIVERS`], each one Windows will load with test signing
//! on. For each driver the signature verifies against the package's one
//! certificate and covers the image (a flipped byte fails it), the signed
//! image passes every PE check of `tests/image.rs` and has a correct PE
//! checksum, and INSTALL.txt installs its service and copies and removes its
//! eBPF store keys; the signed images still load and run in ntsim exactly as
//! the unsigned ones do, the test certificate is created once and reused,
//! `--cert` signs with the user's own certificate, and missing tools or
//! images give a clear error.
//!
//! The tests run the real `xtask` binary on the images the other tests use
//! ([`ntsim::build::driver_image_named`]), with the test certificate in a
//! temporary folder. They need `osslsigncode` and `openssl` (`.ci/run`
//! installs them); without them they fail, saying so.
#![cfg(unix)]

#[path = "../../tests/pe_checks/mod.rs"]
mod pe_checks;

use goblin::pe::PE;
use ntsim::build::DRIVERS;
use ntsim::child::{output_within, LIMIT};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The package date used by the tests: 2026-01-01 (SOURCE_DATE_EPOCH).
const EPOCH: &str = "1767225600";
const EPOCH_DATE: &str = "01/01/2026";
const FILES: [&str; 8] = [
    "INSTALL.txt",
    "neteventebpfext.inf",
    "neteventebpfext.pdb",
    "neteventebpfext.sys",
    "ntosebpfext.inf",
    "ntosebpfext.pdb",
    "ntosebpfext.sys",
    "signer.cer",
];
/// The package's certificate: one for every driver.
const CER: &str = "signer.cer";

/// A fresh folder for this test process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let all = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-tests");
        // Folders of earlier runs (their process is gone) are removed.
        if Path::new("/proc/self").exists() {
            for entry in std::fs::read_dir(&all).into_iter().flatten().flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = all.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn require_tools() {
    for (tool, arg) in [("osslsigncode", "--version"), ("openssl", "version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`{tool}` is not installed (or does not run): the package tests need osslsigncode \
             and openssl (Debian/Ubuntu: `apt-get install osslsigncode openssl`; .ci/run \
             installs them)"
        );
    }
}

/// [`Command::output`] within [`LIMIT`]: a hung xtask fails the test.
trait BoundedOutput {
    fn bounded_output(&mut self) -> std::io::Result<Output>;
}

impl BoundedOutput for Command {
    fn bounded_output(&mut self) -> std::io::Result<Output> {
        output_within(self, LIMIT)
    }
}

/// `xtask package ARGS` with the date pinned; never installs anything.
fn xtask(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("package").arg("--no-install");
    for a in args {
        cmd.arg(a);
    }
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("NTOSEBPFEXT_SIGNING_DIR")
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command) -> Output {
    let out = output_within(&mut cmd, LIMIT).expect("cannot run the xtask binary");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Package {
    /// The unsigned images it was made from, one per driver of [`DRIVERS`]
    /// in that order.
    images: Vec<PathBuf>,
    signing: PathBuf,
    dir: PathBuf,
}

impl Package {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// The unsigned image of `driver`.
    fn image(&self, driver: &str) -> &Path {
        let i = DRIVERS.iter().position(|d| *d == driver).unwrap();
        &self.images[i]
    }
    /// The signed image of `driver` in the package.
    fn sys_path(&self, driver: &str) -> PathBuf {
        self.file(&format!("{driver}.sys"))
    }
    fn sys(&self, driver: &str) -> Vec<u8> {
        std::fs::read(self.sys_path(driver)).unwrap()
    }
    /// `--image FILE` for every driver.
    fn image_args(&self) -> Vec<OsString> {
        image_args(&self.images)
    }
}

fn image_args(images: &[PathBuf]) -> Vec<OsString> {
    images
        .iter()
        .flat_map(|i| [OsString::from("--image"), i.clone().into_os_string()])
        .collect()
}

/// `xtask package` of every image of `p`, with `args`.
fn xtask_images(p: &Package, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = xtask(args);
    cmd.args(p.image_args());
    cmd
}

/// The package, made once per test process with a new test certificate.
fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        require_tools();
        let images: Vec<PathBuf> = DRIVERS
            .iter()
            .map(|d| ntsim::build::driver_image_named(d))
            .collect();
        let signing = scratch().join("signing");
        let dir = scratch().join("package");
        let mut cmd = xtask(&[&"--signing-dir", &signing, &"--out", &dir]);
        cmd.args(image_args(&images));
        run(cmd);
        Package {
            images,
            signing,
            dir,
        }
    })
}

/// A DER certificate as a PEM file, for `osslsigncode verify -CAfile`.
fn pem_of(der: &Path) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let pem = scratch().join(format!("ca-{}.pem", N.fetch_add(1, Ordering::Relaxed)));
    let out = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(der)
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("cannot run openssl");
    assert!(
        out.status.success(),
        "openssl x509: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pem
}

/// `osslsigncode verify` of `sys` against the certificate `der` alone.
fn verify(sys: &Path, der: &Path) -> Output {
    Command::new("osslsigncode")
        .args(["verify", "-CAfile"])
        .arg(pem_of(der))
        .arg("-in")
        .arg(sys)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run osslsigncode (not installed?)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn package_holds_every_signed_image_its_pdb_and_inf_the_certificate_and_instructions() {
    let p = package();
    assert_eq!(listing(&p.dir), FILES);
    for driver in DRIVERS {
        assert_eq!(
            std::fs::read(p.file(&format!("{driver}.pdb"))).unwrap(),
            std::fs::read(p.image(driver).with_extension("pdb")).unwrap(),
            "the package's {driver}.pdb is not the image's"
        );
        assert_ne!(
            p.sys(driver),
            std::fs::read(p.image(driver)).unwrap(),
            "the package's {driver}.sys is the unsigned one"
        );
    }
    assert_eq!(
        std::fs::read(p.file(CER)).unwrap(),
        std::fs::read(p.signing.join("ntosebpfext-test.cer")).unwrap(),
        "the package's certificate is not the test certificate"
    );
}

#[test]
fn signature_verifies_against_the_test_certificate_with_sha256_and_page_hashes() {
    let p = package();
    for driver in DRIVERS {
        let out = verify(&p.sys_path(driver), &p.file(CER));
        let report = text(&out);
        assert!(
            out.status.success(),
            "verification of {driver}.sys failed:\n{report}"
        );
        for line in [
            "Message digest algorithm  : SHA256",
            "Page hash algorithm  : SHA256",
            "Signature verification: ok",
        ] {
            assert!(report.contains(line), "{driver}: no {line:?} in:\n{report}");
        }
    }

    // The certificate matters: another one does not verify the signature.
    let other = scratch().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=someone else", "-outform", "DER"])
        .arg("-keyout")
        .arg(other.join("key.pem"))
        .arg("-out")
        .arg(other.join("cert.cer"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for driver in DRIVERS {
        let out = verify(&p.sys_path(driver), &other.join("cert.cer"));
        assert!(
            !out.status.success(),
            "the signature of {driver}.sys verifies against an unrelated certificate:\n{}",
            text(&out)
        );
    }
}

#[test]
fn signed_images_pass_every_pe_check_of_the_image_tests() {
    for driver in DRIVERS {
        let bytes = package().sys(driver);
        let failed: Vec<String> = pe_checks::ALL
            .iter()
            .filter_map(|(name, check)| check(&bytes).err().map(|e| format!("{name}: {e}")))
            .collect();
        assert!(
            failed.is_empty(),
            "the signed {driver}.sys fails: {failed:#?}"
        );
    }
}

#[test]
fn signature_is_the_image_certificate_table_at_the_end_of_the_file() {
    for driver in DRIVERS {
        certificate_table_ends(package(), driver);
    }
}

fn certificate_table_ends(p: &Package, driver: &str) {
    let unsigned = std::fs::read(p.image(driver)).unwrap();
    let security = |bytes: &[u8]| {
        PE::parse(bytes)
            .unwrap()
            .header
            .optional_header
            .unwrap()
            .data_directories
            .get_certificate_table()
            .copied()
    };
    assert!(
        security(&unsigned).is_none_or(|d| d.size == 0),
        "the unsigned {driver} image already has a certificate table"
    );
    let bytes = p.sys(driver);
    let table = security(&bytes)
        .unwrap_or_else(|| panic!("the signed {driver}.sys has no certificate table"));
    // For this directory the "address" is a file offset; the table is the
    // last thing in the file, 8-byte aligned.
    assert!(table.size > 0, "empty certificate table");
    assert_eq!(table.virtual_address % 8, 0, "{table:?}");
    assert_eq!(
        (table.virtual_address + table.size) as usize,
        bytes.len(),
        "{driver}: the certificate table {table:?} does not end the file ({} bytes)",
        bytes.len()
    );
    // The image before the table is the unsigned image, except for the
    // checksum and the directory entry (and zero padding to 8 bytes).
    assert!(table.virtual_address as usize >= unsigned.len());
}

/// The PE checksum, computed here independently of xtask and osslsigncode:
/// the sum of all 16-bit little-endian words with the CheckSum field as
/// zero, folded to 16 bits once at the end, plus the file length.
fn reference_checksum(bytes: &[u8]) -> u32 {
    let lfanew = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    let field = lfanew + 24 + 64;
    let mut copy = bytes.to_vec();
    copy[field..field + 4].fill(0);
    if copy.len() % 2 == 1 {
        copy.push(0);
    }
    let mut sum: u64 = copy
        .chunks_exact(2)
        .map(|w| u64::from(u16::from_le_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u32 + bytes.len() as u32
}

#[test]
fn pe_checksum_is_the_signed_files() {
    for driver in DRIVERS {
        pe_checksum_is_right(package(), driver);
    }
}

fn pe_checksum_is_right(p: &Package, driver: &str) {
    let bytes = p.sys(driver);
    let pe = PE::parse(&bytes).unwrap();
    let stored = pe.header.optional_header.unwrap().windows_fields.check_sum;
    assert_eq!(
        stored,
        reference_checksum(&bytes),
        "{driver}: the header's CheckSum is not the signed file's"
    );
    assert_ne!(stored, 0);
    // osslsigncode computes it too: every checksum it reports (current and
    // calculated, or one line when they agree) is the header's.
    let report = text(&verify(&p.sys_path(driver), &p.file(CER)));
    let reported: Vec<u32> = report
        .lines()
        .filter(|l| l.contains("PE checksum"))
        .map(|l| {
            let hex = l.rsplit(':').next().unwrap().trim();
            u32::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("checksum line {l:?}"))
        })
        .collect();
    assert!(!reported.is_empty(), "no PE checksum in:\n{report}");
    assert!(
        reported.iter().all(|&c| c == stored),
        "{driver}: osslsigncode reports {reported:x?}, the header holds {stored:#x}"
    );
}

#[test]
fn a_flipped_byte_anywhere_in_the_image_fails_verification() {
    for driver in DRIVERS {
        flipped_bytes_fail(package(), driver);
    }
}

fn flipped_bytes_fail(p: &Package, driver: &str) {
    let bytes = p.sys(driver);
    let pe = PE::parse(&bytes).unwrap();
    // One byte in the headers (TimeDateStamp) and one in the middle of each
    // section's raw data.
    let lfanew = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    let mut places = vec![("TimeDateStamp".to_string(), lfanew + 8)];
    for s in &pe.sections {
        if s.size_of_raw_data > 0 {
            let name = String::from_utf8_lossy(&s.name)
                .trim_end_matches('\0')
                .to_string();
            places.push((
                name,
                (s.pointer_to_raw_data + s.size_of_raw_data / 2) as usize,
            ));
        }
    }
    assert!(places.len() >= 3, "{driver}: too few sections: {places:?}");
    let dir = scratch().join("flipped").join(driver);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, at) in places {
        let mut copy = bytes.clone();
        copy[at] ^= 0x01;
        let sys = dir.join(format!("{}.sys", name.trim_start_matches('.')));
        std::fs::write(&sys, &copy).unwrap();
        let out = verify(&sys, &p.file(CER));
        assert!(
            !out.status.success(),
            "flipping the byte at {at:#x} ({name}) of {driver}.sys left the signature valid:\n{}",
            text(&out)
        );
    }
    // The same verification of the untouched copy succeeds.
    let sys = dir.join("untouched.sys");
    std::fs::write(&sys, &bytes).unwrap();
    let out = verify(&sys, &p.file(CER));
    assert!(out.status.success(), "{driver}: {}", text(&out));
}

#[test]
fn signed_images_run_in_ntsim_as_the_unsigned_ones_do() {
    let p = package();
    // The demo loads every driver it has a part for: the signed images of
    // the package, then the unsigned ones.
    let drivers = ntsim::demo::demo_drivers();
    assert!(
        DRIVERS.iter().all(|d| drivers.contains(d)),
        "the demo does not load every driver ({drivers:?}): this test would not run them all"
    );
    let demo = |images: Vec<PathBuf>| {
        let mut out = Vec::new();
        ntsim::demo::run(&images, &mut out)
            .unwrap_or_else(|e| panic!("the demo fails on {images:?}: {e}"));
        String::from_utf8(out).unwrap()
    };
    let signed = demo(drivers.iter().map(|d| p.sys_path(d)).collect());
    assert!(
        signed.contains("no leaks, no violations"),
        "the signed images' demo:\n{signed}"
    );
    assert_eq!(
        signed,
        demo(drivers.iter().map(|d| p.image(d).to_path_buf()).collect()),
        "the signed images behave differently from the unsigned ones"
    );
}

#[test]
fn infs_are_the_repository_inx_stamped() {
    for driver in DRIVERS {
        inf_is_stamped(package(), driver);
    }
}

fn inf_is_stamped(p: &Package, driver: &str) {
    let inf = std::fs::read_to_string(p.file(&format!("{driver}.inf"))).unwrap();
    assert!(
        inf.lines().all(|l| !l.ends_with('\r')) && inf.contains("\r\n"),
        "{driver}.inf does not have CRLF line ends"
    );
    let inf: Vec<&str> = inf.lines().collect();
    let driver_ver: Vec<_> = inf
        .iter()
        .filter(|l| l.starts_with("DriverVer"))
        .copied()
        .collect();
    assert_eq!(
        driver_ver,
        [format!("DriverVer   = {EPOCH_DATE},0.1.0.0").as_str()],
        "{driver}.inf"
    );
    let version = inf.iter().position(|l| *l == "[Version]").unwrap();
    let next = inf[version + 1..]
        .iter()
        .position(|l| l.starts_with('['))
        .unwrap();
    assert!(
        (version..version + 1 + next).any(|i| inf[i].starts_with("DriverVer")),
        "{driver}.inf: DriverVer is not in [Version]"
    );
    // Every other line outside comments is the .inx's, with $ARCH$ = amd64.
    let inx_path = ntsim::build::workspace_root()
        .join("inf")
        .join(format!("{driver}.inx"));
    let inx = std::fs::read_to_string(&inx_path).unwrap();
    let expected: Vec<String> = inx
        .lines()
        .filter(|l| !l.starts_with(';') && !l.starts_with("DriverVer"))
        .map(|l| l.replace("$ARCH$", "amd64"))
        .collect();
    let got: Vec<&str> = inf
        .iter()
        .filter(|l| !l.starts_with(';') && !l.starts_with("DriverVer"))
        .copied()
        .collect();
    assert_eq!(got, expected, "{driver}.inf");
    assert!(got.contains(&"[DefaultInstall.NTamd64]"), "{driver}.inf");
}

#[test]
fn install_txt_has_the_commands_and_the_thumbprint() {
    let p = package();
    let install = std::fs::read_to_string(p.file("INSTALL.txt")).unwrap();
    let fingerprint = Command::new("openssl")
        .args([
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-fingerprint",
            "-sha1",
            "-in",
        ])
        .arg(p.file(CER))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_once('=')
        .expect("openssl prints a fingerprint")
        .1
        .trim()
        .replace(':', "");
    for line in [
        "bcdedit /set testsigning on",
        "certutil -addstore Root signer.cer",
        "certutil -addstore TrustedPublisher signer.cer",
        &format!("thumbprint  {fingerprint}"),
    ] {
        assert!(
            install.contains(line),
            "INSTALL.txt lacks {line:?}:\n{install}"
        );
    }
    for driver in DRIVERS {
        let service = service(driver);
        for line in [
            format!("copy {driver}.sys %SystemRoot%\\System32\\drivers\\"),
            format!(
                "sc.exe create {service} type= kernel start= demand binPath= \
                 %SystemRoot%\\System32\\drivers\\{driver}.sys"
            ),
            format!("sc.exe start {service}"),
            format!("sc.exe stop {service}"),
            format!("sc.exe delete {service}"),
            format!("del %SystemRoot%\\System32\\drivers\\{driver}.sys"),
        ] {
            assert_eq!(
                install.matches(&format!("   {line}\r\n")).count(),
                1,
                "INSTALL.txt has {line:?} once, on its own line:\n{install}"
            );
        }
    }
}

/// The kernel service of `driver`: the name the C drivers' installers (and
/// docs/installing.md) use.
fn service(driver: &str) -> &'static str {
    match driver {
        "ntosebpfext" => "NtosEbpfExt",
        "neteventebpfext" => "NetEventEbpfExt",
        other => panic!("{other} is a new driver: add its service name here"),
    }
}

/// The eBPF store keys `driver` writes when it starts (found in ntsim,
/// independently of xtask), relative to `Software\eBPF\Providers`.
fn driver_store_keys(p: &Package, driver: &str) -> Vec<String> {
    use ntsim::ebpf::store::HKLM_STORE;
    let mut sim = ntsim::Sim::new();
    assert_eq!(sim.load_driver(p.image(driver)).unwrap(), 0);
    let keys: Vec<String> = ["ProgramData", "SectionData"]
        .iter()
        .flat_map(|parent| {
            ntsim::registry::subkeys(&format!("{HKLM_STORE}\\{parent}"))
                .into_iter()
                .map(move |k| format!("{parent}\\{k}"))
        })
        .collect();
    sim.finish().expect("nothing left behind");
    assert!(!keys.is_empty());
    keys
}

/// INSTALL.txt has the HKCU step (check, copy each key, or delete the HKCU
/// store) and the uninstall's `reg delete` of each key, for exactly the
/// keys the drivers write: no key missing, none extra.
#[test]
fn install_txt_has_the_store_step_and_its_removal_for_every_key() {
    let p = package();
    let install = std::fs::read_to_string(p.file("INSTALL.txt")).unwrap();
    let store = "Software\\eBPF\\Providers";
    let mut keys = Vec::new();
    for driver in DRIVERS {
        keys.extend(driver_store_keys(p, driver));
    }
    // neteventebpfext's, as docs/installing.md lists them.
    for key in [
        "ProgramData\\{fc4adc85-49c3-4f0a-8393-facce89cde91}",
        "SectionData\\netevent_monitor",
    ] {
        assert!(keys.iter().any(|k| k == key), "no {key} in {keys:?}");
    }
    for key in &keys {
        for line in [
            format!("reg copy \"HKLM\\{store}\\{key}\" \"HKCU\\{store}\\{key}\" /s /f"),
            format!("reg delete \"HKLM\\{store}\\{key}\" /f"),
            format!("reg delete \"HKCU\\{store}\\{key}\" /f"),
        ] {
            assert_eq!(
                install.matches(&format!("   {line}\r\n")).count(),
                1,
                "INSTALL.txt has {line:?} once, on its own line:\n{install}"
            );
        }
    }
    for line in [
        format!("reg query HKCU\\{store}\r\n"),
        format!("reg delete HKCU\\{store} /f\r\n"),
    ] {
        assert!(
            install.contains(&line),
            "INSTALL.txt lacks {line:?}:\n{install}"
        );
    }
    // Nothing but the driver's keys: one copy and two deletes per key.
    let per_key = |what: &str| {
        install
            .lines()
            .filter(|l| l.trim_start().starts_with(what) && l.contains("\\Providers\\"))
            .count()
    };
    assert_eq!(per_key("reg copy "), keys.len(), "{install}");
    assert_eq!(per_key("reg delete "), 2 * keys.len(), "{install}");
    // The step comes after the drivers' start, the removal after their
    // delete.
    let at = |s: &str| install.find(s).unwrap_or_else(|| panic!("no {s:?}"));
    for driver in DRIVERS {
        let service = service(driver);
        assert!(at(&format!("sc.exe start {service}")) < at("reg copy "));
        assert!(at(&format!("sc.exe delete {service}")) < at("reg delete \"HKLM"));
    }
}

#[test]
fn the_test_certificate_is_created_once_and_reused() {
    let p = package();
    let key = p.signing.join("ntosebpfext-test.key");
    let before = std::fs::read(&key).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(
        mode & 0o077,
        0,
        "the private key is readable by others: {mode:o}"
    );
    let again = scratch().join("package-again");
    let out = run(xtask_images(
        p,
        &[&"--signing-dir", &p.signing, &"--out", &again],
    ));
    assert!(
        !text(&out).contains("created the test certificate"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key changed");
    assert_eq!(
        std::fs::read(again.join(CER)).unwrap(),
        std::fs::read(p.file(CER)).unwrap(),
        "the second package has another certificate"
    );
    for driver in DRIVERS {
        let out = verify(&again.join(format!("{driver}.sys")), &p.file(CER));
        assert!(out.status.success(), "{driver}: {}", text(&out));
    }

    // Packaging again into the same folder replaces it.
    run(xtask_images(
        p,
        &[&"--signing-dir", &p.signing, &"--out", &again],
    ));
    assert_eq!(listing(&again), FILES);
}

#[test]
fn an_incomplete_signing_folder_is_refused_not_replaced() {
    require_tools();
    let p = package();
    let signing = scratch().join("signing-incomplete");
    std::fs::create_dir_all(&signing).unwrap();
    std::fs::copy(
        p.signing.join("ntosebpfext-test.cer"),
        signing.join("ntosebpfext-test.cer"),
    )
    .unwrap();
    let out = xtask_images(
        p,
        &[
            &"--signing-dir",
            &signing,
            &"--out",
            &scratch().join("package-incomplete"),
        ],
    )
    .bounded_output()
    .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("lacks"), "{}", text(&out));
    assert_eq!(
        listing(&signing),
        ["ntosebpfext-test.cer"],
        "the folder was touched"
    );
}

#[test]
fn own_pfx_certificate_signs_instead_of_the_test_certificate() {
    let p = package();
    let dir = scratch().join("own");
    std::fs::create_dir_all(&dir).unwrap();
    let ok = |cmd: &mut Command| {
        let out = output_within(cmd, LIMIT).unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    };
    ok(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=My Own Signer"])
        .args(["-addext", "extendedKeyUsage=codeSigning"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem")));
    ok(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dir.join("cert.pem"))
        .arg("-out")
        .arg(dir.join("cert.cer")));
    std::fs::write(dir.join("password"), "s3cret pass\n").unwrap();
    ok(Command::new("openssl")
        .args(["pkcs12", "-export", "-inkey"])
        .arg(dir.join("key.pem"))
        .arg("-in")
        .arg(dir.join("cert.pem"))
        .arg("-out")
        .arg(dir.join("own.pfx"))
        .arg("-passout")
        .arg(format!("file:{}", dir.join("password").display())));

    let out_dir = dir.join("package");
    let signing = dir.join("no-test-certificate");
    run(xtask_images(
        p,
        &[
            &"--cert",
            &dir.join("own.pfx"),
            &"--password-file",
            &dir.join("password"),
            &"--signing-dir",
            &signing,
            &"--out",
            &out_dir,
        ],
    ));
    assert!(!signing.exists(), "--cert created a test certificate");
    assert_eq!(listing(&out_dir), FILES);
    assert_eq!(
        std::fs::read(out_dir.join(CER)).unwrap(),
        std::fs::read(dir.join("cert.cer")).unwrap(),
        "the package's certificate is not the --cert one"
    );
    for driver in DRIVERS {
        let sys = out_dir.join(format!("{driver}.sys"));
        let out = verify(&sys, &dir.join("cert.cer"));
        assert!(out.status.success(), "{driver}: {}", text(&out));
        let out = verify(&sys, &p.file(CER));
        assert!(
            !out.status.success(),
            "the --cert package's {driver}.sys verifies against the test certificate"
        );
    }
    let install = std::fs::read_to_string(out_dir.join("INSTALL.txt")).unwrap();
    assert!(install.contains("My Own Signer"), "{install}");

    // A wrong password is a clear error.
    std::fs::write(dir.join("wrong"), "not it\n").unwrap();
    let out = xtask_images(
        p,
        &[
            &"--cert",
            &dir.join("own.pfx"),
            &"--password-file",
            &dir.join("wrong"),
            &"--out",
            &dir.join("package-wrong"),
        ],
    )
    .bounded_output()
    .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong password?"), "{}", text(&out));
    assert!(!dir.join("package-wrong").exists());
}

#[test]
fn missing_tools_are_a_clear_error() {
    let p = package();
    let empty = scratch().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out_dir = scratch().join("package-no-tools");

    // --no-install: say what to install.
    let out = xtask_images(p, &[&"--out", &out_dir])
        .env("PATH", &empty)
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    for part in [
        "osslsigncode and openssl not found",
        "--no-install",
        "apt-get install osslsigncode openssl",
    ] {
        assert!(msg.contains(part), "no {part:?} in: {msg}");
    }

    // Installing allowed, but no apt-get on the PATH: say so.
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("package")
            .args(p.image_args())
            .arg("--out")
            .arg(&out_dir)
            .env("PATH", &empty)
            .stdin(Stdio::null()),
        LIMIT,
    )
    .unwrap();
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("this host has no apt-get") && msg.contains("osslsigncode"),
        "{msg}"
    );
    assert!(!out_dir.exists(), "a package was written without the tools");
}

#[test]
fn an_out_folder_that_is_not_a_package_is_not_deleted() {
    let p = package();
    let out_dir = scratch().join("somebody-elses");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("notes.txt"), "mine").unwrap();
    let out = xtask_images(p, &[&"--signing-dir", &p.signing, &"--out", &out_dir])
        .bounded_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a package folder"),
        "{}",
        text(&out)
    );
    assert_eq!(listing(&out_dir), ["notes.txt"]);
}

/// The static rules memory integrity (HVCI) adds for a driver image, beyond
/// `tests/image.rs`'s (which already refuses a writable and executable
/// section): sections aligned to the 4 KiB page, and the import address
/// table in a section that is neither writable nor executable.
#[test]
fn signed_images_meet_the_static_memory_integrity_rules() {
    for driver in DRIVERS {
        meets_memory_integrity_rules(driver, &package().sys(driver));
    }
}

fn meets_memory_integrity_rules(driver: &str, bytes: &[u8]) {
    const PAGE: u32 = 0x1000;
    const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
    const SCN_MEM_WRITE: u32 = 0x8000_0000;
    let pe = PE::parse(bytes).unwrap();
    let opt = pe.header.optional_header.unwrap();
    let align = opt.windows_fields.section_alignment;
    assert_eq!(
        align % PAGE,
        0,
        "{driver}: SectionAlignment {align:#x} is not page-sized"
    );
    for s in &pe.sections {
        assert_eq!(
            s.virtual_address % PAGE,
            0,
            "{driver}: section {:?} is not page-aligned",
            s.name
        );
    }
    let iat = opt
        .data_directories
        .get_import_address_table()
        .copied()
        .unwrap_or_else(|| panic!("{driver} has no import address table directory"));
    let holder = pe
        .sections
        .iter()
        .find(|s| {
            iat.virtual_address >= s.virtual_address
                && iat.virtual_address + iat.size <= s.virtual_address + s.virtual_size
        })
        .unwrap_or_else(|| panic!("{driver}: the import address table is in no section"));
    assert_eq!(
        holder.characteristics & (SCN_MEM_EXECUTE | SCN_MEM_WRITE),
        0,
        "{driver}: the import address table is in {:?} ({:#x}), which is writable or executable",
        String::from_utf8_lossy(&holder.name),
        holder.characteristics
    );
}

/// When a tool is missing and apt-get exists, the command installs both
/// packages with apt-get (through sudo when not root) and goes on. The
/// apt-get here is a stand-in on a private PATH that records its arguments
/// and "installs" by linking the host's real tools into that PATH.
#[test]
fn missing_tools_are_installed_with_apt_get() {
    let p = package();
    let which = |tool: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!path.is_empty(), "{tool} is not on the PATH");
        path
    };
    let (osslsigncode, openssl, id) = (which("osslsigncode"), which("openssl"), which("id"));
    let bin = scratch().join("apt-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = scratch().join("apt-get.log");
    let script = |name: &str, body: String| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    script(
        "apt-get",
        format!(
            "[ \"$1\" = --version ] && {{ echo 'apt 2.6.1 (amd64)'; exit 0; }}\n\
             echo \"apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND\" >> '{log}'\n\
             case \"$1\" in install)\n\
             /bin/ln -sf '{osslsigncode}' '{bin}/osslsigncode'\n\
             /bin/ln -sf '{openssl}' '{bin}/openssl';;\n\
             esac\n",
            log = log.display(),
            bin = bin.display(),
        ),
    );
    script("sudo", "exec \"$@\"\n".into());
    script("id", format!("exec '{id}' \"$@\"\n"));

    let out_dir = scratch().join("package-apt");
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("package")
            .args(p.image_args())
            .arg("--signing-dir")
            .arg(&p.signing)
            .arg("--out")
            .arg(&out_dir)
            .env("PATH", &bin)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .stdin(Stdio::null()),
        LIMIT,
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "apt-get update DEBIAN_FRONTEND=noninteractive\n\
         apt-get install -y --no-install-recommends osslsigncode openssl \
         DEBIAN_FRONTEND=noninteractive\n"
    );
    assert_eq!(listing(&out_dir), FILES);
    for driver in DRIVERS {
        let out = verify(&out_dir.join(format!("{driver}.sys")), &p.file(CER));
        assert!(out.status.success(), "{driver}: {}", text(&out));
    }
}

/// The package holds every driver: `--image` of some drivers only is an
/// error that names the missing ones, and nothing is written.
#[test]
fn an_image_missing_for_a_driver_is_a_clear_error() {
    let p = package();
    let out_dir = scratch().join("package-one-image");
    for driver in DRIVERS {
        let out = xtask(&[
            &"--image",
            &p.image(driver),
            &"--signing-dir",
            &p.signing,
            &"--out",
            &out_dir,
        ])
        .bounded_output()
        .unwrap();
        assert!(!out.status.success(), "{}", text(&out));
        let missing: Vec<&str> = DRIVERS.iter().copied().filter(|d| d != driver).collect();
        assert!(
            text(&out).contains(&format!("no --image of {}", missing.join(", "))),
            "{}",
            text(&out)
        );
        assert!(!out_dir.exists(), "a package was written");
    }
}
