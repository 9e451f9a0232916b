//! Replays every committed fuzz regression input (`fuzz/regressions/TARGET/`,
//! each an input that once crashed ntsim) through the same API its fuzz
//! target calls: each must now be refused with an error, not crash.

use ntsim::ebpf::object::{Object, SectionMap};
use ntsim::types::GUID;
use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("a directory entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_committed_crash_input_is_refused_with_an_error() {
    let mut replayed = 0;
    for (path, bytes) in inputs("object_load") {
        // The fuzz target's section map, plus the test objects' sections,
        // so an input fails on what it breaks, not on an unknown section.
        let mut sections = SectionMap::new();
        sections.add("process", GUID::default(), GUID::default());
        sections.add("sample", GUID::default(), GUID::default());
        let e = Object::load(&bytes, &sections).expect_err(&path);
        assert!(
            !matches!(e, ntsim::ebpf::ObjectError::UnknownSection { .. }),
            "{path}: refused only for its section name: {e}"
        );
        println!("{path}: {e}");
        replayed += 1;
    }
    for (path, bytes) in inputs("btf") {
        let e = ntsim::ebpf::btf::map_defs(&bytes).expect_err(&path);
        println!("{path}: {e}");
        replayed += 1;
    }
    for (path, bytes) in inputs("image_map") {
        let e = ntsim::loader::Image::map(&bytes, "fuzz.sys")
            .err()
            .unwrap_or_else(|| panic!("{path} maps"));
        println!("{path}: {e}");
        replayed += 1;
    }
    for (path, bytes) in inputs("scenario") {
        let text = String::from_utf8_lossy(&bytes);
        let e = ntsim::scenario::parse(&text).expect_err(&path);
        println!("{path}: {e}");
        replayed += 1;
    }
    // The two crashes fuzzing first found (object_load) and the two BTF
    // ones, at least: an empty or moved directory must not pass silently.
    assert!(replayed >= 4, "only {replayed} regression inputs found");
}
