//! The restore side of a source: a [`Replacement`] is one whole restore in progress, driven by
//! the restore transaction ([`restore`](crate::SnapshotManager::restore)):
//!
//! ```text
//! begin_restore (live data free? journal folded; a server: tables planned and locked)
//!   → capture_present   (the safety snapshot of the present)
//!   → apply             (the swap, or the writes and commit)
//!   → check             (the result; on failure rollback puts the present back)
//!   → finish
//! ```
//!
//! [`FileReplacement`] is the one for every source whose live data is one file: the verified
//! image staged beside it is renamed over it atomically.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::source::{CheckLevel, Source, processes_holding};

/// What the restore transaction tells a [`Replacement`] as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreContext {
    /// The snapshot being restored.
    pub snapshot_id: String,
    /// The safety snapshot of the present, once taken.
    pub safety_snapshot: Option<String>,
}

/// One whole restore of a source's live data, in progress. The restore transaction calls
/// [`capture_present`](Self::capture_present) (when there is a present and snapshots are on),
/// then [`apply`](Self::apply), [`check`](Self::check) and [`finish`](Self::finish); after a
/// failed `check` it calls [`rollback`](Self::rollback).
pub trait Replacement {
    /// The live location being replaced (as reports show it).
    fn target(&self) -> &Path;

    /// Whether there is present data to keep in a safety snapshot first.
    fn has_present(&self) -> bool;

    /// Writes the present state to the new file `dest`, for the safety snapshot.
    ///
    /// # Errors
    /// The source's capture errors.
    fn capture_present(&mut self, dest: &Path) -> Result<()>;

    /// Whether the captured present *is* the live file (linked, not copied): it must not stay
    /// in the catalog while that file stays live (a restore that does not swap).
    fn present_is_live(&self) -> bool {
        false
    }

    /// Undoes what [`capture_present`](Self::capture_present) did to the live data (a file's
    /// mode) when the safety snapshot is abandoned.
    fn release_present(&mut self) {}

    /// What [`apply`](Self::apply) would do (a dry run), as steps for the report.
    ///
    /// # Errors
    /// Engine errors while planning.
    fn plan(&mut self) -> Result<Vec<String>>;

    /// Replaces the live data with the image, atomically (a rename; a committed transaction).
    /// On error the live data is as it was.
    ///
    /// # Errors
    /// I/O or engine errors; [`Error::TableRestoreFailed`] for a table-by-table restore.
    fn apply(&mut self, context: &RestoreContext) -> Result<Vec<String>>;

    /// Checks the result of [`apply`](Self::apply).
    ///
    /// # Errors
    /// The engine's check of the result.
    fn check(&mut self) -> Result<Vec<String>>;

    /// Puts the present back after a failed [`check`](Self::check); whether it could.
    fn rollback(&mut self) -> bool;

    /// Ends a restore that passed its check (drops what a rollback would have needed).
    ///
    /// # Errors
    /// I/O errors.
    fn finish(&mut self) -> Result<()>;
}

/// The [`Replacement`] of a source whose live data is one file: the verified image, staged
/// beside the file, is renamed over it; the engine's companions (`-wal`, `-shm`, `.wal`) go;
/// the present is kept under a staging name until the result passes its check. The safety
/// snapshot of the present is the live file itself, linked into the store, when nothing holds
/// it and the store shares its file system: no copy.
pub struct FileReplacement<'a> {
    source: &'a dyn Source,
    image: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    present: bool,
    /// The live file's mode, when the safety snapshot links it (0600 while in the store).
    linked_mode: Option<u32>,
    previous: Option<StagingGuard>,
}

impl std::fmt::Debug for FileReplacement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReplacement")
            .field("image", &self.image)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<'a> FileReplacement<'a> {
    /// Prepares to replace the file of `source` with the verified image at `image` (staged in
    /// [`Source::restore_dir`], so that the swap is a rename): refuses when another process
    /// holds the file, and folds the engine's journal so the present is all in one file
    /// ([`Source::prepare_replace`]).
    ///
    /// # Errors
    /// [`Error::TargetLocked`]; the source's errors.
    pub fn new(source: &'a dyn Source, image: &Path) -> Result<Self> {
        source.prepare_replace()?;
        source.adapt_image(image)?;
        let target = source.path().to_path_buf();
        let dir = source.restore_dir().unwrap_or_else(|| PathBuf::from("."));
        Ok(FileReplacement {
            present: target.exists(),
            source,
            image: image.to_path_buf(),
            target,
            dir,
            linked_mode: None,
            previous: None,
        })
    }
}

impl Replacement for FileReplacement<'_> {
    fn target(&self) -> &Path {
        &self.target
    }

    fn has_present(&self) -> bool {
        self.present
    }

    fn capture_present(&mut self, dest: &Path) -> Result<()> {
        // The target is quiesced (no process holds it, its journal is folded) and about to be
        // replaced, so when the store shares its file system the snapshot is the present file
        // itself under a second name (0600 from the start): no copy. The swap leaves that
        // inode to the store alone.
        if processes_holding(&self.target).is_empty()
            && let Some(mode) = fs_util::link_private(&self.target, dest)?
        {
            self.linked_mode = Some(mode);
            return Ok(());
        }
        // Across file systems, a copy: quiesced (no process holds it, its journal folded),
        // the raw bytes are the present exactly as found, damaged or not.
        fs_util::copy_to_new(&self.target, dest).map(|_| ())
    }

    fn present_is_live(&self) -> bool {
        self.linked_mode.is_some()
    }

    fn release_present(&mut self) {
        if let Some(mode) = self.linked_mode.take() {
            let _ = fs_util::set_mode(&self.target, mode);
        }
    }

    fn plan(&mut self) -> Result<Vec<String>> {
        Ok(vec![format!(
            "would take a safety snapshot of {} and replace it",
            self.target.display()
        )])
    }

    fn apply(&mut self, _context: &RestoreContext) -> Result<Vec<String>> {
        // Keep the present under a staging name for rollback, then swap.
        let previous = self
            .present
            .then(|| StagingGuard::new(fs_util::staging_path(&self.dir, "previous")));
        if let Some(prev) = &previous {
            std::fs::hard_link(&self.target, prev.path())
                .map_err(|e| Error::io("link", prev.path(), e))?;
        }
        // The restored file keeps the live file's mode (a group-shared database stays so).
        match self.linked_mode {
            Some(mode) => fs_util::set_mode(&self.image, mode)?,
            None if self.present => fs_util::copy_permissions(&self.target, &self.image)?,
            None => {}
        }
        fs_util::publish_replace(&self.image, &self.target)?;
        self.previous = previous;
        for c in self.source.companions() {
            fs_util::remove_if_exists(&c)?;
        }
        fs_util::fsync_dir(&self.dir)?;
        Ok(vec![format!("replaced {}", self.target.display())])
    }

    fn check(&mut self) -> Result<Vec<String>> {
        // The swap is an atomic rename of bytes already checked: the header check suffices.
        self.source
            .check_image(&self.target, CheckLevel::Header)
            .map(|()| vec!["checked the restored database".into()])
    }

    fn rollback(&mut self) -> bool {
        let rolled_back = match self.previous.take() {
            Some(prev) => {
                let ok = fs_util::publish_replace(prev.path(), &self.target).is_ok();
                // Kept when it could not be put back: the present, for doctor to find.
                prev.disarm();
                ok
            }
            None => fs_util::remove_durable(&self.target).is_ok(),
        };
        if rolled_back {
            self.release_present();
        }
        rolled_back
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(prev) = self.previous.take() {
            fs_util::remove_durable(prev.path())?;
            prev.disarm();
        }
        Ok(())
    }
}
