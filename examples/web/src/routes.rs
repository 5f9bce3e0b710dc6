//! The endpoints. Every one except `/health` and `/metrics` is scoped to
//! the tenant (a UUID) named by the `X-Tenant-Id` header.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /patients` | create a patient (201) |
//! | `GET /patients?limit=N` | list the tenant's patients, oldest first, at most N (default 50, at most 5,000) |
//! | `GET /patients/{id}` | read one (404 if not in this tenant) |
//! | `PUT /patients/{id}` | replace its fields, re-encrypted under a fresh row key |
//! | `PATCH /patients/{id}` | change some fields (`Encryptor::update_fields`); 409 `changed` if the row changed meanwhile |
//! | `DELETE /patients/{id}` | delete it and its records (204) |
//! | `POST /patients/search` | find by `email` or `ssn` (blind indexes) |
//! | `POST /patients/{id}/records` | add a medical record (201) |
//! | `GET /patients/{id}/records` | list the patient's records, oldest first |
//! | `GET /records?limit=N` | the tenant's latest records, newest first, each with its patient's name (one join) |
//! | `GET /metrics` | rowseal's metrics, Prometheus text format ([`crate::metrics`]): no tenant, no value |
//!
//! The lists are the app's own `sqlx::query_as!` queries
//! ([`crate::queries`]) into sealed rows, opened for the caller's tenant
//! with `Encryptor::open_all`.
//!
//! Lookups are `POST` with a JSON body on purpose: an e-mail or an SSN in a
//! URL would end up in access logs and proxies.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::error::ApiError;
use crate::models::{
    valid_email, valid_ssn, MedicalRecord, Patient, PatientInput, PatientPatch, PatientView,
    RecordInput, RecordView, RecordWithPatientView, SearchInput,
};
use crate::{queries, with_db, AppState};

/// The request header that names the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The API.
pub fn router(state: AppState) -> Router {
    // The process's `metrics` recorder, before the first request records.
    crate::metrics::install();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::serve))
        .route("/patients", post(create_patient).get(list_patients))
        .route("/patients/search", post(search_patients))
        .route(
            "/patients/{id}",
            get(get_patient)
                .put(update_patient)
                .patch(patch_patient)
                .delete(delete_patient),
        )
        .route("/patients/{id}/records", post(add_record).get(list_records))
        .route("/records", get(list_latest_records))
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
/// Tenants are UUIDs (the models' `tenant_id: Uuid`). A tenant's canonical
/// id, which rowseal binds into ciphertexts and blind indexes and which goes
/// into the KMS encryption context (logged by KMS in clear), is the UUID's
/// lowercase hyphenated form: `X-Tenant-Id` may be written in upper case,
/// it is the same tenant.
pub struct Tenant {
    /// The tenant, as the models and the queries take it.
    pub uuid: Uuid,
    /// Its canonical id (`uuid.to_string()`), as the `Encryptor` takes it.
    pub id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        const EXPECTED: &str = "X-Tenant-Id header: a tenant id expected (a UUID)";
        let uuid = parts
            .headers
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::try_parse(v.trim()).ok())
            .ok_or(ApiError::BadRequest(EXPECTED))?;
        Ok(Tenant {
            uuid,
            id: uuid.to_string(),
        })
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

/// How many rows a list gives without `?limit=`.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest `?limit=` accepted.
pub const MAX_LIMIT: i64 = 5_000;

/// The `limit` of a list's query string (`?limit=N`, 1 to [`MAX_LIMIT`];
/// [`DEFAULT_LIMIT`] without one). Any other parameter is refused, as
/// unknown JSON fields are.
fn limit(uri: &Uri) -> Result<i64, ApiError> {
    const EXPECTED: &str = "query: only ?limit=N expected, N from 1 to 5000";
    let mut limit = None;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("limit", n)) if limit.is_none() => {
                limit = Some(
                    n.parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(ApiError::BadRequest(EXPECTED))?,
                );
            }
            _ => return Err(ApiError::BadRequest(EXPECTED)),
        }
    }
    Ok(limit.unwrap_or(DEFAULT_LIMIT))
}

const PATIENT_BODY: &str =
    "body: JSON {\"name\", \"email\", \"ssn\" (optional), \"birth_date\" (optional, YYYY-MM-DD)} expected";

/// Waits for a turn to read a list's rows ([`AppState::list_reads`]).
async fn list_read(st: &AppState) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    st.list_reads
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable)
}

/// A JSON answer serialized on rowseal's crypto pool (the bounded threads
/// that opened the rows), not on a runtime thread: a list of thousands of
/// rows takes tens of milliseconds to serialize (over 100 ms in a debug
/// build), and on one of the runtime's few threads that would hold up every
/// request queued behind it, `/health` included. No thread is added.
async fn json_off_runtime<T>(st: &AppState, value: T) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
{
    let body = st
        .rowseal
        .crypto_pool()
        .run(move || serde_json::to_vec(&value))
        .await?
        .map_err(|_| ApiError::Internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn create_patient(
    State(st): State<AppState>,
    tenant: Tenant,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let input: PatientInput = parse(&body, PATIENT_BODY)?;
    let now = Utc::now().timestamp_millis();
    let patient = Patient::from_input(Uuid::new_v4(), tenant.uuid, now, input)?;
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
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<PatientView>, ApiError> {
    let id = parse_id(&id)?;
    let patient = with_db!(&st.db, |pool, DB| {
        st.rowseal.fetch::<Patient, _>(pool, &tenant.id, &id).await
    })?;
    patient.map(|p| Json(p.view())).ok_or(ApiError::NotFound)
}

async fn list_patients(
    State(st): State<AppState>,
    tenant: Tenant,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limit = limit(&uri)?;
    // The app's own query (compile-time checked) into sealed rows; opened
    // for this tenant only, in parallel when there are many.
    let sealed = {
        let _admitted = list_read(&st).await?;
        queries::patients(&st.db, tenant.uuid, limit).await?
    };
    let patients = st.rowseal.open_all(sealed, &tenant.id).await?;
    let views: Vec<PatientView> = patients.iter().map(Patient::view).collect();
    json_off_runtime(&st, views).await
}

async fn update_patient(
    State(st): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PatientView>, ApiError> {
    let id = parse_id(&id)?;
    let input: PatientInput = parse(&body, PATIENT_BODY)?;
    // The registration time stays: read it from the stored row (404 if
    // there is none in this tenant).
    let stored = with_db!(&st.db, |pool, DB| {
        st.rowseal.fetch::<Patient, _>(pool, &tenant.id, &id).await
    })?
    .ok_or(ApiError::NotFound)?;
    let patient = Patient::from_input(id, tenant.uuid, stored.created_at_ms, input)?;
    // Every field re-encrypted under a fresh row key; only a row of this
    // tenant is matched (else 404).
    with_db!(&st.db, |pool, DB| st.rowseal.update(pool, &patient).await)?;
    Ok(Json(patient.view()))
}

/// Changes only the fields given: `Encryptor::update_fields` reads the
/// stored row, re-seals it with the new values, and writes it only if its
/// key header is still the one it read. A row changed in between (another
/// writer, `rowseal rotate`) is `Conflict`: 409 `changed`, nothing written;
/// the client reads it again and retries.
async fn patch_patient(
    State(st): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PatientView>, ApiError> {
    let id = parse_id(&id)?;
    let patch: PatientPatch = parse(
        &body,
        "body: JSON with any of \"name\", \"email\", \"ssn\", \"birth_date\" expected",
    )?;
    let (row, fields) = patch.into_update(id, tenant.uuid)?;
    with_db!(&st.db, |pool, DB| {
        st.rowseal.update_fields(pool, &row, &fields).await
    })?;
    let patient = with_db!(&st.db, |pool, DB| {
        st.rowseal.fetch::<Patient, _>(pool, &tenant.id, &id).await
    })?;
    patient.map(|p| Json(p.view())).ok_or(ApiError::NotFound)
}

async fn delete_patient(
    State(st): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let deleted = with_db!(&st.db, |pool, DB| {
        let mut tx = pool.begin().await?;
        rowseal::sqlx::query(
            "DELETE FROM medical_records WHERE tenant_id = $1 AND patient_id = $2",
        )
        .bind(tenant.uuid)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let deleted = st
            .rowseal
            .delete::<Patient, _>(&mut *tx, &tenant.id, &id)
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
    tenant: Tenant,
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
                Patient::find_by_email(rowseal, pool, &tenant.id, &email).await
            })?
        }
        (None, Some(ssn)) => {
            if !valid_ssn(&ssn) {
                return Err(ApiError::BadRequest(
                    "ssn: 9 digits expected (123-45-6789 or 123456789)",
                ));
            }
            with_db!(&st.db, |pool, DB| {
                Patient::find_by_ssn(rowseal, pool, &tenant.id, &ssn).await
            })?
        }
        _ => return Err(ApiError::BadRequest(EXPECTED)),
    };
    Ok(Json(found.iter().map(Patient::view).collect()))
}

async fn patient_exists(st: &AppState, tenant: Uuid, id: Uuid) -> Result<bool, ApiError> {
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
    tenant: Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let patient_id = parse_id(&id)?;
    let input: RecordInput = parse(
        &body,
        "body: JSON {\"note\", \"diagnosis_code\" (optional)} expected",
    )?;
    let record =
        MedicalRecord::from_input(Uuid::new_v4(), tenant.uuid, patient_id, Utc::now(), input)?;
    if !patient_exists(&st, tenant.uuid, patient_id).await? {
        return Err(ApiError::NotFound);
    }
    with_db!(&st.db, |pool, DB| st.rowseal.insert(pool, &record).await)?;
    Ok((StatusCode::CREATED, Json(record.view())))
}

async fn list_records(
    State(st): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let patient_id = parse_id(&id)?;
    if !patient_exists(&st, tenant.uuid, patient_id).await? {
        return Err(ApiError::NotFound);
    }
    let sealed = {
        let _admitted = list_read(&st).await?;
        queries::records_of_patient(&st.db, tenant.uuid, patient_id).await?
    };
    let records = st.rowseal.open_all(sealed, &tenant.id).await?;
    let views: Vec<RecordView> = records.iter().map(MedicalRecord::view).collect();
    json_off_runtime(&st, views).await
}

async fn list_latest_records(
    State(st): State<AppState>,
    tenant: Tenant,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limit = limit(&uri)?;
    // One join, each row split into the record's and the patient's sealed
    // rows; both opened for this tenant (a row of another tenant, had the
    // query let one through, would be refused before any key is fetched).
    let rows = {
        let _admitted = list_read(&st).await?;
        queries::records_with_patients(&st.db, tenant.uuid, limit).await?
    };
    let (records, patients): (Vec<_>, Vec<_>) = rows.into_iter().map(|r| r.split()).unzip();
    let (records, patients) = tokio::try_join!(
        st.rowseal.open_all(records, &tenant.id),
        st.rowseal.open_all(patients, &tenant.id),
    )?;
    let views: Vec<RecordWithPatientView> = records
        .iter()
        .zip(patients)
        .map(|(record, patient)| RecordWithPatientView {
            record: record.view(),
            patient_name: patient.name,
        })
        .collect();
    json_off_runtime(&st, views).await
}
