//! Writing an image into the dedup layer: cut into chunks as its bytes arrive, each chunk
//! hashed, the ones the store does not hold compressed into a new pack; the result is the
//! image's manifest.
//!
//! Bytes are taken in batches of [`BATCH`]; a batch's chunks are hashed and compressed on every
//! core (the whole image's checksum alongside), then appended in order. Memory stays at a
//! couple of batches whatever the image's size, plus 36 bytes of manifest per chunk.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dedup::chunking::Chunking;
use crate::store::dedup::frames::{Frames, encode_with};
use crate::store::dedup::index::ChunkIndex;
use crate::store::dedup::manifest::{ChunkRef, Manifest, ManifestHeader};
use crate::store::dedup::pack::PackWriter;
use crate::store::dedup::parallel::map_in_parts;

/// Bytes cut and processed at a time.
pub(crate) const BATCH: usize = 16 << 20;
/// Chunks a thread takes at a time.
pub(crate) const PART: usize = 64;

/// An image being written; [`finish`](Self::finish) publishes its last pack and gives the
/// manifest.
pub(crate) struct ImageWriter<'a> {
    store: &'a dyn Store,
    known: &'a ChunkIndex,
    reference: Option<&'a Manifest>,
    level: i32,
    pack_target: u64,
    chunking: Option<Chunking>,
    buf: Vec<u8>,
    at: u64,
    whole: blake3::Hasher,
    chunks: Vec<ChunkRef>,
    fresh: HashSet<[u8; 32]>,
    packs: BTreeSet<String>,
    pack: PackWriter,
    added_bytes: u64,
    added_chunks: u64,
}

impl std::fmt::Debug for ImageWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageWriter")
            .field("at", &self.at)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// One chunk of a batch after the parallel step: its hash, and when the store did not hold it,
/// its frame and, for a delta, the base chunk that is its dictionary.
type Hashed = ([u8; 32], Option<(Vec<u8>, Option<[u8; 32]>)>);

impl<'a> ImageWriter<'a> {
    /// A writer into `store` that reuses the chunks of `known`, writes changed pages as deltas
    /// against the same pages of `reference` (an earlier image's manifest) and stages packs in
    /// `staging`.
    pub(crate) fn new(
        store: &'a dyn Store,
        known: &'a ChunkIndex,
        reference: Option<&'a Manifest>,
        staging: &Path,
        level: i32,
        pack_target: u64,
    ) -> Self {
        ImageWriter {
            store,
            known,
            reference,
            level,
            pack_target,
            chunking: None,
            buf: Vec::with_capacity(BATCH + (1 << 20)),
            at: 0,
            whole: blake3::Hasher::new(),
            chunks: Vec::new(),
            fresh: HashSet::new(),
            packs: BTreeSet::new(),
            pack: PackWriter::new(staging),
            added_bytes: 0,
            added_chunks: 0,
        }
    }

    /// Cuts and stores what the buffer holds (all of it when `last`).
    fn process(&mut self, last: bool) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunking = *self.chunking.get_or_insert_with(|| {
            Chunking::detect(&self.buf[..self.buf.len().min(Chunking::PREFIX)])
        });
        // Taken out while its pieces are stored (finishing a pack needs `self`).
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.store_pieces(&buf, chunking, last);
        let total = match r {
            Ok(t) => t,
            Err(e) => {
                self.buf = buf;
                return Err(e);
            }
        };
        buf.drain(..total);
        self.buf = buf;
        self.at += total as u64;
        Ok(())
    }

    /// Stores the chunks `chunking` cuts at the start of `buf`; returns the bytes they cover.
    fn store_pieces(&mut self, buf: &[u8], chunking: Chunking, last: bool) -> Result<usize> {
        let lens = chunking.cut(buf, self.at, last);
        let total: usize = lens.iter().sum();
        let mut pieces = Vec::with_capacity(lens.len());
        let mut pos = 0;
        for len in &lens {
            pieces.push(&buf[pos..pos + len]);
            pos += len;
        }
        // Deltas only where chunks are pages at fixed places, against an image cut the same way.
        let reference = self.reference.filter(|r| {
            matches!(chunking, Chunking::Fixed { .. }) && r.header.chunking == chunking.describe()
        });
        let ctx = Ctx {
            store: self.store,
            known: self.known,
            reference,
            first: self.chunks.len(),
            level: self.level,
        };
        let hashed = hash_and_compress(&pieces, &ctx, &buf[..total], &mut self.whole)?;
        for (piece, (hash, fresh)) in pieces.iter().zip(hashed) {
            let len = u32::try_from(piece.len())
                .map_err(|_| Error::invalid("chunk", "a chunk over 4 GiB"))?;
            self.chunks.push(ChunkRef { hash, len });
            // The parallel step decided: a chunk the store holds has no frame.
            let Some((frame, base)) = fresh else {
                self.use_known(&hash);
                continue;
            };
            if !self.fresh.insert(hash) {
                continue; // stored earlier in this image
            }
            if let Some(b) = &base {
                self.use_known(b);
            }
            self.pack.append(hash, len, base, &frame)?;
            self.added_bytes += frame.len() as u64;
            self.added_chunks += 1;
            if self.pack.size() >= self.pack_target {
                self.finish_pack()?;
            }
        }
        Ok(total)
    }

    /// Records that the image uses the known chunk `hash` (and a delta's base): their packs.
    fn use_known(&mut self, hash: &[u8; 32]) {
        if let Some((pack, e)) = self.known.locs.get(hash) {
            self.packs.insert(self.known.packs[*pack as usize].clone());
            if let Some((bpack, _)) = e.base.and_then(|b| self.known.locs.get(&b)) {
                self.packs.insert(self.known.packs[*bpack as usize].clone());
            }
        }
    }

    fn finish_pack(&mut self) -> Result<()> {
        let dir = self.pack_dir();
        let pack = std::mem::replace(&mut self.pack, PackWriter::new(&dir));
        if let Some((key, _)) = pack.finish(self.store)? {
            self.packs.insert(key);
        }
        Ok(())
    }

    fn pack_dir(&self) -> std::path::PathBuf {
        self.pack.dir().to_path_buf()
    }

    /// Stores the rest and returns the manifest (not yet published). Packs already published
    /// by this writer are garbage if the manifest never is; a collection removes them.
    ///
    /// # Errors
    /// The store's errors; I/O errors of the staging directory.
    pub(crate) fn finish(mut self) -> Result<Manifest> {
        while !self.buf.is_empty() {
            self.process(true)?;
        }
        if !self.pack.is_empty() {
            self.finish_pack()?;
        }
        Ok(Manifest {
            header: ManifestHeader {
                format: 1,
                size: self.at,
                checksum: format!("blake3:{}", self.whole.finalize().to_hex()),
                chunking: self.chunking.unwrap_or(Chunking::Cdc).describe(),
                packs: self.packs.into_iter().collect(),
                added_bytes: self.added_bytes,
                added_chunks: self.added_chunks,
                begun: None,
            },
            chunks: self.chunks,
        })
    }
}

impl Write for ImageWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BATCH {
            self.process(false).map_err(io::Error::other)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the parallel step of a batch needs.
struct Ctx<'a> {
    store: &'a dyn Store,
    known: &'a ChunkIndex,
    reference: Option<&'a Manifest>,
    /// The number of the batch's first chunk in the image.
    first: usize,
    level: i32,
}

/// Whether the store holds `hash` in a form a new image may use: a whole chunk, or a delta
/// whose base it holds.
fn usable(known: &ChunkIndex, hash: &[u8; 32]) -> bool {
    match known.locs.get(hash) {
        Some((_, e)) => e
            .base
            .is_none_or(|b| known.locs.get(&b).is_some_and(|(_, be)| be.base.is_none())),
        None => false,
    }
}

/// The whole chunk a new version of the chunk at place `n` can be a delta against: the
/// reference image's chunk there (or its base, when that one is a delta).
fn base_for(ctx: &Ctx<'_>, n: usize, len: usize, hash: &[u8; 32]) -> Option<[u8; 32]> {
    let r = ctx.reference?.chunks.get(n)?;
    if r.len as usize != len || &r.hash == hash || !usable(ctx.known, &r.hash) {
        return None;
    }
    let (_, e) = ctx.known.locs.get(&r.hash)?;
    Some(e.base.unwrap_or(r.hash))
}

/// The frame of a piece the store lacks: a delta (the piece compressed with its base as the
/// dictionary) when that is smaller than a quarter of the piece, else the piece compressed.
fn frame_of(
    ctx: &Ctx<'_>,
    frames: &mut Frames<'_>,
    z: &mut zstd::zstd_safe::CCtx<'static>,
    n: usize,
    piece: &[u8],
    hash: &[u8; 32],
) -> Result<(Vec<u8>, Option<[u8; 32]>)> {
    if let Some(b) = base_for(ctx, n, piece.len(), hash) {
        // A base that cannot be read (damaged, collected meanwhile) only costs the delta.
        if let Ok(base) = frames.plain(ctx.known, &b) {
            let delta = encode_with(z, piece, Some(&base), ctx.level)?;
            if delta.len() < piece.len() / 4 {
                return Ok((delta, Some(b)));
            }
        }
    }
    Ok((encode_with(z, piece, None, ctx.level)?, None))
}

/// The hash of every piece, and the frame of those the store lacks, on every core; `whole`
/// takes `all` (the pieces' bytes in order) alongside.
fn hash_and_compress(
    pieces: &[&[u8]],
    ctx: &Ctx<'_>,
    all: &[u8],
    whole: &mut blake3::Hasher,
) -> Result<Vec<Hashed>> {
    let numbered: Vec<(usize, &[u8])> = pieces
        .iter()
        .enumerate()
        .map(|(j, p)| (ctx.first + j, *p))
        .collect();
    std::thread::scope(|s| {
        let whole_done = s.spawn(move || {
            whole.update(all);
        });
        // One zstd context and pack reader per thread: making them per chunk costs more than
        // a page's compression.
        let out = map_in_parts(
            &numbered,
            PART,
            || Ok((zstd::zstd_safe::CCtx::create(), Frames::new(ctx.store)?)),
            |(z, frames), &(n, p)| {
                let hash = *blake3::hash(p).as_bytes();
                if usable(ctx.known, &hash) {
                    return Ok((hash, None));
                }
                Ok((hash, Some(frame_of(ctx, frames, z, n, p, &hash)?)))
            },
        );
        whole_done.join().map_err(|_| {
            Error::io(
                "hash",
                "image",
                io::Error::other("the hashing thread panicked"),
            )
        })?;
        out
    })
}
