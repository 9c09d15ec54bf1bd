//! Incremental snapshots, side by side in one run on the same SQLite database: after each round
//! of 1% random-row updates (then rounds of 1% contiguous updates) a snapshot by (a) our full
//! copy (`LocalStore`), (b) our dedup store (`DedupStore` over a `LocalStore`), (c) `restic
//! backup` of the file into a repository in a temp dir; then a restore of the last snapshot by
//! each, and a durable copy of the file as the baseline.
//!
//! ```text
//! cargo run --release --example incremental_bench --features dedup   # 1 GiB
//! SNAPSHOT_BENCH_MB=128 cargo run --example incremental_bench --features dedup
//! ```
//!
//! | variable                  | default | meaning |
//! |---------------------------|---------|---------|
//! | `SNAPSHOT_BENCH_MB`       | 1024    | size of the database, MiB |
//! | `SNAPSHOT_BENCH_ROUNDS`   | 10      | rounds of random updates (then half as many contiguous) |
//! | `SNAPSHOT_BENCH_DIR`      | temp    | where to build the files (a real disk, not tmpfs) |
//!
//! The full copies' store column is what keeping every copy takes (the store itself keeps the
//! last two, so that a 1 GiB run fits on a small disk). The database is in rollback-journal mode, so that the file restic reads holds every change
//! (in WAL mode the changes would sit in the `-wal`, which restic does not fold). Each method
//! starts on a quiet disk (`sync`, untimed). restic comes from the system's packages (Debian:
//! `apt-get install restic`); the run fails, saying so, when it is missing. The last line is
//! `summary: store/restic X.XX, snapshot/full-copy Y.YY, snapshot/restic Z.ZZ,
//! restore/durable-copy W.WW` — sizes after the random rounds, times the medians of the
//! incremental snapshots.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rusqlite::Connection;
use snapshot::store::DedupStore;
use snapshot::{
    CheckLevel, Environment, LocalStore, RestoreOptions, RetentionPolicy, SnapshotManager,
    SnapshotRequest, SqliteSource,
};

const MIB: u64 = 1024 * 1024;
const ROW_BYTES: u64 = 152;

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// A small, fast pseudo-random sequence (the same in every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: &[&str] = &[
    "hedge",
    "pond",
    "meadow",
    "orchard",
    "wetland",
    "copse",
    "verge",
    "scrub",
    "grassland",
    "heath",
    "fen",
    "reedbed",
    "ditch",
    "bank",
    "field",
    "margin",
    "wood",
    "stream",
];

fn phrase(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
    }
    s
}

/// A database of about `mb` MiB: survey rows with text, numbers and dates.
fn build(path: &Path, mb: u64, rng: &mut Rng) -> Result<u64> {
    let rows = mb * MIB / ROW_BYTES;
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF;
         CREATE TABLE survey(id INTEGER PRIMARY KEY, site TEXT NOT NULL, habitat TEXT NOT NULL,
             area REAL NOT NULL, count INTEGER NOT NULL, surveyed TEXT NOT NULL,
             note TEXT NOT NULL);",
    )?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO survey(id, site, habitat, area, count, surveyed, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for id in 0..rows {
            let r = rng.next();
            ins.execute(rusqlite::params![
                id as i64,
                format!("site-{:06}", r % 500_000),
                phrase(rng, 2),
                (r % 100_000) as f64 / 7.0,
                ((r >> 20) % 10_000) as i64,
                format!("20{:02}-{:02}-{:02}", 16 + r % 10, 1 + r % 12, 1 + r % 28),
                phrase(rng, 14),
            ])?;
        }
    }
    tx.commit()?;
    Ok(rows)
}

/// Updates 1% of the rows: at random, or one contiguous run starting at a random row.
fn update(path: &Path, rows: u64, contiguous: bool, rng: &mut Rng) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA synchronous=OFF")?;
    let n = (rows / 100).max(1);
    let tx = conn.unchecked_transaction()?;
    {
        let mut up = tx.prepare("UPDATE survey SET count = count + 1, note = ?2 WHERE id = ?1")?;
        let start = rng.next() % (rows - n).max(1);
        for i in 0..n {
            let id = if contiguous {
                start + i
            } else {
                rng.next() % rows
            };
            up.execute(rusqlite::params![id as i64, phrase(rng, 14)])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    if !dir.exists() {
        return Ok(0);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

fn quiet_disk() -> Result<()> {
    ensure!(Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

fn restic(repo: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("restic")
        .args(args)
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "bench")
        .env("RESTIC_CACHE_DIR", repo.with_extension("cache"))
        .output()
        .context("run restic (install it: apt-get install restic)")?;
    if !out.status.success() {
        bail!(
            "restic {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn manager(
    db: &Path,
    store: impl snapshot::store::IntoStore,
    keep: usize,
) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(store)
        .retention(RetentionPolicy::new().keep_last(keep))
        .environment(Environment::persistent())
        .build()?)
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    quiet_disk()?;
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn snap(m: &SnapshotManager) -> Result<snapshot::SnapshotRecord> {
    m.snapshot(SnapshotRequest::new("delete"))?
        .into_record()
        .context("taken")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

struct Stores {
    /// What keeping every full copy would take (the store itself keeps the last 2, so that a
    /// 1 GiB run fits on the disk).
    full_total: u64,
    full: SnapshotManager,
    dedup: SnapshotManager,
    dedup_dir: PathBuf,
    restic_repo: PathBuf,
    last: (String, String),
}

/// One round's snapshots by the three methods: times and store sizes, printed.
fn round(s: &mut Stores, db: &Path, label: &str, times: &mut [Vec<f64>; 3]) -> Result<[u64; 3]> {
    let before = [
        s.full_total,
        dir_size(&s.dedup_dir)?,
        dir_size(&s.restic_repo)?,
    ];
    let mut taken = None;
    let t_full = timed(|| {
        taken = Some(snap(&s.full)?);
        Ok(())
    })?;
    let full = taken.take().context("taken")?;
    s.full_total += full.size_bytes;
    s.last.0 = full.snapshot_id;
    let t_dedup = timed(|| {
        taken = Some(snap(&s.dedup)?);
        Ok(())
    })?;
    s.last.1 = taken.context("taken")?.snapshot_id;
    let db_s = db.to_string_lossy().into_owned();
    let t_restic = timed(|| restic(&s.restic_repo, &["backup", "--quiet", &db_s]))?;
    let after = [
        s.full_total,
        dir_size(&s.dedup_dir)?,
        dir_size(&s.restic_repo)?,
    ];
    let t = [t_full, t_dedup, t_restic].map(|d| d.as_secs_f64());
    for (i, v) in t.iter().enumerate() {
        times[i].push(*v);
    }
    let mb = |b: u64| b as f64 / MIB as f64;
    println!(
        "{label:>9} | {:6.2} s {:8.1} MB {:8.1} MB | {:6.2} s {:8.1} MB {:8.1} MB | {:6.2} s {:8.1} MB {:8.1} MB",
        t[0],
        mb(after[0] - before[0]),
        mb(after[0]),
        t[1],
        mb(after[1].saturating_sub(before[1])),
        mb(after[1]),
        t[2],
        mb(after[2] - before[2]),
        mb(after[2]),
    );
    Ok(after)
}

fn main() -> Result<()> {
    let mb = env_u64("SNAPSHOT_BENCH_MB", 1024)?;
    let rounds = env_u64("SNAPSHOT_BENCH_ROUNDS", 10)?;
    let base =
        std::env::var_os("SNAPSHOT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let scratch = tempfile::Builder::new()
        .prefix("snapshot-incremental-")
        .tempdir_in(base)?;
    let root = scratch.path();
    let db = root.join("app.db");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    let rows = build(&db, mb, &mut rng)?;
    println!(
        "database: {} rows, {:.0} MiB, built in {:.1} s ({})",
        rows,
        fs::metadata(&db)?.len() as f64 / MIB as f64,
        t.elapsed().as_secs_f64(),
        root.display()
    );
    let restic_repo = root.join("restic");
    restic(&restic_repo, &["init", "--quiet"])?;
    let (full_dir, dedup_dir) = (root.join("full"), root.join("dedup"));
    let mut s = Stores {
        full_total: 0,
        full: manager(&db, LocalStore::open(&full_dir)?, 2)?,
        dedup: manager(&db, DedupStore::new(LocalStore::open(&dedup_dir)?), 1000)?,
        dedup_dir,
        restic_repo,
        last: Default::default(),
    };
    println!(
        "{:>9} | {:^36} | {:^36} | {:^36}",
        "round",
        "full copy: time, added, store",
        "dedup: time, added, store",
        "restic: time, added, repo"
    );
    let mut times: [Vec<f64>; 3] = Default::default();
    round(&mut s, &db, "initial", &mut times)?;
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut sizes = [0u64; 3];
    for r in 1..=rounds {
        update(&db, rows, false, &mut rng)?;
        sizes = round(&mut s, &db, &format!("random {r}"), &mut times)?;
    }
    let mut contiguous: [Vec<f64>; 3] = Default::default();
    for r in 1..=rounds.div_ceil(2) {
        update(&db, rows, true, &mut rng)?;
        round(&mut s, &db, &format!("contig {r}"), &mut contiguous)?;
    }
    let [full_t, dedup_t, restic_t] = times.map(|mut v| median(&mut v));
    let [_, dedup_c, restic_c] = contiguous.map(|mut v| median(&mut v));
    println!(
        "median incremental snapshot, random: full {full_t:.2} s, dedup {dedup_t:.2} s, restic {restic_t:.2} s; contiguous: dedup {dedup_c:.2} s, restic {restic_c:.2} s"
    );

    // Restores of the last snapshot, and the durable copy they are measured against.
    let out = root.join("restored");
    fs::create_dir_all(&out)?;
    let copy = out.join("copy.db");
    let t_copy = timed(|| {
        fs::copy(&db, &copy)?;
        File::options().write(true).open(&copy)?.sync_all()?;
        Ok(())
    })?;
    // Both restores check the image's checksum (the engine's check is left out of the
    // comparison: it costs the same on both and nothing on a copy).
    let restore = |m: &SnapshotManager, id: &str, to: PathBuf| -> Result<()> {
        m.restore_with(
            id,
            &RestoreOptions::new().target(&to).check(CheckLevel::Header),
        )?;
        Ok(())
    };
    let t_full = timed(|| restore(&s.full, &s.last.0, out.join("full.db")))?;
    let t_dedup = timed(|| restore(&s.dedup, &s.last.1, out.join("dedup.db")))?;
    let target = out.join("restic");
    let target_s = target.to_string_lossy().into_owned();
    let t_restic = timed(|| {
        restic(
            &s.restic_repo,
            &["restore", "latest", "--target", &target_s],
        )
    })?;
    ensure!(
        fs::read(out.join("dedup.db"))? == fs::read(&db)?,
        "the dedup restore differs from the database"
    );
    println!(
        "restore of the last snapshot: durable copy {:.2} s, full {:.2} s, dedup {:.2} s, restic {:.2} s",
        t_copy.as_secs_f64(),
        t_full.as_secs_f64(),
        t_dedup.as_secs_f64(),
        t_restic.as_secs_f64()
    );
    println!(
        "store after {} snapshots (random rounds): full {:.0} MB, dedup {:.0} MB, restic {:.0} MB",
        rounds + 1,
        sizes[0] as f64 / 1e6,
        sizes[1] as f64 / 1e6,
        sizes[2] as f64 / 1e6
    );
    println!(
        "summary: store/restic {:.2}, snapshot/full-copy {:.2}, snapshot/restic {:.2}, restore/durable-copy {:.2}",
        sizes[1] as f64 / sizes[2] as f64,
        dedup_t / full_t,
        dedup_t / restic_t,
        t_dedup.as_secs_f64() / t_copy.as_secs_f64()
    );
    Ok(())
}
