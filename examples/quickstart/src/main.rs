//! rowseal in one screen, on the embedded default: an SQLite file and a
//! generated local root key, no services.
//!
//! Run it with `cargo run -p quickstart`. It leaves `rowseal-quickstart.db`
//! (open it with `sqlite3` to see what the database holds) and
//! `rowseal-local.keys` (the development root key) in the current directory.

use std::sync::Arc;

use rowseal::sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use rowseal::sqlx::Row;
use rowseal::{schema, Encrypted, Encryptor, KeyHierarchy, LocalKeyProvider, SqlxKeyStore};

/// A model: three encrypted fields, bound to the tenant and the row's id.
#[derive(Encrypted, Debug)]
#[rowseal(
    table = "patients",
    record_type = "patient",
    tenant = clinic,
    primary_key = id,
    bind_primary_key
)]
struct Patient {
    id: i64,
    clinic: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(
        encrypt,
        blind_index(name = "ssn_idx", bits = 16, normalize = "digits")
    )]
    ssn: Option<String>,
    visits: i64,
}

const DB_FILE: &str = "rowseal-quickstart.db";
const KEY_FILE: &str = "rowseal-local.keys";

fn hex(bytes: &[u8], max: usize) -> String {
    let shown: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    format!("{shown}… ({} bytes)", bytes.len())
}

fn patient(id: i64, clinic: &str, name: &str, email: &str, ssn: Option<&str>) -> Patient {
    Patient {
        id,
        clinic: clinic.into(),
        name: name.into(),
        email: email.into(),
        ssn: ssn.map(Into::into),
        visits: 0,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A development root key, made once and kept in a 0600 file. In
    // production: AWS KMS (feature `kms`) or ROWSEAL_LOCAL_KEYS.
    if !std::path::Path::new(KEY_FILE).exists() {
        LocalKeyProvider::create_keyring_file(KEY_FILE)?;
    }
    let provider = LocalKeyProvider::from_file(KEY_FILE)?;

    // A fresh database file each run.
    let _ = std::fs::remove_file(DB_FILE);
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(DB_FILE)
            .create_if_missing(true),
    )
    .await?;
    // rowseal's own tables (rowseal_keys, rowseal_schema, rowseal_jobs), by
    // rowseal's migrator: applied once, recorded in rowseal_migrations, beside
    // any sqlx::migrate! history of your own.
    rowseal::migrate::run(&pool).await?;
    schema::create_table::<Patient, _>(&pool).await?; // DDL generated from the model
    schema::register::<Patient, _>(&pool).await?; // so the `rowseal` CLI knows the table

    // Tenant keys are generated through the provider and stored wrapped in
    // rowseal_keys; unwrapped ones are cached.
    let keys = Arc::new(KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    ));
    let rowseal = Encryptor::new(keys.clone());

    println!("rowseal quickstart: {DB_FILE}, root key in {KEY_FILE}\n");
    rowseal
        .insert_many(
            &pool,
            &[
                patient(
                    1,
                    "clinic-a",
                    "Ada Lovelace",
                    "ada@example.com",
                    Some("123-45-6789"),
                ),
                patient(2, "clinic-a", "Alan Turing", "alan@example.com", None),
                patient(
                    3,
                    "clinic-b",
                    "Grace Hopper",
                    "grace@example.com",
                    Some("555-12-0000"),
                ),
            ],
        )
        .await?;

    println!("what the database holds (SELECT id, clinic, name, ssn FROM patients):");
    for row in rowseal::sqlx::query("SELECT id, clinic, name, ssn FROM patients ORDER BY id")
        .fetch_all(&pool)
        .await?
    {
        let id: i64 = row.try_get("id")?;
        let clinic: String = row.try_get("clinic")?;
        let name: Vec<u8> = row.try_get("name")?;
        let ssn: Option<Vec<u8>> = row.try_get("ssn")?;
        let ssn = ssn.map_or("NULL".to_owned(), |s| hex(&s, 8));
        println!("  {id}  {clinic}  name={}  ssn={ssn}", hex(&name, 8));
    }

    println!("\nwhat the application reads (Encryptor::fetch, tenant-scoped):");
    for (clinic, id) in [("clinic-a", 1), ("clinic-a", 2), ("clinic-b", 3)] {
        if let Some(p) = rowseal.fetch::<Patient, _>(&pool, clinic, &id).await? {
            println!("  {} {} <{}> ssn={:?}", p.id, p.name, p.email, p.ssn);
        }
    }
    // Lookups on encrypted columns through their blind indexes: the query
    // value is normalized and HMAC-ed; candidates are decrypted and re-checked.
    let by_email =
        Patient::find_by_email(&rowseal, &pool, "clinic-a", "  ADA@Example.com ").await?;
    println!(
        "  find_by_email(\"  ADA@Example.com \") -> {:?}",
        by_email.iter().map(|p| p.id).collect::<Vec<_>>()
    );
    let by_ssn = Patient::find_by_ssn(&rowseal, &pool, "clinic-b", "555120000").await?;
    println!(
        "  find_by_ssn(\"555120000\") in clinic-b -> {:?}",
        by_ssn.iter().map(|p| p.id).collect::<Vec<_>>()
    );
    // Tenant scoping: clinic-b cannot fetch clinic-a's row.
    let other = rowseal.fetch::<Patient, _>(&pool, "clinic-b", &1).await?;
    println!("  clinic-b asking for row 1: {:?}", other.map(|p| p.id));

    // Someone with write access to the database copies clinic-a's ciphertext
    // into clinic-b's row: the read fails with a typed error naming the place,
    // never the value, and other rows still read.
    println!("\nan attacker copies row 1's name ciphertext over row 3's:");
    rowseal::sqlx::query(
        "UPDATE patients SET name = (SELECT name FROM patients WHERE id = 1) WHERE id = 3",
    )
    .execute(&pool)
    .await?;
    match rowseal.fetch::<Patient, _>(&pool, "clinic-b", &3).await {
        Ok(p) => println!("  read {p:?} (this must never happen)"),
        Err(e) => println!("  rejected: {e}"),
    }

    // Key rotation: new rows go under tenant key v2 (in other processes once
    // their cached key expires); old rows still read under v1 until
    // `rowseal rotate` re-encrypts them in the background.
    let v = keys.rotate_tenant_key("clinic-a").await?;
    rowseal
        .insert(
            &pool,
            &patient(4, "clinic-a", "Edsger Dijkstra", "ew@example.com", None),
        )
        .await?;
    println!("\nrotated clinic-a to tenant key v{v}; rows per key version:");
    for row in rowseal::sqlx::query(
        "SELECT clinic, rowseal_key_version AS v, COUNT(*) AS n FROM patients GROUP BY clinic, v ORDER BY clinic, v",
    )
    .fetch_all(&pool)
    .await?
    {
        let (clinic, v, n): (String, i64, i64) = (row.try_get("clinic")?, row.try_get("v")?, row.try_get("n")?);
        println!("  {clinic} v{v}: {n} row(s)");
    }
    let ada = rowseal.fetch::<Patient, _>(&pool, "clinic-a", &1).await?;
    println!("row 1, still on v1, reads: {:?}", ada.map(|p| p.name));
    println!("\nnext: `bash scripts/test.sh` runs the tests; docs/ explains the format and threat model.");
    Ok(())
}
