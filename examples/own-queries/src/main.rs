//! rowseal with your own queries, on the embedded default (SQLite and a
//! generated local root key): `cargo run -p own-queries`.
//!
//! The application writes through the `Encryptor` and reads with its own
//! `sqlx::query_as!` queries (checked at compile time, from the committed
//! `.sqlx/`) into the sealed row types `#[derive(Encrypted)]` generates;
//! `Encryptor::open` / `open_all` decrypt them for one tenant.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use own_queries::{Appointment, Patient};
use rowseal::sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use rowseal::{schema, Encryptor, KeyHierarchy, LocalKeyProvider, SqlxKeyStore};
use uuid::Uuid;

#[path = "sqlite_queries.rs"]
mod queries;

type Error = Box<dyn std::error::Error>;

fn patient(clinic: Uuid, name: &str, visits: i64) -> Patient {
    Patient {
        id: Uuid::new_v4(),
        clinic_id: clinic,
        name: name.into(),
        birth_date: NaiveDate::from_ymd_opt(1990, 1, 1),
        visits,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("rowseal-own-queries-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(dir.join("clinic.db"))
            .create_if_missing(true),
    )
    .await?;
    schema::install(&pool).await?;
    schema::create_table::<Patient, _>(&pool).await?;
    schema::create_table::<Appointment, _>(&pool).await?;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let keys = KeyHierarchy::new(
        Arc::new(LocalKeyProvider::from_keyring_str(&keyring)?),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    let enc = Encryptor::new(Arc::new(keys));

    // Two clinics (the tenants, UUIDs); the canonical id of a UUID tenant
    // is its hyphenated lowercase form, what `to_string` prints.
    let (clinic, other) = (Uuid::new_v4(), Uuid::new_v4());
    let patients = [
        patient(clinic, "Ada Lovelace", 4),
        patient(clinic, "Alan Turing", 1),
        patient(other, "Grace Hopper", 7),
    ];
    enc.insert_many(&pool, &patients).await?;
    let appointment = |p: &Patient, hour: u32, reason: &str| Appointment {
        id: Uuid::new_v4(),
        clinic_id: p.clinic_id,
        patient_id: p.id,
        starts_at: Utc.with_ymd_and_hms(2026, 12, 1, hour, 0, 0).unwrap(),
        reason: reason.into(),
    };
    enc.insert_many(
        &pool,
        &[
            appointment(&patients[0], 9, "annual check-up"),
            appointment(&patients[1], 11, "follow-up on results"),
            appointment(&patients[2], 10, "vaccination"),
        ],
    )
    .await?;

    let tenant = clinic.to_string();
    println!("patients of clinic {tenant} with 2+ visits (query_as! + open_all):");
    let sealed = queries::patients_with_visits(&pool, clinic, 2).await?;
    for p in enc.open_all(sealed, &*tenant).await? {
        println!("  {} ({} visits)", p.name, p.visits);
    }

    println!("\nits schedule (a join of two encrypted models, query_as!):");
    for row in queries::schedule(&pool, clinic).await? {
        let (appointment, patient) = row.split();
        let appointment = enc.open(appointment, &*tenant).await?;
        let patient = enc.open(patient, &*tenant).await?;
        println!(
            "  {}  {:<14} {}",
            appointment.starts_at.format("%H:%M"),
            patient.name,
            appointment.reason
        );
    }

    // A query that forgets its tenant condition cannot leak: a row of
    // another tenant is refused by name, before any of its keys is fetched.
    let theirs = queries::patients_with_visits(&pool, other, 0).await?;
    match enc.open_all(theirs, &*tenant).await {
        Err(e) => println!("\nanother clinic's rows, opened for this one: refused ({e})"),
        Ok(_) => return Err("another tenant's rows were opened".into()),
    }
    pool.close().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
