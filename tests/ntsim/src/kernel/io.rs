//! I/O manager work items: `IoSizeofWorkItem`, `IoInitializeWorkItem`,
//! `IoUninitializeWorkItem`, `IoQueueWorkItem`.
//!
//! A queued item's routine runs on a system worker thread at PASSIVE_LEVEL,
//! in the System process. As on Windows, a queued work item holds a
//! reference on its driver: unloading waits until every queued routine has
//! returned (the loader calls [`wait_idle`] before unmapping the image).
//! Checks: queueing an item that is not initialized or already queued,
//! uninitializing a queued item, and IRQL above DISPATCH_LEVEL are
//! violations; initialized items never uninitialized are left behind.

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::irql;
use crate::kernel::types::{DISPATCH_LEVEL, PASSIVE_LEVEL};
use crate::kernel::violation;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Condvar, Mutex, MutexGuard};

/// `sizeof(IO_WORKITEM)` as this kernel reports it.
pub const WORK_ITEM_SIZE: u32 = 0x58;

/// `PIO_WORKITEM_ROUTINE`.
pub type WorkItemRoutine = unsafe extern "win64" fn(io_object: *mut c_void, context: *mut c_void);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ItemState {
    Idle,
    Queued,
}

struct Item {
    io_object: usize,
    state: ItemState,
}

struct State {
    items: BTreeMap<usize, Item>,
    /// Routines queued or running.
    in_flight: usize,
    queued_total: u64,
}

static STATE: Mutex<State> = Mutex::new(State {
    items: BTreeMap::new(),
    in_flight: 0,
    queued_total: 0,
});
static IDLE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

extern "win64" fn IoSizeofWorkItem() -> u32 {
    WORK_ITEM_SIZE
}

/// # Safety
/// `item` must be `IoSizeofWorkItem()` writable bytes the caller owns.
pub unsafe extern "win64" fn IoInitializeWorkItem(io_object: *mut c_void, item: *mut c_void) {
    irql::require_at_most("IoInitializeWorkItem", DISPATCH_LEVEL);
    if io_object.is_null() || item.is_null() {
        violation::record(
            "io",
            "IoInitializeWorkItem with a null IoObject or work item",
        );
        return;
    }
    // SAFETY: the caller owns WORK_ITEM_SIZE bytes at `item`; writing them
    // proves it (special pool faults on a short block).
    unsafe { std::ptr::write_bytes(item as *mut u8, 0, WORK_ITEM_SIZE as usize) };
    let mut st = state();
    if let Some(old) = st.items.get(&(item as usize)) {
        if old.state == ItemState::Queued {
            violation::record(
                "io",
                format!("IoInitializeWorkItem on a queued work item {item:p}"),
            );
            return;
        }
    }
    st.items.insert(
        item as usize,
        Item {
            io_object: io_object as usize,
            state: ItemState::Idle,
        },
    );
}

/// # Safety
/// `item` is a work item initialized by [`IoInitializeWorkItem`].
pub unsafe extern "win64" fn IoUninitializeWorkItem(item: *mut c_void) {
    irql::require_at_most("IoUninitializeWorkItem", DISPATCH_LEVEL);
    let mut st = state();
    match st.items.get(&(item as usize)).map(|i| i.state) {
        None => violation::record("io", format!("IoUninitializeWorkItem on {item:p}, which is not an initialized work item")),
        Some(ItemState::Queued) => violation::record(
            "io",
            format!("IoUninitializeWorkItem on {item:p} while it is queued (its routine has not started)"),
        ),
        Some(ItemState::Idle) => {
            st.items.remove(&(item as usize));
        }
    }
}

/// # Safety
/// `item` is an initialized work item; `routine` a function of the caller's
/// image that stays loaded until it returns (the I/O manager guarantees it).
pub unsafe extern "win64" fn IoQueueWorkItem(
    item: *mut c_void,
    routine: Option<WorkItemRoutine>,
    _queue_type: u32,
    context: *mut c_void,
) {
    irql::require_at_most("IoQueueWorkItem", DISPATCH_LEVEL);
    let Some(routine) = routine else {
        violation::record("io", "IoQueueWorkItem with a null routine");
        return;
    };
    let io_object = {
        let mut st = state();
        let io_object = match st.items.get_mut(&(item as usize)) {
            None => {
                violation::record(
                    "io",
                    format!("IoQueueWorkItem on {item:p}, which is not an initialized work item"),
                );
                return;
            }
            Some(i) if i.state == ItemState::Queued => {
                violation::record(
                    "io",
                    format!("IoQueueWorkItem on {item:p}, which is already queued"),
                );
                return;
            }
            Some(i) => {
                i.state = ItemState::Queued;
                i.io_object
            }
        };
        st.in_flight += 1;
        st.queued_total += 1;
        io_object
    };
    let item = item as usize;
    let context = context as usize;
    std::thread::spawn(move || {
        crate::kernel::crash::install_thread();
        wait_while_held();
        irql::set(PASSIVE_LEVEL);
        // The routine may queue the item again once it has started.
        if let Some(i) = state().items.get_mut(&item) {
            i.state = ItemState::Idle;
        }
        // SAFETY: the routine the driver queued, with the arguments it gave.
        unsafe { routine(io_object as *mut c_void, context as *mut c_void) };
        if irql::current() != PASSIVE_LEVEL {
            violation::record("io", "a work item routine returned above PASSIVE_LEVEL");
        }
        let mut st = state();
        st.in_flight -= 1;
        if st.in_flight == 0 {
            IDLE.notify_all();
        }
    });
}

static HELD: Mutex<bool> = Mutex::new(false);
static RELEASED: Condvar = Condvar::new();

/// While the returned guard lives, queued work item routines wait before
/// they start (a test arranges what happens while a work item is queued);
/// dropping it lets them run.
pub fn hold() -> Hold {
    *HELD.lock().unwrap_or_else(|e| e.into_inner()) = true;
    Hold(())
}

/// See [`hold`].
#[must_use = "work items run again as soon as the guard is dropped"]
pub struct Hold(());

impl Drop for Hold {
    fn drop(&mut self) {
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = false;
        RELEASED.notify_all();
    }
}

/// Blocks a work item routine while a [`hold`] lives; fails with a message
/// after [`crate::kernel::sync::wait_limit`] (a test that never drops its
/// guard).
fn wait_while_held() {
    let started = std::time::Instant::now();
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    while *held {
        let limit = crate::kernel::sync::wait_limit();
        let elapsed = started.elapsed();
        if elapsed >= limit {
            drop(held);
            crate::kernel::sync::hung("a held work item to be released (io::hold)", started);
        }
        held = RELEASED
            .wait_timeout(held, limit - elapsed)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Routines queued and not yet finished (held ones included).
pub fn in_flight() -> usize {
    state().in_flight
}

/// Waits until no work item routine is queued or running; fails with a
/// message (through [`crate::kernel::sync::hung`]) after
/// [`crate::kernel::sync::wait_limit`].
pub fn wait_idle() {
    let started = std::time::Instant::now();
    let mut st = state();
    while st.in_flight > 0 {
        let limit = crate::kernel::sync::wait_limit();
        let elapsed = started.elapsed();
        if elapsed >= limit {
            let n = st.in_flight;
            drop(st);
            crate::kernel::sync::hung(&format!("{n} work item routine(s) to finish"), started);
        }
        st = IDLE
            .wait_timeout(st, limit - elapsed)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Work items queued since the process started.
pub fn queued_total() -> u64 {
    state().queued_total
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", IoSizeofWorkItem),
        export!("ntoskrnl.exe", IoInitializeWorkItem),
        export!("ntoskrnl.exe", IoUninitializeWorkItem),
        export!("ntoskrnl.exe", IoQueueWorkItem),
    ]
}

pub(crate) fn reset() {
    wait_idle();
    state().items.clear();
}

pub(crate) fn outstanding() -> Vec<String> {
    state()
        .items
        .keys()
        .map(|k| format!("I/O work item at {k:#x} initialized and never uninitialized"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RUNS: AtomicU32 = AtomicU32::new(0);

    unsafe extern "win64" fn routine(io_object: *mut c_void, context: *mut c_void) {
        assert_eq!(irql::current(), PASSIVE_LEVEL);
        assert_eq!(io_object as usize, 0x1000);
        RUNS.fetch_add(context as u32, Ordering::SeqCst);
    }

    #[test]
    fn queued_routines_run_at_passive_and_misuse_is_caught() {
        let sim = crate::Sim::new();
        let mut item = vec![0u8; WORK_ITEM_SIZE as usize];
        let p = item.as_mut_ptr().cast::<c_void>();
        let before = RUNS.load(Ordering::SeqCst);
        // SAFETY: `item` is WORK_ITEM_SIZE bytes we own.
        unsafe {
            IoInitializeWorkItem(0x1000 as *mut c_void, p);
            irql::at(DISPATCH_LEVEL, || {
                IoQueueWorkItem(p, Some(routine), 1, 5 as *mut c_void)
            });
        }
        wait_idle();
        assert_eq!(RUNS.load(Ordering::SeqCst) - before, 5);
        assert!(violation::take().is_empty());
        assert_eq!(outstanding().len(), 1, "initialized, not yet uninitialized");
        // SAFETY: as above.
        unsafe {
            IoUninitializeWorkItem(p);
            IoQueueWorkItem(p, Some(routine), 1, std::ptr::null_mut());
        }
        let v = violation::take();
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("not an initialized work item"));
        assert!(outstanding().is_empty());
        sim.finish().unwrap();
    }
}
