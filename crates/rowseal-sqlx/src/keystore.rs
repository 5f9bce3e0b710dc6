//! [`SqlxKeyStore`]: the core's [`KeyStore`] over the `rowseal_keys` table.

use std::fmt;

use async_trait::async_trait;
use rowseal_core::{KeyPurpose, KeyRecord, KeyScope, KeyState, KeyStore, KeyUse, WrappedKey};

use crate::backend::{Backend, DbRow};
use crate::value::{SqlType, Value};

/// Wrapped tenant and index keys in the `rowseal_keys` table (created by
/// [`crate::schema::install`] or the migration files), through its own pool.
///
/// Inserts are atomic (`ON CONFLICT DO NOTHING` / `INSERT IGNORE` on the
/// primary key), so two processes creating a tenant's first key agree on one.
pub struct SqlxKeyStore<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
}

impl<DB: Backend> SqlxKeyStore<DB> {
    /// A key store over `pool`.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        SqlxKeyStore { pool }
    }

    fn store_err(e: impl std::error::Error + Send + Sync + 'static) -> rowseal_core::Error {
        rowseal_core::Error::store("rowseal_keys", e)
    }

    fn scope_values(purpose: KeyPurpose, scope: &KeyScope) -> Vec<Value> {
        let (kind, tenant) = match scope {
            KeyScope::Tenant(t) => ("tenant", t.as_str()),
            KeyScope::Global => ("global", ""),
        };
        vec![
            Value::Text(purpose.as_str().to_owned()),
            Value::Text(kind.to_owned()),
            Value::Text(tenant.to_owned()),
        ]
    }

    fn where_scope(sql: &mut String) {
        sql.push_str(" WHERE purpose = ");
        DB::push_placeholder(sql, 1);
        sql.push_str(" AND scope_kind = ");
        DB::push_placeholder(sql, 2);
        sql.push_str(" AND tenant = ");
        DB::push_placeholder(sql, 3);
    }

    fn record(
        purpose: KeyPurpose,
        scope: &KeyScope,
        row: &DB::Row,
    ) -> rowseal_core::Result<KeyRecord> {
        let bad = |what: &'static str| rowseal_core::Error::Store {
            message: format!("rowseal_keys: {what}"),
            source: None,
        };
        let version = match row.read_value(0, SqlType::I64).map_err(Self::store_err)? {
            Value::I64(v) => u32::try_from(v).map_err(|_| bad("version out of range"))?,
            _ => return Err(bad("version is NULL")),
        };
        let wrapped = match row.read_value(1, SqlType::Bytes).map_err(Self::store_err)? {
            Value::Bytes(b) => Some(WrappedKey::from_bytes(&b)?),
            _ => None,
        };
        let state = KeyState::from_name(row.read_str(2).map_err(Self::store_err)?)
            .ok_or_else(|| bad("unknown key state"))?;
        Ok(KeyRecord {
            purpose,
            scope: scope.clone(),
            version,
            wrapped,
            state,
        })
    }

    async fn select(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: Option<u32>,
    ) -> rowseal_core::Result<Option<KeyRecord>> {
        let mut conn = self.pool.acquire().await.map_err(Self::store_err)?;
        Self::select_on(&mut conn, purpose, scope, version).await
    }

    /// One stored key (`version`, or the latest), read on `conn`.
    async fn select_on(
        conn: &mut DB::Connection,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: Option<u32>,
    ) -> rowseal_core::Result<Option<KeyRecord>> {
        let mut sql = String::from("SELECT version, wrapped, state FROM rowseal_keys");
        Self::where_scope(&mut sql);
        let mut values = Self::scope_values(purpose, scope);
        match version {
            Some(v) => {
                sql.push_str(" AND version = ");
                DB::push_placeholder(&mut sql, 4);
                values.push(Value::I64(i64::from(v)));
            }
            None => sql.push_str(" ORDER BY version DESC LIMIT 1"),
        }
        let row = DB::fetch_optional_on(conn, &sql, values)
            .await
            .map_err(Self::store_err)?;
        row.map(|r| Self::record(purpose, scope, &r)).transpose()
    }

    /// Every stored version of a scope's key, oldest first, read on `conn`.
    async fn versions_on(
        conn: &mut DB::Connection,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> rowseal_core::Result<Vec<KeyRecord>> {
        let mut sql = String::from("SELECT version, wrapped, state FROM rowseal_keys");
        Self::where_scope(&mut sql);
        sql.push_str(" ORDER BY version");
        let rows = DB::__fetch_all_on(conn, &sql, Self::scope_values(purpose, scope))
            .await
            .map_err(Self::store_err)?;
        rows.iter()
            .map(|r| Self::record(purpose, scope, r))
            .collect()
    }

    /// Marks a key version destroyed and erases its wrapped key
    /// (crypto-shredding). Returns whether the version existed.
    pub async fn destroy(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> rowseal_core::Result<bool> {
        let mut sql = String::from("UPDATE rowseal_keys SET wrapped = NULL, state = 'destroyed'");
        Self::where_scope(&mut sql);
        sql.push_str(" AND version = ");
        DB::push_placeholder(&mut sql, 4);
        let mut values = Self::scope_values(purpose, scope);
        values.push(Value::I64(i64::from(version)));
        let mut conn = self.pool.acquire().await.map_err(Self::store_err)?;
        let n = DB::execute_on(&mut conn, &sql, values)
            .await
            .map_err(Self::store_err)?;
        Ok(n > 0)
    }
}

#[async_trait]
impl<DB: Backend> KeyStore for SqlxKeyStore<DB> {
    async fn latest(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> rowseal_core::Result<Option<KeyRecord>> {
        self.select(purpose, scope, None).await
    }

    async fn get(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> rowseal_core::Result<Option<KeyRecord>> {
        self.select(purpose, scope, Some(version)).await
    }

    async fn versions(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> rowseal_core::Result<Vec<KeyRecord>> {
        let mut conn = self.pool.acquire().await.map_err(Self::store_err)?;
        Self::versions_on(&mut conn, purpose, scope).await
    }

    async fn set_state(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
        from: KeyState,
        to: KeyState,
    ) -> rowseal_core::Result<bool> {
        let mut sql = String::from("UPDATE rowseal_keys SET state = ");
        DB::push_placeholder(&mut sql, 1);
        sql.push_str(" WHERE purpose = ");
        DB::push_placeholder(&mut sql, 2);
        sql.push_str(" AND scope_kind = ");
        DB::push_placeholder(&mut sql, 3);
        sql.push_str(" AND tenant = ");
        DB::push_placeholder(&mut sql, 4);
        sql.push_str(" AND version = ");
        DB::push_placeholder(&mut sql, 5);
        sql.push_str(" AND state = ");
        DB::push_placeholder(&mut sql, 6);
        let mut values = vec![Value::Text(to.as_str().to_owned())];
        values.extend(Self::scope_values(purpose, scope));
        values.push(Value::I64(i64::from(version)));
        values.push(Value::Text(from.as_str().to_owned()));
        let mut conn = self.pool.acquire().await.map_err(Self::store_err)?;
        let n = DB::execute_on(&mut conn, &sql, values)
            .await
            .map_err(Self::store_err)?;
        Ok(n == 1)
    }

    async fn insert(&self, record: &KeyRecord) -> rowseal_core::Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(Self::store_err)?;
        Self::insert_on(&mut conn, record)
            .await
            .map_err(|e| match sqlite_busy(&e) {
                // SQLite has one writer: a key created while the application's
                // own write transaction (on another connection) holds the
                // lock waits for it until the busy timeout. Say why, and what
                // to do: a transaction-scoped key would vanish on rollback
                // while this process kept it, so it is never created there.
                true => rowseal_core::Error::Store {
                    message: "rowseal_keys: a new key cannot be written while another connection \
                              holds SQLite's write lock (most often the application's own write \
                              transaction): create a tenant's keys before its first write \
                              transaction (KeyHierarchy::current_tenant_key and \
                              current_index_key), or write its first row outside one"
                        .into(),
                    source: Some(std::sync::Arc::new(e)),
                },
                false => e,
            })
    }

    async fn record_key_use(
        &self,
        tenant: &str,
        root_key_id: &str,
        at_unix_ms: i64,
        outcome: KeyUse<'_>,
    ) -> rowseal_core::Result<()> {
        // Not on SQLite: its one writer is the application's, and a write
        // from the background would make the application's own
        // read-then-write transactions fail (SQLITE_BUSY). `status --keys`
        // shows no unwrap history there.
        if DB::DIALECT == "sqlite" {
            return Ok(());
        }
        // An upsert of the columns of this outcome only: a success keeps the
        // last error on record (with its time), and an error keeps the last
        // success. The message is bounded to its column.
        let (columns, mut values): (&[&str], Vec<Value>) = match outcome {
            KeyUse::Failed { kind, message } => (
                &["last_error_at", "last_error_kind", "last_error"],
                vec![
                    Value::I64(at_unix_ms),
                    Value::Text(kind.chars().take(32).collect()),
                    Value::Text(message.chars().take(500).collect()),
                ],
            ),
            _ => (&["last_ok_at"], vec![Value::I64(at_unix_ms)]),
        };
        let mut sql = String::from("INSERT INTO rowseal_key_health (tenant, root_key_id");
        for c in columns {
            sql.push_str(", ");
            sql.push_str(c);
        }
        sql.push_str(") VALUES (");
        for i in 0..columns.len() + 2 {
            if i > 0 {
                sql.push_str(", ");
            }
            DB::push_placeholder(&mut sql, i + 1);
        }
        sql.push(')');
        let set = |c: &&str| match DB::DIALECT {
            "mysql" => format!("{c} = VALUES({c})"),
            _ => format!("{c} = excluded.{c}"),
        };
        let set: Vec<String> = columns.iter().map(set).collect();
        match DB::DIALECT {
            "mysql" => sql.push_str(" ON DUPLICATE KEY UPDATE "),
            _ => sql.push_str(" ON CONFLICT (tenant, root_key_id) DO UPDATE SET "),
        }
        sql.push_str(&set.join(", "));
        let mut all = vec![
            Value::Text(tenant.to_owned()),
            Value::Text(root_key_id.chars().take(512).collect()),
        ];
        all.append(&mut values);
        let mut conn = self.pool.acquire().await.map_err(Self::store_err)?;
        DB::execute_on(&mut conn, &sql, all)
            .await
            .map_err(Self::store_err)?;
        Ok(())
    }
}

impl<DB: Backend> SqlxKeyStore<DB> {
    /// Inserts one key version on `conn`; `false` if it exists already.
    async fn insert_on(
        conn: &mut DB::Connection,
        record: &KeyRecord,
    ) -> rowseal_core::Result<bool> {
        let (prefix, suffix) = DB::INSERT_IGNORE;
        let mut sql = format!(
            "{prefix} INTO rowseal_keys (purpose, scope_kind, tenant, version, wrapped, root_key_id, state) VALUES ("
        );
        for i in 1..=7 {
            if i > 1 {
                sql.push_str(", ");
            }
            DB::push_placeholder(&mut sql, i);
        }
        sql.push(')');
        sql.push_str(suffix);
        let mut values = Self::scope_values(record.purpose, &record.scope);
        values.push(Value::I64(i64::from(record.version)));
        match &record.wrapped {
            Some(w) => {
                values.push(Value::Bytes(w.to_bytes()));
                values.push(Value::Text(w.key_id().to_owned()));
            }
            None => {
                values.push(Value::Null(SqlType::Bytes));
                values.push(Value::Null(SqlType::Text));
            }
        }
        values.push(Value::Text(record.state.as_str().to_owned()));
        let n = DB::execute_on(conn, &sql, values)
            .await
            .map_err(Self::store_err)?;
        Ok(n == 1)
    }
}

/// Whether `e` is SQLite's "database is locked" (`SQLITE_BUSY`, or
/// `SQLITE_LOCKED`, with any extended code).
#[cfg(feature = "sqlite")]
fn sqlite_busy(e: &rowseal_core::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(sqlx::Error::Database(db)) = c.downcast_ref::<sqlx::Error>() {
            return db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| {
                    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                        && matches!(c & 0xff, 5 | 6)
                });
        }
        cause = c.source();
    }
    false
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_busy(_: &rowseal_core::Error) -> bool {
    false
}

impl<DB: sqlx::Database> fmt::Debug for SqlxKeyStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxKeyStore")
            .field("database", &DB::NAME)
            .finish_non_exhaustive()
    }
}

/// `rowseal_keys` on the one connection an operation was given (`&mut
/// transaction`, `&mut connection`, or the one it took from `&Pool`): what
/// [`KeyHierarchy::through`](rowseal_core::KeyHierarchy::through) is given
/// by the operations that take an [`sqlx::Acquire`], so that a key missing
/// from the cache is read where the operation already is, never on a second
/// connection (which a saturated pool, or a pool of one, cannot give:
/// `PoolTimedOut`).
///
/// On a connection in a transaction it reads only: a new key is created by
/// the hierarchy through its own store, committed at once, never in a
/// transaction that could roll it back. Outside a transaction every
/// statement commits at once, so new keys are created here too.
///
/// Inside a transaction whose reads come from a snapshot (anything but
/// `READ COMMITTED` on PostgreSQL and MySQL/MariaDB; any SQLite
/// transaction), what it reads is not current
/// ([`KeyStore::reads_are_current`]): the hierarchy uses it for the
/// operation and caches none of it, so that a key shredded or a version
/// added since the snapshot does not outlive the transaction in the caches.
pub(crate) struct ConnKeyStore<'c, DB: sqlx::Database> {
    conn: tokio::sync::Mutex<&'c mut DB::Connection>,
    /// Whether the connection was in a transaction (sqlx's own count, which
    /// a `BEGIN` sent as plain SQL does not change).
    in_transaction: bool,
    /// Whether the transaction reads current data, asked on first need.
    current: tokio::sync::OnceCell<bool>,
}

impl<'c, DB: Backend> ConnKeyStore<'c, DB> {
    pub(crate) fn new(conn: &'c mut DB::Connection) -> Self {
        let in_transaction = sqlx::Connection::is_in_transaction(&*conn);
        ConnKeyStore {
            conn: tokio::sync::Mutex::new(conn),
            in_transaction,
            current: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether each statement of the connection's transaction sees what
    /// other transactions committed before it (`READ COMMITTED` or weaker),
    /// rather than a snapshot of the transaction's start. SQLite's
    /// transactions read a snapshot (in WAL mode), so never; a level that
    /// cannot be read counts as a snapshot.
    async fn transaction_reads_current(&self) -> bool {
        let queries: &[&str] = match DB::DIALECT {
            "postgres" => &["SELECT current_setting('transaction_isolation')"],
            // MySQL 8 and MariaDB 11.1+ / MariaDB before 11.1.
            "mysql" => &[
                "SELECT @@SESSION.transaction_isolation",
                "SELECT @@SESSION.tx_isolation",
            ],
            _ => &[],
        };
        let mut conn = self.conn.lock().await;
        for sql in queries {
            if let Ok(Some(row)) = DB::fetch_optional_on(&mut conn, sql, Vec::new()).await {
                if let Ok(level) = row.read_str(0) {
                    let level = level.to_ascii_lowercase().replace('-', " ");
                    return level == "read committed" || level == "read uncommitted";
                }
            }
        }
        false
    }

    /// The connection, for the operation's own statements between its key
    /// reads.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, &'c mut DB::Connection> {
        self.conn.lock().await
    }

    fn refused(what: &str) -> rowseal_core::Error {
        rowseal_core::Error::Store {
            message: format!("rowseal_keys: {what} is not done on the caller's connection"),
            source: None,
        }
    }
}

#[async_trait]
impl<DB: Backend> KeyStore for ConnKeyStore<'_, DB> {
    async fn latest(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> rowseal_core::Result<Option<KeyRecord>> {
        let mut conn = self.conn.lock().await;
        SqlxKeyStore::<DB>::select_on(&mut conn, purpose, scope, None).await
    }

    async fn get(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
        version: u32,
    ) -> rowseal_core::Result<Option<KeyRecord>> {
        let mut conn = self.conn.lock().await;
        SqlxKeyStore::<DB>::select_on(&mut conn, purpose, scope, Some(version)).await
    }

    async fn versions(
        &self,
        purpose: KeyPurpose,
        scope: &KeyScope,
    ) -> rowseal_core::Result<Vec<KeyRecord>> {
        let mut conn = self.conn.lock().await;
        SqlxKeyStore::<DB>::versions_on(&mut conn, purpose, scope).await
    }

    async fn set_state(
        &self,
        _: KeyPurpose,
        _: &KeyScope,
        _: u32,
        _: KeyState,
        _: KeyState,
    ) -> rowseal_core::Result<bool> {
        Err(Self::refused("a change of key state"))
    }

    async fn insert(&self, record: &KeyRecord) -> rowseal_core::Result<bool> {
        if self.in_transaction {
            return Err(Self::refused("creating a key inside a transaction"));
        }
        let mut conn = self.conn.lock().await;
        SqlxKeyStore::<DB>::insert_on(&mut conn, record).await
    }

    fn in_caller_transaction(&self) -> bool {
        self.in_transaction
    }

    async fn reads_are_current(&self) -> rowseal_core::Result<bool> {
        if !self.in_transaction {
            return Ok(true);
        }
        Ok(*self
            .current
            .get_or_init(|| self.transaction_reads_current())
            .await)
    }
}

impl<DB: sqlx::Database> fmt::Debug for ConnKeyStore<'_, DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnKeyStore")
            .field("database", &DB::NAME)
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}
