//! Crash safety (DESIGN.md §4, invariants 1 and 2): a child process is killed with SIGKILL at
//! random points of snapshot, prune and restore loops, many times. After every kill:
//! - the catalog parses and `list` shows no snapshot whose blob (or sidecar) is missing;
//! - every listed snapshot verifies (checksum + `quick_check`): nothing partial is listed;
//! - `doctor` finds no record without a blob and no index problem, repairs the leftovers, and a
//!   second `doctor` reports the store clean;
//! - the live database passes `PRAGMA integrity_check` and is exactly its state before or after
//!   the operation that was in flight (snapshot and prune never change it; a restore swaps
//!   between two snapshots of known, distinct content A and B).
//!
//! The child is this test binary re-executed on [`crash_child_entry_point`] with its parameters
//! in the `SNAPSHOT_TEST_CHILD` environment variable. It appends `b <op>` / `e <op> …` lines to a
//! log file around every operation (plain `write` calls, so a SIGKILL loses none of them), which
//! tells the parent what was in flight when the kill landed. The parent kills at a random
//! delay after the child began its 1st, 2nd or 3rd operation; for restores it also waits, one
//! time in four, for the live file to be swapped and kills right after (the short tail of a
//! restore that a random delay rarely hits).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use snapshot::store::{DedupStore, STAGING_PREFIX};
use snapshot::{
    DoctorOptions, Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager,
    SnapshotRequest, SqliteSource, Store,
};

const CHILD_ENV: &str = "SNAPSHOT_TEST_CHILD";
const CHILD_TEST: &str = "crash_child_entry_point";
/// Kills per operation kind.
const ITERATIONS: usize = 35;
const SIGKILL: i32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Snapshot,
    Prune,
    Restore,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Prune => "prune",
            Kind::Restore => "restore",
        }
    }

    fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "snapshot" => Kind::Snapshot,
            "prune" => Kind::Prune,
            "restore" => Kind::Restore,
            other => bail!("unknown operation kind {other:?}"),
        })
    }
}

/// What a child does, passed in `SNAPSHOT_TEST_CHILD` as `key=value;…`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChildSpec {
    kind: Kind,
    db: PathBuf,
    store: PathBuf,
    log: PathBuf,
    /// Restore only: the ids of the snapshots holding states A and B.
    a: String,
    b: String,
    /// Snapshots kept in a dedup store (chunks in packs, collected at once) over the directory.
    dedup: bool,
}

impl ChildSpec {
    fn encode(&self) -> String {
        format!(
            "kind={};db={};store={};log={};a={};b={};dedup={}",
            self.kind.name(),
            self.db.display(),
            self.store.display(),
            self.log.display(),
            self.a,
            self.b,
            u8::from(self.dedup)
        )
    }

    fn decode(s: &str) -> Result<ChildSpec> {
        let (mut kind, mut db, mut store, mut log, mut a, mut b) =
            (None, None, None, None, String::new(), String::new());
        let mut dedup = false;
        for part in s.split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("malformed child parameter {part:?}"))?;
            match k {
                "kind" => kind = Some(Kind::parse(v)?),
                "db" => db = Some(PathBuf::from(v)),
                "store" => store = Some(PathBuf::from(v)),
                "log" => log = Some(PathBuf::from(v)),
                "a" => a = v.to_string(),
                "b" => b = v.to_string(),
                "dedup" => dedup = v == "1",
                other => bail!("unknown child parameter {other:?}"),
            }
        }
        let spec = ChildSpec {
            kind: kind.context("kind missing")?,
            db: db.context("db missing")?,
            store: store.context("store missing")?,
            log: log.context("log missing")?,
            a,
            b,
            dedup,
        };
        ensure!(
            spec.kind != Kind::Restore || (!spec.a.is_empty() && !spec.b.is_empty()),
            "a restore child needs the ids a and b"
        );
        Ok(spec)
    }
}

/// Entry point of the child processes (re-executed by the crash tests). Run normally (no
/// `SNAPSHOT_TEST_CHILD`), it checks the parameter encoding the parent relies on.
#[test]
fn crash_child_entry_point() -> Result<()> {
    let Ok(encoded) = std::env::var(CHILD_ENV) else {
        let spec = ChildSpec {
            kind: Kind::Restore,
            db: "/tmp/x/live/app.db".into(),
            store: "/tmp/x/store".into(),
            log: "/tmp/x/log-3.txt".into(),
            a: "20260101_000000_000_manual".into(),
            b: "20260101_000000_001_manual".into(),
            dedup: true,
        };
        assert_eq!(ChildSpec::decode(&spec.encode())?, spec);
        assert!(ChildSpec::decode("kind=explode;db=/a;store=/b;log=/c").is_err());
        assert!(ChildSpec::decode("kind=restore;db=/a;store=/b;log=/c").is_err());
        assert!(ChildSpec::decode("kind=prune;db=/a;store=/b").is_err());
        return Ok(());
    };
    run_child(&ChildSpec::decode(&encoded)?)
}

fn build_manager(
    db: &Path,
    store: &Path,
    retention: RetentionPolicy,
    dedup: bool,
) -> Result<SnapshotManager> {
    let local = LocalStore::open(store)?;
    let store: Arc<dyn Store> = if dedup {
        Arc::new(DedupStore::new(local).gc_grace(Duration::ZERO))
    } else {
        Arc::new(local)
    };
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(store)
        .retention(retention)
        .environment(Environment::persistent())
        .build()?)
}

fn take(manager: &SnapshotManager, n: u64) -> Result<String> {
    let outcome = manager.snapshot(SnapshotRequest::new("delete").entity("measure", n))?;
    Ok(outcome
        .record()
        .context("the manager is disabled")?
        .snapshot_id
        .clone())
}

/// The child: loops the operation until it is killed (or gives up after 30 s).
fn run_child(spec: &ChildSpec) -> Result<()> {
    let retention = match spec.kind {
        // Every snapshot also prunes beyond the last 4.
        Kind::Snapshot => RetentionPolicy::new().keep_last(4),
        Kind::Prune | Kind::Restore => RetentionPolicy::new().keep_last(1000),
    };
    let manager = build_manager(&spec.db, &spec.store, retention, spec.dedup)?;
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&spec.log)?;
    let mut say = |line: String| -> Result<()> {
        log.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    while Instant::now() < deadline {
        match spec.kind {
            Kind::Snapshot => {
                say("b snapshot".into())?;
                let id = take(&manager, n)?;
                say(format!("e snapshot {id}"))?;
            }
            Kind::Prune => {
                for _ in 0..2 {
                    say("b snapshot".into())?;
                    let id = take(&manager, n)?;
                    say(format!("e snapshot {id}"))?;
                }
                say("b prune".into())?;
                let report = manager.prune_with(&RetentionPolicy::new().keep_last(1))?;
                say(format!("e prune {}", report.deleted.len()))?;
            }
            Kind::Restore => {
                let (label, id) = if n.is_multiple_of(2) {
                    ("A", &spec.a)
                } else {
                    ("B", &spec.b)
                };
                say(format!("b restore {label}"))?;
                let report = manager.restore(id)?;
                let safety = report
                    .safety_snapshot
                    .context("a restore over a present database took no safety snapshot")?;
                say(format!("e restore {label} {safety}"))?;
            }
        }
        n += 1;
    }
    bail!("the child was not killed within 30 s")
}

/// A tiny xorshift generator (no `rand` dependency); the seed is printed for the record.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> (XorShift, u64) {
        let seed = std::env::var("SNAPSHOT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15);
                t ^ u64::from(std::process::id()).rotate_left(32)
            });
        (XorShift(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// State A: a marker row "A" and ~2 MB of filler rows, in WAL mode.
fn create_db(db: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE marker(name TEXT NOT NULL);
         INSERT INTO marker VALUES ('A');
         CREATE TABLE filler(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 256)
           INSERT INTO filler SELECT x, randomblob(8000) FROM c;
         COMMIT;",
    )?;
    Ok(())
}

/// State B: another marker, some filler rows gone and others added.
fn make_state_b(db: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.execute_batch(
        "BEGIN;
         UPDATE marker SET name = 'B';
         DELETE FROM filler WHERE id % 7 = 0;
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)
           INSERT INTO filler SELECT 1000 + x, randomblob(8000) FROM c;
         COMMIT;",
    )?;
    Ok(())
}

/// Checks the live database's integrity and returns a fingerprint of its whole content
/// (`<marker>/<rows>/<hash of every row>`). The connection is closed on return: a restore
/// refuses a database this process holds open.
fn fingerprint(db: &Path) -> Result<String> {
    ensure!(db.is_file(), "the live database {} is gone", db.display());
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let check: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    ensure!(
        check == ["ok"],
        "integrity_check of the live database: {check:?}"
    );
    let marker: String = conn.query_row("SELECT name FROM marker", [], |r| r.get(0))?;
    let mut hasher = DefaultHasher::new();
    let mut rows = 0u64;
    let mut stmt = conn.prepare("SELECT id, data FROM filler ORDER BY id")?;
    let mut cursor = stmt.query([])?;
    while let Some(row) = cursor.next()? {
        row.get::<_, i64>(0)?.hash(&mut hasher);
        row.get::<_, Vec<u8>>(1)?.hash(&mut hasher);
        rows += 1;
    }
    Ok(format!("{marker}/{rows}/{:016x}", hasher.finish()))
}

fn spawn_child(spec: &ChildSpec, dir: &Path, i: usize) -> Result<Child> {
    let out = File::create(dir.join(format!("child-{i}.out")))?;
    let err = File::create(dir.join(format!("child-{i}.err")))?;
    Ok(Command::new(std::env::current_exe()?)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec.encode())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

fn child_output(dir: &Path, i: usize) -> String {
    let read = |ext: &str| fs::read_to_string(dir.join(format!("child-{i}.{ext}")));
    format!(
        "stdout:\n{}\nstderr:\n{}",
        read("out").unwrap_or_default(),
        read("err").unwrap_or_default()
    )
}

fn read_log(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until the child has begun its `nth` operation of its kind (1-based).
fn wait_for_begin(
    child: &mut Child,
    log: &Path,
    kind: Kind,
    nth: usize,
    dir: &Path,
    i: usize,
) -> Result<()> {
    let start = Instant::now();
    let begin = format!("b {}", kind.name());
    loop {
        let begun = read_log(log)
            .iter()
            .filter(|l| **l == begin || l.starts_with(&format!("{begin} ")))
            .count();
        if begun >= nth {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "child {i} exited ({status}) before its operation {nth}\n{}",
                child_output(dir, i)
            );
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "child {i} did not begin its operation {nth} within 60 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until the live database file is replaced (its inode changes).
fn wait_for_swap(child: &mut Child, db: &Path, dir: &Path, i: usize) -> Result<()> {
    let start = Instant::now();
    let inode = fs::metadata(db)?.ino();
    loop {
        if fs::metadata(db).is_ok_and(|m| m.ino() != inode) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "child {i} exited ({status}) before it swapped the database\n{}",
                child_output(dir, i)
            );
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "child {i} did not swap the database within 60 s"
        );
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn no_staging_files(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        ensure!(
            !name.starts_with(STAGING_PREFIX),
            "staging file {name} left in {} after doctor",
            dir.display()
        );
    }
    Ok(())
}

/// The store-side checks after a kill. Returns the listed ids and whether doctor had anything
/// to repair.
fn check_store(
    manager: &SnapshotManager,
    store: &Path,
    live_dir: &Path,
) -> Result<(BTreeSet<String>, bool)> {
    let index = store.join("snapshot_metadata.json");
    if index.exists() {
        let value: serde_json::Value = serde_json::from_slice(&fs::read(&index)?)
            .context("the index does not parse as JSON")?;
        ensure!(value.is_array(), "the index is not a JSON array");
    }
    let listed = manager.list(&ListFilter::new())?;
    for r in &listed {
        ensure!(
            store.join(&r.blob_key).is_file(),
            "list shows {} but its blob {} is missing",
            r.snapshot_id,
            r.blob_key
        );
        ensure!(
            store.join(format!("{}.json", r.snapshot_id)).is_file(),
            "list shows {} but its sidecar is missing",
            r.snapshot_id
        );
    }
    let ids: BTreeSet<String> = listed.iter().map(|r| r.snapshot_id.clone()).collect();
    ensure!(ids.len() == listed.len(), "duplicate ids listed: {ids:?}");

    let verified = manager.verify_all()?;
    ensure!(
        verified.failed.is_empty(),
        "listed snapshots failed verification: {:?}",
        verified.failed
    );
    ensure!(
        verified.passed.len() == listed.len(),
        "verify_all checked {} of {} snapshots",
        verified.passed.len(),
        listed.len()
    );

    let repair = DoctorOptions {
        repair: true,
        min_age: Duration::ZERO,
    };
    let first = manager.doctor(&repair)?;
    ensure!(
        first.records_without_blob.is_empty() && first.index_problem.is_none(),
        "doctor found the catalog untrue: {first:?}"
    );
    let second = manager.doctor(&DoctorOptions {
        repair: false,
        min_age: Duration::ZERO,
    })?;
    ensure!(
        second.is_clean(),
        "doctor is not clean after a repair: {second:?} (first run: {first:?})"
    );
    let after: BTreeSet<String> = manager
        .list(&ListFilter::new())?
        .into_iter()
        .map(|r| r.snapshot_id)
        .collect();
    // The one record repair may drop: the safety snapshot of a restore killed between recording
    // it (the live file linked into the store) and the swap — the live data is that very state.
    let shared: BTreeSet<String> = first.blobs_shared_with_live.iter().cloned().collect();
    ensure!(
        shared.len() <= 1,
        "more than one listed blob was the live file: {shared:?}"
    );
    // And the ones repair may add: snapshots a killed `create` had published whole (blob and
    // sidecar) but not yet listed — never anything pruned or forgotten (their sidecars were
    // marked before they left the index).
    let relisted: BTreeSet<String> = first.unlisted_records.iter().cloned().collect();
    ensure!(
        relisted.len() <= 1,
        "more than one snapshot was published but not listed: {relisted:?}"
    );
    for id in &relisted {
        ensure!(!ids.contains(id), "{id} was listed already");
        manager.verify(id)?;
    }
    ensure!(
        after
            == ids
                .difference(&shared)
                .cloned()
                .chain(relisted.iter().cloned())
                .collect(),
        "doctor changed the listed snapshots beyond the safety snapshot that was the live file \
         ({shared:?}): before {ids:?}, after {after:?}"
    );
    no_staging_files(store)?;
    no_staging_files(live_dir)?;
    Ok((after, !first.is_clean()))
}

struct Stats {
    /// Kills that landed while the kind's own operation was in flight.
    in_flight: usize,
    /// Kills after which doctor had something to repair.
    repaired: usize,
    /// Operations completed by all children.
    completed: usize,
    /// Restore only: the live states seen after kills.
    seen: BTreeSet<&'static str>,
    /// Restore only: kills during a restore that left the state before it / after it.
    before_after: (usize, usize),
}

fn crash_loop(kind: Kind, dedup: bool) -> Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let live_dir = tmp.path().join("live");
    fs::create_dir(&live_dir)?;
    let db = live_dir.join("app.db");
    let store = tmp.path().join("store");
    create_db(&db)?;
    let state_a = fingerprint(&db)?;
    let manager = build_manager(&db, &store, RetentionPolicy::new().keep_last(1000), dedup)?;

    let (mut id_a, mut id_b, mut state_b) = (String::new(), String::new(), String::new());
    if kind != Kind::Restore {
        // Start from a store with an index, as after any first snapshot. (A kill during the
        // very first snapshot of a fresh store leaves a sidecar and a blob but no index, which
        // doctor cannot yet tell from a lost index: it reports an index problem and lists the
        // unfinished snapshot. Not covered here until the library creates the index first.)
        take(&manager, 0)?;
    } else {
        id_a = take(&manager, 1)?;
        manager.pin(&id_a, true)?;
        make_state_b(&db)?;
        state_b = fingerprint(&db)?;
        ensure!(state_a != state_b, "states A and B must differ");
        id_b = take(&manager, 2)?;
        manager.pin(&id_b, true)?;
    }
    let label_of = |fp: &str| -> Result<&'static str> {
        if fp == state_a {
            Ok("A")
        } else if kind == Kind::Restore && fp == state_b {
            Ok("B")
        } else {
            bail!("the live database is neither state A nor state B: {fp}")
        }
    };

    let (mut rng, seed) = XorShift::seeded();
    let mut stats = Stats {
        in_flight: 0,
        repaired: 0,
        completed: 0,
        seen: BTreeSet::new(),
        before_after: (0, 0),
    };
    for i in 0..ITERATIONS {
        let before = label_of(&fingerprint(&db)?)?;
        let log = tmp.path().join(format!("log-{i}.txt"));
        let spec = ChildSpec {
            kind,
            db: db.clone(),
            store: store.clone(),
            log: log.clone(),
            a: id_a.clone(),
            b: id_b.clone(),
            dedup,
        };
        let mut child = spawn_child(&spec, tmp.path(), i)?;
        // Kill at a random time after the child began its 1st, 2nd or 3rd operation of the
        // kind under test; vary the reach of the delay so kills land early in an operation,
        // late in it, or operations later.
        let nth = 1 + rng.below(3) as usize;
        wait_for_begin(&mut child, &log, kind, nth, tmp.path(), i)?;
        if kind == Kind::Restore && i % 4 == 3 {
            // The swap comes last in a restore and what follows it is short: to land kills
            // there too, wait for the live file to be replaced (a new inode), then kill.
            wait_for_swap(&mut child, &db, tmp.path(), i)?;
            std::thread::sleep(Duration::from_micros(rng.below(400)));
        } else {
            let reach_us = match i % 3 {
                0 => 1_500,
                1 => 8_000,
                _ => 40_000,
            };
            std::thread::sleep(Duration::from_micros(rng.below(reach_us)));
        }
        child.kill()?;
        let status = child.wait()?;
        ensure!(
            status.signal() == Some(SIGKILL),
            "child {i} was not killed but ended with {status}\n{}",
            child_output(tmp.path(), i)
        );

        let context = || format!("{} iteration {i} (seed {seed})", kind.name());
        let lines = read_log(&log);
        let last = lines.last().cloned().unwrap_or_default();
        if last == format!("b {}", kind.name()) || last.starts_with(&format!("b {} ", kind.name()))
        {
            stats.in_flight += 1;
        }
        stats.completed += lines.iter().filter(|l| l.starts_with("e ")).count();

        let (ids, repaired) = check_store(&manager, &store, &live_dir).with_context(context)?;
        if repaired {
            stats.repaired += 1;
        }
        let live = fingerprint(&db).with_context(context)?;
        let now = label_of(&live).with_context(context)?;

        // The newest completed snapshot is durable and still listed (the child's retention
        // keeps the newest).
        if let Some(id) = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("e snapshot "))
        {
            ensure!(
                ids.contains(id),
                "{}: completed snapshot {id} is not listed",
                context()
            );
        }
        match kind {
            Kind::Snapshot => {
                ensure!(
                    now == "A",
                    "{}: a snapshot changed the live database",
                    context()
                );
            }
            Kind::Prune => {
                ensure!(
                    now == "A",
                    "{}: a prune changed the live database",
                    context()
                );
                if last.starts_with("e prune") {
                    ensure!(
                        ids.len() == 1,
                        "{}: a finished prune to the last 1 left {} snapshots",
                        context(),
                        ids.len()
                    );
                }
            }
            Kind::Restore => {
                ensure!(
                    ids.contains(&id_a) && ids.contains(&id_b),
                    "{}: a pinned snapshot was lost",
                    context()
                );
                let mut state = before;
                for l in &lines {
                    if let Some(rest) = l.strip_prefix("e restore ") {
                        let (label, safety) = rest.split_once(' ').unwrap_or((rest, ""));
                        ensure!(
                            ids.contains(safety),
                            "{}: the safety snapshot {safety:?} of a finished restore is not listed",
                            context()
                        );
                        state = if label == "A" { "A" } else { "B" };
                    }
                }
                let allowed: Vec<&str> = match last.strip_prefix("b restore ") {
                    Some(target) => {
                        let target = if target == "A" { "A" } else { "B" };
                        if target != state {
                            if now == state {
                                stats.before_after.0 += 1;
                            } else if now == target {
                                stats.before_after.1 += 1;
                            }
                        }
                        vec![state, target]
                    }
                    None => vec![state],
                };
                stats.seen.insert(now);
                ensure!(
                    allowed.contains(&now),
                    "{}: the live database is {now}, expected one of {allowed:?} (log {lines:?})",
                    context()
                );
                // Housekeeping: prune the safety snapshots so the store stays small (A and B
                // stay pinned).
                manager.prune_with(
                    &RetentionPolicy::new()
                        .keep_last(1)
                        .keep_safety(0)
                        .safety_grace(chrono::Duration::zero()),
                )?;
            }
        }
    }
    eprintln!(
        "crash/{}{}: {ITERATIONS} kills in {:.1?} (seed {seed}): {} in flight, {} left something \
         for doctor, {} operations completed",
        kind.name(),
        if dedup { " (dedup)" } else { "" },
        started.elapsed(),
        stats.in_flight,
        stats.repaired,
        stats.completed
    );
    ensure!(
        stats.in_flight > 0,
        "no kill landed during a {} (seed {seed}): the test did not test",
        kind.name()
    );
    ensure!(
        stats.repaired > 0,
        "no kill left anything for doctor to repair (seed {seed}): the test did not test"
    );
    ensure!(stats.completed > 0, "no child ever completed an operation");
    if kind == Kind::Restore {
        eprintln!(
            "crash/restore: kills during a restore that changes the state left it as before {} \
             times, as after {} times",
            stats.before_after.0, stats.before_after.1
        );
        ensure!(
            stats.before_after.0 > 0 && stats.before_after.1 > 0,
            "kills during restores never left both the before and the after state (seed {seed})"
        );
        ensure!(
            stats.seen.len() == 2,
            "the live database was only ever seen as {:?}: restores never swapped it",
            stats.seen
        );
    }
    Ok(())
}

#[test]
fn sigkill_during_snapshots_leaves_a_true_catalog_and_the_database_untouched() -> Result<()> {
    crash_loop(Kind::Snapshot, false)
}

#[test]
fn sigkill_during_prunes_leaves_a_true_catalog_and_the_database_untouched() -> Result<()> {
    crash_loop(Kind::Prune, false)
}

#[test]
fn sigkill_during_restores_leaves_the_database_before_or_after() -> Result<()> {
    crash_loop(Kind::Restore, false)
}

/// The same kills into a dedup store: snapshots (chunks, packs, manifests), prunes (every
/// deletion collects the packs nobody references) and restores (reassembled from packs).
#[test]
fn sigkill_during_dedup_snapshots_leaves_a_true_catalog() -> Result<()> {
    crash_loop(Kind::Snapshot, true)
}

#[test]
fn sigkill_during_dedup_prunes_and_collections_loses_no_needed_chunk() -> Result<()> {
    crash_loop(Kind::Prune, true)
}

#[test]
fn sigkill_during_dedup_restores_leaves_the_database_before_or_after() -> Result<()> {
    crash_loop(Kind::Restore, true)
}
