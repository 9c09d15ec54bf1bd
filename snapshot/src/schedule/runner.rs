//! [`ManagerRunner`]: a [`JobRunner`] that snapshots through [`SnapshotManager`]s, and
//! [`SnapshotManager::prune_matching`], the per-job retention it applies.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::manager::{ListFilter, PruneReport, SnapshotManager, SnapshotOutcome, SnapshotRequest};
use crate::record::SnapshotRecord;
use crate::retention::RetentionPolicy;
use crate::schedule::{Job, JobRunner, SCHEDULED};

impl SnapshotManager {
    /// Applies `policy` to the snapshots `matches` selects only (the others are neither counted
    /// nor touched): a scheduled job's own retention. Like [`prune_with`](Self::prune_with), the
    /// newest selected snapshot, pinned ones and young safety snapshots are always kept.
    ///
    /// # Errors
    /// [`Error::RetentionKeepsNothing`](crate::Error::RetentionKeepsNothing); catalog and store
    /// errors.
    pub fn prune_matching(
        &self,
        policy: &RetentionPolicy,
        matches: &dyn Fn(&SnapshotRecord) -> bool,
    ) -> Result<PruneReport> {
        policy.validate()?;
        let now = Utc::now();
        let (plan, dropped) = self.inner.catalog.update(|records| {
            let selected: Vec<SnapshotRecord> =
                records.iter().filter(|r| matches(r)).cloned().collect();
            let plan = policy.apply(&selected, now)?;
            let drop: HashSet<&str> = plan.dropped().map(|d| d.snapshot_id.as_str()).collect();
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(records)
                .into_iter()
                .partition(|r| drop.contains(r.snapshot_id.as_str()));
            *records = kept;
            self.unlisting(&gone);
            Ok((plan, gone))
        })?;
        self.delete_objects(&dropped);
        Ok(PruneReport {
            plan,
            freed_bytes: crate::manager::total_size(&dropped),
            deleted: dropped.into_iter().map(|r| r.snapshot_id).collect(),
        })
    }
}

/// Runs jobs by taking one snapshot through a manager per run, recorded with operation
/// [`SCHEDULED`] and the job's name as entity type; a job can have its own retention, applied to
/// its own snapshots after each run.
///
/// ```no_run
/// # fn main() -> snapshot::Result<()> {
/// use std::sync::atomic::AtomicBool;
/// use snapshot::schedule::{Job, ManagerRunner, Schedule, Scheduler, SystemClock, TimeZone};
/// use snapshot::{LocalStore, RetentionPolicy, SnapshotManager};
///
/// let manager = SnapshotManager::builder()
///     .source(snapshot::engine::source("sqlite", "plant.db".as_ref())?)
///     .store(LocalStore::open("backups")?)
///     .build()?;
/// let mut runner = ManagerRunner::new(manager)
///     .job_retention("hourly", RetentionPolicy::new().keep_last(24));
/// let jobs = vec![Job::new("hourly", Schedule::parse("hourly")?)];
/// let mut scheduler = Scheduler::new(jobs, TimeZone::Local, chrono::Utc::now())?;
/// let stop = AtomicBool::new(false); // set it from a signal handler to stop
/// scheduler.serve(&SystemClock, &mut runner, &mut |e| println!("{e}"), &stop);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ManagerRunner {
    managers: Vec<SnapshotManager>,
    per_job: BTreeMap<String, Vec<SnapshotManager>>,
    retention: BTreeMap<String, RetentionPolicy>,
}

impl ManagerRunner {
    /// Every job snapshots through `manager`.
    pub fn new(manager: SnapshotManager) -> ManagerRunner {
        ManagerRunner {
            managers: vec![manager],
            per_job: BTreeMap::new(),
            retention: BTreeMap::new(),
        }
    }

    /// The job named `job` takes one snapshot through each of `managers` (e.g. the database and
    /// an export bundle, all in one store) instead.
    pub fn job_managers(mut self, job: impl Into<String>, managers: Vec<SnapshotManager>) -> Self {
        if !managers.is_empty() {
            self.per_job.insert(job.into(), managers);
        }
        self
    }

    /// Retention of the job's own snapshots, applied after each of its runs.
    pub fn job_retention(mut self, job: impl Into<String>, policy: RetentionPolicy) -> Self {
        self.retention.insert(job.into(), policy);
        self
    }

    fn managers_of(&self, job: &Job) -> &[SnapshotManager] {
        self.per_job.get(&job.name).unwrap_or(&self.managers)
    }
}

/// Whether `r` is a snapshot of the scheduled job `job`.
pub fn is_job_snapshot(r: &SnapshotRecord, job: &str) -> bool {
    r.operation_type == SCHEDULED && r.entity_type.as_deref() == Some(job)
}

impl JobRunner for ManagerRunner {
    fn last_snapshot(&mut self, job: &Job) -> Result<Option<DateTime<Utc>>> {
        let newest = self.managers_of(job)[0].list(
            &ListFilter::new()
                .operation_type(SCHEDULED)
                .entity_type(job.name.clone())
                .limit(1),
        )?;
        Ok(newest.first().map(|r| r.datetime))
    }

    fn run(&mut self, job: &Job) -> Result<String> {
        let mut taken = Vec::new();
        for m in self.managers_of(job) {
            let request = SnapshotRequest::new(SCHEDULED)
                .entity_type(job.name.clone())
                .description(format!("Scheduled {} ({})", job.name, job.schedule));
            match m.snapshot(request)? {
                SnapshotOutcome::Taken(r) => taken.push(format!(
                    "{} ({}, {} bytes)",
                    r.snapshot_id, r.source_kind, r.size_bytes
                )),
                SnapshotOutcome::Disabled { reason } => taken.push(format!("disabled: {reason}")),
            }
        }
        if let Some(policy) = self.retention.get(&job.name) {
            let report = self.managers_of(job)[0]
                .prune_matching(policy, &|r| is_job_snapshot(r, &job.name))?;
            if !report.deleted.is_empty() {
                taken.push(format!("pruned {} old", report.deleted.len()));
            }
        }
        Ok(format!("took {}", taken.join(", ")))
    }
}
