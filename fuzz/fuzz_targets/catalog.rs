//! The catalog: `snapshot_metadata.json` and a sidecar, from arbitrary bytes (see
//! `snapshot::fuzzing::catalog`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| snapshot::fuzzing::catalog(data));
