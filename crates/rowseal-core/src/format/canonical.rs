//! Canonical, length-prefixed encoding of contexts.
//!
//! Each string is written as a 4-byte big-endian length followed by its bytes, so
//! no two different sequences of strings encode alike: ("ab", "c") and
//! ("a", "bc") differ in their length bytes.

use crate::error::{Error, Result};

pub(crate) fn push_lp(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::InvalidInput {
        reason: "context value longer than 4 GiB".into(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads `N` bytes at `*pos`, advancing it.
pub(crate) fn take<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8]> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| Error::malformed(what, "truncated"))?;
    let out = &bytes[*pos..end];
    *pos = end;
    Ok(out)
}

pub(crate) fn take_u8(bytes: &[u8], pos: &mut usize, what: &'static str) -> Result<u8> {
    Ok(take(bytes, pos, 1, what)?[0])
}

pub(crate) fn take_u16(bytes: &[u8], pos: &mut usize, what: &'static str) -> Result<u16> {
    let b = take(bytes, pos, 2, what)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

pub(crate) fn take_u32(bytes: &[u8], pos: &mut usize, what: &'static str) -> Result<u32> {
    let b = take(bytes, pos, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_boundaries_encode_differently() {
        let mut a = Vec::new();
        push_lp(&mut a, b"ab").unwrap();
        push_lp(&mut a, b"c").unwrap();
        let mut b = Vec::new();
        push_lp(&mut b, b"a").unwrap();
        push_lp(&mut b, b"bc").unwrap();
        assert_ne!(a, b);
    }
}
