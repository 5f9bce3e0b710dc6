//! Real faults for the web example's tests (`tests/faults.rs`): the app on
//! PostgreSQL with its KMS endpoint pointed at rowseal-test-support's
//! [`FaultProxy`] in front of the KMS test server (moto), and the real
//! `rowseal` command-line tool (crate rowseal-cli) run as a child process
//! against the same database and KMS key.
//!
//! Needs what [`super::postgres_kms_app`] needs: without PostgreSQL or the
//! KMS test server the helpers return `None` after a loud message, or panic
//! under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use rowseal::sqlx;
use rowseal_test_support::proxy::FaultProxy;
use rowseal_test_support::{db, kms};
use serde_json::Value;
use web_example::{Config, DatabaseConfig, KeyConfig};

use super::{start, Cleanup, RawDb, TestApp};

/// The app on PostgreSQL and a fresh KMS key, its KMS client talking to
/// [`proxy`](Self::proxy) (which forwards to the KMS test server until told
/// to fail).
pub struct ProxiedApp {
    /// The running app (restart it for an empty key cache).
    pub app: TestApp,
    /// Between the app and the KMS test server.
    pub proxy: FaultProxy,
    /// The KMS test server itself (for the `rowseal` tool: no faults).
    pub kms_endpoint: String,
    /// The root key's ARN.
    pub key_arn: String,
    /// The app's database URL.
    pub database_url: String,
}

/// [`ProxiedApp`]: `None` (after a loud message) when PostgreSQL or the KMS
/// test server is unavailable outside CI.
pub async fn postgres_kms_app_behind_proxy() -> Option<ProxiedApp> {
    let kms_endpoint = kms::endpoint()?;
    let db = db::postgres(2).await?;
    let admin = kms::admin_client(&kms_endpoint, kms::REGION);
    let key_arn = kms::create_key(&admin, false).await;
    let proxy = FaultProxy::start(&kms_endpoint).await;
    let database_url = db.url.clone();
    let config = Config {
        database: DatabaseConfig::Postgres(db.url.clone()),
        keys: KeyConfig::Kms {
            key_id: key_arn.clone(),
            allowed_keys: Vec::new(),
            region: Some(kms::REGION.into()),
            endpoint: Some(proxy.url.clone()),
        },
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let raw = RawDb::Postgres(db.pool.clone());
    let app = start(
        "postgres+kms behind a fault proxy",
        &config,
        raw,
        Cleanup::Postgres(Box::new(db)),
    )
    .await;
    Some(ProxiedApp {
        app,
        proxy,
        kms_endpoint,
        key_arn,
        database_url,
    })
}

impl ProxiedApp {
    /// The app's database with plain sqlx.
    pub fn pool(&self) -> &sqlx::PgPool {
        match &self.app.raw {
            RawDb::Postgres(pool) => pool,
            RawDb::Sqlite(_) => unreachable!("a PostgreSQL app"),
        }
    }

    /// One `i64` from `sql` on the app's database.
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// `rowseal <args>` on the app's database and root key (straight to the
    /// KMS test server, not through the proxy), stdout (JSON lines) and
    /// stderr piped, killed if dropped.
    pub fn rowseal(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(rowseal_binary());
        c.args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("ROWSEAL_KMS_KEY_ID", &self.key_arn)
            .env("ROWSEAL_KMS_ENDPOINT", &self.kms_endpoint)
            .env("AWS_REGION", kms::REGION)
            .env_remove("ROWSEAL_LOCAL_KEYS")
            .env_remove("ROWSEAL_LOCAL_KEY_FILE")
            .env_remove("ROWSEAL_KMS_ALLOWED_KEYS")
            .env_remove("ROWSEAL_CONFIG")
            .env_remove("ROWSEAL_KMS_RATE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `rowseal <args>` to its end.
    pub async fn run_rowseal(&self, args: &[&str]) -> CliRun {
        let out = self.rowseal(args).output().await.unwrap();
        CliRun::of(out.status.code(), &out.stdout, &out.stderr)
    }
}

/// One run of the `rowseal` tool: exit code and its JSON events.
#[derive(Debug)]
pub struct CliRun {
    /// `None`: killed by a signal.
    pub code: Option<i32>,
    /// Its stdout's JSON lines.
    pub events: Vec<Value>,
    /// Its stderr.
    pub stderr: String,
}

impl CliRun {
    /// From a finished child's status and output.
    pub fn of(code: Option<i32>, stdout: &[u8], stderr: &[u8]) -> CliRun {
        CliRun {
            code,
            events: String::from_utf8_lossy(stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
        }
    }

    /// The events named `name`.
    pub fn all(&self, name: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }

    /// The last event named `name`.
    pub fn last(&self, name: &str) -> Option<&Value> {
        self.events.iter().rev().find(|e| e["event"] == name)
    }
}

/// [`rowseal_binary`] off the async runtime's threads (the first call
/// may build it).
pub async fn build_rowseal() -> PathBuf {
    tokio::task::spawn_blocking(|| rowseal_binary().to_owned())
        .await
        .unwrap()
}

/// The real `rowseal` binary of crate rowseal-cli, built from the current
/// tree once per test process: `cargo build -p rowseal-cli --bin rowseal`
/// (the cargo that runs the tests; it holds no lock on the target directory
/// while tests run, and is a no-op when the binary is up to date). A binary
/// of another package has no `CARGO_BIN_EXE_` variable, hence the build.
pub fn rowseal_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let out = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "rowseal-cli", "--bin", "rowseal"])
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--message-format", "json-render-diagnostics"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo to build the rowseal tool");
        assert!(
            out.status.success(),
            "cargo build -p rowseal-cli --bin rowseal failed ({})",
            out.status
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rowseal")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo named the rowseal executable")
    })
}
