#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TLS to PostgreSQL (feature `tls-rustls`), against a cluster the test
//! starts with `ssl = on` and a throw-away certificate authority
//! (`rowseal_test_support::tls_postgres`): under `sslmode=verify-full` the
//! library connects and round-trips an encrypted row (its key store on the
//! same pool), the session is TLS (`pg_stat_ssl`); a server certificate from
//! another authority, or one that does not name the host connected to, is
//! refused; and a plaintext connection is refused by the server, so nothing
//! falls back to plaintext.

use std::sync::Arc;

use rowseal_core::{KeyHierarchy, LocalKeyProvider};
use rowseal_sqlx::{schema, Encrypted, Encryptor, SqlxKeyStore};
use rowseal_test_support::tls_postgres::TlsPostgres;
use sqlx::postgres::PgPoolOptions;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "tls_notes", record_type = "tls_note", tenant = tenant_id, primary_key = id)]
struct TlsNote {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    body: String,
}

async fn connect(url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(20))
        .connect(url)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_and_refuses_what_does_not_verify() {
    let Some(pg) = TlsPostgres::start() else {
        return;
    };
    let ca = pg.ca_cert.to_str().unwrap();
    let other = pg.other_ca_cert.to_str().unwrap();

    let pool = connect(&pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(tls, "the session is TLS");
    schema::install(&pool).await.unwrap();
    schema::create_table::<TlsNote, _>(&pool).await.unwrap();
    let provider =
        LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
    let keys = KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    );
    let enc = Encryptor::new(Arc::new(keys));
    let note = TlsNote {
        id: 1,
        tenant_id: "acme".into(),
        body: "over TLS".into(),
    };
    enc.insert(&pool, &note).await.unwrap();
    assert_eq!(
        enc.fetch::<TlsNote, _>(&pool, "acme", &1).await.unwrap(),
        Some(note)
    );
    pool.close().await;

    // A certificate of another authority, and a host name the certificate
    // does not hold: refused during the handshake (by rustls, or by OpenSSL
    // when `tls-native-tls` is on too, which sqlx then prefers; sqlx reports
    // either as a TLS or I/O error of the connection).
    for url in [
        pg.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={other}"),
        ),
        pg.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    ] {
        match connect(&url).await {
            Err(e @ (sqlx::Error::Tls(_) | sqlx::Error::Io(_))) => {
                let text = e.to_string().to_lowercase();
                assert!(text.contains("certificate"), "{url}: {text}");
            }
            Err(other) => panic!("{url}: expected a certificate error, got {other}"),
            Ok(_) => panic!("{url}: connected to a server that does not verify"),
        }
    }
    // Plaintext is refused by the server (pg_hba: hostssl only).
    match connect(&pg.url("localhost", "sslmode=disable")).await {
        Err(sqlx::Error::Database(e)) => {
            assert!(e.message().contains("pg_hba.conf"), "{e}");
        }
        Err(other) => panic!("plaintext: expected the server's refusal, got {other}"),
        Ok(_) => panic!("plaintext connected"),
    }
}
