#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The tool on tables whose tenant column is not text, on SQLite, PostgreSQL
//! and MariaDB: a UUID tenant (derived mode with a tenant-scoped and a
//! global blind index, kms mode, and a table adopted from plaintext), a
//! BIGINT tenant with a blind index and an INTEGER tenant. Every tenant is
//! named by its canonical id (a UUID lowercase and hyphenated, an integer in
//! decimal), the one its keys are stored under; the integer tables share
//! tenant `42`.
//!
//! - `init`, `encrypt-column`, `status`, `rotate` (all tenants, one UUID
//!   tenant, one integer tenant), `verify`, `reindex` (all scopes, one
//!   tenant) and `decrypt-column`: rows move to the new key versions and
//!   still read, and blind-index lookups still find them, through the
//!   library.
//! - `shred` of one UUID tenant: its keys are destroyed, its kms-mode data
//!   keys and global index values wiped, its rows unreadable, every other
//!   tenant's rows intact; `verify`, `rotate`, `rewrap` and `reindex` then
//!   leave it out.
//! - A tenant id that no table can hold and that has no keys (an uppercase
//!   UUID, `042`, text where every tenant is a UUID or an integer) is a usage
//!   error (exit 2) for `shred`, `rotate` and `reindex`, with the canonical
//!   form when there is one; nothing is destroyed or created.

mod common;

use common::Db;
use rowseal_core::LocalKeyProvider;
use rowseal_sqlx::{schema, Backend, DbRow, Encrypted, Encryptor, SqlType, Value};
use uuid::Uuid;

/// A UUID tenant, derived mode: a tenant-scoped and a global blind index.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(
    table = "accounts",
    record_type = "account",
    tenant = org,
    primary_key = id,
    bind_primary_key
)]
struct Account {
    id: i64,
    org: Uuid,
    #[rowseal(
        encrypt,
        blind_index(name = "acct_email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
    #[rowseal(
        encrypt,
        blind_index(
            name = "acct_phone_idx",
            bits = 48,
            normalize = "digits",
            scope = "global"
        )
    )]
    phone: Option<String>,
}

/// A BIGINT tenant, derived mode, one blind index.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "ledgers", record_type = "ledger", tenant = org, primary_key = id)]
struct Ledger {
    id: i64,
    org: i64,
    #[rowseal(
        encrypt,
        blind_index(name = "ledger_ref_idx", bits = 32, normalize = "trim,lowercase")
    )]
    reference: String,
    #[rowseal(encrypt)]
    memo: Option<String>,
}

/// A UUID tenant, kms mode (one provider data key per row).
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "vaults", record_type = "vault", tenant = org, primary_key = id, key_mode = "kms")]
struct Vault {
    id: i64,
    org: Uuid,
    #[rowseal(encrypt)]
    secret: String,
}

/// An INTEGER tenant, derived mode.
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "badges", record_type = "badge", tenant = org, primary_key = id)]
struct Badge {
    id: i64,
    org: i32,
    #[rowseal(encrypt)]
    label: String,
}

/// A UUID tenant in a table adopted from plaintext (`encrypt-column`).
#[derive(Encrypted, Debug, Clone, PartialEq)]
#[rowseal(table = "members", record_type = "member", tenant = org, primary_key = id)]
struct Member {
    id: i64,
    org: Uuid,
    #[rowseal(
        encrypt,
        column = "email_ct",
        plaintext_column = "email",
        blind_index(name = "member_email_idx", bits = 32, normalize = "trim,lowercase")
    )]
    email: String,
}

const LEDGER_ORGS: [i64; 3] = [42, -7, 9_000_000_000];
const BADGE_ORGS: [i32; 2] = [42, 5];

/// The rows of a test. UUID tenants: `orgs[0]` owns the even ids, `orgs[1]`
/// the odd ones.
struct Data {
    orgs: [Uuid; 2],
    accounts: Vec<Account>,
    ledgers: Vec<Ledger>,
    vaults: Vec<Vault>,
    badges: Vec<Badge>,
    members: Vec<Member>,
}

impl Data {
    fn new() -> Self {
        let orgs = [Uuid::new_v4(), Uuid::new_v4()];
        let org = |id: i64| orgs[(id % 2) as usize];
        Data {
            orgs,
            accounts: (1..=30)
                .map(|id| Account {
                    id,
                    org: org(id),
                    email: format!("User{id}@Example.com"),
                    phone: Some(format!("+1 (555) {id:07}")),
                })
                .collect(),
            ledgers: (1..=30)
                .map(|id| Ledger {
                    id,
                    org: LEDGER_ORGS[(id % 3) as usize],
                    reference: format!("REF-{id}"),
                    memo: (id % 4 != 0).then(|| format!("memo {id}")),
                })
                .collect(),
            vaults: (1..=10)
                .map(|id| Vault {
                    id,
                    org: org(id),
                    secret: format!("secret {id}"),
                })
                .collect(),
            badges: (1..=10)
                .map(|id| Badge {
                    id,
                    org: BADGE_ORGS[(id % 2) as usize],
                    label: format!("badge {id}"),
                })
                .collect(),
            members: (1..=12)
                .map(|id| Member {
                    id,
                    org: org(id),
                    email: format!("Member{id}@Example.com"),
                })
                .collect(),
        }
    }

    /// Derived-mode rows (every registered table but `vaults`).
    fn derived_rows(&self) -> usize {
        self.accounts.len() + self.ledgers.len() + self.badges.len() + self.members.len()
    }

    fn rows(&self) -> usize {
        self.derived_rows() + self.vaults.len()
    }
}

fn id_of(org: &Uuid) -> String {
    org.to_string()
}

/// `rowseal init`, the tables, the registry and the rows (written by the
/// application), then the plaintext table adopted and encrypted by
/// `encrypt-column` (its UPDATE binds the UUID tenant).
async fn setup<DB: Backend>(db: &Db<DB>, keyring: &str) -> Data
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let r = common::rowseal(&db.url, keyring, &["init"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    schema::create_table::<Account, _>(&db.pool).await.unwrap();
    schema::create_table::<Ledger, _>(&db.pool).await.unwrap();
    schema::create_table::<Vault, _>(&db.pool).await.unwrap();
    schema::create_table::<Badge, _>(&db.pool).await.unwrap();
    schema::register::<Account, _>(&db.pool).await.unwrap();
    schema::register::<Ledger, _>(&db.pool).await.unwrap();
    schema::register::<Vault, _>(&db.pool).await.unwrap();
    schema::register::<Badge, _>(&db.pool).await.unwrap();
    let d = Data::new();
    let enc = common::encryptor(&db.pool, keyring);
    enc.insert_many(&db.pool, &d.accounts).await.unwrap();
    enc.insert_many(&db.pool, &d.ledgers).await.unwrap();
    enc.insert_many(&db.pool, &d.vaults).await.unwrap();
    enc.insert_many(&db.pool, &d.badges).await.unwrap();

    // A plaintext table whose tenant column is a UUID, adopted.
    let ddl = format!(
        "CREATE TABLE members (id BIGINT PRIMARY KEY, org {} NOT NULL, email {})",
        DB::column_type(SqlType::Uuid, true),
        DB::column_type(SqlType::Text, false)
    );
    sqlx::raw_sql(&ddl).execute(&db.pool).await.unwrap();
    let mut sql = String::from("INSERT INTO members (id, org, email) VALUES ");
    let mut values = Vec::new();
    for (i, m) in d.members.iter().enumerate() {
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
            Value::I64(m.id),
            Value::Uuid(m.org),
            Value::Text(m.email.clone()),
        ]);
    }
    DB::execute(&db.pool, &sql, values).await.unwrap();
    schema::adopt_table::<Member, _>(&db.pool).await.unwrap();
    schema::register::<Member, _>(&db.pool).await.unwrap();
    let r = common::rowseal(&db.url, keyring, &["encrypt-column", "--table", "members"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.event("done").unwrap()["rows"],
        d.members.len(),
        "{}",
        r.stdout
    );
    assert_eq!(
        common::scalar(db, "SELECT COUNT(*) FROM members WHERE email IS NOT NULL").await,
        0
    );
    d
}

/// Every row of `d` reads back through the library under its tenant's
/// canonical id (`skip`: a shredded tenant, whose rows must fail instead).
async fn check_reads<DB: Backend>(db: &Db<DB>, enc: &Encryptor, d: &Data, shredded: Option<&Uuid>)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let gone = |org: &Uuid| shredded == Some(org);
    for a in &d.accounts {
        let got = enc
            .fetch::<Account, _>(&db.pool, &id_of(&a.org), &a.id)
            .await;
        if gone(&a.org) {
            assert!(got.is_err(), "shredded account {} still reads", a.id);
        } else {
            assert_eq!(got.unwrap().as_ref(), Some(a), "account {}", a.id);
        }
    }
    for v in &d.vaults {
        let got = enc.fetch::<Vault, _>(&db.pool, &id_of(&v.org), &v.id).await;
        if gone(&v.org) {
            assert!(got.is_err(), "shredded vault {} still reads", v.id);
        } else {
            assert_eq!(got.unwrap().as_ref(), Some(v), "vault {}", v.id);
        }
    }
    for m in &d.members {
        let got = enc
            .fetch::<Member, _>(&db.pool, &id_of(&m.org), &m.id)
            .await;
        if gone(&m.org) {
            assert!(got.is_err(), "shredded member {} still reads", m.id);
        } else {
            assert_eq!(got.unwrap().as_ref(), Some(m), "member {}", m.id);
        }
    }
    for l in &d.ledgers {
        let got = enc
            .fetch::<Ledger, _>(&db.pool, &l.org.to_string(), &l.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(l), "ledger {}", l.id);
    }
    for b in &d.badges {
        let got = enc
            .fetch::<Badge, _>(&db.pool, &b.org.to_string(), &b.id)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(b), "badge {}", b.id);
    }
}

/// Every blind-index lookup finds its row (but a shredded tenant's).
async fn check_lookups<DB: Backend>(db: &Db<DB>, enc: &Encryptor, d: &Data, shredded: Option<&Uuid>)
where
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    for a in &d.accounts {
        if shredded == Some(&a.org) {
            // Its global index values were cleared: the global key still
            // lives, and would otherwise still match them.
            let phone = a.phone.as_deref().unwrap();
            let found = Account::find_by_acct_phone(enc, &db.pool, phone)
                .await
                .unwrap();
            assert!(found.is_empty(), "shredded account {} found", a.id);
            continue;
        }
        let org = id_of(&a.org);
        let found = Account::find_by_acct_email(
            enc,
            &db.pool,
            &org,
            &format!(" {} ", a.email.to_uppercase()),
        )
        .await
        .unwrap();
        assert_eq!(found, vec![a.clone()], "account {} by email", a.id);
        let found = Account::find_by_acct_phone(enc, &db.pool, a.phone.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(found, vec![a.clone()], "account {} by phone", a.id);
    }
    for m in d.members.iter().filter(|m| shredded != Some(&m.org)) {
        let found = Member::find_by_member_email(enc, &db.pool, &id_of(&m.org), &m.email)
            .await
            .unwrap();
        assert_eq!(found, vec![m.clone()], "member {}", m.id);
    }
    for l in &d.ledgers {
        let found = Ledger::find_by_ledger_ref(
            enc,
            &db.pool,
            &l.org.to_string(),
            &l.reference.to_lowercase(),
        )
        .await
        .unwrap();
        assert_eq!(found, vec![l.clone()], "ledger {}", l.id);
    }
}

/// The `table` event of `status` for `table`.
fn table_status<'a>(r: &'a common::Run, table: &str) -> &'a serde_json::Value {
    r.all("table")
        .into_iter()
        .find(|e| e["table"] == table)
        .unwrap_or_else(|| panic!("no status of {table}: {}", r.stdout))
}

/// Rows of `table` on tenant-key version `v`.
async fn on_version<DB: Backend>(db: &Db<DB>, table: &str, v: i64) -> i64
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    common::scalar(
        db,
        &format!("SELECT COUNT(*) FROM {table} WHERE rowseal_key_version = {v}"),
    )
    .await
}

/// A tenant id refused as a usage error, with `hint` in the message.
fn assert_refused(r: &common::Run, hint: &str) {
    assert_eq!(r.code, Some(2), "{}\n{}", r.stdout, r.stderr);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("is not the id of any tenant"), "{all}");
    assert!(all.contains(hint), "no {hint:?} in {all}");
}

async fn rotate_verify_reindex<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let d = setup(&db, &keyring).await;
    let url = db.url.clone();
    let [o1, o2] = d.orgs.map(|o| id_of(&o));

    // status: rows per tenant, by canonical id, whatever the column type.
    let s = common::rowseal(&url, &keyring, &["status"]).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let accounts = table_status(&s, "accounts");
    for o in [&o1, &o2] {
        assert_eq!(accounts["tenants"][o]["rows"], 15, "{accounts}");
        assert_eq!(accounts["tenants"][o]["current_version"], 1, "{accounts}");
    }
    let ledgers = table_status(&s, "ledgers");
    for o in ["42", "-7", "9000000000"] {
        assert_eq!(ledgers["tenants"][o]["rows"], 10, "{ledgers}");
    }
    let badges = table_status(&s, "badges");
    assert_eq!(badges["tenants"]["42"]["rows"], 5, "{badges}");
    assert_eq!(badges["tenants"]["5"]["rows"], 5, "{badges}");

    // Every tenant: each table re-encrypts the tenants its column can hold
    // (a UUID tenant has no row in an integer table, and the other way).
    let r = common::rowseal(&url, &keyring, &["rotate", "--all-tenants"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["reencrypted"], d.rows(), "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    for t in ["accounts", "ledgers", "badges", "members"] {
        let n = common::scalar(
            &db,
            &format!("SELECT COUNT(*) FROM {t} WHERE rowseal_key_version <> 2"),
        )
        .await;
        assert_eq!(n, 0, "{t}: rows not on version 2");
    }
    check_reads(&db, &common::encryptor(&db.pool, &keyring), &d, None).await;

    // One UUID tenant, then one integer tenant (shared by two tables).
    let r = common::rowseal(&url, &keyring, &["rotate", "--tenant", &o1]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(on_version(&db, "accounts", 3).await, 15);
    assert_eq!(on_version(&db, "members", 3).await, 6);
    assert_eq!(on_version(&db, "ledgers", 3).await, 0);
    let r = common::rowseal(&url, &keyring, &["rotate", "--tenant", "42"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(on_version(&db, "ledgers", 3).await, 10);
    assert_eq!(on_version(&db, "badges", 3).await, 5);
    assert_eq!(on_version(&db, "accounts", 3).await, 15);
    // Ids no table can hold and without keys: nothing rotated or created.
    let keys_before = common::scalar(&db, "SELECT COUNT(*) FROM rowseal_keys").await;
    let upper = o1.to_uppercase();
    for (bad, hint) in [
        (upper.as_str(), o1.as_str()),
        ("NOT-A-UUID", "uuid"),
        ("042", "did you mean 42?"),
    ] {
        let r = common::rowseal(&url, &keyring, &["rotate", "--tenant", bad]).await;
        assert_refused(&r, hint);
    }
    assert_eq!(
        common::scalar(&db, "SELECT COUNT(*) FROM rowseal_keys").await,
        keys_before
    );
    check_reads(&db, &common::encryptor(&db.pool, &keyring), &d, None).await;

    let v = common::rowseal(&url, &keyring, &["verify"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);
    let done = v.event("done").unwrap();
    assert_eq!(done["rows"], d.rows(), "{done}");
    assert_eq!(done["failures"], 0, "{done}");
    assert!(done["indexes_not_checked"].as_array().unwrap().is_empty());

    // Index keys: every tenant scope with indexed rows (two UUIDs, three
    // integers) and the global one, rotated and rebuilt.
    let r = common::rowseal(&url, &keyring, &["reindex", "--cache-ttl", "0"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["promoted"].as_array().unwrap().len(), 6, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    for (t, idx) in [
        ("accounts", "acct_email_idx"),
        ("accounts", "acct_phone_idx"),
        ("ledgers", "ledger_ref_idx"),
        ("members", "member_email_idx"),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {t} WHERE {idx}_alt_kv IS NULL OR {idx}_alt_kv <> 2 OR {idx}_kv IS NOT NULL");
        assert_eq!(common::scalar(&db, &sql).await, 0, "{t}.{idx}");
    }
    check_lookups(&db, &common::encryptor(&db.pool, &keyring), &d, None).await;
    // One UUID tenant's index key.
    let r = common::rowseal(
        &url,
        &keyring,
        &["reindex", "--tenant", &o2, "--cache-ttl", "0"],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["promoted"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM accounts WHERE acct_email_idx_kv = 3"
        )
        .await,
        15
    );
    assert_eq!(
        common::scalar(
            &db,
            "SELECT COUNT(*) FROM members WHERE member_email_idx_kv = 3"
        )
        .await,
        6
    );
    check_lookups(&db, &common::encryptor(&db.pool, &keyring), &d, None).await;
    let r = common::rowseal(&url, &keyring, &["reindex", "--tenant", "NOT-A-UUID"]).await;
    assert_refused(&r, "i64");

    let v = common::rowseal(&url, &keyring, &["verify"]).await;
    assert_eq!(v.code, Some(0), "{}\n{}", v.stdout, v.stderr);

    // The way back to plaintext, on a UUID-tenant table.
    sqlx::raw_sql("ALTER TABLE accounts ADD COLUMN email_plain TEXT")
        .execute(&db.pool)
        .await
        .unwrap();
    let r = common::rowseal(
        &url,
        &keyring,
        &[
            "decrypt-column",
            "--table",
            "accounts",
            "--column",
            "email",
            "--into",
            "email_plain",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.event("done").unwrap()["decrypted"], 30);
    let rows = DB::fetch_all(&db.pool, "SELECT id, email_plain FROM accounts", vec![])
        .await
        .unwrap();
    assert_eq!(rows.len(), 30);
    for row in &rows {
        let Value::I64(id) = row.read_value(0, SqlType::I64).unwrap() else {
            panic!("id");
        };
        let a = &d.accounts[usize::try_from(id - 1).unwrap()];
        assert_eq!(
            row.read_value(1, SqlType::Text).unwrap(),
            Value::Text(a.email.clone())
        );
    }

    // status: nothing left to rotate; versions per tenant.
    let s = common::rowseal(&url, &keyring, &["status"]).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let accounts = table_status(&s, "accounts");
    assert_eq!(accounts["rows_to_rotate"], 0, "{accounts}");
    assert_eq!(accounts["tenants"][&o1]["current_version"], 3, "{accounts}");
    assert_eq!(accounts["tenants"][&o2]["current_version"], 2, "{accounts}");
    for c in accounts["blind_index_coverage"].as_array().unwrap() {
        assert_eq!(c["rows_behind_current_index_key"], 0, "{accounts}");
    }
    assert_eq!(
        table_status(&s, "ledgers")["tenants"]["42"]["current_version"],
        3
    );
    db.finish().await;
}

async fn shred_one_uuid_tenant<DB: Backend>(db: Db<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let keyring = LocalKeyProvider::generate_keyring().to_string();
    let d = setup(&db, &keyring).await;
    let url = db.url.clone();
    let [o1, o2] = d.orgs.map(|o| id_of(&o));
    let destroyed = "SELECT COUNT(*) FROM rowseal_keys WHERE state = 'destroyed'";

    // Ids no table can hold and without keys are refused before anything
    // is destroyed.
    let upper = o1.to_uppercase();
    let braced = format!("{{{o1}}}");
    for (bad, hint) in [
        (upper.as_str(), o1.as_str()),
        (braced.as_str(), o1.as_str()),
        ("NOT-A-UUID", "accounts.org (uuid)"),
        ("042", "did you mean 42?"),
    ] {
        let r = common::rowseal(
            &url,
            &keyring,
            &["shred", "--tenant", bad, "--yes-destroy-tenant", bad],
        )
        .await;
        assert_refused(&r, hint);
    }
    assert_eq!(common::scalar(&db, destroyed).await, 0);

    // The plan counts the tenant's keys (its tenant key and its index key).
    let r = common::rowseal(&url, &keyring, &["shred", "--tenant", &o1, "--dry-run"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.event("plan").unwrap()["keys"], 2, "{}", r.stdout);

    let r = common::rowseal(
        &url,
        &keyring,
        &["shred", "--tenant", &o1, "--yes-destroy-tenant", &o1],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["keys_destroyed"], 2, "{done}");
    // The even ids: 5 kms-mode rows, 15 accounts with a global index value.
    assert_eq!(done["kms_rows_wiped"], 5, "{done}");
    assert_eq!(done["global_index_rows_cleared"], 15, "{done}");
    assert_eq!(common::scalar(&db, destroyed).await, 2);

    // Its rows are unreadable (a fresh process: no cached key), every other
    // tenant's read and are found as before.
    let fresh = common::encryptor(&db.pool, &keyring);
    check_reads(&db, &fresh, &d, Some(&d.orgs[0])).await;
    check_lookups(&db, &fresh, &d, Some(&d.orgs[0])).await;

    // verify reports the shredded tenant's rows, and only those.
    let v = common::rowseal(&url, &keyring, &["verify"]).await;
    assert_eq!(v.code, Some(1), "{}\n{}", v.stdout, v.stderr);
    let failures = v.all("failure");
    assert!(failures.len() >= 15 + 5 + 6, "{}", v.stdout);
    for f in &failures {
        assert_eq!(f["tenant"], o1.as_str(), "{f}");
    }
    let s = common::rowseal(&url, &keyring, &["status"]).await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    let accounts = table_status(&s, "accounts");
    assert_eq!(accounts["tenants"][&o1]["shredded"], true, "{accounts}");
    assert_eq!(accounts["tenants"][&o2]["shredded"], false, "{accounts}");

    // rotate leaves it out (its kms-mode rows too: `NOT IN` binds UUIDs).
    let r = common::rowseal(&url, &keyring, &["rotate", "--tenant", &o1]).await;
    assert_eq!(r.code, Some(6), "{}\n{}", r.stdout, r.stderr);
    let r = common::rowseal(&url, &keyring, &["rotate", "--all-tenants"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["failed"], 0, "{done}");
    // 15 accounts, 6 members, 5 vaults of the other UUID tenant; every
    // integer-tenant row.
    assert_eq!(done["reencrypted"], 15 + 6 + 5 + 30 + 10, "{done}");
    assert_eq!(on_version(&db, "accounts", 2).await, 15);
    assert_eq!(on_version(&db, "accounts", 1).await, 15);

    // rewrap skips its wiped kms-mode rows and moves the others.
    let v2 = LocalKeyProvider::generate_keyring().replace("v1:", "v2:");
    let both = format!("{keyring}\n{v2}");
    let r = common::rowseal(&url, &both, &["rewrap", "--to", "local:v2"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["shredded_rows_skipped"], 5, "{done}");
    assert_eq!(done["rows_rewrapped"], 5, "{done}");
    assert_eq!(done["failed"], 0, "{done}");

    // reindex rotates the remaining scopes (one UUID tenant, three integer
    // tenants, global) and the lookups still find the other tenants' rows.
    let r = common::rowseal(&url, &both, &["reindex", "--cache-ttl", "0"]).await;
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let done = r.event("done").unwrap();
    assert_eq!(done["promoted"].as_array().unwrap().len(), 5, "{done}");
    let fresh = common::encryptor(&db.pool, &both);
    check_reads(&db, &fresh, &d, Some(&d.orgs[0])).await;
    check_lookups(&db, &fresh, &d, Some(&d.orgs[0])).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tenants_rotate_verify_reindex_sqlite() {
    if let Some(db) = common::sqlite().await {
        rotate_verify_reindex(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tenants_rotate_verify_reindex_postgres() {
    if let Some(db) = common::postgres().await {
        rotate_verify_reindex(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tenants_rotate_verify_reindex_mariadb() {
    if let Some(db) = common::mysql().await {
        rotate_verify_reindex(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tenants_shred_sqlite() {
    if let Some(db) = common::sqlite().await {
        shred_one_uuid_tenant(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tenants_shred_postgres() {
    if let Some(db) = common::postgres().await {
        shred_one_uuid_tenant(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_tenants_shred_mariadb() {
    if let Some(db) = common::mysql().await {
        shred_one_uuid_tenant(db).await;
    }
}
