//! The drivers' ABI declarations against ntsim's, pair by pair.
//!
//! The drivers (`ntosebpfext`, `neteventebpfext`, and the `ebpf_ext`
//! library they share) and the simulator (`ntsim`) each declare the
//! Windows and eBPF for Windows structures and constants they exchange,
//! independently and from the upstream headers: ntsim judges the driver,
//! and a judge that read the driver's declarations would accept its
//! mistakes (see the module docs of both crates' `ebpf::abi`). Neither
//! crate depends on the other; this test crate depends on both and checks
//! that the two copies agree:
//!
//! - **Structures** ([`pairs`]): size, alignment, and the offset and size
//!   of every field, compared by field name ([`Rule::Same`]). A few pairs
//!   differ in shape on purpose and say so: the driver declares a
//!   kernel-owned object as opaque bytes ([`Rule::SizeAlign`], with the
//!   reason), or only the head of a structure ([`Rule::DriverPrefix`]).
//!   Structures ntsim has only as byte offsets (`process_md_t`, the
//!   `bpf_prog_test_run` context, `thread_md_t`, `image_load_md_t`) are
//!   compared through their bytes: each side writes a value with a
//!   distinct number in every field and the other side decodes it
//!   ([`process_md_and_test_run_context_bytes`],
//!   [`thread_and_image_load_md_bytes`]).
//! - **Constants** ([`constants`]): GUIDs, helper ids, `ebpf_result_t`,
//!   argument and return type values, NPI ids, header sizes, NTSTATUS,
//!   registry, pool, debug-print and ETW constants that both sides use,
//!   compared by value (integers of any width, strings, GUIDs field by
//!   field).
//!
//! **What keeps the lists complete.** Three mechanisms, so that a new
//! field, structure or constant cannot be forgotten silently:
//!
//! 1. Every field list in [`layout!`] is also written as a struct pattern
//!    without `..` (and the byte comparisons build and destructure the
//!    structures without `..`), so a field added to either side's
//!    structure, or a field missing from a list, is a compile error here.
//!    That is exact where a "sum of field sizes" check is not (a missing
//!    small field can hide in padding).
//! 2. [`every_abi_struct_is_compared_or_one_sided`] reads the ABI source
//!    files of both sides (including every file of each driver's
//!    `src/hooks/` and of ntsim's `hook/`, where new hooks go) and lists
//!    each `#[repr(C)]` `pub struct`/`union`: each must be in a pair, compared through its
//!    bytes, or listed as one-sided with the reason; a listed name that no
//!    longer exists fails too.
//! 3. [`every_shared_constant_name_is_compared`] lists the `pub const`
//!    names of the same files: a name both sides define must be compared
//!    or be listed as a same-name-different-thing with the reason.
//!
//! Values only one side has (the process helper ids and program/attach
//! type numbers, which ntsim takes from the sample programs and the store
//! the driver writes) are not compared here; the integration tests that
//! load the image check them in behaviour.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use ebpf_ext as ext;
use neteventebpfext::hooks::netevent as net;
use ntosebpfext as drv;
use ntsim as sim;
use std::collections::BTreeSet;
use std::mem::{align_of, offset_of, size_of};

/// One side of a pair: a type's size, alignment and listed fields (name,
/// offset, size).
#[derive(Debug)]
struct Layout {
    name: &'static str,
    size: usize,
    align: usize,
    fields: Vec<(&'static str, usize, usize)>,
}

/// The size of the field a projection returns.
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// The last segment of a stringified path (`a :: b :: C` -> `C`).
fn last_segment(path: &'static str) -> &'static str {
    path.rsplit("::").next().unwrap_or(path).trim()
}

/// The layout of a struct from the list of all its fields; the list must
/// be complete (an exhaustive pattern checks it at compile time).
macro_rules! layout {
    ($($seg:ident)::+ { $($f:ident),* $(,)? }) => {{
        type This = $($seg)::+;
        #[allow(dead_code)]
        fn exhaustive(v: &This) {
            // No `..`: a field missing from the list does not compile.
            let This { $($f: _),* } = v;
        }
        Layout {
            name: last_segment(stringify!($($seg)::+)),
            size: size_of::<This>(),
            align: align_of::<This>(),
            fields: vec![$((
                stringify!($f),
                offset_of!(This, $f),
                field_size::<This, _>(|v| &v.$f),
            )),*],
        }
    }};
}

/// How a pair is compared.
#[derive(Debug)]
enum Rule {
    /// Same size and alignment, same field names in the same order, each
    /// at the same offset with the same size.
    Same,
    /// The driver declares the head of the structure: each of its fields
    /// is ntsim's field of the same name (offset and size).
    DriverPrefix,
    /// The driver declares the object as opaque storage: same size and
    /// alignment only (the reason says why that is enough).
    SizeAlign(&'static str),
}

/// A driver type and ntsim's declaration of the same C type.
#[derive(Debug)]
struct Pair {
    driver: Layout,
    ntsim: Layout,
    rule: Rule,
}

/// A pair whose two declarations have the same fields.
macro_rules! same {
    ($($d:ident)::+, $($n:ident)::+; $($f:ident),+ $(,)?) => {
        Pair {
            driver: layout!($($d)::+ { $($f),+ }),
            ntsim: layout!($($n)::+ { $($f),+ }),
            rule: Rule::Same,
        }
    };
}

/// Every structure both sides declare (see the module docs for the rules).
fn pairs() -> Vec<Pair> {
    vec![
        // eBPF for Windows (ebpf_extension.h, ebpf_program_types.h,
        // ebpf_windows.h).
        same!(ext::ebpf::abi::ebpf_extension_header_t, sim::ebpf::abi::ebpf_extension_header_t;
            version, size, total_size),
        same!(ext::ebpf::abi::ebpf_context_descriptor_t, sim::ebpf::abi::ebpf_context_descriptor_t;
            size, data, end, meta),
        same!(ext::ebpf::abi::ebpf_program_type_descriptor_t,
            sim::ebpf::abi::ebpf_program_type_descriptor_t;
            header, name, context_descriptor, program_type, bpf_prog_type, is_privileged),
        same!(ext::ebpf::abi::ebpf_helper_function_prototype_t,
            sim::ebpf::abi::ebpf_helper_function_prototype_t;
            header, helper_id, name, return_type, arguments, flags, implicit_context),
        same!(ext::ebpf::abi::ebpf_program_info_t, sim::ebpf::abi::ebpf_program_info_t;
            header, program_type_descriptor, count_of_program_type_specific_helpers,
            program_type_specific_helper_prototype, count_of_global_helpers,
            global_helper_prototype),
        same!(ext::ebpf::abi::ebpf_helper_function_addresses_t,
            sim::ebpf::abi::ebpf_helper_function_addresses_t;
            header, helper_function_count, helper_function_address),
        same!(ext::ebpf::abi::ebpf_program_data_t, sim::ebpf::abi::ebpf_program_data_t;
            header, program_info, program_type_specific_helper_function_addresses,
            global_helper_function_addresses, context_create, context_destroy, required_irql,
            capabilities),
        same!(ext::ebpf::abi::ebpf_attach_provider_data_t,
            sim::ebpf::abi::ebpf_attach_provider_data_t;
            header, supported_program_type, bpf_attach_type, link_type),
        same!(ext::ebpf::abi::ebpf_extension_data_t, sim::ebpf::abi::ebpf_extension_data_t;
            header, data, data_size, prog_attach_flags),
        same!(ext::ebpf::abi::ebpf_context_header_t, sim::ebpf::abi::ebpf_context_header_t;
            context_header),
        Pair {
            driver: layout!(ext::ebpf::abi::ebpf_extension_dispatch_table_header_t {
                version,
                count
            }),
            ntsim: layout!(sim::ebpf::abi::ebpf_extension_program_dispatch_table_t {
                version,
                count,
                ebpf_program_invoke_function,
                ebpf_program_batch_begin_invoke_function,
                ebpf_program_batch_invoke_function,
                ebpf_program_batch_end_invoke_function,
            }),
            rule: Rule::DriverPrefix,
        },
        Pair {
            driver: layout!(ext::ebpf::abi::ebpf_execution_context_state_t { bytes }),
            ntsim: layout!(sim::ebpf::abi::ebpf_execution_context_state_t {
                epoch_state,
                id,
                current_irql,
                tail_call_state
            }),
            rule: Rule::SizeAlign(
                "the core fills the batch state; the driver only provides its storage",
            ),
        },
        // The kernel (wdm.h, netioddk.h, ntddk.h, evntprov.h).
        same!(ext::nt::GUID, sim::types::GUID; data1, data2, data3, data4),
        same!(ext::nt::UNICODE_STRING, sim::types::UNICODE_STRING;
            Length, MaximumLength, Buffer),
        same!(ext::nt::DRIVER_OBJECT, sim::types::DRIVER_OBJECT;
            Type, Size, DeviceObject, Flags, DriverStart, DriverSize, DriverSection,
            DriverExtension, DriverName, HardwareDatabase, FastIoDispatch, DriverInit,
            DriverStartIo, DriverUnload, MajorFunction),
        same!(ext::nt::NPI_MODULEID, sim::nmr::NPI_MODULEID; Length, Type, Guid),
        same!(ext::nt::NPI_REGISTRATION_INSTANCE, sim::nmr::NPI_REGISTRATION_INSTANCE;
            Version, Size, NpiId, ModuleId, Number, NpiSpecificCharacteristics),
        same!(ext::nt::NPI_PROVIDER_CHARACTERISTICS, sim::nmr::NPI_PROVIDER_CHARACTERISTICS;
            Version, Length, ProviderAttachClient, ProviderDetachClient,
            ProviderCleanupBindingContext, ProviderRegistrationInstance),
        same!(ext::nt::NPI_CLIENT_CHARACTERISTICS, sim::nmr::NPI_CLIENT_CHARACTERISTICS;
            Version, Length, ClientAttachProvider, ClientDetachProvider,
            ClientCleanupBindingContext, ClientRegistrationInstance),
        same!(ext::nt::PROCESSOR_NUMBER, sim::kernel::processor::PROCESSOR_NUMBER;
            Group, Number, Reserved),
        same!(ext::nt::CLIENT_ID, sim::ps::CLIENT_ID; UniqueProcess, UniqueThread),
        same!(ext::nt::PS_CREATE_NOTIFY_INFO, sim::ps::PS_CREATE_NOTIFY_INFO;
            Size, Flags, ParentProcessId, CreatingThreadId, FileObject, ImageFileName,
            CommandLine, CreationStatus),
        same!(ext::nt::IMAGE_INFO, sim::ps::IMAGE_INFO;
            Properties, ImageBase, ImageSelector, ImageSize, ImageSectionNumber),
        same!(ext::nt::IMAGE_INFO_EX, sim::ps::IMAGE_INFO_EX; Size, ImageInfo, FileObject),
        same!(ext::nt::THREAD_BASIC_INFORMATION, sim::ps::thread::THREAD_BASIC_INFORMATION;
            ExitStatus, TebBaseAddress, ClientId, AffinityMask, Priority, BasePriority),
        same!(ext::nt::OBJECT_ATTRIBUTES, sim::registry::OBJECT_ATTRIBUTES;
            Length, RootDirectory, ObjectName, Attributes, SecurityDescriptor,
            SecurityQualityOfService),
        same!(ext::nt::EVENT_DESCRIPTOR, sim::log::EVENT_DESCRIPTOR;
            Id, Version, Channel, Level, Opcode, Task, Keyword),
        same!(ext::nt::EVENT_DATA_DESCRIPTOR, sim::log::EVENT_DATA_DESCRIPTOR;
            Ptr, Size, Type, Reserved1, Reserved2),
        // The netevent program type (ebpf_netevent_hooks.h) and the
        // netevent NPI (its client dispatch, its event, its provider
        // characteristics).
        same!(net::netevent_event_md_t, sim::hook::netevent::netevent_event_md_t;
            data_meta, data, data_end),
        same!(net::netevent_data_header_t, sim::hook::netevent::netevent_data_header_t;
            r#type, reserved, version),
        same!(net::netevent_ext_header_t, sim::netevent::netevent_ext_header_t; version, size),
        same!(net::netevent_ext_function_addresses_t,
            sim::netevent::netevent_ext_function_addresses_t;
            header, capture_type, helper_function_count, helper_function_address),
        same!(net::netevent_event_info_t, sim::netevent::netevent_event_info_t;
            event_data_start, event_data_end),
        same!(net::ProviderCharacteristics, sim::netevent::NpiSpecific; size, version),
        Pair {
            driver: layout!(ext::nt::KEVENT { opaque }),
            ntsim: layout!(sim::sync::KEVENT {
                Type,
                Signalling,
                Size,
                Reserved1,
                SignalState,
                WaitListHead
            }),
            rule: Rule::SizeAlign(
                "a dispatcher header only the kernel reads or writes; the driver \
                 provides the storage",
            ),
        },
    ]
}

/// What is wrong with a pair (empty when it agrees).
fn disagreements(pair: &Pair) -> Vec<String> {
    let (d, n) = (&pair.driver, &pair.ntsim);
    let who = format!("driver {} / ntsim {}", d.name, n.name);
    let mut out = Vec::new();
    if !matches!(pair.rule, Rule::DriverPrefix) {
        if d.size != n.size {
            out.push(format!("{who}: size {} / {}", d.size, n.size));
        }
        if d.align != n.align {
            out.push(format!("{who}: alignment {} / {}", d.align, n.align));
        }
    }
    let compare = |out: &mut Vec<String>, (name, offset, size): &(&str, usize, usize)| match n
        .fields
        .iter()
        .find(|f| f.0 == *name)
    {
        None => out.push(format!("{who}: ntsim has no field {name}")),
        Some(&(_, n_offset, n_size)) => {
            if (*offset, *size) != (n_offset, n_size) {
                out.push(format!(
                    "{who}: field {name} at {offset} ({size} bytes) / at {n_offset} \
                         ({n_size} bytes)"
                ));
            }
        }
    };
    match pair.rule {
        Rule::Same => {
            let names = |l: &Layout| l.fields.iter().map(|f| f.0).collect::<Vec<_>>();
            if names(d) != names(n) {
                out.push(format!("{who}: fields {:?} / {:?}", names(d), names(n)));
            }
            for f in &d.fields {
                compare(&mut out, f);
            }
        }
        Rule::DriverPrefix => {
            for f in &d.fields {
                compare(&mut out, f);
            }
        }
        Rule::SizeAlign(reason) => assert!(!reason.is_empty(), "{who}: a reason"),
    }
    out
}

#[test]
fn structures_agree() {
    let pairs = pairs();
    let wrong: Vec<String> = pairs.iter().flat_map(disagreements).collect();
    assert!(
        wrong.is_empty(),
        "the driver's and ntsim's declarations differ:\n{}",
        wrong.join("\n")
    );
    // The rules cannot pass vacuously: a Same pair lists fields.
    for p in &pairs {
        if matches!(p.rule, Rule::Same | Rule::DriverPrefix) {
            assert!(
                !p.driver.fields.is_empty(),
                "{} lists no field",
                p.driver.name
            );
        }
    }
}

#[test]
fn the_comparison_catches_a_moved_field() {
    // Two declarations of one C struct that disagree on a field's offset:
    // the check must say so (it guards `structures_agree` against
    // comparing nothing).
    #[repr(C)]
    struct A {
        x: u32,
        y: u64,
    }
    #[repr(C)]
    struct B {
        x: u32,
        y: u32,
    }
    let _ = (
        A { x: 0, y: 0 }.x,
        A { x: 0, y: 0 }.y,
        B { x: 0, y: 0 }.x,
        B { x: 0, y: 0 }.y,
    );
    let pair = Pair {
        driver: layout!(A { x, y }),
        ntsim: layout!(B { x, y }),
        rule: Rule::Same,
    };
    let wrong = disagreements(&pair);
    assert!(
        wrong
            .iter()
            .any(|w| w.contains("field y at 8 (8 bytes) / at 4 (4 bytes)")),
        "{wrong:?}"
    );
    assert!(wrong.iter().any(|w| w.contains("size 16 / 8")), "{wrong:?}");
}

/// A constant's value in a form both sides' types convert to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Int(i128),
    Str(String),
    Guid(u32, u16, u16, [u8; 8]),
}

/// Conversion of a constant to a comparable [`Value`].
trait Canon {
    fn canon(&self) -> Value;
}

macro_rules! canon_int {
    ($($t:ty),*) => {$(
        impl Canon for $t {
            fn canon(&self) -> Value {
                Value::Int(i128::from(*self))
            }
        }
    )*};
}
canon_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Canon for usize {
    fn canon(&self) -> Value {
        Value::Int(*self as i128)
    }
}

impl Canon for &str {
    fn canon(&self) -> Value {
        Value::Str((*self).to_owned())
    }
}

impl Canon for String {
    fn canon(&self) -> Value {
        Value::Str(self.clone())
    }
}

impl Canon for ext::nt::GUID {
    fn canon(&self) -> Value {
        Value::Guid(self.data1, self.data2, self.data3, self.data4)
    }
}

impl Canon for sim::types::GUID {
    fn canon(&self) -> Value {
        Value::Guid(self.data1, self.data2, self.data3, self.data4)
    }
}

/// A compared constant: each side's expression and value.
struct Constant {
    driver: &'static str,
    driver_value: Value,
    ntsim: &'static str,
    ntsim_value: Value,
}

/// `driver => ntsim` pairs of constants.
macro_rules! constants {
    ($($d:expr => $n:expr),* $(,)?) => {
        vec![$(Constant {
            driver: stringify!($d),
            driver_value: Canon::canon(&$d),
            ntsim: stringify!($n),
            ntsim_value: Canon::canon(&$n),
        }),*]
    };
}

/// Every constant both sides define.
fn constants() -> Vec<Constant> {
    use drv::hooks::image_load as di;
    use drv::hooks::process as dp;
    use drv::hooks::thread as dt;
    use ext::ebpf::abi as da;
    use ext::ebpf::abi::EbpfError;
    use ext::nt as dn;
    use ext::nt::Error;
    use sim::ebpf::abi as sa;
    use sim::status as ss;
    constants![
        // GUIDs: NPI ids, the process program and attach types, the ETW
        // provider.
        da::EBPF_PROGRAM_INFO_EXTENSION_IID => sa::EBPF_PROGRAM_INFO_EXTENSION_IID,
        da::EBPF_HOOK_EXTENSION_IID => sa::EBPF_HOOK_EXTENSION_IID,
        dp::EBPF_PROGRAM_TYPE_PROCESS => sim::process::PROGRAM_TYPE,
        dp::EBPF_ATTACH_TYPE_PROCESS => sim::process::ATTACH_TYPE,
        drv::TRACE.guid() => sim::hook::ETW_PROVIDER,
        // The thread and image-load program types: identity, enums, flags
        // and context sizes (the contexts themselves:
        // thread_and_image_load_md_bytes).
        dt::EBPF_PROGRAM_TYPE_THREAD => sim::hook::thread::PROGRAM_TYPE,
        dt::EBPF_ATTACH_TYPE_THREAD => sim::hook::thread::ATTACH_TYPE,
        di::EBPF_PROGRAM_TYPE_IMAGE_LOAD => sim::hook::image_load::PROGRAM_TYPE,
        di::EBPF_ATTACH_TYPE_IMAGE_LOAD => sim::hook::image_load::ATTACH_TYPE,
        dt::THREAD_OPERATION_CREATE => sim::hook::thread::OPERATION_CREATE,
        dt::THREAD_OPERATION_EXIT => sim::hook::thread::OPERATION_EXIT,
        dt::THREAD_FLAG_REMOTE => sim::hook::thread::FLAG_REMOTE,
        dt::THREAD_FLAG_SYSTEM => sim::hook::thread::FLAG_SYSTEM,
        size_of::<dt::thread_md_t>() => sim::hook::thread::CONTEXT_SIZE,
        di::IMAGE_LOAD_FLAG_SYSTEM_MODE => sim::hook::image_load::FLAG_SYSTEM_MODE,
        di::IMAGE_LOAD_FLAG_MAPPED_TO_ALL_PIDS => sim::hook::image_load::FLAG_MAPPED_TO_ALL_PIDS,
        di::IMAGE_LOAD_FLAG_PARTIAL_MAP => sim::hook::image_load::FLAG_PARTIAL_MAP,
        di::IMAGE_LOAD_FLAG_MACHINE_TYPE_MISMATCH
            => sim::hook::image_load::FLAG_MACHINE_TYPE_MISMATCH,
        size_of::<di::image_load_md_t>() => sim::hook::image_load::CONTEXT_SIZE,
        // Thread queries and image notification.
        dn::ThreadQuerySetWin32StartAddress => sim::ps::thread::THREAD_QUERY_SET_WIN32_START_ADDRESS,
        dn::ThreadBasicInformation => sim::ps::thread::THREAD_BASIC_INFORMATION_CLASS,
        dn::THREAD_QUERY_INFORMATION => sim::ps::thread::THREAD_QUERY_INFORMATION,
        dn::PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE
            => sim::ps::PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE,
        // ebpf_result_t.
        da::EBPF_SUCCESS => sa::EBPF_SUCCESS,
        EbpfError::INVALID_ARGUMENT.code() => sa::EBPF_INVALID_ARGUMENT,
        EbpfError::NO_MEMORY.code() => sa::EBPF_NO_MEMORY,
        // Helper ids, argument and return types.
        da::EBPF_MAX_GENERAL_HELPER_FUNCTION => sa::EBPF_MAX_GENERAL_HELPER_FUNCTION,
        da::EBPF_RETURN_TYPE_INTEGER => sa::EBPF_RETURN_TYPE_INTEGER,
        da::EBPF_ARGUMENT_TYPE_DONTCARE => sa::EBPF_ARGUMENT_TYPE_DONTCARE,
        da::EBPF_ARGUMENT_TYPE_CONST_SIZE => sa::EBPF_ARGUMENT_TYPE_CONST_SIZE,
        da::EBPF_ARGUMENT_TYPE_PTR_TO_CTX => sa::EBPF_ARGUMENT_TYPE_PTR_TO_CTX,
        da::EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM => sa::EBPF_ARGUMENT_TYPE_PTR_TO_WRITABLE_MEM,
        // Header versions and sizes (`size`: up to the end of the last
        // field of the current version).
        da::ebpf_extension_header_t::v1(0, 0).version => sa::EBPF_PROGRAM_DATA_CURRENT_VERSION,
        da::ebpf_extension_header_t::v1(0, 0).version
            => sa::EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION,
        da::EBPF_PROGRAM_TYPE_DESCRIPTOR_SIZE
            => sa::EBPF_PROGRAM_TYPE_DESCRIPTOR_CURRENT_VERSION_SIZE,
        da::EBPF_HELPER_FUNCTION_PROTOTYPE_SIZE
            => sa::EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION_SIZE,
        da::EBPF_PROGRAM_INFORMATION_SIZE => sa::EBPF_PROGRAM_INFORMATION_CURRENT_VERSION_SIZE,
        da::EBPF_HELPER_FUNCTION_ADDRESSES_SIZE
            => sa::EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION_SIZE,
        da::EBPF_PROGRAM_DATA_SIZE => sa::EBPF_PROGRAM_DATA_CURRENT_VERSION_SIZE,
        da::EBPF_ATTACH_PROVIDER_DATA_SIZE => sa::EBPF_ATTACH_PROVIDER_DATA_CURRENT_VERSION_SIZE,
        ext::store::EBPF_PROGRAM_SECTION_INFORMATION_SIZE
            => sa::EBPF_PROGRAM_SECTION_INFORMATION_CURRENT_VERSION_SIZE,
        da::EBPF_DISPATCH_FUNCTIONS_OFFSET
            => offset_of!(sa::ebpf_extension_dispatch_table_t, function),
        da::EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION => sa::EBPF_ATTACH_CLIENT_DATA_CURRENT_VERSION,
        da::EBPF_LINK_DISPATCH_TABLE_VERSION_1 => sa::EBPF_LINK_DISPATCH_TABLE_VERSION_1,
        // The store.
        ext::store::SECTION_NAME_MAX => sim::ebpf::store::SECTION_NAME_MAX,
        format!("{}\\{}", ext::store::names::EBPF_ROOT, ext::store::names::PROVIDERS)
            => sim::ebpf::store::HKLM_STORE,
        // The process context and its test-run form.
        size_of::<dp::process_md_t>() => sim::process::PROCESS_MD_SIZE,
        dp::TOKEN_SID_CAPACITY => sim::process::TOKEN_SID_MAX_SIZE,
        dp::TEST_RUN_CONTEXT_SIZE => sim::process::TEST_RUN_CONTEXT_SIZE,
        offset_of!(dp::process_test_run_context_t, process_md) => sim::process::TEST_RUN_MD_OFFSET,
        offset_of!(dp::process_test_run_context_t, command_line)
            => sim::process::TEST_RUN_STRINGS_OFFSET,
        offset_of!(dp::process_test_run_context_t, account_lookup_done)
            => sim::process::TEST_RUN_LOOKUP_DONE_OFFSET,
        // NTSTATUS.
        dn::STATUS_SUCCESS => ss::STATUS_SUCCESS,
        dn::STATUS_PENDING => ss::STATUS_PENDING,
        dn::STATUS_OBJECT_NAME_NOT_FOUND => ss::STATUS_OBJECT_NAME_NOT_FOUND,
        dn::STATUS_NO_MORE_ENTRIES => ss::STATUS_NO_MORE_ENTRIES,
        Error::UNSUCCESSFUL.status() => ss::STATUS_UNSUCCESSFUL,
        Error::INVALID_PARAMETER.status() => ss::STATUS_INVALID_PARAMETER,
        Error::BUFFER_TOO_SMALL.status() => ss::STATUS_BUFFER_TOO_SMALL,
        Error::INSUFFICIENT_RESOURCES.status() => ss::STATUS_INSUFFICIENT_RESOURCES,
        Error::NOT_SUPPORTED.status() => ss::STATUS_NOT_SUPPORTED,
        // IRQLs, pool, debug print, NMR, security, events.
        dn::PASSIVE_LEVEL => sim::types::PASSIVE_LEVEL,
        dn::APC_LEVEL => sim::types::APC_LEVEL,
        dn::DISPATCH_LEVEL => sim::types::DISPATCH_LEVEL,
        dn::POOL_FLAG_UNINITIALIZED => sim::pool::POOL_FLAG_UNINITIALIZED,
        dn::POOL_FLAG_NON_PAGED => sim::pool::POOL_FLAG_NON_PAGED,
        dn::DPFLTR_IHVDRIVER_ID => sim::log::DPFLTR_IHVDRIVER_ID,
        dn::DPFLTR_ERROR_LEVEL => sim::log::DPFLTR_ERROR_LEVEL,
        dn::DPFLTR_WARNING_LEVEL => sim::log::DPFLTR_WARNING_LEVEL,
        dn::DPFLTR_INFO_LEVEL => sim::log::DPFLTR_INFO_LEVEL,
        dn::MIT_GUID => sim::nmr::MIT_GUID,
        dn::ALL_PROCESSOR_GROUPS => sim::kernel::processor::ALL_PROCESSOR_GROUPS,
        dn::TokenUser => sim::ps::TOKEN_USER_CLASS,
        dn::SECURITY_MAX_SID_SIZE => sim::ps::SECURITY_MAX_SID_SIZE,
        dn::NotificationEvent => sim::sync::NOTIFICATION_EVENT,
        // The registry.
        dn::OBJ_CASE_INSENSITIVE => sim::registry::OBJ_CASE_INSENSITIVE,
        dn::OBJ_KERNEL_HANDLE => sim::registry::OBJ_KERNEL_HANDLE,
        dn::DELETE => sim::registry::DELETE,
        dn::KEY_QUERY_VALUE => sim::registry::KEY_QUERY_VALUE,
        dn::KEY_SET_VALUE => sim::registry::KEY_SET_VALUE,
        dn::KEY_CREATE_SUB_KEY => sim::registry::KEY_CREATE_SUB_KEY,
        dn::KEY_ENUMERATE_SUB_KEYS => sim::registry::KEY_ENUMERATE_SUB_KEYS,
        dn::REG_OPTION_NON_VOLATILE => sim::registry::REG_OPTION_NON_VOLATILE,
        dn::REG_SZ => sim::registry::REG_SZ,
        dn::REG_BINARY => sim::registry::REG_BINARY,
        dn::REG_DWORD => sim::registry::REG_DWORD,
        dn::KeyBasicInformation => sim::registry::KEY_BASIC_INFORMATION,
        dn::KeyValuePartialInformation => sim::registry::KEY_VALUE_PARTIAL_INFORMATION,
        // neteventebpfext: identity, the netevent NPI, event types,
        // capture types, headers.
        net::EBPF_PROGRAM_TYPE_NETEVENT => sim::hook::netevent::PROGRAM_TYPE,
        net::EBPF_ATTACH_TYPE_NETEVENT => sim::hook::netevent::ATTACH_TYPE,
        neteventebpfext::TRACE.guid() => sim::hook::netevent::ETW_PROVIDER,
        net::NETEVENT_NPI_ID => sim::netevent::NETEVENT_NPI_ID,
        net::NETEVENT_CLIENT_MODULE_ID => sim::hook::netevent::CLIENT_MODULE_ID,
        net::EBPF_NETEVENT_EXTENSION_VERSION => sim::netevent::EXTENSION_VERSION,
        size_of::<net::netevent_ext_function_addresses_t>() => sim::netevent::CLIENT_DISPATCH_SIZE,
        net::PKTMON_EVENT_HEADER_LENGTH => sim::netevent::PKTMON_EVENT_HEADER_LENGTH,
        u32::from(net::NETEVENT_EVENT_TYPE_PKTMON_DROP) => sim::netevent::EVENT_TYPE_DROP,
        u32::from(net::NETEVENT_EVENT_TYPE_PKTMON_FLOW) => sim::netevent::EVENT_TYPE_FLOW,
        net::CaptureType::All as u32 => sim::netevent::CAPTURE_ALL,
        net::CaptureType::Flow as u32 => sim::netevent::CAPTURE_FLOW,
        net::CaptureType::Drop as u32 => sim::netevent::CAPTURE_DROP,
        net::CaptureType::None as u32 => sim::netevent::CAPTURE_NONE,
        net::NETEVENT_PKTMON_EVENT_CURRENT_VERSION => sim::hook::netevent::DATA_HEADER_VERSION,
        size_of::<net::netevent_data_header_t>() => sim::hook::netevent::DATA_HEADER_SIZE,
        // ETW.
        dn::EVENT_CONTROL_CODE_DISABLE_PROVIDER => sim::log::EVENT_CONTROL_CODE_DISABLE_PROVIDER,
        dn::EVENT_CONTROL_CODE_ENABLE_PROVIDER => sim::log::EVENT_CONTROL_CODE_ENABLE_PROVIDER,
    ]
}

#[test]
fn constants_agree() {
    let wrong: Vec<String> = constants()
        .iter()
        .filter(|c| c.driver_value != c.ntsim_value)
        .map(|c| {
            format!(
                "driver {} = {:?} / ntsim {} = {:?}",
                c.driver, c.driver_value, c.ntsim, c.ntsim_value
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the driver's and ntsim's constants differ:\n{}",
        wrong.join("\n")
    );
}

/// A distinct, recognisable `u64` for field `i`.
fn mark(i: u64) -> u64 {
    0x1000_0000_0000_0000 | (i << 32) | (0xA0 + i)
}

#[test]
fn process_md_and_test_run_context_bytes() {
    use drv::hooks::process::{process_md_t, process_test_run_context_t, TestRunString};
    use sim::process::{ProcessMd, TestRunContextOut, TestRunInput};

    // Driver -> ntsim: every field of the driver's structures holds a
    // distinct value (struct literals: a new field does not compile until
    // it is given one here), ntsim decodes the bytes.
    let mut sid = [0u8; 68];
    for (i, b) in sid.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let md = process_md_t {
        command_start: std::ptr::without_provenance_mut(mark(1) as usize),
        command_end: std::ptr::without_provenance_mut(mark(2) as usize),
        process_id: mark(3),
        parent_process_id: mark(4),
        creating_process_id: mark(5),
        creating_thread_id: mark(6),
        creation_time: mark(7),
        exit_time: mark(8),
        process_exit_code: 0xC000_0135,
        operation: 1,
        _operation_unit: [0; 3],
        token_sid_size: 28,
        token_sid: sid,
    };
    let string = |i: u16| TestRunString {
        length: 2 * i,
        maximum_length: 2 * i + 10,
        reserved: 0,
        buffer: mark(20 + u64::from(i)),
    };
    let mut header = [0u64; 8];
    for (i, h) in header.iter_mut().enumerate() {
        *h = mark(30 + i as u64);
    }
    let ctx = process_test_run_context_t {
        context_header: header,
        process_md: md,
        process: mark(9),
        create_info: mark(10),
        command_line: string(1),
        image_file_name: string(2),
        account_name: string(3),
        account_domain: string(4),
        account_lookup_done: 1,
        reserved: [0; 7],
    };
    let out = TestRunContextOut::parse(&ctx.to_bytes()).expect("ntsim decodes 296 bytes");
    // No `..`: a field ntsim adds must be compared here.
    let TestRunContextOut {
        header: out_header,
        md: out_md,
        packet,
        process,
        create_info,
        strings,
        account_lookup_done,
    } = out;
    let ProcessMd {
        process_id,
        parent_process_id,
        creating_process_id,
        creating_thread_id,
        creation_time,
        exit_time,
        process_exit_code,
        operation,
        token_sid_size,
        token_sid,
    } = out_md;
    assert_eq!(out_header, header, "context header");
    assert_eq!(packet, [mark(1), mark(2)], "command_start, command_end");
    assert_eq!(
        [
            process_id,
            parent_process_id,
            creating_process_id,
            creating_thread_id,
            creation_time,
            exit_time
        ],
        [mark(3), mark(4), mark(5), mark(6), mark(7), mark(8)],
        "process ids and times"
    );
    assert_eq!(process_exit_code, 0xC000_0135);
    assert_eq!(operation, 1);
    assert_eq!(token_sid_size, 28);
    assert_eq!(token_sid, sid);
    assert_eq!((process, create_info), (mark(9), mark(10)));
    for (i, s) in strings.iter().enumerate() {
        let d = string(i as u16 + 1);
        assert_eq!(
            (s.length, s.maximum_length, s.buffer),
            (d.length, d.maximum_length, d.buffer),
            "string {i}"
        );
    }
    assert_eq!(account_lookup_done, 1);

    // ntsim -> driver: ntsim's encoder, the driver's decoder.
    let mut input = TestRunInput {
        md: ProcessMd {
            process_id: mark(3),
            parent_process_id: mark(4),
            creating_process_id: mark(5),
            creating_thread_id: mark(6),
            creation_time: mark(7),
            exit_time: mark(8),
            process_exit_code: 0xC000_0135,
            operation: 1,
            token_sid_size: 0,
            token_sid: [0; 68],
        },
        command_line: vec![1, 0, 2, 0],
        image_path: vec![3, 0, 4, 0, 5, 0],
        account_name: vec![6, 0],
        account_domain: vec![7, 0, 8, 0, 9, 0, 10, 0],
        maximum_lengths: [None, Some(100), None, Some(200)],
        account_lookup_done: 1,
    };
    input.md.set_sid(&sid[..28]);
    let (ctx_in, data_in) = sim::process::test_run_input(&input);
    let parsed = drv::hooks::process::parse_test_run(Some(&ctx_in), Some(&data_in))
        .expect("the driver accepts ntsim's input");
    let c = parsed.context;
    let m = c.process_md;
    assert_eq!(
        [
            m.process_id,
            m.parent_process_id,
            m.creating_process_id,
            m.creating_thread_id,
            m.creation_time,
            m.exit_time
        ],
        [mark(3), mark(4), mark(5), mark(6), mark(7), mark(8)]
    );
    assert_eq!(m.process_exit_code, 0xC000_0135);
    assert_eq!(m.operation, 1);
    assert_eq!(m.token_sid_size, 28);
    assert_eq!(&m.token_sid[..28], &sid[..28]);
    assert_eq!(
        c.strings().map(|s| (s.length, s.maximum_length)),
        [(4, 4), (6, 100), (2, 2), (8, 200)]
    );
    assert_eq!(c.account_lookup_done, 1);
    assert_eq!(
        parsed.strings,
        [
            &input.command_line[..],
            &input.image_path,
            &input.account_name,
            &input.account_domain
        ]
    );
}

/// The bytes of a plain `#[repr(C)]` value.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is a live, initialised `T` of size_of::<T>() bytes; the
    // types passed here have no padding (their layouts are asserted in the
    // driver), so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// A `T` read from the first size_of::<T>() bytes of `b`.
fn from_bytes<T: Copy>(b: &[u8]) -> T {
    assert!(
        b.len() >= size_of::<T>(),
        "{} bytes, need {}",
        b.len(),
        size_of::<T>()
    );
    // SAFETY: `b` holds at least size_of::<T>() bytes (checked above); the
    // read is unaligned; the types read here are integers and raw pointers,
    // valid for any bit pattern.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) }
}

/// `thread_md_t` and `image_load_md_t` (also the `bpf_prog_test_run`
/// context of their program types: the context in and out is the md
/// structure itself) against ntsim's byte codecs, both ways.
#[test]
fn thread_and_image_load_md_bytes() {
    use drv::hooks::image_load::image_load_md_t;
    use drv::hooks::thread::thread_md_t;
    use sim::hook::image_load::ImageRecord;
    use sim::hook::thread::ThreadRecord;

    // Driver -> ntsim (struct literals: a new field does not compile until
    // it is given a value here).
    let md = thread_md_t {
        process_id: mark(1),
        thread_id: mark(2),
        creating_process_id: mark(3),
        creating_thread_id: mark(4),
        start_address: mark(5),
        exit_status: 0xC000_0005,
        operation: 1,
        flags: 3,
        reserved: 0xAB,
    };
    let bytes = bytes_of(&md);
    let parsed = ThreadRecord::parse(&bytes).expect("ntsim decodes a thread_md_t");
    // No `..`: a field ntsim adds must be compared here.
    let ThreadRecord {
        process_id,
        thread_id,
        creating_process_id,
        creating_thread_id,
        start_address,
        exit_status,
        operation,
        flags,
        reserved,
        alert,
        initial,
    } = parsed;
    assert_eq!(
        [
            process_id,
            thread_id,
            creating_process_id,
            creating_thread_id,
            start_address
        ],
        [mark(1), mark(2), mark(3), mark(4), mark(5)],
        "thread ids and start address"
    );
    assert_eq!(
        (exit_status, operation, flags, reserved),
        (0xC000_0005, 1, 3, 0xAB)
    );
    assert_eq!((alert, initial), (0, 0), "record-only fields");
    // ntsim -> driver: ntsim's test-run context, the driver's structure.
    let back: thread_md_t = from_bytes(&parsed.context_bytes());
    assert_eq!(back, md, "thread_md_t round trip through ntsim's encoder");
    assert_eq!(parsed.context_bytes(), bytes);

    let md = image_load_md_t {
        image_path_start: std::ptr::without_provenance_mut(mark(10) as usize),
        image_path_end: std::ptr::without_provenance_mut(mark(11) as usize),
        process_id: mark(12),
        thread_id: mark(13),
        image_base: mark(14),
        image_size: mark(15),
        flags: 0xF,
        signature_level: 0xC,
        signature_type: 0x5,
        reserved: 0xBEEF,
    };
    let bytes = bytes_of(&md);
    assert_eq!(
        bytes[..16],
        [mark(10).to_le_bytes(), mark(11).to_le_bytes()].concat(),
        "the packet pointers come first"
    );
    let parsed = ImageRecord::from_fields(&bytes[16..]);
    let ImageRecord {
        process_id,
        thread_id,
        image_base,
        image_size,
        flags,
        signature_level,
        signature_type,
        reserved,
        path_length,
        path,
    } = parsed.clone();
    assert_eq!(
        [process_id, thread_id, image_base, image_size],
        [mark(12), mark(13), mark(14), mark(15)]
    );
    assert_eq!(
        (flags, signature_level, signature_type, reserved),
        (0xF, 0xC, 0x5, 0xBEEF)
    );
    assert_eq!((path_length, path), (0, Vec::new()), "record-only fields");
    let back: image_load_md_t = from_bytes(&parsed.context_bytes());
    assert_eq!(
        back,
        image_load_md_t {
            image_path_start: std::ptr::null_mut(),
            image_path_end: std::ptr::null_mut(),
            ..md
        },
        "image_load_md_t round trip (ntsim's test-run context has null packet pointers)"
    );
}

/// Source files that declare each side's ABI (paths from the repository
/// root); a directory stands for every `.rs` file directly in it.
const DRIVER_SOURCES: &[&str] = &[
    "libs/ebpf_ext/src/ebpf/abi.rs",
    "libs/ebpf_ext/src/nt/types.rs",
    "libs/ebpf_ext/src/nt/status.rs",
    "extensions/ntosebpfext/src/hooks",
    "extensions/neteventebpfext/src/hooks",
    "libs/ebpf_ext/src/store.rs",
    "libs/ebpf_ext/src/trace.rs",
    "libs/ebpf_ext/src/pool.rs",
];
const NTSIM_SOURCES: &[&str] = &[
    "tests/ntsim/src/ebpf/abi.rs",
    "tests/ntsim/src/ebpf/store.rs",
    "tests/ntsim/src/kernel/types.rs",
    "tests/ntsim/src/kernel/status.rs",
    "tests/ntsim/src/kernel/nmr.rs",
    "tests/ntsim/src/kernel/ps/events.rs",
    "tests/ntsim/src/kernel/ps/image.rs",
    "tests/ntsim/src/kernel/ps/thread.rs",
    "tests/ntsim/src/kernel/ps/notify.rs",
    "tests/ntsim/src/kernel/ps/sid.rs",
    "tests/ntsim/src/kernel/sync.rs",
    "tests/ntsim/src/kernel/registry.rs",
    "tests/ntsim/src/kernel/log.rs",
    "tests/ntsim/src/kernel/pool.rs",
    "tests/ntsim/src/kernel/netevent.rs",
    "tests/ntsim/src/kernel/processor.rs",
    "tests/ntsim/src/hook",
];

/// Driver structures compared through their bytes
/// ([`process_md_and_test_run_context_bytes`],
/// [`thread_and_image_load_md_bytes`]).
const DRIVER_BYTE_COMPARED: &[&str] = &[
    "process_md_t",
    "process_test_run_context_t",
    "TestRunString",
    "thread_md_t",
    "image_load_md_t",
];

/// `#[repr(C)]` structures only the driver declares, and why.
const DRIVER_ONLY: &[(&str, &str)] = &[
    ("SID_AND_ATTRIBUTES", "ntsim writes TOKEN_USER as bytes (tests/process_hook.rs checks the lookup)"),
    ("KEY_BASIC_INFORMATION", "ntsim writes the information classes as bytes (tests/store.rs reads them back through the driver)"),
    ("KEY_VALUE_PARTIAL_INFORMATION", "as KEY_BASIC_INFORMATION"),
];

/// `#[repr(C)]` structures only ntsim declares, and why.
const NTSIM_ONLY: &[(&str, &str)] = &[
    (
        "ebpf_helper_function_prototype_flags_t",
        "the driver's `flags: u8`; its size is compared in the prototype pair",
    ),
    (
        "program_data_capabilities_t",
        "the driver's `capabilities: u32`; compared in the program data pair",
    ),
    (
        "ebpf_program_section_info_t",
        "the driver writes its fields to the store; its size is a compared constant",
    ),
    (
        "ebpf_extension_dispatch_table_t",
        "the generic view; its `function` offset is a compared constant",
    ),
    (
        "ebpf_execution_context_state_id_t",
        "inside the batch state, opaque to the driver",
    ),
    (
        "ebpf_execution_context_tail_call_state_t",
        "inside the batch state, opaque to the driver",
    ),
    (
        "EVENT_FILTER_DESCRIPTOR",
        "the driver's enable callback ignores filter data",
    ),
];

/// Same-named constants that are different things on the two sides.
const SAME_NAME_DIFFERENT_THING: &[(&str, &str)] = &[
    ("PROGRAM_TYPE", "driver: the store value name; ntsim: the process program type (compared as EBPF_PROGRAM_TYPE_PROCESS)"),
    ("ATTACH_TYPE", "driver: the store value name; ntsim: the process attach type (compared as EBPF_ATTACH_TYPE_PROCESS)"),
    ("REALLOCATE_PACKET", "driver: the store value name; ntsim: the prototype flag bit"),
];

/// The contents of the `.rs` files `sources` name.
fn read_sources(sources: &[&str]) -> Vec<(String, String)> {
    let root = sim::build::workspace_root();
    let mut files = Vec::new();
    for s in sources {
        let path = root.join(s);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("{s}: {e}"))
                .map(|e| e.expect("a directory entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "rs"))
                .collect();
            entries.sort();
            assert!(!entries.is_empty(), "{s} has no .rs file");
            for p in entries {
                let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                files.push((p.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{s}: {e}"));
            files.push((s.to_string(), text));
        }
    }
    files
}

/// The `#[repr(C...)]` top-level `pub struct`s and `pub union`s of `text`.
fn repr_c_types(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line
            .strip_prefix("pub struct ")
            .or_else(|| line.strip_prefix("pub union "))
        else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let repr_c = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#[") || l.starts_with("///"))
            .any(|l| l.starts_with("#[repr(C"));
        if repr_c {
            out.push(name);
        }
    }
    out
}

#[test]
fn repr_c_scan_finds_what_it_should() {
    let text = "/// Doc.\n#[repr(C)]\n#[derive(Clone)]\npub struct A {\n}\n\
                #[derive(Clone)]\npub struct B;\n#[repr(C, align(8))]\npub union C {\n}\n";
    assert_eq!(repr_c_types(text), ["A", "C"]);
}

#[test]
fn every_abi_struct_is_compared_or_one_sided() {
    let pairs = pairs();
    let mut problems = Vec::new();
    // (side, its sources, the names compared, the names one-sided)
    type Side<'a> = (&'a str, &'a [&'a str], Vec<&'a str>, Vec<&'a str>);
    let sides: [Side; 2] = [
        (
            "driver",
            DRIVER_SOURCES,
            pairs
                .iter()
                .map(|p| p.driver.name)
                .chain(DRIVER_BYTE_COMPARED.iter().copied())
                .collect(),
            DRIVER_ONLY.iter().map(|o| o.0).collect(),
        ),
        (
            "ntsim",
            NTSIM_SOURCES,
            pairs.iter().map(|p| p.ntsim.name).collect(),
            NTSIM_ONLY.iter().map(|o| o.0).collect(),
        ),
    ];
    for (side, sources, compared, one_sided) in sides {
        let found: BTreeSet<String> = read_sources(sources)
            .iter()
            .flat_map(|(_, text)| repr_c_types(text))
            .collect();
        for name in &found {
            if !compared.contains(&name.as_str()) && !one_sided.contains(&name.as_str()) {
                problems.push(format!(
                    "{side} declares #[repr(C)] {name}: add its pair to pairs() (or to the byte \
                     comparison), or list it as one-sided with the reason"
                ));
            }
        }
        for name in compared.iter().chain(&one_sided) {
            if !found.contains(*name) {
                problems.push(format!(
                    "{side}: {name} is listed but not declared in {sources:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `pub const` names of `text` (and the `NAME = value;` lines of
/// ntsim's `statuses!` table).
fn const_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        let name = if let Some(rest) = line.strip_prefix("pub const ") {
            rest
        } else if line.starts_with("STATUS_") && line.contains(" = 0x") {
            line
        } else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name != "fn" && !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_shared_constant_name_is_compared() {
    let names = |sources: &[&str]| -> BTreeSet<String> {
        read_sources(sources)
            .iter()
            .flat_map(|(_, text)| const_names(text))
            .collect()
    };
    let (driver, ntsim) = (names(DRIVER_SOURCES), names(NTSIM_SOURCES));
    let compared: BTreeSet<String> = constants()
        .iter()
        .flat_map(|c| [c.driver, c.ntsim])
        .map(|expr| last_segment(expr).to_string())
        .collect();
    let mut problems = Vec::new();
    for name in driver.intersection(&ntsim) {
        let excused = SAME_NAME_DIFFERENT_THING.iter().any(|(n, _)| n == name);
        if !compared.contains(name) && !excused {
            problems.push(format!(
                "both sides define {name}: add `driver => ntsim` to constants(), or list it as a \
                 same-name-different-thing with the reason"
            ));
        }
    }
    for (name, _) in SAME_NAME_DIFFERENT_THING {
        if !(driver.contains(*name) && ntsim.contains(*name)) {
            problems.push(format!(
                "{name} is listed as defined on both sides, but is not"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
