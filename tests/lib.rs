//! The `driver-tests` package exists for its integration tests (the
//! `[[test]]` targets in Cargo.toml); this library is empty.
