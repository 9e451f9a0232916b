//! The eBPF store the driver writes at load (libs/ebpf_ext/src/store.rs), checked byte
//! for byte against what eBPF for Windows' store helper writes, read back
//! the way `ebpfapi.dll` reads it, and used to load programs.
//!
//! The expected keys and values are written out here from the documented
//! layout (`ebpf_store_helper.c`, `ebpf_windows.h`, docs/abi.md), not from
//! the driver's code.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use ntsim::build::driver_image;
use ntsim::ebpf::core::LoadedProgram;
use ntsim::ebpf::store::{self, Store, HKLM_STORE};
use ntsim::ebpf::{Object, ObjectError};
use ntsim::process as hook;
use ntsim::ps::{self, ProcessSpec};
use ntsim::registry::{self, REG_BINARY, REG_DWORD, REG_SZ};
use ntsim::{fault, log, sim, Sim};
use std::collections::BTreeMap;

const PROCESS_TYPE_KEY: &str = "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}";
/// `EBPF_PROGRAM_TYPE_PROCESS` as the 16 bytes of its `GUID`.
const PROCESS_TYPE_BYTES: [u8; 16] = [
    0x37, 0x7b, 0xea, 0x22, 0x43, 0x10, 0x0d, 0x4d, 0xb6, 0x0d, 0xca, 0xfa, 0x1c, 0x7b, 0x63, 0x8e,
];
/// `EBPF_ATTACH_TYPE_PROCESS` (66e20687-9805-4458-a0db-38e220d31685).
const PROCESS_ATTACH_BYTES: [u8; 16] = [
    0x87, 0x06, 0xe2, 0x66, 0x05, 0x98, 0x58, 0x44, 0xa0, 0xdb, 0x38, 0xe2, 0x20, 0xd3, 0x16, 0x85,
];

const THREAD_TYPE_KEY: &str = "{2878b65e-750b-48f4-9ab4-b5eadc377d67}";
/// `EBPF_PROGRAM_TYPE_THREAD` as the 16 bytes of its `GUID`.
const THREAD_TYPE_BYTES: [u8; 16] = [
    0x5e, 0xb6, 0x78, 0x28, 0x0b, 0x75, 0xf4, 0x48, 0x9a, 0xb4, 0xb5, 0xea, 0xdc, 0x37, 0x7d, 0x67,
];
/// `EBPF_ATTACH_TYPE_THREAD` (2138225a-7ce0-434d-8ef1-6b44c68afa9e).
const THREAD_ATTACH_BYTES: [u8; 16] = [
    0x5a, 0x22, 0x38, 0x21, 0xe0, 0x7c, 0x4d, 0x43, 0x8e, 0xf1, 0x6b, 0x44, 0xc6, 0x8a, 0xfa, 0x9e,
];
const IMAGE_LOAD_TYPE_KEY: &str = "{e7e70e3a-ba71-489f-9e22-b31f6f61a623}";
/// `EBPF_PROGRAM_TYPE_IMAGE_LOAD` as the 16 bytes of its `GUID`.
const IMAGE_LOAD_TYPE_BYTES: [u8; 16] = [
    0x3a, 0x0e, 0xe7, 0xe7, 0x71, 0xba, 0x9f, 0x48, 0x9e, 0x22, 0xb3, 0x1f, 0x6f, 0x61, 0xa6, 0x23,
];
/// `EBPF_ATTACH_TYPE_IMAGE_LOAD` (5a0c97f6-dfbb-48fc-b5f2-170da0357c31).
const IMAGE_LOAD_ATTACH_BYTES: [u8; 16] = [
    0xf6, 0x97, 0x0c, 0x5a, 0xbb, 0xdf, 0xfc, 0x48, 0xb5, 0xf2, 0x17, 0x0d, 0xa0, 0x35, 0x7c, 0x31,
];

/// A key's values (name -> (type, data)) and its subkey names.
#[derive(Debug, Default, PartialEq, Eq)]
struct KeyContent {
    values: BTreeMap<String, (u32, Vec<u8>)>,
    subkeys: Vec<String>,
}

/// Every key under `root` (paths relative to it, "" for the root).
fn tree(root: &str) -> BTreeMap<String, KeyContent> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let path = if rel.is_empty() {
            root.to_string()
        } else {
            format!("{root}\\{rel}")
        };
        let mut content = KeyContent::default();
        for v in registry::values(&path) {
            content.values.insert(v.name, (v.ty, v.data));
        }
        for k in registry::subkeys(&path) {
            todo.push(if rel.is_empty() {
                k.clone()
            } else {
                format!("{rel}\\{k}")
            });
            content.subkeys.push(k);
        }
        content.subkeys.sort();
        out.insert(rel, content);
    }
    out
}

fn dw(v: u32) -> (u32, Vec<u8>) {
    (REG_DWORD, v.to_le_bytes().to_vec())
}

fn bin(b: &[u8]) -> (u32, Vec<u8>) {
    (REG_BINARY, b.to_vec())
}

fn key(values: &[(&str, (u32, Vec<u8>))], subkeys: &[&str]) -> KeyContent {
    let mut subkeys: Vec<String> = subkeys.iter().map(|s| s.to_string()).collect();
    subkeys.sort();
    KeyContent {
        values: values
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect(),
        subkeys,
    }
}

fn le32s(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// REG_SZ data: UTF-16LE with the terminating NUL.
fn sz(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// The `SectionData\<name>` key of a section (no BPF numbers: 0).
fn section_key(program_type: &[u8; 16], attach_type: &[u8; 16], numbers: (u32, u32)) -> KeyContent {
    // EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION(_SIZE): 1, 56.
    key(
        &[
            ("Version", dw(1)),
            ("Size", dw(56)),
            ("ProgramType", bin(program_type)),
            ("AttachType", bin(attach_type)),
            ("BpfProgType", dw(numbers.0)),
            ("BpfAttachType", dw(numbers.1)),
        ],
        &[],
    )
}

/// The keys of a program type without helpers (the thread and image-load
/// types): `HelperCount` 0 and no `Helpers` key, as the store helper writes
/// when `count_of_program_type_specific_helpers` is 0.
fn insert_helperless_type(
    t: &mut BTreeMap<String, KeyContent>,
    type_key: &str,
    name: &str,
    context: [u32; 4],
) {
    let program = format!("ProgramData\\{type_key}");
    t.insert(
        program.clone(),
        key(
            &[("Version", dw(1)), ("Size", dw(64)), ("HelperCount", dw(0))],
            &["TypeDescriptor"],
        ),
    );
    t.insert(
        format!("{program}\\TypeDescriptor"),
        key(
            &[
                ("Version", dw(1)),
                ("Size", dw(61)),
                ("Name", (REG_SZ, sz(name))),
                ("ContextDescriptor", bin(&le32s(&context))),
                // bpf_prog_type 0: a type eBPF for Windows does not number.
                ("BpfProgType", dw(0)),
                ("IsPrivileged", dw(0)),
            ],
            &[],
        ),
    );
}

/// What eBPF for Windows' store helper writes for ntosebpfext's three
/// program types (process, thread, image_load) and their sections, under
/// `Providers`.
fn expected_tree() -> BTreeMap<String, KeyContent> {
    let program = format!("ProgramData\\{PROCESS_TYPE_KEY}");
    let name = sz("process");
    // ebpf_context_descriptor_t { sizeof(process_md_t) = 144,
    // offsetof(command_start) = 0, offsetof(command_end) = 8, -1 }.
    let context = le32s(&[144, 0, 8, u32::MAX]);
    let mut t = BTreeMap::new();
    t.insert(String::new(), key(&[], &["ProgramData", "SectionData"]));
    t.insert(
        "ProgramData".into(),
        key(
            &[],
            &[PROCESS_TYPE_KEY, THREAD_TYPE_KEY, IMAGE_LOAD_TYPE_KEY],
        ),
    );
    // thread_md_t: 56 bytes, no packet.
    insert_helperless_type(
        &mut t,
        THREAD_TYPE_KEY,
        "thread",
        [56, u32::MAX, u32::MAX, u32::MAX],
    );
    // image_load_md_t: 56 bytes, the image path at 0..8 is the packet.
    insert_helperless_type(
        &mut t,
        IMAGE_LOAD_TYPE_KEY,
        "image_load",
        [56, 0, 8, u32::MAX],
    );
    t.insert(
        program.clone(),
        key(
            // EBPF_PROGRAM_INFORMATION_CURRENT_VERSION(_SIZE): 1, 64.
            &[("Version", dw(1)), ("Size", dw(64)), ("HelperCount", dw(3))],
            &["TypeDescriptor", "Helpers"],
        ),
    );
    t.insert(
        format!("{program}\\TypeDescriptor"),
        key(
            // EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION(_SIZE): 1, 61.
            &[
                ("Version", dw(1)),
                ("Size", dw(61)),
                ("Name", (REG_SZ, name)),
                ("ContextDescriptor", bin(&context)),
                ("BpfProgType", dw(6)),
                ("IsPrivileged", dw(0)),
            ],
            &[],
        ),
    );
    let helpers = [
        ("bpf_process_get_image_path", 0x10000u32),
        ("bpf_process_get_account_name", 0x10001),
        ("bpf_process_get_account_domain", 0x10002),
    ];
    t.insert(
        format!("{program}\\Helpers"),
        key(&[], &helpers.map(|(n, _)| n)),
    );
    for (helper, id) in helpers {
        // helper_id, EBPF_RETURN_TYPE_INTEGER, (PTR_TO_CTX,
        // PTR_TO_WRITABLE_MEM, CONST_SIZE, DONTCARE, DONTCARE).
        let prototype = le32s(&[id, 0, 4, 11, 2, 0, 0]);
        assert_eq!(prototype.len(), 28);
        t.insert(
            format!("{program}\\Helpers\\{helper}"),
            key(
                // EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION(_SIZE): 1, 66
                // (it includes flags, so ReallocatePacket is written).
                &[
                    ("Version", dw(1)),
                    ("Size", dw(66)),
                    ("Prototype", bin(&prototype)),
                    ("ReallocatePacket", dw(0)),
                ],
                &[],
            ),
        );
    }
    t.insert(
        "SectionData".into(),
        key(&[], &["process", "thread", "image_load"]),
    );
    // BPF_PROG_TYPE_PROCESS 6, BPF_ATTACH_TYPE_PROCESS 11.
    t.insert(
        "SectionData\\process".into(),
        section_key(&PROCESS_TYPE_BYTES, &PROCESS_ATTACH_BYTES, (6, 11)),
    );
    t.insert(
        "SectionData\\thread".into(),
        section_key(&THREAD_TYPE_BYTES, &THREAD_ATTACH_BYTES, (0, 0)),
    );
    t.insert(
        "SectionData\\image_load".into(),
        section_key(&IMAGE_LOAD_TYPE_BYTES, &IMAGE_LOAD_ATTACH_BYTES, (0, 0)),
    );
    t
}

fn assert_store_is_expected(context: &str) {
    assert_store_is(&expected_tree(), context);
}

fn load(sim: &mut Sim) {
    load_image(sim, &driver_image());
}

fn load_image(sim: &mut Sim, image: &std::path::Path) {
    let status = sim.load_driver(image).expect("the image loads");
    assert_eq!(status, 0, "DriverEntry failed");
}

#[test]
fn the_store_holds_exactly_what_the_store_helper_writes() {
    let mut sim = Sim::new();
    load(&mut sim);
    assert_store_is_expected("after load");
    assert!(log::dbg_messages()
        .iter()
        .any(|m| m.text.contains("eBPF store updated")));
    sim.finish().expect("nothing left behind, no violation");
}

#[test]
fn load_unload_and_reload_rewrite_the_same_store_and_unload_leaves_it() {
    let mut sim = Sim::new();
    load(&mut sim);
    let first = store::dump(HKLM_STORE);
    sim.unload_driver().unwrap();
    assert_store_is_expected("after unload (offline tools need the store)");
    load(&mut sim);
    assert_store_is_expected("after reload");
    assert_eq!(
        store::dump(HKLM_STORE),
        first,
        "the reload rewrote the same store"
    );
    assert!(
        registry::open_handles().is_empty(),
        "every key handle closed"
    );
    sim.finish().expect("nothing left behind, no violation");
}

/// What an older driver (or a partial write) left under the driver's own
/// keys, and what another extension owns.
fn write_stale_entries() {
    let program = format!("{HKLM_STORE}\\ProgramData\\{PROCESS_TYPE_KEY}");
    // A helper the driver no longer provides, nested junk, a value no
    // longer written.
    let old = format!("{program}\\Helpers\\bpf_process_removed_helper");
    registry::set_value(&old, "Version", REG_DWORD, &1u32.to_le_bytes());
    registry::set_value(&old, "Prototype", REG_BINARY, &[0; 28]);
    registry::create_key(&format!("{program}\\Helpers\\junk\\deeper\\deepest"));
    registry::set_value(
        &format!("{program}\\TypeDescriptor"),
        "Obsolete",
        REG_DWORD,
        &7u32.to_le_bytes(),
    );
    registry::set_value(&program, "HelperCount", REG_DWORD, &4u32.to_le_bytes());
    // A section renamed since (points at our type): removed.
    let renamed = format!("{HKLM_STORE}\\SectionData\\process_old");
    registry::set_value(&renamed, "ProgramType", REG_BINARY, &PROCESS_TYPE_BYTES);
    registry::set_value(&renamed, "AttachType", REG_BINARY, &PROCESS_ATTACH_BYTES);
    registry::create_key(&format!("{renamed}\\child"));
    // The same for a type without helpers: a renamed section, and a
    // Helpers key (with a helper) that the type no longer has.
    let renamed = format!("{HKLM_STORE}\\SectionData\\image_old");
    registry::set_value(&renamed, "ProgramType", REG_BINARY, &IMAGE_LOAD_TYPE_BYTES);
    registry::set_value(&renamed, "AttachType", REG_BINARY, &IMAGE_LOAD_ATTACH_BYTES);
    let thread_helper =
        format!("{HKLM_STORE}\\ProgramData\\{THREAD_TYPE_KEY}\\Helpers\\bpf_thread_removed_helper");
    registry::set_value(&thread_helper, "Prototype", REG_BINARY, &[0; 28]);
    // Our section with a stale value: rewritten.
    registry::set_value(
        &format!("{HKLM_STORE}\\SectionData\\process"),
        "Stale",
        REG_SZ,
        &registry::sz("x"),
    );
    write_foreign_entries();
}

/// Another extension's entries: never touched.
fn write_foreign_entries() {
    let other = format!("{HKLM_STORE}\\SectionData\\xdp");
    registry::set_value(&other, "ProgramType", REG_BINARY, &[0x11; 16]);
    registry::set_value(&other, "AttachType", REG_BINARY, &[0x22; 16]);
    let not_guid = format!("{HKLM_STORE}\\SectionData\\weird");
    registry::set_value(&not_guid, "ProgramType", REG_BINARY, &[1; 20]);
    let other_type = format!("{HKLM_STORE}\\ProgramData\\{{11111111-1111-1111-1111-111111111111}}");
    registry::set_value(&other_type, "Version", REG_DWORD, &1u32.to_le_bytes());
}

fn foreign_keys() -> [String; 3] {
    [
        "SectionData\\xdp".to_string(),
        "SectionData\\weird".to_string(),
        "ProgramData\\{11111111-1111-1111-1111-111111111111}".to_string(),
    ]
}

#[test]
fn stale_entries_under_the_drivers_keys_are_removed_and_others_kept() {
    let mut sim = Sim::new();
    write_stale_entries();
    load(&mut sim);
    let mut actual = tree(HKLM_STORE);
    for k in foreign_keys() {
        assert!(
            actual.remove(&k).is_some(),
            "{k} is another extension's: kept"
        );
    }
    for parent in ["SectionData", "ProgramData"] {
        actual.get_mut(parent).unwrap().subkeys.retain(|s| {
            !foreign_keys()
                .iter()
                .any(|f| f.ends_with(&format!("\\{s}")))
        });
    }
    assert_eq!(actual, expected_tree());
    sim.finish().expect("nothing left behind, no violation");
}

/// The store read back as ebpfapi.dll would read it holds nothing wrong:
/// every section and program type it accepts is exactly the driver's.
fn assert_nothing_misread(context: &str) {
    let store = Store::read_root(HKLM_STORE);
    for s in &store.sections {
        match s.prefix.as_str() {
            "process" => {
                assert_eq!(
                    store::guid_bytes(&s.program_type),
                    PROCESS_TYPE_BYTES,
                    "{context}"
                );
                assert_eq!(
                    store::guid_bytes(&s.attach_type),
                    PROCESS_ATTACH_BYTES,
                    "{context}"
                );
                assert_eq!((s.bpf_prog_type, s.bpf_attach_type), (6, 11), "{context}");
            }
            "thread" | "image_load" => {
                let expected = if s.prefix == "thread" {
                    (THREAD_TYPE_BYTES, THREAD_ATTACH_BYTES)
                } else {
                    (IMAGE_LOAD_TYPE_BYTES, IMAGE_LOAD_ATTACH_BYTES)
                };
                assert_eq!(
                    (
                        store::guid_bytes(&s.program_type),
                        store::guid_bytes(&s.attach_type)
                    ),
                    expected,
                    "{context}"
                );
                assert_eq!((s.bpf_prog_type, s.bpf_attach_type), (0, 0), "{context}");
            }
            // The complete entries an older driver wrote, not yet removed.
            "process_old" | "image_old" => {
                let expected = if s.prefix == "process_old" {
                    PROCESS_TYPE_BYTES
                } else {
                    IMAGE_LOAD_TYPE_BYTES
                };
                assert_eq!(store::guid_bytes(&s.program_type), expected, "{context}");
                assert_eq!((s.bpf_prog_type, s.bpf_attach_type), (0, 0), "{context}");
            }
            "xdp" => {}
            other => panic!("{context}: section {other:?} read"),
        }
    }
    for p in &store.programs {
        let (name, helpers, size, data) = match store::guid_key_name(&p.program_type).as_str() {
            PROCESS_TYPE_KEY => ("process", 3, 144, 0),
            THREAD_TYPE_KEY => ("thread", 0, 56, -1),
            IMAGE_LOAD_TYPE_KEY => ("image_load", 0, 56, 0),
            other => panic!("{context}: program type {other} read"),
        };
        assert_eq!(p.name, name, "{context}");
        assert_eq!((p.version, p.size), (1, 64), "{context}");
        assert_eq!(p.helpers.len(), helpers, "{context}: {name}");
        assert_eq!((p.context.size, p.context.data), (size, data), "{context}");
    }
}

/// One driver load in a sweep: its status, whether the planned failure
/// fired during it, and whether the store failure was logged.
fn sweep_load(sim: &mut Sim, image: &std::path::Path) -> (i32, bool, bool) {
    let before = fault::fired().len();
    log::take_dbg_messages();
    let status = sim.load_driver(image).expect("the image loads");
    let fired = fault::fired().len() > before;
    let logged = log::dbg_messages()
        .iter()
        .any(|m| m.text.contains("writing the eBPF store failed: 0xc000009a"));
    (status, fired, logged)
}

#[test]
fn every_registry_failure_is_logged_and_leaves_nothing_misread() {
    let image = driver_image();
    for stale in [false, true] {
        let covered = sim::sweep(|injection| {
            let mut sim = Sim::new();
            if stale {
                write_stale_entries();
            }
            if let Some(i) = injection {
                fault::fail_nth(&i.api, i.call);
            }
            let zw = injection.is_some_and(|i| i.api.starts_with("Zw"));
            // A first load, then a second one (which repairs whatever a
            // failure in the first left); the planned failure happens in
            // one of them at most.
            for round in ["load", "reload"] {
                let context = format!("stale {stale}, {injection:?}, {round}");
                let (status, fired, logged) = sweep_load(&mut sim, &image);
                if status < 0 {
                    assert!(fired && !zw, "{context}: DriverEntry failed: {status:#x}");
                    continue;
                }
                assert_eq!(logged, fired && zw, "{context}: the failure is logged");
                assert_nothing_misread(&context);
                if !(fired && zw) {
                    assert_store_is_expected_with_foreign(&context, stale);
                }
                sim.unload_driver().unwrap();
            }
            if let Err(findings) = sim.finish() {
                panic!("stale {stale}, {injection:?}: {findings}");
            }
        });
        let apis: Vec<&str> = covered.iter().map(|i| i.api.as_str()).collect();
        for api in [
            "ZwCreateKey",
            "ZwOpenKey",
            "ZwSetValueKey",
            "ZwDeleteKey",
            "ZwEnumerateKey",
        ] {
            assert!(
                apis.contains(&api),
                "stale {stale}: {api} not covered: {apis:?}"
            );
        }
        // Only a section the driver does not provide is queried.
        assert_eq!(apis.contains(&"ZwQueryValueKey"), stale, "{apis:?}");
    }
}

fn assert_store_is_expected_with_foreign(context: &str, foreign: bool) {
    if !foreign {
        assert_store_is_expected(context);
        return;
    }
    let mut actual = tree(HKLM_STORE);
    for k in foreign_keys() {
        assert!(actual.remove(&k).is_some(), "{context}: {k} kept");
    }
    for parent in ["SectionData", "ProgramData"] {
        actual.get_mut(parent).unwrap().subkeys.retain(|s| {
            !foreign_keys()
                .iter()
                .any(|f| f.ends_with(&format!("\\{s}")))
        });
    }
    assert_eq!(actual, expected_tree(), "{context}");
}

#[test]
fn a_program_loads_purely_through_the_store() {
    let mut sim = Sim::new();
    load(&mut sim);
    let object = Object::load(
        &std::fs::read(hook::sample_object_path()).unwrap(),
        &store::section_map(),
    )
    .expect("process_test.o's section resolves through the store");
    let program = object.program("monitor").unwrap().clone();
    let program_type = program.program_type.expect("resolved");
    let attach_type = program.attach_type.expect("resolved");
    assert_eq!(store::guid_bytes(&program_type), PROCESS_TYPE_BYTES);
    let loaded = LoadedProgram::load(program).expect("the driver provides the type");
    let published = loaded.program_info().expect("bound");
    let link = loaded.attach(attach_type, &[], 0).expect("attached");
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\store.exe".into(),
        command_line: Some("store.exe".into()),
        user_sid: Some(ps::test_user_sid()),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    assert_eq!(object.map("events").unwrap().drain_ring().len(), 1);
    drop(link);
    drop(loaded);
    ntsim::io::wait_idle();
    sim.unload_driver().unwrap();

    // With the extension gone, program information comes from the store:
    // the same as what the driver published through NMR.
    assert_store_matches_nmr(&program_type, &published);
    sim.finish().expect("nothing left behind, no violation");
}

/// The store's program information of `program_type` is what the driver
/// published through NMR (`published`).
fn assert_store_matches_nmr(
    program_type: &ntsim::types::GUID,
    published: &ntsim::ebpf::validate::ProgramInfo,
) {
    let store = Store::read();
    let info = store.program_info(program_type).expect("in the store");
    let d = &published.type_descriptor;
    assert_eq!(info.name, d.name);
    assert_eq!(info.bpf_prog_type, d.bpf_prog_type);
    assert_eq!(info.is_privileged, d.is_privileged);
    let c = &d.context_descriptor;
    assert_eq!(
        (
            info.context.size,
            info.context.data,
            info.context.end,
            info.context.meta
        ),
        (c.size, c.data, c.end, c.meta)
    );
    let mut from_nmr: Vec<_> = published
        .type_specific_helpers
        .iter()
        .map(|h| {
            let p = &h.prototype;
            (
                p.name.clone(),
                p.helper_id,
                p.return_type,
                p.arguments,
                p.reallocate_packet,
            )
        })
        .collect();
    let mut from_store: Vec<_> = info
        .helpers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                h.helper_id,
                h.return_type,
                h.arguments,
                h.reallocate_packet,
            )
        })
        .collect();
    from_nmr.sort();
    from_store.sort();
    assert_eq!(from_store, from_nmr, "{}", info.name);
}

#[test]
fn thread_and_image_load_programs_load_purely_through_the_store() {
    let mut sim = Sim::new();
    load(&mut sim);
    let object = Object::load(
        &std::fs::read(ntsim::thread::sample_object_path()).unwrap(),
        &store::section_map(),
    )
    .expect("sysmon.o's sections resolve through the store");
    let mut published = Vec::new();
    let mut kept = Vec::new();
    for (name, program_type, attach_type, type_bytes, attach_bytes) in [
        (
            "thread_monitor",
            ntsim::thread::PROGRAM_TYPE,
            ntsim::thread::ATTACH_TYPE,
            THREAD_TYPE_BYTES,
            THREAD_ATTACH_BYTES,
        ),
        (
            "image_monitor",
            ntsim::image_load::PROGRAM_TYPE,
            ntsim::image_load::ATTACH_TYPE,
            IMAGE_LOAD_TYPE_BYTES,
            IMAGE_LOAD_ATTACH_BYTES,
        ),
    ] {
        let program = object.program(name).unwrap().clone();
        let resolved = (
            program.program_type.expect("resolved"),
            program.attach_type.expect("resolved"),
        );
        assert_eq!(resolved, (program_type, attach_type), "{name}");
        assert_eq!(
            (
                store::guid_bytes(&resolved.0),
                store::guid_bytes(&resolved.1)
            ),
            (type_bytes, attach_bytes),
            "{name}"
        );
        let loaded = LoadedProgram::load(program).expect("the driver provides the type");
        published.push((program_type, loaded.program_info().expect("bound")));
        let link = loaded.attach(attach_type, &[], 0).expect("attached");
        kept.push((loaded, link));
    }
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\store.exe".into(),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    let tid = ps::thread::create_thread(&ps::thread::ThreadSpec {
        process: p.pid,
        creator: None,
        creating_thread: None,
        start_address: 0x1000,
    });
    assert!(ps::thread::exit_thread(tid, 0));
    ps::image::load_user_image(
        p.pid,
        &ps::image::ImageSpec {
            path: "\\Device\\HarddiskVolume3\\store.exe".into(),
            base: 0x7ff6_0000_0000,
            size: 0x1000,
            ..Default::default()
        },
    );
    assert_eq!(
        object.map("threads").unwrap().drain_ring().len(),
        2,
        "thread_monitor saw the create and the exit"
    );
    assert_eq!(
        object.map("images").unwrap().drain_ring().len(),
        1,
        "image_monitor saw the image"
    );
    assert!(ps::exit_process(p.pid, 0, None));
    drop(kept);
    ntsim::io::wait_idle();
    sim.unload_driver().unwrap();
    for (program_type, info) in &published {
        assert_store_matches_nmr(program_type, info);
    }
    sim.finish().expect("nothing left behind, no violation");
}

#[test]
fn an_unknown_section_is_refused_naming_it_and_the_registered_ones() {
    let mut sim = Sim::new();
    load(&mut sim);
    let maps = hook::sample_object_path().with_file_name("maps.o");
    let err = Object::load(&std::fs::read(maps).unwrap(), &store::section_map()).unwrap_err();
    assert_eq!(
        err,
        ObjectError::UnknownSection {
            section: "sample".into(),
            registered: vec!["image_load".into(), "process".into(), "thread".into()],
        }
    );
    assert_eq!(
        err.to_string(),
        "section \"sample\" is not in the eBPF store \
         (registered sections: image_load, process, thread)"
    );
    sim.finish().expect("nothing left behind, no violation");
}

#[test]
fn an_hkcu_store_hides_the_drivers_hklm_store() {
    let mut sim = Sim::new();
    load(&mut sim);
    let bytes = std::fs::read(hook::sample_object_path()).unwrap();
    assert!(Object::load(&bytes, &store::section_map()).is_ok());
    // What the old export tool leaves for the user who ran it: an HKCU
    // store (here empty of our section). eBPF for Windows then reads only
    // HKCU.
    registry::create_key(&format!("{}\\SectionData", store::hkcu_store()));
    let store = Store::read();
    assert_eq!(store.root, store::hkcu_store());
    assert!(matches!(
        Object::load(&bytes, &store.section_map()),
        Err(ObjectError::UnknownSection { registered, .. }) if registered.is_empty()
    ));
    sim.finish().expect("nothing left behind, no violation");
}

#[test]
fn the_reader_skips_what_upstream_skips() {
    let _sim = Sim::new();
    let s = format!("{HKLM_STORE}\\SectionData");
    // ProgramType missing (a write that stopped before its last value).
    registry::set_value(&format!("{s}\\half"), "AttachType", REG_BINARY, &[1; 16]);
    // Longer than 37 characters.
    let long = "a".repeat(38);
    registry::set_value(&format!("{s}\\{long}"), "ProgramType", REG_BINARY, &[1; 16]);
    registry::set_value(&format!("{s}\\{long}"), "AttachType", REG_BINARY, &[1; 16]);
    // Complete, BpfProgType/BpfAttachType absent: read as 0.
    registry::set_value(&format!("{s}\\ok"), "ProgramType", REG_BINARY, &[1; 16]);
    registry::set_value(&format!("{s}\\ok"), "AttachType", REG_BINARY, &[2; 16]);
    // A program type whose HelperCount is missing.
    let p = format!("{HKLM_STORE}\\ProgramData\\{PROCESS_TYPE_KEY}");
    registry::set_value(&p, "Version", REG_DWORD, &1u32.to_le_bytes());
    registry::set_value(&p, "Size", REG_DWORD, &64u32.to_le_bytes());
    let store = Store::read();
    let prefixes: Vec<&str> = store.sections.iter().map(|s| s.prefix.as_str()).collect();
    assert_eq!(prefixes, ["ok"]);
    assert_eq!(
        (
            store.sections[0].bpf_prog_type,
            store.sections[0].bpf_attach_type
        ),
        (0, 0)
    );
    assert!(store.programs.is_empty());
    assert_eq!(store.skipped.len(), 3, "{:?}", store.skipped);
}

/// docs/installing.md's commands (copy into HKCU, delete from HKLM and
/// HKCU) name exactly the store keys the drivers write at load, so a new
/// program type, section or driver cannot be forgotten there.
#[test]
fn installing_md_copies_and_deletes_every_key_the_drivers_write() {
    // Every driver of the repository, each alone in a fresh kernel.
    let mut written: Vec<String> = Vec::new();
    for name in ntsim::build::DRIVERS {
        let mut sim = Sim::new();
        let image = ntsim::build::driver_image_named(name);
        assert_eq!(sim.load_driver(&image).unwrap(), 0, "{name}");
        written.extend(["ProgramData", "SectionData"].iter().flat_map(|parent| {
            registry::subkeys(&format!("{HKLM_STORE}\\{parent}"))
                .into_iter()
                .map(move |k| format!("{parent}\\{k}"))
        }));
        sim.finish().expect("nothing left behind");
    }
    written.sort();
    assert!(!written.is_empty());
    let doc =
        std::fs::read_to_string(ntsim::build::workspace_root().join("docs/installing.md")).unwrap();
    let store = "Software\\eBPF\\Providers\\";
    // The key each command of one kind names, in the order of the file.
    let named = |prefix: &str, suffix: &str| -> Vec<String> {
        let mut keys: Vec<String> = doc
            .lines()
            .filter_map(|l| l.trim().strip_prefix(prefix))
            .filter_map(|rest| rest.strip_suffix(suffix))
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    };
    let copied: Vec<String> = {
        let mut keys: Vec<String> = doc
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&*format!("reg copy \"HKLM\\{store}")))
            .map(|rest| {
                let (key, to) = rest.split_once("\" ").expect("reg copy FROM TO");
                assert_eq!(
                    to,
                    format!("\"HKCU\\{store}{key}\" /s /f"),
                    "the copy goes to the same key under HKCU, with /s /f"
                );
                key.to_string()
            })
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(copied, written, "reg copy HKLM -> HKCU");
    assert_eq!(
        named(&format!("reg delete \"HKLM\\{store}"), "\" /f"),
        written,
        "reg delete HKLM"
    );
    assert_eq!(
        named(&format!("reg delete \"HKCU\\{store}"), "\" /f"),
        written,
        "reg delete HKCU"
    );
}

// ---------------------------------------------------------------------------
// neteventebpfext: the same store helper layout for its one program type.

const NETEVENT_TYPE_KEY: &str = "{fc4adc85-49c3-4f0a-8393-facce89cde91}";
/// `EBPF_PROGRAM_TYPE_NETEVENT` as the 16 bytes of its `GUID`.
const NETEVENT_TYPE_BYTES: [u8; 16] = [
    0x85, 0xdc, 0x4a, 0xfc, 0xc3, 0x49, 0x0a, 0x4f, 0x83, 0x93, 0xfa, 0xcc, 0xe8, 0x9c, 0xde, 0x91,
];
/// `EBPF_ATTACH_TYPE_NETEVENT` (68011b08-ab6b-4b46-85e4-67bae1afe741).
const NETEVENT_ATTACH_BYTES: [u8; 16] = [
    0x08, 0x1b, 0x01, 0x68, 0x6b, 0xab, 0x46, 0x4b, 0x85, 0xe4, 0x67, 0xba, 0xe1, 0xaf, 0xe7, 0x41,
];

/// What eBPF for Windows' store helper writes for neteventebpfext's
/// program type (`netevent_monitor`) and its section, under `Providers`.
fn netevent_tree() -> BTreeMap<String, KeyContent> {
    let program = format!("ProgramData\\{NETEVENT_TYPE_KEY}");
    let mut t = BTreeMap::new();
    t.insert(String::new(), key(&[], &["ProgramData", "SectionData"]));
    t.insert("ProgramData".into(), key(&[], &[NETEVENT_TYPE_KEY]));
    t.insert(
        program.clone(),
        key(
            &[("Version", dw(1)), ("Size", dw(64)), ("HelperCount", dw(1))],
            &["TypeDescriptor", "Helpers"],
        ),
    );
    t.insert(
        format!("{program}\\TypeDescriptor"),
        key(
            &[
                ("Version", dw(1)),
                ("Size", dw(61)),
                ("Name", (REG_SZ, sz("netevent_monitor"))),
                // ebpf_context_descriptor_t { sizeof(netevent_event_md_t)
                // = 24, offsetof(data) = 8, offsetof(data_end) = 16,
                // offsetof(data_meta) = 0 }.
                ("ContextDescriptor", bin(&le32s(&[24, 8, 16, 0]))),
                // BPF_PROG_TYPE_NETEVENT.
                ("BpfProgType", dw(5)),
                ("IsPrivileged", dw(0)),
            ],
            &[],
        ),
    );
    t.insert(
        format!("{program}\\Helpers"),
        key(&[], &["bpf_netevent_push_event"]),
    );
    // EBPF_MAX_GENERAL_HELPER_FUNCTION + 1, EBPF_RETURN_TYPE_INTEGER,
    // (PTR_TO_CTX, DONTCARE x 4).
    let prototype = le32s(&[0x10000, 0, 4, 0, 0, 0, 0]);
    t.insert(
        format!("{program}\\Helpers\\bpf_netevent_push_event"),
        key(
            &[
                ("Version", dw(1)),
                ("Size", dw(66)),
                ("Prototype", bin(&prototype)),
                ("ReallocatePacket", dw(0)),
            ],
            &[],
        ),
    );
    t.insert("SectionData".into(), key(&[], &["netevent_monitor"]));
    // BPF_PROG_TYPE_NETEVENT 5, BPF_ATTACH_TYPE_NETEVENT 10.
    t.insert(
        "SectionData\\netevent_monitor".into(),
        section_key(&NETEVENT_TYPE_BYTES, &NETEVENT_ATTACH_BYTES, (5, 10)),
    );
    t
}

/// The store holds exactly `expected` (paths relative to `Providers`).
fn assert_store_is(expected: &BTreeMap<String, KeyContent>, context: &str) {
    let actual = tree(HKLM_STORE);
    for (path, content) in expected {
        assert_eq!(
            actual.get(path),
            Some(content),
            "{context}: key Providers\\{path}"
        );
    }
    let extra: Vec<&String> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(extra.is_empty(), "{context}: unexpected keys {extra:?}");
}

fn load_netevent(sim: &mut Sim) {
    load_image(sim, &ntsim::build::driver_image_named("neteventebpfext"));
}

#[test]
fn neteventebpfext_writes_exactly_what_the_store_helper_writes() {
    let mut sim = Sim::new();
    load_netevent(&mut sim);
    assert_store_is(&netevent_tree(), "after load");
    let first = store::dump(HKLM_STORE);
    sim.unload_driver().unwrap();
    assert_store_is(&netevent_tree(), "after unload");
    load_netevent(&mut sim);
    assert_eq!(store::dump(HKLM_STORE), first, "the reload rewrote it");
    assert!(
        registry::open_handles().is_empty(),
        "every key handle closed"
    );
    sim.finish().expect("nothing left behind, no violation");
}

/// Both drivers write into one store: neither removes the other's keys
/// (each cleans only what is under its own program types and sections).
#[test]
fn both_drivers_share_the_store() {
    let mut sim = Sim::new();
    load(&mut sim);
    sim.unload_driver().unwrap();
    load_netevent(&mut sim);
    let mut both = expected_tree();
    for (path, content) in netevent_tree() {
        match both.get_mut(&path) {
            Some(shared) => {
                // The roots: the subkeys of both.
                shared.subkeys.extend(content.subkeys);
                shared.subkeys.sort();
                shared.subkeys.dedup();
            }
            None => {
                both.insert(path, content);
            }
        }
    }
    assert_store_is(&both, "ntosebpfext, then neteventebpfext");
    sim.unload_driver().unwrap();
    load(&mut sim);
    assert_store_is(&both, "and ntosebpfext again");
    sim.finish().expect("nothing left behind, no violation");
}

#[test]
fn a_netevent_program_loads_purely_through_the_store() {
    use ntsim::hook::netevent as netevent_hook;
    use ntsim::netevent::{self as providers, DeliveryIrql, Event};
    let mut sim = Sim::new();
    load_netevent(&mut sim);
    let bytes = std::fs::read(ntsim::build::workspace_root().join("tests/bpf/netevent_monitor.o"))
        .expect("tests/bpf/netevent_monitor.o");
    let object = Object::load(&bytes, &store::section_map())
        .expect("netevent_monitor.o's section resolves through the store");
    let program = object.program("monitor_netevents").unwrap().clone();
    let program_type = program.program_type.expect("resolved");
    let attach_type = program.attach_type.expect("resolved");
    assert_eq!(store::guid_bytes(&program_type), NETEVENT_TYPE_BYTES);
    assert_eq!(store::guid_bytes(&attach_type), NETEVENT_ATTACH_BYTES);
    let loaded = LoadedProgram::load(program).expect("the driver provides the type");
    let published = loaded.program_info().expect("bound");
    providers::register_provider(1).unwrap();
    let link = loaded
        .attach(attach_type, &providers::CAPTURE_ALL.to_le_bytes(), 0)
        .expect("attached");
    let event = Event::new(providers::EVENT_TYPE_DROP, b"store");
    providers::deliver(Some(1), &event, DeliveryIrql::Passive).unwrap();
    assert_eq!(
        object.map(netevent_hook::MONITOR_MAP).unwrap().drain_ring(),
        vec![netevent_hook::monitor_record(event.bytes())]
    );
    drop(link);
    drop(loaded);
    ntsim::io::wait_idle();
    sim.unload_driver().unwrap();
    // With the extension gone, program information comes from the store:
    // the same as what the driver published through NMR.
    assert_store_matches_nmr(&program_type, &published);
    drop(object);
    sim.finish().expect("nothing left behind, no violation");
}
