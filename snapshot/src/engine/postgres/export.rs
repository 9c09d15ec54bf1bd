//! Writing a bundle ([`bundle`](super::bundle) has the format): every table of the schema read
//! in one `REPEATABLE READ READ ONLY` transaction — or, with several tables and `jobs > 1`, by
//! several connections that share that transaction's snapshot (`pg_export_snapshot()` /
//! `SET TRANSACTION SNAPSHOT`, as `pg_dump -j` does), the largest tables first; a table of 32 MB
//! or more keyed by one integer column is read in as many ranges of its key at once (which
//! `pg_dump -j` cannot: it reads a table on one connection). A piece read in parallel is
//! compressed into a part file beside the bundle; the bundle is then assembled in table and key
//! order (a table's rows may be several zstd frames one after the other; the compressed frames
//! are small: a copy of them is cheap).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Mutex;

use ::postgres::Client;

use crate::engine::postgres::bundle::{CHUNK, FORMAT, MAGIC, TRAILER_TAG, encoder};
use crate::engine::postgres::catalog;
use crate::engine::postgres::manifest::{Manifest, TableEntry};
use crate::engine::postgres::target::{SESSION_SETTINGS, Target};
use crate::error::{Error, Result};
use crate::fs_util;
use crate::sql::ident;

/// Writes a bundle of the tables of `target`'s schema (all of them, or `tables`) to the new
/// file `dest`, reading them in one `REPEATABLE READ READ ONLY` transaction, on up to `jobs`
/// connections.
///
/// # Errors
/// [`Error::SourceMissing`] when the schema does not exist; [`Error::TableMissing`] for a
/// named table that does not; [`Error::InvalidInput`] for a name that is a view; engine and
/// I/O errors. `dest` is left for the caller to remove.
pub(crate) fn export(
    client: &mut Client,
    target: &Target,
    tables: Option<&[String]>,
    dest: &Path,
    jobs: usize,
) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(|e| target.error("begin transaction", e))?;
    let result = export_in(client, target, tables, dest, jobs);
    // Read-only: nothing to commit.
    let _ = client.batch_execute("ROLLBACK");
    result
}

/// One table to read: its manifest entry (rows and place filled in as it is written), the
/// statements that read it — one, or one per range of its key (each range's rows follow the
/// previous range's: the table stays in key order) — and its size on the server (the largest
/// are read first).
struct Job {
    entry: TableEntry,
    pieces: Vec<String>,
    size: i64,
}

/// Tables from this size on, keyed by one integer column, are read in `jobs` ranges of the key
/// at once (as `pg_dump -j` cannot: it reads a table on one connection).
const SPLIT_BYTES: i64 = 32 << 20;

fn export_in(
    client: &mut Client,
    target: &Target,
    tables: Option<&[String]>,
    dest: &Path,
    jobs: usize,
) -> Result<()> {
    let schema = target.schema().to_string();
    let head = client
        .query_one(
            "SELECT current_setting('server_version'), current_database()::text,
                    transaction_timestamp()",
            &[],
        )
        .map_err(|e| target.error("read server", e))?;
    if !catalog::schema_exists(client, target, &schema)? {
        return Err(Error::SourceMissing {
            kind: super::KIND,
            path: target.location().to_path_buf(),
        });
    }
    let names = match tables {
        Some(t) => t.to_vec(),
        None => catalog::tables(client, target, &schema)?,
    };
    let mut work = Vec::with_capacity(names.len());
    for name in &names {
        let job = plan(client, target, &schema, name, &work, jobs)?;
        work.push(job);
    }
    let mut manifest = Manifest {
        format: FORMAT,
        server_version: head.get(0),
        database: head.get(1),
        schema,
        taken_at: head.get(2),
        settings: SESSION_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        tables: Vec::with_capacity(work.len()),
    };
    let file = fs_util::create_new_private(dest)?;
    let mut out = Counter {
        inner: BufWriter::with_capacity(CHUNK, file),
        bytes: 0,
    };
    out.write_all(MAGIC)
        .map_err(|e| Error::io("write", dest, e))?;
    let pieces: usize = work.iter().map(|j| j.pieces.len()).sum();
    let jobs = jobs.clamp(1, pieces.max(1));
    if jobs == 1 {
        for mut job in work {
            job.entry.offset = out.bytes;
            for sql in &job.pieces {
                job.entry.rows += copy_table(client, target, sql, &job.entry.name, &mut out, dest)?;
            }
            job.entry.length = out.bytes - job.entry.offset;
            manifest.tables.push(job.entry);
        }
    } else {
        let mut parts = read_in_parallel(client, target, &work, dest, jobs)?.into_iter();
        for mut job in work {
            job.entry.offset = out.bytes;
            for part in parts.by_ref().take(job.pieces.len()) {
                job.entry.rows += part.rows;
                let mut f =
                    File::open(part.guard.path()).map_err(|e| Error::io("open", dest, e))?;
                std::io::copy(&mut f, &mut out).map_err(|e| Error::io("write", dest, e))?;
            }
            job.entry.length = out.bytes - job.entry.offset;
            manifest.tables.push(job.entry);
        }
    }
    finish(out, &manifest, dest)
}

/// Looks a table up and plans its read: a table (not a view), named once.
fn plan(
    client: &mut Client,
    target: &Target,
    schema: &str,
    name: &str,
    planned: &[Job],
    jobs: usize,
) -> Result<Job> {
    let rel = catalog::find(client, target, schema, name)?.ok_or_else(|| Error::TableMissing {
        table: name.to_string(),
        location: format!("the live database {}", target.location().display()),
    })?;
    if !rel.is_table() {
        return Err(Error::invalid(
            "tables",
            format!("{:?} is {}, not a table", rel.name, rel.kind_name()),
        ));
    }
    if planned.iter().any(|j| j.entry.name == rel.name) {
        return Err(Error::invalid(
            "tables",
            format!("{:?} is named twice", rel.name),
        ));
    }
    let columns = catalog::columns(client, target, rel.oid)?;
    let (constraints, references) = catalog::constraints(client, target, schema, rel.oid)?;
    let entry = TableEntry {
        name: rel.name.clone(),
        columns,
        constraints,
        references,
        rows: 0,
        offset: 0,
        length: 0,
    };
    let cols: Vec<String> = entry.columns.iter().map(|c| ident(&c.name)).collect();
    let pk: Vec<String> = entry.primary_key().iter().map(|c| ident(&c.name)).collect();
    let order = if pk.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", pk.join(", "))
    };
    let from = format!("{}.{}", ident(schema), ident(&rel.name));
    let size: i64 = client
        .query_one("SELECT pg_relation_size($1::oid)", &[&rel.oid])
        .map_err(|e| target.error("read table size", e))?
        .get(0);
    let ranges = match entry.primary_key().as_slice() {
        [k] if jobs > 1
            && size >= SPLIT_BYTES
            && matches!(k.data_type.as_str(), "smallint" | "integer" | "bigint") =>
        {
            key_ranges(client, target, &from, &ident(&k.name), jobs)?
        }
        _ => vec![String::new()],
    };
    let pieces = ranges
        .iter()
        .map(|range| {
            format!(
                "COPY (SELECT {} FROM {from}{range}{order}) TO STDOUT",
                cols.join(", ")
            )
        })
        .collect();
    Ok(Job {
        entry,
        pieces,
        size,
    })
}

/// `WHERE` clauses splitting the integer key `key` of `from` into `n` ranges of equal width
/// between its smallest and largest value (as the transaction sees them; the first and the last
/// range are open, so no row can fall outside).
fn key_ranges(
    client: &mut Client,
    target: &Target,
    from: &str,
    key: &str,
    n: usize,
) -> Result<Vec<String>> {
    let row = client
        .query_one(
            &format!("SELECT min({key})::bigint, max({key})::bigint FROM {from}"),
            &[],
        )
        .map_err(|e| target.error("read key range", e))?;
    let (Some(lo), Some(hi)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(vec![String::new()]);
    };
    let width = (i128::from(hi) - i128::from(lo) + 1) / n as i128;
    if width < 1 {
        return Ok(vec![String::new()]);
    }
    let bounds: Vec<i128> = (1..n).map(|i| i128::from(lo) + width * i as i128).collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let low = i.checked_sub(1).map(|j| format!("{key} >= {}", bounds[j]));
        let high = bounds.get(i).map(|b| format!("{key} < {b}"));
        let conds: Vec<String> = low.into_iter().chain(high).collect();
        out.push(format!(" WHERE {}", conds.join(" AND ")));
    }
    Ok(out)
}

/// A table read into a part file.
struct Part {
    guard: fs_util::StagingGuard,
    rows: u64,
}

/// Reads every piece of every job on `jobs` connections sharing the snapshot of `client`'s
/// transaction; the parts in the order of `work` and of each job's pieces.
fn read_in_parallel(
    client: &mut Client,
    target: &Target,
    work: &[Job],
    dest: &Path,
    jobs: usize,
) -> Result<Vec<Part>> {
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .map_err(|e| target.error("export snapshot", e))?
        .get(0);
    // (table, statement, share of the table's size), in the order of the parts.
    let pieces: Vec<(&str, &str, i64)> = work
        .iter()
        .flat_map(|j| {
            let share = j.size / j.pieces.len() as i64;
            j.pieces
                .iter()
                .map(move |sql| (j.entry.name.as_str(), sql.as_str(), share))
        })
        .collect();
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|&i| pieces[i].2); // popped from the end: the largest first
    let queue = Mutex::new(order);
    let done: Mutex<Vec<Option<Part>>> = Mutex::new((0..pieces.len()).map(|_| None).collect());
    let dir = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let run = |client: &mut Client| -> Result<()> {
        loop {
            let next = queue.lock().map_err(|_| poisoned(dest))?.pop();
            let Some(i) = next else { return Ok(()) };
            let guard = fs_util::StagingGuard::new(fs_util::staging_path(&dir, "part"));
            let file = fs_util::create_new_private(guard.path())?;
            let mut out = Counter {
                inner: BufWriter::with_capacity(CHUNK, file),
                bytes: 0,
            };
            let (name, sql, _) = pieces[i];
            let rows = copy_table(client, target, sql, name, &mut out, guard.path())?;
            out.flush()
                .map_err(|e| Error::io("write", guard.path(), e))?;
            done.lock().map_err(|_| poisoned(dest))?[i] = Some(Part { guard, rows });
        }
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..jobs)
            .map(|_| {
                let snapshot = &snapshot;
                let run = &run;
                scope.spawn(move || -> Result<()> {
                    // A reader that cannot join (the server's connection limit, say) leaves
                    // its share to the others: the main connection reads until the queue is
                    // empty.
                    let mut c = match join_snapshot(target, snapshot) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "a parallel reader could not join; the others read its tables");
                            return Ok(());
                        }
                    };
                    let r = run(&mut c);
                    let _ = c.batch_execute("ROLLBACK");
                    r
                })
            })
            .collect();
        let mut results = vec![run(client)];
        results.extend(workers.into_iter().map(|w| {
            w.join()
                .unwrap_or_else(|_| Err(Error::invalid("export", "a reader thread panicked")))
        }));
        results
    });
    for r in results {
        r?;
    }
    let parts = done.into_inner().map_err(|_| poisoned(dest))?;
    parts
        .into_iter()
        .map(|p| p.ok_or_else(|| Error::invalid("export", "a table was not read")))
        .collect()
}

/// A connection in a read-only transaction on the exported `snapshot`.
fn join_snapshot(target: &Target, snapshot: &str) -> Result<Client> {
    let mut c = target.connect()?;
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    ))
    .map_err(|e| target.error("import snapshot", e))?;
    Ok(c)
}

fn poisoned(dest: &Path) -> Error {
    Error::invalid("export", format!("a reader of {} panicked", dest.display()))
}

/// Reads one statement's rows of `table` through `client` into `out` as one zstd frame; the
/// rows.
fn copy_table<W: Write>(
    client: &mut Client,
    target: &Target,
    sql: &str,
    table: &str,
    out: &mut Counter<W>,
    dest: &Path,
) -> Result<u64> {
    let reader = client
        .copy_out(sql)
        .map_err(|e| target.error("copy rows", e))?;
    copy_compressed(reader, out, table, target, dest)
}

/// Writes the manifest and the trailer after the rows, and flushes.
fn finish<W: Write>(mut out: Counter<W>, manifest: &Manifest, dest: &Path) -> Result<()> {
    let json = serde_json::to_vec(manifest)
        .map_err(|e| Error::invalid("manifest", format!("cannot serialise: {e}")))?;
    let manifest_at = out.bytes;
    out.write_all(&json)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| Error::io("write", dest, e))?;
    let trailer = format!(
        "{}{manifest_at:020} {:020}\n",
        String::from_utf8_lossy(TRAILER_TAG),
        json.len() + 1
    );
    out.write_all(trailer.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write", dest, e))
}

/// Streams one table's COPY text from `reader` into `out` as one zstd frame (nothing for no
/// rows); returns the number of rows (lines).
fn copy_compressed<W: Write>(
    mut reader: impl Read,
    out: &mut Counter<W>,
    table: &str,
    target: &Target,
    dest: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut read = |buf: &mut [u8]| loop {
        match reader.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Engine {
                    engine: super::KIND,
                    op: "copy rows",
                    path: target.location().to_path_buf(),
                    detail: format!("table {table:?}: {e}"),
                });
            }
            Ok(n) => return Ok(n),
        }
    };
    let mut n = read(&mut buf)?;
    if n == 0 {
        return Ok(0); // no rows: no frame
    }
    let mut lines = 0u64;
    let mut enc = encoder(out).map_err(|e| Error::io("compress", dest, e))?;
    while n > 0 {
        lines += newlines(&buf[..n]);
        enc.write_all(&buf[..n])
            .map_err(|e| Error::io("write", dest, e))?;
        n = read(&mut buf)?;
    }
    enc.finish().map_err(|e| Error::io("write", dest, e))?;
    Ok(lines)
}

/// The newlines in `buf`.
fn newlines(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Counts the bytes written through it.
struct Counter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
