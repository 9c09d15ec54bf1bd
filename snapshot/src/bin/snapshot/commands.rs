//! The commands other than `schedule`.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::json;

use crate::config::{ByteSize, HumanDuration, SnapshotType};
use crate::ctx::{Ctx, export_formats_of, formats_of};
use crate::output::{self, Table, bytes, opt_time, pairs, time};
use crate::{
    CliError, CreateArgs, DoctorArgs, ExitStatus, ExportArgs, ListArgs, PruneArgs, RestoreArgs,
    VerifyArgs, invalid,
};
use snapshot::DoctorOptions;
use snapshot::Error;
use snapshot::RestoreOptions;
use snapshot::export::{self, ExportFormat};
use snapshot::record::SnapshotRecord;
use snapshot::retention::RetentionPolicy;
use snapshot::source::CheckLevel;
use snapshot::{IfMissing, ListFilter, SnapshotOutcome, SnapshotRequest};

type CliResult = Result<(), CliError>;

fn usage(kind: &'static str, message: impl Into<String>) -> CliError {
    CliError::new(ExitStatus::Usage, kind, message)
}

fn short_sum(checksum: &str) -> String {
    checksum.chars().take(7 + 12).collect::<String>() + "…"
}

fn entity(r: &SnapshotRecord) -> String {
    match (&r.entity_type, &r.entity_id) {
        (Some(t), Some(i)) => format!("{t} {i}"),
        (Some(t), None) => t.clone(),
        _ => "-".into(),
    }
}

/// `--from`, `--to` and `--resume`: settings of this run of an API export.
fn run_options(ctx: &Ctx, a: &CreateArgs) -> Result<(), CliError> {
    if a.from.is_none() && a.to.is_none() && !a.resume {
        return Ok(());
    }
    if ctx.config.engine.name() != "api" {
        return Err(usage(
            "conflicting_flags",
            "--from, --to and --resume apply to an API export ([database] engine = \"api\")",
        ));
    }
    let mut map = serde_json::Map::new();
    for (key, value) in [("from", &a.from), ("to", &a.to)] {
        if let Some(v) = value {
            if chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_err() {
                return Err(usage(
                    "invalid_input",
                    format!("--{key} {v}: a day is written YYYY-MM-DD"),
                ));
            }
            map.insert(key.into(), serde_json::Value::String(v.clone()));
        }
    }
    if a.resume {
        map.insert("resume".into(), serde_json::Value::Bool(true));
    }
    *ctx.run_options.borrow_mut() = map;
    Ok(())
}

pub(crate) fn create(ctx: &Ctx, a: CreateArgs) -> CliResult {
    let postgres = ctx.config.server.is_some();
    if a.kind == SnapshotType::Db && a.tables.is_some() && !postgres {
        return Err(usage(
            "conflicting_flags",
            "--tables applies to exports (or to a PostgreSQL database): use it with --type csv, \
             json or all",
        ));
    }
    let formats = formats_of(a.kind);
    if !formats.is_empty() {
        ctx.refuse_exports_of_servers(&format!("create --type {}", a.kind.name()))?;
    }
    if let Some(t) = &a.tables
        && t.iter().any(|n| n.trim().is_empty())
    {
        return Err(usage("invalid_input", "--tables: a table name is empty"));
    }
    ctx.force.set(a.force);
    run_options(ctx, &a)?;
    let mut managers = Vec::new();
    if matches!(a.kind, SnapshotType::Db | SnapshotType::All) {
        let tables = if postgres { a.tables.clone() } else { None };
        managers.push(ctx.db_manager_with(true, tables)?);
    }
    if !formats.is_empty() {
        managers.push(ctx.export_manager(&formats, a.tables.clone(), true)?);
    }
    let mut taken = Vec::new();
    let mut disabled = None;
    for m in managers {
        let mut req = SnapshotRequest::new(a.op.clone()).pinned(a.pin);
        if let Some(e) = &a.entity {
            req = match &a.id {
                Some(id) => req.entity(e.clone(), id),
                None => req.entity_type(e.clone()),
            };
        }
        if let Some(d) = &a.description {
            req = req.description(d.clone());
        }
        match m.snapshot(req)? {
            SnapshotOutcome::Taken(r) => taken.push(r),
            SnapshotOutcome::Disabled { reason } => disabled = Some(reason),
            other => disabled = Some(format!("{other:?}")),
        }
        // A replica's copies run in the background; this process is about to exit, so they
        // are waited for here (a failure is reported, the snapshot stays taken).
        if ctx.config.store_replica.is_some()
            && let Err(e) = snapshot::StoreExt::settle(m.store().as_ref())
        {
            eprintln!(
                "warning: {e}; `status` shows what the replica lacks, the next run catches up"
            );
        }
    }
    if ctx.json {
        output::json(&json!({ "taken": taken, "disabled": disabled }))?;
    } else if let Some(reason) = &disabled {
        eprintln!(
            "snapshots are switched off on this host: {reason}; nothing was taken (--force, or \
             SNAPSHOT_EPHEMERAL=0, takes it)"
        );
    }
    if let Some(reason) = disabled {
        return Err(CliError::new(
            ExitStatus::NotTaken,
            "not_taken",
            format!("nothing was taken: snapshots are switched off on this host: {reason}"),
        )
        .after_report());
    }
    if ctx.json {
        return Ok(());
    }
    for r in &taken {
        println!(
            "took {}  ({}, {}, {})",
            r.snapshot_id,
            r.source_kind,
            bytes(r.size_bytes),
            short_sum(&r.checksum)
        );
    }
    Ok(())
}

/// Parses `--since`: RFC 3339, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (UTC), or an age (`7d`).
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(d.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    match HumanDuration::parse(t) {
        Ok(d) => Ok(now - d.to_chrono()),
        Err(_) => Err(usage(
            "invalid_input",
            format!(
                "--since {text:?}: expected RFC 3339, YYYY-MM-DD[ HH:MM[:SS]] or an age like 7d"
            ),
        )),
    }
}

fn kind_matches(r: &SnapshotRecord, kind: SnapshotType) -> bool {
    let k = r.source_kind.as_str();
    match kind {
        SnapshotType::Db => export_formats_of(k).is_none(),
        SnapshotType::Csv => k.contains("csv"),
        SnapshotType::Json => k.contains("json"),
        SnapshotType::All => true,
    }
}

pub(crate) fn list(ctx: &Ctx, a: ListArgs) -> CliResult {
    let m = ctx.db_manager(false)?;
    if m.index_missing().unwrap_or(false) && !m.list(&ListFilter::new())?.is_empty() {
        eprintln!(
            "warning: the catalog index ({}) is missing: these snapshots were read from their \
             sidecars; `snapshot doctor --repair` writes it again",
            snapshot::catalog::INDEX_KEY
        );
    }
    let mut f = ListFilter::new();
    if let Some(op) = &a.op {
        f = f.operation_type(op.clone());
    }
    if let Some(e) = &a.entity {
        f = f.entity_type(e.clone());
    }
    if let Some(id) = &a.id {
        f = f.entity_id(id);
    }
    if let Some(s) = &a.since {
        f = f.since(parse_since(s, Utc::now())?);
    }
    let mut records = m.list(&f)?;
    if let Some(k) = a.kind {
        records.retain(|r| kind_matches(r, k));
    }
    if let Some(n) = a.limit {
        records.truncate(n);
    }
    if ctx.json {
        return output::json(&records);
    }
    if records.is_empty() {
        println!("no snapshots");
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "TIME (UTC)",
        "OP",
        "ENTITY",
        "TYPE",
        "SIZE",
        "OUTCOME",
        "PIN",
        "VERIFIED",
    ]);
    for r in &records {
        t.row(vec![
            r.snapshot_id.clone(),
            time(r.datetime),
            r.operation_type.clone(),
            entity(r),
            r.source_kind.clone(),
            bytes(r.size_bytes),
            format!("{:?}", r.outcome).to_lowercase(),
            if r.pinned { "yes".into() } else { "".into() },
            opt_time(r.verified_at),
        ]);
    }
    t.print();
    Ok(())
}

fn bundle_manifest(ctx: &Ctx, r: &SnapshotRecord) -> Option<export::Manifest> {
    export_formats_of(&r.source_kind)?;
    let m = ctx.db_manager(false).ok()?;
    let store = m.store();
    if let Some(local) = store.local() {
        let path = local.object_path(&r.blob_key).ok()?;
        return export::read_bundle_manifest(&path, CheckLevel::Header).ok();
    }
    // A store that keeps no plain file (a dedup store): the bundle is fetched first.
    let dir = tempfile_dir()?;
    let path = dir.join("bundle.zip");
    store.get_to_file(&r.blob_key, &path).ok()?;
    let manifest = export::read_bundle_manifest(&path, CheckLevel::Header).ok();
    let _ = std::fs::remove_dir_all(&dir);
    manifest
}

/// A private temporary directory of this process (removed by its user).
fn tempfile_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "snapshot-cli-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .ok()?;
    Some(dir)
}

/// `pin` / `unpin`: whether retention may remove the snapshot.
pub(crate) fn pin(ctx: &Ctx, id: &str, pinned: bool) -> CliResult {
    let m = ctx.db_manager(false)?;
    m.pin(id, pinned)?;
    if ctx.json {
        return output::json(&json!({ "snapshot_id": id, "pinned": pinned }));
    }
    println!("{} {id}", if pinned { "pinned" } else { "unpinned" });
    Ok(())
}

pub(crate) fn show(ctx: &Ctx, id: &str) -> CliResult {
    let m = ctx.db_manager(false)?;
    let r = m.get(id)?;
    let manifest = bundle_manifest(ctx, &r);
    if ctx.json {
        let mut v = serde_json::to_value(&r)
            .map_err(|e| CliError::new(ExitStatus::Error, "json", e.to_string()))?;
        if let Some(mf) = &manifest {
            v["bundle"] = serde_json::to_value(mf).unwrap_or_default();
        }
        return output::json(&v);
    }
    pairs(&[
        ("id", r.snapshot_id.clone()),
        ("time", time(r.datetime)),
        ("description", r.description.clone()),
        ("operation", r.operation_type.clone()),
        ("entity", entity(&r)),
        ("type", r.source_kind.clone()),
        ("source", r.source_path.clone()),
        ("file", r.file_path.clone()),
        (
            "size",
            format!("{} ({} bytes)", bytes(r.size_bytes), r.size_bytes),
        ),
        ("checksum", r.checksum.clone()),
        ("outcome", format!("{:?}", r.outcome).to_lowercase()),
        ("pinned", r.pinned.to_string()),
        ("verified", opt_time(r.verified_at)),
        (
            "restore of",
            r.restore_of.clone().unwrap_or_else(|| "-".into()),
        ),
        ("host", r.host.clone()),
        ("library", r.library_version.clone()),
    ]);
    if let Some(mf) = manifest {
        println!();
        let mut t = Table::new(&["TABLE", "ROWS", "FILES"]);
        for tb in &mf.tables {
            t.row(vec![
                tb.table.clone(),
                tb.rows.to_string(),
                tb.files
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
        t.print();
    }
    Ok(())
}

pub(crate) fn verify(ctx: &Ctx, a: VerifyArgs) -> CliResult {
    let base = ctx.db_manager(false)?;
    let records = match &a.id {
        Some(id) => vec![base.get(id)?],
        None => {
            let mut r = base.list(&ListFilter::new())?;
            r.reverse();
            r
        }
    };
    let level = if a.full {
        CheckLevel::Full
    } else {
        CheckLevel::Quick
    };
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for r in &records {
        let spin = ctx.spinner(format!("verifying {}", r.snapshot_id));
        let result = ctx
            .manager_for(r)
            .and_then(|m| m.verify_with(&r.snapshot_id, level));
        if let Some(s) = spin {
            s.finish_and_clear();
        }
        match result {
            Ok(v) => passed.push(v),
            Err(e) => failed.push((r.snapshot_id.clone(), e)),
        }
    }
    if passed.iter().any(|p| !p.recorded) {
        eprintln!(
            "warning: the store cannot be written: the verifications were not recorded \
             (verified_at unchanged); the snapshots that passed are sound"
        );
    }
    if ctx.json {
        output::json(&json!({
            "passed": passed.iter().map(|p| json!({
                "snapshot_id": p.snapshot_id, "bytes": p.bytes, "checksum": p.checksum,
                "engine_checked": p.engine_checked, "recorded": p.recorded,
            })).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(id, e)| json!({
                "snapshot_id": id, "error": e.to_string(),
                "kind": CliError::from(clone_error(e)).kind,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for p in &passed {
            println!(
                "ok      {}  ({}, {}{})",
                p.snapshot_id,
                bytes(p.bytes),
                short_sum(&p.checksum),
                if p.engine_checked {
                    ", engine check passed"
                } else {
                    ""
                }
            );
        }
        for (id, e) in &failed {
            println!("FAILED  {id}: {e}");
        }
        if records.is_empty() {
            println!("no snapshots to verify");
        }
    }
    match failed.into_iter().next() {
        None => Ok(()),
        Some((_, e)) if a.id.is_some() => Err(CliError::from(e).after_report()),
        Some(_) => Err(CliError::new(
            ExitStatus::VerifyFailed,
            "verify_failed",
            "some snapshots failed verification",
        )
        .after_report()),
    }
}

/// The parts of an error the exit-code mapping looks at (errors are not `Clone`).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotFound { id } => Error::NotFound { id: id.clone() },
        Error::ChecksumMismatch {
            key,
            expected,
            actual,
        } => Error::ChecksumMismatch {
            key: key.clone(),
            expected: expected.clone(),
            actual: actual.clone(),
        },
        Error::BlobMissing { key } => Error::BlobMissing { key: key.clone() },
        Error::NotADatabase {
            engine,
            path,
            detail,
        } => Error::NotADatabase {
            engine,
            path: path.clone(),
            detail: detail.clone(),
        },
        other => invalid("error", other.to_string()),
    }
}

/// `keygen`: a new identity in a new private file.
pub(crate) fn keygen(out: &Path, json: bool) -> CliResult {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (_, text) = snapshot::store::EncryptionKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|source| Error::Io {
            op: "create the key file",
            path: out.to_path_buf(),
            source,
        })?;
    let body = format!(
        "# snapshot store key (age identity), created {}\n# without this key the encrypted \
         snapshots cannot be read: keep a copy apart from the store\n{text}\n",
        Utc::now().to_rfc3339()
    );
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| Error::Io {
            op: "write the key file",
            path: out.to_path_buf(),
            source,
        })?;
    if json {
        return output::json(&json!({ "key_file": out }));
    }
    println!(
        "wrote a new key to {}\nuse it with [store] encrypt = true and key_file = \"{}\" (or \
         SNAPSHOT_KEY_FILE); keep a copy apart from the store",
        out.display(),
        out.display()
    );
    Ok(())
}

/// `restore --latest --if-missing`: the newest good snapshot put in place of an absent
/// database; nothing when it is there.
fn restore_if_missing(ctx: &Ctx) -> CliResult {
    let m = ctx.db_manager(false)?;
    let db = ctx.database_display()?;
    let outcome = m.restore_latest_if_missing()?;
    let (state, id, damaged) = match &outcome {
        IfMissing::Present => ("present", None, Vec::new()),
        IfMissing::NoSnapshot { damaged } => ("no_snapshot", None, damaged.clone()),
        IfMissing::Restored { report, damaged } => (
            "restored",
            Some(report.snapshot_id.clone()),
            damaged.clone(),
        ),
        _ => ("unknown", None, Vec::new()),
    };
    if ctx.json {
        return output::json(&json!({
            "database": db, "outcome": state, "snapshot_id": id, "damaged_passed_over": damaged,
        }));
    }
    match (state, id) {
        ("present", _) => println!("{db} is there: nothing to restore"),
        ("restored", Some(id)) => println!("restored {id} to {db}"),
        _ => println!("{db} is absent and no snapshot of it could be restored: nothing done"),
    }
    for d in damaged {
        eprintln!("warning: snapshot {d} is damaged and was passed over");
    }
    Ok(())
}

pub(crate) fn restore(ctx: &Ctx, a: RestoreArgs) -> CliResult {
    if a.if_missing {
        return restore_if_missing(ctx);
    }
    let base = ctx.db_manager(false)?;
    let id = match &a.id {
        Some(id) => id.clone(),
        None => {
            let kind = ctx.configured_source(false, None)?.kind();
            base.list(&ListFilter::new())?
                .into_iter()
                .find(|r| r.source_kind == kind)
                .map(|r| r.snapshot_id)
                .ok_or_else(|| snapshot::Error::NotFound {
                    id: format!("(the latest {kind} snapshot)"),
                })?
        }
    };
    let record = base.get(&id)?;
    if export_formats_of(&record.source_kind).is_some() {
        let Some(dir) = &a.to else {
            return Err(usage(
                "bundle_needs_directory",
                format!(
                    "{} is an export bundle ({}): restore it to a directory with --to DIR",
                    record.snapshot_id, record.source_kind
                ),
            ));
        };
        return restore_bundle(ctx, &record, dir, a.dry_run);
    }
    let m = ctx.manager_for(&record)?;
    let mut options = RestoreOptions::new()
        .dry_run(a.dry_run)
        .paths(a.paths.iter().cloned());
    match &a.to {
        Some(to) => options = options.target(to),
        None => {
            let db = ctx.database_display()?;
            if !a.dry_run {
                let question = if !a.paths.is_empty() {
                    format!(
                        "Put back the files of {} matching {} into {db}? (a safety snapshot of \
                         the present is taken first)",
                        record.snapshot_id,
                        a.paths.join(", ")
                    )
                } else if ctx.config.server.is_some() {
                    format!(
                        "Replace every table of {} in {db} with its rows in the snapshot? (one \
                         transaction, after a safety snapshot of the present)",
                        record.snapshot_id
                    )
                } else {
                    format!(
                        "Restore {} over {db}? (a safety snapshot of the present is taken first)",
                        record.snapshot_id
                    )
                };
                ctx.confirm(&question, a.yes)?;
            }
        }
    }
    let m = if a.to.is_none() {
        ctx.db_manager(false)?
    } else {
        m
    };
    let spin = ctx.spinner(format!("restoring {}", record.snapshot_id));
    let report = m.restore_with(&record.snapshot_id, &options);
    if let Some(s) = spin {
        s.finish_and_clear();
    }
    let report = report?;
    if ctx.json {
        return output::json(&json!({
            "snapshot_id": report.snapshot_id,
            "target": report.target,
            "dry_run": report.dry_run,
            "safety_snapshot": report.safety_snapshot,
            "bytes": report.bytes,
            "steps": report.steps,
        }));
    }
    for s in &report.steps {
        println!("  {s}");
    }
    if report.dry_run {
        println!("dry run: nothing was changed");
    } else {
        println!(
            "restored {} to {}",
            report.snapshot_id,
            report.target.display()
        );
        if let Some(s) = &report.safety_snapshot {
            println!("undo with: snapshot restore {s}");
        }
    }
    Ok(())
}

fn restore_bundle(ctx: &Ctx, record: &SnapshotRecord, dir: &Path, dry_run: bool) -> CliResult {
    let non_empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty {
        return Err(usage(
            "target_exists",
            format!(
                "{} is not empty: restore a bundle into a new directory",
                dir.display()
            ),
        ));
    }
    let created = !dir.exists();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| invalid("target", format!("cannot create {}: {e}", dir.display())))?;
    let m = ctx.manager_for(record)?;
    let zip = dir.join(format!(".snapshot-bundle-{}.zip", record.snapshot_id));
    let result = m
        .restore_with(
            &record.snapshot_id,
            &RestoreOptions::new()
                .target(&zip)
                .dry_run(dry_run)
                .check(CheckLevel::Full),
        )
        .and_then(|report| {
            if dry_run {
                return Ok((report, None));
            }
            let manifest = export::unpack(&zip, dir);
            let _ = std::fs::remove_file(&zip);
            manifest.map(|mf| (report, Some(mf)))
        });
    if dry_run && created {
        let _ = std::fs::remove_dir(dir);
    }
    let (report, manifest) = result?;
    if ctx.json {
        return output::json(&json!({
            "snapshot_id": report.snapshot_id,
            "target": dir,
            "dry_run": dry_run,
            "bundle": manifest,
        }));
    }
    // The staged zip is an implementation detail: show the verification only.
    for s in report.steps.iter().filter(|s| s.starts_with("verified")) {
        println!("  {s}");
    }
    match manifest {
        Some(mf) => {
            println!("unpacked {} into {}", record.snapshot_id, dir.display());
            for t in &mf.tables {
                println!(
                    "  {}: {} rows ({})",
                    t.table,
                    t.rows,
                    t.files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        None => println!("dry run: nothing was written"),
    }
    Ok(())
}

fn prune_policy(ctx: &Ctx, a: &PruneArgs) -> Result<RetentionPolicy, CliError> {
    let any = a.keep_last.is_some()
        || a.keep_within.is_some()
        || a.keep_hourly.is_some()
        || a.keep_daily.is_some()
        || a.keep_weekly.is_some()
        || a.keep_monthly.is_some()
        || a.keep_yearly.is_some()
        || a.max_size.is_some();
    if !any {
        return Ok(ctx.config.retention_policy()?);
    }
    let mut p = RetentionPolicy::new();
    if let Some(n) = a.keep_last {
        p = p.keep_last(n);
    }
    if let Some(d) = &a.keep_within {
        p = p.keep_within(HumanDuration::parse(d)?.to_chrono());
    }
    if let Some(n) = a.keep_hourly {
        p = p.keep_hourly(n);
    }
    if let Some(n) = a.keep_daily {
        p = p.keep_daily(n);
    }
    if let Some(n) = a.keep_weekly {
        p = p.keep_weekly(n);
    }
    if let Some(n) = a.keep_monthly {
        p = p.keep_monthly(n);
    }
    if let Some(n) = a.keep_yearly {
        p = p.keep_yearly(n);
    }
    if let Some(s) = &a.max_size {
        p = p.max_total_bytes(ByteSize::parse(s)?.0);
    }
    if let Ok(r) = ctx.config.retention_policy() {
        p = p.safety_grace(r.grace()).keep_safety(r.safety_kept());
    }
    p.validate()?;
    Ok(p)
}

pub(crate) fn prune(ctx: &Ctx, a: PruneArgs) -> CliResult {
    let policy = prune_policy(ctx, &a)?;
    let m = ctx.db_manager(false)?;
    let records = m.list(&ListFilter::new())?;
    let plan = policy.apply(&records, Utc::now())?;
    let drops: Vec<_> = plan.dropped().collect();
    let freed: u64 = records
        .iter()
        .filter(|r| drops.iter().any(|d| d.snapshot_id == r.snapshot_id))
        .fold(0u64, |total, r| total.saturating_add(r.size_bytes));
    if !ctx.json {
        println!("policy: {policy}");
        let mut t = Table::new(&["ID", "ACTION", "WHY"]);
        for d in &plan.decisions {
            t.row(vec![
                d.snapshot_id.clone(),
                if d.keep { "keep".into() } else { "DROP".into() },
                d.reasons
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
        if !t.is_empty() {
            t.print();
        }
    }
    if a.dry_run || drops.is_empty() {
        if ctx.json {
            return output::json(&json!({
                "dry_run": a.dry_run, "policy": policy.to_string(), "plan": plan,
                "deleted": [], "freed_bytes": 0, "would_free_bytes": freed,
            }));
        }
        if drops.is_empty() {
            println!("nothing to prune");
        } else {
            println!(
                "dry run: would delete {} snapshot(s), {}",
                drops.len(),
                bytes(freed)
            );
        }
        return Ok(());
    }
    ctx.confirm(
        &format!("Delete {} snapshot(s) ({})?", drops.len(), bytes(freed)),
        a.yes,
    )?;
    let report = m.prune_with(&policy)?;
    if ctx.json {
        return output::json(&json!({
            "dry_run": false, "policy": policy.to_string(), "plan": report.plan,
            "deleted": report.deleted, "freed_bytes": report.freed_bytes,
        }));
    }
    println!(
        "deleted {} snapshot(s), freed {}",
        report.deleted.len(),
        bytes(report.freed_bytes)
    );
    Ok(())
}

pub(crate) fn export(ctx: &Ctx, a: ExportArgs) -> CliResult {
    let formats = formats_of(a.format);
    if formats.is_empty() {
        return Err(usage("invalid_input", "--format must be csv, json or all"));
    }
    ctx.refuse_exports_of_servers("export")?;
    let db = ctx.config.database_path()?;
    let mut src = ctx
        .export_source(db, ctx.config.engine, &formats)
        .map_err(|e| usage("invalid_input", e.to_string()))?;
    if let Some(t) = a
        .tables
        .clone()
        .or_else(|| ctx.config.export_tables.clone())
    {
        src = src.tables(t);
    }
    let spin = ctx.spinner(format!("exporting {}", db.display()));
    if let Some(s) = &spin {
        let s = s.clone();
        src = src.on_progress(std::sync::Arc::new(move |p: &export::ExportProgress| {
            s.set_message(format!(
                "exported {} rows of {} as {}",
                p.rows, p.table, p.format
            ));
        }));
    }
    let manifest = src.write_dir(&a.out);
    if let Some(s) = spin {
        s.finish_and_clear();
    }
    let manifest = manifest?;
    if ctx.json {
        return output::json(&manifest);
    }
    let mut t = Table::new(&["TABLE", "ROWS", "FILES"]);
    for tb in &manifest.tables {
        t.row(vec![
            tb.table.clone(),
            tb.rows.to_string(),
            tb.files
                .iter()
                .map(|f| format!("{} ({})", f.name, bytes(f.bytes)))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    t.print();
    println!(
        "exported {} table(s), {} rows, as {} into {}",
        manifest.tables.len(),
        manifest.rows(),
        manifest
            .formats
            .iter()
            .map(ExportFormat::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        a.out.display()
    );
    Ok(())
}

pub(crate) fn doctor(ctx: &Ctx, a: DoctorArgs) -> CliResult {
    let min_age = HumanDuration::parse(&a.min_age)?.0;
    let m = ctx.db_manager(false)?;
    let report = m.doctor(&DoctorOptions {
        repair: a.repair,
        min_age,
    })?;
    if ctx.json {
        output::json(&json!({
            "clean": report.is_clean(),
            "repaired": report.repaired,
            "staging_leftovers": report.staging_leftovers,
            "orphan_objects": report.orphan_objects,
            "records_without_blob": report.records_without_blob,
            "blobs_shared_with_live": report.blobs_shared_with_live,
            "index_problem": report.index_problem,
            "unlisted_records": report.unlisted_records,
            "records_without_sidecar": report.records_without_sidecar,
            "rebuilt_records": report.rebuilt_records,
            "store_findings": report.store_findings,
        }))?;
    } else {
        if report.is_clean() {
            println!("store is healthy");
        }
        for p in &report.staging_leftovers {
            println!("staging leftover: {}", p.display());
        }
        for k in &report.orphan_objects {
            println!("orphan object:    {k}");
        }
        for id in &report.records_without_blob {
            println!("record without blob: {id}");
        }
        for id in &report.blobs_shared_with_live {
            println!("blob is the live file (restore interrupted before its swap): {id}");
        }
        if let Some(p) = &report.index_problem {
            println!("index problem: {p}");
        }
        for id in &report.unlisted_records {
            println!("snapshot not in the index (its sidecar and blob are there): {id}");
        }
        for id in &report.records_without_sidecar {
            println!("listed snapshot without its sidecar: {id}");
        }
        for f in &report.store_findings {
            println!("store: {f}");
        }
        if let Some(n) = report.rebuilt_records {
            println!("rebuilt the index from sidecars: {n} record(s)");
        }
        if report.repaired && !report.is_clean() {
            println!("repaired");
        } else if !report.is_clean() {
            println!("run `snapshot doctor --repair` to repair");
        }
    }
    if report.is_clean() || report.repaired {
        Ok(())
    } else {
        Err(CliError::new(
            ExitStatus::VerifyFailed,
            "doctor_found_problems",
            "doctor found problems (run with --repair)",
        )
        .after_report())
    }
}

pub(crate) fn config(ctx: &Ctx) -> CliResult {
    let c = &ctx.config;
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string())
    };
    let retention = c
        .retention_policy()
        .map(|p| p.to_string())
        .unwrap_or_else(|e| e.to_string());
    let jobs: Vec<String> = c
        .jobs
        .iter()
        .map(|j| {
            format!(
                "{} = {} {}{}{}",
                j.name,
                j.cron,
                j.kind.name(),
                j.min_interval
                    .map_or(String::new(), |d| format!(", min interval {d}")),
                j.retention
                    .as_ref()
                    .and_then(|r| r.policy().ok())
                    .map_or(String::new(), |p| format!(", keeps {p}"))
            )
        })
        .collect();
    let mut rows: Vec<(&str, String)> = vec![
        ("database.path", path(&c.database)),
        ("database.engine", c.engine.to_string()),
    ];
    if let Some(pg) = &c.server {
        // The settings with the password replaced by `***`; never the settings themselves.
        rows.push(("database.url", pg.describe()));
        rows.push((
            "database.schema",
            pg.schema.clone().unwrap_or_else(|| "public".into()),
        ));
        rows.push((
            "database.tables",
            pg.tables
                .as_ref()
                .map_or_else(|| "(every table of the schema)".into(), |t| t.join(", ")),
        ));
    }
    rows.extend(vec![
        ("store.dir", path(&c.store)),
        (
            "store.endpoint",
            c.store_endpoint
                .clone()
                .unwrap_or_else(|| "(AWS_ENDPOINT_URL, else AWS)".into()),
        ),
        (
            "store.encrypt",
            match (&c.store_encrypt, &c.store_key_file) {
                (false, _) => "no".into(),
                (true, Some(f)) => format!("yes, key file {}", f.display()),
                (true, None) => "yes, key from the environment".into(),
            },
        ),
        ("retention", retention),
        (
            "exports.tables",
            c.export_tables
                .as_ref()
                .map_or_else(|| "(every table)".into(), |t| t.join(", ")),
        ),
        (
            "status.table",
            c.status_table.clone().unwrap_or_else(|| "(none)".into()),
        ),
        (
            "status.order_by",
            c.status_order_by.clone().unwrap_or_else(|| {
                if c.server.is_some() {
                    "the primary key (else physical order)".into()
                } else {
                    "rowid".into()
                }
            }),
        ),
        ("schedule.log", path(&c.schedule_log)),
        (
            "schedule.timezone",
            format!("{:?}", c.timezone).to_lowercase(),
        ),
        (
            "schedule.jobs",
            if jobs.is_empty() {
                "(none)".into()
            } else {
                jobs.join("; ")
            },
        ),
        (
            "entities",
            if c.entities.is_empty() {
                "(none: undo looks in the table named like the entity, by primary key)".into()
            } else {
                c.entities
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
    ]);
    if ctx.json {
        let mut map = serde_json::Map::new();
        for (k, v) in &rows {
            map.insert(
                k.to_string(),
                json!({ "value": v, "origin": c.origin(k).to_string() }),
            );
        }
        return output::json(&json!({ "file": c.file, "values": map }));
    }
    println!("config file: {}", path(&c.file));
    let mut t = Table::new(&["KEY", "VALUE", "FROM"]);
    for (k, v) in rows {
        t.row(vec![k.to_string(), v, c.origin(k).to_string()]);
    }
    t.print();
    Ok(())
}

pub(crate) use super::service::status;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_accepts_dates_times_and_ages() -> Result<(), CliError> {
        let now = Utc
            .with_ymd_and_hms(2026, 3, 2, 12, 0, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(
            parse_since("2026-03-01", now)?,
            now - chrono::Duration::hours(36)
        );
        assert_eq!(
            parse_since("2026-03-02 11:30", now)?,
            now - chrono::Duration::minutes(30)
        );
        assert_eq!(parse_since("2h", now)?, now - chrono::Duration::hours(2));
        assert_eq!(
            parse_since("2026-03-02T10:00:00+01:00", now)?,
            now - chrono::Duration::hours(3)
        );
        assert!(parse_since("yesterday", now).is_err());
        Ok(())
    }
}
