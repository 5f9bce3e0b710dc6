//! The app's schema: rowseal's tables, the models' tables (DDL generated
//! from the models) and the app's own indexes. [`create`] makes them at
//! start-up (if they do not exist) and registers the tables for the
//! `rowseal` command-line tool; [`ddl`] is the same schema in text, what
//! `schema/<database>.sql` holds and what the checked queries
//! ([`crate::queries`]) are prepared against (`web-example-ddl`,
//! `scripts/sqlx-prepare.sh`).
//!
//! Nothing here runs a checked query, so that it builds before the queries
//! are prepared (`--no-default-features`).

use rowseal::sqlx::{Executor, IntoArguments, Pool};
use rowseal::Backend;

use crate::models::{MedicalRecord, Patient};

/// The app's indexes on the models' plain columns, for its queries:
/// patients listed by registration time, records listed per patient and
/// per clinic by time.
pub const INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS patients_created ON patients (tenant_id, created_at_ms)",
    "CREATE INDEX IF NOT EXISTS medical_records_patient \
     ON medical_records (tenant_id, patient_id, created_at_ms)",
    "CREATE INDEX IF NOT EXISTS medical_records_created \
     ON medical_records (tenant_id, created_at_ms)",
];

/// The statements that create the models' tables and the app's indexes on
/// `DB` (idempotent), after rowseal's own tables.
pub fn table_statements<DB: Backend>() -> Vec<String> {
    let mut out = rowseal::schema::create_table_sql::<Patient, DB>();
    out.extend(rowseal::schema::create_table_sql::<MedicalRecord, DB>());
    out.extend(INDEXES.iter().map(|s| (*s).to_owned()));
    out
}

/// The whole schema on `DB` in text: rowseal's tables, then
/// [`table_statements`].
pub fn ddl<DB: Backend>() -> String {
    let mut out = String::from(DB::migration_sql().trim_end());
    out.push('\n');
    for statement in table_statements::<DB>() {
        out.push_str(&statement);
        out.push_str(";\n");
    }
    out
}

/// Creates rowseal's tables, the models' tables and the app's indexes if
/// they do not exist, and registers the models' tables for the `rowseal`
/// tool (rotate, verify, shred).
pub async fn create<DB: Backend>(pool: &Pool<DB>) -> Result<(), rowseal::SqlxError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    rowseal::schema::install(pool).await?;
    rowseal::schema::create_table::<Patient, _>(pool).await?;
    rowseal::schema::create_table::<MedicalRecord, _>(pool).await?;
    for index in INDEXES {
        rowseal::sqlx::query(index).execute(pool).await?;
    }
    rowseal::schema::register::<Patient, _>(pool).await?;
    rowseal::schema::register::<MedicalRecord, _>(pool).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    /// The committed `schema/*.sql`, what the checked queries were prepared
    /// against, is the app's schema now: a model or an index changed
    /// without `bash scripts/sqlx-prepare.sh` fails here.
    #[test]
    fn prepared_schema_is_current() {
        let check = |file: &str, now: String| {
            let path = format!("{}/schema/{file}", env!("CARGO_MANIFEST_DIR"));
            let then = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}: run bash scripts/sqlx-prepare.sh"));
            assert_eq!(
                then, now,
                "{path} is stale: run bash scripts/sqlx-prepare.sh"
            );
        };
        check("sqlite.sql", super::ddl::<rowseal::sqlx::Sqlite>());
        check("postgres.sql", super::ddl::<rowseal::sqlx::Postgres>());
    }
}
