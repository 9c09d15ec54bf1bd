//! The tables that hold lists: `[[schedule.jobs]]` (names unique, letters, digits and dashes;
//! each job's retention valid) and `[entities.<name>]` (where `undo` finds an entity's rows).

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use snapshot::Result;
use snapshot::table::{Cascade, EntityMapping};

use crate::config::origin::Origin;
use crate::config::raw::{JobConfig, RawEntity, RawKey};
use crate::invalid;

/// The jobs of `[[schedule.jobs]]`, checked; errors name the line.
pub(crate) fn jobs(
    raw: &[toml::Spanned<JobConfig>],
    at: &dyn Fn(Range<usize>) -> Origin,
) -> Result<Vec<JobConfig>> {
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    for j in raw {
        let job = j.get_ref();
        if job.name.trim().is_empty() || snapshot::id::sanitize(&job.name) != job.name {
            return Err(invalid(
                "config",
                format!(
                    "{}: job name {:?} must be letters, digits and dashes",
                    at(j.span()),
                    job.name
                ),
            ));
        }
        if !seen.insert(job.name.clone()) {
            return Err(invalid(
                "config",
                format!("{}: a second job is named {:?}", at(j.span()), job.name),
            ));
        }
        if let Some(r) = &job.retention {
            r.policy().map_err(|e| {
                invalid(
                    "config",
                    format!("{}: retention of job {:?}: {e}", at(j.span()), job.name),
                )
            })?;
        }
        jobs.push(job.clone());
    }
    Ok(jobs)
}

/// The library mappings of `[entities.<name>]`; errors name the line and the table.
pub(crate) fn mappings(
    raw: &BTreeMap<String, toml::Spanned<RawEntity>>,
    at: &dyn Fn(Range<usize>) -> Origin,
) -> Result<Vec<EntityMapping>> {
    raw.iter()
        .map(|(name, e)| {
            entity_mapping(name, e.get_ref()).map_err(|reason| {
                invalid(
                    "config",
                    format!("{}: [entities.{name}]: {reason}", at(e.span())),
                )
            })
        })
        .collect()
}

/// The library mapping of one `[entities.<name>]` table, or why it is not one.
fn entity_mapping(name: &str, e: &RawEntity) -> std::result::Result<EntityMapping, String> {
    let named = |what: &str, v: &str| {
        if v.trim().is_empty() {
            Err(format!("{what} must not be empty"))
        } else {
            Ok(())
        }
    };
    let key = |what: &str, k: &RawKey| {
        let cols = k.columns();
        if cols.is_empty() {
            return Err(format!("{what} must name at least one column"));
        }
        for c in &cols {
            named(what, c)?;
        }
        Ok(cols)
    };
    named("the entity name", name)?;
    let mut m = EntityMapping::new(name);
    if let Some(t) = &e.table {
        named("table", t)?;
        m = m.table(t.clone());
    }
    if let Some(c) = &e.column {
        named("column", c)?;
        m = m.column(c.clone());
    }
    if let Some(k) = &e.key {
        m = m.key(key("key", k)?);
    }
    for c in &e.cascade {
        named("cascade table", &c.table)?;
        named("cascade column", &c.column)?;
        let mut cascade = Cascade::new(c.table.clone(), c.column.clone());
        if let Some(k) = &c.key {
            cascade = cascade.key(key("cascade key", k)?);
        }
        m = m.cascade(cascade);
    }
    Ok(m)
}
