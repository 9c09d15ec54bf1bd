//! The store conformance suite (`snapshot::testing::store`, feature `test-util`) run against
//! every store in the crate and the tests' fault-injecting decorator, plus the failure modes
//! only a store on a real file system has (invalid keys, crash leftovers, a read-only directory,
//! a full disk) — the last two on real file systems (a tmpfs mounted read-only or 1 MiB small)
//! and through the decorator, as far as the manager.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail, ensure};
use snapshot::catalog::INDEX_KEY;
use snapshot::store::{DedupStore, LocalStorage, Object, Payload, STAGING_PREFIX, TRASH_PREFIX};
use snapshot::testing::store::StoreFixture;
use snapshot::{
    Environment, Error, ListFilter, LocalStore, MemoryStore, ObjectMeta, PutMode, SnapshotManager,
    SnapshotRequest, SqliteSource, Store, StoreExt,
};

fn local_fixture() -> StoreFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path().join("store")).expect("open local store");
    store.ensure_dir().expect("create the store");
    StoreFixture::new(store).keeping(dir)
}

fn memory_fixture() -> StoreFixture {
    StoreFixture::new(MemoryStore::new())
}

fn quota_fixture() -> StoreFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path().join("store")).expect("open");
    store.ensure_dir().expect("create the store");
    StoreFixture::new(QuotaStore::new(store, 1 << 30)).keeping(dir)
}

fn dedup_local_fixture() -> StoreFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path().join("store")).expect("open local store");
    store.ensure_dir().expect("create the store");
    StoreFixture::new(DedupStore::new(store)).keeping(dir)
}

fn dedup_memory_fixture() -> StoreFixture {
    StoreFixture::new(DedupStore::new(MemoryStore::new()))
}

mod local_store {
    snapshot::store_conformance!(super::local_fixture);

    #[test]
    fn local_publishing_is_a_rename() -> Result<(), snapshot::testing::Failure> {
        snapshot::testing::store::local_publishing_is_a_rename(&super::local_fixture)
    }
}

mod memory_store {
    snapshot::store_conformance!(super::memory_fixture);
}

/// The dedup layer, over a directory and over a store without one, is a store like any other.
mod dedup_local_store {
    snapshot::store_conformance!(super::dedup_local_fixture);
}

mod dedup_memory_store {
    snapshot::store_conformance!(super::dedup_memory_fixture);
}

/// The decorator itself behaves as a store (so its faults are the only difference).
mod quota_store {
    snapshot::store_conformance!(super::quota_fixture);
}

/// A staging file in a local store's directory, as the manager prepares an image.
fn staged(store: &LocalStore, data: &[u8]) -> Result<PathBuf> {
    let p = store.dir().join(format!(
        "{STAGING_PREFIX}test-{}-{}",
        std::process::id(),
        data.len()
    ));
    fs::write(&p, data)?;
    Ok(p)
}

fn keys(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().map(|o| o.key.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// LocalStore only: keys become file names, and the file system can refuse.

#[test]
fn local_invalid_keys_are_invalid_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("store"))?;
    store.ensure_dir()?;
    let long = "x".repeat(256);
    let outside = dir.path().join("outside");
    fs::write(&outside, b"not yours")?;
    for key in [
        "../x",
        "a/b",
        ".hidden",
        "",
        "a\0b",
        "..",
        "a\\b",
        long.as_str(),
    ] {
        let is_invalid = |r: snapshot::Result<()>, op: &str| -> Result<()> {
            match r {
                Err(Error::InvalidInput { .. }) => Ok(()),
                other => bail!("{op}({key:?}): expected InvalidInput, got {other:?}"),
            }
        };
        is_invalid(store.put_bytes(key, b"x", PutMode::Create), "put_bytes")?;
        is_invalid(store.put_bytes(key, b"x", PutMode::Overwrite), "put_bytes")?;
        let p = staged(&store, b"x")?;
        is_invalid(store.put_file(key, &p, PutMode::Overwrite), "put_file")?;
        fs::remove_file(&p)?;
        is_invalid(store.get_bytes(key).map(drop), "get_bytes")?;
        is_invalid(
            store.get_to_file(key, &dir.path().join("dest")).map(drop),
            "get_to_file",
        )?;
        is_invalid(store.head(key).map(drop), "head")?;
        is_invalid(store.delete(key), "delete")?;
        ensure!(store.object_path(key).is_err(), "object_path({key:?})");
    }
    ensure!(fs::read(&outside)? == b"not yours");
    ensure!(!dir.path().join("x").exists() && !dir.path().join("dest").exists());
    ensure!(store.list()?.is_empty());
    Ok(())
}

#[test]
fn local_list_skips_dotfiles_staging_files_and_directories() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("store"))?;
    store.ensure_dir()?;
    store.put_bytes("z.json", b"z", PutMode::Create)?;
    store.put_bytes("a.sqlite3", b"a", PutMode::Create)?;
    fs::write(store.dir().join(".hidden"), b"h")?;
    fs::write(store.dir().join(format!("{STAGING_PREFIX}123-x")), b"s")?;
    fs::create_dir(store.dir().join("subdir"))?;
    // A compare-and-swap leaves the directory's lock file behind: not an object either.
    let v = store.get("z.json")?.meta.version.unwrap_or_default();
    store.put("z.json", Payload::Bytes(b"zz"), PutMode::Update(v))?;
    ensure!(store.dir().join(".lock").exists());
    ensure!(keys(&store.list()?) == ["a.sqlite3", "z.json"]);
    Ok(())
}

#[test]
fn local_objects_are_owner_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("nested/store"))?;
    store.ensure_dir()?;
    let mode = |p: &Path| -> Result<u32> { Ok(fs::metadata(p)?.permissions().mode() & 0o777) };
    ensure!(
        mode(store.dir())? == 0o700,
        "store dir {:o}",
        mode(store.dir())?
    );
    store.put_bytes("a.json", b"a", PutMode::Create)?;
    store.put_bytes("b.json", b"b", PutMode::Overwrite)?;
    let outside = dir.path().join("blob");
    fs::write(&outside, b"blob")?;
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o644))?;
    store.put_file("c.sqlite3", &outside, PutMode::Create)?;
    let inside = staged(&store, b"blob")?;
    fs::set_permissions(&inside, fs::Permissions::from_mode(0o644))?;
    store.put_file("d.sqlite3", &inside, PutMode::Create)?;
    for k in ["a.json", "b.json", "c.sqlite3", "d.sqlite3"] {
        let m = mode(&store.dir().join(k))?;
        ensure!(m == 0o600, "{k} has mode {m:o}");
    }
    Ok(())
}

#[test]
fn local_leftovers_are_staging_files_older_than_min_age() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("store"))?;
    store.ensure_dir()?;
    let old = store
        .dir()
        .join(format!("{STAGING_PREFIX}1-0-000000001-a.sqlite3"));
    let young = store
        .dir()
        .join(format!("{STAGING_PREFIX}1-1-000000002-b.sqlite3"));
    let old_other = store.dir().join("old-but-not-staging.sqlite3");
    for p in [&old, &young, &old_other] {
        fs::write(p, b"partial")?;
    }
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for p in [&old, &old_other] {
        fs::File::options()
            .write(true)
            .open(p)?
            .set_modified(two_hours_ago)?;
    }
    ensure!(store.leftovers(Duration::from_secs(3600))? == vec![old.clone()]);
    ensure!(store.leftovers(Duration::ZERO)? == vec![old.clone(), young.clone()]);
    ensure!(store.leftovers(Duration::from_secs(3 * 3600))?.is_empty());
    // Leftovers are never listed as objects.
    ensure!(keys(&store.list()?) == ["old-but-not-staging.sqlite3"]);
    Ok(())
}

fn trash_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with(TRASH_PREFIX) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Deleted objects leave the namespace at once and their space is freed off the caller's path:
/// by the time the last clone of the store is dropped, nothing of them is left — including trash
/// that a process which exited early left behind, which is also a leftover at any age.
#[test]
fn local_deletes_free_space_in_the_background_and_leave_no_trash() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store_dir = dir.path().join("store");
    let big = vec![7u8; 8 << 20];
    {
        let store = LocalStore::open(&store_dir)?;
        store.ensure_dir()?;
        let keep = store.clone();
        store.put_bytes("a.sqlite3", &big, PutMode::Create)?;
        store.put_bytes("a.json", b"{}", PutMode::Create)?;
        store.put_bytes("b.json", b"{}", PutMode::Create)?;
        // A previous process discarded this and exited before freeing it.
        let stale = store_dir.join(format!("{TRASH_PREFIX}1-0-000000001-old.sqlite3"));
        fs::write(&stale, &big)?;
        ensure!(store.leftovers(Duration::from_secs(3600))? == vec![stale.clone()]);

        store.delete_many(&["a.sqlite3".into(), "a.json".into()])?;
        ensure!(store.head("a.sqlite3")?.is_none() && store.head("a.json")?.is_none());
        ensure!(
            keys(&store.list()?) == ["b.json"],
            "{:?}",
            keys(&store.list()?)
        );
        drop(store);
        // A clone still holds the store: dropping it waits for the pending frees.
        drop(keep);
    }
    ensure!(
        trash_files(&store_dir)?.is_empty(),
        "trash left after the store was dropped: {:?}",
        trash_files(&store_dir)?
    );
    let mut names: Vec<_> = fs::read_dir(&store_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    ensure!(names == ["b.json"], "{names:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Real file systems that refuse writes.

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs at `dir` with `options`; `Err` says why it could not (no privilege).
    fn mount(dir: &Path, options: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(format!(
                "mount -t tmpfs -o {options}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn remount_read_only(&self) -> Result<()> {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .output()?;
        ensure!(
            out.status.success(),
            "remount read-only: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Whether this process can write into a directory whose mode forbids it (root, or
/// CAP_DAC_OVERRIDE): then permission bits cannot make a store read-only.
fn permission_bits_are_ignored(scratch: &Path) -> Result<bool> {
    let probe_dir = scratch.join("probe-0500");
    fs::create_dir(&probe_dir)?;
    fs::set_permissions(&probe_dir, fs::Permissions::from_mode(0o500))?;
    let ignored = fs::write(probe_dir.join("probe"), b"x").is_ok();
    fs::set_permissions(&probe_dir, fs::Permissions::from_mode(0o700))?;
    fs::remove_dir_all(&probe_dir)?;
    Ok(ignored)
}

/// How a store directory was made read-only (kept alive for the test: dropping it restores the
/// mode or unmounts the tmpfs).
enum ReadOnly {
    Chmod(PathBuf),
    Mount { _tmpfs: Tmpfs },
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let ReadOnly::Chmod(dir) = self {
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
    }
}

/// Opens a store in `scratch` that `make_read_only` then turns read-only: by mode 0500 for an
/// ordinary user, by a read-only remount of a tmpfs for root. Fails (never skips) when neither
/// works here.
/// Turns a store read-only when called.
type MakeReadOnly = Box<dyn FnOnce() -> Result<ReadOnly>>;

fn store_that_turns_read_only(scratch: &Path) -> Result<(LocalStore, MakeReadOnly)> {
    if !permission_bits_are_ignored(scratch)? {
        let store = LocalStore::open(scratch.join("store"))?;
        store.ensure_dir()?;
        let dir = store.dir().to_path_buf();
        let make = Box::new(move || -> Result<ReadOnly> {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o500))?;
            Ok(ReadOnly::Chmod(dir))
        });
        return Ok((store, make));
    }
    let mount = Tmpfs::mount(&scratch.join("mnt"), "size=16m,mode=0700").map_err(|why| {
        anyhow::anyhow!(
            "cannot make a read-only store here: this process ignores permission bits \
             (root / CAP_DAC_OVERRIDE) and cannot mount a tmpfs ({why}); run the tests as an \
             ordinary user or allow mounting"
        )
    })?;
    let store = LocalStore::open(mount.dir.join("store"))?;
    store.ensure_dir()?;
    let make = Box::new(move || -> Result<ReadOnly> {
        mount.remount_read_only()?;
        Ok(ReadOnly::Mount { _tmpfs: mount })
    });
    Ok((store, make))
}

fn assert_permission_denied_in(r: snapshot::Result<()>, dir: &Path, op: &str) -> Result<()> {
    match r {
        Err(e @ Error::PermissionDenied { .. }) => {
            let Error::PermissionDenied { path, .. } = &e else {
                unreachable!()
            };
            ensure!(
                path.starts_with(dir),
                "{op}: the error names {} instead of a path in {}",
                path.display(),
                dir.display()
            );
            ensure!(
                e.to_string().contains(&dir.display().to_string()),
                "{op}: the message does not name the path: {e}"
            );
            Ok(())
        }
        other => bail!("{op} on a read-only store: expected PermissionDenied, got {other:?}"),
    }
}

#[test]
fn local_read_only_store_is_permission_denied_naming_the_path() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let (store, make_read_only) = store_that_turns_read_only(scratch.path())?;
    store.put_bytes("kept.json", b"kept", PutMode::Create)?;
    let outside = scratch.path().join("blob");
    fs::write(&outside, b"blob")?;
    let _ro = make_read_only()?;
    // Confirm the directory really refuses writes before trusting the assertions below.
    ensure!(
        fs::write(store.dir().join("probe"), b"x").is_err(),
        "the store directory is still writable"
    );

    let dir = store.dir().to_path_buf();
    assert_permission_denied_in(
        store.put_bytes("new.json", b"x", PutMode::Create),
        &dir,
        "put_bytes Create",
    )?;
    assert_permission_denied_in(
        store.put_bytes("kept.json", b"x", PutMode::Overwrite),
        &dir,
        "put_bytes Overwrite",
    )?;
    assert_permission_denied_in(
        store.put_file("new.sqlite3", &outside, PutMode::Create),
        &dir,
        "put_file",
    )?;
    assert_permission_denied_in(store.delete("kept.json"), &dir, "delete")?;
    ensure!(
        outside.exists(),
        "a refused put_file must leave the caller's file"
    );
    // Reads still work and nothing changed.
    ensure!(store.get_bytes("kept.json")? == b"kept");
    ensure!(keys(&store.list()?) == ["kept.json"]);
    Ok(())
}

#[test]
fn manager_snapshot_into_a_read_only_store_is_permission_denied() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let (store, make_read_only) = store_that_turns_read_only(scratch.path())?;
    let db = scratch.path().join("app.db");
    let app = live_db(&db, 20, 1000)?;
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(store.clone())
        .environment(Environment::persistent())
        .build()?;
    manager.snapshot(SnapshotRequest::new("delete").entity("measure", 1))?;
    let index_before = fs::read(store.dir().join(INDEX_KEY))?;
    let objects_before = store.list()?;
    let live_before = digest(&app)?;
    let _ro = make_read_only()?;

    match manager.snapshot(SnapshotRequest::new("delete").entity("measure", 2)) {
        Err(Error::PermissionDenied { path, .. }) => ensure!(
            path.starts_with(store.dir()),
            "the error names {}",
            path.display()
        ),
        other => bail!("expected PermissionDenied, got {other:?}"),
    }
    ensure!(fs::read(store.dir().join(INDEX_KEY))? == index_before);
    ensure!(store.list()? == objects_before);
    ensure!(manager.list(&ListFilter::new())?.len() == 1);
    ensure!(digest(&app)? == live_before, "the live database changed");
    Ok(())
}

#[test]
fn local_full_disk_is_storage_full_and_publishes_nothing() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let Ok(mount) = Tmpfs::mount(&scratch.path().join("mnt"), "size=1m,mode=0700") else {
        // No privilege to mount: the same failure is injected by QuotaStore in
        // `manager_storage_full_at_each_step_leaves_nothing_behind`, which always runs.
        eprintln!("mount not permitted: the disk-full case runs through QuotaStore only");
        return disk_full_through_the_decorator_only();
    };
    let store = LocalStore::open(mount.dir.join("store"))?;
    store.ensure_dir()?;
    store.put_bytes("small.json", b"small", PutMode::Create)?;
    let big = vec![7u8; 2 << 20];

    let full = |r: snapshot::Result<()>, op: &str| -> Result<()> {
        match r {
            Err(Error::StorageFull { path, .. }) => {
                ensure!(
                    path.starts_with(store.dir()),
                    "{op}: names {}",
                    path.display()
                );
                Ok(())
            }
            other => bail!("{op} on a full disk: expected StorageFull, got {other:?}"),
        }
    };
    full(
        store.put_bytes("big.json", &big, PutMode::Create),
        "put_bytes Create",
    )?;
    full(
        store.put_bytes("small.json", &big, PutMode::Overwrite),
        "put_bytes Overwrite",
    )?;
    let outside = scratch.path().join("big.bin");
    fs::write(&outside, &big)?;
    full(
        store.put_file("big.sqlite3", &outside, PutMode::Create),
        "put_file",
    )?;
    ensure!(fs::read(&outside)? == big, "the caller's file was damaged");

    ensure!(
        store.get_bytes("small.json")? == b"small",
        "the original was damaged"
    );
    ensure!(keys(&store.list()?) == ["small.json"]);
    ensure!(
        store.leftovers(Duration::ZERO)?.is_empty(),
        "staging files remain"
    );
    // The space is back: a small put works again.
    store.put_bytes("after.json", b"ok", PutMode::Create)?;
    Ok(())
}

/// Without mount privileges the store-level disk-full case is the decorator's.
fn disk_full_through_the_decorator_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = QuotaStore::new(LocalStore::open(dir.path().join("store"))?, 1 << 20);
    store.put_bytes("small.json", b"small", PutMode::Create)?;
    match store.put_bytes("big.json", &vec![7u8; 2 << 20], PutMode::Create) {
        Err(Error::StorageFull { .. }) => {}
        other => bail!("expected StorageFull, got {other:?}"),
    }
    ensure!(keys(&store.list()?) == ["small.json"]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Disk full mid-snapshot, through the manager.

/// A live WAL-mode SQLite database with `rows` rows of `blob` random bytes; the returned
/// connection stays open, as an application's would.
fn live_db(path: &Path, rows: u32, blob: u32) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, data BLOB);",
    )?;
    grow(&conn, rows, blob)?;
    Ok(conn)
}

fn grow(conn: &rusqlite::Connection, rows: u32, blob: u32) -> Result<()> {
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
         INSERT INTO t(data) SELECT randomblob(?2) FROM c",
        (rows, blob),
    )?;
    Ok(())
}

/// The logical content of the live database: row count and a hash of every row.
fn digest(conn: &rusqlite::Connection) -> Result<(u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut stmt = conn.prepare("SELECT id, data FROM t ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        r.get::<_, i64>(0)?.hash(&mut h);
        r.get::<_, Vec<u8>>(1)?.hash(&mut h);
        n += 1;
    }
    Ok((n, h.finish()))
}

/// Everything that must not move when a snapshot fails.
#[derive(Debug, PartialEq)]
struct StoreState {
    index: Vec<u8>,
    objects: Vec<String>,
}

fn store_state(store: &dyn Store) -> Result<StoreState> {
    Ok(StoreState {
        index: store.get_bytes(INDEX_KEY)?,
        objects: store.list()?.into_iter().map(|o| o.key).collect(),
    })
}

fn staging_files(dirs: &[&Path]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for d in dirs {
        for e in fs::read_dir(d)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

#[test]
fn manager_disk_full_mid_snapshot_changes_nothing() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let mount = match Tmpfs::mount(&scratch.path().join("mnt"), "size=1m,mode=0700") {
        Ok(m) => m,
        Err(why) => {
            // No privilege to mount: the same invariants, with the full disk injected.
            eprintln!("{why}: the disk fills through QuotaStore instead");
            return storage_full_at_each_step_leaves_nothing_behind();
        }
    };
    let store = LocalStore::open(mount.dir.join("store"))?;
    store.ensure_dir()?;
    let db_dir = scratch.path().join("live");
    fs::create_dir(&db_dir)?;
    let db = db_dir.join("app.db");
    let app = live_db(&db, 50, 1000)?; // ~60 kB: fits
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(store.clone())
        .environment(Environment::persistent())
        .build()?;
    manager.snapshot(SnapshotRequest::new("delete").entity("measure", 1))?;
    grow(&app, 3000, 1000)?; // ~3.5 MB: cannot fit in 1 MiB
    let before = store_state(&store)?;
    let live_before = digest(&app)?;

    match manager.snapshot(SnapshotRequest::new("delete").entity("measure", 2)) {
        Err(Error::StorageFull { path, .. }) => ensure!(
            path.starts_with(store.dir()),
            "StorageFull names {}",
            path.display()
        ),
        other => bail!("expected StorageFull, got {other:?}"),
    }
    ensure!(
        store_state(&store)? == before,
        "the catalog or the objects changed"
    );
    ensure!(manager.list(&ListFilter::new())?.len() == 1);
    let left = staging_files(&[store.dir(), &db_dir])?;
    ensure!(left.is_empty(), "staging files remain: {left:?}");
    ensure!(digest(&app)? == live_before, "the live database changed");
    let check: String = app.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    ensure!(check == "ok", "live integrity_check: {check}");
    // Once space is freed the next snapshot works: the failure left nothing that blocks it.
    app.execute("DELETE FROM t WHERE id > 50", [])?;
    app.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
    manager.snapshot(SnapshotRequest::new("delete").entity("measure", 3))?;
    ensure!(manager.list(&ListFilter::new())?.len() == 2);
    Ok(())
}

/// A fault-injecting decorator: a store with a byte quota, failing the put that would exceed it
/// (or any put whose key matches `fail_on`) the way a full disk does.
#[derive(Debug)]
struct QuotaStore {
    inner: LocalStore,
    quota: u64,
    fail_on: Option<fn(&str) -> bool>,
}

impl QuotaStore {
    fn new(inner: LocalStore, quota: u64) -> Self {
        QuotaStore {
            inner,
            quota,
            fail_on: None,
        }
    }

    fn check(&self, key: &str, adding: u64) -> snapshot::Result<()> {
        let used: u64 = self
            .inner
            .list()?
            .iter()
            .filter(|o| o.key != key)
            .map(|o| o.size)
            .sum();
        if used + adding > self.quota || self.fail_on.is_some_and(|f| f(key)) {
            return Err(Error::StorageFull {
                op: "write",
                path: PathBuf::from(self.inner.object_location(key)),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        Ok(())
    }
}

/// The decorator checks every put, so it offers no [`LocalStorage`] capability: the manager
/// then stages images outside the store and publishes them through `put`, where the quota
/// applies. (A decorator that forwarded `local()` would let the manager link images into place
/// behind its back.)
impl Store for QuotaStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn object_location(&self, key: &str) -> String {
        self.inner.object_location(key)
    }
    fn put(
        &self,
        key: &str,
        payload: Payload<'_>,
        mode: PutMode,
    ) -> snapshot::Result<Option<String>> {
        let len = match payload {
            Payload::Bytes(b) => b.len() as u64,
            Payload::File(f) => fs::metadata(f).map(|m| m.len()).unwrap_or(0),
        };
        self.check(key, len)?;
        self.inner.put(key, payload, mode)
    }
    fn get(&self, key: &str) -> snapshot::Result<Object> {
        self.inner.get(key)
    }
    fn get_to_file(&self, key: &str, dest: &Path) -> snapshot::Result<ObjectMeta> {
        self.inner.get_to_file(key, dest)
    }
    fn head(&self, key: &str) -> snapshot::Result<Option<ObjectMeta>> {
        self.inner.head(key)
    }
    fn list(&self) -> snapshot::Result<Vec<ObjectMeta>> {
        self.inner.list()
    }
    fn delete(&self, key: &str) -> snapshot::Result<()> {
        self.inner.delete(key)
    }
}

#[test]
fn manager_storage_full_at_each_step_leaves_nothing_behind() -> Result<()> {
    storage_full_at_each_step_leaves_nothing_behind()
}

fn storage_full_at_each_step_leaves_nothing_behind() -> Result<()> {
    // Each step of publishing a snapshot, failing in turn: the blob, its sidecar, the index.
    type Step = (&'static str, fn(&str) -> bool);
    let steps: [Step; 3] = [
        ("blob", |k| k.ends_with(".sqlite3")),
        ("sidecar", |k| k.ends_with(".json") && k != INDEX_KEY),
        ("index", |k| k == INDEX_KEY),
    ];
    for (step, fail_on) in steps {
        let scratch = tempfile::tempdir()?;
        let store = Arc::new(QuotaStore::new(
            LocalStore::open(scratch.path().join("store"))?,
            1 << 30,
        ));
        let db_dir = scratch.path().join("live");
        fs::create_dir(&db_dir)?;
        let db = db_dir.join("app.db");
        let app = live_db(&db, 200, 500)?;
        let manager = SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(store.clone())
            .environment(Environment::persistent())
            .build()?;
        manager.snapshot(SnapshotRequest::new("delete").entity("measure", 1))?;
        grow(&app, 100, 500)?;
        let before = store_state(&*store)?;
        let live_before = digest(&app)?;

        // The decorator starts failing now (a quota can't single out one step, a predicate can).
        let failing = Arc::new(QuotaStore {
            inner: store.inner.clone(),
            quota: 1 << 30,
            fail_on: Some(fail_on),
        });
        let failing_manager = SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(failing)
            .environment(Environment::persistent())
            .build()?;
        match failing_manager.snapshot(SnapshotRequest::new("delete").entity("measure", 2)) {
            Err(Error::StorageFull { .. }) => {}
            other => bail!("{step}: expected StorageFull, got {other:?}"),
        }
        ensure!(
            store_state(&*store)? == before,
            "{step}: the catalog or the objects changed"
        );
        let left = staging_files(&[store.inner.dir(), &db_dir])?;
        ensure!(left.is_empty(), "{step}: staging files remain: {left:?}");
        ensure!(
            digest(&app)? == live_before,
            "{step}: the live database changed"
        );
        ensure!(manager.list(&ListFilter::new())?.len() == 1, "{step}");

        // And with a real quota: the second snapshot no longer fits.
        let used: u64 = store.list()?.iter().map(|o| o.size).sum();
        let tight = Arc::new(QuotaStore::new(store.inner.clone(), used + 4096));
        let tight_manager = SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(tight)
            .environment(Environment::persistent())
            .build()?;
        match tight_manager.snapshot(SnapshotRequest::new("delete").entity("measure", 3)) {
            Err(Error::StorageFull { .. }) => {}
            other => bail!("quota: expected StorageFull, got {other:?}"),
        }
        ensure!(store_state(&*store)? == before, "quota: the store changed");
        ensure!(staging_files(&[store.inner.dir(), &db_dir])?.is_empty());
    }
    Ok(())
}

/// Ids handed out under contention never collide: the Create refusal is what keeps them unique.
#[test]
fn manager_snapshots_from_many_threads_get_distinct_ids_in_every_store() -> Result<()> {
    for fx in [local_fixture(), memory_fixture(), quota_fixture()] {
        let scratch = tempfile::tempdir()?;
        let db = scratch.path().join("app.db");
        let _app = live_db(&db, 10, 100)?;
        let manager = SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(fx.store.clone())
            .retention(snapshot::RetentionPolicy::default().keep_last(100))
            .environment(Environment::persistent())
            .build()?;
        std::thread::scope(|scope| -> Result<()> {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let m = manager.clone();
                    scope.spawn(move || -> Result<()> {
                        for _ in 0..5 {
                            m.snapshot(SnapshotRequest::new("delete").entity("measure", 7))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("snapshotter panicked")?;
            }
            Ok(())
        })?;
        let records = manager.list(&ListFilter::new())?;
        let ids: HashSet<_> = records.iter().map(|r| r.snapshot_id.clone()).collect();
        ensure!(
            records.len() == 20 && ids.len() == 20,
            "{} records, {} ids",
            records.len(),
            ids.len()
        );
        for r in &records {
            manager.verify(&r.snapshot_id)?;
        }
    }
    Ok(())
}
