//! The queries on SQLite. rowseal stores UUIDs in BLOB columns, which sqlx
//! describes as bytes: `AS "col!: Uuid"` names the Rust type (and says the
//! column is NOT NULL), as with any sqlx query on SQLite; `!` alone marks
//! the other NOT NULL plain columns.

use sqlx::SqlitePool;
use uuid::Uuid;

use super::RecordWithPatientRow;
use crate::models::{MedicalRecordSealed, PatientSealed};

/// See [`super::patients`].
pub async fn patients(
    pool: &SqlitePool,
    tenant: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<PatientSealed>> {
    sqlx::query_as!(
        PatientSealed,
        r#"SELECT id AS "id!: Uuid", tenant_id AS "tenant_id!: Uuid",
                  created_at_ms AS "created_at_ms!", name, email, ssn, birth_date, rowseal_header
           FROM patients WHERE tenant_id = ?
           ORDER BY created_at_ms, id LIMIT ?"#,
        tenant,
        limit
    )
    .fetch_all(pool)
    .await
}

/// See [`super::records_of_patient`].
pub async fn records_of_patient(
    pool: &SqlitePool,
    tenant: Uuid,
    patient: Uuid,
) -> sqlx::Result<Vec<MedicalRecordSealed>> {
    sqlx::query_as!(
        MedicalRecordSealed,
        r#"SELECT id AS "id!: Uuid", tenant_id AS "tenant_id!: Uuid",
                  patient_id AS "patient_id!: Uuid", created_at_ms AS "created_at_ms!",
                  note, diagnosis_code, rowseal_header
           FROM medical_records WHERE tenant_id = ? AND patient_id = ?
           ORDER BY created_at_ms, id"#,
        tenant,
        patient
    )
    .fetch_all(pool)
    .await
}

/// See [`super::records_with_patients`].
pub async fn records_with_patients(
    pool: &SqlitePool,
    tenant: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<RecordWithPatientRow>> {
    sqlx::query_as!(
        RecordWithPatientRow,
        r#"SELECT r.id AS "r_id!: Uuid", r.tenant_id AS "r_tenant_id!: Uuid",
                  r.patient_id AS "r_patient_id!: Uuid", r.created_at_ms AS "r_created_at_ms!",
                  r.note AS r_note, r.diagnosis_code AS r_diagnosis_code,
                  r.rowseal_header AS r_rowseal_header,
                  p.id AS "p_id!: Uuid", p.tenant_id AS "p_tenant_id!: Uuid",
                  p.created_at_ms AS "p_created_at_ms!", p.name AS p_name, p.email AS p_email,
                  p.ssn AS p_ssn, p.birth_date AS p_birth_date,
                  p.rowseal_header AS p_rowseal_header
           FROM medical_records r
           JOIN patients p ON p.id = r.patient_id AND p.tenant_id = r.tenant_id
           WHERE r.tenant_id = ?
           ORDER BY r.created_at_ms DESC, r.id DESC LIMIT ?"#,
        tenant,
        limit
    )
    .fetch_all(pool)
    .await
}
