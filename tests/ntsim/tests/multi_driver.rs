//! Several drivers in one machine: load order, reverse unload, a failing
//! DriverEntry of a later driver unloading the earlier ones, and the
//! per-driver results of `ntsim run` (text and `--json`).
//!
//! The repository's second driver is not needed for the plumbing: the
//! ntosebpfext image copied under another file name runs as a second
//! service (`ntosebpfext_b`), as Windows runs two services of one binary.
//! Its lines and findings are told apart by image, not by text (both print
//! `ntosebpfext: ...`). [`the_repository_drivers_load_together_by_name`]
//! loads every driver of `ntsim::build::DRIVERS` by name.

use ntsim::build::{driver_image, driver_image_named, DRIVERS};
use ntsim::demo::{self, DemoPart, Events, RunOptions};
use ntsim::kernel::{fault, images, log};
use ntsim::Sim;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

trait WithinLimit {
    fn output_within_limit(&mut self) -> Output;
}

impl WithinLimit for Command {
    /// The output, failing the test if the command runs longer than
    /// ntsim's child limit.
    fn output_within_limit(&mut self) -> Output {
        ntsim::child::output_within(self, ntsim::child::LIMIT).expect("the ntsim binary runs")
    }
}

/// The ntosebpfext image and a copy of it named `ntosebpfext_b.sys` (in a
/// folder of this test process's own).
fn two_images() -> (PathBuf, PathBuf) {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    let a = driver_image();
    let b = COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ntsim_multi_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = dir.join("ntosebpfext_b.sys");
        std::fs::copy(&a, &b).unwrap();
        b
    });
    (a, b.clone())
}

fn names(sim: &Sim) -> Vec<String> {
    sim.drivers()
        .iter()
        .map(|d| d.service().to_string())
        .collect()
}

/// The `ntosebpfext: ...` lines, each with the image whose format string
/// printed it.
fn lines_by_image(messages: &[log::DbgMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m.image.clone().unwrap_or_else(|| "<none>".into()),
                m.text.trim_end().to_string(),
            )
        })
        .collect()
}

#[test]
fn drivers_load_in_order_and_unload_in_reverse() {
    let (a, b) = two_images();
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&a).unwrap(), 0, "DriverEntry of A");
    let a_lines = lines_by_image(&log::take_dbg_messages());
    assert_eq!(sim.load_driver(&b).unwrap(), 0, "DriverEntry of B");
    let b_lines = lines_by_image(&log::take_dbg_messages());
    assert_eq!(names(&sim), ["ntosebpfext", "ntosebpfext_b"]);
    // A DbgPrintEx line belongs to the image holding its format string.
    for (driver, image) in sim
        .drivers()
        .iter()
        .zip(["ntosebpfext.sys", "ntosebpfext_b.sys"])
    {
        let (base, size) = (driver.image().base(), driver.image().size());
        assert_eq!(images::image_name_at(base).as_deref(), Some(image));
        assert_eq!(
            images::image_name_at(base + size - 1).as_deref(),
            Some(image)
        );
    }
    let host = "host text";
    assert_eq!(images::image_name_at(host.as_ptr() as usize), None);
    // Each DriverEntry ran when its driver loaded: A's lines come from A's
    // image, then B's from B's.
    assert!(
        a_lines
            .iter()
            .any(|(i, t)| i == "ntosebpfext.sys" && t.starts_with("ntosebpfext: loaded")),
        "{a_lines:?}"
    );
    assert!(
        a_lines.iter().all(|(i, _)| i == "ntosebpfext.sys"),
        "{a_lines:?}"
    );
    assert!(
        b_lines
            .iter()
            .any(|(i, t)| i == "ntosebpfext_b.sys" && t.starts_with("ntosebpfext: loaded")),
        "{b_lines:?}"
    );
    assert!(
        b_lines.iter().all(|(i, _)| i == "ntosebpfext_b.sys"),
        "{b_lines:?}"
    );
    let order: Vec<String> = sim
        .unload_drivers()
        .into_iter()
        .map(|(service, result)| {
            result.unwrap();
            service
        })
        .collect();
    assert_eq!(order, ["ntosebpfext_b", "ntosebpfext"]);
    // The DriverUnload routines really ran in that order.
    let unloads: Vec<String> = lines_by_image(&log::take_dbg_messages())
        .into_iter()
        .filter(|(_, t)| t == "ntosebpfext: unloaded")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(unloads, ["ntosebpfext_b.sys", "ntosebpfext.sys"]);
    let results = sim.driver_results();
    assert!(results.iter().all(|d| d.unload == Some(Ok(()))));
    assert_eq!(results[0].unload_position, Some(1));
    assert_eq!(results[1].unload_position, Some(0));
    sim.finish().unwrap();
}

#[test]
fn finish_unloads_the_remaining_drivers_last_first() {
    let (a, b) = two_images();
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&a).unwrap(), 0);
    assert_eq!(sim.load_driver(&b).unwrap(), 0);
    log::take_dbg_messages();
    // Sim::unload_driver takes the last loaded.
    sim.unload_driver().unwrap();
    assert_eq!(names(&sim), ["ntosebpfext"]);
    assert_eq!(sim.driver().unwrap().service(), "ntosebpfext");
    let report = sim.finish_report();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.drivers.len(), 2);
    assert_eq!(report.drivers[0].service, "ntosebpfext");
    assert_eq!(report.drivers[1].service, "ntosebpfext_b");
    assert!(report.drivers.iter().all(|d| d.unload == Some(Ok(()))));
}

#[test]
fn one_service_loads_once() {
    let (a, _) = two_images();
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&a).unwrap(), 0);
    let e = sim
        .load_driver(&a)
        .expect_err("a second ntosebpfext service");
    assert!(
        matches!(e, ntsim::loader::LoadError::AlreadyLoaded(ref s) if s == "ntosebpfext"),
        "{e}"
    );
    assert_eq!(names(&sim), ["ntosebpfext"]);
    sim.finish().unwrap();
}

/// How many calls of `api` one ntosebpfext DriverEntry makes.
fn calls_in_one_driver_entry(api: &str) -> u64 {
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&driver_image()).unwrap(), 0);
    let n = fault::counts().get(api).copied().unwrap_or(0);
    sim.finish().unwrap();
    assert!(n > 0, "DriverEntry makes no {api} call");
    n
}

fn options<'a>(drivers: &'a [PathBuf], object: &'a Path) -> RunOptions<'a> {
    RunOptions {
        drivers,
        object,
        programs: vec!["monitor".into()],
        attach_params: Vec::new(),
        events: Events::Scenario(ntsim::scenario::builtin()),
        faults: Vec::new(),
        ringbuf: Vec::new(),
        json: false,
        etw: false,
    }
}

#[test]
fn a_failing_driver_entry_of_the_second_driver_unloads_the_first() {
    let (a, b) = two_images();
    let n = calls_in_one_driver_entry("NmrRegisterProvider");
    let drivers = [a, b.clone()];
    let object = ntsim::process::sample_object_path();
    let mut run = options(&drivers, &object);
    // The second driver's first NmrRegisterProvider fails.
    run.faults = vec![("NmrRegisterProvider".into(), n + 1)];
    let mut out = Vec::new();
    let e = demo::run_object(&run, &mut out).expect_err("the second driver fails to load");
    assert!(
        e.starts_with(&format!(
            "the driver {} failed to load: DriverEntry returned 0x",
            b.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("; unloaded the driver(s) loaded before it, last first: ntosebpfext.sys"),
        "{e}"
    );
    assert!(!e.contains("finding"), "nothing is left behind: {e}");
    assert!(
        out.is_empty(),
        "no run was reported: {}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn a_failing_first_driver_loads_no_other() {
    let (a, b) = two_images();
    let drivers = [a.clone(), b];
    let object = ntsim::process::sample_object_path();
    let mut run = options(&drivers, &object);
    run.faults = vec![("NmrRegisterProvider".into(), 1)];
    let e = demo::run_object(&run, &mut Vec::new()).expect_err("the first driver fails");
    assert!(
        e.starts_with(&format!("the driver {} failed to load", a.display())),
        "{e}"
    );
    assert!(!e.contains("unloaded the driver"), "{e}");
    // Only one DriverEntry ran: the second image never loaded.
    assert_eq!(
        fault::counts_of_last_sim().get("NmrRegisterProvider"),
        Some(&1),
        "{e}"
    );
}

#[test]
fn the_json_report_has_every_driver_in_load_then_unload_order() {
    let (a, b) = two_images();
    let drivers = [a, b];
    let object = ntsim::process::sample_object_path();
    let mut run = options(&drivers, &object);
    run.json = true;
    let mut out = Vec::new();
    demo::run_object(&run, &mut out).unwrap();
    let lines: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let start = lines.iter().find(|l| l["type"] == "start").unwrap();
    let end = lines.iter().find(|l| l["type"] == "end").unwrap();
    // The single-driver fields stay: the first driver's.
    assert_eq!(start["driver"], "ntosebpfext.sys");
    assert_eq!(start["driver_entry_name"], "STATUS_SUCCESS");
    assert_eq!(end["unload_error"], Value::Null);
    let started: Vec<&Value> = start["drivers"].as_array().unwrap().iter().collect();
    assert_eq!(started.len(), 2, "{start}");
    assert_eq!(started[0]["name"], "ntosebpfext.sys");
    assert_eq!(started[1]["name"], "ntosebpfext_b.sys");
    for d in &started {
        assert_eq!(d["driver_entry"], "0x00000000", "{d}");
        assert_eq!(d["driver_entry_name"], "STATUS_SUCCESS", "{d}");
        let loaded: Vec<&Value> = d["dbgprint"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t.as_str().unwrap().starts_with("ntosebpfext: loaded"))
            .collect();
        // One each: the lines are told apart by image.
        assert_eq!(loaded.len(), 1, "{d}");
    }
    let ended: Vec<&Value> = end["drivers"].as_array().unwrap().iter().collect();
    assert_eq!(ended.len(), 2, "{end}");
    assert_eq!(ended[0]["name"], "ntosebpfext_b.sys", "unloaded first");
    assert_eq!(ended[1]["name"], "ntosebpfext.sys");
    for d in &ended {
        assert_eq!(d["unload_error"], Value::Null, "{d}");
        assert_eq!(d["findings"], serde_json::json!([]), "{d}");
        assert_eq!(
            d["dbgprint"],
            serde_json::json!([{"step": null, "text": "ntosebpfext: unloaded"}]),
            "{d}"
        );
    }
    assert_eq!(end["ok"], true);
}

#[test]
fn the_text_report_names_each_driver() {
    let (a, b) = two_images();
    let drivers = [a, b];
    let object = ntsim::process::sample_object_path();
    let mut out = Vec::new();
    demo::run_object(&options(&drivers, &object), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    assert!(
        at("driver ntosebpfext.sys: DriverEntry returned 0x00000000")
            < at("driver ntosebpfext_b.sys: DriverEntry returned 0x00000000")
    );
    assert!(at("driver ntosebpfext_b.sys unloaded\n") < at("driver ntosebpfext.sys unloaded\n"));
    assert!(text.contains("    dbgprint (unload): ntosebpfext: unloaded"));
    assert!(text.ends_with("no leaks, no violations\n"), "{text}");
}

#[test]
fn the_command_loads_every_driver_given() {
    let (a, b) = two_images();
    let out = Command::new(env!("CARGO_BIN_EXE_ntsim"))
        .args(["run", "--driver"])
        .arg(&a)
        .arg("--driver")
        .arg(&b)
        .arg("--object")
        .arg(ntsim::process::sample_object_path())
        .args(["--program", "monitor", "--builtin", "--json"])
        .output_within_limit();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let loaded: Vec<&str> = start["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["ntosebpfext.sys", "ntosebpfext_b.sys"]);
}

#[test]
fn the_same_image_twice_on_the_command_line_is_refused() {
    let (a, _) = two_images();
    let out = Command::new(env!("CARGO_BIN_EXE_ntsim"))
        .args(["run", "--driver"])
        .arg(&a)
        .arg("--driver-name")
        .arg("ntosebpfext")
        .arg("--object")
        .arg(ntsim::process::sample_object_path())
        .args(["--program", "monitor", "--builtin"])
        .env("NTOSEBPFEXT_SYS", &a)
        .output_within_limit();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the service ntosebpfext is already running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unloaded the driver(s) loaded before it, last first: ntosebpfext.sys"),
        "{stderr}"
    );
}

/// Every driver of the repository, by name, in one machine: each loads,
/// runs its DriverEntry and unloads (last first) with nothing left behind.
/// With neteventebpfext in `DRIVERS` this runs the two real drivers side
/// by side.
#[test]
fn the_repository_drivers_load_together_by_name() {
    let images: Vec<PathBuf> = DRIVERS.iter().map(|n| driver_image_named(n)).collect();
    let mut sim = Sim::new();
    for (name, image) in DRIVERS.iter().zip(&images) {
        assert_eq!(sim.load_driver(image).unwrap(), 0, "DriverEntry of {name}");
    }
    assert_eq!(names(&sim), DRIVERS);
    let order: Vec<String> = sim.unload_drivers().into_iter().map(|(s, _)| s).collect();
    let mut reversed: Vec<&str> = DRIVERS.to_vec();
    reversed.reverse();
    assert_eq!(order, reversed);
    sim.finish().unwrap();
}

/// The demo's further parts: a driver and a test file, run in the machine
/// the demo set up. Here ntosebpfext's own process test file stands in for
/// the part the next driver brings.
#[test]
fn a_demo_part_runs_its_test_file_and_checks_its_expectations() {
    let part = DemoPart {
        driver: "ntosebpfext",
        test_file: "tests/bpf/process_test.ntsim",
        title: "the process test file",
    };
    let expectations = std::fs::read_to_string(
        ntsim::build::workspace_root().join("tests/bpf/process_test.ntsim"),
    )
    .unwrap()
    .lines()
    .filter(|l| l.starts_with("expect "))
    .count();
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&driver_image()).unwrap(), 0);
    let mut out = Vec::new();
    demo::run_part(&part, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(
            "the process test file (driver ntosebpfext, tests/bpf/process_test.ntsim):\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("[notepad] CREATE") && text.contains("DENIED 0xc0000022"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "tests/bpf/process_test.ntsim: {expectations} expectation(s) held\n"
        )),
        "{text}"
    );

    sim.finish().unwrap();

    // The same file with one more expectation, which does not hold.
    let dir = std::env::temp_dir().join(format!("ntsim_part_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = ntsim::build::workspace_root().join("tests/bpf/process_test.ntsim");
    let object = ntsim::process::sample_object_path();
    let failing = std::fs::read_to_string(&source).unwrap().replace(
        "object process_test.o",
        &format!("object {}", object.display()),
    ) + "expect verdict create:explorer denied\n";
    let last_line = failing.lines().count();
    let file = dir.join("failing.ntsim");
    std::fs::write(&file, failing).unwrap();
    let failing_part = DemoPart {
        test_file: Box::leak(file.display().to_string().into_boxed_str()),
        ..part
    };
    let mut sim = Sim::new();
    assert_eq!(sim.load_driver(&driver_image()).unwrap(), 0);
    let e = demo::run_part(&failing_part, &mut Vec::new()).unwrap_err();
    assert!(e.starts_with("1 expectation(s) of "), "{e}");
    assert!(
        e.contains(
            &format!("failing.ntsim:{last_line}: expect verdict create:explorer denied\n    expected: denied\n    actual:   permitted")
        ),
        "{e}"
    );
    sim.finish().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_loads_ntosebpfext_then_each_part_driver_once() {
    let names = demo::demo_drivers();
    assert_eq!(names[0], "ntosebpfext");
    for part in demo::DEMO_PARTS {
        assert!(DRIVERS.contains(&part.driver), "{part:?}");
        assert_eq!(names.iter().filter(|n| **n == part.driver).count(), 1);
        assert!(
            ntsim::build::workspace_root()
                .join(part.test_file)
                .is_file(),
            "{part:?}"
        );
    }
}
