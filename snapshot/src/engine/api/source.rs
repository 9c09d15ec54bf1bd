//! [`ApiSource`]: a paged JSON API exported month by month into one archive per snapshot.

use std::path::{Path, PathBuf};

use crate::engine::Options;
use crate::engine::api::archive::{Archive, Metadata};
use crate::engine::api::config::ApiConfig;
use crate::engine::api::extract;
use crate::engine::api::run::{RunInput, run};
use crate::error::{Error, Result};
use crate::source::{Capture, CheckLevel, Replacement, Source};
use crate::stats::DbStats;

/// A paged HTTP API (EarthRanger's observations and events, or any API described by an
/// [`ApiConfig`]), exported into one zip per snapshot: per resource and chunk of the range
/// (months by default) a CSV file — records flattened to dotted columns, the lookups
/// (`subjects`, `subjectgroups`) left-joined — and the records as the API gave them (JSON
/// lines), the lookups, and `metadata.json` (range, counts per chunk, lookups' counts, times,
/// whether it was resumed).
///
/// Each chunk is committed to a work directory when whole; a run that is killed, or that fails
/// after its retries (429, 5xx, timeouts, within a budget), resumes at the next run with the
/// same settings, fetching only the chunk it was in. With `reuse_previous` (the default) the
/// chunks that were whole in the previous snapshot's archive are taken from it, so a nightly
/// job fetches only what is new.
///
/// ```no_run
/// # fn main() -> snapshot::Result<()> {
/// use snapshot::{ApiSource, LocalStore, SnapshotManager, SnapshotRequest};
/// use snapshot::engine::api::ApiConfig;
///
/// let options = serde_json::json!({
///     "token_env": "ER_TOKEN",
///     "start": "2016-01-01",
///     "resources": [{"name": "observations", "path": "observations/",
///                    "time_field": "recorded_at",
///                    "paging": {"results": "data.results", "next": "data.next"}}],
///     "lookups": [{"name": "subjects", "path": "subjects/", "join": "subject_id",
///                  "paging": {"results": "data.results", "next": "data.next"}}],
/// });
/// let config: ApiConfig = serde_json::from_value(options).expect("settings");
/// let source = ApiSource::new("https://example.pamdas.org/api/v1.0/", config)?;
/// let manager = SnapshotManager::builder()
///     .source(source)
///     .store(LocalStore::open("er-backups")?)
///     .build()?;
/// manager.snapshot(SnapshotRequest::new("monthly").progress(|p| {
///     eprintln!("{}/{} chunks, {} rows", p.done, p.total, p.items);
/// }))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiSource {
    base: String,
    location: PathBuf,
    config: ApiConfig,
    token: Option<String>,
}

impl std::fmt::Debug for ApiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSource")
            .field("location", &self.location)
            .field("config", &self.config)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ApiSource {
    /// The API at `base_url` (`http://` or `https://`), exported as `config` says.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `url`) for a URL that is not HTTP; the settings'
    /// [`ApiConfig::check`] errors.
    pub fn new(base_url: impl Into<String>, config: ApiConfig) -> Result<ApiSource> {
        let base = base_url.into().trim().to_string();
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || base.len() < 10 {
            return Err(Error::invalid(
                "url",
                format!(
                    "{}: an API's base URL starts with http:// or https://",
                    super::redact_url(&base)
                ),
            ));
        }
        config.check()?;
        Ok(ApiSource {
            location: PathBuf::from(super::redact_url(&base)),
            base,
            config,
            token: None,
        })
    }

    /// Sends `token` (held in memory only: never recorded, logged or written) instead of the
    /// value of the settings' `token_env`.
    pub fn with_token(mut self, token: impl Into<String>) -> ApiSource {
        self.token = Some(token.into());
        self
    }

    /// The token given in code, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The API at `base_url` with settings given as a configuration's `[database.options]`.
    ///
    /// # Errors
    /// As [`new`](Self::new) and [`ApiConfig::from_options`].
    pub fn from_options(base_url: &str, options: &Options) -> Result<ApiSource> {
        ApiSource::new(base_url, ApiConfig::from_options(options)?)
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// The settings, to change (this run's range, `resume`).
    pub fn config_mut(&mut self) -> &mut ApiConfig {
        &mut self.config
    }

    /// The base URL as requests use it.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// The base URL without credentials, as snapshots record it.
    pub fn location(&self) -> &str {
        self.location.to_str().unwrap_or("")
    }

    /// Where an unfinished run keeps its progress: the configured `work_dir`, else
    /// `$XDG_CACHE_HOME/snapshot/api/<settings>` (or `~/.cache/…`), one per API and settings.
    pub fn work_dir(&self) -> PathBuf {
        if let Some(d) = &self.config.work_dir {
            return d.clone();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        let fp = self.config.fingerprint(self.location());
        let short = fp
            .trim_start_matches("blake3:")
            .get(..16)
            .unwrap_or("run")
            .to_string();
        cache.join("snapshot").join("api").join(short)
    }

    /// The metadata of the archive at `image` (a snapshot of this engine).
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when it is no archive of this engine; I/O errors.
    pub fn read_metadata(image: &Path) -> Result<Metadata> {
        Archive::open(image)?.metadata()
    }
}

impl Source for ApiSource {
    fn kind(&self) -> &'static str {
        super::KIND
    }

    fn path(&self) -> &Path {
        &self.location
    }

    fn extension(&self) -> &str {
        "zip"
    }

    fn capture(&self, dest: &Path) -> Result<()> {
        self.capture_with(dest, &Capture::default())
    }

    fn capture_with(&self, dest: &Path, context: &Capture<'_>) -> Result<()> {
        run(
            self,
            &RunInput {
                dest,
                previous: context.previous,
                listener: context.progress,
            },
        )
    }

    fn wants_previous(&self) -> bool {
        self.config.reuse_previous
    }

    fn check_image(&self, image: &Path, level: CheckLevel) -> Result<()> {
        Archive::open(image)?.check(level).map(drop)
    }

    fn prepare_replace(&self) -> Result<()> {
        Err(self.no_restore())
    }

    fn begin_restore(
        &self,
        _image: &Path,
        _snapshot_id: &str,
    ) -> Result<Option<Box<dyn Replacement + '_>>> {
        Err(self.no_restore())
    }

    fn restore_dir(&self) -> Option<PathBuf> {
        None
    }

    fn materialize(
        &self,
        image: &Path,
        target: &Path,
        paths: &[String],
    ) -> Result<Option<Vec<String>>> {
        extract::extract(image, target, paths).map(Some)
    }

    fn statistics(&self, _table: Option<&str>, _order_by: Option<&str>) -> Result<DbStats> {
        Ok(DbStats {
            engine: super::KIND.to_string(),
            path: self.location.clone(),
            file_bytes: 0,
            tables: Vec::new(),
            table: None,
            files: Vec::new(),
        })
    }
}

impl ApiSource {
    fn no_restore(&self) -> Error {
        Error::Unsupported {
            operation: "restore into an API (its data is only read; `restore ID --to DIR` unpacks the archive)",
            kind: super::KIND.to_string(),
        }
    }
}
