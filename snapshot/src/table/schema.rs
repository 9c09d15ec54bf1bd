//! Table shapes on both sides of a comparison, the schema drift between them, and the plan that
//! says which columns are compared and written and which key matches rows.
//!
//! Everything here is engine-neutral and pure: an engine reports each side's [`Column`]s, and
//! [`plan`] decides.

use crate::error::{Error, Result};
use crate::table::drift::{Column, Retyped, SchemaDrift};

/// One side's table as an engine found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableShape {
    /// The table's name as the schema spells it.
    pub(crate) name: String,
    /// Its columns, in table order.
    pub(crate) columns: Vec<Column>,
    /// Whether the engine guarantees that the primary key is unique and never NULL (so a key
    /// equal to it needs no duplicate check).
    pub(crate) unique_pk: bool,
}

impl TableShape {
    /// The primary key columns, in key order.
    pub(crate) fn primary_key(&self) -> Vec<&Column> {
        let mut pk: Vec<&Column> = self.columns.iter().filter(|c| c.primary_key > 0).collect();
        pk.sort_by_key(|c| c.primary_key);
        pk
    }

    /// The column called `name`, as the schema spells it.
    pub(crate) fn find(&self, name: &str, fold_case: bool) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name).or_else(|| {
            fold_case
                .then(|| {
                    self.columns
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(name))
                })
                .flatten()
        })
    }
}

/// Rows whose `column` equals an entity id (the engine coerces the text as the column would:
/// a numeric column compares numerically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RowFilter {
    /// The column, as the live schema spells it (present on both sides).
    pub(crate) column: String,
    /// The entity id.
    pub(crate) value: String,
}

/// What an engine compares and writes for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TablePlan {
    /// The table as the snapshot spells it.
    pub(crate) snapshot_table: String,
    /// The table as the live schema spells it.
    pub(crate) live_table: String,
    /// The compared and written columns: the common ones, in live order, live spelling.
    pub(crate) columns: Vec<String>,
    /// Per column: whether its declared type is the same on both sides (values can then be
    /// compared by storage type too).
    pub(crate) same_type: Vec<bool>,
    /// The key that matches rows (a subset of `columns`).
    pub(crate) key: Vec<String>,
    /// Positions of the key columns in `columns`.
    pub(crate) key_index: Vec<usize>,
    /// Only rows matching this, when set.
    pub(crate) filter: Option<RowFilter>,
    /// How the columns changed since the snapshot.
    pub(crate) drift: SchemaDrift,
}

fn same_type(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Compares the two sides and picks the key: `declared` when given, else the live table's
/// primary key; with `keyless`, a table without one gets an empty key (a whole-table replace:
/// every live row deleted, every snapshot row inserted). `table` is the name the caller used
/// (for messages).
///
/// # Errors
/// [`Error::NoKey`] when there is no key or a key column is missing on one side;
/// [`Error::InvalidInput`] for an empty or repeated declared key.
pub(crate) fn plan(
    table: &str,
    snapshot: &TableShape,
    live: &TableShape,
    declared: Option<&[String]>,
    fold_case: bool,
    keyless: bool,
) -> Result<TablePlan> {
    let mut drift = SchemaDrift::default();
    let mut columns = Vec::new();
    let mut same = Vec::new();
    for c in &live.columns {
        match snapshot.find(&c.name, fold_case) {
            Some(s) => {
                columns.push(c.name.clone());
                let same_t = same_type(&s.declared_type, &c.declared_type);
                if !same_t {
                    drift.retyped.push(Retyped {
                        name: c.name.clone(),
                        snapshot_type: s.declared_type.clone(),
                        live_type: c.declared_type.clone(),
                    });
                }
                same.push(same_t);
            }
            None => drift.added.push(c.clone()),
        }
    }
    for s in &snapshot.columns {
        if live.find(&s.name, fold_case).is_none() {
            drift.removed.push(s.clone());
        }
    }

    let no_key = |reason: String| Error::NoKey {
        table: table.to_string(),
        reason,
    };
    let key: Vec<String> = match declared {
        Some(names) => {
            if names.is_empty() {
                return Err(Error::invalid(
                    "key",
                    format!("the declared key of table {table:?} has no column"),
                ));
            }
            let mut key: Vec<String> = Vec::with_capacity(names.len());
            for n in names {
                let c = live.find(n, fold_case).ok_or_else(|| {
                    no_key(format!(
                        "declared key column {n:?} is not a column of the live table"
                    ))
                })?;
                if snapshot.find(n, fold_case).is_none() {
                    return Err(no_key(format!(
                        "declared key column {n:?} is not a column of the snapshot's table"
                    )));
                }
                if key.contains(&c.name) {
                    return Err(Error::invalid(
                        "key",
                        format!("column {n:?} appears twice in the key of table {table:?}"),
                    ));
                }
                key.push(c.name.clone());
            }
            key
        }
        None => {
            let pk = live.primary_key();
            if pk.is_empty() && !keyless {
                return Err(no_key(
                    "it has no primary key; declare the key columns that identify a row".into(),
                ));
            }
            for c in &pk {
                if snapshot.find(&c.name, fold_case).is_none() {
                    return Err(no_key(format!(
                        "primary key column {:?} of the live table is not in the snapshot's table; declare a key",
                        c.name
                    )));
                }
            }
            pk.into_iter().map(|c| c.name.clone()).collect()
        }
    };
    let key_index = key
        .iter()
        .map(|k| columns.iter().position(|c| c == k).unwrap_or(0))
        .collect();
    Ok(TablePlan {
        snapshot_table: snapshot.name.clone(),
        live_table: live.name.clone(),
        columns,
        same_type: same,
        key,
        key_index,
        filter: None,
        drift,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, pk: u32) -> Column {
        Column {
            name: name.into(),
            declared_type: ty.into(),
            not_null: false,
            primary_key: pk,
        }
    }

    fn shape(cols: Vec<Column>) -> TableShape {
        TableShape {
            name: "t".into(),
            columns: cols,
            unique_pk: true,
        }
    }

    #[test]
    fn no_drift_keys_on_the_live_primary_key_in_key_order() -> Result<()> {
        let cols = vec![col("b", "TEXT", 2), col("a", "INTEGER", 1), col("c", "", 0)];
        let p = plan("t", &shape(cols.clone()), &shape(cols), None, true, false)?;
        assert!(p.drift.is_empty());
        assert_eq!(p.columns, ["b", "a", "c"]);
        assert_eq!(p.key, ["a", "b"]);
        assert_eq!(p.key_index, [1, 0]);
        assert_eq!(p.same_type, [true, true, true]);
        Ok(())
    }

    #[test]
    fn drift_lists_added_removed_and_retyped_columns() -> Result<()> {
        let snap = shape(vec![
            col("id", "INTEGER", 1),
            col("gone", "TEXT", 0),
            col("n", "TEXT", 0),
        ]);
        let live = shape(vec![
            col("ID", "integer", 1),
            col("n", "INTEGER", 0),
            col("new", "REAL", 0),
        ]);
        let p = plan("t", &snap, &live, None, true, false)?;
        assert_eq!(p.columns, ["ID", "n"]);
        assert_eq!(p.same_type, [true, false]);
        assert_eq!(p.drift.added, [col("new", "REAL", 0)]);
        assert_eq!(p.drift.removed, [col("gone", "TEXT", 0)]);
        assert_eq!(p.drift.retyped.len(), 1);
        assert_eq!(
            p.drift.to_string(),
            "column(s) added: \"new\" REAL; column(s) removed: \"gone\" TEXT; column(s) retyped: \"n\" TEXT → INTEGER"
        );
        // A case-sensitive engine sees two different columns.
        let p = plan("t", &snap, &live, Some(&["n".into()]), false, false)?;
        assert_eq!(p.columns, ["n"]);
        Ok(())
    }

    #[test]
    fn keys_must_exist_on_both_sides() {
        let snap = shape(vec![col("a", "", 0), col("b", "", 0)]);
        let live = shape(vec![col("a", "", 0), col("c", "", 0)]);
        let e = plan("t", &snap, &live, None, true, false);
        assert!(matches!(e, Err(Error::NoKey { reason, .. }) if reason.contains("no primary key")));
        let e = plan("t", &snap, &live, Some(&["b".into()]), true, false);
        assert!(matches!(e, Err(Error::NoKey { reason, .. }) if reason.contains("live table")));
        let e = plan("t", &snap, &live, Some(&["c".into()]), true, false);
        assert!(matches!(e, Err(Error::NoKey { reason, .. }) if reason.contains("snapshot")));
        let e = plan("t", &snap, &live, Some(&[]), true, false);
        assert!(matches!(e, Err(Error::InvalidInput { .. })));
        let e = plan(
            "t",
            &snap,
            &live,
            Some(&["a".into(), "A".into()]),
            true,
            false,
        );
        assert!(matches!(e, Err(Error::InvalidInput { .. })));
        let live_pk = shape(vec![col("c", "", 1), col("a", "", 0)]);
        let e = plan("t", &snap, &live_pk, None, true, false);
        assert!(matches!(e, Err(Error::NoKey { reason, .. }) if reason.contains("\"c\"")));
    }
}
