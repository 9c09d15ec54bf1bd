//! Verification and repair: [`verify`](crate::SnapshotManager::verify) checks one snapshot
//! (checksum, then the engine), [`doctor`](crate::SnapshotManager::doctor) checks the store as a
//! whole — staging leftovers of crashed writers, objects no record points to, records whose blob
//! is gone — and, when asked, repairs it, rebuilding a lost or corrupt index from the sidecars.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;

use crate::catalog::INDEX_KEY;
use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::manager::SnapshotManager;
use crate::record::SnapshotRecord;
use crate::source::CheckLevel;
use crate::store::StoreExt;

/// What [`SnapshotManager::verify`] found for one snapshot that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The snapshot.
    pub snapshot_id: String,
    /// Bytes read.
    pub bytes: u64,
    /// The checksum that matched.
    pub checksum: String,
    /// Whether the engine check ran (it does when the snapshot's kind is the manager's source kind).
    pub engine_checked: bool,
    /// Whether the verification was recorded in the catalog (`verified_at`). A store that
    /// cannot be written (read-only, immutable, another user's) still verifies: the data is
    /// sound, only the record of it could not be kept (a warning is logged).
    pub recorded: bool,
}

/// What [`SnapshotManager::verify_all`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct VerifyAllReport {
    /// Snapshots that passed.
    pub passed: Vec<VerifyReport>,
    /// Snapshots that failed, with why.
    pub failed: Vec<(String, Error)>,
}

impl VerifyAllReport {
    /// True when every snapshot passed.
    pub fn all_passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Options of [`SnapshotManager::doctor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// Repair what is found (delete leftovers and orphans, drop records without a blob, rebuild
    /// a lost or corrupt index); otherwise only report.
    pub repair: bool,
    /// Leftovers younger than this are spared: they may belong to a snapshot in progress.
    pub min_age: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            repair: false,
            min_age: Duration::from_secs(15 * 60),
        }
    }
}

/// What [`SnapshotManager::doctor`] found (and repaired, when asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoctorReport {
    /// Staging files of crashed writers (in the store and beside the live data), and deleted
    /// objects whose space a process that exited did not get to free.
    pub staging_leftovers: Vec<PathBuf>,
    /// Store objects no record points to.
    pub orphan_objects: Vec<String>,
    /// Records whose blob is missing.
    pub records_without_blob: Vec<String>,
    /// Records whose blob is the live database file itself under a second name: the safety
    /// snapshot of a restore that was interrupted before its swap (the live data is that state,
    /// so repair drops the record and unlinks only the store's name).
    pub blobs_shared_with_live: Vec<String>,
    /// Why the index could not be read, when it could not.
    pub index_problem: Option<String>,
    /// Snapshots a sidecar describes (their blob present) that the index does not list; a
    /// repair lists them again. Never deleted as orphans.
    pub unlisted_records: Vec<String>,
    /// Listed snapshots whose sidecar is missing; a repair writes it again.
    pub records_without_sidecar: Vec<String>,
    /// Records recovered from sidecars when the index was rebuilt.
    pub rebuilt_records: Option<usize>,
    /// What the store layer found in its own objects ([`Store::check_layer`](crate::Store::check_layer):
    /// a dedup store's leftovers, unreferenced or missing packs).
    pub store_findings: Vec<String>,
    /// Whether repairs were made.
    pub repaired: bool,
}

impl DoctorReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.staging_leftovers.is_empty()
            && self.orphan_objects.is_empty()
            && self.records_without_blob.is_empty()
            && self.blobs_shared_with_live.is_empty()
            && self.index_problem.is_none()
            && self.unlisted_records.is_empty()
            && self.records_without_sidecar.is_empty()
            && self.store_findings.is_empty()
    }
}

impl SnapshotManager {
    /// Verifies one snapshot: the blob's size and checksum, then a quick engine check, and
    /// records the time it passed.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::BlobMissing`], [`Error::ChecksumMismatch`],
    /// [`Error::NotADatabase`].
    pub fn verify(&self, id: &str) -> Result<VerifyReport> {
        self.verify_with(id, CheckLevel::Quick)
    }

    /// Verifies one snapshot with the given engine check level.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    pub fn verify_with(&self, id: &str, level: CheckLevel) -> Result<VerifyReport> {
        let record = self.get(id)?;
        let mut report = self.verify_record(&record, level)?;
        if let Err(e) = self.modify(id, |r| r.verified_at = Some(Utc::now())) {
            tracing::warn!(id, error = %e, "verified, but the verification could not be recorded");
            report.recorded = false;
        }
        Ok(report)
    }

    /// Verifies every snapshot, reporting each failure without stopping.
    ///
    /// # Errors
    /// Catalog errors only (per-snapshot failures are in the report).
    pub fn verify_all(&self) -> Result<VerifyAllReport> {
        let mut report = VerifyAllReport::default();
        for record in self.inner.catalog.load()? {
            match self.verify_record(&record, CheckLevel::Quick) {
                Ok(r) => report.passed.push(r),
                Err(e) => report.failed.push((record.snapshot_id.clone(), e)),
            }
        }
        let passed: HashSet<&str> = report
            .passed
            .iter()
            .map(|r| r.snapshot_id.as_str())
            .collect();
        if !passed.is_empty() {
            let now = Utc::now();
            let recorded = self.inner.catalog.update(|records| {
                for r in records
                    .iter_mut()
                    .filter(|r| passed.contains(r.snapshot_id.as_str()))
                {
                    r.verified_at = Some(now);
                }
                Ok(())
            });
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "verified, but the verifications could not be recorded");
                for r in &mut report.passed {
                    r.recorded = false;
                }
            }
        }
        Ok(report)
    }

    fn verify_record(&self, record: &SnapshotRecord, level: CheckLevel) -> Result<VerifyReport> {
        let store = &self.inner.store;
        let fetched;
        let path = match self.local_object(&record.blob_key)? {
            Some(p) => {
                if !p.exists() {
                    return Err(Error::BlobMissing {
                        key: record.blob_key.clone(),
                    });
                }
                p
            }
            None => {
                let dir = self.staging_dir()?;
                fetched = StagingGuard::new(fs_util::staging_path(&dir, &record.blob_key));
                store.get_to_file(&record.blob_key, fetched.path())?;
                fetched.path().to_path_buf()
            }
        };
        let engine_checked = record.source_kind == self.inner.source.kind();
        let sealed = self.check_copy(record, &path, level, engine_checked, false)?;
        Ok(VerifyReport {
            snapshot_id: record.snapshot_id.clone(),
            bytes: sealed.size,
            checksum: sealed.checksum,
            engine_checked,
            recorded: true,
        })
    }

    /// Checks the store as a whole and repairs it when `options.repair` is set. A lost or
    /// corrupt index is rebuilt from the sidecars whose blob still matches its checksum.
    ///
    /// # Errors
    /// Store errors; [`Error::StoreLocked`].
    pub fn doctor(&self, options: &DoctorOptions) -> Result<DoctorReport> {
        let inner = &self.inner;
        let store = &inner.store;
        // This process's own background frees finish first: what is left after that is trash
        // of processes that exited before freeing it, a leftover.
        store.settle()?;
        let mut report = DoctorReport::default();

        let objects = store.list()?;
        let sidecars: Vec<&str> = objects
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| crate::catalog::is_sidecar(k))
            .collect();
        let index_present = objects.iter().any(|o| o.key == INDEX_KEY);
        let mut records = match inner.catalog.load() {
            Ok(r) if index_present || sidecars.is_empty() => Some(r),
            Ok(_) => {
                report.index_problem = Some(format!("{INDEX_KEY} is missing but sidecars exist"));
                None
            }
            Err(e) => {
                report.index_problem = Some(e.to_string());
                None
            }
        };
        if records.is_none() && options.repair {
            let mut rebuilt = Vec::new();
            for key in &sidecars {
                let Ok(r) = inner.catalog.read_sidecar(key) else {
                    continue;
                };
                if self.verify_record(&r, CheckLevel::Header).is_ok() {
                    rebuilt.push(r);
                }
            }
            rebuilt.sort_by(|a, b| {
                a.datetime
                    .cmp(&b.datetime)
                    .then_with(|| a.snapshot_id.cmp(&b.snapshot_id))
            });
            inner.catalog.replace(&rebuilt)?;
            report.rebuilt_records = Some(rebuilt.len());
            records = Some(rebuilt);
        }

        let young = |o: &crate::store::ObjectMeta| {
            o.modified
                .and_then(|t| (Utc::now() - t).to_std().ok())
                .is_some_and(|age| age < options.min_age)
        };
        // What the sidecars describe: never an orphan, and compared with the index both ways —
        // except a blob that is the live file (a restore killed before its swap): that record
        // was never to be kept.
        let mut described = inner.catalog.described_by_sidecars()?;
        let live: HashSet<String> = self.shared_with_live(&described).into_iter().collect();
        let listed_ids: HashSet<&str> = records
            .iter()
            .flatten()
            .map(|r| r.snapshot_id.as_str())
            .collect();
        described.retain(|r| {
            listed_ids.contains(r.snapshot_id.as_str()) || !live.contains(&r.snapshot_id)
        });
        if let Some(records) = &records {
            let listed: HashSet<&str> = records.iter().map(|r| r.snapshot_id.as_str()).collect();
            report.unlisted_records = described
                .iter()
                .filter(|r| !listed.contains(r.snapshot_id.as_str()))
                .map(|r| r.snapshot_id.clone())
                .collect();
            let keys: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
            report.records_without_sidecar = records
                .iter()
                .filter(|r| !keys.contains(r.sidecar_key().as_str()))
                .map(|r| r.snapshot_id.clone())
                .collect();
            let referenced: HashSet<String> = records
                .iter()
                .chain(&described)
                .flat_map(|r| [r.blob_key.clone(), r.sidecar_key()])
                .collect();
            for o in &objects {
                if o.key != INDEX_KEY && !referenced.contains(&o.key) && !young(o) {
                    report.orphan_objects.push(o.key.clone());
                }
            }
            let present: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
            report.records_without_blob = records
                .iter()
                .filter(|r| !present.contains(r.blob_key.as_str()))
                .map(|r| r.snapshot_id.clone())
                .collect();
            report.blobs_shared_with_live = self.shared_with_live(records);
        }

        report.staging_leftovers = match store.local() {
            Some(local) => local.leftovers(options.min_age)?,
            None => Vec::new(),
        };
        report
            .staging_leftovers
            .extend(self.leftovers_beside_source(options.min_age));
        report.store_findings = store.check_layer(options.repair, options.min_age)?;

        if options.repair {
            for key in &report.orphan_objects {
                store.delete(key)?;
            }
            for p in &report.staging_leftovers {
                fs_util::remove_if_exists(p)?;
            }
            self.relist(&report, &described, records.as_deref().unwrap_or(&[]))?;
            if let Some(mut records) = records.filter(|_| {
                !report.records_without_blob.is_empty() || !report.blobs_shared_with_live.is_empty()
            }) {
                let gone: HashSet<&String> = report
                    .records_without_blob
                    .iter()
                    .chain(&report.blobs_shared_with_live)
                    .collect();
                let dropped: Vec<SnapshotRecord> = records
                    .drain(..)
                    .filter(|r| gone.contains(&r.snapshot_id))
                    .collect();
                // Against the index as it is now: records added meanwhile stay.
                self.unlisting(&dropped);
                inner.catalog.update(|now| {
                    now.retain(|r| !gone.contains(&r.snapshot_id));
                    Ok(())
                })?;
                for r in dropped
                    .iter()
                    .filter(|r| report.blobs_shared_with_live.contains(&r.snapshot_id))
                {
                    store.delete_many(&[r.blob_key.clone(), r.sidecar_key()])?;
                }
            }
            report.repaired = true;
        }
        Ok(report)
    }

    /// Doctor's repair of index and sidecars: the unlisted snapshots whose blob passes its
    /// checksum are listed again, missing sidecars written again.
    fn relist(
        &self,
        report: &DoctorReport,
        described: &[SnapshotRecord],
        records: &[SnapshotRecord],
    ) -> Result<()> {
        let back: Vec<SnapshotRecord> = described
            .iter()
            .filter(|r| report.unlisted_records.contains(&r.snapshot_id))
            .filter(|r| self.verify_record(r, CheckLevel::Header).is_ok())
            .cloned()
            .collect();
        if !back.is_empty() {
            self.inner.catalog.update(|now| {
                for r in &back {
                    if !now.iter().any(|n| n.snapshot_id == r.snapshot_id) {
                        now.push(r.clone());
                    }
                }
                now.sort_by(|a, b| {
                    a.datetime
                        .cmp(&b.datetime)
                        .then_with(|| a.snapshot_id.cmp(&b.snapshot_id))
                });
                Ok(())
            })?;
        }
        for r in records
            .iter()
            .filter(|r| report.records_without_sidecar.contains(&r.snapshot_id))
        {
            let json = serde_json::to_vec_pretty(r)
                .map_err(|e| Error::invalid("record", format!("cannot serialise: {e}")))?;
            self.inner.store.put(
                &r.sidecar_key(),
                crate::store::Payload::Bytes(&json),
                crate::store::PutMode::Overwrite,
            )?;
        }
        Ok(())
    }

    /// Ids of records whose blob is the live file (same device and inode).
    fn shared_with_live(&self, records: &[SnapshotRecord]) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        // A source that is not a file (a server) has no file to share.
        let Ok(live) = std::fs::metadata(self.inner.source.path()) else {
            return Vec::new();
        };
        records
            .iter()
            .filter(|r| {
                self.local_object(&r.blob_key)
                    .ok()
                    .flatten()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .is_some_and(|m| m.dev() == live.dev() && m.ino() == live.ino())
            })
            .map(|r| r.snapshot_id.clone())
            .collect()
    }

    /// Checks a local copy of a record's blob: size and checksum, and the engine check when
    /// `engine_check`, side by side on two threads (hashing and checking are both CPU work on a
    /// file the copy just left in the page cache). With `durable` the file is also fsynced.
    pub(crate) fn check_copy(
        &self,
        record: &SnapshotRecord,
        path: &std::path::Path,
        level: CheckLevel,
        engine_check: bool,
        durable: bool,
    ) -> Result<fs_util::Sealed> {
        let (sealed, checked) = std::thread::scope(|scope| {
            let checked = scope.spawn(|| {
                if engine_check {
                    self.inner.source.check_image(path, level)
                } else {
                    Ok(())
                }
            });
            let sealed = if durable {
                fs_util::seal(path)
            } else {
                fs_util::hash_file(path)
            };
            (sealed, checked.join())
        });
        let sealed = sealed?;
        if sealed.checksum != record.checksum || sealed.size != record.size_bytes {
            return Err(Error::ChecksumMismatch {
                key: record.blob_key.clone(),
                expected: record.checksum.clone(),
                actual: format!("{} ({} bytes)", sealed.checksum, sealed.size),
            });
        }
        checked.map_err(|_| Error::invalid("check", "the engine check panicked"))??;
        Ok(sealed)
    }

    fn leftovers_beside_source(&self, min_age: Duration) -> Vec<PathBuf> {
        let live = self.inner.source.path();
        let Some(dir) = live.parent().map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        }) else {
            return Vec::new();
        };
        if self.inner.store.local().map(|l| l.dir()) == Some(dir) {
            return Vec::new(); // already covered by the store's own scan
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(fs_util::STAGING_PREFIX)
            })
            .filter(|e| {
                e.metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age >= min_age)
            })
            .map(|e| e.path())
            .collect()
    }
}
