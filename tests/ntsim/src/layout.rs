//! Guards the layout described in the crate docs and docs/ntsim.md: reads
//! every source file of `src/`, collects which top-level folder (or
//! top-level file) each one names through `crate::` (or a `super::` chain
//! that reaches the crate root), and checks that every such dependency is
//! one of the allowed ones below, that the dependencies form no cycle, and
//! that no kernel service depends on the export table that collects it.
//! Test code is not scanned (`#[cfg(test)]` modules, `tests.rs` files and
//! files under a `tests/` folder): a test may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each part of the crate and what it may import, lowest layer first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("kernel", &[]),
    ("ebpf", &["kernel"]),
    ("build", &[]),
    ("hook", &["kernel", "ebpf", "build"]),
    ("child", &[]),
    ("sim", &["kernel"]),
    ("cli", &["kernel", "ebpf", "build", "hook", "sim"]),
];

/// Files of `kernel/` that may use the export table: the table itself and
/// the loader, which binds imports to it.
const TABLE_USERS: &[&str] = &["kernel/exports.rs", "kernel/loader.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/ entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comment lines and without `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            let next = lines.get(i + 1).map_or("", |l| l.trim_start());
            if next.starts_with("mod ") && next.ends_with('{') {
                let indent = &line[..line.len() - t.len()];
                let end = format!("{indent}}}");
                i += 2;
                while i < lines.len() && lines[i] != end {
                    i += 1;
                }
                i += 1;
                continue;
            }
        }
        if !t.starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
        i += 1;
    }
    out
}

/// The first name of every path that starts at the crate root.
fn root_names(code: &str, depth: usize) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let prefix_len = if rest.starts_with("crate::") {
            "crate::".len()
        } else if rest.starts_with("super::") && (i == 0 || !is_ident(bytes[i - 1])) {
            let mut n = 0;
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                n += 1;
                len += "super::".len();
            }
            if n < depth {
                i += len;
                continue;
            }
            len
        } else {
            i += 1;
            continue;
        };
        i += prefix_len;
        if code[i..].starts_with('{') {
            let mut level = 0;
            let mut item_start = true;
            for (k, c) in code[i..].char_indices() {
                match c {
                    '{' => {
                        level += 1;
                        item_start = level == 1;
                    }
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            i += k;
                            break;
                        }
                    }
                    ',' if level == 1 => item_start = true,
                    c if item_start && level == 1 && is_ident(c as u8) => {
                        let name: String = code[i + k..]
                            .chars()
                            .take_while(|&c| is_ident(c as u8))
                            .collect();
                        names.push(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = code[i..]
                .chars()
                .take_while(|&c| is_ident(c as u8))
                .collect();
            names.push(name);
        }
    }
    names
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The part of the crate a root name belongs to.
fn part_of(name: &str) -> Option<&'static str> {
    match name {
        "Sim" => Some("sim"),
        _ => ALLOWED.iter().map(|(p, _)| *p).find(|p| *p == name),
    }
}

fn find_cycle(edges: &BTreeMap<&str, BTreeSet<&str>>) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| *s == n) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| s.to_string()).collect();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn folders_import_only_lower_layers_and_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut scanned = 0;
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        let rel_str = rel.to_string_lossy().replace('\\', "/");
        let parts: Vec<&str> = rel_str.split('/').collect();
        let stem = parts[parts.len() - 1].trim_end_matches(".rs");
        // The crate root, the command and other binaries (`bin/`, which
        // use the library through `ntsim::`, like `main.rs`), this file.
        if (parts.len() == 1 && ["lib", "main", "layout"].contains(&stem)) || parts[0] == "bin" {
            continue;
        }
        if stem == "tests" || parts.contains(&"tests") {
            continue;
        }
        let own = parts[0].trim_end_matches(".rs");
        let Some(own) = part_of(own) else {
            wrong.push(format!(
                "{rel_str}: `{own}` is not in the layout (add it to ALLOWED)"
            ));
            continue;
        };
        // Module depth: kernel/mod.rs is 1, kernel/pool.rs and
        // kernel/ps/mod.rs are 2, kernel/ps/sid.rs is 3.
        let depth = parts.len() - usize::from(stem == "mod");
        let text = fs::read_to_string(path).expect("read source file");
        let code = code_of(&text);
        scanned += 1;
        for name in root_names(&code, depth) {
            let Some(to) = part_of(&name) else {
                wrong.push(format!(
                    "{rel_str}: `crate::{name}` names no folder; write the full path \
                     (e.g. `crate::kernel::{name}`)"
                ));
                continue;
            };
            if to == own {
                continue;
            }
            let allowed = ALLOWED.iter().find(|(p, _)| *p == own).unwrap().1;
            if !allowed.contains(&to) {
                wrong.push(format!("{rel_str}: {own}/ must not import from {to}"));
            }
            edges.entry(own).or_default().insert(to);
        }
        if own == "kernel"
            && !TABLE_USERS.contains(&rel_str.as_str())
            && code.contains("kernel::exports")
        {
            wrong.push(format!(
                "{rel_str}: a kernel service must not depend on the export table \
                 (kernel/exports.rs); use kernel::export::Export"
            ));
        }
    }
    assert!(
        scanned > 30,
        "only {scanned} source files scanned under {src:?}"
    );
    assert!(wrong.is_empty(), "layout broken:\n{}", wrong.join("\n"));
    assert_eq!(find_cycle(&edges), None, "import cycle between folders");
    // The scan sees the dependencies it must: the folders really are used.
    for (from, to) in [("ebpf", "kernel"), ("cli", "hook"), ("sim", "kernel")] {
        assert!(
            edges[from].contains(to),
            "no {from} -> {to} seen: {edges:?}"
        );
    }
}

#[test]
fn the_scanner_reads_groups_super_chains_and_skips_tests() {
    let code = code_of(
        "use crate::kernel::pool;\n\
         use crate::{\n    ebpf::Map,\n    hook::{self, process},\n    Sim,\n};\n\
         // use crate::cli;\n\
         use super::super::build;\n\
         #[cfg(test)]\nmod tests {\n    use crate::child;\n}\n",
    );
    assert_eq!(
        root_names(&code, 2),
        ["kernel", "ebpf", "hook", "Sim", "build"]
    );
    assert_eq!(root_names(&code, 3), ["kernel", "ebpf", "hook", "Sim"]);
    let mut edges = BTreeMap::new();
    edges.insert("a", BTreeSet::from(["b"]));
    edges.insert("b", BTreeSet::from(["a"]));
    assert!(find_cycle(&edges).is_some());
    edges.insert("b", BTreeSet::new());
    assert_eq!(find_cycle(&edges), None);
}
