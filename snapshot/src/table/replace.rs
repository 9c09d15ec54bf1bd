//! The whole restore of a source whose live data is tables, not one file (a database server):
//! every table of the snapshot replaced, in one transaction, after the safety snapshot.
//!
//! [`TableReplacement`] is the [`Replacement`] such a source returns from
//! [`Source::begin_restore`](crate::Source::begin_restore). Planning happens when it is made —
//! each table on both sides, keys, drift, foreign-key order — and locks the live tables where
//! the engine does, so a table missing on the server or without a key fails the restore before
//! anything changed, and the safety snapshot taken next is the state the writes start from.
//! Tables of the live database that the snapshot does not hold are left alone.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::source::{Replacement, RestoreContext, Source};
use crate::table::plan::{Labels, plan_table, write_and_commit, write_order};
use crate::table::restore::RestoreMode;
use crate::table::schema::TablePlan;
use crate::table::session::Session;

/// Replaces every table of a snapshot in one transaction (see the module docs).
pub(crate) struct TableReplacement<'a> {
    source: &'a dyn Source,
    session: Box<dyn Session>,
    target: PathBuf,
    plans: Vec<TablePlan>,
    order: Vec<usize>,
}

impl<'a> TableReplacement<'a> {
    /// Opens a write transaction on `session` (a session of `source` on the image) and plans
    /// `tables` (the order the engine gives: tables referred to first) in
    /// [`Replace`](RestoreMode::Replace) mode.
    ///
    /// # Errors
    /// The errors of planning: [`Error::TableMissing`](crate::Error::TableMissing),
    /// [`Error::NoKey`](crate::Error::NoKey), [`Error::SchemaDrift`](crate::Error::SchemaDrift),
    /// [`Error::KeyCollision`](crate::Error::KeyCollision),
    /// [`Error::ForeignKeyCycle`](crate::Error::ForeignKeyCycle); engine errors.
    pub(crate) fn new(
        source: &'a dyn Source,
        mut session: Box<dyn Session>,
        snapshot_id: &str,
        tables: &[String],
    ) -> Result<Self> {
        let labels = Labels {
            snapshot_id: snapshot_id.to_string(),
            live: source.path().display().to_string(),
        };
        let mut plans = Vec::with_capacity(tables.len());
        if !tables.is_empty() {
            session.begin(true)?;
            for t in tables {
                plans.push(plan_table(
                    &mut *session,
                    &labels,
                    t,
                    None,
                    false,
                    None,
                    true,
                )?);
            }
        }
        let order = write_order(&mut *session, &plans)?;
        Ok(TableReplacement {
            source,
            session,
            target: source.path().to_path_buf(),
            plans,
            order,
        })
    }
}

impl Drop for TableReplacement<'_> {
    fn drop(&mut self) {
        self.session.rollback();
    }
}

const NOTHING: &str = "the snapshot holds no table: nothing to restore";

impl Replacement for TableReplacement<'_> {
    fn target(&self) -> &Path {
        &self.target
    }

    fn has_present(&self) -> bool {
        !self.plans.is_empty()
    }

    fn capture_present(&mut self, dest: &Path) -> Result<()> {
        // Another connection of the source; the tables are locked against writers by now.
        self.source.capture(dest)
    }

    fn plan(&mut self) -> Result<Vec<String>> {
        if self.plans.is_empty() {
            return Ok(vec![NOTHING.into()]);
        }
        let mut steps = Vec::with_capacity(self.plans.len());
        for plan in &self.plans {
            let d = self.session.diff(plan, 0)?;
            steps.push(format!(
                "would replace table {:?}: {} inserted, {} updated, {} deleted",
                plan.live_table,
                d.removed(),
                d.changed,
                d.added
            ));
        }
        self.session.rollback();
        Ok(steps)
    }

    fn apply(&mut self, context: &RestoreContext) -> Result<Vec<String>> {
        if self.plans.is_empty() {
            return Ok(vec![NOTHING.into()]);
        }
        let applied = write_and_commit(
            &mut *self.session,
            &self.plans,
            &self.order,
            RestoreMode::Replace,
            &context.snapshot_id,
            context.safety_snapshot.as_deref(),
        )?;
        let mut steps: Vec<String> = self
            .plans
            .iter()
            .zip(applied)
            .map(|(plan, a)| {
                format!(
                    "replaced table {:?}: {} inserted, {} updated, {} deleted",
                    plan.live_table, a.inserted, a.updated, a.deleted
                )
            })
            .collect();
        steps.push(format!(
            "committed the restore of {} table(s)",
            self.plans.len()
        ));
        Ok(steps)
    }

    fn check(&mut self) -> Result<Vec<String>> {
        // The transaction committed as a whole, its constraints checked by the server.
        Ok(Vec::new())
    }

    fn rollback(&mut self) -> bool {
        false
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
