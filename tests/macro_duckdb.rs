//! `#[with_snapshot]` on an application that owns a real DuckDB file: the snapshot goes through
//! the application's connection, holds the row the call then deleted, and the outcome is
//! recorded; a failing snapshot leaves the data alone.

use std::path::Path;

use anyhow::{Context, ensure};
use duckdb::{AccessMode, Config, Connection};
use snapshot::{
    DuckDbSource, Environment, Error, ListFilter, LocalStore, Outcome, SnapshotManager,
    with_snapshot,
};

struct Lnrs {
    conn: Connection,
    snapshots: SnapshotManager,
    bodies: std::cell::Cell<u32>,
}

impl Lnrs {
    fn open(db: &Path, store: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(db)?;
        let snapshots = SnapshotManager::builder()
            .source(DuckDbSource::with_connection(db, &conn)?)
            .store(LocalStore::open(store)?)
            .environment(Environment::persistent())
            .build()?;
        Ok(Lnrs {
            conn,
            snapshots,
            bodies: Default::default(),
        })
    }

    #[with_snapshot("delete", "species", manager = self.snapshots)]
    fn delete_species(&self, species_id: i64) -> anyhow::Result<()> {
        self.bodies.set(self.bodies.get() + 1);
        let n = self
            .conn
            .execute("DELETE FROM species WHERE id = ?", [species_id])?;
        ensure!(n == 1, "no species {species_id}");
        Ok(())
    }

    fn species(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM species", [], |r| r.get(0))?)
    }
}

fn create(db: &Path) -> anyhow::Result<()> {
    let conn = Connection::open(db)?;
    conn.execute_batch(
        "CREATE TABLE species (id BIGINT PRIMARY KEY, common_name VARCHAR NOT NULL);
         INSERT INTO species VALUES (1, 'Skylark'), (2, 'Great crested newt'), (3, 'Barn owl');",
    )?;
    Ok(())
}

#[test]
fn a_duckdb_app_is_snapshotted_through_its_own_connection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("lnrs.duckdb");
    create(&db)?;
    let app = Lnrs::open(&db, &dir.path().join("backups"))?;

    app.delete_species(2)?;
    let err = app.delete_species(2).expect_err("already deleted");
    assert_eq!(err.to_string(), "no species 2");
    assert_eq!(app.species()?, 2);

    let records = app.snapshots.list(&ListFilter::new())?;
    assert_eq!(records.len(), 2);
    let (second, first) = (&records[0], &records[1]);
    assert_eq!(first.outcome, Outcome::Committed);
    assert_eq!(second.outcome, Outcome::Failed);
    for r in &records {
        assert_eq!(r.source_kind, "duckdb");
        assert_eq!(r.entity_type.as_deref(), Some("species"));
        assert_eq!(r.entity_id.as_deref(), Some("2"));
    }

    // The first snapshot still has the newt; the second (after the delete) does not.
    let count_in = |id: &str| -> anyhow::Result<i64> {
        let out = dir.path().join(format!("{id}.duckdb"));
        app.snapshots.restore_to(id, &out)?;
        let config = Config::default().access_mode(AccessMode::ReadOnly)?;
        let conn = Connection::open_with_flags(&out, config)?;
        Ok(
            conn.query_row("SELECT count(*) FROM species WHERE id = 2", [], |r| {
                r.get(0)
            })?,
        )
    };
    assert_eq!(count_in(&first.snapshot_id)?, 1);
    assert_eq!(count_in(&second.snapshot_id)?, 0);
    Ok(())
}

#[test]
fn fail_closed_on_a_duckdb_file_the_body_does_not_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("lnrs.duckdb");
    create(&db)?;
    let store = dir.path().join("backups");
    let app = Lnrs::open(&db, &store)?;
    // The store's path becomes a file: no snapshot can be written. (The directory itself is
    // only created on the store's first write.)
    if store.exists() {
        std::fs::remove_dir_all(&store)?;
    }
    std::fs::write(&store, b"not a directory")?;

    let err = app.delete_species(3).expect_err("the snapshot fails");
    let snapshot_error = err.downcast_ref::<Error>().context("a snapshot error")?;
    assert!(
        snapshot_error.to_string().contains("backups"),
        "{snapshot_error}"
    );
    assert_eq!(app.bodies.get(), 0, "the body did not run");
    assert_eq!(app.species()?, 3, "the data is intact");
    Ok(())
}
