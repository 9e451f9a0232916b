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
//!
//! It also bounds every wait on a process a test starts: [`output_within`]
//! for a command run to completion, [`Watched`] for a child whose output a
//! test reads as it comes. A child still running at the limit is killed and
//! the test fails saying so, instead of hanging the suite.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for a process it started: generous (a debug build
/// on a loaded two-core machine), but finite.
pub const LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion like [`Command::output`] (stdin closed, stdout
/// and stderr captured), but kills it and panics, naming the command, if it
/// has not exited within `limit`. An error starting it is returned.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            // The readers are not joined: a grandchild may still hold the
            // pipes open.
            panic!("{cmd:?} did not exit within {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().expect("the stdout reader"),
        stderr: stderr.join().expect("the stderr reader"),
    })
}

/// A started child under a watchdog: if it is still running `limit` after
/// [`Watched::new`], the watchdog kills it (which also ends its output, so
/// a test blocked reading that output wakes up) and [`Watched::wait`]
/// panics saying so.
pub struct Watched {
    child: Arc<Mutex<Child>>,
    id: u32,
    what: String,
    limit: Duration,
    cancel: mpsc::Sender<()>,
    watchdog: std::thread::JoinHandle<bool>,
}

impl Watched {
    /// Watches `child` (described as `what` in the failure message). Take
    /// its pipes before handing it over.
    pub fn new(child: Child, what: impl Into<String>, limit: Duration) -> Self {
        let id = child.id();
        let child = Arc::new(Mutex::new(child));
        let (cancel, cancelled) = mpsc::channel::<()>();
        let watched = Arc::clone(&child);
        let watchdog = std::thread::spawn(move || match cancelled.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // `Child::kill` does nothing once the child has been reaped,
                // so this never signals a reused process id.
                let _ = watched.lock().unwrap_or_else(|e| e.into_inner()).kill();
                true
            }
            _ => false,
        });
        Self {
            child,
            id,
            what: what.into(),
            limit,
            cancel,
            watchdog,
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Waits for the child to exit (at most until the watchdog kills it)
    /// and returns its status; panics if the watchdog had to kill it.
    pub fn wait(self) -> ExitStatus {
        let status = loop {
            let polled = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_wait()
                .expect("polling a child process");
            if let Some(status) = polled {
                break status;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = self.cancel.send(());
        let killed = self.watchdog.join().expect("the watchdog thread");
        assert!(
            !killed,
            "{} did not exit within {:?}: killed",
            self.what, self.limit
        );
        status
    }
}

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
/// did not run exactly that test, or ran longer than [`LIMIT`] (a wrong path would otherwise look like a
/// passing child).
pub fn run_test_in_child(test_path: &str) -> ChildOutcome {
    let exe = std::env::current_exe().expect("path of the current test binary");
    let out = output_within(
        Command::new(&exe)
            .args([test_path, "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV_VAR, test_path),
        LIMIT,
    )
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

    #[test]
    fn a_command_past_its_limit_is_killed_and_the_test_fails() {
        let start = Instant::now();
        let hung = std::panic::catch_unwind(|| {
            output_within(Command::new("sleep").arg("30"), Duration::from_millis(300))
        });
        let message = *hung
            .expect_err("a hung command fails the test")
            .downcast::<String>()
            .unwrap();
        assert!(message.contains("did not exit within"), "{message}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let out = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            LIMIT,
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn a_watched_child_past_its_limit_is_killed_and_its_output_ends() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let start = Instant::now();
        let watched = Watched::new(child, "sleep 30", Duration::from_millis(300));
        // A read blocked on the child's output wakes up when it is killed.
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap();
        let hung = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watched.wait()));
        let message = *hung.expect_err("killed").downcast::<String>().unwrap();
        assert!(
            message.contains("sleep 30 did not exit within"),
            "{message}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        let quick = Command::new("true").spawn().unwrap();
        assert!(Watched::new(quick, "true", LIMIT).wait().success());
    }
}
