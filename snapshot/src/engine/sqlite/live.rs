//! Whole restore of a SQLite database that a process holds open — the application itself, a
//! web dashboard in it, or another process: the verified image is written *into* the live
//! database through SQLite's online backup API, on a connection of our own. No file is swapped
//! under anyone: the backup commits as one write transaction, and every other connection (in
//! this process or another) sees the restored content at its next transaction — SQLite bumps the
//! schema cookie, so they reload the schema too.
//!
//! ```text
//! begin_restore: the file is held → LiveReplacement (else the file swap of FileReplacement)
//!   capture_present: BEGIN IMMEDIATE on our connection (no other writer commits from here),
//!                    the safety snapshot (the usual capture, by another connection: readers
//!                    are never blocked), a copy of it kept beside the database for a rollback
//!   apply:           release the write lock, check nothing committed since (data_version),
//!                    backup API image → live in one step (waits for readers within the budget)
//!   check:           the schema reads back
//!   rollback:        the kept copy written back the same way
//! ```
//!
//! One window remains: a writer that commits in the microseconds between our lock's release and
//! the backup taking it is caught by the `data_version` check only if it commits before that
//! check; after it, its write is replaced by the restore (as any write just before a restore
//! would be) without being in the safety snapshot.

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ffi};

use crate::engine::sqlite::image::open_image;
use crate::engine::sqlite::{KIND, busy, error};
use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::source::{BusyBudget, Replacement, RestoreContext, Source};

/// A whole restore through the backup API (see the module docs).
pub(super) struct LiveReplacement<'a> {
    source: &'a dyn Source,
    budget: BusyBudget,
    image: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    conn: Connection,
    /// Who holds the file, for the report.
    holders: String,
    /// Whether our connection holds the write lock (from the safety snapshot to the write).
    locked: bool,
    /// `PRAGMA data_version` when the safety snapshot was taken.
    version: Option<i64>,
    /// A copy of the safety snapshot, for a rollback.
    present: Option<StagingGuard>,
}

impl<'a> LiveReplacement<'a> {
    /// Prepares to write `image` (verified, staged) into the held live database of `source`
    /// through `conn`, a connection of its own on it.
    ///
    /// # Errors
    /// [`Error::TargetLocked`] when the database can only be opened read-only; engine errors.
    pub(super) fn new(
        source: &'a dyn Source,
        budget: BusyBudget,
        conn: Connection,
        image: &Path,
        holders: String,
    ) -> Result<Self> {
        source.adapt_image(image)?;
        let target = source.path().to_path_buf();
        if conn.is_readonly("main").unwrap_or(true) {
            return Err(Error::TargetLocked {
                path: target,
                detail: "the database can only be opened read-only here".into(),
            });
        }
        Ok(LiveReplacement {
            source,
            budget,
            image: image.to_path_buf(),
            dir: source.restore_dir().unwrap_or_else(|| PathBuf::from(".")),
            target,
            conn,
            holders,
            locked: false,
            version: None,
            present: None,
        })
    }

    fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| error(&self.target, "read data_version", e))
    }

    fn unlock(&mut self) {
        if self.locked {
            // Nothing was written under the lock: ending it either way is the same.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.locked = false;
        }
    }

    /// Writes the database at `from` over the live one in one backup step (one write
    /// transaction), retried within the budget while other connections hold it.
    fn write_from(&mut self, from: &Path) -> Result<()> {
        let src = open_image(from)?;
        let target = self.target.clone();
        let backup =
            Backup::new(&src, &mut self.conn).map_err(|e| error(&target, "start the backup", e))?;
        busy::retry(&target, self.budget, "write the image", || {
            match backup.step(-1)? {
                StepResult::Done => Ok(()),
                // `More` cannot follow a step of every page; `Busy`/`Locked`: retried.
                _ => Err(rusqlite::Error::SqliteFailure(
                    ffi::Error::new(ffi::SQLITE_BUSY),
                    Some("the database is busy".into()),
                )),
            }
        })
    }
}

impl Drop for LiveReplacement<'_> {
    fn drop(&mut self) {
        self.unlock();
    }
}

impl Replacement for LiveReplacement<'_> {
    fn target(&self) -> &Path {
        &self.target
    }

    fn has_present(&self) -> bool {
        true
    }

    fn capture_present(&mut self, dest: &Path) -> Result<()> {
        let conn = &self.conn;
        busy::retry(&self.target, self.budget, "lock the database", || {
            conn.execute_batch("BEGIN IMMEDIATE")
        })?;
        self.locked = true;
        self.source.capture(dest)?;
        self.version = Some(self.data_version()?);
        let keep = StagingGuard::new(fs_util::staging_path(&self.dir, "present"));
        if std::fs::hard_link(dest, keep.path()).is_err() {
            fs_util::copy_to_new(dest, keep.path())?;
        }
        self.present = Some(keep);
        Ok(())
    }

    fn release_present(&mut self) {
        self.unlock();
    }

    fn plan(&mut self) -> Result<Vec<String>> {
        Ok(vec![format!(
            "would take a safety snapshot of {} and write the image into it through SQLite's \
             backup API ({}; its connections see the restored data at their next transaction)",
            self.target.display(),
            self.holders
        )])
    }

    fn apply(&mut self, _context: &RestoreContext) -> Result<Vec<String>> {
        self.unlock();
        if let Some(v) = self.version
            && self.data_version()? != v
        {
            return Err(Error::Busy {
                path: self.target.clone(),
                attempts: 1,
                waited_ms: 0,
                detail: "a write was committed after the safety snapshot; nothing restored — \
                         restore again"
                    .into(),
            });
        }
        let image = self.image.clone();
        self.write_from(&image)?;
        Ok(vec![format!(
            "wrote the image into the open database {} through SQLite's backup API ({})",
            self.target.display(),
            self.holders
        )])
    }

    fn check(&mut self) -> Result<Vec<String>> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| Error::NotADatabase {
                engine: KIND,
                path: self.target.clone(),
                detail: format!("the restored schema does not read back: {e}"),
            })?;
        Ok(vec!["checked the restored database".into()])
    }

    fn rollback(&mut self) -> bool {
        let Some(present) = self.present.take() else {
            return false;
        };
        let ok = self.write_from(present.path()).is_ok();
        if !ok {
            present.disarm(); // kept for doctor to find: the state before the restore
        }
        ok
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(present) = self.present.take() {
            fs_util::remove_durable(present.path())?;
            present.disarm();
        }
        Ok(())
    }
}
