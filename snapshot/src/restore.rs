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
//! The swap is the source's own ([`Source::begin_restore`](crate::Source::begin_restore)):
//! a [`FileReplacement`](crate::source::FileReplacement) for a source of one file, as above;
//! a database server replaces every table of the snapshot in one transaction instead. This
//! module is the transaction around it, the same for both: verify → safety snapshot → the
//! source's replacement → check → rollback.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::manager::{SnapshotManager, SnapshotRequest};
use crate::record::{PRE_RESTORE, SnapshotRecord};
use crate::source::{CheckLevel, FileReplacement, Replacement, RestoreContext};

/// How to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    dry_run: bool,
    target: Option<PathBuf>,
    check: Option<CheckLevel>,
    paths: Vec<String>,
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

    /// Only the entries of a directory snapshot whose paths (relative to its root) match one
    /// of these globs (`csv/*.csv`): put back into the live directory, the rest of it left as
    /// it is, or with [`target`](Self::target) written alone into a new directory. Other
    /// engines refuse a selection with [`Error::Unsupported`].
    pub fn paths<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.paths = globs.into_iter().map(Into::into).collect();
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
#[non_exhaustive]
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
        if let Some(target) = &options.target {
            return self.restore_elsewhere(record, target, options);
        }
        let source = &self.inner.source;
        if record.source_kind != source.kind() {
            return Err(Error::WrongEngine {
                id: record.snapshot_id,
                snapshot_kind: record.source_kind,
                target_kind: source.kind().to_string(),
            });
        }
        // 1. Stage and verify the image (beside the target, so that a swap is a rename).
        let check = options.check.unwrap_or(if record.verified_at.is_some() {
            CheckLevel::Header
        } else {
            CheckLevel::Quick
        });
        let image = self.verified_image(&record, source.restore_dir().as_deref(), check, true)?;
        let mut steps = vec![format!(
            "verified {} ({} bytes, {})",
            record.snapshot_id, record.size_bytes, record.checksum
        )];

        // 2. The source's replacement: the live data must be free (a file's journal folded; a
        //    server's tables planned and locked).
        let mut replacement: Box<dyn Replacement + '_> = if !options.paths.is_empty() {
            source.begin_restore_paths(&image.path, &record.snapshot_id, &options.paths)?
        } else {
            match source.begin_restore(&image.path, &record.snapshot_id)? {
                Some(r) => r,
                None => Box::new(FileReplacement::new(&**source, &image.path)?),
            }
        };
        let target = replacement.target().to_path_buf();
        let report = |steps, safety_snapshot, dry_run| RestoreReport {
            snapshot_id: record.snapshot_id.clone(),
            target: target.clone(),
            dry_run,
            safety_snapshot,
            bytes: record.size_bytes,
            steps,
        };
        if options.dry_run {
            steps.extend(replacement.plan()?);
            return Ok(report(steps, None, true));
        }

        // 3. Safety snapshot of the present. It may be damaged — that is often why it is being
        //    restored over: it is kept as found (byte for byte, unverified) rather than refused.
        let mut context = RestoreContext {
            snapshot_id: record.snapshot_id.clone(),
            safety_snapshot: None,
        };
        if replacement.has_present() && self.is_enabled() {
            let request = SnapshotRequest {
                restore_of: Some(record.snapshot_id.clone()),
                as_found: true,
                ..SnapshotRequest::new(PRE_RESTORE).description(format!(
                    "Safety copy before restoring {}",
                    record.snapshot_id
                ))
            };
            let taken = match self.take_with(request, |dest| replacement.capture_present(dest)) {
                Ok(t) => t,
                Err(e) => {
                    replacement.release_present();
                    return Err(e);
                }
            };
            steps.push(format!(
                "safety snapshot {}{}",
                taken.snapshot_id,
                if replacement.present_is_live() {
                    " (the present file, linked into the store)"
                } else {
                    ""
                }
            ));
            context.safety_snapshot = Some(taken.snapshot_id);
        } else if replacement.has_present() {
            steps.push("no safety snapshot: the manager is disabled on this host".into());
        }
        // A safety snapshot that is the live file must not stay listed while that file stays
        // live: when the swap does not happen (or is undone), drop it (the source gives the
        // file back its mode). The present is then live, untouched; nothing needed the copy.
        let abandon = |r: &mut Box<dyn Replacement + '_>, safety: &Option<String>| {
            if r.present_is_live()
                && let Some(id) = safety
            {
                r.release_present();
                self.forget(id);
            }
        };

        // 4. Replace.
        match replacement.apply(&context) {
            Ok(s) => steps.extend(s),
            Err(e) => {
                abandon(&mut replacement, &context.safety_snapshot);
                return Err(e);
            }
        }

        // 5. Check the live result; put the present back if it fails.
        match replacement.check() {
            Ok(s) => steps.extend(s),
            Err(e) => {
                let live = replacement.present_is_live();
                let rolled_back = replacement.rollback();
                if rolled_back
                    && live
                    && let Some(id) = &context.safety_snapshot
                {
                    self.forget(id);
                }
                return Err(Error::RestoreFailed {
                    id: record.snapshot_id.clone(),
                    reason: format!("the restored database failed its check: {e}"),
                    rolled_back,
                });
            }
        }
        replacement.finish()?;
        drop(replacement);
        drop(image);
        tracing::info!(id = %record.snapshot_id, target = %target.display(), "restored");
        Ok(report(steps, context.safety_snapshot, false))
    }

    /// Materialises a snapshot at `target` (which must not exist), live data untouched.
    fn restore_elsewhere(
        &self,
        record: SnapshotRecord,
        target: &Path,
        options: &RestoreOptions,
    ) -> Result<RestoreReport> {
        if target.exists() {
            return Err(Error::invalid(
                "target",
                format!("{} already exists", target.display()),
            ));
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let same_kind = record.source_kind == self.inner.source.kind();
        let check = options.check.unwrap_or(if record.verified_at.is_some() {
            CheckLevel::Header
        } else {
            CheckLevel::Quick
        });
        let staged = self.stage_verified(&record, &dir, check, same_kind)?;
        let mut steps = vec![format!(
            "verified {} ({} bytes, {})",
            record.snapshot_id, record.size_bytes, record.checksum
        )];
        if !same_kind && !options.paths.is_empty() {
            return Err(Error::Unsupported {
                operation: "restore some paths",
                kind: record.source_kind,
            });
        }
        if options.dry_run {
            steps.push(format!("would write {}", target.display()));
        } else if let Some(done) = same_kind
            .then(|| {
                self.inner
                    .source
                    .materialize(staged.path(), target, &options.paths)
            })
            .transpose()?
            .flatten()
        {
            steps.extend(done);
        } else {
            fs_util::publish_new(staged.path(), target).map_err(|e| match e {
                Error::AlreadyExists { .. } => {
                    Error::invalid("target", format!("{} already exists", target.display()))
                }
                e => e,
            })?;
            staged.disarm();
            steps.push(format!("wrote {}", target.display()));
        }
        Ok(RestoreReport {
            snapshot_id: record.snapshot_id,
            target: target.to_path_buf(),
            dry_run: options.dry_run,
            safety_snapshot: None,
            bytes: record.size_bytes,
            steps,
        })
    }

    /// A verified, readable local copy of a snapshot image. With `dir`, a durable copy staged
    /// there (removed when dropped unless a swap consumed it); without, the store's own file
    /// when it keeps one (read in place, never written), else a copy in its staging directory.
    /// The checksum always matches the record; with `engine_check` the engine checks the
    /// image at `check` too.
    pub(crate) fn verified_image(
        &self,
        record: &SnapshotRecord,
        dir: Option<&Path>,
        check: CheckLevel,
        engine_check: bool,
    ) -> Result<Image> {
        if dir.is_none() {
            match self.local_object(&record.blob_key)? {
                Some(p) if p.exists() => {
                    self.check_copy(record, &p, check, engine_check, false)?;
                    return Ok(Image {
                        path: p,
                        _staged: None,
                    });
                }
                Some(_) => {
                    return Err(Error::BlobMissing {
                        key: record.blob_key.clone(),
                    });
                }
                None => {}
            }
        }
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => self.staging_dir()?,
        };
        let staged = self.stage_verified(record, &dir, check, engine_check)?;
        Ok(Image {
            path: staged.path().to_path_buf(),
            _staged: Some(staged),
        })
    }

    /// The file of the object `key` when the store keeps its objects as local files.
    pub(crate) fn local_object(&self, key: &str) -> Result<Option<PathBuf>> {
        self.inner
            .store
            .local()
            .map(|l| l.object_path(key))
            .transpose()
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
        match self.local_object(&record.blob_key)? {
            Some(p) if p.exists() => {
                fs_util::copy_to_new(&p, staged.path())?;
            }
            Some(_) => {
                return Err(Error::BlobMissing {
                    key: record.blob_key.clone(),
                });
            }
            None => {
                store.get_to_file(&record.blob_key, staged.path())?;
            }
        }
        self.check_copy(record, staged.path(), check, engine_check, true)?;
        Ok(staged)
    }
}

/// A verified, readable local copy of a snapshot image: the store's own file, or a staged
/// copy removed when dropped.
pub(crate) struct Image {
    pub(crate) path: PathBuf,
    _staged: Option<StagingGuard>,
}
