//! Collecting chunks no snapshot needs, in two phases, safe against a kill at any point and
//! against snapshots written at the same time by other processes.
//!
//! A collection reads every manifest and finds the packs none of them references. Such a pack
//! is first *condemned*: recorded in `chunks-gc.json` with the time of that write (a
//! compare-and-swap put, so two collections never lose each other's work). A later collection
//! deletes it — its index first, so that no new snapshot can find its chunks, then the pack —
//! once it has stayed unreferenced for the grace period (the longest any process using the
//! store asked for, recorded in the same file). Snapshots never reuse the chunks of a condemned
//! pack (they store them again, in packs of fresh names), and a snapshot's manifest must be
//! published within the grace period from when it read the list (checked after the put; a late
//! one is withdrawn), so a pack a snapshot came to depend on is referenced by its manifest
//! before any collection may delete it: a collection that deletes lists the manifests after the
//! grace period has run out. A pack that is referenced again is pardoned. Wall clocks of the
//! hosts sharing a store are assumed to agree to well within the grace period.
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
use crate::store::dedup::pack;
use crate::store::{ObjectMeta, Payload, PutMode, Store};

/// The condemned packs.
pub(crate) const GC_KEY: &str = "chunks-gc.json";

/// Packs condemned by a collection, with the time, and the longest grace period any process
/// using the store asked for (every collection and snapshot honours the longest).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Condemned {
    pub condemned: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    pub grace_secs: u64,
}

impl Condemned {
    /// The grace period in force: the longer of `own` and the recorded one.
    pub(crate) fn grace(&self, own: Duration) -> Duration {
        own.max(Duration::from_secs(self.grace_secs))
    }
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

/// Whether the object `key` may be a manifest: anything but the layer's own objects and JSON
/// documents (the catalog, sidecars).
pub(crate) fn may_be_manifest(key: &str) -> bool {
    !key.starts_with(pack::PREFIX) && !key.ends_with(".json")
}

/// Given a store's listing, the packs its manifests reference and how many manifests there are.
pub(crate) type ReferencedFn<'a> = dyn Fn(&[ObjectMeta]) -> Result<(HashSet<String>, usize)> + 'a;

/// One collection (see the module docs). `referenced` gives the packs the manifests among the
/// listed objects reference, and how many manifests there are.
///
/// # Errors
/// The store's errors; [`Error::Precondition`] or [`Error::AlreadyExists`] when another
/// collection updated the list at the same time (nothing was lost; run again).
pub(crate) fn collect(
    store: &dyn Store,
    cache: &IdxCache,
    own_grace: Duration,
    referenced: &ReferencedFn<'_>,
) -> Result<GcReport> {
    let (old, version) = read_condemned(store)?;
    let grace_std = old.grace(own_grace);
    let grace = chrono::Duration::from_std(grace_std).unwrap_or(chrono::Duration::MAX);
    let objects = store.list()?;
    let now = Utc::now();
    let sizes: HashMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let (live, manifests) = referenced(&objects)?;
    let mut report = GcReport {
        manifests,
        ..GcReport::default()
    };
    let mut next = Condemned {
        grace_secs: grace_std.as_secs(),
        ..Condemned::default()
    };
    let mut fresh = Vec::new();
    let delete = |key: &str, size: u64, report: &mut GcReport| -> Result<()> {
        let idx = pack::idx_key(key);
        store.delete(&idx)?;
        cache.forget(&idx);
        store.delete(key)?;
        report.freed_bytes += size + sizes.get(idx.as_str()).copied().unwrap_or(0);
        report.deleted.push(key.to_string());
        Ok(())
    };
    for o in objects.iter().filter(|o| pack::is_pack(&o.key)) {
        if live.contains(&o.key) {
            report.live_packs += 1;
            continue;
        }
        match old.condemned.get(&o.key) {
            Some(since) if now.signed_duration_since(*since) >= grace => {
                delete(&o.key, o.size, &mut report)?;
            }
            Some(since) => {
                next.condemned.insert(o.key.clone(), *since);
                report.waiting += 1;
            }
            // No grace: a store one writer uses at a time frees at once.
            None if grace.is_zero() => delete(&o.key, o.size, &mut report)?,
            None => {
                fresh.push(o.key.clone());
                report.condemned.push(o.key.clone());
                report.waiting += 1;
            }
        }
    }
    // An index whose pack is gone (a store edited by hand; a collection deletes the index
    // first): nothing can use it. Spared while young — a listing can see a new index before
    // its pack — and checked once more.
    let settle = grace.max(chrono::Duration::minutes(1));
    for o in objects.iter().filter(|o| pack::is_idx(&o.key)) {
        let pack_key = pack::pack_of_idx(&o.key);
        let old_enough = o
            .modified
            .is_some_and(|t| now.signed_duration_since(t) >= settle);
        if !sizes.contains_key(pack_key.as_str()) && old_enough && store.head(&pack_key)?.is_none()
        {
            store.delete(&o.key)?;
            cache.forget(&o.key);
            report.freed_bytes += o.size;
        }
    }
    if version.is_some() || !next.condemned.is_empty() || !fresh.is_empty() {
        // Condemned as of the write: a snapshot that read the list before it sees the pack as
        // usable for a whole grace period from here.
        let stamp = Utc::now();
        for key in fresh {
            next.condemned.insert(key, stamp);
        }
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::invalid("condemned packs", e.to_string()))?;
        let mode = version.map_or(PutMode::Create, PutMode::Update);
        store.put(GC_KEY, Payload::Bytes(&bytes), mode)?;
    }
    Ok(report)
}
