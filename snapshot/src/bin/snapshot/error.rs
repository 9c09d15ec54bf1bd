//! How the tool fails: an exit status and a message (or, with `--json`, an error document),
//! from the library's typed errors.

use snapshot::Error;

/// The exit codes of the tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Done.
    Ok = 0,
    /// Any other error (I/O, engine, disk full, an unreachable database server, refused
    /// credentials, …), or a confirmation answered "no".
    Error = 1,
    /// Bad command line, configuration or input; a confirmation refused because standard input
    /// is not a terminal; a command the database cannot serve (CSV/JSON exports of a
    /// PostgreSQL server).
    Usage = 2,
    /// No such snapshot, store, database file or table.
    NotFound = 3,
    /// A snapshot failed verification (checksum, missing blob, engine check) or `doctor` found
    /// problems it did not repair.
    VerifyFailed = 4,
    /// The store, the database or the scheduler is locked by another process.
    Locked = 5,
    /// The live data changed since the snapshot in a way a write will not override unless
    /// told: `undo` would overwrite rows changed since (`--force`), or a table's columns changed
    /// (`--common-columns`). Nothing was changed.
    Conflict = 6,
    /// `create` took nothing: snapshots are switched off on this host (`--force` takes it).
    NotTaken = 7,
}

/// An error on its way out: a message and an exit status.
#[derive(Debug)]
pub struct CliError {
    /// The exit status.
    pub status: ExitStatus,
    /// What to print.
    pub message: String,
    /// A short name of the kind of error, for `--json`.
    pub kind: &'static str,
    /// The command already printed its report (with `--json`, no error document follows it).
    pub reported: bool,
}

impl CliError {
    /// An error with a given status.
    pub fn new(status: ExitStatus, kind: &'static str, message: impl Into<String>) -> Self {
        CliError {
            status,
            kind,
            message: message.into(),
            reported: false,
        }
    }

    /// Marks the error as following a report the command already printed.
    pub fn after_report(mut self) -> Self {
        self.reported = true;
        self
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let (status, kind) = match &e {
            Error::NotFound { .. } => (ExitStatus::NotFound, "not_found"),
            Error::SourceMissing { .. } => (ExitStatus::NotFound, "source_missing"),
            Error::InvalidInput {
                field: "table" | "order_by",
                ..
            } => (ExitStatus::NotFound, "unknown_table"),
            Error::InvalidInput { field: "store", .. } => (ExitStatus::NotFound, "no_store"),
            Error::ChecksumMismatch { .. } => (ExitStatus::VerifyFailed, "checksum_mismatch"),
            Error::BlobMissing { .. } => (ExitStatus::VerifyFailed, "blob_missing"),
            Error::NotADatabase { .. } => (ExitStatus::VerifyFailed, "not_a_database"),
            Error::CatalogCorrupt { .. } => (ExitStatus::VerifyFailed, "catalog_corrupt"),
            Error::RestoreFailed { .. } => (ExitStatus::VerifyFailed, "restore_failed"),
            Error::TableMissing { .. } => (ExitStatus::NotFound, "table_missing"),
            Error::UndoConflict { .. } => (ExitStatus::Conflict, "undo_conflict"),
            Error::SchemaDrift { .. } => (ExitStatus::Conflict, "schema_drift"),
            Error::NoKey { .. } => (ExitStatus::Usage, "no_key"),
            Error::KeyCollision { .. } => (ExitStatus::Usage, "key_collision"),
            Error::UndoRefused { .. } => (ExitStatus::Usage, "undo_refused"),
            Error::ForeignKeyCycle { .. } => (ExitStatus::Usage, "foreign_key_cycle"),
            Error::Unsupported { .. } => (ExitStatus::Usage, "unsupported"),
            Error::TableRestoreFailed { .. } => (ExitStatus::Error, "table_restore_failed"),
            Error::StoreLocked { .. } => (ExitStatus::Locked, "store_locked"),
            Error::TargetLocked { .. } => (ExitStatus::Locked, "target_locked"),
            Error::Busy { .. } => (ExitStatus::Locked, "busy"),
            Error::InvalidInput { .. } => (ExitStatus::Usage, "invalid_input"),
            Error::RetentionKeepsNothing { .. } => (ExitStatus::Usage, "retention_keeps_nothing"),
            Error::WrongEngine { .. } => (ExitStatus::Usage, "wrong_engine"),
            Error::AlreadyExists { .. } => (ExitStatus::Error, "already_exists"),
            Error::Precondition { .. } => (ExitStatus::Error, "concurrent_change"),
            Error::StorageFull { .. } => (ExitStatus::Error, "storage_full"),
            Error::PermissionDenied { .. } => (ExitStatus::Error, "permission_denied"),
            Error::Unreachable { .. } => (ExitStatus::Error, "unreachable"),
            Error::AccessDenied { .. } => (ExitStatus::Error, "access_denied"),
            Error::Fetch { .. } => (ExitStatus::Error, "fetch_failed"),
            Error::BucketMissing { .. } => (ExitStatus::Error, "bucket_missing"),
            Error::Remote { .. } => (ExitStatus::Error, "remote_failed"),
            Error::Key { .. } => (ExitStatus::Error, "key_rejected"),
            _ => (ExitStatus::Error, "error"),
        };
        CliError::new(status, kind, e.to_string())
    }
}

/// [`Error::InvalidInput`] naming `field`.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::Error;

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let code = |e: Error| CliError::from(e).status;
        assert_eq!(
            code(Error::NotFound { id: "x".into() }),
            ExitStatus::NotFound
        );
        assert_eq!(
            code(Error::ChecksumMismatch {
                key: "k".into(),
                expected: "a".into(),
                actual: "b".into()
            }),
            ExitStatus::VerifyFailed
        );
        assert_eq!(
            code(Error::StoreLocked {
                path: "/s/.lock".into(),
                waited_ms: 1
            }),
            ExitStatus::Locked
        );
        assert_eq!(code(invalid("config", "bad")), ExitStatus::Usage);
        assert_eq!(code(invalid("table", "nope")), ExitStatus::NotFound);
        assert_eq!(
            code(Error::TableMissing {
                table: "t".into(),
                location: "snapshot x".into()
            }),
            ExitStatus::NotFound
        );
        assert_eq!(
            code(Error::UndoConflict {
                id: "x".into(),
                total: 1,
                conflicts: vec![]
            }),
            ExitStatus::Conflict
        );
        assert_eq!(
            code(Error::SchemaDrift {
                id: "x".into(),
                table: "t".into(),
                drift: Default::default()
            }),
            ExitStatus::Conflict
        );
        assert_eq!(
            code(Error::UndoRefused {
                id: "x".into(),
                reason: snapshot::table::UndoRefusal::NoEntity
            }),
            ExitStatus::Usage
        );
        assert_eq!(
            code(Error::NoKey {
                table: "t".into(),
                reason: "r".into()
            }),
            ExitStatus::Usage
        );
        assert_eq!(
            code(Error::KeyCollision {
                table: "t".into(),
                location: "l".into(),
                key_columns: "k".into(),
                key: "1".into()
            }),
            ExitStatus::Usage
        );
        assert_eq!(
            code(Error::Unsupported {
                operation: "undo",
                kind: "file".into()
            }),
            ExitStatus::Usage
        );
        assert_eq!(
            code(Error::ForeignKeyCycle {
                tables: vec!["a".into(), "b".into()],
                constraints: vec!["a_b_fkey".into()]
            }),
            ExitStatus::Usage
        );
        assert_eq!(
            code(Error::Unreachable {
                engine: "postgres",
                address: "127.0.0.1:1".into(),
                detail: "refused".into()
            }),
            ExitStatus::Error
        );
        assert_eq!(
            CliError::from(Error::AccessDenied {
                engine: "postgres",
                address: "127.0.0.1:1".into(),
                user: "u".into(),
                detail: "no".into()
            })
            .kind,
            "access_denied"
        );
        assert_eq!(
            code(Error::TableRestoreFailed {
                id: "x".into(),
                table: None,
                detail: "d".into(),
                safety_snapshot: None
            }),
            ExitStatus::Error
        );
    }
}
