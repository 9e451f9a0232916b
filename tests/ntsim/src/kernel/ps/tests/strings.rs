//! Tests of what a process notify routine is handed: exact, read-only
//! strings and PS_CREATE_NOTIFY_INFO in special pool, inside a critical
//! region.

use super::*;
use crate::kernel::sync;

/// What [`inspect`] saw of one UNICODE_STRING.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StringView {
    length: u16,
    maximum_length: u16,
    /// The pool block holding the characters: (start, size).
    block: Option<(usize, usize)>,
    /// How the pool describes the byte just past the characters.
    past_end: String,
}

#[derive(Clone, Debug, Default)]
struct Inspected {
    image: Option<StringView>,
    command_line: Option<StringView>,
    /// The pool block holding the PS_CREATE_NOTIFY_INFO: (start, size).
    info_block: Option<(usize, usize)>,
    info_past_end: String,
    critical_depth: u32,
}

static INSPECTED: Mutex<Vec<Inspected>> = Mutex::new(Vec::new());
/// What the misbehaving routine does: 1 leaves the critical region, 2
/// writes into the command line, 3 enters a region and keeps it, 4 writes
/// ParentProcessId.
static MISBEHAVE: AtomicUsize = AtomicUsize::new(0);

/// # Safety
/// `s` is a UNICODE_STRING the kernel handed over.
unsafe fn view(s: *const UNICODE_STRING) -> Option<StringView> {
    // SAFETY: see the function's contract.
    let s = unsafe { s.as_ref() }?;
    let end = s.Buffer as usize + s.Length as usize;
    Some(StringView {
        length: s.Length,
        maximum_length: s.MaximumLength,
        block: pool::live_block(s.Buffer as usize).map(|(start, size, _)| (start, size)),
        past_end: pool::describe_address(end).unwrap_or_default(),
    })
}

unsafe extern "win64" fn inspect(_: PEPROCESS, _: HANDLE, info: *mut PS_CREATE_NOTIFY_INFO) {
    let Some(i) = (unsafe { info.as_mut() }) else {
        return;
    };
    let info_end = info as usize + size_of::<PS_CREATE_NOTIFY_INFO>();
    // SAFETY: the strings of a creation are valid during the call.
    let seen = unsafe {
        Inspected {
            image: view(i.ImageFileName),
            command_line: view(i.CommandLine),
            info_block: pool::live_block(info as usize).map(|(start, size, _)| (start, size)),
            info_past_end: pool::describe_address(info_end).unwrap_or_default(),
            critical_depth: sync::critical_region_depth(),
        }
    };
    lock(&INSPECTED).push(seen);
    match MISBEHAVE.load(Ordering::SeqCst) {
        1 => sync::KeLeaveCriticalRegion(),
        // SAFETY: the command line has at least one character in this test;
        // writing it is the misbehaviour under test.
        2 => unsafe { *(*i.CommandLine).Buffer = b'X' as u16 },
        3 => sync::KeEnterCriticalRegion(),
        4 => i.ParentProcessId = 8,
        _ => {}
    }
}

fn create_inspected(command_line: Option<String>) -> Inspected {
    lock(&INSPECTED).clear();
    let p = create_process(&ProcessSpec {
        command_line,
        ..spec("\\??\\C:\\Windows\\System32\\cmd.exe")
    });
    assert_eq!(p.creation_status, STATUS_SUCCESS);
    let mut seen = lock(&INSPECTED).clone();
    assert_eq!(seen.len(), 1, "the routine ran once");
    seen.remove(0)
}

#[test]
fn strings_and_the_create_info_are_exact_special_pool_blocks() {
    let sim = Sim::new();
    MISBEHAVE.store(0, Ordering::SeqCst);
    assert_eq!(register(inspect), STATUS_SUCCESS);

    let image_bytes = "\\??\\C:\\Windows\\System32\\cmd.exe".len() * 2;
    let seen = create_inspected(Some("cmd.exe /c dir".into()));
    for (view, bytes) in [
        (seen.image.as_ref().unwrap(), image_bytes),
        (
            seen.command_line.as_ref().unwrap(),
            "cmd.exe /c dir".len() * 2,
        ),
    ] {
        assert_eq!(view.length as usize, bytes, "{view:?}");
        assert_eq!(view.maximum_length, view.length, "no room after: {view:?}");
        assert_eq!(
            view.block.map(|b| b.1),
            Some(bytes),
            "an exact block: {view:?}"
        );
        assert!(
            view.past_end.contains("the first byte past the end")
                && view.past_end.contains("guard page"),
            "no terminator and no slack after the characters: {view:?}"
        );
    }
    assert_eq!(
        seen.info_block.map(|b| b.1),
        Some(size_of::<PS_CREATE_NOTIFY_INFO>()),
        "PS_CREATE_NOTIFY_INFO is a block of its own size"
    );
    assert!(
        seen.info_past_end.contains("guard page"),
        "{}",
        seen.info_past_end
    );
    assert_eq!(
        seen.critical_depth, 1,
        "the routine runs in a critical region"
    );
    assert_eq!(sync::critical_region_depth(), 0, "and the kernel leaves it");

    // The longest command line: 32767 characters, 65534 bytes (even).
    let longest = "x".repeat(MAX_UNICODE_STRING_UNITS);
    let seen = create_inspected(Some(longest));
    let cmd = seen.command_line.unwrap();
    assert_eq!((cmd.length, cmd.maximum_length), (65534, 65534));
    assert_eq!(cmd.block.map(|b| b.1), Some(65534));

    // Every string and structure went back to the pool.
    assert_eq!(unregister(inspect), STATUS_SUCCESS);
    sim.finish().unwrap();
}

#[test]
fn a_string_longer_than_a_unicode_string_holds_is_refused_clearly() {
    let sim = Sim::new();
    let too_long = "x".repeat(MAX_UNICODE_STRING_UNITS + 1);
    let result = std::panic::catch_unwind(|| {
        create_process(&ProcessSpec {
            command_line: Some(too_long),
            ..spec("a.exe")
        })
    });
    let message = result.expect_err("refused");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        text.contains("CommandLine is 32768 UTF-16 units long") && text.contains("at most 32767"),
        "{text}"
    );
    drop(sim);
}

#[test]
fn leaving_the_critical_region_or_writing_a_string_is_a_violation() {
    for (how, expected) in [
        (
            1,
            "returned at critical-region depth 0; it was called at depth 1",
        ),
        (2, "modified the CommandLine it was handed"),
        (3, "returned at critical-region depth 2"),
        (4, "wrote PS_CREATE_NOTIFY_INFO at offset 16"),
    ] {
        let sim = Sim::new();
        MISBEHAVE.store(how, Ordering::SeqCst);
        assert_eq!(register(inspect), STATUS_SUCCESS);
        create_inspected(Some("cmd.exe".into()));
        MISBEHAVE.store(0, Ordering::SeqCst);
        assert_eq!(
            sync::critical_region_depth(),
            0,
            "the kernel restored the depth"
        );
        assert_eq!(unregister(inspect), STATUS_SUCCESS);
        let v = violation::take();
        assert_eq!(v.len(), 1, "{how}: {v:?}");
        assert!(v[0].message.contains(expected), "{how}: {}", v[0].message);
        sim.finish().unwrap();
    }
}

#[test]
fn an_alertable_wait_in_a_process_notify_routine_is_a_violation() {
    unsafe extern "win64" fn waits(_: PEPROCESS, _: HANDLE, _: *mut PS_CREATE_NOTIFY_INFO) {
        let mut event = std::mem::MaybeUninit::<sync::KEVENT>::zeroed();
        let zero = 0i64;
        // SAFETY: a local event, initialized before the wait; a zero
        // timeout does not block.
        unsafe {
            sync::KeInitializeEvent(event.as_mut_ptr(), 0, 0);
            sync::KeWaitForSingleObject(event.as_mut_ptr().cast(), 0, 0, 1, &zero);
        }
    }
    let sim = Sim::new();
    assert_eq!(register(waits), STATUS_SUCCESS);
    create_process(&spec("a.exe"));
    assert_eq!(unregister(waits), STATUS_SUCCESS);
    let v = violation::take();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].message
            .contains("an alertable wait inside a critical region"),
        "{}",
        v[0].message
    );
    // The same wait outside a notify routine is fine.
    // SAFETY: as above.
    unsafe { waits(std::ptr::null_mut(), 0, std::ptr::null_mut()) };
    assert_eq!(violation::take(), vec![]);
    sim.finish().unwrap();
}

static LOGONS: Mutex<Vec<(bool, u64)>> = Mutex::new(Vec::new());

unsafe extern "win64" fn logon(_: PEPROCESS, _: HANDLE, info: *mut PS_CREATE_NOTIFY_INFO) {
    lock(&LOGONS).push((!info.is_null(), current_logon_id()));
}

#[test]
fn the_current_logon_id_is_the_creators_on_create_and_the_processs_on_exit() {
    let sim = Sim::new();
    lock(&LOGONS).clear();
    let parent = create_process(&ProcessSpec {
        logon_id: Some(0x100),
        ..spec("parent.exe")
    })
    .pid;
    let creator_tid = create_thread(parent);
    assert_eq!(register(logon), STATUS_SUCCESS);
    let child = create_process(&ProcessSpec {
        parent: Some(parent),
        creating_thread: Some((parent, creator_tid)),
        logon_id: Some(0x200),
        ..spec("child.exe")
    })
    .pid;
    assert!(exit_process(child, 0, None));
    assert_eq!(*lock(&LOGONS), [(true, 0x100), (false, 0x200)]);
    assert_eq!(current_logon_id(), SYSTEM_LUID, "a System thread");
    assert_eq!(unregister(logon), STATUS_SUCCESS);
    sim.finish().unwrap();
}
