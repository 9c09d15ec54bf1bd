//! Putting the newest good snapshot in place when the live data is absent — at a container's
//! start on an ephemeral host, with the snapshots in a bucket (as Litestream's
//! `restore -if-db-not-exists`).

use crate::error::{Error, Result};
use crate::manager::SnapshotManager;
use crate::restore::RestoreReport;
use crate::{ListFilter, fs_util};

/// What [`SnapshotManager::restore_latest_if_missing`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum IfMissing {
    /// The live data is there: nothing was done.
    Present,
    /// The live data is absent and no snapshot of it could be restored (none taken yet, or
    /// every one damaged — their ids listed): nothing was done, the application starts empty.
    NoSnapshot {
        /// Snapshots passed over because they failed their checks.
        damaged: Vec<String>,
    },
    /// The newest good snapshot was put in place.
    Restored {
        /// The restore.
        report: RestoreReport,
        /// Newer snapshots passed over because they failed their checks.
        damaged: Vec<String>,
    },
}

impl SnapshotManager {
    /// When the live file (or directory) is absent, puts the newest snapshot of it that
    /// passes its checks in its place (creating the parent directory); a damaged snapshot is
    /// passed over for the next older one. Nothing happens when the live data is there.
    ///
    /// A leftover log beside an absent database (SQLite `-wal`, DuckDB `.wal`) is refused: it
    /// would be applied to the restored file.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a source that is not a file or directory of this host (a
    /// database server); [`Error::InvalidInput`] naming a leftover log; the store's errors.
    pub fn restore_latest_if_missing(&self) -> Result<IfMissing> {
        let source = &self.inner.source;
        let live = source.path().to_path_buf();
        if live.to_str().is_some_and(|s| s.contains("://")) {
            return Err(Error::Unsupported {
                operation: "restore the latest snapshot when the data is missing",
                kind: source.kind().to_string(),
            });
        }
        if live.symlink_metadata().is_ok() {
            return Ok(IfMissing::Present);
        }
        if let Some(log) = source.companions().into_iter().find(|c| c.exists()) {
            return Err(Error::invalid(
                "restore",
                format!(
                    "{} is absent but {} is there: it would be applied to the restored \
                     database; move it away first",
                    live.display(),
                    log.display()
                ),
            ));
        }
        if let Some(parent) = live.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            fs_util::create_private_dir(parent)?;
        }
        let mut damaged = Vec::new();
        let records = self.list(&ListFilter::new())?;
        for r in records.iter().filter(|r| r.source_kind == source.kind()) {
            match self.restore_to(&r.snapshot_id, &live) {
                Ok(report) => return Ok(IfMissing::Restored { report, damaged }),
                Err(
                    e @ (Error::ChecksumMismatch { .. }
                    | Error::BlobMissing { .. }
                    | Error::NotADatabase { .. }),
                ) => {
                    tracing::warn!(id = %r.snapshot_id, error = %e, "a damaged snapshot passed over");
                    damaged.push(r.snapshot_id.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(IfMissing::NoSnapshot { damaged })
    }
}
