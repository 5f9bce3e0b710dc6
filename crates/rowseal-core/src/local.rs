//! The local key provider: a keyring of versioned 32-byte root keys, for
//! development, tests and on-premises deployments without a KMS.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use crate::crypto::aead::Aead;
use crate::error::{Error, ProviderError, ProviderErrorKind, Result};
use crate::format::wrapped::WrappedKey;
use crate::provider::{DataKey, EncryptionContext, KeyProvider};
use crate::secret::{SecretKey, KEY_LEN};

/// Environment variable holding a keyring's text (see [`LocalKeyProvider`]).
pub const LOCAL_KEYS_ENV: &str = "ROWSEAL_LOCAL_KEYS";
/// Environment variable naming a keyring file.
pub const LOCAL_KEY_FILE_ENV: &str = "ROWSEAL_LOCAL_KEY_FILE";

const WRAP_V1: u8 = 1;
const WRAP_LABEL: &[u8] = b"rowseal/v1/local-wrap";

/// Root keys held in process memory, from an environment variable or a file.
///
/// The keyring text holds one key per entry, `v<N>:<base64 of 32 bytes>`, with
/// entries separated by newlines, commas or spaces; `#` starts a comment. New
/// data keys are wrapped under the highest version; every listed version can
/// unwrap. To rotate the root key, add a version, then run `rowseal rewrap`.
///
/// Data keys are wrapped with AES-256-GCM-SIV under the root key, with the
/// encryption context and the root key id as associated data. Root key ids are
/// `local:v<N>`.
///
/// A missing, malformed or short key is an [`Error::KeyConfig`] when the
/// provider is built, naming the entry but never showing its bytes.
///
/// ```
/// use rowseal_core::{KeyProvider, LocalKeyProvider};
/// let text = LocalKeyProvider::generate_keyring();
/// let provider = LocalKeyProvider::from_keyring_str(&text).unwrap();
/// assert_eq!(provider.current_key_id(), "local:v1");
/// assert!(LocalKeyProvider::from_keyring_str("v1:c2hvcnQ=").is_err()); // 5 bytes
/// ```
pub struct LocalKeyProvider {
    keys: BTreeMap<u32, SecretKey>,
    current: u32,
    current_id: String,
}

impl LocalKeyProvider {
    /// Reads the keyring from `ROWSEAL_LOCAL_KEYS`, or else from the file named
    /// by `ROWSEAL_LOCAL_KEY_FILE`. Neither set is an error.
    pub fn from_env() -> Result<Self> {
        if let Ok(text) = std::env::var(LOCAL_KEYS_ENV) {
            let text = Zeroizing::new(text);
            return Self::from_keyring_str(&text).map_err(|e| prefix(LOCAL_KEYS_ENV, e));
        }
        if let Ok(path) = std::env::var(LOCAL_KEY_FILE_ENV) {
            return Self::from_file(path);
        }
        Err(Error::KeyConfig {
            reason: format!("no local root key: set {LOCAL_KEYS_ENV} or {LOCAL_KEY_FILE_ENV}"),
        })
    }

    /// Reads a keyring file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::KeyConfig {
            reason: format!("cannot read key file {}: {}", path.display(), e.kind()),
        })?;
        let text = Zeroizing::new(text);
        Self::from_keyring_str(&text).map_err(|e| prefix(&path.display().to_string(), e))
    }

    /// Parses keyring text.
    pub fn from_keyring_str(text: &str) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for (n, entry) in text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split([',', ' ', '\t']))
            .filter(|e| !e.trim().is_empty())
            .enumerate()
        {
            let bad = |what: &str| Error::KeyConfig {
                reason: format!("entry {}: {what}", n + 1),
            };
            let (version, b64) = entry
                .trim()
                .split_once(':')
                .ok_or_else(|| bad("expected v<N>:<base64 key>"))?;
            let version: u32 = version
                .strip_prefix('v')
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| bad("version must be v1, v2, ..."))?;
            // The decoder's own error would quote the offending byte: say less.
            let bytes = Zeroizing::new(B64.decode(b64).map_err(|_| bad("key is not base64"))?);
            let key = SecretKey::try_from_slice(&bytes).ok_or_else(|| {
                bad(&format!(
                    "key must be {KEY_LEN} bytes, found {}",
                    bytes.len()
                ))
            })?;
            if keys.insert(version, key).is_some() {
                return Err(bad(&format!("version v{version} listed twice")));
            }
        }
        let current = *keys.keys().next_back().ok_or_else(|| Error::KeyConfig {
            reason: "keyring holds no key".into(),
        })?;
        Ok(LocalKeyProvider {
            keys,
            current,
            current_id: key_id(current),
        })
    }

    /// A provider with one fresh root key, `v1`, held only in memory: for
    /// tests and demonstrations (what it wraps cannot be unwrapped by any
    /// other process). Store a keyring ([`generate_keyring`](Self::generate_keyring))
    /// for anything that must outlive the process.
    pub fn generate() -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(1, SecretKey::generate());
        LocalKeyProvider {
            keys,
            current: 1,
            current_id: key_id(1),
        }
    }

    /// Text of a new keyring with one fresh key, `v1`. Store it like a password;
    /// the returned string is wiped when dropped.
    pub fn generate_keyring() -> Zeroizing<String> {
        Self::keyring_entry(1, &SecretKey::generate())
    }

    /// Writes a new keyring with one fresh key to `path`, readable by its owner
    /// only (mode 0600 on Unix). Refuses to overwrite an existing file, so a
    /// key in use is never lost by accident.
    ///
    /// ```
    /// use rowseal_core::LocalKeyProvider;
    /// let path = std::env::temp_dir().join(format!("rowseal-doc-{}.keys", std::process::id()));
    /// LocalKeyProvider::create_keyring_file(&path).unwrap();
    /// assert!(LocalKeyProvider::create_keyring_file(&path).is_err()); // never overwrites
    /// let provider = LocalKeyProvider::from_file(&path).unwrap();
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn create_keyring_file(path: impl AsRef<Path>) -> Result<()> {
        use std::io::Write;
        let path = path.as_ref();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let text = Self::generate_keyring();
        options
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| Error::KeyConfig {
                reason: format!("cannot create key file {}: {}", path.display(), e.kind()),
            })
    }

    /// A keyring entry line for `key`, to append to a keyring as a new version.
    pub fn keyring_entry(version: u32, key: &SecretKey) -> Zeroizing<String> {
        let b64 = Zeroizing::new(B64.encode(key.expose_secret()));
        Zeroizing::new(format!(
            "# rowseal local root key, created by rowseal; keep secret\nv{version}:{}\n",
            b64.as_str()
        ))
    }

    /// The versions in the keyring.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// Wraps new keys under `version` instead of the highest one.
    pub fn with_current_version(mut self, version: u32) -> Result<Self> {
        if !self.keys.contains_key(&version) {
            return Err(Error::KeyConfig {
                reason: format!("no root key v{version} in the keyring"),
            });
        }
        self.current = version;
        self.current_id = key_id(version);
        Ok(self)
    }

    fn root(&self, key_id: &str) -> Result<&SecretKey> {
        key_id
            .strip_prefix("local:v")
            .and_then(|v| v.parse::<u32>().ok())
            .and_then(|v| self.keys.get(&v))
            .ok_or_else(|| {
                ProviderError::new(ProviderErrorKind::KeyNotFound, "not in the local keyring")
                    .with_key_id(key_id)
                    .into()
            })
    }

    fn wrap(
        &self,
        key_id: &str,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        let root = Aead::new(self.root(key_id)?.expose_secret());
        let aad = wrap_aad(key_id, context);
        let mut blob = Vec::with_capacity(1 + 12 + KEY_LEN + 16);
        blob.push(WRAP_V1);
        root.seal_append(&mut blob, &aad, key.expose_secret())?;
        WrappedKey::new(key_id, blob)
    }

    fn unwrap(&self, wrapped: &WrappedKey, context: &EncryptionContext) -> Result<SecretKey> {
        let root = Aead::new(self.root(wrapped.key_id())?.expose_secret());
        let invalid = || {
            Error::from(
                ProviderError::new(ProviderErrorKind::InvalidCiphertext, "")
                    .with_key_id(wrapped.key_id()),
            )
        };
        let (version, sealed) = wrapped.ciphertext().split_first().ok_or_else(invalid)?;
        if *version != WRAP_V1 {
            return Err(invalid());
        }
        let plain = Zeroizing::new(
            root.open(sealed, &wrap_aad(wrapped.key_id(), context))
                .map_err(|_| invalid())?,
        );
        SecretKey::try_from_slice(&plain).ok_or_else(invalid)
    }
}

fn key_id(version: u32) -> String {
    format!("local:v{version}")
}

fn wrap_aad(key_id: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut aad = WRAP_LABEL.to_vec();
    let _ = crate::format::canonical::push_lp(&mut aad, key_id.as_bytes());
    aad.extend_from_slice(&context.canonical_bytes());
    aad
}

fn prefix(source: &str, e: Error) -> Error {
    match e {
        Error::KeyConfig { reason } => Error::KeyConfig {
            reason: format!("{source}: {reason}"),
        },
        other => other,
    }
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current_id)
            .finish()
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn current_key_id(&self) -> &str {
        &self.current_id
    }

    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey> {
        let plaintext = SecretKey::generate();
        let wrapped = self.wrap(&self.current_id, &plaintext, context)?;
        Ok(DataKey { plaintext, wrapped })
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<SecretKey> {
        self.unwrap(wrapped, context)
    }

    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        let key = self.unwrap(wrapped, context)?;
        self.wrap(destination_key_id, &key, context)
    }

    fn allows_key(&self, key_id: &str) -> bool {
        self.root(key_id).is_ok()
    }

    async fn wrap_data_key(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey> {
        self.wrap(&self.current_id, key, context)
    }
}
