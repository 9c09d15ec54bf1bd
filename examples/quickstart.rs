//! Quickstart: an embedded SQLite app protected by snapshot.
//!
//! Run with `cargo run --example quickstart`. It creates a small database of measures and
//! deletes one through a function marked `#[with_snapshot("delete", "measure")]`: the snapshot
//! is taken before the body runs and marked committed after it. It then lists the catalog,
//! restores the snapshot (after a safety snapshot of the present) and shows the data back. Everything lives in a temporary
//! directory, printed at the start (set `QUICKSTART_DIR` to keep it somewhere).

use std::path::PathBuf;

use rusqlite::Connection;
use snapshot::{
    Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager, SqliteSource,
    with_snapshot,
};

/// The application's destructive function. The attribute snapshots the database (with the
/// entity id taken from the `id` parameter) before the body runs; if the snapshot fails, the
/// body does not run and the error is returned.
#[with_snapshot("delete", "measure")]
fn delete_measure(db: &PathBuf, id: i64) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(Connection::open(db)?.execute("DELETE FROM measure WHERE id = ?", [id])?)
}

fn show(db: &PathBuf, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let conn = Connection::open(db)?;
    let mut stmt = conn.prepare("SELECT id, name, hectares FROM measure ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(format!(
            "  {:>3}  {:<22} {:>6.1} ha",
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, f64>(2)?
        ))
    })?;
    println!("{title}");
    for row in rows {
        println!("{}", row?);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::var_os("QUICKSTART_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("nature.db");
    println!("working in {}\n", dir.display());

    {
        let conn = Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS measure(id INTEGER PRIMARY KEY, name TEXT NOT NULL, hectares REAL NOT NULL);
             DELETE FROM measure;
             INSERT INTO measure VALUES (1, 'Hedgerow planting', 12.5), (2, 'Pond restoration', 3.0),
                                        (42, 'Wildflower meadow', 40.25);",
        )?;
    }
    show(&db, "The live data:")?;

    // One manager per database: where snapshots go and how many to keep.
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.join("backups"))?)
        .retention(RetentionPolicy::default()) // keep the last 10
        .environment(Environment::detect(Some(&dir.join("backups"))))
        .build()?;
    println!("\nenvironment: {}", manager.environment());

    // Installed once at start-up: every #[with_snapshot] function uses it.
    snapshot::install(manager.clone())?;
    if !manager.is_enabled() {
        println!("snapshots are disabled on this host; the delete runs unprotected");
    }

    let deleted = delete_measure(&db, 42)?;
    show(
        &db,
        &format!("\nAfter `delete_measure(42)` ({deleted} row):"),
    )?;
    let Some(record) = manager.list(&ListFilter::new().limit(1))?.pop() else {
        return Ok(());
    };
    println!(
        "\nsnapshot {} ({} bytes, {}, outcome {:?})",
        record.snapshot_id, record.size_bytes, record.checksum, record.outcome
    );

    println!("\nThe catalog (snapshot_metadata.json):");
    for r in manager.list(&ListFilter::new())? {
        println!(
            "  {}  {:<10} {:<8} {:<4} {:>8} bytes  {}",
            r.datetime.format("%H:%M:%S%.3f"),
            r.operation_type,
            r.entity_type.as_deref().unwrap_or("-"),
            r.entity_id.as_deref().unwrap_or("-"),
            r.size_bytes,
            r.description
        );
    }

    let report = manager.restore(&record.snapshot_id)?;
    println!("\nrestore of {}:", report.snapshot_id);
    for step in &report.steps {
        println!("  - {step}");
    }
    show(&db, "\nThe data is back:")?;

    println!("\nThe catalog now:");
    for r in manager.list(&ListFilter::new())? {
        println!(
            "  {}  {:<12} pinned={:<5} {}",
            r.snapshot_id, r.operation_type, r.pinned, r.description
        );
    }
    let verified = manager.verify_all()?;
    println!(
        "\nverified {} snapshot(s), {} failed",
        verified.passed.len(),
        verified.failed.len()
    );
    Ok(())
}
