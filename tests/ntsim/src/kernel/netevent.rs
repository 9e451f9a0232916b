//! The provider side of the netevent NPI: simulated PktMon modules that
//! hand network events to their NMR clients (the role of upstream's
//! `netevent_sim` test driver, and of PktMon on Windows).
//!
//! A provider registers with the NMR ([`register_provider`]) as an NMR
//! provider of [`NETEVENT_NPI_ID`], with the registration instance the
//! netevent NPI defines (NpiSpecificCharacteristics -> `{ Size 4, Version 2 }`,
//! [`NpiSpecific`]; [`register_provider_with`] registers a malformed one,
//! with other or NULL characteristics) and no provider dispatch. It attaches every client that
//! hands it a well-formed dispatch table ([`netevent_ext_function_addresses_t`]:
//! version [`EXTENSION_VERSION`], size [`CLIENT_DISPATCH_SIZE`], at least one
//! helper address, a non-null `push_event`); a malformed table is refused
//! with STATUS_INVALID_PARAMETER and recorded as a violation (kind
//! `netevent`).
//!
//! [`deliver`] hands one [`Event`] to every attached client of a provider:
//! the bytes a PktMon provider passes (the 0x35-byte
//! `PKTMON_EVT_STREAM_PACKET_HEADER` whose first u32 is the event id, then
//! the payload) in a pool block that ends at the special pool's guard page
//! (a read past `event_data_end` faults at once and is reported as a crash
//! in driver code), by calling the client's `push_event` at PASSIVE_LEVEL
//! or DISPATCH_LEVEL ([`DeliveryIrql`]; by default alternately, as
//! netevent_sim does). The client's `capture_type` is read from its dispatch
//! table at every delivery, and an event it excludes is not delivered (All:
//! every event; Drop: type 100; Flow: type 101; None: nothing): this is how
//! PktMon applies the capture type, so a client's None/Drop/Flow setting
//! takes effect at the provider. After the call the block must be
//! unchanged (the client does not own the provider's event: a write into it
//! is a violation) and `push_event` must return at the IRQL it was called at.
//!
//! Deregistration ([`deregister_provider`]) detaches every client: the
//! provider's ProviderDetachClient stops new deliveries to the binding and
//! answers STATUS_PENDING while a delivery is still in `push_event` (the
//! last one completes the detach), then the NMR detaches the client, and
//! [`deregister_provider`] waits (bounded by
//! [`crate::kernel::sync::wait_limit`]) until every client has completed.
//!
//! Several providers may be registered at once, each under a number
//! (`id`), with module id [`provider_module_id`]. [`crate::Sim::finish`]
//! deregisters those still registered ([`shutdown`]) before it looks for
//! leftovers, as the system's providers outlive a driver.

use crate::kernel::nmr::{
    self, NPI_MODULEID, NPI_PROVIDER_CHARACTERISTICS, NPI_REGISTRATION_INSTANCE,
};
use crate::kernel::status::{
    self, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS,
};
use crate::kernel::types::{DISPATCH_LEVEL, GUID, HANDLE, KIRQL, PASSIVE_LEVEL};
use crate::kernel::{fault, irql, pool, violation};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(test)]
mod tests;

/// The netevent NPI: {2227e81a-8d8b-11d4-abad-009027719e09}.
pub const NETEVENT_NPI_ID: GUID = GUID {
    data1: 0x2227e81a,
    data2: 0x8d8b,
    data3: 0x11d4,
    data4: [0xab, 0xad, 0x00, 0x90, 0x27, 0x71, 0x9e, 0x09],
};

/// The module id of upstream's netevent_sim, {463f69c5-5871-4a8c-b3c8-056933c3c0ec}:
/// the module id of provider 1 ([`provider_module_id`]).
pub const SIM_PROVIDER_MODULE_ID: GUID = GUID {
    data1: 0x463f69c5,
    data2: 0x5871,
    data3: 0x4a8c,
    data4: [0xb3, 0xc8, 0x05, 0x69, 0x33, 0xc3, 0xc0, 0xec],
};

/// `NETEVENT_EVENT_TYPE_PKTMON_DROP`.
pub const EVENT_TYPE_DROP: u32 = 100;
/// `NETEVENT_EVENT_TYPE_PKTMON_FLOW`.
pub const EVENT_TYPE_FLOW: u32 = 101;
/// `PKTMON_EVENT_HEADER_LENGTH`: bytes of `PKTMON_EVT_STREAM_PACKET_HEADER`
/// before the payload; its first u32 is the event id.
pub const PKTMON_EVENT_HEADER_LENGTH: usize = 0x35;

/// `netevent_capture_type_t`.
pub const CAPTURE_ALL: u32 = 1;
pub const CAPTURE_FLOW: u32 = 2;
pub const CAPTURE_DROP: u32 = 3;
pub const CAPTURE_NONE: u32 = 4;

/// The version a client's dispatch table must have
/// (`EBPF_NETEVENT_EXTENSION_VERSION`).
pub const EXTENSION_VERSION: u16 = 2;
/// The size of a client's dispatch table on x64.
pub const CLIENT_DISPATCH_SIZE: usize = 32;

/// The provider's NpiSpecificCharacteristics: `{ USHORT Size; USHORT Version; }`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpiSpecific {
    pub size: u16,
    pub version: u16,
}

/// What every simulated provider registers: `{ Size 4, Version 2 }`.
pub const PROVIDER_NPI_SPECIFIC: NpiSpecific = NpiSpecific {
    size: 4,
    version: 2,
};

/// The header of a client's dispatch table (`ebpf_extension_header_t`-like:
/// a u16 version, then a size_t size).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct netevent_ext_header_t {
    pub version: u16,
    pub size: usize,
}

/// The client dispatch table a netevent client hands to
/// `NmrClientAttachProvider` (32 bytes on x64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct netevent_ext_function_addresses_t {
    pub header: netevent_ext_header_t,
    /// `netevent_capture_type_t`, read by the provider at every event.
    pub capture_type: u32,
    pub helper_function_count: u32,
    /// `helper_function_address[0]` is `push_event` ([`PushEventFn`]).
    pub helper_function_address: *const u64,
}

/// What `push_event` gets: the event's bytes, `end` exclusive.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct netevent_event_info_t {
    pub event_data_start: *mut u8,
    pub event_data_end: *mut u8,
}

/// The client's `push_event`.
pub type PushEventFn = unsafe extern "win64" fn(event: *mut netevent_event_info_t);

const _: () = {
    assert!(std::mem::size_of::<NpiSpecific>() == 4);
    assert!(std::mem::size_of::<netevent_ext_function_addresses_t>() == CLIENT_DISPATCH_SIZE);
    assert!(std::mem::offset_of!(netevent_ext_function_addresses_t, capture_type) == 16);
    assert!(std::mem::offset_of!(netevent_ext_function_addresses_t, helper_function_count) == 20);
    assert!(std::mem::offset_of!(netevent_ext_function_addresses_t, helper_function_address) == 24);
    assert!(std::mem::size_of::<netevent_event_info_t>() == 16);
};

/// Pool tag of the event blocks handed to clients ('PkMn').
const EVENT_TAG: u32 = u32::from_le_bytes(*b"PkMn");

/// The fault-injection point of a provider's ProviderAttachClient (a
/// provider that cannot allocate its binding refuses the client with
/// STATUS_INSUFFICIENT_RESOURCES).
pub const ATTACH_FAULT: &str = "NeteventProviderAttachClient";

/// The module id of provider `id`: [`SIM_PROVIDER_MODULE_ID`] for 1, and
/// that GUID with `id - 1` added to its first field for the others.
pub fn provider_module_id(id: u32) -> GUID {
    GUID {
        data1: SIM_PROVIDER_MODULE_ID
            .data1
            .wrapping_add(id.wrapping_sub(1)),
        ..SIM_PROVIDER_MODULE_ID
    }
}

/// Whether a client whose capture type is `capture` wants an event of type
/// `event_type` (None: an event too short to carry a type).
pub fn capture_accepts(capture: u32, event_type: Option<u32>) -> bool {
    match capture {
        CAPTURE_ALL => true,
        CAPTURE_FLOW => event_type == Some(EVENT_TYPE_FLOW),
        CAPTURE_DROP => event_type == Some(EVENT_TYPE_DROP),
        _ => false,
    }
}

/// A capture type's name (`netevent_capture_type_t` without its prefix).
pub fn capture_name(capture: u32) -> String {
    match capture {
        CAPTURE_ALL => "All".into(),
        CAPTURE_FLOW => "Flow".into(),
        CAPTURE_DROP => "Drop".into(),
        CAPTURE_NONE => "None".into(),
        other => format!("invalid ({other})"),
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One network event as a provider hands it over: its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    bytes: Vec<u8>,
}

impl Event {
    /// An event of type `event_type`: the 0x35-byte PktMon header (the type
    /// as a little-endian u32 at offset 0, the rest zero), then `payload`.
    pub fn new(event_type: u32, payload: &[u8]) -> Event {
        Event::with_header(event_type, &[], payload).expect("an empty header tail always fits")
    }

    /// As [`Event::new`], with `header_tail` as the header's bytes after the
    /// event id (at most 0x31 bytes; the rest stays zero).
    pub fn with_header(
        event_type: u32,
        header_tail: &[u8],
        payload: &[u8],
    ) -> Result<Event, String> {
        let room = PKTMON_EVENT_HEADER_LENGTH - 4;
        if header_tail.len() > room {
            return Err(format!(
                "the PktMon header holds {room} bytes after the event id; {} given",
                header_tail.len()
            ));
        }
        let mut bytes = vec![0u8; PKTMON_EVENT_HEADER_LENGTH + payload.len()];
        bytes[..4].copy_from_slice(&event_type.to_le_bytes());
        bytes[4..4 + header_tail.len()].copy_from_slice(header_tail);
        bytes[PKTMON_EVENT_HEADER_LENGTH..].copy_from_slice(payload);
        Ok(Event { bytes })
    }

    /// An event of exactly these bytes (for malformed events: shorter than
    /// the header, say).
    pub fn raw(bytes: &[u8]) -> Event {
        Event {
            bytes: bytes.to_vec(),
        }
    }

    /// The bytes `push_event` sees between start and end.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The event id (the first u32), if the event has four bytes.
    pub fn event_type(&self) -> Option<u32> {
        let b = self.bytes.get(..4)?;
        Some(u32::from_le_bytes(b.try_into().expect("four bytes")))
    }
}

/// The IRQL a delivery calls `push_event` at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeliveryIrql {
    Passive,
    Dispatch,
    /// Per provider, PASSIVE_LEVEL, then DISPATCH_LEVEL, and so on (as
    /// netevent_sim raises every second event).
    #[default]
    Alternate,
}

/// What happened to one client of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientResult {
    /// `push_event` was called and returned.
    Delivered,
    /// The client's capture type excludes the event.
    Filtered,
    /// The binding is detaching: no more events for it.
    Detaching,
    /// The client's dispatch table became malformed (a violation was
    /// recorded); nothing was called.
    Malformed,
}

/// One client of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDelivery {
    /// The client's NMR module id.
    pub module: GUID,
    /// The NMR binding handle.
    pub binding: HANDLE,
    /// The capture type read from its dispatch table for this event.
    pub capture_type: u32,
    pub result: ClientResult,
}

/// What [`deliver`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub provider: u32,
    /// The IRQL `push_event` was called at.
    pub irql: KIRQL,
    pub event_type: Option<u32>,
    /// Every client bound when the event came, in attach order.
    pub clients: Vec<ClientDelivery>,
}

impl Delivery {
    /// How many clients got the event.
    pub fn delivered(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.result == ClientResult::Delivered)
            .count()
    }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

#[derive(Default)]
struct BindingState {
    /// ProviderDetachClient ran: no new deliveries.
    detaching: bool,
    /// Deliveries inside `push_event` now.
    in_flight: usize,
    /// ProviderDetachClient answered STATUS_PENDING: the last delivery
    /// calls NmrProviderDetachClientComplete.
    completion_owed: bool,
}

/// One attached client (the provider binding context is an `Arc` of it).
struct Binding {
    nmr: HANDLE,
    module: GUID,
    /// The client's dispatch table (valid while bound: the client's contract).
    dispatch: usize,
    state: Mutex<BindingState>,
}

/// One registered provider. The characteristics and what they point to
/// live in boxes of their own, which never move while the provider is
/// registered.
struct Provider {
    id: u32,
    _module_id: Box<NPI_MODULEID>,
    _specific: Box<NpiSpecific>,
    characteristics: Box<NPI_PROVIDER_CHARACTERISTICS>,
    /// The NMR registration (0 once deregistration began).
    handle: AtomicUsize,
    bindings: Mutex<Vec<Arc<Binding>>>,
    /// Deliveries so far (for [`DeliveryIrql::Alternate`]).
    deliveries: AtomicU64,
}

// SAFETY: the raw pointers inside the characteristics point into the
// provider's own boxes (or to a static); every mutable field is atomic or
// behind a mutex.
unsafe impl Send for Provider {}
// SAFETY: as above.
unsafe impl Sync for Provider {}

static NPI_ID: GUID = NETEVENT_NPI_ID;

static PROVIDERS: Mutex<BTreeMap<u32, Arc<Provider>>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation is a single insert/remove/assignment: a panic leaves
    // the data consistent, so poison carries no meaning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn netevent_violation(message: String) {
    violation::record("netevent", message);
}

/// The providers registered now, by number.
pub fn registered() -> Vec<u32> {
    lock(&PROVIDERS).keys().copied().collect()
}

/// The module ids of the clients attached to provider `id` (in attach
/// order; a detaching client is still listed until its cleanup).
pub fn clients(id: u32) -> Vec<GUID> {
    let Some(p) = lock(&PROVIDERS).get(&id).cloned() else {
        return Vec::new();
    };
    let clients = lock(&p.bindings).iter().map(|b| b.module).collect();
    clients
}

/// Registers provider `id` (1 or more) with the NMR, which attaches every
/// registered client of the netevent NPI before this returns. Must be
/// called at PASSIVE_LEVEL.
pub fn register_provider(id: u32) -> Result<(), String> {
    register_provider_with(id, Some(PROVIDER_NPI_SPECIFIC))
}

/// As [`register_provider`], with `specific` as the registration's
/// NpiSpecificCharacteristics (None: NULL), for a malformed provider: the
/// netevent NPI's clients refuse a provider without usable
/// characteristics (STATUS_NOINTERFACE).
pub fn register_provider_with(id: u32, specific: Option<NpiSpecific>) -> Result<(), String> {
    if id == 0 {
        return Err("netevent provider ids start at 1".into());
    }
    if irql::current() != PASSIVE_LEVEL {
        return Err(format!(
            "registering netevent provider {id} at IRQL {}: NmrRegisterProvider needs PASSIVE_LEVEL",
            irql::current()
        ));
    }
    let module_id = Box::new(NPI_MODULEID {
        Length: std::mem::size_of::<NPI_MODULEID>() as u16,
        Type: nmr::MIT_GUID,
        Guid: provider_module_id(id),
    });
    let null_specific = specific.is_none();
    let specific = Box::new(specific.unwrap_or(PROVIDER_NPI_SPECIFIC));
    let characteristics = Box::new(NPI_PROVIDER_CHARACTERISTICS {
        Version: 0,
        Length: std::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>() as u16,
        ProviderAttachClient: Some(provider_attach_client),
        ProviderDetachClient: Some(provider_detach_client),
        ProviderCleanupBindingContext: Some(provider_cleanup_binding_context),
        ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: std::mem::size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            NpiId: &NPI_ID,
            ModuleId: &*module_id,
            Number: 0,
            NpiSpecificCharacteristics: if null_specific {
                std::ptr::null()
            } else {
                (&*specific as *const NpiSpecific).cast()
            },
        },
    });
    let provider = Arc::new(Provider {
        id,
        _module_id: module_id,
        _specific: specific,
        characteristics,
        handle: AtomicUsize::new(0),
        bindings: Mutex::new(Vec::new()),
        deliveries: AtomicU64::new(0),
    });
    {
        let mut all = lock(&PROVIDERS);
        if all.contains_key(&id) {
            return Err(format!("netevent provider {id} is already registered"));
        }
        all.insert(id, provider.clone());
    }
    let mut handle: HANDLE = 0;
    // SAFETY: the characteristics and the context (the provider itself)
    // stay valid until the provider is removed from PROVIDERS, which
    // happens only after its deregistration was waited for (or at reset,
    // after the NMR forgot it).
    let status = unsafe {
        nmr::NmrRegisterProvider(
            &*provider.characteristics,
            Arc::as_ptr(&provider).cast_mut().cast(),
            &mut handle,
        )
    };
    if status != STATUS_SUCCESS {
        lock(&PROVIDERS).remove(&id);
        return Err(format!(
            "NmrRegisterProvider for netevent provider {id} returned {}",
            status::describe(status)
        ));
    }
    provider.handle.store(handle, Ordering::Release);
    Ok(())
}

/// Deregisters provider `id`: the NMR detaches every client (the driver's
/// ClientDetachProvider runs), and this waits until each has completed its
/// detach (a wait longer than [`crate::kernel::sync::wait_limit`] fails with
/// a message). Must be called at PASSIVE_LEVEL.
pub fn deregister_provider(id: u32) -> Result<(), String> {
    if irql::current() != PASSIVE_LEVEL {
        return Err(format!(
            "deregistering netevent provider {id} at IRQL {}: NmrDeregisterProvider needs PASSIVE_LEVEL",
            irql::current()
        ));
    }
    let found = lock(&PROVIDERS).get(&id).cloned();
    let provider = found.ok_or_else(|| {
        format!(
            "no netevent provider {id} is registered (registered: {})",
            names(&registered())
        )
    })?;
    let handle = provider.handle.swap(0, Ordering::AcqRel);
    if handle == 0 {
        return Err(format!("netevent provider {id} is already deregistering"));
    }
    // SAFETY: our own live registration, deregistered once (the swap).
    let status = unsafe { nmr::NmrDeregisterProvider(handle) };
    if status != STATUS_PENDING {
        return Err(format!(
            "NmrDeregisterProvider for netevent provider {id} returned {}",
            status::describe(status)
        ));
    }
    // SAFETY: the handle NmrDeregisterProvider answered STATUS_PENDING to,
    // waited for once.
    let status = unsafe { nmr::NmrWaitForProviderDeregisterComplete(handle) };
    lock(&PROVIDERS).remove(&id);
    if status != STATUS_SUCCESS {
        return Err(format!(
            "NmrWaitForProviderDeregisterComplete for netevent provider {id} returned {}",
            status::describe(status)
        ));
    }
    Ok(())
}

fn names(ids: &[u32]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The provider a delivery goes to: `id`, or the only registered one.
fn pick(id: Option<u32>) -> Result<Arc<Provider>, String> {
    let all = lock(&PROVIDERS);
    match id {
        Some(id) => all.get(&id).cloned().ok_or_else(|| {
            format!(
                "no netevent provider {id} is registered (registered: {})",
                names(&all.keys().copied().collect::<Vec<_>>())
            )
        }),
        None => match all.len() {
            0 => Err("no netevent provider is registered (register one first)".into()),
            1 => Ok(all.values().next().expect("one").clone()),
            _ => Err(format!(
                "several netevent providers are registered ({}): name one",
                names(&all.keys().copied().collect::<Vec<_>>())
            )),
        },
    }
}

/// Hands `event` to every client attached to provider `id` (None: the only
/// registered provider) whose capture type accepts it, by calling its
/// `push_event` at the IRQL `irql` chooses. Errs when there is no such
/// provider. Called at PASSIVE_LEVEL (the provider raises itself).
pub fn deliver(id: Option<u32>, event: &Event, irql: DeliveryIrql) -> Result<Delivery, String> {
    if irql::current() != PASSIVE_LEVEL {
        return Err(format!(
            "a netevent delivery starts at PASSIVE_LEVEL (the provider raises itself), not at IRQL {}",
            irql::current()
        ));
    }
    let provider = pick(id)?;
    let n = provider.deliveries.fetch_add(1, Ordering::AcqRel);
    let level = match irql {
        DeliveryIrql::Passive => PASSIVE_LEVEL,
        DeliveryIrql::Dispatch => DISPATCH_LEVEL,
        DeliveryIrql::Alternate if n % 2 == 0 => PASSIVE_LEVEL,
        DeliveryIrql::Alternate => DISPATCH_LEVEL,
    };
    let bindings: Vec<Arc<Binding>> = lock(&provider.bindings).clone();
    let event_type = event.event_type();
    let mut clients = Vec::with_capacity(bindings.len());
    for b in bindings {
        let capture_type;
        let result = {
            let mut s = lock(&b.state);
            if s.detaching {
                drop(s);
                // SAFETY: the dispatch table stays valid until the client's
                // detach completes, which needs this provider's detach too.
                capture_type = unsafe { read_capture_type(b.dispatch) };
                clients.push(ClientDelivery {
                    module: b.module,
                    binding: b.nmr,
                    capture_type,
                    result: ClientResult::Detaching,
                });
                continue;
            }
            s.in_flight += 1;
            drop(s);
            // SAFETY: bound and not detaching: the table is valid.
            let (result, capture) = unsafe { deliver_one(&provider, &b, event, level) };
            capture_type = capture;
            result
        };
        let complete = {
            let mut s = lock(&b.state);
            s.in_flight -= 1;
            let complete = s.in_flight == 0 && s.completion_owed;
            if complete {
                s.completion_owed = false;
            }
            complete
        };
        if complete {
            // SAFETY: the binding whose ProviderDetachClient answered
            // STATUS_PENDING; completed once (the flag above).
            unsafe { nmr::NmrProviderDetachClientComplete(b.nmr) };
        }
        clients.push(ClientDelivery {
            module: b.module,
            binding: b.nmr,
            capture_type,
            result,
        });
    }
    Ok(Delivery {
        provider: provider.id,
        irql: level,
        event_type,
        clients,
    })
}

/// # Safety
/// `dispatch` is a bound client's dispatch table.
unsafe fn read_capture_type(dispatch: usize) -> u32 {
    // SAFETY: per the caller; the client may change the field at any time,
    // so it is read once, as a volatile load.
    unsafe {
        std::ptr::read_volatile(
            (dispatch + std::mem::offset_of!(netevent_ext_function_addresses_t, capture_type))
                as *const u32,
        )
    }
}

/// Delivers to one binding: capture filter, then `push_event` on a guarded
/// copy at `level`.
///
/// # Safety
/// The binding is bound and not detaching (its dispatch table is valid).
unsafe fn deliver_one(
    provider: &Provider,
    b: &Binding,
    event: &Event,
    level: KIRQL,
) -> (ClientResult, u32) {
    // SAFETY: per the caller.
    let capture = unsafe { read_capture_type(b.dispatch) };
    if !(CAPTURE_ALL..=CAPTURE_NONE).contains(&capture) {
        netevent_violation(format!(
            "netevent provider {}: client {} (binding {:#x}) has capture_type {capture} in its \
             dispatch table (netevent_capture_type_t is 1..=4)",
            provider.id, b.module, b.nmr
        ));
        return (ClientResult::Malformed, capture);
    }
    if !capture_accepts(capture, event.event_type()) {
        return (ClientResult::Filtered, capture);
    }
    // SAFETY: per the caller the table is valid; it was well formed at
    // attach and is read again, as a provider reads it at every event.
    let table =
        unsafe { std::ptr::read_unaligned(b.dispatch as *const netevent_ext_function_addresses_t) };
    let push = (table.helper_function_count >= 1 && !table.helper_function_address.is_null())
        // SAFETY: a non-null helper array of at least one entry, the
        // client's contract.
        .then(|| unsafe { std::ptr::read_unaligned(table.helper_function_address) })
        .filter(|&f| f != 0);
    let Some(push) = push else {
        netevent_violation(format!(
            "netevent provider {}: client {} (binding {:#x}) no longer has a push_event in its \
             dispatch table (helper_function_count {}, helper_function_address {:p})",
            provider.id,
            b.module,
            b.nmr,
            table.helper_function_count,
            table.helper_function_address
        ));
        return (ClientResult::Malformed, capture);
    };
    let bytes = event.bytes();
    let len = bytes.len();
    // A block of exactly `len` bytes: in special pool it ends at the guard
    // page, so a read past event_data_end faults.
    let block = pool::kernel_alloc_exact(len.max(1), 1, EVENT_TAG).cast::<u8>();
    assert!(!block.is_null(), "the host is out of memory");
    // SAFETY: the block holds at least `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), block, len) };
    let mut info = netevent_event_info_t {
        event_data_start: block,
        // SAFETY: one past the end of the block's `len` bytes.
        event_data_end: unsafe { block.add(len) },
    };
    // SAFETY: a non-null function address the client published as its
    // push_event, which has this signature (the NPI's contract).
    let f: PushEventFn = unsafe { std::mem::transmute::<u64, PushEventFn>(push) };
    let returned_at = irql::at(level, || {
        // SAFETY: the client's push_event with a valid event description,
        // at an IRQL the NPI allows; no lock is held.
        unsafe { f(&mut info) };
        irql::current()
    });
    if returned_at != level {
        netevent_violation(format!(
            "netevent provider {}: push_event of client {} returned at IRQL {returned_at}; it was \
             called at IRQL {level}",
            provider.id, b.module
        ));
    }
    // SAFETY: the block is still ours (the client may not keep it).
    let after = unsafe { std::slice::from_raw_parts(block, len) };
    if after != bytes {
        let at = after
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        netevent_violation(format!(
            "netevent provider {}: push_event of client {} wrote into the provider's event \
             (first changed byte at offset {at:#x} of {len}); the event belongs to the provider",
            provider.id, b.module
        ));
    }
    // SAFETY: allocated above, freed once.
    unsafe { pool::kernel_free(block.cast()) };
    (ClientResult::Delivered, capture)
}

// ---------------------------------------------------------------------------
// The provider's NMR callbacks
// ---------------------------------------------------------------------------

/// Why a client dispatch table is malformed, if it is.
///
/// # Safety
/// `dispatch` is null or readable for 32 bytes.
unsafe fn dispatch_problem(dispatch: *const c_void) -> Option<String> {
    if dispatch.is_null() {
        return Some("the client dispatch table is NULL".into());
    }
    // SAFETY: non-null, readable per the caller.
    let t =
        unsafe { std::ptr::read_unaligned(dispatch as *const netevent_ext_function_addresses_t) };
    if t.header.version != EXTENSION_VERSION {
        return Some(format!(
            "header.version is {} (the netevent NPI's is {EXTENSION_VERSION})",
            t.header.version
        ));
    }
    if t.header.size != CLIENT_DISPATCH_SIZE {
        return Some(format!(
            "header.size is {} (netevent_ext_function_addresses_t is {CLIENT_DISPATCH_SIZE} bytes)",
            t.header.size
        ));
    }
    if !(CAPTURE_ALL..=CAPTURE_NONE).contains(&t.capture_type) {
        return Some(format!(
            "capture_type is {} (netevent_capture_type_t is 1..=4)",
            t.capture_type
        ));
    }
    if t.helper_function_count < 1 {
        return Some("helper_function_count is 0 (push_event is helper 0)".into());
    }
    if t.helper_function_address.is_null() {
        return Some("helper_function_address is NULL".into());
    }
    // SAFETY: a non-null array of at least one entry, the client's contract.
    if unsafe { std::ptr::read_unaligned(t.helper_function_address) } == 0 {
        return Some("helper_function_address[0] (push_event) is NULL".into());
    }
    None
}

unsafe extern "win64" fn provider_attach_client(
    nmr_binding_handle: HANDLE,
    provider_context: *mut c_void,
    client_registration_instance: *const NPI_REGISTRATION_INSTANCE,
    _client_binding_context: *mut c_void,
    client_dispatch: *const c_void,
    provider_binding_context: *mut *mut c_void,
    provider_dispatch: *mut *const c_void,
) -> i32 {
    // SAFETY: the context registered with this provider: an Arc<Provider>
    // kept alive until the registration's wait returned.
    let provider = unsafe { &*(provider_context as *const Provider) };
    // SAFETY: the NMR passes the client's live registration instance; its
    // ModuleId was checked non-null at registration.
    let module = unsafe { (*(*client_registration_instance).ModuleId).Guid };
    // SAFETY: a client's dispatch table is readable while it attaches.
    if let Some(problem) = unsafe { dispatch_problem(client_dispatch) } {
        netevent_violation(format!(
            "netevent provider {}: client {module} (binding {nmr_binding_handle:#x}) attached \
             with a malformed dispatch table: {problem}; the provider refuses it",
            provider.id
        ));
        return STATUS_INVALID_PARAMETER;
    }
    if fault::check(ATTACH_FAULT) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let binding = Arc::new(Binding {
        nmr: nmr_binding_handle,
        module,
        dispatch: client_dispatch as usize,
        state: Mutex::new(BindingState::default()),
    });
    lock(&provider.bindings).push(binding.clone());
    // SAFETY: the NMR passes writable output slots.
    unsafe {
        provider_binding_context.write(Arc::into_raw(binding).cast_mut().cast());
        provider_dispatch.write(std::ptr::null());
    }
    STATUS_SUCCESS
}

unsafe extern "win64" fn provider_detach_client(provider_binding_context: *mut c_void) -> i32 {
    // SAFETY: the binding context this provider gave at attach, alive until
    // its cleanup.
    let b = unsafe { &*(provider_binding_context as *const Binding) };
    let mut s = lock(&b.state);
    s.detaching = true;
    if s.in_flight == 0 {
        STATUS_SUCCESS
    } else {
        s.completion_owed = true;
        STATUS_PENDING
    }
}

unsafe extern "win64" fn provider_cleanup_binding_context(provider_binding_context: *mut c_void) {
    // SAFETY: the pointer Arc::into_raw gave at attach, cleaned up once (the
    // NMR's contract).
    let b = unsafe { Arc::from_raw(provider_binding_context as *const Binding) };
    for p in lock(&PROVIDERS).values() {
        lock(&p.bindings).retain(|x| !Arc::ptr_eq(x, &b));
    }
}

/// Deregisters every provider still registered (the end of a run: the
/// system's providers go after the drivers). Returns one message per
/// provider that could not be deregistered.
pub fn shutdown() -> Vec<String> {
    let mut problems = Vec::new();
    for id in registered() {
        if let Err(e) = deregister_provider(id) {
            problems.push(e);
        }
    }
    problems
}

/// Forgets every provider without calling anything (a new machine; the
/// NMR forgets its side at the same time).
pub(crate) fn reset() {
    lock(&PROVIDERS).clear();
}
