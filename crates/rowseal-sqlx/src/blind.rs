//! Blind indexes, the pure part: index plans, normalized parts, index values
//! and the cells a write stores, and unique-violation mapping. No I/O and no
//! key fetching: [`Encryptor`] fetches the keys, runs the statements (typed
//! lookups that remove false positives, backfills) and calls these.
//!
//! # Storage and rotation
//! Each index has two slots of two columns: a value (the truncated HMAC) and
//! the index-key version it was computed under. Odd versions live in the main
//! slot (`column`, `version_column`), even ones in the alternate slot
//! (`alt_column`, `alt_version_column`). Writes fill the slot of every version
//! the key hierarchy says is written (the active one, and during a rotation the
//! pending one too); lookups compute the value under every version it says is
//! queried and match each slot against the values of its versions, so only
//! one slot is searched outside rotations.
//!
//! An index-key rotation (driven by `rowseal reindex`) goes: pending version
//! created ([`KeyHierarchy::begin_index_key_rotation`]); once every process
//! has seen it (one cache lifetime), every write fills both versions and every
//! lookup queries both; [`Encryptor::reindex_batch`] backfills the rows written
//! before; then the pending version is promoted and the old one retired. A
//! lookup finds every row at every step, including in processes whose cache is
//! one step behind; and a unique index stays enforced on the new version's
//! slot throughout, because every row written or backfilled has it.
//!
//! [`KeyHierarchy::begin_index_key_rotation`]: rowseal_core::KeyHierarchy::begin_index_key_rotation
//! [`Encryptor`]: crate::Encryptor
//! [`Encryptor::reindex_batch`]: crate::Encryptor::reindex_batch

use std::collections::HashMap;

use rowseal_core::{BlindIndexKey, BlindIndexValue, IndexBits, KeyScope, Normalization};
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::model::{Encrypted, IndexDef, Model};
use crate::value::{SqlType, Value};

/// One index ready to compute values.
pub(crate) struct IndexPlan {
    pub(crate) def: &'static IndexDef,
    /// One per covered field.
    pub(crate) norm: Vec<Normalization>,
    pub(crate) bits: IndexBits,
}

impl IndexPlan {
    fn new(def: &'static IndexDef) -> Result<Self> {
        Ok(IndexPlan {
            def,
            norm: def.part_normalizations()?,
            bits: IndexBits::new(def.bits)?,
        })
    }
}

/// The plans of every index of `model`, in the model's order.
pub(crate) fn plans(model: &'static Model) -> Result<Vec<IndexPlan>> {
    model.indexes.iter().map(IndexPlan::new).collect()
}

/// The plan of the index named `index`.
pub(crate) fn index_plan(model: &'static Model, index: &str) -> Result<IndexPlan> {
    let def = model.index(index).ok_or_else(|| Error::InvalidInput {
        reason: format!("{} has no blind index `{index}`", model.table()).into(),
    })?;
    IndexPlan::new(def)
}

/// Normalizes a lookup's values, one per covered field.
pub(crate) fn normalize_query(plan: &IndexPlan, parts: &[&str]) -> Result<Vec<String>> {
    if parts.len() != plan.def.fields.len() {
        return Err(Error::InvalidInput {
            reason: format!(
                "blind index `{}` covers {} field(s), {} value(s) given",
                plan.def.name,
                plan.def.fields.len(),
                parts.len()
            )
            .into(),
        });
    }
    Ok(parts
        .iter()
        .zip(&plan.norm)
        .map(|(p, n)| n.apply(p))
        .collect())
}

/// The index-key scope of an index for rows of `tenant`.
pub(crate) fn scope_of(def: &IndexDef, tenant: &str) -> KeyScope {
    if def.global {
        KeyScope::Global
    } else {
        KeyScope::Tenant(tenant.to_owned())
    }
}

pub(crate) fn to_value(v: BlindIndexValue) -> Value {
    match v {
        BlindIndexValue::Int(i) => Value::I64(i),
        BlindIndexValue::Bytes(b) => Value::Bytes(b),
    }
}

impl From<BlindIndexValue> for Value {
    /// `Int` → [`Value::I64`], `Bytes` → [`Value::Bytes`].
    fn from(v: BlindIndexValue) -> Self {
        to_value(v)
    }
}

fn null_for(def: &IndexDef) -> Value {
    if def.bits <= 64 {
        Value::Null(SqlType::I64)
    } else {
        Value::Null(SqlType::Bytes)
    }
}

/// Normalized parts → the index value under `key`.
pub(crate) fn compute(
    plan: &IndexPlan,
    key: &BlindIndexKey,
    parts: &[String],
) -> Result<BlindIndexValue> {
    key.parts_value(parts, plan.bits)
}

/// Normalizes a row's covered fields; `None` if one of them is NULL.
pub(crate) fn row_parts<T: Encrypted>(plan: &IndexPlan, row: &T) -> Option<Vec<String>> {
    plan.def
        .fields
        .iter()
        .zip(&plan.norm)
        .map(|(&f, n)| {
            row.index_part(f).map(|v| {
                let normalized = n.apply(&v);
                // A value formatted for indexing (a number, a date) is a
                // plaintext copy of the field: wipe it too.
                if let std::borrow::Cow::Owned(mut owned) = v {
                    owned.zeroize();
                }
                normalized
            })
        })
        .collect()
}

pub(crate) fn zeroize_parts(parts: &mut [String]) {
    for p in parts {
        p.zeroize();
    }
}

/// Whether `row`'s normalized covered fields are one of `wanted` (a
/// lookup's normalized values): what drops the false positives of a
/// truncated index. The row's normalized copy is wiped.
pub(crate) fn matches_wanted<T: Encrypted>(
    plan: &IndexPlan,
    wanted: &[Vec<String>],
    row: &T,
) -> bool {
    match row_parts(plan, row) {
        Some(mut parts) => {
            let hit = wanted.contains(&parts);
            zeroize_parts(&mut parts);
            hit
        }
        None => false,
    }
}

/// The index values a lookup matches, per value column: for each queried
/// index key (`keys`), the value of each of `wanted` in the column of the
/// key's slot (the main slot holds odd versions, the alternate slot even
/// ones; a slot no queried version uses is not searched), without
/// duplicates. Empty when there is no key: nothing can match.
pub(crate) fn lookup_slots(
    plan: &IndexPlan,
    keys: &[BlindIndexKey],
    wanted: &[Vec<String>],
) -> Result<Vec<(&'static str, Vec<Value>)>> {
    let mut slots: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(2);
    for k in keys {
        let column = plan.def.slot(k.version()).0;
        let pos = match slots.iter().position(|(c, _)| *c == column) {
            Some(p) => p,
            None => {
                slots.push((column, Vec::new()));
                slots.len() - 1
            }
        };
        for w in wanted {
            let v = to_value(compute(plan, k, w)?);
            if let Some((_, values)) = slots.get_mut(pos) {
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
    }
    slots.retain(|(_, v)| !v.is_empty());
    Ok(slots)
}

/// A blind-index condition for your own query, from
/// [`Encryptor::index_condition`](crate::Encryptor::index_condition): its SQL
/// (the same condition `find_by` uses, over both slots of the index during
/// an index-key rotation), the values to bind to its placeholders, and the
/// re-check that drops the false positives of a truncated index after
/// decryption.
///
/// ```ignore
/// // $1 is the tenant; the condition's placeholders start at $2.
/// let cond = enc.index_condition::<User, Postgres>(Some("acme"), "email_idx", &[&["ada@x.com"]], 2).await?;
/// let n = cond.next_placeholder();
/// let sql = format!(
///     "SELECT {} FROM users WHERE tenant_id = $1 AND {} AND created_at > ${n}",
///     Encryptor::select_list::<User, Postgres>(),
///     cond.sql(),
/// );
/// let q = cond.bind_to(sqlx::query(&sql).bind("acme")).bind(since);
/// let mut users: Vec<User> = enc.fetch_all("acme", q, &pool).await?;
/// cond.retain_matches(&mut users); // drop the false positives
/// ```
///
/// Holds the normalized values looked up (plaintext), wiped on drop; its
/// `Debug` shows the SQL and the number of binds only.
pub struct IndexCondition<T> {
    sql: String,
    binds: Vec<Value>,
    /// `binds`, typed for [`IndexCondition::bind_to`].
    typed: Vec<BlindIndexValue>,
    next: usize,
    plan: IndexPlan,
    wanted: zeroize::Zeroizing<Vec<Vec<String>>>,
    _model: std::marker::PhantomData<fn() -> T>,
}

impl<T: Encrypted> IndexCondition<T> {
    pub(crate) fn new(
        sql: String,
        binds: Vec<Value>,
        next: usize,
        plan: IndexPlan,
        wanted: zeroize::Zeroizing<Vec<Vec<String>>>,
    ) -> Result<Self> {
        let typed = binds
            .iter()
            .map(|v| match v {
                Value::I64(i) => Ok(BlindIndexValue::Int(*i)),
                Value::Bytes(b) => Ok(BlindIndexValue::Bytes(b.clone())),
                other => Err(Error::InvalidInput {
                    reason: format!(
                        "blind index `{}`: an index value of type {}",
                        plan.def.name,
                        other.sql_type().as_str()
                    )
                    .into(),
                }),
            })
            .collect::<Result<_>>()?;
        Ok(IndexCondition {
            sql,
            binds,
            typed,
            next,
            plan,
            wanted,
            _model: std::marker::PhantomData,
        })
    }

    /// The condition, in parentheses: `("email_idx" IN ($2, $3))`, or
    /// `("email_idx" = $2 OR "email_idx_alt" = $3)` during an index-key
    /// rotation; `(1 = 0)` (no binds) when nothing can match (the tenant has
    /// no index key yet, or no values were given).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The values to bind to the condition's placeholders, in order (each a
    /// [`Value::I64`] or [`Value::Bytes`]).
    pub fn binds(&self) -> &[Value] {
        &self.binds
    }

    /// The number of the first placeholder after the condition's.
    pub fn next_placeholder(&self) -> usize {
        self.next
    }

    /// Binds [`binds`](Self::binds) to `query`, in order: call it where the
    /// condition's placeholders come in your statement.
    pub fn bind_to<'q, DB>(
        &self,
        mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        for v in &self.typed {
            query = match v {
                BlindIndexValue::Int(i) => query.bind(*i),
                BlindIndexValue::Bytes(b) => query.bind(b.clone()),
            };
        }
        query
    }

    /// Whether `row` (decrypted) really matches one of the values looked up:
    /// its covered fields, normalized as the index normalizes them, equal
    /// one of the values. False for a false positive of a truncated index.
    pub fn matches(&self, row: &T) -> bool {
        matches_wanted(&self.plan, &self.wanted, row)
    }

    /// Keeps the rows that really match (see [`matches`](Self::matches)),
    /// in their order.
    pub fn retain_matches(&self, rows: &mut Vec<T>) {
        rows.retain(|r| self.matches(r));
    }
}

impl<T> std::fmt::Debug for IndexCondition<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCondition")
            .field("sql", &self.sql)
            .field("binds", &self.binds.len())
            .field("index", &self.plan.def.name)
            .finish_non_exhaustive()
    }
}

/// The blind-index keys a batch writes under: per index, the global keys or
/// the keys of each tenant; one per written index-key version (two during a
/// rotation).
#[derive(Default)]
pub(crate) struct WriteKeys {
    global: HashMap<usize, Vec<BlindIndexKey>>,
    tenant: HashMap<usize, HashMap<String, Vec<BlindIndexKey>>>,
}

impl WriteKeys {
    /// Sets the keys of a global index.
    pub(crate) fn insert_global(&mut self, index: usize, keys: Vec<BlindIndexKey>) {
        self.global.insert(index, keys);
    }

    /// Sets the keys of a tenant-scoped index for one tenant.
    pub(crate) fn insert_tenant(&mut self, index: usize, tenant: &str, keys: Vec<BlindIndexKey>) {
        self.tenant
            .entry(index)
            .or_default()
            .insert(tenant.to_owned(), keys);
    }

    fn get(&self, index: usize, def: &IndexDef, tenant: &str) -> Option<&[BlindIndexKey]> {
        if def.global {
            self.global.get(&index).map(Vec::as_slice)
        } else {
            self.tenant.get(&index)?.get(tenant).map(Vec::as_slice)
        }
    }
}

/// Appends a row's index columns to `out`: per index, the main slot's value
/// and version, then the alternate slot's; a slot no written version uses is
/// NULL.
pub(crate) fn push_index_cells<T: Encrypted>(
    plans: &[IndexPlan],
    keys: &WriteKeys,
    row: &T,
    only: Option<&[usize]>,
    out: &mut Vec<Value>,
) -> Result<()> {
    for (i, plan) in plans.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let keys = keys.get(i, plan.def, &row.tenant()).ok_or(Error::Worker)?;
        let mut parts = row_parts(plan, row);
        for odd in [true, false] {
            match keys.iter().find(|k| (k.version() % 2 == 1) == odd) {
                None => {
                    out.push(null_for(plan.def));
                    out.push(Value::Null(SqlType::I64));
                }
                Some(key) => {
                    out.push(cell_value(plan, key, parts.as_deref())?);
                    out.push(Value::I64(i64::from(key.version())));
                }
            }
        }
        if let Some(p) = parts.as_mut() {
            zeroize_parts(p);
        }
    }
    Ok(())
}

/// The value a row stores under `key`: NULL when a covered field is NULL (the
/// version column is still set, so a re-index finds the rows still to do with
/// the version column alone).
pub(crate) fn cell_value(
    plan: &IndexPlan,
    key: &BlindIndexKey,
    parts: Option<&[String]>,
) -> Result<Value> {
    match parts {
        None => Ok(null_for(plan.def)),
        Some(parts) => Ok(to_value(compute(plan, key, parts)?)),
    }
}

/// Maps a unique-constraint failure on one of the model's unique indexes to
/// [`Error::UniqueViolation`]; other errors pass through. The database's
/// message (which may quote the stored index value) is dropped.
pub(crate) fn map_unique(model: &Model, e: Error) -> Error {
    let Some(sqlx::Error::Database(db)) = e.as_sqlx() else {
        return e;
    };
    if !db.is_unique_violation() {
        return e;
    }
    let table = model.table();
    let msg = db.message();
    let constraint = db.constraint().unwrap_or("");
    let unique: Vec<&IndexDef> = model.indexes.iter().filter(|i| i.unique).collect();
    // The longest match wins: `users_email` is inside `users_email_idx`.
    let by_name = unique
        .iter()
        .filter(|i| {
            let n = i.db_index_name(table);
            constraint == n || msg.contains(&n)
        })
        .max_by_key(|i| i.name.len());
    let by_column = || {
        unique
            .iter()
            .filter(|i| msg.contains(&format!("{table}.{}", i.column)))
            .max_by_key(|i| i.column.len())
    };
    match by_name.or_else(by_column) {
        Some(def) => Error::UniqueViolation {
            table: table.to_owned(),
            index: def.name.to_owned(),
            fields: def
                .fields
                .iter()
                .filter_map(|&f| model.fields.get(f).map(|f| f.name.to_owned()))
                .collect(),
        },
        None => e,
    }
}
