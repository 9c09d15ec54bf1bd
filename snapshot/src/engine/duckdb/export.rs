//! Reading DuckDB tables for exports, under one transaction, page by page (DuckDB materialises
//! a query's result, so a table is read in bounded pages of rows ordered by `rowid`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use duckdb::types::ValueRef;
use duckdb::{AccessMode, Config, Connection};

use crate::engine::duckdb::{KIND, error as err};
use crate::error::{Error, Result};
use crate::export::ExportSource;
use crate::export::reader::{Cell, ColumnSchema, TableReader, ValueKind};
use crate::sql::ident;

/// Rows per page.
const PAGE: i64 = 50_000;

impl ExportSource {
    /// Exports of the DuckDB database at `path` (both formats, every table). The file must not be held open by
    /// another process (DuckDB's one-writer rule).
    pub fn duckdb(path: impl Into<PathBuf>) -> Self {
        ExportSource::with_engine(&super::DuckDbEngine, path.into())
    }
}

pub(crate) struct DuckReader {
    conn: Connection,
    path: PathBuf,
}

/// The kind of a column from its DuckDB type name.
pub(crate) fn kind_of(declared: &str) -> ValueKind {
    let t = declared.to_ascii_uppercase();
    match t.as_str() {
        "BOOLEAN" => ValueKind::Boolean,
        "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "UTINYINT" | "USMALLINT" | "UINTEGER"
        | "UBIGINT" => ValueKind::Integer,
        "HUGEINT" | "UHUGEINT" => ValueKind::Decimal,
        "FLOAT" | "DOUBLE" => ValueKind::Real,
        "VARCHAR" => ValueKind::Text,
        "BLOB" => ValueKind::Blob,
        _ if t.starts_with("DECIMAL") => ValueKind::Decimal,
        _ => ValueKind::Other,
    }
}

impl DuckReader {
    pub(crate) fn open(path: &Path) -> Result<DuckReader> {
        if !path.exists() {
            return Err(Error::SourceMissing {
                kind: KIND,
                path: path.to_path_buf(),
            });
        }
        let config = Config::default()
            .access_mode(AccessMode::ReadOnly)
            .map_err(|e| err(path, "configure", e))?;
        let conn = Connection::open_with_flags(path, config).map_err(|e| err(path, "open", e))?;
        conn.execute_batch("BEGIN TRANSACTION")
            .map_err(|e| err(path, "begin", e))?;
        Ok(DuckReader {
            conn,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for DuckReader {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

impl TableReader for DuckReader {
    fn tables(&mut self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' \
                 AND database_name = current_database() AND NOT temporary ORDER BY table_name",
            )
            .map_err(|e| err(&self.path, "list tables", e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|r| r.collect::<duckdb::Result<Vec<_>>>())
            .map_err(|e| err(&self.path, "list tables", e))?;
        Ok(rows)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<ColumnSchema>> {
        let pk: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT unnest(constraint_column_names) FROM duckdb_constraints() \
                     WHERE schema_name = 'main' AND database_name = current_database() \
                     AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
                )
                .map_err(|e| err(&self.path, "read constraints", e))?;
            stmt.query_map([table], |r| r.get::<_, String>(0))
                .and_then(|r| r.collect::<duckdb::Result<Vec<_>>>())
                .map_err(|e| err(&self.path, "read constraints", e))?
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns() \
                 WHERE schema_name = 'main' AND database_name = current_database() \
                 AND table_name = ? ORDER BY column_index",
            )
            .map_err(|e| err(&self.path, "read columns", e))?;
        let cols = stmt
            .query_map([table], |r| {
                let name: String = r.get(0)?;
                let declared: String = r.get(1)?;
                Ok(ColumnSchema {
                    primary_key: pk.contains(&name),
                    name,
                    kind: kind_of(&declared),
                    declared_type: declared,
                    nullable: r.get(2)?,
                    observed: Default::default(),
                })
            })
            .and_then(|r| r.collect::<duckdb::Result<Vec<_>>>())
            .map_err(|e| err(&self.path, "read columns", e))?;
        if cols.is_empty() {
            return Err(Error::invalid(
                "table",
                format!("no table named {table:?} in {}", self.path.display()),
            ));
        }
        Ok(cols)
    }

    fn scan(
        &mut self,
        table: &str,
        columns: &[ColumnSchema],
        each: &mut dyn FnMut(&[Cell<'_>]) -> Result<()>,
    ) -> Result<u64> {
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| match c.kind {
                ValueKind::Decimal | ValueKind::Other => {
                    format!("CAST({} AS VARCHAR)", ident(&c.name))
                }
                _ => ident(&c.name),
            })
            .collect();
        let sql = format!(
            "SELECT rowid, {} FROM main.{} WHERE rowid > ? ORDER BY rowid LIMIT {PAGE}",
            exprs.join(", "),
            ident(table)
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| err(&self.path, "read table", e))?;
        let mut after: i64 = -1;
        let mut n = 0u64;
        loop {
            let mut rows = stmt
                .query([after])
                .map_err(|e| err(&self.path, "read table", e))?;
            let mut in_page = 0;
            while let Some(row) = rows.next().map_err(|e| err(&self.path, "read table", e))? {
                after = row.get(0).map_err(|e| err(&self.path, "read rowid", e))?;
                let mut cells: Vec<Cell<'_>> = Vec::with_capacity(columns.len());
                for (i, c) in columns.iter().enumerate() {
                    let v = row
                        .get_ref(i + 1)
                        .map_err(|e| err(&self.path, "read value", e))?;
                    cells.push(cell(v, c.kind));
                }
                each(&cells)?;
                in_page += 1;
                n += 1;
            }
            if in_page < PAGE {
                return Ok(n);
            }
        }
    }
}

fn cell(v: ValueRef<'_>, kind: ValueKind) -> Cell<'_> {
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Boolean(b) => Cell::Bool(b),
        ValueRef::TinyInt(x) => Cell::Int(x.into()),
        ValueRef::SmallInt(x) => Cell::Int(x.into()),
        ValueRef::Int(x) => Cell::Int(x.into()),
        ValueRef::BigInt(x) => Cell::Int(x),
        ValueRef::UTinyInt(x) => Cell::Int(x.into()),
        ValueRef::USmallInt(x) => Cell::Int(x.into()),
        ValueRef::UInt(x) => Cell::Int(x.into()),
        ValueRef::UBigInt(x) => Cell::UInt(x),
        ValueRef::HugeInt(x) => Cell::Number(Cow::Owned(x.to_string())),
        ValueRef::UHugeInt(x) => Cell::Number(Cow::Owned(x.to_string())),
        ValueRef::Float(f) => Cell::Float(f.into()),
        ValueRef::Double(f) => Cell::Float(f),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            match kind {
                ValueKind::Decimal => Cell::Number(s),
                ValueKind::Other => Cell::Other(s),
                _ => Cell::Text(s),
            }
        }
        ValueRef::Blob(b) => Cell::Blob(Cow::Borrowed(b)),
        other => Cell::Other(Cow::Owned(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_duckdb_types() {
        assert_eq!(kind_of("BIGINT"), ValueKind::Integer);
        assert_eq!(kind_of("DECIMAL(18,3)"), ValueKind::Decimal);
        assert_eq!(kind_of("HUGEINT"), ValueKind::Decimal);
        assert_eq!(kind_of("TIMESTAMP"), ValueKind::Other);
        assert_eq!(kind_of("INTEGER[]"), ValueKind::Other);
        assert_eq!(kind_of("VARCHAR"), ValueKind::Text);
    }
}
