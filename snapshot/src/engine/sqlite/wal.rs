//! Reading committed pages out of a SQLite write-ahead log (the documented WAL format:
//! <https://www.sqlite.org/fileformat2.html#walformat>).
//!
//! Used by the fast snapshot path: the main database file is copied raw while a read transaction
//! pins the log (no checkpoint can move past our read mark and the log cannot restart), then every
//! page of every *committed* frame in the log is written over the copy, in log order. The result
//! is the database as of the last commit in the log — a committed state — in one file.
//!
//! A frame counts only when its salts match the header and the running checksum matches, exactly
//! as SQLite decides during recovery; frames after the last commit frame (a transaction still
//! being written) are ignored.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// The committed content of a WAL: the newest committed image of each page, and the database
/// size in pages after the last commit (`None` when the log holds no commit).
#[derive(Debug, Default)]
pub(crate) struct WalOverlay {
    pub pages: HashMap<u32, Vec<u8>>,
    pub db_pages: Option<u32>,
    pub frames: u64,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn checksum(data: &[u8], big_endian: bool, s: (u32, u32)) -> (u32, u32) {
    let (mut s0, mut s1) = s;
    for pair in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(&pair[..4]), be32(&pair[4..]))
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// How many frames the WAL at `wal` holds now (by its size), for pages of `page_size` bytes:
/// taken as the read transaction begins, the bound past which [`read_committed`] never reads.
/// Frames appended later belong to transactions committed after the snapshot's, and a log
/// that writers keep appending to would otherwise be chased without end (the open read
/// transaction keeps it from restarting, so it grows as fast as they write).
pub(crate) fn frames_now(wal: &Path, page_size: u32) -> Option<u64> {
    let len = std::fs::metadata(wal).ok()?.len();
    Some(len.saturating_sub(HEADER as u64) / (FRAME_HEADER as u64 + u64::from(page_size)))
}

/// Reads the committed frames of the WAL at `wal` for a database of `page_size` bytes per page,
/// the first `max_frames` at most (`None`: to the end). A missing or empty log is an empty
/// overlay.
pub(crate) fn read_committed(
    wal: &Path,
    page_size: u32,
    max_frames: Option<u64>,
) -> Result<WalOverlay> {
    let file = match File::open(wal) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(WalOverlay::default()),
        Err(e) => return Err(Error::io("open", wal, e)),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; HEADER];
    if !read_full(&mut r, &mut header).map_err(|e| Error::io("read", wal, e))? {
        return Ok(WalOverlay::default());
    }
    let magic = be32(&header[0..4]);
    if magic & !1 != 0x377f_0682 {
        return Ok(WalOverlay::default()); // not (yet) a valid log: nothing committed in it
    }
    let big_endian = magic & 1 == 1;
    let wal_page = be32(&header[8..12]);
    if wal_page != page_size {
        return Ok(WalOverlay::default());
    }
    let salt = (be32(&header[16..20]), be32(&header[20..24]));
    let mut sum = checksum(&header[..24], big_endian, (0, 0));
    if sum != (be32(&header[24..28]), be32(&header[28..32])) {
        return Ok(WalOverlay::default());
    }

    let mut overlay = WalOverlay::default();
    let mut pending: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut fh = [0u8; FRAME_HEADER];
    let mut seen = 0u64;
    loop {
        if max_frames.is_some_and(|m| seen >= m) {
            break;
        }
        seen += 1;
        if !read_full(&mut r, &mut fh).map_err(|e| Error::io("read", wal, e))? {
            break;
        }
        let mut page = vec![0u8; page_size as usize];
        if !read_full(&mut r, &mut page).map_err(|e| Error::io("read", wal, e))? {
            break;
        }
        if (be32(&fh[8..12]), be32(&fh[12..16])) != salt {
            break;
        }
        sum = checksum(&fh[..8], big_endian, sum);
        sum = checksum(&page, big_endian, sum);
        if sum != (be32(&fh[16..20]), be32(&fh[20..24])) {
            break;
        }
        let pgno = be32(&fh[0..4]);
        let commit = be32(&fh[4..8]);
        pending.push((pgno, page));
        if commit != 0 {
            overlay.frames += pending.len() as u64;
            for (p, data) in pending.drain(..) {
                overlay.pages.insert(p, data);
            }
            overlay.db_pages = Some(commit);
        }
    }
    // Pages past the final size belong to a database that was since truncated (VACUUM).
    if let Some(n) = overlay.db_pages {
        overlay.pages.retain(|p, _| *p <= n);
    }
    Ok(overlay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_documented_recurrence() {
        // two words little-endian: s0 = 1 + 0, s1 = 2 + s0
        let data = [1u8, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(checksum(&data, false, (0, 0)), (1, 3));
        assert_eq!(checksum(&data, true, (0, 0)), (0x0100_0000, 0x0300_0000));
    }

    #[test]
    fn missing_or_garbage_log_is_empty() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let p = dir.path().join("x-wal");
        assert!(read_committed(&p, 4096, None)?.pages.is_empty());
        std::fs::write(&p, vec![0xAB; 5000]).map_err(|e| Error::io("write", &p, e))?;
        let o = read_committed(&p, 4096, None)?;
        assert!(o.pages.is_empty() && o.db_pages.is_none());
        Ok(())
    }
}
