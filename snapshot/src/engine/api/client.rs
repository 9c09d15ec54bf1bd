//! The HTTP side of an export: one blocking client (ureq) with timeouts, a least delay between
//! requests, retries with backoff on 429, 5xx and dropped connections (honouring
//! `Retry-After`) within a per-request and a per-run budget, and typed errors that say which
//! part of the export and which page failed. The token travels in a header only.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::engine::api::config::ApiConfig;
use crate::error::{Error, Result};

/// The largest page accepted (bytes of JSON).
const PAGE_LIMIT: u64 = 256 << 20;

/// What a request is for, for errors.
#[derive(Debug, Clone)]
pub(crate) struct Asking<'a> {
    /// The part of the export (`observations 2016-03`, `lookup subjects`).
    pub what: &'a str,
    /// The page (from 1).
    pub page: u64,
}

/// Counters of a run, for the metadata.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
}

/// A `Cell` that threads share (a chunk's pages are fetched on a thread of their own).
#[derive(Debug)]
struct Shared<T>(Mutex<T>);

impl<T: Copy> Shared<T> {
    fn new(v: T) -> Self {
        Shared(Mutex::new(v))
    }
    fn get(&self) -> T {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn set(&self, v: T) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
    }
}

/// The client of one run.
pub(crate) struct Client {
    agent: ureq::Agent,
    auth: Option<(String, String)>,
    min_delay: Duration,
    retries: u32,
    budget: Shared<u32>,
    backoff: Duration,
    max_backoff: Duration,
    last: Shared<Option<Instant>>,
    counters: Shared<Counters>,
}

/// What one attempt came to.
enum Attempt {
    Done(Vec<u8>),
    /// Worth another try: the status (if any), the detail, the server's wish for a pause.
    Again(Option<u16>, String, Option<Duration>),
    /// Not worth another.
    Fail(Option<u16>, String),
    Denied(u16, String),
}

impl Client {
    /// A client with the run's settings; `token` is sent in the configured header.
    pub fn new(config: &ApiConfig, token: Option<String>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout()))
            .http_status_as_error(false)
            .user_agent(concat!("snapshot/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let auth = token.map(|t| {
            let value = if config.auth_scheme.is_empty() {
                t
            } else {
                format!("{} {t}", config.auth_scheme)
            };
            (config.auth_header.clone(), value)
        });
        Client {
            agent,
            auth,
            min_delay: Duration::from_millis(config.min_delay_ms),
            retries: config.retries,
            budget: Shared::new(config.retry_budget),
            backoff: Duration::from_millis(config.backoff_ms),
            max_backoff: Duration::from_secs(config.max_backoff_secs),
            last: Shared::new(None),
            counters: Shared::new(Counters::default()),
        }
    }

    /// The run's counters so far.
    pub fn counters(&self) -> Counters {
        self.counters.get()
    }

    /// The body at `url` (with `query` added), retried as the settings allow.
    ///
    /// # Errors
    /// [`Error::AccessDenied`] at once on 401 or 403; [`Error::Fetch`] naming `asking` when
    /// the answer is no JSON, on another 4xx, or when the retries or the run's budget are
    /// spent.
    pub fn get(
        &self,
        url: &str,
        query: &[(String, String)],
        asking: &Asking<'_>,
    ) -> Result<Vec<u8>> {
        let mut attempt = 0u32;
        loop {
            self.pace();
            let mut c = self.counters.get();
            c.requests += 1;
            self.counters.set(c);
            match self.once(url, query) {
                Attempt::Done(v) => return Ok(v),
                Attempt::Denied(status, detail) => {
                    return Err(Error::AccessDenied {
                        engine: "api",
                        address: super::redact_url(url),
                        user: self
                            .auth
                            .as_ref()
                            .map_or_else(|| "(no token)".into(), |(h, _)| format!("token in {h}")),
                        detail: format!(
                            "HTTP {status} on {}, page {}: {detail}",
                            asking.what, asking.page
                        ),
                    });
                }
                Attempt::Fail(status, detail) => {
                    return Err(self.failed(url, asking, status, detail));
                }
                Attempt::Again(status, detail, wait) => {
                    if attempt >= self.retries {
                        let why = format!("{detail}; gave up after {} attempts", attempt + 1);
                        return Err(self.failed(url, asking, status, why));
                    }
                    if self.budget.get() == 0 {
                        let why = format!("{detail}; the run's retry budget is spent");
                        return Err(self.failed(url, asking, status, why));
                    }
                    self.budget.set(self.budget.get() - 1);
                    let mut c = self.counters.get();
                    c.retries += 1;
                    self.counters.set(c);
                    let backoff = self.backoff.saturating_mul(1 << attempt.min(16));
                    thread::sleep(wait.unwrap_or(backoff).min(self.max_backoff));
                    attempt += 1;
                }
            }
        }
    }

    fn failed(&self, url: &str, asking: &Asking<'_>, status: Option<u16>, detail: String) -> Error {
        Error::Fetch {
            url: super::redact_url(url),
            what: asking.what.to_string(),
            page: asking.page,
            status,
            detail,
        }
    }

    /// Waits until the least delay since the last request has passed.
    fn pace(&self) {
        if let Some(last) = self.last.get() {
            let since = last.elapsed();
            if since < self.min_delay {
                thread::sleep(self.min_delay - since);
            }
        }
        self.last.set(Some(Instant::now()));
    }

    fn once(&self, url: &str, query: &[(String, String)]) -> Attempt {
        let mut req = self.agent.get(url).header("Accept", "application/json");
        if let Some((h, v)) = &self.auth {
            req = req.header(h.as_str(), v.as_str());
        }
        for (k, v) in query {
            req = req.query(k, v);
        }
        let mut resp = match req.call() {
            Ok(r) => r,
            Err(e) => return Attempt::Again(None, transport(&e), None),
        };
        let status = resp.status().as_u16();
        if status == 200 {
            // Read whole, to be parsed from memory: parsing from the body reader goes byte by
            // byte through the transport's layers (several times slower).
            let bytes = match resp
                .body_mut()
                .with_config()
                .limit(PAGE_LIMIT)
                .read_to_vec()
            {
                Ok(b) => b,
                Err(ureq::Error::Timeout(t)) => {
                    return Attempt::Again(Some(status), format!("timed out ({t})"), None);
                }
                Err(e) => {
                    return Attempt::Again(Some(status), format!("reading the answer: {e}"), None);
                }
            };
            return Attempt::Done(bytes);
        }
        let wait = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let detail = format!("{}{}", reason(status), short(&body));
        match status {
            401 | 403 => Attempt::Denied(status, detail),
            429 | 500..=599 | 408 => Attempt::Again(Some(status), detail, wait),
            _ => Attempt::Fail(Some(status), detail),
        }
    }
}

fn transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "too many requests",
        404 => "not found",
        400 => "bad request",
        500 => "server error",
        502 => "bad gateway",
        503 => "unavailable",
        504 => "gateway timeout",
        _ => "unexpected status",
    }
}

/// The first line of a body, short, after `: `.
fn short(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return String::new();
    }
    let cut: String = line.chars().take(200).collect();
    format!(": {cut}")
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let now = chrono::Utc::now();
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
