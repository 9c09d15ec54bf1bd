//! What `#[with_snapshot]` costs per call, side by side with its baselines.
//!
//! Run with `cargo run --release --example macro_bench` (numbers from a debug build say little,
//! above all for DuckDB, whose C++ is then compiled without optimisation). It prints:
//!
//! 1. the disabled path (a manager disabled on an ephemeral host): ns per call, against the
//!    same function without the attribute (target: under 1 µs);
//! 2. an enabled call on a ~30 MB live SQLite database, against a plain copy + fsync of that
//!    file and against a bare `SnapshotManager::snapshot` (target: ≤ 1.2× the copy);
//! 3. the same on a ~33 MB DuckDB file held open by the application, against
//!    `CHECKPOINT` + copy + fsync. Skip it with `MACRO_BENCH_SKIP_DUCKDB=1`.
//!
//! Every figure is a median of warm runs (the file is in the page cache, as it is for an app
//! that just used it). `MACRO_BENCH_RUNS` sets the number of runs (default 15).

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use snapshot::{
    Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager, SnapshotRequest,
    SqliteSource, with_snapshot,
};

#[inline(never)]
fn plain(id: u64) -> snapshot::Result<u64> {
    Ok(black_box(id))
}

#[inline(never)]
#[with_snapshot("delete", "measure", manager = m)]
fn wrapped(m: &SnapshotManager, id: u64) -> snapshot::Result<u64> {
    Ok(black_box(id))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:7.2} ms", d.as_secs_f64() * 1e3)
}

fn runs() -> usize {
    std::env::var("MACRO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
        .max(3)
}

/// Times `f` `runs` times after two warm-up calls.
fn time(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    for _ in 0..2 {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(median(samples))
}

/// The durable-copy baseline: copy (the kernel's `copy_file_range`) and fsync, then remove.
fn copy_fsync(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::copy(src, dst)?;
    File::open(dst)?.sync_all()?;
    std::fs::remove_file(dst)?;
    Ok(())
}

fn size_mb(path: &Path) -> anyhow::Result<f64> {
    Ok(std::fs::metadata(path)?.len() as f64 / (1024.0 * 1024.0))
}

fn disabled_path(dir: &Path) -> anyhow::Result<()> {
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(dir.join("never-read.db")))
        .store(LocalStore::open(dir.join("disabled-store"))?)
        .environment(Environment::ephemeral("benchmark: an ephemeral host"))
        .build()?;
    assert!(!m.is_enabled());
    let n: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        2_000_000
    };
    let mut best_plain = f64::MAX;
    let mut best_wrapped = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..n {
            black_box(plain(black_box(i))?);
        }
        best_plain = best_plain.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        let t = Instant::now();
        for i in 0..n {
            black_box(wrapped(&m, black_box(i))?);
        }
        best_wrapped = best_wrapped.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    println!("1. disabled path ({n} calls, best of 5)");
    println!("   without the attribute   {best_plain:8.1} ns/call");
    println!(
        "   with the attribute      {best_wrapped:8.1} ns/call  (+{:.1} ns; target < 1000 ns)",
        best_wrapped - best_plain
    );
    Ok(())
}

fn sqlite_part(dir: &Path, runs: usize) -> anyhow::Result<()> {
    let db = dir.join("live.db");
    let conn = rusqlite::Connection::open(&db)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "CREATE TABLE measure (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 29000)
         INSERT INTO measure SELECT i, randomblob(1000) FROM n;",
    )?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.join("sqlite-store"))?)
        .retention(RetentionPolicy::default())
        .environment(Environment::persistent())
        .build()?;

    let copy = time(runs, || copy_fsync(&db, &dir.join("copy.db")))?;
    let bare = time(runs, || {
        m.snapshot(SnapshotRequest::new("delete").entity("measure", 1))?;
        Ok(())
    })?;
    let call = time(runs, || {
        wrapped(&m, 1)?;
        Ok(())
    })?;
    assert_eq!(m.list(&ListFilter::new())?.len(), 10, "retention keeps 10");
    println!(
        "\n2. live SQLite database, {:.1} MB (WAL mode, a connection open), median of {runs}",
        size_mb(&db)?
    );
    println!("   copy + fsync                 {}", ms(copy));
    println!(
        "   SnapshotManager::snapshot    {}  ({:.2}× the copy)",
        ms(bare),
        bare.as_secs_f64() / copy.as_secs_f64()
    );
    println!(
        "   #[with_snapshot] call        {}  ({:.2}× the copy; target ≤ 1.2×)",
        ms(call),
        call.as_secs_f64() / copy.as_secs_f64()
    );
    drop(conn);
    Ok(())
}

fn duckdb_part(dir: &Path, runs: usize) -> anyhow::Result<()> {
    let db = dir.join("live.duckdb");
    let conn = duckdb::Connection::open(&db)?;
    conn.execute_batch(
        "CREATE TABLE measure AS
             SELECT range AS id, md5(range::VARCHAR) || md5((range * 7)::VARCHAR) AS payload
             FROM range(560000);
         CHECKPOINT;",
    )?;
    let m = SnapshotManager::builder()
        .source(snapshot::DuckDbSource::with_connection(&db, &conn)?)
        .store(LocalStore::open(dir.join("duckdb-store"))?)
        .retention(RetentionPolicy::default())
        .environment(Environment::persistent())
        .build()?;

    let copy = time(runs, || {
        conn.execute_batch("CHECKPOINT")?;
        copy_fsync(&db, &dir.join("copy.duckdb"))
    })?;
    let call = time(runs, || {
        wrapped(&m, 1)?;
        Ok(())
    })?;
    println!(
        "\n3. DuckDB file held open by the app, {:.1} MB, median of {runs}{}",
        size_mb(&db)?,
        if cfg!(debug_assertions) {
            " (debug build: DuckDB unoptimised)"
        } else {
            ""
        }
    );
    println!("   CHECKPOINT + copy + fsync    {}", ms(copy));
    println!(
        "   #[with_snapshot] call        {}  ({:.2}× the copy)",
        ms(call),
        call.as_secs_f64() / copy.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runs = runs();
    println!(
        "#[with_snapshot] benchmark ({} build), in {}\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        dir.path().display()
    );
    disabled_path(dir.path())?;
    sqlite_part(dir.path(), runs)?;
    if std::env::var_os("MACRO_BENCH_SKIP_DUCKDB").is_none() {
        duckdb_part(dir.path(), runs)?;
    }
    Ok(())
}
