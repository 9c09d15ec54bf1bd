//! Reading one complete version of a file that may be rewritten while it is read.
//!
//! A file's status (size, modification and change times, inode) is taken before and after it
//! is read; a difference means it changed and it is read again. Equal status is proof enough
//! only for a file whose change time is older than the read by more than the clock's
//! granularity (file times tick in jiffies, so a rewrite of the same size within one tick
//! leaves the status unchanged); a file changed that recently is read a second time and both
//! reads must agree; an empty file changed that recently is taken as one being rewritten in
//! place (truncated, not yet written) and read again until it has content or has settled.
//! A small file is read into memory first, so a change costs one re-read of
//! that file; a large one is streamed into the archive, and a change starts the archive over.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::dir::archive::Writer;
use crate::engine::dir::walk;
use crate::error::Error;

/// Files up to this size are read into memory first.
pub(crate) const BUFFERED: u64 = 8 << 20;
/// How long a small file that keeps changing is read again before the snapshot fails.
const BUDGET: Duration = Duration::from_secs(3);
/// A file whose status changed less than this before it was read may be changing within one
/// tick of the file-time clock: it is read twice.
const SETTLED: Duration = Duration::from_secs(1);

/// What the status of a file says of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    pub(crate) mode: u32,
}

impl Stamp {
    /// The status of `path`; `None` when it is gone.
    pub(crate) fn of(path: &Path) -> std::io::Result<Option<Stamp>> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(Stamp {
                size: m.len(),
                mtime_ns: walk::mtime_ns(&m),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
                ino: m.ino(),
                mode: m.mode() & 0o7777,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the file last changed well before `t`.
    fn settled_before(&self, t: SystemTime) -> bool {
        let t = t
            .checked_sub(SETTLED)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        self.ctime_ns < t
    }
}

/// Why a file could not be added.
pub(crate) enum Added {
    /// A large file changed while it was streamed into the archive: start over.
    Changed(PathBuf),
    /// The file could not be read (it fails the snapshot unless partial ones are allowed).
    Unreadable(PathBuf, String),
    /// Archive or other errors.
    Failed(Error),
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> Added {
    Added::Unreadable(path.to_path_buf(), e.to_string())
}

/// The blake3 of the file at `path` as it is now.
fn hash_now(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(path)?)?;
    Ok(h.finalize())
}

/// Adds the file at `path` to the archive as member `name`: one complete version of it, with
/// its status as archived and its blake3. `None` when the file is gone.
pub(crate) fn add_file(
    w: &mut Writer,
    path: &Path,
    name: &str,
    at: &Path,
) -> Result<Option<(Stamp, blake3::Hash)>, Added> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let began = SystemTime::now();
        let Some(before) = Stamp::of(path).map_err(|e| unreadable(path, e))? else {
            return Ok(None);
        };
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(path, e)),
        };
        let settled = before.settled_before(began);
        if before.size > BUFFERED {
            return stream(w, &mut file, path, name, before, settled, at).map(Some);
        }
        let mut data = Vec::with_capacity(before.size as usize);
        file.read_to_end(&mut data)
            .map_err(|e| unreadable(path, e))?;
        let same = |p: &Path| Stamp::of(p).ok().flatten() == Some(before);
        // A file emptied this recently is taken as being rewritten in place (opened with
        // truncation, not yet written): read again until it has content or has settled.
        let emptied = !settled && before.size == 0;
        let mut whole = same(path) && data.len() as u64 == before.size && !emptied;
        if whole && !settled {
            whole = fs::read(path).is_ok_and(|again| again == data) && same(path);
        }
        if whole {
            let hash = blake3::hash(&data);
            let meta = (before.size, before.mode, before.mtime_ns);
            w.add_file(name, meta, &mut data.as_slice(), &mut |_| {}, at)
                .map_err(Added::Failed)?;
            return Ok(Some((before, hash)));
        }
        if start.elapsed() > BUDGET {
            return Err(Added::Failed(Error::Busy {
                path: path.to_path_buf(),
                attempts: attempt,
                waited_ms: start.elapsed().as_millis() as u64,
                detail: "the file kept changing while it was archived".into(),
            }));
        }
        std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20))));
    }
}

/// Streams a large file into the archive; [`Added::Changed`] when it changed meanwhile.
fn stream(
    w: &mut Writer,
    file: &mut File,
    path: &Path,
    name: &str,
    before: Stamp,
    settled: bool,
    at: &Path,
) -> Result<(Stamp, blake3::Hash), Added> {
    let mut hasher = blake3::Hasher::new();
    let meta = (before.size, before.mode, before.mtime_ns);
    let n = w
        .add_file(
            name,
            meta,
            file,
            &mut |b| {
                hasher.update(b);
            },
            at,
        )
        .map_err(Added::Failed)?;
    let hash = hasher.finalize();
    let same = |p: &Path| Stamp::of(p).ok().flatten() == Some(before);
    let mut whole = same(path) && n == before.size;
    if whole && !settled {
        whole = hash_now(path).is_ok_and(|h| h == hash) && same(path);
    }
    if whole {
        Ok((before, hash))
    } else {
        Err(Added::Changed(path.to_path_buf()))
    }
}
