//! The simulated netevent providers against a host-side NMR client
//! ([`crate::hook::netevent::NeteventClient`]), and the client side of the
//! NMR exports as a netevent client uses them.

use super::*;
use crate::hook::netevent::{ClientConfig, NeteventClient, Received};
use crate::kernel::nmr::{BindingState, Side};
use crate::kernel::status::STATUS_INSUFFICIENT_RESOURCES;
use crate::kernel::sync::wait_for;
use crate::Sim;

fn module(n: u32) -> GUID {
    GUID {
        data1: 0x7e57_0000 + n,
        data2: 0x4e45,
        data3: 0x5445,
        data4: *b"ntsimcli",
    }
}

fn client(n: u32) -> NeteventClient {
    NeteventClient::register(ClientConfig::new(module(n))).expect("the client registers")
}

fn client_with(n: u32, f: impl FnOnce(&mut ClientConfig)) -> NeteventClient {
    let mut c = ClientConfig::new(module(n));
    f(&mut c);
    NeteventClient::register(c).expect("the client registers")
}

fn violations_containing(needle: &str) -> Vec<String> {
    violation::peek()
        .into_iter()
        .map(|v| v.to_string())
        .filter(|v| v.contains(needle))
        .collect()
}

fn finish(sim: Sim) {
    if let Err(e) = sim.finish() {
        panic!("the machine ended with findings:\n{e}");
    }
}

#[test]
fn a_client_attaches_and_gets_the_exact_bytes() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client(1);
    assert_eq!(c.attaches(), [(SIM_PROVIDER_MODULE_ID, STATUS_SUCCESS)]);
    // The registration instance of the netevent NPI: { Size 4, Version 2 }.
    assert_eq!(
        c.provider_specifics(),
        [Some(NpiSpecific {
            size: 4,
            version: 2
        })]
    );
    assert_eq!(clients(1), [module(1)]);

    let payload = [0xde, 0xad, 0xbe, 0xef, 0x01];
    let event = Event::with_header(EVENT_TYPE_DROP, &[0xa1, 0xa2], &payload).unwrap();
    let d = deliver(Some(1), &event, DeliveryIrql::Passive).unwrap();
    let mut expected = vec![100, 0, 0, 0, 0xa1, 0xa2];
    expected.resize(0x35, 0);
    expected.extend_from_slice(&payload);
    assert_eq!(
        c.take_events(),
        [Received {
            bytes: expected,
            irql: PASSIVE_LEVEL
        }]
    );
    assert_eq!(d.provider, 1);
    assert_eq!(d.event_type, Some(100));
    assert_eq!(
        d.clients,
        [ClientDelivery {
            module: module(1),
            binding: nmr::bindings()[0].handle,
            capture_type: CAPTURE_ALL,
            result: ClientResult::Delivered,
        }]
    );
    // A header tail longer than the PktMon header is refused.
    assert!(Event::with_header(EVENT_TYPE_FLOW, &[0; 0x32], &[]).is_err());
    drop(c);
    finish(sim);
}

#[test]
fn deliveries_alternate_irql_unless_told() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client(1);
    let e = Event::new(EVENT_TYPE_FLOW, &[1]);
    let levels: Vec<KIRQL> = (0..3)
        .map(|_| deliver(None, &e, DeliveryIrql::Alternate).unwrap().irql)
        .collect();
    assert_eq!(levels, [PASSIVE_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL]);
    deliver(None, &e, DeliveryIrql::Dispatch).unwrap();
    deliver(None, &e, DeliveryIrql::Passive).unwrap();
    let seen: Vec<KIRQL> = c.take_events().iter().map(|r| r.irql).collect();
    assert_eq!(
        seen,
        [
            PASSIVE_LEVEL,
            DISPATCH_LEVEL,
            PASSIVE_LEVEL,
            DISPATCH_LEVEL,
            PASSIVE_LEVEL
        ]
    );
    drop(c);
    finish(sim);
}

#[test]
fn the_capture_type_is_read_at_every_event_and_filters() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client_with(1, |c| c.capture_type = CAPTURE_DROP);
    let drop_event = Event::new(EVENT_TYPE_DROP, &[1]);
    let flow_event = Event::new(EVENT_TYPE_FLOW, &[2]);
    let other = Event::new(7, &[3]);
    let short = Event::raw(&[100, 0]);
    let results = |c: &NeteventClient| -> Vec<usize> {
        let n = [&drop_event, &flow_event, &other, &short]
            .iter()
            .map(|e| deliver(None, e, DeliveryIrql::Passive).unwrap().delivered())
            .collect();
        c.take_events();
        n
    };
    assert_eq!(results(&c), [1, 0, 0, 0], "Drop");
    c.set_capture_type(CAPTURE_FLOW);
    assert_eq!(results(&c), [0, 1, 0, 0], "Flow");
    c.set_capture_type(CAPTURE_NONE);
    assert_eq!(results(&c), [0, 0, 0, 0], "None");
    c.set_capture_type(CAPTURE_ALL);
    assert_eq!(results(&c), [1, 1, 1, 1], "All");
    let d = deliver(None, &flow_event, DeliveryIrql::Passive).unwrap();
    assert_eq!(d.clients[0].capture_type, CAPTURE_ALL);
    c.set_capture_type(CAPTURE_DROP);
    let d = deliver(None, &flow_event, DeliveryIrql::Passive).unwrap();
    assert_eq!(d.clients[0].result, ClientResult::Filtered);
    assert_eq!(d.clients[0].capture_type, CAPTURE_DROP);
    // A capture type that is none of the four is the client's bug.
    c.set_capture_type(9);
    let d = deliver(None, &drop_event, DeliveryIrql::Passive).unwrap();
    assert_eq!(d.clients[0].result, ClientResult::Malformed);
    assert_eq!(violations_containing("has capture_type 9").len(), 1);
    violation::take();
    drop(c);
    finish(sim);
}

#[test]
fn two_providers_each_deliver_and_one_leaves() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    register_provider(2).unwrap();
    assert_eq!(registered(), [1, 2]);
    let a = client(1);
    assert_eq!(
        a.attaches(),
        [
            (provider_module_id(1), STATUS_SUCCESS),
            (provider_module_id(2), STATUS_SUCCESS)
        ]
    );
    assert_ne!(provider_module_id(1), provider_module_id(2));
    let e = Event::new(EVENT_TYPE_FLOW, &[9]);
    let err = deliver(None, &e, DeliveryIrql::Passive).unwrap_err();
    assert!(
        err.contains("several netevent providers are registered (1, 2)"),
        "{err}"
    );
    assert_eq!(
        deliver(Some(2), &e, DeliveryIrql::Passive)
            .unwrap()
            .delivered(),
        1
    );
    assert_eq!(
        deliver(Some(1), &e, DeliveryIrql::Passive)
            .unwrap()
            .delivered(),
        1
    );
    assert_eq!(a.take_events().len(), 2);
    // A second client attaches to both as well.
    let b = client(2);
    assert_eq!(
        deliver(Some(2), &e, DeliveryIrql::Passive)
            .unwrap()
            .delivered(),
        2
    );
    // Provider 1 leaves: both clients detach from it only.
    deregister_provider(1).unwrap();
    assert_eq!((a.detaches(), a.cleanups()), (1, 1));
    assert_eq!((b.detaches(), b.cleanups()), (1, 1));
    assert_eq!(registered(), [2]);
    let err = deliver(Some(1), &e, DeliveryIrql::Passive).unwrap_err();
    assert!(
        err.contains("no netevent provider 1 is registered (registered: 2)"),
        "{err}"
    );
    assert_eq!(
        deliver(None, &e, DeliveryIrql::Passive)
            .unwrap()
            .delivered(),
        2
    );
    assert!(register_provider(2)
        .unwrap_err()
        .contains("already registered"));
    assert!(deregister_provider(5).is_err());
    drop((a, b));
    finish(sim);
}

#[test]
fn no_provider_is_a_clear_error() {
    let sim = Sim::new();
    let err = deliver(
        None,
        &Event::new(EVENT_TYPE_DROP, &[]),
        DeliveryIrql::Passive,
    )
    .unwrap_err();
    assert!(err.contains("no netevent provider is registered"), "{err}");
    assert!(register_provider(0).is_err());
    finish(sim);
}

#[test]
fn provider_deregistration_waits_for_a_pending_client_detach() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client_with(1, |c| c.detach_pending = true);
    let dereg = std::thread::spawn(|| {
        crate::kernel::crash::install_thread();
        deregister_provider(1)
    });
    wait_for("the client's detach callback", || {
        !c.pending_detaches().is_empty()
    });
    // The provider's deregistration cannot complete while the client has
    // not completed its detach.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !dereg.is_finished(),
        "deregistration completed before the client's detach"
    );
    let b = c.pending_detaches()[0];
    assert!(matches!(
        nmr::binding(b).unwrap().state,
        BindingState::Detaching {
            client: nmr::DetachState::Pending,
            ..
        }
    ));
    c.complete_detaches();
    dereg.join().unwrap().unwrap();
    assert_eq!((c.detaches(), c.cleanups()), (1, 1));
    assert!(registered().is_empty());
    drop(c);
    finish(sim);
}

#[test]
fn provider_deregistration_during_a_delivery_waits_for_push_event_to_return() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client_with(1, |c| c.gated = true);
    let delivery = std::thread::spawn(|| {
        crate::kernel::crash::install_thread();
        deliver(
            None,
            &Event::new(EVENT_TYPE_DROP, &[5]),
            DeliveryIrql::Dispatch,
        )
    });
    wait_for("push_event to be entered", || c.entered() == 1);
    let dereg = std::thread::spawn(|| {
        crate::kernel::crash::install_thread();
        deregister_provider(1)
    });
    wait_for("the provider's detach to begin", || {
        nmr::bindings()
            .iter()
            .any(|b| matches!(b.state, BindingState::Detaching { .. }))
    });
    // The provider answered STATUS_PENDING (a delivery is in push_event):
    // the deregistration waits.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !dereg.is_finished(),
        "the provider detached while push_event ran"
    );
    assert!(matches!(
        nmr::bindings()[0].state,
        BindingState::Detaching {
            provider: nmr::DetachState::Pending,
            ..
        }
    ));
    c.open();
    assert_eq!(delivery.join().unwrap().unwrap().delivered(), 1);
    dereg.join().unwrap().unwrap();
    assert_eq!(c.take_events().len(), 1);
    assert_eq!(c.cleanups(), 1);
    drop(c);
    finish(sim);
}

#[test]
fn a_detaching_binding_gets_no_more_events() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client_with(1, |c| c.detach_pending = true);
    assert_eq!(c.begin_deregister(), STATUS_PENDING);
    // Both detach callbacks ran; the client's is pending: the provider
    // already stopped delivering.
    let d = deliver(
        None,
        &Event::new(EVENT_TYPE_DROP, &[]),
        DeliveryIrql::Passive,
    )
    .unwrap();
    assert_eq!(d.clients[0].result, ClientResult::Detaching);
    assert!(c.take_events().is_empty());
    c.complete_detaches();
    c.wait_deregistered();
    assert!(clients(1).is_empty());
    drop(c);
    finish(sim);
}

#[test]
fn a_malformed_client_dispatch_is_refused_and_reported() {
    type Tweak = fn(&mut ClientConfig);
    let cases: [(Tweak, &str); 7] = [
        (|c| c.version = 1, "header.version is 1"),
        (|c| c.size = 24, "header.size is 24"),
        (
            |c| c.helper_function_count = 0,
            "helper_function_count is 0",
        ),
        (|c| c.null_helpers = true, "helper_function_address is NULL"),
        (
            |c| c.null_push = true,
            "helper_function_address[0] (push_event) is NULL",
        ),
        (
            |c| c.null_dispatch = true,
            "the client dispatch table is NULL",
        ),
        (|c| c.capture_type = 0, "capture_type is 0"),
    ];
    for (tweak, needle) in cases {
        let sim = Sim::new();
        register_provider(1).unwrap();
        let c = client_with(1, tweak);
        assert_eq!(
            c.attaches(),
            [(SIM_PROVIDER_MODULE_ID, STATUS_INVALID_PARAMETER)],
            "{needle}"
        );
        assert!(clients(1).is_empty(), "{needle}");
        assert!(nmr::bindings().is_empty(), "{needle}");
        let d = deliver(
            None,
            &Event::new(EVENT_TYPE_DROP, &[]),
            DeliveryIrql::Passive,
        )
        .unwrap();
        assert!(d.clients.is_empty(), "{needle}");
        let found = violations_containing("attached with a malformed dispatch table");
        assert_eq!(found.len(), 1, "{needle}: {found:?}");
        assert!(found[0].contains(needle), "{needle}: {found:?}");
        violation::take();
        drop(c);
        finish(sim);
    }
}

#[test]
fn a_failing_provider_attach_makes_no_binding() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    fault::fail_nth(ATTACH_FAULT, 1);
    let c = client(1);
    assert_eq!(
        c.attaches(),
        [(SIM_PROVIDER_MODULE_ID, STATUS_INSUFFICIENT_RESOURCES)]
    );
    assert!(nmr::bindings().is_empty());
    drop(c);
    finish(sim);
}

#[test]
fn a_client_writing_into_the_event_is_reported() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client_with(1, |c| c.scribble = true);
    deliver(
        None,
        &Event::new(EVENT_TYPE_FLOW, &[1]),
        DeliveryIrql::Passive,
    )
    .unwrap();
    let found = violations_containing("wrote into the provider's event");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("offset 0x0 of 54"), "{found:?}");
    violation::take();
    drop(c);
    finish(sim);
}

#[test]
fn a_client_reading_past_the_event_faults() {
    const NAME: &str = "kernel::netevent::tests::a_client_reading_past_the_event_faults";
    if crate::child::is_child(NAME) {
        let _sim = Sim::new();
        register_provider(1).unwrap();
        let _c = client_with(1, |c| c.overread = true);
        let _ = deliver(
            None,
            &Event::new(EVENT_TYPE_FLOW, &[1, 2, 3]),
            DeliveryIrql::Passive,
        );
        unreachable!("reading past the event did not fault");
    }
    let out = crate::child::run_test_in_child(NAME);
    assert_eq!(
        out.status.code(),
        Some(crate::kernel::crash::FATAL_EXIT_STATUS),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("'PkMn'") && out.stderr.contains("guard page"),
        "{}",
        out.stderr
    );
}

#[test]
fn finish_deregisters_the_providers_still_registered() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    register_provider(3).unwrap();
    let c = client(1);
    drop(c);
    finish(sim);
    let _sim = Sim::new();
    assert!(registered().is_empty());
    assert!(nmr::registrations().is_empty());
}

// ---------------------------------------------------------------------------
// The client side of the NMR exports (what the driver's netevent client
// uses): the contracts Windows documents.
// ---------------------------------------------------------------------------

#[test]
fn nmr_register_client_above_passive_is_a_violation() {
    let sim = Sim::new();
    let c = irql::at(DISPATCH_LEVEL, || client(1));
    let found = violations_containing("NmrRegisterClient called at IRQL 2");
    assert_eq!(found.len(), 1, "{:?}", violation::peek());
    violation::take();
    drop(c);
    finish(sim);
}

#[test]
fn nmr_client_attach_provider_outside_the_attach_callback_is_a_violation() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client(1);
    let b = nmr::bindings()[0].handle;
    let mut ctx: *mut c_void = std::ptr::null_mut();
    let mut dispatch: *const c_void = std::ptr::null();
    // SAFETY: the out pointers are our locals; the call is refused.
    let status = unsafe {
        nmr::NmrClientAttachProvider(
            b,
            std::ptr::null_mut(),
            std::ptr::null(),
            &mut ctx,
            &mut dispatch,
        )
    };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    let found = violations_containing("called outside the ClientAttachProvider callback");
    assert_eq!(found.len(), 1, "{:?}", violation::peek());
    violation::take();
    drop(c);
    finish(sim);
}

#[test]
fn nmr_deregister_client_is_pending_and_the_wait_is_owed() {
    let sim = Sim::new();
    let c = client(1);
    // No binding at all: still STATUS_PENDING, and the wait is owed.
    assert_eq!(c.begin_deregister(), STATUS_PENDING);
    let owed = nmr::outstanding();
    assert!(
        owed.iter()
            .any(|o| o.contains("NmrWaitForClientDeregisterComplete never returned")),
        "{owed:?}"
    );
    c.wait_deregistered();
    assert!(nmr::outstanding().is_empty());
    drop(c);
    finish(sim);
}

#[test]
fn nmr_wait_without_deregistering_is_a_violation() {
    let sim = Sim::new();
    let c = client(1);
    // SAFETY: a live client handle; the call is refused.
    let status = unsafe { nmr::NmrWaitForClientDeregisterComplete(c.handle()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    assert_eq!(
        violations_containing("without a prior NmrDeregisterClient").len(),
        1,
        "{:?}",
        violation::peek()
    );
    violation::take();
    drop(c);
    finish(sim);
}

#[test]
fn a_client_deregistration_completes_only_after_every_binding_detached() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    register_provider(2).unwrap();
    let c = client_with(1, |c| c.detach_pending = true);
    assert_eq!(c.begin_deregister(), STATUS_PENDING);
    assert_eq!(c.pending_detaches().len(), 2);
    let handle = nmr::registrations()
        .into_iter()
        .find(|r| r.side == Side::Client)
        .unwrap()
        .handle;
    let waiter = std::thread::spawn(move || {
        crate::kernel::crash::install_thread();
        // SAFETY: the client's deregistered handle, waited for once here
        // (the client's own wait finds nothing owed afterwards).
        unsafe { nmr::NmrWaitForClientDeregisterComplete(handle) }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !waiter.is_finished(),
        "the wait returned with two bindings detaching"
    );
    // Completing one of the two is not enough.
    let first = c.pending_detaches()[0];
    // SAFETY: a binding whose detach this client left pending.
    unsafe { nmr::NmrClientDetachProviderComplete(first) };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !waiter.is_finished(),
        "the wait returned with one binding detaching"
    );
    let second = c.pending_detaches()[1];
    // SAFETY: as above.
    unsafe { nmr::NmrClientDetachProviderComplete(second) };
    assert_eq!(waiter.join().unwrap(), STATUS_SUCCESS);
    assert_eq!(c.cleanups(), 2);
    // The test waited itself: nothing is left for the client to do.
    c.abandon();
    finish(sim);
}

#[test]
fn a_client_image_unloaded_without_the_wait_is_a_violation() {
    let sim = Sim::new();
    register_provider(1).unwrap();
    let c = client(1);
    assert_eq!(c.begin_deregister(), STATUS_PENDING);
    let chars = nmr::registrations()
        .into_iter()
        .find(|r| r.side == Side::Client)
        .unwrap();
    // The "image" is every address: the client's characteristics lie in it.
    nmr::image_unloaded("netevent_client", 0, usize::MAX);
    let found = violations_containing(
        "NmrDeregisterClient returned STATUS_PENDING but NmrWaitForClientDeregisterComplete was never called",
    );
    assert_eq!(found.len(), 1, "{:?} {chars:?}", violation::peek());
    violation::take();
    // The NMR forgot both registrations (the provider's too, since the
    // "image" covered it): nothing is left to deregister.
    c.abandon();
    reset();
    drop(sim);
}
