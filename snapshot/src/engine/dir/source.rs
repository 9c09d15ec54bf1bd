//! [`DirectorySource`]: a directory of files — the CK Empire `data/` of CSV and JSON files — as
//! one archive per snapshot, with a summary and a report.
//!
//! Every file is read so that the archive holds one complete version of it (see `read.rs`): a
//! file that changed while it was read is read again (a small file in memory; a large one by
//! starting the archive over), within a budget, after which the snapshot fails naming it. A file that cannot be read fails
//! the snapshot naming it — unless the source allows a partial snapshot, whose summary then says
//! `partial` and lists what is missing. Symbolic links are recorded as links and never
//! followed; sockets, FIFOs and devices are skipped and listed.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use globset::GlobSet;

use crate::engine::Options;
use crate::engine::dir::archive::{ArchiveFormat, Writer};
use crate::engine::dir::extract::extract;
use crate::engine::dir::partial::PartialReplacement;
use crate::engine::dir::read::{self, Added};
use crate::engine::dir::replace::{DirReplacement, parent_of};
use crate::engine::dir::select::globs;
use crate::engine::dir::summary::{self, FileEntry, Summary};
use crate::engine::dir::walk::{self, Entry, Kind};
use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::source::{Capture, CheckLevel, Replacement, Source};
use crate::stats::DbStats;

/// Starts of the archive (a large file changed while it was streamed) before the snapshot
/// fails naming the file.
const ATTEMPTS: u32 = 5;

/// A directory tree, snapshotted as one archive (see the module docs).
///
/// ```no_run
/// # fn main() -> snapshot::Result<()> {
/// use snapshot::{DirectorySource, LocalStore, SnapshotManager, SnapshotRequest};
///
/// let data = DirectorySource::new("data")
///     .include(["**/*.csv", "**/*.json"])?
///     .exclude(["tmp/**"])?;
/// let manager = SnapshotManager::builder()
///     .source(data)
///     .store(LocalStore::open("backups")?)
///     .build()?;
/// manager.snapshot(SnapshotRequest::new("weekly_local_backup"))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DirectorySource {
    root: PathBuf,
    include: Vec<String>,
    exclude: Vec<String>,
    matchers: Arc<(GlobSet, GlobSet)>,
    format: ArchiveFormat,
    allow_partial: bool,
}

/// A path as an archive member name: UTF-8 as it is; other bytes percent-encoded (the summary
/// keeps the exact bytes).
fn member_name(rel: &Path) -> String {
    match rel.to_str() {
        Some(s) if !s.contains('%') => format!("{}{s}", summary::FILES),
        _ => {
            let mut out = String::from(summary::FILES);
            for &b in rel.as_os_str().as_bytes() {
                if b.is_ascii() && b != b'%' && !b.is_ascii_control() {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    }
}

impl DirectorySource {
    /// The directory at `root`, every file of it, archived as zip.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        // `data/` and `./data` are `data`: one directory, one name in the catalog.
        let root: PathBuf = root.into();
        let normal: PathBuf = root.components().collect();
        DirectorySource {
            root: if normal.as_os_str().is_empty() {
                root
            } else {
                normal
            },
            include: Vec::new(),
            exclude: Vec::new(),
            matchers: Arc::new((GlobSet::empty(), GlobSet::empty())),
            format: ArchiveFormat::Zip,
            allow_partial: false,
        }
    }

    /// Only the files matching one of these globs, relative to the root (`**/*.csv`; `*`
    /// stays within one directory, a directory's name takes everything below it).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `glob`) for a pattern that does not parse.
    pub fn include<I, S>(mut self, patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.include = patterns.into_iter().map(Into::into).collect();
        self.rebuild()
    }

    /// Not the files (or directories) matching one of these globs.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `glob`) for a pattern that does not parse.
    pub fn exclude<I, S>(mut self, patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude = patterns.into_iter().map(Into::into).collect();
        self.rebuild()
    }

    fn rebuild(mut self) -> Result<Self> {
        self.matchers = Arc::new((globs(&self.include)?, globs(&self.exclude)?));
        Ok(self)
    }

    /// The archive format (default: zip).
    pub fn format(mut self, format: ArchiveFormat) -> Self {
        self.format = format;
        self
    }

    /// Take a snapshot even when some files cannot be read: its summary's status is then
    /// `partial` and lists them (default: such a snapshot fails, naming the file).
    pub fn allow_partial(mut self, allow: bool) -> Self {
        self.allow_partial = allow;
        self
    }

    /// The directory at `root` with settings by name, as a configuration's
    /// `[database.options]` gives them: `include` and `exclude` (lists of globs), `format`
    /// (`"zip"` or `"tar.zst"`) and `allow_partial` (a boolean).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `database.options`) naming an unknown setting or a value
    /// of the wrong type; a glob that does not parse (field `glob`).
    pub fn with_options(root: impl Into<PathBuf>, options: &Options) -> Result<Self> {
        let bad = |key: &str, want: &str| {
            Error::invalid("database.options", format!("{key} must be {want}"))
        };
        let list = |key: &str, v: &serde_json::Value| -> Result<Vec<String>> {
            v.as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
                .ok_or_else(|| bad(key, "a list of globs"))
        };
        let mut source = DirectorySource::new(root);
        for (key, value) in options {
            source = match key.as_str() {
                "include" => source.include(list(key, value)?)?,
                "exclude" => source.exclude(list(key, value)?)?,
                "format" => match value.as_str() {
                    Some("zip") => source.format(ArchiveFormat::Zip),
                    Some("tar.zst" | "tar+zstd" | "tar.zstd") => {
                        source.format(ArchiveFormat::TarZstd)
                    }
                    _ => return Err(bad(key, "\"zip\" or \"tar.zst\"")),
                },
                "allow_partial" => {
                    source.allow_partial(value.as_bool().ok_or_else(|| bad(key, "true or false"))?)
                }
                other => {
                    return Err(Error::invalid(
                        "database.options",
                        format!(
                            "unknown setting {other:?} of a directory (include, exclude, format, \
                             allow_partial)"
                        ),
                    ));
                }
            };
        }
        Ok(source)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Archives the tree into `dest`, with `previous` (the summary of this directory's previous
    /// snapshot) for the report.
    pub(crate) fn archive(
        &self,
        dest: &Path,
        previous: Option<&Summary>,
        backup_type: &str,
    ) -> Result<Summary> {
        let mut restarts = 0;
        loop {
            match self.archive_once(dest, previous, backup_type) {
                Err(Changed(path)) if restarts + 1 < ATTEMPTS => {
                    restarts += 1;
                    crate::fs_util::remove_if_exists(dest)?;
                    tracing::debug!(path = %path.display(), "a large file changed while archived; starting over");
                }
                Err(Changed(path)) => {
                    return Err(Error::Busy {
                        path,
                        attempts: ATTEMPTS,
                        waited_ms: 0,
                        detail: "the file kept changing while it was archived".into(),
                    });
                }
                Ok(r) => return r,
            }
        }
    }

    /// The entries the snapshot would take now.
    pub(crate) fn tree(&self) -> Result<walk::Tree> {
        walk::walk(&self.root, &self.matchers.0, &self.matchers.1)
    }

    fn archive_once(
        &self,
        dest: &Path,
        previous: Option<&Summary>,
        backup_type: &str,
    ) -> std::result::Result<Result<Summary>, Changed> {
        let tree = match self.tree() {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let mut writer = match Writer::create(dest, self.format) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        let mut s = Summary {
            backup_timestamp: chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
            backup_type: backup_type.to_string(),
            files_exported: Default::default(),
            file_list: Default::default(),
            backup_size_mb: 0.0,
            status: "completed".into(),
            root: self.root.display().to_string(),
            total_bytes: 0,
            entries: Vec::with_capacity(tree.entries.len()),
            missing: Vec::new(),
            skipped: tree
                .skipped
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        };
        for e in &tree.entries {
            match self.add(&mut writer, e, dest) {
                Ok(Some(entry)) => s.entries.push(entry),
                Ok(None) => {}
                Err(Added::Changed(p)) => return Err(Changed(p)),
                Err(Added::Unreadable(p, why)) if self.allow_partial => {
                    s.missing.push((p.to_string_lossy().into_owned(), why));
                }
                Err(Added::Unreadable(p, why)) => {
                    return Ok(Err(Error::invalid(
                        "source",
                        format!("cannot read {}: {why}", p.display()),
                    )));
                }
                Err(Added::Failed(e)) => return Ok(Err(e)),
            }
        }
        if !s.missing.is_empty() {
            s.status = "partial".into();
        }
        s.tally();
        // Compact: with one entry per file it is most of an archive's overhead.
        let summary = match serde_json::to_vec(&s) {
            Ok(j) => j,
            Err(e) => return Ok(Err(Error::invalid("summary", e.to_string()))),
        };
        let report = summary::report(&s, previous);
        let r = writer
            .add_bytes(summary::SUMMARY, &summary, dest)
            .and_then(|()| writer.add_bytes(summary::REPORT, report.as_bytes(), dest))
            .and_then(|()| writer.finish(dest))
            .map(|()| s);
        Ok(r)
    }

    /// Adds one entry; `None` for an entry that vanished while the tree was walked.
    fn add(
        &self,
        w: &mut Writer,
        e: &Entry,
        at: &Path,
    ) -> std::result::Result<Option<FileEntry>, Added> {
        let path = self.root.join(&e.rel);
        let name = member_name(&e.rel);
        let mut entry = FileEntry {
            path: e.rel.to_string_lossy().into_owned(),
            path_bytes: e.rel.to_str().is_none().then(|| {
                base64::engine::general_purpose::STANDARD.encode(e.rel.as_os_str().as_bytes())
            }),
            member: name.clone(),
            kind: String::new(),
            target: None,
            size: 0,
            mode: e.mode,
            mtime_ns: e.mtime_ns,
            blake3: None,
        };
        match &e.kind {
            Kind::Dir => {
                entry.kind = "dir".into();
                w.add_dir(&format!("{name}/"), e.mode, e.mtime_ns, at)
                    .map_err(Added::Failed)?;
            }
            Kind::Symlink(target) => {
                entry.kind = "symlink".into();
                let t = target.to_string_lossy().into_owned();
                w.add_symlink(&name, &t, at).map_err(Added::Failed)?;
                entry.target = Some(t);
            }
            Kind::File => {
                entry.kind = "file".into();
                let Some((stamp, hash)) = read::add_file(w, &path, &name, at)? else {
                    return Ok(None);
                };
                entry.size = stamp.size;
                entry.mode = stamp.mode;
                entry.mtime_ns = stamp.mtime_ns;
                entry.blake3 = Some(format!("blake3:{}", hash.to_hex()));
            }
        }
        Ok(Some(entry))
    }

    /// Reads `report.html` of an archive of this kind.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] (engine `dir`) for a damaged archive.
    pub fn report_of(image: &Path) -> Result<String> {
        summary::read_report(image)
    }

    /// Reads the summary of an archive of this kind.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] (engine `dir`) for a damaged archive.
    pub fn summary_of(image: &Path) -> Result<Summary> {
        summary::read(image)
    }
}

/// A large file changed while it was streamed into the archive: start over.
struct Changed(PathBuf);

impl Source for DirectorySource {
    fn kind(&self) -> &'static str {
        super::KIND
    }

    fn path(&self) -> &Path {
        &self.root
    }

    fn extension(&self) -> &str {
        self.format.extension()
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        self.archive(dest, None, "snapshot").map(drop)
    }

    fn capture_with(&self, dest: &Path, context: &Capture<'_>) -> Result<()> {
        let previous = context.previous.and_then(|p| Self::summary_of(p).ok());
        // The original's backup type: a scheduled job's name, else the operation.
        let kind = match (context.operation, context.entity_type) {
            (crate::record::SCHEDULED, Some(job)) => job,
            (op, _) if !op.is_empty() => op,
            _ => "snapshot",
        };
        self.archive(dest, previous.as_ref(), kind).map(drop)
    }

    fn wants_previous(&self) -> bool {
        true
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        crate::engine::dir::check::check(image, level)
    }

    fn prepare_replace(&self) -> Result<()> {
        Ok(())
    }

    fn begin_restore(
        &self,
        image: &Path,
        _snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        Ok(Some(Box::new(DirReplacement::new(self, image)?)))
    }

    fn begin_restore_paths(
        &self,
        image: &Path,
        _snapshot_id: &str,
        paths: &[String],
    ) -> Result<Box<dyn Replacement + '_>> {
        Ok(Box::new(PartialReplacement::new(self, image, paths)?))
    }

    fn materialize(
        &self,
        image: &Path,
        target: &Path,
        paths: &[String],
    ) -> Result<Option<Vec<String>>> {
        let only = if paths.is_empty() {
            None
        } else {
            Some(globs(paths)?)
        };
        // Extracted beside the target, then renamed: a failure leaves no half tree there.
        let staged = StagingGuard::new(fs_util::staging_path(&parent_of(target), "extract"));
        let done = extract(image, staged.path(), only.as_ref())?;
        fs_util::rename_durable(staged.path(), target)?;
        staged.disarm();
        Ok(Some(vec![format!(
            "wrote {} file(s), {} bytes, into {}",
            done.files,
            done.bytes,
            target.display()
        )]))
    }

    fn restore_dir(&self) -> Option<PathBuf> {
        None
    }

    fn compare_paths(&self, image: &Path) -> Result<crate::PathDiff> {
        crate::engine::dir::compare::compare(&self.root, &self.tree()?, image)
    }

    fn statistics(&self, _table: Option<&str>, _order_by: Option<&str>) -> Result<DbStats> {
        crate::engine::dir::stats::statistics(self.kind(), &self.root, &self.tree()?)
    }
}
