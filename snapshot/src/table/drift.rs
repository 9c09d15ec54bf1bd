//! How a table's columns changed between a snapshot and the live data: the report types that
//! comparisons show and errors carry.

use std::fmt;

/// A column of a table, as its engine declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// The declared type, as written in the schema (`INTEGER`, `VARCHAR(20)`, empty for none).
    pub declared_type: String,
    /// Whether the column is declared `NOT NULL`.
    pub not_null: bool,
    /// Position in the primary key (1-based), 0 when the column is not part of it.
    pub primary_key: u32,
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.declared_type.is_empty() {
            write!(f, "{:?}", self.name)
        } else {
            write!(f, "{:?} {}", self.name, self.declared_type)
        }
    }
}

/// A column whose declared type changed since the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retyped {
    /// The column name.
    pub name: String,
    /// Its type in the snapshot.
    pub snapshot_type: String,
    /// Its type in the live table.
    pub live_type: String,
}

/// How a table's columns changed between a snapshot and the live data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDrift {
    /// Columns of the live table that the snapshot's table does not have.
    pub added: Vec<Column>,
    /// Columns of the snapshot's table that the live table no longer has.
    pub removed: Vec<Column>,
    /// Columns on both sides whose declared type differs.
    pub retyped: Vec<Retyped>,
}

impl SchemaDrift {
    /// Whether both sides have the same columns with the same declared types.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.retyped.is_empty()
    }
}

impl fmt::Display for SchemaDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let mut parts = Vec::new();
        let list = |cols: &[Column]| {
            cols.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.added.is_empty() {
            parts.push(format!("column(s) added: {}", list(&self.added)));
        }
        if !self.removed.is_empty() {
            parts.push(format!("column(s) removed: {}", list(&self.removed)));
        }
        if !self.retyped.is_empty() {
            let r: Vec<String> = self
                .retyped
                .iter()
                .map(|r| format!("{:?} {} → {}", r.name, r.snapshot_type, r.live_type))
                .collect();
            parts.push(format!("column(s) retyped: {}", r.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}
