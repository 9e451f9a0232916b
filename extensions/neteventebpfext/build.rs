//! Link settings for the driver image: the portable flavor's lld-link
//! arguments, or the KMDF flavor's through wdk-build (feature `wdk`); shared
//! by every driver crate in `ebpf_ext_build` (libs/ebpf_ext_build).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    ebpf_ext_build::link();
}
