//! The integration tests that use ntsim run only on Linux x86-64 (each
//! integration test file, or test, that uses it carries that `cfg`). On any
//! other host they compile to nothing (ntsim is not even a
//! dependency there), so this test fails there and says why, instead of
//! letting `cargo test` pass without having tested anything.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
#[test]
fn integration_tests_need_a_linux_x86_64_host() {
    panic!(
        "the integration tests in tests/ that use ntsim (all but a few pure parsing tests) \
         load or check the driver in ntsim, which runs only on Linux x86-64; this host is \
         {}/{}, where they compile to nothing: run `cargo test` on Linux x86-64 \
         (WSL 2 works)",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
}
