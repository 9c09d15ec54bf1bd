//! A writer process for the live-snapshot tests: commits to a SQLite database in a loop, the way
//! another process of an application would, until killed or until its time is up.
//!
//! `sqlite_writer <db> <seconds> [hold]`: every transaction appends a row to `log` and increments the
//! single `counter` row, so any committed state has `count(log) == counter.n`. Every 50
//! commits it asks for a passive checkpoint, so checkpoints race with snapshots too. With `hold`
//! it only keeps the database open (prints `ready` once it is) without writing. With `try-write`
//! it makes one attempt to start a write transaction without waiting and prints `busy` or
//! `free` (then rolls back): a probe of the locks other processes hold. With `query` it keeps
//! its connection open (prints `ready`) and runs each line of its stdin as a query on it,
//! printing the first column of every row joined by commas, one line per query. With `lock` it
//! starts a write transaction (`BEGIN IMMEDIATE`), prints `ready` and holds it until its time is
//! up or its stdin closes. With `fast` it commits
//! as fast as it can (`synchronous=OFF`), never pausing and never asking for a checkpoint.

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let db = args.next().ok_or("usage: sqlite_writer <db> <seconds>")?;
    let secs: f64 = args
        .next()
        .ok_or("usage: sqlite_writer <db> <seconds>")?
        .parse()?;
    let conn = rusqlite::Connection::open(&db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mode = args.next();
    if mode.as_deref() == Some("try-write") {
        conn.busy_timeout(Duration::ZERO)?;
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                conn.execute_batch("ROLLBACK")?;
                println!("free");
            }
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                println!("busy");
            }
            Err(e) => return Err(e.into()),
        }
        return Ok(());
    }
    if mode.as_deref() == Some("query") {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        println!("ready");
        for line in std::io::stdin().lines() {
            let mut stmt = conn.prepare(&line?)?;
            let values: Vec<String> = stmt
                .query_map([], |r| r.get::<_, rusqlite::types::Value>(0))?
                .map(|v| {
                    v.map(|v| match v {
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                })
                .collect::<Result<_, _>>()?;
            println!("{}", values.join(","));
        }
        return Ok(());
    }
    if mode.as_deref() == Some("lock") {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        println!("ready");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        conn.execute_batch("ROLLBACK")?;
        return Ok(());
    }
    if mode.as_deref() == Some("hold") {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        println!("ready");
        std::thread::sleep(end - Instant::now());
        return Ok(());
    }
    let fast = mode.as_deref() == Some("fast");
    if fast {
        // No fsync per commit: tens of thousands of commits a second.
        conn.execute_batch("PRAGMA synchronous=OFF")?;
    }
    let mut commits = 0u64;
    while Instant::now() < end {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO log(n, who, pad) SELECT n + 1, 'process', randomblob(300) FROM counter;
             UPDATE counter SET n = n + 1;
             COMMIT;",
        )?;
        commits += 1;
        if fast {
            continue; // as fast as it can: the heaviest load a log sees
        }
        // Like an application, do something else between commits: a writer that retakes the
        // lock at once starves the others (SQLite's busy handler polls).
        std::thread::sleep(Duration::from_millis(1));
        if commits.is_multiple_of(50) {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .ok();
        }
    }
    println!("{commits}");
    Ok(())
}
