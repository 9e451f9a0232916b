//! Validation of a hook client (an eBPF link) at attach time: its
//! NPI-specific characteristics (`ebpf_extension_data_t`) and its dispatch
//! table. Pure functions over the raw structures, unit-tested on the host.

use super::abi::*;
use crate::nt::Error;
use core::ffi::c_void;

/// The client's functions, copied out of its dispatch table.
#[derive(Clone, Copy)]
pub struct ClientDispatch {
    /// `function[0]`: invoke one program.
    pub invoke: ebpf_program_invoke_function_t,
    /// `function[1..4]`, when the table has all three.
    pub batch: Option<BatchFunctions>,
}

/// Batch begin / invoke / end of one client.
#[derive(Clone, Copy)]
pub struct BatchFunctions {
    /// `ebpf_program_batch_begin_invoke_function_t`.
    pub begin: ebpf_program_batch_begin_invoke_function_t,
    /// `ebpf_program_batch_invoke_function_t`.
    pub invoke: ebpf_program_batch_invoke_function_t,
    /// `ebpf_program_batch_end_invoke_function_t`.
    pub end: ebpf_program_batch_end_invoke_function_t,
}

impl BatchFunctions {
    /// Whether two clients share one batch (links of the same core do).
    pub fn same_as(&self, other: &BatchFunctions) -> bool {
        self.begin as usize == other.begin as usize
            && self.invoke as usize == other.invoke as usize
            && self.end as usize == other.end as usize
    }
}

/// Why a client was refused (each maps to an NTSTATUS for NMR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// No `ebpf_extension_data_t`.
    MissingClientData,
    /// `header.version` is not [`EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION`].
    UnsupportedClientDataVersion,
    /// `header.size` does not cover `data` and `data_size`.
    ClientDataTooSmall,
    /// `data` is null with a non-zero `data_size`, or the reverse.
    InconsistentAttachParameters,
    /// No dispatch table.
    MissingDispatch,
    /// Dispatch table version is below [`EBPF_LINK_DISPATCH_TABLE_VERSION_1`].
    UnsupportedDispatchVersion,
    /// Dispatch table has no function, or a null invoke.
    MissingInvoke,
    /// The link's attach parameters are missing or of the wrong size for
    /// its attach type (`EBPF_INVALID_ARGUMENT` in the C extensions).
    InvalidAttachParameters,
    /// The link's attach parameters hold a value its attach type does not
    /// know (`EBPF_OPERATION_NOT_SUPPORTED` in the C extensions).
    UnsupportedAttachParameters,
}

impl ClientError {
    /// The status NMR reports for the refused attach.
    pub fn status(self) -> Error {
        match self {
            ClientError::UnsupportedClientDataVersion
            | ClientError::UnsupportedDispatchVersion
            | ClientError::UnsupportedAttachParameters => Error::NOT_SUPPORTED,
            _ => Error::INVALID_PARAMETER,
        }
    }
}

/// The attach parameters of a client whose characteristics
/// [`validate_client`] accepted: `data_size` bytes at `data`, empty when
/// it has none.
///
/// # Safety
/// `client_data` passed [`validate_client`], and its `data` stays valid
/// for `'a` (an eBPF core keeps it for the attach call).
pub unsafe fn attach_parameters<'a>(client_data: *const ebpf_extension_data_t) -> &'a [u8] {
    // SAFETY: validated: non-null, and its header covers both fields.
    let client_data = unsafe { &*client_data };
    if client_data.data.is_null() {
        &[]
    } else {
        // SAFETY: validated consistent; valid for `data_size` bytes
        // (caller's contract).
        unsafe { core::slice::from_raw_parts(client_data.data.cast::<u8>(), client_data.data_size) }
    }
}

/// Reads and checks a hook client's characteristics and dispatch table.
///
/// # Safety
/// `client_data`, when non-null, must point to at least the number of bytes
/// its header declares (and at least the header); `dispatch`, when
/// non-null, to a table of at least the function count it declares. These
/// are the guarantees an eBPF core gives; everything else is checked.
pub unsafe fn validate_client(
    client_data: *const ebpf_extension_data_t,
    dispatch: *const c_void,
) -> Result<ClientDispatch, ClientError> {
    if client_data.is_null() {
        return Err(ClientError::MissingClientData);
    }
    // SAFETY: non-null and valid for its header (caller's contract).
    let header = unsafe { (*client_data).header };
    if header.version != EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION {
        return Err(ClientError::UnsupportedClientDataVersion);
    }
    if header.size < EBPF_EXTENSION_DATA_MIN_SIZE {
        return Err(ClientError::ClientDataTooSmall);
    }
    // SAFETY: header.size covers `data` and `data_size` (checked above).
    let client_data = unsafe { &*client_data };
    let (data, data_size) = (client_data.data, client_data.data_size);
    if data.is_null() != (data_size == 0) {
        return Err(ClientError::InconsistentAttachParameters);
    }
    if dispatch.is_null() {
        return Err(ClientError::MissingDispatch);
    }
    // SAFETY: a dispatch table starts with its version and count.
    let table = unsafe { &*(dispatch as *const ebpf_extension_dispatch_table_header_t) };
    if table.version < EBPF_LINK_DISPATCH_TABLE_VERSION_1 {
        return Err(ClientError::UnsupportedDispatchVersion);
    }
    let count = table.count as usize;
    if count == 0 {
        return Err(ClientError::MissingInvoke);
    }
    let functions = (dispatch as *const u8).wrapping_add(EBPF_DISPATCH_FUNCTIONS_OFFSET)
        as *const Option<unsafe extern "system" fn()>;
    // SAFETY: the table holds `count` function slots after its header
    // (caller's contract).
    let functions = unsafe { core::slice::from_raw_parts(functions, count) };
    let slot = |i: usize| functions[i];
    let invoke = slot(0).ok_or(ClientError::MissingInvoke)?;
    let batch = if count >= 4 {
        match (slot(1), slot(2), slot(3)) {
            (Some(begin), Some(invoke), Some(end)) => Some(BatchFunctions {
                // SAFETY: slots 1..3 of an eBPF program dispatch table have
                // exactly these signatures (ebpf_extension.h).
                begin: unsafe {
                    core::mem::transmute::<
                        unsafe extern "system" fn(),
                        ebpf_program_batch_begin_invoke_function_t,
                    >(begin)
                },
                // SAFETY: as above.
                invoke: unsafe {
                    core::mem::transmute::<
                        unsafe extern "system" fn(),
                        ebpf_program_batch_invoke_function_t,
                    >(invoke)
                },
                // SAFETY: as above.
                end: unsafe {
                    core::mem::transmute::<
                        unsafe extern "system" fn(),
                        ebpf_program_batch_end_invoke_function_t,
                    >(end)
                },
            }),
            _ => None,
        }
    } else {
        None
    };
    Ok(ClientDispatch {
        // SAFETY: slot 0 is the invoke function (ebpf_extension.h).
        invoke: unsafe {
            core::mem::transmute::<unsafe extern "system" fn(), ebpf_program_invoke_function_t>(
                invoke,
            )
        },
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "system" fn invoke(_: *const c_void, _: *mut c_void, r: *mut u32) -> u32 {
        // SAFETY: test callers pass a valid result pointer.
        unsafe { *r = 7 };
        0
    }
    unsafe extern "system" fn begin(_: usize, _: *mut c_void) -> u32 {
        0
    }
    unsafe extern "system" fn binvoke(
        _: *const c_void,
        _: *mut c_void,
        _: *mut u32,
        _: *const c_void,
    ) -> u32 {
        0
    }
    unsafe extern "system" fn end(_: *mut c_void) -> u32 {
        0
    }
    unsafe extern "system" fn other_end(_: *mut c_void) -> u32 {
        1
    }

    #[repr(C)]
    struct Table {
        version: u16,
        count: u16,
        f: [usize; 4],
    }

    fn data(version: u16, size: usize, p: *const c_void, n: usize) -> ebpf_extension_data_t {
        ebpf_extension_data_t {
            header: ebpf_extension_header_t {
                version,
                size,
                total_size: 48,
            },
            data: p,
            data_size: n,
            prog_attach_flags: 0,
        }
    }

    fn table(version: u16, count: u16) -> Table {
        Table {
            version,
            count,
            f: [
                invoke as *const () as usize,
                begin as *const () as usize,
                binvoke as *const () as usize,
                end as *const () as usize,
            ],
        }
    }

    fn check(d: &ebpf_extension_data_t, t: &Table) -> Result<ClientDispatch, ClientError> {
        // SAFETY: both structures are complete and live.
        unsafe { validate_client(d, (t as *const Table).cast()) }
    }

    #[test]
    fn accepts_a_core_link_with_batch_functions() {
        let d = data(1, 48, core::ptr::null(), 0);
        let c = check(&d, &table(1, 4)).unwrap();
        let mut r = 0;
        // SAFETY: calls our own test invoke.
        unsafe { (c.invoke)(core::ptr::null(), core::ptr::null_mut(), &mut r) };
        assert_eq!(r, 7);
        assert!(c.batch.is_some());
        let only_invoke = check(&d, &table(1, 1)).unwrap();
        assert!(
            only_invoke.batch.is_none(),
            "count 1 has no batch functions"
        );
    }

    #[test]
    fn only_clients_with_all_three_batch_functions_equal_share_a_batch() {
        let fns = BatchFunctions {
            begin,
            invoke: binvoke,
            end,
        };
        assert!(fns.same_as(&{ fns }), "the same three functions");
        let ends_elsewhere = BatchFunctions {
            end: other_end,
            ..fns
        };
        assert!(!fns.same_as(&ends_elsewhere), "another end function");
        assert!(!ends_elsewhere.same_as(&fns));
    }

    #[test]
    fn refuses_malformed_clients() {
        let ok_table = table(1, 4);
        let k = 5u64;
        let p = (&k as *const u64).cast();
        // SAFETY: null is the case under test.
        let missing =
            unsafe { validate_client(core::ptr::null(), (&ok_table as *const Table).cast()) };
        assert_eq!(missing.err(), Some(ClientError::MissingClientData));
        assert_eq!(
            check(&data(0, 48, p, 8), &ok_table).err(),
            Some(ClientError::UnsupportedClientDataVersion)
        );
        assert_eq!(
            check(&data(1, 32, p, 8), &ok_table).err(),
            Some(ClientError::ClientDataTooSmall)
        );
        assert_eq!(
            check(&data(1, 48, core::ptr::null(), 8), &ok_table).err(),
            Some(ClientError::InconsistentAttachParameters)
        );
        assert_eq!(
            check(&data(1, 48, p, 0), &ok_table).err(),
            Some(ClientError::InconsistentAttachParameters)
        );
        let d = data(1, 48, p, 8);
        // SAFETY: null dispatch is the case under test.
        let no_dispatch = unsafe { validate_client(&d, core::ptr::null()) };
        assert_eq!(no_dispatch.err(), Some(ClientError::MissingDispatch));
        assert_eq!(
            check(&d, &table(0, 4)).err(),
            Some(ClientError::UnsupportedDispatchVersion)
        );
        assert_eq!(
            check(&d, &table(1, 0)).err(),
            Some(ClientError::MissingInvoke)
        );
        let mut null_invoke = table(1, 4);
        null_invoke.f[0] = 0;
        assert_eq!(
            check(&d, &null_invoke).err(),
            Some(ClientError::MissingInvoke)
        );
        let mut partial_batch = table(1, 4);
        partial_batch.f[3] = 0;
        assert!(check(&d, &partial_batch).unwrap().batch.is_none());
        assert_eq!(
            ClientError::MissingInvoke.status(),
            Error::INVALID_PARAMETER
        );
        assert_eq!(
            ClientError::UnsupportedDispatchVersion.status(),
            Error::NOT_SUPPORTED
        );
        // A link's attach parameters: the wrong size is invalid, an unknown
        // value unsupported (EBPF_INVALID_ARGUMENT and
        // EBPF_OPERATION_NOT_SUPPORTED in the C extensions).
        assert_eq!(
            ClientError::InvalidAttachParameters.status(),
            Error::INVALID_PARAMETER
        );
        assert_eq!(
            ClientError::UnsupportedAttachParameters.status(),
            Error::NOT_SUPPORTED
        );
    }
}
