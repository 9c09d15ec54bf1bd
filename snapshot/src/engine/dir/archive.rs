//! The archive formats of a directory snapshot: zip with deflate (what people open anywhere,
//! the default) and tar compressed with zstd (faster, for machines). Both are streamed: a
//! member is written or read in chunks, never held whole in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{Error, Result};

/// How a directory snapshot is archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// A zip file, deflate (level 9: `zip -r`'s default level 6 in info-zip's deflate packs a
    /// little tighter than zlib's level 6; level 9 of zlib-rs matches it, still faster).
    #[default]
    Zip,
    /// A tar stream compressed with zstd (level 1, as `zstd -1`, on as many threads as the
    /// machine has).
    TarZstd,
}

impl ArchiveFormat {
    /// The blob's extension.
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Zip => "zip",
            ArchiveFormat::TarZstd => "tar.zst",
        }
    }

    /// The format of an archive, from its first bytes (a blob's name in a store need not
    /// carry its extension): zstd's magic number, or zip.
    pub(crate) fn of(path: &Path) -> ArchiveFormat {
        let mut magic = [0u8; 4];
        let zstd = File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == [0x28, 0xB5, 0x2F, 0xFD];
        if zstd {
            ArchiveFormat::TarZstd
        } else {
            ArchiveFormat::Zip
        }
    }
}

pub(crate) fn damaged(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::NotADatabase {
        engine: "dir",
        path: path.to_path_buf(),
        detail: format!("not a readable directory archive: {detail}"),
    }
}

fn zip_err(path: &Path, op: &'static str, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => Error::io(op, path, io),
        other => damaged(path, other),
    }
}

/// Writes members into a new archive.
pub(crate) enum Writer {
    Zip(Box<ZipWriter<File>>),
    Tar(Box<tar::Builder<zstd::Encoder<'static, BufWriter<File>>>>),
}

/// Chunk size of copies.
const CHUNK: usize = 256 << 10;

impl Writer {
    /// A new archive of `format` at `dest` (created; must not exist).
    pub(crate) fn create(dest: &Path, format: ArchiveFormat) -> Result<Writer> {
        let file = crate::fs_util::create_new_private(dest)?;
        Ok(match format {
            ArchiveFormat::Zip => Writer::Zip(Box::new(ZipWriter::new(file))),
            ArchiveFormat::TarZstd => {
                let mut enc = zstd::Encoder::new(BufWriter::with_capacity(CHUNK, file), 1)
                    .map_err(|e| Error::io("compress", dest, e))?;
                // Compression on worker threads, while this one reads and hashes the files
                // (as `tar | zstd` runs two processes).
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                enc.multithread(workers)
                    .map_err(|e| Error::io("compress", dest, e))?;
                // Large jobs that see the whole window of the one before: the ratio of one
                // stream (`zstd -1`), not of independent pieces.
                use zstd::zstd_safe::CParameter;
                for p in [CParameter::JobSize(32 << 20), CParameter::OverlapSizeLog(9)] {
                    enc.set_parameter(p)
                        .map_err(|e| Error::io("compress", dest, e))?;
                }
                let mut b = tar::Builder::new(enc);
                b.follow_symlinks(false);
                Writer::Tar(Box::new(b))
            }
        })
    }

    /// A member's options; zip64 fields only for a member of 4 GiB or more (they cost 48
    /// bytes a member, which adds up over many small files).
    fn zip_options(mode: u32, size: u64) -> SimpleFileOptions {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(9))
            .unix_permissions(mode)
            .large_file(size >= u64::from(u32::MAX))
    }

    fn tar_header(kind: tar::EntryType, size: u64, mode: u32, mtime_ns: i128) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(u64::try_from(mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
        h
    }

    /// Adds a file member of `size` bytes read from `content`, passing every chunk to `seen`.
    pub(crate) fn add_file(
        &mut self,
        name: &str,
        (size, mode, mtime_ns): (u64, u32, i128),
        content: &mut dyn Read,
        seen: &mut dyn FnMut(&[u8]),
        at: &Path,
    ) -> Result<u64> {
        let mut tee = Tee {
            inner: content,
            seen,
            n: 0,
        };
        match self {
            Writer::Zip(z) => {
                z.start_file(name, Self::zip_options(mode, size))
                    .map_err(|e| zip_err(at, "archive", e))?;
                std::io::copy(&mut tee, z.as_mut()).map_err(|e| Error::io("archive", at, e))?;
            }
            Writer::Tar(t) => {
                let mut h = Self::tar_header(tar::EntryType::Regular, size, mode, mtime_ns);
                // A file that is shorter than announced would corrupt the stream: the reader
                // checks its length and the caller re-reads a file that changed.
                let mut limited = (&mut tee).take(size);
                t.append_data(&mut h, name, &mut limited)
                    .map_err(|e| Error::io("archive", at, e))?;
            }
        }
        Ok(tee.n)
    }

    /// Adds a directory member.
    pub(crate) fn add_dir(
        &mut self,
        name: &str,
        mode: u32,
        mtime_ns: i128,
        at: &Path,
    ) -> Result<()> {
        match self {
            Writer::Zip(z) => z
                .add_directory(name, Self::zip_options(mode, 0))
                .map_err(|e| zip_err(at, "archive", e)),
            Writer::Tar(t) => {
                let mut h = Self::tar_header(tar::EntryType::Directory, 0, mode, mtime_ns);
                t.append_data(&mut h, name, std::io::empty())
                    .map_err(|e| Error::io("archive", at, e))
            }
        }
    }

    /// Adds a symbolic link member.
    pub(crate) fn add_symlink(&mut self, name: &str, target: &str, at: &Path) -> Result<()> {
        match self {
            Writer::Zip(z) => z
                .add_symlink(name, target, Self::zip_options(0o777, 0))
                .map_err(|e| zip_err(at, "archive", e)),
            Writer::Tar(t) => {
                let mut h = Self::tar_header(tar::EntryType::Symlink, 0, 0o777, 0);
                t.append_link(&mut h, name, target)
                    .map_err(|e| Error::io("archive", at, e))
            }
        }
    }

    /// Adds a member from bytes in memory.
    pub(crate) fn add_bytes(&mut self, name: &str, data: &[u8], at: &Path) -> Result<()> {
        self.add_file(
            name,
            (data.len() as u64, 0o600, 0),
            &mut std::io::Cursor::new(data),
            &mut |_| {},
            at,
        )
        .map(drop)
    }

    /// Finishes the archive (flushes it; the caller seals the file).
    pub(crate) fn finish(self, at: &Path) -> Result<()> {
        match self {
            Writer::Zip(z) => {
                let mut f = z.finish().map_err(|e| zip_err(at, "archive", e))?;
                f.flush().map_err(|e| Error::io("archive", at, e))
            }
            Writer::Tar(t) => {
                let enc = t.into_inner().map_err(|e| Error::io("archive", at, e))?;
                let mut w = enc.finish().map_err(|e| Error::io("archive", at, e))?;
                w.flush().map_err(|e| Error::io("archive", at, e))
            }
        }
    }
}

/// Passes what is read through to `seen` and counts it.
struct Tee<'a> {
    inner: &'a mut dyn Read,
    seen: &'a mut dyn FnMut(&[u8]),
    n: u64,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.seen)(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// One member as an archive is read.
pub(crate) struct Member<'a> {
    pub(crate) name: String,
    pub(crate) content: &'a mut dyn Read,
}

/// Calls `each` for every member of the archive at `path`, in order.
///
/// # Errors
/// [`Error::NotADatabase`] (engine `dir`) for a damaged archive; `each`'s errors.
pub(crate) fn for_each(path: &Path, each: &mut dyn FnMut(Member<'_>) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    match ArchiveFormat::of(path) {
        ArchiveFormat::Zip => {
            let mut z =
                ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(path, "read", e))?;
            for i in 0..z.len() {
                let mut m = z.by_index(i).map_err(|e| zip_err(path, "read", e))?;
                let name = m.name().map_err(|e| zip_err(path, "read", e))?.into_owned();
                each(Member {
                    name,
                    content: &mut m,
                })?;
            }
            Ok(())
        }
        ArchiveFormat::TarZstd => {
            let dec = zstd::Decoder::new(file).map_err(|e| damaged(path, e))?;
            let mut a = tar::Archive::new(dec);
            for entry in a.entries().map_err(|e| damaged(path, e))? {
                let mut entry = entry.map_err(|e| damaged(path, e))?;
                let name = entry
                    .path()
                    .map_err(|e| damaged(path, e))?
                    .to_string_lossy()
                    .into_owned();
                each(Member {
                    name,
                    content: &mut entry,
                })?;
            }
            Ok(())
        }
    }
}

/// The bytes of one member (the summary), read without reading the others' content.
///
/// # Errors
/// [`Error::NotADatabase`] when the archive is damaged or has no such member.
pub(crate) fn read_member(path: &Path, wanted: &str, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if ArchiveFormat::of(path) == ArchiveFormat::Zip {
        let mut z = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_err(path, "read", e))?;
        let mut m = z.by_name(wanted).map_err(|e| zip_err(path, "read", e))?;
        let mut out = Vec::new();
        (&mut m)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| damaged(path, e))?;
        return Ok(out);
    }
    let mut found = None;
    for_each(path, &mut |m| {
        if found.is_none() && m.name == wanted {
            let mut out = Vec::new();
            m.content
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| damaged(path, e))?;
            found = Some(out);
        }
        Ok(())
    })?;
    found.ok_or_else(|| damaged(path, format!("no {wanted} in the archive")))
}
