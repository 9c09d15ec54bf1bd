//! Where a PostgreSQL source connects and which schema it reads: what the source, its bundle
//! export and its sessions share, with the engine's error mapping.

use std::path::{Path, PathBuf};

use ::postgres::config::Host;
use ::postgres::error::SqlState;
use ::postgres::{Client, Config, NoTls};

use crate::engine::postgres::KIND;
use crate::error::{Error, Result};
use crate::sql::{ident, literal};

/// Where to connect, and which schema: what a table session needs to reach the live data.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: Config,
    pub(crate) schema: String,
    pub(crate) location: PathBuf,
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
pub(crate) fn location(config: &Config, schema: &str) -> PathBuf {
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
