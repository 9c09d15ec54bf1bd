//! The `snapshot` binary against a real PostgreSQL server: the database named by a
//! configuration file (`[database] url_env`) or by `--db postgres://…`; take, list, preview,
//! diff, undo, restore-table, whole restore, verify and status round trips checked with the
//! server's own text of every row; bad URLs, an unreachable server, a missing database and a
//! refused role as typed errors with their exit codes; exports refused; and the password of the
//! URL never printed by any command.
//!
//! The server comes from `SNAPSHOT_TEST_PG_URL` (a superuser URL; `./scripts/test` starts a
//! throwaway cluster and sets it). Without it these tests fail — they never skip. Each test
//! works in a database and as a login role (with a password) of its own, created and dropped
//! by the test, so tests run in parallel.
#![cfg(all(feature = "cli", feature = "postgres"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail, ensure};
use postgres::{Client, NoTls};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");

/// The test server's superuser URL.
fn server_url() -> Result<String> {
    match std::env::var("SNAPSHOT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => bail!(
            "SNAPSHOT_TEST_PG_URL is not set: run ./scripts/test (it installs PostgreSQL when \
             absent and starts a throwaway cluster), or install PostgreSQL and set \
             SNAPSHOT_TEST_PG_URL to a superuser URL of a server these tests may create \
             databases and roles on"
        ),
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `host:port` of the test server for a URL (a socket directory percent-encoded).
fn url_host(admin: &str) -> Result<String> {
    let config: postgres::Config = admin.parse()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string().replace('/', "%2F"),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok(format!("{host}:{port}"))
}

/// A database of its own, owned by a login role of its own whose password is in the URL the
/// tool is given; both dropped afterwards.
struct Pg {
    admin: String,
    name: String,
    role: String,
    password: String,
    /// `postgres://role:password@host:port/name`.
    url: String,
    /// The same without the password: what the tool may print.
    location: String,
    /// A key/value string for the test's own connections.
    conninfo: String,
}

impl Pg {
    fn new(tag: &str) -> Result<Pg> {
        let admin = server_url()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("snapcli_{tag}_{}_{n}", std::process::id());
        let role = name.clone();
        let password = format!("Pw{}x{n}NeverPrinted", std::process::id());
        let mut c = Client::connect(&admin, NoTls)
            .context("cannot connect to SNAPSHOT_TEST_PG_URL (is the test server running?)")?;
        // One statement each: CREATE DATABASE cannot run in a transaction block.
        c.batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"
        ))?;
        c.batch_execute(&format!("CREATE DATABASE \"{name}\" OWNER \"{role}\""))?;
        let host = url_host(&admin)?;
        let config: postgres::Config = admin.parse()?;
        let mut conninfo = String::new();
        for h in config.get_hosts() {
            let h = match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            conninfo.push_str(&format!("host='{h}' "));
        }
        if let Some(p) = config.get_ports().first() {
            conninfo.push_str(&format!("port={p} "));
        }
        conninfo.push_str(&format!(
            "user='{role}' password='{password}' dbname='{name}'"
        ));
        Ok(Pg {
            url: format!("postgres://{role}:{password}@{host}/{name}"),
            location: format!("postgres://{role}@{host}/{name}"),
            admin,
            name,
            role,
            password,
            conninfo,
        })
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.conninfo, NoTls)?)
    }

    /// Every row of `table` as the server writes it (`row::text`: exact for every type),
    /// sorted.
    fn rows(&self, table: &str) -> Result<Vec<String>> {
        let mut c = self.client()?;
        c.batch_execute("SET extra_float_digits = 3; SET TimeZone = 'UTC'")?;
        let rows = c.query(
            &format!("SELECT (r__.*)::text FROM {table} r__ ORDER BY 1"),
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// 20 measures with two area priorities each (deleted with their measure by a cascade)
    /// and a table without key, in `schema`.
    fn seed(&self, schema: &str) -> Result<()> {
        let mut c = self.client()?;
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET search_path = {schema};
             CREATE TABLE measure (id integer PRIMARY KEY, name text NOT NULL,
                                   cost numeric(12, 2), note text, data bytea,
                                   at timestamptz);
             CREATE TABLE measure_area_priority (
                 id integer PRIMARY KEY,
                 measure_id integer NOT NULL REFERENCES measure(id) ON DELETE CASCADE,
                 area text NOT NULL, priority integer);
             CREATE TABLE log (at text, msg text);
             INSERT INTO measure
                 SELECT i, 'measure ' || i || ' é', i * 1.25,
                        CASE WHEN i % 2 = 1 THEN 'note ' || i END,
                        decode(repeat(lpad(to_hex(i), 2, '0'), 3), 'hex'),
                        timestamptz '2025-01-11 14:30:00+00' + i * interval '1 minute'
                 FROM generate_series(1, 20) i;
             INSERT INTO measure_area_priority
                 SELECT i * 10 + k, i, CASE k WHEN 0 THEN 'north' ELSE 'south' END, k + 1
                 FROM generate_series(1, 20) i, generate_series(0, 1) k;
             INSERT INTO log VALUES ('t1', 'a'), ('t2', 'b');"
        ))?;
        Ok(())
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
            let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.role));
        }
    }
}

/// A temp dir to run the tool in, and the database.
struct Fx {
    dir: tempfile::TempDir,
    pg: Pg,
}

impl Fx {
    fn new(tag: &str) -> Result<Fx> {
        Ok(Fx {
            dir: tempfile::tempdir()?,
            pg: Pg::new(tag)?,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the binary in the temp dir with a clean environment (no `SNAPSHOT_*` or `PG*`
    /// variables but `extra`), stdin not a terminal. Whatever it prints must not hold the
    /// password.
    fn run_env(&self, extra: &[(&str, &str)], args: &[&str]) -> Result<Output> {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("SNAPSHOT_") || k.starts_with("PG") {
                c.env_remove(k);
            }
        }
        c.env("SNAPSHOT_EPHEMERAL", "0");
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.args(args).output()?;
        ensure!(
            !text(&out).contains(&self.pg.password),
            "{args:?} printed the password:\n{}",
            text(&out)
        );
        Ok(out)
    }

    /// Runs with `--db URL --store backups` before `args`.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["--db", self.pg.url.as_str(), "--store", "backups"];
        all.extend_from_slice(args);
        self.run_env(&[], &all)
    }

    /// `run` with `--json`; requires success and parses standard output.
    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all)?;
        ensure!(out.status.success(), "{args:?} failed: {}", text(&out));
        parse(&out)
    }

    fn taken(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let v = self.json(&all)?;
        ensure!(v["taken"][0]["source_kind"] == "postgres", "{v}");
        v["taken"][0]["snapshot_id"]
            .as_str()
            .map(str::to_string)
            .context("no snapshot id")
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

/// The `error` document of a failed `--json` run, checked against the exit code.
fn json_error(out: &Output, exit: i32, kind: &str) -> Result<String> {
    ensure!(code(out) == exit, "expected exit {exit}: {}", text(out));
    let v = parse(out)?;
    ensure!(v["error"]["kind"] == kind, "expected kind {kind}: {v}");
    ensure!(v["error"]["exit_code"] == exit, "{v}");
    v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .context("no message")
}

/// A loopback port nothing listens on.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[test]
fn config_file_source_snapshot_list_diff_undo_restore_table() -> Result<()> {
    let fx = Fx::new("config")?;
    fx.pg.seed("public")?;
    let measures = fx.pg.rows("measure")?;
    let priorities = fx.pg.rows("measure_area_priority")?;
    std::fs::write(
        fx.path("snapshot.toml"),
        "[database]\n\
         engine = \"postgres\"\n\
         url_env = \"CLI_TEST_PG_URL\"   # the password stays out of this file\n\
         schema = \"public\"\n\
         tables = [\"measure\", \"measure_area_priority\"]\n\
         \n\
         [store]\n\
         dir = \"backups\"\n\
         \n\
         [entities.measure]\n\
         cascade = [{ table = \"measure_area_priority\", column = \"measure_id\" }]\n",
    )?;
    let env = [("CLI_TEST_PG_URL", fx.pg.url.as_str())];
    let run = |args: &[&str]| -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = fx.run_env(&env, &all)?;
        ensure!(out.status.success(), "{args:?} failed: {}", text(&out));
        parse(&out)
    };

    // The effective configuration: where each value came from, the password hidden.
    let shown = run(&["config", "--show"])?;
    let values = &shown["values"];
    assert_eq!(values["database.engine"]["value"], "postgres");
    assert_eq!(
        values["database.url"]["value"],
        format!(
            "$CLI_TEST_PG_URL = {}",
            fx.pg.url.replace(&fx.pg.password, "***")
        )
    );
    assert!(
        values["database.url"]["origin"]
            .as_str()
            .is_some_and(|o| o.ends_with("snapshot.toml:3")),
        "{shown}"
    );
    assert_eq!(
        values["database.tables"]["value"],
        "measure, measure_area_priority"
    );

    // Before deleting measure 7: a snapshot of the configured tables.
    let taken = run(&[
        "create", "--op", "delete", "--entity", "measure", "--id", "7",
    ])?;
    let rec = &taken["taken"][0];
    assert_eq!(rec["source_kind"], "postgres");
    assert_eq!(rec["source_path"], fx.pg.location.as_str());
    let id = rec["snapshot_id"].as_str().context("id")?.to_string();
    let tables = run(&["preview", &id])?;
    assert_eq!(
        tables["tables"],
        json!(["measure", "measure_area_priority"]),
        "log is not a configured table"
    );
    let page = run(&[
        "preview", &id, "--table", "measure", "--offset", "5", "--limit", "3",
    ])?;
    assert_eq!(page["total_rows"], 20);
    assert_eq!(page["rows"][0]["id"], 6);
    assert_eq!(page["rows"][0]["name"], "measure 6 é");
    assert_eq!(page["next_offset"], 8);

    // The call: measure 7 deleted (its priorities with it), and another change.
    fx.pg.client()?.batch_execute(
        "DELETE FROM measure WHERE id = 7; UPDATE measure SET cost = 0 WHERE id = 3;",
    )?;
    assert_eq!(fx.pg.rows("measure_area_priority")?.len(), 38);

    let listed = run(&["list"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["snapshot_id"], id.as_str());
    assert_eq!(listed[0]["entity_id"], "7");

    let d = run(&["diff", &id, "--table", "measure"])?;
    assert_eq!(
        (&d["removed"], &d["changed"], &d["added"], &d["unchanged"]),
        (&json!(1), &json!(1), &json!(0), &json!(18)),
        "{d}"
    );
    assert_eq!(
        d["changed_columns"],
        json!([{ "column": "cost", "rows": 1 }])
    );
    let removed = d["sample"]
        .as_array()
        .and_then(|s| s.iter().find(|r| r["kind"] == "removed"))
        .context("no removed row in the sample")?;
    assert_eq!(removed["key"], json!({ "id": 7 }));

    // Undo puts back measure 7 and its priorities — only those.
    let u = run(&["undo", &id, "--yes"])?;
    assert_eq!(u["inserted"], 3, "{u}");
    assert_eq!(u["updated"], 0, "{u}");
    let safety = u["safety_snapshot"]
        .as_str()
        .context("no safety snapshot")?;
    assert_eq!(fx.pg.rows("measure_area_priority")?, priorities);
    let now = fx.pg.rows("measure")?;
    assert_eq!(now.len(), 20);
    let row = |rows: &[String], id: &str| {
        rows.iter()
            .find(|r| r.starts_with(&format!("({id},")))
            .cloned()
    };
    assert_eq!(
        row(&now, "7"),
        row(&measures, "7"),
        "measure 7 is back exactly"
    );
    assert!(
        row(&now, "3").is_some_and(|r| r.contains(",0.00,")),
        "measure 3 keeps its later change"
    );

    // restore-table replace: the table becomes the snapshot's.
    let r = run(&[
        "restore-table",
        &id,
        "--table",
        "measure",
        "--mode",
        "replace",
        "--yes",
    ])?;
    assert_eq!(
        (&r["updated"], &r["inserted"]),
        (&json!(1), &json!(0)),
        "{r}"
    );
    assert_eq!(fx.pg.rows("measure")?, measures);
    let d = run(&["diff", &id, "--table", "measure"])?;
    assert_eq!(d["identical"], true, "{d}");

    // Everything in the store verifies, the safety snapshots included.
    let listed = run(&["list"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert!(listed.as_array().is_some_and(|l| {
        l.iter()
            .any(|r| r["snapshot_id"] == safety && r["operation_type"] == "pre_restore")
    }));
    let v = run(&["verify", "--all", "--full"])?;
    assert_eq!(v["passed"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["failed"], json!([]));

    // Without the variable the file names, the configuration is refused (exit 2) by name.
    let out = fx.run_env(&[], &["--json", "list"])?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(
        msg.contains("snapshot.toml:3")
            && msg.contains("[database] url_env")
            && msg.contains("CLI_TEST_PG_URL"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn command_line_url_schema_tables_and_whole_restore() -> Result<()> {
    let fx = Fx::new("cmdline")?;
    fx.pg.seed("inv")?;
    // A decoy of the same name in public: --pg-schema decides which one is snapshotted.
    fx.pg.client()?.batch_execute(
        "CREATE TABLE public.measure (id integer PRIMARY KEY, name text);
         INSERT INTO public.measure VALUES (1, 'decoy');",
    )?;
    let decoy = fx.pg.rows("public.measure")?;
    let measures = fx.pg.rows("inv.measure")?;
    let priorities = fx.pg.rows("inv.measure_area_priority")?;
    let log = fx.pg.rows("inv.log")?;

    // --tables picks the tables of a PostgreSQL snapshot.
    let some = fx.taken(&[
        "--pg-schema",
        "inv",
        "--tables",
        "measure,measure_area_priority",
    ])?;
    let t = fx.json(&["--pg-schema", "inv", "preview", &some])?;
    assert_eq!(t["tables"], json!(["measure", "measure_area_priority"]));
    let all = fx.taken(&["--pg-schema", "inv", "--op", "before-cleanup"])?;
    let t = fx.json(&["--pg-schema", "inv", "preview", &all])?;
    assert_eq!(
        t["tables"],
        json!(["log", "measure", "measure_area_priority"])
    );
    let shown = fx.json(&["--pg-schema", "inv", "show", &all])?;
    assert_eq!(
        shown["source_path"],
        format!("{}?schema=inv", fx.pg.location)
    );

    // The cleanup that went wrong.
    fx.pg.client()?.batch_execute(
        "SET search_path = inv;
         DELETE FROM measure WHERE id > 12;
         UPDATE measure SET name = 'renamed' WHERE id = 1;
         INSERT INTO measure VALUES (99, 'new', 1, NULL, NULL, NULL);
         DELETE FROM log;",
    )?;
    let broken = (
        fx.pg.rows("inv.measure")?,
        fx.pg.rows("inv.measure_area_priority")?,
    );

    // Over the live server: no terminal and no --yes is refused; a dry run changes nothing.
    let out = fx.run(&["--json", "--pg-schema", "inv", "restore", &all])?;
    json_error(&out, 2, "confirmation_required")?;
    let plan = fx.json(&["--pg-schema", "inv", "restore", &all, "--dry-run"])?;
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["safety_snapshot"], Value::Null);
    assert!(
        plan["steps"].as_array().is_some_and(|s| s.iter().any(|x| x
            .as_str()
            .is_some_and(|x| x.contains("would replace table")))),
        "{plan}"
    );
    assert_eq!(
        (
            fx.pg.rows("inv.measure")?,
            fx.pg.rows("inv.measure_area_priority")?
        ),
        broken
    );

    // The whole restore: every table of the snapshot replaced, in one transaction — `log`,
    // which has no key, replaced whole (a whole restore needs no key; merge and undo do).
    let r = fx.json(&["--pg-schema", "inv", "restore", &all, "--yes"])?;
    assert!(
        r["steps"].as_array().is_some_and(|s| s
            .iter()
            .any(|x| x == "replaced table \"log\": 2 inserted, 0 updated, 0 deleted")),
        "{r}"
    );
    assert_eq!(r["target"], format!("{}?schema=inv", fx.pg.location));
    let safety = r["safety_snapshot"]
        .as_str()
        .context("no safety snapshot")?;
    assert_eq!(fx.pg.rows("inv.measure")?, measures);
    assert_eq!(fx.pg.rows("inv.measure_area_priority")?, priorities);
    assert_eq!(fx.pg.rows("inv.log")?, log);
    assert_eq!(fx.pg.rows("public.measure")?, decoy, "public is untouched");

    // The safety snapshot holds the broken state: restoring it is the undo of the restore.
    let d = fx.json(&["--pg-schema", "inv", "diff", safety, "--table", "measure"])?;
    assert_eq!(d["removed"], 1, "{d}"); // measure 99 is gone since
    assert_eq!(d["added"], 8, "{d}"); // measures 13..20 are back since

    // Status: the tables of the schema, their rows, column statistics; the password hidden.
    let s = fx.json(&["--pg-schema", "inv", "status", "--table", "measure"])?;
    let db = &s["database"];
    assert_eq!(db["engine"], "postgres", "{s}");
    assert_eq!(db["path"], format!("{}?schema=inv", fx.pg.location));
    assert_eq!(
        db["tables"],
        json!([
            { "name": "log", "rows": 2 },
            { "name": "measure", "rows": 20 },
            { "name": "measure_area_priority", "rows": 40 },
        ])
    );
    assert_eq!(db["table"]["rows"], 20);
    let cost = db["table"]["columns"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "cost"))
        .context("no cost statistics")?;
    assert_eq!(cost["min"], json!(1.25));
    assert_eq!(cost["max"], json!(25.0));
    assert_eq!(db["table"]["latest"][0], json!(["id", 20]));
    let human = fx.run(&["--pg-schema", "inv", "status"])?;
    assert!(human.status.success(), "{}", text(&human));
    assert!(
        text(&human).contains("measure_area_priority  40"),
        "{}",
        text(&human)
    );

    // Exports read a file: refused, typed, exit 2, nothing taken.
    for args in [
        &["--json", "create", "--type", "csv"][..],
        &["--json", "create", "--type", "all"][..],
        &["--json", "export", "--out", "exports"][..],
    ] {
        let out = fx.run(args)?;
        let msg = json_error(&out, 2, "unsupported")?;
        assert!(msg.contains(&fx.pg.location), "{msg}");
    }
    assert!(!fx.path("exports").exists());
    assert_eq!(fx.json(&["list"])?.as_array().map(Vec::len), Some(3));
    Ok(())
}

#[test]
fn bad_urls_and_settings_are_usage_errors_naming_where() -> Result<()> {
    let fx = Fx::new("badurl")?;
    let host = url_host(&fx.pg.admin)?;
    let pw = fx.pg.password.clone();

    for (db, needle) in [
        (format!("postgres://u:{pw}@127.0.0.1:notaport/d"), "port"),
        (format!("postgresql://u:{pw}@{host}/d?bogus=1"), "bogus"),
    ] {
        let out = fx.run_env(&[], &["--json", "--db", &db, "--store", "b", "list"])?;
        let msg = json_error(&out, 2, "invalid_input")?;
        assert!(
            msg.contains("database.url") && msg.contains("flag --db") && msg.contains(needle),
            "{msg}"
        );
    }
    let out = fx.run_env(
        &[("SNAPSHOT_DB", &format!("postgres://u:{pw}@h:x/d"))],
        &["--json", "--store", "b", "list"],
    )?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(msg.contains("env SNAPSHOT_DB"), "{msg}");

    // The file: a URL of another scheme, and a path holding a URL.
    std::fs::write(
        fx.path("bad.toml"),
        format!("[store]\ndir = \"b\"\n\n[database]\nurl = \"mysql://u:{pw}@h/d\"\n"),
    )?;
    let out = fx.run_env(&[], &["--json", "--config", "bad.toml", "list"])?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(
        msg.contains("bad.toml:5") && msg.contains("[database] url") && msg.contains("mysql"),
        "{msg}"
    );
    std::fs::write(
        fx.path("bad.toml"),
        format!("[database]\npath = \"{}\"\n", fx.pg.url),
    )?;
    let out = fx.run_env(&[], &["--json", "--config", "bad.toml", "list"])?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(
        msg.contains("bad.toml:2") && msg.contains("[database] path") && msg.contains("url"),
        "{msg}"
    );

    // Conflicting flags, a schema for a file, no store.
    let out = fx.run(&["--json", "--engine", "sqlite", "list"])?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(msg.contains("--engine") && msg.contains("--db"), "{msg}");
    let out = fx.run_env(
        &[],
        &["--json", "--db", "plant.db", "--pg-schema", "inv", "list"],
    )?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(msg.contains("--pg-schema"), "{msg}");
    let out = fx.run_env(&[], &["--json", "--db", &fx.pg.url, "create"])?;
    let msg = json_error(&out, 2, "invalid_input")?;
    assert!(msg.contains("--store"), "{msg}");
    assert!(!fx.path("b").exists() && !fx.path("backups").exists());
    Ok(())
}

#[test]
fn unreachable_missing_and_refused_are_typed_with_exit_codes() -> Result<()> {
    let fx = Fx::new("unreach")?;
    fx.pg.seed("public")?;
    let measures = fx.pg.rows("measure")?;
    let id = fx.taken(&["--tables", "measure,measure_area_priority"])?;
    fx.pg
        .client()?
        .batch_execute("UPDATE measure SET cost = 0")?;
    let changed = fx.pg.rows("measure")?;

    // No server at the address: exit 1, `unreachable`, naming host and port; nothing taken or
    // changed.
    let port = free_port()?;
    let gone = format!(
        "postgres://{}:{}@127.0.0.1:{port}/{}",
        fx.pg.role, fx.pg.password, fx.pg.name
    );
    let at = format!("127.0.0.1:{port}");
    for args in [
        vec!["create"],
        vec!["diff", &id, "--table", "measure"],
        vec![
            "restore-table",
            &id,
            "--table",
            "measure",
            "--mode",
            "replace",
            "--yes",
        ],
        vec!["restore", &id, "--yes"],
    ] {
        let mut all = vec!["--json", "--db", &gone, "--store", "backups"];
        all.extend(args.iter().copied());
        let out = fx.run_env(&[], &all)?;
        let msg = json_error(&out, 1, "unreachable")?;
        assert!(msg.contains(&at), "{args:?}: {msg}");
        let human = fx.run_env(&[], &all[1..])?;
        assert_eq!(code(&human), 1, "{}", text(&human));
        assert!(
            String::from_utf8_lossy(&human.stderr).starts_with("error: postgres server at"),
            "{}",
            text(&human)
        );
    }
    assert_eq!(fx.pg.rows("measure")?, changed);
    assert_eq!(
        fx.json(&["list"])?.as_array().map(Vec::len),
        Some(1),
        "only the first snapshot"
    );

    // A database that does not exist: exit 3, `source_missing`.
    let host = url_host(&fx.pg.admin)?;
    let missing = format!(
        "postgres://{}:{}@{host}/{}_missing",
        fx.pg.role, fx.pg.password, fx.pg.name
    );
    let out = fx.run_env(
        &[],
        &["--json", "--db", &missing, "--store", "backups", "create"],
    )?;
    let msg = json_error(&out, 3, "source_missing")?;
    assert!(msg.contains("_missing"), "{msg}");

    // A role that may not log in: exit 1, `access_denied`, naming the user.
    let nologin = format!("{}_nologin", fx.pg.role);
    Client::connect(&fx.pg.admin, NoTls)?
        .batch_execute(&format!("CREATE ROLE \"{nologin}\" NOLOGIN"))?;
    let refused = format!("postgres://{nologin}:whatever@{host}/{}", fx.pg.name);
    let out = fx.run_env(
        &[],
        &["--json", "--db", &refused, "--store", "backups", "create"],
    );
    let _ = Client::connect(&fx.pg.admin, NoTls)?
        .batch_execute(&format!("DROP ROLE IF EXISTS \"{nologin}\""));
    let msg = json_error(&out?, 1, "access_denied")?;
    assert!(msg.contains(&nologin), "{msg}");

    // The server is back: the same snapshot restores.
    fx.json(&["restore", &id, "--yes"])?;
    assert_eq!(fx.pg.rows("measure")?, measures);
    Ok(())
}

#[test]
fn the_password_is_never_printed() -> Result<()> {
    // Every run of the tool checks its output for the password (Fx::run_env); this test runs
    // every command that prints the database or its settings, successful and failing.
    let fx = Fx::new("secret")?;
    fx.pg.seed("public")?;
    let id = fx.taken(&["--op", "delete", "--entity", "measure", "--id", "2"])?;
    fx.pg
        .client()?
        .batch_execute("DELETE FROM measure WHERE id = 2")?;
    for args in [
        vec!["config", "--show"],
        vec!["--json", "config", "--show"],
        vec!["status"],
        vec!["--json", "status", "--table", "measure"],
        vec!["list"],
        vec!["--json", "list"],
        vec!["show", &id],
        vec!["--json", "show", &id],
        vec!["verify", "--all", "--full"],
        vec!["diff", &id, "--table", "measure"],
        vec!["undo", &id, "--dry-run"],
        vec!["undo", &id],
        vec!["restore", &id],
        vec![
            "restore-table",
            &id,
            "--table",
            "measure",
            "--mode",
            "merge",
        ],
        vec!["restore", &id, "--dry-run"],
        vec!["create", "--type", "json"],
        vec!["undo", &id, "--yes"],
    ] {
        let out = fx.run(&args)?;
        let all = text(&out);
        assert!(
            !all.contains(&fx.pg.password) && !all.contains(&fx.pg.url),
            "{args:?}: {all}"
        );
        if args.iter().any(|a| *a == "show" || *a == "status") {
            assert!(all.contains(&fx.pg.location), "{args:?}: {all}");
        }
    }
    // Shown redacted where the settings themselves are shown.
    let shown = fx.run(&["config", "--show"])?;
    assert!(
        text(&shown).contains(&fx.pg.url.replace(&fx.pg.password, "***")),
        "{}",
        text(&shown)
    );
    // In the records on disk too.
    for entry in std::fs::read_dir(fx.path("backups"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read_to_string(&path)?;
            assert!(!body.contains(&fx.pg.password), "{}", path.display());
        }
    }
    let index = std::fs::read_to_string(fx.path("backups").join("snapshot_metadata.json"))?;
    assert!(!index.contains(&fx.pg.password));
    assert!(Path::new(&fx.path("backups")).is_dir());
    Ok(())
}
