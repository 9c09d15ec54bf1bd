//! Why an undo was refused, and the live rows that stop it: the report types that
//! [`Error::UndoRefused`](crate::Error::UndoRefused) and
//! [`Error::UndoConflict`](crate::Error::UndoConflict) carry.

use std::fmt;

use crate::record::Outcome;
use crate::table::value::{Value, show_key};

/// Why an undo was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UndoRefusal {
    /// The snapshot records no entity type and id (a manual or safety snapshot).
    NoEntity,
    /// The call the snapshot was taken for did not commit (it is pending, or it failed).
    NotCommitted(Outcome),
    /// The snapshot holds no row of the entity: there is nothing to put back.
    NotInSnapshot {
        /// The table looked in.
        table: String,
        /// The column compared with the id.
        column: String,
        /// The entity id.
        entity_id: String,
    },
}

impl fmt::Display for UndoRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UndoRefusal::NoEntity => {
                f.write_str("the snapshot names no entity id; restore its tables instead")
            }
            UndoRefusal::NotCommitted(o) => {
                let what = match o {
                    Outcome::Pending => "has not finished (or its process died)",
                    Outcome::Failed => "failed, so its changes are not in the live data",
                    _ => "did not commit",
                };
                write!(
                    f,
                    "the call it was taken for {what}; restore its tables instead"
                )
            }
            UndoRefusal::NotInSnapshot {
                table,
                column,
                entity_id,
            } => write!(
                f,
                "table {table:?} of the snapshot has no row with {column:?} = {entity_id:?}"
            ),
        }
    }
}

/// A live row that an undo would overwrite: it changed since the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct RowConflict {
    /// The table.
    pub table: String,
    /// The columns of the rows below.
    pub columns: Vec<String>,
    /// The row's key values.
    pub key: Vec<Value>,
    /// The row as it is in the snapshot.
    pub snapshot: Vec<Value>,
    /// The row as it is now.
    pub live: Vec<Value>,
    /// The columns whose values differ.
    pub changed_columns: Vec<String>,
}

impl fmt::Display for RowConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} key {}: {} changed",
            self.table,
            show_key(&self.key),
            self.changed_columns.join(", ")
        )
    }
}

/// The conflicts of an [`Error::UndoConflict`](crate::Error::UndoConflict), for its message.
pub(crate) fn conflict_summary(conflicts: &[RowConflict]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = conflicts
        .iter()
        .take(SHOWN)
        .map(|c| c.to_string())
        .collect();
    if conflicts.len() > SHOWN {
        parts.push("…".into());
    }
    parts.join("; ")
}
