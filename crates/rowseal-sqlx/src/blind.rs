//! Blind indexes: filling their columns on writes, typed lookups that remove
//! false positives, and index values for your own queries.
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

use std::collections::HashMap;

use rowseal_core::{BlindIndexKey, BlindIndexValue, IndexBits, KeyScope, Normalization};
use zeroize::Zeroize;

use crate::backend::{Backend, DbRow};
use crate::error::{Error, Result};
use crate::model::{Encrypted, IndexDef, Model};
use crate::ops::Encryptor;
use crate::value::{SqlType, Value};

/// One index ready to compute values.
pub(crate) struct IndexPlan {
    pub(crate) def: &'static IndexDef,
    /// One per covered field.
    pub(crate) norm: Vec<Normalization>,
    pub(crate) bits: IndexBits,
}

pub(crate) fn plans(model: &'static Model) -> Result<Vec<IndexPlan>> {
    model
        .indexes
        .iter()
        .map(|def| {
            Ok(IndexPlan {
                def,
                norm: def.part_normalizations()?,
                bits: IndexBits::new(def.bits)?,
            })
        })
        .collect()
}

fn scope_of(def: &IndexDef, tenant: &str) -> KeyScope {
    if def.global {
        KeyScope::Global
    } else {
        KeyScope::Tenant(tenant.to_owned())
    }
}

fn to_value(v: BlindIndexValue) -> Value {
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
fn compute(plan: &IndexPlan, key: &BlindIndexKey, parts: &[String]) -> Result<BlindIndexValue> {
    let mac = if let [one] = parts {
        key.compute(one.as_bytes())
    } else {
        let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        key.compute_compound(&slices)?
    };
    Ok(plan.bits.truncate(&mac))
}

/// Normalizes a row's covered fields; `None` if one of them is NULL.
fn row_parts<T: Encrypted>(plan: &IndexPlan, row: &T) -> Option<Vec<String>> {
    plan.def
        .fields
        .iter()
        .zip(&plan.norm)
        .map(|(&f, n)| row.index_part(f).map(|v| n.apply(&v)))
        .collect()
}

fn zeroize_parts(parts: &mut [String]) {
    for p in parts {
        p.zeroize();
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
        let keys = keys.get(i, plan.def, row.tenant()).ok_or(Error::Worker)?;
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
fn cell_value(plan: &IndexPlan, key: &BlindIndexKey, parts: Option<&[String]>) -> Result<Value> {
    match parts {
        None => Ok(null_for(plan.def)),
        Some(parts) => Ok(to_value(compute(plan, key, parts)?)),
    }
}

impl Encryptor {
    /// Backfills blind indexes: writes, for up to `limit` rows of `T` in
    /// `tenant`, the value of each index under its *target* index-key version
    /// where the row lacks it. The target is the scope's pending version
    /// during a rotation (see
    /// [`begin_index_key_rotation`](rowseal_core::KeyHierarchy::begin_index_key_rotation)),
    /// else its active version (rows written before the index existed).
    /// Returns the rows written; call until it returns 0.
    ///
    /// Only the target version's slot is written (the other slot, which
    /// lookups may still query, is left alone), and only if the row's key
    /// header and covered encrypted columns are unchanged since they were
    /// read, so a concurrent update is never overwritten with a stale index
    /// (such a row already has the value if its writer knew the target, and is
    /// otherwise picked up by a later batch). Rows are selected with
    /// `tenant = ? AND (<slot version column> IS NULL OR <> ? OR ...)`.
    pub async fn reindex_batch<'a, T, A>(&self, conn: A, tenant: &str, limit: usize) -> Result<u64>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let model = T::model();
        let plans = plans(model)?;
        if plans.is_empty() {
            return Ok(0);
        }
        // Per index: the target version's key.
        let mut targets = Vec::with_capacity(plans.len());
        for plan in &plans {
            let scope = scope_of(plan.def, tenant);
            let versions = self.keys().index_key_versions(&scope).await?;
            let target = versions.pending.unwrap_or(versions.write);
            targets.push(self.blind_key(model, plan.def, &scope, target).await?);
        }
        let mut sql = String::from("SELECT ");
        sql.push_str(&Self::select_list::<T, A::Database>());
        sql.push_str(" FROM ");
        A::Database::push_ident(&mut sql, model.table());
        sql.push_str(" WHERE ");
        A::Database::push_ident(&mut sql, model.tenant_field().column);
        sql.push_str(" = ");
        A::Database::push_placeholder(&mut sql, 1);
        sql.push_str(" AND (");
        let mut binds = vec![Value::Text(tenant.to_owned())];
        for (i, (plan, key)) in plans.iter().zip(&targets).enumerate() {
            let (_, kv) = plan.def.slot(key.version());
            if i > 0 {
                sql.push_str(" OR ");
            }
            A::Database::push_ident(&mut sql, kv);
            sql.push_str(" IS NULL OR ");
            A::Database::push_ident(&mut sql, kv);
            sql.push_str(" <> ");
            binds.push(Value::I64(i64::from(key.version())));
            A::Database::push_placeholder(&mut sql, binds.len());
        }
        sql.push_str(&format!(") LIMIT {}", limit.max(1)));
        let mut conn = conn.acquire().await?;
        let rows = <A::Database as Backend>::__fetch_all_on(&mut conn, &sql, binds).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let decrypted: Vec<T> = self.decrypt_all(&rows).await?;
        // The write is conditional on the covered encrypted columns and the
        // header being unchanged.
        let mut guarded: Vec<&'static str> = Vec::new();
        for plan in &plans {
            for &f in plan.def.fields {
                if let Some(fd) = model.fields.get(f) {
                    if fd.is_encrypted() && !guarded.contains(&fd.column) {
                        guarded.push(fd.column);
                    }
                }
            }
        }
        guarded.push(crate::model::HEADER_COLUMN);
        let table = model.table();
        let col_err = |c: &str, reason: String| Error::Schema {
            table: table.to_owned(),
            column: c.to_owned(),
            reason,
        };
        let mut done = 0;
        for (raw, row) in rows.iter().zip(&decrypted) {
            let mut values = Vec::with_capacity(plans.len() * 2 + guarded.len() + 2);
            let mut sql = String::from("UPDATE ");
            A::Database::push_ident(&mut sql, table);
            sql.push_str(" SET ");
            let mut n = 0;
            for (plan, key) in plans.iter().zip(&targets) {
                let mut parts = row_parts(plan, row);
                values.push(cell_value(plan, key, parts.as_deref())?);
                if let Some(p) = parts.as_mut() {
                    zeroize_parts(p);
                }
                values.push(Value::I64(i64::from(key.version())));
                let (vc, kc) = plan.def.slot(key.version());
                for c in [vc, kc] {
                    if n > 0 {
                        sql.push_str(", ");
                    }
                    n += 1;
                    A::Database::push_ident(&mut sql, c);
                    sql.push_str(" = ");
                    A::Database::push_placeholder(&mut sql, n);
                }
            }
            sql.push_str(" WHERE ");
            A::Database::push_ident(&mut sql, model.primary_key_field().column);
            sql.push_str(" = ");
            n += 1;
            A::Database::push_placeholder(&mut sql, n);
            values.push(row.primary_key_value());
            sql.push_str(" AND ");
            A::Database::push_ident(&mut sql, model.tenant_field().column);
            sql.push_str(" = ");
            n += 1;
            A::Database::push_placeholder(&mut sql, n);
            values.push(Value::Text(row.tenant().to_owned()));
            for c in &guarded {
                let idx = raw
                    .column_index(c)
                    .ok_or_else(|| col_err(c, "the query did not select this column".into()))?;
                let cell = raw
                    .read_opt_bytes(idx)
                    .map_err(|e| col_err(c, e.to_string()))?;
                sql.push_str(" AND ");
                A::Database::push_ident(&mut sql, c);
                match cell {
                    Some(b) => {
                        sql.push_str(" = ");
                        n += 1;
                        A::Database::push_placeholder(&mut sql, n);
                        values.push(Value::Bytes(b.to_vec()));
                    }
                    None => sql.push_str(" IS NULL"),
                }
            }
            done += <A::Database as Backend>::execute_on(&mut conn, &sql, values)
                .await
                .map_err(|e| map_unique(model, e))?;
        }
        Ok(done)
    }
}

/// Maps a unique-constraint failure on one of the model's unique indexes to
/// [`Error::UniqueViolation`]; other errors pass through. The database's
/// message (which may quote the stored index value) is dropped.
pub(crate) fn map_unique(model: &Model, e: Error) -> Error {
    let Error::Sqlx(sqlx::Error::Database(db)) = &e else {
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

impl Encryptor {
    /// The blind-index keys of every written index-key version, for every
    /// index (or only those in `only`) and scope the rows need.
    pub(crate) async fn write_index_keys<'r, T: Encrypted>(
        &self,
        plans: &[IndexPlan],
        rows: impl Iterator<Item = &'r T>,
        only: Option<&[usize]>,
    ) -> Result<WriteKeys> {
        let mut out = WriteKeys::default();
        if plans.is_empty() {
            return Ok(out);
        }
        let model = T::model();
        let tenants: std::collections::HashSet<&str> = rows.map(|r| r.tenant()).collect();
        for (i, plan) in plans.iter().enumerate() {
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            if plan.def.global {
                let keys = self
                    .written_keys(model, plan.def, &KeyScope::Global)
                    .await?;
                out.global.insert(i, keys);
            } else {
                let per = out.tenant.entry(i).or_default();
                for t in &tenants {
                    let scope = KeyScope::Tenant((*t).to_owned());
                    per.insert(
                        (*t).to_owned(),
                        self.written_keys(model, plan.def, &scope).await?,
                    );
                }
            }
        }
        Ok(out)
    }

    async fn written_keys(
        &self,
        model: &'static Model,
        def: &'static IndexDef,
        scope: &KeyScope,
    ) -> Result<Vec<BlindIndexKey>> {
        let versions = self.keys().index_key_versions(scope).await?;
        let mut keys = Vec::with_capacity(2);
        for v in versions.written() {
            keys.push(self.blind_key(model, def, scope, v).await?);
        }
        Ok(keys)
    }

    /// The blind-index key of one index and index-key version, derived once.
    async fn blind_key(
        &self,
        model: &'static Model,
        def: &'static IndexDef,
        scope: &KeyScope,
        version: u32,
    ) -> Result<BlindIndexKey> {
        let cache_key = (scope.clone(), model.table(), def.name, version);
        if let Some(k) = self.cached_blind_key(&cache_key) {
            return Ok(k);
        }
        let k = self
            .keys()
            .index_key(scope, version)
            .await?
            .blind_index_key(model.table(), def.column, def.name)?;
        self.cache_blind_key(cache_key, k.clone());
        Ok(k)
    }

    /// The blind-index keys lookups query for `scope` (the written versions,
    /// then older active ones); empty if the scope never had an index key (no
    /// key is created: a lookup with an unknown tenant stays read-only).
    async fn lookup_index_keys(
        &self,
        model: &'static Model,
        def: &'static IndexDef,
        scope: &KeyScope,
    ) -> Result<Vec<BlindIndexKey>> {
        let Some(versions) = self.keys().lookup_index_key_versions(scope).await? else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::with_capacity(2);
        for v in versions.queried() {
            keys.push(self.blind_key(model, def, scope, v).await?);
        }
        Ok(keys)
    }

    fn index_plan(model: &'static Model, index: &str) -> Result<IndexPlan> {
        let def = model.index(index).ok_or_else(|| Error::InvalidInput {
            reason: format!("{} has no blind index `{index}`", model.table()),
        })?;
        Ok(IndexPlan {
            def,
            norm: def.part_normalizations()?,
            bits: IndexBits::new(def.bits)?,
        })
    }

    fn normalize_query(plan: &IndexPlan, parts: &[&str]) -> Result<Vec<String>> {
        if parts.len() != plan.def.fields.len() {
            return Err(Error::InvalidInput {
                reason: format!(
                    "blind index `{}` covers {} field(s), {} value(s) given",
                    plan.def.name,
                    plan.def.fields.len(),
                    parts.len()
                ),
            });
        }
        Ok(parts
            .iter()
            .zip(&plan.norm)
            .map(|(p, n)| n.apply(p))
            .collect())
    }

    /// The value a blind index of `T` stores for `parts` (one per covered
    /// field, in the index's order) in `tenant`, under the current index-key
    /// version: bind it in your own query against the index's column.
    ///
    /// ```ignore
    /// let v = enc.blind_index_value::<Patient>("email_idx", "acme", &["Ada@x.com"]).await?;
    /// let q = sqlx::query(&sql);
    /// let q = match v { BlindIndexValue::Int(i) => q.bind(i), BlindIndexValue::Bytes(b) => q.bind(b) };
    /// let rows: Vec<Patient> = enc.fetch_all(q, &pool).await?;
    /// // Then re-check the decrypted field: truncated indexes have false positives.
    /// ```
    /// During an index-key rotation use
    /// [`blind_index_values`](Self::blind_index_values) instead, which returns
    /// one value per version in use. For a global index `tenant` is ignored.
    pub async fn blind_index_value<T: Encrypted>(
        &self,
        index: &str,
        tenant: &str,
        parts: &[&str],
    ) -> Result<BlindIndexValue> {
        let model = T::model();
        let plan = Self::index_plan(model, index)?;
        let mut norm = Self::normalize_query(&plan, parts)?;
        let scope = scope_of(plan.def, tenant);
        let ik = self.keys().current_index_key(&scope).await?;
        let bk = ik.blind_index_key(model.table(), plan.def.column, plan.def.name)?;
        let v = compute(&plan, &bk, &norm);
        zeroize_parts(&mut norm);
        v
    }

    /// Like [`blind_index_value`](Self::blind_index_value), one value per
    /// index-key version lookups must query, with the column to match it
    /// against (more than one only during an index-key rotation): match each
    /// value against its column, e.g. `(email_idx IN (...) OR email_idx_alt IN
    /// (...))`.
    pub async fn blind_index_values<T: Encrypted>(
        &self,
        index: &str,
        tenant: &str,
        parts: &[&str],
    ) -> Result<Vec<(&'static str, BlindIndexValue)>> {
        let model = T::model();
        let plan = Self::index_plan(model, index)?;
        let mut norm = Self::normalize_query(&plan, parts)?;
        let scope = scope_of(plan.def, tenant);
        let mut out = Vec::new();
        for bk in self.lookup_index_keys(model, plan.def, &scope).await? {
            let v = (plan.def.slot(bk.version()).0, compute(&plan, &bk, &norm)?);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        zeroize_parts(&mut norm);
        Ok(out)
    }

    /// Finds the rows of `T` whose blind index `index` matches any of
    /// `values` (each one value per covered field, in the index's order),
    /// decrypted, with false positives removed by re-checking the normalized
    /// decrypted fields.
    ///
    /// `tenant` is required for a tenant-scoped index; for a global index it
    /// is optional (`None` searches every tenant). The generated
    /// `T::find_by_<index>` and `T::find_by_<index>_in` call this.
    pub async fn find_by<'c, T, E>(
        &self,
        executor: E,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
    ) -> Result<Vec<T>>
    where
        T: Encrypted,
        E: sqlx::Executor<'c>,
        E::Database: Backend,
    {
        let model = T::model();
        let plan = Self::index_plan(model, index)?;
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = match (tenant, plan.def.global) {
            (Some(t), _) => Some(t),
            (None, true) => None,
            (None, false) => {
                return Err(Error::InvalidInput {
                    reason: format!(
                        "blind index `{}` is tenant-scoped: a lookup needs a tenant",
                        plan.def.name
                    ),
                })
            }
        };
        let mut wanted: Vec<Vec<String>> = values
            .iter()
            .map(|v| Self::normalize_query(&plan, v))
            .collect::<Result<_>>()?;
        let scope = scope_of(plan.def, tenant.unwrap_or(""));
        let keys = self.lookup_index_keys(model, plan.def, &scope).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Values per slot: the main slot holds odd versions, the alternate
        // slot even ones; a slot no queried version uses is not searched.
        let mut slots: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(2);
        for k in &keys {
            let column = plan.def.slot(k.version()).0;
            let pos = match slots.iter().position(|(c, _)| *c == column) {
                Some(p) => p,
                None => {
                    slots.push((column, Vec::new()));
                    slots.len() - 1
                }
            };
            for w in &wanted {
                let v = to_value(compute(&plan, k, w)?);
                if !slots[pos].1.contains(&v) {
                    slots[pos].1.push(v);
                }
            }
        }
        let total: usize = slots.iter().map(|(_, v)| v.len()).sum();
        let max = <E::Database as Backend>::MAX_PARAMS.saturating_sub(1);
        if total > max {
            return Err(Error::InvalidInput {
                reason: format!(
                    "a lookup on `{}` binds {total} index values, more than the {max} one statement takes; split the values",
                    plan.def.name,
                ),
            });
        }
        let mut binds: Vec<Value> = Vec::with_capacity(total + 1);
        let mut sql = String::from("SELECT ");
        sql.push_str(&Self::select_list::<T, E::Database>());
        sql.push_str(" FROM ");
        E::Database::push_ident(&mut sql, model.table());
        sql.push_str(" WHERE ");
        let mut n = 0;
        if let Some(t) = tenant {
            E::Database::push_ident(&mut sql, model.tenant_field().column);
            sql.push_str(" = ");
            n += 1;
            E::Database::push_placeholder(&mut sql, n);
            sql.push_str(" AND ");
            binds.push(Value::Text(t.to_owned()));
        }
        let grouped = slots.len() > 1;
        if grouped {
            sql.push('(');
        }
        for (s_i, (column, values)) in slots.into_iter().enumerate() {
            if s_i > 0 {
                sql.push_str(" OR ");
            }
            E::Database::push_ident(&mut sql, column);
            if values.len() == 1 {
                sql.push_str(" = ");
                n += 1;
                E::Database::push_placeholder(&mut sql, n);
            } else {
                sql.push_str(" IN (");
                for i in 0..values.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    n += 1;
                    E::Database::push_placeholder(&mut sql, n);
                }
                sql.push(')');
            }
            binds.extend(values);
        }
        if grouped {
            sql.push(')');
        }
        let rows = <E::Database as Backend>::fetch_all(executor, &sql, binds).await?;
        let decrypted: Vec<T> = self.decrypt_all(&rows).await?;
        let out = decrypted
            .into_iter()
            .filter(|row| match row_parts(&plan, row) {
                Some(mut parts) => {
                    let hit = wanted.contains(&parts);
                    zeroize_parts(&mut parts);
                    hit
                }
                None => false,
            })
            .collect();
        for w in &mut wanted {
            zeroize_parts(w);
        }
        Ok(out)
    }
}
