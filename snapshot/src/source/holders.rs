//! Which processes hold a file open (Linux `/proc/<pid>/fd`). Used to refuse a restore over a
//! database another process is using, rather than swapping the file under it.

use std::fs;
use std::path::Path;

use crate::source::live_file::is_parked;

/// Process ids that have `path` open (any of its open descriptors resolves to it). Processes
/// this user may not inspect are skipped. Includes the calling process when it holds the file,
/// except through the read descriptors this library keeps open so as not to drop the process's
/// POSIX locks (see `live_file`).
pub fn processes_holding(path: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(target) = fs::canonicalize(path) else {
        return Vec::new();
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let ours = |fd: &fs::DirEntry| {
            pid == me
                && fd
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                    .is_some_and(is_parked)
        };
        if fds
            .flatten()
            .any(|fd| !ours(&fd) && fs::read_link(fd.path()).is_ok_and(|l| l == target))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Every file below the directory `root` that a process holds open, with the process ids, in
/// one scan of `/proc` (this process's parked read descriptors excluded, as above).
pub fn processes_holding_under(root: &Path) -> Vec<(std::path::PathBuf, Vec<u32>)> {
    let me = std::process::id();
    let Ok(root) = fs::canonicalize(root) else {
        return Vec::new();
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut held: std::collections::BTreeMap<std::path::PathBuf, Vec<u32>> = Default::default();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let parked = pid == me
                && fd
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                    .is_some_and(is_parked);
            if parked {
                continue;
            }
            if let Ok(target) = fs::read_link(fd.path())
                && target.starts_with(&root)
                && target != root
            {
                let pids = held.entry(target).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    held.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_while_it_holds_the_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("held");
        fs::write(&p, b"x")?;
        assert!(!processes_holding(&p).contains(&std::process::id()));
        let f = fs::File::open(&p)?;
        assert!(processes_holding(&p).contains(&std::process::id()));
        drop(f);
        assert!(!processes_holding(&p).contains(&std::process::id()));
        Ok(())
    }
}

/// Says who holds a file, from [`processes_holding`]: "held by this process (pid N)", "held by
/// process(es) 12, 34", or both — so that a refusal never calls the caller "another process".
pub fn describe_holders(pids: &[u32]) -> String {
    let me = std::process::id();
    let others: Vec<String> = pids
        .iter()
        .filter(|&&p| p != me)
        .map(u32::to_string)
        .collect();
    let mine = pids.contains(&me);
    match (mine, others.is_empty()) {
        (true, true) => format!("held by this process (pid {me})"),
        (false, _) => format!("held by process(es) {}", others.join(", ")),
        (true, false) => format!(
            "held by this process (pid {me}) and by process(es) {}",
            others.join(", ")
        ),
    }
}

#[cfg(test)]
mod describe_tests {
    use super::describe_holders;

    #[test]
    fn names_this_process_apart_from_others() {
        let me = std::process::id();
        assert_eq!(
            describe_holders(&[me]),
            format!("held by this process (pid {me})")
        );
        assert_eq!(describe_holders(&[1, 2]), "held by process(es) 1, 2");
        assert_eq!(
            describe_holders(&[1, me]),
            format!("held by this process (pid {me}) and by process(es) 1")
        );
    }
}
