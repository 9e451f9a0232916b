//! Processors: `KeQueryMaximumProcessorCountEx` and
//! `KeGetCurrentProcessorNumberEx`.
//!
//! The simulated machine has [`CPU_COUNT`] processors in one group. Host
//! threads are not pinned, so a caller below DISPATCH_LEVEL may be moved to
//! another processor at any moment, as on Windows: ntsim makes that happen
//! on every call (each call below DISPATCH_LEVEL answers the next
//! processor), so a driver that indexes per-processor state without
//! raising IRQL (or holding a lock) sees it move at once. At DISPATCH_LEVEL
//! and above the thread keeps the processor it had when it got there.

use crate::kernel::export::{export, Export};
use crate::kernel::irql;
use crate::kernel::types::DISPATCH_LEVEL;
use crate::kernel::violation;
use std::cell::Cell;

/// The simulated machine's processors (one group).
pub const CPU_COUNT: u32 = 2;

/// `ALL_PROCESSOR_GROUPS`.
pub const ALL_PROCESSOR_GROUPS: u16 = 0xFFFF;

thread_local! {
    /// The processor this host thread last ran on.
    static CURRENT: Cell<u32> = const { Cell::new(0) };
}

/// `PROCESSOR_NUMBER`.
#[repr(C)]
pub struct PROCESSOR_NUMBER {
    /// The group (always 0 here).
    pub Group: u16,
    /// The processor within the group.
    pub Number: u8,
    /// Zero.
    pub Reserved: u8,
}

/// The processor the caller runs on now: the same one at DISPATCH_LEVEL or
/// above, the next one otherwise (the thread migrated).
pub fn current() -> u32 {
    CURRENT.with(|c| {
        if irql::current() < DISPATCH_LEVEL {
            c.set((c.get() + 1) % CPU_COUNT);
        }
        c.get()
    })
}

/// `KeQueryMaximumProcessorCountEx` (any IRQL): the processors of `group`,
/// or of every group for `ALL_PROCESSOR_GROUPS`.
extern "win64" fn KeQueryMaximumProcessorCountEx(group: u16) -> u32 {
    match group {
        0 | ALL_PROCESSOR_GROUPS => CPU_COUNT,
        _ => 0,
    }
}

/// `KeGetCurrentProcessorNumberEx` (any IRQL): the caller's system-wide
/// processor index, and its group and number when asked.
///
/// # Safety
/// `number` is null or writable.
unsafe extern "win64" fn KeGetCurrentProcessorNumberEx(number: *mut PROCESSOR_NUMBER) -> u32 {
    let index = current();
    if !number.is_null() {
        if !(number as usize).is_multiple_of(std::mem::align_of::<PROCESSOR_NUMBER>()) {
            violation::record(
                "processor",
                format!("KeGetCurrentProcessorNumberEx({number:p}): misaligned PROCESSOR_NUMBER"),
            );
            return index;
        }
        // SAFETY: the caller's writable PROCESSOR_NUMBER (checked aligned).
        unsafe {
            number.write(PROCESSOR_NUMBER {
                Group: 0,
                Number: index as u8,
                Reserved: 0,
            })
        };
    }
    index
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", KeQueryMaximumProcessorCountEx),
        export!("ntoskrnl.exe", KeGetCurrentProcessorNumberEx),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_moves_below_dispatch_and_stays_above() {
        let _sim = crate::Sim::new();
        assert_eq!(
            KeQueryMaximumProcessorCountEx(ALL_PROCESSOR_GROUPS),
            CPU_COUNT
        );
        assert_eq!(KeQueryMaximumProcessorCountEx(1), 0);
        // SAFETY: null is allowed.
        let a = unsafe { KeGetCurrentProcessorNumberEx(std::ptr::null_mut()) };
        // SAFETY: as above.
        let b = unsafe { KeGetCurrentProcessorNumberEx(std::ptr::null_mut()) };
        assert_ne!(a, b, "below DISPATCH_LEVEL every call migrates");
        assert!(a < CPU_COUNT && b < CPU_COUNT);
        irql::at(DISPATCH_LEVEL, || {
            let mut n = PROCESSOR_NUMBER {
                Group: 9,
                Number: 9,
                Reserved: 9,
            };
            // SAFETY: a writable PROCESSOR_NUMBER.
            let c = unsafe { KeGetCurrentProcessorNumberEx(&mut n) };
            // SAFETY: as above.
            let d = unsafe { KeGetCurrentProcessorNumberEx(&mut n) };
            assert_eq!(c, d, "no migration at DISPATCH_LEVEL");
            assert_eq!((n.Group, u32::from(n.Number), n.Reserved), (0, c, 0));
        });
    }
}
