//! Running a test that must crash in a child process.
//!
//! A test whose point is that something faults (a special-pool overrun, a
//! use after free) cannot fault in the test process itself. It calls
//! [`run_test_in_child`] with its own full path; the child is the same test
//! binary running only that test, with [`ENV_VAR`] set, in which
//! [`is_child`] is true and the test does the crashing part:
//!
//! ```text
//! #[test]
//! fn overrun_faults() {
//!     const NAME: &str = "kernel::pool::tests::overrun_faults";
//!     if child::is_child(NAME) {
//!         // ... fault here
//!     }
//!     let out = child::run_test_in_child(NAME);
//!     assert_eq!(out.status.code(), Some(crash::FATAL_EXIT_STATUS));
//!     assert!(out.stderr.contains("..."));
//! }
//! ```

use std::process::{Command, ExitStatus};

/// Environment variable naming the test the child process must crash in.
pub const ENV_VAR: &str = "NTSIM_CHILD";

/// How the child ended and what it printed.
#[derive(Debug)]
pub struct ChildOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// True in the child process started for `test_path`.
pub fn is_child(test_path: &str) -> bool {
    std::env::var(ENV_VAR).is_ok_and(|v| v == test_path)
}

/// Runs the test `test_path` (its full path in the test binary, e.g.
/// `pool::tests::overrun_faults`) alone in a child process of the current
/// test binary and waits for it. Panics if the child could not be started or
/// did not run exactly that test (a wrong path would otherwise look like a
/// passing child).
pub fn run_test_in_child(test_path: &str) -> ChildOutcome {
    let exe = std::env::current_exe().expect("path of the current test binary");
    let out = Command::new(&exe)
        .args([test_path, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_VAR, test_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let outcome = ChildOutcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        outcome.stdout.contains("running 1 test"),
        "the child did not run the test {test_path:?} (wrong path?): {outcome:?}"
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_runs_only_the_named_test_and_reports_its_exit() {
        const NAME: &str = "child::tests::child_runs_only_the_named_test_and_reports_its_exit";
        if is_child(NAME) {
            println!("child stdout marker");
            eprintln!("child stderr marker");
            std::process::exit(42);
        }
        assert!(!is_child("some::other::test"));
        let out = run_test_in_child(NAME);
        assert_eq!(out.status.code(), Some(42), "{out:?}");
        assert!(out.stdout.contains("child stdout marker"));
        assert!(out.stderr.contains("child stderr marker"));
    }
}
