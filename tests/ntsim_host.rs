//! The integration tests run the driver in ntsim, which runs only on Linux
//! x86-64. On any other host they compile to nothing (ntsim is not even a
//! dependency there), so this test fails there and says why, instead of
//! letting `cargo test` pass without having tested anything.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
#[test]
fn integration_tests_need_a_linux_x86_64_host() {
    panic!(
        "the integration tests (tests/driver_lifecycle.rs, hook_provider.rs, image.rs, \
         process_hook.rs) load the driver in ntsim, which runs only on Linux x86-64; this \
         host is {}/{}, where none of them can run: run `cargo test` on Linux x86-64 \
         (WSL 2 works)",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
}
