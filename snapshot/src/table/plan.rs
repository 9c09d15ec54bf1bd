//! The steps every record-level write shares, on one engine session: resolve a table on both
//! sides ([`plan_table`]), order the tables by their foreign keys ([`write_order`]) and write
//! them ([`write_tables`]). Used by the manager's table workflows and by a source's
//! table-by-table whole restore ([`TableReplacement`](crate::table::TableReplacement)).

use crate::error::{Error, Result};
use crate::table::order;
use crate::table::restore::RestoreMode;
use crate::table::schema::{self, RowFilter, TablePlan, TableShape};
use crate::table::session::{Applied, Session, Side};
use crate::table::value;

/// How errors name the two sides of a session.
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    /// The snapshot's id.
    pub(crate) snapshot_id: String,
    /// The live data's location, as people read it.
    pub(crate) live: String,
}

impl Labels {
    pub(crate) fn location(&self, side: Side) -> String {
        match side {
            Side::Snapshot => format!("snapshot {}", self.snapshot_id),
            Side::Live => format!("the live database {}", self.live),
        }
    }
}

/// Resolves one table on both sides: presence, key, drift policy, the row filter's column and
/// key uniqueness. With `keyless`, a table without a primary key (and no declared key) is
/// planned with an empty key: replaced whole.
///
/// # Errors
/// [`Error::TableMissing`] (either side), [`Error::NoKey`], [`Error::SchemaDrift`] unless
/// `allow_drift`, [`Error::KeyCollision`]; engine errors.
pub(crate) fn plan_table(
    session: &mut dyn Session,
    labels: &Labels,
    table: &str,
    key: Option<&[String]>,
    allow_drift: bool,
    filter: Option<RowFilter>,
    keyless: bool,
) -> Result<TablePlan> {
    let shape = |session: &mut dyn Session, side| -> Result<TableShape> {
        session
            .shape(side, table)?
            .ok_or_else(|| Error::TableMissing {
                table: table.to_string(),
                location: labels.location(side),
            })
    };
    let snap = shape(session, Side::Snapshot)?;
    let live = shape(session, Side::Live)?;
    let fold = session.fold_case();
    let mut plan = schema::plan(table, &snap, &live, key, fold, keyless && filter.is_none())?;
    if !plan.drift.is_empty() && !allow_drift {
        return Err(Error::SchemaDrift {
            id: labels.snapshot_id.clone(),
            table: plan.live_table,
            drift: plan.drift,
        });
    }
    if let Some(f) = filter {
        let column = live
            .find(&f.column, fold)
            .filter(|_| snap.find(&f.column, fold).is_some())
            .ok_or_else(|| Error::NoKey {
                table: table.to_string(),
                reason: format!(
                    "the entity column {:?} is not a column of both the snapshot's and the live table",
                    f.column
                ),
            })?;
        plan.filter = Some(RowFilter {
            column: column.name.clone(),
            value: f.value,
        });
    }
    for (side, shape) in [(Side::Snapshot, &snap), (Side::Live, &live)] {
        if plan.key.is_empty() {
            break;
        }
        if let Some(dup) = session.duplicate_key(side, shape, &plan.key)? {
            return Err(Error::KeyCollision {
                table: plan.live_table.clone(),
                location: labels.location(side),
                key_columns: plan.key.join(", "),
                key: value::show_key(&dup),
            });
        }
    }
    Ok(plan)
}

/// The order in which `plans` are written (see [`order`]): positions, parents first.
///
/// # Errors
/// [`Error::ForeignKeyCycle`]; engine errors.
pub(crate) fn write_order(session: &mut dyn Session, plans: &[TablePlan]) -> Result<Vec<usize>> {
    let names: Vec<String> = plans.iter().map(|p| p.live_table.clone()).collect();
    let mut keys = Vec::new();
    for name in &names {
        keys.extend(session.foreign_keys(name)?);
    }
    order::write_order(&names, &keys, session.fold_case())
}

/// Writes `plans` in the open transaction, in `order` (parents first): in
/// [`Replace`](RestoreMode::Replace) mode the deletes first, children before parents — a delete
/// that a foreign key checked per statement still blocks is retried at the end, once the
/// referring rows are rewritten — then the updates and inserts, parents before children. What
/// was written comes back per plan, in the order of `plans`; a failure names its table.
pub(crate) fn write_tables(
    session: &mut dyn Session,
    plans: &[TablePlan],
    order: &[usize],
    mode: RestoreMode,
) -> std::result::Result<Vec<Applied>, Box<(String, Error)>> {
    let fail = |i: usize| {
        let table = plans[i].live_table.clone();
        move |e| Box::new((table, e))
    };
    let mut applied = vec![Applied::default(); plans.len()];
    let mut blocked = Vec::new();
    if mode == RestoreMode::Replace {
        for &i in order.iter().rev() {
            match session.delete_added(&plans[i], true).map_err(fail(i))? {
                Some(n) => applied[i].deleted = n,
                None => blocked.push(i),
            }
        }
    }
    for &i in order {
        let a = session.upsert(&plans[i]).map_err(fail(i))?;
        applied[i].updated = a.updated;
        applied[i].inserted = a.inserted;
    }
    for i in blocked {
        let n = session.delete_added(&plans[i], false).map_err(fail(i))?;
        applied[i].deleted = n.unwrap_or(0);
    }
    Ok(applied)
}

/// Writes `plans` and commits, or rolls back and says which table failed:
/// [`Error::TableRestoreFailed`] naming the snapshot and its `safety_snapshot`.
///
/// # Errors
/// [`Error::TableRestoreFailed`] (rolled back: the live data is unchanged).
pub(crate) fn write_and_commit(
    session: &mut dyn Session,
    plans: &[TablePlan],
    order: &[usize],
    mode: RestoreMode,
    snapshot_id: &str,
    safety_snapshot: Option<&str>,
) -> Result<Vec<Applied>> {
    let failed = |table, e: &Error| Error::TableRestoreFailed {
        id: snapshot_id.to_string(),
        table,
        detail: detail(e),
        safety_snapshot: safety_snapshot.map(str::to_string),
    };
    let applied = match write_tables(session, plans, order, mode) {
        Ok(a) => a,
        Err(f) => {
            let (table, e) = *f;
            session.rollback();
            return Err(failed(Some(table), &e));
        }
    };
    if let Err(e) = session.commit() {
        session.rollback();
        return Err(failed(None, &e));
    }
    Ok(applied)
}

/// The message of an engine error inside a transaction.
fn detail(e: &Error) -> String {
    match e {
        Error::Engine { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}
