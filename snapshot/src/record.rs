//! The catalog entry of one snapshot.
//!
//! [`SnapshotRecord`] keeps every field of the original `snapshot_metadata.json` entry
//! (`snapshot_id`, `timestamp`, `datetime`, `description`, `operation_type`, `entity_type`,
//! `entity_id`, `file_path`, `size_mb`) and adds what a verifiable, restorable catalog needs.
//! Unknown fields written by a newer version are kept (in [`SnapshotRecord::extra`]) and written
//! back unchanged, so an older library never drops what it does not understand.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Version of the on-disk record format written by this library.
pub const FORMAT_VERSION: u32 = 1;

/// The operation type of the safety snapshot taken before every restore.
pub const PRE_RESTORE: &str = "pre_restore";

/// The operation type recorded on every scheduled snapshot (the job's name is its entity type).
pub const SCHEDULED: &str = "scheduled";

/// What became of the call a snapshot was taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The snapshot was taken on its own, not around a wrapped call.
    #[default]
    Standalone,
    /// The wrapped call has not finished (or its process died before it could say).
    Pending,
    /// The wrapped call returned successfully: its changes are in the live data.
    Committed,
    /// The wrapped call returned an error or panicked.
    Failed,
}

/// One snapshot in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotRecord {
    /// Unique, time-sortable, file-name-safe id, e.g. `20261123_101500_123_delete_measure_42`.
    pub snapshot_id: String,
    /// Local-free UTC time stamp to the second, `YYYYMMDD_HHMMSS` (as the original wrote it).
    pub timestamp: String,
    /// UTC time of the snapshot, RFC 3339 with microseconds.
    pub datetime: DateTime<Utc>,
    /// Free text: why the snapshot was taken.
    pub description: String,
    /// What was about to happen ("delete", "update", "manual", "pre_restore", …).
    pub operation_type: String,
    /// The kind of entity concerned ("measure", …), if any.
    #[serde(default)]
    pub entity_type: Option<String>,
    /// The id of the entity concerned, as text (numbers of the original format are read as text).
    #[serde(default, deserialize_with = "scalar_as_string")]
    pub entity_id: Option<String>,
    /// Where the blob is: an absolute path for a local store, a URL-like location otherwise.
    pub file_path: String,
    /// Size of the blob in MiB, rounded to two decimals (as the original wrote it).
    pub size_mb: f64,
    /// Key of the blob in its store.
    pub blob_key: String,
    /// Exact size of the blob in bytes.
    pub size_bytes: u64,
    /// Algorithm-tagged checksum of the blob, e.g. `blake3:…`.
    pub checksum: String,
    /// The source kind the blob was taken from ("sqlite", "duckdb", "file").
    pub source_kind: String,
    /// The live path the snapshot was taken from.
    pub source_path: String,
    /// What became of the wrapped call.
    #[serde(default)]
    pub outcome: Outcome,
    /// A pinned snapshot is never removed by retention.
    #[serde(default)]
    pub pinned: bool,
    /// When the blob last passed a full verification (checksum and engine check).
    #[serde(default)]
    pub verified_at: Option<DateTime<Utc>>,
    /// For a `pre_restore` safety snapshot: the snapshot whose restore it protects against.
    #[serde(default)]
    pub restore_of: Option<String>,
    /// Record format version.
    pub format_version: u32,
    /// Version of the library that wrote the record.
    pub library_version: String,
    /// Host name of the machine that took the snapshot.
    pub host: String,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl SnapshotRecord {
    /// Whether this is the safety snapshot taken before a restore.
    pub fn is_safety(&self) -> bool {
        self.operation_type == PRE_RESTORE
    }

    /// Key of the sidecar (this record alone, as JSON) next to the blob.
    pub fn sidecar_key(&self) -> String {
        sidecar_key(&self.snapshot_id)
    }
}

/// The sidecar key for a snapshot id.
pub(crate) fn sidecar_key(id: &str) -> String {
    format!("{id}.json")
}

/// Rounds a byte count to MiB with two decimals.
pub(crate) fn size_mb(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0
}

fn scalar_as_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_original_format_and_keeps_unknown_fields() -> Result<(), serde_json::Error> {
        let json = r#"{
          "snapshot_id": "20251111_191152_delete_measure_42",
          "timestamp": "20251111_191152",
          "datetime": "2025-11-11T19:11:52.390883Z",
          "description": "Before delete measure 42",
          "operation_type": "delete",
          "entity_type": "measure",
          "entity_id": 42,
          "file_path": "data/backups/20251111_191152_delete_measure_42.duckdb",
          "size_mb": 32.26,
          "blob_key": "20251111_191152_delete_measure_42.duckdb",
          "size_bytes": 33827000,
          "checksum": "blake3:00",
          "source_kind": "duckdb",
          "source_path": "data/lnrs.duckdb",
          "format_version": 1,
          "library_version": "0.1.0",
          "host": "h",
          "from_the_future": {"a": 1}
        }"#;
        let r: SnapshotRecord = serde_json::from_str(json)?;
        assert_eq!(r.entity_id.as_deref(), Some("42"));
        assert_eq!(r.outcome, Outcome::Standalone);
        let back = serde_json::to_value(&r)?;
        assert_eq!(back["from_the_future"]["a"], 1);
        assert_eq!(back["entity_id"], "42");
        Ok(())
    }

    #[test]
    fn size_mb_rounds_to_two_decimals() {
        assert_eq!(size_mb(33_827_000), 32.26);
        assert_eq!(size_mb(0), 0.0);
    }
}
