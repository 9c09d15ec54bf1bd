//! Packing the archive. Each finished chunk is compressed into a zip of its own by a thread
//! beside the fetching (`<chunk>.zip` in the work directory, its checksum logged), so the
//! compression overlaps the network; the archive is then assembled by copying those members
//! as they are compressed, the lookups and `metadata.json` added. A chunk without a sound zip
//! of its own (taken from the previous archive, or its zip lost) is compressed there. Every
//! member's content is hashed as it is compressed and must match the checksum its chunk was
//! committed with.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::engine::api::archive::{METADATA, Metadata, zip_err};
use crate::engine::api::progress::{FileDone, WorkDir};
use crate::error::{Error, Result};
use crate::fs_util;

/// The zip compression of the archive's members (deflate, as every unzip reads).
const LEVEL: i64 = 6;

fn options(size: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(LEVEL))
        .unix_permissions(0o644)
        .last_modified_time(zip::DateTime::default())
        .large_file(size >= u64::from(u32::MAX))
}

/// The name of a chunk's own zip, by its CSV member's name.
fn chunk_zip(csv: &str) -> String {
    format!("{}.zip", csv.trim_end_matches(".csv"))
}

/// Adds the work file `m` to `z` as a member, compressed, checking its content against `m`.
fn add(z: &mut ZipWriter<File>, into: &Path, work: &WorkDir, m: &FileDone) -> Result<()> {
    let path = work.file(&m.name);
    let mut src = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    z.start_file(m.name.as_str(), options(m.bytes))
        .map_err(|e| zip_err(into, "write", e))?;
    let mut hashing = Hashing::new(&mut *z);
    io::copy(&mut src, &mut hashing).map_err(|e| Error::io("write", into, e))?;
    let got = hashing.finish();
    if got != m.blake3 {
        return Err(Error::ChecksumMismatch {
            key: path.display().to_string(),
            expected: m.blake3.clone(),
            actual: got,
        });
    }
    Ok(())
}

/// Compresses a finished chunk's two files into its own zip; what the work directory records
/// of it.
///
/// # Errors
/// I/O errors; [`Error::ChecksumMismatch`] when a file no longer has its checksum.
pub(crate) fn pack_chunk(work: &WorkDir, csv: &FileDone, jsonl: &FileDone) -> Result<FileDone> {
    let name = chunk_zip(&csv.name);
    let part = work.file(&format!("{name}.part"));
    fs_util::remove_if_exists(&part)?;
    let mut z = ZipWriter::new(fs_util::create_new_private(&part)?);
    add(&mut z, &part, work, csv)?;
    add(&mut z, &part, work, jsonl)?;
    z.finish().map_err(|e| zip_err(&part, "write", e))?;
    crate::engine::api::chunk::seal(&part, &name, work)
}

/// Writes the archive at `dest` (a new file): the lookups, every chunk (its members copied
/// from the chunk's own zip when `packed` has a sound one, else compressed here) and `meta`.
///
/// # Errors
/// I/O errors naming the file; [`Error::ChecksumMismatch`] when a file of the work directory
/// no longer has the checksum it was committed with.
pub(crate) fn write(
    dest: &Path,
    work: &WorkDir,
    meta: &Metadata,
    packed: &HashMap<String, FileDone>,
) -> Result<()> {
    let file = fs_util::create_new_private(dest)?;
    let mut z = ZipWriter::new(file);
    for l in meta.lookups.values() {
        add(&mut z, dest, work, &(&l.file).into())?;
    }
    for r in meta.resources.values() {
        for c in &r.chunks {
            let (csv, jsonl): (FileDone, FileDone) = ((&c.csv).into(), (&c.jsonl).into());
            let own = packed.get(&csv.name).filter(|p| work.intact(p));
            match own {
                Some(p) => copy_members(&mut z, dest, &work.file(&p.name), &[&csv, &jsonl])?,
                None => {
                    add(&mut z, dest, work, &csv)?;
                    add(&mut z, dest, work, &jsonl)?;
                }
            }
        }
    }
    let json = serde_json::to_vec_pretty(meta).expect("metadata serializes");
    z.start_file(METADATA, options(json.len() as u64))
        .map_err(|e| zip_err(dest, "write", e))?;
    z.write_all(&json)
        .map_err(|e| Error::io("write", dest, e))?;
    z.finish().map_err(|e| zip_err(dest, "write", e))?;
    Ok(())
}

/// Copies the members `wanted` of the zip at `from` into `z` as they are compressed.
fn copy_members(
    z: &mut ZipWriter<File>,
    dest: &Path,
    from: &Path,
    wanted: &[&FileDone],
) -> Result<()> {
    let file = File::open(from).map_err(|e| Error::io("open", from, e))?;
    let mut src = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(from, "read", e))?;
    for m in wanted {
        let entry = src
            .by_name_raw(m.name.as_bytes())
            .map_err(|e| zip_err(from, "read", e))?;
        if entry.size() != m.bytes {
            return Err(Error::ChecksumMismatch {
                key: format!("{}:{}", from.display(), m.name),
                expected: format!("{} bytes", m.bytes),
                actual: format!("{} bytes", entry.size()),
            });
        }
        z.raw_copy_file(entry)
            .map_err(|e| zip_err(dest, "write", e))?;
    }
    Ok(())
}

impl From<&crate::engine::api::archive::FileMeta> for FileDone {
    fn from(m: &crate::engine::api::archive::FileMeta) -> Self {
        FileDone {
            name: m.name.clone(),
            bytes: m.bytes,
            blake3: m.blake3.clone(),
        }
    }
}

/// A writer that hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }
    fn finish(self) -> String {
        format!("blake3:{}", self.hasher.finalize().to_hex())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
