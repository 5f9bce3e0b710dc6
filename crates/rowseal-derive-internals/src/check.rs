//! Checks across attributes and fields: how a field's attributes combine,
//! reserved and duplicate columns, the tenant and primary-key fields, and
//! clashes between blind indexes. Each reports into the context and goes on.

use quote::ToTokens;
use syn::Ident;

use crate::ast::{Field, Index};
use crate::attr::FieldAttrs;
use crate::ctxt::Ctxt;

/// Column names rowseal uses for itself (`rowseal_sqlx::HEADER_COLUMN` and
/// `KEY_VERSION_COLUMN`, which this crate cannot name: rowseal-sqlx depends
/// on the derive).
const RESERVED_COLUMNS: [&str; 2] = ["rowseal_header", "rowseal_key_version"];

/// `encrypt`, `json`, `blind_index` and `plaintext_column` on one field.
pub(crate) fn field_attrs(cx: &mut Ctxt, attrs: &FieldAttrs) {
    if !attrs.encrypt {
        for i in &attrs.indexes {
            cx.error_at(
                i.span,
                "`blind_index` needs `encrypt`: a plain field is queried directly",
            );
        }
    } else if attrs.json.is_some() {
        for i in &attrs.indexes {
            cx.error_at(i.span, "a `json` field cannot have a blind index");
        }
    }
    if let Some(p) = &attrs.plaintext_column {
        if !attrs.encrypt {
            cx.error(
                p,
                "`plaintext_column` needs `encrypt`: it names the legacy plaintext column an encrypted field migrates from",
            );
        } else if attrs.json.is_some() {
            cx.error(
                p,
                "`plaintext_column` is not supported on a `json` field (the legacy column would need the application's JSON type)",
            );
        }
    }
    if let (Some(d), None) = (&attrs.database, &attrs.sql_type) {
        cx.error(
            d,
            "`database` goes with `sql_type`: it names the one database a `sql_type` field's type exists on",
        );
    }
    if let (Some(t), true) = (&attrs.sql_type, attrs.encrypt) {
        cx.error(
            t,
            "`sql_type` is for plain columns of any sqlx type; an encrypted field is stored as bytes (drop `sql_type`, or `encrypt`)",
        );
    }
    if let (Some(t), Some(_)) = (&attrs.sql_type, &attrs.generated) {
        cx.error(
            t,
            "a `sql_type` field cannot be `generated` (yet): insert_returning reads generated columns as rowseal's own types",
        );
    }
    if let (Some((span, _)), true) = (&attrs.generated, attrs.encrypt) {
        cx.error_at(
            *span,
            "a `generated` field cannot be encrypted: the database writes it, so rowseal never sees a value to seal",
        );
    }
    if let (Some(span), false) = (attrs.json, attrs.encrypt) {
        cx.error_at(
            span,
            "`json` needs `encrypt`: plain fields are stored as they are",
        );
    }
}

/// A field of a partial view: `encrypt`, `json` and `sql_type` say how its
/// model stores it (checked against the model at compile time); the rest
/// comes from the model.
pub(crate) fn partial_field_attrs(cx: &mut Ctxt, attrs: &FieldAttrs) {
    let mut refuse = |span: proc_macro2::Span, what: &str| {
        cx.error_at(
            span,
            format!("a partial view takes `{what}` from its model: declare the field as the model names it, with `encrypt`, `json`, `sql_type` and `database` as the model has them"),
        );
    };
    if let Some(c) = &attrs.column {
        refuse(c.span(), "column");
    }
    if let Some(n) = &attrs.name {
        refuse(n.span(), "name");
    }
    if let Some(p) = &attrs.plaintext_column {
        refuse(p.span(), "plaintext_column");
    }
    if let Some((span, _)) = &attrs.generated {
        refuse(*span, "generated");
    }
    for i in &attrs.indexes {
        refuse(i.span, "blind_index");
    }
}

/// The derive does not support generic structs.
pub(crate) fn not_generic(cx: &mut Ctxt, input: &syn::DeriveInput) {
    if !input.generics.params.is_empty() {
        cx.error(
            &input.generics,
            "#[derive(Encrypted)] does not support generic structs",
        );
    }
}

/// A field's column must not be one rowseal uses; `span` is its `column`
/// attribute or, without one, the field name.
pub(crate) fn column_not_reserved(cx: &mut Ctxt, span: impl ToTokens, column: &str) {
    if RESERVED_COLUMNS.contains(&column) {
        cx.error(
            span,
            format!("column name `{column}` is reserved by rowseal"),
        );
    }
}

/// No two fields share a column, and each `plaintext_column` is a column of
/// its own.
pub(crate) fn columns(cx: &mut Ctxt, fields: &[Field<'_>]) {
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].iter().any(|g| g.column == f.column) {
            cx.error(
                &f.ident,
                format!("two fields use the column `{}`", f.column),
            );
        }
    }
    for (i, f) in fields.iter().enumerate() {
        let Some(p) = &f.attrs.plaintext_column else {
            continue;
        };
        let pv = p.value();
        if pv == f.column {
            cx.error(
                p,
                format!("`plaintext_column` must differ from the field's encrypted column `{}`: set `column = \"...\"` for the ciphertext", f.column),
            );
        } else if fields.iter().any(|g| g.column == pv)
            || RESERVED_COLUMNS.contains(&pv.as_str())
            || fields[..i].iter().any(|g| {
                g.attrs
                    .plaintext_column
                    .as_ref()
                    .is_some_and(|q| q.value() == pv)
            })
        {
            cx.error(
                p,
                format!(
                    "the plaintext column `{pv}` is already used by another field or by rowseal"
                ),
            );
        }
    }
}

/// The tenant and primary-key fields (`which`, named by `id`) stay in the
/// clear.
pub(crate) fn key_field_in_clear(cx: &mut Ctxt, which: &str, id: &Ident, field: &Field<'_>) {
    if field.attrs.encrypt {
        cx.error(
            id,
            format!("the {which} field `{id}` cannot be encrypted: rowseal needs it in the clear to find and key the row"),
        );
    }
}

/// What `primary_key = ...` names: one key field, or `(tenant, key)`, the
/// tenant first. Returns the key field and whether the tenant is part of the
/// table's primary key. Any other shape is an error: rowseal binds one key
/// field into ciphertexts, and scans a table in its primary key's order, which
/// for a composite key must lead with the tenant so that the tool's keyset
/// pages (tenant, key) use the primary-key index.
pub(crate) fn primary_key_shape<'a>(
    cx: &mut Ctxt,
    written: Option<&'a (Vec<Ident>, proc_macro2::Span)>,
    tenant: Option<&Ident>,
) -> (Option<&'a Ident>, bool) {
    let Some((names, span)) = written else {
        return (None, false);
    };
    match names.as_slice() {
        // Unreadable, already reported.
        [] => (None, false),
        [key] => (Some(key), false),
        [first, key] if tenant == Some(first) => (Some(key), true),
        [first, second] if tenant == Some(second) => {
            cx.error_at(
                *span,
                format!("put the tenant first: `primary_key = ({second}, {first})`; a composite key leads with the tenant so that each tenant's rows are together in the primary-key index, the order lookups and the rowseal tool page in"),
            );
            (Some(first), true)
        }
        _ => {
            let tenant = tenant.map_or_else(|| "tenant_id".to_owned(), Ident::to_string);
            cx.error_at(
                *span,
                format!("a composite primary key is the tenant and one key field: `primary_key = ({tenant}, id)`; rowseal binds one key field into the ciphertexts and pages by (tenant, key)"),
            );
            (None, false)
        }
    }
}

/// The tenant and the primary key are two fields (`primary_key` names the
/// latter, for the span).
pub(crate) fn distinct_key_fields(
    cx: &mut Ctxt,
    tenant: Option<usize>,
    primary_key: Option<usize>,
    primary_key_id: Option<&Ident>,
) {
    if let (Some(t), Some(p)) = (tenant, primary_key) {
        if t == p {
            if let Some(id) = primary_key_id {
                cx.error(
                    id,
                    "the tenant and the primary key must be different fields",
                );
            }
        }
    }
}

/// `sql_type` fields: never the tenant or the primary key, never under a
/// blind index. Generated fields (the database fills them): never the tenant, never a
/// primary key bound into the ciphertexts (it does not exist before the row
/// is sealed), never covered by a blind index (computed on write from the
/// struct's value).
pub(crate) fn generated_fields(
    cx: &mut Ctxt,
    fields: &[Field<'_>],
    tenant: Option<usize>,
    primary_key: Option<usize>,
    bind_primary_key: bool,
    tenant_in_primary_key: bool,
    indexes: &[Index],
) {
    for (i, f) in fields.iter().enumerate() {
        if let Some(t) = &f.attrs.sql_type {
            if tenant == Some(i) || primary_key == Some(i) {
                cx.error(
                    t,
                    "the tenant and the primary key are rowseal's own types (`TenantField`, `PrimaryKeyField`), not `sql_type` fields",
                );
            }
            for ix in indexes.iter().filter(|ix| ix.fields.contains(&i)) {
                cx.error_at(
                    ix.span,
                    format!(
                        "blind index `{}` covers `{}`, a `sql_type` field: an index covers text and integers only",
                        ix.name, f.ident
                    ),
                );
            }
        }
        let Some((span, _)) = &f.attrs.generated else {
            continue;
        };
        if tenant == Some(i) {
            cx.error_at(
                *span,
                "the tenant cannot be `generated`: it keys the row's encryption, so it must be known before the row is written",
            );
        }
        if primary_key == Some(i) && bind_primary_key {
            cx.error_at(
                *span,
                "a `generated` primary key cannot be bound into the ciphertexts (`bind_primary_key`): the database assigns it after the row is sealed; drop `bind_primary_key`, or let the application choose the key",
            );
        }
        if primary_key == Some(i) && tenant_in_primary_key {
            cx.error_at(
                *span,
                "a `generated` key cannot be part of a composite primary key `(tenant, key)`: SQLite generates only a lone `INTEGER PRIMARY KEY` and MariaDB's AUTO_INCREMENT needs an index of its own; let the application choose the key (a UUID v7), or make the generated key the primary key alone",
            );
        }
        for ix in indexes.iter().filter(|ix| ix.fields.contains(&i)) {
            cx.error_at(
                ix.span,
                format!(
                    "blind index `{}` covers `{}`, which is `generated`: an index is computed from the value written, and rowseal never writes a generated field",
                    ix.name, f.ident
                ),
            );
        }
    }
}

/// Index names, columns and finder names are unique, and an index's columns
/// clash with no field's and none of rowseal's.
pub(crate) fn indexes(cx: &mut Ctxt, indexes: &[Index], fields: &[Field<'_>]) {
    for (i, ix) in indexes.iter().enumerate() {
        let earlier = &indexes[..i];
        if earlier.iter().any(|o| o.name == ix.name) {
            cx.error_at(
                ix.span,
                format!("two blind indexes are named `{}`", ix.name),
            );
        }
        for c in &ix.columns() {
            if fields.iter().any(|f| f.column == *c)
                || RESERVED_COLUMNS.contains(&c.as_str())
                || earlier.iter().any(|o| o.columns().contains(c))
            {
                cx.error_at(
                    ix.span,
                    format!("the blind index column `{c}` clashes with another column; set `column = \"...\"`"),
                );
            }
        }
        if earlier.iter().any(|o| o.stem() == ix.stem()) {
            cx.error_at(
                ix.span,
                format!(
                    "two blind indexes would both generate `find_by_{}`",
                    ix.stem()
                ),
            );
        }
    }
}
