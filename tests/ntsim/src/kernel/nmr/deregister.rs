//! Deregistration: `NmrDeregister*` detaches every binding of a module,
//! `NmrWaitFor*DeregisterComplete` waits until the last one is cleaned up.

use super::*;

pub(super) fn deregister(side: Side, api: &'static str, handle: HANDLE) -> NTSTATUS {
    irql::require_at_most(api, PASSIVE_LEVEL);
    let (to_detach, generation) = {
        let mut st = state();
        let generation = st.generation;
        let Some(r) = st.registration(api, handle, side) else {
            return STATUS_INVALID_PARAMETER;
        };
        if r.deregistered {
            nmr_violation(format!(
                "{api}({handle:#x}): the {} is already deregistering",
                side.name()
            ));
            return STATUS_INVALID_PARAMETER;
        }
        r.deregistered = true;
        r.wait_required = true;
        let mine: Vec<HANDLE> = st
            .bindings
            .iter()
            .filter(|(_, bd)| {
                matches!(bd.phase, Phase::Bound)
                    && match side {
                        Side::Provider => bd.provider == handle,
                        Side::Client => bd.client == handle,
                    }
            })
            .map(|(&b, _)| b)
            .collect();
        (mine, generation)
    };
    for b in to_detach {
        detach_binding(b, side);
    }
    let mut st = state();
    if st.generation == generation {
        if let Some(r) = st.regs.get_mut(&handle) {
            r.wait_required = true;
        }
    }
    // Windows documents STATUS_PENDING as the only success: the wait is
    // always owed, even when no binding is left.
    STATUS_PENDING
}

pub(super) fn wait_for_deregister(side: Side, api: &'static str, handle: HANDLE) -> NTSTATUS {
    irql::require_exactly(api, PASSIVE_LEVEL);
    irql::require_can_wait(api);
    let mut st = state();
    let generation = st.generation;
    let Some(r) = st.registration(api, handle, side) else {
        return STATUS_INVALID_PARAMETER;
    };
    if !r.deregistered {
        nmr_violation(format!(
            "{api}({handle:#x}) without a prior NmrDeregister{}",
            side.title()
        ));
        return STATUS_INVALID_PARAMETER;
    }
    if r.waiting {
        nmr_violation(format!(
            "{api}({handle:#x}): another thread is already waiting for it"
        ));
        return STATUS_INVALID_PARAMETER;
    }
    r.waiting = true;
    let started = std::time::Instant::now();
    loop {
        if st.generation != generation {
            // The machine was reset under the waiter: nothing left to wait for.
            return STATUS_SUCCESS;
        }
        match st.regs.get(&handle) {
            Some(r) if r.bindings > 0 => {}
            _ => break,
        }
        let limit = sync::wait_limit();
        let elapsed = started.elapsed();
        if elapsed >= limit {
            let what = stuck_bindings(&st, handle);
            drop(st);
            sync::hung(&format!("{api}({handle:#x}): {what}"), started);
        }
        st = CHANGED
            .wait_timeout(st, limit - elapsed)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    st.regs.remove(&handle);
    STATUS_SUCCESS
}

/// What a deregistration wait is still waiting for, for the hang message.
fn stuck_bindings(st: &State, handle: HANDLE) -> String {
    let stuck: Vec<String> = st
        .bindings
        .iter()
        .filter(|(_, b)| b.provider == handle || b.client == handle)
        .map(|(&b, bd)| format!("binding {b:#x} is {:?}", bd.phase.public()))
        .collect();
    format!(
        "the deregistration never completed ({}; a detach returned STATUS_PENDING and its \
         Nmr*DetachComplete never came?)",
        stuck.join(", ")
    )
}
