//! Loading BPF ELF objects built by `clang -O2 -g -target bpf`.
//!
//! What is read: program sections (every executable section but `.text`,
//! one program per global function symbol), `.text` functions reached by
//! bpf-to-bpf calls, BTF map definitions in `.maps`, legacy definitions in
//! `maps`, global data (`.data*`, `.rodata*`, `.bss*`, each made a
//! one-element array map as libbpf does) and the relocations that refer to
//! them (`R_BPF_64_64` on `lddw`, `R_BPF_64_32` on calls). Anything else a
//! program needs is refused with an [`ObjectError`].
//!
//! A program is linked like libbpf links it: its own section's code, then,
//! if it calls into `.text`, the whole of `.text` appended once, with call
//! offsets fixed to the appended copy. Map references become the map's
//! address (the `Arc<Map>` pointer) and global-data references the address
//! inside the data map's value, so the interpreter needs no map table.

use super::maps::{map_type, Map, MapDef, MAP_MEMORY_LIMIT};
use super::program::Program;
use super::vm::{self, Insn, OP_CALL, OP_LDDW, PSEUDO_CALL};
use crate::kernel::types::GUID;
use goblin::elf::{section_header as sh, sym, Elf};
use std::collections::HashMap;
use std::sync::Arc;

const EM_BPF: u16 = 247;
const R_BPF_64_64: u32 = 1;
const R_BPF_64_32: u32 = 10;

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("not a BPF ELF object: {0}")]
    NotBpf(String),
    #[error("malformed object: {0}")]
    Malformed(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A program section no registered prefix matches (`registered`: the
    /// prefixes of the section table, in order).
    #[error("section \"{section}\" is not in the eBPF store (registered sections: {})", if registered.is_empty() { "none".to_string() } else { registered.join(", ") })]
    UnknownSection {
        section: String,
        registered: Vec<String>,
    },
}

fn malformed(s: impl Into<String>) -> ObjectError {
    ObjectError::Malformed(s.into())
}

/// The section-name -> (program type, attach type) table of the eBPF store
/// (`SectionData`), matched by longest prefix.
#[derive(Clone, Debug, Default)]
pub struct SectionMap {
    entries: Vec<(String, GUID, GUID)>,
}

impl SectionMap {
    pub fn new() -> SectionMap {
        SectionMap::default()
    }

    /// Adds a prefix (as extensions register it in the store).
    pub fn add(&mut self, prefix: &str, program_type: GUID, attach_type: GUID) -> &mut Self {
        self.entries
            .push((prefix.to_string(), program_type, attach_type));
        self
    }

    /// The registered prefixes, in the order they were added.
    pub fn prefixes(&self) -> Vec<String> {
        self.entries.iter().map(|(p, _, _)| p.clone()).collect()
    }

    /// The types for a section: the entry with the longest prefix of `section`.
    pub fn resolve(&self, section: &str) -> Option<(GUID, GUID)> {
        self.entries
            .iter()
            .filter(|(p, _, _)| section.starts_with(p.as_str()))
            .max_by_key(|(p, _, _)| p.len())
            .map(|(_, p, a)| (*p, *a))
    }
}

/// A loaded object: its programs and maps.
#[derive(Debug)]
pub struct Object {
    pub programs: Vec<Arc<Program>>,
    pub maps: Vec<Arc<Map>>,
}

impl Object {
    /// Parses and links an object. Program types come from `sections` (as
    /// `ebpfapi.dll` takes them from the eBPF store); a program section that
    /// matches no prefix fails the load ([`ObjectError::UnknownSection`]).
    pub fn load(bytes: &[u8], sections: &SectionMap) -> Result<Object, ObjectError> {
        Loader::new(bytes)?.load(sections)
    }

    pub fn program(&self, name: &str) -> Option<&Arc<Program>> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn map(&self, name: &str) -> Option<&Arc<Map>> {
        self.maps.iter().find(|m| m.name() == name)
    }
}

struct Loader<'a> {
    bytes: &'a [u8],
    elf: Elf<'a>,
}

/// What a relocation's symbol refers to.
enum Target {
    Map(usize),
    Data(usize, u64),
}

impl<'a> Loader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ObjectError> {
        let elf = Elf::parse(bytes).map_err(|e| ObjectError::NotBpf(e.to_string()))?;
        if elf.header.e_machine != EM_BPF {
            return Err(ObjectError::NotBpf(format!(
                "machine {} is not EM_BPF (247)",
                elf.header.e_machine
            )));
        }
        if !elf.is_64 || !elf.little_endian {
            return Err(ObjectError::NotBpf(
                "only 64-bit little-endian objects are supported".into(),
            ));
        }
        Ok(Loader { bytes, elf })
    }

    fn section_name(&self, idx: usize) -> &str {
        self.elf
            .section_headers
            .get(idx)
            .and_then(|s| self.elf.shdr_strtab.get_at(s.sh_name))
            .unwrap_or("")
    }

    fn section_data(&self, idx: usize) -> Result<&'a [u8], ObjectError> {
        let s = &self.elf.section_headers[idx];
        if s.sh_type == sh::SHT_NOBITS {
            return Ok(&[]);
        }
        let start = s.sh_offset as usize;
        let end = start
            .checked_add(s.sh_size as usize)
            .ok_or_else(|| malformed("section size"))?;
        self.bytes.get(start..end).ok_or_else(|| {
            malformed(format!(
                "section {} out of the file",
                self.section_name(idx)
            ))
        })
    }

    fn sym_name(&self, s: &sym::Sym) -> &str {
        self.elf.strtab.get_at(s.st_name).unwrap_or("")
    }

    fn load(self, sections: &SectionMap) -> Result<Object, ObjectError> {
        // Maps: BTF-defined, legacy, then global data.
        let mut maps: Vec<Arc<Map>> = Vec::new();
        // (section index, symbol offset) -> map index, for legacy and BTF maps.
        let mut map_by_sym: HashMap<(usize, u64), usize> = HashMap::new();
        let mut data_maps: HashMap<usize, usize> = HashMap::new();
        let btf = self
            .find_section(".BTF")
            .map(|i| self.section_data(i))
            .transpose()?;
        for (idx, shdr) in self.elf.section_headers.iter().enumerate() {
            let name = self.section_name(idx).to_string();
            if name == ".maps" {
                let Some(btf) = btf else {
                    return Err(ObjectError::Unsupported(".maps without .BTF".into()));
                };
                let defs = super::btf::map_defs(btf)?;
                for s in self
                    .elf
                    .syms
                    .iter()
                    .filter(|s| s.st_shndx == idx && s.st_type() == sym::STT_OBJECT)
                {
                    let mname = self.sym_name(&s).to_string();
                    symbol_range(&s, shdr.sh_size, &mname)?;
                    let def = defs
                        .get(&mname)
                        .ok_or_else(|| malformed(format!("map {mname} has no BTF definition")))?;
                    let map = Map::new(&mname, def.clone()).map_err(ObjectError::Unsupported)?;
                    map_by_sym.insert((idx, s.st_value), maps.len());
                    maps.push(Arc::new(map));
                }
            } else if name == "maps" {
                let data = self.section_data(idx)?;
                for s in self
                    .elf
                    .syms
                    .iter()
                    .filter(|s| s.st_shndx == idx && s.st_type() == sym::STT_OBJECT)
                {
                    let mname = self.sym_name(&s).to_string();
                    let (off, _) = symbol_range(&s, data.len() as u64, &mname)?;
                    let field = |i: usize| -> Result<u32, ObjectError> {
                        off.checked_add(i * 4)
                            .and_then(|at| data.get(at..at.checked_add(4)?))
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(|| malformed(format!("legacy map {mname} truncated")))
                    };
                    if s.st_size < 16 {
                        return Err(malformed(format!(
                            "legacy map {mname} is {} bytes",
                            s.st_size
                        )));
                    }
                    let fields = (s.st_size as usize / 4).min(8);
                    let def = MapDef {
                        map_type: field(0)?,
                        key_size: field(1)?,
                        value_size: field(2)?,
                        max_entries: field(3)?,
                        map_flags: 0,
                        pinning: if fields > 5 { field(5)? } else { 0 },
                    };
                    if fields > 4 && field(4)? != 0 {
                        return Err(ObjectError::Unsupported(format!(
                            "legacy map {mname}: inner maps"
                        )));
                    }
                    let map = Map::new(&mname, def).map_err(ObjectError::Unsupported)?;
                    map_by_sym.insert((idx, s.st_value), maps.len());
                    maps.push(Arc::new(map));
                }
            } else if shdr.sh_flags as u32 & sh::SHF_ALLOC != 0
                && shdr.sh_flags as u32 & sh::SHF_EXECINSTR == 0
                && [".data", ".rodata", ".bss"]
                    .iter()
                    .any(|p| name.starts_with(p))
            {
                if shdr.sh_size == 0 {
                    continue;
                }
                let read_only = shdr.sh_flags as u32 & sh::SHF_WRITE == 0;
                let def = MapDef {
                    map_type: map_type::ARRAY,
                    key_size: 4,
                    value_size: u32::try_from(shdr.sh_size)
                        .map_err(|_| malformed("data section size"))?,
                    max_entries: 1,
                    map_flags: 0,
                    pinning: 0,
                };
                let map =
                    Map::with_access(&name, def, read_only).map_err(ObjectError::Unsupported)?;
                map.init_data(self.section_data(idx)?);
                data_maps.insert(idx, maps.len());
                maps.push(Arc::new(map));
            }
        }

        let total = maps
            .iter()
            .fold(0u64, |sum, m| sum.saturating_add(m.def().declared_memory()));
        if total > MAP_MEMORY_LIMIT {
            return Err(ObjectError::Unsupported(format!(
                "the object's maps declare {total} bytes together, over ntsim's limit of \
                 {MAP_MEMORY_LIMIT} bytes"
            )));
        }

        // Relocations by target section.
        let mut relocs: HashMap<usize, Vec<goblin::elf::Reloc>> = HashMap::new();
        for (rel_idx, rs) in &self.elf.shdr_relocs {
            let target = self
                .elf
                .section_headers
                .get(*rel_idx)
                .ok_or_else(|| malformed(format!("relocation section {rel_idx}")))?
                .sh_info as usize;
            relocs.entry(target).or_default().extend(rs.iter());
        }

        let text_idx = self.find_section(".text");
        let text = match text_idx {
            Some(i) => decode(self.section_data(i)?, ".text")?,
            None => Vec::new(),
        };

        let mut programs = Vec::new();
        for (idx, shdr) in self.elf.section_headers.iter().enumerate() {
            let sname = self.section_name(idx);
            if shdr.sh_type != sh::SHT_PROGBITS
                || shdr.sh_flags as u32 & sh::SHF_EXECINSTR == 0
                || Some(idx) == text_idx
                || shdr.sh_size == 0
            {
                continue;
            }
            let code = decode(self.section_data(idx)?, sname)?;
            let types =
                Some(
                    sections
                        .resolve(sname)
                        .ok_or_else(|| ObjectError::UnknownSection {
                            section: sname.to_string(),
                            registered: sections.prefixes(),
                        })?,
                );
            let mut funcs: Vec<sym::Sym> = self
                .elf
                .syms
                .iter()
                .filter(|s| {
                    s.st_shndx == idx
                        && s.st_type() == sym::STT_FUNC
                        && s.st_bind() == sym::STB_GLOBAL
                })
                .collect();
            funcs.sort_by_key(|s| s.st_value);
            if funcs.is_empty() {
                return Err(malformed(format!(
                    "section {sname} has code but no function symbol"
                )));
            }
            for f in &funcs {
                let name = self.sym_name(f).to_string();
                let (start, len) = function_range(f, code.len(), &name, sname)?;
                let resolve =
                    |r: &goblin::elf::Reloc| self.reloc_target(r, &map_by_sym, &data_maps);
                let insns = self.link(
                    &name,
                    (idx, &code, start, len),
                    text_idx.map(|t| (t, &text)),
                    &relocs,
                    &resolve,
                    &maps,
                )?;
                let mut i = 0;
                while i < insns.len() {
                    let insn = &insns[i];
                    if insn.op == OP_LDDW {
                        if i + 1 >= insns.len() || insns[i + 1].op != 0 {
                            return Err(malformed(format!(
                                "program {name}: incomplete lddw at {i}"
                            )));
                        }
                        i += 2;
                        continue;
                    }
                    if !vm::supported(insn) {
                        return Err(ObjectError::Unsupported(format!(
                            "program {name}: instruction {i} (opcode {:#04x})",
                            insn.op
                        )));
                    }
                    i += 1;
                }
                let referenced: Vec<Arc<Map>> = maps.to_vec();
                programs.push(Arc::new(Program {
                    name,
                    section: sname.to_string(),
                    program_type: types.map(|t| t.0),
                    attach_type: types.map(|t| t.1),
                    insns,
                    maps: referenced,
                }));
            }
        }
        if programs.is_empty() {
            return Err(malformed("no program section"));
        }
        Ok(Object { programs, maps })
    }

    fn find_section(&self, name: &str) -> Option<usize> {
        (0..self.elf.section_headers.len()).find(|&i| self.section_name(i) == name)
    }

    fn reloc_target(
        &self,
        r: &goblin::elf::Reloc,
        map_by_sym: &HashMap<(usize, u64), usize>,
        data_maps: &HashMap<usize, usize>,
    ) -> Result<Target, ObjectError> {
        let s = self
            .elf
            .syms
            .get(r.r_sym)
            .ok_or_else(|| malformed(format!("relocation names symbol {}", r.r_sym)))?;
        if let Some(&m) = map_by_sym.get(&(s.st_shndx, s.st_value)) {
            return Ok(Target::Map(m));
        }
        if let Some(&m) = data_maps.get(&s.st_shndx) {
            // Section symbols carry the offset in the instruction; variable
            // symbols in st_value.
            let base = if s.st_type() == sym::STT_SECTION {
                0
            } else {
                s.st_value
            };
            return Ok(Target::Data(m, base));
        }
        Err(ObjectError::Unsupported(format!(
            "relocation against {} in section {}",
            self.sym_name(&s),
            self.section_name(s.st_shndx)
        )))
    }

    /// Builds one program's instruction stream.
    #[allow(clippy::type_complexity)]
    fn link(
        &self,
        name: &str,
        (sec, code, start, len): (usize, &Vec<Insn>, usize, usize),
        text: Option<(usize, &Vec<Insn>)>,
        relocs: &HashMap<usize, Vec<goblin::elf::Reloc>>,
        resolve: &dyn Fn(&goblin::elf::Reloc) -> Result<Target, ObjectError>,
        maps: &[Arc<Map>],
    ) -> Result<Vec<Insn>, ObjectError> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= code.len())
            .ok_or_else(|| malformed("function size"))?;
        let mut out: Vec<Insn> = code[start..end].to_vec();
        let text_base = out.len();
        // Does anything call into .text? (a relocated call, or none at all)
        let needs_text = text.is_some_and(|(t, _)| {
            relocs.get(&sec).into_iter().flatten().any(|r| {
                let o = r.r_offset as usize / 8;
                o >= start
                    && o < end
                    && r.r_type == R_BPF_64_32
                    && self.elf.syms.get(r.r_sym).is_some_and(|s| s.st_shndx == t)
            })
        });
        if needs_text {
            if let Some((_, t)) = text {
                out.extend_from_slice(t);
            }
        }
        // (section, first instruction of that section in `out`, range in section)
        let mut parts = vec![(sec, start, 0usize, len)];
        if needs_text {
            if let Some((t, tcode)) = text {
                parts.push((t, 0, text_base, tcode.len()));
            }
        }
        for &(s, sec_start, out_base, plen) in &parts {
            for r in relocs.get(&s).into_iter().flatten() {
                let o = r.r_offset as usize;
                if !o.is_multiple_of(8) {
                    return Err(malformed(format!(
                        "{name}: misaligned relocation at {o:#x}"
                    )));
                }
                let at = o / 8;
                if at < sec_start || at >= sec_start + plen {
                    continue;
                }
                let i = out_base + at - sec_start;
                match r.r_type {
                    R_BPF_64_64 => {
                        if out[i].op != OP_LDDW || i + 1 >= out.len() {
                            return Err(malformed(format!(
                                "{name}: R_BPF_64_64 on a non-lddw instruction {i}"
                            )));
                        }
                        let addr = match resolve(r)? {
                            Target::Map(m) => Arc::as_ptr(&maps[m]) as u64,
                            Target::Data(m, base) => {
                                let off = base
                                    .checked_add(out[i].imm as u32 as u64)
                                    .filter(|&off| off < maps[m].def().value_size as u64)
                                    .ok_or_else(|| {
                                        malformed(format!(
                                            "{name}: global data offset {base} + {} out of range",
                                            out[i].imm as u32
                                        ))
                                    })?;
                                maps[m]
                                    .data_address()
                                    .ok_or_else(|| malformed("data map"))?
                                    + off
                            }
                        };
                        out[i].src = 0;
                        out[i].imm = addr as u32 as i32;
                        out[i + 1].imm = (addr >> 32) as u32 as i32;
                    }
                    R_BPF_64_32 => {
                        if out[i].op != OP_CALL || out[i].src != PSEUDO_CALL {
                            return Err(malformed(format!(
                                "{name}: R_BPF_64_32 on a non-call instruction {i}"
                            )));
                        }
                        let s = self
                            .elf
                            .syms
                            .get(r.r_sym)
                            .ok_or_else(|| malformed("call symbol"))?;
                        let Some((_, tcode)) = text.filter(|(t, _)| *t == s.st_shndx) else {
                            return Err(ObjectError::Unsupported(format!(
                                "{name}: call to {} outside .text",
                                self.sym_name(&s)
                            )));
                        };
                        // st_value / 8 < 2^61: no overflow in i64.
                        let target = (s.st_value / 8) as i64 + out[i].imm as i64 + 1;
                        if target < 0 || target >= tcode.len() as i64 {
                            return Err(malformed(format!(
                                "{name}: call at instruction {i} to {target}, outside .text \
                                 ({} instructions)",
                                tcode.len()
                            )));
                        }
                        let target_out = text_base as i64 + target;
                        out[i].imm = i32::try_from(target_out - (i as i64 + 1))
                            .map_err(|_| malformed("call offset"))?;
                    }
                    t => {
                        return Err(ObjectError::Unsupported(format!(
                            "{name}: relocation type {t} at instruction {i}"
                        )))
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The byte range `[st_value, st_value + st_size)` of a data symbol, checked
/// to lie inside its section of `section_size` bytes.
fn symbol_range(
    s: &sym::Sym,
    section_size: u64,
    name: &str,
) -> Result<(usize, usize), ObjectError> {
    s.st_value
        .checked_add(s.st_size)
        .filter(|&end| end <= section_size)
        .map(|_| (s.st_value as usize, s.st_size as usize))
        .ok_or_else(|| {
            malformed(format!(
                "symbol {name} ({} bytes at {:#x}) lies outside its section ({section_size} bytes)",
                s.st_size, s.st_value
            ))
        })
}

/// A function symbol's instructions `(first, count)` in its section of
/// `insns` instructions: 8-byte aligned and inside the section. A symbol
/// without a size runs to the end of the section.
fn function_range(
    f: &sym::Sym,
    insns: usize,
    name: &str,
    section: &str,
) -> Result<(usize, usize), ObjectError> {
    let outside = || {
        malformed(format!(
            "function {name} ({} bytes at {:#x}) lies outside section {section} ({} bytes)",
            f.st_size,
            f.st_value,
            insns * 8
        ))
    };
    if !f.st_value.is_multiple_of(8) || !f.st_size.is_multiple_of(8) {
        return Err(malformed(format!(
            "function {name}: offset {:#x} or size {} is not a whole number of instructions",
            f.st_value, f.st_size
        )));
    }
    let start = usize::try_from(f.st_value / 8).map_err(|_| outside())?;
    let rest = insns.checked_sub(start).ok_or_else(outside)?;
    let len = if f.st_size > 0 {
        usize::try_from(f.st_size / 8)
            .ok()
            .filter(|&n| n <= rest)
            .ok_or_else(outside)?
    } else {
        rest
    };
    if len == 0 {
        return Err(malformed(format!("function {name} has no instructions")));
    }
    Ok((start, len))
}

fn decode(bytes: &[u8], section: &str) -> Result<Vec<Insn>, ObjectError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(malformed(format!(
            "section {section}: size is not a multiple of 8"
        )));
    }
    Ok(bytes.chunks_exact(8).map(Insn::decode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY_MAPS: &[u8] = include_bytes!("../../../bpf/legacy_maps.o");
    const TAIL_CALL: &[u8] = include_bytes!("../../../bpf/tail_call.o");

    /// The sections of the test objects (`SEC("sample...")`), registered as
    /// an extension would register them in the store.
    fn sections() -> SectionMap {
        let mut s = SectionMap::new();
        s.add("sample", GUID::default(), GUID::default());
        s
    }

    /// A copy of `object` with symbol `name`'s st_value and st_size replaced.
    fn patch_symbol(object: &[u8], name: &str, value: u64, size: u64) -> Vec<u8> {
        let elf = Elf::parse(object).unwrap();
        let symtab = elf
            .section_headers
            .iter()
            .find(|s| s.sh_type == sh::SHT_SYMTAB)
            .expect("a symbol table");
        let index = elf
            .syms
            .iter()
            .position(|s| elf.strtab.get_at(s.st_name) == Some(name))
            .unwrap_or_else(|| panic!("no symbol {name}"));
        // Elf64_Sym: st_name 4, st_info 1, st_other 1, st_shndx 2, st_value 8, st_size 8.
        let at = symtab.sh_offset as usize + index * 24;
        let mut out = object.to_vec();
        out[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&size.to_le_bytes());
        out
    }

    /// A copy of `object` whose one BTF array type of `from` elements
    /// (`__uint(x, from)`) has `to` elements.
    fn patch_btf_array(object: &[u8], from: u32, to: u32) -> Vec<u8> {
        let elf = Elf::parse(object).unwrap();
        let btf = elf
            .section_headers
            .iter()
            .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".BTF"))
            .expect("a .BTF section");
        let (start, end) = (
            btf.sh_offset as usize,
            (btf.sh_offset + btf.sh_size) as usize,
        );
        // An anonymous ARRAY type: name_off 0, info (kind 3 << 24), size 0,
        // element type, index type, element count.
        let head = [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0];
        let hits: Vec<usize> = (start..end - 24)
            .filter(|&i| object[i..i + 12] == head && object[i + 20..i + 24] == from.to_le_bytes())
            .collect();
        assert_eq!(hits.len(), 1, "one array of {from} elements in the BTF");
        let mut out = object.to_vec();
        out[hits[0] + 20..hits[0] + 24].copy_from_slice(&to.to_le_bytes());
        out
    }

    fn malformed_message(result: Result<Object, ObjectError>) -> String {
        match result {
            Err(ObjectError::Malformed(m)) => m,
            other => panic!("expected a Malformed error, got {other:?}"),
        }
    }

    #[test]
    fn the_unpatched_objects_load() {
        Object::load(LEGACY_MAPS, &sections()).expect("legacy_maps.o");
        Object::load(TAIL_CALL, &sections()).expect("tail_call.o");
    }

    /// Fuzzing found this: a function symbol without a size whose st_value
    /// lies far past its section made `code.len() - start` overflow (a
    /// panic in a debug build, a huge slice in a release one).
    #[test]
    fn function_symbol_far_outside_its_section_is_malformed() {
        for (value, size) in [
            (0xffff_ffff_ffff_fff8, 0),
            (0x8000, 0),
            (0x8000, 8),
            (0xffff_ffff_ffff_fff8, 0xffff_ffff_ffff_fff8),
            (0, 0x1000),
        ] {
            let bad = patch_symbol(LEGACY_MAPS, "count", value, size);
            let m = malformed_message(Object::load(&bad, &sections()));
            assert!(
                m.contains("function count") && m.contains("lies outside section sample"),
                "{value:#x}/{size}: {m}"
            );
        }
        let bad = patch_symbol(LEGACY_MAPS, "count", 4, 0);
        let m = malformed_message(Object::load(&bad, &sections()));
        assert!(m.contains("not a whole number of instructions"), "{m}");
    }

    /// The same for a legacy map definition: `off + i * 4` overflowed.
    #[test]
    fn legacy_map_symbol_outside_its_section_is_malformed() {
        for (value, size) in [(0xffff_ffff_ffff_fffc, 32), (8, 32), (0, u64::MAX)] {
            let bad = patch_symbol(LEGACY_MAPS, "counters", value, size);
            let m = malformed_message(Object::load(&bad, &sections()));
            assert!(
                m.contains("symbol counters") && m.contains("outside its section"),
                "{value:#x}/{size}: {m}"
            );
        }
    }

    /// Fuzzing found this: a BTF map definition with `max_entries`
    /// 0xffffffff made ntsim allocate a 34 GB program array (issue 9 says
    /// ~37 GB), and the allocation failure aborted the process. It is
    /// refused by the map memory limit, naming the map.
    #[test]
    fn btf_max_entries_over_the_map_memory_limit_is_refused() {
        let bad = patch_btf_array(TAIL_CALL, 4, u32::MAX);
        match Object::load(&bad, &sections()) {
            Err(ObjectError::Unsupported(m)) => assert!(
                m.starts_with("map progs: declares ") && m.contains("over ntsim's limit"),
                "{m}"
            ),
            other => panic!("expected the map limit error, got {other:?}"),
        }
    }
}
