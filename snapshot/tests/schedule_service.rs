//! `snapshot schedule` as a real process: SIGTERM in the middle of a snapshot finishes it and
//! leaves no partial state; a second scheduler on the same store exits; jobs, the interval gate,
//! per-job retention and the activity log.
#![cfg(all(feature = "cli", feature = "sqlite"))]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rusqlite::Connection;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");

fn command(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env_remove("SNAPSHOT_CONFIG")
        .env_remove("SNAPSHOT_DB")
        .env_remove("SNAPSHOT_STORE")
        .env_remove("SNAPSHOT_ENGINE")
        .env_remove("SNAPSHOT_TABLE")
        .stdin(Stdio::null());
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn setup(journal: &str, config: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("plant.db");
    let c = Connection::open(&db)?;
    c.query_row(&format!("PRAGMA journal_mode={journal}"), [], |_| Ok(()))?;
    c.execute_batch(
        "CREATE TABLE readings (id INTEGER PRIMARY KEY, water REAL, ts TEXT);
         INSERT INTO readings (water, ts) VALUES (24.5, '2025-01-11 14:30:22');",
    )?;
    std::fs::write(
        dir.path().join("snapshot.toml"),
        format!("[database]\npath = \"plant.db\"\n[store]\ndir = \"backups\"\n{config}"),
    )?;
    Ok((dir, db))
}

/// A running scheduler whose stdout lines arrive on a channel.
struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Service {
    fn start(dir: &Path, args: &[&str]) -> Result<Service> {
        let mut child = command(dir)
            .arg("schedule")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Service {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line containing `needle`.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "no line with {needle:?} within {limit:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()?
            .success();
        ensure!(ok, "kill -{sig} failed");
        Ok(())
    }

    /// Waits for the process to exit; returns its code and every stdout line.
    fn finish(mut self, limit: Duration) -> Result<(i32, Vec<String>)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return Ok((status.code().unwrap_or(-1), self.seen));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!(
                    "the scheduler did not exit within {limit:?}; saw {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn store_files(store: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(store)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

#[test]
fn sigterm_in_the_middle_of_a_snapshot_finishes_it_and_leaves_no_partial_state() -> Result<()> {
    let (dir, db) = setup(
        "DELETE",
        "[[schedule.jobs]]\nname = \"nightly\"\ncron = \"daily\"\ntype = \"db\"\n",
    )?;
    // Hold the database exclusively: the scheduled snapshot starts and waits, in flight.
    let holder = Connection::open(&db)?;
    holder.execute_batch(
        "BEGIN EXCLUSIVE; INSERT INTO readings (water, ts) VALUES (25.0, 'held');",
    )?;

    let mut svc = Service::start(dir.path(), &["--run-now"])?;
    svc.wait_for("job nightly: running", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(300));
    svc.signal("TERM")?;
    svc.wait_for(
        "received SIGTERM: finishing the snapshot in flight (job nightly)",
        Duration::from_secs(10),
    )?;
    // Let the snapshot through: it must complete, then the scheduler stops.
    holder.execute_batch("COMMIT")?;
    drop(holder);
    let (code, lines) = svc.finish(Duration::from_secs(60))?;
    assert_eq!(code, 0, "{lines:?}");
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let (signal, took, stopped) = (
        pos("received SIGTERM").context("signal line")?,
        pos("job nightly: took").context("the snapshot in flight finished")?,
        pos("scheduler stopped").context("stop line")?,
    );
    assert!(signal < took && took < stopped, "{lines:?}");

    // The snapshot is complete and verified; nothing partial is left.
    let store = dir.path().join("backups");
    let names = store_files(&store)?;
    assert!(
        !names.iter().any(|n| n.starts_with(".snapshot-staging-")),
        "{names:?}"
    );
    let listed = command(dir.path()).args(["--json", "list"]).output()?;
    let records: Value = serde_json::from_slice(&listed.stdout).with_context(|| text(&listed))?;
    assert_eq!(records.as_array().map(Vec::len), Some(1));
    assert_eq!(records[0]["operation_type"], "scheduled");
    assert_eq!(records[0]["entity_type"], "nightly");
    let id = records[0]["snapshot_id"].as_str().context("id")?;
    let verify = command(dir.path())
        .args(["verify", "--full", id])
        .output()?;
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let doctor = command(dir.path())
        .args(["doctor", "--min-age", "0s"])
        .output()?;
    assert_eq!(doctor.status.code(), Some(0), "{}", text(&doctor));
    // The snapshot holds the row committed before it was let through.
    let copy = dir.path().join("copy.db");
    let r = command(dir.path())
        .args(["restore", id, "--to"])
        .arg(&copy)
        .output()?;
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let n: i64 =
        Connection::open(&copy)?.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?;
    assert_eq!(n, 2);

    // The activity log has the same story.
    let log = std::fs::read_to_string(dir.path().join("backups.log"))?;
    assert!(
        log.contains("received SIGTERM") && log.contains("job nightly: took"),
        "{log}"
    );
    Ok(())
}

#[test]
fn a_second_scheduler_on_the_same_store_says_so_and_exits() -> Result<()> {
    let (dir, _db) = setup(
        "WAL",
        "[[schedule.jobs]]\nname = \"hourly\"\ncron = \"hourly\"\n",
    )?;
    let mut first = Service::start(dir.path(), &[])?;
    first.wait_for("scheduler started", Duration::from_secs(30))?;

    let second = command(dir.path()).arg("schedule").output()?;
    assert_eq!(second.status.code(), Some(5), "{}", text(&second));
    let msg = text(&second);
    assert!(
        msg.contains("another scheduler") && msg.contains("already running"),
        "{msg}"
    );
    assert!(msg.contains(&format!("pid {}", first.child.id())), "{msg}");

    let status = command(dir.path()).args(["--json", "status"]).output()?;
    let v: Value = serde_json::from_slice(&status.stdout).with_context(|| text(&status))?;
    assert_eq!(v["schedule"]["running"], true);
    assert_eq!(v["schedule"]["running_pid"], first.child.id());
    assert_eq!(v["schedule"]["jobs"][0]["name"], "hourly");
    assert!(v["schedule"]["next"]["at"].is_string());

    // Idle, it stops at once on SIGINT (Ctrl-C) too.
    first.signal("INT")?;
    let (code, lines) = first.finish(Duration::from_secs(10))?;
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("received SIGINT: stopping")),
        "{lines:?}"
    );
    let again = command(dir.path()).args(["schedule", "--once"]).output()?;
    assert_eq!(
        again.status.code(),
        Some(0),
        "the lock went with the first: {}",
        text(&again)
    );
    Ok(())
}

#[test]
fn jobs_run_with_their_type_interval_gate_and_own_retention() -> Result<()> {
    let (dir, _db) = setup(
        "WAL",
        "[schedule]\nlog = \"logs/activity.log\"\n\n\
         [[schedule.jobs]]\nname = \"hourly\"\ncron = \"hourly\"\ntype = \"db\"\nmin_interval = \"1h\"\n\n\
         [[schedule.jobs]]\nname = \"exports\"\ncron = \"*/30 * * * *\"\ntype = \"csv\"\nretention = { keep_last = 1 }\n",
    )?;
    let listed = command(dir.path())
        .args(["--json", "schedule", "--list"])
        .output()?;
    let jobs: Value = serde_json::from_slice(&listed.stdout).with_context(|| text(&listed))?;
    assert_eq!(jobs[0]["name"], "hourly");
    assert_eq!(jobs[1]["cron"], "*/30 * * * *");
    assert!(jobs[1]["next"].is_string());

    let run = |n: usize| -> Result<Vec<Value>> {
        let out = command(dir.path())
            .args(["--json", "schedule", "--run-now", "--once"])
            .output()?;
        ensure!(out.status.success(), "run {n}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| l.to_string()))
            .collect()
    };
    let first = run(1)?;
    let kinds: Vec<&str> = first.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        ["started", "running", "ran", "running", "ran", "stopped"]
    );
    let second = run(2)?;
    let skipped = second
        .iter()
        .find(|e| e["event"] == "skipped")
        .context("the hourly job is gated")?;
    assert_eq!(skipped["job"], "hourly");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|r| r.contains("backup not needed"))
    );
    assert!(
        second
            .iter()
            .any(|e| e["event"] == "ran" && e["job"] == "exports")
    );

    let out = command(dir.path()).args(["--json", "list"]).output()?;
    let records: Value = serde_json::from_slice(&out.stdout)?;
    let kinds: Vec<&str> = records
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["source_kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["csv", "sqlite"],
        "the exports job keeps its last one only"
    );

    let log = std::fs::read_to_string(dir.path().join("logs/activity.log"))?;
    assert!(log.contains("job hourly: backup not needed"), "{log}");
    assert_eq!(log.matches("scheduler started").count(), 2, "{log}");

    let none = tempfile::tempdir()?;
    std::fs::write(
        none.path().join("snapshot.toml"),
        "[database]\npath = \"x.db\"\n",
    )?;
    let no_jobs = command(none.path()).arg("schedule").output()?;
    assert_eq!(no_jobs.status.code(), Some(2), "{}", text(&no_jobs));
    Ok(())
}
