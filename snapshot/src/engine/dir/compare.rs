//! A directory compared with one of its snapshots (`snapshot diff ID`): files and links added,
//! removed and changed since, with sizes. A live file of the snapshot's size is hashed and its
//! blake3 compared with the summary's, so a change that keeps the size is found too.

use std::collections::BTreeMap;

use std::path::Path;

use crate::engine::dir::summary::{self, FileEntry};
use crate::engine::dir::walk::{Kind, Tree};
use crate::error::{Error, Result};
use crate::path_diff::{PathChange, PathDiff};

/// Compares the live `tree` under `root` with the summary of the archive at `image`.
///
/// # Errors
/// [`Error::NotADatabase`] (engine `dir`) for a damaged archive; the walk's errors; I/O errors
/// naming a live file that cannot be read.
pub(crate) fn compare(root: &Path, tree: &Tree, image: &Path) -> Result<PathDiff> {
    let summary = summary::read(image)?;
    let mut old: BTreeMap<std::path::PathBuf, &FileEntry> = summary
        .entries
        .iter()
        .filter(|e| e.kind != "dir")
        .map(|e| (e.rel_path(), e))
        .collect();
    let mut diff = PathDiff::default();
    for e in tree.entries.iter().filter(|e| e.kind != Kind::Dir) {
        let path = root.join(&e.rel);
        // A link's size is its target's length on disk, nothing a person compares: 0 as in the
        // summary.
        let live_size = match e.kind {
            Kind::File => std::fs::symlink_metadata(&path).map_or(0, |m| m.len()),
            _ => 0,
        };
        let name = e.rel.to_string_lossy().into_owned();
        let Some(was) = old.remove(&e.rel) else {
            let size = matches!(e.kind, Kind::File).then_some(live_size);
            diff.added
                .push(PathChange::new(name, None, size.or(Some(0))));
            continue;
        };
        let same = match &e.kind {
            Kind::File if was.kind == "file" => {
                live_size == was.size && {
                    let mut h = blake3::Hasher::new();
                    let file =
                        std::fs::File::open(&path).map_err(|err| Error::io("open", &path, err))?;
                    h.update_reader(file)
                        .map_err(|err| Error::io("read", &path, err))?;
                    was.blake3.as_deref() == Some(&*format!("blake3:{}", h.finalize().to_hex()))
                }
            }
            Kind::Symlink(target) if was.kind == "symlink" => {
                was.target.as_deref() == Some(&*target.to_string_lossy())
            }
            _ => false,
        };
        if same {
            diff.unchanged += 1;
        } else {
            diff.changed
                .push(PathChange::new(name, Some(was.size), Some(live_size)));
        }
    }
    diff.removed = old
        .into_values()
        .map(|e| PathChange::new(e.path.clone(), Some(e.size), None))
        .collect();
    for v in [&mut diff.added, &mut diff.removed, &mut diff.changed] {
        v.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(diff)
}
