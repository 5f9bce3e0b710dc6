//! Blind indexes: normalization, truncation and the bits planner.
//!
//! A blind index column holds HMAC-SHA256 of a normalized value under a
//! [`BlindIndexKey`](crate::BlindIndexKey), truncated to a chosen number of
//! bits. Equal values give equal index values, so equality lookups work on
//! ciphertext; truncation makes unrelated values share index values, which
//! hides how many rows hold exactly which value, at the price of false
//! positives that the lookup removes by decrypting and re-checking.

mod normalize;
mod planner;
mod value;

pub use normalize::{Normalization, Normalizer};
pub use planner::{plan_bits, BitsPlan};
pub use value::{BlindIndexValue, IndexBits};
