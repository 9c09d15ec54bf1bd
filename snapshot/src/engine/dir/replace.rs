//! The whole restore of a directory: the archive's tree is extracted beside the live
//! directory, then swapped in by one atomic exchange of the two names (`RENAME_EXCHANGE`;
//! two renames on a file system without it), the present kept under a staging name until the
//! result passes its check, after a safety snapshot of the present. A file of the live
//! directory held open by another process refuses the restore before anything changes.

use std::path::{Path, PathBuf};

use crate::engine::dir::extract::{check_sizes, extract};
use crate::engine::dir::summary;
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::{Replacement, RestoreContext, Source};

/// Replaces a directory with an archive's tree (see the module docs).
pub(crate) struct DirReplacement<'a> {
    source: &'a dyn Source,
    image: PathBuf,
    root: PathBuf,
    present: bool,
    /// The extracted tree, beside the root, until it is swapped in.
    staged: Option<PathBuf>,
    /// The present tree under a staging name, until the restore is finished.
    previous: Option<PathBuf>,
}

/// The directory holding `root` (`.` for a bare name).
pub(crate) fn parent_of(root: &Path) -> PathBuf {
    match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl<'a> DirReplacement<'a> {
    /// Refuses when another process holds a file of the live directory open.
    ///
    /// # Errors
    /// [`Error::TargetLocked`] naming the file and the processes.
    pub(crate) fn new(source: &'a dyn Source, image: &Path) -> Result<Self> {
        let root = source.path().to_path_buf();
        if let Some((path, pids)) = crate::source::processes_holding_under(&root)
            .into_iter()
            .next()
        {
            return Err(Error::TargetLocked {
                path: root.clone(),
                detail: format!(
                    "{} is {}",
                    path.display(),
                    crate::source::describe_holders(&pids)
                ),
            });
        }
        Ok(DirReplacement {
            present: root.exists(),
            source,
            image: image.to_path_buf(),
            root,
            staged: None,
            previous: None,
        })
    }
}

impl Drop for DirReplacement<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.staged.take() {
            let _ = std::fs::remove_dir_all(s);
        }
    }
}

impl Replacement for DirReplacement<'_> {
    fn target(&self) -> &Path {
        &self.root
    }

    fn has_present(&self) -> bool {
        self.present
    }

    fn capture_present(&mut self, dest: &Path) -> Result<()> {
        self.source.capture(dest)
    }

    fn plan(&mut self) -> Result<Vec<String>> {
        let s = summary::read(&self.image)?;
        Ok(vec![format!(
            "would take a safety snapshot of {} and replace it with {} file(s), {} bytes",
            self.root.display(),
            s.entries.iter().filter(|e| e.kind == "file").count(),
            s.total_bytes
        )])
    }

    fn apply(&mut self, _context: &RestoreContext) -> Result<Vec<String>> {
        let parent = parent_of(&self.root);
        let staged = fs_util::staging_path(&parent, "restore");
        self.staged = Some(staged.clone());
        let done = extract(&self.image, &staged, None)?;
        // One atomic exchange where the file system can: the directory's name never misses.
        if self.present && fs_util::exchange_durable(&staged, &self.root)? {
            self.previous = Some(staged);
            self.staged = None;
            return Ok(vec![format!(
                "replaced {} ({} file(s), {} bytes)",
                self.root.display(),
                done.files,
                done.bytes
            )]);
        }
        if self.present {
            let previous = fs_util::staging_path(&parent, "previous");
            fs_util::rename_durable(&self.root, &previous)?;
            self.previous = Some(previous);
        }
        if let Err(e) = fs_util::rename_durable(&staged, &self.root) {
            if let Some(prev) = self.previous.take() {
                let _ = fs_util::rename_durable(&prev, &self.root);
            }
            return Err(e);
        }
        self.staged = None;
        Ok(vec![format!(
            "replaced {} ({} file(s), {} bytes)",
            self.root.display(),
            done.files,
            done.bytes
        )])
    }

    fn check(&mut self) -> Result<Vec<String>> {
        check_sizes(&self.image, &self.root, None)?;
        Ok(vec!["checked the restored directory".into()])
    }

    fn rollback(&mut self) -> bool {
        let Some(prev) = self.previous.take() else {
            return std::fs::remove_dir_all(&self.root).is_ok();
        };
        if fs_util::exchange_durable(&prev, &self.root).unwrap_or(false) {
            let _ = std::fs::remove_dir_all(&prev);
            return true;
        }
        let parent = parent_of(&self.root);
        let failed = fs_util::staging_path(&parent, "failed");
        let ok = fs_util::rename_durable(&self.root, &failed).is_ok()
            && fs_util::rename_durable(&prev, &self.root).is_ok();
        if ok {
            let _ = std::fs::remove_dir_all(&failed);
        }
        ok
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(prev) = self.previous.take() {
            std::fs::remove_dir_all(&prev).map_err(|e| Error::io("remove", &prev, e))?;
        }
        Ok(())
    }
}
