//! Statistics of a live SQLite database ([`Source::statistics`](crate::Source::statistics)).

use std::path::Path;

use crate::engine::sqlite::error;
use crate::error::{Error, Result};
use crate::sql::ident;
use crate::stats::{
    ColumnStats, DbStats, TableCount, TableStats, file_bytes, unknown_column, unknown_table,
};
use rusqlite::types::ValueRef;

/// Statistics of a SQLite database; `table` is the table to describe in detail and `order_by`
/// the column that orders its rows for "latest" (default: insertion order, `rowid`).
///
/// # Errors
/// [`Error::SourceMissing`], [`Error::NotADatabase`], [`Error::InvalidInput`] (field `table` or
/// `order_by`) for an unknown table or column, engine errors.
pub(crate) fn stats(path: &Path, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
    use rusqlite::{Connection, OpenFlags};

    if !path.exists() {
        return Err(Error::SourceMissing {
            kind: "sqlite",
            path: path.to_path_buf(),
        });
    }
    let e = |op: &'static str| move |e| error(path, op, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(e("open"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(e("open"))?;
    conn.execute_batch("BEGIN").map_err(e("begin"))?;
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))
                .and_then(|r| r.collect::<rusqlite::Result<Vec<String>>>())
        })
        .map_err(e("list tables"))?;
    let mut tables = Vec::new();
    for name in names {
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {}", ident(&name)), [], |r| {
                r.get(0)
            })
            .map_err(e("count rows"))?;
        tables.push(TableCount {
            name,
            rows: rows as u64,
        });
    }
    let detail = match table {
        None => None,
        Some(t) => {
            let Some(count) = tables.iter().find(|c| c.name == t) else {
                return Err(unknown_table(t, path, &tables));
            };
            Some(table_stats(&conn, path, t, count.rows, order_by)?)
        }
    };
    let _ = conn.execute_batch("COMMIT");
    Ok(DbStats {
        engine: "sqlite".into(),
        path: path.to_path_buf(),
        file_bytes: file_bytes(path, &["-wal"]),
        tables,
        table: detail,
        files: Vec::new(),
    })
}

/// One table's numeric columns and latest row.
fn table_stats(
    conn: &rusqlite::Connection,
    path: &Path,
    t: &str,
    rows: u64,
    order_by: Option<&str>,
) -> Result<TableStats> {
    let e = |op: &'static str| move |e| error(path, op, e);

    let cols: Vec<(String, String)> = conn
        .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
        .and_then(|mut s| {
            s.query_map([t], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
        })
        .map_err(e("read columns"))?;
    let order = match order_by {
        Some(c) if cols.iter().any(|(n, _)| n == c) => ident(c),
        Some(c) => return Err(unknown_column(c, t)),
        None => "rowid".to_string(),
    };
    let mut columns = Vec::new();
    for (name, declared) in &cols {
        let up = declared.to_ascii_uppercase();
        let numeric = !up.contains("BOOL")
            && (up.contains("INT")
                || up.contains("REAL")
                || up.contains("FLOA")
                || up.contains("DOUB")
                || up.contains("NUM")
                || up.contains("DEC"));
        if !numeric {
            continue;
        }
        let c = ident(name);
        let sql = format!(
            "SELECT count({c}), min({c}), max({c}), avg({c}) FROM {} \
             WHERE typeof({c}) IN ('integer', 'real')",
            ident(t)
        );
        let s = conn
            .query_row(&sql, [], |r| {
                Ok(ColumnStats {
                    name: name.clone(),
                    declared_type: declared.clone(),
                    count: r.get::<_, i64>(0)? as u64,
                    min: Some(json(r.get_ref(1)?)).filter(|v| !v.is_null()),
                    max: Some(json(r.get_ref(2)?)).filter(|v| !v.is_null()),
                    avg: r.get(3)?,
                })
            })
            .map_err(e("column statistics"))?;
        columns.push(s);
    }
    let list: Vec<String> = cols.iter().map(|(n, _)| ident(n)).collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {order} DESC LIMIT 1",
        list.join(", "),
        ident(t)
    );
    let latest = conn
        .prepare(&sql)
        .and_then(|mut s| {
            let mut rows = s.query([])?;
            match rows.next()? {
                Some(row) => {
                    let mut out = Vec::new();
                    for (i, (n, _)) in cols.iter().enumerate() {
                        out.push((n.clone(), json(row.get_ref(i)?)));
                    }
                    Ok(Some(out))
                }
                None => Ok(None),
            }
        })
        .map_err(e("latest row"))?;
    Ok(TableStats {
        table: t.to_string(),
        rows,
        order_by: order_by.unwrap_or("rowid").to_string(),
        columns,
        latest,
    })
}

/// A value for people: numbers and text as JSON, a blob by its size.
fn json(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map_or_else(|| f.to_string().into(), serde_json::Value::Number),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => format!("<{}-byte blob>", b.len()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_statistics_of_a_readings_table() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let db = dir.path().join("plant.db");
        let conn = rusqlite::Connection::open(&db).map_err(|e| Error::Engine {
            engine: "sqlite",
            op: "open",
            path: db.clone(),
            detail: e.to_string(),
        })?;
        conn.execute_batch(
            "CREATE TABLE readings (id INTEGER PRIMARY KEY, water REAL, note TEXT, ts TEXT);
             INSERT INTO readings (water, note, ts) VALUES (20.5, 'a', '2025-01-11 14:30:24');
             INSERT INTO readings (water, note, ts) VALUES (28.75, 'b', '2025-01-11 14:30:22');
             INSERT INTO readings (water, note, ts) VALUES (NULL, 'c', '2025-01-11 14:30:20');
             CREATE TABLE settings (k TEXT);",
        )
        .map_err(|e| Error::Engine {
            engine: "sqlite",
            op: "setup",
            path: db.clone(),
            detail: e.to_string(),
        })?;
        let s = stats(&db, Some("readings"), None)?;
        assert_eq!(
            s.tables,
            vec![
                TableCount {
                    name: "readings".into(),
                    rows: 3
                },
                TableCount {
                    name: "settings".into(),
                    rows: 0
                }
            ]
        );
        let t = s.table.clone().unwrap_or_else(|| panic!("no table stats"));
        let water = t.columns.iter().find(|c| c.name == "water").cloned();
        let water = water.unwrap_or_else(|| panic!("no water column"));
        assert_eq!(water.count, 2);
        assert_eq!(water.min, Some(serde_json::json!(20.5)));
        assert_eq!(water.max, Some(serde_json::json!(28.75)));
        assert_eq!(water.avg, Some(24.625));
        let latest = t.latest.clone().unwrap_or_default();
        assert_eq!(latest[2], ("note".to_string(), serde_json::json!("c")));
        let by_ts = stats(&db, Some("readings"), Some("ts"))?;
        let latest = by_ts.table.and_then(|t| t.latest).unwrap_or_default();
        assert_eq!(latest[2].1, serde_json::json!("a"));
        assert!(matches!(
            stats(&db, Some("nope"), None),
            Err(Error::InvalidInput { field: "table", .. })
        ));
        assert!(matches!(
            stats(&db, Some("readings"), Some("nope")),
            Err(Error::InvalidInput {
                field: "order_by",
                ..
            })
        ));
        Ok(())
    }
}
