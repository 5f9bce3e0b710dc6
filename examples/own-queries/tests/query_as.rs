#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `sqlx::query_as!` over rowseal's sealed rows on SQLite, PostgreSQL and
//! MariaDB: a list and a join of two encrypted models, checked at compile
//! time (offline, from `.sqlx/`) and run against a fresh database; each
//! sealed row opens for its tenant only, and fails closed when tampered.
//! Also: the schema the queries were prepared against is the models' own.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use own_queries::{Appointment, Patient, PatientSealed, ScheduleRow};
use rowseal::{schema, Backend, Encryptor, KeyHierarchy, LocalKeyProvider, SqlxKeyStore};
use uuid::Uuid;

#[cfg(feature = "mysql")]
#[path = "queries/mysql.rs"]
mod mysql_queries;
#[cfg(feature = "postgres")]
#[path = "queries/postgres.rs"]
mod postgres_queries;
#[cfg(feature = "sqlite")]
#[path = "../src/sqlite_queries.rs"]
mod sqlite_queries;

/// Two clinics' rows, written through the encryptor.
struct Seed {
    enc: Encryptor,
    clinic: Uuid,
    other: Uuid,
    patients: Vec<Patient>,
    appointments: Vec<Appointment>,
}

async fn seed<DB: Backend>(pool: &sqlx::Pool<DB>) -> Seed
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::install(pool).await.unwrap();
    schema::create_table::<Patient, _>(pool).await.unwrap();
    schema::create_table::<Appointment, _>(pool).await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let keys = KeyHierarchy::new(
        Arc::new(LocalKeyProvider::from_keyring_str(&keyring).unwrap()),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    let enc = Encryptor::new(Arc::new(keys));
    let (clinic, other) = (Uuid::new_v4(), Uuid::new_v4());
    let patients: Vec<Patient> = [
        (clinic, "Ada", 4),
        (clinic, "Alan", 1),
        (clinic, "Edsger", 9),
        (other, "Grace", 7),
    ]
    .into_iter()
    .map(|(c, name, visits)| Patient {
        id: Uuid::new_v4(),
        clinic_id: c,
        name: name.into(),
        birth_date: (visits % 2 == 0).then(|| NaiveDate::from_ymd_opt(1990, 1, 1).unwrap()),
        visits,
    })
    .collect();
    enc.insert_many(pool, &patients).await.unwrap();
    let appointments: Vec<Appointment> = patients
        .iter()
        .enumerate()
        .map(|(i, p)| Appointment {
            id: Uuid::new_v4(),
            clinic_id: p.clinic_id,
            patient_id: p.id,
            starts_at: Utc
                .with_ymd_and_hms(2026, 12, 1, 9 + i as u32, 30, 0)
                .unwrap(),
            reason: format!("reason {i}"),
        })
        .collect();
    enc.insert_many(pool, &appointments).await.unwrap();
    Seed {
        enc,
        clinic,
        other,
        patients,
        appointments,
    }
}

/// What the list query returned, opened: the clinic's patients with 2+
/// visits, most first; another clinic's rows refused by name.
async fn check_list(s: &Seed, list: Vec<PatientSealed>, theirs: Vec<PatientSealed>) {
    let tenant = s.clinic.to_string();
    let got = s.enc.open_all(list, &*tenant).await.unwrap();
    let mut want: Vec<Patient> = s
        .patients
        .iter()
        .filter(|p| p.clinic_id == s.clinic && p.visits >= 2)
        .cloned()
        .collect();
    want.sort_by_key(|p| -p.visits);
    assert_eq!(got, want);
    assert_eq!(theirs.len(), 1);
    assert!(matches!(
        s.enc.open_all(theirs, &*tenant).await,
        Err(rowseal::Error::TenantMismatch { .. })
    ));
}

/// What the join returned, opened: each appointment with its patient; a
/// ciphertext moved between two rows of the join fails closed.
async fn check_schedule(s: &Seed, rows: Vec<ScheduleRow>) {
    let tenant = s.clinic.to_string();
    assert_eq!(rows.len(), 3);
    let mut parts: Vec<_> = rows.into_iter().map(ScheduleRow::split).collect();
    let moved = parts[1].0.reason.clone();
    let (mut tampered, _) = parts.remove(0);
    tampered.reason = moved;
    assert!(s
        .enc
        .open(tampered, &*tenant)
        .await
        .unwrap_err()
        .is_decrypt());
    for (a, p) in parts {
        let a = s.enc.open(a, &*tenant).await.unwrap();
        let p = s.enc.open(p, &*tenant).await.unwrap();
        assert_eq!(a.patient_id, p.id);
        assert!(s.appointments.contains(&a));
        assert!(s.patients.contains(&p));
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_as_on_sqlite() {
    let db = rowseal_test_support::db::sqlite(4).await;
    let s = seed(&db.pool).await;
    let list = sqlite_queries::patients_with_visits(&db.pool, s.clinic, 2)
        .await
        .unwrap();
    let theirs = sqlite_queries::patients_with_visits(&db.pool, s.other, 0)
        .await
        .unwrap();
    check_list(&s, list, theirs).await;
    check_schedule(
        &s,
        sqlite_queries::schedule(&db.pool, s.clinic).await.unwrap(),
    )
    .await;
    db.finish().await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_as_on_postgres() {
    let Some(db) = rowseal_test_support::db::postgres(4).await else {
        return;
    };
    let s = seed(&db.pool).await;
    let list = postgres_queries::patients_with_visits(&db.pool, s.clinic, 2)
        .await
        .unwrap();
    let theirs = postgres_queries::patients_with_visits(&db.pool, s.other, 0)
        .await
        .unwrap();
    check_list(&s, list, theirs).await;
    check_schedule(
        &s,
        postgres_queries::schedule(&db.pool, s.clinic)
            .await
            .unwrap(),
    )
    .await;
    db.finish().await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_as_on_mariadb() {
    let Some(db) = rowseal_test_support::db::mysql(4).await else {
        return;
    };
    let s = seed(&db.pool).await;
    let list = mysql_queries::patients_with_visits(&db.pool, s.clinic, 2)
        .await
        .unwrap();
    let theirs = mysql_queries::patients_with_visits(&db.pool, s.other, 0)
        .await
        .unwrap();
    check_list(&s, list, theirs).await;
    check_schedule(
        &s,
        mysql_queries::schedule(&db.pool, s.clinic).await.unwrap(),
    )
    .await;
    db.finish().await;
}

/// The committed schema/*.sql (what the queries were prepared against) is
/// the models' own DDL: a model changed without `scripts/sqlx-prepare.sh`
/// fails here.
#[test]
fn prepared_schema_is_current() {
    let check = |file: &str, now: String| {
        let path = format!("{}/schema/{file}", env!("CARGO_MANIFEST_DIR"));
        let then = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            then, now,
            "{path} is stale: run bash scripts/sqlx-prepare.sh"
        );
    };
    check("sqlite.sql", own_queries::ddl::<sqlx::Sqlite>());
    #[cfg(feature = "postgres")]
    check("postgres.sql", own_queries::ddl::<sqlx::Postgres>());
    #[cfg(feature = "mysql")]
    check("mysql.sql", own_queries::ddl::<sqlx::MySql>());
}
