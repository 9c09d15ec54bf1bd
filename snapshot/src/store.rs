//! Where snapshot blobs, sidecars and the catalog index live.
//!
//! [`Store`] is a small object-safe trait in the style of `object_store`: put, get, head, list and
//! delete of objects by key, with [`PutMode::Create`] refusing to overwrite (that refusal is what
//! keeps snapshot ids unique across processes). [`LocalStore`] keeps objects as files in one
//! directory; [`MemoryStore`] keeps them in memory for tests. Both pass the same conformance suite
//! (`tests/store_conformance.rs`). Stores are shared as `Arc<dyn Store>`.

mod local;
mod memory;

pub use local::LocalStore;
pub use memory::MemoryStore;

/// Staging-file prefix: any file named so is a leftover of an interrupted write.
pub use crate::fs_util::STAGING_PREFIX;
/// Trash-file prefix: a deleted object whose space is still to be freed; always garbage.
pub use crate::fs_util::TRASH_PREFIX;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::Result;

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutMode {
    /// Fail with [`Error::AlreadyExists`](crate::Error::AlreadyExists) if the key exists.
    Create,
    /// Replace an existing object atomically.
    Overwrite,
}

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the store keeps one.
    pub modified: Option<DateTime<Utc>>,
}

/// An exclusive lock on a store's catalog, released when dropped.
pub struct StoreLock {
    _guard: Box<dyn Send>,
}

impl StoreLock {
    /// Wraps whatever guard the store uses.
    pub fn new(guard: Box<dyn Send>) -> Self {
        StoreLock { _guard: guard }
    }
}

impl Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLock")
    }
}

/// A store as the manager's builder takes it: any [`Store`], or one already shared.
pub trait IntoStore {
    /// The shared store.
    fn into_store(self) -> Arc<dyn Store>;
}

impl<S: Store + 'static> IntoStore for S {
    fn into_store(self) -> Arc<dyn Store> {
        Arc::new(self)
    }
}

impl IntoStore for Arc<dyn Store> {
    fn into_store(self) -> Arc<dyn Store> {
        self
    }
}

impl<S: Store + 'static> IntoStore for Arc<S> {
    fn into_store(self) -> Arc<dyn Store> {
        self
    }
}

/// A place that keeps snapshot objects by key.
///
/// Keys are flat, file-name-safe strings chosen by the library. Implementations must make
/// `put_*` atomic (an object is either absent or complete) and durable before returning.
pub trait Store: Send + Sync + Debug {
    /// Human-readable location of the store (a directory, a URL).
    fn location(&self) -> String;

    /// Human-readable location of one object (recorded as `file_path`).
    fn object_location(&self, key: &str) -> String;

    /// The directory where images are prepared before [`put_file`](Store::put_file); on the same
    /// file system as the objects for a local store, so publishing is a rename.
    ///
    /// # Errors
    /// When the directory cannot be created.
    fn staging_dir(&self) -> Result<PathBuf>;

    /// Publishes a finished, fsynced file under `key`. The file is moved (or uploaded and then
    /// removed); on error it is left for the caller to remove.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) with `PutMode::Create` when the key
    /// exists; I/O errors naming the path.
    fn put_file(&self, key: &str, file: &Path, mode: PutMode) -> Result<()>;

    /// Stores bytes under `key`, atomically and durably.
    ///
    /// # Errors
    /// As [`put_file`](Store::put_file).
    fn put_bytes(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()>;

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`Error::BlobMissing`](crate::Error::BlobMissing) when absent; I/O errors.
    fn get_bytes(&self, key: &str) -> Result<Vec<u8>>;

    /// Writes an object to a new local file `dest` (which must not exist). Not fsynced.
    ///
    /// # Errors
    /// [`Error::BlobMissing`](crate::Error::BlobMissing) when absent; I/O errors.
    fn get_to_file(&self, key: &str, dest: &Path) -> Result<()>;

    /// The object's path when the store keeps it as a local file (read it in place).
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// Metadata of one object, `None` when absent.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Every object, sorted by key. Staging leftovers are not objects.
    ///
    /// # Errors
    /// I/O errors.
    fn list(&self) -> Result<Vec<ObjectMeta>>;

    /// Deletes an object; deleting an absent key succeeds.
    ///
    /// # Errors
    /// I/O errors.
    fn delete(&self, key: &str) -> Result<()>;

    /// Deletes several objects; absent keys succeed. Every key is tried even after a failure.
    /// A local store makes all the removals durable with one directory fsync, and may free
    /// their space in the background (see [`settle`](Self::settle)).
    ///
    /// # Errors
    /// The first error met (I/O errors).
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        let mut first = None;
        for key in keys {
            if let Err(e) = self.delete(key) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Waits for the store's background work — the space of deleted objects being freed — to
    /// finish. The default has none.
    ///
    /// # Errors
    /// None so far; the signature leaves room for stores whose background work can fail.
    fn settle(&self) -> Result<()> {
        Ok(())
    }

    /// Publishes a snapshot: the finished, fsynced image file `image` under `blob_key` and its
    /// record `sidecar` under `sidecar_key`, both refusing an existing key. Either both are
    /// published or neither is (on error `image` is left for the caller to remove). The default
    /// puts the sidecar, then the image; a local store links both into place with one
    /// directory fsync.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists) when either key exists; I/O errors.
    fn put_snapshot(
        &self,
        blob_key: &str,
        image: &Path,
        sidecar_key: &str,
        sidecar: &[u8],
    ) -> Result<()> {
        put_sidecar_then_blob(self, blob_key, image, sidecar_key, sidecar)
    }

    /// Takes the store's exclusive catalog lock (across threads and processes).
    ///
    /// # Errors
    /// [`Error::StoreLocked`](crate::Error::StoreLocked) after the wait budget.
    fn lock(&self) -> Result<StoreLock>;

    /// Whether objects live on this host's disk (and so vanish with an ephemeral host).
    fn is_host_local(&self) -> bool;

    /// The directory backing a host-local store, for ephemeral-host detection.
    fn local_dir(&self) -> Option<&Path> {
        None
    }

    /// Staging files left by a crashed writer (older than `min_age`, so live writers are spared).
    ///
    /// # Errors
    /// I/O errors.
    fn leftovers(&self, min_age: std::time::Duration) -> Result<Vec<PathBuf>>;
}

/// [`Store::put_snapshot`] from the primitive puts: the sidecar (reserving the id), then the
/// image; the sidecar is removed again when the image cannot be published.
pub(crate) fn put_sidecar_then_blob<S: Store + ?Sized>(
    store: &S,
    blob_key: &str,
    image: &Path,
    sidecar_key: &str,
    sidecar: &[u8],
) -> Result<()> {
    store.put_bytes(sidecar_key, sidecar, PutMode::Create)?;
    if let Err(e) = store.put_file(blob_key, image, PutMode::Create) {
        let _ = store.delete(sidecar_key);
        return Err(e);
    }
    Ok(())
}
