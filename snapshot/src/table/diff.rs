//! What [`compare`](crate::SnapshotManager::compare) reports: how a table of a snapshot differs
//! from the live table, as counts (over every row) and a bounded sample (for display).

use crate::table::drift::SchemaDrift;
use crate::table::value::Value;

/// Rows shown per kind of difference unless [`CompareOptions::sample`] says otherwise.
pub const DEFAULT_SAMPLE: usize = 20;

/// How to compare a snapshot's table with the live one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareOptions {
    pub(crate) key: Option<Vec<String>>,
    pub(crate) sample: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            key: None,
            sample: DEFAULT_SAMPLE,
        }
    }
}

impl CompareOptions {
    /// Match rows by the live table's primary key; show up to [`DEFAULT_SAMPLE`] rows of each
    /// kind of difference.
    pub fn new() -> Self {
        Self::default()
    }

    /// Match rows by these columns instead of the primary key (they must identify one row on
    /// each side: a repeated value is an [`Error::KeyCollision`](crate::Error::KeyCollision)).
    pub fn key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// At most `rows` sample rows of each kind (added, removed, changed); 0 for counts only.
    pub fn sample(mut self, rows: usize) -> Self {
        self.sample = rows;
        self
    }
}

/// Which way a row differs, seen from the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiffKind {
    /// The row is in the live table only: it was added since the snapshot.
    Added,
    /// The row is in the snapshot only: it was removed since the snapshot.
    Removed,
    /// The row is on both sides with different values.
    Changed,
}

/// One row of a compare sample.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RowDiff {
    /// Added, removed or changed.
    pub kind: DiffKind,
    /// The row's key values, in key order.
    pub key: Vec<Value>,
    /// The row in the snapshot (compared columns, in [`TableDiff::columns`] order).
    pub snapshot: Option<Vec<Value>>,
    /// The row in the live table (same columns).
    pub live: Option<Vec<Value>>,
    /// For a changed row: the columns whose values differ.
    pub changed_columns: Vec<String>,
}

// Used by the SQL engines.
#[cfg_attr(not(feature = "sql"), allow(dead_code))]
impl RowDiff {
    fn key(key_index: &[usize], row: &[Value]) -> Vec<Value> {
        key_index.iter().map(|&i| row[i].clone()).collect()
    }

    /// A row only in the live table.
    pub(crate) fn added(key_index: &[usize], live: Vec<Value>) -> Self {
        RowDiff {
            kind: DiffKind::Added,
            key: Self::key(key_index, &live),
            snapshot: None,
            live: Some(live),
            changed_columns: Vec::new(),
        }
    }

    /// A row only in the snapshot.
    pub(crate) fn removed(key_index: &[usize], snapshot: Vec<Value>) -> Self {
        RowDiff {
            kind: DiffKind::Removed,
            key: Self::key(key_index, &snapshot),
            snapshot: Some(snapshot),
            live: None,
            changed_columns: Vec::new(),
        }
    }

    /// A row on both sides whose `columns` differ where `differs(i)` says so.
    pub(crate) fn changed(
        key_index: &[usize],
        columns: &[String],
        snapshot: Vec<Value>,
        live: Vec<Value>,
        differs: impl Fn(usize) -> bool,
    ) -> Self {
        RowDiff {
            kind: DiffKind::Changed,
            key: Self::key(key_index, &snapshot),
            changed_columns: (0..columns.len())
                .filter(|&i| differs(i))
                .map(|i| columns[i].clone())
                .collect(),
            snapshot: Some(snapshot),
            live: Some(live),
        }
    }
}

/// How a snapshot's table differs from the live table.
///
/// Counts cover every row; [`sample`](Self::sample) holds at most the requested number of rows
/// of each kind. Values are compared exactly: by value, by storage type where the column's
/// declared type is unchanged (`1` differs from `1.0` and from `'1'`), and text byte for byte
/// (a `NOCASE` column still reports a change of case).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TableDiff {
    /// The snapshot compared.
    pub snapshot_id: String,
    /// The table (as the live schema spells it).
    pub table: String,
    /// The columns matching rows.
    pub key: Vec<String>,
    /// The compared columns: those on both sides (see [`drift`](Self::drift) for the others).
    pub columns: Vec<String>,
    /// Columns added, removed or retyped since the snapshot.
    pub drift: SchemaDrift,
    /// Rows in the snapshot's table.
    pub snapshot_rows: u64,
    /// Rows in the live table.
    pub live_rows: u64,
    /// Rows only in the live table.
    pub added: u64,
    /// Rows only in the snapshot.
    pub removed: u64,
    /// Rows on both sides whose compared values differ.
    pub changed: u64,
    /// Rows on both sides with equal compared values.
    pub unchanged: u64,
    /// For each compared column that differs in some changed row: how many rows, in column
    /// order.
    pub changed_columns: Vec<(String, u64)>,
    /// A bounded sample of the differing rows, added first, then removed, then changed.
    pub sample: Vec<RowDiff>,
}

impl TableDiff {
    /// Whether the compared columns hold the same rows on both sides.
    pub fn is_identical(&self) -> bool {
        self.added == 0 && self.removed == 0 && self.changed == 0
    }
}

/// What an engine counts for a [`TablePlan`](super::schema::TablePlan).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DiffCounts {
    /// Snapshot rows (matching the filter).
    pub(crate) snapshot_rows: u64,
    /// Live rows (matching the filter).
    pub(crate) live_rows: u64,
    /// Snapshot rows (matching the filter) whose key is in the live table.
    pub(crate) matched: u64,
    /// Of those, the ones that differ.
    pub(crate) changed: u64,
    /// Live rows (matching the filter) whose key is not in the snapshot.
    pub(crate) added: u64,
    /// Per compared column: changed rows in which it differs.
    pub(crate) per_column: Vec<u64>,
    /// Added, removed and changed rows, up to the sample size each.
    pub(crate) sample: Vec<RowDiff>,
}

impl DiffCounts {
    /// Snapshot rows whose key is not in the live table.
    pub(crate) fn removed(&self) -> u64 {
        self.snapshot_rows.saturating_sub(self.matched)
    }
}
