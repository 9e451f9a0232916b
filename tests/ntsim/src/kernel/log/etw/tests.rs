//! Tests of TraceLogging decoding, and of malformed events being violations.

use super::*;
use crate::kernel::log::{
    etw_enable, take_etw_events, EtwRegister, EtwUnregister, EtwWriteTransfer,
    EVENT_DATA_DESCRIPTOR, EVENT_DESCRIPTOR,
};
use crate::kernel::status::STATUS_SUCCESS;
use crate::kernel::violation;

const P: GUID = GUID {
    data1: 0x1234_5678,
    data2: 1,
    data3: 2,
    data4: [3, 4, 5, 6, 7, 8, 9, 10],
};

fn header() -> Header {
    Header {
        provider: P,
        level: 4,
        keyword: 0x80,
        opcode: 0,
        enabled: true,
    }
}

/// Metadata with a correct size prefix.
fn meta(body: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 0];
    m.extend_from_slice(body);
    let n = m.len() as u16;
    m[..2].copy_from_slice(&n.to_le_bytes());
    m
}

const TRAITS: &[u8] = b"\x08\x00Prov\0\0";

#[test]
fn every_field_type_the_driver_writes_decodes_by_name() {
    // tags 0, "Ev", then: Api ANSISTRING/UTF8, Status INT32/NTSTATUS,
    // Ok UINT8/BOOLEAN, Id GUID, H HEXINT64, N UINT32[] (vcount),
    // W COUNTEDSTRING, S INT8.
    let mut body = vec![0u8];
    body.extend_from_slice(b"Ev\0");
    body.extend_from_slice(b"Api\0\x82\x23");
    body.extend_from_slice(b"Status\0\x87\x0e");
    body.extend_from_slice(b"Ok\0\x84\x03");
    body.extend_from_slice(b"Id\0\x0f");
    body.extend_from_slice(b"H\0\x15");
    body.extend_from_slice(b"N\0\x48");
    body.extend_from_slice(b"W\0\x16");
    body.extend_from_slice(b"S\0\x03");
    let m = meta(&body);
    let mut data = b"PsSet\0".to_vec();
    data.extend_from_slice(&0xC000_009Au32.to_le_bytes());
    data.push(1);
    data.extend_from_slice(&[0x78, 0x56, 0x34, 0x12, 1, 0, 2, 0, 3, 4, 5, 6, 7, 8, 9, 10]);
    data.extend_from_slice(&0xFFFF_B000_0000_0100u64.to_le_bytes());
    data.extend_from_slice(&2u16.to_le_bytes());
    data.extend_from_slice(&7u32.to_le_bytes());
    data.extend_from_slice(&9u32.to_le_bytes());
    data.extend_from_slice(&4u16.to_le_bytes());
    data.extend_from_slice(&[b'h', 0, b'i', 0]);
    data.push(0xFF);
    let ev = decode(header(), TRAITS, &m, &data).unwrap();
    assert_eq!(ev.provider_name, "Prov");
    assert_eq!(ev.name, "Ev");
    assert_eq!(ev.str("Api"), Some("PsSet"));
    assert_eq!(ev.status("Status"), Some(0xC000_009Au32 as i32));
    assert_eq!(ev.field("Ok"), Some(&Value::Bool(true)));
    assert_eq!(ev.guid("Id"), Some(P));
    assert_eq!(ev.uint("H"), Some(0xFFFF_B000_0000_0100));
    assert_eq!(
        ev.field("N"),
        Some(&Value::Array(vec![Value::U32(7), Value::U32(9)]))
    );
    assert_eq!(ev.str("W"), Some("hi"));
    assert_eq!(ev.int("S"), Some(-1));
    assert_eq!(
        ev.to_string(),
        "Prov/Ev level=4 keyword=0x80 Api=\"PsSet\" Status=0xc000009a Ok=true \
         Id={12345678-0001-0002-0304-05060708090a} H=0xffffb00000000100 N=[7,9] W=\"hi\" S=-1"
    );
}

#[test]
fn malformed_metadata_or_data_is_an_error() {
    let good = meta(b"\0E\0V\0\x08");
    let four = 1u32.to_le_bytes();
    assert!(decode(header(), TRAITS, &good, &four).is_ok());
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "size prefix disagrees",
            b"\x09\x00\0E\0V\0\x08".to_vec(),
            four.to_vec(),
        ),
        ("name without NUL", meta(b"\0E"), vec![]),
        ("field without type", meta(b"\0E\0V\0"), four.to_vec()),
        ("unknown input type", meta(b"\0E\0V\0\x1f"), four.to_vec()),
        ("data too short", good.clone(), vec![1, 2]),
        ("data too long", good.clone(), vec![1, 2, 3, 4, 5]),
        (
            "tags past four bytes",
            meta(b"\x80\x80\x80\x80\x80E\0"),
            vec![],
        ),
        (
            "custom-serialized field",
            meta(b"\0E\0V\0\x68"),
            four.to_vec(),
        ),
    ];
    for (what, m, data) in cases {
        assert!(decode(header(), TRAITS, &m, &data).is_err(), "{what}");
    }
    assert!(
        decode(header(), b"\x09\x00Prov\0\0", &good, &four).is_err(),
        "traits size disagrees"
    );
}

#[test]
fn a_malformed_event_written_is_a_violation() {
    let _sim = crate::Sim::new();
    let mut h = 0u64;
    // SAFETY: valid GUID and out pointer, no callback.
    let st = unsafe { EtwRegister(&P, None, std::ptr::null_mut(), &mut h) };
    assert_eq!(st, STATUS_SUCCESS);
    etw_enable(&P, 5, u64::MAX, 0);
    let d = EVENT_DESCRIPTOR {
        Channel: 11,
        Level: 4,
        ..Default::default()
    };
    let bad = meta(b"\0E\0V\0\x08");
    let short = [1u8, 2];
    let descs = [
        EVENT_DATA_DESCRIPTOR {
            Ptr: bad.as_ptr() as u64,
            Size: bad.len() as u32,
            Type: 1,
            ..Default::default()
        },
        EVENT_DATA_DESCRIPTOR {
            Ptr: short.as_ptr() as u64,
            Size: 2,
            ..Default::default()
        },
    ];
    // SAFETY: all pointers are live locals.
    let st =
        unsafe { EtwWriteTransfer(h, &d, std::ptr::null(), std::ptr::null(), 2, descs.as_ptr()) };
    assert_eq!(st, STATUS_SUCCESS, "Windows stores it all the same");
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].message.contains("data ends inside"), "{v:?}");
    let ev = take_etw_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].decoded, None);
    assert_eq!(EtwUnregister(h), STATUS_SUCCESS);
}
