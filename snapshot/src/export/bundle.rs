//! Where export files go: entries of a zip bundle, or files in a directory; and reading a
//! bundle back (check, unpack).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{Error, Result};
use crate::export::{MANIFEST, Manifest};
use crate::fs_util;
use crate::source::CheckLevel;

/// Size and checksum of one written entry.
pub(crate) struct EntryInfo {
    pub(crate) bytes: u64,
    pub(crate) checksum: String,
}

/// A destination for named export files, written one at a time.
pub(crate) trait Sink {
    /// Writes one file named `name` with what `fill` writes.
    fn entry(
        &mut self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<EntryInfo>;
}

/// Counts and hashes what passes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_hashed<W: Write>(
    inner: W,
    name: &str,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<(EntryInfo, W)> {
    let mut w = BufWriter::with_capacity(
        256 * 1024,
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        },
    );
    fill(&mut w)?;
    let h = w
        .into_inner()
        .map_err(|e| Error::io("write", name, e.into_error()))?;
    Ok((
        EntryInfo {
            bytes: h.bytes,
            checksum: format!("blake3:{}", h.hasher.finalize().to_hex()),
        },
        h.inner,
    ))
}

fn zip_err(path: &Path, op: &'static str, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => Error::io(op, path, io),
        other => Error::NotADatabase {
            engine: "export",
            path: path.to_path_buf(),
            detail: format!("{op}: {other}"),
        },
    }
}

/// Entries of a zip file (deflate).
pub(crate) struct ZipSink {
    zip: ZipWriter<File>,
    path: PathBuf,
}

impl ZipSink {
    pub(crate) fn new(file: File, path: &Path) -> Self {
        ZipSink {
            zip: ZipWriter::new(file),
            path: path.to_path_buf(),
        }
    }

    /// Writes the central directory. The file is not fsynced (the caller seals it).
    pub(crate) fn finish(self) -> Result<()> {
        let path = self.path.clone();
        self.zip
            .finish()
            .map_err(|e| zip_err(&path, "finish bundle", e))?;
        Ok(())
    }
}

impl Sink for ZipSink {
    fn entry(
        &mut self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<EntryInfo> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(1))
            .large_file(true)
            .unix_permissions(0o600);
        self.zip
            .start_file(name, options)
            .map_err(|e| zip_err(&self.path, "start entry", e))?;
        let (info, _) = write_hashed(&mut self.zip, name, fill)?;
        Ok(info)
    }
}

/// Files in a directory (created new, 0600, fsynced with their directory at the end).
pub(crate) struct DirSink {
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl DirSink {
    pub(crate) fn new(dir: &Path) -> Self {
        DirSink {
            dir: dir.to_path_buf(),
            written: Vec::new(),
        }
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.written.is_empty() {
            return Ok(());
        }
        for p in &self.written {
            fs_util::sync_file(p)?;
        }
        fs_util::fsync_dir(&self.dir)
    }
}

impl Sink for DirSink {
    fn entry(
        &mut self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<EntryInfo> {
        if self.written.is_empty() {
            fs_util::create_private_dir(&self.dir)?;
        }
        let path = self.dir.join(name);
        let file = fs_util::create_new_private(&path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                Error::AlreadyExists {
                    key: path.display().to_string(),
                }
            }
            e => e,
        })?;
        self.written.push(path.clone());
        let (info, _) = write_hashed(file, &path.display().to_string(), fill)?;
        Ok(info)
    }
}

fn open_archive(bundle: &Path) -> Result<ZipArchive<BufReader<File>>> {
    let f = File::open(bundle).map_err(|e| Error::io("open bundle", bundle, e))?;
    ZipArchive::new(BufReader::new(f)).map_err(|e| zip_err(bundle, "read bundle", e))
}

fn damaged(bundle: &Path, detail: String) -> Error {
    Error::NotADatabase {
        engine: "export",
        path: bundle.to_path_buf(),
        detail,
    }
}

/// Reads the manifest and checks that every file it lists is present with its size; at
/// [`CheckLevel::Full`] also reads each file and compares its checksum.
pub(crate) fn check(bundle: &Path, level: CheckLevel) -> Result<Manifest> {
    let mut zip = open_archive(bundle)?;
    let manifest: Manifest = {
        let entry = zip
            .by_name(MANIFEST)
            .map_err(|e| damaged(bundle, format!("{MANIFEST}: {e}")))?;
        serde_json::from_reader(BufReader::new(entry))
            .map_err(|e| damaged(bundle, format!("{MANIFEST}: {e}")))?
    };
    if manifest.format != "snapshot-export" {
        return Err(damaged(
            bundle,
            format!("unknown format {:?}", manifest.format),
        ));
    }
    if level == CheckLevel::Header {
        return Ok(manifest);
    }
    for table in &manifest.tables {
        for f in &table.files {
            let mut entry = zip
                .by_name(&f.name)
                .map_err(|e| damaged(bundle, format!("{}: {e}", f.name)))?;
            if entry.size() != f.bytes {
                return Err(damaged(
                    bundle,
                    format!(
                        "{}: {} bytes, the manifest says {}",
                        f.name,
                        entry.size(),
                        f.bytes
                    ),
                ));
            }
            if level == CheckLevel::Full {
                let mut hasher = blake3::Hasher::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| damaged(bundle, format!("{}: {e}", f.name)))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let sum = format!("blake3:{}", hasher.finalize().to_hex());
                if sum != f.checksum {
                    return Err(damaged(
                        bundle,
                        format!(
                            "{}: checksum {sum}, the manifest says {}",
                            f.name, f.checksum
                        ),
                    ));
                }
            }
        }
    }
    Ok(manifest)
}

/// Extracts an export bundle into `dir` (created when missing; files already there are never
/// overwritten), checking every file against the manifest, and returns the manifest.
///
/// # Errors
/// [`Error::NotADatabase`] (engine `export`) for a damaged bundle or an unsafe entry name,
/// [`Error::AlreadyExists`] for a file already in `dir`, I/O errors.
pub fn unpack(bundle: &Path, dir: &Path) -> Result<Manifest> {
    let manifest = check(bundle, CheckLevel::Full)?;
    let mut zip = open_archive(bundle)?;
    let mut sink = DirSink::new(dir);
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| damaged(bundle, format!("entry {i}: {e}")))?;
        let name = match entry.enclosed_name() {
            Some(p) if p.components().count() == 1 => p.display().to_string(),
            _ => {
                return Err(damaged(
                    bundle,
                    format!("entry {i} has an unsafe name: {:?}", entry.name().ok()),
                ));
            }
        };
        sink.entry(&name, &mut |w| {
            io::copy(&mut entry, w)
                .map(|_| ())
                .map_err(|e| damaged(bundle, format!("{name}: {e}")))
        })?;
    }
    sink.finish()?;
    Ok(manifest)
}
