//! One export run: the lookups fetched once, every chunk of every resource fetched (or taken
//! whole from the previous archive) and committed to the work directory one by one, then the
//! archive written from them. A run killed at any point leaves the chunks it finished; the
//! next run with the same settings resumes there and redoes only the chunk that was cut.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

use chrono::Utc;
use serde_json::Value;

use crate::engine::api::ApiSource;
use crate::engine::api::archive::{self, Archive, ChunkMeta, LookupMeta, Metadata, ResourceMeta};
use crate::engine::api::chunk::{self, names};
use crate::engine::api::client::Client;
use crate::engine::api::config::{ApiConfig, Lookup, Resource};
use crate::engine::api::pack;
use crate::engine::api::pages::{self, Rows, each_page};
use crate::engine::api::progress::{ChunkDone, FileDone, LookupDone, Progress, WorkDir};
use crate::engine::api::rows::{Joins, Loaded};
use crate::engine::api::window::{Window, windows};
use crate::error::{Error, Result};
use crate::fs_util;
use crate::source::{CaptureProgress, ProgressFn};

/// What a run is given beside its source.
pub(crate) struct RunInput<'a> {
    /// The new archive's path.
    pub dest: &'a std::path::Path,
    /// The previous archive of this source, when the manager has one.
    pub previous: Option<&'a std::path::Path>,
    /// Who hears the progress.
    pub listener: Option<&'a ProgressFn<'a>>,
}

/// The token: given in code, else from the variable the settings name.
fn token(source: &ApiSource) -> Result<Option<String>> {
    if let Some(t) = source.token() {
        return Ok(Some(t.to_string()));
    }
    let config = source.config();
    let Some(var) = &config.token_env else {
        return Ok(None);
    };
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        _ => Err(Error::invalid(
            "database.options",
            format!(
                "api engine: token_env: the variable {var} is not set (it holds the API's token)"
            ),
        )),
    }
}

/// The progress to go on from: the interrupted run's when it matches, else a fresh one.
fn start(source: &ApiSource, work: &WorkDir) -> Result<Progress> {
    let config = source.config();
    let fingerprint = config.fingerprint(source.location());
    let (from, to) = config.range(Utc::now());
    let explicit_end = config.to.or(config.end).is_some();
    match work.load() {
        Some(mut p)
            if p.fingerprint == fingerprint && p.from == from && (!explicit_end || p.to == to) =>
        {
            p.resumed += 1;
            p.chunks
                .retain(|_, c| work.intact(&c.csv) && work.intact(&c.jsonl));
            if let Some(l) = &p.lookups
                && !l.values().all(|l| work.intact(&l.file))
            {
                p.lookups = None;
            }
            Ok(p)
        }
        _ if config.resume => Err(Error::invalid(
            "resume",
            format!(
                "no interrupted run of these settings and range to resume in {}",
                work.path().display()
            ),
        )),
        _ => {
            work.clear()?;
            Ok(Progress::new(fingerprint, from, to))
        }
    }
}

/// Runs the export into `input.dest`.
///
/// # Errors
/// [`Error::InvalidInput`] for a missing token; [`Error::Busy`] when another run holds the
/// work directory; [`Error::InvalidInput`] (field `resume`) for `resume` without an interrupted run; the
/// client's [`Error::Fetch`]/[`Error::AccessDenied`] naming the chunk and page (the progress
/// is kept); I/O errors.
pub(crate) fn run(source: &ApiSource, input: &RunInput<'_>) -> Result<()> {
    let config = source.config();
    let token = token(source)?;
    let work = WorkDir::open(&source.work_dir())?;
    let mut progress = start(source, &work)?;
    work.commit(&progress)?;
    let client = Client::new(config, token);
    let base = source.base_url();

    if progress.lookups.is_none() {
        let mut done = std::collections::BTreeMap::new();
        for l in &config.lookups {
            done.insert(l.name.clone(), fetch_lookup(&client, base, l, &work)?);
        }
        progress.lookups = Some(done);
        work.commit(&progress)?;
    }
    let joins = load_joins(config, &work, &progress)?;

    let mut previous = input
        .previous
        .filter(|_| config.reuse_previous)
        .and_then(|p| Archive::open(p).ok())
        .and_then(|mut a| {
            let m = a.metadata().ok()?;
            (m.fingerprint == progress.fingerprint && m.from == progress.from).then_some((a, m))
        });

    let chunks = windows(progress.from, progress.to, config.chunk);
    // Finished chunks are compressed on a thread of their own while the next are fetched.
    let packed = std::thread::scope(|s| -> Result<HashMap<String, FileDone>> {
        let (tx, rx) = std::sync::mpsc::channel::<(FileDone, FileDone)>();
        let work = &work;
        let packer = s.spawn(move || {
            let mut packed = work.packed();
            for (csv, jsonl) in rx {
                if packed.get(&csv.name).is_some_and(|p| work.intact(p)) {
                    continue;
                }
                // A chunk that cannot be packed here is compressed into the archive instead.
                match pack::pack_chunk(work, &csv, &jsonl) {
                    Ok(z) => {
                        let _ = work.record_pack(&csv.name, &z);
                        packed.insert(csv.name, z);
                    }
                    Err(e) => tracing::debug!(chunk = %csv.name, error = %e, "not packed ahead"),
                }
            }
            packed
        });
        for c in progress.chunks.values() {
            let _ = tx.send((c.csv.clone(), c.jsonl.clone()));
        }
        let fetched = fetch_chunks(
            &Fetching {
                client: &client,
                base,
                config,
                joins: &joins,
                work,
                listener: input.listener,
            },
            &chunks,
            &mut progress,
            previous.as_mut().map(|(a, m)| (a, &*m)),
            &mut |c: &ChunkDone| {
                let _ = tx.send((c.csv.clone(), c.jsonl.clone()));
            },
        );
        drop(tx);
        let packed = packer.join().unwrap_or_default();
        fetched.map(|()| packed)
    })?;
    if let Some(l) = input.listener {
        l(&CaptureProgress {
            done: progress.chunks.len() as u64,
            total: progress.chunks.len() as u64,
            items: progress.chunks.values().map(|c| c.rows).sum(),
            detail: "writing the archive".into(),
        });
    }
    let meta = metadata(source, &progress, &client, &chunks);
    pack::write(input.dest, &work, &meta, &packed)?;
    work.finish();
    Ok(())
}

/// What fetching the chunks needs.
struct Fetching<'a> {
    client: &'a Client,
    base: &'a str,
    config: &'a ApiConfig,
    joins: &'a Joins,
    work: &'a WorkDir,
    listener: Option<&'a ProgressFn<'a>>,
}

/// What the fetching thread hands over.
enum Msg {
    /// A page of the `n`-th chunk to fetch.
    Page(usize, Rows),
    /// The `n`-th chunk is complete, in so many pages.
    Done(usize, u64),
}

/// Fetches (or takes from the previous archive) every chunk `progress` does not have yet,
/// committing each and handing it to `finished`. The pages are fetched on a thread of their
/// own that runs on from one chunk into the next, so the server prepares the next pages while
/// this thread writes and closes a chunk (at most three pages are in memory).
///
/// # Errors
/// As [`run`].
fn fetch_chunks(
    f: &Fetching<'_>,
    chunks: &[Window],
    progress: &mut Progress,
    mut previous: Option<(&mut Archive, &Metadata)>,
    finished: &mut dyn FnMut(&ChunkDone),
) -> Result<()> {
    let total = (chunks.len() * f.config.resources.len()) as u64;
    let mut rows_before: u64 = progress.chunks.values().map(|c| c.rows).sum();
    let tell = |done: usize, items: u64, detail: &str| {
        if let Some(l) = f.listener {
            l(&CaptureProgress {
                done: done as u64,
                total,
                items,
                detail: detail.to_string(),
            });
        }
    };
    let mut todo: Vec<(&Resource, &Window)> = Vec::new();
    for r in &f.config.resources {
        for w in chunks {
            let key = format!("{}/{}", r.name, w.label);
            if progress.chunks.contains_key(&key) {
                continue;
            }
            match previous
                .as_mut()
                .and_then(|(a, m)| reuse(a, m, r, w, f.work))
            {
                Some(c) => {
                    rows_before += c.rows;
                    f.work.record(&key, &c)?;
                    finished(&c);
                    progress.chunks.insert(key, c);
                }
                None => todo.push((r, w)),
            }
        }
    }
    let todo = &todo;
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Msg>>(1);
        s.spawn(move || {
            for (i, (r, w)) in todo.iter().enumerate() {
                let what = format!("{} {}", r.name, w.label);
                let params = chunk::params(r, w);
                let send = |rows| tx.send(Ok(Msg::Page(i, rows))).is_ok();
                let fetched =
                    pages::fetch_pages(f.client, f.base, &r.path, &params, &r.paging, &what, send);
                let msg = fetched.map(|pages| Msg::Done(i, pages));
                let stop = msg.is_err();
                if tx.send(msg).is_err() || stop {
                    return;
                }
            }
        });
        let mut writer: Option<chunk::ChunkWriter<'_>> = None;
        for msg in rx {
            match msg? {
                Msg::Page(i, rows) => {
                    let (r, w) = todo[i];
                    if writer.is_none() {
                        writer = Some(chunk::ChunkWriter::new(r, w, f.joins, f.work)?);
                    }
                    let wr = writer.as_mut().expect("a chunk being written");
                    wr.add(rows)?;
                    tell(
                        progress.chunks.len(),
                        rows_before + wr.rows(),
                        &format!("{} {}", r.name, w.label),
                    );
                }
                Msg::Done(i, pages) => {
                    let (r, w) = todo[i];
                    let wr = match writer.take() {
                        Some(wr) => wr,
                        None => chunk::ChunkWriter::new(r, w, f.joins, f.work)?,
                    };
                    let c = wr.finish(pages)?;
                    rows_before += c.rows;
                    let key = format!("{}/{}", r.name, w.label);
                    f.work.record(&key, &c)?;
                    finished(&c);
                    progress.chunks.insert(key, c);
                }
            }
        }
        Ok(())
    })
}

/// The chunk `w` of `r` out of the previous archive, when it was whole there with the same
/// window; `None` (fetch it) otherwise or when its members do not check out.
fn reuse(
    archive: &mut Archive,
    meta: &Metadata,
    r: &Resource,
    w: &Window,
    work: &WorkDir,
) -> Option<ChunkDone> {
    if !w.is_whole() {
        return None;
    }
    let prev = meta
        .resources
        .get(&r.name)?
        .chunks
        .iter()
        .find(|c| c.label == w.label && c.from == w.from && c.to == w.to && c.whole)?;
    let (csv_name, jsonl_name) = names(&r.name, w);
    let mut files = Vec::new();
    for (m, name) in [(&prev.csv, csv_name), (&prev.jsonl, jsonl_name)] {
        if m.name != name {
            return None;
        }
        let part = work.file(&format!("{name}.part"));
        archive.copy_member(&m.name, &part).ok()?;
        let done = chunk::seal(&part, &name, work).ok()?;
        if done.blake3 != m.blake3 {
            return None;
        }
        files.push(done);
    }
    let jsonl = files.pop()?;
    let csv = files.pop()?;
    Some(ChunkDone {
        rows: prev.rows,
        csv,
        jsonl,
        columns: prev.columns.clone(),
        pages: 0,
        reused: true,
    })
}

/// Fetches the lookup `l` into `lookups/<name>.jsonl`.
fn fetch_lookup(client: &Client, base: &str, l: &Lookup, work: &WorkDir) -> Result<LookupDone> {
    let name = format!("lookups/{}.jsonl", l.name);
    let part = work.file(&format!("{name}.part"));
    if let Some(dir) = part.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    fs_util::remove_if_exists(&part)?;
    let mut out = BufWriter::new(fs_util::create_new_private(&part)?);
    let mut rows = 0u64;
    let params: Vec<(String, String)> = l
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let what = format!("lookup {}", l.name);
    each_page(client, base, &l.path, &params, &l.paging, &what, |page| {
        for raw in page {
            chunk::write_line(&mut out, raw.get()).map_err(|e| Error::io("write", &part, e))?;
            rows += 1;
        }
        Ok(())
    })?;
    out.flush().map_err(|e| Error::io("write", &part, e))?;
    drop(out);
    let file: FileDone = chunk::seal(&part, &name, work)?;
    Ok(LookupDone { rows, file })
}

/// The lookups, read back from the work directory.
fn load_joins(config: &ApiConfig, work: &WorkDir, progress: &Progress) -> Result<Joins> {
    let mut loaded = Vec::new();
    for l in &config.lookups {
        let Some(done) = progress.lookups.as_ref().and_then(|m| m.get(&l.name)) else {
            continue;
        };
        let path = work.file(&done.file.name);
        let f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let mut records = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|e| Error::io("read", &path, e))?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?;
            records.push(v);
        }
        loaded.push(Loaded::new(l, records.iter()));
    }
    Ok(Joins::new(loaded))
}

/// The archive's metadata for a finished run.
fn metadata(source: &ApiSource, p: &Progress, client: &Client, chunks: &[Window]) -> Metadata {
    let config = source.config();
    let mut counts =
        std::collections::BTreeMap::<String, std::collections::BTreeMap<String, u64>>::new();
    let mut resources = std::collections::BTreeMap::new();
    for r in &config.resources {
        let mut metas = Vec::new();
        for w in chunks {
            let Some(c) = p.chunks.get(&format!("{}/{}", r.name, w.label)) else {
                continue;
            };
            counts
                .entry(w.label.clone())
                .or_default()
                .insert(r.name.clone(), c.rows);
            metas.push(ChunkMeta {
                label: w.label.clone(),
                from: w.from,
                to: w.to,
                whole: w.is_whole(),
                rows: c.rows,
                csv: (&c.csv).into(),
                jsonl: (&c.jsonl).into(),
                columns: c.columns.clone(),
                reused: c.reused,
            });
        }
        resources.insert(
            r.name.clone(),
            ResourceMeta {
                path: r.path.clone(),
                time_field: r.time_field.clone(),
                rows: metas.iter().map(|c| c.rows).sum(),
                chunks: metas,
            },
        );
    }
    let lookups = p
        .lookups
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), LookupMeta::from(v)))
        .collect();
    let c = client.counters();
    Metadata {
        format: archive::FORMAT.to_string(),
        base_url: source.location().to_string(),
        fingerprint: p.fingerprint.clone(),
        from: p.from,
        to: p.to,
        chunk: config.chunk,
        started_at: p.started_at,
        finished_at: Utc::now(),
        resumed: p.resumed > 0,
        resumes: p.resumed,
        requests: c.requests,
        retries: c.retries,
        counts,
        resources,
        lookups,
    }
}
