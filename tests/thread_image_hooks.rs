//! The thread and image-load hooks end to end: the real driver image in
//! ntsim, the programs of tests/bpf/sysmon.c loaded and attached through
//! ntsim's eBPF core, thread and image events raised through the simulated
//! kernel.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::Env;

use ntsim::build::driver_image;
use ntsim::ebpf::core::{Link, LoadedProgram};
use ntsim::ebpf::{Object, ObjectError};
use ntsim::image_load::{self as image_hook, ImageRecord};
use ntsim::process::{self as process_hook, from_utf16, utf16};
use ntsim::ps::image::{load_driver, load_user_image, ImageSpec};
use ntsim::ps::thread::{self as threads, ThreadSpec};
use ntsim::ps::{self, NotifyCounts, ProcessSpec};
use ntsim::thread::{self as thread_hook, ThreadRecord};
use ntsim::{fault, violation, Sim};

const SYSTEM_PID: usize = 4;

fn setup() -> Env {
    Env::start(&driver_image(), "tests/bpf/sysmon.o")
}

impl Env {
    fn attach_thread(&self, name: &str) -> (LoadedProgram, Link) {
        let p = self.load(name);
        let link = p
            .attach(thread_hook::ATTACH_TYPE, &[], 0)
            .expect("attach to thread");
        (p, link)
    }

    fn attach_image(&self, name: &str) -> (LoadedProgram, Link) {
        let p = self.load(name);
        let link = p
            .attach(image_hook::ATTACH_TYPE, &[], 0)
            .expect("attach to image_load");
        (p, link)
    }

    fn threads(&self) -> Vec<ThreadRecord> {
        self.object
            .map("threads")
            .unwrap()
            .drain_ring()
            .iter()
            .map(|r| ThreadRecord::parse(r).expect("a whole thread record"))
            .collect()
    }

    fn images(&self) -> Vec<ImageRecord> {
        self.object
            .map("images")
            .unwrap()
            .drain_ring()
            .iter()
            .map(|r| ImageRecord::parse(r).expect("a whole image record"))
            .collect()
    }
}

fn spawn(image: &str) -> usize {
    let p = ps::create_process(&ProcessSpec {
        image_file_name: image.to_string(),
        command_line: Some(image.to_string()),
        user_sid: Some(ps::test_user_sid()),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0);
    p.pid
}

/// Fails the call of `api` `ahead` calls from now (1: the next one).
fn fail_ahead(api: &str, ahead: u64) {
    let made = fault::counts().get(api).copied().unwrap_or(0);
    fault::fail_nth(api, made + ahead);
}

fn counts() -> NotifyCounts {
    ps::notify_routine_counts()
}

#[test]
fn program_information_of_both_types_passes_the_core_validation() {
    let env = setup();
    for (name, program_type, size, packet) in [
        ("thread_monitor", thread_hook::PROGRAM_TYPE, 56, false),
        ("image_monitor", image_hook::PROGRAM_TYPE, 56, true),
    ] {
        let program = env.load(name);
        let info = program
            .program_info()
            .expect("bound to the driver's provider");
        let td = &info.type_descriptor;
        assert_eq!(td.program_type, program_type);
        assert_eq!(td.bpf_prog_type, 0, "new program types have no number");
        assert_eq!(td.context_descriptor.size, size);
        if packet {
            assert_eq!(
                (td.context_descriptor.data, td.context_descriptor.end),
                (0, 8)
            );
        } else {
            assert_eq!(
                (td.context_descriptor.data, td.context_descriptor.end),
                (-1, -1),
                "no packet"
            );
        }
        assert_eq!(td.context_descriptor.meta, -1);
        assert!(
            info.type_specific_helpers.is_empty(),
            "no program-type helpers"
        );
        assert_eq!(
            info.required_irql,
            if packet { 0 } else { 1 },
            "thread routines may run at APC_LEVEL, load-image routines at PASSIVE_LEVEL"
        );
    }
    assert_eq!(
        env.load("thread_monitor")
            .program_info()
            .unwrap()
            .type_descriptor
            .name,
        "thread"
    );
    assert_eq!(
        env.load("image_monitor")
            .program_info()
            .unwrap()
            .type_descriptor
            .name,
        "image_load"
    );
    let violations = violation::take();
    assert!(violations.is_empty(), "{violations:#?}");
    env.finish();
}

#[test]
fn local_remote_and_system_threads_carry_every_field() {
    let env = setup();
    let attached = env.attach_thread("thread_monitor");
    let owner = spawn("\\??\\C:\\Windows\\System32\\notepad.exe");
    let injector = spawn("\\??\\C:\\Temp\\injector.exe");

    // Local: the process creates a thread of its own.
    let local = threads::create_thread(&ThreadSpec {
        process: owner,
        creator: Some(owner),
        creating_thread: None,
        start_address: 0x7ff6_1234_5000,
    });
    // Remote: another process creates it (CreateRemoteThread).
    let remote = threads::create_thread(&ThreadSpec {
        process: owner,
        creator: Some(injector),
        creating_thread: None,
        start_address: 0x7ffd_0000_1000,
    });
    // System: a thread of the System process, created by the System process.
    let system = threads::create_thread(&ThreadSpec {
        process: SYSTEM_PID,
        creator: Some(SYSTEM_PID),
        creating_thread: None,
        start_address: 0xffff_f800_0100_0000,
    });
    assert!(threads::exit_thread(remote, 0xC000_0005u32 as i32));

    let r = env.threads();
    assert_eq!(r.len(), 4, "{r:#?}");
    assert_eq!(
        r[0],
        ThreadRecord {
            process_id: owner as u64,
            thread_id: local as u64,
            creating_process_id: owner as u64,
            creating_thread_id: r[0].creating_thread_id,
            start_address: 0x7ff6_1234_5000,
            exit_status: 0,
            operation: thread_hook::OPERATION_CREATE,
            flags: 0,
            reserved: 0,
            alert: 0,
            initial: 0,
        },
        "a local thread"
    );
    assert_eq!(
        ps::thread_process(r[0].creating_thread_id as usize),
        Some(owner),
        "the creating thread is a thread of the owner"
    );
    assert_eq!(
        r[1],
        ThreadRecord {
            process_id: owner as u64,
            thread_id: remote as u64,
            creating_process_id: injector as u64,
            creating_thread_id: r[1].creating_thread_id,
            start_address: 0x7ffd_0000_1000,
            exit_status: 0,
            operation: thread_hook::OPERATION_CREATE,
            flags: thread_hook::FLAG_REMOTE,
            reserved: 0,
            alert: 0,
            initial: 0,
        },
        "a remote thread"
    );
    assert_eq!(
        ps::thread_process(r[1].creating_thread_id as usize),
        Some(injector)
    );
    assert_eq!(r[2].process_id, SYSTEM_PID as u64);
    assert_eq!(r[2].thread_id, system as u64);
    assert_eq!(r[2].creating_process_id, SYSTEM_PID as u64);
    assert_eq!(r[2].flags, thread_hook::FLAG_SYSTEM, "a System thread");
    assert_eq!(r[2].start_address, 0xffff_f800_0100_0000);
    assert_eq!(
        r[3],
        ThreadRecord {
            process_id: owner as u64,
            thread_id: remote as u64,
            creating_process_id: 0,
            creating_thread_id: 0,
            start_address: 0x7ffd_0000_1000,
            exit_status: 0xC000_0005,
            operation: thread_hook::OPERATION_EXIT,
            flags: 0,
            reserved: 0,
            alert: 0,
            initial: 0,
        },
        "an exit: status, no creator, never remote"
    );
    assert!(violation::take().is_empty());
    drop(attached);
    env.finish();
}

#[test]
fn a_remote_thread_into_lsass_raises_the_alert() {
    let env = setup();
    let watch = env.load("watch_lsass");
    let watch_link = watch
        .attach(process_hook::ATTACH_TYPE, &[], 0)
        .expect("attach watch_lsass");
    let attached = env.attach_thread("thread_monitor");
    let lsass = spawn("\\??\\C:\\Windows\\System32\\LSASS.EXE");
    let other = spawn("\\??\\C:\\Windows\\System32\\svchost.exe");
    let attacker = spawn("\\??\\C:\\Temp\\mimikatz.exe");
    for (target, creator) in [
        (lsass, attacker),
        (lsass, lsass),
        (other, attacker),
        (attacker, attacker),
    ] {
        threads::create_thread(&ThreadSpec {
            process: target,
            creator: Some(creator),
            creating_thread: None,
            start_address: 0x1000,
        });
    }
    let alerts: Vec<_> = env.threads().iter().map(|r| r.alert).collect();
    assert_eq!(
        alerts,
        [1, 0, 0, 0],
        "only the remote thread into lsass.exe"
    );
    assert!(ps::exit_process(lsass, 0, None));
    threads::create_thread(&ThreadSpec {
        process: other,
        creator: Some(attacker),
        creating_thread: None,
        start_address: 0,
    });
    assert_eq!(env.threads()[0].alert, 0);
    drop((attached, watch_link, watch));
    env.finish();
}

#[test]
fn user_images_and_drivers_carry_every_field() {
    let env = setup();
    let attached = env.attach_image("image_monitor");
    let pid = spawn("\\??\\C:\\Windows\\System32\\notepad.exe");
    let dll = "\\Device\\HarddiskVolume3\\Windows\\System32\\kernel32.dll";
    load_user_image(
        pid,
        &ImageSpec {
            path: dll.into(),
            base: 0x7ffd_4000_0000,
            size: 0xC_2000,
            signature_level: 12,
            signature_type: 1,
            ..Default::default()
        },
    );
    let sys = "\\SystemRoot\\System32\\drivers\\evil.sys";
    load_driver(&ImageSpec {
        path: sys.into(),
        base: 0xffff_f806_1000_0000,
        size: 0x8000,
        signature_level: 4,
        signature_type: 2,
        ..Default::default()
    });
    load_user_image(
        pid,
        &ImageSpec {
            path: "\\Device\\HarddiskVolume3\\Windows\\System32\\ntdll.dll".into(),
            base: 0x7ffd_6000_0000,
            size: 0x1F_0000,
            mapped_to_all_pids: true,
            partial_map: true,
            ..Default::default()
        },
    );
    // A process-wide x86 image: a routine registered without
    // PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE would not see it.
    ps::load_image(
        pid,
        None,
        &ps::ImageInfoSpec {
            image_base: 0x7700_0000,
            image_size: 0x1000,
            machine_type_mismatch: true,
            ..Default::default()
        },
    );

    let r = env.images();
    assert_eq!(r.len(), 4, "{r:#?}");
    assert_eq!(r[0].process_id, pid as u64);
    assert_eq!(
        ps::thread_process(r[0].thread_id as usize),
        Some(pid),
        "a thread of the process maps it"
    );
    assert_eq!(
        (r[0].image_base, r[0].image_size),
        (0x7ffd_4000_0000, 0xC_2000)
    );
    assert_eq!(
        (r[0].flags, r[0].signature_level, r[0].signature_type),
        (0, 12, 1)
    );
    assert_eq!(r[0].path_length as usize, utf16(dll).len());
    assert_eq!(from_utf16(&r[0].path), dll);

    assert_eq!(r[1].process_id, 0, "a driver: process id 0");
    assert_eq!(
        ps::thread_process(r[1].thread_id as usize),
        Some(SYSTEM_PID),
        "drivers load on a System thread"
    );
    assert_eq!(r[1].flags, image_hook::FLAG_SYSTEM_MODE);
    assert_eq!((r[1].signature_level, r[1].signature_type), (4, 2));
    assert_eq!(
        (r[1].image_base, r[1].image_size),
        (0xffff_f806_1000_0000, 0x8000)
    );
    assert_eq!(from_utf16(&r[1].path), sys);

    assert_eq!(
        r[2].flags,
        image_hook::FLAG_MAPPED_TO_ALL_PIDS | image_hook::FLAG_PARTIAL_MAP
    );
    assert_eq!(r[3].flags, image_hook::FLAG_MACHINE_TYPE_MISMATCH);
    assert_eq!(r[3].path_length, 0, "no name: an empty packet");
    assert!(r.iter().all(|r| r.reserved == 0));
    assert!(violation::take().is_empty());
    drop(attached);
    env.finish();
}

#[test]
fn each_hook_registers_its_routine_only_while_attached_independently() {
    let env = setup();
    assert_eq!(counts(), NotifyCounts::default());
    let (thread_program, thread_link) = env.attach_thread("thread_monitor");
    assert_eq!(
        counts(),
        NotifyCounts {
            process: 0,
            thread: 1,
            image: 0
        }
    );
    let (image_program, image_link) = env.attach_image("image_monitor");
    let second_image = env.attach_image("image_echo");
    assert_eq!(
        counts(),
        NotifyCounts {
            process: 0,
            thread: 1,
            image: 1
        },
        "one routine per hook however many links"
    );
    drop(thread_link);
    ntsim::io::wait_idle();
    assert_eq!(
        counts(),
        NotifyCounts {
            process: 0,
            thread: 0,
            image: 1
        },
        "the thread routine goes with its last link; the image routine stays"
    );
    let pid = spawn("\\??\\C:\\a.exe");
    threads::create_thread(&ThreadSpec {
        process: pid,
        creator: None,
        creating_thread: None,
        start_address: 1,
    });
    assert!(env.threads().is_empty(), "no thread program attached");
    drop(image_link);
    ntsim::io::wait_idle();
    assert_eq!(counts().image, 1, "image_echo is still attached");
    drop(second_image);
    ntsim::io::wait_idle();
    assert_eq!(counts(), NotifyCounts::default());
    drop((thread_program, image_program));
    env.finish();
}

#[test]
fn a_failed_registration_fails_the_attach_and_leaves_nothing() {
    let env = setup();
    for (api, attach_type, name) in [
        (
            "PsSetCreateThreadNotifyRoutine",
            thread_hook::ATTACH_TYPE,
            "thread_monitor",
        ),
        (
            "PsSetLoadImageNotifyRoutineEx",
            image_hook::ATTACH_TYPE,
            "image_monitor",
        ),
    ] {
        let program = env.load(name);
        fail_ahead(api, 1);
        let err = program
            .attach(attach_type, &[], 0)
            .err()
            .unwrap_or_else(|| panic!("{api} failing fails the attach"));
        assert!(
            err.to_string()
                .contains("0xc000009a (STATUS_INSUFFICIENT_RESOURCES)"),
            "{api}: {err}"
        );
        assert_eq!(counts(), NotifyCounts::default(), "{api}");
        let link = program
            .attach(attach_type, &[], 0)
            .expect("the next attach works");
        drop(link);
        ntsim::io::wait_idle();
        assert_eq!(counts(), NotifyCounts::default(), "{api}");
    }
    env.finish();
}

/// An exit event is read on the exiting thread through its pseudo handle:
/// no lookup, no handle opened, yet the start address and the exit status
/// both come through. (A driver that opened a handle on exit would also
/// read them; only the calls tell the fast path was taken.)
#[test]
fn a_thread_exit_reads_its_fields_without_opening_the_thread() {
    let env = setup();
    let attached = env.attach_thread("thread_monitor");
    let pid = spawn("\\??\\C:\\a.exe");
    let calls = |api: &str| fault::counts().get(api).copied().unwrap_or(0);
    let tid = threads::create_thread(&ThreadSpec {
        process: pid,
        creator: None,
        creating_thread: None,
        start_address: 0x4000,
    });
    let r = env.threads();
    assert_eq!(r.len(), 1, "one CREATE event");
    assert_eq!(r[0].start_address, 0x4000);
    assert!(
        calls("PsLookupThreadByThreadId") >= 1,
        "a CREATE runs on the creating thread: the new one is looked up"
    );
    let (lookups, opens) = (
        calls("PsLookupThreadByThreadId"),
        calls("ObOpenObjectByPointer"),
    );
    assert!(threads::exit_thread(tid, 7));
    let r = env.threads();
    assert_eq!(r.len(), 1, "one EXIT event");
    assert_eq!(r[0].thread_id, tid as u64);
    assert_eq!((r[0].start_address, r[0].exit_status), (0x4000, 7));
    assert_eq!(
        (
            calls("PsLookupThreadByThreadId"),
            calls("ObOpenObjectByPointer")
        ),
        (lookups, opens),
        "the exit callout runs on the exiting thread: nothing to look up or open"
    );
    assert!(threads::open_thread_handles().is_empty());
    assert!(violation::take().is_empty());
    drop(attached);
    env.finish();
}

#[test]
fn failed_thread_queries_leave_zeros_and_leak_nothing() {
    let env = setup();
    let attached = env.attach_thread("thread_monitor");
    let pid = spawn("\\??\\C:\\a.exe");
    for api in [
        "PsLookupThreadByThreadId",
        "ObOpenObjectByPointer",
        "ZwQueryInformationThread",
    ] {
        fail_ahead(api, 1);
        let tid = threads::create_thread(&ThreadSpec {
            process: pid,
            creator: None,
            creating_thread: None,
            start_address: 0x4000,
        });
        let r = env.threads();
        assert_eq!(r.len(), 1, "{api}: the event is still delivered");
        assert_eq!(r[0].thread_id, tid as u64);
        assert_eq!(r[0].start_address, 0, "{api}: no start address");
        assert!(threads::open_thread_handles().is_empty(), "{api}");
        // The exit's status query fails alone: the start address still reads.
        if api == "ZwQueryInformationThread" {
            fail_ahead(api, 2);
            assert!(threads::exit_thread(tid, 7));
            let r = env.threads();
            assert_eq!((r[0].start_address, r[0].exit_status), (0x4000, 0));
        }
    }
    assert!(violation::take().is_empty());
    drop(attached);
    env.finish();
}

#[test]
fn test_runs_round_trip_and_refuse_what_the_driver_never_produces() {
    let env = setup();
    let thread_echo = env.load("thread_echo");
    let md = ThreadRecord {
        process_id: 40,
        thread_id: 44,
        creating_process_id: 8,
        creating_thread_id: 12,
        start_address: 0x100,
        exit_status: 3,
        operation: thread_hook::OPERATION_EXIT,
        flags: thread_hook::FLAG_REMOTE | thread_hook::FLAG_SYSTEM,
        reserved: 0,
        alert: 0,
        initial: 0,
    };
    let ctx = md.context_bytes();
    let out = thread_echo.test_run(&[], &ctx, 0, 56).expect("test run");
    assert_eq!(out.result, 44 + 0x100 + 3 + (1 << 8) + (3 << 12));
    assert_eq!(out.context_out, ctx, "the context comes back as it went");
    assert!(out.data_out.is_empty());
    let out = thread_echo.test_run(&[], &[], 0, 56).expect("no ctx_in");
    assert_eq!(out.result, 0);
    assert_eq!(out.context_out, vec![0; 56]);
    let out = thread_echo
        .test_run(&[], &ctx, 0, 55)
        .expect("short ctx_out");
    assert!(out.context_out.is_empty(), "ctx_out too small: 0 bytes");
    for (what, data, ctx) in [
        ("data", vec![1u8, 2], ctx.clone()),
        ("short context", vec![], ctx[..55].to_vec()),
        ("operation 2", vec![], {
            let mut c = ctx.clone();
            c[44] = 2;
            c
        }),
        ("unknown flag", vec![], {
            let mut c = ctx.clone();
            c[48] = 4;
            c
        }),
        ("reserved", vec![], {
            let mut c = ctx.clone();
            c[52] = 1;
            c
        }),
    ] {
        assert!(
            thread_echo.test_run(&data, &ctx, 0, 56).is_err(),
            "thread: {what} is refused"
        );
    }

    let image_echo = env.load("image_echo");
    let rec = ImageRecord {
        process_id: 40,
        thread_id: 44,
        image_base: 0x10000,
        image_size: 0x30,
        flags: image_hook::FLAG_SYSTEM_MODE | image_hook::FLAG_PARTIAL_MAP,
        signature_level: 15,
        signature_type: 7,
        ..Default::default()
    };
    let ctx = rec.context_bytes();
    assert_eq!(ctx.len(), 56);
    let path = utf16("C:\\x.dll");
    let out = image_echo.test_run(&path, &ctx, 64, 56).expect("test run");
    assert_eq!(
        out.result,
        0x30 + 5 + (15 << 8) + (7 << 12) + ((b'C' as u64) << 16) + ((path.len() as u64) << 24)
    );
    assert_eq!(out.data_out, path, "the path comes back");
    assert_eq!(out.context_out, ctx, "pointers zeroed, fields as they went");
    let out = image_echo
        .test_run(&path, &ctx, path.len() - 1, 56)
        .unwrap();
    assert!(out.data_out.is_empty(), "data_out too small: 0 bytes");
    let out = image_echo.test_run(&[], &[], 0, 56).expect("nothing in");
    assert_eq!(out.result, 0);
    let max = vec![b'a'; 65534];
    assert!(image_echo.test_run(&max, &ctx, 0, 0).is_ok(), "65534 bytes");
    for (what, data, ctx) in [
        ("odd path", path[..3].to_vec(), ctx.clone()),
        ("path too long", vec![b'a'; 65536], ctx.clone()),
        ("short context", path.clone(), ctx[..55].to_vec()),
        ("unknown flag", path.clone(), {
            let mut c = ctx.clone();
            c[48] = 0x10;
            c
        }),
        ("signature level", path.clone(), {
            let mut c = ctx.clone();
            c[52] = 16;
            c
        }),
        ("signature type", path.clone(), {
            let mut c = ctx.clone();
            c[53] = 8;
            c
        }),
        ("reserved", path.clone(), {
            let mut c = ctx.clone();
            c[54] = 1;
            c
        }),
    ] {
        assert!(
            image_echo.test_run(&data, &ctx, 0, 56).is_err(),
            "image_load: {what} is refused"
        );
    }
    drop((thread_echo, image_echo));
    env.finish();
}

#[test]
fn attach_and_detach_under_load_of_all_three_kinds_on_several_threads() {
    let env = setup();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pid = spawn("\\??\\C:\\host.exe");
    std::thread::scope(|scope| {
        for worker in 0..3 {
            let stop = &stop;
            scope.spawn(move || {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the stress did not finish within 60 s"
                    );
                    match (worker + n) % 3 {
                        0 => {
                            let child = spawn("\\??\\C:\\child.exe");
                            assert!(ps::exit_process(child, 0, None));
                        }
                        1 => {
                            let tid = threads::create_thread(&ThreadSpec {
                                process: pid,
                                creator: None,
                                creating_thread: None,
                                start_address: 0x1000 + n,
                            });
                            assert!(threads::exit_thread(tid, 0));
                        }
                        _ => load_user_image(
                            pid,
                            &ImageSpec {
                                path: "C:\\x.dll".into(),
                                base: 0x1000,
                                size: 0x1000,
                                ..Default::default()
                            },
                        ),
                    }
                    n += 1;
                }
            });
        }
        // Stops the workers even if an attach below panics.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        let _stop = StopOnDrop(&stop);
        for round in 0..40 {
            let (a, la) = env.attach_thread("thread_monitor");
            let (b, lb) = env.attach_image("image_monitor");
            let c = env.load("watch_lsass");
            let lc = c.attach(process_hook::ATTACH_TYPE, &[], 0).unwrap();
            if round % 2 == 0 {
                drop((la, lb, lc));
            } else {
                drop((lc, lb, la));
            }
            drop((a, b, c));
        }
    });
    ntsim::io::wait_idle();
    assert_eq!(counts(), NotifyCounts::default());
    assert!(
        !env.threads().is_empty() && !env.images().is_empty(),
        "events reached the programs while they were attached"
    );
    assert!(violation::take().is_empty());
    env.finish();
}

#[test]
fn every_fallible_call_of_load_attach_events_and_unload_fails_cleanly() {
    let image = driver_image();
    let object_bytes = std::fs::read(thread_hook::sample_object_path()).unwrap();
    let covered = ntsim::sim::sweep(|injection| {
        let mut sim = Sim::new();
        if let Some(i) = injection {
            fault::fail_nth(&i.api, i.call);
        }
        let context = format!("{injection:?}");
        let status = sim.load_driver(&image).unwrap();
        if status != 0 {
            assert!(injection.is_some(), "DriverEntry failed without a fault");
        } else {
            let object = match Object::load(&object_bytes, &ntsim::ebpf::store::section_map()) {
                Ok(object) => object,
                // A registry failure during the load left a section of the
                // store unwritten; the driver loaded and unloads cleanly
                // all the same.
                Err(ObjectError::UnknownSection { .. })
                    if injection.is_some_and(|i| i.api.starts_with("Zw"))
                        && !fault::fired().is_empty() =>
                {
                    sim.unload_driver().unwrap();
                    if let Err(findings) = sim.finish() {
                        panic!("{context}: {findings}");
                    }
                    return;
                }
                Err(e) => panic!("{context}: {e}"),
            };
            let mut kept = Vec::new();
            for (name, attach_type) in [
                ("thread_monitor", thread_hook::ATTACH_TYPE),
                ("image_monitor", image_hook::ATTACH_TYPE),
            ] {
                if let Ok(p) = LoadedProgram::load(object.program(name).unwrap().clone()) {
                    if let Ok(link) = p.attach(attach_type, &[], 0) {
                        kept.push((name, p, link));
                    }
                }
            }
            let pid = spawn("\\??\\C:\\f.exe");
            let tid = threads::create_thread(&ThreadSpec {
                process: pid,
                creator: None,
                creating_thread: None,
                start_address: 0x1000,
            });
            assert!(threads::exit_thread(tid, 5));
            load_user_image(
                pid,
                &ImageSpec {
                    path: "C:\\f.dll".into(),
                    base: 0x1000,
                    size: 0x1000,
                    ..Default::default()
                },
            );
            assert!(ps::exit_process(pid, 0, None));
            for (name, _, _) in &kept {
                let delivered = match *name {
                    "thread_monitor" => env_threads(&object),
                    _ => object.map("images").unwrap().drain_ring().len(),
                };
                let expected = if *name == "thread_monitor" { 2 } else { 1 };
                assert_eq!(
                    delivered, expected,
                    "{context}: {name}: a failure inside an event fails open"
                );
            }
            drop(kept);
            ntsim::io::wait_idle();
            assert_eq!(counts(), NotifyCounts::default(), "{context}");
            sim.unload_driver().unwrap();
        }
        if let Err(findings) = sim.finish() {
            panic!("{context}: {findings}");
        }
    });
    let names: Vec<String> = covered
        .iter()
        .map(|i| format!("{}#{}", i.api, i.call))
        .collect();
    for expected in [
        "NmrRegisterProvider#4",
        "NmrRegisterProvider#6",
        "PsSetCreateThreadNotifyRoutine#1",
        "PsSetLoadImageNotifyRoutineEx#1",
        // The create's lookup and open (an exit queries its own thread's
        // pseudo handle: no lookup, no open), the exit's second query.
        "PsLookupThreadByThreadId#1",
        "ObOpenObjectByPointer#1",
        "ZwQueryInformationThread#3",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} not covered: {names:?}"
        );
    }
}

fn env_threads(object: &Object) -> usize {
    object.map("threads").unwrap().drain_ring().len()
}
