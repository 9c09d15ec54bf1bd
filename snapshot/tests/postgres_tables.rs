//! Snapshots and record-level restore against a real PostgreSQL server: consistent bundles,
//! preview, compare, table restore (replace and merge), whole restore and undo — round trips,
//! exact types, odd names, schema drift, bad input, a restore failing midway, unreachable
//! servers and refused users.
//!
//! The server comes from `SNAPSHOT_TEST_PG_URL` (a superuser URL; `./scripts/test` starts a
//! throwaway cluster and sets it). Each test works in a database of its own, created and
//! dropped by the test, so tests run in parallel.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail, ensure};
use postgres::{Client, NoTls};
use snapshot::table::{
    Cascade, CompareOptions, DiffKind, EntityMapping, RestoreMode, TableRestoreOptions,
    UndoOptions, UndoRefusal, Value,
};
use snapshot::{
    CheckLevel, Environment, Error, ListFilter, LocalStore, Outcome, PostgresSource,
    RestoreOptions, SnapshotManager, SnapshotRecord, SnapshotRequest, with_snapshot,
};

const MEASURES: i64 = 50;

/// The test server's URL.
fn server_url() -> Result<String> {
    match std::env::var("SNAPSHOT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => bail!(
            "SNAPSHOT_TEST_PG_URL is not set: run ./scripts/test (it installs PostgreSQL when \
             absent and starts a throwaway cluster), or set SNAPSHOT_TEST_PG_URL to a superuser \
             URL of a server these tests may create databases on"
        ),
    }
}

/// A key/value connection string for `url`'s server with another database or user.
fn conninfo(url: &str, dbname: &str, user: Option<&str>) -> Result<String> {
    let config: postgres::Config = url.parse()?;
    let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut s = String::new();
    for h in config.get_hosts() {
        let h = match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        s.push_str(&format!("host={} ", q(&h)));
    }
    if let Some(p) = config.get_ports().first() {
        s.push_str(&format!("port={p} "));
    }
    let user = user.or(config.get_user()).unwrap_or("postgres");
    s.push_str(&format!("user={} dbname={}", q(user), q(dbname)));
    if let Some(pw) = config.get_password() {
        s.push_str(&format!(" password={}", q(&String::from_utf8_lossy(pw))));
    }
    Ok(s)
}

/// A database of its own for one test, dropped afterwards.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    fn new(tag: &str) -> Result<TestDb> {
        let admin = server_url()?;
        let name = format!(
            "snap_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = Client::connect(&admin, NoTls)
            .context("cannot connect to SNAPSHOT_TEST_PG_URL (is the test server running?)")?;
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        let url = conninfo(&admin, &name, None)?;
        Ok(TestDb { admin, name, url })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

struct Fixture {
    m: SnapshotManager,
    store: PathBuf,
    _dir: tempfile::TempDir,
    db: TestDb,
}

impl Fixture {
    /// 50 measures, two area priorities each (foreign key, cascading deletes), a table
    /// without key, a view.
    fn new(tag: &str) -> Result<Self> {
        let db = TestDb::new(tag)?;
        let mut c = Client::connect(&db.url, NoTls)?;
        c.batch_execute(&format!(
            "CREATE TABLE measure (id integer PRIMARY KEY, name text NOT NULL,
                                   cost double precision, note text, data bytea);
             CREATE TABLE measure_area_priority (
                 id integer PRIMARY KEY,
                 measure_id integer NOT NULL REFERENCES measure(id) ON DELETE CASCADE,
                 area text NOT NULL, priority integer);
             CREATE TABLE log (at text, msg text);
             CREATE VIEW cheap AS SELECT * FROM measure WHERE cost < 10;
             INSERT INTO measure
                 SELECT i, 'measure ' || i, i * 1.5,
                        CASE WHEN i % 2 = 1 THEN 'note ' || i END,
                        decode(repeat(lpad(to_hex(i), 2, '0'), 3), 'hex')
                 FROM generate_series(1, {MEASURES}) i;
             INSERT INTO measure_area_priority
                 SELECT i * 10 + k, i, CASE k WHEN 0 THEN 'north' ELSE 'south' END, k + 1
                 FROM generate_series(1, {MEASURES}) i, generate_series(0, 1) k;
             INSERT INTO log VALUES ('t1', 'a'), ('t2', 'b'), ('t3', 'c');"
        ))?;
        let dir = tempfile::tempdir()?;
        let store = dir.path().join("backups");
        let m = SnapshotManager::builder()
            .source(PostgresSource::new(&db.url)?)
            .store(LocalStore::open(&store)?)
            .environment(Environment::persistent())
            .build()?;
        Ok(Fixture {
            m,
            store,
            _dir: dir,
            db,
        })
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.db.url, NoTls)?)
    }

    fn exec(&self, sql: &str) -> Result<()> {
        self.client()?.batch_execute(sql)?;
        Ok(())
    }

    /// Every row of `table` as the server writes it (`row::text`: exact for every type),
    /// sorted.
    fn rows(&self, table: &str) -> Result<Vec<String>> {
        let q = format!("\"{}\"", table.replace('"', "\"\""));
        let mut c = self.client()?;
        c.batch_execute("SET extra_float_digits = 3; SET TimeZone = 'UTC'")?;
        let rows = c.query(
            &format!("SELECT (r__.*)::text FROM {q} r__ ORDER BY 1"),
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
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

impl snapshot::testing::table::TableFixture for Fixture {
    fn manager(&self) -> &SnapshotManager {
        &self.m
    }

    fn exec(&self, sql: &str) -> snapshot::testing::Check {
        Fixture::exec(self, sql).map_err(|e| snapshot::testing::Failure(format!("{e:#}")))
    }

    /// Every row of `table` by its column types (integers, floats, text, bytea, booleans;
    /// anything else as its text), sorted by the whole row.
    fn rows(&self, table: &str) -> Result<Vec<Vec<Value>>, snapshot::testing::Failure> {
        use postgres::types::Type;
        let fail = |e: postgres::Error| snapshot::testing::Failure(e.to_string());
        let q = format!("\"{}\"", table.replace('"', "\"\""));
        let mut c = self
            .client()
            .map_err(|e| snapshot::testing::Failure(format!("{e:#}")))?;
        let rows = c
            .query(&format!("SELECT r__.* FROM {q} r__ ORDER BY r__"), &[])
            .map_err(fail)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut values = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let v = match *col.type_() {
                    Type::INT2 => r
                        .try_get::<_, Option<i16>>(i)
                        .map(|v| v.map(i64::from))
                        .map(Value::from),
                    Type::INT4 => r
                        .try_get::<_, Option<i32>>(i)
                        .map(|v| v.map(i64::from))
                        .map(Value::from),
                    Type::INT8 => r.try_get::<_, Option<i64>>(i).map(Value::from),
                    Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).map(Value::from),
                    Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i).map(Value::from),
                    Type::BOOL => r
                        .try_get::<_, Option<bool>>(i)
                        .map(|v| v.map(i64::from))
                        .map(Value::from),
                    _ => r.try_get::<_, Option<String>>(i).map(Value::from),
                }
                .map_err(fail)?;
                values.push(v);
            }
            out.push(values);
        }
        Ok(out)
    }
}

/// The table-engine conformance suite on a database of the test server.
mod conformance {
    fn fixture() -> Box<dyn snapshot::testing::table::TableFixture> {
        Box::new(super::Fixture::new("suite").expect("a PostgreSQL fixture"))
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
fn a_snapshot_is_one_verified_bundle_of_every_table() -> Result<()> {
    let f = Fixture::new("bundle")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    assert_eq!(snap.source_kind, "postgres");
    assert!(snap.blob_key.ends_with(".pgbundle"), "{}", snap.blob_key);
    assert!(
        snap.source_path.starts_with("postgres://") && !snap.source_path.contains("password"),
        "{}",
        snap.source_path
    );
    let blob = f.store.join(&snap.blob_key);
    f.m.source().check_image(&blob, CheckLevel::Full)?;
    assert!(f.m.verify(&snap.snapshot_id)?.engine_checked);
    assert_eq!(
        f.m.snapshot_tables(&snap.snapshot_id)?,
        ["log", "measure", "measure_area_priority"]
    );
    // A chosen list of tables, in another schema.
    f.exec(
        "CREATE SCHEMA inv; CREATE TABLE inv.item (id bigint PRIMARY KEY, label text);
         CREATE TABLE inv.other (x int); INSERT INTO inv.item VALUES (1, 'one');",
    )?;
    let source = PostgresSource::new(&f.db.url)?
        .schema("inv")
        .tables(["item"]);
    assert_eq!(source.schema_name(), "inv");
    let m = SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(f.store.join("inv"))?)
        .environment(Environment::persistent())
        .build()?;
    let inv = m
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("taken")?;
    assert!(
        inv.source_path.ends_with("?schema=inv"),
        "{}",
        inv.source_path
    );
    assert_eq!(m.snapshot_tables(&inv.snapshot_id)?, ["item"]);
    let page = m.preview(&inv.snapshot_id, "item", 0, 10)?;
    assert_eq!(page.rows, [vec![Value::Integer(1), Value::from("one")]]);
    // A damaged bundle is refused by its engine check, whatever its checksum.
    let bad = f.store.join("damaged.pgbundle");
    let mut bytes = std::fs::read(&blob)?;
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&bad, &bytes)?;
    ensure!(matches!(
        f.m.source().check_image(&bad, CheckLevel::Header),
        Err(Error::NotADatabase { .. })
    ));
    // Missing tables and schemas are typed errors, and nothing is stored.
    let missing = SnapshotManager::builder()
        .source(PostgresSource::new(&f.db.url)?.tables(["measure", "nope"]))
        .store(LocalStore::open(f.store.join("missing"))?)
        .environment(Environment::persistent())
        .build()?;
    match missing.snapshot(SnapshotRequest::new("manual")) {
        Err(Error::TableMissing { table, location }) => {
            assert_eq!(table, "nope");
            assert!(location.contains("postgres://"), "{location}");
        }
        other => bail!("expected TableMissing, got {other:?}"),
    }
    let no_schema = SnapshotManager::builder()
        .source(PostgresSource::new(&f.db.url)?.schema("nowhere"))
        .store(LocalStore::open(f.store.join("missing"))?)
        .environment(Environment::persistent())
        .build()?;
    ensure!(matches!(
        no_schema.snapshot(SnapshotRequest::new("manual")),
        Err(Error::SourceMissing { .. })
    ));
    assert!(missing.list(&ListFilter::new())?.is_empty());
    let view = SnapshotManager::builder()
        .source(PostgresSource::new(&f.db.url)?.tables(["cheap"]))
        .store(LocalStore::open(f.store.join("missing"))?)
        .environment(Environment::persistent())
        .build()?;
    match view.snapshot(SnapshotRequest::new("manual")) {
        Err(Error::InvalidInput { reason, .. }) => assert!(reason.contains("a view"), "{reason}"),
        other => bail!("expected InvalidInput, got {other:?}"),
    }
    Ok(())
}

/// A source wrapping a `PostgresSource`, forwarding its record-level side or not.
#[derive(Debug)]
struct Wrapped {
    inner: PostgresSource,
    forward: bool,
}

impl snapshot::Source for Wrapped {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn path(&self) -> &std::path::Path {
        self.inner.path()
    }
    fn extension(&self) -> &str {
        self.inner.extension()
    }
    fn capture(&self, dest: &std::path::Path) -> snapshot::Result<()> {
        self.inner.capture(dest)
    }
    fn check_image(&self, image: &std::path::Path, level: CheckLevel) -> snapshot::Result<()> {
        self.inner.check_image(image, level)
    }
    fn prepare_replace(&self) -> snapshot::Result<()> {
        self.inner.prepare_replace()
    }
    fn begin_restore(
        &self,
        image: &std::path::Path,
        snapshot_id: &str,
    ) -> snapshot::Result<Option<Box<dyn snapshot::source::Replacement + '_>>> {
        self.inner.begin_restore(image, snapshot_id)
    }
    fn restore_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.restore_dir()
    }
    fn open_tables(
        &self,
        image: &std::path::Path,
        write: bool,
    ) -> snapshot::Result<snapshot::table::TableSession> {
        if self.forward {
            self.inner.open_tables(image, write)
        } else {
            Err(Error::Unsupported {
                operation: "record-level restore",
                kind: self.kind().to_string(),
            })
        }
    }
}

/// The table engine connects with the settings of the manager's own source object (no
/// process-wide registry of locations): a wrapper that forwards `open_tables` works, one that
/// hides the source's sessions is refused with a typed error naming it.
#[test]
fn the_table_engine_connects_through_the_managers_source() -> Result<()> {
    let f = Fixture::new("wrapped")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM measure_area_priority WHERE measure_id = 3; DELETE FROM measure WHERE id = 3",
    )?;
    for forward in [true, false] {
        let m = SnapshotManager::builder()
            .source(Wrapped {
                inner: PostgresSource::new(&f.db.url)?,
                forward,
            })
            .store(LocalStore::open(&f.store)?)
            .environment(Environment::persistent())
            .build()?;
        // A preview reads the bundle alone: no connection needed either way.
        assert_eq!(
            m.preview(&snap.snapshot_id, "measure", 0, 1)?.total_rows,
            50
        );
        match m.compare(&snap.snapshot_id, "measure", &CompareOptions::new()) {
            Ok(d) if forward => assert_eq!(d.removed, 1),
            Err(Error::InvalidInput { field, reason }) if !forward => {
                assert_eq!(field, "source");
                assert!(reason.contains("open_tables"), "{reason}");
                assert!(
                    reason.contains(&*f.m.source().path().to_string_lossy()),
                    "{reason}"
                );
            }
            other => bail!("forward {forward}: unexpected {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn delete_compare_merge_replace_round_trip() -> Result<()> {
    let f = Fixture::new("round")?;
    let before = f.rows("measure")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    // Triggers added after the snapshot record every write the restores make.
    f.exec(
        "CREATE TABLE audit (op text, id integer);
         CREATE FUNCTION audit_measure() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF TG_OP = 'DELETE' THEN INSERT INTO audit VALUES ('d', OLD.id); RETURN OLD; END IF;
           INSERT INTO audit VALUES (lower(left(TG_OP, 1)), NEW.id); RETURN NEW;
         END $$;
         CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON measure
             FOR EACH ROW EXECUTE FUNCTION audit_measure();
         DELETE FROM measure WHERE id IN (3, 17, 42);
         UPDATE measure SET name = 'renamed', cost = NULL WHERE id = 7;
         INSERT INTO measure VALUES (100, 'new', 1.0, NULL, NULL);
         DELETE FROM audit;",
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
        changed.snapshot.as_ref().map(|r| r[1].clone()),
        Some(Value::from("measure 7"))
    );
    assert_eq!(
        changed.live.as_ref().map(|r| r[2].clone()),
        Some(Value::Null)
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
    let r =
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &merge())?;
    assert_eq!(r.tables, dry.tables);
    let safety = r.safety_snapshot.clone().context("a safety snapshot")?;
    let safety_record = f.m.get(&safety)?;
    assert!(safety_record.is_safety() && !safety_record.pinned);
    let mut audit: Vec<(String, i32)> = f
        .client()?
        .query("SELECT op, id FROM audit ORDER BY op, id", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    audit.sort();
    let expected: Vec<(String, i32)> = vec![
        ("i".into(), 3),
        ("i".into(), 17),
        ("i".into(), 42),
        ("u".into(), 7),
    ];
    assert_eq!(audit, expected, "only the differing rows were written");
    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!((d.added, d.removed, d.changed), (1, 0, 0));
    // The safety snapshot holds the state before the merge.
    let back = f.m.compare(&safety, "measure", &CompareOptions::new())?;
    assert_eq!((back.added, back.removed, back.changed), (3, 0, 1));

    // Replace: the table becomes the snapshot's, row for row.
    let r =
        f.m.restore_tables(&snap.snapshot_id, &["measure"], &replace())?;
    assert_eq!((r.inserted(), r.updated(), r.deleted()), (0, 0, 1));
    assert_eq!(f.rows("measure")?, before);
    assert!(
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?
            .is_identical()
    );
    Ok(())
}

#[test]
fn replace_restores_several_tables_row_for_row_and_moves_sequences() -> Result<()> {
    let f = Fixture::new("replace")?;
    f.exec(
        "CREATE TABLE counter (id serial PRIMARY KEY, v text);
         CREATE TABLE ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text,
                             twice bigint GENERATED ALWAYS AS (id * 2) STORED);
         INSERT INTO counter (v) SELECT 'c' || i FROM generate_series(1, 5) i;
         INSERT INTO ident (v) SELECT 'i' || i FROM generate_series(1, 5) i;",
    )?;
    let tables = ["measure", "measure_area_priority", "counter", "ident"];
    let before: Vec<Vec<String>> = tables.iter().map(|t| f.rows(t)).collect::<Result<_>>()?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM measure WHERE id > 40;
         UPDATE measure_area_priority SET priority = 0 WHERE id % 3 = 0;
         INSERT INTO measure VALUES (99, 'x', NULL, NULL, NULL);
         INSERT INTO measure_area_priority VALUES (990, 99, 'east', 1);
         TRUNCATE counter; SELECT setval('counter_id_seq', 1, false);
         DELETE FROM ident WHERE id > 2; ALTER TABLE ident ALTER COLUMN id RESTART WITH 1;",
    )?;
    let r = f.m.restore_tables(&snap.snapshot_id, &tables, &replace())?;
    assert_eq!(r.tables.len(), 4);
    assert_eq!(
        (r.tables[0].inserted, r.tables[0].deleted),
        (10, 1),
        "measure"
    );
    assert_eq!(r.tables[2].inserted, 5, "counter");
    assert_eq!(r.tables[3].inserted, 3, "ident");
    let after: Vec<Vec<String>> = tables.iter().map(|t| f.rows(t)).collect::<Result<_>>()?;
    assert_eq!(after, before);
    // New rows take ids after the restored ones.
    let mut c = f.client()?;
    let next: i32 = c
        .query_one("INSERT INTO counter (v) VALUES ('next') RETURNING id", &[])?
        .get(0);
    assert_eq!(next, 6);
    let next: i64 = c
        .query_one("INSERT INTO ident (v) VALUES ('next') RETURNING id", &[])?
        .get(0);
    assert_eq!(next, 6);
    Ok(())
}

#[test]
fn a_whole_restore_replaces_every_table_of_the_snapshot_in_one_transaction() -> Result<()> {
    let f = Fixture::new("whole")?;
    let names = ["measure", "measure_area_priority", "log"];
    let before: Vec<Vec<String>> = names.iter().map(|t| f.rows(t)).collect::<Result<_>>()?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "CREATE TABLE later (id int PRIMARY KEY); INSERT INTO later VALUES (1);
         DELETE FROM measure WHERE id <= 10;
         UPDATE measure SET note = 'x';
         INSERT INTO measure VALUES (77, 'new', 1, NULL, NULL);
         INSERT INTO measure_area_priority VALUES (770, 77, 'west', 3);
         DELETE FROM log; INSERT INTO log VALUES ('t4', 'd');",
    )?;
    // `log` has no key: a whole restore replaces it whole (every row deleted, every row of
    // the snapshot inserted); only merge and undo need a key.
    let n = f.count()?;
    let dry =
        f.m.restore_with(&snap.snapshot_id, &RestoreOptions::new().dry_run(true))?;
    assert!(dry.dry_run && dry.safety_snapshot.is_none());
    assert!(
        dry.steps
            .iter()
            .any(|s| s.starts_with("would replace table \"log\": 3 inserted")),
        "{:?}",
        dry.steps
    );
    assert_eq!(f.rows("log")?, ["(t4,d)"]);
    assert_eq!(f.count()?, n, "neither took a safety snapshot");
    let r = f.m.restore(&snap.snapshot_id)?;
    assert_eq!(
        r.target.to_string_lossy(),
        f.m.source().path().to_string_lossy()
    );
    let safety = r.safety_snapshot.context("a safety snapshot")?;
    assert_eq!(f.count()?, n + 1);
    assert!(
        r.steps.iter().any(|s| s.contains("\"measure\"")),
        "{:?}",
        r.steps
    );
    assert!(
        r.steps
            .iter()
            .any(|s| s == "replaced table \"log\": 3 inserted, 0 updated, 1 deleted"),
        "{:?}",
        r.steps
    );
    let after: Vec<Vec<String>> = names.iter().map(|t| f.rows(t)).collect::<Result<_>>()?;
    assert_eq!(after, before);
    assert_eq!(f.rows("later")?, ["(1)"], "tables the snapshot lacks stay");
    // And back again, from the safety snapshot.
    f.m.restore(&safety)?;
    assert_eq!(f.rows("log")?, ["(t4,d)"]);
    Ok(())
}

#[test]
fn values_keep_their_exact_types() -> Result<()> {
    let f = Fixture::new("types")?;
    f.exec(
        r#"CREATE TABLE typed (
             id integer PRIMARY KEY, n numeric(30,10), ts timestamptz, t timestamp, d date,
             iv interval, b bytea, big bigint, flag boolean, j jsonb, js json, u text,
             f double precision, r real, arr integer[], uid uuid, vc varchar(20), p point);
           INSERT INTO typed VALUES
             (0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                 NULL, NULL, NULL, NULL),
             (1, 12345678901234567890.0123456789, '2026-11-23 10:15:00.123456+05:30',
                 '1999-12-31 23:59:59.999999', '0001-01-01', '1 year 2 mons 3 days 04:05:06.7',
                 '\x00ff0a5c', -9223372036854775808, true,
                 '{"b": [1, 2.50, null], "a": "é"}', '{"keep":  "spacing" }',
                 E'naïve 日本語 🦀 e\u0301 tab\there\nnewline \\ backslash',
                 0.1, 3.4028235e38, '{1,NULL,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
                 'it''s "quoted"', '(1.5,-2)'),
             (2, -0.0000000001, 'infinity', '-infinity', 'infinity', '-1 day', '\x',
                 9223372036854775807, false, '[]', '""', '', 'NaN', '-Infinity', '{}',
                 '00000000-0000-0000-0000-000000000000', '', '(0,0)'),
             (3, 1.5, '1970-01-01 00:00:00+00', '2000-02-29 12:00', '2000-02-29', '0',
                 decode(repeat('ab', 5000), 'hex'), 0, NULL, 'null', 'null', '\N',
                 9007199254740993, -0.0, NULL, NULL, 'x', NULL);"#,
    )?;
    let expected = f.rows("typed")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;

    // The preview shows the same values: integers, floats, booleans (1/0) and bytes in their
    // own classes, everything else as the server writes it.
    let page = f.m.preview(&snap.snapshot_id, "typed", 0, 100)?;
    assert_eq!(page.total_rows, 4);
    let row = |i: usize| &page.rows[i];
    assert!(row(0)[1..].iter().all(Value::is_null));
    assert_eq!(row(1)[1], Value::from("12345678901234567890.0123456789"));
    assert_eq!(row(1)[2], Value::from("2026-11-23 04:45:00.123456+00"));
    assert_eq!(row(1)[6], Value::Blob(vec![0, 255, 10, 92]));
    assert_eq!(row(1)[7], Value::Integer(i64::MIN));
    assert_eq!(row(2)[7], Value::Integer(i64::MAX));
    assert_eq!(row(1)[8], Value::Integer(1));
    assert_eq!(row(2)[8], Value::Integer(0));
    assert_eq!(
        row(1)[9],
        Value::from(r#"{"a": "é", "b": [1, 2.50, null]}"#)
    );
    assert_eq!(row(1)[10], Value::from(r#"{"keep":  "spacing" }"#));
    assert_eq!(
        row(1)[11],
        Value::from("naïve 日本語 🦀 e\u{301} tab\there\nnewline \\ backslash")
    );
    assert_eq!(row(3)[11], Value::from("\\N"));
    assert_eq!(row(1)[12], Value::Real(0.1));
    assert!(matches!(row(2)[12], Value::Real(x) if x.is_nan()));
    assert_eq!(row(2)[13], Value::Real(f64::NEG_INFINITY));
    assert_eq!(row(3)[12], Value::Real(9007199254740992.0));
    assert_eq!(row(1)[14], Value::from("{1,NULL,3}"));
    assert_eq!(row(2)[6], Value::Blob(Vec::new()));
    assert_eq!(row(3)[6].as_bytes().map(<[u8]>::len), Some(5000));

    // Exact text forms: a change of scale, of sign of zero, or of json spacing is a change.
    f.exec(
        "UPDATE typed SET n = 1.50 WHERE id = 3;
         UPDATE typed SET f = 0 WHERE id = 3;
         UPDATE typed SET js = '{\"keep\": \"spacing\"}' WHERE id = 1;
         DELETE FROM typed WHERE id IN (0, 2);",
    )?;
    let d =
        f.m.compare(&snap.snapshot_id, "typed", &CompareOptions::new())?;
    assert_eq!((d.removed, d.changed, d.unchanged), (2, 2, 0));
    assert_eq!(
        d.changed_columns,
        [("js".to_string(), 1), ("f".to_string(), 1)]
    );
    f.exec("UPDATE typed SET n = 1.5000000000 WHERE id = 3")?;
    let r =
        f.m.restore_tables(&snap.snapshot_id, &["typed"], &merge())?;
    assert_eq!((r.inserted(), r.updated()), (2, 2));
    assert_eq!(f.rows("typed")?, expected);
    assert!(
        f.m.compare(&snap.snapshot_id, "typed", &CompareOptions::new())?
            .is_identical()
    );
    Ok(())
}

#[test]
fn preview_pages_in_key_order_without_the_live_tables() -> Result<()> {
    let f = Fixture::new("preview")?;
    let snap = f.take(SnapshotRequest::new("delete").entity("measure", 42))?;
    f.exec("DROP VIEW cheap; DROP TABLE measure_area_priority; DROP TABLE measure;")?;
    let page = f.m.preview(&snap.snapshot_id, "measure", 10, 5)?;
    assert_eq!(page.record, snap);
    assert_eq!(page.total_rows, MEASURES as u64);
    assert_eq!(page.offset, 10);
    let names: Vec<&str> = page.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "name", "cost", "note", "data"]);
    assert_eq!(page.columns[0].primary_key, 1);
    assert_eq!(page.columns[2].declared_type, "double precision");
    assert!(page.columns[1].not_null);
    let ids: Vec<i64> = page.rows.iter().filter_map(|r| r[0].as_i64()).collect();
    assert_eq!(ids, [11, 12, 13, 14, 15]);
    assert_eq!(page.rows[0][3], Value::from("note 11"));
    assert_eq!(page.rows[1][3], Value::Null);
    assert_eq!(page.rows[0][2], Value::Real(16.5));
    assert_eq!(page.rows[0][4], Value::Blob(vec![11; 3]));
    assert!(
        f.m.preview(&snap.snapshot_id, "MEASURE", 100, 5)?
            .rows
            .is_empty()
    );
    let log = f.m.preview(&snap.snapshot_id, "log", 1, 10)?;
    assert_eq!(log.rows.len(), 2);
    match f.m.preview(&snap.snapshot_id, "nothing", 0, 5) {
        Err(Error::TableMissing { table, location }) => {
            assert_eq!(table, "nothing");
            assert!(location.contains(&snap.snapshot_id), "{location}");
        }
        other => bail!("expected TableMissing, got {other:?}"),
    }
    // Even with the server gone, the snapshot can be looked into.
    let offline = SnapshotManager::builder()
        .source(PostgresSource::new(&format!(
            "postgres://nobody@127.0.0.1:{}/none",
            closed_port()?
        ))?)
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::persistent())
        .build()?;
    assert_eq!(
        offline.preview(&snap.snapshot_id, "log", 0, 10)?.rows.len(),
        3
    );
    Ok(())
}

#[test]
fn an_added_column_is_reported_and_merged_by_the_common_columns_only_when_asked() -> Result<()> {
    let f = Fixture::new("added")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "ALTER TABLE measure ADD COLUMN extra text NOT NULL DEFAULT 'x';
         DELETE FROM measure WHERE id = 5;",
    )?;
    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    let added: Vec<&str> = d.drift.added.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(added, ["extra"]);
    assert!(d.drift.removed.is_empty() && d.drift.retyped.is_empty());
    assert_eq!((d.removed, d.changed), (1, 0));

    let before = f.rows("measure")?;
    match f
        .m
        .restore_tables(&snap.snapshot_id, &["measure"], &merge())
    {
        Err(Error::SchemaDrift { table, drift, .. }) => {
            assert_eq!(table, "measure");
            assert_eq!(drift.added.len(), 1);
        }
        other => bail!("expected SchemaDrift, got {other:?}"),
    }
    assert_eq!(f.rows("measure")?, before);
    assert_eq!(f.count()?, 1, "a refused restore takes no safety snapshot");
    let r = f.m.restore_tables(
        &snap.snapshot_id,
        &["measure"],
        &merge().common_columns(true),
    )?;
    assert_eq!(r.inserted(), 1);
    let five: String = f
        .client()?
        .query_one("SELECT name || '/' || extra FROM measure WHERE id = 5", &[])?
        .get(0);
    assert_eq!(five, "measure 5/x");
    Ok(())
}

#[test]
fn removed_and_retyped_columns_are_drift_too() -> Result<()> {
    let f = Fixture::new("retyped")?;
    let snap = f.take(SnapshotRequest::new("delete").entity("measure", 42))?;
    f.exec(
        "DROP VIEW cheap;
         ALTER TABLE measure DROP COLUMN note;
         ALTER TABLE measure_area_priority ALTER COLUMN priority TYPE text;
         ALTER TABLE measure ALTER COLUMN cost TYPE numeric(12,4);
         DELETE FROM measure WHERE id = 42;",
    )?;
    let d =
        f.m.compare(&snap.snapshot_id, "measure", &CompareOptions::new())?;
    assert_eq!(d.drift.removed.len(), 1);
    assert_eq!(d.drift.removed[0].name, "note");
    assert_eq!(d.drift.removed[0].declared_type, "text");
    assert_eq!(d.drift.retyped.len(), 1);
    assert_eq!(
        (
            d.drift.retyped[0].snapshot_type.as_str(),
            d.drift.retyped[0].live_type.as_str()
        ),
        ("double precision", "numeric(12,4)")
    );
    // Retyped values are compared as the live column would hold them: 1.5 is 1.5000.
    assert_eq!((d.removed, d.changed), (1, 0));
    let d = f.m.compare(
        &snap.snapshot_id,
        "measure_area_priority",
        &CompareOptions::new(),
    )?;
    assert_eq!(
        (
            d.drift.retyped[0].name.as_str(),
            d.drift.retyped[0].snapshot_type.as_str(),
            d.drift.retyped[0].live_type.as_str()
        ),
        ("priority", "integer", "text")
    );
    let msg = match f.m.undo_with(&snap.snapshot_id, &priorities()) {
        Err(e @ Error::SchemaDrift { .. }) => e.to_string(),
        other => bail!("expected SchemaDrift, got {other:?}"),
    };
    assert!(msg.contains("removed: \"note\" text"), "{msg}");
    let r =
        f.m.undo_with(&snap.snapshot_id, &priorities().common_columns(true))?;
    assert_eq!((r.tables[0].inserted, r.tables[1].inserted), (1, 2));
    assert!(
        f.rows("measure_area_priority")?
            .contains(&"(420,42,north,1)".to_string())
    );
    assert!(
        f.rows("measure")?
            .iter()
            .any(|r| r.starts_with("(42,\"measure 42\",63.0000,"))
    );
    Ok(())
}

#[test]
fn a_restore_failing_midway_changes_nothing_and_keeps_the_safety_snapshot() -> Result<()> {
    let f = Fixture::new("failing")?;
    let snap = f.take(SnapshotRequest::new("manual"))?;
    f.exec(
        "UPDATE measure_area_priority SET priority = 9;
         DELETE FROM measure WHERE id BETWEEN 10 AND 20;
         UPDATE measure SET name = 'edited' WHERE id = 1;
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'no measure 15 please'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON measure FOR EACH ROW
             WHEN (NEW.id = 15) EXECUTE FUNCTION refuse();",
    )?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let err = f.m.restore_tables(
        &snap.snapshot_id,
        &["measure", "measure_area_priority"],
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
    assert_eq!(f.rows("measure")?, m0);
    assert_eq!(f.rows("measure_area_priority")?, p0);
    let record = f.m.get(&safety)?;
    assert!(record.is_safety() && !record.pinned);
    assert!(f.m.verify(&safety)?.engine_checked);
    let d = f.m.compare(&safety, "measure", &CompareOptions::new())?;
    assert!(d.is_identical());

    // A CHECK constraint fails on a measure. Named after its priorities, measure is still
    // written first (the priorities refer to it): it fails, and nothing is written.
    f.exec(
        "DROP TRIGGER refuse ON measure;
         ALTER TABLE measure ADD CONSTRAINT cheap_only CHECK (cost < 20) NOT VALID;",
    )?;
    match f.m.restore_tables(
        &snap.snapshot_id,
        &["measure_area_priority", "measure"],
        &merge(),
    ) {
        Err(Error::TableRestoreFailed { table, detail, .. }) => {
            assert_eq!(table.as_deref(), Some("measure"));
            assert!(detail.contains("cheap_only"), "{detail}");
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    }
    assert_eq!(f.rows("measure_area_priority")?, p0);
    match f
        .m
        .restore_tables(&snap.snapshot_id, &["measure"], &merge())
    {
        Err(Error::TableRestoreFailed { table, detail, .. }) => {
            assert_eq!(table.as_deref(), Some("measure"));
            assert!(detail.contains("cheap_only"), "{detail}");
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    }
    assert_eq!(f.rows("measure")?, m0);
    assert_eq!(f.rows("measure_area_priority")?, p0);

    // A deferrable foreign key is checked at commit: a failure there names no table.
    f.exec(
        "ALTER TABLE measure DROP CONSTRAINT cheap_only;
         ALTER TABLE measure_area_priority DROP CONSTRAINT measure_area_priority_measure_id_fkey;
         ALTER TABLE measure_area_priority ADD FOREIGN KEY (measure_id) REFERENCES measure(id)
             DEFERRABLE INITIALLY IMMEDIATE;
         DELETE FROM measure_area_priority WHERE measure_id BETWEEN 10 AND 20;",
    )?;
    let p1 = f.rows("measure_area_priority")?;
    match f
        .m
        .restore_tables(&snap.snapshot_id, &["measure_area_priority"], &merge())
    {
        Err(Error::TableRestoreFailed { table, detail, .. }) => {
            assert_eq!(table, None, "the commit failed");
            assert!(
                detail.contains("is not present in table \"measure\""),
                "{detail}"
            );
        }
        other => bail!("expected TableRestoreFailed, got {other:?}"),
    }
    assert_eq!(f.rows("measure_area_priority")?, p1);
    // Named in any order, the restore succeeds.
    let r = f.m.restore_tables(
        &snap.snapshot_id,
        &["measure_area_priority", "measure"],
        &merge(),
    )?;
    assert_eq!(r.tables[0].inserted, 22);
    assert_eq!(r.tables[1].inserted, 11);
    Ok(())
}

/// A database holding only the tables `schema` creates, with a manager on it.
fn bare(tag: &str, schema: &str) -> Result<(TestDb, SnapshotManager, tempfile::TempDir)> {
    let db = TestDb::new(tag)?;
    Client::connect(&db.url, NoTls)?.batch_execute(schema)?;
    let dir = tempfile::tempdir()?;
    let m = SnapshotManager::builder()
        .source(PostgresSource::new(&db.url)?)
        .store(LocalStore::open(dir.path().join("backups"))?)
        .environment(Environment::persistent())
        .build()?;
    Ok((db, m, dir))
}

/// Every row of `table` as text, sorted.
fn all_rows(url: &str, table: &str) -> Result<Vec<String>> {
    let mut c = Client::connect(url, NoTls)?;
    let rows = c.query(
        &format!("SELECT (r__.*)::text FROM {table} r__ ORDER BY 1"),
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Parents and children under a plain `REFERENCES` (NOT DEFERRABLE, checked after every
/// statement). Since the snapshot: parent 5 and its children were deleted (the restore must
/// insert the parent before them), parent 6 was added with children of its own (deleted
/// children first), child 1 moved to parent 6 (parent 6's delete waits for child 1's update),
/// parent 4's children moved to parent 3 and parent 4 was deleted (parent 4 inserted before
/// the children move back), parent 2 renamed. Replace restores it row for row, by tables named
/// in either order and whole; merge in either order.
#[test]
fn plain_foreign_keys_restore_whole_and_by_tables_in_either_order() -> Result<()> {
    let (db, m, _dir) = bare(
        "plainfk",
        "CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL UNIQUE);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent(id),
                             note text);
         INSERT INTO parent SELECT i, 'p' || i FROM generate_series(1, 5) i;
         INSERT INTO child SELECT i, i % 5 + 1, 'c' || i FROM generate_series(1, 20) i;",
    )?;
    let snapshot = |m: &SnapshotManager| -> Result<String> {
        Ok(m.snapshot(SnapshotRequest::new("manual"))?
            .into_record()
            .context("taken")?
            .snapshot_id)
    };
    let id = snapshot(&m)?;
    let before = (all_rows(&db.url, "parent")?, all_rows(&db.url, "child")?);
    let change = || -> Result<()> {
        Client::connect(&db.url, NoTls)?.batch_execute(
            "DELETE FROM child WHERE parent_id = 5; DELETE FROM parent WHERE id = 5;
             INSERT INTO parent VALUES (6, 'p6');
             INSERT INTO child VALUES (21, 6, 'new'), (22, 6, 'new');
             UPDATE child SET parent_id = 6 WHERE id = 1;
             UPDATE child SET parent_id = 3 WHERE parent_id = 4; DELETE FROM parent WHERE id = 4;
             UPDATE parent SET name = 'renamed' WHERE id = 2;",
        )?;
        Ok(())
    };
    let now = || -> Result<(Vec<String>, Vec<String>)> {
        Ok((all_rows(&db.url, "parent")?, all_rows(&db.url, "child")?))
    };
    for names in [["parent", "child"], ["child", "parent"]] {
        change()?;
        let changed = now()?;
        let dry = m.restore_tables(&id, &names, &replace().dry_run(true))?;
        assert_eq!(now()?, changed, "a dry run writes nothing");
        let r = m.restore_tables(&id, &names, &replace())?;
        assert_eq!(now()?, before, "{names:?}");
        let counts: Vec<(&str, u64, u64, u64)> = r
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.inserted, t.updated, t.deleted))
            .collect();
        let mut expected = vec![("parent", 2, 1, 1), ("child", 4, 5, 2)];
        if names[0] == "child" {
            expected.reverse();
        }
        assert_eq!(counts, expected, "the report keeps the order given");
        let planned: Vec<(&str, u64, u64, u64)> = dry
            .tables
            .iter()
            .map(|t| (t.table.as_str(), t.inserted, t.updated, t.deleted))
            .collect();
        assert_eq!(planned, expected, "the dry run counts the same");
    }
    // A whole restore (every table of the snapshot, replaced).
    change()?;
    m.restore(&id)?;
    assert_eq!(now()?, before);
    // Merge, in either order: rows added since stay.
    for names in [["child", "parent"], ["parent", "child"]] {
        change()?;
        m.restore_tables(&id, &names, &merge())?;
        let (parents, children) = now()?;
        assert_eq!(
            parents,
            [before.0.clone(), vec!["(6,p6)".to_string()]].concat()
        );
        let mut expected = before.1.clone();
        expected.extend(["(21,6,new)".to_string(), "(22,6,new)".to_string()]);
        expected.sort();
        assert_eq!(children, expected, "{names:?}");
        Client::connect(&db.url, NoTls)?
            .batch_execute("DELETE FROM child WHERE id > 20; DELETE FROM parent WHERE id = 6")?;
        assert_eq!(now()?, before);
    }
    // Undo of a parent deleted with its children: the parent goes back before them.
    let undo_id = m
        .snapshot(SnapshotRequest::new("delete").entity("parent", 2))?
        .into_record()
        .context("taken")?
        .snapshot_id;
    Client::connect(&db.url, NoTls)?
        .batch_execute("DELETE FROM child WHERE parent_id = 2; DELETE FROM parent WHERE id = 2")?;
    let r = m.undo_with(
        &undo_id,
        &UndoOptions::new()
            .entity(EntityMapping::new("parent").cascade(Cascade::new("child", "parent_id"))),
    )?;
    assert_eq!(r.inserted(), 5);
    assert_eq!(now()?, before);
    Ok(())
}

/// Two tables referring to each other through keys checked after every statement have no
/// order of writes: refused before anything is written (no safety snapshot). With one of the
/// keys DEFERRABLE the other orders the tables, and the whole restore goes through.
#[test]
fn a_cycle_of_strict_foreign_keys_is_refused_and_a_deferrable_one_breaks_it() -> Result<()> {
    let (db, m, _dir) = bare(
        "cyclefk",
        "CREATE TABLE a (id int PRIMARY KEY, b_id int);
         CREATE TABLE b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a(id));
         ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b(id);
         INSERT INTO a VALUES (1, NULL), (2, NULL); INSERT INTO b VALUES (10, 1), (20, 2);
         UPDATE a SET b_id = id * 10;",
    )?;
    let id = m
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("taken")?
        .snapshot_id;
    let before = (all_rows(&db.url, "a")?, all_rows(&db.url, "b")?);
    Client::connect(&db.url, NoTls)?.batch_execute(
        "UPDATE a SET b_id = NULL WHERE id = 2; DELETE FROM b WHERE id = 20; DELETE FROM a WHERE id = 2;",
    )?;
    let changed = (all_rows(&db.url, "a")?, all_rows(&db.url, "b")?);
    let n = m.list(&ListFilter::new())?.len();
    for attempt in [
        m.restore(&id).map(|_| ()),
        m.restore_tables(&id, &["b", "a"], &merge()).map(|_| ()),
        m.restore_tables(&id, &["a", "b"], &replace().dry_run(true))
            .map(|_| ()),
    ] {
        match attempt {
            Err(e @ Error::ForeignKeyCycle { .. }) => {
                let Error::ForeignKeyCycle {
                    tables,
                    constraints,
                } = &e
                else {
                    unreachable!()
                };
                // The cycle, from the first table named: a → b → a or b → a → b.
                let pairs: BTreeSet<(&str, &str)> = tables
                    .iter()
                    .map(String::as_str)
                    .zip(constraints.iter().map(String::as_str))
                    .collect();
                assert_eq!(pairs, BTreeSet::from([("a", "a_b"), ("b", "b_a_id_fkey")]));
                let msg = e.to_string();
                assert!(msg.contains("DEFERRABLE") && msg.contains("a_b"), "{msg}");
            }
            other => bail!("expected ForeignKeyCycle, got {other:?}"),
        }
    }
    assert_eq!((all_rows(&db.url, "a")?, all_rows(&db.url, "b")?), changed);
    assert_eq!(m.list(&ListFilter::new())?.len(), n, "no safety snapshot");
    Client::connect(&db.url, NoTls)?.batch_execute(
        "ALTER TABLE a DROP CONSTRAINT a_b;
         ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b(id) DEFERRABLE;",
    )?;
    m.restore(&id)?;
    assert_eq!((all_rows(&db.url, "a")?, all_rows(&db.url, "b")?), before);
    Ok(())
}

/// The app of the issue: deletes a measure, and the foreign key cascades to its priorities.
struct App {
    conn: Mutex<Client>,
    snapshots: SnapshotManager,
}

impl App {
    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete_measure(&self, id: i64) -> anyhow::Result<u64> {
        let mut c = self.conn.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(c.execute("DELETE FROM measure WHERE id = $1", &[&(id as i32)])?)
    }
}

#[test]
fn undo_puts_back_exactly_the_deleted_entity_and_its_declared_cascade() -> Result<()> {
    let f = Fixture::new("undo")?;
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let app = App {
        conn: Mutex::new(f.client()?),
        snapshots: f.m.clone(),
    };
    assert_eq!(app.delete_measure(42)?, 1);
    // Unrelated changes made later, that the undo must leave alone.
    f.exec("DELETE FROM measure WHERE id = 41; UPDATE measure SET name = 'kept' WHERE id = 1;")?;
    assert_eq!(f.rows("measure_area_priority")?.len(), 96);
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
    assert_eq!((dry.tables[0].inserted, dry.tables[1].inserted), (1, 2));
    assert!(dry.safety_snapshot.is_none());

    let r = f.m.undo_with(&id, &priorities())?;
    assert_eq!(r.tables, dry.tables);
    assert_eq!((r.inserted(), r.updated(), r.conflicts_total), (3, 0, 0));
    let safety = r.safety_snapshot.context("a safety snapshot")?;
    assert!(f.m.verify(&safety)?.engine_checked);
    let measures = f.rows("measure")?;
    let row = |rows: &[String], k: i64| {
        rows.iter()
            .find(|r| r.starts_with(&format!("({k},")))
            .cloned()
    };
    assert_eq!(row(&measures, 42), row(&m0, 42));
    assert_eq!(row(&measures, 41), None, "only the entity comes back");
    assert!(row(&measures, 1).is_some_and(|r| r.contains("kept")));
    let of_42 = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter().filter(|r| r.contains(",42,")).collect()
    };
    assert_eq!(of_42(f.rows("measure_area_priority")?), of_42(p0));
    let d = f.m.compare(&id, "measure", &CompareOptions::new())?;
    assert_eq!((d.removed, d.changed, d.added), (1, 1, 0));
    assert_eq!(keys(&d, DiffKind::Removed), BTreeSet::from([41]));

    // Undoing again finds nothing to do; without the cascade only the entity's table counts.
    let again = f.m.undo_with(&id, &priorities())?;
    assert_eq!((again.inserted(), again.updated()), (0, 0));
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
    assert_eq!((r.tables.len(), r.inserted()), (1, 1));
    assert_eq!(f.rows("measure_area_priority")?.len(), 96);
    Ok(())
}

#[test]
fn undo_refuses_conflicts_and_what_it_cannot_undo() -> Result<()> {
    let f = Fixture::new("conflict")?;
    let m0 = f.rows("measure")?;
    let snap = f.take(SnapshotRequest::new("edit").entity("measure", 42))?;
    f.exec(
        "UPDATE measure SET name = 'changed live', cost = 0.5 WHERE id = 42;
         DELETE FROM measure_area_priority WHERE id = 420;",
    )?;
    let edited = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let n = f.count()?;
    match f.m.undo_with(&snap.snapshot_id, &priorities()) {
        Err(Error::UndoConflict {
            total, conflicts, ..
        }) => {
            assert_eq!(total, 1);
            let c = &conflicts[0];
            assert_eq!(c.table, "measure");
            assert_eq!(c.key, [Value::Integer(42)]);
            assert_eq!(c.changed_columns, ["name", "cost"]);
            assert_eq!(c.snapshot[1], Value::from("measure 42"));
            assert_eq!(c.live[1], Value::from("changed live"));
        }
        other => bail!("expected UndoConflict, got {other:?}"),
    }
    assert_eq!(
        (f.rows("measure")?, f.rows("measure_area_priority")?),
        edited
    );
    assert_eq!(f.count()?, n, "a refused undo takes no safety snapshot");
    let r =
        f.m.undo_with(&snap.snapshot_id, &priorities().force(true))?;
    assert_eq!((r.updated(), r.inserted()), (1, 1));
    assert_eq!(f.rows("measure")?, m0);

    let refusal = |id: &str| match f.m.undo(id) {
        Err(Error::UndoRefused { reason, .. }) => Ok(reason),
        other => bail!("expected UndoRefused, got {other:?}"),
    };
    let manual = f.take(SnapshotRequest::new("manual"))?;
    assert_eq!(refusal(&manual.snapshot_id)?, UndoRefusal::NoEntity);
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
    let absent = f.take(SnapshotRequest::new("delete").entity("measure", 999))?;
    assert!(matches!(
        refusal(&absent.snapshot_id)?,
        UndoRefusal::NotInSnapshot { .. }
    ));
    // An id that is not even a number matches no integer key.
    let odd = f.take(SnapshotRequest::new("delete").entity("measure", "4 2'"))?;
    assert!(matches!(
        refusal(&odd.snapshot_id)?,
        UndoRefusal::NotInSnapshot { .. }
    ));
    Ok(())
}

#[test]
fn undo_follows_the_entity_mapping_and_text_ids() -> Result<()> {
    let f = Fixture::new("mapping")?;
    f.exec(
        "CREATE TABLE \"Equipment Items\" (code text PRIMARY KEY, label text);
         CREATE TABLE equipment_option (id integer PRIMARY KEY, code text, opt text);
         INSERT INTO \"Equipment Items\" VALUES ('a''b ü', 'Lathe'), ('other', 'Mill');
         INSERT INTO equipment_option VALUES (1, 'a''b ü', 'speed'), (2, 'a''b ü', 'feed'),
                                             (3, 'other', 'x');",
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

/// A port on the loopback interface that nothing listens on.
fn closed_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(port)
}

#[test]
fn an_unreachable_server_and_refused_users_are_typed_errors() -> Result<()> {
    let f = Fixture::new("reach")?;
    let port = closed_port()?;
    let source = PostgresSource::new(&format!("postgres://app:pw@127.0.0.1:{port}/db"))?;
    match source.ping() {
        Err(Error::Unreachable {
            engine, address, ..
        }) => {
            assert_eq!(engine, "postgres");
            assert_eq!(address, format!("127.0.0.1:{port}"));
        }
        other => bail!("expected Unreachable, got {other:?}"),
    }
    let dir = tempfile::tempdir()?;
    let m = SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(dir.path())?)
        .environment(Environment::persistent())
        .build()?;
    let e = m
        .snapshot(SnapshotRequest::new("manual"))
        .err()
        .context("no server")?;
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
    assert_eq!(
        std::io::Error::from(e).kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert!(m.list(&ListFilter::new())?.is_empty());

    // A database that does not exist is a missing source, named with its server.
    let admin = server_url()?;
    let nodb = PostgresSource::new(&conninfo(&admin, "no_such_database", None)?)?;
    match nodb.ping() {
        Err(Error::SourceMissing { kind, path }) => {
            assert_eq!(kind, "postgres");
            let p = path.to_string_lossy();
            assert!(
                p.ends_with("/no_such_database") && p.contains("127.0.0.1:"),
                "{p}"
            );
        }
        other => bail!("expected SourceMissing, got {other:?}"),
    }
    // A user the server does not know is refused (the test cluster trusts known users).
    let stranger = PostgresSource::new(&conninfo(&admin, &f.db.name, Some("no_such_user"))?)?;
    match stranger.ping() {
        Err(Error::AccessDenied {
            engine,
            user,
            address,
            detail,
        }) => {
            assert_eq!((engine, user.as_str()), ("postgres", "no_such_user"));
            assert!(address.starts_with("127.0.0.1:"), "{address}");
            assert!(detail.contains("no_such_user"), "{detail}");
        }
        other => bail!("expected AccessDenied, got {other:?}"),
    }
    // A table restore against an unreachable server changes nothing and says why.
    let snap = f.take(SnapshotRequest::new("manual"))?;
    let offline = SnapshotManager::builder()
        .source(PostgresSource::new(&format!(
            "postgres://app@127.0.0.1:{port}/{}",
            f.db.name
        ))?)
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::persistent())
        .build()?;
    let e = offline.compare(&snap.snapshot_id, "measure", &CompareOptions::new());
    assert!(matches!(e, Err(Error::Unreachable { .. })), "{e:?}");
    Ok(())
}

/// Snapshots taken while another session moves rows between two tables, one transaction per
/// move, always see the two tables at one moment: no row is in both, none in neither.
#[test]
fn a_snapshot_reads_every_table_at_one_moment_while_writers_go_on() -> Result<()> {
    let f = Fixture::new("consistent")?;
    f.exec(
        "CREATE TABLE todo (id integer PRIMARY KEY);
         CREATE TABLE done (id integer PRIMARY KEY);
         INSERT INTO todo SELECT generate_series(1, 2000);",
    )?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let (url, stop) = (f.db.url.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let mut c = Client::connect(&url, NoTls)?;
            let mut moved = 0;
            for id in 1..=2000i32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut t = c.transaction()?;
                t.execute("DELETE FROM todo WHERE id = $1", &[&id])?;
                t.execute("INSERT INTO done VALUES ($1)", &[&id])?;
                t.commit()?;
                moved += 1;
            }
            Ok(moved)
        })
    };
    for _ in 0..5 {
        let snap = f.take(SnapshotRequest::new("manual"))?;
        let todo = f.m.preview(&snap.snapshot_id, "todo", 0, 0)?.total_rows;
        let done = f.m.preview(&snap.snapshot_id, "done", 0, 0)?.total_rows;
        assert_eq!(todo + done, 2000, "todo {todo} + done {done}");
    }
    stop.store(true, Ordering::Relaxed);
    let moved = mover
        .join()
        .map_err(|_| anyhow::anyhow!("mover panicked"))??;
    ensure!(moved > 0);
    Ok(())
}

/// The sum of `v` over the rows of a preview of `table` (every row: one page).
fn sum_of(m: &SnapshotManager, id: &str, table: &str) -> Result<(i64, u64)> {
    let p = m.preview(id, table, 0, u64::MAX)?;
    let mut sum = 0;
    for row in &p.rows {
        match row.get(1) {
            Some(Value::Integer(v)) => sum += v,
            Some(Value::Text(t)) => sum += t.parse::<i64>()?,
            other => bail!("{table}: value {other:?}"),
        }
    }
    Ok((sum, p.total_rows))
}

#[test]
fn tables_read_in_parallel_share_one_snapshot() -> Result<()> {
    let db = TestDb::new("parallel")?;
    let mut c = Client::connect(&db.url, NoTls)?;
    // Two accounts tables a transfer keeps in balance, and a large table read beside them so
    // that the readers overlap the writer's commits.
    c.batch_execute(
        "CREATE TABLE acct_a (id bigint PRIMARY KEY, v bigint NOT NULL);
         CREATE TABLE acct_b (id bigint PRIMARY KEY, v bigint NOT NULL);
         CREATE TABLE filler (id bigint PRIMARY KEY, pad text);
         INSERT INTO acct_a VALUES (1, 1000000);
         INSERT INTO acct_b VALUES (1, 0);
         INSERT INTO filler SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 200000) i;",
    )?;
    // Large enough to be read in ranges of its key (from 32 MB on).
    let big: bool = c
        .query_one("SELECT pg_relation_size('filler') >= 32 * 1024 * 1024", &[])?
        .get(0);
    ensure!(
        big,
        "filler is under 32 MB: the test no longer reads a table in ranges"
    );
    let dir = tempfile::tempdir()?;
    let m = SnapshotManager::builder()
        .source(PostgresSource::new(&db.url)?.jobs(3))
        .store(LocalStore::open(dir.path().join("store"))?)
        .environment(Environment::persistent())
        .build()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let commits = std::thread::scope(|s| -> Result<u64> {
        let writer = s.spawn(|| -> Result<u64> {
            let mut w = Client::connect(&db.url, NoTls)?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                w.batch_execute(&format!(
                    "BEGIN;
                     UPDATE acct_a SET v = v - 1 WHERE id = 1;
                     INSERT INTO acct_a VALUES ({k}, -1);
                     UPDATE acct_b SET v = v + 2 WHERE id = 1;
                     INSERT INTO acct_b VALUES ({k}, 0);
                     COMMIT;",
                    k = n + 1
                ))?;
            }
            Ok(n)
        });
        let mut result = Ok(());
        for _ in 0..4 {
            let r = m
                .snapshot(SnapshotRequest::new("manual"))
                .map_err(anyhow::Error::from)
                .and_then(|o| o.into_record().context("the manager is enabled"));
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let id = r.snapshot_id.as_str();
            let check = (|| -> Result<()> {
                let (a, rows_a) = sum_of(&m, id, "acct_a")?;
                let (b, rows_b) = sum_of(&m, id, "acct_b")?;
                ensure!(
                    a + b == 1_000_000 && rows_a == rows_b,
                    "snapshot {id}: a {a} ({rows_a} rows) + b {b} ({rows_b} rows)"
                );
                Ok(())
            })();
            if let Err(e) = check {
                result = Err(e);
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let n = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        result.map(|()| n)
    })?;
    ensure!(commits > 0, "the writer never committed");
    // The bundle holds every table and verifies in full; `filler` (over 32 MB, keyed by one
    // integer) was read in ranges of its key by three connections and is whole and in key
    // order across the ranges' seams.
    for r in m.list(&ListFilter::new())? {
        m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
        let p = m.preview(&r.snapshot_id, "filler", 0, u64::MAX)?;
        ensure!(p.total_rows == 200_000 && p.rows.len() == 200_000);
        for (i, row) in p.rows.iter().enumerate() {
            ensure!(
                row.first() == Some(&Value::Integer(i as i64 + 1)),
                "row {i}: {:?}",
                row.first()
            );
        }
    }
    Ok(())
}

#[test]
fn readers_that_cannot_connect_leave_their_tables_to_the_main_connection() -> Result<()> {
    let db = TestDb::new("onlyone")?;
    let role = format!("snap_one_{}", std::process::id());
    let mut c = Client::connect(&db.url, NoTls)?;
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role};
         CREATE ROLE {role} LOGIN CONNECTION LIMIT 1;
         GRANT ALL ON SCHEMA public TO {role};
         CREATE TABLE t1 (id int PRIMARY KEY); INSERT INTO t1 SELECT generate_series(1, 100);
         CREATE TABLE t2 (id int PRIMARY KEY); INSERT INTO t2 SELECT generate_series(1, 200);
         CREATE TABLE t3 (id int PRIMARY KEY); INSERT INTO t3 SELECT generate_series(1, 300);
         GRANT SELECT ON t1, t2, t3 TO {role};"
    ))?;
    let url = conninfo(&server_url()?, &db.name, Some(&role))?;
    let dir = tempfile::tempdir()?;
    let m = SnapshotManager::builder()
        .source(PostgresSource::new(&url)?.jobs(3))
        .store(LocalStore::open(dir.path().join("store"))?)
        .environment(Environment::persistent())
        .build()?;
    let r = m
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("the manager is enabled")?;
    m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
    for (t, n) in [("t1", 100), ("t2", 200), ("t3", 300)] {
        assert_eq!(m.preview(&r.snapshot_id, t, 0, 1)?.total_rows, n, "{t}");
    }
    drop(m);
    let _ = c.batch_execute(&format!(
        "REVOKE ALL ON t1, t2, t3 FROM {role}; REVOKE ALL ON SCHEMA public FROM {role}"
    ));
    drop(c);
    let mut admin = Client::connect(&db.admin, NoTls)?;
    let _ = admin.batch_execute(&format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE); DROP ROLE IF EXISTS {role}",
        db.name
    ));
    Ok(())
}
