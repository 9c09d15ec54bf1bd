//! Statistics of a PostgreSQL database ([`Source::statistics`](crate::Source::statistics)).

use crate::engine::postgres::PostgresSource;
use crate::error::{Error, Result};
use crate::source::Source;
use crate::sql::ident;
use crate::stats::{ColumnStats, DbStats, TableCount, TableStats};

/// Statistics of a PostgreSQL database: every table of the schema (or the configured ones)
/// with its exact row count and its size on the server, read in one `REPEATABLE READ READ
/// ONLY` transaction; for `--table`, the count, minimum, maximum and average of each numeric
/// column and the latest row (by `[status] order_by`, else the primary key, else physical
/// order).
pub(crate) fn stats(
    source: &PostgresSource,
    table: Option<&str>,
    order_by: Option<&str>,
) -> Result<DbStats> {
    let location = source.path().to_path_buf();
    let engine_error = |op: &'static str, e: ::postgres::Error| source.target().error(op, e);
    let schema = source.schema_name().to_string();
    let qualified = |t: &str| format!("{}.{}", ident(&schema), ident(t));

    let mut client = source.connect()?;
    let mut tx = client
        .build_transaction()
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| engine_error("status", e))?;
    let listed = tx
        .query(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              ORDER BY c.relname",
            &[&schema],
        )
        .map_err(|e| engine_error("list tables", e))?;
    let wanted = source.configured_tables();
    let mut tables = Vec::new();
    let mut bytes: u64 = 0;
    for row in &listed {
        let name: String = row.get(0);
        if wanted.as_ref().is_some_and(|w| !w.contains(&name)) {
            continue;
        }
        let size: i64 = row.get(1);
        bytes += u64::try_from(size).unwrap_or(0);
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", qualified(&name)), &[])
            .map_err(|e| engine_error("count rows", e))?
            .get(0);
        tables.push(TableCount {
            name,
            rows: u64::try_from(n).unwrap_or(0),
        });
    }

    let table = match table {
        None => None,
        Some(t) => {
            let Some(count) = tables.iter().find(|c| c.name == t) else {
                let names: Vec<&str> = tables.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::invalid(
                    "table",
                    format!(
                        "no table named {t:?} in {} (tables: {})",
                        location.display(),
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                ));
            };
            let columns = tx
                .query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                            t.typname IN ('int2', 'int4', 'int8', 'float4', 'float8', 'numeric'),
                            COALESCE(i.indisprimary AND a.attnum = ANY(i.indkey), false)
                       FROM pg_attribute a
                       JOIN pg_type t ON t.oid = a.atttypid
                       LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
                      WHERE a.attrelid = $1::text::regclass AND a.attnum > 0
                        AND NOT a.attisdropped
                      ORDER BY a.attnum",
                    &[&qualified(t)],
                )
                .map_err(|e| engine_error("read columns", e))?;
            let names: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
            let mut stats = Vec::new();
            for c in columns.iter().filter(|r| r.get::<_, bool>(2)) {
                let name: String = c.get(0);
                let col = ident(&name);
                let r = tx
                    .query_one(
                        &format!(
                            "SELECT count({col}), to_jsonb(min({col})), to_jsonb(max({col})),
                                    avg({col}::float8) FROM {}",
                            qualified(t)
                        ),
                        &[],
                    )
                    .map_err(|e| engine_error("column statistics", e))?;
                stats.push(ColumnStats {
                    name,
                    declared_type: c.get(1),
                    count: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                    min: r.get(1),
                    max: r.get(2),
                    avg: r.get(3),
                });
            }
            let key: Vec<String> = columns
                .iter()
                .filter(|r| r.get::<_, bool>(3))
                .map(|r| r.get(0))
                .collect();
            let (order_sql, order_name) = match order_by {
                Some(o) if names.iter().any(|n| n == o) => (format!("{} DESC", ident(o)), o.into()),
                Some(o) => {
                    return Err(Error::invalid(
                        "order_by",
                        format!("no column named {o:?} in table {t:?}"),
                    ));
                }
                None if !key.is_empty() => (
                    key.iter()
                        .map(|k| format!("{} DESC", ident(k)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    key.join(", "),
                ),
                None => ("ctid DESC".into(), "ctid (physical order)".into()),
            };
            let latest = tx
                .query_opt(
                    &format!(
                        "SELECT row_to_json(r)::jsonb FROM {} r ORDER BY {order_sql} LIMIT 1",
                        qualified(t)
                    ),
                    &[],
                )
                .map_err(|e| engine_error("latest row", e))?
                .map(|r| {
                    let mut obj: serde_json::Value = r.get(0);
                    names
                        .iter()
                        .map(|n| (n.clone(), obj[n.as_str()].take()))
                        .collect()
                });
            Some(TableStats {
                table: t.to_string(),
                rows: count.rows,
                order_by: order_name,
                columns: stats,
                latest,
            })
        }
    };
    tx.commit().map_err(|e| engine_error("status", e))?;
    Ok(DbStats {
        engine: "postgres".into(),
        path: location,
        file_bytes: bytes,
        tables,
        table,
    })
}
