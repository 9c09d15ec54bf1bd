//! The `snapshot` binary exporting a paged API (engine `api`, the local emulation of an
//! EarthRanger-style API in this process): create with `--from/--to/--resume`, list, verify,
//! `restore --to`; kill -9 at random points and resume, against an uninterrupted run; a month of
//! 1 000 000 rows in bounded memory; flags refused where they do not apply.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::NaiveDate;
use serde_json::Value;
use snapshot::testing::api_emulator::{ApiEmulator, EmulatorOptions};

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");
const TOKEN_VAR: &str = "CLI_API_TEST_TOKEN";

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

struct Fx {
    api: ApiEmulator,
    dir: tempfile::TempDir,
}

impl Fx {
    /// An emulator and a configuration for it (`snapshot.toml`), edited by `edit`.
    fn new(options: EmulatorOptions, edit: impl FnOnce(&mut Value)) -> Result<Fx> {
        let api = ApiEmulator::start(options)?;
        let dir = tempfile::tempdir()?;
        let mut opts = api.engine_options(TOKEN_VAR);
        opts["work_dir"] = Value::String(dir.path().join("work").display().to_string());
        edit(&mut opts);
        let config = serde_json::json!({
            "database": {"engine": "api", "url": api.base_url(), "options": opts},
            "store": {"dir": "store"},
        });
        let text = toml::to_string(&config)?;
        fs::write(dir.path().join("snapshot.toml"), text)?;
        Ok(Fx { api, dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env("SNAPSHOT_EPHEMERAL", "0")
            .env(TOKEN_VAR, &self.api.options().token)
            .env_remove("SNAPSHOT_CONFIG")
            .env_remove("SNAPSHOT_DB")
            .env_remove("SNAPSHOT_STORE")
            .env_remove("SNAPSHOT_ENGINE")
            .stdin(Stdio::null())
            .arg("--json")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args).output()?)
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

    fn error(&self, args: &[&str]) -> Result<(String, String, i32)> {
        let out = self.run(args)?;
        ensure!(!out.status.success(), "{args:?} succeeded");
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
        Ok((
            v["error"]["kind"].as_str().unwrap_or_default().to_string(),
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            out.status.code().unwrap_or(-1),
        ))
    }

    /// Takes a snapshot and unpacks it into `name`; the snapshot's id.
    fn take_and_unpack(&self, args: &[&str], name: &str) -> Result<(String, PathBuf)> {
        let mut a = vec!["create"];
        a.extend_from_slice(args);
        let id = self.json(&a)?["taken"][0]["snapshot_id"]
            .as_str()
            .context("id")?
            .to_string();
        let to = self.dir.path().join(name);
        self.json(&["restore", &id, "--to", to.to_str().unwrap()])?;
        Ok((id, to))
    }
}

/// Every member but the metadata, by name, with its blake3.
fn members(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "metadata.json") {
                let name = p.strip_prefix(dir)?.display().to_string();
                out.push((name, blake3::hash(&fs::read(&p)?).to_hex().to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn metadata(dir: &Path) -> Result<Value> {
    Ok(serde_json::from_slice(&fs::read(
        dir.join("metadata.json"),
    )?)?)
}

#[test]
fn create_list_verify_and_unpack_from_the_command_line() -> Result<()> {
    let f = Fx::new(
        EmulatorOptions {
            start: day(2016, 1, 1),
            end: day(2016, 7, 1),
            rows_per_day: 12,
            ..EmulatorOptions::default()
        },
        |_| {},
    )?;
    let (id, dir) = f.take_and_unpack(&["--from", "2016-02-01", "--to", "2016-05-01"], "out")?;
    let meta = metadata(&dir)?;
    let labels: Vec<&str> = meta["resources"]["observations"]["chunks"]
        .as_array()
        .context("chunks")?
        .iter()
        .filter_map(|c| c["label"].as_str())
        .collect();
    ensure!(labels == ["2016-02", "2016-03", "2016-04"], "{labels:?}");
    ensure!(
        dir.join("observations/2016/observations_2016-02.csv")
            .is_file()
    );
    ensure!(dir.join("lookups/subjects.jsonl").is_file());
    let listed = f.json(&["list"])?;
    let rec = &listed.as_array().context("list")?[0];
    ensure!(
        rec["snapshot_id"] == id && rec["source_kind"] == "api",
        "{rec}"
    );
    ensure!(
        !listed.to_string().contains(&f.api.options().token),
        "no token in the catalog"
    );
    f.json(&["verify", &id, "--full"])?;

    // Only some members, by glob.
    let some = f.dir.path().join("some");
    f.json(&[
        "restore",
        &id,
        "--to",
        some.to_str().unwrap(),
        "--path",
        "events/**",
    ])?;
    ensure!(some.join("events/2016/events_2016-03.jsonl").is_file());
    ensure!(!some.join("observations").exists() && some.join("metadata.json").is_file());

    // --resume with nothing to resume; flags of API exports on another engine; bad days.
    let (kind, message, code) = f.error(&["create", "--resume"])?;
    ensure!(
        kind == "invalid_input" && code == 2 && message.contains("resume"),
        "{kind} {message}"
    );
    let (kind, _, _) = f.error(&["create", "--from", "2016-13-01"])?;
    ensure!(kind == "invalid_input", "{kind}");
    let elsewhere = tempfile::tempdir()?;
    let out = f
        .command(&["--db", "x.db", "create", "--from", "2016-01-01"])
        .current_dir(elsewhere.path())
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["error"]["kind"] == "conflicting_flags", "{v}");
    ensure!(
        v["error"]["message"].as_str().unwrap_or("").contains("api"),
        "{v}"
    );
    // A whole restore into the API: refused before anything is done.
    let (kind, message, _) = f.error(&["restore", &id, "--yes"])?;
    ensure!(
        kind == "unsupported" && message.contains("--to"),
        "{kind} {message}"
    );
    Ok(())
}

#[test]
fn a_refused_token_and_an_unreachable_api_are_typed_errors() -> Result<()> {
    let f = Fx::new(
        EmulatorOptions {
            end: day(2016, 2, 1),
            ..EmulatorOptions::default()
        },
        |_| {},
    )?;
    let out = f
        .command(&["create"])
        .env(TOKEN_VAR, "wrong-token")
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["error"]["kind"] == "access_denied", "{v}");
    ensure!(
        !String::from_utf8_lossy(&out.stderr).contains("wrong-token")
            && !v.to_string().contains("wrong-token")
    );
    // The same configuration pointing at a port where nothing listens.
    let g = Fx::new(
        EmulatorOptions {
            end: day(2016, 2, 1),
            ..EmulatorOptions::default()
        },
        |o| {
            o["retries"] = 1.into();
        },
    )?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = g.dir.path().join("snapshot.toml");
    let text = fs::read_to_string(&config)?.replace(
        &g.api.base_url(),
        &format!("http://127.0.0.1:{closed}/api/v1.0/"),
    );
    fs::write(&config, text)?;
    let (kind, message, _) = g.error(&["create"])?;
    ensure!(
        kind == "fetch_failed" && message.contains("lookup subjects, page 1"),
        "{kind} {message}"
    );
    Ok(())
}

#[test]
fn runs_killed_at_random_points_resume_to_the_archive_of_an_uninterrupted_run() -> Result<()> {
    let options = EmulatorOptions {
        start: day(2016, 1, 1),
        end: day(2018, 1, 1),
        rows_per_day: 40,
        ..EmulatorOptions::default()
    };
    // Each run starts afresh from the API (no chunk taken from the previous archive).
    let f = Fx::new(options, |o| o["reuse_previous"] = false.into())?;
    let started = Instant::now();
    let (_, reference) = f.take_and_unpack(&[], "reference")?;
    let whole = started.elapsed();
    let expected = members(&reference)?;
    let ref_meta = metadata(&reference)?;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
    let mut resumed_runs = 0;
    let mut most_refetched = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = f.api.first_pages();
        let mut child = f
            .command(&["create"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(whole.mul_f64((seed % 1000) as f64 / 1000.0));
        child.kill()?;
        let status = child.wait()?;
        let progress = f.dir.path().join("work/progress.json");
        let interrupted = progress.exists();
        let killed_pages = f.api.first_pages();
        let (_, dir) = f.take_and_unpack(&[], &format!("round{round}"))?;
        ensure!(
            members(&dir)? == expected,
            "round {round} ({status}): the archive differs"
        );
        let meta = metadata(&dir)?;
        ensure!(
            meta["counts"] == ref_meta["counts"],
            "round {round}: counts"
        );
        if interrupted {
            resumed_runs += 1;
            ensure!(meta["resumed"] == true, "round {round}: not marked resumed");
            // Chunks the killed run had begun and the resume fetched again: the one being
            // written, and at most the first page of the next (pages are read one ahead).
            let after = f.api.first_pages();
            let again = count_refetched(&before, &killed_pages, &after);
            ensure!(again <= 2, "round {round}: {again} chunks fetched twice");
            most_refetched = most_refetched.max(again);
        }
    }
    ensure!(
        resumed_runs >= 10,
        "only {resumed_runs} of 20 kills landed during a run"
    );
    Ok(())
}

/// Chunks asked for by the killed run (between `before` and `killed`) and again by the
/// resumed run (between `killed` and `after`).
fn count_refetched(
    before: &HashMap<String, u64>,
    killed: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
) -> usize {
    let n = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    after
        .keys()
        .filter(|k| n(killed, k) > n(before, k) && n(after, k) > n(killed, k))
        .count()
}

#[test]
fn a_month_of_a_million_rows_streams_in_bounded_memory() -> Result<()> {
    let options = EmulatorOptions {
        start: day(2016, 2, 1),
        end: day(2016, 3, 1),
        rows_per_day: 10,
        heavy_month: Some((2016, 2, 1_000_000)),
        max_page: 5000,
        ..EmulatorOptions::default()
    };
    let f = Fx::new(options, |o| {
        o["resources"][0]["paging"]["size"] = 5000.into();
    })?;
    let mut child = f
        .command(&["create"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let status_file = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak_kb = 0u64;
    while child.try_wait()?.is_none() {
        if let Ok(s) = fs::read_to_string(&status_file)
            && let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let id = v["taken"][0]["snapshot_id"].as_str().context("id")?;
    let to = f.dir.path().join("out");
    f.json(&[
        "restore",
        id,
        "--to",
        to.to_str().unwrap(),
        "--path",
        "observations/**",
    ])?;
    let meta = metadata(&to)?;
    ensure!(
        meta["counts"]["2016-02"]["observations"] == 1_000_000,
        "{}",
        meta["counts"]
    );
    let csv = fs::metadata(to.join("observations/2016/observations_2016-02.csv"))?.len();
    let jsonl = fs::metadata(to.join("observations/2016/observations_2016-02.jsonl"))?.len();
    println!(
        "1 000 000 rows: peak resident memory of the export {} MiB; the month's CSV {} MiB, \
         JSON lines {} MiB",
        peak_kb / 1024,
        csv >> 20,
        jsonl >> 20
    );
    ensure!(
        peak_kb > 0 && peak_kb < 96 * 1024,
        "peak resident memory {peak_kb} kB"
    );
    ensure!(
        csv + jsonl > 4 * 1024 * peak_kb,
        "the month is several times the memory used: {csv} + {jsonl} bytes"
    );
    Ok(())
}

#[test]
fn a_nightly_job_fetches_only_what_is_new_since_the_last_archive() -> Result<()> {
    let today = chrono::Utc::now().date_naive();
    let start = today - chrono::Days::new(75);
    let options = EmulatorOptions {
        start,
        rows_per_day: 20,
        ..EmulatorOptions::default()
    };
    // No end: each run exports up to now.
    let f = Fx::new(options, |o| {
        o.as_object_mut().unwrap().remove("end");
    })?;
    let config = f.dir.path().join("snapshot.toml");
    let mut text = fs::read_to_string(&config)?;
    text.push_str("\n[[schedule.jobs]]\nname = \"nightly\"\ncron = \"daily\"\ntype = \"db\"\n");
    fs::write(&config, text)?;
    let run = |what: &str| -> Result<()> {
        let out = f.run(&["schedule", "--run-now", "--once"])?;
        ensure!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run("first night")?;
    let first = f.api.first_pages();
    run("second night")?;
    let second = f.api.first_pages();
    let again: Vec<&String> = second
        .iter()
        .filter(|(k, n)| first.get(*k).is_some_and(|b| b < *n))
        .map(|(k, _)| k)
        .collect();
    // Per resource, only the month that is not over yet is fetched again.
    ensure!(again.len() == 2, "fetched again: {again:?}");
    let this_month = today.format("%Y-%m-01").to_string();
    ensure!(again.iter().all(|k| k.contains(&this_month)), "{again:?}");
    let listed = f.json(&["list"])?;
    let ids: Vec<&str> = listed
        .as_array()
        .context("list")?
        .iter()
        .filter_map(|r| r["snapshot_id"].as_str())
        .collect();
    ensure!(ids.len() == 2, "{listed}");
    let to = f.dir.path().join("second");
    f.json(&["restore", ids[0], "--to", to.to_str().unwrap()])?;
    let meta = metadata(&to)?;
    for (name, r) in meta["resources"].as_object().context("resources")? {
        for c in r["chunks"].as_array().context("chunks")? {
            let from = c["from"].as_str().context("from")?.parse()?;
            let upto = c["to"].as_str().context("to")?.parse()?;
            ensure!(
                c["rows"] == f.api.expected(name, from, upto),
                "{name} {}",
                c["label"]
            );
        }
    }
    Ok(())
}
