//! The one place that makes user data durable: staging, fsync, rename, directory fsync, locks and
//! owner-only permissions.
//!
//! Every snapshot, sidecar, catalog index and restored database is written the same way:
//! write a uniquely named staging file (`create_new`, mode 0600) in the destination directory,
//! fsync it, close it, rename (or hard-link, to refuse overwriting) it into place, then fsync the
//! directory so the new name itself survives a crash. Any failure removes the staging file. No
//! other module calls `sync_all` or `rename` on user data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Prefix of every staging file this library creates; anything with it is a crash leftover once
/// no process is writing it.
pub const STAGING_PREFIX: &str = ".snapshot-staging-";

/// Prefix of a deleted object's file whose space is still to be freed (it was renamed out of
/// the store's namespace first): always garbage, whoever left it.
pub const TRASH_PREFIX: &str = ".snapshot-trash-";

/// Mode of files holding user data: owner read/write only (they hold the same data as the DB).
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories holding snapshots: owner only.
pub const DIR_MODE: u32 = 0o700;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh staging path in `dir`, unique across threads and processes.
pub fn staging_path(dir: &Path, hint: &str) -> PathBuf {
    unique_path(dir, STAGING_PREFIX, hint)
}

fn unique_path(dir: &Path, prefix: &str, hint: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    dir.join(format!(
        "{prefix}{}-{n}-{nanos:09}-{hint}",
        std::process::id()
    ))
}

/// Creates `dir` and missing parents with mode 0700 (existing directories keep their mode,
/// except `dir` itself when this call created it).
pub fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Creates a new file (failing if it exists) with mode 0600, for writing.
pub fn create_new_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

/// Flushes a directory entry table to disk so renames and new names in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Removes a file if it exists, ignoring "not found".
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Removes `path` (a file, or a directory with what it holds) when dropped unless disarmed:
/// staging files never outlive a failure.
#[derive(Debug)]
pub struct StagingGuard {
    path: Option<PathBuf>,
}

impl StagingGuard {
    /// Guards `path`.
    pub fn new(path: PathBuf) -> Self {
        StagingGuard { path: Some(path) }
    }
    /// The guarded path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
    /// Keeps the file (it was published or handed over).
    pub fn disarm(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

/// Size and checksum of a sealed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Size in bytes.
    pub size: u64,
    /// `blake3:<hex>`.
    pub checksum: String,
}

/// Makes a finished staging file durable and computes its checksum. The fsync (I/O bound) and
/// the hash (CPU bound, read from the page cache) run in parallel, so sealing costs about the
/// larger of the two rather than their sum.
pub fn seal(path: &Path) -> Result<Sealed> {
    std::thread::scope(|s| {
        let sync = s.spawn(|| -> Result<()> {
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io("open for fsync", path, e))?;
            f.sync_all().map_err(|e| Error::io("fsync", path, e))
        });
        let hashed = hash_file(path);
        let synced = sync.join().unwrap_or_else(|_| {
            Err(Error::io(
                "fsync",
                path,
                io::Error::other("fsync thread panicked"),
            ))
        });
        synced?;
        hashed
    })
}

/// Size and `blake3:` checksum of a file, read sequentially (memory-mapped when large).
pub fn hash_file(path: &Path) -> Result<Sealed> {
    let mut hasher = blake3::Hasher::new();
    let mut f = File::open(path).map_err(|e| Error::io("open for checksum", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read for checksum", path, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Sealed {
        size,
        checksum: format!("blake3:{}", hasher.finalize().to_hex()),
    })
}

/// `blake3:` checksum of bytes in memory.
pub fn hash_bytes(data: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(data).to_hex())
}

/// Copies `src` into a new private file `dst` (kernel copy where the file system offers it).
/// Not durable by itself: follow with [`seal`] or [`sync_file`].
pub fn copy_to_new(src: &Path, dst: &Path) -> Result<u64> {
    let from = File::open(src).map_err(|e| Error::io("open", src, e))?;
    copy_open_to_new(&from, src, dst)
}

/// Copies the whole of the open file `from` (found at `src`, named in errors) to a new file at
/// `dst` (mode 0600), reading at explicit offsets: the descriptor's position is neither used
/// nor moved, so several threads may copy through one shared descriptor. The copy runs in the
/// kernel (`copy_file_range`) where the file systems allow it. Not fsynced: [`seal`] does that.
pub fn copy_open_to_new(from: &File, src: &Path, dst: &Path) -> Result<u64> {
    let len = from
        .metadata()
        .map_err(|e| Error::io("stat", src, e))?
        .len();
    let to = create_new_private(dst)?;
    let (mut off_in, mut off_out) = (0u64, 0u64);
    let mut in_kernel = true;
    let mut buf = Vec::new();
    loop {
        let want = usize::try_from(len.saturating_sub(off_in))
            .unwrap_or(usize::MAX)
            .clamp(1, 1 << 30);
        let n = if in_kernel {
            let (mut a, mut b) = (off_in, off_out);
            match rustix::fs::copy_file_range(from, Some(&mut a), &to, Some(&mut b), want) {
                Ok(n) => n,
                Err(e)
                    if [
                        rustix::io::Errno::XDEV,
                        rustix::io::Errno::NOSYS,
                        rustix::io::Errno::INVAL,
                        rustix::io::Errno::OPNOTSUPP,
                    ]
                    .contains(&e) =>
                {
                    in_kernel = false;
                    continue;
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("copy", dst, e.into())),
            }
        } else {
            buf.resize(want.min(1 << 20), 0);
            let n = match from.read_at(&mut buf, off_in) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", src, e)),
            };
            to.write_all_at(&buf[..n], off_out)
                .map_err(|e| Error::io("write", dst, e))?;
            n
        };
        if n == 0 {
            // The end of the file: it may have grown since the stat, which the loop followed.
            return Ok(off_out);
        }
        off_in += n as u64;
        off_out += n as u64;
    }
}

/// fsyncs one file.
pub fn sync_file(path: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open for fsync", path, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// Writes `data` to `path` atomically and durably, replacing any existing file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent(path);
    let staged = StagingGuard::new(staging_path(dir, file_name(path)));
    {
        let mut f = create_new_private(staged.path())?;
        f.write_all(data)
            .map_err(|e| Error::io("write", staged.path(), e))?;
        f.sync_all()
            .map_err(|e| Error::io("fsync", staged.path(), e))?;
    }
    fs::rename(staged.path(), path).map_err(|e| Error::io("rename", path, e))?;
    staged.disarm();
    fsync_dir(dir)
}

/// Writes `data` to a new file at `path`, durably; fails with [`Error::AlreadyExists`] if a file
/// is there (the check and the publish are one atomic step).
pub fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let dir = parent(path);
    let staged = StagingGuard::new(staging_path(dir, file_name(path)));
    {
        let mut f = create_new_private(staged.path())?;
        f.write_all(data)
            .map_err(|e| Error::io("write", staged.path(), e))?;
        f.sync_all()
            .map_err(|e| Error::io("fsync", staged.path(), e))?;
    }
    publish_new(staged.path(), path)?;
    staged.disarm();
    Ok(())
}

/// Moves an already fsynced staging file to `dst`, refusing to overwrite: a hard link is created
/// (fails if `dst` exists) and the staging name removed, then the directory is fsynced.
pub fn publish_new(staged: &Path, dst: &Path) -> Result<()> {
    link_new(staged, dst)?;
    fs::remove_file(staged).map_err(|e| Error::io("remove staging", staged, e))?;
    fsync_dir(parent(dst))
}

/// Publishes a finished, fsynced image and the bytes of its record side by side, with one
/// directory fsync for both: `record` goes to a staging file (written and fsynced), then the
/// image and the record are hard-linked to their names — the image first, so the image's name is
/// what reserves it; each link refuses an existing name — the staging names are removed and the
/// directory is fsynced once. On [`Error::AlreadyExists`] or any other error nothing is
/// published (a link already made is removed) and `image` stays for the caller.
///
/// `image`, `image_dst` and `record_dst` must be in one directory.
pub fn publish_new_pair(
    image: &Path,
    image_dst: &Path,
    record: &[u8],
    record_dst: &Path,
) -> Result<()> {
    let dir = parent(image_dst);
    let staged = StagingGuard::new(staging_path(dir, file_name(record_dst)));
    {
        let mut f = create_new_private(staged.path())?;
        f.write_all(record)
            .map_err(|e| Error::io("write", staged.path(), e))?;
        f.sync_all()
            .map_err(|e| Error::io("fsync", staged.path(), e))?;
    }
    link_new(image, image_dst)?;
    if let Err(e) = link_new(staged.path(), record_dst) {
        let _ = fs::remove_file(image_dst);
        return Err(e);
    }
    // Both names are published: a staging name that cannot be removed is only a leftover for
    // doctor (it shares the published inode), not a reason to fail the publish.
    let _ = fs::remove_file(image);
    drop(staged);
    fsync_dir(dir)
}

/// Hard-links `src` to `dst`, refusing an existing `dst` with [`Error::AlreadyExists`].
fn link_new(src: &Path, dst: &Path) -> Result<()> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
            key: file_name(dst).to_string(),
        }),
        Err(e) => Err(Error::io("link", dst, e)),
    }
}

/// Takes files of `dir` out of its namespace at the cost of a rename each: every one of `paths`
/// (absent ones are skipped; every path is tried even after a failure) gets a trash name in
/// `dir`, then `dir` is fsynced once, so that after a crash each is either still in place or
/// in the trash — never half gone. Returns the trash names, for [`free`] (possibly on another
/// thread: on some file systems unlinking a large file costs as much as copying a tenth of it).
///
/// # Errors
/// The first I/O error met, naming the path.
pub fn discard_many(dir: &Path, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut first = None;
    let mut trash = Vec::with_capacity(paths.len());
    for p in paths {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let t = unique_path(dir, TRASH_PREFIX, &name);
        match fs::rename(p, &t) {
            Ok(()) => trash.push(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first.get_or_insert(Error::io("discard", p, e));
            }
        }
    }
    let synced = if trash.is_empty() {
        Ok(())
    } else {
        fsync_dir(dir)
    };
    match first {
        Some(e) => Err(e),
        None => synced.map(|()| trash),
    }
}

/// The trash names in `dir` (see [`discard_many`]), whoever left them.
///
/// # Errors
/// I/O errors listing the directory.
pub fn trash_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TRASH_PREFIX.as_bytes())
        {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Frees discarded files (absent ones are skipped: another process may be freeing the same
/// trash). No directory fsync: a trash name that comes back after a crash is freed again.
///
/// # Errors
/// The first I/O error met; every path is tried.
pub fn free(paths: &[PathBuf]) -> Result<()> {
    let mut first = None;
    for p in paths {
        if let Err(e) = remove_if_exists(p) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Moves an already fsynced staging file over `dst` (atomic replace), then fsyncs the directory.
pub fn publish_replace(staged: &Path, dst: &Path) -> Result<()> {
    fs::rename(staged, dst).map_err(|e| Error::io("rename", dst, e))?;
    fsync_dir(parent(dst))
}

/// Renames the scratch file `from` to `to` without making it durable: for work files whose
/// loss or damage after a power failure is detected (each is checksummed in the progress that
/// lists it) and redone — an API export's chunks. A killed process loses nothing: the page
/// cache outlives it.
#[allow(dead_code)] // the engines of APIs
pub fn rename_scratch(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", to, e))
}

/// Writes `data` to `path` atomically (a staging file renamed over it) without fsync: for
/// progress records that are checked when read back (an unreadable one starts the work over).
#[allow(dead_code)] // the engines of APIs
pub fn write_scratch(path: &Path, data: &[u8]) -> Result<()> {
    let staged = StagingGuard::new(staging_path(parent(path), file_name(path)));
    {
        let mut f = create_new_private(staged.path())?;
        f.write_all(data)
            .map_err(|e| Error::io("write", staged.path(), e))?;
    }
    fs::rename(staged.path(), path).map_err(|e| Error::io("rename", path, e))?;
    staged.disarm();
    Ok(())
}

/// Renames `from` to `to` (a file or a whole directory tree already made durable) and makes
/// the rename durable: both parent directories are fsynced.
#[allow(dead_code)] // the engines of directories
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io("rename", to, e))?;
    fsync_dir(parent(to))?;
    if parent(from) != parent(to) {
        fsync_dir(parent(from))?;
    }
    Ok(())
}

/// Swaps `a` and `b` (two directories, or files) in one atomic step (`renameat2` with
/// `RENAME_EXCHANGE`): at every moment each name holds one of the two, so a crash never leaves
/// `b` missing. `Ok(false)` when the file system cannot exchange (the caller renames instead).
#[allow(dead_code)] // the engines of directories
pub fn exchange_durable(a: &Path, b: &Path) -> Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            return Ok(false);
        }
        Err(e) => return Err(Error::io("exchange", b, e.into())),
    }
    fsync_dir(parent(b))?;
    if parent(a) != parent(b) {
        fsync_dir(parent(a))?;
    }
    Ok(true)
}

/// Makes everything written on the file system holding `dir` durable at once (`syncfs`): one
/// call for a tree of many files, where an fsync each would cost a disk flush each.
#[allow(dead_code)] // the engines of directories
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    rustix::fs::syncfs(&d).map_err(|e| Error::io("syncfs", dir, e.into()))
}

/// Removes a published file durably (the directory is fsynced).
pub fn remove_durable(path: &Path) -> Result<()> {
    remove_if_exists(path)?;
    fsync_dir(parent(path))
}

/// Gives the file at `src` a second name `dst` (a hard link) with owner-only permissions, for
/// a snapshot that costs no copy. Returns the mode `src` had (restore it with [`set_mode`] when
/// `src` keeps its role), or `None` — nothing changed — when the file system cannot link the two
/// (another file system, links unsupported) or the mode cannot be changed (not the owner).
///
/// # Errors
/// Other I/O errors, naming the path.
pub fn link_private(src: &Path, dst: &Path) -> Result<Option<u32>> {
    let mode = fs::metadata(src)
        .map_err(|e| Error::io("stat", src, e))?
        .permissions()
        .mode()
        & 0o7777;
    match fs::hard_link(src, dst) {
        Ok(()) => {}
        Err(e) if can_not_link(&e) => return Ok(None),
        Err(e) => return Err(Error::io("link", dst, e)),
    }
    if mode != FILE_MODE
        && let Err(e) = fs::set_permissions(dst, fs::Permissions::from_mode(FILE_MODE))
    {
        let _ = fs::remove_file(dst);
        if e.kind() == io::ErrorKind::PermissionDenied {
            return Ok(None);
        }
        return Err(Error::io("chmod", dst, e));
    }
    Ok(Some(mode))
}

fn can_not_link(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::CrossesDevices
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::Unsupported
            | io::ErrorKind::TooManyLinks
    )
}

/// Sets the permission bits of an existing file.
///
/// # Errors
/// I/O errors, naming the path.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Sets owner-only permissions on an existing file.
pub fn make_private(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Gives `to` the permission bits of `from`.
pub fn copy_permissions(from: &Path, to: &Path) -> Result<()> {
    let perms = fs::metadata(from)
        .map_err(|e| Error::io("stat", from, e))?
        .permissions();
    fs::set_permissions(to, perms).map_err(|e| Error::io("chmod", to, e))
}

/// An exclusive advisory lock on a file, released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Takes an exclusive lock on `path` (created 0600 if missing), waiting up to `budget`.
pub fn lock_exclusive(path: &Path, budget: Duration) -> Result<FileLock> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| Error::io("open lock", path, e))?;
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= budget {
                    return Err(Error::StoreLocked {
                        path: path.to_path_buf(),
                        waited_ms: start.elapsed().as_millis() as u64,
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_refuses_to_overwrite_and_leaves_no_staging() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let p = dir.path().join("a.json");
        write_new(&p, b"one")?;
        assert!(matches!(
            write_new(&p, b"two"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(fs::read(&p).map_err(|e| Error::io("read", &p, e))?, b"one");
        write_atomic(&p, b"three")?;
        assert_eq!(
            fs::read(&p).map_err(|e| Error::io("read", &p, e))?,
            b"three"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .map_err(|e| Error::io("read_dir", dir.path(), e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.json".to_string()]);
        let mode = fs::metadata(&p)
            .map_err(|e| Error::io("stat", &p, e))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, FILE_MODE);
        Ok(())
    }

    #[test]
    fn seal_matches_hash_of_content() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let p = dir.path().join("x");
        fs::write(&p, vec![7u8; 3_000_000]).map_err(|e| Error::io("write", &p, e))?;
        let s = seal(&p)?;
        assert_eq!(s.size, 3_000_000);
        assert_eq!(s.checksum, hash_bytes(&vec![7u8; 3_000_000]));
        Ok(())
    }

    #[test]
    fn lock_is_exclusive_with_a_budget() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let p = dir.path().join(".lock");
        let held = lock_exclusive(&p, Duration::from_secs(1))?;
        let second = lock_exclusive(&p, Duration::from_millis(30));
        assert!(matches!(second, Err(Error::StoreLocked { .. })));
        drop(held);
        lock_exclusive(&p, Duration::from_millis(30))?;
        Ok(())
    }
}
