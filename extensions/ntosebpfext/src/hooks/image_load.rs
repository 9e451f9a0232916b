//! The `image_load` program type and attach type (this driver's own; not
//! in ntosebpfext 0.7.0).
//!
//! Programs see an `image_load_md_t` for every image mapped: executables and
//! DLLs mapped into a process (Sysmon event 7) and drivers mapped into
//! system space (Sysmon event 6), from the load-image notify routine
//! registered with `PsSetLoadImageNotifyRoutineEx` and
//! `PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE` (so images of another machine
//! type, such as x86 DLLs under WoW64, are seen too). The full image name is
//! the context's packet. Results are ignored (a load cannot be denied from
//! this callback). No helpers.
//!
//! The layout, the `IMAGE_INFO` decoding and the test-run validation are
//! unit-tested on the host; the notify routine is in `kernel` (Windows
//! only). See docs/image-load-hook.md.

use core::mem::{offset_of, size_of};
use ebpf_ext::nt::GUID;

/// `EBPF_PROGRAM_TYPE_IMAGE_LOAD`.
pub const EBPF_PROGRAM_TYPE_IMAGE_LOAD: GUID = GUID::new(
    0xe7e70e3a,
    0xba71,
    0x489f,
    [0x9e, 0x22, 0xb3, 0x1f, 0x6f, 0x61, 0xa6, 0x23],
);
/// `EBPF_ATTACH_TYPE_IMAGE_LOAD`.
pub const EBPF_ATTACH_TYPE_IMAGE_LOAD: GUID = GUID::new(
    0x5a0c97f6,
    0xdfbb,
    0x48fc,
    [0xb5, 0xf2, 0x17, 0x0d, 0xa0, 0x35, 0x7c, 0x31],
);

/// `IMAGE_LOAD_FLAG_SYSTEM_MODE`: a kernel-mode image (a driver).
pub const IMAGE_LOAD_FLAG_SYSTEM_MODE: u32 = 0x1;
/// `IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS`: mapped into every process.
pub const IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS: u32 = 0x2;
/// `IMAGE_LOAD_FLAG_PARTIAL_MAP`: a partial view of the image.
pub const IMAGE_LOAD_FLAG_PARTIAL_MAP: u32 = 0x4;
/// `IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH`: the image's machine type is
/// not the system's.
pub const IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH: u32 = 0x8;
/// Every flag this version sets.
pub const IMAGE_LOAD_FLAGS_KNOWN: u32 = 0xF;

/// `image_load_md_t`: what programs see (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct image_load_md_t {
    /// The full image name (UTF-16LE, no NUL): the packet's start; null
    /// when the kernel gives no name.
    pub image_path_start: *mut u8,
    /// One past its last byte.
    pub image_path_end: *mut u8,
    /// The process the image is mapped into; 0 for a driver.
    pub process_id: u64,
    /// The thread that maps it (the current thread of the callout).
    pub thread_id: u64,
    /// `IMAGE_INFO.ImageBase`.
    pub image_base: u64,
    /// `IMAGE_INFO.ImageSize`.
    pub image_size: u64,
    /// `IMAGE_LOAD_FLAG_*`.
    pub flags: u32,
    /// `IMAGE_INFO.ImageSignatureLevel` (`SE_SIGNING_LEVEL_*`, 4 bits).
    pub signature_level: u8,
    /// `IMAGE_INFO.ImageSignatureType` (`SE_IMAGE_SIGNATURE_TYPE`, 3 bits).
    pub signature_type: u8,
    /// Zero.
    pub reserved: u16,
}

impl image_load_md_t {
    /// All zero, null packet.
    pub const fn zeroed() -> image_load_md_t {
        image_load_md_t {
            image_path_start: core::ptr::null_mut(),
            image_path_end: core::ptr::null_mut(),
            process_id: 0,
            thread_id: 0,
            image_base: 0,
            image_size: 0,
            flags: 0,
            signature_level: 0,
            signature_type: 0,
            reserved: 0,
        }
    }
}

const _: () = {
    assert!(size_of::<image_load_md_t>() == 56);
    assert!(offset_of!(image_load_md_t, image_path_end) == 8);
    assert!(offset_of!(image_load_md_t, process_id) == 16);
    assert!(offset_of!(image_load_md_t, thread_id) == 24);
    assert!(offset_of!(image_load_md_t, image_base) == 32);
    assert!(offset_of!(image_load_md_t, image_size) == 40);
    assert!(offset_of!(image_load_md_t, flags) == 48);
    assert!(offset_of!(image_load_md_t, signature_level) == 52);
    assert!(offset_of!(image_load_md_t, signature_type) == 53);
};

/// What the context takes from `IMAGE_INFO.Properties`: (flags,
/// signature level, signature type).
pub fn decode_properties(properties: u32) -> (u32, u8, u8) {
    let bit = |n: u32| properties >> n & 1 != 0;
    let mut flags = 0;
    if bit(8) {
        flags |= IMAGE_LOAD_FLAG_SYSTEM_MODE;
    }
    if bit(9) {
        flags |= IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS;
    }
    if bit(11) {
        flags |= IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH;
    }
    if bit(19) {
        flags |= IMAGE_LOAD_FLAG_PARTIAL_MAP;
    }
    (
        flags,
        (properties >> 12 & 0xF) as u8,
        (properties >> 16 & 0x7) as u8,
    )
}

/// Whether a test run's context and image path are ones the driver could
/// have produced: known flags, a 4-bit level, a 3-bit type, `reserved`
/// zero, a path of whole UTF-16 units.
pub fn valid_test_input(md: &image_load_md_t, path: &[u8]) -> bool {
    md.flags & !IMAGE_LOAD_FLAGS_KNOWN == 0
        && md.signature_level <= 0xF
        && md.signature_type <= 0x7
        && md.reserved == 0
        && path.len().is_multiple_of(2)
        && path.len() <= u16::MAX as usize
}

#[cfg(windows)]
mod kernel {
    use super::*;
    use alloc::vec::Vec;
    use core::ffi::CStr;
    use core::ptr;
    use ebpf_ext::ebpf::abi::*;
    use ebpf_ext::ebpf::context::{
        test_run_context_create, test_run_context_destroy, unicode_bytes, Packet, ProgramContext,
        TestRunContext, TestRunHook, TestRunOutput,
    };
    use ebpf_ext::ebpf::hook::{EventSource, Hook};
    use ebpf_ext::ebpf::program::{AttachType, ProgramType, ProgramTypeSpec};
    use ebpf_ext::nt::{self, NtResult, HANDLE};
    use ebpf_ext::pool::PoolBox;
    use ebpf_ext::store;
    use ebpf_ext::trace;

    /// The `image_load` program type: no helpers; the image name is the
    /// packet.
    const PROGRAM_SPEC: ProgramTypeSpec = ProgramTypeSpec {
        name: c"image_load",
        program_type: EBPF_PROGRAM_TYPE_IMAGE_LOAD,
        bpf_prog_type: 0,
        context: ebpf_context_descriptor_t {
            size: size_of::<image_load_md_t>() as i32,
            data: offset_of!(image_load_md_t, image_path_start) as i32,
            end: offset_of!(image_load_md_t, image_path_end) as i32,
            meta: -1,
        },
        helpers: &[],
        context_create: test_run_context_create::<TestRun>,
        context_destroy: test_run_context_destroy::<TestRun>,
        required_irql: nt::PASSIVE_LEVEL,
    };
    static PROGRAM: ProgramType<{ PROGRAM_SPEC.helpers.len() }> =
        ProgramType::new(&PROGRAM, PROGRAM_SPEC);

    /// The `image_load` attach type.
    static ATTACH: AttachType =
        AttachType::new(EBPF_ATTACH_TYPE_IMAGE_LOAD, EBPF_PROGRAM_TYPE_IMAGE_LOAD, 0);

    /// The section programs of this type use: `SEC("image_load")`.
    static SECTIONS: &[store::Section] = &[store::Section::new("image_load", &ATTACH)];

    /// The image-load hook: both providers and the store entries, fed by
    /// the load-image notify routine.
    pub static HOOK: Hook = Hook::new(&PROGRAM, &ATTACH, SECTIONS, &LoadImageNotify);

    /// The load-image notify routine as an [`EventSource`].
    struct LoadImageNotify;

    impl EventSource for LoadImageNotify {
        fn register(&self) -> NtResult {
            // SAFETY: registers a routine of this image, at PASSIVE_LEVEL
            // (attach); it stays callable until removed (unload waits).
            let result = nt::check(unsafe {
                nt::PsSetLoadImageNotifyRoutineEx(
                    load_image_notify,
                    nt::PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE,
                )
            });
            trace::callback_register(c"image_load", c"PsSetLoadImageNotifyRoutineEx", result);
            result
        }

        fn unregister(&self) {
            // SAFETY: removes the routine registered above; returns after any
            // call in flight has finished.
            let status = unsafe { nt::PsRemoveLoadImageNotifyRoutine(load_image_notify) };
            trace::callback_remove(
                c"image_load",
                c"PsRemoveLoadImageNotifyRoutine",
                nt::check(status),
            );
        }
    }

    /// An image-load event as the core receives it (no private state).
    type ImageContext = ProgramContext<image_load_md_t, ()>;

    unsafe extern "system" fn load_image_notify(
        full_image_name: *mut nt::UNICODE_STRING,
        process_id: HANDLE,
        image_info: *mut nt::IMAGE_INFO,
    ) {
        let hook = HOOK.provider();
        if !hook.has_clients() {
            return;
        }
        let mut md = image_load_md_t::zeroed();
        md.process_id = process_id as u64;
        // SAFETY: a plain query of the current thread.
        md.thread_id = unsafe { nt::PsGetCurrentThreadId() } as u64;
        // SAFETY: the kernel's IMAGE_INFO is valid for the call (or null,
        // which it never is on Windows; then the fields stay 0).
        if let Some(info) = unsafe { image_info.as_ref() } {
            md.image_base = info.ImageBase as u64;
            md.image_size = info.ImageSize as u64;
            (md.flags, md.signature_level, md.signature_type) = decode_properties(info.Properties);
        }
        // SAFETY: the kernel's string is valid for the notify call, which
        // outlives the event.
        let path = Packet::of_optional(unsafe { unicode_bytes(full_image_name) });
        md.image_path_start = path.start;
        md.image_path_end = path.end;
        let id = md.process_id;
        let mut event = ImageContext::new(md, ());
        // A load cannot be denied here: every result is ignored.
        if let Some(run) = hook.invoke_ignoring_results(&mut event) {
            trace::hook_event(c"image_load", 0, id, run, 0);
        }
    }

    // -----------------------------------------------------------------------
    // bpf_prog_test_run: data is the image path; the context in and out.

    /// The image_load hook's test run: it owns the path its packet points
    /// into.
    enum TestRun {}

    /// A run of [`TestRun`].
    type Run = TestRunContext<image_load_md_t, (), Vec<u8>>;

    // SAFETY: image_load_md_t has no implicit padding: two pointers and
    // four u64, then u32, u8, u8 and `reserved` u16, 56 bytes at 8-byte
    // alignment.
    unsafe impl TestRunOutput for TestRun {
        type Context = image_load_md_t;
        type Private = ();
        type Owned = Vec<u8>;
        type ContextOut = image_load_md_t;

        fn output(run: &mut Run) -> (image_load_md_t, impl AsRef<[&[u8]]>) {
            let mut md = run.event.context;
            // Kernel addresses mean nothing to the caller.
            md.image_path_start = ptr::null_mut();
            md.image_path_end = ptr::null_mut();
            (md, [&run.owned[..]])
        }
    }

    // SAFETY: image_load_md_t is integers and raw pointers: any bytes are
    // valid (the pointers are replaced before use, in `create`).
    unsafe impl TestRunHook for TestRun {
        const NAME: &'static CStr = c"image_load";
        const ZEROED: image_load_md_t = image_load_md_t::zeroed();

        fn refusal(md: &image_load_md_t, path: &[u8]) -> Option<&'static CStr> {
            (!valid_test_input(md, path)).then_some(c"InvalidInput")
        }

        fn create(md: image_load_md_t, path: &[u8]) -> EbpfResult<PoolBox<Run>> {
            if !valid_test_input(&md, path) {
                return Err(EbpfError::INVALID_ARGUMENT);
            }
            let mut owned = Vec::new();
            owned
                .try_reserve_exact(path.len())
                .map_err(|_| EbpfError::NO_MEMORY)?;
            owned.extend_from_slice(path);
            let run = Run {
                event: ProgramContext::new(md, ()),
                owned,
            };
            let mut run = PoolBox::try_new(run).map_err(|_| EbpfError::NO_MEMORY)?;
            let Run { event, owned } = &mut *run;
            // The vector's buffer does not move with the box: the packet
            // stays valid while the run lives.
            let packet = Packet::of(owned);
            event.context.image_path_start = packet.start;
            event.context.image_path_end = packet.end;
            Ok(run)
        }
    }
}

#[cfg(windows)]
pub use kernel::HOOK;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_decoded_bit_by_bit() {
        assert_eq!(decode_properties(0), (0, 0, 0));
        assert_eq!(
            decode_properties(1 << 8),
            (IMAGE_LOAD_FLAG_SYSTEM_MODE, 0, 0)
        );
        assert_eq!(
            decode_properties(1 << 9),
            (IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS, 0, 0)
        );
        assert_eq!(
            decode_properties(1 << 11),
            (IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH, 0, 0)
        );
        assert_eq!(
            decode_properties(1 << 19),
            (IMAGE_LOAD_FLAG_PARTIAL_MAP, 0, 0)
        );
        assert_eq!(decode_properties(0xC << 12 | 0x3 << 16), (0, 12, 3));
        // ExtendedInfoPresent (10) and the addressing mode (0-7) are not
        // flags of the context.
        assert_eq!(decode_properties(1 << 10 | 0xFF), (0, 0, 0));
        assert_eq!(decode_properties(u32::MAX), (IMAGE_LOAD_FLAGS_KNOWN, 15, 7));
    }

    #[test]
    fn test_inputs_are_validated() {
        let mut md = image_load_md_t::zeroed();
        assert!(valid_test_input(&md, &[]));
        assert!(!valid_test_input(&md, &[1]), "odd path");
        md.flags = IMAGE_LOAD_FLAGS_KNOWN;
        md.signature_level = 15;
        md.signature_type = 7;
        assert!(valid_test_input(&md, &[1, 0]));
        md.signature_type = 8;
        assert!(!valid_test_input(&md, &[]));
        md.signature_type = 0;
        md.signature_level = 16;
        assert!(!valid_test_input(&md, &[]));
        md.signature_level = 0;
        md.flags = 0x10;
        assert!(!valid_test_input(&md, &[]));
        md.flags = 0;
        md.reserved = 1;
        assert!(!valid_test_input(&md, &[]));
    }
}
