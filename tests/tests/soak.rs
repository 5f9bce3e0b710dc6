#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The soak test on PostgreSQL: 32 concurrent tasks insert, read (`fetch`,
//! `fetch_all`), update (`update`, `update_fields`), look up by blind index
//! and delete, for a bounded time, while the `rowseal` command-line tool
//! rotates every tenant's key and re-encrypts the table again and again (as a
//! subprocess, the way a DBA runs it).
//!
//! Every task owns its rows and keeps their latest expected value in memory;
//! every read is checked against it. At the end every row decrypts (through a
//! fresh application) to its expected value, deleted rows are gone, a final
//! rotation leaves nothing to rotate, `rowseal verify` finds no failure, and
//! no operation failed: any error fails the test with its typed error. A lost
//! race of `update_fields` against the rotation (`Error::Conflict`, the
//! documented compare-and-swap on the row header) is retried and counted.
//!
//! Duration: `ROWSEAL_SOAK_SECS` (default 45). Seed: `ROWSEAL_SOAK_SEED`
//! (default random, printed). Run:
//! `cargo test --workspace --all-features --test soak -- --nocapture`.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowseal::sqlx::{self, Postgres};
use rowseal::{
    schema, CacheConfig, Encrypted, Encryptor, Error, KeyHierarchy, LocalKeyProvider, SqlxKeyStore,
};
use rowseal_e2e::db::{self, TestDb};
use serde_json::Value as Json;

/// Prints to the process's stderr directly, bypassing the test harness's
/// output capture, so that CI logs show the soak's report on success too.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const TASKS: usize = 32;
const TENANTS: u64 = 8;
/// Rows seeded per task before the clock starts.
const SEED_ROWS: i64 = 60;
/// Each task owns ids `task * ID_SPAN ..`.
const ID_SPAN: i64 = 10_000_000;

#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "soak_patients",
    record_type = "soak_patient",
    tenant = tenant_id,
    primary_key = id,
    bind_primary_key
)]
struct Patient {
    id: i64,
    tenant_id: String,
    #[rowseal(encrypt)]
    name: String,
    // 16 bits: with a few hundred rows per tenant, lookups meet false
    // positives, which must be removed before the caller sees them.
    #[rowseal(
        encrypt,
        blind_index(name = "email_idx", bits = 16, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(encrypt)]
    note: Option<String>,
    visits: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    Insert,
    InsertMany,
    Fetch,
    FetchAll,
    Update,
    UpdateFields,
    Lookup,
    Delete,
}

const OPS: [(Op, u32); 8] = [
    (Op::Insert, 12),
    (Op::InsertMany, 3),
    (Op::Fetch, 22),
    (Op::FetchAll, 5),
    (Op::Update, 10),
    (Op::UpdateFields, 18),
    (Op::Lookup, 22),
    (Op::Delete, 8),
];

fn pick(rng: &mut StdRng) -> Op {
    let total: u32 = OPS.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (op, w) in OPS {
        if x < w {
            return op;
        }
        x -= w;
    }
    Op::Fetch
}

fn tenant_of(id: i64) -> String {
    format!(
        "tenant-{}",
        (id as u64).wrapping_mul(2_654_435_761) % TENANTS
    )
}

fn patient(id: i64, version: u64) -> Patient {
    Patient {
        id,
        tenant_id: tenant_of(id),
        name: format!("Patient {id} v{version}"),
        email: format!("p{id}.v{version}@soak.example"),
        note: (!version.is_multiple_of(3)).then(|| format!("note {id}/{version}")),
        visits: version as i64,
    }
}

/// What one task did, and its rows' expected final state.
#[derive(Default)]
struct Outcome {
    counts: BTreeMap<Op, u64>,
    update_fields_retries: u64,
    expected: HashMap<i64, Patient>,
    deleted: Vec<i64>,
}

/// The application: a short key-cache lifetime, so that it follows the
/// rotation's new key versions within a second (with the default 5 minutes,
/// every rotation would wait for it).
fn application(pool: &sqlx::PgPool, keyring: &str, ttl: Duration) -> Encryptor {
    let provider = LocalKeyProvider::from_keyring_str(keyring).unwrap();
    Encryptor::new(Arc::new(KeyHierarchy::with_cache_config(
        Arc::new(provider),
        Arc::new(SqlxKeyStore::new(pool.clone())),
        CacheConfig {
            max_entries: 10_000,
            ttl,
        },
    )))
}

/// One task's loop: returns its outcome, or the first error (with the typed
/// error's `Debug`) and what it was doing.
async fn run_task(
    task: usize,
    seed: u64,
    enc: Encryptor,
    pool: sqlx::PgPool,
    seeded: Vec<Patient>,
    stop: Arc<AtomicBool>,
) -> Result<Outcome, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ (task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut out = Outcome::default();
    let mut versions: HashMap<i64, u64> = HashMap::new();
    for p in seeded {
        versions.insert(p.id, 0);
        out.expected.insert(p.id, p);
    }
    let base = task as i64 * ID_SPAN;
    let mut next_id = base + SEED_ROWS;
    let fail = |op: Op, id: i64, e: Error| format!("task {task}: {op:?} of row {id}: {e} ({e:?})");
    while !stop.load(Ordering::Relaxed) {
        let op = pick(&mut rng);
        // A random row of this task, if it has any.
        let mut ids: Vec<i64> = Vec::new();
        if !out.expected.is_empty() && !matches!(op, Op::Insert | Op::InsertMany) {
            let n = rng.gen_range(0..out.expected.len());
            ids.push(*out.expected.keys().nth(n).unwrap());
        }
        match (op, ids.first().copied()) {
            (Op::Insert, _) => {
                let p = patient(next_id, 0);
                next_id += 1;
                enc.insert(&pool, &p).await.map_err(|e| fail(op, p.id, e))?;
                versions.insert(p.id, 0);
                out.expected.insert(p.id, p);
            }
            (Op::InsertMany, _) => {
                let batch: Vec<Patient> = (0..5).map(|k| patient(next_id + k, 0)).collect();
                next_id += 5;
                let n = enc
                    .insert_many(&pool, &batch)
                    .await
                    .map_err(|e| fail(op, batch[0].id, e))?;
                if n != 5 {
                    return Err(format!("task {task}: insert_many wrote {n} rows of 5"));
                }
                for p in batch {
                    versions.insert(p.id, 0);
                    out.expected.insert(p.id, p);
                }
            }
            (Op::Fetch, Some(id)) => {
                let want = &out.expected[&id];
                let got = enc
                    .fetch::<Patient, _>(&pool, &want.tenant_id, &id)
                    .await
                    .map_err(|e| fail(op, id, e))?;
                if got.as_ref() != Some(want) {
                    return Err(format!(
                        "task {task}: fetch of row {id}: got {got:?}, want {want:?}"
                    ));
                }
            }
            (Op::FetchAll, Some(id)) => {
                let tenant = tenant_of(id);
                let sql = format!(
                    "SELECT {} FROM soak_patients WHERE tenant_id = $1 AND id >= $2 AND id < $3",
                    Encryptor::select_list::<Patient, Postgres>()
                );
                let mut got: Vec<Patient> = enc
                    .fetch_all(
                        &tenant,
                        sqlx::query(&sql)
                            .bind(&tenant)
                            .bind(base)
                            .bind(base + ID_SPAN),
                        &pool,
                    )
                    .await
                    .map_err(|e| fail(op, id, e))?;
                got.sort_by_key(|p| p.id);
                let mut want: Vec<&Patient> = out
                    .expected
                    .values()
                    .filter(|p| p.tenant_id == tenant)
                    .collect();
                want.sort_by_key(|p| p.id);
                if got.iter().collect::<Vec<_>>() != want {
                    return Err(format!(
                        "task {task}: fetch_all of {tenant}: {} rows, want {}",
                        got.len(),
                        want.len()
                    ));
                }
            }
            (Op::Update, Some(id)) => {
                let v = versions[&id] + 1;
                let p = patient(id, v);
                enc.update(&pool, &p).await.map_err(|e| fail(op, id, e))?;
                versions.insert(id, v);
                out.expected.insert(id, p);
            }
            (Op::UpdateFields, Some(id)) => {
                let mut p = out.expected[&id].clone();
                let v = versions[&id] + 1;
                p.name = format!("Patient {id} renamed {v}");
                p.visits = v as i64;
                let mut done = false;
                for _ in 0..200 {
                    match enc.update_fields(&pool, &p, &["name", "visits"]).await {
                        Ok(()) => {
                            done = true;
                            break;
                        }
                        // The rotation re-encrypted the row between our read
                        // of its header and our write: retry.
                        Err(Error::Conflict { .. }) => out.update_fields_retries += 1,
                        Err(e) => return Err(fail(op, id, e)),
                    }
                }
                if !done {
                    return Err(format!(
                        "task {task}: update_fields of row {id} lost 200 races"
                    ));
                }
                versions.insert(id, v);
                out.expected.insert(id, p);
            }
            (Op::Lookup, Some(id)) => {
                let want = out.expected[&id].clone();
                let query = format!("  {}  ", want.email.to_uppercase());
                let got = Patient::find_by_email(&enc, &pool, &want.tenant_id, &query)
                    .await
                    .map_err(|e| fail(op, id, e))?;
                if got != vec![want.clone()] {
                    return Err(format!(
                        "task {task}: lookup of row {id}: got {got:?}, want [{want:?}]"
                    ));
                }
            }
            (Op::Delete, Some(id)) => {
                let tenant = out.expected[&id].tenant_id.clone();
                let deleted = enc
                    .delete::<Patient, _>(&pool, &tenant, &id)
                    .await
                    .map_err(|e| fail(op, id, e))?;
                if !deleted {
                    return Err(format!("task {task}: delete of row {id} found no row"));
                }
                out.expected.remove(&id);
                out.deleted.push(id);
            }
            (_, None) => continue,
        }
        *out.counts.entry(op).or_default() += 1;
    }
    Ok(out)
}

/// One run of the command-line tool: exit code and JSON events.
struct Run {
    code: Option<i32>,
    events: Vec<Json>,
    stderr: String,
}

impl Run {
    fn all(&self, name: &str) -> Vec<&Json> {
        self.events.iter().filter(|e| e["event"] == name).collect()
    }
    fn last(&self, name: &str) -> Option<&Json> {
        self.events.iter().rev().find(|e| e["event"] == name)
    }
}

async fn rowseal(url: &str, keyring: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_e2e-rowseal"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("ROWSEAL_LOCAL_KEYS", keyring)
        .env_remove("ROWSEAL_LOCAL_KEY_FILE")
        .env_remove("ROWSEAL_KMS_KEY_ID")
        .env_remove("ROWSEAL_CONFIG")
        .env_remove("ROWSEAL_KMS_RATE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const ROTATE: [&str; 6] = [
    "rotate",
    "--all-tenants",
    "--workers",
    "2",
    "--batch-size",
    "200",
];

/// A rotate run while the application writes: done (exit 0), or left
/// incomplete because the application still wrote on an old version (exit 1
/// with an `incomplete` event, resumed by the next run). Anything else, or any
/// row that failed, is an error. Returns rows re-encrypted by this run.
fn check_rotate(run: &Run) -> Result<u64, String> {
    let failures = run.all("failure");
    if !failures.is_empty() {
        return Err(format!("rotate reported failing rows: {failures:?}"));
    }
    let reencrypted = |e: &Json| e["reencrypted"].as_u64().unwrap_or(0);
    match run.code {
        Some(0) => {
            let done = run
                .last("done")
                .ok_or_else(|| format!("rotate: no done event: {}", run.stderr))?;
            if done["failed"].as_u64().unwrap_or(0) != 0 {
                return Err(format!("rotate failed rows: {done}"));
            }
            Ok(reencrypted(done))
        }
        Some(1) => match run.last("incomplete") {
            Some(e) => Ok(reencrypted(e)),
            None => Err(format!(
                "rotate exit 1 without `incomplete`: {}",
                run.stderr
            )),
        },
        other => Err(format!("rotate exit {other:?}: {}", run.stderr)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_postgres() {
    let Some(db) = db::postgres(24).await else {
        return;
    };
    let secs: u64 = std::env::var("ROWSEAL_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("ROWSEAL_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    say!("soak: {TASKS} tasks, {secs} s, seed {seed} (ROWSEAL_SOAK_SEED)");
    soak(db, Duration::from_secs(secs), seed).await;
}

async fn soak(db: TestDb<Postgres>, duration: Duration, seed: u64) {
    let pool = db.pool.clone();
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    schema::install(&pool).await.unwrap();
    schema::create_table::<Patient, _>(&pool).await.unwrap();
    schema::register::<Patient, _>(&pool).await.unwrap();
    let ttl = Duration::from_secs(1);
    let enc = application(&pool, &keyring, ttl);

    // Seed: SEED_ROWS rows per task.
    let mut seeded: Vec<Vec<Patient>> = Vec::new();
    for t in 0..TASKS {
        let base = t as i64 * ID_SPAN;
        let rows: Vec<Patient> = (base..base + SEED_ROWS).map(|id| patient(id, 0)).collect();
        enc.insert_many(&pool, &rows).await.unwrap();
        seeded.push(rows);
    }

    // The rotation: the CLI, again and again, until the clock stops.
    let stop = Arc::new(AtomicBool::new(false));
    let rotator = {
        let url = db.url.clone();
        let keyring = keyring.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut runs, mut completed, mut rows) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let run = rowseal(&url, &keyring, &ROTATE).await;
                rows += check_rotate(&run)?;
                runs += 1;
                completed += u64::from(run.code == Some(0));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok::<_, String>((runs, completed, rows))
        })
    };

    let started = Instant::now();
    let tasks: Vec<_> = seeded
        .into_iter()
        .enumerate()
        .map(|(t, rows)| {
            tokio::spawn(run_task(
                t,
                seed,
                enc.clone(),
                pool.clone(),
                rows,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    let mut outcomes = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => outcomes.push(o),
            Err(e) => errors.push(e),
        }
    }
    let elapsed = started.elapsed();
    let rotation = rotator.await.unwrap();

    // Counts.
    let mut counts: BTreeMap<Op, u64> = BTreeMap::new();
    let mut retries = 0;
    for o in &outcomes {
        for (op, n) in &o.counts {
            *counts.entry(*op).or_default() += n;
        }
        retries += o.update_fields_retries;
    }
    let total: u64 = counts.values().sum();
    say!(
        "soak: {total} operations in {:.1} s = {:.0} ops/s, {} errors",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        errors.len()
    );
    for (op, n) in &counts {
        say!(
            "soak:   {:<13} {n:>8}  ({:.0}/s)",
            format!("{op:?}"),
            *n as f64 / elapsed.as_secs_f64()
        );
    }
    say!("soak:   update_fields lost races to the rotation, retried: {retries}");
    match &rotation {
        Ok((runs, completed, rows)) => say!(
            "soak: rotation: {runs} runs of `rowseal rotate` ({completed} completed jobs), {rows} rows re-encrypted"
        ),
        Err(e) => say!("soak: rotation FAILED: {e}"),
    }
    assert!(
        errors.is_empty(),
        "{} tasks failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let (runs, completed, rows) = rotation.unwrap();
    assert_eq!(outcomes.len(), TASKS);
    for (op, _) in OPS {
        assert!(counts.get(&op).copied().unwrap_or(0) > 0, "no {op:?} ran");
    }
    assert!(runs > 0 && rows > 0, "the rotation ran during the soak");
    if duration >= Duration::from_secs(20) {
        assert!(
            completed > 0,
            "at least one rotation job completed during the soak"
        );
    }

    // The application has stopped: a final rotation finishes (exit 0) and
    // leaves nothing to rotate.
    let last = rowseal(&db.url, &keyring, &ROTATE).await;
    assert_eq!(
        last.code,
        Some(0),
        "final rotate: {}\n{:?}",
        last.stderr,
        last.events
    );
    check_rotate(&last).unwrap();
    let status = rowseal(&db.url, &keyring, &["status", "--json"]).await;
    assert_eq!(status.code, Some(0), "status: {}", status.stderr);
    let table = status
        .all("table")
        .into_iter()
        .find(|t| t["table"] == "soak_patients")
        .unwrap_or_else(|| panic!("no status for soak_patients: {:?}", status.events))
        .clone();
    assert_eq!(table["rows_to_rotate"], 0, "{table}");

    // Every row decrypts, through a fresh application, to its expected value.
    let mut expected: HashMap<i64, Patient> = HashMap::new();
    let mut deleted: Vec<i64> = Vec::new();
    for o in outcomes {
        expected.extend(o.expected);
        deleted.extend(o.deleted);
    }
    assert_eq!(table["rows"], expected.len() as u64, "{table}");
    let fresh = application(&pool, &keyring, Duration::from_secs(300));
    let sql = format!(
        "SELECT {} FROM soak_patients",
        Encryptor::select_list::<Patient, Postgres>()
    );
    let stored: Vec<Patient> = fresh
        .fetch_all(rowseal::TenantScope::Any, sqlx::query(&sql), &pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), expected.len(), "row count");
    for p in &stored {
        assert_eq!(Some(p), expected.get(&p.id), "row {}", p.id);
    }
    let gone: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM soak_patients WHERE id = ANY($1)")
        .bind(&deleted)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone, 0, "deleted rows are gone");
    let versions: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant_id, MAX(rowseal_key_version) FROM soak_patients GROUP BY tenant_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let verify = rowseal(&db.url, &keyring, &["verify"]).await;
    assert_eq!(
        verify.code,
        Some(0),
        "verify: {}\n{:?}",
        verify.stderr,
        verify.events
    );
    assert!(verify.all("failure").is_empty());
    say!(
        "soak: end state: {} rows verified ({} deleted), tenant key versions {:?}",
        stored.len(),
        deleted.len(),
        versions
    );
    pool.close().await;
    db.finish().await;
}
