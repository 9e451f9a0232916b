//! The hot-path benchmark's workload (`cargo xtask bench`), run natively
//! on a handful of events so that it keeps working: every client is
//! invoked once per event, kinds the driver hooks are all measured, and
//! the machine is left clean (`bench::run` fails otherwise).

use ntsim::build::driver_image;
use ntsim::cli::bench::{self, ClientKind, Plan, EVENTS};

#[test]
fn the_benchmark_workload_runs_every_configuration_and_reaches_every_client() {
    let plan = Plan {
        kinds: ClientKind::ALL.to_vec(),
        counts: vec![0, 2],
        events: 3,
        timed_events: 5,
        runs: 1,
        timed_counts: vec![2],
    };
    let report = bench::run(&driver_image(), &plan).unwrap();
    assert!(report.image_size > 0);
    assert!(report.exports.iter().any(|e| e == "ExAllocatePool2"));
    assert!(
        report.unhooked.is_empty(),
        "the driver hooks every event kind of the benchmark, not {:?}",
        report.unhooked
    );
    let hooked = EVENTS.len();
    for kind in [
        "process_create",
        "process_delete",
        "thread_create",
        "thread_exit",
        "image_load_user",
        "image_load_driver",
    ] {
        assert!(
            report.segments.iter().any(|s| s.event == kind),
            "no segment of {kind}"
        );
    }
    assert_eq!(report.segments.len(), plan.kinds.len() * 2 * hooked);
    for s in &report.segments {
        assert_eq!(s.invocations, (s.clients * s.events) as u64, "{s:?}");
    }
    assert_eq!(report.timings.len(), plan.kinds.len() * hooked);
    for t in &report.timings {
        assert!(t.ns_1 > 0.0 && t.ns_2 > 0.0, "{t:?}");
    }
    let back = bench::Report::parse(&report.to_lines()).unwrap();
    assert_eq!(back.segments, report.segments);
}
