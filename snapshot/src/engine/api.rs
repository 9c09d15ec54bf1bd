//! Paged HTTP APIs: resources exported chunk by chunk of a time range (months by default),
//! page by page, with lookups fetched once and left-joined into every row, politely (a least
//! delay between requests, retries with backoff honouring `Retry-After`, a budget), resumable
//! after a kill, into one zip per snapshot — the ER backup tool's monthly CSV files and
//! metadata, for any API described in configuration.
//!
//! | file | what |
//! |------|------|
//! | `config.rs` | [`ApiConfig`]: resources, lookups, paging, range, politeness |
//! | `window.rs` | the range cut into months, weeks or days |
//! | `client.rs` | the HTTP client: pace, retries, budget, typed errors |
//! | `pages.rs` | one resource's pages: `next` links, page numbers or offsets |
//! | `flat.rs` | a record's cells read from its JSON text, dotted columns |
//! | `rows.rs` | columns; lookups loaded and joined |
//! | `chunk.rs` | one chunk streamed to JSON lines, then to CSV |
//! | `progress.rs` | the work directory and its atomically committed progress |
//! | `run.rs` | one run: lookups, chunks (fetched, or reused from the previous archive), archive |
//! | `pack.rs` | chunks compressed beside the fetching; the archive assembled from them |
//! | `archive.rs` | the archive's `metadata.json`; reading and checking an archive |
//! | `extract.rs` | `restore --to`: the archive unpacked |
//! | `source.rs` | [`ApiSource`] |
//!
//! In a configuration:
//!
//! ```toml
//! [database]
//! engine = "api"
//! url = "https://example.pamdas.org/api/v1.0/"
//!
//! [database.options]
//! token_env = "ER_TOKEN"
//! start = "2016-01-01"
//! chunk = "month"
//! min_delay_ms = 200
//!
//! [[database.options.resources]]
//! name = "observations"
//! path = "observations/"
//! time_field = "recorded_at"
//! paging = { results = "data.results", next = "data.next" }
//!
//! [[database.options.lookups]]
//! name = "subjects"
//! path = "subjects/"
//! join = "subject_id"
//! paging = { results = "data.results", next = "data.next" }
//! ```

mod archive;
mod chunk;
mod client;
mod config;
mod extract;
mod flat;
mod pack;
mod pages;
mod progress;
mod rows;
mod run;
mod source;
mod window;

pub use archive::{ChunkMeta, FileMeta, LookupMeta, Metadata, ResourceMeta};
pub use config::{ApiConfig, ChunkUnit, Lookup, PageStyle, Paging, Resource};
pub use source::ApiSource;

use std::path::Path;
use std::sync::Arc;

use crate::engine::{Engine, Options, Scope};
use crate::error::{Error, Result};
use crate::source::Source;

/// The kind recorded in snapshots.
pub(crate) const KIND: &str = "api";

/// `url` without a password (`https://user:***@host/…`) and without a query.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{user}:***@{}", &authority[at + 1..])
        }
        None => authority.to_string(),
    };
    let path = path.split('?').next().unwrap_or("");
    format!("{}://{authority}{path}", &url[..scheme_end])
}

/// The registry's entry.
pub(crate) struct ApiEngine;

impl Engine for ApiEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "HTTP API"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["http", "http-api"]
    }

    fn is_server(&self) -> bool {
        true
    }

    fn claims(&self, text: &str) -> bool {
        let t = text.trim_start().to_ascii_lowercase();
        t.starts_with("http://") || t.starts_with("https://")
    }

    fn check_settings(&self, settings: &str) -> std::result::Result<(), String> {
        if self.claims(settings) {
            Ok(())
        } else {
            Err(format!(
                "{}: an API's base URL starts with http:// or https://",
                redact_url(settings)
            ))
        }
    }

    fn settings_variable(&self) -> Option<&'static str> {
        Some("SNAPSHOT_API_URL")
    }

    fn environment(&self) -> &'static str {
        "SNAPSHOT_API_URL"
    }

    fn redact(&self, settings: &str) -> (String, Option<String>) {
        let password = settings.find("://").and_then(|i| {
            let rest = &settings[i + 3..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            let at = authority.rfind('@')?;
            authority[..at].split_once(':').map(|(_, p)| p.to_string())
        });
        (redact_url(settings), password)
    }

    fn source(&self, location: &Path) -> Result<Arc<dyn Source>> {
        Err(Error::invalid(
            "database",
            format!(
                "{}: the api engine reads an HTTP API: give its URL (url = \"https://…\") and \
                 its resources in [database.options]",
                location.display()
            ),
        ))
    }

    fn check_options(&self, options: &Options) -> Result<()> {
        config::ApiConfig::from_options(options).map(drop)
    }

    fn server_source(&self, settings: Option<&str>, scope: &Scope) -> Result<Arc<dyn Source>> {
        self.server_source_with(settings, scope, &Options::new())
    }

    fn server_source_with(
        &self,
        settings: Option<&str>,
        _scope: &Scope,
        options: &Options,
    ) -> Result<Arc<dyn Source>> {
        let url = match settings {
            Some(s) => s.to_string(),
            None => std::env::var("SNAPSHOT_API_URL").map_err(|_| {
                Error::invalid("url", "no API URL given (url, url_env or SNAPSHOT_API_URL)")
            })?,
        };
        if options.is_empty() {
            return Err(Error::invalid(
                "database.options",
                "api engine: the resources to export are set in [database.options] (start, \
                 resources, lookups)",
            ));
        }
        Ok(Arc::new(ApiSource::from_options(&url, options)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_and_query() {
        assert_eq!(
            redact_url("https://u:secret@h.example/api/?token=x"),
            "https://u:***@h.example/api/"
        );
        assert_eq!(redact_url("http://127.0.0.1:9/a"), "http://127.0.0.1:9/a");
        let (shown, pw) = ApiEngine.redact("https://u:secret@h/x");
        assert_eq!(
            (shown.as_str(), pw.as_deref()),
            ("https://u:***@h/x", Some("secret"))
        );
    }
}
