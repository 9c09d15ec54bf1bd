//! Pack files: the chunks a snapshot added, zstd-compressed and appended to one object, with an
//! index object beside it.
//!
//! A pack (`chunks-<id>.pack`) is `SNAPPACK` then one record per chunk — its blake3 hash (32
//! bytes), its kind (one byte: 0 whole, 1 delta), its length and its frame's length (`u32` LE
//! each), for a delta the hash of its base (32 bytes), then the zstd frame — so that it
//! describes itself. A whole chunk's frame is the chunk compressed; a delta's is the chunk
//! compressed with its base (a whole chunk of the same length: the same page in an earlier
//! snapshot) as zstd's dictionary — a few dozen bytes when a few rows of the page changed. Its index
//! (`chunks-<id>.idx`) lists where each chunk is: `SNAPIDX2`, the pack's size (`u64` LE), then
//! per chunk its hash, kind, frame offset (`u64`), frame and plain length (`u32`), the base for
//! a delta, and a trailer: the blake3 of everything before it. `<id>` is unique to the pack (a
//! hash of its content, the process, a counter and the time). A pack is published before its index; an index whose pack is gone,
//! or a pack without an index, is a leftover of an interrupted write or collection.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::fs_util::{self, StagingGuard};
use crate::store::dedup::manifest::hex;
use crate::store::{Payload, PutMode, Store};

const PACK_MAGIC: &[u8; 8] = b"SNAPPACK";
const IDX_MAGIC: &[u8; 8] = b"SNAPIDX2";
const RECORD_HEADER: u64 = 41;
const IDX_ENTRY: usize = 49;

/// Makes pack names of one process distinct.
static NONCE: AtomicU64 = AtomicU64::new(0);

/// The largest chunk an index may describe (chunkings make at most 256 KiB).
pub(crate) const MAX_CHUNK: u32 = 16 << 20;

/// The prefix of every object the dedup layer keeps besides manifests.
pub(crate) const PREFIX: &str = "chunks-";

/// Where one chunk is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdxEntry {
    pub hash: [u8; 32],
    /// Offset of its zstd frame in the pack.
    pub offset: u64,
    /// Length of the frame.
    pub clen: u32,
    /// Length of the chunk.
    pub ulen: u32,
    /// For a delta, the whole chunk whose bytes are its zstd dictionary.
    pub base: Option<[u8; 32]>,
}

/// The key of a pack's index.
pub(crate) fn idx_key(pack_key: &str) -> String {
    format!("{}.idx", pack_key.trim_end_matches(".pack"))
}

/// The key of the pack an index describes.
pub(crate) fn pack_of_idx(idx_key: &str) -> String {
    format!("{}.pack", idx_key.trim_end_matches(".idx"))
}

/// Whether `key` is a pack.
pub(crate) fn is_pack(key: &str) -> bool {
    key.starts_with(PREFIX) && key.ends_with(".pack")
}

/// Whether `key` is a pack index.
pub(crate) fn is_idx(key: &str) -> bool {
    key.starts_with(PREFIX) && key.ends_with(".idx")
}

/// A pack being written: a staging file in `dir`, published by [`finish`](Self::finish).
#[derive(Debug)]
pub(crate) struct PackWriter {
    dir: PathBuf,
    file: Option<(StagingGuard, BufWriter<File>)>,
    hasher: blake3::Hasher,
    size: u64,
    entries: Vec<IdxEntry>,
}

impl PackWriter {
    /// A pack to be staged in `dir` (created on the first chunk).
    pub(crate) fn new(dir: &Path) -> Self {
        PackWriter {
            dir: dir.to_path_buf(),
            file: None,
            hasher: blake3::Hasher::new(),
            size: 0,
            entries: Vec::new(),
        }
    }

    /// Where the pack is staged.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes written so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Whether no chunk was appended.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let (guard, w) = self
            .file
            .as_mut()
            .ok_or_else(|| Error::io("write", &self.dir, std::io::Error::other("pack not open")))?;
        w.write_all(bytes)
            .map_err(|e| Error::io("write pack", guard.path(), e))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Appends a chunk (`frame` is its zstd frame; `base` the dictionary chunk of a delta)
    /// and returns where it is.
    ///
    /// # Errors
    /// I/O errors naming the staging file.
    pub(crate) fn append(
        &mut self,
        hash: [u8; 32],
        ulen: u32,
        base: Option<[u8; 32]>,
        frame: &[u8],
    ) -> Result<IdxEntry> {
        if self.file.is_none() {
            fs_util::create_private_dir(&self.dir)?;
            let path = fs_util::staging_path(&self.dir, "pack");
            let f = fs_util::create_new_private(&path)?;
            self.file = Some((
                StagingGuard::new(path),
                BufWriter::with_capacity(1 << 20, f),
            ));
            self.write(PACK_MAGIC)?;
        }
        let clen = u32::try_from(frame.len())
            .map_err(|_| Error::invalid("chunk", "a compressed chunk over 4 GiB"))?;
        let mut head = [0u8; RECORD_HEADER as usize];
        head[..32].copy_from_slice(&hash);
        head[32] = u8::from(base.is_some());
        head[33..37].copy_from_slice(&ulen.to_le_bytes());
        head[37..41].copy_from_slice(&clen.to_le_bytes());
        self.write(&head)?;
        if let Some(b) = &base {
            self.write(b)?;
        }
        let entry = IdxEntry {
            hash,
            offset: self.size,
            clen,
            ulen,
            base,
        };
        self.write(frame)?;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Makes the pack durable and publishes it, then its index, into `store`; returns the
    /// pack's key and entries (`None` for a pack with no chunk).
    ///
    /// # Errors
    /// The store's errors; the staging file is removed.
    pub(crate) fn finish(self, store: &dyn Store) -> Result<Option<(String, Vec<IdxEntry>)>> {
        let Some((guard, w)) = self.file else {
            return Ok(None);
        };
        let f = w
            .into_inner()
            .map_err(|e| Error::io("write pack", guard.path(), e.into_error()))?;
        drop(f);
        fs_util::sync_file(guard.path())?;
        // A name of its own, never an earlier pack's: a pack with the same chunks may exist,
        // condemned, and must not come back to life under a new snapshot.
        let mut id = blake3::Hasher::new();
        id.update(self.hasher.finalize().as_bytes());
        id.update(&std::process::id().to_le_bytes());
        id.update(&NONCE.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        id.update(&nanos.to_le_bytes());
        let key = format!("{PREFIX}{}.pack", &id.finalize().to_hex()[..32]);
        store.put(&key, Payload::File(guard.path()), PutMode::Create)?;
        drop(guard);
        let idx = encode_idx(self.size, &self.entries);
        match store.put(&idx_key(&key), Payload::Bytes(&idx), PutMode::Create) {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(Some((key, self.entries)))
    }
}

/// An index's bytes.
pub(crate) fn encode_idx(pack_size: u64, entries: &[IdxEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * IDX_ENTRY + 32);
    out.extend_from_slice(IDX_MAGIC);
    out.extend_from_slice(&pack_size.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.hash);
        out.push(u8::from(e.base.is_some()));
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.clen.to_le_bytes());
        out.extend_from_slice(&e.ulen.to_le_bytes());
        if let Some(b) = &e.base {
            out.extend_from_slice(b);
        }
    }
    let trailer = blake3::hash(&out);
    out.extend_from_slice(trailer.as_bytes());
    out
}

/// Decodes the index stored under `key`: the pack's size and its entries.
///
/// # Errors
/// [`Error::ChecksumMismatch`] naming `key` when it is damaged.
pub(crate) fn decode_idx(key: &str, bytes: &[u8]) -> Result<(u64, Vec<IdxEntry>)> {
    let damaged = |actual: String| Error::ChecksumMismatch {
        key: key.to_string(),
        expected: "a sound pack index".into(),
        actual,
    };
    if bytes.len() < 16 + 32 || !bytes.starts_with(IDX_MAGIC) {
        return Err(damaged("not a pack index".into()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    let actual = blake3::hash(body);
    if actual.as_bytes() != trailer {
        return Err(damaged(format!(
            "trailer {} for content {}",
            hex(trailer),
            actual.to_hex()
        )));
    }
    let le64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let hash32 = |b: &[u8]| {
        let mut h = [0u8; 32];
        h.copy_from_slice(b);
        h
    };
    let size = le64(&body[8..16]);
    let mut entries = Vec::with_capacity((body.len() - 16) / IDX_ENTRY);
    let mut rest = &body[16..];
    while !rest.is_empty() {
        if rest.len() < IDX_ENTRY || rest[32] > 1 {
            return Err(damaged("an index of the wrong length".into()));
        }
        let e = &rest[..IDX_ENTRY];
        let (base, used) = if e[32] == 1 {
            let b = rest
                .get(IDX_ENTRY..IDX_ENTRY + 32)
                .ok_or_else(|| damaged("an index of the wrong length".into()))?;
            (Some(hash32(b)), IDX_ENTRY + 32)
        } else {
            (None, IDX_ENTRY)
        };
        let entry = IdxEntry {
            hash: hash32(&e[..32]),
            offset: le64(&e[33..41]),
            clen: le32(&e[41..45]),
            ulen: le32(&e[45..49]),
            base,
        };
        // Within the pack, and no chunk larger than any chunking makes.
        if entry.offset.saturating_add(u64::from(entry.clen)) > size || entry.ulen > MAX_CHUNK {
            return Err(damaged(format!(
                "an entry past the pack's {size} bytes or of {} bytes",
                entry.ulen
            )));
        }
        entries.push(entry);
        rest = &rest[used..];
    }
    Ok((size, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_pack_and_its_index_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let store = MemoryStore::new();
        let mut w = PackWriter::new(dir.path());
        assert!(w.is_empty());
        let a = w.append([7; 32], 10, None, b"frame-a")?;
        let b = w.append([8; 32], 20, Some([7; 32]), b"frame-bb")?;
        assert_eq!(a.offset, 8 + RECORD_HEADER);
        assert_eq!(b.offset, a.offset + 7 + RECORD_HEADER + 32);
        assert_eq!(b.base, Some([7; 32]));
        let (key, entries) = w.finish(&store)?.expect("a pack");
        assert!(is_pack(&key) && is_idx(&idx_key(&key)));
        assert_eq!(pack_of_idx(&idx_key(&key)), key);
        let pack = crate::store::StoreExt::get_bytes(&store, &key)?;
        assert_eq!(&pack[a.offset as usize..a.offset as usize + 7], b"frame-a");
        let idx = crate::store::StoreExt::get_bytes(&store, &idx_key(&key))?;
        assert_eq!(decode_idx("i", &idx)?, (pack.len() as u64, entries));
        let mut bad = idx.clone();
        bad[20] ^= 0x10;
        assert!(matches!(
            decode_idx("i", &bad),
            Err(Error::ChecksumMismatch { .. })
        ));
        // Nothing is left in the staging directory.
        assert_eq!(
            std::fs::read_dir(dir.path()).map(|d| d.count()).ok(),
            Some(0)
        );
        Ok(())
    }
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn an_entry_past_the_pack_or_too_large_is_damage() {
        let e = IdxEntry {
            hash: [1; 32],
            offset: 100,
            clen: 50,
            ulen: 4096,
            base: None,
        };
        assert!(decode_idx("i", &encode_idx(150, &[e])).is_ok());
        assert!(matches!(
            decode_idx("i", &encode_idx(149, &[e])),
            Err(Error::ChecksumMismatch { .. })
        ));
        let huge = IdxEntry {
            ulen: MAX_CHUNK + 1,
            ..e
        };
        assert!(decode_idx("i", &encode_idx(150, &[huge])).is_err());
    }
}
