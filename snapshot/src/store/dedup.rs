//! [`DedupStore`]: a store layer that keeps each distinct chunk of every snapshot once —
//! chunks aligned to the engine's pages, addressed by blake3, zstd-compressed into packs.
//!
//! It wraps any [`Store`] (a local directory, memory, a remote service) and is itself a
//! store, so the manager, the macro path and the CLI use it unchanged:
//! - a snapshot image put as a file (or streamed by a source, see [`StreamingStorage`]) is
//!   cut into chunks (SQLite pages, DuckDB blocks, content-defined for anything else), each
//!   hashed; the chunks the store does not hold yet are compressed into a new pack — a changed
//!   page as a delta against the same page of the previous image — and the image becomes a
//!   *manifest* under its blob key: its chunk list, size, checksum, the packs it uses, and the
//!   bytes it added. An unchanged database costs a manifest.
//! - a get reassembles the image, checking every chunk's hash; a damaged or missing chunk is
//!   named.
//! - deleting a snapshot deletes its manifest; packs nobody references are collected in two
//!   phases (condemned, then deleted after a grace period), after every deletion and by
//!   [`DedupStore::collect_garbage`].
//! - small objects put as bytes (the catalog index, sidecars) are kept as they are. A file
//!   holding a sound manifest (what [`StreamingStorage::capture_to_file`] writes) is published
//!   as that manifest, its chunks being stored already; a manifest is recognised by its magic
//!   and its blake3 trailer, which no other file has by chance.
//!
//! Objects of the layer are named `chunks-…` in the wrapped store; listing this store shows
//! only the others.

mod chunking;
mod frames;
mod gc;
mod headers;
mod health;
mod index;
mod manifest;
mod pack;
mod parallel;
mod reader;
mod writer;

pub use gc::GcReport;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;

use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::store::{
    IntoStore, Object, ObjectMeta, Payload, PutMode, Store, StoreUsage, StreamedImage,
    StreamingStorage,
};
use index::{ChunkIndex, IdxCache};
use manifest::{Manifest, is_manifest};

/// Default zstd level of new chunks.
const LEVEL: i32 = 3;
/// Default size at which a pack is closed and a new one begun.
const PACK_TARGET: u64 = 32 << 20;
/// Default time a pack stays condemned before it is deleted.
const GRACE: Duration = Duration::from_secs(3600);

/// A deduplicating layer over another store (see the [module docs](self)).
///
/// ```no_run
/// use snapshot::store::{DedupStore, LocalStore};
/// use snapshot::{SnapshotManager, SqliteSource};
///
/// # fn main() -> snapshot::Result<()> {
/// let store = DedupStore::new(LocalStore::open("backups")?);
/// let manager = SnapshotManager::builder()
///     .source(SqliteSource::new("app.db"))
///     .store(store)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DedupStore {
    inner: Arc<dyn Store>,
    level: i32,
    pack_target: u64,
    grace: Duration,
    cache: IdxCache,
    headers: headers::HeaderCache,
    temp: Mutex<Option<PathBuf>>,
    /// The manifest this store wrote last, the reference of the next image's deltas.
    last: Mutex<Option<(String, Arc<Manifest>)>>,
}

impl DedupStore {
    /// A dedup layer over `inner` (zstd level 3, packs of 32 MiB, a grace period of one hour
    /// before an unreferenced pack is deleted).
    pub fn new(inner: impl IntoStore) -> Self {
        DedupStore {
            inner: inner.into_store(),
            level: LEVEL,
            pack_target: PACK_TARGET,
            grace: GRACE,
            cache: IdxCache::default(),
            headers: headers::HeaderCache::default(),
            temp: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// The zstd level of new chunks (1 is faster, 19 smaller; default 3).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.level = level;
        self
    }

    /// The size at which a pack is closed (default 32 MiB; at least 1 MiB).
    pub fn pack_size(mut self, bytes: u64) -> Self {
        self.pack_target = bytes.max(1 << 20);
        self
    }

    /// How long an unreferenced pack stays condemned before a collection deletes it (default
    /// one hour). Every snapshot into the store must be published within it; a shorter one
    /// frees space sooner. The longest grace any process using the store asked for is recorded
    /// in the store and honoured by all. Zero frees at once, and suits only a store that one
    /// writer uses with no snapshot running while another call deletes one.
    pub fn gc_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// Runs one collection now: condemns the packs no manifest references and
    /// deletes those condemned for longer than the grace period.
    ///
    /// # Errors
    /// The store's errors; a damaged manifest stops it (nothing is deleted);
    /// [`Error::Precondition`] when another collection ran at the same time.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        gc::collect(&*self.inner, &self.cache, self.grace, &|objects| {
            let mut r = self.referenced(objects)?;
            if let Some((_, e)) = r.damaged.pop() {
                return Err(e); // what it references is unknown: nothing may be deleted
            }
            Ok((r.packs, r.manifests))
        })
    }

    /// Where packs are staged: the wrapped store's directory when it has one (publishing is a
    /// rename), else a private temporary directory removed with the store.
    fn staging(&self) -> Result<PathBuf> {
        if let Some(local) = self.inner.local() {
            // Created (0700) with the first pack: a capture that fails first leaves nothing.
            return Ok(local.dir().to_path_buf());
        }
        let mut temp = self.temp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = temp.as_ref() {
            return Ok(dir.clone());
        }
        let dir = std::env::temp_dir().join(format!(
            "snapshot-dedup-{}-{:p}",
            std::process::id(),
            self as *const Self
        ));
        fs_util::create_private_dir(&dir)?;
        *temp = Some(dir.clone());
        Ok(dir)
    }

    /// Stores the image `write` writes as chunks (packs published) and returns its manifest,
    /// not yet published.
    fn store_image(&self, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<Manifest> {
        let begun = Utc::now();
        let (condemned, _) = gc::read_condemned(&*self.inner)?;
        let excluded = condemned.condemned.into_keys().collect();
        let known = ChunkIndex::load_all(&*self.inner, &self.cache, &excluded)?;
        let staging = self.staging()?;
        let reference = self.reference()?;
        let mut w = writer::ImageWriter::new(
            &*self.inner,
            &known,
            reference.as_deref(),
            &staging,
            self.level,
            self.pack_target,
        );
        write(&mut w)?;
        let mut manifest = w.finish()?;
        manifest.header.begun = Some(begun);
        Ok(manifest)
    }

    /// Publishes `manifest` under `key`, once every pack it uses is known to be there (no
    /// collection may have deleted one since it was found: see the `gc` module).
    fn publish(&self, key: &str, manifest: Manifest, mode: PutMode) -> Result<Option<String>> {
        for p in &manifest.header.packs {
            if self.inner.head(p)?.is_none() {
                return Err(Error::BlobMissing { key: p.clone() });
            }
        }
        let bytes = manifest.encode()?;
        let v = self.inner.put(key, Payload::Bytes(&bytes), mode)?;
        // Published within the grace period from when the snapshot read the condemned packs,
        // or withdrawn: a collection may delete what it relied on once that is over.
        let (condemned, _) = gc::read_condemned(&*self.inner)?;
        let grace = condemned.grace(self.grace);
        let took = manifest
            .header
            .begun
            .and_then(|b| (Utc::now() - b).to_std().ok())
            .unwrap_or_default();
        if !grace.is_zero() && took >= grace {
            let _ = self.inner.delete(key);
            return Err(Error::invalid(
                "gc_grace",
                format!(
                    "the snapshot took {took:?}, longer than the store's collection grace \
                     {grace:?}: nothing was published; raise the grace"
                ),
            ));
        }
        if let Ok(Some(meta)) = self.inner.head(key) {
            self.headers
                .remember(&meta, Some(Arc::new(manifest.header.clone())));
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((key.to_string(), Arc::new(manifest)));
        Ok(v)
    }

    /// Stores the image read from `image` as chunks and publishes its manifest under `key`.
    fn put_image(&self, key: &str, image: &mut dyn Read, mode: PutMode) -> Result<Option<String>> {
        let manifest = self.store_image(&mut |w| {
            io::copy(image, w)
                .map(drop)
                .map_err(|e| match e.downcast::<Error>() {
                    Ok(e) => e,
                    Err(e) => Error::io("read", key, e),
                })
        })?;
        self.publish(key, manifest, mode)
    }

    /// The image new pages are delta-encoded against: the last one this store wrote while it
    /// is still there, else the store's newest manifest. (The store does not know which
    /// source an image is of; a reference of another database only makes deltas that do not
    /// pay, and the pages are then stored whole.)
    fn reference(&self) -> Result<Option<Arc<Manifest>>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((key, m)) = last
            && self.inner.head(&key)?.is_some()
        {
            return Ok(Some(m));
        }
        let mut objects = self.inner.list()?;
        objects.retain(|o| !o.key.starts_with(pack::PREFIX) && !o.key.ends_with(".json"));
        objects.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| b.key.cmp(&a.key)));
        for o in objects.iter().take(8) {
            match self.manifest(&o.key) {
                Ok((_, Some(m))) => return Ok(Some(Arc::new(m))),
                Ok((_, None)) | Err(Error::BlobMissing { .. }) => {}
                Err(e) => {
                    tracing::warn!(key = %o.key, error = %e, "a manifest cannot be read; not used as a reference");
                }
            }
        }
        Ok(None)
    }

    /// The manifest under `key`, or `None` when the object is not one (kept as it was put).
    fn manifest(&self, key: &str) -> Result<(Object, Option<Manifest>)> {
        let o = self.inner.get(key)?;
        if is_manifest(&o.bytes) {
            let m = Manifest::decode(key, &o.bytes)?;
            return Ok((o, Some(m)));
        }
        Ok((o, None))
    }

    fn reserved(key: &str) -> Result<()> {
        if key.starts_with(pack::PREFIX) {
            return Err(Error::invalid(
                "key",
                format!(
                    "{key:?}: keys starting with {:?} belong to the dedup layer",
                    pack::PREFIX
                ),
            ));
        }
        Ok(())
    }
}

/// The manifest in the file `path`, when it holds a sound one (as `capture_to_file` writes):
/// a file whose first bytes are a manifest's and whose trailer matches.
fn staged_manifest(path: &Path) -> Result<Option<Manifest>> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut head = [0u8; 8];
    match f.read_exact(&mut head) {
        Ok(()) if is_manifest(&head) => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    Ok(Manifest::decode(&path.display().to_string(), &bytes).ok())
}

impl StreamingStorage for DedupStore {
    fn capture_to_file(
        &self,
        dest: &Path,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<StreamedImage> {
        let manifest = self.store_image(write)?;
        let mut f = fs_util::create_new_private(dest)?;
        f.write_all(&manifest.encode()?)
            .map_err(|e| Error::io("write", dest, e))?;
        drop(f);
        fs_util::sync_file(dest)?;
        Ok(StreamedImage {
            size: manifest.header.size,
            checksum: manifest.header.checksum,
        })
    }
}

impl Drop for DedupStore {
    fn drop(&mut self) {
        if let Ok(Some(dir)) = self.temp.get_mut().map(Option::take) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Store for DedupStore {
    fn location(&self) -> String {
        format!("{} (dedup)", self.inner.location())
    }

    fn object_location(&self, key: &str) -> String {
        self.inner.object_location(key)
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>> {
        Self::reserved(key)?;
        match payload {
            Payload::Bytes(b) if !is_manifest(b) => self.inner.put(key, payload, mode),
            Payload::Bytes(b) => self.put_image(key, &mut &*b, mode),
            Payload::File(path) => {
                if mode == PutMode::Create && self.inner.head(key)?.is_some() {
                    return Err(Error::AlreadyExists { key: key.into() });
                }
                if let Some(manifest) = staged_manifest(path)? {
                    // A manifest `capture_to_file` wrote: its chunks are stored already.
                    let v = self.publish(key, manifest, mode)?;
                    fs_util::remove_if_exists(path)?;
                    return Ok(v);
                }
                let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
                let v = self.put_image(key, &mut f, mode)?;
                fs_util::remove_if_exists(path)?;
                Ok(v)
            }
        }
    }

    fn get(&self, key: &str) -> Result<Object> {
        let (mut o, m) = self.manifest(key)?;
        if let Some(m) = m {
            // Grown as windows are written: the manifest's size is checked against its chunks
            // before any is.
            let mut bytes = Vec::new();
            reader::read_image(&*self.inner, &self.cache, key, &m, &mut bytes)?;
            o.meta.size = m.header.size;
            o.bytes = bytes;
        }
        Ok(o)
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta> {
        let (o, m) = self.manifest(key)?;
        let guard = StagingGuard::new(dest.to_path_buf());
        let f = fs_util::create_new_private(dest)?;
        let mut meta = o.meta;
        match m {
            Some(m) => {
                reader::read_image(&*self.inner, &self.cache, key, &m, &mut &f)?;
                meta.size = m.header.size;
            }
            None => {
                io::Write::write_all(&mut &f, &o.bytes).map_err(|e| Error::io("write", dest, e))?
            }
        }
        guard.disarm();
        Ok(meta)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        if key.starts_with(pack::PREFIX) {
            return Ok(None);
        }
        let Some(meta) = self.inner.head(key)? else {
            return Ok(None);
        };
        if key.ends_with(".json") {
            return Ok(Some(meta));
        }
        match self.headers.header(&*self.inner, &meta)? {
            Some(h) => Ok(Some(ObjectMeta {
                size: h.size,
                ..meta
            })),
            None => Ok(Some(meta)),
        }
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        let mut objects = self.inner.list()?;
        objects.retain(|o| !o.key.starts_with(pack::PREFIX));
        Ok(objects)
    }

    fn delete(&self, key: &str) -> Result<()> {
        Self::reserved(key)?;
        self.inner.delete(key)?;
        self.headers.forget(key);
        if !key.ends_with(".json") {
            // A snapshot's manifest may have been the last user of some packs.
            if let Err(e) = self.collect_garbage() {
                tracing::warn!(error = %e, "collecting unreferenced chunks failed; the next deletion or doctor will");
            }
        }
        Ok(())
    }

    fn outlives_host(&self) -> bool {
        self.inner.outlives_host()
    }

    fn streaming(&self) -> Option<&dyn StreamingStorage> {
        // Over a remote store, packs are uploaded as they fill: not while a source holds its
        // read transaction (writers or checkpoints would wait on the network). The staged copy
        // is taken under the transaction instead, and chunked after it.
        self.inner.local().map(|_| self as &dyn StreamingStorage)
    }

    fn usage(&self) -> Result<Option<StoreUsage>> {
        self.usage_now().map(Some)
    }

    fn check_layer(&self, repair: bool, min_age: Duration) -> Result<Vec<String>> {
        self.findings(repair, min_age)
    }

    fn staging_hint(&self) -> Option<PathBuf> {
        self.inner.local().map(|l| l.dir().to_path_buf())
    }

    fn replication(&self) -> Result<Option<crate::store::ReplicationStatus>> {
        self.inner.replication()
    }

    fn settle_background(&self) -> Result<()> {
        self.inner.settle_background()
    }

    fn added_bytes(&self, key: &str) -> Result<Option<u64>> {
        let Some(meta) = self.inner.head(key)? else {
            return Ok(None);
        };
        Ok(self
            .headers
            .header(&*self.inner, &meta)?
            .map(|h| h.added_bytes))
    }
}
