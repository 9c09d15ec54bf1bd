//! The PostgreSQL engine of record-level operations.
//!
//! A session holds one connection to the live server. The snapshot bundle's tables are loaded,
//! as they are needed, into temporary tables of that connection (`COPY … FROM STDIN`, streamed
//! from the bundle, dropped at the end of the transaction); every count, sample and write is
//! then one SQL statement over the temporary and the live table, as the SQLite engine does over
//! an attached image: anti-joins (`NOT EXISTS`, planned as hash anti-joins) find added and
//! removed rows, a join finds changed ones, `UPDATE … FROM` and `INSERT … SELECT` write them.
//! A preview needs no server: it reads the bundle's rows, stored in primary key order.
//!
//! Values are compared by their text form (`::text IS DISTINCT FROM`), which every type has —
//! `json`, `point` and `xml` have no equality — and which is exact: `1.50` and `1.5`, or `-0`
//! and `0`, differ. A column retyped since the snapshot is compared and written as the
//! snapshot's value cast to the live type. Keys are matched with `=` (with
//! `IS NOT DISTINCT FROM` for a declared key column that may be NULL), so the live table's
//! indexes serve the lookups.
//!
//! Writes lock each live table `IN SHARE ROW EXCLUSIVE MODE` as it is planned: readers go on,
//! other writers wait for the commit, and the safety snapshot — taken by another connection
//! after planning — is exactly the state the restore starts from. Deferrable constraints are
//! deferred to the commit; a foreign key that is not `DEFERRABLE` is checked after every
//! statement, which the order of writes respects (referenced tables first, deletes the other
//! way round); a delete such a key still blocks is rolled back to a savepoint and retried after
//! the other writes. Sequences of restored `serial` and identity columns are moved past the
//! restored values (`setval` is not transactional: a rolled back restore may leave a gap, never
//! a collision).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use ::postgres::Client;
use ::postgres::error::SqlState;
use ::postgres::types::ToSql;

use crate::engine::postgres::bundle::{Bundle, parse_line};
use crate::engine::postgres::catalog;
use crate::engine::postgres::manifest::{ColumnEntry, TableEntry};
use crate::engine::postgres::target::Target;
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

/// How long a write waits for other sessions' locks on a table before giving up.
const LOCK_TIMEOUT: &str = "30s";

/// Memory for the session's temporary tables and hash joins (taken only as used).
const SESSION_MEMORY: &str = "SET temp_buffers = '256MB'; SET work_mem = '256MB'";

/// A snapshot bundle, and (except for previews) a connection to the live server.
pub(crate) struct PgSession {
    bundle: Bundle,
    live: Option<Live>,
}

/// The live side of a session.
struct Live {
    client: Client,
    target: Target,
    write: bool,
    in_tx: bool,
    /// Snapshot table → its temporary table, in the open transaction.
    loaded: HashMap<String, String>,
    /// Temporary tables made so far (their names are unique per connection).
    made: usize,
    /// Snapshot column types the server knows (others are loaded as `text`).
    known_types: HashMap<String, bool>,
    /// Live tables seen, by name: their columns as the catalog says.
    live_columns: HashMap<String, Vec<ColumnEntry>>,
    /// Whether an entity id casts to a type.
    casts: HashMap<String, bool>,
}

fn columns_of(entries: &[ColumnEntry]) -> Vec<Column> {
    entries
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            declared_type: c.data_type.clone(),
            not_null: c.not_null,
            primary_key: c.primary_key,
        })
        .collect()
}

/// The value of a column of type `ty` from its text form: integers, floats, booleans (1/0, as
/// SQLite stores them) and bytea get their own class; everything else — numeric, dates and
/// times, json, arrays… — stays text, exactly as the server writes it.
fn value_of(ty: &str, text: Option<&[u8]>) -> Value {
    let Some(bytes) = text else {
        return Value::Null;
    };
    let text = String::from_utf8_lossy(bytes);
    match ty {
        "smallint" | "integer" | "bigint" => text
            .parse::<i64>()
            .map(Value::Integer)
            .unwrap_or_else(|_| Value::Text(text.into_owned())),
        "real" | "double precision" => match text.as_ref() {
            "Infinity" => Value::Real(f64::INFINITY),
            "-Infinity" => Value::Real(f64::NEG_INFINITY),
            "NaN" => Value::Real(f64::NAN),
            t => t
                .parse::<f64>()
                .map(Value::Real)
                .unwrap_or_else(|_| Value::Text(text.into_owned())),
        },
        "boolean" => match text.as_ref() {
            "t" | "true" => Value::Integer(1),
            "f" | "false" => Value::Integer(0),
            _ => Value::Text(text.into_owned()),
        },
        "bytea" => text
            .strip_prefix("\\x")
            .and_then(unhex)
            .map(Value::Blob)
            .unwrap_or_else(|| Value::Text(text.into_owned())),
        _ => Value::Text(text.into_owned()),
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

impl PgSession {
    /// Opens the bundle at `image` and, when `live` is given, connects to that server.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] for a damaged bundle; the connection errors of
    /// [`PostgresSource::ping`](crate::PostgresSource::ping).
    pub(crate) fn open(image: &Path, live: Option<&Target>, write: bool) -> Result<Self> {
        let bundle = Bundle::open(image)?;
        let live = match live {
            None => None,
            Some(target) => {
                let target = target.clone();
                let mut client = target.connect()?;
                // The snapshot's tables are loaded into temporary tables and joined with the
                // live ones by hash: with the defaults (8 MB of temporary buffers, 4 MB per
                // hash) a table of a million rows spills to disk at every step.
                let settings = if write {
                    format!("{SESSION_MEMORY}; SET lock_timeout = '{LOCK_TIMEOUT}'")
                } else {
                    SESSION_MEMORY.to_string()
                };
                client
                    .batch_execute(&settings)
                    .map_err(|e| target.error("configure session", e))?;
                // Resolved before any transaction: a type name the server cannot even parse
                // is an error, which would abort a transaction.
                let mut known_types = HashMap::new();
                for t in &bundle.manifest().tables {
                    for c in &t.columns {
                        if !known_types.contains_key(&c.data_type) {
                            let known = client
                                .query_one("SELECT to_regtype($1) IS NOT NULL", &[&c.data_type])
                                .map(|r| r.get::<_, bool>(0))
                                .unwrap_or(false);
                            known_types.insert(c.data_type.clone(), known);
                        }
                    }
                }
                Some(Live {
                    client,
                    target,
                    write,
                    in_tx: false,
                    loaded: HashMap::new(),
                    made: 0,
                    known_types,
                    live_columns: HashMap::new(),
                    casts: HashMap::new(),
                })
            }
        };
        Ok(PgSession { bundle, live })
    }

    fn live(&mut self) -> Result<&mut Live> {
        self.live
            .as_mut()
            .ok_or_else(|| Error::invalid("session", "this operation needs the live database"))
    }

    fn entry(&self, name: &str) -> Result<&TableEntry> {
        self.bundle
            .manifest()
            .tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::invalid("table", format!("{name:?} is not in the snapshot")))
    }

    /// The temporary table holding the snapshot's table `name`, loaded on first use.
    fn temp(&mut self, name: &str) -> Result<String> {
        let entry = self.entry(name)?.clone();
        let rows = self.bundle.rows(&entry)?;
        let path = self.bundle.path().to_path_buf();
        let live = self
            .live
            .as_mut()
            .ok_or_else(|| Error::invalid("session", "this operation needs the live database"))?;
        if let Some(t) = live.loaded.get(name) {
            return Ok(t.clone());
        }
        let temp = format!("snapshot_{}", live.made);
        live.made += 1;
        let defs: Vec<String> = entry
            .columns
            .iter()
            .map(|c| {
                let known = live.known_types.get(&c.data_type).copied().unwrap_or(false);
                format!(
                    "{} {}",
                    ident(&c.name),
                    if known { c.data_type.as_str() } else { "text" }
                )
            })
            .collect();
        let on_commit = if live.in_tx { " ON COMMIT DROP" } else { "" };
        live.client
            .batch_execute(&format!(
                "CREATE TEMP TABLE {} ({}){on_commit}",
                ident(&temp),
                defs.join(", ")
            ))
            .map_err(|e| live.target.error("load snapshot table", e))?;
        let qualified = format!("pg_temp.{}", ident(&temp));
        let names: Vec<String> = entry.columns.iter().map(|c| ident(&c.name)).collect();
        let copied = {
            let mut writer = live
                .client
                .copy_in(&format!(
                    "COPY {qualified} ({}) FROM STDIN",
                    names.join(", ")
                ))
                .map_err(|e| live.target.error("load snapshot table", e))?;
            let mut rows = rows;
            loop {
                let chunk = rows
                    .fill_buf()
                    .map_err(|e| self.bundle.read_error(name, e))?;
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len();
                if let Err(e) = writer.write_all(chunk) {
                    return Err(Error::Engine {
                        engine: "postgres",
                        op: "load snapshot table",
                        path: live.target.location().to_path_buf(),
                        detail: format!("table {name:?}: {e}"),
                    });
                }
                rows.consume(n);
            }
            writer
                .finish()
                .map_err(|e| live.target.error("load snapshot table", e))?
        };
        if copied != entry.rows {
            return Err(Error::NotADatabase {
                engine: "postgres",
                path,
                detail: format!(
                    "table {name:?} loaded {copied} rows, the manifest says {}",
                    entry.rows
                ),
            });
        }
        live.client
            .batch_execute(&format!("ANALYZE {qualified}"))
            .map_err(|e| live.target.error("load snapshot table", e))?;
        live.loaded.insert(name.to_string(), qualified.clone());
        Ok(qualified)
    }
}

/// Whether two rows differ: the binary images of the columns in `image_s`/`image_l` (values of
/// the same types) compared at once with `*=` (record image equality: exact, NULLs equal),
/// the rest (`by_text`: the columns' own text comparisons) joined by `OR` (the casts to
/// `record` keep PostgreSQL from splitting a comparison of two row constructors into one per
/// column, for which `*=` does not exist); `None` when only
/// text comparisons remain (the builder joins them itself).
fn row_differs(image_s: &[String], image_l: &[String], by_text: &[String]) -> Option<String> {
    if image_s.is_empty() {
        return None;
    }
    let mut any = vec![format!(
        "NOT (ROW({})::record *= ROW({})::record)",
        image_s.join(", "),
        image_l.join(", ")
    )];
    any.extend(by_text.iter().cloned());
    Some(format!("({})", any.join(" OR ")))
}

/// PostgreSQL's SQL: `NOT EXISTS` anti-joins (hash anti-joins), the snapshot's temporary
/// table joined directly by the update, identity columns taking the restored values.
const DIALECT: Dialect = Dialect {
    anti_join: AntiJoin::NotExists,
    insert_override: "OVERRIDING SYSTEM VALUE",
    update_through_subquery: false,
};

impl SqlRunner for PgSession {
    fn counts(
        &mut self,
        sql: &str,
        params: &[Param],
        width: usize,
        op: &'static str,
    ) -> Result<Vec<u64>> {
        let rows = self.query(sql, &Param::texts(params), op)?;
        Ok(match rows.first() {
            Some(r) => (0..width)
                .map(|i| r.get::<_, Option<i64>>(i).unwrap_or(0).max(0) as u64)
                .collect(),
            None => vec![0; width],
        })
    }

    fn rows(
        &mut self,
        sql: &str,
        params: &[Param],
        read: &[ReadAs],
        flags: usize,
        op: &'static str,
    ) -> Result<Vec<(Vec<Value>, Vec<bool>)>> {
        let rows = self.query(sql, &Param::texts(params), op)?;
        Ok(rows
            .iter()
            .map(|r| {
                let values = read
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| {
                        let text: Option<&str> = r.get(i);
                        value_of(&ty.declared_type, text.map(str::as_bytes))
                    })
                    .collect();
                let set = (read.len()..read.len() + flags)
                    .map(|i| r.get::<_, Option<bool>>(i).unwrap_or(false))
                    .collect();
                (values, set)
            })
            .collect())
    }
}

impl PgSession {
    /// Builds the statements of a plan (loading the snapshot's table), with the types its
    /// values are read as on each side. Values are compared by their text form, exactly; a
    /// retyped column compares the snapshot's value cast to the live type; keys match with `=`
    /// where both sides are NOT NULL.
    fn statements(&mut self, plan: &TablePlan) -> Result<(Statements, Vec<String>, Vec<String>)> {
        let st = self.temp(&plan.snapshot_table)?;
        let snap = self.entry(&plan.snapshot_table)?.columns.clone();
        let live_cols = self.live_columns(&plan.live_table)?;
        let schema = self.live()?.target.schema().to_string();
        let find = |cols: &[ColumnEntry], name: &str| cols.iter().find(|c| c.name == name).cloned();
        let type_in = |cols: &[ColumnEntry], name: &str| {
            find(cols, name).map(|c| c.data_type).unwrap_or_default()
        };
        // Per column: whether the temporary table holds it in its own type (a type the server
        // knows), so that its binary image compares with the live column's.
        let known_types = &self.live()?.known_types;
        let native: Vec<bool> = plan
            .columns
            .iter()
            .map(|c| {
                known_types
                    .get(&type_in(&snap, c))
                    .copied()
                    .unwrap_or(false)
            })
            .collect();
        let mut columns = Vec::with_capacity(plan.columns.len());
        // Columns whose snapshot value has the live column's very type are compared together
        // by their binary images (`*=`, exact as the text forms are, ~4× cheaper); the others
        // by text.
        let (mut image_s, mut image_l, mut by_text) = (Vec::new(), Vec::new(), Vec::new());
        for (i, name) in plan.columns.iter().enumerate() {
            let c = ident(name);
            let l = find(&live_cols, name);
            let ltype = l.as_ref().map(|l| l.data_type.clone()).unwrap_or_default();
            let value = if plan.same_type[i] {
                format!("s.{c}")
            } else {
                format!("CAST(s.{c} AS {ltype})")
            };
            let always = l.as_ref().and_then(|l| l.identity.as_deref()) == Some("ALWAYS");
            let differs = format!("({value}::text IS DISTINCT FROM l.{c}::text)");
            if plan.same_type[i] && native[i] {
                image_s.push(value.clone());
                image_l.push(format!("l.{c}"));
            } else {
                by_text.push(differs.clone());
            }
            let sql = ColumnSql {
                differs,
                shown_s: format!("s.{c}::text"),
                shown_l: format!("l.{c}::text"),
                written: !(plan.key.contains(name) && always),
                value,
            };
            columns.push((c, sql));
        }
        let key = plan
            .key
            .iter()
            .map(|k| {
                let both = find(&snap, k).is_some_and(|c| c.not_null || c.primary_key > 0)
                    && find(&live_cols, k).is_some_and(|c| c.not_null);
                KeyColumn {
                    quoted: ident(k),
                    op: if both { "=" } else { "IS NOT DISTINCT FROM" },
                }
            })
            .collect();
        let mut filter = None;
        if let Some(f) = &plan.filter {
            let c = ident(&f.column);
            let stype = type_in(&snap, &f.column);
            let ltype = type_in(&live_cols, &f.column);
            let known = self
                .live()?
                .known_types
                .get(&stype)
                .copied()
                .unwrap_or(false);
            let stype = if known { stype } else { "text".to_string() };
            filter = Some((
                self.filter(&c, "s", &stype, &f.value)?,
                self.filter(&c, "l", &ltype, &f.value)?,
                vec![Param::Text(f.value.clone())],
            ));
        }
        let stypes = plan.columns.iter().map(|c| type_in(&snap, c)).collect();
        let ltypes = plan
            .columns
            .iter()
            .map(|c| type_in(&live_cols, c))
            .collect();
        let q = Statements::new(
            DIALECT,
            Parts {
                s: "s".into(),
                l: "l".into(),
                st,
                lt: format!("{}.{}", ident(&schema), ident(&plan.live_table)),
                columns,
                key,
                filter,
                row_differs: row_differs(&image_s, &image_l, &by_text),
            },
        );
        Ok((q, stypes, ltypes))
    }

    /// `alias.c = CAST($1 AS type)` when the id casts to the column's type (an index can
    /// serve it), else a comparison of the text forms.
    fn filter(&mut self, column: &str, alias: &str, ty: &str, id: &str) -> Result<String> {
        let live = self.live()?;
        let ok = match live.casts.get(ty) {
            Some(ok) => *ok,
            None => {
                let ok = if live.in_tx {
                    live.client
                        .batch_execute("SAVEPOINT snapshot_cast")
                        .map_err(|e| live.target.error("check entity id", e))?;
                    let ok = live
                        .client
                        .query_one(
                            &format!("SELECT CAST($1::text AS {ty}) IS NOT NULL"),
                            &[&id],
                        )
                        .is_ok();
                    live.client
                        .batch_execute(
                            "ROLLBACK TO SAVEPOINT snapshot_cast; RELEASE SAVEPOINT snapshot_cast",
                        )
                        .map_err(|e| live.target.error("check entity id", e))?;
                    ok
                } else {
                    false
                };
                live.casts.insert(ty.to_string(), ok);
                ok
            }
        };
        Ok(if ok {
            format!("({alias}.{column} = CAST($1::text AS {ty}))")
        } else {
            format!("({alias}.{column}::text = $1::text)")
        })
    }

    /// The live table's columns as the catalog says (cached when its shape was read).
    fn live_columns(&mut self, table: &str) -> Result<Vec<ColumnEntry>> {
        if let Some(c) = self.live()?.live_columns.get(table) {
            return Ok(c.clone());
        }
        self.shape(Side::Live, table)?;
        Ok(self
            .live()?
            .live_columns
            .get(table)
            .cloned()
            .unwrap_or_default())
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[String],
        op: &'static str,
    ) -> Result<Vec<::postgres::Row>> {
        let live = self.live()?;
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        live.client
            .query(sql, &p)
            .map_err(|e| live.target.error(op, e))
    }

    fn execute(&mut self, sql: &str, params: &[String], op: &'static str) -> Result<u64> {
        let live = self.live()?;
        let p: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        live.client
            .execute(sql, &p)
            .map_err(|e| live.target.error(op, e))
    }

    /// Moves the sequences of the live table's columns past the largest restored values.
    fn bump_sequences(&mut self, plan: &TablePlan) -> Result<()> {
        let schema = self.live()?.target.schema().to_string();
        let table = format!("{}.{}", ident(&schema), ident(&plan.live_table));
        let rows = self.query(
            "SELECT a.attname::text, pg_get_serial_sequence($1::text, a.attname)
             FROM pg_attribute a
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
               AND pg_get_serial_sequence($1::text, a.attname) IS NOT NULL",
            std::slice::from_ref(&table),
            "read sequences",
        )?;
        for r in rows {
            let (column, sequence): (String, String) = (r.get(0), r.get(1));
            if !plan.columns.contains(&column) {
                continue;
            }
            let sql = format!(
                "SELECT setval($1::text::regclass, m) FROM (SELECT max({})::bigint AS m FROM {table}) x
                 WHERE m IS NOT NULL AND m > (SELECT CASE WHEN is_called THEN last_value
                                                          ELSE last_value - 1 END FROM {sequence})",
                ident(&column)
            );
            self.query(&sql, std::slice::from_ref(&sequence), "move sequence")?;
        }
        Ok(())
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        self.rollback();
    }
}

impl Session for PgSession {
    fn fold_case(&self) -> bool {
        false
    }

    fn tables(&mut self, side: Side) -> Result<Vec<String>> {
        match side {
            Side::Snapshot => {
                let mut names: Vec<String> = self
                    .bundle
                    .manifest()
                    .tables
                    .iter()
                    .map(|t| t.name.clone())
                    .collect();
                names.sort();
                Ok(names)
            }
            Side::Live => {
                let live = self.live()?;
                let schema = live.target.schema().to_string();
                catalog::tables(&mut live.client, &live.target, &schema)
            }
        }
    }

    fn shape(&mut self, side: Side, name: &str) -> Result<Option<TableShape>> {
        if side == Side::Snapshot {
            return Ok(self.bundle.table(name).map(|t| TableShape {
                name: t.name.clone(),
                columns: columns_of(&t.columns),
                unique_pk: !t.primary_key().is_empty(),
            }));
        }
        let live = self.live()?;
        let schema = live.target.schema().to_string();
        let Some(rel) = catalog::find(&mut live.client, &live.target, &schema, name)? else {
            return Ok(None);
        };
        if !rel.is_table() {
            return Err(Error::invalid(
                "table",
                format!(
                    "{:?} is {} in {}, not a table",
                    rel.name,
                    rel.kind_name(),
                    live.target.location().display()
                ),
            ));
        }
        let columns = catalog::columns(&mut live.client, &live.target, rel.oid)?;
        if live.write && live.in_tx {
            live.client
                .batch_execute(&format!(
                    "LOCK TABLE {}.{} IN SHARE ROW EXCLUSIVE MODE",
                    ident(&schema),
                    ident(&rel.name)
                ))
                .map_err(|e| live.target.error("lock table", e))?;
        }
        let shape = TableShape {
            name: rel.name.clone(),
            columns: columns_of(&columns),
            unique_pk: columns.iter().any(|c| c.primary_key > 0),
        };
        live.live_columns.insert(rel.name, columns);
        Ok(Some(shape))
    }

    fn duplicate_key(
        &mut self,
        side: Side,
        table: &TableShape,
        key: &[String],
    ) -> Result<Option<Vec<Value>>> {
        if statements::key_is_unique(table, key, false) {
            return Ok(None);
        }
        let relation = match side {
            Side::Snapshot => self.temp(&table.name)?,
            Side::Live => {
                let schema = self.live()?.target.schema().to_string();
                format!("{}.{}", ident(&schema), ident(&table.name))
            }
        };
        let types: Vec<String> = key
            .iter()
            .map(|k| {
                table
                    .find(k, false)
                    .map(|c| c.declared_type.clone())
                    .unwrap_or_default()
            })
            .collect();
        let shown: Vec<String> = key.iter().map(|k| format!("{}::text", ident(k))).collect();
        statements::duplicate_key(
            self,
            &relation,
            table,
            key,
            (&shown, &ReadAs::typed(&types)),
            false,
        )
    }

    fn page(
        &mut self,
        table: &TableShape,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Vec<Value>>)> {
        let entry = self.entry(&table.name)?.clone();
        let mut rows = self.bundle.rows(&entry)?;
        let path = self.bundle.path().to_path_buf();
        let types: Vec<&str> = entry.columns.iter().map(|c| c.data_type.as_str()).collect();
        let mut out = Vec::new();
        let mut line = Vec::new();
        let mut n = 0u64;
        while (out.len() as u64) < limit {
            line.clear();
            let got = rows
                .read_until(b'\n', &mut line)
                .map_err(|e| self.bundle.read_error(&entry.name, e))?;
            if got == 0 {
                break;
            }
            n += 1;
            if n <= offset {
                continue;
            }
            let fields = parse_line(&line).map_err(|e| Error::NotADatabase {
                engine: "postgres",
                path: path.clone(),
                detail: format!("table {:?}, row {n}: {e}", entry.name),
            })?;
            out.push(
                types
                    .iter()
                    .zip(fields.iter().chain(std::iter::repeat(&None)))
                    .map(|(ty, f)| value_of(ty, f.as_deref()))
                    .collect(),
            );
        }
        Ok((entry.rows, out))
    }

    fn diff(&mut self, plan: &TablePlan, sample: usize) -> Result<DiffCounts> {
        let (q, stypes, ltypes) = self.statements(plan)?;
        statements::diff(
            self,
            &q,
            plan,
            (&ReadAs::typed(&stypes), &ReadAs::typed(&ltypes)),
            sample,
        )
    }

    fn begin(&mut self, write: bool) -> Result<()> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let sql = if write {
            "BEGIN ISOLATION LEVEL READ COMMITTED; SET CONSTRAINTS ALL DEFERRED"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ"
        };
        live.loaded.clear();
        live.client
            .batch_execute(sql)
            .map_err(|e| live.target.error("begin transaction", e))?;
        live.in_tx = true;
        Ok(())
    }

    fn foreign_keys(&mut self, table: &str) -> Result<Vec<ForeignKey>> {
        let live = self.live()?;
        let schema = live.target.schema().to_string();
        let rows = live
            .client
            .query(
                "SELECT c.conname::text, r.relname::text, c.condeferrable
                 FROM pg_constraint c
                 JOIN pg_class t ON t.oid = c.conrelid
                 JOIN pg_namespace tn ON tn.oid = t.relnamespace
                 JOIN pg_class r ON r.oid = c.confrelid
                 JOIN pg_namespace rn ON rn.oid = r.relnamespace
                 WHERE c.contype = 'f' AND tn.nspname = $1 AND t.relname = $2
                   AND rn.nspname = $1
                 ORDER BY c.conname",
                &[&schema, &table],
            )
            .map_err(|e| live.target.error("read foreign keys", e))?;
        Ok(rows
            .iter()
            .map(|r| ForeignKey {
                name: r.get(0),
                table: table.to_string(),
                referenced: r.get(1),
                // `begin` defers every deferrable constraint to the commit.
                deferred: r.get(2),
            })
            .collect())
    }

    fn delete_added(&mut self, plan: &TablePlan, tentative: bool) -> Result<Option<u64>> {
        let (q, _, _) = self.statements(plan)?;
        let p = Param::texts(&q.params);
        if !tentative {
            return self
                .execute(&q.delete_added(None), &p, "delete rows")
                .map(Some);
        }
        let live = self.live()?;
        live.client
            .batch_execute("SAVEPOINT snapshot_delete")
            .map_err(|e| live.target.error("delete rows", e))?;
        let params: Vec<&(dyn ToSql + Sync)> = p.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match live.client.execute(&q.delete_added(None), &params) {
            Ok(n) => {
                live.client
                    .batch_execute("RELEASE SAVEPOINT snapshot_delete")
                    .map_err(|e| live.target.error("delete rows", e))?;
                Ok(Some(n))
            }
            Err(e)
                if e.code().is_some_and(|c| {
                    *c == SqlState::FOREIGN_KEY_VIOLATION || *c == SqlState::RESTRICT_VIOLATION
                }) =>
            {
                live.client
                    .batch_execute(
                        "ROLLBACK TO SAVEPOINT snapshot_delete; RELEASE SAVEPOINT snapshot_delete",
                    )
                    .map_err(|e| live.target.error("delete rows", e))?;
                Ok(None)
            }
            Err(e) => Err(live.target.error("delete rows", e)),
        }
    }

    fn upsert(&mut self, plan: &TablePlan) -> Result<Applied> {
        let (q, _, _) = self.statements(plan)?;
        let p = Param::texts(&q.params);
        let mut applied = Applied::default();
        // Updates first: a changed row may hold a unique value a restored row needs.
        if let Some(update) = q.update_changed() {
            applied.updated = self.execute(&update, &p, "update rows")?;
        }
        applied.inserted = self.execute(&q.insert_removed(), &p, "insert rows")?;
        if applied.inserted > 0 {
            self.bump_sequences(plan)?;
        }
        Ok(applied)
    }

    fn commit(&mut self) -> Result<()> {
        let live = self.live()?;
        live.loaded.clear();
        live.in_tx = false;
        // A deferred constraint that fails here rolls the transaction back; the server's
        // message names the constraint and the row (its detail).
        live.client
            .batch_execute("COMMIT")
            .map_err(|e| live.target.error("commit", e))
    }

    fn rollback(&mut self) {
        if let Some(live) = self.live.as_mut() {
            live.loaded.clear();
            if live.in_tx {
                live.in_tx = false;
                let _ = live.client.batch_execute("ROLLBACK");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_become_values() {
        assert_eq!(value_of("integer", None), Value::Null);
        assert_eq!(
            value_of("bigint", Some(b"-9223372036854775808")),
            Value::Integer(i64::MIN)
        );
        assert_eq!(value_of("double precision", Some(b"0.1")), Value::Real(0.1));
        assert_eq!(
            value_of("real", Some(b"-Infinity")),
            Value::Real(f64::NEG_INFINITY)
        );
        assert!(matches!(value_of("double precision", Some(b"NaN")), Value::Real(x) if x.is_nan()));
        assert_eq!(value_of("boolean", Some(b"t")), Value::Integer(1));
        assert_eq!(
            value_of("bytea", Some(b"\\x00ff")),
            Value::Blob(vec![0, 255])
        );
        assert_eq!(value_of("bytea", Some(b"\\x")), Value::Blob(Vec::new()));
        assert_eq!(
            value_of("numeric(30,10)", Some(b"1.5000000000")),
            Value::from("1.5000000000")
        );
        assert_eq!(
            value_of("jsonb", Some("{\"é\": 1}".as_bytes())),
            Value::from("{\"é\": 1}")
        );
    }
}
