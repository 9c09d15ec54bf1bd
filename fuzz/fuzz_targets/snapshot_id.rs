//! The id sanitiser: snapshot ids from arbitrary parts (see `snapshot::fuzzing::snapshot_id`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapshot::fuzzing::snapshot_id(data));
