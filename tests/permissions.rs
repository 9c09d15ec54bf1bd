//! Owner-only snapshots (DESIGN.md §4, invariant 5): snapshots hold the same data as the
//! database, so every file the library writes into a store — blobs, sidecars, the index, the lock
//! file — is 0600, the store directory (and any parent the library creates for it) is 0700, and a
//! snapshot materialised with `restore_to` is 0600 too.
//!
//! The library sets these modes itself; it must not depend on the process umask. The second test
//! runs the same workload in a child process (this test binary re-executed on
//! [`permissive_umask_child_entry_point`]) started through `sh -c 'umask 0000; exec …'`.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use snapshot::{
    DoctorOptions, Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager,
    SnapshotRequest, SqliteSource,
};

const CHILD_ENV: &str = "SNAPSHOT_TEST_CHILD";
const CHILD_TEST: &str = "permissive_umask_child_entry_point";

fn mode(path: &Path) -> Result<u32> {
    Ok(fs::symlink_metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// The process umask, from `/proc/self/status` (Linux ≥ 4.7).
fn current_umask() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .context("no Umask line in /proc/self/status")?;
    Ok(u32::from_str_radix(value.trim(), 8)?)
}

/// Where the workload puts things under `root`.
struct Layout {
    db: PathBuf,
    /// Created by the library, with two missing parents.
    store: PathBuf,
    copy: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        Layout {
            db: root.join("live").join("app.db"),
            store: root.join("snapshots").join("app").join("store"),
            copy: root.join("copy.db"),
        }
    }
}

/// Every way the library writes into a store: snapshots (with retention pruning), verify,
/// pin, a restore (which takes a safety snapshot), `restore_to`, and an index rebuilt by doctor.
fn workload(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    fs::create_dir_all(layout.db.parent().context("db has a parent")?)?;
    {
        let conn = rusqlite::Connection::open(&layout.db)?;
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "CREATE TABLE measure(id INTEGER PRIMARY KEY, value REAL);
             INSERT INTO measure VALUES (1, 1.5), (2, 2.5), (3, 3.5);",
        )?;
    }
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&layout.db))
        .store(LocalStore::open(&layout.store)?)
        .retention(RetentionPolicy::new().keep_last(3))
        .environment(Environment::persistent())
        .build()?;
    let mut first = None;
    for i in 0..5 {
        let taken = manager.snapshot(SnapshotRequest::new("delete").entity("measure", i))?;
        let id = taken
            .record()
            .context("manager disabled")?
            .snapshot_id
            .clone();
        first.get_or_insert(id);
    }
    let listed = manager.list(&ListFilter::new())?;
    ensure!(
        listed.len() == 3,
        "retention kept {} snapshots",
        listed.len()
    );
    let report = manager.verify_all()?;
    ensure!(report.all_passed(), "verify_all: {:?}", report.failed);
    let oldest = &listed[listed.len() - 1].snapshot_id;
    manager.pin(oldest, true)?;
    let restored = manager.restore(oldest)?;
    ensure!(
        restored.safety_snapshot.is_some(),
        "no safety snapshot taken"
    );
    manager.restore_to(oldest, &layout.copy)?;

    // Lose the index; doctor rebuilds it from the sidecars.
    fs::remove_file(layout.store.join("snapshot_metadata.json"))?;
    let doctor = manager.doctor(&DoctorOptions {
        repair: true,
        min_age: Duration::ZERO,
    })?;
    ensure!(
        doctor.rebuilt_records == Some(4),
        "doctor did not rebuild the index: {doctor:?}"
    );
    let first = first.context("no snapshot taken")?;
    ensure!(
        !manager
            .list(&ListFilter::new())?
            .iter()
            .any(|r| r.snapshot_id == first),
        "the first snapshot should have been pruned"
    );
    Ok(())
}

/// Checks the modes of everything the workload left in the store.
fn check_modes(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    for dir in [
        root.join("snapshots"),
        root.join("snapshots").join("app"),
        layout.store.clone(),
    ] {
        let m = mode(&dir)?;
        ensure!(
            m == 0o700,
            "directory {} is {m:04o}, expected 0700",
            dir.display()
        );
    }
    let (mut blobs, mut sidecars, mut others) = (0, 0, Vec::new());
    for entry in fs::read_dir(&layout.store)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let m = mode(&path)?;
        if path.is_dir() {
            ensure!(
                m == 0o700,
                "directory {} is {m:04o}, expected 0700",
                path.display()
            );
            continue;
        }
        ensure!(m == 0o600, "{} is {m:04o}, expected 0600", path.display());
        if name.ends_with(".sqlite3") {
            blobs += 1;
        } else if name.ends_with(".json") && name != "snapshot_metadata.json" {
            sidecars += 1;
        } else {
            others.push(name);
        }
    }
    // 3 kept + 1 pre_restore safety snapshot.
    ensure!(blobs == 4, "{blobs} blobs in the store");
    ensure!(sidecars == 4, "{sidecars} sidecars in the store");
    others.sort();
    ensure!(
        others == [".lock", "snapshot_metadata.json"],
        "other files in the store: {others:?}"
    );
    let m = mode(&layout.copy)?;
    ensure!(
        m == 0o600,
        "restore_to wrote {} as {m:04o}",
        layout.copy.display()
    );
    Ok(())
}

#[test]
fn snapshot_files_are_0600_and_store_dirs_0700() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    workload(tmp.path())?;
    check_modes(tmp.path())
}

/// Entry point of the child of [`modes_hold_under_a_permissive_umask`]. Run normally (no
/// `SNAPSHOT_TEST_CHILD`), it checks that the umask can be read, as the child relies on.
#[test]
fn permissive_umask_child_entry_point() -> Result<()> {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        ensure!(current_umask()? <= 0o777);
        return Ok(());
    };
    let umask = current_umask()?;
    ensure!(
        umask == 0,
        "the child runs with umask {umask:04o}, expected 0000"
    );
    let root = PathBuf::from(root);
    // A control file written without an explicit mode: 0666 under this umask.
    fs::write(root.join("control"), b"umask control")?;
    workload(&root)
}

#[test]
fn modes_hold_under_a_permissive_umask() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("child.out");
    let err = tmp.path().join("child.err");
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 0000 && exec \"$0\" \"$@\"")
        .arg(std::env::current_exe()?)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .status()?;
    ensure!(
        status.success(),
        "child failed ({status})\nstdout:\n{}\nstderr:\n{}",
        fs::read_to_string(&out).unwrap_or_default(),
        fs::read_to_string(&err).unwrap_or_default()
    );
    let control = mode(&tmp.path().join("control"))?;
    ensure!(
        control == 0o666,
        "the control file is {control:04o}: the child's umask was not permissive"
    );
    check_modes(tmp.path())
}
