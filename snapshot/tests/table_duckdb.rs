//! Record-level restore on real DuckDB files: preview, compare, table restore (replace and
//! merge) and undo — round trips, exact types, schema drift, bad input, a restore failing
//! midway — through both kinds of source: a closed file (`DuckDbSource::new`, the engine opens
//! it once for the session and its safety snapshot) and the application's open connection
//! (`DuckDbSource::with_connection`, the engine works through a clone of it and never opens
//! the file a second time).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use duckdb::Connection;
use snapshot::table::{
    Cascade, CompareOptions, DiffKind, EntityMapping, RestoreMode, TableRestoreOptions,
    UndoOptions, Value,
};
use snapshot::{
    DuckDbSource, Environment, Error, ListFilter, LocalStore, SnapshotManager, SnapshotRecord,
    SnapshotRequest, with_snapshot,
};

const MEASURES: i64 = 50;

/// Which source the manager has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `DuckDbSource::new`: nobody holds the file between calls.
    Closed,
    /// `DuckDbSource::with_connection`: the application holds it open all along.
    Connection,
}

const MODES: [Mode; 2] = [Mode::Closed, Mode::Connection];

type Rows = Vec<Vec<Option<String>>>;

struct Fixture {
    m: SnapshotManager,
    /// The application's connection (connection mode).
    app: Option<Connection>,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// 50 measures with two area priorities each (a plain foreign key), a table without key,
    /// a view.
    fn new(mode: Mode) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.duckdb");
        let conn = Connection::open(&db)?;
        conn.execute_batch(&format!(
            r#"CREATE TABLE measure (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, cost DOUBLE,
                                   note VARCHAR, data BLOB);
             CREATE TABLE measure_area_priority (
                 id INTEGER PRIMARY KEY,
                 measure_id INTEGER NOT NULL REFERENCES measure(id),
                 area VARCHAR NOT NULL, priority INTEGER);
             CREATE TABLE log ("at" VARCHAR, msg VARCHAR);
             CREATE VIEW cheap AS SELECT * FROM measure WHERE cost < 10;
             INSERT INTO measure
                 SELECT i, 'measure ' || i, i * 1.5,
                        CASE WHEN i % 2 = 1 THEN 'note ' || i END,
                        unhex(repeat(printf('%02x', i), 3))
                 FROM range(1, {MEASURES} + 1) t(i);
             INSERT INTO measure_area_priority
                 SELECT i * 10 + k, i, CASE k WHEN 0 THEN 'north' ELSE 'south' END, k + 1
                 FROM range(1, {MEASURES} + 1) t(i), range(0, 2) u(k);
             INSERT INTO log VALUES ('t1', 'a'), ('t2', 'b'), ('t3', 'c');
             CHECKPOINT;"#
        ))?;
        let (source, app) = match mode {
            Mode::Closed => {
                drop(conn);
                (DuckDbSource::new(&db), None)
            }
            Mode::Connection => (DuckDbSource::with_connection(&db, &conn)?, Some(conn)),
        };
        let m = SnapshotManager::builder()
            .source(source)
            .store(LocalStore::open(dir.path().join("backups"))?)
            .environment(Environment::persistent())
            .build()?;
        Ok(Fixture {
            m,
            app,
            db,
            _dir: dir,
        })
    }

    /// Runs `f` on the application's connection, or on the file opened for the call.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        match &self.app {
            Some(c) => f(c),
            None => f(&Connection::open(&self.db)?),
        }
    }

    fn exec(&self, sql: &str) -> Result<()> {
        self.with(|c| Ok(c.execute_batch(sql)?))
    }

    /// Every row of `table` as DuckDB writes each value as text (exact for every type: NULL
    /// stays `None`), sorted.
    fn rows(&self, table: &str) -> Result<Rows> {
        let q = format!("\"{}\"", table.replace('"', "\"\""));
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() \
                 AND schema_name = 'main' AND table_name = ?",
                [table],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {q} ORDER BY ALL"
            ))?;
            let rows = stmt
                .query_map([], |r| (0..n as usize).map(|i| r.get(i)).collect())?
                .collect::<duckdb::Result<Rows>>()?;
            Ok(rows)
        })
    }

    fn take(&self, req: SnapshotRequest) -> Result<SnapshotRecord> {
        self.m
            .snapshot(req)?
            .into_record()
            .context("the manager is enabled")
    }

    fn count(&self) -> Result<usize> {
        Ok(self.m.list(&ListFilter::new())?.len())
    }

    /// Databases attached to the application's instance besides its own (none once a session
    /// ended).
    fn attached(&self) -> Result<i64> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM duckdb_databases() WHERE database_name LIKE 'snapshot_image_%'",
                [],
                |r| r.get(0),
            )?)
        })
    }
}

impl snapshot::testing::table::TableFixture for Fixture {
    fn manager(&self) -> &SnapshotManager {
        &self.m
    }

    fn exec(&self, sql: &str) -> snapshot::testing::Check {
        Fixture::exec(self, sql).map_err(|e| snapshot::testing::Failure(format!("{e:#}")))
    }

    /// Every row of `table` by its own types (integers, floats, text, blobs; anything else as
    /// DuckDB writes it), sorted by all columns.
    fn rows(&self, table: &str) -> Result<Vec<Vec<Value>>, snapshot::testing::Failure> {
        use duckdb::types::ValueRef;
        let q = format!("\"{}\"", table.replace('"', "\"\""));
        self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT * FROM {q} ORDER BY ALL"))?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let n = r.as_ref().column_count();
                let mut values = Vec::with_capacity(n);
                for i in 0..n {
                    values.push(match r.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Int(v) => Value::Integer(i64::from(v)),
                        ValueRef::BigInt(v) => Value::Integer(v),
                        ValueRef::Double(v) => Value::Real(v),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                        other => Value::Text(format!("{other:?}")),
                    });
                }
                out.push(values);
            }
            Ok(out)
        })
        .map_err(|e| snapshot::testing::Failure(format!("{e:#}")))
    }
}

/// The table-engine conformance suite on a closed file (the engine opens it once per call).
mod conformance_closed_file {
    fn fixture() -> Box<dyn snapshot::testing::table::TableFixture> {
        Box::new(super::Fixture::new(super::Mode::Closed).expect("a DuckDB fixture"))
    }
    snapshot::table_conformance!(fixture);
}

/// The table-engine conformance suite through the application's open connection.
mod conformance_application_connection {
    fn fixture() -> Box<dyn snapshot::testing::table::TableFixture> {
        Box::new(super::Fixture::new(super::Mode::Connection).expect("a DuckDB fixture"))
    }
    snapshot::table_conformance!(fixture);
}

fn keys(diff: &snapshot::table::TableDiff, kind: DiffKind) -> BTreeSet<i64> {
    diff.sample
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(|r| r.key[0].as_i64())
        .collect()
}

fn merge() -> TableRestoreOptions {
    TableRestoreOptions::new(RestoreMode::Merge)
}

fn replace() -> TableRestoreOptions {
    TableRestoreOptions::new(RestoreMode::Replace)
}

fn priorities() -> UndoOptions {
    UndoOptions::new().entity(
        EntityMapping::new("measure").cascade(Cascade::new("measure_area_priority", "measure_id")),
    )
}

/// Deleted rows: compare shows exactly them, a merge puts exactly them back (and reverts the
/// changed row, keeps the added one), a replace then removes the added one; compare shows no
/// difference at the end. The safety snapshot holds the state before.
fn round_trip(mode: Mode) -> Result<()> {
    let f = Fixture::new(mode)?;
    let before = f.rows("measure")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM measure_area_priority WHERE measure_id IN (3, 17, 42);
         DELETE FROM measure WHERE id IN (3, 17, 42);
         UPDATE measure SET name = 'renamed', cost = NULL WHERE id = 7;
         INSERT INTO measure VALUES (100, 'new', 1.0, NULL, NULL);",
    )?;
    let edited = f.rows("measure")?;

    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!(d.key, ["id"]);
    assert!(d.drift.is_empty());
    assert_eq!((d.snapshot_rows, d.live_rows), (50, 48));
    assert_eq!((d.added, d.removed, d.changed, d.unchanged), (1, 3, 1, 46));
    assert_eq!(
        d.changed_columns,
        [("name".to_string(), 1), ("cost".to_string(), 1)]
    );
    assert_eq!(keys(&d, DiffKind::Removed), BTreeSet::from([3, 17, 42]));
    assert_eq!(keys(&d, DiffKind::Added), BTreeSet::from([100]));
    let changed = d
        .sample
        .iter()
        .find(|r| r.kind == DiffKind::Changed)
        .context("a changed row")?;
    assert_eq!(changed.key, [Value::Integer(7)]);
    assert_eq!(changed.changed_columns, ["name", "cost"]);
    assert_eq!(
        changed
            .snapshot
            .as_ref()
            .map(|r| (r[1].clone(), r[2].clone())),
        Some((Value::from("measure 7"), Value::Real(10.5)))
    );
    assert_eq!(
        changed.live.as_ref().map(|r| r[2].clone()),
        Some(Value::Null)
    );
    let removed = d
        .sample
        .iter()
        .find(|r| r.kind == DiffKind::Removed && r.key == [Value::Integer(3)])
        .context("removed row 3")?;
    assert_eq!(
        removed.snapshot.as_ref().map(|r| r[4].clone()),
        Some(Value::Blob(vec![3, 3, 3]))
    );

    // A dry run reports without writing or taking a safety snapshot.
    let n = f.count()?;
    let dry =
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &merge().dry_run(true))?;
    assert!(dry.dry_run && dry.safety_snapshot.is_none());
    assert_eq!((dry.inserted(), dry.updated(), dry.deleted()), (3, 1, 0));
    assert_eq!(f.rows("measure")?, edited);
    assert_eq!(f.count()?, n);

    // Merge: the removed rows come back, the changed one is reverted, the new one stays.
    let merged =
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &merge())?;
    assert_eq!(merged.tables, dry.tables);
    let safety = f.m.get(
        merged
            .safety_snapshot
            .as_deref()
            .context("safety snapshot")?,
    )?;
    assert!(safety.is_safety() && !safety.pinned);
    assert_eq!(f.count()?, n + 1);
    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!((d.added, d.removed, d.changed), (1, 0, 0));
    let mut expected = before.clone();
    expected.push(
        edited
            .iter()
            .find(|r| r[0].as_deref() == Some("100"))
            .context("row 100")?
            .clone(),
    );
    expected.sort();
    assert_eq!(f.rows("measure")?, expected);

    // Replace: the row added since goes, nothing else is touched.
    let dry =
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &replace().dry_run(true))?;
    assert_eq!((dry.inserted(), dry.updated(), dry.deleted()), (0, 0, 1));
    let replaced =
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &replace())?;
    assert_eq!(replaced.tables, dry.tables);
    assert_eq!(f.rows("measure")?, before);
    assert!(
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?
            .is_identical()
    );

    // The merge's safety snapshot holds the state before it.
    f.m.restore_tables(&safety.snapshot_id, &["measure"], &replace())?;
    assert_eq!(f.rows("measure")?, edited);
    assert_eq!(f.attached()?, 0, "every session detached its image");
    Ok(())
}

#[test]
fn delete_compare_merge_replace_round_trip_on_a_closed_file() -> Result<()> {
    round_trip(Mode::Closed)
}

#[test]
fn delete_compare_merge_replace_round_trip_through_the_applications_connection() -> Result<()> {
    round_trip(Mode::Connection)
}

#[test]
fn replace_restores_several_tables_row_for_row() -> Result<()> {
    for mode in MODES {
        let f = Fixture::new(mode)?;
        let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
        let snap = f.take(SnapshotRequest::new("manual"))?;
        f.exec(
            "DELETE FROM measure_area_priority WHERE measure_id > 40 OR area = 'north';
             DELETE FROM measure WHERE id > 40;
             UPDATE measure_area_priority SET priority = priority * 10;
             UPDATE measure SET note = 'edited' WHERE id <= 5;
             INSERT INTO measure_area_priority VALUES (9999, 1, 'east', 3);",
        )?;
        // Named children first: the measures are still written first.
        let r = f.m.restore_tables(
            &snap.snapshot_id,
            &["measure_area_priority", "measure"],
            &replace(),
        )?;
        let counts: Vec<(&str, u64, u64, u64)> = r
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.inserted, t.updated, t.deleted))
            .collect();
        assert_eq!(
            counts,
            [("measure_area_priority", 60, 40, 1), ("measure", 10, 5, 0)],
            "{mode:?}"
        );
        assert_eq!(f.rows("measure")?, m0);
        assert_eq!(f.rows("measure_area_priority")?, p0);
        // And the whole database: a file swap when it is closed, through the application's
        // connection (every table in one transaction) when it holds it.
        f.exec("DELETE FROM log")?;
        f.m.restore(&snap.snapshot_id)?;
        assert_eq!(f.rows("log")?.len(), 3, "{mode:?}");
    }
    Ok(())
}

/// DuckDB refuses to delete a row referred to by a row deleted earlier in the same transaction:
/// a replace that must delete a measure together with its priorities fails with DuckDB's
/// message and a word of explanation, and changes nothing; restoring the priorities by
/// themselves first, then the measures, does it.
#[test]
fn a_replace_duckdb_cannot_order_fails_cleanly_and_can_be_split() -> Result<()> {
    let f = Fixture::new(Mode::Closed)?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "INSERT INTO measure VALUES (99, 'added', NULL, NULL, NULL);
         INSERT INTO measure_area_priority VALUES (990, 99, 'west', 1);",
    )?;
    let (m1, p1) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    match f.m.restore_tables(
        &snap.snapshot_id,
        &["measure", "measure_area_priority"],
        &replace(),
    ) {
        Err(Error::TableRestoreFailed {
            table,
            detail,
            safety_snapshot,
            ..
        }) => {
            assert_eq!(table.as_deref(), Some("measure"));
            assert!(detail.contains("foreign key"), "{detail}");
            assert!(detail.contains("restore the referring table"), "{detail}");
            assert!(safety_snapshot.is_some());
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    }
    assert_eq!(f.rows("measure")?, m1);
    assert_eq!(f.rows("measure_area_priority")?, p1);
    f.m.restore_tables(&snap.snapshot_id, &["measure_area_priority"], &replace())?;
    f.m.restore_tables(&snap.snapshot_id, &["measure"], &replace())?;
    assert_eq!(f.rows("measure")?, m0);
    assert_eq!(f.rows("measure_area_priority")?, p0);
    Ok(())
}

#[test]
fn values_keep_their_exact_types() -> Result<()> {
    for mode in MODES {
        let f = Fixture::new(mode)?;
        f.exec(
            r#"CREATE TABLE typed (id INTEGER PRIMARY KEY, big BIGINT, dec DECIMAL(38,10),
                                  money DECIMAL(18,3), ts TIMESTAMP, tz TIMESTAMPTZ,
                                  day DATE, b BLOB, t VARCHAR, n VARCHAR COLLATE NOCASE,
                                  d DOUBLE, flag BOOLEAN, h HUGEINT, l INTEGER[],
                                  s STRUCT(a INTEGER, b VARCHAR));
               INSERT INTO typed VALUES
                 (0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                  NULL, NULL),
                 (1, -9223372036854775808, 1234567890123456789012345678.0123456789, 0.001,
                  TIMESTAMP '2025-01-11 14:30:22.123456', TIMESTAMPTZ '2025-01-11 14:30:22+02',
                  DATE '1900-02-28', '\x00\xFF\x10'::BLOB, 'naïve 日本語 🦀 e' || chr(769),
                  'Case', 0.1, true, 170141183460469231731687303715884105727, [1, NULL, 3],
                  {'a': 1, 'b': 'x'}),
                 (2, 9223372036854775807, -0.0000000001, 999999999999999.999,
                  TIMESTAMP '1970-01-01 00:00:00', NULL, DATE '2024-02-29', ''::BLOB,
                  'it''s "quoted",' || chr(10) || 'new line', 'z', -2.5e-300, false, -1, [],
                  {'a': NULL, 'b': NULL}),
                 (3, 0, 1.5, 1.5, TIMESTAMP '2000-01-01 00:00:00.5', NULL, NULL,
                  '\x01'::BLOB, '', 'mixed Case', 9007199254740993, NULL, 0, [7], NULL);"#,
        )?;
        let expected = f.rows("typed")?;
        let snap = f.take(SnapshotRequest::new("manual"))?;

        // The preview shows the values: integers, floats, booleans, text and blobs in their
        // own class, exact numbers and times as DuckDB writes them.
        let page = f.m.preview(&snap.snapshot_id, "typed", 0, 100)?;
        assert_eq!(page.total_rows, 4);
        let row = &page.rows[1];
        assert_eq!(row[1], Value::Integer(i64::MIN));
        assert_eq!(
            row[2],
            Value::from("1234567890123456789012345678.0123456789")
        );
        assert_eq!(row[3], Value::from("0.001"));
        assert_eq!(row[4], Value::from("2025-01-11 14:30:22.123456"));
        assert_eq!(row[6], Value::from("1900-02-28"));
        assert_eq!(row[7], Value::Blob(vec![0, 0xff, 0x10]));
        assert_eq!(row[8], Value::from("naïve 日本語 🦀 e\u{301}"));
        assert_eq!(row[10], Value::Real(0.1));
        assert_eq!(row[11], Value::Integer(1));
        assert_eq!(
            row[12],
            Value::from("170141183460469231731687303715884105727")
        );
        assert_eq!(row[13], Value::from("[1, NULL, 3]"));
        assert!(page.rows[0][1..].iter().all(Value::is_null));
        assert_eq!(page.rows[2][7], Value::Blob(Vec::new()));
        assert_eq!(page.columns[2].declared_type, "DECIMAL(38,10)");

        // Exact changes: a last decimal digit, a microsecond, a byte, a change of case in a
        // NOCASE column, NULL against a value. (Columns named `s` and `l` also keep the
        // engine's row aliases out of their way.)
        f.exec(
            "UPDATE typed SET dec = 1234567890123456789012345678.0123456788 WHERE id = 1;
             UPDATE typed SET ts = TIMESTAMP '1970-01-01 00:00:00.000001' WHERE id = 2;
             UPDATE typed SET b = '\\x02'::BLOB, n = 'MIXED CASE' WHERE id = 3;
             UPDATE typed SET big = 0 WHERE id = 0;",
        )?;
        let d =
            f.m.compare(&snap.snapshot_id, "typed", &CompareOptions::new())?;
        assert_eq!((d.removed, d.changed, d.unchanged), (0, 4, 0), "{mode:?}");
        assert_eq!(
            d.changed_columns,
            [
                ("big".to_string(), 1),
                ("dec".to_string(), 1),
                ("ts".to_string(), 1),
                ("b".to_string(), 1),
                ("n".to_string(), 1)
            ]
        );
        f.exec("DELETE FROM typed WHERE id >= 2")?;
        let r =
            f.m.restore_tables(&snap.snapshot_id, &["typed"], &merge())?;
        assert_eq!((r.inserted(), r.updated()), (2, 2));
        assert_eq!(f.rows("typed")?, expected, "{mode:?}");
        assert!(
            f.m.compare(&snap.snapshot_id, "typed", &CompareOptions::new())?
                .is_identical()
        );
    }
    Ok(())
}

#[test]
fn schema_drift_is_reported_and_restored_by_the_common_columns_only_when_asked() -> Result<()> {
    for mode in MODES {
        let f = Fixture::new(mode)?;
        f.exec(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, qty INTEGER,
                                note VARCHAR);
             INSERT INTO item SELECT i, 'item ' || i, i, 'n' || i FROM range(1, 11) t(i);",
        )?;
        let snap = f.take(SnapshotRequest::new("manual"))?;
        f.exec(
            "ALTER TABLE item ADD COLUMN extra VARCHAR DEFAULT 'x';
             ALTER TABLE item DROP COLUMN note;
             ALTER TABLE item ALTER COLUMN qty TYPE BIGINT;
             DELETE FROM item WHERE id IN (4, 5);
             UPDATE item SET qty = 100 WHERE id = 6;",
        )?;
        let d =
            f.m.compare(&snap.snapshot_id, "item", &CompareOptions::new())?;
        let names = |cols: &[snapshot::table::Column]| -> Vec<String> {
            cols.iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names(&d.drift.added), ["extra"]);
        assert_eq!(names(&d.drift.removed), ["note"]);
        assert_eq!(d.drift.retyped.len(), 1);
        assert_eq!(
            (
                d.drift.retyped[0].name.as_str(),
                d.drift.retyped[0].snapshot_type.as_str(),
                d.drift.retyped[0].live_type.as_str()
            ),
            ("qty", "INTEGER", "BIGINT")
        );
        assert_eq!(d.columns, ["id", "name", "qty"]);
        assert_eq!((d.removed, d.changed), (2, 1), "{mode:?}");
        assert_eq!(d.changed_columns, [("qty".to_string(), 1)]);

        let before = f.rows("item")?;
        match f.m.restore_tables(&snap.snapshot_id, &["item"], &merge()) {
            Err(Error::SchemaDrift { table, drift, .. }) => {
                assert_eq!(table, "item");
                assert_eq!(drift.added.len(), 1);
            }
            other => bail!("expected SchemaDrift, got {other:?}"),
        }
        assert_eq!(f.rows("item")?, before);
        assert_eq!(f.count()?, 1, "a refused restore takes no safety snapshot");
        let r =
            f.m.restore_tables(&snap.snapshot_id, &["item"], &merge().common_columns(true))?;
        assert_eq!((r.inserted(), r.updated()), (2, 1));
        let rows = f.rows("item")?;
        assert!(
            rows.contains(&vec![
                Some("4".into()),
                Some("item 4".into()),
                Some("4".into()),
                Some("x".into())
            ]),
            "{rows:?}"
        );
        assert!(
            f.m.compare(&snap.snapshot_id, "item", &CompareOptions::new())?
                .is_identical()
        );
    }
    Ok(())
}

#[test]
fn a_restore_failing_midway_changes_nothing_and_keeps_the_safety_snapshot() -> Result<()> {
    for mode in MODES {
        let f = Fixture::new(mode)?;
        f.exec(
            "CREATE TABLE tag (id INTEGER PRIMARY KEY, name VARCHAR UNIQUE);
             INSERT INTO tag VALUES (1, 'a'), (2, 'b');",
        )?;
        let snap = f.take(SnapshotRequest::new("manual"))?;
        f.exec(
            "DELETE FROM measure_area_priority WHERE measure_id BETWEEN 10 AND 20;
             DELETE FROM measure WHERE id BETWEEN 10 AND 20;
             UPDATE measure SET name = 'edited' WHERE id = 1;
             DELETE FROM tag WHERE id = 2; INSERT INTO tag VALUES (9, 'b');",
        )?;
        let (m0, t0) = (f.rows("measure")?, f.rows("tag")?);
        let safety = match f
            .m
            .restore_tables(&snap.snapshot_id, &["measure", "tag"], &merge())
        {
            Err(Error::TableRestoreFailed {
                id,
                table,
                detail,
                safety_snapshot,
            }) => {
                assert_eq!(id, snap.snapshot_id);
                assert_eq!(table.as_deref(), Some("tag"));
                assert!(detail.contains("Duplicate key"), "{detail}");
                safety_snapshot.context("the safety snapshot is named")?
            }
            other => bail!("{mode:?}: expected TableRestoreFailed, got {other:?}"),
        };
        // The measures were written before the failure, and rolled back with it.
        assert_eq!(f.rows("measure")?, m0);
        assert_eq!(f.rows("tag")?, t0);
        let record = f.m.get(&safety)?;
        assert!(record.is_safety() && !record.pinned);
        assert!(f.m.verify(&safety)?.engine_checked);
        assert!(
            f.m.compare(&safety, "measure", &CompareOptions::new())?
                .is_identical()
        );

        let p0 = f.rows("measure_area_priority")?;
        match f
            .m
            .restore_tables(&snap.snapshot_id, &["measure_area_priority"], &merge())
        {
            Err(Error::TableRestoreFailed { table, detail, .. }) => {
                assert_eq!(table.as_deref(), Some("measure_area_priority"));
                assert!(detail.contains("foreign key"), "{detail}");
            }
            other => bail!("expected TableRestoreFailed, got {other:?}"),
        }
        assert_eq!(f.rows("measure_area_priority")?, p0);
        assert_eq!(f.attached()?, 0);
    }
    Ok(())
}

/// The app of the issue, on DuckDB: it holds its connection and deletes a measure with its
/// priorities under `#[with_snapshot]`.
struct App {
    conn: Connection,
    snapshots: SnapshotManager,
}

impl App {
    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete_measure(&self, id: i64) -> anyhow::Result<usize> {
        self.conn.execute(
            "DELETE FROM measure_area_priority WHERE measure_id = ?",
            [id],
        )?;
        Ok(self
            .conn
            .execute("DELETE FROM measure WHERE id = ?", [id])?)
    }
}

#[test]
fn undo_puts_back_exactly_the_deleted_entity_and_its_declared_cascade() -> Result<()> {
    let f = Fixture::new(Mode::Connection)?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let Fixture { m, app, _dir, .. } = f;
    let app = App {
        conn: app.context("connection mode")?,
        snapshots: m,
    };
    assert_eq!(app.delete_measure(42)?, 1);
    app.conn.execute_batch(
        "UPDATE measure SET note = 'later' WHERE id = 7;
         INSERT INTO measure VALUES (500, 'after', NULL, NULL, NULL);",
    )?;
    let snap = app
        .snapshots
        .list(&ListFilter::new())?
        .into_iter()
        .find(|r| r.entity_id.as_deref() == Some("42"))
        .context("the snapshot of the delete")?;
    let d = app
        .snapshots
        .compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!(keys(&d, DiffKind::Removed), BTreeSet::from([42]));

    let dry = app
        .snapshots
        .undo_with(&snap.snapshot_id, &priorities().dry_run(true))?;
    assert_eq!((dry.inserted(), dry.updated()), (3, 0));
    let r = app.snapshots.undo_with(&snap.snapshot_id, &priorities())?;
    assert_eq!(
        (r.tables[0].inserted, r.tables[1].inserted),
        (1, 2),
        "the measure, then its priorities"
    );
    assert!(r.safety_snapshot.is_some());
    // Exactly those rows: the later edits stay.
    let rows = |table: &str| -> Result<Rows> {
        let mut stmt = app.conn.prepare(&format!(
            "SELECT CAST(COLUMNS(*) AS VARCHAR) FROM {table} ORDER BY ALL"
        ))?;
        let n = if table == "measure" { 5 } else { 4 };
        Ok(stmt
            .query_map([], |r| (0..n).map(|i| r.get(i)).collect())?
            .collect::<duckdb::Result<Rows>>()?)
    };
    assert_eq!(rows("measure_area_priority")?, p0);
    let measures = rows("measure")?;
    assert_eq!(measures.len(), m0.len() + 1);
    assert!(
        measures.contains(
            m0.iter()
                .find(|r| r[0].as_deref() == Some("42"))
                .context("42")?
        )
    );
    assert!(
        measures
            .iter()
            .any(|r| r[0].as_deref() == Some("7") && r[3].as_deref() == Some("later"))
    );
    // Undone twice: nothing left to put back, nothing changes.
    let again = app.snapshots.undo_with(&snap.snapshot_id, &priorities())?;
    assert_eq!((again.inserted(), again.updated()), (0, 0));
    Ok(())
}

/// Without the application's connection, a file this process holds open is refused rather
/// than opened by a second instance; closed again, it works. The engine's own instance is
/// closed when the call returns (another instance can open the file).
#[test]
fn a_closed_file_source_never_opens_a_file_this_process_holds() -> Result<()> {
    let f = Fixture::new(Mode::Closed)?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    let held = Connection::open(&f.db)?;
    match f
        .m
        .compare(&snap.snapshot_id, "measure", &CompareOptions::new())
    {
        Err(Error::InvalidInput { field, reason }) => {
            assert_eq!(field, "source");
            assert!(reason.contains("with_connection"), "{reason}");
        }
        other => bail!("expected InvalidInput, got {other:?}"),
    }
    drop(held);
    assert!(
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?
            .is_identical()
    );
    // An undo and a merge, each with its safety snapshot taken through the engine's instance.
    let deleting = f.take(SnapshotRequest::new("delete").entity("measure", 1))?;
    f.exec(
        "DELETE FROM measure_area_priority WHERE measure_id IN (1, 2);
         DELETE FROM measure WHERE id IN (1, 2);",
    )?;
    let r = f.m.undo_with(&deleting.snapshot_id, &priorities())?;
    assert_eq!((r.inserted(), r.updated()), (3, 0));
    let r = f.m.restore_tables(
        &snap.snapshot_id,
        &["measure_area_priority", "measure"],
        &merge(),
    )?;
    assert_eq!(r.inserted(), 3);
    assert_eq!(f.count()?, 4, "the two taken here and two safety snapshots");
    // The file is free again: a snapshot of the restored state, and a plain open.
    let after = f.take(SnapshotRequest::new("manual"))?;
    assert!(
        f.m.compare(&after.snapshot_id, "measure", &CompareOptions::new())?
            .is_identical()
    );
    let n: i64 =
        Connection::open(&f.db)?.query_row("SELECT count(*) FROM measure", [], |r| r.get(0))?;
    assert_eq!(n, MEASURES);
    Ok(())
}
