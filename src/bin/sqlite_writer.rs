//! A writer process for the live-snapshot tests: commits to a SQLite database in a loop, the way
//! another process of an application would, until killed or until its time is up.
//!
//! `sqlite_writer <db> <seconds> [hold]`: every transaction appends a row to `log` and increments the
//! single `counter` row, so any committed state has `count(log) == counter.n`. Every 50
//! commits it asks for a passive checkpoint, so checkpoints race with snapshots too. With `hold`
//! it only keeps the database open (prints `ready` once it is) without writing.

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
    if args.next().as_deref() == Some("hold") {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        println!("ready");
        std::thread::sleep(end - Instant::now());
        return Ok(());
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
        if commits % 50 == 0 {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .ok();
        }
    }
    println!("{commits}");
    Ok(())
}
