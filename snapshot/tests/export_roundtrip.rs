//! SQLite exports: export → re-import → the same rows with the same types (NULLs, unicode,
//! commas/quotes/newlines, 64-bit extremes, floats, blobs), from CSV + schema and from JSON;
//! bundles as snapshots; a consistent read while a writer keeps writing.
#![cfg(all(feature = "export", feature = "sqlite"))]

use std::collections::BTreeSet;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::Value;
use snapshot::export::{CsvReader, ExportFormat, ExportSource, TableSchema, ValueKind, unpack};
use snapshot::{
    CheckLevel, Environment, Error, LocalStore, SnapshotManager, SnapshotRequest, Source,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn fixture(db: &Path) -> Result<()> {
    let c = Connection::open(db)?;
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    c.execute_batch(
        r#"CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB,
                          flag BOOLEAN, anything);
           CREATE TABLE "odd table, ""quoted""" ("a column" TEXT, "x,y" INTEGER);
           CREATE TABLE empty (k TEXT NOT NULL);"#,
    )?;
    let mut ins = c.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    let blob: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let rows: Vec<[Sql; 7]> = vec![
        [
            Sql::Integer(1),
            Sql::Integer(i64::MIN),
            Sql::Real(0.1),
            Sql::Text(String::new()),
            Sql::Blob(vec![]),
            Sql::Integer(0),
            Sql::Integer(42),
        ],
        [
            Sql::Integer(2),
            Sql::Integer(i64::MAX),
            Sql::Real(-2.5e-300),
            Sql::Text("comma, \"quote\"\nnewline\r\nand CRLF".into()),
            Sql::Blob(vec![0, 255, 16]),
            Sql::Integer(1),
            Sql::Real(2.5),
        ],
        [
            Sql::Integer(3),
            Sql::Null,
            Sql::Null,
            Sql::Null,
            Sql::Null,
            Sql::Null,
            Sql::Null,
        ],
        [
            Sql::Integer(4),
            Sql::Integer(0),
            Sql::Real(1e300),
            Sql::Text("héllo wörld ✓ 日本語 🎉".into()),
            Sql::Blob(blob),
            Sql::Integer(1),
            Sql::Text("text".into()),
        ],
        [
            Sql::Integer(5),
            Sql::Integer(-1),
            Sql::Real(f64::MAX),
            Sql::Text("  padded  ".into()),
            Sql::Blob(b",\"\n".to_vec()),
            Sql::Null,
            Sql::Integer(-7),
        ],
        [
            Sql::Integer(6),
            Sql::Integer(1),
            Sql::Real(f64::INFINITY),
            Sql::Text("NULL".into()),
            Sql::Null,
            Sql::Integer(0),
            Sql::Real(1.0),
        ],
        [
            Sql::Integer(7),
            Sql::Integer(2),
            Sql::Real(std::f64::consts::PI),
            Sql::Text("\"\"".into()),
            Sql::Blob(vec![0]),
            Sql::Integer(1),
            Sql::Text("".into()),
        ],
        [
            Sql::Integer(8),
            Sql::Integer(3),
            Sql::Real(f64::NEG_INFINITY),
            Sql::Text(",".into()),
            Sql::Blob(vec![]),
            Sql::Integer(0),
            Sql::Real(f64::MIN_POSITIVE),
        ],
    ];
    for r in &rows {
        ins.execute(rusqlite::params_from_iter(r.iter()))?;
    }
    c.execute_batch(r#"INSERT INTO "odd table, ""quoted""" VALUES ('a\nb', 1), (NULL, NULL);"#)?;
    Ok(())
}

/// Every row of a table, values with their storage class, in rowid order.
fn dump(conn: &Connection, table: &str) -> Result<Vec<Vec<Sql>>> {
    let q = format!(
        "SELECT * FROM \"{}\" ORDER BY rowid",
        table.replace('"', "\"\"")
    );
    let mut stmt = conn.prepare(&q)?;
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, Sql>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn schema(dir: &Path, file: &str) -> Result<TableSchema> {
    Ok(serde_json::from_reader(BufReader::new(
        std::fs::File::open(dir.join(file))?,
    ))?)
}

fn create_like(conn: &Connection, s: &TableSchema) -> Result<()> {
    let cols: Vec<String> = s
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}", c.name.replace('"', "\"\""), c.declared_type))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE \"{}\" ({})",
        s.table.replace('"', "\"\""),
        cols.join(", ")
    ))?;
    Ok(())
}

fn insert(conn: &Connection, s: &TableSchema, row: Vec<Sql>) -> Result<()> {
    let q = format!(
        "INSERT INTO \"{}\" VALUES ({})",
        s.table.replace('"', "\"\""),
        vec!["?"; row.len()].join(", ")
    );
    conn.execute(&q, rusqlite::params_from_iter(row))?;
    Ok(())
}

fn float(text: &str) -> Result<f64> {
    Ok(match text {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        t => t.parse().with_context(|| format!("not a float: {t:?}"))?,
    })
}

/// A CSV field back to a value, by the column's kind (and, for untyped columns, its text).
fn from_csv(kind: ValueKind, field: Option<String>) -> Result<Sql> {
    let Some(t) = field else { return Ok(Sql::Null) };
    Ok(match kind {
        ValueKind::Integer => Sql::Integer(t.parse()?),
        ValueKind::Real => Sql::Real(float(&t)?),
        ValueKind::Boolean => Sql::Integer(match t.as_str() {
            "true" => 1,
            "false" => 0,
            other => other.parse()?,
        }),
        ValueKind::Blob => Sql::Blob(B64.decode(t)?),
        ValueKind::Text => Sql::Text(t),
        _ => {
            if let Ok(i) = t.parse::<i64>() {
                Sql::Integer(i)
            } else if let Ok(f) = float(&t) {
                Sql::Real(f)
            } else {
                Sql::Text(t)
            }
        }
    })
}

/// A JSON value back to a value: JSON types decide, the kind resolves strings.
fn from_json(kind: ValueKind, v: &Value) -> Result<Sql> {
    Ok(match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().context("number")?),
        },
        Value::String(s) => match kind {
            ValueKind::Blob => Sql::Blob(B64.decode(s)?),
            ValueKind::Real => Sql::Real(float(s)?),
            _ => Sql::Text(s.clone()),
        },
        other => bail!("unexpected JSON value {other}"),
    })
}

fn reimport_csv(dir: &Path, base: &str, into: &Connection) -> Result<TableSchema> {
    let s = schema(dir, &format!("{base}.schema.json"))?;
    create_like(into, &s)?;
    let mut r = CsvReader::new(BufReader::new(std::fs::File::open(
        dir.join(format!("{base}.csv")),
    )?));
    let header = r.next_record()?.context("no header")?;
    let names: Vec<Option<String>> = s.columns.iter().map(|c| Some(c.name.clone())).collect();
    ensure!(header == names, "header {header:?}");
    while let Some(rec) = r.next_record()? {
        ensure!(rec.len() == s.columns.len(), "record {rec:?}");
        let row = s
            .columns
            .iter()
            .zip(rec)
            .map(|(c, f)| from_csv(c.kind, f))
            .collect::<Result<Vec<_>>>()?;
        insert(into, &s, row)?;
    }
    Ok(s)
}

fn reimport_json(dir: &Path, base: &str, into: &Connection) -> Result<TableSchema> {
    let s = schema(dir, &format!("{base}.schema.json"))?;
    create_like(into, &s)?;
    let rows: Vec<serde_json::Map<String, Value>> = serde_json::from_reader(BufReader::new(
        std::fs::File::open(dir.join(format!("{base}.json")))?,
    ))?;
    for obj in rows {
        let keys: Vec<&String> = obj.keys().collect();
        let names: Vec<&String> = s.columns.iter().map(|c| &c.name).collect();
        ensure!(keys.len() == names.len(), "keys {keys:?}");
        let row = s
            .columns
            .iter()
            .map(|c| from_json(c.kind, &obj[&c.name]))
            .collect::<Result<Vec<_>>>()?;
        insert(into, &s, row)?;
    }
    Ok(s)
}

fn same(a: &[Vec<Sql>], b: &[Vec<Sql>]) -> Result<()> {
    ensure!(a.len() == b.len(), "{} rows vs {}", a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        for (va, vb) in ra.iter().zip(rb) {
            let equal = match (va, vb) {
                (Sql::Real(x), Sql::Real(y)) => x.to_bits() == y.to_bits(),
                _ => va == vb,
            };
            ensure!(equal, "{va:?} != {vb:?} (row {ra:?})");
        }
    }
    Ok(())
}

#[test]
fn csv_and_json_round_trip_every_value_with_its_type() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    fixture(&db)?;
    let out = dir.path().join("export");
    let manifest = ExportSource::sqlite(&db).write_dir(&out)?;
    let tables: Vec<&str> = manifest.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(tables, ["empty", "odd table, \"quoted\"", "t"]);
    assert_eq!(manifest.tables[2].rows, 8);
    let odd_base = manifest.tables[1].files[0]
        .name
        .trim_end_matches(".csv")
        .to_string();
    assert!(!odd_base.contains([' ', ',', '"']), "{odd_base}");

    let orig = Connection::open(&db)?;
    for (table, base) in [
        ("t", "t".to_string()),
        ("odd table, \"quoted\"", odd_base),
        ("empty", "empty".into()),
    ] {
        let want = dump(&orig, table)?;
        for (how, f) in [
            (
                "csv",
                reimport_csv as fn(&Path, &str, &Connection) -> Result<TableSchema>,
            ),
            ("json", reimport_json),
        ] {
            let fresh = Connection::open_in_memory()?;
            let s = f(&out, &base, &fresh).with_context(|| format!("{how} {table}"))?;
            assert_eq!(s.table, table);
            same(&want, &dump(&fresh, table)?).with_context(|| format!("{how} {table}"))?;
        }
    }

    // The schema sidecar: names, declared types, kinds, keys, and the storage classes seen.
    let s = schema(&out, "t.schema.json")?;
    let kinds: Vec<ValueKind> = s.columns.iter().map(|c| c.kind).collect();
    use ValueKind::*;
    assert_eq!(kinds, [Integer, Integer, Real, Text, Blob, Boolean, Other]);
    assert!(s.columns[0].primary_key && !s.columns[1].primary_key);
    let seen: BTreeSet<String> = ["integer", "null", "real", "text"].map(String::from).into();
    assert_eq!(s.columns[6].observed, seen);

    // Booleans are JSON booleans, 64-bit extremes exact, blobs base64, NULL null.
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("t.json"))?)?;
    assert_eq!(json[0]["flag"], false);
    assert_eq!(json[1]["flag"], true);
    assert_eq!(json[0]["i"].as_i64(), Some(i64::MIN));
    assert_eq!(json[1]["i"].as_i64(), Some(i64::MAX));
    assert_eq!(json[1]["b"], "AP8Q");
    assert_eq!(json[2]["s"], Value::Null);
    assert_eq!(json[0]["s"], "");
    assert_eq!(json[5]["r"], "inf");
    Ok(())
}

#[test]
fn a_standard_csv_reader_reads_the_same_text() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    fixture(&db)?;
    let out = dir.path().join("export");
    ExportSource::sqlite(&db)
        .formats(&[ExportFormat::Csv])
        .write_dir(&out)?;
    assert!(!out.join("t.json").exists());
    let ours: Vec<Vec<String>> = {
        let mut r = CsvReader::new(BufReader::new(std::fs::File::open(out.join("t.csv"))?));
        let mut all = Vec::new();
        while let Some(rec) = r.next_record()? {
            all.push(rec.into_iter().map(Option::unwrap_or_default).collect());
        }
        all
    };
    let theirs: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(out.join("t.csv"))?
        .records()
        .map(|r| r.map(|r| r.iter().map(str::to_string).collect()))
        .collect::<Result<_, _>>()?;
    assert_eq!(ours, theirs);
    assert_eq!(theirs.len(), 9);
    Ok(())
}

#[test]
fn unknown_tables_and_missing_databases_are_typed_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    fixture(&db)?;
    let out = dir.path().join("x");
    match ExportSource::sqlite(&db)
        .tables(vec!["t".into(), "nope".into()])
        .write_dir(&out)
    {
        Err(Error::InvalidInput {
            field: "table",
            reason,
        }) => {
            assert!(
                reason.contains("\"nope\"") && reason.contains("empty, odd table"),
                "{reason}"
            )
        }
        other => bail!("expected an unknown-table error, got {other:?}"),
    }
    assert!(!out.exists(), "nothing is written for a bad request");
    match ExportSource::sqlite(dir.path().join("missing.db")).write_dir(&out) {
        Err(Error::SourceMissing { .. }) => {}
        other => bail!("expected SourceMissing, got {other:?}"),
    }
    std::fs::write(
        dir.path().join("not.db"),
        b"this is not a database, just some text to read",
    )?;
    match ExportSource::sqlite(dir.path().join("not.db")).write_dir(&out) {
        Err(Error::NotADatabase { .. }) => {}
        other => bail!("expected NotADatabase, got {other:?}"),
    }
    Ok(())
}

#[test]
fn bundles_are_snapshots_verified_and_unpacked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    fixture(&db)?;
    let source = ExportSource::sqlite(&db).formats(&[ExportFormat::Json]);
    assert_eq!(source.kind(), "json");
    let m = SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(dir.path().join("backups"))?)
        .environment(Environment::persistent())
        .build()?;
    let r = m
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("taken")?;
    assert_eq!(r.source_kind, "json");
    assert!(r.blob_key.ends_with(".zip"));
    assert!(
        m.verify_with(&r.snapshot_id, CheckLevel::Full)?
            .engine_checked
    );

    let out = dir.path().join("restored");
    let blob = dir.path().join("backups").join(&r.blob_key);
    let manifest = unpack(&blob, &out)?;
    assert_eq!(manifest.formats, [ExportFormat::Json]);
    assert!(out.join("t.json").exists() && !out.join("t.csv").exists());
    assert!(matches!(
        unpack(&blob, &out),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        m.restore(&r.snapshot_id),
        Err(Error::InvalidInput {
            field: "target",
            ..
        })
    ));

    // A bundle damaged inside (sizes kept) fails the engine check, not only the checksum.
    let mut bytes = std::fs::read(&blob)?;
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    let bad = dir.path().join("bad.zip");
    std::fs::write(&bad, &bytes)?;
    assert!(
        ExportSource::sqlite(&db)
            .check_image(&bad, CheckLevel::Full)
            .is_err()
    );
    std::fs::write(&blob, &bytes)?;
    assert!(matches!(
        m.verify(&r.snapshot_id),
        Err(Error::ChecksumMismatch { .. })
    ));
    Ok(())
}

#[test]
fn csv_and_json_see_one_consistent_state_while_a_writer_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("live.db");
    {
        let c = Connection::open(&db)?;
        c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        c.execute_batch("CREATE TABLE readings (id INTEGER PRIMARY KEY, v REAL, ts TEXT);")?;
        c.execute_batch("BEGIN")?;
        for i in 0..20_000 {
            c.execute(
                "INSERT INTO readings (v, ts) VALUES (?1, 'x')",
                [f64::from(i) / 7.0],
            )?;
        }
        c.execute_batch("COMMIT")?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let c = Connection::open(&db)?;
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                c.execute("INSERT INTO readings (v, ts) VALUES (1.5, 'live')", [])?;
                n += 1;
            }
            Ok(n)
        })
    };
    let out = dir.path().join("export");
    let manifest = ExportSource::sqlite(&db).write_dir(&out)?;
    stop.store(true, Ordering::Relaxed);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    ensure!(written > 0, "the writer never wrote");
    let rows = manifest.tables[0].rows;
    let csv_lines = std::fs::read_to_string(out.join("readings.csv"))?
        .lines()
        .count() as u64;
    let json: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("readings.json"))?)?;
    assert!(rows >= 20_000);
    assert_eq!(
        csv_lines,
        rows + 1,
        "CSV: header + every row of the one state"
    );
    assert_eq!(json.len() as u64, rows, "JSON saw the same state as CSV");
    Ok(())
}
