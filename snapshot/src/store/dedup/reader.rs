//! Reassembling an image from its manifest, window by window in image order: each window's
//! chunks (16 MiB of image) are read from their packs (small reads, from the page cache for a
//! local store), decoded on every core — a delta with its base — and checked against their
//! hashes, and the window is written at once. A damaged or missing chunk is named: which
//! snapshot, where in the image, which pack.

use std::io::Write;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::dedup::frames::Frames;
use crate::store::dedup::index::{ChunkIndex, IdxCache};
use crate::store::dedup::manifest::{Manifest, hex};
use crate::store::dedup::pack::IdxEntry;
use crate::store::dedup::parallel::map_in_parts;
use crate::store::dedup::writer::{BATCH, PART};

/// One chunk of a window: where it is kept, and where it starts in the image.
struct Wanted {
    hash: [u8; 32],
    pack: u32,
    entry: IdxEntry,
    at: u64,
}

/// Writes the image `key` described by `manifest` to `out`, window by window in image order
/// (each window's chunks read and decoded on every core, then written at once).
///
/// # Errors
/// [`Error::BlobMissing`] for a pack or chunk that is gone, [`Error::ChecksumMismatch`] for a
/// chunk whose bytes do not match, naming where; I/O errors of `out`.
pub(crate) fn read_image(
    store: &dyn Store,
    cache: &IdxCache,
    key: &str,
    manifest: &Manifest,
    out: &mut dyn Write,
) -> Result<()> {
    let index = ChunkIndex::load_packs(store, cache, &manifest.header.packs)?;
    let total: u64 = manifest.chunks.iter().map(|c| u64::from(c.len)).sum();
    if total != manifest.header.size {
        return Err(Error::ChecksumMismatch {
            key: key.to_string(),
            expected: format!("{} bytes", manifest.header.size),
            actual: format!("chunks of {total} bytes in all"),
        });
    }
    let mut at = 0u64;
    let mut i = 0usize;
    while i < manifest.chunks.len() {
        let mut window = Vec::new();
        let mut bytes = 0usize;
        while i < manifest.chunks.len() && bytes < BATCH {
            let c = &manifest.chunks[i];
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
            window.push(Wanted {
                hash: c.hash,
                pack,
                entry,
                at,
            });
            bytes += c.len as usize;
            at += u64::from(c.len);
            i += 1;
        }
        let plain = decode_window(store, &window, &index, key, bytes)?;
        out.write_all(&plain)
            .map_err(|e| Error::io("write", key, e))?;
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

/// The bytes of a window of the image: its chunks read, decoded (a delta with its base) and
/// checked on every core, in parts taken in turn.
fn decode_window(
    store: &dyn Store,
    window: &[Wanted],
    index: &ChunkIndex,
    key: &str,
    bytes: usize,
) -> Result<Vec<u8>> {
    let plains = map_in_parts(
        window,
        PART,
        || Frames::new(store),
        |frames, w| {
            let at = || {
                format!(
                    "{key}: chunk {} at byte {} (pack {})",
                    hex(&w.hash[..8]),
                    w.at,
                    index.packs[w.pack as usize]
                )
            };
            let base = match &w.entry.base {
                Some(b) => Some(frames.plain(index, b)?),
                None => None,
            };
            let frame = frames.frame(&index.packs[w.pack as usize], &w.entry)?;
            frames.decode(&frame, &w.hash, w.entry.ulen, base.as_deref(), &at)
        },
    )?;
    let mut out = Vec::with_capacity(bytes);
    for p in plains {
        out.extend_from_slice(&p);
    }
    Ok(out)
}
