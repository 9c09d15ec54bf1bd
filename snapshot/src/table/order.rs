//! The order in which a restore writes its tables: a table after the tables its foreign keys
//! refer to (parents first), so that an engine checking a foreign key at each statement finds
//! the rows a restored row refers to. Deletes run the other way round (children first).
//!
//! A foreign key the engine checks at commit (`DEFERRABLE` in PostgreSQL, every key in SQLite
//! under `defer_foreign_keys`) is followed when it can be and ignored when it closes a cycle.
//! A cycle of keys checked per statement has no valid order: [`Error::ForeignKeyCycle`].

use crate::error::{Error, Result};

/// A foreign key of a live table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    /// The constraint's name (or a description of it where the engine names none).
    pub(crate) name: String,
    /// The table holding the key (the child).
    pub(crate) table: String,
    /// The table it refers to (the parent), in the same schema.
    pub(crate) referenced: String,
    /// Whether the engine checks it at commit rather than after each statement.
    pub(crate) deferred: bool,
}

fn same(a: &str, b: &str, fold_case: bool) -> bool {
    a == b || (fold_case && a.eq_ignore_ascii_case(b))
}

/// The positions of `tables` in write order: every table after the tables of `tables` it
/// refers to, otherwise in the given order. Keys to tables not in `tables`, and a table's keys
/// to itself (checked after the whole statement), do not constrain the order.
///
/// # Errors
/// [`Error::ForeignKeyCycle`] when tables refer to each other in a cycle of keys that are all
/// checked per statement.
pub(crate) fn write_order(
    tables: &[String],
    keys: &[ForeignKey],
    fold_case: bool,
) -> Result<Vec<usize>> {
    let position = |name: &str| tables.iter().position(|t| same(t, name, fold_case));
    // (child, parent, key)
    let edges: Vec<(usize, usize, &ForeignKey)> = keys
        .iter()
        .filter_map(|k| Some((position(&k.table)?, position(&k.referenced)?, k)))
        .filter(|(c, p, _)| c != p)
        .collect();
    let mut placed = vec![false; tables.len()];
    let mut order = Vec::with_capacity(tables.len());
    let ready = |i: usize, placed: &[bool], strict: bool| {
        !placed[i]
            && edges
                .iter()
                .filter(|(c, p, k)| *c == i && !placed[*p] && (strict || !k.deferred))
                .count()
                == 0
    };
    while order.len() < tables.len() {
        let next = (0..tables.len())
            .find(|&i| ready(i, &placed, true))
            .or_else(|| (0..tables.len()).find(|&i| ready(i, &placed, false)));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => return Err(cycle(tables, &edges, &placed)),
        }
    }
    Ok(order)
}

/// The cycle of per-statement keys among the unplaced tables (each has an unplaced parent
/// through such a key): follow parents from the first until a table repeats.
fn cycle(tables: &[String], edges: &[(usize, usize, &ForeignKey)], placed: &[bool]) -> Error {
    let mut path: Vec<(usize, Option<&ForeignKey>)> = Vec::new();
    let mut at = placed.iter().position(|p| !p).unwrap_or(0);
    loop {
        if let Some(start) = path.iter().position(|(t, _)| *t == at) {
            let cycle = &path[start..];
            return Error::ForeignKeyCycle {
                tables: cycle.iter().map(|(t, _)| tables[*t].clone()).collect(),
                constraints: cycle
                    .iter()
                    .filter_map(|(_, k)| k.map(|k| k.name.clone()))
                    .collect(),
            };
        }
        let step = edges
            .iter()
            .find(|(c, p, k)| *c == at && !placed[*p] && !k.deferred);
        match step {
            Some((_, p, k)) => {
                path.push((at, Some(k)));
                at = *p;
            }
            None => {
                // Unreachable by construction (every unplaced table waits on such a key);
                // still a cycle worth naming rather than a panic.
                path.push((at, None));
                return Error::ForeignKeyCycle {
                    tables: path.iter().map(|(t, _)| tables[*t].clone()).collect(),
                    constraints: Vec::new(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(table: &str, referenced: &str, deferred: bool) -> ForeignKey {
        ForeignKey {
            name: format!("{table}_{referenced}_fkey"),
            table: table.into(),
            referenced: referenced.into(),
            deferred,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parents_come_first_and_the_given_order_breaks_ties() -> Result<()> {
        let t = names(&["item", "order", "customer", "log"]);
        let keys = [
            fk("item", "order", false),
            fk("order", "customer", false),
            fk("order", "order", false),
            fk("log", "elsewhere", false),
        ];
        assert_eq!(write_order(&t, &keys, false)?, [2, 1, 0, 3]);
        // Case folds only where the engine folds it.
        let keys = [fk("ITEM", "Order", false)];
        assert_eq!(write_order(&t, &keys, true)?, [1, 0, 2, 3]);
        assert_eq!(write_order(&t, &keys, false)?, [0, 1, 2, 3]);
        Ok(())
    }

    #[test]
    fn a_deferred_key_gives_way_in_a_cycle_and_a_strict_cycle_is_refused() -> Result<()> {
        let t = names(&["a", "b", "c"]);
        // a → b strictly, b → a deferred: b before a (c, free, first).
        let keys = [fk("a", "b", false), fk("b", "a", true)];
        assert_eq!(write_order(&t, &keys, false)?, [2, 1, 0]);
        // A cycle of deferred keys is broken in the given order; c still follows a.
        let keys = [fk("a", "b", true), fk("b", "a", true), fk("c", "a", false)];
        assert_eq!(write_order(&t, &keys, false)?, [0, 1, 2]);
        let keys = [
            fk("a", "b", false),
            fk("b", "c", false),
            fk("c", "b", false),
        ];
        match write_order(&t, &keys, false) {
            Err(Error::ForeignKeyCycle {
                tables,
                constraints,
            }) => {
                assert_eq!(tables, ["b", "c"]);
                assert_eq!(constraints, ["b_c_fkey", "c_b_fkey"]);
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
        Ok(())
    }
}
