//! `backup_summary.json`: every field of the original CK Empire summary (timestamp, type, files
//! exported per type, the file list per type, size, status), and what the original lacked — each
//! entry's path, size, mode, modification time and blake3, what could not be read (a `partial`
//! snapshot says so), the special files skipped — and `report.html`, a page a person can read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::engine::dir::archive;
use serde::{Deserialize, Serialize};

/// The member name of the summary in an archive.
pub(crate) const SUMMARY: &str = "backup_summary.json";
/// The member name of the report in an archive.
pub(crate) const REPORT: &str = "report.html";
/// Where the tree's entries are in an archive.
pub(crate) const FILES: &str = "files/";

/// One entry of the tree in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The path relative to the root, for people (lossy where it is not UTF-8).
    pub path: String,
    /// The exact bytes of the path, base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<String>,
    /// The archive member holding it.
    pub member: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// A symlink's target, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// `blake3:` checksum of the content (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

impl FileEntry {
    /// The exact relative path.
    pub fn rel_path(&self) -> PathBuf {
        match &self.path_bytes {
            Some(b) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_else(|_| self.path.clone().into_bytes());
                PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
            }
            None => PathBuf::from(&self.path),
        }
    }
}

/// `backup_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// When the archive was started (local time, as the original wrote it).
    pub backup_timestamp: String,
    /// The original's backup type (`weekly_local_backup`) or the snapshot's operation.
    pub backup_type: String,
    /// Files per type: `csv_files`, `json_files`, `other_files`.
    pub files_exported: BTreeMap<String, usize>,
    /// File names per type.
    pub file_list: BTreeMap<String, Vec<String>>,
    /// The total size of the files, MB.
    pub backup_size_mb: f64,
    /// `completed`, or `partial` when some files could not be read (see `missing`).
    pub status: String,
    /// The directory snapshotted.
    pub root: String,
    /// Total bytes of the files.
    pub total_bytes: u64,
    /// Every entry kept, parents before children.
    pub entries: Vec<FileEntry>,
    /// Files that could not be read, with why (only in a `partial` snapshot).
    #[serde(default)]
    pub missing: Vec<(String, String)>,
    /// Special files (sockets, FIFOs, devices) skipped.
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// The largest summary (or report) read back.
const MAX_SUMMARY: u64 = 512 << 20;

/// Reads the summary of the archive at `image`.
///
/// # Errors
/// [`Error::NotADatabase`](crate::Error::NotADatabase) (engine `dir`) for a damaged archive.
pub(crate) fn read(image: &Path) -> crate::error::Result<Summary> {
    let bytes = archive::read_member(image, SUMMARY, MAX_SUMMARY)?;
    serde_json::from_slice(&bytes).map_err(|e| archive::damaged(image, e))
}

/// Reads `report.html` of the archive at `image`.
///
/// # Errors
/// [`Error::NotADatabase`](crate::Error::NotADatabase) (engine `dir`) for a damaged archive.
pub(crate) fn read_report(image: &Path) -> crate::error::Result<String> {
    let bytes = archive::read_member(image, REPORT, MAX_SUMMARY)?;
    String::from_utf8(bytes).map_err(|e| archive::damaged(image, e))
}

/// The type a file counts as in the summary: by its extension, as the original sorted them.
pub(crate) fn type_of(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => "csv_files",
        Some("json") => "json_files",
        Some("pdf" | "html" | "htm") => "pdf_files",
        _ => "other_files",
    }
}

impl Summary {
    /// Fills the per-type counts and lists and the totals from the entries.
    pub(crate) fn tally(&mut self) {
        self.files_exported.clear();
        self.file_list.clear();
        self.total_bytes = 0;
        for e in self.entries.iter().filter(|e| e.kind == "file") {
            let t = type_of(Path::new(&e.path));
            *self.files_exported.entry(t.into()).or_default() += 1;
            let name = Path::new(&e.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.file_list.entry(t.into()).or_default().push(name);
            self.total_bytes += e.size;
        }
        self.backup_size_mb = (self.total_bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0;
    }
}

/// What changed between two summaries of the same directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Paths only in the newer one.
    pub added: Vec<String>,
    /// Paths only in the older one.
    pub removed: Vec<String>,
    /// Files in both whose content differs.
    pub changed: Vec<String>,
}

/// The changes from `old` to `new` (files and links; directories by presence).
pub fn changes(old: &Summary, new: &Summary) -> Changes {
    let index = |s: &Summary| -> BTreeMap<String, (String, Option<String>, Option<String>)> {
        s.entries
            .iter()
            .map(|e| {
                (
                    e.path.clone(),
                    (e.kind.clone(), e.blake3.clone(), e.target.clone()),
                )
            })
            .collect()
    };
    let (a, b) = (index(old), index(new));
    let mut c = Changes::default();
    for (p, v) in &b {
        match a.get(p) {
            None => c.added.push(p.clone()),
            Some(w) if w != v => c.changed.push(p.clone()),
            Some(_) => {}
        }
    }
    c.removed = a.keys().filter(|p| !b.contains_key(*p)).cloned().collect();
    c
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `report.html`: the files by type with their sizes, and what changed since `previous` (the
/// summary of this directory's previous snapshot, when there is one). Self-contained: no
/// script, no external style or font.
pub(crate) fn report(summary: &Summary, previous: Option<&Summary>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Backup of {}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}td.n{{text-align:right}}</style>\
         </head><body>\n<h1>Backup of {}</h1>\n<p>Taken {}; status <b>{}</b>; {} file(s), {} bytes.</p>\n",
        escape(&summary.root),
        escape(&summary.root),
        escape(&summary.backup_timestamp),
        escape(&summary.status),
        summary.entries.iter().filter(|e| e.kind == "file").count(),
        summary.total_bytes
    );
    h.push_str("<h2>Changes since the previous snapshot</h2>\n");
    match previous {
        None => h.push_str("<p id=\"changes\">No previous snapshot of this directory.</p>\n"),
        Some(prev) => {
            let c = changes(prev, summary);
            let _ = write!(
                h,
                "<p id=\"changes\">{} added, {} removed, {} changed.</p>\n<ul>\n",
                c.added.len(),
                c.removed.len(),
                c.changed.len()
            );
            for (what, paths) in [
                ("added", &c.added),
                ("removed", &c.removed),
                ("changed", &c.changed),
            ] {
                for p in paths {
                    let _ = writeln!(h, "<li class=\"{what}\">{what}: {}</li>", escape(p));
                }
            }
            h.push_str("</ul>\n");
        }
    }
    for (t, names) in &summary.file_list {
        let _ = write!(
            h,
            "<h2>{} ({})</h2>\n<table><tr><th>file</th><th>bytes</th></tr>\n",
            escape(t),
            names.len()
        );
        for e in summary
            .entries
            .iter()
            .filter(|e| e.kind == "file" && type_of(Path::new(&e.path)) == t)
        {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(&e.path),
                e.size
            );
        }
        h.push_str("</table>\n");
    }
    if !summary.missing.is_empty() {
        h.push_str("<h2>Not backed up</h2>\n<ul>\n");
        for (p, why) in &summary.missing {
            let _ = writeln!(h, "<li>{}: {}</li>", escape(p), escape(why));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body></html>\n");
    h
}
