//! The settings of an API export (`[database.options]` of a configuration, or built in code):
//! the resources with their time window and pagination, the lookups joined into their rows,
//! the range and its chunks, politeness and retries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::Options;
use crate::error::{Error, Result};

/// How a range is cut into chunks: each chunk is fetched, written and committed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChunkUnit {
    /// Calendar months (the default, as the ER backup fetches).
    #[default]
    Month,
    /// ISO weeks, Monday to Monday.
    Week,
    /// Days.
    Day,
}

/// How a resource's pages follow each other.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PageStyle {
    /// Each page names the next one by URL (`next`, as DRF and EarthRanger answer); the last
    /// has none.
    #[default]
    Next,
    /// A page-number parameter counted from 1 until a page comes back short.
    Page,
    /// An offset parameter advanced by the rows received until a page comes back short.
    Offset,
}

/// Where a page's rows and its link to the next page are, and how pages are asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// How pages follow each other.
    #[serde(default)]
    pub style: PageStyle,
    /// The dotted path of the rows in a page (`results`; EarthRanger: `data.results`); an
    /// answer that is an array is the rows itself.
    #[serde(default = "default_results")]
    pub results: String,
    /// The dotted path of the next page's URL (`next`; EarthRanger: `data.next`).
    #[serde(default = "default_next")]
    pub next: String,
    /// The page-size parameter (`page_size`); empty: none is sent.
    #[serde(default = "default_size_param")]
    pub size_param: String,
    /// Rows asked for per page.
    #[serde(default = "default_size")]
    pub size: u32,
    /// The page-number parameter of [`PageStyle::Page`] (`page`).
    #[serde(default = "default_page_param")]
    pub page_param: String,
    /// The offset parameter of [`PageStyle::Offset`] (`offset`).
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            style: PageStyle::Next,
            results: default_results(),
            next: default_next(),
            size_param: default_size_param(),
            size: default_size(),
            page_param: default_page_param(),
            offset_param: default_offset_param(),
        }
    }
}

/// A resource exported chunk by chunk: its rows in a time window, page by page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The name in the archive and the metadata (`observations`).
    pub name: String,
    /// The path under the base URL (`observations/`), or a whole URL.
    pub path: String,
    /// The row field holding the time the window is on (`recorded_at`); recorded in the
    /// metadata.
    pub time_field: String,
    /// The parameter of the window's start, inclusive (`since`).
    #[serde(default = "default_since")]
    pub since_param: String,
    /// The parameter of the window's end, exclusive (`until`).
    #[serde(default = "default_until")]
    pub until_param: String,
    /// Further query parameters sent with every first page.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Pagination.
    #[serde(default)]
    pub paging: Paging,
}

/// A table fetched once per run and left-joined into every row of the resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    /// The name in the archive (`subjects`).
    pub name: String,
    /// The path under the base URL (`subjects/`), or a whole URL.
    pub path: String,
    /// The lookup row's key field (`id`).
    #[serde(default = "default_key")]
    pub key: String,
    /// The column of a resource row (after the earlier lookups' joins: a chain such as
    /// subject → group works) whose value is looked up (`subject_id`).
    pub join: String,
    /// The prefix of the joined columns (default: the name and a dot, `subjects.name`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The lookup's columns joined (default: all but the key).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Further query parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Pagination.
    #[serde(default)]
    pub paging: Paging,
}

impl Lookup {
    /// The prefix of the joined columns.
    pub fn prefix(&self) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("{}.", self.name))
    }
}

/// Everything an API export is told (see the module docs of [`ApiSource`](super::ApiSource)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The variable holding the token (`ER_TOKEN`); never stored, logged or recorded.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The header carrying it (`Authorization`).
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    /// The word before the token in that header (`Bearer`; empty: the token alone).
    #[serde(default = "default_auth_scheme")]
    pub auth_scheme: String,
    /// The first day exported.
    pub start: NaiveDate,
    /// The day the range ends before (default: now).
    #[serde(default)]
    pub end: Option<NaiveDate>,
    /// How the range is cut.
    #[serde(default)]
    pub chunk: ChunkUnit,
    /// The least time between two requests, in milliseconds (the server's rate limit).
    #[serde(default = "default_min_delay")]
    pub min_delay_ms: u64,
    /// Attempts of one request past the first (429, 5xx, a dropped connection).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Retries of a whole run, all requests together; past it the run stops with a typed
    /// error and keeps its progress.
    #[serde(default = "default_budget")]
    pub retry_budget: u32,
    /// The first pause before a retry, in milliseconds, doubled at each (unless the server
    /// says `Retry-After`).
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// The longest pause before a retry, in seconds (a longer `Retry-After` is cut to it).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u64,
    /// Timeout of one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Where the progress of an unfinished run is kept (default: under the user's cache
    /// directory, one per API and settings).
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// Whether a run takes the chunks that were complete in the previous archive from it
    /// instead of fetching them again (scheduled runs then fetch only what is new).
    #[serde(default = "default_true")]
    pub reuse_previous: bool,
    /// The resources.
    pub resources: Vec<Resource>,
    /// The lookups, joined in this order.
    #[serde(default)]
    pub lookups: Vec<Lookup>,
    /// This run's first day, instead of `start` (`snapshot create --from`).
    #[serde(default)]
    pub from: Option<NaiveDate>,
    /// This run's end, instead of `end` (`snapshot create --to`).
    #[serde(default)]
    pub to: Option<NaiveDate>,
    /// This run must resume an interrupted one (`snapshot create --resume`): without one, it
    /// fails instead of starting afresh. (Any run resumes a matching interrupted one.)
    #[serde(default)]
    pub resume: bool,
}

impl ApiConfig {
    /// Settings from a configuration's `[database.options]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `database.options`) naming an unknown or missing
    /// setting or a bad value.
    pub fn from_options(options: &Options) -> Result<ApiConfig> {
        let c: ApiConfig = serde_json::from_value(serde_json::Value::Object(options.clone()))
            .map_err(|e| Error::invalid("database.options", format!("api engine: {e}")))?;
        c.check()?;
        Ok(c)
    }

    /// Checks what serde cannot: names, sizes, the range.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the setting.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("database.options", m));
        if self.resources.is_empty() {
            return bad("api engine: resources: at least one resource is needed".into());
        }
        let mut names = std::collections::HashSet::new();
        for n in self
            .resources
            .iter()
            .map(|r| &r.name)
            .chain(self.lookups.iter().map(|l| &l.name))
        {
            if n.is_empty()
                || n == "lookups"
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return bad(format!(
                    "api engine: name {n:?}: letters, digits, '_' and '-' only (and not \"lookups\")"
                ));
            }
            if !names.insert(n.clone()) {
                return bad(format!("api engine: name {n:?} is given twice"));
            }
        }
        for p in self
            .resources
            .iter()
            .map(|r| (&r.name, &r.paging))
            .chain(self.lookups.iter().map(|l| (&l.name, &l.paging)))
        {
            if p.1.size == 0 {
                return bad(format!(
                    "api engine: {}: paging.size must be at least 1",
                    p.0
                ));
            }
        }
        if let (Some(end), start) = (self.to.or(self.end), self.from.unwrap_or(self.start))
            && end <= start
        {
            return bad(format!(
                "api engine: the range {start} .. {end} is empty (the end comes first)"
            ));
        }
        if self.token_env.as_deref() == Some("") {
            return bad("api engine: token_env is empty".into());
        }
        Ok(())
    }

    /// The run's range: from its first day to its end (exclusive; now when not given).
    pub fn range(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let start = at(self.from.unwrap_or(self.start));
        let end = self.to.or(self.end).map_or(now, at);
        (start, end)
    }

    /// The settings that decide what a run fetches, for matching an interrupted run or a
    /// previous archive: everything but this run's range, the resume flag, the work
    /// directory and the politeness settings.
    pub fn fingerprint(&self, base: &str) -> String {
        let mut c = self.clone();
        c.from = None;
        c.to = None;
        c.end = None;
        c.resume = false;
        c.work_dir = None;
        c.min_delay_ms = 0;
        c.retries = 0;
        c.retry_budget = 0;
        c.backoff_ms = 0;
        c.max_backoff_secs = 0;
        c.timeout_secs = 0;
        c.reuse_previous = false;
        let text = serde_json::to_string(&(base, &c)).expect("settings serialize");
        crate::fs_util::hash_bytes(text.as_bytes())
    }

    /// The timeout of a request.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

fn default_results() -> String {
    "results".into()
}
fn default_next() -> String {
    "next".into()
}
fn default_size_param() -> String {
    "page_size".into()
}
fn default_size() -> u32 {
    1000
}
fn default_page_param() -> String {
    "page".into()
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_since() -> String {
    "since".into()
}
fn default_until() -> String {
    "until".into()
}
fn default_key() -> String {
    "id".into()
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_auth_scheme() -> String {
    "Bearer".into()
}
fn default_min_delay() -> u64 {
    100
}
fn default_retries() -> u32 {
    6
}
fn default_budget() -> u32 {
    200
}
fn default_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    120
}
fn default_timeout() -> u64 {
    60
}
fn default_true() -> bool {
    true
}
