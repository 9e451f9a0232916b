//! A minimal BTF reader: just enough to read map definitions from the
//! `.maps` data section (libbpf's `__uint` / `__type` convention).

use super::maps::MapDef;
use super::object::ObjectError;
use std::collections::HashMap;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// How deep arrays of arrays may nest when computing a size.
const MAX_NESTING: usize = 32;

/// `b[base + off .. base + off + len]`, None if out of range or overflowing.
fn sub_range(b: &[u8], base: usize, off: usize, len: usize) -> Option<&[u8]> {
    let start = base.checked_add(off)?;
    b.get(start..start.checked_add(len)?)
}

struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    size_or_type: u32,
    /// Kind-specific data following the common header.
    extra: Vec<u32>,
}

struct Btf<'a> {
    types: Vec<Type>, // index 0 = void
    strings: &'a [u8],
}

fn bad(s: impl Into<String>) -> ObjectError {
    ObjectError::Malformed(format!("BTF: {}", s.into()))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ObjectError> {
    b.get(off..off.checked_add(4).ok_or_else(|| bad("truncated"))?)
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .ok_or_else(|| bad("truncated"))
}

impl<'a> Btf<'a> {
    fn parse(b: &'a [u8]) -> Result<Btf<'a>, ObjectError> {
        if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != 0xeb9f {
            return Err(bad("bad magic"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let tb = sub_range(b, hdr_len, type_off, type_len).ok_or_else(|| {
            bad(format!(
                "type section ({type_len} bytes at {hdr_len} + {type_off}) out of range"
            ))
        })?;
        let strings = sub_range(b, hdr_len, str_off, str_len).ok_or_else(|| {
            bad(format!(
                "string section ({str_len} bytes at {hdr_len} + {str_off}) out of range"
            ))
        })?;
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            vlen: 0,
            size_or_type: 0,
            extra: Vec::new(),
        }];
        let mut off = 0;
        while off < tb.len() {
            let name_off = u32_at(tb, off)?;
            let info = u32_at(tb, off + 4)?;
            let size_or_type = u32_at(tb, off + 8)?;
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let words = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 1,
                KIND_ARRAY => 3,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 3 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 2 * vlen,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
                | KIND_FLOAT | KIND_TYPE_TAG => 0,
                k => return Err(bad(format!("unknown kind {k}"))),
            };
            let mut extra = Vec::with_capacity(words);
            for i in 0..words {
                extra.push(u32_at(tb, off + i * 4)?);
            }
            off += words * 4;
            types.push(Type {
                name_off,
                kind,
                vlen,
                size_or_type,
                extra,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, t: &Type) -> &str {
        let s = self.strings.get(t.name_off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Result<&Type, ObjectError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| bad(format!("type id {id}")))
    }

    /// Skips typedef/const/volatile/restrict/type tags.
    fn resolve(&self, mut id: u32) -> Result<&Type, ObjectError> {
        for _ in 0..64 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(t),
            }
        }
        Err(bad("type chain too long"))
    }

    /// A type's size in bytes. Arrays nest at most [`MAX_NESTING`] deep (an
    /// array may name itself as its element type) and a size that does not
    /// fit 32 bits is an error.
    fn size(&self, id: u32) -> Result<u32, ObjectError> {
        self.size_at(id, 0)
    }

    fn size_at(&self, id: u32, depth: usize) -> Result<u32, ObjectError> {
        if depth > MAX_NESTING {
            return Err(bad(format!("type {id}: arrays nested too deep")));
        }
        let t = self.resolve(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT
            | KIND_DATASEC => Ok(t.size_or_type),
            KIND_PTR => Ok(8),
            KIND_ARRAY => self
                .size_at(t.extra[0], depth + 1)?
                .checked_mul(t.extra[2])
                .ok_or_else(|| bad(format!("type {id}: array size overflows 32 bits"))),
            k => Err(bad(format!("type of kind {k} has no size"))),
        }
    }
}

/// Map definitions by variable name, from the `.maps` data section.
pub fn map_defs(bytes: &[u8]) -> Result<HashMap<String, MapDef>, ObjectError> {
    let btf = Btf::parse(bytes)?;
    let mut out = HashMap::new();
    for sec in btf
        .types
        .iter()
        .filter(|t| t.kind == KIND_DATASEC && btf.name(t) == ".maps")
    {
        for v in 0..sec.vlen {
            let var = btf.get(sec.extra[v * 3])?;
            if var.kind != KIND_VAR {
                return Err(bad("a .maps entry is not a variable"));
            }
            let name = btf.name(var).to_string();
            let st = btf.resolve(var.size_or_type)?;
            if st.kind != KIND_STRUCT {
                return Err(bad(format!("map {name} is not a struct")));
            }
            let mut def = MapDef::default();
            for m in 0..st.vlen {
                let mname_off = st.extra[m * 3];
                let mtype = st.extra[m * 3 + 1];
                let mname = btf.name(&Type {
                    name_off: mname_off,
                    kind: 0,
                    vlen: 0,
                    size_or_type: 0,
                    extra: Vec::new(),
                });
                let pointee = || -> Result<u32, ObjectError> {
                    let p = btf.resolve(mtype)?;
                    if p.kind != KIND_PTR {
                        return Err(bad(format!("map {name}: member {mname} is not a pointer")));
                    }
                    Ok(p.size_or_type)
                };
                // __uint(x, N): int (*x)[N].
                let uint = || -> Result<u32, ObjectError> {
                    let a = btf.resolve(pointee()?)?;
                    if a.kind != KIND_ARRAY {
                        return Err(bad(format!("map {name}: member {mname} is not __uint")));
                    }
                    Ok(a.extra[2])
                };
                match mname {
                    "type" => def.map_type = uint()?,
                    "max_entries" => def.max_entries = uint()?,
                    "key_size" => def.key_size = uint()?,
                    "value_size" => def.value_size = uint()?,
                    "map_flags" => def.map_flags = uint()?,
                    "pinning" => def.pinning = uint()?,
                    "key" => def.key_size = btf.size(pointee()?)?,
                    "value" => def.value_size = btf.size(pointee()?)?,
                    other => {
                        return Err(ObjectError::Unsupported(format!(
                            "map {name}: BTF member {other}"
                        )));
                    }
                }
            }
            out.insert(name, def);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRINGS: &[u8] = b"\0.maps\0m\0value\0int\0";
    const DOT_MAPS: u32 = 1;
    const M: u32 = 7;
    const VALUE: u32 = 9;
    const INT: u32 = 15;

    fn info(kind: u32, vlen: u32) -> u32 {
        (kind << 24) | vlen
    }

    /// A BTF blob: header, `types` (each its words), STRINGS.
    fn blob(types: &[&[u32]]) -> Vec<u8> {
        let words: Vec<u8> = types
            .iter()
            .flat_map(|t| t.iter())
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [
            24,
            0,
            words.len() as u32,
            words.len() as u32,
            STRINGS.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&words);
        b.extend_from_slice(STRINGS);
        b
    }

    /// A map `m` with `__type(value, T)`, T = type 2 (an array given by
    /// `array`: element type, count); type 6 is `int[count6]` for nesting.
    fn map_with_value_array(array: [u32; 2], count6: u32) -> Vec<u8> {
        blob(&[
            &[INT, info(KIND_INT, 0), 4, 0x20],                  // 1: int
            &[0, info(KIND_ARRAY, 0), 0, array[0], 1, array[1]], // 2: array
            &[0, info(KIND_PTR, 0), 2],                          // 3: T *
            &[0, info(KIND_STRUCT, 1), 8, VALUE, 3, 0],          // 4: { T *value; }
            &[M, info(KIND_VAR, 0), 4, 1],                       // 5: m
            &[0, info(KIND_ARRAY, 0), 0, 1, 1, count6],          // 6: int[count6]
            &[DOT_MAPS, info(KIND_DATASEC, 1), 8, 5, 0, 8],      // 7: .maps
        ])
    }

    #[test]
    fn a_well_formed_value_array_has_its_size() {
        let defs = map_defs(&map_with_value_array([6, 3], 5)).unwrap();
        assert_eq!(defs["m"].value_size, 3 * 5 * 4);
    }

    /// An array that is its own element type recursed without end (a stack
    /// overflow aborts the process).
    #[test]
    fn a_self_containing_array_is_an_error() {
        let e = map_defs(&map_with_value_array([2, 1], 1)).unwrap_err();
        assert_eq!(
            e,
            ObjectError::Malformed("BTF: type 2: arrays nested too deep".into())
        );
    }

    /// `size * count` overflowed u32 (a panic in a debug build, a wrong
    /// small size in a release one).
    #[test]
    fn an_array_size_over_32_bits_is_an_error() {
        let e = map_defs(&map_with_value_array([6, 0x10000], 0x10000)).unwrap_err();
        assert_eq!(
            e,
            ObjectError::Malformed("BTF: type 2: array size overflows 32 bits".into())
        );
    }

    #[test]
    fn section_offsets_past_the_end_are_errors() {
        let good = map_with_value_array([6, 3], 5);
        for (field, value, what) in [
            (8, u32::MAX, "type section"),
            (12, u32::MAX, "type section"),
            (16, u32::MAX, "string section"),
            (20, 1000, "string section"),
        ] {
            let mut b = good.clone();
            b[field..field + 4].copy_from_slice(&value.to_le_bytes());
            match map_defs(&b) {
                Err(ObjectError::Malformed(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("header field {field}: {other:?}"),
            }
        }
    }
}
