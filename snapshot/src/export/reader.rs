//! What an engine's export reader produces: tables, their columns, and rows of [`Cell`]s read
//! under one read transaction. Each engine implements [`TableReader`] in its folder
//! (`engine/<name>/export.rs`); [`ExportSource`](crate::export::ExportSource) finds it through
//! the registry.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// Whole numbers.
    Integer,
    /// Floating point numbers.
    Real,
    /// Exact decimals (and 128-bit integers): number literals.
    Decimal,
    /// Booleans.
    Boolean,
    /// Text.
    Text,
    /// Binary data (base64).
    Blob,
    /// Anything else (dates, timestamps, lists, …), written as the engine's text form; for a
    /// SQLite column without a declared type, whatever each value holds.
    Other,
}

/// One column in a schema sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// The declared type, as the engine reports it (may be empty in SQLite).
    pub declared_type: String,
    /// How its values are written.
    pub kind: ValueKind,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Whether it is (part of) the primary key.
    pub primary_key: bool,
    /// The storage classes seen in the data (`null`, `integer`, `real`, `text`, `blob`,
    /// `boolean`, `decimal`, `other`).
    #[serde(default)]
    pub observed: BTreeSet<String>,
}

/// One value read from a table, borrowed where the engine allows it.
#[derive(Debug, Clone, PartialEq)]
#[allow(dead_code)] // not every engine reads every kind of value
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// An exact number literal (DECIMAL, HUGEINT).
    Number(Cow<'a, str>),
    Float(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
    /// A value of another type, in its text form.
    Other(Cow<'a, str>),
}

impl Cell<'_> {
    pub(crate) fn class(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "boolean",
            Cell::Int(_) | Cell::UInt(_) => "integer",
            Cell::Number(_) => "decimal",
            Cell::Float(_) => "real",
            Cell::Text(_) => "text",
            Cell::Blob(_) => "blob",
            Cell::Other(_) => "other",
        }
    }
}

/// Reads tables under one read transaction.
pub(crate) trait TableReader {
    /// Every user table, in a stable order.
    fn tables(&mut self) -> Result<Vec<String>>;
    /// The columns of `table`; [`Error::InvalidInput`] (field `table`) when there is no such
    /// table.
    fn columns(&mut self, table: &str) -> Result<Vec<ColumnSchema>>;
    /// Calls `each` for every row of `table`, in storage order.
    fn scan(
        &mut self,
        table: &str,
        columns: &[ColumnSchema],
        each: &mut dyn FnMut(&[Cell<'_>]) -> Result<()>,
    ) -> Result<u64>;
}
