//! Blind-index checks for `verify`: recompute each index value of a row from
//! its decrypted (or plain) covered fields under the index-key version stored
//! beside the value, and compare with the stored value.
//!
//! Everything comes from the schema registry: covered columns, bits, scope,
//! built-in normalization steps, and one check per slot (value column,
//! version column) of the index. An index whose normalization includes
//! the application's own Rust function (`normalize_with`) cannot be
//! recomputed without the application's code: it is reported as not checked.

use std::collections::HashMap;
use std::sync::Arc;

use rowseal_core::{
    BlindIndexKey, BlindIndexValue, IndexBits, KeyHierarchy, KeyScope, Normalization,
};
use rowseal_sqlx::schema::{IndexScope, IndexSlot};
use rowseal_sqlx::{DbRow, SqlType, Value};
use zeroize::Zeroizing;

use crate::registry::TableDef;

/// Where one covered part comes from.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// An encrypted column: its position among the table's encrypted columns.
    Encrypted(usize),
    /// A plain column: its position in the selected row, and its type.
    Plain(usize, SqlType),
}

/// One slot of an index: where its value and version are in the selected row.
#[derive(Debug, Clone)]
struct Slot {
    slot: IndexSlot,
    column: String,
    version_column: String,
    value_at: usize,
    version_at: usize,
}

/// One checkable index.
struct Plan {
    name: String,
    global: bool,
    bits: IndexBits,
    parts: Vec<Part>,
    norms: Vec<Normalization>,
    slots: Vec<Slot>,
}

/// Per-index counts, reported by `verify`.
#[derive(Debug, Default, Clone)]
pub struct IndexStats {
    /// Slot values recomputed and compared.
    pub checked: u64,
    /// Rows with no index value yet (no slot has an index-key version:
    /// written before the index existed; `reindex` fills them).
    pub not_indexed: u64,
    /// Mismatches and unusable values.
    pub failures: u64,
}

/// An index that is not checked, and why.
#[derive(Debug, Clone)]
pub struct NotChecked {
    /// Index name.
    pub index: String,
    /// Why (no values).
    pub reason: String,
}

/// A failed index check of one row (no value in it).
#[derive(Debug, Clone)]
pub struct IndexFailure {
    /// Index name.
    pub index: String,
    /// The value column of the failing slot.
    pub column: String,
    /// What is wrong.
    pub error: String,
}

/// The index checks of one table.
pub struct TableIndexes {
    plans: Vec<Plan>,
    /// Columns to select after the table's usual select list.
    pub extra_columns: Vec<String>,
    /// Indexes that are not checked.
    pub not_checked: Vec<NotChecked>,
    /// Counts per index name (checked indexes only), in registry order.
    pub stats: Vec<(String, IndexStats)>,
    /// Which encrypted columns (positions) some checked index covers.
    pub covered_encrypted: Vec<bool>,
    keys: HashMap<(usize, String, u32), Result<BlindIndexKey, String>>,
    /// What blind-index keys are derived for, with each index's name.
    record_type: String,
}

impl TableIndexes {
    /// Plans the checks of `def`; `first_extra` is the position of the first
    /// extra column in the selected row.
    pub fn new(def: &TableDef, first_extra: usize) -> Self {
        let enc = def.encrypted_columns();
        let mut extra: Vec<String> = Vec::new();
        let mut plans = Vec::new();
        let mut not_checked = Vec::new();
        let mut covered_encrypted = vec![false; enc.len()];
        let extra_at = |extra: &mut Vec<String>, col: &str| -> usize {
            match extra.iter().position(|c| c == col) {
                Some(i) => first_extra + i,
                None => {
                    extra.push(col.to_owned());
                    first_extra + extra.len() - 1
                }
            }
        };
        for idx in &def.blind_indexes {
            let skip = |reason: &str| NotChecked {
                index: idx.name.clone(),
                reason: reason.to_owned(),
            };
            if idx.custom_normalizer {
                not_checked.push(skip(
                    "its normalization includes the application's own function (normalize_with), which verify cannot run",
                ));
                continue;
            }
            let Ok(bits) = IndexBits::new(idx.bits) else {
                not_checked.push(skip("the registry entry has an invalid number of bits"));
                continue;
            };
            let norms: Result<Vec<Normalization>, _> = idx
                .part_steps()
                .iter()
                .map(|s| Normalization::parse(s))
                .collect();
            let Ok(norms) = norms else {
                not_checked.push(skip(
                    "its normalization names a step this rowseal does not know",
                ));
                continue;
            };
            let mut parts = Vec::new();
            let mut unsupported = None;
            for col in &idx.columns {
                let Some(field) = def.fields.iter().find(|f| &f.column == col) else {
                    unsupported = Some("a covered column is not a field of the registry entry");
                    break;
                };
                if let Some(encoding) = field.encoding {
                    let supported = encoding.is_indexable();
                    match (supported, enc.iter().position(|c| c == col)) {
                        (true, Some(p)) => parts.push(Part::Encrypted(p)),
                        _ => {
                            unsupported =
                                Some("a covered encrypted field has a type verify cannot index");
                            break;
                        }
                    }
                } else if field.sql_type.is_indexable() {
                    parts.push(Part::Plain(extra_at(&mut extra, col), field.sql_type));
                } else {
                    unsupported = Some("a covered plain column has a type verify cannot index");
                    break;
                }
            }
            if let Some(reason) = unsupported {
                not_checked.push(skip(reason));
                continue;
            }
            for p in &parts {
                if let Part::Encrypted(i) = p {
                    covered_encrypted[*i] = true;
                }
            }
            let slots = idx
                .slots()
                .into_iter()
                .map(|(slot, column, version_column)| Slot {
                    slot,
                    value_at: extra_at(&mut extra, column),
                    version_at: extra_at(&mut extra, version_column),
                    column: column.to_owned(),
                    version_column: version_column.to_owned(),
                })
                .collect();
            plans.push(Plan {
                name: idx.name.clone(),
                global: idx.scope == IndexScope::Global,
                bits,
                parts,
                norms,
                slots,
            });
        }
        let stats = plans
            .iter()
            .map(|p| (p.name.clone(), IndexStats::default()))
            .collect();
        TableIndexes {
            plans,
            extra_columns: extra,
            not_checked,
            stats,
            covered_encrypted,
            keys: HashMap::new(),
            record_type: def.record_type.clone(),
        }
    }

    /// Whether any index of the table is checked.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// Checks every index of one row. `plain[i]` is the decrypted value of
    /// encrypted column `i` when an index covers it (`None` for NULL);
    /// `opened` is false when a covered column could not be decrypted (the
    /// row's indexes over it are then not checked: the row already failed).
    pub async fn check_row<R: DbRow>(
        &mut self,
        hierarchy: &Arc<KeyHierarchy>,
        tenant: &str,
        row: &R,
        plain: &[Option<Zeroizing<Vec<u8>>>],
        opened: &[bool],
    ) -> Vec<IndexFailure> {
        let mut out = Vec::new();
        for pi in 0..self.plans.len() {
            let plan = &self.plans[pi];
            if plan.parts.iter().any(
                |p| matches!(p, Part::Encrypted(i) if !opened.get(*i).copied().unwrap_or(false)),
            ) {
                continue;
            }
            let name = plan.name.clone();
            let fail = |column: &str, error: &str| IndexFailure {
                index: name.clone(),
                column: column.to_owned(),
                error: error.to_owned(),
            };
            let first_column = plan
                .slots
                .first()
                .map(|s| s.column.clone())
                .unwrap_or_default();
            // The normalized parts (None: a covered field is NULL).
            let parts = match normalized_parts(plan, row, plain) {
                Ok(p) => p,
                Err(e) => {
                    out.push(fail(&first_column, e));
                    self.stats[pi].1.failures += 1;
                    continue;
                }
            };
            let scope = if plan.global { "" } else { tenant }.to_owned();
            let bits = plan.bits;
            let slots = plan.slots.clone();
            let mut any_version = false;
            for slot in &slots {
                let version = match row.read_value(slot.version_at, SqlType::I64) {
                    Ok(Value::I64(v)) => Some(v),
                    Ok(Value::I32(v)) => Some(i64::from(v)),
                    Ok(Value::Null(_)) => None,
                    _ => {
                        out.push(fail(&slot.column, "the index version is not an integer"));
                        self.stats[pi].1.failures += 1;
                        continue;
                    }
                };
                let stored = read_index_value(row, slot.value_at, bits);
                let stored = match stored {
                    Ok(v) => v,
                    Err(e) => {
                        out.push(fail(&slot.column, e));
                        self.stats[pi].1.failures += 1;
                        continue;
                    }
                };
                let Some(version) = version else {
                    if stored.is_some() {
                        out.push(fail(
                            &slot.column,
                            "an index value without an index-key version",
                        ));
                        self.stats[pi].1.failures += 1;
                    }
                    continue;
                };
                any_version = true;
                let Ok(version) = u32::try_from(version) else {
                    out.push(fail(&slot.column, "the index version is out of range"));
                    self.stats[pi].1.failures += 1;
                    continue;
                };
                if !slot.slot.holds(version) {
                    out.push(fail(
                        &slot.column,
                        "the index version is in the wrong slot (odd versions belong in the main slot, even ones in the alternate)",
                    ));
                    self.stats[pi].1.failures += 1;
                    continue;
                }
                let key = match self.key(hierarchy, pi, &scope, version).await {
                    Ok(k) => k,
                    Err(e) => {
                        out.push(fail(&slot.column, &e));
                        self.stats[pi].1.failures += 1;
                        continue;
                    }
                };
                let expected = match &parts {
                    None => None,
                    Some(ps) => match compute(&key, bits, ps) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            out.push(fail(&slot.column, &e));
                            self.stats[pi].1.failures += 1;
                            continue;
                        }
                    },
                };
                self.stats[pi].1.checked += 1;
                if expected != stored {
                    let what = match (&expected, &stored) {
                        (Some(_), None) => "the index value is missing",
                        (None, Some(_)) => "an index value for a NULL field",
                        _ => "the index value does not match the decrypted field(s)",
                    };
                    out.push(fail(&slot.column, what));
                    self.stats[pi].1.failures += 1;
                }
            }
            if !any_version {
                self.stats[pi].1.not_indexed += 1;
            }
        }
        out
    }

    /// `reindex`: the slot writes that give one row its value of every index
    /// under the target index-key version of the index's scope
    /// (`target(global)`), skipping indexes whose target slot already holds
    /// that version. `Err` (no value in it) when a covered part cannot be
    /// indexed or the key is unavailable.
    #[allow(clippy::too_many_arguments)]
    pub async fn reindex_writes<R: DbRow>(
        &mut self,
        hierarchy: &Arc<KeyHierarchy>,
        tenant: &str,
        row: &R,
        plain: &[Option<Zeroizing<Vec<u8>>>],
        target: impl Fn(bool) -> u32,
    ) -> Result<Vec<SlotWrite>, String> {
        let mut out = Vec::new();
        for pi in 0..self.plans.len() {
            let plan = &self.plans[pi];
            let version = target(plan.global);
            let slot = plan
                .slots
                .iter()
                .find(|s| s.slot.holds(version))
                .cloned()
                .ok_or_else(|| {
                    format!("blind index {}: no slot for version {version}", plan.name)
                })?;
            match row.read_value(slot.version_at, SqlType::I64) {
                Ok(Value::I64(v)) if v == i64::from(version) => continue,
                _ => {}
            }
            let parts = normalized_parts(plan, row, plain)
                .map_err(|e| format!("blind index {}: {e}", plan.name))?;
            let (bits, global) = (plan.bits, plan.global);
            let scope = if global { "" } else { tenant }.to_owned();
            let key = self.key(hierarchy, pi, &scope, version).await?;
            let value = parts
                .as_ref()
                .map(|ps| compute(&key, bits, ps))
                .transpose()?;
            let value = match value {
                Some(v) => Value::from(v),
                None if bits.get() > 64 => Value::Null(SqlType::Bytes),
                None => Value::Null(SqlType::I64),
            };
            out.push(SlotWrite {
                column: slot.column.clone(),
                version_column: slot.version_column.clone(),
                value,
                version,
            });
        }
        Ok(out)
    }

    /// Whether some checked index is global / tenant-scoped.
    pub fn scopes(&self) -> (bool, bool) {
        (
            self.plans.iter().any(|p| p.global),
            self.plans.iter().any(|p| !p.global),
        )
    }

    /// The (value column, version column) pairs the target version `target`
    /// of each index lives in, for selecting the rows still to do.
    pub fn target_slots(&self, target: impl Fn(bool) -> u32) -> Vec<(String, u32)> {
        self.plans
            .iter()
            .filter_map(|p| {
                let v = target(p.global);
                p.slots
                    .iter()
                    .find(|s| s.slot.holds(v))
                    .map(|s| (s.version_column.clone(), v))
            })
            .collect()
    }

    async fn key(
        &mut self,
        hierarchy: &Arc<KeyHierarchy>,
        plan: usize,
        scope: &str,
        version: u32,
    ) -> Result<BlindIndexKey, String> {
        let cache_key = (plan, scope.to_owned(), version);
        if let Some(k) = self.keys.get(&cache_key) {
            return k.clone();
        }
        let p = &self.plans[plan];
        let key_scope = if p.global {
            KeyScope::Global
        } else {
            KeyScope::Tenant(scope.to_owned())
        };
        let k = match hierarchy.index_key(&key_scope, version).await {
            Ok(ik) => ik
                .blind_index_key(&self.record_type, &p.name)
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("index key v{version} not available: {e}")),
        };
        self.keys.insert(cache_key, k.clone());
        k
    }
}

/// One slot to write during `reindex`. No `Debug`: the value is an index
/// value (it reveals equality only, but is never printed).
pub struct SlotWrite {
    /// Value column.
    pub column: String,
    /// Version column.
    pub version_column: String,
    /// The value to bind (NULL of the index's storage type when a covered
    /// field is NULL).
    pub value: Value,
    /// The index-key version.
    pub version: u32,
}

/// The normalized parts of one index for one row (`None`: a covered field is
/// NULL).
fn normalized_parts<R: DbRow>(
    plan: &Plan,
    row: &R,
    plain: &[Option<Zeroizing<Vec<u8>>>],
) -> Result<Option<Vec<Zeroizing<String>>>, &'static str> {
    let mut parts: Option<Vec<Zeroizing<String>>> = Some(Vec::new());
    for (part, norm) in plan.parts.iter().zip(&plan.norms) {
        let text = match *part {
            Part::Encrypted(i) => match plain.get(i).and_then(Option::as_ref) {
                None => None,
                Some(bytes) => Some(index_text(bytes)?),
            },
            Part::Plain(at, t) => plain_text(row, at, t)?,
        };
        match (text, parts.as_mut()) {
            (Some(t), Some(ps)) => ps.push(Zeroizing::new(norm.apply(&t))),
            (None, _) => parts = None,
            (Some(_), None) => {}
        }
    }
    Ok(parts)
}

fn compute(
    key: &BlindIndexKey,
    bits: IndexBits,
    parts: &[Zeroizing<String>],
) -> Result<BlindIndexValue, String> {
    let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    key.parts_value(&slices, bits).map_err(|e| e.to_string())
}

/// The stored value of a slot (`None`: NULL).
fn read_index_value<R: DbRow>(
    row: &R,
    at: usize,
    bits: IndexBits,
) -> Result<Option<BlindIndexValue>, &'static str> {
    if bits.get() <= 64 {
        match row.read_value(at, SqlType::I64) {
            Ok(Value::I64(v)) => Ok(Some(BlindIndexValue::Int(v))),
            Ok(Value::Null(_)) => Ok(None),
            _ => Err("the index value is not an integer"),
        }
    } else {
        match row.read_value(at, SqlType::Bytes) {
            Ok(Value::Bytes(b)) => Ok(Some(BlindIndexValue::Bytes(b))),
            Ok(Value::Null(_)) => Ok(None),
            _ => Err("the index value is not bytes"),
        }
    }
}

/// The text a decrypted value is indexed as, through rowseal-sqlx's value
/// codec (the same `IndexSource` rules the application uses). Shared by
/// `verify`, `reindex` and `encrypt-column`.
pub(super) fn index_text(bytes: &[u8]) -> Result<Zeroizing<String>, &'static str> {
    let value = rowseal_sqlx::encoding::decode(bytes)?;
    value
        .index_text()
        .map(|t| Zeroizing::new(t.into_owned()))
        .ok_or("the decrypted value has a type a blind index cannot cover")
}

/// A plain covered column as indexed text (`None`: NULL).
fn plain_text<R: DbRow>(
    row: &R,
    at: usize,
    t: SqlType,
) -> Result<Option<Zeroizing<String>>, &'static str> {
    let v = row
        .read_value(at, t)
        .or_else(|_| row.read_value(at, SqlType::I64))
        .map_err(|_| "a covered plain column has an unexpected type")?;
    let text = v
        .index_text()
        .map_err(|_| "a covered plain column has an unexpected type")?;
    Ok(text.map(|t| Zeroizing::new(t.into_owned())))
}

#[cfg(test)]
mod tests {
    use super::index_text;

    #[test]
    fn decoded_values_index_like_the_library() {
        let enc = |tag: u8, p: &[u8]| {
            let mut v = vec![1, tag];
            v.extend_from_slice(p);
            v
        };
        assert_eq!(*index_text(&enc(1, b"Ada")).unwrap(), "Ada");
        assert_eq!(
            *index_text(&enc(7, &(-42i64).to_be_bytes())).unwrap(),
            "-42"
        );
        assert_eq!(*index_text(&enc(6, &7i32.to_be_bytes())).unwrap(), "7");
        assert_eq!(*index_text(&enc(5, &(-3i16).to_be_bytes())).unwrap(), "-3");
        assert_eq!(
            *index_text(&enc(12, &u64::MAX.to_be_bytes())).unwrap(),
            u64::MAX.to_string()
        );
        assert!(index_text(&enc(7, &[1, 2])).is_err());
        assert!(index_text(&enc(2, b"raw")).is_err());
        assert!(index_text(&[2, 1, b'a']).is_err());
        assert!(index_text(&[1]).is_err());
    }
}
