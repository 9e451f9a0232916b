//! Each driver's KMDF package INF (`inf/<driver>.inx`) installs what the C
//! driver's installer installs: a kernel service (`NtosEbpfExt`,
//! `NetEventEbpfExt`; ServiceType 1, demand start, ErrorControl 1) running
//! `<driver>.sys` from the drivers directory, as a primitive (non-PnP)
//! driver package.
//!
//! The file is checked in the form `stampinf -a amd64` gives it (`$ARCH$`
//! replaced), with a small parser of the INF syntax written here: sections,
//! `key = value, value` entries, `;` comments outside quotes, `\` line
//! continuations and `%string%` substitution from `[Strings]`.
//!
//! It has no uninstall section: Windows 10 1903 and later ignore one in a
//! primitive driver package, and the driver needs Windows 10 2004 or later.

use std::collections::BTreeMap;

/// One driver's package: its INF source and the names the INF must use.
struct Package {
    inx: &'static str,
    sys: &'static str,
    cat: &'static str,
    service: &'static str,
}

const NTOS: Package = Package {
    inx: include_str!("../inf/ntosebpfext.inx"),
    sys: "ntosebpfext.sys",
    cat: "ntosebpfext.cat",
    service: "NtosEbpfExt",
};

const NETEVENT: Package = Package {
    inx: include_str!("../inf/neteventebpfext.inx"),
    sys: "neteventebpfext.sys",
    cat: "neteventebpfext.cat",
    service: "NetEventEbpfExt",
};

const PACKAGES: [&Package; 2] = [&NTOS, &NETEVENT];

/// `SERVICE_KERNEL_DRIVER`, `SERVICE_DEMAND_START`, `SERVICE_ERROR_NORMAL`.
const SERVICE_KERNEL_DRIVER: u64 = 1;
const SERVICE_DEMAND_START: u64 = 3;
const SERVICE_ERROR_NORMAL: u64 = 1;
/// `SPSVCINST_ASSOCSERVICE`: makes the service a device's function driver,
/// which a non-PnP service must not claim.
const SPSVCINST_ASSOCSERVICE: u64 = 0x2;
/// The system-defined setup class "System".
const SYSTEM_CLASS_GUID: &str = "{4d36e97d-e325-11ce-bfc1-08002be10318}";

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: Option<String>,
    values: Vec<String>,
    line: usize,
}

#[derive(Debug, Clone)]
struct Section {
    name: String,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Inf {
    sections: Vec<Section>,
}

/// Splits `text` at every unquoted `sep`; a quoted `""` is a literal quote.
fn split_unquoted(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            c if c == sep && !quoted => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// Byte index of the first `wanted` outside double quotes.
fn find_unquoted(line: &str, wanted: char) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == wanted && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The line without its comment (`;` outside double quotes).
fn strip_comment(line: &str) -> &str {
    find_unquoted(line, ';').map_or(line, |at| &line[..at])
}

impl Inf {
    fn parse(text: &str) -> Result<Inf, String> {
        let mut sections: Vec<Section> = Vec::new();
        let mut pending = String::new();
        let mut pending_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = strip_comment(raw).trim();
            if pending.is_empty() {
                pending_line = line_no;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                continue;
            }
            pending.push_str(line);
            let logical = std::mem::take(&mut pending);
            let logical = logical.trim();
            if logical.is_empty() {
                continue;
            }
            if let Some(rest) = logical.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| format!("line {pending_line}: unterminated section name"))?;
                sections.push(Section {
                    name: name.trim().to_string(),
                    entries: Vec::new(),
                });
                continue;
            }
            let section = sections
                .last_mut()
                .ok_or_else(|| format!("line {pending_line}: entry before any section"))?;
            let (key, rhs) = match find_unquoted(logical, '=') {
                Some(at) => (Some(logical[..at].trim().to_string()), &logical[at + 1..]),
                None => (None, logical),
            };
            section.entries.push(Entry {
                key,
                values: split_unquoted(rhs, ','),
                line: pending_line,
            });
        }
        if !pending.is_empty() {
            return Err("the file ends in a line continuation".to_string());
        }
        Ok(Inf { sections })
    }

    /// Every section with this name (INF names are case-insensitive).
    fn sections_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Section> + use<'a> {
        let name = name.to_string();
        self.sections
            .iter()
            .filter(move |s| s.name.eq_ignore_ascii_case(&name))
    }

    fn section(&self, name: &str) -> Result<&Section, String> {
        let mut found = self.sections_named(name);
        let first = found.next().ok_or_else(|| format!("[{name}] is missing"))?;
        if found.next().is_some() {
            return Err(format!("[{name}] appears more than once"));
        }
        Ok(first)
    }

    /// The `[Strings]` table, keys lower-cased.
    fn strings(&self) -> BTreeMap<String, String> {
        self.sections_named("Strings")
            .flat_map(|s| &s.entries)
            .filter_map(|e| Some((e.key.as_ref()?.to_ascii_lowercase(), e.values.join(","))))
            .collect()
    }

    /// `value` with its `%strkey%` tokens replaced from `[Strings]`; numeric
    /// tokens (`%12%`, dirids) and `%%` stay as they are.
    fn expand(&self, value: &str) -> Result<String, String> {
        let strings = self.strings();
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after
                .find('%')
                .ok_or_else(|| format!("unterminated %token% in {value:?}"))?;
            let token = &after[..end];
            if token.is_empty() || token.bytes().all(|b| b.is_ascii_digit()) {
                out.push('%');
                out.push_str(token);
                out.push('%');
            } else {
                let text = strings
                    .get(&token.to_ascii_lowercase())
                    .ok_or_else(|| format!("%{token}% is not defined in [Strings]"))?;
                out.push_str(text);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

impl Section {
    /// The values of the one entry with this key.
    fn values(&self, key: &str) -> Result<&[String], String> {
        let mut found = self.entries.iter().filter(|e| {
            e.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        });
        let first = found
            .next()
            .ok_or_else(|| format!("[{}] has no {key}", self.name))?;
        if let Some(second) = found.next() {
            return Err(format!(
                "[{}] sets {key} twice (lines {} and {})",
                self.name, first.line, second.line
            ));
        }
        Ok(&first.values)
    }

    /// The single value of the entry with this key.
    fn value(&self, key: &str) -> Result<&str, String> {
        match self.values(key)? {
            [one] => Ok(one),
            many => Err(format!(
                "[{}] {key} has {} values, expected one",
                self.name,
                many.len()
            )),
        }
    }

    fn number(&self, key: &str) -> Result<u64, String> {
        let text = self.value(key)?;
        parse_number(text)
            .ok_or_else(|| format!("[{}] {key} = {text:?} is not a number", self.name))
    }

    /// Values of the key-less lines (a file list section).
    fn bare_values(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.key.is_none())
            .flat_map(|e| e.values.first().map(String::as_str))
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// What `stampinf -a amd64` does to the architecture placeholder.
fn stamp_amd64(inx: &str) -> String {
    inx.replace("$ARCH$", "amd64")
}

/// Everything point 4 of the packaging issue asks of the INF, plus what makes
/// it a valid primitive driver package. Returns every problem found.
fn check(text: &str, package: &Package) -> Vec<String> {
    let inf = match Inf::parse(text) {
        Ok(inf) => inf,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let mut problems = Vec::new();
    let mut expect = |what: Result<(), String>| {
        if let Err(e) = what {
            problems.push(e);
        }
    };

    expect(check_version(&inf, package));
    expect(check_primitive(&inf));
    expect(check_files(&inf, package));
    expect(check_service(&inf, package));
    // Every %string% used anywhere resolves.
    for section in &inf.sections {
        if section.name.eq_ignore_ascii_case("Strings") {
            continue;
        }
        for entry in &section.entries {
            for value in entry.key.iter().chain(&entry.values) {
                expect(
                    inf.expand(value)
                        .map(|_| ())
                        .map_err(|e| format!("[{}] line {}: {e}", section.name, entry.line)),
                );
            }
        }
    }
    problems
}

fn equals(section: &Section, key: &str, want: &str) -> Result<(), String> {
    let got = section.value(key)?;
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(format!(
            "[{}] {key} = {got:?}, expected {want:?}",
            section.name
        ))
    }
}

fn number_equals(section: &Section, key: &str, want: u64, meaning: &str) -> Result<(), String> {
    let got = section.number(key)?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "[{}] {key} = {got}, expected {want} ({meaning})",
            section.name
        ))
    }
}

fn check_version(inf: &Inf, package: &Package) -> Result<(), String> {
    let version = inf.section("Version")?;
    equals(version, "Signature", "$WINDOWS NT$")?;
    equals(version, "Class", "System")?;
    equals(version, "ClassGuid", SYSTEM_CLASS_GUID)?;
    // inf2cat writes the catalog under the name stampinf -c gives it.
    equals(version, "CatalogFile", package.cat)?;
    number_equals(version, "PnpLockdown", 1, "files protected from tampering")?;
    // stampinf writes the value; the .inx only has to carry the directive.
    version.values("DriverVer")?;
    let provider = inf.expand(version.value("Provider")?)?;
    if provider.trim().is_empty() {
        return Err("[Version] Provider is empty".into());
    }
    Ok(())
}

/// A primitive driver: no [Manufacturer] (no hardware to match), only
/// architecture-decorated DefaultInstall sections, and no DefaultUninstall
/// section at all: Windows 10 1903 and later ignore it (LegacyUninstall=1)
/// and the driver needs 2004 or later, so it would never run.
fn check_primitive(inf: &Inf) -> Result<(), String> {
    if inf.sections_named("Manufacturer").next().is_some() {
        return Err("[Manufacturer] present: a non-PnP driver binds to no hardware".into());
    }
    for plain in ["DefaultInstall", "DefaultInstall.Services"] {
        if inf.sections_named(plain).next().is_some() {
            return Err(format!(
                "[{plain}] is not architecture-decorated (primitive drivers need .NTamd64)"
            ));
        }
    }
    if let Some(section) = inf
        .sections
        .iter()
        .find(|s| s.name.to_ascii_lowercase().starts_with("defaultuninstall"))
    {
        return Err(format!(
            "[{}] present: no supported Windows runs it (the reg delete commands of docs/installing.md remove the store entries)",
            section.name
        ));
    }
    Ok(())
}

/// The driver's .sys is on the source disk and copied to dirid 12
/// (drivers).
fn check_files(inf: &Inf, package: &Package) -> Result<(), String> {
    let sys = package.sys;
    let install = inf.section("DefaultInstall.NTamd64")?;
    let copy_list = install.value("CopyFiles")?;
    let list = inf.section(copy_list)?;
    if !list.bare_values().any(|f| f.eq_ignore_ascii_case(sys)) {
        return Err(format!("[{copy_list}] does not list {sys}"));
    }
    let dirs = inf.section("DestinationDirs")?;
    let dirid = match dirs.values(copy_list) {
        Ok(v) => v.first().cloned().unwrap_or_default(),
        Err(_) => dirs.value("DefaultDestDir")?.to_string(),
    };
    if dirid != "12" {
        return Err(format!(
            "[DestinationDirs] sends [{copy_list}] to dirid {dirid}, expected 12 (System32\\drivers)"
        ));
    }
    equals(dirs, "DefaultDestDir", "12")?;
    let disk = inf.section("SourceDisksFiles")?.values(sys)?;
    let disk_id = disk.first().map(String::as_str).unwrap_or_default();
    inf.section("SourceDisksNames")?
        .values(disk_id)
        .map_err(|_| format!("{sys} is on disk {disk_id:?}, not in [SourceDisksNames]"))?;
    Ok(())
}

fn check_service(inf: &Inf, package: &Package) -> Result<(), String> {
    let services = inf.section("DefaultInstall.NTamd64.Services")?;
    let add = services.values("AddService")?;
    let [name, flags, install_section, ..] = add else {
        return Err(format!(
            "AddService = {add:?}: expected name, flags, install section"
        ));
    };
    if name != package.service {
        return Err(format!(
            "AddService installs {name:?}, expected the service {}",
            package.service
        ));
    }
    let flags = if flags.is_empty() {
        Some(0)
    } else {
        parse_number(flags)
    };
    match flags {
        Some(f) if f & SPSVCINST_ASSOCSERVICE == 0 => {}
        Some(_) => {
            return Err("AddService sets SPSVCINST_ASSOCSERVICE for a non-PnP service".into())
        }
        None => return Err("AddService flags are not a number".into()),
    }
    let service = inf.section(install_section)?;
    number_equals(
        service,
        "ServiceType",
        SERVICE_KERNEL_DRIVER,
        "SERVICE_KERNEL_DRIVER",
    )?;
    number_equals(
        service,
        "StartType",
        SERVICE_DEMAND_START,
        "SERVICE_DEMAND_START",
    )?;
    number_equals(
        service,
        "ErrorControl",
        SERVICE_ERROR_NORMAL,
        "SERVICE_ERROR_NORMAL",
    )?;
    equals(service, "ServiceBinary", &format!("%12%\\{}", package.sys))?;
    if inf.expand(service.value("DisplayName")?)?.trim().is_empty() {
        return Err(format!("[{install_section}] DisplayName is empty"));
    }
    Ok(())
}

#[test]
fn inf_installs_the_ntosebpfext_kernel_service() {
    let problems = check(&stamp_amd64(NTOS.inx), &NTOS);
    assert!(
        problems.is_empty(),
        "inf/ntosebpfext.inx:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn inf_installs_the_neteventebpfext_kernel_service() {
    let problems = check(&stamp_amd64(NETEVENT.inx), &NETEVENT);
    assert!(
        problems.is_empty(),
        "inf/neteventebpfext.inx:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn each_inf_is_checked_against_its_own_driver() {
    // The ntosebpfext INF is not a valid neteventebpfext package, nor the
    // reverse: the names are checked, not just the shape.
    let problems = check(&stamp_amd64(NTOS.inx), &NETEVENT);
    for name in [
        "neteventebpfext.cat",
        "neteventebpfext.sys",
        "NetEventEbpfExt",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(name)),
            "{name} not reported: {problems:?}"
        );
    }
    assert!(!check(&stamp_amd64(NETEVENT.inx), &NTOS).is_empty());
}

#[test]
fn inx_carries_the_architecture_placeholder_for_stampinf() {
    // Decorations are written $ARCH$ so that stampinf -a picks the platform;
    // a hard-coded decoration would survive stamping for another platform.
    for package in PACKAGES {
        let inf = Inf::parse(package.inx).unwrap();
        for name in [
            "DefaultInstall.NT$ARCH$",
            "DefaultInstall.NT$ARCH$.Services",
        ] {
            assert!(inf.section(name).is_ok(), "[{name}] missing from the .inx");
        }
        assert!(inf
            .sections_named("DefaultInstall.NTamd64")
            .next()
            .is_none());
    }
}

/// Each requirement is really checked: changing one line of the file makes
/// the check report that line's problem.
#[test]
fn check_rejects_each_broken_requirement() {
    let stamped = stamp_amd64(NTOS.inx);
    let cases: &[(&str, &str, &str)] = &[
        (
            "StartType     = 3",
            "StartType     = 2",
            "StartType = 2, expected 3",
        ),
        (
            "ServiceType   = 1",
            "ServiceType   = 2",
            "ServiceType = 2, expected 1",
        ),
        (
            "ErrorControl  = 1",
            "ErrorControl  = 3",
            "ErrorControl = 3, expected 1",
        ),
        (
            "ServiceBinary = %12%\\ntosebpfext.sys",
            "ServiceBinary = %13%\\ntosebpfext.sys",
            "ServiceBinary",
        ),
        (
            "NtosEbpfExt.DriverFiles = 12",
            "NtosEbpfExt.DriverFiles = 13",
            "dirid 13",
        ),
        (
            "AddService = NtosEbpfExt,",
            "AddService = NtosEbpfExtX,",
            "expected the service NtosEbpfExt",
        ),
        (
            "AddService = NtosEbpfExt,0x00000000,",
            "AddService = NtosEbpfExt,0x00000002,",
            "SPSVCINST_ASSOCSERVICE",
        ),
        (
            "[DefaultInstall.NTamd64]",
            "[DefaultInstall]",
            "[DefaultInstall] is not",
        ),
        (
            "[Strings]",
            "[Manufacturer]\n[Strings]",
            "[Manufacturer] present",
        ),
        (
            "Signature   = \"$WINDOWS NT$\"",
            "Signature   = \"$Chicago$\"",
            "Signature",
        ),
        ("PnpLockdown = 1", "PnpLockdown = 0", "PnpLockdown"),
        (
            "[Strings]",
            "[DefaultUninstall.NTamd64]\nLegacyUninstall = 1\n[Strings]",
            "[DefaultUninstall.NTamd64] present",
        ),
        (
            "ntosebpfext.sys = 1,,",
            "ntosebpfext.sys = 2,,",
            "not in [SourceDisksNames]",
        ),
        (
            "ProviderName       =",
            "OtherName          =",
            "%ProviderName% is not defined",
        ),
    ];
    for (from, to, reported) in cases {
        assert!(
            stamped.contains(from),
            "test case no longer matches the file: {from:?}"
        );
        let broken = stamped.replacen(from, to, 1);
        let problems = check(&broken, &NTOS);
        assert!(
            problems.iter().any(|p| p.contains(reported)),
            "after replacing {from:?} with {to:?}, expected a problem mentioning {reported:?}, got {problems:?}"
        );
    }
}

#[test]
fn parser_follows_inf_syntax() {
    let inf = Inf::parse(concat!(
        "; leading comment\n",
        "[Version]\n",
        "Signature = \"$WINDOWS NT$\" ; trailing comment\n",
        "[strings]\n",
        "Quoted = \"semi;colon, comma and \"\"quotes\"\"\"\n",
        "Long = first, \\\n",
        "       second\n",
        "[Files]\n",
        "a.sys\n",
    ))
    .unwrap();
    assert_eq!(
        inf.section("version").unwrap().value("signature").unwrap(),
        "$WINDOWS NT$"
    );
    let strings = inf.section("Strings").unwrap();
    assert_eq!(
        strings.value("Quoted").unwrap(),
        "semi;colon, comma and \"quotes\""
    );
    assert_eq!(strings.values("Long").unwrap(), ["first", "second"]);
    assert_eq!(
        inf.expand("%quoted%!").unwrap(),
        "semi;colon, comma and \"quotes\"!"
    );
    assert_eq!(inf.expand("%12%\\a.sys").unwrap(), "%12%\\a.sys");
    assert!(inf.expand("%missing%").is_err());
    assert_eq!(
        inf.section("Files")
            .unwrap()
            .bare_values()
            .collect::<Vec<_>>(),
        ["a.sys"]
    );
    assert!(
        Inf::parse("key = value\n").is_err(),
        "an entry outside any section"
    );
    assert!(
        Inf::parse("[Version\n").is_err(),
        "an unterminated section name"
    );
}
