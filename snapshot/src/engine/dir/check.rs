//! The check of a directory archive: `Header` — it opens and holds a summary; `Quick` — the
//! summary parses and every entry it lists is a member; `Full` — every file member is read and
//! its size and blake3 compared with the summary.

use std::collections::BTreeMap;
use std::path::Path;

use crate::engine::dir::archive::{self, damaged};
use crate::engine::dir::summary;
use crate::error::Result;
use crate::source::CheckLevel;

/// Checks the archive at `image` at `level` (see the module docs).
///
/// # Errors
/// [`Error::NotADatabase`](crate::Error::NotADatabase) (engine `dir`) naming what is wrong.
pub(crate) fn check(image: &Path, level: CheckLevel) -> Result<()> {
    let s = summary::read(image)?;
    if level == CheckLevel::Header {
        return Ok(());
    }
    // member → (size, blake3) of the files; every other entry just has to be there.
    let mut expected: BTreeMap<String, Option<(u64, String)>> = s
        .entries
        .iter()
        .map(|e| {
            let name = if e.kind == "dir" {
                format!("{}/", e.member)
            } else {
                e.member.clone()
            };
            let sum = (e.kind == "file").then(|| (e.size, e.blake3.clone().unwrap_or_default()));
            (name, sum)
        })
        .collect();
    let full = level == CheckLevel::Full;
    let mut bad = None;
    archive::for_each(image, &mut |m| {
        let Some(want) = expected.remove(&m.name) else {
            return Ok(());
        };
        if let (true, Some((size, hash))) = (full, want) {
            let mut hasher = blake3::Hasher::new();
            let mut n = 0u64;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let k = m.content.read(&mut buf).map_err(|e| damaged(image, e))?;
                if k == 0 {
                    break;
                }
                hasher.update(&buf[..k]);
                n += k as u64;
            }
            let got = format!("blake3:{}", hasher.finalize().to_hex());
            if (n, &got) != (size, &hash) && bad.is_none() {
                bad = Some(format!(
                    "{}: {n} bytes {got}, the summary says {size} bytes {hash}",
                    m.name
                ));
            }
        }
        Ok(())
    })?;
    if let Some(b) = bad {
        return Err(damaged(image, b));
    }
    if let Some((name, _)) = expected.into_iter().next() {
        return Err(damaged(
            image,
            format!("{name} is in the summary but not in the archive"),
        ));
    }
    Ok(())
}
