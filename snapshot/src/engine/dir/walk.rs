//! The entries of a directory tree, in a stable order: regular files, directories and symbolic
//! links (recorded as links, never followed), with what a snapshot keeps of each; special files
//! (sockets, FIFOs, devices) are set aside and listed.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::GlobSet;

use crate::engine::dir::select::selects;
use crate::error::{Error, Result};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    /// A symbolic link and its target, as written.
    Symlink(PathBuf),
}

/// One entry of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The path relative to the root.
    pub(crate) rel: PathBuf,
    pub(crate) kind: Kind,
    /// Permission bits.
    pub(crate) mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub(crate) mtime_ns: i128,
}

/// The tree below a root: its entries (parents before children, names sorted) and the special
/// files skipped.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    pub(crate) entries: Vec<Entry>,
    pub(crate) skipped: Vec<PathBuf>,
}

/// Modification time of `m` in nanoseconds.
pub(crate) fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn io(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::io(op, path, e)
}

/// Walks `root` (which must be a directory), keeping the files that `include` matches (all when
/// empty) and `exclude` does not; directories are always walked (their entries recorded when
/// something below is kept, so empty directories are kept too unless excluded).
///
/// # Errors
/// [`Error::SourceMissing`] when `root` does not exist; [`Error::InvalidInput`] when it is not a
/// directory; I/O errors naming the entry that could not be listed.
pub(crate) fn walk(root: &Path, include: &GlobSet, exclude: &GlobSet) -> Result<Tree> {
    let meta = fs::metadata(root).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::SourceMissing {
                kind: "dir",
                path: root.to_path_buf(),
            }
        } else {
            io("stat", root, e)
        }
    })?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "source",
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut tree = Tree::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<OsString> = fs::read_dir(&dir)
            .map_err(|e| io("list", &dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io("list", &dir, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let m = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // gone meanwhile
                Err(e) => return Err(io("stat", &path, e)),
            };
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                if exclude.is_match(&rel) {
                    continue;
                }
                subdirs.push(rel.clone());
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink(fs::read_link(&path).map_err(|e| io("read link", &path, e))?)
            } else if ft.is_file() {
                Kind::File
            } else {
                // Sockets, FIFOs, devices: nothing a file copy can keep.
                tree.skipped.push(rel);
                continue;
            };
            if kind != Kind::Dir
                && ((!include.is_empty() && !selects(include, &rel)) || exclude.is_match(&rel))
            {
                continue;
            }
            tree.entries.push(Entry {
                rel,
                kind,
                mode: m.mode() & 0o7777,
                mtime_ns: mtime_ns(&m),
            });
        }
        // Depth first, names in order: push in reverse so the smallest comes out first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}
