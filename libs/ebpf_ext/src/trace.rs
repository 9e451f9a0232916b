//! ETW tracing: one TraceLogging provider per driver, described by the
//! driver's [`TraceProvider`] (name, GUID, the keyword of its hooks' kernel
//! callbacks). ntosebpfext's is `NtosEbpfExtProvider`
//! `{d15cc421-e9e4-459b-87a6-b45b7d84e9a8}`, the same name and GUID as the
//! C ntosebpfext's, with the levels and keywords of its extension tracing,
//! so existing WPR profiles and `logman`/`tracelog` filters work.
//!
//! Each event has a name and typed fields (the list is in
//! docs/debugging.md) and is one function of this module: it first checks
//! that a session wants the event's level and keyword (atomic loads of
//! what the enable callback stored, and a compare) and reads its arguments
//! only then, so a disabled event costs a branch. Where the event also has
//! a `DbgPrintEx` line, the same function prints it, so the two never
//! disagree.
//!
//! The encoding is TraceLogging's, written here rather than through
//! Microsoft's `tracelogging` crate, which did not fit the portable image:
//! its 1.2.4, even with the `kernel_mode` feature, compiles `Guid::new`,
//! declared with `#[link(name = "rpcrt4")]` to call the user-mode
//! `UuidCreate`, into the same object as the provider code, and the linker
//! resolves every symbol of that object before `/OPT:REF` drops unused
//! functions: the link needs an `rpcrt4.lib` (which a driver build does not
//! have) and a definition of `UuidCreate`, so a stand-in library and a
//! stand-in function. Declaring the crate's `Etw*` functions as raw-dylib
//! imports does satisfy its other references. Its enable state is also
//! plain fields that the enable callback writes while other processors
//! read them; here they are atomics. The encoding (provider traits, event
//! metadata, field types) is built at compile time and unit-tested on the
//! host; ntsim decodes every event the driver writes.
//!
//! The provider is registered first in `DriverEntry` and unregistered last
//! at unload, after the hooks are unloaded (nothing that logs runs then).

use crate::nt::{GUID, NTSTATUS};
use core::ffi::CStr;

/// A driver's ETW provider: declared once per driver with
/// [`trace_provider!`](crate::trace_provider), registered by the library
/// at load.
pub struct TraceProvider {
    name: &'static str,
    guid: GUID,
    traits: &'static [u8],
    hook_keyword: u64,
}

impl TraceProvider {
    /// The provider `name` with `guid`, whose provider traits are `traits`
    /// ([`traits`] of `name`: use [`trace_provider!`](crate::trace_provider)),
    /// and whose hooks' kernel-callback events carry `hook_keyword` (e.g.
    /// [`keyword::PROCESS`]).
    pub const fn new(
        name: &'static str,
        guid: GUID,
        traits: &'static [u8],
        hook_keyword: u64,
    ) -> Self {
        assert!(
            traits.len() == traits_len(name),
            "traits are not the name's"
        );
        Self {
            name,
            guid,
            traits,
            hook_keyword,
        }
    }

    /// The provider's name (its TraceLogging traits carry it).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The provider's GUID.
    pub const fn guid(&self) -> GUID {
        self.guid
    }

    /// The provider traits (`EventProviderSetTraits`), also sent with every
    /// event as its provider metadata.
    pub const fn traits(&self) -> &'static [u8] {
        self.traits
    }

    /// The keyword of the events about the hooks' kernel callbacks
    /// (`CallbackRegister`, `CallbackRemove`, `TestRunRefused`, the
    /// `ApiFailure`s of those calls).
    pub const fn hook_keyword(&self) -> u64 {
        self.hook_keyword
    }
}

/// A [`TraceProvider`] (a constant expression, for a `static`):
/// `trace_provider!(name, guid, hook_keyword)`.
#[macro_export]
macro_rules! trace_provider {
    ($name:expr, $guid:expr, $hook_keyword:expr $(,)?) => {{
        const LEN: usize = $crate::trace::traits_len($name);
        static TRAITS: [u8; LEN] = $crate::trace::traits::<LEN>($name);
        $crate::trace::TraceProvider::new($name, $guid, &TRAITS, $hook_keyword)
    }};
}

/// Event levels (`winmeta.h`), as upstream's `EBPF_EXT_TRACELOG_LEVEL_*`.
pub mod level {
    /// `WINEVENT_LEVEL_ERROR`: a failure.
    pub const ERROR: u8 = 2;
    /// `WINEVENT_LEVEL_WARNING`: a refused client.
    pub const WARNING: u8 = 3;
    /// `WINEVENT_LEVEL_INFO`: load, unload, registrations, attach, detach.
    pub const INFO: u8 = 4;
    /// `WINEVENT_LEVEL_VERBOSE`: one event per hook event.
    pub const VERBOSE: u8 = 5;
}

/// Event keywords: upstream's `EBPF_EXT_TRACELOG_KEYWORD_*` values, and one
/// of this driver's own for the per-event records.
pub mod keyword {
    /// `EBPF_EXT_TRACELOG_KEYWORD_BASE`: driver load and unload.
    pub const BASE: u64 = 0x2;
    /// `EBPF_EXT_TRACELOG_KEYWORD_EXTENSION`: NMR providers, clients, the
    /// eBPF store.
    pub const EXTENSION: u64 = 0x4;
    /// `EBPF_EXT_TRACELOG_KEYWORD_PROCESS`: the hooks' kernel callbacks and
    /// the kernel calls made per event (upstream uses it for every hook of
    /// ntosebpfext).
    pub const PROCESS: u64 = 0x80;
    /// `EBPF_EXT_TRACELOG_KEYWORD_NETEVENT`: neteventebpfext's NMR client,
    /// its provider bindings and the events it drops.
    pub const NETEVENT: u64 = 0x100;
    /// This driver's own: one record per hook event (level verbose). Bit 32,
    /// far above upstream's keywords (allocated upwards from 0x8), so a
    /// future upstream keyword does not collide and a 32-bit "all keywords"
    /// mask does not turn the per-event records on.
    pub const HOOK_EVENTS: u64 = 0x1_0000_0000;
}

// ---------------------------------------------------------------------------
// The TraceLogging encoding (target-independent).

/// TraceLogging input types (`TlgIn*`).
mod in_type {
    pub const ANSISTRING: u8 = 2;
    pub const UINT8: u8 = 4;
    pub const INT32: u8 = 7;
    pub const UINT32: u8 = 8;
    pub const UINT64: u8 = 10;
    pub const GUID: u8 = 15;
    pub const HEXINT64: u8 = 21;
    /// Set on the input type when an output type byte follows.
    pub const CHAIN: u8 = 0x80;
}

/// TraceLogging output types (`TlgOut*`).
mod out_type {
    pub const DEFAULT: u8 = 0;
    pub const BOOLEAN: u8 = 3;
    pub const NTSTATUS: u8 = 14;
    pub const UTF8: u8 = 35;
}

/// `WINEVENT_CHANNEL_TRACELOGGING`: the channel of TraceLogging events.
pub const CHANNEL_TRACELOGGING: u8 = 11;

/// A value an event field can hold: its TraceLogging types and its bytes
/// (the value's encoding as the input type decodes it: size and layout).
pub trait FieldValue {
    /// `TlgIn*`.
    const IN: u8;
    /// `TlgOut*` (`DEFAULT`: none).
    const OUT: u8;
    /// The bytes of the value in the event's data.
    fn field_bytes(&self) -> &[u8];
}

/// Views a plain-data value as its bytes (little-endian on the driver's
/// targets, as TraceLogging encodes integers).
///
/// # Safety
/// `T` has no padding bytes (every byte of a value is initialized).
unsafe fn bytes_of<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: the slice covers exactly the value, which lives as long as
    // the borrow; every byte is initialized (no padding: the caller).
    unsafe { core::slice::from_raw_parts((value as *const T).cast(), core::mem::size_of::<T>()) }
}

macro_rules! scalar {
    ($t:ty, $in:expr, $out:expr) => {
        impl FieldValue for $t {
            const IN: u8 = $in;
            const OUT: u8 = $out;
            fn field_bytes(&self) -> &[u8] {
                // SAFETY: an integer has no padding.
                unsafe { bytes_of(self) }
            }
        }
    };
}

scalar!(u8, in_type::UINT8, out_type::DEFAULT);
scalar!(u32, in_type::UINT32, out_type::DEFAULT);
scalar!(u64, in_type::UINT64, out_type::DEFAULT);
scalar!(i32, in_type::INT32, out_type::DEFAULT);

/// A boolean field (`UINT8` shown as a boolean, as `TraceLoggingBoolean`).
#[derive(Clone, Copy)]
pub struct Bool(u8);

impl Bool {
    /// The field value of `b`.
    pub const fn new(b: bool) -> Bool {
        Bool(b as u8)
    }
}

impl FieldValue for Bool {
    const IN: u8 = in_type::UINT8;
    const OUT: u8 = out_type::BOOLEAN;
    fn field_bytes(&self) -> &[u8] {
        core::slice::from_ref(&self.0)
    }
}

/// An NTSTATUS field (`INT32` shown as NTSTATUS, as `TraceLoggingNTStatus`).
#[derive(Clone, Copy)]
pub struct NtStatus(pub NTSTATUS);

impl FieldValue for NtStatus {
    const IN: u8 = in_type::INT32;
    const OUT: u8 = out_type::NTSTATUS;
    fn field_bytes(&self) -> &[u8] {
        // SAFETY: an integer has no padding.
        unsafe { bytes_of(&self.0) }
    }
}

/// A handle or address shown in hex (`HEXINT64`).
#[derive(Clone, Copy)]
pub struct HexU64(pub u64);

impl FieldValue for HexU64 {
    const IN: u8 = in_type::HEXINT64;
    const OUT: u8 = out_type::DEFAULT;
    fn field_bytes(&self) -> &[u8] {
        // SAFETY: an integer has no padding.
        unsafe { bytes_of(&self.0) }
    }
}

/// A GUID's 16 bytes in its in-memory layout (little-endian fields), which
/// is what the GUID input type decodes.
impl FieldValue for GUID {
    const IN: u8 = in_type::GUID;
    const OUT: u8 = out_type::DEFAULT;
    fn field_bytes(&self) -> &[u8] {
        // SAFETY: `#[repr(C)]` u32, u16, u16, [u8; 8]: 16 bytes, no padding.
        unsafe { bytes_of(self) }
    }
}

/// A NUL-terminated string, terminator included (`ANSISTRING`).
impl FieldValue for &'static CStr {
    const IN: u8 = in_type::ANSISTRING;
    const OUT: u8 = out_type::UTF8;
    fn field_bytes(&self) -> &[u8] {
        self.to_bytes_with_nul()
    }
}

/// One field of an event's metadata: its name and types.
#[derive(Clone, Copy)]
pub struct Field {
    name: &'static str,
    in_type: u8,
    out_type: u8,
}

impl Field {
    /// A field named `name` holding a `T`.
    pub const fn of<T: FieldValue>(name: &'static str) -> Field {
        Field {
            name,
            in_type: T::IN,
            out_type: T::OUT,
        }
    }

    const fn len(&self) -> usize {
        self.name.len() + 1 + if self.out_type != 0 { 2 } else { 1 }
    }
}

/// Bytes of the metadata of an event named `name` with `fields`: a u16
/// size, a tag byte (0), the name with its NUL, then each field's name
/// with its NUL and its types.
pub const fn metadata_len(name: &str, fields: &[Field]) -> usize {
    let mut len = 2 + 1 + name.len() + 1;
    let mut i = 0;
    while i < fields.len() {
        len += fields[i].len();
        i += 1;
    }
    len
}

const fn put(out: &mut [u8], at: usize, s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        assert!(b[i] != 0, "names hold no NUL");
        out[at + i] = b[i];
        i += 1;
    }
    out[at + i] = 0;
    at + i + 1
}

/// The metadata of an event ([`metadata_len`] bytes).
pub const fn metadata<const N: usize>(name: &str, fields: &[Field]) -> [u8; N] {
    assert!(N == metadata_len(name, fields) && N <= u16::MAX as usize);
    let mut out = [0u8; N];
    out[0] = N as u8;
    out[1] = (N >> 8) as u8;
    // out[2]: no event tags.
    let mut at = put(&mut out, 3, name);
    let mut i = 0;
    while i < fields.len() {
        let f = fields[i];
        at = put(&mut out, at, f.name);
        if f.out_type != 0 {
            out[at] = f.in_type | in_type::CHAIN;
            out[at + 1] = f.out_type;
            at += 2;
        } else {
            out[at] = f.in_type;
            at += 1;
        }
        i += 1;
    }
    assert!(at == N);
    out
}

/// Bytes of the provider traits of `name`: a u16 size and the name with
/// its NUL.
pub const fn traits_len(name: &str) -> usize {
    2 + name.len() + 1
}

/// The provider traits of `name` ([`traits_len`] bytes).
pub const fn traits<const N: usize>(name: &str) -> [u8; N] {
    assert!(N == traits_len(name) && N <= u16::MAX as usize);
    let mut out = [0u8; N];
    out[0] = N as u8;
    out[1] = (N >> 8) as u8;
    put(&mut out, 2, name);
    out
}

/// Whether a session with `level_plus1` (0: not enabled) and keyword masks
/// `any`/`all` wants an event of `level` and `keyword`. TraceLogging's
/// rule: an event with keyword 0 matches any keywords; a session level of
/// 0 means every level (the callback stores it as 256).
pub const fn wants(level_plus1: u32, any: u64, all: u64, level: u8, keyword: u64) -> bool {
    (level as u32) < level_plus1 && (keyword == 0 || (keyword & any != 0 && keyword & all == all))
}

// ---------------------------------------------------------------------------
// The provider (Windows).

#[cfg(windows)]
pub use provider::*;

#[cfg(windows)]
mod provider {
    use super::*;
    use crate::nt::{self, NtResult, EVENT_DATA_DESCRIPTOR, EVENT_DESCRIPTOR, REGHANDLE};
    use core::ffi::c_void;
    use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

    /// The provider's registration and what the sessions enabled.
    ///
    /// # Invariants
    /// `handle` is 0 or the handle `EtwRegister` returned and
    /// `EtwUnregister` has not been called for; while it is not 0, `config`
    /// is the `&'static TraceProvider` it was registered for (stored
    /// before `handle`); `level_plus1` is 0 while no session enables the
    /// provider.
    struct Provider {
        config: AtomicPtr<TraceProvider>,
        handle: AtomicU64,
        level_plus1: AtomicU32,
        any: AtomicU64,
        all: AtomicU64,
    }

    static PROVIDER: Provider = Provider {
        config: AtomicPtr::new(core::ptr::null_mut()),
        handle: AtomicU64::new(0),
        level_plus1: AtomicU32::new(0),
        any: AtomicU64::new(0),
        all: AtomicU64::new(0),
    };

    /// `ETWENABLECALLBACK`: records the level and keywords the sessions
    /// asked for (ETW passes their union).
    unsafe extern "system" fn enable_callback(
        _source_id: *const GUID,
        control_code: u32,
        level: u8,
        any: u64,
        all: u64,
        _filter: *const c_void,
        _context: *mut c_void,
    ) {
        match control_code {
            nt::EVENT_CONTROL_CODE_ENABLE_PROVIDER => {
                PROVIDER.any.store(any, Ordering::Relaxed);
                PROVIDER.all.store(all, Ordering::Relaxed);
                let plus1 = if level == 0 { 256 } else { level as u32 + 1 };
                PROVIDER.level_plus1.store(plus1, Ordering::Release);
            }
            nt::EVENT_CONTROL_CODE_DISABLE_PROVIDER => {
                PROVIDER.level_plus1.store(0, Ordering::Release);
            }
            _ => {}
        }
    }

    /// The provider registered (or last registered), if any.
    fn config() -> Option<&'static TraceProvider> {
        // SAFETY: `config` is null or a `&'static TraceProvider` (stored by
        // `register`).
        unsafe { PROVIDER.config.load(Ordering::Acquire).as_ref() }
    }

    /// The keyword of the hooks' kernel-callback events of the registered
    /// provider ([`TraceProvider::hook_keyword`]; [`keyword::PROCESS`]
    /// before registration, when nothing is written anyway).
    pub fn hook_keyword() -> u64 {
        config().map_or(keyword::PROCESS, TraceProvider::hook_keyword)
    }

    /// Registers `provider` (DriverEntry, PASSIVE_LEVEL, first). A session
    /// already running gets its enable callback during this call.
    ///
    /// # Errors
    /// The status of `EtwRegister` (the driver does not load without its
    /// provider, as the C driver).
    pub fn register(provider: &'static TraceProvider) -> NtResult {
        // INVARIANT: stored before any handle.
        PROVIDER
            .config
            .store(core::ptr::from_ref(provider).cast_mut(), Ordering::Release);
        let mut handle: REGHANDLE = 0;
        // SAFETY: the GUID is a static; the callback is a function of this
        // image, which unregisters before it unloads; the handle is a local.
        let status = unsafe {
            nt::EtwRegister(
                &provider.guid,
                Some(enable_callback),
                core::ptr::null_mut(),
                &mut handle,
            )
        };
        if let Err(e) = nt::check(status) {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "registering the ETW provider failed: {e:#x}"
            );
            return Err(e);
        }
        // INVARIANT: a handle EtwRegister returned.
        PROVIDER.handle.store(handle, Ordering::Release);
        // The name: without it, tools show the GUID. A failure leaves
        // events decodable (each carries the traits) and is not fatal, as
        // in TraceLoggingRegister.
        // SAFETY: a live registration; the traits are a static.
        let _ = unsafe {
            nt::EtwSetInformation(
                handle,
                nt::EventProviderSetTraits,
                provider.traits.as_ptr().cast(),
                provider.traits.len() as u32,
            )
        };
        Ok(())
    }

    /// Unregisters the provider (unload, PASSIVE_LEVEL, last). Does nothing
    /// if it is not registered.
    pub fn unregister() {
        PROVIDER.level_plus1.store(0, Ordering::Release);
        // INVARIANT: from here on no event uses the handle.
        let handle = PROVIDER.handle.swap(0, Ordering::AcqRel);
        if handle != 0 {
            // SAFETY: the handle EtwRegister returned, unregistered once
            // (the swap).
            let _ = unsafe { nt::EtwUnregister(handle) };
        }
    }

    /// Whether a session wants events of `level` and `keyword`.
    #[inline(always)]
    pub fn enabled(level: u8, keyword: u64) -> bool {
        let plus1 = PROVIDER.level_plus1.load(Ordering::Acquire);
        plus1 != 0
            && wants(
                plus1,
                PROVIDER.any.load(Ordering::Relaxed),
                PROVIDER.all.load(Ordering::Relaxed),
                level,
                keyword,
            )
    }

    /// A data descriptor over `bytes` of `ty`.
    pub fn descriptor(bytes: &[u8], ty: u8) -> EVENT_DATA_DESCRIPTOR {
        EVENT_DATA_DESCRIPTOR {
            Ptr: bytes.as_ptr() as u64,
            Size: bytes.len() as u32,
            Type: ty,
            Reserved1: 0,
            Reserved2: 0,
        }
    }

    /// Writes one event: `data[0]` and `data[1]` are filled here with the
    /// provider traits and `metadata`; the rest are the fields' values.
    #[inline(never)]
    pub fn write(
        metadata: &'static [u8],
        level: u8,
        keyword: u64,
        data: &mut [EVENT_DATA_DESCRIPTOR],
    ) {
        let handle = PROVIDER.handle.load(Ordering::Acquire);
        let Some(config) = config() else { return };
        if handle == 0 || data.len() < 2 {
            return;
        }
        data[0] = descriptor(config.traits, 2);
        data[1] = descriptor(metadata, 1);
        let descriptor = EVENT_DESCRIPTOR {
            Id: 0,
            Version: 0,
            Channel: CHANNEL_TRACELOGGING,
            Level: level,
            Opcode: 0,
            Task: 0,
            Keyword: keyword,
        };
        // SAFETY: a live registration (the unload unregisters only after
        // everything that logs has stopped); every descriptor points to
        // bytes that live across the call.
        let _ = unsafe {
            nt::EtwWriteTransfer(
                handle,
                &descriptor,
                core::ptr::null(),
                core::ptr::null(),
                data.len() as u32,
                data.as_ptr(),
            )
        };
    }
}

/// Writes an event named `$name` with `$level` and `$keyword` and the typed
/// fields `Name: Type = value`, if a session wants it; the values are
/// evaluated only then.
#[cfg(windows)]
macro_rules! event {
    ($name:literal, $level:expr, $keyword:expr, { $($field:ident: $ty:ty = $value:expr),* $(,)? }) => {{
        let (level, keyword): (u8, u64) = ($level, $keyword);
        if $crate::trace::enabled(level, keyword) {
            const FIELDS: &[$crate::trace::Field] =
                &[$($crate::trace::Field::of::<$ty>(stringify!($field))),*];
            const LEN: usize = $crate::trace::metadata_len($name, FIELDS);
            static META: [u8; LEN] = $crate::trace::metadata::<LEN>($name, FIELDS);
            #[allow(non_snake_case)]
            let ($($field,)*): ($($ty,)*) = ($($value,)*);
            let mut data = [
                $crate::trace::descriptor(&[], 0),
                $crate::trace::descriptor(&[], 0),
                $($crate::trace::descriptor(
                    $crate::trace::FieldValue::field_bytes(&$field), 0)),*
            ];
            $crate::trace::write(&META, level, keyword, &mut data);
        }
    }};
}

// ---------------------------------------------------------------------------
// The events (Windows).

#[cfg(windows)]
mod events {
    use super::*;
    use crate::ebpf::client::ClientError;
    use crate::nt::{self, NtResult};

    fn status_of(result: NtResult) -> NTSTATUS {
        nt::into_status(result)
    }

    fn level_of(result: NtResult) -> u8 {
        if result.is_ok() {
            level::INFO
        } else {
            level::ERROR
        }
    }

    /// `DriverLoad` {Version, Status} (BASE): `DriverEntry` finished; also
    /// the `loaded` / `load failed` DbgPrintEx line. `version` is the
    /// driver's.
    pub fn driver_load(version: &'static CStr, result: NtResult) {
        match result {
            Ok(()) => crate::dbg_log!(
                nt::DPFLTR_INFO_LEVEL,
                "loaded (version {})",
                version.to_str().unwrap_or("?")
            ),
            Err(e) => crate::dbg_log!(nt::DPFLTR_ERROR_LEVEL, "load failed: {e:#x}"),
        }
        event!("DriverLoad", level_of(result), keyword::BASE, {
            Version: &'static CStr = version,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `DriverUnload` {Version} (BASE): the unload finished (the last event
    /// before the provider is unregistered); also the `unloaded` line.
    pub fn driver_unload(version: &'static CStr) {
        crate::dbg_log!(nt::DPFLTR_INFO_LEVEL, "unloaded");
        event!("DriverUnload", level::INFO, keyword::BASE, {
            Version: &'static CStr = version,
        });
    }

    /// `ProviderRegister` {NpiId, ModuleId, Status} (EXTENSION): an NMR
    /// provider (program information or hook) was registered, or failed to
    /// (then also an `ApiFailure` of `NmrRegisterProvider`).
    pub fn provider_register(npi: &GUID, module: &GUID, result: NtResult) {
        if let Err(e) = result {
            api_failure(keyword::EXTENSION, c"NmrRegisterProvider", e.status());
        }
        event!("ProviderRegister", level_of(result), keyword::EXTENSION, {
            NpiId: GUID = *npi,
            ModuleId: GUID = *module,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `ProviderDeregister` {NpiId, ModuleId, Status} (EXTENSION): an NMR
    /// provider was deregistered and every client has detached.
    pub fn provider_deregister(npi: &GUID, module: &GUID, result: NtResult) {
        event!("ProviderDeregister", level_of(result), keyword::EXTENSION, {
            NpiId: GUID = *npi,
            ModuleId: GUID = *module,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `ClientAttach` {NpiId, ModuleId, ClientModuleId, Binding, Status}
    /// (EXTENSION): a client's attach, accepted or failed. `ModuleId` is
    /// the provider's: the program type or the attach type.
    pub fn client_attach(
        npi: &GUID,
        module: &GUID,
        client: &GUID,
        binding: usize,
        result: NtResult,
    ) {
        event!("ClientAttach", level_of(result), keyword::EXTENSION, {
            NpiId: GUID = *npi,
            ModuleId: GUID = *module,
            ClientModuleId: GUID = *client,
            Binding: HexU64 = HexU64(binding as u64),
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `ClientRefused` {ModuleId, ClientModuleId, Reason, Status}
    /// (EXTENSION, warning): a hook client failed validation; `Reason` is
    /// the rule (docs/abi.md); also the `refused a hook client` line.
    pub fn client_refused(module: &GUID, client: &GUID, reason: &'static CStr, status: NTSTATUS) {
        crate::dbg_log!(
            nt::DPFLTR_WARNING_LEVEL,
            "refused a hook client: {}",
            reason.to_str().unwrap_or("?")
        );
        event!("ClientRefused", level::WARNING, keyword::EXTENSION, {
            ModuleId: GUID = *module,
            ClientModuleId: GUID = *client,
            Reason: &'static CStr = reason,
            Status: NtStatus = NtStatus(status),
        });
    }

    /// The name of the rule a refused client broke, as `Reason` reports it.
    pub fn refusal_reason(e: ClientError) -> &'static CStr {
        match e {
            ClientError::MissingClientData => c"MissingClientData",
            ClientError::UnsupportedClientDataVersion => c"UnsupportedClientDataVersion",
            ClientError::ClientDataTooSmall => c"ClientDataTooSmall",
            ClientError::InconsistentAttachParameters => c"InconsistentAttachParameters",
            ClientError::MissingDispatch => c"MissingDispatch",
            ClientError::UnsupportedDispatchVersion => c"UnsupportedDispatchVersion",
            ClientError::MissingInvoke => c"MissingInvoke",
            ClientError::InvalidAttachParameters => c"InvalidAttachParameters",
            ClientError::UnsupportedAttachParameters => c"UnsupportedAttachParameters",
        }
    }

    /// `ClientDetach` {ModuleId, ClientModuleId, Binding, Status}
    /// (EXTENSION): NMR began a client's detach; `Status` is
    /// STATUS_SUCCESS when it completed at once, STATUS_PENDING when
    /// invocations were in flight (a `ClientDetachComplete` follows).
    pub fn client_detach(module: &GUID, client: &GUID, binding: usize, status: NTSTATUS) {
        event!("ClientDetach", level::INFO, keyword::EXTENSION, {
            ModuleId: GUID = *module,
            ClientModuleId: GUID = *client,
            Binding: HexU64 = HexU64(binding as u64),
            Status: NtStatus = NtStatus(status),
        });
    }

    /// `ClientDetachComplete` {Binding} (EXTENSION): the last invocation of
    /// a pending detach returned and the driver told NMR.
    pub fn client_detach_complete(binding: usize) {
        event!("ClientDetachComplete", level::INFO, keyword::EXTENSION, {
            Binding: HexU64 = HexU64(binding as u64),
        });
    }

    /// `ClientCleanup` {ModuleId, ClientModuleId, Binding} (EXTENSION): NMR
    /// cleaned the binding up; the driver forgot the client.
    pub fn client_cleanup(module: &GUID, client: &GUID, binding: usize) {
        event!("ClientCleanup", level::INFO, keyword::EXTENSION, {
            ModuleId: GUID = *module,
            ClientModuleId: GUID = *client,
            Binding: HexU64 = HexU64(binding as u64),
        });
    }

    /// `CallbackRegister` {Hook, Status} (hook keyword): a hook's kernel
    /// callback (notify routine) was registered, or failed to (then also
    /// an `ApiFailure` of `api` and the DbgPrintEx line).
    pub fn callback_register(hook: &'static CStr, api: &'static CStr, result: NtResult) {
        if let Err(e) = result {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "registering the {} callback failed: {e:#x}",
                hook.to_str().unwrap_or("?")
            );
            api_failure(hook_keyword(), api, e.status());
        }
        event!("CallbackRegister", level_of(result), hook_keyword(), {
            Hook: &'static CStr = hook,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `CallbackRemove` {Hook, Status} (hook keyword): a hook's kernel callback
    /// was removed (after the last detach, or at unload), or the removal
    /// failed (then also an `ApiFailure` and the DbgPrintEx line).
    pub fn callback_remove(hook: &'static CStr, api: &'static CStr, result: NtResult) {
        if let Err(e) = result {
            crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "removing the {} callback failed: {e:#x}",
                hook.to_str().unwrap_or("?")
            );
            api_failure(hook_keyword(), api, e.status());
        }
        event!("CallbackRemove", level_of(result), hook_keyword(), {
            Hook: &'static CStr = hook,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `ProviderBind` {Hook, ProviderModuleId, Status} (hook keyword): as an
    /// NMR client the driver bound to a provider of the NPI its hook
    /// consumes, or refused it (then `Status` is why).
    pub fn provider_bind(hook: &'static CStr, provider: &GUID, result: NtResult) {
        event!("ProviderBind", level_of(result), hook_keyword(), {
            Hook: &'static CStr = hook,
            ProviderModuleId: GUID = *provider,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `ProviderUnbind` {Hook, ProviderModuleId} (hook keyword): a provider
    /// binding of the hook's NMR client detached (the provider or the
    /// client deregistered).
    pub fn provider_unbind(hook: &'static CStr, provider: &GUID) {
        event!("ProviderUnbind", level::INFO, hook_keyword(), {
            Hook: &'static CStr = hook,
            ProviderModuleId: GUID = *provider,
        });
    }

    /// `EventDropped` {Hook, Reason, Size} (hook keyword, warning): an
    /// event a producer delivered was not given to any program (malformed,
    /// or no memory to frame it).
    pub fn event_dropped(hook: &'static CStr, reason: &'static CStr, size: u64) {
        if enabled(level::WARNING, hook_keyword()) {
            event_dropped_slow(hook, reason, size);
        }
    }

    #[inline(never)]
    fn event_dropped_slow(hook: &'static CStr, reason: &'static CStr, size: u64) {
        event!("EventDropped", level::WARNING, hook_keyword(), {
            Hook: &'static CStr = hook,
            Reason: &'static CStr = reason,
            Size: u64 = size,
        });
    }

    /// `StoreRegister` {Key, Id, Status} (EXTENSION): the driver wrote (or
    /// failed to write) its eBPF store entries for one program type: `Key`
    /// names the store key (`ProgramData`), `Id` the program type's GUID.
    /// The registry call that failed is an `ApiFailure` of its own.
    pub fn store_register(key: &'static CStr, id: &GUID, result: NtResult) {
        event!("StoreRegister", level_of(result), keyword::EXTENSION, {
            Key: &'static CStr = key,
            Id: GUID = *id,
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `StoreUpdate` {ProgramTypes, Status} (EXTENSION): the driver's whole
    /// eBPF store update finished (`ProgramTypes` is how many it was to
    /// write); also the `eBPF store updated` / `writing the eBPF store
    /// failed` DbgPrintEx line. A failure does not fail the load.
    pub fn store_update(program_types: usize, result: NtResult) {
        match result {
            Ok(()) => crate::dbg_log!(
                nt::DPFLTR_INFO_LEVEL,
                "eBPF store updated ({program_types} program types)"
            ),
            Err(e) => crate::dbg_log!(
                nt::DPFLTR_ERROR_LEVEL,
                "writing the eBPF store failed: {e:#x} (programs can still be loaded by program type)"
            ),
        }
        event!("StoreUpdate", level_of(result), keyword::EXTENSION, {
            ProgramTypes: u32 = u32::try_from(program_types).unwrap_or(u32::MAX),
            Status: NtStatus = NtStatus(status_of(result)),
        });
    }

    /// `TestRunRefused` {Hook, Reason, Result} (hook keyword, warning): a hook's
    /// `bpf_prog_test_run` input was refused before any program ran;
    /// `Reason` names the check, `Result` is the `ebpf_result_t` returned
    /// to the core. Also the `<hook> test run refused: <reason>` line. For
    /// every hook that has a test run.
    pub fn test_run_refused(hook: &'static CStr, reason: &'static CStr, result: u32) {
        crate::dbg_log!(
            nt::DPFLTR_WARNING_LEVEL,
            "{} test run refused: {}",
            hook.to_str().unwrap_or("?"),
            reason.to_str().unwrap_or("?")
        );
        event!("TestRunRefused", level::WARNING, hook_keyword(), {
            Hook: &'static CStr = hook,
            Reason: &'static CStr = reason,
            Result: u32 = result,
        });
    }

    /// `ApiFailure` {Api, Status} (error, keyword of the area): a kernel
    /// function the driver called failed.
    pub fn api_failure(keyword: u64, api: &'static CStr, status: NTSTATUS) {
        event!("ApiFailure", level::ERROR, keyword, {
            Api: &'static CStr = api,
            Status: NtStatus = NtStatus(status),
        });
    }

    /// Whether a session wants `HookEvent`: a hook that asks once, before
    /// invoking, counts the programs run only when one does (and then
    /// reports with [`hook_event`], which checks again).
    #[inline(always)]
    pub fn hook_events_enabled() -> bool {
        enabled(level::VERBOSE, keyword::HOOK_EVENTS)
    }

    /// `HookEvent` {Hook, Operation, Id, ProgramsRun, Verdict} (verbose,
    /// HOOK_EVENTS): one kernel event went through the attached programs.
    /// `Operation` and `Id` are the hook's (process: 0 create / 1 delete
    /// and the process id; thread: 0 create / 1 exit and the thread id;
    /// image_load: 0 and the process id, 0 for a driver), `ProgramsRun`
    /// counts the programs that returned a result, `Verdict` is what the
    /// driver did with them (process create: the status it set, 0 when
    /// allowed; always 0 for thread and image_load, whose results are
    /// ignored).
    #[inline(always)]
    pub fn hook_event(
        hook: &'static CStr,
        operation: u8,
        id: u64,
        programs_run: u32,
        verdict: i32,
    ) {
        if enabled(level::VERBOSE, keyword::HOOK_EVENTS) {
            hook_event_slow(hook, operation, id, programs_run, verdict);
        }
    }

    #[inline(never)]
    fn hook_event_slow(
        hook: &'static CStr,
        operation: u8,
        id: u64,
        programs_run: u32,
        verdict: i32,
    ) {
        event!("HookEvent", level::VERBOSE, keyword::HOOK_EVENTS, {
            Hook: &'static CStr = hook,
            Operation: u8 = operation,
            Id: u64 = id,
            ProgramsRun: u32 = programs_run,
            Verdict: i32 = verdict,
        });
    }
}

#[cfg(windows)]
pub use events::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traits_carry_the_provider_name() {
        static PROVIDER: TraceProvider = crate::trace_provider!(
            "NtosEbpfExtProvider",
            GUID::new(1, 2, 3, [4; 8]),
            keyword::PROCESS
        );
        let traits = PROVIDER.traits();
        assert_eq!(traits.len(), traits_len("NtosEbpfExtProvider"));
        assert_eq!(&traits[..2], &(traits.len() as u16).to_le_bytes());
        assert_eq!(&traits[2..], b"NtosEbpfExtProvider\0");
        assert_eq!(PROVIDER.name(), "NtosEbpfExtProvider");
        assert_eq!(PROVIDER.hook_keyword(), keyword::PROCESS);
    }

    #[test]
    fn metadata_encodes_name_and_typed_fields() {
        const FIELDS: &[Field] = &[
            Field::of::<&'static CStr>("Api"),
            Field::of::<NtStatus>("Status"),
            Field::of::<u32>("N"),
            Field::of::<GUID>("G"),
            Field::of::<Bool>("B"),
        ];
        const LEN: usize = metadata_len("Ev", FIELDS);
        let m = metadata::<LEN>("Ev", FIELDS);
        let mut expected = vec![0, 0, 0];
        expected.extend_from_slice(b"Ev\0");
        expected.extend_from_slice(b"Api\0");
        expected.extend_from_slice(&[0x82, 35]);
        expected.extend_from_slice(b"Status\0");
        expected.extend_from_slice(&[0x87, 14]);
        expected.extend_from_slice(b"N\0");
        expected.push(8);
        expected.extend_from_slice(b"G\0");
        expected.push(15);
        expected.extend_from_slice(b"B\0");
        expected.extend_from_slice(&[0x84, 3]);
        expected[0] = expected.len() as u8;
        assert_eq!(&m[..], &expected[..]);
    }

    #[test]
    fn field_bytes_are_the_values_encoding() {
        assert_eq!(
            NtStatus(-1073741811).field_bytes(),
            &0xC000_000Du32.to_le_bytes()
        );
        assert_eq!(7u64.field_bytes(), &7u64.to_le_bytes());
        assert_eq!(Bool::new(true).field_bytes(), &[1]);
        let g = GUID::new(0x01020304, 0x0506, 0x0708, [9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(
            g.field_bytes(),
            &[4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(c"ab".field_bytes(), b"ab\0");
    }

    #[test]
    fn sessions_filter_by_level_and_keyword() {
        // Not enabled.
        assert!(!wants(0, u64::MAX, 0, 0, 0));
        // Level 4 (plus one: 5): info and below.
        assert!(wants(5, 0x4, 0, level::INFO, keyword::EXTENSION));
        assert!(!wants(5, 0x4, 0, level::VERBOSE, keyword::EXTENSION));
        // Keywords: any must intersect, all must be covered.
        assert!(!wants(6, keyword::BASE, 0, level::INFO, keyword::EXTENSION));
        assert!(!wants(
            6,
            0xFFFF_FFFF,
            0,
            level::VERBOSE,
            keyword::HOOK_EVENTS
        ));
        assert!(wants(6, u64::MAX, 0x4, level::INFO, 0x4));
        assert!(!wants(6, u64::MAX, 0x6, level::INFO, 0x4));
        // Keyword 0 matches any session; session level 0 is every level.
        assert!(wants(6, 0x1, 0, level::INFO, 0));
        assert!(wants(256, u64::MAX, 0, level::VERBOSE, 0x2));
    }
}
