//! Static checks of the portable driver image: the properties Windows (and
//! the code-integrity rules for drivers) require of a kernel driver.
#![cfg(unix)]

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
const ALLOWED_MODULES: &[&str] = &["ntoskrnl.exe", "hal.dll", "netio.sys", "ksecdd.sys"];

fn image_bytes() -> Vec<u8> {
    let path = ntsim::build::driver_image();
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn is_pe32_plus_amd64_native() {
    let bytes = image_bytes();
    let pe = PE::parse(&bytes).expect("the driver image is not a valid PE file");
    assert!(pe.is_64, "the image is PE32, not PE32+");
    assert_eq!(
        pe.header.coff_header.machine, IMAGE_FILE_MACHINE_AMD64,
        "machine is {:#x}, not AMD64",
        pe.header.coff_header.machine
    );
    let opt = pe.header.optional_header.expect("no optional header");
    assert_eq!(
        opt.windows_fields.subsystem, IMAGE_SUBSYSTEM_NATIVE,
        "subsystem is {}, not NATIVE (1): the image was not linked as a driver",
        opt.windows_fields.subsystem
    );
}

#[test]
fn entry_point_is_driver_entry() {
    let bytes = image_bytes();
    let pe = PE::parse(&bytes).unwrap();
    let driver_entry = pe
        .exports
        .iter()
        .find(|e| e.name == Some("DriverEntry"))
        .expect("the image does not export DriverEntry");
    assert_eq!(
        pe.entry as usize, driver_entry.rva,
        "AddressOfEntryPoint {:#x} is not DriverEntry ({:#x})",
        pe.entry, driver_entry.rva
    );
    let others: Vec<_> = pe
        .exports
        .iter()
        .filter_map(|e| e.name)
        .filter(|n| *n != "DriverEntry")
        .collect();
    assert!(
        others.is_empty(),
        "the image exports more than DriverEntry: {others:?}"
    );
}

#[test]
fn dll_characteristics_include_dynamic_base_nx_compat_force_integrity() {
    let bytes = image_bytes();
    let pe = PE::parse(&bytes).unwrap();
    let dc = pe
        .header
        .optional_header
        .unwrap()
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
        assert!(
            dc & flag != 0,
            "DllCharacteristics {dc:#06x} lacks {name}: {why}"
        );
    }
}

#[test]
fn imports_only_from_kernel_modules() {
    let bytes = image_bytes();
    let pe = PE::parse(&bytes).unwrap();
    assert!(
        !pe.imports.is_empty(),
        "the image imports nothing: the import table is missing"
    );
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
    assert!(
        bad.is_empty(),
        "imports from modules outside the kernel allow-list {ALLOWED_MODULES:?}: {bad:?}"
    );
}

#[test]
fn no_section_is_writable_and_executable() {
    let bytes = image_bytes();
    let pe = PE::parse(&bytes).unwrap();
    for s in &pe.sections {
        let name = String::from_utf8_lossy(&s.name);
        assert!(
            !(s.characteristics & SCN_MEM_EXECUTE != 0 && s.characteristics & SCN_MEM_WRITE != 0),
            "section {} is both writable and executable ({:#x})",
            name.trim_end_matches('\0'),
            s.characteristics
        );
    }
}

#[test]
fn has_base_relocations() {
    let bytes = image_bytes();
    let pe = PE::parse(&bytes).unwrap();
    let relocs = pe
        .relocation_data
        .as_ref()
        .expect("the image has no base relocation directory: it cannot be loaded at another base");
    let count: usize = relocs
        .blocks()
        .map(|b| b.expect("malformed relocation block").words().count())
        .sum();
    assert!(count > 0, "the base relocation directory is empty");
}
