//! The `snapshot` binary on a directory of files (`--db data/`, engine `dir` guessed): create,
//! list, status by type, diff, restore of some files, elsewhere and whole, verify, and the
//! typed errors of bad roots — `--json` output parsed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

/// Every file of a tree with its content (links by target).
fn tree(root: &Path) -> Result<std::collections::BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            let m = fs::symlink_metadata(&p)?;
            if m.is_dir() {
                stack.push(p.clone());
                out.insert(p.strip_prefix(root)?.to_path_buf(), Vec::new());
            } else {
                out.insert(p.strip_prefix(root)?.to_path_buf(), fs::read(&p)?);
            }
        }
    }
    Ok(out)
}

/// A bigger tree: 300 files of 64 KiB (`version` in each), so a command takes long enough
/// to be killed in the middle.
fn fill(data: &Path, version: u8) -> Result<()> {
    for i in 0..300 {
        let d = data.join(format!("d{}", i % 10));
        fs::create_dir_all(&d)?;
        let mut body = vec![b'a' + version; 64 << 10];
        body[..8].copy_from_slice(format!("{i:08}").as_bytes());
        fs::write(d.join(format!("f{i}.csv")), body)?;
    }
    Ok(())
}

/// Pseudo-random delays in `0..max` ms (no two runs alike, no extra crate).
fn delay(max: u64) -> Duration {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    Duration::from_millis(n.wrapping_mul(0x9E37_79B9) % max.max(1))
}

fn spawn(f: &Fx, args: &[&str]) -> Result<std::process::Child> {
    Ok(Command::new(BIN)
        .current_dir(f.dir.path())
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env_remove("SNAPSHOT_CONFIG")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

#[test]
fn kill_9_during_snapshots_and_restores_leaves_the_directory_whole() -> Result<()> {
    let f = Fx::new()?;
    fill(&f.data(), 1)?;
    let v1 = tree(&f.data())?;
    // Snapshots killed at random points: none listed half-made, the tree untouched.
    for _ in 0..8 {
        let mut child = spawn(&f, &["--db", "data", "create"])?;
        std::thread::sleep(delay(400));
        child.kill()?;
        child.wait()?;
        ensure!(
            tree(&f.data())? == v1,
            "a killed snapshot changed the directory"
        );
    }
    let a = f.json(&["--db", "data", "create"])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    for r in f
        .json(&["--db", "data", "list"])?
        .as_array()
        .context("list")?
    {
        let id = r["snapshot_id"].as_str().context("id")?;
        f.json(&["--db", "data", "verify", "--full", id])?;
    }
    // Restores killed at random points: the directory is the old tree or the snapshot's,
    // never a mixture, never missing.
    fill(&f.data(), 2)?;
    let v2 = tree(&f.data())?;
    // How long a whole restore takes here: the kills fall anywhere within it.
    let t = std::time::Instant::now();
    f.json(&["--db", "data", "restore", &a, "--yes"])?;
    let whole = t.elapsed().as_millis() as u64 + 1;
    ensure!(tree(&f.data())? == v1);
    fill(&f.data(), 2)?;
    let mut seen = (0, 0);
    for _ in 0..10 {
        let mut child = spawn(&f, &["--db", "data", "restore", &a, "--yes"])?;
        std::thread::sleep(delay(whole));
        child.kill()?;
        child.wait()?;
        let now = tree(&f.data())?;
        if now == v1 {
            seen.1 += 1;
            fill(&f.data(), 2)?;
        } else {
            ensure!(now == v2, "a killed restore left a mixture");
            seen.0 += 1;
        }
    }
    // Leftovers of killed runs are beside the directory under staging names, never in it;
    // a restore after them works.
    f.json(&["--db", "data", "restore", &a, "--yes"])?;
    ensure!(tree(&f.data())? == v1);
    eprintln!(
        "killed restores: {} before the swap, {} after",
        seen.0, seen.1
    );
    Ok(())
}

/// `setpriv` running the binary as `nobody`: the binary linked (or copied) first into
/// `dir`, which `nobody` can reach (the build directory may sit under a home it cannot).
fn as_nobody(dir: &Path) -> Result<Command> {
    let exe = dir.join(".snapshot-as-nobody");
    if !exe.exists() && fs::hard_link(BIN, &exe).is_err() {
        fs::copy(BIN, &exe)?;
    }
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe);
    Ok(c)
}

/// Runs the binary as a user that cannot read a file chmod 000: as root, through `setpriv`
/// as `nobody` (root reads everything) on a tree handed to it; else as ourselves.
fn run_unprivileged(f: &Fx, args: &[&str]) -> Result<Output> {
    let root = rustix_euid_is_root()?;
    let mut c = if root {
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(f.dir.path())
            .status()?;
        ensure!(chown.success(), "chown the tree to nobody");
        as_nobody(f.dir.path())?
    } else {
        Command::new(BIN)
    };
    c.current_dir(f.dir.path())
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env("HOME", f.dir.path())
        .env_remove("SNAPSHOT_CONFIG")
        .stdin(Stdio::null())
        .arg("--json")
        .args(args);
    Ok(c.output()?)
}

fn rustix_euid_is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .context("no Uid line")?;
    Ok(uid.split_whitespace().nth(1) == Some("0"))
}

#[test]
fn an_unreadable_file_fails_the_snapshot_by_name_unless_partial_is_allowed() -> Result<()> {
    let f = Fx::new()?;
    let secret = f.data().join("csv/secret.csv");
    fs::write(&secret, "x")?;
    let out = run_unprivileged(&f, &["--db", "data", "create"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // chmod after the tree is handed over (chown keeps modes), owned by root when we are.
    if rustix_euid_is_root()? {
        std::os::unix::fs::chown(&secret, Some(0), Some(0))?;
    }
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000))?;
    let out = run_unprivileged(&f, &["--db", "data", "create"])?;
    ensure!(
        !out.status.success(),
        "an unreadable file must fail the snapshot"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("secret.csv"),
        "the error names the file: {text}"
    );
    fs::write(
        f.dir.path().join("snapshot.toml"),
        "[database]\npath = \"data\"\n\n[database.options]\nallow_partial = true\n",
    )?;
    if rustix_euid_is_root()? {
        std::os::unix::fs::chown(f.dir.path().join("snapshot.toml"), Some(65534), Some(65534))?;
    }
    let out = run_unprivileged(&f, &["create"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let key = v["taken"][0]["blob_key"].as_str().context("key")?;
    let s = snapshot::DirectorySource::summary_of(&f.dir.path().join("backups").join(key))?;
    ensure!(s.status == "partial", "{}", s.status);
    ensure!(
        s.missing.len() == 1 && s.missing[0].0.ends_with("secret.csv"),
        "{:?}",
        s.missing
    );
    ensure!(!s.entries.iter().any(|e| e.path.ends_with("secret.csv")));
    Ok(())
}

#[test]
fn a_full_disk_mid_archive_is_a_typed_error_and_lists_nothing() -> Result<()> {
    let f = Fx::new()?;
    // 4 MiB that do not compress.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(f.data().join("noise.bin"), noise)?;
    let before = tree(&f.data())?;
    // The archive cannot grow past 1 MiB (RLIMIT_FSIZE; the signal ignored, so a write fails
    // with EFBIG as on a full disk) — the store's index is small enough to be written.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 2048; exec '{BIN}' --json --db data create"
        ))
        .current_dir(f.dir.path())
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env_remove("SNAPSHOT_CONFIG")
        .stdin(Stdio::null())
        .output()?;
    ensure!(!out.status.success(), "the snapshot cannot fit");
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let kind = v["error"]["kind"].as_str().unwrap_or_default();
    ensure!(!kind.is_empty() && kind != "internal", "{v}");
    ensure!(
        tree(&f.data())? == before,
        "the live directory is untouched"
    );
    ensure!(f.json(&["--db", "data", "list"])?.as_array().map(Vec::len) == Some(0));
    let doctor = f.json(&["--db", "data", "doctor", "--min-age", "0s"])?;
    ensure!(
        !doctor.to_string().contains(".zip"),
        "no half archive left behind: {doctor}"
    );
    Ok(())
}

#[test]
fn a_restore_over_a_file_another_process_writes_is_refused_and_changes_nothing() -> Result<()> {
    let f = Fx::new()?;
    let id = f.json(&["--db", "data", "create"])?["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    fs::write(f.data().join("csv/monetization.csv"), "changed")?;
    let before = tree(&f.data())?;
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("exec 3>>data/csv/monetization.csv; exec sleep 30")
        .current_dir(f.dir.path())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(200));
    let whole = f.error(&["--db", "data", "restore", &id, "--yes"]);
    let some = f.error(&["--db", "data", "restore", &id, "--path", "csv", "--yes"]);
    writer.kill()?;
    writer.wait()?;
    for (what, r) in [("whole", whole), ("by path", some)] {
        let (kind, code) = r?;
        ensure!(
            kind == "target_locked" && code != 0,
            "{what}: {kind} {code}"
        );
    }
    ensure!(tree(&f.data())? == before, "nothing changed");
    // Once the writer is gone, the restore goes through.
    f.json(&["--db", "data", "restore", &id, "--yes"])?;
    ensure!(read(&f.data().join("csv/monetization.csv"))? == "day,usd\n1,1.5\n");
    Ok(())
}

#[test]
fn verify_on_a_store_that_cannot_be_written_reports_the_data_sound() -> Result<()> {
    let f = Fx::new()?;
    for _ in 0..2 {
        f.json(&["--db", "data", "create"])?;
    }
    // The store readable, not writable: by another user when we are root (root writes
    // anything), else by ourselves with the write bits off.
    let root = rustix_euid_is_root()?;
    let mode = |p: &Path, m: u32| -> Result<()> {
        fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m))?;
        Ok(())
    };
    let store = f.dir.path().join("backups");
    for e in fs::read_dir(&store)? {
        mode(&e?.path(), 0o444)?;
    }
    mode(&store, 0o555)?;
    mode(f.dir.path(), 0o755)?;
    let mut c = if root {
        as_nobody(f.dir.path())?
    } else {
        Command::new(BIN)
    };
    let out = c
        .current_dir(f.dir.path())
        .env("SNAPSHOT_EPHEMERAL", "0")
        .env_remove("SNAPSHOT_CONFIG")
        .stdin(Stdio::null())
        .args(["--json", "--db", "data", "verify", "--all"])
        .output()?;
    mode(&store, 0o700)?;
    ensure!(
        out.status.success(),
        "sound snapshots on a read-only store: exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let passed = v["passed"].as_array().context("passed")?;
    ensure!(
        passed.len() == 2 && v["failed"].as_array().is_some_and(Vec::is_empty),
        "{v}"
    );
    ensure!(passed.iter().all(|p| p["recorded"] == false), "{v}");
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("not recorded"),
        "a warning says so"
    );
    Ok(())
}
