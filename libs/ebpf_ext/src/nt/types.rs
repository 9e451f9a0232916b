//! Kernel structures the driver reads or fills, with their x64 layouts.

use super::NTSTATUS;
use core::ffi::c_void;

pub type HANDLE = usize;
pub type KIRQL = u8;

pub const PASSIVE_LEVEL: KIRQL = 0;
pub const APC_LEVEL: KIRQL = 1;
pub const DISPATCH_LEVEL: KIRQL = 2;

/// `ALL_PROCESSOR_GROUPS`: `KeQueryMaximumProcessorCountEx` counts every
/// group.
pub const ALL_PROCESSOR_GROUPS: u16 = 0xFFFF;

/// `PROCESSOR_NUMBER` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PROCESSOR_NUMBER {
    pub Group: u16,
    pub Number: u8,
    pub Reserved: u8,
}

pub const POOL_FLAG_UNINITIALIZED: u64 = 0x2;
pub const POOL_FLAG_NON_PAGED: u64 = 0x40;

/// `DPFLTR_IHVDRIVER_ID`: the DbgPrintEx component for third-party drivers.
pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
pub const DPFLTR_INFO_LEVEL: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UNICODE_STRING {
    /// Length in bytes, without a terminating NUL.
    pub Length: u16,
    pub MaximumLength: u16,
    pub Buffer: *mut u16,
}

/// Type of `DRIVER_OBJECT::DriverUnload`.
pub type PDRIVER_UNLOAD = Option<unsafe extern "system" fn(driver: *mut DRIVER_OBJECT)>;

/// `DRIVER_OBJECT` (x64, 0x150 bytes). Only `DriverUnload` is written by a
/// driver with no devices; the rest is declared for the layout.
#[repr(C)]
pub struct DRIVER_OBJECT {
    pub Type: i16,
    pub Size: i16,
    pub DeviceObject: *mut c_void,
    pub Flags: u32,
    pub DriverStart: *mut c_void,
    pub DriverSize: u32,
    pub DriverSection: *mut c_void,
    pub DriverExtension: *mut c_void,
    pub DriverName: UNICODE_STRING,
    pub HardwareDatabase: *mut UNICODE_STRING,
    pub FastIoDispatch: *mut c_void,
    pub DriverInit: *mut c_void,
    pub DriverStartIo: *mut c_void,
    pub DriverUnload: PDRIVER_UNLOAD,
    pub MajorFunction: [*mut c_void; 28],
}

/// `GUID` (16 bytes, align 4).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GUID {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl GUID {
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> GUID {
        GUID {
            data1,
            data2,
            data3,
            data4,
        }
    }
}

pub const MIT_GUID: u32 = 1;

/// `NPI_MODULEID` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NPI_MODULEID {
    pub Length: u16,
    pub Type: u32,
    /// `union { GUID Guid; LUID IfLuid; }`: this driver only uses GUIDs.
    pub Guid: GUID,
}

impl NPI_MODULEID {
    pub const fn guid(guid: GUID) -> NPI_MODULEID {
        NPI_MODULEID {
            Length: core::mem::size_of::<NPI_MODULEID>() as u16,
            Type: MIT_GUID,
            Guid: guid,
        }
    }
}

/// `NPI_REGISTRATION_INSTANCE` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NPI_REGISTRATION_INSTANCE {
    pub Version: u16,
    pub Size: u16,
    pub NpiId: *const GUID,
    pub ModuleId: *const NPI_MODULEID,
    pub Number: u32,
    pub NpiSpecificCharacteristics: *const c_void,
}

pub type PNPI_PROVIDER_ATTACH_CLIENT_FN = unsafe extern "system" fn(
    NmrBindingHandle: HANDLE,
    ProviderContext: *mut c_void,
    ClientRegistrationInstance: *const NPI_REGISTRATION_INSTANCE,
    ClientBindingContext: *mut c_void,
    ClientDispatch: *const c_void,
    ProviderBindingContext: *mut *mut c_void,
    ProviderDispatch: *mut *const c_void,
) -> NTSTATUS;
pub type PNPI_PROVIDER_DETACH_CLIENT_FN =
    unsafe extern "system" fn(ProviderBindingContext: *mut c_void) -> NTSTATUS;
pub type PNPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN =
    unsafe extern "system" fn(ProviderBindingContext: *mut c_void);

/// `NPI_PROVIDER_CHARACTERISTICS` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_PROVIDER_CHARACTERISTICS {
    pub Version: u16,
    pub Length: u16,
    pub ProviderAttachClient: Option<PNPI_PROVIDER_ATTACH_CLIENT_FN>,
    pub ProviderDetachClient: Option<PNPI_PROVIDER_DETACH_CLIENT_FN>,
    pub ProviderCleanupBindingContext: Option<PNPI_PROVIDER_CLEANUP_BINDING_CONTEXT_FN>,
    pub ProviderRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

pub type PNPI_CLIENT_ATTACH_PROVIDER_FN = unsafe extern "system" fn(
    NmrBindingHandle: HANDLE,
    ClientContext: *mut c_void,
    ProviderRegistrationInstance: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS;
pub type PNPI_CLIENT_DETACH_PROVIDER_FN =
    unsafe extern "system" fn(ClientBindingContext: *mut c_void) -> NTSTATUS;
pub type PNPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN =
    unsafe extern "system" fn(ClientBindingContext: *mut c_void);

/// `NPI_CLIENT_CHARACTERISTICS` (72 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_CLIENT_CHARACTERISTICS {
    pub Version: u16,
    pub Length: u16,
    pub ClientAttachProvider: Option<PNPI_CLIENT_ATTACH_PROVIDER_FN>,
    pub ClientDetachProvider: Option<PNPI_CLIENT_DETACH_PROVIDER_FN>,
    pub ClientCleanupBindingContext: Option<PNPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN>,
    pub ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

/// `CLIENT_ID`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CLIENT_ID {
    pub UniqueProcess: HANDLE,
    pub UniqueThread: HANDLE,
}

/// `PS_CREATE_NOTIFY_INFO` (72 bytes).
#[repr(C)]
pub struct PS_CREATE_NOTIFY_INFO {
    pub Size: usize,
    /// bit 0 FileOpenNameAvailable, bit 1 IsSubsystemProcess.
    pub Flags: u32,
    pub ParentProcessId: HANDLE,
    pub CreatingThreadId: CLIENT_ID,
    pub FileObject: *mut c_void,
    pub ImageFileName: *const UNICODE_STRING,
    pub CommandLine: *const UNICODE_STRING,
    pub CreationStatus: NTSTATUS,
}

pub type PCREATE_PROCESS_NOTIFY_ROUTINE_EX = unsafe extern "system" fn(
    Process: PEPROCESS,
    ProcessId: HANDLE,
    CreateInfo: *mut PS_CREATE_NOTIFY_INFO,
);

/// `PCREATE_THREAD_NOTIFY_ROUTINE`: `Create` is a BOOLEAN.
pub type PCREATE_THREAD_NOTIFY_ROUTINE =
    unsafe extern "system" fn(ProcessId: HANDLE, ThreadId: HANDLE, Create: u8);

/// `IMAGE_INFO` (40 bytes). `Properties` is the C bit field: bits 0-7
/// ImageAddressingMode, 8 SystemModeImage, 9 ImageMappedToAllPids, 10
/// ExtendedInfoPresent, 11 MachineTypeMismatch, 12-15 ImageSignatureLevel,
/// 16-18 ImageSignatureType, 19 ImagePartialMap.
#[repr(C)]
pub struct IMAGE_INFO {
    pub Properties: u32,
    pub ImageBase: *mut c_void,
    pub ImageSelector: u32,
    pub ImageSize: usize,
    pub ImageSectionNumber: u32,
}

/// `IMAGE_INFO_EX` (56 bytes): when `ExtendedInfoPresent` is set, the
/// `IMAGE_INFO` a load-image routine receives is this structure's
/// `ImageInfo` member.
#[repr(C)]
pub struct IMAGE_INFO_EX {
    pub Size: usize,
    pub ImageInfo: IMAGE_INFO,
    pub FileObject: *mut c_void,
}

/// `PLOAD_IMAGE_NOTIFY_ROUTINE`.
pub type PLOAD_IMAGE_NOTIFY_ROUTINE = unsafe extern "system" fn(
    FullImageName: *mut UNICODE_STRING,
    ProcessId: HANDLE,
    ImageInfo: *mut IMAGE_INFO,
);

/// `PsSetLoadImageNotifyRoutineEx` flag: also notify images whose machine
/// type differs from the system's (for example x86 images of WoW64).
pub const PS_IMAGE_NOTIFY_CONFLICTING_ARCHITECTURE: usize = 0x1;

/// `THREADINFOCLASS::ThreadQuerySetWin32StartAddress`.
pub const ThreadQuerySetWin32StartAddress: u32 = 9;
/// `THREADINFOCLASS::ThreadBasicInformation`.
pub const ThreadBasicInformation: u32 = 0;
/// `THREAD_QUERY_INFORMATION` access right.
pub const THREAD_QUERY_INFORMATION: u32 = 0x0040;

/// `THREAD_BASIC_INFORMATION` (48 bytes).
#[repr(C)]
pub struct THREAD_BASIC_INFORMATION {
    pub ExitStatus: NTSTATUS,
    pub TebBaseAddress: *mut c_void,
    pub ClientId: CLIENT_ID,
    pub AffinityMask: usize,
    pub Priority: i32,
    pub BasePriority: i32,
}

/// Opaque kernel objects.
pub type PEPROCESS = *mut c_void;
pub type PETHREAD = *mut c_void;
pub type PACCESS_TOKEN = *mut c_void;
pub type PSID = *mut c_void;

/// `TOKEN_INFORMATION_CLASS::TokenUser`.
pub const TokenUser: u32 = 1;
/// `SECURITY_MAX_SID_SIZE`.
pub const SECURITY_MAX_SID_SIZE: usize = 68;

/// `SID_AND_ATTRIBUTES`, the head of `TOKEN_USER`.
#[repr(C)]
pub struct SID_AND_ATTRIBUTES {
    pub Sid: PSID,
    pub Attributes: u32,
}

/// `KEVENT` (24 bytes): a dispatcher header the kernel owns.
#[repr(C, align(8))]
pub struct KEVENT {
    pub opaque: [u8; 24],
}

/// `EVENT_TYPE::NotificationEvent`.
pub const NotificationEvent: i32 = 0;
/// `KWAIT_REASON::Executive`.
pub const Executive: i32 = 0;
/// `KPROCESSOR_MODE::KernelMode`.
pub const KernelMode: i8 = 0;
/// `WORK_QUEUE_TYPE::DelayedWorkQueue`.
pub const DelayedWorkQueue: i32 = 1;

/// `PIO_WORKITEM_ROUTINE`: called with the work item's I/O object (here the
/// driver object) and the context given to IoQueueWorkItem.
pub type PIO_WORKITEM_ROUTINE =
    unsafe extern "system" fn(IoObject: *mut c_void, Context: *mut c_void);

/// `EX_RUNDOWN_REF`, `EX_SPIN_LOCK`, `EX_PUSH_LOCK`: words the kernel
/// manipulates atomically; all-zero is the initialized state of each.
pub type EX_SPIN_LOCK = i32;
pub type EX_PUSH_LOCK = usize;

const _: () = {
    assert!(core::mem::size_of::<GUID>() == 16);
    assert!(core::mem::size_of::<NPI_MODULEID>() == 24);
    assert!(core::mem::offset_of!(NPI_MODULEID, Guid) == 8);
    assert!(core::mem::size_of::<NPI_REGISTRATION_INSTANCE>() == 40);
    assert!(core::mem::offset_of!(NPI_REGISTRATION_INSTANCE, NpiSpecificCharacteristics) == 32);
    assert!(core::mem::size_of::<NPI_PROVIDER_CHARACTERISTICS>() == 72);
    assert!(core::mem::size_of::<NPI_CLIENT_CHARACTERISTICS>() == 72);
    assert!(core::mem::offset_of!(NPI_CLIENT_CHARACTERISTICS, ClientRegistrationInstance) == 32);
    assert!(
        core::mem::offset_of!(NPI_PROVIDER_CHARACTERISTICS, ProviderRegistrationInstance) == 32
    );
    assert!(core::mem::size_of::<PS_CREATE_NOTIFY_INFO>() == 72);
    assert!(core::mem::offset_of!(PS_CREATE_NOTIFY_INFO, ParentProcessId) == 16);
    assert!(core::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CreatingThreadId) == 24);
    assert!(core::mem::offset_of!(PS_CREATE_NOTIFY_INFO, ImageFileName) == 48);
    assert!(core::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CommandLine) == 56);
    assert!(core::mem::offset_of!(PS_CREATE_NOTIFY_INFO, CreationStatus) == 64);
    assert!(core::mem::size_of::<UNICODE_STRING>() == 16);
    assert!(core::mem::size_of::<THREAD_BASIC_INFORMATION>() == 48);
    assert!(core::mem::size_of::<IMAGE_INFO>() == 40);
    assert!(core::mem::offset_of!(IMAGE_INFO, ImageBase) == 8);
    assert!(core::mem::offset_of!(IMAGE_INFO, ImageSize) == 24);
    assert!(core::mem::size_of::<IMAGE_INFO_EX>() == 56);
    assert!(core::mem::offset_of!(IMAGE_INFO_EX, ImageInfo) == 8);
    assert!(core::mem::size_of::<KEVENT>() == 24);
    assert!(core::mem::size_of::<DRIVER_OBJECT>() == 0x150);
    assert!(core::mem::offset_of!(DRIVER_OBJECT, DriverUnload) == 104);
};

// The configuration registry (wdm.h).

/// `OBJECT_ATTRIBUTES` (x64, 48 bytes).
#[repr(C)]
pub struct OBJECT_ATTRIBUTES {
    pub Length: u32,
    pub RootDirectory: HANDLE,
    pub ObjectName: *const UNICODE_STRING,
    pub Attributes: u32,
    pub SecurityDescriptor: *mut c_void,
    pub SecurityQualityOfService: *mut c_void,
}

pub const OBJ_CASE_INSENSITIVE: u32 = 0x40;
pub const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// `ZwCurrentThread()` / `NtCurrentThread()`: the calling thread's pseudo
/// handle, `(HANDLE)(LONG_PTR)-2`.
pub const ZW_CURRENT_THREAD: HANDLE = -2isize as HANDLE;

pub const DELETE: u32 = 0x0001_0000;
pub const KEY_QUERY_VALUE: u32 = 0x0001;
pub const KEY_SET_VALUE: u32 = 0x0002;
pub const KEY_CREATE_SUB_KEY: u32 = 0x0004;
pub const KEY_ENUMERATE_SUB_KEYS: u32 = 0x0008;

pub const REG_OPTION_NON_VOLATILE: u32 = 0;
pub const REG_SZ: u32 = 1;
pub const REG_BINARY: u32 = 3;
pub const REG_DWORD: u32 = 4;

/// `KEY_INFORMATION_CLASS::KeyBasicInformation`.
pub const KeyBasicInformation: u32 = 0;
/// `KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation`.
pub const KeyValuePartialInformation: u32 = 2;

/// `KEY_BASIC_INFORMATION` without its variable-length `Name` (which
/// follows at offset 16).
#[repr(C)]
pub struct KEY_BASIC_INFORMATION {
    pub LastWriteTime: i64,
    pub TitleIndex: u32,
    pub NameLength: u32,
}

/// `KEY_VALUE_PARTIAL_INFORMATION` without its variable-length `Data`
/// (which follows at offset 12).
#[repr(C)]
pub struct KEY_VALUE_PARTIAL_INFORMATION {
    pub TitleIndex: u32,
    pub Type: u32,
    pub DataLength: u32,
}

pub const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034u32 as i32;
pub const STATUS_NO_MORE_ENTRIES: NTSTATUS = 0x8000_001Au32 as i32;

const _: () = {
    assert!(core::mem::size_of::<OBJECT_ATTRIBUTES>() == 48);
    assert!(core::mem::offset_of!(OBJECT_ATTRIBUTES, ObjectName) == 16);
    assert!(core::mem::offset_of!(OBJECT_ATTRIBUTES, Attributes) == 24);
    assert!(core::mem::size_of::<KEY_BASIC_INFORMATION>() == 16);
    assert!(core::mem::size_of::<KEY_VALUE_PARTIAL_INFORMATION>() == 12);
};

// Event Tracing for Windows (wdm.h, evntprov.h).

/// `REGHANDLE`: an ETW provider registration.
pub type REGHANDLE = u64;

/// `EVENT_DESCRIPTOR` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EVENT_DESCRIPTOR {
    pub Id: u16,
    pub Version: u8,
    pub Channel: u8,
    pub Level: u8,
    pub Opcode: u8,
    pub Task: u16,
    pub Keyword: u64,
}

/// `EVENT_DATA_DESCRIPTOR` (16 bytes). `Type`: 0 event data, 1 TraceLogging
/// event metadata, 2 TraceLogging provider metadata (the traits).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EVENT_DATA_DESCRIPTOR {
    pub Ptr: u64,
    pub Size: u32,
    pub Type: u8,
    pub Reserved1: u8,
    pub Reserved2: u16,
}

const _: () = {
    assert!(core::mem::size_of::<EVENT_DESCRIPTOR>() == 16);
    assert!(core::mem::offset_of!(EVENT_DESCRIPTOR, Keyword) == 8);
    assert!(core::mem::size_of::<EVENT_DATA_DESCRIPTOR>() == 16);
    assert!(core::mem::offset_of!(EVENT_DATA_DESCRIPTOR, Type) == 12);
};

/// `ETWENABLECALLBACK`: a session enabled (1), disabled (0) or asked for
/// the state of (2) the provider.
pub type PETWENABLECALLBACK = Option<
    unsafe extern "system" fn(
        SourceId: *const GUID,
        ControlCode: u32,
        Level: u8,
        MatchAnyKeyword: u64,
        MatchAllKeyword: u64,
        FilterData: *const c_void,
        CallbackContext: *mut c_void,
    ),
>;

/// `EVENT_CONTROL_CODE_DISABLE_PROVIDER`.
pub const EVENT_CONTROL_CODE_DISABLE_PROVIDER: u32 = 0;
/// `EVENT_CONTROL_CODE_ENABLE_PROVIDER`.
pub const EVENT_CONTROL_CODE_ENABLE_PROVIDER: u32 = 1;
/// `EventProviderSetTraits` (`EVENT_INFO_CLASS`).
pub const EventProviderSetTraits: u32 = 2;
