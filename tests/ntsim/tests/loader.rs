//! The PE loader on the real driver image: import resolution, refusal of
//! what Windows would not load, section protections, and an unloaded image
//! that faults when called.

use ntsim::build::driver_image;
use ntsim::child;
use ntsim::crash::FATAL_EXIT_STATUS;
use ntsim::loader::{Image, LoadError};
use ntsim::Sim;

const PE_SIGNATURE_OFFSET_FIELD: usize = 0x3c;

fn image_bytes() -> Vec<u8> {
    std::fs::read(driver_image()).unwrap()
}

/// Replaces the first occurrence of `from` (same length as `to`).
fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} not in the image", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
}

fn optional_header(bytes: &[u8]) -> usize {
    let pe = u32::from_le_bytes(
        bytes[PE_SIGNATURE_OFFSET_FIELD..PE_SIGNATURE_OFFSET_FIELD + 4]
            .try_into()
            .unwrap(),
    );
    pe as usize + 4 + 20
}

#[test]
fn the_real_image_maps_with_every_import_resolved() {
    let _sim = Sim::new();
    let image = Image::map(&image_bytes(), "ntosebpfext.sys").expect("maps");
    assert!(image.flags().force_integrity);
    let text = image
        .sections()
        .iter()
        .find(|s| s.name == ".text")
        .expect(".text");
    assert!(text.size > 0);
}

#[test]
fn an_unknown_import_fails_the_load_naming_module_and_symbol() {
    let mut bytes = image_bytes();
    patch(&mut bytes, b"KeBugCheckEx\0", b"KeBugCheckEy\0");
    patch(&mut bytes, b"RtlCopySid\0", b"RtlCopySix\0");
    match Image::map(&bytes, "bad.sys") {
        Err(LoadError::UnresolvedImports(missing)) => {
            assert!(
                missing.contains(&"ntoskrnl.exe!KeBugCheckEy".to_string()),
                "{missing:?}"
            );
            assert!(
                missing.contains(&"ntoskrnl.exe!RtlCopySix".to_string()),
                "{missing:?}"
            );
            assert_eq!(missing.len(), 2);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an image with unknown imports loaded"),
    }
    let message = Image::map(&bytes, "bad.sys").err().unwrap().to_string();
    assert!(message.contains("ntoskrnl.exe!KeBugCheckEy"), "{message}");
}

#[test]
fn images_windows_would_not_load_as_drivers_are_refused() {
    let bytes = image_bytes();
    let opt = optional_header(&bytes);
    // Subsystem WINDOWS_GUI (2) instead of NATIVE.
    let mut gui = bytes.clone();
    gui[opt + 68..opt + 70].copy_from_slice(&2u16.to_le_bytes());
    assert!(
        matches!(Image::map(&gui, "gui.sys"), Err(LoadError::Unsupported(m)) if m.contains("subsystem"))
    );
    // An i386 machine type.
    let mut x86 = bytes.clone();
    let coff = opt - 20;
    x86[coff..coff + 2].copy_from_slice(&0x14cu16.to_le_bytes());
    assert!(Image::map(&x86, "x86.sys").is_err());
    assert!(matches!(
        Image::map(b"MZ not a PE", "junk.sys"),
        Err(LoadError::Parse(_))
    ));
}

#[test]
fn code_is_not_writable() {
    const NAME: &str = "code_is_not_writable";
    if child::is_child(NAME) {
        let _sim = Sim::new();
        let image = Image::map(&image_bytes(), "ntosebpfext.sys").unwrap();
        let entry = image.entry_point() as *mut u8;
        // SAFETY: deliberately writes into the read-only code section: the
        // write must fault.
        unsafe { entry.write_volatile(0xCC) };
        println!("WROTE INTO CODE");
        return;
    }
    let out = child::run_test_in_child(NAME);
    assert!(!out.stdout.contains("WROTE INTO CODE"), "code was writable");
    assert_eq!(out.status.code(), Some(FATAL_EXIT_STATUS), "{out:?}");
    assert!(
        out.stderr.contains("ntosebpfext.sys+0x"),
        "the report names the image: {}",
        out.stderr
    );
}

#[test]
fn a_call_into_an_unloaded_driver_faults_and_is_reported() {
    const NAME: &str = "a_call_into_an_unloaded_driver_faults_and_is_reported";
    if child::is_child(NAME) {
        let mut sim = Sim::new();
        assert_eq!(sim.load_driver(&driver_image()).unwrap(), 0);
        let entry = sim.driver().unwrap().image().entry_point();
        sim.unload_driver().unwrap();
        // SAFETY: deliberately calls DriverEntry of the unloaded image: the
        // call must fault before running anything.
        let f: extern "win64" fn(usize, usize) -> i32 = unsafe { std::mem::transmute(entry) };
        let status = f(0, 0);
        println!("LATE CALL RETURNED {status}");
        return;
    }
    let out = child::run_test_in_child(NAME);
    assert!(!out.stdout.contains("LATE CALL RETURNED"));
    assert_eq!(out.status.code(), Some(FATAL_EXIT_STATUS), "{out:?}");
    assert!(
        out.stderr.contains("image UNLOADED"),
        "the report says the image is unloaded: {}",
        out.stderr
    );
}
