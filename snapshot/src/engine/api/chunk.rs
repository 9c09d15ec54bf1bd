//! One chunk of a resource, fetched page by page and streamed to disk: the records as the
//! API gave them (JSON lines) and the CSV rows with the lookups joined, in one pass; the CSV's
//! header (every field seen in the chunk, in the order first seen, then the joined ones) is
//! put before its rows at the end. When a field first appears after the chunk's first row
//! (the rows before it lack its cell), the CSV is written again from the JSON lines instead.
//! No chunk is ever in memory. Both files are written beside their final names and renamed
//! into place when whole.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde_json::Value;

use crate::engine::api::client::Client;
use crate::engine::api::config::Resource;
use crate::engine::api::flat::fill;
use crate::engine::api::pages::each_page;
use crate::engine::api::progress::{ChunkDone, FileDone, WorkDir};
use crate::engine::api::rows::{Columns, Joins};
use crate::engine::api::window::Window;
use crate::error::{Error, Result};
use crate::fs_util;

/// The instant as query parameters carry it.
pub(crate) fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The names of a chunk's files in the work directory and the archive.
pub(crate) fn names(resource: &str, w: &Window) -> (String, String) {
    let stem = format!("{resource}/{}/{resource}_{}", w.year, w.label);
    (format!("{stem}.csv"), format!("{stem}.jsonl"))
}

/// Fetches the chunk `w` of `resource` into the work directory; `on_page` hears the rows so
/// far after each page.
///
/// # Errors
/// The client's errors naming the chunk and page; I/O errors naming the file.
pub(crate) fn fetch(
    client: &Client,
    base: &str,
    resource: &Resource,
    w: &Window,
    joins: &Joins,
    work: &WorkDir,
    on_page: &mut dyn FnMut(u64),
) -> Result<ChunkDone> {
    let (csv_name, jsonl_name) = names(&resource.name, w);
    let jsonl_path = work.file(&jsonl_name);
    let dir = jsonl_path.parent().expect("a chunk file has a folder");
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let jsonl_part = work.file(&format!("{jsonl_name}.part"));
    let csv_part = work.file(&format!("{csv_name}.part"));

    let mut params: Vec<(String, String)> = resource
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.push((resource.since_param.clone(), stamp(w.from)));
    params.push((resource.until_param.clone(), stamp(w.to)));

    let (scratch, body_part) = work.scratch()?;
    let mut out = BufWriter::with_capacity(1 << 20, create(&jsonl_part)?);
    let mut body = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(BufWriter::with_capacity(1 << 20, scratch));
    let csv_err = |p: &Path, e: csv::Error| Error::io("write", p, std::io::Error::other(e));
    let mut columns = Columns::default();
    let mut rows = 0u64;
    // The CSV is written in the same pass while the chunk's columns stay those of its first
    // row; a column that appears later sends it to a second pass over the JSON lines.
    let mut one_pass = true;
    let mut cells: Vec<String> = Vec::new();
    let mut key = String::new();
    let what = format!("{} {}", resource.name, w.label);
    let pages = each_page(
        client,
        base,
        &resource.path,
        &params,
        &resource.paging,
        &what,
        |page| {
            for raw in page {
                write_line(&mut out, raw.get()).map_err(|e| write_err(&jsonl_part, e))?;
                let added = fill(raw.get(), &mut columns, &mut cells, &mut key)
                    .map_err(|e| write_err(&jsonl_part, std::io::Error::other(e)))?;
                if added && rows > 0 {
                    one_pass = false;
                }
                if one_pass {
                    joins.append(&columns, &mut cells);
                    body.write_record(&cells)
                        .map_err(|e| csv_err(&body_part, e))?;
                }
                rows += 1;
            }
            on_page(rows);
            Ok(())
        },
    )?;
    out.flush().map_err(|e| write_err(&jsonl_part, e))?;
    drop(out);
    body.flush().map_err(|e| write_err(&body_part, e))?;
    drop(body);

    let mut header: Vec<String> = columns.names().to_vec();
    header.extend(joins.columns());
    if one_pass {
        let mut csv = csv::Writer::from_writer(create(&csv_part)?);
        csv.write_record(&header)
            .map_err(|e| csv_err(&csv_part, e))?;
        let mut file = csv
            .into_inner()
            .map_err(|e| write_err(&csv_part, e.into_error()))?;
        let mut from = File::open(&body_part).map_err(|e| Error::io("open", &body_part, e))?;
        std::io::copy(&mut from, &mut file).map_err(|e| write_err(&csv_part, e))?;
        drop(from);
    } else {
        write_csv(&jsonl_part, &csv_part, &header, &columns, joins)?;
    }

    let jsonl = seal(&jsonl_part, &jsonl_name, work)?;
    let csv = seal(&csv_part, &csv_name, work)?;
    Ok(ChunkDone {
        rows,
        csv,
        jsonl,
        columns: header,
        pages,
        reused: false,
    })
}

/// The CSV of the records in `jsonl`, under `header` (the chunk's `columns`, then the
/// joined ones).
fn write_csv(
    jsonl: &Path,
    csv_path: &Path,
    header: &[String],
    columns: &Columns,
    joins: &Joins,
) -> Result<()> {
    let file = create(csv_path)?;
    let mut w = csv::WriterBuilder::new().from_writer(BufWriter::with_capacity(1 << 20, file));
    let csv_err = |e: csv::Error| Error::io("write", csv_path, std::io::Error::other(e));
    w.write_record(header).map_err(csv_err)?;
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(jsonl).map_err(|e| Error::io("open", jsonl, e))?,
    );
    let mut columns = columns.clone();
    let (mut cells, mut key) = (Vec::new(), String::new());
    for line in reader.lines() {
        let line = line.map_err(|e| Error::io("read", jsonl, e))?;
        fill(&line, &mut columns, &mut cells, &mut key)
            .map_err(|e| Error::io("read", jsonl, std::io::Error::other(e)))?;
        joins.append(&columns, &mut cells);
        w.write_record(&cells).map_err(csv_err)?;
    }
    w.flush().map_err(|e| Error::io("write", csv_path, e))?;
    Ok(())
}

/// One JSON line: the record's text as the API sent it, or, when that spans lines (a
/// pretty-printed answer), the record written compactly.
pub(crate) fn write_line(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    if text.contains(['\n', '\r']) {
        let record: Value = serde_json::from_str(text).map_err(std::io::Error::other)?;
        serde_json::to_writer(&mut *out, &record)?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.write_all(b"\n")
}

fn create(path: &Path) -> Result<File> {
    fs_util::remove_if_exists(path)?;
    fs_util::create_new_private(path)
}

fn write_err(path: &Path, e: std::io::Error) -> Error {
    Error::io("write", path, e)
}

/// Renames the finished `part` to `name`; what the progress records of it (its checksum, by
/// which a resumed run knows it whole).
pub(crate) fn seal(part: &Path, name: &str, work: &WorkDir) -> Result<FileDone> {
    let sealed = fs_util::hash_file(part)?;
    fs_util::rename_scratch(part, &work.file(name))?;
    Ok(FileDone {
        name: name.to_string(),
        bytes: sealed.size,
        blake3: sealed.checksum,
    })
}
