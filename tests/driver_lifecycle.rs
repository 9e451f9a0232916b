//! The real driver image in ntsim: DriverEntry and DriverUnload with every
//! check on (special pool, IRQL), and every fallible call of DriverEntry
//! failed once.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use ntsim::build::driver_image;
use ntsim::nmr::{self, Side};
use ntsim::types::GUID;
use ntsim::{fault, log, ps, sim, Sim};

const PROGRAM_INFO_NPI: &str = "2934ad50-2154-44b6-9622-6c528c068411";
const HOOK_NPI: &str = "5d564054-2736-406d-8b22-12bcffaf0a9f";
const PROCESS_PROGRAM_TYPE: &str = "22ea7b37-1043-4d0d-b60d-cafa1c7b638e";
const PROCESS_ATTACH_TYPE: &str = "66e20687-9805-4458-a0db-38e220d31685";
const THREAD_PROGRAM_TYPE: &str = "2878b65e-750b-48f4-9ab4-b5eadc377d67";
const THREAD_ATTACH_TYPE: &str = "2138225a-7ce0-434d-8ef1-6b44c68afa9e";
const IMAGE_LOAD_PROGRAM_TYPE: &str = "e7e70e3a-ba71-489f-9e22-b31f6f61a623";
const IMAGE_LOAD_ATTACH_TYPE: &str = "5a0c97f6-dfbb-48fc-b5f2-170da0357c31";

fn guid(s: &str) -> GUID {
    GUID::parse(s).unwrap()
}

#[test]
fn loads_registers_both_providers_and_unloads_cleanly() {
    let mut sim = Sim::new();
    let status = sim.load_driver(&driver_image()).expect("the image loads");
    assert_eq!(status, 0, "DriverEntry failed: {status:#x}");

    let providers: Vec<_> = nmr::registrations()
        .into_iter()
        .filter(|r| r.side == Side::Provider && !r.deregistering)
        .collect();
    let expected = [
        (PROGRAM_INFO_NPI, PROCESS_PROGRAM_TYPE),
        (HOOK_NPI, PROCESS_ATTACH_TYPE),
        (PROGRAM_INFO_NPI, THREAD_PROGRAM_TYPE),
        (HOOK_NPI, THREAD_ATTACH_TYPE),
        (PROGRAM_INFO_NPI, IMAGE_LOAD_PROGRAM_TYPE),
        (HOOK_NPI, IMAGE_LOAD_ATTACH_TYPE),
    ];
    let seen: Vec<_> = providers.iter().map(|p| (p.npi_id, p.module_id)).collect();
    let expected: Vec<_> = expected.iter().map(|(n, m)| (guid(n), guid(m))).collect();
    assert_eq!(
        seen, expected,
        "each hook registers its program information, then its attach type, in load order"
    );
    assert_eq!(
        ps::notify_routine_counts(),
        ps::NotifyCounts::default(),
        "no notify routine while no program is attached"
    );
    let loaded = log::dbg_messages()
        .iter()
        .any(|m| m.component == 77 && m.text.starts_with("ntosebpfext: loaded"));
    assert!(
        loaded,
        "DriverEntry logs its load: {:?}",
        log::dbg_messages()
    );

    sim.unload_driver()
        .expect("the driver has an unload routine");
    assert_eq!(
        nmr::provider_count(),
        0,
        "unload deregisters both providers"
    );
    let unloaded = log::dbg_messages()
        .iter()
        .any(|m| m.text.starts_with("ntosebpfext: unloaded"));
    assert!(unloaded, "DriverUnload logs");
    sim.finish().expect("nothing left behind, no violation");
}

#[test]
fn every_failure_in_driver_entry_unwinds_completely() {
    let image = driver_image();
    let covered = sim::sweep(|injection| {
        let mut sim = Sim::new();
        if let Some(i) = injection {
            fault::fail_nth(&i.api, i.call);
        }
        let status = sim.load_driver(&image).expect("the image loads");
        let fired = !fault::fired().is_empty();
        match injection {
            None => assert_eq!(status, 0),
            // A failed store write is logged and does not fail the load.
            Some(i) if fired && i.api.starts_with("Zw") => {
                assert_eq!(status, 0, "{}#{} failed the load", i.api, i.call);
                let logged = log::dbg_messages()
                    .iter()
                    .any(|m| m.text.contains("writing the eBPF store failed: 0xc"));
                assert!(logged, "{}#{}: the store failure is logged", i.api, i.call);
            }
            Some(i) if fired => {
                assert!(
                    status < 0,
                    "DriverEntry succeeded although {}#{} failed",
                    i.api,
                    i.call
                );
                assert!(sim.driver().is_none());
            }
            Some(_) => {}
        }
        if let Err(findings) = sim.finish() {
            panic!("after injection {injection:?}: {findings}");
        }
    });
    let names: Vec<String> = covered
        .iter()
        .map(|i| format!("{}#{}", i.api, i.call))
        .collect();
    for expected in [
        "EtwRegister#1",
        "NmrRegisterProvider#1",
        "NmrRegisterProvider#2",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} not covered: {names:?}"
        );
    }
}
