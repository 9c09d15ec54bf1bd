//! Record-level restore on real SQLite files: preview, compare, table restore (replace and
//! merge) and undo — round trips, exact types, odd names, schema drift, bad input, a restore
//! failing midway, undo conflicts and cascades.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use snapshot::table::{
    Cascade, CompareOptions, DiffKind, EntityMapping, RestoreMode, TableRestoreOptions,
    UndoOptions, UndoRefusal, Value,
};
use snapshot::{
    Environment, Error, FileSource, ListFilter, LocalStore, Outcome, SnapshotManager,
    SnapshotRecord, SnapshotRequest, SqliteSource, with_snapshot,
};

const MEASURES: i64 = 50;

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    store: PathBuf,
    m: SnapshotManager,
}

impl Fixture {
    /// A WAL database with 50 measures, two area priorities each, and a table without key.
    fn new() -> Result<Self> {
        Self::with_journal("WAL")
    }

    fn with_journal(mode: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let c = Connection::open(&db)?;
        let set: String = c.query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))?;
        ensure!(set.eq_ignore_ascii_case(mode), "journal mode {set}");
        c.execute_batch(
            "CREATE TABLE measure (id INTEGER PRIMARY KEY, name TEXT NOT NULL, cost REAL,
                                   note TEXT, data BLOB);
             CREATE TABLE measure_area_priority (
                 id INTEGER PRIMARY KEY,
                 measure_id INTEGER NOT NULL REFERENCES measure(id) ON DELETE CASCADE,
                 area TEXT NOT NULL, priority INTEGER);
             CREATE TABLE log (at TEXT, msg TEXT);
             CREATE VIEW cheap AS SELECT * FROM measure WHERE cost < 10;",
        )?;
        for i in 1..=MEASURES {
            let note = (i % 2 == 1).then(|| format!("note {i}"));
            c.execute(
                "INSERT INTO measure VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    i,
                    format!("measure {i}"),
                    i as f64 * 1.5,
                    note,
                    vec![i as u8; 3]
                ],
            )?;
            for (k, area) in ["north", "south"].into_iter().enumerate() {
                c.execute(
                    "INSERT INTO measure_area_priority VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![i * 10 + k as i64, i, area, k as i64 + 1],
                )?;
            }
        }
        c.execute_batch("INSERT INTO log VALUES ('t1', 'a'), ('t2', 'b'), ('t3', 'c');")?;
        drop(c);
        let store = dir.path().join("backups");
        let m = SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(LocalStore::open(&store)?)
            .environment(Environment::persistent())
            .build()?;
        Ok(Fixture {
            _dir: dir,
            db,
            store,
            m,
        })
    }

    fn exec(&self, sql: &str) -> Result<()> {
        Connection::open(&self.db)?.execute_batch(sql)?;
        Ok(())
    }

    /// Every row of `table`, ordered by all its columns, with exact types.
    fn rows(&self, table: &str) -> Result<Vec<Vec<Sql>>> {
        rows_of(&self.db, table)
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
}

fn rows_of(db: &Path, table: &str) -> Result<Vec<Vec<Sql>>> {
    let c = Connection::open(db)?;
    let q = format!("\"{}\"", table.replace('"', "\"\""));
    let n = c.prepare(&format!("SELECT * FROM {q}"))?.column_count();
    let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let mut stmt = c.prepare(&format!("SELECT * FROM {q} ORDER BY {}", order.join(", ")))?;
    let rows = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, Sql>(i)).collect())?
        .collect::<rusqlite::Result<Vec<Vec<Sql>>>>()?;
    Ok(rows)
}

impl snapshot::testing::table::TableFixture for Fixture {
    fn manager(&self) -> &SnapshotManager {
        &self.m
    }

    fn exec(&self, sql: &str) -> snapshot::testing::Check {
        Fixture::exec(self, sql).map_err(|e| snapshot::testing::Failure(format!("{e:#}")))
    }

    fn rows(&self, table: &str) -> Result<Vec<Vec<Value>>, snapshot::testing::Failure> {
        let rows =
            rows_of(&self.db, table).map_err(|e| snapshot::testing::Failure(format!("{e:#}")))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| match v {
                        Sql::Null => Value::Null,
                        Sql::Integer(i) => Value::Integer(i),
                        Sql::Real(f) => Value::Real(f),
                        Sql::Text(t) => Value::Text(t),
                        Sql::Blob(b) => Value::Blob(b),
                    })
                    .collect()
            })
            .collect())
    }
}

/// The table-engine conformance suite on a live WAL database.
mod conformance {
    fn fixture() -> Box<dyn snapshot::testing::table::TableFixture> {
        Box::new(super::Fixture::new().expect("a SQLite fixture"))
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

#[test]
fn delete_compare_merge_replace_round_trip() -> Result<()> {
    let f = Fixture::new()?;
    let before = f.rows("measure")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    // Triggers added after the snapshot record every write the restores make.
    f.exec(
        "CREATE TABLE audit (op TEXT, id INTEGER);
         CREATE TRIGGER ai AFTER INSERT ON measure BEGIN INSERT INTO audit VALUES ('i', NEW.id); END;
         CREATE TRIGGER au AFTER UPDATE ON measure BEGIN INSERT INTO audit VALUES ('u', NEW.id); END;
         CREATE TRIGGER ad AFTER DELETE ON measure BEGIN INSERT INTO audit VALUES ('d', OLD.id); END;
         DELETE FROM measure WHERE id IN (3, 17, 42);
         UPDATE measure SET name = 'renamed', cost = NULL WHERE id = 7;
         INSERT INTO measure VALUES (100, 'new', 1.0, NULL, NULL);
         DELETE FROM audit;",
    )?;
    let edited = f.rows("measure")?;

    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!(d.snapshot_id, snap.snapshot_id);
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
        changed.snapshot.as_ref().map(|r| r[1].clone()),
        Some(Value::from("measure 7"))
    );
    assert_eq!(
        changed.live.as_ref().map(|r| r[2].clone()),
        Some(Value::Null)
    );
    assert!(!d.is_identical());

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
    assert_eq!(
        safety.restore_of.as_deref(),
        Some(snap.snapshot_id.as_str())
    );
    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!((d.added, d.removed, d.changed), (1, 0, 0));
    let mut expected = before.clone();
    expected.push(edited.last().context("row 100")?.clone());
    assert_eq!(f.rows("measure")?, expected);
    let audit = rows_of(&f.db, "audit")?;
    assert_eq!(
        audit.len(),
        4,
        "only the three inserts and one update: {audit:?}"
    );

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
    assert_eq!(rows_of(&f.db, "audit")?.len(), 5);

    // The safety snapshot of the merge holds the state before it: restoring it brings back
    // the edited table.
    f.m.restore_tables(&safety.snapshot_id, &["measure"], &replace())?;
    assert_eq!(f.rows("measure")?, edited);
    Ok(())
}

#[test]
fn replace_restores_several_tables_row_for_row() -> Result<()> {
    let f = Fixture::new()?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM measure WHERE id > 40;
         DELETE FROM measure_area_priority WHERE area = 'north';
         UPDATE measure_area_priority SET priority = priority * 10;
         INSERT INTO measure_area_priority VALUES (9999, 1, 'east', 3);",
    )?;
    let r = f.m.restore_tables(
        &snap.snapshot_id,
        &["measure", "measure_area_priority"],
        &replace(),
    )?;
    assert_eq!(r.tables.len(), 2);
    assert_eq!(
        (
            r.tables[0].inserted,
            r.tables[0].updated,
            r.tables[0].deleted
        ),
        (10, 0, 0)
    );
    // The fixture's connections enforce foreign keys: deleting measures 41..50 cascaded to
    // their remaining priorities, so 60 come back and 40 are updated.
    assert_eq!(
        (
            r.tables[1].inserted,
            r.tables[1].updated,
            r.tables[1].deleted
        ),
        (60, 40, 1)
    );
    assert_eq!(f.rows("measure")?, m0);
    assert_eq!(f.rows("measure_area_priority")?, p0);
    Ok(())
}

#[test]
fn values_keep_their_exact_types() -> Result<()> {
    let f = Fixture::new()?;
    f.exec("CREATE TABLE typed (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, any_, n TEXT COLLATE NOCASE);")?;
    let c = Connection::open(&f.db)?;
    let texts = [
        "",
        "naïve 日本語 🦀 e\u{301}",
        "it's \"quoted\",\nnew line",
        "nul\0inside",
    ];
    let reals = [
        0.1,
        1e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
        std::f64::consts::PI,
        9007199254740993.0,
        -0.5,
    ];
    let anys = [
        Sql::Integer(1),
        Sql::Real(1.0),
        Sql::Text("1".into()),
        Sql::Blob(vec![1]),
    ];
    let all_bytes: Vec<u8> = (0..=255).collect();
    let mut expected = Vec::new();
    for id in 0..8i64 {
        let row = vec![
            Sql::Integer(id),
            match id {
                0 => Sql::Null,
                1 => Sql::Integer(i64::MIN),
                2 => Sql::Integer(i64::MAX),
                _ => Sql::Integer(id - 4),
            },
            match id {
                0 => Sql::Null,
                _ => Sql::Real(reals[(id as usize - 1) % reals.len()]),
            },
            match id {
                0 => Sql::Null,
                _ => Sql::Text(texts[id as usize % texts.len()].into()),
            },
            match id {
                0 => Sql::Null,
                1 => Sql::Blob(Vec::new()),
                _ => Sql::Blob(all_bytes.clone()),
            },
            anys[id as usize % anys.len()].clone(),
            Sql::Text(format!("Case {id}")),
        ];
        c.execute(
            "INSERT INTO typed VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params_from_iter(row.iter()),
        )?;
        expected.push(row);
    }
    drop(c);
    assert_eq!(f.rows("typed")?, expected);
    let snap = f.take(SnapshotRequest::new("manual"))?;

    // The preview shows the same values.
    let page = f.m.preview(&snap.snapshot_id, "typed", 0, 100)?;
    assert_eq!(page.total_rows, 8);
    assert_eq!(page.rows[0][1], Value::Null);
    assert_eq!(page.rows[1][1], Value::Integer(i64::MIN));
    assert_eq!(page.rows[2][1], Value::Integer(i64::MAX));
    assert_eq!(page.rows[6][2], Value::Real(9007199254740993.0));
    assert_eq!(page.rows[1][3], Value::from(texts[1]));
    assert_eq!(page.rows[3][3], Value::from(texts[3]));
    assert_eq!(page.rows[2][4], Value::Blob(all_bytes.clone()));
    assert_eq!(page.rows[1][5], Value::Real(1.0));
    assert_eq!(page.rows[2][5], Value::from("1"));

    // Changes of storage type alone, and of case alone, are changes.
    f.exec(
        "UPDATE typed SET any_ = 1 WHERE id = 1;
         UPDATE typed SET any_ = 1 WHERE id = 2;
         UPDATE typed SET n = 'case 3' WHERE id = 3;
         DELETE FROM typed WHERE id >= 4;",
    )?;
    let d =
        f.m.compare(&snap.snapshot_id, "typed", &CompareOptions::new())?;
    assert_eq!((d.removed, d.changed, d.unchanged), (4, 3, 1));
    assert_eq!(
        d.changed_columns,
        [("any_".to_string(), 2), ("n".to_string(), 1)]
    );
    f.m.restore_tables(&snap.snapshot_id, &["typed"], &merge())?;
    assert_eq!(f.rows("typed")?, expected);
    assert!(
        f.m.compare(&snap.snapshot_id, "typed", &CompareOptions::new())?
            .is_identical()
    );
    Ok(())
}

#[test]
fn removed_and_retyped_columns_are_drift_too() -> Result<()> {
    let f = Fixture::new()?;
    let snap = f.take(SnapshotRequest::new("delete").entity("measure", 42))?;
    f.exec(
        "ALTER TABLE measure DROP COLUMN note;
         ALTER TABLE measure_area_priority RENAME TO old_p;
         CREATE TABLE measure_area_priority (id INTEGER PRIMARY KEY, measure_id INTEGER NOT NULL,
                                             area TEXT NOT NULL, priority TEXT);
         INSERT INTO measure_area_priority SELECT * FROM old_p;
         DROP TABLE old_p;
         DELETE FROM measure WHERE id = 42;
         DELETE FROM measure_area_priority WHERE measure_id = 42;",
    )?;
    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!(d.drift.removed.len(), 1);
    assert_eq!(d.drift.removed[0].name, "note");
    assert_eq!(d.drift.removed[0].declared_type, "TEXT");
    let d = f.m.compare(
        &snap.snapshot_id,
        "measure_area_priority",
        &CompareOptions::new(),
    )?;
    assert_eq!(d.drift.retyped.len(), 1);
    assert_eq!(
        (
            d.drift.retyped[0].name.as_str(),
            d.drift.retyped[0].snapshot_type.as_str(),
            d.drift.retyped[0].live_type.as_str()
        ),
        ("priority", "INTEGER", "TEXT")
    );
    let msg = match f.m.undo_with(&snap.snapshot_id, &priorities()) {
        Err(e @ Error::SchemaDrift { .. }) => e.to_string(),
        other => bail!("expected SchemaDrift, got {other:?}"),
    };
    assert!(msg.contains("removed: \"note\" TEXT"), "{msg}");
    let r =
        f.m.undo_with(&snap.snapshot_id, &priorities().common_columns(true))?;
    assert_eq!((r.tables[0].inserted, r.tables[1].inserted), (1, 2));
    let p = rows_of(&f.db, "measure_area_priority")?;
    assert!(p.contains(&vec![
        Sql::Integer(420),
        Sql::Integer(42),
        Sql::Text("north".into()),
        Sql::Text("1".into())
    ]));
    Ok(())
}

#[test]
fn missing_tables_keys_and_views_are_typed_errors() -> Result<()> {
    let f = Fixture::new()?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    let id = snap.snapshot_id.as_str();
    f.exec(
        "CREATE TABLE later (id INTEGER PRIMARY KEY);
         DROP TABLE measure_area_priority;
         INSERT INTO log VALUES ('t1', 'again');",
    )?;
    let cmp = CompareOptions::new();
    match f.m.compare(id, "later", &cmp) {
        Err(Error::TableMissing { table, location }) => {
            assert_eq!(table, "later");
            assert_eq!(location, format!("snapshot {id}"));
        }
        other => bail!("expected TableMissing in the snapshot, got {other:?}"),
    }
    match f
        .m
        .restore_tables(id, &["measure", "measure_area_priority"], &merge())
    {
        Err(Error::TableMissing { table, location }) => {
            assert_eq!(table, "measure_area_priority");
            assert!(location.starts_with("the live database"), "{location}");
            assert!(location.contains("app.db"), "{location}");
        }
        other => bail!("expected TableMissing in the live database, got {other:?}"),
    }
    match f.m.compare(id, "log", &cmp) {
        Err(Error::NoKey { table, reason }) => {
            assert_eq!(table, "log");
            assert!(reason.contains("no primary key"), "{reason}");
        }
        other => bail!("expected NoKey, got {other:?}"),
    }
    match f.m.compare(id, "log", &cmp.clone().key(["at"])) {
        Err(Error::KeyCollision {
            table,
            location,
            key_columns,
            key,
        }) => {
            assert_eq!(
                (table.as_str(), key_columns.as_str(), key.as_str()),
                ("log", "at", "'t1'")
            );
            assert!(location.contains("live"), "{location}");
        }
        other => bail!("expected KeyCollision, got {other:?}"),
    }
    let d = f.m.compare(id, "log", &cmp.clone().key(["at", "msg"]))?;
    assert_eq!((d.added, d.removed), (1, 0));
    match f.m.compare(id, "log", &cmp.clone().key(["nope"])) {
        Err(Error::NoKey { reason, .. }) => assert!(reason.contains("\"nope\""), "{reason}"),
        other => bail!("expected NoKey, got {other:?}"),
    }
    assert!(matches!(
        f.m.compare(id, "cheap", &cmp),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        f.m.compare(id, "sqlite_master", &cmp),
        Err(Error::TableMissing { .. })
    ));
    assert!(matches!(
        f.m.compare("20260101_000000_000_nope", "measure", &cmp),
        Err(Error::NotFound { .. })
    ));
    let none: [&str; 0] = [];
    assert!(matches!(
        f.m.restore_tables(id, &none, &merge()),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        f.m.restore_tables(id, &["measure", "MEASURE"], &merge()),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(f.count()?, 1, "no refused call took a safety snapshot");
    Ok(())
}

#[test]
fn a_restore_failing_midway_changes_nothing_and_keeps_the_safety_snapshot() -> Result<()> {
    let f = Fixture::new()?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM measure_area_priority;
         DELETE FROM measure WHERE id BETWEEN 10 AND 20;
         UPDATE measure SET name = 'edited' WHERE id = 1;
         CREATE TRIGGER refuse BEFORE INSERT ON measure WHEN NEW.id = 15
         BEGIN SELECT RAISE(ABORT, 'no measure 15 please'); END;",
    )?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let err = f.m.restore_tables(
        &snap.snapshot_id,
        &["measure_area_priority", "measure"],
        &merge(),
    );
    let safety = match err {
        Err(Error::TableRestoreFailed {
            id,
            table,
            detail,
            safety_snapshot,
        }) => {
            assert_eq!(id, snap.snapshot_id);
            assert_eq!(table.as_deref(), Some("measure"));
            assert!(detail.contains("no measure 15 please"), "{detail}");
            safety_snapshot.context("the safety snapshot is named")?
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    };
    // Named first, the priorities are still written after their measures (the foreign key):
    // neither table changed.
    assert_eq!(f.rows("measure")?, m0);
    assert_eq!(f.rows("measure_area_priority")?, p0);
    let record = f.m.get(&safety)?;
    assert!(record.is_safety() && !record.pinned);
    assert!(f.m.verify(&safety)?.engine_checked);
    // The safety snapshot holds the state before the attempt.
    let d = f.m.compare(&safety, "measure", &CompareOptions::new())?;
    assert!(d.is_identical());

    // A unique constraint violated by a restored row fails the same way.
    f.exec(
        "DROP TRIGGER refuse;
         CREATE UNIQUE INDEX one_name ON measure(name);
         INSERT INTO measure VALUES (500, 'measure 12', NULL, NULL, NULL);",
    )?;
    let m1 = f.rows("measure")?;
    match f
        .m
        .restore_tables(&snap.snapshot_id, &["measure"], &merge())
    {
        Err(Error::TableRestoreFailed { table, detail, .. }) => {
            assert_eq!(table.as_deref(), Some("measure"));
            assert!(detail.contains("UNIQUE"), "{detail}");
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    }
    assert_eq!(f.rows("measure")?, m1);
    Ok(())
}

/// The app of the issue: deletes a measure, and the foreign key cascades to its priorities.
struct App {
    conn: Connection,
    snapshots: SnapshotManager,
}

impl App {
    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete_measure(&self, id: i64) -> anyhow::Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM measure WHERE id = ?1", [id])?)
    }
}

#[test]
fn undo_puts_back_exactly_the_deleted_entity_and_its_declared_cascade() -> Result<()> {
    let f = Fixture::new()?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let app = App {
        conn: Connection::open(&f.db)?,
        snapshots: f.m.clone(),
    };
    app.conn.execute_batch("PRAGMA foreign_keys = ON")?;
    assert_eq!(app.delete_measure(42)?, 1);
    // Unrelated changes made later, that the undo must leave alone.
    app.conn.execute_batch(
        "DELETE FROM measure WHERE id = 41;
         UPDATE measure SET name = 'kept' WHERE id = 1;",
    )?;
    assert_eq!(f.rows("measure_area_priority")?.len(), 96);
    // The priorities alone cannot come back: their measures are gone. The foreign key is
    // checked at commit, and the failure names the row.
    let p_now = f.rows("measure_area_priority")?;
    let latest =
        f.m.list(&ListFilter::new().limit(1))?
            .pop()
            .context("a snapshot")?;
    match f
        .m
        .restore_tables(&latest.snapshot_id, &["measure_area_priority"], &merge())
    {
        Err(Error::TableRestoreFailed {
            table,
            detail,
            safety_snapshot,
            ..
        }) => {
            assert_eq!(table, None, "the commit failed");
            assert!(detail.contains("FOREIGN KEY"), "{detail}");
            assert!(
                detail.contains(
                    "\"measure_area_priority\" refers to a row missing from table \"measure\""
                ),
                "{detail}"
            );
            assert!(safety_snapshot.is_some());
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    }
    assert_eq!(f.rows("measure_area_priority")?, p_now);
    let record =
        f.m.list(&ListFilter::new().entity_type("measure").entity_id(42))?
            .pop()
            .context("the call's snapshot")?;
    assert_eq!(record.outcome, Outcome::Committed);
    let id = record.snapshot_id;

    let dry = f.m.undo_with(&id, &priorities().dry_run(true))?;
    assert_eq!(
        (dry.entity_type.as_str(), dry.entity_id.as_str()),
        ("measure", "42")
    );
    assert_eq!(dry.tables.len(), 2);
    assert_eq!((dry.tables[0].inserted, dry.tables[1].inserted), (1, 2));
    assert!(dry.safety_snapshot.is_none());
    assert_eq!(f.rows("measure_area_priority")?.len(), 96);

    let r = f.m.undo_with(&id, &priorities())?;
    assert_eq!(r.tables, dry.tables);
    assert_eq!((r.inserted(), r.updated(), r.conflicts_total), (3, 0, 0));
    assert!(r.safety_snapshot.is_some());
    let measures = f.rows("measure")?;
    let row = |rows: &[Vec<Sql>], k: i64| rows.iter().find(|r| r[0] == Sql::Integer(k)).cloned();
    assert_eq!(row(&measures, 42), row(&m0, 42));
    assert_eq!(row(&measures, 41), None, "only the entity comes back");
    assert_eq!(
        row(&measures, 1).map(|r| r[1].clone()),
        Some(Sql::Text("kept".into()))
    );
    let p: Vec<_> = f
        .rows("measure_area_priority")?
        .into_iter()
        .filter(|r| r[1] == Sql::Integer(42))
        .collect();
    let p_expected: Vec<_> = p0
        .into_iter()
        .filter(|r| r[1] == Sql::Integer(42))
        .collect();
    assert_eq!(p, p_expected);

    let d = f.m.compare(&id, "measure", &CompareOptions::new())?;
    assert_eq!((d.removed, d.changed, d.added), (1, 1, 0));
    assert_eq!(keys(&d, DiffKind::Removed), BTreeSet::from([41]));
    let d =
        f.m.compare(&id, "measure_area_priority", &CompareOptions::new())?;
    assert_eq!((d.removed, d.changed, d.added), (2, 0, 0));

    // Undoing again finds nothing to do.
    let again = f.m.undo_with(&id, &priorities())?;
    assert_eq!((again.inserted(), again.updated()), (0, 0));

    // Without the cascade declared, only the entity's own table is restored.
    assert_eq!(app.delete_measure(42)?, 1);
    let second =
        f.m.list(
            &ListFilter::new()
                .entity_id(42)
                .operation_type("delete")
                .limit(1),
        )?
        .pop()
        .context("second snapshot")?;
    let r = f.m.undo(&second.snapshot_id)?;
    assert_eq!(r.tables.len(), 1);
    assert_eq!(r.inserted(), 1);
    assert_eq!(f.rows("measure_area_priority")?.len(), 96);
    Ok(())
}

#[test]
fn undo_refuses_conflicts_unless_forced() -> Result<()> {
    let f = Fixture::new()?;
    let m0 = f.rows("measure")?;
    // A manual snapshot naming an entity can be undone.
    let snap = f.take(SnapshotRequest::new("edit").entity("measure", 42))?;
    assert_eq!(snap.outcome, Outcome::Standalone);
    f.exec(
        "UPDATE measure SET name = 'changed live', cost = 0.5 WHERE id = 42;
         DELETE FROM measure_area_priority WHERE id = 420;",
    )?;
    let edited = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let n = f.count()?;
    match f.m.undo_with(&snap.snapshot_id, &priorities()) {
        Err(e @ Error::UndoConflict { .. }) => {
            let msg = e.to_string();
            let Error::UndoConflict {
                id,
                total,
                conflicts,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((id.as_str(), total), (snap.snapshot_id.as_str(), 1));
            assert_eq!(conflicts.len(), 1);
            let c = &conflicts[0];
            assert_eq!(c.table, "measure");
            assert_eq!(c.key, [Value::Integer(42)]);
            assert_eq!(c.changed_columns, ["name", "cost"]);
            assert_eq!(c.snapshot[1], Value::from("measure 42"));
            assert_eq!(c.live[1], Value::from("changed live"));
            assert!(
                msg.contains("\"measure\" key 42: name, cost changed"),
                "{msg}"
            );
        }
        other => bail!("expected UndoConflict, got {other:?}"),
    }
    assert_eq!(
        (f.rows("measure")?, f.rows("measure_area_priority")?),
        edited
    );
    assert_eq!(f.count()?, n, "a refused undo takes no safety snapshot");

    let dry =
        f.m.undo_with(&snap.snapshot_id, &priorities().force(true).dry_run(true))?;
    assert_eq!(
        (dry.updated(), dry.inserted(), dry.conflicts_total),
        (1, 1, 1)
    );
    assert_eq!(dry.conflicts.len(), 1);
    assert_eq!(
        (f.rows("measure")?, f.rows("measure_area_priority")?),
        edited
    );

    let r =
        f.m.undo_with(&snap.snapshot_id, &priorities().force(true))?;
    assert_eq!((r.updated(), r.inserted()), (1, 1));
    assert_eq!(f.rows("measure")?, m0);
    Ok(())
}

#[test]
fn undo_refuses_what_it_cannot_undo() -> Result<()> {
    let f = Fixture::new()?;
    let refusal = |id: &str| match f.m.undo(id) {
        Err(Error::UndoRefused { reason, .. }) => Ok(reason),
        other => bail!("expected UndoRefused, got {other:?}"),
    };
    let manual = f.take(SnapshotRequest::new("manual"))?;
    assert_eq!(refusal(&manual.snapshot_id)?, UndoRefusal::NoEntity);
    let typed_only = f.take(SnapshotRequest::new("purge").entity_type("measure"))?;
    assert_eq!(refusal(&typed_only.snapshot_id)?, UndoRefusal::NoEntity);

    let call = f.take(
        SnapshotRequest::new("delete")
            .entity("measure", 42)
            .around_call(),
    )?;
    assert_eq!(
        refusal(&call.snapshot_id)?,
        UndoRefusal::NotCommitted(Outcome::Pending)
    );
    f.m.set_outcome(&call.snapshot_id, Outcome::Failed)?;
    assert_eq!(
        refusal(&call.snapshot_id)?,
        UndoRefusal::NotCommitted(Outcome::Failed)
    );
    let msg =
        f.m.undo(&call.snapshot_id)
            .err()
            .context("refused")?
            .to_string();
    assert!(msg.contains("failed"), "{msg}");
    f.m.set_outcome(&call.snapshot_id, Outcome::Committed)?;
    let r = f.m.undo(&call.snapshot_id)?;
    assert_eq!((r.inserted(), r.updated()), (0, 0), "the row is unchanged");

    let absent = f.take(SnapshotRequest::new("delete").entity("measure", 999))?;
    assert_eq!(
        refusal(&absent.snapshot_id)?,
        UndoRefusal::NotInSnapshot {
            table: "measure".into(),
            column: "id".into(),
            entity_id: "999".into()
        }
    );
    let ghost = f.take(SnapshotRequest::new("delete").entity("ghost", 1))?;
    assert!(matches!(
        f.m.undo(&ghost.snapshot_id),
        Err(Error::TableMissing { .. })
    ));

    f.exec("CREATE TABLE pair (a INTEGER, b INTEGER, v TEXT, PRIMARY KEY (a, b)); INSERT INTO pair VALUES (1, 2, 'x');")?;
    let pair = f.take(SnapshotRequest::new("delete").entity("pair", 1))?;
    match f.m.undo(&pair.snapshot_id) {
        Err(Error::NoKey { table, reason }) => {
            assert_eq!(table, "pair");
            assert!(reason.contains("a, b"), "{reason}");
        }
        other => bail!("expected NoKey, got {other:?}"),
    }
    // Mapped to its id column, the composite-keyed entity can be undone.
    f.exec("DELETE FROM pair")?;
    let mapped = UndoOptions::new().entity(EntityMapping::new("pair").column("a"));
    assert_eq!(f.m.undo_with(&pair.snapshot_id, &mapped)?.inserted(), 1);
    assert!(matches!(
        f.m.undo("20260101_000000_000_nope"),
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

#[test]
fn undo_follows_the_entity_mapping_and_text_ids() -> Result<()> {
    let f = Fixture::new()?;
    f.exec(
        "CREATE TABLE \"Equipment Items\" (code TEXT PRIMARY KEY, label TEXT);
         CREATE TABLE equipment_option (id INTEGER PRIMARY KEY, code TEXT, opt TEXT);
         INSERT INTO \"Equipment Items\" VALUES ('a''b ü', 'Lathe'), ('other', 'Mill');
         INSERT INTO equipment_option VALUES (1, 'a''b ü', 'speed'), (2, 'a''b ü', 'feed'), (3, 'other', 'x');",
    )?;
    let before = (f.rows("Equipment Items")?, f.rows("equipment_option")?);
    let snap = f.take(SnapshotRequest::new("delete").entity("equipment", "a'b ü"))?;
    f.exec(
        "DELETE FROM \"Equipment Items\" WHERE code = 'a''b ü';
         DELETE FROM equipment_option WHERE code = 'a''b ü';",
    )?;
    let options = UndoOptions::new().entity(
        EntityMapping::new("equipment")
            .table("Equipment Items")
            .column("code")
            .cascade(Cascade::new("equipment_option", "code")),
    );
    let r = f.m.undo_with(&snap.snapshot_id, &options)?;
    assert_eq!(r.inserted(), 3);
    assert_eq!(
        (f.rows("Equipment Items")?, f.rows("equipment_option")?),
        before
    );
    Ok(())
}

/// The mapping set once on the manager serves every undo; one in the options wins for its call.
#[test]
fn the_managers_entity_mapping_serves_plain_undo() -> Result<()> {
    let f = Fixture::new()?;
    f.exec(
        "CREATE TABLE kit (code TEXT PRIMARY KEY, label TEXT);
         CREATE TABLE kit_part (id INTEGER PRIMARY KEY, kit_code TEXT, part TEXT);
         INSERT INTO kit VALUES ('k1', 'Lathe'), ('k2', 'Mill');
         INSERT INTO kit_part VALUES (1, 'k1', 'chuck'), (2, 'k1', 'bed'), (3, 'k2', 'x');",
    )?;
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&f.db))
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::persistent())
        .entity(EntityMapping::new("equipment").table("kit").column("code"))
        .entity(
            EntityMapping::new("equipment")
                .table("kit")
                .column("code")
                .cascade(Cascade::new("kit_part", "kit_code")),
        )
        .build()?;
    let before = (f.rows("kit")?, f.rows("kit_part")?);
    let snap = m
        .snapshot(SnapshotRequest::new("delete").entity("equipment", "k1"))?
        .into_record()
        .context("enabled")?;
    f.exec("DELETE FROM kit_part WHERE kit_code = 'k1'; DELETE FROM kit WHERE code = 'k1';")?;
    // A per-call mapping without the cascade wins: only the kit row comes back.
    let only_kit = UndoOptions::new()
        .dry_run(true)
        .entity(EntityMapping::new("equipment").table("kit").column("code"));
    assert_eq!(m.undo_with(&snap.snapshot_id, &only_kit)?.inserted(), 1);
    // The manager's mapping (the later of the two for one entity) brings the parts too.
    assert_eq!(m.undo(&snap.snapshot_id)?.inserted(), 3);
    assert_eq!((f.rows("kit")?, f.rows("kit_part")?), before);
    Ok(())
}

#[test]
fn other_sources_are_refused_with_typed_errors() -> Result<()> {
    let f = Fixture::new()?;
    let files = SnapshotManager::builder()
        .source(FileSource::new(&f.db))
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::persistent())
        .build()?;
    let raw = files
        .snapshot(SnapshotRequest::new("delete").entity("measure", 42))?
        .into_record()
        .context("taken")?;
    match files.preview(&raw.snapshot_id, "measure", 0, 1) {
        Err(Error::Unsupported { operation, kind }) => {
            assert_eq!((operation, kind.as_str()), ("preview", "file"));
        }
        other => bail!("expected Unsupported, got {other:?}"),
    }
    assert!(matches!(
        files.undo(&raw.snapshot_id),
        Err(Error::Unsupported { .. })
    ));
    // The SQLite manager sharing the store will not compare a file snapshot with its database.
    assert!(matches!(
        f.m.compare(&raw.snapshot_id, "measure", &CompareOptions::new()),
        Err(Error::WrongEngine { .. })
    ));
    Ok(())
}

#[test]
fn a_damaged_snapshot_is_refused_before_anything_is_read() -> Result<()> {
    let f = Fixture::new()?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    let blob = f.store.join(&snap.blob_key);
    let mut bytes = std::fs::read(&blob)?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes)?;
    ensure!(matches!(
        f.m.preview(&snap.snapshot_id, "measure", 0, 1),
        Err(Error::ChecksumMismatch { .. })
    ));
    ensure!(matches!(
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &merge()),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert_eq!(f.count()?, 1);
    Ok(())
}

#[test]
fn without_rowid_and_keyless_tables_replace_and_merge() -> Result<()> {
    let f = Fixture::new()?;
    f.exec(
        "CREATE TABLE w (a TEXT, b INTEGER, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
         INSERT INTO w VALUES ('x', 1, 'one'), ('x', 2, NULL), ('y', 1, 3.5);",
    )?;
    let (w0, log0) = (f.rows("w")?, f.rows("log")?);
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM w WHERE b = 2; UPDATE w SET v = 'uno' WHERE a = 'x'; INSERT INTO w VALUES ('z', 9, 0);
         DELETE FROM log WHERE at = 't2'; INSERT INTO log VALUES ('t9', 'new'); UPDATE log SET msg = 'A' WHERE at = 't1';",
    )?;
    let r = f.m.restore_tables(&snap.snapshot_id, &["w"], &replace())?;
    assert_eq!((r.inserted(), r.updated(), r.deleted()), (1, 1, 1));
    assert_eq!(f.rows("w")?, w0);
    let keyed = replace().key("log", ["at"]);
    let dry =
        f.m.restore_tables(&snap.snapshot_id, &["log"], &keyed.clone().dry_run(true))?;
    let r = f.m.restore_tables(&snap.snapshot_id, &["log"], &keyed)?;
    assert_eq!(r.tables, dry.tables);
    assert_eq!(r.tables[0].key, ["at"]);
    assert_eq!((r.inserted(), r.updated(), r.deleted()), (1, 1, 1));
    assert_eq!(f.rows("log")?, log0);
    Ok(())
}

#[test]
fn rollback_journal_databases_work_too() -> Result<()> {
    let f = Fixture::with_journal("DELETE")?;
    let m0 = f.rows("measure")?;
    let app = App {
        conn: Connection::open(&f.db)?,
        snapshots: f.m.clone(),
    };
    app.conn.execute_batch("PRAGMA foreign_keys = ON")?;
    app.delete_measure(7)?;
    let id =
        f.m.list(&ListFilter::new().entity_id(7))?
            .pop()
            .context("the call's snapshot")?
            .snapshot_id;
    let r = f.m.undo_with(&id, &priorities())?;
    assert_eq!(r.inserted(), 3);
    let safety = r.safety_snapshot.context("safety snapshot")?;
    assert!(f.m.verify(&safety)?.engine_checked);
    assert_eq!(f.rows("measure")?, m0);
    f.exec("UPDATE measure SET cost = NULL")?;
    let r = f.m.restore_tables(&id, &["measure"], &replace())?;
    assert_eq!(r.updated(), MEASURES as u64);
    assert_eq!(f.rows("measure")?, m0);
    assert!(!f.db.with_extension("db-journal").exists());
    Ok(())
}
