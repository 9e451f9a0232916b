//! ntsim as a command: the demo (ntsim::demo::run, as `cargo xtask demo`
//! runs it) and the `ntsim` binary's `run` command, with the real driver
//! image and the sample programs of tests/bpf/process_test.c.
#![cfg(unix)]

use ntsim::build::driver_image;
use ntsim::child::{Watched, LIMIT};
use ntsim::process::sample_object_path;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo_output() -> String {
    let mut out = Vec::new();
    ntsim::demo::run(&[driver_image()], &mut out).expect("the demo runs clean");
    String::from_utf8(out).expect("UTF-8 output")
}

fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[test]
fn demo_prints_every_event_with_its_verdict_and_ends_clean() {
    let text = demo_output();
    // The policy is attached before the monitor: the denied creation is
    // reported from the kernel's side, with the status the program chose;
    // no program read the account through the driver's helpers, so the
    // line says so (and shows the token's SID, which the context carries).
    assert_eq!(
        line_starting(&text, "[notepad] CREATE"),
        "[notepad] CREATE pid 276 | parent 268 | creator 268:272 \
         | image \\??\\C:\\Windows\\System32\\notepad.exe \
         | command line notepad.exe C:\\Users\\tester\\notes.txt \
         | account not read (sid S-1-5-21-1111111111-2222222222-3333333333-1001) \
         | created 2024-01-01 00:00:03.000 UTC | DENIED 0xc0000022 (STATUS_ACCESS_DENIED) \
         (the monitor did not run: the policy before it denied the creation)"
    );
    // Permitted creations come from the monitor's records: what the program
    // read through the driver (context, packet, helpers).
    assert_eq!(
        line_starting(&text, "[cmd] CREATE"),
        "[cmd] CREATE pid 268 | parent 260 | creator 260:264 \
         | image \\??\\C:\\Windows\\System32\\cmd.exe | command line cmd.exe /c \"echo hello\" \
         | account NTSIM\\tester | sid S-1-5-21-1111111111-2222222222-3333333333-1001 \
         | created 2024-01-01 00:00:02.000 UTC | permitted"
    );
    assert!(
        line_starting(&text, "[svchost] CREATE")
            .contains("| account NT AUTHORITY\\SYSTEM | sid S-1-5-18 |"),
        "{text}"
    );
    assert!(line_starting(&text, "[calc] CREATE").ends_with("| permitted"));
    assert_eq!(
        line_starting(&text, "[cmd] DELETE"),
        "[cmd] DELETE pid 268 | created 2024-01-01 00:00:02.000 UTC \
         | exited 2024-01-01 00:00:10.500 UTC | exit code 0x00000001 | exit (no verdict)"
    );
    assert!(line_starting(&text, "[calc] DELETE").contains("| exit code 0x00000000 |"));
    let processes = text
        .lines()
        .filter(|l| l.starts_with('[') && (l.contains("] CREATE ") || l.contains("] DELETE ")))
        .count();
    assert_eq!(
        processes, 10,
        "one line per process event of the demo scenario:\n{text}"
    );
    // The thread and image-load hooks: every created process's first
    // thread (created by its creator, hence remote, and recognised) and
    // main image; the remote thread into lsass.exe raises the alert.
    assert_eq!(
        line_starting(&text, "[lsass] THREAD CREATE"),
        "[lsass] THREAD CREATE tid 308 in pid 304 | creator 296:300 | start 0x7ff600001000 \
         | REMOTE | first thread"
    );
    assert_eq!(
        line_starting(&text, "[inject] THREAD CREATE"),
        "[inject] THREAD CREATE tid 324 in pid 304 | creator 312:316 | start 0x7ffb12340000 \
         | REMOTE | ALERT: remote thread into a watched process (Sysmon event 8)"
    );
    assert_eq!(text.matches("ALERT").count(), 1, "{text}");
    assert_eq!(
        line_starting(&text, "[worker] THREAD CREATE"),
        "[worker] THREAD CREATE tid 320 in pid 260 | creator 260:264 | start 0x7ff6abcd1000",
        "a local thread"
    );
    assert_eq!(
        line_starting(&text, "[inject] THREAD EXIT"),
        "[inject] THREAD EXIT tid 324 in pid 304 | exit status 0x00000000 | start 0x7ffb12340000"
    );
    assert!(
        line_starting(&text, "[cmd] THREAD EXIT").contains("| exit status 0x00000001 |"),
        "a process's threads end with its exit status"
    );
    assert_eq!(
        line_starting(&text, "[driver] DRIVER LOAD"),
        "[driver] DRIVER LOAD (Sysmon event 6) | thread 256 \
         | \\SystemRoot\\System32\\drivers\\mimidrv.sys | base 0xfffff80612340000 size 0x9000 \
         | signature level 0 type 0"
    );
    assert!(
        line_starting(&text, "[mimikatz] IMAGE LOAD pid 312 (Sysmon event 7)")
            .contains("| \\??\\C:\\Users\\tester\\Downloads\\mimikatz.exe |")
    );
    assert!(text.contains("vaultcli.dll | base 0x7ffb20000000 size 0x5a000"));
    assert_eq!(text.lines().last(), Some("no leaks, no violations"));
    assert!(text.contains("DriverEntry returned 0x00000000 (STATUS_SUCCESS)"));
}

#[test]
fn demo_output_is_the_same_on_every_run() {
    assert_eq!(demo_output(), demo_output());
}

#[test]
fn demo_fails_with_a_message_when_the_driver_is_not_a_driver() {
    let mut out = Vec::new();
    let dir = temp_dir("not-a-driver");
    let fake = dir.join("fake.sys");
    std::fs::write(&fake, b"MZ but not really").unwrap();
    let e = ntsim::demo::run(std::slice::from_ref(&fake), &mut out).expect_err("not an image");
    assert!(
        e.contains("cannot load the driver") && e.contains("fake.sys"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ntsim-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

const SCENARIO: &str = r#"
# two users, a denied editor, an exit with a code
account alice domain=CORP sid=S-1-5-21-10-20-30-1002
create shell image=C:\Windows\explorer.exe parent=4 user=CORP\alice
create ed image=C:\Windows\notepad.exe cmd="notepad.exe x.txt" parent=shell
create tool image=C:\Tools\tool.exe cmd="tool.exe --all" parent=shell at=5
exit tool code=0xC0000005
"#;

#[test]
fn run_feeds_a_scenario_file_and_dumps_the_maps() {
    let dir = temp_dir("run");
    let scenario = dir.join("scenario.txt");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let driver = driver_image();
    let object = sample_object_path();
    let out = ntsim(&[
        "run",
        "--driver",
        path(&driver),
        "--object",
        path(&object),
        "--program",
        "deny_notepad",
        "--program",
        "mark_a",
        "--program",
        "monitor",
        "--scenario",
        path(&scenario),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("attached deny_notepad, mark_a, monitor (in this order)"));
    // Verdicts, one line per event.
    assert!(
        line_starting(&stdout, "[shell] CREATE").contains("| account CORP\\alice |"),
        "{stdout}"
    );
    assert!(line_starting(&stdout, "[ed] CREATE")
        .ends_with("| DENIED 0xc0000022 (STATUS_ACCESS_DENIED)"));
    assert!(line_starting(&stdout, "[tool] CREATE").ends_with("| permitted"));
    assert!(line_starting(&stdout, "[tool] DELETE").contains("| exit code 0xc0000005 |"));
    // Each record comes under the step that produced it: the monitor's
    // records decoded, the marks in hex. mark_a ran for the two permitted
    // creations and the exit, not for the denied creation (nothing runs
    // after a denial).
    let shell = stdout
        .split("[shell] CREATE")
        .nth(1)
        .expect("the shell's step")
        .split("\n[")
        .next()
        .unwrap();
    assert!(
        shell.contains(
            "    record events #0: CREATE pid 260 | parent 4 | creator 4:256 \
         | image \\??\\C:\\Windows\\explorer.exe | account CORP\\alice \
         | sid S-1-5-21-10-20-30-1002 | created 2024-01-01 00:00:01.000 UTC"
        ),
        "{shell}"
    );
    assert!(
        shell.contains("    record marks #0: 1 bytes\n      0000: 41"),
        "{shell}"
    );
    let ed = stdout
        .split("[ed] CREATE")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    assert!(
        !ed.contains("record"),
        "a denied creation reaches no later program: {ed}"
    );
    let exit = stdout.split("[tool] DELETE").nth(1).unwrap();
    assert!(exit.contains("    record events #2: DELETE pid"), "{exit}");
    assert_eq!(stdout.matches("      0000: 41\n").count(), 3, "{stdout}");
    assert!(stdout
        .contains("map events (ring buffer, key 0 B, value 0 B, max 65536):\n  0 record(s) left"));
    assert!(stdout.contains("map scratch (per-CPU array"));
    assert_eq!(stdout.lines().last(), Some("no leaks, no violations"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_with_the_builtin_scenario() {
    let out = ntsim(&[
        "run",
        "--driver",
        path(&driver_image()),
        "--object",
        path(&sample_object_path()),
        "--program",
        "deny_all",
        "--builtin",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let denied = stdout
        .lines()
        .filter(|l| l.contains("| DENIED 0xc0000022"))
        .count();
    assert_eq!(denied, 5, "deny_all denies every creation:\n{stdout}");
    assert_eq!(
        stdout.matches("exit skipped").count(),
        2,
        "exits of processes never created are skipped:\n{stdout}"
    );
}

fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stderr}\n{}",
        text(&out.stdout)
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
}

#[test]
fn errors_name_the_problem() {
    let driver = driver_image();
    let object = sample_object_path();
    let dir = temp_dir("errors");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--driver", path(&driver)];
        args.extend_from_slice(extra);
        ntsim(&args)
    };

    let missing = dir.join("missing.o");
    assert_fails(
        &run(&[
            "--object",
            path(&missing),
            "--program",
            "monitor",
            "--builtin",
        ]),
        1,
        &["eBPF object", "missing.o", "does not exist"],
    );
    assert_fails(
        &run(&[
            "--object",
            path(&object),
            "--program",
            "nosuch",
            "--builtin",
        ]),
        1,
        &["no program named \"nosuch\"", "monitor, deny_notepad"],
    );

    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "create a image=C:\\a.exe\nexit a code=soon\n").unwrap();
    assert_fails(
        &run(&[
            "--object",
            path(&object),
            "--program",
            "monitor",
            "--scenario",
            path(&bad),
        ]),
        1,
        &["bad.txt", "line 2: code=soon"],
    );
    assert_fails(
        &run(&[
            "--object",
            path(&object),
            "--program",
            "monitor",
            "--scenario",
            path(&dir.join("none.txt")),
        ]),
        1,
        &["cannot read the scenario", "none.txt"],
    );

    // A section the driver did not register in the eBPF store: refused,
    // naming it and listing what is registered.
    let maps = object.with_file_name("maps.o");
    assert_fails(
        &run(&[
            "--object",
            path(&maps),
            "--program",
            "maps_test",
            "--builtin",
        ]),
        1,
        &[
            "section \"sample\" is not in the eBPF store",
            "(registered sections: image_load, process, thread)",
        ],
    );

    // DriverEntry fails when its first allocation fails: its status is shown.
    assert_fails(
        &run(&[
            "--object",
            path(&object),
            "--program",
            "monitor",
            "--builtin",
            "--fail",
            "ExAllocatePool2",
        ]),
        1,
        &["failed to load: DriverEntry returned 0xc000009a (STATUS_INSUFFICIENT_RESOURCES)"],
    );
    // The hook cannot register its notify routine: the attach fails.
    assert_fails(
        &run(&[
            "--object",
            path(&object),
            "--program",
            "monitor",
            "--builtin",
            "--fail",
            "PsSetCreateProcessNotifyRoutineEx",
        ]),
        1,
        &["attaching program \"monitor\" failed"],
    );

    // Usage errors exit with 2.
    assert_fails(
        &ntsim(&["frobnicate"]),
        2,
        &["unknown command \"frobnicate\"", "usage:"],
    );
    assert_fails(
        &run(&["--object", path(&object), "--program", "monitor"]),
        2,
        &["exactly one of --scenario FILE, --builtin, --live SECONDS"],
    );
    // Without --driver the run loads ntosebpfext (NTOSEBPFEXT_SYS, else
    // built with cargo).
    let default = ntsim::child::output_within(
        Command::new(env!("CARGO_BIN_EXE_ntsim"))
            .args([
                "run",
                "--object",
                path(&object),
                "--program",
                "monitor",
                "--builtin",
            ])
            .env("NTOSEBPFEXT_SYS", &driver),
        ntsim::child::LIMIT,
    )
    .expect("the ntsim binary runs");
    assert!(
        default.status.success(),
        "{}{}",
        text(&default.stdout),
        text(&default.stderr)
    );
    assert!(
        text(&default.stdout)
            .starts_with("driver ntosebpfext.sys: DriverEntry returned 0x00000000"),
        "{}",
        text(&default.stdout)
    );
    assert_fails(
        &run(&["--driver-name", "nosuch"]),
        2,
        &["--driver-name \"nosuch\" is not one of the repository's drivers (ntosebpfext"],
    );
    assert_fails(
        &run(&[
            "--object",
            path(&object),
            "--program",
            "monitor",
            "--live",
            "0",
        ]),
        2,
        &["--live 0"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_command_with_a_driver_path() {
    let out = ntsim(&["demo", "--driver", path(&driver_image())]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(
        stdout,
        demo_output(),
        "the command prints what demo::run prints"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn live_replays_host_processes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ntsim"))
        .args([
            "run",
            "--driver",
            path(&driver_image()),
            "--object",
            path(&sample_object_path()),
            "--program",
            "monitor",
            "--live",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Watched::new(child, "ntsim run --live 5", LIMIT);
    // Start a host process once ntsim is watching.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let watching = line.starts_with("watching the host's processes");
        seen.push(line);
        if watching {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("watching")),
        "{seen:?}"
    );
    let host = Command::new("sleep").arg("1.4321").spawn().unwrap();
    let host = Watched::new(host, "sleep 1.4321", LIMIT);
    let host_pid = host.id();
    let status = host.wait();
    assert!(status.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().success(), "{rest:?}");
    let text = rest.join("\n");
    let create = line_starting(&text, &format!("[sleep/{host_pid}] CREATE"));
    assert!(create.contains("| command line sleep 1.4321 |"), "{create}");
    assert!(create.ends_with("| permitted"), "{create}");
    assert!(
        line_starting(&text, &format!("[sleep/{host_pid}] DELETE")).contains("exit code"),
        "{text}"
    );
    // The monitor reported it too (its record in the dumped events map).
    assert!(
        text.contains("| command line sleep 1.4321 | account "),
        "{text}"
    );
    assert_eq!(
        rest.last().map(String::as_str),
        Some("no leaks, no violations")
    );
}

/// Set for the copy of this binary that `live_mirrors_host_threads_and_
/// executable_mappings` starts as a host process.
#[cfg(target_os = "linux")]
const LIVE_HELPER: &str = "NTSIM_CLI_LIVE_HELPER";

/// Not a test on its own: in the host process started by the test below
/// (with LIVE_HELPER set), runs a second thread for 0.6 s, then lives 0.3 s
/// more; otherwise does nothing.
#[cfg(target_os = "linux")]
#[test]
fn live_thread_helper() {
    if std::env::var_os(LIVE_HELPER).is_none() {
        return;
    }
    let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(1500)));
    t.join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
}

#[cfg(target_os = "linux")]
#[test]
fn live_mirrors_host_threads_and_executable_mappings() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let sysmon = ntsim::thread::sample_object_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ntsim"))
        .args([
            "run",
            "--driver",
            path(&driver_image()),
            "--object",
            path(&sysmon),
            "--program",
            "thread_monitor",
            "--program",
            "image_monitor",
            "--live",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Watched::new(child, "ntsim run --live 5", LIMIT);
    for line in lines.by_ref() {
        if line.unwrap().starts_with("watching the host's processes") {
            break;
        }
    }
    // A host process with a second thread, alive long enough for a scan of
    // its mappings: this test binary, running `live_thread_helper`.
    let host = Command::new(std::env::current_exe().unwrap())
        .args([
            "live_thread_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LIVE_HELPER, "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let host = Watched::new(host, "the live_thread_helper host process", LIMIT);
    let host_pid = host.id();
    assert!(host.wait().success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().success(), "{rest:?}");
    let text = rest.join("\n");
    let label = |l: &&String| l.contains(&format!("/{host_pid}"));
    let ours: Vec<&String> = rest.iter().filter(label).collect();
    assert!(
        ours.iter()
            .any(|l| l.contains("] THREAD CREATE ") && l.contains("/task ")),
        "the second thread is created:\n{text}"
    );
    assert!(
        ours.iter().any(|l| l.contains("] THREAD EXIT ")),
        "and exits:\n{text}"
    );
    assert!(
        ours.iter()
            .any(|l| l.contains("] IMAGE pid ") && l.contains("libc")),
        "libc is mapped executable:\n{text}"
    );
    // The programs saw them: decoded records in the dumped rings.
    assert!(text.contains("IMAGE LOAD pid"), "{text}");
    assert!(text.contains("THREAD CREATE tid"), "{text}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("no leaks, no violations")
    );
}

#[test]
fn store_prints_what_the_driver_registered_as_reg_query_does() {
    let out = ntsim(&["store", "--driver", path(&driver_image())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let root = "HKEY_LOCAL_MACHINE\\Software\\eBPF\\Providers";
    assert!(stdout.starts_with(&format!("{root}\n")), "{stdout}");
    let section = format!("{root}\\SectionData\\process\n");
    let at = stdout.find(&section).unwrap_or_else(|| panic!("{stdout}"));
    let block: Vec<&str> = stdout[at + section.len()..]
        .lines()
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        block,
        [
            "    Version    REG_DWORD    0x1",
            "    Size    REG_DWORD    0x38",
            "    AttachType    REG_BINARY    8706E26605985844A0DB38E220D31685",
            "    BpfProgType    REG_DWORD    0x6",
            "    BpfAttachType    REG_DWORD    0xb",
            "    ProgramType    REG_BINARY    377BEA2243100D4DB60DCAFA1C7B638E",
        ]
    );
    assert!(stdout.contains(
        "\\ProgramData\\{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}\\TypeDescriptor\n    \
         Version    REG_DWORD    0x1\n    Size    REG_DWORD    0x3d\n    \
         Name    REG_SZ    process\n"
    ));
    // The thread and image-load types: no helpers, no BPF numbers.
    for (section, program_type) in [
        ("thread", "5EB678280B75F4489AB4B5EADC377D67"),
        ("image_load", "3A0EE7E771BA9F489E22B31F6F61A623"),
    ] {
        let head = format!("{root}\\SectionData\\{section}\n");
        let at = stdout.find(&head).unwrap_or_else(|| panic!("{stdout}"));
        let block = &stdout[at + head.len()..];
        let block = &block[..block.find("\n\n").unwrap_or(block.len())];
        assert!(
            block.contains(&format!("    ProgramType    REG_BINARY    {program_type}"))
                && block.contains("    BpfProgType    REG_DWORD    0x0")
                && block.contains("    BpfAttachType    REG_DWORD    0x0"),
            "{section}:\n{block}"
        );
    }
    assert!(
        stdout.contains(
            "\\ProgramData\\{2878b65e-750b-48f4-9ab4-b5eadc377d67}\n    \
         Version    REG_DWORD    0x1\n    Size    REG_DWORD    0x40\n    \
         HelperCount    REG_DWORD    0x0\n"
        ),
        "{stdout}"
    );
    assert_fails(&ntsim(&["store"]), 2, &["store: --driver PATH is required"]);
}

#[test]
fn run_with_etw_prints_the_drivers_events_one_line_each() {
    let (driver, object) = (driver_image(), sample_object_path());
    let args = [
        "run",
        "--driver",
        path(&driver),
        "--object",
        path(&object),
        "--program",
        "deny_notepad",
        "--builtin",
    ];
    let quiet = ntsim(&args);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert!(
        !text(&quiet.stderr).contains("ntsim: etw"),
        "no ETW lines without --etw"
    );

    let out = ntsim(&[&args[..], &["--etw"]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ntsim: etw NtosEbpfExtProvider/"))
        .collect();
    let named = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.split(' ').next() == Some(name))
            .collect()
    };
    assert_eq!(
        named("DriverLoad"),
        ["DriverLoad level=4 keyword=0x2 Version=\"0.1.0\" Status=0x00000000"]
    );
    assert_eq!(named("ProviderRegister").len(), 6, "two per hook: {stderr}");
    assert_eq!(named("ClientAttach").len(), 2, "{stderr}");
    assert_eq!(
        named("CallbackRegister"),
        ["CallbackRegister level=4 keyword=0x80 Hook=\"process\" Status=0x00000000"]
    );
    // One per scenario step that reached the driver: five creations, two
    // exits; the denied one carries STATUS_ACCESS_DENIED.
    let events = named("HookEvent");
    assert_eq!(events.len(), 7, "{stderr}");
    assert_eq!(
        events
            .iter()
            .filter(|l| l.ends_with("ProgramsRun=1 Verdict=-1073741790"))
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        lines.last().map(|l| l.split(' ').next()),
        Some(Some("DriverUnload"))
    );
}

/// `--params NAME=HEX` gives a program its attach parameters: the netevent
/// monitor attaches with a capture type and sees the events; without them
/// the driver refuses the link, as upstream's does.
#[test]
fn run_passes_attach_parameters() {
    let dir = temp_dir("params");
    let scenario = dir.join("net.scenario");
    std::fs::write(
        &scenario,
        "netevent-provider register\nnetevent type=drop data=abcd\n",
    )
    .unwrap();
    let object = ntsim::build::workspace_root().join("tests/bpf/netevent_monitor.o");
    let netevent = ntsim::build::driver_image_named("neteventebpfext");
    let base = [
        "run",
        "--driver",
        path(&netevent),
        "--object",
        path(&object),
        "--program",
        "monitor_netevents",
        "--scenario",
        path(&scenario),
    ];
    let with: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--params", "monitor_netevents=03000000"])
        .collect();
    let out = ntsim(&with);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("(capture Drop): Delivered"), "{stdout}");
    assert!(stdout.contains("record netevent_events #0"), "{stdout}");
    let without = ntsim(&base);
    assert_fails(
        &without,
        1,
        &["attaching program \"monitor_netevents\" failed"],
    );
    let bad: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--params", "monitor_netevents=0300000"])
        .collect();
    assert_fails(&ntsim(&bad), 2, &["--params", "hex"]);
}

/// The whole demo, as `cargo xtask demo` runs it: both drivers in one
/// machine, the netevent part after ntosebpfext's, clean at the end.
#[test]
fn demo_runs_every_driver_and_part() {
    let images: Vec<PathBuf> = ntsim::demo::demo_drivers()
        .into_iter()
        .map(ntsim::build::driver_image_named)
        .collect();
    assert!(images.len() >= 2, "the demo has the netevent part");
    let mut out = Vec::new();
    ntsim::demo::run(&images, &mut out).expect("the demo runs clean");
    let text = String::from_utf8(out).unwrap();
    for part in ntsim::demo::DEMO_PARTS {
        assert!(text.contains(part.title), "{text}");
        assert!(
            text.contains(&format!("{}: ", part.test_file)) && text.contains("expectation(s) held"),
            "{text}"
        );
    }
    assert_eq!(
        text.matches("(capture All): Delivered").count(),
        4,
        "four network events reach the monitor:\n{text}"
    );
    assert!(
        text.contains("driver neteventebpfext.sys unloaded"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("no leaks, no violations"),
        "{text}"
    );
}
