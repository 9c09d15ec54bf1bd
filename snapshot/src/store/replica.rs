//! [`ReplicatedStore`]: a local store with a replica in another store (a bucket). Snapshots
//! are published locally — the wrapped call waits for nothing more — and copied to the replica
//! by a background thread, in order (image, then its sidecar, then the catalog index); deletes
//! follow. A restore whose local image is gone reads the replica's copy. What the replica
//! lacks is counted from both listings ([`Store::replication`]), so copies interrupted by the
//! process's exit are seen — and made up by the next process's catch-up at open.
//!
//! The replica never loses what the local store lost: the catch-up copies what the replica
//! lacks and deletes nothing; only deletes made through this store (retention) are mirrored.

mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::INDEX_KEY;
use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{
    IntoStore, LocalStorage, Object, ObjectMeta, Payload, PutMode, ReplicationStatus, Store,
    StoreUsage,
};

use worker::{Job, Worker};

/// A local store whose objects are copied to a replica in the background (see the module
/// docs).
///
/// ```no_run
/// use snapshot::store::{LocalStore, ReplicatedStore, S3Options, S3Store};
/// let replica = S3Store::open(S3Options::from_url("s3://backups/plant")?)?;
/// let store = ReplicatedStore::new(LocalStore::open("backups")?, replica)?;
/// # Ok::<(), snapshot::Error>(())
/// ```
#[derive(Debug)]
pub struct ReplicatedStore {
    local: Arc<dyn Store>,
    replica: Arc<dyn Store>,
    worker: Worker,
}

impl ReplicatedStore {
    /// `local` (a store with a directory of this host) replicated to `replica`; starts the
    /// background copier with a catch-up of what the replica lacks.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `local` has no local directory.
    pub fn new(local: impl IntoStore, replica: impl IntoStore) -> Result<Self> {
        let local = local.into_store();
        if local.local().is_none() {
            return Err(Error::invalid(
                "store",
                format!(
                    "a replicated store's primary must be a directory of this host ({} is not)",
                    local.location()
                ),
            ));
        }
        let replica = replica.into_store();
        let worker = Worker::start(local.clone(), replica.clone());
        worker.push(Job::CatchUp);
        Ok(ReplicatedStore {
            local,
            replica,
            worker,
        })
    }

    /// The replica.
    pub fn replica(&self) -> &Arc<dyn Store> {
        &self.replica
    }

    /// Puts the replica's copy of `key` back at `path` (durably, never over a file);
    /// `false` when the replica lacks it too.
    fn fetch_back(&self, key: &str, path: &Path) -> Result<bool> {
        if self.replica.head(key)?.is_none() {
            return Ok(false);
        }
        let dir = self.local_storage().dir();
        let staged = fs_util::StagingGuard::new(fs_util::staging_path(dir, key));
        self.replica.get_to_file(key, staged.path())?;
        fs_util::sync_file(staged.path())?;
        match fs_util::publish_new(staged.path(), path) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    fn local_storage(&self) -> &dyn LocalStorage {
        self.local
            .local()
            .expect("checked at construction: the primary is local")
    }
}

impl Store for ReplicatedStore {
    fn location(&self) -> String {
        self.local.location()
    }

    fn object_location(&self, key: &str) -> String {
        self.local.object_location(key)
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>> {
        let v = self.local.put(key, payload, mode)?;
        self.worker.push(Job::Copy(key.to_string()));
        Ok(v)
    }

    fn get(&self, key: &str) -> Result<Object> {
        match self.local.get(key) {
            Err(Error::BlobMissing { .. }) if key != INDEX_KEY => self.replica.get(key),
            r => r,
        }
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta> {
        match self.local.get_to_file(key, dest) {
            Err(Error::BlobMissing { .. }) if key != INDEX_KEY => {
                tracing::warn!(key, replica = %self.replica.location(), "the local copy is gone: reading the replica");
                self.replica.get_to_file(key, dest)
            }
            r => r,
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.local.head(key)? {
            None if key != INDEX_KEY => self.replica.head(key),
            found => Ok(found),
        }
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        self.local.list()
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.local.delete(key)?;
        self.worker.push(Job::Delete(key.to_string()));
        Ok(())
    }

    fn local(&self) -> Option<&dyn LocalStorage> {
        Some(self)
    }

    fn usage(&self) -> Result<Option<StoreUsage>> {
        self.local.usage()
    }

    fn check_layer(&self, repair: bool, min_age: Duration) -> Result<Vec<String>> {
        let mut lines = self.local.check_layer(repair, min_age)?;
        lines.extend(
            self.replica
                .check_layer(repair, min_age)?
                .into_iter()
                .map(|l| format!("replica: {l}")),
        );
        Ok(lines)
    }

    fn replication(&self) -> Result<Option<ReplicationStatus>> {
        self.worker.status().map(Some)
    }

    fn settle_background(&self) -> Result<()> {
        self.local_storage().settle_frees()?;
        self.worker.settle()
    }
}

impl LocalStorage for ReplicatedStore {
    fn dir(&self) -> &Path {
        self.local_storage().dir()
    }

    fn prepare(&self) -> Result<()> {
        self.local_storage().prepare()
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        let path = self.local_storage().object_path(key)?;
        if key != INDEX_KEY && !path.exists() {
            // Read in place, but the local copy is gone: bring the replica's back first.
            match self.fetch_back(key, &path) {
                Ok(true) => {
                    tracing::warn!(key, replica = %self.replica.location(), "the local copy was gone: fetched back from the replica")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(key, error = %e, "the local copy is gone and the replica's could not be fetched")
                }
            }
        }
        Ok(path)
    }

    fn publish_snapshot(
        &self,
        blob_key: &str,
        image: &Path,
        sidecar_key: &str,
        sidecar: &[u8],
    ) -> Result<()> {
        self.local_storage()
            .publish_snapshot(blob_key, image, sidecar_key, sidecar)?;
        self.worker.push(Job::Copy(blob_key.to_string()));
        self.worker.push(Job::Copy(sidecar_key.to_string()));
        Ok(())
    }

    fn discard(&self, keys: &[String]) -> Result<()> {
        let r = self.local_storage().discard(keys);
        for k in keys {
            self.worker.push(Job::Delete(k.clone()));
        }
        r
    }

    fn settle_frees(&self) -> Result<()> {
        self.local_storage().settle_frees()
    }

    fn leftovers(&self, min_age: Duration) -> Result<Vec<PathBuf>> {
        self.local_storage().leftovers(min_age)
    }
}
