//! # snapshot
//!
//! Consistent, verified snapshots of an application's data, taken right before it is destroyed,
//! and put back — whole — after a safety copy of the present.
//!
//! An application builds one [`SnapshotManager`] from a [`Source`] (what to copy: a live SQLite
//! database, a DuckDB file, any file) and a [`Store`] (where snapshots live: a local directory,
//! memory, …). Each [`snapshot`](SnapshotManager::snapshot) writes a self-contained,
//! checksummed image into the store and a [`SnapshotRecord`] into the catalog
//! (`snapshot_metadata.json`), then applies the [`RetentionPolicy`] (keep the last 10 by default).
//! [`restore`](SnapshotManager::restore) verifies the image, takes a `pre_restore` safety
//! snapshot, swaps the file atomically and rolls back if the result fails its check.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use snapshot::{Environment, ListFilter, LocalStore, SnapshotManager, SnapshotRequest, SqliteSource};
//!
//! let dir = tempfile::tempdir()?;
//! let db = dir.path().join("app.db");
//! # std::fs::write(&db, b"")?;
//! let manager = SnapshotManager::builder()
//!     .source(SqliteSource::new(&db))
//!     .store(LocalStore::open(dir.path().join("backups"))?)
//!     .environment(Environment::persistent())
//!     .build()?;
//!
//! let taken = manager.snapshot(SnapshotRequest::new("delete").entity("measure", 42))?;
//! let id = taken.id().unwrap_or_default().to_string();
//! // … the measure is deleted, and the user wants it back:
//! let listed = manager.list(&ListFilter::new().entity_type("measure").limit(5))?;
//! assert_eq!(listed[0].snapshot_id, id);
//! let report = manager.restore(&id)?;
//! assert!(report.safety_snapshot.is_some());
//! # Ok(()) }
//! # #[cfg(not(feature = "sqlite"))] fn main() {}
//! ```
//!
//! ## Record-level restore
//!
//! [`table`] looks into a snapshot and puts back less than everything:
//! [`preview`](SnapshotManager::preview) a table, [`compare`](SnapshotManager::compare) it with
//! the live table (added, removed and changed rows), [`restore_tables`](SnapshotManager::restore_tables)
//! in replace or merge mode in one transaction, or [`undo`](SnapshotManager::undo) exactly the
//! rows one `#[with_snapshot]` call deleted — each after a safety snapshot (SQLite, DuckDB and
//! PostgreSQL sources).
//!
//! ## Features
//!
//! | feature   | default | what it adds |
//! |-----------|---------|--------------|
//! | `macros`  | yes     | `#[with_snapshot]` (re-exported from `snapshot-macros`) |
//! | `sqlite`  | no      | `SqliteSource`: live SQLite databases (rusqlite) |
//! | `duckdb`  | no      | `DuckDbSource`: DuckDB files, record-level restore on them (duckdb) |
//! | `postgres`| no      | `PostgresSource`: tables of a PostgreSQL server, exported consistently into one bundle; record-level restore on the server (postgres) |
//! | `dir`     | no      | `DirectorySource`: directories of files as zip (or tar + zstd) archives with a summary and a report |
//! | `bundled` | no      | compile SQLite/DuckDB from source instead of linking the system's |
//! | `export`  | no      | `export`: tables to CSV (+ schema) and typed JSON, as zip bundle snapshots |
//! | `schedule`| no      | `schedule`: cron jobs with an interval gate, missed-run reports, an activity log |
//! | `cli`     | no      | the `snapshot` command-line tool (a program: no library API; implies `export` and `schedule`) |
//! | `test-util`| no     | `testing`: the store and table-engine conformance suites |
//!
//! ## Engines and stores are plugins
//!
//! Each kind of data is an engine in a folder of its own, found through one registry
//! ([`engine`]): a source owns its capture, its image check, its restore
//! ([`Source::begin_restore`]) and its record-level session ([`Source::open_tables`]). A
//! [`Store`] is a small core — `put` with a [`PutMode`] (`Create`, `Overwrite`, the
//! compare-and-swap `Update`), `get`, `head`, `list`, `delete` — with conveniences in
//! [`StoreExt`] and a directory's own notions in the optional
//! [`LocalStorage`](store::LocalStorage) capability.
//!
//! A library should not force C-library bundling on its users, so `bundled` is opt-in; the
//! workspace's examples and tests turn it on.
//!
//! ## On disk
//!
//! A [`LocalStore`] directory holds, side by side: the blobs (each a self-contained database
//! file), one JSON sidecar per blob (its record, from which the index can be rebuilt), the index
//! `snapshot_metadata.json`, and a `.lock` file (held for the instant of a compare-and-swap of
//! the index). Files are 0600 and the directory 0700: snapshots hold the same data as the
//! database.

pub mod catalog;
pub mod engine;
pub mod environment;
mod error;
#[cfg(feature = "export")]
pub mod export;
mod fs_util;
pub mod id;
mod manager;
mod mapping;
mod path_diff;
pub mod record;
mod restore;
mod restore_latest;
pub mod retention;
#[cfg(feature = "schedule")]
pub mod schedule;
pub mod source;
mod sql;
pub mod stats;
pub mod store;
pub mod table;
#[cfg(feature = "test-util")]
pub mod testing;
mod verify;

#[doc(hidden)]
pub mod __private;

// `cfg(fuzzing)`: set by cargo-fuzz when it builds the targets of `fuzz/`.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(feature = "macros")]
pub use snapshot_macros::with_snapshot;

pub use engine::FileSource;
#[cfg(feature = "api")]
pub use engine::api::ApiSource;
#[cfg(feature = "dir")]
pub use engine::dir::DirectorySource;
#[cfg(feature = "duckdb")]
pub use engine::duckdb::DuckDbSource;
#[cfg(feature = "postgres")]
pub use engine::postgres::PostgresSource;
#[cfg(feature = "sqlite")]
pub use engine::sqlite::SqliteSource;
pub use environment::{Environment, Indicator};
pub use error::{Error, Result};
pub use manager::{
    ListFilter, OperationStats, PruneReport, SnapshotManager, SnapshotManagerBuilder,
    SnapshotOutcome, SnapshotRequest, Status, install, installed,
};
pub use path_diff::{PathChange, PathDiff};
pub use record::{Outcome, SnapshotRecord};
pub use restore::{RestoreOptions, RestoreReport};
pub use restore_latest::IfMissing;
pub use retention::{Decision, Reason, RetentionPlan, RetentionPolicy};
pub use source::{
    BusyBudget, Capture, CaptureProgress, CheckLevel, ProgressFn, ProgressHook, Source,
};
pub use store::{LocalStore, MemoryStore, ObjectMeta, PutMode, Store, StoreExt};
pub use verify::{DoctorOptions, DoctorReport, VerifyAllReport, VerifyReport};
