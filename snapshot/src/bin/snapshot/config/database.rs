//! Which database the configuration names, through the file's `[database]` table,
//! `SNAPSHOT_DB`/`SNAPSHOT_ENGINE` and `--db`/`--engine`/`--pg-schema`: a file and its engine,
//! or a database on a server (an engine whose URL scheme or configuration says so), with the
//! origin of every value. Which engine a URL belongs to, and how its settings are checked, is
//! asked of the library's engine registry.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use snapshot::Result;
use snapshot::engine;

use crate::config::origin::{Layer, Origin, line_of};
use crate::config::raw::RawDatabase;
use crate::config::server::{ServerConfig, ServerSettings};
use crate::config::{EngineKind, Overrides};
use crate::invalid;

/// A database as one layer names it.
#[derive(Debug, Clone)]
enum DbValue {
    /// A file (absolute).
    Path(PathBuf),
    /// A database on a server of this engine.
    Server(EngineKind, ServerSettings),
    /// A value of `SNAPSHOT_DB` or `--db` that is no server's URL: a file, or a server's
    /// settings when the engine says so.
    Text(String),
}

/// The database of one layer, and where it was given.
#[derive(Debug, Clone)]
struct GivenDb {
    value: DbValue,
    layer: Layer,
    origin: Origin,
}

impl GivenDb {
    /// `SNAPSHOT_DB` or `--db`: a server's URL, or a text resolved once the engine is known.
    fn from_text(text: &str, layer: Layer, origin: Origin) -> GivenDb {
        let value = match engine::claiming(text) {
            Some(kind) => DbValue::Server(
                EngineKind(kind),
                ServerSettings::Given {
                    text: engine::normalize_settings(kind, text),
                    from: None,
                },
            ),
            None => DbValue::Text(text.to_string()),
        };
        GivenDb {
            value,
            layer,
            origin,
        }
    }
}

/// What the configuration's database resolves to.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    /// The database file, when it is one.
    pub(crate) path: Option<PathBuf>,
    /// Its engine.
    pub(crate) engine: EngineKind,
    /// The database on a server, when it is one.
    pub(crate) server: Option<ServerConfig>,
}

/// A file origin at a span of the file.
type At<'a> = &'a dyn Fn(Range<usize>) -> Origin;

/// The server engine `[database]` keys (`url`, `url_env`) refer to: the engine written, else
/// the one whose URL scheme the url has, else the one server engine of this build.
fn server_engine_of(raw: &RawDatabase) -> Option<EngineKind> {
    if let Some(e) = raw.database_engine().filter(|e| e.is_server()) {
        return Some(e);
    }
    raw.url
        .as_ref()
        .and_then(|u| engine::claiming(u.get_ref()))
        .or_else(|| engine::kinds().into_iter().find(|k| engine::is_server(k)))
        .map(EngineKind)
}

/// Checks that the `[database]` keys fit together (a file, or a server: not both; `schema`
/// and `tables` only for a server). Errors name the file and line, `[database]` and the key.
fn check_keys(raw: &RawDatabase, at: At<'_>) -> Result<()> {
    let bad = |field: &'static str, key: &str, span: Range<usize>, reason: String| {
        invalid(field, format!("{}: [database] {key}: {reason}", at(span)))
    };
    let engine = raw.database_engine();
    let server_keys = raw.url.is_some() || raw.url_env.is_some();
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
        if let Some(kind) = engine::claiming(&text) {
            return Err(bad(
                "database.path",
                "path",
                p.span(),
                format!(
                    "{} is a {} URL, not a file: write url = \"…\" (or url_env = \
                     \"VARIABLE\" to keep the password out of this file) instead of path",
                    engine::redact(kind, &text),
                    engine::title(kind)
                ),
            ));
        }
        if server_keys {
            let (key, span) = match (&raw.url, &raw.url_env) {
                (Some(u), _) => ("url", u.span()),
                (_, Some(e)) => ("url_env", e.span()),
                _ => unreachable!("server_keys"),
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
                    "names a database server, but path (line {}) names a database file: keep one",
                    line_of(&at(p.span()))
                ),
            ));
        }
        if let Some(e) = engine.filter(|e| e.is_server()) {
            return Err(bad(
                "database.path",
                "path",
                p.span(),
                format!(
                    "engine = \"{e}\" takes url or url_env (or neither: the environment), \
                     not a file path"
                ),
            ));
        }
    }
    if server_keys
        && let Some(e) = &raw.engine
        && !e.get_ref().is_server()
    {
        let server = server_engine_of(raw).map_or("a server engine".into(), |s| s.to_string());
        return Err(bad(
            "database.engine",
            "engine",
            e.span(),
            format!(
                "url / url_env name a database server, but engine is {}: make it \"{server}\" \
                 or leave it out",
                e.get_ref()
            ),
        ));
    }
    check_scope_keys(raw, at)
}

/// `schema` and `tables`: for a server only, and not empty.
fn check_scope_keys(raw: &RawDatabase, at: At<'_>) -> Result<()> {
    let bad = |field: &'static str, key: &str, span: Range<usize>, reason: String| {
        invalid(field, format!("{}: [database] {key}: {reason}", at(span)))
    };
    let engine = raw.database_engine();
    if raw.path.is_some() || engine.is_some_and(|e| !e.is_server()) {
        let what = match (engine, &raw.path) {
            (Some(e), _) => format!("a {e} database"),
            (None, Some(p)) => format!("the database file {}", p.get_ref().display()),
            (None, None) => "a database file".into(),
        };
        let server = server_engine_of(raw).map_or("a database server".into(), |s| {
            format!("a {} database (engine = \"{s}\")", engine::title(s.name()))
        });
        if let Some(sc) = &raw.schema {
            return Err(bad(
                "database.schema",
                "schema",
                sc.span(),
                format!("applies to {server}, not to {what}"),
            ));
        }
        if let Some(t) = &raw.tables {
            return Err(bad(
                "database.tables",
                "tables",
                t.span(),
                format!(
                    "applies to {server}, not to {what} (the tables of exports are [exports] \
                     tables)"
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
            "must not be empty (leave it out for the default schema)".into(),
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
    Ok(())
}

/// The database the file's `[database]` table names: a file (`path`), a server (`url`,
/// `url_env`, or a server `engine` alone), or nothing.
fn file_database(
    raw: &RawDatabase,
    at: At<'_>,
    abs: &dyn Fn(&Path) -> PathBuf,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<GivenDb>> {
    check_keys(raw, at)?;
    let bad = |field: &'static str, key: &str, span: Range<usize>, reason: String| {
        invalid(field, format!("{}: [database] {key}: {reason}", at(span)))
    };
    let given = |value, span| {
        Ok(Some(GivenDb {
            value,
            layer: Layer::File,
            origin: at(span),
        }))
    };
    if let Some(p) = &raw.path {
        return given(DbValue::Path(abs(p.get_ref())), p.span());
    }
    let Some(kind) = server_engine_of(raw)
        .filter(|_| raw.url.is_some() || raw.url_env.is_some() || raw.database_engine().is_some())
    else {
        return Ok(None);
    };
    if let Some(u) = &raw.url {
        engine::check_settings(kind.name(), u.get_ref())
            .map_err(|reason| bad("database.url", "url", u.span(), reason))?;
        let settings = ServerSettings::Given {
            text: engine::normalize_settings(kind.name(), u.get_ref()),
            from: None,
        };
        return given(DbValue::Server(kind, settings), u.span());
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
                    "the environment variable {var} is not set (or empty): set it to the {} URL",
                    engine::title(kind.name())
                ),
            ));
        };
        engine::check_settings(kind.name(), &text).map_err(|reason| {
            bad(
                "database.url_env",
                "url_env",
                e.span(),
                format!("the value of {var}: {reason}"),
            )
        })?;
        let settings = ServerSettings::Given {
            text: engine::normalize_settings(kind.name(), &text),
            from: Some(var.to_string()),
        };
        return given(DbValue::Server(kind, settings), e.span());
    }
    match &raw.engine {
        Some(e) if e.get_ref().is_server() => {
            given(DbValue::Server(kind, ServerSettings::Environment), e.span())
        }
        _ => Ok(None),
    }
}

impl RawDatabase {
    fn database_engine(&self) -> Option<EngineKind> {
        self.engine.as_ref().map(|e| *e.get_ref())
    }
}

/// The engine given by the highest layer: the file, `SNAPSHOT_ENGINE`, `--engine`.
fn given_engine(
    raw: &RawDatabase,
    overrides: &Overrides,
    vars: &dyn Fn(&str) -> Option<String>,
    at: At<'_>,
) -> Result<Option<(EngineKind, Layer, Origin)>> {
    let mut given = None;
    if let Some(e) = &raw.engine {
        given = Some((*e.get_ref(), Layer::File, at(e.span())));
    }
    if let Some(e) = vars("SNAPSHOT_ENGINE") {
        let parsed = EngineKind::parse(&e)
            .map_err(|reason| invalid("config", format!("SNAPSHOT_ENGINE={e:?}: {reason}")))?;
        given = Some((
            parsed,
            Layer::Env,
            Origin::Env {
                var: "SNAPSHOT_ENGINE".into(),
            },
        ));
    }
    if let Some(e) = overrides.engine {
        given = Some((
            e,
            Layer::Flag,
            Origin::Flag {
                flag: "--engine".into(),
            },
        ));
    }
    Ok(given)
}

/// The database given by the highest layer: the file, `SNAPSHOT_DB`, `--db`.
fn given_database(
    file: Option<GivenDb>,
    overrides: &Overrides,
    vars: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Option<GivenDb> {
    let mut db = file;
    if let Some(v) = vars("SNAPSHOT_DB") {
        let origin = Origin::Env {
            var: "SNAPSHOT_DB".into(),
        };
        db = Some(GivenDb::from_text(&v, Layer::Env, origin));
    }
    if let Some(p) = &overrides.db {
        let origin = Origin::Flag {
            flag: "--db".into(),
        };
        db = Some(match p.to_str() {
            Some(text) => GivenDb::from_text(text, Layer::Flag, origin),
            None => GivenDb {
                value: DbValue::Path(absolute(cwd, p)),
                layer: Layer::Flag,
                origin,
            },
        });
    }
    db
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The settings of a server engine named without any: its settings variable
/// (`SNAPSHOT_PG_URL`) when set, else its own environment.
fn environment_settings(
    kind: EngineKind,
    vars: &dyn Fn(&str) -> Option<String>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<ServerSettings> {
    if let Some(var) = engine::settings_variable(kind.name())
        && let Some(url) = vars(var)
    {
        engine::check_settings(kind.name(), &url)
            .map_err(|reason| invalid("database.url", format!("env {var}: {reason}")))?;
        origins.insert("database.url", Origin::Env { var: var.into() });
        return Ok(ServerSettings::Given {
            text: engine::normalize_settings(kind.name(), &url),
            from: Some(var.into()),
        });
    }
    origins.insert(
        "database.url",
        Origin::Derived {
            from: engine::environment(kind.name()),
        },
    );
    Ok(ServerSettings::Environment)
}

/// The engine of a database file: as given (a file engine at any layer), else guessed from
/// the file. A server engine given at least as high as the file is a contradiction.
fn file_engine(
    g: &GivenDb,
    path: &Path,
    eng: Option<(EngineKind, Layer, Origin)>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<EngineKind> {
    match eng {
        Some((e, l, o)) if l >= g.layer && e.is_server() => Err(invalid(
            "database.engine",
            format!(
                "{o}: engine {e}, but the database {} ({}) is a file: name the server with \
                 --db {e}://…, SNAPSHOT_DB or [database] url / url_env",
                path.display(),
                g.origin
            ),
        )),
        Some((e, _, o)) if !e.is_server() => {
            origins.insert("database.engine", o);
            Ok(e)
        }
        _ => {
            origins.insert(
                "database.engine",
                Origin::Derived {
                    from: "guessed from the database file".into(),
                },
            );
            Ok(EngineKind::guess(path))
        }
    }
}

/// Resolves the database and its engine from every layer (see the module docs).
pub(crate) fn resolve(
    raw: &RawDatabase,
    overrides: &Overrides,
    vars: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
    at: At<'_>,
    abs: &dyn Fn(&Path) -> PathBuf,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<Database> {
    let file_db = file_database(raw, at, abs, vars)?;
    let engine_given = given_engine(raw, overrides, vars, at)?;
    // A text from the environment or a flag is a file unless it is a server's URL or an
    // engine at least as high says it is a server's settings.
    let server_at = |layer: Layer| {
        engine_given
            .as_ref()
            .filter(|(e, l, _)| e.is_server() && *l >= layer)
            .map(|(e, _, _)| *e)
    };
    let db = given_database(file_db, overrides, vars, cwd).map(|g| match g.value {
        DbValue::Text(t) => match server_at(g.layer) {
            Some(kind) => GivenDb {
                value: DbValue::Server(
                    kind,
                    ServerSettings::Given {
                        text: engine::normalize_settings(kind.name(), &t),
                        from: None,
                    },
                ),
                ..g
            },
            None => GivenDb {
                value: DbValue::Path(absolute(cwd, Path::new(&t))),
                ..g
            },
        },
        _ => g,
    });

    let mut path = None;
    let mut server_settings = None;
    let engine = match (db, engine_given) {
        (Some(g), eng) if matches!(g.value, DbValue::Server(..)) => {
            let DbValue::Server(kind, settings) = g.value.clone() else {
                unreachable!("matched above")
            };
            server_settings = Some(server_of(&g, kind, settings, eng, vars, origins)?);
            kind
        }
        (Some(g), eng) => {
            let DbValue::Path(p) = g.value.clone() else {
                unreachable!("texts were resolved above")
            };
            origins.insert("database.path", g.origin.clone());
            let engine = file_engine(&g, &p, eng, origins)?;
            path = Some(p);
            engine
        }
        (None, Some((e, _, o))) => {
            origins.insert("database.engine", o);
            e
        }
        (None, None) => {
            origins.insert("database.engine", Origin::Default);
            EngineKind::default_for_new()
        }
    };
    // A server engine with no database named anywhere: the settings of the environment.
    if engine.is_server() && server_settings.is_none() {
        server_settings = Some(environment_settings(engine, vars, origins)?);
    }
    let server = match server_settings {
        Some(settings) => Some(scope(raw, overrides, engine, settings, at, origins)?),
        None => {
            if overrides.pg_schema.is_some() {
                return Err(invalid(
                    "database.schema",
                    format!(
                        "flag --pg-schema applies to a database on a server; the database is \
                         {} ({engine})",
                        path.as_deref().map_or_else(
                            || "not configured".to_string(),
                            |p| p.display().to_string()
                        )
                    ),
                ));
            }
            None
        }
    };
    Ok(Database {
        path,
        engine,
        server,
    })
}

/// The settings of the server database `g` names, checked against the engine given.
fn server_of(
    g: &GivenDb,
    kind: EngineKind,
    settings: ServerSettings,
    eng: Option<(EngineKind, Layer, Origin)>,
    vars: &dyn Fn(&str) -> Option<String>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<ServerSettings> {
    let engine_origin = match eng {
        Some((e, l, o)) if l >= g.layer && e != kind => {
            return Err(invalid(
                "database.engine",
                format!(
                    "{o}: engine {e} conflicts with the {} database given by {}: leave the \
                     engine out or make it {kind}",
                    engine::title(kind.name()),
                    g.origin
                ),
            ));
        }
        Some((e, _, o)) if e == kind => o,
        _ => Origin::Derived {
            from: format!(
                "the database ({}) is a {} server",
                g.origin,
                engine::title(kind.name())
            ),
        },
    };
    origins.insert("database.engine", engine_origin);
    match settings {
        ServerSettings::Environment => environment_settings(kind, vars, origins),
        ServerSettings::Given { text, from } => {
            if g.layer != Layer::File {
                // The file's own values were checked as they were read.
                engine::check_settings(kind.name(), &text)
                    .map_err(|reason| invalid("database.url", format!("{}: {reason}", g.origin)))?;
            }
            origins.insert("database.url", g.origin.clone());
            Ok(ServerSettings::Given { text, from })
        }
    }
}

/// The schema and tables of a server database, from the file and `--pg-schema`.
fn scope(
    raw: &RawDatabase,
    overrides: &Overrides,
    kind: EngineKind,
    settings: ServerSettings,
    at: At<'_>,
    origins: &mut BTreeMap<&'static str, Origin>,
) -> Result<ServerConfig> {
    let mut schema = None;
    origins.insert("database.schema", Origin::Default);
    if let Some(sc) = &raw.schema {
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
    let tables = raw.tables.as_ref().map(|t| t.get_ref().clone());
    origins.insert(
        "database.tables",
        raw.tables
            .as_ref()
            .map_or(Origin::Default, |t| at(t.span())),
    );
    Ok(ServerConfig {
        kind,
        settings,
        schema,
        tables,
    })
}
