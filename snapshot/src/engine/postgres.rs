//! PostgreSQL: tables of a server, exported consistently into one bundle file, restored table by
//! table in one transaction, with record-level sessions and statistics on the server.
//!
//! | file | what |
//! |------|------|
//! | `source.rs` | [`PostgresSource`]: settings, the consistent export, the restore side |
//! | `target.rs` | where to connect, which schema, session settings, error mapping |
//! | `bundle.rs` | the bundle file: every table's rows in `COPY` text form, then its manifest |
//! | `export.rs` | writing a bundle: one transaction's snapshot, read on several connections |
//! | `manifest.rs` | what a bundle holds: tables, columns, constraints, where rows lie |
//! | `catalog.rs` | what the server's catalog says of schemas, tables, columns and constraints |
//! | `session.rs` | the record-level session (temporary tables loaded from the bundle) |
//! | `settings.rs` | connection settings as people write them: checked, shown without password |
//! | `stats.rs` | statistics for `snapshot status` |

mod bundle;
mod catalog;
mod export;
mod manifest;
mod session;
mod settings;
mod source;
mod stats;
mod target;

pub use source::PostgresSource;

use std::path::Path;
use std::sync::Arc;

use crate::engine::{Engine, Scope};
use crate::error::{Error, Result};
use crate::source::Source;
use crate::table::session::Session;

/// The kind recorded in snapshots.
pub(crate) const KIND: &str = "postgres";

/// The registry's entry.
pub(crate) struct PostgresEngine;

impl Engine for PostgresEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "PostgreSQL"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["postgresql"]
    }

    /// `location` is what a snapshot records: `postgres://user@host:port/database`, with
    /// `?schema=…` for another schema than `public`, no password (one comes from `PGPASSWORD`
    /// if the server needs it) — or any URL or key/value string the client takes.
    fn source(&self, location: &Path) -> Result<Arc<dyn Source>> {
        let text = location
            .to_str()
            .ok_or_else(|| Error::invalid("postgres url", "the settings are not valid UTF-8"))?;
        let (url, schema) = match text.split_once("?schema=") {
            Some((u, s)) => (u, Some(s)),
            None => (text, None),
        };
        let mut source = PostgresSource::new(url)?;
        if let Some(s) = schema {
            source = source.schema(s);
        }
        Ok(Arc::new(source))
    }

    fn is_server(&self) -> bool {
        true
    }

    fn claims(&self, text: &str) -> bool {
        settings::is_url(text)
    }

    fn settings_variable(&self) -> Option<&'static str> {
        Some("SNAPSHOT_PG_URL")
    }

    fn environment(&self) -> &'static str {
        "libpq environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD)"
    }

    fn check_settings(&self, text: &str) -> std::result::Result<(), String> {
        settings::check(text)
    }

    fn normalize_settings(&self, text: &str) -> String {
        settings::normalize_scheme(text)
    }

    fn redact(&self, text: &str) -> (String, Option<String>) {
        settings::redact(text)
    }

    fn server_source(&self, text: Option<&str>, scope: &Scope) -> Result<Arc<dyn Source>> {
        let mut source = match text {
            Some(t) => {
                PostgresSource::new(&settings::normalize_scheme(t)).map_err(|e| match e {
                    Error::InvalidInput { field, reason } => Error::InvalidInput {
                        field,
                        reason: settings::scrub(&reason, t),
                    },
                    other => other,
                })?
            }
            None => PostgresSource::from_env()?,
        };
        if let Some(schema) = &scope.schema {
            source = source.schema(schema.clone());
        }
        if let Some(tables) = &scope.tables {
            source = source.tables(tables.clone());
        }
        Ok(Arc::new(source))
    }

    fn has_tables(&self) -> bool {
        true
    }

    fn preview(&self, image: &Path) -> Result<Box<dyn Session>> {
        Ok(Box::new(session::PgSession::open(image, None, false)?))
    }
}
