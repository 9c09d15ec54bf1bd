//! A whole restore of a SQLite database that is open — in this process (an application
//! restoring from its own dashboard) or in another — goes into the live database through the
//! backup API: the holders' connections see the restored data, a safety snapshot comes first,
//! and a holder that keeps a write transaction open makes it a typed error with nothing changed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rusqlite::Connection;
use snapshot::{
    BusyBudget, Environment, Error, ListFilter, LocalStore, SnapshotManager, SnapshotOutcome,
    SnapshotRecord, SnapshotRequest, SqliteSource,
};

struct Fixture {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Fixture {
    fn new(journal: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let conn = Connection::open(&db)?;
        conn.query_row(&format!("PRAGMA journal_mode={journal}"), [], |_| Ok(()))?;
        conn.execute_batch(
            "CREATE TABLE measure(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO measure(id, name) VALUES (1, 'hedges'), (2, 'ponds'), (42, 'meadows');",
        )?;
        Ok(Fixture { db, dir })
    }

    fn manager(&self, budget: BusyBudget) -> Result<SnapshotManager> {
        Ok(SnapshotManager::builder()
            .source(SqliteSource::new(&self.db).busy_budget(budget))
            .store(LocalStore::open(self.dir.path().join("backups"))?)
            .environment(Environment::persistent())
            .build()?)
    }

    /// Files left beside the database by a restore (staging names).
    fn leftovers(&self) -> Result<Vec<String>> {
        Ok(std::fs::read_dir(self.dir.path())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(snapshot::store::STAGING_PREFIX))
            .collect())
    }
}

fn names(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM measure ORDER BY id")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

fn take(m: &SnapshotManager, op: &str) -> Result<SnapshotRecord> {
    match m.snapshot(SnapshotRequest::new(op))? {
        SnapshotOutcome::Taken(r) => Ok(r),
        other => bail!("expected a snapshot, got {other:?}"),
    }
}

/// A `sqlite_writer` process holding the database in `mode` (`query` or `lock`), ready.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn start(db: &Path, mode: &str) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sqlite_writer"))
            .arg(db)
            .arg("60")
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut h = Holder {
            child,
            stdin,
            stdout,
        };
        let line = h.line()?;
        ensure!(line == "ready", "holder said {line:?}");
        Ok(h)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        ensure!(self.stdout.read_line(&mut line)? > 0, "the holder exited");
        Ok(line.trim_end().to_string())
    }

    /// Runs a query on the holder's own connection: the first column of its rows.
    fn query(&mut self, sql: &str) -> Result<String> {
        let stdin = self.stdin.as_mut().context("stdin")?;
        writeln!(stdin, "{sql}")?;
        stdin.flush()?;
        self.line()
    }

    fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "holder: {status}");
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_application_restores_its_own_open_database() -> Result<()> {
    for journal in ["WAL", "DELETE"] {
        let f = Fixture::new(journal)?;
        // The README's attribute example: the application keeps its connection open.
        let app = Connection::open(&f.db)?;
        let m = f.manager(BusyBudget::default())?;
        let r = take(&m, "manual")?;
        app.execute("DELETE FROM measure WHERE id = 1", [])?;
        app.execute("INSERT INTO measure(id, name) VALUES (7, 'scrub')", [])?;
        let before = names(&app)?;

        let report = m.restore(&r.snapshot_id)?;
        let steps = report.steps.join("\n");
        ensure!(
            steps.contains("backup API") && steps.contains("held by this process"),
            "{journal}: steps: {steps}"
        );
        // The application's own connection sees the restored rows at once.
        assert_eq!(names(&app)?, ["hedges", "ponds", "meadows"], "{journal}");
        app.execute("INSERT INTO measure(id, name) VALUES (8, 'after')", [])?;
        // The safety snapshot holds the state the restore replaced.
        let safety = report.safety_snapshot.context("a safety snapshot")?;
        let out = f.dir.path().join("present.db");
        m.restore_to(&safety, &out)?;
        assert_eq!(names(&Connection::open(&out)?)?, before, "{journal}");
        let journal_now: String = app.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        ensure!(journal_now.eq_ignore_ascii_case(journal), "{journal_now}");
        let check: String = app.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        ensure!(check == "ok", "{journal}: {check}");
        ensure!(f.leftovers()?.is_empty(), "{:?}", f.leftovers()?);
        assert_eq!(m.list(&ListFilter::new())?.len(), 2, "{journal}");
    }
    Ok(())
}

#[test]
fn another_process_holding_the_database_sees_the_restored_data() -> Result<()> {
    for journal in ["WAL", "DELETE"] {
        let f = Fixture::new(journal)?;
        let m = f.manager(BusyBudget::default())?;
        let r = take(&m, "manual")?;
        let mut holder = Holder::start(&f.db, "query")?;
        holder.query("DELETE FROM measure WHERE id = 42 RETURNING name")?;
        let q = "SELECT name FROM measure ORDER BY id";
        ensure!(holder.query(q)? == "hedges,ponds", "{journal}");

        let report = m.restore(&r.snapshot_id)?;
        let steps = report.steps.join("\n");
        let pid = holder.child.id().to_string();
        ensure!(
            steps.contains("backup API") && steps.contains(&pid),
            "{journal}: steps name the holder {pid}: {steps}"
        );
        assert_eq!(holder.query(q)?, "hedges,ponds,meadows", "{journal}");
        holder.query("INSERT INTO measure(id, name) VALUES (99, 'still writable') RETURNING id")?;
        holder.stop()?;
        assert_eq!(
            names(&Connection::open(&f.db)?)?,
            ["hedges", "ponds", "meadows", "still writable"]
        );
        ensure!(f.leftovers()?.is_empty());
    }
    Ok(())
}

#[test]
fn a_write_transaction_held_open_makes_the_restore_busy_and_changes_nothing() -> Result<()> {
    for journal in ["WAL", "DELETE"] {
        let f = Fixture::new(journal)?;
        let m = f.manager(BusyBudget {
            attempts: 5,
            max_pause: Duration::from_millis(20),
        })?;
        let r = take(&m, "manual")?;
        Connection::open(&f.db)?.execute("DELETE FROM measure WHERE id = 1", [])?;
        let holder = Holder::start(&f.db, "lock")?;
        let result = m.restore(&r.snapshot_id);
        holder.stop()?;
        match result {
            Err(Error::Busy { path, .. }) => ensure!(path == f.db, "{}", path.display()),
            other => bail!("{journal}: expected Busy, got {other:?}"),
        }
        assert_eq!(names(&Connection::open(&f.db)?)?, ["ponds", "meadows"]);
        assert_eq!(
            m.list(&ListFilter::new())?.len(),
            1,
            "{journal}: no safety snapshot for a restore that did not happen"
        );
        ensure!(f.leftovers()?.is_empty(), "{:?}", f.leftovers()?);
        // Once the transaction ends, the same restore goes through (the file is still held
        // by nobody now: a file swap).
        m.restore(&r.snapshot_id)?;
        assert_eq!(
            names(&Connection::open(&f.db)?)?,
            ["hedges", "ponds", "meadows"]
        );
    }
    Ok(())
}

#[test]
fn a_dry_run_on_an_open_database_says_how_and_changes_nothing() -> Result<()> {
    let f = Fixture::new("WAL")?;
    let app = Connection::open(&f.db)?;
    let m = f.manager(BusyBudget::default())?;
    let r = take(&m, "manual")?;
    app.execute("DELETE FROM measure WHERE id = 2", [])?;
    let report = m.restore_with(
        &r.snapshot_id,
        &snapshot::RestoreOptions::new().dry_run(true),
    )?;
    ensure!(report.dry_run);
    ensure!(
        report.steps.join("\n").contains("backup API"),
        "{:?}",
        report.steps
    );
    assert_eq!(names(&app)?, ["hedges", "meadows"]);
    assert_eq!(m.list(&ListFilter::new())?.len(), 1);
    Ok(())
}
