//! Row keys: what encrypts and decrypts the fields of one row.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::crypto::aead::Aead;
use crate::crypto::hmac_sha256::{key_commitment, HmacKey, COMMIT_LABEL_V1, COMMIT_LABEL_V2};
use crate::error::{Error, Result};
use crate::format::canonical::push_lp;
use crate::format::field::{self, FIELD_V1, FIELD_V2};
use crate::format::header::{KeyMode, RowHeader, HEADER_V1, HEADER_V2};
use crate::format::presence::FieldSet;
use crate::format::wrapped::WrappedKey;

const ROW_KEY_LABEL_V1: &[u8] = b"rowseal/v1/row-key";
const ROW_KEY_LABEL_V2: &[u8] = b"rowseal/v2/row-key";
const ENC_KEY_TAG: u8 = 0x01;

/// The two names of an encrypted field: its logical name (the model's field
/// name, which format v2 binds into the ciphertext) and its column (which
/// format v1 bound, with the table). Tables and columns may be renamed under
/// format v2 rows; the logical name may not.
///
/// ```
/// use rowseal_core::FieldName;
/// let f = FieldName::new("email", "email_enc");
/// assert_eq!((f.logical, f.column), ("email", "email_enc"));
/// assert_eq!(FieldName::same("ssn"), FieldName::new("ssn", "ssn"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldName<'a> {
    /// The logical name (format v2 associated data).
    pub logical: &'a str,
    /// The column (format v1 associated data).
    pub column: &'a str,
}

impl<'a> FieldName<'a> {
    /// A field named `logical`, stored in `column`.
    pub const fn new(logical: &'a str, column: &'a str) -> Self {
        FieldName { logical, column }
    }

    /// A field stored in a column of its own name.
    pub const fn same(name: &'a str) -> Self {
        FieldName {
            logical: name,
            column: name,
        }
    }
}

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
    /// record type and tenant. Format 1: `0x01 || lp(record type) ||
    /// lp(tenant) || lp(table)`; format 2: `0x02 || lp(record type) ||
    /// lp(tenant)` (no table: tables may be renamed).
    fn aad_head(&self, format: u8, tenant: &str) -> Result<Arc<[u8]>> {
        let mut head =
            Vec::with_capacity(1 + 12 + self.record_type.len() + tenant.len() + self.table.len());
        match format {
            HEADER_V1 => {
                head.push(FIELD_V1);
                push_lp(&mut head, self.record_type.as_bytes())?;
                push_lp(&mut head, tenant.as_bytes())?;
                push_lp(&mut head, self.table.as_bytes())?;
            }
            HEADER_V2 => {
                head.push(FIELD_V2);
                push_lp(&mut head, self.record_type.as_bytes())?;
                push_lp(&mut head, tenant.as_bytes())?;
            }
            version => {
                return Err(Error::UnsupportedFormat {
                    what: "row header",
                    version,
                })
            }
        }
        Ok(head.into())
    }

    /// The row-key derivation's message prefix: `"rowseal/v<N>/row-key" ||
    /// lp(record type) || lp(tenant)`.
    fn row_key_prefix(&self, format: u8, tenant: &str) -> Result<Vec<u8>> {
        let mut p = if format == HEADER_V1 {
            ROW_KEY_LABEL_V1
        } else {
            ROW_KEY_LABEL_V2
        }
        .to_vec();
        push_lp(&mut p, self.record_type.as_bytes())?;
        push_lp(&mut p, tenant.as_bytes())?;
        Ok(p)
    }
}

/// The end of every field's associated data: `0x00`, or `0x01 ||
/// lp(primary key)` when the record type binds its primary key.
///
/// Kept inline up to `TAIL_INLINE` bytes (integer, UUID and short text
/// keys), so a record type that binds its primary key allocates nothing per
/// row for it.
enum AadTail {
    Inline { bytes: [u8; TAIL_INLINE], len: u8 },
    Heap(Box<[u8]>),
}

const TAIL_INLINE: usize = 64;

impl AadTail {
    fn as_slice(&self) -> &[u8] {
        match self {
            AadTail::Inline { bytes, len } => &bytes[..usize::from(*len)],
            AadTail::Heap(b) => b,
        }
    }
}

fn aad_tail(bind_primary_key: bool, primary_key: Option<&[u8]>) -> Result<AadTail> {
    let mut bytes = [0u8; TAIL_INLINE];
    if !bind_primary_key {
        return Ok(AadTail::Inline { bytes, len: 1 });
    }
    let pk = primary_key.ok_or_else(|| Error::InvalidInput {
        reason: "this record type binds its primary key, and none was given".into(),
    })?;
    match u8::try_from(5 + pk.len()) {
        Ok(len) if usize::from(len) <= TAIL_INLINE => {
            let pk_len = u32::from(len) - 5;
            bytes[0] = 1;
            bytes[1..5].copy_from_slice(&pk_len.to_be_bytes());
            bytes[5..usize::from(len)].copy_from_slice(pk);
            Ok(AadTail::Inline { bytes, len })
        }
        _ => {
            let mut tail = Vec::with_capacity(5 + pk.len());
            tail.push(1);
            push_lp(&mut tail, pk)?;
            Ok(AadTail::Heap(tail.into()))
        }
    }
}

/// A v2 header must count exactly the fields present now: a field NULLed or
/// filled since the write is [`Error::FieldPresence`] (before any key is
/// fetched). v1 headers did not record presence.
pub(crate) fn check_presence(header: &RowHeader, present: &FieldSet) -> Result<()> {
    match header.present_count() {
        Some(stored) if stored != present.count() => Err(Error::FieldPresence {
            stored,
            found: present.count(),
        }),
        _ => Ok(()),
    }
}

/// Everything needed to make row keys of one format version for one record
/// type under one key (a tenant key, or a per-row data key): computed once,
/// used for many rows.
pub(crate) struct RowKeyFactory {
    format: u8,
    mac: HmacKey,
    aad_head: Arc<[u8]>,
    mode: KeyMode,
    bind_primary_key: bool,
}

impl RowKeyFactory {
    /// Row keys of format `format` (1 or 2; anything else is
    /// [`Error::UnsupportedFormat`]).
    pub(crate) fn new(format: u8, key: &HmacKey, spec: &RecordSpec, tenant: &str) -> Result<Self> {
        Ok(RowKeyFactory {
            format,
            aad_head: spec.aad_head(format, tenant)?,
            mac: key.with_prefix(&spec.row_key_prefix(format, tenant)?),
            mode: spec.mode,
            bind_primary_key: spec.bind_primary_key,
        })
    }

    /// A row key under a fresh random salt. `present` (the non-NULL
    /// encrypted fields the write will seal) is bound in format 2, ignored
    /// in format 1.
    #[inline]
    pub(crate) fn new_row(
        &self,
        key_version: u32,
        wrapped: Option<WrappedKey>,
        primary_key: Option<&[u8]>,
        present: &FieldSet,
    ) -> Result<RowKey> {
        let mut header = if self.format == HEADER_V1 {
            RowHeader::fresh_v1(self.mode, key_version, wrapped)
        } else {
            RowHeader::fresh_v2(self.mode, key_version, present.count(), wrapped)
        };
        let (enc, commitment) = self.derive(&header, present);
        header.commitment = commitment;
        self.finish(header, enc, primary_key)
    }

    /// The row key under a given header (its commitment set here): the
    /// known-answer tests' way round the random salt.
    #[cfg(test)]
    pub(crate) fn new_row_with_header_for_tests(
        &self,
        header: &mut RowHeader,
        primary_key: Option<&[u8]>,
        present: &FieldSet,
    ) -> Result<RowKey> {
        let (enc, commitment) = self.derive(header, present);
        header.commitment = commitment;
        self.finish(header.clone(), enc, primary_key)
    }

    /// The row key of an existing row, after checking the header's key
    /// commitment. A header from another tenant, record type or key, or with
    /// any bound byte changed, or (format 2) opened with another set of
    /// present fields, fails here, before any field is touched.
    #[inline]
    pub(crate) fn open_row(
        &self,
        header: RowHeader,
        primary_key: Option<&[u8]>,
        present: &FieldSet,
    ) -> Result<RowKey> {
        if header.format_version() != self.format {
            return Err(Error::UnsupportedFormat {
                what: "row header",
                version: header.format_version(),
            });
        }
        if header.mode != self.mode {
            return Err(Error::Decrypt);
        }
        check_presence(&header, present)?;
        let (enc, commitment) = self.derive(&header, present);
        if !bool::from(commitment.ct_eq(&header.commitment)) {
            return Err(Error::Decrypt);
        }
        self.finish(header, enc, primary_key)
    }

    /// The row's encryption key and its commitment, a collision-resistant
    /// hash of the very key the fields are sealed under, so that no header
    /// can commit to two keys:
    /// - format 1: HMAC(K', 0x01 || bound part), SHA-256("rowseal/v1/commit" || key);
    /// - format 2: HMAC(K'', 0x01 || bound part || present.canonical_bytes()),
    ///   SHA-256("rowseal/v2/commit" || key).
    #[inline]
    fn derive(
        &self,
        header: &RowHeader,
        present: &FieldSet,
    ) -> (zeroize::Zeroizing<[u8; 32]>, [u8; 32]) {
        let bound = header.bound();
        let (enc, label) = if self.format == HEADER_V1 {
            let parts: [&[u8]; 2] = [&[ENC_KEY_TAG], bound.as_slice()];
            (
                zeroize::Zeroizing::new(self.mac.mac_public_message(&parts)),
                COMMIT_LABEL_V1,
            )
        } else {
            let parts: [&[u8]; 3] = [&[ENC_KEY_TAG], bound.as_slice(), present.canonical_bytes()];
            (
                zeroize::Zeroizing::new(self.mac.mac_public_message(&parts)),
                COMMIT_LABEL_V2,
            )
        };
        let commitment = key_commitment(label, &enc);
        (enc, commitment)
    }

    #[inline]
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
            aad_tail: aad_tail(self.bind_primary_key, primary_key)?,
        })
    }
}

/// The key of one row: seals and opens that row's fields.
///
/// Obtained from [`KeyHierarchy::new_row_key`](crate::KeyHierarchy::new_row_key)
/// for a new row or a new write of one (store [`RowKey::header_bytes`] in the
/// row's key header column; every write re-keys the row) or
/// [`KeyHierarchy::open_row_key`](crate::KeyHierarchy::open_row_key) for an
/// existing one. The row key's header version chooses the field format:
///
/// - format 2 (every new row): each field is sealed with associated data that
///   binds the format version, record type, tenant, the field's *logical*
///   name and (if the record type opts in) the primary key, under a fixed
///   nonce (the key seals each field once); tables and columns may be
///   renamed;
/// - format 1 (old rows): the same, with the table and the *column* instead
///   of the logical name, under a random stored nonce.
///
/// So a ciphertext moved anywhere else fails to open. `Debug` shows the
/// header, never the key.
pub struct RowKey {
    aead: Aead,
    header: RowHeader,
    aad_head: Arc<[u8]>,
    aad_tail: AadTail,
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

    /// Encrypts one field value into a field envelope of the row's format
    /// version: `plaintext.len() + 16` bytes in format 2 (`+ 29` in
    /// format 1). In format 2, seal each field once per row key (a new write
    /// takes a new row key); sealing the same field twice under one key gives
    /// the same bytes for the same value.
    pub fn seal(&self, field: FieldName<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        if self.header.format_version() == HEADER_V1 {
            self.with_aad(field.column, |aad| {
                field::seal_v1(&self.aead, aad, plaintext)
            })
        } else {
            self.with_aad(field.logical, |aad| {
                field::seal_v2(&self.aead, aad, plaintext)
            })
        }
    }

    /// Decrypts a field envelope sealed for `field` of this row.
    pub fn open(&self, field: FieldName<'_>, envelope: &[u8]) -> Result<Vec<u8>> {
        if self.header.format_version() == HEADER_V1 {
            self.with_aad(field.column, |aad| {
                field::open_v1(&self.aead, aad, envelope)
            })
        } else {
            self.with_aad(field.logical, |aad| {
                field::open_v2(&self.aead, aad, envelope)
            })
        }
    }

    /// Builds `head || lp(name) || tail` on the stack when it fits, so the
    /// hot path allocates nothing but its output.
    pub(crate) fn with_aad<T>(&self, name: &str, f: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
        let aad_tail = self.aad_tail.as_slice();
        let len = self.aad_head.len() + 4 + name.len() + aad_tail.len();
        let name_len = u32::try_from(name.len()).map_err(|_| Error::InvalidInput {
            reason: "field name longer than 4 GiB".into(),
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
        lenb.copy_from_slice(&name_len.to_be_bytes());
        let (n, tail) = rest.split_at_mut(name.len());
        n.copy_from_slice(name.as_bytes());
        tail.copy_from_slice(aad_tail);
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
