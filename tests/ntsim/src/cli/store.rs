//! `ntsim store --driver PATH`: loads the driver in a fresh machine and
//! prints the eBPF store it wrote, as `reg query
//! HKLM\Software\eBPF\Providers /s` prints it (key paths, then one line per
//! value: name, type, data).

use crate::ebpf::store;
use crate::Sim;
use std::io::Write;
use std::path::Path;

/// Prints the store `driver` writes at load to `out`. Err: the driver
/// could not be loaded, wrote no store, or left something behind or broke
/// a rule (the findings).
pub fn run(driver: &Path, out: &mut dyn Write) -> Result<(), String> {
    if !driver.is_file() {
        return Err(format!("driver image {} is not a file", driver.display()));
    }
    let mut sim = Sim::new();
    let status = sim
        .load_driver(driver)
        .map_err(|e| format!("cannot load the driver {}: {e}", driver.display()))?;
    if !crate::kernel::status::nt_success(status) {
        return Err(format!(
            "the driver {} failed to load: DriverEntry returned {}",
            driver.display(),
            crate::kernel::status::describe(status)
        ));
    }
    let text = store::dump(store::HKLM_STORE);
    let unloaded = sim.unload_driver();
    let mut findings: Vec<String> = unloaded.err().into_iter().collect();
    if let Err(f) = sim.finish() {
        findings.extend(f.lines().map(str::to_string));
    }
    if text.is_empty() {
        findings.push(format!(
            "the driver wrote nothing under {}",
            store::HKLM_STORE
        ));
    }
    write!(out, "{text}").map_err(|e| format!("cannot write the output: {e}"))?;
    if findings.is_empty() {
        Ok(())
    } else {
        Err(findings.join("\n"))
    }
}
