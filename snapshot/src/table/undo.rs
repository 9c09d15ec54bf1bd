//! Options and report of [`undo`](crate::SnapshotManager::undo): put back exactly the rows one
//! call removed or changed — the rows of the snapshot's entity, and the rows of declared
//! dependent tables — as they were in the snapshot.

use crate::mapping::EntityMapping;
use crate::table::conflict::RowConflict;
use crate::table::restore::TableChanges;

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

/// What [`undo`](crate::SnapshotManager::undo) did, or would do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct UndoReport {
    /// The snapshot undone.
    pub snapshot_id: String,
    /// Its entity type.
    pub entity_type: String,
    /// Its entity id.
    pub entity_id: String,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The `pre_restore` snapshot taken before writing, if any.
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
