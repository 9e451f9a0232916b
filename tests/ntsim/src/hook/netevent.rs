//! The network event hook (neteventebpfext) as tests see it: its identity,
//! the layout of the sample program's records (`tests/bpf/netevent_monitor.c`),
//! and [`NeteventClient`], a host-side NMR client of the netevent NPI that
//! stands where the driver stands, to prove the simulated providers of
//! [`crate::kernel::netevent`].

use super::host_client::Registration;
pub use crate::kernel::netevent::{
    capture_accepts, capture_name, netevent_event_info_t, netevent_ext_function_addresses_t,
    netevent_ext_header_t, Event, PushEventFn, CAPTURE_ALL, CAPTURE_DROP, CAPTURE_FLOW,
    CAPTURE_NONE, CLIENT_DISPATCH_SIZE, EVENT_TYPE_DROP, EVENT_TYPE_FLOW, EXTENSION_VERSION,
    NETEVENT_NPI_ID, PKTMON_EVENT_HEADER_LENGTH,
};
use crate::kernel::nmr::{
    self, NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE,
};
use crate::kernel::status::{STATUS_PENDING, STATUS_SUCCESS};
use crate::kernel::sync::wait_while;
use crate::kernel::types::{GUID, HANDLE, KIRQL};
use crate::kernel::{irql, netevent};
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// `EBPF_PROGRAM_TYPE_NETEVENT`, {fc4adc85-49c3-4f0a-8393-facce89cde91}.
pub const PROGRAM_TYPE: GUID = GUID {
    data1: 0xfc4adc85,
    data2: 0x49c3,
    data3: 0x4f0a,
    data4: [0x83, 0x93, 0xfa, 0xcc, 0xe8, 0x9c, 0xde, 0x91],
};

/// `EBPF_ATTACH_TYPE_NETEVENT`, {68011b08-ab6b-4b46-85e4-67bae1afe741}.
pub const ATTACH_TYPE: GUID = GUID {
    data1: 0x68011b08,
    data2: 0xab6b,
    data3: 0x4b46,
    data4: [0x85, 0xe4, 0x67, 0xba, 0xe1, 0xaf, 0xe7, 0x41],
};

/// The ELF section of netevent programs.
pub const SECTION: &str = "netevent_monitor";
/// `BPF_PROG_TYPE_NETEVENT` in eBPF for Windows' ebpf_structs.h.
pub const BPF_PROG_TYPE_NETEVENT: u32 = 5;
/// `BPF_ATTACH_TYPE_NETEVENT`.
pub const BPF_ATTACH_TYPE_NETEVENT: u32 = 10;
/// `BPF_FUNC_netevent_push_event`.
pub const HELPER_PUSH_EVENT: u32 = 0x10000;

/// The driver's NMR client module id on the netevent NPI,
/// {8a9a5ef1-2aa1-42e9-8905-d1cf06c57764}.
pub const CLIENT_MODULE_ID: GUID = GUID {
    data1: 0x8a9a5ef1,
    data2: 0x2aa1,
    data3: 0x42e9,
    data4: [0x89, 0x05, 0xd1, 0xcf, 0x06, 0xc5, 0x77, 0x64],
};

/// `NeteventEbpfExtProvider`, the driver's ETW provider
/// {bdd03353-2c68-4e7d-ae3a-c00790930188}.
pub const ETW_PROVIDER: GUID = GUID {
    data1: 0xbdd03353,
    data2: 0x2c68,
    data3: 0x4e7d,
    data4: [0xae, 0x3a, 0xc0, 0x07, 0x90, 0x93, 0x01, 0x88],
};

/// `netevent_data_header_t` (ebpf_netevent_hooks.h): what the driver puts
/// before the PktMon header, at `data_meta`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct netevent_data_header_t {
    /// The event type (the low byte of the PktMon event id).
    pub r#type: u8,
    /// Padding.
    pub reserved: u8,
    /// [`DATA_HEADER_VERSION`].
    pub version: u16,
}

/// `netevent_event_md_t` (ebpf_netevent_hooks.h): a netevent program's
/// context.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct netevent_event_md_t {
    /// The [`netevent_data_header_t`].
    pub data_meta: *mut u8,
    /// The payload, after the PktMon header.
    pub data: *mut u8,
    /// One past the event's last byte.
    pub data_end: *mut u8,
}

/// Size of `netevent_data_header_t`, which the driver puts before the
/// PktMon header.
pub const DATA_HEADER_SIZE: usize = std::mem::size_of::<netevent_data_header_t>();
/// `NETEVENT_PKTMON_EVENT_CURRENT_VERSION`.
pub const DATA_HEADER_VERSION: u16 = 1;
/// The sample program's ring buffer (`tests/bpf/netevent_monitor.c`).
pub const MONITOR_MAP: &str = "netevent_events";
/// Payload bytes the sample program keeps per event.
pub const MONITOR_PAYLOAD_MAX: usize = 128;

/// The record `netevent_monitor.c` writes for an event of `bytes` (what the
/// provider delivered: PktMon header and payload): the driver's
/// `netevent_data_header_t` (type = low byte of the event id, version 1),
/// then the bytes, the payload cut to [`MONITOR_PAYLOAD_MAX`].
pub fn monitor_record(bytes: &[u8]) -> Vec<u8> {
    let kept = bytes
        .len()
        .min(PKTMON_EVENT_HEADER_LENGTH + MONITOR_PAYLOAD_MAX);
    let mut r = Vec::with_capacity(DATA_HEADER_SIZE + kept);
    r.push(bytes.first().copied().unwrap_or(0));
    r.push(0);
    r.extend_from_slice(&DATA_HEADER_VERSION.to_le_bytes());
    r.extend_from_slice(&bytes[..kept]);
    r
}

// ---------------------------------------------------------------------------
// bpf_prog_test_run
// ---------------------------------------------------------------------------

/// `sizeof(netevent_event_md_t)`: the `ctx_in` / `ctx_out` of a netevent
/// test run (three pointers).
pub const TEST_RUN_CONTEXT_SIZE: usize = std::mem::size_of::<netevent_event_md_t>();

/// The input of a netevent `bpf_prog_test_run`: an event as the driver
/// frames it for programs ([`TestRunInput::data_in`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunInput {
    /// The data header's type byte, also the PktMon event id (the driver
    /// accepts [`EVENT_TYPE_DROP`] and [`EVENT_TYPE_FLOW`]).
    pub event_type: u8,
    /// The PktMon header's bytes after the event id (at most 0x31; the
    /// rest stays zero).
    pub header: Vec<u8>,
    /// The payload, after the PktMon header.
    pub data: Vec<u8>,
}

impl TestRunInput {
    /// An input; Err when `header` does not fit the PktMon header.
    pub fn new(event_type: u8, header: &[u8], data: &[u8]) -> Result<TestRunInput, String> {
        Event::with_header(event_type.into(), header, data)?;
        Ok(TestRunInput {
            event_type,
            header: header.to_vec(),
            data: data.to_vec(),
        })
    }

    /// `data_in`: the 4-byte `netevent_data_header_t` (the type, 0,
    /// version [`DATA_HEADER_VERSION`]), the 0x35-byte PktMon header (the
    /// type as a little-endian u32, then [`TestRunInput::header`], zero
    /// filled), then the payload; at least 0x39 bytes.
    pub fn data_in(&self) -> Vec<u8> {
        let event = Event::with_header(self.event_type.into(), &self.header, &self.data)
            .expect("checked by TestRunInput::new");
        let mut b = Vec::with_capacity(DATA_HEADER_SIZE + event.bytes().len());
        b.extend_from_slice(&[self.event_type, 0]);
        b.extend_from_slice(&DATA_HEADER_VERSION.to_le_bytes());
        b.extend_from_slice(event.bytes());
        b
    }
}

/// `(ctx_in, data_in)` of a netevent test run: `ctx_in` is a zeroed
/// `netevent_event_md_t` (the driver replaces its pointers).
pub fn test_run_input(input: &TestRunInput) -> (Vec<u8>, Vec<u8>) {
    (vec![0; TEST_RUN_CONTEXT_SIZE], input.data_in())
}

/// A netevent test run's `ctx_out`: the three pointers, as numbers (the
/// driver zeroes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunContextOut {
    pub data_meta: u64,
    pub data: u64,
    pub data_end: u64,
}

impl TestRunContextOut {
    /// Decodes a `ctx_out` of exactly [`TEST_RUN_CONTEXT_SIZE`] bytes.
    pub fn parse(b: &[u8]) -> Option<TestRunContextOut> {
        if b.len() != TEST_RUN_CONTEXT_SIZE {
            return None;
        }
        let at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
        Some(TestRunContextOut {
            data_meta: at(0),
            data: at(8),
            data_end: at(16),
        })
    }
}

// ---------------------------------------------------------------------------
// A host-side client
// ---------------------------------------------------------------------------

/// How a [`NeteventClient`] registers and what its dispatch table holds.
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// Its NMR module id.
    pub module: GUID,
    pub version: u16,
    pub size: usize,
    pub capture_type: u32,
    pub helper_function_count: u32,
    /// Whether `helper_function_address` is null.
    pub null_helpers: bool,
    /// Whether `helper_function_address[0]` is null.
    pub null_push: bool,
    /// Whether the dispatch pointer handed to NmrClientAttachProvider is null.
    pub null_dispatch: bool,
    /// ClientDetachProvider answers STATUS_PENDING; the test completes the
    /// detach with [`NeteventClient::complete_detaches`].
    pub detach_pending: bool,
    /// push_event waits until [`NeteventClient::open`] (after noting that
    /// it was entered).
    pub gated: bool,
    /// push_event reads the byte at `event_data_end` (one past the event):
    /// a client bug the provider's guarded buffer catches.
    pub overread: bool,
    /// push_event writes into the provider's event (its first byte).
    pub scribble: bool,
}

impl ClientConfig {
    /// A well-formed client with capture type All.
    pub fn new(module: GUID) -> ClientConfig {
        ClientConfig {
            module,
            version: EXTENSION_VERSION,
            size: CLIENT_DISPATCH_SIZE,
            capture_type: CAPTURE_ALL,
            helper_function_count: 1,
            null_helpers: false,
            null_push: false,
            null_dispatch: false,
            detach_pending: false,
            gated: false,
            overread: false,
            scribble: false,
        }
    }
}

/// One event a [`NeteventClient`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The bytes between `event_data_start` and `event_data_end`.
    pub bytes: Vec<u8>,
    /// The IRQL `push_event` ran at.
    pub irql: KIRQL,
}

#[derive(Default)]
struct Log {
    events: Vec<Received>,
    /// (provider module id, NmrClientAttachProvider's status).
    attaches: Vec<(GUID, i32)>,
    /// The provider's NpiSpecificCharacteristics at each attach (None: NULL).
    specifics: Vec<Option<netevent::NpiSpecific>>,
    /// push_event calls entered so far.
    entered: usize,
    detaches: usize,
    cleanups: usize,
    /// Bindings whose detach answered STATUS_PENDING, not completed yet.
    pending: Vec<HANDLE>,
}

struct Inner {
    config: ClientConfig,
    module_id: NPI_MODULEID,
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    dispatch: netevent_ext_function_addresses_t,
    helpers: [u64; 1],
    /// Which of [`PUSH`] this client's push_event is.
    slot: usize,
    registration: Registration,
    log: Mutex<Log>,
    /// The gate of a gated client: open or not.
    gate: (Mutex<bool>, Condvar),
}

/// A registered host-side client of the netevent NPI (see the module
/// docs). Dropping it deregisters it and waits for the NMR.
pub struct NeteventClient {
    inner: Arc<Inner>,
}

// SAFETY: the raw pointers in `Inner` point into the Arc's own allocation
// (or to statics); the mutable state is atomic or behind a mutex.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

/// push_event has no context argument (a driver finds its state through a
/// global): each client takes one of these slots, whose function finds it.
const SLOTS: usize = 4;
static CLIENTS: Mutex<[Option<Arc<Inner>>; SLOTS]> = Mutex::new([None, None, None, None]);
const PUSH: [PushEventFn; SLOTS] = [push0, push1, push2, push3];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn push(slot: usize, info: *mut netevent_event_info_t) {
    let Some(c) = lock(&CLIENTS)[slot].clone() else {
        panic!("push_event of client slot {slot} called with no client in it");
    };
    lock(&c.log).entered += 1;
    // SAFETY: the provider passes a valid event description whose bytes
    // lie between start and end.
    let i = unsafe { *info };
    let len = (i.event_data_end as usize)
        .checked_sub(i.event_data_start as usize)
        .expect("event_data_end before event_data_start");
    // SAFETY: as above.
    let bytes = unsafe { std::slice::from_raw_parts(i.event_data_start, len).to_vec() };
    if c.config.overread {
        // SAFETY: none: this is the bug the guard page catches (the test
        // runs it in a child process).
        let past = unsafe { std::ptr::read_volatile(i.event_data_end) };
        std::hint::black_box(past);
    }
    if c.config.scribble && len > 0 {
        // SAFETY: inside the event's bytes; writing them is the client bug
        // the provider reports.
        unsafe { *i.event_data_start ^= 0xff };
    }
    if c.config.gated {
        let (m, cv) = &c.gate;
        drop(wait_while(
            "the test to open the netevent client's gate",
            cv,
            lock(m),
            |open| !*open,
        ));
    }
    lock(&c.log).events.push(Received {
        bytes,
        irql: irql::current(),
    });
}

unsafe extern "win64" fn push0(info: *mut netevent_event_info_t) {
    push(0, info)
}
unsafe extern "win64" fn push1(info: *mut netevent_event_info_t) {
    push(1, info)
}
unsafe extern "win64" fn push2(info: *mut netevent_event_info_t) {
    push(2, info)
}
unsafe extern "win64" fn push3(info: *mut netevent_event_info_t) {
    push(3, info)
}

impl NeteventClient {
    /// Registers a client as `config` describes; the NMR attaches it to
    /// every registered netevent provider before this returns. Errs with
    /// NmrRegisterClient's status. At most four clients exist at once.
    pub fn register(config: ClientConfig) -> Result<NeteventClient, i32> {
        let slot = {
            let clients = lock(&CLIENTS);
            clients
                .iter()
                .position(Option::is_none)
                .expect("at most four NeteventClients at once")
        };
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let base = weak.as_ptr();
            // Pointers into the Arc's allocation, which never moves.
            // SAFETY: only addresses are computed (no read) from the
            // allocation `new_cyclic` reserved.
            let (module_id, helpers) = unsafe {
                (
                    std::ptr::addr_of!((*base).module_id),
                    std::ptr::addr_of!((*base).helpers),
                )
            };
            let push = if config.null_push {
                0
            } else {
                PUSH[slot] as usize as u64
            };
            Inner {
                config,
                module_id: NPI_MODULEID {
                    Length: std::mem::size_of::<NPI_MODULEID>() as u16,
                    Type: nmr::MIT_GUID,
                    Guid: config.module,
                },
                characteristics: NPI_CLIENT_CHARACTERISTICS {
                    Version: 0,
                    Length: std::mem::size_of::<NPI_CLIENT_CHARACTERISTICS>() as u16,
                    ClientAttachProvider: Some(client_attach),
                    ClientDetachProvider: Some(client_detach),
                    ClientCleanupBindingContext: Some(client_cleanup),
                    ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                        Version: 0,
                        Size: std::mem::size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
                        NpiId: &NETEVENT_NPI_ID_STATIC,
                        ModuleId: module_id,
                        Number: 0,
                        NpiSpecificCharacteristics: std::ptr::null(),
                    },
                },
                dispatch: netevent_ext_function_addresses_t {
                    header: netevent_ext_header_t {
                        version: config.version,
                        size: config.size,
                    },
                    capture_type: config.capture_type,
                    helper_function_count: config.helper_function_count,
                    helper_function_address: if config.null_helpers {
                        std::ptr::null()
                    } else {
                        helpers.cast()
                    },
                },
                helpers: [push],
                slot,
                registration: Registration::default(),
                log: Mutex::new(Log::default()),
                gate: (Mutex::new(false), Condvar::new()),
            }
        });
        lock(&CLIENTS)[slot] = Some(inner.clone());
        let mut handle: HANDLE = 0;
        // SAFETY: the characteristics and context live in the Arc, kept in
        // CLIENTS until the deregistration was waited for.
        let status = unsafe {
            nmr::NmrRegisterClient(
                &inner.characteristics,
                Arc::as_ptr(&inner).cast_mut().cast(),
                &mut handle,
            )
        };
        if status != STATUS_SUCCESS {
            lock(&CLIENTS)[slot] = None;
            return Err(status);
        }
        inner.registration.set(handle);
        Ok(NeteventClient { inner })
    }

    /// Its NMR module id.
    pub fn module(&self) -> GUID {
        self.inner.config.module
    }

    /// Its registration handle (0 once deregistration began).
    pub fn handle(&self) -> HANDLE {
        self.inner.registration.handle()
    }

    /// Its push_event (what its dispatch table publishes).
    pub fn push_event(&self) -> PushEventFn {
        PUSH[self.inner.slot]
    }

    /// Sets the capture type in its dispatch table (which providers read
    /// at every event).
    pub fn set_capture_type(&self, capture: u32) {
        let p = std::ptr::addr_of!(self.inner.dispatch.capture_type).cast_mut();
        // SAFETY: a field of our own table; providers read it with volatile
        // loads, as a driver updates it while bound.
        unsafe { std::ptr::write_volatile(p, capture) };
    }

    /// Takes the events received so far.
    pub fn take_events(&self) -> Vec<Received> {
        std::mem::take(&mut lock(&self.inner.log).events)
    }

    /// (provider module id, status) of every NmrClientAttachProvider call.
    pub fn attaches(&self) -> Vec<(GUID, i32)> {
        lock(&self.inner.log).attaches.clone()
    }

    /// The provider's NpiSpecificCharacteristics at each attach.
    pub fn provider_specifics(&self) -> Vec<Option<netevent::NpiSpecific>> {
        lock(&self.inner.log).specifics.clone()
    }

    /// How many push_event calls have been entered.
    pub fn entered(&self) -> usize {
        lock(&self.inner.log).entered
    }

    /// Opens the gate of a gated client: held calls go on, later ones pass.
    pub fn open(&self) {
        let (m, cv) = &self.inner.gate;
        *lock(m) = true;
        cv.notify_all();
    }

    /// How many times ClientDetachProvider / ClientCleanupBindingContext ran.
    pub fn detaches(&self) -> usize {
        lock(&self.inner.log).detaches
    }

    pub fn cleanups(&self) -> usize {
        lock(&self.inner.log).cleanups
    }

    /// Bindings whose detach is pending (detach_pending clients).
    pub fn pending_detaches(&self) -> Vec<HANDLE> {
        lock(&self.inner.log).pending.clone()
    }

    /// Completes every pending detach (NmrClientDetachProviderComplete).
    pub fn complete_detaches(&self) {
        let pending = std::mem::take(&mut lock(&self.inner.log).pending);
        for b in pending {
            // SAFETY: a binding whose ClientDetachProvider answered
            // STATUS_PENDING, completed once (taken from the list).
            unsafe { nmr::NmrClientDetachProviderComplete(b) };
        }
    }

    /// Begins deregistering (once) and returns NmrDeregisterClient's status.
    pub fn begin_deregister(&self) -> i32 {
        self.inner.registration.begin_deregister()
    }

    /// Waits for a pending deregistration (none: returns at once).
    pub fn wait_deregistered(&self) {
        self.inner.registration.wait();
    }

    /// Forgets the registration without calling the NMR (for a test that
    /// waited for the deregistration itself, or whose NMR state was reset).
    pub fn abandon(self) {
        self.inner.registration.forget();
        lock(&self.inner.log).pending.clear();
    }

    /// Deregisters (completing its own pending detaches) and waits.
    pub fn deregister(&self) {
        self.begin_deregister();
        self.complete_detaches();
        self.wait_deregistered();
    }
}

impl Drop for NeteventClient {
    fn drop(&mut self) {
        self.open();
        self.deregister();
        let mut clients = lock(&CLIENTS);
        if clients[self.inner.slot]
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &self.inner))
        {
            clients[self.inner.slot] = None;
        }
    }
}

static NETEVENT_NPI_ID_STATIC: GUID = netevent::NETEVENT_NPI_ID;

/// A client's binding context: the client and the binding handle (which
/// ClientDetachProvider needs to complete a pending detach).
struct BindingCtx {
    client: *const Inner,
    binding: HANDLE,
}

unsafe extern "win64" fn client_attach(
    binding: HANDLE,
    context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> i32 {
    // SAFETY: the context registered with this client, alive while registered.
    let c = unsafe { &*(context as *const Inner) };
    // SAFETY: the NMR passes the provider's live registration instance.
    let (provider_module, specific) = unsafe {
        let p = &*provider;
        let s = p.NpiSpecificCharacteristics as *const netevent::NpiSpecific;
        (
            (*p.ModuleId).Guid,
            (!s.is_null()).then(|| std::ptr::read_unaligned(s)),
        )
    };
    lock(&c.log).specifics.push(specific);
    let dispatch: *const c_void = if c.config.null_dispatch {
        std::ptr::null()
    } else {
        (&c.dispatch as *const netevent_ext_function_addresses_t).cast()
    };
    let ctx = Box::into_raw(Box::new(BindingCtx { client: c, binding }));
    let mut provider_context: *mut c_void = std::ptr::null_mut();
    let mut provider_dispatch: *const c_void = std::ptr::null();
    // SAFETY: inside ClientAttachProvider with the NMR's binding handle; the
    // table stays valid while the client is registered, the binding
    // context until its cleanup.
    let status = unsafe {
        nmr::NmrClientAttachProvider(
            binding,
            ctx.cast(),
            dispatch,
            &mut provider_context,
            &mut provider_dispatch,
        )
    };
    if status != STATUS_SUCCESS {
        // SAFETY: not attached: no one else has the box.
        drop(unsafe { Box::from_raw(ctx) });
    }
    lock(&c.log).attaches.push((provider_module, status));
    status
}

unsafe extern "win64" fn client_detach(context: *mut c_void) -> i32 {
    // SAFETY: the binding context given at attach, alive until its cleanup;
    // its client is alive until its deregistration was waited for.
    let (ctx, c) = unsafe {
        let ctx = &*(context as *const BindingCtx);
        (ctx, &*ctx.client)
    };
    let mut log = lock(&c.log);
    log.detaches += 1;
    if c.config.detach_pending {
        log.pending.push(ctx.binding);
        STATUS_PENDING
    } else {
        STATUS_SUCCESS
    }
}

unsafe extern "win64" fn client_cleanup(context: *mut c_void) {
    // SAFETY: the box given at attach, cleaned up once (the NMR's contract).
    let ctx = unsafe { Box::from_raw(context as *mut BindingCtx) };
    // SAFETY: as in client_detach.
    let c = unsafe { &*ctx.client };
    lock(&c.log).cleanups += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_run_data_in_is_the_data_header_the_pktmon_header_and_the_payload() {
        let input = TestRunInput::new(101, &[0xaa, 0xbb], &[1, 2, 3]).unwrap();
        let (ctx, data) = test_run_input(&input);
        assert_eq!(ctx, vec![0; 24]);
        assert_eq!(data.len(), 4 + 0x35 + 3);
        assert_eq!(data[..4], [101, 0, 1, 0], "type, reserved, version 1");
        assert_eq!(data[4..8], 101u32.to_le_bytes(), "the PktMon event id");
        assert_eq!(data[8..10], [0xaa, 0xbb], "the header bytes after the id");
        assert!(data[10..0x39].iter().all(|&b| b == 0), "the rest zero");
        assert_eq!(data[0x39..], [1, 2, 3], "the payload after both headers");
        assert_eq!(
            TestRunInput::new(100, &[], &[]).unwrap().data_in().len(),
            0x39,
            "the smallest event the driver takes"
        );
        // The header after the id holds 0x31 bytes.
        assert!(TestRunInput::new(100, &[0; 0x31], &[]).is_ok());
        let e = TestRunInput::new(100, &[0; 0x32], &[]).unwrap_err();
        assert!(e.contains("49 bytes after the event id; 50 given"), "{e}");
    }

    #[test]
    fn test_run_context_out_is_three_pointers() {
        let mut b = Vec::new();
        for v in [1u64, 0x39, u64::MAX] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            TestRunContextOut::parse(&b),
            Some(TestRunContextOut {
                data_meta: 1,
                data: 0x39,
                data_end: u64::MAX
            })
        );
        assert_eq!(TestRunContextOut::parse(&b[..23]), None);
        b.push(0);
        assert_eq!(TestRunContextOut::parse(&b), None);
    }
}
