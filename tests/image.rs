//! Static checks of the portable driver images: the properties Windows (and
//! the code-integrity rules for drivers) require of a kernel driver, run on
//! every driver of the repository (ntosebpfext.sys, neteventebpfext.sys).
//! The checks themselves are in `pe_checks/` (the signed package image of
//! `cargo xtask package` must pass them too).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod pe_checks;

fn image_bytes(driver: &str) -> Vec<u8> {
    let path = ntsim::build::driver_image_named(driver);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The imports of `driver`'s image: (module, function).
fn imports(driver: &str) -> Vec<(String, String)> {
    let bytes = image_bytes(driver);
    let pe = goblin::pe::PE::parse(&bytes).expect("a PE image");
    pe.imports
        .iter()
        .map(|i| (i.dll.to_ascii_lowercase(), i.name.to_string()))
        .collect()
}

/// One `#[test]` per check of `pe_checks::ALL`, and the imports every
/// driver shares, for the driver named `$driver`.
macro_rules! driver_image_tests {
    ($driver:ident) => {
        mod $driver {
            use super::*;

            fn check(check: pe_checks::Check) {
                if let Err(e) = check(&image_bytes(stringify!($driver))) {
                    panic!("{}.sys: {e}", stringify!($driver));
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
                check(
                    pe_checks::dll_characteristics_include_dynamic_base_nx_compat_force_integrity,
                );
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

            /// The ETW provider (libs/ebpf_ext/src/trace.rs) is the
            /// kernel's: the image imports the provider functions from
            /// ntoskrnl.exe, not from a user-mode DLL.
            #[test]
            fn imports_the_kernel_etw_provider_functions() {
                let imports = imports(stringify!($driver));
                for name in [
                    "EtwRegister",
                    "EtwSetInformation",
                    "EtwWriteTransfer",
                    "EtwUnregister",
                ] {
                    assert!(
                        imports.contains(&("ntoskrnl.exe".into(), name.into())),
                        "ntoskrnl.exe!{name} is not imported"
                    );
                }
            }
        }
    };
}

driver_image_tests!(ntosebpfext);
driver_image_tests!(neteventebpfext);

/// Every check of `pe_checks::ALL` has its test above (and so a name a
/// failure report can point at), and every driver of the build has its
/// tests.
#[test]
fn every_check_and_driver_has_a_test() {
    let source = include_str!("image.rs");
    for (name, _) in pe_checks::ALL {
        assert!(
            source.contains(&format!("fn {name}()")),
            "pe_checks::{name} has no #[test] in tests/image.rs"
        );
    }
    for driver in ntsim::build::DRIVERS {
        assert!(
            source.contains(&format!("driver_image_tests!({driver});")),
            "{driver} has no driver_image_tests! in tests/image.rs"
        );
    }
}

/// neteventebpfext is an NMR client of the netevent NPI with per-processor
/// buffers, and has no process, thread or image notify routine.
#[test]
fn neteventebpfext_imports_the_nmr_client_and_processor_functions_and_no_notify_routine() {
    let imports = imports("neteventebpfext");
    for (module, name) in [
        ("netio.sys", "NmrRegisterClient"),
        ("netio.sys", "NmrDeregisterClient"),
        ("netio.sys", "NmrWaitForClientDeregisterComplete"),
        ("netio.sys", "NmrClientAttachProvider"),
        ("ntoskrnl.exe", "KeGetCurrentProcessorNumberEx"),
        ("ntoskrnl.exe", "KeQueryMaximumProcessorCountEx"),
    ] {
        assert!(
            imports.contains(&(module.into(), name.into())),
            "{module}!{name} is not imported: {imports:?}"
        );
    }
    let notify: Vec<_> = imports
        .iter()
        .filter(|(_, name)| name.starts_with("PsSet") || name.starts_with("PsRemove"))
        .collect();
    assert!(notify.is_empty(), "notify routines imported: {notify:?}");
}

/// ntosebpfext registers its three notify routines (and nothing of the
/// netevent client).
#[test]
fn ntosebpfext_imports_its_notify_routines() {
    let imports = imports("ntosebpfext");
    for name in [
        "PsSetCreateProcessNotifyRoutineEx",
        "PsSetCreateThreadNotifyRoutine",
        "PsSetLoadImageNotifyRoutineEx",
    ] {
        assert!(
            imports.contains(&("ntoskrnl.exe".into(), name.into())),
            "ntoskrnl.exe!{name} is not imported: {imports:?}"
        );
    }
}
