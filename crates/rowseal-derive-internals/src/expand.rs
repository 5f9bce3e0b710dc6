//! Code generation: the `Encrypted` impl of a resolved [`Container`] and, for
//! its blind indexes, the `find_by_*` lookups.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Ident;

use crate::ast::{Container, Field, Index, Partial, Storage};

/// The `impl Encrypted` and, with indexes, the inherent impl of the finders.
pub(crate) fn expand(cont: &Container<'_>) -> TokenStream {
    let krate = cont.krate.clone().unwrap_or_else(default_crate_path);
    let krate = &krate;
    let name = cont.ident;
    let record_type = &cont.record_type;
    let mode = if cont.kms {
        quote!(#krate::KeyMode::Kms)
    } else {
        quote!(#krate::KeyMode::Derived)
    };
    let bind = cont.bind_primary_key;
    let tenant_in_pk = cont.tenant_in_primary_key;
    let fields = &cont.fields;

    let field_defs = fields.iter().map(|f| field_def(krate, f));
    let writes = fields.iter().map(|f| write(f));
    let reads = fields.iter().map(|f| read(f));
    let index_defs = cont.indexes.iter().map(|ix| index_def(krate, ix));
    let index_parts = index_part_fn(krate, fields, &cont.indexes);
    let set_generated = set_generated_fn(krate, fields);
    let finders = finders(krate, name, fields, &cont.indexes);
    let sealed = sealed_type(krate, cont);

    let (tenant_idx, pk_idx) = (cont.tenant, cont.primary_key);
    let tenant_f = &fields[tenant_idx];
    let (tenant_id, tenant_ty) = (&tenant_f.ident, tenant_f.ty);
    let tenant_expr = quote_spanned!(tenant_ty.span()=>
        <#tenant_ty as #krate::TenantField>::tenant_id(&self.#tenant_id));
    let pk_f = &fields[pk_idx];
    let (pk_id, pk_ty) = (&pk_f.ident, pk_f.ty);
    let pk_assoc = quote_spanned!(pk_ty.span()=> type PrimaryKey = #pk_ty;);
    let pk_expr = quote_spanned!(pk_ty.span()=>
        <#pk_ty as #krate::PrimaryKeyField>::key_value(&self.#pk_id));
    let table_s = &cont.table;

    let storage = storage_consts(name, fields);

    quote! {
        #[automatically_derived]
        impl #krate::ReadModel for #name {
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
                )
                .with_tenant_in_primary_key(#tenant_in_pk);
                &MODEL
            }

            fn read_row(__r: &mut #krate::RowReader<'_>) -> ::core::result::Result<Self, #krate::Error> {
                ::core::result::Result::Ok(#name {
                    #(#reads)*
                })
            }
        }

        #[automatically_derived]
        impl #krate::Encrypted for #name {
            fn tenant(&self) -> ::std::borrow::Cow<'_, str> {
                #tenant_expr
            }

            fn primary_key_value(&self) -> #krate::Value {
                #pk_expr
            }

            fn write_row(&self, __w: &mut #krate::RowWriter<'_>) -> ::core::result::Result<(), #krate::Error> {
                #(#writes)*
                ::core::result::Result::Ok(())
            }

            #index_parts

            #set_generated
        }

        #storage

        #finders

        #sealed
    }
}

/// How each field is stored, as hidden constants on the model
/// (`__rowseal_storage_<field>`: 0 plain, 1 encrypted, 2 JSON), which a
/// partial view of it checks its own declarations against at compile time.
fn storage_consts(name: &Ident, fields: &[Field<'_>]) -> TokenStream {
    let consts = fields.iter().map(|f| {
        let c = storage_const(&f.ident);
        let k = storage_kind(f);
        quote!(pub const #c: u8 = #k;)
    });
    quote! {
        #[automatically_derived]
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        impl #name {
            #(#consts)*
        }
    }
}

fn storage_const(field: &Ident) -> Ident {
    format_ident!(
        "__rowseal_storage_{}",
        field.to_string().trim_start_matches("r#")
    )
}

fn storage_kind(f: &Field<'_>) -> u8 {
    match f.storage() {
        Storage::Plain => 0,
        Storage::Passthrough { database: None, .. } => 3,
        Storage::Passthrough {
            database: Some(d), ..
        } => match d.value().as_str() {
            "postgres" => 4,
            "mysql" => 5,
            _ => 6,
        },
        Storage::Encrypted { .. } => 1,
        Storage::Json { .. } => 2,
    }
}

/// A partial view's `ReadModel` impl: its model built once from the full
/// model's (`Model::partial_of`), its fields read in order; and the
/// compile-time checks that each field is the model's, of the same type,
/// stored the same way.
pub(crate) fn expand_partial(p: &Partial<'_>) -> TokenStream {
    let krate = p.krate.clone().unwrap_or_else(default_crate_path);
    let krate = &krate;
    let (name, of) = (p.ident, &p.of);
    let names: Vec<String> = p
        .fields
        .iter()
        .map(|f| f.ident.to_string().trim_start_matches("r#").to_owned())
        .collect();
    let reads = p.fields.iter().map(|f| read(f));
    let types = p.fields.iter().map(|f| {
        let (id, ty) = (&f.ident, f.ty);
        quote_spanned!(ty.span()=> let _: &#ty = &__model.#id;)
    });
    let of_s = of.to_token_stream().to_string().replace(' ', "");
    let storage = p.fields.iter().map(|f| {
        let c = storage_const(&f.ident);
        let k = storage_kind(f);
        let msg = format!(
            "field `{}` of partial view `{name}` is declared otherwise than `{of_s}` stores it: give it the model's `encrypt`, `json`, `sql_type` and `database` attributes, no more, no fewer",
            f.ident
        );
        quote_spanned!(f.ident.span()=> ::core::assert!(<#of>::#c == #k, #msg);)
    });
    quote! {
        #[automatically_derived]
        impl #krate::ReadModel for #name {
            type PrimaryKey = <#of as #krate::ReadModel>::PrimaryKey;

            fn model() -> &'static #krate::Model {
                static MODEL: ::std::sync::OnceLock<#krate::Model> = ::std::sync::OnceLock::new();
                MODEL.get_or_init(|| {
                    #krate::Model::partial_of(
                        <#of as #krate::ReadModel>::model(),
                        &[#(#names),*],
                    )
                })
            }

            fn read_row(__r: &mut #krate::RowReader<'_>) -> ::core::result::Result<Self, #krate::Error> {
                ::core::result::Result::Ok(#name {
                    #(#reads)*
                })
            }
        }

        // Each field is the model's, of the same type and stored the same way.
        const _: () = {
            #[allow(dead_code)]
            fn __rowseal_partial_fields(__model: &#of) {
                #(#types)*
            }
            #(#storage)*
        };
    }
}

/// The sealed row type `<Name>Sealed`: one public field per column, named
/// after the column (what `sqlx::query_as!` fills), the plain ones of the
/// model's types and the encrypted ones as their stored bytes, plus the key
/// header; its `FromRow` impl on every supported database, and its `Sealed`
/// impl that opens it into the model. Not generated for a model adopted from
/// plaintext columns (its rows may hold a value in either of two columns).
fn sealed_type(krate: &syn::Path, cont: &Container<'_>) -> TokenStream {
    let fields = &cont.fields;
    if fields.iter().any(|f| {
        matches!(
            f.storage(),
            Storage::Encrypted {
                plaintext_column: Some(_)
            }
        )
    }) {
        return TokenStream::new();
    }
    let name = cont.ident;
    let vis = cont.vis;
    let sealed = format_ident!("{}Sealed", name);
    let col_ident = |f: &Field<'_>| -> Ident {
        syn::parse_str::<Ident>(&f.column)
            .unwrap_or_else(|_| Ident::new_raw(&f.column, f.ident.span()))
    };
    let bytes = quote!(::core::option::Option<::std::vec::Vec<u8>>);
    let mut decls = Vec::new();
    let mut gets = Vec::new();
    let mut bounds = Vec::new();
    let mut ciphertexts = Vec::new();
    let mut opens = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let (id, col, ty) = (&f.ident, &f.column, f.ty);
        let cid = col_ident(f);
        let field_ty = match f.storage() {
            Storage::Plain | Storage::Passthrough { .. } => quote!(#ty),
            _ => bytes.clone(),
        };
        let doc = match f.storage() {
            Storage::Plain | Storage::Passthrough { .. } => {
                format!("Column `{col}` (field `{id}`), in the clear.")
            }
            _ => format!("Column `{col}`: field `{id}` as stored (sealed; NULL for `None`)."),
        };
        decls.push(quote!(#[doc = #doc] pub #cid: #field_ty,));
        gets.push(quote!(#cid: #krate::__sealed_column(__row, __prefix, #col)?,));
        bounds.push(quote_spanned!(ty.span()=> #field_ty: #krate::sqlx::Decode<'r, __R::Database> + #krate::sqlx::Type<__R::Database>,));
        match f.storage() {
            Storage::Plain | Storage::Passthrough { .. } => opens.push(quote!(#id: self.#cid,)),
            Storage::Json { nullable: true } => {
                ciphertexts.push(quote!(#i => self.#cid.as_deref(),));
                opens.push(quote!(#id: __r.encrypted_json_opt(#i, self.#cid.as_deref())?,));
            }
            Storage::Json { nullable: false } => {
                ciphertexts.push(quote!(#i => self.#cid.as_deref(),));
                opens.push(quote!(#id: __r.encrypted_json(#i, self.#cid.as_deref())?,));
            }
            Storage::Encrypted { .. } => {
                ciphertexts.push(quote!(#i => self.#cid.as_deref(),));
                opens.push(quote_spanned!(ty.span()=> #id: __r.encrypted::<#ty>(#i, self.#cid.as_deref())?,));
            }
        }
    }
    let tenant_f = &fields[cont.tenant];
    let (tenant_c, tenant_ty) = (col_ident(tenant_f), tenant_f.ty);
    let pk_f = &fields[cont.primary_key];
    let (pk_c, pk_ty) = (col_ident(pk_f), pk_f.ty);
    let doc = format!(
        "A row of `{name}` as the database stores it: what `sqlx::query_as!` and \
         `sqlx::query_as` fill (one field per column, named after it; select \
         `rowseal_header` too), opened into a `{name}` with `Encryptor::open` \
         (which checks the tenant). Generated by `#[derive(Encrypted)]`."
    );
    quote! {
        #[doc = #doc]
        #[automatically_derived]
        #vis struct #sealed {
            #(#decls)*
            /// Column `rowseal_header`: the row's key header.
            pub rowseal_header: #bytes,
        }

        #[automatically_derived]
        impl #sealed {
            /// Reads the row from columns named `prefix` + column (as
            /// `Encryptor::select_list_as` names them), for joins.
            pub fn from_row_prefixed<'r, __R>(__row: &'r __R, __prefix: &str) -> ::core::result::Result<Self, #krate::sqlx::Error>
            where
                __R: #krate::DbRow,
                for<'__n> &'__n str: #krate::sqlx::ColumnIndex<__R>,
                #(#bounds)*
                #bytes: #krate::sqlx::Decode<'r, __R::Database> + #krate::sqlx::Type<__R::Database>,
            {
                ::core::result::Result::Ok(#sealed {
                    #(#gets)*
                    rowseal_header: #krate::__sealed_column(__row, __prefix, #krate::HEADER_COLUMN)?,
                })
            }
        }

        #[automatically_derived]
        impl<'r, __R> #krate::sqlx::FromRow<'r, __R> for #sealed
        where
            __R: #krate::DbRow,
            for<'__n> &'__n str: #krate::sqlx::ColumnIndex<__R>,
            #(#bounds)*
            #bytes: #krate::sqlx::Decode<'r, __R::Database> + #krate::sqlx::Type<__R::Database>,
        {
            fn from_row(__row: &'r __R) -> ::core::result::Result<Self, #krate::sqlx::Error> {
                Self::from_row_prefixed(__row, "")
            }
        }

        #[automatically_derived]
        impl #krate::Sealed for #sealed {
            type Model = #name;

            fn tenant_id(&self) -> ::std::borrow::Cow<'_, str> {
                <#tenant_ty as #krate::TenantField>::tenant_id(&self.#tenant_c)
            }

            fn primary_key_value(&self) -> #krate::Value {
                <#pk_ty as #krate::PrimaryKeyField>::key_value(&self.#pk_c)
            }

            fn header(&self) -> ::core::option::Option<&[u8]> {
                self.rowseal_header.as_deref()
            }

            fn ciphertext(&self, __field: usize) -> ::core::option::Option<&[u8]> {
                match __field {
                    #(#ciphertexts)*
                    _ => ::core::option::Option::None,
                }
            }

            fn open_with(self, __r: &#krate::SealedReader<'_>) -> ::core::result::Result<#name, #krate::Error> {
                ::core::result::Result::Ok(#name {
                    #(#opens)*
                })
            }
        }
    }
}

/// Where the rowseal sqlx runtime is: through the `rowseal` facade if the
/// crate depends on it, else `rowseal-sqlx`.
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

/// The field's `FieldDef` in the model.
fn field_def(krate: &syn::Path, f: &Field<'_>) -> TokenStream {
    let fname = f.ident.to_string();
    let col = &f.column;
    let logical = &f.logical;
    let ty = f.ty;
    let def = match f.storage() {
        Storage::Json { nullable } => {
            quote!(#krate::FieldDef::encrypted(#fname, #col, #krate::ValueType::Json, #nullable))
        }
        Storage::Encrypted {
            plaintext_column: Some(p),
        } => quote_spanned!(ty.span()=> #krate::FieldDef::encrypted(
            #fname, #col,
            <#ty as #krate::EncryptedField>::TYPE,
            <#ty as #krate::EncryptedField>::NULLABLE)
            .with_plaintext_column(#p, <#ty as #krate::PlainField>::SQL_TYPE)),
        Storage::Encrypted {
            plaintext_column: None,
        } => quote_spanned!(ty.span()=> #krate::FieldDef::encrypted(
            #fname, #col,
            <#ty as #krate::EncryptedField>::TYPE,
            <#ty as #krate::EncryptedField>::NULLABLE)),
        Storage::Passthrough { sql, .. } => {
            let nullable = crate::ast::is_option(ty);
            quote_spanned!(ty.span()=> #krate::FieldDef::passthrough(#fname, #col, #sql, #nullable))
        }
        Storage::Plain => quote_spanned!(ty.span()=> #krate::FieldDef::plain(
            #fname, #col,
            <#ty as #krate::PlainField>::SQL_TYPE,
            <#ty as #krate::PlainField>::NULLABLE)),
    };
    let def = quote!(#def.with_logical_name(#logical));
    match &f.attrs.generated {
        Some((_, Some(default))) => {
            quote!(#def.with_generated(::core::option::Option::Some(#default)))
        }
        Some((_, None)) => quote!(#def.with_generated(::core::option::Option::None)),
        None => def,
    }
}

/// `Encrypted::set_generated` over the generated fields (nothing without).
fn set_generated_fn(krate: &syn::Path, fields: &[Field<'_>]) -> TokenStream {
    let arms: Vec<TokenStream> = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.attrs.generated.is_some())
        .map(|(i, f)| {
            let (id, ty) = (&f.ident, f.ty);
            quote_spanned!(ty.span()=> #i => {
                self.#id = #krate::__generated_value::<#ty>(<Self as #krate::ReadModel>::model(), #i, __value)?;
                ::core::result::Result::Ok(())
            })
        })
        .collect();
    if arms.is_empty() {
        return TokenStream::new();
    }
    quote! {
        fn set_generated(&mut self, __field: usize, __value: #krate::Value) -> ::core::result::Result<(), #krate::Error> {
            match __field {
                #(#arms)*
                _ => ::core::result::Result::Err(#krate::__not_generated(<Self as #krate::ReadModel>::model(), __field)),
            }
        }
    }
}

/// The field's statement in `write_row`.
fn write(f: &Field<'_>) -> TokenStream {
    let (id, col, ty) = (&f.ident, &f.column, f.ty);
    match f.storage() {
        Storage::Json { nullable: true } => {
            quote!(__w.encrypted_json_opt(#col, self.#id.as_ref())?;)
        }
        Storage::Json { nullable: false } => quote!(__w.encrypted_json(#col, &self.#id)?;),
        Storage::Encrypted { .. } => {
            quote_spanned!(ty.span()=> __w.encrypted::<#ty>(#col, &self.#id)?;)
        }
        Storage::Plain => quote_spanned!(ty.span()=> __w.plain::<#ty>(#col, &self.#id);),
        Storage::Passthrough { database, .. } => {
            let m = passthrough_method(database);
            quote_spanned!(ty.span()=> __w.#m::<#ty>(#col, &self.#id);)
        }
    }
}

/// The field's initializer in `read_row`.
fn read(f: &Field<'_>) -> TokenStream {
    let (id, col, ty) = (&f.ident, &f.column, f.ty);
    match f.storage() {
        Storage::Json { nullable: true } => quote!(#id: __r.encrypted_json_opt(#col)?,),
        Storage::Json { nullable: false } => quote!(#id: __r.encrypted_json(#col)?,),
        Storage::Encrypted {
            plaintext_column: Some(_),
        } => quote_spanned!(ty.span()=> #id: __r.encrypted_or_plaintext::<#ty>(#col)?,),
        Storage::Encrypted {
            plaintext_column: None,
        } => quote_spanned!(ty.span()=> #id: __r.encrypted::<#ty>(#col)?,),
        Storage::Plain => quote_spanned!(ty.span()=> #id: __r.plain::<#ty>(#col)?,),
        Storage::Passthrough { database, .. } => {
            let m = passthrough_method(database);
            quote_spanned!(ty.span()=> #id: __r.#m::<#ty>(#col)?,)
        }
    }
}

/// The writer's and reader's method for a `sql_type` field (of one
/// database, with `database = "..."`).
fn passthrough_method(database: Option<&syn::LitStr>) -> Ident {
    match database.map(|d| d.value()) {
        Some(d) => format_ident!("passthrough_{}", d),
        None => format_ident!("passthrough"),
    }
}

/// The index's `IndexDef` in the model.
fn index_def(krate: &syn::Path, ix: &Index) -> TokenStream {
    let (iname, col, bits, norm, global, unique) = (
        &ix.name,
        &ix.column,
        ix.bits,
        &ix.normalize,
        ix.global,
        ix.unique,
    );
    let [_, vcol, acol, avcol] = ix.columns();
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
}

/// `Encrypted::index_part` over every indexed field (nothing without indexes).
fn index_part_fn(krate: &syn::Path, fields: &[Field<'_>], indexes: &[Index]) -> TokenStream {
    let mut covered: Vec<usize> = indexes.iter().flat_map(|i| i.fields.clone()).collect();
    covered.sort_unstable();
    covered.dedup();
    if covered.is_empty() {
        return TokenStream::new();
    }
    let arms = covered.iter().map(|&p| {
        let f = &fields[p];
        let (id, ty) = (&f.ident, f.ty);
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
}

/// `impl Name { find_by_<stem>, find_by_<stem>_in, find_by_<stem>_with,
/// count_by_<stem>, exists_by_<stem>, ... }` (nothing without indexes).
fn finders(
    krate: &syn::Path,
    name: &Ident,
    fields: &[Field<'_>],
    indexes: &[Index],
) -> TokenStream {
    if indexes.is_empty() {
        return TokenStream::new();
    }
    let methods = indexes.iter().map(|ix| finder_pair(krate, fields, ix));
    quote! {
        #[automatically_derived]
        impl #name {
            #(#methods)*
        }
    }
}

/// Parameter names of the generated lookups: a covered field of one of
/// these names is passed as `<name>_value`.
const LOOKUP_PARAMS: [&str; 5] = ["tenant", "encryptor", "executor", "conn", "options"];

/// `find_by_<stem>`, `find_by_<stem>_in`, and the thin wrappers over the
/// bounded lookups, `find_by_<stem>_with`, `count_by_<stem>` and
/// `exists_by_<stem>`, of one index.
fn finder_pair(krate: &syn::Path, fields: &[Field<'_>], ix: &Index) -> TokenStream {
    let iname = &ix.name;
    let st = ix.stem();
    let one = format_ident!("find_by_{}", st);
    let many = format_ident!("find_by_{}_in", st);
    let with = format_ident!("find_by_{}_with", st);
    let count = format_ident!("count_by_{}", st);
    let exists = format_ident!("exists_by_{}", st);
    let params: Vec<Ident> = ix
        .fields
        .iter()
        .map(|&p| {
            let id = fields[p].ident.to_string();
            let id = id.trim_start_matches("r#");
            if LOOKUP_PARAMS.contains(&id) || id.starts_with("__") {
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
    let doc_with = format!(
        "Rows whose blind index `{iname}` (over {field_list}) matches, with `options`: at most `limit` true matches (candidates read in pages until that many survive the false-positive check), ordered by plain columns, with conditions of your own (see `Lookup`). {scope_doc}"
    );
    let doc_count = format!(
        "How many rows truly match on the blind index `{iname}` (over {field_list}): exact, so every candidate is decrypted and false positives are not counted. {scope_doc}"
    );
    let doc_exists = format!(
        "Whether a row truly matches on the blind index `{iname}` (over {field_list}): exact, candidates are decrypted until the first true match. {scope_doc}"
    );
    quote! {
        #[doc = #doc_one]
        pub async fn #one<'a, __A>(
            encryptor: &#krate::Encryptor,
            conn: __A,
            #tenant_param
            #(#params: &str),*
        ) -> ::core::result::Result<::std::vec::Vec<Self>, #krate::Error>
        where
            __A: #krate::sqlx::Acquire<'a>,
            __A::Database: #krate::Backend,
        {
            encryptor
                .find_by::<Self, __A>(conn, #tenant_arg, #iname, &[&[#(#params),*]])
                .await
        }

        #[doc = #doc_many]
        pub async fn #many<'a, __A>(
            encryptor: &#krate::Encryptor,
            conn: __A,
            #tenant_param
            values: &[[&str; #n]],
        ) -> ::core::result::Result<::std::vec::Vec<Self>, #krate::Error>
        where
            __A: #krate::sqlx::Acquire<'a>,
            __A::Database: #krate::Backend,
        {
            let __v: ::std::vec::Vec<&[&str]> = values.iter().map(|v| &v[..]).collect();
            encryptor
                .find_by::<Self, __A>(conn, #tenant_arg, #iname, &__v)
                .await
        }

        #[doc = #doc_with]
        pub async fn #with<'a, __A>(
            encryptor: &#krate::Encryptor,
            conn: __A,
            #tenant_param
            #(#params: &str,)*
            options: &#krate::Lookup,
        ) -> ::core::result::Result<::std::vec::Vec<Self>, #krate::Error>
        where
            __A: #krate::sqlx::Acquire<'a>,
            __A::Database: #krate::Backend,
        {
            encryptor
                .find_by_with::<Self, __A>(conn, #tenant_arg, #iname, &[&[#(#params),*]], options)
                .await
        }

        #[doc = #doc_count]
        pub async fn #count<'a, __A>(
            encryptor: &#krate::Encryptor,
            conn: __A,
            #tenant_param
            #(#params: &str),*
        ) -> ::core::result::Result<u64, #krate::Error>
        where
            __A: #krate::sqlx::Acquire<'a>,
            __A::Database: #krate::Backend,
        {
            encryptor
                .count_by::<Self, __A>(conn, #tenant_arg, #iname, &[&[#(#params),*]])
                .await
        }

        #[doc = #doc_exists]
        pub async fn #exists<'a, __A>(
            encryptor: &#krate::Encryptor,
            conn: __A,
            #tenant_param
            #(#params: &str),*
        ) -> ::core::result::Result<bool, #krate::Error>
        where
            __A: #krate::sqlx::Acquire<'a>,
            __A::Database: #krate::Backend,
        {
            encryptor
                .exists_by::<Self, __A>(conn, #tenant_arg, #iname, &[&[#(#params),*]])
                .await
        }
    }
}
