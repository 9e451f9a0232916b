use super::*;

#[test]
fn builtin_parses_with_quotes_escapes_and_prefixes() {
    let s = builtin();
    assert_eq!(s.steps.len(), 7);
    let Step::Create(cmd) = &s.steps[1] else {
        panic!("step 2 creates cmd")
    };
    assert_eq!(cmd.image, "\\??\\C:\\Windows\\System32\\cmd.exe");
    assert_eq!(
        cmd.command_line.as_deref(),
        Some("cmd.exe /c \"echo hello\"")
    );
    assert_eq!(cmd.parent, Parent::Named("explorer".into()));
    assert_eq!(cmd.user_sid, Some(ps::test_user_sid()));
    assert_eq!(cmd.time, SCENARIO_EPOCH + 2 * TICKS_PER_SECOND);
    let Step::Create(notepad) = &s.steps[2] else {
        panic!("step 3 creates notepad")
    };
    assert_eq!(
        notepad.command_line.as_deref(),
        Some("notepad.exe C:\\Users\\tester\\notes.txt"),
        "backslashes other than \\\" and \\\\ are kept"
    );
    let Step::Create(svc) = &s.steps[4] else {
        panic!("step 5 creates svchost")
    };
    assert_eq!(svc.user_sid, Some(ps::SYSTEM_SID.to_vec()));
    let Step::Exit(exit) = &s.steps[6] else {
        panic!("step 7 is an exit")
    };
    assert_eq!((exit.code, exit.time), (1, SCENARIO_EPOCH + 105_000_000));
}

#[test]
fn accounts_users_and_codes() {
    let s = parse(
        "account alice domain=CORP sid=S-1-5-21-10-20-30-1002\n\
         create a image=\\Device\\x.exe user=CORP\\alice\n\
         create b image=x.exe user=none parent=a\n\
         create c image=y.exe user=S-1-5-18 parent=1234\n\
         exit a code=-1073741819\n\
         exit b code=0xC0000005\n",
    )
    .unwrap();
    assert_eq!(s.accounts.len(), 1);
    let sid = ps::parse_sid("S-1-5-21-10-20-30-1002").unwrap();
    let Step::Create(a) = &s.steps[0] else {
        panic!()
    };
    assert_eq!(a.image, "\\Device\\x.exe", "no prefix on a non-drive path");
    assert_eq!(a.user_sid, Some(sid));
    let Step::Create(b) = &s.steps[1] else {
        panic!()
    };
    assert_eq!(b.user_sid, None);
    let Step::Create(c) = &s.steps[2] else {
        panic!()
    };
    assert_eq!(c.parent, Parent::Pid(1234));
    let codes: Vec<_> = s.steps[3..]
        .iter()
        .map(|s| match s {
            Step::Exit(e) => e.code as u32,
            _ => panic!(),
        })
        .collect();
    assert_eq!(codes, [0xC000_0005, 0xC000_0005]);
}

#[test]
fn an_accounts_logon_session_goes_to_its_processes_tokens() {
    let _sim = crate::Sim::new();
    let s = parse(
        "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1234\n\
         account bob sid=S-1-5-21-10-20-30-1003 logon=77\n\
         create a image=C:\\a.exe user=alice\n\
         create b image=C:\\b.exe user=bob\n\
         create t image=C:\\t.exe\n",
    )
    .unwrap();
    let logons: Vec<_> = s
        .steps
        .iter()
        .map(|st| match st {
            Step::Create(c) => c.logon_id,
            other => panic!("only creations: {other:?}"),
        })
        .collect();
    assert_eq!(logons, [Some(0x1234), Some(77), None]);
    let mut runner = Runner::new(&s);
    let mut tokens = Vec::new();
    for st in &s.steps {
        let Outcome::Created { pid, .. } = runner.step(st) else {
            panic!("created");
        };
        tokens.push(ps::process(pid).unwrap().logon_id);
    }
    assert_eq!(tokens, [0x1234, 77, ps::SYSTEM_LUID]);
}

#[test]
fn a_child_without_user_inherits_its_parents_user_and_logon_session() {
    let _sim = crate::Sim::new();
    let s = parse(
        "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1a2b3c\n\
         create shell image=C:\\shell.exe pid=0x1000 user=alice\n\
         create child image=C:\\child.exe parent=shell\n\
         create by_pid image=C:\\c2.exe parent=4096\n\
         create grandchild image=C:\\g.exe parent=child\n\
         create as_system image=C:\\s.exe parent=shell user=SYSTEM\n\
         create orphan image=C:\\o.exe\n",
    )
    .unwrap();
    let alice = ps::parse_sid("S-1-5-21-10-20-30-1002").unwrap();
    let tokens: Vec<_> = s
        .steps
        .iter()
        .map(|st| match st {
            Step::Create(c) => (c.user_sid.clone(), c.logon_id),
            other => panic!("only creations: {other:?}"),
        })
        .collect();
    assert_eq!(
        tokens,
        [
            (Some(alice.clone()), Some(0x1a2b3c)),
            (Some(alice.clone()), Some(0x1a2b3c)),
            (Some(alice.clone()), Some(0x1a2b3c)),
            (Some(alice), Some(0x1a2b3c)),
            (Some(ps::SYSTEM_SID.to_vec()), None),
            (Some(ps::test_user_sid()), None),
        ]
    );
    // What the kernel's process gets: the logon session the helper returns.
    let mut runner = Runner::new(&s);
    let Outcome::Created { .. } = runner.step(&s.steps[0]) else {
        panic!("created");
    };
    let Outcome::Created { pid, .. } = runner.step(&s.steps[1]) else {
        panic!("created");
    };
    assert_eq!(ps::process(pid).unwrap().logon_id, 0x1a2b3c);
}

#[test]
fn load_driver_lines_name_the_drivers_in_order_before_the_steps() {
    let s = parse("# needs\nload-driver ntosebpfext\ncreate a image=x\n").unwrap();
    assert_eq!(s.drivers, ["ntosebpfext"]);
    assert_eq!(s.steps.len(), 1, "load-driver is not a step");
    assert!(parse("create a image=x\n").unwrap().drivers.is_empty());
    let e = |text: &str| parse(text).unwrap_err().to_string();
    let unknown = e("load-driver nosuch\n");
    assert!(
        unknown.contains("\"nosuch\" is not one of the repository's drivers (ntosebpfext"),
        "{unknown}"
    );
    assert!(e("load-driver\n").contains("write `load-driver NAME`"));
    assert!(e("load-driver a b\n").contains("write `load-driver NAME`"));
    assert!(e("load-driver ntosebpfext\nload-driver ntosebpfext\n").contains("given twice"));
    let late = e("create a image=x\nload-driver ntosebpfext\n");
    assert!(
        late.contains("line 2") && late.contains("before the first step"),
        "{late}"
    );
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let cases = [
        ("create a\n", 1, "image= is required"),
        ("\n# c\nfork a image=x\n", 3, "unknown step `fork`"),
        ("create a image=x\nexit b\n", 2, "no process named \"b\""),
        ("create a image=x\nexit a\nexit a\n", 3, "already exited"),
        ("create a image=x parent=zz\n", 1, "parent=zz"),
        (
            "create a image=x user=bob\n",
            1,
            "user=bob: no such account",
        ),
        ("create a image=x user=S-1-x\n", 1, "not a valid SID"),
        ("create a image=x color=red\n", 1, "unknown field color="),
        ("create a image=x cmd=\"open\n", 1, "unterminated quote"),
        ("create a image=x\nexit a code=0xZZ\n", 2, "code=0xZZ"),
        ("create a image=x at=-3\n", 1, "at=-3"),
        ("create image=x\n", 1, "a name must follow"),
        ("create a image=x image=y\n", 1, "image= given twice"),
        ("create a image=x\ncreate a image=y\n", 2, "is running"),
        (
            "account a sid=S-1-5-18 logon=zz\n",
            1,
            "logon=zz: not a logon",
        ),
    ];
    let long_cmd = format!("create a image=x cmd={}\n", "y".repeat(32768));
    let long_image = format!("create a image={}\n", "y".repeat(32768));
    let long = [
        (long_cmd.as_str(), 1, "cmd= is 32768 UTF-16 units long"),
        (long_image.as_str(), 1, "image= is 32768 UTF-16 units long"),
    ];
    for (text, line, needle) in cases.into_iter().chain(long) {
        let e = parse(text).expect_err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
        assert!(e.to_string().starts_with(&format!("line {line}: ")));
    }
}

#[test]
fn runner_raises_events_in_the_kernel() {
    let _sim = crate::Sim::new();
    let s = parse(
        "create p image=C:\\p.exe\n\
         create c image=C:\\c.exe parent=p cmd=\"c -x\"\n\
         exit c code=7\n\
         exit p\n",
    )
    .unwrap();
    let mut runner = Runner::new(&s);
    let mut outcomes: Vec<_> = s.steps[..2].iter().map(|st| runner.step(st)).collect();
    let Outcome::Created { pid: p, .. } = outcomes[0] else {
        panic!()
    };
    let Outcome::Created {
        pid: c,
        parent_pid,
        ref spec,
        status,
        ..
    } = outcomes[1]
    else {
        panic!()
    };
    assert_eq!((parent_pid, status), (p, 0));
    let creator = spec
        .creating_thread
        .expect("created by the parent's thread");
    assert_eq!(creator.0, p);
    assert_eq!(
        ps::thread_process(creator.1),
        Some(p),
        "the parent's initial thread"
    );
    let child = ps::process(c).expect("the child is running");
    assert_eq!(child.command_line.as_deref(), Some("c -x"));
    assert_eq!(child.creation_time, SCENARIO_EPOCH + 2 * TICKS_PER_SECOND);
    outcomes.extend(s.steps[2..].iter().map(|st| runner.step(st)));
    assert_eq!(
        outcomes[2],
        Outcome::Exited {
            name: "c".into(),
            pid: c,
            code: 7,
            time: SCENARIO_EPOCH + 3 * TICKS_PER_SECOND
        }
    );
    assert!(ps::process(p).is_none() && ps::process(c).is_none());
}

#[test]
fn exact_ids_creators_and_logon_ids_parse() {
    let s = parse(
        "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1a2b3c\n\
         create broker image=b.exe pid=0x1000 tid=4100 user=alice\n\
         create app image=a.exe parent=4 creator=broker\n\
         create other image=o.exe parent=broker creator=4:0x2000 user=tester\n",
    )
    .unwrap();
    let Step::Create(b) = &s.steps[0] else {
        panic!()
    };
    assert_eq!(
        (b.pid, b.tid, b.logon_id),
        (Some(0x1000), Some(4100), Some(0x1a2b3c))
    );
    let Step::Create(a) = &s.steps[1] else {
        panic!()
    };
    assert_eq!(a.creator, Some(Creator::Named("broker".into())));
    assert_eq!(a.parent, Parent::Pid(4));
    let Step::Create(o) = &s.steps[2] else {
        panic!()
    };
    assert_eq!(o.creator, Some(Creator::Ids(4, 0x2000)));
    assert_eq!(o.logon_id, None, "tester has no logon= line");
    assert_eq!(
        (s.steps[2].keyword(), s.steps[2].name(), s.steps[2].line()),
        ("create", "other", 4)
    );

    let cases = [
        ("create a image=x pid=6\n", "pid=6: not an id"),
        ("create a image=x tid=0\n", "tid=0: not an id"),
        ("create a image=x pid=0x100000000\n", "not an id"),
        ("create a image=x pid=8 tid=8\n", "must differ"),
        (
            "create a image=x creator=zz\n",
            "creator=zz: no running process",
        ),
        ("create a image=x creator=4:7\n", "TID is not a thread id"),
        (
            "account a sid=S-1-5-18 logon=0x1g\n",
            "logon=0x1g: not a logon session id",
        ),
    ];
    for (text, needle) in cases {
        let e = parse(text).expect_err(text);
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn runner_gives_exact_ids_distinct_creators_and_logon_ids() {
    let _sim = crate::Sim::new();
    let s = parse(
        "account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1a2b3c\n\
         create broker image=b.exe pid=0x1000 tid=0x1004 user=alice\n\
         create app image=a.exe parent=4 creator=broker pid=0x2000\n\
         create dup image=d.exe pid=0x1000\n",
    )
    .unwrap();
    let mut runner = Runner::new(&s);
    let broker = runner.try_step(&s.steps[0]).unwrap();
    let Outcome::Created {
        pid, tid, logon_id, ..
    } = broker
    else {
        panic!()
    };
    assert_eq!((pid, tid, logon_id), (0x1000, Some(0x1004), 0x1a2b3c));
    assert_eq!(ps::thread_process(0x1004), Some(0x1000));
    assert_eq!(ps::process(0x1000).unwrap().logon_id, 0x1a2b3c);
    let app = runner.try_step(&s.steps[1]).unwrap();
    let Outcome::Created {
        pid,
        parent_pid,
        ref spec,
        logon_id,
        ..
    } = app
    else {
        panic!()
    };
    assert_eq!((pid, parent_pid), (0x2000, 4));
    assert_eq!(
        spec.creating_thread,
        Some((0x1000, 0x1004)),
        "created by the broker"
    );
    assert_eq!(logon_id, ps::SYSTEM_LUID);
    let e = runner.try_step(&s.steps[2]).expect_err("pid in use");
    assert_eq!(e.line, 4);
    assert!(e.message.contains("pid=4096: a live process"), "{e}");
}

#[test]
fn test_run_lines_build_the_process_test_run_input() {
    let s = parse(
        "account alice domain=CORP sid=S-1-5-21-10-20-30-1002\n\
         test-run mon pid=0x10 parent=4 creator=8:12 user=alice cmd=\"a b\" image=C:\\a.exe \
         account=x domain=D lookup_done=1 data_out=64 at=2\n\
         test-run mon operation=delete code=0x103 sid=S-1-5-18\n",
    )
    .unwrap();
    let Step::TestRun(t) = &s.steps[0] else {
        panic!("{:?}", s.steps[0])
    };
    assert_eq!(
        (t.program.as_str(), t.line, t.data_out),
        ("mon", 2, Some(64))
    );
    assert_eq!(
        (s.steps[0].keyword(), s.steps[0].name()),
        ("test-run", "mon")
    );
    assert!(t.netevent.is_none(), "process fields: no netevent input");
    let input = t.process.as_deref().expect("a process input");
    let md = &input.md;
    assert_eq!(
        (
            md.process_id,
            md.parent_process_id,
            md.creating_process_id,
            md.creating_thread_id,
            md.operation
        ),
        (0x10, 4, 8, 12, 0)
    );
    assert_eq!(
        md.creation_time,
        (SCENARIO_EPOCH + 2 * TICKS_PER_SECOND) as u64
    );
    assert_eq!(md.exit_time, 0);
    let alice = ps::parse_sid("S-1-5-21-10-20-30-1002").unwrap();
    assert_eq!(&md.token_sid[..alice.len()], alice.as_slice());
    assert_eq!(md.token_sid_size as usize, alice.len());
    assert_eq!(input.command_line, utf16("a b"));
    assert_eq!(input.image_path, utf16("C:\\a.exe"), "passed as written");
    assert_eq!(input.account_name, utf16("x"));
    assert_eq!(input.account_domain, utf16("D"));
    assert_eq!(input.account_lookup_done, 1);
    let Step::TestRun(d) = &s.steps[1] else {
        panic!()
    };
    let d_in = d.process.as_deref().expect("a process input");
    assert_eq!(
        (d_in.md.operation, d_in.md.process_exit_code, d.data_out),
        (1, 0x103, None)
    );
    assert_eq!(
        d_in.md.exit_time,
        (SCENARIO_EPOCH + 3 * TICKS_PER_SECOND) as u64
    );
    assert_eq!(d_in.md.creation_time, 0);
    assert_eq!(d_in.md.token_sid_size, 12);

    for (text, needle) in [
        (
            "test-run m operation=start\n",
            "operation=start: write create or delete",
        ),
        ("test-run m pid=x\n", "pid=x: not a 64-bit number"),
        ("test-run m creator=8\n", "creator=8: write PID:TID"),
        (
            "test-run m sid=S-1-5-18 user=SYSTEM\n",
            "sid= or user=, not both",
        ),
        ("test-run m sid=S-9\n", "sid=S-9: not a valid SID"),
        ("test-run m lookup_done=2\n", "lookup_done=2: write 0 or 1"),
        ("test-run m data_out=-1\n", "data_out=-1: not a byte count"),
        ("test-run m tid=4\n", "unknown field tid="),
        ("test-run pid=4\n", "a name must follow"),
    ] {
        let e = parse(text).expect_err(text);
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
    let long = format!("test-run m cmd={}\n", "y".repeat(32768));
    let e = parse(&long).expect_err("too long");
    assert!(
        e.to_string().contains("cmd= is 65536 bytes in UTF-16"),
        "{e}"
    );
}

#[test]
fn test_run_lines_build_the_netevent_test_run_input() {
    let s = parse(
        "test-run mon type=flow header=aabb data=0102 data_out=8\n\
         test-run mon type=99\n\
         test-run mon type=0x64 data=ff\n\
         test-run mon data_out=4 at=9\n",
    )
    .unwrap();
    let inputs: Vec<&TestRun> = s
        .steps
        .iter()
        .map(|st| match st {
            Step::TestRun(t) => t,
            other => panic!("{other:?}"),
        })
        .collect();
    let t = inputs[0];
    assert!(t.process.is_none(), "netevent fields: no process input");
    assert_eq!(t.data_out, Some(8));
    let n = t.netevent.as_ref().expect("a netevent input");
    assert_eq!(
        (n.event_type, n.header.as_slice(), n.data.as_slice()),
        (101, &[0xaa, 0xbb][..], &[1, 2][..])
    );
    assert_eq!(inputs[1].netevent.as_ref().unwrap().event_type, 99);
    let hex = inputs[2].netevent.as_ref().unwrap();
    assert_eq!((hex.event_type, hex.data.as_slice()), (100, &[0xff][..]));
    // Only common fields: both inputs, the netevent one a bare drop event.
    let both = inputs[3];
    let n = both.netevent.as_ref().expect("a netevent input");
    assert_eq!(
        (n.event_type, n.header.len(), n.data.len()),
        (100, 0, 0),
        "type defaults to drop"
    );
    assert!(both.process.is_some());

    // The program type picks the input.
    let process = crate::hook::process::PROGRAM_TYPE;
    let net = crate::hook::netevent::PROGRAM_TYPE;
    assert_eq!(both.input_for(net), Ok(TestRunKind::Netevent(n.clone())));
    assert!(matches!(
        both.input_for(process),
        Ok(TestRunKind::Process(_))
    ));
    let e = t.input_for(process).unwrap_err();
    assert!(
        e.contains("line 1: test-run mon: a process program; the line has netevent fields"),
        "{e}"
    );
    let Step::TestRun(p) = &parse("test-run mon pid=4\n").unwrap().steps[0] else {
        panic!()
    };
    let e = p.input_for(net).unwrap_err();
    assert!(
        e.contains("a netevent program; the line has process fields"),
        "{e}"
    );
    let other = crate::hook::thread::PROGRAM_TYPE;
    let e = both.input_for(other).unwrap_err();
    assert!(e.contains("has no test-run input format"), "{e}");

    for (text, needle) in [
        ("test-run m type=x\n", "type=x: not a 64-bit number"),
        (
            "test-run m type=256\n",
            "type=256: write drop, flow or a number below 256",
        ),
        ("test-run m data=abc\n", "test-run: data=abc: not hex bytes"),
        (
            "test-run m header=zz\n",
            "test-run: header=zz: not hex bytes",
        ),
        (
            "test-run m pid=4 type=drop\n",
            "pid= is a field of process programs, type= of netevent programs",
        ),
        ("test-run m raw=00\n", "unknown field raw="),
    ] {
        let e = parse(text).expect_err(text);
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
    let long = format!("test-run m header={}\n", "00".repeat(0x32));
    let e = parse(&long).expect_err("header too long");
    assert!(
        e.to_string().contains(
            "test-run: header=: the PktMon header holds 49 bytes after the event id; 50 given"
        ),
        "{e}"
    );
}

#[test]
fn the_runner_alone_cannot_run_a_test_run() {
    let _sim = crate::Sim::new();
    let s = parse("test-run mon pid=4\n").unwrap();
    let e = Runner::new(&s)
        .try_step(&s.steps[0])
        .expect_err("needs a session");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("needs the attached programs"), "{e}");
}

#[test]
fn netevent_lines_parse_and_need_a_registered_provider() {
    let s = parse(
        "netevent-provider register\n\
         netevent type=drop data=0a0b irql=dispatch\n\
         netevent-provider register id=2\n\
         netevent type=flow data=01 header=ff provider=2 at=9\n\
         netevent type=7 provider=1 irql=passive\n\
         netevent raw=6400 provider=1\n\
         netevent-provider deregister id=2\n",
    )
    .unwrap();
    assert_eq!(s.steps.len(), 7);
    let Step::Netevent(n) = &s.steps[1] else {
        panic!("{:?}", s.steps[1])
    };
    let mut bytes = vec![100, 0, 0, 0];
    bytes.resize(0x35, 0);
    bytes.extend([0x0a, 0x0b]);
    assert_eq!(n.event.bytes(), &bytes[..]);
    assert_eq!(n.provider, None);
    assert_eq!(n.irql, crate::kernel::netevent::DeliveryIrql::Dispatch);
    assert_eq!(
        (s.steps[1].keyword(), s.steps[1].name()),
        ("netevent", "drop")
    );
    let Step::Netevent(n) = &s.steps[3] else {
        panic!()
    };
    assert_eq!(n.provider, Some(2));
    assert_eq!(&n.event.bytes()[..6], &[101, 0, 0, 0, 0xff, 0]);
    assert_eq!(n.irql, crate::kernel::netevent::DeliveryIrql::Alternate);
    let Step::Netevent(n) = &s.steps[5] else {
        panic!()
    };
    assert_eq!(n.event.bytes(), &[0x64, 0]);
    assert_eq!(
        (s.steps[6].keyword(), s.steps[6].name()),
        ("netevent-provider", "deregister")
    );

    for (text, needle) in [
        (
            "netevent type=drop",
            "no netevent provider is registered at this point",
        ),
        (
            "netevent-provider register\nnetevent-provider deregister\nnetevent type=flow",
            "no netevent provider is registered at this point",
        ),
        (
            "netevent-provider register\nnetevent type=drop provider=2",
            "provider 2 is not registered",
        ),
        (
            "netevent-provider register\nnetevent-provider register id=3\nnetevent type=drop",
            "several providers are registered (1, 3)",
        ),
        (
            "netevent-provider register\nnetevent type=bogus",
            "type=bogus",
        ),
        (
            "netevent-provider register\nnetevent type=drop data=abc",
            "data=abc",
        ),
        (
            "netevent-provider register\nnetevent data=ab",
            "type=drop|flow|NUMBER",
        ),
        (
            "netevent-provider register\nnetevent type=drop irql=high",
            "irql=high",
        ),
        (
            "netevent-provider register\nnetevent raw=00 type=drop",
            "not both",
        ),
        (
            "netevent-provider register\nnetevent-provider register",
            "already registered",
        ),
        (
            "netevent-provider deregister id=4",
            "provider 4 is not registered",
        ),
        ("netevent-provider start", "write register or deregister"),
        ("netevent-provider register id=0", "id=0"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn a_runner_registers_providers_and_delivers_netevents() {
    use crate::hook::netevent::{ClientConfig, NeteventClient};
    use crate::kernel::netevent;
    let sim = crate::Sim::new();
    let client = NeteventClient::register(ClientConfig::new(netevent::SIM_PROVIDER_MODULE_ID))
        .expect("the client registers");
    let s = parse(
        "netevent-provider register\n\
         netevent type=drop data=0102 irql=dispatch\n\
         netevent-provider deregister\n",
    )
    .unwrap();
    let mut runner = Runner::new(&s);
    let outcomes: Vec<Outcome> = s
        .steps
        .iter()
        .map(|st| runner.try_step(st).unwrap())
        .collect();
    let Outcome::NeteventProvider {
        id: 1,
        registered: true,
        clients,
    } = &outcomes[0]
    else {
        panic!("{:?}", outcomes[0])
    };
    assert_eq!(clients, &[netevent::SIM_PROVIDER_MODULE_ID]);
    let Outcome::Netevent(d) = &outcomes[1] else {
        panic!("{:?}", outcomes[1])
    };
    assert_eq!((d.provider, d.irql, d.delivered()), (1, 2, 1));
    let got = client.take_events();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].bytes[0x35..], &[1, 2]);
    assert!(matches!(
        outcomes[2],
        Outcome::NeteventProvider {
            registered: false,
            ..
        }
    ));
    assert_eq!(client.detaches(), 1);
    drop(client);
    sim.finish().unwrap();
}
