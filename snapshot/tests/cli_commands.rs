//! The `snapshot` binary against real SQLite files in temp dirs: every command, `--json` output
//! parsed, exit codes.
#![cfg(all(feature = "cli", feature = "sqlite"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use rusqlite::Connection;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");

struct Fx {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Fx {
    fn new() -> Result<Fx> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("plant.db");
        let conn = Connection::open(&db)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "CREATE TABLE readings (id INTEGER PRIMARY KEY, water REAL, air REAL, ts TEXT);
             INSERT INTO readings (water, air, ts) VALUES
               (20.5, 22.0, '2025-01-11 14:30:20'),
               (28.75, 29.5, '2025-01-11 14:30:22'),
               (25.25, 26.2, '2025-01-11 14:30:24');
             CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT);
             INSERT INTO settings VALUES ('setpoint', '25.0');",
        )?;
        Ok(Fx { dir, db })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the binary with `--db` and a clean environment, stdin not a terminal.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut c = base_command(self.dir.path());
        c.arg("--db").arg(&self.db).args(args);
        Ok(c.output()?)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all)?;
        ensure!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{args:?}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn rows(&self) -> Result<i64> {
        Ok(Connection::open(&self.db)?
            .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?)
    }
}

fn base_command(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env_remove("SNAPSHOT_CONFIG")
        .env_remove("SNAPSHOT_DB")
        .env_remove("SNAPSHOT_STORE")
        .env_remove("SNAPSHOT_ENGINE")
        .env_remove("SNAPSHOT_TABLE")
        .stdin(Stdio::null());
    c
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

fn id_of(v: &Value, i: usize) -> Result<String> {
    v["taken"][i]["snapshot_id"]
        .as_str()
        .map(str::to_string)
        .context("no snapshot id")
}

#[test]
fn create_list_show_verify_as_json_and_as_tables() -> Result<()> {
    let fx = Fx::new()?;
    let taken = fx.json(&[
        "create", "--type", "all", "--op", "delete", "--entity", "reading", "--id", "2",
    ])?;
    assert_eq!(taken["taken"].as_array().map(Vec::len), Some(2), "{taken}");
    assert_eq!(taken["taken"][0]["source_kind"], "sqlite");
    assert_eq!(taken["taken"][1]["source_kind"], "csv+json");
    assert_eq!(taken["taken"][0]["entity_id"], "2");
    let db_id = id_of(&taken, 0)?;
    let bundle_id = id_of(&taken, 1)?;

    let listed = fx.json(&["list"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    let only_db = fx.json(&["list", "--type", "db"])?;
    assert_eq!(only_db[0]["snapshot_id"], db_id.as_str());
    assert_eq!(only_db.as_array().map(Vec::len), Some(1));
    assert_eq!(
        fx.json(&["list", "--op", "nothing"])?,
        serde_json::json!([])
    );
    assert_eq!(
        fx.json(&["list", "--entity", "reading", "--id", "2", "--limit", "1"])?
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        fx.json(&["list", "--since", "1d"])?
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        fx.json(&["list", "--since", "2999-01-01"])?,
        serde_json::json!([])
    );

    let shown = fx.json(&["show", &bundle_id])?;
    assert_eq!(shown["bundle"]["tables"][0]["table"], "readings");
    assert_eq!(shown["bundle"]["tables"][0]["rows"], 3);

    let verified = fx.json(&["verify", "--all", "--full"])?;
    assert_eq!(verified["passed"].as_array().map(Vec::len), Some(2));
    assert!(
        verified["passed"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["engine_checked"] == true)
    );

    // No terminal: no progress bar, no noise on stderr.
    let quiet = fx.run(&["create", "--type", "csv"])?;
    assert_eq!(code(&quiet), 0);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    assert!(String::from_utf8_lossy(&quiet.stdout).starts_with("took "));

    let table = fx.run(&["list"])?;
    let t = text(&table);
    assert!(
        t.starts_with("ID") && t.contains(&db_id) && t.contains("csv+json"),
        "{t}"
    );
    let v = fx.run(&["verify", &db_id])?;
    assert_eq!(code(&v), 0, "{}", text(&v));
    assert!(text(&v).contains("engine check passed"));
    Ok(())
}

#[test]
fn restore_asks_refuses_on_a_pipe_and_restores_with_yes() -> Result<()> {
    let fx = Fx::new()?;
    let id = id_of(&fx.json(&["create"])?, 0)?;
    Connection::open(&fx.db)?.execute("DELETE FROM readings", [])?;
    assert_eq!(fx.rows()?, 0);

    let refused = fx.run(&["restore", &id])?;
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert!(text(&refused).contains("--yes"), "{}", text(&refused));
    assert_eq!(fx.rows()?, 0, "a refused restore changes nothing");

    let dry = fx.json(&["restore", &id, "--dry-run"])?;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(fx.rows()?, 0);

    let done = fx.json(&["restore", &id, "--yes"])?;
    assert_eq!(fx.rows()?, 3);
    let safety = done["safety_snapshot"]
        .as_str()
        .context("no safety snapshot")?;
    let rec = fx.json(&["show", safety])?;
    assert_eq!(rec["operation_type"], "pre_restore");
    // Kept by the safety rules (grace, keep_safety), not by a pin.
    assert_eq!(rec["pinned"], false);
    Ok(())
}

#[test]
fn restore_to_a_file_and_a_bundle_to_a_directory() -> Result<()> {
    let fx = Fx::new()?;
    let taken = fx.json(&["create", "--type", "all"])?;
    let (db_id, bundle_id) = (id_of(&taken, 0)?, id_of(&taken, 1)?);

    let copy = fx.path("copy.db");
    fx.json(&["restore", &db_id, "--to", copy.to_str().context("path")?])?;
    let n: i64 =
        Connection::open(&copy)?.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?;
    assert_eq!(n, 3);
    let again = fx.run(&["restore", &db_id, "--to", copy.to_str().context("path")?])?;
    assert_eq!(
        code(&again),
        2,
        "an existing target is refused: {}",
        text(&again)
    );

    let over = fx.run(&["restore", &bundle_id, "--yes"])?;
    assert_eq!(code(&over), 2, "{}", text(&over));
    assert!(text(&over).contains("--to DIR"));

    let out = fx.path("unpacked");
    let r = fx.json(&["restore", &bundle_id, "--to", out.to_str().context("path")?])?;
    assert_eq!(r["bundle"]["tables"].as_array().map(Vec::len), Some(2));
    let mut names: Vec<String> = std::fs::read_dir(&out)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    assert_eq!(
        names,
        [
            "manifest.json",
            "readings.csv",
            "readings.json",
            "readings.schema.json",
            "settings.csv",
            "settings.json",
            "settings.schema.json"
        ]
    );
    let csv = std::fs::read_to_string(out.join("readings.csv"))?;
    assert!(
        csv.starts_with("id,water,air,ts\n1,20.5,22.0,2025-01-11 14:30:20\n"),
        "{csv}"
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("readings.json"))?)?;
    assert_eq!(json[1]["water"], 28.75);
    assert_eq!(json[1]["id"], 2);
    Ok(())
}

#[test]
fn prune_by_count_and_by_age_with_dry_run_and_confirmation() -> Result<()> {
    let fx = Fx::new()?;
    for _ in 0..4 {
        fx.json(&["create"])?;
    }
    let plan = fx.json(&["prune", "--keep-last", "2", "--dry-run"])?;
    assert_eq!(plan["would_free_bytes"].as_u64().map(|b| b > 0), Some(true));
    assert_eq!(fx.json(&["list"])?.as_array().map(Vec::len), Some(4));

    let refused = fx.run(&["prune", "--keep-last", "2"])?;
    assert_eq!(code(&refused), 2, "{}", text(&refused));
    assert_eq!(fx.json(&["list"])?.as_array().map(Vec::len), Some(4));

    let done = fx.json(&["prune", "--keep-last", "2", "--yes"])?;
    assert_eq!(done["deleted"].as_array().map(Vec::len), Some(2));
    assert_eq!(fx.json(&["list"])?.as_array().map(Vec::len), Some(2));

    // The original's --cleanup: keep what is younger than N days (all of it, here).
    let by_age = fx.json(&["prune", "--keep-within", "30d", "--yes"])?;
    assert_eq!(by_age["deleted"], serde_json::json!([]));
    let bad = fx.run(&["prune", "--keep-last", "0", "--yes"])?;
    assert_eq!(
        code(&bad),
        2,
        "a policy that keeps nothing is refused: {}",
        text(&bad)
    );
    Ok(())
}

#[test]
fn status_reports_store_counts_and_database_statistics() -> Result<()> {
    let fx = Fx::new()?;
    let none = fx.json(&["status"])?;
    assert_eq!(none["store"]["exists"], false);
    fx.json(&["create", "--type", "all"])?;
    let s = fx.json(&["status", "--table", "readings"])?;
    assert_eq!(s["store"]["count"], 2);
    assert_eq!(s["store"]["by_type"]["sqlite"]["count"], 1);
    assert_eq!(s["store"]["by_type"]["csv+json"]["count"], 1);
    assert_eq!(s["store"]["by_operation"]["manual"]["count"], 2);
    assert!(
        s["store"]["disk_free_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    assert_eq!(
        s["database"]["tables"][0],
        serde_json::json!({"name": "readings", "rows": 3})
    );
    let cols = s["database"]["table"]["columns"]
        .as_array()
        .context("columns")?;
    let water = cols
        .iter()
        .find(|c| c["name"] == "water")
        .context("water")?;
    assert_eq!(water["min"], 20.5);
    assert_eq!(water["max"], 28.75);
    assert_eq!(water["avg"], 24.833333333333332);
    let latest = &s["database"]["table"]["latest"];
    assert_eq!(latest[3], serde_json::json!(["ts", "2025-01-11 14:30:24"]));

    let human = fx.run(&["status", "--table", "readings"])?;
    let t = text(&human);
    assert!(
        t.contains("latest row") && t.contains("28.75") && t.contains("csv+json: 1"),
        "{t}"
    );
    let unknown = fx.run(&["status", "--table", "nope"])?;
    assert_eq!(code(&unknown), 3, "{}", text(&unknown));
    assert!(
        text(&unknown).contains("readings, settings"),
        "{}",
        text(&unknown)
    );
    Ok(())
}

#[test]
fn exit_codes_not_found_verification_failed_usage_and_locked() -> Result<()> {
    let fx = Fx::new()?;
    let id = id_of(&fx.json(&["create"])?, 0)?;

    let missing = fx.run(&["show", "20200101_000000_000_nothing"])?;
    assert_eq!(code(&missing), 3, "{}", text(&missing));
    let hostile = fx.run(&["show", "../../etc/passwd"])?;
    assert_eq!(code(&hostile), 3);
    let no_db = base_command(fx.dir.path())
        .args(["--db", "missing.db", "create"])
        .output()?;
    assert_eq!(code(&no_db), 3, "{}", text(&no_db));

    // Flip a byte of the blob: verify fails with 4, and says so in JSON too.
    let blob = fx.path("backups").join(format!("{id}.sqlite3"));
    let mut bytes = std::fs::read(&blob)?;
    bytes[200] ^= 0xff;
    std::fs::write(&blob, bytes)?;
    let bad = fx.run(&["verify", &id])?;
    assert_eq!(code(&bad), 4, "{}", text(&bad));
    assert!(text(&bad).contains("checksum mismatch"));
    let bad_json = fx.run(&["--json", "verify", "--all"])?;
    assert_eq!(code(&bad_json), 4);
    let v: Value = serde_json::from_slice(&bad_json.stdout)
        .context("verify --all --json still prints its report")?;
    assert_eq!(v["failed"][0]["kind"], "checksum_mismatch");

    for args in [
        &["create", "--tables", "readings"][..],
        &["verify", &id, "--all"],
        &["verify"],
        &["create", "--id", "3"],
        &["frobnicate"],
        &["list", "--since", "the day before"],
    ] {
        let out = fx.run(args)?;
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
    }
    let err_json = fx.run(&["--json", "show", "nope"])?;
    let v: Value = serde_json::from_slice(&err_json.stdout)?;
    assert_eq!(v["error"]["exit_code"], 3);

    // A database another process holds open is restored into (SQLite's backup API): the
    // holder's own connection sees the rows back.
    let id2 = id_of(&fx.json(&["create"])?, 0)?;
    let holder = Connection::open(&fx.db)?;
    holder.execute("DELETE FROM readings WHERE id = 1", [])?;
    let into = fx.run(&["restore", &id2, "--yes"])?;
    assert_eq!(code(&into), 0, "{}", text(&into));
    assert!(text(&into).contains("backup API"), "{}", text(&into));
    let n: i64 = holder.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?;
    assert_eq!(n, 3);
    // One that keeps a write transaction open: busy, locked (5) once the retries are spent,
    // nothing changed.
    holder.execute_batch("BEGIN IMMEDIATE; DELETE FROM readings WHERE id = 1;")?;
    let locked = fx.run(&["--json", "restore", &id2, "--yes"])?;
    holder.execute_batch("COMMIT")?;
    assert_eq!(code(&locked), 5, "{}", text(&locked));
    let v: Value = serde_json::from_slice(&locked.stdout)?;
    assert_eq!(v["error"]["kind"], "busy", "{v}");
    assert_eq!(fx.rows()?, 2);
    drop(holder);

    let elsewhere = fx.run(&["--store", "nowhere", "list"])?;
    assert_eq!(
        code(&elsewhere),
        3,
        "a missing store is not found: {}",
        text(&elsewhere)
    );
    assert!(
        !fx.path("nowhere").exists(),
        "listing does not create a store"
    );

    let help = fx.run(&["--help"])?;
    assert_eq!(code(&help), 0);
    for needle in [
        "Exit codes",
        "3  not found",
        "4  verification failed",
        "5  locked",
    ] {
        assert!(text(&help).contains(needle), "--help lacks {needle:?}");
    }
    Ok(())
}

#[test]
fn doctor_finds_and_repairs_leftovers_and_a_lost_index() -> Result<()> {
    let fx = Fx::new()?;
    fx.json(&["create"])?;
    fx.json(&["create"])?;
    let store = fx.path("backups");
    std::fs::write(
        store.join(".snapshot-staging-1-1-000000001-x.sqlite3"),
        b"partial",
    )?;
    std::fs::write(store.join("snapshot_metadata.json"), b"[{\"snapshot_id\": ")?;

    let found = fx.run(&["--json", "doctor", "--min-age", "0s"])?;
    assert_eq!(code(&found), 4, "{}", text(&found));
    let v: Value = serde_json::from_slice(&found.stdout)?;
    assert_eq!(v["staging_leftovers"].as_array().map(Vec::len), Some(1));
    assert!(v["index_problem"].is_string());

    let list = fx.run(&["list"])?;
    assert_eq!(
        code(&list),
        4,
        "a corrupt index is a verification failure: {}",
        text(&list)
    );
    assert!(text(&list).contains("doctor"), "{}", text(&list));

    let repaired = fx.json(&["doctor", "--repair", "--min-age", "0s"])?;
    assert_eq!(repaired["rebuilt_records"], 2);
    assert_eq!(fx.json(&["list"])?.as_array().map(Vec::len), Some(2));
    let clean = fx.json(&["doctor"])?;
    assert_eq!(clean["clean"], true);
    Ok(())
}

#[test]
fn config_file_env_and_flags_with_provenance_and_errors_naming_key_and_line() -> Result<()> {
    let fx = Fx::new()?;
    std::fs::write(
        fx.path("snapshot.toml"),
        "[database]\npath = \"plant.db\"\n\n[store]\ndir = \"vault\"\n\n[retention]\nkeep_last = 3\nkeep_within = \"7d\"\n\n[status]\ntable = \"readings\"\n",
    )?;
    let run = |args: &[&str], env: &[(&str, &str)]| -> Result<Output> {
        let mut c = base_command(fx.dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        Ok(c.args(args).output()?)
    };
    let out = run(&["--json", "config", "--show"], &[])?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| text(&out))?;
    assert!(
        v["values"]["store.dir"]["value"]
            .as_str()
            .is_some_and(|s| s.ends_with("/vault"))
    );
    assert!(
        v["values"]["store.dir"]["origin"]
            .as_str()
            .is_some_and(|s| s.ends_with("snapshot.toml:5")),
        "{v}"
    );
    assert_eq!(
        v["values"]["retention"]["value"],
        "last 3, within 7d, safety grace 7d"
    );

    let env = run(&["--json", "config"], &[("SNAPSHOT_STORE", "elsewhere")])?;
    let v: Value = serde_json::from_slice(&env.stdout)?;
    assert_eq!(v["values"]["store.dir"]["origin"], "env SNAPSHOT_STORE");
    let flag = run(
        &["--json", "--store", "third", "config"],
        &[("SNAPSHOT_STORE", "elsewhere")],
    )?;
    let v: Value = serde_json::from_slice(&flag.stdout)?;
    assert_eq!(v["values"]["store.dir"]["origin"], "flag --store");

    // The configuration drives the commands: the store is `vault`.
    let made = run(&["--json", "create"], &[])?;
    assert_eq!(code(&made), 0, "{}", text(&made));
    assert!(fx.path("vault").join("snapshot_metadata.json").exists());
    let human = run(&["config", "--show"], &[])?;
    assert!(text(&human).contains("snapshot.toml:2"), "{}", text(&human));

    for (toml, needles) in [
        (
            "[database]\npath = \"plant.db\"\npaht = 1\n",
            &["paht", "line 3"][..],
        ),
        (
            "[retention]\nkeep_last = \"ten\"\n",
            &["keep_last", "line 2"],
        ),
        (
            "[retention]\nkeep_within = \"30x\"\n",
            &["keep_within", "line 2", "unknown unit"],
        ),
        (
            "[[schedule.jobs]]\nname = \"h\"\ncron = \"99 * * * *\"\n",
            &["cron", "line 3"],
        ),
        ("[store]\ndir = 7\n", &["dir", "line 2"]),
    ] {
        std::fs::write(fx.path("bad.toml"), toml)?;
        let out = run(&["--config", "bad.toml", "config"], &[])?;
        assert_eq!(code(&out), 2, "{toml:?}: {}", text(&out));
        for n in needles {
            assert!(
                text(&out).contains(n),
                "{toml:?}: {n:?} not in {}",
                text(&out)
            );
        }
    }
    Ok(())
}

#[test]
fn export_command_writes_files_and_refuses_bad_tables_and_directories() -> Result<()> {
    let fx = Fx::new()?;
    let out = fx.path("exports");
    let m = fx.json(&[
        "export",
        "--out",
        out.to_str().context("path")?,
        "--format",
        "csv",
        "--tables",
        "readings",
    ])?;
    assert_eq!(m["tables"].as_array().map(Vec::len), Some(1));
    assert!(out.join("readings.csv").exists() && out.join("readings.schema.json").exists());
    assert!(!out.join("readings.json").exists());

    let again = fx.run(&[
        "export",
        "--out",
        out.to_str().context("path")?,
        "--format",
        "csv",
    ])?;
    assert_eq!(
        code(&again),
        1,
        "existing files are never overwritten: {}",
        text(&again)
    );
    assert!(text(&again).contains("already exists"));

    let unknown = fx.run(&["export", "--out", "x", "--tables", "nope"])?;
    assert_eq!(code(&unknown), 3, "{}", text(&unknown));
    assert!(text(&unknown).contains("\"nope\""));

    let under_a_file = fx.db.join("sub");
    let unwritable = fx.run(&["export", "--out", under_a_file.to_str().context("path")?])?;
    assert_eq!(code(&unwritable), 1, "{}", text(&unwritable));
    assert!(
        text(&unwritable).contains("plant.db/sub"),
        "{}",
        text(&unwritable)
    );

    let bundle = fx.run(&["create", "--type", "json", "--tables", "nope"])?;
    assert_eq!(code(&bundle), 3, "{}", text(&bundle));
    Ok(())
}

#[test]
fn progress_is_drawn_on_a_terminal_only() -> Result<()> {
    let fx = Fx::new()?;
    Connection::open(&fx.db)?.execute_batch(
        "CREATE TABLE filler (b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO filler SELECT randomblob(65536) FROM n;",
    )?;
    // `script` gives the command a pseudo-terminal.
    let cmd = format!("SNAPSHOT_EPHEMERAL=0 {BIN} --db {} create", fx.db.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(fx.dir.path())
        .stdin(Stdio::null())
        .output()?;
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains("B/s") && t.contains("MiB") && t.contains("plant.db ["),
        "no progress bar on a terminal: {t}"
    );
    let piped = fx.run(&["create"])?;
    assert!(piped.stderr.is_empty(), "{}", text(&piped));
    Ok(())
}

/// `snapshot list --json | head`: a reader that goes away ends the tool quietly, with the status
/// of a process killed by SIGPIPE (141), not with a panic.
#[test]
fn a_closed_pipe_ends_the_tool_quietly() -> Result<()> {
    let fx = Fx::new()?;
    for _ in 0..3 {
        ensure!(fx.run(&["create"])?.status.success());
    }
    for args in [&["--json", "list"][..], &["list"][..]] {
        let mut c = base_command(fx.dir.path());
        c.arg("--db").arg(&fx.db).args(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn()?;
        drop(child.stdout.take()); // the reader is gone before the tool writes
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(141),
            "{args:?}: status {:?}, stderr {stderr}",
            out.status
        );
        ensure!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    Ok(())
}

/// The ids of `list --json`, newest first, and how many are safety snapshots.
fn listed(fx: &Fx) -> Result<(Vec<String>, usize)> {
    let list = fx.json(&["list"])?;
    let rows = list.as_array().context("list")?;
    let safety = rows
        .iter()
        .filter(|r| r["operation_type"] == "pre_restore")
        .count();
    let ids = rows
        .iter()
        .filter(|r| r["operation_type"] != "pre_restore")
        .map(|r| r["snapshot_id"].as_str().unwrap_or_default().to_string())
        .collect();
    Ok((ids, safety))
}

#[test]
fn restores_never_cost_the_history_nor_the_snapshot_they_used() -> Result<()> {
    // Default policy (last 10): ten snapshots, restore the oldest: it stays listed.
    let fx = Fx::new()?;
    let mut ids = Vec::new();
    for i in 0..10 {
        let v = fx.json(&["create", "--op", &format!("s{i}")])?;
        ids.push(
            v["taken"][0]["snapshot_id"]
                .as_str()
                .context("id")?
                .to_string(),
        );
    }
    fx.json(&["restore", &ids[0], "--yes"])?;
    let (regular, safety) = listed(&fx)?;
    ensure!(
        regular.len() == 10 && regular.contains(&ids[0]),
        "{regular:?}"
    );
    ensure!(safety == 1);

    // keep_last = 3: three restores of the newest leave the three snapshots and the safety
    // snapshots apart (three by default past their grace, all within it).
    let fx = Fx::new()?;
    std::fs::write(fx.path("snapshot.toml"), "[retention]\nkeep_last = 3\n")?;
    for i in 0..3 {
        fx.json(&["create", "--op", &format!("s{i}")])?;
    }
    let (before, _) = listed(&fx)?;
    for _ in 0..3 {
        fx.json(&["restore", &before[0], "--yes"])?;
    }
    let (after, safety) = listed(&fx)?;
    ensure!(after == before, "{after:?} vs {before:?}");
    ensure!(safety == 3, "{safety}");

    // unpin: a pinned snapshot goes back under the rules.
    let pinned = fx.json(&["create", "--op", "kept", "--pin"])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    for i in 0..4 {
        fx.json(&["create", "--op", &format!("t{i}")])?;
    }
    ensure!(listed(&fx)?.0.contains(&pinned), "a pinned snapshot stays");
    let v = fx.json(&["unpin", &pinned])?;
    ensure!(v["pinned"] == false, "{v}");
    fx.json(&["prune", "--yes"])?;
    ensure!(
        !listed(&fx)?.0.contains(&pinned),
        "unpinned, the rules drop it"
    );
    Ok(())
}

#[test]
fn a_lost_or_stale_index_hides_no_snapshot_and_doctor_puts_it_right() -> Result<()> {
    let fx = Fx::new()?;
    for i in 0..3 {
        fx.json(&["create", "--op", &format!("s{i}")])?;
    }
    let index = fx.path("backups/snapshot_metadata.json");
    std::fs::remove_file(&index)?;
    // list: every snapshot, read from the sidecars, and a warning that says so.
    let out = fx.run(&["--json", "list"])?;
    ensure!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(listed.as_array().map(Vec::len) == Some(3), "{listed}");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("index"),
        "a warning"
    );
    let out = fx.run(&["--json", "doctor", "--min-age", "0s"])?;
    ensure!(!out.status.success(), "a lost index is a problem");
    // The next create writes the index again, with every snapshot.
    fx.json(&["create", "--op", "s3"])?;
    ensure!(index.exists());
    ensure!(fx.json(&["list"])?.as_array().map(Vec::len) == Some(4));
    // A stale index: one record dropped by hand. Doctor finds it, and repair lists it again
    // (never deleting what a sidecar describes).
    let mut records: Value = serde_json::from_slice(&std::fs::read(&index)?)?;
    let dropped = records.as_array_mut().context("index")?.remove(0);
    std::fs::write(&index, serde_json::to_vec(&records)?)?;
    ensure!(fx.json(&["list"])?.as_array().map(Vec::len) == Some(3));
    let out = fx.run(&["--json", "doctor", "--min-age", "0s"])?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        report["unlisted_records"][0] == dropped["snapshot_id"]
            && report["orphan_objects"] == serde_json::json!([]),
        "{report}"
    );
    fx.json(&["doctor", "--min-age", "0s", "--repair"])?;
    let list = fx.json(&["list"])?;
    ensure!(list.as_array().map(Vec::len) == Some(4), "{list}");
    let blob = fx
        .path("backups")
        .join(dropped["blob_key"].as_str().context("key")?);
    ensure!(blob.exists(), "the blob a sidecar describes is kept");
    fx.json(&["verify", dropped["snapshot_id"].as_str().context("id")?])?;
    Ok(())
}

#[test]
fn hostile_text_in_a_record_never_reaches_the_terminal_raw() -> Result<()> {
    let fx = Fx::new()?;
    let evil = "\u{1b}[2J\u{1b}[31mPWNED\nfake row\u{202e}";
    let id = fx.json(&[
        "create",
        "--entity",
        "measure",
        "--id",
        evil,
        "--description",
        evil,
    ])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    for args in [vec!["list"], vec!["show", id.as_str()]] {
        let out = fx.run(&args)?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{args:?}: {text:?}"
        );
        ensure!(
            text.contains("\\u{1b}[2J"),
            "{args:?}: shown escaped: {text}"
        );
        ensure!(
            !text.lines().any(|l| l.starts_with("fake row")),
            "{args:?}: a row was split"
        );
    }
    // JSON keeps the exact text.
    ensure!(fx.json(&["list"])?[0]["entity_id"] == evil);
    Ok(())
}

#[test]
fn a_create_that_takes_nothing_says_so_and_exits_7_unless_forced() -> Result<()> {
    let fx = Fx::new()?;
    let run = |args: &[&str]| -> Result<Output> {
        let mut c = base_command(fx.dir.path());
        c.env("SNAPSHOT_EPHEMERAL", "1")
            .arg("--db")
            .arg(&fx.db)
            .args(args);
        Ok(c.output()?)
    };
    let out = run(&["create"])?;
    ensure!(out.status.code() == Some(7), "exit {:?}", out.status.code());
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was taken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--json", "create"])?;
    ensure!(out.status.code() == Some(7));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        v["taken"] == serde_json::json!([]) && v["disabled"].is_string(),
        "{v}"
    );
    let out = run(&["--json", "create", "--force"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["taken"].as_array().map(Vec::len) == Some(1), "{v}");
    Ok(())
}

#[test]
fn a_dedup_store_from_the_config_shares_pages_and_says_so() -> Result<()> {
    let fx = Fx::new()?;
    std::fs::write(
        fx.path("snapshot.toml"),
        "[store]\ndir = \"backups\"\nmode = \"dedup\"\n",
    )?;
    let first = fx.json(&["create", "--type", "all"])?;
    let second = fx.json(&["create"])?;
    let (a, b) = (id_of(&first, 0)?, id_of(&second, 0)?);
    let shown = fx.json(&["show", &b])?;
    assert_eq!(
        shown["stored_bytes"], 0,
        "an unchanged database adds nothing: {shown}"
    );
    let bundle = id_of(&first, 1)?;
    let shown = fx.json(&["show", &bundle])?;
    assert!(
        shown["bundle"].is_object(),
        "the bundle's manifest: {shown}"
    );
    let s = fx.json(&["status"])?;
    let storage = &s["store"]["storage"];
    assert!(
        storage["dedup_ratio"].as_f64().is_some_and(|r| r > 1.5),
        "{s}"
    );
    assert!(
        storage["stored_bytes"].as_u64() < storage["logical_bytes"].as_u64(),
        "{s}"
    );
    let human = text(&fx.run(&["status"])?);
    assert!(
        human.contains("dedup") && human.contains("packs"),
        "{human}"
    );
    fx.json(&["verify", &a])?;
    Connection::open(&fx.db)?.execute("DELETE FROM readings", [])?;
    assert_eq!(fx.rows()?, 0);
    fx.json(&["restore", &a, "--yes"])?;
    assert_eq!(fx.rows()?, 3);
    // The objects of the layer are no orphans; the store is clean.
    let clean = fx.json(&["doctor", "--min-age", "0s"])?;
    assert_eq!(clean["clean"], true, "{clean}");
    // Damaged packs are named by verify (a byte flipped near the end of each).
    let packs: Vec<PathBuf> = std::fs::read_dir(fx.path("backups"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    ensure!(!packs.is_empty(), "no pack in the store");
    for pack in &packs {
        let mut bytes = std::fs::read(pack)?;
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        std::fs::write(pack, &bytes)?;
    }
    let bad = fx.run(&["verify", &a])?;
    assert_eq!(code(&bad), 4, "{}", text(&bad));
    assert!(text(&bad).contains("chunk"), "{}", text(&bad));
    Ok(())
}
