//! How the `ntsim` command shows records and map entries: decoded with the
//! object's BTF ([`crate::ebpf::btf_types`]) where it says what they are,
//! hex otherwise; as text and as JSON values.
//!
//! - A ring-buffer or perf record is decoded when the user names its type
//!   (`--ringbuf MAP=TYPE`, a test file's `ringbuf MAP TYPE`): the object
//!   says how big a map's records may be, not what they hold.
//! - A map key or value is decoded with the types of the map's
//!   `__type(key, ...)` / `__type(value, ...)` declaration, as `bpftool
//!   map dump` does; a map declared with sizes only (or a legacy map) is
//!   shown in hex.

use crate::ebpf::btf_types::{Types, Value};
use crate::ebpf::maps::map_type;
use crate::ebpf::Object;
use std::collections::HashMap;

/// The decoding of one object's records and maps.
#[derive(Debug, Default)]
pub struct Decoder {
    types: Option<Types>,
    /// Map name -> the type id of its records.
    records: HashMap<String, u32>,
}

/// Lower-case hex, bytes separated by nothing.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The name `ntsim` shows for a map type.
pub fn map_type_name(t: u32) -> &'static str {
    match t {
        map_type::HASH => "hash",
        map_type::ARRAY => "array",
        map_type::PROG_ARRAY => "program array",
        map_type::PERCPU_HASH => "per-CPU hash",
        map_type::PERCPU_ARRAY => "per-CPU array",
        map_type::HASH_OF_MAPS => "hash of maps",
        map_type::ARRAY_OF_MAPS => "array of maps",
        map_type::LRU_HASH => "LRU hash",
        map_type::LPM_TRIE => "LPM trie",
        map_type::QUEUE => "queue",
        map_type::LRU_PERCPU_HASH => "LRU per-CPU hash",
        map_type::STACK => "stack",
        map_type::RINGBUF => "ring buffer",
        map_type::PERF_EVENT_ARRAY => "perf event array",
        _ => "map",
    }
}

/// The JSON name of a map type (stable: `hash`, `percpu_array`, ...).
pub fn map_type_key(t: u32) -> &'static str {
    match t {
        map_type::HASH => "hash",
        map_type::ARRAY => "array",
        map_type::PROG_ARRAY => "prog_array",
        map_type::PERCPU_HASH => "percpu_hash",
        map_type::PERCPU_ARRAY => "percpu_array",
        map_type::HASH_OF_MAPS => "hash_of_maps",
        map_type::ARRAY_OF_MAPS => "array_of_maps",
        map_type::LRU_HASH => "lru_hash",
        map_type::LPM_TRIE => "lpm_trie",
        map_type::QUEUE => "queue",
        map_type::LRU_PERCPU_HASH => "lru_percpu_hash",
        map_type::STACK => "stack",
        map_type::RINGBUF => "ringbuf",
        map_type::PERF_EVENT_ARRAY => "perf_event_array",
        _ => "unknown",
    }
}

/// Whether a map type is per-CPU (its values are one per CPU).
pub fn is_percpu(t: u32) -> bool {
    matches!(
        t,
        map_type::PERCPU_HASH | map_type::PERCPU_ARRAY | map_type::LRU_PERCPU_HASH
    )
}

impl Decoder {
    /// Reads the BTF of `object_bytes` and binds each `(map, type)` of
    /// `ringbuf` (the map must be a ring buffer or perf event array of
    /// `object`, the type a type of the object's BTF with a size).
    pub fn new(
        object_bytes: &[u8],
        object: &Object,
        ringbuf: &[(String, String)],
    ) -> Result<Decoder, String> {
        let types = match Types::from_elf(object_bytes) {
            Ok(t) => t,
            // Without usable BTF everything is hex, unless types were asked for.
            Err(e) if ringbuf.is_empty() => {
                eprintln!("ntsim: the object's BTF cannot be read ({e}); maps are shown in hex");
                None
            }
            Err(e) => return Err(format!("the object's BTF cannot be read: {e}")),
        };
        let mut records = HashMap::new();
        for (map, type_name) in ringbuf {
            let Some(m) = object.map(map) else {
                let have: Vec<&str> = object.maps.iter().map(|m| m.name()).collect();
                return Err(format!(
                    "ringbuf {map}={type_name}: the object has no map named {map:?} (it has: {})",
                    have.join(", ")
                ));
            };
            let t = m.def().map_type;
            if t != map_type::RINGBUF && t != map_type::PERF_EVENT_ARRAY {
                return Err(format!(
                    "ringbuf {map}={type_name}: {map} is a {} map, not a ring buffer or perf event array",
                    map_type_name(t)
                ));
            }
            let Some(types) = &types else {
                return Err(format!(
                    "ringbuf {map}={type_name}: the object has no BTF (build it with clang -g)"
                ));
            };
            let id = types.find(type_name).ok_or_else(|| {
                format!(
                    "ringbuf {map}={type_name}: the object's BTF has no type {type_name:?} \
                     (a record type is in the BTF only if a declaration uses it, for example \
                     a map's __type(value, ...))"
                )
            })?;
            records.insert(map.clone(), id);
        }
        Ok(Decoder { types, records })
    }

    /// The BTF types, if the object has them.
    pub fn types(&self) -> Option<&Types> {
        self.types.as_ref()
    }

    /// The name of the record type of `map`, if one was given.
    pub fn record_type(&self, map: &str) -> Option<String> {
        let id = self.records.get(map)?;
        Some(self.types.as_ref()?.name_of(*id))
    }

    /// A record of `map` decoded with its type, if one was given.
    pub fn record(&self, map: &str, bytes: &[u8]) -> Option<Value> {
        let id = self.records.get(map)?;
        Some(self.types.as_ref()?.decode(*id, bytes))
    }

    /// The key and value type ids of a map, from its BTF declaration.
    pub fn map_types(&self, map: &str) -> (Option<u32>, Option<u32>) {
        match &self.types {
            Some(t) => t.map_types(map),
            None => (None, None),
        }
    }

    /// A key of `map`, decoded when its type is known.
    pub fn key(&self, map: &str, bytes: &[u8]) -> Option<Value> {
        let id = self.map_types(map).0?;
        Some(self.types.as_ref()?.decode(id, bytes))
    }

    /// A value of `map` (one CPU's for per-CPU maps), decoded when its type
    /// is known.
    pub fn value(&self, map: &str, bytes: &[u8]) -> Option<Value> {
        let id = self.map_types(map).1?;
        Some(self.types.as_ref()?.decode(id, bytes))
    }

    /// The name of a type id (for reports).
    pub fn type_name(&self, id: Option<u32>) -> Option<String> {
        Some(self.types.as_ref()?.name_of(id?))
    }
}

/// A decoded value as JSON: integers as numbers (a string when beyond
/// 64 bits), booleans, enums as their enumerator's name, strings,
/// byte arrays as hex strings, lists, objects; a part the bytes did not
/// cover is null.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Int(i) => int_json(*i),
        Value::Bool(b) => J::Bool(*b),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Enum { name, .. } => J::String(name.clone()),
        Value::Pointer(p) => J::from(*p),
        Value::Str(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(hex(b)),
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Struct(fields) => J::Object(
            fields
                .iter()
                .map(|(n, v)| (n.clone(), to_json(v)))
                .collect(),
        ),
        Value::Missing => J::Null,
    }
}

fn int_json(i: i128) -> serde_json::Value {
    if let Ok(v) = i64::try_from(i) {
        serde_json::Value::from(v)
    } else if let Ok(v) = u64::try_from(i) {
        serde_json::Value::from(v)
    } else {
        serde_json::Value::String(i.to_string())
    }
}

/// The per-CPU values of a per-CPU map's lookup result (each padded to 8
/// bytes, as user mode lays them out).
pub fn split_percpu(value_size: u32, bytes: &[u8]) -> Vec<&[u8]> {
    let stride = (value_size as usize).div_ceil(8) * 8;
    if stride == 0 {
        return Vec::new();
    }
    bytes
        .chunks(stride)
        .map(|c| &c[..c.len().min(value_size as usize)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_values_keeps_numbers_exact() {
        assert_eq!(to_json(&Value::Int(-5)), serde_json::json!(-5));
        assert_eq!(
            to_json(&Value::Int(u64::MAX as i128)),
            serde_json::json!(u64::MAX)
        );
        assert_eq!(
            to_json(&Value::Int(i128::from(u64::MAX) + 1)),
            serde_json::json!("18446744073709551616")
        );
        assert_eq!(to_json(&Value::Bytes(vec![1, 0xab])), "01ab");
        assert_eq!(
            to_json(&Value::Struct(vec![
                ("a".into(), Value::Str("x".into())),
                ("b".into(), Value::Missing)
            ])),
            serde_json::json!({"a": "x", "b": null})
        );
        assert_eq!(
            split_percpu(4, &[1, 0, 0, 0, 9, 9, 9, 9, 2, 0, 0, 0, 9, 9, 9, 9]),
            [&[1u8, 0, 0, 0][..], &[2, 0, 0, 0][..]]
        );
    }
}
