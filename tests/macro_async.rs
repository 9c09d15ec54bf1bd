//! `#[with_snapshot]` on `async fn`s: concurrent calls on a multi-thread runtime, the copy off
//! the executor, fail-closed, outcomes (committed, failed, panicked, cancelled).

use std::collections::HashSet;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use rusqlite::Connection;
use snapshot::{
    CheckLevel, Environment, Error, FileSource, ListFilter, LocalStore, MemoryStore, Outcome,
    RetentionPolicy, SnapshotManager, SnapshotRecord, Source, SqliteSource, Store, with_snapshot,
};

fn live_db(dir: &Path, ids: impl IntoIterator<Item = i64>) -> anyhow::Result<PathBuf> {
    let path = dir.join("app.db");
    let conn = Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE measure (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    )?;
    for id in ids {
        conn.execute("INSERT INTO measure VALUES (?1, 'm')", [id])?;
    }
    Ok(path)
}

fn manager_with(source: impl Source + 'static, store: impl Store + 'static) -> SnapshotManager {
    SnapshotManager::builder()
        .source(source)
        .store(store)
        .retention(RetentionPolicy::new().keep_last(1000))
        .environment(Environment::persistent())
        .build()
        .expect("a valid manager")
}

fn all(manager: &SnapshotManager) -> anyhow::Result<Vec<SnapshotRecord>> {
    Ok(manager.list(&ListFilter::new())?)
}

fn rows(conn: &Connection, id: i64) -> anyhow::Result<i64> {
    Ok(
        conn.query_row("SELECT count(*) FROM measure WHERE id = ?1", [id], |r| {
            r.get(0)
        })?,
    )
}

struct App {
    conn: Mutex<Connection>,
    snapshots: SnapshotManager,
    bodies: AtomicUsize,
}

impl App {
    fn open(db: &Path, snapshots: SnapshotManager) -> anyhow::Result<Self> {
        Ok(App {
            conn: Mutex::new(Connection::open(db)?),
            snapshots,
            bodies: AtomicUsize::new(0),
        })
    }

    fn rows(&self, id: i64) -> anyhow::Result<i64> {
        let conn = self.conn.lock().map_err(|_| anyhow!("poisoned"))?;
        rows(&conn, id)
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    async fn delete(&self, id: i64) -> anyhow::Result<usize> {
        self.bodies.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = {
            let conn = self.conn.lock().map_err(|_| anyhow!("poisoned"))?;
            conn.execute("DELETE FROM measure WHERE id = ?1", [id])?
        };
        anyhow::ensure!(n == 1, "no measure {id}");
        Ok(n)
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    async fn delete_then_panic(&self, measure_id: i64) -> anyhow::Result<()> {
        tokio::task::yield_now().await;
        panic!("panicked while deleting {measure_id}");
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    async fn delete_slowly(&self, id: i64) -> anyhow::Result<()> {
        self.bodies.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
        Ok(())
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots, on_error = "continue")]
    async fn delete_anyway(&self, id: i64) -> Result<usize, String> {
        self.bodies.fetch_add(1, Ordering::SeqCst);
        let conn = self.conn.lock().map_err(|e| e.to_string())?;
        conn.execute("DELETE FROM measure WHERE id = ?1", [id])
            .map_err(|e| e.to_string())
    }

    #[with_snapshot("archive", "measure", manager = self.snapshots.clone())]
    async fn into_archive(self, id: impl Display + Send) -> Result<Vec<String>, Error> {
        tokio::task::yield_now().await;
        Ok(vec![format!("archived {id}")])
    }

    #[with_snapshot("close", "measure", manager = self.snapshots)]
    async fn close(self) -> Result<Connection, Error> {
        tokio::task::yield_now().await;
        Ok(self.conn.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

#[with_snapshot("delete", "grant", manager = m)]
async fn free_generic<T>(m: &SnapshotManager, grant_id: T) -> anyhow::Result<impl Display + use<T>>
where
    T: Display + Send + Sync,
{
    tokio::task::yield_now().await;
    Ok(format!("grant {grant_id}"))
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_each_get_their_own_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path(), 1..=16)?;
    let snapshots = manager_with(
        SqliteSource::new(&db),
        LocalStore::open(dir.path().join("backups"))?,
    );
    let app = Arc::new(App::open(&db, snapshots.clone())?);

    let calls: Vec<_> = (1..=16)
        .map(|id| {
            let app = app.clone();
            tokio::spawn(async move { app.delete(id).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await??, 1);
    }

    let records = all(&snapshots)?;
    assert_eq!(records.len(), 16);
    let ids: HashSet<_> = records.iter().map(|r| r.snapshot_id.clone()).collect();
    assert_eq!(ids.len(), 16, "every snapshot has its own id");
    for record in &records {
        assert_eq!(record.outcome, Outcome::Committed, "{record:?}");
        let id: i64 = record.entity_id.as_deref().context("an id")?.parse()?;
        assert_eq!(app.rows(id)?, 0);
        // Each snapshot was taken before its own call deleted its row.
        let image = dir.path().join(format!("{}.db", record.snapshot_id));
        snapshots.restore_to(&record.snapshot_id, &image)?;
        assert_eq!(rows(&Connection::open(&image)?, id)?, 1, "{record:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_panics_and_cancellations_are_recorded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path(), [1, 2])?;
    let snapshots = manager_with(SqliteSource::new(&db), MemoryStore::new());
    let app = Arc::new(App::open(&db, snapshots.clone())?);
    let outcome_of = |entity_id: &str| -> anyhow::Result<Outcome> {
        let found = snapshots.list(&ListFilter::new().entity_id(entity_id))?;
        anyhow::ensure!(found.len() == 1, "one snapshot for {entity_id}: {found:?}");
        Ok(found[0].outcome)
    };

    let err = app.delete(99).await.expect_err("no measure 99");
    assert_eq!(err.to_string(), "no measure 99");
    assert_eq!(outcome_of("99")?, Outcome::Failed);

    let task = {
        let app = app.clone();
        tokio::spawn(async move { app.delete_then_panic(2).await })
    };
    let join = task.await.expect_err("the panic propagates to the task");
    assert!(join.is_panic());
    assert_eq!(outcome_of("2")?, Outcome::Failed);

    let cancelled = tokio::time::timeout(Duration::from_millis(50), app.delete_slowly(1)).await;
    assert!(cancelled.is_err(), "the call timed out");
    assert_eq!(app.bodies.load(Ordering::SeqCst), 2, "both bodies started");
    assert_eq!(
        outcome_of("1")?,
        Outcome::Pending,
        "a cancelled call neither committed nor failed"
    );
    assert_eq!(app.rows(1)?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_the_body_is_never_polled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path(), [1, 2])?;
    let broken = manager_with(
        SqliteSource::new(dir.path().join("missing.db")),
        MemoryStore::new(),
    );
    let app = Arc::new(App::open(&db, broken.clone())?);

    let err = assert_send(app.delete(1))
        .await
        .expect_err("the snapshot fails");
    assert!(
        matches!(
            err.downcast_ref::<Error>(),
            Some(Error::SourceMissing { .. })
        ),
        "{err:?}"
    );
    assert_eq!(app.bodies.load(Ordering::SeqCst), 0, "the body did not run");
    assert_eq!(app.rows(1)?, 1, "the data is intact");

    // on_error = "continue": the body runs without a snapshot.
    assert_eq!(app.delete_anyway(2).await, Ok(1));
    assert_eq!(app.bodies.load(Ordering::SeqCst), 1);
    assert_eq!(app.rows(2)?, 0);
    assert!(all(&broken)?.is_empty());
    Ok(())
}

#[tokio::test]
async fn by_value_self_generics_and_impl_trait_on_a_current_thread_runtime() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path(), [1])?;
    let snapshots = manager_with(SqliteSource::new(&db), MemoryStore::new());

    let shown = assert_send(free_generic(&snapshots, 7u32)).await?;
    assert_eq!(shown.to_string(), "grant 7");
    let app = App::open(&db, snapshots.clone())?;
    assert_eq!(app.into_archive(1).await?, ["archived 1"]);
    let conn = App::open(&db, snapshots.clone())?.close().await?;
    assert_eq!(rows(&conn, 1)?, 1);

    let records = all(&snapshots)?;
    let seen: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.operation_type.as_str(),
                r.entity_type.as_deref(),
                r.entity_id.as_deref(),
                r.outcome,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("close", Some("measure"), None, Outcome::Committed),
            ("archive", Some("measure"), Some("1"), Outcome::Committed),
            ("delete", Some("grant"), Some("7"), Outcome::Committed),
        ]
    );
    Ok(())
}

/// A file source whose capture waits for a signal and notes the thread it ran on.
#[derive(Debug)]
struct Gated {
    file: FileSource,
    signal: Mutex<Option<mpsc::Receiver<()>>>,
    ran_on: Mutex<Option<ThreadId>>,
}

impl Source for Gated {
    fn kind(&self) -> &'static str {
        self.file.kind()
    }
    fn path(&self) -> &Path {
        self.file.path()
    }
    fn extension(&self) -> &str {
        self.file.extension()
    }
    fn capture(&self, dest: &Path) -> snapshot::Result<()> {
        *self.ran_on.lock().expect("not poisoned") = Some(std::thread::current().id());
        if let Some(signal) = self.signal.lock().expect("not poisoned").take() {
            signal
                .recv_timeout(Duration::from_secs(10))
                .map_err(|e| Error::InvalidInput {
                    field: "gate",
                    reason: format!("no signal: the executor was blocked ({e})"),
                })?;
        }
        self.file.capture(dest)
    }
    fn check_image(&self, image: &Path, level: CheckLevel) -> snapshot::Result<()> {
        self.file.check_image(image, level)
    }
    fn prepare_replace(&self) -> snapshot::Result<()> {
        self.file.prepare_replace()
    }
}

#[with_snapshot("delete", "file", manager = m)]
async fn gated_delete(m: &SnapshotManager, id: u32) -> snapshot::Result<u32> {
    Ok(id)
}

#[test]
fn the_copy_runs_off_the_executor() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("data.bin");
    std::fs::write(&file, b"live data")?;
    let (open, signal) = mpsc::channel();
    let gated = Arc::new(Gated {
        file: FileSource::new(&file),
        signal: Mutex::new(Some(signal)),
        ran_on: Mutex::new(None),
    });
    let manager = SnapshotManager::builder()
        .source(gated.clone())
        .store(MemoryStore::new())
        .environment(Environment::persistent())
        .build()?;

    // One executor thread: if the copy ran on it, the task that opens the gate could never
    // run, and the capture would time out.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let executor = std::thread::current().id();
    let id = runtime.block_on(async {
        let opener = tokio::spawn(async move { open.send(()) });
        let id = gated_delete(&manager, 5).await?;
        opener.await??;
        anyhow::Ok(id)
    })?;
    assert_eq!(id, 5);
    let ran_on = gated.ran_on.lock().map_err(|_| anyhow!("poisoned"))?;
    assert!(
        ran_on.is_some_and(|t| t != executor),
        "{ran_on:?} vs {executor:?}"
    );
    assert_eq!(all(&manager)?[0].outcome, Outcome::Committed);
    Ok(())
}

/// Polls a future to completion on this thread, without any runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

#[test]
fn outside_a_tokio_runtime_the_copy_runs_inline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("data.bin");
    std::fs::write(&file, b"live data")?;
    let gated = Arc::new(Gated {
        file: FileSource::new(&file),
        signal: Mutex::new(None),
        ran_on: Mutex::new(None),
    });
    let manager = SnapshotManager::builder()
        .source(gated.clone())
        .store(MemoryStore::new())
        .environment(Environment::persistent())
        .build()?;
    assert_eq!(block_on(gated_delete(&manager, 8))?, 8);
    let ran_on = *gated.ran_on.lock().map_err(|_| anyhow!("poisoned"))?;
    assert_eq!(ran_on, Some(std::thread::current().id()));
    assert_eq!(all(&manager)?[0].entity_id.as_deref(), Some("8"));
    Ok(())
}
