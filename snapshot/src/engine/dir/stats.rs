//! `snapshot status` of a directory: its files by type (as the summary counts them) with their
//! bytes — the tree walked, no file read.

use std::collections::BTreeMap;

use std::path::Path;

use crate::engine::dir::summary::type_of;
use crate::engine::dir::walk::{Kind, Tree};
use crate::error::Result;
use crate::stats::{DbStats, FileGroup};

/// The statistics of the directory `root` of engine `kind` from its `tree` (the files its
/// globs take).
///
/// # Errors
/// [`Error::SourceMissing`](crate::Error::SourceMissing) when the root does not exist; I/O
/// errors naming what could not be listed.
pub(crate) fn statistics(kind: &str, root: &Path, tree: &Tree) -> Result<DbStats> {
    let mut groups: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut total = 0;
    for e in tree.entries.iter().filter(|e| e.kind == Kind::File) {
        let bytes = std::fs::symlink_metadata(root.join(&e.rel)).map_or(0, |m| m.len());
        let g = groups.entry(type_of(&e.rel)).or_default();
        g.0 += 1;
        g.1 += bytes;
        total += bytes;
    }
    Ok(DbStats {
        engine: kind.to_string(),
        path: root.to_path_buf(),
        file_bytes: total,
        tables: Vec::new(),
        table: None,
        files: groups
            .into_iter()
            .map(|(group, (files, bytes))| FileGroup {
                group: group.to_string(),
                files,
                bytes,
            })
            .collect(),
    })
}
