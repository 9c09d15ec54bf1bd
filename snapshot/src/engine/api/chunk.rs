//! One chunk of a resource, fetched page by page and streamed to disk: the records as the
//! API gave them (JSON lines) and the CSV rows with the lookups joined, in one pass; the CSV's
//! header (every field seen in the chunk, in the order first seen, then the joined ones) is
//! put before its rows at the end. When a field first appears after the chunk's first row
//! (the rows before it lack its cell), the CSV is written again from the JSON lines instead.
//! No chunk is ever in memory. Both files are written beside their final names and renamed
//! into place when whole.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::engine::api::config::Resource;
use crate::engine::api::flat::fill;
use crate::engine::api::pages::Rows;
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

/// The query of the chunk `w` of `resource`: its parameters and its window.
pub(crate) fn params(resource: &Resource, w: &Window) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = resource
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.push((resource.since_param.clone(), stamp(w.from)));
    params.push((resource.until_param.clone(), stamp(w.to)));
    params
}

/// A chunk being written: its JSON lines and its CSV rows, page after page.
pub(crate) struct ChunkWriter<'a> {
    work: &'a WorkDir,
    joins: &'a Joins,
    csv_name: String,
    jsonl_name: String,
    jsonl_part: PathBuf,
    csv_part: PathBuf,
    body_part: PathBuf,
    out: BufWriter<File>,
    body: csv::Writer<BufWriter<File>>,
    columns: Columns,
    cells: Vec<String>,
    key: String,
    /// The CSV is written in the same pass while the chunk's columns stay those of its first
    /// row; a column that appears later sends it to a second pass over the JSON lines.
    one_pass: bool,
    rows: u64,
}

impl<'a> ChunkWriter<'a> {
    /// Starts the chunk `w` of `resource` in the work directory.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn new(
        resource: &Resource,
        w: &Window,
        joins: &'a Joins,
        work: &'a WorkDir,
    ) -> Result<Self> {
        let (csv_name, jsonl_name) = names(&resource.name, w);
        let jsonl_path = work.file(&jsonl_name);
        let dir = jsonl_path.parent().expect("a chunk file has a folder");
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let jsonl_part = work.file(&format!("{jsonl_name}.part"));
        let csv_part = work.file(&format!("{csv_name}.part"));
        let (scratch, body_part) = work.scratch()?;
        Ok(ChunkWriter {
            work,
            joins,
            out: BufWriter::with_capacity(1 << 20, create(&jsonl_part)?),
            body: csv::WriterBuilder::new()
                .flexible(true)
                .from_writer(BufWriter::with_capacity(1 << 20, scratch)),
            csv_name,
            jsonl_name,
            jsonl_part,
            csv_part,
            body_part,
            columns: Columns::default(),
            cells: Vec::new(),
            key: String::new(),
            one_pass: true,
            rows: 0,
        })
    }

    /// Rows so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes a page's rows.
    ///
    /// # Errors
    /// I/O errors naming the file; a record that is not JSON.
    pub fn add(&mut self, page: Rows) -> Result<()> {
        for raw in page {
            write_line(&mut self.out, raw.get()).map_err(|e| write_err(&self.jsonl_part, e))?;
            let added = fill(raw.get(), &mut self.columns, &mut self.cells, &mut self.key)
                .map_err(|e| write_err(&self.jsonl_part, std::io::Error::other(e)))?;
            if added && self.rows > 0 {
                self.one_pass = false;
            }
            if self.one_pass {
                self.joins.append(&self.columns, &mut self.cells);
                self.body
                    .write_record(&self.cells)
                    .map_err(|e| csv_err(&self.body_part, e))?;
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// Finishes the chunk (fetched in `pages` pages): the CSV's header and rows, both files
    /// renamed into place.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn finish(mut self, pages: u64) -> Result<ChunkDone> {
        self.out
            .flush()
            .map_err(|e| write_err(&self.jsonl_part, e))?;
        self.body
            .flush()
            .map_err(|e| write_err(&self.body_part, e))?;
        let mut header: Vec<String> = self.columns.names().to_vec();
        header.extend(self.joins.columns());
        let csv_part = &self.csv_part;
        if self.one_pass {
            let mut csv = csv::Writer::from_writer(create(csv_part)?);
            csv.write_record(&header)
                .map_err(|e| csv_err(csv_part, e))?;
            let mut file = csv
                .into_inner()
                .map_err(|e| write_err(csv_part, e.into_error()))?;
            let mut from =
                File::open(&self.body_part).map_err(|e| Error::io("open", &self.body_part, e))?;
            std::io::copy(&mut from, &mut file).map_err(|e| write_err(csv_part, e))?;
        } else {
            write_csv(
                &self.jsonl_part,
                csv_part,
                &header,
                &self.columns,
                self.joins,
            )?;
        }
        let jsonl = seal(&self.jsonl_part, &self.jsonl_name, self.work)?;
        let csv = seal(csv_part, &self.csv_name, self.work)?;
        Ok(ChunkDone {
            rows: self.rows,
            csv,
            jsonl,
            columns: header,
            pages,
            reused: false,
        })
    }
}

fn csv_err(p: &Path, e: csv::Error) -> Error {
    Error::io("write", p, std::io::Error::other(e))
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
