//! [`EncryptedStore`]: a decorator that encrypts every snapshot image (and every object a
//! dedup layer above it writes) before the inner store sees it — a local directory or a
//! bucket (feature `encrypt`): each object in authenticated AES-256-GCM chunks under its own
//! random key, which age seals to the store's identity or passphrase (the format: `cipher`).
//!
//! The catalog stays in clear: the index and the sidecars (`*.json` keys) are what `list`,
//! `status` and retention read, and they hold no user data (ids, times, sizes, checksums, the
//! operation's description). Everything else is sealed; `verify` reads it through the key, so
//! a flipped byte fails the chunk's authentication tag and is reported as damage naming the
//! object.
//!
//! The store remembers its key by a small sealed object, `snapshot-encryption`, written on
//! first use: opening the store with another key fails at once with [`Error::Key`] and
//! changes nothing (no snapshot sealed with a key that cannot read the others).

mod cipher;
mod key;

use std::collections::HashSet;
use std::io::{BufReader, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub use key::{EncryptionKey, KEY_ENV, KEY_FILE_ENV, PASSPHRASE_ENV};

use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{
    Object, ObjectMeta, Payload, PutMode, Store, StoreUsage, StreamedImage, StreamingStorage,
};

/// The key of the object that proves which key a store was sealed with.
pub const KEY_CHECK: &str = "snapshot-encryption";
const CHECK_TEXT: &[u8] = b"snapshot encryption check v1\n";

/// Whether the store behind `store` was encrypted (holds [`KEY_CHECK`]): a store opened
/// without its key should refuse to work.
///
/// # Errors
/// The store's errors.
pub fn is_encrypted(store: &dyn Store) -> Result<bool> {
    Ok(store.head(KEY_CHECK)?.is_some())
}

/// Whether the object `key` is sealed: everything but the catalog (`*.json`).
fn sealed(key: &str) -> bool {
    !key.ends_with(".json")
}

/// A store whose objects are sealed with an [`EncryptionKey`] (see the module docs).
///
/// ```no_run
/// use snapshot::store::{EncryptedStore, EncryptionKey, LocalStore};
/// let key = EncryptionKey::from_env()?.expect("SNAPSHOT_KEY or SNAPSHOT_PASSPHRASE set");
/// let store = EncryptedStore::open(LocalStore::open("backups")?, key)?;
/// # Ok::<(), snapshot::Error>(())
/// ```
#[derive(Debug)]
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    key: EncryptionKey,
    /// Files [`capture_to_file`](StreamingStorage::capture_to_file) sealed already: their
    /// put passes them through.
    presealed: Mutex<HashSet<PathBuf>>,
}

impl EncryptedStore {
    /// Seals `inner` with `key`: checks the key against the store's [`KEY_CHECK`], writing it
    /// on first use.
    ///
    /// # Errors
    /// [`Error::Key`] when the store was sealed with another key; the inner store's errors.
    pub fn open(inner: impl crate::store::IntoStore, key: EncryptionKey) -> Result<Self> {
        let store = EncryptedStore {
            inner: inner.into_store(),
            key,
            presealed: Mutex::new(HashSet::new()),
        };
        match store.inner.get(KEY_CHECK) {
            Ok(o) => {
                let mut plain = Vec::new();
                cipher::open(
                    &store.key,
                    KEY_CHECK,
                    &store.inner.location(),
                    Cursor::new(o.bytes),
                    &mut plain,
                )?;
                if plain != CHECK_TEXT {
                    return Err(Error::Key {
                        location: store.inner.location(),
                        detail: format!("{KEY_CHECK} holds an unexpected text"),
                    });
                }
            }
            Err(Error::BlobMissing { .. }) => {
                if let Some(local) = store.inner.local() {
                    local.prepare()?;
                }
                let sealed = store.seal_bytes(CHECK_TEXT)?;
                match store
                    .inner
                    .put(KEY_CHECK, Payload::Bytes(&sealed), PutMode::Create)
                {
                    Ok(_) => {}
                    // Another process sealed the store first: check the key against its.
                    Err(Error::AlreadyExists { .. }) => return Self::open(store.inner, store.key),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// The store under the encryption.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn presealed(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.presealed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `f` was sealed by a capture (forgotten as it is published).
    fn take_presealed(&self, f: &Path) -> bool {
        self.presealed().remove(f)
    }

    fn seal_bytes(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len() + 256);
        cipher::seal(&self.key, &mut Cursor::new(data), &mut out)
            .map_err(|e| Error::io("encrypt", "(memory)", e))?;
        Ok(out)
    }

    /// Seals the file `file` into a new fsynced file beside it.
    fn seal_file(&self, file: &Path) -> Result<PathBuf> {
        let dir = file.parent().unwrap_or(Path::new("."));
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("image");
        let out = fs_util::StagingGuard::new(fs_util::staging_path(dir, &format!("{name}.age")));
        {
            let mut input = std::fs::File::open(file).map_err(|e| Error::io("open", file, e))?;
            let f = fs_util::create_new_private(out.path())?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
            cipher::seal(&self.key, &mut input, &mut w)
                .map_err(|e| Error::io("encrypt", file, e))?;
            drop(w);
            f.sync_all()
                .map_err(|e| Error::io("fsync", out.path(), e))?;
        }
        Ok(out.disarm())
    }
}

impl StreamingStorage for EncryptedStore {
    /// Seals the source's bytes as they are read, on two threads: the source reads into 1 MiB
    /// buffers on the caller's; hashing, sealing and writing run on a second one.
    fn capture_to_file(
        &self,
        dest: &Path,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<StreamedImage> {
        let guard = fs_util::StagingGuard::new(dest.to_path_buf());
        let file = fs_util::create_new_private(dest)?;
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let (read, sealed) = std::thread::scope(|s| {
            let sealer = s.spawn(|| -> Result<(u64, blake3::Hash)> {
                let fail = |e: std::io::Error| Error::io("encrypt into", dest, e);
                let mut w = cipher::SealWriter::new(
                    &self.key,
                    std::io::BufWriter::with_capacity(1 << 20, &file),
                )
                .map_err(fail)?;
                let mut hasher = blake3::Hasher::new();
                let mut size = 0u64;
                for buf in rx {
                    hasher.update(&buf);
                    w.write_all(&buf).map_err(fail)?;
                    size += buf.len() as u64;
                    let _ = back_tx.send(buf);
                }
                w.finish()
                    .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                    .map_err(fail)?;
                Ok((size, hasher.finalize()))
            });
            let mut chan = Channel {
                tx: Some(tx),
                back: back_rx,
                buf: Vec::with_capacity(CHANNEL_BUF),
            };
            let read = write(&mut chan)
                .and_then(|()| chan.send().map_err(|e| Error::io("encrypt into", dest, e)));
            drop(chan);
            let sealed = sealer
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (read, sealed)
        });
        // The sealer's error says more than the reader's broken channel.
        let (size, hash) = match (read, sealed) {
            (_, Err(e)) | (Err(e), _) => return Err(e),
            (Ok(()), Ok(done)) => done,
        };
        file.sync_all().map_err(|e| Error::io("fsync", dest, e))?;
        self.presealed().insert(guard.disarm());
        Ok(StreamedImage {
            size,
            checksum: format!("blake3:{}", hash.to_hex()),
        })
    }
}

/// Bytes per buffer handed to the sealing thread.
const CHANNEL_BUF: usize = 1 << 20;

/// The source's side of the pipeline: fills buffers and sends them to the sealing thread
/// (buffers come back to be reused).
struct Channel {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    back: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl Channel {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.back.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(CHANNEL_BUF),
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .as_ref()
            .ok_or_else(|| std::io::Error::other("closed"))?
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the sealer stopped"))
    }
}

impl Write for Channel {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = (CHANNEL_BUF - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHANNEL_BUF {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Store for EncryptedStore {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn object_location(&self, key: &str) -> String {
        self.inner.object_location(key)
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>> {
        if !sealed(key) {
            return self.inner.put(key, payload, mode);
        }
        match payload {
            Payload::Bytes(b) => {
                let s = self.seal_bytes(b)?;
                self.inner.put(key, Payload::Bytes(&s), mode)
            }
            Payload::File(f) if self.take_presealed(f) => self.inner.put(key, payload, mode),
            Payload::File(f) => {
                let s = fs_util::StagingGuard::new(self.seal_file(f)?);
                let v = self.inner.put(key, Payload::File(s.path()), mode)?;
                drop(s);
                fs_util::remove_if_exists(f)?;
                Ok(v)
            }
        }
    }

    fn get(&self, key: &str) -> Result<Object> {
        let o = self.inner.get(key)?;
        if !sealed(key) {
            return Ok(o);
        }
        let mut plain = Vec::with_capacity(o.bytes.len());
        cipher::open(
            &self.key,
            key,
            &self.inner.object_location(key),
            Cursor::new(o.bytes),
            &mut plain,
        )?;
        let mut meta = o.meta;
        meta.size = plain.len() as u64;
        Ok(Object { meta, bytes: plain })
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta> {
        if !sealed(key) {
            return self.inner.get_to_file(key, dest);
        }
        let location = self.inner.object_location(key);
        let guard = fs_util::StagingGuard::new(dest.to_path_buf());
        // Read in place from a local store; otherwise download the sealed object beside
        // `dest` first (its metadata comes with it: no second request).
        let (source, download, meta) = match self.inner.local() {
            Some(l) => {
                let meta = self.inner.head(key)?.ok_or_else(|| Error::BlobMissing {
                    key: key.to_string(),
                })?;
                (l.object_path(key)?, None, meta)
            }
            None => {
                let dir = dest.parent().unwrap_or(Path::new("."));
                let tmp = fs_util::StagingGuard::new(fs_util::staging_path(dir, "sealed"));
                let meta = self.inner.get_to_file(key, tmp.path())?;
                (tmp.path().to_path_buf(), Some(tmp), meta)
            }
        };
        let input = std::fs::File::open(&source).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BlobMissing {
                key: key.to_string(),
            },
            _ => Error::io("open", &source, e),
        })?;
        let out = fs_util::create_new_private(dest)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &out);
        let size = cipher::open(
            &self.key,
            key,
            &location,
            BufReader::with_capacity(1 << 20, input),
            &mut w,
        )?;
        w.into_inner()
            .map_err(|e| Error::io("write", dest, e.into_error()))?;
        drop(download);
        guard.disarm();
        let mut meta = meta;
        meta.size = size;
        Ok(meta)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.head(key)
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        let mut l = self.inner.list()?;
        l.retain(|m| m.key != KEY_CHECK);
        Ok(l)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn outlives_host(&self) -> bool {
        self.inner.outlives_host()
    }

    fn streaming(&self) -> Option<&dyn StreamingStorage> {
        // Over a directory, the source's bytes are sealed as they are read: no plain copy is
        // staged, written and read again. (Over a remote store the sealed image is uploaded
        // after the source's read transaction, as a plain one would be.)
        self.inner.local().map(|_| self as &dyn StreamingStorage)
    }

    fn staging_hint(&self) -> Option<PathBuf> {
        self.inner
            .local()
            .map(|l| l.dir().to_path_buf())
            .or_else(|| self.inner.staging_hint())
    }

    fn usage(&self) -> Result<Option<StoreUsage>> {
        self.inner.usage()
    }

    fn check_layer(&self, repair: bool, min_age: Duration) -> Result<Vec<String>> {
        self.inner.check_layer(repair, min_age)
    }

    fn replication(&self) -> Result<Option<crate::store::ReplicationStatus>> {
        self.inner.replication()
    }

    fn settle_background(&self) -> Result<()> {
        self.inner.settle_background()
    }

    fn added_bytes(&self, key: &str) -> Result<Option<u64>> {
        self.inner.added_bytes(key)
    }
}
