//! The `snapshot` tool's configuration: a TOML file, overridden by environment variables, then by
//! command-line flags, with the origin of every effective value kept for `snapshot config --show`.
//!
//! ```toml
//! [database]
//! path = "plant.db"          # relative paths are relative to this file
//! engine = "sqlite"          # sqlite | duckdb | file | postgres; default: guessed from the file
//!
//! [store]
//! dir = "backups"            # default: `backups` beside the database (required for postgres)
//! # url = "s3://bucket/prefix"   # or a bucket of any S3-compatible service, instead of `dir`
//! # replica = "s3://bucket/prefix"   # a local `dir` copied to a bucket in the background
//! # endpoint = "http://127.0.0.1:8333"   # default: AWS_ENDPOINT_URL, else AWS
//! # region = "eu-west-1"     # default: AWS_REGION, the profile's, else us-east-1
//! mode = "plain"             # or "dedup": distinct pages kept once, compressed (`DedupStore`)
//! # encrypt = true           # seal every image (age); key from SNAPSHOT_KEY, SNAPSHOT_KEY_FILE,
//! # key_file = "snapshot.key"  # SNAPSHOT_PASSPHRASE, or this file
//!
//! [retention]                # store-wide; default: keep_last = 10
//! keep_last = 10
//! keep_within = "30d"        # the original's `--cleanup` days_to_keep
//! keep_daily = 7
//! max_total_size = "10GiB"
//!
//! [exports]
//! tables = ["readings"]      # default: every table
//!
//! [status]
//! table = "readings"         # min/max/avg of its numeric columns and its latest row
//! order_by = "timestamp"     # what "latest" means; default: insertion order (rowid)
//!
//! [schedule]
//! log = "backups.log"        # rotating activity log; default: `<store>.log` beside the store
//!
//! [[schedule.jobs]]
//! name = "hourly"
//! cron = "hourly"            # 5-field cron or a preset: hourly, daily (02:00), weekly (Sun 03:00)
//! type = "all"               # db | csv | json | all
//! min_interval = "30m"       # skip ("backup not needed") when the job's last snapshot is younger
//! retention = { keep_last = 24 }
//!
//! [entities.measure]         # where `snapshot undo` finds an entity's rows
//! table = "measure"          # default: the table named like the entity
//! column = "id"              # holds the entity id; default: the single-column primary key
//! key = ["id"]               # matches rows; default: the primary key (or `column`)
//! cascade = [{ table = "measure_area_priority", column = "measure_id" }]
//! ```
//!
//! Unknown keys and wrong types are errors that name the key and the line. Precedence, lowest
//! first: built-in default, the file (`--config`, `SNAPSHOT_CONFIG`, or `./snapshot.toml` when it
//! exists), environment (`SNAPSHOT_DB`, `SNAPSHOT_ENGINE`, `SNAPSHOT_STORE`, `SNAPSHOT_TABLE`),
//! flags (`--db`, `--engine`, `--pg-schema`, `--store`, `--table`).
//!
//! # A PostgreSQL database
//!
//! A database server instead of a file ([`PostgresConfig`]; the tool needs the `postgres`
//! feature to reach it):
//!
//! ```toml
//! [database]
//! engine = "postgres"        # implied by url / url_env
//! url_env = "EQUIPMENT_PG_URL"   # the variable holding the URL: no password in this file
//! # url = "postgres://app@127.0.0.1:5432/equipment"   # or the URL (or libpq key=value string)
//! schema = "public"          # default: public
//! tables = ["equipment", "select_options"]   # default: every table of the schema
//!
//! [store]
//! dir = "backups"            # required: a server has no file to put `backups` beside
//! ```
//!
//! - `url`: a `postgres://` or `postgresql://` URL, or a libpq `key=value` string. Give `url`
//!   or `url_env`, not both. With neither, the settings come from the environment as
//!   `PostgresSource::from_env` reads them: `SNAPSHOT_PG_URL`, else
//!   `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` and `PGPASSWORD`.
//! - `url_env`: the name of an environment variable holding the URL; it must be set when the
//!   configuration is loaded.
//! - `schema`, `tables`: what is snapshotted (they apply to whichever PostgreSQL database is in
//!   effect, also one named by `--db`).
//! - On the command line or in `SNAPSHOT_DB`, a value starting with `postgres://` or
//!   `postgresql://` names a PostgreSQL database (with `--engine postgres`, any libpq settings
//!   string does); `--pg-schema` overrides `schema`.
//!
//! Passwords are never shown: `snapshot config --show`, `status` and error messages print the
//! settings with the password replaced by `***`, or the server's password-free location
//! (`postgres://user@host:port/database`). A PostgreSQL database in the file cannot also have a
//! `path`, and `url`, `url_env`, `schema` and `tables` do not apply to a file engine: these
//! mistakes are [`Error::InvalidInput`] errors whose field is the key (`database.url`,
//! `database.url_env`, `database.schema`, `database.tables`, `database.engine`,
//! `database.path`) and whose message names the file, the line and the `[database]` table (or
//! the flag or variable that gave the value).

// The submodules' paths are spelt out: the fuzz target of the configuration (`fuzz/`) compiles
// this file through a `#[path]` attribute, which looks for them beside this file otherwise.
#[path = "config/database.rs"]
mod database;
#[path = "config/entities.rs"]
mod entities;
#[path = "config/origin.rs"]
mod origin;
#[path = "config/raw.rs"]
mod raw;
#[path = "config/server.rs"]
mod server;
#[path = "config/units.rs"]
mod units;
// `cfg(fuzzing)`: set by cargo-fuzz when it builds the fuzz targets.
#[cfg(any(test, fuzzing))]
#[path = "config/fuzzing.rs"]
pub(crate) mod fuzzing;

pub use origin::Origin;
pub use raw::{JobConfig, RetentionConfig, StoreMode};
pub use server::ServerConfig;
pub use units::{ByteSize, HumanDuration};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};
use snapshot::engine;
use snapshot::retention::RetentionPolicy;
use snapshot::schedule::TimeZone;
use snapshot::table::EntityMapping;
use snapshot::{Error, Result};

use crate::config::database::Database;
use crate::config::raw::RawFile;
use crate::invalid;

/// The file read when neither `--config` nor `SNAPSHOT_CONFIG` names one.
pub const DEFAULT_FILE: &str = "snapshot.toml";

/// The engine of the configured database: one of the library's engines compiled into this
/// build (`sqlite`, `duckdb`, `file`, `postgres`; `postgresql` is an alias), found through
/// its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineKind(&'static str);

impl EngineKind {
    /// The engine named `name` (any case, or an alias).
    ///
    /// # Errors
    /// The names this build knows, when none matches.
    pub fn parse(name: &str) -> std::result::Result<EngineKind, String> {
        engine::canonical(name.trim())
            .map(EngineKind)
            .ok_or_else(|| {
                format!(
                    "unknown engine {name:?}: this build has {}",
                    engine::kinds().join(", ")
                )
            })
    }

    /// The engine's name as written in the configuration.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// Whether the engine's live data is on a server (no file).
    pub fn is_server(self) -> bool {
        engine::is_server(self.0)
    }

    /// Guesses the engine of `path`: from its first bytes when it exists, else from its
    /// extension (`.duckdb`/`.ddb` → DuckDB, `.db`/`.sqlite`/`.sqlite3` → SQLite). A file is
    /// never guessed to be on a server.
    pub fn guess(path: &Path) -> EngineKind {
        EngineKind(engine::guess(path))
    }

    /// The engine of a database not named anywhere (a new file): SQLite when compiled in.
    pub fn default_for_new() -> EngineKind {
        EngineKind(engine::guess(Path::new("")))
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<'de> Deserialize<'de> for EngineKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        EngineKind::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// What a snapshot holds (`create --type`, a job's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotType {
    /// The database file itself.
    #[default]
    Db,
    /// Every exported table as CSV (with a schema sidecar), in one zip bundle.
    Csv,
    /// Every exported table as typed JSON, in one zip bundle.
    Json,
    /// The database, and one bundle with both CSV and JSON.
    All,
}

impl SnapshotType {
    /// The type's name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotType::Db => "db",
            SnapshotType::Csv => "csv",
            SnapshotType::Json => "json",
            SnapshotType::All => "all",
        }
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--db`: a database file, or a server's URL (`postgres://…`).
    pub db: Option<PathBuf>,
    /// `--engine`.
    pub engine: Option<EngineKind>,
    /// `--pg-schema`: the schema of a database on a server.
    pub pg_schema: Option<String>,
    /// `--store`.
    pub store: Option<PathBuf>,
    /// `--table` (the statistics table).
    pub table: Option<String>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// The database file (absolute), when one is configured (`None` for a database on a
    /// server: see [`server`](Self::server)).
    pub database: Option<PathBuf>,
    /// Its engine (a server engine exactly when [`server`](Self::server) is set).
    pub engine: EngineKind,
    /// The database on a server, when the engine keeps its data on one.
    pub server: Option<ServerConfig>,
    /// The engine's own settings (`[database.options]`), checked by the engine at load time.
    pub engine_options: serde_json::Map<String, serde_json::Value>,
    /// The store directory (absolute), or an `s3://bucket/prefix` URL kept verbatim.
    pub store: Option<PathBuf>,
    /// `[store] replica`: a bucket a local store is copied to.
    pub store_replica: Option<String>,
    /// `[store] endpoint`: the S3-compatible service of a bucket store (and of a replica).
    pub store_endpoint: Option<String>,
    /// `[store] region`.
    pub store_region: Option<String>,
    /// `[store] encrypt`: seal every image.
    pub store_encrypt: bool,
    /// `[store] key_file` (absolute).
    pub store_key_file: Option<PathBuf>,
    /// How snapshots are kept in it (`[store] mode`).
    pub store_mode: StoreMode,
    /// The store-wide retention rules (`None`: the library default, keep the last 10).
    pub retention: Option<RetentionConfig>,
    /// Tables to export (`None`: every table).
    pub export_tables: Option<Vec<String>>,
    /// The statistics table of `status`.
    pub status_table: Option<String>,
    /// The column that orders rows for "latest row" (`None`: insertion order).
    pub status_order_by: Option<String>,
    /// The scheduler's activity log (absolute).
    pub schedule_log: Option<PathBuf>,
    /// Rotate the log past this size.
    pub schedule_log_max: u64,
    /// Rotated logs kept.
    pub schedule_log_keep: usize,
    /// Time zone of cron expressions.
    pub timezone: TimeZone,
    /// Scheduled jobs.
    pub jobs: Vec<JobConfig>,
    /// Where `undo` finds each entity type's rows (`[entities.<name>]`), by entity type.
    pub entities: Vec<EntityMapping>,
    /// Where each value came from, by key (`database.path`, `store.dir`, …).
    pub origins: BTreeMap<&'static str, Origin>,
}

/// Default size past which the activity log is rotated.
pub const DEFAULT_LOG_MAX: u64 = 1024 * 1024;
/// Default number of rotated logs kept.
pub const DEFAULT_LOG_KEEP: usize = 5;

impl Config {
    /// Loads the configuration of the running process: its environment and working directory.
    ///
    /// # Errors
    /// As [`load_with`](Self::load_with).
    pub fn load(overrides: &Overrides) -> Result<Config> {
        let cwd = std::env::current_dir().map_err(|e| Error::Io {
            op: "current dir",
            path: PathBuf::from("."),
            source: e,
        })?;
        let vars = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::load_with(overrides, &vars, &cwd)
    }

    /// Loads the configuration from explicit inputs (`vars` looks up environment variables).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `config`) for a file that cannot be read, has unknown keys
    /// or wrong types (the message names the key and the line), or holds duplicate job names;
    /// also for a bad `SNAPSHOT_ENGINE`.
    pub fn load_with(
        overrides: &Overrides,
        vars: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> Result<Config> {
        let (file, raw, text) = read_file(overrides, vars, cwd)?;
        let base = file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cwd.to_path_buf());
        let at = |span: std::ops::Range<usize>| Origin::File {
            path: file.clone().unwrap_or_default(),
            line: text[..span.start.min(text.len())].matches('\n').count() + 1,
        };
        let mut origins = BTreeMap::new();

        // [database]: a file or a server, then the engine.
        let Database {
            path: database,
            engine,
            server,
        } = database::resolve(
            &raw.database,
            overrides,
            vars,
            cwd,
            &at,
            &|p| abs(&base, p),
            &mut origins,
        )?;

        let engine_options = match &raw.database.options {
            None => serde_json::Map::new(),
            Some(o) => {
                let map = match serde_json::to_value(o.get_ref()) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => serde_json::Map::new(),
                };
                snapshot::engine::check_options(engine.name(), &map).map_err(|e| {
                    invalid(
                        "config",
                        format!("[database.options] ({}): {e}", at(o.span())),
                    )
                })?;
                origins.insert("database.options", at(o.span()));
                map
            }
        };

        // Keys given by the file, a variable and a flag, highest wins.
        let from_file = match (&raw.store.dir, &raw.store.url) {
            (Some(d), Some(_)) => {
                return Err(invalid(
                    "store.url",
                    format!("[store] ({}): give `dir` or `url`, not both", at(d.span())),
                ));
            }
            (Some(d), None) => Some((store_location(&base, d.get_ref()), at(d.span()))),
            (None, Some(u)) if !u.get_ref().starts_with("s3://") => {
                return Err(invalid(
                    "store.url",
                    format!(
                        "[store] url ({}): {:?} is not an s3://bucket[/prefix] URL",
                        at(u.span()),
                        u.get_ref()
                    ),
                ));
            }
            (None, Some(u)) => Some((PathBuf::from(u.get_ref()), at(u.span()))),
            (None, None) => None,
        };
        if let Some(r) = &raw.store.replica
            && !r.get_ref().starts_with("s3://")
        {
            return Err(invalid(
                "store.replica",
                format!(
                    "[store] replica ({}): {:?} is not an s3://bucket[/prefix] URL",
                    at(r.span()),
                    r.get_ref()
                ),
            ));
        }
        let store = layered(
            &mut origins,
            vars,
            "store.dir",
            from_file,
            &[("SNAPSHOT_STORE", &|v: String| {
                store_location(cwd, Path::new(&v))
            })],
            overrides
                .store
                .as_ref()
                .map(|p| ("--store", store_location(cwd, p))),
        )
        .or_else(|| {
            let db = database.as_ref()?;
            origins.insert(
                "store.dir",
                Origin::Derived {
                    from: "`backups` beside the database".into(),
                },
            );
            Some(db.parent().unwrap_or(cwd).join("backups"))
        });
        let status_table = layered(
            &mut origins,
            vars,
            "status.table",
            raw.status
                .table
                .as_ref()
                .map(|t| (t.get_ref().clone(), at(t.span()))),
            &[("SNAPSHOT_TABLE", &|v: String| v)],
            overrides.table.clone().map(|t| ("--table", t)),
        );

        let retention = raw.retention.as_ref().map(|r| r.get_ref().clone());
        if let Some(r) = &raw.retention {
            r.get_ref()
                .policy()
                .map_err(|e| invalid("config", format!("[retention] ({}): {e}", at(r.span()))))?;
        }
        file_origins(&raw, &at, &mut origins);

        let schedule_log = match &raw.schedule.log {
            Some(p) => {
                origins.insert("schedule.log", at(p.span()));
                Some(abs(&base, p.get_ref()))
            }
            None => store.as_ref().map(|s| {
                if is_remote(s) {
                    origins.insert(
                        "schedule.log",
                        Origin::Derived {
                            from: "`snapshot-schedule.log` beside the configuration (the store \
                                   is a bucket)"
                                .into(),
                        },
                    );
                    return base.join("snapshot-schedule.log");
                }
                origins.insert(
                    "schedule.log",
                    Origin::Derived {
                        from: "`<store>.log` beside the store".into(),
                    },
                );
                beside_with_suffix(s, ".log")
            }),
        };

        Ok(Config {
            database,
            engine,
            server,
            engine_options,
            store,
            store_replica: raw.store.replica.as_ref().map(|r| r.get_ref().clone()),
            store_endpoint: raw.store.endpoint.as_ref().map(|e| e.get_ref().clone()),
            store_region: raw.store.region.as_ref().map(|r| r.get_ref().clone()),
            store_encrypt: raw.store.encrypt.as_ref().is_some_and(|e| *e.get_ref()),
            store_key_file: raw.store.key_file.as_ref().map(|k| abs(&base, k.get_ref())),
            store_mode: raw
                .store
                .mode
                .as_ref()
                .map_or(StoreMode::Plain, |m| *m.get_ref()),
            retention,
            export_tables: raw.exports.tables.as_ref().map(|t| t.get_ref().clone()),
            status_table,
            status_order_by: raw.status.order_by.as_ref().map(|o| o.get_ref().clone()),
            schedule_log,
            schedule_log_max: raw
                .schedule
                .log_max_size
                .as_ref()
                .map_or(DEFAULT_LOG_MAX, |s| s.get_ref().0),
            schedule_log_keep: raw
                .schedule
                .log_keep
                .as_ref()
                .map_or(DEFAULT_LOG_KEEP, |s| *s.get_ref()),
            timezone: raw
                .schedule
                .timezone
                .as_ref()
                .map_or(TimeZone::Local, |t| *t.get_ref()),
            jobs: entities::jobs(&raw.schedule.jobs, &at)?,
            entities: entities::mappings(&raw.entities, &at)?,
            file,
            origins,
        })
    }

    /// The store-wide retention policy (the library default when none is written).
    ///
    /// # Errors
    /// [`Error::RetentionKeepsNothing`] (checked at load time already).
    pub fn retention_policy(&self) -> Result<RetentionPolicy> {
        match &self.retention {
            Some(r) => r.policy(),
            None => Ok(RetentionPolicy::default()),
        }
    }

    /// The origin of a key, `default` when unknown.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The database path, or an error telling how to set one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `database.path`) when none is configured, or when the
    /// database is a PostgreSQL server (it has no file).
    pub fn database_path(&self) -> Result<&Path> {
        if let Some(pg) = &self.server {
            return Err(invalid(
                "database.path",
                format!(
                    "the database is a PostgreSQL server ({}), not a file",
                    pg.location()
                ),
            ));
        }
        self.database.as_deref().ok_or_else(|| {
            invalid(
                "database.path",
                format!(
                    "no database configured: pass --db PATH (or a postgres:// URL), set \
                     SNAPSHOT_DB, or write [database] path = \"…\" (or url / url_env) in \
                     {DEFAULT_FILE}"
                ),
            )
        })
    }

    /// Whether a database is configured: a file or a PostgreSQL server.
    pub fn has_database(&self) -> bool {
        self.database.is_some() || self.server.is_some()
    }

    /// The database for people: the file's path, or a PostgreSQL server's location without its
    /// password (`postgres://user@host:port/database`).
    ///
    /// # Errors
    /// As [`database_path`](Self::database_path) when none is configured.
    pub fn database_display(&self) -> Result<String> {
        match &self.server {
            Some(pg) => Ok(pg.location()),
            None => Ok(self.database_path()?.display().to_string()),
        }
    }

    /// The bucket URL (`s3://bucket/prefix`) when the store is remote.
    pub fn remote_store(&self) -> Option<&str> {
        self.store
            .as_deref()
            .filter(|p| is_remote(p))
            .and_then(Path::to_str)
    }

    /// The store directory, or an error telling how to set one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `store.dir`) when none is configured.
    pub fn store_dir(&self) -> Result<&Path> {
        self.store.as_deref().ok_or_else(|| {
            if self.server.is_some() {
                return invalid(
                    "store.dir",
                    format!(
                        "no store configured: a PostgreSQL database has no file to keep \
                         `backups` beside: pass --store DIR, set SNAPSHOT_STORE, or write \
                         [store] dir = \"…\" in {DEFAULT_FILE}"
                    ),
                );
            }
            invalid(
                "store.dir",
                "no store configured: pass --store DIR or --db PATH (the store defaults to \
                 `backups` beside the database), or set SNAPSHOT_STORE",
            )
        })
    }
}

/// The origins of the keys only the file gives: its line, or the default.
fn file_origins(
    raw: &RawFile,
    at: &dyn Fn(std::ops::Range<usize>) -> Origin,
    origins: &mut BTreeMap<&'static str, Origin>,
) {
    let spanned = |span: Option<std::ops::Range<usize>>| span.map_or(Origin::Default, &at);
    origins.insert(
        "retention",
        spanned(raw.retention.as_ref().map(|r| r.span())),
    );
    origins.insert(
        "exports.tables",
        spanned(raw.exports.tables.as_ref().map(|t| t.span())),
    );
    origins.insert(
        "status.order_by",
        spanned(raw.status.order_by.as_ref().map(|o| o.span())),
    );
    origins.insert(
        "schedule.timezone",
        spanned(raw.schedule.timezone.as_ref().map(|t| t.span())),
    );
    origins.insert(
        "schedule.jobs",
        spanned(raw.schedule.jobs.first().map(|j| j.span())),
    );
    origins.insert(
        "entities",
        spanned(
            raw.entities
                .values()
                .map(|e| e.span())
                .min_by_key(|s| s.start),
        ),
    );
}

/// The configuration file (`--config`, `SNAPSHOT_CONFIG`, else `./snapshot.toml` when it
/// exists), read and parsed, with its text (for line numbers).
fn read_file(
    overrides: &Overrides,
    vars: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<(Option<PathBuf>, RawFile, String)> {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    let file = match (&overrides.config, vars("SNAPSHOT_CONFIG")) {
        (Some(p), _) => Some(abs(p)),
        (None, Some(p)) => Some(abs(Path::new(&p))),
        (None, None) => Some(cwd.join(DEFAULT_FILE)).filter(|p| p.is_file()),
    };
    let Some(path) = &file else {
        return Ok((None, RawFile::default(), String::new()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("config", format!("cannot read {}: {e}", path.display())))?;
    let raw: RawFile =
        toml::from_str(&text).map_err(|e| invalid("config", format!("{}: {e}", path.display())))?;
    Ok((file, raw, text))
}

/// `dir/name` → `dir/name<suffix>` (the activity log beside the store).
/// `p` made absolute against `base`.
fn abs(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Whether a store location is a bucket URL.
fn is_remote(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("s3://"))
}

/// A store location: a bucket URL verbatim, a directory made absolute against `base`.
fn store_location(base: &Path, p: &Path) -> PathBuf {
    if is_remote(p) {
        p.to_path_buf()
    } else {
        abs(base, p)
    }
}

fn beside_with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A key given by the file (`file`), environment variables (`env`, each with how its value is
/// read, looked up through `vars`) and a flag (`flag`), the highest layer winning: its value,
/// with its origin recorded under `key` (`default` when none gives it).
fn layered<T>(
    origins: &mut BTreeMap<&'static str, Origin>,
    vars: &dyn Fn(&str) -> Option<String>,
    key: &'static str,
    file: Option<(T, Origin)>,
    env: &[(&'static str, &dyn Fn(String) -> T)],
    flag: Option<(&'static str, T)>,
) -> Option<T> {
    let mut value = None;
    origins.insert(key, Origin::Default);
    if let Some((v, origin)) = file {
        value = Some(v);
        origins.insert(key, origin);
    }
    for (var, read) in env {
        if let Some(text) = vars(var) {
            value = Some(read(text));
            origins.insert(key, Origin::Env { var: (*var).into() });
        }
    }
    if let Some((flag, v)) = flag {
        value = Some(v);
        origins.insert(key, Origin::Flag { flag: flag.into() });
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot::table::Cascade;

    fn load(text: &str, env: &[(&str, &str)], o: Overrides) -> Result<Config> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            op: "tempdir",
            path: std::path::PathBuf::from("/tmp"),
            source: e,
        })?;
        let path = dir.path().join("snapshot.toml");
        std::fs::write(&path, text).map_err(|e| Error::Io {
            op: "write",
            path: path.clone(),
            source: e,
        })?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let vars = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        Config::load_with(&o, &vars, dir.path())
    }

    #[test]
    fn file_env_and_flags_layer_with_origins() -> Result<()> {
        let c = load(
            "[database]\npath = \"plant.db\"\n\n[store]\ndir = \"b\"\n",
            &[("SNAPSHOT_STORE", "/srv/b")],
            Overrides {
                db: Some("/x/other.sqlite3".into()),
                ..Default::default()
            },
        )?;
        assert_eq!(c.database.as_deref(), Some(Path::new("/x/other.sqlite3")));
        assert_eq!(
            c.origin("database.path"),
            Origin::Flag {
                flag: "--db".into()
            }
        );
        assert_eq!(c.store.as_deref(), Some(Path::new("/srv/b")));
        assert_eq!(
            c.origin("store.dir"),
            Origin::Env {
                var: "SNAPSHOT_STORE".into()
            }
        );
        assert_eq!(c.engine, EngineKind::parse("sqlite").expect("sqlite"));
        assert!(matches!(
            c.origin("database.engine"),
            Origin::Derived { .. }
        ));
        Ok(())
    }

    #[test]
    fn file_values_carry_their_line_and_paths_are_relative_to_the_file() -> Result<()> {
        let c = load(
            "# comment\n[database]\n\npath = \"plant.db\"\n",
            &[],
            Overrides::default(),
        )?;
        match c.origin("database.path") {
            Origin::File { line, .. } => assert_eq!(line, 4),
            other => panic!("unexpected origin {other:?}"),
        }
        let db = c.database.clone().unwrap_or_default();
        assert!(db.is_absolute() && db.ends_with("plant.db"), "{db:?}");
        let store = c.store.clone().unwrap_or_default();
        assert_eq!(store, db.with_file_name("backups"));
        Ok(())
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_key_and_line() {
        for (text, needle, line) in [
            ("[database]\npath = \"a\"\npaht = \"b\"\n", "paht", 3),
            ("[store]\ndir = 5\n", "dir", 2),
            ("[retention]\nkeep_last = \"ten\"\n", "keep_last", 2),
            ("[retention]\nkeep_within = \"3x\"\n", "keep_within", 2),
            ("[databse]\npath = \"a\"\n", "databse", 1),
        ] {
            match load(text, &[], Overrides::default()) {
                Err(Error::InvalidInput {
                    field: "config",
                    reason,
                }) => {
                    assert!(reason.contains(needle), "{reason}");
                    assert!(reason.contains(&format!("line {line}")), "{reason}");
                }
                other => panic!("{text:?}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn entities_map_undo_and_bad_ones_name_key_and_line() -> Result<()> {
        let c = load(
            "[entities.measure]\ntable = \"measures\"\ncolumn = \"id\"\nkey = \"id\"\n\
             cascade = [{ table = \"prio\", column = \"measure_id\", key = [\"id\"] }]\n\
             [entities.area]\n",
            &[],
            Overrides::default(),
        )?;
        assert_eq!(
            c.entities,
            vec![
                EntityMapping::new("area"),
                EntityMapping::new("measure")
                    .table("measures")
                    .column("id")
                    .key(["id"])
                    .cascade(Cascade::new("prio", "measure_id").key(["id"])),
            ]
        );
        assert!(matches!(c.origin("entities"), Origin::File { line: 1, .. }));
        assert_eq!(
            c.entities[1].to_string(),
            "measure = table \"measures\", id in \"id\", key (id), with \"prio\".\"measure_id\""
        );
        for (text, needle, line) in [
            (
                "[entities.measure]\ntable = \"m\"\ncolum = \"id\"\n",
                "colum",
                3,
            ),
            (
                "[entities.measure]\ncascade = [{ table = \"p\", col = \"x\" }]\n",
                "col",
                2,
            ),
            ("[entities.measure]\ntable = 5\n", "table", 2),
            ("\n[entities.measure]\ntable = \"\"\n", "table", 2),
            ("[entities.measure]\nkey = []\n", "key", 1),
        ] {
            match load(text, &[], Overrides::default()) {
                Err(Error::InvalidInput {
                    field: "config",
                    reason,
                }) => {
                    assert!(reason.contains(needle), "{text:?}: {reason}");
                    assert!(
                        reason.contains(&format!("line {line}"))
                            || reason.contains(&format!(":{line}:")),
                        "{text:?}: {reason}"
                    );
                }
                other => panic!("{text:?}: expected a config error, got {other:?}"),
            }
        }
        Ok(())
    }

    /// The field and message of an invalid-input error, or a panic naming what came instead.
    fn invalid(r: Result<Config>) -> (&'static str, String) {
        match r {
            Err(Error::InvalidInput { field, reason }) => (field, reason),
            other => panic!("expected an invalid-input error, got {other:?}"),
        }
    }

    #[test]
    fn a_postgres_database_from_the_file_env_or_flags() -> Result<()> {
        // url_env: the URL from the named variable; schema and tables.
        let c = load(
            "[database]\nengine = \"postgres\"\nurl_env = \"EQUIP_URL\"\nschema = \"inv\"\n\
             tables = [\"a\", \"b\"]\n[store]\ndir = \"b\"\n",
            &[("EQUIP_URL", "postgres://app:s3cret@db.example:6543/equip")],
            Overrides::default(),
        )?;
        assert_eq!(c.engine, EngineKind::parse("postgres").expect("postgres"));
        assert_eq!(c.database, None);
        let pg = c.server.clone().expect("a postgres database");
        assert_eq!(
            pg.settings(),
            Some("postgres://app:s3cret@db.example:6543/equip")
        );
        assert_eq!(
            pg.describe(),
            "$EQUIP_URL = postgres://app:***@db.example:6543/equip"
        );
        assert_eq!(pg.schema.as_deref(), Some("inv"));
        assert_eq!(pg.tables, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(matches!(
            c.origin("database.url"),
            Origin::File { line: 3, .. }
        ));
        assert!(matches!(
            c.origin("database.engine"),
            Origin::File { line: 2, .. }
        ));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        assert!(c.has_database());
        assert!(c.database_path().is_err());

        // url implies the engine; --pg-schema overrides the file's schema.
        let c = load(
            "[database]\nurl = \"postgresql://u@h/d\"\nschema = \"s\"\n",
            &[],
            Overrides {
                pg_schema: Some("other".into()),
                ..Default::default()
            },
        )?;
        assert_eq!(c.engine, EngineKind::parse("postgres").expect("postgres"));
        let pg = c.server.clone().expect("a postgres database");
        assert_eq!(pg.schema.as_deref(), Some("other"));
        assert!(matches!(
            c.origin("database.engine"),
            Origin::Derived { .. }
        ));
        assert_eq!(
            c.origin("database.schema"),
            Origin::Flag {
                flag: "--pg-schema".into()
            }
        );
        // No store beside a server.
        assert_eq!(c.store, None);
        assert!(
            matches!(c.store_dir(), Err(Error::InvalidInput { field: "store.dir", reason }) if reason.contains("PostgreSQL"))
        );

        // --db with a URL (any case of the scheme) beats the file's database file.
        let c = load(
            "[database]\npath = \"plant.db\"\n",
            &[],
            Overrides {
                db: Some("POSTGRES://u:pw@h:5/d".into()),
                ..Default::default()
            },
        )?;
        assert_eq!(c.engine, EngineKind::parse("postgres").expect("postgres"));
        assert_eq!(c.database, None);
        let pg = c.server.clone().expect("a postgres database");
        assert_eq!(pg.settings(), Some("postgres://u:pw@h:5/d"));
        assert_eq!(
            c.origin("database.url"),
            Origin::Flag {
                flag: "--db".into()
            }
        );

        // SNAPSHOT_DB with a URL; a file --db beats a postgres file database.
        let c = load(
            "",
            &[("SNAPSHOT_DB", "postgres://u@h/d")],
            Overrides::default(),
        )?;
        assert_eq!(c.engine, EngineKind::parse("postgres").expect("postgres"));
        let c = load(
            "[database]\nengine = \"postgres\"\nurl = \"postgres://u@h/d\"\n",
            &[],
            Overrides {
                db: Some("/x/plant.sqlite3".into()),
                ..Default::default()
            },
        )?;
        assert_eq!(c.engine, EngineKind::parse("sqlite").expect("sqlite"));
        assert_eq!(c.server, None);
        assert_eq!(c.database.as_deref(), Some(Path::new("/x/plant.sqlite3")));

        // --engine postgres takes a libpq key=value string as --db.
        let c = load(
            "",
            &[],
            Overrides {
                db: Some("host=/run/pg dbname=d password=pw".into()),
                engine: Some(EngineKind::parse("postgres").expect("postgres")),
                ..Default::default()
            },
        )?;
        let pg = c.server.clone().expect("a postgres database");
        assert_eq!(pg.describe(), "host=/run/pg dbname=d password=***");

        // engine = "postgres" alone: SNAPSHOT_PG_URL, else libpq's variables.
        let c = load(
            "[database]\nengine = \"postgres\"\n",
            &[],
            Overrides::default(),
        )?;
        let pg = c.server.clone().expect("a postgres database");
        assert_eq!(pg.settings(), None);
        assert!(pg.describe().contains("PGHOST"), "{}", pg.describe());
        let c = load(
            "[database]\nengine = \"postgres\"\n",
            &[("SNAPSHOT_PG_URL", "postgres://x:pw@h/d")],
            Overrides::default(),
        )?;
        let pg = c.server.clone().expect("a postgres database");
        assert_eq!(pg.settings(), Some("postgres://x:pw@h/d"));
        assert_eq!(
            c.origin("database.url"),
            Origin::Env {
                var: "SNAPSHOT_PG_URL".into()
            }
        );
        Ok(())
    }

    #[test]
    fn postgres_mistakes_name_the_file_the_table_and_the_key() {
        for (text, env, field, needle, line) in [
            (
                "[database]\nurl = \"postgres://u:pw@h/d\"\nurl_env = \"X\"\n",
                vec![("X", "postgres://u@h/d")],
                "database.url_env",
                "not both",
                3,
            ),
            (
                "[database]\npath = \"a.db\"\nurl = \"postgres://u@h/d\"\n",
                vec![],
                "database.url",
                "keep one",
                3,
            ),
            (
                "[database]\nengine = \"sqlite\"\nurl = \"postgres://u@h/d\"\n",
                vec![],
                "database.engine",
                "make it \"postgres\"",
                2,
            ),
            (
                "[database]\nengine = \"postgres\"\npath = \"a.db\"\n",
                vec![],
                "database.path",
                "not a file path",
                3,
            ),
            (
                "[database]\npath = \"postgres://u:pw@h/d\"\n",
                vec![],
                "database.path",
                "write url",
                2,
            ),
            (
                "[database]\npath = \"a.db\"\nschema = \"s\"\n",
                vec![],
                "database.schema",
                "PostgreSQL",
                3,
            ),
            (
                "[database]\nengine = \"duckdb\"\ntables = [\"t\"]\n",
                vec![],
                "database.tables",
                "duckdb",
                3,
            ),
            (
                "[database]\nurl = \"postgres://u@h/d\"\ntables = []\n",
                vec![],
                "database.tables",
                "at least one",
                3,
            ),
            (
                "[database]\nurl = \"postgres://u@h/d\"\nschema = \" \"\n",
                vec![],
                "database.schema",
                "empty",
                3,
            ),
            (
                "\n[database]\nurl_env = \"NOT_SET\"\n",
                vec![],
                "database.url_env",
                "NOT_SET is not set",
                3,
            ),
            (
                "[database]\nurl = \"mysql://u:pw@h/d\"\n",
                vec![],
                "database.url",
                "mysql:// URL is not a PostgreSQL URL",
                2,
            ),
        ] {
            let (f, reason) = invalid(load(text, &env, Overrides::default()));
            assert_eq!(f, field, "{text:?}: {reason}");
            assert!(reason.contains(needle), "{text:?}: {reason}");
            assert!(reason.contains("[database]"), "{text:?}: {reason}");
            assert!(
                reason.contains(&format!("snapshot.toml:{line}:")),
                "{text:?}: {reason}"
            );
            assert!(!reason.contains(":pw@"), "{text:?}: {reason}");
        }

        // Flags: a conflicting engine, --pg-schema on a file, a bad URL.
        let (f, reason) = invalid(load(
            "",
            &[],
            Overrides {
                db: Some("postgres://u:pw@h/d".into()),
                engine: Some(EngineKind::parse("duckdb").expect("duckdb")),
                ..Default::default()
            },
        ));
        assert_eq!(f, "database.engine");
        assert!(
            reason.contains("--engine") && reason.contains("--db"),
            "{reason}"
        );
        let (f, reason) = invalid(load(
            "",
            &[],
            Overrides {
                db: Some("plant.db".into()),
                pg_schema: Some("s".into()),
                ..Default::default()
            },
        ));
        assert_eq!(f, "database.schema");
        assert!(reason.contains("--pg-schema"), "{reason}");
        let (f, reason) = invalid(load(
            "[database]\npath = \"a.db\"\n",
            &[],
            Overrides {
                engine: Some(EngineKind::parse("postgres").expect("postgres")),
                ..Default::default()
            },
        ));
        assert_eq!(f, "database.engine");
        assert!(reason.contains("is a file"), "{reason}");
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn unparseable_postgres_settings_are_refused_without_their_password() {
        for (db, needle) in [
            ("postgres://u:hunter2@h:port/d", "port"),
            ("postgres://u:hunter2@h/d?nope=1", "nope"),
        ] {
            let (f, reason) = invalid(load(
                "",
                &[],
                Overrides {
                    db: Some(db.into()),
                    ..Default::default()
                },
            ));
            assert_eq!(f, "database.url");
            assert!(
                reason.contains("flag --db") && reason.contains(needle),
                "{reason}"
            );
            assert!(!reason.contains("hunter2"), "{reason}");
        }
        let (f, reason) = invalid(load(
            "[database]\nurl = \"host=h password=hunter2 port=zz\"\n",
            &[],
            Overrides::default(),
        ));
        assert_eq!(f, "database.url");
        assert!(!reason.contains("hunter2"), "{reason}");
        let (f, reason) = invalid(load(
            "",
            &[("SNAPSHOT_DB", "postgres://u:hunter2@h/d?x=1")],
            Overrides::default(),
        ));
        assert_eq!(f, "database.url");
        assert!(reason.contains("env SNAPSHOT_DB"), "{reason}");
    }

    #[test]
    fn a_policy_that_keeps_nothing_is_refused() {
        let r = load("[retention]\nkeep_last = 0\n", &[], Overrides::default());
        assert!(
            matches!(
                r,
                Err(Error::InvalidInput {
                    field: "config",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn durations_and_sizes_parse() -> Result<()> {
        assert_eq!(HumanDuration::parse("1d12h")?.0.as_secs(), 36 * 3600);
        assert_eq!(HumanDuration::parse("90")?.0.as_secs(), 90);
        assert_eq!(HumanDuration::parse("2w")?.to_string(), "2w");
        assert_eq!(HumanDuration::parse("90m")?.to_string(), "1h30m");
        assert!(HumanDuration::parse("5").is_ok());
        assert!(HumanDuration::parse("5y").is_err());
        assert!(HumanDuration::parse("d").is_err());
        assert!(HumanDuration::parse("12").is_ok());
        assert!(HumanDuration::parse("1h5").is_err());
        assert_eq!(ByteSize::parse("10GiB")?.0, 10 * 1024 * 1024 * 1024);
        assert_eq!(ByteSize::parse("1.5 KB")?.0, 1500);
        assert!(ByteSize::parse("ten").is_err());
        assert!(ByteSize::parse("3 parsecs").is_err());
        Ok(())
    }

    #[test]
    fn jobs_are_read_and_bad_cron_names_the_line() -> Result<()> {
        let c = load(
            "[[schedule.jobs]]\nname = \"hourly\"\ncron = \"hourly\"\ntype = \"all\"\nmin_interval = \"30m\"\nretention = { keep_last = 24 }\n",
            &[],
            Overrides::default(),
        )?;
        assert_eq!(c.jobs.len(), 1);
        assert_eq!(c.jobs[0].kind, SnapshotType::All);
        assert_eq!(c.jobs[0].min_interval.map(|d| d.0.as_secs()), Some(1800));
        let bad = load(
            "[[schedule.jobs]]\nname = \"x\"\ncron = \"61 * * * *\"\n",
            &[],
            Overrides::default(),
        );
        match bad {
            Err(Error::InvalidInput { reason, .. }) => {
                assert!(
                    reason.contains("line 3") && reason.contains("cron"),
                    "{reason}"
                )
            }
            other => panic!("expected a cron error, got {other:?}"),
        }
        let dup = load(
            "[[schedule.jobs]]\nname = \"a\"\ncron = \"hourly\"\n[[schedule.jobs]]\nname = \"a\"\ncron = \"daily\"\n",
            &[],
            Overrides::default(),
        );
        assert!(matches!(dup, Err(Error::InvalidInput { .. })), "{dup:?}");
        Ok(())
    }
}
