//! The scheduler library with an injected clock and real snapshots: hours pass in microseconds,
//! jobs take real snapshots through a manager, per-job retention keeps each job's own last N, and
//! a pause is reported as missed runs and made up once.
#![cfg(all(feature = "schedule", feature = "sqlite"))]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use snapshot::schedule::{Clock, Event, Job, ManagerRunner, Schedule, Scheduler, TimeZone as Tz};
use snapshot::{
    Environment, ListFilter, LocalStore, RetentionPolicy, SnapshotManager, SqliteSource,
};

/// Time that passes only when the scheduler sleeps; past `end` it asks the scheduler to stop.
struct TestClock<'a> {
    now: Cell<DateTime<Utc>>,
    end: DateTime<Utc>,
    stop: &'a AtomicBool,
}

impl Clock for TestClock<'_> {
    fn now(&self) -> DateTime<Utc> {
        self.now.get()
    }
    fn sleep(&self, d: Duration) {
        let t = self.now.get() + chrono::Duration::from_std(d).unwrap_or_default();
        self.now.set(t);
        if t >= self.end {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn hours_of_schedule_with_real_snapshots_and_per_job_retention() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("plant.db");
    rusqlite::Connection::open(&db)?
        .execute_batch("CREATE TABLE r (v REAL); INSERT INTO r VALUES (1.5);")?;
    let manager = SnapshotManager::builder()
        .source(SqliteSource::new(&db))
        .store(LocalStore::open(dir.path().join("backups"))?)
        .retention(RetentionPolicy::new().keep_last(100))
        .environment(Environment::persistent())
        .build()?;
    let mut runner = ManagerRunner::new(manager.clone())
        .job_retention("quarterly", RetentionPolicy::new().keep_last(3));
    let start = Utc
        .with_ymd_and_hms(2026, 3, 2, 9, 50, 0)
        .single()
        .context("time")?;
    let stop = AtomicBool::new(false);
    let end = start + chrono::Duration::hours(3);
    let clock = TestClock {
        now: Cell::new(start),
        end,
        stop: &stop,
    };
    let mut scheduler = Scheduler::new(
        vec![
            Job::new("hourly", Schedule::parse("hourly")?),
            Job::new("quarterly", Schedule::parse("*/15 * * * *")?),
        ],
        Tz::Utc,
        start,
    )?;
    let mut events = Vec::new();
    scheduler.serve(&clock, &mut runner, &mut |e| events.push(e.clone()), &stop);
    let ran = |job: &str| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Ran { job: j, .. } if j == job))
            .count()
    };
    // 10:00, 11:00, 12:00; quarterly 10:00 … 12:45 (12 runs).
    assert_eq!(ran("hourly"), 3, "{events:?}");
    assert_eq!(ran("quarterly"), 12);
    let of = |job: &str| -> Result<usize> {
        Ok(manager
            .list(
                &ListFilter::new()
                    .operation_type("scheduled")
                    .entity_type(job),
            )?
            .len())
    };
    assert_eq!(of("hourly")?, 3);
    assert_eq!(of("quarterly")?, 3, "its own retention keeps its last 3");
    assert!(
        events.iter().all(|e| !matches!(e, Event::Failed { .. })),
        "{events:?}"
    );

    // The host sleeps for 2 hours: the missed quarter-hours are reported, made up once.
    let before = ran("quarterly");
    let now = clock.now() + chrono::Duration::hours(2);
    let mut after = Vec::new();
    scheduler.run_due(
        now,
        &mut runner,
        &mut |e| after.push(e.clone()),
        &AtomicBool::new(false),
    );
    let missed = after.iter().find_map(|e| match e {
        Event::Missed { job, count, .. } if job == "quarterly" => Some(*count),
        _ => None,
    });
    assert!(missed.is_some_and(|n| n >= 8), "{after:?}");
    let made_up = after
        .iter()
        .filter(|e| matches!(e, Event::Ran { job, .. } if job == "quarterly"))
        .count();
    assert_eq!(made_up, 1, "not stacked: {after:?} (ran {before} before)");
    Ok(())
}
