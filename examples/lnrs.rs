//! LNRS: the seed-003 app (a Local Nature Recovery Strategy database) in Rust, on DuckDB.
//!
//! Run with `cargo run --example lnrs`. It creates `lnrs.duckdb` with six entity tables
//! (measure, area, priority, species, habitat, grant), whose delete functions carry
//! `#[with_snapshot("delete", "<entity>")]` exactly where the Python app had
//! `@db.with_snapshot("delete", "<entity>")`. It then:
//!
//! 1. calls those functions twelve times (one delete fails: its snapshot is recorded as
//!    `failed`), so retention (the last 10) has something to prune;
//! 2. lists the catalog filtered by operation, by entity type and with a limit;
//! 3. closes the database and restores the snapshot taken before `delete measure 42`, showing
//!    the `pre_restore` safety snapshot it took first;
//! 4. reopens the database: measure 42 is back.
//!
//! The catalog is `backups/snapshot_metadata.json`, in the original's format plus the outcome of
//! each call, its checksum and size.
//!
//! Everything lives in a temporary directory (set `LNRS_DIR` to keep it). On an ephemeral host
//! (Streamlit Cloud, CI runners, …) snapshots are disabled, the deletes still run, and the
//! example says so; set `SNAPSHOT_EPHEMERAL=0` to force them on.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use duckdb::Connection;
use snapshot::{
    DuckDbSource, Environment, ListFilter, LocalStore, Outcome, RetentionPolicy, SnapshotManager,
    SnapshotRecord, with_snapshot,
};

/// The application's database: one DuckDB connection and the snapshot manager working
/// through it.
struct Db {
    conn: Connection,
    snapshots: SnapshotManager,
}

/// The six model delete functions of the original (`models/<entity>.py`), each protected.
impl Db {
    #[with_snapshot("delete", "measure", manager = self.snapshots)]
    fn delete_measure(&self, id: i64) -> anyhow::Result<()> {
        // A measure's links go with it, as in the original's cascade.
        self.conn.execute(
            "DELETE FROM measure_area_priority WHERE measure_id = ?",
            [id],
        )?;
        self.delete_row("measure", id)
    }

    #[with_snapshot("delete", "area", manager = self.snapshots)]
    fn delete_area(&self, area_id: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "DELETE FROM measure_area_priority WHERE area_id = ?",
            [area_id],
        )?;
        self.delete_row("area", area_id)
    }

    #[with_snapshot("delete", "priority", manager = self.snapshots)]
    fn delete_priority(&self, priority_id: i64) -> anyhow::Result<()> {
        self.conn.execute(
            "DELETE FROM measure_area_priority WHERE priority_id = ?",
            [priority_id],
        )?;
        self.delete_row("priority", priority_id)
    }

    #[with_snapshot("delete", "species", manager = self.snapshots)]
    fn delete_species(&self, species_id: i64) -> anyhow::Result<()> {
        self.delete_row("species", species_id)
    }

    #[with_snapshot("delete", "habitat", manager = self.snapshots)]
    fn delete_habitat(&self, habitat_id: i64) -> anyhow::Result<()> {
        self.delete_row("habitat", habitat_id)
    }

    #[with_snapshot("delete", "grant", manager = self.snapshots)]
    fn delete_grant(&self, grant_id: i64) -> anyhow::Result<()> {
        self.delete_row("grant", grant_id)
    }

    fn delete_row(&self, table: &str, id: i64) -> anyhow::Result<()> {
        let n = self
            .conn
            .execute(&format!("DELETE FROM \"{table}\" WHERE id = ?"), [id])?;
        ensure!(n == 1, "no {table} with id {id}");
        Ok(())
    }

    fn count(&self, table: &str) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })?)
    }

    fn measure_name(&self, id: i64) -> anyhow::Result<Option<String>> {
        let mut stmt = self.conn.prepare("SELECT name FROM measure WHERE id = ?")?;
        let mut rows = stmt.query([id])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }
}

const TABLES: [&str; 6] = ["measure", "area", "priority", "species", "habitat", "grant"];

fn create(path: &Path) -> anyhow::Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        r#"
        CREATE TABLE measure  (id BIGINT PRIMARY KEY, name VARCHAR NOT NULL, hectares DOUBLE);
        CREATE TABLE area     (id BIGINT PRIMARY KEY, name VARCHAR NOT NULL);
        CREATE TABLE priority (id BIGINT PRIMARY KEY, theme VARCHAR NOT NULL);
        CREATE TABLE species  (id BIGINT PRIMARY KEY, common_name VARCHAR NOT NULL);
        CREATE TABLE habitat  (id BIGINT PRIMARY KEY, name VARCHAR NOT NULL);
        CREATE TABLE "grant"  (id BIGINT PRIMARY KEY, name VARCHAR NOT NULL, amount DOUBLE);
        CREATE TABLE measure_area_priority (measure_id BIGINT, area_id BIGINT, priority_id BIGINT);

        INSERT INTO measure SELECT range, 'Measure ' || range, range * 0.75 FROM range(1, 201);
        INSERT INTO measure VALUES (201, 'Wildflower meadow creation', 40.25);
        UPDATE measure SET name = 'Hedgerow restoration' WHERE id = 42;
        INSERT INTO area SELECT range, 'Area ' || range FROM range(1, 41);
        INSERT INTO priority SELECT range, 'Priority ' || range FROM range(1, 31);
        INSERT INTO species VALUES (1, 'Skylark'), (2, 'Great crested newt'), (3, 'Hazel dormouse'),
                                   (4, 'Barn owl'), (5, 'Common toad');
        INSERT INTO habitat VALUES (1, 'Lowland meadow'), (2, 'Chalk grassland'), (3, 'Fen'),
                                   (4, 'Wet woodland');
        INSERT INTO "grant" VALUES (1, 'Countryside Stewardship', 12000), (2, 'FiPL', 8000),
                                   (3, 'Woodland Creation Offer', 25000);
        INSERT INTO measure_area_priority
            SELECT m.range, 1 + m.range % 40, 1 + m.range % 30 FROM range(1, 202) m;
        CHECKPOINT;
        "#,
    )?;
    Ok(())
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("backups")
}

/// Opens the app: the connection, and a manager that snapshots through it.
fn open(db: &Path, dir: &Path) -> anyhow::Result<Db> {
    let conn = Connection::open(db)?;
    let store = store_dir(dir);
    let snapshots = SnapshotManager::builder()
        .source(DuckDbSource::with_connection(db, &conn)?)
        .store(LocalStore::open(&store)?)
        .retention(RetentionPolicy::default()) // the last 10, as the user asked
        .environment(Environment::detect(Some(&store)))
        .build()?;
    Ok(Db { conn, snapshots })
}

fn show(title: &str, records: &[SnapshotRecord]) {
    println!("\n{title} ({}):", records.len());
    for r in records {
        println!(
            "  {:<44} {:<11} {:<9} {:<4} {:<9} {:>8.2} MB{}",
            r.snapshot_id,
            r.operation_type,
            r.entity_type.as_deref().unwrap_or("-"),
            r.entity_id.as_deref().unwrap_or("-"),
            format!("{:?}", r.outcome).to_lowercase(),
            r.size_mb,
            if r.pinned { "  pinned" } else { "" }
        );
    }
}

fn counts(db: &Db) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for t in TABLES {
        parts.push(format!("{t} {}", db.count(t)?));
    }
    Ok(parts.join(", "))
}

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::var_os("LNRS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("lnrs.duckdb");
    if path.exists() {
        std::fs::remove_file(&path)?;
        let _ = std::fs::remove_dir_all(store_dir(&dir));
    }
    create(&path)?;
    println!("LNRS database: {}", path.display());

    let db = open(&path, &dir)?;
    println!("environment: {}", db.snapshots.environment());
    println!("live data: {}", counts(&db)?);

    // 1. Twelve deletes through the annotated model functions: twelve snapshots, of which
    //    retention keeps the last 10.
    for id in [100, 101, 102, 103, 7] {
        db.delete_measure(id)?;
    }
    db.delete_area(3)?;
    db.delete_priority(12)?;
    db.delete_species(2)?;
    db.delete_habitat(4)?;
    db.delete_grant(2)?;
    let missing = db.delete_area(999).expect_err("there is no area 999");
    println!("delete area 999 failed as it should: {missing}");
    db.delete_measure(42)?;
    println!("after the deletes: {}", counts(&db)?);
    ensure!(db.measure_name(42)?.is_none(), "measure 42 is gone");

    if !db.snapshots.is_enabled() {
        println!(
            "\nsnapshots are disabled on this host ({}); the deletes ran without them. \
             Set SNAPSHOT_EPHEMERAL=0 to force them on.",
            db.snapshots.environment()
        );
        return Ok(());
    }

    // 2. The catalog, filtered as the original's `list_snapshots`.
    let snapshots = &db.snapshots;
    show(
        "all snapshots, newest first (retention keeps the last 10 of 12)",
        &snapshots.list(&ListFilter::new())?,
    );
    show(
        "operation_type = delete, limit 3",
        &snapshots.list(&ListFilter::new().operation_type("delete").limit(3))?,
    );
    show(
        "entity_type = measure, limit 5",
        &snapshots.list(&ListFilter::new().entity_type("measure").limit(5))?,
    );
    let failed = snapshots.list(&ListFilter::new().entity_type("area").entity_id(999))?;
    ensure!(
        failed.first().map(|r| r.outcome) == Some(Outcome::Failed),
        "the failed call is recorded as failed: {failed:?}"
    );

    // 3. Restore the snapshot taken before `delete measure 42`. DuckDB lets one process own the
    //    file: close the app (its connection, and the manager working through it) first, and
    //    restore through a manager of the closed file, on the same store.
    let before_42 = snapshots
        .list(&ListFilter::new().entity_type("measure").entity_id(42))?
        .into_iter()
        .next()
        .context("the snapshot before `delete measure 42`")?;
    println!(
        "\nrestoring {} ({})",
        before_42.snapshot_id, before_42.description
    );
    drop(db);
    let closed = SnapshotManager::builder()
        .source(DuckDbSource::new(&path))
        .store(LocalStore::open(store_dir(&dir))?)
        .retention(RetentionPolicy::default())
        .environment(Environment::detect(Some(&store_dir(&dir))))
        .build()?;
    let report = closed.restore(&before_42.snapshot_id)?;
    for step in &report.steps {
        println!("  - {step}");
    }
    let safety = report
        .safety_snapshot
        .context("a safety snapshot of the present")?;
    let safety = closed.get(&safety)?;
    show(
        "the pre_restore safety snapshot",
        std::slice::from_ref(&safety),
    );
    // Kept by the safety rules (grace, keep_safety), never counted toward keep_last.
    ensure!(safety.is_safety() && !safety.pinned);
    show(
        "operation_type = pre_restore",
        &closed.list(&ListFilter::new().operation_type("pre_restore"))?,
    );

    // 4. Reopen: measure 42 is back.
    let db = open(&path, &dir)?;
    let name = db.measure_name(42)?.context("measure 42 is back")?;
    println!("\nafter the restore: {}", counts(&db)?);
    println!("measure 42: {name}");
    println!(
        "\nstore: {} ({} snapshots)",
        store_dir(&dir).display(),
        db.snapshots.list(&ListFilter::new())?.len()
    );
    Ok(())
}
