//! The S3 store's own tokio runtime: the library's surface stays synchronous, and a store
//! called from inside an application's async runtime still works (the future is driven on a
//! thread of this runtime's pool instead of blocking the caller's executor).

use std::future::Future;

use crate::error::{Error, Result};

/// A small multi-threaded runtime owned by one store.
#[derive(Debug)]
pub(super) struct Runtime {
    rt: tokio::runtime::Runtime,
}

impl Runtime {
    /// A runtime with two worker threads (requests are I/O-bound; parts run concurrently as
    /// tasks, not threads).
    pub(super) fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("snapshot-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the S3 store's runtime", "(runtime)", e))?;
        Ok(Runtime { rt })
    }

    /// Runs `fut` to completion from synchronous code.
    pub(super) fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.rt.block_on(fut);
        }
        // Inside another runtime `block_on` would panic: drive it on a scoped thread.
        std::thread::scope(|s| {
            s.spawn(|| self.rt.block_on(fut))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Starts `fut` on the runtime's pool.
    pub(super) fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(fut)
    }
}
