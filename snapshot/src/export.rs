//! Table exports: every table (or the ones named) of a SQLite or DuckDB database as CSV — with a
//! schema sidecar giving column names and types — and as typed JSON, streamed row by row (a
//! table is never held in memory).
//!
//! [`ExportSource`] is a [`Source`]: a manager built on it takes a *bundle* snapshot, one zip
//! file holding the exports and a manifest, checksummed, verified, retained and listed like any
//! other snapshot; [`unpack`] (or `snapshot restore ID --to DIR`) puts a bundle's files in a
//! directory. [`ExportSource::write_dir`] writes the same files straight into a directory.
//!
//! ## What the files hold
//!
//! For a table `readings`, next to a `manifest.json`:
//! - `readings.csv`: RFC 4180, a header row, `,` separators, `"` quoting (doubled inside).
//!   NULL is an empty unquoted field; an empty string is `""`. Integers are written in full
//!   (64-bit extremes included), floats so that they read back to the same bits (always with a
//!   `.`, an exponent, `inf` or `NaN`), booleans as `true`/`false`, blobs as standard base64.
//! - `readings.json`: a JSON array with one object per row, keys in column order. Numbers are
//!   JSON numbers (DECIMAL and 128-bit integers as exact number literals), NULL is `null`,
//!   booleans are `true`/`false` (also SQLite `BOOLEAN` columns holding 0/1), blobs are base64
//!   strings, non-finite floats the strings `"inf"`, `"-inf"`, `"NaN"`, and other DuckDB types
//!   (dates, timestamps, lists, …) their text form.
//! - `readings.schema.json`: the table, its row count and, per column, the name, the declared
//!   type, the kind used for the values above, nullability, primary key and (SQLite, whose
//!   values carry their own type) the storage classes actually seen.
//!
//! The read is consistent: all tables are read in one read transaction, while other
//! connections keep writing.

mod bundle;
mod csv;
mod json;
pub(crate) mod reader;

pub use bundle::unpack;
pub use csv::CsvReader;
pub use reader::{ColumnSchema, ValueKind};

use reader::Cell;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{self, Engine};
use crate::error::{Error, Result};
use crate::source::{CheckLevel, Source};

/// Name of the manifest in a bundle or export directory.
pub const MANIFEST: &str = "manifest.json";

/// Version of the export layout written by this library.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// CSV with a schema sidecar.
    Csv,
    /// Typed JSON.
    Json,
}

impl ExportFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// The schema sidecar of one exported table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub table: String,
    /// The engine it came from.
    pub engine: String,
    /// Rows exported.
    pub rows: u64,
    /// Columns, in order.
    pub columns: Vec<ColumnSchema>,
}

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFile {
    /// File name (relative, no directory).
    pub name: String,
    /// `csv`, `json` or `schema`.
    pub role: String,
    /// Size in bytes.
    pub bytes: u64,
    /// `blake3:` checksum of the content.
    pub checksum: String,
}

/// One exported table in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedTable {
    /// The table.
    pub table: String,
    /// Rows exported.
    pub rows: u64,
    /// Its files.
    pub files: Vec<ExportFile>,
}

/// What an export holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `snapshot-export`.
    pub format: String,
    /// [`EXPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// The engine exported from.
    pub engine: String,
    /// The database file.
    pub database: String,
    /// When the read transaction began (UTC).
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The formats written.
    pub formats: Vec<ExportFormat>,
    /// The tables, in export order.
    pub tables: Vec<ExportedTable>,
}

impl Manifest {
    /// Total rows over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Progress of an export, reported to [`ExportSource::on_progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportProgress {
    /// The table being written.
    pub table: String,
    /// The format being written.
    pub format: ExportFormat,
    /// Rows written of this table in this format so far.
    pub rows: u64,
}

/// Progress callback.
pub type ProgressFn = Arc<dyn Fn(&ExportProgress) + Send + Sync>;

/// A [`Source`] whose image is an export bundle (a zip of CSV/JSON files, schema sidecars and a
/// manifest) of a database whose engine reads its tables for exports (SQLite, DuckDB). Its kind
/// is `csv`, `json` or `csv+json`.
///
/// ```no_run
/// # fn main() -> snapshot::Result<()> {
/// use snapshot::export::{ExportFormat, ExportSource};
/// use snapshot::{LocalStore, SnapshotManager, SnapshotRequest};
///
/// let exports = SnapshotManager::builder()
///     .source(ExportSource::new("sqlite", "plant.db")?.formats(&[ExportFormat::Csv, ExportFormat::Json]))
///     .store(LocalStore::open("backups")?)
///     .build()?;
/// exports.snapshot(SnapshotRequest::new("manual"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ExportSource {
    engine: &'static dyn Engine,
    path: PathBuf,
    formats: Vec<ExportFormat>,
    tables: Option<Vec<String>>,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for ExportSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportSource")
            .field("engine", &self.engine.kind())
            .field("path", &self.path)
            .field("formats", &self.formats)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl ExportSource {
    /// Exports of the database at `path` whose engine is `kind` (`sqlite`, `duckdb`): both
    /// formats, every table. A DuckDB file must not be held open by another process
    /// (DuckDB's one-writer rule).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when no engine of that kind that reads tables for exports is
    /// compiled in.
    pub fn new(kind: &str, path: impl Into<PathBuf>) -> Result<Self> {
        let engine = engine::require(kind, "export")?;
        if !engine.exports() {
            return Err(Error::Unsupported {
                operation: "export",
                kind: engine.kind().to_string(),
            });
        }
        Ok(Self::with_engine(engine, path.into()))
    }

    /// Exports through `engine` (the engines' own constructors, `ExportSource::sqlite`, …).
    pub(crate) fn with_engine(engine: &'static dyn Engine, path: PathBuf) -> Self {
        ExportSource {
            engine,
            path,
            formats: vec![ExportFormat::Csv, ExportFormat::Json],
            tables: None,
            progress: None,
        }
    }

    /// The formats to write (duplicates are ignored; an empty list means both).
    pub fn formats(mut self, formats: &[ExportFormat]) -> Self {
        let mut f: Vec<ExportFormat> = formats.to_vec();
        f.sort();
        f.dedup();
        if f.is_empty() {
            f = vec![ExportFormat::Csv, ExportFormat::Json];
        }
        self.formats = f;
        self
    }

    /// Only these tables (default: every table).
    pub fn tables(mut self, tables: Vec<String>) -> Self {
        self.tables = Some(tables);
        self
    }

    /// Calls `f` as rows are written (about every 1000 rows and at the end of each file).
    pub fn on_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// The formats written.
    pub fn export_formats(&self) -> &[ExportFormat] {
        &self.formats
    }

    /// Writes the export files (and `manifest.json`) into `dir`, which is created when missing
    /// and must not already hold any of the files.
    ///
    /// # Errors
    /// [`Error::SourceMissing`], [`Error::InvalidInput`] (field `table`) for an unknown table,
    /// [`Error::PermissionDenied`] for an unwritable directory, [`Error::AlreadyExists`] for a
    /// file already there, engine errors.
    pub fn write_dir(&self, dir: &Path) -> Result<Manifest> {
        let mut sink = bundle::DirSink::new(dir);
        let manifest = self.write(&mut sink)?;
        sink.finish()?;
        Ok(manifest)
    }

    /// Writes every file through `sink`, then the manifest.
    fn write(&self, sink: &mut dyn bundle::Sink) -> Result<Manifest> {
        let mut reader = self.engine.export_reader(&self.path)?;
        let created_at = chrono::Utc::now();
        let all = reader.tables()?;
        let tables = match &self.tables {
            None => all,
            Some(wanted) => {
                for t in wanted {
                    if !all.contains(t) {
                        return Err(Error::invalid(
                            "table",
                            format!(
                                "no table named {t:?} in {} (tables: {})",
                                self.path.display(),
                                if all.is_empty() {
                                    "none".into()
                                } else {
                                    all.join(", ")
                                }
                            ),
                        ));
                    }
                }
                wanted.clone()
            }
        };
        let mut used = BTreeSet::new();
        let mut exported = Vec::new();
        for table in &tables {
            let base = file_base(table, &mut used);
            let mut columns = reader.columns(table)?;
            let mut files = Vec::new();
            let mut rows = 0;
            for &format in &self.formats {
                let name = format!("{base}.{}", format.extension());
                let progress = self.progress.clone();
                let mut count = 0u64;
                let entry = sink.entry(&name, &mut |w| {
                    let mut writer: Box<dyn RowWriter + '_> = match format {
                        ExportFormat::Csv => Box::new(csv::CsvWriter::new(w)),
                        ExportFormat::Json => Box::new(json::JsonWriter::new(w)),
                    };
                    writer.header(&columns)?;
                    let mut observed: Vec<BTreeSet<&'static str>> =
                        vec![BTreeSet::new(); columns.len()];
                    let mut seen = 0u64;
                    count = reader.scan(table, &columns, &mut |cells| {
                        for (o, c) in observed.iter_mut().zip(cells) {
                            o.insert(c.class());
                        }
                        writer.row(cells)?;
                        seen += 1;
                        if seen.is_multiple_of(1000)
                            && let Some(p) = &progress
                        {
                            p(&ExportProgress {
                                table: table.clone(),
                                format,
                                rows: seen,
                            });
                        }
                        Ok(())
                    })?;
                    writer.finish()?;
                    for (c, o) in columns.iter_mut().zip(observed) {
                        c.observed.extend(o.into_iter().map(str::to_string));
                    }
                    Ok(())
                })?;
                if let Some(p) = &progress {
                    p(&ExportProgress {
                        table: table.clone(),
                        format,
                        rows: count,
                    });
                }
                rows = count;
                files.push(ExportFile {
                    name,
                    role: format.extension().to_string(),
                    bytes: entry.bytes,
                    checksum: entry.checksum,
                });
            }
            let schema = TableSchema {
                table: table.clone(),
                engine: self.engine.kind().to_string(),
                rows,
                columns,
            };
            let name = format!("{base}.schema.json");
            let json = serde_json::to_vec_pretty(&schema)
                .map_err(|e| Error::invalid("schema", e.to_string()))?;
            let entry = sink.entry(&name, &mut |w| {
                w.write_all(&json).map_err(|e| Error::io("write", &name, e))
            })?;
            files.push(ExportFile {
                name,
                role: "schema".into(),
                bytes: entry.bytes,
                checksum: entry.checksum,
            });
            exported.push(ExportedTable {
                table: table.clone(),
                rows,
                files,
            });
        }
        drop(reader);
        let manifest = Manifest {
            format: "snapshot-export".into(),
            format_version: EXPORT_FORMAT_VERSION,
            engine: self.engine.kind().into(),
            database: self.path.display().to_string(),
            created_at,
            formats: self.formats.clone(),
            tables: exported,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::invalid("manifest", e.to_string()))?;
        sink.entry(MANIFEST, &mut |w| {
            w.write_all(&json)
                .map_err(|e| Error::io("write", MANIFEST, e))
        })?;
        Ok(manifest)
    }
}

/// Writes rows of one table in one format.
pub(crate) trait RowWriter {
    fn header(&mut self, columns: &[ColumnSchema]) -> Result<()>;
    fn row(&mut self, cells: &[Cell<'_>]) -> Result<()>;
    fn finish(&mut self) -> Result<()>;
}

/// A file-name-safe, unique base name for a table's files.
fn file_base(table: &str, used: &mut BTreeSet<String>) -> String {
    let safe = !table.is_empty()
        && table.len() <= 100
        && !table.starts_with('.')
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !table.eq_ignore_ascii_case("manifest");
    let mut base = if safe {
        table.to_string()
    } else {
        crate::id::sanitize(table)
    };
    if base.is_empty() {
        base = "table".into();
    }
    if base.eq_ignore_ascii_case("manifest") {
        // `manifest.json` is the export's own manifest.
        base.push_str("-table");
    }
    let mut candidate = base.clone();
    let mut n = 2;
    while !used.insert(candidate.to_ascii_lowercase()) {
        candidate = format!("{base}-{n}");
        n += 1;
    }
    candidate
}

impl Source for ExportSource {
    fn kind(&self) -> &'static str {
        match self.formats.as_slice() {
            [ExportFormat::Csv] => "csv",
            [ExportFormat::Json] => "json",
            _ => "csv+json",
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn extension(&self) -> &str {
        "zip"
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        let file = crate::fs_util::create_new_private(dest)?;
        let mut sink = bundle::ZipSink::new(file, dest);
        self.write(&mut sink)?;
        sink.finish()
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        bundle::check(image, level).map(|_| ())
    }

    fn prepare_replace(&self) -> Result<()> {
        Err(Error::invalid(
            "target",
            "an export bundle is not restored over the database: restore it to a directory \
             (`restore_to`, or `snapshot restore ID --to DIR`)",
        ))
    }
}

/// Reads and checks the manifest of a bundle; with [`CheckLevel::Full`] every file is read and
/// compared with its checksum.
///
/// # Errors
/// [`Error::NotADatabase`] (engine `export`) for a damaged or foreign bundle.
pub fn read_bundle_manifest(bundle: &Path, level: CheckLevel) -> Result<Manifest> {
    bundle::check(bundle, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_bases_are_safe_and_unique() {
        let mut used = BTreeSet::new();
        assert_eq!(file_base("readings", &mut used), "readings");
        assert_eq!(file_base("Readings", &mut used), "Readings-2");
        let odd = file_base("../etc/passwd", &mut used);
        assert!(!odd.contains('/') && !odd.starts_with('.'), "{odd}");
        assert_ne!(file_base("manifest", &mut used), "manifest");
        assert_eq!(file_base("", &mut used), "table");
    }
}
