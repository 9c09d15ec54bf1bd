//! The ER Backup Tool: years of EarthRanger observations and events, month by month, with the
//! subjects and their groups joined into every row — against a local emulation of the API
//! started here (a few hundred thousand rows from 2016 to now, empty months, a field that
//! appears partway, a token check, injected 429s).
//!
//! The backup runs in a child process that is killed partway (as a laptop lid closes); the
//! next run resumes where it stopped, fetching again only the month it was in, and the
//! archive is listed: monthly CSV and JSON-lines files by year, the lookups, `metadata.json`.
//!
//! Run with: `cargo run --example earthranger --features api,api-emulator`
//! (`ER_ROWS_PER_DAY=20` for a lighter run; the default is 100.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use snapshot::engine::api::ApiConfig;
use snapshot::testing::api_emulator::{ApiEmulator, EmulatorOptions};
use snapshot::{ApiSource, LocalStore, SnapshotManager, SnapshotRequest};

const TOKEN_VAR: &str = "ER_TOKEN";

fn manager(
    base: &str,
    options: serde_json::Value,
    store: &str,
) -> snapshot::Result<SnapshotManager> {
    let config: ApiConfig = serde_json::from_value(options).expect("the settings parse");
    SnapshotManager::builder()
        .source(ApiSource::new(base, config)?)
        .store(LocalStore::open(store)?)
        .build()
}

/// The child: one backup run, printing a line per finished chunk.
fn child(base: &str, options: &str, store: &str) -> snapshot::Result<()> {
    let m = manager(base, serde_json::from_str(options).expect("options"), store)?;
    let req = SnapshotRequest::new("monthly_backup").progress(|p| {
        if p.detail != "writing the archive" {
            println!("chunk {}/{} rows {}", p.done, p.total, p.items);
        }
    });
    m.snapshot(req)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--child" {
        return Ok(child(&args[2], &args[3], &args[4])?);
    }
    let rows_per_day = std::env::var("ER_ROWS_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let api = Arc::new(ApiEmulator::start(EmulatorOptions {
        rows_per_day,
        every_429: 97,
        ..EmulatorOptions::default()
    })?);
    let work = tempfile::tempdir()?;
    let store = work.path().join("er-backups");
    let mut options = api.engine_options(TOKEN_VAR);
    options["work_dir"] = work.path().join("progress").display().to_string().into();
    options.as_object_mut().expect("object").remove("end");
    println!(
        "EarthRanger emulation at {}: {} observations and {} events since {}",
        api.base_url(),
        api.total("observations"),
        api.total("events"),
        api.options().start
    );

    // The first run, in a child process killed after a third of the months.
    let mut run = Command::new(std::env::current_exe()?)
        .args([
            "--child",
            &api.base_url(),
            &options.to_string(),
            store.to_str().expect("utf-8"),
        ])
        .env(TOKEN_VAR, &api.options().token)
        .stdout(Stdio::piped())
        .spawn()?;
    let lines = BufReader::new(run.stdout.take().expect("stdout"));
    for line in lines.lines() {
        let line = line?;
        let mut words = line.split_whitespace().skip(1);
        let (Some(progress), Some(_), Some(rows)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (done, total) = progress.split_once('/').unwrap_or(("0", "1"));
        let (done, total): (u64, u64) = (done.parse()?, total.parse()?);
        if done * 3 >= total {
            run.kill()?;
            println!("first run killed after {done} of {total} chunks ({rows} rows)");
            break;
        }
    }
    run.wait()?;

    // The next run resumes.
    let requests_before = api.requests();
    let config: ApiConfig = serde_json::from_value(options.clone())?;
    let m = SnapshotManager::builder()
        .source(ApiSource::new(api.base_url(), config)?.with_token(api.options().token.clone()))
        .store(LocalStore::open(&store)?)
        .build()?;
    let taken = m.snapshot(SnapshotRequest::new("monthly_backup"))?;
    let snapshot::SnapshotOutcome::Taken(record) = taken else {
        return Err(
            "snapshots are switched off on this host (SNAPSHOT_EPHEMERAL=0 forces them)".into(),
        );
    };
    println!(
        "resumed run: {} requests; snapshot {} ({} bytes)",
        api.requests() - requests_before,
        record.snapshot_id,
        record.size_bytes
    );
    let meta = ApiSource::read_metadata(&store.join(&record.blob_key))?;
    println!(
        "metadata: {} .. {}, resumed {}, {} chunks of observations, {} of events",
        meta.from.date_naive(),
        meta.to.format("%Y-%m-%d %H:%M"),
        meta.resumed,
        meta.resources["observations"].chunks.len(),
        meta.resources["events"].chunks.len()
    );
    for (name, r) in &meta.resources {
        let expected = api.expected(name, meta.from, meta.to);
        println!(
            "{name}: {} rows in the archive, the API holds {expected} up to then",
            r.rows
        );
        if r.rows != expected {
            return Err(format!("{name}: rows missing").into());
        }
    }
    for (name, l) in &meta.lookups {
        println!("lookup {name}: {} rows", l.rows);
    }
    let empty: Vec<&str> = meta.resources["observations"]
        .chunks
        .iter()
        .filter(|c| c.rows == 0)
        .map(|c| c.label.as_str())
        .take(3)
        .collect();
    println!("empty months (first three): {}", empty.join(", "));

    // The archive's members, as `snapshot restore ID --to DIR` unpacks them.
    let out = work.path().join("unpacked");
    m.restore_to(&record.snapshot_id, &out)?;
    let mut shown = 0;
    for year in ["2016", "2020"] {
        for entry in std::fs::read_dir(out.join("observations").join(year))? {
            let path = entry?.path();
            if shown < 4 && path.extension().is_some_and(|e| e == "csv") {
                println!("  {}", path.strip_prefix(&out)?.display());
                shown += 1;
            }
        }
    }
    let csv = out.join("observations/2020/observations_2020-08.csv");
    let header = std::fs::read_to_string(&csv)?
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    println!("observations_2020-08.csv columns: {header}");
    println!(
        "listed: {} snapshot(s)",
        m.list(&snapshot::ListFilter::default())?.len()
    );
    Ok(())
}
