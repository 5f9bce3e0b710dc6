//! The sqlx layer returns rowseal's one error type, [`rowseal_core::Error`]
//! (re-exported here and by the `rowseal` facade): a database failure is its
//! [`Error::Database`](rowseal_core::Error::Database) variant, converted from
//! `sqlx::Error` by `?` and classified (unique violation, retryable) once.

pub use rowseal_core::{Error, Result};

#[cfg(test)]
mod tests {
    use super::*;
    use rowseal_core::{ErrorKind, ProviderError, ProviderErrorKind};

    fn opening(source: rowseal_core::Error) -> Error {
        Error::Field {
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
        let timed_out = Error::from(sqlx::Error::PoolTimedOut);
        assert!(timed_out.is_retryable());
        assert_eq!(timed_out.kind(), ErrorKind::Database);
        assert!(matches!(
            timed_out.as_sqlx(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        assert_eq!(
            timed_out.to_string(),
            "database: pool timed out while waiting for an open connection"
        );
        assert!(!Error::from(sqlx::Error::RowNotFound).is_retryable());
        let conflict = Error::Conflict {
            table: "t".into(),
            primary_key: "1".into(),
        };
        assert!(conflict.is_retryable());
        assert_eq!(Error::Worker.kind(), ErrorKind::Internal);
    }
}
