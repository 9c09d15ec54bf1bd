//! The PostgreSQL snapshot bundle: one self-contained file holding a consistent export of
//! tables — their schema and every row, in PostgreSQL's `COPY` text format.
//!
//! ```text
//! SNAPSHOT-POSTGRES-BUNDLE 1\n                       magic line
//! <rows of table 1>                                  zstd frames of COPY text: one line
//! <rows of table 2> …                                per row, tab-separated, \N for NULL
//! {"format":1,"tables":[…],…}\n                      manifest: one line of JSON
//! SNAPSHOT-POSTGRES-MANIFEST <offset> <length>\n     trailer: 20-digit decimals
//! ```
//!
//! Rows are compressed as they stream from the server (zstd: a bundle of pgbench's tables is
//! 1/90 of their text, where `pg_dump -Fc`'s gzip gets 1/34), so the manifest — each table's columns,
//! types, primary key, constraints, row count and the byte range of its rows — comes last,
//! found through the fixed-size trailer. The text format keeps every value exactly when read
//! back under the same session settings
//! ([`SESSION_SETTINGS`](super::SESSION_SETTINGS), recorded in the manifest); rows are in
//! primary key order, so a preview pages through a table without a server. Bundles of format 1
//! (the rows as plain text, no frames) are still read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::engine::postgres::manifest::{Manifest, TableEntry};
use crate::error::{Error, Result};
use crate::source::CheckLevel;

/// The first line of every bundle.
pub(super) const MAGIC: &[u8] = b"SNAPSHOT-POSTGRES-BUNDLE 1\n";
/// The start of the last line.
pub(super) const TRAILER_TAG: &[u8] = b"SNAPSHOT-POSTGRES-MANIFEST ";
/// The length of the last line: tag, two 20-digit numbers, a space and a newline.
const TRAILER_LEN: u64 = TRAILER_TAG.len() as u64 + 42;
/// The format version written in the manifest: 2, each table's rows zstd frames (one, or one
/// per range of its key read in parallel).
pub(super) const FORMAT: u32 = 2;
/// The format whose rows are plain COPY text (still read).
const FORMAT_PLAIN: u32 = 1;
/// The zstd level of the rows: zstd's default, ~300 MB/s of text on one core.
const LEVEL: i32 = 3;
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The largest manifest read (a sanity bound against a damaged trailer).
const MAX_MANIFEST: u64 = 256 << 20;
/// Copy buffer size.
pub(super) const CHUNK: usize = 256 << 10;

pub(super) fn damaged(path: &Path, detail: impl Into<String>) -> Error {
    Error::NotADatabase {
        engine: "postgres",
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// A zstd encoder of rows: level [`LEVEL`], with the frame's content checksum, so that a
/// full check finds a damaged frame on its own; compressing on a worker thread of its own,
/// while the caller goes on receiving rows from the server.
pub(super) fn encoder<W: Write>(out: W) -> std::io::Result<zstd::Encoder<'static, W>> {
    let mut enc = zstd::Encoder::new(out, LEVEL)?;
    enc.include_checksum(true)?;
    enc.multithread(1)?;
    Ok(enc)
}

/// A bundle whose structure has been checked: magic, trailer, manifest, and that the tables'
/// rows tile the file between them.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    path: PathBuf,
    manifest: Manifest,
    /// Whether each table's rows are a zstd frame (format 2).
    compressed: bool,
}

impl Bundle {
    /// Opens a bundle and checks its structure ([`CheckLevel::Quick`]).
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when it is not a sound bundle; I/O errors.
    pub(crate) fn open(path: &Path) -> Result<Bundle> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let (at, len) = header(&file, path, size)?;
        let mut json = vec![0u8; len as usize];
        file.read_exact_at(&mut json, at)
            .map_err(|e| Error::io("read", path, e))?;
        let manifest: Manifest = serde_json::from_slice(&json)
            .map_err(|e| damaged(path, format!("the manifest does not parse: {e}")))?;
        if manifest.format != FORMAT && manifest.format != FORMAT_PLAIN {
            return Err(damaged(
                path,
                format!(
                    "bundle format {} (this library reads {FORMAT_PLAIN} and {FORMAT})",
                    manifest.format
                ),
            ));
        }
        let compressed = manifest.format == FORMAT;
        let mut next = MAGIC.len() as u64;
        for t in &manifest.tables {
            if t.offset != next || t.offset.checked_add(t.length).is_none_or(|end| end > at) {
                return Err(damaged(
                    path,
                    format!(
                        "the rows of table {:?} are not where the manifest says",
                        t.name
                    ),
                ));
            }
            next = t.offset + t.length;
            if (t.length == 0) != (t.rows == 0) {
                return Err(damaged(
                    path,
                    format!("table {:?}: {} rows in {} bytes", t.name, t.rows, t.length),
                ));
            }
            if t.length > 0 && compressed {
                let mut head = [0u8; 4];
                let short = t.length < 4 || file.read_exact_at(&mut head, t.offset).is_err();
                if short || head != ZSTD_MAGIC {
                    return Err(damaged(
                        path,
                        format!("the rows of table {:?} are not a zstd frame", t.name),
                    ));
                }
            } else if t.length > 0 {
                let mut last = [0u8];
                file.read_exact_at(&mut last, next - 1)
                    .map_err(|e| Error::io("read", path, e))?;
                if last[0] != b'\n' {
                    return Err(damaged(
                        path,
                        format!("the rows of table {:?} are cut short", t.name),
                    ));
                }
            }
        }
        if next != at {
            return Err(damaged(path, "bytes between the rows and the manifest"));
        }
        Ok(Bundle {
            path: path.to_path_buf(),
            manifest,
            compressed,
        })
    }

    /// Checks a bundle: [`CheckLevel::Header`] the magic and trailer, `Quick` also the
    /// manifest and the layout of the rows, `Full` also every row's line and field count.
    ///
    /// # Errors
    /// [`Error::NotADatabase`] when it is not a sound bundle; I/O errors.
    pub(crate) fn check(path: &Path, level: CheckLevel) -> Result<()> {
        if level == CheckLevel::Header {
            let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
            let size = file
                .metadata()
                .map_err(|e| Error::io("stat", path, e))?
                .len();
            return header(&file, path, size).map(drop);
        }
        let bundle = Bundle::open(path)?;
        if level == CheckLevel::Full {
            for t in &bundle.manifest.tables {
                bundle.check_rows(t)?;
            }
        }
        Ok(())
    }

    /// The bundle's file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The manifest.
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The table called `name`: the exact name first, else the one equal ignoring case.
    pub(crate) fn table(&self, name: &str) -> Option<&TableEntry> {
        let tables = &self.manifest.tables;
        tables.iter().find(|t| t.name == name).or_else(|| {
            let folded: Vec<&TableEntry> = tables
                .iter()
                .filter(|t| t.name.to_lowercase() == name.to_lowercase())
                .collect();
            folded
                .iter()
                .find(|t| t.name == name.to_lowercase())
                .or_else(|| (folded.len() == 1).then(|| &folded[0]))
                .copied()
        })
    }

    /// The tables in the order a whole restore writes them: a table after the tables it refers
    /// to (by name otherwise; tables in a reference cycle by name). Linear in tables and
    /// references (a manifest of thousands of tables orders at once).
    pub(crate) fn restore_order(&self) -> Vec<String> {
        use std::collections::{BTreeMap, BTreeSet};
        let tables = &self.manifest.tables;
        // Per table, the other tables of the bundle it still waits for; per table, who waits.
        let mut waits: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut waiters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let names: BTreeSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        for t in tables {
            let refs: BTreeSet<&str> = t
                .references
                .iter()
                .map(String::as_str)
                .filter(|r| *r != t.name && names.contains(r))
                .collect();
            for r in &refs {
                waiters.entry(r).or_default().push(&t.name);
            }
            waits.entry(&t.name).or_default().extend(refs);
        }
        let mut ready: BTreeSet<&str> = waits
            .iter()
            .filter(|(_, w)| w.is_empty())
            .map(|(n, _)| *n)
            .collect();
        let mut order: Vec<String> = Vec::with_capacity(waits.len());
        while !waits.is_empty() {
            // The first ready by name; in a cycle, the first left by name.
            let next = match ready.pop_first() {
                Some(n) => n,
                None => *waits.keys().next().unwrap_or(&""),
            };
            if waits.remove(next).is_none() {
                break;
            }
            order.push(next.to_string());
            for w in waiters.get(next).into_iter().flatten() {
                if let Some(set) = waits.get_mut(w) {
                    set.remove(next);
                    if set.is_empty() {
                        ready.insert(w);
                    }
                }
            }
        }
        order
    }

    /// The rows of a table, as COPY text lines (decompressed as they are read: a damaged
    /// frame is an I/O error of kind `Other` on the read that meets it).
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn rows(&self, table: &TableEntry) -> Result<Box<dyn BufRead + Send>> {
        let mut file = File::open(&self.path).map_err(|e| Error::io("open", &self.path, e))?;
        file.seek(SeekFrom::Start(table.offset))
            .map_err(|e| Error::io("seek", &self.path, e))?;
        let raw = file.take(table.length);
        if !self.compressed || table.length == 0 {
            return Ok(Box::new(BufReader::with_capacity(CHUNK, raw)));
        }
        let decoder =
            zstd::Decoder::new(raw).map_err(|e| Error::io("decompress", &self.path, e))?;
        Ok(Box::new(BufReader::with_capacity(CHUNK, decoder)))
    }

    /// The error of a failed read of `table`'s rows: a frame that does not decode (an error
    /// of the decoder, not of the system) is damage ([`Error::NotADatabase`]), anything else
    /// an I/O error.
    pub(crate) fn read_error(&self, table: &str, e: std::io::Error) -> Error {
        if self.compressed && e.raw_os_error().is_none() {
            damaged(&self.path, format!("the rows of table {table:?}: {e}"))
        } else {
            Error::io("read", &self.path, e)
        }
    }

    /// Reads every line of a table's rows and checks its count and field count.
    fn check_rows(&self, t: &TableEntry) -> Result<()> {
        let mut rows = self.rows(t)?;
        let mut line = Vec::new();
        let mut n = 0u64;
        loop {
            line.clear();
            let got = rows
                .read_until(b'\n', &mut line)
                .map_err(|e| self.read_error(&t.name, e))?;
            if got == 0 {
                break;
            }
            n += 1;
            let fields = parse_line(&line)
                .map_err(|e| damaged(&self.path, format!("table {:?}, row {n}: {e}", t.name)))?;
            if fields.len() != t.columns.len().max(1) {
                return Err(damaged(
                    &self.path,
                    format!(
                        "table {:?}, row {n}: {} fields for {} columns",
                        t.name,
                        fields.len(),
                        t.columns.len()
                    ),
                ));
            }
        }
        if n != t.rows {
            return Err(damaged(
                &self.path,
                format!(
                    "table {:?} holds {n} rows, the manifest says {}",
                    t.name, t.rows
                ),
            ));
        }
        Ok(())
    }
}

/// Checks the magic line and the trailer; returns the manifest's offset and length.
fn header(file: &File, path: &Path, size: u64) -> Result<(u64, u64)> {
    if size < MAGIC.len() as u64 + TRAILER_LEN {
        return Err(damaged(
            path,
            format!("{size} bytes is too short for a bundle"),
        ));
    }
    let mut magic = vec![0u8; MAGIC.len()];
    file.read_exact_at(&mut magic, 0)
        .map_err(|e| Error::io("read", path, e))?;
    if magic != MAGIC {
        return Err(damaged(path, "not a snapshot bundle of PostgreSQL tables"));
    }
    let mut trailer = vec![0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, size - TRAILER_LEN)
        .map_err(|e| Error::io("read", path, e))?;
    let numbers = trailer
        .strip_prefix(TRAILER_TAG)
        .and_then(|t| t.strip_suffix(b"\n"))
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.split_once(' '))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    match numbers {
        Some((at, len))
            if len > 0
                && len <= MAX_MANIFEST
                && at >= MAGIC.len() as u64
                && at.checked_add(len) == Some(size - TRAILER_LEN) =>
        {
            Ok((at, len))
        }
        _ => Err(damaged(
            path,
            "the trailer is damaged or the file is cut short",
        )),
    }
}

/// Splits one line of COPY text into its fields, unescaped: `None` for `\N` (NULL).
///
/// # Errors
/// A message when the line does not end with a newline.
pub(crate) fn parse_line(line: &[u8]) -> std::result::Result<Vec<Option<Vec<u8>>>, String> {
    let line = line
        .strip_suffix(b"\n")
        .ok_or_else(|| "the line does not end".to_string())?;
    Ok(line
        .split(|&b| b == b'\t')
        .map(|f| (f != b"\\N").then(|| unescape(f)))
        .collect())
}

/// Decodes COPY text escapes: `\b \f \n \r \t \v \\`, octal `\ooo`, hex `\xhh`, and a
/// backslash before any other character stands for that character.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        i += 1;
        if b != b'\\' || i == field.len() {
            out.push(b);
            continue;
        }
        let c = field[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' if field.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_lines_unescape() -> std::result::Result<(), String> {
        let line = b"1\t\\N\ta\\tb\\nc\\\\d\t\\x41\\101\\q\t\n";
        let f = parse_line(line)?;
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].as_deref(), Some(&b"1"[..]));
        assert_eq!(f[1], None);
        assert_eq!(f[2].as_deref(), Some(&b"a\tb\nc\\d"[..]));
        assert_eq!(f[3].as_deref(), Some(&b"AAq"[..]));
        assert_eq!(f[4].as_deref(), Some(&b""[..]));
        assert!(parse_line(b"no newline").is_err());
        // A bytea value: the hex form's backslash is escaped.
        assert_eq!(
            parse_line(b"\\\\x00ff\n")?[0].as_deref(),
            Some(&b"\\x00ff"[..])
        );
        Ok(())
    }

    fn entry(name: &str, refs: &[&str]) -> TableEntry {
        TableEntry {
            name: name.into(),
            columns: Vec::new(),
            constraints: Vec::new(),
            references: refs.iter().map(|r| r.to_string()).collect(),
            rows: 0,
            offset: 0,
            length: 0,
        }
    }

    /// A bundle (never opened) of these tables.
    fn bundle_of(tables: Vec<TableEntry>) -> Bundle {
        Bundle {
            path: PathBuf::from("x"),
            manifest: Manifest {
                format: FORMAT,
                server_version: String::new(),
                database: String::new(),
                schema: "public".into(),
                taken_at: chrono::Utc::now(),
                settings: Vec::new(),
                tables,
            },
            compressed: true,
        }
    }

    #[test]
    fn restore_order_of_thousands_of_chained_tables_is_fast() {
        let n = 5000;
        let tables = (0..n)
            .map(|i| {
                let next = format!("t{:05}", i + 1);
                entry(&format!("t{i:05}"), &[next.as_str()])
            })
            .collect();
        let bundle = bundle_of(tables);
        let start = std::time::Instant::now();
        let order = bundle.restore_order();
        // Each table refers to the next: the last comes first.
        assert_eq!(order.len(), n);
        assert_eq!(order[0], format!("t{:05}", n - 1));
        assert_eq!(order[n - 1], "t00000");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn restore_order_puts_referenced_tables_first() {
        let bundle = bundle_of(vec![
            entry("a_child", &["b_parent", "gone"]),
            entry("b_parent", &["c_root"]),
            entry("c_root", &["c_root"]),
            entry("d_x", &["e_y"]),
            entry("e_y", &["d_x"]),
        ]);
        assert_eq!(
            bundle.restore_order(),
            ["c_root", "b_parent", "a_child", "d_x", "e_y"]
        );
    }

    #[test]
    fn damaged_bundles_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let p = dir.path().join("b");
        let json = br#"{"format":1,"server_version":"15","database":"d","schema":"public","taken_at":"2026-01-01T00:00:00Z","settings":[],"tables":[{"name":"t","columns":[{"name":"id","data_type":"integer","not_null":true,"primary_key":1}],"rows":2,"offset":27,"length":4}]}"#;
        let mut good = MAGIC.to_vec();
        good.extend_from_slice(b"1\n2\n");
        let at = good.len();
        good.extend_from_slice(json);
        good.push(b'\n');
        good.extend_from_slice(
            format!(
                "SNAPSHOT-POSTGRES-MANIFEST {at:020} {:020}\n",
                json.len() + 1
            )
            .as_bytes(),
        );
        std::fs::write(&p, &good).map_err(|e| Error::io("write", &p, e))?;
        Bundle::check(&p, CheckLevel::Full)?;
        let b = Bundle::open(&p)?;
        assert_eq!(b.table("T").map(|t| t.rows), Some(2));
        let cases: Vec<Vec<u8>> = vec![
            good[..good.len() - 1].to_vec(),
            good.iter()
                .map(|&c| if c == b'2' { b'3' } else { c })
                .collect(),
            {
                let mut g = good.clone();
                g[28] = b'x'; // "1\n" becomes "1x": the section no longer tiles
                g
            },
            {
                let mut g = good.clone();
                g[0] = b's';
                g
            },
        ];
        for (i, bad) in cases.iter().enumerate() {
            std::fs::write(&p, bad).map_err(|e| Error::io("write", &p, e))?;
            let r = Bundle::check(&p, CheckLevel::Full);
            assert!(
                matches!(r, Err(Error::NotADatabase { .. })),
                "case {i}: {r:?}"
            );
        }
        // A row count off by one is found by the full check only.
        let miscounted = String::from_utf8_lossy(&good).replace("\"rows\":2", "\"rows\":3");
        let fixed = fix_trailer(miscounted.as_bytes(), at);
        std::fs::write(&p, &fixed).map_err(|e| Error::io("write", &p, e))?;
        Bundle::check(&p, CheckLevel::Quick)?;
        assert!(matches!(
            Bundle::check(&p, CheckLevel::Full),
            Err(Error::NotADatabase { .. })
        ));
        Ok(())
    }

    /// A format-2 bundle of one table whose rows are `frame`, said to hold `rows` rows.
    fn compressed_bundle(frame: &[u8], rows: u64) -> Vec<u8> {
        let json = format!(
            r#"{{"format":2,"server_version":"15","database":"d","schema":"public","taken_at":"2026-01-01T00:00:00Z","settings":[],"tables":[{{"name":"t","columns":[{{"name":"id","data_type":"integer","not_null":true,"primary_key":1}}],"rows":{rows},"offset":27,"length":{}}}]}}"#,
            frame.len()
        );
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(frame);
        let at = b.len();
        b.extend_from_slice(json.as_bytes());
        b.push(b'\n');
        b.extend_from_slice(
            format!(
                "SNAPSHOT-POSTGRES-MANIFEST {at:020} {:020}\n",
                json.len() + 1
            )
            .as_bytes(),
        );
        b
    }

    #[test]
    fn compressed_rows_read_back_and_damage_is_found() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let p = dir.path().join("b");
        let text: Vec<u8> = (1..=2000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut enc = encoder(Vec::new()).map_err(|e| Error::io("zstd", &p, e))?;
        enc.write_all(&text).map_err(|e| Error::io("zstd", &p, e))?;
        let frame = enc.finish().map_err(|e| Error::io("zstd", &p, e))?;
        std::fs::write(&p, compressed_bundle(&frame, 2000))
            .map_err(|e| Error::io("write", &p, e))?;
        Bundle::check(&p, CheckLevel::Full)?;
        let b = Bundle::open(&p)?;
        let mut back = Vec::new();
        b.rows(&b.manifest().tables[0])?
            .read_to_end(&mut back)
            .map_err(|e| Error::io("read", &p, e))?;
        assert_eq!(back, text);
        // A flipped byte inside the frame: found by the full check (zstd's checksum or a
        // decoding error), named as damage.
        let mut flipped = frame.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        // Not a frame at all: found by the quick check.
        let mut foreign = frame.clone();
        foreign[0] = b'1';
        for (i, (bad, level)) in [(flipped, CheckLevel::Full), (foreign, CheckLevel::Quick)]
            .into_iter()
            .enumerate()
        {
            std::fs::write(&p, compressed_bundle(&bad, 2000))
                .map_err(|e| Error::io("write", &p, e))?;
            if level == CheckLevel::Full {
                // Read as a preview or a restore reads it: the failed read is damage too.
                let b = Bundle::open(&p)?;
                let t = &b.manifest().tables[0];
                let mut sink = Vec::new();
                let e = b
                    .rows(t)?
                    .read_to_end(&mut sink)
                    .map_err(|e| b.read_error(&t.name, e));
                assert!(matches!(e, Err(Error::NotADatabase { .. })), "{e:?}");
            }
            let r = Bundle::check(&p, level);
            assert!(
                matches!(r, Err(Error::NotADatabase { .. })),
                "case {i}: {r:?}"
            );
        }
        Ok(())
    }

    fn fix_trailer(bytes: &[u8], at: usize) -> Vec<u8> {
        let body = &bytes[..bytes.len() - TRAILER_LEN as usize];
        let mut out = body.to_vec();
        out.extend_from_slice(
            format!(
                "SNAPSHOT-POSTGRES-MANIFEST {at:020} {:020}\n",
                body.len() - at
            )
            .as_bytes(),
        );
        out
    }
}
