//! The images mapped in this process, loaded or formerly loaded: what the
//! loader records, and what the crash reporter, the notify-routine checks
//! and the string checks ask about an address. It sits below the loader
//! and every service, so asking "which image holds this address" creates
//! no dependency on the loader.

use std::sync::Mutex;

/// What the kernel knows about a loaded image's security-relevant flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageFlags {
    /// Linked with /INTEGRITYCHECK (IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY).
    pub force_integrity: bool,
}

/// One section as mapped.
#[derive(Clone, Debug)]
pub struct MappedSection {
    pub name: String,
    pub rva: usize,
    pub size: usize,
    pub characteristics: u32,
}

/// An image in the process, loaded or formerly loaded.
#[derive(Clone, Debug)]
struct ImageRecord {
    name: String,
    base: usize,
    size: usize,
    flags: ImageFlags,
    sections: Vec<MappedSection>,
    unloaded: bool,
}

/// Every image ever mapped by this process (unloaded ones stay, so that a
/// fault in their former range can be explained).
static IMAGES: Mutex<Vec<ImageRecord>> = Mutex::new(Vec::new());

fn images() -> std::sync::MutexGuard<'static, Vec<ImageRecord>> {
    IMAGES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The flags of the loaded image containing `addr`, if any (used by APIs
/// that, like Windows, check the image that holds a callback routine).
pub fn image_flags_for_address(addr: usize) -> Option<ImageFlags> {
    images()
        .iter()
        .find(|i| !i.unloaded && addr >= i.base && addr < i.base + i.size)
        .map(|i| i.flags)
}

/// The name of the loaded image containing `addr` ("ntosebpfext.sys"), if
/// any: which driver a string or routine belongs to (a `DbgPrintEx` format
/// lives in the caller's image).
pub fn image_name_at(addr: usize) -> Option<String> {
    images()
        .iter()
        .rev()
        .find(|i| !i.unloaded && addr >= i.base && addr < i.base + i.size)
        .map(|i| i.name.clone())
}

/// Describes `addr` if it falls in a loaded (or formerly loaded) driver
/// image: "ntosebpfext.sys+0x1234 (.text)", for crash reports. Never blocks
/// (a crash handler calls it): answers None if the table is busy.
pub fn describe_address(addr: usize) -> Option<String> {
    let table = IMAGES.try_lock().ok()?;
    let img = table
        .iter()
        .rev()
        .find(|i| addr >= i.base && addr < i.base + i.size)?;
    let rva = addr - img.base;
    let section = img
        .sections
        .iter()
        .find(|s| rva >= s.rva && rva < s.rva + s.size.max(1))
        .map(|s| format!(" ({})", s.name))
        .unwrap_or_default();
    let state = if img.unloaded {
        " [image UNLOADED]"
    } else {
        ""
    };
    Some(format!("{}+{rva:#x}{section}{state}", img.name))
}

/// Records an image the loader has mapped and is about to start.
pub(crate) fn record(
    name: String,
    base: usize,
    size: usize,
    flags: ImageFlags,
    sections: Vec<MappedSection>,
) {
    images().push(ImageRecord {
        name,
        base,
        size,
        flags,
        sections,
        unloaded: false,
    });
}

/// Marks the image at `base` unloaded (its range stays described).
pub(crate) fn mark_unloaded(base: usize) {
    for rec in images().iter_mut().filter(|r| r.base == base) {
        rec.unloaded = true;
    }
}

/// Forgets the image at `base` (mapped but never started, range returned).
pub(crate) fn forget(base: usize) {
    images().retain(|r| r.base != base);
}
