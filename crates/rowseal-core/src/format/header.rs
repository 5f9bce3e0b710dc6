//! The per-row key header, format versions 2 (written) and 1 (read).
//!
//! Version 2 (every new row):
//!
//! ```text
//! offset  size  field
//! 0       1     format version (0x02)
//! 1       1     key mode: 0x01 derived from the tenant key, 0x02 per-row provider data key
//! 2       1     algorithm suite: 0x02 = AES-256-GCM-SIV fields with no stored nonce,
//!               HMAC-SHA256 row-key derivation, SHA-256 key commitment
//! 3       4     tenant key version, u32 big-endian (0 in per-row data key mode)
//! 7       16    row salt (random per write: every insert and update re-keys the row)
//! 23      1     present count: how many encrypted fields of the row are non-NULL
//! 24      var   per-row data key mode only: the wrapped data key (see WrappedKey)
//! end-32  32    key commitment, SHA-256("rowseal/v2/commit" || row key)
//! ```
//!
//! 56 bytes in `derived` mode. Bytes 0..24 are the bound part; the row key
//! also binds the set of present fields by logical name (see `FieldSet`), of
//! which the header keeps only the count, for a typed error.
//!
//! Version 1 (read only; written only by the test-only v1 entry points):
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
//! end-32  32    key commitment, SHA-256("rowseal/v1/commit" || row key)
//! ```
//!
//! 71 bytes in `derived` mode. Bytes 0..39 are the bound part.
//!
//! In both versions the bound part is input to the row key derivation, so none
//! of its bytes can change without changing the row key and the commitment.
//! The wrapped data key is not bound: rewrapping it under another root key
//! leaves the row key and every field untouched. A reader dispatches on byte
//! 0; any other version is `Error::UnsupportedFormat`.

use std::fmt;

use super::canonical::{take, take_u32, take_u8};
use super::wrapped::WrappedKey;
use crate::crypto::rng;
use crate::error::{Error, Result};

pub(crate) const HEADER_V1: u8 = 1;
pub(crate) const HEADER_V2: u8 = 2;
pub(crate) const SUITE_V1: u8 = 1;
pub(crate) const SUITE_V2: u8 = 2;
const BOUND_LEN_V1: usize = 39;
const BOUND_LEN_V2: usize = 24;
const SALT_LEN_V1: usize = 32;
const SALT_LEN_V2: usize = 16;
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
                reason: "key mode must be \"derived\" or \"kms\"".into(),
            }),
        }
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The version-specific part of a header's bound part.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Format 1: a 32-byte salt.
    V1 { salt: [u8; SALT_LEN_V1] },
    /// Format 2: a 16-byte salt and the count of present encrypted fields.
    V2 {
        salt: [u8; SALT_LEN_V2],
        present_count: u8,
    },
}

/// A header's bound part, on the stack (39 bytes in v1, 24 in v2).
pub(crate) struct Bound {
    bytes: [u8; BOUND_LEN_V1],
    len: usize,
}

impl Bound {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A parsed row key header, of format version 1 or 2. Holds no secret: the
/// salt is public and the commitment reveals nothing about the key.
#[derive(Clone, PartialEq, Eq)]
pub struct RowHeader {
    pub(crate) mode: KeyMode,
    pub(crate) key_version: u32,
    pub(crate) layout: Layout,
    pub(crate) wrapped: Option<WrappedKey>,
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

impl RowHeader {
    /// A version 1 header under a fresh random salt, its commitment not yet
    /// set.
    pub(crate) fn fresh_v1(mode: KeyMode, key_version: u32, wrapped: Option<WrappedKey>) -> Self {
        let mut salt = [0u8; SALT_LEN_V1];
        rng::fill(&mut salt);
        RowHeader {
            mode,
            key_version,
            layout: Layout::V1 { salt },
            wrapped,
            commitment: [0; COMMITMENT_LEN],
        }
    }

    /// A version 2 header under a fresh random salt, its commitment not yet
    /// set.
    pub(crate) fn fresh_v2(
        mode: KeyMode,
        key_version: u32,
        present_count: u8,
        wrapped: Option<WrappedKey>,
    ) -> Self {
        let mut salt = [0u8; SALT_LEN_V2];
        rng::fill(&mut salt);
        RowHeader {
            mode,
            key_version,
            layout: Layout::V2 {
                salt,
                present_count,
            },
            wrapped,
            commitment: [0; COMMITMENT_LEN],
        }
    }

    /// The format version of this header: 1 or 2.
    pub fn format_version(&self) -> u8 {
        match self.layout {
            Layout::V1 { .. } => HEADER_V1,
            Layout::V2 { .. } => HEADER_V2,
        }
    }

    /// How many encrypted fields of the row were non-NULL when it was
    /// written (format 2), or `None` (format 1 did not record it).
    pub fn present_count(&self) -> Option<u8> {
        match self.layout {
            Layout::V1 { .. } => None,
            Layout::V2 { present_count, .. } => Some(present_count),
        }
    }

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

    /// The tenant key version named by an encoded `derived`-mode header of
    /// format 1 or 2, without parsing or checking the rest: for grouping rows
    /// by key before opening them (the open then checks everything,
    /// commitment included). `None` for a kms-mode header or bytes that are
    /// not a v1 or v2 header.
    ///
    /// ```
    /// use rowseal_core::RowHeader;
    /// let mut v2 = vec![2, 1, 2, 0, 0, 0, 7];
    /// v2.extend([0u8; 49]);
    /// assert_eq!(RowHeader::peek_tenant_key_version(&v2), Some(7));
    /// let mut v1 = vec![1, 1, 1, 0, 0, 0, 5];
    /// v1.extend([0u8; 64]);
    /// assert_eq!(RowHeader::peek_tenant_key_version(&v1), Some(5));
    /// assert_eq!(RowHeader::peek_tenant_key_version(&[2, 2]), None);
    /// assert_eq!(RowHeader::peek_tenant_key_version(&[3, 1, 2, 0, 0, 0, 7]), None);
    /// ```
    pub fn peek_tenant_key_version(bytes: &[u8]) -> Option<u32> {
        match bytes {
            [HEADER_V1 | HEADER_V2, 1, _, a, b, c, d, ..] => {
                Some(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            _ => None,
        }
    }

    /// The wrapped per-row data key (`kms` mode only).
    pub fn wrapped_data_key(&self) -> Option<&WrappedKey> {
        self.wrapped.as_ref()
    }

    /// A copy of this header (of either format version) with another wrapped
    /// data key, as after a rewrap under a new root key. The row key, the
    /// commitment and every field stay valid, since the wrapped key is not
    /// part of the derivation.
    pub fn with_wrapped_data_key(&self, wrapped: WrappedKey) -> Result<Self> {
        if self.mode != KeyMode::Kms {
            return Err(Error::InvalidInput {
                reason: "only a per-row data key header holds a wrapped key".into(),
            });
        }
        let mut h = self.clone();
        h.wrapped = Some(wrapped);
        Ok(h)
    }

    /// The bound part: every byte before the wrapped key (or the commitment).
    pub(crate) fn bound(&self) -> Bound {
        let mut bytes = [0u8; BOUND_LEN_V1];
        bytes[0] = self.format_version();
        bytes[1] = self.mode.to_byte();
        bytes[3..7].copy_from_slice(&self.key_version.to_be_bytes());
        let len = match &self.layout {
            Layout::V1 { salt } => {
                bytes[2] = SUITE_V1;
                bytes[7..BOUND_LEN_V1].copy_from_slice(salt);
                BOUND_LEN_V1
            }
            Layout::V2 {
                salt,
                present_count,
            } => {
                bytes[2] = SUITE_V2;
                bytes[7..7 + SALT_LEN_V2].copy_from_slice(salt);
                bytes[7 + SALT_LEN_V2] = *present_count;
                BOUND_LEN_V2
            }
        };
        Bound { bytes, len }
    }

    /// The encoded header, in its own format version, as stored in the row's
    /// key header column.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bound = self.bound();
        let wrapped_len = self
            .wrapped
            .as_ref()
            .map_or(0, |w| 5 + w.key_id().len() + w.ciphertext().len());
        let mut out = Vec::with_capacity(bound.len + wrapped_len + COMMITMENT_LEN);
        out.extend_from_slice(bound.as_slice());
        if let Some(w) = &self.wrapped {
            w.encode_into(&mut out);
        }
        out.extend_from_slice(&self.commitment);
        out
    }

    /// Parses an encoded header of format 1 or 2 (the readers side by side,
    /// chosen by byte 0; any other version is [`Error::UnsupportedFormat`]).
    /// Every byte is accounted for: a short, long or inconsistent header is a
    /// typed error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut pos = 0;
        let version = take_u8(bytes, &mut pos, WHAT)?;
        let suite = match version {
            HEADER_V1 => SUITE_V1,
            HEADER_V2 => SUITE_V2,
            _ => {
                return Err(Error::UnsupportedFormat {
                    what: WHAT,
                    version,
                })
            }
        };
        let mode = match take_u8(bytes, &mut pos, WHAT)? {
            1 => KeyMode::Derived,
            2 => KeyMode::Kms,
            _ => return Err(Error::malformed(WHAT, "unknown key mode")),
        };
        let found = take_u8(bytes, &mut pos, WHAT)?;
        if found != suite {
            return Err(Error::UnsupportedFormat {
                what: "algorithm suite",
                version: found,
            });
        }
        let key_version = take_u32(bytes, &mut pos, WHAT)?;
        let layout = if version == HEADER_V1 {
            let mut salt = [0u8; SALT_LEN_V1];
            salt.copy_from_slice(take(bytes, &mut pos, SALT_LEN_V1, WHAT)?);
            Layout::V1 { salt }
        } else {
            let mut salt = [0u8; SALT_LEN_V2];
            salt.copy_from_slice(take(bytes, &mut pos, SALT_LEN_V2, WHAT)?);
            let present_count = take_u8(bytes, &mut pos, WHAT)?;
            Layout::V2 {
                salt,
                present_count,
            }
        };
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
            layout,
            wrapped,
            commitment,
        })
    }
}

impl fmt::Debug for RowHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowHeader")
            .field("format_version", &self.format_version())
            .field("mode", &self.mode)
            .field("key_version", &self.key_version)
            .field("present_count", &self.present_count())
            .field("wrapped", &self.wrapped)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_encodes_its_own_layout() {
        let v1 = RowHeader::fresh_v1(KeyMode::Derived, 7, None);
        let v2 = RowHeader::fresh_v2(KeyMode::Derived, 7, 3, None);
        let (b1, b2) = (v1.to_bytes(), v2.to_bytes());
        assert_eq!((b1.len(), b2.len()), (71, 56));
        assert_eq!(&b1[..7], &[1, 1, 1, 0, 0, 0, 7]);
        assert_eq!(&b2[..7], &[2, 1, 2, 0, 0, 0, 7]);
        assert_eq!(b2[23], 3);
        assert_eq!(v1.bound().as_slice(), &b1[..39]);
        assert_eq!(v2.bound().as_slice(), &b2[..24]);
        assert_eq!(RowHeader::from_bytes(&b1).unwrap(), v1);
        assert_eq!(RowHeader::from_bytes(&b2).unwrap(), v2);
    }

    #[test]
    fn a_suite_of_the_other_version_is_unsupported() {
        let mut b1 = RowHeader::fresh_v1(KeyMode::Derived, 1, None).to_bytes();
        let mut b2 = RowHeader::fresh_v2(KeyMode::Derived, 1, 0, None).to_bytes();
        b1[2] = SUITE_V2;
        b2[2] = SUITE_V1;
        for b in [b1, b2] {
            assert!(matches!(
                RowHeader::from_bytes(&b),
                Err(Error::UnsupportedFormat {
                    what: "algorithm suite",
                    ..
                })
            ));
        }
    }
}
