//! The harness of the configuration's fuzz target (`fuzz/fuzz_targets/config.rs`, which
//! compiles this module through `#[path]` with `cfg(fuzzing)`) and of its property test over
//! arbitrary bytes: a configuration file and environment from bytes, loaded as the tool loads
//! them, must give a configuration or an [`Error::InvalidInput`], and what loads must be
//! usable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use snapshot::Error;

use crate::config::{Config, Overrides};

/// Loads `data` as the tool would: the text of `snapshot.toml`, optionally followed by a 0xFF
/// byte and `NAME=value` lines, the environment (`SNAPSHOT_DB`, `SNAPSHOT_ENGINE`,
/// `SNAPSHOT_STORE`, a `url_env` variable, …). The file is written into a fresh directory
/// under `base` (relative paths in it are read beside it).
///
/// # Panics
/// When loading panics, fails with another error than [`Error::InvalidInput`], or accepts a
/// configuration whose parts then fail.
pub(crate) fn load(base: &Path, data: &[u8]) {
    let (text, env) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // The engine is guessed from a database file's first bytes: a path to a device, a FIFO or
    // a kernel file could block that read (the user's own choice, not the parser's fault).
    let lossy = String::from_utf8_lossy(data);
    if ["dev/", "proc/", "sys/", "run/"]
        .iter()
        .any(|d| lossy.contains(d))
    {
        return;
    }
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |name: &str| {
        vars.iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let dir = fresh(base);
    let file = dir.join("snapshot.toml");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text)) {
        panic!("cannot write {}: {e}", file.display());
    }
    let overrides = Overrides {
        config: Some(file),
        ..Default::default()
    };
    let loaded = Config::load_with(&overrides, &lookup, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    match loaded {
        Ok(c) => use_config(&c),
        Err(Error::InvalidInput { .. }) => {}
        Err(e) => panic!("a configuration answered with {e:?}"),
    }
}

/// A directory under `base` no other call uses.
fn fresh(base: &Path) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    base.join(format!(
        "config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What the tool does with a loaded configuration before it touches any data.
fn use_config(c: &Config) {
    if let Err(e) = c.retention_policy() {
        panic!("a retention policy accepted at load time fails later: {e}");
    }
    let _ = c.database_display();
    let _ = c.store_dir();
    for origin in c.origins.values() {
        let _ = origin.to_string();
    }
    let now = chrono::Utc::now();
    for job in &c.jobs {
        let _ = job.cron.next_after(now, c.timezone);
        let _ = job.cron.previous_at_or_before(now, c.timezone);
        if let Some(r) = &job.retention
            && let Err(e) = r.policy()
        {
            panic!("a job's retention accepted at load time fails later: {e}");
        }
    }
    if let Some(server) = &c.server {
        let _ = server.describe();
        let _ = server.location();
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// The fuzz target's seed corpus and the inputs that once made it fail
    /// (`fuzz/seeds/config/`, `fuzz/regressions/config/`).
    fn inputs() -> Vec<Vec<u8>> {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut files: Vec<PathBuf> = ["seeds", "regressions"]
            .iter()
            .filter_map(|d| std::fs::read_dir(fuzz.join(d).join("config")).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
            .collect()
    }

    /// `seed` with a few bytes overwritten, inserted or removed.
    fn mutated(seed: &[u8], edits: &[(u16, u8, u8)]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for &(at, byte, how) in edits {
            let i = usize::from(at) % (out.len() + 1);
            match how % 3 {
                0 if i < out.len() => out[i] = byte,
                1 => out.insert(i, byte),
                _ if i < out.len() => {
                    out.remove(i);
                }
                _ => out.push(byte),
            }
        }
        out
    }

    fn base() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn the_seeds_and_past_failures_load_or_are_refused() {
        let base = base();
        let all = inputs();
        assert!(!all.is_empty(), "no seeds found");
        for input in all {
            load(base.path(), &input);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_load_or_are_refused(data in vec(any::<u8>(), 0..512)) {
            load(base().path(), &data);
        }

        #[test]
        fn damaged_seeds_load_or_are_refused(
            pick in any::<usize>(),
            edits in vec((any::<u16>(), any::<u8>(), any::<u8>()), 1..6),
        ) {
            let seeds = inputs();
            load(base().path(), &mutated(&seeds[pick % seeds.len()], &edits));
        }
    }
}
