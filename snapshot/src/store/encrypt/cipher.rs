//! The sealed format of one object: a header naming the format and holding the object's own
//! random 256-bit key, encrypted with age to the store's identity or passphrase; then the
//! object in chunks of 1 MiB, each sealed with AES-256-GCM (aws-lc) under that key — the STREAM
//! construction: the nonce is the chunk's number and a flag marking the last chunk, so chunks
//! cannot be reordered, dropped or the object truncated without failing authentication.
//!
//! ```text
//! "snapshot-sealed/v1\n"  u32 BE n  <n bytes: age file holding the 32-byte key>
//! chunk 0 … chunk k       each ≤ 1 MiB of plaintext + 16-byte tag; the last one flagged
//! ```
//!
//! age seals the key (its identities, passphrases and header format are what users know); the
//! bulk is AES-GCM because age's own ChaCha20-Poly1305 stream runs at ~0.65 GB/s here against
//! ~10 GB/s for aws-lc's AES-256-GCM (measured on this machine, 1 GiB in memory), and the
//! encrypted snapshot is to cost little more than a plain one.

use std::io::{self, Read, Write};

use age::secrecy::{ExposeSecret, SecretString};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::key::{EncryptionKey, Kind, PASSPHRASE_WORK};
use crate::error::{Error, Result};

/// The first bytes of every sealed object.
pub(crate) const MAGIC: &[u8] = b"snapshot-sealed/v1\n";
/// Plaintext bytes per chunk.
const CHUNK: usize = 1 << 20;
const TAG: usize = 16;

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn passphrase(p: &SecretString) -> SecretString {
    SecretString::from(p.expose_secret().to_string())
}

/// The age file holding `file_key`, for `key`.
fn wrap_key(key: &EncryptionKey, file_key: &[u8; 32]) -> io::Result<Vec<u8>> {
    let encryptor = match &key.kind {
        Kind::Identity(id) => {
            let r = id.to_public();
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        }
        Kind::Passphrase(p) => {
            let mut r = age::scrypt::Recipient::new(passphrase(p));
            r.set_work_factor(PASSPHRASE_WORK);
            age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        }
    }
    .map_err(io::Error::other)?;
    let mut out = Vec::new();
    let mut w = encryptor.wrap_output(&mut out)?;
    w.write_all(file_key)?;
    w.finish()?;
    Ok(out)
}

/// Writes a sealed object: [`new`](Self::new) writes the header, [`finish`](Self::finish)
/// the last chunk.
pub(crate) struct SealWriter<W: Write> {
    out: W,
    key: LessSafeKey,
    buf: Vec<u8>,
    counter: u64,
}

impl<W: Write> SealWriter<W> {
    pub(crate) fn new(key: &EncryptionKey, mut out: W) -> io::Result<Self> {
        let mut file_key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut file_key).map_err(|_| io::Error::other("no randomness"))?;
        let wrapped = wrap_key(key, &file_key)?;
        out.write_all(MAGIC)?;
        out.write_all(&(wrapped.len() as u32).to_be_bytes())?;
        out.write_all(&wrapped)?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &file_key).map_err(|_| io::Error::other("key"))?,
        );
        Ok(SealWriter {
            out,
            key,
            buf: Vec::with_capacity(CHUNK + TAG),
            counter: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.counter, last), Aad::empty(), &mut self.buf)
            .map_err(|_| io::Error::other("seal"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.counter += 1;
        Ok(())
    }

    /// Seals the last chunk and returns the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Encrypts what `input` holds into `output`.
pub(super) fn seal(
    key: &EncryptionKey,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> io::Result<()> {
    let mut w = SealWriter::new(key, output)?;
    io::copy(input, &mut w)?;
    w.finish()?;
    Ok(())
}

/// Reads as much of `buf` as `input` has; the count.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decrypts the object `name` from `input` into `output`: a wrong key is [`Error::Key`], a
/// damaged object (a tag that does not authenticate, a truncated or reordered stream) is
/// [`Error::ChecksumMismatch`] naming it. Returns the plaintext's size.
pub(super) fn open(
    key: &EncryptionKey,
    name: &str,
    location: &str,
    mut input: impl Read,
    output: &mut dyn Write,
) -> Result<u64> {
    let damaged = |detail: String| Error::ChecksumMismatch {
        key: name.to_string(),
        expected: "an authentic sealed object".into(),
        actual: detail,
    };
    let io_err = |e: io::Error| Error::io("read sealed object", location, e);
    let mut head = [0u8; MAGIC.len() + 4];
    if read_full(&mut input, &mut head).map_err(io_err)? < head.len()
        || &head[..MAGIC.len()] != MAGIC
    {
        return Err(damaged(
            "not a sealed object (no snapshot-sealed/v1 header)".into(),
        ));
    }
    let n = u32::from_be_bytes(head[MAGIC.len()..].try_into().expect("4 bytes")) as usize;
    if n > 1 << 16 {
        return Err(damaged(format!("a key header of {n} bytes")));
    }
    let mut wrapped = vec![0u8; n];
    if read_full(&mut input, &mut wrapped).map_err(io_err)? < n {
        return Err(damaged("truncated in its key header".into()));
    }
    let file_key = unwrap_key(key, name, location, &wrapped, &damaged)?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &file_key)
            .map_err(|_| damaged("a key of the wrong size".into()))?,
    );
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut total = 0u64;
    for counter in 0u64.. {
        let got = read_full(&mut input, &mut buf).map_err(io_err)?;
        if got < TAG {
            return Err(damaged(format!("truncated after {total} bytes")));
        }
        let chunk = &mut buf[..got];
        // A short chunk can only be the last; a full one is the last if nothing follows.
        let last = got < CHUNK + TAG;
        let plain = match key.open_in_place(nonce(counter, last), Aad::empty(), chunk) {
            Ok(p) => p.len(),
            Err(_) if !last => {
                let again = &mut buf[..got];
                match key.open_in_place(nonce(counter, true), Aad::empty(), again) {
                    Ok(p) => {
                        let n = p.len();
                        let mut probe = [0u8; 1];
                        if read_full(&mut input, &mut probe).map_err(io_err)? != 0 {
                            return Err(damaged(format!(
                                "data after the last chunk, at {total} bytes"
                            )));
                        }
                        output
                            .write_all(&buf[..n])
                            .map_err(|e| Error::io("write decrypted bytes of", location, e))?;
                        return Ok(total + n as u64);
                    }
                    Err(_) => {
                        return Err(damaged(format!(
                            "authentication failed in the chunk at {total} bytes"
                        )));
                    }
                }
            }
            Err(_) => {
                return Err(damaged(format!(
                    "authentication failed in the chunk at {total} bytes"
                )));
            }
        };
        output
            .write_all(&buf[..plain])
            .map_err(|e| Error::io("write decrypted bytes of", location, e))?;
        total += plain as u64;
        if last {
            return Ok(total);
        }
    }
    unreachable!("the loop returns")
}

/// The object's key from its age header.
fn unwrap_key(
    key: &EncryptionKey,
    name: &str,
    location: &str,
    wrapped: &[u8],
    damaged: &dyn Fn(String) -> Error,
) -> Result<[u8; 32]> {
    let decryptor =
        age::Decryptor::new(wrapped).map_err(|e| damaged(format!("unreadable key header: {e}")))?;
    let reader = match &key.kind {
        Kind::Identity(id) => decryptor.decrypt(std::iter::once(id as &dyn age::Identity)),
        Kind::Passphrase(p) => {
            let mut id = age::scrypt::Identity::new(passphrase(p));
            id.set_max_work_factor(20);
            decryptor.decrypt(std::iter::once(&id as &dyn age::Identity))
        }
    };
    let mut reader = reader.map_err(|e| match e {
        age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => Error::Key {
            location: location.to_string(),
            detail: format!("the key does not open {name}: {e}"),
        },
        e => damaged(format!("unreadable key header: {e}")),
    })?;
    let mut file_key = [0u8; 32];
    reader
        .read_exact(&mut file_key)
        .map_err(|e| damaged(format!("key header: {e}")))?;
    Ok(file_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(len: usize) {
        let key = EncryptionKey::generate().0;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut sealed = Vec::new();
        seal(&key, &mut &data[..], &mut sealed).unwrap();
        let mut back = Vec::new();
        let n = open(&key, "k", "here", &sealed[..], &mut back).unwrap();
        assert_eq!((n as usize, &back), (len, &data), "length {len}");
        // Truncated at a chunk boundary, or with a byte flipped: damage, named.
        if len >= CHUNK {
            let cut = sealed.len() - (len % CHUNK) - TAG;
            let r = open(&key, "k", "here", &sealed[..cut], &mut Vec::new());
            assert!(
                matches!(r, Err(Error::ChecksumMismatch { .. })),
                "{len}: {r:?}"
            );
        }
        let mut flipped = sealed.clone();
        let at = flipped.len() - 1;
        flipped[at] ^= 1;
        let r = open(&key, "k", "here", &flipped[..], &mut Vec::new());
        assert!(
            matches!(r, Err(Error::ChecksumMismatch { .. })),
            "{len}: {r:?}"
        );
    }

    #[test]
    fn objects_of_every_shape_round_trip_and_damage_is_caught() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            round_trip(len);
        }
    }

    #[test]
    fn another_key_is_a_key_error() {
        let mut sealed = Vec::new();
        seal(&EncryptionKey::generate().0, &mut &b"data"[..], &mut sealed).unwrap();
        let r = open(
            &EncryptionKey::generate().0,
            "k",
            "here",
            &sealed[..],
            &mut Vec::new(),
        );
        assert!(matches!(r, Err(Error::Key { .. })), "{r:?}");
    }
}
