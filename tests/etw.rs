//! The drivers' ETW tracing (libs/ebpf_ext/src/trace.rs): the real images
//! in ntsim, which plays the trace session (enable callbacks with a level
//! and keywords) and decodes every TraceLogging event into its name and
//! typed fields. ntosebpfext's provider first, neteventebpfext's at the end.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use ntsim::build::driver_image;
use ntsim::ebpf::abi::{EBPF_HOOK_EXTENSION_IID, EBPF_PROGRAM_INFO_EXTENSION_IID};
use ntsim::ebpf::core::LoadedProgram;
use ntsim::ebpf::Object;
use ntsim::hook::host_client::{Config, HostClient};
use ntsim::log::{self, etw::TlEvent};
use ntsim::nmr;
use ntsim::process::{self as hook, STATUS_ACCESS_DENIED};
use ntsim::ps::{self, ProcessSpec};
use ntsim::status::{STATUS_PENDING, STATUS_SUCCESS};
use ntsim::types::GUID;
use ntsim::{fault, Sim};
use std::time::{Duration, Instant};

/// `NtosEbpfExtProvider`, the C driver's GUID.
const PROVIDER: GUID = ntsim::hook::ETW_PROVIDER;
const VERBOSE: u8 = 5;
const KEYWORD_BASE: u64 = 0x2;
const KEYWORD_EXTENSION: u64 = 0x4;
const KEYWORD_PROCESS: u64 = 0x80;
const KEYWORD_HOOK_EVENTS: u64 = 0x1_0000_0000;
/// Every keyword but the per-event records.
const ALL_BUT_HOOK_EVENTS: u64 = !KEYWORD_HOOK_EVENTS;
const STATUS_INSUFFICIENT_RESOURCES: i32 = 0xC000_009Au32 as i32;

fn load(sim: &mut Sim) {
    assert_eq!(sim.load_driver(&driver_image()).unwrap(), 0, "DriverEntry");
}

fn object() -> Object {
    let bytes = std::fs::read(hook::sample_object_path()).unwrap();
    Object::load(&bytes, &ntsim::ebpf::store::section_map()).unwrap()
}

fn program(object: &Object, name: &str) -> LoadedProgram {
    LoadedProgram::load(object.program(name).unwrap().clone()).unwrap()
}

/// The one event named `name` (fails when there are none or several).
fn one(name: &str) -> TlEvent {
    let mut found = log::tl_events_named(name);
    assert_eq!(found.len(), 1, "exactly one {name}: {found:#?}");
    found.remove(0)
}

fn names() -> Vec<String> {
    log::tl_events().into_iter().map(|e| e.name).collect()
}

/// Waits (at most 10 s) until no work item is queued or running.
fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ntsim::io::in_flight() != 0 {
        assert!(
            Instant::now() < deadline,
            "work items still running after 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn load_attach_detach_and_unload_are_traced_with_typed_fields() {
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    load(&mut sim);

    let providers = log::etw_providers();
    assert_eq!(providers.len(), 1, "{providers:?}");
    assert_eq!(providers[0].guid, PROVIDER);
    assert_eq!(providers[0].name.as_deref(), Some("NtosEbpfExtProvider"));

    let load = one("DriverLoad");
    assert_eq!(load.provider_name, "NtosEbpfExtProvider");
    assert_eq!(load.str("Version"), Some(ntosebpfext::VERSION));
    assert_eq!(load.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!((load.level, load.keyword), (4, KEYWORD_BASE));
    assert!(load.enabled);
    let registered = log::tl_events_named("ProviderRegister");
    let ids: Vec<(GUID, GUID, Option<i32>)> = registered
        .iter()
        .map(|e| {
            (
                e.guid("NpiId").unwrap(),
                e.guid("ModuleId").unwrap(),
                e.status("Status"),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            (EBPF_PROGRAM_INFO_EXTENSION_IID, hook::PROGRAM_TYPE, Some(0)),
            (EBPF_HOOK_EXTENSION_IID, hook::ATTACH_TYPE, Some(0)),
            (
                EBPF_PROGRAM_INFO_EXTENSION_IID,
                ntsim::thread::PROGRAM_TYPE,
                Some(0)
            ),
            (EBPF_HOOK_EXTENSION_IID, ntsim::thread::ATTACH_TYPE, Some(0)),
            (
                EBPF_PROGRAM_INFO_EXTENSION_IID,
                ntsim::image_load::PROGRAM_TYPE,
                Some(0)
            ),
            (
                EBPF_HOOK_EXTENSION_IID,
                ntsim::image_load::ATTACH_TYPE,
                Some(0)
            ),
        ]
    );
    assert_eq!(registered[0].keyword, KEYWORD_EXTENSION);
    log::take_etw_events();

    let object = object();
    let deny = program(&object, "deny_notepad");
    let link = deny.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let hook_binding = nmr::bindings()
        .into_iter()
        .find(|b| b.npi_id == EBPF_HOOK_EXTENSION_IID)
        .expect("the link's binding");
    let attaches = log::tl_events_named("ClientAttach");
    let attach = attaches
        .iter()
        .find(|e| e.guid("NpiId") == Some(EBPF_HOOK_EXTENSION_IID))
        .unwrap_or_else(|| panic!("a hook ClientAttach: {attaches:#?}"));
    assert_eq!(attach.guid("ModuleId"), Some(hook::ATTACH_TYPE));
    assert_eq!(
        attach.guid("ClientModuleId"),
        Some(hook_binding.client_module)
    );
    assert_eq!(attach.uint("Binding"), Some(hook_binding.handle as u64));
    assert_eq!(attach.status("Status"), Some(STATUS_SUCCESS));
    assert!(
        attaches
            .iter()
            .any(|e| e.guid("ModuleId") == Some(hook::PROGRAM_TYPE)),
        "the program's program-information attach: {attaches:#?}"
    );
    let callback = one("CallbackRegister");
    assert_eq!(callback.str("Hook"), Some("process"));
    assert_eq!(callback.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!(callback.keyword, KEYWORD_PROCESS);

    // Per-event records: not written at all while their keyword is off.
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\notepad.exe".into(),
        ..Default::default()
    });
    assert_eq!(p.creation_status, STATUS_ACCESS_DENIED);
    assert_eq!(log::tl_events_named("HookEvent"), []);
    assert!(
        log::etw_events()
            .iter()
            .all(|e| e.descriptor.Keyword != KEYWORD_HOOK_EVENTS),
        "no per-event write reached ETW"
    );

    // With it: one verbose record per event, with its verdict.
    log::etw_enable(&PROVIDER, VERBOSE, KEYWORD_HOOK_EVENTS, 0);
    let denied = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\notepad.exe".into(),
        ..Default::default()
    });
    let allowed = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\a.exe".into(),
        ..Default::default()
    });
    assert!(ps::exit_process(allowed.pid, 3, None));
    let records = log::tl_events_named("HookEvent");
    let seen: Vec<(u64, u64, u64, i64)> = records
        .iter()
        .map(|e| {
            assert_eq!((e.level, e.keyword), (VERBOSE, KEYWORD_HOOK_EVENTS));
            assert_eq!(e.str("Hook"), Some("process"));
            (
                e.uint("Operation").unwrap(),
                e.uint("Id").unwrap(),
                e.uint("ProgramsRun").unwrap(),
                e.int("Verdict").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, denied.pid as u64, 1, STATUS_ACCESS_DENIED as i64),
            (0, allowed.pid as u64, 1, 0),
            (1, allowed.pid as u64, 1, 0),
        ]
    );
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    log::take_etw_events();

    drop(link);
    settle();
    let detach = one("ClientDetach");
    assert_eq!(detach.guid("ModuleId"), Some(hook::ATTACH_TYPE));
    assert_eq!(
        detach.guid("ClientModuleId"),
        Some(hook_binding.client_module)
    );
    assert_eq!(detach.uint("Binding"), Some(hook_binding.handle as u64));
    assert_eq!(
        detach.status("Status"),
        Some(STATUS_SUCCESS),
        "completed at once"
    );
    let cleanup = one("ClientCleanup");
    assert_eq!(cleanup.uint("Binding"), Some(hook_binding.handle as u64));
    let removed = one("CallbackRemove");
    assert_eq!(removed.str("Hook"), Some("process"));
    assert_eq!(removed.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!(log::tl_events_named("ClientDetachComplete"), []);
    drop((deny, object));
    log::take_etw_events();

    sim.unload_driver().unwrap();
    let deregistered = log::tl_events_named("ProviderDeregister");
    assert_eq!(deregistered.len(), 6, "two per hook: {deregistered:#?}");
    assert!(deregistered.iter().all(|e| e.status("Status") == Some(0)));
    assert_eq!(
        names().last().map(String::as_str),
        Some("DriverUnload"),
        "the last event before the provider goes"
    );
    assert_eq!(
        one("DriverUnload").str("Version"),
        Some(ntosebpfext::VERSION)
    );
    assert!(log::etw_providers().is_empty(), "unregistered at unload");
    sim.finish().unwrap();
}

#[test]
fn nothing_is_written_while_no_session_listens() {
    let mut sim = Sim::new();
    load(&mut sim);
    let object = object();
    let deny = program(&object, "deny_notepad");
    let link = deny.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\notepad.exe".into(),
        ..Default::default()
    });
    assert_eq!(p.creation_status, STATUS_ACCESS_DENIED);
    drop((link, deny, object));
    settle();
    sim.unload_driver().unwrap();
    assert_eq!(
        log::etw_events(),
        [],
        "no EtwWriteTransfer without a session"
    );
    sim.finish().unwrap();
}

#[test]
fn a_session_gets_only_the_levels_and_keywords_it_asked_for() {
    let mut sim = Sim::new();
    // Errors only, every keyword: a clean load writes nothing.
    log::etw_enable(&PROVIDER, 2, u64::MAX, 0);
    load(&mut sim);
    assert_eq!(names(), Vec::<String>::new());
    // Info, BASE only: the NMR events (EXTENSION) stay off.
    log::etw_enable(&PROVIDER, 4, KEYWORD_BASE, 0);
    let object = object();
    let deny = program(&object, "deny_notepad");
    let link = deny.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    assert_eq!(names(), Vec::<String>::new());
    // Disabled: nothing, even for BASE at unload.
    drop((link, deny, object));
    settle();
    log::etw_disable(&PROVIDER);
    sim.unload_driver().unwrap();
    assert_eq!(log::etw_events(), []);
    sim.finish().unwrap();
}

#[test]
fn api_failures_are_traced_with_the_api_name_and_status() {
    // A failed notify registration fails the attach.
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    load(&mut sim);
    let object = object();
    let mark = program(&object, "mark_a");
    log::take_etw_events();
    fault::fail_nth("PsSetCreateProcessNotifyRoutineEx", 1);
    assert!(mark.attach(hook::ATTACH_TYPE, &[], 0).is_err());
    let failure = one("ApiFailure");
    assert_eq!(
        failure.str("Api"),
        Some("PsSetCreateProcessNotifyRoutineEx")
    );
    assert_eq!(
        failure.status("Status"),
        Some(STATUS_INSUFFICIENT_RESOURCES)
    );
    assert_eq!((failure.level, failure.keyword), (2, KEYWORD_PROCESS));
    let callback = one("CallbackRegister");
    assert_eq!(
        callback.status("Status"),
        Some(STATUS_INSUFFICIENT_RESOURCES)
    );
    assert_eq!(callback.level, 2);
    let attach = log::tl_events_named("ClientAttach")
        .into_iter()
        .find(|e| e.guid("ModuleId") == Some(hook::ATTACH_TYPE))
        .expect("the hook attach");
    assert_eq!(attach.status("Status"), Some(STATUS_INSUFFICIENT_RESOURCES));
    let dbg: Vec<String> = log::dbg_messages().into_iter().map(|m| m.text).collect();
    assert!(
        dbg.iter()
            .any(|t| t.contains("registering the process callback failed: 0xc000009a")),
        "the DbgPrintEx line says the same: {dbg:?}"
    );
    drop((mark, object));
    sim.unload_driver().unwrap();
    sim.finish().unwrap();

    // A failed NMR registration fails the load; the provider still goes.
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    fault::fail_nth("NmrRegisterProvider", 2);
    assert_eq!(
        sim.load_driver(&driver_image()).unwrap(),
        STATUS_INSUFFICIENT_RESOURCES
    );
    let failure = one("ApiFailure");
    assert_eq!(failure.str("Api"), Some("NmrRegisterProvider"));
    assert_eq!(
        failure.status("Status"),
        Some(STATUS_INSUFFICIENT_RESOURCES)
    );
    let registered = log::tl_events_named("ProviderRegister");
    assert_eq!(registered.len(), 2, "{registered:#?}");
    assert_eq!(registered[1].guid("ModuleId"), Some(hook::ATTACH_TYPE));
    assert_eq!(
        registered[1].status("Status"),
        Some(STATUS_INSUFFICIENT_RESOURCES)
    );
    let load = one("DriverLoad");
    assert_eq!(load.status("Status"), Some(STATUS_INSUFFICIENT_RESOURCES));
    assert_eq!(load.level, 2);
    assert!(
        log::etw_providers().is_empty(),
        "unregistered after the failed load"
    );
    sim.finish().unwrap();
}

// ---- host clients: a refused attach and a pending detach.

/// A host-side hook client (see [`ntsim::hook::host_client`]) of the
/// process hook standing in for an eBPF link; its invoke blocks until the
/// gate opens.
fn new_client(module: u32, dispatch_version: u16) -> HostClient {
    let mut config = Config::new(GUID {
        data1: 0x6574_7731,
        data2: 0,
        data3: 0,
        data4: (module as u64).to_be_bytes(),
    });
    config.attach_type = Some(hook::ATTACH_TYPE);
    config.dispatch.version = dispatch_version;
    config.gated = true;
    // SAFETY: the default client data and dispatch table (`invoke` only).
    let client = unsafe { HostClient::register(config) };
    client.unwrap_or_else(|status| panic!("NmrRegisterClient: {status:#x}"))
}

#[test]
fn a_refused_client_is_traced_with_its_reason() {
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    load(&mut sim);
    log::take_etw_events();
    // Dispatch table version 0: refused with STATUS_NOT_SUPPORTED.
    let client = new_client(1, 0);
    let status = client.attach_status().expect("attach ran");
    assert!(status < 0, "refused: {status:#x}");
    let refused = one("ClientRefused");
    assert_eq!(refused.str("Reason"), Some("UnsupportedDispatchVersion"));
    assert_eq!(refused.status("Status"), Some(status));
    assert_eq!(refused.guid("ModuleId"), Some(hook::ATTACH_TYPE));
    assert_eq!(refused.guid("ClientModuleId"), Some(client.module()));
    assert_eq!((refused.level, refused.keyword), (3, KEYWORD_EXTENSION));
    assert_eq!(one("ClientAttach").status("Status"), Some(status));
    let dbg: Vec<String> = log::dbg_messages().into_iter().map(|m| m.text).collect();
    assert!(
        dbg.iter()
            .any(|t| t.contains("refused a hook client: UnsupportedDispatchVersion")),
        "the DbgPrintEx line names the same reason: {dbg:?}"
    );
    // Nothing is bound: NMR answers STATUS_PENDING all the same, after
    // which the wait is mandatory.
    assert_eq!(client.begin_deregister(), STATUS_PENDING);
    client.wait_deregistered();
    sim.unload_driver().unwrap();
    sim.finish().unwrap();
}

#[test]
fn a_pending_detach_is_traced_begun_pending_and_completed() {
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    load(&mut sim);
    let client = new_client(2, 1);
    assert_eq!(client.attach_status(), Some(STATUS_SUCCESS));
    let binding = nmr::bindings()
        .into_iter()
        .find(|b| b.client_module == client.module())
        .expect("bound");
    let event = std::thread::spawn(|| {
        ps::create_process(&ProcessSpec {
            image_file_name: "\\??\\C:\\slow.exe".into(),
            ..Default::default()
        })
        .creation_status
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.entered() {
        assert!(
            Instant::now() < deadline,
            "the invocation did not start in 10 s"
        );
        std::thread::yield_now();
    }
    log::take_etw_events();
    // Detach while the invocation is in flight: pending.
    let status = client.begin_deregister();
    assert_eq!(status, STATUS_PENDING);
    let detach = one("ClientDetach");
    assert_eq!(detach.status("Status"), Some(STATUS_PENDING));
    assert_eq!(detach.guid("ClientModuleId"), Some(client.module()));
    assert_eq!(detach.uint("Binding"), Some(binding.handle as u64));
    assert_eq!(log::tl_events_named("ClientDetachComplete"), []);
    client.open();
    assert_eq!(event.join().unwrap(), 0);
    client.wait_deregistered();
    let complete = one("ClientDetachComplete");
    assert_eq!(complete.uint("Binding"), Some(binding.handle as u64));
    let order = names();
    let at = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(
        at("ClientDetachComplete") < at("ClientCleanup"),
        "{order:?}"
    );
    settle();
    sim.unload_driver().unwrap();
    sim.finish().unwrap();
}

#[test]
fn the_store_write_is_traced_per_program_type_and_its_failing_call_by_name() {
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    load(&mut sim);
    // One per program type, in the order of the driver's hooks.
    let written = log::tl_events_named("StoreRegister");
    let ids: Vec<Option<GUID>> = written.iter().map(|e| e.guid("Id")).collect();
    assert_eq!(
        ids,
        [
            Some(hook::PROGRAM_TYPE),
            Some(ntsim::thread::PROGRAM_TYPE),
            Some(ntsim::image_load::PROGRAM_TYPE)
        ]
    );
    for w in &written {
        assert_eq!(w.str("Key"), Some("ProgramData"));
        assert_eq!(w.status("Status"), Some(STATUS_SUCCESS));
        assert_eq!((w.level, w.keyword), (4, KEYWORD_EXTENSION));
    }
    assert!(log::tl_events_named("ApiFailure").is_empty());
    let types = ntsim::ebpf::store::Store::read().programs.len() as u64;
    assert!(types > 0, "the driver wrote its program types");
    store_update_agrees_with_dbg(STATUS_SUCCESS, types);
    sim.unload_driver().unwrap();
    sim.finish().unwrap();

    // A failed value write: the load goes on, the failure names the call.
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    fault::fail_nth("ZwSetValueKey", 1);
    load(&mut sim);
    let failure = one("ApiFailure");
    assert_eq!(failure.str("Api"), Some("ZwSetValueKey"));
    assert_eq!(
        failure.status("Status"),
        Some(STATUS_INSUFFICIENT_RESOURCES)
    );
    assert_eq!((failure.level, failure.keyword), (2, KEYWORD_EXTENSION));
    let written = one("StoreRegister");
    assert_eq!(written.guid("Id"), Some(hook::PROGRAM_TYPE));
    assert_eq!(
        written.status("Status"),
        Some(STATUS_INSUFFICIENT_RESOURCES)
    );
    assert_eq!(written.level, 2);
    store_update_agrees_with_dbg(STATUS_INSUFFICIENT_RESOURCES, types);
    sim.unload_driver().unwrap();
    sim.finish().unwrap();

    // A failure before any program type: no StoreRegister, but the update's
    // event and line still say it failed.
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    fault::fail_nth("ZwCreateKey", 1);
    load(&mut sim);
    assert!(log::tl_events_named("StoreRegister").is_empty());
    assert_eq!(one("ApiFailure").str("Api"), Some("ZwCreateKey"));
    store_update_agrees_with_dbg(STATUS_INSUFFICIENT_RESOURCES, types);
    sim.unload_driver().unwrap();
    sim.finish().unwrap();
}

/// The one `StoreUpdate` event has `status` and counts the `types` program
/// types the driver registers, and the DbgPrintEx line from the same call
/// says the same.
fn store_update_agrees_with_dbg(status: i32, types: u64) {
    let update = one("StoreUpdate");
    assert_eq!(update.status("Status"), Some(status));
    let level = if status == STATUS_SUCCESS { 4 } else { 2 };
    assert_eq!((update.level, update.keyword), (level, KEYWORD_EXTENSION));
    assert_eq!(update.uint("ProgramTypes"), Some(types));
    let line = if status == STATUS_SUCCESS {
        format!("eBPF store updated ({types} program types)")
    } else {
        format!("writing the eBPF store failed: {:#x}", status as u32)
    };
    let dbg: Vec<String> = log::dbg_messages().into_iter().map(|m| m.text).collect();
    assert_eq!(
        dbg.iter().filter(|t| t.contains(&line)).count(),
        1,
        "exactly one {line:?}: {dbg:?}"
    );
}

#[test]
fn a_refused_test_run_is_traced_with_its_hook_and_reason() {
    use ntsim::ebpf::core::CoreError;
    use ntsim::ebpf::TestRunError;
    const EBPF_INVALID_ARGUMENT: u32 = 6;
    let mut sim = Sim::new();
    log::etw_enable(&PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    load(&mut sim);
    let object = object();
    let deny = program(&object, "deny_notepad");
    let sysmon = Object::load(
        &std::fs::read(ntsim::thread::sample_object_path()).unwrap(),
        &ntsim::ebpf::store::section_map(),
    )
    .unwrap();
    let thread_echo = program(&sysmon, "thread_echo");
    let image_echo = program(&sysmon, "image_echo");
    let (ctx, data) = hook::test_run_input(&hook::TestRunInput::default());
    let thread_ctx = vec![0u8; 56];
    let mut bad_operation = thread_ctx.clone();
    bad_operation[44] = 2;
    // Each hook, and different refusals of one hook: each names its check.
    /// Program, data_in, ctx_in, hook, reason.
    type Case<'a> = (&'a LoadedProgram, &'a [u8], &'a [u8], &'a str, &'a str);
    let cases: [Case; 7] = [
        (&deny, &data, &[], "process", "ContextTooSmall"),
        (&deny, &[], &ctx, "process", "DataTooSmall"),
        (&thread_echo, &[1, 2], &thread_ctx, "thread", "DataNotEmpty"),
        (
            &thread_echo,
            &[],
            &thread_ctx[..55],
            "thread",
            "InvalidBuffers",
        ),
        (
            &thread_echo,
            &[],
            &bad_operation,
            "thread",
            "InvalidContext",
        ),
        (&image_echo, &[1, 2, 3], &[], "image_load", "InvalidInput"),
        (&image_echo, &[], &[0; 7], "image_load", "InvalidBuffers"),
    ];
    for (program, data_in, ctx_in, hook_name, reason) in cases {
        log::take_etw_events();
        let dbg_before = log::dbg_messages().len();
        match program.test_run(data_in, ctx_in, 1024, 296) {
            Err(CoreError::TestRun(TestRunError::ContextCreate(EBPF_INVALID_ARGUMENT))) => {}
            other => panic!("{hook_name} {reason}: expected a refusal, got {other:?}"),
        }
        let refused = one("TestRunRefused");
        assert_eq!(refused.str("Hook"), Some(hook_name));
        assert_eq!(refused.str("Reason"), Some(reason));
        assert_eq!(refused.uint("Result"), Some(EBPF_INVALID_ARGUMENT as u64));
        assert_eq!((refused.level, refused.keyword), (3, KEYWORD_PROCESS));
        let dbg: Vec<String> = log::dbg_messages()
            .into_iter()
            .skip(dbg_before)
            .map(|m| m.text)
            .collect();
        let line = format!("{hook_name} test run refused: {reason}");
        assert_eq!(
            dbg.iter().filter(|t| t.contains(&line)).count(),
            1,
            "one DbgPrintEx line with the same reason: {dbg:?}"
        );
    }
    // An accepted run says nothing.
    log::take_etw_events();
    thread_echo.test_run(&[], &thread_ctx, 0, 56).unwrap();
    assert!(log::tl_events_named("TestRunRefused").is_empty());
    drop((deny, thread_echo, image_echo, object, sysmon));
    sim.unload_driver().unwrap();
    sim.finish().unwrap();
}

// ---------------------------------------------------------------------------
// neteventebpfext: its own provider, its hook keyword, its NMR client's
// bindings and its events.

/// `NeteventEbpfExtProvider`.
const NETEVENT_PROVIDER: GUID = ntsim::hook::netevent::ETW_PROVIDER;
/// `EBPF_EXT_TRACELOG_KEYWORD_NETEVENT`: the netevent hook's keyword.
const KEYWORD_NETEVENT: u64 = 0x100;
const WARNING: u8 = 3;
const INFO: u8 = 4;

#[test]
fn neteventebpfext_traces_its_load_bindings_events_and_unload() {
    use ntsim::hook::netevent as netevent_hook;
    use ntsim::netevent::{self as providers, DeliveryIrql, Event};
    let mut sim = Sim::new();
    log::etw_enable(&NETEVENT_PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    let image = ntsim::build::driver_image_named("neteventebpfext");
    assert_eq!(sim.load_driver(&image).unwrap(), 0, "DriverEntry");
    let registered = log::etw_providers();
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].guid, NETEVENT_PROVIDER);
    assert_eq!(
        registered[0].name.as_deref(),
        Some("NeteventEbpfExtProvider")
    );
    let load = one("DriverLoad");
    assert_eq!(load.provider_name, "NeteventEbpfExtProvider");
    assert_eq!(load.str("Version"), Some(neteventebpfext::VERSION));
    assert_eq!(load.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!((load.level, load.keyword), (INFO, KEYWORD_BASE));
    let ids: Vec<(GUID, GUID, Option<i32>)> = log::tl_events_named("ProviderRegister")
        .iter()
        .map(|e| {
            assert_eq!(e.keyword, KEYWORD_EXTENSION);
            (
                e.guid("NpiId").unwrap(),
                e.guid("ModuleId").unwrap(),
                e.status("Status"),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            (
                EBPF_PROGRAM_INFO_EXTENSION_IID,
                netevent_hook::PROGRAM_TYPE,
                Some(0)
            ),
            (EBPF_HOOK_EXTENSION_IID, netevent_hook::ATTACH_TYPE, Some(0)),
        ]
    );
    log::take_etw_events();

    // The first link registers the NMR client, which binds the provider.
    providers::register_provider(1).unwrap();
    let bytes =
        std::fs::read(ntsim::build::workspace_root().join("tests/bpf/netevent_monitor.o")).unwrap();
    let object = Object::load(&bytes, &ntsim::ebpf::store::section_map()).unwrap();
    let monitor = program(&object, "monitor_netevents");
    let link = monitor
        .attach(
            netevent_hook::ATTACH_TYPE,
            &providers::CAPTURE_ALL.to_le_bytes(),
            0,
        )
        .unwrap();
    let callback = one("CallbackRegister");
    assert_eq!(callback.str("Hook"), Some("netevent"));
    assert_eq!(callback.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!((callback.level, callback.keyword), (INFO, KEYWORD_NETEVENT));
    let bind = one("ProviderBind");
    assert_eq!(bind.str("Hook"), Some("netevent"));
    assert_eq!(
        bind.guid("ProviderModuleId"),
        Some(providers::provider_module_id(1))
    );
    assert_eq!(bind.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!((bind.level, bind.keyword), (INFO, KEYWORD_NETEVENT));

    // An event shorter than the PktMon header is dropped, and says so.
    let short = Event::raw(&[providers::EVENT_TYPE_DROP as u8; 0x20]);
    providers::deliver(Some(1), &short, DeliveryIrql::Dispatch).unwrap();
    let dropped = one("EventDropped");
    assert_eq!(dropped.str("Hook"), Some("netevent"));
    assert_eq!(dropped.str("Reason"), Some("ShortEvent"));
    assert_eq!(dropped.uint("Size"), Some(0x20));
    assert_eq!(
        (dropped.level, dropped.keyword),
        (WARNING, KEYWORD_NETEVENT)
    );

    // Per-event records only with their keyword: the event type as the
    // operation, the event's size as the id, no verdict.
    let event = Event::new(providers::EVENT_TYPE_FLOW, b"etw");
    providers::deliver(Some(1), &event, DeliveryIrql::Passive).unwrap();
    assert_eq!(log::tl_events_named("HookEvent"), []);
    log::etw_enable(&NETEVENT_PROVIDER, VERBOSE, KEYWORD_HOOK_EVENTS, 0);
    providers::deliver(Some(1), &event, DeliveryIrql::Dispatch).unwrap();
    let record = one("HookEvent");
    assert_eq!(
        (record.level, record.keyword),
        (VERBOSE, KEYWORD_HOOK_EVENTS)
    );
    assert_eq!(record.str("Hook"), Some("netevent"));
    assert_eq!(
        record.uint("Operation"),
        Some(u64::from(providers::EVENT_TYPE_FLOW))
    );
    assert_eq!(record.uint("Id"), Some(event.bytes().len() as u64));
    assert_eq!(record.uint("ProgramsRun"), Some(1));
    assert_eq!(record.int("Verdict"), Some(0));
    assert_eq!(
        object
            .map(netevent_hook::MONITOR_MAP)
            .unwrap()
            .drain_ring()
            .len(),
        2,
        "both events ran the program"
    );
    log::etw_enable(&NETEVENT_PROVIDER, VERBOSE, ALL_BUT_HOOK_EVENTS, 0);
    log::take_etw_events();

    // The provider leaves: the binding goes.
    providers::deregister_provider(1).unwrap();
    let unbind = one("ProviderUnbind");
    assert_eq!(unbind.str("Hook"), Some("netevent"));
    assert_eq!(
        unbind.guid("ProviderModuleId"),
        Some(providers::provider_module_id(1))
    );
    assert_eq!((unbind.level, unbind.keyword), (INFO, KEYWORD_NETEVENT));
    log::take_etw_events();

    // The last link gone, the client deregisters on a work item.
    drop(link);
    settle();
    let removed = one("CallbackRemove");
    assert_eq!(removed.str("Hook"), Some("netevent"));
    assert_eq!(removed.status("Status"), Some(STATUS_SUCCESS));
    assert_eq!(removed.keyword, KEYWORD_NETEVENT);
    drop((monitor, object));
    log::take_etw_events();

    sim.unload_driver().unwrap();
    assert_eq!(log::tl_events_named("ProviderDeregister").len(), 2);
    assert_eq!(names().last().map(String::as_str), Some("DriverUnload"));
    assert_eq!(
        one("DriverUnload").str("Version"),
        Some(neteventebpfext::VERSION)
    );
    assert!(log::etw_providers().is_empty(), "unregistered at unload");
    sim.finish().unwrap();
}
