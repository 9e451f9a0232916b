//! The process hook end to end: the real driver image in ntsim, real eBPF
//! programs (tests/bpf/process_test.c) loaded and attached through ntsim's
//! eBPF core, process events raised through the simulated kernel.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::Env;

use ntsim::build::driver_image;
use ntsim::ebpf::core;
use ntsim::ebpf::Object;
use ntsim::process::{self as hook, from_utf16, utf16, ProcessRecord, STATUS_ACCESS_DENIED};
use ntsim::ps::{self, ProcessSpec};
use ntsim::{nmr, violation};

fn setup() -> Env {
    Env::start(&driver_image(), "tests/bpf/process_test.o")
}

impl Env {
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

    // The parent and the creating process differ (as when a service
    // creates a process on behalf of another, with an explicit parent).
    let parent = spawn("\\??\\C:\\Windows\\explorer.exe", None);
    assert_eq!(parent.creation_status, 0);
    let creator = spawn("\\??\\C:\\Windows\\System32\\svchost.exe", None);
    assert_eq!(creator.creation_status, 0);
    let creator_tid = ps::create_thread(creator.pid);
    assert_ne!(parent.pid, creator.pid);
    env.records();

    let image = "\\??\\C:\\Windows\\System32\\cmd.exe";
    let command_line = "cmd.exe /c \"echo hello\"";
    let creation_time = 133_700_000_000_000_000i64;
    let lookups = ps::account_lookups();
    let child = ps::create_process(&ProcessSpec {
        image_file_name: image.into(),
        command_line: Some(command_line.into()),
        parent: Some(parent.pid),
        creating_thread: Some((creator.pid, creator_tid)),
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
    assert_eq!(r.parent_process_id, parent.pid as u64, "ParentProcessId");
    assert_eq!(
        r.creating_process_id, creator.pid as u64,
        "CreatingThreadId.UniqueProcess"
    );
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

/// `small_record_t` of tests/bpf/process_test.c (`monitor_small`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SmallRecord {
    process_id: u64,
    parent_process_id: u64,
    creating_process_id: u64,
    creating_thread_id: u64,
    logon_id: u64,
    pid_tgid: u64,
    operation: u32,
    image_result: i32,
    command_length: i32,
    process_exit_code: u32,
    image: Vec<u8>,
    command: Vec<u8>,
}

impl SmallRecord {
    const SIZE: usize = 192;

    fn parse(b: &[u8]) -> SmallRecord {
        assert_eq!(b.len(), Self::SIZE, "a whole small_record_t");
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let image_result = u32_at(52) as i32;
        let command_length = u32_at(56) as i32;
        SmallRecord {
            process_id: u64_at(0),
            parent_process_id: u64_at(8),
            creating_process_id: u64_at(16),
            creating_thread_id: u64_at(24),
            logon_id: u64_at(32),
            pid_tgid: u64_at(40),
            operation: u32_at(48),
            image_result,
            command_length,
            process_exit_code: u32_at(60),
            image: b[64..64 + image_result.clamp(0, 64) as usize].to_vec(),
            command: b[128..128 + command_length.clamp(0, 64) as usize].to_vec(),
        }
    }
}

fn small_records(object: &Object) -> Vec<SmallRecord> {
    object
        .map("small_events")
        .unwrap()
        .drain_ring()
        .iter()
        .map(|r| SmallRecord::parse(r))
        .collect()
}

/// What one raiser thread did: (pid, image, command line, creating
/// (pid, tid), exit code) per process.
type Raised = Vec<(usize, String, String, (usize, usize), u32)>;

#[test]
fn attach_and_detach_while_events_fire_on_several_threads() {
    let env = setup();
    let a = env.load("mark_a");
    let small = env.load("monitor_small");
    // One link stays attached throughout: every event reaches it. The
    // loop below attaches and detaches mark_a and a second monitor_small
    // link, so each event has one or two records.
    let steady = small.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ring = env.object.map("small_events").unwrap().clone();
    let marks = env.object.map("marks").unwrap().clone();
    let raisers: Vec<_> = (0..3)
        .map(|i| {
            let stop = stop.clone();
            let drained = drained.clone();
            let ring = ring.clone();
            let marks = marks.clone();
            std::thread::spawn(move || {
                let mut raised: Raised = Vec::new();
                let creator = ps::current_ids();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = raised.len();
                    let image = format!("\\??\\C:\\t{i}.exe");
                    let command = format!("t{i} {n}");
                    let p = spawn(&image, Some(&command));
                    assert_eq!(p.creation_status, 0);
                    let code = (i * 1000 + n) as u32;
                    assert!(ps::exit_process(p.pid, code as i32, None));
                    raised.push((p.pid, image, command, creator, code));
                    // Drain as we go: the rings never fill up, so no record
                    // may be missing.
                    drained.lock().unwrap().extend(ring.drain_ring());
                    marks.drain_ring();
                }
                raised
            })
        })
        .collect();
    for i in 0..1500 {
        let program = if i % 2 == 0 { &a } else { &small };
        let link = program.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
        if i % 3 == 0 {
            std::thread::yield_now();
        }
        drop(link);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let raised: Raised = raisers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(!raised.is_empty());
    drop(steady);
    ntsim::io::wait_idle();
    assert_eq!(ps::notify_routine_counts().process, 0);
    assert_eq!(
        violation::peek(),
        vec![],
        "no call after detach, no IRQL violation"
    );

    // Every event's records: one from the steady link, maybe one more, each
    // with that event's fields.
    let mut records: Vec<SmallRecord> = drained
        .lock()
        .unwrap()
        .iter()
        .map(|r| SmallRecord::parse(r))
        .collect();
    records.extend(small_records(&env.object));
    let mut by_event: std::collections::HashMap<(u64, u32), Vec<&SmallRecord>> =
        std::collections::HashMap::new();
    for r in &records {
        by_event
            .entry((r.process_id, r.operation))
            .or_default()
            .push(r);
    }
    for (pid, image, command, (creator_pid, creator_tid), code) in &raised {
        for operation in [0u32, 1] {
            let seen = by_event
                .remove(&(*pid as u64, operation))
                .unwrap_or_default();
            assert!(
                (1..=2).contains(&seen.len()),
                "pid {pid} operation {operation}: {} records",
                seen.len()
            );
            for r in seen {
                if operation == 0 {
                    assert_eq!(r.parent_process_id, 0, "{r:?}");
                    assert_eq!(
                        (r.creating_process_id, r.creating_thread_id),
                        (*creator_pid as u64, *creator_tid as u64),
                        "{r:?}"
                    );
                    assert_eq!(r.image, utf16(image), "{r:?}");
                    assert_eq!(r.command, utf16(command), "{r:?}");
                    assert_eq!(r.pid_tgid >> 32, *creator_pid as u64, "{r:?}");
                } else {
                    assert_eq!(r.process_exit_code, *code, "{r:?}");
                    assert_eq!((r.image_result, r.command_length), (0, 0), "{r:?}");
                    assert_eq!(r.pid_tgid >> 32, *pid as u64, "{r:?}");
                }
            }
        }
    }
    assert!(
        by_event.is_empty(),
        "records of events nobody raised: {by_event:?}"
    );
    drop((a, small));
    env.finish();
}

#[test]
fn bpf_get_current_logon_id_is_the_creating_threads_on_create_and_the_processs_on_exit() {
    let env = setup();
    let small = env.load("monitor_small");
    let link = small.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let parent = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\explorer.exe".into(),
        user_sid: Some(ps::test_user_sid()),
        logon_id: Some(0x1_0000_1111),
        ..Default::default()
    });
    let creator_tid = ps::create_thread(parent.pid);
    let child = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\System32\\cmd.exe".into(),
        parent: Some(parent.pid),
        creating_thread: Some((parent.pid, creator_tid)),
        user_sid: Some(ps::test_user_sid()),
        logon_id: Some(0x2222),
        ..Default::default()
    });
    assert!(ps::exit_process(child.pid, 0, None));
    let records = small_records(&env.object);
    let logons: Vec<_> = records
        .iter()
        .map(|r| (r.process_id, r.operation, r.logon_id))
        .collect();
    assert_eq!(
        logons,
        [
            (parent.pid as u64, 0, ps::SYSTEM_LUID),
            (child.pid as u64, 0, 0x1_0000_1111),
            (child.pid as u64, 1, 0x2222),
        ],
        "CREATE runs in the creating thread (a System thread for the first)"
    );
    assert_eq!(
        records[1].pid_tgid,
        ((parent.pid as u64) << 32) | creator_tid as u64
    );
    drop((link, small));
    env.finish();
}

#[test]
fn the_programs_ntstatus_is_the_creation_status_and_only_negative_values_deny() {
    let env = setup();
    let judge = env.load("verdict_from_map");
    let after = env.load("mark_a");
    let l1 = judge.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let l2 = after.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let set = |v: i32| {
        env.object
            .map("verdict")
            .unwrap()
            .update(&0u32.to_le_bytes(), &v.to_le_bytes(), 0)
            .unwrap()
    };
    for denial in [
        0xC000_0001u32 as i32, // STATUS_UNSUCCESSFUL
        STATUS_ACCESS_DENIED,
        0xC000_0005u32 as i32, // STATUS_ACCESS_VIOLATION
        0x8000_0005u32 as i32, // STATUS_BUFFER_OVERFLOW, a warning: negative
        i32::MIN,
        -1,
    ] {
        set(denial);
        let p = spawn("\\??\\C:\\x.exe", Some("x"));
        assert_eq!(
            p.creation_status, denial,
            "{denial:#x}: the creation fails with the program's own status"
        );
        assert!(ps::process(p.pid).is_none(), "{denial:#x}: not created");
        assert_eq!(env.marks(), "", "{denial:#x}: nothing runs after a denial");
    }
    for permit in [0, 1, 0x103 /* STATUS_PENDING */, 0x4000_0000, i32::MAX] {
        set(permit);
        let p = spawn("\\??\\C:\\y.exe", Some("y"));
        assert_eq!(p.creation_status, 0, "{permit:#x} permits");
        assert!(ps::process(p.pid).is_some(), "{permit:#x}: created");
        assert_eq!(env.marks(), "A", "{permit:#x}: the next program runs");
        // DELETE ignores every verdict.
        set(STATUS_ACCESS_DENIED);
        assert!(ps::exit_process(p.pid, 0, None));
        assert_eq!(env.marks(), "A", "DELETE runs every program");
    }
    drop((l1, l2, judge, after));
    env.finish();
}

/// `fit_record_t` of tests/bpf/process_test.c (`image_fit`): results and
/// the 16-byte and 15-byte buffers with their sentinels.
fn fit_records(object: &Object) -> Vec<(i32, i32, Vec<u8>, Vec<u8>)> {
    object
        .map("fits")
        .unwrap()
        .drain_ring()
        .iter()
        .map(|b| {
            assert_eq!(b.len(), 48, "a whole fit_record_t");
            let i32_at = |o: usize| i32::from_le_bytes(b[o..o + 4].try_into().unwrap());
            (i32_at(0), i32_at(4), b[8..28].to_vec(), b[28..48].to_vec())
        })
        .collect()
}

/// The one record of the last event, after checking that the helper
/// stayed inside the buffers (the guarded copies record a violation).
fn one_fit(env: &Env) -> (i32, i32, Vec<u8>, Vec<u8>) {
    let v = violation::peek();
    assert!(v.is_empty(), "the helper went outside a buffer: {v:?}");
    let mut records = fit_records(&env.object);
    assert_eq!(records.len(), 1, "one record per event");
    records.remove(0)
}

#[test]
fn the_image_path_fills_an_exact_buffer_and_a_buffer_one_byte_short_is_refused() {
    let env = setup();
    let fit = env.load("image_fit");
    let link = fit.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let sentinel = |n: usize| vec![0x5A; n];
    let untouched = |n: usize| vec![0xAA; n];

    // 16 bytes (8 UTF-16 units): fills the 16-byte buffer exactly, one
    // byte too many for the 15-byte one.
    spawn("C:\\a.exe", None);
    let (exact, short, exact_buf, short_buf) = one_fit(&env);
    assert_eq!(exact, 16, "an exact fit is accepted");
    assert_eq!(exact_buf, [utf16("C:\\a.exe"), sentinel(4)].concat());
    assert_eq!(short, -22, "a buffer one byte short: -EINVAL");
    assert_eq!(
        short_buf,
        [untouched(15), sentinel(5)].concat(),
        "nothing written"
    );

    // 14 bytes: fits both, the rest of each buffer untouched.
    spawn("C:\\a.ex", None);
    let (exact, short, exact_buf, short_buf) = one_fit(&env);
    assert_eq!((exact, short), (14, 14));
    assert_eq!(
        exact_buf,
        [utf16("C:\\a.ex"), untouched(2), sentinel(4)].concat()
    );
    assert_eq!(
        short_buf,
        [utf16("C:\\a.ex"), untouched(1), sentinel(5)].concat()
    );

    // 18 bytes: too long for both.
    spawn("C:\\ab.exe", None);
    let (exact, short, exact_buf, _) = one_fit(&env);
    assert_eq!((exact, short), (-22, -22));
    assert_eq!(exact_buf, [untouched(16), sentinel(4)].concat());
    drop((link, fit));
    env.finish();
}

#[test]
fn a_sid_of_the_maximum_68_bytes_is_reported_and_resolved() {
    let env = setup();
    // 15 sub-authorities (SID_MAX_SUB_AUTHORITIES): 8 + 15 * 4 = 68 bytes.
    let sid = ps::parse_sid("S-1-5-21-1-2-3-4-5-6-7-8-9-10-11-12-13-14").unwrap();
    assert_eq!(sid.len(), ps::SECURITY_MAX_SID_SIZE);
    let mut accounts = ps::default_accounts();
    accounts.push(ps::Account {
        sid: sid.clone(),
        name: "maxsid".into(),
        domain: "WIDE".into(),
        use_: ps::SID_NAME_USE_USER,
    });
    ps::set_accounts(accounts);
    let monitor = env.load("monitor");
    let link = monitor.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\m.exe".into(),
        user_sid: Some(sid.clone()),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    let r = &env.records()[0];
    assert_eq!(r.token_sid_size, 68, "the whole 68-byte SID");
    assert_eq!(r.token_sid, sid);
    assert_eq!(
        (from_utf16(&r.name), from_utf16(&r.domain)),
        ("maxsid".into(), "WIDE".into())
    );
    drop((link, monitor));
    env.finish();
}

#[test]
fn the_longest_account_name_and_domain_the_driver_resolves_come_back_whole() {
    // The driver resolves names and domains of up to 256 UTF-16 units
    // (ACCOUNT_CAPACITY); a program with 512-byte buffers gets them whole.
    let env = setup();
    let name = "n".repeat(255) + "N";
    let domain = "d".repeat(255) + "D";
    let mut accounts = ps::default_accounts();
    accounts.retain(|a| a.sid != ps::test_user_sid());
    accounts.push(ps::Account {
        sid: ps::test_user_sid(),
        name: name.clone(),
        domain: domain.clone(),
        use_: ps::SID_NAME_USE_USER,
    });
    ps::set_accounts(accounts);
    let program = env.load("long_account");
    let link = program.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    spawn("\\??\\C:\\l.exe", None);
    let records = env.object.map("accounts").unwrap().drain_ring();
    assert_eq!(records.len(), 1);
    let b = &records[0];
    assert_eq!(b.len(), 1032, "a whole account_record_t");
    let name_result = i32::from_le_bytes(b[0..4].try_into().unwrap());
    let domain_result = i32::from_le_bytes(b[4..8].try_into().unwrap());
    assert_eq!((name_result, domain_result), (512, 512));
    assert_eq!(from_utf16(&b[8..520]), name);
    assert_eq!(from_utf16(&b[520..1032]), domain);
    drop((link, program));
    env.finish();
}
