//! The catalog: `snapshot_metadata.json`, a JSON array of [`SnapshotRecord`]s, plus one sidecar
//! per snapshot from which the index can be rebuilt.
//!
//! The index is the truth of what snapshots exist. It is only ever replaced whole and atomically,
//! and every read-modify-write is a compare-and-swap on the store's core
//! ([`PutMode::Update`] against the version read), retried when another writer got there first
//! — so concurrent processes never lose a record, on any store, with no lock of the catalog's
//! own. A record is added only after its blob is durable and checksummed; a record is removed
//! before its blob is deleted. A crash between those steps leaves at worst an unlisted blob,
//! which [`doctor`](crate::SnapshotManager::doctor) finds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::record::SnapshotRecord;
use crate::store::{Payload, PutMode, Store};

/// Key of the catalog index in the store.
pub const INDEX_KEY: &str = "snapshot_metadata.json";

/// The sidecar field that marks a snapshot being dropped from the index (see
/// `SnapshotManager::unlisting`): such a sidecar no longer describes a snapshot to keep.
pub(crate) const DROPPING: &str = "dropping";

/// How long a read-modify-write keeps retrying while other writers win the race.
const UPDATE_BUDGET: Duration = Duration::from_secs(60);

/// Reads and rewrites the catalog index of one store.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    store: Arc<dyn Store>,
}

/// The index as read: its records and the version to compare against (`None`: no index).
struct Read {
    records: Vec<SnapshotRecord>,
    version: Option<String>,
}

impl Catalog {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Catalog { store }
    }

    /// All records as stored (oldest first as written). A missing index is read from the
    /// sidecars (the records whose blob is there): a lost index never hides a snapshot, and
    /// the next write puts them all back in it.
    pub(crate) fn load(&self) -> Result<Vec<SnapshotRecord>> {
        self.read().map(|r| r.records)
    }

    /// The records the sidecars describe whose blob is in the store, oldest first.
    pub(crate) fn described_by_sidecars(&self) -> Result<Vec<SnapshotRecord>> {
        let objects = self.store.list()?;
        let keys: std::collections::HashSet<&str> =
            objects.iter().map(|o| o.key.as_str()).collect();
        let mut records: Vec<SnapshotRecord> = objects
            .iter()
            .filter(|o| is_sidecar(&o.key))
            .filter_map(|o| self.read_sidecar(&o.key).ok())
            .filter(|r| r.sidecar_key() != r.blob_key && keys.contains(r.blob_key.as_str()))
            .filter(|r| r.extra.get(DROPPING) != Some(&serde_json::Value::Bool(true)))
            .collect();
        records.sort_by(|a, b| {
            a.datetime
                .cmp(&b.datetime)
                .then_with(|| a.snapshot_id.cmp(&b.snapshot_id))
        });
        Ok(records)
    }

    /// Whether the index itself is missing (its records then come from the sidecars).
    pub(crate) fn index_missing(&self) -> Result<bool> {
        Ok(self.store.head(INDEX_KEY)?.is_none())
    }

    fn read(&self) -> Result<Read> {
        let object = match self.store.get(INDEX_KEY) {
            Ok(o) => o,
            Err(Error::BlobMissing { .. }) => {
                let records = self.described_by_sidecars()?;
                if !records.is_empty() {
                    tracing::warn!(
                        count = records.len(),
                        "the catalog index is missing: records read from their sidecars"
                    );
                }
                return Ok(Read {
                    records,
                    version: None,
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Read {
            records: parse_index(&object.bytes, &self.store.object_location(INDEX_KEY))?,
            version: Some(
                object
                    .meta
                    .version
                    .unwrap_or_else(|| crate::store::content_version(&object.bytes)),
            ),
        })
    }

    /// Creates an empty index when there is none, so that a missing index always means a lost
    /// one (and a crash during the very first snapshot leaves an ordinary orphan, not a store
    /// that looks like it lost its index).
    pub(crate) fn ensure_index(&self) -> Result<()> {
        if self.store.head(INDEX_KEY)?.is_some() {
            return Ok(());
        }
        // A lost index comes back with what the sidecars describe, never as an empty one.
        let records = self.described_by_sidecars()?;
        match self.put(&records, PutMode::Create) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` on the records and writes the result back when `f` returns `Ok` and changed
    /// them — as a compare-and-swap against the index it read, re-reading and running `f`
    /// again when another writer changed the index meanwhile.
    ///
    /// # Errors
    /// `f`'s errors; [`Error::StoreLocked`] when other writers kept winning for the whole
    /// budget; store errors.
    pub(crate) fn update<T>(
        &self,
        mut f: impl FnMut(&mut Vec<SnapshotRecord>) -> Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let Read {
                mut records,
                version,
            } = self.read()?;
            let before = records.clone();
            let out = f(&mut records)?;
            if records == before {
                return Ok(out);
            }
            let mode = match version {
                Some(v) => PutMode::Update(v),
                None => PutMode::Create,
            };
            match self.put(&records, mode) {
                Ok(()) => return Ok(out),
                Err(Error::Precondition { .. } | Error::AlreadyExists { .. })
                    if start.elapsed() < UPDATE_BUDGET =>
                {
                    // Another writer won: read its index and apply `f` to it. A jittered pause
                    // keeps many losers from colliding again in step.
                    let jitter = u64::from(std::process::id() ^ start.elapsed().subsec_nanos());
                    std::thread::sleep(pause + Duration::from_micros(jitter % 1000));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => {
                    return Err(Error::StoreLocked {
                        path: self.store.object_location(INDEX_KEY).into(),
                        waited_ms: start.elapsed().as_millis() as u64,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Replaces the whole index, whatever it holds now — parseable or not (doctor's rebuild of
    /// a lost or corrupt index).
    pub(crate) fn replace(&self, records: &[SnapshotRecord]) -> Result<()> {
        self.put(records, PutMode::Overwrite)
    }

    fn put(&self, records: &[SnapshotRecord], mode: PutMode) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(records)
            .map_err(|e| Error::invalid("catalog", format!("cannot serialise records: {e}")))?;
        json.push(b'\n');
        self.store
            .put(INDEX_KEY, Payload::Bytes(&json), mode)
            .map(drop)
    }

    /// Reads one sidecar.
    pub(crate) fn read_sidecar(&self, key: &str) -> Result<SnapshotRecord> {
        let bytes = self.store.get(key)?.bytes;
        serde_json::from_slice(&bytes).map_err(|e| Error::CatalogCorrupt {
            path: self.store.object_location(key).into(),
            line: e.line(),
            column: e.column(),
            detail: e.to_string(),
        })
    }
}

/// Whether `key` names a sidecar (one record as JSON), not the index or a blob.
pub(crate) fn is_sidecar(key: &str) -> bool {
    key.ends_with(".json") && key != INDEX_KEY && !key.contains('/')
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
