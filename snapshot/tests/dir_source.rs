//! Directories of files (`DirectorySource`) on real trees: round trips (whole, by glob,
//! elsewhere) keeping content, modes, times and links; the summary's fields and the report;
//! files rewritten while archived; odd names; special files; the typed errors of bad roots.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use snapshot::engine::dir::{ArchiveFormat, DirectorySource, extract};
use snapshot::{
    Environment, Error, ListFilter, LocalStore, PathChange, RestoreOptions, SnapshotManager,
    SnapshotRecord, SnapshotRequest,
};

/// What a tree holds, entry by entry: kind, content (or link target), mode, mtime (s).
type Shape = BTreeMap<PathBuf, (String, Vec<u8>, u32, i64)>;

fn shape(root: &Path) -> Result<Shape> {
    let mut out = Shape::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let rel = rel.join(e.file_name());
            let p = root.join(&rel);
            let m = fs::symlink_metadata(&p)?;
            let (kind, content) = if m.file_type().is_symlink() {
                ("link", fs::read_link(&p)?.as_os_str().as_bytes().to_vec())
            } else if m.is_dir() {
                stack.push(rel.clone());
                ("dir", Vec::new())
            } else if m.is_file() {
                ("file", fs::read(&p)?)
            } else {
                ("special", Vec::new()) // a FIFO: reading it would wait for a writer
            };
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            let mode = if kind == "link" { 0 } else { m.mode() & 0o7777 };
            out.insert(rel, (kind.into(), content, mode, mtime));
        }
    }
    Ok(out)
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    m: SnapshotManager,
}

impl Fixture {
    /// A `data/` tree of CSV and JSON files, a subdirectory, a link, odd modes and times.
    fn new(format: ArchiveFormat) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("data");
        fs::create_dir_all(root.join("csv"))?;
        fs::create_dir_all(root.join("json/nested"))?;
        fs::write(
            root.join("csv/analytics_summary.csv"),
            "day,views\n1,10\n2,20\n",
        )?;
        fs::write(root.join("csv/monetization.csv"), "day,usd\n1,1.5\n")?;
        fs::write(root.join("json/business_ideas.json"), r#"[{"idea": "x"}]"#)?;
        fs::write(root.join("json/nested/deep.json"), r#"{"a": 1}"#)?;
        fs::write(root.join("notes.txt"), "free text")?;
        fs::set_permissions(root.join("notes.txt"), fs::Permissions::from_mode(0o640))?;
        fs::File::options()
            .write(true)
            .open(root.join("csv/monetization.csv"))?
            .set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000))?;
        symlink("csv/analytics_summary.csv", root.join("latest.csv"))?;
        let m = manager(&root, dir.path(), format)?;
        Ok(Fixture { dir, root, m })
    }

    fn take(&self, op: &str) -> Result<SnapshotRecord> {
        self.m
            .snapshot(SnapshotRequest::new(op))?
            .into_record()
            .context("the manager is enabled")
    }

    fn blob(&self, r: &SnapshotRecord) -> PathBuf {
        self.dir.path().join("backups").join(&r.blob_key)
    }
}

fn manager(root: &Path, base: &Path, format: ArchiveFormat) -> Result<SnapshotManager> {
    Ok(SnapshotManager::builder()
        .source(DirectorySource::new(root).format(format))
        .store(LocalStore::open(base.join("backups"))?)
        .environment(Environment::persistent())
        .build()?)
}

#[test]
fn a_tree_round_trips_whole_with_content_modes_times_and_links() -> Result<()> {
    for format in [ArchiveFormat::Zip, ArchiveFormat::TarZstd] {
        let f = Fixture::new(format)?;
        let before = shape(&f.root)?;
        let snap = f.take("manual")?;
        ensure!(snap.source_kind == "dir", "{}", snap.source_kind);
        ensure!(
            snap.blob_key.ends_with(format.extension()),
            "{}",
            snap.blob_key
        );
        f.m.verify(&snap.snapshot_id)?;
        // Damage the tree every way: delete, modify, add, relink, rechmod.
        fs::remove_file(f.root.join("csv/analytics_summary.csv"))?;
        fs::write(f.root.join("json/business_ideas.json"), "[]")?;
        fs::write(f.root.join("stray.tmp"), "new")?;
        fs::remove_dir_all(f.root.join("json/nested"))?;
        fs::set_permissions(f.root.join("notes.txt"), fs::Permissions::from_mode(0o600))?;
        let report = f.m.restore(&snap.snapshot_id)?;
        ensure!(report.safety_snapshot.is_some(), "{report:?}");
        let after = shape(&f.root)?;
        let differs: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, v)| format!("{}: {:?} vs {:?}", k.display(), v, after.get(k)))
            .collect();
        ensure!(
            after.len() == before.len() && differs.is_empty(),
            "{format:?}: the tree differs after restore: {differs:?}"
        );
        // The safety snapshot holds the damaged present.
        let safety =
            f.m.get(report.safety_snapshot.as_deref().unwrap_or_default())?;
        let s = DirectorySource::summary_of(&f.blob(&safety))?;
        ensure!(s.entries.iter().any(|e| e.path == "stray.tmp"), "{s:?}");
    }
    Ok(())
}

#[test]
fn the_summary_keeps_the_originals_fields_and_the_report_names_the_changes() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let first = f.take("weekly_local_backup")?;
    let s = DirectorySource::summary_of(&f.blob(&first))?;
    ensure!(s.status == "completed", "{}", s.status);
    ensure!(s.backup_type == "weekly_local_backup", "{}", s.backup_type);
    ensure!(
        s.files_exported.get("csv_files") == Some(&2),
        "{:?}",
        s.files_exported
    );
    ensure!(
        s.files_exported.get("json_files") == Some(&2),
        "{:?}",
        s.files_exported
    );
    ensure!(
        s.files_exported.get("other_files") == Some(&1),
        "{:?}",
        s.files_exported
    );
    ensure!(
        s.file_list["csv_files"].contains(&"analytics_summary.csv".to_string()),
        "{:?}",
        s.file_list
    );
    let link = s
        .entries
        .iter()
        .find(|e| e.path == "latest.csv")
        .context("the link")?;
    ensure!(link.kind == "symlink" && link.target.as_deref() == Some("csv/analytics_summary.csv"));
    let notes = s
        .entries
        .iter()
        .find(|e| e.path == "notes.txt")
        .context("notes")?;
    ensure!(notes.mode == 0o640 && notes.size == 9, "{notes:?}");
    ensure!(
        notes.blake3.as_deref()
            == Some(&*format!("blake3:{}", blake3::hash(b"free text").to_hex())),
        "{notes:?}"
    );
    ensure!(s.total_bytes > 0 && !s.backup_timestamp.is_empty());

    fs::remove_file(f.root.join("csv/monetization.csv"))?;
    fs::write(f.root.join("json/business_ideas.json"), "[]")?;
    fs::write(f.root.join("added.csv"), "a\n")?;
    let second = f.take("manual")?;
    let zip = fs::File::open(f.blob(&second))?;
    let mut z = zip::ZipArchive::new(zip)?;
    let mut html = String::new();
    std::io::Read::read_to_string(&mut z.by_name("report.html")?, &mut html)?;
    ensure!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    ensure!(
        !html.contains("<script") && !html.contains("http"),
        "external assets"
    );
    ensure!(html.contains("1 added, 1 removed, 1 changed"), "{html}");
    for line in [
        "added: added.csv",
        "removed: csv/monetization.csv",
        "changed: json/business_ideas.json",
    ] {
        ensure!(html.contains(line), "{line:?} missing from the report");
    }
    Ok(())
}

#[test]
fn some_files_come_back_by_glob_and_the_tree_elsewhere() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let before = shape(&f.root)?;
    let snap = f.take("manual")?;
    let blob = f.blob(&snap);
    let csv = globset::GlobSetBuilder::new()
        .add(globset::Glob::new("csv/*.csv")?)
        .build()?;
    let out = f.dir.path().join("only-csv");
    let done = extract(&blob, &out, Some(&csv))?;
    ensure!(done.files == 2, "{done:?}");
    ensure!(fs::read(out.join("csv/monetization.csv"))? == b"day,usd\n1,1.5\n");
    ensure!(!out.join("json").exists() && !out.join("notes.txt").exists());
    let elsewhere = f.dir.path().join("copy");
    extract(&blob, &elsewhere, None)?;
    ensure!(
        shape(&elsewhere)? == before,
        "the tree put elsewhere differs"
    );
    match extract(&blob, &elsewhere, None) {
        Err(Error::AlreadyExists { .. } | Error::Io { .. }) => {}
        other => bail!("extracting over existing files: {other:?}"),
    }
    Ok(())
}

#[test]
fn files_rewritten_while_archived_are_each_one_complete_version() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let stop = Arc::new(AtomicBool::new(false));
    let root = f.root.clone();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u64> {
            let mut v = 0u64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                let byte = b'a' + (v % 26) as u8;
                // Rewritten in place (a reader can see a torn file) and growing.
                fs::write(
                    root.join("csv/hot.csv"),
                    vec![byte; 20_000 + (v % 7) as usize * 1000],
                )?;
                fs::write(root.join("json/hot.json"), vec![byte; 3_000])?;
            }
            Ok(v)
        })
    };
    let mut snaps = Vec::new();
    for _ in 0..6 {
        snaps.push(f.take("manual")?);
    }
    stop.store(true, Ordering::Relaxed);
    let versions = writer.join().expect("writer")?;
    ensure!(versions > 6, "the writer barely ran ({versions})");
    for (i, s) in snaps.iter().enumerate() {
        let out = f.dir.path().join(format!("x{i}"));
        extract(&f.blob(s), &out, None)?;
        for name in ["csv/hot.csv", "json/hot.json"] {
            let Ok(data) = fs::read(out.join(name)) else {
                continue; // not yet written when that snapshot walked the tree
            };
            ensure!(
                !data.is_empty() && data.iter().all(|&b| b == data[0]),
                "snapshot {i}: {name} mixes two versions: {} bytes, first {:?} last {:?}, {:?}",
                data.len(),
                data[0] as char,
                data[data.len() - 1] as char,
                data.iter().position(|&b| b != data[0])
            );
        }
    }
    Ok(())
}

#[test]
fn odd_names_special_files_and_link_loops_are_kept_or_listed() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let odd = std::ffi::OsStr::from_bytes(b"bad\xffname\n.csv");
    fs::write(f.root.join(odd), "x\n")?;
    fs::write(f.root.join("100% sure.json"), "{}")?;
    symlink("loop-b", f.root.join("loop-a"))?;
    symlink("loop-a", f.root.join("loop-b"))?;
    symlink("../../etc/passwd", f.root.join("outside"))?;
    let fifo = f.root.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    ensure!(made.success(), "mkfifo");
    let before = shape(&f.root)?;
    let snap = f.take("manual")?;
    let s = DirectorySource::summary_of(&f.blob(&snap))?;
    ensure!(s.skipped == ["pipe"], "{:?}", s.skipped);
    let odd_entry = s
        .entries
        .iter()
        .find(|e| e.path_bytes.is_some())
        .context("the non-UTF-8 name")?;
    ensure!(odd_entry.rel_path().as_os_str().as_bytes() == b"bad\xffname\n.csv");
    let out = f.dir.path().join("copy");
    extract(&f.blob(&snap), &out, None)?;
    let mut expected = before;
    expected.remove(Path::new("pipe"));
    ensure!(
        shape(&out)? == expected,
        "odd names, links and loops did not round trip"
    );
    ensure!(
        fs::read_link(out.join("outside"))? == Path::new("../../etc/passwd"),
        "a link is recorded, never followed"
    );
    Ok(())
}

#[test]
fn bad_roots_are_typed_errors_and_leave_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = manager(&dir.path().join("nope"), dir.path(), ArchiveFormat::Zip)?;
    match missing.snapshot(SnapshotRequest::new("manual")) {
        Err(Error::SourceMissing { kind, path }) => {
            ensure!(kind == "dir" && path.ends_with("nope"));
        }
        other => bail!("expected SourceMissing, got {other:?}"),
    }
    let file = dir.path().join("a-file");
    fs::write(&file, "x")?;
    let not_dir = manager(&file, dir.path(), ArchiveFormat::Zip)?;
    match not_dir.snapshot(SnapshotRequest::new("manual")) {
        Err(Error::InvalidInput { reason, .. }) => ensure!(reason.contains("not a directory")),
        other => bail!("expected InvalidInput, got {other:?}"),
    }
    ensure!(missing.list(&ListFilter::new())?.is_empty());
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("backups"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n != "snapshot_metadata.json")
        .collect();
    ensure!(leftovers.is_empty(), "{leftovers:?}");
    match DirectorySource::new(dir.path()).include(["[unclosed"]) {
        Err(Error::InvalidInput { field, .. }) => ensure!(field == "glob"),
        other => bail!("expected a glob error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn include_and_exclude_globs_choose_the_files() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let only = SnapshotManager::builder()
        .source(
            DirectorySource::new(&f.root)
                .include(["**/*.csv"])?
                .exclude(["csv/monetization.csv"])?,
        )
        .store(LocalStore::open(f.dir.path().join("other"))?)
        .environment(Environment::persistent())
        .build()?;
    let r = only
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("taken")?;
    let s = DirectorySource::summary_of(&f.dir.path().join("other").join(&r.blob_key))?;
    let files: Vec<&str> = s
        .entries
        .iter()
        .filter(|e| e.kind == "file")
        .map(|e| e.path.as_str())
        .collect();
    ensure!(files == ["csv/analytics_summary.csv"], "{files:?}");
    Ok(())
}

#[test]
fn some_files_go_back_into_the_live_directory_and_the_rest_stays() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::TarZstd)?;
    let snap = f.take("manual")?;
    fs::write(f.root.join("csv/analytics_summary.csv"), "ruined")?;
    fs::remove_file(f.root.join("csv/monetization.csv"))?;
    fs::write(f.root.join("json/business_ideas.json"), "[\"kept\"]")?;
    fs::write(f.root.join("csv/new.csv"), "new since")?;
    let report = f.m.restore_with(
        &snap.snapshot_id,
        &RestoreOptions::new().paths(["csv/*.csv"]),
    )?;
    ensure!(report.safety_snapshot.is_some(), "{report:?}");
    ensure!(fs::read(f.root.join("csv/analytics_summary.csv"))? == b"day,views\n1,10\n2,20\n");
    ensure!(fs::read(f.root.join("csv/monetization.csv"))? == b"day,usd\n1,1.5\n");
    let kept = fs::metadata(f.root.join("csv/monetization.csv"))?;
    ensure!(kept.mtime() == 1_700_000_000, "the time comes back too");
    ensure!(
        fs::read(f.root.join("json/business_ideas.json"))? == b"[\"kept\"]",
        "files the glob does not choose stay as they are"
    );
    ensure!(
        fs::read(f.root.join("csv/new.csv"))? == b"new since",
        "files the snapshot lacks stay"
    );
    let leftovers: Vec<_> = fs::read_dir(f.dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    ensure!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    // A glob that chooses nothing changes nothing and takes no safety snapshot.
    let before = f.m.list(&ListFilter::new())?.len();
    match f.m.restore_with(
        &snap.snapshot_id,
        &RestoreOptions::new().paths(["nothing/*"]),
    ) {
        Err(Error::InvalidInput { field, .. }) => ensure!(field == "path"),
        other => bail!("expected InvalidInput, got {other:?}"),
    }
    ensure!(f.m.list(&ListFilter::new())?.len() == before);
    // Elsewhere, some files only.
    let out = f.dir.path().join("csv-only");
    f.m.restore_with(
        &snap.snapshot_id,
        &RestoreOptions::new().target(&out).paths(["csv"]),
    )?;
    ensure!(out.join("csv/monetization.csv").is_file() && !out.join("notes.txt").exists());
    Ok(())
}

#[test]
fn the_compare_names_files_added_removed_and_changed_with_sizes() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let snap = f.take("manual")?;
    ensure!(f.m.compare_paths(&snap.snapshot_id)?.is_identical());
    fs::remove_file(f.root.join("notes.txt"))?;
    fs::write(f.root.join("added.json"), "{}")?;
    // Same size, other content: found by its hash.
    fs::write(f.root.join("csv/monetization.csv"), "day,usd\n1,9.5\n")?;
    fs::remove_file(f.root.join("latest.csv"))?;
    symlink("csv/monetization.csv", f.root.join("latest.csv"))?;
    let d = f.m.compare_paths(&snap.snapshot_id)?;
    let names = |v: &[PathChange]| v.iter().map(|c| c.path.clone()).collect::<Vec<_>>();
    ensure!(names(&d.added) == ["added.json"], "{d:?}");
    ensure!(names(&d.removed) == ["notes.txt"], "{d:?}");
    ensure!(
        names(&d.changed) == ["csv/monetization.csv", "latest.csv"],
        "{d:?}"
    );
    ensure!(d.removed[0].snapshot_bytes == Some(9) && d.removed[0].live_bytes.is_none());
    ensure!(d.added[0].live_bytes == Some(2));
    ensure!(d.unchanged == 3, "{d:?}");
    Ok(())
}

#[test]
fn status_counts_files_and_bytes_by_type() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    let s = f.m.source().statistics(None, None)?;
    let groups: Vec<(String, u64, u64)> = s
        .files
        .iter()
        .map(|g| (g.group.clone(), g.files, g.bytes))
        .collect();
    ensure!(
        groups
            == [
                ("csv_files".to_string(), 2, 34),
                ("json_files".to_string(), 2, 23),
                ("other_files".to_string(), 1, 9),
            ],
        "{groups:?}"
    );
    ensure!(s.file_bytes == 66 && s.engine == "dir");
    Ok(())
}

/// The peak resident memory of this process so far, bytes.
fn peak_rss() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

#[test]
fn a_4_gib_file_and_100_000_small_files_are_streamed_in_bounded_memory() -> Result<()> {
    // A 4 GiB + 1 byte file (sparse: holes read as zeros), with data at both ends.
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("big");
    fs::create_dir_all(&root)?;
    let big = root.join("export.csv");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&big)?;
        f.write_all(b"head")?;
        f.set_len((4 << 30) + 1)?;
        f.seek(SeekFrom::End(-4))?;
        f.write_all(b"tail")?;
    }
    let before = peak_rss()?;
    let m = manager(&root, dir.path(), ArchiveFormat::Zip)?;
    let snap = m
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("taken")?;
    m.verify_with(&snap.snapshot_id, snapshot::CheckLevel::Full)?;
    let s = DirectorySource::summary_of(&dir.path().join("backups").join(&snap.blob_key))?;
    ensure!(s.entries.iter().any(|e| e.size == (4 << 30) + 1), "{s:?}");
    let grown = peak_rss()?.saturating_sub(before);
    ensure!(
        grown < 256 << 20,
        "4 GiB archived with {grown} more bytes resident"
    );
    // Restored elsewhere (zip64 read back), both ends intact.
    let out = dir.path().join("out");
    m.restore_with(&snap.snapshot_id, &RestoreOptions::new().target(&out))?;
    let back = out.join("export.csv");
    ensure!(fs::metadata(&back)?.len() == (4 << 30) + 1);
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = fs::File::open(&back)?;
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        ensure!(&b == b"head");
        f.seek(SeekFrom::End(-4))?;
        f.read_exact(&mut b)?;
        ensure!(&b == b"tail");
    }
    fs::remove_dir_all(&out)?;
    fs::remove_dir_all(&root)?;

    // 100 000 small files in 100 directories.
    let many = dir.path().join("many");
    for i in 0..100_000u32 {
        let d = many.join(format!("d{:02}", i % 100));
        if i < 100 {
            fs::create_dir_all(&d)?;
        }
        fs::write(d.join(format!("{i}.json")), format!("{{\"n\": {i}}}"))?;
    }
    let before = peak_rss()?;
    let m = manager(&many, dir.path(), ArchiveFormat::TarZstd)?;
    let snap = m
        .snapshot(SnapshotRequest::new("manual"))?
        .into_record()
        .context("taken")?;
    let grown = peak_rss()?.saturating_sub(before);
    ensure!(
        grown < 256 << 20,
        "100 000 files archived with {grown} more bytes resident"
    );
    let s = DirectorySource::summary_of(&dir.path().join("backups").join(&snap.blob_key))?;
    ensure!(s.files_exported.get("json_files") == Some(&100_000));
    let out = dir.path().join("out");
    let done = extract(&dir.path().join("backups").join(&snap.blob_key), &out, None)?;
    ensure!(done.files == 100_000, "{done:?}");
    ensure!(fs::read(out.join("d42/99942.json"))? == b"{\"n\": 99942}");
    Ok(())
}

/// A zip archive written by hand: `members` as they are, `summary` as the summary.
fn crafted(path: &Path, members: &[(&str, &[u8])], summary: &serde_json::Value) -> Result<()> {
    let mut z = zip::ZipWriter::new(fs::File::create(path)?);
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in members {
        z.start_file(*name, opts)?;
        std::io::Write::write_all(&mut z, data)?;
    }
    z.start_file("backup_summary.json", opts)?;
    std::io::Write::write_all(&mut z, &serde_json::to_vec(summary)?)?;
    z.finish()?;
    Ok(())
}

fn summary_of_one(path: &str, member: &str, data: &[u8], hash_of: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "backup_timestamp": "2025-01-05T02:00:00", "backup_type": "weekly_local_backup",
        "files_exported": {"csv_files": 1}, "file_list": {"csv_files": [path]},
        "backup_size_mb": 0.0, "status": "completed", "root": "data",
        "total_bytes": data.len(),
        "entries": [{"path": path, "member": member, "kind": "file", "size": data.len(),
                     "mode": 420, "mtime_ns": 0,
                     "blake3": format!("blake3:{}", blake3::hash(hash_of).to_hex())}],
    })
}

#[test]
fn a_member_that_differs_from_its_summary_fails_the_full_check_and_the_restore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("bad.zip");
    let data = b"day,usd\n1,1.5\n";
    crafted(
        &image,
        &[("files/a.csv", data)],
        &summary_of_one("a.csv", "files/a.csv", data, b"other content"),
    )?;
    let source = snapshot::engine::source("dir", &dir.path().join("data"))?;
    source.check_image(&image, snapshot::CheckLevel::Quick)?;
    match source.check_image(&image, snapshot::CheckLevel::Full) {
        Err(Error::NotADatabase { detail, .. }) => {
            ensure!(detail.contains("files/a.csv"), "{detail}")
        }
        other => bail!("expected the full check to fail, got {other:?}"),
    }
    match extract(&image, &dir.path().join("out"), None) {
        Err(Error::NotADatabase { detail, .. }) => ensure!(detail.contains("a.csv"), "{detail}"),
        other => bail!("expected the extraction to refuse, got {other:?}"),
    }
    Ok(())
}

#[test]
fn a_path_that_would_leave_the_directory_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for evil in ["../evil.csv", "/tmp/evil.csv", "csv/../../evil.csv"] {
        let image = dir.path().join("evil.zip");
        let data = b"x";
        crafted(
            &image,
            &[("files/evil", data)],
            &summary_of_one(evil, "files/evil", data, data),
        )?;
        let out = dir.path().join("out");
        match extract(&image, &out, None) {
            Err(Error::InvalidInput { field, .. }) => ensure!(field == "path"),
            other => bail!("{evil}: expected a refusal, got {other:?}"),
        }
        ensure!(!dir.path().join("evil.csv").exists() && !Path::new("/tmp/evil.csv").exists());
        fs::remove_file(&image)?;
        let _ = fs::remove_dir_all(&out);
    }
    Ok(())
}

/// Whether `html` is well formed: every element closed in order (void elements aside), no
/// stray `<`.
fn well_formed(html: &str) -> Result<()> {
    const VOID: &[&str] = &["meta", "br", "hr", "img", "link", "input"];
    let mut open: Vec<String> = Vec::new();
    let mut rest = html.strip_prefix("<!DOCTYPE html>").context("no doctype")?;
    while let Some(i) = rest.find('<') {
        let end = rest[i..].find('>').context("an unclosed tag")? + i;
        let tag = &rest[i + 1..end];
        ensure!(!tag.contains('<'), "a stray '<' near {tag:?}");
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if let Some(closing) = tag.strip_prefix('/') {
            let closing = closing.trim();
            ensure!(
                open.pop().as_deref() == Some(closing),
                "</{closing}> closes something else"
            );
        } else if !VOID.contains(&name.as_str()) {
            open.push(name);
        }
        rest = &rest[end + 1..];
    }
    ensure!(open.is_empty(), "left open: {open:?}");
    Ok(())
}

#[test]
fn the_report_is_well_formed_html_even_for_odd_names() -> Result<()> {
    let f = Fixture::new(ArchiveFormat::Zip)?;
    f.take("manual")?;
    fs::write(f.root.join("<script>alert(1)<\\script>.csv"), "x")?;
    fs::write(f.root.join("a & b \"quoted\".json"), "{}")?;
    let snap = f.take("manual")?;
    let html = DirectorySource::report_of(&f.blob(&snap))?;
    well_formed(&html)?;
    ensure!(!html.contains("<script>"), "names are escaped");
    ensure!(
        html.contains("added: &lt;script&gt;alert(1)&lt;\\script&gt;.csv"),
        "{html}"
    );
    Ok(())
}
