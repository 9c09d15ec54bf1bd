//! The archive of a run: one zip with the lookups, each resource's chunks as CSV and JSON-lines
//! files in folders by year (`observations/2016/observations_2016-03.csv`), and
//! `metadata.json` last — the range, the resources, rows per chunk, the lookups' counts, the
//! run's times, whether it was resumed, and every member's size and blake3. Members carry a
//! fixed time, so a resumed run's archive holds exactly the bytes of an uninterrupted one but
//! for the metadata's times and counters.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zip::ZipArchive;

use crate::engine::api::config::ChunkUnit;
use crate::engine::api::progress::{FileDone, LookupDone};
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::CheckLevel;

/// The metadata's name in the archive.
pub(crate) const METADATA: &str = "metadata.json";

/// The format written in the metadata.
pub(crate) const FORMAT: &str = "snapshot-api/1";

/// A chunk as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// `2016-03` (months) or the first day.
    pub label: String,
    /// The window's first instant.
    pub from: DateTime<Utc>,
    /// The instant after its last (exclusive).
    pub to: DateTime<Utc>,
    /// Whether the window reaches its natural end (false for the month cut by the run's end).
    pub whole: bool,
    /// Rows.
    pub rows: u64,
    /// The CSV member: name, size, blake3.
    pub csv: FileMeta,
    /// The JSON-lines member.
    pub jsonl: FileMeta,
    /// The CSV's columns.
    pub columns: Vec<String>,
    /// Whether it was taken from the previous archive instead of fetched.
    pub reused: bool,
}

/// A member of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Its name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// `blake3:<hex>`.
    pub blake3: String,
}

impl From<&FileDone> for FileMeta {
    fn from(f: &FileDone) -> Self {
        FileMeta {
            name: f.name.clone(),
            bytes: f.bytes,
            blake3: f.blake3.clone(),
        }
    }
}

/// A resource as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMeta {
    /// Its path under the base URL.
    pub path: String,
    /// The field its windows are on.
    pub time_field: String,
    /// Its rows, all chunks together.
    pub rows: u64,
    /// Its chunks, in time order.
    pub chunks: Vec<ChunkMeta>,
}

/// A lookup as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupMeta {
    /// Its rows.
    pub rows: u64,
    /// Its member.
    pub file: FileMeta,
}

/// `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// `snapshot-api/1`.
    pub format: String,
    /// The API's base URL, without credentials.
    pub base_url: String,
    /// The settings' fingerprint (a later run reuses this archive's chunks only with the same).
    pub fingerprint: String,
    /// The range's first instant.
    pub from: DateTime<Utc>,
    /// The range's end (exclusive).
    pub to: DateTime<Utc>,
    /// How the range was cut.
    pub chunk: ChunkUnit,
    /// When the run started (its first start, for a resumed run).
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Whether it was resumed after an interruption.
    pub resumed: bool,
    /// How many times.
    pub resumes: u32,
    /// Requests this run sent (the last part of a resumed run), retries included.
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// Rows per chunk label and resource (`{"2016-03": {"observations": 31000}}`).
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// The resources, by name.
    pub resources: BTreeMap<String, ResourceMeta>,
    /// The lookups, by name.
    pub lookups: BTreeMap<String, LookupMeta>,
}

impl Metadata {
    /// Every member the metadata lists, lookups first.
    pub fn members(&self) -> Vec<(&FileMeta, Option<u64>)> {
        let mut out: Vec<(&FileMeta, Option<u64>)> = self
            .lookups
            .values()
            .map(|l| (&l.file, Some(l.rows)))
            .collect();
        for r in self.resources.values() {
            for c in &r.chunks {
                out.push((&c.csv, None));
                out.push((&c.jsonl, Some(c.rows)));
            }
        }
        out
    }
}

impl From<&LookupDone> for LookupMeta {
    fn from(l: &LookupDone) -> Self {
        LookupMeta {
            rows: l.rows,
            file: (&l.file).into(),
        }
    }
}

pub(crate) fn zip_err(path: &Path, op: &'static str, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => Error::io(op, path, io),
        other => Error::NotADatabase {
            engine: "api",
            path: path.to_path_buf(),
            detail: format!("not a sound API archive: {other}"),
        },
    }
}

/// An archive, open for reading.
pub(crate) struct Archive {
    path: std::path::PathBuf,
    zip: ZipArchive<BufReader<File>>,
}

impl Archive {
    /// Opens the archive at `path`.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when it is no zip; I/O errors.
    pub fn open(path: &Path) -> Result<Archive> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let zip = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(path, "read", e))?;
        Ok(Archive {
            path: path.to_path_buf(),
            zip,
        })
    }

    /// Its metadata.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when it has none or an unreadable one.
    pub fn metadata(&mut self) -> Result<Metadata> {
        let bad = |reason: String| Error::NotADatabase {
            engine: "api",
            path: self.path.clone(),
            detail: reason,
        };
        let mut m = self
            .zip
            .by_name(METADATA)
            .map_err(|e| bad(format!("no {METADATA}: {e}")))?;
        let mut text = Vec::new();
        m.read_to_end(&mut text)
            .map_err(|e| bad(format!("{METADATA}: {e}")))?;
        let meta: Metadata =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{METADATA}: {e}")))?;
        if meta.format != FORMAT {
            return Err(bad(format!(
                "{METADATA}: format {:?}, not {FORMAT}",
                meta.format
            )));
        }
        Ok(meta)
    }

    /// Checks the archive at `level`: the metadata and that every member it lists is there
    /// with its size; `Full` also re-reads every member against its blake3 and counts the
    /// rows of the JSON-lines files.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] naming the first member that fails.
    pub fn check(&mut self, level: CheckLevel) -> Result<Metadata> {
        let meta = self.metadata()?;
        for (m, rows) in meta.members() {
            let path = self.path.clone();
            let bad = |reason: String| Error::NotADatabase {
                engine: "api",
                path: path.clone(),
                detail: format!("member {}: {reason}", m.name),
            };
            safe_name(&m.name)
                .map_err(|_| bad("a name that leaves the archive's folder".into()))?;
            let mut entry = self
                .zip
                .by_name(&m.name)
                .map_err(|e| bad(format!("missing: {e}")))?;
            if entry.size() != m.bytes {
                return Err(bad(format!(
                    "{} bytes, the metadata says {}",
                    entry.size(),
                    m.bytes
                )));
            }
            if level != CheckLevel::Full {
                continue;
            }
            let mut hasher = blake3::Hasher::new();
            let mut lines = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| bad(format!("unreadable: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            }
            let got = format!("blake3:{}", hasher.finalize().to_hex());
            if got != m.blake3 {
                return Err(bad(format!(
                    "checksum {got}, the metadata says {}",
                    m.blake3
                )));
            }
            if let Some(rows) = rows
                && rows != lines
            {
                return Err(bad(format!("{lines} rows, the metadata says {rows}")));
            }
        }
        Ok(meta)
    }

    /// Copies the member `name` to the new file `to`.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when it is missing; I/O errors.
    pub fn copy_member(&mut self, name: &str, to: &Path) -> Result<()> {
        let mut entry = self
            .zip
            .by_name(name)
            .map_err(|e| zip_err(&self.path, "read", e))?;
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        fs_util::remove_if_exists(to)?;
        let mut out = fs_util::create_new_private(to)?;
        io::copy(&mut entry, &mut out).map_err(|e| Error::io("write", to, e))?;
        Ok(())
    }

    /// The names of its members.
    pub fn names(&self) -> Vec<String> {
        (0..self.zip.len())
            .filter_map(|i| {
                self.zip
                    .name_for_index(i)
                    .and_then(Result::ok)
                    .map(|n| n.to_string())
            })
            .collect()
    }
}

/// Refuses a member name that is absolute or climbs out (`..`).
pub(crate) fn safe_name(name: &str) -> std::result::Result<(), ()> {
    let p = Path::new(name);
    if name.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(());
    }
    Ok(())
}
