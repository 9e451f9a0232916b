//! The eBPF store as eBPF for Windows' user-mode side (`ebpfapi.dll`,
//! `store_helper_internal.cpp`) reads it, over the simulated registry.
//!
//! **Which root.** The reader opens `HKCU\Software\eBPF\Providers` and,
//! only when that key does not open, `HKLM\Software\eBPF\Providers`: one
//! root, never a merge. ntsim's HKCU is the test user's hive,
//! `\Registry\User\<test user SID>` ([`hkcu_store`]).
//!
//! **What it accepts** (as upstream):
//!
//! - `SectionData\<prefix>`: names of at most 37 characters (upstream
//!   enumerates into a 38-character buffer and skips longer names);
//!   `ProgramType` and `AttachType` must be `REG_BINARY` of exactly 16
//!   bytes, else the section is skipped; `BpfProgType` / `BpfAttachType`
//!   are optional DWORDs (0 when absent).
//! - `ProgramData\{guid}`: a key name that is a GUID in braces; `Version`,
//!   `Size`, `HelperCount`; `TypeDescriptor` with `Version`, `Size`, `Name`
//!   (`REG_SZ`), `ContextDescriptor` (16 bytes), `IsPrivileged`,
//!   `BpfProgType`; when `HelperCount` > 0, `Helpers` with exactly
//!   `HelperCount` subkeys, each with `Version`, `Size` and a 28-byte
//!   `Prototype` (`ReallocatePacket` optional). The result is validated as
//!   `ebpf_validate_program_info` does (version 1, a supported size for
//!   each header, a context of at least 16 bytes). A program type that
//!   fails any of this is skipped (and listed in [`Store::skipped`]).
//!
//! A section resolves by the longest matching prefix ([`SectionMap`]).
//!
//! [`register`] writes a host-side provider's entries in the same layout
//! (for tests whose program type is provided by the test itself, not by
//! the driver); [`dump`] prints a store as `reg query ... /s` does.

use super::object::SectionMap;
use super::program::ContextDescriptor;
use crate::kernel::registry::{self, REG_BINARY, REG_DWORD, REG_SZ};
use crate::kernel::types::GUID;

/// Where a kernel driver writes the store (HKLM).
pub const HKLM_STORE: &str = "\\Registry\\Machine\\Software\\eBPF\\Providers";

/// The longest section name upstream's reader enumerates.
pub const SECTION_NAME_MAX: usize = 37;

/// The test user's `HKCU\Software\eBPF\Providers`.
pub fn hkcu_store() -> String {
    let sid = crate::kernel::ps::sid_to_string(&crate::kernel::ps::test_user_sid())
        .expect("the test user's SID is valid");
    format!("\\Registry\\User\\{sid}\\Software\\eBPF\\Providers")
}

/// One `SectionData` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSection {
    pub prefix: String,
    pub program_type: GUID,
    pub attach_type: GUID,
    pub bpf_prog_type: u32,
    pub bpf_attach_type: u32,
}

/// One helper prototype of a program type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreHelper {
    pub name: String,
    pub version: u32,
    pub size: u32,
    pub helper_id: u32,
    pub return_type: u32,
    pub arguments: [u32; 5],
    pub reallocate_packet: bool,
}

/// One `ProgramData` entry: a program type's information.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreProgramInfo {
    pub program_type: GUID,
    pub version: u32,
    pub size: u32,
    pub descriptor_version: u32,
    pub descriptor_size: u32,
    pub name: String,
    pub context: ContextDescriptor,
    pub bpf_prog_type: u32,
    pub is_privileged: bool,
    pub helpers: Vec<StoreHelper>,
}

/// The store as the user-mode side sees it.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// The root that was read (absolute registry path); empty when neither
    /// root exists.
    pub root: String,
    pub sections: Vec<StoreSection>,
    pub programs: Vec<StoreProgramInfo>,
    /// Entries the reader skipped: (key path, why).
    pub skipped: Vec<(String, String)>,
}

fn dword(path: &str, name: &str) -> Result<u32, String> {
    match registry::read_value(path, name) {
        Some((_, d)) if d.len() == 4 => Ok(u32::from_le_bytes([d[0], d[1], d[2], d[3]])),
        Some(_) => Err(format!("{name} is not 4 bytes")),
        None => Err(format!("no {name}")),
    }
}

fn binary<const N: usize>(path: &str, name: &str) -> Result<[u8; N], String> {
    match registry::read_value(path, name) {
        Some((REG_BINARY, d)) if d.len() == N => Ok(d.try_into().expect("length checked")),
        Some(_) => Err(format!("{name} is not REG_BINARY of {N} bytes")),
        None => Err(format!("no {name}")),
    }
}

fn guid_from(b: [u8; 16]) -> GUID {
    GUID {
        data1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        data2: u16::from_le_bytes([b[4], b[5]]),
        data3: u16::from_le_bytes([b[6], b[7]]),
        data4: b[8..16].try_into().expect("8 bytes"),
    }
}

/// A GUID's 16 bytes as `REG_BINARY` holds them.
pub fn guid_bytes(g: &GUID) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&g.data1.to_le_bytes());
    b[4..6].copy_from_slice(&g.data2.to_le_bytes());
    b[6..8].copy_from_slice(&g.data3.to_le_bytes());
    b[8..].copy_from_slice(&g.data4);
    b
}

/// A GUID as a store key name: lowercase, in braces.
pub fn guid_key_name(g: &GUID) -> String {
    format!("{{{g}}}").to_lowercase()
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_sz(path: &str, name: &str) -> Result<String, String> {
    match registry::read_value(path, name) {
        Some((REG_SZ, d)) if d.len() % 2 == 0 => {
            let units: Vec<u16> = d
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16(&units).map_err(|_| format!("{name} is not UTF-16"))
        }
        Some(_) => Err(format!("{name} is not REG_SZ")),
        None => Err(format!("no {name}")),
    }
}

fn read_section(path: &str, prefix: &str) -> Result<StoreSection, String> {
    Ok(StoreSection {
        prefix: prefix.to_string(),
        program_type: guid_from(binary::<16>(path, "ProgramType")?),
        attach_type: guid_from(binary::<16>(path, "AttachType")?),
        bpf_prog_type: dword(path, "BpfProgType").unwrap_or(0),
        bpf_attach_type: dword(path, "BpfAttachType").unwrap_or(0),
    })
}

/// Sizes `_ebpf_validate_extension_object_header` accepts (version 1).
const INFO_SIZES: &[u32] = &[64];
const DESCRIPTOR_SIZES: &[u32] = &[61];
const PROTOTYPE_SIZES: &[u32] = &[64, 65, 66];

fn check_header(what: &str, version: u32, size: u32, sizes: &[u32]) -> Result<(), String> {
    if version != 1 || !sizes.contains(&size) {
        return Err(format!(
            "{what} header version {version} size {size} is not supported"
        ));
    }
    Ok(())
}

fn read_helper(path: &str, name: &str) -> Result<StoreHelper, String> {
    let prototype = binary::<28>(path, "Prototype")?;
    let w = words(&prototype);
    let helper = StoreHelper {
        name: name.to_string(),
        version: dword(path, "Version")?,
        size: dword(path, "Size")?,
        helper_id: w[0],
        return_type: w[1],
        arguments: w[2..7].try_into().expect("5 words"),
        reallocate_packet: dword(path, "ReallocatePacket").unwrap_or(0) != 0,
    };
    check_header("helper", helper.version, helper.size, PROTOTYPE_SIZES)?;
    Ok(helper)
}

fn read_program(path: &str, key: &str) -> Result<StoreProgramInfo, String> {
    if key.len() != 38 || !key.starts_with('{') {
        return Err("the key name is not a GUID in braces".into());
    }
    let program_type = GUID::parse(key).ok_or("the key name is not a GUID")?;
    let version = dword(path, "Version")?;
    let size = dword(path, "Size")?;
    let td = format!("{path}\\TypeDescriptor");
    if !registry::key_exists(&td) {
        return Err("no TypeDescriptor".into());
    }
    let descriptor_version = dword(&td, "Version")?;
    let descriptor_size = dword(&td, "Size")?;
    let name = read_sz(&td, "Name")?;
    let c = words(&binary::<16>(&td, "ContextDescriptor")?);
    let context = ContextDescriptor {
        size: c[0] as i32,
        data: c[1] as i32,
        end: c[2] as i32,
        meta: c[3] as i32,
    };
    let is_privileged = dword(&td, "IsPrivileged")? != 0;
    let bpf_prog_type = dword(&td, "BpfProgType")?;
    let helper_count = dword(path, "HelperCount")?;
    let mut helpers = Vec::new();
    if helper_count > 0 {
        let hk = format!("{path}\\Helpers");
        if !registry::key_exists(&hk) {
            return Err("no Helpers".into());
        }
        let names = registry::subkeys(&hk);
        if names.len() != helper_count as usize {
            return Err(format!(
                "HelperCount is {helper_count} but Helpers has {} subkeys",
                names.len()
            ));
        }
        for n in names {
            helpers.push(read_helper(&format!("{hk}\\{n}"), &n)?);
        }
    }
    check_header("program information", version, size, INFO_SIZES)?;
    check_header(
        "type descriptor",
        descriptor_version,
        descriptor_size,
        DESCRIPTOR_SIZES,
    )?;
    if context.size < 16 {
        return Err(format!("context size {} is below 16", context.size));
    }
    Ok(StoreProgramInfo {
        program_type,
        version,
        size,
        descriptor_version,
        descriptor_size,
        name,
        context,
        bpf_prog_type,
        is_privileged,
        helpers,
    })
}

impl Store {
    /// Reads the store from the root upstream would use: HKCU when its
    /// `Software\eBPF\Providers` exists, HKLM otherwise.
    pub fn read() -> Store {
        let hkcu = hkcu_store();
        if registry::key_exists(&hkcu) {
            Store::read_root(&hkcu)
        } else if registry::key_exists(HKLM_STORE) {
            Store::read_root(HKLM_STORE)
        } else {
            Store::default()
        }
    }

    /// Reads the store under `root` (an absolute registry path).
    pub fn read_root(root: &str) -> Store {
        let mut store = Store {
            root: root.to_string(),
            ..Store::default()
        };
        let sections = format!("{root}\\SectionData");
        for name in registry::subkeys(&sections) {
            let path = format!("{sections}\\{name}");
            if name.encode_utf16().count() > SECTION_NAME_MAX {
                store
                    .skipped
                    .push((path, format!("longer than {SECTION_NAME_MAX} characters")));
                continue;
            }
            match read_section(&path, &name) {
                Ok(s) => store.sections.push(s),
                Err(why) => store.skipped.push((path, why)),
            }
        }
        let programs = format!("{root}\\ProgramData");
        for name in registry::subkeys(&programs) {
            let path = format!("{programs}\\{name}");
            match read_program(&path, &name) {
                Ok(p) => store.programs.push(p),
                Err(why) => store.skipped.push((path, why)),
            }
        }
        store
    }

    /// The section table (longest prefix wins).
    pub fn section_map(&self) -> SectionMap {
        let mut map = SectionMap::new();
        for s in &self.sections {
            map.add(&s.prefix, s.program_type, s.attach_type);
        }
        map
    }

    /// The program information of `program_type`, as offline verification
    /// gets it when the extension is not loaded.
    pub fn program_info(&self, program_type: &GUID) -> Option<&StoreProgramInfo> {
        self.programs
            .iter()
            .find(|p| p.program_type == *program_type)
    }
}

/// The section table of the store as the user-mode side reads it now.
pub fn section_map() -> SectionMap {
    Store::read().section_map()
}

/// A program type provided by a test itself (host-side NMR provider), to
/// be written to the store in eBPF for Windows' layout by [`register`].
#[derive(Clone, Debug)]
pub struct HostProvider {
    pub program_type: GUID,
    pub name: String,
    pub context: ContextDescriptor,
    pub bpf_prog_type: u32,
    /// (name, helper id, return type, argument types).
    pub helpers: Vec<(String, u32, u32, [u32; 5])>,
    /// (prefix, attach type, bpf_attach_type).
    pub sections: Vec<(String, GUID, u32)>,
}

/// Writes `provider`'s entries under [`HKLM_STORE`] in the layout eBPF for
/// Windows' store helper uses (host side; as an installer would).
pub fn register(provider: &HostProvider) {
    let dw = |v: u32| v.to_le_bytes().to_vec();
    let program = format!(
        "{HKLM_STORE}\\ProgramData\\{}",
        guid_key_name(&provider.program_type)
    );
    registry::set_value(&program, "Version", REG_DWORD, &dw(1));
    registry::set_value(&program, "Size", REG_DWORD, &dw(64));
    registry::set_value(
        &program,
        "HelperCount",
        REG_DWORD,
        &dw(provider.helpers.len() as u32),
    );
    let td = format!("{program}\\TypeDescriptor");
    registry::set_value(&td, "Version", REG_DWORD, &dw(1));
    registry::set_value(&td, "Size", REG_DWORD, &dw(61));
    registry::set_value(&td, "Name", REG_SZ, &registry::sz(&provider.name));
    let c = &provider.context;
    let context: Vec<u8> = [c.size, c.data, c.end, c.meta]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    registry::set_value(&td, "ContextDescriptor", REG_BINARY, &context);
    registry::set_value(&td, "BpfProgType", REG_DWORD, &dw(provider.bpf_prog_type));
    registry::set_value(&td, "IsPrivileged", REG_DWORD, &dw(0));
    for (name, id, ret, args) in &provider.helpers {
        let h = format!("{program}\\Helpers\\{name}");
        registry::set_value(&h, "Version", REG_DWORD, &dw(1));
        registry::set_value(&h, "Size", REG_DWORD, &dw(66));
        let proto: Vec<u8> = [*id, *ret]
            .iter()
            .chain(args)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        registry::set_value(&h, "Prototype", REG_BINARY, &proto);
        registry::set_value(&h, "ReallocatePacket", REG_DWORD, &dw(0));
    }
    for (prefix, attach_type, bpf_attach_type) in &provider.sections {
        let s = format!("{HKLM_STORE}\\SectionData\\{prefix}");
        registry::set_value(&s, "Version", REG_DWORD, &dw(1));
        registry::set_value(&s, "Size", REG_DWORD, &dw(56));
        registry::set_value(
            &s,
            "ProgramType",
            REG_BINARY,
            &guid_bytes(&provider.program_type),
        );
        registry::set_value(&s, "AttachType", REG_BINARY, &guid_bytes(attach_type));
        registry::set_value(&s, "BpfProgType", REG_DWORD, &dw(provider.bpf_prog_type));
        registry::set_value(&s, "BpfAttachType", REG_DWORD, &dw(*bpf_attach_type));
    }
}

fn type_name(ty: u32) -> String {
    match ty {
        registry::REG_NONE => "REG_NONE".into(),
        REG_SZ => "REG_SZ".into(),
        registry::REG_EXPAND_SZ => "REG_EXPAND_SZ".into(),
        REG_BINARY => "REG_BINARY".into(),
        REG_DWORD => "REG_DWORD".into(),
        registry::REG_MULTI_SZ => "REG_MULTI_SZ".into(),
        registry::REG_QWORD => "REG_QWORD".into(),
        other => format!("REG_0x{other:x}"),
    }
}

fn data_text(ty: u32, data: &[u8]) -> String {
    match ty {
        REG_DWORD if data.len() == 4 => {
            format!("0x{:x}", u32::from_le_bytes(data.try_into().expect("4")))
        }
        registry::REG_QWORD if data.len() == 8 => {
            format!("0x{:x}", u64::from_le_bytes(data.try_into().expect("8")))
        }
        REG_SZ | registry::REG_EXPAND_SZ => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => data.iter().map(|b| format!("{b:02X}")).collect(),
    }
}

/// The key at `path` and everything below it in the form of
/// `reg query <key> /s`: each key's full name (with `HKEY_LOCAL_MACHINE` /
/// `HKEY_USERS` for `\Registry\Machine` / `\Registry\User`), then one line
/// per value (`    name    TYPE    data`: DWORDs in hex, binary data as
/// uppercase hex digits), then a blank line. Empty if the key is absent.
pub fn dump(path: &str) -> String {
    let mut out = String::new();
    if registry::key_exists(path) {
        dump_key(path, &mut out);
    }
    out
}

fn display_path(path: &str) -> String {
    for (prefix, hive) in [
        ("\\Registry\\Machine\\", "HKEY_LOCAL_MACHINE\\"),
        ("\\Registry\\User\\", "HKEY_USERS\\"),
    ] {
        if path.len() >= prefix.len() && path[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return format!("{hive}{}", &path[prefix.len()..]);
        }
    }
    path.to_string()
}

fn dump_key(path: &str, out: &mut String) {
    out.push_str(&display_path(path));
    out.push('\n');
    for v in registry::values(path) {
        out.push_str(&format!(
            "    {}    {}    {}\n",
            v.name,
            type_name(v.ty),
            data_text(v.ty, &v.data)
        ));
    }
    out.push('\n');
    for k in registry::subkeys(path) {
        dump_key(&format!("{path}\\{k}"), out);
    }
}
