//! AES-256-GCM-SIV with a random nonce per message.
//!
//! GCM-SIV is nonce-misuse resistant: a repeated nonce reveals only whether the
//! same plaintext was sealed twice, it does not break confidentiality the way a
//! repeated GCM nonce does. Every row has its own key, so nonce collisions under
//! one key are out of reach anyway. GCM-SIV does not commit to its key: rowseal
//! adds a key commitment in the row header (see `format::header`).

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

    /// Appends `nonce || ciphertext || tag` to `out`.
    pub(crate) fn seal_append(
        &self,
        out: &mut Vec<u8>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        rng::fill(&mut nonce);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[start..])
            .map_err(|_| Error::InvalidInput {
                reason: "value too large to encrypt",
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
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
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
