//! The equipment app of the original backup system (seed 001), on PostgreSQL — or on SQLite when
//! no server is given.
//!
//! ```sh
//! SNAPSHOT_PG_URL=postgres://user:pw@127.0.0.1:5432/db cargo run --example equipment
//! cargo run --example equipment                      # SQLite in a temporary directory
//! ```
//!
//! The app keeps an `equipment` table and the `select_options` of its forms. As the original did:
//! - automatic backups gated by an interval: a second run within the hour is skipped with
//!   "backup not needed";
//! - backups organised in day-of-week folders (`backups/{weekday}`: a store path template);
//! - 7-day retention, applied to every day's folder;
//! - an admin flow: pick a backup, preview it, compare it with the current data, merge-restore
//!   one table, replace-restore another, after a safety snapshot each time;
//! - and what the original could not do: undo exactly what one annotated delete removed.
//!
//! On PostgreSQL everything happens in a schema of its own, `snapshot_equipment_demo`, dropped at
//! the end; the backups go to a temporary directory (set `EQUIPMENT_DIR` to keep them).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, Utc, Weekday};
use snapshot::schedule::{Job, ManagerRunner, Schedule, Scheduler, TimeZone};
use snapshot::table::{CompareOptions, DiffKind, RestoreMode, TableDiff, TableRestoreOptions};
use snapshot::{
    Environment, ListFilter, LocalStore, PostgresSource, RetentionPolicy, SnapshotManager, Source,
    SqliteSource, with_snapshot,
};

/// Where the backups of a day go: `{weekday}` becomes `monday` … `sunday`.
const STORE_TEMPLATE: &str = "backups/{weekday}";
/// The interval gate of the automatic backups.
const BACKUP_INTERVAL: Duration = Duration::from_secs(3600);
/// How many days backups are kept.
const RETENTION_DAYS: i64 = 7;
/// The PostgreSQL schema of the demo.
const PG_SCHEMA: &str = "snapshot_equipment_demo";

const DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

/// The store directory of `day` under `root`, from [`STORE_TEMPLATE`].
fn store_path(root: &Path, day: Weekday) -> PathBuf {
    root.join(STORE_TEMPLATE.replace("{weekday}", day_name(day)))
}

/// Runs one statement or query on the application's database.
type Run<T> = Box<dyn Fn(&str) -> Result<T> + Send + Sync>;

/// The application's database: statements and a count, on whichever engine.
struct Db {
    engine: &'static str,
    exec: Run<()>,
    count: Run<i64>,
    source: Box<dyn Fn() -> Result<Box<dyn Source>>>,
    cleanup: Box<dyn Fn() -> Result<()>>,
}

impl Db {
    /// PostgreSQL from `SNAPSHOT_PG_URL` (in a demo schema), else SQLite in `dir`.
    fn open(dir: &Path) -> Result<Db> {
        if std::env::var("SNAPSHOT_PG_URL").is_ok_and(|u| !u.is_empty()) {
            let source = PostgresSource::from_env()?.schema(PG_SCHEMA);
            let client = Mutex::new(source.connect().context("connecting to SNAPSHOT_PG_URL")?);
            let client = std::sync::Arc::new(client);
            let (c1, c2, c3) = (client.clone(), client.clone(), client);
            return Ok(Db {
                engine: "PostgreSQL",
                exec: Box::new(move |sql| {
                    let mut c = c1.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    c.batch_execute(sql)?;
                    Ok(())
                }),
                count: Box::new(move |sql| {
                    let mut c = c2.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    Ok(c.query_one(sql, &[])?.get::<_, i64>(0))
                }),
                source: Box::new(move || Ok(Box::new(source.clone()))),
                cleanup: Box::new(move || {
                    let mut c = c3.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))?;
                    Ok(())
                }),
            });
        }
        let path = dir.join("equipment.db");
        let conn = rusqlite::Connection::open(&path)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        let conn = std::sync::Arc::new(Mutex::new(conn));
        let c2 = conn.clone();
        Ok(Db {
            engine: "SQLite",
            exec: Box::new(move |sql| {
                let c = conn.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                c.execute_batch(sql)?;
                Ok(())
            }),
            count: Box::new(move |sql| {
                let c = c2.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))?)
            }),
            source: Box::new(move || Ok(Box::new(SqliteSource::new(&path)))),
            cleanup: Box::new(|| Ok(())),
        })
    }

    fn exec(&self, sql: &str) -> Result<()> {
        (self.exec)(sql)
    }

    fn count(&self, table: &str) -> Result<i64> {
        (self.count)(&format!("SELECT count(*) FROM {table}"))
    }
}

/// The app: its database and today's snapshot manager.
struct EquipmentApp<'a> {
    db: &'a Db,
    snapshots: SnapshotManager,
}

impl EquipmentApp<'_> {
    /// Deleting equipment is destructive: the attribute snapshots the data first (entity
    /// `equipment`, id from the `id` parameter), so this very call can be undone.
    #[with_snapshot("delete", "equipment", manager = self.snapshots)]
    fn delete_equipment(&self, id: i64) -> Result<()> {
        self.db
            .exec(&format!("DELETE FROM equipment WHERE id = {id}"))
    }
}

const SCHEMA: &str = "
    CREATE TABLE equipment (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        location TEXT,
        status TEXT NOT NULL,
        serial_no TEXT,
        cost NUMERIC(10, 2),
        purchased TEXT
    );
    CREATE TABLE select_options (
        id INTEGER PRIMARY KEY,
        field TEXT NOT NULL,
        value TEXT NOT NULL
    );
    INSERT INTO equipment VALUES
        (1, 'Oscilloscope DSOX1204G', 'Measurement', 'Lab A', 'in use', 'MY5821', 1450.00, '2024-03-11'),
        (2, 'Bench power supply', 'Power', 'Lab A', 'in use', 'PS-2291', 389.90, '2023-11-02'),
        (3, 'Soldering station', 'Tools', 'Workshop', 'in repair', 'WS-81', 249.00, '2022-06-20'),
        (4, 'Thermal camera', 'Measurement', 'Lab B', 'in use', 'TC-0193', 2890.00, '2025-01-15'),
        (5, 'Climate chamber', 'Test', 'Hall 2', 'in use', 'CC-7', 18250.00, '2021-09-30'),
        (6, 'Torque wrench set', 'Tools', 'Workshop', 'lent out', NULL, 310.50, '2020-04-01'),
        (7, '3D printer', 'Prototyping', 'Makerspace', 'in use', 'P1S-552', 699.00, '2025-05-05'),
        (8, 'Spectrum analyser', 'Measurement', 'Lab B', 'calibration due', 'SA-4410', 9100.00, '2019-12-12'),
        (9, 'Laser cutter', 'Prototyping', 'Makerspace', 'in use', 'LC-60', 7400.00, '2023-02-14'),
        (10, 'Multimeter (Ü-series)', 'Measurement', 'Lab A', 'in use', 'MM-Ü12', 189.00, '2024-08-08');
    INSERT INTO select_options VALUES
        (1, 'category', 'Measurement'), (2, 'category', 'Power'), (3, 'category', 'Tools'),
        (4, 'category', 'Test'), (5, 'category', 'Prototyping'),
        (6, 'status', 'in use'), (7, 'status', 'in repair'), (8, 'status', 'lent out'),
        (9, 'status', 'calibration due'),
        (10, 'location', 'Lab A'), (11, 'location', 'Lab B'), (12, 'location', 'Workshop'),
        (13, 'location', 'Hall 2'), (14, 'location', 'Makerspace');
";

/// A manager for the store folder of `day`, with the 7-day retention.
fn manager_for(db: &Db, root: &Path, day: Weekday) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source((db.source)()?)
        .store(LocalStore::open(store_path(root, day))?)
        .retention(RetentionPolicy::new().keep_within(chrono::Duration::days(RETENTION_DAYS)))
        // A demo in a temporary directory: snapshots stay on even on a CI runner.
        .environment(Environment::persistent())
        .build()?)
}

fn show_diff(d: &TableDiff) {
    println!(
        "  {}: {} in the backup, {} now — {} removed, {} added, {} changed, {} unchanged",
        d.table, d.snapshot_rows, d.live_rows, d.removed, d.added, d.changed, d.unchanged
    );
    if !d.drift.is_empty() {
        println!("    schema changed since: {}", d.drift);
    }
    for r in &d.sample {
        let key: Vec<String> = r.key.iter().map(ToString::to_string).collect();
        match r.kind {
            DiffKind::Removed => println!("    - removed  id {}", key.join(", ")),
            DiffKind::Added => println!("    + added    id {}", key.join(", ")),
            DiffKind::Changed => println!(
                "    ~ changed  id {}: {}",
                key.join(", "),
                r.changed_columns.join(", ")
            ),
        }
    }
}

fn main() -> Result<()> {
    let keep = std::env::var_os("EQUIPMENT_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let root = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;
    let db = Db::open(&root)?;
    println!(
        "Equipment app on {} — backups under {}",
        db.engine,
        root.display()
    );
    if db.engine == "PostgreSQL" {
        db.exec(&format!(
            "DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE; CREATE SCHEMA {PG_SCHEMA};"
        ))?;
    }
    let result = run(&db, &root);
    (db.cleanup)()?;
    result
}

fn run(db: &Db, root: &Path) -> Result<()> {
    db.exec(SCHEMA)?;
    let now: DateTime<Utc> = Utc::now();
    let today = now.weekday();
    let manager = manager_for(db, root, today)?;
    println!(
        "{} equipment, {} select options; today's backups go to {}",
        db.count("equipment")?,
        db.count("select_options")?,
        store_path(root, today).display()
    );

    // 1. Expired backups go, in every day's folder (the original's weekly cleanup).
    println!("\n== Cleanup: keep {RETENTION_DAYS} days ==");
    for day in DAYS {
        if store_path(root, day).exists() {
            let m = manager_for(db, root, day)?;
            let report = m.prune()?;
            println!(
                "  {:<9} {} kept, {} deleted",
                day_name(day),
                report.plan.kept().count(),
                report.deleted.len()
            );
        }
    }

    // 2. Automatic backups: hourly, gated by the interval. The second check within the hour
    //    finds the backup young enough.
    println!(
        "\n== Automatic backup (interval {} min) ==",
        BACKUP_INTERVAL.as_secs() / 60
    );
    let job = Job::new("auto", Schedule::parse("hourly")?).min_interval(BACKUP_INTERVAL);
    let mut runner = ManagerRunner::new(manager.clone()).job_retention(
        "auto",
        RetentionPolicy::new().keep_within(chrono::Duration::days(RETENTION_DAYS)),
    );
    let mut scheduler = Scheduler::new(vec![job], TimeZone::Local, now)?;
    let stop = AtomicBool::new(false);
    for _ in 0..2 {
        scheduler.run_all_now(Utc::now(), &mut runner, &mut |e| println!("  {e}"), &stop);
    }

    // 3. The day goes on: an accident, edits, new rows.
    db.exec(
        "DELETE FROM equipment WHERE category = 'Tools';
         UPDATE equipment SET status = 'scrapped', location = NULL WHERE id = 5;
         INSERT INTO equipment VALUES (11, 'Fume extractor', 'Tools', 'Workshop', 'in use', 'FX-2', 420.00, '2026-11-20');
         DELETE FROM select_options WHERE field = 'location';
         UPDATE select_options SET value = 'On loan' WHERE id = 8;
         INSERT INTO select_options VALUES (15, 'status', 'lost');",
    )?;
    println!(
        "\nAfter the day's edits: {} equipment, {} select options",
        db.count("equipment")?,
        db.count("select_options")?
    );

    // 4. The admin picks the latest backup of today's folder.
    println!("\n== Restore: backups of {} ==", day_name(today));
    let backups = manager.list(&ListFilter::new())?;
    for b in &backups {
        println!(
            "  {}  {}  {} bytes  {}",
            b.snapshot_id, b.datetime, b.size_bytes, b.description
        );
    }
    let backup = backups.first().context("the automatic backup")?;
    let id = backup.snapshot_id.as_str();

    // 5. Preview.
    let page = manager.preview(id, "equipment", 0, 5)?;
    println!(
        "\nPreview of equipment in {id} ({} rows, taken {}):",
        page.total_rows, page.record.datetime
    );
    let names: Vec<&str> = page.columns.iter().map(|c| c.name.as_str()).collect();
    println!("  {}", names.join(" | "));
    for row in &page.rows {
        let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
        println!("  {}", cells.join(" | "));
    }

    // 6. Compare with the current data.
    println!("\nCompared with the current data:");
    for table in ["equipment", "select_options"] {
        show_diff(&manager.compare(id, table, &CompareOptions::new().sample(5))?);
    }

    // 7. Merge the equipment back: the lost tools return, the scrapped climate chamber is
    //    reverted, the new fume extractor stays.
    let dry = manager.restore_tables(
        id,
        &["equipment"],
        &TableRestoreOptions::new(RestoreMode::Merge).dry_run(true),
    )?;
    println!(
        "\nMerge equipment (dry run): would insert {}, update {}",
        dry.inserted(),
        dry.updated()
    );
    let merged = manager.restore_tables(
        id,
        &["equipment"],
        &TableRestoreOptions::new(RestoreMode::Merge),
    )?;
    println!(
        "Merged equipment: {} inserted, {} updated; safety snapshot {}",
        merged.inserted(),
        merged.updated(),
        merged.safety_snapshot.as_deref().unwrap_or("-")
    );

    // 8. Replace the select options: exactly the backup's, the new 'lost' status goes.
    let replaced = manager.restore_tables(
        id,
        &["select_options"],
        &TableRestoreOptions::new(RestoreMode::Replace),
    )?;
    println!(
        "Replaced select_options: {} inserted, {} updated, {} deleted",
        replaced.inserted(),
        replaced.updated(),
        replaced.deleted()
    );
    println!(
        "Now: {} equipment, {} select options",
        db.count("equipment")?,
        db.count("select_options")?
    );

    // 9. An annotated delete, undone: only that row comes back.
    let app = EquipmentApp {
        db,
        snapshots: manager.clone(),
    };
    app.delete_equipment(7)?;
    let call = manager
        .list(
            &ListFilter::new()
                .entity_type("equipment")
                .entity_id(7)
                .limit(1),
        )?
        .pop()
        .context("the delete's snapshot")?;
    println!(
        "\nDeleted equipment 7 through #[with_snapshot]: snapshot {} ({:?})",
        call.snapshot_id, call.outcome
    );
    let undo = manager.undo(&call.snapshot_id)?;
    println!(
        "Undo: {} row(s) back in {}; {} equipment now",
        undo.inserted(),
        undo.tables
            .iter()
            .map(|t| t.table.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        db.count("equipment")?
    );

    let d = manager.compare(id, "equipment", &CompareOptions::new())?;
    println!(
        "\nEquipment against the backup: {} removed, {} changed, {} added (the fume extractor)",
        d.removed, d.changed, d.added
    );
    println!(
        "{} snapshot(s) in {}",
        manager.list(&ListFilter::new())?.len(),
        store_path(root, today).display()
    );
    Ok(())
}
