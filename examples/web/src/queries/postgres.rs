//! The queries on PostgreSQL: UUIDs and NOT NULL are described by
//! PostgreSQL itself, no overrides needed.

use sqlx::PgPool;
use uuid::Uuid;

use super::RecordWithPatientRow;
use crate::models::{MedicalRecordSealed, PatientSealed};

/// See [`super::patients`].
pub async fn patients(pool: &PgPool, tenant: Uuid, limit: i64) -> sqlx::Result<Vec<PatientSealed>> {
    sqlx::query_as!(
        PatientSealed,
        "SELECT id, tenant_id, created_at_ms, name, email, ssn, birth_date, rowseal_header
         FROM patients WHERE tenant_id = $1
         ORDER BY created_at_ms, id LIMIT $2",
        tenant,
        limit
    )
    .fetch_all(pool)
    .await
}

/// See [`super::records_of_patient`].
pub async fn records_of_patient(
    pool: &PgPool,
    tenant: Uuid,
    patient: Uuid,
) -> sqlx::Result<Vec<MedicalRecordSealed>> {
    sqlx::query_as!(
        MedicalRecordSealed,
        "SELECT id, tenant_id, patient_id, created_at_ms, note, diagnosis_code, rowseal_header
         FROM medical_records WHERE tenant_id = $1 AND patient_id = $2
         ORDER BY created_at_ms, id",
        tenant,
        patient
    )
    .fetch_all(pool)
    .await
}

/// See [`super::records_with_patients`].
pub async fn records_with_patients(
    pool: &PgPool,
    tenant: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<RecordWithPatientRow>> {
    sqlx::query_as!(
        RecordWithPatientRow,
        "SELECT r.id AS r_id, r.tenant_id AS r_tenant_id, r.patient_id AS r_patient_id,
                r.created_at_ms AS r_created_at_ms, r.note AS r_note,
                r.diagnosis_code AS r_diagnosis_code, r.rowseal_header AS r_rowseal_header,
                p.id AS p_id, p.tenant_id AS p_tenant_id, p.created_at_ms AS p_created_at_ms,
                p.name AS p_name, p.email AS p_email, p.ssn AS p_ssn,
                p.birth_date AS p_birth_date, p.rowseal_header AS p_rowseal_header
         FROM medical_records r
         JOIN patients p ON p.id = r.patient_id AND p.tenant_id = r.tenant_id
         WHERE r.tenant_id = $1
         ORDER BY r.created_at_ms DESC, r.id DESC LIMIT $2",
        tenant,
        limit
    )
    .fetch_all(pool)
    .await
}
