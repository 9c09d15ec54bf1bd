//! Benchmark of directory snapshots against the tools people use: a tree of 10 000 files
//! (1 GiB of CSV and JSON text by default) archived by `zip -r -q` (deflate) and by
//! `tar -c | zstd -1`, then by a `DirectorySource` snapshot in each format (zip and
//! tar + zstd: walk, one complete version of each file, blake3 of each, the summary and the
//! report, the archive sealed durably and recorded); then restores, `unzip -q` against a
//! snapshot put back into a new directory (every file checked against its blake3). Prints
//! medians, ratios and the compressed sizes side by side.
//!
//! ```text
//! cargo run --release --example dir_bench --features dir
//! SNAPSHOT_BENCH_DIR_MB=256 SNAPSHOT_BENCH_RUNS=1 cargo run --release --example dir_bench --features dir
//! ```
//!
//! | variable | default | |
//! |---|---|---|
//! | `SNAPSHOT_BENCH_DIR_MB` | 1024 | total size of the tree, MiB |
//! | `SNAPSHOT_BENCH_FILES` | 10000 | files in the tree |
//! | `SNAPSHOT_BENCH_RUNS` | 3 | runs per method (the median is reported) |
//! | `SNAPSHOT_BENCH_DIR` | temp | where to build the tree (a real disk, not tmpfs) |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use snapshot::engine::dir::{ArchiveFormat, DirectorySource};
use snapshot::{Environment, LocalStore, RestoreOptions, SnapshotManager, SnapshotRequest};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small, fast generator (xorshift) so the tree is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `files` files of CSV rows and JSON records, `total` bytes in all, in 100 directories.
fn build_tree(root: &Path, files: u64, total: u64) -> Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let per_file = total / files;
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&dir)?;
        let json = i % 3 == 0;
        let name = dir.join(format!("f{i:05}.{}", if json { "json" } else { "csv" }));
        let mut out = std::io::BufWriter::new(std::fs::File::create(name)?);
        let mut written = 0u64;
        // Sizes vary around the mean: some files ten times larger than others.
        let want = per_file / 2 + rng.next() % per_file.max(1);
        while written < want {
            let line = if json {
                format!(
                    "{{\"id\": {}, \"channel\": \"c{}\", \"views\": {}, \"usd\": {}.{:02}}}\n",
                    rng.next() % 1_000_000,
                    rng.next() % 50,
                    rng.next() % 100_000,
                    rng.next() % 1000,
                    rng.next() % 100
                )
            } else {
                format!(
                    "2025-{:02}-{:02},{},{},{}.{:02}\n",
                    1 + rng.next() % 12,
                    1 + rng.next() % 28,
                    rng.next() % 100_000,
                    rng.next() % 5_000,
                    rng.next() % 1000,
                    rng.next() % 100
                )
            };
            out.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        out.flush()?;
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}").into());
    }
    Ok(())
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Median of `runs` timings of `f`, each after `reset`; the last output size.
fn median(
    runs: u64,
    mut reset: impl FnMut() -> Result<()>,
    mut f: impl FnMut() -> Result<u64>,
) -> Result<(Duration, u64)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        reset()?;
        let t = Instant::now();
        size = f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], size))
}

fn main() -> Result<()> {
    let mb = env_u64("SNAPSHOT_BENCH_DIR_MB", 1024);
    let files = env_u64("SNAPSHOT_BENCH_FILES", 10_000);
    let runs = env_u64("SNAPSHOT_BENCH_RUNS", 3).max(1);
    let base = std::env::var_os("SNAPSHOT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("snapshot-dir-bench-")
        .tempdir_in(base)?;
    let s = scratch.path();
    let data = s.join("data");
    println!("building {files} files, {mb} MiB in {} …", data.display());
    build_tree(&data, files, mb << 20)?;
    let raw: u64 = walk_size(&data);
    println!("tree: {raw} bytes");
    let out = s.join("out");
    let clean = |p: &Path| -> Result<()> {
        if p.is_dir() {
            std::fs::remove_dir_all(p)?;
        } else if p.exists() {
            std::fs::remove_file(p)?;
        }
        Ok(())
    };
    // Warm the page cache: every method then reads from memory.
    run(Command::new("tar")
        .arg("-cf")
        .arg("/dev/null")
        .arg("-C")
        .arg(s)
        .arg("data"))?;

    let zip_out = s.join("tree.zip");
    let zip = median(
        runs,
        || clean(&zip_out),
        || {
            run(Command::new("zip")
                .args(["-r", "-q"])
                .arg(&zip_out)
                .arg("data")
                .current_dir(s))?;
            Ok(size_of(&zip_out))
        },
    )?;
    let zst_out = s.join("tree.tar.zst");
    let tar = median(
        runs,
        || clean(&zst_out),
        || {
            run(Command::new("sh").arg("-c").arg(format!(
                "tar -C '{}' -cf - data | zstd -1 -q -o '{}'",
                s.display(),
                zst_out.display()
            )))?;
            Ok(size_of(&zst_out))
        },
    )?;

    let mut ours = Vec::new();
    for format in [ArchiveFormat::Zip, ArchiveFormat::TarZstd] {
        let store = s.join(format!("store-{}", format.extension()));
        let manager = |store: &Path| -> Result<SnapshotManager> {
            Ok(SnapshotManager::builder()
                .source(DirectorySource::new(&data).format(format))
                .store(LocalStore::open(store)?)
                .environment(Environment::persistent())
                .build()?)
        };
        let mut last = None;
        let timing = median(
            runs,
            || clean(&store),
            || {
                let m = manager(&store)?;
                let r = m
                    .snapshot(SnapshotRequest::new("bench"))?
                    .into_record()
                    .ok_or("disabled")?;
                let size = r.size_bytes;
                last = Some(r.snapshot_id);
                Ok(size)
            },
        )?;
        ours.push((format, timing, store, last.ok_or("no run")?));
    }

    let unzip = median(
        runs,
        || clean(&out),
        || {
            run(Command::new("unzip")
                .arg("-q")
                .arg(&zip_out)
                .arg("-d")
                .arg(&out))?;
            Ok(0)
        },
    )?;
    let (_, _, zip_store, zip_id) = &ours[0];
    let m = SnapshotManager::builder()
        .source(DirectorySource::new(&data))
        .store(LocalStore::open(zip_store)?)
        .environment(Environment::persistent())
        .build()?;
    let restore = median(
        runs,
        || clean(&out),
        || {
            m.restore_with(zip_id, &RestoreOptions::new().target(&out))?;
            Ok(0)
        },
    )?;

    let secs = |d: Duration| d.as_secs_f64();
    let ratio = |size: u64| raw as f64 / size.max(1) as f64;
    println!();
    println!(
        "{:<34} {:>9} {:>8} {:>12} {:>7}",
        "method", "seconds", "× tool", "bytes", "ratio"
    );
    let line = |name: &str, (t, size): (Duration, u64), base: Duration| {
        println!(
            "{name:<34} {:>9.3} {:>8.2} {size:>12} {:>7.2}",
            secs(t),
            secs(t) / secs(base),
            ratio(size)
        );
    };
    line("zip -r -q (deflate)", zip, zip.0);
    line("snapshot, zip (default)", ours[0].1, zip.0);
    line("tar -c | zstd -1", tar, tar.0);
    line("snapshot, tar + zstd", ours[1].1, tar.0);
    println!();
    println!("{:<34} {:>9} {:>8}", "restore", "seconds", "× unzip");
    println!("{:<34} {:>9.3} {:>8.2}", "unzip -q", secs(unzip.0), 1.0);
    println!(
        "{:<34} {:>9.3} {:>8.2}",
        "snapshot restore --to (checked)",
        secs(restore.0),
        secs(restore.0) / secs(unzip.0)
    );
    Ok(())
}

fn walk_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += size_of(&p);
            }
        }
    }
    total
}
