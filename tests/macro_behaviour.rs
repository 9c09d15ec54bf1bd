//! `#[with_snapshot]` on synchronous functions, against real SQLite files: what is recorded,
//! which manager is used, fail-closed, disabled managers, outcomes.

use std::cell::Cell;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use rusqlite::Connection;
use snapshot::StoreExt;
use snapshot::{
    Environment, Error, ListFilter, LocalStore, MemoryStore, Outcome, RetentionPolicy,
    SnapshotManager, SnapshotRecord, SqliteSource, Store, with_snapshot,
};

/// A live SQLite database with a `measure` table holding ids 1, 2 and 42.
fn live_db(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("app.db");
    let conn = Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE measure (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO measure VALUES (1, 'hedges'), (2, 'ponds'), (42, 'meadows');",
    )?;
    Ok(path)
}

fn manager_with(db: &Path, store: impl Store + 'static) -> anyhow::Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(store)
        .retention(RetentionPolicy::new().keep_last(1000))
        .environment(Environment::persistent())
        .build()?)
}

fn all(manager: &SnapshotManager) -> anyhow::Result<Vec<SnapshotRecord>> {
    Ok(manager.list(&ListFilter::new())?)
}

fn only(manager: &SnapshotManager) -> anyhow::Result<SnapshotRecord> {
    let mut records = all(manager)?;
    anyhow::ensure!(records.len() == 1, "expected one record, got {records:#?}");
    Ok(records.remove(0))
}

fn rows(conn: &Connection, id: i64) -> anyhow::Result<i64> {
    Ok(
        conn.query_row("SELECT count(*) FROM measure WHERE id = ?1", [id], |r| {
            r.get(0)
        })?,
    )
}

/// The snapshot's image, materialised beside the live file and opened.
fn open_snapshot(manager: &SnapshotManager, dir: &Path, id: &str) -> anyhow::Result<Connection> {
    let path = dir.join(format!("restored-{id}.db"));
    manager.restore_to(id, &path)?;
    Ok(Connection::open(&path)?)
}

/// The example app of seed 003, reduced to one table.
struct Measures {
    conn: Connection,
    snapshots: SnapshotManager,
    calls: Cell<usize>,
}

impl Measures {
    fn open(db: &Path, snapshots: SnapshotManager) -> anyhow::Result<Self> {
        Ok(Measures {
            conn: Connection::open(db)?,
            snapshots,
            calls: Cell::new(0),
        })
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete(&self, id: i64) -> anyhow::Result<usize> {
        self.calls.set(self.calls.get() + 1);
        let n = self
            .conn
            .execute("DELETE FROM measure WHERE id = ?1", [id])?;
        anyhow::ensure!(n == 1, "no measure {id}");
        Ok(n)
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete_then_panic(&self, id: i64) -> anyhow::Result<()> {
        self.conn
            .execute("DELETE FROM measure WHERE id = ?1", [id])?;
        panic!("the call panicked after deleting {id}");
    }

    #[with_snapshot("delete", "measure", manager = self.snapshots, on_error = "continue")]
    fn delete_anyway(&self, measure_id: i64) -> anyhow::Result<usize> {
        self.calls.set(self.calls.get() + 1);
        Ok(self
            .conn
            .execute("DELETE FROM measure WHERE id = ?1", [measure_id])?)
    }
}

#[test]
fn the_snapshot_holds_what_the_call_then_deleted_and_the_call_is_committed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let snapshots = manager_with(&db, LocalStore::open(dir.path().join("backups"))?)?;
    let app = Measures::open(&db, snapshots.clone())?;

    assert_eq!(app.delete(42)?, 1);

    assert_eq!(rows(&app.conn, 42)?, 0, "the call deleted the row");
    let record = only(&snapshots)?;
    assert_eq!(record.operation_type, "delete");
    assert_eq!(record.entity_type.as_deref(), Some("measure"));
    assert_eq!(record.entity_id.as_deref(), Some("42"));
    assert_eq!(record.description, "Before delete measure 42");
    assert_eq!(record.outcome, Outcome::Committed);
    assert!(
        record.snapshot_id.ends_with("_delete_measure_42"),
        "{record:?}"
    );
    let image = open_snapshot(&snapshots, dir.path(), &record.snapshot_id)?;
    assert_eq!(
        rows(&image, 42)?,
        1,
        "the snapshot was taken before the body ran"
    );
    Ok(())
}

#[test]
fn an_error_marks_the_call_failed_and_is_returned_unchanged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let snapshots = manager_with(&db, MemoryStore::new())?;
    let app = Measures::open(&db, snapshots.clone())?;

    let err = app.delete(7).expect_err("there is no measure 7");
    assert_eq!(err.to_string(), "no measure 7");
    assert!(
        err.downcast_ref::<Error>().is_none(),
        "not a snapshot error"
    );
    assert_eq!(app.calls.get(), 1);
    let record = only(&snapshots)?;
    assert_eq!(record.entity_id.as_deref(), Some("7"));
    assert_eq!(record.outcome, Outcome::Failed);
    Ok(())
}

#[test]
fn a_panic_marks_the_call_failed_and_propagates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let snapshots = manager_with(&db, MemoryStore::new())?;
    let app = Measures::open(&db, snapshots.clone())?;

    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| app.delete_then_panic(2)))
        .expect_err("the panic propagates");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(message, "the call panicked after deleting 2");
    let record = only(&snapshots)?;
    assert_eq!(record.outcome, Outcome::Failed);
    let image = open_snapshot(&snapshots, dir.path(), &record.snapshot_id)?;
    assert_eq!(rows(&image, 2)?, 1);
    Ok(())
}

#[test]
fn fail_closed_when_the_source_is_missing_the_body_does_not_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    // The manager points at a database that does not exist: every snapshot fails.
    let broken = manager_with(&dir.path().join("missing.db"), MemoryStore::new())?;
    let app = Measures::open(&db, broken.clone())?;

    let err = app
        .delete(42)
        .expect_err("the snapshot fails, so the call fails");
    assert!(
        matches!(
            err.downcast_ref::<Error>(),
            Some(Error::SourceMissing { .. })
        ),
        "{err:?}"
    );
    assert_eq!(app.calls.get(), 0, "the body did not run");
    assert_eq!(rows(&app.conn, 42)?, 1, "the data is intact");
    assert!(all(&broken)?.is_empty());
    Ok(())
}

#[test]
fn fail_closed_when_the_store_cannot_be_written_the_data_is_intact() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let store_dir = dir.path().join("backups");
    let snapshots = manager_with(&db, LocalStore::open(&store_dir)?)?;
    let app = Measures::open(&db, snapshots)?;
    // The store's path is taken by a file: nothing can be written there. (The directory
    // itself is only created on the store's first write.)
    if store_dir.exists() {
        std::fs::remove_dir_all(&store_dir)?;
    }
    std::fs::write(&store_dir, b"not a directory")?;

    let err = app.delete(42).expect_err("the snapshot fails");
    assert!(err.downcast_ref::<Error>().is_some(), "{err:?}");
    assert_eq!(app.calls.get(), 0, "the body did not run");
    assert_eq!(rows(&app.conn, 42)?, 1, "the data is intact");
    Ok(())
}

#[test]
fn on_error_continue_runs_the_body_without_a_snapshot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let broken = manager_with(&dir.path().join("missing.db"), MemoryStore::new())?;
    let app = Measures::open(&db, broken.clone())?;

    assert_eq!(app.delete_anyway(42)?, 1);
    assert_eq!(app.calls.get(), 1);
    assert_eq!(rows(&app.conn, 42)?, 0);
    assert!(all(&broken)?.is_empty());
    Ok(())
}

#[test]
fn a_disabled_manager_is_not_a_failure_the_body_runs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let store = LocalStore::open(dir.path().join("backups"))?;
    let disabled = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(store)
        .environment(Environment::ephemeral(
            "test: a redeploy would wipe the disk",
        ))
        .build()?;
    assert!(!disabled.is_enabled());
    let app = Measures::open(&db, disabled.clone())?;

    assert_eq!(app.delete(42)?, 1);
    assert_eq!(app.calls.get(), 1);
    assert_eq!(rows(&app.conn, 42)?, 0);
    assert!(all(&disabled)?.is_empty());
    Ok(())
}

// ---- the entity id ------------------------------------------------------------------------

#[with_snapshot("delete", "measure", manager = m)]
fn by_id(m: &SnapshotManager, id: i64) -> snapshot::Result<()> {
    Ok(())
}

#[with_snapshot("delete", "measure", manager = m)]
fn by_entity_id(m: &SnapshotManager, measure_id: &str) -> snapshot::Result<()> {
    Ok(())
}

#[with_snapshot("delete", "land parcel", manager = m)]
fn by_spaced_entity_id(m: &SnapshotManager, land_parcel_id: String) -> snapshot::Result<()> {
    Ok(())
}

struct Key {
    id: u64,
    name: &'static str,
}

#[with_snapshot("delete", "measure", manager = m, id = key.name)]
fn by_expression(m: &SnapshotManager, key: Key, id: i64) -> snapshot::Result<u64> {
    Ok(key.id + id as u64)
}

#[with_snapshot("delete", "measure", manager = m)]
fn by_pattern(m: &SnapshotManager, Key { id, .. }: Key) -> snapshot::Result<()> {
    Ok(())
}

#[with_snapshot("delete", "measure", manager = m)]
fn by_raw_ident(m: &SnapshotManager, r#id: char) -> snapshot::Result<()> {
    Ok(())
}

#[with_snapshot("purge", "measure", manager = m)]
fn without_id(m: &SnapshotManager, _older_than_days: u32) -> snapshot::Result<()> {
    Ok(())
}

#[test]
fn the_entity_id_comes_from_id_entity_id_or_the_expression() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let m = manager_with(&db, MemoryStore::new())?;
    let last = |m: &SnapshotManager| -> anyhow::Result<(Option<String>, Option<String>)> {
        let r = m
            .list(&ListFilter::new().limit(1))?
            .pop()
            .context("a record")?;
        Ok((r.entity_type, r.entity_id))
    };
    let some = |t: &str, id: &str| (Some(t.to_string()), Some(id.to_string()));

    by_id(&m, -5)?;
    assert_eq!(last(&m)?, some("measure", "-5"));
    by_entity_id(&m, "m-17")?;
    assert_eq!(last(&m)?, some("measure", "m-17"));
    by_spaced_entity_id(&m, "north field".into())?;
    assert_eq!(last(&m)?, some("land parcel", "north field"));
    let key = Key {
        id: 3,
        name: "meadow",
    };
    assert_eq!(by_expression(&m, key, 4)?, 7, "`id = …` wins over `id`");
    assert_eq!(last(&m)?, some("measure", "meadow"));
    by_pattern(
        &m,
        Key {
            id: 99,
            name: "pond",
        },
    )?;
    assert_eq!(last(&m)?, some("measure", "99"));
    by_raw_ident(&m, 'x')?;
    assert_eq!(last(&m)?, some("measure", "x"));
    without_id(&m, 30)?;
    assert_eq!(last(&m)?, (Some("measure".to_string()), None));
    let record = m.list(&ListFilter::new().limit(1))?.remove(0);
    assert_eq!(record.description, "Before purge measure");
    assert_eq!(all(&m)?.len(), 7);
    Ok(())
}

#[with_snapshot("delete", "measure", manager = m)]
fn hostile_id(m: &SnapshotManager, id: &str) -> snapshot::Result<()> {
    Ok(())
}

#[test]
fn a_hostile_id_is_recorded_as_given_and_named_safely() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let m = manager_with(&db, LocalStore::open(dir.path().join("backups"))?)?;
    let evil = "../../etc/passwd\u{0} ünïcödé";
    hostile_id(&m, evil)?;
    let r = only(&m)?;
    assert_eq!(r.entity_id.as_deref(), Some(evil));
    assert!(
        !r.snapshot_id.contains(['/', '\0', ' ']),
        "{}",
        r.snapshot_id
    );
    assert_eq!(r.outcome, Outcome::Committed);
    Ok(())
}

// ---- shapes of functions ------------------------------------------------------------------

struct Repo {
    snapshots: Arc<SnapshotManager>,
    items: Vec<String>,
}

type RepoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, PartialEq)]
enum AppError {
    Snapshot(String),
    NotFound,
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Snapshot(e.to_string())
    }
}

impl Repo {
    #[with_snapshot("delete", "item", manager = self.snapshots)]
    fn remove(&mut self, id: usize) -> RepoResult<String> {
        if id >= self.items.len() {
            return Err(format!("no item {id}").into());
        }
        Ok(self.items.remove(id))
    }

    #[with_snapshot("clear", "item", manager = self.snapshots.clone())]
    fn into_items(self) -> Result<Vec<String>, AppError> {
        Ok(self.items)
    }

    #[with_snapshot("delete", "item", manager = &self.snapshots)]
    fn find<'a>(&'a self, item_id: &str) -> Result<&'a str, AppError> {
        self.items
            .iter()
            .find(|i| *i == item_id)
            .map(String::as_str)
            .ok_or(AppError::NotFound)
    }

    #[with_snapshot("delete", "item", manager = self.snapshots)]
    fn remove_where<F>(&mut self, keep: F) -> Result<impl Iterator<Item = String> + use<F>, Error>
    where
        F: Fn(&str) -> bool,
    {
        let (kept, gone): (Vec<_>, Vec<_>) = self.items.drain(..).partition(|i| keep(i));
        self.items = kept;
        Ok(gone.into_iter())
    }
}

#[with_snapshot("rename", "item", manager = m)]
fn generic<T, U: Display>(m: &SnapshotManager, id: T, to: impl Into<U>) -> anyhow::Result<String>
where
    T: Display + Clone,
{
    let to: U = to.into();
    Ok(format!("{id} -> {to}"))
}

#[with_snapshot("delete", "item", manager = m)]
fn returns_impl(m: &SnapshotManager, id: u8) -> anyhow::Result<impl Display> {
    Ok(id * 2)
}

#[test]
fn methods_generics_impl_trait_and_aliases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let m = manager_with(&db, MemoryStore::new())?;
    let mut repo = Repo {
        snapshots: Arc::new(m.clone()),
        items: vec!["a".into(), "b".into(), "c".into(), "dd".into()],
    };

    assert_eq!(repo.remove(1).map_err(|e| anyhow::anyhow!(e))?, "b");
    let err = repo.remove(10).expect_err("out of range");
    assert_eq!(err.to_string(), "no item 10");
    assert_eq!(repo.find("c"), Ok("c"));
    assert_eq!(repo.find("zz"), Err(AppError::NotFound));
    let gone: Vec<String> = repo.remove_where(|i| i.len() == 1)?.collect();
    assert_eq!(gone, ["dd"]);
    assert_eq!(
        repo.into_items(),
        Ok(vec!["a".to_string(), "c".to_string()])
    );
    assert_eq!(generic::<_, String>(&m, 5, "five")?, "5 -> five");
    assert_eq!(returns_impl(&m, 21)?.to_string(), "42");

    let outcomes: Vec<(String, Option<String>, Outcome)> = all(&m)?
        .into_iter()
        .rev()
        .map(|r| (r.operation_type, r.entity_id, r.outcome))
        .collect();
    let o = |op: &str, id: Option<&str>, outcome| (op.to_string(), id.map(String::from), outcome);
    assert_eq!(
        outcomes,
        [
            o("delete", Some("1"), Outcome::Committed),
            o("delete", Some("10"), Outcome::Failed),
            o("delete", Some("c"), Outcome::Committed),
            o("delete", Some("zz"), Outcome::Failed),
            o("delete", None, Outcome::Committed),
            o("clear", None, Outcome::Committed),
            o("rename", Some("5"), Outcome::Committed),
            o("delete", Some("21"), Outcome::Committed),
        ]
    );
    Ok(())
}

#[test]
fn a_failed_snapshot_reaches_a_custom_error_through_from() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broken = manager_with(&dir.path().join("missing.db"), MemoryStore::new())?;
    let repo = Repo {
        snapshots: Arc::new(broken),
        items: vec!["a".into()],
    };
    match repo.into_items() {
        Err(AppError::Snapshot(message)) => assert!(message.contains("missing.db"), "{message}"),
        other => anyhow::bail!("expected the snapshot error, got {other:?}"),
    }
    Ok(())
}

// ---- the manager --------------------------------------------------------------------------

static PICKED: AtomicUsize = AtomicUsize::new(0);

/// Any expression that gives a `&SnapshotManager` (here through a function) names the manager.
fn pick(m: &Arc<SnapshotManager>) -> &SnapshotManager {
    PICKED.fetch_add(1, Ordering::SeqCst);
    m
}

#[with_snapshot("delete", "measure", manager = pick(&m))]
fn through_a_function(m: Arc<SnapshotManager>, id: i64) -> snapshot::Result<i64> {
    Ok(id)
}

#[test]
fn the_manager_expression_is_evaluated_once_per_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let m = Arc::new(manager_with(&db, MemoryStore::new())?);
    through_a_function(m.clone(), 1)?;
    through_a_function(m.clone(), 2)?;
    assert_eq!(PICKED.load(Ordering::SeqCst), 2);
    let ids: Vec<_> = all(&m)?.into_iter().filter_map(|r| r.entity_id).collect();
    assert_eq!(ids, ["2", "1"]);
    Ok(())
}

// ---- `crate = "…"` ------------------------------------------------------------------------

/// Stands in for a renamed `snapshot` dependency; counts the calls that go through it.
mod renamed {
    pub mod __private {
        pub use snapshot::__private::*;

        pub static BEGUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

        pub fn begin(
            manager: snapshot::Result<&snapshot::SnapshotManager>,
            call: Call,
            id: impl FnOnce() -> Option<String>,
        ) -> snapshot::Result<Guard> {
            BEGUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            snapshot::__private::begin(manager, call, id)
        }
    }
}

#[with_snapshot("delete", "measure", manager = m, crate = "crate::renamed")]
fn through_renamed_crate(m: &SnapshotManager, id: i64) -> snapshot::Result<()> {
    Ok(())
}

#[test]
fn crate_path_is_used_for_every_generated_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let m = manager_with(&db, MemoryStore::new())?;
    through_renamed_crate(&m, 3)?;
    assert_eq!(renamed::__private::BEGUN.load(Ordering::SeqCst), 1);
    assert_eq!(only(&m)?.outcome, Outcome::Committed);
    Ok(())
}

#[with_snapshot("delete", "measure", manager = m)]
fn pruning_call(m: &SnapshotManager, id: i64, outcome: &str) -> snapshot::Result<()> {
    let _ = id;
    match outcome {
        "panic" => panic!("the call panicked"),
        "error" => Err(Error::NotInstalled),
        _ => Ok(()),
    }
}

/// Keys the store holds, without the catalog index.
fn object_keys(store: &dyn Store) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<_> = store
        .list()?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k != snapshot::catalog::INDEX_KEY)
        .collect();
    keys.sort();
    Ok(keys)
}

/// Retention runs with every wrapped call; the objects of the snapshots it drops are deleted once
/// the call is over — however it ends — so the store holds exactly what the catalog lists.
#[test]
fn a_wrapped_call_prunes_and_leaves_only_what_the_catalog_lists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = live_db(dir.path())?;
    let store = LocalStore::open(dir.path().join("store"))?;
    let m = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(store.clone())
        .retention(RetentionPolicy::new().keep_last(2))
        .environment(Environment::persistent())
        .build()?;
    for (i, outcome) in ["ok", "ok", "error", "panic", "ok", "panic", "error"]
        .into_iter()
        .enumerate()
    {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pruning_call(&m, i as i64, outcome)
        }));
        store.settle()?;
        let records = all(&m)?;
        anyhow::ensure!(records.len() == (i + 1).min(2), "call {i}: {records:#?}");
        let mut expected: Vec<String> = records
            .iter()
            .flat_map(|r| [r.blob_key.clone(), r.sidecar_key()])
            .collect();
        expected.sort();
        anyhow::ensure!(
            object_keys(&store)? == expected,
            "call {i} ({outcome}): the store holds {:?}, the catalog lists {expected:?}",
            object_keys(&store)?
        );
        let newest = &records[0];
        let want = if outcome == "ok" {
            Outcome::Committed
        } else {
            Outcome::Failed
        };
        anyhow::ensure!(newest.outcome == want, "call {i}: {:?}", newest.outcome);
    }
    Ok(())
}
