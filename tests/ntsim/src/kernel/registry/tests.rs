//! Tests of the registry: keys, values, enumeration, handles and fault injection.

use super::*;
use crate::kernel::types::{OwnedUnicodeString, DISPATCH_LEVEL};

const KA: u32 = OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE;
const SVC: &str = "\\Registry\\Machine\\SYSTEM\\CurrentControlSet\\Services";

fn create(path: &str, root: HANDLE, options: u32) -> (NTSTATUS, HANDLE, u32) {
    let name = OwnedUnicodeString::new(path);
    let oa = OBJECT_ATTRIBUTES::new(name.as_ptr(), KA, root);
    let (mut h, mut disp) = (0, 0);
    // SAFETY: all pointers are live locals.
    let st = unsafe {
        ZwCreateKey(
            &mut h,
            KEY_ALL_ACCESS,
            &oa,
            0,
            std::ptr::null(),
            options,
            &mut disp,
        )
    };
    (st, h, disp)
}

fn open(path: &str, access: u32) -> (NTSTATUS, HANDLE) {
    let name = OwnedUnicodeString::new(path);
    let oa = OBJECT_ATTRIBUTES::new(name.as_ptr(), KA, 0);
    let mut h = 0;
    // SAFETY: live locals.
    let st = unsafe { ZwOpenKey(&mut h, access, &oa) };
    (st, h)
}

fn set(h: HANDLE, name: &str, ty: u32, data: &[u8]) -> NTSTATUS {
    let n = OwnedUnicodeString::new(name);
    // SAFETY: live locals.
    unsafe {
        ZwSetValueKey(
            h,
            n.as_ptr(),
            0,
            ty,
            data.as_ptr().cast(),
            data.len() as u32,
        )
    }
}

fn query(h: HANDLE, name: &str, class: u32, len: usize) -> (NTSTATUS, u32, Vec<u8>) {
    let n = OwnedUnicodeString::new(name);
    let mut buf = vec![0xCCu8; len];
    let mut rl = 0u32;
    // SAFETY: buf is writable for len bytes.
    let st = unsafe {
        ZwQueryValueKey(
            h,
            n.as_ptr(),
            class,
            buf.as_mut_ptr().cast(),
            len as u32,
            &mut rl,
        )
    };
    (st, rl, buf)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

#[test]
fn create_open_set_query_every_class() {
    let _sim = crate::Sim::new();
    let path = format!("{SVC}\\ntosebpfext");
    let (st, h, disp) = create(&path, 0, REG_OPTION_NON_VOLATILE);
    assert_eq!((st, disp), (STATUS_SUCCESS, REG_CREATED_NEW_KEY));
    assert_ne!(h & 0xFFFF_FFFF_8000_0000, 0, "a kernel handle");
    // Creating again opens it.
    let (st, h2, disp) = create(&path.to_uppercase(), 0, 0);
    assert_eq!((st, disp), (STATUS_SUCCESS, REG_OPENED_EXISTING_KEY));
    assert_eq!(ZwClose(h2), STATUS_SUCCESS);

    assert_eq!(set(h, "Start", REG_DWORD, &dword(3)), STATUS_SUCCESS);
    assert_eq!(set(h, "ImagePath", REG_SZ, &sz("x.sys")), STATUS_SUCCESS);
    assert_eq!(read_value(&path, "start"), Some((REG_DWORD, dword(3))));
    // Overwrite keeps the name's original case and the position.
    assert_eq!(set(h, "START", REG_DWORD, &dword(4)), STATUS_SUCCESS);
    let v = values(&path);
    assert_eq!(v[0].name, "Start");
    assert_eq!(v[0].data, dword(4));

    // Partial: TitleIndex, Type, DataLength, Data.
    let (st, rl, b) = query(h, "Start", KEY_VALUE_PARTIAL_INFORMATION, 64);
    assert_eq!((st, rl), (STATUS_SUCCESS, 16));
    assert_eq!(
        (u32_at(&b, 4), u32_at(&b, 8), u32_at(&b, 12)),
        (REG_DWORD, 4, 4)
    );
    // Basic: TitleIndex, Type, NameLength, Name.
    let (st, rl, b) = query(h, "start", KEY_VALUE_BASIC_INFORMATION, 64);
    assert_eq!((st, rl), (STATUS_SUCCESS, 12 + 10));
    assert_eq!((u32_at(&b, 4), u32_at(&b, 8)), (REG_DWORD, 10));
    assert_eq!(&b[12..22], &name_bytes("Start")[..]);
    // Full: ..., DataOffset, DataLength, NameLength, Name, Data.
    let (st, rl, b) = query(h, "ImagePath", KEY_VALUE_FULL_INFORMATION, 128);
    let name_len = 18;
    let data_off = align(20 + name_len, 4);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(rl as usize, data_off + 12);
    assert_eq!(u32_at(&b, 8) as usize, data_off);
    assert_eq!((u32_at(&b, 12), u32_at(&b, 16)), (12, name_len as u32));
    assert_eq!(&b[data_off..data_off + 12], &sz("x.sys")[..]);
    let (_, rl, b) = query(h, "ImagePath", KEY_VALUE_FULL_INFORMATION_ALIGN64, 128);
    assert_eq!(u32_at(&b, 8), 40);
    assert_eq!(rl, 52);
    let (st, rl, b) = query(h, "Start", KEY_VALUE_PARTIAL_INFORMATION_ALIGN64, 12);
    assert_eq!((st, rl), (STATUS_SUCCESS, 12));
    assert_eq!(
        (u32_at(&b, 0), u32_at(&b, 4), u32_at(&b, 8)),
        (REG_DWORD, 4, 4)
    );

    // Too small for the fixed part: nothing written, size reported.
    let (st, rl, b) = query(h, "Start", KEY_VALUE_PARTIAL_INFORMATION, 11);
    assert_eq!((st, rl), (STATUS_BUFFER_TOO_SMALL, 16));
    assert!(b.iter().all(|x| *x == 0xCC));
    let (st, rl, _) = query(h, "Start", KEY_VALUE_PARTIAL_INFORMATION, 0);
    assert_eq!((st, rl), (STATUS_BUFFER_TOO_SMALL, 16));
    // Room for the fixed part only: overflow, header written, no data.
    let (st, rl, b) = query(h, "Start", KEY_VALUE_PARTIAL_INFORMATION, 15);
    assert_eq!((st, rl), (STATUS_BUFFER_OVERFLOW, 16));
    assert_eq!(u32_at(&b, 8), 4);
    assert!(b[12..15].iter().all(|x| *x == 0xCC));
    // Basic with part of the name.
    let (st, rl, b) = query(h, "Start", KEY_VALUE_BASIC_INFORMATION, 16);
    assert_eq!((st, rl), (STATUS_BUFFER_OVERFLOW, 22));
    assert_eq!(&b[12..16], &name_bytes("St")[..]);

    // Missing value, bad class.
    let (st, _, _) = query(h, "Nope", KEY_VALUE_PARTIAL_INFORMATION, 64);
    assert_eq!(st, STATUS_OBJECT_NAME_NOT_FOUND);
    let (st, _, _) = query(h, "Start", 9, 64);
    assert_eq!(st, STATUS_INVALID_PARAMETER);

    // Delete a value.
    let n = OwnedUnicodeString::new("start");
    // SAFETY: live local.
    assert_eq!(unsafe { ZwDeleteValueKey(h, n.as_ptr()) }, STATUS_SUCCESS);
    // SAFETY: as above.
    assert_eq!(
        unsafe { ZwDeleteValueKey(h, n.as_ptr()) },
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(read_value(&path, "Start"), None);
    assert_eq!(ZwClose(h), STATUS_SUCCESS);

    // Open with read access only: setting a value is refused.
    let (st, h) = open(&path.to_lowercase(), KEY_READ);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(set(h, "X", REG_DWORD, &dword(1)), STATUS_ACCESS_DENIED);
    assert_eq!(ZwClose(h), STATUS_SUCCESS);
    assert!(violation::take().is_empty());
    assert!(outstanding().is_empty());
}

#[test]
fn paths_parents_and_relative_opens() {
    let _sim = crate::Sim::new();
    // ZwCreateKey creates only the last component.
    let (st, _, _) = create("\\Registry\\Machine\\Software\\A\\B", 0, 0);
    assert_eq!(st, STATUS_OBJECT_NAME_NOT_FOUND);
    assert!(!key_exists("\\Registry\\Machine\\Software\\A"));
    let (st, a, _) = create("\\Registry\\Machine\\Software\\A", 0, 0);
    assert_eq!(st, STATUS_SUCCESS);
    // Relative to an open key.
    let (st, b, disp) = create("B", a, 0);
    assert_eq!((st, disp), (STATUS_SUCCESS, REG_CREATED_NEW_KEY));
    assert!(key_exists("\\REGISTRY\\MACHINE\\SOFTWARE\\a\\b"));
    let (st, _, _) = create("\\B", a, 0);
    assert_eq!(st, STATUS_OBJECT_PATH_SYNTAX_BAD);
    let (st, _) = open("\\Registry\\Machine\\Software\\A\\Missing", KEY_READ);
    assert_eq!(st, STATUS_OBJECT_NAME_NOT_FOUND);
    let (st, _) = open("\\Device\\Foo", KEY_READ);
    assert_eq!(st, STATUS_OBJECT_PATH_NOT_FOUND);
    let (st, _) = open("Registry\\Machine", KEY_READ);
    assert_eq!(st, STATUS_OBJECT_PATH_SYNTAX_BAD);
    // A non-volatile key under a volatile one is refused.
    let (st, v, _) = create("V", a, REG_OPTION_VOLATILE);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(create("W", v, 0).0, STATUS_CHILD_MUST_BE_VOLATILE);
    let (st, w, _) = create("W", v, REG_OPTION_VOLATILE);
    assert_eq!(st, STATUS_SUCCESS);
    // ZwQueryKey(KeyNameInformation) gives the full path.
    let mut buf = [0u8; 256];
    let mut rl = 0;
    // SAFETY: buf is writable.
    let st = unsafe {
        ZwQueryKey(
            w,
            KEY_NAME_INFORMATION,
            buf.as_mut_ptr().cast(),
            256,
            &mut rl,
        )
    };
    assert_eq!(st, STATUS_SUCCESS);
    let path = "\\REGISTRY\\MACHINE\\SOFTWARE\\A\\V\\W";
    assert_eq!(u32_at(&buf, 0) as usize, path.len() * 2);
    assert_eq!(&buf[4..4 + path.len() * 2], &name_bytes(path)[..]);
    for h in [a, b, v, w] {
        assert_eq!(ZwClose(h), STATUS_SUCCESS);
    }
    assert!(violation::take().is_empty());
}

#[test]
fn enumerate_and_delete() {
    let _sim = crate::Sim::new();
    let base = "\\Registry\\Machine\\Software\\E";
    create_key(&format!("{base}\\zeta"));
    create_key(&format!("{base}\\Alpha"));
    create_key(&format!("{base}\\mid"));
    set_value(base, "v1", REG_BINARY, &[1, 2, 3]);
    set_value(base, "v0", REG_DWORD, &dword(9));
    assert_eq!(subkeys(base), ["Alpha", "mid", "zeta"]);
    let (st, h) = open(base, KEY_ALL_ACCESS);
    assert_eq!(st, STATUS_SUCCESS);
    let mut names = Vec::new();
    for i in 0.. {
        let mut buf = [0u8; 64];
        let mut rl = 0;
        // SAFETY: buf is writable.
        let st = unsafe {
            ZwEnumerateKey(
                h,
                i,
                KEY_BASIC_INFORMATION,
                buf.as_mut_ptr().cast(),
                64,
                &mut rl,
            )
        };
        if st == STATUS_NO_MORE_ENTRIES {
            assert_eq!(i, 3);
            break;
        }
        assert_eq!(st, STATUS_SUCCESS);
        let n = u32_at(&buf, 12) as usize;
        assert_eq!(rl as usize, 16 + n);
        let units: Vec<u16> = buf[16..16 + n]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        names.push(String::from_utf16(&units).unwrap());
    }
    assert_eq!(names, ["Alpha", "mid", "zeta"]);
    // Too small: size reported.
    let mut rl = 0;
    // SAFETY: a zero-length buffer is never written.
    let st = unsafe {
        ZwEnumerateKey(
            h,
            0,
            KEY_BASIC_INFORMATION,
            std::ptr::null_mut(),
            0,
            &mut rl,
        )
    };
    assert_eq!((st, rl), (STATUS_BUFFER_TOO_SMALL, 16 + 10));
    // Values enumerate in creation order.
    let mut buf = [0u8; 64];
    // SAFETY: buf is writable.
    let st = unsafe {
        ZwEnumerateValueKey(
            h,
            0,
            KEY_VALUE_BASIC_INFORMATION,
            buf.as_mut_ptr().cast(),
            64,
            &mut rl,
        )
    };
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(&buf[12..16], &name_bytes("v1")[..]);
    // SAFETY: as above.
    let st = unsafe {
        ZwEnumerateValueKey(
            h,
            2,
            KEY_VALUE_BASIC_INFORMATION,
            buf.as_mut_ptr().cast(),
            64,
            &mut rl,
        )
    };
    assert_eq!(st, STATUS_NO_MORE_ENTRIES);
    // KeyFullInformation counts subkeys and values.
    // SAFETY: as above.
    let st = unsafe {
        ZwQueryKey(
            h,
            KEY_FULL_INFORMATION,
            buf.as_mut_ptr().cast(),
            64,
            &mut rl,
        )
    };
    assert_eq!((st, rl), (STATUS_SUCCESS, 44));
    assert_eq!(u32_at(&buf, 20), 3, "subkeys");
    assert_eq!(u32_at(&buf, 24), 10, "longest subkey name, bytes");
    assert_eq!(u32_at(&buf, 32), 2, "values");
    assert_eq!(u32_at(&buf, 40), 4, "largest data");

    // A key with subkeys cannot be deleted.
    assert_eq!(ZwDeleteKey(h), STATUS_CANNOT_DELETE);
    for k in ["zeta", "Alpha", "mid"] {
        let (st, c) = open(&format!("{base}\\{k}"), DELETE);
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(ZwDeleteKey(c), STATUS_SUCCESS);
        // The handle is now useless but still open.
        assert_eq!(ZwDeleteKey(c), STATUS_KEY_DELETED);
        assert_eq!(ZwClose(c), STATUS_SUCCESS);
    }
    assert_eq!(ZwDeleteKey(h), STATUS_SUCCESS, "values go with the key");
    assert!(!key_exists(base));
    assert_eq!(set(h, "x", REG_DWORD, &dword(1)), STATUS_KEY_DELETED);
    assert_eq!(ZwClose(h), STATUS_SUCCESS);
    // Hive roots stay.
    let (_, m) = open("\\Registry\\Machine\\SOFTWARE", KEY_ALL_ACCESS);
    create_key("\\Registry\\User\\Empty");
    let (_, r) = open("\\Registry\\User\\Empty", KEY_READ);
    assert_eq!(
        ZwDeleteKey(r),
        STATUS_ACCESS_DENIED,
        "DELETE access is required"
    );
    assert_eq!(ZwClose(r), STATUS_SUCCESS);
    assert_eq!(ZwClose(m), STATUS_SUCCESS);
    assert!(violation::take().is_empty());
}

#[test]
fn handle_misuse_and_leaks() {
    let _sim = crate::Sim::new();
    let (_, h, _) = create("\\Registry\\Machine\\Software\\Leak", 0, 0);
    let out = outstanding();
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains("\\REGISTRY\\MACHINE\\SOFTWARE\\Leak"),
        "{out:?}"
    );
    assert_eq!(
        open_handles(),
        vec![(h, "\\REGISTRY\\MACHINE\\SOFTWARE\\Leak".into())]
    );
    assert_eq!(ZwClose(h), STATUS_SUCCESS);
    assert!(outstanding().is_empty());
    // Closing twice, or a made-up handle, is a violation.
    assert_eq!(ZwClose(h), STATUS_INVALID_HANDLE);
    assert_eq!(
        set(0x1234, "x", REG_DWORD, &dword(1)),
        STATUS_INVALID_HANDLE
    );
    let v = violation::take();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.kind == "registry"));
    // A handle without OBJ_KERNEL_HANDLE is flagged, and is a user handle.
    let name = OwnedUnicodeString::new("\\Registry\\Machine\\Software");
    let oa = OBJECT_ATTRIBUTES::new(name.as_ptr(), OBJ_CASE_INSENSITIVE, 0);
    let mut uh = 0;
    // SAFETY: live locals.
    assert_eq!(unsafe { ZwOpenKey(&mut uh, KEY_READ, &oa) }, STATUS_SUCCESS);
    assert_eq!(uh & 0xFFFF_FFFF_8000_0000, 0);
    assert_eq!(violation::take().len(), 1);
    assert_eq!(ZwClose(uh), STATUS_SUCCESS);
    // Above PASSIVE_LEVEL every routine is a violation.
    let (st, h) = irql::at(DISPATCH_LEVEL, || open("\\Registry\\Machine", KEY_READ));
    assert_eq!(st, STATUS_SUCCESS);
    irql::at(DISPATCH_LEVEL, || ZwClose(h));
    assert_eq!(violation::take().len(), 2);
}

#[test]
fn fault_injection_fails_without_side_effects() {
    let _sim = crate::Sim::new();
    crate::kernel::fault::fail_nth("ZwCreateKey", 1);
    crate::kernel::fault::fail_nth("ZwOpenKey", 1);
    crate::kernel::fault::fail_nth("ZwSetValueKey", 1);
    let path = "\\Registry\\Machine\\Software\\F";
    assert_eq!(create(path, 0, 0).0, STATUS_INSUFFICIENT_RESOURCES);
    assert!(!key_exists(path));
    let (st, h, _) = create(path, 0, 0);
    assert_eq!(st, STATUS_SUCCESS);
    assert_eq!(open(path, KEY_READ).0, STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(
        set(h, "v", REG_DWORD, &dword(1)),
        STATUS_INSUFFICIENT_RESOURCES
    );
    assert_eq!(read_value(path, "v"), None);
    assert_eq!(set(h, "v", REG_DWORD, &dword(1)), STATUS_SUCCESS);
    assert_eq!(ZwClose(h), STATUS_SUCCESS);
    assert_eq!(outstanding().len(), 0);
    // A new machine has a fresh registry.
    drop(_sim);
    let _sim = crate::Sim::new();
    assert!(!key_exists(path));
    assert!(key_exists(SVC));
}
