//! What every command needs: the configuration, the store, managers for the database (a file
//! or a PostgreSQL server) and for export bundles, progress bars on a terminal, and
//! confirmations.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, EngineKind, SnapshotType, StoreMode};
use crate::{CliError, ExitStatus, invalid};
use snapshot::Result;
use snapshot::SnapshotManager;
use snapshot::environment::Environment;
use snapshot::export::{ExportFormat, ExportSource};
use snapshot::record::SnapshotRecord;
use snapshot::source::{Capture, CaptureProgress, CheckLevel, Replacement, Source};
use snapshot::stats::DbStats;
use snapshot::store::encrypt::{self, EncryptedStore, EncryptionKey};
use snapshot::store::{LocalStore, ReplicatedStore, S3Options, S3Store};
use snapshot::table::TableSession;

pub(crate) struct Ctx {
    pub(crate) config: Config,
    pub(crate) json: bool,
    /// Progress bars: standard error is a terminal and the output is not JSON.
    pub(crate) progress: bool,
    /// Snapshots on whatever the environment says (`create --force` on an ephemeral host).
    pub(crate) force: std::cell::Cell<bool>,
    /// Engine settings of this run only, over `[database.options]` (`create --from/--to/--resume`).
    pub(crate) run_options: std::cell::RefCell<serde_json::Map<String, serde_json::Value>>,
}

/// Stands in for the database when none is configured (list, verify, … need only the store).
const NO_DATABASE: &str = "(no database configured)";

impl Ctx {
    pub(crate) fn new(config: Config, json: bool) -> Ctx {
        Ctx {
            progress: !json && std::io::stderr().is_terminal(),
            force: std::cell::Cell::new(false),
            run_options: std::cell::RefCell::new(serde_json::Map::new()),
            config,
            json,
        }
    }

    /// The store as configured — a directory or a bucket, sealed when `[store] encrypt` is
    /// on or the store already is, under the dedup layer with `[store] mode = "dedup"`. A
    /// directory: `create` makes it when missing, every other command requires it.
    pub(crate) fn store(&self, create: bool) -> Result<Arc<dyn snapshot::Store>> {
        let base: Arc<dyn snapshot::Store> = match self.config.remote_store() {
            Some(url) => Arc::new(S3Store::open(self.s3_options(url)?)?),
            None => {
                let dir = self.config.store_dir()?;
                if !create && !dir.is_dir() {
                    return Err(invalid(
                        "store",
                        format!(
                            "the store {} does not exist (no snapshot was ever taken there?)",
                            dir.display()
                        ),
                    ));
                }
                let local = LocalStore::open(dir)?;
                match &self.config.store_replica {
                    // The replica is not asked anything until the background copier starts:
                    // a replica that is down never stops a snapshot.
                    Some(url) => Arc::new(ReplicatedStore::new(
                        local,
                        S3Store::new(self.s3_options(url)?)?,
                    )?),
                    None => Arc::new(local),
                }
            }
        };
        let base = self.sealed(base)?;
        Ok(match self.config.store_mode {
            StoreMode::Plain => base,
            StoreMode::Dedup => Arc::new(snapshot::store::DedupStore::new(base)),
        })
    }

    fn s3_options(&self, url: &str) -> Result<S3Options> {
        let mut options = S3Options::from_url(url)?;
        if let Some(e) = &self.config.store_endpoint {
            options = options.endpoint(e);
        }
        if let Some(r) = &self.config.store_region {
            options = options.region(r);
        }
        Ok(options)
    }

    /// `store` sealed with the configured key when encryption is on or the store holds
    /// sealed snapshots already (then a missing key is an error, never a silent plain write).
    fn sealed(&self, store: Arc<dyn snapshot::Store>) -> Result<Arc<dyn snapshot::Store>> {
        let key = match &self.config.store_key_file {
            Some(f) => Some(EncryptionKey::from_file(f)?),
            None => EncryptionKey::from_env()?,
        };
        let wanted = self.config.store_encrypt || encrypt::is_encrypted(store.as_ref())?;
        if !wanted {
            return Ok(store);
        }
        let Some(key) = key else {
            return Err(snapshot::Error::Key {
                location: store.location(),
                detail: format!(
                    "the store is encrypted{} and no key is given: set {} (an age identity), \
                     {} (a file holding one) or {}, or [store] key_file",
                    if self.config.store_encrypt {
                        " ([store] encrypt = true)"
                    } else {
                        ""
                    },
                    encrypt::KEY_ENV,
                    encrypt::KEY_FILE_ENV,
                    encrypt::PASSPHRASE_ENV
                ),
            });
        };
        Ok(Arc::new(EncryptedStore::open(store, key)?))
    }

    /// The local directory of the store, `None` for a bucket.
    pub(crate) fn store_dir(&self) -> Result<Option<&Path>> {
        match self.config.remote_store() {
            Some(_) => Ok(None),
            None => self.config.store_dir().map(Some),
        }
    }

    /// Where the scheduler's lock lives: the store directory, or for a bucket a private
    /// directory of this host named after the URL (it keeps two schedulers of this host
    /// apart; schedulers on different hosts are not).
    pub(crate) fn lock_dir(&self) -> Result<PathBuf> {
        match self.config.remote_store() {
            None => Ok(self.config.store_dir()?.to_path_buf()),
            Some(url) => {
                let dir = std::env::temp_dir().join(format!(
                    "snapshot-scheduler-{}",
                    &blake3::hash(url.as_bytes()).to_hex()[..16]
                ));
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| snapshot::Error::Io {
                        op: "create directory",
                        path: dir.clone(),
                        source: e,
                    })?;
                Ok(dir)
            }
        }
    }

    fn database(&self) -> PathBuf {
        self.config
            .database
            .clone()
            .unwrap_or_else(|| PathBuf::from(NO_DATABASE))
    }

    /// A source of `engine` at `path`: a file, or for a server engine the location a
    /// snapshot records (`postgres://user@host:port/database[?schema=…]`, no password: one
    /// comes from the engine's environment, `PGPASSWORD`, if the server needs it).
    fn db_source(&self, path: &Path, engine: EngineKind) -> Result<Arc<dyn Source>> {
        snapshot::engine::source_with(engine.name(), path, &self.config.engine_options)
    }

    /// The source of the configured database: its file, or its server (with `tables` instead
    /// of the configured ones when given). Nothing is connected yet.
    pub(crate) fn configured_source(
        &self,
        create: bool,
        tables: Option<Vec<String>>,
    ) -> Result<Arc<dyn Source>> {
        if let Some(server) = &self.config.server {
            let mut server = server.clone();
            if let Some(t) = tables {
                server.tables = Some(t);
            }
            let mut options = self.config.engine_options.clone();
            options.extend(self.run_options.borrow().clone());
            return server.source_with(&options);
        }
        let _ = tables;
        let path = if create {
            self.config.database_path()?.to_path_buf()
        } else {
            self.database()
        };
        self.db_source(&path, self.config.engine)
    }

    /// Refuses CSV/JSON exports of a database on a server (they read a SQLite or DuckDB
    /// file): exit code 2, kind `unsupported`.
    pub(crate) fn refuse_exports_of_servers(&self, what: &str) -> Result<(), CliError> {
        let Some(server) = &self.config.server else {
            return Ok(());
        };
        Err(CliError::new(
            ExitStatus::Usage,
            "unsupported",
            format!(
                "{what}: CSV/JSON exports read a SQLite or DuckDB file, and the database is the \
                 {} server {}; take `snapshot create --type db` instead (every table, exactly, \
                 in one bundle)",
                snapshot::engine::title(server.kind.name()),
                server.location()
            ),
        ))
    }

    /// The database for people: a path, or a PostgreSQL location without password.
    pub(crate) fn database_display(&self) -> Result<String> {
        self.config.database_display()
    }

    /// An export source of the given engine and formats.
    pub(crate) fn export_source(
        &self,
        path: &Path,
        engine: EngineKind,
        formats: &[ExportFormat],
    ) -> Result<ExportSource> {
        if engine.is_server() {
            return Err(invalid(
                "type",
                format!(
                    "CSV/JSON exports read a SQLite or DuckDB file, not a {} server",
                    snapshot::engine::title(engine.name())
                ),
            ));
        }
        match ExportSource::new(engine.name(), path) {
            Ok(s) => Ok(s.formats(formats)),
            Err(_) => Err(invalid(
                "type",
                format!(
                    "exports need a sqlite or duckdb database (and a build with that feature); {} is {engine}",
                    path.display()
                ),
            )),
        }
    }

    fn build(&self, source: Arc<dyn Source>, create: bool) -> Result<SnapshotManager> {
        let store = self.store(create)?;
        let environment = if self.force.get() {
            Environment::persistent()
        } else {
            Environment::detect(self.store_dir()?)
        };
        let mut builder = SnapshotManager::builder()
            .source(source)
            .store(store)
            .retention(self.config.retention_policy()?)
            .environment(environment)
            .check_on_create(CheckLevel::Quick);
        for e in &self.config.entities {
            builder = builder.entity(e.clone());
        }
        builder.build()
    }

    /// The manager of database snapshots.
    pub(crate) fn db_manager(&self, create: bool) -> Result<SnapshotManager> {
        self.db_manager_with(create, None)
    }

    /// The manager of database snapshots; for a PostgreSQL database, of `tables` instead of
    /// the configured ones when given.
    pub(crate) fn db_manager_with(
        &self,
        create: bool,
        tables: Option<Vec<String>>,
    ) -> Result<SnapshotManager> {
        let source = self.configured_source(create, tables)?;
        self.build(self.with_progress(source), create)
    }

    /// The manager of export bundles of the given formats.
    pub(crate) fn export_manager(
        &self,
        formats: &[ExportFormat],
        tables: Option<Vec<String>>,
        create: bool,
    ) -> Result<SnapshotManager> {
        let path = self.config.database_path()?.to_path_buf();
        let mut src = self.export_source(&path, self.config.engine, formats)?;
        if let Some(t) = tables.or_else(|| self.config.export_tables.clone()) {
            src = src.tables(t);
        }
        self.build(self.with_progress(Arc::new(src)), create)
    }

    /// A manager whose source is of the record's kind, so its engine check applies: the
    /// configured database when the kinds match, else a source at the record's own path.
    pub(crate) fn manager_for(&self, record: &SnapshotRecord) -> Result<SnapshotManager> {
        let kind = record.source_kind.as_str();
        if let Some(formats) = export_formats_of(kind) {
            let path = self
                .config
                .database
                .clone()
                .unwrap_or_else(|| PathBuf::from(&record.source_path));
            let engine = if self.config.database.is_some() {
                self.config.engine
            } else {
                EngineKind::guess(&path)
            };
            let src = self.export_source(&path, engine, &formats).or_else(|_| {
                match EngineKind::parse("sqlite") {
                    Ok(sqlite) => self.export_source(&path, sqlite, &formats),
                    Err(reason) => Err(invalid("type", reason)),
                }
            });
            return match src {
                Ok(s) => self.build(self.with_progress(Arc::new(s)), false),
                Err(_) => self.db_manager(false),
            };
        }
        if self.config.has_database() && kind == self.config.engine.name() {
            return self.db_manager(false);
        }
        let path = PathBuf::from(&record.source_path);
        match snapshot::engine::source(kind, &path) {
            Ok(s) => self.build(self.with_progress(s), false),
            Err(_) => self.db_manager(false),
        }
    }

    /// Wraps a source so that its capture shows a progress bar on a terminal (a spinner with
    /// the bytes written for a database server). The wrapper forwards everything else — the
    /// restore side and record-level sessions included — so the engines still reach the inner
    /// source.
    fn with_progress(&self, source: Arc<dyn Source>) -> Arc<dyn Source> {
        if self.progress {
            Arc::new(Progressed { inner: source })
        } else {
            source
        }
    }

    /// A spinner with a message, on a terminal only.
    pub(crate) fn spinner(&self, message: String) -> Option<ProgressBar> {
        if !self.progress {
            return None;
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Refuses a destructive action that needs a confirmation (no `yes`) when standard input
    /// is not a terminal, before any work is done to prepare the question.
    pub(crate) fn can_confirm(&self, question: &str, yes: bool) -> Result<(), CliError> {
        if yes || std::io::stdin().is_terminal() {
            return Ok(());
        }
        Err(CliError::new(
            ExitStatus::Usage,
            "confirmation_required",
            format!("{question} — refusing without --yes: standard input is not a terminal"),
        ))
    }

    /// Asks before a destructive action. `yes` answers for the user; without it, standard input
    /// must be a terminal.
    pub(crate) fn confirm(&self, question: &str, yes: bool) -> Result<(), CliError> {
        if yes {
            return Ok(());
        }
        self.can_confirm(question, yes)?;
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::new(ExitStatus::Error, "io", e.to_string()))?;
        if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            Err(CliError::new(
                ExitStatus::Error,
                "aborted",
                "aborted: nothing was changed",
            ))
        }
    }
}

/// The formats of an export bundle kind (`csv`, `json`, `csv+json`), `None` for other kinds.
pub(crate) fn export_formats_of(kind: &str) -> Option<Vec<ExportFormat>> {
    match kind {
        "csv" => Some(vec![ExportFormat::Csv]),
        "json" => Some(vec![ExportFormat::Json]),
        "csv+json" => Some(vec![ExportFormat::Csv, ExportFormat::Json]),
        _ => None,
    }
}

/// The formats a `--type` asks for (`Db` asks for none).
pub(crate) fn formats_of(kind: SnapshotType) -> Vec<ExportFormat> {
    match kind {
        SnapshotType::Db => vec![],
        SnapshotType::Csv => vec![ExportFormat::Csv],
        SnapshotType::Json => vec![ExportFormat::Json],
        SnapshotType::All => vec![ExportFormat::Csv, ExportFormat::Json],
    }
}

/// A source whose capture draws a progress bar (bytes written and rate; the total is the live
/// file's size for a database copy) by watching the image grow.
#[derive(Debug)]
struct Progressed {
    inner: Arc<dyn Source>,
}

impl Source for Progressed {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn extension(&self) -> &str {
        self.inner.extension()
    }
    fn capture(&self, dest: &Path) -> Result<()> {
        self.capture_with(dest, &Capture::default())
    }
    fn capture_with(&self, dest: &Path, context: &Capture<'_>) -> Result<()> {
        // A bar for a file copied as it is; a spinner for exports and servers.
        let total = if export_formats_of(self.inner.kind()).is_some() {
            None
        } else {
            std::fs::metadata(self.inner.path())
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        };
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(format!(
            "{} {}",
            self.inner.kind(),
            self.inner.path().display()
        ));
        let done = AtomicBool::new(false);
        // A source that reports its own progress (an API export's chunks and rows) turns the
        // bar into a count of its steps; the others are watched by the image's size.
        let heard = AtomicBool::new(false);
        let listen = |p: &CaptureProgress| {
            if !heard.swap(true, Ordering::Relaxed) {
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} chunks ({elapsed}, eta {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_length(p.total);
            bar.set_position(p.done);
            bar.set_message(format!("{}: {} rows", p.detail, p.items));
        };
        let mut context = *context;
        if context.progress.is_none() {
            context.progress = Some(&listen);
        }
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if !heard.load(Ordering::Relaxed)
                        && let Ok(m) = std::fs::metadata(dest)
                    {
                        bar.set_position(m.len());
                    }
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let r = self.inner.capture_with(dest, &context);
            done.store(true, Ordering::Relaxed);
            r
        });
        if !heard.load(Ordering::Relaxed)
            && let Ok(m) = std::fs::metadata(dest)
        {
            bar.set_position(m.len());
        }
        bar.finish_and_clear();
        result
    }
    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        self.inner.check_image(image, level)
    }
    fn prepare_replace(&self) -> Result<()> {
        self.inner.prepare_replace()
    }
    fn companions(&self) -> Vec<PathBuf> {
        self.inner.companions()
    }
    fn begin_restore(
        &self,
        image: &Path,
        snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        self.inner.begin_restore(image, snapshot_id)
    }
    fn begin_restore_paths(
        &self,
        image: &Path,
        snapshot_id: &str,
        paths: &[String],
    ) -> Result<Box<dyn Replacement + '_>> {
        self.inner.begin_restore_paths(image, snapshot_id, paths)
    }
    fn materialize(
        &self,
        image: &Path,
        target: &Path,
        paths: &[String],
    ) -> Result<Option<Vec<String>>> {
        self.inner.materialize(image, target, paths)
    }
    fn compare_paths(&self, image: &Path) -> Result<snapshot::PathDiff> {
        self.inner.compare_paths(image)
    }
    fn wants_previous(&self) -> bool {
        self.inner.wants_previous()
    }
    fn adapt_image(&self, image: &Path) -> Result<()> {
        self.inner.adapt_image(image)
    }
    fn restore_dir(&self) -> Option<PathBuf> {
        self.inner.restore_dir()
    }
    fn open_tables(&self, image: &Path, write: bool) -> Result<TableSession> {
        self.inner.open_tables(image, write)
    }
    fn statistics(&self, table: Option<&str>, order_by: Option<&str>) -> Result<DbStats> {
        self.inner.statistics(table, order_by)
    }
}
