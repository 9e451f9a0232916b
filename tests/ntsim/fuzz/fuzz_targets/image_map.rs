//! `Image::map` (parse, map, relocate, bind imports, protect) on arbitrary
//! bytes. A mapped image is dropped at once, which unmaps it; nothing runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ntsim::loader::Image::map(data, "fuzz.sys");
});
