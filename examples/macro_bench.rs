//! What `#[with_snapshot]` costs per call, side by side with its baselines.
//!
//! Run with `cargo run --release --example macro_bench` (numbers from a debug build say little,
//! above all for DuckDB, whose C++ is then compiled without optimisation). It prints:
//!
//! 1. the disabled path (a manager disabled on an ephemeral host): ns per call, against the
//!    same function without the attribute (target: under 1 µs);
//! 2. an enabled call on a ~30 MB live SQLite database, against a plain copy + fsync of that
//!    file and against a bare `SnapshotManager::snapshot` (target: ≤ 1.2× the copy), and the
//!    part of it that records the outcome of the call;
//! 3. the same on a ~33 MB DuckDB file held open by the application, against
//!    `CHECKPOINT` + copy + fsync. Skip it with `MACRO_BENCH_SKIP_DUCKDB=1`.
//!
//! Every figure is a median of warm runs (the file is in the page cache, as it is for an app
//! that just used it); the contenders take turns, so they share the machine's conditions, and
//! the store is first filled to its retention (10), so every measured snapshot also prunes one,
//! as in a running application. The space of the pruned snapshot is freed in the background
//! (see `LocalStore`); the benchmark waits for that untimed after each snapshot, as it removes
//! the baseline's copy untimed, so that no contender pays for another's background work. `MACRO_BENCH_RUNS` sets the number of rounds (default 15).

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use snapshot::StoreExt;
use snapshot::{
    Environment, ListFilter, LocalStore, Outcome, RetentionPolicy, SnapshotManager,
    SnapshotRequest, SqliteSource, with_snapshot,
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

/// A contender: one measured operation (it may do untimed work around the part it times).
type Contender<'a> = Box<dyn FnMut() -> anyhow::Result<Duration> + 'a>;

/// Runs the contenders in turn, `runs` rounds after two warm-up rounds, so that they share the
/// machine's conditions (page cache, disk, other load); returns each one's median.
fn race(runs: usize, contenders: &mut [Contender<'_>]) -> anyhow::Result<Vec<Duration>> {
    let mut samples = vec![Vec::with_capacity(runs); contenders.len()];
    for round in 0..runs + 2 {
        for (c, out) in contenders.iter_mut().zip(samples.iter_mut()) {
            let took = c()?;
            if round >= 2 {
                out.push(took);
            }
        }
    }
    Ok(samples.into_iter().map(median).collect())
}

/// Times `f`.
fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

/// The durable-copy baseline, timed: copy (the kernel's `copy_file_range`) and fsync. The
/// copy is removed afterwards, untimed.
fn copy_fsync(src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let took = timed(|| {
        std::fs::copy(src, dst)?;
        File::open(dst)?.sync_all()?;
        Ok(())
    })?;
    std::fs::remove_file(dst)?;
    Ok(took)
}

/// Lets the store finish freeing what the measured snapshot pruned (untimed, as the baseline
/// removes its copy untimed), so that no contender pays for another's background work.
fn settled(m: &SnapshotManager, took: anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    m.store().settle()?;
    took
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
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30600)
         INSERT INTO measure SELECT i, randomblob(1000) FROM n;",
    )?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.join("sqlite-store"))?)
        .retention(RetentionPolicy::default())
        .environment(Environment::persistent())
        .build()?;

    // Fill the store up to its retention first: every measured snapshot then also prunes one,
    // as it does in a running application.
    for _ in 0..10 {
        m.snapshot(SnapshotRequest::new("warm-up"))?;
    }
    let copy_path = dir.join("copy.db");
    let newest = || -> anyhow::Result<String> {
        Ok(m.list(&ListFilter::new().limit(1))?[0].snapshot_id.clone())
    };
    let mut contenders: Vec<Contender<'_>> = vec![
        Box::new(|| copy_fsync(&db, &copy_path)),
        Box::new(|| {
            settled(
                &m,
                timed(|| {
                    m.snapshot(SnapshotRequest::new("delete").entity("measure", 1))?;
                    Ok(())
                }),
            )
        }),
        Box::new(|| {
            settled(
                &m,
                timed(|| {
                    wrapped(&m, 1)?;
                    Ok(())
                }),
            )
        }),
        Box::new(|| {
            // The newest record is the call's, committed: mark it failed (an unchanged
            // outcome would not be written at all).
            let id = newest()?;
            timed(|| Ok(m.set_outcome(&id, Outcome::Failed)?))
        }),
    ];
    let medians = race(runs, &mut contenders)?;
    drop(contenders);
    let [copy, bare, call, outcome] = medians[..] else {
        unreachable!("four contenders")
    };
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
    println!(
        "     of which the outcome update (set_outcome: one catalog write) {}",
        ms(outcome)
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
             FROM range(1000000);
         CHECKPOINT;",
    )?;
    let m = SnapshotManager::builder()
        .source(snapshot::DuckDbSource::with_connection(&db, &conn)?)
        .store(LocalStore::open(dir.join("duckdb-store"))?)
        .retention(RetentionPolicy::default())
        .environment(Environment::persistent())
        .build()?;

    for _ in 0..10 {
        m.snapshot(SnapshotRequest::new("warm-up"))?;
    }
    let copy_path = dir.join("copy.duckdb");
    let mut contenders: Vec<Contender<'_>> = vec![
        Box::new(|| {
            let took = timed(|| {
                conn.execute_batch("CHECKPOINT")?;
                std::fs::copy(&db, &copy_path)?;
                File::open(&copy_path)?.sync_all()?;
                Ok(())
            })?;
            std::fs::remove_file(&copy_path)?;
            Ok(took)
        }),
        Box::new(|| {
            settled(
                &m,
                timed(|| {
                    wrapped(&m, 1)?;
                    Ok(())
                }),
            )
        }),
    ];
    let medians = race(runs, &mut contenders)?;
    drop(contenders);
    let [copy, call] = medians[..] else {
        unreachable!("two contenders")
    };
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
