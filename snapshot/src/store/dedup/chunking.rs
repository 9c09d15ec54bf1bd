//! How an image is cut into chunks: along the engine's pages where the image says what they
//! are, content-defined elsewhere.
//!
//! The store sees only bytes, so it reads the engine from the image's first bytes, as the
//! engines themselves do: a SQLite database (`SQLite format 3\0`) is cut into its pages (the
//! page size is in its header), a DuckDB file (`DUCK` at byte 8) into its 12 KiB of headers and
//! then 256 KiB blocks (DuckDB's default block allocation size; a file with another block size
//! still round-trips, only with less sharing). Anything else — archives, bundles, plain files —
//! is cut by content (FastCDC, 16/64/256 KiB), so that an insertion shifts no chunk boundary
//! but its own.

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const CDC_MIN: u32 = 16 * 1024;
const CDC_AVG: u32 = 64 * 1024;
const CDC_MAX: u32 = 256 * 1024;
const DUCKDB_HEADERS: usize = 3 * 4096;
const DUCKDB_BLOCK: usize = 256 * 1024;

/// How an image is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunking {
    /// A first chunk of `first` bytes (none when 0), then chunks of `size` bytes.
    Fixed { first: usize, size: usize },
    /// Content-defined chunks.
    Cdc,
}

impl Chunking {
    /// The chunking for an image that starts with `prefix` (at least its first 100 bytes when
    /// the image is that long).
    pub(crate) fn detect(prefix: &[u8]) -> Chunking {
        if prefix.len() >= 18 && prefix.starts_with(SQLITE_MAGIC) {
            let size = match u16::from_be_bytes([prefix[16], prefix[17]]) {
                1 => 65536,
                n if n >= 512 && n.is_power_of_two() => usize::from(n),
                _ => return Chunking::Cdc,
            };
            return Chunking::Fixed { first: 0, size };
        }
        if prefix.len() >= 12 && &prefix[8..12] == b"DUCK" {
            return Chunking::Fixed {
                first: DUCKDB_HEADERS,
                size: DUCKDB_BLOCK,
            };
        }
        Chunking::Cdc
    }

    /// How many bytes [`detect`](Self::detect) wants to see.
    pub(crate) const PREFIX: usize = 100;

    /// As recorded in a manifest.
    pub(crate) fn describe(&self) -> String {
        match self {
            Chunking::Fixed { first: 0, size } => format!("pages:{size}"),
            Chunking::Fixed { first, size } => format!("blocks:{first}+{size}"),
            Chunking::Cdc => format!("cdc:{CDC_MIN}/{CDC_AVG}/{CDC_MAX}"),
        }
    }

    /// The lengths of the chunks at the start of `buf`, which begins at byte `at` of the
    /// image. Unless `last` (the image ends with `buf`), a piece that more bytes could change
    /// is left for the next call: the lengths may sum to less than `buf.len()`.
    pub(crate) fn cut(&self, buf: &[u8], at: u64, last: bool) -> Vec<usize> {
        let mut out = Vec::new();
        match *self {
            Chunking::Fixed { first, size } => {
                let mut pos = 0usize;
                let mut offset = at;
                while pos < buf.len() {
                    let want = if (offset as usize) < first {
                        first - offset as usize
                    } else {
                        size
                    };
                    let len = want.min(buf.len() - pos);
                    if len < want && !last {
                        break;
                    }
                    out.push(len);
                    pos += len;
                    offset += len as u64;
                }
            }
            Chunking::Cdc => {
                let chunks: Vec<usize> =
                    fastcdc::v2020::FastCDC::new(buf, CDC_MIN, CDC_AVG, CDC_MAX)
                        .map(|c| c.length)
                        .collect();
                let keep = if last {
                    chunks.len()
                } else {
                    chunks.len().saturating_sub(1)
                };
                out.extend_from_slice(&chunks[..keep]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_are_recognised_by_their_headers() {
        let mut sqlite = SQLITE_MAGIC.to_vec();
        sqlite.extend_from_slice(&[0x10, 0x00]);
        assert_eq!(
            Chunking::detect(&sqlite),
            Chunking::Fixed {
                first: 0,
                size: 4096
            }
        );
        sqlite[16..18].copy_from_slice(&[0, 1]);
        assert_eq!(Chunking::detect(&sqlite).describe(), "pages:65536");
        sqlite[16..18].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(Chunking::detect(&sqlite), Chunking::Cdc);
        let mut duck = vec![0u8; 16];
        duck[8..12].copy_from_slice(b"DUCK");
        assert_eq!(Chunking::detect(&duck).describe(), "blocks:12288+262144");
        assert_eq!(Chunking::detect(b"PK\x03\x04"), Chunking::Cdc);
    }

    #[test]
    fn fixed_cuts_keep_partial_pages_for_later() {
        let c = Chunking::Fixed { first: 10, size: 4 };
        assert_eq!(c.cut(&[0; 21], 0, false), vec![10, 4, 4]);
        assert_eq!(c.cut(&[0; 21], 0, true), vec![10, 4, 4, 3]);
        assert_eq!(c.cut(&[0; 9], 3, false), vec![7]);
    }

    #[test]
    fn content_defined_cuts_cover_the_input() {
        let data: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let all = Chunking::Cdc.cut(&data, 0, true);
        assert_eq!(all.iter().sum::<usize>(), data.len());
        let some = Chunking::Cdc.cut(&data, 0, false);
        assert_eq!(some.len() + 1, all.len());
        assert!(all.iter().all(|&l| l <= CDC_MAX as usize));
    }
}
