//! The eBPF store: at load the driver registers its program types and
//! section names under `\Registry\Machine\Software\eBPF\Providers`, where
//! eBPF for Windows' user-mode side (`ebpfapi.dll`, bpftool, `netsh ebpf`,
//! bpf2c) reads them.
//!
//! What is written is what eBPF for Windows' store helper
//! (`ebpf_store_update_program_information_array`,
//! `ebpf_store_update_section_information`) writes for the same
//! `ebpf_program_info_t` and `ebpf_program_section_info_t`, and is taken
//! from the very structures the driver publishes through NMR (a
//! [`Provider`] holds `&'static` references to the [`ProgramType`] and
//! [`AttachType`] statics), so the two cannot drift:
//!
//! ```text
//! Providers\ProgramData\{program-type-guid}   Version, Size, HelperCount (DWORD)
//!     TypeDescriptor                          Version, Size, Name (REG_SZ), ContextDescriptor
//!                                             (REG_BINARY, 16), BpfProgType, IsPrivileged (DWORD)
//!     Helpers\<helper name>                   Version, Size, Prototype (REG_BINARY, 28:
//!                                             helper_id, return_type, arguments[5]),
//!                                             ReallocatePacket (DWORD)
//! Providers\SectionData\<section prefix>      Version, Size, ProgramType, AttachType
//!                                             (REG_BINARY GUID, 16), BpfProgType, BpfAttachType
//! ```
//!
//! GUID key names are `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, lowercase
//! (`UuidToString` in braces). The store helper first converts program
//! information to the current version, so `Version`/`Size` of the program
//! information, the type descriptor and the helpers are the current ones
//! (1 / 64, 1 / 61, 1 / 66); a section's are those of its own header
//! (1 / 56). `Helpers` is absent when the type has no helper.
//!
//! **Order and failures.** Readers take a key only when the values they
//! require are all there (`store_helper_internal.cpp`), and the values
//! written last are required ones: a program type's `HelperCount`, a
//! section's `ProgramType`. Each of the driver's own keys is deleted (with
//! its subkeys) and rewritten, so whatever an older driver wrote under it
//! (a helper that was removed, a value no longer written) is gone, and a
//! write that fails part-way leaves a key that readers skip, never one they
//! misread. A program type is written before the sections that point at
//! it. Sections under `SectionData` whose `ProgramType` is one of this
//! driver's program types and whose name the driver no longer provides are
//! deleted. A program type the driver no longer provides at all is not
//! recognised (nothing marks its key as this driver's); uninstall removes
//! it (docs/installing.md).
//!
//! A store write that fails does not fail the driver load: programs can
//! still be loaded by explicit program type. [`update`] logs the status.
//! The store is left in place at unload, as upstream's export tool leaves
//! it (offline tools need it).
//!
//! eBPF for Windows reads `HKCU\Software\eBPF\Providers` when that key
//! exists and `HKLM` only otherwise, and its MSI gives the installing user
//! an HKCU store; the driver writes HKLM only, so copying its keys into
//! HKCU is an install step (docs/installing.md, which also says why the
//! driver does not write user hives).

use crate::ebpf::abi::*;
use crate::ebpf::program::{AttachType, ProgramType};
use crate::nt::GUID;

/// The longest section prefix eBPF for Windows' reader enumerates: it reads
/// `SectionData` subkey names into a 38-character buffer that includes the
/// terminating NUL, and skips longer names.
pub const SECTION_NAME_MAX: usize = 37;

/// `ebpf_program_section_info_t`'s current size (`bpf_attach_type` at 52).
pub const EBPF_PROGRAM_SECTION_INFORMATION_SIZE: u32 = 56;

/// A GUID key name: `{` 36 characters `}`.
pub const GUID_STRING_LENGTH: usize = 38;

/// Key and value names (eBPF for Windows' `ebpf_windows.h`).
pub mod names {
    // Each constant's value is its documentation: the registry name.
    #![allow(missing_docs)]
    /// The store's parent key (created if missing).
    pub const EBPF_ROOT: &str = "\\Registry\\Machine\\Software\\eBPF";
    /// The store, below [`EBPF_ROOT`].
    pub const PROVIDERS: &str = "Providers";
    pub const PROGRAM_DATA: &str = "ProgramData";
    pub const SECTION_DATA: &str = "SectionData";
    pub const TYPE_DESCRIPTOR: &str = "TypeDescriptor";
    pub const HELPERS: &str = "Helpers";
    pub const VERSION: &str = "Version";
    pub const SIZE: &str = "Size";
    pub const HELPER_COUNT: &str = "HelperCount";
    pub const NAME: &str = "Name";
    pub const CONTEXT_DESCRIPTOR: &str = "ContextDescriptor";
    pub const BPF_PROG_TYPE: &str = "BpfProgType";
    pub const BPF_ATTACH_TYPE: &str = "BpfAttachType";
    pub const IS_PRIVILEGED: &str = "IsPrivileged";
    pub const PROTOTYPE: &str = "Prototype";
    pub const REALLOCATE_PACKET: &str = "ReallocatePacket";
    pub const PROGRAM_TYPE: &str = "ProgramType";
    pub const ATTACH_TYPE: &str = "AttachType";
}

/// One section prefix of a program type and the attach type it selects.
pub struct Section {
    name: &'static str,
    attach: &'static AttachType,
}

impl Section {
    /// Section prefix `name` attaches through `attach`. `name` is 1 to
    /// [`SECTION_NAME_MAX`] printable ASCII characters without `\` (a
    /// registry key name); checked at compile time in a `static`.
    pub const fn new(name: &'static str, attach: &'static AttachType) -> Section {
        let b = name.as_bytes();
        assert!(!b.is_empty() && b.len() <= SECTION_NAME_MAX);
        let mut i = 0;
        while i < b.len() {
            assert!(b[i] > b' ' && b[i] < 0x7f && b[i] != b'\\');
            i += 1;
        }
        Section { name, attach }
    }

    /// The section prefix.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// What the driver registers for one program type: its program information
/// and its sections.
///
/// # Invariants
/// `data` is the `ebpf_program_data_t` of a [`ProgramType`] static, so its
/// pointers are valid and immutable for the life of the image; every
/// section's attach type supports `program_type`.
pub struct Provider {
    data: &'static ebpf_program_data_t,
    program_type: GUID,
    sections: &'static [Section],
}

// SAFETY: immutable; its pointers refer to a ProgramType static, which is
// itself Sync (invariant).
unsafe impl Sync for Provider {}

impl AsRef<Provider> for Provider {
    fn as_ref(&self) -> &Provider {
        self
    }
}

const fn same_guid(a: &GUID, b: &GUID) -> bool {
    let mut i = 0;
    while i < 8 {
        if a.data4[i] != b.data4[i] {
            return false;
        }
        i += 1;
    }
    a.data1 == b.data1 && a.data2 == b.data2 && a.data3 == b.data3
}

impl Provider {
    /// The store entries of `program`, with `sections`, each of which must
    /// attach programs of this type (checked at compile time in a
    /// `static`).
    pub const fn new<const HELPERS: usize>(
        program: &'static ProgramType<HELPERS>,
        sections: &'static [Section],
    ) -> Provider {
        // The program-information provider's module id is the program type.
        let program_type = program.module_id().Guid;
        let mut i = 0;
        while i < sections.len() {
            assert!(same_guid(
                &sections[i].attach.data().supported_program_type,
                &program_type
            ));
            i += 1;
        }
        // INVARIANT: `data` is a ProgramType's; the sections were checked.
        Provider {
            data: program.data(),
            program_type,
            sections,
        }
    }

    /// The program type.
    pub const fn program_type(&self) -> &GUID {
        &self.program_type
    }

    /// The sections.
    pub const fn sections(&self) -> &'static [Section] {
        self.sections
    }

    /// The published `ebpf_program_info_t`.
    pub fn info(&self) -> &'static ebpf_program_info_t {
        // SAFETY: `data` belongs to a ProgramType static (invariant), whose
        // pointers point into itself and live as long as the image.
        unsafe { &*self.data.program_info }
    }

    /// Its type descriptor.
    pub fn descriptor(&self) -> &'static ebpf_program_type_descriptor_t {
        // SAFETY: as in `info`.
        unsafe { &*self.info().program_type_descriptor }
    }

    /// Its context descriptor.
    pub fn context(&self) -> &'static ebpf_context_descriptor_t {
        // SAFETY: as in `info`.
        unsafe { &*self.descriptor().context_descriptor }
    }

    /// The program type's name (UTF-8, no NUL).
    pub fn type_name(&self) -> &'static [u8] {
        // SAFETY: the descriptor's name pointer (as in `info`).
        unsafe { c_name(self.descriptor().name) }
    }

    /// The name of helper `index` of [`helpers`](Self::helpers).
    ///
    /// # Panics
    /// If `index` is out of range.
    pub fn helper_name(&self, index: usize) -> &'static [u8] {
        // SAFETY: a prototype's name pointer (as in `info`).
        unsafe { c_name(self.helpers()[index].name) }
    }

    /// Its program-type-specific helper prototypes.
    pub fn helpers(&self) -> &'static [ebpf_helper_function_prototype_t] {
        let info = self.info();
        if info.count_of_program_type_specific_helpers == 0 {
            return &[];
        }
        // SAFETY: as in `info`; the array holds `count` prototypes (the
        // builder derives the count from it).
        unsafe {
            core::slice::from_raw_parts(
                info.program_type_specific_helper_prototype,
                info.count_of_program_type_specific_helpers as usize,
            )
        }
    }
}

/// A name in a ProgramType static, without the NUL.
///
/// # Safety
/// `name` is a name pointer of the program information of a [`Provider`].
unsafe fn c_name(name: *const core::ffi::c_char) -> &'static [u8] {
    // SAFETY: the names in a ProgramType static are `&'static CStr`
    // literals (its invariant), per the caller.
    unsafe { core::ffi::CStr::from_ptr(name) }.to_bytes()
}

/// Why a name cannot be a registry key or value name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadName;

/// A name as UTF-16 in a fixed buffer (no allocation). Registry key names
/// are at most 255 characters.
pub struct Wide {
    units: [u16; 256],
    len: usize,
}

impl Wide {
    /// `text` (UTF-8) as UTF-16, as `MultiByteToWideChar(CP_UTF8)` converts
    /// the store helper's names.
    ///
    /// # Errors
    /// Not UTF-8, empty, longer than 255 UTF-16 units, or containing a `\`
    /// or a NUL.
    pub fn new(text: &[u8]) -> Result<Wide, BadName> {
        Wide::encode(text, false)
    }

    /// An absolute registry path (backslashes allowed).
    #[cfg(windows)]
    fn path(text: &[u8]) -> Result<Wide, BadName> {
        Wide::encode(text, true)
    }

    fn encode(text: &[u8], path: bool) -> Result<Wide, BadName> {
        let text = core::str::from_utf8(text).map_err(|_| BadName)?;
        let mut w = Wide {
            units: [0; 256],
            len: 0,
        };
        for u in text.encode_utf16() {
            if w.len == 255 || (u == u16::from(b'\\') && !path) || u == 0 {
                return Err(BadName);
            }
            w.units[w.len] = u;
            w.len += 1;
        }
        if w.len == 0 {
            return Err(BadName);
        }
        Ok(w)
    }

    /// The units.
    pub fn units(&self) -> &[u16] {
        &self.units[..self.len]
    }
}

/// A GUID as eBPF for Windows names its key: lowercase, in braces.
pub fn guid_key_name(g: &GUID) -> [u16; GUID_STRING_LENGTH] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u16; GUID_STRING_LENGTH];
    let mut at = 0;
    let mut put = |c: u8| {
        out[at] = u16::from(c);
        at += 1;
    };
    let hex = |put: &mut dyn FnMut(u8), v: u64, digits: u32| {
        for i in (0..digits).rev() {
            put(HEX[((v >> (i * 4)) & 0xf) as usize]);
        }
    };
    put(b'{');
    hex(&mut put, u64::from(g.data1), 8);
    put(b'-');
    hex(&mut put, u64::from(g.data2), 4);
    put(b'-');
    hex(&mut put, u64::from(g.data3), 4);
    put(b'-');
    for (i, b) in g.data4.iter().enumerate() {
        if i == 2 {
            put(b'-');
        }
        hex(&mut put, u64::from(*b), 2);
    }
    put(b'}');
    out
}

/// A GUID's 16 bytes as `REG_BINARY` holds it (the in-memory `GUID`).
pub fn guid_bytes(g: &GUID) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&g.data1.to_le_bytes());
    b[4..6].copy_from_slice(&g.data2.to_le_bytes());
    b[6..8].copy_from_slice(&g.data3.to_le_bytes());
    b[8..].copy_from_slice(&g.data4);
    b
}

/// `ContextDescriptor`: the 16-byte `ebpf_context_descriptor_t`.
pub fn context_bytes(c: &ebpf_context_descriptor_t) -> [u8; 16] {
    let mut b = [0u8; 16];
    for (i, v) in [c.size, c.data, c.end, c.meta].iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// `Prototype`: `helper_id`, `return_type`, `arguments[5]` (28 bytes).
pub fn prototype_bytes(p: &ebpf_helper_function_prototype_t) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..4].copy_from_slice(&p.helper_id.to_le_bytes());
    b[4..8].copy_from_slice(&p.return_type.to_le_bytes());
    for (i, a) in p.arguments.iter().enumerate() {
        b[8 + i * 4..12 + i * 4].copy_from_slice(&a.to_le_bytes());
    }
    b
}

/// `REG_SZ` data: the name as UTF-16LE with its terminating NUL, in a
/// fixed buffer; returns the byte length.
pub fn sz_bytes(name: &Wide, out: &mut [u8; 512]) -> usize {
    let mut n = 0;
    for u in name.units().iter().chain(&[0]) {
        out[n..n + 2].copy_from_slice(&u.to_le_bytes());
        n += 2;
    }
    n
}

#[cfg(windows)]
pub use kernel::update;

#[cfg(windows)]
mod kernel {
    use super::*;
    use crate::nt::{self, Error, NtResult, HANDLE, UNICODE_STRING};
    use core::ffi::c_void;
    use core::mem::size_of;
    use core::ptr;

    const fn error(status: nt::NTSTATUS) -> Error {
        match Error::from_status(status) {
            Some(e) => e,
            None => panic!("a failure status"),
        }
    }
    const NOT_FOUND: Error = error(nt::STATUS_OBJECT_NAME_NOT_FOUND);
    const NO_MORE_ENTRIES: Error = error(nt::STATUS_NO_MORE_ENTRIES);

    /// How deep [`delete_tree`] goes below the key it deletes: the driver's
    /// own keys are two levels deep (`{guid}\Helpers\<name>`); deeper
    /// content under them is refused rather than recursed into without
    /// bound on the kernel stack.
    const DELETE_DEPTH: u32 = 6;

    const ACCESS: u32 = nt::KEY_QUERY_VALUE
        | nt::KEY_SET_VALUE
        | nt::KEY_CREATE_SUB_KEY
        | nt::KEY_ENUMERATE_SUB_KEYS
        | nt::DELETE;

    /// A name as a `UNICODE_STRING` over borrowed units (at most 255, so
    /// the byte length fits).
    fn unicode(units: &[u16]) -> UNICODE_STRING {
        let bytes = (units.len() * 2) as u16;
        UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            // The kernel only reads the name.
            Buffer: units.as_ptr().cast_mut(),
        }
    }

    fn ascii(text: &str) -> Wide {
        // The names in this module are constant ASCII key and value names.
        match Wide::new(text.as_bytes()) {
            Ok(w) => w,
            Err(_) => unreachable!("a constant name"),
        }
    }

    /// An open registry key.
    ///
    /// # Invariants
    /// `0` is a kernel handle to a key, owned by this value (closed on
    /// drop).
    struct Key(HANDLE);

    impl Drop for Key {
        fn drop(&mut self) {
            // SAFETY: the handle is open and owned (invariant); nothing uses
            // it afterwards.
            let _ = unsafe { nt::ZwClose(self.0) };
        }
    }

    /// A buffer for one `KEY_BASIC_INFORMATION` with a 255-character name.
    #[repr(C, align(8))]
    struct NameBuffer([u8; 16 + 512]);

    impl Key {
        fn attributes(parent: Option<&Key>, name: &UNICODE_STRING) -> nt::OBJECT_ATTRIBUTES {
            nt::OBJECT_ATTRIBUTES {
                Length: size_of::<nt::OBJECT_ATTRIBUTES>() as u32,
                RootDirectory: parent.map_or(0, |k| k.0),
                ObjectName: name,
                Attributes: nt::OBJ_KERNEL_HANDLE | nt::OBJ_CASE_INSENSITIVE,
                SecurityDescriptor: ptr::null_mut(),
                SecurityQualityOfService: ptr::null_mut(),
            }
        }

        /// Opens or creates `name` (non-volatile), below `parent` or
        /// absolute.
        fn create(parent: Option<&Key>, name: &[u16]) -> NtResult<Key> {
            let name = unicode(name);
            let attributes = Key::attributes(parent, &name);
            let mut handle: HANDLE = 0;
            let mut disposition = 0u32;
            // SAFETY: every pointer is to a live local; `name` borrows units
            // that outlive the call.
            zw_check(c"ZwCreateKey", unsafe {
                nt::ZwCreateKey(
                    &mut handle,
                    ACCESS,
                    &attributes,
                    0,
                    ptr::null(),
                    nt::REG_OPTION_NON_VOLATILE,
                    &mut disposition,
                )
            })?;
            // INVARIANT: the call succeeded and returned an open handle.
            Ok(Key(handle))
        }

        /// Opens `name` below `parent`; `None` if it does not exist.
        fn open(parent: &Key, name: &[u16], access: u32) -> NtResult<Option<Key>> {
            let name = unicode(name);
            let attributes = Key::attributes(Some(parent), &name);
            let mut handle: HANDLE = 0;
            // SAFETY: as in `create`.
            match nt::check(unsafe { nt::ZwOpenKey(&mut handle, access, &attributes) }) {
                // INVARIANT: the call succeeded and returned an open handle.
                Ok(()) => Ok(Some(Key(handle))),
                Err(e) if e == NOT_FOUND => Ok(None),
                Err(e) => Err(e),
            }
        }

        fn set(&self, name: &str, ty: u32, data: &[u8]) -> NtResult {
            let name = ascii(name);
            let name = unicode(name.units());
            // SAFETY: the handle is open (invariant); `data` is readable for
            // its length, which is a small constant-bounded size.
            zw_check(c"ZwSetValueKey", unsafe {
                nt::ZwSetValueKey(
                    self.0,
                    &name,
                    0,
                    ty,
                    data.as_ptr().cast(),
                    data.len() as u32,
                )
            })
        }

        fn set_dword(&self, name: &str, value: u32) -> NtResult {
            self.set(name, nt::REG_DWORD, &value.to_le_bytes())
        }

        /// Value `name` when it is exactly a 16-byte `REG_BINARY` (a GUID);
        /// `None` otherwise or when absent.
        fn query_guid(&self, name: &str) -> NtResult<Option<[u8; 16]>> {
            let name = ascii(name);
            let name = unicode(name.units());
            #[repr(C, align(4))]
            struct Buffer([u8; 12 + 16]);
            let mut buffer = Buffer([0; 28]);
            let mut length = 0u32;
            // SAFETY: the handle is open (invariant); the buffer is writable
            // for its size.
            let status = unsafe {
                nt::ZwQueryValueKey(
                    self.0,
                    &name,
                    nt::KeyValuePartialInformation,
                    buffer.0.as_mut_ptr().cast::<c_void>(),
                    buffer.0.len() as u32,
                    &mut length,
                )
            };
            match nt::check(status) {
                Ok(()) => {}
                Err(e) if e == NOT_FOUND => return Ok(None),
                // Larger than a GUID (STATUS_BUFFER_OVERFLOW): not one.
                Err(e) if e.status() == 0x8000_0005u32 as i32 => return Ok(None),
                Err(e) => return Err(e),
            }
            let word = |at: usize| {
                u32::from_le_bytes([
                    buffer.0[at],
                    buffer.0[at + 1],
                    buffer.0[at + 2],
                    buffer.0[at + 3],
                ])
            };
            if word(4) != nt::REG_BINARY || word(8) != 16 {
                return Ok(None);
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&buffer.0[12..28]);
            Ok(Some(guid))
        }

        /// The name of subkey `index`, in `buffer`; `None` past the last.
        fn subkey<'b>(
            &self,
            index: u32,
            buffer: &'b mut NameBuffer,
        ) -> NtResult<Option<&'b [u16]>> {
            let mut length = 0u32;
            // SAFETY: the handle is open (invariant); the buffer is writable
            // for its size.
            let status = unsafe {
                nt::ZwEnumerateKey(
                    self.0,
                    index,
                    nt::KeyBasicInformation,
                    buffer.0.as_mut_ptr().cast::<c_void>(),
                    buffer.0.len() as u32,
                    &mut length,
                )
            };
            match nt::check(status) {
                Ok(()) => {}
                Err(e) if e == NO_MORE_ENTRIES => return Ok(None),
                Err(e) => return Err(e),
            }
            let name_length =
                u32::from_le_bytes([buffer.0[12], buffer.0[13], buffer.0[14], buffer.0[15]])
                    as usize;
            if name_length > 512 || !name_length.is_multiple_of(2) {
                return Err(Error::INVALID_PARAMETER);
            }
            // SAFETY: the name follows the 16-byte header, 8-aligned (the
            // buffer's alignment), `name_length` bytes within the buffer.
            let start = buffer.0[16..].as_ptr().cast::<u16>();
            // SAFETY: `start` is 8-aligned (the buffer's alignment plus 16)
            // and `name_length` (<= 512) bytes from it are in the buffer.
            let name = unsafe { core::slice::from_raw_parts(start, name_length / 2) };
            Ok(Some(name))
        }

        /// Deletes this key (which must have no subkeys).
        fn delete(self) -> NtResult {
            // SAFETY: the handle is open (invariant); it is closed by drop.
            zw_check(c"ZwDeleteKey", unsafe { nt::ZwDeleteKey(self.0) })
        }
    }

    /// Deletes `name` below `parent` with everything under it; an absent
    /// key is not an error.
    fn delete_tree(parent: &Key, name: &[u16]) -> NtResult {
        match Key::open(parent, name, nt::DELETE | nt::KEY_ENUMERATE_SUB_KEYS)? {
            None => Ok(()),
            Some(key) => {
                let mut buffer = NameBuffer([0; 528]);
                delete_key_tree(key, &mut buffer, 0)
            }
        }
    }

    fn delete_key_tree(key: Key, buffer: &mut NameBuffer, depth: u32) -> NtResult {
        while let Some(name) = key.subkey(0, buffer)? {
            if depth == DELETE_DEPTH {
                return Err(Error::NOT_SUPPORTED);
            }
            let child =
                Key::open(&key, name, nt::DELETE | nt::KEY_ENUMERATE_SUB_KEYS)?.ok_or(NOT_FOUND)?;
            delete_key_tree(child, buffer, depth + 1)?;
        }
        key.delete()
    }

    fn write_header(key: &Key, size: usize) -> NtResult {
        key.set_dword(names::VERSION, 1)?;
        key.set_dword(names::SIZE, size as u32)
    }

    /// `ProgramData\{guid}`, `HelperCount` last.
    fn write_program(program_data: &Key, provider: &Provider) -> NtResult {
        let name = guid_key_name(&provider.program_type);
        delete_tree(program_data, &name)?;
        let key = Key::create(Some(program_data), &name)?;
        write_header(&key, EBPF_PROGRAM_INFORMATION_SIZE)?;

        let descriptor = provider.descriptor();
        let type_key = Key::create(Some(&key), ascii(names::TYPE_DESCRIPTOR).units())?;
        write_header(&type_key, EBPF_PROGRAM_TYPE_DESCRIPTOR_SIZE)?;
        let type_name = Wide::new(provider.type_name()).map_err(|_| Error::INVALID_PARAMETER)?;
        let mut sz = [0u8; 512];
        let n = sz_bytes(&type_name, &mut sz);
        type_key.set(names::NAME, nt::REG_SZ, &sz[..n])?;
        type_key.set(
            names::CONTEXT_DESCRIPTOR,
            nt::REG_BINARY,
            &context_bytes(provider.context()),
        )?;
        type_key.set_dword(names::BPF_PROG_TYPE, descriptor.bpf_prog_type)?;
        type_key.set_dword(names::IS_PRIVILEGED, descriptor.is_privileged as u8 as u32)?;
        drop(type_key);

        let helpers = provider.helpers();
        if !helpers.is_empty() {
            let helpers_key = Key::create(Some(&key), ascii(names::HELPERS).units())?;
            for (index, helper) in helpers.iter().enumerate() {
                let name =
                    Wide::new(provider.helper_name(index)).map_err(|_| Error::INVALID_PARAMETER)?;
                let helper_key = Key::create(Some(&helpers_key), name.units())?;
                write_header(&helper_key, EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE)?;
                helper_key.set(names::PROTOTYPE, nt::REG_BINARY, &prototype_bytes(helper))?;
                helper_key.set_dword(names::REALLOCATE_PACKET, u32::from(helper.flags & 1))?;
            }
        }
        // Readers require it: until it is written, they skip the key.
        key.set_dword(
            names::HELPER_COUNT,
            provider.info().count_of_program_type_specific_helpers,
        )
    }

    /// `SectionData\<name>`, `ProgramType` last.
    fn write_section(section_data: &Key, provider: &Provider, section: &Section) -> NtResult {
        let name = ascii(section.name);
        delete_tree(section_data, name.units())?;
        let key = Key::create(Some(section_data), name.units())?;
        write_header(&key, EBPF_PROGRAM_SECTION_INFORMATION_SIZE as usize)?;
        key.set(
            names::ATTACH_TYPE,
            nt::REG_BINARY,
            &guid_bytes(&section.attach.module_id().Guid),
        )?;
        key.set_dword(names::BPF_PROG_TYPE, provider.descriptor().bpf_prog_type)?;
        key.set_dword(
            names::BPF_ATTACH_TYPE,
            section.attach.data().bpf_attach_type,
        )?;
        // Readers require it: until it is written, they skip the key.
        key.set(
            names::PROGRAM_TYPE,
            nt::REG_BINARY,
            &guid_bytes(&provider.program_type),
        )
    }

    fn is_provided<P: AsRef<Provider>>(name: &[u16], providers: &[&P]) -> bool {
        let same = |s: &str| {
            s.len() == name.len()
                && s.bytes()
                    .zip(name)
                    .all(|(a, &b)| u16::from(a.to_ascii_uppercase()) == ascii_upper(b))
        };
        providers
            .iter()
            .any(|p| p.as_ref().sections.iter().any(|s| same(s.name)))
    }

    fn ascii_upper(u: u16) -> u16 {
        if (u16::from(b'a')..=u16::from(b'z')).contains(&u) {
            u - 32
        } else {
            u
        }
    }

    /// Deletes the sections that point at one of `providers`' program
    /// types under a name none of them provides any more.
    fn remove_stale_sections<P: AsRef<Provider>>(section_data: &Key, providers: &[&P]) -> NtResult {
        let mut buffer = NameBuffer([0; 528]);
        let mut index = 0;
        while let Some(name) = section_data.subkey(index, &mut buffer)? {
            let stale = !is_provided(name, providers)
                && match Key::open(section_data, name, nt::KEY_QUERY_VALUE)? {
                    None => false,
                    Some(key) => key.query_guid(names::PROGRAM_TYPE)?.is_some_and(|g| {
                        providers
                            .iter()
                            .any(|p| guid_bytes(&p.as_ref().program_type) == g)
                    }),
                };
            if stale {
                // The next subkey moves to this index.
                delete_tree(section_data, name)?;
            } else {
                index += 1;
            }
        }
        Ok(())
    }

    /// `nt::check` for a registry call whose failure means the store could
    /// not be written: the failure is traced with the API's name.
    fn zw_check(api: &'static core::ffi::CStr, status: nt::NTSTATUS) -> NtResult {
        nt::check(status).inspect_err(|e| {
            crate::trace::api_failure(crate::trace::keyword::EXTENSION, api, e.status());
        })
    }

    fn write_all<P: AsRef<Provider>>(providers: &[&P]) -> NtResult {
        let root_path = match Wide::path(names::EBPF_ROOT.as_bytes()) {
            Ok(w) => w,
            Err(_) => unreachable!("a constant path"),
        };
        let ebpf = Key::create(None, root_path.units())?;
        let root = Key::create(Some(&ebpf), ascii(names::PROVIDERS).units())?;
        drop(ebpf);
        let program_data = Key::create(Some(&root), ascii(names::PROGRAM_DATA).units())?;
        let section_data = Key::create(Some(&root), ascii(names::SECTION_DATA).units())?;
        for provider in providers {
            let provider = provider.as_ref();
            let written = write_program(&program_data, provider).and_then(|()| {
                provider
                    .sections
                    .iter()
                    .try_for_each(|section| write_section(&section_data, provider, section))
            });
            crate::trace::store_register(c"ProgramData", &provider.program_type, written);
            written?;
        }
        remove_stale_sections(&section_data, providers)
    }

    /// Writes the store entries of `providers` (DriverEntry, PASSIVE_LEVEL):
    /// [`Provider`]s, or the driver's hooks, whose entries they are.
    /// A failure is logged with its status and does not fail the load.
    pub fn update<P: AsRef<Provider>>(providers: &[&P]) {
        crate::trace::store_update(providers.len(), write_all(providers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(units: &[u16]) -> String {
        String::from_utf16(units).unwrap()
    }

    #[test]
    fn guid_key_names_are_lowercase_in_braces() {
        let g = GUID::new(
            0x22ea7b37,
            0x1043,
            0x4d0d,
            [0xb6, 0x0d, 0xca, 0xfa, 0x1c, 0x7b, 0x63, 0x8e],
        );
        assert_eq!(
            text(&guid_key_name(&g)),
            "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}"
        );
        let small = GUID::new(1, 2, 3, [0, 1, 2, 3, 4, 5, 6, 0xAB]);
        assert_eq!(
            text(&guid_key_name(&small)),
            "{00000001-0002-0003-0001-0203040506ab}"
        );
    }

    #[test]
    fn binary_layouts_are_little_endian_fields_in_order() {
        let g = GUID::new(0x0403_0201, 0x0605, 0x0807, [9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(guid_bytes(&g), core::array::from_fn(|i| i as u8 + 1));
        let c = ebpf_context_descriptor_t {
            size: 144,
            data: 0,
            end: 8,
            meta: -1,
        };
        assert_eq!(
            context_bytes(&c),
            [144, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        let p = ebpf_helper_function_prototype_t {
            header: ebpf_extension_header_t::v1(66, 72),
            helper_id: 0x10000,
            name: c"x".as_ptr(),
            return_type: 3,
            arguments: [4, 11, 2, 0, 7],
            flags: 1,
            implicit_context: true,
        };
        let mut expected = vec![0, 0, 1, 0, 3, 0, 0, 0];
        for a in [4u32, 11, 2, 0, 7] {
            expected.extend_from_slice(&a.to_le_bytes());
        }
        assert_eq!(prototype_bytes(&p).to_vec(), expected);
    }

    mod sample {
        use crate::ebpf::abi::*;
        use crate::ebpf::program::*;
        use crate::nt::GUID;

        pub const TYPE: GUID = GUID::new(1, 2, 3, [4; 8]);
        unsafe extern "system" fn h(_: u64, _: u64, _: u64, _: u64, _: u64) -> i64 {
            0
        }
        unsafe extern "system" fn create(
            _: *const u8,
            _: usize,
            _: *const u8,
            _: usize,
            _: *mut *mut core::ffi::c_void,
        ) -> ebpf_result_t {
            0
        }
        unsafe extern "system" fn destroy(
            _: *mut core::ffi::c_void,
            _: *mut u8,
            _: *mut usize,
            _: *mut u8,
            _: *mut usize,
        ) {
        }
        const PROGRAM_SPEC: ProgramTypeSpec = ProgramTypeSpec {
            name: c"sample",
            program_type: TYPE,
            bpf_prog_type: 0,
            context: ebpf_context_descriptor_t {
                size: 8,
                data: -1,
                end: -1,
                meta: -1,
            },
            helpers: &[HelperSpec {
                id: 0x10000,
                name: c"sample_helper",
                return_type: 0,
                arguments: [0; 5],
                address: h,
            }],
            context_create: create,
            context_destroy: destroy,
            required_irql: 0,
        };
        pub static PROGRAM: ProgramType<{ PROGRAM_SPEC.helpers.len() }> =
            ProgramType::new(&PROGRAM, PROGRAM_SPEC);
        pub static ATTACH: AttachType = AttachType::new(GUID::new(9, 9, 9, [9; 8]), TYPE, 0);
    }

    static SECTIONS: &[Section] = &[Section::new("sample/x", &sample::ATTACH)];
    static PROVIDER: Provider = Provider::new(&sample::PROGRAM, SECTIONS);

    #[test]
    fn a_provider_reads_the_published_program_information() {
        assert_eq!(*PROVIDER.program_type(), sample::TYPE);
        assert_eq!(PROVIDER.type_name(), b"sample");
        assert_eq!(PROVIDER.context().size, 8);
        assert_eq!(PROVIDER.helpers().len(), 1);
        assert_eq!(PROVIDER.helper_name(0), b"sample_helper");
        assert_eq!(PROVIDER.sections()[0].name(), "sample/x");
        assert!(core::ptr::eq(
            PROVIDER.info(),
            // SAFETY: the data of a ProgramType static.
            unsafe { &*sample::PROGRAM.data().program_info }
        ));
    }

    #[test]
    fn names_are_converted_from_utf8_and_bounded() {
        assert_eq!(Wide::new(b"process").unwrap().units().len(), 7);
        assert_eq!(text(Wide::new("é€".as_bytes()).unwrap().units()), "é€");
        assert_eq!(Wide::new(b"").err(), Some(BadName));
        assert_eq!(Wide::new(b"a\\b").err(), Some(BadName));
        assert_eq!(Wide::new(&[0xff]).err(), Some(BadName));
        assert!(Wide::new(&[b'a'; 255]).is_ok());
        assert_eq!(Wide::new(&[b'a'; 256]).err(), Some(BadName));
        let mut out = [0u8; 512];
        let n = sz_bytes(&Wide::new(b"ab").unwrap(), &mut out);
        assert_eq!(&out[..n], &[b'a', 0, b'b', 0, 0, 0]);
    }
}
