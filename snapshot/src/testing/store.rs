//! The store conformance suite: the behaviours every [`Store`] (and every decorator of one)
//! must show. Run it with [`store_conformance!`](crate::store_conformance) on a factory of
//! fresh, empty stores, or call the checks one by one.

use std::any::Any;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use crate::error::Error;
use crate::store::{IntoStore, ObjectMeta, Payload, PutMode, STAGING_PREFIX, Store, StoreExt};
use crate::testing::{Check, Failure, check, fail};

/// A store under test and whatever keeps its backing alive (a temporary directory, …).
pub struct StoreFixture {
    /// The store, fresh and empty.
    pub store: Arc<dyn Store>,
    _keep: Option<Box<dyn Any + Send + Sync>>,
    scratch: PathBuf,
}

impl StoreFixture {
    /// A fixture of `store`, which must be empty.
    pub fn new(store: impl IntoStore) -> Self {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let scratch =
            std::env::temp_dir().join(format!("snapshot-conformance-{}-{n}", std::process::id()));
        StoreFixture {
            store: store.into_store(),
            _keep: None,
            scratch,
        }
    }

    /// Keeps `value` alive as long as the fixture (the store's temporary directory).
    pub fn keeping(mut self, value: impl Any + Send + Sync) -> Self {
        self._keep = Some(Box::new(value));
        self
    }

    /// A directory of the fixture's own, outside the store, for files "from elsewhere".
    fn scratch(&self) -> Result<&Path, Failure> {
        crate::fs_util::create_private_dir(&self.scratch)?;
        Ok(&self.scratch)
    }
}

impl Drop for StoreFixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

impl std::fmt::Debug for StoreFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFixture")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// Writes `data` to a fresh staging file where the manager prepares images for this store:
/// its own directory when it has one (publishing is then a rename), else the scratch directory.
fn staged(fx: &StoreFixture, data: &[u8]) -> Result<PathBuf, Failure> {
    let dir = match fx.store.local() {
        Some(l) => {
            l.prepare()?; // as the manager does before staging
            l.dir().to_path_buf()
        }
        None => fx.scratch()?.to_path_buf(),
    };
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let p = dir.join(format!(
        "{STAGING_PREFIX}conformance-{}-{n}",
        std::process::id()
    ));
    fs::write(&p, data)?;
    Ok(p)
}

fn keys(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().map(|o| o.key.as_str()).collect()
}

/// `Create` refuses an existing key and leaves the object as it was.
///
/// # Errors
/// The deviation found.
pub fn put_bytes_create_refuses_overwrite(f: &dyn Fn() -> StoreFixture) -> Check {
    let fx = f();
    let s = &*fx.store;
    s.put_bytes("a.json", b"original", PutMode::Create)?;
    match s.put_bytes("a.json", b"intruder", PutMode::Create) {
        Err(Error::AlreadyExists { key }) => check!(key == "a.json", "key {key}"),
        other => fail!("second Create put_bytes: expected AlreadyExists, got {other:?}"),
    }
    check!(
        s.get_bytes("a.json")? == b"original",
        "original was changed"
    );
    check!(s.head("a.json")?.map(|m| m.size) == Some(8));
    check!(keys(&s.list()?) == ["a.json"]);
    Ok(())
}

/// A published file is taken over (moved, or uploaded and removed); a refused one is left to
/// the caller; a file from anywhere else is copied in.
///
/// # Errors
/// The deviation found.
pub fn put_file_create_refuses_overwrite(f: &dyn Fn() -> StoreFixture) -> Check {
    let fx = f();
    let s = &*fx.store;
    let first = staged(&fx, b"original blob")?;
    s.put_file("b.sqlite3", &first, PutMode::Create)?;
    check!(!first.exists(), "a published file must be moved away");
    let second = staged(&fx, b"intruding blob")?;
    match s.put_file("b.sqlite3", &second, PutMode::Create) {
        Err(Error::AlreadyExists { .. }) => {}
        other => fail!("second Create put_file: expected AlreadyExists, got {other:?}"),
    }
    check!(
        s.get_bytes("b.sqlite3")? == b"original blob",
        "original was changed"
    );
    // On error the file is left for the caller (the manager's staging guard) to remove.
    check!(
        second.exists(),
        "the refused file must be left to the caller"
    );
    fs::remove_file(&second)?;
    let outside = fx.scratch()?.join("outside.bin");
    fs::write(&outside, b"from elsewhere")?;
    s.put_file("c.sqlite3", &outside, PutMode::Create)?;
    check!(s.get_bytes("c.sqlite3")? == b"from elsewhere");
    check!(!outside.exists(), "a published file must be moved away");
    check!(keys(&s.list()?) == ["b.sqlite3", "c.sqlite3"]);
    Ok(())
}

/// `Overwrite` creates or replaces, and a reader never sees a torn object.
///
/// # Errors
/// The deviation found.
pub fn overwrite_replaces_atomically(f: &dyn Fn() -> StoreFixture) -> Check {
    const LEN: usize = 256 * 1024;
    let fx = f();
    let s = &*fx.store;
    s.put_bytes("i.json", b"one", PutMode::Overwrite)?;
    s.put_bytes("i.json", b"two!", PutMode::Overwrite)?;
    check!(s.get_bytes("i.json")? == b"two!");
    let p = staged(&fx, b"three")?;
    s.put_file("i.json", &p, PutMode::Overwrite)?;
    check!(s.get_bytes("i.json")? == b"three");
    check!(!p.exists());

    s.put_bytes("big", &vec![b'a'; LEN], PutMode::Create)?;
    let done = AtomicBool::new(false);
    let reads = std::thread::scope(|scope| -> Result<usize, Failure> {
        let reader = scope.spawn(|| -> Result<usize, Failure> {
            let mut n = 0;
            while !done.load(Ordering::Acquire) || n == 0 {
                let b = s.get_bytes("big")?;
                check!(b.len() == LEN, "torn read: {} bytes", b.len());
                let first = b[0];
                check!(b.iter().all(|&x| x == first), "a read mixed two versions");
                n += 1;
            }
            Ok(n)
        });
        let written = (|| -> Check {
            for i in 0..24u8 {
                let data = vec![b'b' + i; LEN];
                if i % 3 == 0 {
                    let p = staged(&fx, &data)?;
                    s.put_file("big", &p, PutMode::Overwrite)?;
                } else {
                    s.put_bytes("big", &data, PutMode::Overwrite)?;
                }
            }
            Ok(())
        })();
        done.store(true, Ordering::Release);
        let reads = reader
            .join()
            .map_err(|_| Failure("the reader panicked".into()))??;
        written?;
        Ok(reads)
    })?;
    check!(reads > 0);
    check!(s.get_bytes("big")? == vec![b'b' + 23; LEN]);
    Ok(())
}

/// `Update` is a compare-and-swap: it replaces the object only at the version `get` returned,
/// and refuses a changed or missing one with [`Error::Precondition`].
///
/// # Errors
/// The deviation found.
pub fn update_is_a_compare_and_swap(f: &dyn Fn() -> StoreFixture) -> Check {
    let fx = f();
    let s = &*fx.store;
    match s.put("u.json", Payload::Bytes(b"x"), PutMode::Update("v".into())) {
        Err(Error::Precondition { key }) => check!(key == "u.json", "key {key}"),
        other => fail!("Update of a missing key: expected Precondition, got {other:?}"),
    }
    check!(
        s.head("u.json")?.is_none(),
        "a refused Update created the key"
    );
    s.put_bytes("u.json", b"one", PutMode::Create)?;
    let first = s.get("u.json")?;
    check!(first.bytes == b"one");
    let v1 = first
        .meta
        .version
        .ok_or_else(|| Failure("get returned no version".into()))?;
    s.put(
        "u.json",
        Payload::Bytes(b"two"),
        PutMode::Update(v1.clone()),
    )?;
    check!(s.get_bytes("u.json")? == b"two");
    match s.put("u.json", Payload::Bytes(b"three"), PutMode::Update(v1)) {
        Err(Error::Precondition { .. }) => {}
        other => fail!("Update at a stale version: expected Precondition, got {other:?}"),
    }
    check!(
        s.get_bytes("u.json")? == b"two",
        "a stale Update replaced the object"
    );
    let v2 = s
        .get("u.json")?
        .meta
        .version
        .ok_or_else(|| Failure("get returned no version".into()))?;
    let p = staged(&fx, b"four")?;
    s.put("u.json", Payload::File(&p), PutMode::Update(v2))?;
    check!(s.get_bytes("u.json")? == b"four");
    check!(!p.exists(), "a published file must be moved away");
    Ok(())
}

/// Many threads incrementing one counter by read-modify-write with `Update` lose no increment.
///
/// # Errors
/// The deviation found.
pub fn concurrent_updates_lose_nothing(f: &dyn Fn() -> StoreFixture) -> Check {
    const THREADS: usize = 6;
    const EACH: usize = 15;
    let fx = f();
    let s = &*fx.store;
    s.put_bytes("counter", b"0", PutMode::Create)?;
    std::thread::scope(|scope| -> Check {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| -> Check {
                    for _ in 0..EACH {
                        loop {
                            let o = s.get("counter")?;
                            let n: usize = String::from_utf8_lossy(&o.bytes)
                                .parse()
                                .map_err(|_| Failure("the counter is not a number".into()))?;
                            let v = o
                                .meta
                                .version
                                .ok_or_else(|| Failure("get returned no version".into()))?;
                            let next = (n + 1).to_string();
                            match s.put(
                                "counter",
                                Payload::Bytes(next.as_bytes()),
                                PutMode::Update(v),
                            ) {
                                Ok(_) => break,
                                Err(Error::Precondition { .. }) => continue,
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| Failure("an updater panicked".into()))??;
        }
        Ok(())
    })?;
    let total = String::from_utf8_lossy(&s.get_bytes("counter")?).into_owned();
    check!(
        total == (THREADS * EACH).to_string(),
        "{THREADS}×{EACH} increments ended at {total}"
    );
    Ok(())
}

/// A missing key is [`Error::BlobMissing`] for `get` and `get_to_file` (which leaves nothing
/// behind), `None` for `head`.
///
/// # Errors
/// The deviation found.
pub fn missing_key_is_blob_missing(f: &dyn Fn() -> StoreFixture) -> Check {
    let fx = f();
    let s = &*fx.store;
    match s.get_bytes("nope.sqlite3") {
        Err(Error::BlobMissing { key }) => check!(key == "nope.sqlite3"),
        other => fail!("get of a missing key: {other:?}"),
    }
    let dest = fx.scratch()?.join("dest");
    match s.get_to_file("nope.sqlite3", &dest) {
        Err(Error::BlobMissing { key }) => check!(key == "nope.sqlite3"),
        other => fail!("get_to_file of a missing key: {other:?}"),
    }
    check!(
        !dest.exists(),
        "a failed get_to_file left {}",
        dest.display()
    );
    check!(s.head("nope.sqlite3")?.is_none());
    s.put_bytes("yes.sqlite3", b"content", PutMode::Create)?;
    let meta = s.get_to_file("yes.sqlite3", &dest)?;
    check!(fs::read(&dest)? == b"content");
    check!(meta.size == 7, "get_to_file said {} bytes", meta.size);
    Ok(())
}

/// `head`, `list` (sorted; staging leftovers are not objects) and `delete` (idempotent).
///
/// # Errors
/// The deviation found.
pub fn head_list_delete(f: &dyn Fn() -> StoreFixture) -> Check {
    let fx = f();
    let s = &*fx.store;
    check!(s.list()?.is_empty(), "a new store lists {:?}", s.list()?);
    for (k, v) in [("c.json", &b"ccc"[..]), ("a.json", b"a"), ("b.json", b"bb")] {
        s.put_bytes(k, v, PutMode::Create)?;
    }
    let leftover = staged(&fx, b"half a snapshot")?;
    let listed = s.list()?;
    check!(
        keys(&listed) == ["a.json", "b.json", "c.json"],
        "list: {:?}",
        keys(&listed)
    );
    check!(listed.iter().map(|o| o.size).collect::<Vec<_>>() == [1, 2, 3]);
    let h = s
        .head("c.json")?
        .ok_or_else(|| Failure("no head of a present key".into()))?;
    check!(h.key == "c.json" && h.size == 3);
    if let Some(t) = h.modified {
        let age = chrono::Utc::now() - t;
        check!(age.num_seconds().abs() < 600, "modified time {t} is off");
    }
    s.delete("b.json")?;
    check!(s.head("b.json")?.is_none());
    check!(keys(&s.list()?) == ["a.json", "c.json"]);
    s.delete("b.json")?;
    s.delete("never-was.json")?;
    check!(matches!(
        s.get_bytes("b.json"),
        Err(Error::BlobMissing { .. })
    ));
    fs::remove_file(leftover)?;
    Ok(())
}

/// Eight writers racing to `Create` one key: exactly one wins, the others get
/// [`Error::AlreadyExists`], and the object is the winner's.
///
/// # Errors
/// The deviation found.
pub fn racing_creates_have_one_winner(f: &dyn Fn() -> StoreFixture) -> Check {
    const THREADS: usize = 8;
    let fx = f();
    let s = &*fx.store;
    for round in 0..6 {
        let key = format!("race-{round}.json");
        let use_file = round % 2 == 1;
        let barrier = Barrier::new(THREADS);
        let results = std::thread::scope(|scope| -> Result<Vec<_>, Failure> {
            let handles: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (key, barrier, fx) = (&key, &barrier, &fx);
                    scope.spawn(move || -> Result<(Vec<u8>, crate::Result<()>), Failure> {
                        let data = format!("writer {i} ").repeat(2000).into_bytes();
                        let file = if use_file {
                            Some(staged(fx, &data)?)
                        } else {
                            None
                        };
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
                        Ok((data, r))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| Failure("a writer panicked".into()))?)
                .collect()
        })?;
        let winners: Vec<&Vec<u8>> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(d, _)| d)
            .collect();
        check!(
            winners.len() == 1,
            "round {round}: {} winners",
            winners.len()
        );
        for (_, r) in &results {
            check!(
                matches!(r, Ok(()) | Err(Error::AlreadyExists { .. })),
                "round {round}: a loser failed with {r:?}"
            );
        }
        check!(
            &s.get_bytes(&key)? == winners[0],
            "round {round}: the object is not the winner's"
        );
    }
    let listed = s.list()?;
    check!(listed.len() == 6, "list: {:?}", keys(&listed));
    Ok(())
}

/// `put_snapshot` publishes an image and its record together, refusing either existing key
/// and then publishing neither; `delete_many` removes several keys, absent ones too.
///
/// # Errors
/// The deviation found.
pub fn put_snapshot_is_all_or_nothing(f: &dyn Fn() -> StoreFixture) -> Check {
    let fx = f();
    let s = &*fx.store;
    let img = staged(&fx, b"image one")?;
    s.put_snapshot("s1.sqlite3", &img, "s1.json", b"{\"r\":1}")?;
    check!(s.get_bytes("s1.sqlite3")? == b"image one");
    check!(s.get_bytes("s1.json")? == b"{\"r\":1}");
    check!(!img.exists(), "the published image must be moved away");

    let img = staged(&fx, b"image two")?;
    match s.put_snapshot("s1.sqlite3", &img, "s2.json", b"two") {
        Err(Error::AlreadyExists { key }) => check!(key == "s1.sqlite3", "key {key}"),
        other => fail!("expected AlreadyExists for the blob, got {other:?}"),
    }
    check!(
        s.head("s2.json")?.is_none(),
        "a refused snapshot left its record"
    );
    check!(img.exists(), "the refused image must be left to the caller");
    s.put_bytes("s3.json", b"leftover", PutMode::Create)?;
    match s.put_snapshot("s3.sqlite3", &img, "s3.json", b"three") {
        Err(Error::AlreadyExists { key }) => check!(key == "s3.json", "key {key}"),
        other => fail!("expected AlreadyExists for the record, got {other:?}"),
    }
    check!(
        s.head("s3.sqlite3")?.is_none(),
        "a refused snapshot left its blob"
    );
    check!(s.get_bytes("s3.json")? == b"leftover");
    check!(
        s.get_bytes("s1.sqlite3")? == b"image one",
        "the winner is untouched"
    );
    let outside = fx.scratch()?.join("outside.bin");
    fs::write(&outside, b"from elsewhere")?;
    s.put_snapshot("s4.sqlite3", &outside, "s4.json", b"four")?;
    check!(s.get_bytes("s4.sqlite3")? == b"from elsewhere");
    fs::remove_file(&img)?;

    s.delete_many(&["s1.sqlite3".into(), "s1.json".into(), "never-there".into()])?;
    s.settle()?;
    check!(
        keys(&s.list()?) == ["s3.json", "s4.json", "s4.sqlite3"],
        "after delete_many: {:?}",
        keys(&s.list()?)
    );
    Ok(())
}

/// One check of the suite.
pub type StoreCheck = fn(&dyn Fn() -> StoreFixture) -> Check;

/// Every check of the suite, by name.
pub const SUITE: &[(&str, StoreCheck)] = &[
    (
        "put_bytes_create_refuses_overwrite",
        put_bytes_create_refuses_overwrite,
    ),
    (
        "put_file_create_refuses_overwrite",
        put_file_create_refuses_overwrite,
    ),
    (
        "overwrite_replaces_atomically",
        overwrite_replaces_atomically,
    ),
    ("update_is_a_compare_and_swap", update_is_a_compare_and_swap),
    (
        "concurrent_updates_lose_nothing",
        concurrent_updates_lose_nothing,
    ),
    ("missing_key_is_blob_missing", missing_key_is_blob_missing),
    ("head_list_delete", head_list_delete),
    (
        "racing_creates_have_one_winner",
        racing_creates_have_one_winner,
    ),
    (
        "put_snapshot_is_all_or_nothing",
        put_snapshot_is_all_or_nothing,
    ),
];

/// Runs every check of the suite on stores from `factory`, stopping at the first failure
/// (which names the check).
///
/// # Errors
/// The first deviation found.
pub fn run_all(factory: &dyn Fn() -> StoreFixture) -> Check {
    for (name, check) in SUITE {
        check(factory).map_err(|e| Failure(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// The store conformance suite as `#[test]` functions, one per check, on stores from
/// `$factory` (a `fn() -> StoreFixture`). Invoke it inside a module of its own per store.
#[macro_export]
macro_rules! store_conformance {
    ($factory:expr) => {
        $crate::store_conformance!(@tests $factory;
            put_bytes_create_refuses_overwrite,
            put_file_create_refuses_overwrite,
            overwrite_replaces_atomically,
            update_is_a_compare_and_swap,
            concurrent_updates_lose_nothing,
            missing_key_is_blob_missing,
            head_list_delete,
            racing_creates_have_one_winner,
            put_snapshot_is_all_or_nothing);
    };
    (@tests $factory:expr; $($check:ident),+) => {
        $(
            #[test]
            fn $check() -> ::std::result::Result<(), $crate::testing::Failure> {
                $crate::testing::store::$check(&$factory)
            }
        )+
    };
}

/// The local-directory stores' own check: an image staged in the directory is published by a
/// rename (the same inode), and keys that are not file-name-safe are refused.
///
/// # Errors
/// The deviation found.
pub fn local_publishing_is_a_rename(f: &dyn Fn() -> StoreFixture) -> Check {
    use std::os::unix::fs::MetadataExt;
    let fx = f();
    let s = &*fx.store;
    let Some(local) = s.local() else {
        return Ok(());
    };
    let img = staged(&fx, b"in place")?;
    let inode = fs::metadata(&img)?.ino();
    s.put_file("r.sqlite3", &img, PutMode::Create)?;
    let published = local.object_path("r.sqlite3")?;
    check!(
        fs::metadata(&published)?.ino() == inode,
        "publishing a staged file copied it instead of renaming it"
    );
    for key in ["", "../x", "a/b", ".hidden"] {
        check!(
            matches!(local.object_path(key), Err(Error::InvalidInput { .. })),
            "key {key:?} was accepted"
        );
    }
    Ok(())
}
