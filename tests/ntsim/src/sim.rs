//! [`Sim`]: one simulated machine for the duration of a test.
//!
//! The simulated kernel is process-wide (a driver calls kernel exports with
//! no context), so a `Sim` holds a process-wide lock: tests in one binary
//! that use the kernel run one after another, each on freshly reset state.

use crate::kernel::{
    fault, io, irql, loader, log, netevent, nmr, pool, ps, registry, rtl, sync, time, violation,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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

/// A simulated machine. Dropping it unloads the drivers still loaded (in
/// reverse load order) and resets every service; it does not assert (use
/// [`Sim::finish`] for that).
pub struct Sim {
    _machine: MutexGuard<'static, ()>,
    /// Every driver whose load was attempted, in load order (a driver
    /// whose DriverEntry failed stays listed, not running).
    drivers: Vec<Slot>,
}

/// One driver of a [`Sim`]: its image while it runs, and what ntsim
/// attributes to it.
struct Slot {
    running: Option<loader::Driver>,
    result: DriverResult,
    /// Outstanding-resource lines that appeared while its DriverEntry ran:
    /// what it still holds at the end is its leak.
    created: BTreeSet<String>,
}

/// What one driver of a [`Sim`] did, as far as ntsim can tell which driver
/// did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverResult {
    /// The image file's path as given.
    pub path: PathBuf,
    /// The service it runs as (the file name without `.sys`).
    pub service: String,
    /// What DriverEntry returned.
    pub driver_entry: i32,
    /// The unload: None while it runs (or when DriverEntry failed: Windows
    /// does not call DriverUnload then), else DriverUnload's result.
    pub unload: Option<Result<(), String>>,
    /// Its place among the machine's unloads (0: unloaded first).
    pub unload_position: Option<usize>,
    /// Rules broken while its DriverEntry or DriverUnload ran.
    pub violations: Vec<String>,
    /// Resources it acquired in DriverEntry and still held at
    /// [`Sim::finish_report`] (filled in there).
    pub left_behind: Vec<String>,
}

impl DriverResult {
    /// The name the loader gives its image (`<service>.sys`): the name
    /// crash reports and [`crate::kernel::log::DbgMessage::image`] use.
    pub fn image_name(&self) -> String {
        format!("{}.sys", self.service)
    }

    /// Its findings, in the words of [`Sim::finish`]: `left behind: ...`,
    /// `violation: ...`, and the unload failure.
    pub fn findings(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .unload
            .clone()
            .and_then(Result::err)
            .into_iter()
            .collect();
        all.extend(self.left_behind.iter().map(|s| format!("left behind: {s}")));
        all.extend(self.violations.iter().map(|v| format!("violation: {v}")));
        all
    }
}

/// What [`Sim::finish_report`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinishReport {
    /// Every driver whose load was attempted, in load order, with what is
    /// attributed to it.
    pub drivers: Vec<DriverResult>,
    /// Everything found, attributed or not: unload failures, what was
    /// left behind, every violation (the findings of [`Sim::finish`]).
    pub findings: Vec<String>,
}

/// Runs `f`, returning what it returned and the violations recorded while
/// it ran.
fn watching_violations<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let before = violation::peek().len();
    let r = f();
    let after = violation::peek();
    let new = after
        .get(before..)
        .unwrap_or_default()
        .iter()
        .map(|v| v.to_string())
        .collect();
    (r, new)
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
            drivers: Vec::new(),
        }
    }

    /// Loads a driver image from a file and runs its `DriverEntry`, after
    /// the drivers already loaded (each runs as its own service, named by
    /// the file name: a second image of one service is refused, as Windows
    /// refuses to start a running service). Returns the status DriverEntry
    /// returned; on failure the image is already unmapped (as Windows
    /// does) and the drivers loaded before it keep running.
    pub fn load_driver(&mut self, path: &Path) -> Result<i32, loader::LoadError> {
        let service = loader::service_name(path);
        if self
            .drivers
            .iter()
            .any(|d| d.running.is_some() && d.result.service.eq_ignore_ascii_case(&service))
        {
            return Err(loader::LoadError::AlreadyLoaded(service));
        }
        let bytes = std::fs::read(path).map_err(|e| loader::LoadError::Io(path.into(), e))?;
        let before: BTreeSet<String> = outstanding_all().into_iter().collect();
        let (loaded, violations) =
            watching_violations(|| loader::Driver::load_and_start(&bytes, path));
        let (driver, status) = loaded?;
        let created = outstanding_all()
            .into_iter()
            .filter(|s| !before.contains(s))
            .collect();
        self.drivers.push(Slot {
            running: driver,
            result: DriverResult {
                path: path.to_path_buf(),
                service,
                driver_entry: status,
                unload: None,
                unload_position: None,
                violations,
                left_behind: Vec::new(),
            },
            created,
        });
        Ok(status)
    }

    /// The first loaded driver still running, if any (the driver, for a
    /// machine with one).
    pub fn driver(&self) -> Option<&loader::Driver> {
        self.drivers.iter().find_map(|d| d.running.as_ref())
    }

    /// The drivers running, in load order.
    pub fn drivers(&self) -> Vec<&loader::Driver> {
        self.drivers
            .iter()
            .filter_map(|d| d.running.as_ref())
            .collect()
    }

    /// Every driver whose load was attempted, in load order, with its
    /// results so far (leaks are attributed by [`Sim::finish_report`]).
    pub fn driver_results(&self) -> Vec<DriverResult> {
        self.drivers.iter().map(|d| d.result.clone()).collect()
    }

    /// Calls the unload routine of the driver loaded last that still runs
    /// and unmaps its image (drivers unload in reverse load order). Returns
    /// an error when no driver runs or the driver has no unload routine.
    pub fn unload_driver(&mut self) -> Result<(), String> {
        let index = self
            .drivers
            .iter()
            .rposition(|d| d.running.is_some())
            .ok_or("no driver is loaded")?;
        let position = self
            .drivers
            .iter()
            .filter(|d| d.result.unload_position.is_some())
            .count();
        let slot = &mut self.drivers[index];
        let driver = slot.running.take().expect("found running");
        let (result, violations) = watching_violations(|| driver.unload());
        slot.result.violations.extend(violations);
        slot.result.unload = Some(result.clone());
        slot.result.unload_position = Some(position);
        result
    }

    /// Unloads every running driver, last loaded first. Returns each
    /// driver's service and unload result, in unload order.
    pub fn unload_drivers(&mut self) -> Vec<(String, Result<(), String>)> {
        let mut results = Vec::new();
        while let Some(service) = self
            .drivers
            .iter()
            .rev()
            .find(|d| d.running.is_some())
            .map(|d| d.result.service.clone())
        {
            results.push((service, self.unload_driver()));
        }
        results
    }

    /// What the driver (or host code) left behind: NMR registrations, notify
    /// routines, ETW registrations, pool blocks, registry handles.
    pub fn outstanding(&self) -> Vec<String> {
        outstanding_all()
    }

    /// Ends the test: unloads the loaded drivers (last loaded first), then
    /// fails (Err, with every finding) if anything was left behind or any
    /// rule was violated.
    pub fn finish(self) -> Result<(), String> {
        let report = self.finish_report();
        if report.findings.is_empty() {
            Ok(())
        } else {
            Err(report.findings.join("\n"))
        }
    }

    /// [`Sim::finish`], reporting every finding and, per driver, the ones
    /// ntsim can attribute to it: the violations recorded while its
    /// DriverEntry or DriverUnload ran, and the resources it acquired in
    /// DriverEntry that are still outstanding. (A leak or violation caused
    /// while a scenario ran cannot be told apart by driver: it is in
    /// `findings` only.)
    pub fn finish_report(mut self) -> FinishReport {
        let mut findings: Vec<String> = self
            .unload_drivers()
            .into_iter()
            .filter_map(|(_, r)| r.err())
            .collect();
        // The system's netevent providers go after the drivers.
        findings.extend(netevent::shutdown());
        let left = outstanding_all();
        for slot in &mut self.drivers {
            slot.result.left_behind = left
                .iter()
                .filter(|s| slot.created.contains(*s))
                .cloned()
                .collect();
        }
        findings.extend(left.into_iter().map(|s| format!("left behind: {s}")));
        findings.extend(
            violation::take()
                .into_iter()
                .map(|v| format!("violation: {v}")),
        );
        FinishReport {
            drivers: self.drivers.iter().map(|d| d.result.clone()).collect(),
            findings,
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
        for (service, result) in self.unload_drivers() {
            if let Err(e) = result {
                eprintln!("ntsim: unloading the driver {service} at Sim drop failed: {e}");
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
