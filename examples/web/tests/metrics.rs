//! `GET /metrics` after a scripted workload: its figures equal what the KMS
//! server and the database saw.
//!
//! The workload (over HTTP, as a client would): patients created in three
//! tenants, read one by one, listed, looked up by e-mail, updated, given
//! medical records, listed with their records; then the app restarted (a
//! cold key cache) and read again, one KMS call refused, and one stored
//! ciphertext changed by raw SQL. Then, from `/metrics`:
//!
//! - key-provider calls by operation equal the requests the KMS server got
//!   per operation (counted by a proxy in front of it), the refused one by
//!   its outcome, and `GenerateDataKey` calls equal the keys in
//!   `rowseal_keys`;
//! - rows sealed equal the rows in the tables plus the rows updated; rows
//!   opened equal the rows the API returned (and read for its updates);
//! - the changed row is one decryption failure of kind `tampered`;
//! - key-cache counters equal the key hierarchies' own;
//! - nothing in the text names a tenant or a value.
//!
//! On PostgreSQL with a key in the KMS test server (needs the server:
//! `bash scripts/with-kms-server.sh cargo test -p web-example --test metrics`,
//! else a loud skip, or a failure under `CI=true`), and on SQLite with a
//! local key (always). Both run in one test, one after the other: the
//! process has one `metrics` recorder, and every check is a difference
//! between two scrapes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rowseal::sqlx::{self, Row};
use rowseal::CacheStats;
use rowseal_test_support::proxy::{Fault, FaultProxy};
use rowseal_test_support::{db, kms, random_name};
use serde_json::{json, Value};
use uuid::Uuid;
use web_example::{AppState, Config, DatabaseConfig, KeyConfig};

/// Three clinics.
const TENANTS: [&str; 3] = [
    "0b7e6c1a-3f1d-4c8e-9a55-1d2f3e4a5b6c",
    "5d9f2e7b-8a4c-4b1e-b3d6-7e8f9a0b1c2d",
    "c4a1b2d3-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
];
/// Patients per clinic.
const PER_TENANT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_equal_the_kms_server_and_the_database() {
    sqlite_with_a_local_key().await;
    postgres_with_kms().await;
}

async fn sqlite_with_a_local_key() {
    let dir = std::env::temp_dir().join(random_name());
    std::fs::create_dir_all(&dir).unwrap();
    let db_file = dir.join("web.db");
    let config = Config {
        database: DatabaseConfig::Sqlite(db_file.clone()),
        keys: KeyConfig::LocalFile(dir.join("web.keys")),
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let raw = RawDb::Sqlite(
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db_file)),
    );
    let run = scenario(&config, &raw, None).await;
    // The local provider has no server to count at: what a cold cache must
    // cost instead. The restarted app read tenant 0 (its tenant key) and
    // looked up in tenant 1 (its index key and tenant key): three unwraps,
    // whatever the number of rows.
    assert_eq!(
        run.provider_calls("decrypt_data_key", Some("ok")),
        3.0,
        "sqlite: {:?}",
        run.provider
    );
    close(raw).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn postgres_with_kms() {
    let Some(endpoint) = kms::endpoint() else {
        return;
    };
    let Some(test_db) = db::postgres(2).await else {
        return;
    };
    let admin = kms::admin_client(&endpoint, kms::REGION);
    let key_arn = kms::create_key(&admin, false).await;
    // Every request the app sends to KMS goes through the proxy, which
    // counts them by operation.
    let proxy = FaultProxy::start(&endpoint).await;
    let config = Config {
        database: DatabaseConfig::Postgres(test_db.url.clone()),
        keys: KeyConfig::Kms {
            key_id: key_arn,
            allowed_keys: Vec::new(),
            region: Some(kms::REGION.into()),
            endpoint: Some(proxy.url.clone()),
        },
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let raw = RawDb::Postgres(test_db.pool.clone());
    let run = scenario(&config, &raw, Some(&proxy)).await;

    let at_server = |op: &str| proxy.count(Some(op)) as f64;
    assert_eq!(
        run.provider_calls("generate_data_key", None),
        at_server("GenerateDataKey"),
        "{:?}",
        run.provider
    );
    assert_eq!(
        run.provider_calls("decrypt_data_key", None),
        at_server("Decrypt"),
        "{:?}",
        run.provider
    );
    assert_eq!(at_server("ReEncrypt"), 0.0);
    // Every request but the start-up DescribeKey (one per app start) is a
    // provider call the metrics saw.
    let total: f64 = run.provider.values().sum();
    assert_eq!(
        total,
        proxy.count(None) as f64 - at_server("DescribeKey"),
        "{:?}",
        run.provider
    );
    assert_eq!(at_server("DescribeKey"), 2.0);
    // The refused request: one call with its outcome, at both ends.
    assert_eq!(
        proxy.faulted(),
        vec![("Decrypt".to_owned(), "AccessDeniedException".to_owned())]
    );
    assert_eq!(
        run.provider_calls("decrypt_data_key", Some("access_denied")),
        1.0
    );
    // A cold start costs per tenant, not per row: tenants 0 and 2's tenant
    // keys, tenant 1's index and tenant keys, tenant 2's once more after
    // the refusal.
    assert_eq!(at_server("Decrypt"), 5.0);
    drop(proxy);
    close(raw).await;
    test_db.finish().await;
}

/// What a scenario measured, for the checks that depend on the provider.
struct Run {
    /// Provider calls during the run, by (operation, outcome).
    provider: HashMap<(String, String), f64>,
}

impl Run {
    fn provider_calls(&self, operation: &str, outcome: Option<&str>) -> f64 {
        self.provider
            .iter()
            .filter(|((op, out), _)| op == operation && outcome.is_none_or(|o| o == out))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The workload, and every check that holds on either database and
/// provider. `proxy`: the KMS proxy (PostgreSQL), to refuse one request.
async fn scenario(config: &Config, raw: &RawDb, proxy: Option<&FaultProxy>) -> Run {
    let kind = match proxy {
        Some(_) => "postgres+kms",
        None => "sqlite+local",
    };
    let mut expected = Expected::default();
    let app = App::launch(config).await;
    let before = app.scrape().await;
    let base1 = app.cache_stats();

    // Patients, read back one by one.
    let mut ids: Vec<Vec<String>> = Vec::new();
    for (t, tenant) in TENANTS.iter().enumerate() {
        let mut mine = Vec::new();
        for i in 0..PER_TENANT {
            let body = json!({
                "name": format!("Patient {t}-{i}"),
                "email": format!("patient.{t}.{i}@example.com"),
                "ssn": format!("{t}{i}0-00-000{i}"),
            });
            let r = app
                .call(Method::POST, "/patients", Some(tenant), Some(&body))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{kind}: {}", r.text);
            mine.push(r.json["id"].as_str().unwrap().to_owned());
        }
        ids.push(mine);
    }
    for (t, tenant) in TENANTS.iter().enumerate() {
        for id in &ids[t] {
            let r = app.get(&format!("/patients/{id}"), tenant).await;
            assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
            expected.patients_opened += 1;
        }
        // The list: the app's own query, opened with open_all.
        let r = app.get("/patients?limit=50", tenant).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        let n = r.json.as_array().unwrap().len();
        assert_eq!(n, PER_TENANT);
        expected.patients_opened += n as u64;
    }
    // Lookups by e-mail (a 64-bit index: the candidates are the matches).
    for t in [0, 1] {
        let body = json!({"email": format!(" PATIENT.{t}.1@example.com")});
        let r = app
            .call(
                Method::POST,
                "/patients/search",
                Some(TENANTS[t]),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        let n = r.json.as_array().unwrap().len();
        assert_eq!(n, 1, "{kind}: {}", r.text);
        expected.patients_opened += n as u64;
    }
    // Updates: each reads the stored row (opened), then re-seals it.
    for (t, tenant) in TENANTS.iter().enumerate() {
        let body =
            json!({"name": format!("Renamed {t}"), "email": format!("patient.{t}.1@example.com")});
        let r = app
            .call(
                Method::PUT,
                &format!("/patients/{}", ids[t][1]),
                Some(tenant),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        expected.patients_opened += 1;
        expected.updated += 1;
    }
    // Medical records, and the join of records with their patients.
    for (t, tenant) in TENANTS.iter().enumerate() {
        for id in &ids[t][..2] {
            let body = json!({"note": "seen today", "diagnosis_code": "J06.9"});
            let r = app
                .call(
                    Method::POST,
                    &format!("/patients/{id}/records"),
                    Some(tenant),
                    Some(&body),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{kind}: {}", r.text);
        }
        let r = app.get("/records?limit=50", tenant).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        let n = r.json.as_array().unwrap().len() as u64;
        assert_eq!(n, 2);
        expected.records_opened += n;
        expected.patients_opened += n;
    }
    let end1 = app.cache_stats();
    app.stop().await;

    // A restart: an empty key cache, so keys are unwrapped again.
    let app = App::launch(config).await;
    let base2 = app.cache_stats();
    for id in &ids[0] {
        let r = app.get(&format!("/patients/{id}"), TENANTS[0]).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        expected.patients_opened += 1;
    }
    let body = json!({"email": "patient.1.3@example.com"});
    let r = app
        .call(
            Method::POST,
            "/patients/search",
            Some(TENANTS[1]),
            Some(&body),
        )
        .await;
    assert_eq!(
        r.json.as_array().map(Vec::len),
        Some(1),
        "{kind}: {}",
        r.text
    );
    expected.patients_opened += 1;
    if let Some(proxy) = proxy {
        // KMS refuses the next request: the row cannot be opened, for a
        // reason that is not tampering.
        proxy.fail_next(1, Fault::code("AccessDeniedException"));
        let path = format!("/patients/{}", ids[2][0]);
        let r = app.get(&path, TENANTS[2]).await;
        assert_ne!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        expected.failures.insert("access_denied", 1);
        // Errors are not cached: the next read asks again.
        let r = app.get(&path, TENANTS[2]).await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        expected.patients_opened += 1;
    }
    // One byte of one stored ciphertext changed behind the app's back.
    let victim = &ids[0][2];
    raw.flip_last_byte_of_name(victim).await;
    let r = app.get(&format!("/patients/{victim}"), TENANTS[0]).await;
    assert_eq!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{kind}: {}",
        r.text
    );
    expected.failures.insert("tampered", 1);

    let after = app.scrape().await;
    let end2 = app.cache_stats();
    let text = after.text.clone();
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    // Rows sealed: every row in the tables, plus the updates.
    let patients = raw.count("patients").await;
    let records = raw.count("medical_records").await;
    assert_eq!(patients, (TENANTS.len() * PER_TENANT) as u64);
    assert_eq!(
        delta("rowseal_rows_sealed_total", &[("table", "patients")]),
        (patients + expected.updated) as f64,
        "{kind}"
    );
    assert_eq!(
        delta("rowseal_rows_sealed_total", &[("table", "medical_records")]),
        records as f64,
        "{kind}"
    );
    // Rows opened: every row the API returned or read for an update.
    assert_eq!(
        delta("rowseal_rows_opened_total", &[("table", "patients")]),
        expected.patients_opened as f64,
        "{kind}"
    );
    assert_eq!(
        delta("rowseal_rows_opened_total", &[("table", "medical_records")]),
        expected.records_opened as f64,
        "{kind}"
    );
    // Decryption failures, by kind: the changed row is tampering; the
    // refused KMS call is not.
    assert_eq!(
        delta("rowseal_decrypt_failures_total", &[]),
        expected.failures.values().sum::<u64>() as f64,
        "{kind}: {text}"
    );
    for (k, n) in &expected.failures {
        assert_eq!(
            delta(
                "rowseal_decrypt_failures_total",
                &[("table", "patients"), ("kind", k)]
            ),
            *n as f64,
            "{kind}: {k}"
        );
    }
    // Operations: one duration per call, failures by kind.
    assert_eq!(
        delta(
            "rowseal_operation_duration_seconds_count",
            &[("operation", "insert"), ("table", "patients")]
        ),
        patients as f64,
        "{kind}"
    );
    assert_eq!(
        delta(
            "rowseal_operation_duration_seconds_count",
            &[("operation", "update"), ("table", "patients")]
        ),
        expected.updated as f64,
        "{kind}"
    );
    assert_eq!(
        delta(
            "rowseal_operation_errors_total",
            &[("operation", "fetch"), ("kind", "tampered")]
        ),
        1.0,
        "{kind}"
    );
    // Keys generated: one per tenant key and index key, as stored.
    let keys = raw.count("rowseal_keys").await;
    assert_eq!(keys, 2 * TENANTS.len() as u64, "{kind}");
    // Key caches: what both instances' hierarchies counted.
    let mut caches: BTreeMap<&str, CacheStats> = BTreeMap::new();
    for (base, end) in [(&base1, &end1), (&base2, &end2)] {
        for (cache, stats) in end {
            let at_base = base
                .iter()
                .find(|(c, _)| c == cache)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            let e = caches.entry(*cache).or_default();
            e.hits += stats.hits - at_base.hits;
            e.misses += stats.misses - at_base.misses;
            e.evictions += stats.evictions - at_base.evictions;
        }
    }
    let mut hits = 0;
    for (cache, s) in &caches {
        let l = [("cache", *cache)];
        assert_eq!(
            delta("rowseal_key_cache_hits_total", &l),
            s.hits as f64,
            "{kind}: {cache}"
        );
        assert_eq!(
            delta("rowseal_key_cache_misses_total", &l),
            s.misses as f64,
            "{kind}: {cache}"
        );
        assert_eq!(
            delta("rowseal_key_cache_evictions_total", &l),
            s.evictions as f64,
            "{kind}: {cache}"
        );
        hits += s.hits;
    }
    assert!(hits > 0, "{kind}: {caches:?}");
    // Nothing names a tenant or a value.
    for tenant in TENANTS {
        assert!(!text.contains(tenant), "{kind}: {text}");
    }
    for needle in ["Patient 0", "Renamed", "example.com", "seen today", "J06"] {
        assert!(!text.contains(needle), "{kind}: {needle} in {text}");
    }

    let mut provider = HashMap::new();
    for (op, outcome) in after
        .series("rowseal_provider_calls_total")
        .into_iter()
        .chain(before.series("rowseal_provider_calls_total"))
        .filter_map(|l| Some((l.get("operation")?.clone(), l.get("outcome")?.clone())))
    {
        let n = delta(
            "rowseal_provider_calls_total",
            &[("operation", &op), ("outcome", &outcome)],
        );
        if n != 0.0 {
            provider.insert((op, outcome), n);
        }
    }
    // One duration per call.
    for op in ["generate_data_key", "decrypt_data_key"] {
        let calls: f64 = provider
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            delta(
                "rowseal_provider_call_duration_seconds_count",
                &[("operation", op)]
            ),
            calls,
            "{kind}: {op}"
        );
    }
    let run = Run { provider };
    // As stored: one GenerateDataKey per key.
    assert_eq!(
        run.provider_calls("generate_data_key", Some("ok")),
        keys as f64,
        "{kind}: {:?}",
        run.provider
    );
    app.stop().await;
    run
}

/// What the client saw, for the checks.
#[derive(Default)]
struct Expected {
    patients_opened: u64,
    records_opened: u64,
    updated: u64,
    failures: BTreeMap<&'static str, u64>,
}

/// One instance of the app on 127.0.0.1:0, and a client.
struct App {
    base: String,
    client: Option<Client<HttpConnector, Full<Bytes>>>,
    state: Option<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

struct Answer {
    status: StatusCode,
    text: String,
    json: Value,
}

impl App {
    async fn launch(config: &Config) -> App {
        let state = web_example::connect(config)
            .await
            .unwrap_or_else(|e| panic!("start-up failed: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(web_example::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        App {
            base,
            client: Some(Client::builder(TokioExecutor::new()).build_http()),
            state: Some(state),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// This instance's key-cache counters.
    fn cache_stats(&self) -> Vec<(&'static str, CacheStats)> {
        self.state
            .as_ref()
            .unwrap()
            .rowseal
            .keys()
            .cache_stats_per_cache()
    }

    /// Stops the server, and waits until its key hierarchy is gone (its
    /// caches publish their last counts as they go).
    async fn stop(mut self) {
        drop(self.client.take());
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("the server stops")
                .unwrap()
                .unwrap();
        }
        let state = self.state.take().unwrap();
        let keys = Arc::downgrade(state.rowseal.keys());
        drop(state);
        for _ in 0..500 {
            if keys.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(keys.strong_count(), 0, "the key hierarchy outlived the app");
        // The caches' sweep thread, had it been sweeping at that moment,
        // lets go of them (and publishes) right after its sweep.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn get(&self, path: &str, tenant: &str) -> Answer {
        self.call(Method::GET, path, Some(tenant), None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .unwrap();
        let res = self.client.as_ref().unwrap().request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, text, json }
    }

    async fn scrape(&self) -> Scrape {
        let r = self.call(Method::GET, "/metrics", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        Scrape::parse(r.text)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A `/metrics` page: each sample by name and labels.
struct Scrape {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').unwrap();
                    let labels = rest
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Scrape { text, samples }
    }

    /// The sum of the samples of `name` that have every label of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The label sets of `name`.
    fn series(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.clone())
            .collect()
    }
}

/// The app's database, with plain sqlx.
enum RawDb {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl RawDb {
    async fn count(&self, table: &str) -> u64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = match self {
            RawDb::Postgres(p) => sqlx::query(&sql).fetch_one(p).await.unwrap().get(0),
            RawDb::Sqlite(p) => sqlx::query(&sql).fetch_one(p).await.unwrap().get(0),
        };
        u64::try_from(n).unwrap()
    }

    /// Flips the last byte (inside the authentication tag) of a patient's
    /// encrypted name.
    async fn flip_last_byte_of_name(&self, id: &str) {
        let id = Uuid::parse_str(id).unwrap();
        let select = "SELECT name FROM patients WHERE id = $1";
        let update = "UPDATE patients SET name = $1 WHERE id = $2";
        let flip = |mut b: Vec<u8>| {
            let last = b.len() - 1;
            b[last] ^= 0x01;
            b
        };
        let n = match self {
            RawDb::Postgres(p) => {
                let name: Vec<u8> = sqlx::query(select)
                    .bind(id)
                    .fetch_one(p)
                    .await
                    .unwrap()
                    .get(0);
                sqlx::query(update)
                    .bind(flip(name))
                    .bind(id)
                    .execute(p)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            RawDb::Sqlite(p) => {
                let name: Vec<u8> = sqlx::query(select)
                    .bind(id)
                    .fetch_one(p)
                    .await
                    .unwrap()
                    .get(0);
                sqlx::query(update)
                    .bind(flip(name))
                    .bind(id)
                    .execute(p)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        };
        assert_eq!(n, 1);
    }
}

async fn close(raw: RawDb) {
    match raw {
        RawDb::Postgres(p) => p.close().await,
        RawDb::Sqlite(p) => p.close().await,
    }
}
