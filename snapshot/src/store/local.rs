//! [`LocalStore`]: objects as files in one directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{self, LocalStorage, Object, ObjectMeta, Payload, PutMode, Store};

const LOCK_FILE: &str = ".lock";
const LOCK_BUDGET: Duration = Duration::from_secs(60);

/// A directory of snapshot files (mode 0700, files 0600), the layout users of the original know:
/// blobs, their JSON sidecars and `snapshot_metadata.json` side by side. It offers the
/// [`LocalStorage`] capability. Its compare-and-swap puts ([`PutMode::Update`]) hold an advisory
/// lock on `.lock` in the directory for the compare and the rename; the version is the content's
/// hash.
///
/// Deleted objects leave the store's namespace at once (a rename into a trash name and one
/// directory fsync); their space is freed by a background thread, because unlinking a large
/// file can take as long as copying a tenth of it, and a snapshot that prunes one should not
/// wait for that. The last clone of a store, when dropped, waits for its pending frees; trash
/// left by a process that exited first is freed by the next deletion, or by `doctor`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    reaper: Arc<Reaper>,
}

/// The store's background frees, joined when the last clone of the store is dropped.
#[derive(Debug, Default)]
struct Reaper {
    pending: Mutex<Vec<JoinHandle<()>>>,
}

impl Reaper {
    /// Frees `paths`, then any other trash in `dir` (left by a process that exited before
    /// freeing it), on a thread of its own.
    fn free_later(&self, dir: &Path, paths: Vec<PathBuf>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|h| !h.is_finished());
        let (d, p) = (dir.to_path_buf(), paths.clone());
        match std::thread::Builder::new()
            .name("snapshot-free".into())
            .spawn(move || free_now(&d, &p))
        {
            Ok(h) => pending.push(h),
            Err(e) => {
                tracing::debug!(error = %e, "no thread to free objects on; freeing inline");
                free_now(dir, &paths);
            }
        }
    }

    /// Joins every pending free.
    fn wait(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for h in pending {
            let _ = h.join();
        }
    }
}

fn free_now(dir: &Path, paths: &[PathBuf]) {
    let freed = fs_util::free(paths)
        .and_then(|()| fs_util::trash_in(dir))
        .and_then(|rest| fs_util::free(&rest));
    if let Err(e) = freed {
        tracing::warn!(error = %e, "could not free a deleted object; the next deletion or doctor will");
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.wait();
    }
}

impl LocalStore {
    /// Opens the store directory. A directory that does not exist yet is created (mode 0700,
    /// with the parents it needs) on the first write, not here: a mistyped path, or a source
    /// found missing, leaves nothing behind.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] or [`Error::Io`] when an existing path is not a directory
    /// the store can use.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("current dir", &dir, e))?
                .join(dir)
        };
        if dir.exists() {
            fs_util::create_private_dir(&dir)?;
        }
        Ok(LocalStore {
            dir,
            reaper: Arc::default(),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the store directory now when it does not exist yet (mode 0700).
    ///
    /// # Errors
    /// I/O errors naming the directory.
    pub fn ensure_dir(&self) -> Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs_util::create_private_dir(&self.dir)
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty()
            || key.starts_with('.')
            || key.contains(['/', '\\', '\0'])
            || key.len() > 255
        {
            return Err(Error::invalid(
                "key",
                format!("{key:?} is not a valid object key"),
            ));
        }
        Ok(self.dir.join(key))
    }
}

fn modified(meta: &fs::Metadata) -> Option<DateTime<Utc>> {
    meta.modified().ok().map(DateTime::<Utc>::from)
}

impl LocalStore {
    fn publish(&self, staged: &Path, dst: &Path, mode: &PutMode) -> Result<()> {
        match mode {
            PutMode::Create => fs_util::publish_new(staged, dst),
            _ => fs_util::publish_replace(staged, dst),
        }
    }

    /// Publishes the file `file` under `dst`: renamed when it is in the store's directory,
    /// else copied in through a staging file first (and then removed).
    fn put_file_at(&self, key: &str, dst: &Path, file: &Path, mode: &PutMode) -> Result<()> {
        if file.parent() != Some(self.dir.as_path()) {
            let staged = fs_util::StagingGuard::new(fs_util::staging_path(&self.dir, key));
            fs_util::copy_to_new(file, staged.path())?;
            fs_util::sync_file(staged.path())?;
            self.publish(staged.path(), dst, mode)?;
            staged.disarm();
            return fs_util::remove_if_exists(file);
        }
        fs_util::make_private(file)?;
        self.publish(file, dst, mode)
    }

    /// A compare-and-swap: under the directory's lock (threads and processes), the object
    /// must still be at `version` (its content's hash) to be replaced.
    fn update(&self, key: &str, dst: &Path, payload: Payload<'_>, version: &str) -> Result<()> {
        let _lock = fs_util::lock_exclusive(&self.dir.join(LOCK_FILE), LOCK_BUDGET)?;
        let current = match fs::read(dst) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(store::precondition(key)),
            Err(e) => return Err(Error::io("read", dst, e)),
        };
        if store::content_version(&current) != version {
            return Err(store::precondition(key));
        }
        match payload {
            Payload::Bytes(data) => fs_util::write_atomic(dst, data),
            Payload::File(file) => self.put_file_at(key, dst, file, &PutMode::Overwrite),
        }
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn object_location(&self, key: &str) -> String {
        self.dir.join(key).display().to_string()
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>> {
        let dst = self.path(key)?;
        self.ensure_dir()?;
        let version = match payload {
            Payload::Bytes(data) => Some(store::content_version(data)),
            Payload::File(_) => None,
        };
        match (&mode, payload) {
            (PutMode::Update(v), payload) => self.update(key, &dst, payload, v)?,
            (PutMode::Create, Payload::Bytes(data)) => fs_util::write_new(&dst, data)?,
            (_, Payload::Bytes(data)) => fs_util::write_atomic(&dst, data)?,
            (_, Payload::File(file)) => self.put_file_at(key, &dst, file, &mode)?,
        }
        Ok(version)
    }

    fn get(&self, key: &str) -> Result<Object> {
        let p = self.path(key)?;
        let bytes = fs::read(&p).map_err(|e| not_found_as_missing(key, &p, "read", e))?;
        let modified = fs::metadata(&p).ok().as_ref().and_then(modified);
        Ok(Object {
            meta: ObjectMeta::new(key, bytes.len() as u64, modified)
                .with_version(store::content_version(&bytes)),
            bytes,
        })
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta> {
        let p = self.path(key)?;
        let m = fs::metadata(&p).map_err(|e| not_found_as_missing(key, &p, "stat", e))?;
        fs_util::copy_to_new(&p, dest)?;
        Ok(ObjectMeta::new(key, m.len(), modified(&m)))
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = self.path(key)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(ObjectMeta::new(key, m.len(), modified(&m)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", p, e)),
        }
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        if !self.dir.exists() {
            return Ok(out); // not written to yet
        }
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let m = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", entry.path(), e)),
            };
            out.push(ObjectMeta::new(name, m.len(), modified(&m)));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        fs_util::remove_durable(&p)
    }

    fn local(&self) -> Option<&dyn LocalStorage> {
        Some(self)
    }
}

impl LocalStorage for LocalStore {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn prepare(&self) -> Result<()> {
        self.ensure_dir()
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        self.path(key)
    }

    fn publish_snapshot(
        &self,
        blob_key: &str,
        image: &Path,
        sidecar_key: &str,
        sidecar: &[u8],
    ) -> Result<()> {
        let blob = self.path(blob_key)?;
        let record = self.path(sidecar_key)?;
        self.ensure_dir()?;
        fs_util::make_private(image)?;
        fs_util::publish_new_pair(image, &blob, sidecar, &record)
    }

    fn discard(&self, keys: &[String]) -> Result<()> {
        if !self.dir.exists() {
            return Ok(()); // nothing was ever written: every key is absent
        }
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<Result<Vec<_>>>()?;
        let discarded = fs_util::discard_many(&self.dir, &paths);
        let trash = discarded.as_ref().map(Vec::clone).unwrap_or_default();
        self.reaper.free_later(&self.dir, trash);
        discarded.map(|_| ())
    }

    fn settle_frees(&self) -> Result<()> {
        self.reaper.wait();
        Ok(())
    }

    fn leftovers(&self, min_age: Duration) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        if !self.dir.exists() {
            return Ok(out);
        }
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(fs_util::TRASH_PREFIX) {
                out.push(entry.path()); // garbage at any age
                continue;
            }
            if !name.starts_with(fs_util::STAGING_PREFIX) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age >= min_age);
            if old_enough {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }
}

fn not_found_as_missing(key: &str, path: &Path, op: &'static str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::BlobMissing {
            key: key.to_string(),
        }
    } else {
        Error::io(op, path, e)
    }
}
