//! Rule violations the simulated kernel detects (IRQL misuse, bad
//! arguments, double frees...). Each is printed when it happens and kept
//! until [`crate::Sim`] checks them; any violation fails the test.

use std::sync::Mutex;

/// One detected violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Short category: "irql", "pool", "nmr", "sync", "ps", "registry", "etw"...
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.kind, self.message)
    }
}

static VIOLATIONS: Mutex<Vec<Violation>> = Mutex::new(Vec::new());

/// Records a violation (and prints it to stderr at once, so the report is
/// there even if the process dies next).
pub fn record(kind: &'static str, message: impl Into<String>) {
    let v = Violation {
        kind,
        message: message.into(),
    };
    eprintln!("ntsim: VIOLATION {v}");
    VIOLATIONS.lock().unwrap_or_else(|e| e.into_inner()).push(v);
}

/// Takes (and clears) the violations recorded so far.
pub fn take() -> Vec<Violation> {
    std::mem::take(&mut *VIOLATIONS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The violations recorded so far, without clearing them.
pub fn peek() -> Vec<Violation> {
    VIOLATIONS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub(crate) fn reset() {
    take();
}
