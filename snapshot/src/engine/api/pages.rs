//! A resource's pages, one after the other: by `next` links, page numbers or offsets.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

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

/// A page's rows, each the exact JSON text the API sent.
pub(crate) type Rows = Vec<Box<RawValue>>;

/// The members of the object at the dotted `parents` of `raw` (`None`: absent or not an
/// object).
fn object_at<'a>(raw: &'a RawValue, parents: &[&str]) -> Option<BTreeMap<String, &'a RawValue>> {
    let mut map: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get()).ok()?;
    for k in parents {
        let child = *map.get(*k)?;
        map = serde_json::from_str(child.get()).ok()?;
    }
    Some(map)
}

/// A dotted path as its parents and its last key.
fn parts(path: &str) -> (Vec<&str>, &str) {
    let mut keys: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let last = keys.pop().unwrap_or("");
    (keys, last)
}

/// A page's rows (the answer itself when it is an array, else the array at
/// `paging.results`) and its link to the next page, parsed without rebuilding the records
/// (and the object holding both read once when, as usual, they are siblings).
///
/// # Errors
/// What is wrong with the answer, for people.
fn split(body: &[u8], paging: &Paging) -> std::result::Result<(Rows, Option<String>), String> {
    let answer: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if answer.get().trim_start().starts_with('[') {
        let rows: Rows =
            serde_json::from_str(answer.get()).map_err(|e| format!("the rows: {e}"))?;
        return Ok((rows, None));
    }
    let no_rows = || format!("the answer has no array of rows at `{}`", paging.results);
    let (rp, rk) = parts(&paging.results);
    let (np, nk) = parts(&paging.next);
    let rows_parent = object_at(answer, &rp).ok_or_else(no_rows)?;
    let next_parent = if np == rp {
        None
    } else {
        object_at(answer, &np)
    };
    let rows = rows_parent
        .get(rk)
        .and_then(|v| serde_json::from_str::<Rows>(v.get()).ok())
        .ok_or_else(no_rows)?;
    let next = next_parent
        .as_ref()
        .unwrap_or(&rows_parent)
        .get(nk)
        .and_then(|v| serde_json::from_str::<Option<String>>(v.get()).ok())
        .flatten();
    Ok((rows, next))
}

/// Calls `each` with the rows of every page of `path` (with `params`), in order; returns the
/// number of pages. (The chunks of a run are read ahead on a thread by `run.rs`; this is for
/// the lookups, fetched once.)
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
    mut each: impl FnMut(Rows) -> Result<()>,
) -> Result<u64> {
    let mut failed = None;
    let pages = fetch_pages(client, base, path, params, paging, what, |rows| {
        failed = each(rows).err();
        failed.is_none()
    })?;
    failed.map_or(Ok(pages), Err)
}

/// Fetches the pages, handing each page's rows to `send` until it returns `false`; the
/// number of pages.
///
/// # Errors
/// As [`each_page`].
pub(crate) fn fetch_pages(
    client: &Client,
    base: &str,
    path: &str,
    params: &[(String, String)],
    paging: &Paging,
    what: &str,
    mut send: impl FnMut(Rows) -> bool,
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
        let body = client.get(&url, &q, &asking)?;
        let fail = |detail: String| Error::Fetch {
            url: super::redact_url(&url),
            what: what.to_string(),
            page,
            status: Some(200),
            detail,
        };
        let (rows, next) = split(&body, paging).map_err(fail)?;
        let n = rows.len() as u64;
        if !send(rows) {
            return Ok(page);
        }
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
