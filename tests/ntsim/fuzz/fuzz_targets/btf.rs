//! The BTF reader (map definitions from a `.BTF` section) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ntsim::ebpf::btf::map_defs(data);
});
