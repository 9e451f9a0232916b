//! The process hook end to end: the real driver image in ntsim, real eBPF
//! programs (tests/bpf/process_test.c) loaded and attached through ntsim's
//! eBPF core, process events raised through the simulated kernel.
#![cfg(unix)]

use ntsim::build::driver_image;
use ntsim::ebpf::core::{self, LoadedProgram};
use ntsim::ebpf::Object;
use ntsim::process::{self as hook, from_utf16, utf16, ProcessRecord, STATUS_ACCESS_DENIED};
use ntsim::ps::{self, ProcessSpec};
use ntsim::{nmr, violation, Sim};

struct Env {
    sim: Sim,
    object: Object,
}

fn setup() -> Env {
    let mut sim = Sim::new();
    let status = sim
        .load_driver(&driver_image())
        .expect("the driver image loads");
    assert_eq!(status, 0, "DriverEntry failed");
    let bytes = std::fs::read(hook::sample_object_path()).expect("tests/bpf/process_test.o");
    let object = Object::load(&bytes, &hook::section_map()).expect("process_test.o loads");
    Env { sim, object }
}

impl Env {
    fn load(&self, name: &str) -> LoadedProgram {
        let program = self
            .object
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"));
        LoadedProgram::load(program.clone()).expect("the process program type is provided")
    }

    fn records(&self) -> Vec<ProcessRecord> {
        self.object
            .map("events")
            .unwrap()
            .drain_ring()
            .iter()
            .map(|r| ProcessRecord::parse(r).expect("a whole record"))
            .collect()
    }

    fn marks(&self) -> String {
        let records = self.object.map("marks").unwrap().drain_ring();
        records.iter().map(|r| r[0] as char).collect()
    }

    fn finish(self) {
        let Env { sim, object } = self;
        drop(object);
        if let Err(findings) = sim.finish() {
            panic!("{findings}");
        }
    }
}

fn spawn(image: &str, command_line: Option<&str>) -> ps::CreatedProcess {
    ps::create_process(&ProcessSpec {
        image_file_name: image.to_string(),
        command_line: command_line.map(str::to_string),
        user_sid: Some(ps::test_user_sid()),
        ..Default::default()
    })
}

#[test]
fn program_information_and_hook_data_pass_the_core_validation_with_no_finding() {
    let env = setup();
    let program = env.load("monitor");
    let info = program
        .program_info()
        .expect("bound to the driver's provider");
    let td = &info.type_descriptor;
    assert_eq!(td.name, "process");
    assert_eq!(td.program_type, hook::PROGRAM_TYPE);
    assert_eq!(td.bpf_prog_type, 6);
    assert!(!td.is_privileged);
    let cd = td.context_descriptor;
    assert_eq!((cd.size, cd.data, cd.end, cd.meta), (144, 0, 8, -1));
    let helpers: Vec<_> = info
        .type_specific_helpers
        .iter()
        .map(|h| {
            (
                h.prototype.helper_id,
                h.prototype.name.as_str(),
                h.prototype.return_type,
                h.prototype.arguments,
            )
        })
        .collect();
    assert_eq!(
        helpers,
        [
            (0x10000, "bpf_process_get_image_path", 0, [4, 11, 2, 0, 0]),
            (0x10001, "bpf_process_get_account_name", 0, [4, 11, 2, 0, 0]),
            (
                0x10002,
                "bpf_process_get_account_domain",
                0,
                [4, 11, 2, 0, 0]
            ),
        ]
    );
    assert!(info
        .type_specific_helpers
        .iter()
        .all(|h| h.address.is_some_and(|a| a != 0)));
    assert!(info.global_helpers.is_empty());
    assert_eq!(info.required_irql, 0, "test runs at PASSIVE_LEVEL");
    assert!(info.context_create != 0 && info.context_destroy != 0);
    assert_eq!(info.capabilities, 0);
    assert_eq!(info.program_data_size, 72);
    assert_eq!(
        program.strict_findings(),
        vec![],
        "program data strict report"
    );

    let link = program.attach(hook::ATTACH_TYPE, &[], 0).expect("attach");
    let provider = link.provider().unwrap();
    assert_eq!(provider.supported_program_type, hook::PROGRAM_TYPE);
    assert_eq!(provider.bpf_attach_type, 11);
    assert_eq!(provider.link_type, 0, "link type UNSPEC, as 0.7.0");
    assert_eq!(link.strict_findings(), vec![], "attach data strict report");
    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn monitor_sees_every_field_of_create_and_delete() {
    let env = setup();
    let program = env.load("monitor");
    let link = program.attach(hook::ATTACH_TYPE, &[], 0).unwrap();

    let parent = spawn("\\??\\C:\\Windows\\explorer.exe", None);
    assert_eq!(parent.creation_status, 0);
    let creator_tid = ps::create_thread(parent.pid);
    env.records();

    let image = "\\??\\C:\\Windows\\System32\\cmd.exe";
    let command_line = "cmd.exe /c \"echo hello\"";
    let creation_time = 133_700_000_000_000_000i64;
    let lookups = ps::account_lookups();
    let child = ps::create_process(&ProcessSpec {
        image_file_name: image.into(),
        command_line: Some(command_line.into()),
        parent: Some(parent.pid),
        creating_thread: Some((parent.pid, creator_tid)),
        user_sid: Some(ps::test_user_sid()),
        creation_time: Some(creation_time),
        ..Default::default()
    });
    assert_eq!(child.creation_status, 0, "the monitor permits");
    assert_eq!(
        ps::account_lookups() - lookups,
        1,
        "name and domain share one lookup per event"
    );

    let records = env.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.operation, 0, "CREATE");
    assert_eq!(r.process_id, child.pid as u64);
    assert_eq!(r.parent_process_id, parent.pid as u64);
    assert_eq!(r.creating_process_id, parent.pid as u64);
    assert_eq!(r.creating_thread_id, creator_tid as u64);
    assert_eq!(r.creation_time, creation_time as u64);
    assert_eq!((r.exit_time, r.process_exit_code), (0, 0));
    let sid = ps::test_user_sid();
    assert_eq!(r.token_sid_size as usize, sid.len());
    assert_eq!(r.token_sid, sid);
    assert_eq!(
        r.command,
        utf16(command_line),
        "the packet is the UTF-16LE command line"
    );
    assert_eq!(r.command_length as usize, utf16(command_line).len());
    assert_eq!(r.image_result as usize, utf16(image).len());
    assert_eq!(from_utf16(&r.image), image);
    assert_eq!(r.name_result as usize, utf16("tester").len());
    assert_eq!(from_utf16(&r.name), "tester");
    assert_eq!(r.domain_result as usize, utf16("NTSIM").len());
    assert_eq!(from_utf16(&r.domain), "NTSIM");
    assert_eq!(r.short_image_result, -22, "-EINVAL on a short buffer");
    assert_eq!(
        r.short_image, [0xAA; 4],
        "nothing written on a short buffer"
    );

    let exit_time = creation_time + 50_000_000;
    assert!(ps::exit_process(child.pid, 0x0000_1234, Some(exit_time)));
    let records = env.records();
    assert_eq!(records.len(), 1);
    let d = &records[0];
    assert_eq!(d.operation, 1, "DELETE");
    assert_eq!(
        d.process_id, child.pid as u64,
        "process_id is set on DELETE"
    );
    assert_eq!(d.creation_time, creation_time as u64);
    assert_eq!(d.exit_time, exit_time as u64);
    assert_eq!(d.process_exit_code, 0x1234);
    assert_eq!(d.command_length, 0, "no command line on DELETE");
    assert_eq!(d.image_result, 0, "no image path on DELETE");
    assert_eq!(
        (d.token_sid_size, d.name_result, d.domain_result),
        (0, -2, -2),
        "no SID on DELETE"
    );

    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn a_process_without_a_user_sid_gives_enoent() {
    let env = setup();
    let program = env.load("monitor");
    let link = program.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let lookups = ps::account_lookups();
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\a.exe".into(),
        user_sid: None,
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    let r = &env.records()[0];
    assert_eq!(r.token_sid_size, 0);
    assert_eq!((r.name_result, r.domain_result), (-2, -2));
    assert_eq!(ps::account_lookups(), lookups, "no lookup without a SID");
    drop(link);
    drop(program);
    env.finish();
}

#[test]
fn a_denying_program_sets_creation_status_and_stops_later_programs() {
    let env = setup();
    let policy = env.load("deny_notepad");
    let monitor = env.load("monitor");
    let l1 = policy.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let l2 = monitor.attach(hook::ATTACH_TYPE, &[], 0).unwrap();

    let denied = spawn(
        "\\??\\C:\\Windows\\System32\\notepad.exe",
        Some("notepad.exe a.txt"),
    );
    assert_eq!(denied.creation_status, STATUS_ACCESS_DENIED);
    assert!(
        ps::process(denied.pid).is_none(),
        "the process was not created"
    );
    assert_eq!(
        env.records(),
        vec![],
        "the monitor attached after the policy did not run"
    );

    let allowed = spawn("\\??\\C:\\Windows\\System32\\calc.exe", Some("calc.exe"));
    assert_eq!(allowed.creation_status, 0);
    assert_eq!(
        env.records().len(),
        1,
        "a permitted creation reaches the second program"
    );

    drop((l1, l2, policy, monitor));
    env.finish();
}

#[test]
fn programs_run_in_attach_order_and_delete_ignores_verdicts() {
    let env = setup();
    let a = env.load("mark_a");
    let b = env.load("mark_b");
    let deny = env.load("deny_all");
    let la = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let lb = b.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let p = spawn("\\??\\C:\\p.exe", None);
    assert_eq!(env.marks(), "AB");

    // Re-attach A: it now runs after B.
    drop(la);
    let la = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let q = spawn("\\??\\C:\\q.exe", None);
    assert_eq!(env.marks(), "BA");

    // A program that denies everything, first in line: creation is denied
    // and nothing after it runs; on exit every program runs regardless.
    drop((la, lb));
    let ld = deny.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let la = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let lb = b.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    assert_eq!(
        spawn("\\??\\C:\\r.exe", None).creation_status,
        STATUS_ACCESS_DENIED
    );
    assert_eq!(env.marks(), "", "nothing runs after a denial");
    assert!(ps::exit_process(p.pid, 0, None));
    assert_eq!(
        env.marks(),
        "AB",
        "DELETE ignores the verdict: every program runs"
    );
    assert!(ps::exit_process(q.pid, 0, None));
    assert_eq!(env.marks(), "AB");

    drop((ld, la, lb, a, b, deny));
    env.finish();
}

#[test]
fn a_program_stopped_by_an_error_returns_the_interpreters_minus_one() {
    let env = setup();
    let bad = env.load("read_past_packet");
    let a = env.load("mark_a");
    let lbad = bad.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let la = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let p = spawn("\\??\\C:\\x.exe", Some("x"));
    // eBPF for Windows' core returns EBPF_SUCCESS with result 0xFFFFFFFF
    // for an interpreted program that stopped on an error: the driver sees
    // a negative NTSTATUS, a denial, and stops there.
    assert_eq!(p.creation_status, -1, "the interpreter's -1 is the verdict");
    assert_eq!(env.marks(), "", "nothing runs after a denial");
    let errors = bad.take_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].insn_offset.is_some());
    drop((lbad, la, bad, a));
    env.finish();
}

#[test]
fn links_of_one_core_share_one_batch_per_event() {
    let env = setup();
    let a = env.load("mark_a");
    let b = env.load("mark_b");
    let la = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let lb = b.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let before = core::batches_begun();
    spawn("\\??\\C:\\p.exe", None);
    assert_eq!(env.marks(), "AB");
    assert_eq!(
        core::batches_begun() - before,
        1,
        "one batch for both programs"
    );
    drop((la, lb, a, b));
    env.finish();
}

#[test]
fn the_notify_routine_is_registered_only_while_programs_are_attached() {
    let env = setup();
    let count = || ps::notify_routine_counts().process;
    assert_eq!(count(), 0);
    let a = env.load("mark_a");
    assert_eq!(
        count(),
        0,
        "loading a program does not register the routine"
    );
    let l1 = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    assert_eq!(count(), 1, "registered on the first attach");
    let l2 = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    assert_eq!(count(), 1, "registered once");
    drop(l1);
    ntsim::io::wait_idle();
    assert_eq!(count(), 1, "still registered while a program is attached");
    drop(l2);
    // Removal runs on a system worker thread (it waits for the routine's
    // calls in flight, so it cannot run in detach or in a callout).
    ntsim::io::wait_idle();
    assert_eq!(count(), 0, "removed after the last detach");
    let l3 = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    assert_eq!(count(), 1, "registered again");
    drop((l3, a));
    env.finish();
}

#[test]
fn unloading_with_programs_attached_detaches_them_first() {
    let mut env = setup();
    let a = env.load("mark_a");
    let link = a.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    assert!(link.is_attached());
    env.sim.unload_driver().unwrap();
    assert!(!link.is_attached(), "unload detached the link");
    assert_eq!(
        ps::notify_routine_counts().process,
        0,
        "the routine is gone"
    );
    assert!(
        a.program_info().is_none(),
        "the core stopped using the program information"
    );
    assert_eq!(nmr::provider_count(), 0);
    drop((link, a));
    env.finish();
}

#[test]
fn attach_and_detach_while_events_fire_on_several_threads() {
    let env = setup();
    let a = env.load("mark_a");
    let monitor = env.load("monitor");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raisers: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let p = spawn(&format!("\\??\\C:\\t{i}.exe"), Some("t"));
                    assert_eq!(p.creation_status, 0);
                    assert!(ps::exit_process(p.pid, 0, None));
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..1500 {
        let program = if i % 2 == 0 { &a } else { &monitor };
        let link = program.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
        if i % 3 == 0 {
            std::thread::yield_now();
        }
        drop(link);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let events: u64 = raisers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(events > 0);
    ntsim::io::wait_idle();
    assert_eq!(ps::notify_routine_counts().process, 0);
    assert_eq!(
        violation::peek(),
        vec![],
        "no call after detach, no IRQL violation"
    );
    env.object.map("marks").unwrap().drain_ring();
    env.records();
    drop((a, monitor));
    env.finish();
}
