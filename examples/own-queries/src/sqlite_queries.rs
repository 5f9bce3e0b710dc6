//! The SQLite queries, checked at compile time (shared by `src/main.rs` and
//! `tests/query_as.rs`). SQLite stores UUIDs and instants in columns sqlx
//! describes as bytes and text: `AS "col!: Type"` names the Rust type (and
//! that the column is NOT NULL), as with any sqlx query.

use chrono::{DateTime, Utc};
use own_queries::{PatientSealed, ScheduleRow};
use sqlx::SqlitePool;
use uuid::Uuid;

/// A clinic's patients with at least `min_visits` visits, most visits
/// first: sealed, to open with `Encryptor::open_all`.
pub async fn patients_with_visits(
    pool: &SqlitePool,
    clinic: Uuid,
    min_visits: i64,
) -> sqlx::Result<Vec<PatientSealed>> {
    sqlx::query_as!(
        PatientSealed,
        r#"SELECT id AS "id!: Uuid", clinic_id AS "clinic_id!: Uuid", name, birth_date,
                  visits AS "visits!", rowseal_header
           FROM patients WHERE clinic_id = ? AND visits >= ? ORDER BY visits DESC, id"#,
        clinic,
        min_visits
    )
    .fetch_all(pool)
    .await
}

/// A clinic's schedule: each appointment with its patient, both sealed.
pub async fn schedule(pool: &SqlitePool, clinic: Uuid) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"SELECT a.id AS "a_id!: Uuid", a.clinic_id AS "a_clinic_id!: Uuid",
                  a.patient_id AS "a_patient_id!: Uuid",
                  a.starts_at AS "a_starts_at!: DateTime<Utc>", a.reason AS a_reason,
                  a.rowseal_header AS a_rowseal_header,
                  p.id AS "p_id!: Uuid", p.clinic_id AS "p_clinic_id!: Uuid", p.name AS p_name,
                  p.birth_date AS p_birth_date, p.visits AS "p_visits!",
                  p.rowseal_header AS p_rowseal_header
           FROM appointments a
           JOIN patients p ON p.id = a.patient_id AND p.clinic_id = a.clinic_id
           WHERE a.clinic_id = ? ORDER BY a.starts_at"#,
        clinic
    )
    .fetch_all(pool)
    .await
}
