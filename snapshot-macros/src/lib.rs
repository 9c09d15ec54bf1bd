//! The `#[with_snapshot]` attribute of the [`snapshot`](https://docs.rs/snapshot) crate.
//!
//! Use it through `snapshot` (`use snapshot::with_snapshot;`): this crate is an implementation
//! detail, versioned in lockstep with `snapshot`, and its expansion calls
//! `snapshot::__private`, which is not a stable API.
//!
//! Layout, after `tracing-attributes`: `args` parses the attribute, `entity_id` finds the
//! entity id among the parameters, `expand` writes the wrapped function.

mod args;
mod entity_id;
mod expand;

use proc_macro::TokenStream;
use quote::ToTokens;

/// Takes a snapshot of the application's data before the function body runs, and records
/// whether the call then committed or failed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use snapshot::{with_snapshot, Environment, FileSource, MemoryStore, Outcome, SnapshotManager};
///
/// struct Measures {
///     snapshots: SnapshotManager,
///     // … the application's database connection
/// }
///
/// impl Measures {
///     #[with_snapshot("delete", "measure", manager = self.snapshots)]
///     fn delete(&self, id: i64) -> Result<(), snapshot::Error> {
///         // DELETE FROM measure WHERE id = ?1
///         Ok(())
///     }
/// }
///
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("app.db");
/// # std::fs::write(&db, b"the live data")?;
/// let snapshots = SnapshotManager::builder()
///     .source(FileSource::new(&db))
///     .store(MemoryStore::new())
///     .environment(Environment::persistent())
///     .build()?;
/// let measures = Measures { snapshots: snapshots.clone() };
///
/// measures.delete(42)?;
///
/// let taken = &snapshots.list(&Default::default())?[0];
/// assert_eq!(taken.description, "Before delete measure 42");
/// assert_eq!(taken.entity_id.as_deref(), Some("42"));
/// assert_eq!(taken.outcome, Outcome::Committed);
/// # Ok(()) }
/// ```
///
/// # Arguments
///
/// `#[with_snapshot("<operation>", "<entity>", options…)]`: the operation (`"delete"`,
/// `"update"`, …) and the entity type (`"measure"`), both non-empty string literals, then any of:
///
/// | option | default | meaning |
/// |--------|---------|---------|
/// | `id = <expr>` | see below | the entity id recorded with the snapshot (any `Display`) |
/// | `manager = <expr>` | the installed default | the [`SnapshotManager`] to use |
/// | `on_error = "continue"` | `"fail"` | run the body even when the snapshot fails |
/// | `crate = "<path>"` | `"snapshot"` | where `snapshot` is, when the dependency is renamed |
///
/// # The entity id
///
/// `id = <expr>` wins; it may use the parameters (`id = measure.id`, `id = self.key()`).
/// Otherwise the parameter named `id` or `<entity>_id` (`measure_id`; the entity type lower-cased,
/// other characters replaced by `_`) is recorded, also when it is bound inside a destructuring
/// pattern. Otherwise the snapshot has no id. Two such parameters are a compile error: say which
/// one with `id = …`. The id must implement `Display`; for one that does not, the error asks for
/// `id = …`. It is rendered only when a snapshot is taken.
///
/// # The manager
///
/// `manager = <expr>` takes anything that dereferences to a [`SnapshotManager`]: a field
/// (`manager = self.snapshots`), a reference, an `Arc<SnapshotManager>`, a function call.
/// Without it, the default installed at start-up with [`snapshot::install`] is used; when none
/// is installed the snapshot fails with `Error::NotInstalled` (and the failure policy applies).
///
/// # Failure policy
///
/// Fail closed, by default: when the snapshot cannot be taken the body **does not run** and the
/// function returns the error, converted with `From<snapshot::Error>` — so the return type must
/// be `Result<T, E>` with `E: From<snapshot::Error>` (`snapshot::Error`, `anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`, your own error with a `From` impl; type aliases like
/// `anyhow::Result<T>` are fine). With `on_error = "continue"` the error is logged (`tracing`,
/// level warn) and the body runs without a snapshot; any `Result` will do then.
///
/// A manager that is disabled because the host is ephemeral is not a failure: the body runs,
/// no snapshot is taken, and the manager says so once in the log.
///
/// # Outcome
///
/// The snapshot is recorded with the outcome `pending`; when the body returns, it becomes
/// `committed` (`Ok`) or `failed` (`Err`). A panicking body marks it `failed`, and the panic
/// propagates. A cancelled async call (its future dropped before it finished) leaves it
/// `pending`. Recording the outcome never changes what the function returns: a failure to
/// record it is logged.
///
/// # Async
///
/// `async fn`s (free functions and methods) are supported. With `snapshot`'s `tokio` feature,
/// inside a tokio runtime, the copy runs on tokio's blocking pool (`spawn_blocking`), off the
/// executor; without it, it runs inline when the future is first polled. The outcome update
/// after the body (one small catalog write) runs inline.
///
/// ```
/// use snapshot::{with_snapshot, SnapshotManager};
///
/// struct Grants { snapshots: SnapshotManager }
///
/// impl Grants {
///     #[with_snapshot("delete", "grant", manager = self.snapshots)]
///     async fn delete(&self, grant_id: u32) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///         Ok(())
///     }
/// }
/// ```
///
/// # What it works on
///
/// Free functions, inherent and trait-impl methods (`&self`, `&mut self`, `self`), generic
/// functions with where-clauses, `impl Trait` arguments and return types, `unsafe fn`, `async fn`.
/// The signature and the attributes come out unchanged and the body is never parsed, so a
/// mistake in the body gets rustc's own error. Not on `const fn`, and not on a function that
/// returns a future by hand (what `#[async_trait]` makes of an `async fn`): the snapshot would be
/// taken when the future is created rather than when it runs.
///
/// A function that does not return a `Result` is a compile error:
///
/// ```compile_fail
/// #[snapshot::with_snapshot("delete", "measure")]
/// fn delete(id: i64) {}
/// ```
///
/// [`SnapshotManager`]: https://docs.rs/snapshot/latest/snapshot/struct.SnapshotManager.html
/// [`snapshot::install`]: https://docs.rs/snapshot/latest/snapshot/fn.install.html
#[proc_macro_attribute]
pub fn with_snapshot(args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let result = syn::parse::<args::Args>(args).and_then(|args| {
        let item = syn::parse::<expand::MaybeItemFn>(item).map_err(|e| {
            if e.to_string().contains("wraps a function body") {
                e
            } else {
                syn::Error::new(
                    e.span(),
                    format!("`#[with_snapshot]` goes on a function: {e}"),
                )
            }
        })?;
        expand::expand(args, item)
    });
    match result {
        Ok(tokens) => tokens.into(),
        // The error, and the item as it was written: no cascade of errors about a missing fn,
        // and no warnings about the parameters the expansion would have used.
        Err(error) => {
            let mut out = error.to_compile_error();
            out.extend(quote::quote!(#[allow(unused)]));
            original.to_tokens(&mut out);
            out.into()
        }
    }
}
