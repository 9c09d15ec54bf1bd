//! The key of an encrypted store: an age post-quantum identity (`AGE-SECRET-KEY-PQ-1…`), or a
//! passphrase; from a string, a file, or the environment. Never printed: `Debug` shows only
//! which kind it is.

use std::path::Path;

use age::secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// The variable holding an age identity (`AGE-SECRET-KEY-PQ-1…`: hybrid post-quantum,
/// ML-KEM-768 + X25519).
pub const KEY_ENV: &str = "SNAPSHOT_KEY";
/// The variable naming a file that holds an identity (age's identity-file format: `#`
/// comments, one `AGE-SECRET-KEY-PQ-1…` line).
pub const KEY_FILE_ENV: &str = "SNAPSHOT_KEY_FILE";
/// The variable holding a passphrase.
pub const PASSPHRASE_ENV: &str = "SNAPSHOT_PASSPHRASE";

/// scrypt work factor (log2 N) of a passphrase per object: ~30 ms each, the price of a key a
/// human can remember; a generated identity costs nothing per object.
pub(super) const PASSPHRASE_WORK: u8 = 14;

/// How an encrypted store's objects are sealed.
#[derive(Clone)]
pub struct EncryptionKey {
    pub(super) kind: Kind,
}

#[derive(Clone)]
pub(super) enum Kind {
    Identity(age::pq::Identity),
    Passphrase(SecretString),
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Identity(_) => "identity",
            Kind::Passphrase(_) => "passphrase",
        };
        f.debug_struct("EncryptionKey")
            .field("kind", &kind)
            .finish()
    }
}

fn key_error(detail: impl Into<String>) -> Error {
    Error::Key {
        location: "(key)".into(),
        detail: detail.into(),
    }
}

impl EncryptionKey {
    /// A new random age identity (hybrid post-quantum, ML-KEM-768 + X25519), and its text to
    /// keep (`AGE-SECRET-KEY-PQ-1…`).
    pub fn generate() -> (Self, String) {
        let id = age::pq::Identity::generate();
        let text = id.to_string().expose_secret().to_string();
        (
            EncryptionKey {
                kind: Kind::Identity(id),
            },
            text,
        )
    }

    /// An identity from its text (`AGE-SECRET-KEY-PQ-1…`), or from identity-file text (`#`
    /// comments and blank lines around one key line).
    ///
    /// # Errors
    /// [`Error::Key`] when no valid identity is there.
    pub fn identity(text: &str) -> Result<Self> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| key_error("no AGE-SECRET-KEY-PQ-1… line in the key"))?;
        let id = line
            .parse::<age::pq::Identity>()
            .map_err(|e| key_error(format!("not an age post-quantum identity: {e}")))?;
        Ok(EncryptionKey {
            kind: Kind::Identity(id),
        })
    }

    /// A passphrase (at least 8 characters).
    ///
    /// # Errors
    /// [`Error::Key`] for a shorter one.
    pub fn passphrase(passphrase: &str) -> Result<Self> {
        if passphrase.chars().count() < 8 {
            return Err(key_error("the passphrase is shorter than 8 characters"));
        }
        Ok(EncryptionKey {
            kind: Kind::Passphrase(SecretString::from(passphrase.to_string())),
        })
    }

    /// An identity read from a file.
    ///
    /// # Errors
    /// [`Error::Key`] when the file cannot be read or holds no identity.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Key {
            location: path.display().to_string(),
            detail: format!("cannot read the key file: {e}"),
        })?;
        Self::identity(&text).map_err(|e| match e {
            Error::Key { detail, .. } => Error::Key {
                location: path.display().to_string(),
                detail,
            },
            e => e,
        })
    }

    /// The key the environment gives: [`KEY_ENV`], else the file [`KEY_FILE_ENV`] names,
    /// else [`PASSPHRASE_ENV`]; `None` when none is set.
    ///
    /// # Errors
    /// [`Error::Key`] when the one set is not a valid key.
    pub fn from_env() -> Result<Option<Self>> {
        if let Ok(k) = std::env::var(KEY_ENV) {
            return Self::identity(&k).map(Some);
        }
        if let Some(f) = std::env::var_os(KEY_FILE_ENV) {
            return Self::from_file(Path::new(&f)).map(Some);
        }
        if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
            return Self::passphrase(&p).map(Some);
        }
        Ok(None)
    }
}
