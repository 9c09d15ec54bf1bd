//! Reading a live database file without dropping the application's locks.
//!
//! SQLite and DuckDB lock their files with POSIX record locks (`fcntl`). Those locks belong to
//! the process and the file, not to a descriptor: closing *any* descriptor of the file drops
//! every lock the process holds on it, including the ones the application's own connections
//! took through their descriptors. A snapshot taken inside the application's process that simply
//! opened and closed the database file would silently unlock the application's connections
//! (SQLite then fails with `disk I/O error`, or worse, another process writes beside them).
//!
//! So every read of a live file goes through a [`LiveFile`]. Dropping it closes the descriptor
//! only when no other descriptor of this process refers to the file (then the process holds no
//! locks on it that closing could drop); otherwise the descriptor is parked in a process-wide
//! table and reused by the next reader of that file, and closed by the first reader that finds
//! the application's descriptors gone. At most one descriptor per live file stays parked.
//! [`is_parked`] lets the `/proc` holder scan ignore parked descriptors.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

type Key = (u64, u64);

fn table() -> MutexGuard<'static, HashMap<Key, Arc<File>>> {
    static TABLE: OnceLock<Mutex<HashMap<Key, Arc<File>>>> = OnceLock::new();
    TABLE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn key(meta: &fs::Metadata) -> Key {
    (meta.dev(), meta.ino())
}

/// A read-only descriptor of a live file that is never closed while this process might hold
/// POSIX locks on the file through other descriptors.
#[derive(Debug)]
pub(crate) struct LiveFile {
    file: Option<Arc<File>>,
    key: Key,
}

impl LiveFile {
    /// Opens `path` for reading, reusing a parked descriptor of the same file.
    pub(crate) fn open(path: &Path) -> io::Result<LiveFile> {
        let mut table = table();
        sweep(&mut table);
        if let Ok(meta) = fs::metadata(path) {
            let k = key(&meta);
            if let Some(f) = table.get(&k) {
                return Ok(LiveFile {
                    file: Some(Arc::clone(f)),
                    key: k,
                });
            }
        }
        let file = File::open(path)?;
        let k = key(&file.metadata()?);
        let file = match table.get(&k) {
            // The path was replaced between the stat and the open by a file that is already
            // parked: keep the new descriptor open too (closing it could drop locks).
            Some(parked) => {
                let parked = Arc::clone(parked);
                std::mem::forget(file);
                parked
            }
            None => {
                let file = Arc::new(file);
                table.insert(k, Arc::clone(&file));
                file
            }
        };
        Ok(LiveFile {
            file: Some(file),
            key: k,
        })
    }

    /// The descriptor.
    pub(crate) fn file(&self) -> &File {
        self.file.as_deref().expect("present until drop")
    }

    /// Reads up to `n` bytes from the start of the file (fewer when it is shorter).
    #[cfg_attr(not(any(feature = "sqlite", feature = "duckdb")), allow(dead_code))] // engine headers
    pub(crate) fn read_prefix(&self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.file().read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}

impl Drop for LiveFile {
    fn drop(&mut self) {
        let Some(file) = self.file.take() else {
            return;
        };
        let mut table = table();
        // Another reader of this file is still at work: it decides when it finishes.
        if Arc::strong_count(&file) > 2 {
            return;
        }
        if !other_descriptors_of(self.key, file.as_raw_fd()) {
            table.remove(&self.key);
            drop(table);
            drop(file); // the last reference: closes the descriptor, no locks to drop
        }
    }
}

/// Closes the parked descriptors that nothing needs any more: not in use by a reader, and no
/// other descriptor of this process on their file (a file replaced by a restore, say).
fn sweep(table: &mut HashMap<Key, Arc<File>>) {
    table.retain(|k, f| Arc::strong_count(f) > 1 || other_descriptors_of(*k, f.as_raw_fd()));
}

/// Whether this process has a descriptor other than `except` open on the file `key`.
/// When `/proc/self/fd` cannot be read, assume it has (keeping a descriptor open is harmless).
fn other_descriptors_of(file: Key, except: i32) -> bool {
    let Ok(fds) = fs::read_dir("/proc/self/fd") else {
        return true;
    };
    fds.flatten().any(|fd| {
        let n = fd.file_name().to_str().and_then(|s| s.parse::<i32>().ok());
        n != Some(except) && fs::metadata(fd.path()).is_ok_and(|m| key(&m) == file)
    })
}

/// Whether descriptor `fd` of this process is a parked [`LiveFile`] descriptor.
pub(crate) fn is_parked(fd: i32) -> bool {
    table().values().any(|f| f.as_raw_fd() == fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked_for(path: &Path) -> bool {
        let k = key(&fs::metadata(path).unwrap());
        table().contains_key(&k)
    }

    #[test]
    fn closes_when_nothing_else_holds_the_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("db");
        fs::write(&p, b"0123456789")?;
        let f = LiveFile::open(&p)?;
        assert_eq!(f.read_prefix(4)?, b"0123");
        assert_eq!(f.read_prefix(64)?, b"0123456789");
        drop(f);
        assert!(!parked_for(&p));
        Ok(())
    }

    #[test]
    fn stays_open_while_the_application_holds_the_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("db");
        fs::write(&p, b"x")?;
        let app = File::open(&p)?;
        let f = LiveFile::open(&p)?;
        let fd = f.file().as_raw_fd();
        drop(f);
        assert!(parked_for(&p));
        assert!(is_parked(fd));
        // The next reader reuses the parked descriptor ...
        let again = LiveFile::open(&p)?;
        assert_eq!(again.file().as_raw_fd(), fd);
        // ... and, once the application has closed the file, closes it.
        drop(app);
        drop(again);
        assert!(!parked_for(&p));
        Ok(())
    }

    #[test]
    fn a_parked_descriptor_of_a_replaced_file_is_closed_by_the_next_reader() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("db");
        fs::write(&p, b"old")?;
        let old = key(&fs::metadata(&p)?);
        let app = File::open(&p)?;
        let f = LiveFile::open(&p)?;
        let fd = f.file().as_raw_fd();
        drop(f);
        assert!(is_parked(fd));
        drop(app);
        fs::write(dir.path().join("new"), b"new")?;
        fs::rename(dir.path().join("new"), &p)?;
        let g = LiveFile::open(&p)?;
        assert_eq!(g.read_prefix(3)?, b"new");
        assert!(
            !table().contains_key(&old),
            "the old file's descriptor is closed"
        );
        Ok(())
    }
}
