//! Retention planning: which snapshots to keep, which to prune, and why.
//!
//! A [`RetentionPolicy`] is a set of keep rules in the manner of `restic forget` (and
//! rustic_core's `KeepOptions`): keep the last *n* snapshots, every snapshot taken within a
//! period, and the newest snapshot of each of the last *n* hours, days, ISO weeks, months and
//! years. A snapshot is kept when any rule keeps it (the rules are a union).
//!
//! The safety snapshots taken before restores ([`SnapshotRecord::is_safety`]) are counted apart:
//! they never take a place in the rules above (restores never push the user's history out), and
//! are kept by their own rules — every one younger than the safety grace period, and the
//! newest [`keep_safety`](RetentionPolicy::keep_safety) of them (3 by default) whatever their age.
//!
//! On top of the rules, guards keep a snapshot whatever the rules and the size cap say:
//!
//! * a **pinned** snapshot ([`SnapshotRecord::pinned`]),
//! * the **newest** snapshot (every record of the catalog passed its checksum when written, so
//!   the newest one is always a verified restore point),
//! * a **safety** snapshot younger than the policy's safety grace period, so a restore can be
//!   undone for a while,
//! * a snapshot **restored** from within the safety grace period (the `restore_of` of such a
//!   safety snapshot): a restore never costs the snapshot it used.
//!
//! An optional size cap ([`RetentionPolicy::max_total_bytes`]) then drops kept, unguarded
//! snapshots oldest first until the kept total fits.
//!
//! [`RetentionPolicy::apply`] is pure: it reads the records and a clock value and returns a
//! [`RetentionPlan`] with one [`Decision`] per record, each with the [`Reason`]s behind it. It
//! deletes nothing; the caller prunes the dropped snapshots (and can print the plan first for a
//! dry run).
//!
//! The simpler alternative is a plain count: [`RetentionPolicy::default()`] keeps the last 10
//! snapshots (plus the guards), which is what most applications need.
//!
//! ```
//! use chrono::Duration;
//! use snapshot::retention::RetentionPolicy;
//!
//! let policy = RetentionPolicy::new()
//!     .keep_last(5)
//!     .keep_daily(7)
//!     .keep_weekly(4)
//!     .max_total_bytes(10 * 1024 * 1024 * 1024)
//!     .safety_grace(Duration::days(3));
//! assert!(policy.validate().is_ok());
//! assert_eq!(policy.to_string(), "last 5, daily 7, weekly 4, size cap 10737418240 bytes, safety grace 3d");
//! ```

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::SnapshotRecord;

/// How many snapshots [`RetentionPolicy::default`] keeps by count.
const DEFAULT_KEEP_LAST: usize = 10;
/// How many safety snapshots are kept past their grace period by default.
const DEFAULT_KEEP_SAFETY: usize = 3;

fn default_keep_safety() -> usize {
    DEFAULT_KEEP_SAFETY
}

fn is_default_keep_safety(n: &usize) -> bool {
    *n == DEFAULT_KEEP_SAFETY
}

/// The default safety grace period, in days.
const DEFAULT_SAFETY_GRACE_DAYS: i64 = 7;

fn default_safety_grace() -> Duration {
    Duration::days(DEFAULT_SAFETY_GRACE_DAYS)
}

/// Which snapshots to keep.
///
/// Built with [`RetentionPolicy::new`] (no rule) or [`RetentionPolicy::default`] (keep the last
/// 10) and the builder methods; read back with the getters ([`last`](Self::last),
/// [`within`](Self::within), …) and [`Display`](fmt::Display). A policy must have at least one
/// keep rule with a positive value, see [`validate`](Self::validate).
///
/// Serialized (e.g. in a configuration file) with durations as whole seconds
/// (`keep_within_secs`, `safety_grace_secs`; sub-second parts are dropped). Missing fields mean
/// "rule not set" (and a 7-day safety grace); unknown fields are rejected so a misspelt rule is
/// not silently ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_last: Option<usize>,
    #[serde(
        default,
        rename = "keep_within_secs",
        with = "opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    keep_within: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_hourly: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_daily: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_weekly: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_monthly: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_yearly: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_total_bytes: Option<u64>,
    #[serde(
        default = "default_safety_grace",
        rename = "safety_grace_secs",
        with = "secs"
    )]
    safety_grace: Duration,
    #[serde(
        default = "default_keep_safety",
        skip_serializing_if = "is_default_keep_safety"
    )]
    keep_safety: usize,
}

impl Default for RetentionPolicy {
    /// Keeps the last 10 snapshots, with a 7-day safety grace and no size cap.
    fn default() -> Self {
        Self::new().keep_last(DEFAULT_KEEP_LAST)
    }
}

impl RetentionPolicy {
    /// A policy with no keep rule and no size cap, and the default 7-day safety grace.
    ///
    /// It is invalid until a keep rule is set: [`apply`](Self::apply) refuses a policy that
    /// would keep nothing.
    pub fn new() -> Self {
        Self {
            keep_last: None,
            keep_within: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            max_total_bytes: None,
            safety_grace: default_safety_grace(),
            keep_safety: DEFAULT_KEEP_SAFETY,
        }
    }

    /// Keeps the `n` newest safety snapshots (taken before restores) past their grace period
    /// (default 3; 0: only the grace period keeps them). They never count toward the other
    /// rules.
    pub fn keep_safety(mut self, n: usize) -> Self {
        self.keep_safety = n;
        self
    }

    /// How many safety snapshots are kept past their grace period.
    pub fn safety_kept(&self) -> usize {
        self.keep_safety
    }

    /// Keeps the `n` newest snapshots.
    pub fn keep_last(mut self, n: usize) -> Self {
        self.keep_last = Some(n);
        self
    }

    /// Keeps every snapshot taken less than `d` before `now` (and any dated after `now`).
    ///
    /// A negative duration makes the policy invalid; zero disables the rule.
    pub fn keep_within(mut self, d: Duration) -> Self {
        self.keep_within = Some(d);
        self
    }

    /// Keeps the newest snapshot of each of the last `n` hours that have snapshots (UTC).
    pub fn keep_hourly(mut self, n: usize) -> Self {
        self.keep_hourly = Some(n);
        self
    }

    /// Keeps the newest snapshot of each of the last `n` days that have snapshots (UTC).
    pub fn keep_daily(mut self, n: usize) -> Self {
        self.keep_daily = Some(n);
        self
    }

    /// Keeps the newest snapshot of each of the last `n` ISO weeks that have snapshots (UTC).
    pub fn keep_weekly(mut self, n: usize) -> Self {
        self.keep_weekly = Some(n);
        self
    }

    /// Keeps the newest snapshot of each of the last `n` months that have snapshots (UTC).
    pub fn keep_monthly(mut self, n: usize) -> Self {
        self.keep_monthly = Some(n);
        self
    }

    /// Keeps the newest snapshot of each of the last `n` years that have snapshots (UTC).
    pub fn keep_yearly(mut self, n: usize) -> Self {
        self.keep_yearly = Some(n);
        self
    }

    /// Caps the total size of the kept snapshots at `bytes`: kept snapshots that no guard
    /// protects are dropped oldest first until the total fits.
    pub fn max_total_bytes(mut self, bytes: u64) -> Self {
        self.max_total_bytes = Some(bytes);
        self
    }

    /// Keeps a pre-restore safety snapshot for `d` after it was taken, whatever the rules and the
    /// size cap say. A negative duration makes the policy invalid; zero disables the guard.
    pub fn safety_grace(mut self, d: Duration) -> Self {
        self.safety_grace = d;
        self
    }

    /// The `keep_last` count, if set.
    pub fn last(&self) -> Option<usize> {
        self.keep_last
    }

    /// The `keep_within` period, if set.
    pub fn within(&self) -> Option<Duration> {
        self.keep_within
    }

    /// The `keep_hourly` count, if set.
    pub fn hourly(&self) -> Option<usize> {
        self.keep_hourly
    }

    /// The `keep_daily` count, if set.
    pub fn daily(&self) -> Option<usize> {
        self.keep_daily
    }

    /// The `keep_weekly` count, if set.
    pub fn weekly(&self) -> Option<usize> {
        self.keep_weekly
    }

    /// The `keep_monthly` count, if set.
    pub fn monthly(&self) -> Option<usize> {
        self.keep_monthly
    }

    /// The `keep_yearly` count, if set.
    pub fn yearly(&self) -> Option<usize> {
        self.keep_yearly
    }

    /// The size cap in bytes ([`max_total_bytes`](Self::max_total_bytes)), if set.
    pub fn size_cap(&self) -> Option<u64> {
        self.max_total_bytes
    }

    /// The safety grace period of pre-restore snapshots.
    pub fn grace(&self) -> Duration {
        self.safety_grace
    }

    /// Checks that the policy is usable.
    ///
    /// # Errors
    ///
    /// * [`Error::InvalidInput`] if `keep_within` or `safety_grace` is negative.
    /// * [`Error::RetentionKeepsNothing`] if no keep rule has a positive value (`keep_last` and
    ///   every calendar count unset or 0, `keep_within` unset or 0). A size cap alone is not a
    ///   keep rule.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.keep_within
            && d < Duration::zero()
        {
            return Err(Error::InvalidInput {
                field: "keep_within",
                reason: format!("must not be negative, got {}", fmt_duration(d)),
            });
        }
        if self.safety_grace < Duration::zero() {
            return Err(Error::InvalidInput {
                field: "safety_grace",
                reason: format!(
                    "must not be negative, got {}",
                    fmt_duration(self.safety_grace)
                ),
            });
        }
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        let any_count = counts.iter().any(|n| n.is_some_and(|n| n > 0));
        let any_within = self.keep_within.is_some_and(|d| d > Duration::zero());
        if !any_count && !any_within {
            return Err(Error::RetentionKeepsNothing {
                reason: "no keep rule is set to a positive value (keep_last, keep_within, \
                         keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly); \
                         set at least one"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Decides, for each record, whether to keep it and why.
    ///
    /// Pure: nothing is read but the arguments and nothing is deleted. The plan has exactly one
    /// decision per record, newest first by (`datetime`, `snapshot_id`), so the result does not
    /// depend on the order of `records`. Calendar buckets are computed in UTC; records dated after
    /// `now` are treated like any other (`keep_within` keeps them).
    ///
    /// # Errors
    ///
    /// * Whatever [`validate`](Self::validate) returns for an unusable policy (even when
    ///   `records` is empty).
    /// * [`Error::InvalidInput`] (field `records`) if two records share a `snapshot_id`: a
    ///   plan for them could not be carried out by id.
    pub fn apply(&self, records: &[SnapshotRecord], now: DateTime<Utc>) -> Result<RetentionPlan> {
        self.validate()?;

        let mut sorted: Vec<&SnapshotRecord> = records.iter().collect();
        sorted.sort_by(|a, b| {
            b.datetime
                .cmp(&a.datetime)
                .then_with(|| b.snapshot_id.cmp(&a.snapshot_id))
        });
        let mut seen = HashSet::with_capacity(sorted.len());
        for r in &sorted {
            if !seen.insert(r.snapshot_id.as_str()) {
                return Err(Error::InvalidInput {
                    field: "records",
                    reason: format!("snapshot id {:?} appears more than once", r.snapshot_id),
                });
            }
        }

        // Outer `None`: rule off. Inner `None`: the period reaches before the earliest
        // representable time, so every record is within it.
        let within_cutoff = self
            .keep_within
            .filter(|d| *d > Duration::zero())
            .map(|d| now.checked_sub_signed(d));
        let grace_cutoff = now.checked_sub_signed(self.safety_grace);

        let mut buckets: Vec<Bucket> = Period::ALL
            .iter()
            .filter_map(|&period| {
                period.limit(self).filter(|&n| n > 0).map(|left| Bucket {
                    period,
                    left,
                    last: None,
                })
            })
            .collect();

        let in_grace = |r: &SnapshotRecord| {
            r.is_safety()
                && self.safety_grace > Duration::zero()
                && grace_cutoff.is_none_or(|c| r.datetime > c)
        };
        // What restores within the grace period used: kept with their safety snapshots.
        let restored: HashSet<&str> = sorted
            .iter()
            .filter(|r| in_grace(r))
            .filter_map(|r| r.restore_of.as_deref())
            .collect();

        let mut decisions = Vec::with_capacity(sorted.len());
        let mut guarded = Vec::with_capacity(sorted.len());
        // Ranks among the user's snapshots and among the safety snapshots, apart.
        let (mut regular, mut safety) = (0usize, 0usize);
        for (index, r) in sorted.iter().enumerate() {
            let mut reasons = Vec::new();
            if r.is_safety() {
                safety += 1;
                if safety <= self.keep_safety {
                    reasons.push(Reason::SafetyLast { rank: safety });
                }
            } else {
                regular += 1;
                self.rules(r, regular, within_cutoff, &mut buckets, &mut reasons);
            }

            let mut guard = false;
            if r.pinned {
                reasons.push(Reason::Pinned);
                guard = true;
            }
            if index == 0 {
                reasons.push(Reason::NewestVerified);
                guard = true;
            }
            if in_grace(r) {
                reasons.push(Reason::SafetyGrace);
                guard = true;
            }
            if restored.contains(r.snapshot_id.as_str()) {
                reasons.push(Reason::RestoredFrom);
                guard = true;
            }

            let keep = !reasons.is_empty();
            if !keep {
                reasons.push(Reason::NoRuleMatched);
            }
            decisions.push(Decision {
                snapshot_id: r.snapshot_id.clone(),
                keep,
                reasons,
            });
            guarded.push(guard);
        }

        let mut over_cap = false;
        if let Some(cap) = self.max_total_bytes {
            let cap = u128::from(cap);
            let mut total: u128 = sorted
                .iter()
                .zip(&decisions)
                .filter(|(_, d)| d.keep)
                .map(|(r, _)| u128::from(r.size_bytes))
                .sum();
            // Oldest first.
            for ((r, d), &guard) in sorted.iter().zip(&mut decisions).zip(&guarded).rev() {
                if total <= cap {
                    break;
                }
                if d.keep && !guard {
                    total -= u128::from(r.size_bytes);
                    d.keep = false;
                    d.reasons = vec![Reason::SizeCap];
                }
            }
            over_cap = total > cap;
            if over_cap {
                tracing::warn!(
                    kept_bytes = %total,
                    cap_bytes = %cap,
                    "guarded snapshots alone exceed the retention size cap"
                );
            }
        }

        let plan = RetentionPlan {
            decisions,
            over_cap,
        };
        tracing::debug!(
            kept = plan.kept().count(),
            dropped = plan.dropped().count(),
            over_cap,
            "retention plan"
        );
        Ok(plan)
    }
}

impl RetentionPolicy {
    /// The keep rules' reasons for the user's snapshot `r` of rank `rank` (1: the newest).
    fn rules(
        &self,
        r: &SnapshotRecord,
        rank: usize,
        within_cutoff: Option<Option<DateTime<Utc>>>,
        buckets: &mut [Bucket],
        reasons: &mut Vec<Reason>,
    ) {
        if let Some(n) = self.keep_last
            && rank <= n
        {
            reasons.push(Reason::Last { rank });
        }
        if let Some(cutoff) = within_cutoff
            && cutoff.is_none_or(|c| r.datetime > c)
        {
            reasons.push(Reason::Within);
        }
        for bucket in buckets.iter_mut() {
            if bucket.left == 0 {
                continue;
            }
            let label = bucket.period.label(r.datetime);
            if bucket.last.as_deref() != Some(label.as_str()) {
                bucket.left -= 1;
                reasons.push(bucket.period.reason(label.clone()));
                bucket.last = Some(label);
            }
        }
    }
}

impl fmt::Display for RetentionPolicy {
    /// A one-line summary, e.g. `last 5, daily 7, size cap 1000 bytes, safety grace 7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last {
            parts.push(format!("last {n}"));
        }
        if let Some(d) = self.keep_within {
            parts.push(format!("within {}", fmt_duration(d)));
        }
        for period in Period::ALL {
            if let Some(n) = period.limit(self) {
                parts.push(format!("{} {n}", period.name()));
            }
        }
        if parts.is_empty() {
            parts.push("no keep rule".to_owned());
        }
        if let Some(cap) = self.max_total_bytes {
            parts.push(format!("size cap {cap} bytes"));
        }
        parts.push(format!("safety grace {}", fmt_duration(self.safety_grace)));
        if self.keep_safety != DEFAULT_KEEP_SAFETY {
            parts.push(format!("safety last {}", self.keep_safety));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The outcome of [`RetentionPolicy::apply`]: one decision per record, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPlan {
    /// One decision per record, newest first by (`datetime`, `snapshot_id`).
    pub decisions: Vec<Decision>,
    /// The guarded snapshots alone (pinned, newest, safety within grace) exceed the size cap, so
    /// the kept total is over the cap although every unguarded snapshot was dropped.
    pub over_cap: bool,
}

impl RetentionPlan {
    /// The decisions to keep, newest first.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The decisions to drop (prune), newest first.
    pub fn dropped(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// What to do with one snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The snapshot concerned.
    pub snapshot_id: String,
    /// Whether the snapshot is kept (`false`: prune it).
    pub keep: bool,
    /// Why: every rule and guard that keeps it (rules first, then guards), or the single
    /// [`Reason::SizeCap`] or [`Reason::NoRuleMatched`] for a dropped snapshot.
    pub reasons: Vec<Reason>,
}

/// Why a snapshot is kept or dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// Among the `keep_last` newest; `rank` 1 is the newest.
    Last {
        /// 1-based position from the newest.
        rank: usize,
    },
    /// Taken within the `keep_within` period (or after `now`).
    Within,
    /// Newest of its hour, label `%Y-%m-%d %Hh` (UTC), e.g. `2026-11-23 10h`.
    Hourly(String),
    /// Newest of its day, label `%Y-%m-%d` (UTC), e.g. `2026-11-23`.
    Daily(String),
    /// Newest of its ISO week, label `%G-W%V` (UTC), e.g. `2026-W47`.
    Weekly(String),
    /// Newest of its month, label `%Y-%m` (UTC), e.g. `2026-11`.
    Monthly(String),
    /// Newest of its year, label `%Y` (UTC), e.g. `2026`.
    Yearly(String),
    /// Guard: the snapshot is pinned.
    Pinned,
    /// Guard: the newest snapshot (its checksum was verified when it was written).
    NewestVerified,
    /// Guard: a pre-restore safety snapshot younger than the safety grace period.
    SafetyGrace,
    /// One of the newest safety snapshots ([`RetentionPolicy::keep_safety`]), past its grace.
    SafetyLast {
        /// 1 for the newest safety snapshot.
        rank: usize,
    },
    /// Guard: the snapshot a restore within the safety grace period used.
    RestoredFrom,
    /// Dropped: kept by a rule but removed to fit the size cap.
    SizeCap,
    /// Dropped: no rule or guard keeps it.
    NoRuleMatched,
}

impl fmt::Display for Reason {
    /// Short human text: `last #3`, `daily 2026-11-23`, `pinned`, …
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last { rank } => write!(f, "last #{rank}"),
            Reason::Within => f.write_str("within period"),
            Reason::Hourly(label) => write!(f, "hourly {label}"),
            Reason::Daily(label) => write!(f, "daily {label}"),
            Reason::Weekly(label) => write!(f, "weekly {label}"),
            Reason::Monthly(label) => write!(f, "monthly {label}"),
            Reason::Yearly(label) => write!(f, "yearly {label}"),
            Reason::Pinned => f.write_str("pinned"),
            Reason::NewestVerified => f.write_str("newest (verified)"),
            Reason::SafetyGrace => f.write_str("safety grace"),
            Reason::SafetyLast { rank } => write!(f, "safety #{rank}"),
            Reason::RestoredFrom => f.write_str("restored from"),
            Reason::SizeCap => f.write_str("size cap"),
            Reason::NoRuleMatched => f.write_str("no rule matched"),
        }
    }
}

/// A calendar period of a bucket rule.
#[derive(Clone, Copy, Debug)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The full bucket key (never a part of it: the hour goes with its day, the ISO week with
    /// its ISO year).
    fn label(self, t: DateTime<Utc>) -> String {
        let pattern = match self {
            Period::Hourly => "%Y-%m-%d %Hh",
            Period::Daily => "%Y-%m-%d",
            Period::Weekly => "%G-W%V",
            Period::Monthly => "%Y-%m",
            Period::Yearly => "%Y",
        };
        t.format(pattern).to_string()
    }

    fn reason(self, label: String) -> Reason {
        match self {
            Period::Hourly => Reason::Hourly(label),
            Period::Daily => Reason::Daily(label),
            Period::Weekly => Reason::Weekly(label),
            Period::Monthly => Reason::Monthly(label),
            Period::Yearly => Reason::Yearly(label),
        }
    }

    fn limit(self, policy: &RetentionPolicy) -> Option<usize> {
        match self {
            Period::Hourly => policy.keep_hourly,
            Period::Daily => policy.keep_daily,
            Period::Weekly => policy.keep_weekly,
            Period::Monthly => policy.keep_monthly,
            Period::Yearly => policy.keep_yearly,
        }
    }
}

/// The state of one bucket rule while walking the records newest to oldest.
struct Bucket {
    period: Period,
    /// How many more buckets the rule may use.
    left: usize,
    /// The bucket of the last record this rule kept.
    last: Option<String>,
}

/// `7d`, `36h`, `90m`, `45s`, `1500ms`: the largest unit that divides the duration exactly.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.num_milliseconds());
    }
    let s = d.num_seconds();
    if s == 0 {
        "0s".to_owned()
    } else if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3_600 == 0 {
        format!("{}h", s / 3_600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Serde for a [`Duration`] as whole seconds.
mod secs {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.num_seconds())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let n = i64::deserialize(d)?;
        Duration::try_seconds(n).ok_or_else(|| D::Error::custom(format!("{n} s is out of range")))
    }
}

/// Serde for an optional [`Duration`] as whole seconds.
mod opt_secs {
    use chrono::Duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.num_seconds()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<i64>::deserialize(d)? {
            None => Ok(None),
            Some(n) => Duration::try_seconds(n)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{n} s is out of range"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, PRE_RESTORE};
    use proptest::prelude::*;

    /// The fixed clock of the table-driven cases.
    fn now() -> DateTime<Utc> {
        at("2026-11-23T12:00:00Z")
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid RFC 3339 test time")
    }

    /// A plain record of 100 bytes taken at `datetime`.
    fn rec_at(id: &str, datetime: DateTime<Utc>) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: id.to_owned(),
            timestamp: datetime.format("%Y%m%d_%H%M%S").to_string(),
            datetime,
            description: format!("test snapshot {id}"),
            operation_type: "manual".to_owned(),
            entity_type: None,
            entity_id: None,
            file_path: format!("/backups/{id}.db"),
            size_mb: 0.0,
            blob_key: format!("{id}.db"),
            size_bytes: 100,
            checksum: "blake3:00".to_owned(),
            source_kind: "sqlite".to_owned(),
            source_path: "/data/app.db".to_owned(),
            outcome: Outcome::Standalone,
            pinned: false,
            verified_at: None,
            restore_of: None,
            format_version: 1,
            library_version: "0.1.0".to_owned(),
            host: "test".to_owned(),
            extra: Default::default(),
        }
    }

    fn rec(id: &str, datetime: &str) -> SnapshotRecord {
        rec_at(id, at(datetime))
    }

    fn pinned(mut r: SnapshotRecord) -> SnapshotRecord {
        r.pinned = true;
        r
    }

    fn safety(mut r: SnapshotRecord) -> SnapshotRecord {
        r.operation_type = PRE_RESTORE.to_owned();
        r
    }

    fn restore_of(mut r: SnapshotRecord, id: &str) -> SnapshotRecord {
        r.restore_of = Some(id.to_owned());
        r
    }

    fn sized(mut r: SnapshotRecord, bytes: u64) -> SnapshotRecord {
        r.size_bytes = bytes;
        r
    }

    /// One line per decision: `+ id: reason, reason` (kept) or `- id: reason` (dropped).
    fn render(plan: &RetentionPlan) -> Vec<String> {
        plan.decisions
            .iter()
            .map(|d| {
                let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
                let sign = if d.keep { '+' } else { '-' };
                format!("{sign} {}: {}", d.snapshot_id, reasons.join(", "))
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        policy: RetentionPolicy,
        records: Vec<SnapshotRecord>,
        /// The rendered plan, newest first.
        expect: &'static [&'static str],
        over_cap: bool,
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "keep_last keeps the n newest, whatever the input order",
                policy: RetentionPolicy::new().keep_last(2),
                records: vec![
                    rec("c", "2026-11-21T10:00:00Z"),
                    rec("a", "2026-11-23T10:00:00Z"),
                    rec("d", "2026-11-20T10:00:00Z"),
                    rec("b", "2026-11-22T10:00:00Z"),
                ],
                expect: &[
                    "+ a: last #1, newest (verified)",
                    "+ b: last #2",
                    "- c: no rule matched",
                    "- d: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "equal datetimes are ordered by id, descending",
                policy: RetentionPolicy::new().keep_last(1),
                records: vec![
                    rec("x1", "2026-11-23T10:00:00Z"),
                    rec("x2", "2026-11-23T10:00:00Z"),
                ],
                expect: &["+ x2: last #1, newest (verified)", "- x1: no rule matched"],
                over_cap: false,
            },
            Case {
                name: "keep_within keeps records strictly after now - d, and future ones",
                policy: RetentionPolicy::new().keep_within(Duration::days(2)),
                records: vec![
                    rec("future", "2026-11-23T13:00:00Z"),
                    rec("1d", "2026-11-22T12:00:00Z"),
                    rec("47h", "2026-11-21T13:00:00Z"),
                    rec("exactly2d", "2026-11-21T12:00:00Z"),
                    rec("3d", "2026-11-20T12:00:00Z"),
                ],
                expect: &[
                    "+ future: within period, newest (verified)",
                    "+ 1d: within period",
                    "+ 47h: within period",
                    "- exactly2d: no rule matched",
                    "- 3d: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "hourly keeps the newest of each hour, n hours",
                policy: RetentionPolicy::new().keep_hourly(2),
                records: vec![
                    rec("h10b", "2026-11-23T10:59:00Z"),
                    rec("h10a", "2026-11-23T10:01:00Z"),
                    rec("h09", "2026-11-23T09:30:00Z"),
                    rec("h08", "2026-11-23T08:00:00Z"),
                ],
                expect: &[
                    "+ h10b: hourly 2026-11-23 10h, newest (verified)",
                    "- h10a: no rule matched",
                    "+ h09: hourly 2026-11-23 09h",
                    "- h08: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "hourly compares the full key: same hour on different days are two buckets",
                policy: RetentionPolicy::new().keep_hourly(3),
                records: vec![
                    rec("d23", "2026-11-23T10:00:00Z"),
                    rec("d22", "2026-11-22T10:00:00Z"),
                    rec("d21", "2026-11-21T10:30:00Z"),
                ],
                expect: &[
                    "+ d23: hourly 2026-11-23 10h, newest (verified)",
                    "+ d22: hourly 2026-11-22 10h",
                    "+ d21: hourly 2026-11-21 10h",
                ],
                over_cap: false,
            },
            Case {
                name: "daily: 23:59 and 00:01 of the next day are two days",
                policy: RetentionPolicy::new().keep_daily(2),
                records: vec![
                    rec("23-0800", "2026-11-23T08:00:00Z"),
                    rec("23-0001", "2026-11-23T00:01:00Z"),
                    rec("22-2359", "2026-11-22T23:59:00Z"),
                    rec("21-1200", "2026-11-21T12:00:00Z"),
                ],
                expect: &[
                    "+ 23-0800: daily 2026-11-23, newest (verified)",
                    "- 23-0001: no rule matched",
                    "+ 22-2359: daily 2026-11-22",
                    "- 21-1200: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "daily counts days that have snapshots, not calendar days",
                policy: RetentionPolicy::new().keep_daily(2),
                records: vec![
                    rec("nov23", "2026-11-23T08:00:00Z"),
                    rec("nov01", "2026-11-01T08:00:00Z"),
                    rec("oct01", "2026-10-01T08:00:00Z"),
                ],
                expect: &[
                    "+ nov23: daily 2026-11-23, newest (verified)",
                    "+ nov01: daily 2026-11-01",
                    "- oct01: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "weekly: 2026-12-31 and 2027-01-01 are the same ISO week 2026-W53",
                policy: RetentionPolicy::new().keep_weekly(3),
                records: vec![
                    rec("mon-jan04", "2027-01-04T09:00:00Z"),
                    rec("sun-jan03", "2027-01-03T09:00:00Z"),
                    rec("fri-jan01", "2027-01-01T00:01:00Z"),
                    rec("thu-dec31", "2026-12-31T23:59:00Z"),
                    rec("sun-dec27", "2026-12-27T09:00:00Z"),
                    rec("sat-dec26", "2026-12-26T09:00:00Z"),
                ],
                expect: &[
                    "+ mon-jan04: weekly 2027-W01, newest (verified)",
                    "+ sun-jan03: weekly 2026-W53",
                    "- fri-jan01: no rule matched",
                    "- thu-dec31: no rule matched",
                    "+ sun-dec27: weekly 2026-W52",
                    "- sat-dec26: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "weekly uses the ISO year: 2027-01-01 is not in 2027-W01 nor 2027-W53",
                policy: RetentionPolicy::new().keep_weekly(2),
                records: vec![
                    rec("fri-jan01", "2027-01-01T00:01:00Z"),
                    rec("thu-dec31", "2026-12-31T23:59:00Z"),
                    rec("mon-dec28", "2026-12-28T00:00:00Z"),
                    rec("sun-dec27", "2026-12-27T23:59:00Z"),
                ],
                expect: &[
                    "+ fri-jan01: weekly 2026-W53, newest (verified)",
                    "- thu-dec31: no rule matched",
                    "- mon-dec28: no rule matched",
                    "+ sun-dec27: weekly 2026-W52",
                ],
                over_cap: false,
            },
            Case {
                name: "monthly: 10-31 23:59 and 11-01 00:00 are two months",
                policy: RetentionPolicy::new().keep_monthly(2),
                records: vec![
                    rec("nov20", "2026-11-20T10:00:00Z"),
                    rec("nov01", "2026-11-01T00:00:00Z"),
                    rec("oct31", "2026-10-31T23:59:00Z"),
                    rec("oct01", "2026-10-01T10:00:00Z"),
                ],
                expect: &[
                    "+ nov20: monthly 2026-11, newest (verified)",
                    "- nov01: no rule matched",
                    "+ oct31: monthly 2026-10",
                    "- oct01: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "yearly: 12-31 23:59:59 and 01-01 00:00:01 are two years",
                policy: RetentionPolicy::new().keep_yearly(2),
                records: vec![
                    rec("y27b", "2027-01-02T00:00:00Z"),
                    rec("y27a", "2027-01-01T00:00:01Z"),
                    rec("y26b", "2026-12-31T23:59:59Z"),
                    rec("y26a", "2026-06-01T00:00:00Z"),
                    rec("y25", "2025-06-01T00:00:00Z"),
                ],
                expect: &[
                    "+ y27b: yearly 2027, newest (verified)",
                    "- y27a: no rule matched",
                    "+ y26b: yearly 2026",
                    "- y26a: no rule matched",
                    "- y25: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "rules are a union and every matching reason is listed",
                policy: RetentionPolicy::new()
                    .keep_last(1)
                    .keep_within(Duration::hours(24))
                    .keep_daily(3)
                    .keep_monthly(2),
                records: vec![
                    rec("a", "2026-11-23T11:00:00Z"),
                    rec("b", "2026-11-23T09:00:00Z"),
                    rec("c", "2026-11-22T09:00:00Z"),
                    rec("d", "2026-11-21T09:00:00Z"),
                    rec("e", "2026-11-20T09:00:00Z"),
                    rec("f", "2026-10-15T09:00:00Z"),
                    rec("g", "2026-09-15T09:00:00Z"),
                ],
                expect: &[
                    "+ a: last #1, within period, daily 2026-11-23, monthly 2026-11, newest (verified)",
                    "+ b: within period",
                    "+ c: daily 2026-11-22",
                    "+ d: daily 2026-11-21",
                    "- e: no rule matched",
                    "+ f: monthly 2026-10",
                    "- g: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "pinned records are kept whatever the rules say",
                policy: RetentionPolicy::new().keep_last(1),
                records: vec![
                    rec("new", "2026-11-23T10:00:00Z"),
                    rec("mid", "2026-11-10T10:00:00Z"),
                    pinned(rec("old", "2020-01-01T10:00:00Z")),
                ],
                expect: &[
                    "+ new: last #1, newest (verified)",
                    "- mid: no rule matched",
                    "+ old: pinned",
                ],
                over_cap: false,
            },
            Case {
                name: "the newest record is kept even when no rule matches it",
                policy: RetentionPolicy::new().keep_within(Duration::hours(1)),
                records: vec![
                    rec("b", "2026-11-20T10:00:00Z"),
                    rec("a", "2026-11-19T10:00:00Z"),
                ],
                expect: &["+ b: newest (verified)", "- a: no rule matched"],
                over_cap: false,
            },
            Case {
                name: "safety snapshots are kept within the grace period only (keep_safety 0)",
                policy: RetentionPolicy::new()
                    .keep_last(1)
                    .keep_safety(0)
                    .safety_grace(Duration::days(7)),
                records: vec![
                    rec("newest", "2026-11-23T11:00:00Z"),
                    safety(rec("safety-3d", "2026-11-20T12:00:00Z")),
                    rec("plain-3d", "2026-11-20T11:00:00Z"),
                    safety(rec("safety-7d", "2026-11-16T12:00:00Z")),
                    safety(rec("safety-8d", "2026-11-15T12:00:00Z")),
                ],
                expect: &[
                    "+ newest: last #1, newest (verified)",
                    "+ safety-3d: safety grace",
                    "- plain-3d: no rule matched",
                    "- safety-7d: no rule matched",
                    "- safety-8d: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "safety snapshots: within the grace, and the newest keep_safety past it",
                policy: RetentionPolicy::new()
                    .keep_last(1)
                    .keep_safety(2)
                    .safety_grace(Duration::days(7)),
                records: vec![
                    rec("newest", "2026-11-23T11:00:00Z"),
                    safety(rec("safety-3d", "2026-11-20T12:00:00Z")),
                    rec("plain-3d", "2026-11-20T11:00:00Z"),
                    safety(rec("safety-7d", "2026-11-16T12:00:00Z")),
                    safety(rec("safety-8d", "2026-11-15T12:00:00Z")),
                ],
                expect: &[
                    "+ newest: last #1, newest (verified)",
                    "+ safety-3d: safety #1, safety grace",
                    "- plain-3d: no rule matched",
                    "+ safety-7d: safety #2",
                    "- safety-8d: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "restores never push the user's snapshots out, nor the one they used",
                policy: RetentionPolicy::new()
                    .keep_last(3)
                    .keep_safety(0)
                    .safety_grace(Duration::days(7)),
                records: vec![
                    restore_of(safety(rec("pre-3", "2026-11-23T12:00:00Z")), "s1"),
                    restore_of(safety(rec("pre-2", "2026-11-23T11:30:00Z")), "s1"),
                    restore_of(safety(rec("pre-1", "2026-11-23T11:00:00Z")), "s1"),
                    rec("s4", "2026-11-23T10:00:00Z"),
                    rec("s3", "2026-11-22T10:00:00Z"),
                    rec("s2", "2026-11-21T10:00:00Z"),
                    rec("s1", "2026-11-20T10:00:00Z"),
                    restore_of(safety(rec("pre-old", "2026-11-01T10:00:00Z")), "s0"),
                    rec("s0", "2026-10-31T10:00:00Z"),
                ],
                expect: &[
                    "+ pre-3: newest (verified), safety grace",
                    "+ pre-2: safety grace",
                    "+ pre-1: safety grace",
                    "+ s4: last #1",
                    "+ s3: last #2",
                    "+ s2: last #3",
                    "+ s1: restored from",
                    "- pre-old: no rule matched",
                    "- s0: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "a zero safety grace and keep_safety 0 keep no safety snapshot",
                policy: RetentionPolicy::new()
                    .keep_last(1)
                    .keep_safety(0)
                    .safety_grace(Duration::zero()),
                records: vec![
                    rec("newest", "2026-11-23T11:00:00Z"),
                    safety(rec("safety-1h", "2026-11-23T10:00:00Z")),
                ],
                expect: &[
                    "+ newest: last #1, newest (verified)",
                    "- safety-1h: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "size cap drops kept records oldest first until the total fits",
                policy: RetentionPolicy::new().keep_last(4).max_total_bytes(250),
                records: vec![
                    rec("a", "2026-11-23T10:00:00Z"),
                    rec("b", "2026-11-22T10:00:00Z"),
                    rec("c", "2026-11-21T10:00:00Z"),
                    rec("d", "2026-11-20T10:00:00Z"),
                    rec("e", "2026-11-19T10:00:00Z"),
                ],
                expect: &[
                    "+ a: last #1, newest (verified)",
                    "+ b: last #2",
                    "- c: size cap",
                    "- d: size cap",
                    "- e: no rule matched",
                ],
                over_cap: false,
            },
            Case {
                name: "size cap skips guarded records",
                policy: RetentionPolicy::new().keep_last(3).max_total_bytes(250),
                records: vec![
                    rec("a", "2026-11-23T10:00:00Z"),
                    rec("b", "2026-11-22T10:00:00Z"),
                    rec("c", "2026-11-21T10:00:00Z"),
                    pinned(rec("p", "2026-01-01T10:00:00Z")),
                ],
                expect: &[
                    "+ a: last #1, newest (verified)",
                    "- b: size cap",
                    "- c: size cap",
                    "+ p: pinned",
                ],
                over_cap: false,
            },
            Case {
                name: "a total exactly at the cap is within it",
                policy: RetentionPolicy::new().keep_last(2).max_total_bytes(200),
                records: vec![
                    rec("a", "2026-11-23T10:00:00Z"),
                    rec("b", "2026-11-22T10:00:00Z"),
                ],
                expect: &["+ a: last #1, newest (verified)", "+ b: last #2"],
                over_cap: false,
            },
            Case {
                name: "guards alone over the cap: everything else dropped, over_cap set",
                policy: RetentionPolicy::new().keep_last(3).max_total_bytes(100),
                records: vec![
                    sized(rec("big", "2026-11-23T10:00:00Z"), 500),
                    rec("b", "2026-11-22T10:00:00Z"),
                    safety(rec("s", "2026-11-21T10:00:00Z")),
                    rec("c", "2026-11-20T10:00:00Z"),
                ],
                expect: &[
                    "+ big: last #1, newest (verified)",
                    "- b: size cap",
                    "+ s: safety #1, safety grace",
                    "- c: size cap",
                ],
                over_cap: true,
            },
            Case {
                name: "no records: empty plan",
                policy: RetentionPolicy::default(),
                records: vec![],
                expect: &[],
                over_cap: false,
            },
        ]
    }

    #[test]
    fn table() -> Result<()> {
        for case in cases() {
            let plan = case.policy.apply(&case.records, now())?;
            assert_eq!(render(&plan), case.expect, "case: {}", case.name);
            assert_eq!(
                plan.over_cap, case.over_cap,
                "over_cap, case: {}",
                case.name
            );
        }
        Ok(())
    }

    #[test]
    fn validation_errors() {
        enum Want {
            Ok,
            KeepsNothing,
            Invalid(&'static str),
        }
        let cases = [
            ("new", RetentionPolicy::new(), Want::KeepsNothing),
            ("default", RetentionPolicy::default(), Want::Ok),
            (
                "keep_last 0",
                RetentionPolicy::new().keep_last(0),
                Want::KeepsNothing,
            ),
            (
                "keep_within 0",
                RetentionPolicy::new().keep_within(Duration::zero()),
                Want::KeepsNothing,
            ),
            (
                "all buckets 0",
                RetentionPolicy::new()
                    .keep_hourly(0)
                    .keep_daily(0)
                    .keep_weekly(0)
                    .keep_monthly(0)
                    .keep_yearly(0),
                Want::KeepsNothing,
            ),
            (
                "a size cap alone",
                RetentionPolicy::new().max_total_bytes(1 << 30),
                Want::KeepsNothing,
            ),
            (
                "keep_yearly 1",
                RetentionPolicy::new().keep_yearly(1),
                Want::Ok,
            ),
            (
                "keep_within 1s",
                RetentionPolicy::new().keep_within(Duration::seconds(1)),
                Want::Ok,
            ),
            (
                "negative keep_within",
                RetentionPolicy::new()
                    .keep_last(3)
                    .keep_within(Duration::hours(-1)),
                Want::Invalid("keep_within"),
            ),
            (
                "negative safety_grace",
                RetentionPolicy::new()
                    .keep_last(3)
                    .safety_grace(Duration::seconds(-1)),
                Want::Invalid("safety_grace"),
            ),
            (
                "negative duration wins over keeps nothing",
                RetentionPolicy::new().keep_within(Duration::days(-1)),
                Want::Invalid("keep_within"),
            ),
        ];
        for (name, policy, want) in cases {
            let got = policy.validate();
            match (want, &got) {
                (Want::Ok, Ok(())) => {}
                (Want::KeepsNothing, Err(Error::RetentionKeepsNothing { .. })) => {}
                (Want::Invalid(field), Err(Error::InvalidInput { field: f, .. }))
                    if *f == field => {}
                _ => panic!("case {name}: unexpected {got:?}"),
            }
            // `apply` validates too, even with nothing to plan.
            assert_eq!(
                policy.apply(&[], now()).is_ok(),
                got.is_ok(),
                "apply, case {name}"
            );
        }
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let records = [
            rec("same", "2026-11-23T10:00:00Z"),
            rec("same", "2026-11-20T10:00:00Z"),
        ];
        let got = RetentionPolicy::default().apply(&records, now());
        assert!(
            matches!(
                got,
                Err(Error::InvalidInput {
                    field: "records",
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn huge_durations_do_not_overflow() -> Result<()> {
        let policy = RetentionPolicy::new()
            .keep_within(Duration::MAX)
            .safety_grace(Duration::MAX);
        let records = [
            rec("a", "2026-11-23T10:00:00Z"),
            safety(rec("b", "1970-01-01T00:00:00Z")),
        ];
        let plan = policy.apply(&records, now())?;
        assert_eq!(
            render(&plan),
            [
                "+ a: within period, newest (verified)",
                "+ b: safety #1, safety grace"
            ]
        );
        Ok(())
    }

    #[test]
    fn kept_and_dropped_split_the_plan() -> Result<()> {
        let records = [
            rec("a", "2026-11-23T10:00:00Z"),
            rec("b", "2026-11-22T10:00:00Z"),
            rec("c", "2026-11-21T10:00:00Z"),
        ];
        let plan = RetentionPolicy::new().keep_last(2).apply(&records, now())?;
        let kept: Vec<&str> = plan.kept().map(|d| d.snapshot_id.as_str()).collect();
        let dropped: Vec<&str> = plan.dropped().map(|d| d.snapshot_id.as_str()).collect();
        assert_eq!(kept, ["a", "b"]);
        assert_eq!(dropped, ["c"]);
        Ok(())
    }

    #[test]
    fn getters_and_display() {
        let p = RetentionPolicy::new()
            .keep_last(3)
            .keep_within(Duration::hours(36))
            .keep_hourly(24)
            .keep_daily(7)
            .keep_weekly(4)
            .keep_monthly(12)
            .keep_yearly(2)
            .max_total_bytes(1000)
            .safety_grace(Duration::minutes(90));
        assert_eq!(p.last(), Some(3));
        assert_eq!(p.within(), Some(Duration::hours(36)));
        assert_eq!(p.hourly(), Some(24));
        assert_eq!(p.daily(), Some(7));
        assert_eq!(p.weekly(), Some(4));
        assert_eq!(p.monthly(), Some(12));
        assert_eq!(p.yearly(), Some(2));
        assert_eq!(p.size_cap(), Some(1000));
        assert_eq!(p.grace(), Duration::minutes(90));
        assert_eq!(
            p.to_string(),
            "last 3, within 36h, hourly 24, daily 7, weekly 4, monthly 12, yearly 2, \
             size cap 1000 bytes, safety grace 90m"
        );
        let d = RetentionPolicy::default();
        assert_eq!((d.last(), d.daily(), d.size_cap()), (Some(10), None, None));
        assert_eq!(d.grace(), Duration::days(7));
        assert_eq!(d.to_string(), "last 10, safety grace 7d");
        assert_eq!(
            RetentionPolicy::new().to_string(),
            "no keep rule, safety grace 7d"
        );
        assert_eq!(fmt_duration(Duration::seconds(45)), "45s");
        assert_eq!(fmt_duration(Duration::milliseconds(1500)), "1500ms");
    }

    #[test]
    fn reason_display() {
        let cases = [
            (Reason::Last { rank: 3 }, "last #3"),
            (Reason::Within, "within period"),
            (
                Reason::Hourly("2026-11-23 10h".into()),
                "hourly 2026-11-23 10h",
            ),
            (Reason::Daily("2026-11-23".into()), "daily 2026-11-23"),
            (Reason::Weekly("2026-W47".into()), "weekly 2026-W47"),
            (Reason::Monthly("2026-11".into()), "monthly 2026-11"),
            (Reason::Yearly("2026".into()), "yearly 2026"),
            (Reason::Pinned, "pinned"),
            (Reason::NewestVerified, "newest (verified)"),
            (Reason::SafetyGrace, "safety grace"),
            (Reason::SizeCap, "size cap"),
            (Reason::NoRuleMatched, "no rule matched"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn policy_serde_round_trip() -> std::result::Result<(), serde_json::Error> {
        let p = RetentionPolicy::new()
            .keep_last(3)
            .keep_within(Duration::days(2))
            .keep_weekly(4)
            .max_total_bytes(1 << 20);
        let json = serde_json::to_value(&p)?;
        assert_eq!(
            json,
            serde_json::json!({
                "keep_last": 3,
                "keep_within_secs": 172_800,
                "keep_weekly": 4,
                "max_total_bytes": 1_048_576,
                "safety_grace_secs": 604_800,
            })
        );
        assert_eq!(serde_json::from_value::<RetentionPolicy>(json)?, p);

        // Missing fields are unset rules and the default grace, not the `Default` policy.
        let daily: RetentionPolicy = serde_json::from_str(r#"{"keep_daily": 7}"#)?;
        assert_eq!(daily, RetentionPolicy::new().keep_daily(7));

        // A misspelt rule is an error, not a silently ignored field.
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"keep_dayly": 7}"#).is_err());
        Ok(())
    }

    #[test]
    fn plan_serializes() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let plan = RetentionPolicy::new()
            .keep_daily(1)
            .apply(&[rec("a", "2026-11-23T10:00:00Z")], now())?;
        let json = serde_json::to_value(&plan)?;
        assert_eq!(
            json,
            serde_json::json!({
                "decisions": [{
                    "snapshot_id": "a",
                    "keep": true,
                    "reasons": [{"daily": "2026-11-23"}, "newest_verified"],
                }],
                "over_cap": false,
            })
        );
        Ok(())
    }

    // ---- property tests ----

    /// Records with unique ids, spread over ~400 days around `now` (a few after it), with
    /// frequent equal datetimes, some pinned, some safety snapshots.
    fn records_strategy() -> impl Strategy<Value = Vec<SnapshotRecord>> {
        let one = (
            prop_oneof![0i64..5, -120i64..(400 * 24 * 60)],
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.2),
            0u64..1_000,
        );
        proptest::collection::vec(one, 0..40).prop_map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (minutes_ago, pin, safe, size))| {
                    let mut r = rec_at(&format!("s{i:03}"), now() - Duration::minutes(minutes_ago));
                    r.pinned = pin;
                    if safe {
                        r.operation_type = PRE_RESTORE.to_owned();
                    }
                    r.size_bytes = size;
                    r
                })
                .collect()
        })
    }

    fn policy_strategy() -> impl Strategy<Value = RetentionPolicy> {
        let count = || proptest::option::of(0usize..6);
        (
            (count(), count(), count(), count(), count(), count()),
            proptest::option::of(0i64..2_000),
            proptest::option::of(0u64..10_000),
            0i64..500,
        )
            .prop_map(|((last, h, d, w, m, y), within_h, cap, grace_h)| {
                let mut p = RetentionPolicy::new().safety_grace(Duration::hours(grace_h));
                p.keep_last = last;
                p.keep_hourly = h;
                p.keep_daily = d;
                p.keep_weekly = w;
                p.keep_monthly = m;
                p.keep_yearly = y;
                p.keep_within = within_h.map(Duration::hours);
                p.max_total_bytes = cap;
                if p.validate().is_err() {
                    p.keep_last = Some(1);
                }
                p
            })
    }

    fn run(
        policy: &RetentionPolicy,
        records: &[SnapshotRecord],
    ) -> Result<RetentionPlan, TestCaseError> {
        policy
            .apply(records, now())
            .map_err(|e| TestCaseError::fail(e.to_string()))
    }

    proptest! {
        #[test]
        fn one_decision_per_record_in_order(records in records_strategy(), policy in policy_strategy()) {
            let plan = run(&policy, &records)?;
            prop_assert_eq!(plan.decisions.len(), records.len());
            let mut want: Vec<&SnapshotRecord> = records.iter().collect();
            want.sort_by(|a, b| (b.datetime, &b.snapshot_id).cmp(&(a.datetime, &a.snapshot_id)));
            let want: Vec<&str> = want.iter().map(|r| r.snapshot_id.as_str()).collect();
            let got: Vec<&str> = plan.decisions.iter().map(|d| d.snapshot_id.as_str()).collect();
            prop_assert_eq!(got, want);
            for d in &plan.decisions {
                prop_assert!(!d.reasons.is_empty());
                let dropped_reason = matches!(d.reasons[..], [Reason::SizeCap] | [Reason::NoRuleMatched]);
                prop_assert_eq!(d.keep, !dropped_reason);
            }
        }

        #[test]
        fn newest_and_pinned_are_always_kept(records in records_strategy(), policy in policy_strategy()) {
            let plan = run(&policy, &records)?;
            if let Some(first) = plan.decisions.first() {
                prop_assert!(first.keep);
                prop_assert!(first.reasons.contains(&Reason::NewestVerified));
            }
            for r in records.iter().filter(|r| r.pinned) {
                let d = plan.decisions.iter().find(|d| d.snapshot_id == r.snapshot_id);
                prop_assert!(d.is_some_and(|d| d.keep && d.reasons.contains(&Reason::Pinned)));
            }
        }

        #[test]
        fn keep_last_keeps_at_least_n(records in records_strategy(), n in 1usize..50) {
            // Safety snapshots are counted apart: the n newest of the others are kept.
            let plan = run(&RetentionPolicy::new().keep_last(n), &records)?;
            let regular: HashSet<&str> = records
                .iter()
                .filter(|r| !r.is_safety())
                .map(|r| r.snapshot_id.as_str())
                .collect();
            let kept_regular = plan.kept().filter(|d| regular.contains(d.snapshot_id.as_str())).count();
            prop_assert!(kept_regular >= n.min(regular.len()));
            for d in plan.decisions.iter().filter(|d| regular.contains(d.snapshot_id.as_str())).take(n) {
                prop_assert!(d.keep);
            }
        }

        #[test]
        fn input_order_does_not_matter(
            (records, shuffled) in records_strategy()
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            policy in policy_strategy(),
        ) {
            prop_assert_eq!(run(&policy, &records)?, run(&policy, &shuffled)?);
        }

        #[test]
        fn kept_total_fits_the_cap_unless_over_cap(
            records in records_strategy(),
            policy in policy_strategy(),
            cap in 0u64..20_000,
        ) {
            let policy = policy.max_total_bytes(cap);
            let plan = run(&policy, &records)?;
            let size = |id: &str| records.iter().find(|r| r.snapshot_id == id).map_or(0, |r| r.size_bytes);
            let total: u64 = plan.kept().map(|d| size(&d.snapshot_id)).sum();
            if plan.over_cap {
                prop_assert!(total > cap);
                // Only guarded records remain kept.
                for d in plan.kept() {
                    prop_assert!(d.reasons.iter().any(|r| matches!(
                        r, Reason::Pinned | Reason::NewestVerified | Reason::SafetyGrace
                    )));
                }
            } else {
                prop_assert!(total <= cap);
            }
        }
    }
}
