//! Blind-index lookups and backfill: [`Encryptor::find_by`], the index
//! values for your own queries, and [`Encryptor::reindex_batch`]. The index
//! values themselves are computed by the pure `crate::blind`.

use rowseal_core::BlindIndexValue;

use super::{push_tenant_condition, Encryptor};
use crate::backend::{Backend, DbRow};
use crate::blind::{
    cell_value, compute, index_plan, map_unique, normalize_query, plans, row_parts, scope_of,
    to_value, zeroize_parts,
};
use crate::error::{Error, Result};
use crate::model::{Encrypted, HEADER_COLUMN};
use crate::tenant_scope::TenantScope;
use crate::value::Value;

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
        push_tenant_condition::<A::Database>(model, &mut sql, 1);
        sql.push_str(" AND (");
        let mut binds = vec![model.tenant_value(tenant)?];
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
        let decrypted: Vec<T> = self.decrypt_all(tenant, &rows).await?;
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
        guarded.push(HEADER_COLUMN);
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
            n += 1;
            push_tenant_condition::<A::Database>(model, &mut sql, n);
            values.push(model.tenant_value(&row.tenant())?);
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

    /// The value a blind index of `T` stores for `parts` (one per covered
    /// field, in the index's order) in `tenant`, under the current index-key
    /// version: bind it in your own query against the index's column.
    ///
    /// ```ignore
    /// let v = enc.blind_index_value::<Patient>("email_idx", "acme", &["Ada@x.com"]).await?;
    /// let q = sqlx::query(&sql);
    /// let q = match v { BlindIndexValue::Int(i) => q.bind(i), BlindIndexValue::Bytes(b) => q.bind(b) };
    /// let rows: Vec<Patient> = enc.fetch_all("acme", q, &pool).await?;
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
        let plan = index_plan(model, index)?;
        let mut norm = normalize_query(&plan, parts)?;
        let scope = scope_of(plan.def, tenant);
        let ik = self.keys().current_index_key(&scope).await?;
        let bk = ik.blind_index_key(model.spec.record_type(), plan.def.name)?;
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
        let plan = index_plan(model, index)?;
        let mut norm = normalize_query(&plan, parts)?;
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
        let plan = index_plan(model, index)?;
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
        // The normalized values are plaintext: wiped on every way out,
        // errors included.
        let wanted: zeroize::Zeroizing<Vec<Vec<String>>> = zeroize::Zeroizing::new(
            values
                .iter()
                .map(|v| normalize_query(&plan, v))
                .collect::<Result<_>>()?,
        );
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
            for w in wanted.iter() {
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
            n += 1;
            push_tenant_condition::<E::Database>(model, &mut sql, n);
            sql.push_str(" AND ");
            binds.push(model.tenant_value(t)?);
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
        let scope = tenant.map_or(TenantScope::Any, TenantScope::One);
        let decrypted: Vec<T> = self.decrypt_all(scope, &rows).await?;
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
        Ok(out)
    }
}
