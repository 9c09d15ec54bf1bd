//! Putting an archive's tree back into a directory: every entry, or those a glob selects, with
//! their modes and modification times, made durable before the caller swaps the directory in.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use globset::GlobSet;

use crate::engine::dir::archive;
use crate::engine::dir::select::selects;
use crate::engine::dir::summary::{self, FileEntry};
use crate::error::{Error, Result};
use crate::fs_util;

/// Whether `rel` stays inside the directory it is put in (no `..`, not absolute).
fn enclosed(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, Component::Normal(_)))
}

/// What [`extract`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Directories and links made.
    pub others: usize,
}

/// Writes the entries of the archive at `image` into `dir` (created when missing): every
/// entry, or with `only` those whose path it matches (and the directories above them). Files
/// are new (an existing file is an error: extract into an empty directory), content checked
/// against the summary's blake3 as it is written; modes and modification times are set; the
/// whole tree is made durable (one `syncfs`) before returning.
///
/// # Errors
/// [`Error::NotADatabase`] (engine `dir`) for a damaged archive or content that does not match
/// its summary; [`Error::InvalidInput`] for a path that would leave `dir`; I/O errors naming
/// the path.
pub fn extract(image: &Path, dir: &Path, only: Option<&GlobSet>) -> Result<Extracted> {
    let summary = summary::read(image)?;
    let selected = |e: &FileEntry| match only {
        None => true,
        Some(g) => selects(g, &e.rel_path()),
    };
    let mut by_member: BTreeMap<String, &FileEntry> = BTreeMap::new();
    let mut wanted_dirs: Vec<PathBuf> = Vec::new();
    for e in &summary.entries {
        let rel = e.rel_path();
        if !enclosed(&rel) {
            return Err(Error::invalid(
                "path",
                format!("{} would leave the directory", rel.display()),
            ));
        }
        if e.kind != "dir" && selected(e) {
            by_member.insert(e.member.clone(), e);
            if let Some(parent) = rel.parent() {
                wanted_dirs.push(parent.to_path_buf());
            }
        } else if e.kind == "dir" && only.is_none() {
            wanted_dirs.push(rel);
        }
    }
    fs_util::create_private_dir(dir)?;
    let mut out = Extracted::default();
    for d in &wanted_dirs {
        let p = dir.join(d);
        fs::create_dir_all(&p).map_err(|e| Error::io("create directory", &p, e))?;
    }
    archive::for_each(image, &mut |m| {
        let Some(e) = by_member.remove(&m.name) else {
            return Ok(());
        };
        let dest = dir.join(e.rel_path());
        match e.kind.as_str() {
            "symlink" => {
                symlink(e.target.as_deref().unwrap_or_default(), &dest)
                    .map_err(|err| Error::io("create link", &dest, err))?;
                set_link_mtime(&dest, e.mtime_ns);
                out.others += 1;
            }
            _ => {
                write_file(image, m.content, &dest, e)?;
                out.files += 1;
                out.bytes += e.size;
            }
        }
        Ok(())
    })?;
    if let Some((member, _)) = by_member.into_iter().next() {
        return Err(archive::damaged(
            image,
            format!("{member} is in the summary but not in the archive"),
        ));
    }
    // Directories last, deepest first: writing into them changed their times.
    for e in summary.entries.iter().rev().filter(|e| e.kind == "dir") {
        let p = dir.join(e.rel_path());
        if p.is_dir() {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(e.mode));
            set_mtime(&p, e.mtime_ns);
            out.others += 1;
        }
    }
    fs_util::sync_filesystem(dir)?;
    Ok(out)
}

/// Checks that every file of the archive at `image` (or of those `only` chooses) is in `dir`
/// with its size: the check of a restore after the swap, when the content was already checked
/// against its blake3 as it was written.
///
/// # Errors
/// [`Error::NotADatabase`] (engine `dir`) naming the first file that is not.
pub(crate) fn check_sizes(image: &Path, dir: &Path, only: Option<&GlobSet>) -> Result<()> {
    let s = summary::read(image)?;
    for e in s.entries.iter().filter(|e| e.kind == "file") {
        let rel = e.rel_path();
        if only.is_some_and(|g| !selects(g, &rel)) {
            continue;
        }
        let p = dir.join(&rel);
        let len = fs::symlink_metadata(&p).map(|m| m.len()).ok();
        if len != Some(e.size) {
            return Err(Error::NotADatabase {
                engine: "dir",
                path: p,
                detail: format!("restored with {len:?} bytes, the snapshot has {}", e.size),
            });
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime_ns: i128) {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(mtime_ns.max(0)).unwrap_or(0));
    if let Ok(f) = fs::File::open(path) {
        let _ = f.set_modified(t);
    }
}

/// Sets a symbolic link's own modification time (the link, not what it points to).
fn set_link_mtime(path: &Path, mtime_ns: i128) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT, utimensat};
    let t = Timespec {
        tv_sec: i64::try_from(mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0),
        tv_nsec: i64::try_from(mtime_ns.rem_euclid(1_000_000_000)).unwrap_or(0) as _,
    };
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: t,
    };
    let _ = utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW);
}

/// Writes one file from `content`, checking its size and blake3, then its mode and time.
fn write_file(image: &Path, content: &mut dyn Read, dest: &Path, e: &FileEntry) -> Result<()> {
    let mut f = fs_util::create_new_private(dest)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = content
            .read(&mut buf)
            .map_err(|err| archive::damaged(image, err))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        f.write_all(&buf[..k])
            .map_err(|err| Error::io("write", dest, err))?;
        n += k as u64;
    }
    let got = format!("blake3:{}", hasher.finalize().to_hex());
    if n != e.size || Some(&got) != e.blake3.as_ref() {
        return Err(archive::damaged(
            image,
            format!("{}: {n} bytes {got} do not match the summary", e.path),
        ));
    }
    f.set_permissions(fs::Permissions::from_mode(e.mode))
        .map_err(|err| Error::io("chmod", dest, err))?;
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(e.mtime_ns.max(0)).unwrap_or(0));
    f.set_modified(t)
        .map_err(|err| Error::io("set time", dest, err))?;
    Ok(())
}
