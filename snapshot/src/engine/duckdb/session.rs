//! The DuckDB engine of record-level operations.
//!
//! The snapshot image is `ATTACH`ed read-only (as a database of its own name) to a connection on
//! the live database — a clone of the application's connection when the source has one
//! ([`DuckDbSource::with_connection`](crate::DuckDbSource::with_connection)), else of the one instance the source opens for its
//! sessions: DuckDB lets one process open a file once, so the engine never opens the live file
//! beside the application. Previews attach the image to an in-memory database. Every count,
//! sample and write is then one SQL statement over both databases, as on SQLite: anti-joins
//! (`NOT EXISTS`, planned as hash anti-joins) find added and removed rows, a join finds changed
//! ones, `UPDATE … FROM` and `INSERT … SELECT` write them back. DuckDB streams all of it. The
//! image is detached when the session ends; while it lasts, the application's instance lists it
//! among its databases.
//!
//! Tables are those of the schema `main` on both sides. Values are compared with
//! `IS DISTINCT FROM` in their own type (exact for DECIMAL, TIMESTAMP, BLOB, lists and structs;
//! text under the binary collation, so a `NOCASE` column still shows a change of case); a
//! column retyped since the snapshot compares the snapshot's value cast to the live type. Keys
//! are matched with `=` (`IS NOT DISTINCT FROM` for a declared key column that may be NULL).
//! Values shown in previews and samples keep their class where SQLite has one (integers,
//! floats, booleans as 1/0, text, blobs); every other type is shown as DuckDB writes it as
//! text (DECIMAL `12.3400`, TIMESTAMP `2025-01-11 14:30:22.5`, lists `[1, 2]`).
//!
//! DuckDB has optimistic concurrency: writers are not locked out during a restore, and a
//! concurrent write to the same rows fails one of the two transactions (the restore's fails
//! and changes nothing). It checks foreign keys after every statement and has no savepoints:
//! tables are written in the order of their keys (deletes children first, then updates and
//! inserts parents first), and DuckDB also refuses to delete a row referred to by a row deleted
//! earlier in the same transaction, or to update an indexed column of a referenced row — a
//! replace that must do so fails with DuckDB's message and changes nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ::duckdb::types::ValueRef;
use ::duckdb::{Connection, params_from_iter};

use crate::engine::duckdb::instance::Hold as DuckDbHold;
use crate::engine::duckdb::{error as duck_error, statement_error as err};
use crate::error::{Error, Result};
use crate::sql::{ident, literal};
use crate::table::diff::DiffCounts;
use crate::table::drift::Column;
use crate::table::order::ForeignKey;
use crate::table::schema::{TablePlan, TableShape};
use crate::table::session::{Applied, Session, Side};
use crate::table::statements::{
    self, AntiJoin, ColumnSql, Dialect, KeyColumn, Param, Parts, ReadAs, SqlRunner, Statements,
};
use crate::table::value::Value;

/// Sessions opened by this process (each attaches the image under a name of its own).
static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// A connection on the live database (or memory) with the snapshot image attached.
pub(crate) struct DuckSession {
    /// Dropped before the hold: the instance closes once both are gone.
    conn: Connection,
    /// The attached image's database name.
    snap: String,
    /// The live database's name (`memory` for previews).
    live_db: String,
    image: PathBuf,
    live: PathBuf,
    in_tx: bool,
    _hold: Option<DuckDbHold>,
}

/// The type's name without its parameters, upper case: `DECIMAL(18,3)` → `DECIMAL`.
fn base_type(ty: &str) -> String {
    ty.split('(')
        .next()
        .unwrap_or(ty)
        .trim()
        .to_ascii_uppercase()
}

/// `expr` as it is read for display: types with a class of their own as they are, every other
/// type as DuckDB's text form.
fn shown(expr: &str, ty: &str) -> String {
    match base_type(ty).as_str() {
        "BOOLEAN" | "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "UTINYINT" | "USMALLINT"
        | "UINTEGER" | "FLOAT" | "DOUBLE" | "VARCHAR" | "BLOB" => expr.to_string(),
        _ => format!("CAST({expr} AS VARCHAR)"),
    }
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Boolean(b) => Value::Integer(i64::from(b)),
        ValueRef::TinyInt(i) => Value::Integer(i64::from(i)),
        ValueRef::SmallInt(i) => Value::Integer(i64::from(i)),
        ValueRef::Int(i) => Value::Integer(i64::from(i)),
        ValueRef::BigInt(i) => Value::Integer(i),
        ValueRef::UTinyInt(i) => Value::Integer(i64::from(i)),
        ValueRef::USmallInt(i) => Value::Integer(i64::from(i)),
        ValueRef::UInt(i) => Value::Integer(i64::from(i)),
        ValueRef::UBigInt(i) => {
            i64::try_from(i).map_or_else(|_| Value::Text(i.to_string()), Value::Integer)
        }
        ValueRef::HugeInt(i) => Value::Text(i.to_string()),
        ValueRef::Float(f) => Value::Real(f64::from(f)),
        ValueRef::Double(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        other => Value::Text(format!("{other:?}")),
    }
}

/// A live or snapshot column's name and type, found in a shape.
fn type_of(shape: &TableShape, name: &str) -> String {
    shape
        .find(name, true)
        .map(|c| c.declared_type.clone())
        .unwrap_or_default()
}

/// Picks aliases `s` and `l`, lengthened until no column of either side is called so (a column
/// named `s` would shadow the alias in a correlated subquery).
fn aliases(snap: &TableShape, live: &TableShape) -> (String, String) {
    let taken = |a: &str| {
        snap.columns
            .iter()
            .chain(&live.columns)
            .any(|c| c.name.eq_ignore_ascii_case(a))
    };
    let mut s = "s".to_string();
    while taken(&s) {
        s.push('_');
    }
    let mut l = "l".to_string();
    while taken(&l) {
        l.push('_');
    }
    (s, l)
}

/// DuckDB's SQL: `NOT EXISTS` anti-joins (hash anti-joins), the snapshot's table joined
/// directly by the update.
const DIALECT: Dialect = Dialect {
    anti_join: AntiJoin::NotExists,
    insert_override: "",
    update_through_subquery: false,
};

/// The statements of one plan, from both sides' shapes. Keys match with `=` where both sides
/// are NOT NULL (`IS NOT DISTINCT FROM` otherwise); values are compared in their own type
/// (text byte for byte, whatever the collation); a retyped column compares the snapshot's
/// value cast to the live type.
fn statements(
    tables: (String, String),
    plan: &TablePlan,
    snap: &TableShape,
    live: &TableShape,
) -> Statements {
    let (s, l) = aliases(snap, live);
    let columns = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let c = ident(name);
            let (stype, ltype) = (type_of(snap, name), type_of(live, name));
            let (value, differs) = if plan.same_type[i] {
                let differs = if base_type(&ltype) == "VARCHAR" {
                    // Byte for byte, whatever the column's collation.
                    format!(
                        "(({s}.{c} COLLATE \"binary\") IS DISTINCT FROM ({l}.{c} COLLATE \"binary\"))"
                    )
                } else {
                    format!("({s}.{c} IS DISTINCT FROM {l}.{c})")
                };
                (format!("{s}.{c}"), differs)
            } else {
                // A value that does not fit the live type differs (and fails a write).
                let cast = format!("TRY_CAST({s}.{c} AS {ltype})");
                (
                    format!("CAST({s}.{c} AS {ltype})"),
                    format!(
                        "({cast} IS DISTINCT FROM {l}.{c} OR ({s}.{c} IS NOT NULL AND {cast} IS NULL))"
                    ),
                )
            };
            let sql = ColumnSql {
                shown_s: shown(&format!("{s}.{c}"), &stype),
                shown_l: shown(&format!("{l}.{c}"), &ltype),
                value,
                differs,
                // Key columns are equal by the join; leaving them out of the update keeps
                // DuckDB from rewriting the row's index entries.
                written: !plan.key.contains(name),
            };
            (c, sql)
        })
        .collect();
    let key = plan
        .key
        .iter()
        .map(|k| {
            let not_null = |shape: &TableShape| {
                shape
                    .find(k, true)
                    .is_some_and(|c| c.not_null || c.primary_key > 0)
            };
            KeyColumn {
                quoted: ident(k),
                op: if not_null(snap) && not_null(live) {
                    "="
                } else {
                    "IS NOT DISTINCT FROM"
                },
            }
        })
        .collect();
    let filter = plan.filter.as_ref().map(|f| {
        let c = ident(&f.column);
        // The id as the column's type (no match when it is not one).
        (
            format!(
                "({s}.{c} = TRY_CAST(CAST($1 AS VARCHAR) AS {}))",
                type_of(snap, &f.column)
            ),
            format!(
                "({l}.{c} = TRY_CAST(CAST($1 AS VARCHAR) AS {}))",
                type_of(live, &f.column)
            ),
            vec![Param::Text(f.value.clone())],
        )
    });
    Statements::new(
        DIALECT,
        Parts {
            s,
            l,
            st: tables.0,
            lt: tables.1,
            columns,
            key,
            filter,
            row_differs: None,
        },
    )
}

impl SqlRunner for DuckSession {
    fn counts(
        &mut self,
        sql: &str,
        params: &[Param],
        width: usize,
        op: &'static str,
    ) -> Result<Vec<u64>> {
        self.conn
            .query_row(sql, params_from_iter(Param::texts(params)), |r| {
                (0..width)
                    .map(|i| {
                        r.get::<_, Option<i64>>(i)
                            .map(|n| n.unwrap_or(0).max(0) as u64)
                    })
                    .collect::<::duckdb::Result<Vec<u64>>>()
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
            .query(params_from_iter(Param::texts(params)))
            .map_err(|e| err(&path, op, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| err(&path, op, e))? {
            let mut values = Vec::with_capacity(read.len());
            for i in 0..read.len() {
                values.push(value(row.get_ref(i).map_err(|e| err(&path, op, e))?));
            }
            let mut set = Vec::with_capacity(flags);
            for i in read.len()..read.len() + flags {
                set.push(
                    row.get::<_, Option<bool>>(i)
                        .map_err(|e| err(&path, op, e))?
                        .unwrap_or(false),
                );
            }
            out.push((values, set));
        }
        Ok(out)
    }
}

impl DuckSession {
    /// Attaches the image at `image` to `live` — a connection on the live database (a clone of
    /// the source's; see the module docs), the hold keeping its instance open, and the live
    /// file's path, as the source's [`open_tables`](crate::Source::open_tables) gives them —
    /// or, for a preview, to an in-memory database.
    ///
    /// # Errors
    /// [`Error::BlobMissing`] for a missing image; [`Error::NotADatabase`] when it is not
    /// DuckDB; engine errors.
    pub(crate) fn open(
        image: &Path,
        live: Option<(Connection, Option<DuckDbHold>, PathBuf)>,
    ) -> Result<Self> {
        let (conn, hold, live_path) = match live {
            None => (
                Connection::open_in_memory()
                    .map_err(|e| duck_error(Path::new(":memory:"), "open", e))?,
                None,
                PathBuf::from(":memory:"),
            ),
            Some(live) => live,
        };
        let live_db: String = conn
            .query_row("SELECT current_database()", [], |r| r.get(0))
            .map_err(|e| err(&live_path, "open", e))?;
        let snap = format!(
            "snapshot_image_{}_{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        if !image.exists() {
            return Err(Error::BlobMissing {
                key: image.display().to_string(),
            });
        }
        conn.execute_batch(&format!(
            "ATTACH {} AS {} (READ_ONLY)",
            literal(&image.to_string_lossy()),
            ident(&snap)
        ))
        .map_err(|e| duck_error(image, "attach snapshot", e))?;
        Ok(DuckSession {
            conn,
            snap,
            live_db,
            image: image.to_path_buf(),
            live: live_path,
            in_tx: false,
            _hold: hold,
        })
    }

    fn db(&self, side: Side) -> &str {
        match side {
            Side::Snapshot => &self.snap,
            Side::Live => &self.live_db,
        }
    }

    fn path(&self, side: Side) -> &Path {
        match side {
            Side::Snapshot => &self.image,
            Side::Live => &self.live,
        }
    }

    /// `"db"."main"."table"`.
    fn table(&self, side: Side, name: &str) -> String {
        format!("{}.main.{}", ident(self.db(side)), ident(name))
    }

    /// Runs a catalog query returning rows of `width` values.
    fn select(
        &self,
        path: &Path,
        sql: &str,
        params: &[String],
        width: usize,
        op: &'static str,
    ) -> Result<Vec<Vec<Value>>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| err(path, op, e))?;
        let mut rows = stmt
            .query(params_from_iter(params))
            .map_err(|e| err(path, op, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| err(path, op, e))? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(value(row.get_ref(i).map_err(|e| err(path, op, e))?));
            }
            out.push(values);
        }
        Ok(out)
    }

    fn execute(&self, sql: &str, params: &[String], op: &'static str) -> Result<u64> {
        self.conn
            .execute(sql, params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| err(&self.live, op, e))
    }

    /// The statements of a plan, from both sides' shapes.
    fn statements(&mut self, plan: &TablePlan) -> Result<Statements> {
        let Some(snap) = self.shape(Side::Snapshot, &plan.snapshot_table)? else {
            return Err(self.missing(Side::Snapshot, &plan.snapshot_table));
        };
        let Some(live) = self.shape(Side::Live, &plan.live_table)? else {
            return Err(self.missing(Side::Live, &plan.live_table));
        };
        let tables = (
            self.table(Side::Snapshot, &plan.snapshot_table),
            self.table(Side::Live, &plan.live_table),
        );
        Ok(statements(tables, plan, &snap, &live))
    }

    /// A table that went missing during the session.
    fn missing(&self, side: Side, table: &str) -> Error {
        Error::TableMissing {
            table: table.to_string(),
            location: match side {
                Side::Snapshot => format!("the snapshot image {}", self.image.display()),
                Side::Live => format!("the live database {}", self.live.display()),
            },
        }
    }
}

impl Drop for DuckSession {
    fn drop(&mut self) {
        self.rollback();
        let _ = self
            .conn
            .execute_batch(&format!("DETACH {}", ident(&self.snap)));
    }
}

impl Session for DuckSession {
    fn fold_case(&self) -> bool {
        true
    }

    fn tables(&mut self, side: Side) -> Result<Vec<String>> {
        let path = self.path(side).to_path_buf();
        let rows = self.select(
            &path,
            "SELECT table_name FROM duckdb_tables() WHERE database_name = $1 \
             AND schema_name = 'main' ORDER BY table_name",
            &[self.db(side).to_string()],
            1,
            "list tables",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            })
            .collect())
    }

    fn shape(&mut self, side: Side, name: &str) -> Result<Option<TableShape>> {
        let path = self.path(side).to_path_buf();
        let db = self.db(side).to_string();
        let found = self.select(
            &path,
            "SELECT table_name, 'table' FROM duckdb_tables()
             WHERE database_name = $1 AND schema_name = 'main' AND lower(table_name) = lower($2)
             UNION ALL
             SELECT view_name, 'view' FROM duckdb_views()
             WHERE database_name = $1 AND schema_name = 'main' AND NOT internal
               AND lower(view_name) = lower($2)",
            &[db.clone(), name.to_string()],
            2,
            "find table",
        )?;
        let found: Vec<(String, String)> = found
            .into_iter()
            .filter_map(|r| match (r.first(), r.get(1)) {
                (Some(Value::Text(n)), Some(Value::Text(k))) => Some((n.clone(), k.clone())),
                _ => None,
            })
            .collect();
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
        let params = [db, real.clone()];
        let mut columns: Vec<Column> = self
            .select(
                &path,
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns()
                 WHERE database_name = $1 AND schema_name = 'main' AND table_name = $2
                 ORDER BY column_index",
                &params,
                3,
                "read columns",
            )?
            .into_iter()
            .map(|r| Column {
                name: r[0].as_str().unwrap_or_default().to_string(),
                declared_type: r[1].as_str().unwrap_or_default().to_string(),
                not_null: r[2].as_i64() == Some(0),
                primary_key: 0,
            })
            .collect();
        let pk = self.select(
            &path,
            "SELECT unnest(constraint_column_names), \
                    unnest(generate_series(1, len(constraint_column_names))) \
             FROM duckdb_constraints() \
             WHERE database_name = $1 AND schema_name = 'main' AND table_name = $2 \
               AND constraint_type = 'PRIMARY KEY'",
            &params,
            2,
            "read primary key",
        )?;
        for r in &pk {
            if let (Some(Value::Text(n)), Some(Value::Integer(i))) = (r.first(), r.get(1))
                && let Some(c) = columns.iter_mut().find(|c| &c.name == n)
            {
                c.primary_key = u32::try_from(*i).unwrap_or(0);
            }
        }
        Ok(Some(TableShape {
            name: real,
            unique_pk: !pk.is_empty(),
            columns,
        }))
    }

    fn duplicate_key(
        &mut self,
        side: Side,
        table: &TableShape,
        key: &[String],
    ) -> Result<Option<Vec<Value>>> {
        let shown: Vec<String> = key
            .iter()
            .map(|k| shown(&ident(k), &type_of(table, k)))
            .collect();
        let relation = self.table(side, &table.name);
        let read = ReadAs::native(key.len());
        statements::duplicate_key(self, &relation, table, key, (&shown, &read), true)
    }

    fn page(
        &mut self,
        table: &TableShape,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Vec<Value>>)> {
        let t = self.table(Side::Snapshot, &table.name);
        let pk = table.primary_key();
        let order = if pk.is_empty() {
            "rowid".to_string()
        } else {
            pk.iter()
                .map(|c| ident(&c.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let shown: Vec<String> = table
            .columns
            .iter()
            .map(|c| shown(&ident(&c.name), &c.declared_type))
            .collect();
        let read = ReadAs::native(shown.len());
        statements::page(self, &t, &shown, &read, &order, (offset, limit))
    }

    fn diff(&mut self, plan: &TablePlan, sample: usize) -> Result<DiffCounts> {
        let q = self.statements(plan)?;
        let read = ReadAs::native(plan.columns.len());
        statements::diff(self, &q, plan, (&read, &read), sample)
    }

    fn begin(&mut self, _write: bool) -> Result<()> {
        self.conn
            .execute_batch("BEGIN TRANSACTION")
            .map_err(|e| err(&self.live, "begin transaction", e))?;
        self.in_tx = true;
        Ok(())
    }

    fn foreign_keys(&mut self, table: &str) -> Result<Vec<ForeignKey>> {
        let live = self.live.clone();
        let rows = self.select(
            &live,
            "SELECT constraint_name, referenced_table FROM duckdb_constraints()
             WHERE database_name = $1 AND schema_name = 'main' AND table_name = $2
               AND constraint_type = 'FOREIGN KEY' AND referenced_table IS NOT NULL
             ORDER BY constraint_index",
            &[self.live_db.clone(), table.to_string()],
            2,
            "read foreign keys",
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match (r.first(), r.get(1)) {
                (name, Some(Value::Text(referenced))) => Some(ForeignKey {
                    name: name
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("{table} → {referenced}"), str::to_string),
                    table: table.to_string(),
                    referenced: referenced.clone(),
                    // Checked after every statement.
                    deferred: false,
                }),
                _ => None,
            })
            .collect())
    }

    fn delete_added(&mut self, plan: &TablePlan, _tentative: bool) -> Result<Option<u64>> {
        // No savepoints: the delete runs as it is (a failure aborts the transaction).
        let q = self.statements(plan)?;
        self.execute(
            &q.delete_added(None),
            &Param::texts(&q.params),
            "delete rows",
        )
        .map(Some)
    }

    fn upsert(&mut self, plan: &TablePlan) -> Result<Applied> {
        let q = self.statements(plan)?;
        let p = Param::texts(&q.params);
        let mut applied = Applied::default();
        // Updates first: a changed row may hold a unique value a restored row needs.
        if let Some(update) = q.update_changed() {
            applied.updated = self.execute(&update, &p, "update rows")?;
        }
        applied.inserted = self.execute(&q.insert_removed(), &p, "insert rows")?;
        Ok(applied)
    }

    fn commit(&mut self) -> Result<()> {
        self.in_tx = false;
        self.conn.execute_batch("COMMIT").map_err(|e| {
            // A commit that fails (a write-write conflict) leaves nothing behind.
            let _ = self.conn.execute_batch("ROLLBACK");
            err(&self.live, "commit", e)
        })
    }

    fn rollback(&mut self) {
        if self.in_tx {
            self.in_tx = false;
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
