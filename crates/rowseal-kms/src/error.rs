//! Mapping KMS and transport failures onto [`ProviderErrorKind`].

use std::fmt;

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use rowseal_core::ProviderErrorKind;

use crate::counts::KmsOperation;

/// What KMS (or the network) said, attached as the
/// [`source`](std::error::Error::source) of every
/// [`ProviderError`](rowseal_core::ProviderError) this crate returns. Downcast
/// to it for the AWS error code and request id:
///
/// ```
/// # fn f(e: &rowseal_core::ProviderError) {
/// use rowseal_kms::AwsKmsError;
/// if let Some(aws) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<AwsKmsError>()) {
///     eprintln!("{:?} {:?}", aws.code(), aws.request_id());
/// }
/// # }
/// ```
///
/// It holds the error code, the service's message, the HTTP status and the
/// request id, never a request or response body (a response body can hold key
/// material).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKmsError {
    pub(crate) operation: KmsOperation,
    pub(crate) region: String,
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) http_status: Option<u16>,
    pub(crate) request_id: Option<String>,
    pub(crate) attempts: u32,
}

impl AwsKmsError {
    /// The operation that failed.
    pub fn operation(&self) -> KmsOperation {
        self.operation
    }

    /// The region of the client that made the call.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The AWS error code (`"AccessDeniedException"`, ...), if KMS answered.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The service's or the transport's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status, if KMS answered.
    pub fn http_status(&self) -> Option<u16> {
        self.http_status
    }

    /// The AWS request id of the last attempt, for AWS support and CloudTrail.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// HTTP requests made before giving up (1 for a final error).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl fmt::Display for AwsKmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KMS {} in {}", self.operation, self.region)?;
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(status) = self.http_status {
            write!(f, " (HTTP {status})")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        let plural = if self.attempts == 1 { "" } else { "s" };
        write!(f, " after {} attempt{plural}", self.attempts)
    }
}

impl fmt::Debug for AwsKmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for AwsKmsError {}

/// One failed attempt, classified.
pub(crate) struct Failure {
    pub(crate) kind: ProviderErrorKind,
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) http_status: Option<u16>,
    pub(crate) request_id: Option<String>,
}

/// The kind of a KMS error code (the `__type` of a JSON error body), if the
/// code alone decides it.
pub(crate) fn kind_of_code(code: &str) -> Option<ProviderErrorKind> {
    use ProviderErrorKind as K;
    Some(match code {
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "InvalidGrantTokenException"
        | "KMSInvalidSignatureException" => K::AccessDenied,
        "DisabledException" | "KMSInvalidStateException" => K::KeyDisabled,
        "NotFoundException" | "InvalidArnException" => K::KeyNotFound,
        "InvalidCiphertextException" | "IncorrectKeyException" => K::InvalidCiphertext,
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "RequestThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        // KMS documents request-rate quotas as ThrottlingException, but some
        // compatible servers (and old KMS answers) use LimitExceededException.
        | "LimitExceededException"
        | "ProvisionedThroughputExceededException"
        | "SlowDown"
        | "EC2ThrottledException"
        | "TransactionInProgressException"
        | "PriorRequestNotComplete" => K::Throttled,
        "KMSInternalException"
        | "KeyUnavailableException"
        | "DependencyTimeoutException"
        | "InternalFailure"
        | "InternalError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => K::Unavailable,
        "InvalidKeyUsageException"
        | "UnsupportedOperationException"
        | "ValidationException"
        | "InvalidRegionException"
        | "CustomKeyStoreInvalidStateException" => K::Config,
        _ => return None,
    })
}

/// The kind of an HTTP status without a known error code.
fn kind_of_status(status: u16) -> ProviderErrorKind {
    match status {
        401 | 403 => ProviderErrorKind::AccessDenied,
        404 => ProviderErrorKind::KeyNotFound,
        429 => ProviderErrorKind::Throttled,
        500..=599 => ProviderErrorKind::Unavailable,
        _ => ProviderErrorKind::Other,
    }
}

/// Classifies an SDK error. Only the error code, the service's message and the
/// status are kept: the raw response is dropped here.
pub(crate) fn classify<E>(err: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let http_status = err.raw_response().map(|r| r.status().as_u16());
    let request_id = err.request_id().map(str::to_owned);
    let (kind, code, message) = match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_owned);
            let kind = code
                .as_deref()
                .and_then(kind_of_code)
                .unwrap_or_else(|| http_status.map_or(ProviderErrorKind::Other, kind_of_status));
            (kind, code, e.message().unwrap_or_default().to_owned())
        }
        SdkError::TimeoutError(_) => (
            ProviderErrorKind::Timeout,
            None,
            "no answer within the attempt timeout".to_owned(),
        ),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                ProviderErrorKind::Timeout
            } else if d.is_user() {
                ProviderErrorKind::Config
            } else if d.is_io() {
                ProviderErrorKind::Unavailable
            } else {
                // Credential and signing failures also surface here.
                identity_failure(err).unwrap_or(ProviderErrorKind::Unavailable)
            };
            let message = d
                .as_connector_error()
                .map(|c| DisplayErrorContext(c).to_string())
                .unwrap_or_else(|| "request could not be sent".to_owned());
            (kind, None, message)
        }
        SdkError::ResponseError(_) => (
            // A truncated or unparsable answer: the body is not quoted, it
            // may hold key material.
            http_status.map_or(ProviderErrorKind::Unavailable, |s| {
                if s >= 500 || s == 429 {
                    kind_of_status(s)
                } else {
                    ProviderErrorKind::Unavailable
                }
            }),
            None,
            "unreadable response".to_owned(),
        ),
        SdkError::ConstructionFailure(_) => (
            // Missing credentials or region end up here; no response exists,
            // so the error chain holds no key material.
            ProviderErrorKind::Config,
            None,
            DisplayErrorContext(err).to_string(),
        ),
        _ => (ProviderErrorKind::Other, None, err.to_string()),
    };
    Failure {
        kind,
        code,
        message,
        http_status,
        request_id,
    }
}

/// The kind of a failure to obtain credentials or sign the request, found in
/// the error's source chain.
fn identity_failure(err: &(dyn std::error::Error + 'static)) -> Option<ProviderErrorKind> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(match c {
                CredentialsError::ProviderTimedOut(_) => ProviderErrorKind::Timeout,
                CredentialsError::ProviderError(_) => ProviderErrorKind::Unavailable,
                CredentialsError::CredentialsNotLoaded(_)
                | CredentialsError::InvalidConfiguration(_) => ProviderErrorKind::Config,
                _ => ProviderErrorKind::Other,
            });
        }
        // The SDK's "no identity resolver for sigv4" error type is private;
        // its message is the only handle on it.
        if e.to_string().contains("failed to select an auth scheme") {
            return Some(ProviderErrorKind::Config);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_errors_are_not_retryable() {
        for code in [
            "AccessDeniedException",
            "DisabledException",
            "KMSInvalidStateException",
            "NotFoundException",
            "InvalidCiphertextException",
            "IncorrectKeyException",
        ] {
            let kind = kind_of_code(code);
            assert!(kind.is_some(), "{code}");
            assert!(!kind.is_some_and(|k| k.is_retryable()), "{code}");
        }
        assert_eq!(
            kind_of_code("DisabledException"),
            Some(ProviderErrorKind::KeyDisabled)
        );
        assert_eq!(
            kind_of_code("IncorrectKeyException"),
            Some(ProviderErrorKind::InvalidCiphertext)
        );
    }

    #[test]
    fn transient_errors_are_retryable() {
        for code in [
            "ThrottlingException",
            "KMSInternalException",
            "DependencyTimeoutException",
        ] {
            assert!(
                kind_of_code(code).is_some_and(|k| k.is_retryable()),
                "{code}"
            );
        }
        assert!(kind_of_status(503).is_retryable());
        assert!(kind_of_status(429).is_retryable());
        assert!(!kind_of_status(400).is_retryable());
    }
}
