//! The DuckDB instance a source opens on a closed file for record-level sessions, shared by
//! the sessions (and the source's own snapshots) while any holds it: DuckDB lets a process open
//! a file once.

use std::sync::{Arc, Mutex, MutexGuard};

use duckdb::Connection;

/// The instance of a closed file that the source opened for record-level sessions.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) conn: Option<Connection>,
    /// Sessions holding it ([`Hold`]s alive).
    pub(crate) users: usize,
}

/// Keeps the instance a [`DuckDbSource`] opened for a record-level session open; the last hold
/// dropped closes it (once the sessions' own connections are gone too).
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) held: Arc<Mutex<Held>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.users = held.users.saturating_sub(1);
        if held.users == 0 {
            held.conn = None;
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
