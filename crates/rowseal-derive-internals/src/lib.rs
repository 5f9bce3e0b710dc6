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
//! - `blind_index(...)`: reserved for blind indexes (not available yet).

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
    "table, record_type, tenant, primary_key, key_mode, bind_primary_key, crate";
const FIELD_ATTRS: &str = "encrypt, column, json";
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
}

#[derive(Default)]
struct FieldAttrs {
    encrypt: bool,
    json: Option<Span>,
    column: Option<LitStr>,
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
                "blind_index" => {
                    cx.error_at(
                        span,
                        "compound blind indexes are not available yet in this version of rowseal",
                    );
                    skip_value(&meta)
                }
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
                "blind_index" => {
                    cx.error_at(
                        span,
                        "blind indexes are not available yet in this version of rowseal",
                    );
                    skip_value(&meta)
                }
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
        Ok(FoundCrate::Itself) => return syn::parse_quote!(crate::__sqlx),
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
                quote!(#krate::FieldDef::encrypted(#fname, #col, "json", #nullable))
            } else {
                quote_spanned!(ty.span()=> #krate::FieldDef::encrypted(
                    #fname, #col,
                    <#ty as #krate::EncryptedField>::TYPE_NAME,
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
            } else {
                quote_spanned!(ty.span()=> #id: __r.encrypted::<#ty>(#col)?,)
            }
        } else {
            quote_spanned!(ty.span()=> #id: __r.plain::<#ty>(#col)?,)
        }
    });

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
                static MODEL: #krate::Model = #krate::Model::__new(
                    #krate::RecordSpec::new(#record_type, #table_s)
                        .with_key_mode(#mode)
                        .with_primary_key_bound(#bind),
                    #tenant_idx,
                    #pk_idx,
                    &[#(#field_defs),*],
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
        }
    })
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
    fn snake_cases() {
        assert_eq!(snake_case("PatientRecord"), "patient_record");
    }
}
