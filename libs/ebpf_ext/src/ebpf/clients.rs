//! The hook provider's clients: an array of entry pointers published
//! through one pointer and read under an [`Epoch`], and the writer's side
//! that changes it and defers what it replaced to grace periods.
//!
//! This is the only module that follows the pointers. The invoke path
//! enters the epoch once per event ([`Published::enter`]), reads the
//! published [`ClientArray`] ([`Published::clients`]) and leaves once: no
//! lock, no atomic per client, no shared cache line written (see
//! [`Epoch`]). Everything else runs under the provider's lock, which hands
//! out the `&mut Writer` its methods take (the proof that it is held):
//!
//! - [`Writer::reserve`] (attach): makes room in the published array for
//!   one more entry, by allocating a larger array when it is full (copying
//!   the entries still attached, in order); the replaced array is freed
//!   after a grace period. The only step that can fail.
//! - [`Writer::publish`] (the binding at its final address): appends the
//!   entry to the reserved room; readers that load the array's length
//!   after that see it. [`Writer::unreserve`] gives the room back.
//! - [`Writer::detach`]: marks the entry detached (no event that reads
//!   the mark calls it again), publishes a compacted array without it (no
//!   event that starts later finds it; when the pool is exhausted, its
//!   slot is made a hole instead, so a detach never fails) and defers its
//!   completion to a grace period: every event that could have read its
//!   pointer has left when it is reported. Never waits.
//!
//! One grace period runs at a time; what is deferred while one runs waits
//! for the next, which whoever ends the current one starts. What is over
//! comes back as [`Done`], which the caller finishes outside the lock:
//! arrays are freed, entries reported detached (the caller completes the
//! NMR detach, after which the entry may be freed).
//!
//! A hole is a slot that points to the [`Published`]'s own entry, tagged
//! [`DETACHED`], which readers skip; the next reallocation compacts it
//! away. Arrays hold at most about twice the clients attached, plus holes.

use crate::pool::PoolBox;
use crate::sync::{Epoch, EpochReader};
use alloc::vec::Vec;
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// Set in an entry's tag once its detach has begun (and in the tag of the
/// entry that stands in for detached clients in the array).
pub const DETACHED: u8 = 0x80;

/// One client: its value and its tag, the caller's kind of client (below
/// [`DETACHED`]) or'ed with [`DETACHED`] once its detach has begun: the
/// invoke path reads both with one load.
///
/// # Invariants
/// `done_next` links the entry in one deferred list of a [`Writer`] or a
/// [`Done`]; it is written only by their methods (under the provider's
/// lock, or by the owner of the `Done`).
pub struct Entry<T> {
    value: T,
    tag: AtomicU8,
    done_next: Cell<*const Entry<T>>,
}

// SAFETY: `done_next` is only touched under the provider's lock or by the
// single owner of a `Done` (see the invariant); `tag` is atomic;
// `value` is shared as `&T` across threads (T: Sync) and dropped on
// whichever thread cleans the binding up (T: Send).
unsafe impl<T: Send + Sync> Sync for Entry<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Entry<T> {}

impl<T> Entry<T> {
    /// An entry of kind `kind` not published anywhere.
    ///
    /// # Panics
    /// If `kind` has the [`DETACHED`] bit.
    pub const fn new(value: T, kind: u8) -> Entry<T> {
        assert!(kind & DETACHED == 0, "a kind with the DETACHED bit");
        Entry {
            value,
            tag: AtomicU8::new(kind),
            done_next: Cell::new(ptr::null()),
        }
    }

    /// Its kind, or'ed with [`DETACHED`] once its detach has begun (an
    /// event then skips it).
    #[inline]
    pub fn tag(&self) -> u8 {
        self.tag.load(Ordering::Relaxed)
    }

    /// The client's value.
    #[inline]
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Whether its detach has begun.
    #[inline]
    pub fn is_detaching(&self) -> bool {
        self.tag() & DETACHED != 0
    }
}

/// The entries of one hook, in attach order; a slot that points to its
/// [`Published`]'s hole is a detached client.
///
/// # Invariants
/// `slots[..len]` were written before `len` covered them (Release/Acquire
/// on `len`) and change afterwards only to the hole; each points to a live
/// entry: the hole, or an entry until the grace period deferred by its
/// detach is over.
/// `len <= slots.len()`, which is the capacity, fixed at allocation.
pub struct ClientArray<T> {
    len: AtomicUsize,
    slots: Vec<AtomicPtr<Entry<T>>>,
    /// The next array in a deferred list (writer only).
    retired_next: Cell<*mut ClientArray<T>>,
}

impl<T> ClientArray<T> {
    /// An empty array with room for `capacity` entries; `None` when the
    /// pool is exhausted.
    fn with_capacity(capacity: usize) -> Option<PoolBox<ClientArray<T>>> {
        #[cfg(test)]
        if tests::FAIL_ALLOCATION.with(|f| f.replace(false)) {
            return None;
        }
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity).ok()?;
        slots.resize_with(capacity, || AtomicPtr::new(ptr::null_mut()));
        PoolBox::try_new(ClientArray {
            len: AtomicUsize::new(0),
            slots,
            retired_next: Cell::new(ptr::null_mut()),
        })
        .ok()
    }

    /// The published slots.
    #[inline]
    fn published(&self) -> &[AtomicPtr<Entry<T>>] {
        let len = self.len.load(Ordering::Acquire);
        // SAFETY: `len <= slots.len()` (invariant): the first `len` slots
        // are initialized elements of the vector, which lives as long as
        // `self` and is never resized (no bounds check on the event path).
        unsafe { core::slice::from_raw_parts(self.slots.as_ptr(), len) }
    }

    /// The entries still attached, `hole` being the [`Published`]'s (writer
    /// only: the slots it reads do not change while it holds the lock).
    fn entries<'a>(&'a self, hole: &'a Entry<T>) -> impl Iterator<Item = *mut Entry<T>> + 'a {
        self.published()
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(move |&p| !ptr::eq(p, hole))
    }
}

/// What the invoke path reads: the published array and the epoch it is
/// read under, and the hole: the entry, tagged [`DETACHED`], that a
/// detached client's slot points to (so a reader never meets a null).
///
/// # Invariants
/// `array` is null or an array allocated by [`ClientArray::with_capacity`]
/// that stays live until a grace period begun after it was replaced is
/// over (or, at [`Writer::shutdown`], until no reader remains). `hole` is
/// tagged [`DETACHED`]; this value does not move while an array points to
/// it ([`Writer::publish`]'s contract).
pub struct Published<T> {
    array: AtomicPtr<ClientArray<T>>,
    epoch: Epoch,
    hole: Entry<T>,
}

// SAFETY: the array and its entries are shared across threads as `&`
// (T: Sync), and freed or dropped by the writer on any thread (T: Send).
unsafe impl<T: Send + Sync> Sync for Published<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Published<T> {}

impl<T> Published<T> {
    /// Nothing published; `hole` is the value of the entry detached
    /// clients' slots point to (never called: it is tagged [`DETACHED`]).
    pub const fn new(hole: T) -> Published<T> {
        Published {
            array: AtomicPtr::new(ptr::null_mut()),
            epoch: Epoch::new(),
            hole: Entry {
                value: hole,
                tag: AtomicU8::new(DETACHED),
                done_next: Cell::new(ptr::null()),
            },
        }
    }

    /// Enters the epoch (see [`Epoch::enter`]; `drained`, rare, means a
    /// grace period ended: the caller runs [`Writer::grace_period_over`]).
    #[inline]
    pub fn enter(&self, drained: impl FnMut()) -> EpochReader<'_> {
        self.epoch.enter(drained)
    }

    /// Leaves; true when a grace period ended (as for `enter`'s `drained`).
    #[inline]
    #[must_use]
    pub fn leave(&self, reader: EpochReader<'_>) -> bool {
        self.epoch.leave(reader)
    }

    /// The published slots, valid while `reader` is inside.
    #[inline]
    pub fn clients<'r>(&self, _reader: &'r EpochReader<'_>) -> Clients<'r, T> {
        let array = self.array.load(Ordering::Acquire);
        // SAFETY: a non-null array stays live until a grace period begun
        // after it was replaced is over (invariant), which waits for this
        // reader (it entered before reading the pointer).
        let slots = unsafe { array.as_ref() }.map_or(&[][..], |a| a.published());
        Clients { slots }
    }
}

/// The slots one event reads.
pub struct Clients<'r, T> {
    slots: &'r [AtomicPtr<Entry<T>>],
}

impl<'r, T> Clients<'r, T> {
    /// The entries, in attach order, detached ones included (their
    /// [`tag`](Entry::tag) has [`DETACHED`]: skip them).
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = &'r Entry<T>> + 'r {
        self.slots.iter().map(|slot| {
            // SAFETY: every published slot points to an entry that stays
            // live while the reader is inside (ClientArray's invariant).
            unsafe { &*slot.load(Ordering::Relaxed) }
        })
    }
}

/// Arrays and entries deferred to one grace period (intrusive lists).
struct Deferred<T> {
    arrays: *mut ClientArray<T>,
    entries: *const Entry<T>,
}

impl<T> Deferred<T> {
    const EMPTY: Deferred<T> = Deferred {
        arrays: ptr::null_mut(),
        entries: ptr::null(),
    };

    fn is_empty(&self) -> bool {
        self.arrays.is_null() && self.entries.is_null()
    }

    fn push_array(&mut self, array: *mut ClientArray<T>) {
        // SAFETY: a live array the writer owns (retired, not yet freed).
        unsafe { &*array }.retired_next.set(self.arrays);
        self.arrays = array;
    }

    fn push_entry(&mut self, entry: &Entry<T>) {
        entry.done_next.set(self.entries);
        self.entries = entry;
    }

    /// Moves everything of `other` into `self`.
    fn append(&mut self, other: Deferred<T>) {
        let mut a = other.arrays;
        while !a.is_null() {
            // SAFETY: arrays of a deferred list are live.
            let next = unsafe { &*a }.retired_next.get();
            self.push_array(a);
            a = next;
        }
        let mut e = other.entries;
        while !e.is_null() {
            // SAFETY: entries of a deferred list are live.
            let entry = unsafe { &*e };
            let next = entry.done_next.get();
            self.push_entry(entry);
            e = next;
        }
    }
}

/// The writer's state, behind the provider's lock.
///
/// # Invariants
/// `reserved` counts the entries reserved and not yet published or given
/// back; the published array has room for them (`len + reserved <=
/// capacity`). A grace period is in progress exactly when `current` is not
/// empty; then `current` is what it was begun for and `next` what was
/// deferred since (empty otherwise). Arrays in either list were replaced
/// and are freed, entries in them were detached and are reported, only
/// when their grace period is over.
pub struct Writer<T> {
    reserved: usize,
    current: Deferred<T>,
    next: Deferred<T>,
}

// SAFETY: the lists hold pointers owned by the writer, reached only under
// the provider's lock.
unsafe impl<T: Send + Sync> Send for Writer<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Writer<T> {}

impl<T> Default for Writer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Writer<T> {
    /// Nothing reserved or deferred.
    pub const fn new() -> Writer<T> {
        Writer {
            reserved: 0,
            current: Deferred::EMPTY,
            next: Deferred::EMPTY,
        }
    }

    /// Makes room for one more entry (see the module docs). When the
    /// published array is full, a larger one replaces it (its old array is
    /// deferred: the result may hold a grace period that is already over).
    ///
    /// `None` when the pool is exhausted (nothing changed).
    pub fn reserve(&mut self, published: &Published<T>) -> Option<Done<T>> {
        let old = published.array.load(Ordering::Relaxed);
        // SAFETY: the published array is live; the writer holds the lock.
        let (len, capacity, live) = match unsafe { old.as_ref() } {
            Some(a) => (
                a.published().len(),
                a.slots.len(),
                a.entries(&published.hole).count(),
            ),
            None => (0, 0, 0),
        };
        if len + self.reserved < capacity {
            self.reserved += 1;
            return Some(Done::default());
        }
        let old = self.compact(published, None, live + self.reserved + 1)?;
        self.reserved += 1;
        if old.is_null() {
            return Some(Done::default());
        }
        let mut deferred = Deferred::EMPTY;
        deferred.push_array(old);
        Some(self.defer(published, deferred))
    }

    /// Publishes a new array holding the attached entries but `skip`, with
    /// room for at least `needed` (and a margin: at most about twice as
    /// much), and returns the old one (null when there was none), which the
    /// caller must defer. `None` when the pool is exhausted (nothing
    /// changed).
    fn compact(
        &mut self,
        published: &Published<T>,
        skip: Option<&Entry<T>>,
        needed: usize,
    ) -> Option<*mut ClientArray<T>> {
        let array = ClientArray::with_capacity((needed * 2).max(4))?;
        let old = published.array.load(Ordering::Relaxed);
        let mut n = 0;
        // SAFETY: the published array is live; the writer holds the lock.
        if let Some(a) = unsafe { old.as_ref() } {
            for entry in a.entries(&published.hole) {
                if skip.is_some_and(|s| ptr::eq(s, entry)) {
                    continue;
                }
                array.slots[n].store(entry, Ordering::Relaxed);
                n += 1;
            }
        }
        array.len.store(n, Ordering::Release);
        // INVARIANT (Published): the new array is live until replaced and
        // deferred (by the caller, for the old one); it has room for
        // `needed` entries.
        published
            .array
            .store(PoolBox::into_raw(array), Ordering::SeqCst);
        Some(old)
    }

    /// Gives back a reservation that will not be published.
    pub fn unreserve(&mut self) {
        debug_assert!(self.reserved > 0, "unreserve without reserve");
        self.reserved -= 1;
    }

    /// Appends `entry` to the room one [`reserve`](Self::reserve) made:
    /// events that begin from now on call it.
    ///
    /// # Safety
    /// `entry` stays at its address until its detach is reported in a
    /// [`Done`] (it is then no longer reachable); it is published once.
    /// `published` does not move from now on (it lives in a static).
    pub unsafe fn publish(&mut self, published: &Published<T>, entry: &Entry<T>) {
        let array = published.array.load(Ordering::Relaxed);
        // SAFETY: a reservation was made, so an array with room exists.
        let array = unsafe { &*array };
        let len = array.len.load(Ordering::Relaxed);
        assert!(
            self.reserved > 0 && len < array.slots.len(),
            "publish without reserve"
        );
        array.slots[len].store(ptr::from_ref(entry).cast_mut(), Ordering::Relaxed);
        // INVARIANT: the slot is written before `len` covers it.
        array.len.store(len + 1, Ordering::Release);
        self.reserved -= 1;
    }

    /// Begins `entry`'s detach: from now on an event that reaches it
    /// skips it, and an event that begins does not find it. Its
    /// completion is deferred to a grace period: the result holds it if
    /// no event could still call it (the detach is complete at once).
    ///
    /// # Panics
    /// If `entry` is not published (or its detach began already).
    pub fn detach(&mut self, published: &Published<T>, entry: &Entry<T>) -> Done<T> {
        let was = entry.tag.fetch_or(DETACHED, Ordering::SeqCst);
        assert!(was & DETACHED == 0, "detach begun twice");
        let mut deferred = Deferred::EMPTY;
        deferred.push_entry(entry);
        let array = published.array.load(Ordering::Relaxed);
        // SAFETY: an entry that is published is in the published array
        // (reallocation copies every attached one), which is live.
        let (live, slot) = match unsafe { array.as_ref() } {
            Some(a) => (
                a.entries(&published.hole).count(),
                a.published()
                    .iter()
                    .find(|s| ptr::eq(s.load(Ordering::Relaxed), entry)),
            ),
            None => (0, None),
        };
        let slot = slot.expect("detach of an entry that is not published");
        // A compact array without the entry, so events do not step over
        // holes; when the pool is exhausted, the entry's slot becomes a
        // hole instead (a detach does not fail).
        match self.compact(published, Some(entry), live - 1 + self.reserved) {
            Some(old) => deferred.push_array(old),
            // INVARIANT (ClientArray): the slot changes to the hole, which
            // does not move (`publish`'s contract).
            None => slot.store(ptr::from_ref(&published.hole).cast_mut(), Ordering::SeqCst),
        }
        self.defer(published, deferred)
    }

    /// Adds `deferred` to the grace period in progress's successor, or
    /// begins one for it.
    fn defer(&mut self, published: &Published<T>, deferred: Deferred<T>) -> Done<T> {
        if !self.current.is_empty() {
            self.next.append(deferred);
            return Done::default();
        }
        self.current = deferred;
        // SAFETY: calls are serialised by the provider's lock, and none is
        // in progress (`current` was empty: invariant).
        if unsafe { published.epoch.start() } {
            self.grace_period_over(published)
        } else {
            Done::default()
        }
    }

    /// The grace period in progress is over (an epoch reader was told so,
    /// or `start` found no reader): hands back what it was for, and begins
    /// the next one if anything was deferred meanwhile (taking it too when
    /// that one is over at once).
    pub fn grace_period_over(&mut self, published: &Published<T>) -> Done<T> {
        let mut done = Deferred::EMPTY;
        loop {
            debug_assert!(!self.current.is_empty(), "no grace period in progress");
            done.append(core::mem::replace(&mut self.current, Deferred::EMPTY));
            if self.next.is_empty() {
                break;
            }
            self.current = core::mem::replace(&mut self.next, Deferred::EMPTY);
            // SAFETY: serialised by the lock; the previous one is over.
            if !unsafe { published.epoch.start() } {
                break;
            }
        }
        Done(done)
    }

    /// At unload, when no reader can enter any more and none is inside:
    /// frees the published array and anything still deferred.
    ///
    /// # Panics
    /// If an entry is still published or its detach not reported (NMR
    /// deregisters the provider only after every detach completed).
    pub fn shutdown(&mut self, published: &Published<T>) {
        let array = published.array.swap(ptr::null_mut(), Ordering::SeqCst);
        if !array.is_null() {
            // SAFETY: the published array, no longer reachable and read by
            // no one (the caller's contract).
            let array = unsafe { PoolBox::from_raw(array) };
            assert_eq!(
                array.entries(&published.hole).count(),
                0,
                "a client is still attached"
            );
        }
        let mut rest = core::mem::replace(&mut self.current, Deferred::EMPTY);
        rest.append(core::mem::replace(&mut self.next, Deferred::EMPTY));
        assert!(rest.entries.is_null(), "a detach was never reported");
        Done(rest).finish(|_| {});
    }
}

/// What grace periods that are over handed back: replaced arrays to free
/// and detached entries to report. Finish it outside the provider's lock
/// (reporting a detach may call back into the provider).
#[must_use = "arrays would leak and detaches never complete"]
pub struct Done<T>(Deferred<T>);

impl<T> Default for Done<T> {
    fn default() -> Self {
        Done(Deferred::EMPTY)
    }
}

impl<T> Done<T> {
    /// Whether `entry`'s detach is among those reported.
    pub fn holds(&self, entry: &Entry<T>) -> bool {
        let mut e = self.0.entries;
        while !e.is_null() {
            if ptr::eq(e, entry) {
                return true;
            }
            // SAFETY: entries of a deferred list are live.
            e = unsafe { &*e }.done_next.get();
        }
        false
    }

    /// Frees the arrays and calls `detached` once for each entry (after
    /// which the entry may be freed: it is not touched again).
    pub fn finish(self, mut detached: impl FnMut(&Entry<T>)) {
        let mut a = self.0.arrays;
        while !a.is_null() {
            // SAFETY: a replaced array whose grace period is over: no
            // reader can reach it; the writer owned it and hands it back
            // once (Published's invariant).
            let array = unsafe { PoolBox::from_raw(a) };
            a = array.retired_next.get();
            drop(array);
        }
        let mut e = self.0.entries;
        while !e.is_null() {
            // SAFETY: a detached entry whose grace period is over: live
            // until reported (Writer::publish's contract).
            let entry = unsafe { &*e };
            e = entry.done_next.get();
            detached(entry);
        }
        core::mem::forget(self);
    }
}

impl<T> Drop for Done<T> {
    fn drop(&mut self) {
        debug_assert!(self.0.is_empty(), "a Done dropped without finish");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    std::thread_local! {
        /// Makes the next array allocation of this thread fail.
        pub(super) static FAIL_ALLOCATION: Cell<bool> = const { Cell::new(false) };
    }

    fn values(p: &Published<u32>) -> Vec<u32> {
        let r = p.enter(|| panic!("no grace period in these tests"));
        let v = p
            .clients(&r)
            .iter()
            .filter(|e| e.tag() & DETACHED == 0)
            .map(|e| *e.value())
            .collect();
        assert!(!p.leave(r));
        v
    }

    fn no_work(done: Done<u32>) {
        let mut n = 0;
        done.finish(|_| n += 1);
        assert_eq!(n, 0, "nothing was detached");
    }

    fn attach(w: &mut Writer<u32>, p: &Published<u32>, e: &Entry<u32>) {
        // Arrays replaced here have no reader: freed at once.
        w.reserve(p).map(no_work).expect("allocation");
        // SAFETY: the tests' entries outlive the writer's use of them.
        unsafe { w.publish(p, e) };
    }

    #[test]
    fn attach_order_is_kept_across_reallocations_and_holes() {
        let entries: Vec<Entry<u32>> = (0..40).map(|v| Entry::new(v, 1)).collect();
        let (p, mut w) = (Published::new(u32::MAX), Writer::new());
        assert!(values(&p).is_empty());
        let capacity = |p: &Published<u32>| {
            // SAFETY: the array exists (something was attached).
            unsafe { &*p.array.load(Ordering::Relaxed) }.slots.len()
        };
        let mut capacities = Vec::new();
        for e in &entries[..10] {
            attach(&mut w, &p, e);
            capacities.push(capacity(&p));
        }
        // Reallocated only when full, to twice what is needed (the
        // entries, the reservation, one more).
        assert_eq!(capacities, [4, 4, 4, 4, 10, 10, 10, 10, 10, 10]);
        let mut completed = Vec::new();
        for e in [&entries[0], &entries[4], &entries[9]] {
            // Out of pool: the detach leaves a hole instead of compacting.
            FAIL_ALLOCATION.with(|f| f.set(e.value() % 2 == 0));
            let done = w.detach(&p, e);
            assert!(done.holds(e), "no reader: complete at once");
            done.finish(|e| completed.push(*e.value()));
            // SAFETY: the array exists.
            let array = unsafe { &*p.array.load(Ordering::Relaxed) };
            let expected_len = if *e.value() == 9 { 7 } else { 10 };
            assert_eq!(
                array.published().len(),
                expected_len,
                "holes until a detach compacts (all of them)"
            );
        }
        assert_eq!(completed, [0, 4, 9]);
        // The compacting detach sized the array for the 7 left.
        assert_eq!(capacity(&p), 14);
        assert_eq!(values(&p), [1, 2, 3, 5, 6, 7, 8]);
        // A failed reservation changes nothing.
        FAIL_ALLOCATION.with(|f| f.set(true));
        let full = loop {
            match w.reserve(&p) {
                Some(done) => no_work(done),
                None => break w.reserved,
            }
        };
        for _ in 0..full {
            w.unreserve();
        }
        assert_eq!(values(&p), [1, 2, 3, 5, 6, 7, 8]);
        for e in &entries[10..] {
            attach(&mut w, &p, e);
        }
        let expected: Vec<u32> = [1, 2, 3, 5, 6, 7, 8].into_iter().chain(10..40).collect();
        assert_eq!(values(&p), expected);
        // SAFETY: the array exists.
        let array = unsafe { &*p.array.load(Ordering::Relaxed) };
        assert!(
            array.slots.len() <= 2 * (expected.len() + 1),
            "reallocation compacts and stays within twice the clients"
        );
        for e in &entries {
            if !e.is_detaching() {
                w.detach(&p, e).finish(|_| {});
            }
        }
        w.shutdown(&p);
    }

    #[test]
    fn a_detach_with_a_reader_inside_completes_when_it_leaves() {
        let entries: Vec<Entry<u32>> = (0..3).map(|v| Entry::new(v, 0)).collect();
        let (p, mut w) = (Published::new(u32::MAX), Writer::new());
        for e in &entries {
            attach(&mut w, &p, e);
        }
        let r = p.enter(|| panic!());
        let seen = p.clients(&r);
        // A detach while the reader holds the array: it skips the entry
        // from now on, and the detach waits for it.
        let done = w.detach(&p, &entries[1]);
        assert!(!done.holds(&entries[1]), "a reader is inside");
        no_work(done);
        let seen: Vec<_> = seen
            .iter()
            .filter(|e| !e.is_detaching())
            .map(|e| *e.value())
            .collect();
        assert_eq!(seen, [0, 2]);
        // A second detach meanwhile waits for the next grace period.
        no_work(w.detach(&p, &entries[2]));
        // An attach that reallocates defers the old array the same way.
        let more: Vec<Entry<u32>> = (10..14).map(|v| Entry::new(v, 0)).collect();
        for e in &more {
            attach(&mut w, &p, e);
        }
        assert_eq!(values(&p), [0, 10, 11, 12, 13]);
        assert!(
            p.leave(r),
            "the only reader of the old parity ends the period"
        );
        let done = w.grace_period_over(&p);
        let mut completed = Vec::new();
        done.finish(|e| completed.push(*e.value()));
        completed.sort();
        assert_eq!(completed, [1, 2], "each detach reported once");
        for e in entries.iter().take(1).chain(&more) {
            w.detach(&p, e).finish(|_| {});
        }
        w.shutdown(&p);
    }

    #[test]
    fn unreserve_gives_the_room_back() {
        let e = Entry::new(1u32, 0);
        let (p, mut w) = (Published::new(u32::MAX), Writer::new());
        no_work(w.reserve(&p).unwrap());
        w.unreserve();
        assert_eq!(w.reserved, 0);
        attach(&mut w, &p, &e);
        assert_eq!(values(&p), [1]);
        w.detach(&p, &e).finish(|_| {});
        w.shutdown(&p);
    }

    /// Attaches that reserved room and have not published yet (NMR may
    /// run several attach callbacks at once) keep it across a reallocation
    /// and a compacting detach.
    #[test]
    fn reservations_outstanding_keep_their_room_across_reallocation_and_detach() {
        let entries: Vec<Entry<u32>> = (0..8).map(|v| Entry::new(v, 0)).collect();
        let (p, mut w) = (Published::new(u32::MAX), Writer::new());
        for e in &entries[..2] {
            attach(&mut w, &p, e);
        }
        // Three attaches in progress: the third reservation finds the
        // array (capacity 4) full with its two entries and two reservations.
        for _ in 0..3 {
            no_work(w.reserve(&p).expect("allocation"));
        }
        for e in &entries[2..5] {
            // SAFETY: as in `attach`.
            unsafe { w.publish(&p, e) };
        }
        assert_eq!(values(&p), [0, 1, 2, 3, 4]);
        // Three more in progress while a detach compacts the array: it
        // keeps room for them.
        for _ in 0..3 {
            no_work(w.reserve(&p).expect("allocation"));
        }
        let done = w.detach(&p, &entries[0]);
        assert!(done.holds(&entries[0]));
        done.finish(|_| {});
        for e in &entries[5..8] {
            // SAFETY: as in `attach`.
            unsafe { w.publish(&p, e) };
        }
        assert_eq!(values(&p), [1, 2, 3, 4, 5, 6, 7]);
        for e in &entries[1..] {
            w.detach(&p, e).finish(|_| {});
        }
        w.shutdown(&p);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a Done dropped without finish")]
    fn a_done_dropped_unfinished_is_reported_in_debug_builds() {
        let e = Entry::new(1u32, 0);
        let (p, mut w) = (Published::new(u32::MAX), Writer::new());
        attach(&mut w, &p, &e);
        // Holds the detach (no reader): dropping it would lose the report.
        drop(w.detach(&p, &e));
    }

    #[test]
    #[should_panic(expected = "detach begun twice")]
    fn a_second_detach_of_one_entry_is_refused() {
        let e = Entry::new(1u32, 0);
        let (p, mut w) = (Published::new(u32::MAX), Writer::new());
        attach(&mut w, &p, &e);
        w.detach(&p, &e).finish(|_| {});
        let _ = w.detach(&p, &e);
    }
}
