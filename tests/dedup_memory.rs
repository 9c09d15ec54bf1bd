//! A 4 GiB file through the dedup store — chunked, hashed, compressed into packs and
//! reassembled — in bounded memory. Alone in its test binary, so that the peak resident memory
//! (`VmHWM`) it reads is this test's.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};

use anyhow::{Context, Result, ensure};
use snapshot::store::{DedupStore, Payload};
use snapshot::{LocalStore, PutMode, Store};

const GIB: u64 = 1 << 30;

/// The peak resident memory of this process so far, bytes.
fn peak_rss() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

fn hash_file(path: &std::path::Path) -> Result<String> {
    let mut f = File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

#[test]
fn a_4_gib_file_is_stored_and_read_back_in_bounded_memory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("export.bin");
    // 4 GiB + 1 byte with no two 4 KiB pieces alike: a 1 MiB block of hex text, each 4 KiB of
    // it stamped with its place in the file.
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = b"0123456789abcdef"[(x & 15) as usize];
    }
    {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&src)?);
        for mib in 0..4 * 1024u64 {
            for page in 0..256u64 {
                let at = (page * 4096) as usize;
                block[at..at + 8].copy_from_slice(&(mib * 256 + page).to_le_bytes());
            }
            w.write_all(&block)?;
        }
        w.write_all(b"!")?;
        w.flush()?;
    }
    let want = hash_file(&src)?;

    let store = DedupStore::new(LocalStore::open(dir.path().join("store"))?);
    let before = peak_rss()?;
    store.put("big.bin", Payload::File(&src), PutMode::Create)?;
    let grown = peak_rss()?.saturating_sub(before);
    ensure!(
        grown < 256 << 20,
        "4 GiB stored with {grown} more bytes resident"
    );
    ensure!(!src.exists(), "the store takes the file over");
    let meta = store.head("big.bin")?.context("stored")?;
    ensure!(meta.size == 4 * GIB + 1, "{meta:?}");
    let usage = store.usage()?.context("usage")?;
    ensure!(usage.logical_bytes == 4 * GIB + 1);

    let back = dir.path().join("back.bin");
    let before = peak_rss()?;
    store.get_to_file("big.bin", &back)?;
    let grown = peak_rss()?.saturating_sub(before);
    ensure!(
        grown < 256 << 20,
        "4 GiB read back with {grown} more bytes resident"
    );
    ensure!(hash_file(&back)? == want, "the file read back differs");
    eprintln!(
        "4 GiB: stored {} bytes in {} packs; peak resident {} MiB",
        usage.stored_bytes,
        usage.packs,
        peak_rss()? >> 20
    );
    Ok(())
}
