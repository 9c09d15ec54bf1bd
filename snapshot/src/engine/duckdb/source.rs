//! [`DuckDbSource`]: snapshots of a DuckDB database file.
//!
//! DuckDB lets one process own a database file. The source therefore works through a
//! connection: its own (opened for the duration of a snapshot when the file is closed) or one
//! cloned from the application's connection ([`DuckDbSource::with_connection`]), which shares
//! the application's database instance. A snapshot runs `CHECKPOINT` (folding the `.wal` into the
//! file: a leftover log is never dropped; DuckDB refuses it while a transaction that updated rows
//! is open, so it is retried within the [`BusyBudget`]), opens a transaction and copies the file.
//! The file's headers are read before and after the copy; if a checkpoint (an automatic one can
//! run beside a reader) rewrote them in between, the copy is retried. This costs about 1.13× a
//! durable copy, where `EXPORT DATABASE` costs about 10× and `COPY FROM DATABASE` 16×.
//!
//! A file that this process already has open is refused by [`DuckDbSource::new`]: POSIX locks do
//! not stop a second DuckDB instance within one process, and it would checkpoint behind the first
//! one's back. Use [`DuckDbSource::with_connection`] there.
//!
//! Record-level sessions ([`table`](crate::table)) work through the same connection: a clone of
//! the application's, or — for a closed file — one instance that the source opens for them and
//! shares with its own snapshots (the safety snapshot taken during a table restore) while any
//! session holds it, so the file is never opened twice by this process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duckdb::{AccessMode, Config, Connection};

use crate::engine::duckdb::instance::{Held, Hold, lock};
use crate::engine::duckdb::session::DuckSession;
use crate::engine::duckdb::{KIND, error as duck_error, stats};
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::Replacement;
use crate::source::live_file::LiveFile;
use crate::source::{BusyBudget, CheckLevel, Source, describe_holders, processes_holding};
use crate::stats::DbStats;
use crate::table::TableReplacement;
use crate::table::session::{Side, TableSession};

/// Bytes at the start of a DuckDB file that change whenever a checkpoint rewrites it (the main
/// header and the two alternating database headers).
const HEADERS: usize = 3 * 4096;

/// A DuckDB database file.
#[derive(Debug)]
pub struct DuckDbSource {
    path: PathBuf,
    conn: Option<Mutex<Connection>>,
    busy: BusyBudget,
    held: Arc<Mutex<Held>>,
}

impl DuckDbSource {
    /// A source for a database file that no connection of this process holds; each snapshot
    /// opens it briefly (which also takes DuckDB's file lock, keeping other processes out).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DuckDbSource {
            path: path.into(),
            conn: None,
            busy: BusyBudget::default(),
            held: Arc::default(),
        }
    }

    /// A source working through the application's open database: `conn` is cloned
    /// (`try_clone`), so the source shares the application's database instance.
    ///
    /// # Errors
    /// [`Error::Engine`] when the connection cannot be cloned.
    pub fn with_connection(path: impl Into<PathBuf>, conn: &Connection) -> Result<Self> {
        let path = path.into();
        let own = conn.try_clone().map_err(|e| Error::Engine {
            engine: KIND,
            op: "clone connection",
            path: path.clone(),
            detail: e.to_string(),
        })?;
        Ok(DuckDbSource {
            path,
            conn: Some(Mutex::new(own)),
            busy: BusyBudget::default(),
            held: Arc::default(),
        })
    }

    /// Sets the retry budget used while the application's open transactions keep DuckDB from
    /// checkpointing (default: 50 attempts, pauses up to 200 ms).
    pub fn busy_budget(mut self, budget: BusyBudget) -> Self {
        self.busy = budget;
        self
    }

    /// A connection on the live database for a record-level session: a clone of the
    /// application's connection ([`with_connection`](Self::with_connection)), else of the
    /// instance this source keeps open for its sessions — opening the file when no session
    /// holds it — with the [`Hold`] that keeps that instance open.
    ///
    /// # Errors
    /// [`Error::SourceMissing`], [`Error::NotADatabase`]; [`Error::InvalidInput`] when the file
    /// is open in this process by another instance; [`Error::TargetLocked`] when another
    /// process holds it; engine errors.
    pub(crate) fn session_connection(&self) -> Result<(Connection, Option<Hold>)> {
        if let Some(conn) = &self.conn {
            let clone = lock(conn)
                .try_clone()
                .map_err(|e| self.err("clone connection", e))?;
            return Ok((clone, None));
        }
        let mut held = lock(&self.held);
        let conn = match held.conn.take() {
            Some(c) => c,
            None => {
                Self::check_magic(&self.path)?;
                self.refuse_second_instance()?;
                Connection::open(&self.path).map_err(|e| self.err("open", e))?
            }
        };
        let clone = conn
            .try_clone()
            .map_err(|e| self.err("clone connection", e));
        held.conn = Some(conn);
        let clone = clone?;
        held.users += 1;
        Ok((
            clone,
            Some(Hold {
                held: Arc::clone(&self.held),
            }),
        ))
    }

    /// POSIX locks do not keep a second DuckDB instance of this process off the file: opening
    /// it beside the application's own instance would checkpoint behind that instance's back.
    fn refuse_second_instance(&self) -> Result<()> {
        if processes_holding(&self.path).contains(&std::process::id()) {
            return Err(Error::invalid(
                "source",
                format!(
                    "{} is open in this process: snapshot it through the application's \
                     connection with DuckDbSource::with_connection(path, &conn)",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    fn err(&self, op: &'static str, e: duckdb::Error) -> Error {
        duck_error(&self.path, op, e)
    }

    fn check_magic(path: &Path) -> Result<()> {
        let f = LiveFile::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::SourceMissing {
                    kind: KIND,
                    path: path.to_path_buf(),
                }
            } else {
                Error::io("open", path, e)
            }
        })?;
        let head = f.read_prefix(12).map_err(|e| Error::io("read", path, e))?;
        let ok = head.len() == 12 && &head[8..12] == b"DUCK";
        if ok {
            Ok(())
        } else {
            Err(Error::NotADatabase {
                engine: KIND,
                path: path.to_path_buf(),
                detail: "the file does not carry the DuckDB magic bytes".into(),
            })
        }
    }

    /// `CHECKPOINT`, retried within the busy budget while the application has a write
    /// transaction open (DuckDB refuses to checkpoint then rather than wait).
    fn checkpoint(&self, conn: &Connection) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match conn.execute_batch("CHECKPOINT") {
                Ok(()) => return Ok(()),
                Err(e) if is_checkpoint_busy(&e) && attempts < self.busy.attempts => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(self.busy.max_pause);
                }
                Err(e) if is_checkpoint_busy(&e) => {
                    return Err(Error::Busy {
                        path: self.path.clone(),
                        attempts,
                        waited_ms: start.elapsed().as_millis() as u64,
                        detail: format!("checkpoint: {e}"),
                    });
                }
                Err(e) => return Err(self.err("checkpoint", e)),
            }
        }
    }

    fn copy_consistent(&self, conn: &Connection, dest: &Path) -> Result<()> {
        self.checkpoint(conn)?;
        for attempt in 0..self.busy.attempts.max(1) {
            conn.execute_batch("BEGIN TRANSACTION; SELECT 1 FROM duckdb_tables() LIMIT 1")
                .map_err(|e| self.err("begin transaction", e))?;
            // Through the shared descriptor: closing one of our own would drop the POSIX lock
            // DuckDB holds on the file in this process (see `live_file`).
            let live = LiveFile::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
            let before = read_headers(&live, &self.path)?;
            let copied = fs_util::copy_open_to_new(live.file(), &self.path, dest);
            let after = read_headers(&live, &self.path);
            let _ = conn.execute_batch("COMMIT");
            copied?;
            if after? == before {
                return Ok(());
            }
            fs_util::remove_if_exists(dest)?;
            std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(7)));
        }
        Err(Error::Busy {
            path: self.path.clone(),
            attempts: self.busy.attempts,
            waited_ms: 0,
            detail: "checkpoints kept rewriting the file during the copy".into(),
        })
    }
}

/// Whether DuckDB refused a checkpoint only because other write transactions are active.
fn is_checkpoint_busy(e: &duckdb::Error) -> bool {
    e.to_string()
        .contains("Cannot CHECKPOINT: there are other write transactions active")
}

fn read_headers(live: &LiveFile, path: &Path) -> Result<Vec<u8>> {
    live.read_prefix(HEADERS)
        .map_err(|e| Error::io("read", path, e))
}

fn open_read_only(path: &Path) -> Result<Connection> {
    let config = Config::default()
        .access_mode(AccessMode::ReadOnly)
        .map_err(|e| duck_error(path, "configure", e))?;
    Connection::open_with_flags(path, config).map_err(|e| duck_error(path, "open read-only", e))
}

impl Source for DuckDbSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn extension(&self) -> &str {
        "duckdb"
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        match &self.conn {
            Some(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                self.copy_consistent(&conn, dest)
            }
            None => {
                // Held for the whole copy: no session opens the file meanwhile.
                let held = lock(&self.held);
                if let Some(open) = &held.conn {
                    // A record-level session holds the file (a table restore's safety
                    // snapshot): copy through its instance.
                    let conn = open
                        .try_clone()
                        .map_err(|e| self.err("clone connection", e))?;
                    return self.copy_consistent(&conn, dest);
                }
                Self::check_magic(&self.path)?;
                self.refuse_second_instance()?;
                // Opening replays a leftover .wal; CHECKPOINT then folds it into the file.
                let conn = Connection::open(&self.path).map_err(|e| self.err("open", e))?;
                self.copy_consistent(&conn, dest)
            }
        }
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        Self::check_magic(image)?;
        if level == CheckLevel::Header {
            return Ok(());
        }
        let conn = open_read_only(image)?;
        let tables: Vec<(String, String)> = (|| {
            let mut stmt =
                conn.prepare("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY 1, 2")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<duckdb::Result<Vec<_>>>()
        })()
        .map_err(|e| duck_error(image, "read catalog", e))?;
        if level == CheckLevel::Full {
            for (schema, table) in tables {
                let q = format!(
                    "SELECT count(*) FROM \"{}\".\"{}\"",
                    schema.replace('"', "\"\""),
                    table.replace('"', "\"\"")
                );
                conn.query_row(&q, [], |r| r.get::<_, i64>(0))
                    .map_err(|e| duck_error(image, "read table", e))?;
            }
        }
        Ok(())
    }

    fn prepare_replace(&self) -> Result<()> {
        // With the application's connection the restore goes through it (`begin_restore`).
        if !self.path.exists() {
            return Ok(());
        }
        let holders = processes_holding(&self.path);
        if !holders.is_empty() {
            let what = if holders.contains(&std::process::id()) {
                "restore through the application's connection (DuckDbSource::with_connection)"
            } else {
                "close it there before restoring"
            };
            return Err(Error::TargetLocked {
                path: self.path.clone(),
                detail: format!("{}; {what}", describe_holders(&holders)),
            });
        }
        if Self::check_magic(&self.path).is_ok() {
            // Fold any log so that nothing of the present state lives only in the .wal.
            let conn = Connection::open(&self.path).map_err(|e| self.err("open", e))?;
            self.checkpoint(&conn)?;
        }
        Ok(())
    }

    fn companions(&self) -> Vec<PathBuf> {
        // The log, and the logs DuckDB keeps while a checkpoint runs and while it recovers
        // from a crashed one: all belong to the replaced data.
        [".wal", ".wal.checkpoint", ".wal.recovery"]
            .iter()
            .map(|suffix| {
                let mut s = self.path.as_os_str().to_owned();
                s.push(suffix);
                PathBuf::from(s)
            })
            .collect()
    }

    fn begin_restore(
        &self,
        image: &Path,
        snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        // The application holds the database (one instance per file): the restore goes through
        // its connection, every table of the snapshot replaced in one transaction, so the
        // application sees the restored data at its next statement and never a swapped file.
        if self.conn.is_none() {
            return Ok(None);
        }
        let TableSession(mut session) = self.open_tables(image, true)?;
        let tables = session.tables(Side::Snapshot)?;
        Ok(Some(Box::new(TableReplacement::new(
            self,
            session,
            snapshot_id,
            &tables,
        )?)))
    }

    fn open_tables(&self, image: &Path, _write: bool) -> Result<TableSession> {
        // DuckDB opens the live file read-write either way.
        let (conn, hold) = self.session_connection()?;
        let session = DuckSession::open(image, Some((conn, hold, self.path.clone())))?;
        Ok(TableSession(Box::new(session)))
    }

    fn statistics(&self, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
        stats::stats(&self.path, table, order_by)
    }
}
