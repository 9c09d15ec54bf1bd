//! A cron scheduler for snapshot jobs: what `snapshot schedule` runs as a service, and what an
//! application can run in-process.
//!
//! A [`Job`] has a name, a [`Schedule`] (a 5-field cron expression or a preset) and an optional
//! interval gate: a run is skipped — "backup not needed" — when the job's last snapshot is
//! younger than `min_interval`. A [`Scheduler`] keeps the next run time of every job and, given
//! the time from a [`Clock`] and a [`JobRunner`] that takes the snapshots, runs what is due and
//! reports each step as an [`Event`]. Runs missed while the process was paused (a suspended
//! laptop, a stopped service) are reported as [`Event::Missed`] and made up by a single run, never
//! stacked. Stopping (a flag set by a signal handler) is honoured between runs, so a snapshot in
//! flight always finishes.
//!
//! The simpler alternative is cron or a systemd timer running `snapshot create`; this module is
//! for a long-running service that also wants the interval gate, per-job retention and one
//! activity log.
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use chrono::{TimeZone, Utc};
//! use snapshot::schedule::{Event, Job, JobRunner, Schedule, Scheduler, TimeZone as Tz};
//!
//! struct Counter(u32);
//! impl JobRunner for Counter {
//!     fn last_snapshot(&mut self, _: &Job) -> snapshot::Result<Option<chrono::DateTime<Utc>>> {
//!         Ok(None)
//!     }
//!     fn run(&mut self, _: &Job) -> snapshot::Result<String> {
//!         self.0 += 1;
//!         Ok(format!("run {}", self.0))
//!     }
//! }
//!
//! # fn main() -> snapshot::Result<()> {
//! let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap();
//! let jobs = vec![Job::new("hourly", Schedule::parse("hourly")?)];
//! let mut scheduler = Scheduler::new(jobs, Tz::Utc, start)?;
//! assert_eq!(scheduler.next_due().map(|(_, t)| t), Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).single());
//! let mut events = Vec::new();
//! let at = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
//! scheduler.run_due(at, &mut Counter(0), &mut |e| events.push(e.clone()), &AtomicBool::new(false));
//! assert!(matches!(events.last(), Some(Event::Ran { .. })));
//! # Ok(()) }
//! ```

mod lock;
mod log;
mod runner;

pub use lock::SchedulerLock;
pub use log::ActivityLog;
pub use runner::ManagerRunner;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

pub use crate::record::SCHEDULED;

/// Presets and what they mean (the original's hourly / daily 02:00 / weekly Sunday 03:00).
pub const PRESETS: &[(&str, &str)] = &[
    ("hourly", "0 * * * *"),
    ("daily", "0 2 * * *"),
    ("weekly", "0 3 * * 0"),
    ("monthly", "0 4 1 * *"),
];

/// When a job runs: a 5-field cron expression (`minute hour day-of-month month day-of-week`),
/// a preset (`hourly`, `daily` = 02:00, `weekly` = Sunday 03:00, `monthly` = the 1st at 04:00)
/// or a standard alias (`@hourly`, `@daily` = midnight, `@weekly`, `@monthly`, `@yearly`).
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Schedule {
    /// Parses a cron expression, preset or alias.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `cron`) saying what is wrong with the expression.
    pub fn parse(text: &str) -> Result<Schedule> {
        let t = text.trim();
        let expr = PRESETS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map_or(t, |(_, e)| *e);
        if !expr.starts_with('@') && expr.split_whitespace().count() != 5 {
            return Err(Error::invalid(
                "cron",
                format!(
                    "{text:?} has {} fields; expected 5 (minute hour day-of-month month \
                     day-of-week) or a preset: hourly, daily, weekly, monthly, @hourly, @daily, …",
                    expr.split_whitespace().count()
                ),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| Error::invalid("cron", format!("{text:?}: {e}")))?;
        // A pattern that never fires (30 February) is refused now, not at run time.
        cron.find_next_occurrence(&Utc::now(), false)
            .map_err(|e| Error::invalid("cron", format!("{text:?} never fires: {e}")))?;
        Ok(Schedule {
            text: t.to_string(),
            cron,
        })
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run time strictly after `t`, read in `tz`.
    pub fn next_after(&self, t: DateTime<Utc>, tz: TimeZone) -> Option<DateTime<Utc>> {
        match tz {
            TimeZone::Utc => self.cron.find_next_occurrence(&t, false).ok(),
            TimeZone::Local => self
                .cron
                .find_next_occurrence(&t.with_timezone(&Local), false)
                .ok()
                .map(|l| l.with_timezone(&Utc)),
        }
    }

    /// The last run time at or before `t`, read in `tz`.
    pub fn previous_at_or_before(&self, t: DateTime<Utc>, tz: TimeZone) -> Option<DateTime<Utc>> {
        match tz {
            TimeZone::Utc => self.cron.find_previous_occurrence(&t, true).ok(),
            TimeZone::Local => self
                .cron
                .find_previous_occurrence(&t.with_timezone(&Local), true)
                .ok()
                .map(|l| l.with_timezone(&Utc)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// The time zone cron expressions are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeZone {
    /// The host's local time: "daily at 02:00" means 02:00 on the wall clock (the default).
    #[default]
    Local,
    /// UTC.
    Utc,
}

/// One scheduled job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Unique name (letters, digits, dashes); recorded as the entity type of its snapshots.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// The interval gate: skip a run when the job's last snapshot is younger than this.
    pub min_interval: Option<Duration>,
}

impl Job {
    /// A job without an interval gate.
    pub fn new(name: impl Into<String>, schedule: Schedule) -> Job {
        Job {
            name: name.into(),
            schedule,
            min_interval: None,
        }
    }

    /// Sets the interval gate.
    pub fn min_interval(mut self, d: Duration) -> Job {
        self.min_interval = Some(d);
        self
    }
}

/// Where a scheduler gets the time and how it waits (injected so tests control time).
pub trait Clock {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Waits about `d` (a test clock advances its time instead).
    fn sleep(&self, d: Duration);
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Takes the snapshots of a job (see [`ManagerRunner`] for one backed by a manager).
pub trait JobRunner {
    /// When the job's newest snapshot was taken, if it has one (for the interval gate and to
    /// find runs missed while the scheduler was not running).
    ///
    /// # Errors
    /// Catalog errors.
    fn last_snapshot(&mut self, job: &Job) -> Result<Option<DateTime<Utc>>>;

    /// Runs the job once; returns a one-line summary of what was taken.
    ///
    /// # Errors
    /// Whatever taking the snapshot failed with (reported as [`Event::Failed`]; the scheduler
    /// goes on).
    fn run(&mut self, job: &Job) -> Result<String>;
}

/// What the scheduler did, for the log and the terminal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The scheduler started; each job's next run.
    Started {
        /// When.
        at: DateTime<Utc>,
        /// `(job, next run)` for each job.
        next: Vec<(String, Option<DateTime<Utc>>)>,
    },
    /// A job's run began (a snapshot is in flight until `Ran` or `Failed`).
    Running {
        /// The job.
        job: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A job ran.
    Ran {
        /// The job.
        job: String,
        /// When it finished.
        at: DateTime<Utc>,
        /// What was taken.
        summary: String,
        /// How long it took, in milliseconds.
        took_ms: u64,
        /// Its next run.
        next: Option<DateTime<Utc>>,
    },
    /// The interval gate skipped a run: backup not needed.
    Skipped {
        /// The job.
        job: String,
        /// When.
        at: DateTime<Utc>,
        /// Why.
        reason: String,
        /// Its next run.
        next: Option<DateTime<Utc>>,
    },
    /// Runs were missed (the process was paused or not running); one run makes up for them.
    Missed {
        /// The job.
        job: String,
        /// When this was noticed.
        at: DateTime<Utc>,
        /// How many scheduled runs were missed.
        count: usize,
        /// The first missed run time.
        first: DateTime<Utc>,
    },
    /// A run failed; the scheduler goes on.
    Failed {
        /// The job.
        job: String,
        /// When.
        at: DateTime<Utc>,
        /// The error.
        error: String,
        /// Its next run.
        next: Option<DateTime<Utc>>,
    },
    /// The scheduler stopped (after finishing any run in flight).
    Stopped {
        /// When.
        at: DateTime<Utc>,
        /// Why.
        reason: String,
    },
}

/// `1h30m`, `45s`, `2d3h`: the two largest units.
pub(crate) fn human_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    let mut parts = 0;
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len && parts < 2 {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
            parts += 1;
        } else if parts > 0 {
            parts += 1;
        }
    }
    out
}

fn fmt_next(next: &Option<DateTime<Utc>>) -> String {
    next.map_or_else(
        || "never".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

impl fmt::Display for Event {
    /// One log line without the time stamp.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started { next, .. } => {
                write!(f, "scheduler started;")?;
                for (job, t) in next {
                    write!(f, " {job} next at {}", fmt_next(t))?;
                }
                Ok(())
            }
            Event::Running { job, .. } => write!(f, "job {job}: running"),
            Event::Ran {
                job,
                summary,
                took_ms,
                next,
                ..
            } => write!(
                f,
                "job {job}: {summary} in {took_ms} ms; next at {}",
                fmt_next(next)
            ),
            Event::Skipped {
                job, reason, next, ..
            } => write!(f, "job {job}: {reason}; next at {}", fmt_next(next)),
            Event::Missed {
                job, count, first, ..
            } => write!(
                f,
                "job {job}: missed {count} run{} since {} (paused or not running); running once now",
                if *count == 1 { "" } else { "s" },
                first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Event::Failed {
                job, error, next, ..
            } => write!(f, "job {job}: FAILED: {error}; next at {}", fmt_next(next)),
            Event::Stopped { reason, .. } => write!(f, "scheduler stopped: {reason}"),
        }
    }
}

impl Event {
    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::Started { at, .. }
            | Event::Running { at, .. }
            | Event::Ran { at, .. }
            | Event::Skipped { at, .. }
            | Event::Missed { at, .. }
            | Event::Failed { at, .. }
            | Event::Stopped { at, .. } => *at,
        }
    }
}

#[derive(Debug)]
struct JobState {
    job: Job,
    next: Option<DateTime<Utc>>,
}

/// Runs jobs when they are due (see the [module docs](self)).
#[derive(Debug)]
pub struct Scheduler {
    jobs: Vec<JobState>,
    tz: TimeZone,
    run_now: bool,
}

/// The longest a serving scheduler sleeps before looking at the clock and the stop flag again.
const TICK: Duration = Duration::from_millis(200);

/// Most missed runs counted one by one (more are reported as this many).
const MAX_MISSED_COUNT: usize = 100_000;

impl Scheduler {
    /// A scheduler for `jobs`, their first runs after `now`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no job or two jobs of the same name.
    pub fn new(jobs: Vec<Job>, tz: TimeZone, now: DateTime<Utc>) -> Result<Scheduler> {
        if jobs.is_empty() {
            return Err(Error::invalid(
                "jobs",
                "no job to schedule: add a [[schedule.jobs]] table (name, cron, type)",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for j in &jobs {
            if !seen.insert(j.name.as_str()) {
                return Err(Error::invalid(
                    "jobs",
                    format!("two jobs are named {:?}", j.name),
                ));
            }
        }
        Ok(Scheduler {
            jobs: jobs
                .into_iter()
                .map(|job| JobState {
                    next: job.schedule.next_after(now, tz),
                    job,
                })
                .collect(),
            tz,
            run_now: false,
        })
    }

    /// The jobs.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().map(|s| &s.job)
    }

    /// The next run of each job.
    pub fn upcoming(&self) -> Vec<(String, Option<DateTime<Utc>>)> {
        self.jobs
            .iter()
            .map(|s| (s.job.name.clone(), s.next))
            .collect()
    }

    /// The job due first and when.
    pub fn next_due(&self) -> Option<(&str, DateTime<Utc>)> {
        self.jobs
            .iter()
            .filter_map(|s| s.next.map(|t| (s.job.name.as_str(), t)))
            .min_by_key(|(_, t)| *t)
    }

    /// Runs every job once now (`schedule --run-now`), the interval gate applying; stops early
    /// when `stop` is set.
    pub fn run_all_now(
        &mut self,
        now: DateTime<Utc>,
        runner: &mut dyn JobRunner,
        on_event: &mut dyn FnMut(&Event),
        stop: &AtomicBool,
    ) {
        for i in 0..self.jobs.len() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            self.run_one(i, now, runner, on_event);
        }
    }

    /// Makes up for runs missed while the scheduler was not running: a job whose newest snapshot
    /// is older than its last scheduled time runs once now (reported as [`Event::Missed`]). A job
    /// that never ran waits for its first scheduled time.
    pub fn catch_up(
        &mut self,
        now: DateTime<Utc>,
        runner: &mut dyn JobRunner,
        on_event: &mut dyn FnMut(&Event),
        stop: &AtomicBool,
    ) {
        for i in 0..self.jobs.len() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let job = &self.jobs[i].job;
            let last = match runner.last_snapshot(job) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    on_event(&Event::Failed {
                        job: job.name.clone(),
                        at: now,
                        error: e.to_string(),
                        next: self.jobs[i].next,
                    });
                    continue;
                }
            };
            let Some(first) = job.schedule.next_after(last, self.tz) else {
                continue;
            };
            if first > now {
                continue;
            }
            let count = self.count_between(&self.jobs[i].job, first, now);
            on_event(&Event::Missed {
                job: job.name.clone(),
                at: now,
                count,
                first,
            });
            self.run_one(i, now, runner, on_event);
        }
    }

    /// Runs the jobs due at `now` (each once, however many of its runs were missed), then sets
    /// each one's next run after `now`. Stops before starting another job when `stop` is set.
    pub fn run_due(
        &mut self,
        now: DateTime<Utc>,
        runner: &mut dyn JobRunner,
        on_event: &mut dyn FnMut(&Event),
        stop: &AtomicBool,
    ) {
        let mut due: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| self.jobs[i].next.is_some_and(|t| t <= now))
            .collect();
        due.sort_by_key(|&i| self.jobs[i].next);
        for i in due {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Some(scheduled) = self.jobs[i].next else {
                continue;
            };
            // Every scheduled time in (scheduled, now] was missed too: the process slept.
            let later = self.jobs[i]
                .job
                .schedule
                .next_after(scheduled, self.tz)
                .filter(|t| *t <= now);
            if let Some(second) = later {
                let count = 1 + self.count_between(&self.jobs[i].job, second, now);
                on_event(&Event::Missed {
                    job: self.jobs[i].job.name.clone(),
                    at: now,
                    count: count.min(MAX_MISSED_COUNT),
                    first: scheduled,
                });
            }
            self.run_one(i, now, runner, on_event);
        }
    }

    /// Number of run times in `[from, to]` (`from` is one).
    fn count_between(&self, job: &Job, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        let mut n = 0;
        let mut t = Some(from);
        while let Some(x) = t {
            if x > to || n >= MAX_MISSED_COUNT {
                break;
            }
            n += 1;
            t = job.schedule.next_after(x, self.tz);
        }
        n
    }

    fn run_one(
        &mut self,
        i: usize,
        now: DateTime<Utc>,
        runner: &mut dyn JobRunner,
        on_event: &mut dyn FnMut(&Event),
    ) {
        let next = self.jobs[i].job.schedule.next_after(now, self.tz);
        self.jobs[i].next = next;
        let job = self.jobs[i].job.clone();
        if let Some(gate) = job.min_interval {
            match runner.last_snapshot(&job) {
                Ok(Some(last)) => {
                    let age = (now - last).to_std().unwrap_or(Duration::ZERO);
                    if age < gate {
                        on_event(&Event::Skipped {
                            job: job.name.clone(),
                            at: now,
                            reason: format!(
                                "backup not needed: the last snapshot is {} old, younger than \
                                 the {} interval",
                                human_duration(age),
                                human_duration(gate)
                            ),
                            next,
                        });
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    on_event(&Event::Failed {
                        job: job.name.clone(),
                        at: now,
                        error: e.to_string(),
                        next,
                    });
                    return;
                }
            }
        }
        on_event(&Event::Running {
            job: job.name.clone(),
            at: now,
        });
        let started = std::time::Instant::now();
        match runner.run(&job) {
            Ok(summary) => on_event(&Event::Ran {
                job: job.name,
                at: now + chrono::Duration::from_std(started.elapsed()).unwrap_or_default(),
                summary,
                took_ms: started.elapsed().as_millis() as u64,
                next,
            }),
            Err(e) => on_event(&Event::Failed {
                job: job.name,
                at: now,
                error: e.to_string(),
                next,
            }),
        }
    }

    /// Runs every job once when the scheduler [`start`](Self::start)s (`schedule --run-now`).
    pub fn run_now_on_start(mut self, yes: bool) -> Self {
        self.run_now = yes;
        self
    }

    /// The start-up work of [`serve`](Self::serve): reports [`Event::Started`], then runs every
    /// job once when [`run_now_on_start`](Self::run_now_on_start) is set, else makes up for runs
    /// missed while not running ([`catch_up`](Self::catch_up)).
    pub fn start(
        &mut self,
        clock: &dyn Clock,
        runner: &mut dyn JobRunner,
        on_event: &mut dyn FnMut(&Event),
        stop: &AtomicBool,
    ) {
        on_event(&Event::Started {
            at: clock.now(),
            next: self.upcoming(),
        });
        if self.run_now {
            self.run_all_now(clock.now(), runner, on_event, stop);
        } else {
            self.catch_up(clock.now(), runner, on_event, stop);
        }
    }

    /// Serves until `stop` is set: [`start`](Self::start), then runs each job when due. `stop`
    /// is looked at between runs and at least every 200 ms while idle, so a snapshot in flight
    /// always finishes before this returns.
    pub fn serve(
        &mut self,
        clock: &dyn Clock,
        runner: &mut dyn JobRunner,
        on_event: &mut dyn FnMut(&Event),
        stop: &AtomicBool,
    ) {
        self.start(clock, runner, on_event, stop);
        while !stop.load(Ordering::SeqCst) {
            let now = clock.now();
            self.run_due(now, runner, on_event, stop);
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let wait = self
                .next_due()
                .map(|(_, t)| (t - clock.now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(TICK);
            clock.sleep(wait.min(TICK));
        }
        on_event(&Event::Stopped {
            at: clock.now(),
            reason: "stop requested".into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;
    use std::cell::Cell;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    #[derive(Default)]
    struct Fake {
        last: Option<DateTime<Utc>>,
        runs: Vec<String>,
        now: Option<DateTime<Utc>>,
        fail: bool,
    }

    impl JobRunner for Fake {
        fn last_snapshot(&mut self, _: &Job) -> Result<Option<DateTime<Utc>>> {
            Ok(self.last)
        }
        fn run(&mut self, job: &Job) -> Result<String> {
            if self.fail {
                return Err(Error::invalid("x", "boom"));
            }
            self.runs.push(job.name.clone());
            self.last = self.now;
            Ok("ok".into())
        }
    }

    struct TestClock(Cell<DateTime<Utc>>);
    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.get()
        }
        fn sleep(&self, d: Duration) {
            self.0
                .set(self.0.get() + chrono::Duration::from_std(d).unwrap_or_default());
        }
    }

    #[test]
    fn presets_aliases_and_bad_expressions() -> Result<()> {
        let daily = Schedule::parse("daily")?;
        assert_eq!(daily.next_after(t(1, 0), TimeZone::Utc), Some(t(2, 0)));
        let weekly = Schedule::parse("weekly")?;
        // 2026-03-02 is a Monday: the next Sunday 03:00 is 2026-03-08.
        assert_eq!(
            weekly.next_after(t(1, 0), TimeZone::Utc),
            Utc.with_ymd_and_hms(2026, 3, 8, 3, 0, 0).single()
        );
        assert_eq!(
            Schedule::parse("@hourly")?.next_after(t(1, 10), TimeZone::Utc),
            Some(t(2, 0))
        );
        assert_eq!(
            Schedule::parse("*/15 * * * *")?.next_after(t(1, 10), TimeZone::Utc),
            Some(t(1, 15))
        );
        for bad in [
            "",
            "61 * * * *",
            "* * * *",
            "0 0 * * * *",
            "every hour",
            "0 0 30 2 *",
        ] {
            match Schedule::parse(bad) {
                Err(Error::InvalidInput { field: "cron", .. }) => {}
                other => panic!("{bad:?}: expected a cron error, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn runs_when_due_and_not_before() -> Result<()> {
        let mut s = Scheduler::new(
            vec![Job::new("h", Schedule::parse("hourly")?)],
            TimeZone::Utc,
            t(1, 30),
        )?;
        let mut r = Fake::default();
        let stop = AtomicBool::new(false);
        let mut ev = Vec::new();
        s.run_due(t(1, 59), &mut r, &mut |e| ev.push(e.clone()), &stop);
        assert!(ev.is_empty() && r.runs.is_empty());
        s.run_due(t(2, 0), &mut r, &mut |e| ev.push(e.clone()), &stop);
        assert_eq!(r.runs, vec!["h"]);
        assert_eq!(s.next_due().map(|(_, t)| t), Some(t(3, 0)));
        Ok(())
    }

    #[test]
    fn missed_runs_are_reported_once_and_not_stacked() -> Result<()> {
        let mut s = Scheduler::new(
            vec![Job::new("h", Schedule::parse("hourly")?)],
            TimeZone::Utc,
            t(1, 30),
        )?;
        let mut r = Fake::default();
        let mut ev = Vec::new();
        // Suspended from 01:30 to 05:10: runs at 02, 03, 04, 05 were missed.
        s.run_due(
            t(5, 10),
            &mut r,
            &mut |e| ev.push(e.clone()),
            &AtomicBool::new(false),
        );
        assert_eq!(r.runs.len(), 1, "one make-up run, not four");
        match &ev[0] {
            Event::Missed { count, first, .. } => {
                assert_eq!(*count, 4);
                assert_eq!(*first, t(2, 0));
            }
            other => panic!("expected Missed, got {other:?}"),
        }
        assert_eq!(s.next_due().map(|(_, t)| t), Some(t(6, 0)));
        Ok(())
    }

    #[test]
    fn interval_gate_says_backup_not_needed() -> Result<()> {
        let job =
            Job::new("h", Schedule::parse("*/10 * * * *")?).min_interval(Duration::from_secs(3600));
        let mut s = Scheduler::new(vec![job], TimeZone::Utc, t(1, 0))?;
        let mut r = Fake {
            last: Some(t(0, 45)),
            ..Default::default()
        };
        let mut ev = Vec::new();
        s.run_due(
            t(1, 10),
            &mut r,
            &mut |e| ev.push(e.clone()),
            &AtomicBool::new(false),
        );
        assert!(r.runs.is_empty());
        match &ev[0] {
            Event::Skipped { reason, .. } => {
                assert!(reason.contains("backup not needed"), "{reason}")
            }
            other => panic!("expected Skipped, got {other:?}"),
        }
        r.now = Some(t(1, 50));
        s.run_due(
            t(1, 50),
            &mut r,
            &mut |e| ev.push(e.clone()),
            &AtomicBool::new(false),
        );
        assert_eq!(r.runs, vec!["h"]);
        Ok(())
    }

    #[test]
    fn serve_with_a_test_clock_runs_jobs_in_order_and_stops() -> Result<()> {
        let clock = TestClock(Cell::new(t(1, 58)));
        let mut s = Scheduler::new(
            vec![
                Job::new("fast", Schedule::parse("*/5 * * * *")?),
                Job::new("slow", Schedule::parse("hourly")?),
            ],
            TimeZone::Utc,
            clock.now(),
        )?;
        let stop = AtomicBool::new(false);
        let mut r = Fake::default();
        let mut ran = Vec::new();
        s.serve(
            &clock,
            &mut r,
            &mut |e| {
                if let Event::Ran { job, at, .. } = e {
                    ran.push((job.clone(), at.format("%H:%M").to_string()));
                    if ran.len() == 4 {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            },
            &stop,
        );
        let names: Vec<_> = ran.iter().map(|(j, t)| format!("{j}@{t}")).collect();
        assert_eq!(
            names,
            vec!["fast@02:00", "slow@02:00", "fast@02:05", "fast@02:10"]
        );
        Ok(())
    }

    #[test]
    fn catch_up_runs_once_after_downtime_and_failures_do_not_stop_the_scheduler() -> Result<()> {
        let mut s = Scheduler::new(
            vec![Job::new("d", Schedule::parse("daily")?)],
            TimeZone::Utc,
            t(10, 0),
        )?;
        let mut r = Fake {
            last: Some(t(2, 0) - chrono::Duration::days(3)),
            ..Default::default()
        };
        let mut ev = Vec::new();
        s.catch_up(
            t(10, 0),
            &mut r,
            &mut |e| ev.push(e.clone()),
            &AtomicBool::new(false),
        );
        assert!(matches!(ev[0], Event::Missed { count: 3, .. }), "{ev:?}");
        assert_eq!(r.runs.len(), 1);
        r.fail = true;
        ev.clear();
        s.run_all_now(
            t(10, 1),
            &mut r,
            &mut |e| ev.push(e.clone()),
            &AtomicBool::new(false),
        );
        assert!(matches!(ev.last(), Some(Event::Failed { .. })), "{ev:?}");
        Ok(())
    }

    #[test]
    fn duplicate_or_no_jobs_are_refused() -> Result<()> {
        let h = Schedule::parse("hourly")?;
        assert!(Scheduler::new(vec![], TimeZone::Utc, t(0, 0)).is_err());
        assert!(
            Scheduler::new(
                vec![Job::new("a", h.clone()), Job::new("a", h)],
                TimeZone::Utc,
                t(0, 0)
            )
            .is_err()
        );
        Ok(())
    }
}
