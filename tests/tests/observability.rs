#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Observability of the sqlx layer (`docs/observability.md`), on SQLite with
//! a local key, with a recorder and a span collector of the test's own
//! (this thread's only: `metrics::with_local_recorder` and
//! `tracing::subscriber::with_default`, on a current-thread runtime):
//!
//! - rows sealed and opened, and rows that failed to open by kind, equal
//!   what the workload wrote and read, with batches opened on the crypto
//!   pool (counted on the task that awaited them, not on pool threads) as
//!   well as on the calling thread, and through a stream;
//! - every operation has its `rowseal.<operation>` span with the table and
//!   the row count; no span holds a value, and none holds the tenant id
//!   unless the encryptor is told to record it.
//!
//! Run: `cargo test -p rowseal-e2e --test observability`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt as _;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use rowseal::sqlx::{self, Sqlite};
use rowseal::{schema, Encrypted, Encryptor, KeyHierarchy, LocalKeyProvider, SqlxKeyStore};
use rowseal_e2e::db;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "obs_patients",
    record_type = "obs_patient",
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
        blind_index(name = "obs_email_idx", bits = 64, normalize = "trim,lowercase")
    )]
    email: String,
    visits: i64,
}

const CLINIC: &str = "clinic-7f3a";
const OTHER: &str = "clinic-other";
const ROWS: i64 = 40;

fn patient(id: i64, clinic: &str) -> Patient {
    Patient {
        id,
        clinic: clinic.into(),
        name: format!("Secret Name {id}"),
        email: format!("secret.{id}@example.org"),
        visits: id,
    }
}

/// Every span: its name and fields (the fields recorded at any time).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<u64, SpanData>>>);

/// A span's name and fields.
type SpanData = (String, BTreeMap<String, String>);

/// Values by metric name and sorted labels.
type Values = HashMap<(String, Vec<(String, String)>), f64>;

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .insert(id.into_u64(), (attrs.metadata().name().to_owned(), fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, fields)) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    /// The spans named `name`, in no particular order.
    fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }

    fn all(&self) -> String {
        format!("{:?}", self.0.lock().unwrap().values().collect::<Vec<_>>())
    }
}

/// Counter values by name and sorted labels (histograms: how many values).
fn values(snap: &Snapshotter) -> Values {
    let mut out = HashMap::new();
    for (key, _, _, value) in snap.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let v = match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(c)) => c as f64,
            (MetricKind::Histogram, DebugValue::Histogram(h)) => h.len() as f64,
            _ => continue,
        };
        out.insert((key.name().to_owned(), labels), v);
    }
    out
}

fn get(m: &Values, name: &str, l: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = l
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    m.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

#[test]
fn rows_failures_and_spans_are_recorded_exactly_and_without_values() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let expected_opened = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || rt.block_on(workload()))
    });

    let m = values(&snap);
    let t = ("table", "obs_patients");
    // Sealed: the batch, one insert, two updates (one through
    // update_fields).
    assert_eq!(
        get(&m, "rowseal_rows_sealed_total", &[t]),
        (ROWS + 1 + 2) as f64,
        "{m:?}"
    );
    assert_eq!(
        get(&m, "rowseal_rows_opened_total", &[t]),
        expected_opened as f64,
        "{m:?}"
    );
    // The tampered row, once through decrypt_each and once through a
    // pooled fetch_all; the other tenant's row, refused by decrypt_each.
    assert_eq!(
        get(
            &m,
            "rowseal_decrypt_failures_total",
            &[t, ("kind", "tampered")]
        ),
        3.0,
        "{m:?}"
    );
    assert_eq!(
        get(
            &m,
            "rowseal_operation_errors_total",
            &[("operation", "fetch_all"), t, ("kind", "tampered")]
        ),
        1.0,
        "{m:?}"
    );
    assert_eq!(
        get(
            &m,
            "rowseal_operation_duration_seconds",
            &[("operation", "insert_many"), t]
        ),
        1.0,
        "{m:?}"
    );
    // Key-provider calls: a tenant key and an index key per clinic
    // generated, nothing unwrapped (the cache was seeded as they were made).
    assert_eq!(
        get(
            &m,
            "rowseal_provider_calls_total",
            &[("operation", "generate_data_key"), ("outcome", "ok")]
        ),
        4.0,
        "{m:?}"
    );
    assert_eq!(
        get(
            &m,
            "rowseal_provider_calls_total",
            &[("operation", "decrypt_data_key"), ("outcome", "ok")]
        ),
        0.0,
        "{m:?}"
    );

    // Spans: one per operation, with the table and the rows.
    let one = |name: &str| {
        let s = spans.named(name);
        assert!(!s.is_empty(), "no {name} span in {}", spans.all());
        s
    };
    let many = one("rowseal.insert_many");
    assert_eq!(
        many[0].get("table").map(String::as_str),
        Some("obs_patients")
    );
    assert_eq!(many[0].get("rows"), Some(&ROWS.to_string()));
    assert!(many[0].contains_key("elapsed_ms"));
    let streams = one("rowseal.fetch_stream");
    assert_eq!(streams[0].get("rows"), Some(&(ROWS + 1).to_string()));
    let finds = one("rowseal.find_by");
    assert_eq!(finds[0].get("rows").map(String::as_str), Some("1"));
    let failed: Vec<_> = one("rowseal.fetch_all")
        .into_iter()
        .filter(|f| f.contains_key("error.kind"))
        .collect();
    assert_eq!(failed.len(), 1, "{}", spans.all());
    assert_eq!(failed[0]["error.kind"], "tampered");
    for name in [
        "rowseal.insert",
        "rowseal.fetch",
        "rowseal.update",
        "rowseal.update_fields",
        "rowseal.decrypt_each",
        "rowseal.delete",
        "rowseal.count_by",
    ] {
        one(name);
    }
    // The tenant only where the encryptor was told to record it (the last
    // fetch), never a value.
    let with_tenant: Vec<_> = spans
        .0
        .lock()
        .unwrap()
        .values()
        .filter(|(_, f)| f.contains_key("tenant"))
        .cloned()
        .collect();
    assert_eq!(with_tenant.len(), 1, "{}", spans.all());
    assert_eq!(with_tenant[0].0, "rowseal.fetch");
    assert_eq!(with_tenant[0].1["tenant"], CLINIC);
    let all = spans.all();
    for needle in ["Secret Name", "example.org", "secret."] {
        assert!(!all.contains(needle), "{needle} in {all}");
    }
    // Nor in a metric.
    let metrics_text = format!("{m:?}");
    for needle in [CLINIC, OTHER, "Secret", "example.org"] {
        assert!(!metrics_text.contains(needle), "{needle} in {metrics_text}");
    }
}

/// The workload; returns how many rows it opened successfully.
async fn workload() -> u64 {
    // Connections for the writes and the key store's own.
    let db = db::sqlite(4).await;
    let pool = db.pool.clone();
    schema::install(&pool).await.unwrap();
    schema::create_table::<Patient, _>(&pool).await.unwrap();
    let provider =
        LocalKeyProvider::from_keyring_str(&LocalKeyProvider::generate_keyring()).unwrap();
    let keys = Arc::new(KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
    ));
    // Batches of 8 rows and more are opened on the crypto pool.
    let enc = Encryptor::new(keys).with_parallel_threshold(8);
    let mut opened = 0u64;

    let rows: Vec<Patient> = (1..=ROWS).map(|id| patient(id, CLINIC)).collect();
    assert_eq!(enc.insert_many(&pool, &rows).await.unwrap(), ROWS as u64);
    enc.insert(&pool, &patient(1000, OTHER)).await.unwrap();

    // One row, a pooled batch, a stream.
    assert!(enc
        .fetch::<Patient, _>(&pool, CLINIC, &1)
        .await
        .unwrap()
        .is_some());
    opened += 1;
    let sql = format!(
        "SELECT {} FROM obs_patients WHERE clinic = ?",
        Encryptor::select_list::<Patient, Sqlite>()
    );
    let all: Vec<Patient> = enc
        .fetch_all(CLINIC, sqlx::query(&sql).bind(CLINIC), &pool)
        .await
        .unwrap();
    assert_eq!(all.len(), ROWS as usize);
    opened += ROWS as u64;
    let any = format!(
        "SELECT {} FROM obs_patients ORDER BY id",
        Encryptor::select_list::<Patient, Sqlite>()
    );
    let streamed: Vec<Patient> = enc
        .fetch_stream(rowseal::TenantScope::Any, sqlx::query(&any), &pool)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.len(), ROWS as usize + 1);
    opened += ROWS as u64 + 1;

    // A lookup (64 bits: one candidate) and a count.
    let found = Patient::find_by_obs_email(&enc, &pool, CLINIC, "SECRET.3@example.org")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    opened += 1;
    let n = enc
        .count_by::<Patient, _>(
            &pool,
            Some(CLINIC),
            "obs_email_idx",
            &[&["secret.4@example.org"]],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    opened += 1;

    // Updates: update_fields reads the row (opened) and re-seals it.
    let mut p = patient(2, CLINIC);
    p.name = "Secret Name renamed".into();
    enc.update(&pool, &p).await.unwrap();
    enc.update_fields(&pool, &p, &["name"]).await.unwrap();
    opened += 1;
    assert!(enc.delete::<Patient, _>(&pool, CLINIC, &40).await.unwrap());

    // A tampered row: the last byte of row 5's name flipped.
    let name: Vec<u8> = sqlx::query_scalar("SELECT name FROM obs_patients WHERE id = 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut bad = name.clone();
    *bad.last_mut().unwrap() ^= 1;
    sqlx::query("UPDATE obs_patients SET name = ? WHERE id = 5")
        .bind(bad)
        .execute(&pool)
        .await
        .unwrap();
    // decrypt_each: row by row, on the calling thread (3 rows, below the
    // threshold): one tampered, one of another tenant (refused, counted as
    // tampering), one fine.
    let three = format!(
        "SELECT {} FROM obs_patients WHERE id IN (4, 5, 1000) ORDER BY id",
        Encryptor::select_list::<Patient, Sqlite>()
    );
    let raw = sqlx::query(&three).fetch_all(&pool).await.unwrap();
    let each = enc.decrypt_each::<Patient, _>(CLINIC, &raw).await.unwrap();
    assert_eq!(each.iter().filter(|r| r.is_ok()).count(), 1);
    opened += 1;
    // fetch_all on the pool (39 rows): the call fails, the 38 good rows
    // were opened all the same.
    let r = enc
        .fetch_all::<Patient, _, _>(CLINIC, sqlx::query(&sql).bind(CLINIC), &pool)
        .await;
    assert!(r.is_err());
    opened += ROWS as u64 - 2;

    // The tenant in a span, when asked for.
    let traced = enc.clone().with_tenant_in_traces(true);
    traced.fetch::<Patient, _>(&pool, CLINIC, &1).await.unwrap();
    opened += 1;

    db.finish().await;
    opened
}
