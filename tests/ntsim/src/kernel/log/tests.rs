//! Tests of DbgPrintEx formatting and of ETW registration and events.

use super::*;
use crate::kernel::types::{OwnedUnicodeString, DISPATCH_LEVEL};
use std::ffi::CStr;
use std::sync::Mutex;

/// DbgPrintEx as a C caller sees it: variadic.
type VarDbgPrintEx = unsafe extern "win64" fn(u32, u32, *const u8, ...) -> u32;
type VarDbgPrint = unsafe extern "win64" fn(*const u8, ...) -> u32;

fn var_dbgprintex() -> VarDbgPrintEx {
    // SAFETY: under win64 a variadic call passes its arguments exactly
    // as DbgPrintEx's fixed parameters expect (see its documentation).
    unsafe { std::mem::transmute::<usize, VarDbgPrintEx>(DbgPrintEx as *const () as usize) }
}

fn last() -> String {
    dbg_messages().last().expect("a message").text.clone()
}

/// Formats through a variadic call, as the driver makes it.
fn fmt(f: &CStr, a: &[u64]) -> String {
    let p = var_dbgprintex();
    let s = f.as_ptr().cast();
    // SAFETY: the tests pass arguments matching their formats.
    let status = unsafe {
        match *a {
            [] => p(77, 3, s),
            [x] => p(77, 3, s, x),
            [x, y] => p(77, 3, s, x, y),
            [x, y, z] => p(77, 3, s, x, y, z),
            [x, y, z, t] => p(77, 3, s, x, y, z, t),
            [x, y, z, t, u] => p(77, 3, s, x, y, z, t, u),
            [x, y, z, t, u, v] => p(77, 3, s, x, y, z, t, u, v),
            _ => unreachable!("at most 6 arguments here"),
        }
    };
    assert_eq!(status, 0, "DbgPrintEx returns STATUS_SUCCESS");
    last()
}

#[test]
fn integer_conversions() {
    let _sim = crate::Sim::new();
    let neg = (-42i32) as u32 as u64;
    assert_eq!(fmt(c"%d|%i|%u", &[neg, 7, neg]), "-42|7|4294967254");
    // int arguments take 32 bits: garbage in the upper half is ignored.
    assert_eq!(fmt(c"%d", &[0xDEAD_BEEF_0000_0005]), "5");
    assert_eq!(
        fmt(c"%x|%X|%#x|%#X", &[255, 255, 255, 255]),
        "ff|FF|0xff|0XFF"
    );
    assert_eq!(fmt(c"%o|%#o|%#x", &[8, 8, 0]), "10|010|0");
    assert_eq!(fmt(c"%5d|%-5d|%05d", &[42, 42, neg]), "   42|42   |-0042");
    assert_eq!(fmt(c"%+d|% d|%+d", &[42, 42, neg]), "+42| 42|-42");
    assert_eq!(fmt(c"%.3d|%8.3x|%.0d|", &[7, 10, 0]), "007|     00a||");
    assert_eq!(
        fmt(c"%08.3d", &[5]),
        "     005",
        "precision disables 0 padding"
    );
    assert_eq!(fmt(c"%*d|%-*d|", &[6, 1, 3, 2]), "     1|2  |");
    assert_eq!(fmt(c"%.*d", &[4, 9]), "0009");
    let minus4 = (-4i32) as u32 as u64;
    assert_eq!(fmt(c"%*d|", &[minus4, 9]), "9   |", "negative width: left");
    // Size prefixes (l is 32 bits on Windows).
    let big = 0x1_0000_0001u64;
    assert_eq!(
        fmt(c"%ld|%lld|%I64u", &[big, big, big]),
        "1|4294967297|4294967297"
    );
    assert_eq!(
        fmt(c"%I32x|%Ix|%zu", &[big, big, big]),
        "1|100000001|4294967297"
    );
    assert_eq!(
        fmt(c"%hd|%hu|%hhd", &[0x1_FFFF, 0x1_FFFF, 0x180]),
        "-1|65535|-128"
    );
    assert_eq!(
        fmt(c"%I64d|%llx", &[u64::MAX, u64::MAX]),
        "-1|ffffffffffffffff"
    );
    assert_eq!(fmt(c"100%%", &[]), "100%");
    // %p: 16 upper-case hex digits on x64.
    assert_eq!(fmt(c"%p", &[0x1234_abcd]), "000000001234ABCD");
    assert_eq!(fmt(c"%20p|", &[1]), "    0000000000000001|");
    assert!(violation::take().is_empty());
}

#[test]
fn string_and_char_conversions() {
    let _sim = crate::Sim::new();
    let wide: Vec<u16> = "wïde\0".encode_utf16().collect();
    let w = wide.as_ptr() as u64;
    let n = c"narrow".as_ptr() as u64;
    assert_eq!(
        fmt(c"[%s][%.3s][%8s][%-8s]", &[n, n, n, n]),
        "[narrow][nar][  narrow][narrow  ]"
    );
    assert_eq!(fmt(c"%ws|%S|%ls|%wS", &[w, w, w, w]), "wïde|wïde|wïde|wïde");
    assert_eq!(fmt(c"%hS|%.2ws|%hs", &[n, w, n]), "narrow|wï|narrow");
    assert_eq!(fmt(c"%s|%ws|%.3s", &[0, 0, 0]), "(null)|(null)|(nu");
    let (o, k) = (b'o' as u64, b'k' as u64);
    assert_eq!(fmt(c"%c%c|%3c|%-3c|", &[o, k, o, k]), "ok|  o|k  |");
    assert_eq!(
        fmt(c"%C|%wc|%lc|%hC", &[0x3a9, 0x3a9, 0x41, 0x142]),
        "Ω|Ω|A|B"
    );
    let us = OwnedUnicodeString::new("Unicode\\Name");
    let u = us.as_ptr() as u64;
    assert_eq!(
        fmt(c"<%wZ>|<%.4wZ>|<%wZ>", &[u, u, 0]),
        "<Unicode\\Name>|<Unic>|<(null)>"
    );
    assert_eq!(fmt(c"<%15wZ>", &[u]), "<   Unicode\\Name>");
    // %Z: an ANSI_STRING (the same layout with a byte buffer), whose
    // Length bounds the text.
    let bytes = b"ansi-text-not-terminated";
    let ansi = UNICODE_STRING {
        Length: 9,
        MaximumLength: 9,
        Buffer: bytes.as_ptr() as *mut u16,
    };
    assert_eq!(fmt(c"%Z", &[&ansi as *const _ as u64]), "ansi-text");
    assert!(violation::take().is_empty());
}

#[test]
fn six_arguments_pass_through_the_stack() {
    let _sim = crate::Sim::new();
    let s = c"six".as_ptr() as u64;
    // Through the variadic type: arguments 2..6 go to stack slots.
    let text = fmt(
        c"%d %s %x %I64d %c %u",
        &[1, s, 0xbeef, 1 << 40, b'z' as u64, 6],
    );
    assert_eq!(text, "1 six beef 1099511627776 z 6");
    // And a direct call of the Rust function with the same slots.
    let args: [u64; 12] = [1, s, 0xbeef, 1 << 40, b'z' as u64, 6, 0, 0, 0, 0, 0, 0];
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = args;
    let f = c"%d %s %x %I64d %c %u".as_ptr().cast();
    // SAFETY: arguments match the format.
    let st = unsafe {
        DbgPrintEx(
            DPFLTR_IHVDRIVER_ID,
            DPFLTR_ERROR_LEVEL,
            f,
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            a8,
            a9,
            a10,
            a11,
        )
    };
    assert_eq!(st, 0);
    let m = dbg_messages();
    let m = m.last().unwrap();
    assert_eq!(m.text, "1 six beef 1099511627776 z 6");
    assert_eq!(
        (m.component, m.level),
        (DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL)
    );
    assert_eq!(dbg_messages().len(), 2);
}

#[test]
fn dbgprint_uses_the_default_component() {
    let _sim = crate::Sim::new();
    // SAFETY: a variadic view of DbgPrint, as in var_dbgprintex.
    let p = unsafe { std::mem::transmute::<usize, VarDbgPrint>(DbgPrint as *const () as usize) };
    // SAFETY: arguments match the format.
    unsafe { p(c"%s=%d\n".as_ptr().cast(), c"x".as_ptr(), 3u32) };
    assert_eq!(
        take_dbg_messages(),
        vec![DbgMessage {
            component: DPFLTR_DEFAULT_ID,
            level: DPFLTR_INFO_LEVEL,
            text: "x=3\n".into(),
            image: None,
        }]
    );
    assert!(dbg_messages().is_empty());
    assert_eq!(level_mask(3), 8);
    assert_eq!(level_mask(0x8000_0001), 0x8000_0001);
}

#[test]
fn unicode_codes_above_passive_are_violations() {
    let _sim = crate::Sim::new();
    let us = OwnedUnicodeString::new("name");
    let u = us.as_ptr() as u64;
    irql::at(DISPATCH_LEVEL, || fmt(c"%wZ", &[u]));
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].message.contains("Unicode format code"), "{v:?}");
    // The message is still captured, as Windows would still print it.
    assert_eq!(last(), "name");
    irql::at(DISPATCH_LEVEL, || fmt(c"%C", &[0x41]));
    assert_eq!(violation::take().len(), 1);
    // Narrow codes are fine at DISPATCH_LEVEL.
    irql::at(DISPATCH_LEVEL, || {
        fmt(c"%s %c %d", &[c"a".as_ptr() as u64, 0x41, 1])
    });
    assert!(violation::take().is_empty());
    // And wide ones are fine at PASSIVE_LEVEL.
    fmt(c"%wZ", &[u]);
    assert!(violation::take().is_empty());
}

#[test]
fn unsupported_conversions_and_long_output() {
    let _sim = crate::Sim::new();
    assert_eq!(fmt(c"%f|", &[0]), "%f|");
    assert_eq!(violation::take().len(), 1);
    assert_eq!(fmt(c"a%n", &[0]), "a");
    assert_eq!(violation::take().len(), 1);
    let long = vec![b'x'; 600];
    let s = std::ffi::CString::new(long).unwrap();
    assert_eq!(fmt(&s, &[]).len(), DBGPRINT_MAX_BYTES);
    assert!(violation::take().is_empty());
}

// ---- ETW

/// (session, control code, level, any, all, context) of each callback.
type Call = (GUID, u32, u8, u64, u64, usize);
static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

unsafe extern "win64" fn enable_cb(
    source: *const GUID,
    code: u32,
    level: u8,
    any: u64,
    all: u64,
    _filter: *const EVENT_FILTER_DESCRIPTOR,
    ctx: *mut c_void,
) {
    // SAFETY: ETW passes a valid session GUID.
    let g = unsafe { *source };
    CALLS
        .lock()
        .unwrap()
        .push((g, code, level, any, all, ctx as usize));
}

const PROVIDER: &str = "3fd2d6a7-53c4-4b3b-9d76-1d1b2f3a4c5e";

fn register(ctx: usize) -> u64 {
    let guid = GUID::parse(PROVIDER).unwrap();
    let mut h = 0u64;
    // SAFETY: valid GUID and out pointer; the callback is a static fn.
    let st = unsafe { EtwRegister(&guid, Some(enable_cb), ctx as *mut c_void, &mut h) };
    assert_eq!(st, STATUS_SUCCESS);
    assert_ne!(h, 0);
    h
}

#[test]
fn etw_register_traits_write_and_unregister() {
    let _sim = crate::Sim::new();
    CALLS.lock().unwrap().clear();
    let guid = GUID::parse(PROVIDER).unwrap();
    let h = register(0x1234);
    // TraceLogging traits: u16 size, then the NUL-terminated name.
    let mut traits = vec![0u8, 0];
    traits.extend_from_slice(b"Ntos.Test\0");
    let n = traits.len() as u16;
    traits[..2].copy_from_slice(&n.to_le_bytes());
    // SAFETY: the blob is readable for its length.
    let st = unsafe {
        EtwSetInformation(
            h,
            EVENT_PROVIDER_SET_TRAITS,
            traits.as_ptr().cast(),
            n as u32,
        )
    };
    assert_eq!(st, STATUS_SUCCESS);
    let p = etw_providers();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].name.as_deref(), Some("Ntos.Test"));
    assert_eq!(p[0].traits.as_deref(), Some(&traits[..]));

    // Nobody enabled it yet: the event is captured, not "enabled".
    let d = EVENT_DESCRIPTOR {
        Id: 7,
        Version: 1,
        Channel: 11,
        Level: 4,
        Opcode: 1,
        Task: 9,
        Keyword: 0x10,
    };
    // TraceLogging metadata: event "E" with one UINT32 field "V".
    let meta = [8u8, 0, 0, b'E', 0, b'V', 0, 8];
    let payload = 0x0102_0304u32.to_le_bytes();
    let empty = [0u8; 0];
    let descs = [
        EVENT_DATA_DESCRIPTOR {
            Ptr: traits.as_ptr() as u64,
            Size: traits.len() as u32,
            Type: 2,
            ..Default::default()
        },
        EVENT_DATA_DESCRIPTOR {
            Ptr: meta.as_ptr() as u64,
            Size: meta.len() as u32,
            Type: 1,
            ..Default::default()
        },
        EVENT_DATA_DESCRIPTOR {
            Ptr: payload.as_ptr() as u64,
            Size: 4,
            ..Default::default()
        },
        EVENT_DATA_DESCRIPTOR {
            Ptr: empty.as_ptr() as u64,
            Size: 0,
            ..Default::default()
        },
    ];
    let act = GUID::parse("00000001-0002-0003-0405-060708090a0b").unwrap();
    // SAFETY: all pointers are live locals.
    let st = unsafe { EtwWriteTransfer(h, &d, &act, std::ptr::null(), 4, descs.as_ptr()) };
    assert_eq!(st, STATUS_SUCCESS);
    etw_enable(&guid, 5, 0x30, 0x10);
    {
        let calls = CALLS.lock().unwrap();
        assert_eq!(*calls, vec![(SESSION_ID, 1, 5, 0x30, 0x10, 0x1234)]);
    }
    // SAFETY: as above.
    unsafe { EtwWriteTransfer(h, &d, std::ptr::null(), std::ptr::null(), 3, descs.as_ptr()) };
    let ev = take_etw_events();
    assert_eq!(ev.len(), 2);
    let mut expected = traits.clone();
    expected.extend_from_slice(&meta);
    expected.extend_from_slice(&payload);
    assert_eq!(ev[0].data, expected);
    assert_eq!(ev[0].data_of_type(0), payload);
    assert_eq!(ev[0].data_of_type(1), meta);
    assert_eq!(ev[0].chunks.len(), 4);
    assert_eq!(ev[0].descriptor, d);
    assert_eq!(ev[0].provider, guid);
    assert_eq!(ev[0].activity_id, Some(act));
    assert_eq!(ev[0].related_activity_id, None);
    let decoded = ev[0].decoded.as_ref().expect("a TraceLogging event");
    assert_eq!(decoded.provider_name, "Ntos.Test");
    assert_eq!(decoded.name, "E");
    assert_eq!(decoded.uint("V"), Some(0x0102_0304));
    assert!(violation::peek().is_empty(), "{:?}", violation::peek());
    assert!(!ev[0].enabled);
    assert!(ev[1].enabled, "level 4 <= 5 and keyword 0x10 matches");
    // An event above the session's level is not what it asked for.
    let verbose = EVENT_DESCRIPTOR { Level: 6, ..d };
    // SAFETY: as above.
    unsafe {
        EtwWriteTransfer(
            h,
            &verbose,
            std::ptr::null(),
            std::ptr::null(),
            0,
            std::ptr::null(),
        )
    };
    assert!(!take_etw_events()[0].enabled);

    etw_disable(&guid);
    assert_eq!(
        CALLS.lock().unwrap()[1].1,
        EVENT_CONTROL_CODE_DISABLE_PROVIDER
    );

    // A leak is reported, with the provider's name.
    let out = outstanding();
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains(PROVIDER) && out[0].contains("Ntos.Test"),
        "{out:?}"
    );
    assert_eq!(EtwUnregister(h), STATUS_SUCCESS);
    assert!(outstanding().is_empty());
    // Writing or unregistering through the stale handle is a violation.
    assert_eq!(EtwUnregister(h), STATUS_INVALID_HANDLE);
    // SAFETY: as above.
    let st = unsafe {
        EtwWriteTransfer(
            h,
            &d,
            std::ptr::null(),
            std::ptr::null(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(st, STATUS_INVALID_HANDLE);
    assert_eq!(violation::take().len(), 2);
    // Handle 0 (registration failed) is refused quietly.
    // SAFETY: as above.
    let st = unsafe {
        EtwWriteTransfer(
            0,
            &d,
            std::ptr::null(),
            std::ptr::null(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(st, STATUS_INVALID_HANDLE);
    assert!(violation::take().is_empty());
}

#[test]
fn etw_enabled_before_register_calls_back_during_register() {
    let _sim = crate::Sim::new();
    CALLS.lock().unwrap().clear();
    let guid = GUID::parse(PROVIDER).unwrap();
    etw_enable(&guid, 4, u64::MAX, 0);
    assert!(CALLS.lock().unwrap().is_empty(), "nobody registered yet");
    let h = register(77);
    assert_eq!(
        *CALLS.lock().unwrap(),
        vec![(SESSION_ID, 1, 4, u64::MAX, 0, 77)]
    );
    // Bad traits (size field wrong) are refused and flagged.
    let bad = [9u8, 0, b'x', 0];
    // SAFETY: readable for 4 bytes.
    let st = unsafe { EtwSetInformation(h, EVENT_PROVIDER_SET_TRAITS, bad.as_ptr().cast(), 4) };
    assert_eq!(st, STATUS_INVALID_PARAMETER);
    assert_eq!(violation::take().len(), 1);
    // SAFETY: no data.
    let st = unsafe { EtwSetInformation(h, 99, std::ptr::null(), 0) };
    assert_eq!(st, STATUS_NOT_SUPPORTED);
    assert_eq!(EtwUnregister(h), STATUS_SUCCESS);
}

#[test]
fn etw_register_fault_injection() {
    let _sim = crate::Sim::new();
    crate::kernel::fault::fail_nth("EtwRegister", 1);
    let guid = GUID::parse(PROVIDER).unwrap();
    let mut h = 5u64;
    // SAFETY: valid pointers.
    let st = unsafe { EtwRegister(&guid, None, std::ptr::null_mut(), &mut h) };
    assert_eq!(st, STATUS_INSUFFICIENT_RESOURCES);
    assert_eq!(h, 0);
    assert!(etw_providers().is_empty());
    assert!(outstanding().is_empty());
    let h = register(0);
    assert_eq!(EtwUnregister(h), STATUS_SUCCESS);
    // Registering above PASSIVE_LEVEL is a violation.
    irql::at(DISPATCH_LEVEL, || EtwUnregister(register(0)));
    assert_eq!(violation::take().len(), 2);
}
