//! The `api` engine against the local emulation of an EarthRanger-style API: archives whose
//! rows equal what the API holds, lookups left-joined, faults ridden out, a spent budget that
//! keeps the progress, a refused token that stops at once, chunks reused from the previous
//! archive, bad settings, a damaged archive.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use snapshot::engine::api::{ApiConfig, Metadata};
use snapshot::testing::api_emulator::{ApiEmulator, EmulatorOptions};
use snapshot::{
    ApiSource, CheckLevel, Error, LocalStore, SnapshotManager, SnapshotOutcome, SnapshotRecord,
    SnapshotRequest,
};

const TOKEN_VAR: &str = "API_SOURCE_TEST_TOKEN";

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn small() -> EmulatorOptions {
    EmulatorOptions {
        start: day(2016, 1, 1),
        end: day(2016, 9, 1),
        rows_per_day: 24,
        subjects: 6,
        new_field_from: day(2016, 5, 1),
        ..EmulatorOptions::default()
    }
}

struct Fixture {
    api: Arc<ApiEmulator>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(options: EmulatorOptions) -> Result<Fixture> {
        Ok(Fixture {
            api: Arc::new(ApiEmulator::start(options)?),
            dir: tempfile::tempdir()?,
        })
    }

    fn config(&self, edit: impl FnOnce(&mut Value)) -> Result<ApiConfig> {
        let mut v = self.api.engine_options(TOKEN_VAR);
        v["work_dir"] = Value::String(self.dir.path().join("work").display().to_string());
        v["paging"] = Value::Null;
        v.as_object_mut().unwrap().remove("paging");
        edit(&mut v);
        Ok(serde_json::from_value(v)?)
    }

    fn manager(&self, config: ApiConfig) -> Result<SnapshotManager> {
        let source = ApiSource::new(self.api.base_url(), config)?
            .with_token(self.api.options().token.clone());
        Ok(SnapshotManager::builder()
            .source(source)
            .store(LocalStore::open(self.dir.path().join("store"))?)
            .build()?)
    }

    fn unpack(&self, m: &SnapshotManager, r: &SnapshotRecord, name: &str) -> Result<PathBuf> {
        let to = self.dir.path().join(name);
        m.restore_to(&r.snapshot_id, &to)?;
        Ok(to)
    }
}

fn take(m: &SnapshotManager) -> Result<SnapshotRecord> {
    match m.snapshot(SnapshotRequest::new("manual"))? {
        SnapshotOutcome::Taken(r) => Ok(r),
        other => anyhow::bail!("not taken: {other:?}"),
    }
}

fn metadata(dir: &Path) -> Result<Metadata> {
    Ok(serde_json::from_slice(&fs::read(
        dir.join("metadata.json"),
    )?)?)
}

/// Every member but the metadata, by name, with its bytes.
fn members(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "metadata.json") {
                let name = p.strip_prefix(dir)?.display().to_string();
                out.push((name, fs::read(&p)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks an unpacked archive against what the emulator holds: every chunk's rows, no row
/// twice, the CSV's rows and joined columns.
fn check_against_api(api: &ApiEmulator, dir: &Path) -> Result<Metadata> {
    let meta = metadata(dir)?;
    for (name, r) in &meta.resources {
        let mut ids = HashSet::new();
        for c in &r.chunks {
            let expected = api.expected(name, c.from, c.to);
            ensure!(
                c.rows == expected,
                "{name} {}: {} rows, the API holds {expected}",
                c.label,
                c.rows
            );
            let text = fs::read_to_string(dir.join(&c.jsonl.name))?;
            for line in text.lines() {
                let v: Value = serde_json::from_str(line)?;
                let id = v["id"].as_str().context("id")?.to_string();
                ensure!(ids.insert(id.clone()), "{id} twice");
                let field = if name == "observations" {
                    "recorded_at"
                } else {
                    "time"
                };
                let t: DateTime<Utc> = v[field].as_str().context("time")?.parse()?;
                ensure!(t >= c.from && t < c.to, "{id} at {t} outside {}", c.label);
            }
            let mut csv = csv::Reader::from_path(dir.join(&c.csv.name))?;
            ensure!(
                csv.records().count() as u64 == c.rows,
                "{}: CSV rows",
                c.csv.name
            );
        }
        ensure!(
            ids.len() as u64 == api.total(name),
            "{name}: {} of {}",
            ids.len(),
            api.total(name)
        );
    }
    Ok(meta)
}

#[test]
fn an_archive_holds_every_row_once_with_lookups_left_joined() -> Result<()> {
    let f = Fixture::new(small())?;
    let m = f.manager(f.config(|_| {})?)?;
    let r = take(&m)?;
    ensure!(r.source_kind == "api", "{r:?}");
    m.verify_with(&r.snapshot_id, CheckLevel::Full)?;
    let dir = f.unpack(&m, &r, "out")?;
    let meta = check_against_api(&f.api, &dir)?;
    ensure!(meta.chunk == snapshot::engine::api::ChunkUnit::Month);
    let labels: Vec<&str> = meta.resources["observations"]
        .chunks
        .iter()
        .map(|c| c.label.as_str())
        .collect();
    ensure!(
        labels
            == [
                "2016-01", "2016-02", "2016-03", "2016-04", "2016-05", "2016-06", "2016-07",
                "2016-08"
            ],
        "{labels:?}"
    );
    // 2016-03 is an empty month in the emulator: a chunk with a header and no rows.
    ensure!(
        meta.counts["2016-03"]["observations"] == 0,
        "{:?}",
        meta.counts
    );
    ensure!(meta.lookups["subjects"].rows == 6 && meta.lookups["subjectgroups"].rows == 5);
    ensure!(!meta.resumed && meta.requests > 0);

    // The joined columns: known subjects have their name and their group's (a chain),
    // unknown ones (subj-006, subj-007) empty cells.
    let may = &meta.resources["observations"].chunks[4];
    let mut csv = csv::Reader::from_path(dir.join(&may.csv.name))?;
    let header: Vec<String> = csv.headers()?.iter().map(str::to_string).collect();
    ensure!(
        header.ends_with(&[
            "subject_name".into(),
            "subject_subject_subtype".into(),
            "subject_group_id".into(),
            "group_name".into()
        ]),
        "{header:?}"
    );
    ensure!(
        header.contains(&"device_status_properties".to_string()),
        "the field that appears in May"
    );
    ensure!(
        !meta.resources["observations"].chunks[0]
            .columns
            .contains(&"device_status_properties".to_string())
    );
    ensure!(header.contains(&"location.latitude".to_string()));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let (mut known, mut unknown) = (0, 0);
    for rec in csv.records() {
        let rec = rec?;
        let subject = &rec[col("subject_id")];
        let k: u32 = subject.trim_start_matches("subj-").parse()?;
        if k < 6 {
            known += 1;
            ensure!(rec[col("subject_name")] == *format!("Animal {k}"));
            ensure!(rec[col("group_name")] == *format!("Herd {}", k % 5));
        } else {
            unknown += 1;
            ensure!(rec[col("subject_name")].is_empty() && rec[col("group_name")].is_empty());
        }
    }
    ensure!(known > 0 && unknown > 0, "{known} known, {unknown} unknown");
    Ok(())
}

#[test]
fn storms_of_429_and_500_are_ridden_out_and_change_nothing() -> Result<()> {
    let calm = Fixture::new(small())?;
    let m = calm.manager(calm.config(|_| {})?)?;
    let a = calm.unpack(&m, &take(&m)?, "calm")?;

    let stormy = Fixture::new(EmulatorOptions {
        every_429: 3,
        every_500: 7,
        ..small()
    })?;
    let m = stormy.manager(stormy.config(|v| v["retries"] = 4.into())?)?;
    let b = stormy.unpack(&m, &take(&m)?, "stormy")?;
    let meta = metadata(&b)?;
    ensure!(meta.retries > 10, "retries: {}", meta.retries);
    ensure!(members(&a)? == members(&b)?, "the same rows, byte for byte");
    Ok(())
}

#[test]
fn a_spent_budget_is_a_typed_error_and_the_next_run_resumes() -> Result<()> {
    let f = Fixture::new(small())?;
    let config = f.config(|v| {
        v["retry_budget"] = 3.into();
        v["retries"] = 10.into();
    })?;
    let m = f.manager(config)?;
    // The server goes down after the fifth chunk.
    let api = f.api.clone();
    let err = m.snapshot(SnapshotRequest::new("manual").progress(move |p| {
        if p.done >= 5 {
            api.refuse_all(true);
        }
    }));
    let Err(Error::Fetch {
        what,
        page,
        status,
        detail,
        ..
    }) = &err
    else {
        anyhow::bail!("expected a fetch error, got {err:?}");
    };
    ensure!(
        what.starts_with("observations 2016-0") && *page == 1 && *status == Some(503),
        "{err:?}"
    );
    ensure!(detail.contains("budget"), "{detail}");
    ensure!(
        m.list(&snapshot::ListFilter::default())?.is_empty(),
        "nothing listed"
    );
    ensure!(f.dir.path().join("work/progress.json").is_file());
    let log = fs::read_to_string(f.dir.path().join("work/chunks.jsonl"))?;
    let kept = log.lines().count();
    ensure!(kept >= 5, "{kept} chunks kept");

    f.api.refuse_all(false);
    let before = f.api.first_pages();
    let r = take(&m)?;
    let dir = f.unpack(&m, &r, "out")?;
    let meta = check_against_api(&f.api, &dir)?;
    ensure!(meta.resumed, "the second run resumed");
    let after = f.api.first_pages();
    let refetched = after
        .iter()
        .filter(|(k, n)| before.get(*k).is_some_and(|b| b < n))
        .count();
    // The chunk that failed, and at most the next one's first page (read ahead).
    ensure!(refetched <= 2, "{refetched} chunks fetched again");
    ensure!(
        !f.dir.path().join("work").exists(),
        "the work directory goes with a finished run"
    );
    Ok(())
}

#[test]
fn a_refused_token_stops_at_once() -> Result<()> {
    let f = Fixture::new(small())?;
    let source = ApiSource::new(f.api.base_url(), f.config(|_| {})?)?.with_token("a-wrong-token");
    let m = SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(f.dir.path().join("store"))?)
        .build()?;
    let err = m.snapshot(SnapshotRequest::new("manual")).unwrap_err();
    ensure!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    ensure!(f.api.requests() == 1, "{} requests", f.api.requests());
    ensure!(!err.to_string().contains("a-wrong-token"), "{err}");
    Ok(())
}

#[test]
fn a_missing_path_fails_at_once_naming_it() -> Result<()> {
    let f = Fixture::new(small())?;
    let m = f.manager(f.config(|v| v["resources"][1]["path"] = "nothing/".into())?)?;
    let err = m.snapshot(SnapshotRequest::new("manual")).unwrap_err();
    let Error::Fetch {
        what, status, url, ..
    } = &err
    else {
        anyhow::bail!("{err:?}")
    };
    ensure!(
        what == "events 2016-01" && *status == Some(404) && url.ends_with("/nothing/"),
        "{err}"
    );
    Ok(())
}

#[test]
fn whole_chunks_of_the_previous_archive_are_not_fetched_again() -> Result<()> {
    let f = Fixture::new(small())?;
    let m1 = f.manager(f.config(|v| v["end"] = "2016-05-15".into())?)?;
    take(&m1)?;
    let first = f.api.first_pages();
    let m2 = f.manager(f.config(|v| v["end"] = "2016-08-01".into())?)?;
    let r = take(&m2)?;
    let dir = f.unpack(&m2, &r, "out")?;
    let meta = metadata(&dir)?;
    let obs = &meta.resources["observations"].chunks;
    let reused: Vec<&str> = obs
        .iter()
        .filter(|c| c.reused)
        .map(|c| c.label.as_str())
        .collect();
    ensure!(
        reused == ["2016-01", "2016-02", "2016-03", "2016-04"],
        "{reused:?}"
    );
    let after = f.api.first_pages();
    let again: Vec<_> = after
        .iter()
        .filter(|(k, n)| first.get(*k).is_some_and(|b| b < n))
        .collect();
    ensure!(
        again.len() == 2,
        "only May (cut at the 15th) is fetched again, per resource: {again:?}"
    );
    for (name, r) in &meta.resources {
        for c in &r.chunks {
            ensure!(
                c.rows == f.api.expected(name, c.from, c.to),
                "{name} {}",
                c.label
            );
        }
    }
    Ok(())
}

#[test]
fn bad_settings_are_refused_naming_them() -> Result<()> {
    let f = Fixture::new(small())?;
    let bad = |edit: &dyn Fn(&mut Value), needle: &str| -> Result<()> {
        let mut v = f.api.engine_options(TOKEN_VAR);
        edit(&mut v);
        let map = v.as_object().unwrap().clone();
        let err = ApiSource::from_options(&f.api.base_url(), &map).unwrap_err();
        ensure!(
            matches!(err, Error::InvalidInput { .. }) && err.to_string().contains(needle),
            "{err}"
        );
        Ok(())
    };
    bad(&|v| v["colour"] = "red".into(), "colour")?;
    bad(
        &|v| v["resources"] = Value::Array(vec![]),
        "at least one resource",
    )?;
    bad(&|v| v["end"] = "2015-01-01".into(), "empty")?;
    bad(
        &|v| v["lookups"][0]["name"] = "observations".into(),
        "twice",
    )?;
    bad(&|v| v["resources"][0]["name"] = "../x".into(), "letters")?;
    bad(&|v| v["chunk"] = "year".into(), "year")?;
    let err = ApiSource::new("ftp://x/", f.config(|_| {})?).unwrap_err();
    ensure!(err.to_string().contains("http"), "{err}");
    // A token variable that is not set: said before any request.
    let source = ApiSource::new(
        f.api.base_url(),
        f.config(|v| v["token_env"] = "API_SOURCE_TEST_NO_SUCH_VARIABLE".into())?,
    )?;
    let m = SnapshotManager::builder()
        .source(source)
        .store(LocalStore::open(f.dir.path().join("store2"))?)
        .build()?;
    let err = m.snapshot(SnapshotRequest::new("manual")).unwrap_err();
    ensure!(
        err.to_string().contains("API_SOURCE_TEST_NO_SUCH_VARIABLE") && f.api.requests() == 0,
        "{err}"
    );
    // A whole restore into an API: refused, nothing else done.
    let m = f.manager(f.config(|v| v["end"] = "2016-02-01".into())?)?;
    let r = take(&m)?;
    let err = m.restore(&r.snapshot_id).unwrap_err();
    ensure!(
        matches!(err, Error::Unsupported { .. }) && err.to_string().contains("--to"),
        "{err}"
    );
    ensure!(
        m.list(&snapshot::ListFilter::default())?.len() == 1,
        "no safety snapshot was taken"
    );
    Ok(())
}

#[test]
fn a_damaged_archive_fails_its_full_check() -> Result<()> {
    let f = Fixture::new(small())?;
    let m = f.manager(f.config(|v| v["end"] = "2016-03-01".into())?)?;
    let r = take(&m)?;
    // Rewrite the archive with one CSV cell changed and the metadata left as it was.
    let image = f.dir.path().join("store").join(&r.blob_key);
    let src = fs::read(&image)?;
    let mut zin = zip::ZipArchive::new(std::io::Cursor::new(src))?;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zin.len() {
        let mut e = zin.by_index(i)?;
        let name = e.name()?.to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes)?;
        if name.ends_with("2016-01.csv") {
            let pos = bytes
                .iter()
                .rposition(|b| b.is_ascii_digit())
                .context("digit")?;
            bytes[pos] = if bytes[pos] == b'1' { b'2' } else { b'1' };
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())?;
        std::io::Write::write_all(&mut out, &bytes)?;
    }
    let damaged = f.dir.path().join("damaged.zip");
    fs::write(&damaged, out.finish()?.into_inner())?;
    let source = ApiSource::new(f.api.base_url(), f.config(|_| {})?)?;
    use snapshot::Source;
    source.check_image(&damaged, CheckLevel::Quick)?;
    let err = source.check_image(&damaged, CheckLevel::Full).unwrap_err();
    ensure!(
        err.to_string().contains("2016-01.csv") && err.to_string().contains("checksum"),
        "{err}"
    );
    ensure!(source.check_image(&image, CheckLevel::Full).is_ok());
    Ok(())
}
