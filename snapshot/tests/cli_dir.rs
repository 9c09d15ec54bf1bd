//! The `snapshot` binary on a directory of files (`--db data/`, engine `dir` guessed): create,
//! list, status by type, diff, restore of some files, elsewhere and whole, verify, and the
//! typed errors of bad roots — `--json` output parsed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Result<Fx> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("csv"))?;
        fs::write(data.join("csv/analytics_summary.csv"), "day,views\n1,10\n")?;
        fs::write(data.join("csv/monetization.csv"), "day,usd\n1,1.5\n")?;
        fs::write(data.join("business_ideas.json"), "[]")?;
        Ok(Fx { dir })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env("SNAPSHOT_EPHEMERAL", "0")
            .env_remove("SNAPSHOT_CONFIG")
            .env_remove("SNAPSHOT_DB")
            .env_remove("SNAPSHOT_STORE")
            .env_remove("SNAPSHOT_ENGINE")
            .stdin(Stdio::null())
            .arg("--json")
            .args(args);
        Ok(c.output()?)
    }

    fn json(&self, args: &[&str]) -> Result<Value> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "{args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{args:?}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The error kind and exit code of a failing command.
    fn error(&self, args: &[&str]) -> Result<(String, i32)> {
        let out = self.run(args)?;
        ensure!(!out.status.success(), "{args:?} succeeded");
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
        Ok((
            v["error"]["kind"].as_str().unwrap_or_default().to_string(),
            out.status.code().unwrap_or(-1),
        ))
    }
}

fn read(p: &Path) -> Result<String> {
    Ok(fs::read_to_string(p)?)
}

#[test]
fn a_directory_is_snapshotted_compared_and_restored_from_the_command_line() -> Result<()> {
    let f = Fx::new()?;
    let taken = f.json(&["--db", "data/", "create"])?["taken"][0].clone();
    let id = taken["snapshot_id"].as_str().context("id")?.to_string();
    ensure!(taken["source_kind"] == "dir", "{taken}");
    ensure!(
        taken["blob_key"]
            .as_str()
            .is_some_and(|k| k.ends_with(".zip")),
        "{taken}"
    );
    let list = f.json(&["--db", "data", "list"])?;
    ensure!(list.as_array().map(Vec::len) == Some(1), "{list}");

    let status = f.json(&["--db", "data", "status"])?;
    let files = &status["database"]["files"];
    ensure!(
        files[0]["group"] == "csv_files" && files[0]["files"] == 2,
        "{status}"
    );
    ensure!(
        files[1]["group"] == "json_files" && files[1]["files"] == 1,
        "{status}"
    );

    fs::write(f.data().join("csv/monetization.csv"), "ruined")?;
    fs::remove_file(f.data().join("business_ideas.json"))?;
    fs::write(f.data().join("new.txt"), "since")?;
    let d = f.json(&["--db", "data", "diff", &id])?;
    ensure!(d["added"][0]["path"] == "new.txt", "{d}");
    ensure!(d["removed"][0]["path"] == "business_ideas.json", "{d}");
    ensure!(
        d["changed"][0]["path"] == "csv/monetization.csv"
            && d["changed"][0]["snapshot_bytes"] == 14
            && d["changed"][0]["live_bytes"] == 6,
        "{d}"
    );

    // Some files, by glob: the rest stays.
    let r = f.json(&[
        "--db",
        "data",
        "restore",
        &id,
        "--path",
        "csv/*.csv",
        "--yes",
    ])?;
    ensure!(r["safety_snapshot"].is_string(), "{r}");
    ensure!(read(&f.data().join("csv/monetization.csv"))? == "day,usd\n1,1.5\n");
    ensure!(!f.data().join("business_ideas.json").exists());
    ensure!(read(&f.data().join("new.txt"))? == "since");

    // Elsewhere: a new directory, the live one untouched.
    f.json(&["--db", "data", "restore", &id, "--to", "copy"])?;
    ensure!(read(&f.dir.path().join("copy/business_ideas.json"))? == "[]");
    ensure!(
        f.error(&["--db", "data", "restore", &id, "--to", "copy"])?
            .1
            != 0
    );

    // Whole: the tree as it was.
    f.json(&["--db", "data", "restore", &id, "--yes"])?;
    ensure!(read(&f.data().join("business_ideas.json"))? == "[]");
    ensure!(!f.data().join("new.txt").exists());
    let v = f.json(&["--db", "data", "verify", "--full", &id])?;
    ensure!(v.to_string().contains(&id), "{v}");
    Ok(())
}

#[test]
fn bad_roots_and_globs_are_typed_errors() -> Result<()> {
    let f = Fx::new()?;
    let (kind, code) = f.error(&["--engine", "dir", "--db", "missing", "create"])?;
    ensure!(kind == "source_missing" && code != 0, "{kind} {code}");
    let id = f.json(&["--db", "data", "create"])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    let (kind, code) = f.error(&["--db", "data", "restore", &id, "--path", "[", "--yes"])?;
    ensure!(kind == "invalid_input" && code == 2, "{kind} {code}");
    let (kind, _) = f.error(&["--db", "data", "restore", &id, "--path", "none/*", "--yes"])?;
    ensure!(kind == "invalid_input", "{kind}");
    ensure!(read(&f.data().join("csv/monetization.csv"))? == "day,usd\n1,1.5\n");
    Ok(())
}

#[test]
fn a_weekly_directory_job_with_options_runs_and_rotates() -> Result<()> {
    let f = Fx::new()?;
    fs::write(
        f.dir.path().join("snapshot.toml"),
        r#"[database]
path = "data"

[database.options]
include = ["csv"]
format = "tar.zst"

[[schedule.jobs]]
name = "weekly-local-backup"
cron = "0 2 * * 0"
retention = { keep_last = 2 }
"#,
    )?;
    let jobs = f.json(&["schedule", "--list"])?;
    ensure!(jobs.to_string().contains("weekly-local-backup"), "{jobs}");
    for _ in 0..3 {
        let out = f.run(&["schedule", "--run-now", "--once"])?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = f.json(&["list"])?;
    let runs: Vec<&Value> = list
        .as_array()
        .context("list")?
        .iter()
        .filter(|r| r["entity_type"] == "weekly-local-backup")
        .collect();
    ensure!(runs.len() == 2, "the job's retention keeps 2: {list}");
    ensure!(
        runs.iter().all(|r| r["blob_key"]
            .as_str()
            .is_some_and(|k| k.ends_with(".tar.zst"))),
        "{list}"
    );
    // Only the CSV files, as the options say.
    let id = runs[0]["snapshot_id"].as_str().context("id")?;
    f.json(&["restore", id, "--to", "out"])?;
    ensure!(f.dir.path().join("out/csv/monetization.csv").is_file());
    ensure!(!f.dir.path().join("out/business_ideas.json").exists());

    fs::write(
        f.dir.path().join("snapshot.toml"),
        "[database]\npath = \"data\"\n\n[database.options]\nformat = \"rar\"\n",
    )?;
    let (kind, code) = f.error(&["list"])?;
    ensure!(kind == "invalid_input" && code == 2, "{kind} {code}");
    Ok(())
}
