//! A host-side hook client: a Rust NMR client of the hook NPI standing in
//! for an eBPF link. It registers with its own client data
//! (`ebpf_extension_data_t`) and dispatch table, binds to one hook provider
//! (or any), records how its attach went, counts its invocations, and can
//! hold each invocation at a gate until the test opens it. Dropping it
//! deregisters it and waits for NMR.

use crate::ebpf::abi::{
    ebpf_extension_data_t, ebpf_extension_header_t, ebpf_extension_program_dispatch_table_t,
    EBPF_HOOK_EXTENSION_IID,
};
use crate::ebpf::core::{client_characteristics, empty_client_characteristics};
use crate::kernel::nmr::{
    self, NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_REGISTRATION_INSTANCE,
};
use crate::kernel::status::{STATUS_NOINTERFACE, STATUS_PENDING, STATUS_SUCCESS};
use crate::kernel::sync::wait_while;
use crate::kernel::types::{GUID, HANDLE};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Where a client's data or dispatch table handed to NMR lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The client's own copy ([`Config::data`] / [`Config::dispatch`]).
    Own,
    /// A null pointer.
    Null,
    /// Elsewhere (for instance a copy that ends against a guard page).
    At(*const c_void),
}

/// How a [`HostClient`] registers.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The one hook provider (attach type) it binds to; `None`: any.
    pub attach_type: Option<GUID>,
    pub npi_id: GUID,
    /// Its NMR module id.
    pub module: GUID,
    pub data: ebpf_extension_data_t,
    pub dispatch: ebpf_extension_program_dispatch_table_t,
    pub data_table: Table,
    pub dispatch_table: Table,
    /// Whether [`invoke`] waits until [`HostClient::open`].
    pub gated: bool,
}

/// Numbers the module ids of [`Config::numbered`].
static NEXT_MODULE: AtomicU64 = AtomicU64::new(1);

impl Config {
    /// [`Config::new`] with a module id of its own: `tag` in the GUID's
    /// first field, a number no other client of this process got in its last
    /// eight bytes.
    pub fn numbered(tag: u32) -> Config {
        let n = NEXT_MODULE.fetch_add(1, Ordering::Relaxed);
        Config::new(GUID {
            data1: tag,
            data2: 0,
            data3: 0,
            data4: n.to_be_bytes(),
        })
    }

    /// A well-formed client of the hook NPI with module id `module`: version
    /// 1 client data without attach parameters, a version 1 dispatch table
    /// holding [`invoke`] only, bound to any hook provider, no gate.
    pub fn new(module: GUID) -> Config {
        Config {
            attach_type: None,
            npi_id: EBPF_HOOK_EXTENSION_IID,
            module,
            data: ebpf_extension_data_t {
                header: ebpf_extension_header_t {
                    version: 1,
                    size: 48,
                    total_size: 48,
                },
                data: std::ptr::null(),
                data_size: 0,
                prog_attach_flags: 0,
            },
            dispatch: ebpf_extension_program_dispatch_table_t {
                version: 1,
                count: 1,
                ebpf_program_invoke_function: Some(invoke),
                ebpf_program_batch_begin_invoke_function: None,
                ebpf_program_batch_invoke_function: None,
                ebpf_program_batch_end_invoke_function: None,
            },
            data_table: Table::Own,
            dispatch_table: Table::Own,
            gated: false,
        }
    }
}

/// A host client's NMR registration handle and its deregistration: shared
/// by the host-side clients of ntsim (this one, and the netevent client).
#[derive(Default)]
pub(crate) struct Registration {
    /// The handle NmrRegisterClient returned; 0 once deregistration began.
    handle: AtomicUsize,
    /// The handle whose deregistration NMR answered STATUS_PENDING to,
    /// until it is waited for.
    pending: AtomicUsize,
}

impl Registration {
    /// Records the handle NmrRegisterClient returned.
    pub(crate) fn set(&self, handle: HANDLE) {
        self.handle.store(handle, Ordering::Release);
    }

    /// The registration handle (0 once deregistration began).
    pub(crate) fn handle(&self) -> HANDLE {
        self.handle.load(Ordering::Acquire)
    }

    /// Begins deregistering (once; later calls return STATUS_SUCCESS) and
    /// returns NmrDeregisterClient's status; after STATUS_PENDING,
    /// [`wait`](Self::wait) owes the wait.
    pub(crate) fn begin_deregister(&self) -> i32 {
        let handle = self.handle.swap(0, Ordering::AcqRel);
        if handle == 0 {
            return STATUS_SUCCESS;
        }
        // SAFETY: our registration, deregistered once (the swap above).
        let status = unsafe { nmr::NmrDeregisterClient(handle) };
        if status == STATUS_PENDING {
            self.pending.store(handle, Ordering::Release);
        }
        status
    }

    /// Waits for a pending deregistration to complete (none: returns).
    pub(crate) fn wait(&self) {
        let handle = self.pending.swap(0, Ordering::AcqRel);
        if handle != 0 {
            // SAFETY: the handle whose deregistration NMR answered
            // STATUS_PENDING to, waited for once (the swap above).
            unsafe { nmr::NmrWaitForClientDeregisterComplete(handle) };
        }
    }

    /// Forgets the registration without calling NMR.
    pub(crate) fn forget(&self) {
        self.handle.store(0, Ordering::Release);
        self.pending.store(0, Ordering::Release);
    }
}

/// What NMR and the driver point into; boxed so it never moves while
/// registered.
struct Inner {
    config: Config,
    module_id: NPI_MODULEID,
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    registration: Registration,
    attach_status: Mutex<Option<i32>>,
    invocations: AtomicU64,
    gate: (Mutex<bool>, Condvar),
    entered: AtomicBool,
}

/// A registered host-side hook client (see the module docs).
pub struct HostClient {
    inner: Box<Inner>,
}

// SAFETY: the raw pointers in `Inner` point into the box itself or are the
// caller's tables, valid while registered (the contract of `register`); the
// mutable state is atomic or behind a mutex.
unsafe impl Send for HostClient {}
// SAFETY: as above.
unsafe impl Sync for HostClient {}

impl HostClient {
    /// Registers a client as `config` describes; NMR attaches it to the
    /// hook providers at once. Errs with NmrRegisterClient's status.
    ///
    /// # Safety
    /// The driver reads the client data and calls the dispatch functions:
    /// the invoke functions in `config.dispatch` get this client's binding
    /// context, which only [`invoke`] may read; the attach parameters
    /// (`data.data`, `data_size`) and any [`Table::At`] must be readable as
    /// given for as long as the client stays registered.
    pub unsafe fn register(config: Config) -> Result<HostClient, i32> {
        let mut inner = Box::new(Inner {
            config,
            module_id: NPI_MODULEID {
                Length: 24,
                Type: nmr::MIT_GUID,
                Guid: config.module,
            },
            characteristics: empty_client_characteristics(),
            registration: Registration::default(),
            attach_status: Mutex::new(None),
            invocations: AtomicU64::new(0),
            gate: (Mutex::new(false), Condvar::new()),
            entered: AtomicBool::new(false),
        });
        let specific: *const c_void = match inner.config.data_table {
            Table::Own => (&inner.config.data as *const ebpf_extension_data_t).cast(),
            Table::Null => std::ptr::null(),
            Table::At(p) => p,
        };
        inner.characteristics = client_characteristics(
            &inner.config.npi_id,
            &inner.module_id,
            specific,
            attach,
            detach,
            None,
        );
        let mut handle: HANDLE = 0;
        // SAFETY: the characteristics and the context live in the box,
        // which stays put until `Drop` has deregistered and waited for NMR;
        // the tables it points at are valid by the caller's contract.
        let status = unsafe {
            nmr::NmrRegisterClient(
                &inner.characteristics,
                (&*inner as *const Inner).cast_mut().cast(),
                &mut handle,
            )
        };
        if status != STATUS_SUCCESS {
            return Err(status);
        }
        inner.registration.set(handle);
        Ok(HostClient { inner })
    }

    /// The status its ClientAttachProvider got from NmrClientAttachProvider
    /// (the last time it ran); `None` if it never ran or skipped the
    /// provider as another attach type's.
    pub fn attach_status(&self) -> Option<i32> {
        *self.inner.attach_status.lock().unwrap()
    }

    /// Its NMR module id.
    pub fn module(&self) -> GUID {
        self.inner.module_id.Guid
    }

    /// How many times [`invoke`] ran for it.
    pub fn invocations(&self) -> u64 {
        self.inner.invocations.load(Ordering::SeqCst)
    }

    /// Whether [`invoke`] has been entered for it.
    pub fn entered(&self) -> bool {
        self.inner.entered.load(Ordering::SeqCst)
    }

    /// Opens the gate: held invocations go on, later ones pass.
    pub fn open(&self) {
        let (m, cv) = &self.inner.gate;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }

    /// Begins deregistering (once; later calls return STATUS_SUCCESS) and
    /// returns NmrDeregisterClient's status. After STATUS_PENDING, call
    /// [`HostClient::wait_deregistered`] (or drop the client).
    pub fn begin_deregister(&self) -> i32 {
        self.inner.registration.begin_deregister()
    }

    /// Waits for a pending deregistration to complete (none: returns).
    pub fn wait_deregistered(&self) {
        self.inner.registration.wait();
    }

    /// Deregisters and waits for NMR to finish with the client.
    pub fn deregister(&self) {
        self.begin_deregister();
        self.wait_deregistered();
    }
}

impl Drop for HostClient {
    fn drop(&mut self) {
        self.deregister();
    }
}

unsafe extern "win64" fn attach(
    binding: HANDLE,
    context: *mut c_void,
    provider: *const NPI_REGISTRATION_INSTANCE,
) -> i32 {
    // SAFETY: the context registered with this client, alive while it is
    // registered.
    let c = unsafe { &*(context as *const Inner) };
    if let Some(attach_type) = c.config.attach_type {
        // One hook provider per attach type: bind to one, as an eBPF link
        // does.
        // SAFETY: NMR passes the provider's live registration instance.
        let module_id = unsafe { (*provider).ModuleId };
        // SAFETY: its module id lives as long as the registration.
        if unsafe { (*module_id).Guid } != attach_type {
            return STATUS_NOINTERFACE;
        }
    }
    let dispatch: *const c_void = match c.config.dispatch_table {
        Table::Own => (&c.config.dispatch as *const ebpf_extension_program_dispatch_table_t).cast(),
        Table::Null => std::ptr::null(),
        Table::At(p) => p,
    };
    let mut provider_context: *mut c_void = std::ptr::null_mut();
    let mut provider_dispatch: *const c_void = std::ptr::null();
    // SAFETY: inside ClientAttachProvider with NMR's binding handle; the
    // dispatch table stays valid while the client is registered.
    let status = unsafe {
        nmr::NmrClientAttachProvider(
            binding,
            context,
            dispatch,
            &mut provider_context,
            &mut provider_dispatch,
        )
    };
    *c.attach_status.lock().unwrap() = Some(status);
    status
}

unsafe extern "win64" fn detach(_context: *mut c_void) -> i32 {
    STATUS_SUCCESS
}

/// The hook NPI invoke function of a [`HostClient`]: counts the call, marks
/// the client entered, waits at its gate if it has one, and answers 0.
///
/// # Safety
/// `context` is the binding context of a registered [`HostClient`] and
/// `result` is writable (the hook NPI's contract for the driver).
pub unsafe extern "win64" fn invoke(
    context: *const c_void,
    _program_context: *mut c_void,
    result: *mut u32,
) -> u32 {
    // SAFETY: the binding context is a registered client's `Inner`.
    let c = unsafe { &*(context as *const Inner) };
    c.invocations.fetch_add(1, Ordering::SeqCst);
    c.entered.store(true, Ordering::SeqCst);
    if c.config.gated {
        let (m, cv) = &c.gate;
        drop(wait_while(
            "the test to open the client's gate",
            cv,
            m.lock().unwrap(),
            |open| !*open,
        ));
    }
    // SAFETY: the driver passes a valid result pointer.
    unsafe { *result = 0 };
    0
}
