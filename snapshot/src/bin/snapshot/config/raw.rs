//! The file as written: every table and key the configuration accepts, read with serde
//! (unknown keys and wrong types are errors naming the key and the line), each value with the
//! span it came from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use snapshot::Result;
use snapshot::retention::RetentionPolicy;
use snapshot::schedule::{Schedule, TimeZone};

use crate::config::units::{ByteSize, HumanDuration};
use crate::config::{EngineKind, SnapshotType};

/// Retention rules as written in the configuration (human durations and sizes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the `n` newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// Keep every snapshot younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<HumanDuration>,
    /// Keep the newest of each of the last `n` hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest of each of the last `n` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<usize>,
    /// Keep the newest of each of the last `n` ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest of each of the last `n` months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest of each of the last `n` years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<usize>,
    /// Drop the oldest unguarded snapshots until the total fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_size: Option<ByteSize>,
    /// How long a pre-restore safety snapshot is kept whatever the rules say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_grace: Option<HumanDuration>,
    /// How many safety snapshots are kept past their grace (default 3); they never count
    /// toward the other rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_safety: Option<usize>,
}

impl RetentionConfig {
    /// The library policy these rules describe.
    ///
    /// # Errors
    /// [`Error::RetentionKeepsNothing`] when no keep rule has a positive value.
    pub fn policy(&self) -> Result<RetentionPolicy> {
        let mut p = RetentionPolicy::new();
        if let Some(n) = self.keep_last {
            p = p.keep_last(n);
        }
        if let Some(d) = self.keep_within {
            p = p.keep_within(d.to_chrono());
        }
        if let Some(n) = self.keep_hourly {
            p = p.keep_hourly(n);
        }
        if let Some(n) = self.keep_daily {
            p = p.keep_daily(n);
        }
        if let Some(n) = self.keep_weekly {
            p = p.keep_weekly(n);
        }
        if let Some(n) = self.keep_monthly {
            p = p.keep_monthly(n);
        }
        if let Some(n) = self.keep_yearly {
            p = p.keep_yearly(n);
        }
        if let Some(b) = self.max_total_size {
            p = p.max_total_bytes(b.0);
        }
        if let Some(g) = self.safety_grace {
            p = p.safety_grace(g.to_chrono());
        }
        if let Some(n) = self.keep_safety {
            p = p.keep_safety(n);
        }
        p.validate()?;
        Ok(p)
    }
}

/// One scheduled job of `[[schedule.jobs]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Unique name; the job's snapshots are recorded with operation `scheduled` and this name as
    /// their entity type.
    pub name: String,
    /// When: a 5-field cron expression or a preset (`hourly`, `daily`, `weekly`, `@hourly`, …).
    pub cron: Schedule,
    /// What each run takes.
    #[serde(default, rename = "type")]
    pub kind: SnapshotType,
    /// The interval gate: skip a run when the job's last snapshot is younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<HumanDuration>,
    /// Retention of this job's own snapshots, applied after each of its runs (the store-wide
    /// policy still applies to every snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionConfig>,
}

/// `[database]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub(crate) path: Option<toml::Spanned<PathBuf>>,
    pub(crate) engine: Option<toml::Spanned<EngineKind>>,
    pub(crate) url: Option<toml::Spanned<String>>,
    pub(crate) url_env: Option<toml::Spanned<String>>,
    pub(crate) schema: Option<toml::Spanned<String>>,
    pub(crate) tables: Option<toml::Spanned<Vec<String>>>,
    /// The engine's own settings (`[database.options]`: a directory's include/exclude
    /// globs, archive format, …), checked by the engine.
    pub(crate) options: Option<toml::Spanned<toml::Table>>,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) dir: Option<toml::Spanned<PathBuf>>,
    pub(crate) url: Option<toml::Spanned<String>>,
    pub(crate) replica: Option<toml::Spanned<String>>,
    pub(crate) endpoint: Option<toml::Spanned<String>>,
    pub(crate) region: Option<toml::Spanned<String>>,
    pub(crate) mode: Option<toml::Spanned<StoreMode>>,
    pub(crate) encrypt: Option<toml::Spanned<bool>>,
    pub(crate) key_file: Option<toml::Spanned<PathBuf>>,
}

/// `[store] mode`: how snapshots are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// Each snapshot a file of its own.
    #[default]
    Plain,
    /// Distinct chunks kept once, compressed (`DedupStore`).
    Dedup,
}

/// `[exports]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExports {
    pub(crate) tables: Option<toml::Spanned<Vec<String>>>,
}

/// `[status]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatus {
    pub(crate) table: Option<toml::Spanned<String>>,
    pub(crate) order_by: Option<toml::Spanned<String>>,
}

/// `[schedule]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) log: Option<toml::Spanned<PathBuf>>,
    pub(crate) log_max_size: Option<toml::Spanned<ByteSize>>,
    pub(crate) log_keep: Option<toml::Spanned<usize>>,
    pub(crate) timezone: Option<toml::Spanned<TimeZone>>,
    #[serde(default)]
    pub(crate) jobs: Vec<toml::Spanned<JobConfig>>,
}

/// Key columns written as one name or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawKey {
    One(String),
    Many(Vec<String>),
}

impl RawKey {
    pub(crate) fn columns(&self) -> Vec<String> {
        match self {
            RawKey::One(c) => vec![c.clone()],
            RawKey::Many(c) => c.clone(),
        }
    }
}

/// One `cascade = [{ table, column, key }]` entry of an entity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCascade {
    pub(crate) table: String,
    pub(crate) column: String,
    pub(crate) key: Option<RawKey>,
}

/// `[entities.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntity {
    pub(crate) table: Option<String>,
    pub(crate) column: Option<String>,
    pub(crate) key: Option<RawKey>,
    #[serde(default)]
    pub(crate) cascade: Vec<RawCascade>,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub(crate) database: RawDatabase,
    #[serde(default)]
    pub(crate) store: RawStore,
    pub(crate) retention: Option<toml::Spanned<RetentionConfig>>,
    #[serde(default)]
    pub(crate) exports: RawExports,
    #[serde(default)]
    pub(crate) status: RawStatus,
    #[serde(default)]
    pub(crate) schedule: RawSchedule,
    #[serde(default)]
    pub(crate) entities: BTreeMap<String, toml::Spanned<RawEntity>>,
}
