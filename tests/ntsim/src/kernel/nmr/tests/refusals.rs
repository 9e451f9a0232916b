//! Tests of what the NMR refuses or flags: invalid characteristics, attaching while deregistering, a failing client, and misuse of its calls and handles.

use super::*;

#[test]
fn invalid_characteristics_are_rejected() {
    let sim = Sim::new();
    let log = new_log();
    let mut h: HANDLE = 0;
    // SAFETY: null characteristics are checked before any use.
    let s = unsafe { NmrRegisterProvider(std::ptr::null(), std::ptr::null_mut(), &mut h) };
    assert_eq!(s, STATUS_INVALID_PARAMETER);
    expect_violations(1, "null characteristics");

    let mut m = Module::provider(1, 7, &log);
    m.pchars.Version = 1;
    assert_eq!(m.register(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "Version");
    m.pchars.Version = 0;
    m.pchars.Length = 40;
    assert_eq!(m.register(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "Length");
    m.pchars.Length = 72;
    m.pchars.ProviderDetachClient = None;
    assert_eq!(m.register(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "detach callback is null");
    let mut c = Module::client(2, 7, &log);
    c.cchars.ClientAttachProvider = None;
    assert_eq!(c.register(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "attach callback is null");
    c.cchars.ClientAttachProvider = Some(client_attach);
    c.cchars.ClientRegistrationInstance.NpiId = std::ptr::null();
    assert_eq!(c.register(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "NpiId is null");
    c.cchars.ClientRegistrationInstance.NpiId = &*c.npi;
    c.cchars.ClientRegistrationInstance.ModuleId = std::ptr::null();
    assert_eq!(c.register(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "ModuleId is null");
    assert!(registrations().is_empty());
    // Cleanup callbacks are optional.
    c.cchars.ClientRegistrationInstance.ModuleId = &*c.module_id;
    c.cchars.ClientCleanupBindingContext = None;
    m.pchars.ProviderDetachClient = Some(provider_detach);
    assert_eq!(m.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert_eq!(m.unregister(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        [
            "C2 attach P1",
            "P1 attach C2",
            "C2 bound P1",
            "P1 detach C2",
            "C2 detach P1",
            "P1 cleanup C2"
        ]
    );
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn a_deregistering_module_attaches_to_no_new_counterpart() {
    let sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
    let c2 = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c2.register(), STATUS_SUCCESS);
    assert_eq!(p.deregister(), STATUS_PENDING);
    take_log(&log);
    let c3 = Module::client(3, 7, &log);
    assert_eq!(c3.register(), STATUS_SUCCESS);
    assert!(take_log(&log).is_empty());
    assert_eq!(bindings().len(), 1);
    p.complete_pending();
    assert_eq!(p.wait(), STATUS_SUCCESS);
    assert_eq!(c2.unregister(), STATUS_SUCCESS);
    assert_eq!(c3.unregister(), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn a_client_failing_after_attaching_is_flagged_and_unbound() {
    let _sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log);
    let c = Module::client(2, 7, &log).with_attach(Attach::FailLate);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    assert_eq!(
        take_log(&log),
        [
            "C2 attach P1",
            "P1 attach C2",
            "C2 bound P1",
            "C2 detach P1",
            "P1 detach C2",
            "P1 cleanup C2",
            "C2 cleanup P1"
        ]
    );
    assert!(bindings().is_empty());
    expect_violations(1, "after NmrClientAttachProvider had attached it");
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    assert!(violation::take().is_empty());
}

#[test]
fn nmr_client_attach_provider_misuse() {
    let _sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log);
    let c = Module::client(2, 7, &log).with_attach(Attach::Twice);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    // The first call attached; the second is refused.
    assert_eq!(
        *lock(&c.attach_statuses),
        [STATUS_SUCCESS, STATUS_INVALID_PARAMETER]
    );
    expect_violations(1, "called twice");
    assert_eq!(states(), [BindingState::Bound]);
    // Outside any attach callback, on a live binding.
    let b = bindings()[0].handle;
    let (mut pbc, mut pd) = (std::ptr::null_mut(), std::ptr::null());
    // SAFETY: the NMR refuses the call before using the pointers it would pass on.
    let s = unsafe {
        NmrClientAttachProvider(b, std::ptr::null_mut(), std::ptr::null(), &mut pbc, &mut pd)
    };
    assert_eq!(s, STATUS_INVALID_PARAMETER);
    expect_violations(1, "outside the ClientAttachProvider callback");
    assert!(pbc.is_null());
    assert_eq!(p.unregister(), STATUS_SUCCESS);
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    // On a dead binding handle.
    // SAFETY: as above.
    let s = unsafe {
        NmrClientAttachProvider(b, std::ptr::null_mut(), std::ptr::null(), &mut pbc, &mut pd)
    };
    assert_eq!(s, STATUS_INVALID_PARAMETER);
    expect_violations(1, "not a live binding handle");
}

#[test]
fn detach_complete_misuse_is_flagged() {
    let _sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log).with_detach(Detach::Pending);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    let b = bindings()[0].handle;
    // Not detaching yet.
    complete(Side::Provider, b);
    expect_violations(1, "not detaching");
    assert_eq!(states(), [BindingState::Bound]);
    assert_eq!(p.deregister(), STATUS_PENDING);
    // The client returned STATUS_SUCCESS: it must not complete.
    complete(Side::Client, b);
    expect_violations(1, "already completed");
    assert_eq!(
        states(),
        [detaching(DetachState::Pending, DetachState::Done)]
    );
    complete(Side::Provider, b);
    assert!(violation::take().is_empty());
    assert!(bindings().is_empty());
    // Twice: the binding is gone by now.
    complete(Side::Provider, b);
    expect_violations(1, "not a live binding handle");
    // A registration handle is not a binding handle.
    complete(Side::Client, c.handle());
    expect_violations(1, "registration handle, not a binding handle");
    assert_eq!(p.wait(), STATUS_SUCCESS);
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    assert!(violation::take().is_empty());
}

#[test]
fn registration_handle_misuse_is_flagged() {
    let _sim = Sim::new();
    let log = new_log();
    let p = Module::provider(1, 7, &log);
    let c = Module::client(2, 7, &log);
    assert_eq!(p.register(), STATUS_SUCCESS);
    assert_eq!(c.register(), STATUS_SUCCESS);
    // Wait without a prior deregister.
    assert_eq!(p.wait(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "without a prior NmrDeregisterProvider");
    assert_eq!(provider_count(), 1, "the failed wait changed nothing");
    // The wrong kind of registration handle.
    // SAFETY: the handle is refused before anything is called.
    assert_eq!(
        unsafe { NmrDeregisterClient(p.handle()) },
        STATUS_INVALID_PARAMETER
    );
    expect_violations(1, "provider registration handle, not a client one");
    // SAFETY: as above.
    assert_eq!(
        unsafe { NmrDeregisterProvider(0) },
        STATUS_INVALID_PARAMETER
    );
    expect_violations(1, "not a live registration handle");
    // Deregistering twice.
    assert_eq!(p.deregister(), STATUS_PENDING);
    assert_eq!(p.deregister(), STATUS_INVALID_PARAMETER);
    expect_violations(1, "already deregistering");
    assert_eq!(p.wait(), STATUS_SUCCESS);
    // Stale after the wait.
    assert_eq!(p.wait(), STATUS_INVALID_PARAMETER);
    assert_eq!(p.deregister(), STATUS_INVALID_PARAMETER);
    expect_violations(2, "not a live registration handle");
    assert_eq!(c.unregister(), STATUS_SUCCESS);
    // Waiting above PASSIVE_LEVEL.
    let c3 = Module::client(3, 7, &log);
    assert_eq!(c3.register(), STATUS_SUCCESS);
    assert_eq!(c3.deregister(), STATUS_PENDING);
    assert_eq!(irql::at(DISPATCH_LEVEL, || c3.wait()), STATUS_SUCCESS);
    let v = violation::take();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v
        .iter()
        .all(|x| x.kind == "irql" && x.message.contains("NmrWaitForClientDeregisterComplete")));
}
