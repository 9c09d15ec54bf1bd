//! Record-level restore: look into a snapshot, compare it with the live data, put back whole
//! tables — or exactly the rows one call deleted.
//!
//! A whole-file [`restore`](crate::SnapshotManager::restore) puts everything back, and with it
//! undoes every change made since the snapshot. The methods here work on rows instead:
//!
//! | method | what it does | writes |
//! |--------|--------------|--------|
//! | [`snapshot_tables`](crate::SnapshotManager::snapshot_tables) | the tables in a snapshot | no |
//! | [`preview`](crate::SnapshotManager::preview) | a page of a table in a snapshot, with its record | no |
//! | [`compare`](crate::SnapshotManager::compare) | added / removed / changed rows against the live table, with the changed columns | no |
//! | [`restore_tables`](crate::SnapshotManager::restore_tables) | tables back into the live database, [`Replace`](RestoreMode::Replace) or [`Merge`](RestoreMode::Merge) | one transaction |
//! | [`undo`](crate::SnapshotManager::undo) | the rows of the snapshot's entity (and declared dependants) back, by merge | one transaction |
//!
//! Rows are matched by the live table's primary key, or by declared key columns. Before
//! writing, a `pre_restore` safety snapshot of the live data is taken (as a whole-file
//! restore does); all tables are written in one transaction, so a failure midway leaves the
//! live data as it was and the safety snapshot in the catalog
//! ([`Error::TableRestoreFailed`]). Foreign keys declared by the schema are enforced; tables
//! are written parents first (deletes children first), so a key checked after every statement
//! holds at each step, and tables may be named in any order. A dry run reports the same
//! counts without writing and without a safety snapshot.
//!
//! Every call first checks the snapshot's checksum (reading it once, in place for a local store),
//! so a damaged snapshot is refused before anything is read from it.
//!
//! ## Undo
//!
//! A snapshot taken by `#[with_snapshot("delete", "measure")]` for measure 42 records the
//! entity type `measure` and id `42`. [`undo`](crate::SnapshotManager::undo) puts back the rows
//! of table `measure` whose primary key is 42 as they were in the snapshot — only those — and,
//! for each declared [`Cascade`], the rows of that table that referred to 42. Where to look is
//! an [`EntityMapping`] (default: the table named like the entity, its single-column primary
//! key). A live row that changed since the snapshot is a conflict: the undo is refused with
//! [`Error::UndoConflict`] listing the rows and columns, unless forced. Undo refuses a snapshot
//! without an entity id, and one whose call is pending or failed
//! ([`Outcome`]); a manual (standalone) snapshot with an entity id is fine.
//!
//! ## Bad input
//!
//! A table missing on either side is [`Error::TableMissing`]; columns added, removed or
//! retyped since the snapshot are reported by `compare` and refused by writes
//! ([`Error::SchemaDrift`]) unless they are asked to use the common columns only; a table
//! without a primary key needs a declared key ([`Error::NoKey`]); a declared key that repeats
//! is [`Error::KeyCollision`]. Identifiers are always quoted, so names with quotes, spaces or
//! any Unicode are safe.
//!
//! ## Engines
//!
//! SQLite (feature `sqlite`): the snapshot image is attached read-only to a connection on the
//! live database and every comparison and write is one SQL statement over both, so a large
//! table is streamed by SQLite, never held in memory.
//!
//! DuckDB (feature `duckdb`): the snapshot file is attached read-only to a connection on the
//! live database and compared and written with SQL over both, as on SQLite. DuckDB lets a
//! process open a file once: with `DuckDbSource::with_connection` the engine works through a
//! clone of the application's connection, never opening the file again; a closed file
//! (`DuckDbSource::new`) is opened once for the call, and the safety snapshot is taken through
//! that instance. DuckDB checks foreign keys after every statement and against rows deleted
//! earlier in the same transaction, so a replace that deletes a row together with the rows
//! referring to it fails (and changes nothing).
//!
//! PostgreSQL (feature `postgres`): the snapshot bundle's tables are loaded into temporary
//! tables on the live server (`COPY … FROM STDIN`, streamed) inside the session's transaction,
//! and compared and written with SQL joins as on SQLite; a preview reads the bundle alone.
//! Other sources answer [`Error::Unsupported`].
//!
//! ## Example
//!
//! ```no_run
//! # fn main() -> snapshot::Result<()> {
//! use snapshot::table::{
//!     Cascade, CompareOptions, EntityMapping, RestoreMode, TableRestoreOptions, UndoOptions,
//! };
//! use snapshot::{LocalStore, SnapshotManager};
//!
//! let manager = SnapshotManager::builder()
//!     .source(snapshot::engine::source("sqlite", "app.db".as_ref())?)
//!     .store(LocalStore::open("backups")?)
//!     .build()?;
//! let id = "20261123_101500_123_delete_measure_42";
//!
//! // What is in the snapshot, and how does it differ from now?
//! let page = manager.preview(id, "measure", 0, 50)?;
//! println!("{} rows, taken {}", page.total_rows, page.record.datetime);
//! let diff = manager.compare(id, "measure", &CompareOptions::new())?;
//! println!("{} removed, {} changed since", diff.removed, diff.changed);
//!
//! // Put back what the call deleted: measure 42 and its priorities.
//! let undo = UndoOptions::new().entity(
//!     EntityMapping::new("measure").cascade(Cascade::new("measure_area_priority", "measure_id")),
//! );
//! let report = manager.undo_with(id, &undo)?;
//! println!("{} row(s) back; safety copy {:?}", report.inserted(), report.safety_snapshot);
//!
//! // Or merge a whole table back (rows added since stay).
//! let plan = manager.restore_tables(
//!     id,
//!     &["measure"],
//!     &TableRestoreOptions::new(RestoreMode::Merge).dry_run(true),
//! )?;
//! println!("would insert {}, update {}", plan.inserted(), plan.updated());
//! # Ok(()) }
//! ```

pub(crate) mod conflict;
pub(crate) mod diff;
pub(crate) mod drift;
pub(crate) mod order;
mod plan;
#[allow(dead_code)] // used by the engines whose whole restore goes table by table
mod replace;
mod restore;
pub(crate) mod schema;
pub(crate) mod session;
#[allow(dead_code)] // shared by the SQL engines: each uses its part
pub(crate) mod statements;
mod undo;
pub(crate) mod value;

pub use crate::mapping::{Cascade, EntityMapping};
pub use conflict::{RowConflict, UndoRefusal};
pub use diff::{CompareOptions, DEFAULT_SAMPLE, DiffKind, RowDiff, TableDiff};
pub use drift::{Column, Retyped, SchemaDrift};
pub use restore::{RestoreMode, TableChanges, TableRestoreOptions, TableRestoreReport};
pub use session::TableSession;
pub use undo::{UndoOptions, UndoReport};
pub use value::Value;

#[allow(unused_imports)] // used by the engines whose whole restore goes table by table
pub(crate) use replace::TableReplacement;
pub(crate) use schema::TablePlan;
pub(crate) use session::{Session, Side};

use crate::engine;
use crate::error::{Error, Result};
use crate::manager::{SnapshotManager, SnapshotRequest};
use crate::record::{Outcome, PRE_RESTORE, SnapshotRecord};
use crate::restore::Image;
use crate::source::CheckLevel;
use crate::table::plan::{Labels, plan_table, write_and_commit, write_order};
use crate::table::schema::RowFilter;

/// Conflicting rows listed per table in an undo's report or error.
const CONFLICT_SAMPLE: usize = 20;

/// A page of a table in a snapshot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TablePreview {
    /// The snapshot's record.
    pub record: SnapshotRecord,
    /// The table, as the snapshot spells it.
    pub table: String,
    /// Its columns.
    pub columns: Vec<Column>,
    /// The rows of the page, in primary key order (insertion order without one), values in
    /// column order.
    pub rows: Vec<Vec<Value>>,
    /// Rows skipped before the page.
    pub offset: u64,
    /// Rows in the table.
    pub total_rows: u64,
}

/// An engine session on a snapshot (and the live data). Fields drop in order: the session
/// closes before a staged image is removed.
struct Opened {
    record: SnapshotRecord,
    session: Box<dyn Session>,
    labels: Labels,
    _image: Image,
}

impl SnapshotManager {
    /// The user tables in a snapshot, sorted by name.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::ChecksumMismatch`] / [`Error::BlobMissing`] for a damaged
    /// snapshot; [`Error::Unsupported`] for a source kind without a table engine.
    pub fn snapshot_tables(&self, id: &str) -> Result<Vec<String>> {
        let mut o = self.open_tables(id, "preview", false, false)?;
        o.session.tables(Side::Snapshot)
    }

    /// Up to `limit` rows of `table` in a snapshot, after skipping `offset` (primary key
    /// order), with the table's columns, its row count and the snapshot's record. The live
    /// data is not read.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::TableMissing`] when the snapshot has no such table;
    /// [`Error::ChecksumMismatch`] / [`Error::BlobMissing`] for a damaged snapshot;
    /// [`Error::Unsupported`]; engine errors.
    pub fn preview(&self, id: &str, table: &str, offset: u64, limit: u64) -> Result<TablePreview> {
        let mut o = self.open_tables(id, "preview", false, false)?;
        let shape = o
            .session
            .shape(Side::Snapshot, table)?
            .ok_or_else(|| Error::TableMissing {
                table: table.to_string(),
                location: format!("snapshot {id}"),
            })?;
        let (total_rows, rows) = o.session.page(&shape, offset, limit)?;
        Ok(TablePreview {
            record: o.record.clone(),
            table: shape.name,
            columns: shape.columns,
            rows,
            offset,
            total_rows,
        })
    }

    /// Compares `table` in a snapshot with the live table: rows added, removed and changed
    /// since the snapshot (with the columns that changed), counted over the whole table and
    /// sampled for display. Columns added, removed or retyped since are reported in
    /// [`TableDiff::drift`]; the common columns are compared.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::WrongEngine`] when the snapshot is of another source
    /// kind; [`Error::TableMissing`] (either side); [`Error::NoKey`] for a table without a
    /// primary key and no declared key; [`Error::KeyCollision`] when the declared key repeats;
    /// [`Error::ChecksumMismatch`] / [`Error::BlobMissing`]; [`Error::Unsupported`]; engine
    /// errors.
    pub fn compare(&self, id: &str, table: &str, options: &CompareOptions) -> Result<TableDiff> {
        let mut o = self.open_tables(id, "compare", true, false)?;
        o.session.begin(false)?;
        let plan = plan_table(
            &mut *o.session,
            &o.labels,
            table,
            options.key.as_deref(),
            true,
            None,
            false,
        )?;
        let d = o.session.diff(&plan, options.sample)?;
        o.session.rollback();
        Ok(TableDiff {
            snapshot_id: o.record.snapshot_id.clone(),
            table: plan.live_table.clone(),
            key: plan.key.clone(),
            removed: d.removed(),
            unchanged: d.matched.saturating_sub(d.changed),
            changed_columns: plan
                .columns
                .iter()
                .cloned()
                .zip(d.per_column)
                .filter(|(_, n)| *n > 0)
                .collect(),
            columns: plan.columns,
            drift: plan.drift,
            snapshot_rows: d.snapshot_rows,
            live_rows: d.live_rows,
            added: d.added,
            changed: d.changed,
            sample: d.sample,
        })
    }

    /// Restores `tables` of a snapshot into the live database, replacing or merging their
    /// rows (see [`RestoreMode`]), all in one transaction, after a `pre_restore` safety
    /// snapshot of the live data. Other connections may stay open; writers wait for the
    /// transaction (the safety snapshot is taken inside it, so it is exactly the state the
    /// restore starts from; DuckDB locks nothing: a concurrent write to the same rows fails one
    /// of the two transactions). Only rows that differ are written: unchanged rows keep their
    /// triggers quiet and their dependants alone. Triggers of the live tables fire for the
    /// rows written, and the schema's foreign keys are enforced: a restore that would leave a
    /// row referring to a missing one fails and changes nothing, and `ON DELETE`/`ON UPDATE`
    /// actions apply to the rows a restore deletes or changes. Rows changed by triggers and
    /// foreign-key actions are not counted in the report.
    ///
    /// Tables may be named in any order (the report keeps it): they are written in the order
    /// of their foreign keys — deletes children first, then updates and inserts parents first
    /// — so keys the engine checks after every statement (PostgreSQL's `NOT DEFERRABLE`
    /// ones) hold at each step; deferrable keys are deferred to the commit. A delete still
    /// blocked by a row the restore rewrites (a child moved to a parent added since the
    /// snapshot) is retried after the other writes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no table or a table named twice; the errors of
    /// [`compare`](Self::compare); [`Error::SchemaDrift`] unless
    /// [`common_columns`](TableRestoreOptions::common_columns); [`Error::ForeignKeyCycle`]
    /// when the tables refer to each other in a cycle of keys checked after every statement
    /// (nothing changed); [`Error::TableRestoreFailed`] when a write or the commit fails
    /// (rolled back: the live data is unchanged, the safety snapshot kept); errors taking the
    /// safety snapshot (nothing changed).
    pub fn restore_tables<S: AsRef<str>>(
        &self,
        id: &str,
        tables: &[S],
        options: &TableRestoreOptions,
    ) -> Result<TableRestoreReport> {
        if tables.is_empty() {
            return Err(Error::invalid("tables", "name at least one table"));
        }
        for (i, t) in tables.iter().enumerate() {
            if tables[..i]
                .iter()
                .any(|u| u.as_ref().eq_ignore_ascii_case(t.as_ref()))
            {
                return Err(Error::invalid(
                    "tables",
                    format!("{:?} is named twice", t.as_ref()),
                ));
            }
        }
        let write = !options.dry_run;
        let mut o = self.open_tables(id, "table restore", true, write)?;
        o.session.begin(write)?;
        let mut plans = Vec::with_capacity(tables.len());
        for t in tables {
            let t = t.as_ref();
            plans.push(plan_table(
                &mut *o.session,
                &o.labels,
                t,
                options.key_for(t),
                options.common_columns,
                None,
                options.mode == RestoreMode::Replace,
            )?);
        }
        let changes = |plan: &TablePlan, inserted, updated, deleted| TableChanges {
            table: plan.live_table.clone(),
            mode: options.mode,
            key: plan.key.clone(),
            columns: plan.columns.clone(),
            drift: plan.drift.clone(),
            inserted,
            updated,
            deleted,
        };
        let order = write_order(&mut *o.session, &plans)?;
        let mut report = TableRestoreReport {
            snapshot_id: o.record.snapshot_id.clone(),
            dry_run: options.dry_run,
            safety_snapshot: None,
            tables: Vec::with_capacity(plans.len()),
        };
        if options.dry_run {
            for plan in &plans {
                let d = o.session.diff(plan, 0)?;
                let deleted = match options.mode {
                    RestoreMode::Replace => d.added,
                    RestoreMode::Merge => 0,
                };
                report
                    .tables
                    .push(changes(plan, d.removed(), d.changed, deleted));
            }
            o.session.rollback();
            return Ok(report);
        }
        report.safety_snapshot = self.table_safety_snapshot(&o.record, "restoring tables")?;
        let applied = write_and_commit(
            &mut *o.session,
            &plans,
            &order,
            options.mode,
            &report.snapshot_id,
            report.safety_snapshot.as_deref(),
        )?;
        for (plan, a) in plans.iter().zip(applied) {
            report
                .tables
                .push(changes(plan, a.inserted, a.updated, a.deleted));
        }
        tracing::info!(
            id = %report.snapshot_id,
            inserted = report.inserted(),
            updated = report.updated(),
            deleted = report.deleted(),
            "restored tables"
        );
        Ok(report)
    }

    /// Undoes the call a snapshot was taken for, with the default [`UndoOptions`].
    ///
    /// # Errors
    /// As [`undo_with`](Self::undo_with).
    pub fn undo(&self, id: &str) -> Result<UndoReport> {
        self.undo_with(id, &UndoOptions::new())
    }

    /// Puts back the rows of the snapshot's entity as they were in the snapshot — only those —
    /// and the rows of each declared [`Cascade`], by merge in one transaction after a
    /// safety snapshot (see the [module docs](crate::table)).
    ///
    /// # Errors
    /// [`Error::UndoRefused`] for a snapshot without entity id, whose call did not commit, or
    /// that holds no row of the entity; [`Error::UndoConflict`] when live rows changed since
    /// the snapshot and `force` is off (nothing changed); [`Error::NoKey`] when the entity
    /// table has no single-column primary key and no column is mapped; the errors of
    /// [`restore_tables`](Self::restore_tables).
    pub fn undo_with(&self, id: &str, options: &UndoOptions) -> Result<UndoReport> {
        let record = self.get(id)?;
        let refuse = |reason| Error::UndoRefused {
            id: record.snapshot_id.clone(),
            reason,
        };
        let (Some(entity_type), Some(entity_id)) =
            (record.entity_type.clone(), record.entity_id.clone())
        else {
            return Err(refuse(UndoRefusal::NoEntity));
        };
        if matches!(record.outcome, Outcome::Pending | Outcome::Failed) {
            return Err(refuse(UndoRefusal::NotCommitted(record.outcome)));
        }
        let mapping = options.mapping_for(&entity_type, &self.inner.entities);
        let write = !options.dry_run;
        let mut o = self.open_tables(id, "undo", true, write)?;
        o.session.begin(write)?;

        let targets = entity_targets(&mut o, &mapping, &entity_type)?;

        let mut plans = Vec::with_capacity(targets.len());
        let mut diffs = Vec::with_capacity(targets.len());
        let mut conflicts = Vec::new();
        let mut conflicts_total = 0;
        for (i, (table, column, key)) in targets.iter().enumerate() {
            let filter = RowFilter {
                column: column.clone(),
                value: entity_id.clone(),
            };
            let plan = plan_table(
                &mut *o.session,
                &o.labels,
                table,
                key.as_deref(),
                options.common_columns,
                Some(filter),
                false,
            )?;
            let d = o.session.diff(&plan, CONFLICT_SAMPLE)?;
            if i == 0 && d.snapshot_rows == 0 {
                return Err(refuse(UndoRefusal::NotInSnapshot {
                    table: plan.live_table.clone(),
                    column: column.clone(),
                    entity_id: entity_id.clone(),
                }));
            }
            conflicts_total += d.changed;
            conflicts.extend(
                d.sample
                    .iter()
                    .filter(|r| r.kind == DiffKind::Changed)
                    .map(|r| RowConflict {
                        table: plan.live_table.clone(),
                        columns: plan.columns.clone(),
                        key: r.key.clone(),
                        snapshot: r.snapshot.clone().unwrap_or_default(),
                        live: r.live.clone().unwrap_or_default(),
                        changed_columns: r.changed_columns.clone(),
                    }),
            );
            diffs.push(d);
            plans.push(plan);
        }
        let order = write_order(&mut *o.session, &plans)?;
        if conflicts_total > 0 && !options.force {
            return Err(Error::UndoConflict {
                id: record.snapshot_id,
                total: conflicts_total,
                conflicts,
            });
        }
        let changes = |plan: &TablePlan, inserted, updated| TableChanges {
            table: plan.live_table.clone(),
            mode: RestoreMode::Merge,
            key: plan.key.clone(),
            columns: plan.columns.clone(),
            drift: plan.drift.clone(),
            inserted,
            updated,
            deleted: 0,
        };
        let mut report = UndoReport {
            snapshot_id: record.snapshot_id.clone(),
            entity_type,
            entity_id,
            dry_run: options.dry_run,
            safety_snapshot: None,
            tables: Vec::with_capacity(plans.len()),
            conflicts,
            conflicts_total,
        };
        if options.dry_run {
            for (plan, d) in plans.iter().zip(&diffs) {
                report.tables.push(changes(plan, d.removed(), d.changed));
            }
            o.session.rollback();
            return Ok(report);
        }
        report.safety_snapshot = self.table_safety_snapshot(&record, "undoing")?;
        let applied = write_and_commit(
            &mut *o.session,
            &plans,
            &order,
            RestoreMode::Merge,
            &report.snapshot_id,
            report.safety_snapshot.as_deref(),
        )?;
        for (plan, a) in plans.iter().zip(applied) {
            report.tables.push(changes(plan, a.inserted, a.updated));
        }
        tracing::info!(
            id = %report.snapshot_id,
            entity = %report.entity_type,
            entity_id = %report.entity_id,
            inserted = report.inserted(),
            updated = report.updated(),
            "undone"
        );
        Ok(report)
    }

    /// Finds the record, checks it against the live source (when `live`), verifies its blob's
    /// checksum and opens an engine session on it: through the live source
    /// ([`Source::open_tables`](crate::Source::open_tables)), or for a preview through the
    /// registry's engine of the snapshot's kind.
    fn open_tables(
        &self,
        id: &str,
        operation: &'static str,
        live: bool,
        write: bool,
    ) -> Result<Opened> {
        let record = self.get(id)?;
        let source = self.source();
        if live && record.source_kind != source.kind() {
            return Err(Error::WrongEngine {
                id: record.snapshot_id,
                snapshot_kind: record.source_kind,
                target_kind: source.kind().to_string(),
            });
        }
        let engine = engine::require(&record.source_kind, operation)?;
        let image = self.verified_image(&record, None, CheckLevel::Header, false)?;
        if !engine.has_tables() {
            return Err(Error::Unsupported {
                operation,
                kind: record.source_kind,
            });
        }
        let session = if live {
            source
                .open_tables(&image.path, write)
                .map_err(|e| match e {
                    // The engine has sessions; this source does not hand one out.
                    Error::Unsupported { .. } => Error::invalid(
                        "source",
                        format!(
                            "the live source {} is of kind {:?} but opens no record-level \
                             session (a Source wrapping one must forward open_tables)",
                            source.path().display(),
                            record.source_kind
                        ),
                    ),
                    e => e,
                })?
                .0
        } else {
            engine.preview(&image.path)?
        };
        Ok(Opened {
            labels: Labels {
                snapshot_id: record.snapshot_id.clone(),
                live: source.path().display().to_string(),
            },
            record,
            session,
            _image: image,
        })
    }

    /// Takes the `pre_restore` snapshot of the live data (none on a disabled manager).
    fn table_safety_snapshot(&self, record: &SnapshotRecord, what: &str) -> Result<Option<String>> {
        if !self.is_enabled() {
            tracing::warn!(id = %record.snapshot_id, "no safety snapshot: the manager is disabled on this host");
            return Ok(None);
        }
        let request = SnapshotRequest {
            restore_of: Some(record.snapshot_id.clone()),
            ..SnapshotRequest::new(PRE_RESTORE).description(format!(
                "Safety copy before {what} from {}",
                record.snapshot_id
            ))
        };
        Ok(Some(self.take(request)?.snapshot_id))
    }
}

/// One table an undo writes: the table, the column holding the entity id, the key (`None`:
/// the primary key).
type Target = (String, String, Option<Vec<String>>);

/// An undo's tables: the entity's (which column holds the id, which key matches rows), then
/// each declared cascade's.
fn entity_targets(
    o: &mut Opened,
    mapping: &EntityMapping,
    entity_type: &str,
) -> Result<Vec<Target>> {
    let table = mapping
        .table
        .clone()
        .unwrap_or_else(|| entity_type.to_string());
    let live = o
        .session
        .shape(Side::Live, &table)?
        .ok_or_else(|| Error::TableMissing {
            table: table.clone(),
            location: o.labels.location(Side::Live),
        })?;
    let column = match &mapping.column {
        Some(c) => c.clone(),
        None => match live.primary_key().as_slice() {
            [one] => one.name.clone(),
            [] => {
                return Err(Error::NoKey {
                    table: table.clone(),
                    reason: format!(
                        "it has no primary key to hold the {entity_type} id; map the entity to a column"
                    ),
                });
            }
            many => {
                let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::NoKey {
                    table: table.clone(),
                    reason: format!(
                        "its primary key ({}) has several columns; map the entity to the one holding the id",
                        names.join(", ")
                    ),
                });
            }
        },
    };
    let key = mapping
        .key
        .clone()
        .or_else(|| live.primary_key().is_empty().then(|| vec![column.clone()]));
    let mut targets = vec![(table, column, key)];
    for c in &mapping.cascades {
        targets.push((c.table.clone(), c.column.clone(), c.key.clone()));
    }
    Ok(targets)
}
