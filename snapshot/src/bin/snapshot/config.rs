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

use crate::invalid;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use snapshot::retention::RetentionPolicy;
use snapshot::schedule::{Schedule, TimeZone};
use snapshot::table::{Cascade, EntityMapping};
use snapshot::{Error, Result};

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
    /// Tables of a PostgreSQL server (`[database] url`, or a `postgres://` URL as `--db`): a
    /// consistent export of every table of a schema (no CSV/JSON exports).
    #[value(alias = "postgresql")]
    #[serde(alias = "postgresql")]
    Postgres,
}

impl Engine {
    /// The engine's name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Duckdb => "duckdb",
            Engine::File => "file",
            Engine::Postgres => "postgres",
        }
    }

    /// Guesses the engine of `path`: from its first bytes when it exists, else from its
    /// extension (`.duckdb`/`.ddb` → DuckDB, `.db`/`.sqlite`/`.sqlite3` → SQLite). A file is
    /// never guessed to be [`Engine::Postgres`] (see [`is_postgres_url`]).
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
            return Err(invalid("duration", "empty duration"));
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
                    return Err(invalid(
                        "duration",
                        format!("{text:?}: unknown unit {c:?} (use s, m, h, d, w)"),
                    ));
                }
            };
            let n: u64 = num.parse().map_err(|_| {
                invalid("duration", format!("{text:?}: a number must precede {c:?}"))
            })?;
            num.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| invalid("duration", format!("{text:?} is too long")))?;
        }
        if !num.is_empty() {
            return Err(invalid(
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
        let n: f64 = num
            .parse()
            .map_err(|_| invalid("size", format!("{text:?} does not start with a number")))?;
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
                return Err(invalid(
                    "size",
                    format!("{text:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"),
                ));
            }
        };
        let bytes = n * mult;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(invalid("size", format!("{text:?} is out of range")));
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
    url: Option<toml::Spanned<String>>,
    url_env: Option<toml::Spanned<String>>,
    schema: Option<toml::Spanned<String>>,
    tables: Option<toml::Spanned<Vec<String>>>,
}

/// Whether `text` is a PostgreSQL URL: it starts with `postgres://` or `postgresql://` (any
/// case). Such a value given as `--db` or `SNAPSHOT_DB` names a PostgreSQL database.
pub fn is_postgres_url(text: &str) -> bool {
    let t = text.trim_start().as_bytes();
    ["postgres://", "postgresql://"]
        .iter()
        .any(|p| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// PostgreSQL connection settings (a URL or a libpq `key=value` string) with the password
/// replaced by `***`, and the password itself (to scrub it from messages).
fn redact_settings(text: &str) -> (String, Option<String>) {
    if is_postgres_url(text) {
        return redact_url(text);
    }
    redact_key_values(text)
}

/// `postgres://user:***@host/db?password=***`: the credentials end at the first `@` (as the
/// client parses them); query parameters named like a password are redacted too.
fn redact_url(text: &str) -> (String, Option<String>) {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let mut password = None;
    let mut out = format!("{scheme}://");
    let rest = match rest.split_once('@') {
        Some((creds, tail)) => {
            match creds.split_once(':') {
                Some((user, pw)) => {
                    password = Some(pw.to_string());
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(creds),
            }
            out.push('@');
            tail
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((head, query)) => {
            out.push_str(head);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if k.to_ascii_lowercase().contains("password") => {
                        password = password.clone().or_else(|| Some(v.to_string()));
                        format!("{k}=***")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    (out, password.filter(|p| !p.is_empty()))
}

/// `host=h password=*** dbname=d`: libpq's `key = value` pairs, a value bare or in single
/// quotes with backslash escapes.
fn redact_key_values(text: &str) -> (String, Option<String>) {
    let mut out = String::with_capacity(text.len());
    let mut password = None;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            out.push(c);
            chars.next();
            continue;
        }
        // The keyword, up to whitespace or `=`.
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let keyword = &text[start..end];
        out.push_str(keyword);
        // Whitespace, `=`, whitespace.
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                out.push(c);
                chars.next();
            } else {
                break;
            }
        }
        // The value.
        let mut value = String::new();
        let mut raw = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '\'') {
            raw.push('\'');
            chars.next();
            while let Some((_, c)) = chars.next() {
                raw.push(c);
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            raw.push(n);
                            value.push(n);
                        }
                    }
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                raw.push(c);
                chars.next();
                if c == '\\' {
                    if let Some((_, n)) = chars.next() {
                        raw.push(n);
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if keyword.to_ascii_lowercase().contains("password") {
            out.push_str("***");
            if !value.is_empty() {
                password = Some(value);
            }
        } else {
            out.push_str(&raw);
        }
    }
    (out, password)
}

/// `message` with every occurrence of the password of `settings` replaced by `***`.
fn scrub(message: &str, settings: &str) -> String {
    match redact_settings(settings).1 {
        Some(pw) => message.replace(&pw, "***"),
        None => message.to_string(),
    }
}

/// Why `settings` cannot be PostgreSQL connection settings (the message carries no password).
fn check_pg_settings(settings: &str) -> std::result::Result<(), String> {
    let t = settings.trim();
    if t.is_empty() {
        return Err("the PostgreSQL settings are empty".into());
    }
    if let Some((scheme, _)) = t.split_once("://")
        && !is_postgres_url(t)
        && !scheme.contains(char::is_whitespace)
        && !scheme.contains('=')
    {
        return Err(format!(
            "a {scheme}:// URL is not a PostgreSQL URL (postgres:// or postgresql://)"
        ));
    }
    #[cfg(feature = "postgres")]
    {
        use std::str::FromStr;
        if let Err(e) = ::postgres::Config::from_str(&normalize_scheme(t)) {
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                detail.push_str(": ");
                detail.push_str(&c.to_string());
                cause = c.source();
            }
            return Err(format!(
                "cannot parse the PostgreSQL settings ({}; expected \
                 postgres://user[:password]@host[:port]/database or libpq key=value pairs)",
                scrub(&detail, t)
            ));
        }
    }
    Ok(())
}

/// The settings with a URL's scheme in lower case (the client only knows `postgres://` and
/// `postgresql://`).
fn normalize_scheme(settings: &str) -> String {
    let t = settings.trim();
    match t.split_once("://") {
        Some((scheme, rest)) if is_postgres_url(t) => {
            format!("{}://{rest}", scheme.to_ascii_lowercase())
        }
        _ => t.to_string(),
    }
}

/// Where the PostgreSQL connection settings come from.
#[derive(Clone, PartialEq, Eq)]
enum PgSettings {
    /// A URL or `key=value` string, maybe with a password; `from` names the variable it was
    /// read from, if any.
    Given { text: String, from: Option<String> },
    /// libpq's variables (`PGHOST`, …), read when the source is made.
    Libpq,
}

/// A PostgreSQL database of the configuration: `[database] engine = "postgres"` with `url`,
/// `url_env` or neither (the environment), or a `postgres://` URL given as `--db` or
/// `SNAPSHOT_DB`.
///
/// Its `Debug` output and [`describe`](Self::describe) never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    settings: PgSettings,
    /// The schema whose tables are snapshotted (`None`: `public`).
    pub schema: Option<String>,
    /// The tables snapshotted (`None`: every table of the schema).
    pub tables: Option<Vec<String>>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("settings", &self.describe())
            .field("schema", &self.schema)
            .field("tables", &self.tables)
            .finish()
    }
}

impl PostgresConfig {
    /// The connection settings as given, password included (`None`: libpq's environment
    /// variables). Never print them: [`describe`](Self::describe) is for people.
    pub fn settings(&self) -> Option<&str> {
        match &self.settings {
            PgSettings::Given { text, .. } => Some(text),
            PgSettings::Libpq => None,
        }
    }

    /// The settings for people, password replaced by `***`:
    /// `postgres://app:***@127.0.0.1:5432/equipment`, `$EQUIPMENT_PG_URL =
    /// postgres://…`, or `libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
    /// PGPASSWORD)`.
    pub fn describe(&self) -> String {
        match &self.settings {
            PgSettings::Given { text, from } => {
                let shown = redact_settings(text).0;
                match from {
                    Some(var) => format!("${var} = {shown}"),
                    None => shown,
                }
            }
            PgSettings::Libpq => {
                "libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD)".into()
            }
        }
    }

    /// `message` with the password of the settings replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        match self.settings() {
            Some(s) => scrub(message, s),
            None => message.to_string(),
        }
    }

    /// The source these settings describe (nothing is connected yet).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the settings (or `PGPORT`) cannot be parsed.
    #[cfg(feature = "postgres")]
    pub fn source(&self) -> Result<snapshot::PostgresSource> {
        let mut source = match self.settings() {
            Some(s) => snapshot::PostgresSource::new(s).map_err(|e| match e {
                Error::InvalidInput { field, reason } => Error::InvalidInput {
                    field,
                    reason: self.scrub(&reason),
                },
                other => other,
            })?,
            None => snapshot::PostgresSource::from_env()?,
        };
        if let Some(schema) = &self.schema {
            source = source.schema(schema.clone());
        }
        if let Some(tables) = &self.tables {
            source = source.tables(tables.clone());
        }
        Ok(source)
    }

    /// Where the data lives, without a password: the source's location
    /// (`postgres://user@host:port/database`, `?schema=…` for another schema than `public`),
    /// else (a build without the `postgres` feature) the redacted settings.
    pub fn location(&self) -> String {
        #[cfg(feature = "postgres")]
        if let Ok(s) = self.source() {
            return snapshot::source::Source::path(&s).display().to_string();
        }
        self.describe()
    }
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

/// The layers of the configuration, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    File,
    Env,
    Flag,
}

/// A database as one layer names it.
#[derive(Debug, Clone)]
enum DbValue {
    /// A file (absolute).
    Path(PathBuf),
    /// A PostgreSQL server.
    Postgres(PgSettings),
    /// A value of `SNAPSHOT_DB` or `--db` that is not a PostgreSQL URL: a file, or libpq
    /// settings when the engine says postgres.
    Text(String),
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgSettings::Given { text, from } => f
                .debug_struct("Given")
                .field("text", &redact_settings(text).0)
                .field("from", from)
                .finish(),
            PgSettings::Libpq => f.write_str("Libpq"),
        }
    }
}

/// The database of one layer, and where it was given.
#[derive(Debug, Clone)]
struct GivenDb {
    value: DbValue,
    layer: Layer,
    origin: Origin,
}

impl GivenDb {
    /// `SNAPSHOT_DB` or `--db`: a PostgreSQL URL, or a text resolved once the engine is known.
    fn from_text(text: &str, layer: Layer, origin: Origin) -> GivenDb {
        let value = if is_postgres_url(text) {
            DbValue::Postgres(PgSettings::Given {
                text: normalize_scheme(text),
                from: None,
            })
        } else {
            DbValue::Text(text.to_string())
        };
        GivenDb {
            value,
            layer,
            origin,
        }
    }
}

/// The database the file's `[database]` table names, after checking that its keys fit
/// together: a file (`path`), a PostgreSQL server (`url`, `url_env`, or `engine = "postgres"`
/// alone), or nothing. Errors name the file and line, `[database]` and the key.
fn file_database(
    raw: &RawDatabase,
    at: &dyn Fn(std::ops::Range<usize>) -> Origin,
    abs: &dyn Fn(&Path) -> PathBuf,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<GivenDb>> {
    let bad = |field: &'static str, key: &str, span: std::ops::Range<usize>, reason: String| {
        invalid(field, format!("{}: [database] {key}: {reason}", at(span)))
    };
    let engine = raw.database_engine();
    let pg_keys = raw.url.is_some() || raw.url_env.is_some();
    if let (Some(u), Some(e)) = (&raw.url, &raw.url_env) {
        return Err(bad(
            "database.url_env",
            "url_env",
            e.span(),
            format!(
                "give url (line {}) or url_env, not both",
                line_of(&at(u.span()))
            ),
        ));
    }
    if let Some(p) = &raw.path {
        let text = p.get_ref().to_string_lossy();
        if is_postgres_url(&text) {
            return Err(bad(
                "database.path",
                "path",
                p.span(),
                format!(
                    "{} is a PostgreSQL URL, not a file: write url = \"…\" (or url_env = \
                     \"VARIABLE\" to keep the password out of this file) instead of path",
                    redact_settings(&text).0
                ),
            ));
        }
        if pg_keys {
            let (key, span) = match (&raw.url, &raw.url_env) {
                (Some(u), _) => ("url", u.span()),
                (_, Some(e)) => ("url_env", e.span()),
                _ => unreachable!("pg_keys"),
            };
            return Err(bad(
                if key == "url" {
                    "database.url"
                } else {
                    "database.url_env"
                },
                key,
                span,
                format!(
                    "names a PostgreSQL server, but path (line {}) names a database file: keep one",
                    line_of(&at(p.span()))
                ),
            ));
        }
        if engine == Some(Engine::Postgres) {
            return Err(bad(
                "database.path",
                "path",
                p.span(),
                "engine = \"postgres\" takes url or url_env (or neither: the environment), \
                 not a file path"
                    .into(),
            ));
        }
    }
    if pg_keys
        && let Some(e) = &raw.engine
        && *e.get_ref() != Engine::Postgres
    {
        return Err(bad(
            "database.engine",
            "engine",
            e.span(),
            format!(
                "url / url_env name a PostgreSQL server, but engine is {}: make it \"postgres\" \
                 or leave it out",
                e.get_ref()
            ),
        ));
    }
    let file_engine = raw.path.is_some() || engine.is_some_and(|e| e != Engine::Postgres);
    if file_engine {
        let what = match (engine, &raw.path) {
            (Some(e), _) => format!("a {e} database"),
            (None, Some(p)) => format!("the database file {}", p.get_ref().display()),
            (None, None) => "a database file".into(),
        };
        if let Some(sc) = &raw.schema {
            return Err(bad(
                "database.schema",
                "schema",
                sc.span(),
                format!("applies to a PostgreSQL database (engine = \"postgres\"), not to {what}"),
            ));
        }
        if let Some(t) = &raw.tables {
            return Err(bad(
                "database.tables",
                "tables",
                t.span(),
                format!(
                    "applies to a PostgreSQL database (engine = \"postgres\"), not to {what} \
                     (the tables of exports are [exports] tables)"
                ),
            ));
        }
    }
    if let Some(sc) = &raw.schema
        && sc.get_ref().trim().is_empty()
    {
        return Err(bad(
            "database.schema",
            "schema",
            sc.span(),
            "must not be empty (leave it out for public)".into(),
        ));
    }
    if let Some(t) = &raw.tables {
        if t.get_ref().is_empty() {
            return Err(bad(
                "database.tables",
                "tables",
                t.span(),
                "must name at least one table (leave it out for every table of the schema)".into(),
            ));
        }
        if t.get_ref().iter().any(|n| n.trim().is_empty()) {
            return Err(bad(
                "database.tables",
                "tables",
                t.span(),
                "a table name must not be empty".into(),
            ));
        }
    }

    if let Some(p) = &raw.path {
        return Ok(Some(GivenDb {
            value: DbValue::Path(abs(p.get_ref())),
            layer: Layer::File,
            origin: at(p.span()),
        }));
    }
    if let Some(u) = &raw.url {
        check_pg_settings(u.get_ref())
            .map_err(|reason| bad("database.url", "url", u.span(), reason))?;
        return Ok(Some(GivenDb {
            value: DbValue::Postgres(PgSettings::Given {
                text: normalize_scheme(u.get_ref()),
                from: None,
            }),
            layer: Layer::File,
            origin: at(u.span()),
        }));
    }
    if let Some(e) = &raw.url_env {
        let var = e.get_ref().trim();
        if var.is_empty() || var.contains(['=', '\0']) {
            return Err(bad(
                "database.url_env",
                "url_env",
                e.span(),
                format!("{var:?} is not the name of an environment variable"),
            ));
        }
        let Some(text) = vars(var) else {
            return Err(bad(
                "database.url_env",
                "url_env",
                e.span(),
                format!(
                    "the environment variable {var} is not set (or empty): set it to the \
                     PostgreSQL URL (postgres://user:password@host:port/database)"
                ),
            ));
        };
        check_pg_settings(&text).map_err(|reason| {
            bad(
                "database.url_env",
                "url_env",
                e.span(),
                format!("the value of {var}: {reason}"),
            )
        })?;
        return Ok(Some(GivenDb {
            value: DbValue::Postgres(PgSettings::Given {
                text: normalize_scheme(&text),
                from: Some(var.to_string()),
            }),
            layer: Layer::File,
            origin: at(e.span()),
        }));
    }
    if engine == Some(Engine::Postgres)
        && let Some(e) = &raw.engine
    {
        return Ok(Some(GivenDb {
            value: DbValue::Postgres(PgSettings::Libpq),
            layer: Layer::File,
            origin: at(e.span()),
        }));
    }
    Ok(None)
}

/// The line of a file origin (0 for others).
fn line_of(origin: &Origin) -> usize {
    match origin {
        Origin::File { line, .. } => *line,
        _ => 0,
    }
}

impl RawDatabase {
    fn database_engine(&self) -> Option<Engine> {
        self.engine.as_ref().map(|e| *e.get_ref())
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--db`: a database file, or a PostgreSQL URL (see [`is_postgres_url`]).
    pub db: Option<PathBuf>,
    /// `--engine`.
    pub engine: Option<Engine>,
    /// `--pg-schema`: the schema of a PostgreSQL database.
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
    /// The database file (absolute), when one is configured (`None` for a PostgreSQL
    /// database: see [`postgres`](Self::postgres)).
    pub database: Option<PathBuf>,
    /// Its engine ([`Engine::Postgres`] exactly when [`postgres`](Self::postgres) is set).
    pub engine: Engine,
    /// The PostgreSQL database, when the engine is [`Engine::Postgres`].
    pub postgres: Option<PostgresConfig>,
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
                    invalid("config", format!("cannot read {}: {e}", path.display()))
                })?;
                let raw: RawFile = toml::from_str(&text)
                    .map_err(|e| invalid("config", format!("{}: {e}", path.display())))?;
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

        // [database]: a file or a PostgreSQL server, then the engine.
        let file_db = file_database(&raw.database, &|span| at(span), &|p| abs(&base, p), vars)?;
        let mut db: Option<GivenDb> = file_db.clone();
        if let Some(v) = vars("SNAPSHOT_DB") {
            db = Some(GivenDb::from_text(
                &v,
                Layer::Env,
                Origin::Env {
                    var: "SNAPSHOT_DB".into(),
                },
            ));
        }
        if let Some(p) = &overrides.db {
            let origin = Origin::Flag {
                flag: "--db".into(),
            };
            db = Some(match p.to_str() {
                Some(text) => GivenDb::from_text(text, Layer::Flag, origin),
                None => GivenDb {
                    value: DbValue::Path(abs(cwd, p)),
                    layer: Layer::Flag,
                    origin,
                },
            });
        }

        let mut engine_given: Option<(Engine, Layer, Origin)> = None;
        if let Some(e) = &raw.database.engine {
            engine_given = Some((*e.get_ref(), Layer::File, at(e.span())));
        }
        if let Some(e) = vars("SNAPSHOT_ENGINE") {
            let parsed = match e.to_ascii_lowercase().as_str() {
                "sqlite" => Engine::Sqlite,
                "duckdb" => Engine::Duckdb,
                "file" => Engine::File,
                "postgres" | "postgresql" => Engine::Postgres,
                _ => {
                    return Err(invalid(
                        "config",
                        format!("SNAPSHOT_ENGINE={e:?}: expected sqlite, duckdb, file or postgres"),
                    ));
                }
            };
            engine_given = Some((
                parsed,
                Layer::Env,
                Origin::Env {
                    var: "SNAPSHOT_ENGINE".into(),
                },
            ));
        }
        if let Some(e) = overrides.engine {
            engine_given = Some((
                e,
                Layer::Flag,
                Origin::Flag {
                    flag: "--engine".into(),
                },
            ));
        }

        // What the database is, given the engine: a text from the environment or a flag is a
        // file unless it is a PostgreSQL URL or an engine at least as high says postgres.
        let pg_engine_at =
            |layer: Layer| matches!(&engine_given, Some((Engine::Postgres, l, _)) if *l >= layer);
        let db = db.map(|g| match g.value {
            DbValue::Text(t) if pg_engine_at(g.layer) => GivenDb {
                value: DbValue::Postgres(PgSettings::Given {
                    text: normalize_scheme(&t),
                    from: None,
                }),
                ..g
            },
            DbValue::Text(t) => GivenDb {
                value: DbValue::Path(abs(cwd, Path::new(&t))),
                ..g
            },
            _ => g,
        });

        let mut database = None;
        let mut pg_settings = None;
        let engine = match (db, engine_given) {
            (Some(g), eng) if matches!(g.value, DbValue::Postgres(_)) => {
                let DbValue::Postgres(settings) = g.value else {
                    unreachable!("matched above")
                };
                let engine_origin = match eng {
                    Some((e, l, o)) if l >= g.layer && e != Engine::Postgres => {
                        return Err(invalid(
                            "database.engine",
                            format!(
                                "{o}: engine {e} conflicts with the PostgreSQL database given by \
                                 {}: leave the engine out or make it postgres",
                                g.origin
                            ),
                        ));
                    }
                    Some((Engine::Postgres, _, o)) => o,
                    _ => Origin::Derived {
                        from: format!("the database ({}) is a PostgreSQL server", g.origin),
                    },
                };
                origins.insert("database.engine", engine_origin);
                let settings = match settings {
                    PgSettings::Libpq => match vars("SNAPSHOT_PG_URL") {
                        Some(url) => {
                            check_pg_settings(&url).map_err(|reason| {
                                invalid("database.url", format!("env SNAPSHOT_PG_URL: {reason}"))
                            })?;
                            origins.insert(
                                "database.url",
                                Origin::Env {
                                    var: "SNAPSHOT_PG_URL".into(),
                                },
                            );
                            PgSettings::Given {
                                text: normalize_scheme(&url),
                                from: Some("SNAPSHOT_PG_URL".into()),
                            }
                        }
                        None => {
                            origins.insert(
                                "database.url",
                                Origin::Derived {
                                    from: "libpq environment variables".into(),
                                },
                            );
                            PgSettings::Libpq
                        }
                    },
                    PgSettings::Given { text, from } => {
                        if g.layer != Layer::File {
                            // The file's own values were checked as they were read.
                            check_pg_settings(&text).map_err(|reason| {
                                invalid("database.url", format!("{}: {reason}", g.origin))
                            })?;
                        }
                        origins.insert("database.url", g.origin.clone());
                        PgSettings::Given { text, from }
                    }
                };
                pg_settings = Some(settings);
                Engine::Postgres
            }
            (Some(g), eng) => {
                let DbValue::Path(path) = g.value else {
                    unreachable!("texts were resolved above")
                };
                origins.insert("database.path", g.origin.clone());
                let engine = match eng {
                    Some((Engine::Postgres, l, o)) if l >= g.layer => {
                        return Err(invalid(
                            "database.engine",
                            format!(
                                "{o}: engine postgres, but the database {} ({}) is a file: \
                                 name the server with --db postgres://…, SNAPSHOT_DB or \
                                 [database] url / url_env",
                                path.display(),
                                g.origin
                            ),
                        ));
                    }
                    Some((e, _, o)) if e != Engine::Postgres => {
                        origins.insert("database.engine", o);
                        e
                    }
                    _ => {
                        origins.insert(
                            "database.engine",
                            Origin::Derived {
                                from: "guessed from the database file".into(),
                            },
                        );
                        Engine::guess(&path)
                    }
                };
                database = Some(path);
                engine
            }
            (None, Some((e, _, o))) => {
                origins.insert("database.engine", o);
                e
            }
            (None, None) => {
                origins.insert("database.engine", Origin::Default);
                Engine::Sqlite
            }
        };

        // A postgres engine with no database named anywhere: the settings of the environment.
        if engine == Engine::Postgres && pg_settings.is_none() {
            pg_settings = Some(match vars("SNAPSHOT_PG_URL") {
                Some(url) => {
                    check_pg_settings(&url).map_err(|reason| {
                        invalid("database.url", format!("env SNAPSHOT_PG_URL: {reason}"))
                    })?;
                    origins.insert(
                        "database.url",
                        Origin::Env {
                            var: "SNAPSHOT_PG_URL".into(),
                        },
                    );
                    PgSettings::Given {
                        text: normalize_scheme(&url),
                        from: Some("SNAPSHOT_PG_URL".into()),
                    }
                }
                None => {
                    origins.insert(
                        "database.url",
                        Origin::Derived {
                            from: "libpq environment variables".into(),
                        },
                    );
                    PgSettings::Libpq
                }
            });
        }

        // schema and tables of a PostgreSQL database.
        let postgres = match pg_settings {
            Some(settings) => {
                let mut schema = None;
                origins.insert("database.schema", Origin::Default);
                if let Some(sc) = &raw.database.schema {
                    schema = Some(sc.get_ref().clone());
                    origins.insert("database.schema", at(sc.span()));
                }
                if let Some(sc) = &overrides.pg_schema {
                    if sc.trim().is_empty() {
                        return Err(invalid(
                            "database.schema",
                            "flag --pg-schema: the schema name must not be empty",
                        ));
                    }
                    schema = Some(sc.clone());
                    origins.insert(
                        "database.schema",
                        Origin::Flag {
                            flag: "--pg-schema".into(),
                        },
                    );
                }
                let tables = raw.database.tables.as_ref().map(|t| t.get_ref().clone());
                origins.insert(
                    "database.tables",
                    raw.database
                        .tables
                        .as_ref()
                        .map_or(Origin::Default, |t| at(t.span())),
                );
                Some(PostgresConfig {
                    settings,
                    schema,
                    tables,
                })
            }
            None => {
                if overrides.pg_schema.is_some() {
                    return Err(invalid(
                        "database.schema",
                        format!(
                            "flag --pg-schema applies to a PostgreSQL database; the database is \
                             {} ({engine})",
                            database.as_deref().map_or_else(
                                || "not configured".to_string(),
                                |p| p.display().to_string()
                            )
                        ),
                    ));
                }
                None
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
                    invalid("config", format!("[retention] ({}): {e}", at(r.span())))
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
                if job.name.trim().is_empty() || snapshot::id::sanitize(&job.name) != job.name {
                    return Err(invalid(
                        "config",
                        format!(
                            "{}: job name {:?} must be letters, digits and dashes",
                            at(j.span()),
                            job.name
                        ),
                    ));
                }
                if !seen.insert(job.name.clone()) {
                    return Err(invalid(
                        "config",
                        format!("{}: a second job is named {:?}", at(j.span()), job.name),
                    ));
                }
                if let Some(r) = &job.retention {
                    r.policy().map_err(|e| {
                        invalid(
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
                invalid(
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
            postgres,
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
    /// [`Error::InvalidInput`] (field `database.path`) when none is configured, or when the
    /// database is a PostgreSQL server (it has no file).
    pub fn database_path(&self) -> Result<&Path> {
        if let Some(pg) = &self.postgres {
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
        self.database.is_some() || self.postgres.is_some()
    }

    /// The database for people: the file's path, or a PostgreSQL server's location without its
    /// password (`postgres://user@host:port/database`).
    ///
    /// # Errors
    /// As [`database_path`](Self::database_path) when none is configured.
    pub fn database_display(&self) -> Result<String> {
        match &self.postgres {
            Some(pg) => Ok(pg.location()),
            None => Ok(self.database_path()?.display().to_string()),
        }
    }

    /// The store directory, or an error telling how to set one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `store.dir`) when none is configured.
    pub fn store_dir(&self) -> Result<&Path> {
        self.store.as_deref().ok_or_else(|| {
            if self.postgres.is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)], o: Overrides) -> Result<Config> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            op: "tempdir",
            path: std::path::PathBuf::from("/tmp"),
            source: e,
        })?;
        let path = dir.path().join("snapshot.toml");
        std::fs::write(&path, text).map_err(|e| Error::Io {
            op: "write",
            path: std::path::PathBuf::from(path),
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
        assert_eq!(c.engine, Engine::Postgres);
        assert_eq!(c.database, None);
        let pg = c.postgres.clone().expect("a postgres database");
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
        assert_eq!(c.engine, Engine::Postgres);
        let pg = c.postgres.clone().expect("a postgres database");
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
        assert_eq!(c.engine, Engine::Postgres);
        assert_eq!(c.database, None);
        let pg = c.postgres.clone().expect("a postgres database");
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
        assert_eq!(c.engine, Engine::Postgres);
        let c = load(
            "[database]\nengine = \"postgres\"\nurl = \"postgres://u@h/d\"\n",
            &[],
            Overrides {
                db: Some("/x/plant.sqlite3".into()),
                ..Default::default()
            },
        )?;
        assert_eq!(c.engine, Engine::Sqlite);
        assert_eq!(c.postgres, None);
        assert_eq!(c.database.as_deref(), Some(Path::new("/x/plant.sqlite3")));

        // --engine postgres takes a libpq key=value string as --db.
        let c = load(
            "",
            &[],
            Overrides {
                db: Some("host=/run/pg dbname=d password=pw".into()),
                engine: Some(Engine::Postgres),
                ..Default::default()
            },
        )?;
        let pg = c.postgres.clone().expect("a postgres database");
        assert_eq!(pg.describe(), "host=/run/pg dbname=d password=***");

        // engine = "postgres" alone: SNAPSHOT_PG_URL, else libpq's variables.
        let c = load(
            "[database]\nengine = \"postgres\"\n",
            &[],
            Overrides::default(),
        )?;
        let pg = c.postgres.clone().expect("a postgres database");
        assert_eq!(pg.settings(), None);
        assert!(pg.describe().contains("PGHOST"), "{}", pg.describe());
        let c = load(
            "[database]\nengine = \"postgres\"\n",
            &[("SNAPSHOT_PG_URL", "postgres://x:pw@h/d")],
            Overrides::default(),
        )?;
        let pg = c.postgres.clone().expect("a postgres database");
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
                engine: Some(Engine::Duckdb),
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
                engine: Some(Engine::Postgres),
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
    fn passwords_are_redacted_from_urls_and_key_value_strings() {
        assert_eq!(
            redact_settings("postgres://app:p%40ss@h:1/d?sslmode=disable&password=x"),
            (
                "postgres://app:***@h:1/d?sslmode=disable&password=***".into(),
                Some("p%40ss".into())
            )
        );
        assert_eq!(
            redact_settings("postgresql://app@h/d").0,
            "postgresql://app@h/d"
        );
        assert_eq!(
            redact_settings("host=h password='a b\\'c' user=u"),
            ("host=h password=*** user=u".into(), Some("a b'c".into()))
        );
        assert_eq!(
            redact_settings("host = h password = secret").0,
            "host = h password = ***"
        );
        assert_eq!(scrub("x secret y", "password=secret"), "x *** y");
        assert!(is_postgres_url("  PostgreSQL://x"));
        assert!(!is_postgres_url("postgres.db"));
        assert_eq!(normalize_scheme("POSTGRES://u@h/d"), "postgres://u@h/d");
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
