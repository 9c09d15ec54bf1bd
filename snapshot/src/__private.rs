//! Support code for the code `#[with_snapshot]` generates. Not a stable API: do not use it
//! directly; it may change in any release.
//!
//! A wrapped call goes through three steps:
//!
//! 1. [`begin`] (or [`begin_async`]) resolves the manager, takes the snapshot with the outcome
//!    [`Outcome::Pending`], and applies the failure policy: fail closed ([`OnError::Fail`], the
//!    error is handed back) or continue ([`OnError::Continue`], logged, the body runs without a
//!    snapshot).
//! 2. [`run`] (or [`run_async`]) returns the converted error without running the body, or
//!    runs it.
//! 3. [`Guard::finish`] marks the record [`Outcome::Committed`] (the body returned `Ok`) or
//!    [`Outcome::Failed`] (it returned `Err`), then deletes the objects of the snapshots that
//!    retention dropped when this one was taken (cleanup waits until the call is over). If a
//!    synchronous body panics, the guard's `Drop` marks the record failed while the panic
//!    unwinds; [`run_async`] catches an async body's panic to do the same, then resumes it. If an
//!    async call is cancelled (its future dropped before completion) the record stays pending:
//!    the call neither committed nor failed as far as anyone can tell.
//!
//! A disabled manager (ephemeral host) is not a failure: the body runs and nothing is recorded.

use std::future::Future;

use crate::error::{Error, Result};
use crate::manager::{SnapshotManager, SnapshotOutcome, SnapshotRequest};
use crate::record::{Outcome, SnapshotRecord};

/// What a wrapped call does when its snapshot cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail closed: the body does not run and the error is returned.
    Fail,
    /// Log the error and run the body without a snapshot.
    Continue,
}

/// The static part of a wrapped call, written by the macro.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The operation (`"delete"`).
    pub operation: &'static str,
    /// The entity type (`"measure"`).
    pub entity: &'static str,
    /// The failure policy.
    pub on_error: OnError,
    /// `module::path::fn_name` of the wrapped function, for the log.
    pub function: &'static str,
}

/// The entity id of a wrapped call: anything that implements `Display`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded as the snapshot's entity id: it does not implement `Display`",
    label = "`#[with_snapshot]` takes this as the entity id",
    note = "choose what to record with `id = …`, e.g. `#[with_snapshot(\"delete\", \"measure\", id = measure.id)]`"
)]
pub trait EntityId {
    /// The id as recorded.
    fn render(&self) -> String;
}

#[diagnostic::do_not_recommend]
impl<T: std::fmt::Display + ?Sized> EntityId for T {
    fn render(&self) -> String {
        self.to_string()
    }
}

/// Renders an entity id (the bound gives the error that asks for `id = …`).
#[inline]
pub fn entity_id<I: EntityId + ?Sized>(id: &I) -> Option<String> {
    Some(id.render())
}

/// The return value of a wrapped call: a `Result`, whose `Ok`/`Err` becomes the outcome.
#[diagnostic::on_unimplemented(
    message = "`#[with_snapshot]` needs the function to return a `Result`, not `{Self}`",
    label = "the outcome of the call (committed or failed) is read from this `Result`",
    note = "return `Result<T, E>` (an alias such as `anyhow::Result<T>` or `io::Result<T>` works too)"
)]
pub trait CallResult {
    /// Whether the call succeeded.
    fn is_success(&self) -> bool;
}

#[diagnostic::do_not_recommend]
impl<T, E> CallResult for Result<T, E> {
    #[inline]
    fn is_success(&self) -> bool {
        self.is_ok()
    }
}

/// A return type that can carry a failed snapshot out of a fail-closed call.
#[diagnostic::on_unimplemented(
    message = "`#[with_snapshot]` needs the function to return `Result<_, E>` with `E: From<snapshot::Error>`; `{Self}` is not one",
    label = "a failed snapshot is returned through this type (fail closed)",
    note = "`anyhow::Error`, `Box<dyn std::error::Error + Send + Sync>`, `snapshot::Error` and error types with `impl From<snapshot::Error>` qualify",
    note = "or run the body anyway when the snapshot fails: `on_error = \"continue\"`"
)]
pub trait SnapshotResult: CallResult + Sized {
    /// The error of a failed snapshot, converted to the call's error type.
    fn from_snapshot_error(error: Error) -> Self;
}

#[diagnostic::do_not_recommend]
impl<T, E: From<Error>> SnapshotResult for Result<T, E> {
    #[inline]
    fn from_snapshot_error(error: Error) -> Self {
        Err(E::from(error))
    }
}

/// The installed default manager.
#[inline]
pub fn installed() -> Result<&'static SnapshotManager> {
    crate::manager::installed()
}

/// A manager named with `manager = …` (any expression that dereferences to one).
#[inline]
pub fn explicit(manager: &SnapshotManager) -> Result<&SnapshotManager> {
    Ok(manager)
}

/// How a wrapped call treats its return value: the checks on the return type happen here, in
/// one call spanned on that type, so a wrong type is one error in the right place.
pub struct Ops<R> {
    convert: Option<fn(Error) -> R>,
    success: fn(&R) -> bool,
}

/// Fail closed: a failed snapshot is returned as the call's error.
#[inline]
pub fn fail_closed<R: SnapshotResult>() -> Ops<R> {
    Ops {
        convert: Some(R::from_snapshot_error),
        success: R::is_success,
    }
}

/// `on_error = "continue"`: any `Result`.
#[inline]
pub fn keep_going<R: CallResult>() -> Ops<R> {
    Ops {
        convert: None,
        success: R::is_success,
    }
}

/// Runs a synchronous body: not at all when the snapshot failed and the call fails closed
/// (the converted error is returned), else once; then records its outcome.
#[inline]
pub fn run<R, F: FnOnce() -> R>(begun: Result<Guard>, body: F, ops: Ops<R>) -> R {
    match begun {
        Ok(guard) => guard.finish(body(), ops.success),
        Err(error) => match ops.convert {
            Some(convert) => convert(error),
            None => continued(error).finish(body(), ops.success),
        },
    }
}

/// [`run`] for an `async fn`: `body` is not polled when the snapshot failed.
pub async fn run_async<R, B, F>(begun: B, body: F, ops: Ops<R>) -> R
where
    B: Future<Output = Result<Guard>>,
    F: Future<Output = R>,
{
    let guard = match begun.await {
        Ok(guard) => guard,
        Err(error) => match ops.convert {
            Some(convert) => return convert(error),
            None => continued(error),
        },
    };
    if guard.taken.is_none() {
        return body.await;
    }
    // A panic in the body unwinds out of `poll`, and the executor drops the future only after
    // catching it, when `Drop` can no longer tell a panic from a cancellation: catch it here.
    let mut guard = Some(guard);
    let mut body = std::pin::pin!(body);
    let result = std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                if let Some(mut guard) = guard.take() {
                    guard.settle(Outcome::Failed);
                }
                std::panic::resume_unwind(panic)
            }
        }
    })
    .await;
    match guard {
        Some(guard) => guard.finish(result, ops.success),
        None => result,
    }
}

/// The guard of an `on_error = "continue"` call (whose [`begin`] does not fail: this is for
/// completeness).
fn continued(error: Error) -> Guard {
    tracing::warn!(%error, "no snapshot could be taken; the call runs without one");
    Guard::none("")
}

/// Settles the outcome of a wrapped call; see the module docs.
#[derive(Debug)]
pub struct Guard {
    taken: Option<(SnapshotManager, String)>,
    /// Records retention dropped when the snapshot was taken: their objects are deleted once
    /// the call is over, whatever its end (return, panic, cancellation).
    pruned: Option<(SnapshotManager, Vec<SnapshotRecord>)>,
    function: &'static str,
}

impl Guard {
    fn none(function: &'static str) -> Self {
        Guard {
            taken: None,
            pruned: None,
            function,
        }
    }

    fn clean_up(&mut self) {
        if let Some((manager, pruned)) = self.pruned.take() {
            manager.delete_objects(&pruned);
        }
    }

    /// The id of the snapshot taken for this call, if one was taken.
    pub fn snapshot_id(&self) -> Option<&str> {
        self.taken.as_ref().map(|(_, id)| id.as_str())
    }

    /// Records the outcome of the body's result and hands the result back.
    #[inline]
    pub fn finish<R>(mut self, result: R, success: fn(&R) -> bool) -> R {
        if self.taken.is_some() {
            let outcome = if success(&result) {
                Outcome::Committed
            } else {
                Outcome::Failed
            };
            self.settle(outcome);
        }
        self.clean_up();
        result
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some((manager, id)) = self.taken.take()
            && let Err(error) = manager.set_outcome(&id, outcome)
        {
            tracing::warn!(
                function = self.function,
                snapshot = %id,
                ?outcome,
                %error,
                "could not record the outcome of the call; the snapshot stays `pending`"
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.clean_up();
        if self.taken.is_none() {
            return;
        }
        if std::thread::panicking() {
            self.settle(Outcome::Failed);
        } else if let Some((_, id)) = &self.taken {
            tracing::debug!(
                function = self.function,
                snapshot = %id,
                "the call was cancelled before it finished; the snapshot stays `pending`"
            );
        }
    }
}

fn request(call: &Call, id: Option<String>) -> SnapshotRequest {
    let request = SnapshotRequest::new(call.operation).around_call();
    match id {
        Some(id) => request.entity(call.entity, id),
        None => request.entity_type(call.entity),
    }
}

type Taken = (SnapshotOutcome, Vec<SnapshotRecord>);

fn taken(call: &Call, manager: &SnapshotManager, result: Result<Taken>) -> Result<Guard> {
    match result {
        Ok((SnapshotOutcome::Taken(record), pruned)) => Ok(Guard {
            taken: Some((manager.clone(), record.snapshot_id)),
            pruned: (!pruned.is_empty()).then(|| (manager.clone(), pruned)),
            function: call.function,
        }),
        Ok(_) => Ok(Guard::none(call.function)),
        Err(error) => policy(call, error),
    }
}

fn policy(call: &Call, error: Error) -> Result<Guard> {
    match call.on_error {
        OnError::Fail => Err(error),
        OnError::Continue => {
            tracing::warn!(
                function = call.function,
                operation = call.operation,
                entity = call.entity,
                %error,
                "no snapshot could be taken; the call runs without one (on_error = \"continue\")"
            );
            Ok(Guard::none(call.function))
        }
    }
}

/// Takes the snapshot before a synchronous body. The id is rendered only when a snapshot is
/// actually taken.
///
/// # Errors
/// The snapshot's error when the policy is [`OnError::Fail`].
#[inline]
pub fn begin(
    manager: Result<&SnapshotManager>,
    call: Call,
    id: impl FnOnce() -> Option<String>,
) -> Result<Guard> {
    let manager = match manager {
        Ok(m) => m,
        Err(error) => return policy(&call, error),
    };
    if !manager.is_enabled() {
        // Says why, once, in the log.
        let _ = manager.snapshot(SnapshotRequest::new(call.operation));
        return Ok(Guard::none(call.function));
    }
    let result = manager.snapshot_deferring_prune(request(&call, id()));
    taken(&call, manager, result)
}

/// Takes the snapshot before an async body. The returned future owns everything it needs.
///
/// With the `tokio` feature and inside a tokio runtime, the copy runs on tokio's blocking pool
/// (`spawn_blocking`), off the executor. Otherwise it runs inline when the future is polled.
/// The outcome update after the body (one small catalog write) always runs inline, so that
/// the wrapped future stays `Send` whatever the function returns.
pub fn begin_async(
    manager: Result<&SnapshotManager>,
    call: Call,
    id: impl FnOnce() -> Option<String>,
) -> impl Future<Output = Result<Guard>> + Send + 'static {
    // Everything borrowed is resolved now, so the future is `'static` and `Send`.
    let prepared = match manager {
        Ok(m) if !m.is_enabled() => {
            // Says why, once, in the log.
            let _ = m.snapshot(SnapshotRequest::new(call.operation));
            None
        }
        Ok(m) => Some(Ok((m.clone(), request(&call, id())))),
        Err(error) => Some(Err(error)),
    };
    async move {
        match prepared {
            None => Ok(Guard::none(call.function)),
            Some(Err(error)) => policy(&call, error),
            Some(Ok((manager, request))) => {
                let result = snapshot_off_executor(&manager, request).await;
                taken(&call, &manager, result)
            }
        }
    }
}

#[cfg(feature = "tokio")]
async fn snapshot_off_executor(
    manager: &SnapshotManager,
    request: SnapshotRequest,
) -> Result<Taken> {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return manager.snapshot_deferring_prune(request);
    };
    let (m, r) = (manager.clone(), request.clone());
    match handle
        .spawn_blocking(move || m.snapshot_deferring_prune(r))
        .await
    {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        // The runtime is shutting down and never ran the task: take the snapshot here.
        Err(_) => manager.snapshot_deferring_prune(request),
    }
}

#[cfg(not(feature = "tokio"))]
async fn snapshot_off_executor(
    manager: &SnapshotManager,
    request: SnapshotRequest,
) -> Result<Taken> {
    manager.snapshot_deferring_prune(request)
}
