//! The endpoints. Every one except `/health` is scoped to the tenant named
//! by the `X-Tenant-Id` header.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /patients` | create a patient (201) |
//! | `GET /patients/{id}` | read one (404 if not in this tenant) |
//! | `PUT /patients/{id}` | replace its fields, re-encrypted under a fresh row key |
//! | `DELETE /patients/{id}` | delete it and its records (204) |
//! | `POST /patients/search` | find by `email` or `ssn` (blind indexes) |
//! | `POST /patients/{id}/records` | add a medical record (201) |
//! | `GET /patients/{id}/records` | list the patient's records |
//!
//! Lookups are `POST` with a JSON body on purpose: an e-mail or an SSN in a
//! URL would end up in access logs and proxies.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use rowseal::Encryptor;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use crate::error::ApiError;
use crate::models::{
    valid_email, valid_ssn, MedicalRecord, Patient, PatientInput, PatientView, RecordInput,
    RecordView, SearchInput,
};
use crate::{with_db, AppState};

/// The request header that names the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/patients", post(create_patient))
        .route("/patients/search", post(search_patients))
        .route(
            "/patients/{id}",
            get(get_patient).put(update_patient).delete(delete_patient),
        )
        .route("/patients/{id}/records", post(add_record).get(list_records))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// The caller's tenant, from the `X-Tenant-Id` header.
///
/// This example trusts the header so that it can be driven with curl. A real
/// application must take the tenant from its authentication (a verified
/// session or token), never from something the client chooses: rowseal binds
/// every ciphertext to the tenant it is given, and isolates tenants only as
/// well as the application names them.
///
/// Tenant ids are identifiers (1 to 64 ASCII letters, digits, `-`, `_`,
/// `.`): they go into the KMS encryption context, which KMS logs in clear.
pub struct Tenant(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        const EXPECTED: &str =
            "X-Tenant-Id header: a tenant id expected (1 to 64 letters, digits, '-', '_', '.')";
        let value = parts
            .headers
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::BadRequest(EXPECTED))?;
        if value.is_empty()
            || value.len() > 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ApiError::BadRequest(EXPECTED));
        }
        Ok(Tenant(value.to_owned()))
    }
}

/// Parses a JSON body. The error says what was expected, never what was sent
/// (serde's messages can quote the offending value).
fn parse<T: DeserializeOwned>(body: &[u8], expected: &'static str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::BadRequest(expected))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::BadRequest("id: a UUID expected"))
}

const PATIENT_BODY: &str =
    "body: JSON {\"name\", \"email\", \"ssn\" (optional), \"birth_date\" (optional, YYYY-MM-DD)} expected";

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn create_patient(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let input: PatientInput = parse(&body, PATIENT_BODY)?;
    let patient = Patient::from_input(Uuid::new_v4(), &tenant, input)?;
    with_db!(&st.db, |pool, DB| st.rowseal.insert(pool, &patient).await)?;
    let location = format!("/patients/{}", patient.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(patient.view()),
    ))
}

async fn get_patient(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<PatientView>, ApiError> {
    let id = parse_id(&id)?;
    let patient = with_db!(&st.db, |pool, DB| {
        st.rowseal.fetch::<Patient, _>(pool, &tenant, &id).await
    })?;
    patient.map(|p| Json(p.view())).ok_or(ApiError::NotFound)
}

async fn update_patient(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PatientView>, ApiError> {
    let id = parse_id(&id)?;
    let input: PatientInput = parse(&body, PATIENT_BODY)?;
    let patient = Patient::from_input(id, &tenant, input)?;
    // Every field re-encrypted under a fresh row key; only a row of this
    // tenant is matched (else 404).
    with_db!(&st.db, |pool, DB| st.rowseal.update(pool, &patient).await)?;
    Ok(Json(patient.view()))
}

async fn delete_patient(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let deleted = with_db!(&st.db, |pool, DB| {
        let mut tx = pool.begin().await?;
        rowseal::sqlx::query(
            "DELETE FROM medical_records WHERE tenant_id = $1 AND patient_id = $2",
        )
        .bind(&tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let deleted = st
            .rowseal
            .delete::<Patient, _>(&mut *tx, &tenant, &id)
            .await?;
        if deleted {
            tx.commit().await?;
        }
        Ok::<bool, ApiError>(deleted)
    })?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

async fn search_patients(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<Json<Vec<PatientView>>, ApiError> {
    const EXPECTED: &str = "body: JSON {\"email\"} or {\"ssn\"} expected";
    let input: SearchInput = parse(&body, EXPECTED)?;
    let rowseal = &st.rowseal;
    let found = match (input.email, input.ssn) {
        (Some(email), None) => {
            if !valid_email(email.trim()) {
                return Err(ApiError::BadRequest("email: an e-mail address expected"));
            }
            // Normalized (trim, lowercase) and HMAC-ed under this tenant's
            // index key; candidates are decrypted and re-checked.
            with_db!(&st.db, |pool, DB| {
                Patient::find_by_email(rowseal, pool, &tenant, &email).await
            })?
        }
        (None, Some(ssn)) => {
            if !valid_ssn(&ssn) {
                return Err(ApiError::BadRequest(
                    "ssn: 9 digits expected (123-45-6789 or 123456789)",
                ));
            }
            with_db!(&st.db, |pool, DB| {
                Patient::find_by_ssn(rowseal, pool, &tenant, &ssn).await
            })?
        }
        _ => return Err(ApiError::BadRequest(EXPECTED)),
    };
    Ok(Json(found.iter().map(Patient::view).collect()))
}

async fn patient_exists(st: &AppState, tenant: &str, id: Uuid) -> Result<bool, ApiError> {
    // A plain query on the plain columns: no decryption needed.
    Ok(with_db!(&st.db, |pool, DB| {
        rowseal::sqlx::query("SELECT 1 FROM patients WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?
            .is_some()
    }))
}

async fn add_record(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let patient_id = parse_id(&id)?;
    let input: RecordInput = parse(
        &body,
        "body: JSON {\"note\", \"diagnosis_code\" (optional)} expected",
    )?;
    let record = MedicalRecord::from_input(Uuid::new_v4(), &tenant, patient_id, Utc::now(), input)?;
    if !patient_exists(&st, &tenant, patient_id).await? {
        return Err(ApiError::NotFound);
    }
    with_db!(&st.db, |pool, DB| st.rowseal.insert(pool, &record).await)?;
    Ok((StatusCode::CREATED, Json(record.view())))
}

async fn list_records(
    State(st): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Vec<RecordView>>, ApiError> {
    let patient_id = parse_id(&id)?;
    if !patient_exists(&st, &tenant, patient_id).await? {
        return Err(ApiError::NotFound);
    }
    let records: Vec<MedicalRecord> = with_db!(&st.db, |pool, DB| {
        // Your own query: select the model's columns, rowseal decrypts.
        let sql = format!(
            "SELECT {} FROM medical_records WHERE tenant_id = $1 AND patient_id = $2 \
             ORDER BY created_at_ms, id",
            Encryptor::select_list::<MedicalRecord, DB>()
        );
        st.rowseal
            .fetch_all(
                &tenant,
                rowseal::sqlx::query(&sql).bind(&tenant).bind(patient_id),
                pool,
            )
            .await
    })?;
    Ok(Json(records.iter().map(MedicalRecord::view).collect()))
}
