//! Mapping Vault answers and transport failures onto [`ProviderErrorKind`].

use std::fmt;

use rowseal_core::ProviderErrorKind;

use crate::counts::TransitOperation;

/// What Vault (or the network) said, attached as the
/// [`source`](std::error::Error::source) of every
/// [`ProviderError`](rowseal_core::ProviderError) this crate returns:
///
/// ```
/// # fn f(e: &rowseal_core::ProviderError) {
/// use rowseal_vault::TransitError;
/// if let Some(v) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<TransitError>()) {
///     eprintln!("{} {:?} {}", v.operation(), v.http_status(), v.message());
/// }
/// # }
/// ```
///
/// It holds the HTTP status and Vault's error messages, never a request or
/// response body (those carry key material).
#[derive(Clone, PartialEq, Eq)]
pub struct TransitError {
    pub(crate) operation: TransitOperation,
    pub(crate) http_status: Option<u16>,
    pub(crate) message: String,
    pub(crate) attempts: u32,
}

impl TransitError {
    /// The operation that failed.
    pub fn operation(&self) -> TransitOperation {
        self.operation
    }

    /// The HTTP status, if Vault answered.
    pub fn http_status(&self) -> Option<u16> {
        self.http_status
    }

    /// Vault's error messages (joined with `; `), or the transport's.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// HTTP requests made before giving up (1 for a final error).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for TransitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vault Transit {}", self.operation)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(status) = self.http_status {
            write!(f, " (HTTP {status})")?;
        }
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(f, " after {} attempt{plural}", self.attempts)
    }
}

impl fmt::Debug for TransitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for TransitError {}

/// One failed attempt, classified.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ProviderErrorKind,
    pub(crate) http_status: Option<u16>,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            http_status: None,
            message: message.into(),
        }
    }
}

/// Classifies an error answer from Vault by status and message.
///
/// Vault answers most Transit refusals with 400 and a message; the messages
/// matched here are those of Vault's and OpenBao's transit backend
/// (`builtin/logical/transit`), checked against a real OpenBao server by this
/// crate's tests.
pub(crate) fn classify(op: TransitOperation, status: u16, errors: &[String]) -> Failure {
    use ProviderErrorKind as K;
    let message = errors.join("; ");
    let lower = message.to_ascii_lowercase();
    let kind = match status {
        403 => K::AccessDenied,
        429 => K::Throttled,
        503 if lower.contains("sealed") => K::Sealed,
        // 412: a performance standby has not caught up yet; 502/504: a proxy
        // in front of Vault; 503: standby or shutting down.
        412 | 500 | 502 | 503 | 504 => K::Unavailable,
        404 => K::KeyNotFound,
        400 if lower.contains("key not found") || lower.contains("no existing key") => {
            K::KeyNotFound
        }
        400 if lower.contains("disallowed by policy")
            || lower.contains("is not allowed")
            || lower.contains("soft deleted")
            || lower.contains("soft-deleted") =>
        {
            K::KeyDisabled
        }
        400 if matches!(op, TransitOperation::Decrypt | TransitOperation::Rewrap)
            && (lower.contains("cipher")
                || lower.contains("invalid ciphertext")
                || lower.contains("message authentication")
                || lower.contains("base64")
                || lower.contains("context")) =>
        {
            K::InvalidCiphertext
        }
        400 | 405 => K::Config,
        _ if status >= 500 => K::Unavailable,
        _ => K::Other,
    };
    Failure {
        kind,
        http_status: Some(status),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(op: TransitOperation, status: u16, msg: &str) -> ProviderErrorKind {
        classify(op, status, &[msg.to_owned()]).kind
    }

    #[test]
    fn statuses_and_messages_map_to_kinds() {
        use ProviderErrorKind as K;
        use TransitOperation as O;
        assert_eq!(kind(O::Decrypt, 403, "permission denied"), K::AccessDenied);
        assert_eq!(
            kind(O::DataKey, 429, "rate limit quota exceeded"),
            K::Throttled
        );
        assert_eq!(kind(O::Decrypt, 503, "Vault is sealed"), K::Sealed);
        assert_eq!(kind(O::Decrypt, 503, "standby"), K::Unavailable);
        assert_eq!(
            kind(O::Decrypt, 400, "encryption key not found"),
            K::KeyNotFound
        );
        assert_eq!(
            kind(O::Decrypt, 400, "cipher: message authentication failed"),
            K::InvalidCiphertext
        );
        assert_eq!(
            kind(O::Decrypt, 400, "invalid ciphertext length"),
            K::InvalidCiphertext
        );
        assert_eq!(
            kind(
                O::Decrypt,
                400,
                "ciphertext version is disallowed by policy (too old)"
            ),
            K::KeyDisabled
        );
        assert_eq!(kind(O::DataKey, 400, "something else"), K::Config);
        assert_eq!(
            kind(O::Decrypt, 404, "no handler for route"),
            K::KeyNotFound
        );
        assert!(K::Sealed.is_retryable());
        assert!(!K::InvalidCiphertext.is_retryable());
    }
}
