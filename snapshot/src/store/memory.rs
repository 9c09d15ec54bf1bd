//! [`MemoryStore`]: objects in memory, for tests and short-lived tools.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;

use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{self, Object, ObjectMeta, Payload, PutMode, Store};

/// Objects held in memory, shared by clones. It has no local directory: the manager prepares
/// images in a private temporary directory of its own and puts them through the core.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<Objects>>,
}

/// Object bytes and their modification time, by key.
type Objects = BTreeMap<String, (Vec<u8>, chrono::DateTime<Utc>)>;

fn meta(key: &str, bytes: &[u8], t: chrono::DateTime<Utc>) -> ObjectMeta {
    ObjectMeta::new(key, bytes.len() as u64, Some(t)).with_version(store::content_version(bytes))
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an object's bytes without any check: lets tests damage a blob.
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some((bytes, _)) = self.objects().get_mut(key) {
            f(bytes);
        }
    }
}

impl Store for MemoryStore {
    fn location(&self) -> String {
        "memory://".to_string()
    }

    fn object_location(&self, key: &str) -> String {
        format!("memory://{key}")
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>> {
        let data = match payload {
            Payload::Bytes(b) => b.to_vec(),
            Payload::File(f) => std::fs::read(f).map_err(|e| Error::io("read", f, e))?,
        };
        let version = store::content_version(&data);
        {
            let mut objects = self.objects();
            match (&mode, objects.get(key)) {
                (PutMode::Create, Some(_)) => {
                    return Err(Error::AlreadyExists {
                        key: key.to_string(),
                    });
                }
                (PutMode::Update(v), Some((b, _))) if store::content_version(b) == *v => {}
                (PutMode::Update(_), _) => return Err(store::precondition(key)),
                _ => {}
            }
            objects.insert(key.to_string(), (data, Utc::now()));
        }
        if let Payload::File(f) = payload {
            fs_util::remove_if_exists(f)?;
        }
        Ok(Some(version))
    }

    fn get(&self, key: &str) -> Result<Object> {
        self.objects()
            .get(key)
            .map(|(b, t)| Object {
                meta: meta(key, b, *t),
                bytes: b.clone(),
            })
            .ok_or_else(|| Error::BlobMissing {
                key: key.to_string(),
            })
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta> {
        let object = self.get(key)?;
        let mut f = fs_util::create_new_private(dest)?;
        std::io::Write::write_all(&mut f, &object.bytes).map_err(|e| {
            let _ = std::fs::remove_file(dest);
            Error::io("write", dest, e)
        })?;
        Ok(object.meta)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.objects().get(key).map(|(b, t)| meta(key, b, *t)))
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects()
            .iter()
            .map(|(k, (b, t))| meta(k, b, *t))
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }
}
