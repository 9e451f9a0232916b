//! Maps with eBPF for Windows semantics.
//!
//! Every value lives in its own heap block whose address never changes
//! while the entry exists, so a program may keep the pointer
//! `bpf_map_lookup_elem` returned. A deleted or replaced value is *retired*,
//! not freed: it stays readable until no run is in progress (the stand-in
//! for eBPF for Windows' epoch-based reclamation). Each map indexes the
//! address ranges of its values, which is how the interpreter confines a
//! program's map accesses to exactly one live value.
//!
//! Error codes are `ebpf_result_t` values ([`EbpfResult`]); helpers return
//! them negated, as the core does.

use super::program::Program;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Number of simulated processors (per-CPU maps keep one value per CPU,
/// perf event arrays one buffer per CPU).
pub const CPU_COUNT: u32 = crate::kernel::processor::CPU_COUNT;

/// `ebpf_result_t` (a subset of the values the maps return).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EbpfResult {
    Success = 0,
    InvalidArgument = 6,
    ObjectNotFound = 7,
    KeyNotFound = 19,
    NoMoreKeys = 25,
    KeyAlreadyExists = 26,
    NoMoreTailCalls = 27,
    OutOfSpace = 29,
    OperationNotSupported = 18,
}

impl EbpfResult {
    /// The value a helper returns for this result (`-result`).
    pub fn helper_value(self) -> u64 {
        (-(self as i64)) as u64
    }
}

/// Map types (eBPF for Windows numbering).
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERCPU_HASH: u32 = 4;
    pub const PERCPU_ARRAY: u32 = 5;
    pub const HASH_OF_MAPS: u32 = 6;
    pub const ARRAY_OF_MAPS: u32 = 7;
    pub const LRU_HASH: u32 = 8;
    pub const LPM_TRIE: u32 = 9;
    pub const QUEUE: u32 = 10;
    pub const LRU_PERCPU_HASH: u32 = 11;
    pub const STACK: u32 = 12;
    pub const RINGBUF: u32 = 13;
    pub const PERF_EVENT_ARRAY: u32 = 14;
}

/// `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`.
pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const BPF_EXIST: u64 = 2;

/// A map as a program declares it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub pinning: u32,
}

/// One record of a perf event array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfRecord {
    pub cpu: u32,
    pub data: Vec<u8>,
}

type Value = Box<[u8]>;

struct HashEntry {
    /// One value, or one per CPU.
    values: Vec<Value>,
    last_used: u64,
}

enum Kind {
    /// `values[cpu * max_entries + index]` (one CPU unless per-CPU).
    Array(Vec<Value>),
    Hash {
        entries: HashMap<Vec<u8>, HashEntry>,
        tick: u64,
    },
    Queue(VecDeque<Vec<u8>>),
    Stack(Vec<Vec<u8>>),
    Ring {
        records: VecDeque<Vec<u8>>,
        used: usize,
    },
    Perf(Vec<PerfRecord>),
    ProgArray(Vec<Option<Arc<Program>>>),
}

struct Inner {
    kind: Kind,
    /// start address -> length of every live or retired value.
    index: BTreeMap<u64, u64>,
    retired: Vec<Value>,
}

impl Inner {
    fn alloc(&mut self, bytes: &[u8]) -> Value {
        let v: Value = bytes.to_vec().into_boxed_slice();
        self.index.insert(v.as_ptr() as u64, v.len() as u64);
        v
    }
}

/// A map. Shared (`Arc`) by the object that declared it, its programs, and
/// the host code that reads it.
pub struct Map {
    name: String,
    def: MapDef,
    read_only: bool,
    inner: Mutex<Inner>,
}

/// The most memory one map may declare, and all maps of one object together
/// (64 MiB). eBPF for Windows refuses a map above 128 GB
/// (`EBPF_MAP_MAXIMUM_ALLOCATION`); ntsim, which allocates array values up
/// front in the test process, refuses far less with a clear error, so a
/// malformed or hostile object cannot exhaust the host's memory.
pub const MAP_MEMORY_LIMIT: u64 = 64 << 20;

/// Bookkeeping counted per value block (its allocation and index entry).
const ENTRY_OVERHEAD: u64 = 64;

impl MapDef {
    /// The memory this definition may take at most, as counted against
    /// [`MAP_MEMORY_LIMIT`]: every value block (one per entry and CPU) with
    /// its key and [`ENTRY_OVERHEAD`]; a ring buffer's size in bytes. Saturates
    /// instead of overflowing.
    pub fn declared_memory(&self) -> u64 {
        use map_type::*;
        let entries = u64::from(self.max_entries);
        let block = |key: u32, value: u32| {
            u64::from(key)
                .saturating_add(u64::from(value))
                .saturating_add(ENTRY_OVERHEAD)
        };
        match self.map_type {
            PERCPU_ARRAY | PERCPU_HASH | LRU_PERCPU_HASH => entries
                .saturating_mul(u64::from(CPU_COUNT))
                .saturating_mul(block(self.key_size, self.value_size)),
            RINGBUF => entries,
            PROG_ARRAY => entries.saturating_mul(block(0, 8)),
            PERF_EVENT_ARRAY => 0,
            _ => entries.saturating_mul(block(self.key_size, self.value_size)),
        }
    }
}

/// Rounds a per-CPU value up to 8 bytes, as user-mode per-CPU buffers are laid out.
fn percpu_stride(value_size: u32) -> usize {
    (value_size as usize).div_ceil(8) * 8
}

impl Map {
    /// Creates a map. Fails for map types this core does not implement.
    pub fn new(name: &str, def: MapDef) -> Result<Map, String> {
        Map::with_access(name, def, false)
    }

    pub(crate) fn with_access(name: &str, def: MapDef, read_only: bool) -> Result<Map, String> {
        use map_type::*;
        let mut inner = Inner {
            kind: Kind::Perf(Vec::new()),
            index: BTreeMap::new(),
            retired: Vec::new(),
        };
        let keyed = |d: &MapDef| d.key_size > 0 && d.value_size > 0 && d.max_entries > 0;
        let declared = def.declared_memory();
        if declared > MAP_MEMORY_LIMIT {
            return Err(format!(
                "map {name}: declares {declared} bytes (type {}, key {}, value {}, \
                 max_entries {}), over ntsim's limit of {MAP_MEMORY_LIMIT} bytes per map",
                def.map_type, def.key_size, def.value_size, def.max_entries
            ));
        }
        inner.kind = match def.map_type {
            ARRAY | PERCPU_ARRAY => {
                if !keyed(&def) {
                    return Err(format!(
                        "map {name}: array needs key, value and max_entries"
                    ));
                }
                let cpus = if def.map_type == PERCPU_ARRAY {
                    CPU_COUNT
                } else {
                    1
                };
                let zero = vec![0u8; def.value_size as usize];
                let values = (0..def.max_entries as usize * cpus as usize)
                    .map(|_| inner.alloc(&zero))
                    .collect();
                Kind::Array(values)
            }
            HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH => {
                if !keyed(&def) {
                    return Err(format!("map {name}: hash needs key, value and max_entries"));
                }
                Kind::Hash {
                    entries: HashMap::new(),
                    tick: 0,
                }
            }
            QUEUE | STACK => {
                if def.key_size != 0 || def.value_size == 0 || def.max_entries == 0 {
                    return Err(format!(
                        "map {name}: queue/stack needs no key, a value and max_entries"
                    ));
                }
                if def.map_type == QUEUE {
                    Kind::Queue(VecDeque::new())
                } else {
                    Kind::Stack(Vec::new())
                }
            }
            RINGBUF => {
                if def.max_entries == 0 {
                    return Err(format!(
                        "map {name}: ring buffer needs max_entries (its size in bytes)"
                    ));
                }
                Kind::Ring {
                    records: VecDeque::new(),
                    used: 0,
                }
            }
            PERF_EVENT_ARRAY => Kind::Perf(Vec::new()),
            PROG_ARRAY => {
                if def.key_size != 4 || def.value_size != 4 || def.max_entries == 0 {
                    return Err(format!(
                        "map {name}: program array needs 4-byte keys and values"
                    ));
                }
                Kind::ProgArray(vec![None; def.max_entries as usize])
            }
            HASH_OF_MAPS | ARRAY_OF_MAPS | LPM_TRIE => {
                return Err(format!(
                    "map {name}: map type {} is not supported by ntsim",
                    def.map_type
                ))
            }
            t => return Err(format!("map {name}: unknown map type {t}")),
        };
        Ok(Map {
            name: name.to_string(),
            def,
            read_only,
            inner: Mutex::new(inner),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn def(&self) -> &MapDef {
        &self.def
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_percpu(&self) -> bool {
        matches!(
            self.def.map_type,
            map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH
        )
    }

    fn is_lru(&self) -> bool {
        matches!(
            self.def.map_type,
            map_type::LRU_HASH | map_type::LRU_PERCPU_HASH
        )
    }

    fn cpus(&self) -> u32 {
        if self.is_percpu() {
            CPU_COUNT
        } else {
            1
        }
    }

    /// Whether `[addr, addr + len)` lies inside one value of this map (live,
    /// or retired during the current runs). Writes to a read-only map
    /// (`.rodata`) are refused.
    pub(crate) fn contains(&self, addr: u64, len: u64, write: bool) -> bool {
        if write && self.read_only {
            return false;
        }
        let inner = self.lock();
        match inner.index.range(..=addr).next_back() {
            Some((&start, &size)) => addr.checked_add(len).is_some_and(|end| end <= start + size),
            None => false,
        }
    }

    /// Frees retired values (no run is in progress).
    pub(crate) fn reclaim(&self) {
        let mut inner = self.lock();
        let retired = std::mem::take(&mut inner.retired);
        for v in &retired {
            inner.index.remove(&(v.as_ptr() as u64));
        }
    }

    fn array_index(&self, key: &[u8]) -> Result<usize, EbpfResult> {
        // eBPF for Windows reads the first four bytes of any array key.
        let k = u32::from_le_bytes(
            key.get(..4)
                .and_then(|k| k.try_into().ok())
                .ok_or(EbpfResult::InvalidArgument)?,
        );
        if k >= self.def.max_entries {
            return Err(EbpfResult::InvalidArgument);
        }
        Ok(k as usize)
    }

    // ---- Helper-side operations (the program's view: one CPU) ----

    /// `bpf_map_lookup_elem`: the address of the value for `cpu`.
    pub(crate) fn helper_lookup(&self, key: &[u8], cpu: u32, delete: bool) -> Option<u64> {
        let cpu = if self.is_percpu() {
            (cpu % CPU_COUNT) as usize
        } else {
            0
        };
        let lru = self.is_lru();
        let max = self.def.max_entries as usize;
        let mut inner = self.lock();
        let inner = &mut *inner;
        match &mut inner.kind {
            Kind::Array(values) => {
                if delete {
                    return None;
                }
                let i = self.array_index(key).ok()?;
                Some(values[cpu * max + i].as_ptr() as u64)
            }
            Kind::Hash { entries, tick } => {
                if delete {
                    let e = entries.remove(key)?;
                    let addr = e.values[cpu].as_ptr() as u64;
                    for v in e.values {
                        inner.retired.push(v);
                    }
                    return Some(addr);
                }
                *tick += 1;
                let e = entries.get_mut(key)?;
                if lru {
                    e.last_used = *tick;
                }
                Some(e.values[cpu].as_ptr() as u64)
            }
            _ => None,
        }
    }

    /// `bpf_map_update_elem` from a program: `value` is one CPU's value.
    pub(crate) fn helper_update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: u32,
    ) -> Result<(), EbpfResult> {
        let cpu = if self.is_percpu() {
            Some(cpu % CPU_COUNT)
        } else {
            None
        };
        self.update_inner(key, value, flags, cpu)
    }

    fn update_inner(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: Option<u32>,
    ) -> Result<(), EbpfResult> {
        if self.read_only {
            return Err(EbpfResult::InvalidArgument);
        }
        let vs = self.def.value_size as usize;
        let cpus = self.cpus() as usize;
        let stride = percpu_stride(self.def.value_size);
        // The value for CPU `c`: the single value, or one slice of the per-CPU buffer.
        let value_for = |c: usize| -> &[u8] {
            match cpu {
                Some(_) => &value[..vs],
                None if cpus > 1 => &value[c * stride..c * stride + vs],
                None => &value[..vs],
            }
        };
        let needed = if cpu.is_none() && cpus > 1 {
            stride * cpus
        } else {
            vs
        };
        if value.len() < needed || key.len() < self.def.key_size as usize || flags > BPF_EXIST {
            return Err(EbpfResult::InvalidArgument);
        }
        let max = self.def.max_entries as usize;
        let lru = self.is_lru();
        let mut guard = self.lock();
        let inner = &mut *guard;
        match &mut inner.kind {
            Kind::Array(values) => {
                if flags == BPF_NOEXIST {
                    return Err(EbpfResult::InvalidArgument);
                }
                let i = self.array_index(key)?;
                for c in 0..cpus {
                    if cpu.is_some_and(|x| x as usize != c) {
                        continue;
                    }
                    values[c * max + i].copy_from_slice(value_for(c));
                }
                Ok(())
            }
            Kind::Hash { entries, tick } => {
                let key = key[..self.def.key_size as usize].to_vec();
                *tick += 1;
                let now = *tick;
                let exists = entries.contains_key(&key);
                if exists && flags == BPF_NOEXIST {
                    return Err(EbpfResult::KeyAlreadyExists);
                }
                if !exists && flags == BPF_EXIST {
                    return Err(EbpfResult::KeyNotFound);
                }
                if !exists && entries.len() >= max {
                    if !lru {
                        return Err(EbpfResult::OutOfSpace);
                    }
                    let oldest = entries
                        .iter()
                        .min_by_key(|(_, e)| e.last_used)
                        .map(|(k, _)| k.clone())
                        .ok_or(EbpfResult::OutOfSpace)?;
                    if let Some(e) = entries.remove(&oldest) {
                        inner.retired.extend(e.values);
                    }
                }
                // A new value block for every CPU being written; the old
                // one is retired (a program may still hold it).
                let old = entries.remove(&key);
                let mut values = Vec::with_capacity(cpus);
                let zero = vec![0u8; vs];
                let mut old_values =
                    old.map(|e| e.values.into_iter().map(Some).collect::<Vec<_>>());
                for c in 0..cpus {
                    let keep = cpu.is_some_and(|x| x as usize != c);
                    let prev = old_values.as_mut().and_then(|o| o[c].take());
                    match (keep, prev) {
                        (true, Some(p)) => values.push(p),
                        (true, None) => values.push(Inner::alloc_in(&mut inner.index, &zero)),
                        (false, p) => {
                            if let Some(p) = p {
                                inner.retired.push(p);
                            }
                            values.push(Inner::alloc_in(&mut inner.index, value_for(c)));
                        }
                    }
                }
                entries.insert(
                    key,
                    HashEntry {
                        values,
                        last_used: now,
                    },
                );
                Ok(())
            }
            _ => Err(EbpfResult::InvalidArgument),
        }
    }

    /// `bpf_map_delete_elem`.
    pub(crate) fn helper_delete(&self, key: &[u8]) -> Result<(), EbpfResult> {
        if self.read_only {
            return Err(EbpfResult::InvalidArgument);
        }
        let max = self.def.max_entries as usize;
        let mut guard = self.lock();
        let inner = &mut *guard;
        match &mut inner.kind {
            Kind::Array(values) => {
                // eBPF for Windows zeroes the element.
                let i = self.array_index(key)?;
                for c in 0..self.cpus() as usize {
                    values[c * max + i].fill(0);
                }
                Ok(())
            }
            Kind::Hash { entries, .. } => {
                let key = key
                    .get(..self.def.key_size as usize)
                    .ok_or(EbpfResult::InvalidArgument)?;
                let e = entries.remove(key).ok_or(EbpfResult::KeyNotFound)?;
                inner.retired.extend(e.values);
                Ok(())
            }
            _ => Err(EbpfResult::InvalidArgument),
        }
    }

    /// `bpf_map_push_elem` (queue, stack). `BPF_EXIST` replaces the oldest
    /// element when the map is full.
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), EbpfResult> {
        let vs = self.def.value_size as usize;
        if value.len() < vs || (flags != BPF_ANY && flags != BPF_EXIST) {
            return Err(EbpfResult::InvalidArgument);
        }
        let max = self.def.max_entries as usize;
        let mut inner = self.lock();
        match &mut inner.kind {
            Kind::Queue(q) => {
                if q.len() >= max {
                    if flags != BPF_EXIST {
                        return Err(EbpfResult::OutOfSpace);
                    }
                    q.pop_front();
                }
                q.push_back(value[..vs].to_vec());
                Ok(())
            }
            Kind::Stack(s) => {
                if s.len() >= max {
                    if flags != BPF_EXIST {
                        return Err(EbpfResult::OutOfSpace);
                    }
                    s.remove(0);
                }
                s.push(value[..vs].to_vec());
                Ok(())
            }
            _ => Err(EbpfResult::InvalidArgument),
        }
    }

    /// `bpf_map_pop_elem` / `bpf_map_peek_elem` (queue: oldest, stack: newest).
    pub fn pop(&self, remove: bool) -> Result<Vec<u8>, EbpfResult> {
        let mut inner = self.lock();
        let v = match &mut inner.kind {
            Kind::Queue(q) => {
                if remove {
                    q.pop_front()
                } else {
                    q.front().cloned()
                }
            }
            Kind::Stack(s) => {
                if remove {
                    s.pop()
                } else {
                    s.last().cloned()
                }
            }
            _ => return Err(EbpfResult::InvalidArgument),
        };
        v.ok_or(EbpfResult::ObjectNotFound)
    }

    /// `bpf_ringbuf_output`: a record takes an 8-byte header plus its data
    /// rounded up to 8 bytes; `max_entries` is the ring's size in bytes.
    pub(crate) fn ring_output(&self, data: &[u8]) -> Result<(), EbpfResult> {
        let capacity = self.def.max_entries as usize;
        let mut inner = self.lock();
        match &mut inner.kind {
            Kind::Ring { records, used } => {
                let need = 8 + data.len().div_ceil(8) * 8;
                if *used + need > capacity {
                    return Err(EbpfResult::OutOfSpace);
                }
                *used += need;
                records.push_back(data.to_vec());
                Ok(())
            }
            _ => Err(EbpfResult::InvalidArgument),
        }
    }

    pub(crate) fn perf_output(&self, cpu: u32, data: Vec<u8>) -> Result<(), EbpfResult> {
        let mut inner = self.lock();
        match &mut inner.kind {
            Kind::Perf(records) => {
                records.push(PerfRecord { cpu, data });
                Ok(())
            }
            _ => Err(EbpfResult::InvalidArgument),
        }
    }

    pub(crate) fn program_at(&self, index: u32) -> Option<Arc<Program>> {
        let inner = self.lock();
        match &inner.kind {
            Kind::ProgArray(p) => p.get(index as usize).cloned().flatten(),
            _ => None,
        }
    }

    // ---- Host-side API (tests, the tool, the NMR core) ----

    /// The value for `key`: for a per-CPU map, every CPU's value one after
    /// the other, each padded to a multiple of 8 bytes.
    pub fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let max = self.def.max_entries as usize;
        let cpus = self.cpus() as usize;
        let stride = percpu_stride(self.def.value_size);
        let join = |vals: &mut dyn Iterator<Item = &Value>| -> Vec<u8> {
            if cpus == 1 {
                vals.next().map(|v| v.to_vec()).unwrap_or_default()
            } else {
                let mut out = vec![0u8; stride * cpus];
                for (c, v) in vals.enumerate() {
                    out[c * stride..c * stride + v.len()].copy_from_slice(v);
                }
                out
            }
        };
        let inner = self.lock();
        match &inner.kind {
            Kind::Array(values) => {
                let i = self.array_index(key).ok()?;
                Some(join(&mut (0..cpus).map(|c| &values[c * max + i])))
            }
            Kind::Hash { entries, .. } => {
                let e = entries.get(key.get(..self.def.key_size as usize)?)?;
                Some(join(&mut e.values.iter()))
            }
            _ => None,
        }
    }

    /// Updates from the host: `value` as [`Map::lookup`] returns it.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), EbpfResult> {
        self.update_inner(key, value, flags, None)
    }

    /// Deletes from the host.
    pub fn delete(&self, key: &[u8]) -> Result<(), EbpfResult> {
        self.helper_delete(key)
    }

    /// Every key: array indices as 4-byte keys; hash keys sorted.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let inner = self.lock();
        match &inner.kind {
            Kind::Array(_) => (0..self.def.max_entries)
                .map(|i| i.to_le_bytes().to_vec())
                .collect(),
            Kind::Hash { entries, .. } => {
                let mut k: Vec<_> = entries.keys().cloned().collect();
                k.sort();
                k
            }
            _ => Vec::new(),
        }
    }

    /// Takes every ring-buffer record, oldest first, freeing their space.
    pub fn drain_ring(&self) -> Vec<Vec<u8>> {
        let mut inner = self.lock();
        match &mut inner.kind {
            Kind::Ring { records, used } => {
                *used = 0;
                records.drain(..).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Takes every perf event record, oldest first.
    pub fn drain_perf(&self) -> Vec<PerfRecord> {
        let mut inner = self.lock();
        match &mut inner.kind {
            Kind::Perf(records) => std::mem::take(records),
            _ => Vec::new(),
        }
    }

    /// Places (or clears) a program in a program array.
    pub fn set_program(&self, index: u32, program: Option<Arc<Program>>) -> Result<(), EbpfResult> {
        let mut inner = self.lock();
        match &mut inner.kind {
            Kind::ProgArray(p) => {
                let slot = p
                    .get_mut(index as usize)
                    .ok_or(EbpfResult::InvalidArgument)?;
                *slot = program;
                Ok(())
            }
            _ => Err(EbpfResult::InvalidArgument),
        }
    }

    /// Sets a global-data map's initial contents (element 0).
    pub(crate) fn init_data(&self, bytes: &[u8]) {
        let mut inner = self.lock();
        if let Kind::Array(values) = &mut inner.kind {
            let n = bytes.len().min(values[0].len());
            values[0][..n].copy_from_slice(&bytes[..n]);
        }
    }

    /// Address of element 0's value (global data), for relocations.
    pub(crate) fn data_address(&self) -> Option<u64> {
        let inner = self.lock();
        match &inner.kind {
            Kind::Array(values) => values.first().map(|v| v.as_ptr() as u64),
            _ => None,
        }
    }
}

impl Inner {
    fn alloc_in(index: &mut BTreeMap<u64, u64>, bytes: &[u8]) -> Value {
        let v: Value = bytes.to_vec().into_boxed_slice();
        index.insert(v.as_ptr() as u64, v.len() as u64);
        v
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("name", &self.name)
            .field("def", &self.def)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            ..MapDef::default()
        }
    }

    /// Fuzzing found a BTF map asking for tens of GB aborting the process: every
    /// map type is refused above the cap with a message naming the map.
    #[test]
    fn maps_over_the_memory_limit_are_refused_with_a_clear_error() {
        use map_type::*;
        for d in [
            def(PROG_ARRAY, 4, 4, u32::MAX),
            def(ARRAY, 4, 8, u32::MAX),
            def(ARRAY, 4, u32::MAX, 1),
            def(PERCPU_ARRAY, 4, 8 << 20, 4),
            def(HASH, 4, 8, 1 << 20),
            def(QUEUE, 0, 1 << 20, 100),
            def(RINGBUF, 0, 0, (MAP_MEMORY_LIMIT + 1) as u32),
        ] {
            let e = Map::new("big", d.clone()).expect_err(&format!("{d:?}"));
            assert!(
                e.starts_with("map big: declares ") && e.contains("over ntsim's limit"),
                "{d:?}: {e}"
            );
        }
        // At the limit exactly: accepted (and the array is really there).
        // 64 entries of exactly 1 MiB each (key, value and bookkeeping).
        let value = (1 << 20) - 4 - ENTRY_OVERHEAD as u32;
        let m = Map::new("fits", def(ARRAY, 4, value, 64)).expect("at the limit");
        assert_eq!(m.def().declared_memory(), MAP_MEMORY_LIMIT);
        assert_eq!(
            m.lookup(&63u32.to_le_bytes()).map(|v| v.len()),
            Some(value as usize)
        );
        Map::new("over", def(ARRAY, 4, value + 1, 64)).expect_err("one byte per entry over");
        Map::new("ring", def(RINGBUF, 0, 0, MAP_MEMORY_LIMIT as u32)).expect("ring at the limit");
    }

    #[test]
    fn short_keys_are_invalid_arguments_not_panics() {
        let a = Map::new("a", def(map_type::ARRAY, 4, 8, 2)).unwrap();
        assert_eq!(a.lookup(&[1]), None);
        assert_eq!(a.delete(&[1, 0]), Err(EbpfResult::InvalidArgument));
        assert_eq!(
            a.update(&[0], &[0; 8], BPF_ANY),
            Err(EbpfResult::InvalidArgument)
        );
        let h = Map::new("h", def(map_type::HASH, 8, 8, 2)).unwrap();
        assert_eq!(h.delete(&[1, 2, 3]), Err(EbpfResult::InvalidArgument));
        assert_eq!(h.lookup(&[1, 2, 3]), None);
    }
}
