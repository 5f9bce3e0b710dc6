//! A data key wrapped (encrypted) under a root key.

use std::fmt;

use super::canonical::{take, take_u16, take_u8};
use crate::error::{Error, Result};

const WRAPPED_V1: u8 = 1;
const WHAT: &str = "wrapped key";

/// A data key encrypted under a root key by a [`KeyProvider`](crate::KeyProvider).
///
/// `key_id` names the root key that wrapped it, as the provider resolved it
/// (`local:v2`, or a full KMS key ARN even when the key was configured by alias),
/// so that the right key is used to unwrap it and status reports can say which
/// root key protects what. `ciphertext` is the provider's opaque blob.
///
/// Encoded form (see `docs/format.md`): `0x01`, key id length (u16 BE), key id
/// (UTF-8), ciphertext length (u16 BE), ciphertext.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    key_id: String,
    ciphertext: Vec<u8>,
}

impl WrappedKey {
    /// A wrapped key. Fails if either part is longer than 65,535 bytes.
    pub fn new(key_id: impl Into<String>, ciphertext: Vec<u8>) -> Result<Self> {
        let key_id = key_id.into();
        if key_id.len() > u16::MAX as usize || ciphertext.len() > u16::MAX as usize {
            return Err(Error::InvalidInput {
                reason: "wrapped key or key id longer than 65535 bytes".into(),
            });
        }
        Ok(WrappedKey { key_id, ciphertext })
    }

    /// The root key that wrapped this key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The provider's ciphertext.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The encoded form, for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.key_id.len() + self.ciphertext.len());
        self.encode_into(&mut out);
        out
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(WRAPPED_V1);
        // Lengths were checked in `new`.
        out.extend_from_slice(&(self.key_id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&(self.ciphertext.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
    }

    /// Parses the encoded form; trailing bytes are an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut pos = 0;
        let w = Self::decode_at(bytes, &mut pos)?;
        if pos != bytes.len() {
            return Err(Error::malformed(WHAT, "trailing bytes"));
        }
        Ok(w)
    }

    pub(crate) fn decode_at(bytes: &[u8], pos: &mut usize) -> Result<Self> {
        let version = take_u8(bytes, pos, WHAT)?;
        if version != WRAPPED_V1 {
            return Err(Error::UnsupportedFormat {
                what: WHAT,
                version,
            });
        }
        let id_len = take_u16(bytes, pos, WHAT)? as usize;
        let key_id = std::str::from_utf8(take(bytes, pos, id_len, WHAT)?)
            .map_err(|_| Error::malformed(WHAT, "key id is not UTF-8"))?
            .to_owned();
        let ct_len = take_u16(bytes, pos, WHAT)? as usize;
        let ciphertext = take(bytes, pos, ct_len, WHAT)?.to_vec();
        Ok(WrappedKey { key_id, ciphertext })
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}
