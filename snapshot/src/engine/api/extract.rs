//! An archive unpacked into a new directory (`restore ID --to DIR`), all of it or the members
//! chosen by globs (`--path 'observations/2016/*.csv'`).

use std::fs;
use std::path::Path;

use globset::GlobSetBuilder;

use crate::engine::api::archive::{Archive, METADATA, safe_name};
use crate::error::{Error, Result};
use crate::fs_util;

/// Unpacks the archive `image` into `target` (which must not exist): every member, or those
/// matching `paths`; the metadata always. Returns the members written.
///
/// # Errors
/// [`Error::InvalidInput`] (field `path`) for a glob that does not parse;
/// [`Error::AlreadyExists`] when `target` exists; [`Error::NotADatabase`] for a member whose
/// name leaves the folder; I/O errors naming the path.
pub(crate) fn extract(image: &Path, target: &Path, paths: &[String]) -> Result<Vec<String>> {
    let mut set = GlobSetBuilder::new();
    for p in paths {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::invalid("path", format!("{p}: {e}")))?;
        set.add(g);
    }
    let set = set
        .build()
        .map_err(|e| Error::invalid("path", e.to_string()))?;
    if target.exists() {
        return Err(Error::AlreadyExists {
            key: target.display().to_string(),
        });
    }
    let mut archive = Archive::open(image)?;
    let staged = fs_util::StagingGuard::new(fs_util::staging_path(
        target.parent().unwrap_or(Path::new(".")),
        "extract",
    ));
    fs::create_dir(staged.path()).map_err(|e| Error::io("create", staged.path(), e))?;
    let mut written = Vec::new();
    for name in archive.names() {
        if name.ends_with('/') {
            continue;
        }
        if safe_name(&name).is_err() {
            return Err(Error::NotADatabase {
                engine: "api",
                path: image.to_path_buf(),
                detail: format!("member {name:?} leaves the archive's folder"),
            });
        }
        if !paths.is_empty() && name != METADATA && !set.is_match(&name) {
            continue;
        }
        archive.copy_member(&name, &staged.path().join(&name))?;
        written.push(name);
    }
    if !paths.is_empty() && written.iter().all(|n| n == METADATA) {
        return Err(Error::invalid(
            "path",
            format!("no member of the archive matches {}", paths.join(", ")),
        ));
    }
    for name in &written {
        fs_util::sync_file(&staged.path().join(name))?;
    }
    fs_util::rename_durable(staged.path(), target)?;
    staged.disarm();
    Ok(written)
}
