//! `ntsim test`: test files for eBPF programs. A test file is a scenario
//! ([`crate::cli::scenario`]) with the object to load, the programs to
//! attach, the types of ring-buffer records, and `expect` lines
//! ([`crate::cli::expect`]):
//!
//! ```text
//! # process_records.ntsim
//! object ../../../bpf/process_records.o      # relative to this file
//! attach deny_foreign_creator record         # in this order
//! ringbuf process_events struct process_event
//!
//! create broker image=C:\broker.exe pid=0x1000 tid=0x1004
//! create app image=C:\app.exe parent=broker
//! create odd image=C:\odd.exe parent=4 creator=broker
//!
//! expect verdict create:app permitted
//! expect verdict create:odd denied STATUS_ACCESS_DENIED
//! expect record process_events@create:app[0].creator.pid = 0x1000
//! expect map children_by_parent[0x1000].created = 1
//! ```
//!
//! Directives (anywhere in the file, one a line): `object PATH`
//! (required), `attach NAME...` (required, may repeat), `ringbuf MAP
//! TYPE`, `fail API[:N]`, `driver PATH` (a driver image; several lines
//! load several drivers, in order; the command's `--driver` and
//! `--driver-name` win, and the lines win over the scenario's `load-driver`
//! lines: [`crate::cli::drivers`]). Every other line is a scenario line, among them the
//! driver load step `driver path=PATH base=... size=...` (a `driver` line
//! whose first word has a `=`). Paths are relative to the test file's
//! folder.
//!
//! A test passes when every expectation holds and the run ends with no
//! leak or violation. Failures print `FILE:LINE: expect ...`, then the
//! expected and the actual value; `--junit FILE` writes a JUnit XML report
//! (one test case per expectation, plus one for the run itself).

use super::demo::{run_scenario, Setup};
use super::drivers::{self, DriverSpec};
use super::expect::{self, Expectation, Failure, RunFacts};
use super::report::Collect;
use super::scenario;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A parsed test file.
#[derive(Clone, Debug)]
pub struct TestFile {
    pub path: PathBuf,
    /// The `driver PATH` lines, in order.
    pub drivers: Vec<PathBuf>,
    pub object: PathBuf,
    pub programs: Vec<String>,
    /// `params NAME HEX` lines: (program, attach parameters).
    pub attach_params: Vec<(String, Vec<u8>)>,
    pub ringbuf: Vec<(String, String)>,
    pub faults: Vec<(String, u64)>,
    pub scenario: scenario::Scenario,
    pub expectations: Vec<Expectation>,
}

/// A parse error with its place.
fn at(path: &Path, line: usize, message: impl std::fmt::Display) -> String {
    format!("{}:{line}: {message}", path.display())
}

impl TestFile {
    /// Reads and parses a test file.
    pub fn load(path: &Path) -> Result<TestFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the test file {}: {e}", path.display()))?;
        TestFile::parse(path, &text)
    }

    /// Parses the text of a test file found at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<TestFile, String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut drivers = Vec::new();
        let mut object = None;
        let mut programs = Vec::new();
        let mut attach_params = Vec::new();
        let mut ringbuf = Vec::new();
        let mut faults = Vec::new();
        // The scenario sees directive lines as blank ones, so its line
        // numbers are the file's.
        let mut scenario_text = String::new();
        let mut expect_lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            let (keyword, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            let rest = rest.trim();
            // `driver path=PATH base=... size=...` is the scenario's driver
            // load step; `driver PATH` (no `=` in its first word) is the
            // directive naming the driver image.
            let keyword = match keyword {
                "driver"
                    if rest
                        .split_whitespace()
                        .next()
                        .is_some_and(|w| w.contains('=')) =>
                {
                    "driver-load step"
                }
                k => k,
            };
            match keyword {
                "object" | "driver" => {
                    if rest.is_empty() {
                        return Err(at(path, line, format!("{keyword}: a path is missing")));
                    }
                    let p = dir.join(rest);
                    if keyword == "driver" {
                        if drivers.contains(&p) {
                            return Err(at(path, line, format!("driver {rest} given twice")));
                        }
                        drivers.push(p);
                    } else if object.replace(p).is_some() {
                        return Err(at(path, line, format!("{keyword} given twice")));
                    }
                }
                "attach" => {
                    if rest.is_empty() {
                        return Err(at(path, line, "attach: name the programs, in order"));
                    }
                    programs.extend(rest.split_whitespace().map(str::to_string));
                }
                "params" => {
                    let Some((name, hex)) = rest.split_once(char::is_whitespace) else {
                        return Err(at(path, line, "params: write `params PROGRAM HEX`"));
                    };
                    let bytes = crate::cli::scenario::parse_hex("params", hex.trim())
                        .map_err(|e| at(path, line, e))?;
                    attach_params.push((name.to_string(), bytes));
                }
                "ringbuf" => {
                    let Some((map, ty)) = rest.split_once(char::is_whitespace) else {
                        return Err(at(path, line, "ringbuf: write `ringbuf MAP TYPE`"));
                    };
                    ringbuf.push((map.to_string(), ty.trim().to_string()));
                }
                "fail" => {
                    let (api, n) = match rest.split_once(':') {
                        Some((api, n)) => (api, n.parse::<u64>().ok().filter(|n| *n >= 1)),
                        None => (rest, Some(1)),
                    };
                    let n = n.ok_or_else(|| {
                        at(
                            path,
                            line,
                            format!("fail {rest}: N must be a call number (1 or more)"),
                        )
                    })?;
                    if api.is_empty() {
                        return Err(at(path, line, "fail: an API name is missing"));
                    }
                    faults.push((api.to_string(), n));
                }
                "expect" => expect_lines.push((line, rest.to_string())),
                _ => {
                    scenario_text.push_str(raw);
                    scenario_text.push('\n');
                    continue;
                }
            }
            scenario_text.push('\n');
        }
        let scenario = scenario::parse(&scenario_text).map_err(|e| at(path, e.line, e.message))?;
        let object = object.ok_or_else(|| {
            format!(
                "{}: no `object PATH` line (the eBPF object to load)",
                path.display()
            )
        })?;
        if programs.is_empty() {
            return Err(format!(
                "{}: no `attach NAME...` line (the programs to attach, in order)",
                path.display()
            ));
        }
        let mut expectations = Vec::new();
        for (line, text) in expect_lines {
            let step_line = |keyword: &str, name: &str| {
                scenario
                    .steps
                    .iter()
                    .filter(|s| s.line() < line && s.keyword() == keyword && s.name() == name)
                    .map(|s| s.line())
                    .next_back()
            };
            expectations.push(
                expect::parse(line, &text, &step_line)
                    .map_err(|e| at(path, line, format!("expect {text}: {e}")))?,
            );
        }
        Ok(TestFile {
            path: path.to_path_buf(),
            drivers,
            object,
            programs,
            attach_params,
            ringbuf,
            faults,
            scenario,
            expectations,
        })
    }
}

/// The outcome of one expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub line: usize,
    pub text: String,
    pub failure: Option<Failure>,
}

/// The outcome of one test file.
#[derive(Clone, Debug)]
pub struct FileResult {
    pub path: PathBuf,
    /// The file could not be parsed or run, or the run had findings.
    pub error: Option<String>,
    pub checked: Vec<Checked>,
}

impl FileResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checked.iter().all(|c| c.failure.is_none())
    }
}

/// Runs one test file with `drivers` (the command's; when empty, the
/// file's `driver` lines, else its scenario's `load-driver` lines, else
/// ntosebpfext: [`crate::cli::drivers`]).
pub fn run_file(path: &Path, drivers: &[DriverSpec]) -> FileResult {
    let mut result = FileResult {
        path: path.to_path_buf(),
        error: None,
        checked: Vec::new(),
    };
    let file = match TestFile::load(path) {
        Ok(f) => f,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    let drivers = match drivers::resolve(drivers, &file.drivers, &file.scenario.drivers) {
        Ok(d) => d,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    let setup = Setup {
        drivers: &drivers,
        object: &file.object,
        programs: &file.programs,
        attach_params: &file.attach_params,
        faults: &file.faults,
        ringbuf: &file.ringbuf,
        etw: false,
    };
    let mut events = Collect::default();
    let (end, decoder) = match run_scenario(&setup, &file.scenario, &mut events) {
        Ok(done) => done,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };
    let facts = RunFacts::new(&events.0);
    for e in &file.expectations {
        result.checked.push(Checked {
            line: e.line,
            text: e.text.clone(),
            failure: e.check(&facts, &decoder).err(),
        });
    }
    if !end.findings.is_empty() {
        result.error = Some(format!(
            "the run left {} finding(s) (leaks or violations):\n{}",
            end.findings.len(),
            end.findings.join("\n")
        ));
    }
    result
}

/// Prints a file's result: `ok`, or each failure with its place.
pub fn print_result(out: &mut dyn Write, r: &FileResult) -> std::io::Result<()> {
    let failed = r.checked.iter().filter(|c| c.failure.is_some()).count();
    if r.passed() {
        return writeln!(
            out,
            "test {} ... ok ({} expectation(s))",
            r.path.display(),
            r.checked.len()
        );
    }
    writeln!(out, "test {} ... FAILED", r.path.display())?;
    for c in &r.checked {
        if let Some(f) = &c.failure {
            writeln!(out, "{}:{}: expect {}", r.path.display(), c.line, c.text)?;
            writeln!(out, "    expected: {}", f.expected)?;
            writeln!(out, "    actual:   {}", f.actual)?;
        }
    }
    if let Some(e) = &r.error {
        for l in e.lines() {
            writeln!(out, "    {l}")?;
        }
    }
    if failed > 0 {
        writeln!(
            out,
            "    {failed} of {} expectation(s) failed",
            r.checked.len()
        )?;
    }
    Ok(())
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows tab, newline, carriage return among controls.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A JUnit XML report: one `testsuite` per file, one `testcase` per
/// expectation (named `line N: expect ...`) and one named `run` for the
/// run itself (an `error` when it could not run or left findings).
pub fn junit(results: &[FileResult]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = results.iter().map(|r| r.checked.len() + 1).sum();
    let failures: usize = results
        .iter()
        .map(|r| r.checked.iter().filter(|c| c.failure.is_some()).count())
        .sum();
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    s.push_str(&format!(
        "<testsuites name=\"ntsim\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\">\n"
    ));
    for r in results {
        let name = xml(&r.path.display().to_string());
        let f = r.checked.iter().filter(|c| c.failure.is_some()).count();
        s.push_str(&format!(
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{f}\" errors=\"{}\">\n",
            r.checked.len() + 1,
            usize::from(r.error.is_some())
        ));
        match &r.error {
            None => s.push_str(&format!("    <testcase classname=\"{name}\" name=\"run\"/>\n")),
            Some(e) => s.push_str(&format!(
                "    <testcase classname=\"{name}\" name=\"run\">\n      <error message=\"{}\">{}</error>\n    </testcase>\n",
                xml(e.lines().next().unwrap_or("")),
                xml(e)
            )),
        }
        for c in &r.checked {
            let case = xml(&format!("line {}: expect {}", c.line, c.text));
            match &c.failure {
                None => s.push_str(&format!(
                    "    <testcase classname=\"{name}\" name=\"{case}\"/>\n"
                )),
                Some(fail) => {
                    let message = format!(
                        "{}:{}: expected {}, actual {}",
                        r.path.display(),
                        c.line,
                        fail.expected,
                        fail.actual
                    );
                    s.push_str(&format!(
                        "    <testcase classname=\"{name}\" name=\"{case}\">\n      <failure message=\"{}\">expected: {}\nactual:   {}</failure>\n    </testcase>\n",
                        xml(&message),
                        xml(&fail.expected),
                        xml(&fail.actual)
                    ));
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

/// `ntsim test [--driver PATH | --driver-name NAME ...] [--junit FILE]
/// FILE...`: runs every file, prints each result and a summary; Ok(true)
/// when all passed.
pub fn run_files(
    files: &[PathBuf],
    drivers: &[DriverSpec],
    junit_path: Option<&Path>,
    out: &mut dyn Write,
) -> Result<bool, String> {
    let mut results = Vec::new();
    for f in files {
        let r = run_file(f, drivers);
        print_result(out, &r).map_err(|e| format!("cannot write the output: {e}"))?;
        results.push(r);
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    writeln!(
        out,
        "{} test file(s): {passed} passed, {} failed",
        results.len(),
        results.len() - passed
    )
    .map_err(|e| format!("cannot write the output: {e}"))?;
    if let Some(p) = junit_path {
        std::fs::write(p, junit(&results))
            .map_err(|e| format!("cannot write the JUnit report {}: {e}", p.display()))?;
    }
    Ok(passed == results.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_lines_name_several_drivers_in_order() {
        let path = Path::new("/t/dir/a.ntsim");
        let f = TestFile::parse(
            path,
            "object x.o\nattach p\ndriver ../a.sys\ndriver b.sys\nload-driver ntosebpfext\n\
             driver path=\\x.sys base=0x1000 size=0x1000\n",
        )
        .unwrap();
        assert_eq!(
            f.drivers,
            [
                PathBuf::from("/t/dir/../a.sys"),
                PathBuf::from("/t/dir/b.sys")
            ]
        );
        assert_eq!(f.scenario.drivers, ["ntosebpfext"]);
        assert_eq!(f.scenario.steps.len(), 1, "the driver-load step");
        let e = TestFile::parse(path, "object x.o\nattach p\ndriver a.sys\ndriver a.sys\n")
            .unwrap_err();
        assert!(e.contains("a.ntsim:4: driver a.sys given twice"), "{e}");
    }

    #[test]
    fn directives_and_scenario_lines_share_the_file() {
        let path = Path::new("/t/dir/a.ntsim");
        let f = TestFile::parse(
            path,
            "# a test\nobject ../x.o\nattach p q\nattach r\nringbuf ev struct e\nfail ExAllocatePool2:3\n\
             create a image=C:\\a.exe\nexpect verdict create:a permitted\nexit a\n",
        )
        .unwrap();
        assert_eq!(f.object, Path::new("/t/dir/../x.o"));
        assert_eq!(f.programs, ["p", "q", "r"]);
        assert_eq!(f.ringbuf, [("ev".to_string(), "struct e".to_string())]);
        assert_eq!(f.faults, [("ExAllocatePool2".to_string(), 3)]);
        assert_eq!(f.scenario.steps[0].line(), 7, "the file's line numbers");
        assert_eq!(f.scenario.steps[1].line(), 9);
        assert_eq!(f.expectations[0].line, 8);
        for (text, needle) in [
            ("attach p\ncreate a image=x\n", "no `object PATH`"),
            ("object x.o\n", "no `attach"),
            (
                "object x.o\nattach p\nexpect verdict create:a permitted\ncreate a image=x\n",
                "a.ntsim:3: expect verdict create:a permitted: create:a: no `create a` step above",
            ),
            (
                "object x.o\nattach p\ncreate a\n",
                "a.ntsim:3: create: image= is required",
            ),
            ("object x.o\nobject y.o\n", "a.ntsim:2: object given twice"),
            (
                "object x.o\nattach p\nfail X:0\n",
                "N must be a call number",
            ),
            ("object x.o\nattach p\nringbuf ev\n", "ringbuf MAP TYPE"),
        ] {
            let e = TestFile::parse(path, text).expect_err(text);
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn junit_reports_failures_and_errors_escaped() {
        let results = [
            FileResult {
                path: "a<b>.ntsim".into(),
                error: None,
                checked: vec![
                    Checked {
                        line: 3,
                        text: "record ev[0].name = \"x&y\"".into(),
                        failure: Some(Failure {
                            expected: "= \"x&y\"".into(),
                            actual: "\"z\"".into(),
                        }),
                    },
                    Checked {
                        line: 4,
                        text: "records ev = 1".into(),
                        failure: None,
                    },
                ],
            },
            FileResult {
                path: "b.ntsim".into(),
                error: Some("cannot load\u{1}".into()),
                checked: vec![],
            },
        ];
        let x = junit(&results);
        assert!(
            x.contains("<testsuites name=\"ntsim\" tests=\"4\" failures=\"1\" errors=\"1\">"),
            "{x}"
        );
        assert!(
            x.contains("name=\"line 3: expect record ev[0].name = &quot;x&amp;y&quot;\""),
            "{x}"
        );
        assert!(x.contains("<failure message=\"a&lt;b&gt;.ntsim:3: expected = &quot;x&amp;y&quot;, actual &quot;z&quot;\">"), "{x}");
        assert!(x.contains("<error message=\"cannot load\\u{1}\">"), "{x}");
        assert!(!results[0].passed() && !results[1].passed());
    }
}
