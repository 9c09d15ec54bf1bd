//! The example apps, run end to end as a user runs them (`cargo run --example …`): each must
//! finish successfully and show what it is there to show. `cargo test` builds the examples
//! beside the test binaries (`target/<profile>/examples/`), so these run the very binaries the
//! test build produced.
//!
//! The examples take snapshots only on a persistent host; CI runners count as ephemeral, so
//! `SNAPSHOT_EPHEMERAL=0` forces them on here. `equipment` runs twice: on SQLite and on the test
//! PostgreSQL server (`SNAPSHOT_TEST_PG_URL`, which `scripts/test` starts).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The example binary `name`, as `cargo test` built it.
fn example(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary outside a target directory")?;
    let path = profile_dir.join("examples").join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds the examples)",
        path.display()
    );
    Ok(path)
}

/// Runs an example in a scratch directory of its own; returns its standard output.
fn run(name: &str, env: &[(&str, &str)]) -> Result<String> {
    let scratch = tempfile::tempdir()?;
    let out = Command::new(example(name)?)
        .current_dir(scratch.path())
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env("TMPDIR", scratch.path())
        .env_remove("SNAPSHOT_PG_URL")
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("run example {name}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "example {name} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

fn expect(name: &str, stdout: &str, lines: &[&str]) -> Result<()> {
    for line in lines {
        ensure!(
            stdout.contains(line),
            "example {name}: {line:?} missing from its output:\n{stdout}"
        );
    }
    Ok(())
}

#[test]
fn quickstart_deletes_lists_restores_and_shows_the_data_back() -> Result<()> {
    let out = run("quickstart", &[])?;
    expect(
        "quickstart",
        &out,
        &[
            "After `delete_measure(42)` (1 row):",
            "outcome Committed",
            "Before delete measure 42",
            "- checked the restored database",
            "The data is back:",
            "verified 2 snapshot(s), 0 failed",
        ],
    )?;
    let back = out.split("The data is back:").nth(1).unwrap_or_default();
    ensure!(
        back.contains("Wildflower meadow"),
        "row 42 is not back:\n{out}"
    );
    Ok(())
}

#[test]
fn lnrs_prunes_to_ten_and_restores_measure_42() -> Result<()> {
    let out = run("lnrs", &[])?;
    expect(
        "lnrs",
        &out,
        &[
            "retention keeps the last 10 of 12) (10):",
            "delete area 999 failed as it should",
            "failed",
            "the pre_restore safety snapshot (1):",
            "measure 42: Hedgerow restoration",
            // The ten the policy keeps, and the restore's safety snapshot apart from them.
            "(11 snapshots)",
        ],
    )
}

const EQUIPMENT: &[&str] = &[
    "backup not needed",
    "Compared with the current data:",
    "2 removed, 1 added, 1 changed",
    "Merged equipment: 2 inserted, 1 updated",
    "Replaced select_options: 5 inserted, 1 updated, 1 deleted",
    "Undo: 1 row(s) back in equipment",
    "0 removed, 0 changed, 1 added",
];

#[test]
fn equipment_runs_the_admin_flow_on_sqlite() -> Result<()> {
    let out = run("equipment", &[])?;
    ensure!(out.starts_with("Equipment app on SQLite"), "{out}");
    expect("equipment", &out, EQUIPMENT)
}

#[test]
fn equipment_runs_the_admin_flow_on_postgresql() -> Result<()> {
    let url = std::env::var("SNAPSHOT_TEST_PG_URL").context(
        "SNAPSHOT_TEST_PG_URL is not set: run the tests with scripts/test, which starts a \
         PostgreSQL server (or point it at a server of your own)",
    )?;
    let out = run("equipment", &[("SNAPSHOT_PG_URL", &url)])?;
    ensure!(out.contains("PostgreSQL"), "not on PostgreSQL:\n{out}");
    expect("equipment", &out, EQUIPMENT)
}

#[test]
fn heat_treatment_schedules_exports_and_restores() -> Result<()> {
    let out = run("heat_treatment", &[])?;
    expect(
        "heat_treatment",
        &out,
        &["after the accident:", "readings are back", "readings:"],
    )
}

#[test]
fn ck_empire_archives_weekly_and_puts_a_deleted_file_back() -> Result<()> {
    let out = run("ck_empire", &[])?;
    expect(
        "ck_empire",
        &out,
        &[
            "job weekly-local-backup: took",
            "pruned 1 old",
            "the weekly job keeps 4 archive(s)",
            "backup_type       manual_backup",
            "status            completed",
            "files_exported    {\"csv_files\": 2, \"json_files\": 1, \"other_files\": 1}",
            "1 removed (csv/monetization_data.csv)",
            "put back 1 file(s)",
            "csv/monetization_data.csv is back: 3 line(s)",
            "weekly_report.html",
            "changed: csv/analytics_summary.csv",
        ],
    )?;
    // Every weekly run fell on a Sunday at 02:00 plant time — give or take the few hours of
    // simulated time a loaded machine adds (one real second is a week: 4 h is 24 ms).
    for line in out.lines().filter(|l| l.contains(": took ")) {
        ensure!(
            line.starts_with("[Sun ")
                && [" 02:", " 03:", " 04:", " 05:"]
                    .iter()
                    .any(|h| line.contains(h)),
            "{line}"
        );
    }
    Ok(())
}

#[test]
fn earthranger_resumes_a_killed_backup_and_lists_its_archive() -> Result<()> {
    let out = run("earthranger", &[("ER_ROWS_PER_DAY", "10")])?;
    expect(
        "earthranger",
        &out,
        &[
            "first run killed after",
            "resumed true, ",
            "lookup subjects: 40 rows",
            "empty months (first three): 2016-03, 2016-10, 2017-05",
            "observations/2016/observations_2016-",
            "subject_name",
            "group_name",
            "listed: 1 snapshot(s)",
        ],
    )?;
    for line in out.lines().filter(|l| l.contains("rows in the archive")) {
        let n: Vec<&str> = line.split_whitespace().collect();
        ensure!(n[1] == n[9], "{line}");
    }
    Ok(())
}
