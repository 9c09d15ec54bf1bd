//! [`FileSource`]: any single file, copied as it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::live_file::LiveFile;
use crate::source::{CheckLevel, Source};

/// The registry's entry for [`FileSource`].
pub(crate) struct FileEngine;

impl Engine for FileEngine {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn title(&self) -> &'static str {
        "file"
    }

    fn source(&self, location: &Path) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(FileSource::new(location)))
    }
}

/// A single file of any kind. The copy is checked against the file's size and modification time
/// before and after, and retried when the file changed while being copied; the image is verified
/// by checksum only.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    extension: String,
}

impl FileSource {
    /// A source for the file at `path`. The blob keeps the file's extension (`bin` without one).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()))
            .unwrap_or("bin")
            .to_string();
        FileSource { path, extension }
    }
}

fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>)> {
    let m = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::SourceMissing {
                kind: "file",
                path: path.to_path_buf(),
            }
        } else {
            Error::io("stat", path, e)
        }
    })?;
    if !m.is_file() {
        return Err(Error::invalid(
            "source",
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok((m.len(), m.modified().ok()))
}

impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn extension(&self) -> &str {
        &self.extension
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        for attempt in 0..5 {
            let before = stamp(&self.path)?;
            // Through the shared descriptor, which keeps the application's POSIX locks on the
            // file (see `live_file`).
            let live = LiveFile::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
            fs_util::copy_open_to_new(live.file(), &self.path, dest)?;
            drop(live);
            if stamp(&self.path)? == before {
                return Ok(());
            }
            fs_util::remove_if_exists(dest)?;
            std::thread::sleep(std::time::Duration::from_millis(10 << attempt));
        }
        Err(Error::Busy {
            path: self.path.clone(),
            attempts: 5,
            waited_ms: 310,
            detail: "the file kept changing while it was copied".into(),
        })
    }

    fn check_image(&self, image: &Path, _level: CheckLevel) -> Result<()> {
        stamp(image).map(|_| ())
    }

    fn prepare_replace(&self) -> Result<()> {
        Ok(())
    }
}
