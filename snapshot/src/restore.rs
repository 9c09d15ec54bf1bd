//! Restore as a transaction: verify the snapshot, take a safety snapshot of the present, stage
//! the image beside the target, swap atomically, verify the result, and put the present back if
//! anything fails.
//!
//! ```text
//! verify blob (checksum + engine check, on the staged copy)
//!   → live target held by another process?  → Error::TargetLocked, nothing changed
//!   → safety snapshot of the present (pinned, operation "pre_restore")
//!   → keep the present file under a staging name (hard link: free, same inode)
//!   → rename the staged image over the target, remove stale -wal/-shm/.wal, fsync the directory
//!   → engine check of the live result; on failure rename the present back (rolled back)
//! ```
//! A crash at any point leaves the target either as it was or fully restored, with at most a
//! staging file beside it (found by [`doctor`](crate::SnapshotManager::doctor)).
//!
//! A source that is not a file ([`Source::is_file`](crate::Source::is_file) is false: a
//! PostgreSQL server) has nothing to swap: its whole restore is a table restore of every table
//! of the snapshot in `Replace` mode, in one transaction after the safety snapshot.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::manager::{SnapshotManager, SnapshotRequest};
use crate::record::{PRE_RESTORE, SnapshotRecord};
use crate::source::CheckLevel;
use crate::source::processes_holding;

/// How to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    dry_run: bool,
    target: Option<PathBuf>,
    check: Option<CheckLevel>,
}

impl RestoreOptions {
    /// Restore over the live source. The image gets a [`CheckLevel::Quick`] engine check unless
    /// its record says it already passed one ([`verify`](crate::SnapshotManager::verify)): the
    /// checksum then proves these are the very bytes that passed, and the check is skipped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verify the snapshot and report the plan without changing anything.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Materialise the snapshot at `path` (which must not exist) instead of over the live data.
    pub fn target(mut self, path: impl Into<PathBuf>) -> Self {
        self.target = Some(path.into());
        self
    }

    /// Forces the engine check of the image before the swap (the result after the swap always
    /// gets a header check: the swap is an atomic rename of bytes already checked).
    pub fn check(mut self, level: CheckLevel) -> Self {
        self.check = Some(level);
        self
    }
}

/// What a restore did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreReport {
    /// The restored snapshot.
    pub snapshot_id: String,
    /// Where it was restored.
    pub target: PathBuf,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The safety snapshot of the state before the restore, when one was taken.
    pub safety_snapshot: Option<String>,
    /// Bytes restored.
    pub bytes: u64,
    /// The steps, in order, as done or planned.
    pub steps: Vec<String>,
}

impl SnapshotManager {
    /// Restores a snapshot over the live source (see the module docs for the steps).
    ///
    /// # Errors
    /// As [`restore_with`](Self::restore_with).
    pub fn restore(&self, id: &str) -> Result<RestoreReport> {
        self.restore_with(id, &RestoreOptions::new())
    }

    /// Materialises a snapshot at `path` without touching the live data.
    ///
    /// # Errors
    /// As [`restore_with`](Self::restore_with); [`Error::InvalidInput`] when `path` exists.
    pub fn restore_to(&self, id: &str, path: impl AsRef<Path>) -> Result<RestoreReport> {
        self.restore_with(id, &RestoreOptions::new().target(path.as_ref()))
    }

    /// Restores a snapshot with options.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::WrongEngine`] (snapshot of another kind than the live
    /// source), [`Error::ChecksumMismatch`] / [`Error::BlobMissing`] / [`Error::NotADatabase`]
    /// (a damaged snapshot: nothing changed), [`Error::TargetLocked`] (nothing changed),
    /// [`Error::RestoreFailed`] when the result failed its check and the present was put back.
    /// For a source that is not a file (PostgreSQL), the errors of
    /// [`restore_tables`](Self::restore_tables): [`Error::TableRestoreFailed`] when the
    /// transaction failed (nothing changed, the safety snapshot kept).
    pub fn restore_with(&self, id: &str, options: &RestoreOptions) -> Result<RestoreReport> {
        let record = self.get(id)?;
        let source = &self.inner.source;
        let live = options.target.is_none();
        if live && !source.is_file() && record.source_kind == source.kind() {
            return self.restore_by_tables(&record, options);
        }
        let target = options
            .target
            .clone()
            .unwrap_or_else(|| source.path().to_path_buf());
        let same_kind = record.source_kind == source.kind();
        if live && !same_kind {
            return Err(Error::WrongEngine {
                id: record.snapshot_id,
                snapshot_kind: record.source_kind,
                target_kind: source.kind().to_string(),
            });
        }
        if !live && target.exists() {
            return Err(Error::invalid(
                "target",
                format!("{} already exists", target.display()),
            ));
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut steps = Vec::new();

        // 1. Stage and verify the image beside the target.
        let check = options.check.unwrap_or(if record.verified_at.is_some() {
            CheckLevel::Header
        } else {
            CheckLevel::Quick
        });
        let staged = self.stage_verified(&record, &dir, check, same_kind)?;
        steps.push(format!(
            "verified {} ({} bytes, {})",
            record.snapshot_id, record.size_bytes, record.checksum
        ));

        if options.dry_run {
            steps.push(if live {
                format!(
                    "would take a safety snapshot of {} and replace it",
                    target.display()
                )
            } else {
                format!("would write {}", target.display())
            });
            return Ok(RestoreReport {
                snapshot_id: record.snapshot_id,
                target,
                dry_run: true,
                safety_snapshot: None,
                bytes: record.size_bytes,
                steps,
            });
        }

        if !live {
            fs_util::publish_new(staged.path(), &target).map_err(|e| match e {
                Error::AlreadyExists { .. } => {
                    Error::invalid("target", format!("{} already exists", target.display()))
                }
                e => e,
            })?;
            staged.disarm();
            steps.push(format!("wrote {}", target.display()));
            return Ok(RestoreReport {
                snapshot_id: record.snapshot_id,
                target,
                dry_run: false,
                safety_snapshot: None,
                bytes: record.size_bytes,
                steps,
            });
        }

        // 2. The live target must be free; fold its journal so the present is all in one file.
        source.prepare_replace()?;
        let present = target.exists();

        // 3. Safety snapshot of the present. The target is quiesced (no process holds it, its
        //    journal is folded) and about to be replaced, so when the store shares its file
        //    system the snapshot is the present file itself under a second name (0600 from the
        //    start): no copy. The swap below leaves that inode to the store alone.
        let mut safety = None;
        let mut linked_mode = None;
        if present && self.is_enabled() {
            // The present may be damaged — that is often why it is being restored over: it is
            // kept as found (byte for byte, unverified) rather than refused.
            let request = SnapshotRequest {
                restore_of: Some(record.snapshot_id.clone()),
                as_found: true,
                ..SnapshotRequest::new(PRE_RESTORE)
                    .description(format!(
                        "Safety copy before restoring {}",
                        record.snapshot_id
                    ))
                    .pinned(true)
            };
            let taken = self.take_with(request, |dest| {
                if processes_holding(&target).is_empty()
                    && let Some(mode) = fs_util::link_private(&target, dest)?
                {
                    linked_mode = Some(mode);
                    return Ok(());
                }
                match source.capture(dest) {
                    Err(Error::NotADatabase { .. }) => {
                        // Quiesced (no process holds it): the raw bytes are the present.
                        fs_util::remove_if_exists(dest)?;
                        fs_util::copy_to_new(&target, dest).map(|_| ())
                    }
                    r => r,
                }
            });
            let taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    if let Some(mode) = linked_mode {
                        let _ = fs_util::set_mode(&target, mode);
                    }
                    return Err(e);
                }
            };
            steps.push(format!(
                "safety snapshot {}{}",
                taken.snapshot_id,
                if linked_mode.is_some() {
                    " (the present file, linked into the store)"
                } else {
                    ""
                }
            ));
            safety = Some(taken.snapshot_id);
        } else if present {
            steps.push("no safety snapshot: the manager is disabled on this host".into());
        }
        // A safety snapshot that is the live file must not stay listed while that file stays
        // live: when the swap does not happen (or is undone), drop it and give the file back
        // its mode. The present is then live, untouched; nothing needed the copy.
        let abandon_link = || {
            if let (Some(mode), Some(id)) = (linked_mode, &safety) {
                let _ = fs_util::set_mode(&target, mode);
                self.forget(id);
            }
        };

        // 4. Keep the present under a staging name for rollback, then swap.
        let swapped = (|| -> Result<Option<StagingGuard>> {
            let previous =
                present.then(|| StagingGuard::new(fs_util::staging_path(&dir, "previous")));
            if let Some(prev) = &previous {
                std::fs::hard_link(&target, prev.path())
                    .map_err(|e| Error::io("link", prev.path(), e))?;
            }
            // The restored file keeps the live file's mode (a group-shared database stays so).
            match linked_mode {
                Some(mode) => fs_util::set_mode(staged.path(), mode)?,
                None if present => fs_util::copy_permissions(&target, staged.path())?,
                None => {}
            }
            fs_util::publish_replace(staged.path(), &target)?;
            Ok(previous)
        })();
        let previous = match swapped {
            Ok(p) => p,
            Err(e) => {
                abandon_link();
                return Err(e);
            }
        };
        staged.disarm();
        for c in source.companions() {
            fs_util::remove_if_exists(&c)?;
        }
        fs_util::fsync_dir(&dir)?;
        steps.push(format!("replaced {}", target.display()));

        // 5. Check the live result; put the present back if it fails.
        if let Err(e) = source.check_image(&target, CheckLevel::Header) {
            let rolled_back = match &previous {
                Some(prev) => fs_util::publish_replace(prev.path(), &target).is_ok(),
                None => fs_util::remove_durable(&target).is_ok(),
            };
            if let Some(prev) = previous {
                prev.disarm();
            }
            if rolled_back {
                abandon_link();
            }
            return Err(Error::RestoreFailed {
                id: record.snapshot_id,
                reason: format!("the restored database failed its check: {e}"),
                rolled_back,
            });
        }
        if let Some(prev) = previous {
            fs_util::remove_durable(prev.path())?;
            prev.disarm();
        }
        steps.push("checked the restored database".into());
        tracing::info!(id = %record.snapshot_id, target = %target.display(), "restored");
        Ok(RestoreReport {
            snapshot_id: record.snapshot_id,
            target,
            dry_run: false,
            safety_snapshot: safety,
            bytes: record.size_bytes,
            steps,
        })
    }

    /// The whole restore of a source that is not a file (a database server): every table of
    /// the image, in [`Replace`](crate::table::RestoreMode::Replace) mode, in one transaction
    /// after the pinned safety snapshot — [`restore_tables`](Self::restore_tables) with the
    /// tables in the order the source gives (tables referred to first). Tables of the live
    /// database that the snapshot does not hold are left alone; a table of the snapshot
    /// missing from the live database fails the restore before anything changed.
    fn restore_by_tables(
        &self,
        record: &SnapshotRecord,
        options: &RestoreOptions,
    ) -> Result<RestoreReport> {
        use crate::table::{RestoreMode, TableRestoreOptions};
        let source = &self.inner.source;
        let store = &self.inner.store;
        let tables = match store.local_path(&record.blob_key) {
            Some(p) if p.exists() => source.image_tables(&p)?,
            Some(_) => {
                return Err(Error::BlobMissing {
                    key: record.blob_key.clone(),
                });
            }
            None => {
                let staged =
                    self.stage_verified(record, &store.staging_dir()?, CheckLevel::Header, true)?;
                source.image_tables(staged.path())?
            }
        };
        let target = source.path().to_path_buf();
        if tables.is_empty() {
            return Ok(RestoreReport {
                snapshot_id: record.snapshot_id.clone(),
                target,
                dry_run: options.dry_run,
                safety_snapshot: None,
                bytes: record.size_bytes,
                steps: vec!["the snapshot holds no table: nothing to restore".into()],
            });
        }
        let table_options = TableRestoreOptions::new(RestoreMode::Replace).dry_run(options.dry_run);
        let report = self.restore_tables(&record.snapshot_id, &tables, &table_options)?;
        let mut steps = vec![format!(
            "verified {} ({} bytes, {})",
            record.snapshot_id, record.size_bytes, record.checksum
        )];
        if let Some(s) = &report.safety_snapshot {
            steps.push(format!("safety snapshot {s}"));
        }
        let verb = if options.dry_run {
            "would replace"
        } else {
            "replaced"
        };
        for t in &report.tables {
            steps.push(format!(
                "{verb} table {:?}: {} inserted, {} updated, {} deleted",
                t.table, t.inserted, t.updated, t.deleted
            ));
        }
        if !options.dry_run {
            steps.push(format!(
                "committed the restore of {} table(s)",
                report.tables.len()
            ));
            tracing::info!(id = %record.snapshot_id, target = %target.display(), "restored");
        }
        Ok(RestoreReport {
            snapshot_id: record.snapshot_id.clone(),
            target,
            dry_run: options.dry_run,
            safety_snapshot: report.safety_snapshot,
            bytes: record.size_bytes,
            steps,
        })
    }

    /// Copies a snapshot's blob into a staging file in `dir`, makes it durable, and checks its
    /// checksum (and engine, when the kinds match).
    pub(crate) fn stage_verified(
        &self,
        record: &SnapshotRecord,
        dir: &Path,
        check: CheckLevel,
        engine_check: bool,
    ) -> Result<StagingGuard> {
        let store = &self.inner.store;
        let staged = StagingGuard::new(fs_util::staging_path(dir, &record.blob_key));
        match store.local_path(&record.blob_key) {
            Some(p) if p.exists() => {
                fs_util::copy_to_new(&p, staged.path())?;
            }
            Some(_) => {
                return Err(Error::BlobMissing {
                    key: record.blob_key.clone(),
                });
            }
            None => store.get_to_file(&record.blob_key, staged.path())?,
        }
        self.check_copy(record, staged.path(), check, engine_check, true)?;
        Ok(staged)
    }
}
