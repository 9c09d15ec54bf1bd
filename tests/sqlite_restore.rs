//! Restore as a transaction, the catalog's promises, and bad input — against real SQLite files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use rusqlite::Connection;
use snapshot::{
    CheckLevel, DoctorOptions, Environment, Error, FileSource, ListFilter, LocalStore, Outcome,
    RestoreOptions, RetentionPolicy, SnapshotManager, SnapshotOutcome, SnapshotRecord,
    SnapshotRequest, Source, SqliteSource,
};

struct Fixture {
    dir: tempfile::TempDir,
    db: PathBuf,
    store: PathBuf,
}

impl Fixture {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let conn = Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "CREATE TABLE measure(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO measure(id, name) VALUES (1, 'hedges'), (2, 'ponds'), (42, 'meadows');",
        )?;
        let store = dir.path().join("backups");
        Ok(Fixture { db, store, dir })
    }

    fn manager(&self, retention: RetentionPolicy) -> Result<SnapshotManager> {
        Ok(SnapshotManager::builder()
            .source(SqliteSource::new(&self.db))
            .store(LocalStore::open(&self.store)?)
            .retention(retention)
            .environment(Environment::persistent())
            .build()?)
    }

    /// A manager whose store is `elsewhere/store` (another file system, say), else the usual
    /// one beside the database; and the store's directory.
    fn manager_storing_in(&self, elsewhere: Option<&Path>) -> Result<(SnapshotManager, PathBuf)> {
        let store = elsewhere.map_or_else(|| self.store.clone(), |d| d.join("store"));
        let m = SnapshotManager::builder()
            .source(SqliteSource::new(&self.db))
            .store(LocalStore::open(&store)?)
            .environment(Environment::persistent())
            .build()?;
        Ok((m, store))
    }

    fn names(&self) -> Result<Vec<String>> {
        let conn = Connection::open(&self.db)?;
        let mut stmt = conn.prepare("SELECT name FROM measure ORDER BY id")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(names)
    }

    fn exec(&self, sql: &str) -> Result<()> {
        Connection::open(&self.db)?.execute_batch(sql)?;
        Ok(())
    }
}

fn take(m: &SnapshotManager, req: SnapshotRequest) -> Result<SnapshotRecord> {
    m.snapshot(req)?
        .into_record()
        .context("the manager is enabled")
}

#[test]
fn restore_puts_the_data_back_after_a_safety_snapshot() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    let before = take(&m, SnapshotRequest::new("delete").entity("measure", 42))?;
    assert_eq!(before.description, "Before delete measure 42");
    assert_eq!(before.entity_id.as_deref(), Some("42"));
    f.exec("DELETE FROM measure WHERE id = 42; INSERT INTO measure VALUES (7, 'new');")?;
    let after_delete = f.names()?;

    let report = m.restore(&before.snapshot_id)?;
    assert_eq!(f.names()?, vec!["hedges", "ponds", "meadows"]);
    let safety_id = report
        .safety_snapshot
        .context("a safety snapshot was taken")?;
    let safety = m.get(&safety_id)?;
    assert_eq!(safety.operation_type, "pre_restore");
    // Kept by its own rules (grace, keep_safety), not pinned: `pin` is the user's.
    assert!(!safety.pinned && safety.is_safety());
    assert_eq!(
        safety.restore_of.as_deref(),
        Some(before.snapshot_id.as_str())
    );
    for suffix in ["-wal", "-shm"] {
        let mut p = f.db.as_os_str().to_owned();
        p.push(suffix);
        assert!(
            !Path::new(&p).exists(),
            "stale {suffix} left beside the restored db"
        );
    }
    // The safety snapshot undoes the restore.
    m.restore(&safety_id)?;
    assert_eq!(f.names()?, after_delete);
    let listed = m.list(&ListFilter::new().operation_type("pre_restore"))?;
    assert_eq!(listed.len(), 2);
    Ok(())
}

#[test]
fn dry_run_and_restore_to_leave_the_live_data_alone() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    let r = take(&m, SnapshotRequest::new("manual"))?;
    f.exec("DELETE FROM measure")?;
    let report = m.restore_with(&r.snapshot_id, &RestoreOptions::new().dry_run(true))?;
    assert!(report.dry_run && report.safety_snapshot.is_none());
    assert!(f.names()?.is_empty());
    assert_eq!(
        m.list(&ListFilter::new())?.len(),
        1,
        "a dry run takes no safety snapshot"
    );

    let elsewhere = f.dir.path().join("elsewhere.db");
    m.restore_to(&r.snapshot_id, &elsewhere)?;
    assert!(f.names()?.is_empty());
    let conn = Connection::open(&elsewhere)?;
    let n: i64 = conn.query_row("SELECT count(*) FROM measure", [], |r| r.get(0))?;
    assert_eq!(n, 3);
    match m.restore_to(&r.snapshot_id, &elsewhere) {
        Err(Error::InvalidInput {
            field: "target", ..
        }) => {}
        other => bail!("restore_to over an existing file: {other:?}"),
    }
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(snapshot::store::STAGING_PREFIX)
        })
        .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
    Ok(())
}

/// A source whose check of the *live* file fails: the restored result "fails verification".
#[derive(Debug)]
struct FailsAfterSwap(SqliteSource);

impl Source for FailsAfterSwap {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn extension(&self) -> &str {
        self.0.extension()
    }
    fn capture(&self, dest: &Path) -> snapshot::Result<()> {
        self.0.capture(dest)
    }
    fn check_image(&self, image: &Path, level: CheckLevel) -> snapshot::Result<()> {
        if image == self.0.path() {
            return Err(Error::NotADatabase {
                engine: "sqlite",
                path: image.to_path_buf(),
                detail: "injected failure".into(),
            });
        }
        self.0.check_image(image, level)
    }
    fn prepare_replace(&self) -> snapshot::Result<()> {
        self.0.prepare_replace()
    }
    fn companions(&self) -> Vec<PathBuf> {
        self.0.companions()
    }
}

#[test]
fn a_restore_that_fails_its_check_is_rolled_back() -> Result<()> {
    let f = Fixture::new()?;
    let m = SnapshotManager::builder()
        .source(Arc::new(FailsAfterSwap(SqliteSource::new(&f.db))))
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::persistent())
        .build()?;
    let r = take(&m, SnapshotRequest::new("manual"))?;
    f.exec("UPDATE measure SET name = 'changed'")?;
    match m.restore(&r.snapshot_id) {
        Err(Error::RestoreFailed {
            rolled_back: true, ..
        }) => {}
        other => bail!("expected a rolled-back RestoreFailed, got {other:?}"),
    }
    assert_eq!(f.names()?, vec!["changed"; 3]);
    Ok(())
}

#[test]
fn damaged_blobs_are_caught_before_anything_changes() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    let flipped = take(&m, SnapshotRequest::new("manual"))?;
    let truncated = take(&m, SnapshotRequest::new("manual"))?;
    f.exec("DELETE FROM measure WHERE id = 2")?;

    let mut bytes = std::fs::read(&flipped.file_path)?;
    bytes[5000] ^= 0x01;
    std::fs::write(&flipped.file_path, &bytes)?;
    let len = std::fs::metadata(&truncated.file_path)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated.file_path)?
        .set_len(len / 2)?;

    for r in [&flipped, &truncated] {
        assert!(matches!(
            m.verify(&r.snapshot_id),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            m.restore(&r.snapshot_id),
            Err(Error::ChecksumMismatch { .. })
        ));
    }
    assert_eq!(f.names()?, vec!["hedges", "meadows"]);
    let all = m.verify_all()?;
    assert_eq!(all.failed.len(), 2);
    std::fs::remove_file(&flipped.file_path)?;
    assert!(matches!(
        m.verify(&flipped.snapshot_id),
        Err(Error::BlobMissing { .. })
    ));
    Ok(())
}

#[test]
fn bad_sources_get_typed_errors_and_leave_nothing() -> Result<()> {
    let f = Fixture::new()?;
    let store = LocalStore::open(&f.store)?;
    let missing = SnapshotManager::builder()
        .source(SqliteSource::new(f.dir.path().join("nope.db")))
        .store(store.clone())
        .environment(Environment::persistent())
        .build()?;
    match missing.snapshot(SnapshotRequest::new("manual")) {
        Err(Error::SourceMissing {
            kind: "sqlite",
            path,
        }) => assert!(path.ends_with("nope.db")),
        other => bail!("missing db: {other:?}"),
    }
    let text = f.dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, just some text that is long enough",
    )?;
    let not_db = SnapshotManager::builder()
        .source(SqliteSource::new(&text))
        .store(store.clone())
        .environment(Environment::persistent())
        .build()?;
    match not_db.snapshot(SnapshotRequest::new("manual")) {
        Err(Error::NotADatabase {
            engine: "sqlite",
            path,
            ..
        }) => assert_eq!(path, text),
        other => bail!("not a database: {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(&text)?,
        "this is not a database, just some text that is long enough"
    );
    let objects: Vec<_> = std::fs::read_dir(&f.store)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert!(objects.is_empty(), "a failed snapshot left {objects:?}");
    assert!(matches!(
        missing.snapshot(SnapshotRequest::new("  ")),
        Err(Error::InvalidInput {
            field: "operation_type",
            ..
        })
    ));
    Ok(())
}

#[test]
fn unknown_and_hostile_ids_are_not_found() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    take(&m, SnapshotRequest::new("manual"))?;
    for id in [
        "20990101_000000_000_manual",
        "../../etc/passwd",
        "a\0b",
        "",
        "snapshot_metadata",
    ] {
        match m.get(id) {
            Err(Error::NotFound { id: got }) => assert_eq!(got, id),
            other => bail!("get({id:?}): {other:?}"),
        }
        assert!(matches!(m.restore(id), Err(Error::NotFound { .. })));
    }
    Ok(())
}

#[test]
fn hostile_entity_ids_and_descriptions_stay_inside_the_store() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::new().keep_last(100))?;
    let long = "x".repeat(10_000);
    let hostile = [
        "../../etc",
        "a\0b",
        long.as_str(),
        "mesure €✓ 測定",
        "a/b\\c",
        "..",
        " ",
    ];
    let mut ids = std::collections::HashSet::new();
    for h in hostile {
        let r = take(
            &m,
            SnapshotRequest::new("delete")
                .entity("measure", h)
                .description(h),
        )?;
        assert_eq!(r.entity_id.as_deref(), Some(h));
        assert_eq!(r.description, h);
        assert!(
            r.snapshot_id.len() < 128,
            "id too long: {}",
            r.snapshot_id.len()
        );
        let blob = PathBuf::from(&r.file_path);
        assert_eq!(
            blob.parent(),
            Some(f.store.as_path()),
            "blob escaped the store"
        );
        assert!(
            ids.insert(r.snapshot_id.clone()),
            "duplicate id {}",
            r.snapshot_id
        );
    }
    let listed = m.list(&ListFilter::new())?;
    assert_eq!(listed.len(), hostile.len());
    // round trip through the catalog keeps them exactly
    for h in hostile {
        let found = m.list(&ListFilter::new().entity_id(h))?;
        assert_eq!(
            found.len(),
            1,
            "entity id {:?}",
            h.chars().take(20).collect::<String>()
        );
    }
    Ok(())
}

#[test]
fn ids_are_unique_and_sorted_even_within_one_millisecond() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::new().keep_last(1000))?;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(take(&m, SnapshotRequest::new("delete").entity("measure", 1))?.snapshot_id);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len());
    let listed: Vec<String> = m
        .list(&ListFilter::new())?
        .into_iter()
        .map(|r| r.snapshot_id)
        .rev()
        .collect();
    assert_eq!(
        listed, ids,
        "list (reversed) is the order they were taken in"
    );
    Ok(())
}

#[test]
fn corrupt_or_lost_index_is_a_typed_error_and_doctor_rebuilds_it() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    let a = take(&m, SnapshotRequest::new("delete").entity("measure", 1))?;
    let b = take(&m, SnapshotRequest::new("delete").entity("measure", 2))?;
    m.set_outcome(&a.snapshot_id, Outcome::Committed)?;
    let index = f.store.join("snapshot_metadata.json");
    let full = std::fs::read(&index)?;

    for broken in [&full[..full.len() / 2], b"{not json", b""] {
        std::fs::write(&index, broken)?;
        match m.list(&ListFilter::new()) {
            Err(Error::CatalogCorrupt { path, line, .. }) => {
                assert_eq!(path, index);
                assert!(line >= 1);
            }
            other => bail!("corrupt index: {other:?}"),
        }
        assert!(matches!(
            m.snapshot(SnapshotRequest::new("manual")),
            Err(Error::CatalogCorrupt { .. })
        ));
        let report = m.doctor(&DoctorOptions {
            repair: true,
            min_age: std::time::Duration::ZERO,
        })?;
        assert!(report.index_problem.is_some());
        assert_eq!(report.rebuilt_records, Some(2));
        let ids: Vec<_> = m
            .list(&ListFilter::new())?
            .into_iter()
            .map(|r| r.snapshot_id)
            .collect();
        assert_eq!(ids, vec![b.snapshot_id.clone(), a.snapshot_id.clone()]);
        assert!(
            m.doctor(&DoctorOptions {
                repair: false,
                min_age: std::time::Duration::ZERO
            })?
            .is_clean()
        );
    }
    std::fs::remove_file(&index)?;
    let report = m.doctor(&DoctorOptions {
        repair: true,
        min_age: std::time::Duration::ZERO,
    })?;
    assert_eq!(report.rebuilt_records, Some(2));
    m.verify_all()?
        .failed
        .is_empty()
        .then_some(())
        .context("rebuilt catalog verifies")?;
    Ok(())
}

#[test]
fn doctor_finds_and_cleans_leftovers_and_orphans() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    let r = take(&m, SnapshotRequest::new("manual"))?;
    let stray = f
        .store
        .join(format!("{}123-crashed", snapshot::store::STAGING_PREFIX));
    std::fs::write(&stray, b"partial")?;
    let orphan = f.store.join("20200101_000000_000_delete_measure_9.sqlite3");
    std::fs::write(&orphan, b"blob without a record")?;
    assert_eq!(
        m.list(&ListFilter::new())?.len(),
        1,
        "leftovers are never listed"
    );

    let found = m.doctor(&DoctorOptions {
        repair: false,
        min_age: std::time::Duration::ZERO,
    })?;
    assert_eq!(found.staging_leftovers, vec![stray.clone()]);
    assert_eq!(
        found.orphan_objects,
        vec!["20200101_000000_000_delete_measure_9.sqlite3".to_string()]
    );
    assert!(
        stray.exists() && orphan.exists(),
        "a report-only doctor deleted something"
    );
    // young leftovers may belong to a snapshot in progress: spared by default
    assert!(
        m.doctor(&DoctorOptions::default())?
            .staging_leftovers
            .is_empty()
    );

    m.doctor(&DoctorOptions {
        repair: true,
        min_age: std::time::Duration::ZERO,
    })?;
    assert!(!stray.exists() && !orphan.exists());
    m.verify(&r.snapshot_id)?;
    Ok(())
}

#[test]
fn retention_runs_after_each_snapshot_and_on_prune() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::new().keep_last(3))?;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(take(
            &m,
            SnapshotRequest::new("delete").entity("measure", i),
        )?);
    }
    let listed = m.list(&ListFilter::new())?;
    assert_eq!(listed.len(), 3);
    for gone in &all[..2] {
        assert!(
            !Path::new(&gone.file_path).exists(),
            "pruned blob still on disk"
        );
        assert!(!f.store.join(format!("{}.json", gone.snapshot_id)).exists());
    }
    m.pin(&all[2].snapshot_id, true)?;
    let report = m.prune_with(&RetentionPolicy::new().keep_last(1))?;
    assert_eq!(report.deleted, vec![all[3].snapshot_id.clone()]);
    let left: Vec<_> = m
        .list(&ListFilter::new())?
        .into_iter()
        .map(|r| r.snapshot_id)
        .collect();
    assert_eq!(
        left,
        vec![all[4].snapshot_id.clone(), all[2].snapshot_id.clone()]
    );
    assert!(matches!(
        m.prune_with(&RetentionPolicy::new().keep_last(0)),
        Err(Error::RetentionKeepsNothing { .. })
    ));
    assert!(matches!(
        SnapshotManager::builder()
            .source(SqliteSource::new(&f.db))
            .store(LocalStore::open(&f.store)?)
            .retention(RetentionPolicy::new())
            .build(),
        Err(Error::RetentionKeepsNothing { .. })
    ));
    Ok(())
}

#[test]
fn list_filters_and_status() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::new().keep_last(100))?;
    let start = chrono::Utc::now();
    take(&m, SnapshotRequest::new("delete").entity("measure", 1))?;
    take(&m, SnapshotRequest::new("delete").entity("area", 1))?;
    take(&m, SnapshotRequest::new("update").entity("measure", 2))?;
    let last = take(&m, SnapshotRequest::new("delete").entity("measure", 2))?;
    let n = |filter: ListFilter| -> Result<usize> { Ok(m.list(&filter)?.len()) };
    assert_eq!(n(ListFilter::new().operation_type("delete"))?, 3);
    assert_eq!(n(ListFilter::new().entity_type("measure"))?, 3);
    assert_eq!(n(ListFilter::new().entity_type("measure").entity_id(2))?, 2);
    assert_eq!(
        n(ListFilter::new()
            .operation_type("delete")
            .entity_type("measure")
            .limit(1))?,
        1
    );
    assert_eq!(
        m.list(&ListFilter::new().limit(1))?[0].snapshot_id,
        last.snapshot_id
    );
    assert_eq!(n(ListFilter::new().since(start))?, 4);
    assert_eq!(n(ListFilter::new().until(start))?, 0);
    let status = m.status()?;
    assert!(status.enabled);
    assert_eq!(status.count, 4);
    assert_eq!(status.by_operation["delete"].count, 3);
    assert_eq!(
        status.total_bytes,
        m.list(&ListFilter::new())?
            .iter()
            .map(|r| r.size_bytes)
            .sum::<u64>()
    );
    assert_eq!(status.newest, Some(last.datetime));
    Ok(())
}

#[test]
fn an_ephemeral_host_disables_local_snapshots() -> Result<()> {
    let f = Fixture::new()?;
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&f.db))
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::ephemeral("test host"))
        .build()?;
    assert!(!m.is_enabled());
    match m.snapshot(SnapshotRequest::new("delete").entity("measure", 1))? {
        SnapshotOutcome::Disabled { reason } => assert!(reason.contains("test host"), "{reason}"),
        other => bail!("expected Disabled, got {other:?}"),
    }
    assert!(m.list(&ListFilter::new())?.is_empty());
    assert!(!m.status()?.enabled);
    Ok(())
}

#[test]
fn a_snapshot_of_another_engine_is_refused() -> Result<()> {
    let f = Fixture::new()?;
    let notes = f.dir.path().join("notes.txt");
    std::fs::write(&notes, "plain file")?;
    let files = SnapshotManager::builder()
        .source(FileSource::new(&notes))
        .store(LocalStore::open(&f.store)?)
        .environment(Environment::persistent())
        .build()?;
    let r = take(&files, SnapshotRequest::new("manual"))?;
    assert!(r.blob_key.ends_with(".txt"));
    let db = f.manager(RetentionPolicy::default())?;
    match db.restore(&r.snapshot_id) {
        Err(Error::WrongEngine {
            snapshot_kind,
            target_kind,
            ..
        }) => {
            assert_eq!(
                (snapshot_kind.as_str(), target_kind.as_str()),
                ("file", "sqlite")
            );
        }
        other => bail!("expected WrongEngine, got {other:?}"),
    }
    assert_eq!(f.names()?.len(), 3);
    // the file source restores its own kind
    std::fs::write(&notes, "changed")?;
    files.restore(&r.snapshot_id)?;
    assert_eq!(std::fs::read_to_string(&notes)?, "plain file");
    Ok(())
}

/// The safety snapshot of a quiesced live file on the store's file system is that file under a
/// second name (no copy): after the swap it belongs to the store alone, owner-only, and verifies;
/// the restored live file keeps the mode the live file had. On another file system (here /dev/shm,
/// when it is one) the same restore copies instead, with the same results.
#[test]
fn the_safety_snapshot_is_the_present_file_when_the_store_can_link_it() -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shm = Path::new("/dev/shm");
    let other_fs = shm.is_dir()
        && std::fs::metadata(shm)?.dev() != std::fs::metadata(std::env::temp_dir())?.dev();
    for cross_device in [false, true] {
        let f = Fixture::new()?;
        let shm_dir = tempfile::tempdir_in(if cross_device && other_fs {
            shm
        } else {
            f.dir.path()
        })?;
        let (m, store) = f.manager_storing_in(cross_device.then_some(shm_dir.path()))?;
        let before = take(&m, SnapshotRequest::new("delete").entity("measure", 42))?;
        f.exec("DELETE FROM measure WHERE id = 42")?;
        std::fs::set_permissions(&f.db, std::fs::Permissions::from_mode(0o640))?;
        let live_inode = std::fs::metadata(&f.db)?.ino();

        let report = m.restore(&before.snapshot_id)?;
        assert_eq!(f.names()?, vec!["hedges", "ponds", "meadows"]);
        let safety = m.get(&report.safety_snapshot.context("a safety snapshot")?)?;
        let blob = std::fs::metadata(store.join(&safety.blob_key))?;
        let linked = report
            .steps
            .iter()
            .any(|s| s.contains("linked into the store"));
        assert_eq!(
            linked,
            !(cross_device && other_fs),
            "link only on one file system: {:?}",
            report.steps
        );
        assert_eq!(
            blob.ino() == live_inode,
            linked,
            "the blob is the former live file"
        );
        assert_eq!(
            blob.nlink(),
            1,
            "the blob is the store's alone after the swap"
        );
        assert_eq!(blob.permissions().mode() & 0o777, 0o600);
        let live = std::fs::metadata(&f.db)?;
        assert_ne!(live.ino(), live_inode, "the live file was swapped");
        assert_eq!(
            live.permissions().mode() & 0o777,
            0o640,
            "the live mode is kept"
        );
        m.verify(&safety.snapshot_id)?;
        m.restore(&safety.snapshot_id)?;
        assert_eq!(f.names()?, vec!["hedges", "ponds"]);
        assert!(
            m.doctor(&DoctorOptions {
                repair: false,
                min_age: std::time::Duration::ZERO
            })?
            .is_clean()
        );
    }
    Ok(())
}

/// A restore killed between recording its linked safety snapshot and the swap leaves a listed
/// blob that is the live file: doctor reports it, and repair drops that record and unlinks only
/// the store's name — the live database stays whole.
#[test]
fn doctor_drops_a_safety_snapshot_that_is_still_the_live_file() -> Result<()> {
    let f = Fixture::new()?;
    let m = f.manager(RetentionPolicy::default())?;
    let kept = take(&m, SnapshotRequest::new("manual"))?;
    let r = take(&m, SnapshotRequest::new("pre_restore").pinned(true))?;
    // What the interrupted restore leaves: the blob's name is a link to the live file.
    let blob = f.store.join(&r.blob_key);
    std::fs::remove_file(&blob)?;
    std::fs::hard_link(&f.db, &blob)?;

    let found = m.doctor(&DoctorOptions {
        repair: false,
        min_age: std::time::Duration::ZERO,
    })?;
    assert_eq!(found.blobs_shared_with_live, vec![r.snapshot_id.clone()]);
    assert!(!found.is_clean());
    m.doctor(&DoctorOptions {
        repair: true,
        min_age: std::time::Duration::ZERO,
    })?;
    assert!(matches!(m.get(&r.snapshot_id), Err(Error::NotFound { .. })));
    assert!(!blob.exists(), "the store's name is gone");
    assert_eq!(
        f.names()?,
        vec!["hedges", "ponds", "meadows"],
        "the live data is whole"
    );
    m.verify(&kept.snapshot_id)?;
    assert!(
        m.doctor(&DoctorOptions {
            repair: false,
            min_age: std::time::Duration::ZERO
        })?
        .is_clean()
    );
    Ok(())
}

/// Restoring is what a user does when the live database is damaged: a live file that is no longer
/// a database (its header overwritten) or whose pages are corrupt does not stop the restore. The
/// safety snapshot keeps the damaged present byte for byte, unverified (a `verify` of it reports
/// the damage), on the link path and on the copy path (a store on another file system).
#[test]
fn a_damaged_live_database_is_restored_over_and_kept_as_found() -> Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let shm = Path::new("/dev/shm");
    ensure!(
        shm.is_dir(),
        "/dev/shm is needed for a store on another file system"
    );
    for (damage, cross_device) in [
        ("header", false),
        ("header", true),
        ("pages", false),
        ("pages", true),
    ] {
        let f = Fixture::new()?;
        let shm_dir = tempfile::tempdir_in(shm)?;
        let (m, store) = f.manager_storing_in(cross_device.then_some(shm_dir.path()))?;
        let good = take(&m, SnapshotRequest::new("manual"))?;
        Connection::open(&f.db)?.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let file = std::fs::OpenOptions::new().write(true).open(&f.db)?;
        match damage {
            "header" => file.write_all_at(b"this is not a database anymore!!", 0)?,
            _ => {
                let len = file.metadata()?.len();
                ensure!(len >= 8192, "a database of several pages");
                file.write_all_at(&vec![0xA5; (len - 4096) as usize], 4096)?;
            }
        }
        drop(file);
        let damaged = std::fs::read(&f.db)?;
        if cross_device {
            ensure!(
                std::fs::metadata(&store)?.dev() != std::fs::metadata(&f.db)?.dev(),
                "the store is meant to be on another file system"
            );
        }

        let report = m.restore(&good.snapshot_id).with_context(|| {
            format!("restore over damaged {damage} (cross-device {cross_device})")
        })?;
        assert_eq!(f.names()?, vec!["hedges", "ponds", "meadows"]);
        let safety = m.get(&report.safety_snapshot.context("a safety snapshot")?)?;
        assert_eq!(
            std::fs::read(store.join(&safety.blob_key))?,
            damaged,
            "{damage}: the safety snapshot is the damaged present as found"
        );
        assert!(
            safety.verified_at.is_none(),
            "{damage}: not marked verified"
        );
        match m.verify(&safety.snapshot_id) {
            Err(Error::NotADatabase { .. }) => {}
            other => bail!("{damage}: verify of the damaged present: {other:?}"),
        }
    }
    Ok(())
}

/// Header bytes 18-19 of a SQLite file: 1 rollback journal, 2 WAL.
fn journal_bytes(path: &Path) -> Result<[u8; 2]> {
    let head = std::fs::read(path)?;
    Ok([head[18], head[19]])
}

#[test]
fn images_open_read_only_anywhere_and_a_restore_gives_the_live_mode_back() -> Result<()> {
    let f = Fixture::new()?;
    ensure!(
        journal_bytes(&f.db)? == [2, 2],
        "the live database is in WAL mode"
    );
    let m = f.manager(RetentionPolicy::default())?;
    let snap = take(&m, SnapshotRequest::new("delete").entity("measure", 42))?;
    let blob = f.store.join(&snap.blob_key);
    ensure!(
        journal_bytes(&blob)? == [1, 1],
        "the image is in rollback-journal mode"
    );
    // A plain read-only open, no -shm beside it needed.
    let conn = Connection::open_with_flags(&blob, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let n: i64 = conn.query_row("SELECT count(*) FROM measure", [], |r| r.get(0))?;
    ensure!(n == 3);
    drop(conn);
    for companion in ["-wal", "-shm"] {
        let mut p = blob.as_os_str().to_owned();
        p.push(companion);
        ensure!(!Path::new(&p).exists(), "{companion} beside the image");
    }
    m.verify(&snap.snapshot_id)?;
    f.exec("DELETE FROM measure WHERE id = 42")?;
    m.restore(&snap.snapshot_id)?;
    ensure!(
        journal_bytes(&f.db)? == [2, 2],
        "the live file is in WAL mode again"
    );
    ensure!(f.names()?.contains(&"meadows".to_string()));
    Ok(())
}

#[test]
fn a_mistyped_source_leaves_no_store_behind() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data"); // never created: the path is mistyped
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(data.join("app.db")))
        .store(LocalStore::open(data.join("backups"))?)
        .environment(Environment::persistent())
        .build()?;
    match m.snapshot(SnapshotRequest::new("delete")) {
        Err(Error::SourceMissing { .. }) => {}
        other => bail!("expected SourceMissing, got {other:?}"),
    }
    ensure!(
        !data.exists(),
        "the store's directory was created for nothing"
    );
    ensure!(m.list(&ListFilter::new())?.is_empty());
    // Once the database is there, the first snapshot creates the store, 0700.
    std::fs::create_dir_all(&data)?;
    Connection::open(data.join("app.db"))?
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    take(&m, SnapshotRequest::new("delete"))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("backups"))?
        .permissions()
        .mode()
        & 0o777;
    ensure!(mode == 0o700, "{mode:o}");
    Ok(())
}
