//! Options and report of [`restore_tables`](crate::SnapshotManager::restore_tables): tables of a
//! snapshot written back into the live database, replaced or merged, in one transaction.

use std::collections::BTreeMap;

use crate::table::drift::SchemaDrift;

/// How a table restore treats the live rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestoreMode {
    /// The table's content becomes the snapshot's: live rows missing from the snapshot are
    /// deleted, changed rows are updated, removed rows are inserted. Unchanged rows are not
    /// touched (their triggers do not fire and their dependants are not cascaded).
    Replace,
    /// Upsert by key: changed rows are updated and removed rows inserted; rows only in the live
    /// table stay.
    Merge,
}

/// How to restore tables from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRestoreOptions {
    pub(crate) mode: RestoreMode,
    pub(crate) dry_run: bool,
    pub(crate) common_columns: bool,
    pub(crate) keys: BTreeMap<String, Vec<String>>,
}

impl TableRestoreOptions {
    /// Restore in `mode`, matching rows by each table's primary key, refusing schema drift.
    pub fn new(mode: RestoreMode) -> Self {
        TableRestoreOptions {
            mode,
            dry_run: false,
            common_columns: false,
            keys: BTreeMap::new(),
        }
    }

    /// Report what would change without writing anything and without a safety snapshot.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// When a table's columns changed since the snapshot, restore by the columns both sides
    /// have (live-only columns of inserted rows get their defaults) instead of refusing with
    /// [`Error::SchemaDrift`](crate::Error::SchemaDrift).
    pub fn common_columns(mut self, allow: bool) -> Self {
        self.common_columns = allow;
        self
    }

    /// Match the rows of `table` by these columns instead of its primary key (needed for a
    /// table without one).
    pub fn key<I, S>(mut self, table: impl Into<String>, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keys
            .insert(table.into(), columns.into_iter().map(Into::into).collect());
        self
    }

    /// The key declared for `table`, if any.
    pub fn key_for(&self, table: &str) -> Option<&[String]> {
        self.keys.get(table).map(Vec::as_slice)
    }
}

/// What a restore did (or would do) to one table. The counts are of rows the restore wrote
/// itself; rows that triggers or foreign-key actions changed as a consequence are not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableChanges {
    /// The table (as the live schema spells it).
    pub table: String,
    /// How it was restored.
    pub mode: RestoreMode,
    /// The columns matching rows (empty: a table without a key, replaced whole).
    pub key: Vec<String>,
    /// The columns written.
    pub columns: Vec<String>,
    /// Columns added, removed or retyped since the snapshot (empty unless allowed).
    pub drift: SchemaDrift,
    /// Rows inserted (in the snapshot, not in the live table).
    pub inserted: u64,
    /// Rows updated (on both sides with different values).
    pub updated: u64,
    /// Rows deleted (only in the live table; `Replace` only).
    pub deleted: u64,
}

/// What [`restore_tables`](crate::SnapshotManager::restore_tables) did, or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableRestoreReport {
    /// The restored snapshot.
    pub snapshot_id: String,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The `pre_restore` snapshot of the live data taken before writing, if any (none
    /// for a dry run or on a disabled manager).
    pub safety_snapshot: Option<String>,
    /// Per table, in the order asked.
    pub tables: Vec<TableChanges>,
}

impl TableRestoreReport {
    /// Rows inserted over all tables.
    pub fn inserted(&self) -> u64 {
        self.tables.iter().map(|t| t.inserted).sum()
    }

    /// Rows updated over all tables.
    pub fn updated(&self) -> u64 {
        self.tables.iter().map(|t| t.updated).sum()
    }

    /// Rows deleted over all tables.
    pub fn deleted(&self) -> u64 {
        self.tables.iter().map(|t| t.deleted).sum()
    }
}
