//! What the end-to-end test files share (each includes this file as a
//! module): a simulated machine with one driver image loaded and one eBPF
//! object whose sections resolve through the store that driver wrote.

use ntsim::ebpf::core::LoadedProgram;
use ntsim::ebpf::{store, Object};
use ntsim::Sim;
use std::path::Path;

/// A machine running a driver, and the object a test loads programs from.
pub struct Env {
    pub sim: Sim,
    pub object: Object,
}

impl Env {
    /// Loads `image` (its DriverEntry must succeed), then `object`, a
    /// path relative to the workspace root (`tests/bpf/NAME.o`).
    pub fn start(image: &Path, object: &str) -> Env {
        let mut sim = Sim::new();
        let status = sim.load_driver(image).expect("the driver image loads");
        assert_eq!(status, 0, "DriverEntry failed");
        let path = ntsim::build::workspace_root().join(object);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{object} (tests/bpf/build.sh): {e}"));
        // The sections resolve through the store the driver just wrote.
        let object = Object::load(&bytes, &store::section_map())
            .unwrap_or_else(|e| panic!("{object} loads: {e}"));
        Env { sim, object }
    }

    /// The object's program `name`, loaded into the eBPF core (its program
    /// type must be provided by the driver).
    pub fn load(&self, name: &str) -> LoadedProgram {
        let program = self
            .object
            .program(name)
            .unwrap_or_else(|| panic!("no program {name}"));
        LoadedProgram::load(program.clone()).expect("the program type is provided")
    }

    /// Ends the test: the object goes, then the machine, which must have
    /// nothing left behind and no violation.
    pub fn finish(self) {
        let Env { sim, object } = self;
        drop(object);
        if let Err(findings) = sim.finish() {
            panic!("{findings}");
        }
    }
}
