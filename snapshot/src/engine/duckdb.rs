//! DuckDB: database files snapshotted through the application's own instance (or a brief one
//! of the source's), record-level sessions over an attached image, table exports and
//! statistics.
//!
//! | file | what |
//! |------|------|
//! | `source.rs` | [`DuckDbSource`]: `CHECKPOINT` + a consistent copy, image checks, restore hooks |
//! | `instance.rs` | the instance of a closed file shared by sessions |
//! | `session.rs` | the record-level session (preview, compare, table restore, undo) |
//! | `export.rs` | the export reader (CSV/JSON bundles) |
//! | `stats.rs` | statistics for `snapshot status` |

#[cfg(feature = "export")]
mod export;
mod instance;
mod session;
mod source;
mod stats;

pub use source::DuckDbSource;

use std::path::Path;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
#[cfg(feature = "export")]
use crate::export::reader::TableReader;
use crate::source::Source;
use crate::table::session::Session;

/// The kind recorded in snapshots.
pub(crate) const KIND: &str = "duckdb";

/// The registry's entry.
pub(crate) struct DuckDbEngine;

impl Engine for DuckDbEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "DuckDB"
    }

    fn recognizes(&self, head: &[u8], path: &Path, by_name: bool) -> bool {
        if by_name {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            matches!(ext.as_deref(), Some("duckdb" | "ddb"))
        } else {
            head.len() >= 12 && &head[8..12] == b"DUCK"
        }
    }

    fn source(&self, location: &Path) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(DuckDbSource::new(location)))
    }

    fn has_tables(&self) -> bool {
        true
    }

    fn preview(&self, image: &Path) -> Result<Box<dyn Session>> {
        Ok(Box::new(session::DuckSession::open(image, None)?))
    }

    #[cfg(feature = "export")]
    fn exports(&self) -> bool {
        true
    }

    #[cfg(feature = "export")]
    fn export_reader<'a>(&self, path: &'a Path) -> Result<Box<dyn TableReader + 'a>> {
        Ok(Box::new(export::DuckReader::open(path)?))
    }
}

/// Maps a DuckDB error opening or reading the database at `path`: a file lock held elsewhere
/// is [`Error::TargetLocked`], a damaged or foreign file [`Error::NotADatabase`], anything else
/// [`Error::Engine`] (as [`statement_error`]).
pub(crate) fn error(path: &Path, op: &'static str, e: duckdb::Error) -> Error {
    let detail = e.to_string();
    if detail.contains("Could not set lock") || detail.contains("Conflicting lock") {
        return Error::TargetLocked {
            path: path.to_path_buf(),
            detail,
        };
    }
    if detail.contains("not a valid DuckDB database")
        || detail.contains("Invalid Input Error")
        || detail.contains("Corrupt")
        || detail.contains("checksum")
    {
        return Error::NotADatabase {
            engine: KIND,
            path: path.to_path_buf(),
            detail,
        };
    }
    statement_error(path, op, e)
}

/// An error of a statement on the database at `path` (an [`Error::Engine`]). A foreign key
/// DuckDB checks against rows deleted in the same transaction gets a word of explanation.
pub(crate) fn statement_error(path: &Path, op: &'static str, e: duckdb::Error) -> Error {
    let mut detail = e.to_string();
    if detail.contains("still referenced by a foreign key") {
        detail.push_str(
            " (DuckDB refuses to delete, or to change an indexed column of, a row that another \
             row refers to — even one deleted earlier in the same transaction: restore the \
             referring table by itself first, or by merge)",
        );
    }
    Error::Engine {
        engine: KIND,
        op,
        path: path.to_path_buf(),
        detail,
    }
}
