//! Live SQLite: snapshots taken while a writer thread and a writer process commit continuously
//! are each a committed state — `integrity_check` passes and the counter row matches the row
//! count — and are self-contained (no `-wal`/`-shm` needed), in WAL and rollback-journal modes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rusqlite::{Connection, OpenFlags};
use snapshot::{
    Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager, SnapshotRequest,
    SqliteSource,
};

fn create_db(path: &Path, journal_mode: &str) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |_| {
        Ok(())
    })?;
    conn.execute_batch(
        "CREATE TABLE counter(n INTEGER NOT NULL);
         INSERT INTO counter VALUES (0);
         CREATE TABLE log(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, who TEXT, pad BLOB);",
    )?;
    // Some bulk so that a copy takes a while and pages move around.
    conn.execute_batch(
        "BEGIN;
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000)
         INSERT INTO log(n, who, pad) SELECT 0, 'seed', randomblob(1000) FROM c;
         COMMIT;",
    )?;
    conn.execute_batch("DELETE FROM log WHERE who = 'seed'")?;
    Ok(())
}

/// Opens an image read-only and returns (counter, rows), after `integrity_check`.
fn check_image(path: &Path) -> Result<(i64, i64)> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let ic: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    ensure!(ic == "ok", "integrity_check of {}: {ic}", path.display());
    let n: i64 = conn.query_row("SELECT n FROM counter", [], |r| r.get(0))?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))?;
    Ok((n, rows))
}

fn writer_thread(db: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<u64>> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        let conn = Connection::open(&db)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mut commits = 0u64;
        while !stop.load(Ordering::Relaxed) {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO log(n, who, pad) SELECT n + 1, 'thread', randomblob(200) FROM counter;
                 UPDATE counter SET n = n + 1;
                 COMMIT;",
            )?;
            commits += 1;
            // An application does other work between commits; a writer that retakes the lock
            // at once would starve the other process (SQLite's busy handler polls).
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(commits)
    })
}

fn live_snapshots_are_committed_states(journal_mode: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("live.db");
    create_db(&db, journal_mode)?;
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.path().join("store"))?)
        .retention(RetentionPolicy::new().keep_last(100))
        .environment(Environment::persistent())
        .build()?;

    let stop = Arc::new(AtomicBool::new(false));
    let thread = writer_thread(&db, stop.clone());
    let mut process = Command::new(env!("CARGO_BIN_EXE_sqlite_writer"))
        .arg(&db)
        .arg("30")
        .stdout(Stdio::piped())
        .spawn()
        .context("start the writer process")?;
    // Both writers are committing before the first snapshot.
    let probe = Connection::open(&db)?;
    probe.busy_timeout(Duration::from_secs(10))?;
    let started = std::time::Instant::now();
    while probe.query_row("SELECT count(*) FROM log WHERE who = 'process'", [], |r| {
        r.get::<_, i64>(0)
    })? == 0
    {
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "the writer process made no commit in 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(probe);

    let mut last = -1i64;
    let mut distinct = std::collections::BTreeSet::new();
    for i in 0..25 {
        let taken = manager.snapshot(SnapshotRequest::new("update").entity("counter", i))?;
        let record = taken.record().context("manager is enabled")?;
        let blob = Path::new(&record.file_path);
        for companion in ["-wal", "-shm"] {
            let mut p = blob.as_os_str().to_owned();
            p.push(companion);
            ensure!(
                !Path::new(&p).exists(),
                "a {companion} file stands beside the blob"
            );
        }
        // A copy elsewhere opens on its own: the image needs no -wal.
        let copy = dir.path().join(format!("copy-{i}.db"));
        manager.restore_to(&record.snapshot_id, &copy)?;
        let (n, rows) = check_image(&copy)?;
        ensure!(
            n == rows,
            "snapshot {i}: counter {n} but {rows} rows: not a committed state"
        );
        ensure!(
            n >= last,
            "snapshot {i} went back in time: {n} after {last}"
        );
        last = n;
        distinct.insert(n);
        manager.verify(&record.snapshot_id)?;
        std::thread::sleep(Duration::from_millis(20));
    }

    stop.store(true, Ordering::Relaxed);
    let thread_commits = thread
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    process.kill().ok();
    process.wait()?;
    ensure!(thread_commits > 0, "the writer thread never committed");
    ensure!(
        distinct.len() > 5,
        "writers made too little progress during snapshots: {distinct:?}"
    );
    // the live database is fine and ahead of every snapshot. The writer process was killed,
    // perhaps mid-transaction: its hot journal is rolled back by the first read-write open (as
    // the application's next start would), which a read-only open cannot do.
    Connection::open(&db)?.query_row("SELECT count(*) FROM counter", [], |r| r.get::<_, i64>(0))?;
    let (n, rows) = check_image(&db)?;
    ensure!(n == rows && n >= last);
    // and every process-written row made it into some snapshot range, i.e. the process ran
    let conn = Connection::open(&db)?;
    let from_process: i64 =
        conn.query_row("SELECT count(*) FROM log WHERE who = 'process'", [], |r| {
            r.get(0)
        })?;
    ensure!(from_process > 0, "the writer process never committed");
    ensure!(manager.list(&ListFilter::new())?.len() == 25);
    Ok(())
}

#[test]
fn wal_mode_with_writer_thread_and_process() -> Result<()> {
    live_snapshots_are_committed_states("wal")
}

#[test]
fn rollback_journal_mode_with_writer_thread_and_process() -> Result<()> {
    live_snapshots_are_committed_states("delete")
}

/// Asks a separate process whether it could start a write transaction right now.
fn probe_write_lock(db: &Path) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sqlite_writer"))
        .arg(db)
        .arg("0")
        .arg("try-write")
        .output()?;
    ensure!(out.status.success(), "probe failed: {out:?}");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// POSIX locks belong to the process: a snapshot taken inside the application's process must
/// not drop the locks its connections hold (closing any descriptor of the file would).
#[test]
fn a_snapshot_keeps_the_locks_of_the_applications_own_connections() -> Result<()> {
    for mode in ["delete", "wal"] {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        create_db(&db, mode)?;
        let manager = SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(LocalStore::open(dir.path().join("store"))?)
            .environment(Environment::persistent())
            .build()?;
        let app = Connection::open(&db)?;
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO log(n, who) VALUES (1, 'app');")?;
        ensure!(
            probe_write_lock(&db)? == "busy",
            "{mode}: the probe must see the app's lock"
        );
        for _ in 0..3 {
            manager.snapshot(SnapshotRequest::new("delete"))?;
            let seen = probe_write_lock(&db)?;
            ensure!(
                seen == "busy",
                "{mode}: the snapshot dropped the application's write lock (probe: {seen})"
            );
        }
        app.execute_batch("UPDATE counter SET n = 1; COMMIT;")?;
        ensure!(probe_write_lock(&db)? == "free");
        // Once the application's connection is gone, restore finds nobody holding the file.
        drop(app);
        let first = manager
            .list(&ListFilter::new())?
            .pop()
            .context("three snapshots")?;
        manager.restore(&first.snapshot_id)?;
        ensure!(
            check_image(&db)? == (0, 0),
            "{mode}: the snapshots saw the open txn"
        );
    }
    Ok(())
}

#[test]
fn snapshot_holds_rows_that_live_only_in_the_wal() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("wal-only.db");
    create_db(&db, "wal")?;
    // An open connection with auto-checkpoint off keeps the last commits in the -wal only.
    let app = Connection::open(&db)?;
    app.query_row("PRAGMA wal_autocheckpoint=0", [], |_| Ok(()))?;
    app.execute_batch(
        "INSERT INTO log(n, who) VALUES (1, 'wal'); UPDATE counter SET n = 1;
         CREATE TABLE only_in_wal(x TEXT); INSERT INTO only_in_wal VALUES ('here');",
    )?;
    let wal_len = std::fs::metadata(dir.path().join("wal-only.db-wal"))?.len();
    ensure!(wal_len > 0, "the test needs a non-empty -wal");

    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.path().join("store"))?)
        .environment(Environment::persistent())
        .build()?;
    let record = manager
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("enabled")?;
    let copy = dir.path().join("copy.db");
    manager.restore_to(&record.snapshot_id, &copy)?;
    let (n, rows) = check_image(&copy)?;
    ensure!((n, rows) == (1, 1));
    let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let x: String = conn.query_row("SELECT x FROM only_in_wal", [], |r| r.get(0))?;
    ensure!(x == "here");
    Ok(())
}

/// The time of one snapshot.
fn timed(manager: &SnapshotManager) -> Result<(Duration, snapshot::SnapshotRecord)> {
    let t = std::time::Instant::now();
    let r = manager
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("manager is enabled")?;
    Ok((t.elapsed(), r))
}

#[test]
fn heavy_writers_never_make_a_snapshot_chase_the_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("busy.db");
    create_db(&db, "wal")?;
    // ~30 MB, so that a copy takes a while.
    Connection::open(&db)?.execute_batch(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 30000)
         INSERT INTO log(n, who, pad) SELECT 0, 'bulk', randomblob(1000) FROM c;
         UPDATE counter SET n = (SELECT count(*) FROM log);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )?;
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.path().join("store"))?)
        .retention(RetentionPolicy::new().keep_last(100))
        .environment(Environment::persistent())
        .build()?;
    let mut idle: Vec<Duration> = (0..3)
        .map(|_| timed(&manager).map(|t| t.0))
        .collect::<Result<_>>()?;
    idle.sort();
    let idle = idle[1];

    // Two processes committing as fast as they can, one of them with a deferred BEGIN.
    let mut writers = Vec::new();
    for _ in 0..2 {
        writers.push(
            Command::new(env!("CARGO_BIN_EXE_sqlite_writer"))
                .arg(&db)
                .arg("60")
                .arg("fast")
                .stdout(Stdio::null())
                .spawn()
                .context("start a writer")?,
        );
    }
    let wal = dir.path().join("busy.db-wal");
    let result = (|| -> Result<Vec<(Duration, u64)>> {
        let probe = Connection::open(&db)?;
        probe.busy_timeout(Duration::from_secs(10))?;
        let t = std::time::Instant::now();
        while probe.query_row("SELECT count(*) FROM log WHERE who = 'process'", [], |r| {
            r.get::<_, i64>(0)
        })? < 1000
        {
            ensure!(
                t.elapsed() < Duration::from_secs(30),
                "the writers do not commit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(probe);
        // One snapshot while the writers run flat out (two or more back to back meet SQLite's
        // checkpoint starvation: the log, never restarted under continuous writers, grows
        // between them and each folds more of it; see the README).
        let mut runs = Vec::new();
        for i in 0..1 {
            let (took, record) = timed(&manager)?;
            let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
            runs.push((took, wal_bytes));
            let copy = dir.path().join(format!("copy-{i}.db"));
            manager.restore_to(&record.snapshot_id, &copy)?;
            let (n, rows) = check_image(&copy)?;
            ensure!(
                n == rows,
                "snapshot {i}: counter {n}, {rows} rows: not a committed state"
            );
        }
        Ok(runs)
    })();
    for w in &mut writers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let runs = result?;
    eprintln!("idle {idle:?}; under the writers (time, log bytes after): {runs:?}");
    // 3x the idle time, with a floor for a loaded machine (other tests run beside this one):
    // a snapshot that chased the log ran until the writers stopped (60 s), ~0.1 s now.
    let limit = (idle * 3).max(Duration::from_secs(5));
    for (i, (took, _)) in runs.iter().enumerate() {
        ensure!(
            *took <= limit,
            "snapshot {i} took {took:?}, idle {idle:?}: it chased the log"
        );
    }
    let grown = runs.iter().map(|r| r.1).max().unwrap_or(0);
    ensure!(grown < 512 << 20, "the log grew to {grown} bytes");
    Ok(())
}
