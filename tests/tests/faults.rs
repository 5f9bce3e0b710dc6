#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The end-to-end fault matrix: the rowseal facade (`Encryptor`, a derived
//! model with a blind index) on real databases, with the AWS KMS provider
//! talking to a real KMS-compatible server (moto) through a fault-injecting
//! HTTP proxy.
//!
//! Every case asserts the typed error (the variant and the provider error
//! kind), that nothing partial was written (checked with plain SQL: no row,
//! or the old row byte for byte), and that other tenants keep working during
//! and after the fault.
//!
//! Run: `bash scripts/with-kms-server.sh cargo test --workspace --all-features --test faults`.
//! Without `ROWSEAL_TEST_KMS_ENDPOINT`, PostgreSQL or MariaDB the cases that
//! need them skip loudly, or fail under `CI=true`.
//!
//! Where moto differs from KMS, the proxy stands in (and the case says so):
//! moto enforces key policies only for `DescribeKey`, and does not refuse
//! `GenerateDataKey` or `Decrypt` under a disabled key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rowseal::kms::AwsKmsProvider;
use rowseal::sqlx;
use rowseal::{
    schema, CacheConfig, Encrypted, Encryptor, Error, KeyHierarchy, ProviderError,
    ProviderErrorKind, SqlxKeyStore,
};
use rowseal_e2e::db::{self, TestDb};
use rowseal_e2e::kms::{admin_client, aws_detail, create_key, provider_builder, REGION};
use rowseal_e2e::proxy::{Fault, FaultProxy};
use rowseal_sqlx::{Backend, DbRow, SqlType, Value};

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "accounts",
    record_type = "account",
    tenant = tenant_id,
    primary_key = id,
    bind_primary_key
)]
struct Account {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    balance: i64,
}

static NEXT_ID: AtomicI64 = AtomicI64::new(1);

fn account(tenant: &str) -> Account {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    account_with_id(tenant, id)
}

fn account_with_id(tenant: &str, id: i64) -> Account {
    Account {
        id,
        tenant_id: tenant.to_owned(),
        name: format!("name of {id}"),
        email: format!("user{id}@{tenant}.example"),
        balance: id * 10,
    }
}

/// Everything one case needs: a database with the `accounts` table, a root
/// key in moto, and two applications: `app` (under test, through the proxy)
/// and `other` (another process, straight to moto, with its own key cache).
struct Fx<DB: sqlx::Database> {
    db: TestDb<DB>,
    admin: aws_sdk_kms::Client,
    arn: String,
    proxy: FaultProxy,
    app: Encryptor,
    other: Encryptor,
}

async fn setup<DB: Backend>(
    db: TestDb<DB>,
    endpoint: &str,
    ttl: Duration,
    tune: impl FnOnce(rowseal::kms::AwsKmsProviderBuilder) -> rowseal::kms::AwsKmsProviderBuilder,
) -> Fx<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Account, _>(&db.pool).await.unwrap();
    let admin = admin_client(endpoint, REGION);
    let arn = create_key(&admin, false).await;
    let proxy = FaultProxy::start(endpoint).await;
    let app_kms = tune(provider_builder(&arn, &proxy.url))
        .build()
        .await
        .unwrap();
    let other_kms = provider_builder(&arn, endpoint).build().await.unwrap();
    let app = encryptor(&db.pool, app_kms, ttl);
    let other = encryptor(&db.pool, other_kms, Duration::from_secs(300));
    proxy.reset_log();
    Fx {
        db,
        admin,
        arn,
        proxy,
        app,
        other,
    }
}

fn encryptor<DB: Backend>(pool: &sqlx::Pool<DB>, kms: AwsKmsProvider, ttl: Duration) -> Encryptor {
    let keys = KeyHierarchy::with_cache_config(
        Arc::new(kms),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        CacheConfig {
            max_entries: 1000,
            ttl,
        },
    );
    Encryptor::new(Arc::new(keys))
}

// ---- typed errors ----------------------------------------------------------

/// The provider error of a failed write: the tenant or index key could not be
/// obtained, reported as `Error::Provider(..)`.
fn write_fault(e: &Error) -> &ProviderError {
    e.provider_error()
        .unwrap_or_else(|| panic!("expected Error::Provider, got {e:?}"))
}

/// The provider error of a failed read (or field update, which opens the
/// row's key): `Error::Field` of the row, with the provider error as its
/// source (no plaintext, no key bytes).
fn read_fault(e: &Error) -> &ProviderError {
    match e {
        Error::Field { source, .. } => source
            .provider_error()
            .unwrap_or_else(|| panic!("expected a provider error as the source, got {source:?}")),
        other => panic!("expected Error::Field with a provider source, got {other:?}"),
    }
}

// ---- plain SQL ---------------------------------------------------------------

/// Every row of `accounts` (optionally of one tenant), every column rendered
/// as text (bytes in hex), by id: what is stored, read without rowseal.
async fn snapshot<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    tenant: Option<&str>,
) -> BTreeMap<i64, Vec<String>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::Row as _;
    let mut sql = String::from("SELECT * FROM accounts");
    let mut args = vec![];
    if let Some(t) = tenant {
        sql.push_str(" WHERE tenant_id = ");
        DB::push_placeholder(&mut sql, 1);
        args.push(Value::Text(t.to_owned()));
    }
    let rows = DB::fetch_all(pool, &sql, args).await.unwrap();
    let mut out = BTreeMap::new();
    for row in &rows {
        let id_at = row.column_index("id").unwrap();
        let id = match row.read_value(id_at, SqlType::I64).unwrap() {
            Value::I64(v) => v,
            other => panic!("id: {other:?}"),
        };
        let cells = (0..row.columns().len()).map(|i| cell(row, i)).collect();
        out.insert(id, cells);
    }
    out
}

fn cell<R: DbRow>(row: &R, i: usize) -> String {
    if let Ok(v) = row.read_value(i, SqlType::I64) {
        return format!("{v:?}");
    }
    if let Ok(s) = row.read_str(i) {
        return s.to_owned();
    }
    match row.read_opt_bytes(i) {
        Ok(Some(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Ok(None) => "NULL".into(),
        Err(_) => format!("{:?}", row.read_value(i, SqlType::I32)),
    }
}

/// Rows `insert_many` puts in one statement: the bind-parameter limit over
/// the columns each row writes (every column of `accounts`; counted from a
/// stored row, as the set of index columns is the library's business).
async fn rows_per_statement<DB: Backend>(pool: &sqlx::Pool<DB>) -> usize
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::Row as _;
    let rows = DB::fetch_all(pool, "SELECT * FROM accounts", vec![])
        .await
        .unwrap();
    let columns = rows.first().expect("a stored row").columns().len();
    DB::MAX_PARAMS / columns
}

/// Rows of `accounts` with these ids.
async fn present<DB: Backend>(pool: &sqlx::Pool<DB>, ids: &[i64]) -> usize
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let all = snapshot(pool, None).await;
    ids.iter().filter(|id| all.contains_key(id)).count()
}

/// Key records (any purpose) stored for `tenant`.
async fn key_records<DB: Backend>(pool: &sqlx::Pool<DB>, tenant: &str) -> usize
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let mut sql = String::from("SELECT version FROM rowseal_keys WHERE tenant = ");
    DB::push_placeholder(&mut sql, 1);
    DB::fetch_all(pool, &sql, vec![Value::Text(tenant.to_owned())])
        .await
        .unwrap()
        .len()
}

// ---- a tenant that must keep working ---------------------------------------

/// Insert, fetch, field update, blind-index lookup, full update, delete and
/// a batch for `tenant`, each checked; `when` names the moment for messages.
async fn tenant_works<DB: Backend>(enc: &Encryptor, pool: &sqlx::Pool<DB>, tenant: &str, when: &str)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let ctx = |op: &str, e: Error| -> String { format!("{when}: {op} for {tenant}: {e}") };
    let mut a = account(tenant);
    enc.insert(pool, &a)
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("insert", e)));
    let back = enc
        .fetch::<Account, _>(pool, tenant, &a.id)
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("fetch", e)));
    assert_eq!(back.as_ref(), Some(&a), "{when}: fetch for {tenant}");
    a.name = format!("renamed {}", a.id);
    enc.update_fields(pool, &a, &["name"])
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("update_fields", e)));
    let found = Account::find_by_email(enc, pool, tenant, &format!(" {} ", a.email.to_uppercase()))
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("find_by_email", e)));
    assert_eq!(found, vec![a.clone()], "{when}: lookup for {tenant}");
    a.balance += 1;
    enc.update(pool, &a)
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("update", e)));
    let batch = vec![account(tenant), account(tenant)];
    assert_eq!(
        enc.insert_many(pool, &batch)
            .await
            .unwrap_or_else(|e| panic!("{}", ctx("insert_many", e))),
        2
    );
    let ids: Vec<i64> = batch.iter().map(|b| b.id).collect();
    let mut sql = format!(
        "SELECT {} FROM accounts WHERE tenant_id = ",
        Encryptor::select_list::<Account, DB>()
    );
    DB::push_placeholder(&mut sql, 1);
    let rows = DB::fetch_all(pool, &sql, vec![Value::Text(tenant.to_owned())])
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("select", e)));
    let all: Vec<Account> = enc
        .decrypt_all(rowseal::TenantScope::Any, &rows)
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("decrypt_all", e)));
    for b in &batch {
        assert!(all.contains(b), "{when}: fetch_all for {tenant}");
    }
    assert!(all.contains(&a));
    assert!(enc
        .delete::<Account, _>(pool, tenant, &ids[0])
        .await
        .unwrap_or_else(|e| panic!("{}", ctx("delete", e))));
}

fn kms_endpoint() -> Option<String> {
    rowseal_e2e::kms::endpoint()
}

// ---- KMS throttled -----------------------------------------------------------

/// Throttling is retried within the bound and then succeeds; persistent
/// throttling is `Throttled` after exactly the configured attempts, writes
/// nothing, and tenants whose keys are cached keep working meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_throttling_is_retried_then_bounded() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let Some(pg) = db::postgres(8).await else {
        return;
    };
    let fx = setup(pg, &endpoint, Duration::from_secs(300), |b| b).await;
    let pool = &fx.db.pool;
    tenant_works(&fx.app, pool, "hot", "before the fault").await;

    // Transient: two throttled answers, then the call goes through.
    fx.proxy.reset_log();
    fx.proxy.fail_next(2, Fault::throttling());
    let a = account("t-transient");
    fx.app.insert(pool, &a).await.unwrap();
    assert_eq!(fx.proxy.faulted().len(), 2, "{:?}", fx.proxy.faulted());
    assert!(fx.proxy.count(Some("GenerateDataKey")) >= 3);
    assert_eq!(
        fx.app
            .fetch::<Account, _>(pool, "t-transient", &a.id)
            .await
            .unwrap(),
        Some(a.clone())
    );

    // Persistent: every request throttled.
    fx.proxy.reset_log();
    fx.proxy.fail_always(None, Fault::throttling());
    let started = Instant::now();
    let b = account("t-throttled");
    let err = fx.app.insert(pool, &b).await.unwrap_err();
    let pe = write_fault(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::Throttled, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 4, "the configured max_attempts");
    assert_eq!(fx.proxy.count(None), 4, "exactly max_attempts requests");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "within the operation timeout"
    );
    assert_eq!(present(pool, &[b.id]).await, 0, "no row");
    assert_eq!(key_records(pool, "t-throttled").await, 0, "no key record");
    // A read that needs an uncached key (rows written by another process).
    let cold = account("t-cold");
    fx.other.insert(pool, &cold).await.unwrap();
    let err = fx
        .app
        .fetch::<Account, _>(pool, "t-cold", &cold.id)
        .await
        .unwrap_err();
    assert_eq!(
        read_fault(&err).kind(),
        ProviderErrorKind::Throttled,
        "{err}"
    );
    // Meanwhile a tenant with cached keys works without a single KMS request.
    let before = fx.proxy.count(None);
    tenant_works(&fx.app, pool, "hot", "during persistent throttling").await;
    assert_eq!(
        fx.proxy.count(None),
        before,
        "cached tenant: no KMS request"
    );

    // After the fault everything works, the failed tenant included.
    fx.proxy.clear_faults();
    fx.app.insert(pool, &b).await.unwrap();
    assert_eq!(
        fx.app
            .fetch::<Account, _>(pool, "t-cold", &cold.id)
            .await
            .unwrap(),
        Some(cold)
    );
    tenant_works(&fx.app, pool, "t-throttled", "after the fault").await;
    fx.db.finish().await;
}

// ---- KMS access denied -------------------------------------------------------

/// Access denied is final: one request, never retried, typed `AccessDenied`;
/// nothing written; other tenants keep working. moto enforces a key policy's
/// Deny only for DescribeKey (a restarting application fails at `build()`),
/// so GenerateDataKey and Decrypt are denied by the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_access_denied_is_final() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let Some(pg) = db::postgres(8).await else {
        return;
    };
    let fx = setup(pg, &endpoint, Duration::from_secs(300), |b| b).await;
    let pool = &fx.db.pool;
    tenant_works(&fx.app, pool, "hot", "before the fault").await;
    let cold = account("t-cold");
    fx.other.insert(pool, &cold).await.unwrap();
    let cold_before = snapshot(pool, Some("t-cold")).await;

    // A key policy that denies everything: moto refuses DescribeKey, so a
    // provider built now (an application starting) fails at start-up.
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Sid":"deny","Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;
    fx.admin
        .put_key_policy()
        .key_id(&fx.arn)
        .policy_name("default")
        .policy(deny)
        .send()
        .await
        .unwrap();
    let err = provider_builder(&fx.arn, &endpoint)
        .build()
        .await
        .unwrap_err();
    let pe = err.provider_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(pe.kind(), ProviderErrorKind::AccessDenied, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 1, "never retried");

    // The running application: Decrypt and GenerateDataKey denied.
    fx.proxy.reset_log();
    fx.proxy.fail_always(
        Some("GenerateDataKey"),
        Fault::code("AccessDeniedException"),
    );
    fx.proxy
        .fail_always(Some("Decrypt"), Fault::code("AccessDeniedException"));

    let err = fx
        .app
        .fetch::<Account, _>(pool, "t-cold", &cold.id)
        .await
        .unwrap_err();
    let pe = read_fault(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::AccessDenied, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 1);
    assert_eq!(fx.proxy.count(Some("Decrypt")), 1, "exactly one request");

    let new = account("t-new");
    let err = fx.app.insert(pool, &new).await.unwrap_err();
    assert_eq!(
        write_fault(&err).kind(),
        ProviderErrorKind::AccessDenied,
        "{err}"
    );
    assert_eq!(
        fx.proxy.count(Some("GenerateDataKey")),
        1,
        "exactly one request"
    );
    assert_eq!(present(pool, &[new.id]).await, 0);
    assert_eq!(key_records(pool, "t-new").await, 0);

    let mut changed = cold.clone();
    changed.name = "must not be written".into();
    let err = fx
        .app
        .update_fields(pool, &changed, &["name"])
        .await
        .unwrap_err();
    assert_eq!(
        read_fault(&err).kind(),
        ProviderErrorKind::AccessDenied,
        "{err}"
    );
    let err = fx.app.update(pool, &changed).await.unwrap_err();
    assert_eq!(
        write_fault(&err).kind(),
        ProviderErrorKind::AccessDenied,
        "{err}"
    );
    assert_eq!(
        snapshot(pool, Some("t-cold")).await,
        cold_before,
        "old row unchanged"
    );

    tenant_works(&fx.app, pool, "hot", "while access is denied").await;

    // Access restored.
    fx.proxy.clear_faults();
    let allow = r#"{"Version":"2012-10-17","Statement":[{"Sid":"allow","Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}"#;
    fx.admin
        .put_key_policy()
        .key_id(&fx.arn)
        .policy_name("default")
        .policy(allow)
        .send()
        .await
        .unwrap();
    provider_builder(&fx.arn, &endpoint).build().await.unwrap();
    fx.app
        .update_fields(pool, &changed, &["name"])
        .await
        .unwrap();
    assert_eq!(
        fx.app
            .fetch::<Account, _>(pool, "t-cold", &cold.id)
            .await
            .unwrap(),
        Some(changed)
    );
    tenant_works(&fx.app, pool, "t-new", "after access is restored").await;
    fx.db.finish().await;
}

// ---- KMS key disabled ----------------------------------------------------------

/// The root key disabled. In `derived` mode every tenant key is wrapped by
/// the one root key, so what the library promises (docs/kms.md, the key
/// cache's lifetime, docs/threat-model.md) is:
/// - a tenant whose keys this process holds keeps working until the cache
///   lifetime ends (no KMS call), then fails with `KeyDisabled`;
/// - a tenant whose keys are not cached fails at once (`KeyDisabled`, never
///   retried), reads and writes alike; a new tenant cannot be created;
/// - an application starting now fails at `build()` with `KeyDisabled`;
/// - nothing is written by a failed call, and once the key is enabled again
///   everything works (errors are not cached).
///
/// The key is disabled in moto (DescribeKey then reports it); moto still
/// serves GenerateDataKey and Decrypt under a disabled key, so the proxy
/// answers those with `DisabledException`, as KMS does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_root_key_disabled() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let Some(pg) = db::postgres(8).await else {
        return;
    };
    let ttl = Duration::from_secs(4);
    let fx = setup(pg, &endpoint, ttl, |b| b).await;
    let pool = &fx.db.pool;
    let cold = account("t-cold");
    fx.other.insert(pool, &cold).await.unwrap();
    let cold_before = snapshot(pool, Some("t-cold")).await;
    // Warm the hot tenant's keys (tenant key and index key), then disable.
    fx.app.keys().forget_cached_keys();
    let warm_start = Instant::now();
    tenant_works(&fx.app, pool, "hot", "before the fault").await;
    let warmed = Instant::now();

    // moto's DisableKey and EnableKey take the bare key id, not the ARN.
    let key_id = fx.arn.rsplit('/').next().unwrap().to_owned();
    fx.admin.disable_key().key_id(&key_id).send().await.unwrap();
    fx.proxy
        .fail_always(Some("GenerateDataKey"), Fault::code("DisabledException"));
    fx.proxy
        .fail_always(Some("Decrypt"), Fault::code("DisabledException"));
    fx.proxy.reset_log();

    // Cached: keeps working, no KMS request.
    tenant_works(&fx.app, pool, "hot", "root key disabled, keys cached").await;
    assert_eq!(fx.proxy.count(None), 0, "cached keys: no KMS request");
    assert!(
        warm_start.elapsed() < ttl,
        "the check ran within the cache lifetime; make ttl longer"
    );

    // Uncached: fails at once.
    let err = fx
        .app
        .fetch::<Account, _>(pool, "t-cold", &cold.id)
        .await
        .unwrap_err();
    let pe = read_fault(&err);
    assert_eq!(pe.kind(), ProviderErrorKind::KeyDisabled, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 1, "never retried");
    let more = account("t-cold");
    let err = fx.app.insert(pool, &more).await.unwrap_err();
    assert_eq!(
        write_fault(&err).kind(),
        ProviderErrorKind::KeyDisabled,
        "{err}"
    );
    let mut changed = cold.clone();
    changed.name = "must not be written".into();
    let err = fx
        .app
        .update_fields(pool, &changed, &["name"])
        .await
        .unwrap_err();
    assert_eq!(
        read_fault(&err).kind(),
        ProviderErrorKind::KeyDisabled,
        "{err}"
    );
    assert_eq!(
        snapshot(pool, Some("t-cold")).await,
        cold_before,
        "old rows unchanged"
    );
    let new = account("t-new");
    let err = fx.app.insert(pool, &new).await.unwrap_err();
    assert_eq!(
        write_fault(&err).kind(),
        ProviderErrorKind::KeyDisabled,
        "{err}"
    );
    assert_eq!(present(pool, &[new.id]).await, 0);
    assert_eq!(key_records(pool, "t-new").await, 0, "no key created");
    let err = provider_builder(&fx.arn, &endpoint)
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.provider_error().map(|p| p.kind()),
        Some(ProviderErrorKind::KeyDisabled),
        "a starting application: {err}"
    );

    // After the cache lifetime the cached tenant fails too.
    tokio::time::sleep((ttl + Duration::from_millis(300)).saturating_sub(warmed.elapsed())).await;
    let late = account("hot");
    let err = fx.app.insert(pool, &late).await.unwrap_err();
    assert_eq!(
        write_fault(&err).kind(),
        ProviderErrorKind::KeyDisabled,
        "{err}"
    );
    assert_eq!(present(pool, &[late.id]).await, 0);
    let hot_rows = snapshot(pool, Some("hot")).await;
    let any_hot = *hot_rows.keys().next().unwrap();
    let err = fx
        .app
        .fetch::<Account, _>(pool, "hot", &any_hot)
        .await
        .unwrap_err();
    assert_eq!(
        read_fault(&err).kind(),
        ProviderErrorKind::KeyDisabled,
        "{err}"
    );
    assert_eq!(snapshot(pool, Some("hot")).await, hot_rows);

    // Enabled again: everything works, no error was cached.
    fx.admin.enable_key().key_id(&key_id).send().await.unwrap();
    fx.proxy.clear_faults();
    fx.app.insert(pool, &late).await.unwrap();
    fx.app.insert(pool, &new).await.unwrap();
    fx.app
        .update_fields(pool, &changed, &["name"])
        .await
        .unwrap();
    assert_eq!(
        fx.app
            .fetch::<Account, _>(pool, "t-cold", &cold.id)
            .await
            .unwrap(),
        Some(changed)
    );
    tenant_works(&fx.app, pool, "hot", "key enabled again").await;
    tenant_works(&fx.app, pool, "t-new", "key enabled again").await;
    fx.db.finish().await;
}

// ---- KMS unreachable -----------------------------------------------------------

/// KMS unreachable: a black hole (requests never answered) is `Timeout`
/// within the configured operation timeout; a closed endpoint (connection
/// refused) is `Unavailable` after the configured attempts. Nothing written;
/// cached tenants keep working through the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_unreachable_is_bounded() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let Some(pg) = db::postgres(8).await else {
        return;
    };
    let attempt = Duration::from_millis(500);
    let operation = Duration::from_millis(1500);
    let fx = setup(pg, &endpoint, Duration::from_secs(300), |b| {
        b.connect_timeout(Duration::from_millis(300))
            .attempt_timeout(attempt)
            .operation_timeout(operation)
            .retry_policy(
                rowseal::kms::RetryPolicy::default()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(20))
                    .with_max_backoff(Duration::from_millis(100)),
            )
    })
    .await;
    let pool = &fx.db.pool;
    tenant_works(&fx.app, pool, "hot", "before the outage").await;
    let cold = account("t-cold");
    fx.other.insert(pool, &cold).await.unwrap();
    let cold_before = snapshot(pool, Some("t-cold")).await;
    // Slack for a loaded CI machine; the bound itself is `operation`.
    let slack = Duration::from_secs(3);

    // Black hole.
    fx.proxy.fail_always(None, Fault::Hang);
    let started = Instant::now();
    let err = fx
        .app
        .fetch::<Account, _>(pool, "t-cold", &cold.id)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(read_fault(&err).kind(), ProviderErrorKind::Timeout, "{err}");
    assert!(took < operation + slack, "read failed after {took:?}");
    let new = account("t-new");
    let started = Instant::now();
    let err = fx.app.insert(pool, &new).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        write_fault(&err).kind(),
        ProviderErrorKind::Timeout,
        "{err}"
    );
    assert!(took >= attempt, "{took:?}: at least one attempt timed out");
    assert!(took < operation + slack, "write failed after {took:?}");
    eprintln!("black hole: Timeout after {took:?} (operation timeout {operation:?})");
    let mut changed = cold.clone();
    changed.name = "must not be written".into();
    let err = fx
        .app
        .update_fields(pool, &changed, &["name"])
        .await
        .unwrap_err();
    assert_eq!(read_fault(&err).kind(), ProviderErrorKind::Timeout, "{err}");
    assert_eq!(present(pool, &[new.id]).await, 0);
    assert_eq!(snapshot(pool, Some("t-cold")).await, cold_before);
    tenant_works(&fx.app, pool, "hot", "KMS is a black hole").await;

    // Closed: nothing listens on the endpoint any more.
    let Fx { db, proxy, app, .. } = fx;
    drop(proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pool = &db.pool;
    let started = Instant::now();
    let err = app.insert(pool, &new).await.unwrap_err();
    let took = started.elapsed();
    let pe = write_fault(&err);
    // Connection refused on loopback: a connection error, retried.
    assert_eq!(pe.kind(), ProviderErrorKind::Unavailable, "{err}");
    assert_eq!(aws_detail(pe).attempts(), 3, "the configured max_attempts");
    assert!(
        took < operation + slack,
        "closed endpoint: failed after {took:?}"
    );
    eprintln!(
        "closed endpoint: {:?} after {took:?}, {} attempts",
        pe.kind(),
        aws_detail(pe).attempts()
    );
    assert_eq!(present(pool, &[new.id]).await, 0);
    tenant_works(&app, pool, "hot", "KMS endpoint closed").await;
    db.finish().await;
}

// ---- a write whose key cannot be obtained ---------------------------------------

/// Writes whose key cannot be obtained leave no partial row: a single insert,
/// an insert_many whose failing row is in a later statement of a
/// transaction (the earlier statement already ran), an insert_many on the
/// pool (one statement), update_fields and update. Only the faulty tenant's
/// KMS requests fail (the proxy matches the tenant in the encryption
/// context), so a tenant never seen before keeps working during the fault.
async fn key_unobtainable_leaves_no_partial_row<DB: Backend>(db: TestDb<DB>, endpoint: &str)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Acquire<'c, Database = DB>,
    for<'c> &'c mut sqlx::Transaction<'static, DB>: sqlx::Acquire<'c, Database = DB>,
{
    let kind = db.kind;
    let fx = setup(db, endpoint, Duration::from_secs(300), |b| b).await;
    let pool = &fx.db.pool;
    // "nokey" has rows (written by another process) and its keys are not in
    // the application's cache; "ok" is warmed before the fault.
    let old: Vec<Account> = (0..3).map(|_| account("nokey")).collect();
    fx.other.insert_many(pool, &old).await.unwrap();
    tenant_works(&fx.app, pool, "ok", "before the fault").await;
    let before = snapshot(pool, None).await;

    fx.proxy
        .fail_if_body_contains("\"nokey\"", Fault::code("AccessDeniedException"));
    fx.proxy.reset_log();
    let denied = |e: &Error| write_fault(e).kind() == ProviderErrorKind::AccessDenied;

    // Single insert.
    let one = account("nokey");
    let err = fx.app.insert(pool, &one).await.unwrap_err();
    assert!(denied(&err), "[{kind}] insert: {err:?}");

    // insert_many on the pool, one statement, the faulty row in the middle.
    let mut batch: Vec<Account> = (0..20).map(|_| account("ok")).collect();
    batch.insert(10, account("nokey"));
    let err = fx.app.insert_many(pool, &batch).await.unwrap_err();
    assert!(denied(&err), "[{kind}] insert_many: {err:?}");
    let batch_ids: Vec<i64> = batch.iter().map(|a| a.id).collect();

    // insert_many in a transaction, more rows than one statement takes: the
    // first statement runs, the faulty row is in the second.
    let per_statement = rows_per_statement(pool).await;
    let mut big: Vec<Account> = (0..per_statement + 5).map(|_| account("ok")).collect();
    big.push(account("nokey"));
    let big_ids: Vec<i64> = big.iter().map(|a| a.id).collect();
    let mut tx = pool.begin().await.unwrap();
    let err = fx.app.insert_many(&mut tx, &big).await.unwrap_err();
    assert!(
        denied(&err),
        "[{kind}] insert_many in a transaction: {err:?}"
    );
    drop(tx); // rolled back, as an application's `?` would

    // update_fields and update of an existing row.
    let mut changed = old[0].clone();
    changed.name = "must not be written".into();
    changed.balance = -1;
    let err = fx
        .app
        .update_fields(pool, &changed, &["name", "balance"])
        .await
        .unwrap_err();
    assert_eq!(
        read_fault(&err).kind(),
        ProviderErrorKind::AccessDenied,
        "[{kind}] {err:?}"
    );
    let err = fx.app.update(pool, &changed).await.unwrap_err();
    assert!(denied(&err), "[{kind}] update: {err:?}");

    // Nothing of any of it is stored; every earlier row is unchanged.
    assert_eq!(present(pool, &[one.id]).await, 0, "[{kind}] single insert");
    assert_eq!(present(pool, &batch_ids).await, 0, "[{kind}] insert_many");
    assert_eq!(
        present(pool, &big_ids).await,
        0,
        "[{kind}] insert_many in a transaction"
    );
    assert_eq!(
        snapshot(pool, None).await,
        before,
        "[{kind}] stored rows unchanged"
    );
    assert_eq!(
        key_records(pool, "nokey").await,
        2,
        "[{kind}] the writer's tenant and index keys only"
    );

    // The same multi-statement insert_many on the pool, without a
    // transaction: as documented, only a transaction makes the whole call
    // atomic. What is promised still holds: each statement is all or nothing
    // (the rows stored are whole statements, in order, never the faulty
    // one's), and every stored row is whole and decrypts to what was written.
    let mut loose: Vec<Account> = (0..per_statement + 5).map(|_| account("ok")).collect();
    loose.push(account("nokey"));
    let err = fx.app.insert_many(pool, &loose).await.unwrap_err();
    assert!(denied(&err), "[{kind}] insert_many on the pool: {err:?}");
    let stored = snapshot(pool, None).await;
    let kept: Vec<&Account> = loose
        .iter()
        .filter(|a| stored.contains_key(&a.id))
        .collect();
    assert!(
        kept.is_empty() || kept.len() == per_statement,
        "[{kind}] {} rows of the call stored: whole statements only",
        kept.len()
    );
    assert!(
        kept.iter().zip(&loose).all(|(k, l)| k.id == l.id),
        "[{kind}] the stored rows are the first statement's"
    );
    for a in &kept {
        let back = fx.app.fetch::<Account, _>(pool, "ok", &a.id).await.unwrap();
        assert_eq!(back.as_ref(), Some(*a), "[{kind}] row {} is whole", a.id);
    }
    eprintln!(
        "[{kind}] insert_many on the pool without a transaction: {} of {} rows stored (whole statements)",
        kept.len(),
        loose.len()
    );

    // During the fault: the warm tenant, and a tenant never seen before.
    tenant_works(&fx.app, pool, "ok", "during the fault").await;
    tenant_works(&fx.app, pool, "brand-new", "during the fault").await;
    assert!(!fx.proxy.faulted().is_empty());

    // After: the same writes succeed.
    fx.proxy.clear_faults();
    fx.app.insert(pool, &one).await.unwrap();
    fx.app.insert_many(pool, &batch).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        fx.app.insert_many(&mut tx, &big).await.unwrap(),
        big.len() as u64
    );
    tx.commit().await.unwrap();
    fx.app
        .update_fields(pool, &changed, &["name", "balance"])
        .await
        .unwrap();
    assert_eq!(
        fx.app
            .fetch::<Account, _>(pool, "nokey", &changed.id)
            .await
            .unwrap(),
        Some(changed)
    );
    assert_eq!(present(pool, &big_ids).await, big.len());
    eprintln!(
        "[{kind}] no partial row: {} rows refused, then written",
        1 + batch.len() + big.len()
    );
    fx.db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_unobtainable_postgres() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let Some(db) = db::postgres(8).await else {
        return;
    };
    key_unobtainable_leaves_no_partial_row(db, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_unobtainable_mariadb() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let Some(db) = db::mysql(8).await else { return };
    key_unobtainable_leaves_no_partial_row(db, &endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_unobtainable_sqlite() {
    let Some(endpoint) = kms_endpoint() else {
        return;
    };
    let db = db::sqlite(4).await;
    key_unobtainable_leaves_no_partial_row(db, &endpoint).await;
}

// ---- database connection dropped mid-batch ---------------------------------------

/// Ids from this one stall the insert (a trigger sleeps on them) so that the
/// connection can be killed while the batch is being written.
const STALL_ID: i64 = 50_000_000;

/// How to stall an insert and kill the connection doing it, per server.
trait Killer: Backend {
    /// SQL creating the trigger that sleeps on `STALL_ID`.
    fn stall_trigger() -> Vec<String>;
    /// SQL dropping it.
    fn drop_trigger() -> Vec<String>;
    /// The server's id of the connection running this query.
    fn connection_id_sql() -> &'static str;
    /// Waits until connection `id` sleeps in the trigger, runs `during`
    /// (while the batch is stalled half-written), then kills the connection.
    async fn kill_when_stalled(
        pool: &sqlx::Pool<Self>,
        id: i64,
        during: impl std::future::Future<Output = ()>,
    );
}

async fn scalar_i64<DB: Backend>(
    conn: &mut DB::Connection,
    sql: &str,
    args: Vec<Value>,
) -> Option<i64>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let row = DB::fetch_optional(&mut *conn, sql, args).await.unwrap()?;
    match row.read_value(0, SqlType::I64) {
        Ok(Value::I64(v)) => Some(v),
        _ => match row.read_value(0, SqlType::I32).unwrap() {
            Value::I32(v) => Some(i64::from(v)),
            other => panic!("{other:?}"),
        },
    }
}

impl Killer for sqlx::Postgres {
    fn stall_trigger() -> Vec<String> {
        vec![
            format!(
                "CREATE FUNCTION e2e_stall() RETURNS trigger AS $$ BEGIN
                   IF NEW.id >= {STALL_ID} THEN PERFORM pg_sleep(60); END IF; RETURN NEW; END
                 $$ LANGUAGE plpgsql"
            ),
            "CREATE TRIGGER e2e_stall BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION e2e_stall()"
                .into(),
        ]
    }
    fn drop_trigger() -> Vec<String> {
        vec!["DROP TRIGGER e2e_stall ON accounts".into()]
    }
    fn connection_id_sql() -> &'static str {
        "SELECT CAST(pg_backend_pid() AS BIGINT)"
    }
    async fn kill_when_stalled(
        pool: &sqlx::Pool<Self>,
        id: i64,
        during: impl std::future::Future<Output = ()>,
    ) {
        let mut conn = pool.acquire().await.unwrap();
        for _ in 0..3000 {
            let n = scalar_i64::<Self>(
                &mut conn,
                "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'",
                vec![Value::I64(id)],
            )
            .await;
            if n == Some(1) {
                during.await;
                sqlx::query("SELECT pg_terminate_backend(CAST($1 AS INTEGER))")
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the insert never reached the stalling row");
    }
}

impl Killer for sqlx::MySql {
    fn stall_trigger() -> Vec<String> {
        vec![format!(
            "CREATE TRIGGER e2e_stall BEFORE INSERT ON accounts FOR EACH ROW BEGIN
               IF NEW.id >= {STALL_ID} THEN DO SLEEP(60); END IF; END"
        )]
    }
    fn drop_trigger() -> Vec<String> {
        vec!["DROP TRIGGER e2e_stall".into()]
    }
    fn connection_id_sql() -> &'static str {
        "SELECT CAST(CONNECTION_ID() AS SIGNED)"
    }
    async fn kill_when_stalled(
        pool: &sqlx::Pool<Self>,
        id: i64,
        during: impl std::future::Future<Output = ()>,
    ) {
        let mut conn = pool.acquire().await.unwrap();
        for _ in 0..3000 {
            let n = scalar_i64::<Self>(
                &mut conn,
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND STATE = 'User sleep'",
                vec![Value::I64(id)],
            )
            .await;
            if n == Some(1) {
                during.await;
                sqlx::query(&format!("KILL CONNECTION {id}"))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the insert never reached the stalling row");
    }
}

/// The connection doing an `insert_many` is killed from another connection
/// while the batch is being written (a trigger stalls on one row of the
/// second statement, so the first statement has already run): the error is
/// `Error::Database`, none of the batch is stored (it ran in a transaction),
/// earlier rows are unchanged, other tenants keep writing during the stall,
/// and the next call on the pool works. The same with a one-statement batch
/// on the pool (no transaction): the statement is atomic.
async fn connection_dropped_mid_batch<DB: Killer>(db: TestDb<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Acquire<'c, Database = DB>,
    for<'c> &'c mut sqlx::Transaction<'static, DB>: sqlx::Acquire<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: sqlx::Acquire<'c, Database = DB>,
{
    let kind = db.kind;
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Account, _>(&db.pool).await.unwrap();
    let keyring = rowseal::LocalKeyProvider::generate_keyring().to_string();
    let provider = rowseal::LocalKeyProvider::from_keyring_str(&keyring).unwrap();
    let enc = Encryptor::new(Arc::new(KeyHierarchy::new(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(db.pool.clone())),
    )));
    let pool = &db.pool;
    tenant_works(&enc, pool, "other", "before the fault").await;
    enc.keys().current_tenant_key("batch").await.unwrap();
    let earlier: Vec<Account> = (0..5).map(|_| account("batch")).collect();
    enc.insert_many(pool, &earlier).await.unwrap();
    for s in DB::stall_trigger() {
        sqlx::raw_sql(&s).execute(pool).await.unwrap();
    }
    let before = snapshot(pool, None).await;

    // A transaction over two statements; the stall is in the second.
    let per_statement = rows_per_statement(pool).await;
    let mut big: Vec<Account> = (0..per_statement + 50).map(|_| account("batch")).collect();
    big.push(account_with_id("batch", STALL_ID));
    let big_ids: Vec<i64> = big.iter().map(|a| a.id).collect();
    let mut tx = pool.begin().await.unwrap();
    let conn_id = scalar_i64::<DB>(&mut tx, DB::connection_id_sql(), vec![])
        .await
        .unwrap();
    // Other tenants keep writing while the batch is stalled half-written
    // (its first statement has run), before the connection is killed.
    let bystander = async {
        for _ in 0..3 {
            tenant_works(&enc, pool, "other", "while a batch is stalled").await;
        }
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(
        enc.insert_many(&mut tx, &big),
        DB::kill_when_stalled(pool, conn_id, bystander),
    );
    let err = result.unwrap_err();
    eprintln!(
        "[{kind}] batch of {} killed after {:?}: {err}",
        big.len(),
        started.elapsed()
    );
    assert!(matches!(err, Error::Database(_)), "[{kind}] {err:?}");
    drop(tx);
    assert_eq!(
        present(pool, &big_ids).await,
        0,
        "[{kind}] none of the batch"
    );
    let after = snapshot(pool, None).await;
    for (id, row) in &before {
        assert_eq!(after.get(id), Some(row), "[{kind}] row {id} unchanged");
    }

    // One statement on the pool (no transaction).
    let mut small: Vec<Account> = (0..30).map(|_| account("batch")).collect();
    small.insert(15, account_with_id("batch", STALL_ID + 1));
    let small_ids: Vec<i64> = small.iter().map(|a| a.id).collect();
    let mut conn = pool.acquire().await.unwrap();
    let conn_id = scalar_i64::<DB>(&mut conn, DB::connection_id_sql(), vec![])
        .await
        .unwrap();
    let (result, ()) = tokio::join!(
        enc.insert_many(&mut *conn, &small),
        DB::kill_when_stalled(pool, conn_id, async {})
    );
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Database(_)), "[{kind}] {err:?}");
    drop(conn);
    assert_eq!(
        present(pool, &small_ids).await,
        0,
        "[{kind}] none of the statement"
    );

    // The pool recovers: the next calls work, and the same batch goes in.
    for s in DB::drop_trigger() {
        sqlx::raw_sql(&s).execute(pool).await.unwrap();
    }
    tenant_works(&enc, pool, "batch", "after the connection was killed").await;
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        enc.insert_many(&mut tx, &big).await.unwrap(),
        big.len() as u64
    );
    tx.commit().await.unwrap();
    enc.insert_many(pool, &small).await.unwrap();
    assert_eq!(present(pool, &big_ids).await, big.len());
    let mut sql = format!(
        "SELECT {} FROM accounts WHERE tenant_id = ",
        Encryptor::select_list::<Account, DB>()
    );
    DB::push_placeholder(&mut sql, 1);
    let rows = DB::fetch_all(pool, &sql, vec![Value::Text("batch".into())])
        .await
        .unwrap();
    let stored: Vec<Account> = enc
        .decrypt_all(rowseal::TenantScope::Any, &rows)
        .await
        .unwrap();
    for a in big.iter().chain(&small).chain(&earlier) {
        assert!(
            stored.contains(a),
            "[{kind}] row {} decrypts to what was written",
            a.id
        );
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_batch_postgres() {
    let Some(db) = db::postgres(8).await else {
        return;
    };
    connection_dropped_mid_batch(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_batch_mariadb() {
    let Some(db) = db::mysql(8).await else { return };
    connection_dropped_mid_batch(db).await;
}
