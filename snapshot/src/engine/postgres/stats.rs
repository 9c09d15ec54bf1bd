//! Statistics of a PostgreSQL database ([`Source::statistics`](crate::Source::statistics)):
//! every table of the schema (or the configured ones) with its exact row count and its size on
//! the server, read in one `REPEATABLE READ READ ONLY` transaction; for one table, the count,
//! minimum, maximum and average of each numeric column and the latest row (by `order_by`, else
//! the primary key, else physical order).

use postgres::Transaction;

use crate::engine::postgres::PostgresSource;
use crate::engine::postgres::target::Target;
use crate::error::Result;
use crate::source::Source;
use crate::sql::ident;
use crate::stats::{ColumnStats, DbStats, TableCount, TableStats, unknown_column, unknown_table};

/// Statistics of the source's tables (see the module docs).
pub(crate) fn stats(
    source: &PostgresSource,
    table: Option<&str>,
    order_by: Option<&str>,
) -> Result<DbStats> {
    let target = source.target();
    let mut client = source.connect()?;
    let mut tx = client
        .build_transaction()
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| target.error("status", e))?;
    let (tables, bytes) = counts(&mut tx, target, source.configured_tables())?;
    let detail = match table {
        None => None,
        Some(t) => {
            let Some(count) = tables.iter().find(|c| c.name == t) else {
                return Err(unknown_table(t, source.path(), &tables));
            };
            Some(table_stats(&mut tx, target, t, count.rows, order_by)?)
        }
    };
    tx.commit().map_err(|e| target.error("status", e))?;
    Ok(DbStats {
        engine: "postgres".into(),
        path: source.path().to_path_buf(),
        file_bytes: bytes,
        tables,
        table: detail,
        files: Vec::new(),
    })
}

/// `"schema"."table"`.
fn qualified(target: &Target, table: &str) -> String {
    format!("{}.{}", ident(target.schema()), ident(table))
}

/// Every table (of `wanted`, when given) with its row count, and their total size.
fn counts(
    tx: &mut Transaction<'_>,
    target: &Target,
    wanted: Option<Vec<String>>,
) -> Result<(Vec<TableCount>, u64)> {
    let listed = tx
        .query(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              ORDER BY c.relname",
            &[&target.schema()],
        )
        .map_err(|e| target.error("list tables", e))?;
    let mut tables = Vec::new();
    let mut bytes: u64 = 0;
    for row in &listed {
        let name: String = row.get(0);
        if wanted.as_ref().is_some_and(|w| !w.contains(&name)) {
            continue;
        }
        bytes += u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        let n: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {}", qualified(target, &name)),
                &[],
            )
            .map_err(|e| target.error("count rows", e))?
            .get(0);
        tables.push(TableCount {
            name,
            rows: u64::try_from(n).unwrap_or(0),
        });
    }
    Ok((tables, bytes))
}

/// One table's numeric columns and latest row.
fn table_stats(
    tx: &mut Transaction<'_>,
    target: &Target,
    t: &str,
    rows: u64,
    order_by: Option<&str>,
) -> Result<TableStats> {
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
            &[&qualified(target, t)],
        )
        .map_err(|e| target.error("read columns", e))?;
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
                    qualified(target, t)
                ),
                &[],
            )
            .map_err(|e| target.error("column statistics", e))?;
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
        Some(o) => return Err(unknown_column(o, t)),
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
                qualified(target, t)
            ),
            &[],
        )
        .map_err(|e| target.error("latest row", e))?
        .map(|r| {
            let mut obj: serde_json::Value = r.get(0);
            names
                .iter()
                .map(|n| (n.clone(), obj[n.as_str()].take()))
                .collect()
        });
    Ok(TableStats {
        table: t.to_string(),
        rows,
        order_by: order_name,
        columns: stats,
        latest,
    })
}
