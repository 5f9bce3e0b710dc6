//! AES-256-GCM-SIV, with a random stored nonce (format v1 fields, the local
//! provider's wrapped keys) or a caller-given one (format v2 fields: a fixed
//! all-zero nonce under a key used for one write).
//!
//! GCM-SIV is nonce-misuse resistant: a repeated nonce reveals only whether the
//! same plaintext was sealed twice under the same associated data, it does not
//! break confidentiality the way a repeated GCM nonce does. Every row has its
//! own key, so nonce collisions under one key are out of reach anyway (v1); in
//! v2 every write of a row draws a fresh row key and seals each field once
//! under it, with associated data that differs per field, so no (key, nonce,
//! associated data) input repeats and the nonce need not be stored. GCM-SIV
//! does not commit to its key: rowseal adds a key commitment in the row header
//! (see `format::header`).

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{AesGcmSiv, Nonce, Tag};
use zeroize::Zeroize;

use super::rng;
use crate::error::{Error, Result};

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// AES-256-GCM-SIV over the encrypt-only AES-256 key schedule: GCM-SIV never
/// runs the block cipher backwards, so the stock `Aes256GcmSiv` (full `Aes256`)
/// computes decryption round keys for nothing, once per key and once per
/// message. Same algorithm, same bytes.
pub(crate) type Cipher = AesGcmSiv<aes::Aes256Enc>;

pub(crate) struct Aead(Cipher);

impl Aead {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Aead(Cipher::new(key.into()))
    }

    /// Appends `nonce || ciphertext || tag` to `out`, under a random nonce.
    pub(crate) fn seal_append(
        &self,
        out: &mut Vec<u8>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        rng::fill(&mut nonce);
        out.extend_from_slice(&nonce);
        self.seal_with_nonce_append(out, &nonce, aad, plaintext)
    }

    /// Appends `ciphertext || tag` to `out`, under the given nonce (which is
    /// not written). Encrypts in place in `out`: no allocation beyond its
    /// growth.
    pub(crate) fn seal_with_nonce_append(
        &self,
        out: &mut Vec<u8>,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut out[start..])
            .map_err(|_| Error::InvalidInput {
                reason: "value too large to encrypt".into(),
            })?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens `nonce || ciphertext || tag` (the caller has checked the length).
    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Decrypt);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Decrypt)?;
        self.open_with_nonce(nonce, rest, aad)
    }

    /// Opens `ciphertext || tag` sealed under the given nonce. Shorter than a
    /// tag is [`Error::Decrypt`] (callers check the length first, for a
    /// typed error).
    pub(crate) fn open_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        if sealed.len() < TAG_LEN {
            return Err(Error::Decrypt);
        }
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut buf = ciphertext.to_vec();
        match self.0.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            &mut buf,
            Tag::from_slice(tag),
        ) {
            Ok(()) => Ok(buf),
            Err(_) => {
                // GCM-SIV decrypts before it checks the tag: wipe the candidate.
                buf.zeroize();
                Err(Error::Decrypt)
            }
        }
    }
}
