#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Root keys per tenant over three providers (a local keyring, a KMS key on
//! the moto server, a Transit key on OpenBao), configured by one root-keys
//! file that the library and the tool both read: tenants moved between
//! providers online by `rowseal rewrap --tenant`, and a customer revoking its
//! own key.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Person;
use rowseal::root_keys::RootKeysConfig;
use rowseal::RootKeys;
use rowseal_core::{CacheConfig, ErrorKind, KeyHierarchy};
use rowseal_sqlx::{Encryptor, SqlxKeyStore};
use rowseal_test_support::kms;
use rowseal_test_support::vault::BaoServer;

const TENANTS: usize = 30;
const ROWS_PER_TENANT: i64 = 1_000;
const ROOTS: [&str; 3] = ["local", "kms", "vault"];

fn tenant(i: usize) -> String {
    format!("t{i:02}")
}

/// The services and files of one deployment.
struct Deployment {
    dir: PathBuf,
    kms_endpoint: String,
    kms_key: String,
    bao: BaoServer,
    transit_key: String,
}

impl Deployment {
    /// A local keyring file, a KMS key, a Transit key and a token for it;
    /// `None` (a loud skip, a failure under CI=true) without the servers.
    async fn start() -> Option<Deployment> {
        let kms_endpoint = kms::endpoint()?;
        let bao = BaoServer::shared()?;
        let dir = std::env::temp_dir().join(common::random_name());
        std::fs::create_dir_all(&dir).unwrap();
        rowseal_core::LocalKeyProvider::create_keyring_file(dir.join("local.keys")).unwrap();
        let admin = kms::admin_client(&kms_endpoint, kms::REGION);
        let kms_key = kms::create_key(&admin, false).await;
        let transit_key = format!("rowseal-{}", common::random_name());
        bao.create_key(&transit_key);
        let token = bao.token_with_policy(
            &format!("p-{transit_key}"),
            &BaoServer::key_user_policy(&[&transit_key]),
        );
        std::fs::write(dir.join("transit.token"), token).unwrap();
        Some(Deployment {
            dir,
            kms_endpoint,
            kms_key,
            bao,
            transit_key,
        })
    }

    /// Writes the root-keys file with `routes` (tenant, root key name) and
    /// returns its path.
    fn root_keys_file(&self, routes: &[(String, &str)]) -> PathBuf {
        let mut text = format!(
            "[root_keys.local]\nprovider = \"local\"\nkeyring_file = \"{}\"\n\n\
             [root_keys.kms]\nprovider = \"aws-kms\"\nkey = \"{}\"\nregion = \"{}\"\nendpoint = \"{}\"\n\n\
             [root_keys.vault]\nprovider = \"vault-transit\"\naddress = \"{}\"\nkey = \"{}\"\ntoken_file = \"{}\"\n\n\
             [routing]\ndefault = \"local\"\n\n[routing.tenants]\n",
            self.dir.join("local.keys").display(),
            self.kms_key,
            kms::REGION,
            self.kms_endpoint,
            self.bao.addr,
            self.transit_key,
            self.dir.join("transit.token").display(),
        );
        for (t, root) in routes {
            text.push_str(&format!("{t} = \"{root}\"\n"));
        }
        let path = self.dir.join("root-keys.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn routes(&self, moved: &[(&str, &str)]) -> Vec<(String, &'static str)> {
        (0..TENANTS)
            .map(|i| {
                let t = tenant(i);
                let root = moved
                    .iter()
                    .find(|(m, _)| *m == t)
                    .map(|(_, r)| *ROOTS.iter().find(|x| *x == r).unwrap())
                    .unwrap_or(ROOTS[i % 3]);
                (t, root)
            })
            .collect()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn encryptor(
    file: &Path,
    pool: &sqlx::PgPool,
    cache: CacheConfig,
) -> (Encryptor, Arc<RootKeys>, Arc<KeyHierarchy>) {
    let roots = Arc::new(
        RootKeysConfig::from_file(file)
            .unwrap()
            .build()
            .await
            .unwrap(),
    );
    let keys = Arc::new(KeyHierarchy::with_cache_config(
        roots.clone(),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        cache,
    ));
    (Encryptor::new(keys.clone()), roots, keys)
}

/// `rowseal ARGS --root-keys FILE` with the test AWS credentials.
fn tool(db_url: &str, file: &Path, args: &[&str]) -> tokio::process::Command {
    let mut all: Vec<&str> = args.to_vec();
    let file = file.to_str().unwrap();
    all.extend(["--root-keys", file]);
    let mut c = common::command(db_url, "", &all);
    c.env_remove("ROWSEAL_LOCAL_KEYS");
    c
}

async fn run(db_url: &str, file: &Path, args: &[&str]) -> common::Run {
    let out = tool(db_url, file, args).output().await.unwrap();
    common::parse(out.status.code(), &out.stdout, &out.stderr)
}

async fn root_key_ids(pool: &sqlx::PgPool, t: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT root_key_id FROM rowseal_keys WHERE tenant = $1 AND state <> 'destroyed' \
         AND wrapped IS NOT NULL ORDER BY purpose, version",
    )
    .bind(t)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_tenants_over_three_root_keys_move_between_providers_online() {
    let Some(d) = Deployment::start().await else {
        return;
    };
    let Some(db) = common::postgres().await else {
        return;
    };
    common::prepare(&db).await;
    let file = d.root_keys_file(&d.routes(&[]));
    let cache = CacheConfig::default();
    let (enc, roots, keys) = encryptor(&file, &db.pool, cache).await;

    // 30,000 rows, 1,000 per tenant.
    let rows: Vec<Person> = (0..TENANTS as i64 * ROWS_PER_TENANT)
        .map(|id| Person {
            id,
            tenant_id: tenant((id / ROWS_PER_TENANT) as usize),
            name: format!("name {id}"),
            note: (id % 7 == 0).then(|| format!("note {id}")),
            visits: 0,
        })
        .collect();
    for chunk in rows.chunks(5_000) {
        enc.insert_many(&db.pool, chunk).await.unwrap();
    }
    // The two tenants to move get a few more tenant-key versions, so that
    // the tool has several keys to move and a SIGKILL lands among them.
    for t in ["t01", "t02"] {
        for _ in 0..3 {
            keys.rotate_tenant_key(t).await.unwrap();
        }
    }
    for (i, root) in ROOTS.iter().enumerate() {
        let ids = root_key_ids(&db.pool, &tenant(i)).await;
        assert!(!ids.is_empty());
        let expected = roots
            .root_key_named(root)
            .unwrap()
            .current_key_id()
            .to_owned();
        assert!(ids.iter().all(|id| *id == expected), "{root}: {ids:?}");
    }

    // Four writers insert and read rows of every tenant throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicI64::new(1_000_000));
    let enc = Arc::new(enc);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (enc, pool, stop, next_id) =
                (enc.clone(), db.pool.clone(), stop.clone(), next_id.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let t = tenant(i % TENANTS);
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let row = Person {
                        id,
                        tenant_id: t.clone(),
                        name: format!("written {id}"),
                        note: None,
                        visits: 1,
                    };
                    enc.insert(&pool, &row).await.unwrap();
                    let old = (i % TENANTS) as i64 * ROWS_PER_TENANT + (id % ROWS_PER_TENANT);
                    let read: Person = enc.fetch(&pool, &t, &old).await.unwrap().unwrap();
                    assert_eq!(read.name, format!("name {old}"));
                    done += 1;
                    i += 7;
                }
                done
            })
        })
        .collect();

    // t01: KMS -> Transit, killed (SIGKILL) part-way, then run again. The
    // tool is slowed to 2 provider calls a second so that the kill lands
    // among t01's keys.
    let slow = ["--kms-rate", "2"];
    let mut args = vec!["rewrap", "--tenant", "t01", "--to", "vault"];
    args.extend(slow);
    let mut child = tool(&db.url, &file, &args).spawn().unwrap();
    for _ in 0..1000 {
        let running: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM rowseal_jobs WHERE state = 'running'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        if running > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the rewrap ended before the kill"
    );
    child.start_kill().unwrap();
    assert_eq!(child.wait().await.unwrap().code(), None, "SIGKILLed");
    let half: Vec<String> = root_key_ids(&db.pool, "t01").await;
    let moved = half
        .iter()
        .filter(|id| id.starts_with("vault-transit:"))
        .count();
    assert!(
        moved > 0 && moved < half.len(),
        "the kill landed among t01's keys: {half:?}"
    );

    let again = run(
        &db.url,
        &file,
        &["rewrap", "--tenant", "t01", "--to", "vault"],
    )
    .await;
    assert_eq!(again.code, Some(0), "{}\n{}", again.stderr, again.stdout);
    let done = again.event("done").unwrap();
    assert_eq!(
        done["keys_rewrapped"].as_u64().unwrap() as usize,
        half.len() - moved,
        "the second run moves what the first left: {done}"
    );

    // t02: Transit -> KMS, in one run.
    let r = run(
        &db.url,
        &file,
        &["rewrap", "--tenant", "t02", "--to", "kms"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    // Idempotent: nothing left to do.
    let r = run(
        &db.url,
        &file,
        &["rewrap", "--tenant", "t02", "--to", "kms"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.event("done").unwrap()["keys_rewrapped"], 0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written > 0);

    // Only t01's and t02's keys moved, and all of them.
    let vault_id = roots
        .root_key_named("vault")
        .unwrap()
        .current_key_id()
        .to_owned();
    let kms_id = roots
        .root_key_named("kms")
        .unwrap()
        .current_key_id()
        .to_owned();
    assert!(root_key_ids(&db.pool, "t01")
        .await
        .iter()
        .all(|id| *id == vault_id));
    assert!(root_key_ids(&db.pool, "t02")
        .await
        .iter()
        .all(|id| *id == kms_id));
    assert!(root_key_ids(&db.pool, "t04")
        .await
        .iter()
        .all(|id| *id == kms_id));
    assert!(root_key_ids(&db.pool, "t05")
        .await
        .iter()
        .all(|id| *id == vault_id));

    // A Transit key rotation keeps the key id: `--in-place` rewraps t01's
    // keys (inside Vault) under the new Transit key version, so that the
    // old version can be retired.
    d.bao.bao(&[
        "write",
        "-f",
        &format!("transit/keys/{}/rotate", d.transit_key),
    ]);
    let r = run(
        &db.url,
        &file,
        &["rewrap", "--tenant", "t01", "--to", "vault", "--in-place"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let wrapped: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM rowseal_keys WHERE tenant = 't01'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(wrapped.len(), half.len());
    for w in &wrapped {
        let w = rowseal_core::WrappedKey::from_bytes(w).unwrap();
        assert!(w.ciphertext().starts_with(b"vault:v2:"), "{:?}", w.key_id());
    }

    // Route the moved tenants in the file too; every row then reads, through
    // the tool and through a fresh application process.
    let file = d.root_keys_file(&d.routes(&[("t01", "vault"), ("t02", "kms")]));
    // The tool's other jobs follow the routing too: t01's next tenant key is
    // made under its new root key, and its rows re-encrypted under it.
    let r = run(&db.url, &file, &["rotate", "--tenant", "t01"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    let t01 = root_key_ids(&db.pool, "t01").await;
    assert_eq!(t01.len(), half.len() + 1, "one more version: {t01:?}");
    assert!(t01.iter().all(|id| *id == vault_id), "{t01:?}");
    let v = run(&db.url, &file, &["verify"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stderr, v.stdout);

    // Every tenant off a provider in one command: all keys under the
    // Transit key (t01, and every third tenant from t02's original group)
    // move to the local key; the others stay where they are.
    let local_id = roots
        .root_key_named("local")
        .unwrap()
        .current_key_id()
        .to_owned();
    let r = run(
        &db.url,
        &file,
        &["rewrap", "--from", "vault", "--to", "local"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stderr, r.stdout);
    for t in ["t01", "t05", "t08"] {
        let ids = root_key_ids(&db.pool, t).await;
        assert!(ids.iter().all(|id| *id == local_id), "{t}: {ids:?}");
    }
    assert!(root_key_ids(&db.pool, "t02")
        .await
        .iter()
        .all(|id| *id == kms_id));
    assert!(root_key_ids(&db.pool, "t04")
        .await
        .iter()
        .all(|id| *id == kms_id));
    let file = d.root_keys_file(&d.routes(&[
        ("t01", "local"),
        ("t02", "kms"),
        ("t05", "local"),
        ("t08", "local"),
    ]));
    let v = run(&db.url, &file, &["verify"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stderr, v.stdout);
    let (fresh, fresh_roots, _) = encryptor(&file, &db.pool, CacheConfig::default()).await;
    for i in 0..TENANTS {
        let t = tenant(i);
        for id in [0, ROWS_PER_TENANT / 2, ROWS_PER_TENANT - 1] {
            let id = i as i64 * ROWS_PER_TENANT + id;
            let p: Person = fresh.fetch(&db.pool, &t, &id).await.unwrap().unwrap();
            assert_eq!(p.name, format!("name {id}"));
        }
    }
    // Provider calls at each server grow with tenants and key versions, not
    // with the 30,000 rows: the writers' process, and the reader's.
    eprintln!(
        "{written} rows written during the moves; t01 killed after {moved} of {} keys; \
         provider calls per root key: writers {:?}, fresh reader {:?}",
        half.len(),
        roots.call_counts(),
        fresh_roots.call_counts()
    );
    for (name, c) in roots
        .call_counts()
        .into_iter()
        .chain(fresh_roots.call_counts())
    {
        assert!(
            c.total() <= 3 * TENANTS as u64,
            "{name}: {c:?} provider calls for 30,000 rows"
        );
    }
    db.finish().await;
}

/// One tenant's own Transit key, revoked by its owner: that tenant fails with
/// the typed error within one cache lifetime, the others go on, and restoring
/// the policy restores the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_revokes_its_transit_key_and_restores_it() {
    let Some(d) = Deployment::start().await else {
        return;
    };
    let Some(db) = common::postgres().await else {
        return;
    };
    common::prepare(&db).await;
    // acme's own key and a token whose policy acme controls.
    let acme_key = format!("acme-{}", common::random_name());
    d.bao.create_key(&acme_key);
    let acme_policy = format!("p-{acme_key}");
    let token = d
        .bao
        .token_with_policy(&acme_policy, &BaoServer::key_user_policy(&[&acme_key]));
    std::fs::write(d.dir.join("acme.token"), token).unwrap();
    let mut routes = d.routes(&[]);
    routes.push(("acme".into(), "acme"));
    let file = d.root_keys_file(&routes);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text = text.replace(
        "[routing]",
        &format!(
            "[root_keys.acme]\nprovider = \"vault-transit\"\naddress = \"{}\"\nkey = \"{acme_key}\"\ntoken_file = \"{}\"\n\n[routing]",
            d.bao.addr,
            d.dir.join("acme.token").display()
        ),
    );
    std::fs::write(&file, text).unwrap();

    let ttl = Duration::from_secs(1);
    let cache = CacheConfig {
        ttl,
        ..CacheConfig::default()
    };
    let (enc, _, _) = encryptor(&file, &db.pool, cache).await;
    let person = |id: i64, t: &str| Person {
        id,
        tenant_id: t.into(),
        name: format!("name {id}"),
        note: None,
        visits: 0,
    };
    let others = ["t00", "t01", "t02"];
    enc.insert(&db.pool, &person(1, "acme")).await.unwrap();
    for (i, t) in others.iter().enumerate() {
        enc.insert(&db.pool, &person(10 + i as i64, t))
            .await
            .unwrap();
    }

    // acme revokes rowseal's access to its key.
    d.bao.bao_stdin(
        &["policy", "write", &acme_policy, "-"],
        Some(&BaoServer::key_user_policy(&["nothing"])),
    );
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let err = enc
        .fetch::<Person, _>(&db.pool, "acme", &1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(!err.is_retryable(), "{err}");
    let err = enc.insert(&db.pool, &person(2, "acme")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    for (i, t) in others.iter().enumerate() {
        let id = 10 + i as i64;
        assert!(enc
            .fetch::<Person, _>(&db.pool, t, &id)
            .await
            .unwrap()
            .is_some());
        enc.insert(&db.pool, &person(20 + i as i64, t))
            .await
            .unwrap();
    }

    // The operator sees it: `status --keys` names acme's root key, its
    // provider and the refusal; the other tenants (whose keys expired from
    // the cache too, and were unwrapped again) show a success and no error.
    // (Applications record key uses in the background: wait until `ready`.)
    let acme_status = |ready: fn(&serde_json::Value, &[serde_json::Value]) -> bool| {
        let (url, file) = (db.url.clone(), file.clone());
        async move {
            for _ in 0..50 {
                let st = run(&url, &file, &["status", "--keys"]).await;
                assert_eq!(st.code, Some(0), "{}", st.stderr);
                let events: Vec<serde_json::Value> =
                    st.all("tenant_keys").into_iter().cloned().collect();
                let acme = events
                    .iter()
                    .find(|e| e["tenant"] == "acme")
                    .expect("acme's keys")
                    .clone();
                if ready(&acme, &events) {
                    return (acme, events);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("acme's key use was not recorded within 5 s");
        }
    };
    let (acme, events) = acme_status(|a, all| {
        !a["last_error_kind"].is_null()
            && all
                .iter()
                .filter(|e| e["tenant"] != "acme" && e["tenant"] != "")
                .all(|e| !e["last_unwrap_ok_at_unix_ms"].is_null())
    })
    .await;
    assert_eq!(acme["provider"], "vault-transit", "{acme}");
    assert!(acme["root_key_id"].as_str().unwrap().ends_with(&acme_key));
    assert_eq!(acme["last_error_kind"], "access_denied", "{acme}");
    assert!(acme["last_error_at_unix_ms"].as_i64().is_some());
    assert!(!acme["last_error"].as_str().unwrap().contains("hvs."));
    for t in others {
        let e = events.iter().find(|e| e["tenant"] == t).unwrap();
        assert!(e["last_error_kind"].is_null(), "{e}");
        assert!(e["last_unwrap_ok_at_unix_ms"].as_i64().is_some(), "{e}");
    }

    // acme restores access: served at the next call.
    d.bao.bao_stdin(
        &["policy", "write", &acme_policy, "-"],
        Some(&BaoServer::key_user_policy(&[&acme_key])),
    );
    let back: Person = enc.fetch(&db.pool, "acme", &1).await.unwrap().unwrap();
    assert_eq!(back.name, "name 1");
    enc.insert(&db.pool, &person(2, "acme")).await.unwrap();
    let (acme, _) = acme_status(|a, _| {
        a["last_unwrap_ok_at_unix_ms"].as_i64() >= a["last_error_at_unix_ms"].as_i64()
    })
    .await;
    assert!(
        acme["last_unwrap_ok_at_unix_ms"].as_i64().unwrap()
            >= acme["last_error_at_unix_ms"].as_i64().unwrap(),
        "{acme}"
    );
    db.finish().await;
}
