//! Building the model's AST from the parsed attributes: resolves names and
//! positions and runs each check of [`crate::check`] at the point where its
//! inputs are known (so errors come out in source order). Kept apart from
//! [`crate::ast`], the types, so that the checks can read those types without
//! a module cycle.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{Data, DeriveInput, Fields, Ident};

use crate::ast::{Container, Field, Index, Partial};
use crate::attr::{ContainerAttrs, FieldAttrs};
use crate::check;
use crate::ctxt::Ctxt;

impl<'a> Container<'a> {
    /// Parses and resolves `input`, reporting every mistake into `cx`.
    /// `None` when something could not be resolved (always with an error in
    /// `cx`).
    pub(crate) fn from_ast(
        cx: &mut Ctxt,
        input: &'a DeriveInput,
        attrs: ContainerAttrs,
    ) -> Option<Self> {
        check::not_generic(cx, input);
        let named = named_fields(cx, input);

        let mut fields = Vec::new();
        if let Some(named) = named {
            for f in &named.named {
                let attrs = FieldAttrs::from_ast(cx, f);
                check::field_attrs(cx, &attrs);
                let Some(ident) = f.ident.clone() else {
                    continue;
                };
                let column = attrs
                    .column
                    .as_ref()
                    .map(|c| c.value())
                    .unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_owned());
                check::column_not_reserved(
                    cx,
                    attrs
                        .column
                        .as_ref()
                        .map(|c| c.to_token_stream())
                        .unwrap_or_else(|| ident.to_token_stream()),
                    &column,
                );
                let logical = attrs
                    .name
                    .as_ref()
                    .map(|n| n.value())
                    .unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_owned());
                fields.push(Field {
                    ident,
                    ty: &f.ty,
                    attrs,
                    column,
                    logical,
                });
            }
            check::columns(cx, &fields);
        }

        if attrs.record_type.is_none() {
            cx.error_at(
                Span::call_site(),
                "missing #[rowseal(record_type = \"...\")] on the struct: the record type is bound into every ciphertext, so it is named explicitly and never follows the struct's name (renaming the struct must not make old rows unreadable)",
            );
        }
        if attrs.table.is_none() {
            cx.error_at(
                Span::call_site(),
                "missing #[rowseal(table = \"...\")] on the struct",
            );
        }
        let tenant = key_field(
            cx,
            "tenant",
            attrs.tenant.as_ref(),
            &fields,
            named.is_some(),
        );
        let (key_id, tenant_in_primary_key) =
            check::primary_key_shape(cx, attrs.primary_key.as_ref(), attrs.tenant.as_ref());
        // A primary key of the wrong shape has been reported: not again as missing.
        let primary_key = match (attrs.primary_key.is_some(), key_id) {
            (true, None) => None,
            _ => key_field(cx, "primary_key", key_id, &fields, named.is_some()),
        };
        check::distinct_key_fields(cx, tenant, primary_key, key_id);
        let indexes = Index::resolve(cx, &attrs, &fields);
        check::indexes(cx, &indexes, &fields);
        check::generated_fields(
            cx,
            &fields,
            tenant,
            primary_key,
            attrs.bind_primary_key,
            tenant_in_primary_key,
            &indexes,
        );

        Some(Container {
            ident: &input.ident,
            vis: &input.vis,
            table: attrs.table?.value(),
            record_type: attrs.record_type?.value(),
            kms: attrs.key_mode.is_some_and(|(_, kms)| kms),
            bind_primary_key: attrs.bind_primary_key,
            krate: attrs.krate,
            fields,
            tenant: tenant?,
            primary_key: primary_key?,
            tenant_in_primary_key,
            indexes,
        })
    }
}

impl<'a> Partial<'a> {
    /// Resolves a partial view: `attrs` names the model (`partial_of`); every
    /// other container attribute, and every field attribute but `encrypt`
    /// and `json`, comes from that model and is refused here.
    pub(crate) fn from_ast(
        cx: &mut Ctxt,
        input: &'a DeriveInput,
        attrs: ContainerAttrs,
    ) -> Option<Self> {
        check::not_generic(cx, input);
        let from_model = |cx: &mut Ctxt, span: Span, what: &str| {
            cx.error_at(
                span,
                format!("a partial view takes `{what}` from the model named by `partial_of`"),
            );
        };
        let spans = [
            (attrs.table.as_ref().map(|v| v.span()), "table"),
            (attrs.record_type.as_ref().map(|v| v.span()), "record_type"),
            (attrs.tenant.as_ref().map(|v| v.span()), "tenant"),
            (attrs.primary_key.as_ref().map(|v| v.1), "primary_key"),
            (attrs.key_mode.as_ref().map(|v| v.0.span()), "key_mode"),
            (attrs.bind_primary_key_span, "bind_primary_key"),
        ];
        for (span, what) in spans {
            if let Some(span) = span {
                from_model(cx, span, what);
            }
        }
        for ix in &attrs.compound {
            cx.error_at(
                ix.span,
                "a partial view has no blind indexes: look rows up through its model",
            );
        }
        let named = named_fields(cx, input)?;
        let mut fields = Vec::new();
        for f in &named.named {
            let fa = FieldAttrs::from_ast(cx, f);
            check::field_attrs(cx, &fa);
            check::partial_field_attrs(cx, &fa);
            let Some(ident) = f.ident.clone() else {
                continue;
            };
            let name = ident.to_string().trim_start_matches("r#").to_owned();
            fields.push(Field {
                ident,
                ty: &f.ty,
                attrs: fa,
                column: name.clone(),
                logical: name,
            });
        }
        Some(Partial {
            ident: &input.ident,
            of: attrs.partial_of?,
            krate: attrs.krate,
            fields,
        })
    }
}

/// The fields of a struct with named fields; an error for anything else.
fn named_fields<'a>(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<&'a syn::FieldsNamed> {
    match &input.data {
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
    }
}

/// The position of the field that `which = <field>` names (`tenant` or
/// `primary_key`). `has_fields`: whether the struct's fields could be read
/// at all (if not, an unknown name is not reported again).
fn key_field(
    cx: &mut Ctxt,
    which: &str,
    id: Option<&Ident>,
    fields: &[Field<'_>],
    has_fields: bool,
) -> Option<usize> {
    let Some(id) = id else {
        cx.error_at(
            Span::call_site(),
            format!("missing #[rowseal({which} = <field>)] on the struct"),
        );
        return None;
    };
    match fields.iter().position(|f| f.ident == *id) {
        Some(i) => {
            check::key_field_in_clear(cx, which, id, &fields[i]);
            Some(i)
        }
        None if has_fields => {
            cx.error(id, format!("no field named `{id}` for the {which}"));
            None
        }
        None => None,
    }
}
