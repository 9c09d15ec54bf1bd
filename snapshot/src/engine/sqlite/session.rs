//! The SQLite engine of record-level operations.
//!
//! The snapshot image is `ATTACH`ed read-only and immutable (schema `snap`) to a connection on
//! the live database (schema `main`; an in-memory database for previews). Every count, sample
//! and write is one SQL statement over both schemas: anti-joins (`NOT EXISTS`) on the key find
//! added and removed rows, a join finds changed ones, `UPDATE … FROM` and `INSERT … SELECT`
//! write them back. SQLite streams all of it; no table is held in memory.
//!
//! Values are compared exactly: `IS NOT` (NULL-safe) with `COLLATE BINARY` (a `NOCASE` column
//! still shows a change of case), plus the storage class (`typeof`) where the declared type is
//! unchanged, so `1`, `1.0` and `'1'` differ in a column without affinity. Keys are matched
//! with `IS` under the column's own collation, as the table's uniqueness is defined.

use std::path::{Path, PathBuf};

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, params_from_iter};

use crate::engine::sqlite::image::uri_path;
use crate::engine::sqlite::{BUSY_TIMEOUT, KIND, error as err};
use crate::error::{Error, Result};
use crate::sql::ident;
use crate::table::diff::DiffCounts;
use crate::table::drift::Column;
use crate::table::order::ForeignKey;
use crate::table::schema::{TablePlan, TableShape};
use crate::table::session::{Applied, Session, Side};
use crate::table::statements::{
    self, AntiJoin, ColumnSql, Dialect, KeyColumn, Param, Parts, ReadAs, SqlRunner, Statements,
};
use crate::table::value::Value;

/// Schema name of the attached snapshot image.
const SNAP: &str = "snap";
/// A connection on the live database (or memory) with the snapshot image attached.
pub(crate) struct SqliteSession {
    conn: Connection,
    image: PathBuf,
    live: PathBuf,
    /// Live tables written in the open transaction (to explain a foreign-key failure).
    written: Vec<String>,
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn schema(side: Side) -> &'static str {
    match side {
        Side::Snapshot => SNAP,
        Side::Live => "main",
    }
}

/// SQLite's SQL: a `LEFT JOIN` anti-join (an index, or an automatic one, serves the key
/// lookup), the update reading the snapshot through a filtered subquery.
const DIALECT: Dialect = Dialect {
    anti_join: AntiJoin::LeftJoin,
    insert_override: "",
    update_through_subquery: true,
};

/// The statements of one plan. Keys match with `IS` (NULL-safe, under the column's own
/// collation); values are compared with `IS NOT … COLLATE BINARY`, plus the storage class
/// (`typeof`) where the declared type is unchanged.
fn statements(plan: &TablePlan) -> Statements {
    let columns = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let c = ident(name);
            let differs = if plan.same_type[i] {
                format!("(s.{c} IS NOT l.{c} COLLATE BINARY OR typeof(s.{c}) <> typeof(l.{c}))")
            } else {
                format!("(s.{c} IS NOT l.{c} COLLATE BINARY)")
            };
            let sql = ColumnSql {
                value: format!("s.{c}"),
                differs,
                shown_s: format!("s.{c}"),
                shown_l: format!("l.{c}"),
                written: true,
            };
            (c, sql)
        })
        .collect();
    let key = plan
        .key
        .iter()
        .map(|k| KeyColumn {
            quoted: ident(k),
            op: "IS",
        })
        .collect();
    // The id as text (`?1`) and, when it is one, as an integer (`?2`): a column compares
    // with whichever its affinity makes equal.
    let filter = plan.filter.as_ref().map(|f| {
        let c = ident(&f.column);
        let number = f
            .value
            .parse::<i64>()
            .ok()
            .filter(|i| i.to_string() == f.value)
            .map_or_else(|| Param::Text(f.value.clone()), Param::Integer);
        (
            format!("(s.{c} = ?1 OR s.{c} = ?2)"),
            format!("(l.{c} = ?1 OR l.{c} = ?2)"),
            vec![Param::Text(f.value.clone()), number],
        )
    });
    Statements::new(
        DIALECT,
        Parts {
            s: "s".into(),
            l: "l".into(),
            st: format!("{SNAP}.{}", ident(&plan.snapshot_table)),
            lt: format!("main.{}", ident(&plan.live_table)),
            columns,
            key,
            filter,
            row_differs: None,
        },
    )
}

fn bind(params: &[Param]) -> Vec<SqlValue> {
    params
        .iter()
        .map(|p| match p {
            Param::Text(t) => SqlValue::Text(t.clone()),
            Param::Integer(i) => SqlValue::Integer(*i),
        })
        .collect()
}

impl SqlRunner for SqliteSession {
    fn counts(
        &mut self,
        sql: &str,
        params: &[Param],
        width: usize,
        op: &'static str,
    ) -> Result<Vec<u64>> {
        self.conn
            .query_row(sql, params_from_iter(bind(params)), |r| {
                (0..width)
                    .map(|i| {
                        r.get::<_, Option<i64>>(i)
                            .map(|n| n.unwrap_or(0).max(0) as u64)
                    })
                    .collect::<rusqlite::Result<Vec<u64>>>()
            })
            .map_err(|e| err(&self.live, op, e))
    }

    fn rows(
        &mut self,
        sql: &str,
        params: &[Param],
        read: &[ReadAs],
        flags: usize,
        op: &'static str,
    ) -> Result<Vec<(Vec<Value>, Vec<bool>)>> {
        let path = self.live.clone();
        let mut stmt = self.conn.prepare(sql).map_err(|e| err(&path, op, e))?;
        let mut rows = stmt
            .query(params_from_iter(bind(params)))
            .map_err(|e| err(&path, op, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| err(&path, op, e))? {
            let mut values = Vec::with_capacity(read.len());
            for i in 0..read.len() {
                values.push(value(row.get_ref(i).map_err(|e| err(&path, op, e))?));
            }
            let mut set = Vec::with_capacity(flags);
            for i in read.len()..read.len() + flags {
                set.push(row.get::<_, i64>(i).map_err(|e| err(&path, op, e))? != 0);
            }
            out.push((values, set));
        }
        Ok(out)
    }
}

impl SqliteSession {
    /// Opens the live database (or memory when `live` is `None`) and attaches the image.
    ///
    /// # Errors
    /// [`Error::SourceMissing`] for a missing live database, [`Error::NotADatabase`] when
    /// either side is not SQLite, engine errors.
    pub(crate) fn open(image: &Path, live: Option<&Path>, write: bool) -> Result<Self> {
        let base = OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let (conn, live_path) = match live {
            Some(path) => {
                if !path.exists() {
                    return Err(Error::SourceMissing {
                        kind: KIND,
                        path: path.to_path_buf(),
                    });
                }
                let u = uri_path(path);
                let conn =
                    match Connection::open_with_flags(&u, base | OpenFlags::SQLITE_OPEN_READ_WRITE)
                    {
                        Ok(c) => c,
                        Err(_) if !write => {
                            Connection::open_with_flags(&u, base | OpenFlags::SQLITE_OPEN_READ_ONLY)
                                .map_err(|e| err(path, "open", e))?
                        }
                        Err(e) => return Err(err(path, "open", e)),
                    };
                (conn, path.to_path_buf())
            }
            None => (
                Connection::open_in_memory_with_flags(
                    base | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
                )
                .map_err(|e| err(Path::new(":memory:"), "open", e))?,
                PathBuf::from(":memory:"),
            ),
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err(&live_path, "open", e))?;
        conn.execute(
            &format!("ATTACH DATABASE ?1 AS {SNAP}"),
            [format!("{}?mode=ro&immutable=1", uri_path(image))],
        )
        .map_err(|e| err(image, "attach snapshot", e))?;
        // Writes honour the schema's foreign keys whatever the library's compiled default;
        // they are checked at commit (`defer_foreign_keys`), so tables may be written in any
        // order within one restore.
        let pragma = if write {
            "PRAGMA foreign_keys = ON"
        } else {
            "PRAGMA query_only = ON"
        };
        conn.execute_batch(pragma)
            .map_err(|e| err(&live_path, "open", e))?;
        conn.query_row(
            &format!("SELECT count(*) FROM {SNAP}.sqlite_master"),
            [],
            |_| Ok(()),
        )
        .map_err(|e| err(image, "read schema", e))?;
        conn.query_row("SELECT count(*) FROM main.sqlite_master", [], |_| Ok(()))
            .map_err(|e| err(&live_path, "read schema", e))?;
        Ok(SqliteSession {
            conn,
            image: image.to_path_buf(),
            live: live_path,
            written: Vec::new(),
        })
    }

    fn path(&self, side: Side) -> &Path {
        match side {
            Side::Snapshot => &self.image,
            Side::Live => &self.live,
        }
    }

    fn execute(&self, sql: &str, params: &[SqlValue], op: &'static str) -> Result<u64> {
        self.conn
            .execute(sql, params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| err(&self.live, op, e))
    }

    /// The first foreign-key violation, in a written table first, as text (the transaction
    /// is still open after a failed commit).
    fn foreign_key_violation(&self) -> Option<String> {
        let first = |table: Option<&str>| -> Option<String> {
            let (sql, params): (&str, Vec<&str>) = match table {
                Some(t) => (
                    "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check(?1) LIMIT 1",
                    vec![t],
                ),
                None => (
                    "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check LIMIT 1",
                    vec![],
                ),
            };
            self.conn
                .query_row(sql, params_from_iter(params), |r| {
                    Ok(format!(
                        "row {} of table {:?} refers to a row missing from table {:?}",
                        r.get::<_, Option<i64>>(1)?
                            .map_or_else(|| "?".to_string(), |i| i.to_string()),
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(2)?
                    ))
                })
                .ok()
        };
        self.written
            .iter()
            .find_map(|t| first(Some(t)))
            .or_else(|| first(None))
    }

    /// How a `DELETE … WHERE (id) IN (…)` names a row of the live table: its rowid (under
    /// whichever of its three names no column shadows), or the primary key of a WITHOUT ROWID
    /// table (never NULL there).
    fn row_identity(&self, table: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, pk FROM pragma_table_info(?1, 'main') ORDER BY pk, cid")
            .map_err(|e| err(&self.live, "read columns", e))?;
        let columns = stmt
            .query_map([table], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| err(&self.live, "read columns", e))?;
        if self.without_rowid(Side::Live, table) {
            return Ok(columns
                .iter()
                .filter(|(_, pk)| *pk > 0)
                .map(|(name, _)| ident(name))
                .collect());
        }
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|alias| !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(alias)))
            .map(|alias| vec![alias.to_string()])
            .ok_or_else(|| {
                Error::invalid(
                    "table",
                    format!(
                        "{table:?} has columns named rowid, _rowid_ and oid: its rows cannot be deleted by a replace"
                    ),
                )
            })
    }

    fn without_rowid(&self, side: Side, table: &str) -> bool {
        // `pragma_table_list` needs SQLite 3.37; an older library treats every table as a
        // rowid table (which only costs a duplicate-key check).
        self.conn
            .query_row(
                "SELECT wr FROM pragma_table_list(?1) WHERE schema = ?2",
                [table, schema(side)],
                |r| r.get::<_, i64>(0),
            )
            .map(|wr| wr != 0)
            .unwrap_or(false)
    }
}

impl Drop for SqliteSession {
    fn drop(&mut self) {
        self.rollback();
    }
}

impl Session for SqliteSession {
    fn fold_case(&self) -> bool {
        true
    }

    fn tables(&mut self, side: Side) -> Result<Vec<String>> {
        let path = self.path(side).to_path_buf();
        let sql = format!(
            "SELECT name FROM {}.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            schema(side)
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| err(&path, "list tables", e))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| err(&path, "list tables", e))?;
        Ok(names)
    }

    fn shape(&mut self, side: Side, name: &str) -> Result<Option<TableShape>> {
        let path = self.path(side).to_path_buf();
        let sql = format!(
            "SELECT name, type FROM {}.sqlite_master WHERE type IN ('table', 'view') \
             AND name = ?1 COLLATE NOCASE",
            schema(side)
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| err(&path, "find table", e))?;
        let found = stmt
            .query_map([name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| err(&path, "find table", e))?;
        drop(stmt);
        let Some((real, kind)) = found
            .iter()
            .find(|(n, _)| n == name)
            .or(found.first())
            .cloned()
        else {
            return Ok(None);
        };
        if kind == "view" {
            return Err(Error::invalid(
                "table",
                format!("{real:?} is a view in {}, not a table", path.display()),
            ));
        }
        if real
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("sqlite_"))
        {
            return Err(Error::invalid(
                "table",
                format!("{real:?} is an internal table of SQLite"),
            ));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1, ?2) ORDER BY cid",
            )
            .map_err(|e| err(&path, "read columns", e))?;
        let columns = stmt
            .query_map([real.as_str(), schema(side)], |r| {
                Ok(Column {
                    name: r.get(0)?,
                    declared_type: r.get(1)?,
                    not_null: r.get::<_, i64>(2)? != 0,
                    primary_key: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                })
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| err(&path, "read columns", e))?;
        drop(stmt);
        let pk: Vec<&Column> = columns.iter().filter(|c| c.primary_key > 0).collect();
        let unique_pk = !pk.is_empty()
            && (self.without_rowid(side, &real)
                || (pk.len() == 1 && pk[0].declared_type.eq_ignore_ascii_case("INTEGER"))
                || pk.iter().all(|c| c.not_null));
        Ok(Some(TableShape {
            name: real,
            columns,
            unique_pk,
        }))
    }

    fn duplicate_key(
        &mut self,
        side: Side,
        table: &TableShape,
        key: &[String],
    ) -> Result<Option<Vec<Value>>> {
        let relation = format!("{}.{}", schema(side), ident(&table.name));
        let shown: Vec<String> = key.iter().map(|k| ident(k)).collect();
        let read = ReadAs::native(key.len());
        statements::duplicate_key(self, &relation, table, key, (&shown, &read), true)
    }

    fn page(
        &mut self,
        table: &TableShape,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Vec<Value>>)> {
        let t = format!("{SNAP}.{}", ident(&table.name));
        let pk = table.primary_key();
        let order = if pk.is_empty() {
            "rowid".to_string()
        } else {
            pk.iter()
                .map(|c| ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let shown: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
        let read = ReadAs::native(shown.len());
        statements::page(self, &t, &shown, &read, &order, (offset, limit))
    }

    fn diff(&mut self, plan: &TablePlan, sample: usize) -> Result<DiffCounts> {
        let q = statements(plan);
        let read = ReadAs::native(plan.columns.len());
        statements::diff(self, &q, plan, (&read, &read), sample)
    }

    fn begin(&mut self, write: bool) -> Result<()> {
        self.written.clear();
        let sql = if write {
            "BEGIN IMMEDIATE; PRAGMA defer_foreign_keys = ON;"
        } else {
            "BEGIN DEFERRED"
        };
        self.conn
            .execute_batch(sql)
            .map_err(|e| err(&self.live, "begin transaction", e))
    }

    fn foreign_keys(&mut self, table: &str) -> Result<Vec<ForeignKey>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT id, \"table\" FROM pragma_foreign_key_list(?1, 'main')")
            .map_err(|e| err(&self.live, "read foreign keys", e))?;
        let keys = stmt
            .query_map([table], |r| {
                let referenced: String = r.get(1)?;
                Ok(ForeignKey {
                    name: format!(
                        "foreign key {} of {table:?} to {referenced:?}",
                        r.get::<_, i64>(0)?
                    ),
                    table: table.to_string(),
                    referenced,
                    // Writes run under `defer_foreign_keys`: every key is checked at commit.
                    deferred: true,
                })
            })
            .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| err(&self.live, "read foreign keys", e))?;
        Ok(keys)
    }

    fn delete_added(&mut self, plan: &TablePlan, _tentative: bool) -> Result<Option<u64>> {
        let q = statements(plan);
        self.written.push(plan.live_table.clone());
        let id = self.row_identity(&plan.live_table)?;
        self.execute(&q.delete_added(Some(&id)), &bind(&q.params), "delete rows")
            .map(Some)
    }

    fn upsert(&mut self, plan: &TablePlan) -> Result<Applied> {
        let q = statements(plan);
        let p = bind(&q.params);
        self.written.push(plan.live_table.clone());
        // Updates first: a changed row may hold a unique value a restored row needs.
        let updated = match q.update_changed() {
            Some(update) => self.execute(&update, &p, "update rows")?,
            None => 0,
        };
        let inserted = self.execute(&q.insert_removed(), &p, "insert rows")?;
        Ok(Applied {
            inserted,
            updated,
            deleted: 0,
        })
    }

    fn commit(&mut self) -> Result<()> {
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut e = err(&self.live, "commit", e);
                if let (Error::Engine { detail, .. }, Some(why)) =
                    (&mut e, self.foreign_key_violation())
                {
                    detail.push_str(": ");
                    detail.push_str(&why);
                }
                Err(e)
            }
        }
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::schema;

    fn db(path: &Path, sql: &str) -> Result<()> {
        let c = Connection::open(path).map_err(|e| err(path, "open", e))?;
        c.execute_batch(sql).map_err(|e| err(path, "setup", e))
    }

    #[test]
    fn identifiers_and_uris_are_escaped() {
        assert_eq!(ident(r#"a"b c"#), r#""a""b c""#);
        assert_eq!(
            uri_path(Path::new("/x y/a?b#c%")),
            "file:/x%20y/a%3Fb%23c%25"
        );
    }

    /// A table whose name and columns need quoting, compared and merged both ways.
    #[test]
    fn odd_names_compare_and_merge() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let (img, live) = (dir.path().join("i'mg ?.db"), dir.path().join("li\"ve.db"));
        let schema_sql = r#"CREATE TABLE "t ""q"" ü" ("k ey" TEXT PRIMARY KEY NOT NULL, "v""al", "n" TEXT COLLATE NOCASE);"#;
        db(
            &img,
            &format!(
                r#"{schema_sql} INSERT INTO "t ""q"" ü" VALUES ('a', 1, 'x'), ('b', 2.5, 'y'), ('c', x'00', 'Z');"#
            ),
        )?;
        db(
            &live,
            &format!(
                r#"{schema_sql} INSERT INTO "t ""q"" ü" VALUES ('a', 1.0, 'x'), ('c', x'00', 'z'), ('d', NULL, NULL);"#
            ),
        )?;
        let mut s = SqliteSession::open(&img, Some(&live), true)?;
        let snap = s
            .shape(Side::Snapshot, r#"T "Q" ü"#)?
            .ok_or_else(|| Error::invalid("t", "missing"))?;
        assert_eq!(snap.name, r#"t "q" ü"#);
        let live_shape = s
            .shape(Side::Live, r#"t "q" ü"#)?
            .ok_or_else(|| Error::invalid("t", "missing"))?;
        assert!(live_shape.unique_pk);
        assert_eq!(s.tables(Side::Live)?, [r#"t "q" ü"#]);
        let plan = schema::plan("t", &snap, &live_shape, None, true, false)?;
        assert_eq!(s.duplicate_key(Side::Snapshot, &snap, &plan.key)?, None);
        let d = s.diff(&plan, 10)?;
        // 'a': 1 vs 1.0 differ in a column without affinity; 'c': 'Z' vs 'z' under NOCASE.
        assert_eq!(
            (d.snapshot_rows, d.live_rows, d.matched, d.changed, d.added),
            (3, 3, 2, 2, 1)
        );
        assert_eq!(d.removed(), 1);
        assert_eq!(d.per_column, [0, 1, 1]);
        s.begin(true)?;
        assert_eq!(s.delete_added(&plan, true)?, Some(1));
        let a = s.upsert(&plan)?;
        assert_eq!(
            a,
            Applied {
                inserted: 1,
                updated: 2,
                deleted: 0
            }
        );
        let d = s.diff(&plan, 10)?;
        assert_eq!((d.changed, d.added, d.removed()), (0, 0, 0));
        s.commit()?;
        let (total, rows) = s.page(&snap, 1, 5)?;
        assert_eq!(total, 3);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][1], Value::Real(2.5));
        Ok(())
    }

    #[test]
    fn a_filter_matches_numeric_and_text_ids() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let (img, live) = (dir.path().join("img.db"), dir.path().join("live.db"));
        let schema_sql = "CREATE TABLE c (id INTEGER PRIMARY KEY, parent INTEGER, tag);";
        db(
            &img,
            &format!("{schema_sql} INSERT INTO c VALUES (1, 42, '42'), (2, 42, 42), (3, 7, 7);"),
        )?;
        db(&live, schema_sql)?;
        let mut s = SqliteSession::open(&img, Some(&live), true)?;
        let snap = s
            .shape(Side::Snapshot, "c")?
            .ok_or_else(|| Error::invalid("t", "missing"))?;
        let live_shape = s
            .shape(Side::Live, "c")?
            .ok_or_else(|| Error::invalid("t", "missing"))?;
        let mut plan = schema::plan("c", &snap, &live_shape, None, true, false)?;
        for (column, n) in [("parent", 2), ("tag", 2)] {
            plan.filter = Some(schema::RowFilter {
                column: column.into(),
                value: "42".into(),
            });
            assert_eq!(s.diff(&plan, 0)?.snapshot_rows, n, "{column}");
        }
        Ok(())
    }

    /// Every statement looks keys up (in an index, or an automatic one) instead of scanning
    /// the probed side once per row: no correlated subquery, one full scan per statement.
    #[test]
    fn statements_look_keys_up_instead_of_scanning() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let (img, live) = (dir.path().join("img.db"), dir.path().join("live.db"));
        let sql = "CREATE TABLE log (at TEXT, msg TEXT, n);
                   CREATE TABLE w (a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
                   CREATE TABLE r (id INTEGER PRIMARY KEY, rowid TEXT, v);";
        for p in [&img, &live] {
            let c = Connection::open(p).map_err(|e| err(p, "open", e))?;
            c.execute_batch(sql).map_err(|e| err(p, "setup", e))?;
        }
        let mut s = SqliteSession::open(&img, Some(&live), true)?;
        for (table, key) in [
            ("log", Some(vec!["at".to_string(), "msg".to_string()])),
            ("w", None),
            ("r", None),
        ] {
            let a = s
                .shape(Side::Snapshot, table)?
                .ok_or_else(|| Error::invalid("t", "missing"))?;
            let b = s
                .shape(Side::Live, table)?
                .ok_or_else(|| Error::invalid("t", "missing"))?;
            let plan = schema::plan(table, &a, &b, key.as_deref(), true, false)?;
            let q = statements(&plan);
            let id = s.row_identity(table)?;
            let expected: &[&str] = match table {
                "w" => &["\"a\"", "\"b\""],
                "r" => &["_rowid_"],
                _ => &["rowid"],
            };
            assert_eq!(id, expected);
            for stmt in [
                q.added("count(*)"),
                q.removed("count(*)"),
                q.matched("count(*)", &q.any_differs()),
                q.delete_added(Some(&id)),
                q.update_changed().unwrap_or_default(),
                q.insert_removed(),
            ] {
                let mut e = s
                    .conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {stmt}"))
                    .map_err(|e| err(&live, "explain", e))?;
                let steps: Vec<String> = e
                    .query_map([], |r| r.get::<_, String>(3))
                    .and_then(|r| r.collect())
                    .map_err(|e| err(&live, "explain", e))?;
                assert!(
                    !steps.iter().any(|x| x.contains("CORRELATED")),
                    "{stmt}: {steps:?}"
                );
                assert_eq!(
                    steps.iter().filter(|x| x.starts_with("SCAN")).count(),
                    1,
                    "{stmt}: {steps:?}"
                );
            }
        }
        Ok(())
    }
}
