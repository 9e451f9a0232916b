//! The Windows kernel ABI this driver uses, as Rust declarations.
//!
//! Every import is declared here with `raw-dylib`, so the image needs no WDK
//! import library in either flavor, and the list of kernel functions the
//! driver depends on is in one place (ntsim must simulate each of them).
#![allow(non_snake_case, non_camel_case_types, clippy::upper_case_acronyms)]

pub mod status;
mod types;

pub use status::*;
pub use types::*;

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
