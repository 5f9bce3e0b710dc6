//! Key material that zeroizes itself and never prints.

use std::fmt;

use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length in bytes of every symmetric key rowseal handles (AES-256, HMAC-SHA256).
pub const KEY_LEN: usize = 32;

/// 32 bytes of secret key material: a root key, a tenant key, an index key or a
/// per-row data key.
///
/// The bytes are zeroized when the value is dropped, and `Debug` prints
/// `SecretKey(..)` whatever the contents. There is deliberately no `Display`, no
/// `Clone` that a caller could leave lying around unnoticed (use
/// [`SecretKey::duplicate`]), and no comparison that is not constant-time.
///
/// ```
/// use rowseal_core::SecretKey;
/// let key = SecretKey::generate();
/// assert_eq!(format!("{key:?}"), "SecretKey(..)");
/// ```
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps 32 bytes. The array passed in is moved; zeroize any copy you keep.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// Copies a key out of a slice that must be exactly 32 bytes long.
    pub fn try_from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(SecretKey(arr))
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    /// The key bytes. Use them, don't copy them.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// An explicit copy (both copies zeroize on drop).
    pub fn duplicate(&self) -> Self {
        SecretKey(self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretKey {}
