//! The MariaDB/MySQL queries, checked at compile time. rowseal stores UUIDs
//! as BINARY(16) and instants as DATETIME(6) (UTC) there, which sqlx
//! describes as bytes and a local time: `AS "col: Type"` names the Rust
//! type, as with any sqlx query.

use chrono::{DateTime, Utc};
use own_queries::{PatientSealed, ScheduleRow};
use sqlx::MySqlPool;
use uuid::Uuid;

pub async fn patients_with_visits(
    pool: &MySqlPool,
    clinic: Uuid,
    min_visits: i64,
) -> sqlx::Result<Vec<PatientSealed>> {
    sqlx::query_as!(
        PatientSealed,
        r#"SELECT id AS "id: Uuid", clinic_id AS "clinic_id: Uuid", name, birth_date, visits,
                  rowseal_header
           FROM patients WHERE clinic_id = ? AND visits >= ? ORDER BY visits DESC, id"#,
        clinic,
        min_visits
    )
    .fetch_all(pool)
    .await
}

pub async fn schedule(pool: &MySqlPool, clinic: Uuid) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"SELECT a.id AS "a_id: Uuid", a.clinic_id AS "a_clinic_id: Uuid",
                  a.patient_id AS "a_patient_id: Uuid",
                  a.starts_at AS "a_starts_at: DateTime<Utc>", a.reason AS a_reason,
                  a.rowseal_header AS a_rowseal_header,
                  p.id AS "p_id: Uuid", p.clinic_id AS "p_clinic_id: Uuid", p.name AS p_name,
                  p.birth_date AS p_birth_date, p.visits AS p_visits,
                  p.rowseal_header AS p_rowseal_header
           FROM appointments a
           JOIN patients p ON p.id = a.patient_id AND p.clinic_id = a.clinic_id
           WHERE a.clinic_id = ? ORDER BY a.starts_at"#,
        clinic
    )
    .fetch_all(pool)
    .await
}
