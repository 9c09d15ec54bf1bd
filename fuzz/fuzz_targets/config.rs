//! The tool's configuration file (`snapshot.toml`) and environment, from arbitrary bytes (see
//! `snapshot/src/bin/snapshot/config/fuzzing.rs`).
//!
//! The loader lives in the binary (`snapshot/src/bin/snapshot/config.rs` and `config/`), which
//! has no library to link: this target compiles those very files into itself (the `#[path]`
//! modules below, with the one helper of the binary they use, `invalid`, from its `error.rs`),
//! so the tool's sources stay as they are.
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../snapshot/src/bin/snapshot/config.rs"]
mod config;
#[path = "../../snapshot/src/bin/snapshot/error.rs"]
mod error;

pub(crate) use error::invalid;

use std::path::PathBuf;
use std::sync::OnceLock;

/// This process's directory for the files (on disk, not under `/dev/shm`: a relative path in a
/// file is read beside it, and `/dev/shm/<dir>/../` is `/dev`).
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join("snapshot-fuzz-config"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| config::fuzzing::load(scratch(), data));
