//! PostgreSQL snapshots side by side with `pg_dump -Fc` and whole restores with `pg_restore`, in
//! one run, on a pgbench database: idle, then under a pgbench load.
//!
//! For each round: `snapshot` (the library's create: a consistent export of every table into a
//! compressed bundle, checksummed and catalogued) against `pg_dump -Fc` of the same database
//! (time and size), then a whole restore of that snapshot (verify, safety snapshot, every table
//! replaced in one transaction) against `pg_restore --clean --if-exists` of the dump into the
//! same database. The medians and their ratios are printed.
//!
//! Run with: `cargo run --release --example pg_bench --features postgres`, with
//! `SNAPSHOT_BENCH_PG_URL` (or `SNAPSHOT_TEST_PG_URL`) naming a superuser URL of a server
//! whose `pgbench`, `pg_dump` and `pg_restore` are on PATH or in /usr/lib/postgresql/*/bin
//! (`scripts/pg-cluster start DIR` prints such a URL). `PG_BENCH_SCALE` (default 10: 1 M
//! accounts, ~156 MB), `PG_BENCH_RUNS` (default 3), `PG_BENCH_CLIENTS` (default 4: the load).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use snapshot::{
    Environment, LocalStore, PostgresSource, RetentionPolicy, SnapshotManager, SnapshotRequest,
};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A PostgreSQL client program: on PATH, else in the newest /usr/lib/postgresql/*/bin.
fn tool(name: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: install PostgreSQL's client programs"))
}

/// The URL of database `db` on the server of `url` (a `postgres://…/dbname` URL).
fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, _) = url
        .rsplit_once('/')
        .context("the URL must be postgres://user@host:port/database")?;
    Ok(format!("{base}/{db}"))
}

fn run(cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed().as_secs_f64())
}

/// A pgbench load of `clients` clients on `url` until stopped.
fn load(url: &str, clients: u32) -> Result<Child> {
    Ok(Command::new(tool("pgbench")?)
        .args(["-n", "-c", &clients.to_string(), "-T", "3600", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

struct Round {
    snap_s: f64,
    snap_bytes: u64,
    dump_s: f64,
    dump_bytes: u64,
    restore_s: Option<f64>,
    pg_restore_s: Option<f64>,
}

fn round(m: &SnapshotManager, url: &str, dir: &Path, i: u32, restore: bool) -> Result<Round> {
    let start = Instant::now();
    let rec = m
        .snapshot(SnapshotRequest::new("bench"))?
        .into_record()
        .context("the manager is disabled")?;
    let snap_s = start.elapsed().as_secs_f64();
    let dump = dir.join(format!("round{i}.dump"));
    let dump_s = run(Command::new(tool("pg_dump")?)
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(url))?;
    let dump_bytes = std::fs::metadata(&dump)?.len();
    let (mut restore_s, mut pg_restore_s) = (None, None);
    if restore {
        let start = Instant::now();
        m.restore(&rec.snapshot_id)?;
        restore_s = Some(start.elapsed().as_secs_f64());
        pg_restore_s = Some(run(Command::new(tool("pg_restore")?)
            .args(["--clean", "--if-exists", "-d", url])
            .arg(&dump))?);
    }
    Ok(Round {
        snap_s,
        snap_bytes: rec.size_bytes,
        dump_s,
        dump_bytes,
        restore_s,
        pg_restore_s,
    })
}

fn report(label: &str, rounds: &[Round]) {
    let snap = median(rounds.iter().map(|r| r.snap_s).collect());
    let dump = median(rounds.iter().map(|r| r.dump_s).collect());
    let sb = median(rounds.iter().map(|r| r.snap_bytes as f64).collect());
    let db = median(rounds.iter().map(|r| r.dump_bytes as f64).collect());
    println!(
        "{label:<8} create    snapshot {snap:6.2} s   pg_dump -Fc {dump:6.2} s   ratio {:.2}×",
        snap / dump
    );
    println!(
        "{label:<8} size      snapshot {:6.2} MB  pg_dump -Fc {:6.2} MB  ratio {:.2}×",
        sb / 1e6,
        db / 1e6,
        sb / db
    );
    let restores: Vec<f64> = rounds.iter().filter_map(|r| r.restore_s).collect();
    let pg_restores: Vec<f64> = rounds.iter().filter_map(|r| r.pg_restore_s).collect();
    if !restores.is_empty() {
        let (r, p) = (median(restores), median(pg_restores));
        println!(
            "{label:<8} restore   snapshot {r:6.2} s   pg_restore  {p:6.2} s   ratio {:.2}×",
            r / p
        );
    }
}

fn main() -> Result<()> {
    let admin = std::env::var("SNAPSHOT_BENCH_PG_URL")
        .or_else(|_| std::env::var("SNAPSHOT_TEST_PG_URL"))
        .context("set SNAPSHOT_BENCH_PG_URL to a superuser URL (scripts/pg-cluster start DIR)")?;
    let scale = env_u32("PG_BENCH_SCALE", 10);
    let runs = env_u32("PG_BENCH_RUNS", 3).max(1);
    let clients = env_u32("PG_BENCH_CLIENTS", 4);
    let db = format!("snapshot_pg_bench_{}", std::process::id());
    let mut client = PostgresSource::new(&admin)?.connect()?;
    client.batch_execute(&format!("CREATE DATABASE {db}"))?;
    let url = with_database(&admin, &db)?;
    let result = (|| -> Result<()> {
        let start = Instant::now();
        run(Command::new(tool("pgbench")?)
            .args(["-i", "-q", "-s", &scale.to_string()])
            .arg(&url))?;
        println!(
            "pgbench scale {scale} initialised in {:.1} s; {runs} run(s) each",
            start.elapsed().as_secs_f64()
        );
        let dir = tempfile::tempdir()?;
        let m = SnapshotManager::builder()
            .source(PostgresSource::new(&url)?)
            .store(LocalStore::open(dir.path().join("store"))?)
            .retention(RetentionPolicy::new().keep_last(2))
            .environment(Environment::persistent())
            .build()?;
        let idle: Vec<Round> = (0..runs)
            .map(|i| round(&m, &url, dir.path(), i, true))
            .collect::<Result<_>>()?;
        report("idle", &idle);
        let mut pgbench = load(&url, clients)?;
        std::thread::sleep(Duration::from_secs(2));
        let loaded: Result<Vec<Round>> = (0..runs)
            .map(|i| round(&m, &url, dir.path(), runs + i, false))
            .collect();
        let _ = pgbench.kill();
        let _ = pgbench.wait();
        let loaded = loaded?;
        report(&format!("load {clients}c"), &loaded);
        if loaded.iter().any(|r| r.snap_bytes == 0) {
            bail!("an empty snapshot");
        }
        Ok(())
    })();
    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    result
}
