#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Compile-fail tests of `#[derive(Encrypted)]` (trybuild). Refresh the
//! expected output with `TRYBUILD=overwrite`.

#[test]
fn derive_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
