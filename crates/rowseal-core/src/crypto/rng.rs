//! Randomness for nonces and salts.
//!
//! `ThreadRng` is a ChaCha12 CSPRNG seeded from the operating system and reseeded
//! periodically; it is fork-safe and costs no system call per row, which matters
//! on the hot path (a row needs a 32-byte salt and a 12-byte nonce per field).
//! Keys themselves come from `OsRng` directly (see `SecretKey::generate`).

use rand::RngCore;

pub(crate) fn fill(buf: &mut [u8]) {
    rand::thread_rng().fill_bytes(buf);
}
