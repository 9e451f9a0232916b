//! Static checks of the portable driver image: the properties Windows (and
//! the code-integrity rules for drivers) require of a kernel driver. The
//! checks themselves are in `pe_checks/` (the signed package image of
//! `cargo xtask package` must pass them too).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod pe_checks;

fn image_bytes() -> Vec<u8> {
    let path = ntsim::build::driver_image();
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn check(check: pe_checks::Check) {
    if let Err(e) = check(&image_bytes()) {
        panic!("{e}");
    }
}

#[test]
fn is_pe32_plus_amd64_native() {
    check(pe_checks::is_pe32_plus_amd64_native);
}

#[test]
fn entry_point_is_driver_entry() {
    check(pe_checks::entry_point_is_driver_entry);
}

#[test]
fn dll_characteristics_include_dynamic_base_nx_compat_force_integrity() {
    check(pe_checks::dll_characteristics_include_dynamic_base_nx_compat_force_integrity);
}

#[test]
fn imports_only_from_kernel_modules() {
    check(pe_checks::imports_only_from_kernel_modules);
}

#[test]
fn no_section_is_writable_and_executable() {
    check(pe_checks::no_section_is_writable_and_executable);
}

#[test]
fn has_base_relocations() {
    check(pe_checks::has_base_relocations);
}

/// Every check of `pe_checks::ALL` has its test above (and so a name a
/// failure report can point at).
#[test]
fn every_check_has_a_test() {
    let source = include_str!("image.rs");
    for (name, _) in pe_checks::ALL {
        assert!(
            source.contains(&format!("fn {name}()")),
            "pe_checks::{name} has no #[test] in tests/image.rs"
        );
    }
}

/// The ETW provider (libs/ebpf_ext/src/trace.rs) is the kernel's: the image imports the
/// provider functions from ntoskrnl.exe, not from a user-mode DLL.
#[test]
fn imports_the_kernel_etw_provider_functions() {
    let bytes = image_bytes();
    let pe = goblin::pe::PE::parse(&bytes).expect("a PE image");
    for name in [
        "EtwRegister",
        "EtwSetInformation",
        "EtwWriteTransfer",
        "EtwUnregister",
    ] {
        assert!(
            pe.imports
                .iter()
                .any(|i| i.name == name && i.dll.eq_ignore_ascii_case("ntoskrnl.exe")),
            "ntoskrnl.exe!{name} is not imported"
        );
    }
}
