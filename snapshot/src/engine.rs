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
//! | `dir` | `dir` | `DirectorySource` | no | no |
//! | `api` | `api` | `ApiSource` | no | no |
//! | `file` | always | [`FileSource`] | no | no |

#[cfg(feature = "api")]
pub mod api;
#[cfg(feature = "dir")]
pub mod dir;
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

    /// The engine's name for people ("SQLite", "PostgreSQL").
    fn title(&self) -> &'static str;

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

    /// [`source`](Self::source) with the engine's own settings (a configuration's
    /// `[database.options]`). The default takes none.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `database.options`) naming a setting the engine does not
    /// know or a value of the wrong type; as [`source`](Self::source).
    fn source_with(&self, location: &Path, options: &Options) -> Result<Arc<dyn Source>> {
        if let Some(key) = options.keys().next() {
            return Err(Error::invalid(
                "database.options",
                format!("{key}: the {} engine takes no options", self.title()),
            ));
        }
        self.source(location)
    }

    /// Whether the engine's live data is on a server (no file: a store must be given).
    fn is_server(&self) -> bool {
        false
    }

    /// Whether `text` names a database of this engine by its scheme (`postgres://…`).
    fn claims(&self, text: &str) -> bool {
        let _ = text;
        false
    }

    /// Why `settings` cannot be this engine's connection settings, checked without
    /// connecting; the reason carries no password.
    fn check_settings(&self, settings: &str) -> std::result::Result<(), String> {
        let _ = settings;
        Ok(())
    }

    /// The variable holding a server engine's connection settings (`SNAPSHOT_PG_URL`).
    fn settings_variable(&self) -> Option<&'static str> {
        None
    }

    /// Where a server engine reads its settings when none are given, for people.
    fn environment(&self) -> &'static str {
        "the environment"
    }

    /// `settings` as the engine's client takes them (a URL's scheme in lower case).
    fn normalize_settings(&self, settings: &str) -> String {
        settings.trim().to_string()
    }

    /// `settings` with any password replaced by `***`, and the password.
    fn redact(&self, settings: &str) -> (String, Option<String>) {
        (settings.to_string(), None)
    }

    /// A source of a server from connection `settings` (`None`: the engine's own environment
    /// variables), narrowed to `scope`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an engine of files; [`Error::InvalidInput`] for settings
    /// that cannot be parsed.
    fn server_source(&self, settings: Option<&str>, scope: &Scope) -> Result<Arc<dyn Source>> {
        let _ = (settings, scope);
        Err(Error::Unsupported {
            operation: "connect to a server",
            kind: self.kind().to_string(),
        })
    }

    /// [`server_source`](Self::server_source) with the engine's own settings (a
    /// configuration's `[database.options]`). The default takes none.
    ///
    /// # Errors
    /// As [`server_source`](Self::server_source); [`Error::InvalidInput`] (field
    /// `database.options`) for a setting the engine does not know.
    fn server_source_with(
        &self,
        settings: Option<&str>,
        scope: &Scope,
        options: &Options,
    ) -> Result<Arc<dyn Source>> {
        if let Some(key) = options.keys().next() {
            return Err(Error::invalid(
                "database.options",
                format!("{key}: the {} engine takes no options", self.title()),
            ));
        }
        self.server_source(settings, scope)
    }

    /// Why `options` cannot be this engine's settings, checked without touching the data.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the setting.
    fn check_options(&self, options: &Options) -> Result<()> {
        self.source_with(Path::new("."), options).map(drop)
    }

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
    #[cfg(feature = "dir")]
    &dir::DirEngine,
    #[cfg(feature = "api")]
    &api::ApiEngine,
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

/// What part of a server's database a source reads: a schema (a namespace) and some of its
/// tables (default: every table of the engine's default schema).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scope {
    /// The schema (`None`: the engine's default, `public` for PostgreSQL).
    pub schema: Option<String>,
    /// The tables (`None`: every table of the schema).
    pub tables: Option<Vec<String>>,
}

impl Scope {
    /// Every table of the default schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Only these tables.
    pub fn tables(mut self, tables: Vec<String>) -> Self {
        self.tables = Some(tables);
        self
    }
}

/// An engine's own settings, by name (a configuration's `[database.options]`).
pub type Options = serde_json::Map<String, serde_json::Value>;

/// A source of the engine `kind` at `location` with the engine's own settings `options`
/// (an empty map: the defaults, as [`source`]).
///
/// # Errors
/// [`Error::Unsupported`] when no engine of that kind is compiled in;
/// [`Error::InvalidInput`] for a setting the engine does not know or a bad value.
pub fn source_with(kind: &str, location: &Path, options: &Options) -> Result<Arc<dyn Source>> {
    require(kind, "open a source")?.source_with(location, options)
}

/// Why `options` cannot be settings of the engine `kind`, checked without touching the data.
///
/// # Errors
/// The engine's [`Error::InvalidInput`] naming the setting.
pub fn check_options(kind: &str, options: &Options) -> Result<()> {
    if options.is_empty() {
        return Ok(());
    }
    require(kind, "open a source")?.check_options(options)
}

/// The kind of the engine whose URL scheme starts `text` (`postgres://…` → `postgres`), when
/// compiled in.
pub fn claiming(text: &str) -> Option<&'static str> {
    ENGINES.iter().find(|e| e.claims(text)).map(|e| e.kind())
}

/// Whether the engine `kind` keeps its live data on a server (no file).
pub fn is_server(kind: &str) -> bool {
    find(kind).is_some_and(|e| e.is_server())
}

/// Why `settings` cannot be connection settings of the engine `kind` (checked without
/// connecting; the reason carries no password).
///
/// # Errors
/// The reason, when they cannot.
pub fn check_settings(kind: &str, settings: &str) -> std::result::Result<(), String> {
    match find(kind) {
        Some(e) => e.check_settings(settings),
        None => Err(format!("no {kind} engine in this build")),
    }
}

/// Connection `settings` of the engine `kind` as its client takes them (`POSTGRES://…` →
/// `postgres://…`).
pub fn normalize_settings(kind: &str, settings: &str) -> String {
    find(kind).map_or_else(
        || settings.trim().to_string(),
        |e| e.normalize_settings(settings),
    )
}

/// `settings` of the engine `kind` with any password replaced by `***`.
pub fn redact(kind: &str, settings: &str) -> String {
    find(kind).map_or_else(|| settings.to_string(), |e| e.redact(settings).0)
}

/// `message` with the password of `settings` (of the engine `kind`) replaced by `***`.
pub fn scrub(kind: &str, message: &str, settings: &str) -> String {
    match find(kind).and_then(|e| e.redact(settings).1) {
        Some(password) => message.replace(&password, "***"),
        None => message.to_string(),
    }
}

/// A source of a server's database: the engine `kind` connecting with `settings` (`None`:
/// its own environment variables, `PGHOST`… for PostgreSQL), reading `scope`. Nothing is
/// connected until the first snapshot.
///
/// # Errors
/// [`Error::Unsupported`] when no such server engine is compiled in; [`Error::InvalidInput`]
/// when the settings cannot be parsed (the message carries no password).
pub fn server_source(kind: &str, settings: Option<&str>, scope: &Scope) -> Result<Arc<dyn Source>> {
    require(kind, "connect to a server")?.server_source(settings, scope)
}

/// [`server_source`] with the engine's own settings `options` (a configuration's
/// `[database.options]`; empty: none).
///
/// # Errors
/// As [`server_source`]; [`Error::InvalidInput`] for a setting the engine does not know.
pub fn server_source_with(
    kind: &str,
    settings: Option<&str>,
    scope: &Scope,
    options: &Options,
) -> Result<Arc<dyn Source>> {
    require(kind, "connect to a server")?.server_source_with(settings, scope, options)
}

/// The name of the engine `kind` for people ("PostgreSQL"), or `kind` itself when it is not
/// compiled in.
pub fn title(kind: &str) -> &str {
    find(kind).map_or(kind, |e| e.title())
}

/// The variable holding the connection settings of the server engine `kind`
/// (`SNAPSHOT_PG_URL`), if it has one.
pub fn settings_variable(kind: &str) -> Option<&'static str> {
    find(kind).and_then(|e| e.settings_variable())
}

/// Where the server engine `kind` reads its settings when none are given, for people
/// (`libpq environment (PGHOST, …)`).
pub fn environment(kind: &str) -> String {
    find(kind).map_or_else(|| "the environment".into(), |e| e.environment().to_string())
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
