//! `#[derive(Encrypted)]` for rowseal. A thin shim: the parsing and code
//! generation live in `rowseal-derive-internals`. Use it through the `rowseal`
//! facade (`rowseal::Encrypted`); see the `rowseal-sqlx` documentation for the
//! attributes.

use proc_macro::TokenStream;

/// Derives `rowseal_sqlx::Encrypted` for a struct with named fields.
///
/// ```ignore
/// #[derive(Encrypted)]
/// #[rowseal(table = "patients", record_type = "patient", tenant = tenant_id, primary_key = id, bind_primary_key)]
/// struct Patient {
///     id: i64,
///     tenant_id: String,
///     #[rowseal(encrypt)]
///     name: String,
/// }
/// ```
#[proc_macro_derive(Encrypted, attributes(rowseal))]
pub fn derive_encrypted(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    rowseal_derive_internals::expand_encrypted(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
