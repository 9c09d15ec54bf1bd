//! The harnesses of the fuzz targets (`fuzz/` at the repository root) and of the property tests
//! over arbitrary bytes (`tests/arbitrary_bytes.rs`): each hands bytes to a parser the way the
//! library reads them, and panics when the parser panics, hangs past libFuzzer's timeout,
//! answers with an error of the wrong kind, or accepts something the rest of the library then
//! cannot handle. The fuzzer and the normal test suite run the very same checks.
//!
//! Compiled only when cargo-fuzz builds the targets (it sets `cfg(fuzzing)`) and in this crate's
//! unit tests; hidden, not a stable API.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Datelike, Utc};

use crate::catalog::INDEX_KEY;
use crate::error::Error;
use crate::id;
use crate::record::SnapshotRecord;
use crate::store::{MemoryStore, Payload, PutMode, Store};
use crate::verify::DoctorOptions;
use crate::{Environment, FileSource, ListFilter, RetentionPolicy, SnapshotManager};

/// Separates the parts of a fuzz input (never in UTF-8 text, so never in JSON).
pub const SEPARATOR: u8 = 0xFF;

/// The content of every blob the catalog harness puts beside the records.
const BLOB: &[u8] = b"blob";

/// Splits `data` at the first [`SEPARATOR`]: the part before and, when there is one, after.
fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == SEPARATOR) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// A new, empty, private scratch path for one call (calls may run on several threads).
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    base.join(format!("snapshot-fuzz-{}-{n}-{name}", std::process::id()))
}

/// The catalog as a store holds it: `data` is the index (`snapshot_metadata.json`) and one
/// sidecar, or, split at [`SEPARATOR`], the index before it and the sidecar after it. Each is
/// read with the index present and with the index lost (the records then come from the
/// sidecar), through the manager's listing, lookup, status, retention plan, verification, a
/// pin (which writes the index back), doctor (repairing) and a prune.
///
/// # Panics
/// When the catalog panics, or answers a damaged index with another error than
/// [`Error::CatalogCorrupt`], or cannot read back an index it wrote.
pub fn catalog(data: &[u8]) {
    let (index, sidecar) = split(data);
    let sidecar = sidecar.unwrap_or(index);
    catalog_store(Some(index), sidecar);
    catalog_store(None, sidecar);
}

/// One round of [`catalog`] on a store holding `index` (when given) and `sidecar`.
fn catalog_store(index: Option<&[u8]>, sidecar: &[u8]) {
    let store = MemoryStore::new();
    let mut blob_keys: Vec<String> = Vec::new();
    if let Some(index) = index {
        put(&store, INDEX_KEY, index);
        if let Ok(records) = crate::catalog::parse_index(index, INDEX_KEY) {
            blob_keys.extend(records.into_iter().take(8).map(|r| r.blob_key));
        }
    }
    put(&store, "sidecar.json", sidecar);
    if let Ok(r) = serde_json::from_slice::<SnapshotRecord>(sidecar) {
        blob_keys.push(r.blob_key);
    }
    for key in &blob_keys {
        if !key.is_empty() && key != INDEX_KEY && key != "sidecar.json" {
            put(&store, key, BLOB);
        }
    }
    let dir = scratch("catalog");
    let built = SnapshotManager::builder()
        .source(FileSource::new(dir.join("live.bin")))
        .store(store)
        .environment(Environment::persistent())
        .build();
    let manager = match built {
        Ok(m) => m,
        Err(e) => panic!("a manager on a memory store: {e}"),
    };
    read_catalog(&manager, index.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stores `bytes` under `key` (a memory store takes any key).
fn put(store: &MemoryStore, key: &str, bytes: &[u8]) {
    if let Err(e) = store.put(key, Payload::Bytes(bytes), PutMode::Overwrite) {
        panic!("a memory store refused {key:?}: {e}");
    }
}

/// Everything that reads the catalog of `manager`, and what must hold of its answers.
fn read_catalog(manager: &SnapshotManager, index_present: bool) {
    let (listed, readable) = match manager.list(&ListFilter::new()) {
        Ok(listed) => (listed, true),
        Err(Error::CatalogCorrupt { .. }) if index_present => (Vec::new(), false),
        Err(e) => panic!("listing answered a damaged catalog with {e:?}"),
    };
    match manager.status() {
        Ok(status) => assert!(readable && status.count == listed.len(), "{status:?}"),
        Err(e) => assert!(!readable, "the status of a catalog that lists: {e:?}"),
    }
    let _ = manager.prune_plan();
    let _ = manager.verify_all();
    for r in listed.iter().take(4) {
        if let Err(e) = manager.get(&r.snapshot_id)
            && id::is_valid(&r.snapshot_id)
        {
            panic!("{:?} is listed but not found: {e:?}", r.snapshot_id);
        }
        let _ = manager.verify(&r.snapshot_id);
    }
    if let Some(first) = listed.first() {
        // A pin writes the index back: it must read again, holding the same snapshots.
        if manager.pin(&first.snapshot_id, !first.pinned).is_ok() {
            match manager.list(&ListFilter::new()) {
                Ok(again) => assert_eq!(again.len(), listed.len(), "records lost by a pin"),
                Err(e) => panic!("the index written by a pin does not read back: {e:?}"),
            }
        }
    }
    let repair = DoctorOptions {
        repair: true,
        min_age: std::time::Duration::ZERO,
    };
    if manager.doctor(&repair).is_ok()
        && let Err(e) = manager.list(&ListFilter::new())
    {
        panic!("the catalog does not read after a repair: {e:?}");
    }
    if manager
        .prune_with(&RetentionPolicy::new().keep_last(1))
        .is_ok()
        && let Err(e) = manager.list(&ListFilter::new())
    {
        panic!("the catalog does not read after a prune: {e:?}");
    }
}

/// Snapshot ids from arbitrary parts: the first 8 bytes of `data` are the time (milliseconds
/// since the epoch, little-endian), the next 4 the attempt, the rest (as lossy UTF-8) the
/// operation, entity type and entity id, split at [`SEPARATOR`]s. Checks that every part
/// sanitises to a bounded, file-name-safe token (unchanged when it was one already) and that
/// every id is valid, bounded and starts with its time.
///
/// # Panics
/// When one of those fails.
pub fn snapshot_id(data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(12));
    let mut millis = [0u8; 8];
    let mut attempt = [0u8; 4];
    for (i, b) in head.iter().enumerate() {
        match i {
            0..8 => millis[i] = *b,
            _ => attempt[i - 8] = *b,
        }
    }
    let parts: Vec<String> = rest
        .split(|&b| b == SEPARATOR)
        .take(3)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    for p in &parts {
        check_sanitized(p, &id::sanitize(p));
    }
    let at = DateTime::<Utc>::from_timestamp_millis(i64::from_le_bytes(millis))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let attempt = u32::from_le_bytes(attempt) % 10_000;
    let part = |i: usize| parts.get(i).map(String::as_str);
    let made = id::snapshot_id(at, part(0).unwrap_or(""), part(1), part(2), attempt);
    assert!(id::is_valid(&made), "invalid id {made:?} (at {at})");
    assert!(made.len() <= 22 + 3 * 50 + 6, "id too long: {made:?}");
    let stamp = id::timestamp(at);
    assert!(
        made.starts_with(&stamp),
        "{made:?} does not start with {stamp:?}"
    );
    if (0..=9999).contains(&at.year()) {
        assert_eq!(stamp.len(), 15, "{stamp:?}");
    }
}

/// What must hold of `clean`, the sanitised `part`.
fn check_sanitized(part: &str, clean: &str) {
    assert!(clean.len() <= 40 + 9, "{clean:?} is too long");
    assert!(
        clean
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "{clean:?} is not file-name-safe"
    );
    assert!(
        !clean.starts_with('-') && !clean.ends_with('-') && !clean.contains("--"),
        "{clean:?} has a stray dash"
    );
    assert_eq!(clean.is_empty(), part.is_empty(), "{part:?} → {clean:?}");
    let already = part.len() <= 40
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-')
        && !part.contains("--");
    assert_eq!(
        clean == part,
        already,
        "{part:?} → {clean:?}: a clean part is kept, any other altered"
    );
}

/// A PostgreSQL snapshot bundle: `data` is the bundle file; or, split at [`SEPARATOR`], the
/// rows section before it and the manifest after it, put together with the magic line and a
/// trailer that points at the manifest (so that mutations reach past the trailer check). The
/// file is checked at every level, previewed (every table paged through), and opened for a
/// restore (which reads the bundle, orders its tables and then fails to reach the server).
///
/// # Panics
/// When the reader panics, answers a damaged bundle with another error than
/// [`Error::NotADatabase`], or accepts at one level what it refuses at a lower one.
#[cfg(feature = "postgres")]
pub fn postgres_bundle(data: &[u8]) {
    let file = scratch("bundle.pgbundle");
    let (rows, manifest) = split(data);
    let bytes = match manifest {
        None => data.to_vec(),
        Some(manifest) => bundle_of(rows, manifest),
    };
    if let Err(e) = std::fs::write(&file, &bytes) {
        panic!("cannot write {}: {e}", file.display());
    }
    read_bundle(&file);
    let _ = std::fs::remove_file(&file);
}

/// A bundle file of `rows` and `manifest`, framed as the writer frames them.
#[cfg(feature = "postgres")]
fn bundle_of(rows: &[u8], manifest: &[u8]) -> Vec<u8> {
    let mut out = b"SNAPSHOT-POSTGRES-BUNDLE 1\n".to_vec();
    out.extend_from_slice(rows);
    let at = out.len();
    out.extend_from_slice(manifest);
    out.push(b'\n');
    let len = out.len() - at;
    out.extend_from_slice(format!("SNAPSHOT-POSTGRES-MANIFEST {at:020} {len:020}\n").as_bytes());
    out
}

/// Every reader of the bundle at `file`, and what must hold of their answers.
#[cfg(feature = "postgres")]
fn read_bundle(file: &Path) {
    use crate::source::CheckLevel;
    use crate::table::session::Side;

    let engine = match crate::engine::require("postgres", "fuzz") {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    // No server: a socket in a directory that does not exist fails at once.
    let source = match engine.source(Path::new(
        "host=/nonexistent/snapshot-fuzz user=fuzz dbname=fuzz",
    )) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let mut passed = Vec::new();
    for level in [CheckLevel::Header, CheckLevel::Quick, CheckLevel::Full] {
        match source.check_image(file, level) {
            Ok(()) => passed.push(level),
            Err(Error::NotADatabase { .. }) => {}
            Err(e) => panic!("check {level:?}: {e:?}"),
        }
    }
    let full = passed.contains(&CheckLevel::Full);
    assert!(!full || passed.contains(&CheckLevel::Quick), "{passed:?}");
    let quick = passed.contains(&CheckLevel::Quick);
    assert!(!quick || passed.contains(&CheckLevel::Header), "{passed:?}");
    match source.begin_restore(file, "fuzz") {
        Ok(_) => panic!("a restore without a server began"),
        Err(Error::NotADatabase { .. }) if !quick => {}
        Err(Error::NotADatabase { .. }) => panic!("a restore refused a bundle that checks"),
        Err(_) => {}
    }
    let mut session = match engine.preview(file) {
        Ok(s) => s,
        Err(Error::NotADatabase { .. }) if !quick => return,
        Err(e) => panic!("the preview of a bundle that checks: {e:?}"),
    };
    let tables = match session.tables(Side::Snapshot) {
        Ok(t) => t,
        Err(e) => panic!("the tables of a bundle: {e:?}"),
    };
    for name in tables.iter().take(16) {
        let shape = match session.shape(Side::Snapshot, name) {
            Ok(Some(shape)) => shape,
            other => panic!("table {name:?} is listed but has no shape: {other:?}"),
        };
        for (offset, limit) in [(0, 100), (1, 2)] {
            match session.page(&shape, offset, limit) {
                Ok((total, rows)) => {
                    assert!(rows.len() as u64 <= limit, "{} rows", rows.len());
                    if full {
                        assert!(rows.len() as u64 <= total.saturating_sub(offset));
                    }
                }
                // A damaged zstd frame met while paging surfaces as an I/O error.
                Err(Error::NotADatabase { .. } | Error::Io { .. }) if !full => {}
                Err(e) => panic!("a page of {name:?}: {e:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// The seed corpus of a fuzz target and the inputs that once made it fail
    /// (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`).
    fn inputs(target: &str) -> Vec<Vec<u8>> {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut files: Vec<PathBuf> = ["seeds", "regressions"]
            .iter()
            .filter_map(|d| std::fs::read_dir(fuzz.join(d).join(target)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
            .collect()
    }

    /// `seed` with a few bytes overwritten, inserted or removed, and maybe cut short.
    fn mutated(seed: &[u8], edits: &[(u16, u8, u8)], cut: Option<u16>) -> Vec<u8> {
        let mut out = seed.to_vec();
        for &(at, byte, how) in edits {
            let i = usize::from(at) % (out.len() + 1);
            match how % 3 {
                0 if i < out.len() => out[i] = byte,
                1 => out.insert(i, byte),
                _ if i < out.len() => {
                    out.remove(i);
                }
                _ => out.push(byte),
            }
        }
        if let Some(n) = cut {
            out.truncate(usize::from(n) % (out.len() + 1));
        }
        out
    }

    /// Edits for [`mutated`].
    fn edits() -> impl Strategy<Value = (Vec<(u16, u8, u8)>, Option<u16>)> {
        (
            vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..6),
            proptest::option::weighted(0.2, any::<u16>()),
        )
    }

    #[test]
    fn the_seeds_and_past_failures_pass() {
        assert!(!inputs("catalog").is_empty(), "no seeds found");
        for input in inputs("catalog") {
            catalog(&input);
        }
        for input in inputs("snapshot_id") {
            snapshot_id(&input);
        }
        #[cfg(feature = "postgres")]
        for input in inputs("postgres_bundle") {
            postgres_bundle(&input);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn catalog_of_any_bytes(data in vec(any::<u8>(), 0..512)) {
            catalog(&data);
        }

        #[test]
        fn catalog_of_damaged_seeds(pick in any::<usize>(), (e, cut) in edits()) {
            let seeds = inputs("catalog");
            catalog(&mutated(&seeds[pick % seeds.len()], &e, cut));
        }

        #[test]
        fn snapshot_ids_of_any_parts(data in vec(any::<u8>(), 0..256)) {
            snapshot_id(&data);
        }

        #[test]
        fn snapshot_ids_of_any_text(
            millis in any::<i64>(),
            attempt in any::<u32>(),
            parts in vec(".{0,60}", 0..4),
        ) {
            let mut data = millis.to_le_bytes().to_vec();
            data.extend_from_slice(&attempt.to_le_bytes());
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    data.push(SEPARATOR);
                }
                data.extend_from_slice(p.as_bytes());
            }
            snapshot_id(&data);
        }
    }

    #[cfg(feature = "postgres")]
    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn postgres_bundle_of_any_bytes(data in vec(any::<u8>(), 0..512)) {
            postgres_bundle(&data);
        }

        #[test]
        fn postgres_bundle_of_damaged_seeds(pick in any::<usize>(), (e, cut) in edits()) {
            let seeds = inputs("postgres_bundle");
            postgres_bundle(&mutated(&seeds[pick % seeds.len()], &e, cut));
        }
    }
}
