//! Where an entity type's rows live for [`undo`](crate::SnapshotManager::undo): its table, the
//! column holding the id, the key matching rows, and the dependent tables restored with it.
//! Re-exported as `snapshot::table::{EntityMapping, Cascade}`; the manager keeps the configured
//! mappings.

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

/// `measure = table "measure", id in the primary key, key (a, b), with "t"."c"`: the mapping as
/// `snapshot config --show` prints it.
impl std::fmt::Display for EntityMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.as_deref().unwrap_or(&self.entity_type);
        write!(
            f,
            "{} = table {table:?}, id in {}",
            self.entity_type,
            self.column
                .as_deref()
                .map_or_else(|| "the primary key".to_string(), |c| format!("{c:?}"))
        )?;
        if let Some(k) = &self.key {
            write!(f, ", key ({})", k.join(", "))?;
        }
        for c in &self.cascades {
            write!(f, ", with {:?}.{:?}", c.table, c.column)?;
        }
        Ok(())
    }
}
