//! The manifest of a PostgreSQL bundle: the database, the schema and every table with its
//! columns, constraints, references and where its rows lie in the file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a bundle holds, written after its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The format version (`bundle::FORMAT`).
    pub(crate) format: u32,
    /// `server_version` of the server exported.
    pub(crate) server_version: String,
    /// The database exported.
    pub(crate) database: String,
    /// The schema of the tables.
    pub(crate) schema: String,
    /// When the export's transaction started reading.
    pub(crate) taken_at: DateTime<Utc>,
    /// The session settings the text of the rows was written under.
    pub(crate) settings: Vec<(String, String)>,
    /// The tables, in the order of their rows in the file.
    pub(crate) tables: Vec<TableEntry>,
}

/// One table of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TableEntry {
    /// The table's name.
    pub(crate) name: String,
    /// Its columns in table order (generated columns left out).
    pub(crate) columns: Vec<ColumnEntry>,
    /// Its other constraints (unique, check, foreign key, exclusion).
    #[serde(default)]
    pub(crate) constraints: Vec<ConstraintEntry>,
    /// The tables of the same schema its foreign keys refer to.
    #[serde(default)]
    pub(crate) references: Vec<String>,
    /// Its rows.
    pub(crate) rows: u64,
    /// Where its rows start in the file.
    pub(crate) offset: u64,
    /// The length of its rows in bytes.
    pub(crate) length: u64,
}

/// A column of a bundled table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ColumnEntry {
    /// The column's name.
    pub(crate) name: String,
    /// Its type, as `format_type` writes it (`numeric(30,10)`, `timestamp with time zone`).
    pub(crate) data_type: String,
    /// Whether it is `NOT NULL`.
    pub(crate) not_null: bool,
    /// Its position in the primary key (1-based), 0 when not part of it.
    pub(crate) primary_key: u32,
    /// Its default expression.
    #[serde(default)]
    pub(crate) default: Option<String>,
    /// `ALWAYS` or `BY DEFAULT` for an identity column.
    #[serde(default)]
    pub(crate) identity: Option<String>,
}

/// A named table constraint and its definition (`pg_get_constraintdef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConstraintEntry {
    /// The constraint's name.
    pub(crate) name: String,
    /// `UNIQUE (…)`, `CHECK (…)`, `FOREIGN KEY (…) REFERENCES …`.
    pub(crate) definition: String,
}

impl TableEntry {
    /// The primary key's columns in key order.
    pub(crate) fn primary_key(&self) -> Vec<&ColumnEntry> {
        let mut pk: Vec<&ColumnEntry> = self.columns.iter().filter(|c| c.primary_key > 0).collect();
        pk.sort_by_key(|c| c.primary_key);
        pk
    }
}
