//! What to copy: a [`Source`] produces a consistent, self-contained image of live data, checks an
//! image with its engine, and prepares the live location to be replaced by a restore.
//!
//! A new kind of data is one new file implementing this trait plus a feature flag. The built-in
//! sources are [`FileSource`] (any single file), `SqliteSource` (feature `sqlite`),
//! `DuckDbSource` (feature `duckdb`) and `PostgresSource` (feature `postgres`: tables of a
//! server, exported as one bundle file).

#[cfg(feature = "duckdb")]
mod duckdb;
mod file;
mod holders;
mod live_file;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_wal;

#[cfg(feature = "duckdb")]
pub use self::duckdb::DuckDbSource;
#[cfg(feature = "duckdb")]
pub(crate) use self::duckdb::{Hold as DuckDbHold, duck_error};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresSource;
pub use file::FileSource;
pub use holders::processes_holding;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteSource;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::uri_path;

use std::any::Any;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;

/// How thoroughly an engine checks an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckLevel {
    /// Only what is nearly free: the file header and size.
    Header,
    /// A quick structural check (SQLite `quick_check`, DuckDB opens and reads its catalog).
    #[default]
    Quick,
    /// The engine's full check (SQLite `integrity_check`, DuckDB reads every table).
    Full,
}

/// Retry budget for a database that is busy or locked by other connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyBudget {
    /// How many attempts before giving up.
    pub attempts: u32,
    /// The longest pause between two attempts (pauses grow from 1 ms up to this).
    pub max_pause: Duration,
}

impl Default for BusyBudget {
    fn default() -> Self {
        BusyBudget {
            attempts: 50,
            max_pause: Duration::from_millis(200),
        }
    }
}

/// A kind of live data that can be snapshotted and restored.
pub trait Source: Send + Sync + Debug {
    /// Short kind name recorded in each snapshot ("sqlite", "duckdb", "file").
    fn kind(&self) -> &'static str;

    /// The live location.
    fn path(&self) -> &Path;

    /// File extension of the blobs (without the dot).
    fn extension(&self) -> &str;

    /// Writes a consistent, self-contained image of the live data to the new file `dest` (it
    /// must not exist; it is created 0600). The image need not be fsynced: the caller seals it.
    ///
    /// # Errors
    /// [`Error::SourceMissing`](crate::Error::SourceMissing),
    /// [`Error::NotADatabase`](crate::Error::NotADatabase),
    /// [`Error::Busy`](crate::Error::Busy) after the retry budget, I/O errors.
    fn capture(&self, dest: &Path) -> Result<()>;

    /// Checks that `image` is a sound image of this kind. Never modifies it.
    ///
    /// # Errors
    /// [`Error::NotADatabase`](crate::Error::NotADatabase) when the engine rejects it.
    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()>;

    /// Makes the live location safe to replace: refuses when another process holds it open and
    /// folds any engine journal into the main file.
    ///
    /// # Errors
    /// [`Error::TargetLocked`](crate::Error::TargetLocked) when it is in use.
    fn prepare_replace(&self) -> Result<()>;

    /// Files beside the live file that belong to the replaced data and must go after a swap
    /// (SQLite `-wal`/`-shm`, DuckDB `.wal`).
    fn companions(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether the live data is one file that a whole [`restore`](crate::SnapshotManager::restore)
    /// swaps atomically (true for every source but a database server). A source that is not a
    /// file — `PostgresSource`, a database server — is restored table by table instead: every
    /// table of the image in [`Replace`](crate::table::RestoreMode::Replace) mode, in one
    /// transaction, after the safety snapshot (see
    /// [`restore_tables`](crate::SnapshotManager::restore_tables)).
    fn is_file(&self) -> bool {
        true
    }

    /// For a source that is not a file: the tables of `image` in the order a whole restore
    /// writes them (tables that others refer to first).
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) for file sources (the default);
    /// [`Error::NotADatabase`](crate::Error::NotADatabase) when `image` cannot be read.
    fn image_tables(&self, image: &Path) -> Result<Vec<String>> {
        let _ = image;
        Err(crate::Error::Unsupported {
            operation: "table-by-table restore",
            kind: self.kind().to_string(),
        })
    }

    /// The concrete source, for code that needs more than this trait: the record-level engines
    /// ([`table`](crate::table)) reach a `PostgresSource`'s connection settings and a
    /// `DuckDbSource`'s open connection through it. The built-in sources return themselves;
    /// the default is `None`. A source that wraps another (to add logging, progress…) should
    /// return the inner source's answer, or record-level operations on a database server cannot
    /// connect to it.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
}
