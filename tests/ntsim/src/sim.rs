//! [`Sim`]: one simulated machine for the duration of a test.
//!
//! The simulated kernel is process-wide (a driver calls kernel exports with
//! no context), so a `Sim` holds a process-wide lock: tests in one binary
//! that use the kernel run one after another, each on freshly reset state.

use crate::kernel::{
    fault, io, irql, loader, log, netevent, nmr, pool, ps, registry, rtl, sync, time, violation,
};
use std::sync::{Mutex, MutexGuard};

static MACHINE: Mutex<()> = Mutex::new(());

/// Options of a simulated machine.
#[derive(Clone, Debug)]
pub struct Options {
    /// Special pool: every block against a guard page, freed blocks made
    /// inaccessible (on by default).
    pub special_pool: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { special_pool: true }
    }
}

/// A simulated machine. Dropping it unloads a driver still loaded and resets
/// every service; it does not assert (use [`Sim::finish`] for that).
pub struct Sim {
    _machine: MutexGuard<'static, ()>,
    driver: Option<loader::Driver>,
}

impl Sim {
    /// A fresh machine with default options.
    pub fn new() -> Sim {
        Sim::with_options(Options::default())
    }

    /// A fresh machine.
    pub fn with_options(options: Options) -> Sim {
        // A test that panicked while holding the machine poisons the lock;
        // the state is reset below, so the poison carries no meaning here.
        let guard = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
        crate::kernel::crash::install();
        crate::sim::reset_all();
        pool::configure(options.special_pool);
        Sim {
            _machine: guard,
            driver: None,
        }
    }

    /// Loads a driver image from a file and runs its `DriverEntry`.
    /// Returns the status DriverEntry returned; on failure the image is
    /// already unmapped (as Windows does).
    pub fn load_driver(&mut self, path: &std::path::Path) -> Result<i32, loader::LoadError> {
        assert!(
            self.driver.is_none(),
            "a driver is already loaded in this Sim"
        );
        let bytes = std::fs::read(path).map_err(|e| loader::LoadError::Io(path.into(), e))?;
        let (driver, status) = loader::Driver::load_and_start(&bytes, path)?;
        self.driver = driver;
        Ok(status)
    }

    /// The loaded driver, if any.
    pub fn driver(&self) -> Option<&loader::Driver> {
        self.driver.as_ref()
    }

    /// Calls the driver's unload routine and unmaps the image. Returns an
    /// error when the driver has no unload routine.
    pub fn unload_driver(&mut self) -> Result<(), String> {
        let driver = self.driver.take().ok_or("no driver is loaded")?;
        driver.unload()
    }

    /// What the driver (or host code) left behind: NMR registrations, notify
    /// routines, ETW registrations, pool blocks, registry handles.
    pub fn outstanding(&self) -> Vec<String> {
        outstanding_all()
    }

    /// Ends the test: unloads a loaded driver, then fails (Err, with every
    /// finding) if anything was left behind or any rule was violated.
    pub fn finish(mut self) -> Result<(), String> {
        let mut findings = Vec::new();
        if self.driver.is_some() {
            if let Err(e) = self.unload_driver() {
                findings.push(e);
            }
        }
        // The system's netevent providers go after the drivers.
        findings.extend(netevent::shutdown());
        findings.extend(
            outstanding_all()
                .into_iter()
                .map(|s| format!("left behind: {s}")),
        );
        findings.extend(
            violation::take()
                .into_iter()
                .map(|v| format!("violation: {v}")),
        );
        if findings.is_empty() {
            Ok(())
        } else {
            Err(findings.join("\n"))
        }
    }
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            if let Err(e) = driver.unload() {
                eprintln!("ntsim: unloading the driver at Sim drop failed: {e}");
            }
        }
        // `sweep` reads the fault counts after the scenario (and its Sim)
        // has ended, when another test may already own the machine.
        fault::save_counts_for_thread();
        reset_services();
    }
}

fn outstanding_all() -> Vec<String> {
    let mut all = Vec::new();
    all.extend(nmr::outstanding());
    all.extend(ps::outstanding());
    all.extend(log::outstanding());
    all.extend(registry::outstanding());
    all.extend(sync::outstanding());
    all.extend(io::outstanding());
    all.extend(rtl::outstanding());
    all.extend(time::outstanding());
    all.extend(irql::outstanding());
    // Pool last: the other services' leftovers often explain pool leaks.
    all.extend(pool::outstanding());
    all
}

pub(crate) fn reset_all() {
    fault::reset();
    reset_services();
}

fn reset_services() {
    // Work items first: their routines may still be running driver code.
    io::reset();
    violation::reset();
    irql::reset();
    nmr::reset();
    netevent::reset();
    ps::reset();
    log::reset();
    registry::reset();
    sync::reset();
    rtl::reset();
    time::reset();
    pool::reset();
}

/// One injected fault of a [`sweep`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Injection {
    pub api: String,
    /// 1-based call number that failed.
    pub call: u64,
}

/// Runs `scenario` once with no fault to learn which fallible calls it
/// makes, then once per call with exactly that call failed, until every
/// injection point has failed once. `scenario` gets `None` on the first run
/// and the injection on the others; it builds its own [`Sim`] (fault plans
/// must be made after `Sim::new`, with [`fault::fail_nth`]) and asserts
/// what it must. Returns the injection points covered, in order.
///
/// Points are discovered from the fault-free run; a failure that sends the
/// scenario down a different path can reveal new calls, which are covered
/// too (each (api, call number) is tried once).
pub fn sweep(mut scenario: impl FnMut(Option<&Injection>)) -> Vec<Injection> {
    use std::collections::BTreeSet;
    let mut todo: BTreeSet<Injection> = BTreeSet::new();
    let mut done: BTreeSet<Injection> = BTreeSet::new();
    let learn = |todo: &mut BTreeSet<Injection>, done: &BTreeSet<Injection>| {
        for (api, n) in fault::counts_of_last_sim() {
            for call in 1..=n {
                let inj = Injection {
                    api: api.clone(),
                    call,
                };
                if !done.contains(&inj) {
                    todo.insert(inj);
                }
            }
        }
    };
    scenario(None);
    learn(&mut todo, &done);
    while let Some(inj) = todo.pop_first() {
        scenario(Some(&inj));
        done.insert(inj);
        learn(&mut todo, &done);
    }
    done.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_covers_every_call_once() {
        let mut runs = Vec::new();
        let covered = sweep(|inj| {
            let _sim = Sim::new();
            if let Some(i) = inj {
                fault::fail_nth(&i.api, i.call);
            }
            // A scenario making two calls of A and, only when A's first call
            // fails, one call of B.
            let a1 = fault::check("A");
            fault::check("A");
            if a1 {
                fault::check("B");
            }
            runs.push(inj.cloned());
        });
        let names: Vec<_> = covered
            .iter()
            .map(|i| format!("{}#{}", i.api, i.call))
            .collect();
        assert_eq!(names, ["A#1", "A#2", "B#1"]);
        assert_eq!(runs.len(), 4);
    }
}
