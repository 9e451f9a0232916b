//! The driver's generic hook provider, driven by host-side hook clients
//! (Rust NMR clients standing in for eBPF links), and the whole lifecycle
//! under fault injection.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use ntsim::build::driver_image;
use ntsim::ebpf::abi::{
    ebpf_program_batch_begin_invoke_function_t as BeginFn,
    ebpf_program_batch_end_invoke_function_t as EndFn,
    ebpf_program_batch_invoke_function_t as BatchInvokeFn,
    ebpf_program_invoke_function_t as InvokeFn,
};
use ntsim::ebpf::core::LoadedProgram;
use ntsim::ebpf::{store, Object, ObjectError};
use ntsim::hook::host_client::{invoke, Config, HostClient, Table};
use ntsim::nmr;
use ntsim::process::{self as hook, STATUS_ACCESS_DENIED};
use ntsim::ps::{self, ProcessSpec};
use ntsim::status::{STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS};
use ntsim::types::GUID;
use ntsim::{fault, sim, Sim};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const HOOK_NPI: GUID = GUID {
    data1: 0x5d564054,
    data2: 0x2736,
    data3: 0x406d,
    data4: [0x8b, 0x22, 0x12, 0xbc, 0xff, 0xaf, 0x0a, 0x9f],
};

/// Attach parameters for a client that claims some with size 0 (never read).
static SOME_PARAMETERS: u64 = 0;

/// A host-side hook client (see [`ntsim::hook::host_client`]) bound to the
/// process hook, registered with the characteristics and dispatch table
/// `edit` leaves in its configuration.
fn new_client(edit: impl FnOnce(&mut Config)) -> HostClient {
    let mut config = Config::numbered(0x686f7374);
    config.attach_type = Some(hook::ATTACH_TYPE);
    edit(&mut config);
    // SAFETY: the tests' invoke functions pass the context to `invoke`
    // only; the tables at
    // `Table::At` (guard-page copies) and the attach parameters outlive the
    // client, which each test deregisters first.
    let client = unsafe { HostClient::register(config) };
    client.unwrap_or_else(|status| panic!("NmrRegisterClient: {status:#x}"))
}

fn loaded() -> Sim {
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&driver_image()).unwrap(), 0);
    sim
}

/// Whether the client's binding is detaching with the provider's side
/// pending (its ProviderDetachClient returned STATUS_PENDING).
fn provider_detach_pending(client: &HostClient) -> bool {
    nmr::bindings().iter().any(|b| {
        b.client_module == client.module()
            && matches!(
                b.state,
                nmr::BindingState::Detaching {
                    provider: nmr::DetachState::Pending,
                    ..
                }
            )
    })
}

fn binding_of(client: &HostClient) -> bool {
    nmr::bindings()
        .iter()
        .any(|b| b.client_module == client.module())
}

#[test]
fn malformed_client_data_and_dispatch_tables_are_refused_leaving_nothing() {
    type Edit = fn(&mut Config);
    let cases: Vec<(&str, Edit, i32)> = vec![
        (
            "no ebpf_extension_data_t",
            |c| c.data_table = Table::Null,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "client data version 0",
            |c| c.data.header.version = 0,
            STATUS_NOT_SUPPORTED,
        ),
        (
            "client data version 2",
            |c| c.data.header.version = 2,
            STATUS_NOT_SUPPORTED,
        ),
        (
            "client data size below data_size's end",
            |c| c.data.header.size = 32,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "null attach parameters with a size",
            |c| c.data.data_size = 8,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "attach parameters with size 0",
            |c| c.data.data = (&SOME_PARAMETERS as *const u64).cast(),
            STATUS_INVALID_PARAMETER,
        ),
        (
            "no dispatch table",
            |c| c.dispatch_table = Table::Null,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "dispatch version 0",
            |c| c.dispatch.version = 0,
            STATUS_NOT_SUPPORTED,
        ),
        (
            "dispatch count 0",
            |c| c.dispatch.count = 0,
            STATUS_INVALID_PARAMETER,
        ),
        (
            "null invoke",
            |c| c.dispatch.ebpf_program_invoke_function = None,
            STATUS_INVALID_PARAMETER,
        ),
    ];
    // Every hook validates its clients with the same generic code.
    let hooks = [
        ("process", hook::ATTACH_TYPE),
        ("thread", ntsim::thread::ATTACH_TYPE),
        ("image_load", ntsim::image_load::ATTACH_TYPE),
    ];
    for (name, attach_type) in hooks {
        for (what, edit, expected) in &cases {
            let sim = loaded();
            let client = new_client(|c| {
                c.attach_type = Some(attach_type);
                edit(c);
            });
            assert_eq!(client.attach_status(), Some(*expected), "{name}: {what}");
            assert!(!binding_of(&client), "{name}: {what}: no binding");
            ntsim::io::wait_idle();
            assert_eq!(
                ps::notify_routine_counts(),
                ps::NotifyCounts::default(),
                "{name}: {what}: no notify routine registered"
            );
            client.deregister();
            if let Err(findings) = sim.finish() {
                panic!("{name}: {what}: {findings}");
            }
        }
        // A well-formed client of this hook attaches and registers its
        // routine only.
        let sim = loaded();
        let client = new_client(|c| c.attach_type = Some(attach_type));
        assert_eq!(client.attach_status(), Some(STATUS_SUCCESS), "{name}");
        let counts = ps::notify_routine_counts();
        assert_eq!(
            (counts.process, counts.thread, counts.image),
            match name {
                "process" => (1, 0, 0),
                "thread" => (0, 1, 0),
                _ => (0, 0, 1),
            },
            "{name}"
        );
        client.deregister();
        ntsim::io::wait_idle();
        if let Err(findings) = sim.finish() {
            panic!("{name}: {findings}");
        }
    }
}

#[test]
fn a_well_formed_host_client_is_invoked_and_plain_invoke_is_used_without_batch_functions() {
    let sim = loaded();
    let client = new_client(|_| {});
    assert_eq!(client.attach_status(), Some(STATUS_SUCCESS));
    assert_eq!(ps::notify_routine_counts().process, 1);
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\a.exe".into(),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    assert_eq!(client.invocations(), 1);
    client.deregister();
    sim.finish().unwrap();
}

#[test]
fn unload_waits_for_an_invocation_in_flight() {
    let mut sim = loaded();
    let client = new_client(|c| c.gated = true);
    assert_eq!(client.attach_status(), Some(STATUS_SUCCESS));
    let client_addr = &client as *const HostClient as usize;

    let event_done = Arc::new(AtomicBool::new(false));
    let event = {
        let event_done = event_done.clone();
        std::thread::spawn(move || {
            let status = ps::create_process(&ProcessSpec {
                image_file_name: "\\??\\C:\\slow.exe".into(),
                ..Default::default()
            })
            .creation_status;
            event_done.store(true, Ordering::SeqCst);
            status
        })
    };
    ntsim::sync::wait_for("the event to reach the client", || client.entered());
    // Opens the gate only once unload is blocked waiting for the hook
    // provider's deregistration; reports whether, at that moment, the
    // binding's provider side was still pending (the invocation in flight
    // holding the detach) and the event had not returned.
    let opener = {
        let event_done = event_done.clone();
        std::thread::spawn(move || {
            // SAFETY: the client outlives this thread (joined below).
            let client = unsafe { &*(client_addr as *const HostClient) };
            ntsim::sync::wait_for(
                "unload to wait for the hook provider's deregistration",
                || {
                    nmr::registrations()
                        .iter()
                        .any(|r| r.npi_id == HOOK_NPI && r.waiting)
                },
            );
            let pending = provider_detach_pending(client);
            let in_flight = !event_done.load(Ordering::SeqCst);
            client.open();
            (pending, in_flight)
        })
    };
    sim.unload_driver().unwrap();
    let (pending, in_flight) = opener.join().unwrap();
    assert!(
        pending && in_flight,
        "unload waited while the invocation was in flight and the detach pending \
         (pending {pending}, in flight {in_flight})"
    );
    assert_eq!(event.join().unwrap(), 0);
    assert_eq!(nmr::provider_count(), 0);
    assert_eq!(ps::notify_routine_counts().process, 0);
    client.deregister();
    sim.finish().unwrap();
}

#[test]
fn every_fallible_call_of_load_attach_event_and_unload_fails_cleanly() {
    let image = driver_image();
    let object_bytes = std::fs::read(hook::sample_object_path()).unwrap();
    let covered = sim::sweep(|injection| {
        let mut sim = Sim::new();
        if let Some(i) = injection {
            fault::fail_nth(&i.api, i.call);
        }
        let context = format!("{injection:?}");
        let status = sim.load_driver(&image).unwrap();
        if status == 0 {
            let object = match Object::load(&object_bytes, &store::section_map()) {
                Ok(object) => object,
                // A failed store write leaves the section unregistered; the
                // driver loaded and unloads cleanly all the same.
                Err(ObjectError::UnknownSection { .. })
                    if injection.is_some_and(|i| i.api.starts_with("Zw")) =>
                {
                    sim.unload_driver().unwrap();
                    if let Err(findings) = sim.finish() {
                        panic!("{context}: {findings}");
                    }
                    return;
                }
                Err(e) => panic!("{context}: {e}"),
            };
            // Loading and attaching may fail only because of the injected
            // fault; whatever failed, nothing may stay registered.
            let attached = match LoadedProgram::load(object.program("monitor").unwrap().clone()) {
                Err(e) => {
                    assert!(injection.is_some(), "{context}: the load failed: {e}");
                    None
                }
                Ok(program) => match program.attach(hook::ATTACH_TYPE, &[], 0) {
                    Err(e) => {
                        assert!(injection.is_some(), "{context}: the attach failed: {e}");
                        // A removal of the routine runs on a worker thread.
                        ntsim::io::wait_idle();
                        assert_eq!(
                            ps::notify_routine_counts().process,
                            0,
                            "{context}: a failed attach left the notify routine registered"
                        );
                        None
                    }
                    Ok(link) => Some((program, link)),
                },
            };
            if let Some((program, link)) = attached {
                let p = ps::create_process(&ProcessSpec {
                    image_file_name: "\\??\\C:\\f.exe".into(),
                    command_line: Some("f.exe".into()),
                    user_sid: Some(ps::test_user_sid()),
                    ..Default::default()
                });
                assert_eq!(
                    p.creation_status, 0,
                    "{context}: a failure inside an event fails open"
                );
                assert!(ps::exit_process(p.pid, 0, None));
                let records = object.map("events").unwrap().drain_ring();
                assert_eq!(
                    records.len(),
                    2,
                    "{context}: both events reached the program"
                );
                drop((link, program));
            }
            sim.unload_driver().unwrap();
        } else {
            assert!(
                injection.is_some(),
                "DriverEntry failed without an injected fault"
            );
        }
        if let Err(findings) = sim.finish() {
            panic!("{context}: {findings}");
        }
    });
    let names: Vec<String> = covered
        .iter()
        .map(|i| format!("{}#{}", i.api, i.call))
        .collect();
    eprintln!("injection points covered: {names:?}");
    for expected in [
        "ExAllocatePool2#1",
        "ExAllocatePool2#2",
        "NmrRegisterProvider#1",
        "NmrRegisterProvider#2",
        "PsSetCreateProcessNotifyRoutineEx#1",
        "SeQueryInformationToken#1",
        "SecLookupAccountSid#1",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} not covered: {names:?}"
        );
    }
}

#[test]
fn a_failed_notify_registration_fails_the_attach_with_its_status() {
    let sim = loaded();
    let object = Object::load(
        &std::fs::read(hook::sample_object_path()).unwrap(),
        &store::section_map(),
    )
    .unwrap();
    let program = LoadedProgram::load(object.program("mark_a").unwrap().clone()).unwrap();
    fault::fail_nth("PsSetCreateProcessNotifyRoutineEx", 1);
    let err = program
        .attach(hook::ATTACH_TYPE, &[], 0)
        .err()
        .expect("the attach fails");
    let text = err.to_string();
    assert!(
        text.contains(
            "the hook provider refused the link: 0xc000009a (STATUS_INSUFFICIENT_RESOURCES)"
        ),
        "{text}"
    );
    assert_eq!(ps::notify_routine_counts().process, 0);
    // The next attach registers the routine: nothing stayed half done.
    let link = program
        .attach(hook::ATTACH_TYPE, &[], 0)
        .expect("a second attach works");
    assert_eq!(ps::notify_routine_counts().process, 1);
    drop((link, program, object));
    sim.finish().unwrap();
}

/// Waits (at most 10 s) until no I/O work item routine is queued or running.
fn settle_work_items(what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ntsim::io::in_flight() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: a work item routine did not finish within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn a_client_attached_while_the_removal_is_queued_keeps_the_notify_routine() {
    let sim = loaded();
    let count = || ps::notify_routine_counts().process;
    let hold = ntsim::io::hold();
    let first = new_client(|_| {});
    assert_eq!(first.attach_status(), Some(STATUS_SUCCESS));
    let queued = ntsim::io::queued_total();
    first.deregister();
    assert_eq!(
        ntsim::io::queued_total(),
        queued + 1,
        "the last detach queues the removal"
    );
    // A program attaches right after the last detach, before the removal
    // work runs: it must see events (anything else is a policy bypass).
    let second = new_client(|_| {});
    assert_eq!(second.attach_status(), Some(STATUS_SUCCESS));
    drop(hold);
    settle_work_items("removal after a re-attach");
    assert_eq!(count(), 1, "the routine stays while a client is attached");
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\after.exe".into(),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    assert_eq!(
        second.invocations(),
        1,
        "the client attached after the last detach sees the event"
    );
    second.deregister();
    settle_work_items("removal after the last detach");
    assert_eq!(count(), 0, "removed once the last client left");
    sim.finish().unwrap();
}

#[test]
fn removal_requests_made_while_the_worker_runs_are_not_lost() {
    let sim = loaded();
    // Clients come and go on two threads, so a last detach often lands
    // while the removal work of an earlier one is running. Whatever the
    // interleaving, once everything has settled with no client attached the
    // notify routine must be gone.
    for round in 0..300 {
        let other = std::thread::spawn(|| {
            let c = new_client(|_| {});
            assert_eq!(c.attach_status(), Some(STATUS_SUCCESS));
            c.deregister();
        });
        let c = new_client(|_| {});
        assert_eq!(c.attach_status(), Some(STATUS_SUCCESS));
        c.deregister();
        other.join().unwrap();
        settle_work_items(&format!("round {round}"));
        assert_eq!(
            ps::notify_routine_counts().process,
            0,
            "round {round}: a removal request was lost"
        );
    }
    sim.finish().unwrap();
}

/// The client whose batch functions below run (one test uses them).
static BATCH_CLIENT: AtomicUsize = AtomicUsize::new(0);
/// Set by `batch_end` when the client's detach was already complete.
static ENDED_AFTER_DETACH: AtomicBool = AtomicBool::new(false);
static BATCH_ENDS: AtomicU64 = AtomicU64::new(0);

unsafe extern "win64" fn batch_begin(_size: usize, _state: *mut c_void) -> u32 {
    0
}

unsafe extern "win64" fn batch_invoke(
    context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    _state: *const c_void,
) -> u32 {
    // SAFETY: the same contract as a plain invoke.
    unsafe { invoke(context, program_context, result) }
}

unsafe extern "win64" fn batch_end(_state: *mut c_void) -> u32 {
    // SAFETY: the client outlives the test's event (it deregisters later).
    let client = unsafe { &*(BATCH_CLIENT.load(Ordering::SeqCst) as *const HostClient) };
    let still_pending = nmr::bindings().iter().any(|b| {
        b.client_module == client.module()
            && matches!(
                b.state,
                nmr::BindingState::Detaching {
                    provider: nmr::DetachState::Pending,
                    ..
                }
            )
    });
    if !still_pending {
        ENDED_AFTER_DETACH.store(true, Ordering::SeqCst);
    }
    BATCH_ENDS.fetch_add(1, Ordering::SeqCst);
    0
}

#[test]
fn the_batch_ends_before_the_detach_it_holds_pending_completes() {
    let sim = loaded();
    let client = new_client(|c| {
        c.dispatch.count = 4;
        c.dispatch.ebpf_program_batch_begin_invoke_function = Some(batch_begin);
        c.dispatch.ebpf_program_batch_invoke_function = Some(batch_invoke);
        c.dispatch.ebpf_program_batch_end_invoke_function = Some(batch_end);
        c.gated = true;
    });
    assert_eq!(client.attach_status(), Some(STATUS_SUCCESS));
    BATCH_CLIENT.store(&client as *const HostClient as usize, Ordering::SeqCst);
    let event = std::thread::spawn(|| {
        ps::create_process(&ProcessSpec {
            image_file_name: "\\??\\C:\\batch.exe".into(),
            ..Default::default()
        })
        .creation_status
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !client.entered() {
        assert!(
            std::time::Instant::now() < deadline,
            "the event never reached the client"
        );
        std::thread::yield_now();
    }
    // Detach while the invocation is in flight: the detach is pending until
    // the event leaves (after its batch ended).
    let client_addr = &client as *const HostClient as usize;
    let detacher = std::thread::spawn(move || {
        // SAFETY: the client outlives this thread (joined below).
        let client = unsafe { &*(client_addr as *const HostClient) };
        client.deregister();
    });
    while !nmr::bindings().iter().any(|b| {
        b.client_module == client.module()
            && matches!(
                b.state,
                nmr::BindingState::Detaching {
                    provider: nmr::DetachState::Pending,
                    ..
                }
            )
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the provider's detach never became pending"
        );
        std::thread::yield_now();
    }
    client.open();
    assert_eq!(event.join().unwrap(), 0);
    detacher.join().unwrap();
    assert_eq!(
        BATCH_ENDS.load(Ordering::SeqCst),
        1,
        "one batch, ended once"
    );
    assert!(
        !ENDED_AFTER_DETACH.load(Ordering::SeqCst),
        "batch_end ran after the detach it held pending had completed"
    );
    sim.finish().unwrap();
}

#[test]
fn many_clients_are_each_invoked_once_per_event() {
    let sim = loaded();
    // 37 clients: the client array is reallocated several times while
    // they attach, and compacted at every detach.
    let clients: Vec<_> = (0..37).map(|_| new_client(|_| {})).collect();
    for c in &clients {
        assert_eq!(c.attach_status(), Some(STATUS_SUCCESS));
    }
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\many.exe".into(),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    assert!(ps::exit_process(p.pid, 0, None));
    let counts: Vec<u64> = clients.iter().map(|c| c.invocations()).collect();
    for c in &clients {
        c.deregister();
    }
    assert_eq!(
        counts,
        vec![2; 37],
        "CREATE and DELETE reach every client once"
    );
    sim.finish().unwrap();
}

/// A client whose detach begins while an event is running the clients
/// before it (the event already read it in the client array) is skipped by
/// that event: nothing runs a program whose link is going away.
#[test]
fn a_client_whose_detach_begins_during_an_event_is_not_invoked_by_it() {
    let mut sim = loaded();
    let first = new_client(|c| c.gated = true);
    let second = new_client(|_| {});
    assert_eq!(first.attach_status(), Some(STATUS_SUCCESS));
    assert_eq!(second.attach_status(), Some(STATUS_SUCCESS));
    let second_module = second.module();
    let detach_began = || {
        nmr::bindings()
            .iter()
            .find(|b| b.client_module == second_module)
            .is_none_or(|b| b.provider_detach_at.is_some())
    };
    std::thread::scope(|s| {
        let event = s.spawn(|| {
            ps::create_process(&ProcessSpec {
                image_file_name: "\\??\\C:\\between.exe".into(),
                ..Default::default()
            })
            .creation_status
        });
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !first.entered() {
            assert!(
                std::time::Instant::now() < limit,
                "the first client was not invoked within 30 s of the process creation"
            );
            std::thread::yield_now();
        }
        // The event holds both clients now; detach the second meanwhile
        // (deregistration waits for the event, so on a thread of its own).
        let second = &second;
        let detacher = s.spawn(move || second.deregister());
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !detach_began() {
            if std::time::Instant::now() >= limit {
                first.open();
                panic!("the second client's detach did not begin within 30 s");
            }
            std::thread::yield_now();
        }
        first.open();
        assert_eq!(event.join().unwrap(), 0);
        detacher.join().unwrap();
    });
    assert_eq!(first.invocations(), 1);
    assert_eq!(
        second.invocations(),
        0,
        "the event invoked a client whose detach had begun"
    );
    first.deregister();
    sim.unload_driver().unwrap();
    sim.finish().unwrap();
}

/// The batch calls of `clients_differing_in_one_batch_function_each_get_their_own_batch`.
static BATCH_CALLS: Mutex<Vec<&str>> = Mutex::new(Vec::new());

unsafe extern "win64" fn batch_begin_1(_size: usize, _state: *mut c_void) -> u32 {
    BATCH_CALLS.lock().unwrap().push("begin1");
    0
}

unsafe extern "win64" fn batch_begin_2(_size: usize, _state: *mut c_void) -> u32 {
    BATCH_CALLS.lock().unwrap().push("begin2");
    0
}

unsafe extern "win64" fn batch_invoke_1(
    context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    _state: *const c_void,
) -> u32 {
    BATCH_CALLS.lock().unwrap().push("invoke1");
    // SAFETY: the same contract as a plain invoke.
    unsafe { invoke(context, program_context, result) }
}

unsafe extern "win64" fn batch_invoke_2(
    context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    _state: *const c_void,
) -> u32 {
    BATCH_CALLS.lock().unwrap().push("invoke2");
    // SAFETY: the same contract as a plain invoke.
    unsafe { invoke(context, program_context, result) }
}

unsafe extern "win64" fn batch_end_1(_state: *mut c_void) -> u32 {
    BATCH_CALLS.lock().unwrap().push("end1");
    0
}

/// Consecutive clients share one batch only when all three batch functions
/// are the same: a client differing from the open batch in its invoke
/// function only, or in its begin function only, gets a batch of its own
/// (its invoke never runs with state another begin prepared).
#[test]
fn clients_differing_in_one_batch_function_each_get_their_own_batch() {
    let sim = loaded();
    let with = |begin: BeginFn, batch_invoke: BatchInvokeFn, end: EndFn| {
        new_client(move |c| {
            c.dispatch.count = 4;
            c.dispatch.ebpf_program_batch_begin_invoke_function = Some(begin);
            c.dispatch.ebpf_program_batch_invoke_function = Some(batch_invoke);
            c.dispatch.ebpf_program_batch_end_invoke_function = Some(end);
        })
    };
    let (b1, b2): (BeginFn, BeginFn) = (batch_begin_1, batch_begin_2);
    let (i1, i2): (BatchInvokeFn, BatchInvokeFn) = (batch_invoke_1, batch_invoke_2);
    let e1: EndFn = batch_end_1;
    // Attach order is invocation order.
    let clients = [with(b1, i1, e1), with(b1, i2, e1), with(b2, i2, e1)];
    for c in &clients {
        assert_eq!(c.attach_status(), Some(STATUS_SUCCESS));
    }
    BATCH_CALLS.lock().unwrap().clear();
    let created = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\batches.exe".into(),
        ..Default::default()
    });
    assert_eq!(created.creation_status, 0);
    assert_eq!(
        *BATCH_CALLS.lock().unwrap(),
        [
            "begin1", "invoke1", "end1", // the first client
            "begin1", "invoke2", "end1", // same begin and end, another invoke
            "begin2", "invoke2", "end1", // same invoke and end, another begin
        ],
        "each client's invoke runs in a batch begun for its own functions"
    );
    for c in &clients {
        assert_eq!(c.invocations(), 1);
        c.deregister();
    }
    sim.finish().unwrap();
}

/// The calls of `plain_and_batch_clients_alternate_in_attach_order_until_a_deny`.
static WALK_CALLS: Mutex<Vec<&str>> = Mutex::new(Vec::new());

fn walk_call(name: &'static str) {
    WALK_CALLS.lock().unwrap().push(name);
}

unsafe extern "win64" fn walk_plain(_: *const c_void, _: *mut c_void, result: *mut u32) -> u32 {
    walk_call("plain");
    // SAFETY: the driver passes a valid result pointer.
    unsafe { *result = 0 };
    0
}

unsafe extern "win64" fn walk_deny(_: *const c_void, _: *mut c_void, result: *mut u32) -> u32 {
    walk_call("deny");
    // SAFETY: as above.
    unsafe { *result = STATUS_ACCESS_DENIED as u32 };
    0
}

unsafe extern "win64" fn walk_fallback(_: *const c_void, _: *mut c_void, result: *mut u32) -> u32 {
    walk_call("fallback");
    // SAFETY: as above.
    unsafe { *result = 1 };
    0
}

unsafe extern "win64" fn walk_begin(_size: usize, _state: *mut c_void) -> u32 {
    walk_call("begin");
    0
}

unsafe extern "win64" fn walk_begin_fails(_size: usize, _state: *mut c_void) -> u32 {
    walk_call("begin-fails");
    1
}

unsafe extern "win64" fn walk_batch_invoke(
    _: *const c_void,
    _: *mut c_void,
    result: *mut u32,
    _state: *const c_void,
) -> u32 {
    walk_call("batch");
    // SAFETY: as above.
    unsafe { *result = 0 };
    0
}

unsafe extern "win64" fn walk_end(_state: *mut c_void) -> u32 {
    walk_call("end");
    0
}

/// The event's walk moves between plain clients and batches in attach
/// order: a batch spans consecutive clients of its group, ends before a
/// plain client or another group, a client whose batch begin fails is
/// invoked plainly, and a deny stops the walk (the batch open before it
/// already ended, no later client runs).
#[test]
fn plain_and_batch_clients_alternate_in_attach_order_until_a_deny() {
    let sim = loaded();
    let plain = |invoke: InvokeFn| {
        new_client(move |c| c.dispatch.ebpf_program_invoke_function = Some(invoke))
    };
    let batch = |begin: BeginFn, invoke: InvokeFn| {
        new_client(move |c| {
            c.dispatch.count = 4;
            c.dispatch.ebpf_program_invoke_function = Some(invoke);
            c.dispatch.ebpf_program_batch_begin_invoke_function = Some(begin);
            c.dispatch.ebpf_program_batch_invoke_function = Some(walk_batch_invoke);
            c.dispatch.ebpf_program_batch_end_invoke_function = Some(walk_end);
        })
    };
    let clients = [
        plain(walk_plain),
        batch(walk_begin, walk_fallback),
        batch(walk_begin, walk_fallback),
        plain(walk_plain),
        batch(walk_begin, walk_fallback),
        batch(walk_begin_fails, walk_fallback),
        batch(walk_begin, walk_fallback),
        plain(walk_deny),
        plain(walk_plain),
        batch(walk_begin, walk_fallback),
    ];
    for c in &clients {
        assert_eq!(c.attach_status(), Some(STATUS_SUCCESS));
    }
    WALK_CALLS.lock().unwrap().clear();
    assert_eq!(create("walk"), STATUS_ACCESS_DENIED);
    assert_eq!(
        *WALK_CALLS.lock().unwrap(),
        [
            "plain", // no batch open
            "begin",
            "batch",
            "batch",
            "end",   // two clients of one group
            "plain", // ends nothing: the batch ended before it
            "begin",
            "batch",
            "end", // one client, then another group
            "begin-fails",
            "fallback", // invoked plainly, no end
            "begin",
            "batch",
            "end",  // ended before the plain deny
            "deny", // stops the walk
        ],
        "the walk's calls in attach order"
    );
    for c in &clients {
        c.deregister();
    }
    sim.finish().unwrap();
}

unsafe extern "win64" fn fails_with_a_negative_result(
    _: *const c_void,
    _: *mut c_void,
    result: *mut u32,
) -> u32 {
    walk_call("fails-negative");
    // SAFETY: the driver passes a valid result pointer.
    unsafe { *result = STATUS_ACCESS_DENIED as u32 };
    1
}

unsafe extern "win64" fn fails_without_a_result(
    _: *const c_void,
    _: *mut c_void,
    _: *mut u32,
) -> u32 {
    walk_call("fails");
    1
}

/// A program whose invoke fails does not decide the event, whatever its
/// result holds: one that wrote a negative result and failed, then one
/// that failed without writing (the driver reads the result before it
/// tests the status, so the first one's value is still there), leave the
/// creation allowed and the walk going.
#[test]
fn a_failed_invoke_never_denies_even_with_a_negative_result_left_behind() {
    let sim = loaded();
    let plain = |invoke: InvokeFn| {
        new_client(move |c| c.dispatch.ebpf_program_invoke_function = Some(invoke))
    };
    let clients = [
        plain(fails_with_a_negative_result),
        plain(fails_without_a_result),
        plain(walk_plain),
    ];
    for c in &clients {
        assert_eq!(c.attach_status(), Some(STATUS_SUCCESS));
    }
    WALK_CALLS.lock().unwrap().clear();
    assert_eq!(create("failing"), 0, "a failed invoke denied the creation");
    assert_eq!(
        *WALK_CALLS.lock().unwrap(),
        ["fails-negative", "fails", "plain"]
    );
    for c in &clients {
        c.deregister();
    }
    sim.finish().unwrap();
}

/// While the notify routine is still registered but no client is attached
/// (the last one left, the removal not run yet), an event is not processed:
/// no program runs and no per-event record is traced.
#[test]
fn an_event_while_no_client_is_attached_is_not_processed() {
    // `NtosEbpfExtProvider` and its per-event keyword.
    const PROVIDER: GUID = GUID {
        data1: 0xd15cc421,
        data2: 0xe9e4,
        data3: 0x459b,
        data4: [0x87, 0xa6, 0xb4, 0x5b, 0x7d, 0x84, 0xe9, 0xa8],
    };
    const KEYWORD_HOOK_EVENTS: u64 = 0x1_0000_0000;
    let sim = loaded();
    ntsim::log::etw_enable(&PROVIDER, 5, KEYWORD_HOOK_EVENTS, 0);
    let hold = ntsim::io::hold();
    let client = new_client(|_| {});
    assert_eq!(client.attach_status(), Some(STATUS_SUCCESS));
    let create = |name: &str| {
        let p = ps::create_process(&ProcessSpec {
            image_file_name: format!("\\??\\C:\\{name}.exe"),
            ..Default::default()
        });
        assert_eq!(p.creation_status, 0);
    };
    create("attached");
    assert_eq!(
        ntsim::log::tl_events_named("HookEvent").len(),
        1,
        "an event with a client attached is traced"
    );
    client.deregister();
    assert_eq!(
        ps::notify_routine_counts().process,
        1,
        "the removal is held: the routine is still registered"
    );
    create("detached");
    assert_eq!(client.invocations(), 1);
    assert_eq!(
        ntsim::log::tl_events_named("HookEvent").len(),
        1,
        "an event with no client attached was processed"
    );
    drop(hold);
    settle_work_items("removal after the last detach");
    assert_eq!(ps::notify_routine_counts().process, 0);
    sim.finish().unwrap();
}

/// A copy of some bytes in a pool block (special pool) whose last byte is
/// the block's last byte, against the guard page: the driver reading one
/// byte past the end faults at once.
struct EdgeCopy {
    block: *mut c_void,
    at: usize,
}

impl EdgeCopy {
    fn new(bytes: &[u8]) -> EdgeCopy {
        // A block of a multiple of 16 bytes ends at the end of its page.
        let span = bytes.len().div_ceil(16).max(1) * 16;
        let block = ntsim::pool::kernel_alloc(span, u32::from_le_bytes(*b"Edge"));
        assert!(!block.is_null());
        let at = block as usize + span - bytes.len();
        // SAFETY: `bytes.len()` bytes from `at` lie inside the fresh block.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
        EdgeCopy { block, at }
    }
}

impl Drop for EdgeCopy {
    fn drop(&mut self) {
        // SAFETY: the block from kernel_alloc, freed once.
        unsafe { ntsim::pool::kernel_free(self.block) };
    }
}

/// `{u16 version; u16 count; fn function[count]}`, exactly that long.
fn dispatch_bytes(functions: &[usize]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&(functions.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for f in functions {
        b.extend_from_slice(&f.to_le_bytes());
    }
    b
}

/// An `ebpf_extension_data_t` of `size` bytes (no attach parameters).
fn client_data_bytes(size: usize) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0..2].copy_from_slice(&1u16.to_le_bytes());
    b[8..16].copy_from_slice(&size.to_le_bytes());
    b[16..24].copy_from_slice(&size.to_le_bytes());
    b.truncate(size);
    b
}

static COUNTED_BEGINS: AtomicU64 = AtomicU64::new(0);
static COUNTED_INVOKES: AtomicU64 = AtomicU64::new(0);
static COUNTED_ENDS: AtomicU64 = AtomicU64::new(0);

unsafe extern "win64" fn counted_begin(size: usize, state: *mut c_void) -> u32 {
    assert!(size >= 64 && !state.is_null());
    COUNTED_BEGINS.fetch_add(1, Ordering::SeqCst);
    0
}

unsafe extern "win64" fn counted_invoke(
    context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    _state: *const c_void,
) -> u32 {
    COUNTED_INVOKES.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the same contract as a plain invoke.
    unsafe { invoke(context, program_context, result) }
}

unsafe extern "win64" fn counted_end(_state: *mut c_void) -> u32 {
    COUNTED_ENDS.fetch_add(1, Ordering::SeqCst);
    0
}

fn counted() -> [u64; 3] {
    [
        COUNTED_BEGINS.swap(0, Ordering::SeqCst),
        COUNTED_INVOKES.swap(0, Ordering::SeqCst),
        COUNTED_ENDS.swap(0, Ordering::SeqCst),
    ]
}

fn create(name: &str) -> i32 {
    ps::create_process(&ProcessSpec {
        image_file_name: format!("\\??\\C:\\{name}.exe"),
        ..Default::default()
    })
    .creation_status
}

#[test]
fn dispatch_tables_of_one_to_four_entries_are_read_within_their_count() {
    let all = [
        invoke as *const () as usize,
        counted_begin as *const () as usize,
        counted_invoke as *const () as usize,
        counted_end as *const () as usize,
    ];
    for count in 1..=4 {
        let sim = loaded();
        counted();
        // The table ends against a guard page: reading slot `count` faults.
        let table = EdgeCopy::new(&dispatch_bytes(&all[..count]));
        let client = new_client(|c| c.dispatch_table = Table::At(table.at as *const c_void));
        assert_eq!(
            client.attach_status(),
            Some(STATUS_SUCCESS),
            "count {count}"
        );
        assert_eq!(create("a"), 0);
        assert_eq!(create("b"), 0);
        assert_eq!(
            client.invocations(),
            2,
            "count {count}: invoked once per event"
        );
        let expected = if count == 4 { [2, 2, 2] } else { [0, 0, 0] };
        assert_eq!(
            counted(),
            expected,
            "count {count}: batch begin/invoke/end used only with all four entries, \
             and every batch begun is ended"
        );
        client.deregister();
        drop(table);
        if let Err(findings) = sim.finish() {
            panic!("count {count}: {findings}");
        }
    }
}

#[test]
fn client_data_of_the_minimum_size_is_accepted_and_one_byte_less_is_refused() {
    // ebpf_extension_data_t up to and including data_size: 40 bytes.
    for (size, expected) in [(40, STATUS_SUCCESS), (39, STATUS_INVALID_PARAMETER)] {
        let sim = loaded();
        // The data ends against a guard page: reading past `size` faults.
        let data = EdgeCopy::new(&client_data_bytes(size));
        let client = new_client(|c| c.data_table = Table::At(data.at as *const c_void));
        assert_eq!(client.attach_status(), Some(expected), "size {size}");
        assert_eq!(
            binding_of(&client),
            expected == STATUS_SUCCESS,
            "size {size}"
        );
        assert_eq!(create("a"), 0);
        assert_eq!(
            client.invocations(),
            u64::from(expected == STATUS_SUCCESS),
            "size {size}"
        );
        client.deregister();
        drop(data);
        if let Err(findings) = sim.finish() {
            panic!("size {size}: {findings}");
        }
    }
}

#[test]
fn a_client_is_not_invoked_after_its_detach_began() {
    let sim = loaded();
    let client = new_client(|c| c.gated = true);
    assert_eq!(client.attach_status(), Some(STATUS_SUCCESS));
    // Another client keeps the hook active, so later events invoke clients.
    let other = new_client(|_| {});
    assert_eq!(other.attach_status(), Some(STATUS_SUCCESS));
    let client_addr = &client as *const HostClient as usize;
    // An event in flight holds the client...
    let first = std::thread::spawn(|| create("first"));
    ntsim::sync::wait_for("the first event to reach the client", || client.entered());
    // ...while the client deregisters: the provider's detach is pending.
    let detacher = std::thread::spawn(move || {
        // SAFETY: the client outlives this thread (joined below).
        let client = unsafe { &*(client_addr as *const HostClient) };
        client.deregister();
    });
    ntsim::sync::wait_for("the provider's detach to become pending", || {
        provider_detach_pending(&client)
    });
    // A new event now must not reach the client (it would block on the
    // closed gate, so this bounded wait fails if the driver calls it).
    let second = std::thread::spawn(|| create("second"));
    ntsim::sync::wait_for("the second event to finish without the client", || {
        second.is_finished()
    });
    assert_eq!(second.join().unwrap(), 0);
    assert_eq!(client.invocations(), 1, "only the invocation in flight");
    client.open();
    assert_eq!(first.join().unwrap(), 0);
    detacher.join().unwrap();
    assert!(!binding_of(&client));
    assert_eq!(other.invocations(), 2, "the other client saw both events");
    other.deregister();
    sim.finish().unwrap();
}

/// A detach completes only once every event that was running when it
/// began has finished, even an event that never reached (nor could reach)
/// the client: the hook provider protects its clients with one epoch per
/// event, not one reference per client.
#[test]
fn a_detach_waits_for_every_event_in_flight_even_one_that_cannot_reach_the_client() {
    let sim = loaded();
    let gate = new_client(|c| c.gated = true);
    assert_eq!(gate.attach_status(), Some(STATUS_SUCCESS));
    let event = std::thread::spawn(|| create("inside"));
    ntsim::sync::wait_for("the event to reach the gated client", || gate.entered());
    // Attached after the event read the client array: the event never
    // calls it.
    let late = new_client(|_| {});
    assert_eq!(late.attach_status(), Some(STATUS_SUCCESS));
    let late_addr = &late as *const HostClient as usize;
    let detacher = std::thread::spawn(move || {
        // SAFETY: the client outlives this thread (joined below).
        let late = unsafe { &*(late_addr as *const HostClient) };
        late.deregister();
    });
    ntsim::sync::wait_for("the late client's detach to become pending", || {
        provider_detach_pending(&late)
    });
    assert!(binding_of(&late), "completed while an event was in flight");
    gate.open();
    assert_eq!(event.join().unwrap(), 0);
    detacher.join().unwrap();
    assert!(!binding_of(&late), "completed once the event finished");
    assert_eq!(late.invocations(), 0);
    assert_eq!(gate.invocations(), 1);
    gate.deregister();
    sim.finish().unwrap();
}

/// A detach allocates a compacted client array; when the pool is
/// exhausted it does not fail: the client's slot becomes a hole that
/// events skip, and the next attach compacts it away.
#[test]
fn a_detach_that_cannot_allocate_leaves_a_hole_that_events_skip() {
    let sim = loaded();
    let first = new_client(|_| {});
    let second = new_client(|_| {});
    assert_eq!(first.attach_status(), Some(STATUS_SUCCESS));
    assert_eq!(second.attach_status(), Some(STATUS_SUCCESS));
    let allocations = fault::counts().get("ExAllocatePool2").copied().unwrap_or(0);
    fault::fail_nth_alloc(allocations + 1);
    first.deregister();
    assert_eq!(
        fault::fired(),
        [("ExAllocatePool2".to_string(), allocations + 1)],
        "the detach tried to allocate (and failed)"
    );
    assert!(!binding_of(&first), "the detach completed all the same");
    assert_eq!(create("after the hole"), 0);
    assert_eq!(first.invocations(), 0, "a detached client was invoked");
    assert_eq!(second.invocations(), 1);
    let third = new_client(|_| {});
    assert_eq!(third.attach_status(), Some(STATUS_SUCCESS));
    assert_eq!(create("after the attach"), 0);
    assert_eq!(
        (
            first.invocations(),
            second.invocations(),
            third.invocations()
        ),
        (0, 2, 1)
    );
    second.deregister();
    third.deregister();
    sim.finish().unwrap();
}
