//! Reading SQLite tables for exports, under one read transaction.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::engine::sqlite::{BUSY_TIMEOUT, KIND, error as err};
use crate::error::{Error, Result};
use crate::export::ExportSource;
use crate::export::reader::{Cell, ColumnSchema, TableReader, ValueKind};
use crate::sql::ident;

impl ExportSource {
    /// Exports of the SQLite database at `path` (both formats, every table).
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        ExportSource::with_engine(&super::SqliteEngine, path.into())
    }
}

pub(crate) struct SqliteReader {
    conn: Connection,
    path: PathBuf,
}

/// The kind of a column from its declared type (SQLite's affinity rules, plus booleans).
pub(crate) fn kind_of(declared: &str) -> ValueKind {
    let t = declared.to_ascii_uppercase();
    if t.contains("BOOL") {
        ValueKind::Boolean
    } else if t.contains("INT") {
        ValueKind::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ValueKind::Text
    } else if t.contains("BLOB") {
        ValueKind::Blob
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ValueKind::Real
    } else {
        ValueKind::Other
    }
}

impl SqliteReader {
    pub(crate) fn open(path: &Path) -> Result<SqliteReader> {
        if !path.exists() {
            return Err(Error::SourceMissing {
                kind: KIND,
                path: path.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(path, "open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err(path, "open", e))?;
        // One read transaction for every table: the export is one consistent state.
        conn.execute_batch("BEGIN DEFERRED")
            .map_err(|e| err(path, "begin", e))?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| err(path, "read schema", e))?;
        Ok(SqliteReader {
            conn,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SqliteReader {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

impl TableReader for SqliteReader {
    fn tables(&mut self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .map_err(|e| err(&self.path, "list tables", e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| err(&self.path, "list tables", e))?;
        Ok(rows)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<ColumnSchema>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid")
            .map_err(|e| err(&self.path, "read columns", e))?;
        let cols = stmt
            .query_map([table], |r| {
                let declared: String = r.get(1)?;
                Ok(ColumnSchema {
                    name: r.get(0)?,
                    kind: kind_of(&declared),
                    declared_type: declared,
                    nullable: r.get::<_, i64>(2)? == 0,
                    primary_key: r.get::<_, i64>(3)? > 0,
                    observed: Default::default(),
                })
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
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
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let sql = format!("SELECT {} FROM {}", list.join(", "), ident(table));
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| err(&self.path, "read table", e))?;
        let mut rows = stmt
            .query([])
            .map_err(|e| err(&self.path, "read table", e))?;
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(|e| err(&self.path, "read table", e))? {
            let mut cells: Vec<Cell<'_>> = Vec::with_capacity(columns.len());
            for (i, c) in columns.iter().enumerate() {
                let v = row
                    .get_ref(i)
                    .map_err(|e| err(&self.path, "read value", e))?;
                cells.push(match v {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(x) if c.kind == ValueKind::Boolean && (x == 0 || x == 1) => {
                        Cell::Bool(x == 1)
                    }
                    ValueRef::Integer(x) => Cell::Int(x),
                    ValueRef::Real(f) => Cell::Float(f),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => Cell::Blob(Cow::Borrowed(b)),
                });
            }
            each(&cells)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_sqlite_affinity() {
        assert_eq!(kind_of("INTEGER"), ValueKind::Integer);
        assert_eq!(kind_of("bigint"), ValueKind::Integer);
        assert_eq!(kind_of("VARCHAR(20)"), ValueKind::Text);
        assert_eq!(kind_of("DOUBLE PRECISION"), ValueKind::Real);
        assert_eq!(kind_of("BOOLEAN"), ValueKind::Boolean);
        assert_eq!(kind_of("BLOB"), ValueKind::Blob);
        assert_eq!(kind_of(""), ValueKind::Other);
        assert_eq!(kind_of("DATETIME"), ValueKind::Other);
    }
}
