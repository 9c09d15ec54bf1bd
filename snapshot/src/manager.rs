//! [`SnapshotManager`]: the one public entry for every workflow — snapshot, list, get, verify,
//! prune, restore, status.
//!
//! A manager ties a [`Source`] (what to copy) to a [`Store`] (where snapshots live), a
//! [`RetentionPolicy`] and the [`Environment`] it runs in. It is cheap to clone (an `Arc`
//! inside) and safe to share between threads; processes sharing one store coordinate through
//! the store's lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::id;
use crate::record::{self, FORMAT_VERSION, Outcome, SnapshotRecord};
use crate::retention::{RetentionPlan, RetentionPolicy};
use crate::source::{Capture, CaptureProgress, CheckLevel, IntoSource, ProgressHook, Source};
use crate::store::{IntoStore, Store, StoreExt};

/// Takes, lists, verifies, prunes and restores snapshots of one source into one store.
///
/// ```no_run
/// # fn main() -> snapshot::Result<()> {
/// use snapshot::{LocalStore, SnapshotManager, SnapshotRequest};
///
/// let manager = SnapshotManager::builder()
///     .source(snapshot::engine::source("sqlite", "app.db".as_ref())?)
///     .store(LocalStore::open("backups")?)
///     .build()?;
/// let taken = manager.snapshot(SnapshotRequest::new("delete").entity("measure", 42))?;
/// if let Some(record) = taken.record() {
///     println!("took {}", record.snapshot_id);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SnapshotManager {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) catalog: Catalog,
    pub(crate) retention: RetentionPolicy,
    pub(crate) environment: Environment,
    pub(crate) disabled: Option<String>,
    pub(crate) disabled_logged: AtomicBool,
    pub(crate) check_on_create: CheckLevel,
    pub(crate) host: String,
    pub(crate) entities: Vec<crate::mapping::EntityMapping>,
    /// Where images are prepared for a store without a local directory: a private temporary
    /// directory, made on first use and removed with the manager.
    pub(crate) temp_staging: Mutex<Option<PathBuf>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(Some(dir)) = self.temp_staging.get_mut().map(Option::take) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Builds a [`SnapshotManager`]; see [`SnapshotManager::builder`].
#[derive(Debug, Default)]
pub struct SnapshotManagerBuilder {
    source: Option<Arc<dyn Source>>,
    store: Option<Arc<dyn Store>>,
    retention: Option<RetentionPolicy>,
    environment: Option<Environment>,
    check_on_create: Option<CheckLevel>,
    entities: Vec<crate::mapping::EntityMapping>,
    #[cfg(feature = "dedup")]
    dedup: bool,
}

impl SnapshotManagerBuilder {
    /// What to snapshot (required): a source, or one already shared (`Arc<dyn Source>`).
    pub fn source(mut self, source: impl IntoSource) -> Self {
        self.source = Some(source.into_source());
        self
    }

    /// Where snapshots live (required): a store, or one already shared (`Arc<dyn Store>`).
    pub fn store(mut self, store: impl IntoStore) -> Self {
        self.store = Some(store.into_store());
        self
    }

    /// Retention applied after each snapshot and by [`SnapshotManager::prune`]
    /// (default: keep the last 10).
    pub fn retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// The host environment (default: [`Environment::detect`] for the store's directory).
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// How [`undo`](SnapshotManager::undo) finds an entity's rows: its table, id column, key
    /// and dependent tables (default for an entity not mapped here: the table named like the
    /// entity, by its single-column primary key). A mapping in
    /// [`UndoOptions`](crate::table::UndoOptions) wins over this one for that call.
    pub fn entity(mut self, mapping: crate::mapping::EntityMapping) -> Self {
        self.entities
            .retain(|m| m.entity_type != mapping.entity_type);
        self.entities.push(mapping);
        self
    }

    /// Keeps the snapshots in a [`DedupStore`](crate::store::DedupStore) over the given store
    /// (each distinct page once, compressed; see the `dedup` feature), with its defaults. The
    /// same as passing `DedupStore::new(store)` to [`store`](Self::store).
    #[cfg(feature = "dedup")]
    pub fn dedup(mut self) -> Self {
        self.dedup = true;
        self
    }

    /// The engine check every new image passes before it is published (default
    /// [`CheckLevel::Header`]: the checksum is always computed; `Quick` adds SQLite's
    /// `quick_check` at about the cost of reading the file once more).
    pub fn check_on_create(mut self, level: CheckLevel) -> Self {
        self.check_on_create = Some(level);
        self
    }

    /// Builds the manager. On an ephemeral host with a host-local store the manager is built
    /// *disabled*: snapshots return [`SnapshotOutcome::Disabled`] and say why, once, in the log.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the source or store is missing;
    /// [`Error::RetentionKeepsNothing`] for a policy that would keep no snapshot.
    pub fn build(self) -> Result<SnapshotManager> {
        let source = self
            .source
            .ok_or_else(|| Error::invalid("source", "a manager needs a source"))?;
        let store = self
            .store
            .ok_or_else(|| Error::invalid("store", "a manager needs a store"))?;
        #[cfg(feature = "dedup")]
        let store: Arc<dyn Store> = if self.dedup {
            Arc::new(crate::store::DedupStore::new(store))
        } else {
            store
        };
        let retention = self.retention.unwrap_or_default();
        retention.validate()?;
        let environment = self.environment.unwrap_or_else(|| {
            let dir =
                (store.local().map(|l| l.dir().to_path_buf())).or_else(|| store.staging_hint());
            Environment::detect(dir.as_deref())
        });
        let disabled = (environment.is_ephemeral() && !store.outlives_host()).then(|| {
            format!(
                "{environment}; snapshots into the host-local store {} would not survive it",
                store.location()
            )
        });
        Ok(SnapshotManager {
            inner: Arc::new(Inner {
                catalog: Catalog::new(store.clone()),
                source,
                store,
                retention,
                environment,
                disabled,
                disabled_logged: AtomicBool::new(false),
                check_on_create: self.check_on_create.unwrap_or(CheckLevel::Header),
                host: gethostname::gethostname().to_string_lossy().into_owned(),
                entities: self.entities,
                temp_staging: Mutex::new(None),
            }),
        })
    }
}

/// What a snapshot is for: the fields recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub(crate) operation_type: String,
    pub(crate) description: Option<String>,
    pub(crate) entity_type: Option<String>,
    pub(crate) entity_id: Option<String>,
    pub(crate) pinned: bool,
    pub(crate) outcome: Outcome,
    pub(crate) restore_of: Option<String>,
    /// Keep the image even when it fails its engine check (restore's safety snapshot of a
    /// damaged present): recorded unverified, the failure in its description.
    pub(crate) as_found: bool,
    pub(crate) progress: Option<ProgressHook>,
}

impl SnapshotRequest {
    /// A request for a snapshot before `operation_type` ("delete", "update", "manual", …).
    pub fn new(operation_type: impl Into<String>) -> Self {
        SnapshotRequest {
            operation_type: operation_type.into(),
            description: None,
            entity_type: None,
            entity_id: None,
            pinned: false,
            outcome: Outcome::Standalone,
            restore_of: None,
            as_found: false,
            progress: None,
        }
    }

    /// Listens to how far a long capture is (an API export's chunks and rows), for a progress
    /// bar. Sources that finish at once say nothing.
    pub fn progress(mut self, listener: impl Fn(&CaptureProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressHook(std::sync::Arc::new(listener)));
        self
    }

    /// Free text; defaults to `Before <operation> <entity> <id>` as the original wrote it.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The entity concerned and its id.
    pub fn entity(
        mut self,
        entity_type: impl Into<String>,
        entity_id: impl std::fmt::Display,
    ) -> Self {
        self.entity_type = Some(entity_type.into());
        self.entity_id = Some(entity_id.to_string());
        self
    }

    /// The entity type alone (no id).
    pub fn entity_type(mut self, entity_type: impl Into<String>) -> Self {
        self.entity_type = Some(entity_type.into());
        self
    }

    /// Pins the snapshot: retention never removes it.
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }

    /// Marks the snapshot as taken around a call whose outcome is not known yet
    /// ([`Outcome::Pending`]); settle it with [`SnapshotManager::set_outcome`].
    pub fn around_call(mut self) -> Self {
        self.outcome = Outcome::Pending;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.operation_type.trim().is_empty() {
            return Err(Error::invalid("operation_type", "must not be empty"));
        }
        if id::sanitize(&self.operation_type).is_empty() {
            return Err(Error::invalid(
                "operation_type",
                format!("{:?} has no letter or digit", self.operation_type),
            ));
        }
        Ok(())
    }
}

/// What [`SnapshotManager::snapshot`] did.
#[allow(clippy::large_enum_variant)] // returned once per snapshot; boxing would only cost an allocation
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SnapshotOutcome {
    /// A snapshot was taken and is in the catalog.
    Taken(SnapshotRecord),
    /// The manager is disabled (ephemeral host); no snapshot was taken, and this says why.
    Disabled {
        /// Why the manager is disabled.
        reason: String,
    },
}

impl SnapshotOutcome {
    /// The new snapshot's id, when one was taken.
    pub fn id(&self) -> Option<&str> {
        self.record().map(|r| r.snapshot_id.as_str())
    }

    /// The new record, when one was taken.
    pub fn record(&self) -> Option<&SnapshotRecord> {
        match self {
            SnapshotOutcome::Taken(r) => Some(r),
            SnapshotOutcome::Disabled { .. } => None,
        }
    }

    /// The new record, when one was taken.
    pub fn into_record(self) -> Option<SnapshotRecord> {
        match self {
            SnapshotOutcome::Taken(r) => Some(r),
            SnapshotOutcome::Disabled { .. } => None,
        }
    }
}

/// Which records [`SnapshotManager::list`] returns (all filters combine; newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    operation_type: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<usize>,
}

impl ListFilter {
    /// Every record.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only this operation type.
    pub fn operation_type(mut self, op: impl Into<String>) -> Self {
        self.operation_type = Some(op.into());
        self
    }
    /// Only this entity type.
    pub fn entity_type(mut self, entity: impl Into<String>) -> Self {
        self.entity_type = Some(entity.into());
        self
    }
    /// Only this entity id.
    pub fn entity_id(mut self, id: impl std::fmt::Display) -> Self {
        self.entity_id = Some(id.to_string());
        self
    }
    /// Only snapshots taken at or after `t`.
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }
    /// Only snapshots taken before `t`.
    pub fn until(mut self, t: DateTime<Utc>) -> Self {
        self.until = Some(t);
        self
    }
    /// At most `n` records (the newest).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    fn matches(&self, r: &SnapshotRecord) -> bool {
        self.operation_type
            .as_ref()
            .is_none_or(|o| *o == r.operation_type)
            && self
                .entity_type
                .as_ref()
                .is_none_or(|e| Some(e) == r.entity_type.as_ref())
            && self
                .entity_id
                .as_ref()
                .is_none_or(|i| Some(i) == r.entity_id.as_ref())
            && self.since.is_none_or(|t| r.datetime >= t)
            && self.until.is_none_or(|t| r.datetime < t)
    }
}

/// Counts and sizes for one operation type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationStats {
    /// Number of snapshots.
    pub count: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// What [`SnapshotManager::status`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Status {
    /// Whether snapshots are taken.
    pub enabled: bool,
    /// Why not, when disabled.
    pub disabled_reason: Option<String>,
    /// The detected (or given) environment, as text.
    pub environment: String,
    /// The store's location.
    pub store: String,
    /// The source kind.
    pub source_kind: String,
    /// The live path.
    pub source_path: PathBuf,
    /// Number of snapshots.
    pub count: usize,
    /// Their total size in bytes.
    pub total_bytes: u64,
    /// Per operation type.
    pub by_operation: BTreeMap<String, OperationStats>,
    /// Number of pinned snapshots.
    pub pinned: usize,
    /// The oldest snapshot's time.
    pub oldest: Option<DateTime<Utc>>,
    /// The newest snapshot's time.
    pub newest: Option<DateTime<Utc>>,
    /// When a snapshot last passed a full verification.
    pub last_verified: Option<DateTime<Utc>>,
    /// The retention policy in force.
    pub retention: RetentionPolicy,
    /// What the snapshots take in a store that shares data between them (a dedup store):
    /// logical and stored bytes; `None` for a store where each takes its size.
    pub storage: Option<crate::store::StoreUsage>,
    /// What the store's replica lacks, for a store with one; `None` otherwise.
    pub replication: Option<crate::store::ReplicationStatus>,
}

/// What [`SnapshotManager::prune`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PruneReport {
    /// The plan that was carried out (a reason for every keep and drop).
    pub plan: RetentionPlan,
    /// Ids removed from the catalog and the store.
    pub deleted: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

static INSTALLED: OnceLock<SnapshotManager> = OnceLock::new();

/// Installs the process-wide default manager used by `#[with_snapshot]` when no
/// `manager = …` is given. Only the first call wins.
///
/// # Errors
/// [`Error::InvalidInput`] when a manager is already installed.
pub fn install(manager: SnapshotManager) -> Result<()> {
    INSTALLED
        .set(manager)
        .map_err(|_| Error::invalid("manager", "a default manager is already installed"))
}

/// The installed default manager.
///
/// # Errors
/// [`Error::NotInstalled`] when [`install`] was never called.
pub fn installed() -> Result<&'static SnapshotManager> {
    INSTALLED.get().ok_or(Error::NotInstalled)
}

fn newest_first(records: &mut [SnapshotRecord]) {
    records.sort_by(|a, b| {
        b.datetime
            .cmp(&a.datetime)
            .then_with(|| b.snapshot_id.cmp(&a.snapshot_id))
    });
}

impl SnapshotManager {
    /// Starts building a manager.
    pub fn builder() -> SnapshotManagerBuilder {
        SnapshotManagerBuilder::default()
    }

    /// Whether snapshots are taken (false on an ephemeral host with a host-local store).
    pub fn is_enabled(&self) -> bool {
        self.inner.disabled.is_none()
    }

    /// The environment the manager was built for.
    pub fn environment(&self) -> &Environment {
        &self.inner.environment
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn Source> {
        &self.inner.source
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Takes a snapshot: a consistent image of the source, checksummed and durable in the store,
    /// then recorded in the catalog; retention is applied afterwards. On a disabled manager
    /// nothing is taken and [`SnapshotOutcome::Disabled`] says why.
    ///
    /// Nothing of a failed snapshot stays behind (staging files and partly published objects
    /// are removed) and the live data is never modified.
    ///
    /// # Errors
    /// Source errors ([`Error::SourceMissing`], [`Error::NotADatabase`], [`Error::Busy`]), store
    /// errors ([`Error::StorageFull`], [`Error::PermissionDenied`]), [`Error::CatalogCorrupt`],
    /// [`Error::InvalidInput`] for an empty operation type.
    pub fn snapshot(&self, request: SnapshotRequest) -> Result<SnapshotOutcome> {
        let (outcome, dropped) = self.snapshot_deferring_prune(request)?;
        self.delete_objects(&dropped);
        Ok(outcome)
    }

    /// [`snapshot`](Self::snapshot) for a wrapped call: the objects of the snapshots retention
    /// dropped from the catalog are handed back instead of deleted, for the caller to delete
    /// with [`delete_objects`](Self::delete_objects) once the call's outcome is recorded —
    /// cleanup stays off the path between the snapshot and the body.
    pub(crate) fn snapshot_deferring_prune(
        &self,
        request: SnapshotRequest,
    ) -> Result<(SnapshotOutcome, Vec<SnapshotRecord>)> {
        if let Some(reason) = &self.inner.disabled {
            if !self.inner.disabled_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(%reason, "snapshots are disabled");
            }
            let reason = reason.clone();
            return Ok((SnapshotOutcome::Disabled { reason }, Vec::new()));
        }
        let (op, entity) = (request.operation_type.clone(), request.entity_type.clone());
        let hook = request.progress.clone();
        let (record, dropped) = self.take_keeping_dropped(
            request,
            |dest| self.capture(dest, &op, entity.as_deref(), hook.as_ref()),
            true,
        )?;
        Ok((SnapshotOutcome::Taken(record), dropped))
    }

    pub(crate) fn take(&self, request: SnapshotRequest) -> Result<SnapshotRecord> {
        let (op, entity) = (request.operation_type.clone(), request.entity_type.clone());
        let hook = request.progress.clone();
        self.take_with(request, |dest| {
            self.capture(dest, &op, entity.as_deref(), hook.as_ref())
        })
    }

    /// The source's capture into `dest` for a snapshot before `operation`, given the image of its previous snapshot when it asks
    /// for one (the newest listed snapshot of the same kind and location, read where the store
    /// keeps it or fetched into the staging directory; left out when that fails).
    fn capture(
        &self,
        dest: &Path,
        operation: &str,
        entity_type: Option<&str>,
        progress: Option<&ProgressHook>,
    ) -> Result<()> {
        let source = &self.inner.source;
        let mut context = Capture {
            operation,
            entity_type,
            previous: None,
            progress: progress.map(|h| &*h.0),
        };
        if !source.wants_previous() {
            return source.capture_with(dest, &context);
        }
        let kind = source.kind();
        let location = source.path().display().to_string();
        let previous = self.inner.catalog.load().ok().and_then(|mut records| {
            records.retain(|r| r.source_kind == kind && r.source_path == location);
            newest_first(&mut records);
            records.into_iter().next()
        });
        let mut fetched = None;
        let path = previous.and_then(|r| match self.local_object(&r.blob_key) {
            Ok(Some(p)) => Some(p),
            _ => {
                let dir = self.staging_dir().ok()?;
                let staged = StagingGuard::new(fs_util::staging_path(&dir, &r.blob_key));
                self.inner
                    .store
                    .get_to_file(&r.blob_key, staged.path())
                    .ok()?;
                let p = staged.path().to_path_buf();
                fetched = Some(staged);
                Some(p)
            }
        });
        context.previous = path.as_deref();
        let r = source.capture_with(dest, &context);
        drop(fetched);
        r
    }

    /// [`take`](Self::take) with another way of producing the image at the staging path
    /// (restore's safety snapshot may link the quiesced live file instead of copying it).
    pub(crate) fn take_with(
        &self,
        request: SnapshotRequest,
        capture: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<SnapshotRecord> {
        let (record, dropped) = self.take_keeping_dropped(request, capture, false)?;
        self.delete_objects(&dropped);
        Ok(record)
    }

    /// [`take_with`](Self::take_with) that leaves the objects of the records retention dropped
    /// to the caller (already out of the catalog). With `streamable`, a source that streams its
    /// image into a store that takes streams
    /// ([`StreamingStorage`](crate::store::StreamingStorage)) does so instead of `capture`
    /// (see `produce_image`).
    fn take_keeping_dropped(
        &self,
        request: SnapshotRequest,
        capture: impl FnOnce(&Path) -> Result<()>,
        streamable: bool,
    ) -> Result<(SnapshotRecord, Vec<SnapshotRecord>)> {
        request.validate()?;
        let inner = &self.inner;
        let now = Utc::now();
        // A store's first snapshot creates its directory: not for a source that is not there
        // (a mistyped path leaves nothing behind).
        let source = &inner.source;
        let store_dir = (inner.store.local().map(|l| l.dir().to_path_buf()))
            .or_else(|| inner.store.staging_hint());
        if store_dir.is_some_and(|d| !d.exists())
            && !crate::engine::is_server(source.kind())
            && !source.path().exists()
        {
            return Err(Error::SourceMissing {
                kind: source.kind(),
                path: source.path().to_path_buf(),
            });
        }
        let staging_dir = self.staging_dir()?;
        let staged = StagingGuard::new(fs_util::staging_path(
            &staging_dir,
            inner.source.extension(),
        ));
        let (sealed, damage) =
            self.produce_image(staged.path(), capture, streamable, request.as_found)?;
        // A store's first snapshot: the (empty) index exists before any object is published, so
        // that a crash from here on leaves an orphan for doctor, never a store without an index
        // that would look lost. Created only now so that a failed capture leaves nothing.
        inner.catalog.ensure_index()?;

        let description = describe(&request, damage.as_deref());
        let mut record = None;
        for attempt in 0..10_000u32 {
            let snapshot_id = id::snapshot_id(
                now,
                &request.operation_type,
                request.entity_type.as_deref(),
                request.entity_id.as_deref(),
                attempt,
            );
            let blob_key = format!("{snapshot_id}.{}", inner.source.extension());
            let r = SnapshotRecord {
                timestamp: id::timestamp(now),
                datetime: now,
                description: description.clone(),
                operation_type: request.operation_type.clone(),
                entity_type: request.entity_type.clone(),
                entity_id: request.entity_id.clone(),
                file_path: inner.store.object_location(&blob_key),
                size_mb: record::size_mb(sealed.size),
                blob_key,
                size_bytes: sealed.size,
                checksum: sealed.checksum.clone(),
                source_kind: inner.source.kind().to_string(),
                source_path: inner.source.path().display().to_string(),
                outcome: request.outcome,
                pinned: request.pinned,
                verified_at: (inner.check_on_create != CheckLevel::Header && damage.is_none())
                    .then_some(now),
                restore_of: request.restore_of.clone(),
                format_version: FORMAT_VERSION,
                library_version: env!("CARGO_PKG_VERSION").to_string(),
                host: inner.host.clone(),
                extra: Default::default(),
                snapshot_id,
            };
            // Publishing refuses an existing blob or sidecar name: that refusal is what keeps
            // ids unique across processes.
            let sidecar = serde_json::to_vec_pretty(&r)
                .map_err(|e| Error::invalid("record", format!("cannot serialise: {e}")))?;
            match inner
                .store
                .put_snapshot(&r.blob_key, staged.path(), &r.sidecar_key(), &sidecar)
            {
                Ok(()) => {
                    record = Some(r);
                    break;
                }
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let mut record = record
            .ok_or_else(|| Error::invalid("snapshot_id", "no free id after 10000 attempts"))?;
        staged.disarm();
        // A store that shares data between snapshots says what this one added (in the index;
        // the sidecar was written before it was known).
        if let Ok(Some(added)) = inner.store.added_bytes(&record.blob_key) {
            record.extra.insert("stored_bytes".into(), added.into());
        }

        let dropped = inner.catalog.update(|records| {
            if inner.store.head(&record.blob_key)?.is_none() {
                return Err(Error::BlobMissing {
                    key: record.blob_key.clone(),
                });
            }
            records.push(record.clone());
            let plan = inner.retention.apply(records, now)?;
            let dropped = take_dropped(records, &plan);
            self.unlisting(&dropped);
            Ok(dropped)
        });
        let dropped = match dropped {
            Ok(d) => d,
            Err(e) => {
                let _ = inner
                    .store
                    .delete_many(&[record.blob_key.clone(), record.sidecar_key()]);
                return Err(e);
            }
        };
        tracing::info!(id = %record.snapshot_id, bytes = record.size_bytes, "snapshot taken");
        Ok((record, dropped))
    }

    /// The image of a new snapshot at `staged`, its size and checksum, and the damage it was
    /// kept with (`as_found`). With `streamable`, a source that streams its image into a store
    /// that takes streams does so (when only the header is checked on create: the source
    /// checks it as it reads, and no staged copy exists for a deeper check); otherwise
    /// `capture` writes it and it is checked and sealed.
    fn produce_image(
        &self,
        staged: &Path,
        capture: impl FnOnce(&Path) -> Result<()>,
        streamable: bool,
        as_found: bool,
    ) -> Result<(fs_util::Sealed, Option<String>)> {
        let inner = &self.inner;
        let source = &inner.source;
        let streaming = inner.store.streaming().filter(|_| {
            streamable
                && source.streams()
                && inner.check_on_create == CheckLevel::Header
                && !as_found
        });
        let Some(st) = streaming else {
            return self.capture_and_seal(staged, capture, as_found);
        };
        let img = st.capture_to_file(staged, &mut |out| source.capture_to(out))?;
        let sealed = fs_util::Sealed {
            size: img.size,
            checksum: img.checksum,
        };
        Ok((sealed, None))
    }

    /// Captures into `staged`, checks the image at the create level and seals it; with
    /// `as_found`, an image that fails its check is kept and the damage returned.
    fn capture_and_seal(
        &self,
        staged: &Path,
        capture: impl FnOnce(&Path) -> Result<()>,
        as_found: bool,
    ) -> Result<(fs_util::Sealed, Option<String>)> {
        let inner = &self.inner;
        capture(staged)?;
        let mut damage = None;
        match inner.source.check_image(staged, inner.check_on_create) {
            Ok(()) => {}
            Err(e @ Error::NotADatabase { .. }) if as_found => {
                tracing::warn!(error = %e, "the snapshot keeps a source that fails its check, as found");
                damage = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        Ok((fs_util::seal(staged)?, damage))
    }

    /// Where images are prepared: the store's own directory when it has one (publishing is then
    /// a rename), else the manager's private temporary directory.
    pub(crate) fn staging_dir(&self) -> Result<PathBuf> {
        if let Some(local) = self.inner.store.local() {
            local.prepare()?;
            return Ok(local.dir().to_path_buf());
        }
        if let Some(dir) = self.inner.store.staging_hint() {
            fs_util::create_private_dir(&dir)?;
            return Ok(dir);
        }
        let mut temp = self
            .inner
            .temp_staging
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = temp.as_ref() {
            return Ok(dir.clone());
        }
        let dir = std::env::temp_dir().join(format!(
            "snapshot-staging-{}-{:p}",
            std::process::id(),
            Arc::as_ptr(&self.inner)
        ));
        fs_util::create_private_dir(&dir)?;
        *temp = Some(dir.clone());
        Ok(dir)
    }

    /// Drops one record from the catalog and deletes its objects (failures are logged).
    pub(crate) fn forget(&self, id: &str) {
        let dropped = self.inner.catalog.update(|records| {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(records)
                .into_iter()
                .partition(|r| r.snapshot_id == id);
            *records = kept;
            self.unlisting(&gone);
            Ok(gone)
        });
        match dropped {
            Ok(d) => self.delete_objects(&d),
            Err(e) => tracing::warn!(id, error = %e, "could not drop a snapshot record"),
        }
    }

    /// Marks the sidecars of records about to be dropped from the index (`"dropping": true`),
    /// before the index is written: a snapshot whose objects outlive a crash after that write
    /// is then an orphan, not one a sidecar still describes (which doctor would list again).
    /// Run inside the catalog update; a record that stays listed after all (the update retried)
    /// keeps its sidecar, marked, which changes nothing while it is listed.
    pub(crate) fn unlisting(&self, gone: &[SnapshotRecord]) {
        for r in gone {
            let mut marked = r.clone();
            marked.extra.insert(
                crate::catalog::DROPPING.into(),
                serde_json::Value::Bool(true),
            );
            // A compare-and-swap against the sidecar as it is: another process that dropped
            // the record first and deleted the sidecar must not see it written back.
            let key = r.sidecar_key();
            let written = match self.inner.store.get(&key) {
                Ok(current) => serde_json::to_vec_pretty(&marked)
                    .map_err(|e| Error::invalid("record", e.to_string()))
                    .and_then(|json| {
                        let version = current.meta.version.unwrap_or_default();
                        self.inner
                            .store
                            .put(
                                &key,
                                crate::store::Payload::Bytes(&json),
                                crate::store::PutMode::Update(version),
                            )
                            .map(drop)
                    }),
                Err(e) => Err(e),
            };
            match written {
                Ok(()) | Err(Error::BlobMissing { .. } | Error::Precondition { .. }) => {}
                Err(e) => {
                    tracing::warn!(id = %r.snapshot_id, error = %e, "could not mark a dropped snapshot's sidecar");
                }
            }
        }
    }

    /// Deletes the objects of records already dropped from the catalog (failures are logged:
    /// doctor finds what is left).
    pub(crate) fn delete_objects(&self, dropped: &[SnapshotRecord]) {
        if dropped.is_empty() {
            return;
        }
        let keys: Vec<String> = dropped
            .iter()
            .flat_map(|r| [r.blob_key.clone(), r.sidecar_key()])
            .collect();
        if let Err(e) = self.inner.store.delete_many(&keys) {
            tracing::warn!(keys = ?keys, error = %e, "could not delete every pruned object; doctor will find the rest");
        }
    }

    /// Whether the catalog's index is missing from the store: [`list`](Self::list) then reads
    /// the snapshots from their sidecars, the next snapshot writes the index again with all of
    /// them, and [`doctor`](Self::doctor) reports it (and rewrites it on repair).
    ///
    /// # Errors
    /// Store errors.
    pub fn index_missing(&self) -> Result<bool> {
        self.inner.catalog.index_missing()
    }

    /// Records, newest first, that match `filter`.
    ///
    /// # Errors
    /// [`Error::CatalogCorrupt`] and store errors.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<SnapshotRecord>> {
        let mut records: Vec<_> = self
            .inner
            .catalog
            .load()?
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect();
        newest_first(&mut records);
        if let Some(n) = filter.limit {
            records.truncate(n);
        }
        Ok(records)
    }

    /// One record by id.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown (or malformed) id; catalog errors.
    pub fn get(&self, id: &str) -> Result<SnapshotRecord> {
        if !id::is_valid(id) {
            return Err(Error::NotFound { id: id.to_string() });
        }
        self.inner
            .catalog
            .load()?
            .into_iter()
            .find(|r| r.snapshot_id == id)
            .ok_or_else(|| Error::NotFound { id: id.to_string() })
    }

    /// Settles the outcome of the call a snapshot was taken for.
    ///
    /// # Errors
    /// [`Error::NotFound`]; catalog errors.
    pub fn set_outcome(&self, id: &str, outcome: Outcome) -> Result<()> {
        self.modify(id, |r| r.outcome = outcome)
    }

    /// Pins or unpins a snapshot (a pinned snapshot is never pruned).
    ///
    /// # Errors
    /// [`Error::NotFound`]; catalog errors.
    pub fn pin(&self, id: &str, pinned: bool) -> Result<()> {
        self.modify(id, |r| r.pinned = pinned)
    }

    pub(crate) fn modify(&self, id: &str, f: impl Fn(&mut SnapshotRecord)) -> Result<()> {
        self.inner.catalog.update(|records| {
            let r = records
                .iter_mut()
                .find(|r| r.snapshot_id == id)
                .ok_or_else(|| Error::NotFound { id: id.to_string() })?;
            f(r);
            Ok(())
        })
    }

    /// What [`prune`](Self::prune) would do now, with a reason for every keep and drop.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn prune_plan(&self) -> Result<RetentionPlan> {
        self.inner
            .retention
            .apply(&self.inner.catalog.load()?, Utc::now())
    }

    /// Applies the retention policy: drops records from the catalog, then deletes their objects.
    /// Unlike the pruning that follows each snapshot, this waits until their space is freed
    /// ([`StoreExt::settle`](crate::StoreExt::settle)).
    ///
    /// # Errors
    /// Catalog and store errors.
    pub fn prune(&self) -> Result<PruneReport> {
        self.prune_with(&self.inner.retention.clone())
    }

    /// Applies another retention policy once (the CLI's `prune --keep-…` flags).
    ///
    /// # Errors
    /// [`Error::RetentionKeepsNothing`]; catalog and store errors.
    pub fn prune_with(&self, policy: &RetentionPolicy) -> Result<PruneReport> {
        policy.validate()?;
        let now = Utc::now();
        let (plan, dropped) = self.inner.catalog.update(|records| {
            let plan = policy.apply(records, now)?;
            let dropped = take_dropped(records, &plan);
            self.unlisting(&dropped);
            Ok((plan, dropped))
        })?;
        self.delete_objects(&dropped);
        if let Err(e) = self.inner.store.settle() {
            tracing::warn!(error = %e, "the store could not finish freeing pruned objects");
        }
        Ok(PruneReport {
            plan,
            freed_bytes: total_size(&dropped),
            deleted: dropped.into_iter().map(|r| r.snapshot_id).collect(),
        })
    }

    /// Counts, sizes, times and the state of the manager.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn status(&self) -> Result<Status> {
        let records = self.inner.catalog.load()?;
        let mut by_operation: BTreeMap<String, OperationStats> = BTreeMap::new();
        for r in &records {
            let s = by_operation.entry(r.operation_type.clone()).or_default();
            s.count += 1;
            s.bytes = s.bytes.saturating_add(r.size_bytes); // a damaged catalog may claim any size
        }
        Ok(Status {
            enabled: self.is_enabled(),
            disabled_reason: self.inner.disabled.clone(),
            environment: self.inner.environment.to_string(),
            store: self.inner.store.location(),
            source_kind: self.inner.source.kind().to_string(),
            source_path: self.inner.source.path().to_path_buf(),
            count: records.len(),
            total_bytes: total_size(&records),
            by_operation,
            pinned: records.iter().filter(|r| r.pinned).count(),
            oldest: records.iter().map(|r| r.datetime).min(),
            newest: records.iter().map(|r| r.datetime).max(),
            last_verified: records.iter().filter_map(|r| r.verified_at).max(),
            retention: self.inner.retention.clone(),
            storage: self.inner.store.usage()?,
            replication: self.inner.store.replication()?,
        })
    }
}

/// A snapshot's description: the request's, else "Before <operation> <entity> <id>"; the
/// damage an image was kept with is said.
fn describe(request: &SnapshotRequest, damage: Option<&str>) -> String {
    let mut description = request.description.clone().unwrap_or_else(|| {
        let mut d = format!("Before {}", request.operation_type);
        for part in [&request.entity_type, &request.entity_id]
            .into_iter()
            .flatten()
        {
            d.push(' ');
            d.push_str(part);
        }
        d
    });
    if let Some(damage) = damage {
        description.push_str(&format!(" (kept as found; it fails its check: {damage})"));
    }
    description
}

/// The sizes of `records` added up, at most `u64::MAX`: a damaged catalog may claim any size.
pub(crate) fn total_size(records: &[SnapshotRecord]) -> u64 {
    records
        .iter()
        .fold(0u64, |total, r| total.saturating_add(r.size_bytes))
}

/// Removes the records the plan drops and returns them.
fn take_dropped(records: &mut Vec<SnapshotRecord>, plan: &RetentionPlan) -> Vec<SnapshotRecord> {
    let drop: std::collections::HashSet<&str> =
        plan.dropped().map(|d| d.snapshot_id.as_str()).collect();
    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(records)
        .into_iter()
        .partition(|r| drop.contains(r.snapshot_id.as_str()));
    *records = kept;
    gone
}
