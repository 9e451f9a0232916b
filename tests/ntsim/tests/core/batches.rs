//! The core's checks of how an extension uses batches and detaches: every
//! batch ends, the IRQL does not change inside one, the batch ends before
//! the provider releases its last reference to a link invoked in it, and no
//! new invocation starts after the provider's detach began.

use super::running::{bind, Bound};
use super::*;
use ntsim::sync::{self, EX_SPIN_LOCK};

/// One batched invocation on a fresh context.
fn batch_invoke(client: &HookClient, state: &[u64]) -> ebpf_result_t {
    let mut f = Framed::default();
    client.batch_invoke(&mut f.ctx, state).0
}

/// One plain invocation on a fresh context.
fn invoke(client: &HookClient) -> ebpf_result_t {
    let mut f = Framed::default();
    client.invoke(&mut f.ctx).0
}

/// Ends a bound program whose test expects findings at `finish`: returns
/// them.
fn end_with_findings(b: Bound, sim: Sim) -> String {
    b.drop_all();
    match sim.finish() {
        Ok(()) => panic!("finish found nothing"),
        Err(findings) => findings,
    }
}

#[test]
fn a_batch_never_ended_is_reported() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let mut state = [0u64; 8];

    // A second batch_begin on the state of a batch never ended.
    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    let v = take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("whose batch begun on thread") && v[0].contains("was never ended"),
        "{v:?}"
    );
    assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
    assert!(take_violations().is_empty());

    // A batch still open when the test ends is left behind.
    let mut other = [0u64; 8];
    assert_eq!(client.batch_begin(&mut other, 64), EBPF_SUCCESS);
    let findings = end_with_findings(b, sim);
    assert!(
        findings.contains(&format!(
            "left behind: an eBPF batch (state {:p}) begun on thread",
            other.as_ptr()
        )) && findings.contains("was never ended"),
        "{findings}"
    );
}

#[test]
fn changing_the_irql_inside_a_batch_is_reported_even_when_it_is_restored() {
    let sim = Sim::new();
    let b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let mut state = [0u64; 8];
    let mut lock: EX_SPIN_LOCK = 0;

    // A spin lock taken and released between two invocations of one
    // batch: the IRQL is back at PASSIVE_LEVEL for each call into the
    // core, yet it changed while the batch was open.
    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
    // SAFETY: a lock on this stack, taken and released once.
    unsafe {
        let old = sync::ExAcquireSpinLockShared(&mut lock);
        sync::ExReleaseSpinLockShared(&mut lock, old);
    }
    assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
    assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
    let v = take_violations();
    assert_eq!(v.len(), 1, "reported once: {v:?}");
    assert!(
        v[0].contains("IRQL changed from 0 to 2 while an eBPF batch")
            && v[0].contains("must not change until it ends"),
        "{v:?}"
    );

    // The same lock outside a batch is fine.
    // SAFETY: as above.
    unsafe {
        let old = sync::ExAcquireSpinLockShared(&mut lock);
        sync::ExReleaseSpinLockShared(&mut lock, old);
    }
    assert!(take_violations().is_empty());
    b.end(sim);
}

/// Drops the link on another thread with the provider's detach left
/// pending; returns the thread and the binding whose detach is pending.
fn detach_pending(b: &mut Bound) -> (std::thread::JoinHandle<()>, HANDLE) {
    let (tx, rx) = mpsc::channel();
    *b.hook.pend_detach.lock().unwrap() = Some(tx);
    let link = b.link.take().expect("the link is attached");
    let dropper = std::thread::spawn(move || link.detach());
    let binding = rx
        .recv_timeout(sync::wait_limit())
        .expect("ProviderDetachClient was called");
    // The provider's callback sends the binding before it returns
    // STATUS_PENDING: wait until the NMR has seen it return.
    sync::wait_for("ProviderDetachClient to return STATUS_PENDING", || {
        matches!(
            nmr::binding(binding).map(|b| b.state),
            Some(nmr::BindingState::Detaching {
                provider: nmr::DetachState::Pending,
                ..
            })
        )
    });
    (dropper, binding)
}

fn complete_detach(binding: HANDLE) {
    // SAFETY: the binding whose detach the test's provider left pending;
    // completed at DISPATCH_LEVEL, as a DPC would.
    irql::at(2, || unsafe { NmrProviderDetachClientComplete(binding) });
}

#[test]
fn releasing_the_last_reference_before_the_batch_ends_is_reported() {
    for cleanup_irql in [2, 0] {
        let sim = Sim::new();
        nmr::set_cleanup_irql(cleanup_irql);
        let mut b = bind("core_invoke", builder(program_type()).build());
        let client = b.client();
        let mut state = [0u64; 8];
        assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
        assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
        let (dropper, binding) = detach_pending(&mut b);
        // The provider completes its detach (its last reference to the
        // link goes) while the batch that invoked the link is open.
        complete_detach(binding);
        assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
        dropper.join().unwrap();
        sync::wait_for("the NMR cleanup of the link", || {
            client.cleaned.load(Ordering::SeqCst)
        });
        let v = take_violations();
        assert_eq!(v.len(), 1, "cleanup at IRQL {cleanup_irql}: {v:?}");
        assert!(
            v[0].contains(&format!(
                "completed its detach of link binding {binding:#x} (released its last \
                 reference to the link) while a batch that invoked the link was still open"
            )),
            "{v:?}"
        );
        *b.hook.pend_detach.lock().unwrap() = None;
        b.end(sim);
    }
}

#[test]
fn ending_the_batch_before_releasing_the_last_reference_is_fine() {
    let sim = Sim::new();
    let mut b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let mut state = [0u64; 8];
    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
    let (dropper, binding) = detach_pending(&mut b);
    assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
    complete_detach(binding);
    dropper.join().unwrap();
    assert!(take_violations().is_empty());
    *b.hook.pend_detach.lock().unwrap() = None;
    b.end(sim);
}

#[test]
fn a_new_invocation_after_the_detach_began_is_reported_but_one_in_flight_is_not() {
    let sim = Sim::new();
    let mut b = bind("core_invoke", builder(program_type()).build());
    let client = b.client();
    let mut state = [0u64; 8];
    // A batch begun before the provider's detach: its invocations are in
    // flight.
    assert_eq!(client.batch_begin(&mut state, 64), EBPF_SUCCESS);
    let (dropper, binding) = detach_pending(&mut b);
    assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
    assert_eq!(batch_invoke(&client, &state), EBPF_SUCCESS);
    assert_eq!(client.batch_end(&mut state), EBPF_SUCCESS);
    assert!(take_violations().is_empty(), "in flight");
    // A plain invoke after the detach began: the provider may have taken
    // its reference before, so this thread's first one passes...
    assert_eq!(invoke(&client), EBPF_SUCCESS);
    assert!(take_violations().is_empty(), "the first late one");
    // ...but a second is a new invocation, which the core refuses.
    let invocations = b.program.invocations();
    let r = invoke(&client);
    assert_eq!(r, EBPF_EXTENSION_FAILED_TO_LOAD);
    assert_eq!(
        b.program.invocations(),
        invocations,
        "the program did not run"
    );
    let v = take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains(&format!(
            "a new invocation of link binding {binding:#x} after its ProviderDetachClient was called"
        )),
        "{v:?}"
    );
    // So is a batch begun after the detach, past the thread's first call.
    let mut late = [0u64; 8];
    assert_eq!(client.batch_begin(&mut late, 64), EBPF_SUCCESS);
    assert_eq!(batch_invoke(&client, &late), EBPF_EXTENSION_FAILED_TO_LOAD);
    assert_eq!(client.batch_end(&mut late), EBPF_SUCCESS);
    assert_eq!(take_violations().len(), 1);
    complete_detach(binding);
    dropper.join().unwrap();
    *b.hook.pend_detach.lock().unwrap() = None;
    b.end(sim);
}
