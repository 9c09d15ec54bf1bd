//! The catalog: `snapshot_metadata.json`, a JSON array of [`SnapshotRecord`]s, plus one sidecar
//! per snapshot from which the index can be rebuilt.
//!
//! The index is the truth of what snapshots exist. It is only ever replaced whole and atomically
//! (through the store's atomic put), and every read-modify-write holds the store's lock, so
//! concurrent processes never lose a record. A record is added only after its blob is durable
//! and checksummed; a record is removed before its blob is deleted. A crash between those steps
//! leaves at worst an unlisted blob, which [`doctor`](crate::SnapshotManager::doctor) finds.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::record::SnapshotRecord;
use crate::store::{PutMode, Store};

/// Key of the catalog index in the store.
pub const INDEX_KEY: &str = "snapshot_metadata.json";

/// Reads and rewrites the catalog index of one store.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    store: Arc<dyn Store>,
}

impl Catalog {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Catalog { store }
    }

    /// All records as stored (oldest first as written). A missing index is an empty catalog.
    pub(crate) fn load(&self) -> Result<Vec<SnapshotRecord>> {
        let bytes = match self.store.get_bytes(INDEX_KEY) {
            Ok(b) => b,
            Err(Error::BlobMissing { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        parse_index(&bytes, &self.store.object_location(INDEX_KEY))
    }

    /// Creates an empty index when there is none, so that a missing index always means a lost
    /// one (and a crash during the very first snapshot leaves an ordinary orphan, not a store
    /// that looks like it lost its index).
    pub(crate) fn ensure_index(&self) -> Result<()> {
        if self.store.head(INDEX_KEY)?.is_some() {
            return Ok(());
        }
        let _lock = self.store.lock()?;
        if self.store.head(INDEX_KEY)?.is_none() {
            self.write(&[])?;
        }
        Ok(())
    }

    /// Runs `f` on the records under the store lock and writes the result back atomically when
    /// `f` returns `Ok`.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<SnapshotRecord>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.store.lock()?;
        let mut records = self.load()?;
        let before = records.clone();
        let out = f(&mut records)?;
        if records != before {
            self.write(&records)?;
        }
        Ok(out)
    }

    /// Replaces the whole index (callers hold the lock).
    pub(crate) fn write(&self, records: &[SnapshotRecord]) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(records)
            .map_err(|e| Error::invalid("catalog", format!("cannot serialise records: {e}")))?;
        json.push(b'\n');
        self.store.put_bytes(INDEX_KEY, &json, PutMode::Overwrite)
    }

    /// Reads one sidecar.
    pub(crate) fn read_sidecar(&self, key: &str) -> Result<SnapshotRecord> {
        let bytes = self.store.get_bytes(key)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::CatalogCorrupt {
            path: self.store.object_location(key).into(),
            line: e.line(),
            column: e.column(),
            detail: e.to_string(),
        })
    }
}

/// Parses index bytes; errors name the line and column.
pub(crate) fn parse_index(bytes: &[u8], location: &str) -> Result<Vec<SnapshotRecord>> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::CatalogCorrupt {
            path: location.into(),
            line: 1,
            column: 1,
            detail: "the index is empty (a truncated write?)".into(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::CatalogCorrupt {
        path: location.into(),
        line: e.line(),
        column: e.column(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_indexes_are_typed_errors() {
        for (bytes, line) in [
            (&b"[{\"snapshot_id\": \"a\""[..], 1),
            (b"\n\n  nope", 3),
            (b"", 1),
        ] {
            match parse_index(bytes, "/s/snapshot_metadata.json") {
                Err(Error::CatalogCorrupt { line: l, path, .. }) => {
                    assert_eq!(l, line);
                    assert_eq!(path, std::path::PathBuf::from("/s/snapshot_metadata.json"));
                }
                other => panic!("expected CatalogCorrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn empty_array_is_an_empty_catalog() -> Result<()> {
        assert!(parse_index(b"[]", "x")?.is_empty());
        Ok(())
    }
}
