//! The per-field envelope, format versions 2 (written) and 1 (read).
//!
//! An envelope carries no version byte of its own in format 2: its version is
//! the row header's, and the row key (from that header) chooses the reader.
//!
//! Version 2:
//!
//! ```text
//! offset  size  field
//! 0       n     AES-256-GCM-SIV ciphertext (n = plaintext length), nonce = 12 zero bytes
//! n       16    tag
//! ```
//!
//! No nonce is stored: every write of a row draws a fresh salt, hence a fresh
//! row key, and seals each field once under it; the associated data differs
//! per field (it holds the field's logical name). So no (key, nonce,
//! associated data) triple is ever used twice, and even if a salt ever
//! repeated, GCM-SIV (nonce-misuse resistant) would reveal only that the same
//! field held the same value in both writes.
//!
//! Version 1 (read only):
//!
//! ```text
//! offset  size  field
//! 0       1     format version (0x01)
//! 1       12    nonce (random)
//! 13      n     AES-256-GCM-SIV ciphertext (n = plaintext length)
//! 13+n    16    tag
//! ```
//!
//! The associated data is not stored: it is rebuilt from where the value lives
//! (see `keys::row`), which is what makes a moved ciphertext fail.

use crate::crypto::aead::{Aead, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};

pub(crate) const FIELD_V1: u8 = 1;
/// The first byte of a v2 field's associated data (the envelope has none).
pub(crate) const FIELD_V2: u8 = 2;
/// Envelope bytes a v1 envelope adds to a plaintext.
pub(crate) const OVERHEAD_V1: usize = 1 + NONCE_LEN + TAG_LEN;
/// Envelope bytes a v2 envelope adds to a plaintext.
pub(crate) const OVERHEAD_V2: usize = TAG_LEN;
/// The fixed nonce of v2 envelopes (see the module documentation).
const NONCE_V2: [u8; NONCE_LEN] = [0; NONCE_LEN];
const WHAT: &str = "field envelope";

pub(crate) fn seal_v1(aead: &Aead, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(OVERHEAD_V1 + plaintext.len());
    out.push(FIELD_V1);
    aead.seal_append(&mut out, aad, plaintext)?;
    Ok(out)
}

pub(crate) fn open_v1(aead: &Aead, aad: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
    let Some((&version, sealed)) = envelope.split_first() else {
        return Err(Error::malformed(WHAT, "empty"));
    };
    if version != FIELD_V1 {
        return Err(Error::UnsupportedFormat {
            what: WHAT,
            version,
        });
    }
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::malformed(WHAT, "truncated"));
    }
    aead.open(sealed, aad)
}

pub(crate) fn seal_v2(aead: &Aead, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(OVERHEAD_V2 + plaintext.len());
    aead.seal_with_nonce_append(&mut out, &NONCE_V2, aad, plaintext)?;
    Ok(out)
}

pub(crate) fn open_v2(aead: &Aead, aad: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
    if envelope.len() < TAG_LEN {
        return Err(Error::malformed(WHAT, "truncated"));
    }
    aead.open_with_nonce(&NONCE_V2, envelope, aad)
}
