//! The PE loader: maps a driver image into this process the way the Windows
//! kernel would, and runs its `DriverEntry` and unload routine.
//!
//! - The image is parsed with goblin and refused unless it is a PE32+ AMD64
//!   image of the NATIVE subsystem.
//! - Sections are copied into a private mapping at an address chosen by the
//!   host, base relocations are applied, and each section then gets the
//!   protection its characteristics ask for (code R+X, read-only data R,
//!   data R+W; headers R).
//! - Every import is resolved by (module, name) through
//!   [`crate::kernel::exports`]; the load fails naming every import the simulated
//!   kernel does not provide.
//! - At unload the whole range is made inaccessible (not unmapped, so the
//!   address is never reused): a late call into the driver, or a read of its
//!   data, faults at once and the crash report names the unloaded image.

use crate::kernel::exports;
use crate::kernel::images;
use crate::kernel::irql;
use crate::kernel::status::{self, NTSTATUS};
use crate::kernel::types::{OwnedUnicodeString, DRIVER_OBJECT, PASSIVE_LEVEL, UNICODE_STRING};
use crate::kernel::violation;
use goblin::pe::section_table::{IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE};
use goblin::pe::PE;
use std::path::{Path, PathBuf};

const PAGE: usize = 4096;
const IMAGE_FILE_MACHINE_AMD64: u16 = 0x8664;
const IMAGE_SUBSYSTEM_NATIVE: u16 = 1;
const IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY: u16 = 0x0080;
const IMAGE_REL_BASED_ABSOLUTE: u8 = 0;
const IMAGE_REL_BASED_DIR64: u8 = 10;

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("not a valid PE image: {0}")]
    Parse(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("the simulated kernel does not provide {} import(s) of the image: {}", .0.len(), .0.join(", "))]
    UnresolvedImports(Vec<String>),
    #[error("mapping the image failed: {0}")]
    Map(String),
    /// A service runs once: Windows refuses to start a running service
    /// (ERROR_SERVICE_ALREADY_RUNNING).
    #[error("the service {0} is already running (one image per service; load a copy under another file name for a second service)")]
    AlreadyLoaded(String),
}

pub use super::images::{describe_address, image_flags_for_address, ImageFlags, MappedSection};

/// A mapped image (not yet, or no longer, running).
pub struct Image {
    name: String,
    base: *mut u8,
    map_size: usize,
    image_size: usize,
    entry_rva: usize,
    sections: Vec<MappedSection>,
    flags: ImageFlags,
}

// SAFETY: the mapping is owned by the Image and only its immutable
// description is shared; the driver code inside it is itself thread-safe
// (it runs in a multi-processor kernel).
unsafe impl Send for Image {}
// SAFETY: as above: &Image gives access to addresses only.
unsafe impl Sync for Image {}

impl Image {
    /// Maps `bytes` as a driver image named `name`.
    pub fn map(bytes: &[u8], name: &str) -> Result<Image, LoadError> {
        let pe = PE::parse(bytes).map_err(|e| LoadError::Parse(e.to_string()))?;
        let coff = &pe.header.coff_header;
        if coff.machine != IMAGE_FILE_MACHINE_AMD64 || !pe.is_64 {
            return Err(LoadError::Unsupported(format!(
                "machine {:#x} (PE32+ AMD64 required)",
                coff.machine
            )));
        }
        let opt = pe
            .header
            .optional_header
            .ok_or_else(|| LoadError::Parse("no optional header".into()))?;
        let win = &opt.windows_fields;
        if win.subsystem != IMAGE_SUBSYSTEM_NATIVE {
            return Err(LoadError::Unsupported(format!(
                "subsystem {} (a driver is NATIVE, 1)",
                win.subsystem
            )));
        }
        let image_size = win.size_of_image as usize;
        let headers_size = win.size_of_headers as usize;
        if image_size == 0 || headers_size > image_size || headers_size > bytes.len() {
            return Err(LoadError::Parse("inconsistent image or header size".into()));
        }
        let map_size = image_size.div_ceil(PAGE) * PAGE;

        // Resolve every import before mapping anything.
        let mut unresolved = Vec::new();
        let mut resolved = Vec::new();
        for imp in &pe.imports {
            match exports::find(imp.dll, &imp.name) {
                Some(e) => resolved.push((imp.offset, e.addr)),
                None => unresolved.push(format!("{}!{}", imp.dll, imp.name)),
            }
        }
        if !unresolved.is_empty() {
            return Err(LoadError::UnresolvedImports(unresolved));
        }

        // SAFETY: an anonymous private mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(LoadError::Map(std::io::Error::last_os_error().to_string()));
        }
        let base = base.cast::<u8>();
        let mut image = Image {
            name: name.to_string(),
            base,
            map_size,
            image_size,
            entry_rva: pe.entry as usize,
            sections: Vec::new(),
            flags: ImageFlags {
                force_integrity: win.dll_characteristics & IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY
                    != 0,
            },
        };
        // On any error below, `image` is dropped and unmaps the range.
        image.copy_in(bytes, &pe, headers_size)?;
        image.relocate(&pe, opt.windows_fields.image_base)?;
        for (iat_rva, addr) in resolved {
            image.write_u64(iat_rva, addr as u64)?;
        }
        image.protect(headers_size)?;
        if image.entry_rva == 0 || image.entry_rva >= image_size {
            return Err(LoadError::Parse("entry point outside the image".into()));
        }
        image.record();
        Ok(image)
    }

    fn copy_in(&mut self, bytes: &[u8], pe: &PE<'_>, headers_size: usize) -> Result<(), LoadError> {
        // SAFETY: headers_size <= image_size <= map_size and <= bytes.len()
        // (checked by the caller); the mapping is writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base, headers_size) };
        for s in &pe.sections {
            let name = String::from_utf8_lossy(
                &s.name[..s.name.iter().position(|&c| c == 0).unwrap_or(8)],
            )
            .into_owned();
            let rva = s.virtual_address as usize;
            let vsize = (s.virtual_size as usize).max(if s.virtual_size == 0 {
                s.size_of_raw_data as usize
            } else {
                0
            });
            if rva < headers_size
                || rva
                    .checked_add(vsize)
                    .is_none_or(|end| end > self.image_size)
            {
                return Err(LoadError::Parse(format!(
                    "section {name} outside the image"
                )));
            }
            let raw = (s.size_of_raw_data as usize).min(vsize);
            let start = s.pointer_to_raw_data as usize;
            let data = start
                .checked_add(raw)
                .and_then(|end| bytes.get(start..end))
                .ok_or_else(|| LoadError::Parse(format!("section {name} data outside the file")))?;
            // SAFETY: [rva, rva+raw) lies inside the writable mapping (checked above).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(rva), raw) };
            self.sections.push(MappedSection {
                name,
                rva,
                size: vsize,
                characteristics: s.characteristics,
            });
        }
        Ok(())
    }

    fn relocate(&mut self, pe: &PE<'_>, preferred_base: u64) -> Result<(), LoadError> {
        let delta = (self.base as u64).wrapping_sub(preferred_base);
        let Some(relocs) = &pe.relocation_data else {
            if delta != 0 {
                // An image without relocations can only run at its preferred
                // base, which the host did not give us.
                return Err(LoadError::Unsupported(
                    "no base relocations and the preferred base is unavailable".into(),
                ));
            }
            return Ok(());
        };
        for block in relocs.blocks() {
            let block = block.map_err(|e| LoadError::Parse(format!("base relocations: {e}")))?;
            for word in block.words() {
                let word = word.map_err(|e| LoadError::Parse(format!("base relocations: {e}")))?;
                match word.reloc_type() {
                    IMAGE_REL_BASED_ABSOLUTE => {}
                    IMAGE_REL_BASED_DIR64 => {
                        let rva = block.rva as usize + word.offset() as usize;
                        let v = self.read_u64(rva)?;
                        self.write_u64(rva, v.wrapping_add(delta))?;
                    }
                    other => {
                        return Err(LoadError::Unsupported(format!(
                            "base relocation type {other}"
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    fn check_range(&self, rva: usize, len: usize) -> Result<(), LoadError> {
        if rva.checked_add(len).is_none_or(|end| end > self.image_size) {
            return Err(LoadError::Parse(format!("RVA {rva:#x} outside the image")));
        }
        Ok(())
    }

    fn read_u64(&self, rva: usize) -> Result<u64, LoadError> {
        self.check_range(rva, 8)?;
        // SAFETY: in range (checked) and the mapping is readable while loading.
        Ok(unsafe { self.base.add(rva).cast::<u64>().read_unaligned() })
    }

    fn write_u64(&mut self, rva: usize, v: u64) -> Result<(), LoadError> {
        self.check_range(rva, 8)?;
        // SAFETY: in range (checked) and the mapping is writable while loading.
        unsafe { self.base.add(rva).cast::<u64>().write_unaligned(v) };
        Ok(())
    }

    fn protect(&self, headers_size: usize) -> Result<(), LoadError> {
        let mprotect = |start: usize, len: usize, prot: i32| -> Result<(), LoadError> {
            let first = start / PAGE * PAGE;
            let end = (start + len).div_ceil(PAGE) * PAGE;
            // SAFETY: the range lies inside our own mapping.
            let rc = unsafe { libc::mprotect(self.base.add(first).cast(), end - first, prot) };
            if rc != 0 {
                return Err(LoadError::Map(std::io::Error::last_os_error().to_string()));
            }
            Ok(())
        };
        // Everything not covered by a section (headers, gaps) is read-only.
        mprotect(0, self.map_size, libc::PROT_READ)?;
        let _ = headers_size;
        for s in &self.sections {
            let c = s.characteristics;
            let mut prot = 0;
            if c & IMAGE_SCN_MEM_READ != 0 {
                prot |= libc::PROT_READ;
            }
            if c & IMAGE_SCN_MEM_WRITE != 0 {
                prot |= libc::PROT_WRITE;
            }
            if c & IMAGE_SCN_MEM_EXECUTE != 0 {
                prot |= libc::PROT_EXEC;
            }
            if s.size > 0 {
                mprotect(s.rva, s.size, prot)?;
            }
        }
        Ok(())
    }

    /// Address of the image in this process.
    pub fn base(&self) -> usize {
        self.base as usize
    }

    /// SizeOfImage.
    pub fn size(&self) -> usize {
        self.image_size
    }

    pub fn sections(&self) -> &[MappedSection] {
        &self.sections
    }

    pub fn flags(&self) -> ImageFlags {
        self.flags
    }

    /// Address of the entry point (DriverEntry).
    pub fn entry_point(&self) -> usize {
        self.base() + self.entry_rva
    }

    fn record(&self) {
        images::record(
            self.name.clone(),
            self.base as usize,
            self.map_size,
            self.flags,
            self.sections.clone(),
        );
    }

    /// Makes the whole range inaccessible, for good.
    fn retire(self) {
        let base = self.base as usize;
        images::mark_unloaded(base);
        // SAFETY: our own mapping; PROT_NONE keeps the range reserved so no
        // later mapping can reuse the address of the unloaded driver.
        unsafe { libc::mprotect(self.base.cast(), self.map_size, libc::PROT_NONE) };
        std::mem::forget(self);
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // Only reached for an image that never ran (mapped but not started):
        // nothing can refer to it, so the range can go back to the host.
        let base = self.base as usize;
        images::forget(base);
        // SAFETY: our own mapping of map_size bytes.
        unsafe { libc::munmap(self.base.cast(), self.map_size) };
    }
}

/// The service a driver image at `path` runs as: its file name without
/// `.sys` or `.dll` (`ntosebpfext.sys` -> `ntosebpfext`).
pub fn service_name(path: &Path) -> String {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "driver.sys".into());
    file_name
        .trim_end_matches(".sys")
        .trim_end_matches(".dll")
        .to_string()
}

type DriverEntryFn =
    unsafe extern "win64" fn(*mut DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS;

/// A driver whose DriverEntry succeeded.
pub struct Driver {
    image: Image,
    object: Box<DRIVER_OBJECT>,
    _name: OwnedUnicodeString,
    _registry_path: OwnedUnicodeString,
    service: String,
}

// SAFETY: the DRIVER_OBJECT is only touched by the driver (which is
// thread-safe) and by `unload`, which consumes the Driver.
unsafe impl Send for Driver {}

impl Driver {
    /// Maps `bytes` and runs DriverEntry at PASSIVE_LEVEL. Returns the
    /// running driver (None if DriverEntry failed, in which case the image
    /// has been retired as Windows unloads it) and DriverEntry's status.
    pub fn load_and_start(
        bytes: &[u8],
        path: &Path,
    ) -> Result<(Option<Driver>, NTSTATUS), LoadError> {
        let service = service_name(path);
        let image = Image::map(bytes, &format!("{service}.sys"))?;
        Ok(Driver::start(image, &service))
    }

    fn start(image: Image, service: &str) -> (Option<Driver>, NTSTATUS) {
        let name = OwnedUnicodeString::new(&format!("\\Driver\\{service}"));
        let registry_path = OwnedUnicodeString::new(&format!(
            "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{service}"
        ));
        // SAFETY: DRIVER_OBJECT is plain data; all-zero is its initial state
        // (null pointers, no routines).
        let mut object: Box<DRIVER_OBJECT> = Box::new(unsafe { std::mem::zeroed() });
        object.Type = 4; // IO_TYPE_DRIVER
        object.Size = std::mem::size_of::<DRIVER_OBJECT>() as i16;
        object.DriverStart = image.base.cast();
        object.DriverSize = image.image_size as u32;
        // SAFETY: reading the UNICODE_STRING header we own.
        object.DriverName = unsafe { *name.as_ptr() };
        let entry_addr = image.base() + image.entry_rva;
        object.DriverInit = entry_addr as *mut _;
        // SAFETY: the entry point is inside the mapped, executable image and
        // has the DriverEntry signature (the image declares it with /ENTRY).
        let entry: DriverEntryFn = unsafe { std::mem::transmute(entry_addr) };
        let status = call_at_passive("DriverEntry", || {
            // SAFETY: the driver object and registry path outlive the call
            // (and, for a started driver, the driver).
            unsafe { entry(&mut *object, registry_path.as_ptr()) }
        });
        if !status::nt_success(status) {
            if object.DriverUnload.is_some() {
                // Windows does not call DriverUnload after a failed
                // DriverEntry; a driver that set it anyway is fine, but one
                // that left registrations behind is caught by Sim::finish.
            }
            // A failed DriverEntry must have deregistered (and waited for)
            // every NMR registration it made: the image goes away now.
            crate::kernel::io::wait_idle();
            crate::kernel::nmr::image_unloaded(service, image.base(), image.size());
            image.retire();
            return (None, status);
        }
        let driver = Driver {
            image,
            object,
            _name: name,
            _registry_path: registry_path,
            service: service.to_string(),
        };
        (Some(driver), status)
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Service name (file name without extension).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Calls DriverUnload at PASSIVE_LEVEL and retires the image, even when
    /// the driver has no unload routine (reported as an error: Windows would
    /// refuse to unload it).
    pub fn unload(mut self) -> Result<(), String> {
        let routine = self.object.DriverUnload;
        let result = match routine {
            Some(unload) => {
                let obj: *mut DRIVER_OBJECT = &mut *self.object;
                call_at_passive("DriverUnload", || {
                    // SAFETY: the routine the driver registered, called with
                    // its own driver object, once.
                    unsafe { unload(obj) }
                });
                // A queued work item holds a reference on the driver: the
                // image stays until every routine has returned.
                crate::kernel::io::wait_idle();
                crate::kernel::nmr::image_unloaded(
                    &self.service,
                    self.image.base(),
                    self.image.size(),
                );
                Ok(())
            }
            None => Err(format!(
                "{} has no DriverUnload routine: Windows cannot unload it",
                self.service
            )),
        };
        let Driver { image, .. } = self;
        image.retire();
        result
    }
}

/// Calls into the driver at PASSIVE_LEVEL and checks it returns at the same
/// IRQL.
fn call_at_passive<R>(what: &str, f: impl FnOnce() -> R) -> R {
    irql::set(PASSIVE_LEVEL);
    let r = f();
    let after = irql::current();
    if after != PASSIVE_LEVEL {
        violation::record(
            "irql",
            format!("{what} returned at IRQL {after}; it was called at PASSIVE_LEVEL"),
        );
        irql::set(PASSIVE_LEVEL);
    }
    r
}
