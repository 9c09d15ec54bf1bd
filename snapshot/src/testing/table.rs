//! The table-engine conformance suite: the record-level behaviours every engine must show —
//! preview, compare, table restore (replace and merge) and undo — written once in SQL that
//! SQLite, DuckDB and PostgreSQL all take, and run by each engine's tests through a
//! [`TableFixture`] of its own (see [`table_conformance!`](crate::table_conformance)).
//!
//! # The standard fixture
//!
//! A fresh live database holding:
//! - `measure (id INTEGER PRIMARY KEY, name TEXT NOT NULL, cost <float>, note TEXT,
//!   data <binary>)`: 50 rows, `id` 1..=50, `name` `measure {id}`, `cost` `id * 1.5`, `note`
//!   `note {id}` for odd ids and NULL for even ones, `data` three bytes of `id`;
//! - `measure_area_priority (id INTEGER PRIMARY KEY, measure_id INTEGER NOT NULL REFERENCES
//!   measure (id), area TEXT NOT NULL, priority INTEGER)`: two rows per measure, ids
//!   `measure * 10` (`north`, priority 1) and `measure * 10 + 1` (`south`, priority 2);
//! - `log (at TEXT, msg TEXT)`, without a key: `('t1', 'a'), ('t2', 'b'), ('t3', 'c')`;
//! - the view `cheap` over `measure`.

use crate::Error;
use crate::manager::{ListFilter, SnapshotManager, SnapshotRequest};
use crate::record::SnapshotRecord;
use crate::table::{
    Cascade, CompareOptions, DiffKind, EntityMapping, RestoreMode, TableRestoreOptions,
    UndoOptions, Value,
};
use crate::testing::{Check, Failure, check, fail};

/// A live database with the standard fixture (see the module docs) and a manager on it.
pub trait TableFixture {
    /// The manager whose source is the live database.
    fn manager(&self) -> &SnapshotManager;

    /// Runs `sql` (one or more statements) on the live database.
    ///
    /// # Errors
    /// The engine's error.
    fn exec(&self, sql: &str) -> Check;

    /// Every row of `table`, ordered by all its columns, its values as the engine reads them
    /// (the same conversion every time: rows are compared with each other).
    ///
    /// # Errors
    /// The engine's error.
    fn rows(&self, table: &str) -> Result<Vec<Vec<Value>>, Failure>;
}

/// A factory of fresh fixtures.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn TableFixture>;

const MEASURES: usize = 50;

fn take(m: &SnapshotManager, req: SnapshotRequest) -> Result<SnapshotRecord, Failure> {
    m.snapshot(req)?
        .into_record()
        .ok_or_else(|| Failure("the manager is disabled".into()))
}

fn count(m: &SnapshotManager) -> Result<usize, Failure> {
    Ok(m.list(&ListFilter::new())?.len())
}

fn merge() -> TableRestoreOptions {
    TableRestoreOptions::new(RestoreMode::Merge)
}

/// A table, its columns and its key named with quotes, spaces, Unicode and SQL: compared and
/// merged back row for row.
///
/// # Errors
/// The deviation found.
pub fn quoted_and_unicode_identifiers_round_trip(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    let table = "odd \"name\" täble 🦀; DROP TABLE measure; --";
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    f.exec(&format!(
        "CREATE TABLE {} ({} TEXT PRIMARY KEY, {} INTEGER, \"select\" TEXT);
         INSERT INTO {0} VALUES ('a', 1, 'x'), ('b b', 2, NULL), ('ü''', 3, 'z');",
        q(table),
        q("key \"col\""),
        q("välue")
    ))?;
    let before = f.rows(table)?;
    let snap = take(m, SnapshotRequest::new("manual"))?;
    check!(
        m.snapshot_tables(&snap.snapshot_id)?
            .contains(&table.to_string()),
        "the table is not listed in the snapshot"
    );
    f.exec(&format!(
        "DELETE FROM {0} WHERE {1} <> 'a'; UPDATE {0} SET \"select\" = 'y';",
        q(table),
        q("key \"col\"")
    ))?;
    let d = m.compare(&snap.snapshot_id, table, &CompareOptions::new())?;
    check!(d.key == ["key \"col\""], "key {:?}", d.key);
    check!((d.removed, d.changed) == (2, 1), "{d:?}");
    check!(d.changed_columns == [("select".to_string(), 1)], "{d:?}");
    let r = m.restore_tables(&snap.snapshot_id, &[table], &merge())?;
    check!((r.inserted(), r.updated()) == (2, 1), "{r:?}");
    check!(f.rows(table)? == before, "the rows did not come back");
    check!(f.rows("measure")?.len() == MEASURES, "measure was touched");
    Ok(())
}

/// A preview reads a page of the snapshot in key order (insertion order without a key), with
/// the columns and the row count, and needs no live table.
///
/// # Errors
/// The deviation found.
pub fn preview_pages_in_key_order_without_the_live_tables(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    let snap = take(m, SnapshotRequest::new("delete").entity("measure", 42))?;
    let tables = m.snapshot_tables(&snap.snapshot_id)?;
    check!(
        tables == ["log", "measure", "measure_area_priority"],
        "tables {tables:?}"
    );
    f.exec("DROP VIEW cheap; DROP TABLE measure_area_priority; DROP TABLE measure;")?;
    let page = m.preview(&snap.snapshot_id, "measure", 10, 5)?;
    check!(page.record == snap);
    check!(
        page.total_rows == MEASURES as u64 && page.offset == 10,
        "{page:?}"
    );
    let names: Vec<&str> = page.columns.iter().map(|c| c.name.as_str()).collect();
    check!(
        names == ["id", "name", "cost", "note", "data"],
        "columns {names:?}"
    );
    check!(page.columns[0].primary_key == 1 && page.columns[1].not_null);
    let ids: Vec<i64> = page.rows.iter().filter_map(|r| r[0].as_i64()).collect();
    check!(ids == [11, 12, 13, 14, 15], "ids {ids:?}");
    check!(
        page.rows[0][3] == Value::from("note 11"),
        "{:?}",
        page.rows[0]
    );
    check!(page.rows[1][3] == Value::Null, "{:?}", page.rows[1]);
    check!(
        m.preview(&snap.snapshot_id, "MEASURE", 100, 5)?
            .rows
            .is_empty(),
        "a page past the end has rows"
    );
    let log = m.preview(&snap.snapshot_id, "log", 1, 10)?;
    check!(log.rows.len() == 2, "log {:?}", log.rows);
    match m.preview(&snap.snapshot_id, "nothing", 0, 5) {
        Err(Error::TableMissing { table, location }) => {
            check!(table == "nothing" && location.contains(&snap.snapshot_id));
        }
        other => fail!("expected TableMissing, got {other:?}"),
    }
    Ok(())
}

/// Counts cover every row of a 20 000-row table while the sample stays bounded; a replace
/// makes the table identical again.
///
/// # Errors
/// The deviation found.
pub fn compare_counts_every_row_and_samples_a_few(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    f.exec(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO big SELECT i, 'v' || CAST(i AS TEXT) FROM
             (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
              SELECT i FROM n) AS n;",
    )?;
    let snap = take(m, SnapshotRequest::new("manual"))?;
    f.exec(
        "DELETE FROM big WHERE id % 4 = 0;
         UPDATE big SET v = 'changed' WHERE id % 4 = 1;
         INSERT INTO big SELECT id + 100000, v FROM big WHERE id <= 30;",
    )?;
    let d = m.compare(&snap.snapshot_id, "big", &CompareOptions::new().sample(5))?;
    check!(
        (d.added, d.removed, d.changed, d.unchanged) == (23, 5000, 5000, 10000),
        "counts {:?}",
        (d.added, d.removed, d.changed, d.unchanged)
    );
    for kind in [DiffKind::Added, DiffKind::Removed, DiffKind::Changed] {
        let n = d.sample.iter().filter(|r| r.kind == kind).count();
        check!(n == 5, "{n} sampled rows of kind {kind:?}");
    }
    let counts_only = m.compare(&snap.snapshot_id, "big", &CompareOptions::new().sample(0))?;
    check!(counts_only.sample.is_empty() && counts_only.removed == 5000);
    let r = m.restore_tables(
        &snap.snapshot_id,
        &["big"],
        &TableRestoreOptions::new(RestoreMode::Replace),
    )?;
    check!(
        (r.inserted(), r.updated(), r.deleted()) == (5000, 5000, 23),
        "{r:?}"
    );
    check!(
        m.compare(&snap.snapshot_id, "big", &CompareOptions::new())?
            .is_identical(),
        "the table differs after a replace"
    );
    Ok(())
}

/// A column added since the snapshot is reported; a write is refused until asked to use the
/// common columns, and then restores the rows by them.
///
/// # Errors
/// The deviation found.
pub fn an_added_column_is_merged_by_the_common_columns_only_when_asked(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    f.exec(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);
         INSERT INTO item VALUES (1, 'item 1', 1), (2, 'item 2', 2), (3, 'item 3', 3),
                                 (4, 'item 4', 4), (5, 'item 5', 5), (6, 'item 6', 6);",
    )?;
    let snap = take(m, SnapshotRequest::new("manual"))?;
    f.exec(
        "ALTER TABLE item ADD COLUMN extra TEXT DEFAULT 'x';
         DELETE FROM item WHERE id IN (4, 5);
         UPDATE item SET qty = 100 WHERE id = 6;",
    )?;
    let d = m.compare(&snap.snapshot_id, "item", &CompareOptions::new())?;
    let added: Vec<&str> = d.drift.added.iter().map(|c| c.name.as_str()).collect();
    check!(added == ["extra"], "added {added:?}");
    check!(
        d.drift.removed.is_empty() && d.drift.retyped.is_empty(),
        "{d:?}"
    );
    check!((d.removed, d.changed) == (2, 1), "{d:?}");
    check!(
        d.columns == ["id", "name", "qty"],
        "columns {:?}",
        d.columns
    );
    let before = f.rows("item")?;
    let safety_before = count(m)?;
    match m.restore_tables(&snap.snapshot_id, &["item"], &merge()) {
        Err(Error::SchemaDrift { id, table, drift }) => {
            check!(id == snap.snapshot_id && table == "item" && drift.added.len() == 1);
        }
        other => fail!("expected SchemaDrift, got {other:?}"),
    }
    check!(f.rows("item")? == before, "a refused restore wrote");
    check!(
        count(m)? == safety_before,
        "a refused restore took a safety snapshot"
    );
    let r = m.restore_tables(&snap.snapshot_id, &["item"], &merge().common_columns(true))?;
    check!((r.inserted(), r.updated()) == (2, 1), "{r:?}");
    check!(r.tables[0].drift.added.len() == 1);
    let rows = f.rows("item")?;
    check!(rows.len() == 6, "{rows:?}");
    let six = rows
        .iter()
        .find(|r| r[0].as_i64() == Some(6))
        .ok_or_else(|| Failure("row 6 is gone".into()))?;
    check!(six[2].as_i64() == Some(6), "row 6 {six:?}");
    Ok(())
}

/// Tables missing on either side, a table without a key, a repeating declared key, a view, an
/// unknown id and bad table lists are typed errors, and none takes a safety snapshot.
///
/// # Errors
/// The deviation found.
pub fn missing_tables_keys_and_views_are_typed_errors(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    let snap = take(m, SnapshotRequest::new("manual"))?;
    let id = snap.snapshot_id.as_str();
    f.exec(
        "CREATE TABLE later (id INTEGER PRIMARY KEY);
         DROP TABLE measure_area_priority;
         INSERT INTO log VALUES ('t1', 'again');",
    )?;
    let cmp = CompareOptions::new();
    match m.compare(id, "later", &cmp) {
        Err(Error::TableMissing { table, location }) => {
            check!(
                table == "later" && location == format!("snapshot {id}"),
                "{location}"
            );
        }
        other => fail!("expected TableMissing in the snapshot, got {other:?}"),
    }
    match m.restore_tables(id, &["measure", "measure_area_priority"], &merge()) {
        Err(Error::TableMissing { table, location }) => {
            check!(table == "measure_area_priority", "{table}");
            check!(location.starts_with("the live database"), "{location}");
        }
        other => fail!("expected TableMissing in the live database, got {other:?}"),
    }
    match m.compare(id, "log", &cmp) {
        Err(Error::NoKey { table, reason }) => {
            check!(
                table == "log" && reason.contains("no primary key"),
                "{reason}"
            );
        }
        other => fail!("expected NoKey, got {other:?}"),
    }
    match m.compare(id, "log", &cmp.clone().key(["at"])) {
        Err(Error::KeyCollision {
            table,
            location,
            key_columns,
            ..
        }) => {
            check!(
                table == "log" && key_columns == "at",
                "{table} {key_columns}"
            );
            check!(location.contains("live"), "{location}");
        }
        other => fail!("expected KeyCollision, got {other:?}"),
    }
    let d = m.compare(id, "log", &cmp.clone().key(["at", "msg"]))?;
    check!((d.added, d.removed) == (1, 0), "{d:?}");
    match m.compare(id, "log", &cmp.clone().key(["nope"])) {
        Err(Error::NoKey { reason, .. }) => check!(reason.contains("\"nope\""), "{reason}"),
        other => fail!("expected NoKey, got {other:?}"),
    }
    // A view is refused: as not a table where the image holds views, as missing where a
    // snapshot holds tables only (a server's bundle).
    check!(
        matches!(
            m.compare(id, "cheap", &cmp),
            Err(Error::InvalidInput { .. } | Error::TableMissing { .. })
        ),
        "a view is not refused"
    );
    check!(matches!(
        m.compare("20260101_000000_000_nope", "measure", &cmp),
        Err(Error::NotFound { .. })
    ));
    let none: [&str; 0] = [];
    check!(matches!(
        m.restore_tables(id, &none, &merge()),
        Err(Error::InvalidInput { .. })
    ));
    check!(matches!(
        m.restore_tables(id, &["measure", "MEASURE"], &merge()),
        Err(Error::InvalidInput { .. })
    ));
    check!(count(m)? == 1, "a refused call took a safety snapshot");
    Ok(())
}

/// Undo puts back exactly the snapshot's entity and the rows of its declared cascade — not
/// later unrelated changes — after a safety snapshot; a dry run reports the same and writes
/// nothing; undoing again finds nothing to do.
///
/// # Errors
/// The deviation found.
pub fn undo_puts_back_exactly_the_entity_and_its_declared_cascade(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    let (m0, p0) = (f.rows("measure")?, f.rows("measure_area_priority")?);
    let snap = take(m, SnapshotRequest::new("delete").entity("measure", 42))?;
    f.exec(
        "DELETE FROM measure_area_priority WHERE measure_id IN (41, 42);
         DELETE FROM measure WHERE id IN (41, 42);
         UPDATE measure SET name = 'kept' WHERE id = 1;",
    )?;
    let undo = UndoOptions::new().entity(
        EntityMapping::new("measure").cascade(Cascade::new("measure_area_priority", "measure_id")),
    );
    let dry = m.undo_with(&snap.snapshot_id, &undo.clone().dry_run(true))?;
    check!(
        dry.entity_type == "measure" && dry.entity_id == "42",
        "{dry:?}"
    );
    check!(
        dry.tables.len() == 2 && (dry.tables[0].inserted, dry.tables[1].inserted) == (1, 2),
        "{dry:?}"
    );
    check!(dry.safety_snapshot.is_none());
    check!(
        f.rows("measure_area_priority")?.len() == 96,
        "a dry run wrote"
    );

    let r = m.undo_with(&snap.snapshot_id, &undo)?;
    check!(r.tables == dry.tables, "{r:?}");
    check!(
        (r.inserted(), r.updated(), r.conflicts_total) == (3, 0, 0),
        "{r:?}"
    );
    check!(r.safety_snapshot.is_some());
    let row = |rows: &[Vec<Value>], k: i64| rows.iter().find(|r| r[0].as_i64() == Some(k)).cloned();
    let measures = f.rows("measure")?;
    check!(row(&measures, 42) == row(&m0, 42), "measure 42 differs");
    check!(
        row(&measures, 41).is_none(),
        "more than the entity came back"
    );
    check!(
        row(&measures, 1).map(|r| r[1].clone()) == Some(Value::from("kept")),
        "a later change was undone"
    );
    let of = |rows: Vec<Vec<Value>>| -> Vec<Vec<Value>> {
        rows.into_iter()
            .filter(|r| r[1].as_i64() == Some(42))
            .collect()
    };
    check!(
        of(f.rows("measure_area_priority")?) == of(p0),
        "the cascade differs"
    );
    let again = m.undo_with(&snap.snapshot_id, &undo)?;
    check!((again.inserted(), again.updated()) == (0, 0), "{again:?}");
    Ok(())
}

/// One check of the suite.
pub type TableCheck = fn(Factory<'_>) -> Check;

/// Every check of the suite, by name.
pub const SUITE: &[(&str, TableCheck)] = &[
    (
        "quoted_and_unicode_identifiers_round_trip",
        quoted_and_unicode_identifiers_round_trip,
    ),
    (
        "preview_pages_in_key_order_without_the_live_tables",
        preview_pages_in_key_order_without_the_live_tables,
    ),
    (
        "compare_counts_every_row_and_samples_a_few",
        compare_counts_every_row_and_samples_a_few,
    ),
    (
        "an_added_column_is_merged_by_the_common_columns_only_when_asked",
        an_added_column_is_merged_by_the_common_columns_only_when_asked,
    ),
    (
        "missing_tables_keys_and_views_are_typed_errors",
        missing_tables_keys_and_views_are_typed_errors,
    ),
    (
        "undo_puts_back_exactly_the_entity_and_its_declared_cascade",
        undo_puts_back_exactly_the_entity_and_its_declared_cascade,
    ),
];

/// A table without a key is replaced whole by a table restore in
/// [`Replace`](RestoreMode::Replace) mode (every live row deleted, every snapshot row inserted,
/// duplicates kept) and by a whole restore; [`Merge`](RestoreMode::Merge) still needs a key.
///
/// # Errors
/// A [`Failure`] naming what differed.
pub fn a_keyless_table_is_replaced_whole_and_merged_only_by_a_key(f: Factory<'_>) -> Check {
    let f = f();
    let m = f.manager();
    f.exec("INSERT INTO log VALUES ('t1', 'a');")?;
    let before = f.rows("log")?;
    let snap = take(m, SnapshotRequest::new("manual"))?;
    let id = snap.snapshot_id.as_str();
    f.exec(
        "DELETE FROM log WHERE msg = 'b';
         INSERT INTO log VALUES ('t9', 'z'), ('t9', 'z');",
    )?;
    let changed = f.rows("log")?;
    match m.restore_tables(id, &["log"], &merge()) {
        Err(Error::NoKey { table, .. }) => check!(table == "log", "{table}"),
        other => fail!("merge of a keyless table: expected NoKey, got {other:?}"),
    }
    check!(
        f.rows("log")? == changed,
        "a refused merge changed the table"
    );
    let report = m.restore_tables(
        id,
        &["log"],
        &TableRestoreOptions::new(RestoreMode::Replace),
    )?;
    check!(f.rows("log")? == before, "{:?}", f.rows("log")?);
    let t = &report.tables[0];
    check!(
        (t.inserted, t.updated, t.deleted) == (4, 0, 5),
        "counts {:?}",
        (t.inserted, t.updated, t.deleted)
    );
    Ok(())
}

/// The table-engine conformance suite as `#[test]` functions, one per check, on fixtures from
/// `$factory` (a `fn() -> Box<dyn TableFixture>`). Invoke it inside a module of its own per
/// engine (or per way of reaching it).
#[macro_export]
macro_rules! table_conformance {
    ($factory:expr) => {
        $crate::table_conformance!(@tests $factory;
            quoted_and_unicode_identifiers_round_trip,
            preview_pages_in_key_order_without_the_live_tables,
            compare_counts_every_row_and_samples_a_few,
            an_added_column_is_merged_by_the_common_columns_only_when_asked,
            missing_tables_keys_and_views_are_typed_errors,
            a_keyless_table_is_replaced_whole_and_merged_only_by_a_key,
            undo_puts_back_exactly_the_entity_and_its_declared_cascade);
    };
    (@tests $factory:expr; $($check:ident),+) => {
        $(
            #[test]
            fn $check() -> ::std::result::Result<(), $crate::testing::Failure> {
                $crate::testing::table::$check(&$factory)
            }
        )+
    };
}
