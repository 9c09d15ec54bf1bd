//! The work directory of a run: the chunks finished so far and `progress.json`, committed
//! atomically after each, so that a run killed at any point resumes where it stopped. One run
//! at a time holds it (a lock file). Nothing here is fsynced: a kill loses nothing (the page
//! cache outlives the process), and what a power failure could lose or tear is found by the
//! checksums a resumed run checks and fetched again; the archive itself is sealed by the
//! manager like every snapshot.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs_util;

/// The format of `progress.json`.
const FORMAT: u32 = 1;

/// A finished file of the work directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileDone {
    /// Its name in the work directory (and the archive).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// `blake3:<hex>`.
    pub blake3: String,
}

/// A finished chunk of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkDone {
    /// Its rows.
    pub rows: u64,
    /// The CSV file.
    pub csv: FileDone,
    /// The JSON-lines file (the records as the API gave them).
    pub jsonl: FileDone,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// Pages fetched for it (0 when taken from the previous archive).
    pub pages: u64,
    /// Whether it was taken from the previous archive instead of fetched.
    pub reused: bool,
}

/// A finished lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LookupDone {
    /// Its rows.
    pub rows: u64,
    /// Its JSON-lines file.
    pub file: FileDone,
}

/// What a run has done so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// [`FORMAT`].
    pub format: u32,
    /// The settings' fingerprint: a run with other settings starts afresh.
    pub fingerprint: String,
    /// The run's range (its end fixed when it started, so that a resumed run ends there too).
    pub from: DateTime<Utc>,
    /// The range's end (exclusive).
    pub to: DateTime<Utc>,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// How many times it was resumed.
    pub resumed: u32,
    /// The lookups, once fetched (every one).
    pub lookups: Option<BTreeMap<String, LookupDone>>,
    /// The finished chunks, by `resource/label` (kept in `chunks.jsonl`, a line appended per
    /// chunk).
    #[serde(skip, default)]
    pub chunks: BTreeMap<String, ChunkDone>,
}

impl Progress {
    /// A new run's progress.
    pub fn new(fingerprint: String, from: DateTime<Utc>, to: DateTime<Utc>) -> Progress {
        Progress {
            format: FORMAT,
            fingerprint,
            from,
            to,
            started_at: Utc::now(),
            resumed: 0,
            lookups: None,
            chunks: BTreeMap::new(),
        }
    }
}

/// The work directory, held by this run.
#[derive(Debug)]
pub(crate) struct WorkDir {
    dir: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// Opens (creating it, 0700) and locks `dir`.
    ///
    /// # Errors
    /// [`Error::Busy`] when another run holds it; I/O errors naming it.
    pub fn open(dir: &Path) -> Result<WorkDir> {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        if !dir.is_dir() {
            fs_util::create_private_dir(dir)?;
        }
        let lock_path = dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path: dir.to_path_buf(),
                    attempts: 1,
                    waited_ms: 0,
                    detail: "another export run of this API holds its work directory".into(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        Ok(WorkDir {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A file of the directory by its name (`observations/2016-01.csv`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The progress of an interrupted run, when there is a readable one: `progress.json` and
    /// the chunks `chunks.jsonl` lists (a line torn by a crash is left out).
    pub fn load(&self) -> Option<Progress> {
        let bytes = fs::read(self.dir.join("progress.json")).ok()?;
        let mut p = serde_json::from_slice::<Progress>(&bytes)
            .ok()
            .filter(|p| p.format == FORMAT)?;
        let log = fs::read(self.dir.join("chunks.jsonl")).unwrap_or_default();
        for line in log.split(|b| *b == b'\n') {
            if let Ok((key, chunk)) = serde_json::from_slice::<(String, ChunkDone)>(line) {
                p.chunks.insert(key, chunk);
            }
        }
        Some(p)
    }

    /// Commits `progress` whole: `progress.json` and every chunk in `chunks.jsonl`, each
    /// replaced atomically. Not durably: a record lost or torn by a power failure starts the
    /// run over or leaves a chunk out, and every file a resumed run takes is checked against
    /// its checksum first — a kill loses nothing.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn commit(&self, progress: &Progress) -> Result<()> {
        let mut log = Vec::new();
        for (key, chunk) in &progress.chunks {
            serde_json::to_writer(&mut log, &(key, chunk)).expect("a chunk serializes");
            log.push(b'\n');
        }
        fs_util::write_scratch(&self.dir.join("chunks.jsonl"), &log)?;
        let bytes = serde_json::to_vec_pretty(progress).expect("progress serializes");
        fs_util::write_scratch(&self.dir.join("progress.json"), &bytes)
    }

    /// Records one more finished chunk: a line appended to `chunks.jsonl` (one write; no file
    /// is created per chunk).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn record(&self, key: &str, chunk: &ChunkDone) -> Result<()> {
        self.append("chunks.jsonl", &(key, chunk))
    }

    /// Records a chunk's own zip (by its CSV's name): a line appended to `packed.jsonl`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn record_pack(&self, csv: &str, zip: &FileDone) -> Result<()> {
        self.append("packed.jsonl", &(csv, zip))
    }

    /// Appends `record` as one JSON line to the log `name`, in one write.
    fn append(&self, name: &str, record: &impl serde::Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("a record serializes");
        line.push(b'\n');
        let path = self.dir.join(name);
        let mut f = File::options()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        std::io::Write::write_all(&mut f, &line).map_err(|e| Error::io("write", &path, e))
    }

    /// The chunks' own zips recorded so far, by their CSV's name (checked when used).
    pub fn packed(&self) -> std::collections::HashMap<String, FileDone> {
        let log = fs::read(self.dir.join("packed.jsonl")).unwrap_or_default();
        log.split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<(String, FileDone)>(line).ok())
            .collect()
    }

    /// A scratch file reused by every chunk of the run (truncated, never created anew: file
    /// creation is what costs most per chunk on ext4).
    ///
    /// # Errors
    /// I/O errors naming it.
    pub fn scratch(&self) -> Result<(File, PathBuf)> {
        let path = self.dir.join("scratch.csv");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok((f, path))
    }

    /// Empties the directory (a fresh run), keeping the lock.
    ///
    /// # Errors
    /// I/O errors naming what could not be removed.
    pub fn clear(&self) -> Result<()> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name() == ".lock" {
                continue;
            }
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|err| Error::io("remove", &p, err))?;
        }
        fs_util::fsync_dir(&self.dir)
    }

    /// Whether the finished file `f` is still there as it was written.
    pub fn intact(&self, f: &FileDone) -> bool {
        fs_util::hash_file(&self.file(&f.name))
            .is_ok_and(|s| s.size == f.bytes && s.checksum == f.blake3)
    }

    /// Removes the directory once its archive is written.
    pub fn finish(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
