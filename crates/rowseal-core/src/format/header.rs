//! The per-row key header, version 1.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (0x01)
//! 1       1     key mode: 0x01 derived from the tenant key, 0x02 per-row provider data key
//! 2       1     algorithm suite: 0x01 = AES-256-GCM-SIV fields, HMAC-SHA256 row-key
//!               derivation and key commitment
//! 3       4     tenant key version, u32 big-endian (0 in per-row data key mode)
//! 7       32    row salt (random)
//! 39      var   per-row data key mode only: the wrapped data key (see WrappedKey)
//! end-32  32    key commitment
//! ```
//!
//! Bytes 0..39 (the "bound part") are input to the row key derivation, so none of
//! them can change without changing the row key and the commitment. The wrapped
//! data key is not bound: rewrapping it under another root key leaves the row key
//! and every field untouched.

use std::fmt;

use super::canonical::{take, take_u32, take_u8};
use super::wrapped::WrappedKey;
use crate::error::{Error, Result};

pub(crate) const HEADER_V1: u8 = 1;
pub(crate) const SUITE_V1: u8 = 1;
pub(crate) const BOUND_LEN: usize = 39;
pub(crate) const SALT_LEN: usize = 32;
pub(crate) const COMMITMENT_LEN: usize = 32;
const WHAT: &str = "row header";

/// How a row's data key is obtained. Chosen per record type.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyMode {
    /// The row key is derived from the cached tenant key and a random row salt:
    /// no key provider call per row. The default.
    #[default]
    Derived,
    /// Each row has its own data key from the key provider (a KMS
    /// GenerateDataKey per write, a Decrypt per uncached read), so that every
    /// record access shows in the KMS audit log.
    Kms,
}

impl KeyMode {
    fn to_byte(self) -> u8 {
        match self {
            KeyMode::Derived => 1,
            KeyMode::Kms => 2,
        }
    }

    /// The name used in attributes, configuration and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Derived => "derived",
            KeyMode::Kms => "kms",
        }
    }
}

impl std::str::FromStr for KeyMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "derived" => Ok(KeyMode::Derived),
            "kms" => Ok(KeyMode::Kms),
            _ => Err(Error::InvalidInput {
                reason: "key mode must be \"derived\" or \"kms\"",
            }),
        }
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed row key header. Holds no secret: the salt is public and the
/// commitment reveals nothing about the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RowHeader {
    pub(crate) mode: KeyMode,
    pub(crate) key_version: u32,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) wrapped: Option<WrappedKey>,
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

impl RowHeader {
    /// The key mode of this row.
    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// The tenant key version the row is encrypted under (`derived` mode), or
    /// `None` in per-row data key mode.
    pub fn tenant_key_version(&self) -> Option<u32> {
        match self.mode {
            KeyMode::Derived => Some(self.key_version),
            KeyMode::Kms => None,
        }
    }

    /// The tenant key version named by an encoded `derived`-mode header,
    /// without parsing or checking the rest: for grouping rows by key before
    /// opening them (the open then checks everything, commitment included).
    /// `None` for a kms-mode header or bytes that are not a v1 header.
    ///
    /// ```
    /// use rowseal_core::RowHeader;
    /// let mut header = vec![1, 1, 1, 0, 0, 0, 7];
    /// header.extend([0u8; 64]);
    /// assert_eq!(RowHeader::peek_tenant_key_version(&header), Some(7));
    /// assert_eq!(RowHeader::peek_tenant_key_version(&[2, 1]), None);
    /// ```
    pub fn peek_tenant_key_version(bytes: &[u8]) -> Option<u32> {
        match bytes {
            [HEADER_V1, 1, _, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// The wrapped per-row data key (`kms` mode only).
    pub fn wrapped_data_key(&self) -> Option<&WrappedKey> {
        self.wrapped.as_ref()
    }

    /// A copy of this header with another wrapped data key, as after a rewrap
    /// under a new root key. The row key, the commitment and every field stay
    /// valid, since the wrapped key is not part of the derivation.
    pub fn with_wrapped_data_key(&self, wrapped: WrappedKey) -> Result<Self> {
        if self.mode != KeyMode::Kms {
            return Err(Error::InvalidInput {
                reason: "only a per-row data key header holds a wrapped key",
            });
        }
        let mut h = self.clone();
        h.wrapped = Some(wrapped);
        Ok(h)
    }

    pub(crate) fn bound_part(
        mode: KeyMode,
        key_version: u32,
        salt: &[u8; SALT_LEN],
    ) -> [u8; BOUND_LEN] {
        let mut b = [0u8; BOUND_LEN];
        b[0] = HEADER_V1;
        b[1] = mode.to_byte();
        b[2] = SUITE_V1;
        b[3..7].copy_from_slice(&key_version.to_be_bytes());
        b[7..].copy_from_slice(salt);
        b
    }

    pub(crate) fn bound(&self) -> [u8; BOUND_LEN] {
        Self::bound_part(self.mode, self.key_version, &self.salt)
    }

    /// The encoded header, as stored in the row's key header column.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wrapped_len = self
            .wrapped
            .as_ref()
            .map_or(0, |w| 5 + w.key_id().len() + w.ciphertext().len());
        let mut out = Vec::with_capacity(BOUND_LEN + wrapped_len + COMMITMENT_LEN);
        out.extend_from_slice(&self.bound());
        if let Some(w) = &self.wrapped {
            w.encode_into(&mut out);
        }
        out.extend_from_slice(&self.commitment);
        out
    }

    /// Parses an encoded header. Every byte is accounted for: a short, long or
    /// inconsistent header is a typed error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut pos = 0;
        let version = take_u8(bytes, &mut pos, WHAT)?;
        if version != HEADER_V1 {
            return Err(Error::UnsupportedFormat {
                what: WHAT,
                version,
            });
        }
        let mode = match take_u8(bytes, &mut pos, WHAT)? {
            1 => KeyMode::Derived,
            2 => KeyMode::Kms,
            _ => return Err(Error::malformed(WHAT, "unknown key mode")),
        };
        let suite = take_u8(bytes, &mut pos, WHAT)?;
        if suite != SUITE_V1 {
            return Err(Error::UnsupportedFormat {
                what: "algorithm suite",
                version: suite,
            });
        }
        let key_version = take_u32(bytes, &mut pos, WHAT)?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(take(bytes, &mut pos, SALT_LEN, WHAT)?);
        let wrapped = match mode {
            KeyMode::Derived => None,
            KeyMode::Kms => {
                if key_version != 0 {
                    return Err(Error::malformed(
                        WHAT,
                        "key version set in per-row key mode",
                    ));
                }
                Some(WrappedKey::decode_at(bytes, &mut pos)?)
            }
        };
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(take(bytes, &mut pos, COMMITMENT_LEN, WHAT)?);
        if pos != bytes.len() {
            return Err(Error::malformed(WHAT, "trailing bytes"));
        }
        Ok(RowHeader {
            mode,
            key_version,
            salt,
            wrapped,
            commitment,
        })
    }
}

impl fmt::Debug for RowHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowHeader")
            .field("mode", &self.mode)
            .field("key_version", &self.key_version)
            .field("wrapped", &self.wrapped)
            .finish_non_exhaustive()
    }
}
