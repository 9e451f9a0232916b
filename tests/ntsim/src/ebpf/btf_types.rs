//! BTF types and values: the whole type graph of an object's `.BTF`
//! section, and the decoding of raw bytes (ring-buffer records, map keys
//! and values) as one of its types, the way `bpftool map dump` shows them.
//!
//! [`btf`](super::btf) reads only what loading needs (map definitions);
//! this module reads every kind, by its own bounds-checked parser, for the
//! `ntsim` command's output and expectations.
//!
//! # Decoding rules
//!
//! - Integers by their size and signedness (`BTF_INT_SIGNED`); `_Bool`
//!   (`BTF_INT_BOOL`) as a boolean; bit fields by bit offset and width.
//! - Enums as their enumerator's name when the value has one, else the
//!   number.
//! - Structs and unions as their named members in order (an anonymous
//!   member's fields are inlined, as C reads them); arrays as lists.
//! - An array of the C type `char` (the BTF integer named `char`, reached
//!   through any typedefs) is a string: the bytes up to the first NUL,
//!   UTF-8 (invalid sequences replaced). An array of a 16-bit integer whose
//!   type is named `wchar_t`, `WCHAR` or `char16_t` (the typedef the author
//!   wrote) is a UTF-16LE string up to the first 0 unit. `unsigned char`,
//!   `signed char`, `uint8_t` arrays stay byte lists: the type says bytes.
//! - Pointers as their value; floats as numbers; anything without a
//!   decodable layout (void, functions, forward declarations) as bytes.

use goblin::elf::Elf;
use std::cell::Cell;
use std::fmt;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Longest typedef/qualifier chain or nesting followed before giving up
/// (a malformed section may loop).
const MAX_DEPTH: usize = 64;
/// Most array elements decoded from one array.
pub const MAX_ARRAY_ELEMENTS: u64 = 4096;
/// Most parts (members, elements) decoded from one value; past it the
/// value is cut short.
const MAX_DECODED_PARTS: usize = 100_000;

/// Why a `.BTF` section could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BTF: {0}")]
pub struct BtfError(pub String);

fn bad(s: impl Into<String>) -> BtfError {
    BtfError(s.into())
}

/// A member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Bit-field width; 0 when the member is not a bit field.
    pub bit_size: u32,
}

/// One BTF type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Void,
    Int {
        name: String,
        size: u32,
        signed: bool,
        char: bool,
        bool: bool,
        bit_offset: u32,
        bits: u32,
    },
    Ptr(u32),
    Array {
        elem: u32,
        len: u32,
    },
    Struct {
        name: String,
        size: u32,
        union: bool,
        members: Vec<Member>,
    },
    Enum {
        name: String,
        size: u32,
        signed: bool,
        values: Vec<(String, i128)>,
    },
    Fwd(String),
    Typedef {
        name: String,
        target: u32,
    },
    /// const, volatile, restrict, type tags: no effect on the layout.
    Qualifier(u32),
    Func(String),
    FuncProto,
    Var {
        name: String,
        target: u32,
    },
    Datasec {
        name: String,
        /// (variable type id, offset, size)
        vars: Vec<(u32, u32, u32)>,
    },
    Float {
        name: String,
        size: u32,
    },
    DeclTag,
}

/// The types of one `.BTF` section; id 0 is `void`.
#[derive(Clone, Debug, Default)]
pub struct Types {
    types: Vec<Type>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    off.checked_add(4)
        .and_then(|end| b.get(off..end))
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .ok_or_else(|| bad(format!("truncated at byte {off} of the type section")))
}

fn string_at(strings: &[u8], off: u32) -> Result<String, BtfError> {
    let s = strings
        .get(off as usize..)
        .ok_or_else(|| bad(format!("name offset {off} is past the string section")))?;
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

fn section<'a>(
    b: &'a [u8],
    start: usize,
    off: u32,
    len: u32,
    what: &str,
) -> Result<&'a [u8], BtfError> {
    let from = start
        .checked_add(off as usize)
        .ok_or_else(|| bad(format!("{what} out of range")))?;
    let to = from
        .checked_add(len as usize)
        .ok_or_else(|| bad(format!("{what} out of range")))?;
    b.get(from..to)
        .ok_or_else(|| bad(format!("{what} out of range")))
}

impl Types {
    /// Reads the `.BTF` section of a BPF ELF object; `Ok(None)` when it has
    /// none (an object built without `-g`).
    pub fn from_elf(object: &[u8]) -> Result<Option<Types>, BtfError> {
        let elf = Elf::parse(object).map_err(|e| bad(format!("not an ELF object: {e}")))?;
        for sh in &elf.section_headers {
            if elf.shdr_strtab.get_at(sh.sh_name) != Some(".BTF") {
                continue;
            }
            let start = sh.sh_offset as usize;
            let data = start
                .checked_add(sh.sh_size as usize)
                .and_then(|end| object.get(start..end))
                .ok_or_else(|| bad("the .BTF section is past the end of the file"))?;
            return Types::parse(data).map(Some);
        }
        Ok(None)
    }

    /// Parses a `.BTF` section.
    pub fn parse(b: &[u8]) -> Result<Types, BtfError> {
        if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != 0xeb9f {
            return Err(bad("bad magic (not a little-endian BTF section)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let tb = section(b, hdr_len, u32_at(b, 8)?, u32_at(b, 12)?, "type section")?;
        let strings = section(b, hdr_len, u32_at(b, 16)?, u32_at(b, 20)?, "string section")?;
        let mut types = vec![Type::Void];
        let mut off = 0;
        while off < tb.len() {
            let name = string_at(strings, u32_at(tb, off)?)?;
            let info = u32_at(tb, off + 4)?;
            let size_or_type = u32_at(tb, off + 8)?;
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let words = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 1,
                KIND_ARRAY => 3,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 3 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 2 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                k => return Err(bad(format!("type {}: unknown kind {k}", types.len()))),
            };
            let mut extra = Vec::with_capacity(words);
            for i in 0..words {
                extra.push(u32_at(tb, off + i * 4)?);
            }
            off += words * 4;
            let ty = match kind {
                KIND_INT => {
                    let enc = extra[0];
                    let encoding = (enc >> 24) & 0xf;
                    Type::Int {
                        name,
                        size: size_or_type,
                        signed: encoding & 1 != 0,
                        char: encoding & 2 != 0,
                        bool: encoding & 4 != 0,
                        bit_offset: (enc >> 16) & 0xff,
                        bits: enc & 0xff,
                    }
                }
                KIND_PTR => Type::Ptr(size_or_type),
                KIND_ARRAY => Type::Array {
                    elem: extra[0],
                    len: extra[2],
                },
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for m in extra.chunks_exact(3) {
                        let (bit_offset, bit_size) = if kind_flag {
                            (m[2] & 0xff_ffff, m[2] >> 24)
                        } else {
                            (m[2], 0)
                        };
                        members.push(Member {
                            name: string_at(strings, m[0])?,
                            type_id: m[1],
                            bit_offset,
                            bit_size,
                        });
                    }
                    Type::Struct {
                        name,
                        size: size_or_type,
                        union: kind == KIND_UNION,
                        members,
                    }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for v in extra.chunks_exact(2) {
                        let value = if kind_flag {
                            v[1] as i32 as i128
                        } else {
                            v[1] as i128
                        };
                        values.push((string_at(strings, v[0])?, value));
                    }
                    Type::Enum {
                        name,
                        size: size_or_type,
                        signed: kind_flag,
                        values,
                    }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for v in extra.chunks_exact(3) {
                        let raw = (v[2] as u64) << 32 | v[1] as u64;
                        let value = if kind_flag {
                            raw as i64 as i128
                        } else {
                            raw as i128
                        };
                        values.push((string_at(strings, v[0])?, value));
                    }
                    Type::Enum {
                        name,
                        size: size_or_type,
                        signed: kind_flag,
                        values,
                    }
                }
                KIND_FWD => Type::Fwd(name),
                KIND_TYPEDEF => Type::Typedef {
                    name,
                    target: size_or_type,
                },
                KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Qualifier(size_or_type)
                }
                KIND_FUNC => Type::Func(name),
                KIND_FUNC_PROTO => Type::FuncProto,
                KIND_VAR => Type::Var {
                    name,
                    target: size_or_type,
                },
                KIND_DATASEC => Type::Datasec {
                    name,
                    vars: extra.chunks_exact(3).map(|v| (v[0], v[1], v[2])).collect(),
                },
                KIND_FLOAT => Type::Float {
                    name,
                    size: size_or_type,
                },
                _ => Type::DeclTag,
            };
            types.push(ty);
        }
        Ok(Types { types })
    }

    /// The type with this id.
    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// How many types there are (with `void`).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether only `void` is there.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The id behind typedefs and qualifiers.
    pub fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            match self.get(id)? {
                Type::Typedef { target, .. } | Type::Qualifier(target) => id = *target,
                _ => return Some(id),
            }
        }
        None
    }

    /// The name of a type as C spells it (`struct x`, `uint32_t`, `char[8]`).
    pub fn name_of(&self, id: u32) -> String {
        self.name_depth(id, 0)
    }

    fn name_depth(&self, id: u32, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return "?".into();
        }
        match self.get(id) {
            None => format!("<type {id}>"),
            Some(Type::Void) => "void".into(),
            Some(
                Type::Int { name, .. } | Type::Float { name, .. } | Type::Typedef { name, .. },
            ) => name.clone(),
            Some(Type::Ptr(t)) => format!("{} *", self.name_depth(*t, depth + 1)),
            Some(Type::Array { elem, len }) => {
                format!("{}[{len}]", self.name_depth(*elem, depth + 1))
            }
            Some(Type::Struct { name, union, .. }) => {
                let kw = if *union { "union" } else { "struct" };
                if name.is_empty() {
                    format!("{kw} <anonymous>")
                } else {
                    format!("{kw} {name}")
                }
            }
            Some(Type::Enum { name, .. }) => format!("enum {name}"),
            Some(Type::Fwd(name)) => format!("struct {name}"),
            Some(Type::Qualifier(t)) => self.name_depth(*t, depth + 1),
            Some(Type::Func(n) | Type::Var { name: n, .. } | Type::Datasec { name: n, .. }) => {
                n.clone()
            }
            Some(Type::FuncProto) => "function".into(),
            Some(Type::DeclTag) => "tag".into(),
        }
    }

    /// Size in bytes of a type with a layout.
    pub fn size_of(&self, id: u32) -> Option<u64> {
        self.size_depth(id, 0)
    }

    fn size_depth(&self, id: u32, depth: usize) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.get(self.resolve(id)?)? {
            Type::Int { size, .. }
            | Type::Struct { size, .. }
            | Type::Enum { size, .. }
            | Type::Float { size, .. } => Some(*size as u64),
            Type::Ptr(_) => Some(8),
            Type::Array { elem, len } => {
                self.size_depth(*elem, depth + 1)?.checked_mul(*len as u64)
            }
            _ => None,
        }
    }

    /// A type by the name a program author writes: `struct NAME`, `union
    /// NAME`, `enum NAME`, or a bare NAME (a typedef, a struct, union or
    /// enum tag, or a base type). Types with a layout only.
    pub fn find(&self, name: &str) -> Option<u32> {
        let (want_kw, bare) = match name.split_once(' ') {
            Some((kw @ ("struct" | "union" | "enum"), rest)) => (Some(kw), rest.trim()),
            _ => (None, name.trim()),
        };
        let mut fallback = None;
        for (id, t) in self.types.iter().enumerate() {
            let id = id as u32;
            let (kw, n) = match t {
                Type::Struct {
                    name, union: true, ..
                } => ("union", name),
                Type::Struct { name, .. } => ("struct", name),
                Type::Enum { name, .. } => ("enum", name),
                Type::Typedef { name, .. } | Type::Int { name, .. } | Type::Float { name, .. } => {
                    ("", name)
                }
                _ => continue,
            };
            if n != bare || self.size_of(id).is_none() {
                continue;
            }
            match want_kw {
                Some(k) if k == kw => return Some(id),
                Some(_) => {}
                // A typedef name wins over a tag of the same name.
                None if kw.is_empty() => return Some(id),
                None => fallback = fallback.or(Some(id)),
            }
        }
        fallback
    }

    /// The BTF key and value types of a map declared in `.maps` with
    /// `__type(key, ...)` / `__type(value, ...)` (None for a member given
    /// as a size, or a map not in `.maps`).
    pub fn map_types(&self, map: &str) -> (Option<u32>, Option<u32>) {
        for t in &self.types {
            let Type::Datasec { name, vars } = t else {
                continue;
            };
            if name != ".maps" {
                continue;
            }
            for (var, _, _) in vars {
                let Some(Type::Var { name, target }) = self.get(*var) else {
                    continue;
                };
                if name != map {
                    continue;
                }
                let Some(Type::Struct { members, .. }) =
                    self.resolve(*target).and_then(|id| self.get(id))
                else {
                    return (None, None);
                };
                let pointee = |member: &str| {
                    let m = members.iter().find(|m| m.name == member)?;
                    match self.get(self.resolve(m.type_id)?)? {
                        Type::Ptr(t) => Some(*t),
                        _ => None,
                    }
                };
                return (pointee("key"), pointee("value"));
            }
        }
        (None, None)
    }

    /// Decodes `bytes` as type `id`. Bytes past the type's size are
    /// ignored; a type larger than `bytes` decodes what is there and marks
    /// the rest [`Value::Missing`].
    pub fn decode(&self, id: u32, bytes: &[u8]) -> Value {
        self.decode_at(id, bytes, 0, 0, &Cell::new(MAX_DECODED_PARTS))
    }

    fn decode_at(
        &self,
        id: u32,
        bytes: &[u8],
        byte_offset: u64,
        depth: usize,
        budget: &Cell<usize>,
    ) -> Value {
        // A malformed section can describe types that nest without end or
        // multiply (a struct of structs of ...): both are cut.
        if budget.get() == 0 {
            return Value::Missing;
        }
        budget.set(budget.get() - 1);
        if depth > MAX_DEPTH {
            return Value::Missing;
        }
        let Some(rid) = self.resolve(id) else {
            return Value::Missing;
        };
        let size = self.size_of(rid);
        let slice = |len: u64| -> Option<&[u8]> {
            let start = usize::try_from(byte_offset).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            bytes.get(start..end)
        };
        // Up to `len` bytes from the offset: what the data has of them.
        let available = |len: u64| -> Option<&[u8]> {
            let start = usize::try_from(byte_offset).ok()?;
            let rest = bytes.get(start..).filter(|r| !r.is_empty())?;
            Some(&rest[..rest.len().min(usize::try_from(len).unwrap_or(usize::MAX))])
        };
        match self.get(rid) {
            Some(Type::Int {
                size,
                signed,
                bool,
                bit_offset,
                bits,
                ..
            }) => {
                let Some(b) = slice(*size as u64) else {
                    return Value::Missing;
                };
                let width = if *bits > 0 && *bits < 128 {
                    *bits
                } else {
                    size.saturating_mul(8)
                };
                let v = read_uint(b).checked_shr(*bit_offset).unwrap_or(0);
                let v = sign_extend(v, width, *signed);
                if *bool {
                    Value::Bool(v != 0)
                } else {
                    Value::Int(v)
                }
            }
            Some(Type::Enum {
                size,
                signed,
                values,
                ..
            }) => {
                let Some(b) = slice(*size as u64) else {
                    return Value::Missing;
                };
                let v = sign_extend(read_uint(b), size.saturating_mul(8), *signed);
                match values.iter().find(|(_, x)| *x == v) {
                    Some((name, _)) => Value::Enum {
                        name: name.clone(),
                        value: v,
                    },
                    None => Value::Int(v),
                }
            }
            Some(Type::Float { size, .. }) => match slice(*size as u64) {
                Some(b) if b.len() == 4 => {
                    Value::Float(f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64)
                }
                Some(b) if b.len() == 8 => {
                    Value::Float(f64::from_le_bytes(b.try_into().expect("8 bytes")))
                }
                Some(b) => Value::Bytes(b.to_vec()),
                None => Value::Missing,
            },
            Some(Type::Ptr(_)) => match slice(8) {
                Some(b) => Value::Pointer(read_uint(b) as u64),
                None => Value::Missing,
            },
            Some(Type::Array { elem, len }) => {
                let elem_size = self.size_of(*elem).unwrap_or(0);
                match self.string_kind(*elem) {
                    Some(StringKind::Char) => {
                        return match available(*len as u64) {
                            Some(b) => {
                                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                                Value::Str(String::from_utf8_lossy(&b[..end]).into_owned())
                            }
                            None => Value::Missing,
                        };
                    }
                    Some(StringKind::Utf16) => {
                        return match available(*len as u64 * 2) {
                            Some(b) => {
                                let units: Vec<u16> = b
                                    .chunks_exact(2)
                                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                                    .take_while(|&u| u != 0)
                                    .collect();
                                Value::Str(String::from_utf16_lossy(&units))
                            }
                            None => Value::Missing,
                        };
                    }
                    None => {}
                }
                let byte_elem = matches!(
                    self.resolve(*elem).and_then(|t| self.get(t)),
                    Some(Type::Int {
                        size: 1,
                        bool: false,
                        ..
                    })
                );
                if byte_elem {
                    return match available(*len as u64) {
                        Some(b) => Value::Bytes(b.to_vec()),
                        None => Value::Missing,
                    };
                }
                if elem_size == 0 {
                    return match slice(0) {
                        Some(_) => Value::List(Vec::new()),
                        None => Value::Missing,
                    };
                }
                let shown = (*len as u64).min(MAX_ARRAY_ELEMENTS);
                let mut items = Vec::new();
                for i in 0..shown {
                    if budget.get() == 0 {
                        break;
                    }
                    let at = i
                        .checked_mul(elem_size)
                        .and_then(|o| o.checked_add(byte_offset))
                        .filter(|&o| o < bytes.len() as u64);
                    let Some(at) = at else {
                        // The data ends here: one Missing for the rest.
                        items.push(Value::Missing);
                        break;
                    };
                    items.push(self.decode_at(*elem, bytes, at, depth + 1, budget));
                }
                Value::List(items)
            }
            Some(Type::Struct { members, .. }) => {
                if byte_offset >= bytes.len() as u64 {
                    return Value::Missing;
                }
                let mut fields = Vec::with_capacity(members.len().min(64));
                for m in members {
                    if budget.get() == 0 {
                        break;
                    }
                    let value = if m.bit_size > 0 {
                        self.decode_bitfield(m, bytes, byte_offset)
                    } else {
                        self.decode_at(
                            m.type_id,
                            bytes,
                            byte_offset.saturating_add(m.bit_offset as u64 / 8),
                            depth + 1,
                            budget,
                        )
                    };
                    // An anonymous struct or union member: its fields
                    // are the outer struct's, as C reads them.
                    match (m.name.is_empty(), value) {
                        (true, Value::Struct(inner)) => fields.extend(inner),
                        (_, value) => fields.push((m.name.clone(), value)),
                    }
                }
                Value::Struct(fields)
            }
            _ => match size.and_then(slice) {
                Some(b) => Value::Bytes(b.to_vec()),
                None => Value::Bytes(Vec::new()),
            },
        }
    }

    fn decode_bitfield(&self, m: &Member, bytes: &[u8], byte_offset: u64) -> Value {
        let first = byte_offset.saturating_add(m.bit_offset as u64 / 8);
        let shift = m.bit_offset % 8;
        let need = (shift + m.bit_size).div_ceil(8) as usize;
        let Some(b) = usize::try_from(first)
            .ok()
            .and_then(|s| bytes.get(s..s.checked_add(need)?))
        else {
            return Value::Missing;
        };
        let raw = read_uint(b).checked_shr(shift).unwrap_or(0);
        let signed = matches!(
            self.resolve(m.type_id).and_then(|t| self.get(t)),
            Some(Type::Int { signed: true, .. }) | Some(Type::Enum { signed: true, .. })
        );
        Value::Int(sign_extend(raw, m.bit_size, signed))
    }

    /// Whether an array of `elem` is a string, by the type's name.
    fn string_kind(&self, elem: u32) -> Option<StringKind> {
        let mut id = elem;
        for _ in 0..MAX_DEPTH {
            match self.get(id)? {
                Type::Typedef { name, target } => {
                    if matches!(name.as_str(), "wchar_t" | "WCHAR" | "char16_t")
                        && self.size_of(*target) == Some(2)
                    {
                        return Some(StringKind::Utf16);
                    }
                    id = *target;
                }
                Type::Qualifier(t) => id = *t,
                Type::Int { name, size: 1, .. } if name == "char" => return Some(StringKind::Char),
                _ => return None,
            }
        }
        None
    }
}

enum StringKind {
    Char,
    Utf16,
}

fn read_uint(b: &[u8]) -> u128 {
    b.iter()
        .take(16)
        .rev()
        .fold(0u128, |acc, &x| acc << 8 | x as u128)
}

fn sign_extend(v: u128, bits: u32, signed: bool) -> i128 {
    if bits == 0 || bits >= 128 {
        return v as i128;
    }
    let masked = v & ((1u128 << bits) - 1);
    if signed && masked >> (bits - 1) & 1 == 1 {
        (masked | !((1u128 << bits) - 1)) as i128
    } else {
        masked as i128
    }
}

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i128),
    Bool(bool),
    Float(f64),
    Enum {
        name: String,
        value: i128,
    },
    Pointer(u64),
    Str(String),
    /// Raw bytes of a type without a decodable layout.
    Bytes(Vec<u8>),
    List(Vec<Value>),
    /// Members in declaration order.
    Struct(Vec<(String, Value)>),
    /// The bytes ended before this part of the type.
    Missing,
}

/// One step of a path into a value: a member name or an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPart {
    Field(String),
    Index(usize),
}

impl Value {
    /// The part of the value at `path` (an index into a byte array is
    /// that byte).
    pub fn at(&self, path: &[PathPart]) -> Option<Value> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self.clone());
        };
        match (self, first) {
            (Value::Struct(fields), PathPart::Field(f)) => {
                fields.iter().find(|(n, _)| n == f)?.1.at(rest)
            }
            (Value::List(items), PathPart::Index(i)) => items.get(*i)?.at(rest),
            (Value::Bytes(b), PathPart::Index(i)) if rest.is_empty() => {
                b.get(*i).map(|x| Value::Int(*x as i128))
            }
            _ => None,
        }
    }

    /// The value as an integer (ints, booleans, enums, pointers).
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(v) | Value::Enum { value: v, .. } => Some(*v),
            Value::Bool(b) => Some(*b as i128),
            Value::Pointer(p) => Some(*p as i128),
            _ => None,
        }
    }

    /// The member names of a struct value.
    pub fn field_names(&self) -> Vec<&str> {
        match self {
            Value::Struct(f) => f.iter().map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Value {
    /// bpftool-like: `{pid: 260, name: "cmd.exe", sid: [1, 5, 0]}`; byte
    /// lists as `[0x01, 0x05]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Enum { name, .. } => write!(f, "{name}"),
            Value::Pointer(p) => write!(f, "{p:#x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => {
                write!(f, "0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Struct(fields) => {
                write!(f, "{{")?;
                for (i, (n, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{n}: {v}")?;
                }
                write!(f, "}}")
            }
            Value::Missing => write!(f, "<missing>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Types {
        let path = crate::build::workspace_root().join("tests/bpf").join(name);
        let bytes = std::fs::read(&path).expect("a committed sample object");
        Types::from_elf(&bytes)
            .expect("BTF parses")
            .expect("built with -g")
    }

    #[test]
    fn decodes_records_by_type_name_with_strings_nesting_and_bit_fields() {
        let t = sample("process_records.o");
        let id = t.find("struct process_event").expect("the record type");
        assert_eq!(t.find("process_event"), Some(id), "the tag alone finds it");
        let size = t.size_of(id).unwrap() as usize;
        let mut b = vec![0u8; size];
        b[0] = 2; // kind = EVENT_EXIT
        b[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        b[8] = 0x10;
        b[24..28].copy_from_slice(&7u32.to_le_bytes()); // creator.pid
                                                        // has_sid:1, sid_bytes:7 at byte 48: has_sid=1, sid_bytes=12.
        b[48] = 1 | (12 << 1);
        b[56..61].copy_from_slice(b"exit\0");
        b[64..70].copy_from_slice(&[b'c', 0, b':', 0, 0xac, 0x20]); // "c:€"
        let v = t.decode(id, &b);
        let get = |p: &[&str]| {
            let path: Vec<PathPart> = p.iter().map(|s| PathPart::Field(s.to_string())).collect();
            v.at(&path).unwrap_or_else(|| panic!("{p:?} in {v}"))
        };
        assert_eq!(
            get(&["kind"]),
            Value::Enum {
                name: "EVENT_EXIT".into(),
                value: 2
            }
        );
        assert_eq!(get(&["exit_code"]), Value::Int(-5), "signed");
        assert_eq!(get(&["process_id"]), Value::Int(0x10));
        assert_eq!(get(&["creator", "pid"]), Value::Int(7), "nested");
        assert_eq!(get(&["has_sid"]), Value::Int(1));
        assert_eq!(get(&["sid_bytes"]), Value::Int(12), "bit field");
        assert_eq!(get(&["tag"]), Value::Str("exit".into()), "char array");
        assert_eq!(
            get(&["image"]),
            Value::Str("c:\u{20ac}".into()),
            "WCHAR array"
        );
        let text = v.to_string();
        assert!(
            text.starts_with("{kind: EVENT_EXIT, exit_code: -5, process_id: 16,"),
            "{text}"
        );
        // A short buffer decodes what is there.
        let short = t.decode(id, &b[..6]);
        assert_eq!(
            short.at(&[PathPart::Field("process_id".into())]),
            Some(Value::Missing)
        );
    }

    #[test]
    fn maps_have_their_key_and_value_types() {
        let t = sample("process_records.o");
        let (k, v) = t.map_types("children_by_parent");
        assert_eq!(t.name_of(k.unwrap()), "uint64_t");
        assert_eq!(t.name_of(v.unwrap()), "struct children");
        assert_eq!(t.map_types("process_events"), (None, None), "sizes only");
        let p = sample("process_test.o");
        let rec = p
            .find("process_record_t")
            .expect("a typedef of an anonymous struct");
        assert_eq!(p.size_of(rec), Some(792));
        let sid = p.decode(rec, &[0u8; 792]);
        assert!(
            matches!(
                sid.at(&[PathPart::Field("token_sid".into())]),
                Some(Value::Bytes(b)) if b.len() == 68
            ),
            "uint8_t arrays are bytes"
        );
    }

    /// A BTF section from (name_off, info, size_or_type, extra words).
    fn synthetic(types: &[(u32, u32, u32, Vec<u32>)]) -> Types {
        let mut tb = Vec::new();
        for (name, info, st, extra) in types {
            for w in [*name, *info, *st].iter().chain(extra) {
                tb.extend_from_slice(&w.to_le_bytes());
            }
        }
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, tb.len() as u32, tb.len() as u32, 1] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&tb);
        b.push(0);
        Types::parse(&b).expect("a well-formed section")
    }

    #[test]
    fn malformed_sections_are_errors_not_panics() {
        assert!(Types::parse(&[]).is_err());
        let mut h = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        h.extend_from_slice(&0u32.to_le_bytes()); // type_off
        h.extend_from_slice(&12u32.to_le_bytes()); // type_len
        h.extend_from_slice(&12u32.to_le_bytes()); // str_off
        h.extend_from_slice(&1u32.to_le_bytes()); // str_len
                                                  // A typedef to itself, then the string section.
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&(KIND_TYPEDEF << 24).to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.push(0);
        let t = Types::parse(&h).expect("parses");
        assert_eq!(t.resolve(1), None, "a loop is cut");
        assert_eq!(t.decode(1, &[1, 2]), Value::Missing);
        assert_eq!(t.size_of(1), None);
        let mut truncated = h.clone();
        truncated[12] = 200; // type_len past the end
        assert!(Types::parse(&truncated)
            .unwrap_err()
            .0
            .contains("out of range"));
        // Hostile types: an int with an out-of-range bit offset and size, a
        // struct that contains itself many times over.
        let t = synthetic(&[
            // 1: int, size 0xffff_ffff, bit offset 200, 8 bits
            (0, 1 << 24, 0xffff_ffff, vec![(200 << 16) | 8]),
            // 2: struct of 3 members of type 2 and one of type 1
            (
                0,
                (4 << 24) | 4,
                64,
                vec![0, 2, 0, 0, 2, 0, 0, 2, 0, 0, 1, 0],
            ),
            // 3: array of 0xffff_ffff structs 2
            (0, 3 << 24, 0, vec![2, 1, 0xffff_ffff]),
        ]);
        assert_eq!(
            t.decode(1, &[0xff; 64]),
            Value::Missing,
            "larger than the data"
        );
        // (anonymous members are inlined: the parts pile up in one struct)
        let Value::Struct(fields) = t.decode(2, &[0xff; 64]) else {
            panic!("a struct")
        };
        assert!(
            fields.len() <= MAX_DECODED_PARTS,
            "{} parts: the budget bounds the work",
            fields.len()
        );
        assert_eq!(t.size_of(3), Some(64 * 0xffff_ffff));
        let _ = t.decode(3, &[1; 100]).to_string();
        // A huge array of ints: what the data holds, then one Missing.
        let t = synthetic(&[
            (0, 1 << 24, 4, vec![32]),
            (0, 3 << 24, 0, vec![1, 1, 0xffff_ffff]),
        ]);
        assert_eq!(
            t.decode(2, &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0]),
            Value::List(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Missing,
                Value::Missing
            ])
        );
        // Decoding never panics on any prefix of a real record.
        let p = sample("process_records.o");
        let id = p.find("process_event").unwrap();
        for n in 0..300 {
            let _ = p.decode(id, &vec![0xff; n]).to_string();
        }
    }
}
