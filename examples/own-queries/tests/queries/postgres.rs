//! The PostgreSQL queries, checked at compile time: UUIDs and NOT NULL are
//! described by PostgreSQL itself. An instant names its Rust type: with both
//! of sqlx's `chrono` and `time` features on (as in a workspace build with
//! every feature), sqlx's macros pick `time`'s types.

use chrono::{DateTime, Utc};
use own_queries::{PatientSealed, ScheduleRow};
use sqlx::PgPool;
use uuid::Uuid;

pub async fn patients_with_visits(
    pool: &PgPool,
    clinic: Uuid,
    min_visits: i64,
) -> sqlx::Result<Vec<PatientSealed>> {
    sqlx::query_as!(
        PatientSealed,
        "SELECT id, clinic_id, name, birth_date, visits, rowseal_header
         FROM patients WHERE clinic_id = $1 AND visits >= $2 ORDER BY visits DESC, id",
        clinic,
        min_visits
    )
    .fetch_all(pool)
    .await
}

pub async fn schedule(pool: &PgPool, clinic: Uuid) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"SELECT a.id AS a_id, a.clinic_id AS a_clinic_id, a.patient_id AS a_patient_id,
                a.starts_at AS "a_starts_at: DateTime<Utc>", a.reason AS a_reason,
                a.rowseal_header AS a_rowseal_header,
                p.id AS p_id, p.clinic_id AS p_clinic_id, p.name AS p_name,
                p.birth_date AS p_birth_date, p.visits AS p_visits,
                p.rowseal_header AS p_rowseal_header
         FROM appointments a
         JOIN patients p ON p.id = a.patient_id AND p.clinic_id = a.clinic_id
         WHERE a.clinic_id = $1 ORDER BY a.starts_at"#,
        clinic
    )
    .fetch_all(pool)
    .await
}
