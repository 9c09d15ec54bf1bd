//! Rows per second through the API exporter against the emulator's raw page rate, in the same
//! run: a client that only reads the pages (requests every page of every month and parses it)
//! versus a whole snapshot (pages parsed, rows written as JSON lines and as CSV with the
//! lookups joined, the zip, the checksums, the catalog). Then a run stopped after a third of
//! its chunks and resumed: how many chunks the resume fetched twice.
//!
//! Run with: `cargo run --release --example api_bench --features api,api-emulator`
//! (`API_BENCH_ROWS_PER_DAY`, default 100: ~340 000 observations and 34 000 events since 2016;
//! `API_BENCH_RUNS`, default 3: the median is reported; `API_BENCH_LATENCY_MS`, default 0: a
//! delay the emulator adds to every answer, as a remote API's round trip.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use snapshot::engine::api::{ApiConfig, ChunkUnit};
use snapshot::testing::api_emulator::{ApiEmulator, EmulatorOptions};
use snapshot::{ApiSource, LocalStore, SnapshotManager, SnapshotRequest};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Reads every page of every month of both resources, parsing each; the rows read.
fn raw_reader(api: &ApiEmulator, config: &ApiConfig) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {}", api.options().token);
    let (from, to) = config.range(Utc::now());
    let mut rows = 0u64;
    for r in &config.resources {
        let mut start = from;
        while start < to {
            let end = (start + chrono::Months::new(1)).min(to);
            let mut url = format!("{}{}", api.base_url(), r.path);
            let mut first = true;
            loop {
                let mut req = agent.get(&url).header("Authorization", &auth);
                if first {
                    req = req
                        .query("since", start.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .query("until", end.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .query("page_size", "1000");
                }
                let mut resp = req.call().expect("a page");
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 30)
                    .read_to_vec()
                    .expect("a body");
                let page: Value = serde_json::from_slice(&bytes).expect("JSON");
                rows += page["data"]["results"]
                    .as_array()
                    .map_or(0, |a| a.len() as u64);
                match page["data"]["next"].as_str() {
                    Some(next) => url = next.to_string(),
                    None => break,
                }
                first = false;
            }
            start = end;
        }
    }
    rows
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = env("API_BENCH_RUNS", 3).max(1);
    let latency = env("API_BENCH_LATENCY_MS", 0);
    let api = Arc::new(ApiEmulator::start(EmulatorOptions {
        rows_per_day: env("API_BENCH_ROWS_PER_DAY", 100),
        slow_every: u32::from(latency > 0),
        slow: Duration::from_millis(u64::from(latency)),
        ..EmulatorOptions::default()
    })?);
    let work = tempfile::tempdir()?;
    let mut options = api.engine_options("API_BENCH_UNUSED");
    options["reuse_previous"] = false.into();
    options["work_dir"] = work.path().join("progress").display().to_string().into();
    let mut config: ApiConfig = serde_json::from_value(options)?;
    config.token_env = None;
    config.to = Some(api.options().end);
    assert_eq!(config.chunk, ChunkUnit::Month);
    let manager = |config: ApiConfig, store: &str| -> snapshot::Result<SnapshotManager> {
        SnapshotManager::builder()
            .source(ApiSource::new(api.base_url(), config)?.with_token(api.options().token.clone()))
            .store(LocalStore::open(work.path().join(store))?)
            .build()
    };
    let m = manager(config.clone(), "store")?;

    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    let mut rows = 0;
    for _ in 0..runs {
        let t = Instant::now();
        rows = raw_reader(&api, &config);
        raw.push(t.elapsed());
        let t = Instant::now();
        m.snapshot(SnapshotRequest::new("bench"))?;
        ours.push(t.elapsed());
    }
    let (raw, ours) = (median(raw), median(ours));
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "rows: {rows} (observations and events, 2016 → {}, by month; {latency} ms per answer)",
        api.options().end
    );
    println!(
        "raw page reader : {:>8.2} s  {:>9.0} rows/s",
        raw.as_secs_f64(),
        rate(raw)
    );
    println!(
        "snapshot export : {:>8.2} s  {:>9.0} rows/s",
        ours.as_secs_f64(),
        rate(ours)
    );
    println!(
        "ratio           : {:.2}× the raw reader's time (overhead {:+.1}%)",
        ours.as_secs_f64() / raw.as_secs_f64(),
        (ours.as_secs_f64() / raw.as_secs_f64() - 1.0) * 100.0
    );

    // A run that stops after a third of its chunks (the server goes away), then its resume.
    let start = api.first_pages();
    let stopper = api.clone();
    let mut budget = config.clone();
    budget.retry_budget = 0;
    let m = manager(budget, "store2")?;
    let stopped = m.snapshot(SnapshotRequest::new("bench").progress(move |p| {
        if p.done * 3 >= p.total {
            stopper.refuse_all(true);
        }
    }));
    assert!(stopped.is_err(), "the first run stops");
    api.refuse_all(false);
    let before = api.first_pages();
    let t = Instant::now();
    m.snapshot(SnapshotRequest::new("bench"))?;
    let resumed = t.elapsed();
    let after = api.first_pages();
    let fetched: usize = after
        .iter()
        .filter(|(k, n)| **n > before.get(*k).copied().unwrap_or(0))
        .count();
    let n = |m: &std::collections::HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let twice = after
        .keys()
        .filter(|k| n(&before, k) > n(&start, k) && n(&after, k) > n(&before, k))
        .count();
    println!(
        "resume          : {:>8.2} s, {fetched} chunks fetched, {twice} of them fetched before",
        resumed.as_secs_f64()
    );
    Ok(())
}
