//! The PostgreSQL bundle reader: checks, previews and the reading side of a restore, from
//! arbitrary bytes (see `snapshot::fuzzing::postgres_bundle`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapshot::fuzzing::postgres_bundle(data));
