//! The CK Empire backup of its `data/` directory, in compressed time.
//!
//! A worker keeps rewriting the analytics CSV and JSON files while a weekly job (Sunday 02:00,
//! as the original's scheduler) archives the directory — on a clock where one real second is
//! one week. Each archive is a zip holding the files, `backup_summary.json` (the original's
//! fields plus each file's size and blake3) and `report.html`; the job keeps its last four.
//! Then a manual backup, a file deleted by mistake and put back from the archive alone, and the
//! report's path.
//!
//! Run with: `cargo run --example ck_empire --features dir,schedule`

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use snapshot::schedule::{Clock, Event, Job, ManagerRunner, Schedule, Scheduler, TimeZone as Tz};
use snapshot::{
    DirectorySource, Environment, ListFilter, LocalStore, RestoreOptions, RetentionPolicy,
    SnapshotManager, SnapshotRequest,
};

/// Simulated seconds per real second: one real second is one week.
const SPEED: u32 = 7 * 24 * 3600;

/// A clock on which weeks pass in seconds, stopping the scheduler at `end`.
struct FastClock<'a> {
    real_start: Instant,
    sim_start: DateTime<Utc>,
    end: DateTime<Utc>,
    stop: &'a AtomicBool,
    last: Cell<DateTime<Utc>>,
}

impl Clock for FastClock<'_> {
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

/// The application's data: analytics CSV, business JSON, a text file.
fn create_data(data: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(data.join("csv"))?;
    std::fs::create_dir_all(data.join("json"))?;
    std::fs::write(
        data.join("csv/analytics_summary.csv"),
        "date,views,subscribers\n2025-01-01,1200,40\n",
    )?;
    std::fs::write(
        data.join("csv/monetization_data.csv"),
        "date,channel,usd\n2025-01-01,ads,12.40\n2025-01-01,sponsors,150.00\n",
    )?;
    std::fs::write(
        data.join("json/business_ideas.json"),
        r#"[{"idea": "weekly newsletter", "score": 7}]"#,
    )?;
    std::fs::write(data.join("notes.txt"), "Q1 goals: 10k subscribers\n")
}

/// The worker: rewrites the analytics summary and the ideas in place, as the app's exports do.
fn worker(
    data: PathBuf,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut day = 1u64;
        while !stop.load(Ordering::Relaxed) {
            let mut csv = String::from("date,views,subscribers\n");
            for d in day.saturating_sub(50)..=day {
                csv.push_str(&format!("2025-day-{d},{},{}\n", 1000 + d * 7, 40 + d));
            }
            let ideas = format!(
                r#"[{{"idea": "weekly newsletter", "score": {}}}]"#,
                day % 10
            );
            if std::fs::write(data.join("csv/analytics_summary.csv"), csv).is_err()
                || std::fs::write(data.join("json/business_ideas.json"), ideas).is_err()
            {
                return;
            }
            count.fetch_add(1, Ordering::Relaxed);
            day += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let data = scratch.path().join("data");
    create_data(&data)?;
    let backups = scratch.path().join("backups");
    let manager = SnapshotManager::builder()
        .source(DirectorySource::new(&data))
        .store(LocalStore::open(&backups)?)
        .environment(Environment::persistent())
        .build()?;

    // The weekly job, Sunday 02:00; it keeps its last four archives (the original kept all).
    let jobs = vec![Job::new(
        "weekly-local-backup",
        Schedule::parse("0 2 * * 0")?,
    )];
    let mut runner = ManagerRunner::new(manager.clone())
        .job_retention("weekly-local-backup", RetentionPolicy::new().keep_last(4));
    // Saturday 2025-01-04 noon; six weeks pass in six real seconds.
    let sim_start = Utc
        .with_ymd_and_hms(2025, 1, 4, 12, 0, 0)
        .single()
        .ok_or("time")?;
    let stop = AtomicBool::new(false);
    let clock = FastClock {
        real_start: Instant::now(),
        sim_start,
        end: sim_start + chrono::Duration::weeks(6),
        stop: &stop,
        last: Cell::new(sim_start),
    };
    let worker_stop = Arc::new(AtomicBool::new(false));
    let rewrites = Arc::new(AtomicU64::new(0));
    let worker = worker(data.clone(), worker_stop.clone(), rewrites.clone());
    let mut on_event = |e: &Event| println!("[{}] {e}", e.at().format("%a %Y-%m-%d %H:%M"));
    let mut scheduler = Scheduler::new(jobs, Tz::Utc, sim_start)?;
    scheduler.serve(&clock, &mut runner, &mut on_event, &stop);
    worker_stop.store(true, Ordering::Relaxed);
    worker.join().map_err(|_| "the worker panicked")?;
    let weekly = manager.list(&ListFilter::new().operation_type("scheduled"))?;
    println!(
        "the worker rewrote the files {} times; the weekly job keeps {} archive(s)",
        rewrites.load(Ordering::Relaxed),
        weekly.len()
    );

    // A manual backup (the original's `POST /backup/manual`), its summary printed.
    let manual = manager
        .snapshot(SnapshotRequest::new("manual_backup").description("Manual backup"))?
        .into_record()
        .ok_or("snapshots are enabled")?;
    let archive = backups.join(&manual.blob_key);
    let summary = DirectorySource::summary_of(&archive)?;
    println!();
    println!(
        "manual backup {} ({} bytes)",
        manual.snapshot_id, manual.size_bytes
    );
    println!("  backup_timestamp  {}", summary.backup_timestamp);
    println!("  backup_type       {}", summary.backup_type);
    println!("  status            {}", summary.status);
    println!("  files_exported    {:?}", summary.files_exported);
    println!("  file_list         {:?}", summary.file_list);
    println!("  backup_size_mb    {}", summary.backup_size_mb);
    for e in summary.entries.iter().filter(|e| e.kind == "file") {
        println!(
            "  {:<28} {:>6} bytes  {}",
            e.path,
            e.size,
            e.blake3.as_deref().unwrap_or("-")
        );
    }

    // A file deleted by mistake: put back from the archive alone, the rest left as it is.
    std::fs::remove_file(data.join("csv/monetization_data.csv"))?;
    println!();
    println!("deleted csv/monetization_data.csv by mistake");
    let diff = manager.compare_paths(&manual.snapshot_id)?;
    println!(
        "compared with {}: {} removed ({})",
        manual.snapshot_id,
        diff.removed.len(),
        diff.removed
            .iter()
            .map(|c| c.path.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let report = manager.restore_with(
        &manual.snapshot_id,
        &RestoreOptions::new().paths(["csv/monetization_data.csv"]),
    )?;
    for s in &report.steps {
        println!("  - {s}");
    }
    let back = std::fs::read_to_string(data.join("csv/monetization_data.csv"))?;
    println!(
        "csv/monetization_data.csv is back: {} line(s)",
        back.lines().count()
    );

    // The report of the newest weekly archive, written out for a browser.
    let newest = weekly.first().ok_or("no weekly archive")?;
    let html = DirectorySource::report_of(&backups.join(&newest.blob_key))?;
    let page = scratch.path().join("weekly_report.html");
    std::fs::write(&page, &html)?;
    println!();
    println!("the report of {}: {}", newest.snapshot_id, page.display());
    // What it says changed since the week before.
    for line in html
        .lines()
        .filter(|l| l.contains("id=\"changes\"") || l.starts_with("<li"))
    {
        let text: String = line
            .split('<')
            .filter_map(|part| part.split_once('>').map(|(_, t)| t))
            .collect();
        println!("  {text}");
    }
    // Kept for a look when asked: `KEEP=1 cargo run --example ck_empire --features dir,schedule`.
    if std::env::var_os("KEEP").is_some() {
        let kept = scratch.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
