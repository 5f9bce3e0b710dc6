//! rowseal's one error type: the core's failures and the sqlx layer's.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Everything that can go wrong in rowseal: the crypto core, the key
/// provider and store, and the sqlx layer (every crate of rowseal returns
/// this type, so a service needs one `From` impl, not three).
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a
/// wildcard arm, or better, branch on [`kind`](Error::kind). No variant ever
/// carries plaintext or key bytes, so an `Error` is safe to log, print and
/// send to an error tracker. Its `Debug` output holds the same information as
/// its `Display` output.
///
/// An authentication failure is always the opaque [`Error::Decrypt`], whatever
/// the cause (wrong key, wrong tenant, ciphertext moved to another column,
/// flipped bit, key commitment mismatch): distinguishing them would help an
/// attacker, never a user. The sqlx layer wraps it in [`Error::Field`], which
/// names the table, column and row (stored in the clear).
///
/// ```
/// use rowseal_core::{Error, ErrorKind};
/// let e = Error::NotFound { table: "patients".into(), primary_key: "7".into() };
/// assert_eq!(e.kind(), ErrorKind::NotFound);
/// assert_eq!(e.to_string(), "no row of patients with primary key 7 in this tenant");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum Error {
    /// Authentication failed: the ciphertext, the row header or the key does not
    /// match. Deliberately says nothing more.
    Decrypt,
    /// Bytes that should be a rowseal structure are not: too short, too long, or a
    /// length field that points past the end.
    Malformed {
        /// Which structure ("field envelope", "row header", "wrapped key").
        what: &'static str,
        /// What is wrong with it, in words that never quote the bytes.
        reason: &'static str,
    },
    /// A structure written by a format version or algorithm this build does not
    /// read.
    UnsupportedFormat {
        /// Which structure.
        what: &'static str,
        /// The version (or algorithm) byte found.
        version: u8,
    },
    /// Key configuration is missing or invalid (for example a local root key that
    /// is absent, not base64 or not 32 bytes). Raised when a provider is built, so
    /// a bad configuration fails at start-up, not at the first write.
    KeyConfig {
        /// What is wrong. Never contains key bytes.
        reason: String,
    },
    /// A key the data refers to is not known: a tenant or index key version that
    /// is not in the key store, or a root key the provider does not hold.
    KeyNotFound {
        /// Which key, by name and version (never by value).
        key: String,
    },
    /// A key has been destroyed (crypto-shredded); the data it protected is gone.
    KeyDestroyed {
        /// Which key, by name and version.
        key: String,
    },
    /// The root key provider (KMS, local keyring) failed. See [`ProviderError`].
    Provider(ProviderError),
    /// The key store (the `rowseal_keys` table or an in-memory store) failed.
    Store {
        /// What the store said.
        message: String,
        /// The underlying error, if any.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A NULLed or filled encrypted field: the row's header was written with
    /// `stored` non-NULL encrypted fields, the row now has `found` (format v2
    /// rows, whose key binds the set of present fields). The row is refused as
    /// a whole: one of its encrypted fields was set to NULL, or a NULL one was
    /// given a value, outside rowseal (or the header's count was changed).
    /// A different set of the same size is [`Error::Decrypt`].
    FieldPresence {
        /// How many encrypted fields were non-NULL when the row was written.
        stored: u8,
        /// How many are non-NULL now.
        found: u8,
    },
    /// An argument is outside what the format can represent (for example a
    /// context string longer than 4 GiB, or a wrapped key longer than 64 KiB).
    InvalidInput {
        /// What is wrong (never quotes a value).
        reason: Cow<'static, str>,
    },
    /// A field of a row could not be opened: its ciphertext, the row header or
    /// a key failed (`source` says which kind of failure; for an
    /// authentication failure always the opaque [`Error::Decrypt`]), or its
    /// row key could not be fetched (a key-provider outage, a destroyed key).
    Field {
        /// The table.
        table: String,
        /// The column (`rowseal_header` when the row's key header itself
        /// failed).
        column: String,
        /// The row's primary key, as text.
        primary_key: String,
        /// What failed.
        source: Box<Error>,
    },
    /// A decrypted, authenticated value is not a value of the field's type
    /// (the model's type changed, not the data).
    Decode {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The row's primary key, as text.
        primary_key: String,
        /// Why (never quotes the value).
        reason: &'static str,
    },
    /// The database failed. See [`DatabaseError`].
    Database(DatabaseError),
    /// A row read from the database does not fit the model: a column is
    /// missing from the query, or has an unexpected type.
    Schema {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// An update or delete found no row with this primary key in this tenant.
    NotFound {
        /// The table.
        table: String,
        /// The primary key, as text.
        primary_key: String,
    },
    /// The row changed between the read and the write of a read-modify-write
    /// (the sqlx layer's `update_fields`): a rotation re-sealed it, or another
    /// writer updated it. Nothing was written; read the row again and retry.
    Conflict {
        /// The table.
        table: String,
        /// The primary key, as text.
        primary_key: String,
    },
    /// A value could not be serialized (`#[rowseal(encrypt, json)]`).
    Serialize {
        /// The column.
        column: String,
        /// What serde said (about the type, not the value).
        reason: String,
    },
    /// A crypto worker thread failed (a bug: a panic while sealing or
    /// opening).
    Worker,
    /// A write would give two rows the same value under a `unique` blind
    /// index. Names the index and its fields, never the value.
    UniqueViolation {
        /// The table.
        table: String,
        /// The blind index.
        index: String,
        /// The Rust fields the index covers.
        fields: Vec<String>,
    },
    /// A row read for one tenant belongs to another: its tenant column is not
    /// byte-for-byte the tenant the caller asked for (a query without its
    /// tenant filter, a MySQL/MariaDB collation that matched `ACME` to
    /// `acme`, a row moved by a database writer). Nothing of the row is
    /// decrypted; no key of its tenant is fetched. Names neither tenant.
    TenantMismatch {
        /// The table.
        table: String,
        /// The row's primary key, as text.
        primary_key: String,
    },
    /// A schema registry entry was written in a registry format this version
    /// does not read (by a newer rowseal, or damaged).
    UnsupportedRegistryFormat {
        /// The registered table.
        table: String,
        /// The entry's format number.
        format: u64,
    },
}

/// A failure of the database, as the sqlx layer saw it: the driver's error
/// (reachable through [`get_ref`](DatabaseError::get_ref) or
/// `std::error::Error::source`, and with the `sqlx` feature as
/// `Error::as_sqlx`), classified once when it was caught.
#[derive(Clone)]
pub struct DatabaseError {
    source: Arc<dyn std::error::Error + Send + Sync>,
    unique_violation: bool,
    retryable: bool,
}

impl DatabaseError {
    /// Wraps a driver's error. `unique_violation`: the database refused a
    /// duplicate value; `retryable`: the database could not be reached (a
    /// pool timeout, an I/O or TLS failure, a closed pool), so a later
    /// attempt may succeed.
    pub fn new<E>(source: E, unique_violation: bool, retryable: bool) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        DatabaseError {
            source: Arc::new(source),
            unique_violation,
            retryable,
        }
    }

    /// Whether the database refused a duplicate value.
    pub fn is_unique_violation(&self) -> bool {
        self.unique_violation
    }

    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The driver's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

#[cfg(feature = "sqlx")]
impl From<sqlx_core::Error> for Error {
    fn from(e: sqlx_core::Error) -> Self {
        use sqlx_core::Error as E;
        let unique = matches!(&e, E::Database(db) if db.is_unique_violation());
        let retryable = matches!(
            e,
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed
        );
        Error::Database(DatabaseError::new(e, unique, retryable))
    }
}

impl Error {
    /// Shorthand for an [`Error::Store`] built from any error.
    pub fn store<E>(message: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Store {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Self {
        Error::Malformed { what, reason }
    }

    /// Shorthand for an [`Error::InvalidInput`].
    pub fn invalid_input(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
        }
    }

    /// The sqlx error inside, if this is an [`Error::Database`] raised by the
    /// sqlx layer (feature `sqlx`).
    #[cfg(feature = "sqlx")]
    pub fn as_sqlx(&self) -> Option<&sqlx_core::Error> {
        match self {
            Error::Database(d) => d.get_ref().downcast_ref(),
            _ => None,
        }
    }

    /// Whether a stored value could not be opened, of any cause: tampering,
    /// but also a destroyed key or a key-provider outage while the row's key
    /// was fetched. [`kind`](Self::kind) tells them apart;
    /// [`is_tampered`](Self::is_tampered) is the one to alert on.
    pub fn is_decrypt(&self) -> bool {
        matches!(
            self,
            Error::Decrypt | Error::Field { .. } | Error::Decode { .. }
        )
    }

    /// Whether stored data failed authentication (or a row of another
    /// tenant was handed in): the kind to alert on.
    pub fn is_tampered(&self) -> bool {
        self.kind() == ErrorKind::Tampered
    }

    /// Whether a later attempt may succeed: the key provider was
    /// unavailable, the row changed under a read-modify-write, or the
    /// database could not be reached (a pool timeout, an I/O or TLS
    /// failure, a closed pool).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable() || matches!(self, Error::Database(d) if d.is_retryable())
    }

    /// What kind of failure this is, for a caller to branch on (an HTTP
    /// status, a retry, an alert). See [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            // Authentication failed, or stored bytes are not rowseal's, or a
            // present field was NULLed or filled: the stored data changed.
            Error::Decrypt | Error::Malformed { .. } | Error::FieldPresence { .. } => {
                ErrorKind::Tampered
            }
            // A header naming a key version the store does not hold: the
            // header was changed, or the key store lost a row.
            Error::KeyNotFound { .. } => ErrorKind::Tampered,
            Error::UnsupportedFormat { .. } | Error::KeyConfig { .. } => ErrorKind::Configuration,
            Error::KeyDestroyed { .. } => ErrorKind::KeyDestroyed,
            Error::Provider(p) => p.kind().into(),
            Error::Store { .. } => ErrorKind::Database,
            Error::InvalidInput { .. } | Error::Serialize { .. } => ErrorKind::InvalidInput,
            // A field that failed to open is classified by its cause, so a
            // provider outage while opening a row is retryable, not tampering.
            Error::Field { source, .. } => source.kind(),
            // Authenticated bytes that are not a value of the field's type:
            // the model's type changed, not the data.
            Error::Decode { .. } => ErrorKind::Configuration,
            Error::Database(d) if d.is_unique_violation() => ErrorKind::UniqueViolation,
            Error::Database(_) => ErrorKind::Database,
            Error::Schema { .. } | Error::UnsupportedRegistryFormat { .. } => {
                ErrorKind::Configuration
            }
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Worker => ErrorKind::Internal,
            Error::UniqueViolation { .. } => ErrorKind::UniqueViolation,
            // A row of another tenant came back (a query without its tenant
            // filter, a row moved by a database writer): refused unopened,
            // and worth an alert like tampering.
            Error::TenantMismatch { .. } => ErrorKind::Tampered,
        }
    }

    /// The provider error inside, if this is an [`Error::Provider`].
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Error::Provider(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Decrypt => f.write_str("decryption failed"),
            Error::Malformed { what, reason } => write!(f, "malformed {what}: {reason}"),
            Error::UnsupportedFormat { what, version } => {
                write!(f, "unsupported {what} format or algorithm {version}")
            }
            Error::KeyConfig { reason } => write!(f, "invalid key configuration: {reason}"),
            Error::KeyNotFound { key } => write!(f, "key not found: {key}"),
            Error::KeyDestroyed { key } => write!(f, "key destroyed: {key}"),
            Error::Provider(e) => write!(f, "key provider: {e}"),
            // The cause is part of the line (a log line or an HTTP 500's body
            // is often all anyone sees): it is the key store's own error on
            // its own table, which holds tenant ids and wrapped keys, never
            // plaintext or a key in the clear.
            Error::Store {
                message,
                source: Some(cause),
            } => write!(f, "key store: {message}: {cause}"),
            Error::Store { message, .. } => write!(f, "key store: {message}"),
            Error::FieldPresence { stored, found } => write!(
                f,
                "a NULLed or filled encrypted field: the row's header was written with \
                 {stored} non-NULL encrypted fields, the row now has {found}"
            ),
            Error::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            Error::Field {
                table,
                column,
                primary_key,
                source,
            } => write!(
                f,
                "cannot decrypt {table}.{column} of the row with primary key {primary_key}: {source}"
            ),
            Error::Decode {
                table,
                column,
                primary_key,
                reason,
            } => write!(
                f,
                "cannot decode {table}.{column} of the row with primary key {primary_key}: {reason}"
            ),
            Error::Database(e) => write!(f, "database: {e}"),
            Error::Schema {
                table,
                column,
                reason,
            } => write!(f, "{table}.{column}: {reason}"),
            Error::NotFound { table, primary_key } => {
                write!(f, "no row of {table} with primary key {primary_key} in this tenant")
            }
            Error::Conflict { table, primary_key } => write!(
                f,
                "the row of {table} with primary key {primary_key} changed while it was \
                 updated (a rotation or another writer); nothing was written, read it again \
                 and retry"
            ),
            Error::Serialize { column, reason } => {
                write!(f, "cannot serialize the value of {column}: {reason}")
            }
            Error::Worker => {
                f.write_str("a crypto worker failed (a bug: a panic while sealing or opening)")
            }
            Error::UniqueViolation {
                table,
                index,
                fields,
            } => write!(
                f,
                "{table}: another row already has this {} (unique blind index {index})",
                fields.join(", ")
            ),
            Error::TenantMismatch { table, primary_key } => write!(
                f,
                "the row of {table} with primary key {primary_key} belongs to another tenant \
                 than the one asked for; not decrypted"
            ),
            Error::UnsupportedRegistryFormat { table, format } => write!(
                f,
                "the schema registry entry of {table} has format {format}, which this \
                 rowseal does not read"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Provider(e) => Some(e),
            Error::Store {
                source: Some(s), ..
            } => Some(s.as_ref()),
            Error::Field { source, .. } => Some(source.as_ref()),
            Error::Database(d) => Some(d.get_ref()),
            _ => None,
        }
    }
}

impl From<ProviderError> for Error {
    fn from(e: ProviderError) -> Self {
        Error::Provider(e)
    }
}

/// What kind of failure an [`Error`] is ([`Error::kind`]): what a service
/// branches on, rather than on variants.
///
/// | kind | typical answer |
/// |---|---|
/// | `Tampered` | 500 and an alert: stored data does not authenticate |
/// | `KeyDestroyed` | 410: the tenant was crypto-shredded |
/// | `ProviderUnavailable` | 503, retry: the key provider is down, throttling or slow |
/// | `AccessDenied` | 500 and an alert: the provider refuses the key (policy, disabled key, not allowed) |
/// | `Conflict` | 409 or retry: the row changed under a read-modify-write (a rotation, another writer) |
/// | `UniqueViolation` | 409: a unique value is taken |
/// | `NotFound` | 404 |
/// | `Database` | 500, or 503 when [`Error::is_retryable`] (the database could not be reached) |
/// | `InvalidInput` | 400: the caller's argument is invalid |
/// | `Configuration` | 500: the deployment is wrong (key configuration, schema, a format this build does not read) |
/// | `Internal` | 500: a bug |
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Stored data failed authentication or is not rowseal's: tampered,
    /// moved from another row, column or tenant, truncated. Never a
    /// transient condition: alert on it.
    Tampered,
    /// The key that protected the data was destroyed (crypto-shredded).
    KeyDestroyed,
    /// The key provider is unreachable, throttling or timed out (after
    /// retries): transient, retry later.
    ProviderUnavailable,
    /// The key provider refuses the key: access denied, the key disabled or
    /// not found at the provider, or not on the allow-list. Not transient.
    AccessDenied,
    /// The row changed between read and write (a rotation re-sealed it,
    /// another writer updated it): read again and retry.
    Conflict,
    /// A unique value is already taken.
    UniqueViolation,
    /// No such row.
    NotFound,
    /// The database (or the key store in it) failed.
    Database,
    /// An argument is invalid.
    InvalidInput,
    /// The deployment is misconfigured: key configuration, a schema that
    /// does not fit the model, a format this build does not read.
    Configuration,
    /// A bug (a worker thread panicked).
    Internal,
}

impl ErrorKind {
    /// Whether a later attempt may succeed: a provider outage or a lost
    /// race. ([`Error::is_retryable`] also counts a database that could not
    /// be reached.)
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::ProviderUnavailable | ErrorKind::Conflict)
    }
}

impl From<ProviderErrorKind> for ErrorKind {
    fn from(k: ProviderErrorKind) -> Self {
        match k {
            ProviderErrorKind::Throttled
            | ProviderErrorKind::Unavailable
            | ProviderErrorKind::Timeout
            | ProviderErrorKind::Sealed
            | ProviderErrorKind::Other => ErrorKind::ProviderUnavailable,
            ProviderErrorKind::AccessDenied
            | ProviderErrorKind::KeyDisabled
            | ProviderErrorKind::KeyNotFound
            | ProviderErrorKind::KeyNotAllowed => ErrorKind::AccessDenied,
            // The provider refused a wrapped key as not its own, changed, or
            // under another context: the stored data changed.
            ProviderErrorKind::InvalidCiphertext => ErrorKind::Tampered,
            ProviderErrorKind::Config => ErrorKind::Configuration,
        }
    }
}

/// What kind of failure a key provider reported.
///
/// Providers map their own errors onto these kinds, so that callers can react the
/// same way to AWS KMS and to the local keyring.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// The caller is not allowed to use the key. Never retried.
    AccessDenied,
    /// The key is disabled or pending deletion. Never retried.
    KeyDisabled,
    /// The key does not exist (or the caller may not know that it does).
    KeyNotFound,
    /// The provider refused the ciphertext: it was not made by this key, was
    /// changed, or was made under another encryption context. Never retried.
    InvalidCiphertext,
    /// The provider asked us to slow down, and did so again after every retry.
    Throttled,
    /// The provider could not be reached or answered with a server error, after
    /// retries.
    Unavailable,
    /// The provider did not answer within the configured timeout.
    Timeout,
    /// The key service is sealed (Vault, OpenBao): no key can be used until an
    /// operator unseals it. Retried, like an outage.
    Sealed,
    /// The provider is misconfigured (region, endpoint, credentials missing).
    Config,
    /// The wrapped key names a root key that is not on the provider's
    /// allow-list (for example a key id written into the database by someone
    /// else). Refused before the provider is asked; never retried.
    KeyNotAllowed,
    /// Anything else.
    Other,
}

impl ProviderErrorKind {
    /// Whether a later attempt could succeed (throttling, outages, timeouts).
    /// Permission and ciphertext errors are final.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ProviderErrorKind::Throttled
                | ProviderErrorKind::Unavailable
                | ProviderErrorKind::Timeout
                | ProviderErrorKind::Sealed
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::AccessDenied => "access denied",
            ProviderErrorKind::KeyDisabled => "key disabled or pending deletion",
            ProviderErrorKind::KeyNotFound => "key not found",
            ProviderErrorKind::InvalidCiphertext => "invalid ciphertext or encryption context",
            ProviderErrorKind::Throttled => "throttled",
            ProviderErrorKind::Unavailable => "unavailable",
            ProviderErrorKind::Timeout => "timed out",
            ProviderErrorKind::Sealed => "sealed",
            ProviderErrorKind::Config => "misconfigured",
            ProviderErrorKind::KeyNotAllowed => "root key not allowed",
            ProviderErrorKind::Other => "failed",
        }
    }
}

/// An error from a [`KeyProvider`](crate::KeyProvider).
///
/// Carries a [`ProviderErrorKind`], the root key it concerns (an id, ARN or alias,
/// never key bytes), a message and optionally the provider's own error as source.
#[derive(Debug, Clone)]
pub struct ProviderError {
    kind: ProviderErrorKind,
    key_id: Option<String>,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ProviderError {
    /// A new error of `kind`. The message must not contain secrets.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            key_id: None,
            message: message.into(),
            source: None,
        }
    }

    /// Names the root key the error concerns.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Attaches the provider's own error.
    pub fn with_source<E>(mut self, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.source = Some(Arc::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ProviderErrorKind {
        self.kind
    }

    /// The root key concerned, if known.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if let Some(k) = &self.key_id {
            write!(f, " (key {k})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// rowseal's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A key-store failure says why on its one line: the cause used to be
    /// only down the `source()` chain, so a log showed `key store:
    /// rowseal_keys` and nothing else.
    #[test]
    fn a_store_error_shows_its_cause() {
        let cause = std::io::Error::other("value too long for type character varying(255)");
        let e = Error::store("rowseal_keys", cause);
        assert_eq!(
            e.to_string(),
            "key store: rowseal_keys: value too long for type character varying(255)"
        );
        assert!(std::error::Error::source(&e).is_some());
        let bare = Error::Store {
            message: "no key".into(),
            source: None,
        };
        assert_eq!(bare.to_string(), "key store: no key");
    }
}
