//! Concurrency (DESIGN.md §4, invariants 3 and 4): many writers snapshotting one live SQLite
//! database into one `LocalStore` at once lose no record and never share an id.
//!
//! - 8 processes × 25 snapshots: the processes are this test binary re-executed on
//!   [`concurrency_child_entry_point`], their parameters in `SNAPSHOT_TEST_CHILD`; they start
//!   together (they wait for a "go" file) and all use the same operation and entity ids, so ids
//!   made in the same millisecond collide and must be told apart by the store.
//! - 8 threads × 25 snapshots through clones of one manager.
//!
//! Afterwards: exactly 200 records with 200 distinct ids, one per (worker, snapshot) pair; the
//! index parses; every blob verifies and is a database holding the table's rows; the store holds
//! exactly the 200 blobs, 200 sidecars and the index, and `doctor` finds it clean.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use snapshot::{
    DoctorOptions, Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager,
    SnapshotRequest, SqliteSource,
};

const CHILD_ENV: &str = "SNAPSHOT_TEST_CHILD";
const CHILD_TEST: &str = "concurrency_child_entry_point";
const WORKERS: usize = 8;
const PER_WORKER: usize = 25;
const ROWS: i64 = 500;

/// What a child process does, passed in `SNAPSHOT_TEST_CHILD` as `key=value;…`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChildSpec {
    db: PathBuf,
    store: PathBuf,
    /// The children start snapshotting once this file exists.
    go: PathBuf,
    worker: usize,
    count: usize,
}

impl ChildSpec {
    fn encode(&self) -> String {
        format!(
            "db={};store={};go={};worker={};count={}",
            self.db.display(),
            self.store.display(),
            self.go.display(),
            self.worker,
            self.count
        )
    }

    fn decode(s: &str) -> Result<ChildSpec> {
        let (mut db, mut store, mut go, mut worker, mut count) = (None, None, None, None, None);
        for part in s.split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("malformed child parameter {part:?}"))?;
            match k {
                "db" => db = Some(PathBuf::from(v)),
                "store" => store = Some(PathBuf::from(v)),
                "go" => go = Some(PathBuf::from(v)),
                "worker" => worker = Some(v.parse()?),
                "count" => count = Some(v.parse()?),
                other => bail!("unknown child parameter {other:?}"),
            }
        }
        Ok(ChildSpec {
            db: db.context("db missing")?,
            store: store.context("store missing")?,
            go: go.context("go missing")?,
            worker: worker.context("worker missing")?,
            count: count.context("count missing")?,
        })
    }
}

/// Entry point of the child processes of
/// [`eight_processes_times_25_snapshots_lose_no_record_and_share_no_id`]. Run normally (no
/// `SNAPSHOT_TEST_CHILD`), it checks the parameter encoding the parent relies on.
#[test]
fn concurrency_child_entry_point() -> Result<()> {
    let Ok(encoded) = std::env::var(CHILD_ENV) else {
        let spec = ChildSpec {
            db: "/tmp/x/app.db".into(),
            store: "/tmp/x/store".into(),
            go: "/tmp/x/go".into(),
            worker: 7,
            count: 25,
        };
        assert_eq!(ChildSpec::decode(&spec.encode())?, spec);
        assert!(ChildSpec::decode("db=/a;store=/b;go=/c;worker=x;count=1").is_err());
        assert!(ChildSpec::decode("db=/a;store=/b;go=/c;worker=1").is_err());
        return Ok(());
    };
    let spec = ChildSpec::decode(&encoded)?;
    let manager = build_manager(&spec.db, &spec.store)?;
    let start = Instant::now();
    while !spec.go.exists() {
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "no go signal after 120 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    for j in 0..spec.count {
        snap(&manager, spec.worker, j)?;
    }
    Ok(())
}

fn build_manager(db: &Path, store: &Path) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(LocalStore::open(store)?)
        .retention(RetentionPolicy::new().keep_last(1000))
        .environment(Environment::persistent())
        .build()?)
}

fn description(worker: usize, j: usize) -> String {
    format!("worker {worker} snapshot {j}")
}

/// Every worker uses the same operation and entity ids: only the store tells them apart.
fn snap(manager: &SnapshotManager, worker: usize, j: usize) -> Result<String> {
    let outcome = manager.snapshot(
        SnapshotRequest::new("delete")
            .entity("measure", j)
            .description(description(worker, j)),
    )?;
    Ok(outcome
        .record()
        .context("the manager is disabled")?
        .snapshot_id
        .clone())
}

/// A real SQLite database in WAL mode with one table of `ROWS` rows.
fn create_db(db: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE measure(id INTEGER PRIMARY KEY, name TEXT NOT NULL, value REAL NOT NULL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS})
           INSERT INTO measure SELECT x, 'measure ' || x, x * 0.5 FROM c;
         COMMIT;"
    ))?;
    Ok(())
}

/// Rows of `measure` in a snapshot blob, opened read-only and immutable (no -wal/-shm).
fn rows_in_blob(blob: &Path) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", blob.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )?;
    Ok(conn.query_row("SELECT count(*) FROM measure", [], |r| r.get(0))?)
}

/// Everything the store must hold after `WORKERS × PER_WORKER` snapshots. Returns how many ids
/// carry a `-N` suffix (an id already taken in the same millisecond).
fn check_store(manager: &SnapshotManager, store: &Path) -> Result<usize> {
    let total = WORKERS * PER_WORKER;

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("snapshot_metadata.json"))?)
            .context("the index does not parse")?;
    let entries = index.as_array().context("the index is not an array")?;
    ensure!(
        entries.len() == total,
        "the index holds {} records, expected {total}",
        entries.len()
    );

    let listed = manager.list(&ListFilter::new())?;
    ensure!(
        listed.len() == total,
        "{} records listed, expected {total}",
        listed.len()
    );
    let ids: BTreeSet<&str> = listed.iter().map(|r| r.snapshot_id.as_str()).collect();
    ensure!(
        ids.len() == total,
        "only {} distinct ids among {total} records",
        ids.len()
    );
    let blobs: BTreeSet<&str> = listed.iter().map(|r| r.blob_key.as_str()).collect();
    ensure!(blobs.len() == total, "records share a blob");
    let descriptions: BTreeSet<String> = listed.iter().map(|r| r.description.clone()).collect();
    let expected: BTreeSet<String> = (0..WORKERS)
        .flat_map(|w| (0..PER_WORKER).map(move |j| description(w, j)))
        .collect();
    ensure!(
        descriptions == expected,
        "records lost or duplicated: missing {:?}, unexpected {:?}",
        expected.difference(&descriptions).collect::<Vec<_>>(),
        descriptions.difference(&expected).collect::<Vec<_>>()
    );
    for r in &listed {
        ensure!(
            r.source_kind == "sqlite",
            "{}: kind {}",
            r.snapshot_id,
            r.source_kind
        );
        ensure!(
            r.snapshot_id.contains("_delete_measure_"),
            "unexpected id {}",
            r.snapshot_id
        );
        let blob = store.join(&r.blob_key);
        ensure!(
            rows_in_blob(&blob)? == ROWS,
            "{} does not hold the table's {ROWS} rows",
            r.snapshot_id
        );
    }

    let verified = manager.verify_all()?;
    ensure!(
        verified.failed.is_empty(),
        "snapshots failed verification: {:?}",
        verified.failed
    );
    ensure!(
        verified.passed.len() == total,
        "{} snapshots verified, expected {total}",
        verified.passed.len()
    );

    // Exactly the blobs, the sidecars and the index: no leftover, no orphan.
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(store)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != ".lock" {
            names.insert(name);
        }
    }
    let mut expected_names: BTreeSet<String> = BTreeSet::new();
    expected_names.insert("snapshot_metadata.json".into());
    for r in &listed {
        expected_names.insert(r.blob_key.clone());
        expected_names.insert(format!("{}.json", r.snapshot_id));
    }
    ensure!(
        names == expected_names,
        "store files differ: extra {:?}, missing {:?}",
        names.difference(&expected_names).collect::<Vec<_>>(),
        expected_names.difference(&names).collect::<Vec<_>>()
    );
    let doctor = manager.doctor(&DoctorOptions {
        repair: false,
        min_age: Duration::ZERO,
    })?;
    ensure!(doctor.is_clean(), "doctor: {doctor:?}");
    Ok(listed
        .iter()
        .filter(|r| {
            r.snapshot_id
                .rsplit_once('-')
                .is_some_and(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count())
}

#[test]
fn eight_processes_times_25_snapshots_lose_no_record_and_share_no_id() -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("app.db");
    let store = tmp.path().join("store");
    let go = tmp.path().join("go");
    create_db(&db)?;
    let manager = build_manager(&db, &store)?;

    let mut children = Vec::new();
    for worker in 0..WORKERS {
        let spec = ChildSpec {
            db: db.clone(),
            store: store.clone(),
            go: go.clone(),
            worker,
            count: PER_WORKER,
        };
        let out = tmp.path().join(format!("child-{worker}.out"));
        let err = tmp.path().join(format!("child-{worker}.err"));
        let child = Command::new(std::env::current_exe()?)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, spec.encode())
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()?;
        children.push((worker, child, out, err));
    }
    File::create(&go)?;
    let mut failures = Vec::new();
    for (worker, mut child, out, err) in children {
        let status = child.wait()?;
        if !status.success() {
            failures.push(format!(
                "worker {worker}: {status}\nstdout:\n{}\nstderr:\n{}",
                fs::read_to_string(out).unwrap_or_default(),
                fs::read_to_string(err).unwrap_or_default()
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    let suffixed = check_store(&manager, &store)?;
    eprintln!(
        "concurrency: {WORKERS} processes × {PER_WORKER} snapshots checked in {:.1?} \
         ({suffixed} ids made unique by a -N suffix)",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn one_manager_shared_by_8_threads_times_25_snapshots_loses_nothing() -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("app.db");
    let store = tmp.path().join("store");
    create_db(&db)?;
    let manager = build_manager(&db, &store)?;
    let barrier = std::sync::Barrier::new(WORKERS);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let manager = manager.clone();
                let barrier = &barrier;
                s.spawn(move || -> Result<Vec<String>> {
                    barrier.wait();
                    (0..PER_WORKER).map(|j| snap(&manager, worker, j)).collect()
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for h in handles {
            let taken = h
                .join()
                .map_err(|_| anyhow!("a worker thread panicked"))??;
            ensure!(taken.len() == PER_WORKER);
            ids.extend(taken);
        }
        ensure!(
            ids.len() == WORKERS * PER_WORKER,
            "the threads were handed {} distinct ids",
            ids.len()
        );
        Ok(())
    })?;
    let suffixed = check_store(&manager, &store)?;
    eprintln!(
        "concurrency: {WORKERS} threads × {PER_WORKER} snapshots checked in {:.1?} \
         ({suffixed} ids made unique by a -N suffix)",
        started.elapsed()
    );
    Ok(())
}
