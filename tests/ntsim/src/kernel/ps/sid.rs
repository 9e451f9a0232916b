//! SIDs, token queries and account lookup: `RtlLengthSid`, `RtlValidSid`,
//! `RtlCopySid`, `RtlEqualSid`, `SeQueryInformationToken` (TokenUser) and
//! KSECDD.SYS's `SecLookupAccountSid` over a configurable account table.
//!
//! SID layout: `u8 Revision (1)`, `u8 SubAuthorityCount (<= 15)`,
//! `u8 IdentifierAuthority[6]` (big-endian), `u32 SubAuthority[n]` (little
//! endian): 8 + 4n bytes, at most SECURITY_MAX_SID_SIZE (68).

use super::{state, token_user_sid, PACCESS_TOKEN, STATUS_INVALID_INFO_CLASS, STATUS_INVALID_SID};
use super::{STATUS_NONE_MAPPED, STATUS_NO_TOKEN};
use crate::kernel::export::export;
use crate::kernel::export::Export;
use crate::kernel::fault;
use crate::kernel::irql;
use crate::kernel::pool;
use crate::kernel::status::{
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
    STATUS_NO_MEMORY, STATUS_SUCCESS,
};
use crate::kernel::types::{APC_LEVEL, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use std::ffi::c_void;

pub const SECURITY_MAX_SID_SIZE: usize = 68;
pub const SID_MAX_SUB_AUTHORITIES: u8 = 15;
/// `TOKEN_INFORMATION_CLASS::TokenUser`.
pub const TOKEN_USER_CLASS: u32 = 1;
/// `SID_NAME_USE` values used by the default accounts.
pub const SID_NAME_USE_USER: u32 = 1;
pub const SID_NAME_USE_WELL_KNOWN_GROUP: u32 = 5;

/// S-1-5-18 (LocalSystem).
pub const SYSTEM_SID: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];

/// Pool tag of the TOKEN_USER blocks SeQueryInformationToken allocates.
const TOKEN_INFO_TAG: u32 = u32::from_le_bytes(*b"SeTu");

/// One entry of the account table `SecLookupAccountSid` resolves against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Binary SID.
    pub sid: Vec<u8>,
    pub name: String,
    pub domain: String,
    /// `SID_NAME_USE`.
    pub use_: u32,
}

/// The SID of the default test user, S-1-5-21-1111111111-2222222222-3333333333-1001
/// ("NTSIM\tester").
pub fn test_user_sid() -> Vec<u8> {
    parse_sid("S-1-5-21-1111111111-2222222222-3333333333-1001").expect("valid SID literal")
}

/// The account table after a reset: SYSTEM (S-1-5-18, "NT AUTHORITY") and
/// the test user ("NTSIM\tester", [`test_user_sid`]).
pub fn default_accounts() -> Vec<Account> {
    vec![
        Account {
            sid: SYSTEM_SID.to_vec(),
            name: "SYSTEM".into(),
            domain: "NT AUTHORITY".into(),
            use_: SID_NAME_USE_WELL_KNOWN_GROUP,
        },
        Account {
            sid: test_user_sid(),
            name: "tester".into(),
            domain: "NTSIM".into(),
            use_: SID_NAME_USE_USER,
        },
    ]
}

/// Replaces the account table (until the next reset).
pub fn set_accounts(accounts: Vec<Account>) {
    for a in &accounts {
        assert!(valid_sid_bytes(&a.sid), "account {:?}: invalid SID", a.name);
    }
    state().accounts = accounts;
}

/// How many times `SecLookupAccountSid` was called since the last reset
/// (successful or not).
pub fn account_lookups() -> u64 {
    state().account_lookups
}

/// Parses "S-1-5-21-..." into a binary SID.
pub fn parse_sid(text: &str) -> Option<Vec<u8>> {
    let mut parts = text.strip_prefix("S-")?.split('-');
    let revision: u8 = parts.next()?.parse().ok()?;
    let authority: u64 = parts.next()?.parse().ok()?;
    if revision != 1 || authority >= 1 << 48 {
        return None;
    }
    let subs: Vec<u32> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if subs.len() > SID_MAX_SUB_AUTHORITIES as usize {
        return None;
    }
    let mut sid = vec![revision, subs.len() as u8];
    sid.extend_from_slice(&authority.to_be_bytes()[2..]);
    for s in subs {
        sid.extend_from_slice(&s.to_le_bytes());
    }
    Some(sid)
}

/// Formats a binary SID as "S-1-...". None if it is not a valid SID.
pub fn sid_to_string(sid: &[u8]) -> Option<String> {
    if !valid_sid_bytes(sid) {
        return None;
    }
    let mut auth = [0u8; 8];
    auth[2..].copy_from_slice(&sid[2..8]);
    let mut text = format!("S-{}-{}", sid[0], u64::from_be_bytes(auth));
    for chunk in sid[8..].chunks(4) {
        text.push_str(&format!("-{}", u32::from_le_bytes(chunk.try_into().ok()?)));
    }
    Some(text)
}

/// A well-formed SID of exactly its own length.
pub(crate) fn valid_sid_bytes(sid: &[u8]) -> bool {
    sid.len() >= 8
        && sid[0] == 1
        && sid[1] <= SID_MAX_SUB_AUTHORITIES
        && sid.len() == 8 + 4 * sid[1] as usize
}

/// Reads the SID at `p` (a driver pointer, not null): Err with the header
/// when the header is not that of a valid SID.
///
/// # Safety
/// `p` must be readable for 2 bytes, and for the whole SID when valid.
unsafe fn read_sid(p: *const u8) -> Result<Vec<u8>, (u8, u8)> {
    // SAFETY: the caller guarantees the 2-byte header is readable.
    let (revision, count) = unsafe { (*p, *p.add(1)) };
    if revision != 1 || count > SID_MAX_SUB_AUTHORITIES {
        return Err((revision, count));
    }
    let len = 8 + 4 * count as usize;
    // SAFETY: a valid SID header promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) }.to_vec())
}

/// `RtlValidSid`: FALSE for NULL or a bad revision / sub-authority count.
///
/// # Safety
/// `sid` must be NULL or readable as a SID.
pub unsafe extern "win64" fn RtlValidSid(sid: *const c_void) -> u8 {
    irql::require_at_most("RtlValidSid", APC_LEVEL);
    if sid.is_null() {
        return 0;
    }
    // SAFETY: the caller passes a readable SID.
    unsafe { read_sid(sid as *const u8) }.is_ok() as u8
}

/// `RtlLengthSid`: 8 + 4 * SubAuthorityCount. Windows leaves the result
/// undefined for an invalid SID; here that is a violation.
///
/// # Safety
/// `sid` must be readable as a SID.
pub unsafe extern "win64" fn RtlLengthSid(sid: *const c_void) -> u32 {
    irql::require_at_most("RtlLengthSid", APC_LEVEL);
    if sid.is_null() {
        violation::record("ps", "RtlLengthSid: NULL SID");
        return 0;
    }
    // SAFETY: the caller passes a readable SID.
    match unsafe { read_sid(sid as *const u8) } {
        Ok(bytes) => bytes.len() as u32,
        Err((rev, count)) => {
            violation::record(
                "ps",
                format!(
                    "RtlLengthSid on an invalid SID (revision {rev}, {count} sub-authorities): \
                     the result is undefined; check with RtlValidSid first"
                ),
            );
            8 + 4 * count as u32
        }
    }
}

/// `RtlCopySid`: STATUS_BUFFER_TOO_SMALL when `dest_len` is shorter than
/// the source SID.
///
/// # Safety
/// `src` must be a readable valid SID and `dest` writable for `dest_len`
/// bytes.
pub unsafe extern "win64" fn RtlCopySid(
    dest_len: u32,
    dest: *mut c_void,
    src: *const c_void,
) -> NTSTATUS {
    irql::require_at_most("RtlCopySid", APC_LEVEL);
    if dest.is_null() || src.is_null() {
        violation::record("ps", "RtlCopySid: NULL SID pointer");
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller passes a readable SID.
    let bytes = match unsafe { read_sid(src as *const u8) } {
        Ok(b) => b,
        Err((rev, count)) => {
            violation::record(
                "ps",
                format!("RtlCopySid: invalid source SID (revision {rev}, {count} sub-authorities)"),
            );
            return STATUS_INVALID_SID;
        }
    };
    if (dest_len as usize) < bytes.len() {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: `dest` is writable for dest_len >= bytes.len() bytes (caller);
    // `bytes` is our own copy, so the ranges do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dest as *mut u8, bytes.len()) };
    STATUS_SUCCESS
}

/// `RtlEqualSid`.
///
/// # Safety
/// Both must be readable valid SIDs.
pub unsafe extern "win64" fn RtlEqualSid(a: *const c_void, b: *const c_void) -> u8 {
    irql::require_at_most("RtlEqualSid", APC_LEVEL);
    if a.is_null() || b.is_null() {
        violation::record("ps", "RtlEqualSid: NULL SID pointer");
        return 0;
    }
    // SAFETY: the caller passes readable SIDs.
    let (x, y) = unsafe { (read_sid(a as *const u8), read_sid(b as *const u8)) };
    match (x, y) {
        (Ok(x), Ok(y)) => (x == y) as u8,
        _ => {
            violation::record("ps", "RtlEqualSid: invalid SID");
            0
        }
    }
}

/// `SeQueryInformationToken`. Only TokenUser (1) is modeled: the result is
/// a pool block holding `TOKEN_USER { SID_AND_ATTRIBUTES User { PSID Sid;
/// ULONG Attributes; } }` followed by the SID, which the caller frees with
/// ExFreePool. Fault injection "SeQueryInformationToken" fails with
/// STATUS_INSUFFICIENT_RESOURCES; a token created without a user SID fails
/// with STATUS_NO_TOKEN. Any other class returns STATUS_INVALID_INFO_CLASS
/// and is recorded as a violation, because Windows would answer it and
/// ntsim does not model it.
///
/// # Safety
/// `token` is validated against the object table; `information` must be
/// writable.
pub unsafe extern "win64" fn SeQueryInformationToken(
    token: PACCESS_TOKEN,
    class: u32,
    information: *mut *mut c_void,
) -> NTSTATUS {
    const API: &str = "SeQueryInformationToken";
    irql::require_at_most(API, PASSIVE_LEVEL);
    if information.is_null() {
        violation::record("ps", format!("{API}: NULL TokenInformation"));
        return STATUS_INVALID_PARAMETER;
    }
    let Ok(user_sid) = token_user_sid(API, token) else {
        return STATUS_INVALID_PARAMETER;
    };
    if class != TOKEN_USER_CLASS {
        violation::record(
            "ps",
            format!("{API}: information class {class} is not modeled by ntsim (only TokenUser)"),
        );
        return STATUS_INVALID_INFO_CLASS;
    }
    if fault::check(API) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let Some(sid) = user_sid else {
        return STATUS_NO_TOKEN;
    };
    let block = pool::kernel_alloc(16 + sid.len(), TOKEN_INFO_TAG) as *mut u8;
    if block.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: `block` is a fresh, zeroed, 8-aligned pool block of 16 +
    // sid.len() bytes: the TOKEN_USER header (Sid pointer, Attributes 0)
    // then the SID it points at; `information` is writable (checked
    // non-null, caller's promise).
    unsafe {
        let sid_ptr = block.add(16);
        std::ptr::copy_nonoverlapping(sid.as_ptr(), sid_ptr, sid.len());
        *(block as *mut *mut u8) = sid_ptr;
        *information = block as *mut c_void;
    }
    STATUS_SUCCESS
}

/// Writes `text` into a caller's UNICODE_STRING (capacity already checked).
///
/// # Safety
/// `us` must be a writable UNICODE_STRING whose Buffer holds
/// `units.len() * 2` bytes.
unsafe fn fill(us: *mut UNICODE_STRING, units: &[u16]) {
    // SAFETY: per the caller's contract.
    unsafe {
        if !units.is_empty() {
            std::ptr::copy_nonoverlapping(units.as_ptr(), (*us).Buffer, units.len());
        }
        (*us).Length = (units.len() * 2) as u16;
    }
}

/// Whether a caller's UNICODE_STRING (with the size it declared) can hold
/// `bytes` bytes.
///
/// # Safety
/// `us` must be NULL or a readable UNICODE_STRING.
unsafe fn fits(us: *const UNICODE_STRING, declared: u32, bytes: usize) -> bool {
    if us.is_null() {
        return false;
    }
    // SAFETY: per the caller's contract.
    let (max, buf) = unsafe { ((*us).MaximumLength as usize, (*us).Buffer) };
    declared as usize >= bytes && max >= bytes && (bytes == 0 || !buf.is_null())
}

/// `SecLookupAccountSid` (KSECDD.SYS), over the account table
/// ([`set_accounts`]). PASSIVE_LEVEL; every call is counted
/// ([`account_lookups`]).
///
/// Sizes are in bytes, without a terminating NUL. `*NameSize` (and
/// `*DomainSize`) give the capacity of the caller's buffer on input, which
/// must also fit the UNICODE_STRING's MaximumLength. DomainBuffer is
/// optional: when NULL the domain is not returned and `*DomainSize` is set
/// to 0. If the name (or the requested domain) does not fit, or NameBuffer
/// is NULL: STATUS_BUFFER_TOO_SMALL, nothing copied, `*NameSize` (and
/// `*DomainSize` when DomainBuffer was given) receive the required sizes.
/// On success the strings are copied, their Length set, the sizes set to
/// the lengths and `*NameUse` written. Unknown SID: STATUS_NONE_MAPPED;
/// malformed SID: STATUS_INVALID_SID; fault injection "SecLookupAccountSid":
/// STATUS_NO_MEMORY (what the page documents for allocation failure).
///
/// # Safety
/// Pointers must be NULL (where optional) or valid for their types.
pub unsafe extern "win64" fn SecLookupAccountSid(
    sid: *const c_void,
    name_size: *mut u32,
    name_buffer: *mut UNICODE_STRING,
    domain_size: *mut u32,
    domain_buffer: *mut UNICODE_STRING,
    name_use: *mut u32,
) -> NTSTATUS {
    const API: &str = "SecLookupAccountSid";
    irql::require_at_most(API, PASSIVE_LEVEL);
    let accounts = {
        let mut s = state();
        s.account_lookups += 1;
        s.accounts.clone()
    };
    if sid.is_null() || name_size.is_null() || name_use.is_null() {
        violation::record("ps", format!("{API}: NULL Sid, NameSize or NameUse"));
        return STATUS_INVALID_PARAMETER;
    }
    if !domain_buffer.is_null() && domain_size.is_null() {
        violation::record(
            "ps",
            format!("{API}: DomainBuffer given without DomainSize"),
        );
        return STATUS_INVALID_PARAMETER;
    }
    if fault::check(API) {
        return STATUS_NO_MEMORY;
    }
    // SAFETY: the caller passes a readable SID.
    let Ok(bytes) = (unsafe { read_sid(sid as *const u8) }) else {
        return STATUS_INVALID_SID;
    };
    let Some(account) = accounts.iter().find(|a| a.sid == bytes) else {
        return STATUS_NONE_MAPPED;
    };
    let name: Vec<u16> = account.name.encode_utf16().collect();
    let domain: Vec<u16> = account.domain.encode_utf16().collect();
    let want_domain = !domain_buffer.is_null();
    // SAFETY: non-null size pointers are readable/writable and non-null
    // UNICODE_STRINGs are valid, per the caller's contract; `fits` checked
    // the buffers' capacity before `fill` writes.
    unsafe {
        let name_ok = fits(name_buffer, *name_size, name.len() * 2);
        let domain_ok = !want_domain || fits(domain_buffer, *domain_size, domain.len() * 2);
        if !name_ok || !domain_ok {
            *name_size = (name.len() * 2) as u32;
            if want_domain {
                *domain_size = (domain.len() * 2) as u32;
            } else if !domain_size.is_null() {
                *domain_size = 0;
            }
            return STATUS_BUFFER_TOO_SMALL;
        }
        fill(name_buffer, &name);
        *name_size = (name.len() * 2) as u32;
        if want_domain {
            fill(domain_buffer, &domain);
            *domain_size = (domain.len() * 2) as u32;
        } else if !domain_size.is_null() {
            *domain_size = 0;
        }
        *name_use = account.use_;
    }
    STATUS_SUCCESS
}

pub(crate) fn exports() -> Vec<Export> {
    vec![
        export!("ntoskrnl.exe", RtlValidSid),
        export!("ntoskrnl.exe", RtlLengthSid),
        export!("ntoskrnl.exe", RtlCopySid),
        export!("ntoskrnl.exe", RtlEqualSid),
        export!("ntoskrnl.exe", SeQueryInformationToken),
        export!("KSECDD.SYS", SecLookupAccountSid),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_text_round_trip() {
        let sid = parse_sid("S-1-5-18").unwrap();
        assert_eq!(sid, SYSTEM_SID);
        let user = test_user_sid();
        assert_eq!(user.len(), 8 + 4 * 5);
        assert_eq!(
            sid_to_string(&user).unwrap(),
            "S-1-5-21-1111111111-2222222222-3333333333-1001"
        );
        assert!(parse_sid("S-2-5-18").is_none());
        assert!(parse_sid("S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16").is_none());
        assert!(sid_to_string(&[1, 2, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]).is_none());
    }
}
