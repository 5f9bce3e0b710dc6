//! Truncated index values and how they are stored.

use crate::error::{Error, Result};

/// The number of bits an index keeps, 1 to 256.
///
/// Up to 64 bits the value is stored as a BIGINT ([`BlindIndexValue::Int`]),
/// above as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexBits(u16);

impl IndexBits {
    /// Checked constructor.
    pub fn new(bits: u16) -> Result<Self> {
        if (1..=256).contains(&bits) {
            Ok(IndexBits(bits))
        } else {
            Err(Error::InvalidInput {
                reason: "blind index bits must be between 1 and 256".into(),
            })
        }
    }

    /// The number of bits.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Truncates a full HMAC-SHA256 output to these bits: the first `bits`
    /// bits, big-endian.
    pub fn truncate(self, mac: &[u8; 32]) -> BlindIndexValue {
        let bits = u32::from(self.0);
        if bits <= 64 {
            let mut first = [0u8; 8];
            first.copy_from_slice(&mac[..8]);
            let v = u64::from_be_bytes(first) >> (64 - bits);
            // Stored as a signed BIGINT: the bit pattern is what matters.
            BlindIndexValue::Int(v as i64)
        } else {
            let nbytes = bits.div_ceil(8) as usize;
            let mut out = mac[..nbytes].to_vec();
            let spare = (nbytes as u32 * 8 - bits) as u8;
            if spare > 0 {
                if let Some(last) = out.last_mut() {
                    *last &= 0xffu8 << spare;
                }
            }
            BlindIndexValue::Bytes(out)
        }
    }
}

/// A blind index value as stored in its column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlindIndexValue {
    /// Indexes of at most 64 bits: a BIGINT column.
    Int(i64),
    /// Wider indexes: a bytes column.
    Bytes(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_leading_bits() {
        let mut mac = [0u8; 32];
        mac[0] = 0b1011_0000;
        mac[8] = 0xff;
        assert_eq!(
            IndexBits::new(4).unwrap().truncate(&mac),
            BlindIndexValue::Int(0b1011)
        );
        assert_eq!(
            IndexBits::new(64).unwrap().truncate(&mac),
            BlindIndexValue::Int(0xb000_0000_0000_0000u64 as i64)
        );
        let BlindIndexValue::Bytes(b) = IndexBits::new(68).unwrap().truncate(&mac) else {
            panic!("expected bytes");
        };
        assert_eq!(b.len(), 9);
        assert_eq!(b[8], 0xf0);
        assert!(IndexBits::new(0).is_err());
        assert!(IndexBits::new(257).is_err());
    }
}
