//! The S3 store and the encryption layer, side by side in one run:
//!
//! 1. upload and download of a 1 GiB snapshot image to SeaweedFS on loopback by `S3Store`
//!    (`put` of a file, `get_to_file`) and by the AWS CLI (`aws s3 cp`, PyPI's `awscli`)
//!    against the same server, alternating, three rounds each (medians);
//! 2. a local snapshot of a SQLite database by the manager into a `LocalStore` and into an
//!    `EncryptedStore` over one, alternating, three rounds each (medians).
//!
//! ```text
//! cargo run --release --example s3_bench --features s3,encrypt
//! SNAPSHOT_BENCH_MB=256 cargo run --release --example s3_bench --features s3,encrypt
//! ```
//!
//! | variable                  | default | meaning |
//! |---------------------------|---------|---------|
//! | `SNAPSHOT_BENCH_MB`       | 1024    | size of the image and of the database, MiB |
//! | `SNAPSHOT_BENCH_DIR`      | temp    | where to build the files (a real disk, not tmpfs) |
//! | `SNAPSHOT_TEST_S3_ENDPOINT` | —     | a server of your own (with `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` and a bucket `snapshot-test`); else one is started with `scripts/s3-server` |
//!
//! The last line is `summary: upload/aws X.XX, download/aws Y.YY, encrypted/plain Z.ZZ`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rusqlite::Connection;
use snapshot::store::{EncryptedStore, EncryptionKey, S3Options, S3Store};
use snapshot::{
    Environment, LocalStore, RetentionPolicy, SnapshotManager, SnapshotRequest, SqliteSource, Store,
};

const MIB: u64 = 1024 * 1024;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A server: the one in the environment, or one started here (stopped on drop).
struct Server {
    endpoint: String,
    dir: Option<PathBuf>,
    script: PathBuf,
}

impl Server {
    fn get() -> Result<Server> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server");
        if let Ok(endpoint) = std::env::var("SNAPSHOT_TEST_S3_ENDPOINT") {
            return Ok(Server {
                endpoint,
                dir: None,
                script,
            });
        }
        let dir = std::env::temp_dir().join(format!("snapshot-s3-bench-{}", std::process::id()));
        let out = Command::new(&script).arg("start").arg(&dir).output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let endpoint = String::from_utf8(out.stdout)?.trim().to_string();
        Ok(Server {
            endpoint,
            dir: Some(dir),
            script,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = Command::new(&self.script).arg("stop").arg(d).status();
        }
    }
}

fn aws() -> PathBuf {
    let venv = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cache/snapshot-venv/bin/aws"))
        .filter(|p| p.exists());
    venv.unwrap_or_else(|| PathBuf::from("aws"))
}

fn aws_cp(endpoint: &str, from: &str, to: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(aws())
        .args([
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "s3",
            "cp",
            "--quiet",
            from,
            to,
        ])
        .output()
        .context("aws (pip install awscli, or run scripts/s3-server once)")?;
    ensure!(
        out.status.success(),
        "aws s3 cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(t.elapsed())
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn transfer(dir: &Path, mb: u64, endpoint: &str) -> Result<(f64, f64)> {
    // An image that does not compress: bytes of a hash chain.
    let image = dir.join("image.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&image)?);
        let mut h = blake3::Hasher::new();
        let mut block = [0u8; 1 << 16];
        for i in 0..(mb * MIB / block.len() as u64) {
            h.update(&i.to_le_bytes());
            h.finalize_xof().fill(&mut block);
            f.write_all(&block)?;
        }
    }
    let store = S3Store::open(S3Options::from_url("s3://snapshot-test/bench")?.endpoint(endpoint))?;
    let (mut ours_up, mut ours_down, mut aws_up, mut aws_down) = (vec![], vec![], vec![], vec![]);
    for round in 0..3 {
        let key = format!("ours-{round}.bin");
        let staged = dir.join("staged.bin");
        std::fs::hard_link(&image, &staged)?;
        sync();
        let t = Instant::now();
        store.put(
            &key,
            snapshot::store::Payload::File(&staged),
            snapshot::PutMode::Create,
        )?;
        ours_up.push(t.elapsed());
        let uri = format!("s3://snapshot-test/bench/aws-{round}.bin");
        sync();
        aws_up.push(aws_cp(endpoint, image.to_str().context("utf-8")?, &uri)?);
        let back = dir.join("back.bin");
        let t = Instant::now();
        store.get_to_file(&key, &back)?;
        ours_down.push(t.elapsed());
        std::fs::remove_file(&back)?;
        aws_down.push(aws_cp(endpoint, &uri, back.to_str().context("utf-8")?)?);
        std::fs::remove_file(&back)?;
        store.delete(&key)?;
        println!(
            "round {round}: upload ours {:.2}s aws {:.2}s; download ours {:.2}s aws {:.2}s",
            ours_up[round].as_secs_f64(),
            aws_up[round].as_secs_f64(),
            ours_down[round].as_secs_f64(),
            aws_down[round].as_secs_f64()
        );
    }
    std::fs::remove_file(&image)?;
    let (ou, au, od, ad) = (
        median(ours_up),
        median(aws_up),
        median(ours_down),
        median(aws_down),
    );
    let mbs = |d: Duration| mb as f64 / d.as_secs_f64();
    println!(
        "{mb} MiB upload: ours {:.2}s ({:.0} MiB/s), aws s3 cp {:.2}s ({:.0} MiB/s)",
        ou.as_secs_f64(),
        mbs(ou),
        au.as_secs_f64(),
        mbs(au)
    );
    println!(
        "{mb} MiB download: ours {:.2}s ({:.0} MiB/s), aws s3 cp {:.2}s ({:.0} MiB/s)",
        od.as_secs_f64(),
        mbs(od),
        ad.as_secs_f64(),
        mbs(ad)
    );
    Ok((
        ou.as_secs_f64() / au.as_secs_f64(),
        od.as_secs_f64() / ad.as_secs_f64(),
    ))
}

fn encryption(dir: &Path, mb: u64) -> Result<f64> {
    let db = dir.join("app.db");
    {
        let conn = Connection::open(&db)?;
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")?;
        let tx = conn.unchecked_transaction()?;
        {
            let mut ins = tx.prepare("INSERT INTO t(v) VALUES (?1)")?;
            let mut h = blake3::Hasher::new();
            let mut row = [0u8; 1000];
            for i in 0..(mb * MIB / 1030) {
                h.update(&i.to_le_bytes());
                h.finalize_xof().fill(&mut row[..500]);
                ins.execute([&row[..]])?;
            }
        }
        tx.commit()?;
    }
    let manager = |store: std::sync::Arc<dyn Store>| -> Result<SnapshotManager> {
        Ok(SnapshotManager::builder()
            .source(SqliteSource::new(&db))
            .store(store)
            .retention(RetentionPolicy::new().keep_last(1))
            .environment(Environment::persistent())
            .build()?)
    };
    let plain = manager(std::sync::Arc::new(LocalStore::open(dir.join("plain"))?))?;
    let key = EncryptionKey::generate().0;
    let sealed = manager(std::sync::Arc::new(EncryptedStore::open(
        LocalStore::open(dir.join("sealed"))?,
        key,
    )?))?;
    let (mut p, mut s) = (vec![], vec![]);
    for round in 0..3 {
        sync();
        let t = Instant::now();
        plain.snapshot(SnapshotRequest::new("delete"))?;
        p.push(t.elapsed());
        sync();
        let t = Instant::now();
        sealed.snapshot(SnapshotRequest::new("delete"))?;
        s.push(t.elapsed());
        println!(
            "round {round}: local snapshot plain {:.2}s, encrypted {:.2}s",
            p[round].as_secs_f64(),
            s[round].as_secs_f64()
        );
    }
    let (p, s) = (median(p), median(s));
    println!(
        "{mb} MiB local snapshot: plain {:.2}s, encrypted {:.2}s",
        p.as_secs_f64(),
        s.as_secs_f64()
    );
    Ok(s.as_secs_f64() / p.as_secs_f64())
}

fn main() -> Result<()> {
    let mb: u64 = std::env::var("SNAPSHOT_BENCH_MB")
        .ok()
        .map_or(Ok(1024), |v| v.parse())?;
    let base =
        std::env::var_os("SNAPSHOT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base)?;
    let server = Server::get()?;
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        anyhow::bail!(
            "set AWS_ACCESS_KEY_ID=snapshot-test AWS_SECRET_ACCESS_KEY=snapshot-test-secret (the \
             credentials of scripts/s3-server) or your server's"
        );
    }
    let (up, down) = if std::env::var_os("SNAPSHOT_BENCH_SKIP_S3").is_some() {
        (f64::NAN, f64::NAN)
    } else {
        transfer(dir.path(), mb, &server.endpoint)?
    };
    let enc = encryption(dir.path(), mb)?;
    println!("summary: upload/aws {up:.2}, download/aws {down:.2}, encrypted/plain {enc:.2}");
    Ok(())
}
