//! The `netevent` program type and attach type (neteventebpfext, as in
//! microsoft/ntosebpfext).
//!
//! Events come from NMR providers of the netevent NPI (on Windows, PktMon's
//! drop and flow events). This driver is their NMR client: while at least
//! one program is attached it is registered with NMR and binds to every
//! netevent provider; each provider pushes events through the function in
//! the client dispatch table it was given. An event is a PktMon stream
//! header (`PKTMON_EVENT_HEADER_LENGTH` bytes, starting with the u32 event
//! id) followed by its payload; programs see it behind a 4-byte
//! `netevent_data_header_t` (type, version) in `[data_meta, data_end)`,
//! with `data` at the payload.
//!
//! Each link carries its capture type (`netevent_attach_opts_t`) and is
//! given only the events that type asks for; the capture type in the
//! dispatch table the providers read is the union of the attached links'.
//! Program results are ignored (an event cannot be refused).
//!
//! The layouts, the capture-type rules, the event framing and the test-run
//! validation are unit-tested on the host; the NMR client and the push
//! function are in `kernel` (Windows only). See docs/netevent-hook.md.

use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU32;
use ebpf_ext::nt::GUID;

/// `EBPF_PROGRAM_TYPE_NETEVENT`.
pub const EBPF_PROGRAM_TYPE_NETEVENT: GUID = GUID::new(
    0xfc4adc85,
    0x49c3,
    0x4f0a,
    [0x83, 0x93, 0xfa, 0xcc, 0xe8, 0x9c, 0xde, 0x91],
);
/// `EBPF_ATTACH_TYPE_NETEVENT`.
pub const EBPF_ATTACH_TYPE_NETEVENT: GUID = GUID::new(
    0x68011b08,
    0xab6b,
    0x4b46,
    [0x85, 0xe4, 0x67, 0xba, 0xe1, 0xaf, 0xe7, 0x41],
);

/// `NETEVENT_EVENT_TYPE_PKTMON_DROP`.
pub const NETEVENT_EVENT_TYPE_PKTMON_DROP: u8 = 100;
/// `NETEVENT_EVENT_TYPE_PKTMON_FLOW`.
pub const NETEVENT_EVENT_TYPE_PKTMON_FLOW: u8 = 101;
/// `NETEVENT_PKTMON_EVENT_CURRENT_VERSION`.
pub const NETEVENT_PKTMON_EVENT_CURRENT_VERSION: u16 = 1;
/// `PKTMON_EVENT_HEADER_LENGTH`: the PktMon stream header in front of
/// every event's payload.
pub const PKTMON_EVENT_HEADER_LENGTH: usize = 0x35;
/// Where `data` points, from `data_meta`.
pub const DATA_OFFSET: usize = size_of::<netevent_data_header_t>() + PKTMON_EVENT_HEADER_LENGTH;

/// `netevent_capture_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CaptureType {
    /// `NeteventCapture_All`.
    All = 1,
    /// `NeteventCapture_Flow`.
    Flow = 2,
    /// `NeteventCapture_Drop`.
    Drop = 3,
    /// `NeteventCapture_None`.
    None = 4,
}

/// An event of type `NETEVENT_EVENT_TYPE_PKTMON_DROP`.
pub const CLASS_DROP: u32 = 0x1;
/// An event of type `NETEVENT_EVENT_TYPE_PKTMON_FLOW`.
pub const CLASS_FLOW: u32 = 0x2;
/// An event of any other type.
pub const CLASS_OTHER: u32 = 0x4;

impl CaptureType {
    /// The capture type of a link's attach options (`None` when the value
    /// is not one of the four).
    pub fn from_raw(raw: u32) -> Option<CaptureType> {
        Some(match raw {
            1 => CaptureType::All,
            2 => CaptureType::Flow,
            3 => CaptureType::Drop,
            4 => CaptureType::None,
            _ => return None,
        })
    }

    /// The event classes a link of this capture type is given.
    pub const fn classes(self) -> u32 {
        match self {
            CaptureType::All => CLASS_DROP | CLASS_FLOW | CLASS_OTHER,
            CaptureType::Flow => CLASS_FLOW,
            CaptureType::Drop => CLASS_DROP,
            CaptureType::None => 0,
        }
    }

    /// What providers are asked for when the attached links together want
    /// `classes`.
    pub const fn for_classes(classes: u32) -> CaptureType {
        match classes {
            0 => CaptureType::None,
            CLASS_DROP => CaptureType::Drop,
            CLASS_FLOW => CaptureType::Flow,
            _ => CaptureType::All,
        }
    }
}

/// The class of an event of `event_type` (its PktMon event id).
pub const fn class_of(event_type: u8) -> u32 {
    match event_type {
        NETEVENT_EVENT_TYPE_PKTMON_DROP => CLASS_DROP,
        NETEVENT_EVENT_TYPE_PKTMON_FLOW => CLASS_FLOW,
        _ => CLASS_OTHER,
    }
}

/// `netevent_data_header_t` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct netevent_data_header_t {
    /// The event's type (the PktMon event id, truncated to 8 bits).
    pub r#type: u8,
    /// Padding (zero).
    pub reserved: u8,
    /// `NETEVENT_PKTMON_EVENT_CURRENT_VERSION`.
    pub version: u16,
}

/// `netevent_event_md_t`: what programs see (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct netevent_event_md_t {
    /// The `netevent_data_header_t` in front of the event.
    pub data_meta: *mut u8,
    /// The event's payload (after the PktMon header).
    pub data: *mut u8,
    /// One past the event's last byte.
    pub data_end: *mut u8,
}

impl netevent_event_md_t {
    /// Three null pointers.
    pub const fn zeroed() -> netevent_event_md_t {
        netevent_event_md_t {
            data_meta: core::ptr::null_mut(),
            data: core::ptr::null_mut(),
            data_end: core::ptr::null_mut(),
        }
    }
}

/// `netevent_attach_opts_t` (4 bytes): a link's capture type.
pub const ATTACH_OPTS_SIZE: usize = 4;

/// The netevent NPI id.
pub const NETEVENT_NPI_ID: GUID = GUID::new(
    0x2227e81a,
    0x8d8b,
    0x11d4,
    [0xab, 0xad, 0x00, 0x90, 0x27, 0x71, 0x9e, 0x09],
);
/// This driver's NMR module id as a client of the netevent NPI.
pub const NETEVENT_CLIENT_MODULE_ID: GUID = GUID::new(
    0x8a9a5ef1,
    0x2aa1,
    0x42e9,
    [0x89, 0x05, 0xd1, 0xcf, 0x06, 0xc5, 0x77, 0x64],
);
/// `EBPF_NETEVENT_EXTENSION_VERSION`: the client dispatch table's version.
pub const EBPF_NETEVENT_EXTENSION_VERSION: u16 = 2;

/// `netevent_event_info_t`: an event as a provider pushes it.
#[repr(C)]
pub struct netevent_event_info_t {
    /// First byte of the event.
    pub event_data_start: *const u8,
    /// One past its last byte.
    pub event_data_end: *const u8,
}

/// The function providers push events through
/// (`helper_function_address[0]` of the client dispatch table).
pub type PushEventFn = unsafe extern "system" fn(*const netevent_event_info_t);

/// `netevent_ext_header_t`.
#[repr(C)]
pub struct netevent_ext_header_t {
    /// `EBPF_NETEVENT_EXTENSION_VERSION`.
    pub version: u16,
    /// Size of the whole dispatch table.
    pub size: usize,
}

/// `netevent_ext_function_addresses_t`: the client dispatch table every
/// provider binding gets (32 bytes).
#[repr(C)]
pub struct netevent_ext_function_addresses_t {
    /// Version and size.
    pub header: netevent_ext_header_t,
    /// `netevent_capture_type_t`, read by providers at any time.
    pub capture_type: AtomicU32,
    /// Entries of `helper_function_address` (1).
    pub helper_function_count: u32,
    /// `[push_event]`.
    pub helper_function_address: *const PushEventFn,
}

// SAFETY: the driver's table points to a static array of functions; the
// only field written after construction is atomic.
unsafe impl Sync for netevent_ext_function_addresses_t {}

/// The header a netevent provider publishes as its
/// `NpiSpecificCharacteristics` (`{ USHORT Size; USHORT Version; }`).
#[repr(C)]
pub struct ProviderCharacteristics {
    /// Size of the characteristics (at least 4).
    pub size: u16,
    /// The provider's version of the NPI (2).
    pub version: u16,
}

const _: () = {
    assert!(size_of::<netevent_data_header_t>() == 4);
    assert!(offset_of!(netevent_data_header_t, version) == 2);
    assert!(size_of::<netevent_event_md_t>() == 24);
    assert!(offset_of!(netevent_event_md_t, data) == 8);
    assert!(offset_of!(netevent_event_md_t, data_end) == 16);
    assert!(DATA_OFFSET == 0x39);
    assert!(size_of::<netevent_event_info_t>() == 16);
    assert!(size_of::<netevent_ext_function_addresses_t>() == 32);
    assert!(offset_of!(netevent_ext_function_addresses_t, capture_type) == 16);
    assert!(offset_of!(netevent_ext_function_addresses_t, helper_function_count) == 20);
    assert!(offset_of!(netevent_ext_function_addresses_t, helper_function_address) == 24);
    assert!(size_of::<ProviderCharacteristics>() == 4);
};

/// Why a link's attach options are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// No options, or not exactly `netevent_attach_opts_t`
    /// (`EBPF_INVALID_ARGUMENT`).
    Size,
    /// A capture type outside the four (`EBPF_OPERATION_NOT_SUPPORTED`).
    CaptureType,
}

/// A link's capture type from its attach options.
///
/// # Errors
/// [`OptionsError`].
pub fn parse_attach_options(options: &[u8]) -> Result<CaptureType, OptionsError> {
    let raw: [u8; ATTACH_OPTS_SIZE] = options.try_into().map_err(|_| OptionsError::Size)?;
    CaptureType::from_raw(u32::from_le_bytes(raw)).ok_or(OptionsError::CaptureType)
}

/// The event type of a provider's event (the low byte of the PktMon event
/// id at its start), or `None` when the event is shorter than the PktMon
/// header (such events are dropped).
pub fn event_type(event: &[u8]) -> Option<u8> {
    (event.len() >= PKTMON_EVENT_HEADER_LENGTH).then(|| event[0])
}

/// The data header of an event of `event_type`.
pub fn data_header(event_type: u8) -> [u8; size_of::<netevent_data_header_t>()] {
    let [v0, v1] = NETEVENT_PKTMON_EVENT_CURRENT_VERSION.to_le_bytes();
    [event_type, 0, v0, v1]
}

/// Replaces `out` with the program's view of `event`: the data header,
/// then the event unchanged. Grows `out` only when it is too small (the
/// one allocation an event may need).
///
/// # Errors
/// `TryReserveError` when growing fails (`out` is then empty).
pub fn frame_event(
    event: &[u8],
    out: &mut alloc::vec::Vec<u8>,
) -> Result<(), alloc::collections::TryReserveError> {
    out.clear();
    let header = data_header(event.first().copied().unwrap_or(0));
    out.try_reserve_exact(header.len() + event.len())?;
    out.extend_from_slice(&header);
    out.extend_from_slice(event);
    Ok(())
}

/// Whether a test run's data could be an event the driver frames: at least
/// the data header and the PktMon header, of a drop or flow type.
pub fn valid_test_data(data: &[u8]) -> bool {
    data.len() >= DATA_OFFSET
        && matches!(
            data[0],
            NETEVENT_EVENT_TYPE_PKTMON_DROP | NETEVENT_EVENT_TYPE_PKTMON_FLOW
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_types_select_event_classes() {
        let drop = class_of(NETEVENT_EVENT_TYPE_PKTMON_DROP);
        let flow = class_of(NETEVENT_EVENT_TYPE_PKTMON_FLOW);
        let other = class_of(7);
        assert_eq!((drop, flow, other), (CLASS_DROP, CLASS_FLOW, CLASS_OTHER));
        let accepts = |c: CaptureType, class| c.classes() & class != 0;
        assert!(accepts(CaptureType::All, drop) && accepts(CaptureType::All, flow));
        assert!(accepts(CaptureType::All, other));
        assert!(accepts(CaptureType::Drop, drop) && !accepts(CaptureType::Drop, flow));
        assert!(accepts(CaptureType::Flow, flow) && !accepts(CaptureType::Flow, drop));
        assert!(!accepts(CaptureType::Flow, other) && !accepts(CaptureType::Drop, other));
        assert!(!accepts(CaptureType::None, drop | flow | other));
    }

    #[test]
    fn the_providers_capture_type_is_the_union() {
        let union = |types: &[CaptureType]| {
            CaptureType::for_classes(types.iter().fold(0, |m, t| m | t.classes()))
        };
        assert_eq!(union(&[]), CaptureType::None);
        assert_eq!(union(&[CaptureType::None]), CaptureType::None);
        assert_eq!(union(&[CaptureType::Drop]), CaptureType::Drop);
        assert_eq!(
            union(&[CaptureType::Flow, CaptureType::None]),
            CaptureType::Flow
        );
        assert_eq!(
            union(&[CaptureType::Flow, CaptureType::Drop]),
            CaptureType::All
        );
        assert_eq!(
            union(&[CaptureType::All, CaptureType::Drop]),
            CaptureType::All
        );
    }

    #[test]
    fn attach_options_are_one_known_capture_type() {
        assert_eq!(
            parse_attach_options(&3u32.to_le_bytes()),
            Ok(CaptureType::Drop)
        );
        assert_eq!(
            parse_attach_options(&1u32.to_le_bytes()),
            Ok(CaptureType::All)
        );
        assert_eq!(
            parse_attach_options(&4u32.to_le_bytes()),
            Ok(CaptureType::None)
        );
        assert_eq!(
            parse_attach_options(&2u32.to_le_bytes()),
            Ok(CaptureType::Flow)
        );
        assert_eq!(
            parse_attach_options(&0u32.to_le_bytes()),
            Err(OptionsError::CaptureType)
        );
        assert_eq!(
            parse_attach_options(&5u32.to_le_bytes()),
            Err(OptionsError::CaptureType)
        );
        assert_eq!(parse_attach_options(&[]), Err(OptionsError::Size));
        assert_eq!(parse_attach_options(&[1, 0, 0]), Err(OptionsError::Size));
        assert_eq!(
            parse_attach_options(&[1, 0, 0, 0, 0]),
            Err(OptionsError::Size)
        );
    }

    #[test]
    fn events_are_framed_behind_the_data_header() {
        let mut event = vec![0u8; PKTMON_EVENT_HEADER_LENGTH + 3];
        event[0] = NETEVENT_EVENT_TYPE_PKTMON_FLOW;
        event[1] = 0x12; // the event id's higher bytes are not the type
        event[PKTMON_EVENT_HEADER_LENGTH..].copy_from_slice(b"abc");
        assert_eq!(event_type(&event), Some(NETEVENT_EVENT_TYPE_PKTMON_FLOW));
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"stale bytes of the previous event");
        let capacity = out.capacity();
        frame_event(&event, &mut out).unwrap();
        assert_eq!(out.len(), 4 + event.len());
        assert_eq!(&out[..4], &[101, 0, 1, 0]);
        assert_eq!(&out[4..], &event[..]);
        assert_eq!(&out[DATA_OFFSET..], b"abc");
        assert_eq!(out.capacity(), capacity, "a buffer large enough is reused");
        let mut exact = Vec::with_capacity(4 + event.len());
        let capacity = exact.capacity();
        frame_event(&event, &mut exact).unwrap();
        assert_eq!(exact, out);
        assert_eq!(
            exact.capacity(),
            capacity,
            "a buffer of exactly the framed size is reused"
        );
        let mut small = Vec::new();
        frame_event(&event, &mut small).unwrap();
        assert_eq!(small, out, "a small buffer grows");
        let header_only = [NETEVENT_EVENT_TYPE_PKTMON_DROP; PKTMON_EVENT_HEADER_LENGTH];
        assert_eq!(
            event_type(&header_only),
            Some(NETEVENT_EVENT_TYPE_PKTMON_DROP)
        );
        assert_eq!(
            event_type(&header_only[1..]),
            None,
            "shorter than the header"
        );
    }

    #[test]
    fn test_data_must_be_a_framed_drop_or_flow_event() {
        let mut data = vec![0u8; DATA_OFFSET];
        data[0] = NETEVENT_EVENT_TYPE_PKTMON_DROP;
        assert!(valid_test_data(&data));
        data[0] = NETEVENT_EVENT_TYPE_PKTMON_FLOW;
        assert!(valid_test_data(&data));
        assert!(!valid_test_data(&data[..DATA_OFFSET - 1]));
        data[0] = 99;
        assert!(!valid_test_data(&data));
        assert!(!valid_test_data(&[]));
    }
}

#[cfg(windows)]
mod kernel {
    use super::*;
    use alloc::vec::Vec;
    use core::ffi::{c_void, CStr};
    use core::ptr;
    use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    use ebpf_ext::ebpf::abi::*;
    use ebpf_ext::ebpf::client::ClientError;
    use ebpf_ext::ebpf::context::{
        test_run_context_create, test_run_context_destroy, Packet, ProgramContext, TestRunContext,
        TestRunHook, TestRunOutput,
    };
    use ebpf_ext::ebpf::helpers::{helper_return, Errno};
    use ebpf_ext::ebpf::hook::{EventSource, Hook};
    use ebpf_ext::ebpf::program::{AttachType, HelperSpec, ProgramType, ProgramTypeSpec};
    use ebpf_ext::nmr::client::{Client, ClientRegistration, ProviderAttach};
    use ebpf_ext::nt::{self, NtResult, NPI_MODULEID};
    use ebpf_ext::pool::PoolBox;
    use ebpf_ext::store;
    use ebpf_ext::sync::{Detach, SpinRwLock};
    use ebpf_ext::trace;

    /// `BPF_PROG_TYPE_NETEVENT`.
    const BPF_PROG_TYPE_NETEVENT: u32 = 5;
    /// `BPF_ATTACH_TYPE_NETEVENT`.
    const BPF_ATTACH_TYPE_NETEVENT: u32 = 10;
    /// `BPF_LINK_TYPE_PLAIN`.
    const BPF_LINK_TYPE_PLAIN: u32 = 1;
    /// `BPF_FUNC_netevent_push_event`.
    const BPF_FUNC_NETEVENT_PUSH_EVENT: u32 = EBPF_MAX_GENERAL_HELPER_FUNCTION + 1;

    /// The `netevent_monitor` program type. Its one helper is published
    /// with an implementation (upstream publishes the prototype with no
    /// address table, which the core would dereference if a program called
    /// it): it returns `-EOPNOTSUPP`.
    const PROGRAM_SPEC: ProgramTypeSpec = ProgramTypeSpec {
        name: c"netevent_monitor",
        program_type: EBPF_PROGRAM_TYPE_NETEVENT,
        bpf_prog_type: BPF_PROG_TYPE_NETEVENT,
        context: ebpf_context_descriptor_t {
            size: size_of::<netevent_event_md_t>() as i32,
            data: offset_of!(netevent_event_md_t, data) as i32,
            end: offset_of!(netevent_event_md_t, data_end) as i32,
            meta: offset_of!(netevent_event_md_t, data_meta) as i32,
        },
        helpers: &[HelperSpec {
            id: BPF_FUNC_NETEVENT_PUSH_EVENT,
            name: c"bpf_netevent_push_event",
            return_type: EBPF_RETURN_TYPE_INTEGER,
            arguments: [EBPF_ARGUMENT_TYPE_PTR_TO_CTX, 0, 0, 0, 0],
            address: bpf_netevent_push_event,
        }],
        context_create: test_run_context_create::<TestRun>,
        context_destroy: test_run_context_destroy::<TestRun>,
        required_irql: nt::PASSIVE_LEVEL,
    };
    static PROGRAM: ProgramType<{ PROGRAM_SPEC.helpers.len() }> =
        ProgramType::new(&PROGRAM, PROGRAM_SPEC);

    /// The `netevent` attach type: plain links, each with its capture type.
    static ATTACH: AttachType = AttachType::new(
        EBPF_ATTACH_TYPE_NETEVENT,
        EBPF_PROGRAM_TYPE_NETEVENT,
        BPF_ATTACH_TYPE_NETEVENT,
    )
    .with_link_type(BPF_LINK_TYPE_PLAIN)
    .with_link_classes(link_classes);

    /// The section programs of this type use: `SEC("netevent_monitor")`.
    static SECTIONS: &[store::Section] = &[store::Section::new("netevent_monitor", &ATTACH)];

    /// The netevent hook: both providers and the store entries, fed by the
    /// netevent providers this driver binds to while programs are attached.
    pub static HOOK: Hook = Hook::new(&PROGRAM, &ATTACH, SECTIONS, &NETEVENT);

    /// A link's event classes from its attach options (upstream refuses a
    /// link without them, or with an unknown capture type, the same way).
    fn link_classes(options: &[u8]) -> Result<u32, ClientError> {
        match parse_attach_options(options) {
            Ok(capture) => Ok(capture.classes()),
            Err(OptionsError::Size) => Err(ClientError::InvalidAttachParameters),
            Err(OptionsError::CaptureType) => Err(ClientError::UnsupportedAttachParameters),
        }
    }

    unsafe extern "system" fn bpf_netevent_push_event(
        _: u64,
        _: u64,
        _: u64,
        _: u64,
        _: u64,
    ) -> i64 {
        helper_return(Err(Errno::NotSupported))
    }

    // -----------------------------------------------------------------------
    // The netevent NPI, client side.

    /// The netevent NPI id.
    static NETEVENT_NPI: nt::GUID = NETEVENT_NPI_ID;
    /// This driver's module id as a netevent client.
    static CLIENT_MODULE: NPI_MODULEID = NPI_MODULEID::guid(NETEVENT_CLIENT_MODULE_ID);

    static PUSH_FUNCTIONS: [PushEventFn; 1] = [push_event];

    /// The client dispatch table every provider binding gets.
    static DISPATCH: netevent_ext_function_addresses_t = netevent_ext_function_addresses_t {
        header: netevent_ext_header_t {
            version: EBPF_NETEVENT_EXTENSION_VERSION,
            size: size_of::<netevent_ext_function_addresses_t>(),
        },
        capture_type: AtomicU32::new(CaptureType::None as u32),
        helper_function_count: PUSH_FUNCTIONS.len() as u32,
        helper_function_address: PUSH_FUNCTIONS.as_ptr(),
    };

    /// The NMR client of the netevent NPI.
    struct NeteventClient;

    static CLIENT: ClientRegistration<NeteventClient> =
        ClientRegistration::new(&NETEVENT_NPI, &CLIENT_MODULE, NeteventClient);

    impl Client for NeteventClient {
        type Binding = nt::GUID;

        fn attach(
            &'static self,
            provider: &ProviderAttach<'_>,
        ) -> NtResult<(nt::GUID, *const c_void)> {
            let specific =
                provider.registration.NpiSpecificCharacteristics as *const ProviderCharacteristics;
            // SAFETY: a provider of this NPI publishes its characteristics
            // header (4 bytes) there, or null.
            let usable = unsafe { specific.as_ref() }
                .is_some_and(|c| c.size as usize >= size_of::<ProviderCharacteristics>());
            if !usable {
                let e = nt::Error::NOINTERFACE;
                trace::provider_bind(c"netevent", &provider.provider_module, Err(e));
                return Err(e);
            }
            Ok((
                provider.provider_module,
                (&DISPATCH as *const netevent_ext_function_addresses_t).cast(),
            ))
        }

        fn attached(&'static self, module: &nt::GUID) {
            trace::provider_bind(c"netevent", module, Ok(()));
        }

        fn abandon(&'static self, module: nt::GUID, why: nt::Error) {
            // Out of memory, or the provider refused the binding.
            trace::provider_bind(c"netevent", &module, Err(why));
        }

        fn detach(&'static self, module: &nt::GUID) -> Detach {
            // push_event uses nothing of the binding, and a provider stops
            // calling it once its own detach is done.
            trace::provider_unbind(c"netevent", module);
            Detach::Complete
        }
    }

    // -----------------------------------------------------------------------
    // The event source: the NMR client registration, with the per-processor
    // buffers events are framed in.

    /// The initial size of each processor's buffer (grown when an event is
    /// larger).
    const INITIAL_BUFFER: usize = 4096;

    /// One processor's framing buffer.
    type Slot = SpinRwLock<Vec<u8>>;

    /// The netevent event source.
    ///
    /// # Invariants
    /// `slots`/`slot_count` describe a leaked `Box<[Slot]>` exactly while
    /// the NMR client is registered (set before registering, taken after
    /// deregistering, both at PASSIVE_LEVEL under the hook's registration
    /// lock); null/0 otherwise. `links` counts attached links by class;
    /// `DISPATCH.capture_type` is `CaptureType::for_classes` of the classes
    /// with a non-zero count.
    struct Netevent {
        slots: AtomicPtr<Slot>,
        slot_count: AtomicUsize,
        links: SpinRwLock<[u32; 3]>,
    }

    static NETEVENT: Netevent = Netevent {
        slots: AtomicPtr::new(ptr::null_mut()),
        slot_count: AtomicUsize::new(0),
        links: SpinRwLock::new([0; 3]),
    };

    impl Netevent {
        fn allocate_slots() -> NtResult<alloc::boxed::Box<[Slot]>> {
            // SAFETY: a plain query.
            let count =
                unsafe { nt::KeQueryMaximumProcessorCountEx(nt::ALL_PROCESSOR_GROUPS) } as usize;
            let mut slots = Vec::new();
            slots
                .try_reserve_exact(count.max(1))
                .map_err(|_| nt::Error::INSUFFICIENT_RESOURCES)?;
            for _ in 0..count.max(1) {
                let mut buffer = Vec::new();
                buffer
                    .try_reserve_exact(INITIAL_BUFFER)
                    .map_err(|_| nt::Error::INSUFFICIENT_RESOURCES)?;
                slots.push(SpinRwLock::new(buffer));
            }
            Ok(slots.into_boxed_slice())
        }

        fn counts_changed(&self, classes: u32, attached: bool) {
            let mut links = self.links.write();
            let mut union = 0;
            for (bit, count) in links.iter_mut().enumerate() {
                if classes & (1 << bit) != 0 {
                    *count = if attached { *count + 1 } else { *count - 1 };
                }
                if *count != 0 {
                    union |= 1 << bit;
                }
            }
            // INVARIANT: recomputed under the lock after every change.
            DISPATCH
                .capture_type
                .store(CaptureType::for_classes(union) as u32, Ordering::Release);
        }
    }

    impl EventSource for Netevent {
        fn register(&self) -> NtResult {
            let slots = Self::allocate_slots().inspect_err(|e| {
                trace::api_failure(trace::hook_keyword(), c"ExAllocatePool2", e.status())
            })?;
            let count = slots.len();
            let raw = alloc::boxed::Box::into_raw(slots) as *mut Slot;
            // INVARIANT: set before the client registers.
            self.slot_count.store(count, Ordering::Relaxed);
            self.slots.store(raw, Ordering::Release);
            let result = CLIENT.register();
            trace::callback_register(c"netevent", c"NmrRegisterClient", result);
            if result.is_err() {
                self.free_slots();
            }
            result
        }

        fn unregister(&self) {
            let result = CLIENT.deregister();
            trace::callback_remove(c"netevent", c"NmrDeregisterClient", result);
            self.free_slots();
        }

        fn link_attached(&self, classes: u32) {
            self.counts_changed(classes, true);
        }

        fn link_detached(&self, classes: u32) {
            self.counts_changed(classes, false);
        }
    }

    impl Netevent {
        fn free_slots(&self) {
            let raw = self.slots.swap(ptr::null_mut(), Ordering::AcqRel);
            let count = self.slot_count.swap(0, Ordering::Relaxed);
            if !raw.is_null() {
                // SAFETY: the box leaked in `register`, taken back once (the
                // swap), with no provider bound (type invariant).
                drop(unsafe {
                    alloc::boxed::Box::from_raw(ptr::slice_from_raw_parts_mut(raw, count))
                });
            }
        }

        /// This processor's slot (any slot is correct: each has its lock;
        /// the processor's own is uncontended).
        fn slot(&self) -> Option<&Slot> {
            let raw = self.slots.load(Ordering::Acquire);
            let count = self.slot_count.load(Ordering::Relaxed);
            if raw.is_null() || count == 0 {
                return None;
            }
            // SAFETY: a plain query.
            let cpu = unsafe { nt::KeGetCurrentProcessorNumberEx(ptr::null_mut()) } as usize;
            // SAFETY: `raw` holds `count` slots while a provider is bound
            // (type invariant), which it is while it pushes events.
            Some(unsafe { &*raw.wrapping_add(cpu % count) })
        }
    }

    /// An event as the core receives it (no private state).
    type EventContext = ProgramContext<netevent_event_md_t, ()>;

    /// A provider pushes one event (IRQL <= DISPATCH_LEVEL).
    unsafe extern "system" fn push_event(info: *const netevent_event_info_t) {
        let hook = HOOK.provider();
        if !hook.has_clients() {
            return;
        }
        // SAFETY: the provider's event descriptor, valid for the call (or
        // null: nothing to do).
        let Some(info) = (unsafe { info.as_ref() }) else {
            return;
        };
        let (start, end) = (info.event_data_start, info.event_data_end);
        if start.is_null() || end <= start {
            trace::event_dropped(c"netevent", c"EmptyEvent", 0);
            return;
        }
        let len = end as usize - start as usize;
        // SAFETY: the provider's event bytes, valid for the call.
        let event = unsafe { core::slice::from_raw_parts(start, len) };
        let Some(event_type) = event_type(event) else {
            trace::event_dropped(c"netevent", c"ShortEvent", len as u64);
            return;
        };
        let Some(slot) = NETEVENT.slot() else {
            return;
        };
        // Raises to DISPATCH_LEVEL: the processor's buffer is this event's
        // until the guard drops, after every program ran.
        let mut buffer = slot.write();
        if frame_event(event, &mut buffer).is_err() {
            trace::event_dropped(c"netevent", c"NoMemory", len as u64);
            return;
        }
        let meta = buffer.as_mut_ptr();
        let md = netevent_event_md_t {
            data_meta: meta,
            data: meta.wrapping_add(DATA_OFFSET),
            data_end: meta.wrapping_add(buffer.len()),
        };
        let mut context = EventContext::new(md, ());
        // Results are ignored: an event cannot be refused.
        let run = hook.invoke_class_ignoring_results(&mut context, class_of(event_type));
        drop(buffer);
        if let Some(run) = run {
            trace::hook_event(c"netevent", event_type, len as u64, run, 0);
        }
    }

    // -----------------------------------------------------------------------
    // bpf_prog_test_run: data is a framed event (data header, PktMon header,
    // payload); the context's pointers are rebuilt from it.

    enum TestRun {}

    type Run = TestRunContext<netevent_event_md_t, (), Vec<u8>>;

    // SAFETY: netevent_event_md_t is three pointers, no padding.
    unsafe impl TestRunOutput for TestRun {
        type Context = netevent_event_md_t;
        type Private = ();
        type Owned = Vec<u8>;
        type ContextOut = netevent_event_md_t;

        fn output(run: &mut Run) -> (netevent_event_md_t, impl AsRef<[&[u8]]>) {
            // Kernel addresses mean nothing to the caller.
            (netevent_event_md_t::zeroed(), [&run.owned[..]])
        }
    }

    // SAFETY: netevent_event_md_t is raw pointers: any bytes are a valid
    // value (they are replaced in `create`).
    unsafe impl TestRunHook for TestRun {
        const NAME: &'static CStr = c"netevent";
        const ZEROED: netevent_event_md_t = netevent_event_md_t::zeroed();

        fn refusal(_md: &netevent_event_md_t, data: &[u8]) -> Option<&'static CStr> {
            (!valid_test_data(data)).then_some(c"InvalidInput")
        }

        fn create(_md: netevent_event_md_t, data: &[u8]) -> EbpfResult<PoolBox<Run>> {
            if !valid_test_data(data) {
                return Err(EbpfError::INVALID_ARGUMENT);
            }
            let mut owned = Vec::new();
            owned
                .try_reserve_exact(data.len())
                .map_err(|_| EbpfError::NO_MEMORY)?;
            owned.extend_from_slice(data);
            let run = Run {
                event: ProgramContext::new(netevent_event_md_t::zeroed(), ()),
                owned,
            };
            let mut run = PoolBox::try_new(run).map_err(|_| EbpfError::NO_MEMORY)?;
            let Run { event, owned } = &mut *run;
            // The vector's buffer does not move with the box.
            let packet = Packet::of(owned);
            event.context = netevent_event_md_t {
                data_meta: packet.start,
                data: packet.start.wrapping_add(DATA_OFFSET),
                data_end: packet.end,
            };
            Ok(run)
        }
    }
}

#[cfg(windows)]
pub use kernel::HOOK;
