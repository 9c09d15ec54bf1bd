//! `snapshot schedule` (the foreground service) and `snapshot status`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::json;

use crate::config::SnapshotType;
use crate::ctx::{Ctx, formats_of};
use crate::output::{self, Table, bytes, opt_time, pairs};
use crate::{CliError, ExitStatus, ScheduleArgs, invalid};
use snapshot::Error;
use snapshot::schedule::{
    ActivityLog, Event, Job, ManagerRunner, Scheduler, SchedulerLock, SystemClock,
};
use snapshot::{ListFilter, SnapshotManager};

type CliResult = Result<(), CliError>;

fn jobs_of(ctx: &Ctx) -> Result<Vec<Job>, CliError> {
    if ctx.config.jobs.is_empty() {
        return Err(CliError::new(
            ExitStatus::Usage,
            "no_jobs",
            "no job to schedule: add [[schedule.jobs]] tables (name, cron, type) to the configuration",
        ));
    }
    Ok(ctx
        .config
        .jobs
        .iter()
        .map(|j| Job {
            name: j.name.clone(),
            schedule: j.cron.clone(),
            min_interval: j.min_interval.map(|d| d.0),
        })
        .collect())
}

/// Writes events to standard output (a line, or a JSON line) and to the activity log.
struct Emitter {
    json: bool,
    log: Option<ActivityLog>,
}

impl Emitter {
    fn event(&self, e: &Event) {
        let line = e.to_string();
        if self.json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            println!(
                "{} {line}",
                e.at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        self.log_line(e.at(), &line);
    }

    fn note(&self, line: &str) {
        let now = Utc::now();
        if self.json {
            println!("{}", json!({ "event": "note", "at": now, "message": line }));
        } else {
            println!(
                "{} {line}",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        self.log_line(now, line);
    }

    fn log_line(&self, at: chrono::DateTime<Utc>, line: &str) {
        if let Some(log) = &self.log
            && let Err(e) = log.write(at, line)
        {
            eprintln!("warning: cannot write the activity log: {e}");
        }
    }
}

pub(crate) fn schedule(ctx: &Ctx, a: ScheduleArgs) -> CliResult {
    let jobs = jobs_of(ctx)?;
    let tz = ctx.config.timezone;
    if a.list {
        let s = Scheduler::new(jobs, tz, Utc::now())?;
        if ctx.json {
            let v: Vec<_> = ctx
                .config
                .jobs
                .iter()
                .zip(s.upcoming())
                .map(|(j, (_, next))| {
                    json!({ "name": j.name, "cron": j.cron, "type": j.kind, "next": next,
                            "min_interval": j.min_interval, "retention": j.retention })
                })
                .collect();
            return output::json(&v);
        }
        let mut t = Table::new(&["JOB", "WHEN", "TYPE", "NEXT RUN", "GATE"]);
        for (j, (_, next)) in ctx.config.jobs.iter().zip(s.upcoming()) {
            t.row(vec![
                j.name.clone(),
                j.cron.to_string(),
                j.kind.name().into(),
                opt_time(next),
                j.min_interval.map_or("-".into(), |d| d.to_string()),
            ]);
        }
        t.print();
        return Ok(());
    }

    // A service draws no progress bars.
    let quiet = Ctx {
        config: ctx.config.clone(),
        json: ctx.json,
        progress: false,
        force: std::cell::Cell::new(false),
        run_options: std::cell::RefCell::new(serde_json::Map::new()),
    };
    let store = quiet.store(true)?;
    if let Some(local) = store.local() {
        local.prepare()?;
    }
    let lock_dir = quiet.lock_dir()?;
    let _lock = SchedulerLock::acquire(&lock_dir).map_err(|e| match e {
        Error::StoreLocked { path, .. } => CliError::new(
            ExitStatus::Locked,
            "scheduler_running",
            format!(
                "another scheduler{} is already running on the store {} (lock {}); exiting",
                SchedulerLock::holder(&lock_dir).map_or(String::new(), |p| format!(" (pid {p})")),
                store.location(),
                path.display()
            ),
        ),
        e => e.into(),
    })?;

    for j in &ctx.config.jobs {
        if !formats_of(j.kind).is_empty() {
            quiet.refuse_exports_of_servers(&format!(
                "[[schedule.jobs]] {:?} has type {}",
                j.name,
                j.kind.name()
            ))?;
        }
    }
    let base = quiet.db_manager(true)?;
    let mut runner = ManagerRunner::new(base.clone());
    for j in &ctx.config.jobs {
        let formats = formats_of(j.kind);
        let mut managers: Vec<SnapshotManager> = Vec::new();
        if matches!(j.kind, SnapshotType::Db | SnapshotType::All) {
            managers.push(base.clone());
        }
        if !formats.is_empty() {
            managers.push(quiet.export_manager(&formats, None, true)?);
        }
        runner = runner.job_managers(j.name.clone(), managers);
        if let Some(r) = &j.retention {
            runner = runner.job_retention(j.name.clone(), r.policy()?);
        }
    }

    let log = match &ctx.config.schedule_log {
        Some(p) => Some(ActivityLog::new(
            p,
            ctx.config.schedule_log_max,
            ctx.config.schedule_log_keep,
        )?),
        None => None,
    };
    let emitter = Arc::new(Mutex::new(Emitter {
        json: ctx.json,
        log,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| CliError::new(ExitStatus::Error, "signals", e.to_string()))?;
    let handle = signals.handle();
    let watcher = {
        let stop = stop.clone();
        let emitter = emitter.clone();
        let in_flight = in_flight.clone();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let name = if sig == signal_hook::consts::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                let job = in_flight.lock().map(|j| j.clone()).unwrap_or(None);
                let line = match job {
                    Some(j) => format!(
                        "received {name}: finishing the snapshot in flight (job {j}), then stopping"
                    ),
                    None => format!("received {name}: stopping"),
                };
                if let Ok(e) = emitter.lock() {
                    e.note(&line);
                }
                stop.store(true, Ordering::SeqCst);
            }
        })
    };

    let mut scheduler = Scheduler::new(jobs, tz, Utc::now())?.run_now_on_start(a.run_now);
    let mut on_event = |e: &Event| {
        if let Ok(mut j) = in_flight.lock() {
            *j = match e {
                Event::Running { job, .. } => Some(job.clone()),
                _ => None,
            };
        }
        if let Ok(em) = emitter.lock() {
            em.event(e);
        }
    };
    if a.once {
        scheduler.start(&SystemClock, &mut runner, &mut on_event, &stop);
        on_event(&Event::Stopped {
            at: Utc::now(),
            reason: "--once".into(),
        });
    } else {
        scheduler.serve(&SystemClock, &mut runner, &mut on_event, &stop);
    }
    handle.close();
    let _ = watcher.join();
    Ok(())
}

/// Free bytes for unprivileged users on the file system of `path` (or its nearest existing
/// ancestor).
fn disk_free(path: &Path) -> Option<u64> {
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.exists() {
            let s = rustix::fs::statvfs(dir).ok()?;
            return Some(s.f_bavail.saturating_mul(s.f_frsize));
        }
        p = dir.parent();
    }
    None
}

fn db_stats(ctx: &Ctx) -> Result<snapshot::stats::DbStats, Error> {
    // The database's own source: statistics need no store.
    ctx.configured_source(true, None)?.statistics(
        ctx.config.status_table.as_deref(),
        ctx.config.status_order_by.as_deref(),
    )
}

pub(crate) fn status(ctx: &Ctx) -> CliResult {
    let remote = ctx.config.remote_store().map(str::to_string);
    let store_dir = match &remote {
        Some(url) => PathBuf::from(url),
        None => ctx.config.store_dir()?.to_path_buf(),
    };
    // A bucket exists when it opens (a missing bucket is an error, not "not created yet").
    let exists = remote.is_some() || store_dir.is_dir();
    let (st, records) = if exists {
        let m = ctx.db_manager(false)?;
        (Some(m.status()?), m.list(&ListFilter::new())?)
    } else {
        (None, Vec::new())
    };
    let mut by_type: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    for r in &records {
        let e = by_type.entry(r.source_kind.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(r.size_bytes); // a damaged catalog may claim any size
    }
    let free = if remote.is_some() {
        None
    } else {
        disk_free(&store_dir)
    };
    let scheduler = if exists {
        SchedulerLock::held(&ctx.lock_dir()?)
    } else {
        None
    };
    let now = Utc::now();
    let next_runs: Vec<(String, Option<chrono::DateTime<Utc>>)> = ctx
        .config
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.cron.next_after(now, ctx.config.timezone)))
        .collect();
    let next = next_runs
        .iter()
        .filter_map(|(n, t)| t.map(|t| (n.clone(), t)))
        .min_by_key(|(_, t)| *t);
    let stats = if ctx.config.has_database() {
        Some(db_stats(ctx))
    } else {
        None
    };
    if let Some(Err(e)) = &stats
        && matches!(
            e,
            Error::InvalidInput {
                field: "table" | "order_by",
                ..
            }
        )
    {
        // The user asked for a table that is not there: that is an answer, not a footnote.
        return Err(CliError::from(invalid("table", e.to_string())));
    }

    if ctx.json {
        let store = st.as_ref().map(|s| {
            json!({
                "location": s.store, "exists": true, "enabled": s.enabled,
                "disabled_reason": s.disabled_reason, "environment": s.environment,
                "count": s.count, "total_bytes": s.total_bytes,
                "by_type": by_type.iter().map(|(k, (n, b))| (k.clone(), json!({"count": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
                "by_operation": s.by_operation.iter().map(|(k, v)| (k.clone(), json!({"count": v.count, "bytes": v.bytes}))).collect::<serde_json::Map<_, _>>(),
                "pinned": s.pinned, "oldest": s.oldest, "newest": s.newest,
                "last_verified": s.last_verified, "retention": s.retention.to_string(),
                "disk_free_bytes": free,
                "storage": s.storage.map(|u| json!({
                    "logical_bytes": u.logical_bytes, "stored_bytes": u.stored_bytes,
                    "dedup_ratio": u.ratio(), "packs": u.packs,
                })),
                "replica": s.replication.as_ref().map(|r| json!({
                    "location": r.replica, "pending": r.pending, "queued": r.queued,
                    "last_error": r.last_error,
                })),
            })
        }).unwrap_or_else(|| json!({ "location": store_dir, "exists": false, "disk_free_bytes": free }));
        let database = match &stats {
            None => serde_json::Value::Null,
            Some(Ok(s)) => serde_json::to_value(s).unwrap_or_default(),
            Some(Err(e)) => json!({ "error": e.to_string() }),
        };
        return output::json(&json!({
            "store": store,
            "database": database,
            "schedule": {
                "running_pid": scheduler.flatten(),
                "running": scheduler.is_some(),
                "jobs": next_runs.iter().map(|(n, t)| json!({"name": n, "next": t})).collect::<Vec<_>>(),
                "next": next.as_ref().map(|(n, t)| json!({"job": n, "at": t})),
            },
        }));
    }

    println!("SNAPSHOT STATUS");
    println!();
    match &st {
        Some(s) => {
            let types = by_type
                .iter()
                .map(|(k, (n, b))| format!("{k}: {n} ({})", bytes(*b)))
                .collect::<Vec<_>>()
                .join(", ");
            let ops = s
                .by_operation
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.count))
                .collect::<Vec<_>>()
                .join(", ");
            pairs(&[
                ("store", s.store.clone()),
                (
                    "snapshots",
                    if s.enabled {
                        "enabled".into()
                    } else {
                        format!(
                            "DISABLED: {}",
                            s.disabled_reason.clone().unwrap_or_default()
                        )
                    },
                ),
                ("count", format!("{} ({} pinned)", s.count, s.pinned)),
                ("total size", bytes(s.total_bytes)),
                ("by type", if types.is_empty() { "-".into() } else { types }),
                (
                    "by operation",
                    if ops.is_empty() { "-".into() } else { ops },
                ),
                ("oldest", opt_time(s.oldest)),
                ("newest", opt_time(s.newest)),
                ("last verified", opt_time(s.last_verified)),
                ("retention", s.retention.to_string()),
                (
                    "stored",
                    s.storage.map_or("each snapshot its size".into(), |u| {
                        format!(
                            "{} for {} of snapshots (dedup {:.2}x, {} packs)",
                            bytes(u.stored_bytes),
                            bytes(u.logical_bytes),
                            u.ratio(),
                            u.packs
                        )
                    }),
                ),
                ("disk free", free.map_or("-".into(), bytes)),
            ]);
            if let Some(r) = &s.replication {
                let state = match (r.pending.len(), &r.last_error) {
                    (0, _) => "every snapshot copied".to_string(),
                    (n, Some(e)) => format!("{n} objects not yet copied (last error: {e})"),
                    (n, None) => format!("{n} objects not yet copied"),
                };
                pairs(&[("replica", format!("{}: {state}", r.replica))]);
            }
        }
        None => pairs(&[
            (
                "store",
                format!("{} (not created yet)", store_dir.display()),
            ),
            ("disk free", free.map_or("-".into(), bytes)),
        ]),
    }
    println!();
    let sched = match (&scheduler, &next) {
        (Some(pid), _) => format!(
            "running{}",
            pid.map_or(String::new(), |p| format!(" (pid {p})"))
        ),
        (None, _) if ctx.config.jobs.is_empty() => "no jobs configured".into(),
        (None, _) => "not running".into(),
    };
    let mut rows = vec![("scheduler", sched)];
    if let Some((job, t)) = &next {
        rows.push(("next run", format!("{} ({job})", output::time(*t))));
    }
    pairs(&rows);
    if let Some(stats) = stats {
        println!();
        match stats {
            Err(e) => println!("database statistics unavailable: {e}"),
            Ok(s) => print_db_stats(&s),
        }
    }
    Ok(())
}

fn print_db_stats(s: &snapshot::stats::DbStats) {
    pairs(&[
        ("database", format!("{} ({})", s.path.display(), s.engine)),
        (
            if s.engine == "postgres" {
                "size"
            } else if s.files.is_empty() {
                "file size"
            } else {
                "files' size"
            },
            bytes(s.file_bytes),
        ),
    ]);
    if !s.files.is_empty() {
        println!();
        let mut t = Table::new(&["TYPE", "FILES", "BYTES"]);
        for g in &s.files {
            t.row(vec![g.group.clone(), g.files.to_string(), bytes(g.bytes)]);
        }
        t.print();
    }
    if !s.tables.is_empty() {
        println!();
        let mut t = Table::new(&["TABLE", "ROWS"]);
        for c in &s.tables {
            t.row(vec![c.name.clone(), c.rows.to_string()]);
        }
        t.print();
    }
    if let Some(ts) = &s.table {
        println!();
        println!("{}: {} rows", ts.table, ts.rows);
        let mut t = Table::new(&["COLUMN", "COUNT", "MIN", "MAX", "AVG"]);
        let show = |v: &Option<serde_json::Value>| v.as_ref().map_or("-".into(), |v| v.to_string());
        for c in &ts.columns {
            t.row(vec![
                c.name.clone(),
                c.count.to_string(),
                show(&c.min),
                show(&c.max),
                c.avg.map_or("-".into(), |a| format!("{a:.2}")),
            ]);
        }
        if !t.is_empty() {
            t.print();
        }
        match &ts.latest {
            Some(row) => {
                println!();
                println!("latest row (by {}):", ts.order_by);
                let items: Vec<(&str, String)> = row
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str(),
                            match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            },
                        )
                    })
                    .collect();
                pairs(&items);
            }
            None => println!("no rows"),
        }
    }
}
