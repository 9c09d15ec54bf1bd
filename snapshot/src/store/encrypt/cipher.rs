//! Sealing and opening one object as an age stream (ChaCha20-Poly1305 in 64 KiB chunks, each
//! authenticated): memory stays bounded whatever the object's size.

use std::io::{self, BufRead, Read, Write};

use age::secrecy::SecretString;

use super::key::{EncryptionKey, Kind, PASSPHRASE_WORK};
use crate::error::{Error, Result};

/// Encrypts what `input` holds into `output`.
pub(super) fn seal(
    key: &EncryptionKey,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> io::Result<()> {
    let encryptor = match &key.kind {
        Kind::Identity(id) => {
            let r = id.to_public();
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        }
        Kind::Passphrase(p) => {
            let mut r = age::scrypt::Recipient::new(SecretString::from(expose(p)));
            r.set_work_factor(PASSPHRASE_WORK);
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        }
    }
    .map_err(io::Error::other)?;
    let mut w = encryptor.wrap_output(output)?;
    io::copy(input, &mut w)?;
    w.finish()?;
    Ok(())
}

fn expose(p: &SecretString) -> String {
    use age::secrecy::ExposeSecret;
    p.expose_secret().to_string()
}

/// Decrypts the object `name` from `input` into `output`: a wrong key is [`Error::Key`], a
/// damaged object (a tag that does not authenticate, a truncated stream) is
/// [`Error::ChecksumMismatch`] naming it.
pub(super) fn open(
    key: &EncryptionKey,
    name: &str,
    location: &str,
    input: impl BufRead,
    output: &mut dyn Write,
) -> Result<u64> {
    let damaged = |detail: String| Error::ChecksumMismatch {
        key: name.to_string(),
        expected: "authentic age ciphertext".into(),
        actual: detail,
    };
    let decryptor = age::Decryptor::new_buffered(input)
        .map_err(|e| damaged(format!("not an age stream: {e}")))?;
    let reader = match &key.kind {
        Kind::Identity(id) => decryptor.decrypt(std::iter::once(id as &dyn age::Identity)),
        Kind::Passphrase(p) => {
            let mut id = age::scrypt::Identity::new(SecretString::from(expose(p)));
            id.set_max_work_factor(20);
            decryptor.decrypt(std::iter::once(&id as &dyn age::Identity))
        }
    };
    let mut reader = reader.map_err(|e| match e {
        age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => Error::Key {
            location: location.to_string(),
            detail: format!("the key does not open {name}: {e}"),
        },
        e => damaged(format!("unreadable header: {e}")),
    })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(damaged(format!(
                    "authentication failed after {total} bytes: {e}"
                )));
            }
        };
        output
            .write_all(&buf[..n])
            .map_err(|e| Error::io("write decrypted bytes of", location, e))?;
        total += n as u64;
    }
    Ok(total)
}
