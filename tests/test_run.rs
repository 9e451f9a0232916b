//! `bpf_prog_test_run` for process programs, in ntosebpfext 0.7.0's format
//! (`process_test_run_context_t` in `ctx_in`/`ctx_out`, the four strings
//! packed in `data_in`/`data_out`), and the account lookup without a
//! length cap (issue 8 §2 and §3).
//!
//! The first two tests port every check of upstream's driver tests
//! `process_bpf_prog_run_test` and `process_resolve_account`
//! (`tests/ntosebpfext/ntosebpfext_driver_test/ntos_ebpfext_driver_test.cpp`)
//! with their inputs, against the real driver in ntsim and
//! `tests/bpf/test_run.c`'s `ProcessMonitor` (which keeps what upstream's
//! sample monitor keeps, under the same map names). The rest pin the
//! boundaries, the account rules and the failure paths.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::Env;

use ntsim::build::{driver_image, workspace_root};
use ntsim::ebpf::core::{CoreError, LoadedProgram};
use ntsim::ebpf::{Object, ObjectError, TestRunError, TestRunOutput};
use ntsim::process::{
    self as hook, from_utf16, test_run_input, utf16, TestRunContextOut, TestRunInput,
    TEST_RUN_CONTEXT_SIZE,
};
use ntsim::ps::{self, Account, ProcessSpec};
use ntsim::{fault, sim, Sim};

const TEST_PROCESS_ID: u64 = 1234;
/// `ebpf_result_t` `EBPF_INVALID_ARGUMENT`.
const EBPF_INVALID_ARGUMENT: u32 = 6;
/// S-1-5-18, as upstream's tests write it.
const LOCAL_SYSTEM_SID: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 0x12, 0, 0, 0];

fn setup() -> Env {
    Env::start(&driver_image(), "tests/bpf/test_run.o")
}

impl Env {
    /// The ring buffer's records, each checked to be a whole
    /// `process_info_t` (112 bytes), as upstream's callback does.
    fn events(&self) -> Vec<Vec<u8>> {
        let records = self.object.map("process_ringbuf").unwrap().drain_ring();
        for r in &records {
            assert_eq!(r.len(), 112, "sizeof(process_info_t)");
        }
        records
    }

    /// The UTF-16 text stored under the test process id in `map`, up to its
    /// terminator (what `wcscmp` compares), or `None` without an entry.
    fn text(&self, map: &str) -> Option<String> {
        let value = self
            .object
            .map(map)
            .unwrap()
            .lookup(&(TEST_PROCESS_ID as u32).to_le_bytes())?;
        let end = value
            .chunks(2)
            .position(|c| c == [0, 0])
            .unwrap_or(value.len() / 2);
        Some(from_utf16(&value[..end * 2]))
    }
}

/// Runs `program` once: data_in, ctx_in, data_out and ctx_out capacities.
fn run(
    program: &LoadedProgram,
    data: &[u8],
    ctx: &[u8],
    data_out: usize,
    ctx_out: usize,
) -> Result<TestRunOutput, CoreError> {
    program.test_run(data, ctx, data_out, ctx_out)
}

fn refused(result: Result<TestRunOutput, CoreError>, what: &str) {
    match result {
        Err(CoreError::TestRun(TestRunError::ContextCreate(EBPF_INVALID_ARGUMENT))) => {}
        other => panic!("{what}: expected context_create to refuse, got {other:?}"),
    }
}

/// `process_bpf_prog_run_test`'s input.
fn upstream_input() -> TestRunInput {
    let mut input = TestRunInput {
        command_line: utf16("notepad.exe test.txt"),
        image_path: utf16("C:\\Windows\\System32\\notepad.exe"),
        account_name: utf16("SYSTEM"),
        account_domain: utf16("NT AUTHORITY"),
        ..Default::default()
    };
    let md = &mut input.md;
    md.process_id = TEST_PROCESS_ID;
    md.parent_process_id = 4567;
    md.creating_process_id = 8910;
    md.creating_thread_id = 1112;
    md.operation = 0;
    md.process_exit_code = 0;
    md.creation_time = 123456789;
    md.exit_time = 0;
    md.set_sid(&LOCAL_SYSTEM_SID);
    input
}

#[test]
fn upstream_process_bpf_prog_run_test() {
    let env = setup();
    let monitor = env.load("ProcessMonitor");
    let input = upstream_input();
    let (ctx_in, data_in) = test_run_input(&input);
    assert_eq!(
        ctx_in.len(),
        TEST_RUN_CONTEXT_SIZE,
        "sizeof(process_ctx_in)"
    );
    let total = data_in.len();

    let out = run(&monitor, &data_in, &ctx_in, total, ctx_in.len()).expect("the run succeeds");
    assert_eq!(out.context_out.len(), TEST_RUN_CONTEXT_SIZE, "ctx_size_out");
    assert_eq!(
        out.data_out.len(),
        data_in.len(),
        "data_size_out == data_size_in"
    );
    let ctx_out = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(ctx_out.md.process_id, input.md.process_id);
    assert_eq!(ctx_out.md.parent_process_id, input.md.parent_process_id);
    assert_eq!(ctx_out.md.operation, input.md.operation);
    assert_eq!(ctx_out.md.token_sid_size, input.md.token_sid_size);
    assert_eq!(
        ctx_out.md.token_sid[..12],
        input.md.token_sid[..12],
        "token_sid"
    );

    let events = env.events();
    assert_eq!(events.len(), 1, "exactly one event in the ring buffer");
    assert_eq!(
        u32::from_le_bytes(events[0][0..4].try_into().unwrap()) as u64,
        TEST_PROCESS_ID
    );

    assert_eq!(
        env.text("process_map").as_deref(),
        Some("C:\\Windows\\System32\\notepad.exe")
    );
    assert_eq!(
        env.text("command_map").as_deref(),
        Some("notepad.exe test.txt")
    );
    assert_eq!(env.text("account_name_map").as_deref(), Some("SYSTEM"));
    assert_eq!(
        env.text("account_domain_map").as_deref(),
        Some("NT AUTHORITY")
    );

    // The negative cases.
    refused(
        run(
            &monitor,
            &data_in,
            &ctx_in[..TEST_RUN_CONTEXT_SIZE - 1],
            total,
            296,
        ),
        "a context one byte smaller than process_notify_context_t",
    );
    refused(run(&monitor, &data_in, &[], total, 296), "a NULL context");
    refused(run(&monitor, &[], &ctx_in, total, 296), "a NULL data_in");
    refused(
        run(&monitor, &data_in[..total - 1], &ctx_in, total, 296),
        "data_size_in one byte short",
    );
    assert!(
        env.events().is_empty(),
        "no refused run reached the program"
    );
    drop(monitor);
    env.finish();
}

#[test]
fn upstream_process_resolve_account() {
    let env = setup();
    let monitor = env.load("ProcessMonitor");
    let command_line = utf16("notepad.exe test.txt");
    let image_path = utf16("C:\\Windows\\System32\\notepad.exe");

    // Scenario 1: a valid SID, account buffers of 2 bytes ("X"): the first
    // lookup reports them too small, pool buffers are taken, the retry
    // resolves.
    let mut input = TestRunInput {
        command_line: command_line.clone(),
        image_path: image_path.clone(),
        account_name: utf16("X"),
        account_domain: utf16("X"),
        ..Default::default()
    };
    input.md.process_id = TEST_PROCESS_ID;
    input.md.set_sid(&LOCAL_SYSTEM_SID);
    let (ctx_in, data_in) = test_run_input(&input);
    let lookups = ps::account_lookups();
    let out = run(&monitor, &data_in, &ctx_in, 1024, ctx_in.len()).expect("scenario 1 runs");
    assert_eq!(env.events().len(), 1, "one event");
    let name = env.text("account_name_map").expect("an account name entry");
    assert!(!name.is_empty(), "the account name's first unit is not 0");
    let domain = env
        .text("account_domain_map")
        .expect("an account domain entry");
    assert!(
        !domain.is_empty(),
        "the account domain's first unit is not 0"
    );
    // Beyond upstream's checks: what was resolved, and how.
    assert_eq!((name.as_str(), domain.as_str()), ("SYSTEM", "NT AUTHORITY"));
    assert_eq!(
        ps::account_lookups() - lookups,
        2,
        "one lookup into the given buffers, one retry into pool buffers"
    );
    let ctx_out = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(
        (ctx_out.strings[2].length, ctx_out.strings[2].maximum_length),
        (12, 12),
        "the name's buffer has the size the lookup reported"
    );
    assert_eq!(
        (ctx_out.strings[3].length, ctx_out.strings[3].maximum_length),
        (24, 24)
    );
    assert_eq!(ctx_out.account_lookup_done, 1);
    assert_eq!(
        out.data_out,
        [
            command_line.clone(),
            image_path.clone(),
            utf16("SYSTEM"),
            utf16("NT AUTHORITY")
        ]
        .concat(),
        "data_out carries the resolved strings"
    );
    let key = (TEST_PROCESS_ID as u32).to_le_bytes();
    env.object
        .map("account_name_map")
        .unwrap()
        .delete(&key)
        .unwrap();
    env.object
        .map("account_domain_map")
        .unwrap()
        .delete(&key)
        .unwrap();

    // Scenario 2: no SID: both account helpers fail, nothing is stored.
    let mut input = TestRunInput {
        command_line,
        image_path,
        ..Default::default()
    };
    input.md.process_id = TEST_PROCESS_ID;
    let (ctx_in, data_in) = test_run_input(&input);
    let out =
        run(&monitor, &data_in, &ctx_in, data_in.len(), ctx_in.len()).expect("scenario 2 runs");
    assert_eq!(env.events().len(), 1, "one event");
    let ctx_out = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(ctx_out.md.token_sid_size, 0);
    assert_eq!(env.text("account_name_map"), None, "no account name stored");
    assert_eq!(
        env.text("account_domain_map"),
        None,
        "no account domain stored"
    );
    drop(monitor);
    env.finish();
}

#[test]
fn context_and_output_sizes_at_their_boundaries() {
    let env = setup();
    let monitor = env.load("ProcessMonitor");
    let (ctx_in, data_in) = test_run_input(&upstream_input());
    let total = data_in.len();

    // ctx_in: exactly the minimum runs, one byte short is refused, a longer
    // one runs (the bytes past the context are ignored).
    run(&monitor, &data_in, &ctx_in, total, 296).expect("ctx_in of exactly 296 bytes");
    refused(
        run(&monitor, &data_in, &ctx_in[..295], total, 296),
        "ctx_in of 295 bytes",
    );
    let mut longer = ctx_in.clone();
    longer.resize(400, 0xEE);
    run(&monitor, &data_in, &longer, total, 296).expect("a longer ctx_in");

    // data_in is required even when every string is empty (the core
    // passes an empty one as NULL).
    let empty = TestRunInput {
        // An empty string has no buffer: 0.7.0 reports MaximumLength 0.
        maximum_lengths: [Some(50); 4],
        ..Default::default()
    };
    refused(
        run(&monitor, &[], &empty.context_in(), 0, 296),
        "NULL data_in with four empty strings",
    );
    let out = run(&monitor, &[0], &empty.context_in(), 0, 296).expect("one ignored byte");
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(c.strings, [Default::default(); 4], "four empty strings");

    // data_in: exactly the four strings; more is ignored; less refused.
    let mut more = data_in.clone();
    more.extend_from_slice(&[0xEE; 6]);
    let out = run(&monitor, &more, &ctx_in, 1024, 296).expect("data_in longer than the strings");
    assert_eq!(out.data_out, data_in, "only the strings come back");

    // data_out: exactly enough gets everything, one byte short nothing.
    let out = run(&monitor, &data_in, &ctx_in, total, 296).unwrap();
    assert_eq!(out.data_out, data_in);
    let out = run(&monitor, &data_in, &ctx_in, total - 1, 296).unwrap();
    assert!(
        out.data_out.is_empty(),
        "a data_out one byte short gets 0 bytes"
    );
    assert_eq!(out.context_out.len(), 296, "ctx_out is written regardless");

    // ctx_out: exactly 296 bytes gets the context, one byte short nothing.
    let out = run(&monitor, &data_in, &ctx_in, total, 296).unwrap();
    assert_eq!(out.context_out.len(), 296);
    let out = run(&monitor, &data_in, &ctx_in, total, 295).unwrap();
    assert!(
        out.context_out.is_empty(),
        "a ctx_out one byte short gets 0 bytes"
    );
    assert_eq!(out.data_out, data_in, "data_out is written regardless");
    let out = run(&monitor, &data_in, &ctx_in, 0, 0).unwrap();
    assert!(out.data_out.is_empty() && out.context_out.is_empty());
    env.events();
    drop(monitor);
    env.finish();
}

#[test]
fn context_out_has_the_input_layout_without_addresses() {
    let env = setup();
    let monitor = env.load("ProcessMonitor");
    let mut input = upstream_input();
    input.maximum_lengths = [Some(100), Some(300), None, None];
    input.md.creating_thread_id = 0x1122_3344_5566_7788;
    input.md.exit_time = 42;
    input.md.process_exit_code = 0xC000_0005;
    input.account_lookup_done = 7;
    let (mut ctx_in, data_in) = test_run_input(&input);
    // Garbage where 0.7.0's context has kernel pointers: the header, the
    // packet, process, create_info and the strings' buffers.
    for at in (0..80).chain(208..224) {
        ctx_in[at] = 0xA5;
    }
    for i in 0..4 {
        ctx_in[224 + 16 * i + 8..224 + 16 * i + 16].fill(0x5A);
    }
    let out = run(&monitor, &data_in, &ctx_in, 1024, 296).unwrap();
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(c.header, [0; 8], "the core's header is not handed out");
    assert_eq!(c.packet, [0, 0], "command_start/command_end zeroed");
    assert_eq!((c.process, c.create_info), (0, 0));
    assert_eq!(c.md, input.md, "every process_md_t field comes back");
    let expected = [(40, 100), (62, 300), (12, 12), (24, 24)];
    for (i, s) in c.strings.iter().enumerate() {
        assert_eq!(s.buffer, 0, "string {i}: no buffer address");
        assert_eq!((s.length, s.maximum_length), expected[i], "string {i}");
    }
    assert_eq!(c.account_lookup_done, 7, "the given BOOLEAN comes back");
    assert_eq!(out.data_out, data_in);
    env.events();
    drop(monitor);
    env.finish();
}

#[test]
fn bad_descriptors_and_events_are_refused() {
    let env = setup();
    let monitor = env.load("ProcessMonitor");

    let mut input = upstream_input();
    input.maximum_lengths[1] = Some(input.image_path.len() as u16 - 2);
    let (ctx, data) = test_run_input(&input);
    refused(
        run(&monitor, &data, &ctx, 1024, 296),
        "Length above MaximumLength",
    );

    let mut input = upstream_input();
    input.command_line.push(b'x');
    let (ctx, data) = test_run_input(&input);
    refused(run(&monitor, &data, &ctx, 1024, 296), "an odd Length");

    for (operation, ok) in [(0u8, true), (1, true), (2, false), (0xFF, false)] {
        let mut input = upstream_input();
        input.md.operation = operation;
        let (ctx, data) = test_run_input(&input);
        let result = run(&monitor, &data, &ctx, 1024, 296);
        if ok {
            let out = result.unwrap_or_else(|e| panic!("operation {operation}: {e}"));
            let c = TestRunContextOut::parse(&out.context_out).unwrap();
            assert_eq!(c.md.operation, operation);
        } else {
            refused(result, &format!("operation {operation}"));
        }
    }

    let mut input = upstream_input();
    input.md.token_sid_size = 69;
    let (ctx, data) = test_run_input(&input);
    refused(run(&monitor, &data, &ctx, 1024, 296), "token_sid_size 69");
    assert_eq!(env.events().len(), 2, "only CREATE and DELETE ran");
    drop(monitor);
    env.finish();
}

#[test]
fn a_68_byte_sid_resolves() {
    let env = setup();
    let echo = env.load("account_echo");
    let text = format!("S-1-5-21{}", "-4294967295".repeat(14));
    let sid = ps::parse_sid(&text).unwrap();
    assert_eq!(sid.len(), 68, "15 sub-authorities");
    let mut accounts = ps::default_accounts();
    accounts.push(Account {
        sid: sid.clone(),
        name: "widest".into(),
        domain: "SIDS".into(),
        use_: 1,
    });
    ps::set_accounts(accounts);
    let mut input = upstream_input();
    input.account_name.clear();
    input.account_domain.clear();
    input.md.set_sid(&sid);
    let (ctx, data) = test_run_input(&input);
    let out = run(&echo, &data, &ctx, 1024, 296).expect("a 68-byte SID is accepted");
    let (name, domain) = echoed(&env);
    assert_eq!(name, Ok("widest".into()));
    assert_eq!(domain, Ok("SIDS".into()));
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(c.md.token_sid_size, 68);
    assert_eq!(c.md.token_sid.to_vec(), sid);
    drop(echo);
    env.finish();
}

/// `account_echo`'s one record: each helper's string, or its error.
fn echoed(env: &Env) -> (Result<String, i32>, Result<String, i32>) {
    let records = env.object.map("accounts").unwrap().drain_ring();
    assert_eq!(records.len(), 1, "one account record");
    let r = &records[0];
    assert_eq!(r.len(), 8 + 2 * 2048);
    let result = |at: usize, text: usize| {
        let n = i32::from_le_bytes(r[at..at + 4].try_into().unwrap());
        if n < 0 {
            Err(n)
        } else {
            Ok(from_utf16(&r[text..text + n as usize]))
        }
    };
    (result(0, 8), result(4, 8 + 2048))
}

#[test]
fn a_program_that_calls_no_account_helper_leaves_the_strings_as_given() {
    let env = setup();
    let other = Object::load(
        &std::fs::read(hook::sample_object_path()).unwrap(),
        &ntsim::ebpf::store::section_map(),
    )
    .unwrap();
    let deny_all = LoadedProgram::load(other.program("deny_all").unwrap().clone()).unwrap();
    let mut input = upstream_input();
    input.maximum_lengths[2] = Some(40);
    let (ctx, data) = test_run_input(&input);
    let lookups = ps::account_lookups();
    let out = run(&deny_all, &data, &ctx, 1024, 296).unwrap();
    assert_eq!(out.result, 0xC000_0022, "the program's result");
    assert_eq!(ps::account_lookups(), lookups, "no lookup");
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(c.account_lookup_done, 0);
    assert_eq!((c.strings[2].length, c.strings[2].maximum_length), (12, 40));
    assert_eq!((c.strings[3].length, c.strings[3].maximum_length), (24, 24));
    assert_eq!(out.data_out, data);
    drop((deny_all, other));
    env.finish();
}

#[test]
fn given_account_strings_are_final_only_when_the_lookup_is_marked_done() {
    let env = setup();
    let echo = env.load("account_echo");
    let given = |done: u8, name: &str, domain: &str, sid: bool| {
        let mut input = upstream_input();
        input.account_name = utf16(name);
        input.account_domain = utf16(domain);
        input.account_lookup_done = done;
        if !sid {
            input.md.token_sid_size = 0;
        }
        test_run_input(&input)
    };

    // Marked done: the given strings, no lookup.
    let lookups = ps::account_lookups();
    let (ctx, data) = given(1, "alice", "CORP", true);
    let out = run(&echo, &data, &ctx, 1024, 296).unwrap();
    assert_eq!(echoed(&env), (Ok("alice".into()), Ok("CORP".into())));
    assert_eq!(ps::account_lookups(), lookups, "no lookup");
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(c.account_lookup_done, 1);

    // Marked done with one string empty: neither helper has a string.
    let (ctx, data) = given(1, "alice", "", true);
    let out = run(&echo, &data, &ctx, 1024, 296).unwrap();
    assert_eq!(echoed(&env), (Err(-2), Err(-2)));
    assert_eq!(ps::account_lookups(), lookups, "no lookup");
    assert_eq!(
        out.data_out,
        [
            utf16("notepad.exe test.txt"),
            utf16("C:\\Windows\\System32\\notepad.exe"),
            utf16("alice")
        ]
        .concat()
    );

    // Not marked: the SID is resolved, into the given buffers when they are
    // large enough ("Administrator" has room for "SYSTEM").
    let (ctx, data) = given(0, "Administrator", "NT AUTHORITY", true);
    let out = run(&echo, &data, &ctx, 1024, 296).unwrap();
    assert_eq!(
        echoed(&env),
        (Ok("SYSTEM".into()), Ok("NT AUTHORITY".into()))
    );
    assert_eq!(ps::account_lookups(), lookups + 1, "one lookup, no retry");
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(
        (c.strings[2].length, c.strings[2].maximum_length),
        (12, 26),
        "resolved into the given 26-byte buffer"
    );

    // A short given string with a large MaximumLength is a large buffer.
    let mut input = upstream_input();
    input.account_name = utf16("X");
    input.account_domain = utf16("Y");
    input.maximum_lengths[2] = Some(64);
    input.maximum_lengths[3] = Some(2);
    let (ctx, data) = test_run_input(&input);
    let lookups = ps::account_lookups();
    let out = run(&echo, &data, &ctx, 1024, 296).unwrap();
    assert_eq!(
        echoed(&env),
        (Ok("SYSTEM".into()), Ok("NT AUTHORITY".into()))
    );
    assert_eq!(
        ps::account_lookups(),
        lookups + 2,
        "the domain needed the retry"
    );
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(
        (c.strings[2].length, c.strings[2].maximum_length),
        (12, 64),
        "the name stayed in its 64-byte buffer"
    );
    assert_eq!((c.strings[3].length, c.strings[3].maximum_length), (24, 24));

    // Not marked and no SID: the given strings are dropped.
    let (ctx, data) = given(0, "alice", "CORP", false);
    let out = run(&echo, &data, &ctx, 1024, 296).unwrap();
    assert_eq!(echoed(&env), (Err(-2), Err(-2)));
    let c = TestRunContextOut::parse(&out.context_out).unwrap();
    assert_eq!(
        c.strings[2],
        Default::default(),
        "no name after a failed lookup"
    );
    assert_eq!(c.strings[3], Default::default());
    assert_eq!(c.account_lookup_done, 1);
    assert_eq!(
        out.data_out,
        [
            utf16("notepad.exe test.txt"),
            utf16("C:\\Windows\\System32\\notepad.exe")
        ]
        .concat()
    );

    drop(echo);
    env.finish();
}

fn long_account(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// Accounts of `n`-character names and domains, the test user's SID.
fn set_long_account(name_len: usize, domain_len: usize) -> (String, String) {
    let (name, domain) = (long_account(name_len, 'n'), long_account(domain_len, 'd'));
    ps::set_accounts(vec![Account {
        sid: ps::test_user_sid(),
        name: name.clone(),
        domain: domain.clone(),
        use_: 1,
    }]);
    (name, domain)
}

#[test]
fn long_account_names_and_domains_resolve_in_events_and_test_runs() {
    let env = setup();
    let echo = env.load("account_echo");
    let link = echo.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    for (name_len, domain_len) in [
        (255, 255),
        (256, 256),
        (257, 257),
        (1000, 1000),
        (1000, 5),
        (5, 1000),
    ] {
        let (name, domain) = set_long_account(name_len, domain_len);
        let retry = name_len > 256 || domain_len > 256;
        let case = format!("name {name_len}, domain {domain_len}");

        let lookups = ps::account_lookups();
        let p = ps::create_process(&ProcessSpec {
            image_file_name: "\\??\\C:\\long.exe".into(),
            user_sid: Some(ps::test_user_sid()),
            ..Default::default()
        });
        assert_eq!(p.creation_status, 0);
        assert_eq!(
            echoed(&env),
            (Ok(name.clone()), Ok(domain.clone())),
            "{case}: event"
        );
        assert_eq!(
            ps::account_lookups() - lookups,
            if retry { 2 } else { 1 },
            "{case}: the inline buffers hold 256 units; longer takes one retry"
        );
        assert!(ps::exit_process(p.pid, 0, None));
        let _ = env.object.map("accounts").unwrap().drain_ring();

        let mut input = upstream_input();
        input.account_name.clear();
        input.account_domain.clear();
        input.md.set_sid(&ps::test_user_sid());
        let (ctx, data) = test_run_input(&input);
        let out = run(&echo, &data, &ctx, 8192, 296).unwrap();
        assert_eq!(
            echoed(&env),
            (Ok(name.clone()), Ok(domain.clone())),
            "{case}: test run"
        );
        let c = TestRunContextOut::parse(&out.context_out).unwrap();
        assert_eq!(c.strings[2].length as usize, 2 * name_len, "{case}");
        assert_eq!(c.strings[3].length as usize, 2 * domain_len, "{case}");
    }
    drop(link);
    drop(echo);
    env.finish();
}

/// Raises a CREATE of a process of the test user and returns what
/// `account_echo` saw.
fn long_event(env: &Env) -> (Result<String, i32>, Result<String, i32>) {
    let p = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\long.exe".into(),
        user_sid: Some(ps::test_user_sid()),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0, "the event goes on");
    let seen = echoed(env);
    assert!(ps::exit_process(p.pid, 0, None));
    let _ = env.object.map("accounts").unwrap().drain_ring();
    seen
}

#[test]
fn a_failing_retry_leaves_no_account_and_nothing_behind() {
    // The calls of `api` that one event with a 300-character account makes.
    let calls_of = |api: &str| {
        let env = setup();
        let echo = env.load("account_echo");
        let link = echo.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
        set_long_account(300, 300);
        let before = fault::counts().get(api).copied().unwrap_or(0);
        let seen = long_event(&env);
        assert_eq!(seen.0.map(|n| n.len()), Ok(300));
        let after = fault::counts().get(api).copied().unwrap_or(0);
        drop((link, echo));
        env.finish();
        before + 1..=after
    };

    // The lookup's retry fails: neither string.
    let lookups = calls_of("SecLookupAccountSid");
    assert_eq!(lookups.clone().count(), 2, "a lookup and its retry");
    // Each allocation of the event fails in turn; the pool buffers'
    // failures leave no account, and nothing leaks either way.
    let allocations = calls_of("ExAllocatePool2");
    let mut missing = 0;
    for (api, call) in std::iter::once(("SecLookupAccountSid", *lookups.end()))
        .chain(allocations.map(|n| ("ExAllocatePool2", n)))
    {
        let env = setup();
        let echo = env.load("account_echo");
        let link = echo.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
        set_long_account(300, 300);
        let first = fault::counts().get(api).copied().unwrap_or(0);
        fault::fail_nth(api, call);
        let seen = long_event(&env);
        assert_eq!(
            fault::fired(),
            vec![(api.to_string(), call)],
            "{api}#{call} failed"
        );
        let call_in_event = call - first;
        match seen {
            (Err(-2), Err(-2)) => missing += 1,
            (Ok(name), Ok(domain)) => {
                assert_eq!((name.len(), domain.len()), (300, 300), "{api}#{call}");
                assert_ne!(
                    api, "SecLookupAccountSid",
                    "the failed retry is not ignored"
                );
            }
            other => panic!("{api}#{call}: one string without the other: {other:?}"),
        }
        eprintln!("{api} call {call_in_event} of the event failed: handled");
        drop((link, echo));
        env.finish();
    }
    assert!(
        missing >= 3,
        "the failed retry and both pool buffers' failures leave no account ({missing})"
    );
}

/// The fault sweep over test runs: every fallible call of a driver load,
/// a test run that resolves a long account through the retry (and one
/// refused run), and the unload is failed in turn; each time the run
/// either succeeds or fails with an error, and nothing leaks or breaks a
/// rule (`Sim::finish`).
#[test]
fn every_fallible_call_of_a_test_run_fails_cleanly() {
    let image = driver_image();
    let bytes = std::fs::read(workspace_root().join("tests/bpf/test_run.o")).unwrap();
    let covered = sim::sweep(|injection| {
        let mut sim = Sim::new();
        if let Some(i) = injection {
            fault::fail_nth(&i.api, i.call);
        }
        let context = format!("{injection:?}");
        set_long_account(300, 5);
        let status = sim.load_driver(&image).unwrap();
        if status != 0 {
            assert!(injection.is_some(), "DriverEntry failed without a fault");
        } else {
            let object = match Object::load(&bytes, &ntsim::ebpf::store::section_map()) {
                Ok(object) => object,
                // A failed store write leaves the section unregistered; the
                // driver loaded and unloads cleanly all the same.
                Err(ObjectError::UnknownSection { .. })
                    if injection.is_some_and(|i| i.api.starts_with("Zw")) =>
                {
                    sim.unload_driver().unwrap();
                    if let Err(findings) = sim.finish() {
                        panic!("{context}: {findings}");
                    }
                    return;
                }
                Err(e) => panic!("{context}: {e}"),
            };
            let program = object.program("account_echo").unwrap().clone();
            match LoadedProgram::load(program) {
                Err(e) => assert!(injection.is_some(), "{context}: load failed: {e}"),
                Ok(echo) => {
                    let mut input = upstream_input();
                    input.account_name = utf16("X");
                    input.account_domain.clear();
                    input.md.set_sid(&ps::test_user_sid());
                    let (ctx, data) = test_run_input(&input);
                    match echo.test_run(&data, &ctx, 4096, 296) {
                        Ok(out) => {
                            let records = object.map("accounts").unwrap().drain_ring();
                            assert_eq!(records.len(), 1, "{context}");
                            let c = TestRunContextOut::parse(&out.context_out).unwrap();
                            let name = i32::from_le_bytes(records[0][0..4].try_into().unwrap());
                            if name >= 0 {
                                assert_eq!(name, 600, "{context}");
                                assert_eq!(c.strings[2].length, 600, "{context}");
                            } else {
                                assert!(injection.is_some(), "{context}: no name without a fault");
                                assert_eq!(c.strings[2].length, 0, "{context}");
                            }
                        }
                        Err(e) => assert!(injection.is_some(), "{context}: {e}"),
                    }
                    refused(echo.test_run(&data, &ctx[..100], 4096, 296), &context);
                    drop(echo);
                }
            }
            drop(object);
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
    for expected in ["SecLookupAccountSid#1", "SecLookupAccountSid#2"] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} not covered: {names:?}"
        );
    }
    let allocations = names
        .iter()
        .filter(|n| n.starts_with("ExAllocatePool2#"))
        .count();
    assert!(
        allocations >= 5,
        "the run's allocations are swept: {names:?}"
    );
}

/// The account lookup's expected first answer for a long account (buffer
/// too small) is not traced as a failure; a real failure of the lookup is,
/// with the API's name.
#[test]
fn only_a_real_failure_of_the_account_lookup_is_traced() {
    // `NtosEbpfExtProvider`; every keyword but the per-event records.
    const PROVIDER: ntsim::types::GUID = ntsim::types::GUID {
        data1: 0xd15cc421,
        data2: 0xe9e4,
        data3: 0x459b,
        data4: [0x87, 0xa6, 0xb4, 0x5b, 0x7d, 0x84, 0xe9, 0xa8],
    };
    const ALL_BUT_HOOK_EVENTS: u64 = !0x1_0000_0000;
    let lookup_failures = || {
        ntsim::log::tl_events_named("ApiFailure")
            .into_iter()
            .filter(|e| e.str("Api") == Some("SecLookupAccountSid"))
            .count()
    };
    let env = setup();
    ntsim::log::etw_enable(&PROVIDER, 5, ALL_BUT_HOOK_EVENTS, 0);
    let echo = env.load("account_echo");
    let link = echo.attach(hook::ATTACH_TYPE, &[], 0).unwrap();
    set_long_account(300, 300);
    let lookups = fault::counts()
        .get("SecLookupAccountSid")
        .copied()
        .unwrap_or(0);
    let seen = long_event(&env);
    assert_eq!(seen.0.map(|n| n.len()), Ok(300));
    assert_eq!(
        fault::counts().get("SecLookupAccountSid").copied(),
        Some(lookups + 2),
        "a too-small answer and the retry"
    );
    assert_eq!(lookup_failures(), 0, "the too-small answer was traced");
    fault::fail_nth("SecLookupAccountSid", lookups + 3);
    let seen = long_event(&env);
    assert_eq!(
        seen,
        (Err(-2), Err(-2)),
        "the failed lookup gives no account"
    );
    assert_eq!(lookup_failures(), 1, "the failed lookup is traced once");
    drop((link, echo));
    env.finish();
}

/// Given account strings marked final are used whole at every size: in the
/// inline buffers (up to 256 units) and in pool buffers beyond.
#[test]
fn given_final_account_strings_of_every_size_come_back_whole() {
    let env = setup();
    let echo = env.load("account_echo");
    let lookups = ps::account_lookups();
    for (name_len, domain_len) in [
        (1, 1),
        (255, 256),
        (256, 257),
        (300, 5),
        (5, 300),
        (1000, 1000),
    ] {
        let (name, domain) = ("n".repeat(name_len), "d".repeat(domain_len));
        let mut input = upstream_input();
        input.account_name = utf16(&name);
        input.account_domain = utf16(&domain);
        input.account_lookup_done = 1;
        let (ctx, data) = test_run_input(&input);
        let out = run(&echo, &data, &ctx, 8192, 296).unwrap();
        assert_eq!(
            echoed(&env),
            (Ok(name), Ok(domain)),
            "name {name_len}, domain {domain_len}"
        );
        let c = TestRunContextOut::parse(&out.context_out).unwrap();
        assert_eq!(c.strings[2].length as usize, 2 * name_len);
        assert_eq!(c.strings[3].length as usize, 2 * domain_len);
    }
    assert_eq!(ps::account_lookups(), lookups, "final strings: no lookup");
    drop(echo);
    env.finish();
}
