//! The dedup store layer through the manager, on real SQLite databases (WAL and rollback
//! journal) and plain files: round trips, sharing, damage named, collection, and snapshotters
//! and collections running at once.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rusqlite::Connection;
use snapshot::store::DedupStore;
use snapshot::{
    CheckLevel, Environment, Error, FileSource, ListFilter, LocalStore, RetentionPolicy,
    SnapshotManager, SnapshotRequest, SqliteSource, Store,
};

/// A database of `rows` rows of some 200 bytes each, in `mode` (`wal` or `delete`).
fn database(path: &Path, rows: i64, mode: &str) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.query_row(&format!("PRAGMA journal_mode={mode}"), [], |_| Ok(()))?;
    conn.execute_batch(
        "CREATE TABLE measure(id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT NOT NULL);",
    )?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO measure(id, name, note) VALUES (?1, ?2, ?3)")?;
        for i in 0..rows {
            ins.execute(rusqlite::params![
                i,
                format!("site-{i}"),
                format!("{:0>180}", i.wrapping_mul(2_654_435_761) % 1_000_003)
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Changes every `step`-th row.
fn touch(path: &Path, step: i64, tag: &str) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute(
        "UPDATE measure SET name = name || ?1 WHERE id % ?2 = 0",
        rusqlite::params![tag, step],
    )?;
    Ok(())
}

fn digest(path: &Path) -> Result<String> {
    let conn = Connection::open(path)?;
    let mut stmt = conn.prepare("SELECT id, name, note FROM measure ORDER BY id")?;
    let mut h = blake3::Hasher::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        h.update(&r.get::<_, i64>(0)?.to_le_bytes());
        h.update(r.get::<_, String>(1)?.as_bytes());
        h.update(r.get::<_, String>(2)?.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

fn manager(db: &Path, store: &Path, keep: usize, grace: Duration) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(DedupStore::new(LocalStore::open(store)?).gc_grace(grace))
        .retention(RetentionPolicy::new().keep_last(keep))
        .environment(Environment::persistent())
        .build()?)
}

fn take(m: &SnapshotManager, op: &str) -> Result<snapshot::SnapshotRecord> {
    m.snapshot(SnapshotRequest::new(op))?
        .into_record()
        .context("snapshot taken")
}

fn stored(r: &snapshot::SnapshotRecord) -> u64 {
    r.extra
        .get("stored_bytes")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(u64::MAX)
}

fn files(dir: &Path, suffix: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("chunks-") && name.ends_with(suffix) {
            out.insert(name);
        }
    }
    Ok(out)
}

fn round_trip(mode: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, store) = (dir.path().join("app.db"), dir.path().join("backups"));
    database(&db, 20_000, mode)?;
    let m = manager(&db, &store, 10, Duration::ZERO)?;
    let first_digest = digest(&db)?;
    let first = take(&m, "delete")?;
    ensure!(stored(&first) > 0 && stored(&first) < first.size_bytes);

    // Nothing changed: the second snapshot shares every chunk.
    let same = take(&m, "delete")?;
    ensure!(
        stored(&same) == 0,
        "an unchanged database added {} bytes",
        stored(&same)
    );
    ensure!(same.checksum == first.checksum);

    // 1% of the rows changed: a small part of the pages is new.
    touch(&db, 100, "-x")?;
    let changed = take(&m, "delete")?;
    ensure!(
        stored(&changed) < first.size_bytes / 4,
        "1% of rows added {} of {} bytes",
        stored(&changed),
        first.size_bytes
    );

    for r in [&first, &same, &changed] {
        let v = m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
        ensure!(v.bytes == r.size_bytes && v.engine_checked);
    }
    m.restore(&first.snapshot_id)?;
    ensure!(digest(&db)? == first_digest, "restored data differs");
    let status = m.status()?;
    let usage = status.storage.context("a dedup store reports its usage")?;
    ensure!(usage.logical_bytes >= 3 * first.size_bytes);
    ensure!(usage.ratio() > 2.0, "dedup ratio {:.2}", usage.ratio());
    Ok(())
}

#[test]
fn sqlite_wal_round_trip_shares_unchanged_pages() -> Result<()> {
    round_trip("wal")
}

#[test]
fn sqlite_rollback_round_trip_shares_unchanged_pages() -> Result<()> {
    round_trip("delete")
}

#[test]
fn plain_files_are_cut_by_content() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (live, store) = (dir.path().join("data.bin"), dir.path().join("backups"));
    let mut data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&live, &data)?;
    let m = SnapshotManager::builder()
        .source(FileSource::new(&live))
        .store(DedupStore::new(LocalStore::open(&store)?))
        .environment(Environment::persistent())
        .build()?;
    let first = take(&m, "manual")?;
    // Bytes inserted near the start shift everything after: content-defined chunks follow.
    data.splice(1000..1000, b"inserted".iter().copied());
    std::fs::write(&live, &data)?;
    let second = take(&m, "manual")?;
    ensure!(
        stored(&second) < first.size_bytes / 5,
        "an 8-byte insertion added {} bytes",
        stored(&second)
    );
    let out = dir.path().join("out.bin");
    m.restore_to(&second.snapshot_id, &out)?;
    ensure!(std::fs::read(&out)? == data);
    Ok(())
}

#[test]
fn a_flipped_byte_in_a_chunk_is_found_and_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, store) = (dir.path().join("app.db"), dir.path().join("backups"));
    database(&db, 5_000, "wal")?;
    let m = manager(&db, &store, 10, Duration::ZERO)?;
    let r = take(&m, "delete")?;
    let before = digest(&db)?;
    let pack = files(&store, ".pack")?
        .into_iter()
        .next()
        .context("a pack")?;
    let path = store.join(&pack);
    let mut bytes = std::fs::read(&path)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    let e = m.verify(&r.snapshot_id).expect_err("damage found");
    let text = e.to_string();
    ensure!(
        matches!(e, Error::ChecksumMismatch { .. })
            && text.contains("chunk")
            && text.contains(&pack),
        "{text}"
    );
    // A restore from it refuses and leaves the live database as it was.
    touch(&db, 7, "-y")?;
    let live = digest(&db)?;
    ensure!(m.restore(&r.snapshot_id).is_err());
    ensure!(digest(&db)? == live && live != before);
    Ok(())
}

#[test]
fn retention_frees_the_packs_nobody_references_in_two_phases() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, store) = (dir.path().join("app.db"), dir.path().join("backups"));
    database(&db, 20_000, "wal")?;
    // Grace zero: a pack is condemned by one collection and deleted by the next.
    let m = manager(&db, &store, 2, Duration::ZERO)?;
    let mut digests = Vec::new();
    for round in 0..6 {
        // Rewrite every row: each snapshot's pages are all new.
        touch(&db, 1, &format!("-{round}"))?;
        let r = take(&m, "delete")?;
        digests.push((r.snapshot_id.clone(), digest(&db)?));
    }
    let listed = m.list(&ListFilter::new())?;
    ensure!(listed.len() == 2);
    let report = collect(&store)?;
    ensure!(report.waiting == 0, "{report:?}");
    // Only packs the two listed snapshots use are left, and both still restore.
    ensure!(files(&store, ".pack")?.len() == report.live_packs);
    for (id, want) in digests.iter().rev().take(2) {
        m.restore(id)?;
        ensure!(&digest(&db)? == want);
    }
    Ok(())
}

/// Two collections with no grace on the store at `dir`: whatever nobody references is gone.
fn collect(dir: &Path) -> Result<snapshot::store::GcReport> {
    let dedup = DedupStore::new(LocalStore::open(dir)?).gc_grace(Duration::ZERO);
    dedup.collect_garbage()?;
    Ok(dedup.collect_garbage()?)
}

#[test]
fn snapshotters_and_collections_at_once_lose_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("backups");
    let mut dbs = Vec::new();
    for i in 0..3 {
        let db = dir.path().join(format!("app{i}.db"));
        database(&db, 3_000, "wal")?;
        dbs.push(db);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| -> Result<()> {
        let collector = {
            let (store, stop) = (store.clone(), stop.clone());
            s.spawn(move || -> Result<usize> {
                let gc =
                    DedupStore::new(LocalStore::open(&store)?).gc_grace(Duration::from_millis(300));
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match gc.collect_garbage() {
                        Ok(_) | Err(Error::Precondition { .. }) => runs += 1,
                        Err(e) => return Err(e.into()),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(runs)
            })
        };
        let writers: Vec<_> = dbs
            .iter()
            .map(|db| {
                let store = store.clone();
                s.spawn(move || -> Result<Vec<(String, String)>> {
                    let m = manager(db, &store, 12, Duration::from_millis(300))?;
                    let mut taken = Vec::new();
                    for round in 0..8 {
                        touch(db, 3, &format!("-{round}"))?;
                        let r = take(&m, "delete")?;
                        taken.push((r.snapshot_id, digest(db)?));
                    }
                    Ok(taken)
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in writers {
            all.push(w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = collector
            .join()
            .map_err(|_| anyhow::anyhow!("collector panicked"))??;
        ensure!(runs > 0);
        // Every snapshot the catalog lists is whole.
        let m = manager(&dbs[0], &store, 12, Duration::from_millis(300))?;
        let listed = m.list(&ListFilter::new())?;
        ensure!(!listed.is_empty());
        for r in &listed {
            m.verify(&r.snapshot_id)
                .with_context(|| format!("verify {}", r.snapshot_id))?;
        }
        // And each writer's newest snapshot restores its data.
        for (db, taken) in dbs.iter().zip(&all) {
            let (id, want) = taken.last().context("taken")?;
            let m = manager(db, &store, 12, Duration::from_millis(300))?;
            m.restore(id)?;
            ensure!(&digest(db)? == want);
        }
        Ok(())
    })
}

#[test]
fn the_longest_grace_any_process_asked_for_is_honoured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("backups");
    let patient = DedupStore::new(LocalStore::open(&store)?).gc_grace(Duration::from_secs(3600));
    let data: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    let file = dir.path().join("a.bin");
    std::fs::write(&file, &data)?;
    patient.put(
        "a.bin",
        snapshot::store::Payload::File(&file),
        snapshot::PutMode::Create,
    )?;
    ensure!(files(&store, ".pack")?.len() == 1);
    // Deleting the only snapshot condemns its pack (a collection runs after the deletion).
    patient.delete("a.bin")?;
    ensure!(files(&store, ".pack")?.len() == 1, "condemned, not deleted");
    // A process asking for no grace still waits the hour another one asked for.
    let hasty = DedupStore::new(LocalStore::open(&store)?).gc_grace(Duration::ZERO);
    let report = hasty.collect_garbage()?;
    ensure!(
        report.deleted.is_empty() && report.waiting == 1,
        "{report:?}"
    );
    ensure!(files(&store, ".pack")?.len() == 1);
    Ok(())
}

#[test]
fn a_snapshot_published_after_the_grace_is_withdrawn() -> Result<()> {
    use snapshot::store::StreamingStorage;
    let dir = tempfile::tempdir()?;
    let store = DedupStore::new(LocalStore::open(dir.path().join("backups"))?)
        .gc_grace(Duration::from_millis(300));
    let staged = dir.path().join("staged-manifest");
    store.capture_to_file(&staged, &mut |out| {
        out.write_all(&[7u8; 100_000])
            .map_err(|e| snapshot::Error::InvalidInput {
                field: "test",
                reason: e.to_string(),
            })?;
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    })?;
    let e = store
        .put(
            "late.bin",
            snapshot::store::Payload::File(&staged),
            snapshot::PutMode::Create,
        )
        .expect_err("too late");
    ensure!(e.to_string().contains("grace"), "{e}");
    ensure!(
        store.head("late.bin")?.is_none(),
        "the late manifest was withdrawn"
    );
    Ok(())
}

#[test]
fn doctor_reports_a_damaged_manifest_and_collects_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, store) = (dir.path().join("app.db"), dir.path().join("backups"));
    database(&db, 2_000, "wal")?;
    let m = manager(&db, &store, 10, Duration::ZERO)?;
    let r = take(&m, "delete")?;
    let path = store.join(&r.blob_key);
    let mut bytes = std::fs::read(&path)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes)?;
    let packs = files(&store, ".pack")?;
    let report = m.doctor(&snapshot::DoctorOptions {
        repair: true,
        min_age: Duration::ZERO,
    })?;
    ensure!(
        report
            .store_findings
            .iter()
            .any(|f| f.contains(&r.blob_key)),
        "{report:?}"
    );
    ensure!(files(&store, ".pack")? == packs, "a pack was collected");
    ensure!(m.verify(&r.snapshot_id).is_err());
    Ok(())
}

#[test]
fn the_builder_wraps_any_store_in_the_dedup_layer() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (db, store) = (dir.path().join("app.db"), dir.path().join("backups"));
    database(&db, 1_000, "wal")?;
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(&store)?)
        .dedup()
        .environment(Environment::persistent())
        .build()?;
    let r = take(&m, "delete")?;
    ensure!(m.store().location().ends_with("(dedup)"));
    ensure!(m.status()?.storage.is_some());
    ensure!(files(&store, ".pack")?.len() == 1 && stored(&r) > 0);
    Ok(())
}
