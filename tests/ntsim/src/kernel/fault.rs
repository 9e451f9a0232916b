//! Fault injection: make the Nth call of a named fallible API fail, the way
//! Windows documents it failing. Every fallible service calls [`check`] with
//! its API name before doing its work; allocations are the API
//! `ExAllocatePool2`.
//!
//! Calls are counted per API from the last [`reset`] (a new [`crate::Sim`]),
//! so a scenario can be run once to see which fallible calls it makes
//! ([`counts`]) and then once per call with that call failed
//! ([`crate::sim::sweep`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

#[derive(Default)]
struct State {
    plan: Vec<(String, u64)>,
    fired: Vec<(String, u64)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    plan: Vec::new(),
    fired: Vec::new(),
});

/// Calls per API. Counting shares the lock (each count is an atomic), so
/// host threads raising events at once do not wait for each other here;
/// only the first call of an API takes it exclusively.
static COUNTS: RwLock<BTreeMap<String, AtomicU64>> = RwLock::new(BTreeMap::new());

/// Whether any failure is planned: without one, a call only counts.
static PLANNED: AtomicBool = AtomicBool::new(false);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a call of `api` and answers whether this call must fail.
pub fn check(api: &str) -> bool {
    // No allocation once the API has been counted (every fallible call of
    // a hot path comes here). Each call gets its own number: the counter
    // is incremented atomically.
    let counted = COUNTS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(api)
        .map(|c| c.fetch_add(1, Ordering::Relaxed) + 1);
    let n = counted.unwrap_or_else(|| {
        COUNTS
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(api.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
            + 1
    });
    if !PLANNED.load(Ordering::Acquire) {
        return false;
    }
    let mut s = state();
    let hit = s.plan.iter().any(|(a, k)| a == api && *k == n);
    if hit {
        s.fired.push((api.to_string(), n));
        eprintln!("ntsim: fault injection: failing call #{n} of {api}");
    }
    hit
}

/// Plans the `n`th call (1-based, counted from now on... from the last
/// reset) of `api` to fail.
pub fn fail_nth(api: &str, n: u64) {
    assert!(n >= 1, "calls are numbered from 1");
    state().plan.push((api.to_string(), n));
    PLANNED.store(true, Ordering::Release);
}

/// Plans the `n`th allocation to fail.
pub fn fail_nth_alloc(n: u64) {
    fail_nth("ExAllocatePool2", n);
}

/// Calls of each fallible API since the last reset.
pub fn counts() -> BTreeMap<String, u64> {
    COUNTS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(api, n)| (api.clone(), n.load(Ordering::Relaxed)))
        .collect()
}

thread_local! {
    static LAST: std::cell::RefCell<BTreeMap<String, u64>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// Remembers, for the calling thread, the counts of the machine it is about
/// to release (another thread's new Sim resets the global counts at once).
pub(crate) fn save_counts_for_thread() {
    let counts = counts();
    LAST.with(|l| *l.borrow_mut() = counts);
}

/// The counts saved when the calling thread's last Sim ended.
pub fn counts_of_last_sim() -> BTreeMap<String, u64> {
    LAST.with(|l| l.borrow().clone())
}

/// The planned failures that actually happened since the last reset.
pub fn fired() -> Vec<(String, u64)> {
    state().fired.clone()
}

/// Forgets counts, plans and fired failures.
pub fn reset() {
    let mut s = state();
    COUNTS.write().unwrap_or_else(|e| e.into_inner()).clear();
    PLANNED.store(false, Ordering::Release);
    s.plan.clear();
    s.fired.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_call_fails_once() {
        let _sim = crate::Sim::new();
        fail_nth("NmrRegisterProvider", 2);
        assert!(!check("NmrRegisterProvider"));
        assert!(!check("ExAllocatePool2"));
        assert!(check("NmrRegisterProvider"));
        assert!(!check("NmrRegisterProvider"));
        assert_eq!(counts()["NmrRegisterProvider"], 3);
        assert_eq!(fired(), vec![("NmrRegisterProvider".to_string(), 2)]);
        reset();
        assert!(counts().is_empty());
    }
}
