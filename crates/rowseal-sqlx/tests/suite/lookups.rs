//! Bounded lookups on every database: a limit that counts true matches
//! (candidates read in pages until enough survive the false-positive
//! check), an order over plain columns, conditions of your own, many
//! primary keys at once, exact counts and existence, and the blind-index
//! condition for a hand-written query.

use rowseal_sqlx::{
    schema, Backend, BlindIndexValue, DbRow, Encryptor, Error, Lookup, Order, SqlType, Value,
};

use super::models::{Audited, Member};
use super::Ctx;

fn ph<DB: Backend>(n: usize) -> String {
    let mut s = String::new();
    DB::push_placeholder(&mut s, n);
    s
}

fn ident<DB: Backend>(name: &str) -> String {
    let mut s = String::new();
    DB::push_ident(&mut s, name);
    s
}

/// Ids in the order returned.
fn ids(rows: &[Member]) -> Vec<i64> {
    rows.iter().map(|m| m.id).collect()
}

/// The lookups' futures are `Send` (they run in web handlers and spawned
/// tasks).
fn send<F: std::future::Future + Send>(f: F) -> F {
    f
}

fn invalid<T: std::fmt::Debug>(r: rowseal_sqlx::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidInput { .. }))
}

/// The `team_idx` value of `team` in `tenant` (creates the tenant's index
/// key on first use).
async fn bucket(cx: &Ctx<impl Backend>, tenant: &str, team: &str) -> i64 {
    match cx
        .enc
        .blind_index_value::<Member>("team_idx", tenant, &[team])
        .await
        .unwrap()
    {
        BlindIndexValue::Int(i) => i,
        other => panic!("a 2-bit index is an integer: {other:?}"),
    }
}

/// Two teams of `tenant` whose index values collide: rows of the second are
/// false positives of a lookup of the first.
async fn colliding_teams<DB: Backend>(cx: &Ctx<DB>, tenant: &str) -> (String, String) {
    let mut seen: Vec<(i64, String)> = Vec::new();
    for i in 0..64 {
        let team = format!("team-{i}");
        let b = bucket(cx, tenant, &team).await;
        if let Some((_, other)) = seen.iter().find(|(v, _)| *v == b) {
            return (team, other.clone());
        }
        seen.push((b, team));
    }
    panic!("64 teams in 4 buckets must collide");
}

/// A team name with no rows whose index value is `team`'s.
async fn ghost_of<DB: Backend>(cx: &Ctx<DB>, tenant: &str, team: &str) -> String {
    let target = bucket(cx, tenant, team).await;
    for i in 0..256 {
        let ghost = format!("ghost-{i}");
        if bucket(cx, tenant, &ghost).await == target {
            return ghost;
        }
    }
    panic!("256 names in 4 buckets must reach each");
}

/// Ids of the rows of `tenant` with index value `value`, in `order_by`
/// order: the candidates the database holds.
async fn candidates<DB: Backend>(cx: &Ctx<DB>, tenant: &str, value: i64, order_by: &str) -> Vec<i64>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let sql = format!(
        "SELECT id FROM members WHERE tenant_id = {} AND team_idx = {} ORDER BY {order_by}",
        ph::<DB>(1),
        ph::<DB>(2)
    );
    let rows = DB::fetch_all(
        &cx.pool,
        &sql,
        vec![Value::Text(tenant.into()), Value::I64(value)],
    )
    .await
    .unwrap();
    rows.iter()
        .map(|r| match r.read_value(0, SqlType::I64).unwrap() {
            Value::I64(i) => i,
            other => panic!("id: {other:?}"),
        })
        .collect()
}

async fn members_table<DB: Backend>(cx: &Ctx<DB>) {
    schema::create_table::<Member, _>(&cx.pool)
        .await
        .expect("members");
}

/// `limit(n)` returns n true matches of a 2-bit index although the first
/// page of candidates (in the order asked) is all false positives; no false
/// positive and no row of another tenant ever reaches the caller.
pub async fn bounded_lookup_counts_true_matches<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    members_table(cx).await;
    let (a, b) = colliding_teams(cx, "t1").await;
    // Team b (false positives of a lookup of a) has the lowest scores.
    let mut rows: Vec<Member> = (1..=10).map(|i| Member::new(i, "t1", &b, i)).collect();
    rows.extend((11..=20).map(|i| Member::new(i, "t1", &a, 100 + i)));
    rows.extend((21..=40).map(|i| Member::new(i, "t1", &format!("team-{}", 100 + i % 5), i)));
    // Another tenant's rows of team a, with the lowest scores of all.
    rows.extend((101..=105).map(|i| Member::new(i, "t2", &a, -i)));
    cx.enc.insert_many(&cx.pool, &rows).await.unwrap();

    // The database's candidates: the first ones by score are team b's.
    let value = bucket(cx, "t1", &a).await;
    let cands = candidates(cx, "t1", value, "score").await;
    assert!(cands.len() > 10, "false positives present: {cands:?}");
    assert_eq!(&cands[..3], &[1, 2, 3], "{cands:?}");

    let by_score = Lookup::new().order_by("score", Order::Asc);
    let got = send(Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t1",
        &a,
        &by_score.clone().limit(3),
    ))
    .await
    .unwrap();
    assert_eq!(ids(&got), vec![11, 12, 13]);
    assert!(got.iter().all(|m| m.team == a && m.tenant_id == "t1"));
    // Fixed pages of two candidates: many round trips, the same answer.
    let got = Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t9",
        &a,
        &by_score.clone().limit(5).page_size(2),
    )
    .await
    .unwrap();
    assert!(got.is_empty(), "a tenant with no rows finds nothing");
    let got = Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t1",
        &format!("  {}  ", a.to_uppercase()),
        &by_score.clone().limit(5).page_size(2),
    )
    .await
    .unwrap();
    assert_eq!(ids(&got), vec![11, 12, 13, 14, 15]);
    let got = Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t1",
        &a,
        &Lookup::new().order_by("score", Order::Desc).limit(4),
    )
    .await
    .unwrap();
    assert_eq!(ids(&got), vec![20, 19, 18, 17]);
    // More than there are: every true match, in order, each once.
    let got = Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t1",
        &a,
        &by_score.clone().limit(50).page_size(3),
    )
    .await
    .unwrap();
    assert_eq!(ids(&got), (11..=20).collect::<Vec<_>>());
    // No limit: ordered, one statement; limit 0: nothing.
    let got = Member::find_by_team_with(&cx.enc, &cx.pool, "t1", &a, &by_score)
        .await
        .unwrap();
    assert_eq!(ids(&got), (11..=20).collect::<Vec<_>>());
    assert!(
        Member::find_by_team_with(&cx.enc, &cx.pool, "t1", &a, &Lookup::new().limit(0))
            .await
            .unwrap()
            .is_empty()
    );
    // Without an order, a limited lookup is in primary-key order.
    let got = Member::find_by_team_with(&cx.enc, &cx.pool, "t1", &b, &Lookup::new().limit(2))
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![1, 2]);
    // The other tenant, through the generic entry point and a transaction.
    let mut tx = cx.pool.begin().await.unwrap();
    let got = cx
        .enc
        .find_by_with::<Member, _>(
            &mut tx,
            Some("t2"),
            "team_idx",
            &[&[a.as_str()]],
            &by_score.clone().limit(2),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids(&got), vec![105, 104]);
    // Several values at once.
    let got = cx
        .enc
        .find_by_with::<Member, _>(
            &cx.pool,
            Some("t1"),
            "team_idx",
            &[&[a.as_str()], &[b.as_str()]],
            &Lookup::new().order_by("score", Order::Desc).limit(12),
        )
        .await
        .unwrap();
    let mut expected: Vec<i64> = (11..=20).rev().collect();
    expected.extend([10, 9]);
    assert_eq!(ids(&got), expected);
}

/// Orders over nullable and plain columns (NULLs last ascending, first
/// descending, the same on every database, across page boundaries),
/// conditions of your own ANDed in, and what is refused: encrypted, index
/// and unknown order columns, conditions that are not one expression.
pub async fn bounded_lookup_order_and_filter<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    members_table(cx).await;
    let (a, b) = colliding_teams(cx, "t1").await;
    let mut rows: Vec<Member> = (1..=24)
        .map(|i| Member::new(i, "t1", &a, (i * 7) % 10))
        .collect();
    rows.extend((31..=40).map(|i| Member::new(i, "t1", &b, i)));
    cx.enc.insert_many(&cx.pool, &rows).await.unwrap();
    let team_a: Vec<Member> = rows.iter().filter(|m| m.team == a).cloned().collect();

    // tier ascending (NULLs last), then score descending, then id.
    let mut expected = team_a.clone();
    expected.sort_by_key(|m| (m.tier.is_none(), m.tier, -m.score, m.id));
    for options in [
        Lookup::new()
            .order_by("tier", Order::Asc)
            .order_by("score", Order::Desc),
        Lookup::new()
            .order_by("tier", Order::Asc)
            .order_by("score", Order::Desc)
            .limit(24)
            .page_size(2),
    ] {
        let got = Member::find_by_team_with(&cx.enc, &cx.pool, "t1", &a, &options)
            .await
            .unwrap();
        assert_eq!(ids(&got), ids(&expected), "{options:?}");
    }
    // tier descending (NULLs first), then id; limited, in small pages.
    let mut expected = team_a.clone();
    expected.sort_by_key(|m| (m.tier.is_some(), std::cmp::Reverse(m.tier), m.id));
    let got = Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t1",
        &a,
        &Lookup::new()
            .order_by("tier", Order::Desc)
            .limit(15)
            .page_size(4),
    )
    .await
    .unwrap();
    assert_eq!(ids(&got), ids(&expected[..15]));

    // A condition of your own, with binds: score at least 5, ordered by
    // score then id, limited.
    let cond = Lookup::new()
        .filter(
            format!("{} >= {{}}", ident::<DB>("score")),
            vec![Value::I64(5)],
        )
        .order_by("score", Order::Asc)
        .order_by("id", Order::Asc)
        .limit(6);
    let mut expected: Vec<&Member> = team_a.iter().filter(|m| m.score >= 5).collect();
    expected.sort_by_key(|m| (m.score, m.id));
    let got = Member::find_by_team_with(&cx.enc, &cx.pool, "t1", &a, &cond)
        .await
        .unwrap();
    assert_eq!(
        ids(&got),
        expected.iter().take(6).map(|m| m.id).collect::<Vec<_>>()
    );
    // Two conditions, both ANDed; `{}` inside a quoted literal stays text.
    let two = Lookup::new()
        .filter(
            "label <> '{}' AND label = {}",
            vec![Value::Text("label-1".into())],
        )
        .filter(
            "score < {} OR score > {}",
            vec![Value::I64(3), Value::I64(8)],
        )
        .order_by("id", Order::Desc);
    let expected: Vec<i64> = team_a
        .iter()
        .rev()
        .filter(|m| m.label == "label-1" && (m.score < 3 || m.score > 8))
        .map(|m| m.id)
        .collect();
    assert!(!expected.is_empty());
    let got = Member::find_by_team_with(&cx.enc, &cx.pool, "t1", &a, &two)
        .await
        .unwrap();
    assert_eq!(ids(&got), expected);
    // A condition cannot widen the lookup to other rows: its parentheses
    // must balance, and the tenant and index conditions stay ANDed.
    let got = Member::find_by_team_with(
        &cx.enc,
        &cx.pool,
        "t1",
        &a,
        &Lookup::new().filter("1 = 1 OR 1 = 1", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(got.len(), team_a.len());

    // Refused, before any query and whatever the data (here a team with no
    // rows at all, and a tenant with no key).
    let check = |options: Lookup| {
        let (pool, enc) = (cx.pool.clone(), cx.enc.clone());
        async move {
            for (tenant, team) in [("t1", "team-x"), ("t1", "team-0"), ("nobody", "zzz-q")] {
                let r = Member::find_by_team_with(&enc, &pool, tenant, team, &options).await;
                match r {
                    Err(e @ Error::InvalidInput { .. }) => {
                        assert!(!e.to_string().contains(team), "{e}")
                    }
                    other => panic!("{options:?} on {tenant}: {other:?}"),
                }
            }
        }
    };
    for column in [
        "name",
        "team",
        "team_idx",
        "team_idx_kv",
        "rowseal_header",
        "nope",
        "score; DROP TABLE members",
        "score DESC, (SELECT 1)",
    ] {
        check(Lookup::new().order_by(column, Order::Asc).limit(1)).await;
        check(Lookup::new().order_by(column, Order::Desc)).await;
    }
    for (fragment, binds) in [
        ("score > {}", vec![]),
        ("score > 1", vec![Value::I64(1)]),
        ("score > 1) OR (1 = 1", vec![]),
        ("(score > 1", vec![]),
        ("score > 1; DELETE FROM members", vec![]),
        ("score > 1 -- comment", vec![]),
        ("score > 1 /* comment */", vec![]),
        ("score > $1", vec![Value::I64(1)]),
        ("label = 'unterminated", vec![]),
        ("label = 'back\\' OR 1 = 1 OR label = '", vec![]),
        ("score > {0}", vec![Value::I64(1)]),
        ("score > }", vec![]),
        ("   ", vec![]),
    ] {
        check(Lookup::new().filter(fragment, binds)).await;
    }
    if DB::DIALECT != "postgres" {
        check(Lookup::new().filter("score > ?", vec![Value::I64(1)])).await;
    }
    // The table is intact.
    assert_eq!(super::count(&cx.pool, "members").await, 34);
}

/// Many primary keys in one statement per chunk: in the order asked, each
/// once, missing keys and another tenant's keys skipped; more keys than one
/// statement may bind; text keys compared byte for byte (kms mode).
pub async fn fetch_many_in_chunks<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    members_table(cx).await;
    let mut rows: Vec<Member> = (1..=30).map(|i| Member::new(i, "t1", "red", i)).collect();
    rows.extend((31..=35).map(|i| Member::new(i, "t2", "red", i)));
    cx.enc.insert_many(&cx.pool, &rows).await.unwrap();

    let mut keys: Vec<i64> = vec![30, 5, 33, 999, 5];
    keys.extend(1..=12);
    for chunk in [1, 4, 1000] {
        let got: Vec<Member> = send(cx.enc.__fetch_many_in_chunks(&cx.pool, "t1", &keys, chunk))
            .await
            .unwrap();
        let mut expected = vec![30, 5];
        expected.extend((1..=12).filter(|&i| i != 5));
        assert_eq!(ids(&got), expected, "chunks of {chunk}");
        assert!(got.iter().all(|m| m.tenant_id == "t1"));
        assert_eq!(got[0], rows[29]);
    }
    // The other tenant sees its own rows only.
    let got: Vec<Member> = cx.enc.fetch_many(&cx.pool, "t2", &keys).await.unwrap();
    assert_eq!(ids(&got), vec![33]);
    assert!(cx
        .enc
        .fetch_many::<Member, _>(&cx.pool, "t1", &[])
        .await
        .unwrap()
        .is_empty());

    // More keys than one statement binds: several statements, in a
    // transaction.
    let many: Vec<i64> = (1..=(DB::MAX_PARAMS as i64 + 10)).rev().collect();
    let mut tx = cx.pool.begin().await.unwrap();
    let got: Vec<Member> = cx.enc.fetch_many(&mut tx, "t1", &many).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids(&got), (1..=30).rev().collect::<Vec<_>>());

    // Text primary keys, kms mode: byte for byte, whatever the collation.
    let audited = |key: &str, org: &str| Audited {
        key: key.into(),
        org: org.into(),
        secret: format!("secret of {key}"),
        amount: Some(1),
    };
    let (x, y, z) = (
        audited("k-a", "o1"),
        audited("K-B", "o1"),
        audited("k-c", "o2"),
    );
    for r in [&x, &y, &z] {
        cx.enc.insert(&cx.pool, r).await.unwrap();
    }
    let keys: Vec<String> = ["k-c", "K-B", "K-A", "k-b", "k-a"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got: Vec<Audited> = cx
        .enc
        .__fetch_many_in_chunks(&cx.pool, "o1", &keys, 2)
        .await
        .unwrap();
    assert_eq!(got, vec![y, x]);
    // Tenants are compared byte for byte too.
    assert!(cx
        .enc
        .fetch_many::<Audited, _>(&cx.pool, "O1", &keys)
        .await
        .unwrap()
        .is_empty());
}

/// Count and existence are exact: false positives, present among the
/// candidates, are not counted, and a value whose index bucket is full of
/// other rows does not exist.
pub async fn count_and_exists_are_exact<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    members_table(cx).await;
    let (a, b) = colliding_teams(cx, "t1").await;
    let ghost = ghost_of(cx, "t1", &a).await;
    let mut rows: Vec<Member> = (1..=7).map(|i| Member::new(i, "t1", &a, i)).collect();
    rows.extend((8..=12).map(|i| Member::new(i, "t1", &b, i)));
    rows.extend((13..=15).map(|i| Member::new(i, "t2", &a, i)));
    cx.enc.insert_many(&cx.pool, &rows).await.unwrap();
    let value = bucket(cx, "t1", &a).await;
    assert!(candidates(cx, "t1", value, "id").await.len() >= 12);

    assert_eq!(
        send(Member::count_by_team(&cx.enc, &cx.pool, "t1", &a))
            .await
            .unwrap(),
        7
    );
    assert!(send(Member::exists_by_team(&cx.enc, &cx.pool, "t1", &a))
        .await
        .unwrap());
    assert_eq!(
        Member::count_by_team(&cx.enc, &cx.pool, "t1", &format!(" {} ", a.to_uppercase()))
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        Member::count_by_team(&cx.enc, &cx.pool, "t1", &b)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        Member::count_by_team(&cx.enc, &cx.pool, "t2", &a)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        Member::count_by_team(&cx.enc, &cx.pool, "t1", &ghost)
            .await
            .unwrap(),
        0
    );
    assert!(Member::exists_by_team(&cx.enc, &cx.pool, "t1", &a)
        .await
        .unwrap());
    assert!(Member::exists_by_team(&cx.enc, &cx.pool, "t1", &b)
        .await
        .unwrap());
    assert!(!Member::exists_by_team(&cx.enc, &cx.pool, "t1", &ghost)
        .await
        .unwrap());
    assert!(!Member::exists_by_team(&cx.enc, &cx.pool, "t3", &a)
        .await
        .unwrap());
    // The generic entry points: several values; a tenant is required for a
    // tenant-scoped index.
    assert_eq!(
        cx.enc
            .count_by::<Member, _>(
                &cx.pool,
                Some("t1"),
                "team_idx",
                &[&[a.as_str()], &[b.as_str()], &[ghost.as_str()]]
            )
            .await
            .unwrap(),
        12
    );
    assert!(invalid(
        cx.enc
            .count_by::<Member, _>(&cx.pool, None, "team_idx", &[&[a.as_str()]])
            .await
    ));
    assert!(invalid(
        cx.enc
            .exists_by::<Member, _>(&cx.pool, Some("t1"), "nope_idx", &[&[a.as_str()]])
            .await
    ));
    // Counting reads the candidates in pages: more rows than a page.
    let big: Vec<Member> = (1000..3100)
        .map(|i| Member::new(i, "t4", if i % 2 == 0 { &a } else { &b }, i))
        .collect();
    cx.enc.insert_many(&cx.pool, &big).await.unwrap();
    assert_eq!(
        Member::count_by_team(&cx.enc, &cx.pool, "t4", &a)
            .await
            .unwrap(),
        1050
    );
}

/// The blind-index condition in a hand-written query with a condition of
/// its own: the rows it returns include false positives, which the
/// condition's re-check drops; during an index-key rotation it covers both
/// slots, as `find_by` does.
pub async fn index_condition_in_own_query<DB: Backend>(cx: &Ctx<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    members_table(cx).await;
    let (a, b) = colliding_teams(cx, "t1").await;
    let mut rows: Vec<Member> = (1..=8).map(|i| Member::new(i, "t1", &a, 10 * i)).collect();
    rows.extend((11..=16).map(|i| Member::new(i, "t1", &b, 1000 + i)));
    rows.extend((21..=23).map(|i| Member::new(i, "t2", &a, 1000 + i)));
    cx.enc.insert_many(&cx.pool, &rows).await.unwrap();

    let cond =
        send(
            cx.enc
                .index_condition::<Member, DB>(Some("t1"), "team_idx", &[&[a.as_str()]], 2),
        )
        .await
        .unwrap();
    assert_eq!(cond.binds().len(), 1);
    assert_eq!(cond.next_placeholder(), 3);
    assert!(cond.sql().starts_with('(') && cond.sql().ends_with(')'));
    assert!(
        cond.sql().contains(&ident::<DB>("team_idx")),
        "{}",
        cond.sql()
    );
    let shown = format!("{cond:?}");
    assert!(!shown.contains(&a), "{shown}");
    let own_query = |cond_sql: &str, next: usize| {
        format!(
            "SELECT {} FROM members WHERE tenant_id = {} AND {cond_sql} AND score >= {} ORDER BY id",
            Encryptor::select_list::<Member, DB>(),
            ph::<DB>(1),
            ph::<DB>(next),
        )
    };
    let sql = own_query(cond.sql(), cond.next_placeholder());
    let mut binds = vec![Value::Text("t1".into())];
    binds.extend(cond.binds().iter().cloned());
    binds.push(Value::I64(30));
    let raw = DB::fetch_all(&cx.pool, &sql, binds).await.unwrap();
    let mut got: Vec<Member> = cx.enc.decrypt_all("t1", &raw).await.unwrap();
    assert_eq!(got.len(), 6 + 6, "team b's rows are false positives here");
    assert!(got.iter().any(|m| !cond.matches(m)));
    cond.retain_matches(&mut got);
    assert_eq!(ids(&got), vec![3, 4, 5, 6, 7, 8]);

    // The same through sqlx's own query and `bind_to`.
    let q = sqlx::query::<DB>(&sql).bind("t1".to_string());
    let q = cond.bind_to(q).bind(30i64);
    let mut got: Vec<Member> = cx.enc.fetch_all("t1", q, &cx.pool).await.unwrap();
    cond.retain_matches(&mut got);
    assert_eq!(ids(&got), vec![3, 4, 5, 6, 7, 8]);

    // Placeholders are numbered from 1; a tenant-scoped index needs a tenant;
    // a tenant with no index key matches nothing (and gets no key).
    assert!(invalid(
        cx.enc
            .index_condition::<Member, DB>(Some("t1"), "team_idx", &[&[a.as_str()]], 0)
            .await
    ));
    assert!(invalid(
        cx.enc
            .index_condition::<Member, DB>(None, "team_idx", &[&[a.as_str()]], 1)
            .await
    ));
    let none = cx
        .enc
        .index_condition::<Member, DB>(Some("nobody"), "team_idx", &[&[a.as_str()]], 2)
        .await
        .unwrap();
    assert_eq!(none.sql(), "(1 = 0)");
    assert!(none.binds().is_empty());
    assert_eq!(none.next_placeholder(), 2);

    // During an index-key rotation (pending version 2): both slots, in one
    // parenthesized condition; rows written before (version 1 only) are
    // still found.
    let scope = rowseal_core::KeyScope::Tenant("t1".into());
    let admin = super::encryptor(&cx.pool, &cx.keyring);
    assert_eq!(
        admin.keys().begin_index_key_rotation(&scope).await.unwrap(),
        2
    );
    let both = super::encryptor(&cx.pool, &cx.keyring);
    let cond = both
        .index_condition::<Member, DB>(Some("t1"), "team_idx", &[&[a.as_str()]], 2)
        .await
        .unwrap();
    assert_eq!(cond.binds().len(), 2);
    assert_eq!(cond.next_placeholder(), 4);
    for column in ["team_idx", "team_idx_alt"] {
        assert!(
            cond.sql().contains(&ident::<DB>(column)),
            "{column} in {}",
            cond.sql()
        );
    }
    assert!(cond.sql().contains(" OR "), "{}", cond.sql());
    let sql = own_query(cond.sql(), cond.next_placeholder());
    let mut binds = vec![Value::Text("t1".into())];
    binds.extend(cond.binds().iter().cloned());
    binds.push(Value::I64(30));
    let raw = DB::fetch_all(&cx.pool, &sql, binds).await.unwrap();
    let mut got: Vec<Member> = both.decrypt_all("t1", &raw).await.unwrap();
    cond.retain_matches(&mut got);
    assert_eq!(ids(&got), vec![3, 4, 5, 6, 7, 8]);
    // And the bounded lookups of that process agree.
    let got = Member::find_by_team_with(
        &both,
        &cx.pool,
        "t1",
        &a,
        &Lookup::new()
            .order_by("score", Order::Desc)
            .limit(2)
            .page_size(1),
    )
    .await
    .unwrap();
    assert_eq!(ids(&got), vec![8, 7]);
    assert_eq!(
        Member::count_by_team(&both, &cx.pool, "t1", &a)
            .await
            .unwrap(),
        8
    );
}
