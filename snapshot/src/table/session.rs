//! The seam between the engine-neutral record-level workflows and one database engine.
//!
//! A [`Session`] sees two sides at once — a verified snapshot image and (except for previews)
//! the live database — and does every comparison and write inside the engine, so a table is
//! never held in memory. An engine implements it in its folder (`engine/<name>/session.rs`);
//! a live source hands one out through [`Source::open_tables`](crate::Source::open_tables), the
//! registry ([`engine`](crate::engine)) for previews of an image alone.

use crate::error::Result;
use crate::table::diff::DiffCounts;
use crate::table::order::ForeignKey;
use crate::table::schema::{TablePlan, TableShape};
use crate::table::value::Value;

/// Which side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The snapshot image (read-only).
    Snapshot,
    /// The live database.
    Live,
}

/// Rows written by [`Session::upsert`].
#[cfg_attr(not(feature = "sql"), allow(dead_code))] // read by the engines
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) inserted: u64,
    pub(crate) updated: u64,
    pub(crate) deleted: u64,
}

/// One engine connection seeing a snapshot and the live database.
pub(crate) trait Session {
    /// Whether the engine matches identifiers ignoring ASCII case.
    fn fold_case(&self) -> bool;

    /// The user tables of one side, sorted.
    fn tables(&mut self, side: Side) -> Result<Vec<String>>;

    /// The table called `name` on one side (`None` when absent).
    fn shape(&mut self, side: Side, name: &str) -> Result<Option<TableShape>>;

    /// The first key value held by more than one row of the table on one side.
    fn duplicate_key(
        &mut self,
        side: Side,
        table: &TableShape,
        key: &[String],
    ) -> Result<Option<Vec<Value>>>;

    /// The snapshot table's row count and the rows `offset..offset + limit` in key order.
    fn page(
        &mut self,
        table: &TableShape,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Vec<Value>>)>;

    /// Counts (and samples up to `sample` rows of each kind of) the differences.
    fn diff(&mut self, plan: &TablePlan, sample: usize) -> Result<DiffCounts>;

    /// Starts a transaction: a write transaction that keeps other writers out until
    /// [`commit`](Self::commit), or a read transaction (one consistent view).
    fn begin(&mut self, write: bool) -> Result<()>;

    /// The foreign keys of the live table `table` (as the live schema spells it) to tables of
    /// the same schema, for the order of writes.
    fn foreign_keys(&mut self, table: &str) -> Result<Vec<ForeignKey>>;

    /// Deletes the live rows (matching the filter) whose key is not in the snapshot (inside
    /// the transaction). With `tentative`, when a foreign key checked per statement still
    /// refers to one of them, the delete is undone and `None` returned: the caller retries
    /// once the referring rows are written (an engine that cannot undo one statement runs it
    /// as it is).
    fn delete_added(&mut self, plan: &TablePlan, tentative: bool) -> Result<Option<u64>>;

    /// Updates the live rows that differ from their snapshot rows and inserts the snapshot
    /// rows missing from the live table (inside the transaction); `deleted` stays 0.
    fn upsert(&mut self, plan: &TablePlan) -> Result<Applied>;

    /// Commits the transaction.
    fn commit(&mut self) -> Result<()>;

    /// Rolls the transaction back (nothing happens when none is open).
    fn rollback(&mut self);
}

/// A record-level session on a snapshot image and the live data of a
/// [`Source`](crate::Source), as [`Source::open_tables`](crate::Source::open_tables) returns it.
/// Opaque: only the library's workflows ([`table`](crate::table)) drive it.
pub struct TableSession(pub(crate) Box<dyn Session>);

impl std::fmt::Debug for TableSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableSession")
    }
}
