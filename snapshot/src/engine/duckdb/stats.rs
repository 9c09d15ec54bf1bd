//! Statistics of a DuckDB database ([`Source::statistics`](crate::Source::statistics)).

use std::path::Path;

use crate::engine::duckdb::error;
use crate::error::{Error, Result};
use crate::sql::ident;
use crate::stats::{
    ColumnStats, DbStats, TableCount, TableStats, file_bytes, unknown_column, unknown_table,
};
use duckdb::types::ValueRef;

/// Statistics of a DuckDB database (opened read-only: it fails with
/// [`Error::TargetLocked`] while another process holds the file).
///
/// # Errors
/// The errors of a SQLite database's statistics; [`Error::TargetLocked`].
pub(crate) fn stats(path: &Path, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
    use duckdb::{AccessMode, Config, Connection};

    if !path.exists() {
        return Err(Error::SourceMissing {
            kind: "duckdb",
            path: path.to_path_buf(),
        });
    }
    let e = |op: &'static str| move |e| error(path, op, e);
    let config = Config::default()
        .access_mode(AccessMode::ReadOnly)
        .map_err(e("configure"))?;
    let conn = Connection::open_with_flags(path, config).map_err(e("open"))?;
    let names: Vec<String> = conn
        .prepare(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' \
             AND database_name = current_database() AND NOT temporary ORDER BY table_name",
        )
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))
                .and_then(|r| r.collect::<duckdb::Result<Vec<String>>>())
        })
        .map_err(e("list tables"))?;
    let mut tables = Vec::new();
    for name in names {
        let rows: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM main.{}", ident(&name)),
                [],
                |r| r.get(0),
            )
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
    Ok(DbStats {
        engine: "duckdb".into(),
        path: path.to_path_buf(),
        file_bytes: file_bytes(path, &[".wal"]),
        tables,
        table: detail,
        files: Vec::new(),
    })
}

/// One table's numeric columns and latest row.
fn table_stats(
    conn: &duckdb::Connection,
    path: &Path,
    t: &str,
    rows: u64,
    order_by: Option<&str>,
) -> Result<TableStats> {
    let e = |op: &'static str| move |e| error(path, op, e);

    let cols: Vec<(String, String)> = conn
        .prepare(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' \
             AND database_name = current_database() AND table_name = ? ORDER BY column_index",
        )
        .and_then(|mut s| {
            s.query_map([t], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect::<duckdb::Result<Vec<_>>>())
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
        let numeric = matches!(
            up.as_str(),
            "TINYINT"
                | "SMALLINT"
                | "INTEGER"
                | "BIGINT"
                | "HUGEINT"
                | "UTINYINT"
                | "USMALLINT"
                | "UINTEGER"
                | "UBIGINT"
                | "FLOAT"
                | "DOUBLE"
        ) || up.starts_with("DECIMAL");
        if !numeric {
            continue;
        }
        let c = ident(name);
        let sql = format!(
            "SELECT count({c}), CAST(min({c}) AS DOUBLE), CAST(max({c}) AS DOUBLE), \
             CAST(avg({c}) AS DOUBLE) FROM main.{}",
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
    let list: Vec<String> = cols
        .iter()
        .map(|(n, _)| format!("CAST({} AS VARCHAR)", ident(n)))
        .collect();
    let sql = format!(
        "SELECT {} FROM main.{} ORDER BY {order} DESC LIMIT 1",
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
        ValueRef::Boolean(b) => b.into(),
        ValueRef::TinyInt(x) => x.into(),
        ValueRef::SmallInt(x) => x.into(),
        ValueRef::Int(x) => x.into(),
        ValueRef::BigInt(x) => x.into(),
        ValueRef::UTinyInt(x) => x.into(),
        ValueRef::USmallInt(x) => x.into(),
        ValueRef::UInt(x) => x.into(),
        ValueRef::UBigInt(x) => x.into(),
        ValueRef::Float(f) => serde_json::Number::from_f64(f.into())
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        ValueRef::Double(f) => serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => format!("<{}-byte blob>", b.len()).into(),
        other => format!("{other:?}").into(),
    }
}
