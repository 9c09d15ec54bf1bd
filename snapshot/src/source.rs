//! What to copy: a [`Source`] produces a consistent, self-contained image of live data, checks an
//! image with its engine, and owns the restore side — how its live data is replaced by an
//! image ([`Source::begin_restore`]) and how record-level sessions reach it
//! ([`Source::open_tables`]).
//!
//! The built-in sources live in their engine folders ([`engine`](crate::engine)):
//! [`FileSource`](crate::FileSource) (any single file), `SqliteSource` (feature `sqlite`),
//! `DuckDbSource` (feature `duckdb`) and `PostgresSource` (feature `postgres`: tables of a
//! server, exported as one bundle file). A source of one file gets a whole restore for free:
//! the default [`begin_restore`](Source::begin_restore) is [`FileReplacement`], an atomic
//! swap of the file built from [`prepare_replace`](Source::prepare_replace),
//! [`companions`](Source::companions) and [`check_image`](Source::check_image).

mod holders;
pub(crate) mod live_file;
mod replace;

pub use holders::{describe_holders, processes_holding, processes_holding_under};
pub use replace::{FileReplacement, Replacement, RestoreContext};

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::stats::DbStats;
use crate::table::session::TableSession;

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

/// A source as the manager's builder takes it: any [`Source`], or one already shared.
pub trait IntoSource {
    /// The shared source.
    fn into_source(self) -> Arc<dyn Source>;
}

impl<S: Source + 'static> IntoSource for S {
    fn into_source(self) -> Arc<dyn Source> {
        Arc::new(self)
    }
}

impl IntoSource for Arc<dyn Source> {
    fn into_source(self) -> Arc<dyn Source> {
        self
    }
}

impl IntoSource for Box<dyn Source> {
    fn into_source(self) -> Arc<dyn Source> {
        Arc::from(self)
    }
}

impl<S: Source + 'static> IntoSource for Arc<S> {
    fn into_source(self) -> Arc<dyn Source> {
        self
    }
}

/// What a capture may use beyond the live data (see [`Source::capture_with`]).
#[derive(Clone, Copy, Default)]
#[non_exhaustive]
pub struct Capture<'a> {
    /// The operation the snapshot is taken before (`delete`, `scheduled`, `manual`, …).
    pub operation: &'a str,
    /// The entity type recorded with it (a scheduled job's name).
    pub entity_type: Option<&'a str>,
    /// The image of this source's previous snapshot, when the source
    /// [wants it](Source::wants_previous) and there is one the store could give.
    pub previous: Option<&'a Path>,
    /// Where a long capture reports how far it is (a progress bar), when someone listens.
    pub progress: Option<&'a ProgressFn<'a>>,
}

impl Debug for Capture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("operation", &self.operation)
            .field("entity_type", &self.entity_type)
            .field("previous", &self.previous)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// How far a long capture is (an API export: chunks done of all, rows so far).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureProgress {
    /// Steps done (chunks).
    pub done: u64,
    /// Steps in all.
    pub total: u64,
    /// Items so far (rows).
    pub items: u64,
    /// What is being done now (`observations 2016-03`).
    pub detail: String,
}

/// A listener of [`CaptureProgress`] (see [`SnapshotRequest::progress`](crate::SnapshotRequest::progress)).
pub type ProgressFn<'a> = dyn Fn(&CaptureProgress) + Send + Sync + 'a;

/// A shared [`ProgressFn`] carried by a request; requests compare equal whatever their
/// listeners.
#[derive(Clone)]
pub struct ProgressHook(pub std::sync::Arc<ProgressFn<'static>>);

impl Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl PartialEq for ProgressHook {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ProgressHook {}

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
    /// [`Error::SourceMissing`],
    /// [`Error::NotADatabase`],
    /// [`Error::Busy`] after the retry budget, I/O errors.
    fn capture(&self, dest: &Path) -> Result<()>;

    /// [`capture`](Self::capture), knowing what the snapshot is for and, when
    /// [`wants_previous`](Self::wants_previous) asks for it, the image of this source's
    /// previous snapshot. The manager calls this; the default ignores the context.
    ///
    /// # Errors
    /// As [`capture`](Self::capture).
    fn capture_with(&self, dest: &Path, context: &Capture<'_>) -> Result<()> {
        let _ = context;
        self.capture(dest)
    }

    /// Whether [`capture_to`](Self::capture_to) streams this source's image (SQLite: its pages
    /// read under the read transaction), so that a store taking images as streams (a dedup
    /// store) gets it without a staged copy. The default: no.
    fn streams(&self) -> bool {
        false
    }

    /// Writes the image [`capture`](Self::capture) would write to `out`, in order, instead of
    /// to a file.
    ///
    /// # Errors
    /// As [`capture`](Self::capture); [`Error::Unsupported`] for a source that does not
    /// [stream](Self::streams) (the default).
    fn capture_to(&self, out: &mut dyn std::io::Write) -> Result<()> {
        let _ = out;
        Err(Error::Unsupported {
            operation: "streamed capture",
            kind: self.kind().to_string(),
        })
    }

    /// Whether [`capture_with`](Self::capture_with) uses the previous snapshot's image (a
    /// directory's report of what changed since). The default: no.
    fn wants_previous(&self) -> bool {
        false
    }

    /// Checks that `image` is a sound image of this kind. Never modifies it.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when the engine rejects it.
    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()>;

    /// Makes the live location safe to replace: refuses when another process holds it open and
    /// folds any engine journal into the main file.
    ///
    /// # Errors
    /// [`Error::TargetLocked`] when it is in use.
    fn prepare_replace(&self) -> Result<()>;

    /// Files beside the live file that belong to the replaced data and must go after a swap
    /// (SQLite `-wal`/`-shm`, DuckDB `.wal`).
    fn companions(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Starts a whole restore of the live data from `image`, a verified image of this kind
    /// (of the snapshot `snapshot_id`; see [`Replacement`] for the steps the restore
    /// transaction drives). `None` (the
    /// default) means the live data is the one file at [`path`](Self::path), swapped for the
    /// image by a [`FileReplacement`]; a source whose data is not one file (a database server)
    /// replaces it its own way.
    ///
    /// # Errors
    /// [`Error::TargetLocked`] when the live data is in use; the source's errors preparing it.
    fn begin_restore(
        &self,
        image: &Path,
        snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        let _ = (image, snapshot_id);
        Ok(None)
    }

    /// Starts a restore of only the entries of `image` (a verified image of this kind) that
    /// match the globs `paths`, put back into the live data while the rest of it stays as it
    /// is (a directory's `restore ID --path 'csv/*.csv'`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a source whose data has no paths
    /// (the default); [`Error::InvalidInput`] for a glob that
    /// does not parse; as [`begin_restore`](Self::begin_restore).
    fn begin_restore_paths(
        &self,
        image: &Path,
        snapshot_id: &str,
        paths: &[String],
    ) -> Result<Box<dyn Replacement + '_>> {
        let _ = (image, snapshot_id, paths);
        Err(crate::Error::Unsupported {
            operation: "restore some paths",
            kind: self.kind().to_string(),
        })
    }

    /// Puts `image` (a verified image of this kind) at `target`, which does not exist, with
    /// `paths` (globs; empty: everything) choosing what of it, and says what it did. `None`
    /// (the default, for an empty selection): the image file itself is the result, published
    /// at `target` by the caller.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a selection on a source whose
    /// data has no paths; I/O errors naming the path.
    fn materialize(
        &self,
        image: &Path,
        target: &Path,
        paths: &[String],
    ) -> Result<Option<Vec<String>>> {
        let _ = (image, target);
        if paths.is_empty() {
            return Ok(None);
        }
        Err(crate::Error::Unsupported {
            operation: "restore some paths",
            kind: self.kind().to_string(),
        })
    }

    /// What changed in the live data since the snapshot whose verified image is `image`,
    /// path by path (see [`SnapshotManager::compare_paths`](crate::SnapshotManager::compare_paths)).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a source whose data has no paths
    /// (the default); I/O errors naming the path.
    fn compare_paths(&self, image: &Path) -> Result<crate::PathDiff> {
        let _ = image;
        Err(crate::Error::Unsupported {
            operation: "compare paths",
            kind: self.kind().to_string(),
        })
    }

    /// Fits a verified image, staged for a whole restore, to the live data it will replace (a
    /// SQLite image is written in rollback-journal mode so that it opens read-only anywhere;
    /// put back, it takes the live file's journal mode again). The default changes nothing.
    ///
    /// # Errors
    /// I/O errors naming the image.
    fn adapt_image(&self, image: &Path) -> Result<()> {
        let _ = image;
        Ok(())
    }

    /// The directory where a restore stages the image before
    /// [`begin_restore`](Self::begin_restore): beside the live file by default, so that the swap is a rename;
    /// `None` for a source that is not a file (the image is then read where the store keeps it,
    /// or staged in its staging directory).
    fn restore_dir(&self) -> Option<PathBuf> {
        Some(match self.path().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
    }

    /// Opens a record-level session ([`table`](crate::table)) on the snapshot image `image`
    /// and this source's live data (`write` when it will be written). Each engine reaches its
    /// own connection here: a DuckDB source the application's instance, a PostgreSQL source
    /// its server. A source that wraps another must forward this (and
    /// [`begin_restore`](Self::begin_restore)) to reach the inner engine.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a source without record-level operations (the default);
    /// engine errors.
    fn open_tables(&self, image: &Path, write: bool) -> Result<TableSession> {
        let _ = (image, write);
        Err(Error::Unsupported {
            operation: "record-level restore",
            kind: self.kind().to_string(),
        })
    }

    /// Statistics of the live data for `snapshot status`: its size, and for a database every
    /// table with its row count; for `table`, its numeric columns (count, minimum, maximum,
    /// average) and its latest row, ordered by `order_by` (default: the engine's insertion or
    /// key order). The default reports the file's size alone.
    ///
    /// # Errors
    /// [`Error::SourceMissing`]; [`Error::InvalidInput`] (field `table` or `order_by`) for an
    /// unknown table or column; engine errors.
    fn statistics(&self, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
        let _ = (table, order_by);
        let m = std::fs::metadata(self.path()).map_err(|_| Error::SourceMissing {
            kind: self.kind(),
            path: self.path().to_path_buf(),
        })?;
        Ok(DbStats {
            engine: self.kind().to_string(),
            path: self.path().to_path_buf(),
            file_bytes: m.len(),
            tables: Vec::new(),
            table: None,
            files: Vec::new(),
        })
    }
}
