//! The link settings of an extension driver crate, for its build script
//! (`fn main() { ebpf_ext_build::link(); }`), so every driver of the
//! repository links the same way.
//!
//! Portable flavor (default, any host): emit the lld-link arguments that make
//! the cdylib a kernel driver. Nothing is emitted for host builds (unit tests,
//! clippy), so those stay ordinary Rust builds.
//!
//! KMDF flavor (the driver crate's feature `wdk`, which turns on this crate's
//! `wdk`; Windows host with the WDK): wdk-build configures the link (KMDF
//! libraries, driver settings) from the driver crate's
//! `[package.metadata.wdk.driver-model]`.

/// Emits the driver's link settings (call from its build script).
pub fn link() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    // The driver crate's feature (build scripts see their package's features).
    let wdk = std::env::var_os("CARGO_FEATURE_WDK").is_some();

    if wdk {
        kmdf();
        return;
    }
    if target_os == "windows" && target_env == "msvc" {
        for arg in PORTABLE_LINK_ARGS {
            println!("cargo:rustc-cdylib-link-arg={arg}");
        }
    }
}

/// lld-link arguments for a WDM driver image with no WDK import libraries:
/// every import comes from the raw-dylib declarations of `ebpf_ext::nt`.
pub const PORTABLE_LINK_ARGS: &[&str] = &[
    "/DRIVER",
    "/SUBSYSTEM:NATIVE,10.00",
    "/ENTRY:DriverEntry",
    "/NODEFAULTLIB",
    // PsSetCreateProcessNotifyRoutineEx refuses images without FORCE_INTEGRITY.
    "/INTEGRITYCHECK",
    "/DYNAMICBASE",
    "/NXCOMPAT",
    "/OPT:REF,ICF",
    "/DEBUG",
];

/// KMDF flavor on a Windows host: wdk-build reads
/// `[package.metadata.wdk.driver-model]`, finds the WDK, and emits the link
/// settings (KMDF libraries, `/ENTRY:FxDriverEntry`, `/DRIVER`, ...).
#[cfg(all(feature = "wdk", windows))]
fn kmdf() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os != "windows" || target_env != "msvc" {
        panic!(
            "the `wdk` feature builds the KMDF driver for x86_64-pc-windows-msvc; \
             this build targets {target_os}-{target_env}: see docs/building.md"
        );
    }
    wdk_build::configure_wdk_binary_build().unwrap_or_else(|err| {
        panic!(
            "wdk-build could not configure the KMDF driver build ({err}); is the WDK \
             installed and is `+crt-static` set (`cargo make` sets it)? See docs/building.md"
        )
    });
}

/// KMDF flavor on any other host: wdk-build and the WDK exist on Windows only.
#[cfg(all(feature = "wdk", not(windows)))]
fn kmdf() {
    panic!(
        "the `wdk` feature builds the KMDF flavor and needs a Windows host with the WDK \
         (`cargo make` there); on this host build the portable flavor (default features, \
         `cargo xtask build`): see docs/building.md"
    );
}

/// Without this crate's `wdk` feature: the driver crate's `wdk` feature
/// turns it on, so the two are set together.
#[cfg(not(feature = "wdk"))]
fn kmdf() {
    unreachable!("CARGO_FEATURE_WDK is set only with the wdk feature, which sets this crate's")
}
