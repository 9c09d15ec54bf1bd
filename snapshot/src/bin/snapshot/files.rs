//! `snapshot diff ID` on a directory: the files added, removed and changed since the snapshot,
//! with their sizes on each side.

use serde_json::json;

use crate::ctx::Ctx;
use crate::output::{self, Table, bytes, pairs};
use crate::{CliError, ExitStatus};
use snapshot::{Error, PathChange};

/// The path-by-path compare of a snapshot with the live data (a directory).
pub(crate) fn diff(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let m = ctx.db_manager(false)?;
    let d = match m.compare_paths(id) {
        Err(Error::Unsupported { kind, .. }) => {
            return Err(CliError::new(
                ExitStatus::Usage,
                "invalid_input",
                format!("{id} is a {kind} snapshot: compare one of its tables with --table TABLE"),
            ));
        }
        other => other?,
    };
    if ctx.json {
        return output::json(&json!(d));
    }
    pairs(&[
        ("snapshot", d.snapshot_id.clone()),
        (
            "differences",
            format!(
                "{} added, {} removed, {} changed, {} unchanged",
                d.added.len(),
                d.removed.len(),
                d.changed.len(),
                d.unchanged
            ),
        ),
    ]);
    if d.is_identical() {
        println!("no file differs");
        return Ok(());
    }
    println!();
    let size = |b: Option<u64>| b.map_or_else(|| "-".to_string(), bytes);
    let mut t = Table::new(&["CHANGE", "PATH", "SNAPSHOT", "LIVE"]);
    let rows = |t: &mut Table, what: &str, changes: &[PathChange]| {
        for c in changes {
            t.row(vec![
                what.to_string(),
                c.path.clone(),
                size(c.snapshot_bytes),
                size(c.live_bytes),
            ]);
        }
    };
    rows(&mut t, "added", &d.added);
    rows(&mut t, "removed", &d.removed);
    rows(&mut t, "changed", &d.changed);
    t.print();
    Ok(())
}
