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
    b.get(off..off + 4)
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
        let tb = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| bad("type section out of range"))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| bad("string section out of range"))?;
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

    fn size(&self, id: u32) -> Result<u32, ObjectError> {
        let t = self.resolve(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT
            | KIND_DATASEC => Ok(t.size_or_type),
            KIND_PTR => Ok(8),
            KIND_ARRAY => Ok(self.size(t.extra[0])? * t.extra[2]),
            k => Err(bad(format!("type of kind {k} has no size"))),
        }
    }
}

/// Map definitions by variable name, from the `.maps` data section.
pub(crate) fn map_defs(bytes: &[u8]) -> Result<HashMap<String, MapDef>, ObjectError> {
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
