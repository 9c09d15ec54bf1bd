//! Busy and locked databases: the retries within a [`BusyBudget`], then [`Error::Busy`].

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::ErrorCode;

use crate::engine::sqlite::error;
use crate::error::{Error, Result};
use crate::source::BusyBudget;

/// Whether SQLite reported the database busy or locked (worth another attempt).
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` until it stops reporting busy/locked, within `budget` (pauses doubling from 1 ms).
///
/// # Errors
/// [`Error::Busy`] naming `path` and `op` when the budget runs out; `f`'s other errors.
pub(crate) fn retry<T>(
    path: &Path,
    budget: BusyBudget,
    op: &'static str,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if is_busy(&e) && attempts < budget.attempts => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(budget.max_pause);
            }
            Err(e) if is_busy(&e) => {
                return Err(Error::Busy {
                    path: path.to_path_buf(),
                    attempts,
                    waited_ms: start.elapsed().as_millis() as u64,
                    detail: format!("{op}: {e}"),
                });
            }
            Err(e) => return Err(error(path, op, e)),
        }
    }
}
