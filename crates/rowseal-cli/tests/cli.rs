#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Configuration, exit codes and rewrap cost, on SQLite (no service needed),
//! and the AWS KMS provider against the test KMS server when
//! `ROWSEAL_TEST_KMS_ENDPOINT` is set (unset: a loud skip, a failure under
//! `CI=true`).

mod common;

use common::{Person, Secret};
use rowseal_sqlx::Encrypted;
use rowseal_test_support::kms;

/// A model with a blind index, for `status`'s index coverage.
#[derive(Encrypted, Debug, Clone)]
#[rowseal(table = "contacts", record_type = "contact", tenant = tenant_id, primary_key = id)]
struct Contact {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: Option<String>,
}
use rowseal_core::LocalKeyProvider;

fn people(from: i64, to: i64) -> Vec<Person> {
    (from..=to)
        .map(|id| Person {
            id,
            tenant_id: format!("t{}", id % 5),
            name: format!("name {id}"),
            note: None,
            visits: 0,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_config_file() {
    let db = common::sqlite().await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();

    // Usage error.
    let r = common::rowseal(&db.url, &keyring, &["rotate", "--bogus"]).await;
    assert_eq!(r.code, Some(2));
    // No database configured.
    let mut c = common::command("", &keyring, &["status"]);
    c.env_remove("DATABASE_URL");
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    // Unsupported URL scheme; the URL is never echoed.
    let r = common::rowseal("oracle://scott:tiger@x/y", &keyring, &["status"]).await;
    assert_eq!(r.code, Some(3));
    assert!(!r.stderr.contains("tiger") && !r.stdout.contains("tiger"));
    // Database unreachable.
    let r = common::rowseal("postgres://u:hunter2@127.0.0.1:1/x", &keyring, &["status"]).await;
    assert_eq!(r.code, Some(4), "{}", r.stderr);
    assert!(!r.stderr.contains("hunter2") && !r.stdout.contains("hunter2"));
    // No keyring.
    common::prepare(&db).await;
    let mut c = common::command(&db.url, "", &["verify"]);
    c.env_remove("ROWSEAL_LOCAL_KEYS");
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    // A broken keyring is reported without its bytes.
    let r = common::rowseal(&db.url, "v1:AAAA", &["verify"]).await;
    assert_eq!(r.code, Some(3));
    assert!(!r.stderr.contains("AAAA"));

    // The config file supplies what flags and environment do not.
    let dir = std::env::temp_dir().join(common::random_name());
    std::fs::create_dir_all(&dir).unwrap();
    let keyfile = dir.join("keys");
    std::fs::write(&keyfile, &keyring).unwrap();
    let cfg = dir.join("rowseal.toml");
    std::fs::write(
        &cfg,
        format!(
            "database_url = \"{}\"\nkey_file = \"{}\"\nbatch_size = 7\n",
            db.url,
            keyfile.display()
        ),
    )
    .unwrap();
    let mut c = common::command("", "", &["verify", "--config", cfg.to_str().unwrap()]);
    c.env_remove("DATABASE_URL")
        .env_remove("ROWSEAL_LOCAL_KEYS");
    let out = c.output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown key in the config file is a configuration error.
    std::fs::write(
        &cfg,
        "database_url = \"sqlite://x\"\npassword = \"s3cret\"\n",
    )
    .unwrap();
    let mut c = common::command("", "", &["status", "--config", cfg.to_str().unwrap()]);
    c.env_remove("DATABASE_URL");
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    // Rotate needs a scope.
    let r = common::rowseal(&db.url, &keyring, &["rotate"]).await;
    assert_eq!(r.code, Some(2));
    // Unknown job.
    let r = common::rowseal(&db.url, &keyring, &["rotate", "--job", "nope"]).await;
    assert_eq!(r.code, Some(6));
    std::fs::remove_dir_all(&dir).unwrap();
    db.finish().await;
}

/// `init` twice is a no-op the second time; on a database migrated by a
/// newer rowseal (a migration version this build does not know) it is
/// refused, exit 6 with a closing `error` event, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_and_refuses_a_newer_database() {
    let db = common::sqlite().await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let first = common::rowseal(&db.url, &keyring, &["init"]).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let again = common::rowseal(&db.url, &keyring, &["init"]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(
        again.event("init").unwrap()["migrations_applied"],
        serde_json::json!([])
    );

    sqlx::query(
        "INSERT INTO rowseal_migrations (version, description, installed_by) \
         VALUES (9999, 'from the future', '99.0.0')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let newer = common::rowseal(&db.url, &keyring, &["init"]).await;
    assert_eq!(newer.code, Some(6), "{}{}", newer.stdout, newer.stderr);
    let error = newer.event("error").expect("a closing error event");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("newer rowseal"), "{error}");
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM rowseal_migrations WHERE version = 9999"
        )
        .await,
        1
    );
    db.finish().await;
}

/// In derived mode, rewrap costs one ReEncrypt per key version: the same
/// with 50 rows as with 3,000 (`ROWSEAL_TEST_REWRAP_ROWS`, e.g. 1,000,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_cost_does_not_grow_with_rows() {
    let db = common::sqlite().await.unwrap();
    common::prepare(&db).await;
    let v1 = LocalKeyProvider::generate_keyring().to_string();
    let v2 = LocalKeyProvider::generate_keyring().replace("v1:", "v2:");
    let both = format!("{v1}\n{v2}");
    let enc = common::encryptor(&db.pool, &v1);
    enc.insert_many(&db.pool, &people(1, 50)).await.unwrap();
    let small = common::rowseal(&db.url, &both, &["rewrap", "--to", "local:v2"]).await;
    assert_eq!(small.code, Some(0), "{}", small.stderr);
    let small_calls = small.event("done").unwrap()["provider_calls"].clone();

    let big: i64 = std::env::var("ROWSEAL_TEST_REWRAP_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    for start in (51..=big).step_by(20_000) {
        let end = (start + 19_999).min(big);
        enc.insert_many(&db.pool, &people(start, end))
            .await
            .unwrap();
    }
    let big = common::rowseal(&db.url, &both, &["rewrap", "--to", "local:v1"]).await;
    assert_eq!(big.code, Some(0), "{}", big.stderr);
    let big_calls = big.event("done").unwrap()["provider_calls"].clone();
    assert_eq!(small_calls, big_calls);
    assert_eq!(big_calls["reencrypt"], 5, "one per tenant key (5 tenants)");
    let verify = common::rowseal(&db.url, &v1, &["verify"]).await;
    assert_eq!(verify.code, Some(0));
    db.finish().await;
}

/// The AWS KMS provider end to end: rows written under KMS key A, rotated,
/// rewrapped to key B (tenant keys and per-row data keys), verified with B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_rotate_rewrap_verify() {
    let Some(endpoint) = kms::endpoint() else {
        return;
    };
    let region = kms::REGION;
    let admin = kms::admin_client(&endpoint, region);
    let key_a = kms::create_key(&admin, false).await;
    let key_b = kms::create_key(&admin, false).await;

    let db = common::sqlite().await.unwrap();
    common::prepare(&db).await;
    let provider = rowseal_kms::AwsKmsProvider::builder(key_a.clone())
        .region(region)
        .endpoint_url(endpoint.clone())
        .build()
        .await
        .unwrap();
    let keys = rowseal_core::KeyHierarchy::new(
        std::sync::Arc::new(provider),
        std::sync::Arc::new(rowseal_sqlx::SqlxKeyStore::new(db.pool.clone())),
    );
    let enc = rowseal_sqlx::Encryptor::new(std::sync::Arc::new(keys));
    enc.insert_many(&db.pool, &people(1, 200)).await.unwrap();
    let secrets: Vec<Secret> = (1..=10)
        .map(|id| Secret {
            id,
            tenant_id: format!("t{}", id % 5),
            body: format!("secret {id}"),
        })
        .collect();
    enc.insert_many(&db.pool, &secrets).await.unwrap();

    let kms = |key: &str, args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--kms-key-id".into(),
            key.to_owned(),
            "--aws-region".into(),
            region.into(),
            "--kms-endpoint".into(),
            endpoint.clone(),
        ]);
        v
    };
    let run = |args: Vec<String>| {
        let url = db.url.clone();
        async move {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut c = common::command(&url, "", &a);
            c.env_remove("ROWSEAL_LOCAL_KEYS")
                .env("AWS_ACCESS_KEY_ID", "rowseal-test")
                .env("AWS_SECRET_ACCESS_KEY", "rowseal-test");
            let out = c.output().await.unwrap();
            common::parse(out.status.code(), &out.stdout, &out.stderr)
        }
    };
    let headers = |db: &common::Db<sqlx::Sqlite>| {
        let pool = db.pool.clone();
        async move {
            let rows: Vec<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT id, rowseal_header FROM secrets ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            rows
        }
    };
    let secret_headers = headers(&db).await;
    let r = run(kms(
        &key_a,
        &["rotate", "--all-tenants", "--kms-rate", "100"],
    ))
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let done = r.event("done").unwrap();
    assert_eq!(
        done["reencrypted"], 210,
        "200 derived-mode and 10 kms-mode rows"
    );
    // Derived mode: one GenerateDataKey per tenant (new version) and one
    // Decrypt per tenant (old version), 5 tenants whatever the rows; kms
    // mode: a new data key (GenerateDataKey) and the old one opened
    // (Decrypt) per row, 10 rows.
    assert_eq!(done["provider_calls"]["generate"], 5 + 10);
    assert_eq!(done["provider_calls"]["decrypt"], 5 + 10);
    let rotated = headers(&db).await;
    assert_eq!(rotated.len(), 10);
    assert!(
        rotated
            .iter()
            .zip(&secret_headers)
            .all(|(a, b)| a.0 == b.0 && a.1 != b.1),
        "every kms-mode row has a new wrapped data key"
    );
    let r = run(kms(&key_a, &["verify"])).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);

    let r = run(kms(&key_a, &["rewrap", "--to", &key_b])).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let done = r.event("done").unwrap();
    assert_eq!(done["keys_rewrapped"], 10, "5 tenants x 2 versions");
    assert_eq!(done["rows_rewrapped"], 10, "kms-mode rows");
    assert_eq!(done["provider_calls"]["reencrypt"], 20);

    // Every key is now under B (moto does not enforce disabled keys, so
    // check the stored key ids), every row opens, and a second rewrap has
    // nothing left to do.
    let not_b = common::scalar(
        &db,
        &format!("SELECT COUNT(*) FROM rowseal_keys WHERE root_key_id <> '{key_b}'"),
    )
    .await;
    assert_eq!(not_b, 0);
    let r = run(kms(&key_b, &["verify"])).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    // The database never chooses the root key: configured with A alone, the
    // tool refuses the keys now under B, until B is on its allow-list.
    // (verify reports each row it cannot open, and exits 1.)
    let r = run(kms(&key_a, &["verify"])).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stderr, r.stdout);
    let failures = r.all("failure");
    assert_eq!(failures.len(), 210, "every row");
    assert!(failures.iter().all(|f| {
        let e = f["error"].as_str().unwrap();
        e.contains("root key not allowed") && e.contains(&key_b)
    }));
    let r = run(kms(&key_a, &["verify", "--kms-allow-key", &key_b])).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    // rewrap stops at the first key it may not unwrap (a key-provider error).
    let r = run(kms(&key_a, &["rewrap", "--to", &key_a])).await;
    assert_eq!(r.code, Some(5), "{}\n{}", r.stderr, r.stdout);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("root key not allowed"),
        "{}\n{}",
        r.stderr,
        r.stdout
    );
    let r = run(kms(&key_b, &["rewrap", "--to", &key_b])).await;
    assert_eq!(r.event("done").unwrap()["provider_calls"]["total"], 0);
    db.finish().await;
}

/// `rotate --tenant` touches one tenant; `status` shows versions per tenant;
/// `--dry-run` writes nothing; a second rotation of the same scope is a new
/// job once the first is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_status_and_dry_runs() {
    let db = common::sqlite().await.unwrap();
    common::prepare(&db).await;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let enc = common::encryptor(&db.pool, &keyring);
    enc.insert_many(&db.pool, &people(1, 500)).await.unwrap();

    rowseal_sqlx::schema::create_table::<Contact, _>(&db.pool)
        .await
        .unwrap();
    rowseal_sqlx::schema::register::<Contact, _>(&db.pool)
        .await
        .unwrap();
    let contacts: Vec<Contact> = (1..=30)
        .map(|id| Contact {
            id,
            tenant_id: format!("t{}", id % 5),
            email: (id % 10 != 0).then(|| format!("c{id}@example.com")),
        })
        .collect();
    enc.insert_many(&db.pool, &contacts).await.unwrap();
    let s = common::rowseal(&db.url, &keyring, &["status", "--table", "contacts"]).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    // Every row written so far is in storage format 2.
    assert_eq!(
        s.event("table").unwrap()["rows_by_format_version"],
        serde_json::json!({"2": 30})
    );
    let cov = &s.event("table").unwrap()["blind_index_coverage"][0];
    assert_eq!(cov["index"], "email_idx", "{cov}");
    // Rows with a NULL field are stamped with the index version too (or,
    // in older layouts, show as "none").
    let by_version = cov["rows_by_index_version"].as_object().unwrap();
    let total: i64 = by_version.values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(total, 30, "{cov}");
    assert!(by_version["1"].as_i64().unwrap() >= 27, "{cov}");
    assert_eq!(cov["rows_behind_current_index_key"], 0);

    let r = common::rowseal(
        &db.url,
        &keyring,
        &["rotate", "--tenant", "t1", "--dry-run"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let plan = r.all("plan");
    assert!(plan
        .iter()
        .any(|p| p["table"] == "people" && p["rows"] == 100));
    assert_eq!(
        common::scalar(&db, "SELECT COUNT(*) FROM rowseal_keys WHERE version > 1").await,
        0,
        "a dry run creates no key"
    );

    let r = common::rowseal(&db.url, &keyring, &["rotate", "--tenant", "t1"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let done = r.event("done").unwrap();
    assert_eq!(done["reencrypted"], 106, "100 people and 6 contacts of t1");
    assert_eq!(done["provider_calls"]["generate"], 1);
    // The kms-mode table is part of the rotation (a new data key per row;
    // it has no rows here, so no provider call).
    assert_eq!(
        r.event("start").unwrap()["kms_mode_tables"],
        serde_json::json!(["secrets"])
    );

    let s = common::rowseal(&db.url, &keyring, &["status", "--table", "people"]).await;
    assert_eq!(s.code, Some(0));
    let t = s.event("table").unwrap();
    assert_eq!(t["rows_to_rotate"], 0);
    assert_eq!(t["rows_by_key_version"]["1"], 400);
    assert_eq!(t["rows_by_key_version"]["2"], 100);
    assert_eq!(t["tenants"]["t1"]["current_version"], 2);
    assert_eq!(t["tenants"]["t2"]["current_version"], 1);

    // Rotating all tenants moves t1 to v3, the others to v2; at most 4
    // key-provider calls per second: 5 new keys and 5 unwraps take > 2 s.
    let started = std::time::Instant::now();
    let r = common::rowseal(
        &db.url,
        &keyring,
        &[
            "rotate",
            "--all-tenants",
            "--workers",
            "3",
            "--kms-rate",
            "4",
        ],
    )
    .await;
    assert_eq!(r.event("done").unwrap()["provider_calls"]["total"], 10);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "rate limited"
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.event("done").unwrap()["reencrypted"], 530);
    assert_eq!(r.event("start").unwrap()["tenant_versions"]["t1"], 3);
    let r = common::rowseal(&db.url, &keyring, &["verify", "--batch-size", "33"]).await;
    assert_eq!(r.code, Some(0));
    assert_eq!(r.event("done").unwrap()["rows"], 530);

    let r = common::rowseal(&db.url, &keyring, &["shred", "--tenant", "t2", "--dry-run"]).await;
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.event("plan").unwrap()["keys"],
        3,
        "tenant key v1, v2 and index key v1"
    );
    let r = common::rowseal(&db.url, &keyring, &["verify"]).await;
    assert_eq!(r.code, Some(0), "the dry run destroyed nothing");
    let r = common::rowseal(
        &db.url,
        &keyring,
        &["rewrap", "--to", "local:v1", "--dry-run"],
    )
    .await;
    assert_eq!(r.code, Some(0));
    assert_eq!(r.event("done").unwrap()["provider_calls"]["total"], 0);
    db.finish().await;
}

/// `decrypt-column`: the way back to plaintext, resumable, by primary key.
async fn decrypt_column<DB: rowseal_sqlx::Backend>(db: common::Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    common::prepare(&db).await;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let enc = common::encryptor(&db.pool, &keyring);
    let mut rows = people(1, 300);
    for p in rows.iter_mut().filter(|p| p.id % 2 == 0) {
        p.note = Some(format!("note {}", p.id));
    }
    enc.insert_many(&db.pool, &rows).await.unwrap();
    let ty = if db.kind == "mysql" {
        "LONGTEXT"
    } else {
        "TEXT"
    };
    sqlx::raw_sql(&format!("ALTER TABLE people ADD COLUMN note_plain {ty}"))
        .execute(&db.pool)
        .await
        .unwrap();
    let args = [
        "decrypt-column",
        "--table",
        "people",
        "--column",
        "note",
        "--into",
        "note_plain",
        "--batch-size",
        "40",
    ];
    let r = common::rowseal(&db.url, &keyring, &[&args[..], &["--dry-run"]].concat()).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.event("plan").unwrap()["rows"], 150);
    let r = common::rowseal(&db.url, &keyring, &args).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.event("done").unwrap()["decrypted"], 150);
    assert!(!r.stdout.contains("note 2"), "no plaintext in the output");
    use rowseal_sqlx::{DbRow, SqlType, Value};
    let got = DB::fetch_all(&db.pool, "SELECT id, note_plain FROM people", vec![])
        .await
        .unwrap();
    for row in &got {
        let Value::I64(id) = row.read_value(0, SqlType::I64).unwrap() else {
            panic!("id")
        };
        let plain = row.read_value(1, SqlType::Text).unwrap();
        if id % 2 == 0 {
            assert_eq!(plain, Value::Text(format!("note {id}")));
        } else {
            assert!(plain.is_null());
        }
    }
    // Nothing left: a second run does nothing.
    let r = common::rowseal(&db.url, &keyring, &args).await;
    assert_eq!(r.event("done").unwrap()["decrypted"], 0);
    // A column that is not encrypted is refused.
    let r = common::rowseal(
        &db.url,
        &keyring,
        &[
            "decrypt-column",
            "--table",
            "people",
            "--column",
            "visits",
            "--into",
            "x",
        ],
    )
    .await;
    assert_eq!(r.code, Some(3));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_column_sqlite() {
    decrypt_column(common::sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_column_postgres() {
    if let Some(db) = common::postgres().await {
        decrypt_column(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_column_mariadb() {
    if let Some(db) = common::mysql().await {
        decrypt_column(db).await;
    }
}

/// clap's own consistency checks (unique flags, ...) for every command.
#[test]
fn command_line_is_consistent() {
    use clap::CommandFactory;
    rowseal_cli::Cli::command().debug_assert();
}

/// A model with a global blind index (lookups across tenants), for `shred`.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "members", record_type = "member", tenant = tenant_id, primary_key = id)]
struct Member {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(
            name = "login_idx",
            column = "login_bidx",
            bits = 64,
            normalize = "trim,lowercase",
            scope = "global"
        )
    )]
    login: String,
}

/// `shred --tenant ACME` destroys ACME's keys and nothing of tenant `acme`
/// (byte comparison, whatever the collation), clears ACME's rows' global
/// blind-index values, and an application that held ACME's keys holds none
/// of them one cache lifetime later (checked through the caches' own
/// introspection).
async fn shred_one_tenant<DB: rowseal_sqlx::Backend>(db: common::Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_core::{CacheConfig, KeyHierarchy, KeyScope};
    use rowseal_sqlx::{schema, Encryptor, SqlxKeyStore};
    use std::sync::Arc;
    use std::time::Duration;

    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Member, _>(&db.pool).await.unwrap();
    schema::register::<Member, _>(&db.pool).await.unwrap();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let ttl = Duration::from_millis(400);
    let keys = Arc::new(KeyHierarchy::with_cache_config(
        Arc::new(LocalKeyProvider::from_keyring_str(&keyring).unwrap()),
        Arc::new(SqlxKeyStore::new(db.pool.clone())),
        CacheConfig {
            max_entries: 1000,
            ttl,
        },
    ));
    let enc = Encryptor::new(keys.clone());
    let member = |id: i64, tenant: &str| Member {
        id,
        tenant_id: tenant.into(),
        login: format!("user{id}@example.com"),
    };
    let lower: Vec<Member> = (1..=5).map(|i| member(i, "acme")).collect();
    let upper: Vec<Member> = (6..=10).map(|i| member(i, "ACME")).collect();
    enc.insert_many(&db.pool, &lower).await.unwrap();
    enc.insert_many(&db.pool, &upper).await.unwrap();
    // Both tenants are read, so the application caches keys of both.
    for m in lower.iter().chain(&upper) {
        let got = enc
            .fetch::<Member, _>(&db.pool, &m.tenant_id, &m.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(m));
    }
    let found = Member::find_by_login(&enc, &db.pool, "user7@example.com")
        .await
        .unwrap();
    assert_eq!(found, vec![upper[1].clone()]);
    assert!(keys.cached_keys().holds_tenant("ACME"));

    let r = common::rowseal(
        &db.url,
        &keyring,
        &["shred", "--tenant", "ACME", "--yes-destroy-tenant", "ACME"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(
        done["keys_destroyed"], 1,
        "ACME's tenant key, nothing of acme's"
    );
    assert_eq!(done["global_index_rows_cleared"], 5);

    // No global-index value is left for ACME's rows; acme's are intact.
    let left = |tenant: &str| {
        format!(
            "SELECT COUNT(*) FROM members WHERE tenant_id = '{tenant}' AND (login_bidx IS NOT NULL OR login_bidx_alt IS NOT NULL)"
        )
    };
    let sql = left("ACME");
    let sql = if db.kind == "mysql" {
        sql.replace("tenant_id = 'ACME'", "tenant_id = BINARY 'ACME'")
    } else {
        sql
    };
    assert_eq!(common::scalar(&db, &sql).await, 0);
    let sql = left("acme");
    let sql = if db.kind == "mysql" {
        sql.replace("tenant_id = 'acme'", "tenant_id = BINARY 'acme'")
    } else {
        sql
    };
    assert_eq!(common::scalar(&db, &sql).await, 5);

    // One cache lifetime (and a sweep) later, the idle application holds no
    // key of ACME in any cache.
    tokio::time::sleep(ttl + ttl / 2).await;
    let cached = keys.cached_keys();
    assert!(!cached.holds_tenant("ACME"), "{cached:?}");
    assert!(cached.is_empty(), "every entry expired: {cached:?}");

    // A fresh process: acme reads and is found; ACME's rows are gone for good.
    let fresh = common::encryptor(&db.pool, &keyring);
    for m in &lower {
        let got = fresh
            .fetch::<Member, _>(&db.pool, "acme", &m.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(m));
    }
    let r = fresh
        .fetch::<Member, _>(&db.pool, "ACME", &upper[0].id)
        .await;
    assert!(r.is_err(), "a shredded tenant's row must not read: {r:?}");
    assert!(Member::find_by_login(&fresh, &db.pool, "user7@example.com")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        Member::find_by_login(&fresh, &db.pool, "user2@example.com")
            .await
            .unwrap(),
        vec![lower[1].clone()]
    );
    // The global index key itself lives on (other tenants use it).
    fresh
        .keys()
        .current_index_key(&KeyScope::Global)
        .await
        .unwrap();
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_one_tenant_sqlite() {
    shred_one_tenant(common::sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_one_tenant_postgres() {
    if let Some(db) = common::postgres().await {
        shred_one_tenant(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shred_one_tenant_mariadb() {
    if let Some(db) = common::mysql().await {
        shred_one_tenant(db).await;
    }
}

/// `status` counts rows per storage format version, and `verify` reports a
/// row header of another format version as such (finding 8 of the v1
/// review: the tool and the library now agree), not as a damaged row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_versions_in_status_and_verify() {
    use rowseal_sqlx::{Backend, Value};
    let db = common::sqlite().await.unwrap();
    common::prepare(&db).await;
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let enc = common::encryptor(&db.pool, &keyring);
    enc.insert_many(&db.pool, &people(1, 10)).await.unwrap();
    // Rows of an earlier writer (format 1) are counted, and verify.
    let old_writer = common::encryptor(&db.pool, &keyring).__writing_format_1();
    old_writer
        .insert_many(&db.pool, &people(11, 20))
        .await
        .unwrap();
    for (id, version) in [(1i64, 3u8), (2, 0xee)] {
        let rows = sqlx::Sqlite::fetch_all(
            &db.pool,
            "SELECT rowseal_header FROM people WHERE id = ?",
            vec![Value::I64(id)],
        )
        .await
        .unwrap();
        let mut header = rowseal_sqlx::DbRow::read_bytes(&rows[0], 0)
            .unwrap()
            .to_vec();
        header[0] = version;
        sqlx::Sqlite::execute(
            &db.pool,
            "UPDATE people SET rowseal_header = ? WHERE id = ?",
            vec![Value::Bytes(header), Value::I64(id)],
        )
        .await
        .unwrap();
    }
    let s = common::rowseal(&db.url, &keyring, &["status", "--table", "people"]).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    assert_eq!(
        s.event("table").unwrap()["rows_by_format_version"],
        serde_json::json!({"1": 10, "2": 8, "3": 1, "238": 1})
    );
    let r = common::rowseal(&db.url, &keyring, &["verify", "--table", "people"]).await;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let failures = r.all("failure");
    assert_eq!(failures.len(), 2, "{}", r.stdout);
    for f in failures {
        let e = f["error"].as_str().unwrap();
        assert!(
            e.contains("unsupported") || e.contains("version"),
            "a typed format error, not tampering: {e}"
        );
        assert!(!e.contains("decryption failed"), "{e}");
    }
    db.finish().await;
}
