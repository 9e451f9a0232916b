//! Image loads as Windows raises them: an image mapped into a process (an
//! executable or a DLL; Sysmon event 7) and a driver mapped into system
//! space (Sysmon event 6). Both call [`super::load_image`], which calls the
//! load-image notify routines with the full name, the process id (0 for a
//! driver) and an `IMAGE_INFO`:
//!
//! - a user image: SystemModeImage clear, ExtendedInfoPresent set (Windows passes an
//!   IMAGE_INFO_EX to every routine since Windows Vista), signature level
//!   and type as given; routines run in the context of a thread of the
//!   process;
//! - a driver: SystemModeImage set, process id 0, in the context of a System
//!   thread (Windows loads drivers on a system thread).
//!
//! Windows calls load-image routines at PASSIVE_LEVEL inside a critical
//! region (normal kernel APCs disabled); both functions here do the same
//! (`KeEnterCriticalRegion` around the call). ntsim does not model the
//! special-APC disabling Windows sometimes adds.

use super::events::{load_image, ImageInfoSpec};
use super::{enter_context, SYSTEM_PID};

/// An image load ([`load_user_image`], [`load_driver`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// The full image name (`\Device\HarddiskVolume3\Windows\System32\x.dll`).
    pub path: String,
    /// Where it is mapped.
    pub base: usize,
    /// Its size in bytes.
    pub size: usize,
    /// `ImageSignatureLevel` (4 bits).
    pub signature_level: u8,
    /// `ImageSignatureType` (3 bits).
    pub signature_type: u8,
    /// `ImageMappedToAllPids`.
    pub mapped_to_all_pids: bool,
    /// `ImagePartialMap`.
    pub partial_map: bool,
}

fn info(spec: &ImageSpec, system: bool) -> ImageInfoSpec {
    assert!(
        spec.signature_level <= 0xF,
        "ImageSignatureLevel has 4 bits"
    );
    assert!(spec.signature_type <= 0x7, "ImageSignatureType has 3 bits");
    ImageInfoSpec {
        image_base: spec.base,
        image_size: spec.size,
        system_mode_image: system,
        mapped_to_all_pids: spec.mapped_to_all_pids,
        signature_level: spec.signature_level,
        signature_type: spec.signature_type,
        partial_map: spec.partial_map,
        extended_info: true,
        ..Default::default()
    }
}

/// Maps `spec` into live process `pid` and calls the load-image routines in
/// the context of the process's most recent thread. Panics if `pid` is not
/// live.
pub fn load_user_image(pid: usize, spec: &ImageSpec) {
    in_critical_region(|| load_image(pid, Some(&spec.path), &info(spec, false)));
}

fn in_critical_region(f: impl FnOnce()) {
    crate::kernel::sync::KeEnterCriticalRegion();
    f();
    crate::kernel::sync::KeLeaveCriticalRegion();
}

/// Loads driver `spec` into system space and calls the load-image routines
/// (process id 0) in the context of a System thread.
pub fn load_driver(spec: &ImageSpec) {
    let tid = super::some_thread_of(SYSTEM_PID);
    let _ctx = enter_context(SYSTEM_PID, tid);
    in_critical_region(|| load_image(0, Some(&spec.path), &info(spec, true)));
}
