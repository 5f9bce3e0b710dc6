//! Unwrapped tenant and index keys, and what they derive.

use std::fmt;

use crate::blind::{BlindIndexValue, IndexBits, Normalization};
use crate::crypto::hmac_sha256::HmacKey;
use crate::error::{Error, Result};
use crate::format::canonical::push_lp;
use crate::format::header::{KeyMode, RowHeader, HEADER_V1, HEADER_V2};
use crate::format::presence::FieldSet;
use crate::keys::row::{RecordSpec, RowKey, RowKeyFactory};
use crate::secret::SecretKey;
use crate::store::KeyScope;

const BLIND_INDEX_LABEL: &[u8] = b"rowseal/v2/blind-index";

/// One version of a tenant's key, unwrapped. Derives the row keys of every
/// `derived`-mode row of that tenant, with no provider call.
///
/// Holds only HMAC states computed from the key (the raw key is dropped at once);
/// they are zeroized on drop. `Debug` shows the tenant and version.
pub struct TenantKey {
    tenant: String,
    version: u32,
    mac: HmacKey,
}

impl TenantKey {
    pub(crate) fn new(tenant: &str, version: u32, key: &SecretKey) -> Self {
        TenantKey {
            tenant: tenant.to_owned(),
            version,
            mac: HmacKey::new(key.expose_secret()),
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Row keys for `spec` under this tenant key, for sealing or opening many
    /// rows of one record type without repeating the per-record-type setup.
    pub fn record_keys(&self, spec: &RecordSpec) -> Result<RecordKeys> {
        if spec.key_mode() != KeyMode::Derived {
            return Err(Error::InvalidInput {
                reason: "tenant keys derive row keys only in derived key mode".into(),
            });
        }
        Ok(RecordKeys {
            v1: RowKeyFactory::new(HEADER_V1, &self.mac, spec, &self.tenant)?,
            v2: RowKeyFactory::new(HEADER_V2, &self.mac, spec, &self.tenant)?,
            version: self.version,
        })
    }
}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantKey")
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Row keys for one record type under one tenant key version (see
/// [`TenantKey::record_keys`]). New rows are format 2; rows of format 1 and 2
/// open alike. Making or opening a row key costs two HMAC computations and
/// an AES key schedule.
pub struct RecordKeys {
    /// Format 1 derivation: opens old rows (and makes v1 rows for tests).
    v1: RowKeyFactory,
    /// Format 2 derivation: makes and opens current rows.
    v2: RowKeyFactory,
    version: u32,
}

impl RecordKeys {
    /// A fresh row key (random salt) for a new write of a row, format 2:
    /// `present` names the encrypted fields the write seals (its non-NULL
    /// ones); the row key binds them, and the header counts them.
    #[inline]
    pub fn new_row(&self, primary_key: Option<&[u8]>, present: &FieldSet) -> Result<RowKey> {
        self.v2.new_row(self.version, None, primary_key, present)
    }

    /// A fresh row key of format 1 (which binds table and column, and not
    /// which fields are present).
    ///
    /// Hidden, and not for applications: new rows are format 2. It exists
    /// because tests of reading old rows and of the v1 -> v2 upgrade
    /// (`rowseal rotate`) need real v1 rows.
    #[doc(hidden)]
    pub fn new_row_v1(&self, primary_key: Option<&[u8]>) -> Result<RowKey> {
        self.v1
            .new_row(self.version, None, primary_key, &FieldSet::empty())
    }

    /// The row key of an existing row (format 1 or 2) from its encoded
    /// header, after checking the key commitment. The header must name this
    /// tenant key version. `present` names the row's non-NULL encrypted
    /// fields now: a format 2 row written with another set fails
    /// ([`Error::FieldPresence`] when the count differs, else
    /// [`Error::Decrypt`]); format 1 rows did not bind presence and ignore it.
    pub fn open_row(
        &self,
        primary_key: Option<&[u8]>,
        header: &[u8],
        present: &FieldSet,
    ) -> Result<RowKey> {
        let header = RowHeader::from_bytes(header)?;
        self.open_parsed(primary_key, header, present)
    }

    #[inline]
    pub(crate) fn open_parsed(
        &self,
        primary_key: Option<&[u8]>,
        header: RowHeader,
        present: &FieldSet,
    ) -> Result<RowKey> {
        if header.tenant_key_version() != Some(self.version) {
            return Err(Error::InvalidInput {
                reason: "row header names another tenant key version".into(),
            });
        }
        if header.format_version() == HEADER_V1 {
            self.v1.open_row(header, primary_key, present)
        } else {
            self.v2.open_row(header, primary_key, present)
        }
    }

    /// The tenant key version these row keys derive from.
    pub fn tenant_key_version(&self) -> u32 {
        self.version
    }
}

impl fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordKeys")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One version of a blind-index key (per tenant or global), unwrapped.
pub struct IndexKey {
    scope: KeyScope,
    version: u32,
    mac: HmacKey,
}

impl IndexKey {
    pub(crate) fn new(scope: KeyScope, version: u32, key: &SecretKey) -> Self {
        IndexKey {
            scope,
            version,
            mac: HmacKey::new(key.expose_secret()),
        }
    }

    /// Whose key it is.
    pub fn scope(&self) -> &KeyScope {
        &self.scope
    }

    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key of one blind index, derived from this key, the record type
    /// and the index name: logical names only, so that renaming the table
    /// or the index's columns keeps every stored index value valid, and equal
    /// values in two indexes give unrelated index values.
    pub fn blind_index_key(&self, record_type: &str, index: &str) -> Result<BlindIndexKey> {
        let mut prefix = BLIND_INDEX_LABEL.to_vec();
        push_lp(&mut prefix, record_type.as_bytes())?;
        push_lp(&mut prefix, index.as_bytes())?;
        prefix.extend_from_slice(&self.version.to_be_bytes());
        Ok(BlindIndexKey {
            mac: self.mac.with_prefix(&prefix),
            version: self.version,
        })
    }
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexKey")
            .field("scope", &self.scope)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The HMAC-SHA256 key of one blind index. Cheap to clone; zeroized on drop.
#[derive(Clone)]
pub struct BlindIndexKey {
    mac: HmacKey,
    version: u32,
}

impl BlindIndexKey {
    /// HMAC-SHA256 of an (already normalized) value: two SHA-256 compressions for
    /// values up to 55 bytes.
    pub fn compute(&self, value: &[u8]) -> [u8; 32] {
        self.mac.mac(&[value])
    }

    /// HMAC-SHA256 of a compound value: each (already normalized) part is
    /// length-prefixed, so ("ab", "c") and ("a", "bc") index differently.
    pub fn compute_compound(&self, parts: &[&[u8]]) -> Result<[u8; 32]> {
        let lens = parts
            .iter()
            .map(|p| {
                u32::try_from(p.len())
                    .map(u32::to_be_bytes)
                    .map_err(|_| Error::InvalidInput {
                        reason: "index part longer than 4 GiB".into(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len() * 2);
        for (len, part) in lens.iter().zip(parts) {
            slices.push(len);
            slices.push(part);
        }
        Ok(self.mac.mac(&slices))
    }

    /// The stored index value of `value`: normalized, HMAC-ed, truncated.
    ///
    /// ```
    /// # async fn demo() -> rowseal_core::Result<()> {
    /// # use std::sync::Arc;
    /// # use rowseal_core::*;
    /// # let p = LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring())?;
    /// # let keys = KeyHierarchy::new(Arc::new(p), Arc::new(MemoryKeyStore::new()));
    /// let index_key = keys.current_index_key(&KeyScope::Tenant("acme".into())).await?;
    /// let email = index_key.blind_index_key("user", "email_idx")?;
    /// let norm = Normalization::parse("trim,lowercase")?;
    /// let bits = IndexBits::new(32)?;
    /// assert_eq!(
    ///     email.index_value(&norm, " Ada@Example.com", bits),
    ///     email.index_value(&norm, "ada@example.com", bits),
    /// );
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
    /// ```
    pub fn index_value(
        &self,
        normalization: &Normalization,
        value: &str,
        bits: IndexBits,
    ) -> BlindIndexValue {
        let normalized = zeroize::Zeroizing::new(normalization.apply(value));
        bits.truncate(&self.compute(normalized.as_bytes()))
    }

    /// The stored index value of already normalized parts: one part is
    /// indexed as itself ([`compute`](Self::compute)), several as a compound
    /// value ([`compute_compound`](Self::compute_compound)); then truncated to
    /// `bits`. The one place that choice is made, for the library and the
    /// command-line tool alike.
    pub fn parts_value<P: AsRef<[u8]>>(
        &self,
        parts: &[P],
        bits: IndexBits,
    ) -> Result<BlindIndexValue> {
        let mac = if let [one] = parts {
            self.compute(one.as_ref())
        } else {
            let slices: Vec<&[u8]> = parts.iter().map(AsRef::as_ref).collect();
            self.compute_compound(&slices)?
        };
        Ok(bits.truncate(&mac))
    }

    /// The index-key version.
    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndexKey")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
