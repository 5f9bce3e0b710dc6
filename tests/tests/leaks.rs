#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The leak check: a whole workload run with every log line captured at
//! TRACE level (rowseal's, sqlx's, the AWS SDK's, hyper's, `log` records
//! too), with panics forced on purpose inside tasks that use rowseal (their
//! messages captured by a panic hook), and with the `Display` and `Debug` of
//! every error and of every rowseal value that holds a secret captured too.
//! Then the captured output is scanned for the workload's plaintext values
//! (distinctive markers) and for every key byte string the test can reach
//! (the local root keys, every data key a provider handed out, the key bytes
//! of a bad keyring), raw, in hex (lower and upper case) and in base64
//! (standard and URL-safe, with and without padding, at each of the three
//! alignments inside a longer base64 string). The test prints how many
//! bytes it scanned.
//!
//! The check can fail: `the_scanner_catches_every_spelling` plants each
//! spelling of a key and of a marker in a captured line and sees the scanner
//! report it, and the main test plants one through `tracing` at the end.
//!
//! Run: `bash scripts/with-kms-server.sh cargo test --workspace --all-features --test leaks -- --nocapture`
//! (`ROWSEAL_LEAK_DUMP=/tmp/captured.log` also writes what was scanned).
//! Without `ROWSEAL_TEST_KMS_ENDPOINT` or PostgreSQL the PostgreSQL + AWS KMS
//! half skips loudly, or fails under `CI=true`. The models' own `Debug`
//! (`#[derive(Debug)]` on the application's struct) prints their fields by
//! design and is not captured: rowseal does not generate it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rowseal::sqlx;
use rowseal::{
    schema, CacheConfig, DataKey, Encrypted, EncryptionContext, Encryptor, KeyHierarchy,
    KeyProvider, KeyScope, LocalKeyProvider, SecretKey, SqlxKeyStore, WrappedKey,
};
use rowseal_e2e::db;
use rowseal_e2e::kms::{admin_client, create_key, provider_builder, REGION};
use rowseal_e2e::proxy::{Fault, FaultProxy};
use rowseal_sqlx::{Backend, Value};

// ---- the workload's models ---------------------------------------------------

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "leak_patients",
    record_type = "leak_patient",
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
        blind_index(name = "leak_email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(
        encrypt,
        blind_index(name = "leak_ssn_idx", bits = 16, normalize = "digits")
    )]
    ssn: Option<String>,
    #[rowseal(encrypt)]
    notes: Vec<u8>,
    visits: i64,
}

/// One provider data key per row (`kms` key mode).
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "leak_audited",
    record_type = "leak_audited",
    tenant = clinic,
    primary_key = id,
    key_mode = "kms"
)]
struct Audited {
    id: i64,
    clinic: String,
    #[rowseal(encrypt)]
    secret: String,
}

// ---- capture -----------------------------------------------------------------

/// Everything captured: log lines, panic messages, errors, Debug output.
fn buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) the TRACE subscriber writing into
/// [`buffer`], the `log` bridge, and a panic hook that records every panic
/// message before the default hook prints it.
fn install_capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let buf = buffer().clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_target(true)
            .with_thread_names(true)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || BufWriter(buf.clone()))
            .try_init()
            .expect("no other global subscriber");
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut w = BufWriter(buffer().clone());
            let _ = writeln!(w, "PANIC: {info}");
            previous(info);
        }));
    });
}

/// Adds one captured text (an error's Display/Debug, a value's Debug).
fn record(label: &str, text: &str) {
    let mut w = BufWriter(buffer().clone());
    let _ = writeln!(w, "CAPTURED {label}: {text}");
}

/// Records an error's Display and Debug and those of its whole source chain.
fn record_error(label: &str, e: &(dyn std::error::Error + 'static)) {
    record(&format!("{label} (Display)"), &e.to_string());
    record(&format!("{label} (Debug)"), &format!("{e:?}"));
    let mut source = e.source();
    while let Some(s) = source {
        record(&format!("{label} source (Display)"), &s.to_string());
        record(&format!("{label} source (Debug)"), &format!("{s:?}"));
        source = s.source();
    }
}

// ---- secrets and the scanner ---------------------------------------------------

/// A secret the output must never hold.
#[derive(Clone)]
struct Secret {
    label: String,
    bytes: Vec<u8>,
    /// Plaintext markers are also searched case-insensitively (a normalized
    /// copy would be lowercase).
    text: bool,
}

fn secrets() -> &'static Mutex<Vec<Secret>> {
    static S: OnceLock<Mutex<Vec<Secret>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Vec::new()))
}

fn add_key(label: &str, key: &[u8]) {
    secrets().lock().unwrap().push(Secret {
        label: label.to_owned(),
        bytes: key.to_vec(),
        text: false,
    });
}

/// A plaintext value carrying a distinctive marker; registered as a secret.
fn marker(what: &str) -> String {
    let m = format!(
        "lkm{:012x}-{what}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    secrets().lock().unwrap().push(Secret {
        label: format!("plaintext {what}"),
        bytes: m.as_bytes().to_vec(),
        text: true,
    });
    m
}

/// Bytes as a string of one char per byte (Latin-1), so that `str::contains`
/// searches raw bytes too.
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Every spelling of a secret that is searched for, with its name.
fn spellings(s: &Secret) -> Vec<(String, String)> {
    let b = &s.bytes;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let mut out = vec![
        ("raw".to_owned(), latin1(b)),
        ("hex".to_owned(), hex.clone()),
        ("HEX".to_owned(), hex.to_uppercase()),
        ("base64".to_owned(), STANDARD.encode(b)),
        ("base64 unpadded".to_owned(), STANDARD_NO_PAD.encode(b)),
        ("base64url".to_owned(), URL_SAFE.encode(b)),
        ("base64url unpadded".to_owned(), URL_SAFE_NO_PAD.encode(b)),
    ];
    // Inside a longer base64 string the secret starts at offset 0, 1 or 2 of
    // a 3-byte group: the characters that depend on the secret alone.
    for shift in 1..3usize {
        for (name, engine) in [
            ("base64", &STANDARD_NO_PAD),
            ("base64url", &URL_SAFE_NO_PAD),
        ] {
            let mut padded = vec![0u8; shift];
            padded.extend_from_slice(b);
            let enc = engine.encode(&padded);
            // Skip the characters that mix in the prefix; drop the last 2
            // characters, which may mix in whatever follows.
            let start = (shift * 8).div_ceil(6);
            let end = enc.len().saturating_sub(2);
            if end > start + 8 {
                out.push((
                    format!("{name} at offset {shift}"),
                    enc[start..end].to_owned(),
                ));
            }
        }
    }
    out
}

/// The leaks in `captured`: (secret, spelling, a line of context).
fn find_leaks(captured: &[u8], secrets: &[Secret]) -> Vec<String> {
    let hay = latin1(captured);
    let hay_lower = hay.to_lowercase();
    let mut found = Vec::new();
    for s in secrets {
        for (how, needle) in spellings(s) {
            let at = hay.find(&needle).or_else(|| {
                if s.text && how == "raw" {
                    hay_lower.find(&needle.to_lowercase())
                } else {
                    None
                }
            });
            if let Some(at) = at {
                let line_start = hay[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = hay[at..].find('\n').map_or(hay.len(), |i| at + i);
                let line: String = hay[line_start..line_end].chars().take(400).collect();
                found.push(format!("{} as {how}, in: {line}", s.label));
            }
        }
    }
    found
}

// ---- a provider that hands its data keys to the scanner ------------------------

/// Wraps a provider and registers every plaintext data key it returns.
#[derive(Debug)]
struct Recording(Arc<dyn KeyProvider>);

#[async_trait]
impl KeyProvider for Recording {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn current_key_id(&self) -> &str {
        self.0.current_key_id()
    }
    async fn generate_data_key(&self, context: &EncryptionContext) -> rowseal::Result<DataKey> {
        let dk = self.0.generate_data_key(context).await?;
        add_key("a generated data key", dk.plaintext.expose_secret());
        record("DataKey", &format!("{dk:?}"));
        Ok(dk)
    }
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> rowseal::Result<SecretKey> {
        let k = self.0.decrypt_data_key(wrapped, context).await?;
        add_key("an unwrapped data key", k.expose_secret());
        record("SecretKey", &format!("{k:?}"));
        Ok(k)
    }
    async fn reencrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
        destination_key_id: &str,
    ) -> rowseal::Result<WrappedKey> {
        self.0
            .reencrypt_data_key(wrapped, context, destination_key_id)
            .await
    }
}

fn encryptor<DB: Backend>(pool: &sqlx::Pool<DB>, provider: Arc<dyn KeyProvider>) -> Encryptor {
    let keys = KeyHierarchy::with_cache_config(
        Arc::new(Recording(provider)),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        CacheConfig {
            max_entries: 1000,
            ttl: Duration::from_secs(300),
        },
    );
    Encryptor::new(Arc::new(keys))
}

/// A local provider over fresh root keys (v1, v2), registered as secrets.
fn local_provider() -> LocalKeyProvider {
    let (k1, k2) = (SecretKey::generate(), SecretKey::generate());
    add_key("local root key v1", k1.expose_secret());
    add_key("local root key v2", k2.expose_secret());
    let ring = format!(
        "{}\n{}\n",
        &*LocalKeyProvider::keyring_entry(1, &k1),
        &*LocalKeyProvider::keyring_entry(2, &k2)
    );
    let p = LocalKeyProvider::from_keyring_str(&ring).unwrap();
    record("LocalKeyProvider", &format!("{p:?}"));
    p
}

// ---- the workload --------------------------------------------------------------

async fn set_bytes<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    table: &str,
    column: &str,
    id: i64,
    b: Vec<u8>,
) where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("UPDATE ");
    DB::push_ident(&mut sql, table);
    sql.push_str(" SET ");
    DB::push_ident(&mut sql, column);
    sql.push_str(" = ");
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" WHERE id = ");
    DB::push_placeholder(&mut sql, 2);
    assert_eq!(
        DB::execute(pool, &sql, vec![Value::Bytes(b), Value::I64(id)])
            .await
            .unwrap(),
        1
    );
}

async fn get_bytes<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    table: &str,
    column: &str,
    id: i64,
) -> Vec<u8>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use rowseal_sqlx::DbRow as _;
    let mut sql = String::from("SELECT ");
    DB::push_ident(&mut sql, column);
    sql.push_str(" FROM ");
    DB::push_ident(&mut sql, table);
    sql.push_str(" WHERE id = ");
    DB::push_placeholder(&mut sql, 1);
    let row = DB::fetch_optional(pool, &sql, vec![Value::I64(id)])
        .await
        .unwrap()
        .unwrap();
    row.read_bytes(0).unwrap().to_vec()
}

fn patient(id: i64, clinic: &str, what: &str) -> Patient {
    Patient {
        id,
        clinic: clinic.into(),
        name: marker(&format!("{what}-name")),
        email: format!("{}@example.com", marker(&format!("{what}-email"))),
        ssn: Some(format!(
            "{}-{:03}-45-6789",
            marker(&format!("{what}-ssn")),
            id
        )),
        notes: marker(&format!("{what}-notes")).into_bytes(),
        visits: id,
    }
}

/// Inserts, reads, lookups, updates, a wrong tenant, tampered rows, a panic
/// inside a task: everything on `enc` over `pool`. Returns the number of
/// typed errors seen.
async fn workload<DB: Backend>(label: &str, pool: &sqlx::Pool<DB>, enc: &Encryptor) -> usize
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut errors = 0;
    schema::install(pool).await.unwrap();
    schema::create_table::<Patient, _>(pool).await.unwrap();
    schema::create_table::<Audited, _>(pool).await.unwrap();
    schema::register::<Patient, _>(pool).await.unwrap();

    // Inserts (one by one and in bulk), both key modes.
    let rows: Vec<Patient> = (1..=6)
        .map(|i| {
            patient(
                i,
                if i % 2 == 0 { "clinic-b" } else { "clinic-a" },
                &format!("{label}{i}"),
            )
        })
        .collect();
    enc.insert(pool, &rows[0]).await.unwrap();
    assert_eq!(enc.insert_many(pool, &rows[1..]).await.unwrap(), 5);
    for i in 1..=3 {
        enc.insert(
            pool,
            &Audited {
                id: i,
                clinic: "clinic-a".into(),
                secret: marker(&format!("{label}-audited{i}")),
            },
        )
        .await
        .unwrap();
    }

    // Reads and lookups.
    for r in &rows {
        let got = enc
            .fetch::<Patient, _>(pool, &r.clinic, &r.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(r));
        let by_email = Patient::find_by_leak_email(
            enc,
            pool,
            &r.clinic,
            &format!("  {}  ", r.email.to_uppercase()),
        )
        .await
        .unwrap();
        assert_eq!(by_email, vec![r.clone()]);
        let by_ssn = Patient::find_by_leak_ssn(enc, pool, &r.clinic, r.ssn.as_deref().unwrap())
            .await
            .unwrap();
        assert!(by_ssn.contains(r));
    }
    let audited = enc
        .fetch::<Audited, _>(pool, "clinic-a", &2)
        .await
        .unwrap()
        .unwrap();
    assert!(audited.secret.contains("audited2"));

    // Updates: whole row and one field.
    let mut first = rows[0].clone();
    first.name = marker(&format!("{label}-renamed"));
    enc.update(pool, &first).await.unwrap();
    first.notes = marker(&format!("{label}-renotes")).into_bytes();
    enc.update_fields(pool, &first, &["notes"]).await.unwrap();
    assert_eq!(
        enc.fetch::<Patient, _>(pool, "clinic-a", &1).await.unwrap(),
        Some(first.clone())
    );

    // The wrong tenant sees nothing.
    assert_eq!(
        enc.fetch::<Patient, _>(pool, "clinic-b", &1).await.unwrap(),
        None
    );
    assert!(
        Patient::find_by_leak_email(enc, pool, "clinic-b", &first.email)
            .await
            .unwrap()
            .is_empty()
    );

    // Tampering: a ciphertext copied from another row, a flipped header
    // byte, a flipped ciphertext byte, a kms-mode header cut short.
    let name_of_3 = get_bytes(pool, "leak_patients", "name", 3).await;
    set_bytes(pool, "leak_patients", "name", 5, name_of_3).await;
    let mut header_of_3 = get_bytes(pool, "leak_patients", "rowseal_header", 3).await;
    header_of_3[10] ^= 0x40;
    set_bytes(pool, "leak_patients", "rowseal_header", 3, header_of_3).await;
    let mut email_of_1 = get_bytes(pool, "leak_patients", "email", 1).await;
    let last = email_of_1.len() - 1;
    email_of_1[last] ^= 1;
    set_bytes(pool, "leak_patients", "email", 1, email_of_1).await;
    let mut audited_header = get_bytes(pool, "leak_audited", "rowseal_header", 3).await;
    audited_header.truncate(audited_header.len() - 7);
    set_bytes(pool, "leak_audited", "rowseal_header", 3, audited_header).await;
    for (clinic, id) in [("clinic-a", 5i64), ("clinic-a", 3), ("clinic-a", 1)] {
        let e = enc
            .fetch::<Patient, _>(pool, clinic, &id)
            .await
            .expect_err("a tampered row read");
        assert!(matches!(e, rowseal::Error::Field { .. }), "{e:?}");
        record_error(&format!("{label} tampered row {id}"), &e);
        errors += 1;
    }
    let e = enc
        .fetch::<Audited, _>(pool, "clinic-a", &3)
        .await
        .expect_err("a tampered kms-mode header read");
    record_error(&format!("{label} tampered kms-mode row"), &e);
    errors += 1;
    // The bulk read: one result per row, the bad ones typed errors.
    let sql = format!(
        "SELECT {} FROM leak_patients ORDER BY id",
        Encryptor::select_list::<Patient, DB>()
    );
    let raw = DB::fetch_all(pool, &sql, vec![]).await.unwrap();
    let each = enc
        .decrypt_each::<Patient, _>(rowseal::TenantScope::Any, &raw)
        .await
        .unwrap();
    assert_eq!(each.len(), 6);
    for r in each {
        if let Err(e) = r {
            record_error(&format!("{label} bulk read"), &e);
            errors += 1;
        }
    }

    // Panics forced on purpose inside tasks using rowseal: an `expect` on a
    // failed read (the panic message holds the error's Debug), and a panic
    // formatting the row key and hierarchy in use.
    let (enc2, pool2) = (enc.clone(), pool.clone());
    let joined = tokio::spawn(async move {
        enc2.fetch::<Patient, _>(&pool2, "clinic-a", &5)
            .await
            .expect("reading row 5 on purpose")
    })
    .await;
    let join_err = joined.expect_err("the task panicked");
    assert!(join_err.is_panic());
    record("JoinError (Debug)", &format!("{join_err:?}"));
    let keys = enc.keys().clone();
    let joined = tokio::spawn(async move {
        let spec = rowseal::RecordSpec::new("leak_patient", "leak_patients");
        let present = rowseal::FieldSet::new(["name", "notes"]).unwrap();
        let row = keys
            .new_row_key(&spec, "clinic-a", None, &present)
            .await
            .unwrap();
        let tenant = keys.current_tenant_key("clinic-a").await.unwrap();
        let index = keys
            .current_index_key(&KeyScope::Tenant("clinic-a".into()))
            .await
            .unwrap();
        let blind = index
            .blind_index_key("leak_patient", "leak_email_idx")
            .unwrap();
        let rk = tenant.record_keys(&spec).unwrap();
        record(
            "key values (Debug)",
            &format!(
                "{row:?} {:?} {tenant:?} {index:?} {blind:?} {rk:?} {keys:?}",
                row.header()
            ),
        );
        panic!("on purpose, holding {row:?} {tenant:?} {index:?} {blind:?}");
    })
    .await;
    assert!(joined.expect_err("the task panicked").is_panic());
    record("Encryptor (Debug)", &format!("{enc:?}"));
    errors
}

async fn bad_configs() -> usize {
    let mut errors = 0;
    // Keyrings that are wrong in every way, holding key bytes.
    let short = SecretKey::generate();
    add_key("a key in a bad keyring", short.expose_secret());
    let b64 = STANDARD.encode(short.expose_secret());
    add_key(
        "a 31-byte key in a bad keyring",
        &short.expose_secret()[..31],
    );
    let b64_31 = STANDARD.encode(&short.expose_secret()[..31]);
    for ring in [
        format!("v1:{b64_31}"),
        format!("v1:{b64}!"),
        format!("v0:{b64}"),
        b64.clone(),
        format!("v1:{b64}\nv1:{b64}"),
        format!("x1:{}", URL_SAFE_NO_PAD.encode(short.expose_secret())),
    ] {
        let e = LocalKeyProvider::from_keyring_str(&ring).expect_err("a bad keyring");
        record_error("bad keyring", &e);
        errors += 1;
    }
    // The same through the environment variable and a file.
    let dir = std::env::temp_dir().join(rowseal_e2e::random_name());
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.keys");
    std::fs::write(&file, format!("v1:{b64_31}\n")).unwrap();
    let e = LocalKeyProvider::from_file(&file).expect_err("a bad keyring file");
    record_error("bad keyring file", &e);
    let _ = std::fs::remove_dir_all(&dir);
    // A panic on a bad configuration (`unwrap` at start-up).
    let r = std::panic::catch_unwind(|| {
        LocalKeyProvider::from_keyring_str(&format!("v1:{b64_31}")).unwrap()
    });
    assert!(r.is_err());
    errors + 1
}

// ---- the tests -----------------------------------------------------------------

#[test]
fn the_scanner_catches_every_spelling() {
    let key = Secret {
        label: "a planted key".into(),
        bytes: (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(200))
            .collect(),
        text: false,
    };
    let text = Secret {
        label: "a planted marker".into(),
        bytes: b"lkm0123456789ab-planted".to_vec(),
        text: true,
    };
    let clean = b"2026-11-30T00:00:00Z TRACE sqlx::query: SELECT 1\nnothing to see\n".to_vec();
    assert!(find_leaks(&clean, &[key.clone(), text.clone()]).is_empty());
    for s in [&key, &text] {
        for (how, spelled) in spellings(s) {
            // Inside a line, with text around it (for the offset spellings,
            // inside a longer base64 string).
            let mut planted = clean.clone();
            planted.extend_from_slice(b"INFO rowseal: value=\"xy");
            planted.extend(spelled.chars().map(|c| c as u8));
            planted.extend_from_slice(b"zz\"\n");
            let leaks = find_leaks(&planted, std::slice::from_ref(s));
            assert!(!leaks.is_empty(), "{} as {how} was not caught", s.label);
        }
    }
    // Uppercased plaintext is caught too.
    let mut planted = clean.clone();
    planted.extend_from_slice(b"LKM0123456789AB-PLANTED\n");
    assert!(!find_leaks(&planted, &[text]).is_empty());
    // A key embedded in a longer base64 blob, at each alignment.
    for prefix in 0..3usize {
        let mut blob = vec![0x5au8; prefix];
        blob.extend_from_slice(&key.bytes);
        blob.extend_from_slice(&[1, 2, 3, 4]);
        for enc in [STANDARD.encode(&blob), URL_SAFE_NO_PAD.encode(&blob)] {
            let mut planted = clean.clone();
            planted.extend_from_slice(format!("blob={enc}\n").as_bytes());
            assert!(
                !find_leaks(&planted, std::slice::from_ref(&key)).is_empty(),
                "a key at offset {prefix} of a base64 blob was not caught"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_or_key_bytes_in_any_output() {
    install_capture();
    tracing::info!(target: "rowseal_leak_check", "capture started");
    let mut errors = 0;

    // SQLite + the local provider.
    let sqlite = db::sqlite(4).await;
    let enc = encryptor(&sqlite.pool, Arc::new(local_provider()));
    errors += workload("sqlite", &sqlite.pool, &enc).await;
    // The same data read with another root key: typed errors.
    let wrong = encryptor(&sqlite.pool, Arc::new(local_provider()));
    let e = wrong
        .fetch::<Patient, _>(&sqlite.pool, "clinic-b", &2)
        .await
        .expect_err("another root key read a row");
    record_error("wrong root key", &e);
    errors += 1;
    sqlite.finish().await;
    errors += bad_configs().await;

    // PostgreSQL + AWS KMS (the moto test server), with denied and disabled
    // keys through the fault proxy (moto itself does not refuse a disabled
    // key's GenerateDataKey or Decrypt).
    let mut kms_ran = false;
    if let Some(endpoint) = rowseal_e2e::kms::endpoint() {
        if let Some(pg) = db::postgres(8).await {
            let admin = admin_client(&endpoint, REGION);
            let arn = create_key(&admin, false).await;
            let proxy = FaultProxy::start(&endpoint).await;
            let kms = provider_builder(&arn, &proxy.url).build().await.unwrap();
            record("AwsKmsProvider (Debug)", &format!("{kms:?}"));
            let enc = encryptor(&pg.pool, Arc::new(kms));
            errors += workload("pg", &pg.pool, &enc).await;

            for (code, what) in [
                ("AccessDeniedException", "denied"),
                ("DisabledException", "disabled"),
                ("NotFoundException", "not found"),
                ("KMSInvalidStateException", "pending deletion"),
            ] {
                enc.keys().forget_cached_keys();
                proxy.fail_always(None, Fault::code(code));
                let e = enc
                    .insert(&pg.pool, &patient(100, &format!("clinic-{code}"), what))
                    .await
                    .expect_err("a write with a refused key");
                record_error(&format!("KMS {what}, write"), &e);
                let e = enc
                    .fetch::<Patient, _>(&pg.pool, "clinic-b", &2)
                    .await
                    .expect_err("a read with a refused key");
                record_error(&format!("KMS {what}, read"), &e);
                let e = enc
                    .fetch::<Audited, _>(&pg.pool, "clinic-a", &1)
                    .await
                    .expect_err("a kms-mode read with a refused key");
                record_error(&format!("KMS {what}, kms-mode read"), &e);
                errors += 3;
                proxy.clear_faults();
            }
            // Throttled until the retries give up.
            enc.keys().forget_cached_keys();
            proxy.fail_always(None, Fault::throttling());
            let e = enc
                .fetch::<Patient, _>(&pg.pool, "clinic-b", &4)
                .await
                .expect_err("a read while throttled");
            record_error("KMS throttled", &e);
            proxy.clear_faults();
            errors += 1;
            // A real refusal from the server: a key id that does not exist.
            let gone = provider_builder(&format!("{arn}-gone"), &endpoint)
                .build()
                .await;
            match gone {
                Err(e) => record_error("KMS unknown key at build", &e),
                Ok(p) => {
                    let enc = encryptor(&pg.pool, Arc::new(p));
                    let e = enc
                        .insert(&pg.pool, &patient(101, "clinic-gone", "gone"))
                        .await
                        .expect_err("a write under an unknown key");
                    record_error("KMS unknown key", &e);
                }
            }
            errors += 1;
            pg.finish().await;
            kms_ran = true;
        }
    }

    // Scan.
    tracing::info!(target: "rowseal_leak_check", "workload done");
    let captured = buffer().lock().unwrap().clone();
    if let Ok(path) = std::env::var("ROWSEAL_LEAK_DUMP") {
        // For a human to read what was scanned.
        std::fs::write(path, &captured).unwrap();
    }
    let secrets = secrets().lock().unwrap().clone();
    let leaks = find_leaks(&captured, &secrets);
    let keys = secrets.iter().filter(|s| !s.text).count();
    // Straight to stderr (not the test harness's captured print), so that the
    // CI log shows what was scanned even when the check passes.
    let _ = writeln!(
        std::io::stderr(),
        "leak check: scanned {} bytes of captured output ({} lines) for {} plaintext markers and {} \
         key byte strings, {} spellings each; {} typed errors captured; PostgreSQL + AWS KMS: {}; \
         leaks found: {}",
        captured.len(),
        captured.iter().filter(|&&b| b == b'\n').count(),
        secrets.len() - keys,
        keys,
        spellings(&secrets[0]).len(),
        errors,
        if kms_ran { "ran" } else { "skipped" },
        leaks.len()
    );
    assert!(
        // About 40 kB for the SQLite half alone, 1.9 MB with KMS.
        captured.len() > 20_000,
        "suspiciously little output captured ({} bytes): is TRACE capture working?",
        captured.len()
    );
    // The capture holds what it should: sqlx's statements, rowseal's own
    // events, the forced panics, the errors.
    let text = String::from_utf8_lossy(&captured);
    for expected in [
        "sqlx::query",
        "PANIC: ",
        "reading row 5 on purpose",
        "CAPTURED bad keyring",
    ] {
        assert!(
            text.contains(expected),
            "nothing like {expected:?} was captured"
        );
    }
    if kms_ran {
        assert!(text.contains("aws_"), "no AWS SDK log line was captured");
    }
    assert!(
        leaks.is_empty(),
        "secrets in the captured output:\n{}",
        leaks.join("\n")
    );

    // The check can fail: a data key logged through tracing is caught.
    let planted = secrets.iter().find(|s| !s.text).unwrap().clone();
    let hex: String = planted.bytes.iter().map(|b| format!("{b:02X}")).collect();
    tracing::trace!(target: "rowseal_leak_check", key = %hex, "planted on purpose");
    let captured = buffer().lock().unwrap().clone();
    assert_eq!(
        find_leaks(&captured, std::slice::from_ref(&planted)).len(),
        1,
        "a key planted in a TRACE line was not caught"
    );
}
