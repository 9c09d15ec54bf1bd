//! The heat-treatment plant of the original backup guide, in compressed time.
//!
//! A sensor thread writes a `readings` row (water and air temperature, humidity, setpoint, PID
//! output) every few milliseconds into a live SQLite database, while the scheduler runs the
//! original's jobs — hourly, daily at 02:00 and weekly on Sunday at 03:00, each taking the
//! database plus a CSV and a JSON export — on a clock where one second is one hour. The interval
//! gate skips a run when the job's last snapshot is too young ("backup not needed"), and each job
//! keeps its own last few snapshots. At the end it prints the status with the readings
//! statistics, restores the database after an "accident", and unpacks the newest export.
//!
//! ```sh
//! cargo run --example heat_treatment
//! ```

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::Connection;
use snapshot::export::{ExportFormat, ExportSource, unpack};
use snapshot::schedule::{
    Clock, Event, Job, JobRunner, ManagerRunner, Schedule, Scheduler, TimeZone as Tz,
};
use snapshot::{
    Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager, Source, SqliteSource,
};

/// Simulated seconds per real second: one real second is one hour of plant time.
const SPEED: u32 = 3600;

/// A clock on which hours pass in seconds, stopping the scheduler at `end`.
struct PlantClock<'a> {
    real_start: Instant,
    sim_start: DateTime<Utc>,
    end: DateTime<Utc>,
    stop: &'a AtomicBool,
    last: Cell<DateTime<Utc>>,
}

impl Clock for PlantClock<'_> {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.real_start.elapsed() * SPEED;
        let t = self.sim_start + chrono::Duration::from_std(elapsed).unwrap_or_default();
        self.last.set(t);
        t
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep((d / SPEED).max(Duration::from_millis(1)));
        if self.now() >= self.end {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Snapshots carry real times; the interval gate of this compressed plant compares plant times,
/// so this runner remembers the plant time of each job's last run.
struct PlantRunner<'a> {
    inner: ManagerRunner,
    clock: &'a PlantClock<'a>,
    last: HashMap<String, DateTime<Utc>>,
}

impl JobRunner for PlantRunner<'_> {
    fn last_snapshot(&mut self, job: &Job) -> snapshot::Result<Option<DateTime<Utc>>> {
        Ok(self.last.get(&job.name).copied())
    }
    fn run(&mut self, job: &Job) -> snapshot::Result<String> {
        let summary = self.inner.run(job)?;
        self.last.insert(job.name.clone(), self.clock.now());
        Ok(summary)
    }
}

fn create_plant(db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let c = Connection::open(db)?;
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    c.execute_batch(
        "CREATE TABLE readings (
             id INTEGER PRIMARY KEY,
             water_temperature REAL NOT NULL,
             air_temperature REAL NOT NULL,
             humidity REAL NOT NULL,
             setpoint REAL NOT NULL,
             pid_output INTEGER NOT NULL,
             timestamp TEXT NOT NULL
         );
         CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO settings VALUES ('setpoint', '25.0'), ('kp', '12.5'), ('ki', '0.8');",
    )?;
    Ok(())
}

/// The sensor: one reading every 5 ms with a crude PID loop heating the water to the setpoint.
fn sensor(
    db: PathBuf,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let run = || -> rusqlite::Result<()> {
            let c = Connection::open(&db)?;
            c.busy_timeout(Duration::from_secs(5))?;
            let (setpoint, mut water, mut integral) = (25.0_f64, 20.5_f64, 0.0_f64);
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let error = setpoint - water;
                integral = (integral + error * 0.005).clamp(-50.0, 50.0);
                let pid = (12.5 * error + 0.8 * integral).clamp(0.0, 255.0);
                water += pid * 0.0004 - (water - 18.0) * 0.002;
                let air = 22.0 + (i as f64 / 200.0).sin() * 3.5;
                let humidity = 60.0 + (i as f64 / 90.0).cos() * 5.0;
                let ts = Utc::now().format("%Y-%m-%d %H:%M:%S%.3f").to_string();
                c.execute(
                    "INSERT INTO readings (water_temperature, air_temperature, humidity, setpoint, \
                     pid_output, timestamp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    rusqlite::params![
                        (water * 100.0).round() / 100.0,
                        (air * 100.0).round() / 100.0,
                        (humidity * 100.0).round() / 100.0,
                        setpoint,
                        pid as i64,
                        ts
                    ],
                )?;
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        };
        if let Err(e) = run() {
            eprintln!("sensor stopped: {e}");
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = std::env::temp_dir().join(format!("heat-treatment-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let db = work.join("plant.db");
    let store_dir = work.join("backups");
    create_plant(&db)?;
    println!("plant database: {}", db.display());

    let store = LocalStore::open(&store_dir)?;
    let policy = RetentionPolicy::new().keep_last(40);
    let database = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(store.clone())
        .retention(policy.clone())
        .environment(Environment::persistent())
        .build()?;
    let exports = SnapshotManager::builder()
        .source(ExportSource::sqlite(&db).formats(&[ExportFormat::Csv, ExportFormat::Json]))
        .store(store)
        .retention(policy)
        .environment(Environment::persistent())
        .build()?;

    // The original's schedule: complete backups hourly, daily at 02:00, weekly on Sunday 03:00.
    let jobs = vec![
        Job::new("hourly", Schedule::parse("hourly")?).min_interval(Duration::from_secs(45 * 60)),
        Job::new("daily", Schedule::parse("daily")?),
        Job::new("weekly", Schedule::parse("weekly")?),
    ];
    let both = vec![database.clone(), exports.clone()];
    let runner = ManagerRunner::new(database.clone())
        .job_managers("hourly", both.clone())
        .job_managers("daily", both.clone())
        .job_managers("weekly", both)
        .job_retention("hourly", RetentionPolicy::new().keep_last(12))
        .job_retention("daily", RetentionPolicy::new().keep_last(14))
        .job_retention("weekly", RetentionPolicy::new().keep_last(8));

    // Saturday 20:30 plant time; eight plant hours (eight real seconds) cross Sunday 02:00 and 03:00.
    let sim_start = Utc
        .with_ymd_and_hms(2025, 1, 11, 20, 30, 0)
        .single()
        .ok_or("time")?;
    let stop = AtomicBool::new(false);
    let clock = PlantClock {
        real_start: Instant::now(),
        sim_start,
        end: sim_start + chrono::Duration::hours(8),
        stop: &stop,
        last: Cell::new(sim_start),
    };
    let sensor_stop = Arc::new(AtomicBool::new(false));
    let readings = Arc::new(AtomicU64::new(0));
    let sensor = sensor(db.clone(), sensor_stop.clone(), readings.clone());

    let mut runner = PlantRunner {
        inner: runner,
        clock: &clock,
        last: HashMap::new(),
    };
    let mut scheduler = Scheduler::new(jobs, Tz::Utc, sim_start)?;
    // One complete backup at start-up, as `python manage.py backup_database` would take.
    let mut on_event = |e: &Event| println!("[{}] {e}", e.at().format("%a %H:%M"));
    scheduler = scheduler.run_now_on_start(true);
    scheduler.serve(&clock, &mut runner, &mut on_event, &stop);
    sensor_stop.store(true, Ordering::Relaxed);
    sensor.join().map_err(|_| "the sensor thread panicked")?;
    println!(
        "the sensor wrote {} readings",
        readings.load(Ordering::Relaxed)
    );

    print_status(&database, &db)?;

    // An accident: every reading is deleted. Put the newest database snapshot back.
    Connection::open(&db)?.execute("DELETE FROM readings", [])?;
    let newest = database.list(&ListFilter::new().operation_type("scheduled"))?;
    let db_snapshot = newest
        .iter()
        .find(|r| r.source_kind == "sqlite")
        .ok_or("no database snapshot")?;
    let report = database.restore(&db_snapshot.snapshot_id)?;
    let back: i64 =
        Connection::open(&db)?.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?;
    println!();
    println!(
        "restored {} after the accident: {back} readings are back (safety snapshot {})",
        report.snapshot_id,
        report.safety_snapshot.as_deref().unwrap_or("-")
    );

    // The newest export, unpacked for Excel and for integration.
    let bundle = newest
        .iter()
        .find(|r| r.source_kind == "csv+json")
        .ok_or("no export bundle")?;
    let out = work.join("exports");
    let manifest = unpack(&store_dir.join(&bundle.blob_key), &out)?;
    println!("unpacked {} into {}:", bundle.snapshot_id, out.display());
    for t in &manifest.tables {
        println!("  {}: {} rows", t.table, t.rows);
    }
    let csv = std::fs::read_to_string(out.join("readings.csv"))?;
    for line in csv.lines().take(3) {
        println!("  {line}");
    }
    println!("(everything is under {})", work.display());
    Ok(())
}

fn print_status(manager: &SnapshotManager, db: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let status = manager.status()?;
    let records = manager.list(&ListFilter::new())?;
    let count = |kind: &str| records.iter().filter(|r| r.source_kind == kind).count();
    println!();
    println!("{}", "=".repeat(60));
    println!("HEAT TREATMENT PLANT CONTROL - BACKUP STATUS");
    println!("{}", "=".repeat(60));
    println!("Backup location: {}", status.store);
    println!("Database backups: {}", count("sqlite"));
    println!("CSV + JSON exports: {}", count("csv+json"));
    println!(
        "Total size: {:.2} MiB",
        status.total_bytes as f64 / 1048576.0
    );
    let stats = SqliteSource::new(db).statistics(Some("readings"), Some("id"))?;
    let t = stats.table.ok_or("no readings statistics")?;
    println!();
    println!("Database statistics:");
    println!("  Total readings: {}", t.rows);
    for c in &t.columns {
        let label = match c.name.as_str() {
            "water_temperature" => "Water temp",
            "air_temperature" => "Air temp",
            "humidity" => "Humidity",
            _ => continue,
        };
        let f =
            |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        println!(
            "  {label}: {:.2} - {:.2}, avg {:.2}",
            f(&c.min),
            f(&c.max),
            c.avg.unwrap_or(f64::NAN)
        );
    }
    if let Some(row) = &t.latest {
        println!();
        println!("Latest reading:");
        for (k, v) in row {
            match v {
                serde_json::Value::String(s) => println!("  {k}: {s}"),
                other => println!("  {k}: {other}"),
            }
        }
    }
    println!("{}", "=".repeat(60));
    Ok(())
}
