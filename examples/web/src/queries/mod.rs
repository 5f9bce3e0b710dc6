//! The application's own read queries: `sqlx::query_as!` into the sealed
//! row types `#[derive(Encrypted)]` generates ([`PatientSealed`],
//! [`MedicalRecordSealed`]), opened per tenant by the routes with
//! `Encryptor::open_all`.
//!
//! Each query is written once per database, in [`sqlite`] and [`postgres`]
//! (SQLite stores rowseal's UUIDs as BLOBs, which sqlx describes as bytes:
//! `AS "col!: Uuid"` names the Rust type there), and checked at compile time
//! against the committed `.sqlx/` (`bash scripts/sqlx-prepare.sh` after a
//! change). The functions here pick the one for the pool the app runs on.
//!
//! Every query filters on the tenant; `open_all` checks it again on every
//! row (a row of another tenant is refused before any key is fetched).

// Built without any database's queries (for `web-example-ddl`), the
// arguments go unused.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(unused_variables)
)]

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use uuid::Uuid;

use crate::models::{MedicalRecordSealed, PatientSealed};
use crate::Db;

/// A build without this database's queries (its feature off) never connects
/// to it ([`crate::connect`] refuses); this is the answer if it did.
#[allow(dead_code)]
fn not_built(database: &str) -> sqlx::Error {
    sqlx::Error::Configuration(
        format!("this build has no {database} queries (its cargo feature is off)").into(),
    )
}

/// A tenant's patients in the order they were registered (then by id), at
/// most `limit`.
pub async fn patients(db: &Db, tenant: Uuid, limit: i64) -> sqlx::Result<Vec<PatientSealed>> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => postgres::patients(pool, tenant, limit).await,
        #[cfg(not(feature = "postgres"))]
        Db::Postgres(_) => Err(not_built("PostgreSQL")),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(pool) => sqlite::patients(pool, tenant, limit).await,
        #[cfg(not(feature = "sqlite"))]
        Db::Sqlite(_) => Err(not_built("SQLite")),
    }
}

/// A patient's records, oldest first (then by id).
pub async fn records_of_patient(
    db: &Db,
    tenant: Uuid,
    patient: Uuid,
) -> sqlx::Result<Vec<MedicalRecordSealed>> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => postgres::records_of_patient(pool, tenant, patient).await,
        #[cfg(not(feature = "postgres"))]
        Db::Postgres(_) => Err(not_built("PostgreSQL")),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(pool) => sqlite::records_of_patient(pool, tenant, patient).await,
        #[cfg(not(feature = "sqlite"))]
        Db::Sqlite(_) => Err(not_built("SQLite")),
    }
}

/// A tenant's latest records, newest first (then by id), at most `limit`,
/// each with its patient: one `JOIN`.
pub async fn records_with_patients(
    db: &Db,
    tenant: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<RecordWithPatientRow>> {
    match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => postgres::records_with_patients(pool, tenant, limit).await,
        #[cfg(not(feature = "postgres"))]
        Db::Postgres(_) => Err(not_built("PostgreSQL")),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(pool) => sqlite::records_with_patients(pool, tenant, limit).await,
        #[cfg(not(feature = "sqlite"))]
        Db::Sqlite(_) => Err(not_built("SQLite")),
    }
}

/// One row of the records-with-patients join, as `query_as!` fills it: it
/// fills flat structs only, so each model's columns come under their own
/// prefix (`r_` the record, `p_` the patient), and [`split`](Self::split)
/// makes the two sealed rows. Holds ciphertexts only; no `Debug` all the
/// same, like the models.
pub struct RecordWithPatientRow {
    /// Record `id`.
    pub r_id: Uuid,
    /// Record `tenant_id`.
    pub r_tenant_id: Uuid,
    /// Record `patient_id`.
    pub r_patient_id: Uuid,
    /// Record `created_at_ms`.
    pub r_created_at_ms: i64,
    /// Record `note` (sealed).
    pub r_note: Option<Vec<u8>>,
    /// Record `diagnosis_code` (sealed).
    pub r_diagnosis_code: Option<Vec<u8>>,
    /// Record `rowseal_header`.
    pub r_rowseal_header: Option<Vec<u8>>,
    /// Patient `id`.
    pub p_id: Uuid,
    /// Patient `tenant_id`.
    pub p_tenant_id: Uuid,
    /// Patient `created_at_ms`.
    pub p_created_at_ms: i64,
    /// Patient `name` (sealed).
    pub p_name: Option<Vec<u8>>,
    /// Patient `email` (sealed).
    pub p_email: Option<Vec<u8>>,
    /// Patient `ssn` (sealed).
    pub p_ssn: Option<Vec<u8>>,
    /// Patient `birth_date` (sealed).
    pub p_birth_date: Option<Vec<u8>>,
    /// Patient `rowseal_header`.
    pub p_rowseal_header: Option<Vec<u8>>,
}

impl RecordWithPatientRow {
    /// The two sealed rows of the join, each to open with
    /// `Encryptor::open` / `open_all` for the tenant.
    pub fn split(self) -> (MedicalRecordSealed, PatientSealed) {
        (
            MedicalRecordSealed {
                id: self.r_id,
                tenant_id: self.r_tenant_id,
                patient_id: self.r_patient_id,
                created_at_ms: self.r_created_at_ms,
                note: self.r_note,
                diagnosis_code: self.r_diagnosis_code,
                rowseal_header: self.r_rowseal_header,
            },
            PatientSealed {
                id: self.p_id,
                tenant_id: self.p_tenant_id,
                created_at_ms: self.p_created_at_ms,
                name: self.p_name,
                email: self.p_email,
                ssn: self.p_ssn,
                birth_date: self.p_birth_date,
                rowseal_header: self.p_rowseal_header,
            },
        )
    }
}
