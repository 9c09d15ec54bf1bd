//! Directories of files: one archive per snapshot (zip by default, tar + zstd as an option) with
//! `backup_summary.json` — every field of the CK Empire summary, plus each entry's size, mode,
//! time and blake3 — and a readable `report.html`; whole restores swapped in by rename, some
//! files extracted by glob, or the tree put elsewhere.
//!
//! | file | what |
//! |------|------|
//! | `select.rs` | entries chosen by glob, for what is taken and what is put back |
//! | `source.rs` | [`DirectorySource`]: the walk, one complete version of every file, the archive |
//! | `read.rs` | one complete version of a file that may be rewritten while it is read |
//! | `walk.rs` | the tree's entries: files, directories, links (never followed), special files set aside |
//! | `archive.rs` | the zip and tar + zstd formats, streamed |
//! | `summary.rs` | `backup_summary.json`, `report.html`, the changes between two snapshots |
//! | `check.rs` | the image check: summary, members, every file re-hashed (`Full`) |
//! | `compare.rs` | the live tree against a snapshot: files added, removed, changed |
//! | `extract.rs` | putting a tree (or part of it) back into a directory |
//! | `partial.rs` | some files put back into the live directory, one rename each |
//! | `stats.rs` | `snapshot status`: files and bytes by type |
//! | `replace.rs` | the whole restore: extracted beside the directory, swapped by rename |

mod archive;
mod check;
mod compare;
mod extract;
mod partial;
mod read;
mod replace;
mod select;
mod source;
mod stats;
mod summary;
mod walk;

pub use archive::ArchiveFormat;
pub use extract::{Extracted, extract};
pub use source::DirectorySource;
pub use summary::{Changes, FileEntry, Summary, changes};

use std::path::Path;
use std::sync::Arc;

use crate::engine::{Engine, Options};
use crate::error::Result;
use crate::source::Source;

/// The kind recorded in snapshots.
pub(crate) const KIND: &str = "dir";

/// The registry's entry.
pub(crate) struct DirEngine;

impl Engine for DirEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "directory"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["directory"]
    }

    fn recognizes(&self, _head: &[u8], path: &Path, by_name: bool) -> bool {
        !by_name && path.is_dir()
    }

    fn source(&self, location: &Path) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(DirectorySource::new(location)))
    }

    fn source_with(&self, location: &Path, options: &Options) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(DirectorySource::with_options(location, options)?))
    }
}
