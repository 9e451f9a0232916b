//! The static checks of a driver image: the properties Windows (and the
//! code-integrity rules for drivers) require of a kernel driver. Shared by
//! `tests/image.rs` (the built image) and `xtask/tests/package.rs` (the
//! signed image of the package), so a signed image passes exactly the
//! checks the unsigned one does.
//!
//! Each check takes the image's bytes and returns what is wrong with it.

use goblin::pe::PE;

const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
const IMAGE_SUBSYSTEM_NATIVE: u16 = 1;
const DYNAMIC_BASE: u16 = 0x0040;
const FORCE_INTEGRITY: u16 = 0x0080;
const NX_COMPAT: u16 = 0x0100;
const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
const SCN_MEM_WRITE: u32 = 0x8000_0000;

/// Kernel modules a driver may import from. Anything else (ntdll.dll, any
/// user-mode DLL, a WDK import library's name) fails the check.
pub const ALLOWED_MODULES: &[&str] = &["ntoskrnl.exe", "hal.dll", "netio.sys", "ksecdd.sys"];

/// A check: `Err` says what is wrong.
pub type Check = fn(&[u8]) -> Result<(), String>;

/// Every check, by name.
pub const ALL: &[(&str, Check)] = &[
    ("is_pe32_plus_amd64_native", is_pe32_plus_amd64_native),
    ("entry_point_is_driver_entry", entry_point_is_driver_entry),
    (
        "dll_characteristics_include_dynamic_base_nx_compat_force_integrity",
        dll_characteristics_include_dynamic_base_nx_compat_force_integrity,
    ),
    (
        "imports_only_from_kernel_modules",
        imports_only_from_kernel_modules,
    ),
    (
        "no_section_is_writable_and_executable",
        no_section_is_writable_and_executable,
    ),
    ("has_base_relocations", has_base_relocations),
];

fn parse(bytes: &[u8]) -> Result<PE<'_>, String> {
    PE::parse(bytes).map_err(|e| format!("the driver image is not a valid PE file: {e}"))
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

pub fn is_pe32_plus_amd64_native(bytes: &[u8]) -> Result<(), String> {
    let pe = parse(bytes)?;
    ensure(pe.is_64, || "the image is PE32, not PE32+".into())?;
    let machine = pe.header.coff_header.machine;
    ensure(machine == IMAGE_FILE_MACHINE_AMD64, || {
        format!("machine is {machine:#x}, not AMD64")
    })?;
    let opt = pe.header.optional_header.ok_or("no optional header")?;
    let subsystem = opt.windows_fields.subsystem;
    ensure(subsystem == IMAGE_SUBSYSTEM_NATIVE, || {
        format!("subsystem is {subsystem}, not NATIVE (1): the image was not linked as a driver")
    })
}

pub fn entry_point_is_driver_entry(bytes: &[u8]) -> Result<(), String> {
    let pe = parse(bytes)?;
    let driver_entry = pe
        .exports
        .iter()
        .find(|e| e.name == Some("DriverEntry"))
        .ok_or("the image does not export DriverEntry")?;
    ensure(pe.entry as usize == driver_entry.rva, || {
        format!(
            "AddressOfEntryPoint {:#x} is not DriverEntry ({:#x})",
            pe.entry, driver_entry.rva
        )
    })?;
    let others: Vec<_> = pe
        .exports
        .iter()
        .filter_map(|e| e.name)
        .filter(|n| *n != "DriverEntry")
        .collect();
    ensure(others.is_empty(), || {
        format!("the image exports more than DriverEntry: {others:?}")
    })
}

pub fn dll_characteristics_include_dynamic_base_nx_compat_force_integrity(
    bytes: &[u8],
) -> Result<(), String> {
    let pe = parse(bytes)?;
    let dc = pe
        .header
        .optional_header
        .ok_or("no optional header")?
        .windows_fields
        .dll_characteristics;
    for (flag, name, why) in [
        (DYNAMIC_BASE, "DYNAMIC_BASE", "the kernel relocates drivers"),
        (
            NX_COMPAT,
            "NX_COMPAT",
            "drivers must run with non-executable data",
        ),
        (
            FORCE_INTEGRITY,
            "FORCE_INTEGRITY",
            "PsSetCreateProcessNotifyRoutineEx refuses images without /INTEGRITYCHECK",
        ),
    ] {
        ensure(dc & flag != 0, || {
            format!("DllCharacteristics {dc:#06x} lacks {name}: {why}")
        })?;
    }
    Ok(())
}

pub fn imports_only_from_kernel_modules(bytes: &[u8]) -> Result<(), String> {
    let pe = parse(bytes)?;
    ensure(!pe.imports.is_empty(), || {
        "the image imports nothing: the import table is missing".into()
    })?;
    let bad: Vec<String> = pe
        .imports
        .iter()
        .filter(|i| {
            !ALLOWED_MODULES
                .iter()
                .any(|m| m.eq_ignore_ascii_case(i.dll))
        })
        .map(|i| format!("{}!{}", i.dll, i.name))
        .collect();
    ensure(bad.is_empty(), || {
        format!("imports from modules outside the kernel allow-list {ALLOWED_MODULES:?}: {bad:?}")
    })
}

pub fn no_section_is_writable_and_executable(bytes: &[u8]) -> Result<(), String> {
    let pe = parse(bytes)?;
    for s in &pe.sections {
        let name = String::from_utf8_lossy(&s.name);
        ensure(
            !(s.characteristics & SCN_MEM_EXECUTE != 0 && s.characteristics & SCN_MEM_WRITE != 0),
            || {
                format!(
                    "section {} is both writable and executable ({:#x})",
                    name.trim_end_matches('\0'),
                    s.characteristics
                )
            },
        )?;
    }
    Ok(())
}

pub fn has_base_relocations(bytes: &[u8]) -> Result<(), String> {
    let pe = parse(bytes)?;
    let relocs = pe
        .relocation_data
        .as_ref()
        .ok_or("the image has no base relocation directory: it cannot be loaded at another base")?;
    let mut count = 0;
    for block in relocs.blocks() {
        let block = block.map_err(|e| format!("malformed relocation block: {e}"))?;
        count += block.words().count();
    }
    ensure(count > 0, || {
        "the base relocation directory is empty".into()
    })
}
