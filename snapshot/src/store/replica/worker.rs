//! The replica's copier: one background thread working through a queue of copies and deletes,
//! in order, retrying a failed job with backoff; and the count of what the replica lacks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::catalog::INDEX_KEY;
use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{Payload, PutMode, ReplicationStatus, Store};

/// One piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Job {
    /// Copy the object from the local store (when it is still there).
    Copy(String),
    /// Delete the object from the replica.
    Delete(String),
    /// Copy every object the replica lacks (at start).
    CatchUp,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Job>,
    /// A job is being worked on.
    busy: bool,
    /// The store was dropped: the thread ends once the queue is worked off.
    closed: bool,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The handle of the copier thread.
#[derive(Debug)]
pub(super) struct Worker {
    shared: Arc<Shared>,
    local: Arc<dyn Store>,
    replica: Arc<dyn Store>,
}

/// Attempts of one job before it is left to the next catch-up.
const ATTEMPTS: u32 = 4;

impl Worker {
    pub(super) fn start(local: Arc<dyn Store>, replica: Arc<dyn Store>) -> Worker {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let (s, l, r) = (shared.clone(), local.clone(), replica.clone());
        std::thread::Builder::new()
            .name("snapshot-replica".into())
            .spawn(move || run(&s, l.as_ref(), r.as_ref()))
            .expect("spawn the replica thread");
        Worker {
            shared,
            local,
            replica,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job (a copy of the index already queued and not started is not repeated).
    pub(super) fn push(&self, job: Job) {
        let mut st = self.lock();
        if job == Job::Copy(INDEX_KEY.to_string()) && st.queue.contains(&job) {
            return;
        }
        st.queue.push_back(job);
        self.shared.changed.notify_all();
    }

    /// Waits until the queue is worked off; the last failure, if the last job failed for good.
    pub(super) fn settle(&self) -> Result<()> {
        let mut st = self.lock();
        while !st.queue.is_empty() || st.busy {
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        match &st.last_error {
            Some(e) => Err(Error::Remote {
                location: self.replica.location(),
                endpoint: self.replica.location(),
                status: None,
                detail: format!("replication: {e}"),
            }),
            None => Ok(()),
        }
    }

    /// What the replica lacks now, from both listings.
    pub(super) fn status(&self) -> Result<ReplicationStatus> {
        let local = self.local.list()?;
        // A replica that cannot be listed lacks everything as far as anyone can tell.
        let (remote, unreachable): (BTreeMap<String, u64>, _) = match self.replica.list() {
            Ok(l) => (l.into_iter().map(|m| (m.key, m.size)).collect(), None),
            Err(e) => (BTreeMap::new(), Some(e.to_string())),
        };
        let pending = local
            .into_iter()
            .filter(|m| m.key != INDEX_KEY && remote.get(&m.key) != Some(&m.size))
            .map(|m| m.key)
            .collect();
        let st = self.lock();
        Ok(ReplicationStatus::new(
            self.replica.location(),
            pending,
            st.queue.len() + usize::from(st.busy),
            unreachable.or_else(|| st.last_error.clone()),
        ))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

fn run(shared: &Shared, local: &dyn Store, replica: &dyn Store) {
    loop {
        let job = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(j) = st.queue.pop_front() {
                    st.busy = true;
                    break j;
                }
                if st.closed {
                    return;
                }
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let mut outcome = Ok(());
        for attempt in 0..ATTEMPTS {
            outcome = work(&job, local, replica);
            if outcome.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.busy = false;
        st.last_error = match outcome {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(job = ?job, error = %e, "replication failed; the next catch-up retries");
                Some(e.to_string())
            }
        };
        shared.changed.notify_all();
    }
}

fn work(job: &Job, local: &dyn Store, replica: &dyn Store) -> Result<()> {
    match job {
        Job::Delete(key) => replica.delete(key),
        Job::Copy(key) => copy(key, local, replica),
        Job::CatchUp => {
            let have: BTreeMap<String, u64> = replica
                .list()?
                .into_iter()
                .map(|m| (m.key, m.size))
                .collect();
            let mut first = None;
            let mut index = false;
            for m in local.list()? {
                if m.key == INDEX_KEY {
                    index = true;
                } else if have.get(&m.key) != Some(&m.size)
                    && let Err(e) = copy(&m.key, local, replica)
                {
                    first.get_or_insert(e);
                }
            }
            if index && let Err(e) = copy(INDEX_KEY, local, replica) {
                first.get_or_insert(e);
            }
            first.map_or(Ok(()), Err)
        }
    }
}

/// Copies one object as it is now in the local store (gone since: nothing to do).
fn copy(key: &str, local: &dyn Store, replica: &dyn Store) -> Result<()> {
    let Some(storage) = local.local() else {
        return Ok(());
    };
    let path = storage.object_path(key)?;
    if key == INDEX_KEY || key.ends_with(".json") {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        return replica
            .put(key, Payload::Bytes(&bytes), PutMode::Overwrite)
            .map(drop);
    }
    // A link to the object, which the replica's put takes over (and removes).
    let link = fs_util::staging_path(storage.dir(), &format!("replica-{key}"));
    match std::fs::hard_link(&path, &link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("link", &link, e)),
    }
    let guard = fs_util::StagingGuard::new(link);
    match replica.put(key, Payload::File(guard.path()), PutMode::Create) {
        Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
