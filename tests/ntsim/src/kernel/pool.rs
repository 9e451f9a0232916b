//! Pool allocator: `ExAllocatePool2`, `ExFreePoolWithTag`, `ExFreePool`, with
//! tag checks, a leak report and (on by default) a special pool.
//!
//! # Special pool
//!
//! Every block gets its own `mmap`ed region: the block sits at the end of the
//! last accessible page and is followed by an inaccessible guard page, so a
//! read or write past the end faults at once and the crash reporter
//! ([`crate::kernel::crash`]) names the block. Blocks are aligned to 16 bytes
//! (x64 pool alignment; 64 with `POOL_FLAG_CACHE_ALIGNED`, a page for blocks
//! of a page or more, as Windows guarantees), so the end of a block whose size
//! is not a multiple of the alignment is followed by *slack* before the guard
//! page: up to 15 bytes (63 cache-aligned; up to a page less one byte for a
//! block of a page or more whose size is not a multiple of the page). That is the granularity of the immediate
//! fault: an overrun that stays within the slack does not fault, but the
//! slack (and the rest of the page in front of the block) is filled with
//! [`SLACK_FILL`] and checked when the block is freed, and any change is
//! recorded as a violation then.
//!
//! A freed block's whole region is replaced by inaccessible memory and kept
//! reserved (the physical pages are released), so a use after free faults at
//! once too. The last [`QUARANTINE`] freed blocks stay reserved this way;
//! older ones are unmapped.
//!
//! # Plain mode
//!
//! With special pool off ([`configure`]`(false)`) blocks come from the C heap,
//! with canary bytes on both sides checked at free time; freed blocks are
//! filled with [`FREED_FILL`] and quarantined, and the fill is checked when
//! they leave the quarantine (a write after free is then reported).
//! Executable pool always uses the special layout (heap memory cannot be
//! made executable).
//!
//! Blocks are zeroed unless `POOL_FLAG_UNINITIALIZED` is given; uninitialized
//! blocks are filled with [`UNINITIALIZED_FILL`] so that code relying on
//! zeroing is caught.

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::types::{APC_LEVEL, DISPATCH_LEVEL};
use crate::kernel::{fault, irql, violation};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::c_void;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// `POOL_FLAG_USE_QUOTA`: charge the allocation to the current process
/// (accepted; the simulation has no quota to charge).
pub const POOL_FLAG_USE_QUOTA: u64 = 0x1;
/// `POOL_FLAG_UNINITIALIZED`: do not zero the block.
pub const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
/// `POOL_FLAG_SESSION`: session pool (accepted; there is one session).
pub const POOL_FLAG_SESSION: u64 = 0x4;
/// `POOL_FLAG_CACHE_ALIGNED`: align the block to a cache line (64 bytes).
pub const POOL_FLAG_CACHE_ALIGNED: u64 = 0x8;
/// `POOL_FLAG_RAISE_ON_FAILURE`: raise an exception instead of returning
/// null (the simulation cannot raise: recorded as a violation).
pub const POOL_FLAG_RAISE_ON_FAILURE: u64 = 0x20;
/// `POOL_FLAG_NON_PAGED`: non-paged, non-executable pool.
pub const POOL_FLAG_NON_PAGED: u64 = 0x40;
/// `POOL_FLAG_NON_PAGED_EXECUTE`: non-paged executable pool.
pub const POOL_FLAG_NON_PAGED_EXECUTE: u64 = 0x80;
/// `POOL_FLAG_PAGED`: paged pool.
pub const POOL_FLAG_PAGED: u64 = 0x100;

/// The low 32 bits of POOL_FLAGS are required flags (an unknown one fails the
/// allocation); the high 32 bits are optional (unknown ones are ignored).
const REQUIRED_MASK: u64 = 0xFFFF_FFFF;
const KNOWN_REQUIRED: u64 = POOL_FLAG_USE_QUOTA
    | POOL_FLAG_UNINITIALIZED
    | POOL_FLAG_SESSION
    | POOL_FLAG_CACHE_ALIGNED
    | POOL_FLAG_RAISE_ON_FAILURE
    | POOL_FLAG_NON_PAGED
    | POOL_FLAG_NON_PAGED_EXECUTE
    | POOL_FLAG_PAGED;
const TYPE_FLAGS: u64 = POOL_FLAG_NON_PAGED | POOL_FLAG_NON_PAGED_EXECUTE | POOL_FLAG_PAGED;

/// Page size of x64 Windows (and of the Linux hosts ntsim runs on).
pub const PAGE_SIZE: usize = 4096;
/// Alignment of pool blocks on x64.
pub const BLOCK_ALIGN: usize = 16;
const CACHE_LINE: usize = 64;
/// Fill of blocks allocated with `POOL_FLAG_UNINITIALIZED` (as a pointer,
/// `0xc5c5...` is non-canonical, so using it faults).
pub const UNINITIALIZED_FILL: u8 = 0xC5;
/// Fill of the bytes around a block (alignment slack, rest of the page,
/// plain-mode canaries), checked at free time.
pub const SLACK_FILL: u8 = 0xAB;
/// Fill of freed plain-mode blocks, checked when they leave the quarantine.
pub const FREED_FILL: u8 = 0xDF;
/// How many freed blocks stay reserved (and inaccessible) before the oldest
/// is released.
pub const QUARANTINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoolType {
    NonPaged,
    NonPagedExecute,
    Paged,
}

impl PoolType {
    fn name(self) -> &'static str {
        match self {
            PoolType::NonPaged => "non-paged",
            PoolType::NonPagedExecute => "non-paged executable",
            PoolType::Paged => "paged",
        }
    }

    /// Highest IRQL at which blocks of this type may be allocated or freed.
    fn max_irql(self) -> u8 {
        match self {
            PoolType::Paged => APC_LEVEL,
            _ => DISPATCH_LEVEL,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// ExAllocatePool2 called by the driver.
    Driver,
    /// [`kernel_alloc`]: the kernel allocated it for the driver to free.
    Kernel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Own mmap region, block at the end of its last page, then a guard page.
    Special { data_len: usize },
    /// C heap, canaries in front and behind.
    Heap,
}

#[derive(Clone, Debug)]
struct Block {
    /// Start and length of the whole region (special: including the guard
    /// page; heap: the malloc'ed area).
    base: usize,
    len: usize,
    user: usize,
    size: usize,
    tag: u32,
    seq: u64,
    generation: u64,
    pool_type: PoolType,
    origin: Origin,
    layout: Layout,
    freed: bool,
}

/// One shard of the block table: the blocks (live or quarantined) whose
/// start address hashes to it ([`shard_of`]), keyed by region base.
///
/// The table is sharded so that host threads allocating and freeing at
/// the same time (two threads raising events) rarely wait for each other:
/// an allocation or a free of a block's own start address locks its shard
/// only. Lookups of any other address (a bad free, the crash reporter,
/// [`live_block`]) look in every shard in turn; regions never overlap, so
/// at most one shard has a region containing the address.
struct Shard {
    blocks: BTreeMap<usize, Block>,
}

/// Number of shards (a power of two).
const SHARDS: usize = 16;

static TABLE: [Mutex<Shard>; SHARDS] = [const {
    Mutex::new(Shard {
        blocks: BTreeMap::new(),
    })
}; SHARDS];
/// Special pool on (for the next allocations).
static SPECIAL: AtomicBool = AtomicBool::new(true);
/// Allocations since the last reset (a block's number).
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Which Sim a block belongs to.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Freed blocks, oldest first: (shard, region base). Its own lock, held
/// only to push and pop.
static QUARANTINED: Mutex<VecDeque<(usize, usize)>> = Mutex::new(VecDeque::new());

/// The shard of a block starting at `user` (blocks are 16-aligned: the
/// multiply mixes the bits above those into the top four).
fn shard_of(user: usize) -> usize {
    ((user as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros()))
        as usize
}

fn shard(i: usize) -> MutexGuard<'static, Shard> {
    TABLE[i].lock().unwrap_or_else(|e| e.into_inner())
}

fn quarantined() -> MutexGuard<'static, VecDeque<(usize, usize)>> {
    QUARANTINED.lock().unwrap_or_else(|e| e.into_inner())
}

fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// `f` of the block whose region contains `addr`, looking in every shard.
fn find_any<R>(addr: usize, f: impl FnOnce(&Block) -> R) -> Option<R> {
    for i in 0..SHARDS {
        let s = shard(i);
        if let Some(b) = s.find(addr) {
            return Some(f(b));
        }
    }
    None
}

/// Puts a freed block into the quarantine; the oldest one leaves it (its
/// memory goes back to the host) once more than [`QUARANTINE`] are in.
fn enqueue(shard_index: usize, base: usize) {
    let evicted = {
        let mut q = quarantined();
        q.push_back((shard_index, base));
        if q.len() > QUARANTINE {
            q.pop_front()
        } else {
            None
        }
    };
    if let Some((i, old)) = evicted {
        let b = shard(i).blocks.remove(&old);
        if let Some(b) = b {
            release(&b, generation());
        }
    }
}

/// Writes a pool tag as pool tools show it: its four bytes in memory order.
struct Tag(u32);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.to_le_bytes() {
            if (0x20..=0x7E).contains(&b) {
                f.write_char(b as char)?;
            } else if b == 0 {
                f.write_char(' ')?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Tag validity per the ExAllocatePool2 page: one to four characters, each
/// 0x20..=0x7E (a shorter tag leaves its high bytes zero).
fn tag_is_valid(tag: u32) -> bool {
    let bytes = tag.to_le_bytes();
    let len = 4 - bytes.iter().rev().take_while(|b| **b == 0).count();
    len > 0 && bytes[..len].iter().all(|b| (0x20..=0x7E).contains(b))
}

fn round_up(n: usize, align: usize) -> Option<usize> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

impl Block {
    fn end(&self) -> usize {
        self.user + self.size
    }

    /// End of the bytes checked behind the block (slack and, for the
    /// special layout, the rest of the last page).
    fn back_end(&self) -> usize {
        match self.layout {
            Layout::Special { data_len } => self.base + data_len,
            Layout::Heap => self.base + self.len,
        }
    }

    fn prefix(&self) -> &'static str {
        match self.layout {
            Layout::Special { .. } => "special pool",
            Layout::Heap => "pool",
        }
    }

    /// "a 40-byte block tagged 'Ntos' (allocation #7)".
    fn what(&self, out: &mut dyn fmt::Write, current_generation: u64) -> fmt::Result {
        write!(
            out,
            "a {}{}-byte block tagged '{}' (allocation #{}",
            if self.freed { "freed " } else { "" },
            self.size,
            Tag(self.tag),
            self.seq
        )?;
        if self.origin == Origin::Kernel {
            out.write_str(", allocated by the kernel for the driver")?;
        }
        if self.generation != current_generation {
            out.write_str(", from an earlier Sim")?;
        }
        out.write_str(")")
    }

    /// Describes `addr`, which lies in this block's region.
    fn describe(&self, addr: usize, out: &mut dyn fmt::Write, generation: u64) -> fmt::Result {
        write!(out, "{}: ", self.prefix())?;
        if self.freed {
            out.write_str("use after free: ")?;
        }
        if addr < self.user {
            write!(out, "{} byte(s) before the start of ", self.user - addr)?;
        } else if addr < self.end() {
            write!(out, "offset {} inside ", addr - self.user)?;
        } else if addr == self.end() {
            out.write_str("the first byte past the end of ")?;
        } else {
            write!(out, "{} bytes past the end of ", addr - self.end())?;
        }
        self.what(out, generation)?;
        if addr >= self.end() {
            match self.layout {
                Layout::Special { data_len } if addr >= self.base + data_len => {
                    out.write_str(", in its guard page")?
                }
                _ => out.write_str(", in its alignment slack")?,
            }
        }
        Ok(())
    }

    fn to_description(&self, addr: usize, generation: u64) -> String {
        let mut s = String::new();
        let _ = self.describe(addr, &mut s, generation);
        s
    }
}

impl Shard {
    /// The block of this shard whose region contains `addr`.
    fn find(&self, addr: usize) -> Option<&Block> {
        let (_, b) = self.blocks.range(..=addr).next_back()?;
        (addr < b.base + b.len).then_some(b)
    }
}

fn allocate(
    size: usize,
    tag: u32,
    pool_type: PoolType,
    cache_aligned: bool,
    zero: bool,
    origin: Origin,
) -> *mut c_void {
    let align = if size >= PAGE_SIZE {
        PAGE_SIZE
    } else if cache_aligned {
        CACHE_LINE
    } else {
        BLOCK_ALIGN
    };
    allocate_aligned(size, align, tag, pool_type, zero, origin)
}

/// [`allocate`] with an explicit alignment (a power of two). The region
/// is made without any lock; only its entry takes its shard's.
fn allocate_aligned(
    size: usize,
    align: usize,
    tag: u32,
    pool_type: PoolType,
    zero: bool,
    origin: Origin,
) -> *mut c_void {
    let block = if SPECIAL.load(Ordering::Relaxed) || pool_type == PoolType::NonPagedExecute {
        map_special(size, align, pool_type)
    } else {
        alloc_heap(size, align)
    };
    let Some((base, len, user, layout)) = block else {
        return std::ptr::null_mut();
    };
    if !zero {
        // SAFETY: [user, user + size) lies in the accessible part of the
        // region just created, which nothing else references yet.
        unsafe { std::ptr::write_bytes(user as *mut u8, UNINITIALIZED_FILL, size) };
    }
    let b = Block {
        base,
        len,
        user,
        size,
        tag,
        seq: SEQ.fetch_add(1, Ordering::Relaxed) + 1,
        generation: generation(),
        pool_type,
        origin,
        layout,
        freed: false,
    };
    shard(shard_of(user)).blocks.insert(base, b);
    user as *mut c_void
}

/// Frees the block at `ptr` after checking it. `tag` is the tag the
/// caller claims (ExFreePoolWithTag).
fn free(ptr: usize, api: &str, tag: Option<u32>) {
    let generation = generation();
    if ptr == 0 {
        violation::record("pool", format!("{api}(NULL): freeing a null pointer"));
        return;
    }
    let index = shard_of(ptr);
    let mut s = shard(index);
    // A block's own start address is in its own shard; anything else
    // (a pointer inside a block, or no block at all) is a bad free,
    // looked up in every shard for its description.
    let Some(b) = s.find(ptr).filter(|b| b.user == ptr) else {
        drop(s);
        bad_free(ptr, api, generation);
        return;
    };
    if b.freed {
        violation::record(
            "pool",
            format!(
                "{api}({ptr:#x}): double free: {}",
                b.to_description(ptr, generation)
            ),
        );
        return;
    }
    irql::require_at_most(api, b.pool_type.max_irql());
    if let Some(t) = tag {
        if t != b.tag {
            violation::record(
                "pool",
                format!(
                    "{api}({ptr:#x}, '{}'): wrong tag: the block was allocated with '{}' \
                         (allocation #{}, {} bytes)",
                    Tag(t),
                    Tag(b.tag),
                    b.seq,
                    b.size
                ),
            );
        }
    }
    let base = b.base;
    check_fill(b, api, generation);
    let b = s.blocks.get_mut(&base).expect("found above");
    b.freed = true;
    retire(b);
    drop(s);
    enqueue(index, base);
}

/// A free of `ptr`, which is not the start of a block in its shard: a
/// double free of a pointer inside a freed block, a pointer inside a live
/// block, or no block at all.
fn bad_free(ptr: usize, api: &str, generation: u64) {
    let msg = find_any(ptr, |b| {
        if b.freed {
            format!(
                "{api}({ptr:#x}): double free: {}",
                b.to_description(ptr, generation)
            )
        } else {
            format!(
                "{api}({ptr:#x}): not the start of a block: {}",
                b.to_description(ptr, generation)
            )
        }
    });
    match msg {
        Some(msg) => violation::record("pool", msg),
        None => {
            irql::require_at_most(api, DISPATCH_LEVEL);
            violation::record(
                "pool",
                format!("{api}({ptr:#x}): not a pool block (never allocated, or long freed)"),
            );
        }
    }
}

/// Maps a special-pool region: data pages then a guard page, the block at
/// the end of the data pages.
fn map_special(
    size: usize,
    align: usize,
    pool_type: PoolType,
) -> Option<(usize, usize, usize, Layout)> {
    let span = round_up(size.max(1), align)?;
    let data_len = round_up(span, PAGE_SIZE)?;
    let len = data_len.checked_add(PAGE_SIZE)?;
    let prot = match pool_type {
        PoolType::NonPagedExecute => libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
        _ => libc::PROT_READ | libc::PROT_WRITE,
    };
    // SAFETY: a fresh anonymous private mapping at an address the kernel
    // chooses; it overlaps nothing.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let base = base as usize;
    // SAFETY: the guard page is the last page of the mapping just created.
    let rc =
        unsafe { libc::mprotect((base + data_len) as *mut c_void, PAGE_SIZE, libc::PROT_NONE) };
    assert_eq!(rc, 0, "mprotect of a fresh mapping failed");
    let user = base + data_len - span;
    // SAFETY: [base, user) and [user + size, base + data_len) are accessible
    // bytes of the new mapping outside the block.
    unsafe {
        std::ptr::write_bytes(base as *mut u8, SLACK_FILL, user - base);
        std::ptr::write_bytes(
            (user + size) as *mut u8,
            SLACK_FILL,
            data_len - (user - base) - size,
        );
    }
    Some((base, len, user, Layout::Special { data_len }))
}

/// Allocates a heap block with canaries: `align` bytes in front, the
/// alignment slack plus 16 bytes behind.
fn alloc_heap(size: usize, align: usize) -> Option<(usize, usize, usize, Layout)> {
    let front = align.max(BLOCK_ALIGN);
    let back = round_up(size.max(1), BLOCK_ALIGN)? - size + BLOCK_ALIGN;
    let len = front.checked_add(size)?.checked_add(back)?;
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes a pointer to `len` fresh bytes into `p`
    // (align is a power of two multiple of the pointer size).
    if unsafe { libc::posix_memalign(&mut p, front, len) } != 0 {
        return None;
    }
    let base = p as usize;
    let user = base + front;
    // SAFETY: the whole fresh allocation is ours: canaries around, zeroed
    // block in the middle.
    unsafe {
        std::ptr::write_bytes(base as *mut u8, SLACK_FILL, front);
        std::ptr::write_bytes(user as *mut u8, 0, size);
        std::ptr::write_bytes((user + size) as *mut u8, SLACK_FILL, back);
    }
    Some((base, len, user, Layout::Heap))
}

/// Checks the fill around a live block; records a violation for the first
/// byte changed on each side.
fn check_fill(b: &Block, api: &str, generation: u64) {
    // SAFETY: for a live block the bytes in front of it and behind it up to
    // back_end() are accessible memory of its region that only the pool
    // (and an overrunning driver) writes.
    let front = unsafe { std::slice::from_raw_parts(b.base as *const u8, b.user - b.base) };
    // SAFETY: as above.
    let back = unsafe { std::slice::from_raw_parts(b.end() as *const u8, b.back_end() - b.end()) };
    if let Some(i) = front.iter().rposition(|x| *x != SLACK_FILL) {
        let addr = b.base + i;
        violation::record(
            "pool",
            format!(
                "{api}: underrun detected at free: byte at {} was overwritten (0x{:02x}): {}",
                addr,
                front[i],
                b.to_description(addr, generation)
            ),
        );
    }
    if let Some(i) = back.iter().position(|x| *x != SLACK_FILL) {
        let addr = b.end() + i;
        violation::record(
            "pool",
            format!(
                "{api}: overrun detected at free: a byte behind the block was overwritten \
                 (0x{:02x}): {}",
                back[i],
                b.to_description(addr, generation)
            ),
        );
    }
}

/// Makes a freed block inaccessible (special) or fills it (heap).
fn retire(b: &Block) {
    match b.layout {
        Layout::Special { .. } => {
            // SAFETY: replaces exactly this block's own region (which the
            // pool mapped and still owns) with reserved inaccessible memory,
            // releasing its pages.
            let p = unsafe {
                libc::mmap(
                    b.base as *mut c_void,
                    b.len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            assert_eq!(
                p as usize, b.base,
                "remapping a freed special pool block failed"
            );
        }
        Layout::Heap => {
            // SAFETY: the block's bytes belong to its heap allocation.
            unsafe { std::ptr::write_bytes(b.user as *mut u8, FREED_FILL, b.size) };
        }
    }
}

/// Gives a quarantined block's memory back to the host.
fn release(b: &Block, generation: u64) {
    match b.layout {
        Layout::Special { .. } => {
            // SAFETY: the region is this block's own mapping, no longer
            // referenced by the pool.
            unsafe { libc::munmap(b.base as *mut c_void, b.len) };
        }
        Layout::Heap => {
            // SAFETY: the freed block's bytes are still part of its heap
            // allocation (released just below).
            let body = unsafe { std::slice::from_raw_parts(b.user as *const u8, b.size) };
            if let Some(i) = body.iter().position(|x| *x != FREED_FILL) {
                violation::record(
                    "pool",
                    format!(
                        "write after free detected: byte {i} changed to 0x{:02x}: {}",
                        body[i],
                        b.to_description(b.user + i, generation)
                    ),
                );
            }
            // SAFETY: `base` came from posix_memalign and is freed once (the
            // block has just been removed from the table).
            unsafe { libc::free(b.base as *mut c_void) };
        }
    }
}

/// `ExAllocatePool2`.
pub extern "win64" fn ExAllocatePool2(flags: u64, size: usize, tag: u32) -> *mut c_void {
    const API: &str = "ExAllocatePool2";
    let required = flags & REQUIRED_MASK;
    let unknown = required & !KNOWN_REQUIRED;
    let pool_type = match required & TYPE_FLAGS {
        POOL_FLAG_NON_PAGED => Some(PoolType::NonPaged),
        POOL_FLAG_NON_PAGED_EXECUTE => Some(PoolType::NonPagedExecute),
        POOL_FLAG_PAGED => Some(PoolType::Paged),
        _ => None,
    };
    let raise = flags & POOL_FLAG_RAISE_ON_FAILURE != 0;
    let Some(pool_type) = pool_type.filter(|_| unknown == 0) else {
        violation::record(
            "pool",
            format!(
                "{API}: invalid POOL_FLAGS {flags:#x} (exactly one of NON_PAGED, \
                 NON_PAGED_EXECUTE, PAGED is required; unknown required bits {unknown:#x})"
            ),
        );
        return std::ptr::null_mut();
    };
    if tag == 0 {
        violation::record("pool", format!("{API}: tag 0 is invalid"));
        return std::ptr::null_mut();
    }
    if !tag_is_valid(tag) {
        violation::record(
            "pool",
            format!(
                "{API}: tag {tag:#010x} ('{}') has characters outside 0x20..0x7E",
                Tag(tag)
            ),
        );
    }
    irql::require_at_most(API, pool_type.max_irql());
    if size == 0 {
        // Driver Verifier: DRIVER_VERIFIER_DETECTED_VIOLATION (0xC4),
        // parameter 0: a zero-byte pool allocation.
        violation::record(
            "pool",
            format!("{API}: zero-byte allocation (tag '{}')", Tag(tag)),
        );
    }
    let fail = |why: &str| {
        if raise {
            violation::record(
                "pool",
                format!(
                    "{API}: {why} with POOL_FLAG_RAISE_ON_FAILURE: Windows raises an \
                     exception here, which ntsim cannot do (returning NULL)"
                ),
            );
        }
        std::ptr::null_mut()
    };
    if fault::check(API) {
        return fail("injected failure");
    }
    let p = allocate(
        size,
        tag,
        pool_type,
        flags & POOL_FLAG_CACHE_ALIGNED != 0,
        flags & POOL_FLAG_UNINITIALIZED == 0,
        Origin::Driver,
    );
    if p.is_null() {
        return fail("out of host memory");
    }
    p
}

/// `ExFreePoolWithTag`.
///
/// # Safety
/// `p` is a pointer the driver passes; it is only looked up in the pool's
/// table, never dereferenced unless it is a live block.
pub unsafe extern "win64" fn ExFreePoolWithTag(p: *mut c_void, tag: u32) {
    free(p as usize, "ExFreePoolWithTag", Some(tag));
}

/// `ExFreePool`: frees a block whatever its tag.
///
/// # Safety
/// As [`ExFreePoolWithTag`].
pub unsafe extern "win64" fn ExFreePool(p: *mut c_void) {
    free(p as usize, "ExFreePool", None);
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", ExAllocatePool2),
        export!("ntoskrnl.exe", ExFreePoolWithTag),
        export!("ntoskrnl.exe", ExFreePool),
    ]
}

/// Forgets all state (a new [`crate::Sim`]). Blocks still live are not
/// unmapped but made inaccessible like freed blocks (they were reported as
/// leaks by [`crate::Sim::finish`]); a late access faults and is described as
/// a block from an earlier Sim.
pub(crate) fn reset() {
    let mut q = quarantined();
    for i in 0..SHARDS {
        let mut s = shard(i);
        for b in s.blocks.values_mut().filter(|b| !b.freed) {
            b.freed = true;
            retire(b);
            q.push_back((i, b.base));
        }
    }
    let generation = generation();
    while q.len() > QUARANTINE {
        let (i, old) = q.pop_front().expect("non-empty");
        let b = shard(i).blocks.remove(&old);
        if let Some(b) = b {
            release(&b, generation);
        }
    }
    drop(q);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    SEQ.store(0, Ordering::Relaxed);
    SPECIAL.store(true, Ordering::Relaxed);
}

/// What a driver left behind: one line per live block, in allocation order.
pub(crate) fn outstanding() -> Vec<String> {
    let generation = generation();
    let mut live: Vec<(u64, String)> = (0..SHARDS)
        .flat_map(|i| {
            shard(i)
                .blocks
                .values()
                .filter(|b| !b.freed && b.generation == generation)
                .map(|b| (b.seq, describe_leak(b)))
                .collect::<Vec<_>>()
        })
        .collect();
    live.sort_by_key(|(seq, _)| *seq);
    live.into_iter().map(|(_, line)| line).collect()
}

/// One line of [`outstanding`].
fn describe_leak(b: &Block) -> String {
    format!(
        "pool block #{}: {} bytes tagged '{}' ({} pool, {}) at {:#x}",
        b.seq,
        b.size,
        Tag(b.tag),
        b.pool_type.name(),
        match b.origin {
            Origin::Driver => "ExAllocatePool2",
            Origin::Kernel => "allocated by the kernel for the driver to free",
        },
        b.user
    )
}

/// Turns special pool on or off for the next allocations.
pub(crate) fn configure(special: bool) {
    SPECIAL.store(special, Ordering::Relaxed);
}

/// Allocates a zeroed pool block on the kernel's own behalf (for example the
/// TOKEN_USER that SeQueryInformationToken returns, which the driver frees
/// with ExFreePool). No fault injection: the calling API does its own.
/// The block is non-paged, tracked like any other (a leak of it is
/// reported) and placed in special pool when that is on.
/// Returns null only if the host is out of memory.
pub fn kernel_alloc(size: usize, tag: u32) -> *mut c_void {
    allocate(size, tag, PoolType::NonPaged, false, true, Origin::Kernel)
}

/// Allocates a zeroed block like [`kernel_alloc`], aligned to `align` (a
/// power of two, at most a page) instead of the pool's 16 bytes, so that in
/// special pool a block whose size is a multiple of `align` ends exactly at
/// the guard page: the kernel's own structures handed to a driver (the
/// strings and PS_CREATE_NOTIFY_INFO of a process notification) have no
/// slack, and a read or write one byte past them faults at once.
pub fn kernel_alloc_exact(size: usize, align: usize, tag: u32) -> *mut c_void {
    assert!(
        align.is_power_of_two() && align <= PAGE_SIZE,
        "kernel_alloc_exact: alignment {align} is not a power of two up to a page"
    );
    allocate_aligned(size, align, tag, PoolType::NonPaged, true, Origin::Kernel)
}

/// Frees a block from [`kernel_alloc`] (or ExAllocatePool2) on the kernel's
/// own behalf. An unknown pointer or a double free is recorded as a
/// violation.
///
/// # Safety
/// `ptr` must be a live pool block.
pub unsafe fn kernel_free(ptr: *mut c_void) {
    free(ptr as usize, "kernel_free", None);
}

/// The live block whose usable bytes contain `addr`: (start, size, tag).
/// Lets other services check what a driver hands them (for example that a
/// program context has its header inside the same allocation).
pub fn live_block(addr: usize) -> Option<(usize, usize, u32)> {
    find_any(addr, |b| {
        (!b.freed && addr >= b.user && addr < b.user + b.size.max(1))
            .then_some((b.user, b.size, b.tag))
    })?
}

/// A pool tag as pool tools show it ('Ntos').
pub fn tag_string(tag: u32) -> String {
    format!("'{}'", Tag(tag))
}

/// Describes `addr` if it falls in or near a pool block (live, freed or a
/// guard page), for crash reports: "special pool: 24 bytes past the end of a
/// 40-byte block tagged 'Ntos' (allocation #7), in its guard page".
pub fn describe_address(addr: usize) -> Option<String> {
    find_any(addr, |b| b.to_description(addr, generation()))
}

/// [`describe_address`] for the crash reporter: writes into `out` without
/// allocating and never blocks. Returns `None` when a shard's lock is held
/// (by the faulting thread itself, or another thread for longer than a short
/// spin) and no other shard has the address, `Some(false)` when `addr` is
/// not in a pool region.
pub(crate) fn describe_address_nonblocking(addr: usize, out: &mut dyn fmt::Write) -> Option<bool> {
    let mut blocked = false;
    for shard in &TABLE {
        let mut found = None;
        for _ in 0..10_000 {
            match shard.try_lock() {
                Ok(s) => found = Some(describe_into(&s, addr, out)),
                Err(TryLockError::Poisoned(p)) => {
                    found = Some(describe_into(&p.into_inner(), addr, out))
                }
                Err(TryLockError::WouldBlock) => {
                    std::hint::spin_loop();
                    continue;
                }
            }
            break;
        }
        match found {
            Some(true) => return Some(true),
            Some(false) => {}
            None => blocked = true,
        }
    }
    (!blocked).then_some(false)
}

fn describe_into(s: &Shard, addr: usize, out: &mut dyn fmt::Write) -> bool {
    match s.find(addr) {
        Some(b) => {
            let _ = b.describe(addr, out, generation());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::crash;
    use crate::kernel::types::PASSIVE_LEVEL;
    use crate::{child, Sim};

    const TAG: u32 = u32::from_le_bytes(*b"Test");
    const OTHER: u32 = u32::from_le_bytes(*b"Othr");

    fn alloc(size: usize) -> *mut u8 {
        ExAllocatePool2(POOL_FLAG_NON_PAGED, size, TAG) as *mut u8
    }

    fn kinds(v: &[violation::Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn blocks_are_zeroed_aligned_and_placed_against_the_guard_page() {
        let sim = Sim::new();
        for size in [1usize, 15, 16, 20, 40, 64, 100, 4095, 4096, 5000] {
            let p = alloc(size);
            assert!(!p.is_null());
            assert_eq!(p as usize % BLOCK_ALIGN, 0, "size {size}");
            if size >= PAGE_SIZE {
                assert_eq!(
                    p as usize % PAGE_SIZE,
                    0,
                    "size {size} must be page aligned"
                );
            }
            // The block ends within its alignment of a page end (the guard
            // page): 15 bytes at most below a page, less than a page above.
            let end = p as usize + size;
            let page_end = round_up(end, PAGE_SIZE).unwrap();
            let align = if size >= PAGE_SIZE {
                PAGE_SIZE
            } else {
                BLOCK_ALIGN
            };
            assert!(
                page_end - end < align,
                "size {size}: {} bytes of slack",
                page_end - end
            );
            assert_eq!(
                describe_address(page_end).map(|d| d.contains("guard page")),
                Some(true)
            );
            // SAFETY: the block is live and `size` bytes long.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|b| *b == 0), "size {size} not zeroed");
            // SAFETY: live block, freed once with its tag.
            unsafe { ExFreePoolWithTag(p.cast(), TAG) };
        }
        let p = ExAllocatePool2(POOL_FLAG_NON_PAGED | POOL_FLAG_CACHE_ALIGNED, 10, TAG);
        assert_eq!(p as usize % CACHE_LINE, 0);
        // SAFETY: live block.
        unsafe { ExFreePool(p) };
        sim.finish().unwrap();
    }

    #[test]
    fn uninitialized_blocks_are_filled_with_the_pattern() {
        let sim = Sim::new();
        let p = ExAllocatePool2(POOL_FLAG_NON_PAGED | POOL_FLAG_UNINITIALIZED, 32, TAG) as *mut u8;
        // SAFETY: live 32-byte block.
        let bytes = unsafe { std::slice::from_raw_parts(p, 32) };
        assert!(bytes.iter().all(|b| *b == UNINITIALIZED_FILL));
        // SAFETY: live block.
        unsafe { ExFreePool(p.cast()) };
        sim.finish().unwrap();
    }

    #[test]
    fn plain_mode_zeroes_fills_and_checks_canaries() {
        let sim = Sim::with_options(crate::sim::Options {
            special_pool: false,
        });
        let p = ExAllocatePool2(POOL_FLAG_PAGED | POOL_FLAG_UNINITIALIZED, 24, TAG) as *mut u8;
        // SAFETY: live 24-byte block.
        assert!(unsafe { std::slice::from_raw_parts(p, 24) }
            .iter()
            .all(|b| *b == UNINITIALIZED_FILL));
        let q = alloc(20);
        // SAFETY: live 20-byte block.
        assert!(unsafe { std::slice::from_raw_parts(q, 20) }
            .iter()
            .all(|b| *b == 0));
        // SAFETY: q[20] is the heap canary behind the block: memory of the
        // allocation, deliberately overwritten to test the check.
        unsafe { q.add(20).write(1) };
        // SAFETY: live blocks.
        unsafe {
            ExFreePool(p.cast());
            ExFreePool(q.cast());
        }
        let v = violation::take();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("overrun detected at free"),
            "{}",
            v[0]
        );
        assert!(
            v[0].message
                .contains("the first byte past the end of a 20-byte block tagged 'Test'"),
            "{}",
            v[0]
        );
        sim.finish().unwrap();
    }

    #[test]
    fn flags_and_tags_are_checked() {
        let sim = Sim::new();
        assert!(ExAllocatePool2(0, 8, TAG).is_null());
        assert!(ExAllocatePool2(POOL_FLAG_NON_PAGED | POOL_FLAG_PAGED, 8, TAG).is_null());
        assert!(ExAllocatePool2(POOL_FLAG_NON_PAGED | 0x10, 8, TAG).is_null());
        assert!(ExAllocatePool2(POOL_FLAG_NON_PAGED, 8, 0).is_null());
        assert_eq!(violation::take().len(), 4);
        // Unknown optional (high) flags are ignored; a short tag is fine.
        let p = ExAllocatePool2(
            POOL_FLAG_NON_PAGED | (1 << 40),
            8,
            u32::from_le_bytes(*b"Ab\0\0"),
        );
        assert!(!p.is_null());
        // SAFETY: live block.
        unsafe { ExFreePool(p) };
        assert!(violation::take().is_empty());
        // A tag with a control character is flagged but allocated.
        let p = ExAllocatePool2(POOL_FLAG_NON_PAGED, 8, 0x0A41_4141);
        assert!(!p.is_null());
        // SAFETY: live block.
        unsafe { ExFreePool(p) };
        assert_eq!(kinds(&violation::take()), ["pool"]);
        // Zero bytes: a violation, but a valid minimal block.
        let p = ExAllocatePool2(POOL_FLAG_NON_PAGED, 0, TAG);
        assert!(!p.is_null());
        // SAFETY: live block.
        unsafe { ExFreePool(p) };
        assert!(violation::take()[0].message.contains("zero-byte"));
        sim.finish().unwrap();
    }

    #[test]
    fn irql_rules() {
        let sim = Sim::new();
        let p = irql::at(DISPATCH_LEVEL, || {
            ExAllocatePool2(POOL_FLAG_NON_PAGED, 8, TAG)
        });
        assert!(violation::take().is_empty());
        let q = irql::at(DISPATCH_LEVEL, || ExAllocatePool2(POOL_FLAG_PAGED, 8, TAG));
        let v = violation::take();
        assert_eq!(kinds(&v), ["irql"]);
        assert!(v[0].message.contains("ExAllocatePool2 called at IRQL 2"));
        // SAFETY: live blocks.
        irql::at(DISPATCH_LEVEL, || unsafe { ExFreePool(p) });
        assert!(violation::take().is_empty());
        // SAFETY: live block.
        irql::at(DISPATCH_LEVEL, || unsafe { ExFreePool(q) });
        assert_eq!(kinds(&violation::take()), ["irql"]);
        assert_eq!(irql::current(), PASSIVE_LEVEL);
        sim.finish().unwrap();
    }

    #[test]
    fn bad_frees_are_violations_not_crashes() {
        let sim = Sim::new();
        let p = alloc(40);
        // SAFETY: the pool only looks these pointers up.
        unsafe {
            ExFreePoolWithTag(p.add(8).cast(), TAG);
            ExFreePoolWithTag(0x1234 as *mut c_void, TAG);
            ExFreePool(std::ptr::null_mut());
        }
        let v = violation::take();
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].message.contains("not the start of a block: special pool: offset 8 inside a 40-byte block tagged 'Test' (allocation #1)"), "{}", v[0]);
        assert!(v[1].message.contains("not a pool block"));
        assert!(v[2].message.contains("null"));
        // Wrong tag: a violation; the block is freed anyway.
        // SAFETY: live block.
        unsafe { ExFreePoolWithTag(p.cast(), OTHER) };
        let v = violation::take();
        assert_eq!(v.len(), 1);
        assert!(v[0].message.contains("wrong tag"), "{}", v[0]);
        assert!(v[0].message.contains("allocated with 'Test'"), "{}", v[0]);
        // Double free.
        // SAFETY: the pool only looks the pointer up (it is quarantined).
        unsafe { ExFreePoolWithTag(p.cast(), TAG) };
        let v = violation::take();
        assert!(
            v[0].message.contains(
                "double free: special pool: use after free: offset 0 inside a freed 40-byte block"
            ),
            "{}",
            v[0]
        );
        sim.finish().unwrap();
    }

    #[test]
    fn fault_injection_fails_the_nth_allocation_without_side_effects() {
        let sim = Sim::new();
        fault::fail_nth_alloc(2);
        let a = alloc(8);
        assert!(!a.is_null());
        assert!(alloc(8).is_null());
        assert!(violation::peek().is_empty());
        // With RAISE_ON_FAILURE the failure cannot be raised: a violation.
        fault::fail_nth_alloc(3);
        assert!(
            ExAllocatePool2(POOL_FLAG_NON_PAGED | POOL_FLAG_RAISE_ON_FAILURE, 8, TAG).is_null()
        );
        assert!(violation::take()[0].message.contains("RAISE_ON_FAILURE"));
        assert_eq!(outstanding().len(), 1);
        // SAFETY: live block.
        unsafe { ExFreePool(a.cast()) };
        sim.finish().unwrap();
    }

    #[test]
    fn threads_allocating_and_freeing_at_once_keep_every_block_and_check() {
        let sim = Sim::with_options(crate::sim::Options {
            special_pool: false,
        });
        // Two threads, each with blocks that live across the other's frees
        // (so both fill the quarantine and evict each other's blocks).
        let per_thread = QUARANTINE;
        let kept: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    scope.spawn(move || {
                        let mut kept = Vec::new();
                        for i in 0..per_thread {
                            let p = alloc(8 + (i % 50));
                            assert!(!p.is_null());
                            if i % 64 == t {
                                kept.push(p as usize);
                            } else {
                                // SAFETY: live block.
                                unsafe { ExFreePool(p.cast()) };
                            }
                        }
                        kept
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let kept: Vec<usize> = kept.concat();
        assert_eq!(
            quarantined().len(),
            QUARANTINE,
            "the quarantine stays full and bounded"
        );
        // Every kept block is still known, live and numbered once.
        let out = outstanding();
        assert_eq!(out.len(), kept.len(), "{:?}", &out[..out.len().min(3)]);
        let mut seqs: Vec<u64> = kept
            .iter()
            .map(|&p| find_any(p, |b| (b.user == p && !b.freed).then_some(b.seq)).flatten())
            .map(|s| s.expect("a kept block is live"))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), kept.len(), "allocation numbers are unique");
        // A free of a pointer into a kept block's region (its back canary)
        // that is in another shard than the block's start is still
        // described.
        let inside = kept
            .iter()
            .map(|p| p + 16)
            .find(|a| shard_of(*a) != shard_of(*a - 16))
            .expect("some kept block's canary is in another shard");
        // SAFETY: not a block start: recorded as a violation, not freed.
        unsafe { ExFreePool(inside as *mut c_void) };
        let v = violation::take();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("not the start of a block"),
            "{}",
            v[0]
        );
        for p in kept {
            // SAFETY: live block.
            unsafe { ExFreePool(p as *mut c_void) };
        }
        assert!(outstanding().is_empty());
        sim.finish().unwrap();
    }

    #[test]
    fn leaks_are_reported_with_tag_size_and_sequence() {
        let sim = Sim::new();
        let a = alloc(10);
        let b = ExAllocatePool2(POOL_FLAG_PAGED, 33, OTHER);
        let k = kernel_alloc(12, u32::from_le_bytes(*b"Se  "));
        // SAFETY: live block.
        unsafe { ExFreePool(a.cast()) };
        let out = outstanding();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0]
                .starts_with("pool block #2: 33 bytes tagged 'Othr' (paged pool, ExAllocatePool2)"),
            "{}",
            out[0]
        );
        assert!(
            out[1].starts_with(
                "pool block #3: 12 bytes tagged 'Se  ' (non-paged pool, allocated by the kernel"
            ),
            "{}",
            out[1]
        );
        // The driver frees the kernel's block with ExFreePool, as Windows
        // documents for SeQueryInformationToken.
        // SAFETY: live blocks.
        unsafe {
            ExFreePool(k);
            ExFreePoolWithTag(b, OTHER);
        }
        assert!(outstanding().is_empty());
        let c = alloc(1);
        let err = sim.finish().unwrap_err();
        assert!(
            err.contains("left behind: pool block #4: 1 bytes tagged 'Test'"),
            "{err}"
        );
        // A block left over from an earlier Sim is inaccessible and named so.
        let _sim = Sim::new();
        let d = describe_address(c as usize).unwrap();
        assert!(
            d.contains("use after free") && d.contains("from an earlier Sim"),
            "{d}"
        );
    }

    #[test]
    fn describe_address_names_block_slack_guard_and_freed() {
        let _sim = Sim::new();
        let p = alloc(40) as usize;
        assert_eq!(
            describe_address(p + 4).unwrap(),
            "special pool: offset 4 inside a 40-byte block tagged 'Test' (allocation #1)"
        );
        assert_eq!(
            describe_address(p + 44).unwrap(),
            "special pool: 4 bytes past the end of a 40-byte block tagged 'Test' (allocation #1), in its alignment slack"
        );
        assert_eq!(
            describe_address(p + 64).unwrap(),
            "special pool: 24 bytes past the end of a 40-byte block tagged 'Test' (allocation #1), in its guard page"
        );
        assert!(describe_address(p - 8)
            .unwrap()
            .starts_with("special pool: 8 byte(s) before the start"));
        // SAFETY: live block.
        unsafe { ExFreePool(p as *mut c_void) };
        assert_eq!(
            describe_address(p + 8).unwrap(),
            "special pool: use after free: offset 8 inside a freed 40-byte block tagged 'Test' (allocation #1)"
        );
        let local = 0u64;
        assert_eq!(describe_address(&local as *const u64 as usize), None);
    }

    #[test]
    fn quarantine_is_bounded() {
        let sim = Sim::new();
        let first = alloc(8);
        // SAFETY: live block.
        unsafe { ExFreePool(first.cast()) };
        for _ in 0..QUARANTINE {
            let p = alloc(8);
            // SAFETY: live block.
            unsafe { ExFreePool(p.cast()) };
        }
        assert_eq!(quarantined().len(), QUARANTINE);
        let blocks: usize = (0..SHARDS).map(|i| shard(i).blocks.len()).sum();
        assert!(blocks <= QUARANTINE);
        sim.finish().unwrap();
    }

    #[test]
    fn slack_overrun_is_reported_at_free() {
        let sim = Sim::new();
        let p = alloc(20);
        // SAFETY: p[20..32] is the alignment slack of the block's own
        // region: writable, deliberately overwritten to test the check.
        unsafe { p.add(22).write(7) };
        // SAFETY: live block.
        unsafe { ExFreePoolWithTag(p.cast(), TAG) };
        let v = violation::take();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("overrun detected at free"),
            "{}",
            v[0]
        );
        assert!(v[0].message.contains("2 bytes past the end of a 20-byte block tagged 'Test' (allocation #1), in its alignment slack"), "{}", v[0]);
        sim.finish().unwrap();
    }

    #[test]
    fn overrun_past_a_block_faults_and_names_it() {
        const NAME: &str = "kernel::pool::tests::overrun_past_a_block_faults_and_names_it";
        if child::is_child(NAME) {
            let _sim = Sim::new();
            let p = alloc(64);
            // SAFETY: none: this deliberately writes one byte past the block,
            // into the guard page, to check that it faults.
            unsafe { std::ptr::write_volatile(p.add(64), 1) };
            unreachable!("the write must have faulted");
        }
        let out = child::run_test_in_child(NAME);
        assert_eq!(out.status.code(), Some(crash::FATAL_EXIT_STATUS), "{out:?}");
        assert!(
            out.stderr.contains("ntsim: FATAL: SIGSEGV"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(
                "special pool: the first byte past the end of a 64-byte block tagged 'Test' (allocation #1), in its guard page"
            ),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("write"), "{}", out.stderr);
    }

    #[test]
    fn use_after_free_faults_and_says_freed() {
        const NAME: &str = "kernel::pool::tests::use_after_free_faults_and_says_freed";
        if child::is_child(NAME) {
            let _sim = Sim::new();
            let p = alloc(48);
            // SAFETY: live block.
            unsafe { ExFreePoolWithTag(p.cast(), TAG) };
            // SAFETY: none: a deliberate read after free, which must fault.
            let x = unsafe { std::ptr::read_volatile(p.add(16)) };
            unreachable!("the read must have faulted (read {x})");
        }
        let out = child::run_test_in_child(NAME);
        assert_eq!(out.status.code(), Some(crash::FATAL_EXIT_STATUS), "{out:?}");
        assert!(
            out.stderr.contains("special pool: use after free: offset 16 inside a freed 48-byte block tagged 'Test' (allocation #1)"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("read"), "{}", out.stderr);
    }
}
