//! [`SqliteSource`]: consistent snapshots of a live SQLite database, at the speed of a file copy.
//!
//! The image is taken under a read transaction of our own connection, which is what makes a raw
//! copy safe while other connections and processes keep writing:
//! - rollback-journal modes: the read transaction's SHARED lock keeps writers from committing
//!   (they wait on their busy handler), so the main file is stable for the whole copy;
//! - WAL mode: the main file is copied raw while the read transaction pins the log — no
//!   checkpoint can write frames past our read mark into the main file and the log cannot be
//!   restarted — then every committed frame of the log is written over the copy
//!   ([`wal`](super::wal)). The result is the database as of the log's last commit,
//!   in one self-contained file that needs no `-wal` or `-shm`.
//!
//! This is about the cost of a `cp` of the file (the kernel's `copy_file_range`), where SQLite's
//! online backup API runs at about 2.3× that and `VACUUM INTO` at 2.6× (see the benchmark).
//! Busy and locked states are retried within a [`BusyBudget`], then reported as [`Error::Busy`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::engine::sqlite::image::open_image;
use crate::engine::sqlite::live::LiveReplacement;
use crate::engine::sqlite::{KIND, MAGIC, busy, error, session::SqliteSession, stats, wal};
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::live_file::LiveFile;
use crate::source::{
    BusyBudget, CheckLevel, Replacement, Source, describe_holders, processes_holding,
};
use crate::stats::DbStats;
use crate::table::session::TableSession;

/// Reads into `buf` at `off` until it is full or the file ends; returns the bytes read.
fn read_at_most(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What a capture reads as its read transaction begins (the transaction is `conn`'s).
struct ReadView {
    conn: Connection,
    wal: bool,
    page_size: u32,
    page_count: u32,
    frames: Option<u64>,
}

/// A SQLite database file, live or not.
#[derive(Debug, Clone)]
pub struct SqliteSource {
    path: PathBuf,
    busy: BusyBudget,
}

impl SqliteSource {
    /// A source for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteSource {
            path: path.into(),
            busy: BusyBudget::default(),
        }
    }

    /// Sets the retry budget used while other connections hold the database busy or locked.
    pub fn busy_budget(mut self, budget: BusyBudget) -> Self {
        self.busy = budget;
        self
    }

    fn companion(&self, suffix: &str) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }

    fn open_live(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match Connection::open_with_flags(&self.path, flags) {
            Ok(c) => c,
            Err(_) => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| error(&self.path, "open", e))?,
        };
        conn.busy_timeout(self.busy.max_pause)
            .map_err(|e| error(&self.path, "open", e))?;
        Ok(conn)
    }

    /// Runs `f` until it stops reporting busy/locked, within the budget.
    fn retry<T>(&self, op: &'static str, f: impl FnMut() -> rusqlite::Result<T>) -> Result<T> {
        busy::retry(&self.path, self.busy, op, f)
    }

    /// The processes holding the database or its log open.
    fn holders(&self) -> Vec<u32> {
        let mut pids = processes_holding(&self.path);
        pids.extend(processes_holding(&self.companion("-wal")));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Begins the read transaction a capture is taken under and reads what it needs: whether
    /// the database is in WAL mode, its page size and count, and how many frames the log holds
    /// as the transaction begins.
    fn begin_read(&self) -> Result<ReadView> {
        let conn = self.open_live()?;
        let wal_path = self.companion("-wal");
        let (wal, page_size, page_count, frames) = self.retry("begin read transaction", || {
            conn.execute_batch("BEGIN DEFERRED")?;
            let r = (|| {
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                let page_count: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                // The log as the transaction found it: what is appended later is newer.
                let frames = wal::frames_now(&wal_path, page_size);
                Ok((
                    mode.eq_ignore_ascii_case("wal"),
                    page_size,
                    page_count,
                    frames,
                ))
            })();
            if r.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            r
        })?;
        Ok(ReadView {
            conn,
            wal,
            page_size,
            page_count,
            frames,
        })
    }

    /// The committed pages of the log (WAL mode) and the database's size in pages, under the
    /// read transaction of `view`.
    fn overlay(&self, view: &ReadView) -> Result<(Option<wal::WalOverlay>, u32)> {
        if !view.wal {
            return Ok((None, view.page_count));
        }
        let o = wal::read_committed(&self.companion("-wal"), view.page_size, view.frames)?;
        let pages = o.db_pages.unwrap_or(view.page_count);
        Ok((Some(o), pages))
    }

    fn check_header(&self, path: &Path) -> Result<()> {
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
        let head = f.read_prefix(16).map_err(|e| Error::io("read", path, e))?;
        let got = head.len();
        if got == 0 {
            return Ok(()); // SQLite treats an empty file as an empty database
        }
        if got < 16 || head.as_slice() != MAGIC {
            return Err(Error::NotADatabase {
                engine: KIND,
                path: path.to_path_buf(),
                detail: "the file does not start with the SQLite header".into(),
            });
        }
        Ok(())
    }
}

impl Source for SqliteSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn extension(&self) -> &str {
        "sqlite3"
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        self.check_header(&self.path)?;
        // The read transaction: held until the copy and the log are read.
        let view = self.begin_read()?;
        let (page_size, page_count) = (view.page_size, view.page_count);
        // Through the shared descriptor: closing a descriptor of our own would drop every lock
        // this process's connections hold on the file (see `live_file`).
        let live = LiveFile::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        fs_util::copy_open_to_new(live.file(), &self.path, dest)?;
        let (overlay, pages) = self.overlay(&view)?;
        // Everything the image needs has been read: let writers and checkpoints go on.
        let _ = view.conn.execute_batch("COMMIT");
        drop(view);
        drop(live);

        let out = OpenOptions::new()
            .write(true)
            .open(dest)
            .map_err(|e| Error::io("open", dest, e))?;
        if let Some(o) = overlay {
            let mut pgnos: Vec<_> = o.pages.keys().copied().collect();
            pgnos.sort_unstable();
            for p in pgnos {
                let off = u64::from(p - 1) * u64::from(page_size);
                out.write_all_at(&o.pages[&p], off)
                    .map_err(|e| Error::io("write page", dest, e))?;
            }
        }
        if page_count > 0 || pages > 0 {
            out.set_len(u64::from(pages) * u64::from(page_size))
                .map_err(|e| Error::io("truncate", dest, e))?;
            // Rollback-journal mode in the header (bytes 18-19 = 1): a WAL-mode image would
            // need a -shm beside it, which read-only storage cannot give (`sqlite3 -readonly`
            // fails on it). A restore gives the live file's mode back (`adapt_image`).
            out.write_all_at(&[1, 1], 18)
                .map_err(|e| Error::io("write header", dest, e))?;
        }
        drop(out);
        self.check_header(dest)
    }

    fn streams(&self) -> bool {
        true
    }

    fn capture_to(&self, out: &mut dyn Write) -> Result<()> {
        self.check_header(&self.path)?;
        // The read transaction: held until every page is read (in rollback-journal mode,
        // writers wait for it as they do for a copy).
        let view = self.begin_read()?;
        let live = LiveFile::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        let (overlay, pages) = self.overlay(&view)?;
        if view.page_count == 0 && pages == 0 {
            return Ok(()); // an empty database is an empty file
        }
        let ps = view.page_size as usize;
        const STEP: u32 = 256;
        let mut buf = vec![0u8; STEP as usize * ps];
        let mut first = 1u32;
        while first <= pages {
            let n = STEP.min(pages - first + 1);
            let block = &mut buf[..n as usize * ps];
            let off = u64::from(first - 1) * u64::from(view.page_size);
            let got = read_at_most(live.file(), block, off)
                .map_err(|e| Error::io("read", &self.path, e))?;
            block[got..].fill(0); // pages past the file's end come from the log
            for i in 0..n {
                let pgno = first + i;
                let page = &mut block[i as usize * ps..(i as usize + 1) * ps];
                if let Some(p) = overlay.as_ref().and_then(|o| o.pages.get(&pgno)) {
                    page.copy_from_slice(p);
                }
                if pgno == 1 {
                    if !page.starts_with(MAGIC) {
                        return Err(Error::NotADatabase {
                            engine: KIND,
                            path: self.path.clone(),
                            detail: "the file does not start with the SQLite header".into(),
                        });
                    }
                    // Rollback-journal mode in the header, as `capture` writes it.
                    page[18..20].copy_from_slice(&[1, 1]);
                }
            }
            out.write_all(block)
                .map_err(|e| match e.downcast::<Error>() {
                    Ok(e) => e,
                    Err(e) => Error::io("write image", &self.path, e),
                })?;
            first += n;
        }
        let _ = view.conn.execute_batch("COMMIT");
        Ok(())
    }

    fn adapt_image(&self, image: &Path) -> Result<()> {
        // The live file's journal mode (header bytes 18-19), read through the shared
        // descriptor (a descriptor of our own, closed, would drop the application's locks).
        let Ok(live) = LiveFile::open(&self.path) else {
            return Ok(()); // no live file: the image as it is
        };
        let head = live
            .read_prefix(20)
            .map_err(|e| Error::io("read", &self.path, e))?;
        if head.len() < 20 || !matches!(head[18..20], [1, 1] | [2, 2]) {
            return Ok(());
        }
        let f = OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| Error::io("open", image, e))?;
        f.write_all_at(&head[18..20], 18)
            .map_err(|e| Error::io("write header", image, e))
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        self.check_header(image)?;
        if level == CheckLevel::Header {
            return Ok(());
        }
        let conn = open_image(image)?;
        let pragma = if level == CheckLevel::Full {
            "PRAGMA integrity_check"
        } else {
            "PRAGMA quick_check"
        };
        let mut stmt = conn.prepare(pragma).map_err(|e| error(image, "check", e))?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| error(image, "check", e))?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(())
        } else {
            Err(Error::NotADatabase {
                engine: KIND,
                path: image.to_path_buf(),
                detail: format!("{pragma}: {}", rows.join("; ")),
            })
        }
    }

    fn begin_restore(
        &self,
        image: &Path,
        _snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        // A database that a process holds open (this one included: an application restoring
        // from its own dashboard) is written into through the backup API; a closed one is
        // swapped as a file (`FileReplacement`).
        if !self.path.exists() || self.check_header(&self.path).is_err() {
            return Ok(None);
        }
        let holders = self.holders();
        if holders.is_empty() {
            return Ok(None);
        }
        let holders = describe_holders(&holders);
        let conn = self.open_live()?;
        Ok(Some(Box::new(LiveReplacement::new(
            self, self.busy, conn, image, holders,
        )?)))
    }

    fn prepare_replace(&self) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        // A holder that appeared since `begin_restore` looked.
        let holders = self.holders();
        if !holders.is_empty() {
            return Err(Error::TargetLocked {
                path: self.path.clone(),
                detail: format!("{}; restore again", describe_holders(&holders)),
            });
        }
        if self.check_header(&self.path).is_err() {
            return Ok(()); // nothing to fold into a file that is not a database
        }
        let conn = self.open_live()?;
        let mode: String = self.retry("journal mode", || {
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        })?;
        if mode.eq_ignore_ascii_case("wal") {
            let busy: i64 = self.retry("checkpoint", || {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            })?;
            if busy != 0 {
                return Err(Error::TargetLocked {
                    path: self.path.clone(),
                    detail: "another connection keeps the write-ahead log busy".into(),
                });
            }
        }
        Ok(())
    }

    fn companions(&self) -> Vec<PathBuf> {
        vec![
            self.companion("-wal"),
            self.companion("-shm"),
            self.companion("-journal"),
        ]
    }

    fn open_tables(&self, image: &Path, write: bool) -> Result<TableSession> {
        let session = SqliteSession::open(image, Some(&self.path), write)?;
        Ok(TableSession(Box::new(session)))
    }

    fn statistics(&self, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
        stats::stats(&self.path, table, order_by)
    }
}
