//! Attribute parsing and code generation behind `#[derive(Encrypted)]`.
//!
//! This crate is an implementation detail of `rowseal-derive` (the proc-macro
//! shim) and is kept apart so that it can be tested as ordinary code. Parsing is
//! serde-style: every attribute mistake in a struct is collected and reported at
//! once, each with a span on the offending attribute or field.
//!
//! Container attributes, on the struct:
//! - `table = "patients"` (required): the table.
//! - `record_type = "patient"`: the record type bound into every ciphertext
//!   (default: the struct name in snake case).
//! - `tenant = tenant_id` (required): the field holding the tenant (a `String`).
//! - `primary_key = id` (required): the primary-key field.
//! - `key_mode = "derived"` or `"kms"` (default `"derived"`).
//! - `bind_primary_key`: bind the primary key into each ciphertext.
//! - `crate = "path"`: where the rowseal sqlx runtime is (default: found from
//!   the dependencies, `rowseal` or `rowseal-sqlx`).
//!
//! Field attributes:
//! - `encrypt`: store the field encrypted.
//! - `column = "name"`: the column (default: the field name).
//! - `json` (with `encrypt`): encode any `Serialize + DeserializeOwned` type as
//!   JSON before encrypting.
//! - `plaintext_column = "email"` (with `encrypt`, not `json`; the field's
//!   `column` must differ): the legacy plaintext column this field migrates
//!   from. Reads fall back to it while the ciphertext is NULL, writes set it
//!   to NULL, and `rowseal encrypt-column` encrypts what is left.
//! - `blind_index(name = "email_idx", bits = 32, normalize = "trim,lowercase",
//!   normalize_with = path::to::fn, scope = "tenant" | "global", unique,
//!   column = "email_bidx")`: a blind index on this (encrypted) field. Only
//!   `name` is required; `bits` defaults to 32, `scope` to `"tenant"`, `column`
//!   to the name. `normalize` names built-in steps (trim, lowercase, nfc,
//!   digits, alnum, lastN); `normalize_with` names a `fn(&str) -> String`
//!   applied after them. Repeat the attribute for several indexes.
//!
//! Container attribute for compound indexes:
//! - `compound_index(name = "name_dob_idx", fields(last_name, dob), bits = 32,
//!   normalize = "trim,lowercase", normalize_with = f, scope = "tenant",
//!   unique, column = "...")`: one index over several fields, each
//!   length-prefixed; `normalize` applies to every part unless a field has
//!   its own steps (`fields(ssn = "digits", city)`).
//!
//! Each index generates `T::find_by_<stem>(&encryptor, executor, tenant,
//! value...)` and `T::find_by_<stem>_in(&encryptor, executor, tenant, &[...])`,
//! where `<stem>` is the index name without a trailing `_idx` or `_index`;
//! global indexes take no tenant.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitStr, Token};

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    fn error(&mut self, span: impl ToTokens, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(span, msg));
    }
    fn error_at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, msg));
    }
    fn push(&mut self, e: syn::Error) {
        self.errors.push(e);
    }
    fn finish(self) -> Result<(), syn::Error> {
        let mut iter = self.errors.into_iter();
        match iter.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in iter {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }
}

const CONTAINER_ATTRS: &str =
    "table, record_type, tenant, primary_key, key_mode, bind_primary_key, crate, compound_index";
const FIELD_ATTRS: &str = "encrypt, column, json, blind_index, plaintext_column";
const INDEX_ATTRS: &str = "name, bits, normalize, normalize_with, scope, unique, column";
const COMPOUND_ATTRS: &str = "name, fields, bits, normalize, normalize_with, scope, unique, column";
/// Column names rowseal uses for itself.
const RESERVED_COLUMNS: [&str; 2] = ["rowseal_header", "rowseal_key_version"];

#[derive(Default)]
struct ContainerAttrs {
    table: Option<LitStr>,
    record_type: Option<LitStr>,
    tenant: Option<Ident>,
    primary_key: Option<Ident>,
    key_mode: Option<(LitStr, bool)>,
    bind_primary_key: bool,
    krate: Option<syn::Path>,
    compound: Vec<IndexAttrs>,
}

/// One `blind_index(...)` or `compound_index(...)`.
struct IndexAttrs {
    span: Span,
    name: Option<LitStr>,
    bits: Option<syn::LitInt>,
    normalize: Option<LitStr>,
    normalize_with: Option<syn::Path>,
    global: bool,
    unique: bool,
    column: Option<LitStr>,
    fields: Vec<Ident>,
    /// Per compound field, its own `= "steps"`.
    part_normalize: Vec<Option<LitStr>>,
}

const BUILTIN_STEPS: &str = "trim, lowercase, nfc, digits, alnum, lastN";

fn valid_step(step: &str) -> bool {
    let step = step.trim();
    if matches!(step, "trim" | "lowercase" | "nfc" | "digits" | "alnum") {
        return true;
    }
    let n = step
        .strip_prefix("last(")
        .and_then(|r| r.strip_suffix(')'))
        .or_else(|| step.strip_prefix("last"));
    matches!(n.and_then(|n| n.parse::<usize>().ok()), Some(n) if n > 0)
}

fn check_steps(cx: &mut Ctxt, v: &LitStr) {
    for step in v.value().split(',').filter(|s| !s.trim().is_empty()) {
        if !valid_step(step) {
            cx.error(
                v,
                format!(
                    "unknown normalization `{}`; expected a comma-separated list of: {BUILTIN_STEPS} (use normalize_with for your own)",
                    step.trim()
                ),
            );
        }
    }
}

fn parse_index(
    cx: &mut Ctxt,
    meta: &syn::meta::ParseNestedMeta<'_>,
    compound: bool,
) -> syn::Result<IndexAttrs> {
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
        let key = m
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let r = match key.as_str() {
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
            _ => {
                cx.error(
                    &m.path,
                    format!(
                        "unknown index attribute `{}`; expected one of: {}",
                        m.path.to_token_stream().to_string().replace(' ', ""),
                        if compound {
                            COMPOUND_ATTRS
                        } else {
                            INDEX_ATTRS
                        }
                    ),
                );
                skip_value(&m)
            }
        };
        if let Err(e) = r {
            cx.push(e);
            skip_value(&m)?;
        }
        Ok(())
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

#[derive(Default)]
struct FieldAttrs {
    encrypt: bool,
    json: Option<Span>,
    column: Option<LitStr>,
    plaintext_column: Option<LitStr>,
    indexes: Vec<IndexAttrs>,
}

struct FieldInfo {
    ident: Ident,
    ty: syn::Type,
    attrs: FieldAttrs,
    column: String,
}

/// Skips the value of an unknown or rejected attribute (`= expr` or `(...)`),
/// so that parsing can go on and report the next mistake too.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _: proc_macro2::Group = meta.input.parse()?;
    }
    Ok(())
}

/// `tenant = tenant_id` or `tenant = "tenant_id"`.
fn parse_ident_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Ident> {
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

fn parse_lit_str(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitStr> {
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

fn parse_container(cx: &mut Ctxt, input: &DeriveInput) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in &input.attrs {
        if !attr.path().is_ident("rowseal") {
            continue;
        }
        let res = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            let name = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let r = match name.as_str() {
                "table" => parse_lit_str(&meta).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(&v, "table must be a plain SQL name (letters, digits, _)");
                    }
                    set_once(cx, &mut out.table, v, span, "table")
                }),
                "record_type" => parse_lit_str(&meta).map(|v| {
                    if v.value().is_empty() {
                        cx.error(&v, "record_type must not be empty");
                    }
                    set_once(cx, &mut out.record_type, v, span, "record_type")
                }),
                "tenant" => parse_ident_value(&meta)
                    .map(|v| set_once(cx, &mut out.tenant, v, span, "tenant")),
                "primary_key" => parse_ident_value(&meta)
                    .map(|v| set_once(cx, &mut out.primary_key, v, span, "primary_key")),
                "key_mode" => parse_lit_str(&meta).map(|v| {
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
                    Ok(())
                }
                "crate" => parse_lit_str(&meta).and_then(|v| {
                    let p: syn::Path = v.parse()?;
                    set_once(cx, &mut out.krate, p, span, "crate");
                    Ok(())
                }),
                "compound_index" => parse_index(cx, &meta, true).map(|i| out.compound.push(i)),
                _ => {
                    cx.error(
                        &meta.path,
                        format!(
                            "unknown rowseal attribute `{}` on a struct; expected one of: {CONTAINER_ATTRS}",
                            meta.path.to_token_stream().to_string().replace(' ', "")
                        ),
                    );
                    skip_value(&meta)
                }
            };
            if let Err(e) = r {
                cx.push(e);
                // The value was consumed (or is unparseable): go on with the next.
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.push(e);
        }
    }
    out
}

fn parse_field(cx: &mut Ctxt, field: &syn::Field) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in &field.attrs {
        if !attr.path().is_ident("rowseal") {
            continue;
        }
        let res = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            let name = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let r = match name.as_str() {
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
                "column" => parse_lit_str(&meta).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(&v, "column must be a plain SQL name (letters, digits, _)");
                    }
                    set_once(cx, &mut out.column, v, span, "column")
                }),
                "blind_index" => parse_index(cx, &meta, false).map(|i| out.indexes.push(i)),
                "plaintext_column" => parse_lit_str(&meta).map(|v| {
                    if !valid_sql_name(&v.value()) {
                        cx.error(
                            &v,
                            "plaintext_column must be a plain SQL name (letters, digits, _)",
                        );
                    }
                    set_once(cx, &mut out.plaintext_column, v, span, "plaintext_column")
                }),
                _ => {
                    cx.error(
                        &meta.path,
                        format!(
                            "unknown rowseal attribute `{}` on a field; expected one of: {FIELD_ATTRS}",
                            meta.path.to_token_stream().to_string().replace(' ', "")
                        ),
                    );
                    skip_value(&meta)
                }
            };
            if let Err(e) = r {
                cx.push(e);
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.push(e);
        }
    }
    if !out.encrypt {
        for i in &out.indexes {
            cx.error_at(
                i.span,
                "`blind_index` needs `encrypt`: a plain field is queried directly",
            );
        }
    } else if out.json.is_some() {
        for i in &out.indexes {
            cx.error_at(i.span, "a `json` field cannot have a blind index");
        }
    }
    if let Some(p) = &out.plaintext_column {
        if !out.encrypt {
            cx.error(
                p,
                "`plaintext_column` needs `encrypt`: it names the legacy plaintext column an encrypted field migrates from",
            );
        } else if out.json.is_some() {
            cx.error(
                p,
                "`plaintext_column` is not supported on a `json` field (the legacy column would need the application's JSON type)",
            );
        }
    }
    if let (Some(span), false) = (out.json, out.encrypt) {
        cx.error_at(
            span,
            "`json` needs `encrypt`: plain fields are stored as they are",
        );
    }
    out
}

fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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

fn default_crate_path() -> syn::Path {
    use proc_macro_crate::{crate_name, FoundCrate};
    match crate_name("rowseal") {
        Ok(FoundCrate::Name(name)) => {
            let id = format_ident!("{}", name);
            return syn::parse_quote!(::#id::__sqlx);
        }
        // Doctests of the facade (its README) compile as other crates that
        // see `rowseal` as "itself": name it by its path. (The facade's own
        // code does not derive; if it ever does, it needs
        // `extern crate self as rowseal;`.)
        Ok(FoundCrate::Itself) => return syn::parse_quote!(::rowseal::__sqlx),
        Err(_) => {}
    }
    match crate_name("rowseal-sqlx") {
        Ok(FoundCrate::Name(name)) => {
            let id = format_ident!("{}", name);
            syn::parse_quote!(::#id)
        }
        // Tests and benches of rowseal-sqlx itself.
        Ok(FoundCrate::Itself) => syn::parse_quote!(::rowseal_sqlx),
        Err(_) => syn::parse_quote!(::rowseal::__sqlx),
    }
}

/// Expands `#[derive(Encrypted)]`. Returns every mistake at once as one
/// combined error.
pub fn expand_encrypted(input: &DeriveInput) -> Result<TokenStream, syn::Error> {
    let mut cx = Ctxt::default();
    let attrs = parse_container(&mut cx, input);

    if !input.generics.params.is_empty() {
        cx.error(
            &input.generics,
            "#[derive(Encrypted)] does not support generic structs",
        );
    }
    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(n) => Some(n),
            _ => {
                cx.error(
                    &input.ident,
                    "#[derive(Encrypted)] needs a struct with named fields",
                );
                None
            }
        },
        _ => {
            cx.error(&input.ident, "#[derive(Encrypted)] works on structs only");
            None
        }
    };

    let mut fields = Vec::new();
    if let Some(named) = named {
        for f in &named.named {
            let fa = parse_field(&mut cx, f);
            let Some(ident) = f.ident.clone() else {
                continue;
            };
            let column = fa
                .column
                .as_ref()
                .map(|c| c.value())
                .unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_owned());
            if RESERVED_COLUMNS.contains(&column.as_str()) {
                cx.error(
                    fa.column
                        .as_ref()
                        .map(|c| c.to_token_stream())
                        .unwrap_or_else(|| ident.to_token_stream()),
                    format!("column name `{column}` is reserved by rowseal"),
                );
            }
            fields.push(FieldInfo {
                ident,
                ty: f.ty.clone(),
                attrs: fa,
                column,
            });
        }
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
                    format!("the plaintext column `{pv}` is already used by another field or by rowseal"),
                );
            }
        }
    }

    if attrs.table.is_none() {
        cx.error_at(
            Span::call_site(),
            "missing #[rowseal(table = \"...\")] on the struct",
        );
    }
    let find = |cx: &mut Ctxt, which: &str, id: &Option<Ident>| -> Option<usize> {
        let Some(id) = id else {
            cx.error_at(
                Span::call_site(),
                format!("missing #[rowseal({which} = <field>)] on the struct"),
            );
            return None;
        };
        match fields.iter().position(|f| f.ident == *id) {
            Some(i) => {
                if fields[i].attrs.encrypt {
                    cx.error(
                        id,
                        format!("the {which} field `{id}` cannot be encrypted: rowseal needs it in the clear to find and key the row"),
                    );
                }
                Some(i)
            }
            None if named.is_some() => {
                cx.error(id, format!("no field named `{id}` for the {which}"));
                None
            }
            None => None,
        }
    };
    let tenant_idx = find(&mut cx, "tenant", &attrs.tenant);
    let pk_idx = find(&mut cx, "primary_key", &attrs.primary_key);
    if let (Some(t), Some(p)) = (tenant_idx, pk_idx) {
        if t == p {
            if let Some(id) = &attrs.primary_key {
                cx.error(
                    id,
                    "the tenant and the primary key must be different fields",
                );
            }
        }
    }
    let indexes = resolve_indexes(&mut cx, &attrs, &fields);
    cx.finish()?;
    let (Some(tenant_idx), Some(pk_idx), Some(table)) = (tenant_idx, pk_idx, attrs.table.clone())
    else {
        return Err(syn::Error::new(Span::call_site(), "invalid attributes"));
    };

    let krate = attrs.krate.clone().unwrap_or_else(default_crate_path);
    let name = &input.ident;
    let record_type = attrs
        .record_type
        .as_ref()
        .map(|r| r.value())
        .unwrap_or_else(|| snake_case(&name.to_string()));
    let kms = attrs.key_mode.as_ref().map(|(_, k)| *k).unwrap_or(false);
    let mode = if kms {
        quote!(#krate::KeyMode::Kms)
    } else {
        quote!(#krate::KeyMode::Derived)
    };
    let bind = attrs.bind_primary_key;

    let field_defs = fields.iter().map(|f| {
        let fname = f.ident.to_string();
        let col = &f.column;
        let ty = &f.ty;
        if f.attrs.encrypt {
            if f.attrs.json.is_some() {
                let nullable = option_inner(ty).is_some();
                quote!(#krate::FieldDef::encrypted(#fname, #col, #krate::ValueType::Json, #nullable))
            } else if let Some(p) = &f.attrs.plaintext_column {
                quote_spanned!(ty.span()=> #krate::FieldDef::encrypted(
                    #fname, #col,
                    <#ty as #krate::EncryptedField>::TYPE,
                    <#ty as #krate::EncryptedField>::NULLABLE)
                    .with_plaintext_column(#p, <#ty as #krate::PlainField>::SQL_TYPE))
            } else {
                quote_spanned!(ty.span()=> #krate::FieldDef::encrypted(
                    #fname, #col,
                    <#ty as #krate::EncryptedField>::TYPE,
                    <#ty as #krate::EncryptedField>::NULLABLE))
            }
        } else {
            quote_spanned!(ty.span()=> #krate::FieldDef::plain(
                #fname, #col,
                <#ty as #krate::PlainField>::SQL_TYPE,
                <#ty as #krate::PlainField>::NULLABLE))
        }
    });

    let writes = fields.iter().map(|f| {
        let id = &f.ident;
        let col = &f.column;
        let ty = &f.ty;
        if f.attrs.encrypt {
            if f.attrs.json.is_some() {
                if option_inner(ty).is_some() {
                    quote!(__w.encrypted_json_opt(#col, self.#id.as_ref())?;)
                } else {
                    quote!(__w.encrypted_json(#col, &self.#id)?;)
                }
            } else {
                quote_spanned!(ty.span()=> __w.encrypted::<#ty>(#col, &self.#id)?;)
            }
        } else {
            quote_spanned!(ty.span()=> __w.plain::<#ty>(#col, &self.#id);)
        }
    });

    let reads = fields.iter().map(|f| {
        let id = &f.ident;
        let col = &f.column;
        let ty = &f.ty;
        if f.attrs.encrypt {
            if f.attrs.json.is_some() {
                if option_inner(ty).is_some() {
                    quote!(#id: __r.encrypted_json_opt(#col)?,)
                } else {
                    quote!(#id: __r.encrypted_json(#col)?,)
                }
            } else if f.attrs.plaintext_column.is_some() {
                quote_spanned!(ty.span()=> #id: __r.encrypted_or_plaintext::<#ty>(#col)?,)
            } else {
                quote_spanned!(ty.span()=> #id: __r.encrypted::<#ty>(#col)?,)
            }
        } else {
            quote_spanned!(ty.span()=> #id: __r.plain::<#ty>(#col)?,)
        }
    });

    let (index_defs, index_parts, finders) = index_tokens(&krate, name, &fields, &indexes);

    let tenant_f = &fields[tenant_idx];
    let (tenant_id, tenant_ty) = (&tenant_f.ident, &tenant_f.ty);
    let tenant_expr = quote_spanned!(tenant_ty.span()=>
        <#tenant_ty as #krate::TenantField>::tenant_str(&self.#tenant_id));
    let pk_f = &fields[pk_idx];
    let (pk_id, pk_ty) = (&pk_f.ident, &pk_f.ty);
    let pk_assoc = quote_spanned!(pk_ty.span()=> type PrimaryKey = #pk_ty;);
    let pk_expr = quote_spanned!(pk_ty.span()=>
        <#pk_ty as #krate::PrimaryKeyField>::key_value(&self.#pk_id));
    let table_s = table.value();

    Ok(quote! {
        #[automatically_derived]
        impl #krate::Encrypted for #name {
            #pk_assoc

            fn model() -> &'static #krate::Model {
                static MODEL: #krate::Model = #krate::Model::__new_indexed(
                    #krate::RecordSpec::new(#record_type, #table_s)
                        .with_key_mode(#mode)
                        .with_primary_key_bound(#bind),
                    #tenant_idx,
                    #pk_idx,
                    &[#(#field_defs),*],
                    &[#(#index_defs),*],
                );
                &MODEL
            }

            fn tenant(&self) -> &str {
                #tenant_expr
            }

            fn primary_key_value(&self) -> #krate::Value {
                #pk_expr
            }

            fn write_row(&self, __w: &mut #krate::RowWriter<'_>) -> ::core::result::Result<(), #krate::Error> {
                #(#writes)*
                ::core::result::Result::Ok(())
            }

            fn read_row(__r: &mut #krate::RowReader<'_>) -> ::core::result::Result<Self, #krate::Error> {
                ::core::result::Result::Ok(#name {
                    #(#reads)*
                })
            }

            #index_parts
        }

        #finders
    })
}

/// A blind index after validation.
struct ResolvedIndex {
    name: String,
    column: String,
    fields: Vec<usize>,
    bits: u16,
    normalize: String,
    part_normalize: Vec<String>,
    normalize_with: Option<syn::Path>,
    global: bool,
    unique: bool,
}

fn resolve_indexes(
    cx: &mut Ctxt,
    attrs: &ContainerAttrs,
    fields: &[FieldInfo],
) -> Vec<ResolvedIndex> {
    let mut out: Vec<(Span, ResolvedIndex)> = Vec::new();
    let mut push = |cx: &mut Ctxt, ia: &IndexAttrs, positions: Vec<usize>| {
        let Some(name) = &ia.name else { return };
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
        out.push((
            ia.span,
            ResolvedIndex {
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
            },
        ));
        let _ = cx;
    };
    for (i, f) in fields.iter().enumerate() {
        for ia in &f.attrs.indexes {
            push(cx, ia, vec![i]);
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
            push(cx, ia, positions);
        }
    }
    for (i, (span, ix)) in out.iter().enumerate() {
        let earlier = &out[..i];
        if earlier.iter().any(|(_, o)| o.name == ix.name) {
            cx.error_at(*span, format!("two blind indexes are named `{}`", ix.name));
        }
        for c in &index_columns(&ix.column) {
            if fields.iter().any(|f| f.column == *c)
                || RESERVED_COLUMNS.contains(&c.as_str())
                || earlier
                    .iter()
                    .any(|(_, o)| index_columns(&o.column).contains(c))
            {
                cx.error_at(
                    *span,
                    format!("the blind index column `{c}` clashes with another column; set `column = \"...\"`"),
                );
            }
        }
        if earlier.iter().any(|(_, o)| stem(&o.name) == stem(&ix.name)) {
            cx.error_at(
                *span,
                format!(
                    "two blind indexes would both generate `find_by_{}`",
                    stem(&ix.name)
                ),
            );
        }
    }
    out.into_iter().map(|(_, i)| i).collect()
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

fn index_tokens(
    krate: &syn::Path,
    name: &Ident,
    fields: &[FieldInfo],
    indexes: &[ResolvedIndex],
) -> (Vec<TokenStream>, TokenStream, TokenStream) {
    let defs = indexes
        .iter()
        .map(|ix| {
            let (iname, col, bits, norm, global, unique) = (
                &ix.name, &ix.column, ix.bits, &ix.normalize, ix.global, ix.unique,
            );
            let [_, vcol, acol, avcol] = index_columns(col);
            let pos = &ix.fields;
            let parts = &ix.part_normalize;
            let custom = match &ix.normalize_with {
                Some(p) => {
                    let pname = p.to_token_stream().to_string().replace(' ', "");
                    quote_spanned!(p.span()=> ::core::option::Option::Some(#krate::CustomNormalizer {
                        name: #pname,
                        f: #p,
                    }))
                }
                None => quote!(::core::option::Option::None),
            };
            quote!(#krate::IndexDef {
                name: #iname,
                column: #col,
                version_column: #vcol,
                alt_column: #acol,
                alt_version_column: #avcol,
                fields: &[#(#pos),*],
                bits: #bits,
                normalize: #norm,
                part_normalize: &[#(#parts),*],
                custom: #custom,
                global: #global,
                unique: #unique,
            })
        })
        .collect();

    let mut covered: Vec<usize> = indexes.iter().flat_map(|i| i.fields.clone()).collect();
    covered.sort_unstable();
    covered.dedup();
    let index_parts = if covered.is_empty() {
        TokenStream::new()
    } else {
        let arms = covered.iter().map(|&p| {
            let f = &fields[p];
            let (id, ty) = (&f.ident, &f.ty);
            quote_spanned!(ty.span()=> #p => <#ty as #krate::IndexSource>::index_str(&self.#id),)
        });
        quote! {
            fn index_part(&self, __field: usize) -> ::core::option::Option<::std::borrow::Cow<'_, str>> {
                match __field {
                    #(#arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }
    };

    let methods = indexes.iter().map(|ix| {
        let iname = &ix.name;
        let st = stem(&ix.name);
        let one = format_ident!("find_by_{}", st);
        let many = format_ident!("find_by_{}_in", st);
        let params: Vec<Ident> = ix
            .fields
            .iter()
            .map(|&p| {
                let id = fields[p].ident.to_string();
                let id = id.trim_start_matches("r#");
                if id == "tenant" || id.starts_with("__") {
                    format_ident!("{}_value", id.trim_start_matches('_'))
                } else {
                    format_ident!("{}", id)
                }
            })
            .collect();
        let n = params.len();
        let field_list = ix
            .fields
            .iter()
            .map(|&p| format!("`{}`", fields[p].ident))
            .collect::<Vec<_>>()
            .join(", ");
        let (tenant_param, tenant_arg, scope_doc) = if ix.global {
            (
                quote!(),
                quote!(::core::option::Option::None),
                "Global index: searches every tenant.",
            )
        } else {
            (
                quote!(tenant: &str,),
                quote!(::core::option::Option::Some(tenant)),
                "Tenant-scoped: searches `tenant` only.",
            )
        };
        let doc_one = format!(
            "Rows whose blind index `{iname}` (over {field_list}) matches, decrypted; false positives of the truncated index are removed. {scope_doc}"
        );
        let doc_many = format!(
            "Rows whose blind index `{iname}` (over {field_list}) matches any of `values`, decrypted, false positives removed. {scope_doc}"
        );
        quote! {
            #[doc = #doc_one]
            pub async fn #one<'c, __E>(
                encryptor: &#krate::Encryptor,
                executor: __E,
                #tenant_param
                #(#params: &str),*
            ) -> ::core::result::Result<::std::vec::Vec<Self>, #krate::Error>
            where
                __E: #krate::sqlx::Executor<'c>,
                __E::Database: #krate::Backend,
            {
                encryptor
                    .find_by::<Self, __E>(executor, #tenant_arg, #iname, &[&[#(#params),*]])
                    .await
            }

            #[doc = #doc_many]
            pub async fn #many<'c, __E>(
                encryptor: &#krate::Encryptor,
                executor: __E,
                #tenant_param
                values: &[[&str; #n]],
            ) -> ::core::result::Result<::std::vec::Vec<Self>, #krate::Error>
            where
                __E: #krate::sqlx::Executor<'c>,
                __E::Database: #krate::Backend,
            {
                let __v: ::std::vec::Vec<&[&str]> = values.iter().map(|v| &v[..]).collect();
                encryptor
                    .find_by::<Self, __E>(executor, #tenant_arg, #iname, &__v)
                    .await
            }
        }
    });
    let finders = if indexes.is_empty() {
        TokenStream::new()
    } else {
        quote! {
            #[automatically_derived]
            impl #name {
                #(#methods)*
            }
        }
    };
    (defs, index_parts, finders)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(src: &str) -> Result<String, String> {
        let input: DeriveInput = syn::parse_str(src).map_err(|e| e.to_string())?;
        expand_encrypted(&input)
            .map(|t| t.to_string())
            .map_err(|e| {
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    #[test]
    fn expands_a_model() {
        let out = expand(
            r#"#[rowseal(table = "patients", tenant = tenant_id, primary_key = id, bind_primary_key, crate = "x")]
            struct Patient { id: i64, tenant_id: String, #[rowseal(encrypt, column = "dob")] birth: Option<String> }"#,
        )
        .unwrap();
        assert!(out.contains("\"patient\""));
        assert!(out.contains("\"dob\""));
        assert!(out.contains("with_primary_key_bound (true)"));
    }

    #[test]
    fn reports_every_mistake() {
        let err = expand(
            r#"#[rowseal(table = "t", tenant = nope, primary_key = id, colour = "red", key_mode = "x")]
            struct P { id: i64, #[rowseal(encrypt, json, frob)] a: String, #[rowseal(json)] b: String }"#,
        )
        .unwrap_err();
        for needle in [
            "no field named `nope`",
            "unknown rowseal attribute `colour`",
            "key_mode must be",
            "unknown rowseal attribute `frob`",
            "`json` needs `encrypt`",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }

    #[test]
    fn expands_blind_indexes() {
        let out = expand(
            r#"#[rowseal(table = "users", tenant = t, primary_key = id, crate = "x",
                compound_index(name = "pair_index", fields(a, b), bits = 16, scope = "global", unique),
                compound_index(name = "mixed_idx", fields(a = "digits", b), normalize = "trim"))]
            struct U { id: i64, t: String,
                #[rowseal(encrypt, blind_index(name = "a_idx", bits = 80, normalize = "trim, last(4)", normalize_with = my::f, column = "a_bidx"))]
                a: String,
                #[rowseal(encrypt)] b: Option<String> }"#,
        )
        .unwrap();
        for needle in [
            "__new_indexed",
            "\"a_bidx\"",
            "\"a_bidx_kv\"",
            "bits : 80u16",
            "\"trim, last(4)\"",
            "name : \"my::f\"",
            "fn find_by_a <",
            "fn find_by_a_in <",
            "fn find_by_pair <",
            "part_normalize : & [\"digits\" , \"trim\"]",
            "part_normalize : & []",
            "values : & [[& str ; 2usize]]",
            "fn index_part",
            "global : true",
            "unique : true",
        ] {
            assert!(out.contains(needle), "{needle} not in {out}");
        }
        // A global index's lookups take no tenant.
        let pair = out.split("fn find_by_pair <").nth(1).unwrap_or("");
        let sig = pair.split("->").next().unwrap_or("");
        assert!(!sig.contains("tenant"), "{sig}");
    }

    #[test]
    fn rejects_bad_indexes() {
        let err = expand(
            r#"#[rowseal(table = "t", tenant = t, primary_key = id, compound_index(name = "c", fields(a)))]
            struct P { id: i64, t: String,
                #[rowseal(blind_index(name = "x"))] a: String,
                #[rowseal(encrypt, blind_index(bits = 300, normalize = "upper", scope = "all"))] b: String }"#,
        )
        .unwrap_err();
        for needle in [
            "at least two fields",
            "needs `encrypt`",
            "bits must be between 1 and 256",
            "unknown normalization `upper`",
            "scope must be",
            "needs a `name",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
    }

    #[test]
    fn stems() {
        assert_eq!(stem("email_idx"), "email");
        assert_eq!(stem("ssn_index"), "ssn");
        assert_eq!(stem("login"), "login");
        assert_eq!(stem("_idx"), "_idx");
    }

    #[test]
    fn snake_cases() {
        assert_eq!(snake_case("PatientRecord"), "patient_record");
    }
}
