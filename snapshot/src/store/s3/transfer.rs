//! Moving files in and out of the bucket: multipart uploads read part by part from the file
//! (a bounded number of parts in memory at once), announced by a marker object so that a
//! writer killed mid-upload leaves something the doctor finds; downloads as concurrent ranged
//! requests written in place, pinned to the object's ETag.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{S3Store, UPLOADS};
use crate::error::{Error, Result};
use crate::fs_util;
use crate::store::{ObjectMeta, PutMode, Store};

pub(super) use super::profile::profile_credentials;

/// Bytes per part of a multipart upload and per ranged download request.
pub(super) const PART: usize = 16 << 20;
/// Parts in flight at once (the memory bound: `PART × IN_FLIGHT`).
const IN_FLIGHT: usize = 8;

/// What a marker of a multipart upload in progress says.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    key: String,
    upload_id: String,
    started: DateTime<Utc>,
}

/// Puts the file `file` under `key`: one request when small, else a multipart upload.
/// [`PutMode::Create`] of a multipart upload checks the key first (a snapshot's image is put
/// after its sidecar reserved the id with a conditional write, so no other writer races it).
pub(super) fn put_file(
    s: &S3Store,
    key: &str,
    file: &Path,
    mode: PutMode,
) -> Result<Option<String>> {
    let size = std::fs::metadata(file)
        .map_err(|e| Error::io("stat", file, e))?
        .len();
    if size <= PART as u64 || matches!(mode, PutMode::Update(_)) {
        let data = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
        return s.put_bytes_mode(key, data, mode);
    }
    if mode == PutMode::Create && s.head(key)?.is_some() {
        return Err(Error::AlreadyExists {
            key: key.to_string(),
        });
    }
    let path = s.path(key)?;
    let id =
        s.rt.run(s.client.create_multipart(&path))
            .map_err(|e| s.err(key, e))?;
    let marker_key = format!(
        "{UPLOADS}/{key}~{}",
        &blake3::hash(id.as_bytes()).to_hex()[..16]
    );
    let marker = serde_json::to_vec(&Marker {
        key: key.to_string(),
        upload_id: id.clone(),
        started: Utc::now(),
    })
    .expect("a marker serialises");
    let marker_path = s.raw_path(&marker_key);
    let announced =
        s.rt.run(s.client.put(&marker_path, PutPayload::from(marker)))
            .map_err(|e| s.err(&marker_key, e));
    let result = announced.and_then(|_| upload_parts(s, key, file, &id));
    let result = match result {
        Ok(parts) => {
            s.rt.run(s.client.complete_multipart(&path, &id, parts))
                .map(|r| r.e_tag)
                .map_err(|e| s.err(key, e))
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = s.rt.run(s.client.abort_multipart(&path, &id));
    }
    let _ = s.rt.run(s.client.delete(&marker_path));
    result
}

/// Uploads the parts of `file`, at most [`IN_FLIGHT`] at once, in order.
fn upload_parts(s: &S3Store, key: &str, file: &Path, id: &str) -> Result<Vec<PartId>> {
    let mut f = File::open(file).map_err(|e| Error::io("open", file, e))?;
    let path = s.path(key)?;
    let mut in_flight = VecDeque::new();
    let mut parts = Vec::new();
    let wait = |h: tokio::task::JoinHandle<object_store::Result<PartId>>| -> Result<PartId> {
        s.rt.run(h)
            .map_err(|e| Error::io("upload a part", file, std::io::Error::other(e)))?
            .map_err(|e| s.err(key, e))
    };
    for index in 0.. {
        let mut buf = Vec::with_capacity(PART);
        (&mut f)
            .take(PART as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", file, e))?;
        if buf.is_empty() {
            break;
        }
        let (client, path, id) = (s.client.clone(), path.clone(), id.to_string());
        in_flight.push_back(s.rt.spawn(async move {
            client
                .put_part(&path, &id, index, PutPayload::from(buf))
                .await
        }));
        if in_flight.len() >= IN_FLIGHT
            && let Some(h) = in_flight.pop_front()
        {
            parts.push(wait(h)?);
        }
    }
    while let Some(h) = in_flight.pop_front() {
        parts.push(wait(h)?);
    }
    Ok(parts)
}

/// Downloads `key` to the new file `dest` (left absent on error).
pub(super) fn get_to_file(s: &S3Store, key: &str, dest: &Path) -> Result<ObjectMeta> {
    let guard = fs_util::StagingGuard::new(dest.to_path_buf());
    let file = fs_util::create_new_private(dest)?;
    let meta = s.head(key)?.ok_or_else(|| Error::BlobMissing {
        key: key.to_string(),
    })?;
    let path = s.path(key)?;
    let size = meta.size;
    let mut in_flight = VecDeque::new();
    let mut start = 0u64;
    let write = |h: tokio::task::JoinHandle<object_store::Result<(u64, bytes::Bytes)>>| {
        let (at, data) =
            s.rt.run(h)
                .map_err(|e| Error::io("download a part", dest, std::io::Error::other(e)))?
                .map_err(|e| match e {
                    // The object was replaced or deleted while it was read.
                    object_store::Error::Precondition { .. }
                    | object_store::Error::NotFound { .. } => Error::Precondition {
                        key: key.to_string(),
                    },
                    e => s.err(key, e),
                })?;
        file.write_all_at(&data, at)
            .map_err(|e| Error::io("write", dest, e))
    };
    while start < size.max(1) {
        let end = (start + PART as u64).min(size);
        let (client, path) = (s.client.clone(), path.clone());
        let options = GetOptions {
            if_match: meta.version.clone(),
            range: (size > 0).then_some(GetRange::Bounded(start..end)),
            ..Default::default()
        };
        in_flight.push_back(s.rt.spawn(async move {
            let r = client.get_opts(&path, options).await?;
            let mut stream = r.into_stream();
            let mut data = Vec::with_capacity((end - start) as usize);
            while let Some(chunk) = stream.next().await {
                data.extend_from_slice(&chunk?);
            }
            Ok((start, bytes::Bytes::from(data)))
        }));
        if in_flight.len() >= IN_FLIGHT
            && let Some(h) = in_flight.pop_front()
        {
            write(h)?;
        }
        start = end.max(start + 1);
    }
    while let Some(h) = in_flight.pop_front() {
        write(h)?;
    }
    let written = file
        .metadata()
        .map_err(|e| Error::io("stat", dest, e))?
        .len();
    if written != size {
        return Err(Error::Remote {
            location: s.object_location_of(key),
            endpoint: s.endpoint.clone(),
            status: None,
            detail: format!("downloaded {written} bytes of {size}"),
        });
    }
    guard.disarm();
    Ok(meta)
}

/// Multipart uploads whose writer is gone (markers older than `min_age`), aborted and their
/// markers removed when `repair`.
pub(super) fn check_uploads(s: &S3Store, repair: bool, min_age: Duration) -> Result<Vec<String>> {
    let dir = s.raw_path(UPLOADS);
    let markers: Vec<object_store::ObjectMeta> =
        s.rt.run(async { s.client.list(Some(&dir)).collect::<Vec<_>>().await })
            .into_iter()
            .collect::<object_store::Result<_>>()
            .map_err(|e| s.err(UPLOADS, e))?;
    let now = Utc::now();
    let mut lines = Vec::new();
    for m in markers {
        let age = (now - m.last_modified).to_std().unwrap_or_default();
        if age < min_age {
            continue;
        }
        let name = m.location.to_string();
        let marker: Option<Marker> =
            s.rt.run(async { s.client.get(&m.location).await?.bytes().await })
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(marker) = marker else {
            lines.push(format!(
                "unreadable upload marker {name}{}",
                if repair { ", removed" } else { "" }
            ));
            if repair {
                let _ = s.rt.run(s.client.delete(&m.location));
            }
            continue;
        };
        let mut line = format!(
            "leftover multipart upload of {} (started {})",
            s.object_location_of(&marker.key),
            marker.started.format("%Y-%m-%d %H:%M:%S UTC")
        );
        if repair {
            if let Ok(path) = s.path(&marker.key) {
                match s.rt.run(s.client.abort_multipart(&path, &marker.upload_id)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(s.err(&marker.key, e)),
                }
            }
            s.rt.run(s.client.delete(&m.location))
                .map_err(|e| s.err(&name, e))?;
            line.push_str(", aborted");
        }
        lines.push(line);
    }
    Ok(lines)
}
