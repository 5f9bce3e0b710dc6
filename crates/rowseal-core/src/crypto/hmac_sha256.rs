//! HMAC-SHA256 over precomputed, zeroizable states.
//!
//! rowseal computes HMAC-SHA256 several times per row (row key, key commitment,
//! blind index), always under a handful of long-lived keys and often after a
//! fixed, per-table or per-tenant prefix. Keeping the SHA-256 chaining values
//! after the key block (and after such a prefix) turns each of those HMACs into
//! two compression-function calls for a short message. The `hmac` crate would
//! give the same answers, but its state cannot be zeroized; here the chaining
//! values live in plain arrays that are wiped on drop.
//!
//! Checked against RFC 4231 and the `hmac` crate in this crate's tests.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;
use zeroize::{Zeroize, ZeroizeOnDrop};

const BLOCK: usize = 64;
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// An HMAC-SHA256 key, as the inner and outer hash states after the padded key
/// block, plus any whole blocks of message prefix already absorbed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
    /// Bytes already absorbed into `inner`, the key block included.
    absorbed: u64,
}

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    compress256(
        state,
        core::slice::from_ref(GenericArray::from_slice(block)),
    );
}

impl HmacKey {
    /// A key of any length: one longer than a block is hashed first, as
    /// RFC 2104 says (rowseal's own keys are 32 bytes; this only keeps the
    /// function total rather than silently truncating).
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut hashed = [0u8; 32];
        let key = if key.len() > BLOCK {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(key);
            h.finalize_into(GenericArray::from_mut_slice(&mut hashed));
            &hashed[..]
        } else {
            key
        };
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for (i, b) in key.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        hashed.zeroize();
        let mut inner = H0;
        let mut outer = H0;
        compress(&mut inner, &ipad);
        compress(&mut outer, &opad);
        ipad.zeroize();
        opad.zeroize();
        HmacKey {
            inner,
            outer,
            absorbed: BLOCK as u64,
        }
    }

    /// A key whose every MAC starts with `prefix`, zero-padded to a whole number
    /// of blocks. Callers make the prefix self-delimiting (length-prefixed fields),
    /// so the padding is unambiguous.
    pub(crate) fn with_prefix(&self, prefix: &[u8]) -> Self {
        let mut out = self.clone();
        let mut block = [0u8; BLOCK];
        for chunk in prefix.chunks(BLOCK) {
            block[..chunk.len()].copy_from_slice(chunk);
            block[chunk.len()..].fill(0);
            compress(&mut out.inner, &block);
            out.absorbed += BLOCK as u64;
        }
        block.zeroize();
        out
    }

    /// HMAC of the concatenation of `parts` (after any prefix), which may
    /// be secret (a blind-indexed value): every buffer that held them is
    /// wiped.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.mac_inner(parts, true)
    }

    /// HMAC of public `parts` (a row header's bound part and the names of
    /// its present fields, all stored in the clear): the message block is
    /// not wiped, the key-dependent state and the output's intermediates
    /// are. Wiping is a byte-at-a-time volatile loop, a noticeable share of
    /// a row's cost, so it is kept for what is secret.
    pub(crate) fn mac_public_message(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.mac_inner(parts, false)
    }

    fn mac_inner(&self, parts: &[&[u8]], secret_message: bool) -> [u8; 32] {
        let mut state = self.inner;
        let mut block = [0u8; BLOCK];
        let mut fill = 0usize;
        // How much of `block` ever held message bytes: all of it once a
        // block was compressed, else `fill`; only that needs wiping.
        let mut dirty = 0usize;
        let mut total = self.absorbed;
        for part in parts {
            let mut part: &[u8] = part;
            total += part.len() as u64;
            while !part.is_empty() {
                let take = (BLOCK - fill).min(part.len());
                block[fill..fill + take].copy_from_slice(&part[..take]);
                fill += take;
                part = &part[take..];
                if fill == BLOCK {
                    compress(&mut state, &block);
                    fill = 0;
                    dirty = BLOCK;
                }
            }
        }
        dirty = dirty.max(fill);
        // The inner digest goes straight into the outer block, so it exists
        // in one buffer only.
        let mut oblock = [0u8; BLOCK];
        finish_into(&mut state, &mut block, fill, total, &mut oblock[..32]);
        let mut outer = self.outer;
        let mut out = [0u8; 32];
        finish_into(&mut outer, &mut oblock, 32, BLOCK as u64 + 32, &mut out);
        // The inner state (key-dependent) and digest, and the outer state,
        // which now equals the MAC (often a key). The rest of `oblock` is
        // padding.
        state.zeroize();
        oblock[..32].zeroize();
        outer.zeroize();
        if secret_message {
            block[..dirty].zeroize();
        }
        out
    }
}

/// The key commitment's label in format v1 headers.
pub(crate) const COMMIT_LABEL_V1: &[u8; 17] = b"rowseal/v1/commit";
/// The key commitment's label in format v2 headers (same length).
pub(crate) const COMMIT_LABEL_V2: &[u8; 17] = b"rowseal/v2/commit";

/// SHA-256(`label` || key), `label` one of the `COMMIT_LABEL_*`: one
/// compression.
pub(crate) fn key_commitment(label: &[u8; 17], key: &[u8; 32]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    block[..17].copy_from_slice(label);
    block[17..49].copy_from_slice(key);
    let mut state = H0;
    let mut out = [0u8; 32];
    finish_into(&mut state, &mut block, 49, 49, &mut out);
    // Only the key is secret: the label and padding are constants, and
    // after the one compression `state` is the commitment, which is stored.
    block[17..49].zeroize();
    out
}

/// SHA-256 padding and final compression(s); `fill` bytes of `block` are
/// pending. The digest is written to `out` (32 bytes).
fn finish_into(
    state: &mut [u32; 8],
    block: &mut [u8; BLOCK],
    fill: usize,
    total: u64,
    out: &mut [u8],
) {
    block[fill] = 0x80;
    block[fill + 1..].fill(0);
    if fill + 1 > BLOCK - 8 {
        compress(state, block);
        block.fill(0);
    }
    block[BLOCK - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    compress(state, block);
    for (o, w) in out.chunks_exact_mut(4).zip(state.iter()) {
        o.copy_from_slice(&w.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;

    fn reference(key: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    #[test]
    fn key_commitment_is_labelled_sha256() {
        use sha2::Digest;
        let key = [9u8; 32];
        for (label, text) in [
            (COMMIT_LABEL_V1, b"rowseal/v1/commit"),
            (COMMIT_LABEL_V2, b"rowseal/v2/commit"),
        ] {
            let mut h = sha2::Sha256::new();
            h.update(text);
            h.update(key);
            assert_eq!(key_commitment(label, &key), <[u8; 32]>::from(h.finalize()));
        }
        assert_ne!(
            key_commitment(COMMIT_LABEL_V1, &key),
            key_commitment(COMMIT_LABEL_V2, &key)
        );
    }

    #[test]
    fn rfc4231_case_2() {
        let out = HmacKey::new(b"Jefe").mac(&[b"what do ya want ", b"for nothing?"]);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc4231_case_6_a_key_longer_than_a_block() {
        let key = [0xaau8; 131];
        let out =
            HmacKey::new(&key).mac(&[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    proptest! {
        #[test]
        fn matches_hmac_crate(key in proptest::collection::vec(any::<u8>(), 0..=200),
                              prefix in proptest::collection::vec(any::<u8>(), 0..200),
                              msg in proptest::collection::vec(any::<u8>(), 0..300),
                              split in 0usize..300) {
            let split = split.min(msg.len());
            let k = HmacKey::new(&key);
            prop_assert_eq!(k.mac(&[&msg[..split], &msg[split..]]), reference(&key, &msg));
            prop_assert_eq!(
                k.mac_public_message(&[&msg[..split], &msg[split..]]),
                reference(&key, &msg)
            );
            // With a prefix: the reference sees the zero-padded prefix blocks.
            let mut padded = prefix.clone();
            padded.resize(prefix.len().div_ceil(BLOCK) * BLOCK, 0);
            padded.extend_from_slice(&msg);
            prop_assert_eq!(k.with_prefix(&prefix).mac(&[&msg]), reference(&key, &padded));
        }
    }
}
