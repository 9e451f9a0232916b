//! The configuration registry (ntoskrnl.exe `Zw*` key and value routines)
//! over an in-memory tree that tests can read and prepare.
//!
//! Paths are object-manager paths: `\Registry\Machine\...` (HKLM) and
//! `\Registry\User\...`, or relative to an open key (`RootDirectory`).
//! Names are case-insensitive and keep the case they were created with.
//! Subkeys enumerate in name order (as hive index cells keep them), values
//! in creation order. A fresh machine has the hive roots
//! `\Registry\Machine\{HARDWARE,SAM,SECURITY,SOFTWARE,SYSTEM}`,
//! `\Registry\Machine\SYSTEM\CurrentControlSet\Services` and
//! `\Registry\User`; `ZwCreateKey` creates only the last component of a
//! path, as on Windows.
//!
//! Every routine runs at PASSIVE_LEVEL. Handles are entries in a handle
//! table (kernel handles, with OBJ_KERNEL_HANDLE, have the high bits set
//! as on Windows); closing an unknown handle, or creating a handle without
//! OBJ_KERNEL_HANDLE (a handle any user process could use), is a
//! violation, and handles left open are reported by `outstanding`. The
//! access rights each routine documents as required are checked against
//! the handle's granted access.

use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::irql;
use crate::kernel::status::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NO_MORE_ENTRIES, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use crate::kernel::types::{HANDLE, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};

pub const STATUS_OBJECT_NAME_INVALID: NTSTATUS = 0xC000_0033u32 as i32;
pub const STATUS_OBJECT_PATH_NOT_FOUND: NTSTATUS = 0xC000_003Au32 as i32;
pub const STATUS_OBJECT_PATH_SYNTAX_BAD: NTSTATUS = 0xC000_003Bu32 as i32;
pub const STATUS_CANNOT_DELETE: NTSTATUS = 0xC000_0121u32 as i32;
pub const STATUS_KEY_DELETED: NTSTATUS = 0xC000_017Cu32 as i32;
pub const STATUS_CHILD_MUST_BE_VOLATILE: NTSTATUS = 0xC000_0181u32 as i32;

// Value types.
pub const REG_NONE: u32 = 0;
pub const REG_SZ: u32 = 1;
pub const REG_EXPAND_SZ: u32 = 2;
pub const REG_BINARY: u32 = 3;
pub const REG_DWORD: u32 = 4;
pub const REG_DWORD_BIG_ENDIAN: u32 = 5;
pub const REG_LINK: u32 = 6;
pub const REG_MULTI_SZ: u32 = 7;
pub const REG_QWORD: u32 = 11;

// OBJECT_ATTRIBUTES.Attributes.
pub const OBJ_INHERIT: u32 = 0x2;
pub const OBJ_CASE_INSENSITIVE: u32 = 0x40;
pub const OBJ_OPENIF: u32 = 0x80;
pub const OBJ_KERNEL_HANDLE: u32 = 0x200;

// Access rights.
pub const KEY_QUERY_VALUE: u32 = 0x0001;
pub const KEY_SET_VALUE: u32 = 0x0002;
pub const KEY_CREATE_SUB_KEY: u32 = 0x0004;
pub const KEY_ENUMERATE_SUB_KEYS: u32 = 0x0008;
pub const KEY_NOTIFY: u32 = 0x0010;
pub const KEY_CREATE_LINK: u32 = 0x0020;
pub const DELETE: u32 = 0x0001_0000;
pub const READ_CONTROL: u32 = 0x0002_0000;
pub const KEY_READ: u32 = 0x0002_0019;
pub const KEY_WRITE: u32 = 0x0002_0006;
pub const KEY_ALL_ACCESS: u32 = 0x000F_003F;
pub const MAXIMUM_ALLOWED: u32 = 0x0200_0000;
pub const GENERIC_ALL: u32 = 0x1000_0000;
pub const GENERIC_EXECUTE: u32 = 0x2000_0000;
pub const GENERIC_WRITE: u32 = 0x4000_0000;
pub const GENERIC_READ: u32 = 0x8000_0000;

// ZwCreateKey CreateOptions and Disposition.
pub const REG_OPTION_NON_VOLATILE: u32 = 0;
pub const REG_OPTION_VOLATILE: u32 = 1;
pub const REG_OPTION_CREATE_LINK: u32 = 2;
pub const REG_OPTION_BACKUP_RESTORE: u32 = 4;
pub const REG_OPTION_OPEN_LINK: u32 = 8;
pub const REG_CREATED_NEW_KEY: u32 = 1;
pub const REG_OPENED_EXISTING_KEY: u32 = 2;

// KEY_VALUE_INFORMATION_CLASS.
pub const KEY_VALUE_BASIC_INFORMATION: u32 = 0;
pub const KEY_VALUE_FULL_INFORMATION: u32 = 1;
pub const KEY_VALUE_PARTIAL_INFORMATION: u32 = 2;
pub const KEY_VALUE_FULL_INFORMATION_ALIGN64: u32 = 3;
pub const KEY_VALUE_PARTIAL_INFORMATION_ALIGN64: u32 = 4;

// KEY_INFORMATION_CLASS.
pub const KEY_BASIC_INFORMATION: u32 = 0;
pub const KEY_NODE_INFORMATION: u32 = 1;
pub const KEY_FULL_INFORMATION: u32 = 2;
pub const KEY_NAME_INFORMATION: u32 = 3;

/// `OBJECT_ATTRIBUTES` (48 bytes; `InitializeObjectAttributes` is a macro,
/// so drivers fill it themselves).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OBJECT_ATTRIBUTES {
    pub Length: u32,
    pub RootDirectory: HANDLE,
    pub ObjectName: *const UNICODE_STRING,
    pub Attributes: u32,
    pub SecurityDescriptor: *mut c_void,
    pub SecurityQualityOfService: *mut c_void,
}

impl OBJECT_ATTRIBUTES {
    /// What `InitializeObjectAttributes(&oa, name, attributes, root, NULL)`
    /// produces.
    pub fn new(name: *const UNICODE_STRING, attributes: u32, root: HANDLE) -> Self {
        OBJECT_ATTRIBUTES {
            Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: root,
            ObjectName: name,
            Attributes: attributes,
            SecurityDescriptor: std::ptr::null_mut(),
            SecurityQualityOfService: std::ptr::null_mut(),
        }
    }
}

const _: () = {
    assert!(std::mem::size_of::<OBJECT_ATTRIBUTES>() == 48);
    assert!(std::mem::offset_of!(OBJECT_ATTRIBUTES, RootDirectory) == 8);
    assert!(std::mem::offset_of!(OBJECT_ATTRIBUTES, ObjectName) == 16);
    assert!(std::mem::offset_of!(OBJECT_ATTRIBUTES, Attributes) == 24);
    assert!(std::mem::offset_of!(OBJECT_ATTRIBUTES, SecurityQualityOfService) == 40);
};

/// One registry value, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegValue {
    pub name: String,
    pub ty: u32,
    pub data: Vec<u8>,
}

struct Node {
    name: String,
    parent: Option<usize>,
    /// Upper-cased name -> node.
    children: BTreeMap<String, usize>,
    values: Vec<RegValue>,
    class: Vec<u16>,
    volatile: bool,
    /// Hive roots and \Registry itself cannot be deleted.
    permanent: bool,
    deleted: bool,
    last_write: i64,
}

struct HandleEntry {
    node: usize,
    access: u32,
    api: &'static str,
}

struct State {
    nodes: Vec<Node>,
    handles: BTreeMap<HANDLE, HandleEntry>,
    next_handle: usize,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn fold(name: &str) -> String {
    name.chars()
        .map(|c| {
            let mut u = c.to_uppercase();
            match (u.next(), u.next()) {
                (Some(x), None) => x,
                _ => c,
            }
        })
        .collect()
}

impl State {
    fn new() -> State {
        let mut s = State {
            nodes: vec![Node {
                name: "REGISTRY".into(),
                parent: None,
                children: BTreeMap::new(),
                values: Vec::new(),
                class: Vec::new(),
                volatile: false,
                permanent: true,
                deleted: false,
                last_write: 0,
            }],
            handles: BTreeMap::new(),
            next_handle: 1,
        };
        let machine = s.add_child(0, "MACHINE", true, false);
        s.add_child(0, "USER", true, false);
        for hive in ["HARDWARE", "SAM", "SECURITY", "SOFTWARE"] {
            s.add_child(machine, hive, true, false);
        }
        let system = s.add_child(machine, "SYSTEM", true, false);
        let ccs = s.add_child(system, "CurrentControlSet", false, false);
        s.add_child(ccs, "Services", false, false);
        s
    }

    fn add_child(&mut self, parent: usize, name: &str, permanent: bool, volatile: bool) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            parent: Some(parent),
            children: BTreeMap::new(),
            values: Vec::new(),
            class: Vec::new(),
            volatile,
            permanent,
            deleted: false,
            last_write: crate::kernel::time::peek_system_time(),
        });
        self.nodes[parent].children.insert(fold(name), id);
        self.nodes[parent].last_write = crate::kernel::time::peek_system_time();
        id
    }

    fn child(&self, node: usize, name: &str) -> Option<usize> {
        self.nodes[node].children.get(&fold(name)).copied()
    }

    fn path(&self, mut node: usize) -> String {
        let mut parts = Vec::new();
        loop {
            parts.push(self.nodes[node].name.as_str());
            match self.nodes[node].parent {
                Some(p) => node = p,
                None => break,
            }
        }
        parts.reverse();
        format!("\\{}", parts.join("\\"))
    }

    /// Resolves a host-side absolute path.
    fn lookup(&self, path: &str) -> Option<usize> {
        match parse_absolute(path) {
            Ok(parts) => self.walk(0, &parts).ok(),
            Err(_) => None,
        }
    }

    /// Walks `parts` down from `node`; Err(index of the first missing part).
    fn walk(&self, mut node: usize, parts: &[String]) -> Result<usize, usize> {
        for (i, p) in parts.iter().enumerate() {
            node = self.child(node, p).ok_or(i)?;
        }
        Ok(node)
    }
}

fn state() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = state();
    f(g.get_or_insert_with(State::new))
}

/// Splits an absolute path into the components below `\Registry`.
fn parse_absolute(path: &str) -> Result<Vec<String>, NTSTATUS> {
    let Some(rest) = path.strip_prefix('\\') else {
        return Err(STATUS_OBJECT_PATH_SYNTAX_BAD);
    };
    let parts: Vec<&str> = rest.split('\\').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(STATUS_OBJECT_NAME_INVALID);
    }
    if !parts[0].eq_ignore_ascii_case("Registry") {
        // Not the registry: in the object namespace, a missing directory.
        return Err(if parts.len() == 1 {
            STATUS_OBJECT_NAME_NOT_FOUND
        } else {
            STATUS_OBJECT_PATH_NOT_FOUND
        });
    }
    Ok(parts[1..].iter().map(|s| s.to_string()).collect())
}

/// Maps generic rights to key rights.
fn map_access(access: u32) -> u32 {
    let mut a = access & !(GENERIC_ALL | GENERIC_EXECUTE | GENERIC_WRITE | GENERIC_READ);
    if access & (GENERIC_ALL | MAXIMUM_ALLOWED) != 0 {
        a |= KEY_ALL_ACCESS;
    }
    if access & GENERIC_READ != 0 || access & GENERIC_EXECUTE != 0 {
        a |= KEY_READ;
    }
    if access & GENERIC_WRITE != 0 {
        a |= KEY_WRITE;
    }
    a & !MAXIMUM_ALLOWED
}

/// A checked handle: its node, or the status to fail with.
fn key_of(s: &State, api: &str, h: HANDLE, need: u32) -> Result<usize, NTSTATUS> {
    let Some(e) = s.handles.get(&h) else {
        violation::record(
            "registry",
            format!("{api} with a handle that is not an open key handle: {h:#x}"),
        );
        return Err(STATUS_INVALID_HANDLE);
    };
    if e.access & need != need {
        return Err(STATUS_ACCESS_DENIED);
    }
    if s.nodes[e.node].deleted {
        return Err(STATUS_KEY_DELETED);
    }
    Ok(e.node)
}

/// Reads a counted string argument.
///
/// # Safety
/// `s` must be null or point to a valid `UNICODE_STRING`.
unsafe fn read_us(s: *const UNICODE_STRING) -> Option<String> {
    // SAFETY: guaranteed by the caller.
    (!s.is_null()).then(|| unsafe { (*s).to_string_lossy() })
}

/// Reads the units of a counted string argument (empty for null).
///
/// # Safety
/// As [`read_us`].
unsafe fn read_units(s: *const UNICODE_STRING) -> Vec<u16> {
    if s.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller.
    let s = unsafe { &*s };
    if s.Buffer.is_null() || s.Length == 0 {
        return Vec::new();
    }
    // SAFETY: Buffer holds Length bytes.
    unsafe { std::slice::from_raw_parts(s.Buffer, s.Length as usize / 2) }.to_vec()
}

enum Target {
    /// An existing key.
    Existing(usize),
    /// A key to create: (parent, name).
    Missing(usize, String),
}

/// Resolves OBJECT_ATTRIBUTES to a key (or, for `create`, the parent and
/// name of the key to create).
///
/// # Safety
/// `oa` must point to a valid OBJECT_ATTRIBUTES whose name is valid.
unsafe fn resolve(
    s: &State,
    api: &str,
    oa: *const OBJECT_ATTRIBUTES,
    create: bool,
) -> Result<Target, NTSTATUS> {
    if oa.is_null() {
        violation::record("registry", format!("{api} with NULL ObjectAttributes"));
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: non-null and valid per the caller.
    let oa = unsafe { oa.read_unaligned() };
    if oa.Length as usize != std::mem::size_of::<OBJECT_ATTRIBUTES>() {
        return Err(STATUS_INVALID_PARAMETER);
    }
    if oa.Attributes & OBJ_KERNEL_HANDLE == 0 {
        violation::record(
            "registry",
            format!(
                "{api} without OBJ_KERNEL_HANDLE: the handle is a user handle, usable by the \
                 process the thread runs in (Driver Verifier flags kernel code that does this)"
            ),
        );
    }
    // SAFETY: the name is null or valid per the caller.
    let name = unsafe { read_us(oa.ObjectName) }.unwrap_or_default();
    let (base, parts) = if oa.RootDirectory != 0 {
        let base = key_of(s, api, oa.RootDirectory, 0)?;
        if name.starts_with('\\') {
            return Err(STATUS_OBJECT_PATH_SYNTAX_BAD);
        }
        let parts: Vec<String> = if name.is_empty() {
            Vec::new()
        } else {
            name.split('\\').map(str::to_string).collect()
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(STATUS_OBJECT_NAME_INVALID);
        }
        (base, parts)
    } else {
        (0, parse_absolute(&name)?)
    };
    match s.walk(base, &parts) {
        Ok(n) => Ok(Target::Existing(n)),
        Err(i) if create && i == parts.len() - 1 => {
            let parent = s
                .walk(base, &parts[..i])
                .map_err(|_| STATUS_OBJECT_NAME_NOT_FOUND)?;
            Ok(Target::Missing(parent, parts[i].clone()))
        }
        Err(_) => Err(STATUS_OBJECT_NAME_NOT_FOUND),
    }
}

fn new_handle(s: &mut State, node: usize, access: u32, kernel: bool, api: &'static str) -> HANDLE {
    let idx = s.next_handle;
    s.next_handle += 1;
    let h = if kernel {
        0xFFFF_FFFF_8000_0000usize | (idx * 4)
    } else {
        (0x80 + idx) * 4
    };
    s.handles.insert(
        h,
        HandleEntry {
            node,
            access: map_access(access),
            api,
        },
    );
    h
}

/// `ZwCreateKey` (PASSIVE_LEVEL). Fault injection: "ZwCreateKey".
///
/// # Safety
/// Pointers must be valid as the WDK documents (`Class` and `Disposition`
/// optional).
pub unsafe extern "win64" fn ZwCreateKey(
    KeyHandle: *mut HANDLE,
    DesiredAccess: u32,
    ObjectAttributes: *const OBJECT_ATTRIBUTES,
    _TitleIndex: u32,
    Class: *const UNICODE_STRING,
    CreateOptions: u32,
    Disposition: *mut u32,
) -> NTSTATUS {
    irql::require_at_most("ZwCreateKey", PASSIVE_LEVEL);
    if KeyHandle.is_null() {
        violation::record("registry", "ZwCreateKey with NULL KeyHandle");
        return STATUS_INVALID_PARAMETER;
    }
    let valid = REG_OPTION_VOLATILE
        | REG_OPTION_CREATE_LINK
        | REG_OPTION_BACKUP_RESTORE
        | REG_OPTION_OPEN_LINK;
    if CreateOptions & !valid != 0 || CreateOptions & REG_OPTION_CREATE_LINK != 0 {
        // Symbolic links are not simulated; an unknown option is invalid.
        return STATUS_INVALID_PARAMETER;
    }
    if crate::kernel::fault::check("ZwCreateKey") {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: optional class string, valid when non-null.
    let class = unsafe { read_units(Class) };
    let r = with(|s| {
        // SAFETY: ObjectAttributes is valid per the caller.
        let target = unsafe { resolve(s, "ZwCreateKey", ObjectAttributes, true) }?;
        // SAFETY: as above (read again for the attributes).
        let attributes = unsafe { (*ObjectAttributes).Attributes };
        let kernel = attributes & OBJ_KERNEL_HANDLE != 0;
        let (node, disposition) = match target {
            Target::Existing(n) => (n, REG_OPENED_EXISTING_KEY),
            Target::Missing(parent, name) => {
                let volatile = CreateOptions & REG_OPTION_VOLATILE != 0;
                if s.nodes[parent].volatile && !volatile {
                    return Err(STATUS_CHILD_MUST_BE_VOLATILE);
                }
                let n = s.add_child(parent, &name, false, volatile);
                s.nodes[n].class = class;
                (n, REG_CREATED_NEW_KEY)
            }
        };
        Ok((
            new_handle(s, node, DesiredAccess, kernel, "ZwCreateKey"),
            disposition,
        ))
    });
    match r {
        Ok((h, disposition)) => {
            // SAFETY: KeyHandle checked non-null; Disposition optional.
            unsafe {
                KeyHandle.write_unaligned(h);
                if !Disposition.is_null() {
                    Disposition.write_unaligned(disposition);
                }
            }
            STATUS_SUCCESS
        }
        Err(st) => st,
    }
}

/// `ZwOpenKey` (PASSIVE_LEVEL). Fault injection: "ZwOpenKey".
///
/// # Safety
/// Pointers must be valid as the WDK documents.
pub unsafe extern "win64" fn ZwOpenKey(
    KeyHandle: *mut HANDLE,
    DesiredAccess: u32,
    ObjectAttributes: *const OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    irql::require_at_most("ZwOpenKey", PASSIVE_LEVEL);
    if KeyHandle.is_null() {
        violation::record("registry", "ZwOpenKey with NULL KeyHandle");
        return STATUS_INVALID_PARAMETER;
    }
    if crate::kernel::fault::check("ZwOpenKey") {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let r = with(|s| {
        // SAFETY: ObjectAttributes is valid per the caller.
        let node = match unsafe { resolve(s, "ZwOpenKey", ObjectAttributes, false) }? {
            Target::Existing(n) => n,
            Target::Missing(..) => return Err(STATUS_OBJECT_NAME_NOT_FOUND),
        };
        // SAFETY: as above.
        let kernel = unsafe { (*ObjectAttributes).Attributes } & OBJ_KERNEL_HANDLE != 0;
        Ok(new_handle(s, node, DesiredAccess, kernel, "ZwOpenKey"))
    });
    match r {
        Ok(h) => {
            // SAFETY: checked non-null.
            unsafe { KeyHandle.write_unaligned(h) };
            STATUS_SUCCESS
        }
        Err(st) => st,
    }
}

/// `ZwClose` (PASSIVE_LEVEL). Closing a handle that is not open is a
/// violation (Windows bug checks with INVALID_KERNEL_HANDLE).
pub extern "win64" fn ZwClose(Handle: HANDLE) -> NTSTATUS {
    irql::require_at_most("ZwClose", PASSIVE_LEVEL);
    if with(|s| s.handles.remove(&Handle)).is_some()
        || crate::kernel::ps::thread::close_handle(Handle)
    {
        STATUS_SUCCESS
    } else {
        violation::record(
            "registry",
            format!("ZwClose of a handle that is not open: {Handle:#x}"),
        );
        STATUS_INVALID_HANDLE
    }
}

/// `ZwSetValueKey` (PASSIVE_LEVEL; needs KEY_SET_VALUE). Fault injection:
/// "ZwSetValueKey".
///
/// # Safety
/// `ValueName` must be valid; `Data` readable for `DataSize` bytes.
pub unsafe extern "win64" fn ZwSetValueKey(
    KeyHandle: HANDLE,
    ValueName: *const UNICODE_STRING,
    _TitleIndex: u32,
    Type: u32,
    Data: *const c_void,
    DataSize: u32,
) -> NTSTATUS {
    irql::require_at_most("ZwSetValueKey", PASSIVE_LEVEL);
    // SAFETY: valid per the caller.
    let Some(name) = (unsafe { read_us(ValueName) }) else {
        violation::record("registry", "ZwSetValueKey with NULL ValueName");
        return STATUS_INVALID_PARAMETER;
    };
    if Data.is_null() && DataSize != 0 {
        violation::record(
            "registry",
            "ZwSetValueKey with NULL Data and a non-zero size",
        );
        return STATUS_INVALID_PARAMETER;
    }
    let data = if DataSize == 0 {
        Vec::new()
    } else {
        // SAFETY: readable for DataSize bytes per the caller.
        unsafe { std::slice::from_raw_parts(Data.cast::<u8>(), DataSize as usize) }.to_vec()
    };
    with(|s| {
        let node = match key_of(s, "ZwSetValueKey", KeyHandle, KEY_SET_VALUE) {
            Ok(n) => n,
            Err(st) => return st,
        };
        if crate::kernel::fault::check("ZwSetValueKey") {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        put_value(&mut s.nodes[node], &name, Type, data);
        STATUS_SUCCESS
    })
}

fn put_value(n: &mut Node, name: &str, ty: u32, data: Vec<u8>) {
    let key = fold(name);
    match n.values.iter_mut().find(|v| fold(&v.name) == key) {
        Some(v) => {
            v.ty = ty;
            v.data = data;
        }
        None => n.values.push(RegValue {
            name: name.to_string(),
            ty,
            data,
        }),
    }
    n.last_write = crate::kernel::time::peek_system_time();
}

/// `ZwDeleteValueKey` (PASSIVE_LEVEL; needs KEY_SET_VALUE).
///
/// # Safety
/// `ValueName` must be valid.
pub unsafe extern "win64" fn ZwDeleteValueKey(
    KeyHandle: HANDLE,
    ValueName: *const UNICODE_STRING,
) -> NTSTATUS {
    irql::require_at_most("ZwDeleteValueKey", PASSIVE_LEVEL);
    // SAFETY: valid per the caller.
    let Some(name) = (unsafe { read_us(ValueName) }) else {
        violation::record("registry", "ZwDeleteValueKey with NULL ValueName");
        return STATUS_INVALID_PARAMETER;
    };
    with(|s| {
        let node = match key_of(s, "ZwDeleteValueKey", KeyHandle, KEY_SET_VALUE) {
            Ok(n) => n,
            Err(st) => return st,
        };
        let key = fold(&name);
        let n = &mut s.nodes[node];
        match n.values.iter().position(|v| fold(&v.name) == key) {
            Some(i) => {
                n.values.remove(i);
                n.last_write = crate::kernel::time::peek_system_time();
                STATUS_SUCCESS
            }
            None => STATUS_OBJECT_NAME_NOT_FOUND,
        }
    })
}

/// `ZwDeleteKey` (PASSIVE_LEVEL; needs DELETE). Fault injection:
/// "ZwDeleteKey". A key with subkeys cannot
/// be deleted (STATUS_CANNOT_DELETE); its values go with it. Every handle
/// to the key stays open (and must be closed) but fails with
/// STATUS_KEY_DELETED.
pub extern "win64" fn ZwDeleteKey(KeyHandle: HANDLE) -> NTSTATUS {
    irql::require_at_most("ZwDeleteKey", PASSIVE_LEVEL);
    with(|s| {
        let node = match key_of(s, "ZwDeleteKey", KeyHandle, DELETE) {
            Ok(n) => n,
            Err(st) => return st,
        };
        if crate::kernel::fault::check("ZwDeleteKey") {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        if s.nodes[node].permanent || !s.nodes[node].children.is_empty() {
            return STATUS_CANNOT_DELETE;
        }
        let name = fold(&s.nodes[node].name);
        if let Some(p) = s.nodes[node].parent {
            s.nodes[p].children.remove(&name);
            s.nodes[p].last_write = crate::kernel::time::peek_system_time();
        }
        let n = &mut s.nodes[node];
        n.deleted = true;
        n.values.clear();
        STATUS_SUCCESS
    })
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn units_bytes(u: &[u16]) -> Vec<u8> {
    u.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn name_bytes(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(|x| x.to_le_bytes()).collect()
}

/// An information structure: its full image, the size of its fixed part,
/// and how far a too-small buffer may be filled.
struct Info {
    image: Vec<u8>,
    fixed: usize,
    partial_limit: usize,
}

/// An error status is returned as it is (nothing written). Otherwise copies `info` into the caller's buffer with the documented rules:
/// smaller than the fixed part: STATUS_BUFFER_TOO_SMALL, nothing written;
/// smaller than the whole: STATUS_BUFFER_OVERFLOW, the fixed part (and as
/// much of the variable part as the structure allows) written. In every
/// case `*ResultLength` is the full size.
///
/// # Safety
/// `buf` must be writable for `len` bytes; `result_len` writable.
unsafe fn deliver(
    api: &str,
    info: Result<Info, NTSTATUS>,
    buf: *mut c_void,
    len: u32,
    result_len: *mut u32,
) -> NTSTATUS {
    let info = match info {
        Ok(info) => info,
        Err(status) => return status,
    };
    if result_len.is_null() {
        violation::record("registry", format!("{api} with NULL ResultLength"));
        return STATUS_INVALID_PARAMETER;
    }
    let len = len as usize;
    let full = info.image.len();
    // SAFETY: checked non-null; writable per the caller.
    unsafe { result_len.write_unaligned(full as u32) };
    if len < info.fixed {
        return STATUS_BUFFER_TOO_SMALL;
    }
    if buf.is_null() {
        violation::record(
            "registry",
            format!("{api} with a NULL buffer of {len} bytes"),
        );
        return STATUS_INVALID_PARAMETER;
    }
    let (n, st) = if len >= full {
        (full, STATUS_SUCCESS)
    } else {
        (
            len.min(info.partial_limit).max(info.fixed),
            STATUS_BUFFER_OVERFLOW,
        )
    };
    // SAFETY: n <= len bytes of a buffer writable for len bytes.
    unsafe { std::ptr::copy_nonoverlapping(info.image.as_ptr(), buf.cast::<u8>(), n) };
    st
}

fn u32s(v: &mut Vec<u8>, xs: &[u32]) {
    for x in xs {
        v.extend_from_slice(&x.to_le_bytes());
    }
}

fn value_info(v: &RegValue, class: u32) -> Option<Info> {
    let name = name_bytes(&v.name);
    let data_len = v.data.len() as u32;
    let mut image = Vec::new();
    Some(match class {
        KEY_VALUE_BASIC_INFORMATION => {
            u32s(&mut image, &[0, v.ty, name.len() as u32]);
            image.extend_from_slice(&name);
            let full = image.len();
            Info {
                image,
                fixed: 12,
                partial_limit: full,
            }
        }
        KEY_VALUE_FULL_INFORMATION | KEY_VALUE_FULL_INFORMATION_ALIGN64 => {
            let a = if class == KEY_VALUE_FULL_INFORMATION {
                4
            } else {
                8
            };
            let name_end = 20 + name.len();
            let data_offset = align(name_end, a);
            u32s(
                &mut image,
                &[0, v.ty, data_offset as u32, data_len, name.len() as u32],
            );
            image.extend_from_slice(&name);
            image.resize(data_offset, 0);
            image.extend_from_slice(&v.data);
            Info {
                image,
                fixed: 20,
                partial_limit: name_end,
            }
        }
        KEY_VALUE_PARTIAL_INFORMATION => {
            u32s(&mut image, &[0, v.ty, data_len]);
            image.extend_from_slice(&v.data);
            Info {
                image,
                fixed: 12,
                partial_limit: 12,
            }
        }
        KEY_VALUE_PARTIAL_INFORMATION_ALIGN64 => {
            u32s(&mut image, &[v.ty, data_len]);
            image.extend_from_slice(&v.data);
            Info {
                image,
                fixed: 8,
                partial_limit: 8,
            }
        }
        _ => return None,
    })
}

fn key_info(s: &State, node: usize, class: u32) -> Option<Info> {
    let n = &s.nodes[node];
    let name = name_bytes(&n.name);
    let cls = units_bytes(&n.class);
    let mut image = n.last_write.to_le_bytes().to_vec();
    Some(match class {
        KEY_BASIC_INFORMATION => {
            u32s(&mut image, &[0, name.len() as u32]);
            image.extend_from_slice(&name);
            let full = image.len();
            Info {
                image,
                fixed: 16,
                partial_limit: full,
            }
        }
        KEY_NODE_INFORMATION => {
            let class_offset = if cls.is_empty() {
                u32::MAX
            } else {
                (24 + name.len()) as u32
            };
            u32s(
                &mut image,
                &[0, class_offset, cls.len() as u32, name.len() as u32],
            );
            image.extend_from_slice(&name);
            image.extend_from_slice(&cls);
            let full = image.len();
            Info {
                image,
                fixed: 24,
                partial_limit: full,
            }
        }
        KEY_FULL_INFORMATION => {
            let kids: Vec<&Node> = n.children.values().map(|&c| &s.nodes[c]).collect();
            let max_name = kids
                .iter()
                .map(|k| name_bytes(&k.name).len())
                .max()
                .unwrap_or(0);
            let max_class = kids.iter().map(|k| k.class.len() * 2).max().unwrap_or(0);
            let max_vname = n
                .values
                .iter()
                .map(|v| name_bytes(&v.name).len())
                .max()
                .unwrap_or(0);
            let max_vdata = n.values.iter().map(|v| v.data.len()).max().unwrap_or(0);
            let class_offset = if cls.is_empty() { u32::MAX } else { 44 };
            u32s(
                &mut image,
                &[
                    0,
                    class_offset,
                    cls.len() as u32,
                    kids.len() as u32,
                    max_name as u32,
                    max_class as u32,
                    n.values.len() as u32,
                    max_vname as u32,
                    max_vdata as u32,
                ],
            );
            image.extend_from_slice(&cls);
            let full = image.len();
            Info {
                image,
                fixed: 44,
                partial_limit: full,
            }
        }
        KEY_NAME_INFORMATION => {
            let path = name_bytes(&s.path(node));
            let mut image = (path.len() as u32).to_le_bytes().to_vec();
            image.extend_from_slice(&path);
            let full = image.len();
            Info {
                image,
                fixed: 4,
                partial_limit: full,
            }
        }
        _ => return None,
    })
}

/// `ZwQueryValueKey` (PASSIVE_LEVEL; needs KEY_QUERY_VALUE; fault
/// injection: "ZwQueryValueKey"). Classes:
/// Basic, Full, Partial and their Align64 forms. On STATUS_BUFFER_OVERFLOW
/// the fixed part is written (and for Basic/Full as much of the name as
/// fits; data is never cut).
///
/// # Safety
/// Pointers must be valid as the WDK documents.
pub unsafe extern "win64" fn ZwQueryValueKey(
    KeyHandle: HANDLE,
    ValueName: *const UNICODE_STRING,
    KeyValueInformationClass: u32,
    KeyValueInformation: *mut c_void,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    irql::require_at_most("ZwQueryValueKey", PASSIVE_LEVEL);
    // SAFETY: valid per the caller.
    let Some(name) = (unsafe { read_us(ValueName) }) else {
        violation::record("registry", "ZwQueryValueKey with NULL ValueName");
        return STATUS_INVALID_PARAMETER;
    };
    let info = with(|s| {
        let node = key_of(s, "ZwQueryValueKey", KeyHandle, KEY_QUERY_VALUE)?;
        if crate::kernel::fault::check("ZwQueryValueKey") {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let key = fold(&name);
        let v = s.nodes[node]
            .values
            .iter()
            .find(|v| fold(&v.name) == key)
            .ok_or(STATUS_OBJECT_NAME_NOT_FOUND)?;
        value_info(v, KeyValueInformationClass).ok_or(STATUS_INVALID_PARAMETER)
    });
    // SAFETY: buffer and result pointers valid per the caller.
    unsafe {
        deliver(
            "ZwQueryValueKey",
            info,
            KeyValueInformation,
            Length,
            ResultLength,
        )
    }
}

/// `ZwEnumerateValueKey` (PASSIVE_LEVEL; needs KEY_QUERY_VALUE): values in
/// creation order; STATUS_NO_MORE_ENTRIES past the last.
///
/// # Safety
/// Pointers must be valid as the WDK documents.
pub unsafe extern "win64" fn ZwEnumerateValueKey(
    KeyHandle: HANDLE,
    Index: u32,
    KeyValueInformationClass: u32,
    KeyValueInformation: *mut c_void,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    irql::require_at_most("ZwEnumerateValueKey", PASSIVE_LEVEL);
    let info = with(|s| {
        let node = key_of(s, "ZwEnumerateValueKey", KeyHandle, KEY_QUERY_VALUE)?;
        let v = s.nodes[node]
            .values
            .get(Index as usize)
            .ok_or(STATUS_NO_MORE_ENTRIES)?;
        value_info(v, KeyValueInformationClass).ok_or(STATUS_INVALID_PARAMETER)
    });
    // SAFETY: buffer and result pointers valid per the caller.
    unsafe {
        deliver(
            "ZwEnumerateValueKey",
            info,
            KeyValueInformation,
            Length,
            ResultLength,
        )
    }
}

/// `ZwEnumerateKey` (PASSIVE_LEVEL; needs KEY_ENUMERATE_SUB_KEYS; fault
/// injection: "ZwEnumerateKey"):
/// subkeys in name order; classes Basic, Node, Full;
/// STATUS_NO_MORE_ENTRIES past the last.
///
/// # Safety
/// Pointers must be valid as the WDK documents.
pub unsafe extern "win64" fn ZwEnumerateKey(
    KeyHandle: HANDLE,
    Index: u32,
    KeyInformationClass: u32,
    KeyInformation: *mut c_void,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    irql::require_at_most("ZwEnumerateKey", PASSIVE_LEVEL);
    let info = with(|s| {
        let node = key_of(s, "ZwEnumerateKey", KeyHandle, KEY_ENUMERATE_SUB_KEYS)?;
        if crate::kernel::fault::check("ZwEnumerateKey") {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let child = *s.nodes[node]
            .children
            .values()
            .nth(Index as usize)
            .ok_or(STATUS_NO_MORE_ENTRIES)?;
        if KeyInformationClass > KEY_FULL_INFORMATION {
            return Err(STATUS_INVALID_PARAMETER);
        }
        key_info(s, child, KeyInformationClass).ok_or(STATUS_INVALID_PARAMETER)
    });
    // SAFETY: buffer and result pointers valid per the caller.
    unsafe { deliver("ZwEnumerateKey", info, KeyInformation, Length, ResultLength) }
}

/// `ZwQueryKey` (PASSIVE_LEVEL; needs KEY_QUERY_VALUE except for
/// KeyNameInformation): classes Basic, Node, Full, Name (the full path).
///
/// # Safety
/// Pointers must be valid as the WDK documents.
pub unsafe extern "win64" fn ZwQueryKey(
    KeyHandle: HANDLE,
    KeyInformationClass: u32,
    KeyInformation: *mut c_void,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    irql::require_at_most("ZwQueryKey", PASSIVE_LEVEL);
    let need = if KeyInformationClass == KEY_NAME_INFORMATION {
        0
    } else {
        KEY_QUERY_VALUE
    };
    let info = with(|s| {
        let node = key_of(s, "ZwQueryKey", KeyHandle, need)?;
        key_info(s, node, KeyInformationClass).ok_or(STATUS_INVALID_PARAMETER)
    });
    // SAFETY: buffer and result pointers valid per the caller.
    unsafe { deliver("ZwQueryKey", info, KeyInformation, Length, ResultLength) }
}

// ------------------------------------------------------ Rust API for tests

/// Whether the key at an absolute path (`\Registry\Machine\...`) exists.
pub fn key_exists(path: &str) -> bool {
    with(|s| s.lookup(path).is_some())
}

/// Creates the key at `path` and any missing key above it (host side: a
/// test preparing the machine). Panics if the path is not under
/// `\Registry`.
pub fn create_key(path: &str) {
    with(|s| create_path(s, path));
}

fn create_path(s: &mut State, path: &str) -> usize {
    let parts = parse_absolute(path).unwrap_or_else(|st| {
        panic!(
            "not a registry path: {path} ({})",
            crate::kernel::status::describe(st)
        )
    });
    let mut node = 0;
    for p in &parts {
        node = match s.child(node, p) {
            Some(c) => c,
            None => s.add_child(node, p, false, false),
        };
    }
    node
}

/// Sets a value, creating the key path if needed.
pub fn set_value(path: &str, name: &str, ty: u32, data: &[u8]) {
    with(|s| {
        let node = create_path(s, path);
        put_value(&mut s.nodes[node], name, ty, data.to_vec());
    });
}

/// A value's type and data, if the key and value exist.
pub fn read_value(path: &str, name: &str) -> Option<(u32, Vec<u8>)> {
    with(|s| {
        let node = s.lookup(path)?;
        let key = fold(name);
        s.nodes[node]
            .values
            .iter()
            .find(|v| fold(&v.name) == key)
            .map(|v| (v.ty, v.data.clone()))
    })
}

/// The names of a key's subkeys in enumeration order (empty if the key
/// does not exist).
pub fn subkeys(path: &str) -> Vec<String> {
    with(|s| match s.lookup(path) {
        Some(n) => s.nodes[n]
            .children
            .values()
            .map(|&c| s.nodes[c].name.clone())
            .collect(),
        None => Vec::new(),
    })
}

/// A key's values in enumeration order (empty if the key does not exist).
pub fn values(path: &str) -> Vec<RegValue> {
    with(|s| match s.lookup(path) {
        Some(n) => s.nodes[n].values.clone(),
        None => Vec::new(),
    })
}

/// The open registry handles: (handle, key path).
pub fn open_handles() -> Vec<(HANDLE, String)> {
    with(|s| {
        s.handles
            .iter()
            .map(|(h, e)| (*h, s.path(e.node)))
            .collect()
    })
}

/// REG_SZ data: UTF-16LE with the terminating NUL.
pub fn sz(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// REG_DWORD data.
pub fn dword(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", ZwCreateKey),
        export!("ntoskrnl.exe", ZwOpenKey),
        export!("ntoskrnl.exe", ZwClose),
        export!("ntoskrnl.exe", ZwSetValueKey),
        export!("ntoskrnl.exe", ZwDeleteValueKey),
        export!("ntoskrnl.exe", ZwDeleteKey),
        export!("ntoskrnl.exe", ZwQueryValueKey),
        export!("ntoskrnl.exe", ZwEnumerateValueKey),
        export!("ntoskrnl.exe", ZwEnumerateKey),
        export!("ntoskrnl.exe", ZwQueryKey),
    ]
}

/// Forgets all state (a new [`crate::Sim`]): a fresh tree, no handles.
pub(crate) fn reset() {
    *state() = Some(State::new());
}

/// What a driver left behind, one line each: open handles.
pub(crate) fn outstanding() -> Vec<String> {
    with(|s| {
        s.handles
            .iter()
            .map(|(h, e)| {
                format!(
                    "registry handle {h:#x} to {} (from {}) not closed",
                    s.path(e.node),
                    e.api
                )
            })
            .collect()
    })
}

#[cfg(test)]
mod tests;
