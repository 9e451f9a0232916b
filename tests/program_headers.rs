//! The C headers for program authors (`include/`) used the way programs and
//! applications written for ntosebpfext 0.7.0 use them.
//!
//! - An application (`tests/bpf/app/*.c`) includes eBPF for Windows'
//!   `ebpf_structs.h` (the test stand-in in `tests/bpf/include`, which
//!   declares the real enumerators) and both driver headers, in either order
//!   and in two translation units; it is compiled as C and as C++ with the
//!   host compilers (`CC`/`CXX`, default `cc`/`c++`), run, and what it prints
//!   is compared with the driver's values.
//! - A program in upstream's style (`tests/bpf/upstream_style.c`: includes
//!   `bpf_helpers.h` then `ebpf_ntos_hooks.h`, uses `TOKEN_SID_MAX_SIZE`,
//!   `process_hook_t`, `memcpy_s`) runs against the real driver in ntsim.
//!
//! `tests/bpf/build.sh --check` (CI) compiles every test program with the
//! driver header included first as well.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::Command;

use ntsim::build::driver_image;
use ntsim::child::{output_within, LIMIT};
use ntsim::ebpf::core::LoadedProgram;
use ntsim::ebpf::Object;
use ntsim::process::{self as hook, from_utf16, utf16};
use ntsim::ps::{self, ProcessSpec};
use ntsim::Sim;

fn repo() -> PathBuf {
    ntsim::build::workspace_root()
}

/// Compiles the application with `compiler` (a program name from the
/// environment variable `var`, else `default`) and returns what it prints.
fn build_and_run_app(var: &str, default: &str, extra: &[&str], tag: &str) -> String {
    let compiler = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ntos_headers_app_{tag}"));
    let app = repo().join("tests/bpf/app");
    let result = output_within(
        Command::new(&compiler)
            .args(extra)
            .args(["-Wall", "-Wextra", "-Werror"])
            .arg("-I")
            .arg(repo().join("tests/bpf/include"))
            .arg("-I")
            .arg(repo().join("include"))
            .arg(app.join("app.c"))
            .arg(app.join("second_unit.c"))
            .arg("-o")
            .arg(&out),
        LIMIT,
    )
    .unwrap_or_else(|e| {
        panic!(
            "cannot run the host compiler `{compiler}` ({e}): this test needs a C and a \
                 C++ compiler (apt-get install clang, or set {var})"
        )
    });
    assert!(
        result.status.success(),
        "{compiler} {extra:?} failed to compile the application with the driver's headers:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let run = output_within(&mut Command::new(&out), LIMIT)
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", out.display()));
    assert!(run.status.success(), "{} failed: {:?}", out.display(), run);
    String::from_utf8(run.stdout).expect("ASCII output")
}

/// What the application prints: the GUIDs and the layouts as the driver
/// defines them (`ntosebpfext::hooks::process`), ntsim's view of the
/// test-run context size.
fn expected_app_output() -> String {
    use ntosebpfext::hooks::process::{process_test_run_context_t as C, TestRunString as S};
    use std::mem::{offset_of, size_of};
    format!(
        "program_type {}\n\
         attach_type {}\n\
         one_definition 1\n\
         bpf_prog_type 6\n\
         bpf_attach_type 11\n\
         token_sid_max_size 68\n\
         sizeof_process_md 144\n\
         offset_process_id 16\n\
         offset_creation_time 48\n\
         offset_process_exit_code 64\n\
         offset_token_sid_size 72\n\
         offset_token_sid 76\n\
         sizeof_token_sid 68\n\
         operation_delete 1\n\
         test_run_context {} {} {} {} {} {} {} {} {}\n\
         test_run_string {} {} {}\n\
         helper_ids 0x10000 0x10001 0x10002\n\
         thread_program_type {}\n\
         thread_attach_type {}\n\
         image_load_program_type {}\n\
         image_load_attach_type {}\n\
         sizeof_thread_md 56 start_address 32 exit_status 40 operation 44 flags 48\n\
         thread_values 0 1 1 2\n\
         sizeof_image_load_md 56 process_id 16 image_base 32 image_size 40 flags 48 \
         signature_level 52 signature_type 53\n\
         image_load_flags 1 2 4 8\n",
        hook::PROGRAM_TYPE,
        hook::ATTACH_TYPE,
        size_of::<C>(),
        hook::TEST_RUN_CONTEXT_SIZE,
        offset_of!(C, process_md),
        offset_of!(C, process),
        offset_of!(C, command_line),
        offset_of!(C, image_file_name),
        offset_of!(C, account_name),
        offset_of!(C, account_domain),
        offset_of!(C, account_lookup_done),
        size_of::<S>(),
        offset_of!(S, maximum_length),
        offset_of!(S, buffer),
        ntsim::thread::PROGRAM_TYPE,
        ntsim::thread::ATTACH_TYPE,
        ntsim::image_load::PROGRAM_TYPE,
        ntsim::image_load::ATTACH_TYPE,
    )
}

#[test]
fn an_application_includes_both_headers_in_either_order_in_c_and_cpp() {
    let expected = expected_app_output();
    for (order, define) in [
        ("structs_first", None),
        ("ntos_first", Some("-DNTOS_HEADERS_FIRST")),
    ] {
        for (lang, var, default, std) in [
            ("c", "CC", "cc", ["-std=c11", "-xc"]),
            ("cpp", "CXX", "c++", ["-std=c++17", "-xc++"]),
        ] {
            let mut extra: Vec<&str> = std.to_vec();
            extra.extend(define);
            let printed = build_and_run_app(var, default, &extra, &format!("{order}_{lang}"));
            assert_eq!(printed, expected, "{lang}, {order}");
        }
    }
}

#[test]
fn a_program_in_upstream_style_runs_against_the_driver() {
    let mut sim = Sim::new();
    let status = sim
        .load_driver(&driver_image())
        .expect("the driver image loads");
    assert_eq!(status, 0, "DriverEntry failed");
    let bytes = std::fs::read(repo().join("tests/bpf/upstream_style.o"))
        .expect("tests/bpf/upstream_style.o (tests/bpf/build.sh)");
    let object =
        Object::load(&bytes, &ntsim::ebpf::store::section_map()).expect("upstream_style.o loads");
    let program = object
        .program("ProcessMonitor")
        .expect("the ProcessMonitor program");
    let program =
        LoadedProgram::load(program.clone()).expect("the process program type is provided");
    let link = program.attach(hook::ATTACH_TYPE, &[], 0).expect("attach");

    let image = "\\??\\C:\\Windows\\System32\\whoami.exe";
    let command_line = "whoami /user";
    let sid = ps::test_user_sid();
    let parent = ps::create_process(&ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\explorer.exe".into(),
        ..Default::default()
    });
    let child = ps::create_process(&ProcessSpec {
        image_file_name: image.into(),
        command_line: Some(command_line.into()),
        parent: Some(parent.pid),
        user_sid: Some(sid.clone()),
        ..Default::default()
    });
    assert_eq!(child.creation_status, 0, "the monitor permits");
    assert!(ps::exit_process(child.pid, 0, None));

    let summaries = object.map("summaries").unwrap().drain_ring();
    let summaries: Vec<_> = summaries
        .iter()
        .filter(|s| u32::from_le_bytes(s[0..4].try_into().unwrap()) == child.pid as u32)
        .collect();
    assert_eq!(summaries.len(), 2, "one summary for CREATE, one for DELETE");
    let (create, delete) = (summaries[0], summaries[1]);
    assert_eq!(create.len(), 92, "sizeof(summary_t)");
    let u32_at = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    let i32_at = |s: &[u8], at: usize| i32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    assert_eq!(u32_at(create, 4), parent.pid as u32, "parent_process_id");
    assert_eq!(create[8], 0, "PROCESS_OPERATION_CREATE");
    assert_eq!(u32_at(create, 12) as usize, sid.len(), "token_sid_size");
    assert_eq!(&create[16..16 + sid.len()], &sid[..], "token_sid");
    assert_eq!(
        i32_at(create, 84) as usize,
        utf16(image).len(),
        "image path"
    );
    assert_eq!(
        i32_at(create, 88) as usize,
        utf16("tester").len(),
        "account name"
    );
    assert_eq!(delete[8], 1, "PROCESS_OPERATION_DELETE");
    assert_eq!(u32_at(delete, 12), 0, "no SID on DELETE");

    let key = (child.pid as u32).to_le_bytes();
    let text = |map: &str| {
        let value = object
            .map(map)
            .unwrap()
            .lookup(&key)
            .expect("an entry for the child");
        let end = value
            .chunks(2)
            .position(|c| c == [0, 0])
            .unwrap_or(value.len() / 2)
            * 2;
        from_utf16(&value[..end])
    };
    assert_eq!(text("command_lines"), command_line);
    assert_eq!(text("image_paths"), image);

    drop(link);
    drop(program);
    drop(object);
    if let Err(findings) = sim.finish() {
        panic!("{findings}");
    }
}
