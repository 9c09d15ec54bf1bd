//! Compile-time behaviour of `#[with_snapshot]`: what must compile (and run) and every misuse,
//! each with the one error it must give, on the offending token (`ui/fail/*.stderr`).
//!
//! Regenerate the expected errors after a deliberate change with
//! `TRYBUILD=overwrite cargo test -p snapshot-macros --test ui`, and read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
