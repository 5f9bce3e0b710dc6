//! The app's schema, as migrations, in two histories that do not know about
//! each other:
//!
//! - the app's own tables and indexes (`patients`, `medical_records`): its
//!   migrations in `migrations/<database>/`, embedded by `sqlx::migrate!`
//!   ([`migrator`]) and recorded by sqlx in `_sqlx_migrations`, as in any
//!   sqlx application. A change to a model is a new migration there (the
//!   tests compare the migrated tables with the models' DDL);
//! - rowseal's tables (`rowseal_keys`, `rowseal_schema`, `rowseal_jobs`):
//!   rowseal's migrator, `rowseal::migrate::run`, recorded in
//!   `rowseal_migrations`. A new rowseal that changes them brings its own
//!   migration; nothing to write here.
//!
//! [`create`] runs both at start-up (either order works: neither history
//! reads the other's table, and the app's tables do not refer to rowseal's)
//! and registers the tables for the `rowseal` command-line tool; [`ddl`] is
//! the resulting schema in text, what `schema/<database>.sql` holds and what
//! the checked queries ([`crate::queries`]) are prepared against
//! (`web-example-ddl`, `scripts/sqlx-prepare.sh`).
//!
//! Nothing here runs a checked query, so that it builds before the queries
//! are prepared (`--no-default-features`).

use rowseal::sqlx::{Executor, IntoArguments, Pool};
use rowseal::Backend;
use sqlx::migrate::{Migrate, Migrator};

use crate::models::{MedicalRecord, Patient};

/// The app's migrations on SQLite (`migrations/sqlite/`).
pub static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The app's migrations on PostgreSQL (`migrations/postgres/`).
pub static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The app's own migrations on `DB` (none on a database the app does not
/// run on).
pub fn migrator<DB: Backend>() -> Option<&'static Migrator> {
    match DB::DIALECT {
        "sqlite" => Some(&SQLITE_MIGRATIONS),
        "postgres" => Some(&POSTGRES_MIGRATIONS),
        _ => None,
    }
}

/// The app's indexes on the models' plain columns, for its queries:
/// patients listed by registration time, records listed per patient and
/// per clinic by time (in the app's first migration).
pub const INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS patients_created ON patients (tenant_id, created_at_ms)",
    "CREATE INDEX IF NOT EXISTS medical_records_patient \
     ON medical_records (tenant_id, patient_id, created_at_ms)",
    "CREATE INDEX IF NOT EXISTS medical_records_created \
     ON medical_records (tenant_id, created_at_ms)",
];

/// The statements that create the models' tables as the models describe
/// them now, and the app's indexes, on `DB`: what a new migration starts
/// from when a model changes, and what the tests compare the migrated
/// tables with.
pub fn table_statements<DB: Backend>() -> Vec<String> {
    let mut out = rowseal::schema::create_table_sql::<Patient, DB>();
    out.extend(rowseal::schema::create_table_sql::<MedicalRecord, DB>());
    out.extend(INDEXES.iter().map(|s| (*s).to_owned()));
    out
}

/// The whole schema on `DB` in text: rowseal's migrations, then the app's.
pub fn ddl<DB: Backend>() -> String {
    let mut out = String::new();
    for m in rowseal::migrate::migrations::<DB>() {
        out.push_str(m.sql.trim_end());
        out.push('\n');
    }
    for m in migrator::<DB>().into_iter().flat_map(Migrator::iter) {
        out.push_str(m.sql.trim_end());
        out.push('\n');
    }
    out
}

/// Runs the app's migrations and rowseal's (each applies what the database
/// has not had yet, under its own lock, so that several instances may start
/// at once), and registers the models' tables for the `rowseal` tool
/// (rotate, verify, shred).
pub async fn create<DB: Backend>(pool: &Pool<DB>) -> Result<(), rowseal::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    DB::Connection: Migrate,
{
    let app = migrator::<DB>().ok_or_else(|| {
        sqlx::Error::Configuration("the web example runs on SQLite or PostgreSQL".into())
    })?;
    // The app's tables, in its own history (`_sqlx_migrations`).
    app.run(pool).await.map_err(sqlx::Error::from)?;
    // rowseal's tables, in rowseal's history (`rowseal_migrations`).
    rowseal::migrate::run(pool).await?;
    rowseal::schema::register::<Patient, _>(pool).await?;
    rowseal::schema::register::<MedicalRecord, _>(pool).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use rowseal::sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
    use rowseal::sqlx::{Postgres, Row, Sqlite};

    use super::*;

    /// The committed `schema/*.sql`, what the checked queries were prepared
    /// against, is the app's schema now: a migration added or changed
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
        check("sqlite.sql", ddl::<Sqlite>());
        check("postgres.sql", ddl::<Postgres>());
    }

    /// A fresh in-memory SQLite database (one connection: one database).
    async fn memory() -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap()
    }

    /// Every table of an SQLite database but the migration histories, with
    /// its columns (name, type, NOT NULL, primary key) and its indexes
    /// (name, unique, columns), in name order: what the app's queries see.
    async fn describe_sqlite(pool: &SqlitePool) -> Vec<String> {
        let tables: Vec<String> = rowseal::sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT IN ('_sqlx_migrations', 'rowseal_migrations') ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut out = Vec::new();
        for t in tables {
            for c in rowseal::sqlx::query(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY name",
            )
            .bind(&t)
            .fetch_all(pool)
            .await
            .unwrap()
            {
                let (name, ty): (String, String) = (c.get(0), c.get(1));
                let (not_null, pk): (i64, i64) = (c.get(2), c.get(3));
                out.push(format!("{t}.{name} {ty} not_null={not_null} pk={pk}"));
            }
            for i in rowseal::sqlx::query(
                "SELECT name, \"unique\" FROM pragma_index_list(?) ORDER BY name",
            )
            .bind(&t)
            .fetch_all(pool)
            .await
            .unwrap()
            {
                let (name, unique): (String, i64) = (i.get(0), i.get(1));
                let columns: Vec<String> = rowseal::sqlx::query_scalar(
                    "SELECT name FROM pragma_index_info(?) ORDER BY seqno",
                )
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap();
                out.push(format!(
                    "{t} index {name} unique={unique} ({})",
                    columns.join(", ")
                ));
            }
        }
        out
    }

    async fn versions(pool: &SqlitePool, table: &str) -> Vec<i64> {
        rowseal::sqlx::query_scalar(&format!("SELECT version FROM {table} ORDER BY version"))
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// The app's migrations make the tables the models describe now: a
    /// model changed without a new migration in `migrations/sqlite/` (from
    /// [`table_statements`]) fails here.
    #[tokio::test]
    async fn sqlite_migrations_fit_the_models() {
        let migrated = memory().await;
        SQLITE_MIGRATIONS.run(&migrated).await.unwrap();
        let from_models = memory().await;
        for statement in table_statements::<Sqlite>() {
            rowseal::sqlx::query(&statement)
                .execute(&from_models)
                .await
                .unwrap();
        }
        let (migrated, from_models) = (
            describe_sqlite(&migrated).await,
            describe_sqlite(&from_models).await,
        );
        assert!(migrated
            .iter()
            .any(|l| l.starts_with("patients.email_idx ")));
        assert_eq!(
            migrated, from_models,
            "the models changed: add a migration to migrations/sqlite/"
        );
    }

    /// The same on PostgreSQL (skipped without a server, unless `CI=true`).
    #[tokio::test]
    async fn postgres_migrations_fit_the_models() {
        use rowseal_test_support::db;
        let Some(migrated) = db::postgres(1).await else {
            return;
        };
        let Some(from_models) = db::postgres(1).await else {
            return;
        };
        POSTGRES_MIGRATIONS.run(&migrated.pool).await.unwrap();
        for statement in table_statements::<Postgres>() {
            rowseal::sqlx::query(&statement)
                .execute(&from_models.pool)
                .await
                .unwrap();
        }
        let describe = |pool: rowseal::sqlx::PgPool| async move {
            let mut out: Vec<String> = rowseal::sqlx::query_scalar(
                "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name NOT IN ('_sqlx_migrations', 'rowseal_migrations')",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            out.extend(
                rowseal::sqlx::query_scalar::<_, String>(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
                     AND tablename NOT IN ('_sqlx_migrations', 'rowseal_migrations')",
                )
                .fetch_all(&pool)
                .await
                .unwrap(),
            );
            out.sort();
            out
        };
        let (a, b) = (
            describe(migrated.pool.clone()).await,
            describe(from_models.pool.clone()).await,
        );
        assert!(a.iter().any(|l| l.starts_with("patients.email_idx ")));
        assert_eq!(
            a, b,
            "the models changed: add a migration to migrations/postgres/"
        );
        migrated.finish().await;
        from_models.finish().await;
    }

    /// The app's migrations and rowseal's, in either order, make the same
    /// database, each history holding only its own versions; a second start
    /// applies nothing.
    #[tokio::test]
    async fn both_histories_in_either_order() {
        let app_first = memory().await;
        create::<Sqlite>(&app_first).await.unwrap();

        let rowseal_first = memory().await;
        assert_eq!(
            rowseal::migrate::run(&rowseal_first).await.unwrap(),
            rowseal::migrate::migrations::<Sqlite>()
                .iter()
                .map(|m| m.version)
                .collect::<Vec<_>>()
        );
        SQLITE_MIGRATIONS.run(&rowseal_first).await.unwrap();
        rowseal::schema::register::<Patient, _>(&rowseal_first)
            .await
            .unwrap();
        rowseal::schema::register::<MedicalRecord, _>(&rowseal_first)
            .await
            .unwrap();

        let app_versions: Vec<i64> = SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        let rowseal_versions: Vec<i64> = rowseal::migrate::migrations::<Sqlite>()
            .iter()
            .map(|m| m.version)
            .collect();
        for pool in [&app_first, &rowseal_first] {
            assert_eq!(versions(pool, "_sqlx_migrations").await, app_versions);
            assert_eq!(versions(pool, "rowseal_migrations").await, rowseal_versions);
        }
        let described = describe_sqlite(&app_first).await;
        assert!(described
            .iter()
            .any(|l| l.starts_with("rowseal_keys.tenant ")));
        assert!(described.iter().any(|l| l.starts_with("patients.id ")));
        assert_eq!(described, describe_sqlite(&rowseal_first).await);

        // The next start: nothing to apply, the same tables.
        create::<Sqlite>(&app_first).await.unwrap();
        assert_eq!(versions(&app_first, "_sqlx_migrations").await, app_versions);
        assert_eq!(described, describe_sqlite(&app_first).await);
    }
}
