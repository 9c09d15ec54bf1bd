//! Database statistics for `snapshot status`: the file's size, every table with its row count,
//! and for one chosen table the count, minimum, maximum and average of each numeric column and
//! its latest row (the original's "readings" statistics: water temperature range and average,
//! latest reading, …).
//!
//! A source computes them ([`Source::statistics`](crate::Source::statistics)), each engine in
//! its folder; the database is read in one read transaction and nothing is written.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;

/// A table and its row count.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TableCount {
    /// The table.
    pub name: String,
    /// Its rows.
    pub rows: u64,
}

/// Statistics of one numeric column.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ColumnStats {
    /// The column.
    pub name: String,
    /// Its declared type.
    pub declared_type: String,
    /// Non-NULL numeric values.
    pub count: u64,
    /// The smallest value.
    pub min: Option<serde_json::Value>,
    /// The largest value.
    pub max: Option<serde_json::Value>,
    /// The mean.
    pub avg: Option<f64>,
}

/// Statistics of the chosen table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TableStats {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// What orders rows for "latest" (a column, or `rowid` for insertion order).
    pub order_by: String,
    /// Each numeric column.
    pub columns: Vec<ColumnStats>,
    /// The latest row, column by column, in column order.
    pub latest: Option<Vec<(String, serde_json::Value)>>,
}

/// Statistics of a database.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DbStats {
    /// The engine.
    pub engine: String,
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes (with a SQLite `-wal` or DuckDB `.wal` beside it).
    pub file_bytes: u64,
    /// Every table with its row count.
    pub tables: Vec<TableCount>,
    /// The chosen table's statistics.
    pub table: Option<TableStats>,
    /// A directory's files by type (empty for a database).
    pub files: Vec<FileGroup>,
}

/// The files of one type in a directory (`csv_files`: every `.csv`), for `snapshot status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FileGroup {
    /// The type, as the directory's summary names it (`csv_files`, `json_files`, …).
    pub group: String,
    /// Its files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

#[allow(dead_code)] // used by the engines of database files
pub(crate) fn file_bytes(path: &Path, companions: &[&str]) -> u64 {
    let mut total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    for c in companions {
        let mut s = path.as_os_str().to_owned();
        s.push(c);
        total += std::fs::metadata(PathBuf::from(s))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    total
}

#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) fn unknown_table(table: &str, path: &Path, all: &[TableCount]) -> Error {
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    Error::invalid(
        "table",
        format!(
            "no table named {table:?} in {} (tables: {})",
            path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        ),
    )
}

#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(crate) fn unknown_column(column: &str, table: &str) -> Error {
    Error::invalid(
        "order_by",
        format!("no column named {column:?} in table {table:?}"),
    )
}
