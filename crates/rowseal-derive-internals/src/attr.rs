//! Parsing of the `#[rowseal(...)]` attributes: on the struct
//! ([`ContainerAttrs`]), on a field ([`FieldAttrs`]) and of one
//! `blind_index(...)` / `compound_index(...)` ([`IndexAttrs`]).
//!
//! Each value is checked on its own here (a plain SQL name, bits in range,
//! known normalization steps, no attribute given twice); checks across
//! attributes and fields are in `check`.

use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Ident, LitStr, Token};

use crate::ctxt::Ctxt;

const CONTAINER_ATTRS: &str = "table, record_type, tenant, primary_key, key_mode, bind_primary_key, crate, compound_index, partial_of";
const FIELD_ATTRS: &str =
    "encrypt, name, column, json, blind_index, plaintext_column, generated, sql_type, database";
const INDEX_ATTRS: &str = "name, bits, normalize, normalize_with, scope, unique, column";
const COMPOUND_ATTRS: &str = "name, fields, bits, normalize, normalize_with, scope, unique, column";

/// The attributes on the struct.
#[derive(Default)]
pub(crate) struct ContainerAttrs {
    pub(crate) table: Option<LitStr>,
    pub(crate) record_type: Option<LitStr>,
    pub(crate) tenant: Option<Ident>,
    /// `primary_key = id`, or `primary_key = (tenant_id, id)`: the fields
    /// named, in order, and the span of what was written.
    pub(crate) primary_key: Option<(Vec<Ident>, Span)>,
    /// The literal and whether it says `"kms"`.
    pub(crate) key_mode: Option<(LitStr, bool)>,
    pub(crate) bind_primary_key: bool,
    pub(crate) krate: Option<syn::Path>,
    pub(crate) compound: Vec<IndexAttrs>,
    /// `partial_of = Model`: a read-only view of some of `Model`'s fields.
    pub(crate) partial_of: Option<syn::Path>,
    /// Where `bind_primary_key` was written (a partial view refuses it).
    pub(crate) bind_primary_key_span: Option<Span>,
}

/// The attributes on one field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub(crate) encrypt: bool,
    pub(crate) json: Option<Span>,
    /// The field's logical name (`name = "..."`).
    pub(crate) name: Option<LitStr>,
    pub(crate) column: Option<LitStr>,
    pub(crate) plaintext_column: Option<LitStr>,
    /// `generated` (the database fills the column), with its SQL default
    /// if given (`generated = "..."`).
    pub(crate) generated: Option<(Span, Option<LitStr>)>,
    /// `sql_type = "..."`: a plain column of any type sqlx encodes, of this
    /// SQL type.
    pub(crate) sql_type: Option<LitStr>,
    /// `database = "postgres"` (with `sql_type`): a type only that database
    /// has.
    pub(crate) database: Option<LitStr>,
    pub(crate) indexes: Vec<IndexAttrs>,
}

/// One `blind_index(...)` or `compound_index(...)`.
pub(crate) struct IndexAttrs {
    pub(crate) span: Span,
    pub(crate) name: Option<LitStr>,
    pub(crate) bits: Option<syn::LitInt>,
    pub(crate) normalize: Option<LitStr>,
    pub(crate) normalize_with: Option<syn::Path>,
    pub(crate) global: bool,
    pub(crate) unique: bool,
    pub(crate) column: Option<LitStr>,
    pub(crate) fields: Vec<Ident>,
    /// Per compound field, its own `= "steps"`.
    pub(crate) part_normalize: Vec<Option<LitStr>>,
}

impl ContainerAttrs {
    /// Parses every `#[rowseal(...)]` on the struct.
    pub(crate) fn from_ast(cx: &mut Ctxt, input: &syn::DeriveInput) -> Self {
        let mut out = ContainerAttrs::default();
        each_rowseal_meta(cx, &input.attrs, |cx, meta| {
            let span = meta.path.span();
            match key(meta).as_str() {
                "table" => parse_lit_str(meta).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(&v, "table must be a plain SQL name (letters, digits, _)");
                    }
                    set_once(cx, &mut out.table, v, span, "table")
                }),
                "record_type" => parse_lit_str(meta).map(|v| {
                    if v.value().is_empty() {
                        cx.error(&v, "record_type must not be empty");
                    }
                    set_once(cx, &mut out.record_type, v, span, "record_type")
                }),
                "tenant" => parse_ident_value(meta)
                    .map(|v| set_once(cx, &mut out.tenant, v, span, "tenant")),
                "primary_key" => match parse_key_fields(meta) {
                    Ok(v) => {
                        set_once(cx, &mut out.primary_key, v, span, "primary_key");
                        Ok(())
                    }
                    // Written but unreadable: reported once, here, not
                    // again as missing.
                    Err(e) => {
                        out.primary_key.get_or_insert((Vec::new(), span));
                        Err(e)
                    }
                },
                "key_mode" => parse_lit_str(meta).map(|v| {
                    let kms = match v.value().as_str() {
                        "derived" => false,
                        "kms" => true,
                        _ => {
                            cx.error(&v, "key_mode must be \"derived\" or \"kms\"");
                            false
                        }
                    };
                    set_once(cx, &mut out.key_mode, (v, kms), span, "key_mode")
                }),
                "bind_primary_key" => {
                    if out.bind_primary_key {
                        cx.error_at(span, "duplicate rowseal attribute `bind_primary_key`");
                    }
                    out.bind_primary_key = true;
                    out.bind_primary_key_span = Some(span);
                    Ok(())
                }
                "partial_of" => meta
                    .value()
                    .and_then(|v| v.parse::<syn::Path>())
                    .map(|p| set_once(cx, &mut out.partial_of, p, span, "partial_of")),
                "crate" => parse_lit_str(meta).and_then(|v| {
                    let p: syn::Path = v.parse()?;
                    set_once(cx, &mut out.krate, p, span, "crate");
                    Ok(())
                }),
                "compound_index" => IndexAttrs::parse(cx, meta, true).map(|i| out.compound.push(i)),
                _ => unknown(
                    cx,
                    meta,
                    "rowseal attribute",
                    " on a struct",
                    CONTAINER_ATTRS,
                ),
            }
        });
        out
    }
}

impl FieldAttrs {
    /// Parses every `#[rowseal(...)]` on one field, then checks how they
    /// combine.
    pub(crate) fn from_ast(cx: &mut Ctxt, field: &syn::Field) -> Self {
        let mut out = FieldAttrs::default();
        each_rowseal_meta(cx, &field.attrs, |cx, meta| {
            let span = meta.path.span();
            match key(meta).as_str() {
                "encrypt" => {
                    if out.encrypt {
                        cx.error_at(span, "duplicate rowseal attribute `encrypt`");
                    }
                    out.encrypt = true;
                    Ok(())
                }
                "json" => {
                    if out.json.is_some() {
                        cx.error_at(span, "duplicate rowseal attribute `json`");
                    }
                    out.json = Some(span);
                    Ok(())
                }
                "column" => parse_lit_str(meta).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(&v, "column must be a plain SQL name (letters, digits, _)");
                    }
                    set_once(cx, &mut out.column, v, span, "column")
                }),
                "name" => parse_lit_str(meta).map(|v| {
                    if v.value().is_empty() {
                        cx.error(&v, "name must not be empty");
                    }
                    set_once(cx, &mut out.name, v, span, "name")
                }),
                "blind_index" => IndexAttrs::parse(cx, meta, false).map(|i| out.indexes.push(i)),
                "plaintext_column" => parse_lit_str(meta).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(
                            &v,
                            "plaintext_column must be a plain SQL name (letters, digits, _)",
                        );
                    }
                    set_once(cx, &mut out.plaintext_column, v, span, "plaintext_column")
                }),
                "sql_type" => parse_lit_str(meta).map(|v| {
                    if v.value().trim().is_empty() {
                        cx.error(
                            &v,
                            "sql_type needs the column's SQL type (`sql_type = \"INTEGER\"`)",
                        );
                    }
                    set_once(cx, &mut out.sql_type, v, span, "sql_type")
                }),
                "database" => parse_lit_str(meta).map(|v| {
                    if !matches!(v.value().as_str(), "postgres" | "mysql" | "sqlite") {
                        cx.error(&v, "database must be \"postgres\", \"mysql\" or \"sqlite\"");
                    }
                    set_once(cx, &mut out.database, v, span, "database")
                }),
                "generated" => {
                    let default = if meta.input.peek(Token![=]) {
                        match parse_lit_str(meta) {
                            Ok(v) => {
                                if v.value().trim().is_empty() {
                                    cx.error(&v, "generated = \"...\" needs an SQL default expression (or write `generated` alone)");
                                }
                                Some(v)
                            }
                            Err(e) => return Err(e),
                        }
                    } else {
                        None
                    };
                    if out.generated.is_some() {
                        cx.error_at(span, "duplicate rowseal attribute `generated`");
                    }
                    out.generated = Some((span, default));
                    Ok(())
                }
                _ => unknown(cx, meta, "rowseal attribute", " on a field", FIELD_ATTRS),
            }
        });
        out
    }
}

impl IndexAttrs {
    /// Parses the list of a `blind_index(...)` (`compound` false) or a
    /// `compound_index(...)` (`compound` true).
    fn parse(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, compound: bool) -> syn::Result<Self> {
        let mut out = IndexAttrs {
            span: meta.path.span(),
            name: None,
            bits: None,
            normalize: None,
            normalize_with: None,
            global: false,
            unique: false,
            column: None,
            fields: Vec::new(),
            part_normalize: Vec::new(),
        };
        let mut scope_seen = false;
        let mut fields_seen = false;
        meta.parse_nested_meta(|m| {
            let span = m.path.span();
            let r = match key(&m).as_str() {
                "name" => parse_lit_str(&m).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(
                            &v,
                            "index name must be a plain SQL name (letters, digits, _)",
                        );
                    }
                    set_once(cx, &mut out.name, v, span, "name")
                }),
                "column" => parse_lit_str(&m).map(|v| {
                    if !valid_sql_name(&v.value()) || v.value().len() > 60 {
                        cx.error(
                            &v,
                            "index column must be a plain SQL name (letters, digits, _)",
                        );
                    }
                    set_once(cx, &mut out.column, v, span, "column")
                }),
                "bits" => m.value().and_then(|v| v.parse::<syn::LitInt>()).map(|v| {
                    match v.base10_parse::<u16>() {
                        Ok(b) if (1..=256).contains(&b) => {}
                        _ => cx.error(&v, "bits must be between 1 and 256"),
                    }
                    set_once(cx, &mut out.bits, v, span, "bits")
                }),
                "normalize" => parse_lit_str(&m).map(|v| {
                    check_steps(cx, &v);
                    set_once(cx, &mut out.normalize, v, span, "normalize")
                }),
                "normalize_with" => m
                    .value()
                    .and_then(|v| v.parse::<syn::Path>())
                    .map(|p| set_once(cx, &mut out.normalize_with, p, span, "normalize_with")),
                "scope" => parse_lit_str(&m).map(|v| {
                    match v.value().as_str() {
                        "tenant" => {}
                        "global" => out.global = true,
                        _ => cx.error(&v, "scope must be \"tenant\" or \"global\""),
                    }
                    if scope_seen {
                        cx.error_at(span, "duplicate index attribute `scope`");
                    }
                    scope_seen = true;
                }),
                "unique" => {
                    if out.unique {
                        cx.error_at(span, "duplicate index attribute `unique`");
                    }
                    out.unique = true;
                    Ok(())
                }
                "fields" if compound => {
                    if fields_seen {
                        cx.error_at(span, "duplicate index attribute `fields`");
                    }
                    fields_seen = true;
                    m.parse_nested_meta(|f| {
                        let steps = if f.input.peek(Token![=]) {
                            let v = parse_lit_str(&f)?;
                            check_steps(cx, &v);
                            Some(v)
                        } else {
                            None
                        };
                        match f.path.get_ident() {
                            Some(id) => {
                                out.fields.push(id.clone());
                                out.part_normalize.push(steps);
                            }
                            None => cx.error(&f.path, "expected a field name"),
                        }
                        Ok(())
                    })
                }
                _ => unknown(
                    cx,
                    &m,
                    "index attribute",
                    "",
                    if compound {
                        COMPOUND_ATTRS
                    } else {
                        INDEX_ATTRS
                    },
                ),
            };
            recover(cx, &m, r)
        })?;
        if out.name.is_none() {
            cx.error_at(out.span, "a blind index needs a `name = \"...\"`");
        }
        if compound && out.fields.len() < 2 {
            cx.error_at(
                out.span,
                "a compound index needs `fields(a, b, ...)` with at least two fields (use blind_index on the field for one)",
            );
        }
        Ok(out)
    }
}

/// Runs `parse` on each item of every `#[rowseal(...)]` among `attrs`; an
/// error it returns is recorded and parsing goes on with the next item.
fn each_rowseal_meta(
    cx: &mut Ctxt,
    attrs: &[syn::Attribute],
    mut parse: impl FnMut(&mut Ctxt, &ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("rowseal")) {
        let res = attr.parse_nested_meta(|meta| {
            let r = parse(cx, &meta);
            recover(cx, &meta, r)
        });
        if let Err(e) = res {
            cx.push(e);
        }
    }
}

/// Records the error of one item, if any, and skips what is left of its
/// value (consumed or unparseable), so that parsing can go on with the next.
fn recover(cx: &mut Ctxt, meta: &ParseNestedMeta<'_>, r: syn::Result<()>) -> syn::Result<()> {
    if let Err(e) = r {
        cx.push(e);
        skip_value(meta)?;
    }
    Ok(())
}

/// The item's name (empty for a path that is not a single identifier).
fn key(meta: &ParseNestedMeta<'_>) -> String {
    meta.path
        .get_ident()
        .map(|i| i.to_string())
        .unwrap_or_default()
}

/// Reports an unknown item (`unknown {what} `x`{place}; expected one of:
/// {expected}`) and skips its value.
fn unknown(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    what: &str,
    place: &str,
    expected: &str,
) -> syn::Result<()> {
    cx.error(
        &meta.path,
        format!(
            "unknown {what} `{}`{place}; expected one of: {expected}",
            meta.path.to_token_stream().to_string().replace(' ', "")
        ),
    );
    skip_value(meta)
}

/// Skips the value of an unknown or rejected attribute (`= expr` or `(...)`),
/// so that parsing can go on and report the next mistake too.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _: proc_macro2::Group = meta.input.parse()?;
    }
    Ok(())
}

/// `tenant = tenant_id` or `tenant = "tenant_id"`.
fn parse_ident_value(meta: &ParseNestedMeta<'_>) -> syn::Result<Ident> {
    let expr: syn::Expr = meta.value()?.parse()?;
    match &expr {
        syn::Expr::Path(p) if p.qself.is_none() => {
            if let Some(id) = p.path.get_ident() {
                return Ok(id.clone());
            }
        }
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => return s.parse::<Ident>(),
        _ => {}
    }
    Err(syn::Error::new_spanned(expr, "expected a field name"))
}

/// `= field` or `= (field, field, ...)`, with the span of the value.
fn parse_key_fields(meta: &ParseNestedMeta<'_>) -> syn::Result<(Vec<Ident>, Span)> {
    let expr: syn::Expr = meta.value()?.parse()?;
    let one = |e: &syn::Expr| match e {
        syn::Expr::Path(p) if p.qself.is_none() => p.path.get_ident().cloned(),
        _ => None,
    };
    let names = match &expr {
        syn::Expr::Tuple(t) => t.elems.iter().map(one).collect::<Option<Vec<_>>>(),
        syn::Expr::Paren(p) => one(&p.expr).map(|i| vec![i]),
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => s.parse::<Ident>().ok().map(|i| vec![i]),
        e => one(e).map(|i| vec![i]),
    };
    match names {
        Some(names) if !names.is_empty() => Ok((names, expr.span())),
        _ => Err(syn::Error::new_spanned(
            expr,
            "expected a field name, or `(tenant_field, key_field)` for a composite primary key",
        )),
    }
}

fn parse_lit_str(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let expr: syn::Expr = meta.value()?.parse()?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Ok(s),
        other => Err(syn::Error::new_spanned(other, "expected a string literal")),
    }
}

fn set_once<T>(cx: &mut Ctxt, slot: &mut Option<T>, value: T, span: Span, name: &str) {
    if slot.is_some() {
        cx.error_at(span, format!("duplicate rowseal attribute `{name}`"));
    } else {
        *slot = Some(value);
    }
}

fn valid_sql_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Checks a `normalize = "..."` list against the built-in steps. rowseal-core
/// owns their names: a step is valid when it builds a built-in normalizer
/// there, so the derive accepts exactly what the runtime can apply.
fn check_steps(cx: &mut Ctxt, v: &LitStr) {
    for step in v.value().split(',').filter(|s| !s.trim().is_empty()) {
        if rowseal_core::Normalizer::builtin(step).is_err() {
            cx.error(
                v,
                format!(
                    "unknown normalization `{}`; expected a comma-separated list of: {} (use normalize_with for your own)",
                    step.trim(),
                    rowseal_core::Normalizer::BUILTIN_NAMES.join(", "),
                ),
            );
        }
    }
}
