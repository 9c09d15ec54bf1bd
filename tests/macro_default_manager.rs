//! `#[with_snapshot]` without `manager = …`: the process-wide default. Installing is once per
//! process, so this binary holds a single test that walks through the states in order: nothing
//! installed (fail closed, or continue), installed, and `manager = …` overriding the default.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::Connection;
use snapshot::{
    Environment, Error, ListFilter, MemoryStore, Outcome, RetentionPolicy, SnapshotManager,
    SqliteSource, with_snapshot,
};

static RAN: AtomicUsize = AtomicUsize::new(0);

#[with_snapshot("delete", "measure")]
fn delete(conn: &Connection, id: i64) -> Result<usize, Error> {
    RAN.fetch_add(1, Ordering::SeqCst);
    conn.execute("DELETE FROM measure WHERE id = ?1", [id])
        .map_err(|e| Error::InvalidInput {
            field: "sql",
            reason: e.to_string(),
        })
}

#[with_snapshot("delete", "measure", on_error = "continue")]
fn delete_anyway(conn: &Connection, measure_id: i64) -> anyhow::Result<usize> {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(conn.execute("DELETE FROM measure WHERE id = ?1", [measure_id])?)
}

#[with_snapshot("delete", "measure", manager = other)]
fn delete_elsewhere(other: &SnapshotManager, conn: &Connection, id: i64) -> anyhow::Result<usize> {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(conn.execute("DELETE FROM measure WHERE id = ?1", [id])?)
}

fn rows(conn: &Connection) -> anyhow::Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM measure", [], |r| r.get(0))?)
}

fn manager(db: &Path) -> anyhow::Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(SqliteSource::new(db))
        .store(MemoryStore::new())
        .retention(RetentionPolicy::new().keep_last(100))
        .environment(Environment::persistent())
        .build()?)
}

#[test]
fn the_installed_default_manager() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    let conn = Connection::open(&db)?;
    conn.execute_batch(
        "CREATE TABLE measure (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO measure VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd');",
    )?;

    // Nothing installed: fail closed, the body does not run.
    assert!(matches!(snapshot::installed(), Err(Error::NotInstalled)));
    let err = delete(&conn, 1).expect_err("no manager, no snapshot, no delete");
    assert!(matches!(err, Error::NotInstalled), "{err:?}");
    assert!(err.to_string().contains("snapshot::install"), "{err}");
    assert_eq!(RAN.load(Ordering::SeqCst), 0);
    assert_eq!(rows(&conn)?, 4);

    // Nothing installed, on_error = "continue": logged, and the body runs.
    assert_eq!(delete_anyway(&conn, 1)?, 1);
    assert_eq!(RAN.load(Ordering::SeqCst), 1);
    assert_eq!(rows(&conn)?, 3);

    // Installed: used by every call without `manager = …`.
    let default = manager(&db)?;
    snapshot::install(default.clone())?;
    assert!(
        snapshot::install(default.clone()).is_err(),
        "only the first install wins"
    );
    assert_eq!(delete(&conn, 2)?, 1);
    assert_eq!(delete_anyway(&conn, 3)?, 1);
    let records = default.list(&ListFilter::new())?;
    let ids: Vec<_> = records
        .iter()
        .filter_map(|r| r.entity_id.as_deref())
        .collect();
    assert_eq!(ids, ["3", "2"]);
    assert!(records.iter().all(|r| r.outcome == Outcome::Committed));

    // `manager = …` wins over the default.
    let other = manager(&db)?;
    assert_eq!(delete_elsewhere(&other, &conn, 4)?, 1);
    assert_eq!(default.list(&ListFilter::new())?.len(), 2);
    let elsewhere = other.list(&ListFilter::new())?;
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0].entity_id.as_deref(), Some("4"));
    assert_eq!(RAN.load(Ordering::SeqCst), 4);
    assert_eq!(rows(&conn)?, 0);
    Ok(())
}
