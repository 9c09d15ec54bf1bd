//! The one SQL builder of the record-level engines, and the operations written once over it.
//!
//! A session compares a snapshot's table (`s`) with the live table (`l`) in SQL over both.
//! Everything but a few expressions is the same in SQLite, DuckDB and PostgreSQL; an engine
//! builds [`Statements`] from its [`Dialect`] (how keys match, how rows missing on one side
//! are found) and, per column, the expressions only it can write (how values are compared,
//! cast and read for display). [`diff`], [`page`] and [`duplicate_key`] then run the same
//! statements on any engine through its [`SqlRunner`].

use crate::error::Result;
use crate::table::diff::{DiffCounts, RowDiff};
use crate::table::schema::{TablePlan, TableShape};
use crate::table::value::Value;

/// How an engine finds the rows of one side that the other lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AntiJoin {
    /// `NOT EXISTS (SELECT 1 … WHERE key matches)`: planned as a hash anti-join (DuckDB,
    /// PostgreSQL).
    NotExists,
    /// `LEFT JOIN (SELECT 1 AS p, keys …) ON key matches … WHERE p IS NULL`: SQLite looks the
    /// key up in the probed side's index, or builds an automatic one (it builds none for a
    /// correlated `NOT EXISTS`, which would be quadratic on a key without an index).
    LeftJoin,
}

/// What differs between the engines' SQL, beyond per-column expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// How rows missing on one side are found.
    pub(crate) anti_join: AntiJoin,
    /// Written between the column list and the `SELECT` of the insert (PostgreSQL's
    /// `OVERRIDING SYSTEM VALUE`, so identity columns take the restored values).
    pub(crate) insert_override: &'static str,
    /// Whether the update reads the snapshot through a subquery that applies the row filter
    /// (SQLite), rather than joining the snapshot's table directly.
    pub(crate) update_through_subquery: bool,
}

/// How one key column matches between the two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    /// The column, quoted.
    pub(crate) quoted: String,
    /// The comparison: `=` (both sides NOT NULL: an index serves it), `IS NOT DISTINCT FROM`,
    /// or SQLite's `IS` (NULL-safe, under the column's collation).
    pub(crate) op: &'static str,
}

/// The expressions one engine writes for one compared column (aliases `s` and `l` are the
/// builder's, passed in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnSql {
    /// The snapshot's value as the live column takes it.
    pub(crate) value: String,
    /// Whether the column differs between the two rows (a boolean, or 0/1).
    pub(crate) differs: String,
    /// The snapshot's and the live value as read for display.
    pub(crate) shown_s: String,
    pub(crate) shown_l: String,
    /// Whether an update writes it (key columns are equal by the join; an engine may leave
    /// them out so that the row's index entries are not rewritten).
    pub(crate) written: bool,
}

/// The statements of one [`TablePlan`]: `s` is the snapshot's row, `l` the live row.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    dialect: Dialect,
    /// Aliases of the snapshot's and the live row.
    pub(crate) s: String,
    pub(crate) l: String,
    /// The snapshot's and the live table, qualified and quoted.
    st: String,
    lt: String,
    /// Compared and written columns (quoted), with their expressions.
    cols: Vec<String>,
    sql: Vec<ColumnSql>,
    key: Vec<KeyColumn>,
    row_differs: Option<String>,
    /// The row filter on `s` and on `l` (`TRUE` without one).
    fs: String,
    fl: String,
    /// The filter's parameters, bound by the engine.
    pub(crate) params: Vec<Param>,
}

/// A statement parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Integer(i64),
}

/// The builder's inputs, as an engine prepares them.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    pub(crate) s: String,
    pub(crate) l: String,
    pub(crate) st: String,
    pub(crate) lt: String,
    pub(crate) columns: Vec<(String, ColumnSql)>,
    pub(crate) key: Vec<KeyColumn>,
    pub(crate) filter: Option<(String, String, Vec<Param>)>,
    /// Whether the two rows differ, as one expression the engine writes faster than the
    /// columns' `differs` joined by `OR` (PostgreSQL's row image comparison); `None`: those.
    pub(crate) row_differs: Option<String>,
}

impl Statements {
    /// Builds the statements from an engine's parts.
    pub(crate) fn new(dialect: Dialect, parts: Parts) -> Self {
        let (fs, fl, params) = parts
            .filter
            .unwrap_or_else(|| ("TRUE".into(), "TRUE".into(), Vec::new()));
        let (cols, sql) = parts.columns.into_iter().unzip();
        Statements {
            dialect,
            s: parts.s,
            l: parts.l,
            st: parts.st,
            lt: parts.lt,
            cols,
            sql,
            key: parts.key,
            row_differs: parts.row_differs,
            fs,
            fl,
            params,
        }
    }

    /// `probe.k op outer.k AND …`: the probed side first, so its collation applies and its
    /// index serves the lookup.
    /// Without a key (a whole-table replace of a keyless table) no row matches: every live
    /// row is deleted and every snapshot row inserted.
    fn on(&self, probe: &str, outer: &str) -> String {
        if self.key.is_empty() {
            return "FALSE".into();
        }
        self.key
            .iter()
            .map(|k| format!("{probe}.{q} {} {outer}.{q}", k.op, q = k.quoted))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Whether any column differs.
    pub(crate) fn any_differs(&self) -> String {
        if let Some(d) = &self.row_differs {
            return d.clone();
        }
        if self.sql.is_empty() {
            return "FALSE".into();
        }
        let all: Vec<&str> = self.sql.iter().map(|c| c.differs.as_str()).collect();
        format!("({})", all.join(" OR "))
    }

    /// `FROM table AS alias`, plus the anti-join that keeps only rows whose key is absent from
    /// `other` (aliased `other_alias`), plus `WHERE filter AND …`.
    fn only_in(&self, what: &str, (t, a, f): (&str, &str, &str), (o, oa): (&str, &str)) -> String {
        match self.dialect.anti_join {
            AntiJoin::NotExists => format!(
                "SELECT {what} FROM {t} AS {a} WHERE {f} AND NOT EXISTS (SELECT 1 FROM {o} AS {oa} WHERE {})",
                self.on(oa, a)
            ),
            AntiJoin::LeftJoin => {
                // Every column of the subquery is renamed, so no user column can collide with
                // the marker `p`.
                let keys: Vec<String> = self
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("{oa}.{} AS k{i}", k.quoted))
                    .collect();
                let on: Vec<String> = self
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("{oa}.k{i} {} {a}.{}", k.op, k.quoted))
                    .collect();
                let (keys, on) = if keys.is_empty() {
                    (String::new(), "FALSE".to_string())
                } else {
                    (format!(", {}", keys.join(", ")), on.join(" AND "))
                };
                format!(
                    "SELECT {what} FROM {t} AS {a} LEFT JOIN (SELECT 1 AS p{keys} FROM {o} AS {oa}) AS {oa} ON {on} WHERE {f} AND {oa}.p IS NULL"
                )
            }
        }
    }

    /// Snapshot rows (matching the filter).
    pub(crate) fn count_snapshot(&self) -> String {
        format!(
            "SELECT count(*) FROM {} AS {} WHERE {}",
            self.st, self.s, self.fs
        )
    }

    /// Live rows (matching the filter).
    pub(crate) fn count_live(&self) -> String {
        format!(
            "SELECT count(*) FROM {} AS {} WHERE {}",
            self.lt, self.l, self.fl
        )
    }

    /// `what` of the live rows (matching the filter) whose key is not in the snapshot.
    pub(crate) fn added(&self, what: &str) -> String {
        self.only_in(what, (&self.lt, &self.l, &self.fl), (&self.st, &self.s))
    }

    /// `what` of the snapshot rows (matching the filter) whose key is not in the live table.
    pub(crate) fn removed(&self, what: &str) -> String {
        self.only_in(what, (&self.st, &self.s, &self.fs), (&self.lt, &self.l))
    }

    /// `what` of the snapshot rows (matching the filter) joined with their live rows, `only`
    /// further restricting them.
    pub(crate) fn matched(&self, what: &str, only: &str) -> String {
        format!(
            "SELECT {what} FROM {} AS {s} JOIN {} AS {l} ON {} WHERE {} AND {only}",
            self.st,
            self.lt,
            self.on(&self.l, &self.s),
            self.fs,
            s = self.s,
            l = self.l
        )
    }

    /// Deletes the live rows (matching the filter) whose key is not in the snapshot. With
    /// `identity` (SQLite: the rowid, or a WITHOUT ROWID table's key), the rows are named by it
    /// (`DELETE … WHERE (id) IN (…)`), so the anti-join keeps its form.
    pub(crate) fn delete_added(&self, identity: Option<&[String]>) -> String {
        if self.key.is_empty() {
            // A keyless table is replaced whole (no filter: undo and merge need a key).
            return format!("DELETE FROM {}", self.lt);
        }
        match identity {
            Some(id) => {
                let bare = id.join(", ");
                let qualified: Vec<String> = id.iter().map(|c| format!("{}.{c}", self.l)).collect();
                format!(
                    "DELETE FROM {} WHERE ({bare}) IN ({})",
                    self.lt,
                    self.added(&qualified.join(", "))
                )
            }
            None => format!(
                "DELETE FROM {} AS {l} WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS {s} WHERE {})",
                self.lt,
                self.fl,
                self.st,
                self.on(&self.s, &self.l),
                s = self.s,
                l = self.l
            ),
        }
    }

    /// Updates the live rows (matching the filter) that differ from their snapshot rows;
    /// `None` when no column is written.
    pub(crate) fn update_changed(&self) -> Option<String> {
        if self.key.is_empty() {
            return None;
        }
        let set: Vec<String> = self
            .cols
            .iter()
            .zip(&self.sql)
            .filter(|(_, c)| c.written)
            .map(|(q, c)| format!("{q} = {}", c.value))
            .collect();
        if set.is_empty() {
            return None;
        }
        let (s, l) = (&self.s, &self.l);
        let from = if self.dialect.update_through_subquery {
            let aliased: Vec<String> = self
                .cols
                .iter()
                .map(|c| format!("{s}.{c} AS {c}"))
                .collect();
            format!(
                "(SELECT {} FROM {} AS {s} WHERE {}) AS {s}",
                aliased.join(", "),
                self.st,
                self.fs
            )
        } else {
            format!("{} AS {s}", self.st)
        };
        let filter = if self.dialect.update_through_subquery {
            String::new()
        } else {
            format!(" AND {}", self.fs)
        };
        Some(format!(
            "UPDATE {} AS {l} SET {} FROM {from} WHERE {}{filter} AND {}",
            self.lt,
            set.join(", "),
            self.on(l, s),
            self.any_differs()
        ))
    }

    /// Inserts the snapshot rows (matching the filter) whose key is not in the live table.
    pub(crate) fn insert_removed(&self) -> String {
        let values: Vec<&str> = self.sql.iter().map(|c| c.value.as_str()).collect();
        let over = match self.dialect.insert_override {
            "" => String::new(),
            o => format!("{o} "),
        };
        format!(
            "INSERT INTO {} ({}) {over}{}",
            self.lt,
            self.cols.join(", "),
            self.removed(&values.join(", "))
        )
    }

    fn shown_s(&self) -> String {
        let v: Vec<&str> = self.sql.iter().map(|c| c.shown_s.as_str()).collect();
        v.join(", ")
    }

    fn shown_l(&self) -> String {
        let v: Vec<&str> = self.sql.iter().map(|c| c.shown_l.as_str()).collect();
        v.join(", ")
    }

    fn flags(&self) -> String {
        let v: Vec<&str> = self.sql.iter().map(|c| c.differs.as_str()).collect();
        v.join(", ")
    }
}

/// What the shared operations need from an engine's connection.
pub(crate) trait SqlRunner {
    /// The single row of `width` counts a query returns (NULL counts as 0).
    ///
    /// # Errors
    /// Engine errors naming `op`.
    fn counts(
        &mut self,
        sql: &str,
        params: &[Param],
        width: usize,
        op: &'static str,
    ) -> Result<Vec<u64>>;

    /// The rows of a query: `read` values per row, each read as the engine reads a value of
    /// the given side's column (its display form), then `flags` booleans (0/1 in SQLite).
    ///
    /// # Errors
    /// Engine errors naming `op`.
    fn rows(
        &mut self,
        sql: &str,
        params: &[Param],
        read: &[ReadAs],
        flags: usize,
        op: &'static str,
    ) -> Result<Vec<(Vec<Value>, Vec<bool>)>>;
}

/// How a selected value is read: as a column of the snapshot's or the live table (an engine
/// that reads text forms converts them by the column's type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadAs {
    /// The column's declared type on that side (empty: the value's own type).
    pub(crate) declared_type: String,
}

impl ReadAs {
    /// `n` values read by their own type.
    pub(crate) fn native(n: usize) -> Vec<ReadAs> {
        vec![
            ReadAs {
                declared_type: String::new()
            };
            n
        ]
    }

    /// Values of columns of these types.
    pub(crate) fn typed(types: &[String]) -> Vec<ReadAs> {
        types
            .iter()
            .map(|t| ReadAs {
                declared_type: t.clone(),
            })
            .collect()
    }
}

impl Param {
    /// The parameters as text (engines that cast in SQL).
    pub(crate) fn texts(params: &[Param]) -> Vec<String> {
        params
            .iter()
            .map(|p| match p {
                Param::Text(t) => t.clone(),
                Param::Integer(i) => i.to_string(),
            })
            .collect()
    }
}

/// Counts (and samples up to `sample` rows of each kind of) the differences of a plan — the
/// same statements on every engine.
///
/// # Errors
/// Engine errors.
pub(crate) fn diff(
    run: &mut dyn SqlRunner,
    q: &Statements,
    plan: &TablePlan,
    types: (&[ReadAs], &[ReadAs]),
    sample: usize,
) -> Result<DiffCounts> {
    let p = &q.params;
    let n = plan.columns.len();
    let snapshot_rows = run.counts(&q.count_snapshot(), p, 1, "count snapshot rows")?[0];
    let live_rows = run.counts(&q.count_live(), p, 1, "count live rows")?[0];
    let added = run.counts(&q.added("count(*)"), p, 1, "count added rows")?[0];
    let count_if = |cond: &str| format!("count(CASE WHEN {cond} THEN 1 END)");
    let mut what = format!("count(*), {}", count_if(&q.any_differs()));
    for c in &q.sql {
        what.push_str(", ");
        what.push_str(&count_if(&c.differs));
    }
    let counts = run.counts(&q.matched(&what, "TRUE"), p, n + 2, "compare rows")?;
    let (matched, changed, per_column) = (counts[0], counts[1], counts[2..].to_vec());

    let mut out = Vec::new();
    if sample > 0 {
        let (stypes, ltypes) = types;
        let limit = format!(" LIMIT {sample}");
        for (row, _) in run.rows(
            &(q.added(&q.shown_l()) + &limit),
            p,
            ltypes,
            0,
            "sample added rows",
        )? {
            out.push(RowDiff::added(&plan.key_index, row));
        }
        for (row, _) in run.rows(
            &(q.removed(&q.shown_s()) + &limit),
            p,
            stypes,
            0,
            "sample removed rows",
        )? {
            out.push(RowDiff::removed(&plan.key_index, row));
        }
        let what = format!("{}, {}, {}", q.shown_s(), q.shown_l(), q.flags());
        let both: Vec<ReadAs> = stypes.iter().chain(ltypes).cloned().collect();
        let sql = q.matched(&what, &q.any_differs()) + &limit;
        for (mut row, flags) in run.rows(&sql, p, &both, n, "sample changed rows")? {
            let live = row.split_off(n);
            out.push(RowDiff::changed(
                &plan.key_index,
                &plan.columns,
                row,
                live,
                |i| flags[i],
            ));
        }
    }
    Ok(DiffCounts {
        snapshot_rows,
        live_rows,
        matched,
        changed,
        added,
        per_column,
        sample: out,
    })
}

/// The table's row count and the rows `offset..offset + limit` of `table` (qualified), in
/// `order`, each column read through `shown` as `read`.
///
/// # Errors
/// Engine errors.
pub(crate) fn page(
    run: &mut dyn SqlRunner,
    table: &str,
    shown: &[String],
    read: &[ReadAs],
    order: &str,
    (offset, limit): (u64, u64),
) -> Result<(u64, Vec<Vec<Value>>)> {
    let total = run.counts(
        &format!("SELECT count(*) FROM {table}"),
        &[],
        1,
        "count rows",
    )?[0];
    let clamp = |n: u64| n.min(i64::MAX as u64);
    let sql = format!(
        "SELECT {} FROM {table} ORDER BY {order} LIMIT {} OFFSET {}",
        shown.join(", "),
        clamp(limit),
        clamp(offset)
    );
    let rows = run.rows(&sql, &[], read, 0, "read rows")?;
    Ok((total, rows.into_iter().map(|(r, _)| r).collect()))
}

/// Whether `key` is the table's primary key, which its engine keeps unique and never NULL.
pub(crate) fn key_is_unique(table: &TableShape, key: &[String], fold_case: bool) -> bool {
    let pk = table.primary_key();
    let same = |a: &str, b: &str| {
        if fold_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    table.unique_pk
        && pk.len() == key.len()
        && key.iter().all(|k| pk.iter().any(|c| same(&c.name, k)))
}

/// The first key value held by more than one row of `relation`, read through `shown` (`None`
/// when the key is the table's primary key, which the engine keeps unique).
///
/// # Errors
/// Engine errors.
pub(crate) fn duplicate_key(
    run: &mut dyn SqlRunner,
    relation: &str,
    table: &TableShape,
    key: &[String],
    (shown, read): (&[String], &[ReadAs]),
    fold_case: bool,
) -> Result<Option<Vec<Value>>> {
    if key_is_unique(table, key, fold_case) {
        return Ok(None);
    }
    let cols: Vec<String> = key.iter().map(|k| crate::sql::ident(k)).collect();
    let sql = format!(
        "SELECT {} FROM {relation} GROUP BY {} HAVING count(*) > 1 LIMIT 1",
        shown.join(", "),
        cols.join(", ")
    );
    Ok(run
        .rows(&sql, &[], read, 0, "check key")?
        .into_iter()
        .next()
        .map(|(r, _)| r))
}
