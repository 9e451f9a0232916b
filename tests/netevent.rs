//! neteventebpfext end to end: the real `neteventebpfext.sys` in ntsim,
//! `tests/bpf/netevent_monitor.o` loaded and attached through ntsim's eBPF
//! core with a capture type, events delivered by ntsim's simulated netevent
//! providers (the role of upstream's netevent_sim), records read back from
//! the program's ring buffer.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::Env;

use ntsim::build::driver_image_named;
use ntsim::ebpf::core::{CoreError, Link, LoadedProgram};
use ntsim::ebpf::Object;
use ntsim::hook::netevent as hook;
use ntsim::log;
use ntsim::netevent::{self as providers, ClientResult, DeliveryIrql, Event};
use ntsim::status::STATUS_NOINTERFACE;
use ntsim::types::GUID;
use ntsim::{fault, violation, Sim};

const DROP: u32 = providers::EVENT_TYPE_DROP;
const FLOW: u32 = providers::EVENT_TYPE_FLOW;
/// `EBPF_EXT_TRACELOG_KEYWORD_NETEVENT`: the hook keyword of the driver's
/// ETW provider.
const KEYWORD_NETEVENT: u64 = 0x100;

fn setup() -> Env {
    Env::start(
        &driver_image_named("neteventebpfext"),
        "tests/bpf/netevent_monitor.o",
    )
}

fn load_object() -> Object {
    let path = ntsim::build::workspace_root().join("tests/bpf/netevent_monitor.o");
    let bytes = std::fs::read(&path).expect("tests/bpf/netevent_monitor.o (tests/bpf/build.sh)");
    // The section resolves through the store the driver just wrote.
    Object::load(&bytes, &ntsim::ebpf::store::section_map()).expect("netevent_monitor.o loads")
}

fn opts(capture: u32) -> [u8; 4] {
    capture.to_le_bytes()
}

impl Env {
    fn program(&self) -> LoadedProgram {
        self.load("monitor_netevents")
    }

    fn attach(&self, capture: u32) -> (LoadedProgram, Link) {
        let program = self.program();
        let link = program
            .attach(hook::ATTACH_TYPE, &opts(capture), 0)
            .expect("attach to netevent");
        (program, link)
    }

    /// The records the monitor wrote since the last call.
    fn records(&self) -> Vec<Vec<u8>> {
        self.object.map(hook::MONITOR_MAP).unwrap().drain_ring()
    }
}

fn deliver(provider: u32, event: &Event, irql: DeliveryIrql) -> providers::Delivery {
    providers::deliver(Some(provider), event, irql).expect("the provider delivers")
}

#[test]
fn program_information_matches_upstream() {
    let env = setup();
    let program = env.program();
    let info = program
        .program_info()
        .expect("bound to the driver's provider");
    let td = &info.type_descriptor;
    assert_eq!(td.name, "netevent_monitor");
    assert_eq!(td.program_type, hook::PROGRAM_TYPE);
    assert_eq!(td.bpf_prog_type, hook::BPF_PROG_TYPE_NETEVENT);
    let cd = &td.context_descriptor;
    assert_eq!((cd.size, cd.data, cd.end, cd.meta), (24, 8, 16, 0));
    let helpers = &info.type_specific_helpers;
    assert_eq!(helpers.len(), 1);
    assert_eq!(helpers[0].prototype.helper_id, hook::HELPER_PUSH_EVENT);
    assert_eq!(helpers[0].prototype.name, "bpf_netevent_push_event");
    assert!(
        helpers[0].address.is_some(),
        "an address table is published"
    );
    assert!(info.global_helpers.is_empty());
    assert_eq!(info.required_irql, 0);
    drop(program);
    env.finish();
}

#[test]
fn every_event_reaches_the_program_framed_behind_its_data_header() {
    let env = setup();
    providers::register_provider(1).unwrap();
    assert!(
        providers::clients(1).is_empty(),
        "no NMR client before a program attaches"
    );
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    assert_eq!(providers::clients(1), vec![hook::CLIENT_MODULE_ID]);
    let payload: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
    let mut expected = Vec::new();
    for (i, (kind, irql)) in [
        (DROP, DeliveryIrql::Passive),
        (FLOW, DeliveryIrql::Dispatch),
        (7, DeliveryIrql::Passive),
    ]
    .into_iter()
    .enumerate()
    {
        let event = Event::with_header(kind, &[i as u8 + 1; 8], &payload[..i * 90]).unwrap();
        let delivery = deliver(1, &event, irql);
        assert_eq!(delivery.delivered(), 1, "{delivery:?}");
        expected.push(hook::monitor_record(event.bytes()));
    }
    assert_eq!(env.records(), expected);
    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn each_link_gets_the_events_its_capture_type_asks_for() {
    let env = setup();
    providers::register_provider(1).unwrap();
    let (drop_program, drop_link) = env.attach(providers::CAPTURE_DROP);
    // The provider is asked for what the links together want.
    let event = Event::new(FLOW, b"f");
    let d = deliver(1, &event, DeliveryIrql::Passive);
    assert_eq!(d.clients[0].capture_type, providers::CAPTURE_DROP);
    assert_eq!(d.clients[0].result, ClientResult::Filtered);
    let (flow_program, flow_link) = env.attach(providers::CAPTURE_FLOW);
    let (none_program, none_link) = env.attach(providers::CAPTURE_NONE);
    let d = deliver(1, &Event::new(DROP, b"d"), DeliveryIrql::Passive);
    assert_eq!(d.clients[0].capture_type, providers::CAPTURE_ALL);
    deliver(1, &Event::new(FLOW, b"f"), DeliveryIrql::Dispatch);
    deliver(1, &Event::new(9, b"o"), DeliveryIrql::Passive);
    // One ring buffer for the three programs (one object): one record per
    // link that asked for the event, the unknown type for nobody.
    assert_eq!(
        env.records(),
        vec![
            hook::monitor_record(Event::new(DROP, b"d").bytes()),
            hook::monitor_record(Event::new(FLOW, b"f").bytes()),
        ]
    );
    drop(flow_link);
    drop(drop_link);
    let d = deliver(1, &Event::new(DROP, b"d"), DeliveryIrql::Passive);
    assert_eq!(d.clients[0].capture_type, providers::CAPTURE_NONE);
    assert_eq!(d.clients[0].result, ClientResult::Filtered);
    assert!(env.records().is_empty());
    drop(none_link);
    drop((drop_program, flow_program, none_program));
    env.finish();
}

#[test]
fn attach_options_are_required_and_checked() {
    let env = setup();
    let program = env.program();
    for (params, what) in [
        (&[][..], "no options"),
        (&[1, 0, 0][..], "three bytes"),
        (&[1, 0, 0, 0, 0][..], "five bytes"),
        (&0u32.to_le_bytes()[..], "capture type 0"),
        (&5u32.to_le_bytes()[..], "capture type 5"),
    ] {
        let refused = program.attach(hook::ATTACH_TYPE, params, 0);
        assert!(
            matches!(refused, Err(CoreError::NoHookProvider { .. })),
            "{what}: {:?}",
            refused.err()
        );
    }
    drop(program);
    env.finish();
}

#[test]
fn two_providers_each_deliver_to_the_program() {
    let env = setup();
    providers::register_provider(1).unwrap();
    providers::register_provider(2).unwrap();
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    assert_eq!(providers::clients(1), vec![hook::CLIENT_MODULE_ID]);
    assert_eq!(providers::clients(2), vec![hook::CLIENT_MODULE_ID]);
    deliver(1, &Event::new(DROP, b"one"), DeliveryIrql::Passive);
    deliver(2, &Event::new(FLOW, b"two"), DeliveryIrql::Dispatch);
    providers::deregister_provider(1).unwrap();
    deliver(2, &Event::new(DROP, b"three"), DeliveryIrql::Passive);
    assert_eq!(
        env.records(),
        ["one", "two", "three"]
            .iter()
            .zip([DROP, FLOW, DROP])
            .map(|(p, t)| hook::monitor_record(Event::new(t, p.as_bytes()).bytes()))
            .collect::<Vec<_>>()
    );
    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn a_provider_may_arrive_after_the_programs_and_leave_before_them() {
    let env = setup();
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    providers::register_provider(3).unwrap();
    assert_eq!(providers::clients(3), vec![hook::CLIENT_MODULE_ID]);
    deliver(3, &Event::new(DROP, b"x"), DeliveryIrql::Alternate);
    providers::deregister_provider(3).unwrap();
    assert_eq!(env.records().len(), 1);
    providers::register_provider(3).unwrap();
    deliver(3, &Event::new(DROP, b"y"), DeliveryIrql::Alternate);
    assert_eq!(env.records().len(), 1);
    drop(link);
    // The last link gone, the client deregisters (on a worker thread) and
    // the provider loses it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !providers::clients(3).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the NMR client was not deregistered after the last detach"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(program);
    env.finish();
}

#[test]
fn a_provider_without_usable_characteristics_is_refused_and_the_others_work() {
    let env = setup();
    log::etw_enable(&hook::ETW_PROVIDER, 5, KEYWORD_NETEVENT, 0);
    providers::register_provider(1).unwrap();
    // NULL NpiSpecificCharacteristics (upstream's refusal), and a header
    // whose Size is smaller than its own four bytes (ours too).
    providers::register_provider_with(2, None).unwrap();
    let short = providers::NpiSpecific {
        size: 3,
        version: providers::PROVIDER_NPI_SPECIFIC.version,
    };
    providers::register_provider_with(3, Some(short)).unwrap();
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    providers::register_provider_with(4, None).unwrap();
    assert_eq!(providers::clients(1), vec![hook::CLIENT_MODULE_ID]);
    for id in [2, 3, 4] {
        assert!(providers::clients(id).is_empty(), "provider {id} bound");
        let d = deliver(id, &Event::new(DROP, b"n"), DeliveryIrql::Passive);
        assert!(d.clients.is_empty(), "{d:?}");
    }
    let binds: Vec<(GUID, Option<i32>)> = log::tl_events_named("ProviderBind")
        .iter()
        .map(|e| (e.guid("ProviderModuleId").unwrap(), e.status("Status")))
        .collect();
    let mut expected: Vec<(GUID, Option<i32>)> = [1, 2, 3, 4]
        .map(|id| {
            let status = if id == 1 { 0 } else { STATUS_NOINTERFACE };
            (providers::provider_module_id(id), Some(status))
        })
        .to_vec();
    let mut sorted = binds.clone();
    sorted.sort_by_key(|(g, _)| g.data1);
    expected.sort_by_key(|(g, _)| g.data1);
    assert_eq!(sorted, expected, "one ProviderBind per provider: {binds:?}");
    // The refusals changed nothing for the good provider.
    deliver(1, &Event::new(FLOW, b"ok"), DeliveryIrql::Dispatch);
    assert_eq!(
        env.records(),
        vec![hook::monitor_record(Event::new(FLOW, b"ok").bytes())]
    );
    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn a_binding_the_provider_refuses_is_traced_as_a_failed_bind() {
    let env = setup();
    log::etw_enable(&hook::ETW_PROVIDER, 5, KEYWORD_NETEVENT, 0);
    providers::register_provider(1).unwrap();
    // The provider cannot allocate its side of the binding: NMR fails the
    // driver's NmrClientAttachProvider, and the driver gives the binding up.
    fault::fail_nth(providers::ATTACH_FAULT, 1);
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    assert!(
        providers::clients(1).is_empty(),
        "bound despite the refusal"
    );
    let binds: Vec<(GUID, Option<i32>)> = log::tl_events_named("ProviderBind")
        .iter()
        .map(|e| (e.guid("ProviderModuleId").unwrap(), e.status("Status")))
        .collect();
    assert_eq!(binds.len(), 1, "one ProviderBind: {binds:?}");
    assert_eq!(binds[0].0, providers::provider_module_id(1));
    assert_eq!(
        binds[0].1,
        Some(ntsim::status::STATUS_INSUFFICIENT_RESOURCES),
        "the bind is traced with the provider's status: {binds:?}"
    );
    let d = deliver(1, &Event::new(DROP, b"r"), DeliveryIrql::Passive);
    assert!(d.clients.is_empty(), "{d:?}");
    assert!(env.records().is_empty());
    drop(link);
    drop(program);
    env.finish();
}

/// The event delivery thread `thread` makes as its `seq`th: unique (the
/// thread and number are in the PktMon header), of a type and size that
/// vary (every seventh larger than the per-processor buffer).
fn stress_event(thread: u8, seq: u32) -> Event {
    let kind = [DROP, FLOW, 7][seq as usize % 3];
    let len = if seq % 7 == 3 {
        4100
    } else {
        seq as usize % 61
    };
    let mut tail = vec![thread];
    tail.extend_from_slice(&seq.to_le_bytes());
    Event::with_header(kind, &tail, &vec![thread ^ seq as u8; len]).unwrap()
}

#[test]
fn attach_detach_and_provider_churn_while_events_flow() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    const CYCLES: usize = 40;
    const CAPTURES: [u32; 4] = [
        providers::CAPTURE_ALL,
        providers::CAPTURE_FLOW,
        providers::CAPTURE_DROP,
        providers::CAPTURE_NONE,
    ];
    let env = setup();
    providers::register_provider(1).unwrap();
    // One object (one ring buffer) for a link attached throughout with
    // capture type All, one per capture type for the links that come and go.
    let steady_object = load_object();
    let steady_program =
        LoadedProgram::load(steady_object.program("monitor_netevents").unwrap().clone()).unwrap();
    let steady_link = steady_program
        .attach(hook::ATTACH_TYPE, &opts(providers::CAPTURE_ALL), 0)
        .unwrap();
    let objects: Vec<Object> = CAPTURES.iter().map(|_| load_object()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let within = |what: &str| {
        assert!(
            Instant::now() < deadline,
            "the stress did not finish within 120 s ({what})"
        )
    };
    let done = AtomicBool::new(false);
    // A thread that fails stops the others at once (its panic fails the
    // test when the scope ends), instead of leaving them to the deadline.
    struct StopOnPanic<'a>(&'a AtomicBool);
    impl Drop for StopOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, Ordering::Release);
            }
        }
    }
    // Deliveries to provider 1 that returned.
    let completed = AtomicU64::new(0);
    // (provider, event, delivered to the driver's client)
    let delivered: Mutex<Vec<(u32, Event, bool)>> = Mutex::new(Vec::new());
    // Records drained as the stress runs (index 4: the steady link's).
    let drained: Mutex<Vec<Vec<Vec<u8>>>> = Mutex::new(vec![Vec::new(); 5]);
    let drain = || {
        let mut d = drained.lock().unwrap();
        for (i, o) in objects.iter().chain([&steady_object]).enumerate() {
            d[i].extend(o.map(hook::MONITOR_MAP).unwrap().drain_ring());
        }
    };
    let mut churns = 0;
    std::thread::scope(|scope| {
        for thread in 0..2u8 {
            let (done, completed, delivered, drain) = (&done, &completed, &delivered, &drain);
            scope.spawn(move || {
                let _stop = StopOnPanic(done);
                let mut seq = 0u32;
                while !done.load(Ordering::Acquire) {
                    within("delivering");
                    let irql = if seq.is_multiple_of(2) {
                        DeliveryIrql::Passive
                    } else {
                        DeliveryIrql::Dispatch
                    };
                    let provider = if seq % 4 == 1 { 2 } else { 1 };
                    let event = stress_event(thread, seq);
                    seq += 1;
                    let got = match providers::deliver(Some(provider), &event, irql) {
                        Ok(d) => {
                            assert!(d.clients.len() <= 1, "{d:?}");
                            d.delivered() == 1
                        }
                        // Provider 2 is between registrations.
                        Err(e) => {
                            assert_eq!(provider, 2, "{e}");
                            false
                        }
                    };
                    if provider == 1 {
                        assert!(got, "the steady link keeps provider 1 bound and asking");
                        completed.fetch_add(1, Ordering::AcqRel);
                    }
                    delivered.lock().unwrap().push((provider, event, got));
                    if seq.is_multiple_of(64) {
                        drain();
                    }
                }
            });
        }
        let attachers: Vec<_> = (0..2usize)
            .map(|t| {
                let (objects, completed, done) = (&objects, &completed, &done);
                scope.spawn(move || {
                    let _stop = StopOnPanic(done);
                    for cycle in 0..CYCLES {
                        let which = (cycle + t) % CAPTURES.len();
                        let object = &objects[which];
                        let program = LoadedProgram::load(
                            object.program("monitor_netevents").unwrap().clone(),
                        )
                        .unwrap();
                        let link = program
                            .attach(hook::ATTACH_TYPE, &opts(CAPTURES[which]), 0)
                            .unwrap();
                        // Three deliveries to provider 1 return after the
                        // attach: with two delivering threads, at least one
                        // of them began after it.
                        let start = completed.load(Ordering::Acquire);
                        while completed.load(Ordering::Acquire) < start + 3 {
                            if done.load(Ordering::Acquire) {
                                // Another thread failed.
                                return;
                            }
                            within("waiting for events while attached");
                            std::thread::yield_now();
                        }
                        drop(link);
                        drop(program);
                    }
                })
            })
            .collect();
        let churner = {
            let done = &done;
            scope.spawn(move || {
                let _stop = StopOnPanic(done);
                let mut n = 0;
                while !done.load(Ordering::Acquire) {
                    within("registering provider 2");
                    providers::register_provider(2).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                    providers::deregister_provider(2).unwrap();
                    n += 1;
                }
                n
            })
        };
        for a in attachers {
            a.join().unwrap();
        }
        done.store(true, Ordering::Release);
        churns = churner.join().unwrap();
    });
    drain();
    assert!(churns > 0, "provider 2 never churned");
    let delivered = delivered.into_inner().unwrap();
    let drained = drained.into_inner().unwrap();
    // Every record is the exact record of an event delivered to the
    // driver's client; the steady link got each such event exactly once.
    let mut expected: HashMap<Vec<u8>, (u32, u32)> = HashMap::new();
    for (_, event, got) in &delivered {
        let counts = expected
            .entry(hook::monitor_record(event.bytes()))
            .or_insert((0, event.event_type().unwrap()));
        if *got {
            counts.0 += 1;
        }
    }
    let mut steady: HashMap<&[u8], u32> = HashMap::new();
    for r in &drained[4] {
        *steady.entry(&r[..]).or_default() += 1;
    }
    for (record, (times, _)) in &expected {
        assert_eq!(
            steady.get(&record[..]).copied().unwrap_or(0),
            *times,
            "the steady link's records of an event: {:02x?}",
            &record[..12]
        );
    }
    assert_eq!(drained[4].len(), steady.values().sum::<u32>() as usize);
    let mut coming_and_going = 0;
    for (i, records) in drained[..4].iter().enumerate() {
        for r in records {
            let (times, kind) = expected
                .get(r)
                .unwrap_or_else(|| panic!("a record of no delivered event: {r:02x?}"));
            assert!(*times > 0, "a record of an event never delivered");
            assert!(
                providers::capture_accepts(CAPTURES[i], Some(*kind)),
                "a {} link got an event of type {kind}",
                providers::capture_name(CAPTURES[i])
            );
        }
        // At most one link of each thread at a time.
        let mut per_event: HashMap<&[u8], u32> = HashMap::new();
        for r in records {
            *per_event.entry(&r[..]).or_default() += 1;
        }
        assert!(per_event.values().all(|&n| n <= 2));
        coming_and_going += records.len();
    }
    assert!(drained[3].is_empty(), "a None link got events");
    assert!(
        !drained[0].is_empty(),
        "no All link that came and went got an event"
    );
    assert!(coming_and_going > 0);
    drop(steady_link);
    drop(steady_program);
    drop(steady_object);
    drop(objects);
    // The last link gone, the client leaves provider 1 (on a worker).
    while !providers::clients(1).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the NMR client was not deregistered after the last detach"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(violation::take().is_empty());
    env.finish();
}

#[test]
fn malformed_events_are_dropped() {
    let env = setup();
    providers::register_provider(1).unwrap();
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    let short = vec![DROP as u8; providers::PKTMON_EVENT_HEADER_LENGTH - 1];
    deliver(1, &Event::raw(&short), DeliveryIrql::Passive);
    deliver(1, &Event::raw(&[]), DeliveryIrql::Dispatch);
    assert!(env.records().is_empty(), "nothing shorter than the header");
    let exact = Event::new(DROP, b"");
    deliver(1, &exact, DeliveryIrql::Passive);
    assert_eq!(env.records(), vec![hook::monitor_record(exact.bytes())]);
    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn an_event_larger_than_the_buffer_grows_it() {
    let env = setup();
    providers::register_provider(1).unwrap();
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    let big = Event::new(FLOW, &vec![0x5a; 9000]);
    for irql in [DeliveryIrql::Passive, DeliveryIrql::Dispatch] {
        deliver(1, &big, irql);
    }
    assert_eq!(env.records(), vec![hook::monitor_record(big.bytes()); 2]);
    drop(link);
    drop(program);
    env.finish();
    assert!(violation::take().is_empty());
}

#[test]
fn the_test_run_rebuilds_the_context_from_data() {
    let env = setup();
    let program = env.program();
    let event = Event::new(DROP, b"payload");
    let mut data = vec![DROP as u8, 0, 1, 0];
    data.extend_from_slice(event.bytes());
    let out = program
        .test_run(&data, &[0u8; 24], data.len(), 24)
        .expect("a framed drop event runs");
    assert_eq!(out.data_out, data, "data_out is data_in");
    assert_eq!(
        out.context_out,
        vec![0u8; 24],
        "no kernel address comes back"
    );
    assert_eq!(env.records(), vec![hook::monitor_record(event.bytes())]);
    for (bad, what) in [
        (data[..0x38].to_vec(), "shorter than both headers"),
        ([&[99u8, 0, 1, 0][..], event.bytes()].concat(), "type 99"),
    ] {
        assert!(
            program.test_run(&bad, &[0u8; 24], 4096, 24).is_err(),
            "{what} refused"
        );
    }
    drop(program);
    env.finish();
}

/// A test run's data: the data header of `type`, then a PktMon header
/// (event id `type`) and `payload`.
fn test_data(event_type: u8, payload: &[u8]) -> (Vec<u8>, Event) {
    let event = Event::new(u32::from(event_type), payload);
    let mut data = vec![event_type, 0, 1, 0];
    data.extend_from_slice(event.bytes());
    (data, event)
}

#[test]
fn the_test_run_boundaries() {
    let env = setup();
    log::etw_enable(&hook::ETW_PROVIDER, 5, KEYWORD_NETEVENT, 0);
    let program = env.program();
    // Each refusal is traced once, with the check that refused it.
    let refused_because = |data: &[u8], context_in: &[u8], reason: &str, what: &str| {
        log::take_etw_events();
        let r = program.test_run(data, context_in, 4096, 24);
        assert!(
            matches!(
                r,
                Err(CoreError::TestRun(
                    ntsim::ebpf::TestRunError::ContextCreate(
                        ntsim::ebpf::abi::EBPF_INVALID_ARGUMENT
                    )
                ))
            ),
            "{what}: {r:?}"
        );
        let traced: Vec<(Option<String>, Option<String>)> = log::tl_events_named("TestRunRefused")
            .iter()
            .map(|e| {
                (
                    e.str("Hook").map(String::from),
                    e.str("Reason").map(String::from),
                )
            })
            .collect();
        assert_eq!(
            traced,
            [(Some("netevent".to_string()), Some(reason.to_string()))],
            "{what}: the TestRunRefused events"
        );
    };
    let refused = |data: &[u8], context_in: &[u8], what: &str| {
        refused_because(data, context_in, "InvalidInput", what)
    };
    // Exactly both headers (0x39 bytes, no payload) is an event; one byte
    // less is not.
    let (exact, event) = test_data(DROP as u8, b"");
    assert_eq!(exact.len(), 0x39);
    let out = program
        .test_run(&exact, &[0u8; 24], exact.len(), 24)
        .expect("0x39 bytes run");
    assert_eq!(out.data_out, exact);
    assert_eq!(env.records(), vec![hook::monitor_record(event.bytes())]);
    refused(&exact[..0x38], &[0u8; 24], "0x38 bytes");
    refused(&[], &[0u8; 24], "no data");
    // Drop (100) and flow (101) run; every other type is refused.
    for t in [DROP as u8, FLOW as u8] {
        let (data, event) = test_data(t, b"p");
        let out = program.test_run(&data, &[0u8; 24], data.len(), 24);
        assert_eq!(out.expect("drop and flow run").data_out, data);
        assert_eq!(env.records(), vec![hook::monitor_record(event.bytes())]);
    }
    for t in [0u8, 1, 99, 102, 255] {
        refused(&test_data(t, b"p").0, &[0u8; 24], &format!("type {t}"));
    }
    assert!(
        env.records().is_empty(),
        "no refused run reached the program"
    );
    // The context in must hold netevent_event_md_t.
    refused_because(
        &test_data(DROP as u8, b"p").0,
        &[0u8; 23],
        "InvalidBuffers",
        "a 23-byte context",
    );
    // Outputs that do not fit come back empty (size 0), the run itself
    // succeeds.
    let (data, event) = test_data(FLOW as u8, b"payload");
    let out = program
        .test_run(&data, &[0u8; 24], data.len(), 23)
        .expect("a short context out is no error");
    assert_eq!(out.context_out, Vec::<u8>::new(), "ctx_out of 23 bytes");
    assert_eq!(out.data_out, data);
    let out = program
        .test_run(&data, &[0u8; 24], data.len() - 1, 24)
        .expect("a short data out is no error");
    assert_eq!(out.data_out, Vec::<u8>::new(), "data_out one byte short");
    assert_eq!(out.context_out, vec![0u8; 24]);
    assert_eq!(env.records(), vec![hook::monitor_record(event.bytes()); 2]);
    drop(program);
    env.finish();
}

#[test]
fn nothing_of_the_driver_outlives_its_unload() {
    let mut env = setup();
    providers::register_provider(1).unwrap();
    let (program, link) = env.attach(providers::CAPTURE_ALL);
    deliver(1, &Event::new(DROP, b"z"), DeliveryIrql::Passive);
    // The driver's pool blocks (its framing buffers among them) carry
    // upstream's tag 'tvEN' (shown NEvt), not ntosebpfext's.
    let blocks: Vec<String> = env
        .sim
        .outstanding()
        .into_iter()
        .filter(|l| l.contains("ExAllocatePool2"))
        .collect();
    assert!(
        blocks.iter().any(|l| l.contains("tagged 'NEvt'")),
        "{blocks:#?}"
    );
    assert!(
        !blocks.iter().any(|l| l.contains("tagged 'Ntos'")),
        "{blocks:#?}"
    );
    drop(link);
    drop(program);
    env.sim.unload_driver().expect("the driver unloads");
    assert!(
        providers::clients(1).is_empty(),
        "the driver's client left the provider at unload"
    );
    // ntsim's provider is the system's, not the driver's.
    providers::deregister_provider(1).unwrap();
    assert!(
        env.sim.outstanding().is_empty(),
        "{:?}",
        env.sim.outstanding()
    );
    drop(env.object);
    env.sim.finish().unwrap();
}

#[test]
fn every_failure_on_the_way_leaves_nothing_behind() {
    // Every fallible call from DriverEntry to the events and back, failed
    // one at a time: the load, the attach or the binding fails, or the
    // event reaches the program; the driver unloads clean in every case.
    let image = driver_image_named("neteventebpfext");
    let covered = ntsim::sim::sweep(|injection| {
        let mut sim = Sim::new();
        if let Some(i) = injection {
            fault::fail_nth(&i.api, i.call);
        }
        let context = format!("{injection:?}");
        let status = sim.load_driver(&image).unwrap();
        if status != 0 {
            assert!(injection.is_some(), "DriverEntry failed without a fault");
        } else {
            // ntsim's own provider may be the call that fails.
            let provider = providers::register_provider(1).is_ok();
            assert!(provider || injection.is_some(), "{context}");
            let attached = ntsim::ebpf::Object::load(
                &std::fs::read(ntsim::build::workspace_root().join("tests/bpf/netevent_monitor.o"))
                    .unwrap(),
                &ntsim::ebpf::store::section_map(),
            )
            .ok()
            .and_then(|object| {
                let program =
                    LoadedProgram::load(object.program("monitor_netevents")?.clone()).ok()?;
                let link = program
                    .attach(hook::ATTACH_TYPE, &opts(providers::CAPTURE_ALL), 0)
                    .ok()?;
                Some((object, program, link))
            });
            if injection.is_none() {
                assert!(attached.is_some(), "attach without a fault");
            }
            let bound = provider
                && !deliver(1, &Event::new(DROP, b"s"), DeliveryIrql::Passive)
                    .clients
                    .is_empty();
            if let Some((object, program, link)) = attached {
                let records = object.map(hook::MONITOR_MAP).unwrap().drain_ring();
                // The event fits the per-processor buffer (nothing to
                // allocate): whatever failed before, a bound client
                // delivers it to the attached program.
                if bound {
                    assert_eq!(records.len(), 1, "{context}");
                }
                drop(link);
                drop(program);
                drop(object);
            }
            ntsim::io::wait_idle();
            sim.unload_driver().unwrap();
            if provider {
                assert!(providers::clients(1).is_empty(), "{context}");
            }
        }
        if let Err(findings) = sim.finish() {
            panic!("{context}: {findings}");
        }
    });
    // Every fallible call the way makes, by name and ordinal: a call that
    // disappears (or a new one nobody looked at) fails here. The registry
    // calls of the store write are swept too (tests/store.rs checks what a
    // failure of each leaves); here only that they were.
    let points: Vec<String> = covered
        .iter()
        .filter(|i| !i.api.starts_with("Zw"))
        .map(|i| format!("{}#{}", i.api, i.call))
        .collect();
    let mut expected: Vec<String> = vec![
        // The ETW provider (DriverEntry).
        "EtwRegister#1".into(),
        // The program-information and hook providers (DriverEntry), then
        // ntsim's netevent provider 1.
        "NmrRegisterProvider#1".into(),
        "NmrRegisterProvider#2".into(),
        "NmrRegisterProvider#3".into(),
        // The core's program-information and hook clients (load, attach)
        // and the driver's netevent client (first attach).
        "NmrRegisterClient#1".into(),
        "NmrRegisterClient#2".into(),
        "NmrRegisterClient#3".into(),
        // The provider's binding of the driver's client.
        format!("{}#1", providers::ATTACH_FAULT),
    ];
    // The driver's pool allocations from DriverEntry to the unload,
    // including the per-processor buffers the first attach allocates.
    expected.extend((1..=11).map(|n| format!("ExAllocatePool2#{n}")));
    expected.sort();
    let mut sorted = points.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "the fault-injection points of the way");
    for api in [
        "ZwCreateKey",
        "ZwSetValueKey",
        "ZwOpenKey",
        "ZwEnumerateKey",
    ] {
        assert!(
            covered.iter().any(|i| i.api == api),
            "{api} was never failed"
        );
    }
}
