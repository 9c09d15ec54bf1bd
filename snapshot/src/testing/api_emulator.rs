//! A local emulation of an EarthRanger-style paged API (feature `api-emulator`), for the
//! `api` engine's tests, examples and benchmark: an HTTP server on loopback serving
//! `observations/` and `events/` in time windows (`since`, `until`) with `next` links,
//! `subjects/` and `subjectgroups/`, a bearer-token check, and injected faults (429 with
//! `Retry-After`, 500, slow pages). Its data is synthetic and computed, never stored: for
//! each day a deterministic number of rows (every seventh month empty: 2016-03, 2016-10, …; one month as heavy as asked,
//! a field that appears partway, subjects that no lookup knows), so that any run can be
//! checked against what the emulator says it holds.
//!
//! ```no_run
//! use snapshot::testing::api_emulator::{ApiEmulator, EmulatorOptions};
//! let api = ApiEmulator::start(EmulatorOptions::default())?;
//! println!("{} holds {} observations", api.base_url(), api.total("observations"));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde_json::{Value, json};

const DAY: i64 = 86_400;

/// What the emulator serves and how it misbehaves.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The token a request must carry (`Authorization: Bearer <token>`).
    pub token: String,
    /// The first day with data.
    pub start: NaiveDate,
    /// The day data ends before.
    pub end: NaiveDate,
    /// Observations per day, on average (events: a tenth).
    pub rows_per_day: u32,
    /// Subjects known to the `subjects/` lookup (rows also name two unknown ones).
    pub subjects: u32,
    /// The largest page served.
    pub max_page: u32,
    /// The day `device_status_properties` appears in observations.
    pub new_field_from: NaiveDate,
    /// A month (year, month) holding this many observations.
    pub heavy_month: Option<(i32, u32, u64)>,
    /// Every n-th request is answered 429 (0: never).
    pub every_429: u32,
    /// The `Retry-After` of those answers, in seconds.
    pub retry_after: u32,
    /// Every n-th request is answered 500 (0: never).
    pub every_500: u32,
    /// Every n-th request waits `slow` first (0: never).
    pub slow_every: u32,
    /// How long a slow request waits.
    pub slow: Duration,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        let today = Utc::now().date_naive();
        EmulatorOptions {
            token: "er-test-token".into(),
            start: NaiveDate::from_ymd_opt(2016, 1, 1).expect("date"),
            end: today + Days::new(1),
            rows_per_day: 100,
            subjects: 40,
            max_page: 4000,
            new_field_from: NaiveDate::from_ymd_opt(2020, 7, 1).expect("date"),
            heavy_month: None,
            every_429: 0,
            retry_after: 0,
            every_500: 0,
            slow_every: 0,
            slow: Duration::from_millis(200),
        }
    }
}

/// Counters the tests read.
#[derive(Debug, Default)]
struct State {
    requests: AtomicU64,
    served_rows: AtomicU64,
    first_pages: Mutex<HashMap<String, u64>>,
    every_429: AtomicU32,
    every_500: AtomicU32,
    refuse_all: AtomicBool,
}

/// A running emulator; stopped when dropped.
pub struct ApiEmulator {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
    state: Arc<State>,
    data: Arc<Data>,
    base: String,
}

impl std::fmt::Debug for ApiEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiEmulator")
            .field("base", &self.base)
            .finish()
    }
}

impl ApiEmulator {
    /// Starts the emulator on a free loopback port, with four worker threads.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(options: EmulatorOptions) -> io::Result<ApiEmulator> {
        // Without TCP_NODELAY (accepted sockets inherit it from the listener on Linux), the
        // server's small writes wait for the client's delayed acknowledgement: ~40 ms a page.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
        let server =
            Arc::new(tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?);
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("no port"))?;
        let base = format!("http://127.0.0.1:{port}/api/v1.0/");
        let state = Arc::new(State::default());
        state.every_429.store(options.every_429, Ordering::Relaxed);
        state.every_500.store(options.every_500, Ordering::Relaxed);
        let data = Arc::new(Data { options });
        let mut threads = Vec::new();
        for _ in 0..4 {
            let (server, state, data, base) =
                (server.clone(), state.clone(), data.clone(), base.clone());
            threads.push(std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    serve(req, &state, &data, &base);
                }
            }));
        }
        Ok(ApiEmulator {
            server,
            threads,
            state,
            data,
            base,
        })
    }

    /// The base URL (`http://127.0.0.1:PORT/api/v1.0/`).
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// The options it runs with.
    pub fn options(&self) -> &EmulatorOptions {
        &self.data.options
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Rows served so far (all pages).
    pub fn served_rows(&self) -> u64 {
        self.state.served_rows.load(Ordering::Relaxed)
    }

    /// How many times each first page was asked for, by `resource since` (a chunk's first
    /// request): a chunk fetched twice shows 2.
    pub fn first_pages(&self) -> HashMap<String, u64> {
        self.state
            .first_pages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Changes the injected faults: every n-th request answered 429 or 500 (0: never).
    pub fn set_faults(&self, every_429: u32, every_500: u32) {
        self.state.every_429.store(every_429, Ordering::Relaxed);
        self.state.every_500.store(every_500, Ordering::Relaxed);
    }

    /// Makes every request fail with 503 (`true`) or serves again (`false`).
    pub fn refuse_all(&self, refuse: bool) {
        self.state.refuse_all.store(refuse, Ordering::Relaxed);
    }

    /// The rows of `resource` (`observations`, `events`) in `[from, to)`.
    pub fn expected(&self, resource: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
        let kind = Kind::of(resource).expect("observations or events");
        self.data
            .days(kind, from, to)
            .iter()
            .map(|d| d.2 - d.1)
            .sum()
    }

    /// Every row of `resource` the emulator holds.
    pub fn total(&self, resource: &str) -> u64 {
        let o = &self.data.options;
        self.expected(resource, midnight(o.start), midnight(o.end))
    }

    /// The `[database.options]` of the `api` engine for this emulator: observations and
    /// events by month from the first day of data, subjects and their groups joined.
    pub fn engine_options(&self, token_env: &str) -> Value {
        let paging = json!({"results": "data.results", "next": "data.next", "size": 1000});
        json!({
            "token_env": token_env,
            "start": self.data.options.start.to_string(),
            "end": self.data.options.end.to_string(),
            "min_delay_ms": 0,
            "backoff_ms": 20,
            "resources": [
                {"name": "observations", "path": "observations/", "time_field": "recorded_at",
                 "paging": paging},
                {"name": "events", "path": "activity/events/", "time_field": "time",
                 "paging": paging},
            ],
            "lookups": [
                {"name": "subjects", "path": "subjects/", "join": "subject_id",
                 "prefix": "subject_", "fields": ["name", "subject_subtype", "group_id"],
                 "paging": paging},
                {"name": "subjectgroups", "path": "subjectgroups/", "join": "subject_group_id",
                 "prefix": "group_", "fields": ["name"], "paging": paging},
            ],
        })
    }
}

impl Drop for ApiEmulator {
    fn drop(&mut self) {
        for _ in 0..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// A small deterministic hash.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Observations,
    Events,
}

impl Kind {
    fn of(resource: &str) -> Option<Kind> {
        match resource {
            "observations" => Some(Kind::Observations),
            "events" => Some(Kind::Events),
            _ => None,
        }
    }
}

struct Data {
    options: EmulatorOptions,
}

impl Data {
    /// Rows of `kind` on the day `d`.
    fn count(&self, kind: Kind, d: NaiveDate) -> u64 {
        let o = &self.options;
        if d < o.start || d >= o.end {
            return 0;
        }
        let month = d.year() as u64 * 12 + u64::from(d.month());
        if let Some((y, m, n)) = o.heavy_month
            && (d.year(), d.month()) == (y, m)
        {
            let days = u64::from(days_in_month(d));
            let day = u64::from(d.day()) - 1;
            return n / days + u64::from(day < n % days);
        }
        if month % 7 == 3 {
            return 0;
        }
        let day = (d - o.start).num_days() as u64;
        let per = u64::from(o.rows_per_day);
        match kind {
            Kind::Observations => per / 2 + mix(day) % (per + 1),
            Kind::Events => mix(day ^ 0x5555) % (per / 5 + 1),
        }
    }

    /// The days of `[from, to)` with rows: (day, first row, end row) of each.
    fn days(
        &self,
        kind: Kind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(NaiveDate, u64, u64)> {
        let mut out = Vec::new();
        let mut d = from.date_naive().max(self.options.start);
        while midnight(d) < to && d < self.options.end {
            let c = self.count(kind, d);
            if c > 0 {
                let (mut lo, mut hi) = (0, c);
                let day0 = midnight(d).timestamp();
                let at = |i: u64| day0 + (i as i64 * DAY) / c as i64;
                while lo < hi && at(lo) < from.timestamp() {
                    lo += 1;
                }
                while hi > lo && at(hi - 1) >= to.timestamp() {
                    hi -= 1;
                }
                if hi > lo {
                    out.push((d, lo, hi));
                }
            }
            d = d + Days::new(1);
        }
        out
    }

    /// Row `i` of the day `d`.
    fn row(&self, kind: Kind, d: NaiveDate, i: u64) -> Value {
        let o = &self.options;
        let c = self.count(kind, d);
        let t = midnight(d).timestamp() + (i as i64 * DAY) / c as i64;
        let when = DateTime::from_timestamp(t, 0).expect("time").to_rfc3339();
        let day = (d - o.start).num_days() as u64;
        let h = mix(day << 24 ^ i);
        let subject = h % (u64::from(o.subjects) + 2);
        match kind {
            Kind::Observations => {
                let mut row = json!({
                    "id": format!("obs-{day:05}-{i:06}"),
                    "recorded_at": when,
                    "subject_id": format!("subj-{subject:03}"),
                    "source": format!("src-{subject:03}"),
                    "location": {"latitude": -1.0 - (h % 1000) as f64 / 1000.0,
                                 "longitude": 36.0 + (h % 777) as f64 / 1000.0},
                    "exclusion_flags": h % 3,
                    "observation_details": {"speed": (h % 90) as f64 / 10.0, "battery": h % 101},
                });
                if d >= o.new_field_from {
                    row["device_status_properties"] = json!([{"label": "voltage", "units": "V", "value": (h % 50) as f64 / 10.0}]);
                }
                row
            }
            Kind::Events => json!({
                "id": format!("evt-{day:05}-{i:06}"),
                "time": when,
                "serial_number": day * 1000 + i,
                "event_type": (["wildlife_sighting_rep", "carcass_rep", "fence_rep"][(h % 3) as usize]),
                "priority": ([0, 100, 200][(h % 3) as usize]),
                "subject_id": if h.is_multiple_of(4) { Value::Null } else { json!(format!("subj-{subject:03}")) },
                "event_details": {"note": format!("report \"{i}\", day {day}\nsecond line")},
                "related_subjects": [{"id": format!("subj-{subject:03}")}],
            }),
        }
    }

    fn subjects(&self) -> Vec<Value> {
        (0..u64::from(self.options.subjects))
            .map(|k| {
                json!({
                    "id": format!("subj-{k:03}"),
                    "name": format!("Animal {k}"),
                    "subject_type": "wildlife",
                    "subject_subtype": (["elephant", "lion", "rhino"][(k % 3) as usize]),
                    "group_id": format!("grp-{}", k % 5),
                    "additional": {"sex": if k % 2 == 0 { "female" } else { "male" }},
                })
            })
            .collect()
    }

    fn groups(&self) -> Vec<Value> {
        (0..5)
            .map(|g| json!({"id": format!("grp-{g}"), "name": format!("Herd {g}")}))
            .collect()
    }
}

fn days_in_month(d: NaiveDate) -> u32 {
    let first = d.with_day(1).expect("day 1");
    let next = first + chrono::Months::new(1);
    (next - first).num_days() as u32
}

/// The decoded query of a URL.
fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(req: tiny_http::Request, status: u16, body: &Value, headers: &[(&str, String)]) {
    let mut resp = tiny_http::Response::from_string(body.to_string()).with_status_code(status);
    resp.add_header(
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header"),
    );
    for (k, v) in headers {
        resp.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("header"));
    }
    let _ = req.respond(resp);
}

fn serve(req: tiny_http::Request, state: &State, data: &Data, base: &str) {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let o = &data.options;
    if o.slow_every > 0 && n.is_multiple_of(u64::from(o.slow_every)) {
        std::thread::sleep(o.slow);
    }
    let authorized = req.headers().iter().any(|h| {
        h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {}", o.token)
    });
    if !authorized {
        let body = json!({"detail": "Authentication credentials were not provided."});
        return respond(req, 401, &body, &[]);
    }
    if state.refuse_all.load(Ordering::Relaxed) {
        return respond(
            req,
            503,
            &json!({"detail": "maintenance"}),
            &[("Retry-After", "0".into())],
        );
    }
    let e429 = state.every_429.load(Ordering::Relaxed);
    if e429 > 0 && n.is_multiple_of(u64::from(e429)) {
        let body = json!({"detail": "Request was throttled."});
        return respond(
            req,
            429,
            &body,
            &[("Retry-After", o.retry_after.to_string())],
        );
    }
    let e500 = state.every_500.load(Ordering::Relaxed);
    if e500 > 0 && n.is_multiple_of(u64::from(e500)) {
        return respond(req, 500, &json!({"detail": "server error"}), &[]);
    }
    let url = req.url().to_string();
    let path = url.split('?').next().unwrap_or("");
    let q = query(&url);
    let page: u64 = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size: u64 = q
        .get("page_size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100)
        .clamp(1, u64::from(o.max_page));
    let resource = path
        .trim_start_matches("/api/v1.0/")
        .trim_end_matches('/')
        .trim_start_matches("activity/");
    let link = |total: u64, extra: &[(&str, &str)]| -> Value {
        if page * size >= total {
            return Value::Null;
        }
        let mut s = format!(
            "{base}{}?page={}&page_size={size}",
            path.trim_start_matches("/api/v1.0/"),
            page + 1
        );
        for (k, v) in extra {
            s.push_str(&format!("&{k}={v}"));
        }
        Value::String(s)
    };
    let page_of = |rows: Vec<Value>, total: u64, next: Value| {
        json!({"data": {"count": total, "next": next, "previous": Value::Null, "results": rows},
               "status": {"code": 200, "message": "OK"}})
    };
    let body = match resource {
        "subjects" | "subjectgroups" => {
            let all = if resource == "subjects" {
                data.subjects()
            } else {
                data.groups()
            };
            let total = all.len() as u64;
            let rows: Vec<Value> = all
                .into_iter()
                .skip(((page - 1) * size) as usize)
                .take(size as usize)
                .collect();
            page_of(rows, total, link(total, &[]))
        }
        "observations" | "events" => {
            let kind = Kind::of(resource).expect("kind");
            let parse = |k: &str| {
                q.get(k)
                    .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                    .map(|t| t.with_timezone(&Utc))
            };
            let (Some(since), Some(until)) = (parse("since"), parse("until")) else {
                return respond(
                    req,
                    400,
                    &json!({"detail": "since and until are required"}),
                    &[],
                );
            };
            if page == 1
                && let Ok(mut m) = state.first_pages.lock()
            {
                *m.entry(format!("{resource} {}", q["since"])).or_default() += 1;
            }
            let days = data.days(kind, since, until);
            let total: u64 = days.iter().map(|d| d.2 - d.1).sum();
            let mut skip = (page - 1) * size;
            let mut rows = Vec::new();
            for (d, lo, hi) in days {
                let n = hi - lo;
                if skip >= n {
                    skip -= n;
                    continue;
                }
                for i in lo + skip..hi {
                    if rows.len() as u64 >= size {
                        break;
                    }
                    rows.push(data.row(kind, d, i));
                }
                skip = 0;
                if rows.len() as u64 >= size {
                    break;
                }
            }
            state
                .served_rows
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            let (s, u) = (q["since"].clone(), q["until"].clone());
            page_of(rows, total, link(total, &[("since", &s), ("until", &u)]))
        }
        _ => return respond(req, 404, &json!({"detail": "Not found."}), &[]),
    };
    respond(req, 200, &body, &[]);
}
