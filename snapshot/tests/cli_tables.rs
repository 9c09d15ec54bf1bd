//! The record-level commands of the `snapshot` binary — `preview`, `diff`, `restore-table` and
//! `undo` — against real SQLite files in temp dirs: `--json` output parsed, exit codes,
//! confirmation on a pipe, and the live data checked with rusqlite after every write.
#![cfg(all(feature = "cli", feature = "sqlite"))]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");

/// A WAL database of 50 measures with two area priorities each (deleted with their measure by
/// a foreign-key cascade), in a temp dir whose `backups` is the store.
struct Fx {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Fx {
    fn new() -> Result<Fx> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("app.db");
        let c = Connection::open(&db)?;
        c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        c.execute_batch(
            "CREATE TABLE measure (id INTEGER PRIMARY KEY, name TEXT NOT NULL, cost REAL,
                                   note TEXT, data BLOB);
             CREATE TABLE measure_area_priority (
                 id INTEGER PRIMARY KEY,
                 measure_id INTEGER NOT NULL REFERENCES measure(id) ON DELETE CASCADE,
                 area TEXT NOT NULL, priority INTEGER);",
        )?;
        for i in 1..=50_i64 {
            let note = (i % 2 == 1).then(|| format!("note {i} é"));
            c.execute(
                "INSERT INTO measure VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    i,
                    format!("measure {i}"),
                    i as f64 * 1.5,
                    note,
                    vec![i as u8; 3]
                ],
            )?;
            for (k, area) in ["north", "south"].into_iter().enumerate() {
                c.execute(
                    "INSERT INTO measure_area_priority VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![i * 10 + k as i64, i, area, k as i64 + 1],
                )?;
            }
        }
        Ok(Fx { dir, db })
    }

    /// Runs the binary with `--db` and a clean environment, stdin not a terminal.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env("SNAPSHOT_EPHEMERAL", "0")
            .env_remove("SNAPSHOT_CONFIG")
            .env_remove("SNAPSHOT_DB")
            .env_remove("SNAPSHOT_STORE")
            .env_remove("SNAPSHOT_ENGINE")
            .env_remove("SNAPSHOT_TABLE")
            .stdin(Stdio::null())
            .arg("--db")
            .arg(&self.db)
            .args(args);
        Ok(c.output()?)
    }

    /// Runs with `--json`; requires success and parses standard output.
    fn json(&self, args: &[&str]) -> Result<Value> {
        let out = self.run_json(args)?;
        ensure!(out.status.success(), "{args:?} failed: {}", text(&out));
        parse(&out)
    }

    fn run_json(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Takes a snapshot as `#[with_snapshot("delete", "measure")]` would for measure `id`.
    fn snapshot_before_delete(&self, id: &str) -> Result<String> {
        let v = self.json(&[
            "create", "--op", "delete", "--entity", "measure", "--id", id,
        ])?;
        v["taken"][0]["snapshot_id"]
            .as_str()
            .map(str::to_string)
            .context("no snapshot id")
    }

    fn conn(&self) -> Result<Connection> {
        let c = Connection::open(&self.db)?;
        c.execute_batch("PRAGMA foreign_keys=ON")?;
        Ok(c)
    }

    /// Every row of a table in key order, exactly as SQLite stores it.
    fn dump(&self, table: &str) -> Result<Vec<Vec<Sql>>> {
        let c = self.conn()?;
        let mut st = c.prepare(&format!("SELECT * FROM {table} ORDER BY id"))?;
        let n = st.column_count();
        let rows = st
            .query_map([], |r| (0..n).map(|i| r.get::<_, Sql>(i)).collect())?
            .collect::<rusqlite::Result<Vec<Vec<Sql>>>>()?;
        Ok(rows)
    }

    fn snapshots(&self) -> Result<usize> {
        Ok(self.json(&["list"])?.as_array().map_or(0, Vec::len))
    }
}

fn parse(out: &Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn delete_diff_undo_diff_round_trip() -> Result<()> {
    let fx = Fx::new()?;
    let before = fx.dump("measure")?;
    let id = fx.snapshot_before_delete("42")?;
    fx.conn()?
        .execute("DELETE FROM measure WHERE id = 42", [])?;

    let d = fx.json(&["diff", &id, "--table", "measure"])?;
    assert_eq!(d["table"], "measure");
    assert_eq!(d["key"], json!(["id"]));
    assert_eq!(
        (&d["added"], &d["removed"], &d["changed"], &d["unchanged"]),
        (&json!(0), &json!(1), &json!(0), &json!(49)),
        "{d}"
    );
    assert_eq!(d["identical"], false);
    assert_eq!(d["drift"]["none"], true);
    let sample = d["sample"].as_array().context("no sample")?;
    assert_eq!(sample.len(), 1, "{d}");
    assert_eq!(sample[0]["kind"], "removed");
    assert_eq!(sample[0]["key"], json!({ "id": 42 }));
    assert_eq!(
        sample[0]["snapshot"],
        json!({ "id": 42, "name": "measure 42", "cost": 63.0, "note": null,
                "data": { "base64": "Kioq" } })
    );
    assert_eq!(sample[0]["live"], Value::Null);
    // The cascade took the priorities too: the dependent table shows them removed.
    let p = fx.json(&[
        "diff",
        &id,
        "--table",
        "measure_area_priority",
        "--sample",
        "0",
    ])?;
    assert_eq!((&p["removed"], &p["sample"]), (&json!(2), &json!([])));

    // Human output names the row.
    let human = fx.run(&["diff", &id, "--table", "measure"])?;
    assert_eq!(code(&human), 0, "{}", text(&human));
    assert!(
        text(&human).contains("0 added, 1 removed, 0 changed, 49 unchanged")
            && text(&human).contains("removed  42"),
        "{}",
        text(&human)
    );

    let undo = fx.json(&["undo", &id, "--yes"])?;
    assert_eq!(undo["entity_type"], "measure");
    assert_eq!(undo["entity_id"], "42");
    assert_eq!(
        (&undo["inserted"], &undo["updated"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(undo["dry_run"], false);
    assert_eq!(undo["conflicts"], json!([]));
    let safety = undo["safety_snapshot"]
        .as_str()
        .context("no safety snapshot")?;
    let rec = fx.json(&["show", safety])?;
    assert_eq!(
        (&rec["operation_type"], &rec["pinned"]),
        (&json!("pre_restore"), &json!(false))
    );

    assert_eq!(fx.dump("measure")?, before, "the row is back exactly");
    let after = fx.json(&["diff", &id, "--table", "measure"])?;
    assert_eq!(after["identical"], true, "{after}");
    assert_eq!(after["unchanged"], 50);
    let human = fx.run(&["diff", &id, "--table", "measure"])?;
    assert!(text(&human).contains("no difference"), "{}", text(&human));

    // Undoing again is a no-op, not an error.
    let again = fx.json(&["undo", &id, "--yes"])?;
    assert_eq!(
        (&again["inserted"], &again["updated"]),
        (&json!(0), &json!(0))
    );
    Ok(())
}

#[test]
fn undo_on_a_pipe_refuses_without_yes_and_changes_nothing() -> Result<()> {
    let fx = Fx::new()?;
    let id = fx.snapshot_before_delete("42")?;
    fx.conn()?
        .execute("DELETE FROM measure WHERE id = 42", [])?;
    let rows = fx.dump("measure")?;
    let taken = fx.snapshots()?;

    let refused = fx.run(&["undo", &id])?;
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert!(text(&refused).contains("--yes"), "{}", text(&refused));
    let refused = fx.run_json(&["undo", &id])?;
    assert_eq!(code(&refused), 2);
    assert_eq!(parse(&refused)?["error"]["kind"], "confirmation_required");
    assert_eq!(fx.dump("measure")?, rows, "a refused undo changes nothing");
    assert_eq!(fx.snapshots()?, taken, "and takes no safety snapshot");

    // A dry run needs no confirmation and writes nothing.
    let dry = fx.json(&["undo", &id, "--dry-run"])?;
    assert_eq!(
        (&dry["dry_run"], &dry["inserted"]),
        (&json!(true), &json!(1))
    );
    assert_eq!(dry["safety_snapshot"], Value::Null);
    assert_eq!(fx.dump("measure")?, rows);
    assert_eq!(fx.snapshots()?, taken);

    // restore-table refuses the same way.
    let refused = fx.run(&[
        "restore-table",
        &id,
        "--table",
        "measure",
        "--mode",
        "merge",
    ])?;
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert_eq!(fx.dump("measure")?, rows);
    Ok(())
}

#[test]
fn a_conflict_exits_6_with_the_rows_and_force_overwrites() -> Result<()> {
    let fx = Fx::new()?;
    let id = fx.snapshot_before_delete("42")?;
    let c = fx.conn()?;
    c.execute("DELETE FROM measure WHERE id = 42", [])?;
    // Someone re-created measure 42 since, differently.
    c.execute(
        "INSERT INTO measure (id, name, cost) VALUES (42, 'someone else''s', 1.0)",
        [],
    )?;
    let rows = fx.dump("measure")?;

    let out = fx.run(&["undo", &id, "--yes"])?;
    assert_eq!(code(&out), 6, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("measure  42") && t.contains("'someone else''s'") && t.contains("--force"),
        "the conflicting row is printed: {t}"
    );
    assert_eq!(fx.dump("measure")?, rows, "nothing changed");

    let out = fx.run_json(&["undo", &id, "--yes"])?;
    assert_eq!(code(&out), 6);
    let v = parse(&out)?;
    assert_eq!(v["error"]["kind"], "undo_conflict");
    assert_eq!(v["error"]["exit_code"], 6);
    assert_eq!(v["conflicts_total"], 1);
    assert_eq!(v["conflicts"][0]["table"], "measure");
    assert_eq!(v["conflicts"][0]["key"], json!([42]));
    assert_eq!(v["conflicts"][0]["live"]["name"], "someone else's");
    assert_eq!(v["conflicts"][0]["snapshot"]["name"], "measure 42");
    let changed = v["conflicts"][0]["changed_columns"]
        .as_array()
        .context("changed columns")?;
    assert!(
        changed.contains(&json!("name")) && changed.contains(&json!("cost")),
        "{v}"
    );
    // The dry run reports the conflict the same way.
    let dry = fx.run(&["undo", &id, "--dry-run"])?;
    assert_eq!(code(&dry), 6, "{}", text(&dry));
    assert_eq!(fx.dump("measure")?, rows);

    let forced = fx.json(&["undo", &id, "--yes", "--force"])?;
    assert_eq!(
        (&forced["inserted"], &forced["updated"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(forced["conflicts_total"], 1);
    let d = fx.json(&["diff", &id, "--table", "measure"])?;
    assert_eq!(d["identical"], true, "{d}");
    Ok(())
}

#[test]
fn restore_table_dry_run_reports_without_writing_then_replaces() -> Result<()> {
    let fx = Fx::new()?;
    let snap = fx.dump("measure")?;
    let id = fx.json(&["create"])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("no id")?
        .to_string();
    let c = fx.conn()?;
    c.execute_batch(
        "DELETE FROM measure WHERE id IN (3, 4);
         UPDATE measure SET cost = 0 WHERE id = 5;
         INSERT INTO measure (id, name) VALUES (77, 'new');",
    )?;
    let live = fx.dump("measure")?;
    let taken = fx.snapshots()?;

    let dry = fx.json(&[
        "restore-table",
        &id,
        "--table",
        "measure",
        "--mode",
        "replace",
        "--dry-run",
    ])?;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["safety_snapshot"], Value::Null);
    assert_eq!(
        (&dry["inserted"], &dry["updated"], &dry["deleted"]),
        (&json!(2), &json!(1), &json!(1)),
        "{dry}"
    );
    assert_eq!(dry["tables"][0]["table"], "measure");
    assert_eq!(dry["tables"][0]["mode"], "replace");
    assert_eq!(fx.dump("measure")?, live, "a dry run writes nothing");
    assert_eq!(fx.snapshots()?, taken, "nor takes a safety snapshot");

    // Merge keeps the row added since.
    let merge = fx.json(&[
        "restore-table",
        &id,
        "--table",
        "measure",
        "--mode",
        "merge",
        "--dry-run",
    ])?;
    assert_eq!(merge["deleted"], 0);

    let done = fx.json(&[
        "restore-table",
        &id,
        "--table",
        "measure",
        "--table",
        "measure_area_priority",
        "--mode",
        "replace",
        "--yes",
    ])?;
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["tables"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        (&done["inserted"], &done["deleted"]),
        (&json!(6), &json!(1)),
        "{done}"
    );
    assert!(done["safety_snapshot"].is_string(), "{done}");
    assert_eq!(
        fx.dump("measure")?,
        snap,
        "the table is the snapshot's, row for row"
    );
    assert_eq!(fx.snapshots()?, taken + 1);

    let human = fx.run(&[
        "restore-table",
        &id,
        "--table",
        "measure",
        "--mode",
        "replace",
        "--dry-run",
    ])?;
    assert_eq!(code(&human), 0);
    assert!(
        text(&human).starts_with("TABLE") && text(&human).contains("dry run: nothing was changed"),
        "{}",
        text(&human)
    );
    Ok(())
}

#[test]
fn preview_pages_and_lists_tables() -> Result<()> {
    let fx = Fx::new()?;
    let id = fx.snapshot_before_delete("42")?;
    fx.conn()?.execute("DELETE FROM measure", [])?;

    let tables = fx.json(&["preview", &id])?;
    assert_eq!(
        tables["tables"],
        json!(["measure", "measure_area_priority"])
    );

    let page = fx.json(&[
        "preview", &id, "--table", "measure", "--offset", "10", "--limit", "5",
    ])?;
    assert_eq!(
        page["total_rows"], 50,
        "the snapshot's rows, not the live ones"
    );
    assert_eq!((&page["offset"], &page["limit"]), (&json!(10), &json!(5)));
    assert_eq!(page["next_offset"], 15);
    let rows = page["rows"].as_array().context("rows")?;
    let ids: Vec<&Value> = rows.iter().map(|r| &r["id"]).collect();
    assert_eq!(
        ids,
        [11, 12, 13, 14, 15]
            .map(|i| json!(i))
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(rows[0]["note"], "note 11 é");
    assert_eq!(rows[1]["note"], Value::Null);
    assert_eq!(page["columns"][0]["name"], "id");
    assert_eq!(page["columns"][0]["primary_key"], 1);
    assert_eq!(page["columns"][1]["type"], "TEXT");

    let last = fx.json(&["preview", &id, "--table", "measure", "--offset", "48"])?;
    assert_eq!(last["rows"].as_array().map(Vec::len), Some(2));
    assert_eq!(last["next_offset"], Value::Null);
    let past = fx.json(&["preview", &id, "--table", "measure", "--offset", "500"])?;
    assert_eq!(past["rows"], json!([]));

    let human = fx.run(&["preview", &id, "--table", "measure", "--limit", "3"])?;
    let t = text(&human);
    assert!(
        t.contains("id  name") && t.contains("rows 1–3 of 50 (next: --offset 3)"),
        "{t}"
    );
    Ok(())
}

#[test]
fn unknown_tables_snapshots_and_unfit_snapshots_exit_with_their_codes() -> Result<()> {
    let fx = Fx::new()?;
    let id = fx.snapshot_before_delete("42")?;
    for args in [
        &["diff", &id, "--table", "nonesuch"][..],
        &["preview", &id, "--table", "nonesuch"],
        &[
            "restore-table",
            &id,
            "--table",
            "nonesuch",
            "--mode",
            "merge",
            "--dry-run",
        ],
    ] {
        let out = fx.run(args)?;
        assert_eq!(code(&out), 3, "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("\"nonesuch\""),
            "{args:?}: {}",
            text(&out)
        );
        let out = fx.run_json(args)?;
        let v = parse(&out)?;
        assert_eq!(v["error"]["kind"], "table_missing", "{v}");
        assert_eq!(v["error"]["exit_code"], 3);
    }
    // A table dropped from the live database since.
    fx.conn()?
        .execute_batch("DROP TABLE measure_area_priority")?;
    let out = fx.run(&["diff", &id, "--table", "measure_area_priority"])?;
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("live database"), "{}", text(&out));

    let out = fx.run(&["undo", "20200101_000000_000_nothing", "--yes"])?;
    assert_eq!(code(&out), 3, "{}", text(&out));

    // A snapshot without an entity id cannot be undone: usage (2), nothing changed.
    let manual = fx.json(&["create"])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("no id")?
        .to_string();
    let out = fx.run_json(&["undo", &manual, "--yes"])?;
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(parse(&out)?["error"]["kind"], "undo_refused");

    // Schema drift: diff reports it, writes refuse with 6 unless --common-columns.
    fx.conn()?
        .execute_batch("ALTER TABLE measure ADD COLUMN unit TEXT DEFAULT 'kg'")?;
    let d = fx.json(&["diff", &manual, "--table", "measure"])?;
    assert_eq!(d["drift"]["added"][0]["name"], "unit", "{d}");
    assert_eq!(d["identical"], true);
    let out = fx.run_json(&[
        "restore-table",
        &manual,
        "--table",
        "measure",
        "--mode",
        "merge",
        "--yes",
    ])?;
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert_eq!(parse(&out)?["error"]["kind"], "schema_drift");
    let ok = fx.json(&[
        "restore-table",
        &manual,
        "--table",
        "measure",
        "--mode",
        "merge",
        "--yes",
        "--common-columns",
    ])?;
    assert_eq!(ok["tables"][0]["drift"]["added"][0]["name"], "unit");

    // A declared key that names no column, and flags that do not parse.
    let out = fx.run(&["diff", &id, "--table", "measure", "--key", "nope"])?;
    assert_eq!(code(&out), 2, "{}", text(&out));
    for args in [
        &["diff", &id][..],
        &["restore-table", &id, "--table", "measure"],
        &[
            "restore-table",
            &id,
            "--table",
            "measure",
            "--mode",
            "upsert",
        ],
        &["restore-table", &id, "--mode", "merge"],
        &["preview", &id, "--offset", "3"],
    ] {
        let out = fx.run(args)?;
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
    }

    let help = fx.run(&["--help"])?;
    assert!(text(&help).contains("6  conflict"), "{}", text(&help));
    Ok(())
}

#[test]
fn configured_entity_mappings_put_back_cascaded_rows() -> Result<()> {
    let fx = Fx::new()?;
    std::fs::write(
        fx.dir.path().join("snapshot.toml"),
        "[entities.measure]\n\
         table = \"measure\"\n\
         column = \"id\"\n\
         cascade = [{ table = \"measure_area_priority\", column = \"measure_id\" }]\n",
    )?;
    let measures = fx.dump("measure")?;
    let priorities = fx.dump("measure_area_priority")?;
    let id = fx.snapshot_before_delete("42")?;
    fx.conn()?
        .execute("DELETE FROM measure WHERE id = 42", [])?;
    assert_eq!(
        fx.dump("measure_area_priority")?.len(),
        priorities.len() - 2
    );

    let undo = fx.json(&["undo", &id, "--yes"])?;
    assert_eq!(undo["tables"][1]["table"], "measure_area_priority");
    assert_eq!(undo["inserted"], 3, "{undo}");
    assert_eq!(fx.dump("measure")?, measures);
    assert_eq!(fx.dump("measure_area_priority")?, priorities);

    let shown = fx.json(&["config"])?;
    assert!(
        shown["values"]["entities"]["value"]
            .as_str()
            .is_some_and(|v| v.contains("measure_area_priority")),
        "{shown}"
    );

    // An unknown key in a mapping is refused, naming it and its line.
    std::fs::write(
        fx.dir.path().join("snapshot.toml"),
        "[entities.measure]\ntable = \"measure\"\ncolum = \"id\"\n",
    )?;
    let out = fx.run(&["undo", &id, "--dry-run"])?;
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("colum") && text(&out).contains("line 3"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// Runs the binary on a pseudo-terminal (`script`), typing `answer`.
fn on_terminal(fx: &Fx, args: &str, answer: &str) -> Result<Output> {
    use std::io::Write;
    let cmd = format!("SNAPSHOT_EPHEMERAL=0 {BIN} --db {} {args}", fx.db.display());
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(fx.dir.path())
        .env_remove("SNAPSHOT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(answer.as_bytes())?;
    Ok(child.wait_with_output()?)
}

#[test]
fn on_a_terminal_undo_and_restore_table_show_the_plan_and_ask() -> Result<()> {
    let fx = Fx::new()?;
    let id = fx.snapshot_before_delete("42")?;
    fx.conn()?
        .execute("DELETE FROM measure WHERE id = 42", [])?;
    let rows = fx.dump("measure")?;

    let no = on_terminal(&fx, &format!("undo {id}"), "n\n")?;
    let t = text(&no);
    assert_eq!(code(&no), 1, "{t}");
    assert!(
        t.contains("plan:") && t.contains("1 row(s) put back") && t.contains("[y/N]"),
        "{t}"
    );
    assert!(t.contains("aborted: nothing was changed"), "{t}");
    assert_eq!(fx.dump("measure")?, rows, "answered no: nothing changed");

    let no = on_terminal(
        &fx,
        &format!("restore-table {id} --table measure --mode replace"),
        "\n",
    )?;
    assert_eq!(code(&no), 1, "{}", text(&no));
    assert!(text(&no).contains("1 insert(s)"), "{}", text(&no));
    assert_eq!(fx.dump("measure")?, rows);

    let yes = on_terminal(&fx, &format!("undo {id}"), "y\n")?;
    assert_eq!(code(&yes), 0, "{}", text(&yes));
    assert!(text(&yes).contains("safety snapshot"), "{}", text(&yes));
    assert_eq!(
        fx.dump("measure")?.len(),
        50,
        "answered yes: the row is back"
    );
    Ok(())
}
