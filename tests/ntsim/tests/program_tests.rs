//! The project's sample programs tested the way a program author tests
//! theirs: `ntsim test` on the test files beside them (tests/bpf/*.ntsim),
//! a wrong expectation failing with its place, expected and actual value,
//! and `ntsim run --json` with BTF-decoded records tied to their steps.
#![cfg(unix)]

use ntsim::build::{driver_image, workspace_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ntsim(args: &[&str]) -> Output {
    ntsim::child::output_within(
        Command::new(env!("CARGO_BIN_EXE_ntsim")).args(args),
        ntsim::child::LIMIT,
    )
    .expect("the ntsim binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ntsim-programs-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every `*.ntsim` test file of tests/bpf.
fn sample_test_files() -> Vec<PathBuf> {
    let dir = workspace_root().join("tests/bpf");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ntsim"))
        .collect();
    files.sort();
    files
}

#[test]
fn sample_programs_pass_their_test_files_with_a_junit_report() {
    let files = sample_test_files();
    assert!(files.len() >= 2, "{files:?}");
    let dir = temp_dir("junit");
    let junit = dir.join("report.xml");
    // No --driver: each file's own `driver`/`load-driver` lines choose
    // (the netevent monitor's file loads neteventebpfext), else
    // ntosebpfext.
    let mut args = vec!["test", "--junit", path(&junit)];
    args.extend(files.iter().map(|f| path(f)));
    let out = ntsim(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for f in &files {
        let line = format!("test {} ... ok (", f.display());
        assert!(stdout.contains(&line), "{line:?} in:\n{stdout}");
    }
    assert!(stdout.ends_with(&format!(
        "{} test file(s): {} passed, 0 failed\n",
        files.len(),
        files.len()
    )));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"ntsim\"")
    );
    assert!(xml.contains("failures=\"0\" errors=\"0\">"), "{xml}");
    assert!(
        xml.contains(
            "name=\"line 38: expect record process_events@create:app[0].logon_id = 0x1a2b3c\"/>"
        ),
        "{xml}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// process_records.ntsim with its object path made absolute, `edit`
/// applied, in a temporary folder.
fn edited_test_file(dir: &Path, edit: &Edit) -> PathBuf {
    let bpf = workspace_root().join("tests/bpf");
    let original = std::fs::read_to_string(bpf.join("process_records.ntsim")).unwrap();
    let moved = original.replace(
        "object process_records.o",
        &format!("object {}", bpf.join("process_records.o").display()),
    );
    assert_ne!(moved, original, "the object line is there");
    let file = dir.join("edited.ntsim");
    std::fs::write(&file, edit(&moved)).unwrap();
    file
}

#[test]
fn a_wrong_expectation_fails_with_its_place_the_expected_and_the_actual_value() {
    let dir = temp_dir("wrong");
    let file = edited_test_file(&dir, &|t| {
        t.replace(
            "expect record process_events@create:app[0].creator.pid = 0x1000",
            "expect record process_events@create:app[0].creator.pid = 0x2000",
        )
        .replace(
            "expect verdict create:odd denied STATUS_ACCESS_DENIED",
            "expect verdict create:odd permitted",
        ) + "expect verdict create:odd denied STATUS_UNSUCCESSFUL\n"
    });
    let junit = dir.join("report.xml");
    let out = ntsim(&[
        "test",
        "--driver",
        path(&driver_image()),
        "--junit",
        path(&junit),
        path(&file),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let f = file.display();
    let expected = format!(
        "test {f} ... FAILED\n\
         {f}:18: expect verdict create:odd permitted\n    \
         expected: permitted\n    \
         actual:   denied 0xc0000022 (STATUS_ACCESS_DENIED)\n\
         {f}:35: expect record process_events@create:app[0].creator.pid = 0x2000\n    \
         expected: creator.pid = 8192\n    \
         actual:   4096\n\
         {f}:62: expect verdict create:odd denied STATUS_UNSUCCESSFUL\n    \
         expected: denied 0xc0000001 (STATUS_UNSUCCESSFUL)\n    \
         actual:   denied 0xc0000022 (STATUS_ACCESS_DENIED)\n    \
         3 of 34 expectation(s) failed\n\
         1 test file(s): 0 passed, 1 failed\n"
    );
    assert_eq!(stdout, expected);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"35\" failures=\"3\" errors=\"0\""),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<failure message=\"{f}:35: expected creator.pid = 8192, actual 4096\">"
        )),
        "{xml}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A change to a test file's text.
type Edit = dyn Fn(&str) -> String;

#[test]
fn a_test_file_that_cannot_run_or_parse_fails_with_the_reason() {
    let dir = temp_dir("broken");
    let driver = driver_image();
    let cases: [(&Edit, &str); 5] = [
        (
            &|t: &str| {
                t.replace(
                    "ringbuf process_events struct process_event",
                    "ringbuf process_events struct nosuch",
                )
            },
            "the object's BTF has no type \"struct nosuch\"",
        ),
        (
            &|t: &str| t.replace("attach deny_foreign_creator record", "attach record nosuch"),
            "has no program named \"nosuch\"",
        ),
        (
            &|t: &str| {
                t.replace(
                    "create app image=C:\\Tools\\app.exe parent=broker pid=0x2000",
                    "create app image=C:\\Tools\\app.exe parent=broker pid=0x1000",
                )
            },
            "scenario line 12: create: pid=4096: a live process or thread has that id",
        ),
        (
            &|t: &str| format!("{t}expect records parent_of = 1\n"),
            "parent_of is a hash map: records are counted for ring buffers and perf event arrays",
        ),
        (
            &|t: &str| format!("{t}expect record process_events[0] ~ 1 2\n"),
            ":62: expect record process_events[0] ~ 1 2: unexpected \"2\" at the end",
        ),
    ];
    for (edit, needle) in cases {
        let file = edited_test_file(&dir, edit);
        let out = ntsim(&["test", "--driver", path(&driver), path(&file)]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("... FAILED") && stdout.contains(needle),
            "{needle:?} in:\n{stdout}"
        );
    }
    // Usage errors exit with 2.
    let out = ntsim(&["test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("test: give at least one test FILE"));
    let _ = std::fs::remove_dir_all(dir);
}

const SCENARIO: &str = r#"
account alice domain=CORP sid=S-1-5-21-10-20-30-1002 logon=0x1a2b3c
create broker image=C:\Tools\broker.exe pid=0x1000 tid=0x1004 user=alice
create app image=C:\Tools\app.exe parent=broker cmd="app -x"
create odd image=C:\Tools\odd.exe parent=4 creator=broker
exit app code=0xC0000005
"#;

fn run_records(dir: &Path, extra: &[&str]) -> Output {
    let scenario = dir.join("scenario.txt");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let object = workspace_root().join("tests/bpf/process_records.o");
    let driver = driver_image();
    let mut args = vec![
        "run",
        "--driver",
        path(&driver),
        "--object",
        path(&object),
        "--program",
        "deny_foreign_creator",
        "--program",
        "record",
        "--scenario",
        path(&scenario),
        "--ringbuf",
        "process_events=struct process_event",
    ];
    args.extend_from_slice(extra);
    let out = ntsim(&args);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn json_output_ties_decoded_records_to_their_step_and_ends_with_the_maps() {
    let dir = temp_dir("json");
    let out = run_records(&dir, &["--json"]);
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "start", "step", "record", "verdict", "step", "record", "verdict", "step", "verdict",
            "step", "record", "record", "verdict", "map", "map", "map", "map", "map", "map", "end"
        ]
    );
    let start = &lines[0];
    assert_eq!(start["schema"], 1);
    assert_eq!(
        start["programs"],
        serde_json::json!(["deny_foreign_creator", "record"])
    );
    assert_eq!(start["driver_entry_name"], "STATUS_SUCCESS");

    let broker = &lines[1];
    assert_eq!(
        (
            broker["keyword"].as_str(),
            broker["name"].as_str(),
            broker["line"].as_u64()
        ),
        (Some("create"), Some("broker"), Some(3))
    );
    assert_eq!(broker["event"], "process_create");
    assert_eq!(
        (broker["pid"].as_u64(), broker["tid"].as_u64()),
        (Some(0x1000), Some(0x1004))
    );
    assert_eq!(broker["token_logon_id"], 0x1a2b3c);
    assert_eq!(broker["user_sid"], "S-1-5-21-10-20-30-1002");

    let record = &lines[2];
    assert_eq!(record["step"], 1, "tied to the broker's creation");
    assert_eq!(
        (record["map"].as_str(), record["index"].as_u64()),
        (Some("process_events"), Some(0))
    );
    assert_eq!(record["value_type"], "struct process_event");
    assert_eq!(record["size"], 328);
    let v = &record["value"];
    assert_eq!(v["kind"], "EVENT_CREATE");
    assert_eq!(v["process_id"], 0x1000);
    assert_eq!(v["creator"], serde_json::json!({"pid": 4, "tid": 256}));
    assert_eq!(v["image"], "\\??\\C:\\Tools\\broker.exe");
    assert_eq!(v["tag"], "create");
    assert_eq!(v["sid_bytes"], 28);
    assert_eq!(record["data"].as_str().unwrap().len(), 2 * 328);

    let verdict = &lines[3];
    assert_eq!(
        (verdict["step"].as_u64(), verdict["verdict"].as_str()),
        (Some(1), Some("permitted"))
    );
    assert_eq!(verdict["status_name"], "STATUS_SUCCESS");
    // The account as the program read it through the driver's helper.
    assert_eq!(
        verdict["account"],
        serde_json::json!({"domain": null, "name": "alice"})
    );
    assert_eq!(
        verdict["helpers"][1]["helper"],
        "bpf_process_get_account_name"
    );
    assert_eq!(verdict["helpers"][1]["result"], 10);

    let app_record = &lines[5];
    assert_eq!(
        (
            app_record["step"].as_u64(),
            app_record["value"]["logon_id"].as_u64()
        ),
        (Some(2), Some(0x1a2b3c))
    );
    let odd = &lines[7];
    assert_eq!(odd["creator"]["pid"], 0x1000);
    let odd_verdict = &lines[8];
    assert_eq!(
        (
            odd_verdict["step"].as_u64(),
            odd_verdict["verdict"].as_str(),
            odd_verdict["status"].as_str(),
            odd_verdict["status_name"].as_str()
        ),
        (
            Some(3),
            Some("denied"),
            Some("0xc0000022"),
            Some("STATUS_ACCESS_DENIED")
        )
    );
    assert_eq!(
        odd_verdict["account"],
        Value::Null,
        "no program read the account"
    );
    let exit = &lines[9];
    assert_eq!(
        (exit["event"].as_str(), exit["exit_code"].as_str()),
        (Some("process_exit"), Some("0xc0000005"))
    );
    assert_eq!(lines[10]["value"]["exit_code"], -1073741819, "signed");
    let perf = &lines[11];
    assert_eq!(
        (
            perf["map"].as_str(),
            perf["map_type"].as_str(),
            perf["cpu"].as_u64(),
            perf["step"].as_u64()
        ),
        (Some("exits"), Some("perf_event_array"), Some(0), Some(4))
    );
    assert_eq!(
        perf["value"],
        Value::Null,
        "no type given for exits: hex only"
    );
    assert_eq!(perf["data"], lines[10]["data"], "the same record");
    assert_eq!(
        (lines[12]["verdict"].as_str(), lines[12]["status"].as_str()),
        (Some("none"), None),
        "an exit has no verdict"
    );

    let children = lines
        .iter()
        .find(|l| l["type"] == "map" && l["map"] == "children_by_parent")
        .expect("the map is dumped");
    assert_eq!(
        (
            children["key_type"].as_str(),
            children["value_type"].as_str()
        ),
        (Some("uint64_t"), Some("struct children"))
    );
    let entries = children["entries"].as_array().unwrap();
    let broker_children = entries
        .iter()
        .find(|e| e["key"] == 0x1000)
        .expect("key 0x1000");
    assert_eq!(
        broker_children["value"],
        serde_json::json!({"created": 1, "exited": 1})
    );
    assert_eq!(broker_children["key_data"], "0010000000000000");
    let scratch = lines.iter().find(|l| l["map"] == "scratch").unwrap();
    assert_eq!(scratch["map_type"], "percpu_array");
    assert_eq!(
        scratch["entries"][0]["values"].as_array().map(Vec::len),
        Some(2),
        "one value per CPU"
    );
    let end = lines.last().unwrap();
    assert_eq!(
        (
            end["ok"].as_bool(),
            end["findings"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn text_output_uses_the_same_decoding() {
    let dir = temp_dir("text");
    let out = run_records(&dir, &[]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(
        "[broker] CREATE pid 4096 | parent 4 | creator 4:256 | image \\??\\C:\\Tools\\broker.exe \
         | account alice | created 2024-01-01 00:00:01.000 UTC | permitted\n    \
         record process_events #0: {kind: EVENT_CREATE, exit_code: 0, process_id: 4096, \
         parent_process_id: 4, creator: {pid: 4, tid: 256}, current: {pid: 4, tid: 256}, \
         logon_id: 999, has_sid: 1, sid_bytes: 28, image_result: 46, tag: \"create\", \
         image: \"\\\\??\\\\C:\\\\Tools\\\\broker.exe\", account: \"alice\"}\n"
    ), "{stdout}");
    assert!(stdout.contains(
        "map children_by_parent (hash, key uint64_t, 8 B, value struct children, 8 B, max 64):\n  \
         key 4096: {created: 1, exited: 1}\n"
    ), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ringbuf_types_are_checked_against_the_object() {
    let dir = temp_dir("ringbuf");
    let scenario = dir.join("s.txt");
    std::fs::write(&scenario, "create a image=C:\\a.exe\n").unwrap();
    let object = workspace_root().join("tests/bpf/process_records.o");
    let driver = driver_image();
    for (spec, needle) in [
        ("nosuch=struct process_event", "no map named \"nosuch\""),
        (
            "children_by_parent=struct children",
            "is a hash map, not a ring buffer",
        ),
        (
            "process_events=struct nosuch",
            "has no type \"struct nosuch\"",
        ),
        ("process_events", "--ringbuf process_events: write MAP=TYPE"),
    ] {
        let out = ntsim(&[
            "run",
            "--driver",
            path(&driver),
            "--object",
            path(&object),
            "--program",
            "record",
            "--scenario",
            path(&scenario),
            "--ringbuf",
            spec,
        ]);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{spec}");
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_account_column_shows_what_the_helpers_returned_not_the_account_table() {
    // The account table knows alice, but the first lookup fails: the
    // driver's helper returns -ENOENT to the program, and that is what the
    // event line shows; the next creation's lookup succeeds (app, created
    // by broker without `user=`, runs with broker's token: alice).
    let dir = temp_dir("account");
    let out = run_records(&dir, &["--fail", "SecLookupAccountSid"]);
    let stdout = text(&out.stdout);
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {stdout}"))
            .to_string()
    };
    assert!(
        line("[broker] CREATE").contains("| account <helper error -2> |"),
        "{stdout}"
    );
    assert!(
        line("[app] CREATE").contains("| account alice |"),
        "{stdout}"
    );
    // deny_foreign_creator denies odd before `record` could ask.
    assert!(
        line("[odd] CREATE")
            .contains("| account not read (sid S-1-5-21-1111111111-2222222222-3333333333-1001) |"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// test_run.ntsim's steps, without its directives and expectations.
fn test_run_scenario(dir: &Path) -> PathBuf {
    let original =
        std::fs::read_to_string(workspace_root().join("tests/bpf/test_run.ntsim")).unwrap();
    let steps: String = original
        .lines()
        .filter(|l| l.starts_with("test-run "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(steps.lines().count(), 4, "{steps}");
    let file = dir.join("test_run.txt");
    std::fs::write(&file, steps).unwrap();
    file
}

fn run_test_runs(dir: &Path, extra: &[&str]) -> String {
    let scenario = test_run_scenario(dir);
    let object = workspace_root().join("tests/bpf/test_run.o");
    let driver = driver_image();
    let mut args = vec![
        "run",
        "--driver",
        path(&driver),
        "--object",
        path(&object),
        "--program",
        "ProcessMonitor",
        "--scenario",
        path(&scenario),
    ];
    args.extend_from_slice(extra);
    let out = ntsim(&args);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn a_test_run_step_prints_the_result_and_the_output_context() {
    let dir = temp_dir("test_run_text");
    let stdout = run_test_runs(&dir, &[]);
    let runs: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("[test-run ProcessMonitor]"))
        .collect();
    assert_eq!(runs.len(), 4, "{stdout}");
    assert!(
        runs[0].starts_with(
            "[test-run ProcessMonitor] result 0 (0x0) | ctx_out process_id 1234, \
             parent_process_id 4567, creating_process_id 8910, creating_thread_id 1112, "
        ),
        "{}",
        runs[0]
    );
    assert!(
        runs[0].contains("token_sid \"S-1-5-18\", account_lookup_done 1 | data_out command_line \"notepad.exe test.txt\""),
        "{}",
        runs[0]
    );
    // The account resolved by the driver's second lookup.
    assert!(
        runs[1].ends_with("account_name \"SYSTEM\", account_domain \"NT AUTHORITY\""),
        "{}",
        runs[1]
    );
    assert_eq!(
        runs[2],
        "[test-run ProcessMonitor] FAILED: test run: context_create failed with ebpf_result_t 6"
    );
    assert!(
        runs[3].contains("process_exit_code 259, operation 1,"),
        "{}",
        runs[3]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_test_run_step_in_json_has_its_input_then_its_result() {
    let dir = temp_dir("test_run_json");
    let stdout = run_test_runs(&dir, &["--json"]);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let steps: Vec<&Value> = lines.iter().filter(|l| l["type"] == "step").collect();
    let verdicts: Vec<&Value> = lines.iter().filter(|l| l["type"] == "verdict").collect();
    assert_eq!((steps.len(), verdicts.len()), (4, 4), "{stdout}");
    let s = steps[0];
    assert_eq!(s["keyword"], "test-run");
    assert_eq!(s["event"], "test_run");
    assert_eq!(s["program"], "ProcessMonitor");
    assert_eq!(s["input"]["process_id"], 1234);
    assert_eq!(s["input"]["creating_thread_id"], 1112);
    assert_eq!(s["input"]["token_sid"], "S-1-5-18");
    assert_eq!(s["input"]["strings"]["account_name"], "SYSTEM");
    assert_eq!(s["input"]["account_lookup_done"], 1);
    let v = verdicts[0];
    assert_eq!(v["verdict"], "none");
    let run = &v["test_run"];
    assert_eq!(run["result"], 0);
    assert_eq!(run["context"]["process_id"], 1234);
    assert_eq!(run["context"]["command_line"]["length"], 40);
    assert_eq!(
        run["strings"]["image_path"],
        "C:\\Windows\\System32\\notepad.exe"
    );
    assert_eq!(verdicts[1]["test_run"]["strings"]["account_name"], "SYSTEM");
    assert_eq!(
        verdicts[1]["test_run"]["context"]["account_name"]["maximum_length"],
        12
    );
    assert_eq!(
        verdicts[2]["test_run"],
        serde_json::json!({"error": "test run: context_create failed with ebpf_result_t 6"})
    );
    assert_eq!(verdicts[3]["test_run"]["context"]["operation"], 1);
    // The run's record belongs to its step.
    let record = lines.iter().find(|l| l["type"] == "record").unwrap();
    assert_eq!(record["step"], 1);
    // Other steps' verdicts have no test run.
    let dir2 = temp_dir("test_run_json_other");
    let other = run_records(&dir2, &["--json"]);
    let other = text(&other.stdout);
    for l in other.lines().filter(|l| l.contains("\"type\":\"verdict\"")) {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["test_run"], Value::Null, "{l}");
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}

#[test]
fn a_wrong_test_run_expectation_fails_with_the_expected_and_the_actual_value() {
    let dir = temp_dir("test_run_wrong");
    let bpf = workspace_root().join("tests/bpf");
    let original = std::fs::read_to_string(bpf.join("test_run.ntsim")).unwrap();
    let edited = original
        .replace(
            "object test_run.o",
            &format!("object {}", bpf.join("test_run.o").display()),
        )
        .replace(
            "expect test-run test-run:ProcessMonitor context.process_id = 1234",
            "expect test-run test-run:ProcessMonitor context.process_id = 1235",
        )
        .replace(
            "expect test-run test-run:ProcessMonitor strings.account_name = \"SYSTEM\"",
            "expect test-run test-run:ProcessMonitor strings.account_name = \"X\"",
        )
        .replace(
            "expect test-run test-run:ProcessMonitor error ~ \"context_create failed\"",
            "expect test-run test-run:ProcessMonitor result = 0",
        );
    let file = dir.join("edited.ntsim");
    std::fs::write(&file, &edited).unwrap();
    // The last line that reads so (the edited one: `result = 0` is also
    // written, rightly, under the steps above it).
    let lines: Vec<&str> = edited.lines().collect();
    let line_of = |needle: &str| lines.iter().rposition(|l| *l == needle).unwrap() + 1;
    let out = ntsim(&["test", "--driver", path(&driver_image()), path(&file)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let f = file.display();
    for (needle, expected, actual) in [
        (
            "expect test-run test-run:ProcessMonitor context.process_id = 1235",
            "context.process_id = 1235",
            "1234".to_string(),
        ),
        (
            "expect test-run test-run:ProcessMonitor strings.account_name = \"X\"",
            "strings.account_name = \"X\"",
            "\"SYSTEM\"".to_string(),
        ),
        (
            "expect test-run test-run:ProcessMonitor result = 0",
            "result = 0",
            "no member result in {error: \"test run: context_create failed with ebpf_result_t 6\"} (members: error)".to_string(),
        ),
    ] {
        let block = format!(
            "{f}:{}: {needle}\n    expected: {expected}\n    actual:   {actual}\n",
            line_of(needle)
        );
        assert!(stdout.contains(&block), "{block:?} in:\n{stdout}");
    }
    assert!(stdout.contains("3 of 24 expectation(s) failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn json_with_etw_reports_the_drivers_events_with_the_step_that_caused_them() {
    let dir = temp_dir("etw_json");
    let out = run_records(&dir, &["--json", "--etw"]);
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let etw: Vec<(usize, &Value)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["type"] == "etw")
        .collect();
    assert!(!etw.is_empty(), "no etw objects");
    for (_, e) in &etw {
        assert_eq!(e["provider"], "NtosEbpfExtProvider", "{e}");
        assert_eq!(
            e["provider_id"], "{d15cc421-e9e4-459b-87a6-b45b7d84e9a8}",
            "{e}"
        );
    }
    let position = |pred: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("not found in {lines:#?}"))
    };
    let first_step = position(&|l| l["type"] == "step");
    let end = position(&|l| l["type"] == "end");
    let load = position(&|l| l["type"] == "etw" && l["event"] == "DriverLoad");
    assert!(load < first_step, "the load comes before the first step");
    assert_eq!(lines[load]["step"], Value::Null);
    assert_eq!(lines[load]["fields"]["Status"], "0x00000000");
    assert_eq!(lines[load]["level"], 4);
    let unload = position(&|l| l["type"] == "etw" && l["event"] == "DriverUnload");
    assert!(unload < end && lines[unload]["step"] == Value::Null);
    // One verbose per-event record per process event, inside its step
    // (after the step object, before its verdict), with its fields.
    let steps: Vec<&Value> = lines.iter().filter(|l| l["type"] == "step").collect();
    let hook_events: Vec<&Value> = etw
        .iter()
        .map(|(_, e)| *e)
        .filter(|e| e["event"] == "HookEvent")
        .collect();
    assert_eq!(hook_events.len(), steps.len(), "{hook_events:#?}");
    for (i, step) in steps.iter().enumerate() {
        let n = step["step"].as_u64().unwrap();
        let at = position(&|l| l["type"] == "etw" && l["event"] == "HookEvent" && l["step"] == n);
        let step_at = position(&|l| l["type"] == "step" && l["step"] == n);
        let verdict_at = position(&|l| l["type"] == "verdict" && l["step"] == n);
        assert!(step_at < at && at < verdict_at, "step {n}");
        let e = hook_events[i];
        assert_eq!(e["step"], n);
        assert_eq!(e["level"], 5);
        assert_eq!(e["fields"]["Hook"], "process");
        assert_eq!(e["fields"]["Id"], step["pid"], "{e}");
    }
    // The denied creation (`odd`) is in its record too.
    let odd = steps.iter().find(|s| s["name"] == "odd").unwrap();
    let odd_event = hook_events
        .iter()
        .find(|e| e["step"] == odd["step"])
        .unwrap();
    assert_eq!(
        odd_event["fields"]["Verdict"], 0xC000_0022u32 as i32,
        "{odd_event}"
    );
    // Each event also went to stderr, one line each.
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("ntsim: etw NtosEbpfExtProvider/"))
            .count(),
        etw.len(),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn thread_image_and_driver_steps_in_json_carry_their_inputs_records_and_no_verdict() {
    let dir = temp_dir("sysmon_json");
    let scenario = dir.join("sysmon.scenario");
    std::fs::write(
        &scenario,
        "create lsass image=C:\\Windows\\System32\\lsass.exe parent=4 user=SYSTEM pid=0x300 tid=0x304\n\
         create injector image=C:\\Tools\\injector.exe pid=0x400 tid=0x404\n\
         thread inject in=lsass by=injector start=0x7ffb12340000 tid=0x500\n\
         image injector path=C:\\x.dll base=0x10000 size=0x2000\n\
         driver path=\\SystemRoot\\d.sys base=0xfffff80000000000 size=0x9000\n\
         thread-exit inject code=0xC0000005\n",
    )
    .unwrap();
    let object = workspace_root().join("tests/bpf/sysmon.o");
    let driver = driver_image();
    let out = ntsim(&[
        "run",
        "--driver",
        path(&driver),
        "--object",
        path(&object),
        "--program",
        "watch_lsass",
        "--program",
        "thread_monitor",
        "--program",
        "image_monitor",
        "--ringbuf",
        "threads=thread_record_t",
        "--scenario",
        path(&scenario),
        "--json",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let step = |keyword: &str| {
        lines
            .iter()
            .find(|l| l["type"] == "step" && l["keyword"] == keyword)
            .unwrap_or_else(|| panic!("no {keyword} step:\n{stdout}"))
    };
    let t = step("thread");
    assert_eq!(
        (&t["event"], &t["name"], &t["pid"], &t["tid"]),
        (
            &Value::from("thread_create"),
            &Value::from("inject"),
            &Value::from(0x300),
            &Value::from(0x500)
        )
    );
    assert_eq!(
        t["creator"],
        serde_json::json!({"pid": 0x400, "tid": 0x404})
    );
    assert_eq!(t["start_address"], 0x7ffb12340000u64);
    assert_eq!(t["remote"], true);
    let i = step("image");
    assert_eq!(
        (
            &i["event"],
            &i["pid"],
            &i["path"],
            &i["image_base"],
            &i["image_size"]
        ),
        (
            &Value::from("image_load"),
            &Value::from(0x400),
            &Value::from("C:\\x.dll"),
            &Value::from(0x10000),
            &Value::from(0x2000)
        )
    );
    let d = step("driver");
    assert_eq!(
        (&d["event"], &d["pid"], &d["name"], &d["flags"]),
        (
            &Value::from("driver_load"),
            &Value::from(0),
            &Value::from("\\SystemRoot\\d.sys"),
            &Value::from(1)
        )
    );
    let e = step("thread-exit");
    assert_eq!(
        (&e["event"], &e["tid"], &e["exit_status"]),
        (
            &Value::from("thread_exit"),
            &Value::from(0x500),
            &Value::from("0xc0000005")
        )
    );
    // Each record belongs to its step, decoded through the BTF type; thread
    // and image steps have the verdict `none`.
    let n = t["step"].as_u64().unwrap();
    let records: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "record" && l["step"] == n)
        .collect();
    assert_eq!(records.len(), 1, "{stdout}");
    assert_eq!(records[0]["map"], "threads");
    assert_eq!(records[0]["value"]["alert"], 1);
    assert_eq!(records[0]["value"]["thread_id"], 0x500);
    for s in [t, i, d, e] {
        let v = lines
            .iter()
            .find(|l| l["type"] == "verdict" && l["step"] == s["step"])
            .unwrap();
        assert_eq!(v["verdict"], "none", "{v}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The code blocks of docs/testing-programs.md, in order, as (language,
/// text).
fn doc_blocks() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(workspace_root().join("docs/testing-programs.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l == "```" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            blocks.push((lang.to_string(), body));
        }
    }
    blocks
}

/// The one code block of the doc that starts with `start`.
fn doc_block(blocks: &[(String, String)], start: &str) -> String {
    let found: Vec<&String> = blocks
        .iter()
        .map(|(_, b)| b)
        .filter(|b| b.starts_with(start))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "docs/testing-programs.md: expected one code block starting with {start:?}"
    );
    found[0].clone()
}

/// docs/testing-programs.md followed as written: the example program is
/// compiled with the doc's clang command, its test file and test-run file
/// pass with the output the doc shows, the doc's wrong expectation fails
/// the way the doc shows, and the doc's scenario file gives the JSON lines
/// the doc shows. The doc's include directories are replaced by the
/// project's: eBPF for Windows' headers are not here, so the stand-ins in
/// tests/bpf/include (which declare the same names) take their place.
#[test]
fn the_walkthrough_in_testing_programs_md_runs_as_written() {
    let root = workspace_root();
    let blocks = doc_blocks();
    let dir = temp_dir("walkthrough");
    std::fs::write(
        dir.join("my_monitor.c"),
        doc_block(&blocks, "#include \"bpf_helpers.h\""),
    )
    .unwrap();
    std::fs::write(
        dir.join("my_monitor.ntsim"),
        doc_block(&blocks, "# what to load"),
    )
    .unwrap();
    std::fs::write(
        dir.join("my_test_run.ntsim"),
        doc_block(&blocks, "object my_monitor.o\nattach watch\ntest-run"),
    )
    .unwrap();

    // The doc's clang command, with this repository's include directories.
    let clang = doc_block(&blocks, "clang ").replace("\\\n", " ");
    let words: Vec<String> = clang
        .split_whitespace()
        .map(|w| match w {
            "ebpf-for-windows/include" => path(&root.join("tests/bpf/include")).to_string(),
            "ntosebpfext-rs/include" => path(&root.join("include")).to_string(),
            w => w.to_string(),
        })
        .collect();
    let out = ntsim::child::output_within(
        Command::new(&words[0]).args(&words[1..]).current_dir(&dir),
        ntsim::child::LIMIT,
    )
    .unwrap_or_else(|e| {
        panic!("cannot run clang ({e}): this test needs clang (apt-get install clang)")
    });
    assert!(out.status.success(), "{words:?}: {}", text(&out.stderr));

    let driver = driver_image();
    let test = |file: &str| {
        ntsim::child::output_within(
            Command::new(env!("CARGO_BIN_EXE_ntsim"))
                .args(["test", "--driver", path(&driver), file])
                .current_dir(&dir),
            ntsim::child::LIMIT,
        )
        .expect("the ntsim binary runs")
    };
    let out = test("my_monitor.ntsim");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        doc_block(&blocks, "test my_monitor.ntsim ... ok")
    );
    let out = test("my_test_run.ntsim");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The doc's wrong expectation: its line 15 expecting 0x2000.
    let shown = doc_block(&blocks, "test my_monitor.ntsim ... FAILED");
    let wrong = shown.lines().nth(1).unwrap();
    let (place, expectation) = wrong.split_once(": ").unwrap();
    let line: usize = place
        .strip_prefix("my_monitor.ntsim:")
        .unwrap()
        .parse()
        .unwrap();
    let file = std::fs::read_to_string(dir.join("my_monitor.ntsim")).unwrap();
    let mut lines: Vec<&str> = file.lines().collect();
    assert_eq!(
        lines[line - 1],
        expectation.replace("0x2000", "0x1000"),
        "the doc's failing line {line} is its test file's line, with 0x2000"
    );
    lines[line - 1] = expectation;
    std::fs::write(dir.join("my_monitor.ntsim"), lines.join("\n") + "\n").unwrap();
    let out = test("my_monitor.ntsim");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), shown);

    // The scenario file the doc makes, run with --json: the doc's JSON
    // lines are lines of the output.
    let make = doc_block(&blocks, "cat > my_scenario.txt");
    let (make, run) = make.split_once("EOF\nntsim run").unwrap();
    let out = ntsim::child::output_within(
        Command::new("sh")
            .args(["-c", &format!("{make}EOF\n")])
            .current_dir(&dir),
        ntsim::child::LIMIT,
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(run.contains("--scenario my_scenario.txt --ringbuf events='struct event'"));
    let out = ntsim::child::output_within(
        Command::new(env!("CARGO_BIN_EXE_ntsim"))
            .args([
                "run",
                "--driver",
                path(&driver),
                "--object",
                "my_monitor.o",
                "--program",
                "watch",
                "--scenario",
                "my_scenario.txt",
                "--ringbuf",
                "events=struct event",
                "--json",
            ])
            .current_dir(&dir),
        ntsim::child::LIMIT,
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let actual: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shown = doc_block(&blocks, "{\"command_line\"");
    for line in shown.lines() {
        let shown: Value = serde_json::from_str(line).unwrap();
        assert!(
            actual.contains(&shown),
            "the doc's JSON line is not in the output:\n{line}\noutput:\n{}",
            text(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
