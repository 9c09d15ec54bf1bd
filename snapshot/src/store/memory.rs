//! [`MemoryStore`]: objects in memory, for tests and short-lived tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{ObjectMeta, PutMode, Store, StoreLock};

/// Objects held in memory, shared by clones. Images are still prepared in a private staging
/// directory on disk (removed when the last clone is dropped).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Object bytes and their modification time, by key.
type Objects = BTreeMap<String, (Vec<u8>, chrono::DateTime<Utc>)>;

#[derive(Debug, Default)]
struct Inner {
    objects: Mutex<Objects>,
    locked: Mutex<bool>,
    unlocked: Condvar,
    staging: Mutex<Option<PathBuf>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(Some(dir)) = self.staging.get_mut().map(|s| s.take()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

struct MemLock(Arc<Inner>);

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut l = self.0.locked.lock().unwrap_or_else(|p| p.into_inner());
        *l = false;
        self.0.unlocked.notify_one();
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.inner.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an object's bytes without any check: lets tests damage a blob.
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some((bytes, _)) = self.objects().get_mut(key) {
            f(bytes);
        }
    }

    fn insert(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<()> {
        let mut objects = self.objects();
        if mode == PutMode::Create && objects.contains_key(key) {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        objects.insert(key.to_string(), (data, Utc::now()));
        Ok(())
    }
}

impl Store for MemoryStore {
    fn location(&self) -> String {
        "memory://".to_string()
    }

    fn object_location(&self, key: &str) -> String {
        format!("memory://{key}")
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        let mut s = self.inner.staging.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = s.as_ref() {
            return Ok(dir.clone());
        }
        let dir = std::env::temp_dir().join(format!(
            "snapshot-memory-store-{}-{:p}",
            std::process::id(),
            Arc::as_ptr(&self.inner)
        ));
        fs_util::create_private_dir(&dir)?;
        *s = Some(dir.clone());
        Ok(dir)
    }

    fn put_file(&self, key: &str, file: &Path, mode: PutMode) -> Result<()> {
        let data = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
        self.insert(key, data, mode)?;
        fs_util::remove_if_exists(file)
    }

    fn put_bytes(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.insert(key, data.to_vec(), mode)
    }

    fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        self.objects()
            .get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| Error::BlobMissing {
                key: key.to_string(),
            })
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<()> {
        let data = self.get_bytes(key)?;
        let mut f = fs_util::create_new_private(dest)?;
        std::io::Write::write_all(&mut f, &data).map_err(|e| Error::io("write", dest, e))
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.objects().get(key).map(|(b, t)| ObjectMeta {
            key: key.to_string(),
            size: b.len() as u64,
            modified: Some(*t),
        }))
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects()
            .iter()
            .map(|(k, (b, t))| ObjectMeta {
                key: k.clone(),
                size: b.len() as u64,
                modified: Some(*t),
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }

    fn lock(&self) -> Result<StoreLock> {
        let mut l = self.inner.locked.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while *l {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::StoreLocked {
                    path: PathBuf::from("memory://"),
                    waited_ms: 60_000,
                });
            }
            l = self
                .inner
                .unlocked
                .wait_timeout(l, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *l = true;
        Ok(StoreLock::new(Box::new(MemLock(self.inner.clone()))))
    }

    fn is_host_local(&self) -> bool {
        // Memory dies with the process; treat it like a host-local disk.
        true
    }

    fn leftovers(&self, _min_age: Duration) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}
