//! Blind-index lookups and backfill: [`Encryptor::find_by`], the index
//! values for your own queries, and [`Encryptor::reindex_batch`]. The index
//! values themselves are computed by the pure `crate::blind`.

use std::collections::HashSet;

use rowseal_core::{BlindIndexValue, KeysThrough};

use super::{push_tenant_condition, sqlx_col, Encryptor};
use crate::backend::{Backend, DbRow};
use crate::blind::{
    cell_value, compute, index_plan, lookup_slots, map_unique, matches_wanted, normalize_query,
    plans, row_parts, scope_of, zeroize_parts, IndexCondition, IndexPlan,
};
use crate::error::{Error, Result};
use crate::keystore::ConnKeyStore;
use crate::lookup_options::{push_after, push_filter, push_order_by, sort_keys, Lookup, SortKey};
use crate::model::{Encrypted, Model, ReadModel, HEADER_COLUMN};
use crate::telemetry::op;
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
        let op = op!(self, "reindex_batch", T::model().table(), Some(tenant));
        op.run(
            async move {
                let model = T::model();
                let plans = plans(model)?;
                if plans.is_empty() {
                    return Ok(0);
                }
                let mut conn = conn.acquire().await?;
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let keys = self.keys.through(&reads);
                // Per index: the target version's key.
                let mut targets = Vec::with_capacity(plans.len());
                for plan in &plans {
                    let scope = scope_of(plan.def, tenant);
                    let versions = keys.index_key_versions(&scope).await?;
                    let target = versions.pending.unwrap_or(versions.write);
                    targets.push(Self::blind_key(keys, model, plan.def, &scope, target).await?);
                }
                let versions: Vec<u32> = targets.iter().map(|k| k.version()).collect();
                let (sql, binds) =
                    Self::reindex_select_sql::<T, A::Database>(&plans, &versions, tenant, limit)?;
                let rows = <A::Database as Backend>::__fetch_all_on(
                    &mut **reads.lock().await,
                    &sql,
                    binds,
                )
                .await?;
                if rows.is_empty() {
                    return Ok(0);
                }
                let decrypted = self
                    .decrypt_scoped::<T, _>(keys, TenantScope::One(tenant), &rows)
                    .await?
                    .into_iter()
                    .collect::<Result<Vec<T>>>()?;
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
                        let idx = raw.column_index(c).ok_or_else(|| {
                            col_err(c, "the query did not select this column".into())
                        })?;
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
            },
            |n| *n,
        )
        .await
    }

    /// The batch `reindex_batch` reads: `SELECT <T's columns> FROM <table>
    /// WHERE <tenant> = ? AND (<target slot's version column> IS NULL OR
    /// <> ? OR ...) LIMIT <limit>`, one target version per plan.
    fn reindex_select_sql<T: Encrypted, DB: Backend>(
        plans: &[IndexPlan],
        versions: &[u32],
        tenant: &str,
        limit: usize,
    ) -> Result<(String, Vec<Value>)> {
        let model = T::model();
        let mut sql = String::from("SELECT ");
        sql.push_str(&Self::select_list::<T, DB>());
        sql.push_str(" FROM ");
        DB::push_ident(&mut sql, model.table());
        sql.push_str(" WHERE ");
        push_tenant_condition::<DB>(model, &mut sql, 1);
        sql.push_str(" AND (");
        let mut binds = vec![model.tenant_value(tenant)?];
        for (i, (plan, &version)) in plans.iter().zip(versions).enumerate() {
            let (_, kv) = plan.def.slot(version);
            if i > 0 {
                sql.push_str(" OR ");
            }
            DB::push_ident(&mut sql, kv);
            sql.push_str(" IS NULL OR ");
            DB::push_ident(&mut sql, kv);
            sql.push_str(" <> ");
            binds.push(Value::I64(i64::from(version)));
            DB::push_placeholder(&mut sql, binds.len());
        }
        sql.push_str(&format!(") LIMIT {}", limit.max(1)));
        Ok((sql, binds))
    }

    /// The statement and binds [`reindex_batch`](Self::reindex_batch) would
    /// read its next batch with, on `DB`, through this encryptor's key store
    /// (like `reindex_batch`, it creates index-key version 1 in a scope that
    /// has none). For tests that `EXPLAIN` it.
    #[doc(hidden)]
    pub async fn __reindex_batch_sql<T: Encrypted, DB: Backend>(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<(String, Vec<Value>)> {
        let model = T::model();
        let plans = plans(model)?;
        let keys = self.keys.through_own_store();
        let mut versions = Vec::with_capacity(plans.len());
        for plan in &plans {
            let v = keys.index_key_versions(&scope_of(plan.def, tenant)).await?;
            versions.push(v.pending.unwrap_or(v.write));
        }
        Self::reindex_select_sql::<T, DB>(&plans, &versions, tenant, limit)
    }

    /// The statement and binds [`find_by`](Self::find_by) runs for this
    /// lookup on `DB` (both slots during an index-key rotation; `None` if
    /// nothing can match, and `find_by` then runs nothing). For tests that
    /// `EXPLAIN` it.
    #[doc(hidden)]
    pub async fn __find_by_sql<T: Encrypted, DB: Backend>(
        &self,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
    ) -> Result<Option<(String, Vec<Value>)>> {
        let p = self
            .prepare_lookup(
                self.keys.through_own_store(),
                T::model(),
                tenant,
                index,
                values,
            )
            .await?;
        if p.slots.is_empty() {
            return Ok(None);
        }
        let mut binds = Vec::new();
        let mut n = 0;
        let sql = Self::candidates_sql::<T, DB>(&p, &mut n, &mut binds)?;
        Ok(Some((sql, binds)))
    }

    /// The statement of [`fetch`](Self::fetch) on `DB`, bound to the
    /// primary key, then the tenant: the one `fetch` runs, exposed for the
    /// tests that `EXPLAIN` it.
    #[doc(hidden)]
    pub fn __fetch_sql<T: ReadModel, DB: Backend>() -> String {
        let mut sql = String::from("SELECT ");
        sql.push_str(&Self::select_list::<T, DB>());
        sql.push_str(" FROM ");
        DB::push_ident(&mut sql, T::model().table());
        Self::where_pk::<T, DB>(&mut sql, 1);
        sql
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
        let op = op!(self, "blind_index_value", T::model().table(), Some(tenant));
        op.run(
            async move {
                let model = T::model();
                let plan = index_plan(model, index)?;
                let mut norm = normalize_query(&plan, parts)?;
                let scope = scope_of(plan.def, tenant);
                let ik = self.keys().current_index_key(&scope).await?;
                let bk = ik.blind_index_key(model.spec.record_type(), plan.def.name)?;
                let v = compute(&plan, &bk, &norm);
                zeroize_parts(&mut norm);
                v
            },
            |_| 0,
        )
        .await
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
        let op = op!(self, "blind_index_values", T::model().table(), Some(tenant));
        op.run(
            async move {
                let model = T::model();
                let plan = index_plan(model, index)?;
                let mut norm = normalize_query(&plan, parts)?;
                let scope = scope_of(plan.def, tenant);
                let mut out = Vec::new();
                let own = self.keys.through_own_store();
                for bk in Self::lookup_index_keys(own, model, plan.def, &scope).await? {
                    let v = (plan.def.slot(bk.version()).0, compute(&plan, &bk, &norm)?);
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                zeroize_parts(&mut norm);
                Ok(out)
            },
            |_| 0,
        )
        .await
    }

    /// Finds the rows of `T` whose blind index `index` matches any of
    /// `values` (each one value per covered field, in the index's order),
    /// decrypted, with false positives removed by re-checking the normalized
    /// decrypted fields.
    ///
    /// `tenant` is required for a tenant-scoped index; for a global index it
    /// is optional (`None` searches every tenant). The generated
    /// `T::find_by_<index>` and `T::find_by_<index>_in` call this. For a
    /// limit, an order or conditions of your own, see
    /// [`find_by_with`](Self::find_by_with).
    ///
    /// Takes an [`sqlx::Acquire`] (`&Pool`, `&mut connection`, `&mut
    /// transaction`): a key missing from the cache is read on that
    /// connection (see [`Encryptor`] on keys inside transactions).
    pub async fn find_by<'a, T, A>(
        &self,
        conn: A,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
    ) -> Result<Vec<T>>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "find_by", T::model().table(), tenant);
        op.run(
            async move {
                let model = T::model();
                let mut conn = conn.acquire().await?;
                let reads = ConnKeyStore::<A::Database>::new(&mut conn);
                let through = self.keys.through(&reads);
                let p = self
                    .prepare_lookup(through, model, tenant, index, values)
                    .await?;
                if p.slots.is_empty() {
                    return Ok(Vec::new());
                }
                let mut binds: Vec<Value> = Vec::new();
                let mut n = 0;
                let sql = Self::candidates_sql::<T, A::Database>(&p, &mut n, &mut binds)?;
                check_params::<A::Database>(&p, binds.len())?;
                let rows = <A::Database as Backend>::__fetch_all_on(
                    &mut **reads.lock().await,
                    &sql,
                    binds,
                )
                .await?;
                let decrypted = self.decrypt_owned::<T, _>(through, p.scope(), rows).await?;
                let decrypted = decrypted.into_iter().collect::<Result<Vec<T>>>()?;
                Ok(decrypted.into_iter().filter(|row| p.matches(row)).collect())
            },
            |v| v.len() as u64,
        )
        .await
    }

    /// [`find_by`](Self::find_by) with options: at most
    /// [`limit`](Lookup::limit) rows, all true matches (the candidates are
    /// read in pages until that many survive the false-positive check, see
    /// [`Lookup`] for the cost), in the [`order_by`](Lookup::order_by) order
    /// of plain columns, matching the [`filter`](Lookup::filter) conditions.
    /// A bad order column or condition is [`Error::InvalidInput`], whatever
    /// the data. The generated `T::find_by_<index>_with` calls this.
    ///
    /// Takes an [`sqlx::Acquire`] (`&Pool`, `&mut connection`, `&mut
    /// transaction`): a limited lookup may run several statements, on one
    /// connection.
    ///
    /// ```ignore
    /// let recent = enc
    ///     .find_by_with::<Patient, _>(&pool, Some("acme"), "email_idx", &[&["ada@x.com"]],
    ///         &Lookup::new().limit(10).order_by("visits", Order::Desc)
    ///             .filter("\"visits\" > {}", vec![Value::I64(2)]))
    ///     .await?;
    /// ```
    pub async fn find_by_with<'a, T, A>(
        &self,
        conn: A,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
        options: &Lookup,
    ) -> Result<Vec<T>>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "find_by_with", T::model().table(), tenant);
        op.run(
            async move {
                let mut out = Vec::new();
                let limit = options.limit;
                self.scan::<T, A, _>(conn, tenant, index, values, options, |row| {
                    out.push(row);
                    limit.is_none_or(|l| out.len() < l)
                })
                .await?;
                Ok(out)
            },
            |v| v.len() as u64,
        )
        .await
    }

    /// How many rows of `T` truly match `values` on the blind index `index`
    /// (`tenant` as for [`find_by`](Self::find_by)). Exact: false positives
    /// of a truncated index are not counted, which takes decrypting every
    /// candidate (read in pages of 1,024, so memory stays bounded; the cost
    /// grows with the candidates, false positives included, not with the
    /// count). The generated `T::count_by_<index>` calls this.
    pub async fn count_by<'a, T, A>(
        &self,
        conn: A,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
    ) -> Result<u64>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "count_by", T::model().table(), tenant);
        op.run(
            async move {
                let mut count = 0u64;
                let options = Lookup::new().page_size(COUNT_PAGE);
                self.scan::<T, A, _>(conn, tenant, index, values, &options, |_row| {
                    count += 1;
                    true
                })
                .await?;
                Ok(count)
            },
            |n| *n,
        )
        .await
    }

    /// Whether a row of `T` truly matches `values` on the blind index
    /// `index` (`tenant` as for [`find_by`](Self::find_by)). Exact: false
    /// positives are decrypted and dropped; it reads candidates in growing
    /// pages until the first true match (what `find_by_with` with
    /// `limit(1)` does). The generated `T::exists_by_<index>` calls this.
    pub async fn exists_by<'a, T, A>(
        &self,
        conn: A,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
    ) -> Result<bool>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
    {
        let op = op!(self, "exists_by", T::model().table(), tenant);
        op.run(
            async move {
                let mut found = false;
                let options = Lookup::new().limit(1);
                self.scan::<T, A, _>(conn, tenant, index, values, &options, |_row| {
                    found = true;
                    false
                })
                .await?;
                Ok(found)
            },
            |found| u64::from(*found),
        )
        .await
    }

    /// The blind-index condition `find_by` uses, for your own query on
    /// database `DB`: its placeholders numbered from `first_placeholder`
    /// (1-based; ignored on MySQL and SQLite, whose placeholders are `?`),
    /// the values to bind, and the re-check to drop false positives after
    /// decryption ([`IndexCondition::retain_matches`]). During an index-key
    /// rotation it covers both slots, exactly as `find_by`. `tenant` names
    /// the index key as for [`find_by`](Self::find_by) (required for a
    /// tenant-scoped index); the condition does not filter on the tenant:
    /// your query does (and decryption checks every row's tenant).
    pub async fn index_condition<T, DB>(
        &self,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
        first_placeholder: usize,
    ) -> Result<IndexCondition<T>>
    where
        T: Encrypted,
        DB: Backend,
    {
        let op = op!(self, "index_condition", T::model().table(), tenant);
        op.run(
            async move {
                if first_placeholder == 0 {
                    return Err(Error::InvalidInput {
                        reason: "placeholders are numbered from 1".into(),
                    });
                }
                let p = self
                    .prepare_lookup(
                        self.keys.through_own_store(),
                        T::model(),
                        tenant,
                        index,
                        values,
                    )
                    .await?;
                let mut n = first_placeholder - 1;
                let mut binds = Vec::new();
                let mut sql = String::new();
                push_slots_condition::<DB>(&mut sql, &p.slots, &mut n, &mut binds);
                if n > DB::MAX_PARAMS {
                    return Err(too_many::<DB>(&p, n));
                }
                IndexCondition::new(sql, binds, n + 1, p.plan, p.wanted)
            },
            |_| 0,
        )
        .await
    }

    /// What every lookup does first: the index's plan, the tenant check
    /// (required for a tenant-scoped index), the normalized values (wiped on
    /// drop), and the index values per slot under every queried index-key
    /// version (none without values or without an index key: nothing can
    /// match, and no key is created).
    async fn prepare_lookup<'t>(
        &self,
        through: KeysThrough<'_>,
        model: &'static Model,
        tenant: Option<&'t str>,
        index: &str,
        values: &[&[&str]],
    ) -> Result<Prepared<'t>> {
        let plan = index_plan(model, index)?;
        let empty = |plan, tenant| Prepared {
            plan,
            tenant,
            wanted: zeroize::Zeroizing::new(Vec::new()),
            slots: Vec::new(),
        };
        if values.is_empty() {
            return Ok(empty(plan, tenant));
        }
        let tenant = match (tenant, plan.def.global) {
            (Some(t), _) => Some(t),
            (None, true) => None,
            (None, false) => {
                return Err(Error::InvalidInput {
                    reason: format!(
                        "blind index `{}` is tenant-scoped: a lookup needs a tenant",
                        plan.def.name
                    )
                    .into(),
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
        let keys = Self::lookup_index_keys(through, model, plan.def, &scope).await?;
        let slots = lookup_slots(&plan, &keys, &wanted)?;
        Ok(Prepared {
            plan,
            tenant,
            wanted,
            slots,
        })
    }

    /// `SELECT <T's columns> FROM <table> WHERE [<tenant> = ? AND]
    /// (<index condition>)`, placeholders numbered after `n`.
    fn candidates_sql<T: Encrypted, DB: Backend>(
        p: &Prepared<'_>,
        n: &mut usize,
        binds: &mut Vec<Value>,
    ) -> Result<String> {
        let model = T::model();
        let mut sql = String::from("SELECT ");
        sql.push_str(&Self::select_list::<T, DB>());
        sql.push_str(" FROM ");
        DB::push_ident(&mut sql, model.table());
        sql.push_str(" WHERE ");
        if let Some(t) = p.tenant {
            *n += 1;
            push_tenant_condition::<DB>(model, &mut sql, *n);
            sql.push_str(" AND ");
            binds.push(model.tenant_value(t)?);
        }
        push_slots_condition::<DB>(&mut sql, &p.slots, n, binds);
        Ok(sql)
    }

    /// Runs a lookup with `options`, passing each true match, in order and
    /// once, to `on_match` until it returns false or the candidates run out.
    /// Paged (see [`Lookup`]) when the options limit or page it: ordered by
    /// the sort keys and the primary key, each page after the last candidate
    /// of the one before (keyset), `LIMIT page`.
    async fn scan<'a, T, A, F>(
        &self,
        conn: A,
        tenant: Option<&str>,
        index: &str,
        values: &[&[&str]],
        options: &Lookup,
        mut on_match: F,
    ) -> Result<()>
    where
        T: Encrypted,
        A: sqlx::Acquire<'a>,
        A::Database: Backend,
        F: FnMut(T) -> bool + Send,
    {
        let model = T::model();
        let paged = options.paged();
        // The options are checked before anything runs, whatever the data.
        let keys = sort_keys(model, options, paged || !options.order.is_empty())?;
        {
            let (mut sql, mut n, mut binds) = (String::new(), 0, Vec::new());
            for (fragment, fb) in &options.filters {
                push_filter::<A::Database>(&mut sql, fragment, fb, &mut n, &mut binds)?;
            }
        }
        let mut conn = conn.acquire().await?;
        let reads = ConnKeyStore::<A::Database>::new(&mut conn);
        let through = self.keys.through(&reads);
        let p = self
            .prepare_lookup(through, model, tenant, index, values)
            .await?;
        if p.slots.is_empty() || options.limit == Some(0) {
            return Ok(());
        }
        let mut binds: Vec<Value> = Vec::new();
        let mut n = 0;
        let mut base = Self::candidates_sql::<T, A::Database>(&p, &mut n, &mut binds)?;
        for (fragment, fb) in &options.filters {
            base.push_str(" AND (");
            push_filter::<A::Database>(&mut base, fragment, fb, &mut n, &mut binds)?;
            base.push(')');
        }
        let scope = p.scope();
        let mut page = match (options.page_size, options.limit) {
            (Some(size), _) => size,
            (None, Some(limit)) => limit.min(MAX_PAGE),
            (None, None) => usize::MAX,
        };
        let grow = options.page_size.is_none();
        let mut cursor: Option<Vec<Value>> = None;
        // Rows already passed on, by (tenant, primary key): a row moved by a
        // concurrent writer between two pages is not returned twice.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        loop {
            let mut sql = base.clone();
            let mut page_binds = binds.clone();
            let mut m = n;
            if let Some(c) = &cursor {
                push_after::<A::Database>(&mut sql, &keys, c, &mut m, &mut page_binds);
            }
            push_order_by::<A::Database>(&mut sql, &keys);
            if paged {
                sql.push_str(&format!(" LIMIT {page}"));
            }
            check_params::<A::Database>(&p, page_binds.len())?;
            let rows = <A::Database as Backend>::__fetch_all_on(
                &mut **reads.lock().await,
                &sql,
                page_binds,
            )
            .await?;
            let more = paged && rows.len() >= page;
            if more {
                cursor = match rows.last() {
                    Some(last) => Some(sort_values(model, &keys, last)?),
                    None => None,
                };
            }
            let decrypted = self.decrypt_owned::<T, _>(through, scope, rows).await?;
            let decrypted = decrypted.into_iter().collect::<Result<Vec<T>>>()?;
            for row in decrypted {
                if !p.matches(&row) {
                    continue;
                }
                if paged
                    && !seen.insert((
                        row.tenant().into_owned(),
                        row.primary_key_value().key_display(),
                    ))
                {
                    continue;
                }
                if !on_match(row) {
                    return Ok(());
                }
            }
            if !more || cursor.is_none() {
                return Ok(());
            }
            if grow {
                page = page.saturating_mul(2).min(MAX_PAGE);
            }
        }
    }
}

/// Candidates per page of [`Encryptor::count_by`].
const COUNT_PAGE: usize = 1024;
/// The largest page a limited lookup grows to.
const MAX_PAGE: usize = 4096;

/// A lookup ready to run (see `Encryptor::prepare_lookup`).
struct Prepared<'t> {
    plan: IndexPlan,
    /// `None`: a global index searched across every tenant.
    tenant: Option<&'t str>,
    /// The normalized values looked up: plaintext, wiped on drop.
    wanted: zeroize::Zeroizing<Vec<Vec<String>>>,
    /// Per value column, the index values to match; empty: nothing can match.
    slots: Vec<(&'static str, Vec<Value>)>,
}

impl Prepared<'_> {
    /// Whose rows the candidates may be.
    fn scope(&self) -> TenantScope<'_> {
        self.tenant.map_or(TenantScope::Any, TenantScope::One)
    }

    /// Whether a decrypted candidate truly matches.
    fn matches<T: Encrypted>(&self, row: &T) -> bool {
        matches_wanted(&self.plan, &self.wanted, row)
    }
}

/// Appends the index condition of `slots`, in parentheses:
/// `(<column> = $n)`, `(<column> IN ($n, ...))`, and with both slots
/// `(<column> IN (...) OR <alt column> IN (...))`; `(1 = 0)` without slots.
/// Placeholders are numbered after `n`; the values are pushed on `binds`.
fn push_slots_condition<DB: Backend>(
    sql: &mut String,
    slots: &[(&'static str, Vec<Value>)],
    n: &mut usize,
    binds: &mut Vec<Value>,
) {
    sql.push('(');
    if slots.is_empty() {
        sql.push_str("1 = 0");
    }
    for (s_i, (column, values)) in slots.iter().enumerate() {
        if s_i > 0 {
            sql.push_str(" OR ");
        }
        DB::push_ident(sql, column);
        if values.len() == 1 {
            sql.push_str(" = ");
            *n += 1;
            DB::push_placeholder(sql, *n);
        } else {
            sql.push_str(" IN (");
            for i in 0..values.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                *n += 1;
                DB::push_placeholder(sql, *n);
            }
            sql.push(')');
        }
        binds.extend(values.iter().cloned());
    }
    sql.push(')');
}

/// A statement of `binds` values must fit the database's limit.
fn check_params<DB: Backend>(p: &Prepared<'_>, binds: usize) -> Result<()> {
    if binds > DB::MAX_PARAMS {
        return Err(too_many::<DB>(p, binds));
    }
    Ok(())
}

fn too_many<DB: Backend>(p: &Prepared<'_>, binds: usize) -> Error {
    Error::InvalidInput {
        reason: format!(
            "a lookup on `{}` binds {binds} values, more than the {} one statement takes; split the values",
            p.plan.def.name,
            DB::MAX_PARAMS,
        ).into(),
    }
}

/// The sort keys' values of a candidate row: where the next page starts.
fn sort_values<R: DbRow>(model: &Model, keys: &[SortKey], row: &R) -> Result<Vec<Value>> {
    keys.iter()
        .map(|k| {
            let idx = row
                .column_index(k.field.column)
                .ok_or_else(|| Error::Schema {
                    table: model.table().to_owned(),
                    column: k.field.column.to_owned(),
                    reason: "the query did not select this column".into(),
                })?;
            row.read_value(idx, k.field.sql_type)
                .map_err(|e| sqlx_col(model, k.field.column, e))
        })
        .collect()
}
