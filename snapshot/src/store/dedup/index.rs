//! The chunks a store holds: loaded from the pack indexes, each read once per process (packs
//! and their indexes never change once published).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dedup::pack::{self, IdxEntry};

/// Decoded pack indexes by key, shared by every snapshot of a store in this process.
#[derive(Debug, Default)]
pub(crate) struct IdxCache {
    decoded: Mutex<HashMap<String, Arc<Vec<IdxEntry>>>>,
}

impl IdxCache {
    /// The entries of the index `idx_key`, from the cache or the store.
    ///
    /// # Errors
    /// The store's errors ([`Error::BlobMissing`] when it is gone); damage of the index.
    pub(crate) fn entries(&self, store: &dyn Store, idx_key: &str) -> Result<Arc<Vec<IdxEntry>>> {
        if let Some(e) = self.lock().get(idx_key) {
            return Ok(e.clone());
        }
        let bytes = store.get(idx_key)?.bytes;
        let (_, entries) = pack::decode_idx(idx_key, &bytes)?;
        let entries = Arc::new(entries);
        self.lock().insert(idx_key.to_string(), entries.clone());
        Ok(entries)
    }

    /// Forgets an index (its pack was collected).
    pub(crate) fn forget(&self, idx_key: &str) {
        self.lock().remove(idx_key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<IdxEntry>>>> {
        self.decoded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where each known chunk is: its pack (by position in [`packs`](Self::packs)) and entry.
#[derive(Debug, Default)]
pub(crate) struct ChunkIndex {
    pub packs: Vec<String>,
    pub locs: HashMap<[u8; 32], (u32, IdxEntry)>,
}

impl ChunkIndex {
    /// Adds the chunks of `pack_key`. A chunk held by several packs is found where it is
    /// whole rather than as a delta (a delta's base may be in a pack the reader does not
    /// have); otherwise the first pack wins.
    pub(crate) fn add(&mut self, pack_key: &str, entries: &[IdxEntry]) {
        let n = u32::try_from(self.packs.len()).unwrap_or(u32::MAX);
        self.packs.push(pack_key.to_string());
        for e in entries {
            match self.locs.entry(e.hash) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert((n, *e));
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if o.get().1.base.is_some() && e.base.is_none() {
                        o.insert((n, *e));
                    }
                }
            }
        }
    }

    /// Every chunk of every published pack of `store` but those of `excluded` packs (condemned
    /// by a collection: a new snapshot must not come to depend on them). A pack whose index
    /// cannot be read is left out (its chunks are written again).
    ///
    /// # Errors
    /// The store's listing errors.
    pub(crate) fn load_all(
        store: &dyn Store,
        cache: &IdxCache,
        excluded: &HashSet<String>,
    ) -> Result<ChunkIndex> {
        let objects = store.list()?;
        let packs: HashSet<&str> = objects
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| pack::is_pack(k))
            .collect();
        let mut index = ChunkIndex::default();
        for o in objects.iter().filter(|o| pack::is_idx(&o.key)) {
            let pack_key = pack::pack_of_idx(&o.key);
            if !packs.contains(pack_key.as_str()) || excluded.contains(&pack_key) {
                continue;
            }
            match cache.entries(store, &o.key) {
                Ok(entries) => index.add(&pack_key, &entries),
                Err(e) => {
                    tracing::warn!(index = %o.key, error = %e, "a pack index cannot be read; its chunks will be stored again");
                }
            }
        }
        Ok(index)
    }

    /// The chunks of the named packs (a manifest's).
    ///
    /// # Errors
    /// [`Error::BlobMissing`] naming the pack whose index is gone; damage of an index.
    pub(crate) fn load_packs(
        store: &dyn Store,
        cache: &IdxCache,
        packs: &[String],
    ) -> Result<ChunkIndex> {
        let mut index = ChunkIndex::default();
        for p in packs {
            let entries = cache
                .entries(store, &pack::idx_key(p))
                .map_err(|e| match e {
                    Error::BlobMissing { .. } => Error::BlobMissing { key: p.clone() },
                    e => e,
                })?;
            index.add(p, &entries);
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: u8, base: Option<u8>) -> IdxEntry {
        IdxEntry {
            hash: [hash; 32],
            offset: 8,
            clen: 1,
            ulen: 1,
            base: base.map(|b| [b; 32]),
        }
    }

    #[test]
    fn a_whole_copy_wins_over_a_delta() {
        let mut index = ChunkIndex::default();
        index.add("chunks-a.pack", &[entry(1, Some(9))]);
        index.add("chunks-b.pack", &[entry(1, None), entry(2, None)]);
        index.add("chunks-c.pack", &[entry(2, Some(9))]);
        let (p1, e1) = index.locs[&[1; 32]];
        assert_eq!(
            (index.packs[p1 as usize].as_str(), e1.base),
            ("chunks-b.pack", None)
        );
        let (p2, _) = index.locs[&[2; 32]];
        assert_eq!(index.packs[p2 as usize], "chunks-b.pack");
    }
}
