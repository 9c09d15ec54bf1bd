//! Collecting chunks no snapshot needs, in two phases, safe against a kill at any point and
//! against snapshots written at the same time by other processes.
//!
//! A collection reads every manifest and finds the packs none of them references. Such a pack
//! is first *condemned*: recorded with the time in `chunks-gc.json` (a compare-and-swap put, so
//! two collections never lose each other's work). A later collection deletes it — its index
//! first, so that no new snapshot can find its chunks, then the pack — once it has stayed
//! unreferenced for the store's grace period. Snapshots never reuse the chunks of a condemned
//! pack (they store them again), and a snapshot must finish within the grace period (checked
//! when it publishes), so a pack a snapshot came to depend on is referenced by its manifest
//! before any collection may delete it. A pack that is referenced again is pardoned.
//!
//! Whatever a kill interrupts: a pack condemned but not deleted is deleted by a later run; an
//! index deleted without its pack leaves a pack that no snapshot can find and nobody
//! references, condemned again; a deletion done but not recorded is dropped from the list by
//! the next run. No step removes anything a listed manifest references.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::dedup::index::IdxCache;
use crate::store::dedup::manifest::{Manifest, is_manifest};
use crate::store::dedup::pack;
use crate::store::{Payload, PutMode, Store};

/// The condemned packs.
pub(crate) const GC_KEY: &str = "chunks-gc.json";

/// Packs condemned by a collection, with the time.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Condemned {
    pub condemned: BTreeMap<String, DateTime<Utc>>,
}

/// Reads the condemned packs and the version of the list (`None`: no list yet).
///
/// # Errors
/// The store's errors; [`Error::CatalogCorrupt`] for a list that is not JSON.
pub(crate) fn read_condemned(store: &dyn Store) -> Result<(Condemned, Option<String>)> {
    match store.get(GC_KEY) {
        Ok(o) => {
            let c = serde_json::from_slice(&o.bytes).map_err(|e| Error::CatalogCorrupt {
                path: store.object_location(GC_KEY).into(),
                line: e.line(),
                column: e.column(),
                detail: format!("the list of condemned packs is not readable: {e}"),
            })?;
            Ok((c, o.meta.version))
        }
        Err(Error::BlobMissing { .. }) => Ok((Condemned::default(), None)),
        Err(e) => Err(e),
    }
}

/// What a collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Manifests read.
    pub manifests: usize,
    /// Packs still referenced.
    pub live_packs: usize,
    /// Packs condemned by this run (deleted by a run after the grace period).
    pub condemned: Vec<String>,
    /// Packs deleted by this run.
    pub deleted: Vec<String>,
    /// Bytes freed by this run (packs and their indexes).
    pub freed_bytes: u64,
    /// Packs waiting for their grace period to end.
    pub waiting: usize,
}

/// The packs every manifest of `store` references, and how many manifests there are.
///
/// # Errors
/// The store's errors; a damaged manifest stops the collection (what it references is
/// unknown, so nothing may be deleted).
pub(crate) fn referenced(store: &dyn Store, keys: &[String]) -> Result<(HashSet<String>, usize)> {
    let mut packs = HashSet::new();
    let mut manifests = 0;
    for key in keys {
        let bytes = match store.get(key) {
            Ok(o) => o.bytes,
            Err(Error::BlobMissing { .. }) => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        if !is_manifest(&bytes) {
            continue;
        }
        manifests += 1;
        packs.extend(Manifest::decode(key, &bytes)?.header.packs);
    }
    Ok((packs, manifests))
}

/// Objects that may be manifests: everything but the layer's own objects and JSON documents.
pub(crate) fn manifest_candidates(keys: impl Iterator<Item = String>) -> Vec<String> {
    keys.filter(|k| !k.starts_with(pack::PREFIX) && !k.ends_with(".json"))
        .collect()
}

/// One collection (see the module docs).
///
/// # Errors
/// The store's errors; [`Error::Precondition`] when another collection updated the list at the
/// same time (nothing was lost; run again).
pub(crate) fn collect(
    store: &dyn Store,
    cache: &IdxCache,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<GcReport> {
    let (old, version) = read_condemned(store)?;
    let objects = store.list()?;
    let sizes: HashMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let candidates = manifest_candidates(objects.iter().map(|o| o.key.clone()));
    let (live, manifests) = referenced(store, &candidates)?;
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut report = GcReport {
        manifests,
        ..GcReport::default()
    };
    let mut next = Condemned::default();
    for o in objects.iter().filter(|o| pack::is_pack(&o.key)) {
        if live.contains(&o.key) {
            report.live_packs += 1;
            continue;
        }
        match old.condemned.get(&o.key) {
            Some(since) if now.signed_duration_since(*since) >= grace => {
                let idx = pack::idx_key(&o.key);
                store.delete(&idx)?;
                cache.forget(&idx);
                store.delete(&o.key)?;
                report.freed_bytes += o.size + sizes.get(idx.as_str()).copied().unwrap_or(0);
                report.deleted.push(o.key.clone());
            }
            Some(since) => {
                next.condemned.insert(o.key.clone(), *since);
                report.waiting += 1;
            }
            // No grace: a store only one process writes at a time frees at once.
            None if grace.is_zero() => {
                let idx = pack::idx_key(&o.key);
                store.delete(&idx)?;
                cache.forget(&idx);
                store.delete(&o.key)?;
                report.freed_bytes += o.size + sizes.get(idx.as_str()).copied().unwrap_or(0);
                report.deleted.push(o.key.clone());
            }
            None => {
                next.condemned.insert(o.key.clone(), now);
                report.condemned.push(o.key.clone());
                report.waiting += 1;
            }
        }
    }
    // An index whose pack is gone (a collection killed between the two deletions cannot leave
    // one, but a store edited by hand can): nothing can use it.
    for o in objects.iter().filter(|o| pack::is_idx(&o.key)) {
        if !sizes.contains_key(pack::pack_of_idx(&o.key).as_str()) {
            store.delete(&o.key)?;
            cache.forget(&o.key);
            report.freed_bytes += o.size;
        }
    }
    if version.is_some() || !next.condemned.is_empty() {
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::invalid("condemned packs", e.to_string()))?;
        let mode = version.map_or(PutMode::Create, PutMode::Update);
        store.put(GC_KEY, Payload::Bytes(&bytes), mode)?;
    }
    Ok(report)
}
