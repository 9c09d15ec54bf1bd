//! Manifest headers, read once per process: a manifest is never changed once published, so its
//! header (size, checksum, packs, bytes added) is kept by key, size and modification time — a
//! collection after every deletion, `head`, `status` and `doctor` then read the store's
//! listing, not every manifest again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::store::dedup::manifest::{Manifest, ManifestHeader, is_manifest};
use crate::store::{ObjectMeta, Store};

/// What an object was found to be when last read.
type Seen = (u64, Option<DateTime<Utc>>, Option<Arc<ManifestHeader>>);

/// The headers of the manifests of a store, by key.
#[derive(Debug, Default)]
pub(crate) struct HeaderCache {
    seen: Mutex<HashMap<String, Seen>>,
}

impl HeaderCache {
    /// The header of the object `meta` describes, `None` when it is not a manifest (or is
    /// gone).
    ///
    /// # Errors
    /// The store's errors; [`Error::ChecksumMismatch`] for a damaged manifest.
    pub(crate) fn header(
        &self,
        store: &dyn Store,
        meta: &ObjectMeta,
    ) -> Result<Option<Arc<ManifestHeader>>> {
        if let Some((size, modified, header)) = self.lock().get(&meta.key)
            && *size == meta.size
            && *modified == meta.modified
        {
            return Ok(header.clone());
        }
        let bytes = match store.get(&meta.key) {
            Ok(o) => o.bytes,
            Err(Error::BlobMissing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = if is_manifest(&bytes) {
            Some(Arc::new(Manifest::decode(&meta.key, &bytes)?.header))
        } else {
            None
        };
        self.remember(meta, header.clone());
        Ok(header)
    }

    /// Records the header of an object just written.
    pub(crate) fn remember(&self, meta: &ObjectMeta, header: Option<Arc<ManifestHeader>>) {
        self.lock()
            .insert(meta.key.clone(), (meta.size, meta.modified, header));
    }

    /// Forgets an object (deleted).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}
