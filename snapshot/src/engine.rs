//! The engines: everything about one kind of data, one folder each, and the one registry that
//! names them.
//!
//! An engine folder (`engine/<name>/`) holds all that is particular to its kind of data: the
//! [`Source`] (capture, image check, the restore side), the record-level session
//! ([`table`](crate::table)), the export reader ([`export`](crate::export)), statistics, its
//! settings and its error mapping. Generic code — the manager, restore, table workflows,
//! exports, the command-line tool — never names an engine: it asks a [`Source`] (which owns its
//! own engine's connection) or looks an engine up here by the kind a snapshot records
//! ([`SnapshotRecord::source_kind`](crate::SnapshotRecord::source_kind)) or a configuration
//! names.
//!
//! Adding an engine is one folder, one entry in the registry below, and one Cargo feature.
//!
//! | kind | feature | source | record-level | exports |
//! |------|---------|--------|--------------|---------|
//! | `sqlite` | `sqlite` | `SqliteSource` | yes | yes |
//! | `duckdb` | `duckdb` | `DuckDbSource` | yes | yes |
//! | `postgres` | `postgres` | `PostgresSource` | yes | no |
//! | `file` | always | [`FileSource`] | no | no |

#[cfg(feature = "duckdb")]
pub(crate) mod duckdb;
mod file;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

pub use file::FileSource;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
#[cfg(feature = "export")]
use crate::export::reader::TableReader;
use crate::source::Source;
use crate::table::session::Session;

/// What the registry knows of one engine: how to make its source from a location, how to
/// read an image alone (previews), how to export its tables, and how to recognise its files.
pub(crate) trait Engine: Sync {
    /// The kind recorded in snapshots ("sqlite", "duckdb", …).
    fn kind(&self) -> &'static str;

    /// Other names the configuration accepts for this engine.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the file at `path` (its first bytes `head`, empty when it cannot be read) is
    /// one of this engine's, by its content; `by_name` asks instead whether its name says so.
    fn recognizes(&self, head: &[u8], path: &Path, by_name: bool) -> bool {
        let _ = (head, path, by_name);
        false
    }

    /// A source of the live data at `location` (a file, or a server's URL).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the location cannot be one of this engine's.
    fn source(&self, location: &Path) -> Result<Arc<dyn Source>>;

    /// Whether the engine has record-level operations ([`preview`](Self::preview) and the
    /// sessions its sources open).
    fn has_tables(&self) -> bool {
        false
    }

    /// A session on a snapshot image alone (previews: no live data).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an engine without record-level operations; engine errors.
    fn preview(&self, image: &Path) -> Result<Box<dyn Session>> {
        let _ = image;
        Err(Error::Unsupported {
            operation: "preview",
            kind: self.kind().to_string(),
        })
    }

    /// Whether [`export_reader`](Self::export_reader) reads this engine's tables.
    #[cfg(feature = "export")]
    fn exports(&self) -> bool {
        false
    }

    /// Reads the tables of the database at `path` for an export, in one read transaction.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an engine without exports; engine errors.
    #[cfg(feature = "export")]
    fn export_reader<'a>(&self, path: &'a Path) -> Result<Box<dyn TableReader + 'a>> {
        let _ = path;
        Err(Error::Unsupported {
            operation: "export",
            kind: self.kind().to_string(),
        })
    }
}

/// The registry: every engine compiled into this build. The only place (with `lib.rs`
/// re-exports and `Cargo.toml`) that names an engine feature.
static ENGINES: &[&dyn Engine] = &[
    #[cfg(feature = "sqlite")]
    &sqlite::SqliteEngine,
    #[cfg(feature = "duckdb")]
    &duckdb::DuckDbEngine,
    #[cfg(feature = "postgres")]
    &postgres::PostgresEngine,
    &file::FileEngine,
];

/// The engine of snapshots of `kind` (or configured as `kind`, an alias too), when compiled in.
pub(crate) fn find(kind: &str) -> Option<&'static dyn Engine> {
    ENGINES.iter().copied().find(|e| {
        e.kind().eq_ignore_ascii_case(kind)
            || e.aliases().iter().any(|a| a.eq_ignore_ascii_case(kind))
    })
}

/// [`find`], or [`Error::Unsupported`] naming what needed it.
pub(crate) fn require(kind: &str, operation: &'static str) -> Result<&'static dyn Engine> {
    find(kind).ok_or_else(|| Error::Unsupported {
        operation,
        kind: kind.to_string(),
    })
}

/// The kinds of the engines compiled into this build, in registry order.
pub fn kinds() -> Vec<&'static str> {
    ENGINES.iter().map(|e| e.kind()).collect()
}

/// The kind an engine is known by, for a name or alias (`postgresql` → `postgres`); `None`
/// when no engine of that name is compiled in.
pub fn canonical(name: &str) -> Option<&'static str> {
    find(name).map(|e| e.kind())
}

/// A source for the live data of an engine of kind `kind` at `location`: a database file, or
/// for a server the URL its snapshots record (`postgres://user@host:port/database?schema=…`).
///
/// ```
/// let source = snapshot::engine::source("file", std::path::Path::new("notes.txt"))?;
/// assert_eq!(source.kind(), "file");
/// # Ok::<(), snapshot::Error>(())
/// ```
///
/// # Errors
/// [`Error::Unsupported`] when no engine of that kind is compiled in;
/// [`Error::InvalidInput`] when the location is not one of that engine's.
pub fn source(kind: &str, location: &Path) -> Result<Arc<dyn Source>> {
    require(kind, "open a source")?.source(location)
}

/// Guesses the engine of the file at `path`: from its first bytes when it can be read, else
/// from its name (`.duckdb` → DuckDB, `.db`/`.sqlite` → SQLite); any other existing file is
/// `file`. A file with neither is guessed to be SQLite when that engine is compiled in (a new
/// database), else `file`.
pub fn guess(path: &Path) -> &'static str {
    use std::io::Read;
    let mut head = Vec::with_capacity(16);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(16).read_to_end(&mut head);
    }
    let by = |by_name| {
        ENGINES
            .iter()
            .find(|e| e.recognizes(&head, path, by_name))
            .map(|e| e.kind())
    };
    by(false)
        .or_else(|| by(true))
        .or_else(|| path.exists().then_some("file"))
        .or_else(|| find("sqlite").map(|e| e.kind()))
        .unwrap_or("file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_engine_is_always_there_and_names_are_found_in_any_case() {
        assert!(kinds().contains(&"file"));
        assert_eq!(canonical("FILE"), Some("file"));
        assert_eq!(canonical("no-such-engine"), None);
        assert!(matches!(
            source("no-such-engine", Path::new("x")),
            Err(Error::Unsupported { .. })
        ));
    }
}
