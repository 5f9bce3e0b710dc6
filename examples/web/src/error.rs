//! HTTP errors: every failure becomes a status and a small JSON body,
//! `{"error": "<code>", "message": "<text>"}` (plus `"field"` for a conflict).
//!
//! A body never holds a submitted or stored value, a key, a ciphertext, or
//! the internals of a database or key-provider failure: those go to the
//! server's log (stderr) only, and rowseal's own errors never carry values or
//! key material either.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rowseal::{Error, ErrorKind};
use serde_json::json;

/// An error answered to a client.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, a missing or invalid field,
    /// header or id). The message describes what is expected, never the value
    /// that was sent.
    BadRequest(&'static str),
    /// 404: no such row in the caller's tenant (rows of other tenants are
    /// indistinguishable from rows that do not exist).
    NotFound,
    /// 409: a unique field already has this value in the tenant.
    Conflict {
        /// The field, e.g. `email`.
        field: String,
    },
    /// 409: the record changed while this request updated it (a key
    /// rotation, another writer); nothing was written, retry.
    Changed,
    /// 410: the tenant's keys were destroyed (crypto-shredded).
    Gone,
    /// 500: stored data does not decrypt (tampering, a moved ciphertext) or
    /// another failure that is not the client's.
    Internal,
    /// 503: the database or the key provider is unavailable, throttled or
    /// timed out; retrying later may work.
    Unavailable,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } | ApiError::Changed => StatusCode::CONFLICT,
            ApiError::Gone => StatusCode::GONE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::BadRequest(message) => json!({"error": "bad_request", "message": message}),
            ApiError::NotFound => json!({"error": "not_found", "message": "no such resource"}),
            ApiError::Conflict { field } => json!({
                "error": "conflict",
                "field": field,
                "message": format!("another patient of this tenant already has this {field}"),
            }),
            ApiError::Changed => json!({
                "error": "changed",
                "message": "the record changed while it was updated; nothing was written, retry",
            }),
            ApiError::Gone => json!({
                "error": "gone",
                "message": "this tenant's data was destroyed",
            }),
            ApiError::Internal => json!({"error": "internal", "message": "internal error"}),
            ApiError::Unavailable => json!({
                "error": "unavailable",
                "message": "a backing service is unavailable; retry later",
            }),
        };
        (status, Json(body)).into_response()
    }
}

fn log(what: &str, e: &dyn std::fmt::Display) {
    // rowseal's errors name tables, columns, primary keys and key ids, never
    // values or key bytes, so they may be logged. Real applications send this
    // to their tracing pipeline.
    eprintln!("web-example: {what}: {e}");
}

impl From<Error> for ApiError {
    /// One match on the error's kind: rowseal classifies a failure by its
    /// cause (a key-provider outage while opening a row is
    /// `ProviderUnavailable`, not tampering; a shredded tenant's rows are
    /// `KeyDestroyed`), so nothing here looks inside variants.
    fn from(e: Error) -> Self {
        let api = match e.kind() {
            ErrorKind::NotFound => ApiError::NotFound,
            ErrorKind::UniqueViolation => ApiError::Conflict {
                field: match &e {
                    Error::UniqueViolation { fields, .. } => fields.join(","),
                    _ => "id".into(),
                },
            },
            ErrorKind::KeyDestroyed => ApiError::Gone,
            ErrorKind::InvalidInput => ApiError::BadRequest("invalid request"),
            ErrorKind::Conflict => ApiError::Changed,
            ErrorKind::ProviderUnavailable => ApiError::Unavailable,
            _ if e.is_retryable() => ApiError::Unavailable,
            // Tampered, AccessDenied, Configuration, Database, Internal: not
            // the client's doing; the log says which.
            _ => ApiError::Internal,
        };
        log("request failed", &e);
        api
    }
}

/// The service's own queries: classified by rowseal's one error type (a
/// pool timeout is retryable, a unique violation is a conflict).
impl From<rowseal::sqlx::Error> for ApiError {
    fn from(e: rowseal::sqlx::Error) -> Self {
        Error::from(e).into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rowseal::{ProviderError, ProviderErrorKind};

    #[test]
    fn statuses() {
        let unique = Error::UniqueViolation {
            table: "patients".into(),
            index: "email_idx".into(),
            fields: vec!["email".into()],
        };
        let e = ApiError::from(unique);
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert!(matches!(e, ApiError::Conflict { ref field } if field == "email"));
        let throttled = rowseal::Error::Provider(ProviderError::new(
            ProviderErrorKind::Throttled,
            "slow down",
        ));
        assert_eq!(
            ApiError::from(throttled).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let denied =
            rowseal::Error::Provider(ProviderError::new(ProviderErrorKind::AccessDenied, "no"));
        assert_eq!(
            ApiError::from(denied).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::from(rowseal::sqlx::Error::PoolTimedOut).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // A shredded tenant: its rows' keys are destroyed.
        let destroyed = Error::Field {
            table: "patients".into(),
            column: "rowseal_header".into(),
            primary_key: "1".into(),
            source: Box::new(rowseal::Error::KeyDestroyed {
                key: "tenant key, tenant t, v1".into(),
            }),
        };
        assert_eq!(ApiError::from(destroyed).status(), StatusCode::GONE);
        // A sealed row of another tenant, refused by `open`.
        let theirs = Error::TenantMismatch {
            table: "patients".into(),
            primary_key: "1".into(),
        };
        assert_eq!(
            ApiError::from(theirs).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        // The key provider down while a row's key is unwrapped: retry, not
        // tampering.
        let outage = Error::Field {
            table: "patients".into(),
            column: "rowseal_header".into(),
            primary_key: "1".into(),
            source: Box::new(rowseal::Error::Provider(ProviderError::new(
                ProviderErrorKind::Unavailable,
                "connection refused",
            ))),
        };
        assert_eq!(
            ApiError::from(outage).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let raced = Error::Conflict {
            table: "patients".into(),
            primary_key: "1".into(),
        };
        assert_eq!(ApiError::from(raced).status(), StatusCode::CONFLICT);
        let tampered = Error::Field {
            table: "patients".into(),
            column: "name".into(),
            primary_key: "1".into(),
            source: Box::new(rowseal::Error::Decrypt),
        };
        assert_eq!(
            ApiError::from(tampered).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
