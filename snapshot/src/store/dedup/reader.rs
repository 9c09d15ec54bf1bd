//! Reassembling an image from its manifest, pack by pack: every distinct chunk's frame is read
//! once (a delta's base once more, unless the image has it), in the order it sits in its pack, decompressed on every core, checked against its hash
//! and written at each place the image has it. Whole chunks first, then deltas (their bases are
//! whole chunks: read back from the image when it has them, else from their packs). A damaged
//! or missing chunk is named: which snapshot, where in the image, which pack.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dedup::frames::{self, Frames};
use crate::store::dedup::index::{ChunkIndex, IdxCache};
use crate::store::dedup::manifest::{Manifest, hex};
use crate::store::dedup::pack::IdxEntry;
use crate::store::dedup::writer::BATCH;

/// Where an image is written: at offsets, and read back (a delta's base).
pub(crate) trait Sink {
    /// Writes `bytes` at `offset`.
    ///
    /// # Errors
    /// I/O errors.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()>;
    /// Reads `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// I/O errors.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// A file being written.
pub(crate) struct FileSink<'a> {
    pub file: &'a File,
    pub path: &'a Path,
}

impl Sink for FileSink<'_> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io("write", self.path, e))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read", self.path, e))
    }
}

impl Sink for Vec<u8> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(bytes.len());
        if self.len() < end {
            self.resize(end, 0);
        }
        self[start..end].copy_from_slice(bytes);
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let got = self
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| Error::invalid("offset", "past the end of the image"))?;
        buf.copy_from_slice(got);
        Ok(())
    }
}

/// One distinct chunk to write: its hash, where it is kept, and where the image has it.
struct Wanted {
    hash: [u8; 32],
    pack: u32,
    entry: IdxEntry,
    positions: Vec<u64>,
}

/// Writes the image `key` described by `manifest` into `sink`.
///
/// # Errors
/// [`Error::BlobMissing`] for a pack or chunk that is gone, [`Error::ChecksumMismatch`] for a
/// chunk whose bytes do not match, naming where; I/O errors of the sink.
pub(crate) fn read_image(
    store: &dyn Store,
    cache: &IdxCache,
    key: &str,
    manifest: &Manifest,
    sink: &mut dyn Sink,
) -> Result<()> {
    let index = ChunkIndex::load_packs(store, cache, &manifest.header.packs)?;
    let mut by_hash: HashMap<[u8; 32], usize> = HashMap::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut at = 0u64;
    for (i, c) in manifest.chunks.iter().enumerate() {
        match by_hash.get(&c.hash) {
            Some(&w) if wanted[w].entry.ulen == c.len => wanted[w].positions.push(at),
            Some(_) => return Err(length_mismatch(key, i, at)),
            None => {
                let (pack, entry) =
                    index
                        .locs
                        .get(&c.hash)
                        .copied()
                        .ok_or_else(|| Error::BlobMissing {
                            key: format!("{key}: chunk {i} ({}) at byte {at}", hex(&c.hash[..8])),
                        })?;
                if entry.ulen != c.len {
                    return Err(length_mismatch(key, i, at));
                }
                by_hash.insert(c.hash, wanted.len());
                wanted.push(Wanted {
                    hash: c.hash,
                    pack,
                    entry,
                    positions: vec![at],
                });
            }
        }
        at += u64::from(c.len);
    }
    if at != manifest.header.size {
        return Err(Error::ChecksumMismatch {
            key: key.to_string(),
            expected: format!("{} bytes", manifest.header.size),
            actual: format!("chunks of {at} bytes in all"),
        });
    }
    let (mut wholes, mut deltas): (Vec<Wanted>, Vec<Wanted>) =
        wanted.into_iter().partition(|w| w.entry.base.is_none());
    wholes.sort_by_key(|w| (w.pack, w.entry.offset));
    deltas.sort_by_key(|w| (w.pack, w.entry.offset));
    let in_image: HashMap<[u8; 32], u64> =
        wholes.iter().map(|w| (w.hash, w.positions[0])).collect();
    for pass in [&wholes, &deltas] {
        let mut start = 0;
        while start < pass.len() {
            let mut end = start;
            let mut bytes = 0usize;
            while end < pass.len() && bytes < BATCH {
                bytes += pass[end].entry.ulen as usize;
                end += 1;
            }
            let batch = &pass[start..end];
            let mut jobs = Vec::with_capacity(batch.len());
            for w in batch {
                // A base the image has is read back from it; any other is decoded by the
                // thread that decodes the delta.
                let base = match &w.entry.base {
                    None => Base::None,
                    Some(b) => match in_image.get(b) {
                        Some(&off) => {
                            let mut buf = vec![0u8; w.entry.ulen as usize];
                            sink.read_at(off, &mut buf)?;
                            Base::Plain(buf)
                        }
                        None => Base::Stored(*b),
                    },
                };
                jobs.push((w, base));
            }
            let plains = decode_all(store, &jobs, &index, key)?;
            write_coalesced(sink, &jobs, &plains)?;
            start = end;
        }
    }
    Ok(())
}

/// Writes each decoded chunk at every place the image has it, chunks that follow each other
/// in the image joined into one write (a pack written in image order becomes a few large
/// writes, not one per page).
fn write_coalesced(sink: &mut dyn Sink, jobs: &[Job<'_>], plains: &[Vec<u8>]) -> Result<()> {
    let mut places: Vec<(u64, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(i, (w, _))| w.positions.iter().map(move |&p| (p, i)))
        .collect();
    places.sort_unstable();
    let mut run: Vec<u8> = Vec::new();
    let mut run_at = 0u64;
    for (at, i) in places {
        if !run.is_empty() && run_at + run.len() as u64 != at {
            sink.write_at(run_at, &run)?;
            run.clear();
        }
        if run.is_empty() {
            run_at = at;
        }
        run.extend_from_slice(&plains[i]);
    }
    if !run.is_empty() {
        sink.write_at(run_at, &run)?;
    }
    Ok(())
}

/// A manifest whose chunk length disagrees with the chunk's (damage).
fn length_mismatch(key: &str, i: usize, at: u64) -> Error {
    Error::ChecksumMismatch {
        key: format!("{key}: chunk {i} at byte {at}"),
        expected: "the length its pack records".into(),
        actual: "another length in the manifest".into(),
    }
}

/// The base of a delta to decode.
enum Base {
    /// A whole chunk.
    None,
    /// A delta whose base's bytes are at hand.
    Plain(Vec<u8>),
    /// A delta whose base is to be read from its pack.
    Stored([u8; 32]),
}

/// A chunk to decode (its frame is read by the thread that decodes it) and its base.
type Job<'w> = (&'w Wanted, Base);

/// The plain bytes of a batch of frames, decoded and checked on every core.
fn decode_all(
    store: &dyn Store,
    jobs: &[Job<'_>],
    index: &ChunkIndex,
    key: &str,
) -> Result<Vec<Vec<u8>>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let per = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(per)
            .map(|part| {
                s.spawn(move || -> Result<Vec<Vec<u8>>> {
                    let mut z = zstd::zstd_safe::DCtx::create();
                    let mut frames = Frames::new(store)?;
                    part.iter()
                        .map(|(w, base)| {
                            let at = || {
                                format!(
                                    "{key}: chunk {} at byte {} (pack {})",
                                    hex(&w.hash[..8]),
                                    w.positions[0],
                                    index.packs[w.pack as usize]
                                )
                            };
                            let stored;
                            let base = match base {
                                Base::None => None,
                                Base::Plain(b) => Some(b.as_slice()),
                                Base::Stored(h) => {
                                    stored = frames.plain(index, h)?;
                                    Some(stored.as_slice())
                                }
                            };
                            let frame = frames.frame(&index.packs[w.pack as usize], &w.entry)?;
                            frames::decode_with(&mut z, &frame, &w.hash, w.entry.ulen, base, &at)
                        })
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(jobs.len());
        for h in handles {
            out.extend(h.join().map_err(|_| {
                Error::io(
                    "decompress",
                    key,
                    std::io::Error::other("a thread panicked"),
                )
            })??);
        }
        Ok(out)
    })
}
