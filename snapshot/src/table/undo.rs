//! Options and report of [`undo`](crate::SnapshotManager::undo): put back exactly the rows one
//! call removed or changed — the rows of the snapshot's entity, and the rows of declared
//! dependent tables — as they were in the snapshot.

use std::fmt;

use crate::record::Outcome;
use crate::table::{TableChanges, Value, value::show_key};

/// Where an entity type's rows live, and which dependent rows go with them.
///
/// By default an entity type `measure` is the table `measure`, the entity id is compared with
/// that table's single-column primary key, rows are matched by the primary key, and nothing
/// else is restored.
///
/// ```
/// use snapshot::table::{Cascade, EntityMapping};
///
/// let measure = EntityMapping::new("measure")
///     .table("measures")
///     .column("id")
///     .cascade(Cascade::new("measure_area_priority", "measure_id"));
/// # let _ = measure;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityMapping {
    pub(crate) entity_type: String,
    pub(crate) table: Option<String>,
    pub(crate) column: Option<String>,
    pub(crate) key: Option<Vec<String>>,
    pub(crate) cascades: Vec<Cascade>,
}

impl EntityMapping {
    /// The mapping of `entity_type` (as recorded in snapshots), with the defaults above.
    pub fn new(entity_type: impl Into<String>) -> Self {
        EntityMapping {
            entity_type: entity_type.into(),
            table: None,
            column: None,
            key: None,
            cascades: Vec::new(),
        }
    }

    /// The table holding the entities (default: the entity type).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// The column holding the entity id (default: the table's single-column primary key).
    /// Several rows may share it: all of them are put back.
    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }

    /// The columns matching rows between the snapshot and the live table (default: the primary
    /// key, or the entity column for a table without one).
    pub fn key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Also put back the rows of another table that refer to the entity (those a foreign-key
    /// cascade deleted with it).
    pub fn cascade(mut self, cascade: Cascade) -> Self {
        self.cascades.push(cascade);
        self
    }
}

/// Rows of a dependent table restored with an entity: those whose `column` equals the entity
/// id in the snapshot, matched by the table's primary key (or [`key`](Self::key)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cascade {
    pub(crate) table: String,
    pub(crate) column: String,
    pub(crate) key: Option<Vec<String>>,
}

impl Cascade {
    /// Rows of `table` whose `column` holds the entity id.
    pub fn new(table: impl Into<String>, column: impl Into<String>) -> Self {
        Cascade {
            table: table.into(),
            column: column.into(),
            key: None,
        }
    }

    /// Match rows by these columns instead of the table's primary key.
    pub fn key<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.key = Some(columns.into_iter().map(Into::into).collect());
        self
    }
}

/// How to undo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndoOptions {
    pub(crate) force: bool,
    pub(crate) dry_run: bool,
    pub(crate) common_columns: bool,
    pub(crate) mappings: Vec<EntityMapping>,
}

impl UndoOptions {
    /// Refuse conflicts, write, refuse schema drift, default entity mappings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrite live rows that changed since the snapshot instead of refusing with
    /// [`Error::UndoConflict`](crate::Error::UndoConflict).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Report what would change (and the conflicts) without writing anything.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Restore by the common columns when a table's columns changed since the snapshot,
    /// instead of refusing with [`Error::SchemaDrift`](crate::Error::SchemaDrift).
    pub fn common_columns(mut self, allow: bool) -> Self {
        self.common_columns = allow;
        self
    }

    /// Where an entity type's rows live (replaces an earlier mapping of the same type).
    pub fn entity(mut self, mapping: EntityMapping) -> Self {
        self.mappings
            .retain(|m| m.entity_type != mapping.entity_type);
        self.mappings.push(mapping);
        self
    }

    pub(crate) fn mapping_for(
        &self,
        entity_type: &str,
        configured: &[EntityMapping],
    ) -> EntityMapping {
        self.mappings
            .iter()
            .chain(configured)
            .find(|m| m.entity_type == entity_type)
            .cloned()
            .unwrap_or_else(|| EntityMapping::new(entity_type))
    }
}

/// Why an undo was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndoRefusal {
    /// The snapshot records no entity type and id (a manual or safety snapshot).
    NoEntity,
    /// The call the snapshot was taken for did not commit (it is pending, or it failed).
    NotCommitted(Outcome),
    /// The snapshot holds no row of the entity: there is nothing to put back.
    NotInSnapshot {
        /// The table looked in.
        table: String,
        /// The column compared with the id.
        column: String,
        /// The entity id.
        entity_id: String,
    },
}

impl fmt::Display for UndoRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UndoRefusal::NoEntity => {
                f.write_str("the snapshot names no entity id; restore its tables instead")
            }
            UndoRefusal::NotCommitted(o) => {
                let what = match o {
                    Outcome::Pending => "has not finished (or its process died)",
                    Outcome::Failed => "failed, so its changes are not in the live data",
                    _ => "did not commit",
                };
                write!(
                    f,
                    "the call it was taken for {what}; restore its tables instead"
                )
            }
            UndoRefusal::NotInSnapshot {
                table,
                column,
                entity_id,
            } => write!(
                f,
                "table {table:?} of the snapshot has no row with {column:?} = {entity_id:?}"
            ),
        }
    }
}

/// A live row that an undo would overwrite: it changed since the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct RowConflict {
    /// The table.
    pub table: String,
    /// The columns of the rows below.
    pub columns: Vec<String>,
    /// The row's key values.
    pub key: Vec<Value>,
    /// The row as it is in the snapshot.
    pub snapshot: Vec<Value>,
    /// The row as it is now.
    pub live: Vec<Value>,
    /// The columns whose values differ.
    pub changed_columns: Vec<String>,
}

impl fmt::Display for RowConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} key {}: {} changed",
            self.table,
            show_key(&self.key),
            self.changed_columns.join(", ")
        )
    }
}

/// The conflicts of an [`Error::UndoConflict`](crate::Error::UndoConflict), for its message.
pub(crate) fn conflict_summary(conflicts: &[RowConflict]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = conflicts
        .iter()
        .take(SHOWN)
        .map(|c| c.to_string())
        .collect();
    if conflicts.len() > SHOWN {
        parts.push("…".into());
    }
    parts.join("; ")
}

/// What [`undo`](crate::SnapshotManager::undo) did, or would do.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoReport {
    /// The snapshot undone.
    pub snapshot_id: String,
    /// Its entity type.
    pub entity_type: String,
    /// Its entity id.
    pub entity_id: String,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The pinned `pre_restore` snapshot taken before writing, if any.
    pub safety_snapshot: Option<String>,
    /// The entity's table first, then each cascade, in declaration order.
    pub tables: Vec<TableChanges>,
    /// Live rows that differ from the snapshot: overwritten when forced (or, in a dry run,
    /// that would be), bounded to the first few per table.
    pub conflicts: Vec<RowConflict>,
    /// How many live rows differ from the snapshot, over all tables.
    pub conflicts_total: u64,
}

impl UndoReport {
    /// Rows put back (inserted) over all tables.
    pub fn inserted(&self) -> u64 {
        self.tables.iter().map(|t| t.inserted).sum()
    }

    /// Rows overwritten (updated) over all tables.
    pub fn updated(&self) -> u64 {
        self.tables.iter().map(|t| t.updated).sum()
    }
}
