//! Reading chunks' frames out of packs: in place for a store of local files, else whole packs
//! fetched and a few kept; and a chunk's plain bytes, a delta's base included.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dedup::index::ChunkIndex;
use crate::store::dedup::manifest::hex;
use crate::store::dedup::pack::IdxEntry;

/// Remote packs kept in memory at a time.
const REMOTE_PACKS: usize = 4;
/// Local packs kept open at a time (a restore may need hundreds).
const OPEN_PACKS: usize = 64;

/// A reader of frames (one per thread).
pub(crate) struct Frames<'a> {
    store: &'a dyn Store,
    files: HashMap<String, File>,
    fetched: VecDeque<(String, Arc<Vec<u8>>)>,
    z: zstd::zstd_safe::DCtx<'static>,
}

fn short(pack: &str, e: &IdxEntry) -> Error {
    Error::ChecksumMismatch {
        key: pack.to_string(),
        expected: format!("a chunk at byte {}", e.offset),
        actual: "a pack that ends before it".into(),
    }
}

impl<'a> Frames<'a> {
    /// A reader of `store`'s packs.
    ///
    /// # Errors
    /// None so far (the signature leaves room for a reader that must connect).
    pub(crate) fn new(store: &'a dyn Store) -> Result<Self> {
        Ok(Frames {
            store,
            files: HashMap::new(),
            fetched: VecDeque::new(),
            z: zstd::zstd_safe::DCtx::create(),
        })
    }

    /// The frame of `e` in the pack `pack`.
    ///
    /// # Errors
    /// [`Error::BlobMissing`] for a pack that is gone; [`Error::ChecksumMismatch`] for one
    /// that ends before the frame; I/O errors.
    pub(crate) fn frame(&mut self, pack: &str, e: &IdxEntry) -> Result<Vec<u8>> {
        let mut frame = vec![0u8; e.clen as usize];
        if let Some(local) = self.store.local() {
            if !self.files.contains_key(pack) {
                if self.files.len() >= OPEN_PACKS {
                    self.files.clear();
                }
                let path = local.object_path(pack)?;
                let f = File::open(&path).map_err(|err| match err.kind() {
                    io::ErrorKind::NotFound => Error::BlobMissing { key: pack.into() },
                    _ => Error::io("open", &path, err),
                })?;
                self.files.insert(pack.to_string(), f);
            }
            if let Some(f) = self.files.get(pack) {
                f.read_exact_at(&mut frame, e.offset)
                    .map_err(|err| match err.kind() {
                        io::ErrorKind::UnexpectedEof => short(pack, e),
                        _ => Error::io("read", pack, err),
                    })?;
            }
            return Ok(frame);
        }
        let bytes = match self.fetched.iter().find(|(p, _)| p == pack) {
            Some((_, b)) => b.clone(),
            None => {
                let b = Arc::new(self.store.get(pack)?.bytes);
                if self.fetched.len() == REMOTE_PACKS {
                    self.fetched.pop_front();
                }
                self.fetched.push_back((pack.to_string(), b.clone()));
                b
            }
        };
        let start = usize::try_from(e.offset).unwrap_or(usize::MAX);
        let got = bytes
            .get(start..start.saturating_add(e.clen as usize))
            .ok_or_else(|| short(pack, e))?;
        frame.copy_from_slice(got);
        Ok(frame)
    }

    /// Decompresses `frame` of a chunk of `ulen` bytes (a delta's with its `base`).
    /// The result is checked against `hash`; `at` says where, for the error.
    ///
    /// # Errors
    /// [`Error::ChecksumMismatch`] naming `at` when the frame does not decode or the bytes do
    /// not match.
    pub(crate) fn decode(
        &mut self,
        frame: &[u8],
        hash: &[u8; 32],
        ulen: u32,
        base: Option<&[u8]>,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        decode_with(&mut self.z, frame, hash, ulen, base, at)
    }

    /// The plain bytes of the chunk `hash`, found in `index` (a delta's base read too: a base
    /// is a whole chunk, one level only).
    ///
    /// # Errors
    /// [`Error::BlobMissing`] when the chunk or its base is not in `index`;
    /// [`Error::ChecksumMismatch`] for a base that is itself a delta (damage); the errors of
    /// [`frame`](Self::frame) and [`decode`](Self::decode).
    pub(crate) fn plain(&mut self, index: &ChunkIndex, hash: &[u8; 32]) -> Result<Vec<u8>> {
        let (pack, e) = locate(index, hash)?;
        let base = match &e.base {
            Some(b) => Some(self.whole(index, b)?),
            None => None,
        };
        let frame = self.frame(pack, &e)?;
        let at = || format!("chunk {} in pack {pack}", hex(&hash[..8]));
        self.decode(&frame, hash, e.ulen, base.as_deref(), &at)
    }

    /// The plain bytes of the whole chunk `hash`.
    fn whole(&mut self, index: &ChunkIndex, hash: &[u8; 32]) -> Result<Vec<u8>> {
        let (pack, e) = locate(index, hash)?;
        let at = || format!("base chunk {} in pack {pack}", hex(&hash[..8]));
        if e.base.is_some() {
            return Err(Error::ChecksumMismatch {
                key: at(),
                expected: "a whole chunk".into(),
                actual: "a delta".into(),
            });
        }
        let frame = self.frame(pack, &e)?;
        self.decode(&frame, hash, e.ulen, None, &at)
    }
}

/// Where the chunk `hash` is.
///
/// # Errors
/// [`Error::BlobMissing`] naming the chunk when `index` lacks it.
pub(crate) fn locate<'i>(index: &'i ChunkIndex, hash: &[u8; 32]) -> Result<(&'i str, IdxEntry)> {
    let (pack, e) = index.locs.get(hash).ok_or_else(|| Error::BlobMissing {
        key: format!("chunk {}", hex(&hash[..8])),
    })?;
    Ok((&index.packs[*pack as usize], *e))
}

/// [`Frames::decode`] with a given context.
///
/// # Errors
/// As [`Frames::decode`].
fn decode_with(
    z: &mut zstd::zstd_safe::DCtx<'static>,
    frame: &[u8],
    hash: &[u8; 32],
    ulen: u32,
    base: Option<&[u8]>,
    at: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let mut plain = Vec::with_capacity(ulen as usize);
    let r = match base {
        None => z.decompress(&mut plain, frame),
        Some(b) => z.decompress_using_dict(&mut plain, frame, b),
    };
    r.map_err(|code| Error::ChecksumMismatch {
        key: at(),
        expected: hex(hash),
        actual: format!(
            "a frame that does not decode: {}",
            zstd::zstd_safe::get_error_name(code)
        ),
    })?;
    let h = blake3::hash(&plain);
    if h.as_bytes() != hash || plain.len() != ulen as usize {
        return Err(Error::ChecksumMismatch {
            key: at(),
            expected: hex(hash),
            actual: h.to_hex().to_string(),
        });
    }
    Ok(plain)
}

/// Compresses `data` at `level`, with `base` as a dictionary for a delta.
///
/// # Errors
/// zstd's errors.
pub(crate) fn encode_with(
    z: &mut zstd::zstd_safe::CCtx<'static>,
    data: &[u8],
    base: Option<&[u8]>,
    level: i32,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    let r = match base {
        None => z.compress(&mut out, data, level),
        Some(b) => z.compress_using_dict(&mut out, data, b, level),
    };
    r.map_err(|code| {
        Error::io(
            "compress",
            "chunk",
            std::io::Error::other(zstd::zstd_safe::get_error_name(code)),
        )
    })?;
    Ok(out)
}
