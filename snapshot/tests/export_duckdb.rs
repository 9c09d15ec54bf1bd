//! DuckDB exports: typed JSON and CSV of every DuckDB type family, re-imported into DuckDB with
//! the schema sidecar's types and compared row for row; statistics; the CLI on a DuckDB file.
#![cfg(all(feature = "export", feature = "duckdb"))]

use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use duckdb::Connection;
use serde_json::Value;
use snapshot::Source;
use snapshot::export::{CsvReader, ExportSource, TableSchema, ValueKind};

fn fixture(db: &Path) -> Result<()> {
    let c = Connection::open(db)?;
    c.execute_batch(
        r#"CREATE TABLE m (id INTEGER PRIMARY KEY, big BIGINT, u UBIGINT, h HUGEINT, d DOUBLE,
                          f FLOAT, dec DECIMAL(18,3), flag BOOLEAN, s VARCHAR, b BLOB,
                          ts TIMESTAMP, day DATE, l INTEGER[]);
           INSERT INTO m VALUES
             (1, -9223372036854775808, 18446744073709551615,
              170141183460469231731687303715884105727, 0.1, 1.5, 123456789012345.678, true,
              'comma, "quote"' || chr(10) || 'new line ✓ 日本', '\x00\xFF'::BLOB,
              TIMESTAMP '2025-01-11 14:30:22', DATE '2025-01-11', [1, 2, 3]),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
             (3, 9223372036854775807, 0, -1, -2.5e-300, 0.1, -0.001, false, '', ''::BLOB,
              TIMESTAMP '1970-01-01 00:00:00.123456', DATE '1900-02-28', []);
           CREATE TABLE readings (id INTEGER, water DOUBLE, ts VARCHAR);
           INSERT INTO readings VALUES (1, 20.5, 'a'), (2, 28.75, 'c'), (3, 25.25, 'b');"#,
    )?;
    Ok(())
}

fn schema(dir: &Path, table: &str) -> Result<TableSchema> {
    Ok(serde_json::from_reader(BufReader::new(
        std::fs::File::open(dir.join(format!("{table}.schema.json")))?,
    ))?)
}

/// Re-imports rows given as text (`None` = NULL) with the schema's declared types.
fn reimport(
    conn: &Connection,
    s: &TableSchema,
    into: &str,
    rows: &[Vec<Option<String>>],
) -> Result<()> {
    let cols: Vec<String> = s
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}", c.name, c.declared_type))
        .collect();
    conn.execute_batch(&format!("CREATE TABLE {into} ({})", cols.join(", ")))?;
    let exprs: Vec<String> = s
        .columns
        .iter()
        .map(|c| match c.kind {
            ValueKind::Blob => "from_base64(?)".to_string(),
            _ => format!("CAST(? AS {})", c.declared_type),
        })
        .collect();
    let sql = format!("INSERT INTO {into} VALUES ({})", exprs.join(", "));
    for r in rows {
        conn.execute(&sql, duckdb::params_from_iter(r.iter()))?;
    }
    Ok(())
}

fn same_rows(conn: &Connection, a: &str, b: &str) -> Result<()> {
    let n: i64 = conn.query_row(
        &format!("SELECT (SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})) + (SELECT count(*) FROM (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}))"),
        [],
        |r| r.get(0),
    )?;
    ensure!(n == 0, "{a} and {b} differ in {n} rows");
    Ok(())
}

#[test]
fn duckdb_types_round_trip_through_csv_and_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("lab.duckdb");
    fixture(&db)?;
    let out = dir.path().join("export");
    let manifest = ExportSource::duckdb(&db).write_dir(&out)?;
    assert_eq!(manifest.engine, "duckdb");
    assert_eq!(
        manifest.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        [3, 3]
    );

    let s = schema(&out, "m")?;
    use ValueKind::*;
    let kinds: Vec<ValueKind> = s.columns.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            Integer, Integer, Integer, Decimal, Real, Real, Decimal, Boolean, Text, Blob, Other,
            Other, Other
        ]
    );
    assert!(s.columns[0].primary_key && !s.columns[1].primary_key);

    let raw = std::fs::read_to_string(out.join("m.json"))?;
    assert!(
        raw.contains("\"h\":170141183460469231731687303715884105727"),
        "{raw}"
    );
    assert!(raw.contains("\"dec\":123456789012345.678"), "{raw}");
    let json: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&raw)?;
    assert_eq!(json[0]["big"].as_i64(), Some(i64::MIN));
    assert_eq!(json[0]["u"].as_u64(), Some(u64::MAX));
    assert_eq!(json[0]["d"], 0.1);
    assert_eq!(json[0]["flag"], true);
    assert_eq!(json[0]["s"], "comma, \"quote\"\nnew line ✓ 日本");
    assert_eq!(json[0]["b"], "AP8=");
    assert_eq!(json[0]["ts"], "2025-01-11 14:30:22");
    assert_eq!(json[0]["l"], "[1, 2, 3]");
    assert!(
        json[1]
            .iter()
            .filter(|(k, _)| *k != "id")
            .all(|(_, v)| v.is_null())
    );
    assert_eq!(json[2]["s"], "");

    let conn = Connection::open(&db)?;
    // From JSON: values as their text, cast back with the declared types.
    let from_json: Vec<Vec<Option<String>>> = json
        .iter()
        .map(|row| {
            s.columns
                .iter()
                .map(|c| match &row[&c.name] {
                    Value::Null => None,
                    Value::String(t) => Some(t.clone()),
                    other => Some(other.to_string()),
                })
                .collect()
        })
        .collect();
    // JSON parsing loses the digits of HUGEINT/DECIMAL literals; take them from the raw text.
    let mut from_json = from_json;
    from_json[0][3] = Some("170141183460469231731687303715884105727".into());
    from_json[0][6] = Some("123456789012345.678".into());
    reimport(&conn, &s, "from_json", &from_json)?;
    same_rows(&conn, "m", "from_json")?;

    // From CSV: the fields are the text already; NULL is None.
    let mut r = CsvReader::new(BufReader::new(std::fs::File::open(out.join("m.csv"))?));
    let header = r.next_record()?.context("header")?;
    assert_eq!(header.len(), 13);
    let mut rows = Vec::new();
    while let Some(rec) = r.next_record()? {
        rows.push(rec);
    }
    assert_eq!(rows[1][8], None);
    assert_eq!(rows[2][8], Some(String::new()));
    reimport(&conn, &s, "from_csv", &rows)?;
    same_rows(&conn, "m", "from_csv")?;
    Ok(())
}

#[test]
fn duckdb_statistics_and_unknown_tables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("lab.duckdb");
    fixture(&db)?;
    let s = snapshot::DuckDbSource::new(&db).statistics(Some("readings"), Some("ts"))?;
    assert_eq!(s.tables.len(), 2);
    let t = s.table.context("table stats")?;
    let water = t
        .columns
        .iter()
        .find(|c| c.name == "water")
        .context("water")?;
    assert_eq!(water.min, Some(serde_json::json!(20.5)));
    assert_eq!(water.max, Some(serde_json::json!(28.75)));
    let latest = t.latest.context("latest")?;
    assert_eq!(latest[2].1, serde_json::json!("c"), "latest by ts");
    assert!(matches!(
        ExportSource::duckdb(&db)
            .tables(vec!["nope".into()])
            .write_dir(&dir.path().join("x")),
        Err(snapshot::Error::InvalidInput { field: "table", .. })
    ));
    Ok(())
}

#[cfg(feature = "cli")]
#[test]
fn the_cli_on_a_duckdb_file() -> Result<()> {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("lab.duckdb");
    fixture(&db)?;
    let run = |args: &[&str]| -> Result<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_snapshot"))
            .current_dir(dir.path())
            .env("SNAPSHOT_EPHEMERAL", "0")
            .env_remove("SNAPSHOT_CONFIG")
            .stdin(Stdio::null())
            .args(["--json", "--db", "lab.duckdb"])
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let taken = run(&["create", "--type", "all"])?;
    assert_eq!(taken["taken"][0]["source_kind"], "duckdb");
    assert_eq!(taken["taken"][1]["source_kind"], "csv+json");
    let id = taken["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    let v = run(&["verify", "--all", "--full"])?;
    assert_eq!(v["passed"].as_array().map(Vec::len), Some(2));
    Connection::open(&db)?.execute_batch("DELETE FROM readings")?;
    run(&["restore", &id, "--yes"])?;
    let n: i64 =
        Connection::open(&db)?.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?;
    assert_eq!(n, 3);
    let s = run(&["status", "--table", "readings"])?;
    assert_eq!(s["database"]["engine"], "duckdb");
    assert_eq!(s["database"]["table"]["rows"], 3);
    Ok(())
}
