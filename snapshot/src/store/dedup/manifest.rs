//! A snapshot's manifest: the list of its image's chunks, stored under the snapshot's blob key.
//!
//! Layout: `SNAPMAN1`, a little-endian `u32` header length, the JSON header
//! ([`ManifestHeader`]), then one entry per chunk in image order — the chunk's blake3 hash (32
//! bytes) and its length (`u32` LE) — and a trailer: the blake3 hash of everything before it,
//! so that a damaged manifest is found before any chunk is looked up.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SNAPMAN1";
const ENTRY: usize = 36;

/// What a manifest says about its snapshot besides the chunk list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestHeader {
    /// Format of the manifest (1).
    pub format: u32,
    /// The image's size in bytes (its logical size).
    pub size: u64,
    /// `blake3:<hex>` of the whole image.
    pub checksum: String,
    /// How the image was cut (`pages:4096`, `blocks:12288+262144`, `cdc:16384/65536/262144`).
    pub chunking: String,
    /// Every pack holding a chunk of the image, by key.
    pub packs: Vec<String>,
    /// Compressed bytes this snapshot added to the store (its new chunks).
    pub added_bytes: u64,
    /// Chunks this snapshot added.
    pub added_chunks: u64,
    /// When the snapshot read the list of condemned packs (its publication must follow within
    /// the grace period).
    #[serde(default)]
    pub begun: Option<chrono::DateTime<chrono::Utc>>,
}

/// One chunk of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    /// blake3 of the chunk's bytes.
    pub hash: [u8; 32],
    /// Its length.
    pub len: u32,
}

/// A decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub header: ManifestHeader,
    pub chunks: Vec<ChunkRef>,
}

/// Whether `bytes` start like a manifest.
pub(crate) fn is_manifest(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

impl Manifest {
    /// The manifest's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let header = serde_json::to_vec(&self.header)
            .map_err(|e| Error::invalid("manifest", format!("cannot serialise: {e}")))?;
        let header_len = u32::try_from(header.len())
            .map_err(|_| Error::invalid("manifest", "header over 4 GiB"))?;
        let mut out = Vec::with_capacity(8 + 4 + header.len() + self.chunks.len() * ENTRY + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&header);
        for c in &self.chunks {
            out.extend_from_slice(&c.hash);
            out.extend_from_slice(&c.len.to_le_bytes());
        }
        let trailer = blake3::hash(&out);
        out.extend_from_slice(trailer.as_bytes());
        Ok(out)
    }

    /// Decodes the manifest stored under `key`.
    ///
    /// # Errors
    /// [`Error::ChecksumMismatch`] naming `key` when it is damaged (its trailer does not match,
    /// its layout is wrong) or of a format this version cannot read.
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Manifest> {
        let damaged = |what: &str| Error::ChecksumMismatch {
            key: key.to_string(),
            expected: "a sound manifest".into(),
            actual: what.to_string(),
        };
        if !is_manifest(bytes) || bytes.len() < 8 + 4 + 32 {
            return Err(damaged("not a manifest"));
        }
        let (body, trailer) = bytes.split_at(bytes.len() - 32);
        let actual = blake3::hash(body);
        if actual.as_bytes() != trailer {
            return Err(Error::ChecksumMismatch {
                key: key.to_string(),
                expected: format!("manifest trailer {}", hex(trailer)),
                actual: actual.to_hex().to_string(),
            });
        }
        let header_len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        let rest = &body[12..];
        if rest.len() < header_len || !(rest.len() - header_len).is_multiple_of(ENTRY) {
            return Err(damaged("a manifest of the wrong length"));
        }
        let header: ManifestHeader = serde_json::from_slice(&rest[..header_len])
            .map_err(|e| damaged(&format!("an unreadable header: {e}")))?;
        if header.format != 1 {
            return Err(damaged(&format!(
                "manifest format {}, which this version cannot read",
                header.format
            )));
        }
        let chunks = rest[header_len..]
            .chunks_exact(ENTRY)
            .map(|e| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&e[..32]);
                ChunkRef {
                    hash,
                    len: u32::from_le_bytes([e[32], e[33], e[34], e[35]]),
                }
            })
            .collect();
        Ok(Manifest { header, chunks })
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            header: ManifestHeader {
                format: 1,
                size: 8192,
                checksum: "blake3:00".into(),
                chunking: "pages:4096".into(),
                packs: vec!["chunks-ab.pack".into()],
                added_bytes: 100,
                added_chunks: 1,
                begun: None,
            },
            chunks: vec![
                ChunkRef {
                    hash: [1; 32],
                    len: 4096,
                },
                ChunkRef {
                    hash: [2; 32],
                    len: 4096,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_finds_a_flipped_byte() -> Result<()> {
        let m = sample();
        let bytes = m.encode()?;
        assert_eq!(Manifest::decode("k", &bytes)?, m);
        for at in [0, 10, 20, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            let e = Manifest::decode("k", &bad).expect_err("damage found");
            assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
        }
        assert!(Manifest::decode("k", &bytes[..bytes.len() - 3]).is_err());
        Ok(())
    }
}
