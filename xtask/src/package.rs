//! `cargo xtask package`: a test-signed package of every driver, from any
//! host.
//!
//! Builds the release image of every driver of [`ntsim::build::DRIVERS`]
//! (or takes them with `--image`), signs each with Authenticode (SHA-256,
//! page hashes) using `osslsigncode`, makes sure each PE checksum is the one
//! of the signed file, and writes one package folder (`target/package/`
//! unless `--out`). For each driver `<name>`:
//!
//! | file | what |
//! |---|---|
//! | `<name>.sys` | the signed driver image |
//! | `<name>.pdb` | its symbols |
//! | `<name>.inf` | `inf/<name>.inx` stamped as stampinf would (`$ARCH$`, `DriverVer`) |
//!
//! and once:
//!
//! | file | what |
//! |---|---|
//! | `signer.cer` | the signer's public certificate (DER), to trust on the test machine; every image is signed with it |
//! | `INSTALL.txt` | the exact commands for the test machine, for every driver |
//!
//! The signer is, unless `--cert FILE.pfx` names the user's own certificate,
//! a self-signed code-signing test certificate that `openssl` creates once
//! per user and that every later package reuses, so a test machine trusts
//! it once. It lives outside the repository (see [`default_signing_dir`]):
//! `cargo clean` and `git clean` must not lose it, and its private key must
//! never be committed. `--signing-dir DIR` or `NTOSEBPFEXT_SIGNING_DIR`
//! choose another place (CI, tests).
//!
//! `osslsigncode` and `openssl` come from the distribution; when one is
//! missing the command installs both with `apt-get` (through `sudo` when not
//! root), unless `--no-install`, and otherwise stops with a message saying
//! what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};

const USAGE: &str = "\
usage: cargo xtask package [options]

Builds the release image of every driver, signs them, and writes the package
folder.

options:
  --out DIR             package folder (default: target/package)
  --image FILE.sys      package this image (its .pdb beside it) instead of building;
                        the file's name says which driver it is (<driver>.sys);
                        give one --image for every driver of the repository
  --cert FILE.pfx       sign with this certificate instead of the test certificate
  --password-file FILE  the password of --cert, one line in FILE (without it: none)
  --signing-dir DIR     where the test certificate is created and reused
                        (default: $NTOSEBPFEXT_SIGNING_DIR, else
                        $XDG_DATA_HOME/ntosebpfext/test-signing, else
                        ~/.local/share/ntosebpfext/test-signing)
  --no-install          never run apt-get; fail if osslsigncode or openssl is missing";

/// The environment variable that overrides the test certificate's folder.
pub const SIGNING_DIR_ENV: &str = "NTOSEBPFEXT_SIGNING_DIR";

/// File names inside the signing folder.
const TEST_KEY: &str = "ntosebpfext-test.key";
const TEST_CERT_PEM: &str = "ntosebpfext-test.crt";
const TEST_CERT_DER: &str = "ntosebpfext-test.cer";

/// How long the test certificate is valid: long enough that test machines
/// do not have to trust a new one often. Test signing only.
const TEST_CERT_DAYS: &str = "3650";

/// The description and URL written into the signature.
const SIGNED_DESCRIPTION: &str = "ntosebpfext";
const SIGNED_URL: &str = "https://github.com/ntosebpfext/ntosebpfext-rs";

/// The package's file names shared by every driver: the certificate (not
/// named after one driver, as it signs them all) and the instructions.
const CER: &str = "signer.cer";
const INSTALL: &str = "INSTALL.txt";

#[derive(Debug, Default)]
struct Options {
    out: Option<PathBuf>,
    images: Vec<PathBuf>,
    cert: Option<PathBuf>,
    password_file: Option<PathBuf>,
    signing_dir: Option<PathBuf>,
    no_install: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--out" => o.out = Some(value("--out")?),
            "--image" => o.images.push(value("--image")?),
            "--cert" => o.cert = Some(value("--cert")?),
            "--password-file" => o.password_file = Some(value("--password-file")?),
            "--signing-dir" => o.signing_dir = Some(value("--signing-dir")?),
            "--no-install" => o.no_install = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if o.password_file.is_some() && o.cert.is_none() {
        return Err("--password-file is the password of --cert FILE.pfx; no --cert given".into());
    }
    Ok(o)
}

/// `cargo xtask package ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    match parse(args).and_then(|o| package(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask package: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `--image` files as one image per driver of
/// [`ntsim::build::DRIVERS`], in that order: each file's name without its
/// extension names its driver, and every driver has exactly one.
pub fn images_by_driver(images: &[PathBuf]) -> Result<Vec<(&'static str, PathBuf)>, String> {
    let drivers = ntsim::build::DRIVERS;
    let mut found: Vec<Option<PathBuf>> = vec![None; drivers.len()];
    for image in images {
        let stem = image.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let i = drivers.iter().position(|d| *d == stem).ok_or_else(|| {
            format!(
                "--image {}: the file's name does not say which driver it is; name it \
                 <driver>.sys with <driver> one of {}",
                image.display(),
                drivers.join(", ")
            )
        })?;
        if let Some(first) = &found[i] {
            return Err(format!(
                "--image {} and --image {}: two images of {}",
                first.display(),
                image.display(),
                drivers[i]
            ));
        }
        found[i] = Some(image.clone());
    }
    let missing: Vec<&str> = drivers
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(d, _)| *d)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "no --image of {}: the package holds every driver, so give one --image per driver \
             ({}), or none to build them",
            missing.join(", "),
            drivers.join(", ")
        ));
    }
    Ok(drivers
        .iter()
        .copied()
        .zip(found.into_iter().flatten())
        .collect())
}

/// One driver of the package, everything about it known before anything
/// is written.
struct Driver {
    /// Its name, one of [`ntsim::build::DRIVERS`]: `<name>.sys` etc.
    name: &'static str,
    /// The unsigned image, its PDB beside it.
    image: PathBuf,
    /// Its kernel service, as its INF creates it.
    service: String,
    /// Its four-part Windows version.
    version: String,
    /// Its stamped INF.
    inf: String,
    /// The eBPF store keys it writes ([`store_keys`]).
    keys: Vec<String>,
    /// The PE checksum of its signed image, once signed.
    checksum: u32,
}

impl Driver {
    fn new(root: &Path, name: &'static str, image: PathBuf, date: &str) -> Result<Driver, String> {
        let pdb = image.with_extension("pdb");
        for f in [&image, &pdb] {
            if !f.is_file() {
                return Err(format!("{} does not exist or is not a file", f.display()));
            }
        }
        let inx_path = root.join("inf").join(format!("{name}.inx"));
        let inx = std::fs::read_to_string(&inx_path)
            .map_err(|e| format!("cannot read {}: {e}", inx_path.display()))?;
        let service = inf_service(&inx).map_err(|e| format!("inf/{name}.inx: {e}"))?;
        let version = driver_version(root, name)?;
        let inf = stamp_inf(name, &inx, date, &version)?;
        let keys = store_keys(&image)?;
        Ok(Driver {
            name,
            image,
            service,
            version,
            inf,
            keys,
            checksum: 0,
        })
    }

    fn sys(&self) -> String {
        format!("{}.sys", self.name)
    }

    fn pdb(&self) -> String {
        format!("{}.pdb", self.name)
    }

    fn inf_name(&self) -> String {
        format!("{}.inf", self.name)
    }
}

fn package(o: &Options) -> Result<(), String> {
    let tools = ensure_tools(!o.no_install)?;
    let root = ntsim::build::find_workspace_root()?;
    let images: Vec<(&'static str, PathBuf)> = if o.images.is_empty() {
        ntsim::build::DRIVERS
            .iter()
            .copied()
            .zip(crate::build_all()?)
            .collect()
    } else {
        images_by_driver(&o.images)?
    };
    let date = driver_date()?;
    let mut drivers = images
        .into_iter()
        .map(|(name, image)| Driver::new(&root, name, image, &date))
        .collect::<Result<Vec<_>, String>>()?;
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| root.join("target").join("package"));
    let signer = match &o.cert {
        Some(pfx) => Signer::pfx(pfx, o.password_file.as_deref())?,
        None => {
            let dir = match &o.signing_dir {
                Some(d) => d.clone(),
                None => default_signing_dir()?,
            };
            Signer::test_certificate(&dir)?
        }
    };

    // Everything is written into a staging folder beside `out`, which
    // replaces `out` only when complete.
    let staging = sibling(&out, "staging")?;
    let result = (|| {
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        for d in &mut drivers {
            let sys = staging.join(d.sys());
            sign(&signer, &d.image, &sys)?;
            d.checksum = fix_pe_checksum(&sys)?;
            verify(&signer, &sys)?;
            copy(&d.image.with_extension("pdb"), &staging.join(d.pdb()))?;
            write(&staging.join(d.inf_name()), crlf(&d.inf).as_bytes())?;
        }
        write(&staging.join(CER), &signer.cer)?;
        let install = install_text(&signer, &drivers);
        write(&staging.join(INSTALL), crlf(&install).as_bytes())?;
        replace_dir(&staging, &out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    println!("{}", out.display());
    for d in &drivers {
        println!(
            "  {}  {}  {}  (service {})",
            d.sys(),
            d.pdb(),
            d.inf_name(),
            d.service
        );
    }
    println!(
        "  {CER}  {INSTALL}: signed by {} (SHA-1 {})",
        signer.subject, signer.thumbprint
    );
    println!(
        "  with {} and {}",
        tools.osslsigncode_version, tools.openssl_version
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

struct Tools {
    osslsigncode_version: String,
    openssl_version: String,
}

/// The first line a tool prints for its version, or `None` if it cannot be
/// run (not installed).
fn tool_version(tool: &str, arg: &str) -> Option<String> {
    let out = Command::new(tool)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // osslsigncode: "osslsigncode 2.9, using:" and its libraries below.
    let first = text.lines().next().unwrap_or("");
    let first = first.trim().trim_end_matches(", using:").to_string();
    (out.status.success() && !first.is_empty()).then_some(first)
}

/// Whether `tool --version` can be started at all (it is on the PATH).
fn can_run(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn find_tools() -> (Option<String>, Option<String>) {
    (
        tool_version("osslsigncode", "--version"),
        tool_version("openssl", "version"),
    )
}

fn ensure_tools(allow_install: bool) -> Result<Tools, String> {
    let (mut sign, mut ssl) = find_tools();
    if sign.is_none() || ssl.is_none() {
        let missing: Vec<&str> = [("osslsigncode", &sign), ("openssl", &ssl)]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n)
            .collect();
        let missing = missing.join(" and ");
        if !allow_install {
            return Err(format!(
                "{missing} not found, and --no-install forbids installing it: install \
                 osslsigncode (Authenticode signing) and openssl (the test certificate), on \
                 Debian or Ubuntu with `sudo apt-get install osslsigncode openssl`"
            ));
        }
        install_with_apt(&missing)?;
        (sign, ssl) = find_tools();
        if sign.is_none() || ssl.is_none() {
            return Err(format!(
                "apt-get installed osslsigncode and openssl, yet {missing} still cannot be \
                 run: check PATH"
            ));
        }
    }
    Ok(Tools {
        osslsigncode_version: sign.unwrap_or_default(),
        openssl_version: ssl.unwrap_or_default(),
    })
}

fn install_with_apt(missing: &str) -> Result<(), String> {
    let manual = "install osslsigncode (Authenticode signing) and openssl (the test \
                  certificate) with the host's package manager (Fedora: `dnf install \
                  osslsigncode openssl`, macOS: `brew install osslsigncode openssl`), \
                  then run the command again";
    if !can_run("apt-get") {
        return Err(format!(
            "{missing} not found, and this host has no apt-get to install it: {manual}"
        ));
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = !root;
    if sudo && !can_run("sudo") {
        return Err(format!(
            "{missing} not found; installing it needs root and this host has no sudo: as \
             root run `apt-get install osslsigncode openssl`, or {manual}"
        ));
    }
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        eprintln!(
            "xtask package: {missing} not found; running {}apt-get {}",
            if sudo { "sudo " } else { "" },
            args.join(" ")
        );
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get {}` failed ({status}); {manual}",
                args.join(" ")
            ))
        }
    };
    apt(&["update"])?;
    apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        "osslsigncode",
        "openssl",
    ])
}

/// Runs `cmd`, returning its output, or an error with its stderr.
fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what}: {:?} failed ({}):\n{}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------
// The signer
// ---------------------------------------------------------------------------

enum Key {
    /// PEM certificate and unencrypted PEM key (the test certificate).
    Pem { cert: PathBuf, key: PathBuf },
    /// The user's PKCS#12 file and its password file, if any.
    Pfx {
        pfx: PathBuf,
        password_file: Option<PathBuf>,
    },
}

struct Signer {
    key: Key,
    /// The signer's certificate, DER.
    cer: Vec<u8>,
    /// The signer's certificate, PEM (for `osslsigncode verify -CAfile`).
    pem: Vec<u8>,
    subject: String,
    /// SHA-1 of the certificate, hex without separators: what `certutil`
    /// and the certificate manager call the thumbprint.
    thumbprint: String,
    not_after: String,
    /// The test certificate (true) or the user's own.
    test: bool,
}

/// Where the test certificate lives unless told otherwise:
/// `$NTOSEBPFEXT_SIGNING_DIR`, else the per-user data folder
/// (`$XDG_DATA_HOME` or `~/.local/share`; `%LOCALAPPDATA%` on Windows)
/// under `ntosebpfext/test-signing`.
pub fn default_signing_dir() -> Result<PathBuf, String> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var(SIGNING_DIR_ENV) {
        return Ok(PathBuf::from(d));
    }
    let data = if let Some(d) = var("XDG_DATA_HOME") {
        PathBuf::from(d)
    } else if let Some(h) = var("HOME") {
        PathBuf::from(h).join(".local").join("share")
    } else if let Some(d) = var("LOCALAPPDATA") {
        PathBuf::from(d)
    } else {
        return Err(format!(
            "no HOME, XDG_DATA_HOME or LOCALAPPDATA to keep the test certificate in: \
             give --signing-dir DIR or set {SIGNING_DIR_ENV}"
        ));
    };
    Ok(data.join("ntosebpfext").join("test-signing"))
}

impl Signer {
    fn test_certificate(dir: &Path) -> Result<Signer, String> {
        let files = [TEST_KEY, TEST_CERT_PEM, TEST_CERT_DER].map(|f| dir.join(f));
        if dir.exists() {
            let absent: Vec<_> = files.iter().filter(|f| !f.is_file()).collect();
            if !absent.is_empty() {
                return Err(format!(
                    "the test-signing folder {} lacks {:?}: remove the folder to create a new \
                     test certificate (test machines must then trust the new one)",
                    dir.display(),
                    absent
                ));
            }
        } else {
            create_test_certificate(dir)?;
            eprintln!(
                "xtask package: created the test certificate in {} (reused from now on)",
                dir.display()
            );
        }
        let [key, cert, der] = files;
        // A certificate that expires within a day is refused rather than
        // silently replaced: test machines trust this one.
        let valid = Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "86400", "-in"])
            .arg(&cert)
            .output()
            .map_err(|e| format!("cannot run openssl: {e}"))?;
        if !valid.status.success() {
            return Err(format!(
                "the test certificate {} has expired or expires within a day: remove {} to \
                 create a new one",
                cert.display(),
                dir.display()
            ));
        }
        let cer = std::fs::read(&der).map_err(|e| format!("cannot read {}: {e}", der.display()))?;
        let pem =
            std::fs::read(&cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        let (subject, thumbprint, not_after) = describe(&cert, "PEM")?;
        Ok(Signer {
            key: Key::Pem { cert, key },
            cer,
            pem,
            subject,
            thumbprint,
            not_after,
            test: true,
        })
    }

    fn pfx(pfx: &Path, password_file: Option<&Path>) -> Result<Signer, String> {
        if !pfx.is_file() {
            return Err(format!("--cert {}: no such file", pfx.display()));
        }
        if let Some(p) = password_file {
            if !p.is_file() {
                return Err(format!("--password-file {}: no such file", p.display()));
            }
        }
        let passin = match password_file {
            Some(p) => format!("file:{}", p.display()),
            None => "pass:".to_string(),
        };
        // The signer's certificate only (-clcerts), no key. OpenSSL 3 reads
        // the RC2/3DES files older Windows versions export only with its
        // legacy provider: retry with it.
        let extract = |legacy: bool| {
            let mut c = Command::new("openssl");
            c.args(["pkcs12", "-nokeys", "-clcerts", "-in"])
                .arg(pfx)
                .args(["-passin", &passin]);
            if legacy {
                c.arg("-legacy");
            }
            run(&mut c, "reading the certificate of --cert")
        };
        let pem = match extract(false) {
            Ok(o) => o.stdout,
            Err(first) => match extract(true) {
                Ok(o) => o.stdout,
                Err(_) => {
                    return Err(format!(
                        "{first}\n(wrong password? give it with --password-file FILE)"
                    ))
                }
            },
        };
        let pem = pem_certificate(&pem)
            .ok_or_else(|| format!("--cert {}: the file holds no certificate", pfx.display()))?;
        // The public certificate only: the system's temporary folder will do.
        let tmp =
            std::env::temp_dir().join(format!("ntosebpfext-signer-{}.pem", std::process::id()));
        write(&tmp, &pem)?;
        let described = describe(&tmp, "PEM").and_then(|d| {
            let der = run(
                Command::new("openssl")
                    .args(["x509", "-outform", "DER", "-in"])
                    .arg(&tmp),
                "converting the certificate to DER",
            )?;
            Ok((d, der.stdout))
        });
        let _ = std::fs::remove_file(&tmp);
        let ((subject, thumbprint, not_after), cer) = described?;
        Ok(Signer {
            key: Key::Pfx {
                pfx: pfx.to_path_buf(),
                password_file: password_file.map(Path::to_path_buf),
            },
            cer,
            pem,
            subject,
            thumbprint,
            not_after,
            test: false,
        })
    }
}

/// The first PEM certificate block of `text` (openssl prints "Bag
/// Attributes" lines around it).
fn pem_certificate(text: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = begin + text[begin..].find(end_marker)? + end_marker.len();
    Some(format!("{}\n", &text[begin..end]).into_bytes())
}

/// Subject, SHA-1 thumbprint and expiry of a certificate file.
fn describe(cert: &Path, form: &str) -> Result<(String, String, String), String> {
    let out = run(
        Command::new("openssl")
            .args(["x509", "-noout", "-inform", form])
            .args(["-subject", "-enddate", "-fingerprint", "-sha1", "-in"])
            .arg(cert),
        "reading the certificate",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("openssl x509 printed no {prefix:?} line: {text}"))
    };
    let subject = field("subject=")?;
    let not_after = field("notAfter=")?;
    let thumbprint = text
        .lines()
        .find_map(|l| l.split_once("Fingerprint=").map(|(_, v)| v))
        .ok_or_else(|| format!("openssl x509 printed no fingerprint: {text}"))?
        .replace(':', "")
        .to_ascii_uppercase();
    Ok((subject, thumbprint, not_after))
}

/// Creates the self-signed code-signing test certificate in `dir` (which
/// does not exist yet): built in a private folder beside it, then renamed,
/// so an interrupted run leaves no half-made certificate behind.
fn create_test_certificate(dir: &Path) -> Result<(), String> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = sibling(dir, "new")?;
    let _ = std::fs::remove_dir_all(&tmp);
    private_dir(&tmp)?;
    let result = (|| {
        let host = hostname();
        let subject = format!("/CN=ntosebpfext test signing ({host})/O=ntosebpfext-rs test");
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:3072", "-sha256", "-nodes"])
                .args(["-days", TEST_CERT_DAYS, "-subj", &subject])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args(["-addext", "keyUsage=critical,digitalSignature"])
                .args(["-addext", "extendedKeyUsage=codeSigning"])
                .arg("-keyout")
                .arg(tmp.join(TEST_KEY))
                .arg("-out")
                .arg(tmp.join(TEST_CERT_PEM)),
            "creating the test certificate",
        )?;
        private_file(&tmp.join(TEST_KEY))?;
        run(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(tmp.join(TEST_CERT_PEM))
                .arg("-out")
                .arg(tmp.join(TEST_CERT_DER)),
            "writing the test certificate as DER",
        )?;
        std::fs::rename(&tmp, dir)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dir.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// The host name, reduced to characters safe in a certificate subject.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(48)
        .collect();
    if clean.is_empty() {
        "unknown host".into()
    } else {
        clean
    }
}

fn private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn private_file(file: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", file.display()))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

// ---------------------------------------------------------------------------
// Signing, checksum, verification
// ---------------------------------------------------------------------------

fn sign(signer: &Signer, image: &Path, out: &Path) -> Result<(), String> {
    let mut cmd = Command::new("osslsigncode");
    cmd.arg("sign");
    match &signer.key {
        Key::Pem { cert, key } => {
            cmd.arg("-certs").arg(cert).arg("-key").arg(key);
        }
        Key::Pfx { pfx, password_file } => {
            cmd.arg("-pkcs12").arg(pfx);
            match password_file {
                Some(p) => cmd.arg("-readpass").arg(p),
                None => cmd.args(["-pass", ""]),
            };
        }
    }
    // SHA-256 digest, page hashes (code integrity can then check each page
    // as it is paged in), description and URL.
    cmd.args(["-h", "sha256", "-ph"])
        .args(["-n", SIGNED_DESCRIPTION, "-i", SIGNED_URL])
        .arg("-in")
        .arg(image)
        .arg("-out")
        .arg(out);
    let _ = std::fs::remove_file(out);
    run(&mut cmd, "signing the image").map(|_| ())
}

/// Offset of the optional header's CheckSum field in a PE image.
pub fn pe_checksum_offset(image: &[u8]) -> Result<usize, String> {
    let lfanew = image
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("the image is too short for a DOS header")?;
    if image.get(..2) != Some(b"MZ") || image.get(lfanew..lfanew + 4) != Some(b"PE\0\0") {
        return Err("the image is not a PE file".into());
    }
    // Signature (4) + COFF header (20) + CheckSum's offset in the optional
    // header (64, the same for PE32 and PE32+).
    let at = lfanew + 4 + 20 + 64;
    if image.len() < at + 4 {
        return Err("the image is too short for an optional header".into());
    }
    Ok(at)
}

/// The PE checksum of `image` as the loader computes it: the 16-bit
/// one's-complement-style sum of the file's little-endian words (the
/// CheckSum field itself counted as zero, an odd last byte padded with
/// zero), folded to 16 bits, plus the file length.
pub fn pe_checksum(image: &[u8]) -> Result<u32, String> {
    let field = pe_checksum_offset(image)?;
    let mut sum: u32 = 0;
    for (i, pair) in image.chunks(2).enumerate() {
        let at = i * 2;
        let word = if (field..field + 4).contains(&at) {
            0
        } else {
            u32::from(pair[0]) | u32::from(pair.get(1).copied().unwrap_or(0)) << 8
        };
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let len = u32::try_from(image.len()).map_err(|_| "the image is larger than 4 GiB")?;
    Ok((sum & 0xffff).wrapping_add(len))
}

/// Writes the signed file's PE checksum into its header (the field is
/// outside the Authenticode digest, so the signature stays valid) and
/// returns it. osslsigncode updates it itself; this makes sure of it
/// whatever its version.
fn fix_pe_checksum(file: &Path) -> Result<u32, String> {
    let mut bytes =
        std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let at = pe_checksum_offset(&bytes)?;
    let sum = pe_checksum(&bytes)?;
    if bytes[at..at + 4] != sum.to_le_bytes() {
        bytes[at..at + 4].copy_from_slice(&sum.to_le_bytes());
        write(file, &bytes)?;
    }
    Ok(sum)
}

/// Checks the signature the way a test would: `osslsigncode verify`
/// against the signer's certificate. A test certificate that does not
/// verify is an error; the user's own certificate may chain to a root this
/// host does not have, so a failure there is a warning.
fn verify(signer: &Signer, sys: &Path) -> Result<(), String> {
    let ca = sibling(sys, "ca.pem")?;
    write(&ca, &signer.pem)?;
    let result = run(
        Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(&ca)
            .arg("-in")
            .arg(sys),
        "verifying the signature",
    );
    let _ = std::fs::remove_file(&ca);
    match result {
        Ok(_) => Ok(()),
        Err(e) if signer.test => Err(e),
        Err(e) => {
            eprintln!(
                "xtask package: warning: the signature does not verify against the \
                 certificate of --cert alone (it may chain to a root this host lacks):\n{e}"
            );
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// INF and INSTALL.txt
// ---------------------------------------------------------------------------

/// The version of the driver crate `name` (`[package] version` of
/// `extensions/<name>/Cargo.toml`) as a four-part Windows version:
/// `0.1.0` gives `0.1.0.0`.
fn driver_version(root: &Path, name: &str) -> Result<String, String> {
    let manifest = root.join("extensions").join(name).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let mut in_package = false;
    let mut version = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("version") {
                let v = v.trim_start().strip_prefix('=').map(str::trim);
                version = v.map(|v| v.trim_matches('"').to_string());
            }
        }
    }
    let version =
        version.ok_or_else(|| format!("{} has no [package] version", manifest.display()))?;
    windows_version(&version)
}

/// `a.b.c` (SemVer, no pre-release) as `a.b.c.0`, each part at most 65535.
pub fn windows_version(semver: &str) -> Result<String, String> {
    let parts: Vec<&str> = semver.split('.').collect();
    let ok = parts.len() == 3 && parts.iter().all(|p| p.parse::<u16>().is_ok());
    if !ok {
        return Err(format!(
            "version {semver:?} is not a.b.c with parts 0..=65535 (DriverVer needs four \
             16-bit parts)"
        ));
    }
    Ok(format!("{semver}.0"))
}

/// The package date, `MM/DD/YYYY` (UTC): `SOURCE_DATE_EPOCH` if set (a
/// reproducible package), otherwise today.
fn driver_date() -> Result<String, String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970")?
            .as_secs(),
    };
    let (y, m, d) = civil_date(secs / 86_400);
    Ok(format!("{m:02}/{d:02}/{y:04}"))
}

/// The proleptic Gregorian date of a day number since 1970-01-01.
pub fn civil_date(days: u64) -> (u64, u64, u64) {
    // Howard Hinnant's days-to-civil, for non-negative day numbers.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// What stampinf does for the driver `name`'s INF: `$ARCH$` becomes
/// `amd64` and the `DriverVer` line gets the date and version, done here
/// because stampinf is a WDK (Windows) tool. The rest of `inx` (the text of
/// `inf/<name>.inx`) is unchanged.
pub fn stamp_inf(name: &str, inx: &str, date: &str, version: &str) -> Result<String, String> {
    let mut out = format!(
        "; Generated by `cargo xtask package` from inf/{name}.inx: $ARCH$ set to\n\
         ; amd64 and DriverVer written, as stampinf does. This package has no catalog\n\
         ; ({name}.cat, made by the WDK's inf2cat on Windows). The INF names no\n\
         ; KMDF section: it installs the portable image as well as the KMDF one.\n",
    );
    let mut stamped = 0;
    for line in inx.lines() {
        if line.trim_start().starts_with("DriverVer") {
            stamped += 1;
            out.push_str(&format!("DriverVer   = {date},{version}\n"));
        } else if line.trim_start().starts_with(';') {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(&line.replace("$ARCH$", "amd64"));
            out.push('\n');
        }
    }
    if stamped != 1 {
        return Err(format!(
            "inf/{name}.inx has {stamped} DriverVer lines, expected exactly one"
        ));
    }
    // Only the INF signature `$WINDOWS NT$` may keep dollar signs.
    let leftover = out
        .lines()
        .filter(|l| !l.starts_with(';'))
        .any(|l| l.replace("$WINDOWS NT$", "").contains('$'));
    if leftover {
        return Err(format!(
            "inf/{name}.inx has a `$...$` token other than $ARCH$"
        ));
    }
    Ok(out)
}

/// The kernel service an INF creates: the name of its one `AddService`
/// directive (`AddService = NAME,flags,section`), so that INSTALL.txt's
/// `sc.exe` commands use the service the INF would.
pub fn inf_service(inx: &str) -> Result<String, String> {
    let names: Vec<&str> = inx
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("AddService")
                .then(|| value.split(',').next().unwrap_or("").trim())
        })
        .collect();
    match names[..] {
        [name] if !name.is_empty() => Ok(name.to_string()),
        _ => Err(format!(
            "{} AddService directives ({names:?}), expected exactly one naming the service",
            names.len()
        )),
    }
}

/// The eBPF store keys `image` writes when it starts, relative to
/// `Software\eBPF\Providers` (`ProgramData\{GUID}`, `SectionData\NAME`):
/// found by starting the image in ntsim, so that INSTALL.txt names exactly
/// the keys of the driver it ships.
fn store_keys(image: &Path) -> Result<Vec<String>, String> {
    use ntsim::ebpf::store::HKLM_STORE;
    let mut sim = ntsim::Sim::new();
    let status = sim
        .load_driver(image)
        .map_err(|e| format!("cannot start {} in ntsim: {e}", image.display()))?;
    if status != 0 {
        return Err(format!(
            "{}: DriverEntry failed in ntsim ({:#010x}), so its eBPF store keys are unknown",
            image.display(),
            status as u32
        ));
    }
    let keys: Vec<String> = ["ProgramData", "SectionData"]
        .iter()
        .flat_map(|parent| {
            ntsim::registry::subkeys(&format!("{HKLM_STORE}\\{parent}"))
                .into_iter()
                .map(move |k| format!("{parent}\\{k}"))
        })
        .collect();
    sim.finish()
        .map_err(|e| format!("{} in ntsim: {e}", image.display()))?;
    if keys.is_empty() {
        return Err(format!(
            "{} wrote no eBPF store entry in ntsim",
            image.display()
        ));
    }
    Ok(keys)
}

/// `reg` commands, one per store key: `reg copy` from HKLM to HKCU, or
/// `reg delete` under `root`, indented for INSTALL.txt.
fn reg_lines(keys: &[String], line: impl Fn(&str) -> String) -> String {
    keys.iter().map(|k| format!("   {}\n", line(k))).collect()
}

fn install_text(signer: &Signer, drivers: &[Driver]) -> String {
    const STORE: &str = "Software\\eBPF\\Providers";
    // One block per driver, each line indented, blocks apart.
    let per_driver = |line: &dyn Fn(&Driver) -> String| -> String {
        drivers.iter().map(line).collect::<Vec<_>>().join("\n")
    };
    let names: Vec<&str> = drivers.iter().map(|d| d.name).collect();
    let title = format!("{}: test-signed driver package", names.join(" and "));
    let underline = "=".repeat(title.len());
    let list: String = drivers
        .iter()
        .map(|d| format!("{}  version {}, service {}\n", d.name, d.version, d.service))
        .collect();
    let files = per_driver(&|d| {
        format!(
            "{sys}  the driver, Authenticode-signed (SHA-256, page hashes; PE checksum {checksum:#010x})\n\
             {pdb}  its symbols (WinDbg)\n\
             {inf}  its INF (stamped; no catalog: install with sc.exe as below)\n",
            sys = d.sys(),
            pdb = d.pdb(),
            inf = d.inf_name(),
            checksum = d.checksum,
        )
    });
    let install = per_driver(&|d| {
        format!(
            "   copy {sys} %SystemRoot%\\System32\\drivers\\\n\
             \x20  sc.exe create {service} type= kernel start= demand binPath= %SystemRoot%\\System32\\drivers\\{sys}\n\
             \x20  sc.exe start {service}\n\
             \x20  sc.exe query {service}\n",
            sys = d.sys(),
            service = d.service,
        )
    });
    let copy = per_driver(&|d| {
        reg_lines(&d.keys, |k| {
            format!("reg copy \"HKLM\\{STORE}\\{k}\" \"HKCU\\{STORE}\\{k}\" /s /f")
        })
    });
    let remove = per_driver(&|d| {
        format!(
            "   sc.exe stop {service}\n\
             \x20  sc.exe delete {service}\n\
             \x20  del %SystemRoot%\\System32\\drivers\\{sys}\n",
            sys = d.sys(),
            service = d.service,
        )
    });
    let delete_hklm =
        per_driver(&|d| reg_lines(&d.keys, |k| format!("reg delete \"HKLM\\{STORE}\\{k}\" /f")));
    let delete_hkcu =
        per_driver(&|d| reg_lines(&d.keys, |k| format!("reg delete \"HKCU\\{STORE}\\{k}\" /f")));
    let who = if signer.test {
        "the project's self-signed TEST certificate (created by `cargo xtask package`)"
    } else {
        "the certificate given with --cert"
    };
    format!(
        "\
{title}
{underline}

Drivers, each its own kernel service (install the ones you need):

{list}
Files:

{files}
{CER}  the signer's certificate (it signed every driver), to trust on the test machine
{INSTALL}  this file

Signed by {who}:
  subject     {subject}
  thumbprint  {thumbprint} (SHA-1; certutil calls it \"Cert Hash(sha1)\")
  valid until {not_after}

A test-signed driver loads only on a machine with test signing on: a test
machine or VM, never production. Production needs Microsoft's signature
(attestation signing through the Partner Center). eBPF for Windows must be
installed and running. See docs/installing.md.

On the test machine, from an elevated Command Prompt in this folder:

1. Turn test signing on (Secure Boot must be off) and reboot, once:

   bcdedit /set testsigning on
   shutdown /r /t 0

2. Trust the certificate, once per certificate:

   certutil -addstore Root {CER}
   certutil -addstore TrustedPublisher {CER}

3. Install and start each driver:

{install}
   (In PowerShell write sc.exe, never sc, and $env:SystemRoot for %SystemRoot%.)

4. Make the drivers' eBPF store entries visible to the eBPF tools. A
   driver writes them to HKLM at each start, but eBPF for Windows' MSI
   gives the user who installed it an HKCU store, and ebpfapi.dll (bpftool,
   netsh ebpf) reads HKCU only, whenever that key exists. As each user who
   uses the tools (a normal prompt is enough), check:

   reg query HKCU\\{STORE}

   If the key exists, copy each started driver's entries into it (again
   after each driver update, once the new driver has started):

{copy}
   or delete that user's HKCU store so that HKLM is read (eBPF for
   Windows' own entries are in HKLM too; other extensions' entries that
   exist only in HKCU are lost):

   reg delete HKCU\\{STORE} /f

Stop and remove each driver:

{remove}
Remove each driver's eBPF store entries (stopping leaves them):

{delete_hklm}
and, as each user who copied them into HKCU:

{delete_hkcu}
Undo the rest when done testing:

   certutil -delstore TrustedPublisher {thumbprint}
   certutil -delstore Root {thumbprint}
   bcdedit /set testsigning off
",
        subject = signer.subject,
        thumbprint = signer.thumbprint,
        not_after = signer.not_after,
    )
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn crlf(text: &str) -> String {
    text.lines().map(|l| format!("{l}\r\n")).collect()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

/// `path` with `.SUFFIX-PID` appended to its name: a private name beside it.
fn sibling(path: &Path, suffix: &str) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} has no file name", path.display()))?;
    let mut name = name.to_os_string();
    name.push(format!(".{suffix}-{}", std::process::id()));
    Ok(path.with_file_name(name))
}

/// Replaces the folder `out` with `staging`. An existing `out` is removed
/// only if it looks like a package (it has INSTALL.txt) or is empty, so a
/// mistyped `--out` cannot delete someone's files.
fn replace_dir(staging: &Path, out: &Path) -> Result<(), String> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| format!("cannot read {}: {e}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(INSTALL).is_file() {
            return Err(format!(
                "{} exists and is not a package folder (no {INSTALL}): choose another --out \
                 or remove it",
                out.display()
            ));
        }
        std::fs::remove_dir_all(out)
            .map_err(|e| format!("cannot remove the old {}: {e}", out.display()))?;
    } else if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::rename(staging, out).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            staging.display(),
            out.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_date_known_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_787), (2026, 11, 30));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
    }

    #[test]
    fn windows_version_four_parts() {
        assert_eq!(windows_version("0.1.0").unwrap(), "0.1.0.0");
        assert_eq!(windows_version("1.65535.2").unwrap(), "1.65535.2.0");
        for bad in ["0.1", "0.1.0-rc.1", "1.65536.0", "a.b.c", "1.2.3.4"] {
            assert!(windows_version(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn stamp_inf_sets_arch_and_driver_ver() {
        let inx = "[Version]\nSignature = \"$WINDOWS NT$\"\nDriverVer = ; stampinf\n\
                   [DefaultInstall.NT$ARCH$]\nCopyFiles = X\n";
        let inf = stamp_inf("x", inx, "11/30/2026", "0.1.0.0").unwrap();
        assert!(
            inf.contains("\nDriverVer   = 11/30/2026,0.1.0.0\n"),
            "{inf}"
        );
        assert!(inf.contains("\n[DefaultInstall.NTamd64]\n"), "{inf}");
        assert!(inf.contains("Signature = \"$WINDOWS NT$\""), "{inf}");
        assert!(
            stamp_inf("x", "[Version]\n", "d", "v").is_err(),
            "no DriverVer"
        );
        assert!(
            stamp_inf("x", "DriverVer=\n[X.$OTHER$]\n", "d", "v").is_err(),
            "unknown token"
        );
    }

    #[test]
    fn inf_service_is_the_one_add_service_name() {
        let inx = "[X.Services]\n; AddService = Commented,0,Y\n\
                   AddService = NetEventEbpfExt,0x00000000,NetEventEbpfExt.Service\n";
        assert_eq!(inf_service(inx).unwrap(), "NetEventEbpfExt");
        assert!(inf_service("[X]\n").is_err(), "no AddService");
        assert!(
            inf_service("AddService = A,0,S\nAddService = B,0,S\n").is_err(),
            "two AddService"
        );
        assert!(inf_service("AddService = ,0,S\n").is_err(), "no name");
    }

    #[test]
    fn images_by_driver_needs_one_image_per_driver() {
        let images: Vec<PathBuf> = ntsim::build::DRIVERS
            .iter()
            .rev()
            .map(|d| PathBuf::from(format!("/some/where/{d}.sys")))
            .collect();
        let by_driver = images_by_driver(&images).unwrap();
        let names: Vec<&str> = by_driver.iter().map(|(d, _)| *d).collect();
        assert_eq!(names, ntsim::build::DRIVERS, "not in DRIVERS order");
        for (d, image) in &by_driver {
            assert_eq!(image, &PathBuf::from(format!("/some/where/{d}.sys")));
        }
        let err = images_by_driver(&images[..1]).unwrap_err();
        assert!(err.contains("no --image of"), "{err}");
        let mut twice = images.clone();
        twice.push(images[0].clone());
        let err = images_by_driver(&twice).unwrap_err();
        assert!(err.contains("two images of"), "{err}");
        let mut other = images.clone();
        other.push(PathBuf::from("driver.sys"));
        let err = images_by_driver(&other).unwrap_err();
        assert!(err.contains("does not say which driver"), "{err}");
    }

    #[test]
    fn pe_checksum_of_a_tiny_image() {
        // A minimal "PE" header: MZ, e_lfanew = 0x40, "PE\0\0", then zeros
        // up to the CheckSum field, which holds garbage that must not count.
        let mut image = vec![0u8; 0x40 + 4 + 20 + 64 + 4 + 3];
        image[..2].copy_from_slice(b"MZ");
        image[0x3c] = 0x40;
        image[0x40..0x44].copy_from_slice(b"PE\0\0");
        let at = pe_checksum_offset(&image).unwrap();
        assert_eq!(at, 0x40 + 4 + 20 + 64);
        image[at..at + 4].copy_from_slice(&[0xff; 4]);
        let n = image.len();
        image[n - 3..].copy_from_slice(&[0xff, 0xff, 0x01]); // words 0xffff, 0x0001
                                                             // 'MZ' = 0x5a4d, 0x40, 'PE' = 0x4550, 0xffff + 0x0001 = 0x10000 -> 0x0001.
        let words = 0x5a4du32 + 0x40 + 0x4550 + 0xffff + 0x0001;
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(pe_checksum(&image).unwrap(), folded + n as u32);
        assert!(pe_checksum(b"MZ").is_err());
    }
}
