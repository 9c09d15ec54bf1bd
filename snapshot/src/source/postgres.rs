//! [`PostgresSource`]: tables of a PostgreSQL server, exported consistently into one bundle file.
//!
//! A snapshot is every user table of one schema (or a chosen list), read in one
//! `REPEATABLE READ READ ONLY` transaction — one consistent view of all of them, while other
//! sessions keep writing — with the schema needed to recreate them (columns and types, primary
//! keys, defaults, constraints). Rows are streamed with `COPY … TO STDOUT` in PostgreSQL's text
//! format, which keeps every value exactly (numeric precision, timestamps, bytea, NULLs,
//! Unicode), straight into the bundle ([`bundle`]): nothing is held in memory.
//!
//! There is no file to swap on a server, so a whole [`restore`](crate::SnapshotManager::restore)
//! is a table restore in [`Replace`](crate::table::RestoreMode::Replace) mode of every table of
//! the bundle, in one transaction after the safety snapshot; preview, compare, table restore and
//! undo work as for SQLite ([`table`](crate::table)).
//!
//! Connections use no TLS (the crate carries no TLS library): reach a remote server through a
//! tunnel or a local socket. Settings come from a URL or key/value string
//! ([`PostgresSource::new`]) or the environment ([`PostgresSource::from_env`]).
//!
//! Generated columns are left out of snapshots (the server computes them); sequences of
//! restored `serial`/identity columns are moved past the restored values.

pub(crate) mod bundle;
pub(crate) mod catalog;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ::postgres::config::Host;
use ::postgres::error::SqlState;
use ::postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};
use crate::source::{CheckLevel, Source};

/// The kind name recorded in snapshots.
pub(crate) const KIND: &str = "postgres";
/// The blob extension.
const EXTENSION: &str = "pgbundle";
/// How long a connection attempt may take unless the settings say otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Tables of one schema of a PostgreSQL database.
///
/// ```no_run
/// # fn main() -> snapshot::Result<()> {
/// use snapshot::{LocalStore, PostgresSource, SnapshotManager};
///
/// let source = PostgresSource::new("postgres://app@127.0.0.1:5432/equipment")?
///     .tables(["equipment", "select_options"]);
/// let manager = SnapshotManager::builder()
///     .source(source)
///     .store(LocalStore::open("backups")?)
///     .build()?;
/// # let _ = manager; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresSource {
    target: Target,
    tables: Option<Vec<String>>,
}

/// Where to connect, and which schema: what a table session needs to reach the live data.
#[derive(Clone)]
pub(crate) struct Target {
    config: Config,
    schema: String,
    location: PathBuf,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("location", &self.target.location)
            .field("tables", &self.tables)
            .finish()
    }
}

impl PostgresSource {
    /// A source for the server and database named by `url`: a `postgres://user:password@host:port/database`
    /// URL or a libpq key/value string (`host=… port=… user=… dbname=…`). Missing parts
    /// default as libpq's do where it makes sense: host `localhost`, port 5432, user `$USER`,
    /// database the user's name. The schema is `public` and every user table of it is
    /// snapshotted, unless [`schema`](Self::schema) and [`tables`](Self::tables) say otherwise.
    /// Nothing is connected until the first snapshot.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the settings cannot be parsed.
    pub fn new(url: &str) -> Result<Self> {
        let config = Config::from_str(url).map_err(|e| {
            Error::invalid("postgres url", format!("cannot parse the settings: {e}"))
        })?;
        Ok(Self::from_config(config))
    }

    /// A source from the environment: `SNAPSHOT_PG_URL` when set (as [`new`](Self::new)),
    /// else libpq's variables `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` and `PGPASSWORD`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `SNAPSHOT_PG_URL` cannot be parsed or `PGPORT` is not a
    /// port number.
    pub fn from_env() -> Result<Self> {
        if let Some(url) = std::env::var("SNAPSHOT_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Self::new(&url);
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut config = Config::new();
        if let Some(host) = var("PGHOST") {
            for h in host.split(',') {
                config.host(h);
            }
        }
        if let Some(port) = var("PGPORT") {
            let port = port
                .parse::<u16>()
                .map_err(|_| Error::invalid("PGPORT", format!("{port:?} is not a port number")))?;
            config.port(port);
        }
        if let Some(user) = var("PGUSER") {
            config.user(&user);
        }
        if let Some(db) = var("PGDATABASE") {
            config.dbname(&db);
        }
        if let Some(password) = var("PGPASSWORD") {
            config.password(password);
        }
        Ok(Self::from_config(config))
    }

    /// Snapshots the tables of `schema` instead of `public`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.target.schema = schema.into();
        self.target.location = location(&self.target.config, &self.target.schema);
        self
    }

    /// Snapshots only these tables (of the schema) instead of all of them. A table named here
    /// that does not exist fails the snapshot with [`Error::TableMissing`].
    pub fn tables<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tables = Some(tables.into_iter().map(Into::into).collect());
        self
    }

    /// The schema whose tables are snapshotted.
    pub fn schema_name(&self) -> &str {
        &self.target.schema
    }

    /// Connects to the server, as snapshots do (with the session settings of the bundle
    /// format), to check the settings early.
    ///
    /// # Errors
    /// [`Error::Unreachable`] when no server answers at the address; [`Error::AccessDenied`]
    /// when it refuses the user or password; [`Error::SourceMissing`] when the database does
    /// not exist; [`Error::Engine`] for other server errors.
    pub fn ping(&self) -> Result<()> {
        self.target.connect().map(drop)
    }

    /// A new connection with this source's settings, for the application's own work (creating
    /// tables, the writes `#[with_snapshot]` guards). Its session uses the schema as
    /// `search_path`, UTC as `TimeZone` and ISO dates, as snapshots read them. The client is
    /// the `postgres` crate's, version 0.19.
    ///
    /// # Errors
    /// As [`ping`](Self::ping).
    pub fn connect(&self) -> Result<::postgres::Client> {
        self.target.connect()
    }

    /// Where to connect and which schema (for the table engine).
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    fn from_config(mut config: Config) -> Self {
        if config.get_hosts().is_empty() {
            config.host("localhost");
        }
        if config.get_user().is_none() {
            let user = std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "postgres".to_string());
            config.user(&user);
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or("postgres").to_string();
            config.dbname(&user);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("snapshot");
        }
        let schema = "public".to_string();
        let target = Target {
            location: location(&config, &schema),
            config,
            schema,
        };
        PostgresSource {
            target,
            tables: None,
        }
    }
}

/// `host:port` (or `socket-dir:port`) of the first host.
fn address(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// `postgres://user@host:port/database`, plus `?schema=…` for another schema than `public`:
/// where the data lives, without the password.
fn location(config: &Config, schema: &str) -> PathBuf {
    let mut s = format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        address(config),
        config.get_dbname().unwrap_or("")
    );
    if schema != "public" {
        s.push_str("?schema=");
        s.push_str(schema);
    }
    PathBuf::from(s)
}

/// Quotes an identifier: `"` around, inner `"` doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal: `'` around, inner `'` doubled (the server runs with
/// `standard_conforming_strings`, so backslashes are plain characters).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The session settings under which the bundle's text is written and read back: the text
/// form of every value then round-trips exactly (shortest-exact floats, ISO dates, hex bytea,
/// UTC offsets).
pub(crate) const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("TimeZone", "UTC"),
    ("standard_conforming_strings", "on"),
];

impl Target {
    /// The schema of the live tables.
    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    /// `postgres://user@host:port/database`.
    pub(crate) fn location(&self) -> &Path {
        &self.location
    }

    /// Connects and applies [`SESSION_SETTINGS`] and the schema as `search_path`.
    ///
    /// # Errors
    /// As [`PostgresSource::ping`].
    pub(crate) fn connect(&self) -> Result<Client> {
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| self.connect_error(e))?;
        let mut sql = String::new();
        for (name, value) in SESSION_SETTINGS {
            sql.push_str(&format!("SET {name} = {};", literal(value)));
        }
        sql.push_str(&format!("SET search_path = {};", ident(&self.schema)));
        client
            .batch_execute(&sql)
            .map_err(|e| self.error("configure session", e))?;
        Ok(client)
    }

    fn connect_error(&self, e: ::postgres::Error) -> Error {
        let address = address(&self.config);
        let user = self.config.get_user().unwrap_or_default().to_string();
        if let Some(db) = e.as_db_error() {
            let detail = db_detail(db);
            let code = db.code();
            return if *code == SqlState::INVALID_CATALOG_NAME {
                Error::SourceMissing {
                    kind: KIND,
                    path: self.location.clone(),
                }
            } else if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *code == SqlState::INSUFFICIENT_PRIVILEGE
            {
                Error::AccessDenied {
                    engine: KIND,
                    address,
                    user,
                    detail,
                }
            } else if *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::ADMIN_SHUTDOWN
            {
                Error::Unreachable {
                    engine: KIND,
                    address,
                    detail,
                }
            } else {
                Error::Engine {
                    engine: KIND,
                    op: "connect",
                    path: self.location.clone(),
                    detail,
                }
            };
        }
        let detail = error_chain(&e);
        if detail.starts_with("authentication error") || detail.contains("password missing") {
            Error::AccessDenied {
                engine: KIND,
                address,
                user,
                detail,
            }
        } else if detail.starts_with("invalid configuration") {
            Error::invalid("postgres url", detail)
        } else {
            Error::Unreachable {
                engine: KIND,
                address,
                detail,
            }
        }
    }

    /// An error of the server (or of the connection) while doing `op`.
    pub(crate) fn error(&self, op: &'static str, e: ::postgres::Error) -> Error {
        engine_error(&self.location, &address(&self.config), op, e)
    }
}

/// The message of a server error with its detail and hint.
pub(crate) fn db_detail(db: &::postgres::error::DbError) -> String {
    let mut s = db.message().to_string();
    if let Some(d) = db.detail() {
        s.push_str(" (");
        s.push_str(d);
        s.push(')');
    }
    if let Some(h) = db.hint() {
        s.push_str("; hint: ");
        s.push_str(h);
    }
    s
}

/// An error and its causes, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Maps an error of a query: a lock that was not granted in time is [`Error::Busy`], a lost
/// connection [`Error::Unreachable`], anything else [`Error::Engine`].
pub(crate) fn engine_error(
    location: &Path,
    address: &str,
    op: &'static str,
    e: ::postgres::Error,
) -> Error {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::LOCK_NOT_AVAILABLE => Error::Busy {
            path: location.to_path_buf(),
            attempts: 1,
            waited_ms: 0,
            detail: format!("{op}: {}", db_detail(db)),
        },
        Some(db) => Error::Engine {
            engine: KIND,
            op,
            path: location.to_path_buf(),
            detail: db_detail(db),
        },
        None if e.is_closed() => Error::Unreachable {
            engine: KIND,
            address: address.to_string(),
            detail: format!("{op}: {}", error_chain(&e)),
        },
        None => Error::Engine {
            engine: KIND,
            op,
            path: location.to_path_buf(),
            detail: error_chain(&e),
        },
    }
}

impl Source for PostgresSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn path(&self) -> &Path {
        &self.target.location
    }

    fn extension(&self) -> &str {
        EXTENSION
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        let mut client = self.target.connect()?;
        bundle::export(&mut client, &self.target, self.tables.as_deref(), dest)
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        bundle::Bundle::check(image, level)
    }

    fn prepare_replace(&self) -> Result<()> {
        Ok(())
    }

    fn is_file(&self) -> bool {
        false
    }

    fn image_tables(&self, image: &Path) -> Result<Vec<String>> {
        Ok(bundle::Bundle::open(image)?.restore_order())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_carry_no_password_and_name_the_schema() -> Result<()> {
        let s = PostgresSource::new("postgres://app:secret@db.example:6543/equip")?;
        assert_eq!(s.path(), Path::new("postgres://app@db.example:6543/equip"));
        let s = s.schema("inventory");
        assert_eq!(
            s.path(),
            Path::new("postgres://app@db.example:6543/equip?schema=inventory")
        );
        assert!(!format!("{s:?}").contains("secret"));
        let t = s.target();
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        assert_eq!(t.schema(), "inventory");
        assert_eq!(t.location(), s.path());
        let s = PostgresSource::new("host=/run/pg port=5433 user=u dbname=d")?;
        assert_eq!(s.path(), Path::new("postgres://u@/run/pg:5433/d"));
        assert!(matches!(
            PostgresSource::new("postgres://a b:c/d?nope=1"),
            Err(Error::InvalidInput { .. })
        ));
        Ok(())
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(literal(r"it's \n"), r"'it''s \n'");
    }
}
