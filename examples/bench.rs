//! The performance benchmark of the snapshot library (issue 2, DESIGN.md §12): a ~1 GiB SQLite
//! database and a ~1 GiB DuckDB file, each copied every way there is, side by side in one run,
//! with each method's median time and its ratio to a durable copy of the same file.
//!
//! ```text
//! cargo run --example bench                        # 1 GiB each, 5 runs
//! SNAPSHOT_BENCH_MB=256 SNAPSHOT_BENCH_RUNS=3 cargo run --example bench
//! SNAPSHOT_BENCH_SKIP_DUCKDB=1 cargo run --example bench
//! ```
//!
//! | variable                        | default | meaning |
//! |---------------------------------|---------|---------|
//! | `SNAPSHOT_BENCH_MB`             | 1024    | size of the SQLite database, MiB |
//! | `SNAPSHOT_BENCH_DUCKDB_MB`      | 1024    | size of the DuckDB file, MiB |
//! | `SNAPSHOT_BENCH_RUNS`           | 5       | runs per method (the median is reported) |
//! | `SNAPSHOT_BENCH_FALLBACK_RUNS`  | runs    | runs of DuckDB's `EXPORT DATABASE` / `COPY FROM DATABASE` (slow; 0 skips them) |
//! | `SNAPSHOT_BENCH_SKIP_DUCKDB`    | unset   | `1`: SQLite only |
//! | `SNAPSHOT_BENCH_DIR`            | temp    | where to build the files (must be a real disk, not tmpfs) |
//!
//! Every copy is made durable (fsync of the file and of its directory), so the comparison is with
//! `cp` + `fsync`, the cheapest copy a backup can honestly call done. The page cache is warm, as
//! it is for an application's own database. Outputs are deleted between runs, outside the timing,
//! and each method starts on a quiet disk (`sync` first, untimed): on this kind of machine the
//! write-back of a deleted or just-written gigabyte otherwise lands on whichever method follows.
//! The timed work is I/O in the kernel (`copy_file_range`, fsync) and blake3; a debug build is
//! representative for it, but not for DuckDB's own CPU-bound `EXPORT`/`COPY FROM DATABASE`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use snapshot::{
    DuckDbSource, Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager,
    SnapshotRequest, SqliteSource,
};

const MIB: u64 = 1024 * 1024;

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// The file system type and mount point holding `path` (longest matching mount point).
fn file_system_of(path: &Path) -> (String, String) {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best = ("?".to_string(), "?".to_string());
    let mut best_len = 0;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(kind)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if path.starts_with(mnt) && mnt.len() >= best_len {
            best_len = mnt.len();
            best = (kind.to_string(), mnt.to_string());
        }
    }
    best
}

/// A scratch directory on a real disk: `SNAPSHOT_BENCH_DIR`, else the temp dir unless it is a
/// tmpfs (RAM would flatter every copy), else the current directory.
fn scratch_dir() -> Result<tempfile::TempDir> {
    let base = match std::env::var_os("SNAPSHOT_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let tmp = std::env::temp_dir();
            if file_system_of(&tmp).0 == "tmpfs" {
                std::env::current_dir()?
            } else {
                tmp
            }
        }
    };
    let (kind, mnt) = file_system_of(&base);
    if kind == "tmpfs" || kind == "ramfs" {
        bail!(
            "{} is on {kind}: set SNAPSHOT_BENCH_DIR to a directory on a disk",
            base.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("snapshot-bench-")
        .tempdir_in(&base)?;
    println!(
        "scratch: {} ({kind} mounted at {mnt})",
        dir.path().display()
    );
    Ok(dir)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The durable baseline: a kernel copy (`copy_file_range`, like `cp`), fsync of the copy and of
/// its directory.
fn durable_copy(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst)?;
    File::options().write(true).open(dst)?.sync_all()?;
    fsync_dir(dst.parent().context("no parent")?)
}

fn remove(path: &Path) -> Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)?;
    } else if path.exists() {
        fs::remove_file(path)?;
    }
    Ok(())
}

/// `sync`: writes back everything pending on every file system (untimed, before each method).
fn quiet_disk() -> Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    Ok(())
}

/// One benchmarked method and its measured runs.
struct Method {
    name: String,
    times: Vec<Duration>,
    target: Option<f64>,
}

impl Method {
    fn new(name: &str) -> Self {
        Method {
            name: name.to_string(),
            times: Vec::new(),
            target: None,
        }
    }

    fn target(mut self, ratio: f64) -> Self {
        self.target = Some(ratio);
        self
    }

    /// Times `f` once and records it. Every method starts on a quiet disk: what earlier steps
    /// left to write back (outputs deleted, files written) is flushed first, untimed, so that
    /// no method pays for another's I/O.
    fn time<T, E: Into<anyhow::Error>>(
        &mut self,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> Result<T> {
        quiet_disk()?;
        let t0 = Instant::now();
        let out = f()
            .map_err(Into::into)
            .with_context(|| format!("{} failed", self.name))?;
        self.times.push(t0.elapsed());
        Ok(out)
    }

    fn median(&self) -> Option<Duration> {
        let mut t = self.times.clone();
        t.sort();
        match t.len() {
            0 => None,
            n if n % 2 == 1 => Some(t[n / 2]),
            n => Some((t[n / 2 - 1] + t[n / 2]) / 2),
        }
    }
}

/// Prints the table; the first method is the durable copy every ratio refers to.
fn print_table(title: &str, methods: &[Method]) -> Vec<(String, f64, Option<f64>)> {
    println!("\n{title}");
    println!(
        "  {:<58} {:>5} {:>9} {:>9} {:>9} {:>9}  target",
        "method", "runs", "median", "min", "max", "× copy"
    );
    let base = methods[0]
        .median()
        .map(|d| d.as_secs_f64())
        .unwrap_or(f64::NAN);
    let mut ratios = Vec::new();
    for m in methods {
        let (Some(med), Some(min), Some(max)) =
            (m.median(), m.times.iter().min(), m.times.iter().max())
        else {
            println!("  {:<58} {:>5}", m.name, 0);
            continue;
        };
        let ratio = med.as_secs_f64() / base;
        let target = match m.target {
            Some(t) if ratio <= t => format!("≤ {t:.1}× met"),
            Some(t) => format!("≤ {t:.1}× MISSED"),
            None => String::new(),
        };
        println!(
            "  {:<58} {:>5} {:>8.3}s {:>8.3}s {:>8.3}s {:>8.2}×  {}",
            m.name,
            m.times.len(),
            med.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64(),
            ratio,
            target
        );
        ratios.push((m.name.clone(), ratio, m.target));
    }
    ratios
}

// --------------------------------------------------------------------------------------------
// SQLite

/// Builds a WAL-mode database of about `bytes`: 1000-byte random blobs, a counter row. Seeded with
/// random blobs, then doubled with `INSERT … SELECT` in big transactions (fast, no journal).
fn build_sqlite(path: &Path, bytes: u64) -> Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;
         CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
         CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT INTO counter VALUES (1, 0);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 32768)
         INSERT INTO blobs(data) SELECT randomblob(1000) FROM c;",
    )?;
    let size = |c: &rusqlite::Connection| -> Result<i64> {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(pages * page)
    };
    let bytes = i64::try_from(bytes)?;
    loop {
        let now = size(&conn)?;
        if now >= bytes {
            break;
        }
        let rows: i64 = conn.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))?;
        let want = ((bytes - now) as f64 / now as f64 * rows as f64).ceil() as i64;
        conn.execute(
            "INSERT INTO blobs(data) SELECT data FROM blobs ORDER BY id LIMIT ?1",
            [want.clamp(1, rows)],
        )?;
    }
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// A writer committing continuously (a counter update and a new blob per transaction) until
/// stopped; returns its commit count.
struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    handle: JoinHandle<Result<u64>>,
}

impl Writer {
    fn start(db: &Path) -> Result<Writer> {
        Self::start_with(db, false)
    }

    /// `heavy`: commits as fast as it can (`synchronous=OFF`, no pause) — the load under which
    /// a snapshot that chased the log would never end.
    fn start_with(db: &Path, heavy: bool) -> Result<Writer> {
        let conn = rusqlite::Connection::open(db)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(if heavy {
            "PRAGMA synchronous=OFF"
        } else {
            "PRAGMA synchronous=NORMAL"
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, commits) = (stop.clone(), commits.clone());
            std::thread::spawn(move || -> Result<u64> {
                while !stop.load(Ordering::Relaxed) {
                    conn.execute_batch(
                        "BEGIN IMMEDIATE;
                         UPDATE counter SET n = n + 1 WHERE id = 1;
                         INSERT INTO blobs(data) VALUES (randomblob(1000));
                         COMMIT;",
                    )?;
                    commits.fetch_add(1, Ordering::Relaxed);
                    if !heavy {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(commits.load(Ordering::Relaxed))
            })
        };
        let w = Writer {
            stop,
            commits,
            handle,
        };
        // Let it get going before anything is timed.
        let t0 = Instant::now();
        while w.commits.load(Ordering::Relaxed) < 20 {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("the writer made no progress");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(w)
    }

    fn committed(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?
    }
}

fn bench_manager(source: impl snapshot::Source + 'static, store: &Path) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(store)?)
        .retention(RetentionPolicy::new().keep_last(1000))
        .environment(Environment::persistent())
        .build()?)
}

/// Deletes all but the newest snapshot (pinned ones unpinned first, safety snapshots past any
/// grace), outside the timing.
fn keep_only_newest(m: &SnapshotManager) -> Result<()> {
    for r in m.list(&ListFilter::new())? {
        if r.pinned {
            m.pin(&r.snapshot_id, false)?;
        }
    }
    m.prune_with(
        &RetentionPolicy::new()
            .keep_last(1)
            .keep_safety(0)
            .safety_grace(chrono::Duration::zero()),
    )?;
    Ok(())
}

fn newest(m: &SnapshotManager) -> Result<String> {
    Ok(m.list(&ListFilter::new().limit(1))?
        .first()
        .context("no snapshot")?
        .snapshot_id
        .clone())
}

fn bench_sqlite(dir: &Path, mb: u64, runs: u64) -> Result<Vec<(String, f64, Option<f64>)>> {
    let db = dir.join("app.db");
    let store = dir.join("sqlite-store");
    let out = dir.join("out");
    fs::create_dir_all(&out)?;
    let t0 = Instant::now();
    build_sqlite(&db, mb * MIB)?;
    let size = fs::metadata(&db)?.len();
    println!(
        "\nbuilt {} ({:.1} MiB, WAL mode) in {:.1}s",
        db.display(),
        size as f64 / MIB as f64,
        t0.elapsed().as_secs_f64()
    );
    let manager = bench_manager(SqliteSource::new(&db), &store)?;
    // Warm the page cache the way a running application's database is.
    durable_copy(&db, &out.join("warm"))?;
    remove(&out.join("warm"))?;

    let mut copy = Method::new("durable copy: copy_file_range + fsync (baseline)");
    let mut backup = Method::new("SQLite online backup API (one step)");
    let mut vacuum = Method::new("VACUUM INTO");
    let mut ours_idle = Method::new("our snapshot(), idle database").target(1.2);
    let mut ours_live = Method::new("our snapshot(), writer thread committing").target(1.2);
    let mut ours_heavy = Method::new("our snapshot(), two heavy writers (sync off, no pause)");
    let mut verify = Method::new("our verify() (blake3 + quick_check)");
    let mut restore = Method::new("our restore() (verify, safety copy, swap, check)").target(1.3);
    let mut restore_to = Method::new("our restore_to() a new file (verify, check)").target(1.3);
    let mut commits_during = Vec::new();

    for run in 0..runs {
        eprint!("sqlite run {}/{runs}…", run + 1);
        let dst = out.join("copy.db");
        copy.time(|| durable_copy(&db, &dst))?;
        remove(&dst)?;

        let dst = out.join("backup.db");
        {
            let src = rusqlite::Connection::open(&db)?;
            let mut to = rusqlite::Connection::open(&dst)?;
            backup.time(|| -> Result<()> {
                let b = rusqlite::backup::Backup::new(&src, &mut to)?;
                while b.step(-1)? != rusqlite::backup::StepResult::Done {}
                drop(b);
                fsync_dir(&out)
            })?;
        }
        remove(&dst)?;

        let dst = out.join("vacuum.db");
        {
            let src = rusqlite::Connection::open(&db)?;
            vacuum.time(|| -> Result<()> {
                src.execute("VACUUM INTO ?1", [dst.to_str().context("path")?])?;
                File::options().write(true).open(&dst)?.sync_all()?;
                fsync_dir(&out)
            })?;
        }
        remove(&dst)?;

        ours_idle.time(|| manager.snapshot(SnapshotRequest::new("bench").entity("run", run)))?;
        keep_only_newest(&manager)?;

        let writer = Writer::start(&db)?;
        let before = writer.committed();
        let taken =
            ours_live.time(|| manager.snapshot(SnapshotRequest::new("bench").entity("run", run)));
        let during = writer.committed() - before;
        writer.stop()?;
        taken?;
        commits_during.push(during);
        keep_only_newest(&manager)?;

        // Two writers flat out: the snapshot folds the log as it stood when it began, so it
        // ends (it used to chase the log for as long as they wrote).
        let heavy = [
            Writer::start_with(&db, true)?,
            Writer::start_with(&db, true)?,
        ];
        let taken =
            ours_heavy.time(|| manager.snapshot(SnapshotRequest::new("bench").entity("run", run)));
        for w in heavy {
            w.stop()?;
        }
        taken?;
        keep_only_newest(&manager)?;

        let id = newest(&manager)?;
        verify.time(|| manager.verify(&id))?;

        // No connection may hold the database during a restore (the writer is stopped).
        restore.time(|| manager.restore(&id))?;
        keep_only_newest(&manager)?;

        let id = newest(&manager)?;
        let dst = out.join("restored.db");
        restore_to.time(|| manager.restore_to(&id, &dst))?;
        remove(&dst)?;
        eprintln!(" done");
    }
    let commits: u64 = commits_during.iter().sum();
    let title = format!(
        "SQLite, {:.0} MiB WAL database, median of {runs} runs (the writer committed {commits} \
         transactions during the live snapshots: {:?})",
        size as f64 / MIB as f64,
        commits_during
    );
    Ok(print_table(
        &title,
        &[
            copy, backup, vacuum, ours_idle, ours_live, ours_heavy, verify, restore, restore_to,
        ],
    ))
}

// --------------------------------------------------------------------------------------------
// DuckDB

/// Builds a DuckDB file of about `bytes`: random 64-bit hashes and md5 strings (which compress
/// poorly), appended in chunks and checkpointed until the file is big enough.
fn build_duckdb(path: &Path, bytes: u64) -> Result<()> {
    let conn = duckdb::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE facts(id BIGINT, h1 UBIGINT, h2 UBIGINT, label VARCHAR, value DOUBLE);",
    )?;
    let mut next = 0u64;
    let chunk = 2_000_000u64;
    loop {
        conn.execute_batch(&format!(
            "INSERT INTO facts SELECT range, hash(range), hash(range * 7 + 1), md5(range::VARCHAR),
                    random() FROM range({next}, {end});
             CHECKPOINT;",
            end = next + chunk
        ))?;
        next += chunk;
        if fs::metadata(path)?.len() >= bytes {
            break;
        }
    }
    drop(conn);
    Ok(())
}

fn bench_duckdb(
    dir: &Path,
    mb: u64,
    runs: u64,
    fallback_runs: u64,
) -> Result<Vec<(String, f64, Option<f64>)>> {
    let db = dir.join("app.duckdb");
    let store = dir.join("duckdb-store");
    let out = dir.join("out");
    fs::create_dir_all(&out)?;
    let t0 = Instant::now();
    build_duckdb(&db, mb * MIB)?;
    let size = fs::metadata(&db)?.len();
    println!(
        "\nbuilt {} ({:.1} MiB) in {:.1}s",
        db.display(),
        size as f64 / MIB as f64,
        t0.elapsed().as_secs_f64()
    );
    durable_copy(&db, &out.join("warm"))?;
    remove(&out.join("warm"))?;
    let closed = bench_manager(DuckDbSource::new(&db), &store)?;

    let mut copy = Method::new("durable copy: copy_file_range + fsync (baseline)");
    let mut ours_conn =
        Method::new("our snapshot(), app's connection open (CHECKPOINT+copy)").target(1.2);
    let mut ours_closed =
        Method::new("our snapshot(), closed file (open+CHECKPOINT+copy)").target(1.2);
    let mut ckpt_conn = Method::new("  of which CHECKPOINT + BEGIN/COMMIT (no copy)");
    let mut ckpt_closed = Method::new("  of which open + CHECKPOINT + close (no copy)");
    let mut export = Method::new("EXPORT DATABASE (CSV, not fsynced)");
    let mut copy_from = Method::new("COPY FROM DATABASE into an ATTACHed file");
    let mut verify = Method::new("our verify() (blake3 + open read-only)");
    let mut restore = Method::new("our restore() (verify, safety copy, swap, check)").target(1.3);
    let mut restore_to = Method::new("our restore_to() a new file (verify, check)").target(1.3);

    for run in 0..runs {
        eprint!("duckdb run {}/{runs}…", run + 1);
        let dst = out.join("copy.duckdb");
        copy.time(|| durable_copy(&db, &dst))?;
        remove(&dst)?;

        ours_closed.time(|| closed.snapshot(SnapshotRequest::new("bench").entity("run", run)))?;
        keep_only_newest(&closed)?;
        // The engine's share of it: DuckDB's fixed cost, CPU-bound (slow in a debug build).
        ckpt_closed.time(|| -> Result<()> {
            duckdb::Connection::open(&db)?.execute_batch("CHECKPOINT")?;
            Ok(())
        })?;

        {
            // The application's connection: open for this part only (one instance per file).
            let app = duckdb::Connection::open(&db)?;
            let through_app = bench_manager(DuckDbSource::with_connection(&db, &app)?, &store)?;
            ours_conn
                .time(|| through_app.snapshot(SnapshotRequest::new("bench").entity("run", run)))?;
            keep_only_newest(&through_app)?;
            drop(through_app);
            ckpt_conn.time(|| {
                app.execute_batch(
                    "CHECKPOINT; BEGIN TRANSACTION; SELECT 1 FROM duckdb_tables() LIMIT 1; COMMIT;",
                )
            })?;

            if run < fallback_runs {
                let dst = out.join("export");
                export.time(|| -> Result<()> {
                    app.execute_batch(&format!("EXPORT DATABASE '{}'", dst.display()))?;
                    Ok(())
                })?;
                remove(&dst)?;

                let dst = out.join("attached.duckdb");
                let name: String = app.query_row("SELECT current_database()", [], |r| r.get(0))?;
                copy_from.time(|| -> Result<()> {
                    app.execute_batch(&format!(
                        "ATTACH '{}' AS bench_copy; COPY FROM DATABASE \"{name}\" TO bench_copy;
                         DETACH bench_copy;",
                        dst.display()
                    ))?;
                    File::options().write(true).open(&dst)?.sync_all()?;
                    fsync_dir(&out)
                })?;
                remove(&dst)?;
                remove(&out.join("attached.duckdb.wal"))?;
            }
        }

        let id = newest(&closed)?;
        verify.time(|| closed.verify(&id))?;
        restore.time(|| closed.restore(&id))?;
        keep_only_newest(&closed)?;
        let id = newest(&closed)?;
        let dst = out.join("restored.duckdb");
        restore_to.time(|| closed.restore_to(&id, &dst))?;
        remove(&dst)?;
        eprintln!(" done");
    }
    let title = format!(
        "DuckDB, {:.0} MiB file, median of {runs} runs ({fallback_runs} for EXPORT / COPY FROM \
         DATABASE)",
        size as f64 / MIB as f64
    );
    Ok(print_table(
        &title,
        &[
            copy,
            ours_conn,
            ckpt_conn,
            ours_closed,
            ckpt_closed,
            export,
            copy_from,
            verify,
            restore,
            restore_to,
        ],
    ))
}

fn main() -> Result<()> {
    let mb = env_u64("SNAPSHOT_BENCH_MB", 1024)?;
    let duck_mb = env_u64("SNAPSHOT_BENCH_DUCKDB_MB", 1024)?;
    let runs = env_u64("SNAPSHOT_BENCH_RUNS", 5)?.max(1);
    let fallback_runs = env_u64("SNAPSHOT_BENCH_FALLBACK_RUNS", runs)?.min(runs);
    let skip_duck = std::env::var("SNAPSHOT_BENCH_SKIP_DUCKDB").is_ok_and(|v| v == "1");
    println!(
        "snapshot benchmark ({} build): SQLite {mb} MiB, DuckDB {}, {runs} runs",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if skip_duck {
            "skipped".to_string()
        } else {
            format!("{duck_mb} MiB")
        }
    );
    let scratch = scratch_dir()?;
    let mut all = bench_sqlite(scratch.path(), mb, runs)?;
    if !skip_duck {
        all.extend(bench_duckdb(scratch.path(), duck_mb, runs, fallback_runs)?);
    }
    println!("\ntargets:");
    let mut missed = 0;
    for (name, ratio, target) in &all {
        if let Some(t) = target {
            let ok = ratio <= t;
            missed += usize::from(!ok);
            println!(
                "  {} {name}: {ratio:.2}× (target ≤ {t:.1}×)",
                if ok { "met   " } else { "MISSED" }
            );
        }
    }
    if missed > 0 {
        println!("{missed} target(s) missed");
    }
    Ok(())
}
