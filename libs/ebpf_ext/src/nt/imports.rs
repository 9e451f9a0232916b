//! The kernel functions the driver imports (x64 Windows only).
#![allow(non_snake_case, clippy::upper_case_acronyms)]

use super::*;
use core::ffi::c_void;

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
extern "C" {
    /// Variadic: declared `extern "C"`, which is the Windows x64 convention.
    pub fn DbgPrintEx(ComponentId: u32, Level: u32, Format: *const u8, ...) -> NTSTATUS;
}

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
extern "system" {
    pub fn KeBugCheckEx(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) -> !;
    pub fn ExAllocatePool2(Flags: u64, NumberOfBytes: usize, Tag: u32) -> *mut c_void;
    pub fn ExFreePoolWithTag(P: *mut c_void, Tag: u32);
    pub fn ExFreePool(P: *mut c_void);

    // IRQL. The WDK's KeGetCurrentIrql is an inline that reads CR8; the
    // export behaves the same and also works in a simulated kernel.
    pub fn KeGetCurrentIrql() -> KIRQL;

    // Processors (ntddk.h): how many may ever exist, and which one runs the
    // caller (a system-wide index across processor groups).
    pub fn KeQueryMaximumProcessorCountEx(GroupNumber: u16) -> u32;
    pub fn KeGetCurrentProcessorNumberEx(ProcNumber: *mut PROCESSOR_NUMBER) -> u32;

    // Reader/writer spin locks (raise to DISPATCH_LEVEL).
    pub fn ExAcquireSpinLockShared(SpinLock: *mut EX_SPIN_LOCK) -> KIRQL;
    pub fn ExReleaseSpinLockShared(SpinLock: *mut EX_SPIN_LOCK, OldIrql: KIRQL);
    pub fn ExAcquireSpinLockExclusive(SpinLock: *mut EX_SPIN_LOCK) -> KIRQL;
    pub fn ExReleaseSpinLockExclusive(SpinLock: *mut EX_SPIN_LOCK, OldIrql: KIRQL);

    // Push locks (PASSIVE/APC, inside a critical region).
    pub fn KeEnterCriticalRegion();
    pub fn KeLeaveCriticalRegion();
    pub fn ExAcquirePushLockExclusiveEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32);
    pub fn ExReleasePushLockExclusiveEx(PushLock: *mut EX_PUSH_LOCK, Flags: u32);

    // Events.
    pub fn KeInitializeEvent(Event: *mut KEVENT, Type: i32, State: u8);
    pub fn KeSetEvent(Event: *mut KEVENT, Increment: i32, Wait: u8) -> i32;
    pub fn KeClearEvent(Event: *mut KEVENT);
    pub fn KeWaitForSingleObject(
        Object: *mut c_void,
        WaitReason: i32,
        WaitMode: i8,
        Alertable: u8,
        Timeout: *const i64,
    ) -> NTSTATUS;

    // I/O work items (system worker threads at PASSIVE_LEVEL).
    pub fn IoSizeofWorkItem() -> u32;
    pub fn IoInitializeWorkItem(IoObject: *mut c_void, IoWorkItem: *mut c_void);
    pub fn IoUninitializeWorkItem(IoWorkItem: *mut c_void);
    pub fn IoQueueWorkItem(
        IoWorkItem: *mut c_void,
        WorkerRoutine: PIO_WORKITEM_ROUTINE,
        QueueType: i32,
        Context: *mut c_void,
    );

    // Processes and tokens.
    pub fn PsSetCreateProcessNotifyRoutineEx(
        NotifyRoutine: PCREATE_PROCESS_NOTIFY_ROUTINE_EX,
        Remove: u8,
    ) -> NTSTATUS;
    pub fn PsGetProcessCreateTimeQuadPart(Process: PEPROCESS) -> i64;
    pub fn PsGetProcessExitTime() -> i64;
    pub fn PsGetProcessExitStatus(Process: PEPROCESS) -> NTSTATUS;
    pub fn PsReferencePrimaryToken(Process: PEPROCESS) -> PACCESS_TOKEN;
    pub fn PsDereferencePrimaryToken(PrimaryToken: PACCESS_TOKEN);
    pub fn SeQueryInformationToken(
        Token: PACCESS_TOKEN,
        TokenInformationClass: u32,
        TokenInformation: *mut *mut c_void,
    ) -> NTSTATUS;
    pub fn PsGetCurrentProcessId() -> HANDLE;
    pub fn PsGetCurrentThreadId() -> HANDLE;

    // Threads and images.
    pub fn PsSetCreateThreadNotifyRoutine(NotifyRoutine: PCREATE_THREAD_NOTIFY_ROUTINE)
        -> NTSTATUS;
    pub fn PsRemoveCreateThreadNotifyRoutine(
        NotifyRoutine: PCREATE_THREAD_NOTIFY_ROUTINE,
    ) -> NTSTATUS;
    pub fn PsSetLoadImageNotifyRoutineEx(
        NotifyRoutine: PLOAD_IMAGE_NOTIFY_ROUTINE,
        Flags: usize,
    ) -> NTSTATUS;
    pub fn PsRemoveLoadImageNotifyRoutine(NotifyRoutine: PLOAD_IMAGE_NOTIFY_ROUTINE) -> NTSTATUS;
    pub fn PsLookupThreadByThreadId(ThreadId: HANDLE, Thread: *mut PETHREAD) -> NTSTATUS;
    pub fn ObOpenObjectByPointer(
        Object: *mut c_void,
        HandleAttributes: u32,
        PassedAccessState: *mut c_void,
        DesiredAccess: u32,
        ObjectType: *mut c_void,
        AccessMode: i8,
        Handle: *mut HANDLE,
    ) -> NTSTATUS;
    pub fn ObfDereferenceObject(Object: *mut c_void) -> isize;
    pub fn ZwQueryInformationThread(
        ThreadHandle: HANDLE,
        ThreadInformationClass: u32,
        ThreadInformation: *mut c_void,
        ThreadInformationLength: u32,
        ReturnLength: *mut u32,
    ) -> NTSTATUS;
    pub fn RtlValidSid(Sid: PSID) -> u8;
    pub fn RtlLengthSid(Sid: PSID) -> u32;
    pub fn RtlCopySid(DestinationSidLength: u32, DestinationSid: PSID, SourceSid: PSID)
        -> NTSTATUS;

    // The configuration registry (the eBPF store).
    pub fn ZwCreateKey(
        KeyHandle: *mut HANDLE,
        DesiredAccess: u32,
        ObjectAttributes: *const OBJECT_ATTRIBUTES,
        TitleIndex: u32,
        Class: *const UNICODE_STRING,
        CreateOptions: u32,
        Disposition: *mut u32,
    ) -> NTSTATUS;
    pub fn ZwOpenKey(
        KeyHandle: *mut HANDLE,
        DesiredAccess: u32,
        ObjectAttributes: *const OBJECT_ATTRIBUTES,
    ) -> NTSTATUS;
    pub fn ZwSetValueKey(
        KeyHandle: HANDLE,
        ValueName: *const UNICODE_STRING,
        TitleIndex: u32,
        Type: u32,
        Data: *const c_void,
        DataSize: u32,
    ) -> NTSTATUS;
    pub fn ZwQueryValueKey(
        KeyHandle: HANDLE,
        ValueName: *const UNICODE_STRING,
        KeyValueInformationClass: u32,
        KeyValueInformation: *mut c_void,
        Length: u32,
        ResultLength: *mut u32,
    ) -> NTSTATUS;
    pub fn ZwEnumerateKey(
        KeyHandle: HANDLE,
        Index: u32,
        KeyInformationClass: u32,
        KeyInformation: *mut c_void,
        Length: u32,
        ResultLength: *mut u32,
    ) -> NTSTATUS;
    pub fn ZwDeleteKey(KeyHandle: HANDLE) -> NTSTATUS;
    pub fn ZwClose(Handle: HANDLE) -> NTSTATUS;
}

// The Network Module Registrar (netioddk.h).
#[link(name = "NETIO.SYS", kind = "raw-dylib", modifiers = "+verbatim")]
extern "system" {
    pub fn NmrRegisterProvider(
        ProviderCharacteristics: *const NPI_PROVIDER_CHARACTERISTICS,
        ProviderContext: *const c_void,
        NmrProviderHandle: *mut HANDLE,
    ) -> NTSTATUS;
    pub fn NmrDeregisterProvider(NmrProviderHandle: HANDLE) -> NTSTATUS;
    pub fn NmrWaitForProviderDeregisterComplete(NmrProviderHandle: HANDLE) -> NTSTATUS;
    pub fn NmrProviderDetachClientComplete(NmrBindingHandle: HANDLE);
    // The client side, for a driver that consumes an NPI.
    pub fn NmrRegisterClient(
        ClientCharacteristics: *const NPI_CLIENT_CHARACTERISTICS,
        ClientContext: *const c_void,
        NmrClientHandle: *mut HANDLE,
    ) -> NTSTATUS;
    pub fn NmrClientAttachProvider(
        NmrBindingHandle: HANDLE,
        ClientBindingContext: *mut c_void,
        ClientDispatch: *const c_void,
        ProviderBindingContext: *mut *mut c_void,
        ProviderDispatch: *mut *const c_void,
    ) -> NTSTATUS;
    pub fn NmrClientDetachProviderComplete(NmrBindingHandle: HANDLE);
    pub fn NmrDeregisterClient(NmrClientHandle: HANDLE) -> NTSTATUS;
    pub fn NmrWaitForClientDeregisterComplete(NmrClientHandle: HANDLE) -> NTSTATUS;
}

// Account lookup, exported by the kernel security support provider.
#[link(name = "KSECDD.SYS", kind = "raw-dylib", modifiers = "+verbatim")]
extern "system" {
    pub fn SecLookupAccountSid(
        Sid: PSID,
        NameSize: *mut u32,
        NameBuffer: *mut UNICODE_STRING,
        DomainSize: *mut u32,
        DomainBuffer: *mut UNICODE_STRING,
        NameUse: *mut u32,
    ) -> NTSTATUS;
}

// The C runtime symbols that compiled Rust code (core, compiler_builtins)
// references by name. ntoskrnl.exe exports all of them; the import library
// rustc generates for these declarations resolves the references.
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
extern "C" {
    pub fn memcpy(dest: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
    pub fn memmove(dest: *mut c_void, src: *const c_void, n: usize) -> *mut c_void;
    pub fn memset(dest: *mut c_void, c: i32, n: usize) -> *mut c_void;
    pub fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> i32;
    pub fn strlen(s: *const u8) -> usize;
    pub fn __chkstk();
}

// Event Tracing for Windows, the kernel-mode provider API (wdm.h), used by
// the TraceLogging provider in src/trace.rs.
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
extern "system" {
    pub fn EtwRegister(
        ProviderId: *const GUID,
        EnableCallback: PETWENABLECALLBACK,
        CallbackContext: *mut c_void,
        RegHandle: *mut REGHANDLE,
    ) -> NTSTATUS;
    pub fn EtwUnregister(RegHandle: REGHANDLE) -> NTSTATUS;
    pub fn EtwSetInformation(
        RegHandle: REGHANDLE,
        InformationClass: u32,
        EventInformation: *const c_void,
        InformationLength: u32,
    ) -> NTSTATUS;
    pub fn EtwWriteTransfer(
        RegHandle: REGHANDLE,
        EventDescriptor: *const EVENT_DESCRIPTOR,
        ActivityId: *const GUID,
        RelatedActivityId: *const GUID,
        UserDataCount: u32,
        UserData: *const EVENT_DATA_DESCRIPTOR,
    ) -> NTSTATUS;
}
