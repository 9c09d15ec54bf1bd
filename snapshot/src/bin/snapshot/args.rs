//! The command line: every command and flag (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{EngineKind, SnapshotType};

const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  error (I/O, engine, disk full, …), or a confirmation answered \"no\"
  2  usage: bad flags, configuration or input; confirmation needed but stdin is not a terminal
  3  not found: no such snapshot, store, database file or table
  4  verification failed: checksum mismatch, missing blob, damaged image; doctor found problems
  5  locked: the store, the database or the scheduler is held by another process
  6  conflict: the live data changed since the snapshot; nothing was changed: undo would
     overwrite changed rows (--force overwrites them), or a table's columns changed
     (--common-columns restores by the columns both sides have)
  7  nothing taken: `create` found snapshots switched off on this host (an ephemeral disk);
     --force takes it anyway
A PostgreSQL server that cannot be reached or refuses the user exits 1 (kinds unreachable,
access_denied); a missing PostgreSQL database exits 3.

Configuration: --config FILE, $SNAPSHOT_CONFIG, or ./snapshot.toml; overridden by
$SNAPSHOT_DB, $SNAPSHOT_ENGINE, $SNAPSHOT_STORE, $SNAPSHOT_TABLE, then by flags.
`snapshot config --show` prints the effective values and where each came from.

PostgreSQL: --db postgres://user@host:port/database (or [database] url / url_env in the file;
keep passwords in $SNAPSHOT_DB, the url_env variable or PGPASSWORD rather than on the command
line), --pg-schema SCHEMA, create --tables A,B; a store is required (--store DIR).";

/// `snapshot`: consistent, verified snapshots of an application's database.
#[derive(Debug, Parser)]
#[command(name = "snapshot", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: $SNAPSHOT_CONFIG, else ./snapshot.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The database file, or a PostgreSQL server as a postgres:// or postgresql:// URL
    /// (with --engine postgres: any libpq settings string).
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub db: Option<PathBuf>,
    /// The database engine (default: guessed from the file; postgres for a postgres:// URL).
    #[arg(long, global = true, value_parser = EngineKind::parse)]
    pub engine: Option<EngineKind>,
    /// The schema of a PostgreSQL database whose tables are snapshotted (default: `[database]
    /// schema`, else public).
    #[arg(long, global = true, value_name = "SCHEMA")]
    pub pg_schema: Option<String>,
    /// The store directory (default: `backups` beside the database).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Machine-readable JSON on standard output (no progress bars).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a snapshot now: the database, CSV/JSON exports, or both.
    Create(CreateArgs),
    /// List snapshots, newest first.
    List(ListArgs),
    /// Show one snapshot's record (and, for an export bundle, its tables).
    Show {
        /// The snapshot id.
        id: String,
    },
    /// Pin a snapshot: retention never removes it.
    Pin {
        /// The snapshot id.
        id: String,
    },
    /// Unpin a snapshot: retention's rules decide again.
    Unpin {
        /// The snapshot id.
        id: String,
    },
    /// Verify snapshots: checksum, then the engine's check.
    Verify(VerifyArgs),
    /// Restore a snapshot over the database (after a safety snapshot), or to another path.
    Restore(RestoreArgs),
    /// Rows of a table in a snapshot, a page at a time; without --table, the snapshot's tables.
    Preview(PreviewArgs),
    /// Compare a table of a snapshot with the live table: rows added, removed and changed since.
    Diff(DiffArgs),
    /// Restore tables of a snapshot into the live database, replaced or merged by key, in one
    /// transaction after a safety snapshot.
    RestoreTable(RestoreTableArgs),
    /// Undo the call a snapshot was taken for: put back the rows of its entity (and declared
    /// dependants) as they were, by merge, after a safety snapshot.
    Undo(UndoArgs),
    /// Remove snapshots the retention rules do not keep.
    Prune(PruneArgs),
    /// Store and database status with statistics.
    Status(StatusArgs),
    /// Export tables to CSV/JSON files in a directory (not a snapshot; see `create --type`).
    Export(ExportArgs),
    /// Run the scheduled jobs of the configuration as a foreground service.
    Schedule(ScheduleArgs),
    /// Find staging leftovers, orphan blobs and a lost index; repair with --repair.
    Doctor(DoctorArgs),
    /// Print the effective configuration and where each value came from.
    Config(ConfigArgs),
    /// Generate a key for an encrypted store (`[store] encrypt = true`): a new age identity
    /// written to a new file (mode 0600), its public recipient printed. Keep a copy apart from
    /// the store: without it the snapshots cannot be read.
    Keygen {
        /// The new key file.
        #[arg(long, short, value_name = "FILE")]
        out: std::path::PathBuf,
    },
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What to take: the database file, CSV or JSON exports of its tables, or all three.
    #[arg(long = "type", value_enum, default_value_t = SnapshotType::Db)]
    pub kind: SnapshotType,
    /// Why (default: `Before <operation> …`).
    #[arg(long)]
    pub description: Option<String>,
    /// Operation type recorded with the snapshot.
    #[arg(long, default_value = "manual")]
    pub op: String,
    /// Entity type recorded with the snapshot.
    #[arg(long)]
    pub entity: Option<String>,
    /// Entity id recorded with the snapshot (needs --entity).
    #[arg(long, requires = "entity")]
    pub id: Option<String>,
    /// Tables to export (default: `[exports]` tables, else every table); for a PostgreSQL
    /// database, the tables of the snapshot (default: `[database] tables`, else every table of
    /// the schema).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
    /// Take the snapshot even where snapshots are switched off (an ephemeral host: the store
    /// is on tmpfs or the environment says so); without it such a `create` exits 7.
    #[arg(long)]
    pub force: bool,
    /// Pin the snapshot (retention never removes it).
    #[arg(long)]
    pub pin: bool,
    /// An API export: the first day of this run (YYYY-MM-DD), instead of `start`.
    #[arg(long)]
    pub from: Option<String>,
    /// An API export: the day this run ends before (YYYY-MM-DD), instead of now.
    #[arg(long)]
    pub to: Option<String>,
    /// An API export: resume the interrupted run (any run does when one matches; with this
    /// flag, a run with nothing to resume fails instead of starting afresh).
    #[arg(long)]
    pub resume: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this operation type.
    #[arg(long)]
    pub op: Option<String>,
    /// Only this entity type.
    #[arg(long)]
    pub entity: Option<String>,
    /// Only this entity id.
    #[arg(long)]
    pub id: Option<String>,
    /// Only snapshots taken since: RFC 3339, `YYYY-MM-DD[ HH:MM[:SS]]` (UTC), or an age like 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Only database snapshots (db) or bundles holding csv / json.
    #[arg(long = "type", value_enum)]
    pub kind: Option<SnapshotType>,
    /// At most N (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The snapshot to verify.
    #[arg(conflicts_with = "all", required_unless_present = "all")]
    pub id: Option<String>,
    /// Verify every snapshot.
    #[arg(long)]
    pub all: bool,
    /// The engine's full check (SQLite integrity_check, every bundle file re-hashed).
    #[arg(long)]
    pub full: bool,
}

/// `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot to restore (or `--latest`).
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub id: Option<String>,
    /// The newest snapshot of the database.
    #[arg(long)]
    pub latest: bool,
    /// With `--latest`: only when the database file is absent (at a container's start; the
    /// newest snapshot that passes its checks is put in place, a damaged one passed over);
    /// nothing happens, exit 0, when it is there. Needs no confirmation: nothing is replaced.
    #[arg(long, requires = "latest", conflicts_with_all = ["dry_run", "to", "paths"])]
    pub if_missing: bool,
    /// Verify and print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the snapshot to PATH (a new file, or a new directory for an export bundle or a
    /// directory snapshot) instead of over the database.
    #[arg(long, value_name = "PATH")]
    pub to: Option<PathBuf>,
    /// A directory snapshot: only the files matching this glob, relative to the directory
    /// (`csv/*.csv`; a directory's name takes what is below it); repeat for more. The other
    /// files of the live directory are left as they are.
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

/// `preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The snapshot.
    pub id: String,
    /// The table to show (default: list the snapshot's tables).
    #[arg(long)]
    pub table: Option<String>,
    /// Rows to skip (primary key order).
    #[arg(long, default_value_t = 0, requires = "table")]
    pub offset: u64,
    /// Rows to show.
    #[arg(long, default_value_t = 20, requires = "table")]
    pub limit: u64,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The snapshot.
    pub id: String,
    /// The table to compare (a database; a directory is compared file by file without it).
    #[arg(long)]
    pub table: Option<String>,
    /// Match rows by these columns instead of the primary key.
    #[arg(long, value_name = "COL,...", value_delimiter = ',')]
    pub key: Option<Vec<String>>,
    /// Sample rows shown of each kind (added, removed, changed); 0 for counts only.
    #[arg(long, value_name = "N", default_value_t = snapshot::table::DEFAULT_SAMPLE)]
    pub sample: usize,
}

/// How `restore-table` treats the live rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The table's content becomes the snapshot's: rows added since are deleted.
    Replace,
    /// Upsert by key: rows added since stay.
    Merge,
}

/// `restore-table`.
#[derive(Debug, Args)]
pub struct RestoreTableArgs {
    /// The snapshot.
    pub id: String,
    /// A table to restore (repeat for several: one transaction).
    #[arg(long = "table", required = true, value_name = "TABLE")]
    pub tables: Vec<String>,
    /// replace: the table becomes the snapshot's; merge: upsert by key, rows added since stay.
    #[arg(long, value_enum)]
    pub mode: ModeArg,
    /// Match a table's rows by these columns instead of its primary key: TABLE=COL[,COL…]
    /// (just COL[,COL…] when one table is restored). Repeatable.
    #[arg(long, value_name = "TABLE=COL,...")]
    pub key: Vec<String>,
    /// When a table's columns changed since the snapshot, restore by the columns both sides
    /// have instead of refusing.
    #[arg(long)]
    pub common_columns: bool,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

/// `undo`.
#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The snapshot taken for the call to undo (it records an entity type and id).
    pub id: String,
    /// Overwrite live rows that changed since the snapshot instead of refusing (exit 6).
    #[arg(long)]
    pub force: bool,
    /// When a table's columns changed since the snapshot, restore by the columns both sides
    /// have instead of refusing.
    #[arg(long)]
    pub common_columns: bool,
    /// Report what would be put back, and the conflicts; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep the N newest.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep everything younger than this (e.g. 30d: the original's --cleanup days_to_keep).
    #[arg(long, value_name = "AGE")]
    pub keep_within: Option<String>,
    /// Keep the newest of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest of each of the last N weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
    /// Drop the oldest until the total fits (e.g. 10GiB).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Print the plan; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The table whose numeric columns and latest row are shown (default: `[status]` table).
    #[arg(long)]
    pub table: Option<String>,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The directory to write (created when missing; existing files are never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// csv, json or all (both).
    #[arg(long, value_enum, default_value_t = SnapshotType::All)]
    pub format: SnapshotType,
    /// Tables to export (default: `[exports]` tables, else every table).
    #[arg(long, value_delimiter = ',')]
    pub tables: Option<Vec<String>>,
}

/// `schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Run every job once at start (the interval gate still applies).
    #[arg(long)]
    pub run_now: bool,
    /// Exit after the start-up runs instead of serving (with --run-now: run every job once).
    #[arg(long)]
    pub once: bool,
    /// Print the jobs and their next run times, and exit.
    #[arg(long)]
    pub list: bool,
}

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Repair what is found: remove leftovers and orphans, rebuild a lost index.
    #[arg(long)]
    pub repair: bool,
    /// Spare leftovers younger than this (they may belong to a snapshot in progress).
    #[arg(long, default_value = "15m", value_name = "AGE")]
    pub min_age: String,
}

/// `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the effective configuration (the default).
    #[arg(long)]
    pub show: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
