//! The per-field envelope, version 1.
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
/// Envelope bytes added to a plaintext.
pub(crate) const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
const WHAT: &str = "field envelope";

pub(crate) fn seal(aead: &Aead, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(FIELD_V1);
    aead.seal_append(&mut out, aad, plaintext)?;
    Ok(out)
}

pub(crate) fn open(aead: &Aead, aad: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
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
