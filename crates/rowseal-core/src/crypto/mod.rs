//! The primitives, kept behind small internal types so that the rest of the crate
//! never touches a raw cipher.

pub(crate) mod aead;
pub(crate) mod hmac_sha256;
pub(crate) mod rng;
