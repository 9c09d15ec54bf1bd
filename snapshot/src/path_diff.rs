//! What changed in the live data since a snapshot, path by path — a directory's compare
//! (`snapshot diff ID` on a directory): entries added, removed and changed, with their sizes on
//! each side. The source computes it ([`Source::compare_paths`]); the live data is only read.

use serde::Serialize;

use crate::error::Result;
use crate::manager::SnapshotManager;
use crate::source::{CheckLevel, Source};

/// One entry that differs between a snapshot and the live data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PathChange {
    /// The path, relative to the root.
    pub path: String,
    /// Its size in the snapshot (`None`: not there).
    pub snapshot_bytes: Option<u64>,
    /// Its size now (`None`: not there).
    pub live_bytes: Option<u64>,
}

impl PathChange {
    /// A change of `path` with its sizes on each side.
    pub fn new(
        path: impl Into<String>,
        snapshot_bytes: Option<u64>,
        live_bytes: Option<u64>,
    ) -> Self {
        PathChange {
            path: path.into(),
            snapshot_bytes,
            live_bytes,
        }
    }
}

/// The entries added, removed and changed since a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PathDiff {
    /// The snapshot compared.
    pub snapshot_id: String,
    /// Live entries the snapshot lacks.
    pub added: Vec<PathChange>,
    /// Entries of the snapshot gone from the live data.
    pub removed: Vec<PathChange>,
    /// Entries in both whose content (or link target, or kind) differs.
    pub changed: Vec<PathChange>,
    /// Entries in both, the same.
    pub unchanged: usize,
}

impl PathDiff {
    /// Whether nothing differs.
    pub fn is_identical(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl SnapshotManager {
    /// Compares a snapshot with the live data path by path (a directory's files): what was
    /// added, removed and changed since, with sizes. The snapshot is verified first; the live
    /// data is only read.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound); [`Error::WrongEngine`](crate::Error::WrongEngine)
    /// when the snapshot is of another kind than the live source;
    /// [`Error::Unsupported`](crate::Error::Unsupported) for a source without paths (a
    /// database: compare its tables with [`compare`](Self::compare));
    /// [`Error::ChecksumMismatch`](crate::Error::ChecksumMismatch) /
    /// [`Error::BlobMissing`](crate::Error::BlobMissing) for a damaged snapshot; I/O errors.
    pub fn compare_paths(&self, id: &str) -> Result<PathDiff> {
        let record = self.get(id)?;
        let source: &dyn Source = &**self.source();
        if record.source_kind != source.kind() {
            return Err(crate::Error::WrongEngine {
                id: record.snapshot_id,
                snapshot_kind: record.source_kind,
                target_kind: source.kind().to_string(),
            });
        }
        let image = self.verified_image(&record, None, CheckLevel::Header, true)?;
        let mut diff = source.compare_paths(&image.path)?;
        diff.snapshot_id = record.snapshot_id;
        Ok(diff)
    }
}
