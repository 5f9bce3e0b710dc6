//! The web example's test harness: the app on 127.0.0.1:0 (real TCP), a real
//! HTTP client, and a database of its own per test, removed when the test
//! ends (even when it fails).
//!
//! - SQLite + a generated local keyring file: always.
//! - PostgreSQL + an AWS KMS key in the moto server: needs PostgreSQL
//!   (`ROWSEAL_TEST_POSTGRES_URL`, default `postgres://root@127.0.0.1:5432/test`)
//!   and `ROWSEAL_TEST_KMS_ENDPOINT` (set by `scripts/with-kms-server.sh`,
//!   with dummy AWS credentials). Missing: a loud skip, or a failure when
//!   `CI=true`.

#![allow(dead_code)]

pub mod faults;

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rowseal::sqlx::{self, Row};
use rowseal_test_support::db::{self, TestDb};
use rowseal_test_support::{kms, random_name};
use serde_json::Value;
use web_example::{Config, DatabaseConfig, KeyConfig};

/// A running app and what the test needs around it.
pub struct TestApp {
    /// `postgres+kms` or `sqlite+local`.
    pub kind: &'static str,
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// A plain sqlx connection to the app's database (no rowseal), to look
    /// at what is stored.
    pub raw: RawDb,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    cleanup: Cleanup,
    config: Config,
}

/// The app's database, opened with plain sqlx.
pub enum RawDb {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// SQLite.
    Sqlite(sqlx::SqlitePool),
}

enum Cleanup {
    Dir(PathBuf),
    /// Dropped with the app (rowseal-test-support drops the database).
    Postgres(Box<TestDb<sqlx::Postgres>>),
}

/// An HTTP answer.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body, as received.
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// The app on SQLite and a generated local keyring, in a fresh directory.
pub async fn sqlite_app() -> TestApp {
    let dir = std::env::temp_dir().join(random_name());
    std::fs::create_dir_all(&dir).unwrap();
    let db_file = dir.join("web.db");
    let config = Config {
        database: DatabaseConfig::Sqlite(db_file.clone()),
        keys: KeyConfig::LocalFile(dir.join("web.keys")),
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let cleanup = Cleanup::Dir(dir);
    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db_file));
    start("sqlite+local", &config, RawDb::Sqlite(raw), cleanup).await
}

/// The app on a fresh PostgreSQL database and a fresh KMS key in the test
/// KMS server; `None` (after a loud message) when either is unavailable
/// outside CI.
pub async fn postgres_kms_app() -> Option<TestApp> {
    let endpoint = kms::endpoint()?;
    let db = db::postgres(1).await?;
    let admin = kms::admin_client(&endpoint, kms::REGION);
    let key_arn = kms::create_key(&admin, false).await;
    let config = Config {
        database: DatabaseConfig::Postgres(db.url.clone()),
        keys: KeyConfig::Kms {
            key_id: key_arn,
            allowed_keys: Vec::new(),
            region: Some(kms::REGION.into()),
            endpoint: Some(endpoint),
        },
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let raw = RawDb::Postgres(db.pool.clone());
    Some(
        start(
            "postgres+kms",
            &config,
            raw,
            Cleanup::Postgres(Box::new(db)),
        )
        .await,
    )
}

async fn start(kind: &'static str, config: &Config, raw: RawDb, cleanup: Cleanup) -> TestApp {
    // The guard exists before anything can fail, so that a failed start
    // still removes the database.
    let mut app = TestApp {
        kind,
        base: String::new(),
        client: Client::builder(TokioExecutor::new()).build_http(),
        raw,
        shutdown: None,
        server: None,
        cleanup,
        config: config.clone(),
    };
    app.launch().await;
    app
}

impl TestApp {
    /// Starts a server (a new process, in effect: fresh pools and key cache).
    async fn launch(&mut self) {
        let kind = self.kind;
        let state = web_example::connect(&self.config)
            .await
            .unwrap_or_else(|e| panic!("{kind}: start-up failed: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.server = Some(tokio::spawn(web_example::serve(listener, state, async {
            let _ = rx.await;
        })));
    }

    /// Stops the server and starts another on the same database and root
    /// key, as a redeploy would: its key cache starts empty.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.launch().await;
    }

    /// Another instance of the app's state on the same database and root
    /// key (its own pool and key cache), to call the app's queries and
    /// rowseal directly.
    pub async fn state(&self) -> web_example::AppState {
        let kind = self.kind;
        web_example::connect(&self.config)
            .await
            .unwrap_or_else(|e| panic!("{kind}: start-up failed: {e}"))
    }

    /// Runs a statement on the app's database with plain sqlx.
    pub async fn execute(&self, sql: &str) -> u64 {
        match &self.raw {
            RawDb::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            RawDb::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `tenant` goes into `X-Tenant-Id`, `body` as JSON.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        self.call_raw(method, path, tenant, body.map(|b| b.to_string()))
            .await
    }

    /// Sends a request with a body as given (not necessarily JSON).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<String>,
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
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, text, json }
    }

    /// Every byte stored in every column of every row of `table`, read with
    /// plain sqlx (each value's raw bytes, whatever its type).
    pub async fn stored_bytes(&self, table: &str) -> Vec<Vec<u8>> {
        let sql = format!("SELECT * FROM {table}");
        let mut out = Vec::new();
        match &self.raw {
            RawDb::Postgres(pool) => {
                for row in sqlx::query(&sql).fetch_all(pool).await.unwrap() {
                    let mut all = Vec::new();
                    for i in 0..row.len() {
                        let v: Option<Vec<u8>> = row.try_get_unchecked(i).unwrap();
                        all.extend(v.unwrap_or_default());
                        all.push(0);
                    }
                    out.push(all);
                }
            }
            RawDb::Sqlite(pool) => {
                for row in sqlx::query(&sql).fetch_all(pool).await.unwrap() {
                    let mut all = Vec::new();
                    for i in 0..row.len() {
                        let v: Option<Vec<u8>> = row.try_get_unchecked(i).unwrap();
                        all.extend(v.unwrap_or_default());
                        all.push(0);
                    }
                    out.push(all);
                }
            }
        }
        out
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        // A PostgreSQL database is dropped with its `TestDb`, right after.
        if let Cleanup::Dir(dir) = &self.cleanup {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
