//! `DuckDbSource` against real DuckDB files and real processes: a closed file round trip, a
//! `.wal` left by a process that died before checkpointing (folded into the snapshot, never
//! dropped), snapshots through the application's open connection while it keeps writing, bad
//! sources, a restore refused while the database is open, and a restore of the wrong engine.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use duckdb::{AccessMode, Config, Connection};
use snapshot::store::STAGING_PREFIX;
use snapshot::{
    CheckLevel, DuckDbSource, Environment, Error, ListFilter, LocalStore, SnapshotManager,
    SnapshotRecord, SnapshotRequest, SqliteSource,
};

/// Set in a child process: the database it writes to and then abandons without a checkpoint.
const CHILD_WAL_WRITER: &str = "SNAPSHOT_TEST_DUCKDB_WAL_WRITER";
/// Set in a child process: the database it holds open until its stdin closes.
const CHILD_HOLDER: &str = "SNAPSHOT_TEST_DUCKDB_HOLDER";

fn manager(source: DuckDbSource, store: &Path) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(store)?)
        .environment(Environment::persistent())
        .build()?)
}

fn take(m: &SnapshotManager, entity_id: u64) -> Result<SnapshotRecord> {
    m.snapshot(SnapshotRequest::new("delete").entity("measure", entity_id))?
        .into_record()
        .context("the manager is disabled")
}

fn open_read_only(path: &Path) -> Result<Connection> {
    let config = Config::default().access_mode(AccessMode::ReadOnly)?;
    Connection::open_with_flags(path, config)
        .with_context(|| format!("open {} read-only", path.display()))
}

fn count(conn: &Connection, table: &str) -> Result<i64> {
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

/// Materialises a snapshot in a new file (checksum and engine checked) and counts a table.
fn rows_in_snapshot(m: &SnapshotManager, id: &str, table: &str, scratch: &Path) -> Result<i64> {
    let out = scratch.join(format!("restored-{id}.duckdb"));
    m.restore_to(id, &out)?;
    let conn = open_read_only(&out)?;
    let n = count(&conn, table)?;
    drop(conn);
    fs::remove_file(&out)?;
    Ok(n)
}

/// A closed database with `rows` measures.
fn closed_db(path: &Path, rows: i64) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(&format!(
        "CREATE TABLE measures(id BIGINT PRIMARY KEY, name VARCHAR, value DOUBLE);
         INSERT INTO measures SELECT range, 'measure ' || range, range * 1.5 FROM range({rows});"
    ))?;
    drop(conn);
    Ok(())
}

fn wal_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".wal");
    PathBuf::from(s)
}

fn staging_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            out.push(e.path());
        }
    }
    Ok(out)
}

/// Runs this test binary again, for one test, with `env` set: the test's child branch runs.
fn child(test: &str, env: (&str, &Path)) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1);
    cmd
}

/// The child's side of the leftover-WAL tests: commits rows 1000.. with automatic checkpoints
/// disabled, then exits without closing (no checkpoint on shutdown), leaving a `.wal` behind.
fn child_write_and_abandon(db: &Path) -> ! {
    let run = || -> Result<()> {
        let conn = Connection::open(db)?;
        conn.execute_batch("PRAGMA wal_autocheckpoint='1TB'")?;
        let base = count(&conn, "measures")?;
        conn.execute_batch(&format!(
            "INSERT INTO measures SELECT range, 'wal only ' || range, 0 FROM range({base}, {base} + 1000);"
        ))?;
        // Never close: no destructor, no checkpoint.
        std::mem::forget(conn);
        Ok(())
    };
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child failed: {e:#}");
            3
        }
    };
    std::process::exit(code)
}

/// Makes a `.wal` that holds committed rows the main file does not have, the way an application
/// that crashed would leave it, and checks that it really does.
fn leave_wal_behind(test: &str, db: &Path) -> Result<()> {
    let status = child(test, (CHILD_WAL_WRITER, db))
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "the WAL-writing child failed: {status}");
    let wal = wal_of(db);
    let len = fs::metadata(&wal)
        .with_context(|| format!("the child left no {}", wal.display()))?
        .len();
    ensure!(len > 0, "the child left an empty WAL");
    Ok(())
}

/// Rows visible in the main file alone (what a bare copy of the file would hold).
fn rows_without_wal(db: &Path, scratch: &Path) -> Result<i64> {
    let bare_dir = scratch.join("bare");
    fs::create_dir_all(&bare_dir)?;
    let bare = bare_dir.join("bare.duckdb");
    fs::copy(db, &bare)?;
    let n = count(&open_read_only(&bare)?, "measures")?;
    fs::remove_dir_all(&bare_dir)?;
    Ok(n)
}

#[test]
fn closed_file_snapshot_verify_restore_round_trip() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.duckdb");
    closed_db(&db, 1000)?;
    let m = manager(DuckDbSource::new(&db), &dir.path().join("store"))?;

    let r = take(&m, 42)?;
    ensure!(
        r.source_kind == "duckdb" && r.blob_key.ends_with(".duckdb"),
        "{r:?}"
    );
    ensure!(r.checksum.starts_with("blake3:") && r.size_bytes > 0);
    let blob = dir.path().join("store").join(&r.blob_key);
    ensure!(fs::metadata(&blob)?.permissions().mode() & 0o777 == 0o600);
    let v = m.verify(&r.snapshot_id)?;
    ensure!(v.engine_checked && v.bytes == r.size_bytes && v.checksum == r.checksum);
    m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
    ensure!(rows_in_snapshot(&m, &r.snapshot_id, "measures", dir.path())? == 1000);
    // The live file was closed: the snapshot did not leave a WAL or a staging file behind.
    ensure!(!wal_of(&db).exists() || fs::metadata(wal_of(&db))?.len() == 0);
    ensure!(staging_files(dir.path())?.is_empty());

    // Destroy data, restore, and get it back; the present is kept as a safety snapshot.
    {
        let conn = Connection::open(&db)?;
        conn.execute_batch("DELETE FROM measures WHERE id >= 10")?;
    }
    let report = m.restore(&r.snapshot_id)?;
    let safety = report.safety_snapshot.context("no safety snapshot")?;
    ensure!(count(&open_read_only(&db)?, "measures")? == 1000);
    let sum: f64 =
        open_read_only(&db)?.query_row("SELECT sum(value) FROM measures", [], |r| r.get(0))?;
    ensure!((sum - 1.5 * 999.0 * 1000.0 / 2.0).abs() < 1e-6, "sum {sum}");
    ensure!(rows_in_snapshot(&m, &safety, "measures", dir.path())? == 10);
    ensure!(m.list(&ListFilter::new())?.len() == 2);
    ensure!(m.verify_all()?.all_passed());
    ensure!(staging_files(dir.path())?.is_empty());
    // The restored database is writable again by the application.
    Connection::open(&db)?.execute_batch("INSERT INTO measures VALUES (5000, 'new', 1)")?;
    Ok(())
}

#[test]
fn leftover_wal_is_folded_never_dropped() -> Result<()> {
    if let Some(db) = std::env::var_os(CHILD_WAL_WRITER) {
        child_write_and_abandon(Path::new(&db));
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.duckdb");
    closed_db(&db, 1000)?;
    leave_wal_behind("leftover_wal_is_folded_never_dropped", &db)?;
    ensure!(
        rows_without_wal(&db, dir.path())? == 1000,
        "the test needs rows that live only in the .wal"
    );

    let m = manager(DuckDbSource::new(&db), &dir.path().join("store"))?;
    let first = take(&m, 1)?;
    ensure!(
        rows_in_snapshot(&m, &first.snapshot_id, "measures", dir.path())? == 2000,
        "the snapshot dropped the rows of the leftover .wal"
    );
    ensure!(count(&open_read_only(&db)?, "measures")? == 2000);

    // A restore folds a leftover .wal too: the safety snapshot holds the present, WAL included.
    leave_wal_behind("leftover_wal_is_folded_never_dropped", &db)?;
    ensure!(rows_without_wal(&db, dir.path())? == 2000);
    let report = m.restore(&first.snapshot_id)?;
    let safety = report.safety_snapshot.context("no safety snapshot")?;
    ensure!(
        rows_in_snapshot(&m, &safety, "measures", dir.path())? == 3000,
        "the safety snapshot dropped the rows of the leftover .wal"
    );
    ensure!(count(&open_read_only(&db)?, "measures")? == 2000);
    // The stale log went with the replaced data: reopening does not replay it over the restore.
    ensure!(count(&Connection::open(&db)?, "measures")? == 2000);
    Ok(())
}

#[test]
fn snapshots_through_the_apps_connection_while_it_writes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.duckdb");
    let app = Connection::open(&db)?;
    app.execute_batch(
        "CREATE TABLE items(batch BIGINT, n BIGINT, payload VARCHAR);
         CREATE TABLE counter(n BIGINT);
         INSERT INTO counter VALUES (0);",
    )?;
    let m = manager(
        DuckDbSource::with_connection(&db, &app)?,
        &dir.path().join("store"),
    )?;
    let writer = app.try_clone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let handle = {
        let (stop, committed) = (stop.clone(), committed.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut batch = 0u64;
            while !stop.load(Ordering::Relaxed) {
                batch += 1;
                // One transaction: the counter and 10 rows, so a consistent state has
                // count(items) == 10 * counter.n. It stays open a while, as an application's
                // do; DuckDB refuses to CHECKPOINT while one that updated a row is open.
                writer.execute_batch(&format!(
                    "BEGIN TRANSACTION;
                     UPDATE counter SET n = {batch};
                     INSERT INTO items SELECT {batch}, range, repeat('x', 200) FROM range(10);"
                ))?;
                std::thread::sleep(Duration::from_millis(3));
                writer.execute_batch("COMMIT")?;
                committed.store(batch, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
    };

    let taken = (|| -> Result<Vec<SnapshotRecord>> {
        let mut taken = Vec::new();
        for i in 0..8 {
            // Let the writer get ahead between snapshots, then start at varying offsets into
            // its cycle, so most snapshots begin while it holds a transaction open.
            let seen = committed.load(Ordering::Relaxed);
            while committed.load(Ordering::Relaxed) < seen + 3 {
                ensure!(!handle.is_finished(), "the writer stopped");
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(1 + 7 * i % 23));
            taken.push(take(&m, i)?);
        }
        Ok(taken)
    })();
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("writer panicked")?;
    let taken = taken?;

    let mut last = 0;
    for r in &taken {
        let out = dir.path().join(format!("check-{}.duckdb", r.snapshot_id));
        m.restore_to(&r.snapshot_id, &out)?;
        let conn = open_read_only(&out)?;
        let n: i64 = conn.query_row("SELECT n FROM counter", [], |r| r.get(0))?;
        let items = count(&conn, "items")?;
        let batches: i64 =
            conn.query_row("SELECT count(DISTINCT batch) FROM items", [], |r| r.get(0))?;
        ensure!(
            items == 10 * n && batches == n,
            "{}: {items} items in {batches} batches but the counter says {n}",
            r.snapshot_id
        );
        ensure!(n >= last, "snapshots went back in time: {n} after {last}");
        last = n;
    }
    ensure!(last > 0, "no snapshot saw any commit");
    // The application's connection is unharmed and still writes.
    app.execute_batch("INSERT INTO counter VALUES (-1)")?;
    ensure!(count(&app, "counter")? == 2);
    ensure!(staging_files(&dir.path().join("store"))?.is_empty());
    Ok(())
}

#[test]
fn a_file_that_is_not_a_database_is_not_a_database() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let garbage = dir.path().join("notes.duckdb");
    fs::write(&garbage, "this is not a database\n".repeat(500))?;
    let sqlite = dir.path().join("app.sqlite3");
    rusqlite::Connection::open(&sqlite)?
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    for path in [&garbage, &sqlite] {
        let before = fs::read(path)?;
        let m = manager(DuckDbSource::new(path), &store)?;
        match m.snapshot(SnapshotRequest::new("delete")) {
            Err(Error::NotADatabase {
                engine, path: p, ..
            }) => {
                ensure!(engine == "duckdb" && p == *path, "{engine} {}", p.display());
            }
            other => bail!("{}: expected NotADatabase, got {other:?}", path.display()),
        }
        ensure!(fs::read(path)? == before, "{} was modified", path.display());
        ensure!(!wal_of(path).exists());
        ensure!(m.list(&ListFilter::new())?.is_empty());
    }
    ensure!(staging_files(&store)?.is_empty());
    Ok(())
}

#[test]
fn a_missing_file_is_source_missing_and_is_not_created() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("gone.duckdb");
    let m = manager(DuckDbSource::new(&missing), &dir.path().join("store"))?;
    match m.snapshot(SnapshotRequest::new("delete")) {
        Err(Error::SourceMissing { kind, path }) => {
            ensure!(
                kind == "duckdb" && path == missing,
                "{kind} {}",
                path.display()
            );
        }
        other => bail!("expected SourceMissing, got {other:?}"),
    }
    ensure!(
        !missing.exists(),
        "the snapshot attempt created the database"
    );
    ensure!(m.list(&ListFilter::new())?.is_empty());
    Ok(())
}

#[test]
fn restore_while_the_database_is_open_goes_through_its_holder_or_says_who_holds_it() -> Result<()> {
    if let Some(db) = std::env::var_os(CHILD_HOLDER) {
        // Hold the database open until the parent closes our stdin.
        let conn = Connection::open(&db).expect("open");
        println!(
            "\nHOLDER-READY {}",
            count(&conn, "measures").expect("count")
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        drop(conn);
        std::process::exit(0);
    }
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let db = dir.path().join("app.duckdb");
    closed_db(&db, 100)?;

    // The application has the database open in this process; a keyless table beside the keyed
    // one (a whole restore replaces it whole).
    let app = Connection::open(&db)?;
    app.execute_batch(
        "CREATE TABLE notes(body VARCHAR); INSERT INTO notes VALUES ('a'), ('a'), ('b');",
    )?;
    let live = manager(DuckDbSource::with_connection(&db, &app)?, &store)?;
    let r = take(&live, 1)?;
    app.execute_batch("DELETE FROM measures WHERE id >= 50; DELETE FROM notes WHERE body = 'b';")?;

    // A second instance in this process cannot: it says so, and how.
    let admin = manager(DuckDbSource::new(&db), &store)?;
    match admin.restore(&r.snapshot_id) {
        Err(Error::TargetLocked { path, detail }) => ensure!(
            path == db
                && detail.contains("held by this process")
                && detail.contains("with_connection"),
            "{}: {detail}",
            path.display()
        ),
        other => bail!("beside the app: expected TargetLocked, got {other:?}"),
    }
    ensure!(count(&app, "measures")? == 50, "the live data changed");
    ensure!(staging_files(dir.path())?.is_empty());

    // Through the application's connection: every table replaced in one transaction, seen
    // by the application at once, after a safety snapshot.
    let report = live.restore(&r.snapshot_id)?;
    ensure!(count(&app, "measures")? == 100);
    ensure!(count(&app, "notes")? == 3);
    let safety = report.safety_snapshot.context("a safety snapshot")?;
    ensure!(live.list(&ListFilter::new())?.len() == 2);
    app.execute_batch("INSERT INTO measures VALUES (1000, 'still writable', 0)")?;
    let out = dir.path().join("present.duckdb");
    live.restore_to(&safety, &out)?;
    ensure!(count(&open_read_only(&out)?, "measures")? == 50);
    ensure!(staging_files(dir.path())?.is_empty());
    drop(live);
    drop(app);

    // Another process has it open.
    let mut holder = child(
        "restore_while_the_database_is_open_goes_through_its_holder_or_says_who_holds_it",
        (CHILD_HOLDER, &db),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()?;
    let mut out = BufReader::new(holder.stdout.take().context("child stdout")?);
    let mut line = String::new();
    // The test harness prints its own lines (and may not end them) before ours.
    while !line.contains("HOLDER-READY") {
        line.clear();
        ensure!(out.read_line(&mut line)? > 0, "the holder exited early");
    }
    let before = fs::read(&db)?;
    let created = admin.snapshot(SnapshotRequest::new("manual"));
    let locked = admin.restore(&r.snapshot_id);
    let unchanged = fs::read(&db)? == before;
    let mut stdin = holder.stdin.take().context("child stdin")?;
    stdin.write_all(b"done\n")?;
    drop(stdin);
    let status = holder.wait()?;
    match locked {
        Err(Error::TargetLocked { detail, .. }) => {
            ensure!(
                detail.contains(&format!("held by process(es) {}", holder.id())),
                "detail: {detail}"
            )
        }
        other => bail!("held by a process: expected TargetLocked, got {other:?}"),
    }
    ensure!(status.success(), "holder: {status}");
    ensure!(unchanged, "the live file changed while locked");
    // A snapshot of the held file is refused too, and its message speaks of no restore.
    match created {
        Err(e @ Error::TargetLocked { .. }) => {
            let msg = e.to_string();
            ensure!(msg.contains("in use") && !msg.contains("restor"), "{msg}");
        }
        other => bail!("create of a held file: expected TargetLocked, got {other:?}"),
    }

    // Once nobody holds it, the same restore goes through.
    admin.restore(&r.snapshot_id)?;
    ensure!(count(&open_read_only(&db)?, "measures")? == 100);
    Ok(())
}

#[test]
fn a_sqlite_snapshot_restored_into_duckdb_is_wrong_engine() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    let sqlite_db = dir.path().join("app.sqlite3");
    rusqlite::Connection::open(&sqlite_db)?
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")?;
    let duck_db = dir.path().join("app.duckdb");
    closed_db(&duck_db, 10)?;

    let sqlite = SnapshotManager::builder()
        .source(SqliteSource::new(&sqlite_db))
        .store(LocalStore::open(&store)?)
        .environment(Environment::persistent())
        .build()?;
    let duck = manager(DuckDbSource::new(&duck_db), &store)?;
    let from_sqlite = sqlite
        .snapshot(SnapshotRequest::new("delete"))?
        .into_record()
        .context("disabled")?;
    let from_duck = take(&duck, 1)?;
    let duck_before = fs::read(&duck_db)?;
    let sqlite_before = fs::read(&sqlite_db)?;

    match duck.restore(&from_sqlite.snapshot_id) {
        Err(Error::WrongEngine {
            snapshot_kind,
            target_kind,
            id,
        }) => ensure!(
            snapshot_kind == "sqlite" && target_kind == "duckdb" && id == from_sqlite.snapshot_id,
            "{snapshot_kind} → {target_kind}"
        ),
        other => bail!("expected WrongEngine, got {other:?}"),
    }
    match sqlite.restore(&from_duck.snapshot_id) {
        Err(Error::WrongEngine {
            snapshot_kind,
            target_kind,
            ..
        }) => ensure!(snapshot_kind == "duckdb" && target_kind == "sqlite"),
        other => bail!("expected WrongEngine, got {other:?}"),
    }
    ensure!(fs::read(&duck_db)? == duck_before && fs::read(&sqlite_db)? == sqlite_before);
    ensure!(
        duck.list(&ListFilter::new())?.len() == 2,
        "a safety snapshot was taken"
    );
    // Each still restores into its own engine.
    duck.restore(&from_duck.snapshot_id)?;
    sqlite.restore(&from_sqlite.snapshot_id)?;
    Ok(())
}

#[test]
fn a_closed_file_source_refuses_a_database_this_process_has_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.duckdb");
    closed_db(&db, 100)?;
    // The application has the database open in this process: a second DuckDB instance on the
    // same file (POSIX locks do not stop it within one process) would checkpoint behind the
    // application's back.
    let app = Connection::open(&db)?;
    app.execute_batch("DELETE FROM measures WHERE id >= 90")?;
    let m = manager(DuckDbSource::new(&db), &dir.path().join("store"))?;
    match m.snapshot(SnapshotRequest::new("delete")) {
        Err(Error::InvalidInput { field, reason }) => ensure!(
            field == "source" && reason.contains("with_connection"),
            "{field}: {reason}"
        ),
        other => bail!("expected InvalidInput, got {other:?}"),
    }
    ensure!(m.list(&ListFilter::new())?.is_empty());
    app.execute_batch("INSERT INTO measures VALUES (500, 'still fine', 0)")?;
    ensure!(count(&app, "measures")? == 91);
    drop(app);
    ensure!(count(&open_read_only(&db)?, "measures")? == 91);
    Ok(())
}

/// A live DuckDB file that is no longer a database (magic bytes overwritten) is restored over,
/// and the safety snapshot keeps it as found, unverified.
#[test]
fn a_damaged_live_file_is_restored_over_and_kept_as_found() -> Result<()> {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.duckdb");
    closed_db(&db, 50)?;
    let store = dir.path().join("store");
    let m = manager(DuckDbSource::new(&db), &store)?;
    let good = take(&m, 1)?;
    fs::OpenOptions::new()
        .write(true)
        .open(&db)?
        .write_all_at(b"garbage!garbage!", 0)?;
    let damaged = fs::read(&db)?;

    let report = m.restore(&good.snapshot_id)?;
    ensure!(count(&open_read_only(&db)?, "measures")? == 50);
    let safety = m.get(&report.safety_snapshot.context("a safety snapshot")?)?;
    ensure!(
        fs::read(store.join(&safety.blob_key))? == damaged,
        "kept as found"
    );
    ensure!(safety.verified_at.is_none());
    ensure!(
        safety.description.contains("kept as found"),
        "{}",
        safety.description
    );
    match m.verify(&safety.snapshot_id) {
        Err(Error::NotADatabase { .. }) => Ok(()),
        other => bail!("verify of the damaged present: {other:?}"),
    }
}

/// A DuckDB file in a dedup store: cut into its 256 KiB blocks, unchanged blocks shared
/// between snapshots, restored whole.
#[test]
fn dedup_store_round_trip_shares_unchanged_blocks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.duckdb");
    closed_db(&db, 200_000)?;
    let m = SnapshotManager::builder()
        .source(DuckDbSource::new(&db))
        .store(snapshot::store::DedupStore::new(LocalStore::open(
            dir.path().join("store"),
        )?))
        .environment(Environment::persistent())
        .build()?;
    let added = |r: &SnapshotRecord| {
        r.extra
            .get("stored_bytes")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(u64::MAX)
    };
    let first = take(&m, 1)?;
    ensure!(added(&first) > 0 && added(&first) < first.size_bytes);
    let same = take(&m, 2)?;
    ensure!(
        added(&same) == 0,
        "an unchanged file added {}",
        added(&same)
    );
    {
        let conn = Connection::open(&db)?;
        conn.execute_batch("UPDATE measures SET value = -1 WHERE id = 7")?;
    }
    let changed = take(&m, 3)?;
    ensure!(
        added(&changed) < first.size_bytes / 3,
        "one row changed added {} of {} bytes",
        added(&changed),
        first.size_bytes
    );
    m.verify_with(&changed.snapshot_id, CheckLevel::Full)?;
    m.restore(&first.snapshot_id)?;
    let v: f64 =
        open_read_only(&db)?
            .query_row("SELECT value FROM measures WHERE id = 7", [], |r| r.get(0))?;
    ensure!((v - 10.5).abs() < 1e-9, "value {v}");
    ensure!(count(&open_read_only(&db)?, "measures")? == 200_000);
    Ok(())
}
