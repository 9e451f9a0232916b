//! `Object::load` on arbitrary bytes: an error is fine, a panic or an abort is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntsim::ebpf::object::{Object, SectionMap};
use ntsim::types::GUID;

fuzz_target!(|data: &[u8]| {
    let mut sections = SectionMap::new();
    sections.add("process", GUID::default(), GUID::default());
    let _ = Object::load(data, &sections);
});
