//! The error type of the sqlx layer.

use std::fmt;

use rowseal_core::ErrorKind;

/// Everything that can go wrong in the sqlx layer.
///
/// No variant ever carries plaintext or key bytes. A failed decryption names
/// the table, the column and the row's primary key (stored in the clear), and
/// nothing about the value.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// A field of a row could not be decrypted or decoded: the ciphertext, the
    /// row header or the key does not match (tampering, a ciphertext moved from
    /// another row, column or tenant, a destroyed key), or the decrypted bytes
    /// are not a value of the field's type.
    Decrypt {
        /// The table.
        table: String,
        /// The column (`rowseal_header` when the row's key header itself failed).
        column: String,
        /// The row's primary key, as text.
        primary_key: String,
        /// What failed: a core error (for an authentication failure always the
        /// opaque [`rowseal_core::Error::Decrypt`]).
        source: Box<rowseal_core::Error>,
    },
    /// The decrypted value is not a value of the field's type.
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
    /// The crypto core failed (key provider, key store, invalid input).
    Core(rowseal_core::Error),
    /// The database failed.
    Sqlx(sqlx::Error),
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
    /// ([`Encryptor::update_fields`](crate::Encryptor::update_fields)): a
    /// rotation re-sealed it, or another writer updated it. Nothing was
    /// written; read the row again and retry.
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
    /// An argument is invalid (for example an unknown field name).
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A decryption worker thread failed.
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

impl Error {
    /// Whether this is a failure to decrypt or decode a stored value, of any
    /// cause: tampering, but also a destroyed key or a key-provider outage
    /// while the row's key was fetched. [`kind`](Self::kind) tells them
    /// apart; [`is_tampered`](Self::is_tampered) is the one to alert on.
    pub fn is_decrypt(&self) -> bool {
        matches!(self, Error::Decrypt { .. } | Error::Decode { .. })
    }

    /// What kind of failure this is (see [`ErrorKind`]): what a service
    /// branches on. A decryption failure is classified by its cause, so a
    /// key-provider outage while opening a row is
    /// [`ErrorKind::ProviderUnavailable`], not [`ErrorKind::Tampered`].
    ///
    /// ```
    /// use rowseal_sqlx::{Error, ErrorKind};
    /// let e = Error::NotFound { table: "patients".into(), primary_key: "7".into() };
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Decrypt { source, .. } => source.kind(),
            Error::Core(e) => e.kind(),
            // Authenticated bytes that are not a value of the field's type:
            // the model's type changed, not the data.
            Error::Decode { .. } => ErrorKind::Configuration,
            Error::Sqlx(e) if is_unique_violation(e) => ErrorKind::UniqueViolation,
            Error::Sqlx(_) => ErrorKind::Database,
            Error::Schema { .. } | Error::UnsupportedRegistryFormat { .. } => {
                ErrorKind::Configuration
            }
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Serialize { .. } | Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Worker => ErrorKind::Internal,
            Error::UniqueViolation { .. } => ErrorKind::UniqueViolation,
            // A row of another tenant came back (a query without its tenant
            // filter, a row moved by a database writer): refused unopened,
            // and worth an alert like tampering.
            Error::TenantMismatch { .. } => ErrorKind::Tampered,
        }
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
        self.kind().is_retryable()
            || matches!(
                self,
                Error::Sqlx(
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::WorkerCrashed
                )
            )
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Decrypt {
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
            Error::Core(e) => write!(f, "{e}"),
            Error::Sqlx(e) => write!(f, "database: {e}"),
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
                "the row of {table} with primary key {primary_key} changed while it was updated (a rotation or another writer); nothing was written, read it again and retry"
            ),
            Error::Serialize { column, reason } => {
                write!(f, "cannot serialize the value of {column}: {reason}")
            }
            Error::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            Error::Worker => f.write_str("a crypto worker failed (a bug: a panic while sealing or opening)"),
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
                "the row of {table} with primary key {primary_key} belongs to another tenant than the one asked for; not decrypted"
            ),
            Error::UnsupportedRegistryFormat { table, format } => write!(
                f,
                "the schema registry entry of {table} has format {format}, which this rowseal does not read"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Decrypt { source, .. } => Some(source.as_ref()),
            Error::Core(e) => Some(e),
            Error::Sqlx(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rowseal_core::Error> for Error {
    fn from(e: rowseal_core::Error) -> Self {
        Error::Core(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Sqlx(e)
    }
}

/// The result type of the sqlx layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use rowseal_core::{ProviderError, ProviderErrorKind};

    fn opening(source: rowseal_core::Error) -> Error {
        Error::Decrypt {
            table: "patients".into(),
            column: "rowseal_header".into(),
            primary_key: "7".into(),
            source: Box::new(source),
        }
    }

    /// A failure while opening a row is classified by its cause: a
    /// key-provider outage is retryable, not tampering (an application
    /// alerting on `is_decrypt` used to page for tampering when KMS was
    /// down); a destroyed key is its own kind.
    #[test]
    fn decryption_failures_are_classified_by_cause() {
        let cases = [
            (rowseal_core::Error::Decrypt, ErrorKind::Tampered),
            (
                ProviderError::new(ProviderErrorKind::Unavailable, "down").into(),
                ErrorKind::ProviderUnavailable,
            ),
            (
                ProviderError::new(ProviderErrorKind::Throttled, "slow down").into(),
                ErrorKind::ProviderUnavailable,
            ),
            (
                ProviderError::new(ProviderErrorKind::AccessDenied, "no").into(),
                ErrorKind::AccessDenied,
            ),
            (
                ProviderError::new(ProviderErrorKind::InvalidCiphertext, "not mine").into(),
                ErrorKind::Tampered,
            ),
            (
                rowseal_core::Error::KeyDestroyed {
                    key: "tenant key, tenant t, v1".into(),
                },
                ErrorKind::KeyDestroyed,
            ),
        ];
        for (source, kind) in cases {
            let e = opening(source);
            assert!(e.is_decrypt());
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.is_tampered(), kind == ErrorKind::Tampered, "{e}");
            assert_eq!(
                e.is_retryable(),
                kind == ErrorKind::ProviderUnavailable,
                "{e}"
            );
        }
    }

    #[test]
    fn database_failures_are_retryable_only_when_unreachable() {
        assert!(Error::Sqlx(sqlx::Error::PoolTimedOut).is_retryable());
        assert_eq!(
            Error::Sqlx(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Database
        );
        assert!(!Error::Sqlx(sqlx::Error::RowNotFound).is_retryable());
        let conflict = Error::Conflict {
            table: "t".into(),
            primary_key: "1".into(),
        };
        assert!(conflict.is_retryable());
        assert_eq!(Error::Worker.kind(), ErrorKind::Internal);
    }
}
