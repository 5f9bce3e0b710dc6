//! rowseal with your own queries: the models of a clinic's service, whose
//! rows the application reads with `sqlx::query_as!` into the sealed types
//! `#[derive(Encrypted)]` generates, and opens per tenant.
//!
//! The queries themselves are in `src/main.rs` (SQLite) and in
//! `tests/query_as.rs` (SQLite, PostgreSQL, MariaDB); they are checked at
//! compile time against the DDL in `schema/`, from the committed `.sqlx/`
//! (`bash scripts/sqlx-prepare.sh` prepares it again after a change).

use chrono::{DateTime, NaiveDate, Utc};
use rowseal::Encrypted;
use uuid::Uuid;

/// A patient of a clinic (the tenant: a UUID).
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "patients",
    record_type = "patient",
    tenant = clinic_id,
    primary_key = id,
    bind_primary_key
)]
pub struct Patient {
    /// Chosen by the application (bound into the ciphertexts).
    pub id: Uuid,
    /// The tenant.
    pub clinic_id: Uuid,
    /// Encrypted.
    #[rowseal(encrypt)]
    pub name: String,
    /// Encrypted; NULL when unknown.
    #[rowseal(encrypt)]
    pub birth_date: Option<NaiveDate>,
    /// In the clear (queries filter and sort on it).
    pub visits: i64,
}

/// An appointment of a patient: joined with [`Patient`] by the schedule.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "appointments",
    record_type = "appointment",
    tenant = clinic_id,
    primary_key = id,
    bind_primary_key
)]
pub struct Appointment {
    /// Chosen by the application (bound into the ciphertexts).
    pub id: Uuid,
    /// The tenant.
    pub clinic_id: Uuid,
    /// The patient (a join key, in the clear).
    pub patient_id: Uuid,
    /// In the clear (the schedule sorts on it).
    pub starts_at: DateTime<Utc>,
    /// Encrypted.
    #[rowseal(encrypt)]
    pub reason: String,
}

/// One row of the schedule: an appointment and its patient, both sealed,
/// as `query_as!` fills it (it fills flat structs only: one field per
/// column of the join, each model's columns under its own prefix).
#[derive(Debug)]
pub struct ScheduleRow {
    /// Appointment `id`.
    pub a_id: Uuid,
    /// Appointment `clinic_id`.
    pub a_clinic_id: Uuid,
    /// Appointment `patient_id`.
    pub a_patient_id: Uuid,
    /// Appointment `starts_at`.
    pub a_starts_at: DateTime<Utc>,
    /// Appointment `reason`.
    pub a_reason: Option<Vec<u8>>,
    /// Appointment `rowseal_header`.
    pub a_rowseal_header: Option<Vec<u8>>,
    /// Patient `id`.
    pub p_id: Uuid,
    /// Patient `clinic_id`.
    pub p_clinic_id: Uuid,
    /// Patient `name`.
    pub p_name: Option<Vec<u8>>,
    /// Patient `birth_date`.
    pub p_birth_date: Option<Vec<u8>>,
    /// Patient `visits`.
    pub p_visits: i64,
    /// Patient `rowseal_header`.
    pub p_rowseal_header: Option<Vec<u8>>,
}

impl ScheduleRow {
    /// The two sealed rows of the join, to open with `Encryptor::open`.
    pub fn split(self) -> (AppointmentSealed, PatientSealed) {
        (
            AppointmentSealed {
                id: self.a_id,
                clinic_id: self.a_clinic_id,
                patient_id: self.a_patient_id,
                starts_at: self.a_starts_at,
                reason: self.a_reason,
                rowseal_header: self.a_rowseal_header,
            },
            PatientSealed {
                id: self.p_id,
                clinic_id: self.p_clinic_id,
                name: self.p_name,
                birth_date: self.p_birth_date,
                visits: self.p_visits,
                rowseal_header: self.p_rowseal_header,
            },
        )
    }
}

/// The benchmark's baseline: the same patients without rowseal, every
/// column in the clear (`benches/query_as.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlainPatient {
    /// The patient.
    pub id: Uuid,
    /// The clinic.
    pub clinic_id: Uuid,
    /// In the clear.
    pub name: String,
    /// In the clear.
    pub birth_date: Option<NaiveDate>,
    /// In the clear.
    pub visits: i64,
}

/// `CREATE TABLE plain_patients`: [`PlainPatient`]'s table, with the same
/// column types as rowseal gives `patients` and an index on the clinic.
pub fn plain_patients_sql<DB: rowseal::Backend>() -> String {
    use rowseal::SqlType;
    let t = |t: SqlType, keyed: bool| DB::column_type(t, keyed);
    format!(
        "CREATE TABLE IF NOT EXISTS plain_patients (id {} NOT NULL PRIMARY KEY, clinic_id {} NOT NULL, \
         name {} NOT NULL, birth_date {}, visits {} NOT NULL)",
        t(SqlType::Uuid, true),
        t(SqlType::Uuid, true),
        t(SqlType::Text, false),
        t(SqlType::Date, false),
        t(SqlType::I64, false),
    )
}

/// The DDL of rowseal's tables and of the models' tables on `DB`: what
/// `schema/<dialect>.sql` holds, and what the queries are prepared against.
pub fn ddl<DB: rowseal::Backend>() -> String {
    let mut out = String::from(DB::migration_sql().trim_end());
    out.push('\n');
    let tables = [
        rowseal::schema::create_table_sql::<Patient, DB>(),
        rowseal::schema::create_table_sql::<Appointment, DB>(),
        vec![plain_patients_sql::<DB>()],
    ];
    for statement in tables.iter().flatten() {
        out.push_str(statement);
        out.push_str(";\n");
    }
    out
}
