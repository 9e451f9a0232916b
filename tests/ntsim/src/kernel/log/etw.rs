//! TraceLogging: decodes the self-describing ETW events a TraceLogging
//! provider writes into named events with named, typed fields, as TDH and
//! WPA do on Windows.
//!
//! A TraceLogging event carries, besides its `EVENT_DESCRIPTOR` (level,
//! keyword, opcode), the provider's traits as a data descriptor of type 2
//! (a u16 size, then the provider name with its NUL) and the event's
//! metadata as a descriptor of type 1: a u16 size, the event tags (one to
//! four bytes, bit 7 chaining), the event name with its NUL, then per field
//! its name with its NUL, its input type (bit 7: an output type byte
//! follows, whose own bit 7 chains field tags) and, for arrays, nothing
//! more in the metadata (the count is in the data). The values, of type 0,
//! follow in field order.
//!
//! [`EtwWriteTransfer`](super::EtwWriteTransfer) decodes every event that
//! has metadata when it is written and records an `etw` violation when the
//! metadata or the data is malformed (a size that disagrees, a name without
//! its NUL, an unknown input type, data too short or too long): Windows
//! would store such an event and every decoder would fail on it.

use crate::kernel::types::GUID;
use std::fmt;

/// A field's value, by TraceLogging input type (and output type where it
/// changes the meaning: a `UINT8` shown as a boolean, an `INT32` or
/// `HEXINT32` shown as an NTSTATUS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Hex32(u32),
    Hex64(u64),
    Bool(bool),
    /// An NTSTATUS (output type NTSTATUS), as its 32 bits.
    NtStatus(u32),
    Guid(GUID),
    /// A narrow string (ANSI or UTF-8), or a wide one converted.
    Str(String),
    Binary(Vec<u8>),
    /// An array of one input type.
    Array(Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::I8(v) => write!(f, "{v}"),
            Value::U8(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::Hex32(v) => write!(f, "{v:#x}"),
            Value::Hex64(v) => write!(f, "{v:#x}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::NtStatus(v) => write!(f, "{v:#010x}"),
            Value::Guid(g) => write!(f, "{{{g}}}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Binary(b) => {
                write!(f, "0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Value::Array(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// One named field of a decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: Value,
}

/// A decoded TraceLogging event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlEvent {
    pub provider: GUID,
    /// The provider name from the event's traits.
    pub provider_name: String,
    pub name: String,
    pub level: u8,
    pub keyword: u64,
    pub opcode: u8,
    pub fields: Vec<Field>,
    /// Whether a session wanted it (see [`super::EtwEvent::enabled`]).
    pub enabled: bool,
}

impl TlEvent {
    /// The value of the field `name`.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The string field `name`.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.field(name)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The NTSTATUS field `name`, as the signed code.
    pub fn status(&self, name: &str) -> Option<i32> {
        match self.field(name)? {
            Value::NtStatus(s) => Some(*s as i32),
            _ => None,
        }
    }

    /// The GUID field `name`.
    pub fn guid(&self, name: &str) -> Option<GUID> {
        match self.field(name)? {
            Value::Guid(g) => Some(*g),
            _ => None,
        }
    }

    /// An unsigned integer field `name` of any width (hex ones included).
    pub fn uint(&self, name: &str) -> Option<u64> {
        match self.field(name)? {
            Value::U8(v) => Some(*v as u64),
            Value::U16(v) => Some(*v as u64),
            Value::U32(v) | Value::Hex32(v) => Some(*v as u64),
            Value::U64(v) | Value::Hex64(v) => Some(*v),
            _ => None,
        }
    }

    /// A signed integer field `name` of any width.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.field(name)? {
            Value::I8(v) => Some(*v as i64),
            Value::I16(v) => Some(*v as i64),
            Value::I32(v) => Some(*v as i64),
            Value::I64(v) => Some(*v),
            _ => None,
        }
    }
}

/// One line: `Provider/Name level=L keyword=0xK Field=value ...`.
impl fmt::Display for TlEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} level={} keyword={:#x}",
            self.provider_name, self.name, self.level, self.keyword
        )?;
        if self.opcode != 0 {
            write!(f, " opcode={}", self.opcode)?;
        }
        for field in &self.fields {
            write!(f, " {}={}", field.name, field.value)?;
        }
        Ok(())
    }
}

// Input types (TlgIn*).
const IN_UNICODESTRING: u8 = 1;
const IN_ANSISTRING: u8 = 2;
const IN_INT8: u8 = 3;
const IN_UINT8: u8 = 4;
const IN_INT16: u8 = 5;
const IN_UINT16: u8 = 6;
const IN_INT32: u8 = 7;
const IN_UINT32: u8 = 8;
const IN_INT64: u8 = 9;
const IN_UINT64: u8 = 10;
const IN_BOOL32: u8 = 13;
const IN_BINARY: u8 = 14;
const IN_GUID: u8 = 15;
const IN_HEXINT32: u8 = 20;
const IN_HEXINT64: u8 = 21;
const IN_COUNTEDSTRING: u8 = 22;
const IN_COUNTEDANSISTRING: u8 = 23;
const IN_COUNTEDBINARY: u8 = 25;
/// Bit 7 of the input type: an output type follows.
const IN_CHAIN: u8 = 0x80;
/// Bits 5-6: 0 scalar, 0x20 fixed-count array (count in metadata), 0x40
/// variable-count array (u16 count in data), 0x60 custom.
const IN_COUNT_MASK: u8 = 0x60;
const IN_CCOUNT: u8 = 0x20;
const IN_VCOUNT: u8 = 0x40;
const IN_TYPE_MASK: u8 = 0x1F;

// Output types that change the decoding.
const OUT_BOOLEAN: u8 = 3;
const OUT_NTSTATUS: u8 = 14;

/// Reads NUL-terminated text at `*at`, moving past the NUL.
fn cstr(bytes: &[u8], at: &mut usize, what: &str) -> Result<String, String> {
    let rest = bytes.get(*at..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| format!("{what} has no terminating NUL"))?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    *at += end + 1;
    Ok(s)
}

fn take<'a>(data: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], String> {
    let s = data
        .get(*at..*at + n)
        .ok_or_else(|| format!("the data ends inside {what} ({n} bytes at offset {at})"))?;
    *at += n;
    Ok(s)
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Decodes one scalar of `in_type` (without array bits).
fn scalar(
    in_type: u8,
    out_type: u8,
    data: &[u8],
    at: &mut usize,
    name: &str,
) -> Result<Value, String> {
    let what = format!("field {name:?}");
    Ok(match in_type {
        IN_INT8 => Value::I8(take(data, at, 1, &what)?[0] as i8),
        IN_UINT8 if out_type == OUT_BOOLEAN => Value::Bool(take(data, at, 1, &what)?[0] != 0),
        IN_UINT8 => Value::U8(take(data, at, 1, &what)?[0]),
        IN_INT16 => Value::I16(i16::from_le_bytes(le(take(data, at, 2, &what)?))),
        IN_UINT16 => Value::U16(u16::from_le_bytes(le(take(data, at, 2, &what)?))),
        IN_INT32 | IN_HEXINT32 if out_type == OUT_NTSTATUS => {
            Value::NtStatus(u32::from_le_bytes(le(take(data, at, 4, &what)?)))
        }
        IN_INT32 => Value::I32(i32::from_le_bytes(le(take(data, at, 4, &what)?))),
        IN_UINT32 => Value::U32(u32::from_le_bytes(le(take(data, at, 4, &what)?))),
        IN_HEXINT32 => Value::Hex32(u32::from_le_bytes(le(take(data, at, 4, &what)?))),
        IN_INT64 => Value::I64(i64::from_le_bytes(le(take(data, at, 8, &what)?))),
        IN_UINT64 => Value::U64(u64::from_le_bytes(le(take(data, at, 8, &what)?))),
        IN_HEXINT64 => Value::Hex64(u64::from_le_bytes(le(take(data, at, 8, &what)?))),
        IN_BOOL32 => Value::Bool(u32::from_le_bytes(le(take(data, at, 4, &what)?)) != 0),
        IN_GUID => {
            let b = take(data, at, 16, &what)?;
            Value::Guid(GUID {
                data1: u32::from_le_bytes(le(&b[0..4])),
                data2: u16::from_le_bytes(le(&b[4..6])),
                data3: u16::from_le_bytes(le(&b[6..8])),
                data4: le(&b[8..16]),
            })
        }
        IN_ANSISTRING => Value::Str(cstr(data, at, &what)?),
        IN_UNICODESTRING => {
            let mut units = Vec::new();
            loop {
                let u = u16::from_le_bytes(le(take(data, at, 2, &what)?));
                if u == 0 {
                    break;
                }
                units.push(u);
            }
            Value::Str(String::from_utf16_lossy(&units))
        }
        IN_COUNTEDANSISTRING => {
            let n = u16::from_le_bytes(le(take(data, at, 2, &what)?)) as usize;
            Value::Str(String::from_utf8_lossy(take(data, at, n, &what)?).into_owned())
        }
        IN_COUNTEDSTRING => {
            let n = u16::from_le_bytes(le(take(data, at, 2, &what)?)) as usize;
            if !n.is_multiple_of(2) {
                return Err(format!("{what}: a UTF-16 string of {n} bytes"));
            }
            let b = take(data, at, n, &what)?;
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .collect();
            Value::Str(String::from_utf16_lossy(&units))
        }
        IN_BINARY | IN_COUNTEDBINARY => {
            let n = u16::from_le_bytes(le(take(data, at, 2, &what)?)) as usize;
            Value::Binary(take(data, at, n, &what)?.to_vec())
        }
        other => {
            return Err(format!(
                "{what} has input type {other}, which ntsim does not decode"
            ))
        }
    })
}

/// What an event carries besides its TraceLogging chunks.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub provider: GUID,
    pub level: u8,
    pub keyword: u64,
    pub opcode: u8,
    pub enabled: bool,
}

/// Decodes an event from its header, the provider traits (type 2 chunks),
/// the event metadata (type 1) and the data (type 0).
///
/// # Errors
/// What is malformed.
pub fn decode(header: Header, traits: &[u8], meta: &[u8], data: &[u8]) -> Result<TlEvent, String> {
    let Header {
        provider,
        level,
        keyword,
        opcode,
        enabled,
    } = header;
    let provider_name = if traits.is_empty() {
        String::new()
    } else {
        let declared = traits
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        if declared != Some(traits.len()) {
            return Err(format!(
                "the provider traits declare {declared:?} bytes but have {}",
                traits.len()
            ));
        }
        cstr(traits, &mut 2, "the provider name")?
    };
    let declared = meta
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    if declared != Some(meta.len()) {
        return Err(format!(
            "the event metadata declares {declared:?} bytes but has {}",
            meta.len()
        ));
    }
    let mut at = 2;
    // Event tags: bytes while bit 7 chains, at most four.
    for i in 0.. {
        let b = *meta
            .get(at)
            .ok_or("the event metadata ends inside its tags")?;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err("the event tags run past four bytes".into());
        }
    }
    let name = cstr(meta, &mut at, "the event name")?;
    let mut fields = Vec::new();
    let mut d = 0;
    while at < meta.len() {
        let field = cstr(meta, &mut at, "a field name")?;
        let in_byte = *meta
            .get(at)
            .ok_or_else(|| format!("field {field:?} has no input type"))?;
        at += 1;
        let mut out_type = 0;
        if in_byte & IN_CHAIN != 0 {
            let out_byte = *meta
                .get(at)
                .ok_or_else(|| format!("field {field:?} has no output type"))?;
            at += 1;
            out_type = out_byte & 0x7F;
            if out_byte & 0x80 != 0 {
                // Field tags, chained like the event's.
                for i in 0.. {
                    let b = *meta
                        .get(at)
                        .ok_or_else(|| format!("field {field:?} ends inside its tags"))?;
                    at += 1;
                    if b & 0x80 == 0 {
                        break;
                    }
                    if i == 3 {
                        return Err(format!("field {field:?}: tags run past four bytes"));
                    }
                }
            }
        }
        let in_type = in_byte & IN_TYPE_MASK;
        let value = match in_byte & IN_COUNT_MASK {
            0 => scalar(in_type, out_type, data, &mut d, &field)?,
            IN_CCOUNT | IN_VCOUNT => {
                let count = if in_byte & IN_COUNT_MASK == IN_CCOUNT {
                    let b = take(meta, &mut at, 2, "a fixed array count")?;
                    u16::from_le_bytes([b[0], b[1]])
                } else {
                    let b = take(data, &mut d, 2, &format!("the count of {field:?}"))?;
                    u16::from_le_bytes([b[0], b[1]])
                };
                let items = (0..count)
                    .map(|_| scalar(in_type, out_type, data, &mut d, &field))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::Array(items)
            }
            _ => return Err(format!("field {field:?} is a custom-serialized field")),
        };
        fields.push(Field { name: field, value });
    }
    if d != data.len() {
        return Err(format!(
            "event {name:?}: its fields take {d} bytes of data but the event carries {}",
            data.len()
        ));
    }
    Ok(TlEvent {
        provider,
        provider_name,
        name,
        level,
        keyword,
        opcode,
        fields,
        enabled,
    })
}

#[cfg(test)]
mod tests;
