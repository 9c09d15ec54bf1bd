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

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ::postgres::Config;

use crate::engine::postgres::session::PgSession;
use crate::engine::postgres::target::{Target, location};
use crate::engine::postgres::{KIND, bundle, export, stats};
use crate::error::{Error, Result};
use crate::source::{CheckLevel, Replacement, Source};
use crate::stats::DbStats;
use crate::table::TableReplacement;
use crate::table::session::TableSession;
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
    jobs: usize,
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

    /// Reads the tables on up to `jobs` connections sharing one snapshot of the database
    /// (`pg_export_snapshot()`, as `pg_dump -j` does); default: the machine's cores, at most 4.
    /// `1` reads them all through one connection.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
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

    /// The tables snapshotted (`None`: every table of the schema).
    pub(crate) fn configured_tables(&self) -> Option<Vec<String>> {
        self.tables.clone()
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
            jobs: default_jobs(),
        }
    }
}

/// The machine's cores, at most 4.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
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
        export::export(
            &mut client,
            &self.target,
            self.tables.as_deref(),
            dest,
            self.jobs,
        )
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        bundle::Bundle::check(image, level)
    }

    fn prepare_replace(&self) -> Result<()> {
        Ok(())
    }

    /// Every table of the bundle replaced, in one transaction (see
    /// [`TableReplacement`](crate::table)); the tables of the live schema that the bundle
    /// does not hold are left alone.
    fn begin_restore(
        &self,
        image: &Path,
        snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        let tables = bundle::Bundle::open(image)?.restore_order();
        let session = PgSession::open(image, Some(&self.target), true)?;
        Ok(Some(Box::new(TableReplacement::new(
            self,
            Box::new(session),
            snapshot_id,
            &tables,
        )?)))
    }

    fn restore_dir(&self) -> Option<PathBuf> {
        None
    }

    fn open_tables(&self, image: &Path, write: bool) -> Result<TableSession> {
        let session = PgSession::open(image, Some(&self.target), write)?;
        Ok(TableSession(Box::new(session)))
    }

    fn statistics(&self, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
        stats::stats(self, table, order_by)
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
}
