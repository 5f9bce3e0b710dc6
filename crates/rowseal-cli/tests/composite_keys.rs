#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The tool on tables whose primary key is `(tenant, key)`
//! (`#[rowseal(primary_key = (tenant_id, id))]`), on SQLite, PostgreSQL and
//! MariaDB: every tenant holds the same keys (1 to 7), so a key names a row
//! per tenant only, and with batches of one or two rows the page boundaries
//! fall between tenants that share a key. Tenants differ in case (`Acme`,
//! `beta`, `Cyan`): MariaDB's default collation sorts them otherwise than
//! bytes do, and a scan must page by the collation its ORDER BY uses.
//!
//! - `encrypt-column` adopts a plaintext table; a row that fails is skipped
//!   by its identity, not by its key (the other tenants' rows with that key
//!   are encrypted).
//! - `rotate` moves every row of every tenant to the new key version
//!   (derived mode) or a new data key (kms mode, walked with a cursor), and
//!   every row still reads through the library with its own values.
//! - `verify` checks every row; `reindex` recomputes every row's blind-index
//!   values (a tenant-scoped and a global index over values shared by every
//!   tenant), and the lookups still find each tenant's own rows; `rewrap`
//!   moves every kms-mode row; `decrypt-column` copies every value back.
//! - A kms-mode rotation killed midway resumes from its `(tenant, key)`
//!   checkpoint, doing each row once; a checkpoint without its tenant is
//!   refused (exit 6) rather than resumed from the key alone.

mod common;

use std::collections::HashSet;

use common::Db;
use rowseal_core::LocalKeyProvider;
use rowseal_sqlx::{schema, Backend, DbRow, Encrypted, Encryptor, SqlType, Value};
use uuid::Uuid;

/// Derived mode, a text tenant: a tenant-scoped and a global blind index.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "notes",
    record_type = "note",
    tenant = tenant_id,
    primary_key = (tenant_id, id),
    bind_primary_key
)]
struct Note {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        blind_index(name = "note_title_idx", bits = 32, normalize = "trim,lowercase")
    )]
    title: String,
    #[rowseal(
        encrypt,
        blind_index(
            name = "note_code_idx",
            bits = 48,
            normalize = "trim,lowercase",
            scope = "global"
        )
    )]
    code: String,
    #[rowseal(encrypt)]
    body: Option<String>,
}

/// kms mode (a provider data key per row), a UUID tenant.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "lockers",
    record_type = "locker",
    tenant = org,
    primary_key = (org, id),
    key_mode = "kms",
    bind_primary_key
)]
struct Locker {
    id: i64,
    org: Uuid,
    #[rowseal(encrypt)]
    secret: String,
}

/// A text tenant, adopted from plaintext (`encrypt-column`).
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "contacts",
    record_type = "contact",
    tenant = tenant_id,
    primary_key = (tenant_id, id)
)]
struct Contact {
    id: i64,
    tenant_id: String,
    #[rowseal(
        encrypt,
        column = "email_ct",
        plaintext_column = "email",
        blind_index(name = "contact_email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
}

/// Text tenants: MariaDB's case-insensitive collation sorts them
/// `Acme, beta, Cyan`, bytes `Acme, Cyan, beta`.
const TENANTS: [&str; 3] = ["Acme", "beta", "Cyan"];
/// Keys: every tenant has each of them.
const IDS: std::ops::RangeInclusive<i64> = 1..=7;

struct Data {
    notes: Vec<Note>,
    lockers: Vec<Locker>,
    contacts: Vec<Contact>,
}

impl Data {
    fn new() -> Self {
        let orgs: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut d = Data {
            notes: Vec::new(),
            lockers: Vec::new(),
            contacts: Vec::new(),
        };
        for (i, t) in TENANTS.iter().enumerate() {
            for id in IDS {
                d.notes.push(Note {
                    id,
                    tenant_id: (*t).to_owned(),
                    // The same title and code in every tenant: the
                    // tenant-scoped index tells them apart, the global one
                    // finds them all.
                    title: format!("Title {id}"),
                    code: format!("CODE-{id}"),
                    body: (id != 5).then(|| format!("body of {t} {id}")),
                });
                d.contacts.push(Contact {
                    id,
                    tenant_id: (*t).to_owned(),
                    email: format!("User{id}@Example.com"),
                });
                d.lockers.push(Locker {
                    id,
                    org: orgs[i],
                    secret: format!("secret of {} {id}", orgs[i]),
                });
            }
        }
        d
    }

    fn rows(&self) -> usize {
        self.notes.len() + self.lockers.len() + self.contacts.len()
    }
}

/// The models' tables, the rows, and `contacts` adopted from plaintext with
/// `encrypt-column` (one row failing first, then fixed).
async fn setup<DB: Backend>(db: &Db<DB>, keyring: &str) -> Data
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Note, _>(&db.pool).await.unwrap();
    schema::create_table::<Locker, _>(&db.pool).await.unwrap();
    schema::register::<Note, _>(&db.pool).await.unwrap();
    schema::register::<Locker, _>(&db.pool).await.unwrap();
    let d = Data::new();
    let enc = common::encryptor(&db.pool, keyring);
    enc.insert_many(&db.pool, &d.notes).await.unwrap();
    enc.insert_many(&db.pool, &d.lockers).await.unwrap();

    // A plaintext table keyed by (tenant, id), adopted.
    let ddl = format!(
        "CREATE TABLE contacts (id BIGINT NOT NULL, tenant_id {} NOT NULL, email {}, PRIMARY KEY (tenant_id, id))",
        DB::column_type(SqlType::Text, true),
        DB::column_type(SqlType::Text, false)
    );
    sqlx::raw_sql(&ddl).execute(&db.pool).await.unwrap();
    let mut sql = String::from("INSERT INTO contacts (id, tenant_id, email) VALUES ");
    let mut values = Vec::new();
    for (i, c) in d.contacts.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 0..3 {
            if k > 0 {
                sql.push_str(", ");
            }
            DB::push_placeholder(&mut sql, values.len() + k + 1);
        }
        sql.push(')');
        values.extend([
            Value::I64(c.id),
            Value::Text(c.tenant_id.clone()),
            Value::Text(c.email.clone()),
        ]);
    }
    DB::execute(&db.pool, &sql, values).await.unwrap();
    schema::adopt_table::<Contact, _>(&db.pool).await.unwrap();
    schema::register::<Contact, _>(&db.pool).await.unwrap();

    // beta's row 3 has a header that opens nothing: it fails, alone (the
    // rows 3 of Acme and Cyan are encrypted).
    set_header(db, "beta", 3, Some(vec![1, 2])).await;
    let args = ["encrypt-column", "--table", "contacts", "--batch-size", "2"];
    let r = common::rowseal(&db.url, keyring, &args).await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["rows"], d.contacts.len() - 1, "{}", r.stdout);
    assert_eq!(done["failed"], 1, "{done}");
    let failures = r.all("failure");
    assert_eq!(failures.len(), 1, "{}", r.stdout);
    assert_eq!(failures[0]["tenant"], "beta", "{}", failures[0]);
    assert_eq!(failures[0]["primary_key"], "3", "{}", failures[0]);
    let plaintext = "SELECT COUNT(*) FROM contacts WHERE email IS NOT NULL";
    assert_eq!(common::scalar(db, plaintext).await, 1);
    // Fixed, then encrypted by the next run.
    set_header(db, "beta", 3, None).await;
    let r = common::rowseal(&db.url, keyring, &args).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.event("done").unwrap()["rows"], 1, "{}", r.stdout);
    assert_eq!(common::scalar(db, plaintext).await, 0);
    d
}

/// Sets the key header of `contacts` row (`tenant`, `id`).
async fn set_header<DB: Backend>(db: &Db<DB>, tenant: &str, id: i64, header: Option<Vec<u8>>)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let mut sql = String::from("UPDATE contacts SET rowseal_header = ");
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" WHERE tenant_id = ");
    DB::push_placeholder(&mut sql, 2);
    sql.push_str(" AND id = ");
    DB::push_placeholder(&mut sql, 3);
    let header = header.map_or(Value::Null(SqlType::Bytes), Value::Bytes);
    let values = vec![header, Value::Text(tenant.to_owned()), Value::I64(id)];
    assert_eq!(DB::execute(&db.pool, &sql, values).await.unwrap(), 1);
}

/// Every row reads back through the library, by (tenant, id), with its own
/// tenant's values.
async fn check_reads<DB: Backend>(db: &Db<DB>, enc: &Encryptor, d: &Data)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    for n in &d.notes {
        let got = enc.fetch::<Note, _>(&db.pool, &n.tenant_id, &n.id).await;
        assert_eq!(
            got.unwrap().as_ref(),
            Some(n),
            "note {}/{}",
            n.tenant_id,
            n.id
        );
    }
    for c in &d.contacts {
        let got = enc.fetch::<Contact, _>(&db.pool, &c.tenant_id, &c.id).await;
        assert_eq!(
            got.unwrap().as_ref(),
            Some(c),
            "contact {}/{}",
            c.tenant_id,
            c.id
        );
    }
    check_lockers(db, enc, &d.lockers).await;
}

async fn check_lockers<DB: Backend>(db: &Db<DB>, enc: &Encryptor, lockers: &[Locker])
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    for l in lockers {
        let org = l.org.hyphenated().to_string();
        let got = enc.fetch::<Locker, _>(&db.pool, &org, &l.id).await;
        assert_eq!(got.unwrap().as_ref(), Some(l), "locker {org}/{}", l.id);
    }
}

/// Every blind-index lookup finds exactly its rows: a tenant's own under a
/// tenant-scoped index, every tenant's under the global one.
async fn check_lookups<DB: Backend>(db: &Db<DB>, enc: &Encryptor, d: &Data)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let sorted = |mut v: Vec<Note>| {
        v.sort_by(|a, b| (&a.tenant_id, a.id).cmp(&(&b.tenant_id, b.id)));
        v
    };
    for n in &d.notes {
        let found = Note::find_by_note_title(
            enc,
            &db.pool,
            &n.tenant_id,
            &format!(" {} ", n.title.to_uppercase()),
        )
        .await
        .unwrap();
        assert_eq!(
            found,
            vec![n.clone()],
            "note {}/{} by title",
            n.tenant_id,
            n.id
        );
    }
    for id in IDS {
        let found = Note::find_by_note_code(enc, &db.pool, &format!("code-{id}"))
            .await
            .unwrap();
        let expected: Vec<Note> = d.notes.iter().filter(|n| n.id == id).cloned().collect();
        assert_eq!(sorted(found), sorted(expected), "notes {id} by code");
    }
    for c in &d.contacts {
        let found = Contact::find_by_contact_email(enc, &db.pool, &c.tenant_id, &c.email)
            .await
            .unwrap();
        assert_eq!(found, vec![c.clone()], "contact {}/{}", c.tenant_id, c.id);
    }
}

/// Rows of `table` of `tenant` on tenant-key version `v`.
async fn on_version<DB: Backend>(db: &Db<DB>, table: &str, tenant: &str, v: i64) -> i64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    common::scalar(
        db,
        &format!(
            "SELECT COUNT(*) FROM {table} WHERE tenant_id = '{tenant}' AND rowseal_key_version = {v}"
        ),
    )
    .await
}

/// The key header of every kms-mode row.
async fn locker_headers<DB: Backend>(db: &Db<DB>) -> Vec<Vec<u8>>
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    DB::fetch_all(&db.pool, "SELECT rowseal_header FROM lockers", vec![])
        .await
        .unwrap()
        .iter()
        .map(|r| r.read_bytes(0).unwrap().to_vec())
        .collect()
}

/// Whether every row of `after` has a header none of `before` had: every
/// kms-mode row got a new data key.
fn all_new(before: &[Vec<u8>], after: &[Vec<u8>]) -> bool {
    let old: HashSet<&Vec<u8>> = before.iter().collect();
    after.len() == before.len() && after.iter().all(|h| !old.contains(h))
}

async fn commands<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let d = setup(&db, &keyring).await;
    let url = db.url.clone();
    check_reads(&db, &common::encryptor(&db.pool, &keyring), &d).await;
    check_lookups(&db, &common::encryptor(&db.pool, &keyring), &d).await;

    // rotate: every row of every tenant, one row per batch (derived mode)
    // and one per kms-mode batch.
    let before = locker_headers(&db).await;
    let r = common::rowseal(
        &url,
        &keyring,
        &["rotate", "--all-tenants", "--batch-size", "1"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["reencrypted"], d.rows(), "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    for t in TENANTS {
        for table in ["notes", "contacts"] {
            let n = on_version(&db, table, t, 2).await;
            assert_eq!(n, 7, "{table}: rows of {t} on version 2");
        }
    }
    assert!(
        all_new(&before, &locker_headers(&db).await),
        "every kms-mode row has a new data key"
    );
    check_reads(&db, &common::encryptor(&db.pool, &keyring), &d).await;

    // verify: every row, two per page.
    let v = common::rowseal(&url, &keyring, &["verify", "--batch-size", "2"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    let done = v.event("done").unwrap();
    assert_eq!(done["rows"], d.rows(), "{done}");
    assert_eq!(done["failures"], 0, "{done}");

    // reindex: three tenant scopes and the global one, every row's values
    // recomputed under version 2 (the alternate slot) and the old cleared.
    let r = common::rowseal(
        &url,
        &keyring,
        &["reindex", "--cache-ttl", "0", "--batch-size", "1"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(done["promoted"].as_array().unwrap().len(), 4, "{done}");
    assert_eq!(
        done["rows_indexed"],
        d.notes.len() + d.contacts.len(),
        "{done}"
    );
    assert_eq!(
        done["retired_values_cleared"],
        2 * d.notes.len() + d.contacts.len(),
        "{done}"
    );
    for (t, idx) in [
        ("notes", "note_title_idx"),
        ("notes", "note_code_idx"),
        ("contacts", "contact_email_idx"),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {t} WHERE {idx}_alt_kv IS NULL OR {idx}_alt_kv <> 2 OR {idx}_kv IS NOT NULL");
        assert_eq!(common::scalar(&db, &sql).await, 0, "{t}.{idx}");
    }
    check_lookups(&db, &common::encryptor(&db.pool, &keyring), &d).await;

    // rewrap: every kms-mode row's data key under another root key.
    let v2 = LocalKeyProvider::generate_keyring().replace("v1:", "v2:");
    let both = format!("{keyring}\n{v2}");
    let r = common::rowseal(
        &url,
        &both,
        &["rewrap", "--to", "local:v2", "--batch-size", "1"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["rows_rewrapped"], d.lockers.len(), "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    check_reads(&db, &common::encryptor(&db.pool, &both), &d).await;

    // decrypt-column: every value back, each into its own row.
    sqlx::raw_sql("ALTER TABLE notes ADD COLUMN body_plain TEXT")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = common::rowseal(
        &url,
        &both,
        &[
            "decrypt-column",
            "--table",
            "notes",
            "--column",
            "body",
            "--into",
            "body_plain",
            "--batch-size",
            "1",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let with_body = d.notes.iter().filter(|n| n.body.is_some()).count();
    assert_eq!(
        r.event("done").unwrap()["decrypted"],
        with_body,
        "{}",
        r.stdout
    );
    let rows = DB::fetch_all(
        &db.pool,
        "SELECT tenant_id, id, body_plain FROM notes",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), d.notes.len());
    for row in &rows {
        let Value::Text(t) = row.read_value(0, SqlType::Text).unwrap() else {
            panic!("tenant");
        };
        let Value::I64(id) = row.read_value(1, SqlType::I64).unwrap() else {
            panic!("id");
        };
        let n = d
            .notes
            .iter()
            .find(|n| n.tenant_id == t && n.id == id)
            .unwrap();
        let plain = match row.read_value(2, SqlType::Text).unwrap() {
            Value::Text(s) => Some(s),
            _ => None,
        };
        assert_eq!(plain, n.body, "note {t}/{id}");
    }

    let v = common::rowseal(&url, &both, &["verify", "--batch-size", "1"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    assert_eq!(v.event("done").unwrap()["rows"], d.rows());
    db.finish().await;
}

/// The running rotate job's id and checkpoint.
async fn running_job<DB: Backend>(db: &Db<DB>) -> (String, serde_json::Value)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let rows = DB::fetch_all(
        &db.pool,
        "SELECT id, checkpoint FROM rowseal_jobs WHERE kind = 'rotate' AND state = 'running'",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "one running rotate job");
    let text = |i| match rows[0].read_value(i, SqlType::Text).unwrap() {
        Value::Text(s) => s,
        _ => String::new(),
    };
    let checkpoint = serde_json::from_str(&text(1)).unwrap_or(serde_json::Value::Null);
    (text(0), checkpoint)
}

async fn set_checkpoint<DB: Backend>(db: &Db<DB>, job: &str, checkpoint: &serde_json::Value)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let mut sql = String::from("UPDATE rowseal_jobs SET checkpoint = ");
    DB::push_placeholder(&mut sql, 1);
    sql.push_str(" WHERE id = ");
    DB::push_placeholder(&mut sql, 2);
    let values = vec![
        Value::Text(checkpoint.to_string()),
        Value::Text(job.to_owned()),
    ];
    assert_eq!(DB::execute(&db.pool, &sql, values).await.unwrap(), 1);
}

/// A kms-mode rotation killed midway resumes from its (tenant, key) cursor:
/// every row gets a new data key, each once.
async fn kms_resume<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    schema::install(&db.pool).await.unwrap();
    schema::create_table::<Locker, _>(&db.pool).await.unwrap();
    schema::register::<Locker, _>(&db.pool).await.unwrap();
    let orgs: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let lockers: Vec<Locker> = orgs
        .iter()
        .flat_map(|org| {
            IDS.map(move |id| Locker {
                id,
                org: *org,
                secret: format!("secret of {org} {id}"),
            })
        })
        .collect();
    let n = lockers.len();
    let enc = common::encryptor(&db.pool, &keyring);
    enc.insert_many(&db.pool, &lockers).await.unwrap();
    let before = locker_headers(&db).await;

    // Paced to 5 rows a second, one row per batch: killed after 3 rows.
    let args = [
        "rotate",
        "--all-tenants",
        "--table",
        "lockers",
        "--batch-size",
        "1",
        "--max-rows-per-second",
        "5",
    ];
    let progressed = "SELECT COUNT(*) FROM rowseal_jobs WHERE kind = 'rotate' AND state = 'running' AND rows_done >= 3";
    let mut child = common::command(&db.url, &keyring, &args).spawn().unwrap();
    let mut seen = false;
    for _ in 0..2000 {
        if common::scalar(&db, progressed).await > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen, "the rotation made no progress");
    assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    // The cursor names the tenant and the key of the last row done.
    let (job, checkpoint) = running_job(&db).await;
    let cursor = checkpoint["kms"]["lockers"].clone();
    assert_eq!(cursor["done"], false, "{checkpoint}");
    assert!(cursor["after"].is_i64(), "{checkpoint}");
    let tenant = cursor["after_tenant"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        orgs.iter().any(|o| o.hyphenated().to_string() == tenant),
        "{checkpoint}"
    );
    let rotated = after_kill(&before, &locker_headers(&db).await);
    assert!(rotated >= 3 && rotated < n, "{rotated} rows rotated");

    // Without its tenant, the cursor is refused, not resumed from the key.
    let mut keyless = checkpoint.clone();
    keyless["kms"]["lockers"]
        .as_object_mut()
        .unwrap()
        .remove("after_tenant");
    set_checkpoint(&db, &job, &keyless).await;
    let r = common::rowseal(&db.url, &keyring, &args).await;
    assert_eq!(r.code, Some(6), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("after_tenant"), "{}", r.stderr);
    assert_eq!(after_kill(&before, &locker_headers(&db).await), rotated);

    // With it, the job resumes after that row: every row once.
    set_checkpoint(&db, &job, &checkpoint).await;
    let fin = common::rowseal(&db.url, &keyring, &args).await;
    assert_eq!(fin.code, Some(0), "{}\n{}", fin.stdout, fin.stderr);
    assert!(fin.event("resume").is_some(), "{}", fin.stdout);
    let done = fin.event("done").unwrap();
    assert_eq!(done["job"], job.as_str(), "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(done["reencrypted"], n - rotated, "{done}");
    assert_eq!(done["job_rows_done"], n, "each row once: {done}");
    assert!(all_new(&before, &locker_headers(&db).await));
    check_lockers(&db, &common::encryptor(&db.pool, &keyring), &lockers).await;

    let v = common::rowseal(&db.url, &keyring, &["verify", "--batch-size", "1"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    assert_eq!(v.event("done").unwrap()["rows"], n);
    db.finish().await;
}

/// Rows whose header is not among `before` (rotated so far).
fn after_kill(before: &[Vec<u8>], now: &[Vec<u8>]) -> usize {
    let old: HashSet<&Vec<u8>> = before.iter().collect();
    now.iter().filter(|h| !old.contains(h)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_commands_sqlite() {
    if let Some(db) = common::sqlite().await {
        commands(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_commands_postgres() {
    if let Some(db) = common::postgres().await {
        commands(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_commands_mariadb() {
    if let Some(db) = common::mysql().await {
        commands(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_kms_resume_sqlite() {
    if let Some(db) = common::sqlite().await {
        kms_resume(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_kms_resume_postgres() {
    if let Some(db) = common::postgres().await {
        kms_resume(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_kms_resume_mariadb() {
    if let Some(db) = common::mysql().await {
        kms_resume(db).await;
    }
}
