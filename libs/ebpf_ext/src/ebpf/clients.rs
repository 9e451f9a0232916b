//! The hook provider's client list: entries linked by raw pointers, in
//! attach order, behind the provider's reader/writer spin lock.
//!
//! This is the only module that follows the links. Its API is small:
//! [`ClientList::push`] (attach), [`ClientList::unlink`] (cleanup, O(1)),
//! and [`ClientList::acquire_after`] (the invoke path), which takes the
//! [`InvokeRef`] of up to [`SNAPSHOT_CAPACITY`] entries in one pass into a
//! [`Snapshot`] that outlives the lock. Mutating
//! operations take `&mut ClientList`, reading ones `&ClientList`: the lock
//! guard that hands them out is the proof that the lock is held.
//!
//! Why a snapshot: between `batch_begin` and `batch_end` the IRQL must not
//! change (eBPF for Windows requires it), and the spin lock raises it to
//! DISPATCH_LEVEL. So the invoke path takes the lock once per snapshot,
//! before a batch begins, and runs the programs with no lock held; the
//! references it holds keep every entry of the snapshot alive and linked
//! until it releases them, after the batch has ended.

use crate::sync::InvokeRef;
use core::cell::Cell;
use core::mem::MaybeUninit;
use core::ptr;

/// Entries one [`Snapshot`] holds at most; an event with more clients takes
/// one snapshot per this many (each after the batch of the previous ended).
pub const SNAPSHOT_CAPACITY: usize = 16;

/// One client in a [`ClientList`]: its value, its in-flight reference count
/// and its links.
///
/// # Invariants
/// `list` is null while the entry is not linked, else the list it is
/// linked in; `prev`/`next` are its neighbours in that list (null at the
/// ends). The link fields are written only by [`ClientList`] methods under
/// `&mut ClientList` and read under `&ClientList` or `&mut ClientList`.
pub struct Entry<T> {
    value: T,
    refs: InvokeRef,
    prev: Cell<*const Entry<T>>,
    next: Cell<*const Entry<T>>,
    list: Cell<*const ClientList<T>>,
}

// SAFETY: the link cells are only touched by ClientList methods, which
// require the list's lock (shared for reads, exclusive for writes): no
// cell is written while another thread accesses it; `refs`
// is atomic; `value` is shared as `&T` across threads (T: Sync) and dropped
// on whichever thread cleans the binding up (T: Send).
unsafe impl<T: Send + Sync> Sync for Entry<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for Entry<T> {}

impl<T> Entry<T> {
    /// An entry not linked anywhere, with no reference taken.
    pub const fn new(value: T) -> Entry<T> {
        // INVARIANT: not linked: every link is null.
        Entry {
            value,
            refs: InvokeRef::new(),
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            list: Cell::new(ptr::null()),
        }
    }

    /// The client's value.
    #[inline]
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The client's in-flight references (detach closes them).
    #[inline]
    pub fn refs(&self) -> &InvokeRef {
        &self.refs
    }
}

/// The clients of one hook provider, in attach order.
///
/// # Invariants
/// Every entry reachable from `head` through `next` is live, linked in this
/// list (its `list` is this list) and has consistent `prev`/`next` links;
/// `tail` is the last of them; both are null when the list is empty. A
/// non-empty list is not moved ([`push`](Self::push)'s contract).
pub struct ClientList<T> {
    head: *const Entry<T>,
    tail: *const Entry<T>,
}

// SAFETY: the pointers are only followed by this type's methods, under the
// lock whose guard hands out the `&`/`&mut ClientList` they take.
unsafe impl<T: Send + Sync> Send for ClientList<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for ClientList<T> {}

impl<T> Default for ClientList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ClientList<T> {
    /// An empty list.
    pub const fn new() -> ClientList<T> {
        ClientList {
            head: ptr::null(),
            tail: ptr::null(),
        }
    }

    /// Whether `entry` is linked in this list.
    fn holds(&self, entry: &Entry<T>) -> bool {
        // `list` is read under the list's lock (`&self`).
        ptr::eq(entry.list.get(), self)
    }

    /// Appends `entry`: from now on [`acquire_after`](Self::acquire_after)
    /// finds it.
    ///
    /// # Panics
    /// If `entry` is already linked (an attach bug).
    ///
    /// # Safety
    /// `entry` stays at its address until it has been unlinked from this
    /// list, and is unlinked before it is moved or dropped; this list is not
    /// moved while entries are linked in it.
    pub unsafe fn push(&mut self, entry: &Entry<T>) {
        assert!(entry.list.get().is_null(), "entry linked twice");
        let p: *const Entry<T> = entry;
        // INVARIANT: the entry joins at the tail, with consistent links;
        // the caller keeps it live while linked. The exclusive lock is held.
        entry.prev.set(self.tail);
        entry.next.set(ptr::null());
        entry.list.set(self);
        if self.tail.is_null() {
            self.head = p;
        } else {
            // SAFETY: the tail is a live entry of this list (invariant);
            // its links change under the exclusive lock held here.
            unsafe { &*self.tail }.next.set(p);
        }
        self.tail = p;
    }

    /// Removes `entry` in O(1). Returns false (and changes nothing) when it
    /// is not linked in this list.
    pub fn unlink(&mut self, entry: &Entry<T>) -> bool {
        if !self.holds(entry) {
            return false;
        }
        // The exclusive lock is held; `entry` is linked here.
        let (prev, next) = (entry.prev.get(), entry.next.get());
        // INVARIANT: the neighbours are joined; head and tail follow.
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: `prev` is a live entry of this list (invariant).
            unsafe { &*prev }.next.set(next);
        }
        if next.is_null() {
            self.tail = prev;
        } else {
            // SAFETY: `next` is a live entry of this list (invariant).
            unsafe { &*next }.prev.set(prev);
        }
        // INVARIANT: the entry leaves the list (exclusive lock held).
        entry.prev.set(ptr::null());
        entry.next.set(ptr::null());
        entry.list.set(ptr::null());
        true
    }

    /// Takes a reference on each of the next [`SNAPSHOT_CAPACITY`] entries
    /// after `after` (from the head when `None`) whose detach has not begun,
    /// into `snapshot`, which must be empty (new or released): filled in
    /// place, so the hot path copies no array.
    ///
    /// `after` must be an entry of this list; it is when the caller holds
    /// its reference (a [`Snapshot`] of this list does), because an entry
    /// stays linked until its binding is cleaned up, which cannot happen
    /// while a reference is held. An entry that is not linked here yields an
    /// empty snapshot.
    ///
    /// # Panics
    /// If `snapshot` still holds references.
    pub fn acquire_after(&self, after: Option<&Entry<T>>, snapshot: &mut Snapshot<T>) {
        assert_eq!(
            snapshot.len, 0,
            "acquire into a snapshot that holds references"
        );
        let entries = &mut snapshot.entries;
        let mut len = 0;
        let mut cursor = match after {
            None => self.head,
            // The shared lock is held and `entry` is linked here.
            Some(entry) if self.holds(entry) => entry.next.get(),
            Some(_) => ptr::null(),
        };
        while len < SNAPSHOT_CAPACITY {
            // SAFETY: every entry reachable from the head is live while the
            // lock is held (invariant); null ends the list.
            let Some(entry) = (unsafe { cursor.as_ref() }) else {
                break;
            };
            if entry.refs.try_acquire() {
                entries[len].write(cursor);
                len += 1;
            }
            cursor = entry.next.get();
        }
        // INVARIANT (Snapshot): the first `len` slots hold the entries
        // whose reference was taken above.
        snapshot.len = len;
    }
}

/// Entries of a [`ClientList`] on each of which this holds one reference
/// (released by [`release`](Snapshot::release), which leaves it empty).
///
/// # Invariants
/// `len <= SNAPSHOT_CAPACITY`; `entries[..len]` are initialized, and are
/// entries of one list on which this snapshot holds a reference taken with
/// [`InvokeRef::try_acquire`]: they stay live and linked until
/// [`release`](Self::release).
#[must_use = "the references must be released (a detach waits for them)"]
pub struct Snapshot<T> {
    entries: [MaybeUninit<*const Entry<T>>; SNAPSHOT_CAPACITY],
    len: usize,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Snapshot<T> {
    /// An empty snapshot (nothing written: the slots stay uninitialized).
    pub const fn new() -> Snapshot<T> {
        // INVARIANT: no slot is in use.
        Snapshot {
            entries: [const { MaybeUninit::uninit() }; SNAPSHOT_CAPACITY],
            len: 0,
        }
    }

    fn held(&self) -> &[*const Entry<T>] {
        // SAFETY: `len <= SNAPSHOT_CAPACITY` and the first `len` slots are
        // initialized (invariant); MaybeUninit<P> has P's layout.
        unsafe { core::slice::from_raw_parts(self.entries.as_ptr().cast(), self.len) }
    }

    /// The entries, in list order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.held().iter().map(|&p| {
            // SAFETY: held entries are live while `self` is (invariant).
            unsafe { &*p }
        })
    }

    /// The last entry, if the snapshot is full (more may follow it).
    pub fn last_if_full(&self) -> Option<&Entry<T>> {
        match self.held() {
            // SAFETY: a held entry (invariant).
            [.., last] if self.len == SNAPSHOT_CAPACITY => Some(unsafe { &**last }),
            _ => None,
        }
    }

    /// Releases every reference. For an entry whose detach is pending and
    /// whose last reference this was, `on_detached` is called with its
    /// value: the caller must then report the detach complete, and must not
    /// touch the entry after that (it may be freed).
    pub fn release(&mut self, mut on_detached: impl FnMut(&T)) {
        for &p in self.held() {
            // SAFETY: a held entry (invariant). When `release` returns
            // true, only this caller can complete the detach, so the entry
            // stays live until `on_detached` has returned.
            let entry = unsafe { &*p };
            if entry.refs.release() {
                on_detached(&entry.value);
            }
        }
        // INVARIANT: no reference is held any more.
        self.len = 0;
    }
}

impl<T> Drop for Snapshot<T> {
    fn drop(&mut self) {
        debug_assert_eq!(self.len, 0, "a snapshot dropped without release");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Detach;

    fn values(list: &ClientList<u32>, after: Option<&Entry<u32>>) -> Vec<u32> {
        let mut s = Snapshot::new();
        list.acquire_after(after, &mut s);
        let v = s.iter().map(|e| *e.value()).collect();
        s.release(|_| panic!("nothing detaches here"));
        v
    }

    #[test]
    fn push_unlink_and_acquire_keep_attach_order() {
        let entries: Vec<Entry<u32>> = (0..5).map(Entry::new).collect();
        let mut list = ClientList::new();
        for e in &entries {
            // SAFETY: the entries outlive the list's use and are unlinked
            // below before they drop; the list does not move.
            unsafe { list.push(e) };
        }
        assert_eq!(values(&list, None), [0, 1, 2, 3, 4]);
        assert!(list.unlink(&entries[2]), "middle");
        assert!(list.unlink(&entries[0]), "head");
        assert!(list.unlink(&entries[4]), "tail");
        assert!(!list.unlink(&entries[4]), "not linked any more");
        assert_eq!(values(&list, None), [1, 3]);
        assert_eq!(values(&list, Some(&entries[1])), [3]);
        assert_eq!(values(&list, Some(&entries[2])), [] as [u32; 0]);
        // SAFETY: as above.
        unsafe { list.push(&entries[0]) };
        assert_eq!(values(&list, None), [1, 3, 0]);
        let other = ClientList::new();
        assert!(!other.holds(&entries[1]));
        for e in &entries {
            list.unlink(e);
        }
        assert!(list.head.is_null() && list.tail.is_null());
    }

    #[test]
    fn detaching_entries_are_skipped_and_the_last_release_reports_them() {
        let entries: Vec<Entry<u32>> = (0..3).map(Entry::new).collect();
        let mut list = ClientList::new();
        for e in &entries {
            // SAFETY: as in the test above.
            unsafe { list.push(e) };
        }
        let mut s = Snapshot::new();
        list.acquire_after(None, &mut s);
        assert_eq!(entries[1].refs().begin_detach(), Detach::Pending);
        assert_eq!(entries[2].refs().begin_detach(), Detach::Pending);
        assert_eq!(values(&list, None), [0], "no new reference after detach");
        let mut detached = Vec::new();
        s.release(|v| detached.push(*v));
        assert_eq!(detached, [1, 2], "each completed once, by the releaser");
        for e in &entries {
            list.unlink(e);
        }
    }

    #[test]
    fn an_entry_of_another_list_yields_nothing_and_only_a_full_snapshot_has_a_last() {
        let ours: Vec<Entry<u32>> = (0..2).map(Entry::new).collect();
        let theirs: Vec<Entry<u32>> = (10..12).map(Entry::new).collect();
        let mut list = ClientList::new();
        let mut other = ClientList::new();
        for (a, b) in ours.iter().zip(&theirs) {
            // SAFETY: as in the tests above (both lists).
            unsafe { list.push(a) };
            // SAFETY: as above.
            unsafe { other.push(b) };
        }
        assert_eq!(
            values(&list, Some(&theirs[0])),
            [] as [u32; 0],
            "an entry linked in another list is not followed into that list"
        );
        let mut s = Snapshot::new();
        list.acquire_after(None, &mut s);
        let (count, has_last) = (s.iter().count(), s.last_if_full().is_some());
        s.release(|_| {});
        assert_eq!(count, 2);
        assert!(
            !has_last,
            "a snapshot with room left has taken every entry there is"
        );
        for (a, b) in ours.iter().zip(&theirs) {
            list.unlink(a);
            other.unlink(b);
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a snapshot dropped without release")]
    fn a_snapshot_dropped_holding_references_is_reported_in_debug_builds() {
        let entry = Entry::new(7u32);
        let mut list = ClientList::new();
        // SAFETY: as in the tests above.
        unsafe { list.push(&entry) };
        let mut s = Snapshot::new();
        list.acquire_after(None, &mut s);
        list.unlink(&entry);
        drop(s);
    }

    #[test]
    fn snapshots_are_bounded_and_continue_after_their_last_entry() {
        let entries: Vec<Entry<u32>> = (0..40).map(Entry::new).collect();
        let mut list = ClientList::new();
        for e in &entries {
            // SAFETY: as in the tests above.
            unsafe { list.push(e) };
        }
        let mut seen = Vec::new();
        let mut s = Snapshot::new();
        list.acquire_after(None, &mut s);
        loop {
            seen.extend(s.iter().map(|e| *e.value()));
            let mut next = Snapshot::new();
            let more = s
                .last_if_full()
                .map(|last| list.acquire_after(Some(last), &mut next));
            s.release(|_| {});
            if more.is_none() {
                break;
            }
            s = next;
        }
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        for e in &entries {
            list.unlink(e);
        }
    }
}
