//! Work over a batch of chunks on every core: the batch is taken in small parts, each thread
//! taking the next part when it is done with one, so that a part heavy with changed pages does
//! not keep the others waiting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// `f` over `items`, in parts of `part` items taken in turn by every core, each thread with its
/// own state made by `init`; the results in the items' order. The first error stops the others
/// at their next part and is returned.
///
/// # Errors
/// The first error of `init` or `f`.
pub(crate) fn map_in_parts<T, R, S>(
    items: &[T],
    part: usize,
    init: impl Fn() -> Result<S> + Sync,
    f: impl Fn(&mut S, &T) -> Result<R> + Sync,
) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
{
    let part = part.max(1);
    let parts = items.len().div_ceil(part);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(parts.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || -> Result<Vec<(usize, Vec<R>)>> {
        let mut state = init()?;
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= parts || failed.load(Ordering::Relaxed) {
                return Ok(done);
            }
            let slice = &items[i * part..((i + 1) * part).min(items.len())];
            let mut out = Vec::with_capacity(slice.len());
            for item in slice {
                match f(&mut state, item) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            done.push((i, out));
        }
    };
    let mut all: Vec<(usize, Vec<R>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work()?;
        for h in handles {
            all.extend(h.join().map_err(|_| {
                Error::io(
                    "work",
                    "chunks",
                    std::io::Error::other("a worker thread panicked"),
                )
            })??);
        }
        Ok::<_, Error>(all)
    })?;
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().flat_map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_order_and_errors_stop_the_work() -> Result<()> {
        let items: Vec<u32> = (0..1000).collect();
        let out = map_in_parts(
            &items,
            7,
            || Ok(0u32),
            |n, x| {
                *n += 1;
                Ok(x * 2)
            },
        )?;
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        let e = map_in_parts(
            &items,
            7,
            || Ok(()),
            |(), x| {
                if *x == 500 {
                    Err(Error::invalid("x", "500"))
                } else {
                    Ok(*x)
                }
            },
        );
        assert!(matches!(e, Err(Error::InvalidInput { .. })));
        assert!(map_in_parts(&[] as &[u32], 7, || Ok(()), |(), x| Ok(*x))?.is_empty());
        Ok(())
    }
}
