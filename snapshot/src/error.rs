//! The one error type of the crate.
//!
//! Every fallible public function returns [`Result`]. Variants are semantic (what went wrong, in
//! the terms of a backup library) and carry the operation and the path or snapshot they concern,
//! so a message read in a log is enough to act on.

use std::io;
use std::path::PathBuf;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while taking, listing, verifying, pruning or restoring snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed for a reason with no more specific variant.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "copy", "rename", …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The disk (or quota) ran out of space while writing. Nothing was published.
    #[error("no space left on device: {op} {}", path.display())]
    StorageFull {
        /// What was being done.
        op: &'static str,
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Writing was refused: a read-only file system or missing permission.
    #[error("permission denied or read-only file system: {op} {}", path.display())]
    PermissionDenied {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The data source to snapshot does not exist.
    #[error("{kind} source not found: {}", path.display())]
    SourceMissing {
        /// The source kind ("sqlite", "duckdb", "file").
        kind: &'static str,
        /// The path that was expected to exist.
        path: PathBuf,
    },

    /// A file that should be a database of the given engine is not one (or is damaged).
    #[error("{} is not a valid {engine} database: {detail}", path.display())]
    NotADatabase {
        /// The engine expected ("sqlite", "duckdb").
        engine: &'static str,
        /// The file checked.
        path: PathBuf,
        /// What the engine or the header check said.
        detail: String,
    },

    /// The database stayed busy or locked by other connections for the whole retry budget.
    #[error("{} stayed busy for {attempts} attempts over {waited_ms} ms: {detail}", path.display())]
    Busy {
        /// The database file.
        path: PathBuf,
        /// How many attempts were made.
        attempts: u32,
        /// How long was waited in total, in milliseconds.
        waited_ms: u64,
        /// The last message of the engine.
        detail: String,
    },

    /// The live data is held open (locked) — by another process, or by this one where the
    /// operation cannot work through the holder; nothing was changed. `detail` says who holds
    /// it ("held by this process (pid N)" or "held by process(es) N") and what to do.
    #[error("{} is in use: {detail}", path.display())]
    TargetLocked {
        /// The live database file.
        path: PathBuf,
        /// What revealed the lock.
        detail: String,
    },

    /// No snapshot with this id is in the catalog.
    #[error("no snapshot with id {id:?} in the catalog")]
    NotFound {
        /// The id that was asked for.
        id: String,
    },

    /// The snapshot was taken from a different kind of source than the restore target.
    #[error("snapshot {id} holds a {snapshot_kind} image but the target is a {target_kind} source")]
    WrongEngine {
        /// The snapshot id.
        id: String,
        /// The source kind recorded in the snapshot.
        snapshot_kind: String,
        /// The source kind of the target.
        target_kind: String,
    },

    /// A blob's content does not match the checksum recorded for it (truncated or bit-flipped).
    #[error("checksum mismatch for {key}: expected {expected}, found {actual}")]
    ChecksumMismatch {
        /// The blob key in the store.
        key: String,
        /// The recorded checksum.
        expected: String,
        /// The checksum of the bytes found.
        actual: String,
    },

    /// A blob is missing from the store although the catalog lists it.
    #[error("blob {key} is missing from the store")]
    BlobMissing {
        /// The blob key.
        key: String,
    },

    /// An object already exists under a key written with [`PutMode::Create`](crate::PutMode::Create).
    #[error("{key} already exists in the store")]
    AlreadyExists {
        /// The key.
        key: String,
    },

    /// A compare-and-swap put ([`PutMode::Update`](crate::PutMode::Update)) found the object
    /// changed (or gone) since it was read: another writer got there first. The catalog retries
    /// such a read-modify-write.
    #[error("{key} changed in the store since it was read (a concurrent writer)")]
    Precondition {
        /// The key.
        key: String,
    },

    /// The catalog index (`snapshot_metadata.json`) cannot be parsed.
    #[error("catalog {} is corrupt at line {line}, column {column}: {detail} (run `doctor` to rebuild it from the sidecars)", path.display())]
    CatalogCorrupt {
        /// The catalog file.
        path: PathBuf,
        /// 1-based line of the first error (0 when unknown).
        line: usize,
        /// 1-based column of the first error (0 when unknown).
        column: usize,
        /// What the parser said.
        detail: String,
    },

    /// A request or option is invalid; names the field and why.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field or argument.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// The retention policy would keep no snapshot at all.
    #[error("retention policy keeps nothing: {reason}")]
    RetentionKeepsNothing {
        /// Which rule made it so.
        reason: String,
    },

    /// A database engine reported an error.
    #[error("{engine} {op} on {}: {detail}", path.display())]
    Engine {
        /// The engine ("sqlite", "duckdb").
        engine: &'static str,
        /// What was being done.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The engine's message.
        detail: String,
    },

    /// A restore failed; the live data was put back from the safety snapshot when `rolled_back`.
    #[error("restore of {id} failed ({reason}); {}", if *rolled_back { "the live data was rolled back to its state before the restore" } else { "the live data was not changed" })]
    RestoreFailed {
        /// The snapshot that was being restored.
        id: String,
        /// What failed.
        reason: String,
        /// Whether the target had been replaced and was put back.
        rolled_back: bool,
    },

    /// No default manager was installed with [`install`](crate::install) and none was named.
    #[error(
        "no snapshot manager installed: call snapshot::install(manager) at start-up or pass `manager = …`"
    )]
    NotInstalled,

    /// Another process holds a store's lock longer than the wait budget (a scheduler's lock,
    /// a local store's compare-and-swap), or other writers kept changing the catalog index
    /// for the whole budget of a read-modify-write.
    #[error("{} is held by another process (waited {waited_ms} ms)", path.display())]
    StoreLocked {
        /// The lock file, or the index.
        path: PathBuf,
        /// How long was waited, in milliseconds.
        waited_ms: u64,
    },

    /// A record-level operation (preview, compare, table restore, undo) is not available for
    /// this kind of source.
    #[error("record-level {operation} is not supported for {kind} sources")]
    Unsupported {
        /// What was asked ("preview", "compare", "table restore", "undo").
        operation: &'static str,
        /// The source kind of the snapshot or the live source.
        kind: String,
    },

    /// A table named in a record-level operation does not exist where it was looked for.
    #[error("table {table:?} does not exist in {location}")]
    TableMissing {
        /// The table name as given.
        table: String,
        /// Where it was looked for: `snapshot <id>` or `the live database <path>`.
        location: String,
    },

    /// A table's columns changed since the snapshot (added, removed or retyped). Table restore
    /// and undo refuse it unless asked to use the common columns only.
    #[error(
        "schema of table {table:?} changed since snapshot {id}: {drift}; restore by the common columns only when that is what you want"
    )]
    SchemaDrift {
        /// The snapshot.
        id: String,
        /// The table.
        table: String,
        /// What changed.
        drift: crate::table::drift::SchemaDrift,
    },

    /// No key identifies the rows of a table: it has no primary key and none was declared, or
    /// a declared or primary key column is missing on one side.
    #[error("table {table:?} has no usable key: {reason}")]
    NoKey {
        /// The table.
        table: String,
        /// Why, and what to declare.
        reason: String,
    },

    /// Two rows of a table share the key used to match rows, so a row cannot be matched.
    #[error(
        "key ({key_columns}) is not unique in table {table:?} of {location}: {key} appears more than once"
    )]
    KeyCollision {
        /// The table.
        table: String,
        /// Where: `snapshot <id>` or `the live database <path>`.
        location: String,
        /// The key columns, comma-separated.
        key_columns: String,
        /// The first duplicated key value, as text.
        key: String,
    },

    /// An undo was refused before anything was changed.
    #[error("cannot undo {id}: {reason}")]
    UndoRefused {
        /// The snapshot.
        id: String,
        /// Why.
        reason: crate::table::conflict::UndoRefusal,
    },

    /// An undo would overwrite rows that changed in the live data since the snapshot; nothing
    /// was changed. Undo with `force` to overwrite them.
    #[error(
        "undo of {id} would overwrite {total} row(s) changed since the snapshot ({}); nothing was changed, undo with force to overwrite them",
        crate::table::conflict::conflict_summary(conflicts)
    )]
    UndoConflict {
        /// The snapshot.
        id: String,
        /// How many live rows differ from the snapshot.
        total: u64,
        /// The first of them (bounded), with the columns that differ.
        conflicts: Vec<crate::table::conflict::RowConflict>,
    },

    /// A table restore or undo failed inside its transaction: the transaction was rolled back,
    /// the live data is as it was, and the safety snapshot (when one was taken) is kept.
    #[error("table restore from {id} failed{} ({detail}); the transaction was rolled back and the live data was not changed{}", table.as_deref().map(|t| format!(" on table {t:?}")).unwrap_or_default(), safety_snapshot.as_deref().map(|s| format!("; safety snapshot {s} is kept")).unwrap_or_default())]
    TableRestoreFailed {
        /// The snapshot that was being restored.
        id: String,
        /// The table being written when it failed (`None` when the commit failed).
        table: Option<String>,
        /// The engine's message.
        detail: String,
        /// The safety snapshot taken before the transaction, if any.
        safety_snapshot: Option<String>,
    },

    /// Tables of a table restore refer to each other in a cycle of foreign keys that the
    /// engine checks after every statement (PostgreSQL: not `DEFERRABLE`): no order of writes
    /// satisfies them. Refused before anything was written.
    #[error(
        "tables {} refer to each other through foreign keys checked after every statement ({}): no order of writes satisfies them; declare one of them DEFERRABLE to restore these tables together; nothing was changed",
        tables.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(" → "),
        constraints.join(", ")
    )]
    ForeignKeyCycle {
        /// The tables of the cycle, each referring to the next (and the last to the first).
        tables: Vec<String>,
        /// The foreign-key constraints closing the cycle.
        constraints: Vec<String>,
    },

    /// A server (a database, or a remote store's endpoint) could not be reached (refused,
    /// unresolvable, timed out, or the connection dropped); nothing was read or changed.
    #[error("{engine} server at {address} is unreachable: {detail}")]
    Unreachable {
        /// The engine ("postgres").
        engine: &'static str,
        /// The server's address (`host:port`, or the socket directory).
        address: String,
        /// What the connection attempt reported.
        detail: String,
    },

    /// A request to a remote API failed for good: an answer that is not the expected JSON, a
    /// status that is no error of the moment, or retries of a busy or failing server that ran
    /// out of their budget. Says which part of the export and which page; the progress made
    /// so far is kept, so the next run resumes from there.
    #[error("{url}: {what}, page {page}: {detail}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Fetch {
        /// The URL asked for, without credentials.
        url: String,
        /// The part of the export (`observations 2016-03`, `lookup subjects`).
        what: String,
        /// The page of that part (1 for the first).
        page: u64,
        /// The last HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong.
        detail: String,
    },

    /// The bucket of a remote store does not exist at the endpoint (or the credentials may
    /// not see it). Nothing was written.
    #[error("bucket {bucket:?} does not exist at {endpoint}")]
    BucketMissing {
        /// The bucket.
        bucket: String,
        /// The endpoint asked.
        endpoint: String,
    },

    /// A request to a remote store failed for good: a status that is not an error of the
    /// moment, or retries that ran out of their budget. Names the object and the endpoint.
    #[error("{location} at {endpoint}: {detail}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Remote {
        /// The object (`s3://bucket/prefix/key`).
        location: String,
        /// The endpoint asked.
        endpoint: String,
        /// The last HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong.
        detail: String,
    },

    /// An encrypted store's key is missing, malformed, or not the key the store was sealed
    /// with. Nothing was read or changed.
    #[error("key for {location}: {detail}")]
    Key {
        /// The store, the object, or the key file.
        location: String,
        /// What is wrong.
        detail: String,
    },

    /// A database server refused the connection's credentials: unknown user, wrong password,
    /// or no permission to connect. Nothing was read or changed.
    #[error("{engine} server at {address} refused access to user {user:?}: {detail}")]
    AccessDenied {
        /// The engine ("postgres").
        engine: &'static str,
        /// The server's address (`host:port`, or the socket directory).
        address: String,
        /// The user that was refused.
        user: String,
        /// What the server said.
        detail: String,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path, choosing the most specific variant.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Error::StorageFull { op, path, source }
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Error::PermissionDenied { op, path, source }
            }
            _ => Error::Io { op, path, source },
        }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Error> for io::Error {
    /// Lets functions returning `io::Result` use `?` on this crate's errors (and
    /// `#[with_snapshot]` fail closed through them), keeping the I/O kind where there is one.
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Io { source, .. }
            | Error::StorageFull { source, .. }
            | Error::PermissionDenied { source, .. } => source.kind(),
            Error::SourceMissing { .. }
            | Error::NotFound { .. }
            | Error::BlobMissing { .. }
            | Error::TableMissing { .. } => io::ErrorKind::NotFound,
            Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            Error::Precondition { .. } => io::ErrorKind::ResourceBusy,
            Error::Busy { .. } | Error::TargetLocked { .. } | Error::StoreLocked { .. } => {
                io::ErrorKind::ResourceBusy
            }
            Error::Unreachable { .. } => io::ErrorKind::ConnectionRefused,
            Error::Fetch { .. } | Error::Remote { .. } => io::ErrorKind::Other,
            Error::BucketMissing { .. } => io::ErrorKind::NotFound,
            Error::AccessDenied { .. } | Error::Key { .. } => io::ErrorKind::PermissionDenied,
            Error::InvalidInput { .. }
            | Error::NoKey { .. }
            | Error::SchemaDrift { .. }
            | Error::KeyCollision { .. }
            | Error::UndoRefused { .. }
            | Error::ForeignKeyCycle { .. }
            | Error::Unsupported { .. } => io::ErrorKind::InvalidInput,
            Error::NotADatabase { .. }
            | Error::ChecksumMismatch { .. }
            | Error::CatalogCorrupt { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
