//! A resource's pages, one after the other: by `next` links, page numbers or offsets.

use serde_json::Value;

use crate::engine::api::client::{Asking, Client};
use crate::engine::api::config::{PageStyle, Paging};
use crate::error::{Error, Result};

/// `path` under `base` (a whole URL stays as it is).
pub(crate) fn url_of(base: &str, path: &str) -> String {
    if path.starts_with("http://") || path.starts_with("https://") {
        return path.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A `next` link resolved against `base` (`/api/…` or a whole URL).
fn resolve(base: &str, link: &str) -> String {
    if link.starts_with("http://") || link.starts_with("https://") {
        return link.to_string();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    if link.starts_with('/') {
        format!("{}{link}", &base[..origin_end])
    } else {
        url_of(base, link)
    }
}

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |v, k| v.get(k))
}

/// Calls `each` with the rows of every page of `path` (with `params`), in order; returns the
/// number of pages.
///
/// # Errors
/// The client's errors; [`Error::Fetch`] when a page has no rows where `paging` says or a
/// `next` link points back at the same page; `each`'s errors.
pub(crate) fn each_page(
    client: &Client,
    base: &str,
    path: &str,
    params: &[(String, String)],
    paging: &Paging,
    what: &str,
    mut each: impl FnMut(Vec<Value>) -> Result<()>,
) -> Result<u64> {
    let first = url_of(base, path);
    let size = paging.size.to_string();
    let mut query: Vec<(String, String)> = params.to_vec();
    if !paging.size_param.is_empty() {
        query.push((paging.size_param.clone(), size));
    }
    let mut page = 1u64;
    let mut offset = 0u64;
    let mut url = first.clone();
    loop {
        let mut q = query.clone();
        match paging.style {
            PageStyle::Next if page > 1 => q.clear(),
            PageStyle::Page => q.push((paging.page_param.clone(), page.to_string())),
            PageStyle::Offset => q.push((paging.offset_param.clone(), offset.to_string())),
            PageStyle::Next => {}
        }
        let asking = Asking { what, page };
        let mut answer = client.get(&url, &q, &asking)?;
        let next = at(&answer, &paging.next)
            .and_then(Value::as_str)
            .map(str::to_string);
        let rows = if answer.is_array() {
            answer.take()
        } else {
            match paging
                .results
                .split('.')
                .filter(|p| !p.is_empty())
                .try_fold(&mut answer, |v, k| v.get_mut(k))
            {
                Some(v) => v.take(),
                None => Value::Null,
            }
        };
        let Value::Array(rows) = rows else {
            return Err(Error::Fetch {
                url: super::redact_url(&url),
                what: what.to_string(),
                page,
                status: Some(200),
                detail: format!("the answer has no array of rows at `{}`", paging.results),
            });
        };
        let n = rows.len() as u64;
        each(rows)?;
        let more = match paging.style {
            PageStyle::Next => match next {
                Some(link) if !link.is_empty() => {
                    let link = resolve(base, &link);
                    if link == url {
                        return Err(Error::Fetch {
                            url: super::redact_url(&url),
                            what: what.to_string(),
                            page,
                            status: Some(200),
                            detail: "the next link points at this same page".into(),
                        });
                    }
                    url = link;
                    true
                }
                _ => false,
            },
            _ => n >= u64::from(paging.size) && n > 0,
        };
        if !more {
            return Ok(page);
        }
        offset += n;
        page += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_against_the_base() {
        let base = "http://h:1/api/v1/";
        assert_eq!(url_of(base, "obs/"), "http://h:1/api/v1/obs/");
        assert_eq!(
            resolve(base, "/api/v1/obs/?page=2"),
            "http://h:1/api/v1/obs/?page=2"
        );
        assert_eq!(resolve(base, "http://x/y"), "http://x/y");
    }
}
