//! Record-level commands: `preview`, `diff`, `restore-table` and `undo` (see [`snapshot::table`]).
//!
//! JSON values of rows: `null`, numbers, strings; a blob is `{"base64": "…"}` and a float that
//! is not finite the string `NaN`, `inf` or `-inf`. Rows and keys are objects by column name.

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use crate::ctx::Ctx;
use crate::output::{self, Table, pairs, time};
use crate::{CliError, DiffArgs, ExitStatus, ModeArg, PreviewArgs, RestoreTableArgs, UndoArgs};
use snapshot::Error;
use snapshot::SnapshotManager;
use snapshot::table::{
    Column, CompareOptions, DiffKind, RestoreMode, RowConflict, SchemaDrift, TableChanges,
    TableDiff, TableRestoreOptions, TableRestoreReport, UndoOptions, UndoReport, Value,
};

type CliResult = Result<(), CliError>;

/// Characters of a text cell shown in a human table.
const CELL_CHARS: usize = 40;

fn usage(kind: &'static str, message: impl Into<String>) -> CliError {
    CliError::new(ExitStatus::Usage, kind, message)
}

/// A value as JSON (see the module docs).
fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) if f.is_finite() => json!(f),
        Value::Real(f) if f.is_nan() => json!("NaN"),
        Value::Real(f) if *f > 0.0 => json!("inf"),
        Value::Real(_) => json!("-inf"),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        other => json!(other.to_string()),
    }
}

/// A row (or a key) as an object by column name.
fn row_json(columns: &[String], values: &[Value]) -> Json {
    let mut m = Map::new();
    for (c, v) in columns.iter().zip(values) {
        m.insert(c.clone(), value_json(v));
    }
    Json::Object(m)
}

fn column_json(c: &Column) -> Json {
    json!({
        "name": c.name, "type": c.declared_type, "not_null": c.not_null,
        "primary_key": c.primary_key,
    })
}

fn drift_json(d: &SchemaDrift) -> Json {
    json!({
        "none": d.is_empty(),
        "added": d.added.iter().map(column_json).collect::<Vec<_>>(),
        "removed": d.removed.iter().map(column_json).collect::<Vec<_>>(),
        "retyped": d.retyped.iter().map(|r| json!({
            "name": r.name, "snapshot_type": r.snapshot_type, "live_type": r.live_type,
        })).collect::<Vec<_>>(),
        "summary": d.to_string(),
    })
}

fn mode_name(m: RestoreMode) -> &'static str {
    match m {
        RestoreMode::Replace => "replace",
        RestoreMode::Merge => "merge",
    }
}

fn changes_json(t: &TableChanges) -> Json {
    json!({
        "table": t.table, "mode": mode_name(t.mode), "key": t.key, "columns": t.columns,
        "drift": drift_json(&t.drift),
        "inserted": t.inserted, "updated": t.updated, "deleted": t.deleted,
    })
}

fn conflict_json(c: &RowConflict) -> Json {
    // The conflict carries the key's values (in key order), not its column names.
    json!({
        "table": c.table,
        "key": c.key.iter().map(value_json).collect::<Vec<_>>(),
        "changed_columns": c.changed_columns,
        "snapshot": row_json(&c.columns, &c.snapshot),
        "live": row_json(&c.columns, &c.live),
    })
}

/// A value in a human table: text as is (cut, control characters escaped), others as
/// literals (`NULL`, `42`, `x'00ff'`).
fn cell(v: &Value) -> String {
    match v {
        Value::Text(s) => {
            let mut out: String = s
                .chars()
                .take(CELL_CHARS)
                .flat_map(|c| {
                    if c.is_control() {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect();
            if s.chars().count() > CELL_CHARS {
                out.push('…');
            }
            out
        }
        other => {
            let t = other.to_string();
            if t.chars().count() > CELL_CHARS {
                t.chars().take(CELL_CHARS).collect::<String>() + "…"
            } else {
                t
            }
        }
    }
}

/// A key for humans: `42` or `(1, 'a')`.
fn show_key(key: &[Value]) -> String {
    match key {
        [one] => one.to_string(),
        many => format!(
            "({})",
            many.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `col=value, …` of a row, for humans.
fn show_row(columns: &[String], values: &[Value]) -> String {
    columns
        .iter()
        .zip(values)
        .map(|(c, v)| format!("{c}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `col: old → new; …` of a changed row, for humans.
fn show_changes(columns: &[String], snap: &[Value], live: &[Value], changed: &[String]) -> String {
    changed
        .iter()
        .filter_map(|name| {
            let i = columns.iter().position(|c| c == name)?;
            Some(format!("{name}: {} → {}", snap.get(i)?, live.get(i)?))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The manager of the configured database (a file or a PostgreSQL server), for a command that
/// reads or writes the live data.
fn live_manager(ctx: &Ctx) -> Result<SnapshotManager, CliError> {
    ctx.database_display()?;
    Ok(ctx.db_manager(false)?)
}

/// Runs `f` under a spinner (on a terminal).
fn spin<T>(ctx: &Ctx, message: String, f: impl FnOnce() -> T) -> T {
    let s = ctx.spinner(message);
    let r = f();
    if let Some(s) = s {
        s.finish_and_clear();
    }
    r
}

pub(crate) fn preview(ctx: &Ctx, a: PreviewArgs) -> CliResult {
    let m = ctx.db_manager(false)?;
    let record = m.get(&a.id)?;
    let Some(table) = &a.table else {
        let tables = m.snapshot_tables(&record.snapshot_id)?;
        if ctx.json {
            return output::json(&json!({
                "snapshot_id": record.snapshot_id, "tables": tables,
            }));
        }
        if tables.is_empty() {
            println!("{} holds no tables", record.snapshot_id);
        }
        for t in &tables {
            println!("{t}");
        }
        return Ok(());
    };
    let page = spin(ctx, format!("reading {table} of {}", a.id), || {
        m.preview(&record.snapshot_id, table, a.offset, a.limit)
    })?;
    let names: Vec<String> = page.columns.iter().map(|c| c.name.clone()).collect();
    let end = page.offset + page.rows.len() as u64;
    let next = (end < page.total_rows).then_some(end);
    if ctx.json {
        return output::json(&json!({
            "snapshot_id": page.record.snapshot_id,
            "datetime": page.record.datetime,
            "table": page.table,
            "columns": page.columns.iter().map(column_json).collect::<Vec<_>>(),
            "offset": page.offset,
            "limit": a.limit,
            "total_rows": page.total_rows,
            "next_offset": next,
            "rows": page.rows.iter().map(|r| row_json(&names, r)).collect::<Vec<_>>(),
        }));
    }
    println!(
        "snapshot {} ({}), table {:?}",
        page.record.snapshot_id,
        time(page.record.datetime),
        page.table
    );
    let header: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    for r in &page.rows {
        t.row(r.iter().map(cell).collect());
    }
    if !t.is_empty() {
        t.print();
    }
    if page.rows.is_empty() {
        println!(
            "no rows at offset {} ({} row(s) in the table)",
            page.offset, page.total_rows
        );
    } else {
        print!("rows {}–{end} of {}", page.offset + 1, page.total_rows);
        match next {
            Some(n) => println!(" (next: --offset {n})"),
            None => println!(),
        }
    }
    Ok(())
}

fn diff_json(d: &TableDiff) -> Json {
    json!({
        "snapshot_id": d.snapshot_id,
        "table": d.table,
        "key": d.key,
        "columns": d.columns,
        "identical": d.is_identical(),
        "snapshot_rows": d.snapshot_rows,
        "live_rows": d.live_rows,
        "added": d.added,
        "removed": d.removed,
        "changed": d.changed,
        "unchanged": d.unchanged,
        "changed_columns": d.changed_columns.iter()
            .map(|(c, n)| json!({ "column": c, "rows": n }))
            .collect::<Vec<_>>(),
        "drift": drift_json(&d.drift),
        "sample": d.sample.iter().map(|r| json!({
            "kind": kind_name(r.kind),
            "key": row_json(&d.key, &r.key),
            "snapshot": r.snapshot.as_ref().map(|v| row_json(&d.columns, v)),
            "live": r.live.as_ref().map(|v| row_json(&d.columns, v)),
            "changed_columns": r.changed_columns,
        })).collect::<Vec<_>>(),
    })
}

fn kind_name(k: DiffKind) -> &'static str {
    match k {
        DiffKind::Added => "added",
        DiffKind::Removed => "removed",
        DiffKind::Changed => "changed",
    }
}

pub(crate) fn diff(ctx: &Ctx, a: DiffArgs) -> CliResult {
    let Some(table) = &a.table else {
        return crate::files::diff(ctx, &a.id);
    };
    let m = live_manager(ctx)?;
    let mut options = CompareOptions::new().sample(a.sample);
    if let Some(k) = &a.key {
        options = options.key(k.iter().map(|c| c.trim().to_string()));
    }
    let d = spin(ctx, format!("comparing {table} of {}", a.id), || {
        m.compare(&a.id, table, &options)
    })?;
    if ctx.json {
        return output::json(&diff_json(&d));
    }
    pairs(&[
        ("snapshot", d.snapshot_id.clone()),
        ("table", format!("{:?} (key {})", d.table, d.key.join(", "))),
        (
            "rows",
            format!("{} in the snapshot, {} live", d.snapshot_rows, d.live_rows),
        ),
        (
            "differences",
            format!(
                "{} added, {} removed, {} changed, {} unchanged",
                d.added, d.removed, d.changed, d.unchanged
            ),
        ),
        (
            "changed columns",
            if d.changed_columns.is_empty() {
                "-".into()
            } else {
                d.changed_columns
                    .iter()
                    .map(|(c, n)| format!("{c} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("schema", d.drift.to_string()),
    ]);
    if d.is_identical() {
        println!("no difference in the compared columns");
        return Ok(());
    }
    if !d.sample.is_empty() {
        println!();
        let mut t = Table::new(&["CHANGE", "KEY", "ROW"]);
        for r in &d.sample {
            let what = match (r.kind, &r.snapshot, &r.live) {
                (DiffKind::Changed, Some(s), Some(l)) => {
                    show_changes(&d.columns, s, l, &r.changed_columns)
                }
                (_, Some(s), None) => show_row(&d.columns, s),
                (_, _, Some(l)) => show_row(&d.columns, l),
                _ => String::new(),
            };
            t.row(vec![kind_name(r.kind).into(), show_key(&r.key), what]);
        }
        t.print();
        let shown = d.sample.len() as u64;
        let total = d.added + d.removed + d.changed;
        if shown < total {
            println!("({shown} of {total} differing rows shown; --sample N shows more)");
        }
    }
    Ok(())
}

/// Parses the `--key` values of `restore-table` into the options.
fn with_keys(
    mut options: TableRestoreOptions,
    keys: &[String],
    tables: &[String],
) -> Result<TableRestoreOptions, CliError> {
    for k in keys {
        let (table, cols) = match k.split_once('=') {
            Some((t, c)) => (t.trim().to_string(), c),
            None if tables.len() == 1 => (tables[0].clone(), k.as_str()),
            None => {
                return Err(usage(
                    "invalid_input",
                    format!("--key {k:?}: with several tables, say which: --key TABLE=COL[,COL…]"),
                ));
            }
        };
        if !tables.contains(&table) {
            return Err(usage(
                "invalid_input",
                format!("--key {k:?}: {table:?} is not one of the --table tables"),
            ));
        }
        let cols: Vec<String> = cols
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if cols.is_empty() {
            return Err(usage(
                "invalid_input",
                format!("--key {k:?} names no column"),
            ));
        }
        options = options.key(table, cols);
    }
    Ok(options)
}

fn print_changes(tables: &[TableChanges]) {
    let mut t = Table::new(&["TABLE", "MODE", "INSERTED", "UPDATED", "DELETED", "SCHEMA"]);
    for c in tables {
        t.row(vec![
            c.table.clone(),
            mode_name(c.mode).into(),
            c.inserted.to_string(),
            c.updated.to_string(),
            c.deleted.to_string(),
            if c.drift.is_empty() {
                "-".into()
            } else {
                format!("common columns only: {}", c.drift)
            },
        ]);
    }
    t.print();
}

fn no_safety_warning(safety: &Option<String>) {
    if safety.is_none() {
        eprintln!(
            "warning: no safety snapshot was taken: snapshots are disabled on this host \
             (SNAPSHOT_EPHEMERAL=0 forces them on)"
        );
    }
}

fn restore_report_json(r: &TableRestoreReport) -> Json {
    json!({
        "snapshot_id": r.snapshot_id,
        "dry_run": r.dry_run,
        "safety_snapshot": r.safety_snapshot,
        "inserted": r.inserted(),
        "updated": r.updated(),
        "deleted": r.deleted(),
        "tables": r.tables.iter().map(changes_json).collect::<Vec<_>>(),
    })
}

pub(crate) fn restore_table(ctx: &Ctx, a: RestoreTableArgs) -> CliResult {
    let m = live_manager(ctx)?;
    let record = m.get(&a.id)?;
    let mode = match a.mode {
        ModeArg::Replace => RestoreMode::Replace,
        ModeArg::Merge => RestoreMode::Merge,
    };
    let options = with_keys(
        TableRestoreOptions::new(mode).common_columns(a.common_columns),
        &a.key,
        &a.tables,
    )?;
    let names = a
        .tables
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if !a.dry_run && !a.yes {
        let db = ctx.database_display()?;
        let question = format!(
            "{} table(s) {names} of {} into {db}?",
            match mode {
                RestoreMode::Replace => "Replace",
                RestoreMode::Merge => "Merge",
            },
            record.snapshot_id,
        );
        ctx.can_confirm(&question, false)?;
        let plan = spin(ctx, format!("planning the restore from {}", a.id), || {
            m.restore_tables(
                &record.snapshot_id,
                &a.tables,
                &options.clone().dry_run(true),
            )
        })?;
        if !ctx.json {
            println!("plan:");
            print_changes(&plan.tables);
        }
        ctx.confirm(
            &format!(
                "{question} ({} insert(s), {} update(s), {} delete(s); a safety snapshot of the present is taken first)",
                plan.inserted(),
                plan.updated(),
                plan.deleted()
            ),
            false,
        )?;
    }
    let report = spin(ctx, format!("restoring {names} from {}", a.id), || {
        m.restore_tables(
            &record.snapshot_id,
            &a.tables,
            &options.clone().dry_run(a.dry_run),
        )
    })?;
    if ctx.json {
        return output::json(&restore_report_json(&report));
    }
    print_changes(&report.tables);
    if report.dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    println!(
        "restored {} row(s) ({} inserted, {} updated, {} deleted) from {}",
        report.inserted() + report.updated() + report.deleted(),
        report.inserted(),
        report.updated(),
        report.deleted(),
        report.snapshot_id
    );
    match &report.safety_snapshot {
        Some(s) => println!("the data as it was before is in safety snapshot {s}"),
        None => no_safety_warning(&report.safety_snapshot),
    }
    Ok(())
}

fn undo_report_json(r: &UndoReport) -> Json {
    json!({
        "snapshot_id": r.snapshot_id,
        "entity_type": r.entity_type,
        "entity_id": r.entity_id,
        "dry_run": r.dry_run,
        "safety_snapshot": r.safety_snapshot,
        "inserted": r.inserted(),
        "updated": r.updated(),
        "tables": r.tables.iter().map(changes_json).collect::<Vec<_>>(),
        "conflicts_total": r.conflicts_total,
        "conflicts": r.conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
    })
}

fn print_conflicts(conflicts: &[RowConflict]) {
    let mut t = Table::new(&["TABLE", "KEY", "COLUMN", "SNAPSHOT", "LIVE"]);
    for c in conflicts {
        for name in &c.changed_columns {
            let i = c.columns.iter().position(|x| x == name);
            let at = |row: &[Value]| {
                i.and_then(|i| row.get(i))
                    .map_or_else(|| "?".into(), Value::to_string)
            };
            t.row(vec![
                c.table.clone(),
                show_key(&c.key),
                name.clone(),
                at(&c.snapshot),
                at(&c.live),
            ]);
        }
    }
    if !t.is_empty() {
        t.print();
    }
}

/// Turns an undo's error into the CLI's: a conflict prints its rows (or, with `--json`, one
/// document with the error and the rows) before exiting with [`ExitStatus::Conflict`].
fn undo_error(ctx: &Ctx, e: Error) -> CliError {
    let Error::UndoConflict {
        id,
        total,
        conflicts,
    } = &e
    else {
        return e.into();
    };
    let (id, total, conflicts) = (id.clone(), *total, conflicts.clone());
    let err = CliError::from(e);
    if ctx.json {
        let doc = json!({
            "error": { "kind": err.kind, "message": err.message, "exit_code": err.status as u8 },
            "snapshot_id": id,
            "conflicts_total": total,
            "conflicts": conflicts.iter().map(conflict_json).collect::<Vec<_>>(),
        });
        return match output::json(&doc) {
            Ok(()) => err.after_report(),
            Err(e) => e,
        };
    }
    println!("{total} live row(s) changed since snapshot {id}:");
    print_conflicts(&conflicts);
    if (conflicts.len() as u64) < total {
        println!("({} of {total} shown)", conflicts.len());
    }
    println!("nothing was changed; `snapshot undo {id} --force` overwrites them");
    err.after_report()
}

pub(crate) fn undo(ctx: &Ctx, a: UndoArgs) -> CliResult {
    let m = live_manager(ctx)?;
    let record = m.get(&a.id)?;
    let options = UndoOptions::new()
        .force(a.force)
        .common_columns(a.common_columns);
    let what = match (&record.entity_type, &record.entity_id) {
        (Some(t), Some(i)) => format!("{} of {t} {i}", record.operation_type),
        _ => record.operation_type.clone(),
    };
    if !a.dry_run && !a.yes {
        let db = ctx.database_display()?;
        let question = format!(
            "Undo the {what} of snapshot {} in {db}?",
            record.snapshot_id
        );
        ctx.can_confirm(&question, false)?;
        let plan = spin(ctx, format!("planning the undo of {}", a.id), || {
            m.undo_with(&record.snapshot_id, &options.clone().dry_run(true))
        })
        .map_err(|e| undo_error(ctx, e))?;
        if !ctx.json {
            println!("plan:");
            print_changes(&plan.tables);
            if !plan.conflicts.is_empty() {
                println!("--force overwrites these live rows changed since the snapshot:");
                print_conflicts(&plan.conflicts);
            }
        }
        ctx.confirm(
            &format!(
                "{question} ({} row(s) put back, {} overwritten; a safety snapshot of the present is taken first)",
                plan.inserted(),
                plan.updated()
            ),
            false,
        )?;
    }
    let report = spin(ctx, format!("undoing {}", a.id), || {
        m.undo_with(&record.snapshot_id, &options.clone().dry_run(a.dry_run))
    })
    .map_err(|e| undo_error(ctx, e))?;
    if ctx.json {
        return output::json(&undo_report_json(&report));
    }
    print_changes(&report.tables);
    if !report.conflicts.is_empty() {
        println!(
            "{} live row(s) changed since the snapshot {}:",
            report.conflicts_total,
            if report.dry_run {
                "would be overwritten"
            } else {
                "were overwritten"
            }
        );
        print_conflicts(&report.conflicts);
    }
    if report.dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    println!(
        "undid the {what}: {} row(s) put back, {} overwritten",
        report.inserted(),
        report.updated()
    );
    match &report.safety_snapshot {
        Some(s) => println!("the data as it was before is in safety snapshot {s}"),
        None => no_safety_warning(&report.safety_snapshot),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_json_and_readable_cells() {
        assert_eq!(value_json(&Value::Null), Json::Null);
        assert_eq!(value_json(&Value::Integer(42)), json!(42));
        assert_eq!(value_json(&Value::Real(1.5)), json!(1.5));
        assert_eq!(value_json(&Value::Real(f64::NAN)), json!("NaN"));
        assert_eq!(value_json(&Value::Real(f64::NEG_INFINITY)), json!("-inf"));
        assert_eq!(value_json(&Value::from("é")), json!("é"));
        assert_eq!(
            value_json(&Value::Blob(b"hi".to_vec())),
            json!({ "base64": "aGk=" })
        );
        assert_eq!(cell(&Value::from("a\nb")), "a\\nb");
        assert_eq!(cell(&Value::Null), "NULL");
        assert_eq!(cell(&Value::from("x".repeat(50))).chars().count(), 41);
        assert_eq!(
            row_json(
                &["id".into(), "n".into()],
                &[Value::Integer(1), Value::Null]
            ),
            json!({ "id": 1, "n": null })
        );
    }

    #[test]
    fn restore_table_keys_name_their_table() -> Result<(), CliError> {
        let one = vec!["t".to_string()];
        let two = vec!["t".to_string(), "u".to_string()];
        let o = with_keys(
            TableRestoreOptions::new(RestoreMode::Merge),
            &["a,b".into()],
            &one,
        )?;
        assert_eq!(
            o.key_for("t"),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        let o = with_keys(
            TableRestoreOptions::new(RestoreMode::Merge),
            &["u=c".into()],
            &two,
        )?;
        assert_eq!(o.key_for("u"), Some(&["c".to_string()][..]));
        assert!(
            with_keys(
                TableRestoreOptions::new(RestoreMode::Merge),
                &["c".into()],
                &two
            )
            .is_err()
        );
        assert!(
            with_keys(
                TableRestoreOptions::new(RestoreMode::Merge),
                &["v=c".into()],
                &two
            )
            .is_err()
        );
        assert!(
            with_keys(
                TableRestoreOptions::new(RestoreMode::Merge),
                &["t=".into()],
                &two
            )
            .is_err()
        );
        Ok(())
    }
}
