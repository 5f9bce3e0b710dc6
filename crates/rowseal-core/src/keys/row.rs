//! Row keys: what encrypts and decrypts the fields of one row.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::crypto::aead::Aead;
use crate::crypto::hmac_sha256::{key_commitment, HmacKey};
use crate::crypto::rng;
use crate::error::{Error, Result};
use crate::format::canonical::push_lp;
use crate::format::field::{self, FIELD_V1};
use crate::format::header::{KeyMode, RowHeader, BOUND_LEN, SALT_LEN};
use crate::format::wrapped::WrappedKey;

const ROW_KEY_LABEL: &[u8] = b"rowseal/v1/row-key";
const ENC_KEY_TAG: u8 = 0x01;

/// What rowseal needs to know about a record type (a model): its name, its
/// table, its key mode, and whether its primary key is bound into the
/// ciphertexts.
///
/// The derive macro builds one per model as a `const`; the command-line tool
/// builds them from the schema registry.
///
/// ```
/// use rowseal_core::{KeyMode, RecordSpec};
/// const PATIENT: RecordSpec = RecordSpec::new("patient", "patients")
///     .with_key_mode(KeyMode::Derived)
///     .with_primary_key_bound(true);
/// assert_eq!(PATIENT.table(), "patients");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordSpec {
    record_type: Cow<'static, str>,
    table: Cow<'static, str>,
    mode: KeyMode,
    bind_primary_key: bool,
}

impl RecordSpec {
    /// A record type stored in `table`, in `derived` key mode, primary key not
    /// bound.
    pub const fn new(record_type: &'static str, table: &'static str) -> Self {
        RecordSpec {
            record_type: Cow::Borrowed(record_type),
            table: Cow::Borrowed(table),
            mode: KeyMode::Derived,
            bind_primary_key: false,
        }
    }

    /// The same, from owned names (as read from the schema registry).
    pub fn owned(record_type: String, table: String) -> Self {
        RecordSpec {
            record_type: Cow::Owned(record_type),
            table: Cow::Owned(table),
            mode: KeyMode::Derived,
            bind_primary_key: false,
        }
    }

    /// Sets the key mode.
    pub const fn with_key_mode(mut self, mode: KeyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Binds each row's primary key into its ciphertexts, so that a ciphertext
    /// copied to another row of the same table and tenant fails to decrypt. The
    /// primary key must then be known before the insert (not a database-assigned
    /// serial).
    pub const fn with_primary_key_bound(mut self, bind: bool) -> Self {
        self.bind_primary_key = bind;
        self
    }

    /// The record type name.
    pub fn record_type(&self) -> &str {
        &self.record_type
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The key mode.
    pub fn key_mode(&self) -> KeyMode {
        self.mode
    }

    /// Whether the primary key is bound into the ciphertexts.
    pub fn binds_primary_key(&self) -> bool {
        self.bind_primary_key
    }

    /// The part of every field's associated data shared by all rows of this
    /// record type and tenant: format version, record type, tenant, table.
    fn aad_head(&self, tenant: &str) -> Result<Arc<[u8]>> {
        let mut head =
            Vec::with_capacity(1 + 12 + self.record_type.len() + tenant.len() + self.table.len());
        head.push(FIELD_V1);
        push_lp(&mut head, self.record_type.as_bytes())?;
        push_lp(&mut head, tenant.as_bytes())?;
        push_lp(&mut head, self.table.as_bytes())?;
        Ok(head.into())
    }

    fn aad_tail(&self, primary_key: Option<&[u8]>) -> Result<Cow<'static, [u8]>> {
        if !self.bind_primary_key {
            return Ok(Cow::Borrowed(&[0]));
        }
        let pk = primary_key.ok_or(Error::InvalidInput {
            reason: "this record type binds its primary key, and none was given",
        })?;
        let mut tail = Vec::with_capacity(5 + pk.len());
        tail.push(1);
        push_lp(&mut tail, pk)?;
        Ok(Cow::Owned(tail))
    }

    fn row_key_prefix(&self, tenant: &str) -> Result<Vec<u8>> {
        let mut p = ROW_KEY_LABEL.to_vec();
        push_lp(&mut p, self.record_type.as_bytes())?;
        push_lp(&mut p, tenant.as_bytes())?;
        Ok(p)
    }
}

/// Everything needed to make row keys for one record type under one key (a
/// tenant key, or a per-row data key): computed once, used for many rows.
pub(crate) struct RowKeyFactory {
    mac: HmacKey,
    aad_head: Arc<[u8]>,
    spec: RecordSpec,
}

impl RowKeyFactory {
    pub(crate) fn new(key: &HmacKey, spec: &RecordSpec, tenant: &str) -> Result<Self> {
        Ok(RowKeyFactory {
            mac: key.with_prefix(&spec.row_key_prefix(tenant)?),
            aad_head: spec.aad_head(tenant)?,
            spec: spec.clone(),
        })
    }

    /// A row key under a fresh random salt.
    pub(crate) fn new_row(
        &self,
        key_version: u32,
        wrapped: Option<WrappedKey>,
        primary_key: Option<&[u8]>,
    ) -> Result<RowKey> {
        let mut salt = [0u8; SALT_LEN];
        rng::fill(&mut salt);
        let bound = RowHeader::bound_part(self.spec.mode, key_version, &salt);
        let (enc, commitment) = self.derive(&bound);
        let header = RowHeader {
            mode: self.spec.mode,
            key_version,
            salt,
            wrapped,
            commitment,
        };
        self.finish(header, enc, primary_key)
    }

    /// The row key of an existing row, after checking the header's key
    /// commitment. A header from another tenant, record type or key, or with
    /// any bound byte changed, fails here, before any field is touched.
    pub(crate) fn open_row(&self, header: RowHeader, primary_key: Option<&[u8]>) -> Result<RowKey> {
        if header.mode != self.spec.mode {
            return Err(Error::Decrypt);
        }
        let (enc, commitment) = self.derive(&header.bound());
        if !bool::from(commitment.ct_eq(&header.commitment)) {
            return Err(Error::Decrypt);
        }
        self.finish(header, enc, primary_key)
    }

    /// The row's encryption key, HMAC(K', 0x01 || bound header part), and its
    /// commitment, SHA-256("rowseal/v1/commit" || key): a collision-resistant
    /// hash of the very key the fields are sealed under, so no header can
    /// commit to two keys.
    fn derive(&self, bound: &[u8; BOUND_LEN]) -> (zeroize::Zeroizing<[u8; 32]>, [u8; 32]) {
        let enc = zeroize::Zeroizing::new(self.mac.mac(&[&[ENC_KEY_TAG], bound]));
        let commitment = key_commitment(&enc);
        (enc, commitment)
    }

    fn finish(
        &self,
        header: RowHeader,
        enc: zeroize::Zeroizing<[u8; 32]>,
        primary_key: Option<&[u8]>,
    ) -> Result<RowKey> {
        Ok(RowKey {
            aead: Aead::new(&enc),
            header,
            aad_head: self.aad_head.clone(),
            aad_tail: self.spec.aad_tail(primary_key)?,
        })
    }
}

/// The key of one row: seals and opens that row's fields.
///
/// Obtained from [`KeyHierarchy::new_row_key`](crate::KeyHierarchy::new_row_key)
/// for a new row (store [`RowKey::header_bytes`] in the row's key header
/// column) or [`KeyHierarchy::open_row_key`](crate::KeyHierarchy::open_row_key)
/// for an existing one. Each field is sealed with associated data that binds
/// the format version, record type, tenant, table, column and (if the record
/// type opts in) primary key, so a ciphertext moved anywhere else fails to open.
///
/// `Debug` shows the header, never the key.
pub struct RowKey {
    aead: Aead,
    header: RowHeader,
    aad_head: Arc<[u8]>,
    aad_tail: Cow<'static, [u8]>,
}

impl RowKey {
    /// The parsed row header.
    pub fn header(&self) -> &RowHeader {
        &self.header
    }

    /// The encoded row header, for the row's key header column.
    pub fn header_bytes(&self) -> Vec<u8> {
        self.header.to_bytes()
    }

    /// Encrypts one field value into a field envelope.
    pub fn seal(&self, column: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.with_aad(column, |aad| field::seal(&self.aead, aad, plaintext))
    }

    /// Decrypts a field envelope sealed for `column` of this row.
    pub fn open(&self, column: &str, envelope: &[u8]) -> Result<Vec<u8>> {
        self.with_aad(column, |aad| field::open(&self.aead, aad, envelope))
    }

    /// Builds `head || lp(column) || tail` on the stack when it fits, so the
    /// hot path allocates nothing but its output.
    fn with_aad<T>(&self, column: &str, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
        let len = self.aad_head.len() + 4 + column.len() + self.aad_tail.len();
        let col_len = u32::try_from(column.len()).map_err(|_| Error::InvalidInput {
            reason: "column name longer than 4 GiB",
        })?;
        let mut stack = [0u8; 256];
        let mut heap;
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap = vec![0u8; len];
            &mut heap
        };
        let (head, rest) = buf.split_at_mut(self.aad_head.len());
        head.copy_from_slice(&self.aad_head);
        let (lenb, rest) = rest.split_at_mut(4);
        lenb.copy_from_slice(&col_len.to_be_bytes());
        let (col, tail) = rest.split_at_mut(column.len());
        col.copy_from_slice(column.as_bytes());
        tail.copy_from_slice(&self.aad_tail);
        f(buf)
    }
}

impl fmt::Debug for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowKey")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}
