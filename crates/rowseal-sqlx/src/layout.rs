//! Rules of the stored layout that the derived model ([`crate::Model`]) and
//! the schema registry ([`crate::schema::TableSchema`]) share, written once:
//! which slot holds an index-key version, whose key an index uses, and how a
//! primary key is bound into ciphertexts.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Whose index key a blind index uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum IndexScope {
    /// One index key per tenant (the default): equal values in two tenants
    /// give unrelated index values.
    Tenant,
    /// One index key for all tenants (lookups before the tenant is known).
    Global,
}

impl IndexScope {
    /// `"tenant"` or `"global"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexScope::Tenant => "tenant",
            IndexScope::Global => "global",
        }
    }
}

/// Which of a blind index's two slots holds the values of an index-key
/// version: odd versions the main slot, even ones the alternate slot, so that
/// during a rotation the old and the new version are both stored. The one
/// place this rule is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexSlot {
    /// `column` / `version_column`: odd index-key versions.
    Main,
    /// `alt_column` / `alt_version_column`: even index-key versions.
    Alternate,
}

impl IndexSlot {
    /// The slot of index-key `version`.
    pub const fn of(version: u32) -> IndexSlot {
        if version % 2 == 1 {
            IndexSlot::Main
        } else {
            IndexSlot::Alternate
        }
    }

    /// Whether this slot holds values of `version`.
    pub const fn holds(self, version: u32) -> bool {
        matches!(
            (self, IndexSlot::of(version)),
            (IndexSlot::Main, IndexSlot::Main) | (IndexSlot::Alternate, IndexSlot::Alternate)
        )
    }
}

/// The one rule for binding a primary key into ciphertexts: nothing unless
/// the model binds it, else [`Value::key_bytes`].
pub(crate) fn bound_primary_key(binds: bool, pk: &Value) -> rowseal_core::Result<Option<Vec<u8>>> {
    if !binds {
        return Ok(None);
    }
    pk.key_bytes()
        .map(Some)
        .ok_or(rowseal_core::Error::InvalidInput {
            reason: "the primary key has a type that cannot be bound".into(),
        })
}
