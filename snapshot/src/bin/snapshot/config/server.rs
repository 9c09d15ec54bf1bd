//! A database on a server (PostgreSQL): its connection settings — given, or the engine's own
//! environment variables — and what part of it is snapshotted. Everything particular to the
//! engine (its URL scheme, how its settings are checked, where its password is) is asked of
//! the library's engine registry.

use std::fmt;
use std::sync::Arc;

use snapshot::engine::{self, Scope};
use snapshot::{Error, Result, Source};

use crate::config::EngineKind;

/// Where a server's connection settings come from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum ServerSettings {
    /// A URL or `key=value` string, maybe with a password; `from` names the variable it was
    /// read from, if any.
    Given { text: String, from: Option<String> },
    /// The engine's own variables (`PGHOST`, …), read when the source is made.
    Environment,
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSettings::Given { from, .. } => f
                .debug_struct("Given")
                .field("text", &"(redacted)")
                .field("from", from)
                .finish(),
            ServerSettings::Environment => f.write_str("Environment"),
        }
    }
}

/// A database on a server: `[database] engine = "postgres"` with `url`, `url_env` or neither
/// (the environment), or a `postgres://` URL given as `--db` or `SNAPSHOT_DB`.
///
/// Its `Debug` output and [`describe`](Self::describe) never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub(crate) kind: EngineKind,
    pub(crate) settings: ServerSettings,
    /// The schema whose tables are snapshotted (`None`: the engine's default).
    pub schema: Option<String>,
    /// The tables snapshotted (`None`: every table of the schema).
    pub tables: Option<Vec<String>>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("engine", &self.kind)
            .field("settings", &self.describe())
            .field("schema", &self.schema)
            .field("tables", &self.tables)
            .finish()
    }
}

impl ServerConfig {
    /// The connection settings as given, password included (`None`: the engine's environment
    /// variables). Never print them: [`describe`](Self::describe) is for people.
    pub fn settings(&self) -> Option<&str> {
        match &self.settings {
            ServerSettings::Given { text, .. } => Some(text),
            ServerSettings::Environment => None,
        }
    }

    /// The settings for people, password replaced by `***`:
    /// `postgres://app:***@127.0.0.1:5432/equipment`, `$EQUIPMENT_PG_URL = postgres://…`, or
    /// the engine's environment (`libpq environment (PGHOST, …)`).
    pub fn describe(&self) -> String {
        match &self.settings {
            ServerSettings::Given { text, from } => {
                let shown = engine::redact(self.kind.name(), text);
                match from {
                    Some(var) => format!("${var} = {shown}"),
                    None => shown,
                }
            }
            ServerSettings::Environment => engine::environment(self.kind.name()),
        }
    }

    /// `message` with the password of the settings replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        match self.settings() {
            Some(s) => engine::scrub(self.kind.name(), message, s),
            None => message.to_string(),
        }
    }

    /// The source these settings describe (nothing is connected yet).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the settings cannot be parsed (no password in the
    /// message); [`Error::Unsupported`] in a build without the engine.
    pub fn source(&self) -> Result<Arc<dyn Source>> {
        self.source_with(&serde_json::Map::new())
    }

    /// [`source`](Self::source) with the engine's own settings (`[database.options]`).
    ///
    /// # Errors
    /// As [`source`](Self::source); the engine's errors for its settings.
    pub fn source_with(
        &self,
        options: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn Source>> {
        let mut scope = Scope::new();
        if let Some(schema) = &self.schema {
            scope = scope.schema(schema.clone());
        }
        if let Some(tables) = &self.tables {
            scope = scope.tables(tables.clone());
        }
        engine::server_source_with(self.kind.name(), self.settings(), &scope, options).map_err(
            |e| match e {
                Error::InvalidInput { field, reason } => Error::InvalidInput {
                    field,
                    reason: self.scrub(&reason),
                },
                other => other,
            },
        )
    }

    /// Where the data lives, without a password: the source's location
    /// (`postgres://user@host:port/database`, `?schema=…` for another schema than `public`),
    /// else the redacted settings.
    pub fn location(&self) -> String {
        match self.source() {
            Ok(s) => s.path().display().to_string(),
            Err(_) => self.describe(),
        }
    }
}
