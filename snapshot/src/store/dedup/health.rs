//! What a dedup store holds and what is wrong with it: the packs its manifests reference,
//! its usage (logical against stored bytes), and the doctor's findings.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::dedup::{DedupStore, gc, pack};
use crate::store::{ObjectMeta, StoreUsage};

/// The manifests among some objects: the packs they reference, how many there are, and the
/// ones that cannot be read (key and why).
pub(crate) struct Referenced {
    pub packs: HashSet<String>,
    pub manifests: usize,
    pub logical_bytes: u64,
    pub damaged: Vec<(String, Error)>,
}

impl DedupStore {
    /// The packs the manifests among `objects` reference.
    pub(crate) fn referenced(&self, objects: &[ObjectMeta]) -> Result<Referenced> {
        let mut r = Referenced {
            packs: HashSet::new(),
            manifests: 0,
            logical_bytes: 0,
            damaged: Vec::new(),
        };
        for o in objects.iter().filter(|o| gc::may_be_manifest(&o.key)) {
            match self.headers.header(&*self.inner, o) {
                Ok(Some(h)) => {
                    r.manifests += 1;
                    r.logical_bytes += h.size;
                    r.packs.extend(h.packs.iter().cloned());
                }
                Ok(None) => {}
                Err(e @ Error::ChecksumMismatch { .. }) => r.damaged.push((o.key.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        Ok(r)
    }

    /// Logical against stored bytes; damaged manifests are left out of the logical bytes.
    pub(crate) fn usage_now(&self) -> Result<StoreUsage> {
        let objects = self.inner.list()?;
        let r = self.referenced(&objects)?;
        let mut usage = StoreUsage {
            snapshots: r.manifests as u64,
            logical_bytes: r.logical_bytes,
            ..StoreUsage::default()
        };
        for o in &objects {
            usage.stored_bytes += o.size;
            usage.packs += u64::from(pack::is_pack(&o.key));
        }
        Ok(usage)
    }

    /// The doctor's findings (see [`Store::check_layer`](crate::Store::check_layer)).
    pub(crate) fn findings(&self, repair: bool, min_age: Duration) -> Result<Vec<String>> {
        let mut findings = Vec::new();
        if let Some(local) = self.inner.local() {
            for p in local.leftovers(min_age)? {
                findings.push(format!("staging leftover {}", p.display()));
                if repair {
                    fs_util::remove_if_exists(&p)?;
                }
            }
        }
        let objects = self.inner.list()?;
        let keys: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let r = self.referenced(&objects)?;
        for (key, e) in &r.damaged {
            findings.push(format!("snapshot {key}: {e}"));
        }
        for o in objects.iter().filter(|o| gc::may_be_manifest(&o.key)) {
            if let Ok(Some(h)) = self.headers.header(&*self.inner, o) {
                for p in h.packs.iter().filter(|p| !keys.contains(p.as_str())) {
                    findings.push(format!(
                        "snapshot {} needs pack {p}, which is missing",
                        o.key
                    ));
                }
            }
        }
        let young = |o: &ObjectMeta| {
            o.modified
                .and_then(|t| (Utc::now() - t).to_std().ok())
                .is_some_and(|age| age < min_age)
        };
        for o in objects
            .iter()
            .filter(|o| pack::is_pack(&o.key) && !young(o))
        {
            if !keys.contains(pack::idx_key(&o.key).as_str()) {
                findings.push(format!("pack {} has no index", o.key));
            }
        }
        for o in objects.iter().filter(|o| pack::is_idx(&o.key) && !young(o)) {
            if !keys.contains(pack::pack_of_idx(&o.key).as_str()) {
                findings.push(format!("index {} has no pack", o.key));
            }
        }
        if !r.damaged.is_empty() {
            // What a damaged manifest references is unknown: nothing may be collected.
            findings.push("no collection while a manifest is damaged".into());
            return Ok(findings);
        }
        // Packs no snapshot references and no collection has condemned yet (condemned ones
        // are on their way out: deleted once the grace period is over).
        let (condemned, _) = gc::read_condemned(&*self.inner)?;
        for o in objects.iter().filter(|o| {
            pack::is_pack(&o.key)
                && !r.packs.contains(&o.key)
                && !condemned.condemned.contains_key(&o.key)
                && !young(o)
        }) {
            findings.push(format!("pack {} is referenced by no snapshot", o.key));
        }
        if repair && !findings.is_empty() {
            self.collect_garbage()?;
        }
        Ok(findings)
    }
}
