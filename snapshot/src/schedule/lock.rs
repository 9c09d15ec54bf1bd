//! [`SchedulerLock`]: one scheduler per store.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file in the store directory (hidden: not a store object).
pub const LOCK_FILE: &str = ".scheduler.lock";

/// Held by the running scheduler of a store; a second scheduler on the same store cannot take
/// it. Released when dropped (or when the process dies: it is an advisory `flock`).
#[derive(Debug)]
pub struct SchedulerLock {
    _file: File,
    path: PathBuf,
}

impl SchedulerLock {
    /// Takes the lock of the store at `store_dir` (which must exist) without waiting, and writes
    /// this process's id into it.
    ///
    /// # Errors
    /// [`Error::StoreLocked`] when another scheduler holds it (its process id, when known, is
    /// in [`holder`](Self::holder)); I/O errors.
    pub fn acquire(store_dir: &Path) -> Result<SchedulerLock> {
        let path = store_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open scheduler lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::StoreLocked { path, waited_ms: 0 });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|e| Error::io("write scheduler lock", &path, e))?;
        Ok(SchedulerLock { _file: file, path })
    }

    /// The process id written in the lock file of `store_dir` (the running scheduler's, when one
    /// holds the lock).
    pub fn holder(store_dir: &Path) -> Option<u32> {
        let mut s = String::new();
        File::open(store_dir.join(LOCK_FILE))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        s.trim().parse().ok()
    }

    /// Whether a scheduler holds the lock of the store at `store_dir` now, and its process id
    /// when known (`Some(None)`: held, pid unknown). Takes nothing and writes nothing.
    pub fn held(store_dir: &Path) -> Option<Option<u32>> {
        let path = store_dir.join(LOCK_FILE);
        let file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => Some(Self::holder(store_dir)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_store_is_refused_until_the_first_is_dropped() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let first = SchedulerLock::acquire(dir.path())?;
        assert_eq!(SchedulerLock::holder(dir.path()), Some(std::process::id()));
        assert!(matches!(
            SchedulerLock::acquire(dir.path()),
            Err(Error::StoreLocked { .. })
        ));
        assert_eq!(
            SchedulerLock::held(dir.path()),
            Some(Some(std::process::id()))
        );
        drop(first);
        assert_eq!(SchedulerLock::held(dir.path()), None);
        SchedulerLock::acquire(dir.path())?;
        Ok(())
    }
}
