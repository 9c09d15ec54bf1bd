//! [`ActivityLog`]: the scheduler's rotating activity log.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// An append-only text log, one line per event, rotated by size: past `max_bytes` the file
/// becomes `<log>.1` (and `.1` becomes `.2`, …, keeping `keep` old files).
#[derive(Debug, Clone)]
pub struct ActivityLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
}

impl ActivityLog {
    /// A log at `path` (its directory is created when missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, keep: usize) -> Result<ActivityLog> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        Ok(ActivityLog {
            path,
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `<time> <line>`, rotating first when the file would grow past its limit.
    ///
    /// # Errors
    /// I/O errors naming the log.
    pub fn write(&self, at: DateTime<Utc>, line: &str) -> Result<()> {
        let text = format!(
            "{} {}\n",
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            line.replace('\n', " ")
        );
        let size = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + text.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| Error::io("open log", &self.path, e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::io("write log", &self.path, e))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&self) -> Result<()> {
        if self.keep == 0 {
            return fs::remove_file(&self.path).map_err(|e| Error::io("remove log", &self.path, e));
        }
        let _ = fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))
                    .map_err(|e| Error::io("rotate log", &from, e))?;
            }
        }
        fs::rename(&self.path, self.rotated(1)).map_err(|e| Error::io("rotate log", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let log = ActivityLog::new(dir.path().join("logs/schedule.log"), 200, 2)?;
        for i in 0..40 {
            log.write(Utc::now(), &format!("line {i:03} ................"))?;
        }
        let read = |p: PathBuf| fs::read_to_string(&p).map_err(|e| Error::io("read", &p, e));
        let current = read(log.path().to_path_buf())?;
        assert!(current.len() <= 200, "{}", current.len());
        assert!(current.contains("line 039"));
        assert!(read(log.rotated(1))?.len() <= 200);
        assert!(log.rotated(2).exists());
        assert!(!log.rotated(3).exists());
        Ok(())
    }
}
