//! Putting some files of a snapshot back into the live directory (`restore ID --path
//! 'csv/*.csv'`), the rest of it left as it is: the chosen entries are extracted beside the
//! directory and checked, then renamed into place one by one, each live version they replace
//! moved aside first — so every file is whole at every moment, and a failure puts the moved
//! ones back. A chosen file held open by another process refuses the restore before anything
//! changes. Files of the live directory that the snapshot lacks are kept.

use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::engine::dir::extract::{check_sizes, extract};
use crate::engine::dir::replace::parent_of;
use crate::engine::dir::select::{globs, selects};
use crate::engine::dir::summary;
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::{Replacement, RestoreContext, Source};

/// Replaces the chosen entries of a directory (see the module docs).
pub(crate) struct PartialReplacement<'a> {
    source: &'a dyn Source,
    image: PathBuf,
    root: PathBuf,
    set: GlobSet,
    /// The chosen entries (files and links), relative paths, parents before children.
    chosen: Vec<PathBuf>,
    /// The extracted entries, beside the root.
    staged: Option<PathBuf>,
    /// Where the live versions of replaced entries are moved.
    aside: Option<PathBuf>,
    /// Entries put in place, and whether a live version was moved aside for each.
    placed: Vec<(PathBuf, bool)>,
}

impl<'a> PartialReplacement<'a> {
    /// The entries of `image` that `patterns` choose.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a glob that does not parse or chooses nothing;
    /// [`Error::TargetLocked`] when a chosen live file is open in another process.
    pub(crate) fn new(source: &'a dyn Source, image: &Path, patterns: &[String]) -> Result<Self> {
        let set = globs(patterns)?;
        let summary = summary::read(image)?;
        let chosen: Vec<PathBuf> = summary
            .entries
            .iter()
            .filter(|e| e.kind != "dir")
            .map(|e| e.rel_path())
            .filter(|p| selects(&set, p))
            .collect();
        if chosen.is_empty() {
            return Err(Error::invalid(
                "path",
                format!("no file of the snapshot matches {}", patterns.join(", ")),
            ));
        }
        let root = source.path().to_path_buf();
        let held = crate::source::processes_holding_under(&root)
            .into_iter()
            .find(|(p, _)| p.strip_prefix(&root).is_ok_and(|rel| selects(&set, rel)));
        if let Some((path, pids)) = held {
            return Err(Error::TargetLocked {
                path: path.clone(),
                detail: format!(
                    "{} is {}",
                    path.display(),
                    crate::source::describe_holders(&pids)
                ),
            });
        }
        Ok(PartialReplacement {
            source,
            image: image.to_path_buf(),
            root,
            set,
            chosen,
            staged: None,
            aside: None,
            placed: Vec::new(),
        })
    }

    /// Puts one staged entry in place, moving a live version aside first.
    fn place(&mut self, rel: &Path, staged: &Path, aside: &Path) -> Result<()> {
        let dest = self.root.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        let live = std::fs::symlink_metadata(&dest).ok();
        if live.as_ref().is_some_and(std::fs::Metadata::is_dir) {
            return Err(Error::invalid(
                "path",
                format!("{} is a directory in the live tree", dest.display()),
            ));
        }
        if live.is_some() {
            let kept = aside.join(rel);
            if let Some(parent) = kept.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create directory", parent, e))?;
            }
            std::fs::rename(&dest, &kept).map_err(|e| Error::io("rename", &dest, e))?;
        }
        self.placed.push((rel.to_path_buf(), live.is_some()));
        std::fs::rename(staged.join(rel), &dest).map_err(|e| Error::io("rename", &dest, e))
    }
}

impl Drop for PartialReplacement<'_> {
    fn drop(&mut self) {
        for dir in [self.staged.take(), self.aside.take()]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Replacement for PartialReplacement<'_> {
    fn target(&self) -> &Path {
        &self.root
    }

    fn has_present(&self) -> bool {
        self.root.exists()
    }

    fn capture_present(&mut self, dest: &Path) -> Result<()> {
        self.source.capture(dest)
    }

    fn plan(&mut self) -> Result<Vec<String>> {
        Ok(vec![format!(
            "would take a safety snapshot of {} and put back {} file(s) of the snapshot: {}",
            self.root.display(),
            self.chosen.len(),
            self.chosen
                .iter()
                .take(10)
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )])
    }

    fn apply(&mut self, _context: &RestoreContext) -> Result<Vec<String>> {
        let parent = parent_of(&self.root);
        let staged = fs_util::staging_path(&parent, "restore");
        self.staged = Some(staged.clone());
        let done = extract(&self.image, &staged, Some(&self.set))?;
        let aside = fs_util::staging_path(&parent, "previous");
        fs_util::create_private_dir(&aside)?;
        self.aside = Some(aside.clone());
        for rel in self.chosen.clone() {
            if let Err(e) = self.place(&rel, &staged, &aside) {
                self.rollback();
                return Err(e);
            }
        }
        fs_util::sync_filesystem(&self.root)?;
        Ok(vec![format!(
            "put back {} file(s), {} bytes, into {}",
            done.files,
            done.bytes,
            self.root.display()
        )])
    }

    fn check(&mut self) -> Result<Vec<String>> {
        check_sizes(&self.image, &self.root, Some(&self.set))?;
        Ok(vec!["checked the restored files".into()])
    }

    fn rollback(&mut self) -> bool {
        let Some(aside) = self.aside.clone() else {
            return true;
        };
        let mut ok = true;
        while let Some((rel, had_live)) = self.placed.pop() {
            let dest = self.root.join(&rel);
            let _ = std::fs::remove_file(&dest);
            if had_live {
                ok &= std::fs::rename(aside.join(&rel), &dest).is_ok();
            }
        }
        ok && fs_util::sync_filesystem(&self.root).is_ok()
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(aside) = self.aside.take() {
            std::fs::remove_dir_all(&aside).map_err(|e| Error::io("remove", &aside, e))?;
        }
        Ok(())
    }
}
