//! The generic hook provider: the attach-type NMR provider every program
//! type uses.
//!
//! Clients (eBPF links) are kept in attach order in a list guarded by a
//! reader/writer spin lock. The invoke path ([`HookProvider::invoke`]) holds
//! the lock in shared mode only long enough to step to the next client and
//! take that client's [`InvokeRef`]; it runs programs with no lock held,
//! allocates nothing and never waits. Detach never blocks: it closes the
//! client's `InvokeRef`; with invocations in flight it answers
//! STATUS_PENDING and the last of them reports the detach complete. A
//! client stays linked until NMR's cleanup, so a client an invocation holds
//! can always be stepped past.
//!
//! The kernel callback that produces events (for example the process notify
//! routine) is registered when the first client attaches, through
//! [`KernelHook`], and removed after the last one detaches. Removal waits
//! for the callback's calls in flight, so it can happen neither in detach
//! (which must not block, and may run at DISPATCH_LEVEL) nor in cleanup
//! (which NMR may run inside the last invocation's completion, that is
//! inside the callback itself: a deadlock). It runs on a system worker
//! thread ([`PassiveWork`]), queued when the last client detaches; the
//! callback does nothing while no client is attached.

use super::abi::*;
use super::client::{validate_client, BatchFunctions, ClientDispatch};
use crate::nmr::{self, ClientAttach, Provider};
use crate::nt::{self, HANDLE, NTSTATUS};
use crate::sync::{Detach, InvokeRef, PassiveWork, PushLock, SpinRwLock};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The kernel callback behind a hook.
pub trait KernelHook: Sync + 'static {
    /// Registers the callback (PASSIVE_LEVEL). A failure fails the attach.
    fn register(&self) -> NTSTATUS;
    /// Removes the callback (PASSIVE_LEVEL). When this returns, no call of
    /// the callback is in flight.
    fn unregister(&self);
}

/// One attached client.
pub struct HookClient {
    binding_handle: HANDLE,
    binding_context: *const c_void,
    dispatch: ClientDispatch,
    refs: InvokeRef,
    /// Next client in attach order; changed only under the exclusive lock.
    next: UnsafeCell<*const HookClient>,
}

// SAFETY: the raw pointers are the client's opaque binding context (only
// passed back to the client) and list links guarded by the provider's lock.
unsafe impl Sync for HookClient {}
// SAFETY: as above.
unsafe impl Send for HookClient {}

#[derive(Clone, Copy)]
struct ClientList {
    head: *const HookClient,
    tail: *const HookClient,
}

// SAFETY: the pointers are only followed under the provider's lock.
unsafe impl Send for ClientList {}
// SAFETY: as above.
unsafe impl Sync for ClientList {}

/// A hook provider for one attach type.
pub struct HookProvider {
    clients: SpinRwLock<ClientList>,
    /// Clients attached whose detach has not begun.
    active: AtomicUsize,
    /// Whether the kernel callback is registered (PASSIVE_LEVEL state).
    registered: PushLock<bool>,
    kernel: &'static dyn KernelHook,
    /// Removes the kernel callback once no client is active.
    idle_work: PassiveWork,
}

/// What the caller of [`HookProvider::invoke`] decides after each program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl HookProvider {
    /// `on_idle` must call [`HookProvider::unregister_if_idle`] on this
    /// provider (it runs on a worker thread once no client is active).
    pub const fn new(kernel: &'static dyn KernelHook, on_idle: fn()) -> HookProvider {
        HookProvider {
            clients: SpinRwLock::new(ClientList {
                head: ptr::null(),
                tail: ptr::null(),
            }),
            active: AtomicUsize::new(0),
            registered: PushLock::new(false),
            kernel,
            idle_work: PassiveWork::new(on_idle),
        }
    }

    /// Prepares the provider (DriverEntry, before NMR registration).
    ///
    /// # Safety
    /// `driver` must be this driver's DRIVER_OBJECT.
    pub unsafe fn init(&'static self, driver: *mut c_void) -> NTSTATUS {
        // SAFETY: forwarded contract.
        unsafe { self.idle_work.init(driver) }
    }

    /// Whether any client is attached (a cheap check for the event path).
    #[inline]
    pub fn has_clients(&self) -> bool {
        self.active.load(Ordering::Acquire) != 0
    }

    /// Runs every attached client's program on `context` (which must point
    /// just after a 64-byte context header), in attach order. `on_result`
    /// sees each program's 32-bit result and decides whether to go on; a
    /// client whose invoke fails is skipped (fail-open).
    pub fn invoke(&self, context: *mut c_void, mut on_result: impl FnMut(u32) -> Flow) {
        let mut batch = Batch::new();
        let mut current: *const HookClient = ptr::null();
        loop {
            let next = self.next_client(current);
            if !current.is_null() {
                // SAFETY: `current` is held by the reference taken in
                // next_client; released once, after the lock is dropped.
                unsafe { release(current) };
            }
            if next.is_null() {
                break;
            }
            current = next;
            // SAFETY: `next` holds a reference: it stays alive and linked.
            let client = unsafe { &*next };
            let mut result = 0u32;
            let status = batch.run(client, context, &mut result);
            if status == EBPF_SUCCESS && on_result(result) == Flow::Stop {
                // SAFETY: as above: the reference of `current`.
                unsafe { release(current) };
                break;
            }
        }
        batch.end();
    }

    /// The first client after `after` (or the first of all) whose
    /// reference can be taken.
    fn next_client(&self, after: *const HookClient) -> *const HookClient {
        let list = self.clients.read();
        let mut c = if after.is_null() {
            list.head
        } else {
            // SAFETY: `after` is referenced by the caller, hence linked; its
            // link is read under the shared lock.
            unsafe { *(*after).next.get() }
        };
        // SAFETY: every pointer in the list is a live client (unlinked only
        // under the exclusive lock, before it is freed).
        while !c.is_null() && !unsafe { &*c }.refs.try_acquire() {
            // SAFETY: as above.
            c = unsafe { *(*c).next.get() };
        }
        c
    }

    fn attach_client(
        &'static self,
        binding_handle: HANDLE,
        client: &ClientAttach<'_>,
    ) -> Result<HookClient, NTSTATUS> {
        // SAFETY: NMR passes the client's registration instance; an eBPF
        // link's NPI-specific characteristics are an ebpf_extension_data_t
        // and its dispatch table an eBPF program dispatch table.
        let dispatch = unsafe {
            validate_client(
                client.registration.NpiSpecificCharacteristics as *const ebpf_extension_data_t,
                client.dispatch,
            )
        }
        .map_err(|e| {
            crate::dbg_log!(nt::DPFLTR_WARNING_LEVEL, "refused a hook client: {e:?}");
            e.status()
        })?;
        {
            let mut registered = self.registered.lock();
            if !*registered {
                let status = self.kernel.register();
                if !nt::nt_success(status) {
                    crate::dbg_log!(
                        nt::DPFLTR_ERROR_LEVEL,
                        "registering the kernel callback failed: {status:#x}"
                    );
                    return Err(status);
                }
                *registered = true;
            }
            self.active.fetch_add(1, Ordering::AcqRel);
        }
        Ok(HookClient {
            binding_handle,
            binding_context: client.binding_context,
            dispatch,
            refs: InvokeRef::new(),
            next: UnsafeCell::new(ptr::null()),
        })
    }

    /// Publishes a client at its final address: from now on events run it.
    fn link(&self, client: &HookClient) {
        let p: *const HookClient = client;
        let mut list = self.clients.write();
        if list.tail.is_null() {
            list.head = p;
        } else {
            // SAFETY: the tail is a live client; links change under the
            // exclusive lock held here.
            unsafe { *(*list.tail).next.get() = p };
        }
        list.tail = p;
    }

    /// One client fewer is active: the last one schedules the removal of
    /// the kernel callback.
    fn deactivate(&'static self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_work.request();
        }
    }

    fn cleanup_client(&self, client: &HookClient) {
        let p: *const HookClient = client;
        {
            let mut list = self.clients.write();
            let mut prev: *const HookClient = ptr::null();
            let mut c = list.head;
            while !c.is_null() && c != p {
                prev = c;
                // SAFETY: list pointers are live clients (exclusive lock held).
                c = unsafe { *(*c).next.get() };
            }
            if c == p {
                // SAFETY: `p` is the live client being cleaned up.
                let next = unsafe { *(*p).next.get() };
                if prev.is_null() {
                    list.head = next;
                } else {
                    // SAFETY: `prev` is a live client (exclusive lock held).
                    unsafe { *(*prev).next.get() = next };
                }
                if list.tail == p {
                    list.tail = prev;
                }
            }
        }
    }

    /// Removes the kernel callback if no client is active (PASSIVE_LEVEL,
    /// outside any call of the callback).
    pub fn unregister_if_idle(&self) {
        let mut registered = self.registered.lock();
        if *registered && self.active.load(Ordering::Acquire) == 0 {
            self.kernel.unregister();
            *registered = false;
        }
    }

    /// At unload, after the NMR provider has been deregistered (so no client
    /// remains): removes the kernel callback if still registered and waits
    /// for the worker.
    pub fn shutdown(&'static self) {
        self.unregister_if_idle();
        self.idle_work.shutdown();
    }
}

/// Releases a client's reference and, if that completes a pending detach,
/// tells NMR.
///
/// # Safety
/// `client` must hold a reference taken by `try_acquire`; the client must
/// not be touched afterwards.
unsafe fn release(client: *const HookClient) {
    // SAFETY: the reference keeps the client alive until this release.
    let c = unsafe { &*client };
    let handle = c.binding_handle;
    if c.refs.release() {
        nmr::detach_complete(handle);
    }
}

/// The batch in progress during one event.
struct Batch {
    open: Option<BatchFunctions>,
    state: ebpf_execution_context_state_t,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            open: None,
            state: ebpf_execution_context_state_t::zeroed(),
        }
    }

    fn run(
        &mut self,
        client: &HookClient,
        context: *mut c_void,
        result: &mut u32,
    ) -> ebpf_result_t {
        match client.dispatch.batch {
            Some(fns) => {
                if !self.open.is_some_and(|open| open.same_as(&fns)) {
                    self.end();
                    // SAFETY: the client's batch begin, with our 64-byte state.
                    let begun = unsafe {
                        (fns.begin)(
                            core::mem::size_of::<ebpf_execution_context_state_t>(),
                            (&mut self.state as *mut ebpf_execution_context_state_t).cast(),
                        )
                    };
                    if begun == EBPF_SUCCESS {
                        self.open = Some(fns);
                    } else {
                        return plain_invoke(client, context, result);
                    }
                }
                // SAFETY: a batch of these functions is open with our state;
                // the client is referenced; context is the caller's.
                unsafe {
                    (fns.invoke)(
                        client.binding_context,
                        context,
                        result,
                        (&self.state as *const ebpf_execution_context_state_t).cast(),
                    )
                }
            }
            None => {
                self.end();
                plain_invoke(client, context, result)
            }
        }
    }

    fn end(&mut self) {
        if let Some(fns) = self.open.take() {
            // SAFETY: ends the batch begun with this state.
            unsafe { (fns.end)((&mut self.state as *mut ebpf_execution_context_state_t).cast()) };
        }
    }
}

fn plain_invoke(client: &HookClient, context: *mut c_void, result: &mut u32) -> ebpf_result_t {
    // SAFETY: the client's invoke with its own binding context; the client
    // is referenced for the duration.
    unsafe { (client.dispatch.invoke)(client.binding_context, context, result) }
}

impl Provider for HookProvider {
    type Binding = HookClient;

    fn attach(
        &'static self,
        binding_handle: HANDLE,
        client: &ClientAttach<'_>,
    ) -> Result<(HookClient, *const c_void), NTSTATUS> {
        self.attach_client(binding_handle, client)
            .map(|c| (c, ptr::null()))
    }

    fn attached(&'static self, binding: &HookClient) {
        self.link(binding);
    }

    fn abandon(&'static self, _binding: HookClient) {
        self.deactivate();
    }

    fn detach(&'static self, binding: &HookClient) -> NTSTATUS {
        let outcome = binding.refs.begin_detach();
        self.deactivate();
        match outcome {
            Detach::Complete => nt::STATUS_SUCCESS,
            Detach::Pending => nt::STATUS_PENDING,
        }
    }

    fn cleanup(&'static self, binding: &HookClient) {
        self.cleanup_client(binding);
    }
}
