//! Reassembling an image from its manifest: every chunk read from its pack, decompressed on
//! every core, checked against its hash, written in order; the whole image's checksum checked
//! at the end. A damaged or missing chunk is named: which snapshot, which chunk, at which byte
//! of the image, in which pack.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dedup::index::{ChunkIndex, IdxCache};
use crate::store::dedup::manifest::{Manifest, hex};
use crate::store::dedup::pack::IdxEntry;
use crate::store::dedup::writer::BATCH;

/// Remote packs kept in memory while an image is read.
const REMOTE_PACKS: usize = 4;

/// Reads frames out of packs: in place for a store of local files, else whole packs fetched
/// and a few kept.
struct Packs<'a> {
    store: &'a dyn Store,
    files: Vec<Option<File>>,
    fetched: VecDeque<(u32, Arc<Vec<u8>>)>,
}

impl Packs<'_> {
    fn frame(&mut self, index: &ChunkIndex, pack: u32, e: &IdxEntry) -> Result<Vec<u8>> {
        let key = &index.packs[pack as usize];
        let mut frame = vec![0u8; e.clen as usize];
        if let Some(local) = self.store.local() {
            let slot = &mut self.files[pack as usize];
            if slot.is_none() {
                let path = local.object_path(key)?;
                let f = File::open(&path).map_err(|err| match err.kind() {
                    io::ErrorKind::NotFound => Error::BlobMissing { key: key.clone() },
                    _ => Error::io("open", &path, err),
                })?;
                *slot = Some(f);
            }
            if let Some(f) = slot {
                f.read_exact_at(&mut frame, e.offset)
                    .map_err(|err| match err.kind() {
                        io::ErrorKind::UnexpectedEof => Error::ChecksumMismatch {
                            key: key.clone(),
                            expected: format!("a chunk at byte {}", e.offset),
                            actual: "a pack that ends before it".into(),
                        },
                        _ => Error::io("read", key.as_str(), err),
                    })?;
            }
            return Ok(frame);
        }
        let bytes = match self.fetched.iter().find(|(p, _)| *p == pack) {
            Some((_, b)) => b.clone(),
            None => {
                let b = Arc::new(self.store.get(key)?.bytes);
                if self.fetched.len() == REMOTE_PACKS {
                    self.fetched.pop_front();
                }
                self.fetched.push_back((pack, b.clone()));
                b
            }
        };
        let start = usize::try_from(e.offset).unwrap_or(usize::MAX);
        let got = bytes
            .get(start..start.saturating_add(e.clen as usize))
            .ok_or_else(|| Error::ChecksumMismatch {
                key: key.clone(),
                expected: format!("a chunk at byte {}", e.offset),
                actual: "a pack that ends before it".into(),
            })?;
        frame.copy_from_slice(got);
        Ok(frame)
    }
}

/// Writes the image `key` described by `manifest` to `out`.
///
/// # Errors
/// [`Error::BlobMissing`] for a pack or chunk that is gone, [`Error::ChecksumMismatch`] for a
/// chunk (or the whole image) whose bytes do not match, naming where; I/O errors of `out`.
pub(crate) fn read_image(
    store: &dyn Store,
    cache: &IdxCache,
    key: &str,
    manifest: &Manifest,
    out: &mut dyn Write,
) -> Result<()> {
    let index = ChunkIndex::load_packs(store, cache, &manifest.header.packs)?;
    let mut packs = Packs {
        store,
        files: (0..index.packs.len()).map(|_| None).collect(),
        fetched: VecDeque::new(),
    };
    let mut whole = blake3::Hasher::new();
    let mut at = 0u64;
    let mut i = 0usize;
    while i < manifest.chunks.len() {
        // A batch: the frames of the next BATCH bytes of image.
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while i < manifest.chunks.len() && bytes < BATCH {
            let c = &manifest.chunks[i];
            let (pack, e) = index
                .locs
                .get(&c.hash)
                .copied()
                .ok_or_else(|| Error::BlobMissing {
                    key: format!(
                        "{key}: chunk {i} ({}) at byte {}",
                        hex(&c.hash[..8]),
                        at + bytes as u64
                    ),
                })?;
            let frame = packs.frame(&index, pack, &e)?;
            batch.push((i, at + bytes as u64, pack, frame));
            bytes += c.len as usize;
            i += 1;
        }
        let plain = decompress_all(&batch, manifest, &index, key)?;
        for p in &plain {
            whole.update(p);
            out.write_all(p).map_err(|e| Error::io("write", key, e))?;
        }
        at += bytes as u64;
    }
    let actual = format!("blake3:{}", whole.finalize().to_hex());
    if at != manifest.header.size || actual != manifest.header.checksum {
        return Err(Error::ChecksumMismatch {
            key: key.to_string(),
            expected: manifest.header.checksum.clone(),
            actual,
        });
    }
    Ok(())
}

/// The plain bytes of a batch of frames, decompressed and checked on every core.
fn decompress_all(
    batch: &[(usize, u64, u32, Vec<u8>)],
    manifest: &Manifest,
    index: &ChunkIndex,
    key: &str,
) -> Result<Vec<Vec<u8>>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let per = batch.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(per)
            .map(|part| {
                s.spawn(move || -> Result<Vec<Vec<u8>>> {
                    part.iter()
                        .map(|(i, at, pack, frame)| {
                            let c = &manifest.chunks[*i];
                            let where_ = || {
                                format!(
                                    "{key}: chunk {i} at byte {at} (pack {})",
                                    index.packs[*pack as usize]
                                )
                            };
                            let plain =
                                zstd::bulk::decompress(frame, c.len as usize).map_err(|e| {
                                    Error::ChecksumMismatch {
                                        key: where_(),
                                        expected: hex(&c.hash),
                                        actual: format!("a frame that does not decode: {e}"),
                                    }
                                })?;
                            let h = blake3::hash(&plain);
                            if h.as_bytes() != &c.hash || plain.len() != c.len as usize {
                                return Err(Error::ChecksumMismatch {
                                    key: where_(),
                                    expected: hex(&c.hash),
                                    actual: h.to_hex().to_string(),
                                });
                            }
                            Ok(plain)
                        })
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for h in handles {
            out.extend(h.join().map_err(|_| {
                Error::io("decompress", key, io::Error::other("a thread panicked"))
            })??);
        }
        Ok(out)
    })
}
