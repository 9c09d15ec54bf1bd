//! Opening a snapshot image: read-only and immutable, by a `file:` URI that any path survives.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::engine::sqlite::error;
use crate::error::Result;

/// Percent-encodes a path for a `file:` URI (everything but unreserved characters and `/`).
pub(crate) fn uri_path(path: &Path) -> String {
    let mut out = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(*b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Opens an image read-only and immutable: no `-wal`/`-shm` is looked for or created.
///
/// # Errors
/// The engine's error opening it.
pub(crate) fn open_image(image: &Path) -> Result<Connection> {
    let uri = format!("{}?immutable=1", uri_path(image));
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| error(image, "open image", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_escapes_everything_unusual() {
        assert_eq!(
            uri_path(Path::new("/a b/c?d#e%")),
            "file:/a%20b/c%3Fd%23e%25"
        );
    }
}
