//! The `snapshot` command-line tool (feature `cli`): take, list, show, verify, restore and prune
//! snapshots; preview a snapshot's tables, compare them with the live ones, restore whole tables
//! (replace or merge) or undo exactly what one call deleted; export tables, show status with
//! database statistics, check and repair the store, and run scheduled jobs as a service.
//!
//! Every command takes `--json` for scripts; human output is a table. The configuration is
//! described in [`config`]. The tool is a program on top of the library's public API: nothing
//! here is library API.
//!
//! Exit codes (see [`ExitStatus`]): 0 ok, 1 error, 2 usage, 3 not found, 4 verification
//! failed, 5 locked, 6 conflict.
//!
//! # PostgreSQL
//!
//! The database can be a PostgreSQL server (feature `postgres`): `--db` (or `SNAPSHOT_DB`)
//! takes a `postgres://` or `postgresql://` URL (any libpq settings string with `--engine
//! postgres`), or the configuration names it (`[database] url` / `url_env`, see
//! [`config`]); `--pg-schema` picks the schema and `create --tables` the tables. A store
//! must be given (`--store`, `SNAPSHOT_STORE` or `[store] dir`). `create` (type `db`), `list`,
//! `show`, `verify`, `restore` (every table of the snapshot replaced in one transaction, after a
//! safety snapshot), `preview`, `diff`, `restore-table`, `undo`, `prune`, `status`, `schedule`
//! (jobs of type `db`) and `doctor` work on it; CSV/JSON exports (`create --type csv|json|all`,
//! `export`) need a file and are refused with exit code 2 (`unsupported`). An unreachable server
//! exits 1 (`unreachable`), refused credentials 1 (`access_denied`), a missing database 3
//! (`source_missing`). Passwords are never printed.

mod args;
mod commands;
mod config;
mod ctx;
mod error;
mod files;
mod output;
mod service;
mod tables;

use std::process::ExitCode;

use clap::Parser;

pub(crate) use args::*;
pub(crate) use error::{CliError, ExitStatus, invalid};

/// Runs the tool with the process's arguments and returns its exit code.
fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitStatus::Usage as u8
            } else {
                0 // --help, --version
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let json = cli.global.json;
    match run(cli) {
        Ok(()) => ExitCode::from(ExitStatus::Ok as u8),
        Err(e) => {
            if json && e.reported {
                // The report on standard output says what failed.
            } else if json {
                let v = serde_json::json!({
                    "error": { "kind": e.kind, "message": e.message, "exit_code": e.status as u8 }
                });
                println!("{v}");
            } else {
                eprintln!("error: {}", e.message);
            }
            ExitCode::from(e.status as u8)
        }
    }
}

/// Exit status of a tool whose reader went away (128 + SIGPIPE), as a shell reports it.
const CLOSED_PIPE: i32 = 141;

/// `snapshot list --json | head -1`: the reader closing the pipe ends the tool quietly, with the
/// status of a process killed by SIGPIPE, instead of a panic from `println!`. (Rust ignores
/// SIGPIPE, so a write to a closed pipe is an error, which `println!` turns into a panic.)
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE);
        }
        default(info);
    }));
}

/// Runs one parsed command.
///
/// # Errors
/// A [`CliError`] with the exit status to use.
fn run(cli: Cli) -> Result<(), CliError> {
    let overrides = crate::config::Overrides {
        config: cli.global.config.clone(),
        db: cli.global.db.clone(),
        engine: cli.global.engine,
        pg_schema: cli.global.pg_schema.clone(),
        store: cli.global.store.clone(),
        table: match &cli.command {
            Command::Status(s) => s.table.clone(),
            _ => None,
        },
    };
    if let Command::Keygen { out } = &cli.command {
        return commands::keygen(out, cli.global.json);
    }
    let config = crate::config::Config::load(&overrides)?;
    let ctx = ctx::Ctx::new(config, cli.global.json);
    match cli.command {
        Command::Create(a) => commands::create(&ctx, a),
        Command::List(a) => commands::list(&ctx, a),
        Command::Show { id } => commands::show(&ctx, &id),
        Command::Pin { id } => commands::pin(&ctx, &id, true),
        Command::Unpin { id } => commands::pin(&ctx, &id, false),
        Command::Verify(a) => commands::verify(&ctx, a),
        Command::Restore(a) => commands::restore(&ctx, a),
        Command::Preview(a) => tables::preview(&ctx, a),
        Command::Diff(a) => tables::diff(&ctx, a),
        Command::RestoreTable(a) => tables::restore_table(&ctx, a),
        Command::Undo(a) => tables::undo(&ctx, a),
        Command::Prune(a) => commands::prune(&ctx, a),
        Command::Status(_) => commands::status(&ctx),
        Command::Export(a) => commands::export(&ctx, a),
        Command::Schedule(a) => service::schedule(&ctx, a),
        Command::Doctor(a) => commands::doctor(&ctx, a),
        Command::Config(_) => commands::config(&ctx),
        Command::Keygen { .. } => unreachable!("handled before the configuration is loaded"),
    }
}
