//! Where snapshot blobs, sidecars and the catalog index live.
//!
//! [`Store`] is a small object-safe core in the shape of `object_store`: [`put`](Store::put) with
//! a [`PutMode`] — [`Create`](PutMode::Create) refuses to overwrite (that refusal keeps snapshot
//! ids unique across processes), [`Update`](PutMode::Update) is a compare-and-swap against the
//! version a [`get`](Store::get) returned (the catalog's read-modify-write, so processes on
//! different hosts need no shared lock) — and `get`, [`head`](Store::head),
//! [`list`](Store::list), [`delete`](Store::delete). Conveniences (`put_bytes`, `put_file`,
//! `get_bytes`, `delete_many`, publishing a snapshot's pair) are in [`StoreExt`], implemented
//! for every store.
//!
//! Notions that only a directory on this host has — staging images beside the objects so that
//! publishing is a rename, reading objects in place, hard links, freeing deleted objects in the
//! background, crash leftovers — are an optional capability, [`LocalStorage`], that a store
//! offers through [`Store::local`] and the manager asks for. A store without it (memory, a
//! remote service) is driven through the core alone.
//!
//! [`LocalStore`] keeps objects as files in one directory; [`MemoryStore`] keeps them in
//! memory. Both pass the same conformance suite (`snapshot::testing`, feature `test-util`).
//! Stores are shared as `Arc<dyn Store>`; a decorator wraps one and forwards what it keeps.

#[cfg(feature = "dedup")]
pub mod dedup;
#[cfg(feature = "encrypt")]
pub mod encrypt;
mod local;
mod memory;
#[cfg(feature = "s3")]
pub mod replica;
#[cfg(feature = "s3")]
pub mod s3;

#[cfg(feature = "dedup")]
pub use dedup::{DedupStore, GcReport};
#[cfg(feature = "encrypt")]
pub use encrypt::{EncryptedStore, EncryptionKey};
pub use local::LocalStore;
pub use memory::MemoryStore;
#[cfg(feature = "s3")]
pub use replica::ReplicatedStore;
#[cfg(feature = "s3")]
pub use s3::{S3Options, S3Store};

/// Staging-file prefix: any file named so is a leftover of an interrupted write.
pub use crate::fs_util::STAGING_PREFIX;
/// Trash-file prefix: a deleted object whose space is still to be freed; always garbage.
pub use crate::fs_util::TRASH_PREFIX;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutMode {
    /// Fail with [`Error::AlreadyExists`] if the key exists.
    Create,
    /// Replace an existing object atomically (or create it).
    Overwrite,
    /// Replace the object only if it is still at this version (as [`Store::get`] returned
    /// it): a compare-and-swap. Fails with [`Error::Precondition`] when the object changed or
    /// is gone. A remote store does it with a conditional request (`If-Match`).
    Update(String),
}

/// What to put: bytes, or a finished, fsynced local file that the store takes over (moves in,
/// or uploads and then removes; on error it is left for the caller).
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// The file at this path.
    File(&'a Path),
}

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the store keeps one.
    pub modified: Option<DateTime<Utc>>,
    /// The version a [`PutMode::Update`] compares against, when the store knows it here
    /// ([`Store::get`] always says it).
    pub version: Option<String>,
}

impl ObjectMeta {
    /// Metadata of `key` (`version` unknown).
    pub fn new(key: impl Into<String>, size: u64, modified: Option<DateTime<Utc>>) -> Self {
        ObjectMeta {
            key: key.into(),
            size,
            modified,
            version: None,
        }
    }

    /// With the version a [`PutMode::Update`] compares against.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }
}

/// A whole object and its metadata, as [`Store::get`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its metadata, with its version.
    pub meta: ObjectMeta,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A place that keeps snapshot objects by key: the small core every store implements.
///
/// Keys are flat, file-name-safe strings chosen by the library. Puts are atomic (an object is
/// either absent or complete) and durable before they return.
pub trait Store: Send + Sync + Debug {
    /// Human-readable location of the store (a directory, a URL).
    fn location(&self) -> String;

    /// Human-readable location of one object (recorded as `file_path`).
    fn object_location(&self, key: &str) -> String;

    /// Stores `payload` under `key`, atomically and durably, as `mode` says; returns the new
    /// version when the store knows it.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] (`Create` on an existing key), [`Error::Precondition`]
    /// (`Update` of an object that changed), [`Error::InvalidInput`] for a key the store cannot
    /// hold, [`Error::StorageFull`], [`Error::PermissionDenied`], I/O errors naming the path.
    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>>;

    /// Reads a whole object with its version.
    ///
    /// # Errors
    /// [`Error::BlobMissing`] when absent; I/O errors.
    fn get(&self, key: &str) -> Result<Object>;

    /// Writes an object to a new local file `dest` (which must not exist; left absent on
    /// error). Not fsynced.
    ///
    /// # Errors
    /// [`Error::BlobMissing`] when absent; I/O errors.
    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta>;

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

    /// Whether objects outlive this host (a remote service): on an ephemeral host the manager
    /// stays on only with such a store. Default: no.
    fn outlives_host(&self) -> bool {
        false
    }

    /// The local-directory capability, when the store keeps its objects as files in a
    /// directory of this host (see [`LocalStorage`]). Default: none.
    fn local(&self) -> Option<&dyn LocalStorage> {
        None
    }

    /// Where the manager prepares images for a store without [`local`](Self::local) storage
    /// when it should not be a private temporary directory: a directory of this host beside
    /// the store's objects (a dedup layer over a local store), so that moving an image in is a
    /// rename and a crashed writer's leftovers are found there. Default: none.
    fn staging_hint(&self) -> Option<PathBuf> {
        None
    }

    /// The capability of a store that takes images as streams (see [`StreamingStorage`]).
    /// Default: none.
    fn streaming(&self) -> Option<&dyn StreamingStorage> {
        None
    }

    /// What the snapshots take and what they cost, for a store that shares data between
    /// them (a dedup store). Default: `None` (every object is what it takes).
    ///
    /// # Errors
    /// The store's errors.
    fn usage(&self) -> Result<Option<StoreUsage>> {
        Ok(None)
    }

    /// What a store layer finds wrong with its own objects — for a dedup store: staging files
    /// of crashed writers, packs no snapshot references, a pack without its index, a snapshot
    /// needing a pack that is gone — one line each, mended where it can be when `repair`
    /// (leftovers older than `min_age` removed, unreferenced packs collected). Default:
    /// nothing (a plain store's objects are checked by the manager's doctor).
    ///
    /// # Errors
    /// The store's errors.
    fn check_layer(&self, repair: bool, min_age: Duration) -> Result<Vec<String>> {
        let _ = (repair, min_age);
        Ok(Vec::new())
    }

    /// What a replica of the store lacks, for a store with one ([`ReplicatedStore`]-like
    /// layers). Default: `None`.
    ///
    /// # Errors
    /// The stores' errors.
    fn replication(&self) -> Result<Option<ReplicationStatus>> {
        Ok(None)
    }

    /// Waits for the store's background work: a local store's frees of deleted objects, a
    /// replica's copies. Default: the local frees.
    ///
    /// # Errors
    /// The background work's errors (a replica's last failed copy).
    fn settle_background(&self) -> Result<()> {
        self.local().map_or(Ok(()), |l| l.settle_frees())
    }

    /// The bytes the object `key` added to the store when it was put, for a store that shares
    /// data between objects. Default: `None`.
    ///
    /// # Errors
    /// The store's errors.
    fn added_bytes(&self, key: &str) -> Result<Option<u64>> {
        let _ = key;
        Ok(None)
    }
}

/// The capability of a store that takes a snapshot image as a stream of bytes, so that the
/// manager hands it a source's bytes as they are read instead of staging a copy of them (a
/// dedup store keeps only the chunks it lacks).
pub trait StreamingStorage: Send + Sync {
    /// Stores the image `write` writes, and writes to the new local file `dest` what a
    /// [`Store::put`] of it as a [`Payload::File`] then publishes under a key (for a dedup
    /// store, the image's manifest). Returns the image's size and checksum.
    ///
    /// # Errors
    /// The errors of `write`; the store's errors; I/O errors naming `dest`.
    fn capture_to_file(
        &self,
        dest: &Path,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<StreamedImage>;
}

/// An image a [`StreamingStorage`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamedImage {
    /// Its size in bytes.
    pub size: u64,
    /// `blake3:<hex>` of its bytes.
    pub checksum: String,
}

/// What a replica lacks (see [`Store::replication`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationStatus {
    /// The replica's location.
    pub replica: String,
    /// Objects of the local store the replica does not have (yet), by key.
    pub pending: Vec<String>,
    /// Jobs queued in this process (copies and deletes).
    pub queued: usize,
    /// The last copy that failed for good, if the last one failed.
    pub last_error: Option<String>,
}

impl ReplicationStatus {
    /// A status.
    pub fn new(
        replica: String,
        pending: Vec<String>,
        queued: usize,
        last_error: Option<String>,
    ) -> Self {
        ReplicationStatus {
            replica,
            pending,
            queued,
            last_error,
        }
    }
}

/// What a store that shares data between snapshots holds (see [`Store::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreUsage {
    /// Snapshots (manifests) in the store.
    pub snapshots: u64,
    /// The sum of their images' sizes.
    pub logical_bytes: u64,
    /// Bytes the store holds for everything (chunks, indexes, manifests, catalog).
    pub stored_bytes: u64,
    /// Pack objects.
    pub packs: u64,
}

impl StoreUsage {
    /// Logical bytes per stored byte (`0.0` for an empty store).
    pub fn ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            0.0
        } else {
            self.logical_bytes as f64 / self.stored_bytes as f64
        }
    }
}

/// Conveniences over the [`Store`] core, for every store.
pub trait StoreExt: Store {
    /// Stores bytes under `key`.
    ///
    /// # Errors
    /// As [`Store::put`].
    fn put_bytes(&self, key: &str, data: &[u8], mode: PutMode) -> Result<()> {
        self.put(key, Payload::Bytes(data), mode).map(drop)
    }

    /// Publishes a finished, fsynced file under `key` (moved, or uploaded then removed; on
    /// error it is left for the caller).
    ///
    /// # Errors
    /// As [`Store::put`].
    fn put_file(&self, key: &str, file: &Path, mode: PutMode) -> Result<()> {
        self.put(key, Payload::File(file), mode).map(drop)
    }

    /// Reads a whole object's bytes.
    ///
    /// # Errors
    /// As [`Store::get`].
    fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        self.get(key).map(|o| o.bytes)
    }

    /// Deletes several objects; absent keys succeed. Every key is tried even after a failure;
    /// a local store makes all the removals durable at once and frees their space in the
    /// background ([`LocalStorage::discard`]).
    ///
    /// # Errors
    /// The first error met.
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        if let Some(local) = self.local() {
            return local.discard(keys);
        }
        let mut first = None;
        for key in keys {
            if let Err(e) = self.delete(key) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Waits for the store's background work (a local store freeing deleted objects).
    ///
    /// # Errors
    /// The background work's errors.
    fn settle(&self) -> Result<()> {
        self.settle_background()
    }

    /// Publishes a snapshot: the finished, fsynced image file `image` under `blob_key` and its
    /// record `sidecar` under `sidecar_key`, both refusing an existing key. Either both are
    /// published or neither is (on error `image` is left for the caller). A local store links
    /// both into place with one directory fsync; any other puts the sidecar (reserving the id),
    /// then the image.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when either key exists; the errors of [`Store::put`].
    fn put_snapshot(
        &self,
        blob_key: &str,
        image: &Path,
        sidecar_key: &str,
        sidecar: &[u8],
    ) -> Result<()> {
        if let Some(local) = self.local()
            && local.dir().join(blob_key).parent() == image.parent()
        {
            return local.publish_snapshot(blob_key, image, sidecar_key, sidecar);
        }
        self.put(sidecar_key, Payload::Bytes(sidecar), PutMode::Create)?;
        if let Err(e) = self.put(blob_key, Payload::File(image), PutMode::Create) {
            let _ = self.delete(sidecar_key);
            return Err(e);
        }
        Ok(())
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The capability of a store whose objects are files in one directory of this host.
pub trait LocalStorage: Send + Sync {
    /// The directory: images are staged in it (so that publishing is a rename), ephemeral
    /// hosts are detected from it, and leftovers of crashed writers are found in it.
    fn dir(&self) -> &Path;

    /// Makes sure [`dir`](Self::dir) exists (created 0700 on a store's first write, so that
    /// opening a store on a mistyped path leaves nothing behind).
    ///
    /// # Errors
    /// I/O errors naming the directory.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    /// The file holding the object `key` (read in place, never written), whether or not it
    /// exists.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a key the store cannot hold.
    fn object_path(&self, key: &str) -> Result<PathBuf>;

    /// Publishes a snapshot's image (a file in [`dir`](Self::dir)) and its sidecar together,
    /// as [`StoreExt::put_snapshot`] describes.
    ///
    /// # Errors
    /// As [`StoreExt::put_snapshot`].
    fn publish_snapshot(
        &self,
        blob_key: &str,
        image: &Path,
        sidecar_key: &str,
        sidecar: &[u8],
    ) -> Result<()>;

    /// Deletes several objects durably at once (absent keys succeed), freeing their space in
    /// the background: unlinking a large file can take as long as copying a tenth of it.
    ///
    /// # Errors
    /// The first error met.
    fn discard(&self, keys: &[String]) -> Result<()>;

    /// Waits for the background frees of [`discard`](Self::discard).
    ///
    /// # Errors
    /// None so far; the signature leaves room for background work that can fail.
    fn settle_frees(&self) -> Result<()>;

    /// Staging files left by crashed writers (older than `min_age`, so live writers are
    /// spared) and trash not yet freed.
    ///
    /// # Errors
    /// I/O errors.
    fn leftovers(&self, min_age: Duration) -> Result<Vec<PathBuf>>;
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

/// The version of an object's bytes, for stores that compare content: `blake3:<hex>`.
pub(crate) fn content_version(bytes: &[u8]) -> String {
    crate::fs_util::hash_bytes(bytes)
}

/// [`Error::Precondition`] for `key`.
pub(crate) fn precondition(key: &str) -> Error {
    Error::Precondition {
        key: key.to_string(),
    }
}
