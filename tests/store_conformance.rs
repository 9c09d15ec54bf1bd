//! The store conformance suite: one set of behaviours every [`Store`] must show, run against
//! each implementation through a factory (`conformance!(name, factory)`), plus the failure modes
//! only a store on a real file system has (invalid keys, crash leftovers, a read-only directory,
//! a full disk) — the last two on real file systems (a tmpfs mounted read-only or 1 MiB small)
//! and through a fault-injecting store decorator, as far as the manager.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use snapshot::catalog::INDEX_KEY;
use snapshot::store::{STAGING_PREFIX, TRASH_PREFIX};
use snapshot::{
    Environment, Error, ListFilter, LocalStore, MemoryStore, ObjectMeta, PutMode, SnapshotManager,
    SnapshotRequest, SqliteSource, Store, StoreLock,
};

/// A store under test and whatever keeps its backing alive.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn local_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path().join("store")).expect("open local store");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

fn memory_fixture() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    }
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// Writes `data` to a fresh staging file in the store's staging directory, as the manager does
/// before `put_file`.
fn staged(store: &dyn Store, data: &[u8]) -> Result<PathBuf> {
    let dir = store.staging_dir()?;
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let p = dir.join(format!(
        "{STAGING_PREFIX}conformance-{}-{n}",
        std::process::id()
    ));
    fs::write(&p, data).with_context(|| format!("write {}", p.display()))?;
    Ok(p)
}

fn keys(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().map(|o| o.key.as_str()).collect()
}

/// The generic suite: each function takes the factory and fails on any deviation.
mod suite {
    use super::*;

    pub fn put_bytes_create_refuses_overwrite(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        s.put_bytes("a.json", b"original", PutMode::Create)?;
        match s.put_bytes("a.json", b"intruder", PutMode::Create) {
            Err(Error::AlreadyExists { key }) => ensure!(key == "a.json", "key {key}"),
            other => bail!("second Create put_bytes: expected AlreadyExists, got {other:?}"),
        }
        ensure!(
            s.get_bytes("a.json")? == b"original",
            "original was changed"
        );
        ensure!(s.head("a.json")?.map(|m| m.size) == Some(8));
        ensure!(keys(&s.list()?) == ["a.json"]);
        Ok(())
    }

    pub fn put_file_create_refuses_overwrite(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        let first = staged(s, b"original blob")?;
        s.put_file("b.sqlite3", &first, PutMode::Create)?;
        ensure!(!first.exists(), "a published file must be moved away");
        let second = staged(s, b"intruding blob")?;
        match s.put_file("b.sqlite3", &second, PutMode::Create) {
            Err(Error::AlreadyExists { .. }) => {}
            other => bail!("second Create put_file: expected AlreadyExists, got {other:?}"),
        }
        ensure!(
            s.get_bytes("b.sqlite3")? == b"original blob",
            "original was changed"
        );
        // On error the file is left for the caller (the manager's staging guard) to remove.
        ensure!(
            second.exists(),
            "the refused file must be left to the caller"
        );
        fs::remove_file(&second)?;
        // A file from anywhere else is copied in, then removed.
        let elsewhere = tempfile::tempdir()?;
        let outside = elsewhere.path().join("outside.bin");
        fs::write(&outside, b"from elsewhere")?;
        s.put_file("c.sqlite3", &outside, PutMode::Create)?;
        ensure!(s.get_bytes("c.sqlite3")? == b"from elsewhere");
        ensure!(!outside.exists(), "a published file must be moved away");
        ensure!(keys(&s.list()?) == ["b.sqlite3", "c.sqlite3"]);
        Ok(())
    }

    pub fn overwrite_replaces_atomically(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        // Overwrite creates an absent key and replaces a present one.
        s.put_bytes("i.json", b"one", PutMode::Overwrite)?;
        s.put_bytes("i.json", b"two!", PutMode::Overwrite)?;
        ensure!(s.get_bytes("i.json")? == b"two!");
        let p = staged(s, b"three")?;
        s.put_file("i.json", &p, PutMode::Overwrite)?;
        ensure!(s.get_bytes("i.json")? == b"three");
        ensure!(!p.exists());

        // A reader never sees a torn object: every read is one whole version.
        const LEN: usize = 256 * 1024;
        s.put_bytes("big", &vec![b'a'; LEN], PutMode::Create)?;
        let done = AtomicBool::new(false);
        let reads = std::thread::scope(|scope| -> Result<usize> {
            let reader = scope.spawn(|| -> Result<usize> {
                let mut n = 0;
                while !done.load(Ordering::Acquire) || n == 0 {
                    let b = s.get_bytes("big")?;
                    ensure!(b.len() == LEN, "torn read: {} bytes", b.len());
                    let first = b[0];
                    ensure!(b.iter().all(|&x| x == first), "a read mixed two versions");
                    n += 1;
                }
                Ok(n)
            });
            let written = (|| -> Result<()> {
                for i in 0..24u8 {
                    let data = vec![b'b' + i; LEN];
                    if i % 3 == 0 {
                        let p = staged(s, &data)?;
                        s.put_file("big", &p, PutMode::Overwrite)?;
                    } else {
                        s.put_bytes("big", &data, PutMode::Overwrite)?;
                    }
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            let reads = reader.join().expect("reader panicked")?;
            written?;
            Ok(reads)
        })?;
        ensure!(reads > 0);
        ensure!(s.get_bytes("big")? == vec![b'b' + 23; LEN]);
        Ok(())
    }

    pub fn missing_key_is_blob_missing(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        match s.get_bytes("nope.sqlite3") {
            Err(Error::BlobMissing { key }) => ensure!(key == "nope.sqlite3"),
            other => bail!("get_bytes of a missing key: {other:?}"),
        }
        let out = tempfile::tempdir()?;
        let dest = out.path().join("dest");
        match s.get_to_file("nope.sqlite3", &dest) {
            Err(Error::BlobMissing { key }) => ensure!(key == "nope.sqlite3"),
            other => bail!("get_to_file of a missing key: {other:?}"),
        }
        ensure!(
            !dest.exists(),
            "a failed get_to_file left {}",
            dest.display()
        );
        ensure!(s.head("nope.sqlite3")?.is_none());
        // And a present key reads back whole into a new file.
        s.put_bytes("yes.sqlite3", b"content", PutMode::Create)?;
        s.get_to_file("yes.sqlite3", &dest)?;
        ensure!(fs::read(&dest)? == b"content");
        Ok(())
    }

    pub fn head_list_delete(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        ensure!(s.list()?.is_empty(), "a new store lists {:?}", s.list()?);
        for (k, v) in [("c.json", &b"ccc"[..]), ("a.json", b"a"), ("b.json", b"bb")] {
            s.put_bytes(k, v, PutMode::Create)?;
        }
        // Neither the lock nor a staging leftover is an object.
        let _lock = s.lock()?;
        let leftover = staged(s, b"half a snapshot")?;
        let listed = s.list()?;
        ensure!(
            keys(&listed) == ["a.json", "b.json", "c.json"],
            "list: {:?}",
            keys(&listed)
        );
        ensure!(listed.iter().map(|o| o.size).collect::<Vec<_>>() == [1, 2, 3]);
        let h = s.head("c.json")?.context("head of a present key")?;
        ensure!(h.key == "c.json" && h.size == 3);
        if let Some(t) = h.modified {
            let age = chrono::Utc::now() - t;
            ensure!(age.num_seconds().abs() < 600, "modified time {t} is off");
        }
        s.delete("b.json")?;
        ensure!(s.head("b.json")?.is_none());
        ensure!(keys(&s.list()?) == ["a.json", "c.json"]);
        s.delete("b.json")?; // already gone
        s.delete("never-was.json")?;
        ensure!(matches!(
            s.get_bytes("b.json"),
            Err(Error::BlobMissing { .. })
        ));
        fs::remove_file(leftover)?;
        Ok(())
    }

    pub fn lock_is_exclusive_across_threads(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        // A second locker waits until the first drops its lock.
        let first = s.lock()?;
        let released = AtomicBool::new(false);
        let (saw_release, waited) = std::thread::scope(|scope| -> Result<(bool, Duration)> {
            let second = scope.spawn(|| -> Result<(bool, Duration)> {
                let t0 = Instant::now();
                let _l: StoreLock = s.lock()?;
                Ok((released.load(Ordering::SeqCst), t0.elapsed()))
            });
            std::thread::sleep(Duration::from_millis(300));
            released.store(true, Ordering::SeqCst);
            drop(first);
            second.join().expect("second locker panicked")
        })?;
        ensure!(
            saw_release,
            "the second locker got the lock while the first held it"
        );
        ensure!(
            waited >= Duration::from_millis(250),
            "waited only {waited:?}"
        );

        // Many lockers: never two inside at once, and none is starved.
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let entered = AtomicUsize::new(0);
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        for _ in 0..5 {
                            let _l = s.lock()?;
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            inside.fetch_sub(1, Ordering::SeqCst);
                            entered.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("locker panicked")?;
            }
            Ok(())
        })?;
        ensure!(
            most.load(Ordering::SeqCst) == 1,
            "two threads held the lock"
        );
        ensure!(entered.load(Ordering::SeqCst) == 20);
        Ok(())
    }

    pub fn racing_creates_have_one_winner(f: &dyn Fn() -> Fixture) -> Result<()> {
        const THREADS: usize = 8;
        let fx = f();
        let s = &*fx.store;
        for round in 0..6 {
            let key = format!("race-{round}.json");
            let use_file = round % 2 == 1;
            let barrier = Barrier::new(THREADS);
            let results: Vec<(Vec<u8>, snapshot::Result<()>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|i| {
                        let (key, barrier) = (&key, &barrier);
                        scope.spawn(move || {
                            let data = format!("writer {i} ").repeat(2000).into_bytes();
                            let file = use_file.then(|| staged(s, &data).expect("stage"));
                            barrier.wait();
                            let r = match &file {
                                Some(p) => s.put_file(key, p, PutMode::Create),
                                None => s.put_bytes(key, &data, PutMode::Create),
                            };
                            if let Some(p) = file
                                && r.is_err()
                            {
                                let _ = fs::remove_file(p);
                            }
                            (data, r)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("writer panicked"))
                    .collect()
            });
            let winners: Vec<&Vec<u8>> = results
                .iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(d, _)| d)
                .collect();
            ensure!(
                winners.len() == 1,
                "round {round}: {} winners",
                winners.len()
            );
            for (_, r) in &results {
                ensure!(
                    matches!(r, Ok(()) | Err(Error::AlreadyExists { .. })),
                    "round {round}: a loser failed with {r:?}"
                );
            }
            ensure!(
                &s.get_bytes(&key)? == winners[0],
                "round {round}: the object is not the winner's"
            );
        }
        let listed = s.list()?;
        ensure!(listed.len() == 6, "list: {:?}", keys(&listed));
        Ok(())
    }

    /// `put_snapshot` publishes the image and its record together, refusing either existing
    /// key and then publishing neither; `delete_many` removes several keys, absent ones too.
    pub fn put_snapshot_is_all_or_nothing(f: &dyn Fn() -> Fixture) -> Result<()> {
        let fx = f();
        let s = &*fx.store;
        let img = staged(s, b"image one")?;
        s.put_snapshot("s1.sqlite3", &img, "s1.json", b"{\"r\":1}")?;
        ensure!(s.get_bytes("s1.sqlite3")? == b"image one");
        ensure!(s.get_bytes("s1.json")? == b"{\"r\":1}");
        ensure!(!img.exists(), "the published image must be moved away");

        // The blob's name is taken: nothing new is published, the image stays for the caller.
        let img = staged(s, b"image two")?;
        match s.put_snapshot("s1.sqlite3", &img, "s2.json", b"two") {
            Err(Error::AlreadyExists { key }) => ensure!(key == "s1.sqlite3", "key {key}"),
            other => bail!("expected AlreadyExists for the blob, got {other:?}"),
        }
        ensure!(
            s.head("s2.json")?.is_none(),
            "a refused snapshot left its record"
        );
        ensure!(img.exists(), "the refused image must be left to the caller");
        // The record's name is taken (a crash leftover): the blob is not published either.
        s.put_bytes("s3.json", b"leftover", PutMode::Create)?;
        match s.put_snapshot("s3.sqlite3", &img, "s3.json", b"three") {
            Err(Error::AlreadyExists { key }) => ensure!(key == "s3.json", "key {key}"),
            other => bail!("expected AlreadyExists for the record, got {other:?}"),
        }
        ensure!(
            s.head("s3.sqlite3")?.is_none(),
            "a refused snapshot left its blob"
        );
        ensure!(s.get_bytes("s3.json")? == b"leftover");
        ensure!(
            s.get_bytes("s1.sqlite3")? == b"image one",
            "the winner is untouched"
        );
        // An image prepared outside the staging directory is copied in.
        let elsewhere = tempfile::tempdir()?;
        let outside = elsewhere.path().join("outside.bin");
        fs::write(&outside, b"from elsewhere")?;
        s.put_snapshot("s4.sqlite3", &outside, "s4.json", b"four")?;
        ensure!(s.get_bytes("s4.sqlite3")? == b"from elsewhere");
        fs::remove_file(&img)?;

        s.delete_many(&["s1.sqlite3".into(), "s1.json".into(), "never-there".into()])?;
        ensure!(
            keys(&s.list()?) == ["s3.json", "s4.json", "s4.sqlite3"],
            "after delete_many: {:?}",
            keys(&s.list()?)
        );
        Ok(())
    }
}

macro_rules! conformance {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn put_bytes_create_refuses_overwrite() -> Result<()> {
                suite::put_bytes_create_refuses_overwrite(&$factory)
            }
            #[test]
            fn put_file_create_refuses_overwrite() -> Result<()> {
                suite::put_file_create_refuses_overwrite(&$factory)
            }
            #[test]
            fn overwrite_replaces_atomically() -> Result<()> {
                suite::overwrite_replaces_atomically(&$factory)
            }
            #[test]
            fn missing_key_is_blob_missing() -> Result<()> {
                suite::missing_key_is_blob_missing(&$factory)
            }
            #[test]
            fn head_list_delete() -> Result<()> {
                suite::head_list_delete(&$factory)
            }
            #[test]
            fn lock_is_exclusive_across_threads() -> Result<()> {
                suite::lock_is_exclusive_across_threads(&$factory)
            }
            #[test]
            fn racing_creates_have_one_winner() -> Result<()> {
                suite::racing_creates_have_one_winner(&$factory)
            }
            #[test]
            fn put_snapshot_is_all_or_nothing() -> Result<()> {
                suite::put_snapshot_is_all_or_nothing(&$factory)
            }
        }
    };
}

conformance!(local_store, local_fixture);
conformance!(memory_store, memory_fixture);

// ---------------------------------------------------------------------------------------------
// LocalStore only: keys become file names, and the file system can refuse.

#[test]
fn local_invalid_keys_are_invalid_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("store"))?;
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
            store.get_to_file(key, &dir.path().join("dest")),
            "get_to_file",
        )?;
        is_invalid(store.head(key).map(drop), "head")?;
        is_invalid(store.delete(key), "delete")?;
        ensure!(store.local_path(key).is_none(), "local_path({key:?})");
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
    store.put_bytes("z.json", b"z", PutMode::Create)?;
    store.put_bytes("a.sqlite3", b"a", PutMode::Create)?;
    fs::write(store.dir().join(".hidden"), b"h")?;
    fs::write(store.dir().join(format!("{STAGING_PREFIX}123-x")), b"s")?;
    fs::create_dir(store.dir().join("subdir"))?;
    let _lock = store.lock()?;
    ensure!(keys(&store.list()?) == ["a.sqlite3", "z.json"]);
    Ok(())
}

#[test]
fn local_objects_are_owner_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("nested/store"))?;
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

impl Store for QuotaStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn object_location(&self, key: &str) -> String {
        self.inner.object_location(key)
    }
    fn staging_dir(&self) -> snapshot::Result<PathBuf> {
        self.inner.staging_dir()
    }
    fn put_file(&self, key: &str, file: &Path, mode: PutMode) -> snapshot::Result<()> {
        let len = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        self.check(key, len)?;
        self.inner.put_file(key, file, mode)
    }
    fn put_bytes(&self, key: &str, data: &[u8], mode: PutMode) -> snapshot::Result<()> {
        self.check(key, data.len() as u64)?;
        self.inner.put_bytes(key, data, mode)
    }
    fn get_bytes(&self, key: &str) -> snapshot::Result<Vec<u8>> {
        self.inner.get_bytes(key)
    }
    fn get_to_file(&self, key: &str, dest: &Path) -> snapshot::Result<()> {
        self.inner.get_to_file(key, dest)
    }
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_path(key)
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
    fn lock(&self) -> snapshot::Result<StoreLock> {
        self.inner.lock()
    }
    fn is_host_local(&self) -> bool {
        true
    }
    fn local_dir(&self) -> Option<&Path> {
        self.inner.local_dir()
    }
    fn leftovers(&self, min_age: Duration) -> snapshot::Result<Vec<PathBuf>> {
        self.inner.leftovers(min_age)
    }
}

/// The decorator itself behaves as a store (so its faults are the only difference).
#[test]
fn quota_store_passes_the_conformance_suite() -> Result<()> {
    let f = || {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("store")).expect("open");
        Fixture {
            store: Arc::new(QuotaStore::new(store, 1 << 30)),
            _dir: Some(dir),
        }
    };
    suite::put_bytes_create_refuses_overwrite(&f)?;
    suite::put_file_create_refuses_overwrite(&f)?;
    suite::missing_key_is_blob_missing(&f)?;
    suite::head_list_delete(&f)?;
    Ok(())
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
    for fx in [local_fixture(), memory_fixture()] {
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
