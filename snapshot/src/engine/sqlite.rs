//! SQLite: live databases snapshotted at the speed of a file copy, record-level sessions over an
//! attached image, table exports and statistics.
//!
//! | file | what |
//! |------|------|
//! | `source.rs` | [`SqliteSource`]: the consistent copy under a read transaction, image checks, restore hooks |
//! | `image.rs` | opening an image read-only and immutable |
//! | `busy.rs` | retries while other connections hold the database busy or locked |
//! | `live.rs` | the whole restore of a database a process holds open (backup API) |
//! | `wal.rs` | the write-ahead log's committed frames, folded into the copy |
//! | `session.rs` | the record-level session (preview, compare, table restore, undo) |
//! | `export.rs` | the export reader (CSV/JSON bundles) |
//! | `stats.rs` | statistics for `snapshot status` |

mod busy;
#[cfg(feature = "export")]
mod export;
mod image;
mod live;
mod session;
mod source;
mod stats;
mod wal;

pub use source::SqliteSource;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::ErrorCode;

use crate::engine::Engine;
use crate::error::{Error, Result};
#[cfg(feature = "export")]
use crate::export::reader::TableReader;
use crate::source::Source;
use crate::table::session::Session;

/// The kind recorded in snapshots.
pub(crate) const KIND: &str = "sqlite";

/// How long a statement of the engine's own sessions and readers waits for other connections'
/// locks before it reports busy.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The first 16 bytes of every SQLite database file.
pub(crate) const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The registry's entry.
pub(crate) struct SqliteEngine;

impl Engine for SqliteEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "SQLite"
    }

    fn recognizes(&self, head: &[u8], path: &Path, by_name: bool) -> bool {
        if by_name {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            matches!(ext.as_deref(), Some("db" | "sqlite" | "sqlite3" | "db3"))
        } else {
            head.starts_with(MAGIC)
        }
    }

    fn source(&self, location: &Path) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(SqliteSource::new(location)))
    }

    fn has_tables(&self) -> bool {
        true
    }

    fn preview(&self, image: &Path) -> Result<Box<dyn Session>> {
        Ok(Box::new(session::SqliteSession::open(image, None, false)?))
    }

    #[cfg(feature = "export")]
    fn exports(&self) -> bool {
        true
    }

    #[cfg(feature = "export")]
    fn export_reader<'a>(&self, path: &'a Path) -> Result<Box<dyn TableReader + 'a>> {
        Ok(Box::new(export::SqliteReader::open(path)?))
    }
}

/// The one mapping of SQLite's errors on the database at `path`: not a database (or damaged),
/// missing, busy (after [`BUSY_TIMEOUT`]), else an engine error naming `op`.
pub(crate) fn error(path: &Path, op: &'static str, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::NotADatabase {
            engine: KIND,
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        Some(ErrorCode::CannotOpen) if !path.exists() => Error::SourceMissing {
            kind: KIND,
            path: path.to_path_buf(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy {
            path: path.to_path_buf(),
            attempts: 1,
            waited_ms: BUSY_TIMEOUT.as_millis() as u64,
            detail: format!("{op}: {e}"),
        },
        _ => Error::Engine {
            engine: KIND,
            op,
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    }
}
