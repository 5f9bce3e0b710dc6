//! The model a derive works on once its attributes are parsed and resolved:
//! the struct ([`Container`]), its fields with their columns ([`Field`]) and
//! its blind indexes with every default filled in ([`Index`]).
//!
//! Building it reports what cannot be resolved (a missing required
//! attribute, a field name that does not exist) and runs the checks of
//! `check` at the point where what they look at is known, so that mistakes
//! are reported in the order of the source.

use proc_macro2::Span;
use syn::{Ident, LitStr};

use crate::attr::{ContainerAttrs, FieldAttrs, IndexAttrs};
use crate::ctxt::Ctxt;

/// A struct that derives `Encrypted`, resolved.
pub(crate) struct Container<'a> {
    pub(crate) ident: &'a Ident,
    /// The struct's visibility, which its sealed row type shares.
    pub(crate) vis: &'a syn::Visibility,
    pub(crate) table: String,
    /// `record_type` (required: it is bound into every ciphertext, so it
    /// must not follow the struct's name).
    pub(crate) record_type: String,
    /// `key_mode = "kms"`.
    pub(crate) kms: bool,
    pub(crate) bind_primary_key: bool,
    /// `crate = "..."` (the default is looked up when the code is generated).
    pub(crate) krate: Option<syn::Path>,
    pub(crate) fields: Vec<Field<'a>>,
    /// Position of the tenant field in `fields`.
    pub(crate) tenant: usize,
    /// Position of the primary-key field in `fields`.
    pub(crate) primary_key: usize,
    /// `primary_key = (tenant, key)`: the table's primary key is the tenant
    /// and `primary_key`, in that order.
    pub(crate) tenant_in_primary_key: bool,
    /// Field indexes first (in field order), then compound ones.
    pub(crate) indexes: Vec<Index>,
}

/// A partial view (`#[rowseal(partial_of = Model)]`): some of a model's
/// fields, read and decrypted without the others; everything else comes
/// from the model at run time.
pub(crate) struct Partial<'a> {
    pub(crate) ident: &'a Ident,
    /// The model it is a view of.
    pub(crate) of: syn::Path,
    pub(crate) krate: Option<syn::Path>,
    pub(crate) fields: Vec<Field<'a>>,
}

/// A named field.
pub(crate) struct Field<'a> {
    pub(crate) ident: Ident,
    pub(crate) ty: &'a syn::Type,
    pub(crate) attrs: FieldAttrs,
    /// `column`, or the field name.
    pub(crate) column: String,
    /// The logical name: `name`, or the field name. Stable across renames of
    /// the Rust field and of its column.
    pub(crate) logical: String,
}

/// How a field is stored.
pub(crate) enum Storage<'f> {
    /// In the clear, as its own SQL type.
    Plain,
    /// In the clear, any type sqlx encodes (`sql_type = "..."`), in a column
    /// of that SQL type; of one database only with `database = "..."`.
    Passthrough {
        sql: &'f LitStr,
        database: Option<&'f LitStr>,
    },
    /// Encrypted as its `EncryptedField` type; with the legacy plaintext
    /// column it migrates from, if any.
    Encrypted {
        plaintext_column: Option<&'f LitStr>,
    },
    /// Encrypted as JSON (`json`); `nullable` for an `Option<T>` field.
    Json { nullable: bool },
}

impl Field<'_> {
    /// How the field is stored, from its attributes and type.
    pub(crate) fn storage(&self) -> Storage<'_> {
        if !self.attrs.encrypt {
            match &self.attrs.sql_type {
                Some(sql) => Storage::Passthrough {
                    sql,
                    database: self.attrs.database.as_ref(),
                },
                None => Storage::Plain,
            }
        } else if self.attrs.json.is_some() {
            Storage::Json {
                nullable: option_inner(self.ty).is_some(),
            }
        } else {
            Storage::Encrypted {
                plaintext_column: self.attrs.plaintext_column.as_ref(),
            }
        }
    }
}

/// Whether `ty` is an `Option<...>` (by its last path segment).
pub(crate) fn is_option(ty: &syn::Type) -> bool {
    option_inner(ty).is_some()
}

/// `Option<Inner>` → `Some(Inner)`, recognised by its last path segment.
fn option_inner(ty: &syn::Type) -> Option<&syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let seg = p.path.segments.last()?;
    if seg.ident != "Option" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(t)) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

/// A blind index after validation.
pub(crate) struct Index {
    /// The `blind_index` / `compound_index` path, for errors.
    pub(crate) span: Span,
    pub(crate) name: String,
    pub(crate) column: String,
    /// Positions in `Container::fields`.
    pub(crate) fields: Vec<usize>,
    pub(crate) bits: u16,
    pub(crate) normalize: String,
    /// Per field, its steps; empty when no field has its own.
    pub(crate) part_normalize: Vec<String>,
    pub(crate) normalize_with: Option<syn::Path>,
    pub(crate) global: bool,
    pub(crate) unique: bool,
}

impl Index {
    /// Every index of the struct, defaults filled in: the fields' own
    /// `blind_index`es first, then the `compound_index`es, whose field names
    /// are resolved here. An index without a name (already reported) or with
    /// an unresolved field is left out.
    pub(crate) fn resolve(
        cx: &mut Ctxt,
        attrs: &ContainerAttrs,
        fields: &[Field<'_>],
    ) -> Vec<Index> {
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            for ia in &f.attrs.indexes {
                out.extend(Index::new(ia, vec![i]));
            }
        }
        for ia in &attrs.compound {
            let mut positions = Vec::new();
            for id in &ia.fields {
                match fields.iter().position(|f| f.ident == *id) {
                    Some(p) => {
                        if fields[p].attrs.json.is_some() {
                            cx.error(id, format!("the `json` field `{id}` cannot be in an index"));
                        }
                        if positions.contains(&p) {
                            cx.error(id, format!("`{id}` is listed twice"));
                        }
                        positions.push(p);
                    }
                    None => cx.error(id, format!("no field named `{id}` for this compound index")),
                }
            }
            if ia.fields.len() >= 2 && positions.len() == ia.fields.len() {
                out.extend(Index::new(ia, positions));
            }
        }
        out
    }

    /// The index over the fields at `positions`; `None` without a name.
    fn new(ia: &IndexAttrs, positions: Vec<usize>) -> Option<Index> {
        let name = ia.name.as_ref()?;
        let column = ia
            .column
            .as_ref()
            .map(|c| c.value())
            .unwrap_or_else(|| name.value());
        let shared = ia.normalize.as_ref().map(|n| n.value()).unwrap_or_default();
        let bits = ia
            .bits
            .as_ref()
            .and_then(|b| b.base10_parse::<u16>().ok())
            .unwrap_or(32);
        Some(Index {
            span: ia.span,
            name: name.value(),
            column,
            fields: positions,
            bits,
            normalize: shared.clone(),
            part_normalize: if ia.part_normalize.iter().any(Option::is_some) {
                ia.part_normalize
                    .iter()
                    .map(|p| {
                        p.as_ref()
                            .map(|v| v.value())
                            .unwrap_or_else(|| shared.clone())
                    })
                    .collect()
            } else {
                Vec::new()
            },
            normalize_with: ia.normalize_with.clone(),
            global: ia.global,
            unique: ia.unique,
        })
    }

    /// The name without a trailing `_idx` or `_index`: what its finders are
    /// called after.
    pub(crate) fn stem(&self) -> &str {
        stem(&self.name)
    }

    /// See [`index_columns`].
    pub(crate) fn columns(&self) -> [String; 4] {
        index_columns(&self.column)
    }
}

/// The four columns of a blind index stored in `column`: value and version of
/// the main slot (odd index-key versions) and of the alternate slot (even).
fn index_columns(column: &str) -> [String; 4] {
    [
        column.to_owned(),
        format!("{column}_kv"),
        format!("{column}_alt"),
        format!("{column}_alt_kv"),
    ]
}

/// `email_idx` → `email`.
fn stem(name: &str) -> &str {
    let s = name
        .strip_suffix("_idx")
        .or_else(|| name.strip_suffix("_index"))
        .unwrap_or(name);
    if s.is_empty() {
        name
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(stem("email_idx"), "email");
        assert_eq!(stem("ssn_index"), "ssn");
        assert_eq!(stem("login"), "login");
        assert_eq!(stem("_idx"), "_idx");
    }
}
