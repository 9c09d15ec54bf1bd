//! The `snapshot` tool's configuration: a TOML file, overridden by environment variables, then by
//! command-line flags, with the origin of every effective value kept for `snapshot config --show`.
//!
//! ```toml
//! [database]
//! path = "plant.db"          # relative paths are relative to this file
//! engine = "sqlite"          # sqlite | duckdb | file; default: guessed from the file
//!
//! [store]
//! dir = "backups"            # default: `backups` beside the database
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
//! flags (`--db`, `--engine`, `--store`, `--table`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;
use crate::schedule::{Schedule, TimeZone};
use crate::table::{Cascade, EntityMapping};

/// The file read when neither `--config` nor `SNAPSHOT_CONFIG` names one.
pub const DEFAULT_FILE: &str = "snapshot.toml";

/// The database engine of the configured database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// SQLite (live snapshots under a read transaction).
    Sqlite,
    /// DuckDB.
    Duckdb,
    /// Any single file, copied as is (no exports, no statistics).
    File,
}

impl Engine {
    /// The engine's name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Duckdb => "duckdb",
            Engine::File => "file",
        }
    }

    /// Guesses the engine of `path`: from its first bytes when it exists, else from its
    /// extension (`.duckdb`/`.ddb` → DuckDB, `.db`/`.sqlite`/`.sqlite3` → SQLite).
    pub fn guess(path: &Path) -> Engine {
        use std::io::Read;
        let mut head = [0u8; 16];
        if let Ok(mut f) = std::fs::File::open(path)
            && f.read_exact(&mut head).is_ok()
        {
            if &head == b"SQLite format 3\0" {
                return Engine::Sqlite;
            }
            if &head[8..12] == b"DUCK" {
                return Engine::Duckdb;
            }
        }
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("duckdb" | "ddb") => Engine::Duckdb,
            Some("db" | "sqlite" | "sqlite3" | "db3") => Engine::Sqlite,
            _ if path.exists() => Engine::File,
            _ => Engine::Sqlite,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

/// A duration written as text: `90s`, `30m`, `12h`, `7d`, `2w`, or sums like `1d12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90s`, `30m`, `12h`, `7d`, `2w`, `1d12h` (a bare number is seconds).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::invalid("duration", "empty duration"));
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => {
                    return Err(Error::invalid(
                        "duration",
                        format!("{text:?}: unknown unit {c:?} (use s, m, h, d, w)"),
                    ));
                }
            };
            let n: u64 = num.parse().map_err(|_| {
                Error::invalid("duration", format!("{text:?}: a number must precede {c:?}"))
            })?;
            num.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| Error::invalid("duration", format!("{text:?} is too long")))?;
        }
        if !num.is_empty() {
            return Err(Error::invalid(
                "duration",
                format!("{text:?}: the last number has no unit (s, m, h, d, w)"),
            ));
        }
        Ok(HumanDuration(Duration::from_secs(total)))
    }

    /// As a chrono duration.
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0.as_secs();
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [
            ("w", 604_800),
            ("d", 86_400),
            ("h", 3600),
            ("m", 60),
            ("s", 1),
        ] {
            if s >= len {
                write!(f, "{}{unit}", s / len)?;
                s %= len;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size written as text: `500000`, `64KiB`, `10MB`, `1.5GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses a byte count with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            Error::invalid("size", format!("{text:?} does not start with a number"))
        })?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(Error::invalid(
                    "size",
                    format!("{text:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"),
                ));
            }
        };
        let bytes = n * mult;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(Error::invalid("size", format!("{text:?} is out of range")));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(ByteSize(b)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// Retention rules as written in the configuration (human durations and sizes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the `n` newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Keep every snapshot younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<HumanDuration>,
    /// Keep the newest of each of the last `n` hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest of each of the last `n` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<usize>,
    /// Keep the newest of each of the last `n` ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest of each of the last `n` months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest of each of the last `n` years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<usize>,
    /// Drop the oldest unguarded snapshots until the total fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_size: Option<ByteSize>,
    /// How long a pre-restore safety snapshot is kept whatever the rules say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_grace: Option<HumanDuration>,
}

impl RetentionConfig {
    /// Whether no rule at all is written.
    pub fn is_empty(&self) -> bool {
        *self == RetentionConfig::default()
    }

    /// The library policy these rules describe.
    ///
    /// # Errors
    /// [`Error::RetentionKeepsNothing`] when no keep rule has a positive value.
    pub fn policy(&self) -> Result<RetentionPolicy> {
        let mut p = RetentionPolicy::new();
        if let Some(n) = self.keep_last {
            p = p.keep_last(n);
        }
        if let Some(d) = self.keep_within {
            p = p.keep_within(d.to_chrono());
        }
        if let Some(n) = self.keep_hourly {
            p = p.keep_hourly(n);
        }
        if let Some(n) = self.keep_daily {
            p = p.keep_daily(n);
        }
        if let Some(n) = self.keep_weekly {
            p = p.keep_weekly(n);
        }
        if let Some(n) = self.keep_monthly {
            p = p.keep_monthly(n);
        }
        if let Some(n) = self.keep_yearly {
            p = p.keep_yearly(n);
        }
        if let Some(b) = self.max_total_size {
            p = p.max_total_bytes(b.0);
        }
        if let Some(g) = self.safety_grace {
            p = p.safety_grace(g.to_chrono());
        }
        p.validate()?;
        Ok(p)
    }
}

/// One scheduled job of `[[schedule.jobs]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Unique name; the job's snapshots are recorded with operation `scheduled` and this name as
    /// their entity type.
    pub name: String,
    /// When: a 5-field cron expression or a preset (`hourly`, `daily`, `weekly`, `@hourly`, …).
    pub cron: Schedule,
    /// What each run takes.
    #[serde(default, rename = "type")]
    pub kind: SnapshotType,
    /// The interval gate: skip a run when the job's last snapshot is younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<HumanDuration>,
    /// Retention of this job's own snapshots, applied after each of its runs (the store-wide
    /// policy still applies to every snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
}

/// `[database]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    path: Option<toml::Spanned<PathBuf>>,
    engine: Option<toml::Spanned<Engine>>,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    dir: Option<toml::Spanned<PathBuf>>,
}

/// `[exports]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExports {
    tables: Option<toml::Spanned<Vec<String>>>,
}

/// `[status]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    table: Option<toml::Spanned<String>>,
    order_by: Option<toml::Spanned<String>>,
}

/// `[schedule]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    log: Option<toml::Spanned<PathBuf>>,
    log_max_size: Option<toml::Spanned<ByteSize>>,
    log_keep: Option<toml::Spanned<usize>>,
    timezone: Option<toml::Spanned<TimeZone>>,
    #[serde(default)]
    jobs: Vec<toml::Spanned<JobConfig>>,
}

/// Key columns written as one name or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawKey {
    One(String),
    Many(Vec<String>),
}

impl RawKey {
    fn columns(&self) -> Vec<String> {
        match self {
            RawKey::One(c) => vec![c.clone()],
            RawKey::Many(c) => c.clone(),
        }
    }
}

/// One `cascade = [{ table, column, key }]` entry of an entity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCascade {
    table: String,
    column: String,
    key: Option<RawKey>,
}

/// `[entities.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    table: Option<String>,
    column: Option<String>,
    key: Option<RawKey>,
    #[serde(default)]
    cascade: Vec<RawCascade>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    store: RawStore,
    retention: Option<toml::Spanned<RetentionConfig>>,
    #[serde(default)]
    exports: RawExports,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    entities: BTreeMap<String, toml::Spanned<RawEntity>>,
}

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Built in.
    Default,
    /// Derived from another value (e.g. the store beside the database).
    Derived {
        /// How.
        from: String,
    },
    /// The configuration file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// A command-line flag.
    Flag {
        /// The flag, e.g. `--db`.
        flag: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived { from } => write!(f, "default ({from})"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env { var } => write!(f, "env {var}"),
            Origin::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--db`.
    pub db: Option<PathBuf>,
    /// `--engine`.
    pub engine: Option<Engine>,
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
    /// The database file (absolute), when one is configured.
    pub database: Option<PathBuf>,
    /// Its engine.
    pub engine: Engine,
    /// The store directory (absolute).
    pub store: Option<PathBuf>,
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
        let abs = |base: &Path, p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let file = match (&overrides.config, vars("SNAPSHOT_CONFIG")) {
            (Some(p), _) => Some(abs(cwd, p)),
            (None, Some(p)) => Some(abs(cwd, Path::new(&p))),
            (None, None) => Some(cwd.join(DEFAULT_FILE)).filter(|p| p.is_file()),
        };
        let (raw, text) = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::invalid("config", format!("cannot read {}: {e}", path.display()))
                })?;
                let raw: RawFile = toml::from_str(&text)
                    .map_err(|e| Error::invalid("config", format!("{}: {e}", path.display())))?;
                (raw, text)
            }
            None => (RawFile::default(), String::new()),
        };
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

        // database.path
        let mut database = None;
        if let Some(p) = &raw.database.path {
            database = Some(abs(&base, p.get_ref()));
            origins.insert("database.path", at(p.span()));
        }
        if let Some(p) = vars("SNAPSHOT_DB") {
            database = Some(abs(cwd, Path::new(&p)));
            origins.insert(
                "database.path",
                Origin::Env {
                    var: "SNAPSHOT_DB".into(),
                },
            );
        }
        if let Some(p) = &overrides.db {
            database = Some(abs(cwd, p));
            origins.insert(
                "database.path",
                Origin::Flag {
                    flag: "--db".into(),
                },
            );
        }

        // database.engine
        let mut engine = None;
        if let Some(e) = &raw.database.engine {
            engine = Some(*e.get_ref());
            origins.insert("database.engine", at(e.span()));
        }
        if let Some(e) = vars("SNAPSHOT_ENGINE") {
            let parsed = match e.to_ascii_lowercase().as_str() {
                "sqlite" => Engine::Sqlite,
                "duckdb" => Engine::Duckdb,
                "file" => Engine::File,
                _ => {
                    return Err(Error::invalid(
                        "config",
                        format!("SNAPSHOT_ENGINE={e:?}: expected sqlite, duckdb or file"),
                    ));
                }
            };
            engine = Some(parsed);
            origins.insert(
                "database.engine",
                Origin::Env {
                    var: "SNAPSHOT_ENGINE".into(),
                },
            );
        }
        if let Some(e) = overrides.engine {
            engine = Some(e);
            origins.insert(
                "database.engine",
                Origin::Flag {
                    flag: "--engine".into(),
                },
            );
        }
        let engine = match (engine, &database) {
            (Some(e), _) => e,
            (None, Some(db)) => {
                origins.insert(
                    "database.engine",
                    Origin::Derived {
                        from: "guessed from the database file".into(),
                    },
                );
                Engine::guess(db)
            }
            (None, None) => {
                origins.insert("database.engine", Origin::Default);
                Engine::Sqlite
            }
        };

        // store.dir
        let mut store = None;
        if let Some(p) = &raw.store.dir {
            store = Some(abs(&base, p.get_ref()));
            origins.insert("store.dir", at(p.span()));
        }
        if let Some(p) = vars("SNAPSHOT_STORE") {
            store = Some(abs(cwd, Path::new(&p)));
            origins.insert(
                "store.dir",
                Origin::Env {
                    var: "SNAPSHOT_STORE".into(),
                },
            );
        }
        if let Some(p) = &overrides.store {
            store = Some(abs(cwd, p));
            origins.insert(
                "store.dir",
                Origin::Flag {
                    flag: "--store".into(),
                },
            );
        }
        if store.is_none()
            && let Some(db) = &database
        {
            store = Some(db.parent().unwrap_or(cwd).join("backups"));
            origins.insert(
                "store.dir",
                Origin::Derived {
                    from: "`backups` beside the database".into(),
                },
            );
        }

        let retention = raw.retention.as_ref().map(|r| r.get_ref().clone());
        match &raw.retention {
            Some(r) => {
                r.get_ref().policy().map_err(|e| {
                    Error::invalid("config", format!("[retention] ({}): {e}", at(r.span())))
                })?;
                origins.insert("retention", at(r.span()));
            }
            None => {
                origins.insert("retention", Origin::Default);
            }
        }

        let export_tables = raw.exports.tables.as_ref().map(|t| t.get_ref().clone());
        origins.insert(
            "exports.tables",
            raw.exports
                .tables
                .as_ref()
                .map_or(Origin::Default, |t| at(t.span())),
        );

        let mut status_table = None;
        origins.insert("status.table", Origin::Default);
        if let Some(t) = &raw.status.table {
            status_table = Some(t.get_ref().clone());
            origins.insert("status.table", at(t.span()));
        }
        if let Some(t) = vars("SNAPSHOT_TABLE") {
            status_table = Some(t);
            origins.insert(
                "status.table",
                Origin::Env {
                    var: "SNAPSHOT_TABLE".into(),
                },
            );
        }
        if let Some(t) = &overrides.table {
            status_table = Some(t.clone());
            origins.insert(
                "status.table",
                Origin::Flag {
                    flag: "--table".into(),
                },
            );
        }
        let status_order_by = raw.status.order_by.as_ref().map(|o| o.get_ref().clone());
        origins.insert(
            "status.order_by",
            raw.status
                .order_by
                .as_ref()
                .map_or(Origin::Default, |o| at(o.span())),
        );

        let schedule_log = match &raw.schedule.log {
            Some(p) => {
                origins.insert("schedule.log", at(p.span()));
                Some(abs(&base, p.get_ref()))
            }
            None => store.as_ref().map(|s| {
                origins.insert(
                    "schedule.log",
                    Origin::Derived {
                        from: "`<store>.log` beside the store".into(),
                    },
                );
                let mut name = s.file_name().unwrap_or_default().to_os_string();
                name.push(".log");
                s.with_file_name(name)
            }),
        };
        let schedule_log_max = raw
            .schedule
            .log_max_size
            .as_ref()
            .map_or(DEFAULT_LOG_MAX, |s| s.get_ref().0);
        let schedule_log_keep = raw
            .schedule
            .log_keep
            .as_ref()
            .map_or(DEFAULT_LOG_KEEP, |s| *s.get_ref());
        let timezone = raw
            .schedule
            .timezone
            .as_ref()
            .map_or(TimeZone::Local, |t| *t.get_ref());
        origins.insert(
            "schedule.timezone",
            raw.schedule
                .timezone
                .as_ref()
                .map_or(Origin::Default, |t| at(t.span())),
        );

        let jobs = {
            let mut seen = std::collections::HashSet::new();
            let mut jobs = Vec::new();
            for j in &raw.schedule.jobs {
                let job = j.get_ref();
                if job.name.trim().is_empty() || crate::id::sanitize(&job.name) != job.name {
                    return Err(Error::invalid(
                        "config",
                        format!(
                            "{}: job name {:?} must be letters, digits and dashes",
                            at(j.span()),
                            job.name
                        ),
                    ));
                }
                if !seen.insert(job.name.clone()) {
                    return Err(Error::invalid(
                        "config",
                        format!("{}: a second job is named {:?}", at(j.span()), job.name),
                    ));
                }
                if let Some(r) = &job.retention {
                    r.policy().map_err(|e| {
                        Error::invalid(
                            "config",
                            format!("{}: retention of job {:?}: {e}", at(j.span()), job.name),
                        )
                    })?;
                }
                jobs.push(job.clone());
            }
            origins.insert(
                "schedule.jobs",
                raw.schedule
                    .jobs
                    .first()
                    .map_or(Origin::Default, |j| at(j.span())),
            );
            jobs
        };

        let mut entities = Vec::with_capacity(raw.entities.len());
        for (name, e) in &raw.entities {
            entities.push(entity_mapping(name, e.get_ref()).map_err(|reason| {
                Error::invalid(
                    "config",
                    format!("{}: [entities.{name}]: {reason}", at(e.span())),
                )
            })?);
        }
        origins.insert(
            "entities",
            raw.entities
                .values()
                .map(|e| e.span())
                .min_by_key(|s| s.start)
                .map_or(Origin::Default, at),
        );

        Ok(Config {
            file,
            database,
            engine,
            store,
            retention,
            export_tables,
            status_table,
            status_order_by,
            schedule_log,
            schedule_log_max,
            schedule_log_keep,
            timezone,
            jobs,
            entities,
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
    /// [`Error::InvalidInput`] (field `database.path`) when none is configured.
    pub fn database_path(&self) -> Result<&Path> {
        self.database.as_deref().ok_or_else(|| {
            Error::invalid(
                "database.path",
                format!(
                    "no database configured: pass --db PATH, set SNAPSHOT_DB, or write \
                     [database] path = \"…\" in {DEFAULT_FILE}"
                ),
            )
        })
    }

    /// The store directory, or an error telling how to set one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `store.dir`) when none is configured.
    pub fn store_dir(&self) -> Result<&Path> {
        self.store.as_deref().ok_or_else(|| {
            Error::invalid(
                "store.dir",
                "no store configured: pass --store DIR or --db PATH (the store defaults to \
                 `backups` beside the database), or set SNAPSHOT_STORE",
            )
        })
    }
}

/// The library mapping of one `[entities.<name>]` table, or why it is not one.
fn entity_mapping(name: &str, e: &RawEntity) -> std::result::Result<EntityMapping, String> {
    let named = |what: &str, v: &str| {
        if v.trim().is_empty() {
            Err(format!("{what} must not be empty"))
        } else {
            Ok(())
        }
    };
    let key = |what: &str, k: &RawKey| {
        let cols = k.columns();
        if cols.is_empty() {
            return Err(format!("{what} must name at least one column"));
        }
        for c in &cols {
            named(what, c)?;
        }
        Ok(cols)
    };
    named("the entity name", name)?;
    let mut m = EntityMapping::new(name);
    if let Some(t) = &e.table {
        named("table", t)?;
        m = m.table(t.clone());
    }
    if let Some(c) = &e.column {
        named("column", c)?;
        m = m.column(c.clone());
    }
    if let Some(k) = &e.key {
        m = m.key(key("key", k)?);
    }
    for c in &e.cascade {
        named("cascade table", &c.table)?;
        named("cascade column", &c.column)?;
        let mut cascade = Cascade::new(c.table.clone(), c.column.clone());
        if let Some(k) = &c.key {
            cascade = cascade.key(key("cascade key", k)?);
        }
        m = m.cascade(cascade);
    }
    Ok(m)
}

/// One entity mapping as `config --show` prints it:
/// `measure = table "measure", id in "id", with "measure_area_priority"."measure_id"`.
pub(crate) fn describe_entity(m: &EntityMapping) -> String {
    let table = m.table.as_deref().unwrap_or(&m.entity_type);
    let mut s = format!(
        "{} = table {table:?}, id in {}",
        m.entity_type,
        m.column
            .as_deref()
            .map_or_else(|| "the primary key".to_string(), |c| format!("{c:?}"))
    );
    if let Some(k) = &m.key {
        s.push_str(&format!(", key ({})", k.join(", ")));
    }
    for c in &m.cascades {
        s.push_str(&format!(", with {:?}.{:?}", c.table, c.column));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)], o: Overrides) -> Result<Config> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("snapshot.toml");
        std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
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
        assert_eq!(c.engine, Engine::Sqlite);
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
            describe_entity(&c.entities[1]),
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
